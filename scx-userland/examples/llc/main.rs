//! A cache-aware FIFO scheduler: a waking task goes to an idle CPU in the last-level cache it
//! ran in before, else to a whole idle core, else to the first CPU that frees up. See
//! `policy.rs`.
//!
//! Run it as root on a sched_ext kernel: `cargo run --release --example llc`.

mod policy;

use anyhow::{Context, Result};
use scx_userland::{BpfScheduler, Runner, Topology};

use policy::Llc;

fn main() -> Result<()> {
    // The machine's CPUs, cores, LLCs and nodes, read once from sysfs.
    let topo = Topology::new().context("reading the CPU topology from /sys")?;
    // No `direct_idle`: every wake-up comes to the policy, which picks the CPU itself.
    let builder = BpfScheduler::builder().name("llc");
    // Ctrl-C, the restarts the kernel asks for and the exit report: the runner's job.
    let report = Runner::new(builder).run(&mut Llc::new(topo))?;
    if report.kind.is_error() {
        anyhow::bail!("ejected by the kernel: {report}");
    }
    Ok(())
}
