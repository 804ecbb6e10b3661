//! What a simulation measured: [`SimResult`], per task and per group, with the framework's
//! counters. Every type is serde-serialisable, so a program that runs the same scenario on a
//! real kernel can report the same structure.

use std::fmt;

use scx_userland::stats::Metrics;
use serde::{Deserialize, Serialize};

/// Distribution of the waits from runnable to running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WaitStats {
    /// Number of waits.
    pub count: u64,
    /// Median (ns).
    pub p50_ns: u64,
    /// 99th percentile (ns).
    pub p99_ns: u64,
    /// Longest (ns).
    pub max_ns: u64,
    /// Mean (ns).
    pub mean_ns: u64,
}

impl WaitStats {
    /// The statistics of `samples` (reordered in place; nearest-rank percentiles).
    pub fn from_samples(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let n = samples.len();
        let rank = |p: u64| ((n as u64 * p).div_ceil(100) as usize).clamp(1, n) - 1;
        let (i50, i99) = (rank(50), rank(99));
        // Two selections instead of a sort: linear time, the same values.
        let p50_ns = *samples.select_nth_unstable(i50).1;
        let p99_ns = if i99 > i50 {
            *samples[i50 + 1..].select_nth_unstable(i99 - i50 - 1).1
        } else {
            p50_ns
        };
        Self {
            count: n as u64,
            p50_ns,
            p99_ns,
            max_ns: samples.iter().copied().max().unwrap_or(0),
            mean_ns: (samples.iter().map(|&s| s as u128).sum::<u128>() / n as u128) as u64,
        }
    }
}

/// One task's results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    /// Instance name.
    pub name: String,
    /// Its group.
    pub group: String,
    /// Its pid in the simulation.
    pub pid: i32,
    /// CPU time used (ns).
    pub runtime_ns: u64,
    /// CPU time as a fraction of one CPU over the run (1.0 = a whole CPU).
    pub cpu_share: f64,
    /// `run` ops completed (work done).
    pub bursts: u64,
    /// Times the program ran to its end.
    pub loops: u64,
    /// Wake-ups (not counting the fork).
    pub wakeups: u64,
    /// Waits from runnable to running (after a wake-up, a preemption or a slice's end).
    pub wait: WaitStats,
    /// Only the waits that began with a wake-up (or the fork): the wake-up latency.
    pub wake_wait: WaitStats,
    /// Longest time runnable without running, including a wait still going on at the end
    /// (ns).
    pub max_starvation_ns: u64,
    /// Whether it exited.
    pub exited: bool,
    /// The CPUs it ran on.
    pub cpus_used: Vec<u32>,
}

/// A group's results: its tasks' added up (waits merged).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupMetrics {
    /// Group name.
    pub name: String,
    /// Number of tasks (spawned ones included).
    pub tasks: u64,
    /// CPU time used (ns).
    pub runtime_ns: u64,
    /// CPU time as a fraction of one CPU over the run.
    pub cpu_share: f64,
    /// `run` ops completed.
    pub bursts: u64,
    /// Programs run to their end.
    pub loops: u64,
    /// Wake-ups.
    pub wakeups: u64,
    /// Waits from runnable to running, all tasks together.
    pub wait: WaitStats,
    /// Only the waits that began with a wake-up (or a fork).
    pub wake_wait: WaitStats,
    /// The longest starvation of any of its tasks (ns).
    pub max_starvation_ns: u64,
}

/// The scheduler process' own figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedulerMetrics {
    /// `Policy::schedule` calls.
    pub calls: u64,
    /// CPU time the scheduler used (ns).
    pub cpu_ns: u64,
    /// Times it was woken from its idle wait.
    pub wakeups: u64,
    /// From runnable (woken) to running.
    pub wait: WaitStats,
}

/// Everything one simulation measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimResult {
    /// Scenario name.
    pub scenario: String,
    /// Policy name.
    pub policy: String,
    /// Virtual time simulated (ns).
    pub duration_ns: u64,
    /// CPUs.
    pub cpus: u32,
    /// Per task, in pid order.
    pub tasks: Vec<TaskMetrics>,
    /// Per group, in order of first appearance.
    pub groups: Vec<GroupMetrics>,
    /// The scheduler process.
    pub scheduler: SchedulerMetrics,
    /// The framework's counters at the end (`Stats`), with the policy's own
    /// (`Policy::metrics`) in `policy`.
    pub stats: Metrics,
    /// Fraction of all CPU time spent running something (scheduler included).
    pub utilisation: f64,
    /// Simulation events processed (a measure of the work done by the simulator).
    pub events: u64,
}

impl SimResult {
    /// The group named `name`. Panics if there is none (meant for tests).
    pub fn group(&self, name: &str) -> &GroupMetrics {
        self.groups
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("no group {name:?} in the result"))
    }

    /// The task named `name`. Panics if there is none (meant for tests).
    pub fn task(&self, name: &str) -> &TaskMetrics {
        self.tasks
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no task {name:?} in the result"))
    }

    /// As JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a result always serialises")
    }
}

fn us(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else {
        format!("{:.1}us", ns as f64 / 1000.0)
    }
}

impl fmt::Display for SimResult {
    /// A table: one line per group, then the scheduler and the counters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario {} | policy {} | {} CPUs | {} ms | utilisation {:.1}%",
            self.scenario,
            self.policy,
            self.cpus,
            self.duration_ns / 1_000_000,
            self.utilisation * 100.0
        )?;
        writeln!(
            f,
            "{:<16} {:>5} {:>7} {:>9} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "group",
            "tasks",
            "cpu",
            "bursts",
            "wakeups",
            "wake p50",
            "wake p99",
            "wait p99",
            "wait max",
            "starved"
        )?;
        for g in &self.groups {
            writeln!(
                f,
                "{:<16} {:>5} {:>6.1}% {:>9} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
                g.name,
                g.tasks,
                g.cpu_share * 100.0,
                g.bursts,
                g.wakeups,
                us(g.wake_wait.p50_ns),
                us(g.wake_wait.p99_ns),
                us(g.wait.p99_ns),
                us(g.wait.max_ns),
                us(g.max_starvation_ns)
            )?;
        }
        let s = &self.scheduler;
        writeln!(
            f,
            "{:<16} {:>5} {:>6.1}% {:>9} {:>8} {:>10} {:>10} {:>10} {:>10}",
            "(scheduler)",
            1,
            s.cpu_ns as f64 * 100.0 / self.duration_ns.max(1) as f64,
            s.calls,
            s.wakeups,
            us(s.wait.p50_ns),
            us(s.wait.p99_ns),
            us(s.wait.p99_ns),
            us(s.wait.max_ns)
        )?;
        write!(f, "counters: {}", self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_a_sort() {
        let mut rng = crate::Rng::new(3);
        for n in [1usize, 2, 3, 99, 100, 101, 1000] {
            let mut v: Vec<u64> = (0..n).map(|_| rng.range(0, 1000)).collect();
            let mut sorted = v.clone();
            sorted.sort_unstable();
            let rank = |p: usize| sorted[((n * p).div_ceil(100)).clamp(1, n) - 1];
            let w = WaitStats::from_samples(&mut v);
            assert_eq!(
                (w.p50_ns, w.p99_ns, w.max_ns),
                (rank(50), rank(99), sorted[n - 1])
            );
        }
    }
}
