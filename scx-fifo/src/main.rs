//! scx-fifo's command line: the [`Fifo`] policy (see `lib.rs`) run by `scx_userland::Runner`,
//! with the statistics and version options every sched_ext scheduler has.
//!
//! A waking task that finds an idle CPU would be sent there anyway, so by default we let the
//! BPF side do that at once (`direct_idle`) and only the rest make the round trip to us.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use scx_fifo::Fifo;
use scx_userland::{stats, Backend, BpfScheduler, Error, ExitReport, Policy, Runner};

/// `0.1.0-g1a2b3c4` (the git revision when built from a checkout), set by build.rs.
const VERSION: &str = env!("SCX_FIFO_VERSION");
/// `-V`: name, version and git revision, and the target, as sched_ext schedulers print it.
const FULL_VERSION: &str = env!("SCX_FIFO_FULL_VERSION");

/// A FIFO sched_ext scheduler running in user space (needs root and a sched_ext kernel).
///
/// While it runs it serves its statistics at /var/run/scx/root/stats (read them with
/// `--monitor SECS`); Ctrl-C or SIGTERM detaches it and prints why it stopped. The watchdog
/// timeout can be set with the environment variable SCX_TIMEOUT_MS.
#[derive(Parser, Debug)]
#[command(version = FULL_VERSION, about)]
struct Args {
    /// Time slice given to each task, in microseconds.
    #[arg(long, default_value_t = 5000)]
    slice_us: u64,
    /// Schedule only tasks switched to SCHED_EXT; leave the rest to the kernel's scheduler.
    #[arg(long)]
    partial: bool,
    /// Also schedule per-CPU kernel threads in user space (BPF dispatches them otherwise).
    #[arg(long)]
    full_user: bool,
    /// Enable the BPF component's debug output (in the kernel trace buffer).
    #[arg(long)]
    debug: bool,
    /// Print the counters every SECS seconds while running (0: never).
    #[arg(
        long = "stats",
        visible_alias = "stats-interval",
        value_name = "SECS",
        default_value_t = 1
    )]
    stats_interval: u64,
    /// Do not start a scheduler: print the statistics of the one already running every SECS
    /// seconds, until Ctrl-C.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    monitor: Option<u64>,
    /// Describe every statistics field, and exit.
    #[arg(long)]
    help_stats: bool,
    /// Bytes of the kernel's debug dump to print if the scheduler is ejected.
    #[arg(long, default_value_t = 0)]
    exit_dump_len: u32,
    /// Send every task through user space, also a waking task that found an idle CPU (by
    /// default BPF dispatches those to their idle CPU at once).
    #[arg(long)]
    no_direct_idle: bool,
}

/// The scheduler as this binary runs it: the [`Fifo`] policy, plus what it prints.
struct Cli {
    fifo: Fifo,
    slice_us: u64,
    stats_interval: u64,
    last_stats: Instant,
}

impl Policy for Cli {
    fn schedule<B: Backend>(&mut self, bpf: &mut B) -> Result<(), Error> {
        self.fifo.schedule(bpf)
    }

    fn metrics(&self, out: &mut BTreeMap<String, u64>) {
        self.fifo.metrics(out)
    }

    fn attached<B: Backend>(&mut self, _bpf: &mut B) {
        println!("scx-fifo: attached (slice {} us)", self.slice_us);
    }

    fn tick<B: Backend>(&mut self, bpf: &B) {
        let every = Duration::from_secs(self.stats_interval);
        if self.stats_interval > 0 && self.last_stats.elapsed() >= every {
            self.last_stats = Instant::now();
            println!("scx-fifo: stats {}", bpf.stats());
        }
    }

    fn detached(&mut self, report: &ExitReport) {
        println!("scx-fifo: final {}", report.stats);
        println!("scx-fifo: exit: {report}");
        if !report.dump.is_empty() {
            println!("{}", report.dump);
        }
        if report.should_restart() {
            println!("scx-fifo: the kernel asked for a restart");
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.help_stats {
        return Ok(stats::describe(&mut std::io::stdout())?);
    }
    if let Some(secs) = args.monitor {
        stats::monitor(None, Duration::from_secs(secs), |m| {
            println!("scx-fifo: {m}");
            true
        })?;
        return Ok(());
    }
    let builder = BpfScheduler::builder()
        .name("scx_fifo")
        .version(VERSION)
        .slice_us(args.slice_us)
        .partial(args.partial)
        .full_user(args.full_user)
        .debug(args.debug)
        .direct_idle(!args.no_direct_idle)
        .exit_dump_len(args.exit_dump_len);
    let mut cli = Cli {
        fifo: Fifo::new(),
        slice_us: args.slice_us,
        stats_interval: args.stats_interval,
        last_stats: Instant::now(),
    };
    // The runner attaches, calls `schedule` until Ctrl-C (SIGINT/SIGTERM) or the kernel ends
    // the scheduler, attaches again when the kernel asks for a restart, and returns the report.
    let report = Runner::new(builder)
        .tick_interval(Some(Duration::from_millis(100)))
        .run(&mut cli)
        .context("running the scheduler")?;
    if report.kind.is_error() {
        bail!("ejected by the kernel: {report}");
    }
    Ok(())
}
