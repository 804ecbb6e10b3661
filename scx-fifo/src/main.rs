//! scx-fifo: a first-in, first-out sched_ext scheduler whose policy runs in user space.
//!
//! Every task that wants a CPU arrives here as a `QueuedTask`. We hand it straight back: to
//! the idle CPU the kernel found for it, or else to whichever CPU frees up first. Two lines,
//! each first come, first served: tasks that just woke up, and behind them the tasks that used
//! up their slice. So a woken task never waits out a CPU hog's slice, and a hog still gets its
//! turn (the BPF side never lets the second line wait long). That is the whole policy;
//! everything else is start-up, statistics and a clean exit.
//!
//! A waking task that finds an idle CPU would be sent there anyway, so by default we let the
//! BPF side do that at once (`direct_idle`) and only the rest make the round trip to us.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use scx_userland::{BpfScheduler, Dispatch, Waker, RL_CPU_ANY};

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

/// Dispatch every waiting task, FIFO. Returns when nothing is left to do. `turn` numbers the
/// tasks that used up their slice, in order.
fn schedule(bpf: &mut BpfScheduler, turn: &mut u64) -> Result<()> {
    while let Some(task) = bpf.dequeue_task()? {
        if task.is_exiting() {
            continue; // an exit notice: nothing to dispatch
        }
        let mut decision = Dispatch::new(&task);
        if task.is_wakeup() {
            // Just woke up: the first CPU to free up takes it, in the queue of woken tasks,
            // which CPUs serve first; if none is idle, the longest-running task makes room.
            decision.cpu = RL_CPU_ANY;
            decision.preempt = true;
        } else if !task.idle_cpu() {
            // Used up its slice: the second queue, in turn (a vtime queue ordered by a
            // counter is FIFO too). It waits behind woken tasks, but never long.
            decision.cpu = RL_CPU_ANY;
            *turn += 1;
            decision.vtime = *turn;
        }
        bpf.dispatch_task(&decision)?;
    }
    // Nothing queued: sleep until the BPF component hands us more.
    bpf.update_tasks(Some(0), Some(0))?;
    Ok(())
}

fn run(args: &Args, shutdown: &AtomicBool, waker: &Mutex<Option<Waker>>) -> Result<bool> {
    let mut turn = 0;
    let mut bpf = BpfScheduler::builder()
        .name("scx_fifo")
        .slice_us(args.slice_us)
        .partial(args.partial)
        .full_user(args.full_user)
        .debug(args.debug)
        .direct_idle(!args.no_direct_idle)
        .exit_dump_len(args.exit_dump_len)
        .build()
        .context("starting the scheduler")?;
    *waker.lock().unwrap() = Some(bpf.waker());
    println!("scx-fifo: attached (slice {} us)", args.slice_us);

    let mut last_stats = Instant::now();
    while !shutdown.load(Ordering::Relaxed) && !bpf.exited() {
        schedule(&mut bpf, &mut turn)?;
        let every = Duration::from_secs(args.stats_interval);
        if args.stats_interval > 0 && last_stats.elapsed() >= every {
            last_stats = Instant::now();
            println!("scx-fifo: stats {}", bpf.stats());
        }
    }

    let report = bpf.shutdown_and_report()?;
    println!("scx-fifo: final {}", report.stats);
    println!("scx-fifo: exit: {report}");
    if !report.dump.is_empty() {
        println!("{}", report.dump);
    }
    if report.should_restart() && !shutdown.load(Ordering::Relaxed) {
        println!("scx-fifo: the kernel asked for a restart");
        return Ok(true);
    }
    if report.kind.is_error() {
        bail!("ejected by the kernel: {report}");
    }
    Ok(false)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let shutdown = Arc::new(AtomicBool::new(false));
    let waker = Arc::new(Mutex::new(None::<Waker>));
    {
        let (shutdown, waker) = (shutdown.clone(), waker.clone());
        ctrlc::set_handler(move || {
            shutdown.store(true, Ordering::Relaxed);
            if let Some(w) = waker.lock().unwrap().as_ref() {
                w.wake();
            }
        })
        .context("installing the SIGINT/SIGTERM handler")?;
    }
    while run(&args, &shutdown, &waker)? {}
    Ok(())
}
