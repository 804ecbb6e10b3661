//! [`Backend`]: what a policy sees of the scheduler it drives, so that one policy source runs
//! on the real kernel ([`BpfScheduler`]) and on any other implementation, such as a simulator.

use crate::{BpfScheduler, Dispatch, Error, QueuedTask, Stats};

/// The calls a policy makes. [`BpfScheduler`] implements it with the same meaning as its
/// inherent methods of the same names; write a [`Policy`](crate::Policy) against this trait
/// (`fn schedule<B: Backend>(&mut self, sched: &mut B)`) and it runs unchanged on every
/// backend.
pub trait Backend {
    /// The next task that wants a CPU, or `None` (see [`BpfScheduler::dequeue_task`]).
    fn dequeue_task(&mut self) -> Result<Option<QueuedTask>, Error>;
    /// Up to `max` waiting tasks appended to `out` (see [`BpfScheduler::dequeue_tasks`]).
    fn dequeue_tasks(&mut self, out: &mut Vec<QueuedTask>, max: usize) -> Result<usize, Error>;
    /// Hand over several decisions (see [`BpfScheduler::dispatch_tasks`]).
    fn dispatch_tasks(&mut self, tasks: &[Dispatch]) -> Result<(), Error>;
    /// Hand over one decision (see [`BpfScheduler::dispatch_task`]).
    fn dispatch_task<T: Into<Dispatch> + Copy>(&mut self, task: &T) -> Result<(), Error> {
        self.dispatch_tasks(std::slice::from_ref(&(*task).into()))
    }
    /// Report the work user space holds; sleeps when there is none (see
    /// [`BpfScheduler::update_tasks`]).
    fn update_tasks(
        &mut self,
        nr_queued: Option<u64>,
        nr_scheduled: Option<u64>,
    ) -> Result<(), Error>;
    /// Like `update_tasks(None, Some(nr_pending))`.
    fn notify_complete(&mut self, nr_pending: u64) -> Result<(), Error> {
        self.update_tasks(None, Some(nr_pending))
    }
    /// An idle CPU for `pid` (see [`BpfScheduler::select_cpu`]).
    fn select_cpu(&self, pid: i32, prev_cpu: i32, flags: u64) -> Result<Option<i32>, Error>;
    /// The pid running on `cpu`, 0 when idle (see [`BpfScheduler::get_cpu_pid`]).
    fn get_cpu_pid(&self, cpu: i32) -> u32;
    /// Every counter (see [`BpfScheduler::stats`]).
    fn stats(&self) -> Stats;
    /// True once the scheduler was ended (see [`BpfScheduler::exited`]).
    fn exited(&self) -> bool;
    /// Number of possible CPU ids: valid CPUs are `0..nr_cpu_ids()`.
    fn nr_cpu_ids(&self) -> usize;
}

impl Backend for BpfScheduler<'_> {
    fn dequeue_task(&mut self) -> Result<Option<QueuedTask>, Error> {
        BpfScheduler::dequeue_task(self)
    }
    fn dequeue_tasks(&mut self, out: &mut Vec<QueuedTask>, max: usize) -> Result<usize, Error> {
        BpfScheduler::dequeue_tasks(self, out, max)
    }
    fn dispatch_tasks(&mut self, tasks: &[Dispatch]) -> Result<(), Error> {
        BpfScheduler::dispatch_tasks(self, tasks)
    }
    fn dispatch_task<T: Into<Dispatch> + Copy>(&mut self, task: &T) -> Result<(), Error> {
        BpfScheduler::dispatch_task(self, task)
    }
    fn update_tasks(
        &mut self,
        nr_queued: Option<u64>,
        nr_scheduled: Option<u64>,
    ) -> Result<(), Error> {
        BpfScheduler::update_tasks(self, nr_queued, nr_scheduled)
    }
    fn notify_complete(&mut self, nr_pending: u64) -> Result<(), Error> {
        BpfScheduler::notify_complete(self, nr_pending)
    }
    fn select_cpu(&self, pid: i32, prev_cpu: i32, flags: u64) -> Result<Option<i32>, Error> {
        BpfScheduler::select_cpu(self, pid, prev_cpu, flags)
    }
    fn get_cpu_pid(&self, cpu: i32) -> u32 {
        BpfScheduler::get_cpu_pid(self, cpu)
    }
    fn stats(&self) -> Stats {
        BpfScheduler::stats(self)
    }
    fn exited(&self) -> bool {
        BpfScheduler::exited(self)
    }
    fn nr_cpu_ids(&self) -> usize {
        BpfScheduler::nr_cpu_ids(self)
    }
}
