//! scx-fifo: a first-in, first-out sched_ext scheduler whose policy runs in user space.
//!
//! Every task that wants a CPU arrives here as a `QueuedTask`. We hand it straight back: to
//! the idle CPU the kernel found for it, or else to whichever CPU frees up first. Two lines,
//! each first come, first served: tasks that just woke up, and behind them the tasks that used
//! up their slice. So a woken task never waits out a CPU hog's slice, and a hog still gets its
//! turn (the BPF side never lets the second line wait long). That is the whole policy, and
//! all of this file; `main.rs` adds the command line, and `Runner` does the rest (Ctrl-C, the
//! restarts the kernel asks for, the exit report, statistics).
//!
//! The policy is written against [`Backend`], so the same code runs on the kernel
//! (`BpfScheduler`) and on any other backend, such as a simulator in a test.

use std::collections::BTreeMap;

use scx_userland::{Backend, Dispatch, Error, Policy, RL_CPU_ANY};

/// The policy's state: `turn` numbers the tasks that used up their slice, in order;
/// `wakeups` counts the woken tasks (both are served as statistics).
#[derive(Debug, Default)]
pub struct Fifo {
    turn: u64,
    wakeups: u64,
}

impl Fifo {
    /// A FIFO policy with nothing dispatched yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Policy for Fifo {
    /// Dispatch every waiting task, FIFO. Returns when nothing is left to do.
    fn schedule<B: Backend>(&mut self, bpf: &mut B) -> Result<(), Error> {
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
                self.wakeups += 1;
            } else if !task.idle_cpu() {
                // Used up its slice: the second queue, in turn (a vtime queue ordered by a
                // counter is FIFO too). It waits behind woken tasks, but never long.
                self.turn += 1;
                decision = Dispatch::by_vtime(&task, self.turn);
            }
            bpf.dispatch_task(&decision)?;
        }
        // Nothing queued: sleep until the BPF component hands us more.
        bpf.update_tasks(Some(0), Some(0))
    }

    fn metrics(&self, out: &mut BTreeMap<String, u64>) {
        out.insert("wakeups".into(), self.wakeups);
        out.insert("slice_expired".into(), self.turn);
    }
}
