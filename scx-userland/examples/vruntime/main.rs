//! A weighted-vruntime scheduler: each task is charged the CPU time it used divided by its
//! weight, and the waiting task that was charged least runs first. A task that wakes up after
//! running only briefly is latency-sensitive: it goes in the FIFO queue, which CPUs serve
//! ahead of the vruntime order, instead of waiting out a CPU hog's slice.
//!
//! Run it as root on a sched_ext kernel: `cargo run --release --example vruntime`.

mod policy;

use anyhow::Result;
use scx_userland::{BpfScheduler, Runner};

use policy::Vruntime;

fn main() -> Result<()> {
    // A wake-up that finds an idle CPU runs there at once, without a round trip.
    let builder = BpfScheduler::builder().name("vruntime").direct_idle(true);
    // Ctrl-C, the restarts the kernel asks for and the exit report: the runner's job.
    let report = Runner::new(builder).run(&mut Vruntime::new())?;
    if report.kind.is_error() {
        anyhow::bail!("ejected by the kernel: {report}");
    }
    Ok(())
}
