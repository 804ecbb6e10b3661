//! Test an scx-userland policy without a kernel: a deterministic, discrete-event simulator
//! of the sched_ext kernel side, of the scx-userland BPF component, and of the scheduler
//! process that runs the policy.
//!
//! A policy written against [`scx_userland::Backend`] (as every [`Policy`] is) runs here
//! unchanged: the simulator lends it a [`SimScheduler`] whenever the scheduler process gets
//! a CPU in virtual time, charges it CPU time for what it does, and carries its decisions
//! out the way `main.bpf.c` does (direct idle dispatch, the FIFO and vtime shared queues
//! with the vtime queue's aging, `RL_CPU_ANY` with preempt and `make_room`, head, bounce and
//! cancel, slice clamps, the displaced-task rule, the stall guard). Same scenario and seed,
//! same [`SimResult`], on any machine, in milliseconds.
//!
//! ```
//! use scx_userland_sim::{simulate, Op, Scenario, SeedFifo, TaskSpec};
//!
//! let scenario = Scenario {
//!     cpus: 2,
//!     duration_ms: 100,
//!     tasks: vec![
//!         TaskSpec::new("hog", vec![Op::RunUs(1_000_000)]).repeat().count(2),
//!         TaskSpec::new("tick", vec![Op::RunUs(50), Op::PeriodUs(1000)]).repeat(),
//!     ],
//!     ..Scenario::default()
//! };
//! let result = simulate(&scenario, &mut SeedFifo).unwrap();
//! assert!(result.group("tick").bursts > 0);
//! println!("{result}");
//! ```
#![deny(missing_docs)]

mod error;
pub mod metrics;
mod rng;
pub mod scenario;
mod sim;

use scx_userland::{Backend, DispatchedTask, Error, Policy};

pub use error::SimError;
pub use metrics::{GroupMetrics, SchedulerMetrics, SimResult, TaskMetrics, WaitStats};
pub use rng::Rng;
pub use scenario::{nice_to_weight, Op, Scenario, SchedConfig, TaskSpec, MAX_SIM_CPUS};
pub use sim::{SimScheduler, Simulator, PID_BASE, SCHED_PID};

/// Run `policy` on `scenario` (see [`Simulator::run`]).
pub fn simulate<P: Policy>(scenario: &Scenario, policy: &mut P) -> Result<SimResult, SimError> {
    Simulator::new(scenario)?.run(policy)
}

/// Read and check a JSON scenario file.
pub fn load_scenario(path: &std::path::Path) -> Result<Scenario, SimError> {
    let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Scenario::from_json(&text)
}

/// The classic `scx_rustland_core` README's policy as a [`Policy`]: every task to the CPU the kernel picked for it
/// (`task.cpu`), default slice. A baseline to compare policies against.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeedFifo;

impl Policy for SeedFifo {
    fn schedule<B: Backend>(&mut self, bpf: &mut B) -> Result<(), Error> {
        while let Some(task) = bpf.dequeue_task()? {
            if task.cpu >= 0 {
                bpf.dispatch_task(&DispatchedTask {
                    pid: task.pid,
                    cpu: task.cpu,
                    cpumask_cnt: task.cpumask_cnt,
                    slice_ns: 0,
                })?;
            }
        }
        bpf.update_tasks(Some(0), Some(0))
    }
}
