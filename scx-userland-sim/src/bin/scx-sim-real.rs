//! `scx-sim-real`: run a simulator scenario for real, with one thread per task, on whatever
//! scheduler the kernel runs (meant for the sched_ext VM, next to the scheduler under test),
//! and print the same [`SimResult`] JSON as the simulator, for a side-by-side comparison.
//!
//! `scx-sim-real SCENARIO.json [--duration-ms N] [--table]`
//!
//! Measured with CLOCK_MONOTONIC from inside the threads: `wake_wait` is the delay from the
//! moment a task should have run again (its timer, or its waker's `wake`) to when it did;
//! a `wait` that finds a wake already sent does not block and is no wake-up (as in the
//! simulator); `wait` adds the gaps a spinning task sees while it runs (preemptions, at least 20 us);
//! CPU time is the thread's own clock. The framework counters (`stats`) and the scheduler
//! process' figures are not seen from here and stay zero. The scenario's `cpus` and `sched`
//! sections describe the machine and scheduler the run is meant for; they are not applied.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use scx_userland_sim::{
    load_scenario, GroupMetrics, Op, Scenario, SimResult, TaskMetrics, WaitStats,
};

/// Gaps shorter than this while spinning are not counted as waits.
const GAP_NS: u64 = 20_000;

fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn now() -> u64 {
    clock(libc::CLOCK_MONOTONIC)
}

/// A task's mailbox: wake-ups not yet consumed, with when they were sent.
#[derive(Default)]
struct Mailbox {
    wakes: Mutex<VecDeque<u64>>,
    cv: Condvar,
}

#[derive(Default)]
struct Samples {
    waits: Vec<u64>,
    wake_waits: Vec<u64>,
    bursts: u64,
    loops: u64,
    wakeups: u64,
    exited: bool,
    runtime_ns: u64,
    max_starve: u64,
}

struct Instance {
    name: String,
    spec: usize,
    index: usize,
    mailbox: Arc<Mailbox>,
}

struct World {
    scenario: Scenario,
    deadline: u64,
    stop: AtomicBool,
    /// Per spec, its instances (spawned ones appended).
    instances: Mutex<Vec<Vec<Arc<Instance>>>>,
    results: Mutex<Vec<(Arc<Instance>, Samples)>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl World {
    fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || now() >= self.deadline
    }

    /// The mailbox a `wake`/`spawn` target names (as the simulator resolves it).
    fn find(&self, name: &str) -> (usize, Option<usize>) {
        let names: Vec<&str> = self
            .scenario
            .tasks
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        if let Some(s) = names.iter().position(|n| *n == name) {
            return (s, None);
        }
        let (base, idx) = name.rsplit_once('.').expect("validated");
        let s = names.iter().position(|n| *n == base).expect("validated");
        (s, idx.parse().ok())
    }
}

fn set_affinity(cpus: &[u32]) {
    if cpus.is_empty() {
        return;
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET writes in bounds (checked below).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if (c as usize) < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(c as usize, &mut set);
            }
        }
        // SAFETY: pid 0 = this thread; a valid set of the size given.
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn set_nice(nice: i32) {
    // SAFETY: gettid has no preconditions; setpriority on this thread only.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
    }
}

fn spawn(world: &Arc<World>, inst: Arc<Instance>, start_at: u64) {
    let w = world.clone();
    let handle = std::thread::Builder::new()
        .name(inst.name.chars().take(15).collect())
        .spawn(move || run_task(&w, inst, start_at))
        .expect("spawning a task thread");
    world
        .threads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(handle);
}

fn run_task(world: &Arc<World>, inst: Arc<Instance>, start_at: u64) {
    let spec = &world.scenario.tasks[inst.spec];
    let mut s = Samples::default();
    let sleep_until = |at: u64| {
        let t = now();
        if at > t {
            std::thread::sleep(Duration::from_nanos(at - t));
        }
    };
    sleep_until(start_at);
    // Timers fire on time (the default 50 us of slack would count as wake-up latency).
    // SAFETY: prctl with an integer argument; affects this thread only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    set_affinity(&spec.cpus);
    set_nice(spec.nice);
    let born = now();
    let cpu0 = clock(libc::CLOCK_THREAD_CPUTIME_ID);
    let mut rng = scx_userland_sim::Rng::new(
        world.scenario.seed ^ ((inst.spec as u64) << 32) ^ inst.index as u64,
    );
    let record = |s: &mut Samples, lat: u64, wake: bool| {
        s.waits.push(lat);
        if wake {
            s.wake_waits.push(lat);
            s.wakeups += 1;
        }
        s.max_starve = s.max_starve.max(lat);
    };
    'outer: loop {
        for op in &spec.program {
            if world.over() {
                break 'outer;
            }
            match op {
                Op::RunUs(_) | Op::RunRandUs(_) => {
                    let ns = match op {
                        Op::RunUs(us) => us * 1000,
                        Op::RunRandUs([a, b]) => rng.range(a * 1000, b * 1000),
                        _ => unreachable!(),
                    };
                    let start = clock(libc::CLOCK_THREAD_CPUTIME_ID);
                    let mut last = now();
                    while clock(libc::CLOCK_THREAD_CPUTIME_ID) - start < ns {
                        let t = now();
                        if t - last >= GAP_NS {
                            record(&mut s, t - last, false);
                        }
                        last = t;
                        if t >= world.deadline {
                            break 'outer;
                        }
                    }
                    s.bursts += 1;
                }
                Op::SleepUs(_) | Op::SleepRandUs(_) | Op::PeriodUs(_) => {
                    let t = now();
                    let at = match op {
                        Op::SleepUs(us) => t + us * 1000,
                        Op::SleepRandUs([a, b]) => t + rng.range(a * 1000, b * 1000),
                        Op::PeriodUs(p) => {
                            let p = p * 1000;
                            born + ((t - born) / p + 1) * p
                        }
                        _ => unreachable!(),
                    };
                    if at >= world.deadline {
                        sleep_until(world.deadline);
                        break 'outer;
                    }
                    sleep_until(at);
                    record(&mut s, now().saturating_sub(at), true);
                }
                Op::Wait => {
                    let mb = &inst.mailbox;
                    let waited_from = now();
                    let mut q = mb.wakes.lock().unwrap_or_else(|e| e.into_inner());
                    // A wake that came first is consumed without blocking: no wake-up, as
                    // in the simulator.
                    if q.pop_front().is_some() {
                        continue;
                    }
                    loop {
                        if let Some(sent) = q.pop_front() {
                            record(&mut s, now().saturating_sub(sent.max(waited_from)), true);
                            break;
                        }
                        if world.over() {
                            break 'outer;
                        }
                        q = mb
                            .cv
                            .wait_timeout(q, Duration::from_millis(10))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
                Op::Wake(name) => {
                    let (sp, idx) = world.find(name);
                    let target = {
                        let all = world.instances.lock().unwrap_or_else(|e| e.into_inner());
                        let list = &all[sp];
                        (!list.is_empty())
                            .then(|| list[idx.unwrap_or(inst.index) % list.len()].clone())
                    };
                    if let Some(t) = target {
                        t.mailbox
                            .wakes
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push_back(now());
                        t.mailbox.cv.notify_one();
                    }
                }
                Op::Spawn(name) => {
                    let sp = world.find(name).0;
                    let child = {
                        let mut all = world.instances.lock().unwrap_or_else(|e| e.into_inner());
                        let i = all[sp].len();
                        let c = Arc::new(Instance {
                            name: format!("{}#{i}", world.scenario.tasks[sp].name),
                            spec: sp,
                            index: i,
                            mailbox: Arc::default(),
                        });
                        all[sp].push(c.clone());
                        c
                    };
                    spawn(world, child, 0);
                }
                Op::Nice(n) => set_nice(*n),
                Op::Affinity(c) => set_affinity(c),
                Op::Exit => {
                    s.exited = true;
                    break 'outer;
                }
            }
        }
        s.loops += 1;
        if !spec.repeat {
            s.exited = true;
            break;
        }
    }
    s.runtime_ns = clock(libc::CLOCK_THREAD_CPUTIME_ID) - cpu0;
    world
        .results
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((inst, s));
}

fn run(scenario: Scenario) -> SimResult {
    let start = now() + 10_000_000; // 10 ms to start the threads
    let duration = scenario.duration_ms * 1_000_000;
    let mut all = vec![Vec::new(); scenario.tasks.len()];
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
            all[spec].push(Arc::new(Instance {
                name,
                spec,
                index: i,
                mailbox: Arc::default(),
            }));
        }
    }
    let world = Arc::new(World {
        deadline: start + duration,
        scenario,
        stop: AtomicBool::new(false),
        instances: Mutex::new(all.clone()),
        results: Mutex::default(),
        threads: Mutex::default(),
    });
    for (spec, list) in all.iter().enumerate() {
        let at = start + world.scenario.tasks[spec].start_us * 1000;
        for inst in list {
            spawn(&world, inst.clone(), at);
        }
    }
    loop {
        let next = world
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        match next {
            Some(h) => {
                let _ = h.join();
            }
            None => break,
        }
    }
    world.stop.store(true, Ordering::Relaxed);
    let results = std::mem::take(&mut *world.results.lock().unwrap_or_else(|e| e.into_inner()));
    summarise(&world.scenario, duration, results)
}

fn summarise(
    scenario: &Scenario,
    duration: u64,
    mut results: Vec<(Arc<Instance>, Samples)>,
) -> SimResult {
    results.sort_by_key(|(i, _)| (i.spec, i.index));
    let dur = duration.max(1) as f64;
    let mut group_names: Vec<String> = Vec::new();
    for t in &scenario.tasks {
        if !group_names.iter().any(|g| g == t.group_name()) {
            group_names.push(t.group_name().to_string());
        }
    }
    let mut groups: Vec<(GroupMetrics, Vec<u64>, Vec<u64>)> = group_names
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
    for (pid, (inst, mut s)) in results.into_iter().enumerate() {
        let group = scenario.tasks[inst.spec].group_name();
        let gi = group_names
            .iter()
            .position(|g| g == group)
            .expect("known group");
        let (g, waits, wake_waits) = &mut groups[gi];
        waits.extend_from_slice(&s.waits);
        wake_waits.extend_from_slice(&s.wake_waits);
        let m = TaskMetrics {
            name: inst.name.clone(),
            group: group.to_string(),
            pid: pid as i32,
            runtime_ns: s.runtime_ns,
            cpu_share: s.runtime_ns as f64 / dur,
            bursts: s.bursts,
            loops: s.loops,
            wakeups: s.wakeups,
            wait: WaitStats::from_samples(&mut s.waits),
            wake_wait: WaitStats::from_samples(&mut s.wake_waits),
            max_starvation_ns: s.max_starve,
            exited: s.exited,
            cpus_used: Vec::new(),
        };
        g.tasks += 1;
        g.runtime_ns += m.runtime_ns;
        g.bursts += m.bursts;
        g.loops += m.loops;
        g.wakeups += m.wakeups;
        g.max_starvation_ns = g.max_starvation_ns.max(m.max_starvation_ns);
        tasks.push(m);
    }
    let groups = groups
        .into_iter()
        .map(|(mut g, mut w, mut ww)| {
            g.cpu_share = g.runtime_ns as f64 / dur;
            g.wait = WaitStats::from_samples(&mut w);
            g.wake_wait = WaitStats::from_samples(&mut ww);
            g
        })
        .collect();
    let busy: u64 = tasks.iter().map(|t: &TaskMetrics| t.runtime_ns).sum();
    SimResult {
        scenario: scenario.name.clone(),
        policy: "kernel (real threads)".into(),
        duration_ns: duration,
        cpus: scenario.cpus,
        tasks,
        groups,
        utilisation: busy as f64 / (dur * scenario.cpus.max(1) as f64),
        ..SimResult::default()
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut duration = None;
    let mut table = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--duration-ms" => duration = args.next().and_then(|v| v.parse().ok()),
            "--table" => table = true,
            "-h" | "--help" => {
                println!("usage: scx-sim-real SCENARIO.json [--duration-ms N] [--table]");
                return ExitCode::SUCCESS;
            }
            _ => path = Some(a),
        }
    }
    let Some(path) = path else {
        eprintln!("usage: scx-sim-real SCENARIO.json [--duration-ms N] [--table]");
        return ExitCode::FAILURE;
    };
    let mut scenario = match load_scenario(std::path::Path::new(&path)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("scx-sim-real: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(d) = duration {
        scenario.duration_ms = d;
    }
    let result = run(scenario);
    if table {
        println!("{result}");
    } else {
        println!("{}", result.to_json());
    }
    ExitCode::SUCCESS
}
