//! The classic `scx_rustland_core` README's FIFO example, completed only with the loop and the return types it
//! leaves out. It must keep compiling as written: it is the API's contract.
//!
//! Run it as root on a sched_ext kernel: `cargo run --example seed_fifo`; Ctrl-C stops it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use scx_userland::{BpfScheduler, DispatchedTask, Topology};

struct Scheduler<'a> {
    bpf: BpfScheduler<'a>,
}

impl<'a> Scheduler<'a> {
    fn init() -> Result<Self> {
        let topo = Topology::new().expect("Failed to build host topology");
        let bpf = BpfScheduler::init(5000, topo.nr_cpus() as i32, false, false, false)?;
        Ok(Self { bpf })
    }

    fn schedule(&mut self) -> Result<()> {
        loop {
            match self.bpf.dequeue_task() {
                Ok(Some(task)) => {
                    // task.cpu < 0 is used to to notify an exiting task, in this
                    // case we can simply ignore it.
                    if task.cpu >= 0 {
                        let _ = self.bpf.dispatch_task(&DispatchedTask {
                            pid: task.pid,
                            cpu: task.cpu,
                            cpumask_cnt: task.cpumask_cnt,
                            slice_ns: 0,
                        });
                    }
                }
                Ok(None) => {
                    // Notify the BPF component that all tasks have been dispatched.
                    self.bpf.update_tasks(Some(0), Some(0))?;

                    break;
                }
                Err(_) => {
                    break;
                }
            }
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = shutdown.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))?;

    let mut sched = Scheduler::init()?;
    println!("seed_fifo: attached");
    while !shutdown.load(Ordering::Relaxed) && !sched.bpf.exited() {
        sched.schedule()?;
    }
    let report = sched.bpf.shutdown_and_report()?;
    println!("seed_fifo: final {}", report.stats);
    println!("seed_fifo: exit: {report}");
    if report.kind.is_error() {
        anyhow::bail!("ejected by the kernel: {report}");
    }
    Ok(())
}
