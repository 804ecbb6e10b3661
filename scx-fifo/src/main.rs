//! scx-fifo: a first-in, first-out sched_ext scheduler whose policy runs in user space.
//!
//! Every task that wants a CPU arrives here as a `QueuedTask`. We hand it straight back: to
//! the idle CPU the kernel found for it, or else to whichever CPU frees up first. Two lines,
//! each first come, first served: tasks that just woke up, and behind them the tasks that used
//! up their slice. So a woken task never waits out a CPU hog's slice, and a hog still gets its
//! turn (the BPF side never lets the second line wait long). That is the whole policy;
//! everything else is start-up and statistics; `Runner` does the rest (Ctrl-C, restarts the
//! kernel asks for, the exit report).
//!
//! A waking task that finds an idle CPU would be sent there anyway, so by default we let the
//! BPF side do that at once (`direct_idle`) and only the rest make the round trip to us.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use scx_userland::{BpfScheduler, Dispatch, Error, ExitReport, Policy, Runner, RL_CPU_ANY};

/// A FIFO sched_ext scheduler running in user space (needs root and a sched_ext kernel).
#[derive(Parser, Debug)]
#[command(version, about)]
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
    /// Print the counters every this many seconds (0: never).
    #[arg(long, default_value_t = 1)]
    stats_interval: u64,
    /// Bytes of the kernel's debug dump to print if the scheduler is ejected.
    #[arg(long, default_value_t = 0)]
    exit_dump_len: u32,
    /// Send every task through user space, also a waking task that found an idle CPU (by
    /// default BPF dispatches those to their idle CPU at once).
    #[arg(long)]
    no_direct_idle: bool,
}

/// The policy's state: `turn` numbers the tasks that used up their slice, in order.
struct Fifo {
    turn: u64,
    slice_us: u64,
    stats_interval: u64,
    last_stats: Instant,
}

impl Policy for Fifo {
    /// Dispatch every waiting task, FIFO. Returns when nothing is left to do.
    fn schedule(&mut self, bpf: &mut BpfScheduler<'_>) -> Result<(), Error> {
        while let Some(task) = bpf.dequeue_task()? {
            if task.is_exiting() {
                continue; // an exit notice: nothing to dispatch
            }
            let mut decision = Dispatch::new(&task);
            if task.is_wakeup() {
                // Just woke up: the first CPU to free up takes it, in the queue of woken
                // tasks, which CPUs serve first; if none is idle, the longest-running task
                // makes room.
                decision.cpu = RL_CPU_ANY;
                decision.preempt = true;
            } else if !task.idle_cpu() {
                // Used up its slice: the second queue, in turn (a vtime queue ordered by a
                // counter is FIFO too). It waits behind woken tasks, but never long.
                decision.cpu = RL_CPU_ANY;
                self.turn += 1;
                decision.vtime = self.turn;
            }
            bpf.dispatch_task(&decision)?;
        }
        // Nothing queued: sleep until the BPF component hands us more.
        bpf.update_tasks(Some(0), Some(0))
    }

    fn attached(&mut self, _bpf: &mut BpfScheduler<'_>) {
        println!("scx-fifo: attached (slice {} us)", self.slice_us);
    }

    fn tick(&mut self, bpf: &BpfScheduler<'_>) {
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
    let builder = BpfScheduler::builder()
        .name("scx_fifo")
        .slice_us(args.slice_us)
        .partial(args.partial)
        .full_user(args.full_user)
        .debug(args.debug)
        .direct_idle(!args.no_direct_idle)
        .exit_dump_len(args.exit_dump_len);
    let mut fifo = Fifo {
        turn: 0,
        slice_us: args.slice_us,
        stats_interval: args.stats_interval,
        last_stats: Instant::now(),
    };
    // The runner attaches, calls `schedule` until Ctrl-C (SIGINT/SIGTERM) or the kernel ends
    // the scheduler, attaches again when the kernel asks for a restart, and returns the report.
    let report = Runner::new(builder)
        .tick_interval(Some(Duration::from_millis(100)))
        .run(&mut fifo)
        .context("running the scheduler")?;
    if report.kind.is_error() {
        bail!("ejected by the kernel: {report}");
    }
    Ok(())
}
