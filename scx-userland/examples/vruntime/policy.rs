//! A weighted-vruntime scheduler: each task is charged the CPU time it used divided by its
//! weight, and the waiting task that was charged least runs first. A task that wakes up after
//! running only briefly is latency-sensitive: it goes in the FIFO queue, which CPUs serve
//! ahead of the vruntime order, instead of waiting out a CPU hog's slice.
//!
//! The policy only: `main.rs` runs it on the kernel, and the simulator's tests
//! (`scx-userland-sim`) include this file to run the same code without one.

use std::collections::HashMap;

use scx_userland::{Backend, Dispatch, Error, ExitReport, Policy, QueuedTask, Target, RL_CPU_ANY};

/// Time slice for a task that has to wait its turn.
const SLICE_NS: u64 = 5_000_000;
/// Shorter slice for the tasks that run ahead of others, so a wrong guess costs little.
const SHORT_SLICE_NS: u64 = 1_000_000;
/// A task whose last burst (CPU time from a wake-up to going to sleep, `last_burst_ns`) was
/// shorter than this counts as latency-sensitive when it wakes up again.
const INTERACTIVE_NS: u64 = 500_000;
/// How much credit a task may bank while sleeping (it cannot come back unboundedly ahead).
const MAX_SLEEP_CREDIT_NS: u64 = 2 * SLICE_NS;
/// How far ahead of the others a task may be charged (bounded lag): a heavily niced task
/// waits a while, but never long enough to trip the kernel's watchdog.
const MAX_LAG_NS: u64 = 20 * SLICE_NS;
/// Weight of a nice-0 task.
const NICE0_WEIGHT: u64 = 100;

#[derive(Default)]
struct TaskStat {
    vruntime: u64,
    last_sum_exec: u64,
}

/// The weighted-vruntime policy and its per-task state.
pub struct Vruntime {
    tasks: HashMap<i32, TaskStat>,
    /// The vruntime of the least-charged task dispatched so far: new tasks start here.
    min_vruntime: u64,
    batch: Vec<QueuedTask>,
    out: Vec<Dispatch>,
}

impl Vruntime {
    /// A policy with no task seen yet.
    pub fn new() -> Self {
        Self {
            tasks: HashMap::new(),
            min_vruntime: 0,
            batch: Vec::with_capacity(256),
            out: Vec::with_capacity(256),
        }
    }

    /// Charge `task` for what it ran since we last saw it; returns its new vruntime.
    fn charge(&mut self, task: &QueuedTask) -> u64 {
        let floor = self.min_vruntime.saturating_sub(MAX_SLEEP_CREDIT_NS);
        let st = self.tasks.entry(task.pid).or_insert_with(|| TaskStat {
            vruntime: self.min_vruntime,
            last_sum_exec: task.sum_exec_runtime,
        });
        let ran = task.sum_exec_runtime.saturating_sub(st.last_sum_exec);
        st.last_sum_exec = task.sum_exec_runtime;
        st.vruntime += ran.min(SLICE_NS) * NICE0_WEIGHT / task.weight.max(1);
        st.vruntime = st.vruntime.clamp(floor, self.min_vruntime + MAX_LAG_NS);
        st.vruntime
    }
}

impl Policy for Vruntime {
    fn schedule<B: Backend>(&mut self, bpf: &mut B) -> Result<(), Error> {
        self.batch.clear();
        bpf.dequeue_tasks(&mut self.batch, 256)?;
        self.out.clear();
        for i in 0..self.batch.len() {
            let task = self.batch[i];
            if task.is_exiting() {
                self.tasks.remove(&task.pid);
                continue;
            }
            let vruntime = self.charge(&task);
            let interactive = task.is_wakeup() && task.last_burst_ns < INTERACTIVE_NS;
            let mut d = Dispatch::new(&task);
            if interactive {
                // Run soon: the FIFO queue, which CPUs serve before the vruntime-ordered
                // one, and the longest-running task makes room if no CPU is idle.
                d.cpu = RL_CPU_ANY;
                d.preempt = true;
                d.slice_ns = SHORT_SLICE_NS;
            } else if task.idle_cpu() {
                d.slice_ns = SHORT_SLICE_NS; // its CPU is idle: run there
            } else {
                // Wait in vruntime order for the first CPU that frees up.
                d = Dispatch::by_vtime(&task, vruntime);
                d.slice_ns = SLICE_NS;
            }
            self.out.push(d);
        }
        bpf.dispatch_tasks(&self.out)?;
        if let Some(least) = self
            .out
            .iter()
            .filter_map(|d| match d.target() {
                Target::Vtime(vtime) => Some(vtime),
                _ => None,
            })
            .min()
        {
            self.min_vruntime = self.min_vruntime.max(least);
        }
        if self.out.is_empty() {
            bpf.update_tasks(Some(0), Some(0))?; // sleeps until tasks come
        }
        Ok(())
    }

    fn attached<B: Backend>(&mut self, _bpf: &mut B) {
        println!("vruntime: attached");
    }

    fn detached(&mut self, report: &ExitReport) {
        println!("vruntime: final {}", report.stats);
        println!("vruntime: exit: {report}");
    }
}
