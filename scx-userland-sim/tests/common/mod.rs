//! Helpers shared by the simulator's tests: scenario shorthands and a [`Spy`] that records
//! what a policy saw and decided, around any policy, on any backend.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use scx_userland::{Backend, Dispatch, Error, Policy, QueuedTask, Stats};
use scx_userland_sim::{Op, Scenario, TaskSpec};

/// A CPU hog: runs forever.
pub fn hog(name: &str) -> TaskSpec {
    TaskSpec::new(name, vec![Op::RunUs(10_000_000)]).repeat()
}

/// A periodic task: runs `run_us` every `period_us`.
pub fn ticker(name: &str, run_us: u64, period_us: u64) -> TaskSpec {
    TaskSpec::new(name, vec![Op::RunUs(run_us), Op::PeriodUs(period_us)]).repeat()
}

/// A scenario on `cpus` CPUs for `ms` milliseconds.
pub fn scenario(cpus: u32, ms: u64, tasks: Vec<TaskSpec>) -> Scenario {
    Scenario {
        name: "test".into(),
        cpus,
        duration_ms: ms,
        tasks,
        ..Scenario::default()
    }
}

/// What a [`Spy`] recorded.
#[derive(Default, Debug)]
pub struct Seen {
    pub queued: Vec<QueuedTask>,
    pub dispatched: Vec<Dispatch>,
}

/// Runs `inner` and records every task it dequeued and every decision it dispatched.
pub struct Spy<P> {
    pub inner: P,
    pub seen: Rc<RefCell<Seen>>,
}

impl<P> Spy<P> {
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            seen: Rc::default(),
        }
    }
}

struct SpyBackend<'a, B> {
    inner: &'a mut B,
    seen: &'a RefCell<Seen>,
}

impl<B: Backend> Backend for SpyBackend<'_, B> {
    fn dequeue_task(&mut self) -> Result<Option<QueuedTask>, Error> {
        let t = self.inner.dequeue_task()?;
        if let Some(t) = t {
            self.seen.borrow_mut().queued.push(t);
        }
        Ok(t)
    }
    fn dequeue_tasks(&mut self, out: &mut Vec<QueuedTask>, max: usize) -> Result<usize, Error> {
        let start = out.len();
        let n = self.inner.dequeue_tasks(out, max)?;
        self.seen
            .borrow_mut()
            .queued
            .extend_from_slice(&out[start..]);
        Ok(n)
    }
    fn dispatch_tasks(&mut self, tasks: &[Dispatch]) -> Result<(), Error> {
        self.seen.borrow_mut().dispatched.extend_from_slice(tasks);
        self.inner.dispatch_tasks(tasks)
    }
    fn update_tasks(&mut self, q: Option<u64>, s: Option<u64>) -> Result<(), Error> {
        self.inner.update_tasks(q, s)
    }
    fn select_cpu(&self, pid: i32, prev: i32, flags: u64) -> Result<Option<i32>, Error> {
        self.inner.select_cpu(pid, prev, flags)
    }
    fn get_cpu_pid(&self, cpu: i32) -> u32 {
        self.inner.get_cpu_pid(cpu)
    }
    fn stats(&self) -> Stats {
        self.inner.stats()
    }
    fn exited(&self) -> bool {
        self.inner.exited()
    }
    fn nr_cpu_ids(&self) -> usize {
        self.inner.nr_cpu_ids()
    }
}

impl<P: Policy> Policy for Spy<P> {
    fn schedule<B: Backend>(&mut self, sched: &mut B) -> Result<(), Error> {
        let seen = self.seen.clone();
        self.inner.schedule(&mut SpyBackend {
            inner: sched,
            seen: &seen,
        })
    }
    fn attached<B: Backend>(&mut self, sched: &mut B) {
        let seen = self.seen.clone();
        self.inner.attached(&mut SpyBackend {
            inner: sched,
            seen: &seen,
        })
    }
}

/// A policy from a closure deciding each task (`None`: drop it).
pub struct Decide<F>(pub F);

impl<F: FnMut(&QueuedTask) -> Option<Dispatch>> Policy for Decide<F> {
    fn schedule<B: Backend>(&mut self, bpf: &mut B) -> Result<(), Error> {
        while let Some(task) = bpf.dequeue_task()? {
            if task.is_exiting() {
                continue;
            }
            if let Some(d) = (self.0)(&task) {
                bpf.dispatch_task(&d)?;
            }
        }
        bpf.update_tasks(Some(0), Some(0))
    }
}

pub const MS: u64 = 1_000_000;
pub const US: u64 = 1_000;
