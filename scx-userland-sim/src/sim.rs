//! The simulator: virtual time, the kernel's side of sched_ext as far as it shows, the BPF
//! component's rules (`scx-userland-bpf/src/bpf/main.bpf.c`), and the scheduler process that
//! runs the policy.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use scx_userland::stats::Metrics;
use scx_userland::{
    Backend, Dispatch, Error, ExitKind, ExitReport, Policy, QueuedTask, Stats, Target, RL_CPU_ANY,
    SLICE_MAX_NS,
};

use crate::metrics::{GroupMetrics, SchedulerMetrics, SimResult, TaskMetrics, WaitStats};
use crate::rng::Rng;
use crate::scenario::{nice_to_weight, Op, Scenario};
use crate::SimError;

// The kernel's enqueue flags (`SCX_ENQ_*`).
const SCX_ENQ_WAKEUP: u64 = 1;
const SCX_ENQ_HEAD: u64 = 1 << 4;
const SCX_ENQ_PREEMPT: u64 = 1 << 32;
const SCX_ENQ_REENQ: u64 = 1 << 40;
/// The kernel's default slice, used when it keeps a task running whose slice ran out.
const SCX_SLICE_DFL_NS: u64 = 20_000_000;
/// The most `ops.dispatch` calls in one pass of the kernel's `balance` loop.
const SCX_DSP_MAX_LOOPS: u32 = 32;

// intf.h `RL_QF_*`.
const RL_QF_IDLE_CPU: u32 = 1;
const RL_QF_KTHREAD: u32 = 2;
const RL_QF_WAKEUP: u32 = 4;
const RL_QF_REENQ: u32 = 8;

// main.bpf.c.
const STALL_TICK_NS: u64 = 20_000_000;
const PREEMPT_MIN_RUN_NS: u64 = 200_000;
const VTIME_MAX_WAIT_NS: u64 = 20_000_000;
const FIFO_HEAD_MAX_NS: u64 = 20_000_000;
const RESUME_MIN_SLICE_NS: u64 = 100_000;
/// Woken tasks go before a displaced task on its CPU for at most this long.
const RESUME_MAX_WAIT_NS: u64 = 1_000_000;
/// A resume queue left this long past its turn is served by the stall tick.
const RESUME_RESCUE_NS: u64 = 10_000_000;
/// `shared_rescue_ns` for the default `timeout_ms` (5 s): the lesser of 1 s and a quarter of it.
const SHARED_RESCUE_NS: u64 = 1_000_000_000;
/// How many tasks of each shared queue the stall tick looks at.
const SHARED_RESCUE_SCAN: usize = 32;
const DISPATCH_MAX_BATCH: usize = 32;
const BATCH_MAX: usize = 16;
/// `queued` ring: 4 MiB of 112-byte records with an 8-byte header each.
const QUEUED_RING_RECORDS: usize = 4 * 1024 * 1024 / 120;
const PENDING_MAX: usize = 32768;
/// The scheduler's idle wait in `update_tasks` (`IDLE_WAIT`).
const IDLE_WAIT_NS: u64 = 100_000_000;
/// How often `Policy::tick` is called (as `Runner`'s default).
const TICK_NS: u64 = 1_000_000_000;

/// The scheduler process' pid (and tgid).
pub const SCHED_PID: i32 = 1;
/// The first workload pid: task `n` (from 1) has pid `PID_BASE + n`.
pub const PID_BASE: i32 = 1000;

const SCHED: usize = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// The running task's burst or slice ends (or the scheduler's call does).
    CpuTimer {
        cpu: u32,
    },
    /// The CPU goes through the scheduling path.
    Resched {
        cpu: u32,
    },
    /// A sleeping task's timer.
    TaskWake {
        tid: u32,
    },
    /// A task is forked.
    Fork {
        tid: u32,
    },
    /// The scheduler's wake-up (a record arrived, or its idle wait timed out).
    SchedWake {
        gen: u64,
    },
    /// The scheduler's idle wait may have timed out (armed lazily: one event at a time).
    SchedTimeout,
    StallTick,
    StopStart,
    StopEnd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    New,
    Sleeping,
    Blocked,
    /// In BPF's / user space's hands (a record was sent).
    Queued,
    Shared,
    /// In its CPU's resume queue (displaced by the scheduler's own wake-up).
    Resume,
    Local,
    Running,
    Stopped,
    Exited,
}

#[derive(Clone, Copy, Debug)]
enum COp {
    Run(u64),
    RunRand(u64, u64),
    Sleep(u64),
    SleepRand(u64, u64),
    Period(u64),
    Wait,
    Wake(usize, Option<usize>),
    Spawn(usize),
    Nice(i32),
    Affinity(u128),
    Exit,
}

/// What a task is, beyond its program (from its [`TaskSpec`](crate::TaskSpec)).
#[derive(Clone, Copy, Debug, Default)]
struct Kind {
    kthread: bool,
    /// kswapd, kcompactd, khugepaged.
    mm_kthread: bool,
    /// A thread of the scheduler process (tgid [`SCHED_PID`]).
    sched_thread: bool,
    /// `is_usersched()`: the scheduling thread, or a thread registered as privileged.
    privileged: bool,
    /// A higher sched class's task.
    rt: bool,
}

struct Task {
    pid: i32,
    tgid: i32,
    name: String,
    group: usize,
    spec: usize,
    index: usize,
    weight: u64,
    affinity: u128,
    cpumask_cnt: u64,
    kind: Kind,
    state: St,
    cpu: u32,
    // Program.
    pc: usize,
    remaining: u64,
    /// `remaining` is a `run` op's (not a system call's).
    in_run: bool,
    born: u64,
    tokens: u64,
    // BPF task_ctx.
    queued: bool,
    seq: u64,
    reported: bool,
    idle_cpu: i32,
    start_ts: u64,
    stop_ts: u64,
    exec_runtime: u64,
    run_slice: u64,
    /// CPU time between its previous wake-up and going to sleep.
    last_burst: u64,
    /// The CPU it last ran on (-1: never).
    last_cpu: i32,
    /// When a decision (or the stall guard) last put it in a shared queue; 0 once it runs.
    shared_ts: u64,
    // Kernel.
    sum_exec: u64,
    dsq_vtime: u64,
    slice: u64,
    // Metrics.
    runnable_since: u64,
    /// The current wait began with a wake-up (or the fork).
    woken: bool,
    waits: Vec<u64>,
    wake_waits: Vec<u64>,
    max_starve: u64,
    wakeups: u64,
    bursts: u64,
    loops: u64,
    cpus_used: u128,
}

struct Cpu {
    curr: Option<usize>,
    seg_start: u64,
    slice_left: u64,
    local: VecDeque<(usize, u64)>,
    idle_bit: bool,
    /// When the running task's burst, slice or call ends (`u64::MAX`: no timer).
    deadline: u64,
    resched: bool,
    cpu_to_pid: u32,
    run_start: u64,
    displaced: i32,
    /// `RESUME_DSQ + cpu`: the tasks the scheduler's own wake-up displaced here, waiting
    /// to resume (FIFO, but one cut short joins at the head; each with what is left of its
    /// slice in its `slice`).
    resume: VecDeque<usize>,
    /// `resume_ts[cpu]`: when the oldest of them was displaced, or 0 if one was cut short
    /// (overdue at once).
    resume_ts: u64,
    busy_ns: u64,
    /// Higher-class tasks waiting for this CPU.
    rt_queue: VecDeque<usize>,
    /// `ops.cpu_release` ran and sched_ext has not had the CPU back since.
    released: bool,
}

#[derive(Default)]
struct Counters {
    nr_running: u64,
    nr_queued: u64,
    nr_scheduled: u64,
    nr_user_dispatches: u64,
    nr_kernel_dispatches: u64,
    nr_cancel_dispatches: u64,
    nr_bounce_dispatches: u64,
    nr_sched_congested: u64,
    nr_queued_events: u64,
    nr_exit_events: u64,
    nr_dispatch_records: u64,
    nr_stalls: u64,
    nr_fallback_dispatches: u64,
    nr_direct_dispatches: u64,
    nr_displaced_dispatches: u64,
    nr_vtime_dispatches: u64,
    nr_reenqueued: u64,
    nr_mm_kthread_dispatches: u64,
    nr_resume_rescues: u64,
    nr_shared_rescues: u64,
    nr_outstanding: i64,
    fallback: bool,
}

/// The scheduler process' state beyond its [`Task`].
#[derive(Default)]
struct SchedProc {
    /// `usersched_sleeping`: asleep in its idle wait.
    sleeping: bool,
    wake_pending: bool,
    /// When the record that wakes it was published.
    notified_at: u64,
    sleep_gen: u64,
    timeout_at: u64,
    timeout_armed: bool,
    want_sleep: bool,
    stopped: bool,
    wake_on_cont: bool,
    call_pending: Option<u32>,
    calls: u64,
    cpu_ns: u64,
    wakeups: u64,
    last_tick: u64,
}

/// The simulated machine, kernel and BPF component. Build one with [`Simulator::new`] and
/// run a policy on it with [`Simulator::run`]; during a `schedule` call the policy sees it
/// through a [`SimScheduler`] (its [`Backend`]).
pub struct Simulator {
    now: u64,
    end: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    /// CPUs to put through the scheduling path at the current time, in order.
    immediate: VecDeque<u32>,
    nr_events: u64,
    rng: Rng,
    nr_cpus: u32,
    llc_size: u32,
    all_cpus: u128,
    slice_dfl: u64,
    direct_idle: bool,
    full_user: bool,
    stall_ns: u64,
    costs: [u64; 4],
    syscall_ns: u64,
    cpus: Vec<Cpu>,
    tasks: Vec<Task>,
    programs: Vec<(Vec<COp>, bool)>,
    spec_names: Vec<String>,
    spec_affinity: Vec<u128>,
    spec_nice: Vec<i32>,
    spec_kind: Vec<Kind>,
    spec_group: Vec<usize>,
    instances: Vec<Vec<usize>>,
    groups: Vec<String>,
    // BPF state.
    ring: VecDeque<QueuedTask>,
    cons_pos: u64,
    /// The `dispatched` ring: records, and samples as (published at, records).
    user_recs: VecDeque<Dispatch>,
    user_samples: VecDeque<(u64, usize)>,
    fifo: VecDeque<usize>,
    vtime_q: VecDeque<(u64, usize)>,
    vtime_served_ts: u64,
    fifo_empty_ts: u64,
    pending: VecDeque<(i32, u64)>,
    last_cons_pos: u64,
    last_dispatch_records: u64,
    last_progress_ns: u64,
    c: Counters,
    sched: SchedProc,
    scenario_name: String,
    trace: bool,
}

fn mask_of(cpus: &[u32], all: u128) -> u128 {
    if cpus.is_empty() {
        all
    } else {
        cpus.iter().fold(0, |m, &c| m | (1u128 << c))
    }
}

impl Simulator {
    /// A simulator set up for `scenario` (checked first), at virtual time 0.
    pub fn new(scenario: &Scenario) -> Result<Self, SimError> {
        scenario.validate()?;
        let n = scenario.cpus;
        let all = if n == 128 {
            u128::MAX
        } else {
            (1u128 << n) - 1
        };
        let cfg = &scenario.sched;
        let mut sim = Self {
            now: 0,
            end: scenario.duration_ms.saturating_mul(1_000_000),
            seq: 0,
            events: BinaryHeap::new(),
            immediate: VecDeque::new(),
            nr_events: 0,
            rng: Rng::new(scenario.seed),
            nr_cpus: n,
            llc_size: if scenario.llc_size == 0 {
                n
            } else {
                scenario.llc_size.min(n)
            },
            all_cpus: all,
            slice_dfl: cfg.slice_us * 1000,
            direct_idle: cfg.direct_idle,
            full_user: cfg.full_user,
            stall_ns: cfg.stall_timeout_ms * 1_000_000,
            syscall_ns: cfg.syscall_ns,
            costs: [
                cfg.schedule_cost_ns,
                cfg.dequeue_cost_ns,
                cfg.dispatch_cost_ns,
                cfg.wakeup_latency_ns,
            ],
            cpus: (0..n)
                .map(|_| Cpu {
                    curr: None,
                    seg_start: 0,
                    slice_left: 0,
                    local: VecDeque::new(),
                    idle_bit: true,
                    deadline: u64::MAX,
                    resched: false,
                    cpu_to_pid: 0,
                    run_start: 0,
                    displaced: 0,
                    resume: VecDeque::new(),
                    resume_ts: 0,
                    busy_ns: 0,
                    rt_queue: VecDeque::new(),
                    released: false,
                })
                .collect(),
            tasks: Vec::new(),
            programs: Vec::new(),
            spec_names: scenario.tasks.iter().map(|t| t.name.clone()).collect(),
            spec_affinity: scenario
                .tasks
                .iter()
                .map(|t| mask_of(&t.cpus, all))
                .collect(),
            spec_nice: scenario.tasks.iter().map(|t| t.nice).collect(),
            spec_kind: scenario
                .tasks
                .iter()
                .map(|t| Kind {
                    kthread: t.kthread,
                    mm_kthread: t.is_mm_kthread(),
                    sched_thread: t.sched_thread || t.privileged,
                    privileged: t.privileged,
                    rt: t.rt,
                })
                .collect(),
            spec_group: Vec::new(),
            instances: vec![Vec::new(); scenario.tasks.len()],
            groups: Vec::new(),
            ring: VecDeque::new(),
            cons_pos: 0,
            user_recs: VecDeque::new(),
            user_samples: VecDeque::new(),
            fifo: VecDeque::new(),
            vtime_q: VecDeque::new(),
            vtime_served_ts: 0,
            fifo_empty_ts: 0,
            pending: VecDeque::new(),
            last_cons_pos: 0,
            last_dispatch_records: 0,
            last_progress_ns: 0,
            c: Counters::default(),
            sched: SchedProc::default(),
            scenario_name: scenario.name.clone(),
            trace: std::env::var_os("SCX_SIM_TRACE").is_some(),
        };
        for t in &scenario.tasks {
            let g = match sim.groups.iter().position(|g| g == t.group_name()) {
                Some(g) => g,
                None => {
                    sim.groups.push(t.group_name().to_string());
                    sim.groups.len() - 1
                }
            };
            sim.spec_group.push(g);
        }
        for t in &scenario.tasks {
            let prog = t
                .program
                .iter()
                .map(|op| sim.compile(op))
                .collect::<Vec<_>>();
            sim.programs.push((prog, t.repeat));
        }
        // The scheduler process: task 0, its own group for nothing but bookkeeping.
        sim.push_task(usize::MAX, 0, "scheduler".into(), 0);
        let mut forks = Vec::new();
        for (spec, t) in scenario.tasks.iter().enumerate() {
            if t.spawn_only {
                continue;
            }
            for i in 0..t.count as usize {
                let name = if t.count == 1 {
                    t.name.clone()
                } else {
                    format!("{}.{i}", t.name)
                };
                let tid = sim.push_task(spec, i, name, t.start_us * 1000);
                forks.push((t.start_us * 1000, tid));
            }
        }
        for (at, tid) in forks {
            sim.tasks[tid].cpu = (tid as u32 - 1) % n;
            sim.push(at, Ev::Fork { tid: tid as u32 });
        }
        sim.push(STALL_TICK_NS, Ev::StallTick);
        for w in &cfg.stopped_ms {
            sim.push(w[0] * 1_000_000, Ev::StopStart);
            sim.push(w[1] * 1_000_000, Ev::StopEnd);
        }
        Ok(sim)
    }

    fn compile(&self, op: &Op) -> COp {
        let find = |name: &str| -> (usize, Option<usize>) {
            if let Some(s) = self.spec_names.iter().position(|n| n == name) {
                return (s, None);
            }
            let (base, idx) = name.rsplit_once('.').expect("validated");
            let s = self
                .spec_names
                .iter()
                .position(|n| n == base)
                .expect("validated");
            (s, Some(idx.parse().expect("validated")))
        };
        match op {
            Op::RunUs(us) => COp::Run(us * 1000),
            Op::RunRandUs([a, b]) => COp::RunRand(a * 1000, b * 1000),
            Op::SleepUs(us) => COp::Sleep(us * 1000),
            Op::SleepRandUs([a, b]) => COp::SleepRand(a * 1000, b * 1000),
            Op::PeriodUs(us) => COp::Period(us * 1000),
            Op::Wait => COp::Wait,
            Op::Wake(name) => {
                let (s, i) = find(name);
                COp::Wake(s, i)
            }
            Op::Spawn(name) => COp::Spawn(find(name).0),
            Op::Nice(n) => COp::Nice(*n),
            Op::Affinity(c) => COp::Affinity(mask_of(c, self.all_cpus)),
            Op::Exit => COp::Exit,
        }
    }

    fn push_task(&mut self, spec: usize, index: usize, name: String, born: u64) -> usize {
        let tid = self.tasks.len();
        let sched = spec == usize::MAX;
        let (affinity, nice, kind, group) = if sched {
            let kind = Kind {
                sched_thread: true,
                privileged: true,
                ..Kind::default()
            };
            (self.all_cpus, 0, kind, usize::MAX)
        } else {
            (
                self.spec_affinity[spec],
                self.spec_nice[spec],
                self.spec_kind[spec],
                self.spec_group[spec],
            )
        };
        let pid = if sched {
            SCHED_PID
        } else {
            PID_BASE + tid as i32
        };
        self.tasks.push(Task {
            pid,
            tgid: if kind.sched_thread { SCHED_PID } else { pid },
            name,
            group,
            spec,
            index,
            weight: nice_to_weight(nice),
            affinity,
            cpumask_cnt: 0,
            kind,
            state: St::New,
            cpu: 0,
            pc: 0,
            remaining: 0,
            in_run: false,
            born,
            tokens: 0,
            queued: false,
            seq: 0,
            reported: false,
            idle_cpu: -1,
            start_ts: 0,
            stop_ts: 0,
            exec_runtime: 0,
            run_slice: 0,
            last_burst: 0,
            last_cpu: -1,
            shared_ts: 0,
            sum_exec: 0,
            dsq_vtime: 0,
            slice: 0,
            runnable_since: 0,
            woken: false,
            waits: Vec::new(),
            wake_waits: Vec::new(),
            max_starve: 0,
            wakeups: 0,
            bursts: 0,
            loops: 0,
            cpus_used: 0,
        });
        if !sched {
            self.instances[spec].push(tid);
        }
        tid
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, ev)));
    }

    fn tid_of(&self, pid: i32) -> Option<usize> {
        let tid = if pid == SCHED_PID {
            SCHED
        } else if pid > PID_BASE {
            (pid - PID_BASE) as usize
        } else {
            return None;
        };
        (tid < self.tasks.len() && self.tasks[tid].state != St::Exited).then_some(tid)
    }

    fn allowed(&self, tid: usize, cpu: u32) -> bool {
        cpu < self.nr_cpus && self.tasks[tid].affinity & (1u128 << cpu) != 0
    }

    // ---------------------------------------------------------------- the run loop

    /// Run `policy` on the scenario to its end: `attached`, then `schedule` whenever the
    /// scheduler process runs in virtual time, `tick` every virtual second, `metrics` and
    /// `detached` at the end. Returns what was measured.
    pub fn run<P: Policy>(mut self, policy: &mut P) -> Result<SimResult, SimError> {
        policy.attached(&mut SimScheduler {
            sim: &mut self,
            clock: 0,
        });
        // The scheduler process starts running on CPU 0 at once.
        self.tasks[SCHED].state = St::Local;
        self.tasks[SCHED].runnable_since = 0;
        self.cpus[0].local.push_back((SCHED, self.slice_dfl));
        self.cpus[0].idle_bit = false;
        self.request_resched(0);
        loop {
            let (at, ev) = if let Some(cpu) = self.immediate.pop_front() {
                self.cpus[cpu as usize].resched = false;
                (self.now, Ev::Resched { cpu })
            } else {
                let heap_at = self.events.peek().map_or(u64::MAX, |e| e.0 .0);
                let (cpu_at, cpu) = self
                    .cpus
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.deadline, i))
                    .min()
                    .expect("at least one CPU");
                if cpu_at < heap_at {
                    self.cpus[cpu].deadline = u64::MAX;
                    (cpu_at, Ev::CpuTimer { cpu: cpu as u32 })
                } else if let Some(Reverse((at, _, ev))) = self.events.pop() {
                    (at, ev)
                } else {
                    break;
                }
            };
            if at > self.end {
                break;
            }
            self.now = at;
            self.nr_events += 1;
            self.handle(ev);
            if let Some(cpu) = self.sched.call_pending.take() {
                self.sched_call(cpu, policy)?;
            }
        }
        self.now = self.end;
        let mut metrics = Metrics::from(self.snapshot());
        policy.metrics(&mut metrics.policy);
        policy.detached(&ExitReport {
            kind: ExitKind::Unregistered,
            exit_code: 0,
            reason: "the simulation ended".into(),
            message: String::new(),
            dump: String::new(),
            stats: self.snapshot(),
        });
        let name = std::any::type_name::<P>();
        let name = name.rsplit("::").next().unwrap_or(name).to_string();
        Ok(self.finish(name, metrics))
    }

    fn sched_call<P: Policy>(&mut self, cpu: u32, policy: &mut P) -> Result<(), SimError> {
        self.sched.want_sleep = false;
        self.sched.calls += 1;
        let start = self.now;
        let mut handle = SimScheduler {
            clock: start + self.costs[0],
            sim: self,
        };
        policy.schedule(&mut handle)?;
        let end = handle.clock;
        if end - self.sched.last_tick >= TICK_NS {
            self.sched.last_tick = end;
            policy.tick(&SimScheduler {
                clock: end,
                sim: self,
            });
        }
        self.cpus[cpu as usize].deadline = end;
        Ok(())
    }

    fn handle(&mut self, ev: Ev) {
        if self.trace {
            let cpus: Vec<_> = self
                .cpus
                .iter()
                .map(|c| (c.curr, c.local.len(), c.idle_bit))
                .collect();
            eprintln!(
                "{:>12} {ev:?} cpus {cpus:?} ring {} user {} fifo {} vtime {}",
                self.now,
                self.ring.len(),
                self.user_samples.len(),
                self.fifo.len(),
                self.vtime_q.len()
            );
        }
        match ev {
            Ev::CpuTimer { cpu } => self.on_timer(cpu),
            Ev::Resched { cpu } => self.on_resched(cpu),
            Ev::TaskWake { tid } => {
                if self.tasks[tid as usize].state == St::Sleeping {
                    self.wake_task(tid as usize, false);
                }
            }
            Ev::Fork { tid } => self.wake_task(tid as usize, true),
            Ev::SchedWake { gen } => {
                if self.tasks[SCHED].state == St::Sleeping && self.sched.sleep_gen == gen {
                    if self.sched.stopped {
                        self.sched.wake_on_cont = true;
                    } else {
                        self.sched_make_runnable();
                    }
                }
            }
            Ev::SchedTimeout => {
                self.sched.timeout_armed = false;
                if self.tasks[SCHED].state == St::Sleeping {
                    if self.now >= self.sched.timeout_at {
                        if self.sched.stopped {
                            self.sched.wake_on_cont = true;
                        } else {
                            self.sched_make_runnable();
                        }
                    } else {
                        self.arm_sched_timeout();
                    }
                }
            }
            Ev::StallTick => self.stall_tick(),
            Ev::StopStart => self.sched.stopped = true,
            Ev::StopEnd => {
                self.sched.stopped = false;
                let st = self.tasks[SCHED].state;
                if st == St::Stopped || (st == St::Sleeping && self.sched.wake_on_cont) {
                    self.sched.wake_on_cont = false;
                    self.sched_make_runnable();
                }
            }
        }
    }

    // ---------------------------------------------------------------- CPUs

    fn request_resched(&mut self, cpu: u32) {
        let c = &mut self.cpus[cpu as usize];
        if !c.resched {
            c.resched = true;
            self.immediate.push_back(cpu);
        }
    }

    /// `scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE)`, skipping the CPU the BPF code runs on.
    fn kick_if_idle(&mut self, cpu: u32, ctx: Option<u32>) {
        if Some(cpu) != ctx && cpu < self.nr_cpus && self.cpus[cpu as usize].curr.is_none() {
            self.request_resched(cpu);
        }
    }

    /// `scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT)`.
    fn kick_preempt(&mut self, cpu: u32) {
        self.account(cpu);
        let curr = self.cpus[cpu as usize].curr;
        if curr.is_some_and(|t| t != SCHED && !self.tasks[t].kind.rt) {
            self.cpus[cpu as usize].slice_left = 0;
        }
        self.request_resched(cpu);
    }

    /// Charge the running task for the time since its segment started.
    fn account(&mut self, cpu: u32) {
        let now = self.now;
        let c = &mut self.cpus[cpu as usize];
        let Some(tid) = c.curr else { return };
        let ran = now - c.seg_start;
        c.seg_start = now;
        c.busy_ns += ran;
        c.slice_left = c.slice_left.saturating_sub(ran);
        if tid == SCHED {
            self.sched.cpu_ns += ran;
        } else {
            let t = &mut self.tasks[tid];
            t.remaining = t.remaining.saturating_sub(ran);
            t.sum_exec += ran;
        }
    }

    fn set_timer(&mut self, cpu: u32) {
        let c = &mut self.cpus[cpu as usize];
        let tid = c.curr.expect("a running task");
        c.deadline = c.seg_start + self.tasks[tid].remaining.min(c.slice_left);
    }

    /// Insert into `cpu`'s local DSQ (`SCX_DSQ_LOCAL_ON | cpu`).
    fn insert_local(&mut self, cpu: u32, tid: usize, slice: u64, enq_flags: u64) {
        let c = &mut self.cpus[cpu as usize];
        if enq_flags & (SCX_ENQ_HEAD | SCX_ENQ_PREEMPT) != 0 {
            c.local.push_front((tid, slice));
        } else {
            c.local.push_back((tid, slice));
        }
        let t = &mut self.tasks[tid];
        t.state = St::Local;
        t.cpu = cpu;
        t.slice = slice;
        match self.cpus[cpu as usize].curr {
            None => self.request_resched(cpu),
            Some(curr) if enq_flags & SCX_ENQ_PREEMPT != 0 && curr != tid => self.kick_preempt(cpu),
            _ => {}
        }
    }

    /// A task starts running on `cpu` (`ops.running` for a sched_ext task; a higher class's
    /// task runs without a slice, unseen by BPF).
    fn start_running(&mut self, cpu: u32, tid: usize, slice: u64) {
        let now = self.now;
        let (pid, kind) = (self.tasks[tid].pid as u32, self.tasks[tid].kind);
        let c = &mut self.cpus[cpu as usize];
        c.curr = Some(tid);
        c.seg_start = now;
        c.idle_bit = false;
        if kind.rt {
            c.slice_left = u64::MAX;
        } else {
            c.slice_left = slice;
            c.released = false;
            c.cpu_to_pid = pid;
            c.run_start = if kind.privileged { 0 } else { now };
            if kind.privileged {
                c.displaced = 0;
            }
            self.c.nr_running += 1;
        }
        let t = &mut self.tasks[tid];
        t.state = St::Running;
        t.cpu = cpu;
        t.cpus_used |= 1u128 << cpu;
        if !kind.rt {
            t.last_cpu = cpu as i32;
            t.shared_ts = 0;
            t.start_ts = now;
            t.run_slice = slice;
        }
        let waited = now - t.runnable_since;
        if self.trace {
            eprintln!("{now:>12}   run {tid} on {cpu} after {waited}");
        }
        t.waits.push(waited);
        if t.woken {
            t.woken = false;
            t.wake_waits.push(waited);
        }
        t.max_starve = t.max_starve.max(waited);
        if tid == SCHED {
            self.sched.call_pending = Some(cpu);
        }
    }

    /// `ops.stopping`, and the CPU is left without a current task.
    fn stop_running(&mut self, cpu: u32, runnable: bool) -> usize {
        self.account(cpu);
        let now = self.now;
        let c = &mut self.cpus[cpu as usize];
        let tid = c.curr.take().expect("a running task");
        c.deadline = u64::MAX;
        let t = &mut self.tasks[tid];
        if !t.kind.rt {
            c.cpu_to_pid = 0;
            c.run_start = 0;
            self.c.nr_running -= 1;
            t.stop_ts = now;
            t.exec_runtime += now - t.start_ts;
        }
        if runnable {
            t.runnable_since = now;
            t.woken = false;
        }
        tid
    }

    /// Pick and start the next task on an idle `cpu`, running tasks' zero-time steps; goes
    /// idle when there is nothing.
    fn run_cpu(&mut self, cpu: u32) {
        loop {
            if let Some(tid) = self.cpus[cpu as usize].rt_queue.pop_front() {
                self.start_running(cpu, tid, 0);
                if self.step(cpu) {
                    return;
                }
                continue;
            }
            if self.cpus[cpu as usize].local.is_empty() {
                self.ops_dispatch(cpu);
            }
            let Some((tid, slice)) = self.cpus[cpu as usize].local.pop_front() else {
                self.cpus[cpu as usize].idle_bit = true;
                return;
            };
            self.start_running(cpu, tid, slice);
            if tid == SCHED || self.step(cpu) {
                return;
            }
        }
    }

    /// The running task on `cpu` goes on with its program; true if it still runs.
    fn step(&mut self, cpu: u32) -> bool {
        let tid = self.cpus[cpu as usize].curr.expect("running");
        match self.advance(tid) {
            Outcome::Run => {
                if self.cpus[cpu as usize].slice_left == 0 {
                    self.on_resched(cpu);
                    return self.cpus[cpu as usize].curr.is_some();
                }
                self.set_timer(cpu);
                true
            }
            Outcome::Block(st, wake_at) => {
                self.stop_running(cpu, false);
                self.tasks[tid].last_burst = self.tasks[tid].exec_runtime;
                self.tasks[tid].state = st;
                if let Some(at) = wake_at {
                    self.push(at, Ev::TaskWake { tid: tid as u32 });
                }
                if st == St::Exited {
                    self.exit_task(tid);
                }
                false
            }
            Outcome::Migrate => {
                self.stop_running(cpu, true);
                let allowed = self.tasks[tid].affinity;
                self.tasks[tid].cpu = allowed.trailing_zeros();
                if self.tasks[tid].kind.rt {
                    self.rt_wake(tid);
                } else {
                    self.enqueue(tid, 0, Some(cpu));
                }
                false
            }
        }
    }

    fn on_timer(&mut self, cpu: u32) {
        let Some(tid) = self.cpus[cpu as usize].curr else {
            return;
        };
        self.account(cpu);
        if tid == SCHED {
            self.sched_call_end(cpu);
            return;
        }
        if self.tasks[tid].remaining == 0 {
            if self.tasks[tid].in_run {
                self.tasks[tid].bursts += 1;
            }
            if !self.step(cpu) {
                self.run_cpu(cpu);
            }
        } else {
            self.on_resched(cpu);
        }
    }

    /// The kernel's scheduling path on `cpu` (`balance` + `pick` + `put_prev`).
    fn on_resched(&mut self, cpu: u32) {
        let Some(prev) = self.cpus[cpu as usize].curr else {
            self.run_cpu(cpu);
            return;
        };
        if prev == SCHED {
            return; // it picks up the CPU's queue when its call ends
        }
        self.account(cpu);
        let allowed = self.allowed(prev, cpu);
        if self.cpus[cpu as usize].slice_left > 0 && allowed {
            return;
        }
        if self.cpus[cpu as usize].local.is_empty() {
            self.ops_dispatch(cpu);
        }
        if self.cpus[cpu as usize].local.is_empty() && allowed {
            // Nothing else to run: the kernel keeps `prev`, with a fresh default slice.
            self.cpus[cpu as usize].slice_left = SCX_SLICE_DFL_NS;
            self.set_timer(cpu);
            return;
        }
        let next = self.cpus[cpu as usize].local.pop_front();
        self.stop_running(cpu, true);
        self.enqueue(prev, 0, Some(cpu));
        match next {
            Some((tid, slice)) => {
                self.start_running(cpu, tid, slice);
                if tid != SCHED && !self.step(cpu) {
                    self.run_cpu(cpu);
                }
            }
            None => self.run_cpu(cpu),
        }
    }

    /// `scx_bpf_select_cpu_dfl`: `prev` if idle, else an idle CPU (`prev`'s cache domain
    /// first); the idle CPU found is claimed. Else `prev` (or a CPU the task may use).
    fn select_cpu_dfl(&mut self, tid: usize) -> (u32, bool) {
        let prev = self.tasks[tid].cpu;
        let mask = self.tasks[tid].affinity;
        let ok = |c: u32| mask & (1u128 << c) != 0;
        let llc = prev / self.llc_size * self.llc_size;
        let found = if ok(prev) && self.cpus[prev as usize].idle_bit {
            Some(prev)
        } else {
            (llc..(llc + self.llc_size).min(self.nr_cpus))
                .chain(0..self.nr_cpus)
                .find(|&c| ok(c) && self.cpus[c as usize].idle_bit)
        };
        match found {
            Some(c) => {
                self.cpus[c as usize].idle_bit = false;
                (c, true)
            }
            None if ok(prev) => (prev, false),
            None => (mask.trailing_zeros(), false),
        }
    }

    // ---------------------------------------------------------------- tasks

    fn wake_task(&mut self, tid: usize, fork: bool) {
        let now = self.now;
        {
            let t = &mut self.tasks[tid];
            t.runnable_since = now;
            t.woken = true;
            t.exec_runtime = 0; // ops.runnable
            if !fork {
                t.wakeups += 1;
            }
        }
        if self.tasks[tid].kind.rt {
            self.rt_wake(tid);
            return;
        }
        let (cpu, is_idle) = self.select_cpu_dfl(tid);
        self.tasks[tid].cpu = cpu;
        if is_idle && self.direct_idle && !self.tasks[tid].kind.privileged {
            self.tasks[tid].idle_cpu = -1;
            self.insert_local(cpu, tid, self.slice_dfl, 0);
            self.c.nr_direct_dispatches += 1;
            return;
        }
        self.tasks[tid].idle_cpu = if is_idle { cpu as i32 } else { -1 };
        self.enqueue(tid, if fork { 0 } else { SCX_ENQ_WAKEUP }, None);
        // The task joined `cpu`'s run queue: an idle CPU is woken (`wakeup_preempt`), goes
        // through the scheduling path and so through `ops.dispatch`.
        if self.cpus[cpu as usize].curr.is_none() {
            self.request_resched(cpu);
        }
    }

    /// `ops.enqueue` for a workload task.
    // The record names every field it fills; `..default()` keeps it compiling when the
    // framework adds one.
    #[allow(clippy::needless_update)]
    fn enqueue(&mut self, tid: usize, enq_flags: u64, ctx: Option<u32>) {
        let now = self.now;
        let cpu = self.tasks[tid].cpu;
        if enq_flags & SCX_ENQ_REENQ != 0 {
            self.c.nr_reenqueued += 1;
        }
        let t = &self.tasks[tid];
        if t.kind.privileged {
            // `is_usersched()`: its CPU at once, ahead of others when user space has work;
            // put back by a higher class: first in line for any CPU.
            if enq_flags & SCX_ENQ_REENQ != 0 {
                self.insert_fifo(tid, true);
                self.make_room(tid, ctx, false);
                return;
            }
            let mut flags = enq_flags;
            if self.sched_has_work() {
                flags |= SCX_ENQ_PREEMPT;
                let c = &mut self.cpus[cpu as usize];
                c.displaced = c.cpu_to_pid as i32;
            }
            self.insert_local(cpu, tid, self.slice_dfl, flags);
            return;
        }
        if !self.full_user && t.kind.kthread && t.affinity.count_ones() == 1 {
            self.insert_local(cpu, tid, self.slice_dfl, enq_flags);
            self.c.nr_kernel_dispatches += 1;
            return;
        }
        if !self.full_user && t.kind.mm_kthread {
            let head = self.fifo_head();
            self.insert_fifo(tid, head);
            self.kick_if_idle(cpu, ctx);
            self.c.nr_mm_kthread_dispatches += 1;
            return;
        }
        // Displaced by the scheduler's own thread, not by the policy: it resumes on its CPU
        // after the scheduler, with what is left of its slice (`resume_slice`), as after a
        // higher sched class ran. Bounded: that slice only shrinks, and once it is (nearly)
        // used up the task goes to user space like any other. It waits in its CPU's resume
        // queue, not in the local one: an empty local queue makes the CPU run `ops.dispatch`
        // when the scheduler sleeps, so the decisions just written are carried out at once,
        // and the tasks they put in the FIFO queue or the local one go first unless it is
        // overdue (see `rl_dispatch`).
        if enq_flags & SCX_ENQ_WAKEUP == 0
            && cpu < self.nr_cpus
            && self.cpus[cpu as usize].displaced == t.pid
        {
            let ran = t.stop_ts.wrapping_sub(t.start_ts);
            let resume = if t.stop_ts < t.start_ts || ran + RESUME_MIN_SLICE_NS >= t.run_slice {
                0
            } else {
                t.run_slice - ran
            };
            if resume > 0 {
                // Cut short (less than PREEMPT_MIN_RUN_NS into its run, which no preemption
                // by a policy does, e.g. displaced again as soon as it resumed): it goes
                // first, as if it had waited (`resume_ts` 0), at the head of the resume queue
                // (`SCX_ENQ_HEAD`), ahead of a task displaced earlier that still waits there.
                // Otherwise it joins the tail; the clock starts only if none waits there.
                let t = &mut self.tasks[tid];
                t.state = St::Resume;
                t.slice = resume;
                let c = &mut self.cpus[cpu as usize];
                c.displaced = 0;
                if ran < PREEMPT_MIN_RUN_NS {
                    c.resume_ts = 0;
                    c.resume.push_front(tid);
                } else {
                    if c.resume.is_empty() {
                        c.resume_ts = now;
                    }
                    c.resume.push_back(tid);
                }
                self.c.nr_displaced_dispatches += 1;
                return;
            }
        }
        if self.ring.len() >= QUEUED_RING_RECORDS {
            self.insert_fifo(tid, false);
            self.kick_if_idle(cpu, ctx);
            self.c.nr_sched_congested += 1;
            return;
        }
        let t = &mut self.tasks[tid];
        let mut rl_flags = 0;
        if t.idle_cpu >= 0 && t.idle_cpu == cpu as i32 {
            rl_flags |= RL_QF_IDLE_CPU;
        }
        if t.kind.kthread {
            rl_flags |= RL_QF_KTHREAD;
        }
        if enq_flags & SCX_ENQ_WAKEUP != 0 {
            rl_flags |= RL_QF_WAKEUP;
        }
        if enq_flags & SCX_ENQ_REENQ != 0 {
            rl_flags |= RL_QF_REENQ;
        }
        if self.trace {
            eprintln!("{now:>12}   record {tid} cpu {cpu} flags {enq_flags}");
        }
        let mut comm = [0u8; 16];
        let len = t.name.len().min(15);
        comm[..len].copy_from_slice(&t.name.as_bytes()[..len]);
        self.ring.push_back(QueuedTask {
            pid: t.pid,
            cpu: cpu as i32,
            tgid: t.tgid,
            nr_cpus_allowed: t.affinity.count_ones() as i32,
            cpumask_cnt: t.cpumask_cnt,
            flags: enq_flags,
            sum_exec_runtime: t.sum_exec,
            exec_runtime: t.exec_runtime,
            last_burst_ns: t.last_burst,
            prev_cpu: t.last_cpu,
            prev_llc: if t.last_cpu < 0 {
                -1
            } else {
                t.last_cpu / self.llc_size as i32
            },
            weight: t.weight,
            start_ts: t.start_ts,
            stop_ts: t.stop_ts,
            enq_ts: now,
            vtime: t.dsq_vtime,
            rl_flags,
            comm,
            ..QueuedTask::default()
        });
        t.seq += 1;
        if !t.queued {
            t.queued = true;
            self.c.nr_outstanding += 1;
        }
        t.reported = true;
        t.state = St::Queued;
        let e = (t.pid, t.seq);
        if self.pending.len() >= PENDING_MAX {
            self.pending.pop_front();
        }
        self.pending.push_back(e);
        self.c.nr_queued_events += 1;
        self.sched_notify();
    }

    /// `ops.exit_task`: the exit notice (`cpu < 0`) for a task user space has seen.
    fn exit_task(&mut self, tid: usize) {
        let t = &self.tasks[tid];
        if !t.reported || self.ring.len() >= QUEUED_RING_RECORDS {
            return;
        }
        self.ring.push_back(QueuedTask {
            pid: t.pid,
            cpu: -1,
            tgid: t.tgid,
            ..QueuedTask::default()
        });
        self.c.nr_exit_events += 1;
        self.sched_notify();
    }

    /// The running task `tid` goes on with its program from where it is, at `now`.
    fn advance(&mut self, tid: usize) -> Outcome {
        let now = self.now;
        let spec = self.tasks[tid].spec;
        for _ in 0..10_000 {
            if self.tasks[tid].remaining > 0 {
                return Outcome::Run;
            }
            let (len, repeat) = (self.programs[spec].0.len(), self.programs[spec].1);
            if self.tasks[tid].pc >= len {
                self.tasks[tid].loops += 1;
                if !repeat || len == 0 {
                    return Outcome::Block(St::Exited, None);
                }
                self.tasks[tid].pc = 0;
            }
            let op = self.programs[spec].0[self.tasks[tid].pc];
            self.tasks[tid].pc += 1;
            match op {
                COp::Run(ns) => {
                    self.tasks[tid].remaining = ns;
                    self.tasks[tid].in_run = true;
                }
                COp::RunRand(a, b) => {
                    self.tasks[tid].remaining = self.rng.range(a, b);
                    self.tasks[tid].in_run = true;
                }
                COp::Sleep(ns) if ns > 0 => return Outcome::Block(St::Sleeping, Some(now + ns)),
                COp::Sleep(_) => {}
                COp::SleepRand(a, b) => {
                    let ns = self.rng.range(a, b);
                    if ns > 0 {
                        return Outcome::Block(St::Sleeping, Some(now + ns));
                    }
                }
                COp::Period(p) => {
                    let born = self.tasks[tid].born;
                    let next = born + ((now - born) / p + 1) * p;
                    return Outcome::Block(St::Sleeping, Some(next));
                }
                COp::Wait => {
                    let t = &mut self.tasks[tid];
                    if t.tokens == 0 {
                        return Outcome::Block(St::Blocked, None);
                    }
                    t.tokens -= 1;
                }
                COp::Wake(s, idx) => {
                    self.tasks[tid].remaining = self.syscall_ns;
                    self.tasks[tid].in_run = false;
                    let list = &self.instances[s];
                    if list.is_empty() {
                        continue;
                    }
                    let target = list[idx.unwrap_or(self.tasks[tid].index) % list.len()];
                    let t = &mut self.tasks[target];
                    match t.state {
                        St::Exited => {}
                        St::Blocked => self.wake_task(target, false),
                        _ => t.tokens += 1,
                    }
                }
                COp::Spawn(s) => {
                    self.tasks[tid].remaining = self.syscall_ns;
                    self.tasks[tid].in_run = false;
                    let i = self.instances[s].len();
                    let name = format!("{}#{i}", self.spec_names[s]);
                    let child = self.push_task(s, i, name, now);
                    self.tasks[child].cpu = self.tasks[tid].cpu;
                    self.wake_task(child, true);
                }
                COp::Nice(n) => {
                    self.tasks[tid].remaining = self.syscall_ns;
                    self.tasks[tid].in_run = false;
                    self.tasks[tid].weight = nice_to_weight(n);
                }
                COp::Affinity(mask) => {
                    let t = &mut self.tasks[tid];
                    t.remaining = self.syscall_ns;
                    t.in_run = false;
                    t.affinity = mask;
                    t.cpumask_cnt += 1; // ops.set_cpumask
                    if mask & (1u128 << t.cpu) == 0 {
                        return Outcome::Migrate;
                    }
                }
                COp::Exit => return Outcome::Block(St::Exited, None),
            }
        }
        // A program that only does zero-time steps: let it use a microsecond.
        self.tasks[tid].remaining = 1000;
        self.tasks[tid].in_run = false;
        Outcome::Run
    }

    // ---------------------------------------------------------------- the scheduler process

    /// A record was published: wake the scheduler if it sleeps in its idle wait.
    fn sched_notify(&mut self) {
        if self.sched.sleeping && !self.sched.wake_pending {
            self.sched.wake_pending = true;
            self.sched.notified_at = self.now;
            let (at, gen) = (self.now + self.costs[3], self.sched.sleep_gen);
            self.push(at, Ev::SchedWake { gen });
        }
    }

    fn arm_sched_timeout(&mut self) {
        self.sched.timeout_armed = true;
        let at = self.sched.timeout_at;
        self.push(at, Ev::SchedTimeout);
    }

    fn sched_has_work(&self) -> bool {
        self.c.nr_queued > 0 || self.c.nr_scheduled > 0 || !self.ring.is_empty()
    }

    /// The scheduler process wakes: `select_cpu`, then `ops.enqueue`'s rule for it: its CPU's
    /// local queue, preempting whatever runs there when it has work.
    fn sched_make_runnable(&mut self) {
        // Its wait counts from the record that woke it (wake-up latency included).
        self.tasks[SCHED].runnable_since = if self.sched.wake_pending {
            self.sched.notified_at
        } else {
            self.now
        };
        self.sched.sleeping = false;
        self.sched.wake_pending = false;
        self.sched.wakeups += 1;
        let (cpu, _) = self.select_cpu_dfl(SCHED);
        self.tasks[SCHED].cpu = cpu;
        let mut flags = 0;
        if self.sched_has_work() {
            flags |= SCX_ENQ_PREEMPT;
            let c = &mut self.cpus[cpu as usize];
            c.displaced = c.cpu_to_pid as i32;
        }
        self.insert_local(cpu, SCHED, self.slice_dfl, flags);
    }

    fn sched_call_end(&mut self, cpu: u32) {
        if self.sched.stopped {
            self.stop_running(cpu, false);
            self.tasks[SCHED].state = St::Stopped;
            self.run_cpu(cpu);
        } else if self.sched.want_sleep && !self.sched_has_work() {
            self.stop_running(cpu, false);
            self.tasks[SCHED].state = St::Sleeping;
            self.sched.sleeping = true;
            self.sched.wake_pending = false;
            self.sched.sleep_gen += 1;
            self.sched.timeout_at = self.now + IDLE_WAIT_NS;
            if !self.sched.timeout_armed {
                self.arm_sched_timeout();
            }
            self.run_cpu(cpu);
        } else if !self.cpus[cpu as usize].rt_queue.is_empty() {
            // A higher class's task waited for the call to end: it takes the CPU now.
            let tid = self.cpus[cpu as usize]
                .rt_queue
                .pop_front()
                .expect("not empty");
            self.rt_take(cpu, tid);
        } else {
            self.sched.call_pending = Some(cpu);
        }
    }

    // ---------------------------------------------------------------- higher sched classes

    /// A higher-class task wakes: its previous CPU unless a higher-class task holds it, else
    /// another CPU it may use without one (an idle one first), else it queues on its
    /// previous CPU.
    fn rt_wake(&mut self, tid: usize) {
        let prev = self.tasks[tid].cpu;
        let free = |sim: &Self, c: u32| {
            sim.allowed(tid, c)
                && sim.cpus[c as usize].rt_queue.is_empty()
                && !sim.cpus[c as usize]
                    .curr
                    .is_some_and(|t| sim.tasks[t].kind.rt)
        };
        let cpu = if free(self, prev) {
            Some(prev)
        } else {
            (0..self.nr_cpus)
                .filter(|&c| free(self, c))
                .min_by_key(|&c| self.cpus[c as usize].curr.is_some())
        };
        match cpu {
            Some(cpu) if self.cpus[cpu as usize].curr != Some(SCHED) => self.rt_take(cpu, tid),
            other => {
                // Behind another higher-class task, or behind the scheduler's call (which
                // the simulator does not cut short).
                let cpu = other.unwrap_or(if self.allowed(tid, prev) {
                    prev
                } else {
                    self.tasks[tid].affinity.trailing_zeros()
                });
                self.tasks[tid].cpu = cpu;
                self.tasks[tid].state = St::Local;
                self.cpus[cpu as usize].rt_queue.push_back(tid);
            }
        }
    }

    /// A higher-class task takes `cpu`: the sched_ext task running there is put back (at
    /// the head of the local queue with what is left of its slice, or through
    /// `ops.enqueue` if none is left), then `ops.cpu_release` (`scx_bpf_reenqueue_local`):
    /// every task waiting in the local queue goes through `ops.enqueue` again with
    /// `SCX_ENQ_REENQ`.
    fn rt_take(&mut self, cpu: u32, tid: usize) {
        if let Some(prev) = self.cpus[cpu as usize].curr {
            self.account(cpu);
            let left = self.cpus[cpu as usize].slice_left;
            self.stop_running(cpu, true);
            if left > 0 {
                self.cpus[cpu as usize].local.push_front((prev, left));
                self.tasks[prev].state = St::Local;
            } else {
                self.enqueue(prev, 0, Some(cpu));
            }
            if !self.cpus[cpu as usize].released {
                self.cpus[cpu as usize].released = true;
                let waiting = std::mem::take(&mut self.cpus[cpu as usize].local);
                for (t, _) in waiting {
                    self.enqueue(t, SCX_ENQ_REENQ, Some(cpu));
                }
            }
        }
        self.tasks[tid].cpu = cpu;
        self.start_running(cpu, tid, 0);
        if !self.step(cpu) {
            self.run_cpu(cpu);
        }
    }

    // ---------------------------------------------------------------- BPF: ops.dispatch

    /// The kernel's `balance` on `cpu`: `ops.dispatch` (`rl_dispatch`), and again as long as
    /// the call inserted tasks and left the local queue empty, at most `SCX_DSP_MAX_LOOPS`
    /// times (then the kernel kicks the CPU to try again). Tasks inserted during
    /// `ops.dispatch` wait in the kernel's dispatch buffer until it returns or calls
    /// `scx_bpf_dsq_move_to_local` (which flushes the buffer first); the simulator inserts
    /// them at once, and `rl_dispatch` makes up for it where BPF counts a queue
    /// (`scx_bpf_dsq_nr_queued`, which does not see them).
    fn ops_dispatch(&mut self, cpu: u32) {
        for _ in 0..SCX_DSP_MAX_LOOPS {
            if self.rl_dispatch(cpu) == 0 || !self.cpus[cpu as usize].local.is_empty() {
                return;
            }
        }
        self.request_resched(cpu);
    }

    /// `rl_dispatch` on `cpu`: drain user space's decisions, run the stall guard's pending
    /// tasks, then move one task to the local queue: the task the scheduler displaced here,
    /// or one from the shared queues, or one displaced on a CPU a higher class holds.
    /// Returns how many tasks the call inserted (decisions carried out, tasks the stall
    /// guard ran).
    fn rl_dispatch(&mut self, cpu: u32) -> usize {
        let now = self.now;
        let mut slots = DISPATCH_MAX_BATCH;
        let (mut records, mut dispatched) = (0, 0);
        let mut drained = false;
        while slots >= BATCH_MAX && self.user_samples.front().is_some_and(|s| s.0 <= now) {
            let (_, n) = self.user_samples.pop_front().expect("peeked");
            drained = true;
            self.c.fallback = false;
            for _ in 0..n {
                let Some(d) = self.user_recs.pop_front() else {
                    break;
                };
                records += 1;
                if self.dispatch_one(&d, cpu) {
                    dispatched += 1;
                    slots -= 1;
                }
            }
        }
        if drained {
            self.c.nr_dispatch_records += records;
            self.c.nr_user_dispatches += dispatched;
        }
        let before = slots;
        self.run_pending(cpu, &mut slots);
        // The stall guard's tasks went to the tail of the FIFO queue; BPF cannot see them
        // there before this call returns.
        let fallback = before - slots;
        let inserted = DISPATCH_MAX_BATCH - slots;

        // The task the scheduler displaced here resumes behind the FIFO queue, and first, at
        // the head of the local queue, once it has waited RESUME_MAX_WAIT_NS (at once if it
        // was cut short: `resume_ts` 0). `scx_bpf_dsq_move_to_local` flushes the kernel's
        // dispatch buffer before it moves the task, so with SCX_ENQ_HEAD it goes ahead of the
        // decisions this call carried out into this CPU's local queue too. The decisions
        // carried out just now are not counted in their queues until the kernel flushes them
        // (`scx_bpf_dsq_nr_queued` does not see them, hence the stall guard's tasks are not
        // counted in the FIFO queue): until it is overdue, the displaced task waits for them.
        let c = &self.cpus[cpu as usize];
        let resume = !c.resume.is_empty();
        // (BPF's clock counts from boot: there `resume_ts` 0 is always long past.)
        let overdue = c.resume_ts == 0 || now.saturating_sub(c.resume_ts) > RESUME_MAX_WAIT_NS;
        if resume && overdue && self.resume_to_local(cpu, cpu, true) {
            return inserted;
        }
        if resume
            && dispatched == 0
            && self.fifo.len() <= fallback
            && self.resume_to_local(cpu, cpu, false)
        {
            return inserted;
        }

        // The FIFO queue first (the tasks a policy put first, and those BPF runs itself),
        // then the vtime-ordered queue; but a vtime queue that has not been served for
        // VTIME_MAX_WAIT_NS goes first once, so it can never starve.
        if self.vtime_q.is_empty() {
            self.vtime_served_ts = now;
        } else if now - self.vtime_served_ts > VTIME_MAX_WAIT_NS && self.move_to_local(cpu, true) {
            self.vtime_served_ts = now;
            return inserted;
        }
        if self.move_to_local(cpu, false) {
            return inserted;
        }
        self.fifo_empty_ts = now;
        // The displaced task goes before the vtime queue (if it did not just now, it waits
        // for the call after the decisions land).
        if resume {
            if dispatched == 0 {
                self.resume_to_local(cpu, cpu, false);
            }
            return inserted;
        }
        if self.move_to_local(cpu, true) {
            self.vtime_served_ts = now;
            return inserted;
        }
        self.take_stranded_resume(cpu);
        inserted
    }

    /// `take_stranded_resume`: nothing else to run on `cpu`: take a displaced task whose CPU
    /// a higher class holds, so it does not wait for that CPU to come back.
    fn take_stranded_resume(&mut self, cpu: u32) {
        for other in 0..self.nr_cpus {
            if other != cpu
                && self.cpus[other as usize].released
                && self.resume_to_local(other, cpu, false)
            {
                return;
            }
        }
    }

    /// `scx_bpf_dsq_move_to_local(RESUME_DSQ + from)` on `cpu`: the first task of `from`'s
    /// resume queue that may run on `cpu`, with what is left of its slice, to the tail of
    /// the local queue, or to its head with `head` (`SCX_ENQ_HEAD`).
    fn resume_to_local(&mut self, from: u32, cpu: u32, head: bool) -> bool {
        let Some(c) = self.cpus.get(from as usize) else {
            return false;
        };
        let Some(pos) = c.resume.iter().position(|&t| self.allowed(t, cpu)) else {
            return false;
        };
        let Some(tid) = self.cpus[from as usize].resume.remove(pos) else {
            return false;
        };
        self.put_local(cpu, tid, head);
        true
    }

    /// Put `tid` at the tail of `cpu`'s local queue with its slice, or at its head with
    /// `head` (`SCX_ENQ_HEAD`).
    fn put_local(&mut self, cpu: u32, tid: usize, head: bool) {
        let slice = self.tasks[tid].slice;
        let local = &mut self.cpus[cpu as usize].local;
        if head {
            local.push_front((tid, slice));
        } else {
            local.push_back((tid, slice));
        }
        let t = &mut self.tasks[tid];
        t.state = St::Local;
        t.cpu = cpu;
    }

    /// `scx_bpf_dsq_move_to_local`: the first task of a shared queue that may run on `cpu`.
    fn move_to_local(&mut self, cpu: u32, vtime: bool) -> bool {
        let pos = if vtime {
            self.vtime_q.iter().position(|&(_, t)| self.allowed(t, cpu))
        } else {
            self.fifo.iter().position(|&t| self.allowed(t, cpu))
        };
        let Some(pos) = pos else { return false };
        let tid = if vtime {
            self.vtime_q.remove(pos).expect("found").1
        } else {
            self.fifo.remove(pos).expect("found")
        };
        self.put_local(cpu, tid, false);
        true
    }

    /// Insert into the shared FIFO queue (`SHARED_DSQ`) with the default slice.
    fn insert_fifo(&mut self, tid: usize, head: bool) {
        let t = &mut self.tasks[tid];
        t.state = St::Shared;
        t.slice = self.slice_dfl;
        if head {
            self.fifo.push_front(tid);
        } else {
            self.fifo.push_back(tid);
        }
    }

    fn resolve(&mut self, tid: usize) -> bool {
        let t = &mut self.tasks[tid];
        if !t.queued {
            return false;
        }
        t.queued = false;
        self.c.nr_outstanding -= 1;
        true
    }

    /// `dispatch_one`: carry out one decision, or count why not. True if carried out.
    fn dispatch_one(&mut self, d: &Dispatch, ctx: u32) -> bool {
        if self.trace {
            eprintln!("{:>12}   drain on {ctx}: {d:?}", self.now);
        }
        let Some(tid) = self.tid_of(d.pid) else {
            self.c.nr_cancel_dispatches += 1;
            return false;
        };
        if !self.resolve(tid) {
            self.c.nr_cancel_dispatches += 1;
            return false;
        }
        let slice = match d.slice_ns {
            0 => self.slice_dfl,
            s => s.min(SLICE_MAX_NS),
        };
        let hint = self.tasks[tid].idle_cpu;
        self.tasks[tid].idle_cpu = -1;
        let mut cpu = d.cpu;
        if cpu >= 0
            && (d.cpumask_cnt != self.tasks[tid].cpumask_cnt || !self.allowed(tid, cpu as u32))
        {
            self.c.nr_bounce_dispatches += 1;
            cpu = RL_CPU_ANY;
        }
        if cpu >= 0 {
            let c = &self.cpus[cpu as usize];
            if c.released {
                // A higher class holds it (between cpu_release and cpu_acquire).
                self.c.nr_reenqueued += 1;
                cpu = RL_CPU_ANY;
            }
        }
        let cpu = if cpu >= 0 {
            let mut flags = 0;
            if d.preempt {
                flags |= SCX_ENQ_PREEMPT;
            }
            if d.head {
                flags |= SCX_ENQ_HEAD;
            }
            self.insert_local(cpu as u32, tid, slice, flags);
            self.kick_if_idle(cpu as u32, Some(ctx));
            cpu as u32
        } else {
            {
                let t = &mut self.tasks[tid];
                t.state = St::Shared;
                t.slice = slice;
                // (BPF's clock is never 0.)
                t.shared_ts = self.now.max(1);
            }
            if let Target::Vtime(_) = d.target() {
                self.c.nr_vtime_dispatches += 1;
                self.tasks[tid].dsq_vtime = d.vtime;
                // Ordered with wrap-around, as the kernel compares vtimes.
                let pos = self
                    .vtime_q
                    .partition_point(|&(v, _)| (v.wrapping_sub(d.vtime) as i64) <= 0);
                self.vtime_q.insert(pos, (d.vtime, tid));
            } else if d.head && self.fifo_head() {
                self.fifo.push_front(tid);
            } else {
                self.fifo.push_back(tid);
            }
            let cpu = self.tasks[tid].cpu;
            if d.preempt {
                self.make_room(tid, Some(ctx), true);
            } else {
                self.kick_if_idle(cpu, Some(ctx));
            }
            cpu
        };
        if hint >= 0 && hint as u32 != cpu {
            self.kick_if_idle(hint as u32, Some(ctx));
        }
        true
    }

    /// `fifo_head_flag`: head insertion, unless the FIFO queue's tail could starve.
    fn fifo_head(&mut self) -> bool {
        if self.fifo.is_empty() {
            self.fifo_empty_ts = self.now;
            return true;
        }
        self.now - self.fifo_empty_ts < FIFO_HEAD_MAX_NS
    }

    /// `make_room`: kick an idle CPU the task may use, else preempt the CPU whose task has
    /// run the longest (at least `PREEMPT_MIN_RUN_NS`; never the scheduler). `draining`: from
    /// the drain in `ctx`'s ops.dispatch, which takes the head of the shared queues next.
    fn make_room(&mut self, tid: usize, ctx: Option<u32>, draining: bool) {
        let now = self.now;
        let mut oldest = now;
        let mut victim = None;
        // The draining CPU takes the head of the shared queues next: room for this task
        // only when nothing else waits there.
        let busy_self = ctx.filter(|_| draining && self.fifo.len() + self.vtime_q.len() > 1);
        for cpu in 0..self.nr_cpus {
            if !self.allowed(tid, cpu) || busy_self == Some(cpu) {
                continue;
            }
            let c = &self.cpus[cpu as usize];
            if c.cpu_to_pid == 0 {
                self.kick_if_idle(cpu, ctx);
                return;
            }
            if c.run_start != 0 && c.run_start < oldest {
                oldest = c.run_start;
                victim = Some(cpu);
            }
        }
        if let Some(v) = victim {
            if now - oldest >= PREEMPT_MIN_RUN_NS {
                self.kick_preempt(v);
            }
        }
    }

    /// `run_pending`: in fallback mode run the tasks user space holds; otherwise only drop
    /// resolved entries from the head of `pending`.
    fn run_pending(&mut self, ctx: u32, slots: &mut usize) {
        for _ in 0..64 {
            if !self.c.fallback && self.pending.is_empty() {
                break;
            }
            if *slots == 0 {
                break;
            }
            let Some((pid, seq)) = self.pending.pop_front() else {
                break;
            };
            let Some(tid) = self.tid_of(pid) else {
                continue;
            };
            let live = self.tasks[tid].queued && self.tasks[tid].seq == seq;
            if live && self.c.fallback {
                if self.resolve(tid) {
                    self.tasks[tid].shared_ts = self.now.max(1);
                    self.insert_fifo(tid, false);
                    self.kick_if_idle(self.tasks[tid].cpu, Some(ctx));
                    self.c.nr_fallback_dispatches += 1;
                    *slots -= 1;
                }
            } else if live {
                if self.pending.len() >= PENDING_MAX {
                    self.pending.pop_front();
                }
                self.pending.push_back((pid, seq));
                break;
            }
        }
    }

    /// `stall_tick`: every 20 ms, enter fallback mode if user space stopped making progress.
    fn stall_tick(&mut self) {
        let now = self.now;
        let waiting = self.c.nr_outstanding > 0 || !self.ring.is_empty();
        if !waiting
            || self.cons_pos != self.last_cons_pos
            || self.c.nr_dispatch_records != self.last_dispatch_records
        {
            self.last_cons_pos = self.cons_pos;
            self.last_dispatch_records = self.c.nr_dispatch_records;
            self.last_progress_ns = now;
        } else if !self.c.fallback && now - self.last_progress_ns >= self.stall_ns {
            self.c.fallback = true;
            self.c.nr_stalls += 1;
        }
        // `rescue_resumes`: a resume queue its CPU left unserved too long gives its oldest
        // task to the head of that CPU's local queue.
        for cpu in 0..self.nr_cpus {
            let c = &mut self.cpus[cpu as usize];
            if c.resume_ts != 0 && now.saturating_sub(c.resume_ts) < RESUME_RESCUE_NS {
                continue;
            }
            if let Some(tid) = c.resume.pop_front() {
                let slice = self.tasks[tid].slice;
                self.insert_local(cpu, tid, slice, SCX_ENQ_HEAD);
                self.c.nr_resume_rescues += 1;
            }
        }
        // `rescue_shared`: a task among the first SHARED_RESCUE_SCAN of a shared queue that
        // has waited SHARED_RESCUE_NS goes to the head of its CPU's local queue, if it may
        // run there.
        for vtime in [false, true] {
            let mut i = 0;
            for _ in 0..SHARED_RESCUE_SCAN {
                let entry = if vtime {
                    self.vtime_q.get(i).map(|&(_, t)| t)
                } else {
                    self.fifo.get(i).copied()
                };
                let Some(tid) = entry else { break };
                let (cpu, since) = (self.tasks[tid].cpu, self.tasks[tid].shared_ts);
                if since == 0 || now - since < SHARED_RESCUE_NS || !self.allowed(tid, cpu) {
                    i += 1;
                    continue;
                }
                if vtime {
                    self.vtime_q.remove(i);
                } else {
                    self.fifo.remove(i);
                }
                let slice = self.tasks[tid].slice;
                self.tasks[tid].shared_ts = 0;
                self.insert_local(cpu, tid, slice, SCX_ENQ_HEAD);
                self.c.nr_shared_rescues += 1;
            }
        }
        if self.c.fallback {
            for cpu in 0..self.nr_cpus {
                self.kick_if_idle(cpu, None);
            }
        }
        self.push(now + STALL_TICK_NS, Ev::StallTick);
    }

    // ---------------------------------------------------------------- results

    fn snapshot(&self) -> Stats {
        let c = &self.c;
        Stats {
            nr_online_cpus: self.nr_cpus as u64,
            nr_running: c.nr_running,
            nr_queued: c.nr_queued,
            nr_scheduled: c.nr_scheduled,
            nr_user_dispatches: c.nr_user_dispatches,
            nr_kernel_dispatches: c.nr_kernel_dispatches,
            nr_cancel_dispatches: c.nr_cancel_dispatches,
            nr_bounce_dispatches: c.nr_bounce_dispatches,
            nr_failed_dispatches: 0,
            nr_sched_congested: c.nr_sched_congested,
            nr_queued_events: c.nr_queued_events,
            nr_exit_events: c.nr_exit_events,
            nr_dispatch_records: c.nr_dispatch_records,
            nr_stalls: c.nr_stalls,
            nr_fallback_dispatches: c.nr_fallback_dispatches,
            nr_direct_dispatches: c.nr_direct_dispatches,
            nr_displaced_dispatches: c.nr_displaced_dispatches,
            nr_vtime_dispatches: c.nr_vtime_dispatches,
            nr_reenqueued: c.nr_reenqueued,
            nr_mm_kthread_dispatches: c.nr_mm_kthread_dispatches,
            nr_resume_rescues: c.nr_resume_rescues,
            nr_shared_rescues: c.nr_shared_rescues,
            nr_outstanding: c.nr_outstanding,
            fallback: c.fallback,
            ..Stats::default()
        }
    }

    fn finish(mut self, policy: String, stats: Metrics) -> SimResult {
        for cpu in 0..self.nr_cpus {
            self.account(cpu);
        }
        let end = self.end;
        let dur = end.max(1) as f64;
        let mut groups: Vec<(GroupMetrics, Vec<u64>, Vec<u64>)> = self
            .groups
            .iter()
            .map(|g| {
                (
                    GroupMetrics {
                        name: g.clone(),
                        ..GroupMetrics::default()
                    },
                    Vec::new(),
                    Vec::new(),
                )
            })
            .collect();
        let mut tasks = Vec::new();
        for t in self.tasks.iter_mut().skip(1) {
            if t.state == St::New {
                continue; // forked after the end
            }
            let waiting = matches!(t.state, St::Queued | St::Shared | St::Resume | St::Local);
            let starve = if waiting {
                t.max_starve.max(end - t.runnable_since)
            } else {
                t.max_starve
            };
            let (g, samples, wake_samples) = &mut groups[t.group];
            samples.extend_from_slice(&t.waits);
            wake_samples.extend_from_slice(&t.wake_waits);
            let m = TaskMetrics {
                name: t.name.clone(),
                group: g.name.clone(),
                pid: t.pid,
                runtime_ns: t.sum_exec,
                cpu_share: t.sum_exec as f64 / dur,
                bursts: t.bursts,
                loops: t.loops,
                wakeups: t.wakeups,
                wait: WaitStats::from_samples(&mut t.waits),
                wake_wait: WaitStats::from_samples(&mut t.wake_waits),
                max_starvation_ns: starve,
                exited: t.state == St::Exited,
                cpus_used: (0..128)
                    .filter(|&c| t.cpus_used & (1u128 << c) != 0)
                    .collect(),
            };
            g.tasks += 1;
            g.runtime_ns += m.runtime_ns;
            g.bursts += m.bursts;
            g.loops += m.loops;
            g.wakeups += m.wakeups;
            g.max_starvation_ns = g.max_starvation_ns.max(starve);
            tasks.push(m);
        }
        let groups = groups
            .into_iter()
            .map(|(mut g, mut samples, mut wake_samples)| {
                g.cpu_share = g.runtime_ns as f64 / dur;
                g.wait = WaitStats::from_samples(&mut samples);
                g.wake_wait = WaitStats::from_samples(&mut wake_samples);
                g
            })
            .collect();
        let busy: u64 = self.cpus.iter().map(|c| c.busy_ns).sum();
        SimResult {
            scenario: self.scenario_name.clone(),
            policy,
            duration_ns: end,
            cpus: self.nr_cpus,
            tasks,
            groups,
            scheduler: SchedulerMetrics {
                calls: self.sched.calls,
                cpu_ns: self.sched.cpu_ns,
                wakeups: self.sched.wakeups,
                wait: WaitStats::from_samples(&mut self.tasks[SCHED].waits),
            },
            stats,
            utilisation: busy as f64 / (dur * self.nr_cpus as f64),
            events: self.nr_events,
        }
    }
}

enum Outcome {
    Run,
    Block(St, Option<u64>),
    Migrate,
}

/// What a policy holds during one `schedule` call: the simulator, as a [`Backend`], and the
/// call's own clock (each dequeued task and dispatched decision costs the scheduler process
/// CPU time, as set in [`SchedConfig`](crate::SchedConfig)).
pub struct SimScheduler<'a> {
    sim: &'a mut Simulator,
    clock: u64,
}

impl SimScheduler<'_> {
    /// The virtual time the policy is at within its call (ns).
    pub fn now(&self) -> u64 {
        self.clock
    }
}

impl Backend for SimScheduler<'_> {
    fn dequeue_task(&mut self) -> Result<Option<QueuedTask>, Error> {
        let t = self.sim.ring.pop_front();
        if t.is_some() {
            self.sim.cons_pos += 1;
            self.clock += self.sim.costs[1];
        }
        Ok(t)
    }

    fn dequeue_tasks(&mut self, out: &mut Vec<QueuedTask>, max: usize) -> Result<usize, Error> {
        let n = max.min(self.sim.ring.len());
        out.extend(self.sim.ring.drain(..n));
        self.sim.cons_pos += n as u64;
        self.clock += self.sim.costs[1] * n as u64;
        Ok(n)
    }

    fn dispatch_tasks(&mut self, tasks: &[Dispatch]) -> Result<(), Error> {
        let nr_cpu_ids = self.sim.nr_cpus;
        for t in tasks {
            if t.pid <= 0 {
                return Err(Error::InvalidPid(t.pid));
            }
            if t.cpu != RL_CPU_ANY && (t.cpu < 0 || t.cpu as u32 >= nr_cpu_ids) {
                return Err(Error::InvalidCpu {
                    cpu: t.cpu,
                    nr_cpu_ids,
                });
            }
        }
        for pack in tasks.chunks(BATCH_MAX) {
            self.clock += self.sim.costs[2] * pack.len() as u64;
            self.sim.user_recs.extend(pack.iter().copied());
            self.sim.user_samples.push_back((self.clock, pack.len()));
        }
        Ok(())
    }

    fn update_tasks(
        &mut self,
        nr_queued: Option<u64>,
        nr_scheduled: Option<u64>,
    ) -> Result<(), Error> {
        if let Some(n) = nr_queued {
            self.sim.c.nr_queued = n;
        }
        if let Some(n) = nr_scheduled {
            self.sim.c.nr_scheduled = n;
        }
        if self.sim.c.nr_queued == 0 && self.sim.c.nr_scheduled == 0 && self.sim.ring.is_empty() {
            self.sim.sched.want_sleep = true;
        }
        Ok(())
    }

    fn select_cpu(&self, pid: i32, prev_cpu: i32, _flags: u64) -> Result<Option<i32>, Error> {
        let nr_cpu_ids = self.sim.nr_cpus;
        if pid <= 0 {
            return Err(Error::InvalidPid(pid));
        }
        if prev_cpu >= 0 && prev_cpu as u32 >= nr_cpu_ids {
            return Err(Error::InvalidCpu {
                cpu: prev_cpu,
                nr_cpu_ids,
            });
        }
        let tid = self.sim.tid_of(pid).ok_or(Error::NoSuchTask(pid))?;
        let ok = |c: i32| c >= 0 && self.sim.allowed(tid, c as u32) && self.get_cpu_pid(c) == 0;
        if ok(prev_cpu) {
            return Ok(Some(prev_cpu));
        }
        Ok((0..nr_cpu_ids as i32).find(|&c| ok(c)))
    }

    fn get_cpu_pid(&self, cpu: i32) -> u32 {
        if cpu < 0 || cpu as u32 >= self.sim.nr_cpus {
            return 0;
        }
        self.sim.cpus[cpu as usize].cpu_to_pid
    }

    fn stats(&self) -> Stats {
        self.sim.snapshot()
    }

    fn exited(&self) -> bool {
        false
    }

    fn nr_cpu_ids(&self) -> usize {
        self.sim.nr_cpus as usize
    }
}
