//! What to simulate: the machine, the BPF component's settings, the scheduler process' costs
//! and the tasks, as a [`Scenario`] (serde: JSON files, or built in Rust).

use serde::{Deserialize, Serialize};

use crate::SimError;

/// Most CPUs a simulated machine may have (affinity masks are 128 bits).
pub const MAX_SIM_CPUS: u32 = 128;

/// A whole simulation: machine, scheduler settings and workload.
///
/// In JSON every field but `tasks` has a default:
///
/// ```json
/// { "name": "hogs-and-pingers", "cpus": 2, "duration_ms": 200,
///   "sched": { "direct_idle": true },
///   "tasks": [
///     { "name": "hog", "count": 2, "repeat": true, "program": [ { "run_us": 100000 } ] },
///     { "name": "ping", "repeat": true, "program": [ { "run_us": 20 }, { "sleep_us": 1000 } ] }
///   ] }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// A name for reports.
    pub name: String,
    /// Number of CPUs (1 to [`MAX_SIM_CPUS`]).
    pub cpus: u32,
    /// CPUs per last-level cache (0 = all in one): an idle CPU is looked for in the previous
    /// CPU's cache domain first.
    pub llc_size: u32,
    /// Virtual time simulated, in milliseconds.
    pub duration_ms: u64,
    /// Seed of the random choices (`run_rand_us`, `sleep_rand_us`): the same seed gives the
    /// same result.
    pub seed: u64,
    /// The BPF component's settings and the scheduler process' costs.
    pub sched: SchedConfig,
    /// The workload.
    pub tasks: Vec<TaskSpec>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "scenario".into(),
            cpus: 2,
            llc_size: 0,
            duration_ms: 1000,
            seed: 1,
            sched: SchedConfig::default(),
            tasks: Vec::new(),
        }
    }
}

/// The BPF component's settings (as the `BpfSchedulerBuilder` sets them) and what the
/// scheduler process costs in virtual time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedConfig {
    /// Default time slice (builder `slice_us`).
    pub slice_us: u64,
    /// A waking task that finds an idle CPU runs there without a round trip (builder
    /// `direct_idle`).
    pub direct_idle: bool,
    /// Per-CPU kernel threads go to user space too (builder `full_user`).
    pub full_user: bool,
    /// Stall guard: outstanding work and no progress from user space for this long makes
    /// BPF run the waiting tasks itself (builder `stall_timeout_ms`).
    pub stall_timeout_ms: u64,
    /// CPU time of one `Policy::schedule` call, whatever it does (ns).
    pub schedule_cost_ns: u64,
    /// CPU time per task the policy dequeues (ns).
    pub dequeue_cost_ns: u64,
    /// CPU time per decision the policy dispatches (ns).
    pub dispatch_cost_ns: u64,
    /// From the first record that finds the scheduler asleep to it being runnable (ns).
    pub wakeup_latency_ns: u64,
    /// CPU time a task spends in the system call of a `wake`, `spawn`, `nice` or `affinity`
    /// op (ns): the task runs on for this long after the effect.
    pub syscall_ns: u64,
    /// Windows `[from_ms, to_ms)` in which the scheduler process is stopped (SIGSTOP): it
    /// decides nothing, and the stall guard should step in.
    pub stopped_ms: Vec<[u64; 2]>,
}

impl Default for SchedConfig {
    fn default() -> Self {
        Self {
            slice_us: 5000,
            direct_idle: false,
            full_user: false,
            stall_timeout_ms: 100,
            schedule_cost_ns: 2000,
            dequeue_cost_ns: 1000,
            dispatch_cost_ns: 0,
            wakeup_latency_ns: 500,
            syscall_ns: 2000,
            stopped_ms: Vec::new(),
        }
    }
}

/// One kind of task: `count` instances of the same program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSpec {
    /// Name (instances are `name.0`, `name.1`, … when `count > 1`).
    pub name: String,
    /// The group its metrics are added to (default: the name).
    pub group: Option<String>,
    /// Number of instances started at `start_us` (ignored with `spawn_only`).
    pub count: u32,
    /// Nice value (-20..=19).
    pub nice: i32,
    /// Affinity: the CPUs it may use (empty: all).
    pub cpus: Vec<u32>,
    /// When the instances are forked (us).
    pub start_us: u64,
    /// Run the program again and again; otherwise the task exits at its end.
    pub repeat: bool,
    /// Only created by a `spawn` op of another task, never at start.
    pub spawn_only: bool,
    /// A kernel thread (with a single allowed CPU, BPF dispatches it itself unless
    /// `full_user`; so it does with the memory-management threads, named `kswapd…`,
    /// `kcompactd…` or `khugepaged…`, on any CPUs).
    pub kthread: bool,
    /// A thread of the scheduler process (same tgid): its records reach the policy like any
    /// other task's.
    pub sched_thread: bool,
    /// A thread of the scheduler process registered with `BpfScheduler::privilege_thread`
    /// (implies `sched_thread`): BPF runs it like the scheduling thread, on its CPU at once,
    /// ahead of others when user space has work, never through the policy.
    pub privileged: bool,
    /// A task of a higher sched class (SCHED_FIFO): sched_ext never sees it, and it takes
    /// its CPU from sched_ext at once (`ops.cpu_release`: the tasks waiting in that CPU's
    /// local queue go through `ops.enqueue` again).
    pub rt: bool,
    /// What the task does.
    pub program: Vec<Op>,
}

impl Default for TaskSpec {
    fn default() -> Self {
        Self {
            name: "task".into(),
            group: None,
            count: 1,
            nice: 0,
            cpus: Vec::new(),
            start_us: 0,
            repeat: false,
            spawn_only: false,
            kthread: false,
            sched_thread: false,
            privileged: false,
            rt: false,
            program: Vec::new(),
        }
    }
}

impl TaskSpec {
    /// A task named `name` running `program` once.
    pub fn new(name: &str, program: Vec<Op>) -> Self {
        Self {
            name: name.into(),
            program,
            ..Self::default()
        }
    }
    /// Run the program forever.
    pub fn repeat(mut self) -> Self {
        self.repeat = true;
        self
    }
    /// `n` instances.
    pub fn count(mut self, n: u32) -> Self {
        self.count = n;
        self
    }
    /// Metrics group.
    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.into());
        self
    }
    /// Nice value.
    pub fn nice(mut self, nice: i32) -> Self {
        self.nice = nice;
        self
    }
    /// Affinity.
    pub fn cpus(mut self, cpus: &[u32]) -> Self {
        self.cpus = cpus.to_vec();
        self
    }
    /// Start time (us).
    pub fn start_us(mut self, us: u64) -> Self {
        self.start_us = us;
        self
    }
    /// Created only by `spawn`.
    pub fn spawn_only(mut self) -> Self {
        self.spawn_only = true;
        self
    }
    /// A kernel thread.
    pub fn kthread(mut self) -> Self {
        self.kthread = true;
        self
    }
    /// A thread of the scheduler process.
    pub fn sched_thread(mut self) -> Self {
        self.sched_thread = true;
        self
    }
    /// A privileged thread of the scheduler process.
    pub fn privileged(mut self) -> Self {
        self.sched_thread = true;
        self.privileged = true;
        self
    }
    /// A task of a higher sched class (real-time).
    pub fn rt(mut self) -> Self {
        self.rt = true;
        self
    }
    /// Whether BPF takes it for a memory-management kernel thread (kswapd, kcompactd,
    /// khugepaged), as main.bpf.c tells them by name.
    pub fn is_mm_kthread(&self) -> bool {
        self.kthread
            && ["kswapd", "kcompactd", "khugepaged"]
                .iter()
                .any(|p| self.name.starts_with(p))
    }
    /// The metrics group name.
    pub fn group_name(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.name)
    }
}

/// One step of a task's program. In JSON: `{"run_us": 50}`, `"wait"`, `{"wake": "pong"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Use the CPU for this long (us of CPU time).
    RunUs(u64),
    /// Use the CPU for a random time in `[min, max]` us.
    RunRandUs([u64; 2]),
    /// Sleep (us).
    SleepUs(u64),
    /// Sleep a random time in `[min, max]` us.
    SleepRandUs([u64; 2]),
    /// Sleep until the next multiple of this period since the task started (us): with a
    /// `run_us`, a periodic task.
    PeriodUs(u64),
    /// Block until woken by a `wake` (a pipe read or futex wait: a wake that came first is
    /// not lost).
    Wait,
    /// Wake the named task (an instance name, or a task name with `count > 1`: the instance
    /// with the waker's index).
    Wake(String),
    /// Fork a task of the named (usually `spawn_only`) kind.
    Spawn(String),
    /// Change the nice value.
    Nice(i32),
    /// Change the affinity (empty: all CPUs).
    Affinity(Vec<u32>),
    /// Exit now.
    Exit,
}

impl Scenario {
    /// Parse a JSON scenario and check it.
    pub fn from_json(text: &str) -> Result<Self, SimError> {
        let s: Scenario = serde_json::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// The scenario as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a scenario always serialises")
    }

    /// Check what a run would otherwise trip over.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |msg: String| Err(SimError::Scenario(msg));
        if self.cpus == 0 || self.cpus > MAX_SIM_CPUS {
            return bad(format!(
                "cpus must be 1..={MAX_SIM_CPUS}, not {}",
                self.cpus
            ));
        }
        if self.sched.slice_us == 0 || self.sched.slice_us > 1_000_000 {
            return bad(format!(
                "sched.slice_us must be 1..=1000000, not {}",
                self.sched.slice_us
            ));
        }
        if self.sched.stall_timeout_ms == 0 {
            return bad("sched.stall_timeout_ms must be > 0".into());
        }
        if self.sched.schedule_cost_ns == 0 {
            return bad("sched.schedule_cost_ns must be > 0 (a scheduler loop costs time)".into());
        }
        for (i, t) in self.tasks.iter().enumerate() {
            if self.tasks[..i].iter().any(|o| o.name == t.name) {
                return bad(format!("two tasks are named {:?}", t.name));
            }
            if !(-20..=19).contains(&t.nice) {
                return bad(format!("{}: nice {} is not in -20..=19", t.name, t.nice));
            }
            self.check_cpus(&t.name, &t.cpus)?;
            if t.rt && (t.kthread || t.sched_thread || t.privileged) {
                return bad(format!(
                    "{}: an rt task is neither a kthread nor a scheduler thread",
                    t.name
                ));
            }
            if t.kthread && (t.sched_thread || t.privileged) {
                return bad(format!(
                    "{}: a kthread is not a thread of the scheduler process",
                    t.name
                ));
            }
            let mut timed = false;
            for op in &t.program {
                match op {
                    Op::RunUs(_) | Op::SleepUs(_) | Op::Wait => timed = true,
                    Op::PeriodUs(p) => {
                        if *p == 0 {
                            return bad(format!("{}: period_us 0", t.name));
                        }
                        timed = true;
                    }
                    Op::RunRandUs([a, b]) | Op::SleepRandUs([a, b]) => {
                        if a > b {
                            return bad(format!("{}: random range [{a}, {b}] is empty", t.name));
                        }
                        timed = true;
                    }
                    Op::Wake(n) | Op::Spawn(n) => {
                        if !self.tasks.iter().any(|o| &o.name == n)
                            && !self.tasks.iter().any(|o| {
                                o.count > 1
                                    && n.strip_prefix(o.name.as_str())
                                        .and_then(|r| r.strip_prefix('.'))
                                        .and_then(|r| r.parse::<u32>().ok())
                                        .is_some_and(|i| i < o.count)
                            })
                        {
                            return bad(format!("{}: no task named {n:?}", t.name));
                        }
                    }
                    Op::Nice(n) => {
                        if !(-20..=19).contains(n) {
                            return bad(format!("{}: nice {n} is not in -20..=19", t.name));
                        }
                    }
                    Op::Affinity(c) => self.check_cpus(&t.name, c)?,
                    Op::Exit => {}
                }
            }
            if t.repeat && !timed {
                return bad(format!(
                    "{}: a repeating program needs a run, sleep, period or wait op",
                    t.name
                ));
            }
        }
        Ok(())
    }

    fn check_cpus(&self, name: &str, cpus: &[u32]) -> Result<(), SimError> {
        match cpus.iter().find(|&&c| c >= self.cpus) {
            Some(c) => Err(SimError::Scenario(format!(
                "{name}: cpu {c} does not exist ({} cpus)",
                self.cpus
            ))),
            None => Ok(()),
        }
    }
}

/// The kernel's weight for a nice value, in sched_ext's scale (nice 0 = 100).
pub fn nice_to_weight(nice: i32) -> u64 {
    const PRIO_TO_WEIGHT: [u64; 40] = [
        88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, 9548, 7620, 6100,
        4904, 3906, 3121, 2501, 1991, 1586, 1277, 1024, 820, 655, 526, 423, 335, 272, 215, 172,
        137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15,
    ];
    let w = PRIO_TO_WEIGHT[(nice.clamp(-20, 19) + 20) as usize];
    // sched_weight_to_cgroup(): DIV_ROUND_CLOSEST_ULL(weight * 100, 1024), at least 1.
    ((w * 100 + 512) / 1024).max(1)
}
