//! A cache-aware FIFO scheduler: tasks run in the order they come, and each one goes to a CPU
//! chosen with the machine's topology in mind.
//!
//! A task that wakes up finds part of its working set still in the last-level cache (LLC) of
//! the CPU it ran on before. So, in this order, it goes to:
//!
//! 1. an idle CPU in that same LLC (the CPU it ran on first, if it is idle);
//! 2. else a whole idle core: every SMT sibling of the core idle, so it shares nothing;
//! 3. else the first CPU that frees up (`RL_CPU_ANY`).
//!
//! What it needs from the framework:
//! - `QueuedTask::prev_cpu` / `prev_llc`: where the task last ran, and that CPU's LLC;
//! - `Topology`: each CPU's core and LLC, and their CPUs (`llc_cpus`, `core_cpus`), read once
//!   at start, so every look-up below is an array index;
//! - `Backend::get_cpu_pid(cpu)`: who runs on a CPU right now, 0 when it is idle (kept up to
//!   date by the BPF side at every context switch).
//!
//! The policy only: `main.rs` runs it on the kernel. [`choose_cpu`] is a plain function of the
//! topology and of which CPUs are idle, so it is tested below without a kernel.

use std::collections::BTreeMap;

use scx_userland::{
    Backend, Dispatch, Error, ExitReport, Policy, QueuedTask, Topology, RL_CPU_ANY,
};

/// Where a task goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// An idle CPU in the LLC the task last ran in.
    SameLlc(i32),
    /// The first CPU of a core whose CPUs are all idle (outside the task's LLC).
    IdleCore(i32),
    /// No idle CPU worth taking: the first CPU that frees up.
    Any,
}

/// Pick a CPU for a task that last ran on `prev_cpu` (-1: never ran), given which CPUs are
/// idle. The task must be allowed on every CPU (see [`Llc::schedule`] for the others).
pub fn choose_cpu(topo: &Topology, prev_cpu: i32, idle: impl Fn(i32) -> bool) -> Choice {
    // 1. Its own LLC: the CPU it ran on first, then the others that share the cache.
    if let Some(llc) = topo.llc_of(prev_cpu) {
        // llc_of() is Some only for a valid, online CPU.
        if idle(prev_cpu) {
            return Choice::SameLlc(prev_cpu);
        }
        if let Some(&cpu) = topo.llc_cpus(llc).iter().find(|&&cpu| idle(cpu)) {
            return Choice::SameLlc(cpu);
        }
    }
    // 2. A core with nothing running on any of its SMT siblings.
    for core in 0..topo.nr_cores() as u32 {
        let cpus = topo.core_cpus(core);
        if cpus.iter().all(|&cpu| idle(cpu)) {
            return Choice::IdleCore(cpus[0]);
        }
    }
    // 3. Wait for any CPU.
    Choice::Any
}

/// How many tasks went where (served as statistics and printed at the end).
#[derive(Clone, Copy, Debug, Default)]
pub struct Placements {
    /// Wake-ups placed in the LLC they last ran in.
    pub wakeup_same_llc: u64,
    /// Wake-ups placed on an idle core of another LLC.
    pub wakeup_idle_core: u64,
    /// Wake-ups left to the first CPU that frees up.
    pub wakeup_any: u64,
    /// Other tasks (preempted, slice used up, never ran), placed the same way.
    pub other: u64,
    /// Tasks with a restricted affinity, left where the kernel put them.
    pub restricted: u64,
}

/// The cache-aware policy.
pub struct Llc {
    topo: Topology,
    /// CPUs given a task in this pass: two tasks of one batch never pick the same idle CPU.
    claimed: Vec<bool>,
    batch: Vec<QueuedTask>,
    out: Vec<Dispatch>,
    /// The counts so far.
    pub placements: Placements,
}

impl Llc {
    /// A policy for the machine `topo` describes (`Topology::new()` for this one).
    pub fn new(topo: Topology) -> Self {
        Self {
            claimed: vec![false; topo.nr_cpus()],
            topo,
            batch: Vec::with_capacity(256),
            out: Vec::with_capacity(256),
            placements: Placements::default(),
        }
    }

    /// Decide for one task; `cpu_idle(cpu)` says whether nothing runs on `cpu`.
    fn place(&mut self, task: &QueuedTask, cpu_idle: impl Fn(i32) -> bool) -> Dispatch {
        let mut d = Dispatch::new(task);
        // A task pinned to some CPUs: the policy does not see which ones, the kernel does.
        // Keep the idle CPU it found for the task, or let any allowed CPU take it.
        if (task.nr_cpus_allowed as usize) < self.topo.nr_online_cpus() {
            self.placements.restricted += 1;
            if !task.idle_cpu() {
                d.cpu = RL_CPU_ANY;
            }
            return d;
        }
        let claimed = &self.claimed;
        let idle = |cpu: i32| {
            usize::try_from(cpu).is_ok_and(|i| !claimed.get(i).copied().unwrap_or(true))
                && cpu_idle(cpu)
        };
        let choice = choose_cpu(&self.topo, task.prev_cpu, idle);
        let p = &mut self.placements;
        match (choice, task.is_wakeup()) {
            (Choice::SameLlc(_), true) => p.wakeup_same_llc += 1,
            (Choice::IdleCore(_), true) => p.wakeup_idle_core += 1,
            (Choice::Any, true) => p.wakeup_any += 1,
            (_, false) => p.other += 1,
        }
        d.cpu = match choice {
            Choice::SameLlc(cpu) | Choice::IdleCore(cpu) => {
                self.claimed[cpu as usize] = true;
                cpu
            }
            Choice::Any => RL_CPU_ANY,
        };
        d
    }
}

impl Policy for Llc {
    fn schedule<B: Backend>(&mut self, bpf: &mut B) -> Result<(), Error> {
        self.batch.clear();
        bpf.dequeue_tasks(&mut self.batch, 256)?;
        self.out.clear();
        self.claimed.fill(false);
        for i in 0..self.batch.len() {
            let task = self.batch[i];
            if task.is_exiting() {
                continue;
            }
            let d = self.place(&task, |cpu| bpf.get_cpu_pid(cpu) == 0);
            self.out.push(d);
        }
        bpf.dispatch_tasks(&self.out)?;
        if self.out.is_empty() {
            bpf.update_tasks(Some(0), Some(0))?; // sleeps until tasks come
        }
        Ok(())
    }

    fn attached<B: Backend>(&mut self, _bpf: &mut B) {
        // A restart follows a CPU hotplug: read the topology again (keep the old one if
        // sysfs cannot be read).
        if let Ok(topo) = Topology::new() {
            self.claimed = vec![false; topo.nr_cpus()];
            self.topo = topo;
        }
        let t = &self.topo;
        let llcs: Vec<String> = (0..t.nr_llcs() as u32)
            .map(|llc| format!("{:?}", t.llc_cpus(llc)))
            .collect();
        println!(
            "llc: attached; topology: {} CPUs, {} cores, {} LLCs, {} nodes; LLC CPUs {}",
            t.nr_online_cpus(),
            t.nr_cores(),
            t.nr_llcs(),
            t.nr_nodes(),
            llcs.join(" ")
        );
    }

    fn metrics(&self, out: &mut BTreeMap<String, u64>) {
        let p = &self.placements;
        out.insert("llc_wakeup_same_llc".into(), p.wakeup_same_llc);
        out.insert("llc_wakeup_idle_core".into(), p.wakeup_idle_core);
        out.insert("llc_wakeup_any".into(), p.wakeup_any);
        out.insert("llc_other".into(), p.other);
        out.insert("llc_restricted".into(), p.restricted);
    }

    fn detached(&mut self, report: &ExitReport) {
        let p = &self.placements;
        println!(
            "llc: placements wakeup_same_llc={} wakeup_idle_core={} wakeup_any={} other={} \
             restricted={}",
            p.wakeup_same_llc, p.wakeup_idle_core, p.wakeup_any, p.other, p.restricted
        );
        println!("llc: final {}", report.stats);
        println!("llc: exit: {report}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2 packages x 2 cores x 2 threads: LLC 0 is CPUs 0-3 (cores {0,1} {2,3}), LLC 1 is 4-7.
    fn machine() -> Topology {
        Topology::uniform(2, 2, 2).unwrap()
    }

    fn idle_set(cpus: &[i32]) -> impl Fn(i32) -> bool + '_ {
        move |cpu| cpus.contains(&cpu)
    }

    #[test]
    fn its_own_cpu_first_when_idle() {
        let t = machine();
        assert_eq!(choose_cpu(&t, 2, idle_set(&[0, 2, 5])), Choice::SameLlc(2));
    }

    #[test]
    fn then_another_cpu_of_its_llc_even_with_a_whole_core_idle_elsewhere() {
        let t = machine();
        assert_eq!(
            choose_cpu(&t, 2, idle_set(&[1, 4, 5, 6, 7])),
            Choice::SameLlc(1)
        );
    }

    #[test]
    fn then_a_whole_idle_core_not_a_lone_sibling() {
        let t = machine();
        // LLC 0 busy; in LLC 1, CPU 4 is idle but its sibling 5 is not; core {6,7} is idle.
        assert_eq!(choose_cpu(&t, 1, idle_set(&[4, 6, 7])), Choice::IdleCore(6));
    }

    #[test]
    fn then_any_cpu() {
        let t = machine();
        assert_eq!(choose_cpu(&t, 1, idle_set(&[4, 6])), Choice::Any);
        assert_eq!(choose_cpu(&t, 1, idle_set(&[])), Choice::Any);
    }

    #[test]
    fn a_task_that_never_ran_or_a_bad_cpu_skips_the_llc_step() {
        let t = machine();
        assert_eq!(
            choose_cpu(&t, -1, idle_set(&[1, 6, 7])),
            Choice::IdleCore(6)
        );
        assert_eq!(choose_cpu(&t, 99, idle_set(&[1])), Choice::Any);
        assert_eq!(
            choose_cpu(&t, i32::MIN, idle_set(&[0, 1])),
            Choice::IdleCore(0)
        );
    }

    fn task(pid: i32, prev_cpu: i32, nr_cpus_allowed: i32) -> QueuedTask {
        QueuedTask {
            pid,
            cpu: prev_cpu.max(0),
            prev_cpu,
            nr_cpus_allowed,
            rl_flags: scx_userland::RL_QF_WAKEUP,
            ..QueuedTask::default()
        }
    }

    #[test]
    fn one_pass_never_gives_an_idle_cpu_twice_and_counts() {
        let mut p = Llc::new(machine());
        let idle = |cpu: i32| cpu == 3 || cpu >= 6;
        let a = p.place(&task(10, 2, 8), idle);
        let b = p.place(&task(11, 2, 8), idle);
        let c = p.place(&task(12, 2, 8), idle);
        let d = p.place(&task(13, 2, 2), idle);
        assert_eq!((a.cpu, b.cpu, c.cpu), (3, 6, RL_CPU_ANY));
        assert_eq!(d.cpu, RL_CPU_ANY, "restricted, no idle CPU from the kernel");
        let s = p.placements;
        assert_eq!(
            (
                s.wakeup_same_llc,
                s.wakeup_idle_core,
                s.wakeup_any,
                s.restricted
            ),
            (1, 1, 1, 1)
        );
    }
}
