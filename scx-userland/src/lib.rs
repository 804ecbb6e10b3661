//! Write Linux sched_ext schedulers in plain Rust, with the policy in user space.
//!
//! A generic BPF component (from `scx-userland-bpf`) registers a sched_ext scheduler and
//! hands every task that wants a CPU to this process as a [`QueuedTask`]; the process answers
//! with a [`DispatchedTask`] (pid, cpu, slice) or a fuller [`Dispatch`] (plus vtime and
//! flags), and the BPF component carries the decision into the kernel.
//!
//! ```no_run
//! use scx_userland::{BpfScheduler, DispatchedTask};
//!
//! # fn main() -> Result<(), scx_userland::Error> {
//! let mut bpf = BpfScheduler::init(5000, 2, false, false, false)?;
//! while !bpf.exited() {
//!     while let Some(task) = bpf.dequeue_task()? {
//!         if task.cpu >= 0 {
//!             bpf.dispatch_task(&DispatchedTask::new(&task))?;
//!         }
//!     }
//!     bpf.update_tasks(Some(0), Some(0))?; // sleeps until more tasks come
//! }
//! println!("{}", bpf.shutdown_and_report()?);
//! # Ok(()) }
//! ```
//!
//! Bad input never reaches the kernel as something it would eject the scheduler for: see
//! [`BpfScheduler::dispatch_task`] for what is checked here and what BPF handles (and counts).
#![deny(missing_docs)]

mod backend;
mod error;
mod kernel_enums;
pub mod ring;
mod run;
mod scheduler;
pub mod stats;
mod task;
mod topology;

// Integer types: CPU ids i32, pids i32, counts usize, core/LLC/node numbers u32 (the README's
// API section); the classic `init(nr_cpus: i32)` and `get_cpu_pid() -> u32` are kept as they are.
pub use backend::Backend;
pub use error::Error;
pub use run::{Policy, Runner, Stopper};
pub use scheduler::{
    BpfScheduler, BpfSchedulerBuilder, CounterMut, ExitKind, ExitReport, Stats, Waker,
};
pub use task::{
    Dispatch, DispatchedTask, Queue, QueuedTask, Target, DISPATCH_BATCH_MAX, DISPATCH_RECORD_LEN,
    RL_CPU_ANY, RL_QF_IDLE_CPU, RL_QF_KTHREAD, RL_QF_REENQ, RL_QF_WAKEUP, SLICE_DEFAULT_NS,
    SLICE_MAX_NS,
};
#[cfg(feature = "scx_utils")]
pub use topology::FromScxUtilsError;
pub use topology::{parse_cpu_list, CpuInfo, Topology, MAX_CPU_ID};
