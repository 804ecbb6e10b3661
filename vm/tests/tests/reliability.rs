//! "Never hang the machine": what every other task sees when the user-space scheduler dies,
//! stops, runs into memory pressure, gets bad input or must restart, and a soak.
//!
//! Timing-critical observers run on SCHED_FIFO threads (the real-time class runs ahead of
//! sched_ext, so they keep running whatever the scheduler does); the wake-up probe is a normal
//! task, so it measures what sched_ext's tasks get.

mod common;
mod common_rel;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_accounting, counters, mixed_workload, SchedProc};
use common_rel::{
    busy, distribution, fast_state, kill, kv_line, ms, now_ns, sleep_until_ns, spawn_rt, FastState,
    HeldLink, Kmsg, Probe, Soak, Worker,
};
use scx_userland::{
    BpfScheduler, Dispatch, DispatchedTask, Error, ExitKind, QueuedTask, Stats, RL_CPU_ANY,
};
use vm_tests::{read_state, require_guest, wait_for_state, wait_until};

const MS: u64 = 1_000_000;

fn ops_name() -> String {
    std::fs::read_to_string("/sys/kernel/sched_ext/root/ops")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn nr_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// No watchdog stall in the kernel log since `kmsg`'s mark (the harness also fails the run on
/// the console line; this names the test that caused it).
fn assert_no_stall(kmsg: &Kmsg, what: &str) {
    let stalls = kmsg.stall_lines();
    assert!(
        stalls.is_empty(),
        "{what}: the kernel's watchdog reported stalled tasks:\n{}",
        stalls.join("\n")
    );
}

/// No sched_ext disable in the kernel log since the mark (call before the final SIGINT).
fn assert_never_disabled(kmsg: &Kmsg, what: &str) {
    let lines: Vec<String> = kmsg
        .sched_ext_lines()
        .into_iter()
        .filter(|l| l.contains("disabled"))
        .collect();
    assert!(
        lines.is_empty(),
        "{what}: the scheduler was disabled:\n{}",
        lines.join("\n")
    );
}

/// The state letter of process `pid` in /proc/PID/stat (`R`, `S`, `T`, `Z`…), None if gone.
fn stat_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
}

/// Is process `pid` alive (not gone, not a zombie)?
fn alive(pid: u32) -> bool {
    stat_state(pid).is_some_and(|state| state != 'Z' && state != 'X')
}

// ---------------------------------------------------------------------------------------------
// 1. Death: SIGKILL while attached, under load
// ---------------------------------------------------------------------------------------------

const DEATH_TRIALS: usize = 20;
const DEATH_MIN_TRIALS: usize = 10;
/// Stop adding trials after this long (TCG is slow), once the minimum is done.
const DEATH_BUDGET: Duration = Duration::from_secs(80);
const DEATH_LIMIT_MS: f64 = 100.0;

struct DeathTrial {
    /// SIGKILL to the state leaving `enabled`.
    fallback_ns: Option<u64>,
    /// SIGKILL to `disabled`.
    disabled_ns: Option<u64>,
    /// The probe's worst wait from the SIGKILL to 100 ms after the fallback.
    probe_worst_ns: u64,
    polls: u64,
}

/// One SIGKILL of an attached scx-fifo. `hold_link`: keep a duplicate of its struct_ops link
/// open meanwhile, so that its death does not detach it through its closing descriptors.
fn death_trial(probe: &Arc<common_rel::ProbeShared>, hold_link: bool) -> DeathTrial {
    let sched = SchedProc::start("scx-fifo", &["--stats-interval", "0"]);
    // Let the load run under it for a moment.
    thread::sleep(Duration::from_millis(300));
    let pid = sched.pid();
    let held = hold_link.then(|| HeldLink::grab(pid).expect("duplicate scx-fifo's BPF link"));
    let p = probe.clone();
    let (killed, left, off, polls) = spawn_rt(move || {
        p.reset();
        let killed = now_ns();
        kill(pid, libc::SIGKILL).expect("SIGKILL scx-fifo");
        let (mut left, mut off, mut polls) = (None, None, 0u64);
        loop {
            let st = fast_state();
            let t = now_ns();
            polls += 1;
            if left.is_none() && st != FastState::Enabled {
                left = Some(t);
            }
            if st == FastState::Disabled {
                off = Some(t);
                break;
            }
            if t > killed + 10_000 * MS {
                break;
            }
            sleep_until_ns(t + MS);
        }
        (killed, left, off, polls)
    })
    .join()
    .expect("the RT watcher panicked");
    // Give the probe 100 ms of the default scheduler to report what it went through.
    sleep_until_ns(left.unwrap_or(killed) + 100 * MS);
    let probe_worst_ns = probe.worst_ns();
    drop(held);
    wait_for_state("disabled", Duration::from_secs(10)).expect("back to disabled after SIGKILL");
    drop(sched); // reaps it
    DeathTrial {
        fallback_ns: left.map(|t| t - killed),
        disabled_ns: off.map(|t| t - killed),
        probe_worst_ns,
        polls,
    }
}

/// `trials_wanted` SIGKILLs under load (at least `min_trials` if the time budget runs out);
/// prints the distribution with `tag` and asserts the limits.
fn death_trials(tag: &str, trials_wanted: usize, min_trials: usize, hold_link: bool) {
    require_guest();
    let kmsg = Kmsg::mark();
    let load = Soak::start(&["--secs", "100000", "--parts", "hog,fork", "--hogs", "3"]);
    let probe = Probe::start();
    let shared = probe.shared();
    let t0 = Instant::now();
    let mut trials = Vec::new();
    while trials.len() < trials_wanted
        && !(trials.len() >= min_trials && t0.elapsed() > DEATH_BUDGET)
    {
        let t = death_trial(&shared, hold_link);
        println!(
            "{tag}: trial {}: fallback {} ms, disabled {} ms, probe worst {:.1} ms ({} polls)",
            trials.len() + 1,
            t.fallback_ns
                .map_or("never".into(), |n| format!("{:.1}", ms(n))),
            t.disabled_ns
                .map_or("never".into(), |n| format!("{:.1}", ms(n))),
            ms(t.probe_worst_ns),
            t.polls
        );
        trials.push(t);
    }
    load.kill();
    let probe_life_max = probe.stop();

    let n = trials.len();
    let fallback: Vec<f64> = trials
        .iter()
        .map(|t| t.fallback_ns.map_or(f64::INFINITY, ms))
        .collect();
    let disabled: Vec<f64> = trials
        .iter()
        .map(|t| t.disabled_ns.map_or(f64::INFINITY, ms))
        .collect();
    let probe_max = trials
        .iter()
        .map(|t| ms(t.probe_worst_ns))
        .fold(0.0, f64::max);
    println!(
        "{tag}: fallback_ms {} probe_max_ms={probe_max:.1} trials={n}",
        distribution(&fallback)
    );
    println!(
        "{tag}: disabled_ms {} probe_worst_ms {} (probe worst over the whole test {:.1} ms){}",
        distribution(&disabled),
        distribution(
            &trials
                .iter()
                .map(|t| ms(t.probe_worst_ns))
                .collect::<Vec<_>>()
        ),
        ms(probe_life_max),
        if n < trials_wanted {
            format!(" -- only {n} of {trials_wanted} trials fit in the time budget under TCG")
        } else {
            String::new()
        }
    );
    assert_no_stall(&kmsg, tag);
    let fast = fallback.iter().filter(|&&f| f <= DEATH_LIMIT_MS).count();
    assert_eq!(
        fast, n,
        "{tag}: back on the default scheduler within {DEATH_LIMIT_MS} ms in only {fast}/{n} trials: \
         {fallback:?}"
    );
    assert!(
        probe_max <= DEATH_LIMIT_MS,
        "{tag}: a normal task waited {probe_max:.1} ms around the SIGKILL (limit {DEATH_LIMIT_MS} ms)"
    );
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn death_sigkill_under_load_falls_back_fast() {
    death_trials("death", DEATH_TRIALS, DEATH_MIN_TRIALS, false);
}

/// The same with scx-fifo's BPF link kept open elsewhere (as after a fork that inherited it):
/// closing the dead process's descriptors detaches nothing, so this proves the BPF component
/// itself notices the death and steps aside.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn death_with_the_link_held_elsewhere_falls_back_fast() {
    death_trials("death-held-link", 5, 5, true);
}

/// SIGKILL of a scheduler whose scheduling thread is not its main thread (`vm-thread-sched`,
/// stall guard at 5 s): BPF steps aside as soon as the scheduling thread dies. The main
/// thread, woken by the kill, waits for a decision that never comes, so neither its exit nor
/// the closing of the process's descriptors can be what ends the scheduler.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn death_of_a_scheduling_thread_that_is_not_the_main_thread_falls_back_fast() {
    require_guest();
    let kmsg = Kmsg::mark();
    let mut left_ms = Vec::new();
    for trial in 1..=5 {
        let sched = SchedProc::start("vm-thread-sched", &[]);
        thread::sleep(Duration::from_millis(300));
        let pid = sched.pid();
        let left = spawn_rt(move || {
            let killed = now_ns();
            kill(pid, libc::SIGKILL).expect("SIGKILL vm-thread-sched");
            loop {
                let t = now_ns();
                if fast_state() != FastState::Enabled {
                    return Some(t - killed);
                }
                if t > killed + 10_000 * MS {
                    return None;
                }
                sleep_until_ns(t + MS);
            }
        })
        .join()
        .expect("the RT watcher panicked");
        wait_for_state("disabled", Duration::from_secs(15))
            .expect("back to disabled after SIGKILL");
        drop(sched); // reaps it
        let ms_left = left.map_or(f64::INFINITY, ms);
        println!("thread-death: trial {trial}: left enabled after {ms_left:.1} ms");
        left_ms.push(ms_left);
    }
    assert_no_stall(&kmsg, "thread-death");
    assert!(
        left_ms.iter().all(|&m| m <= DEATH_LIMIT_MS),
        "sched_ext stayed enabled after its scheduling thread died (ms per trial): {left_ms:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Stall: SIGSTOP for 2 s while attached
// ---------------------------------------------------------------------------------------------

/// The `user_dispatches` of every `stats` line.
fn user_dispatch_series(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter(|l| l.contains("scx-fifo: stats"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("user_dispatches="))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn stall_sigstop_keeps_every_task_running() {
    require_guest();
    let kmsg = Kmsg::mark();
    let sched = SchedProc::start("scx-fifo", &["--stats-interval", "1"]);
    let load = Soak::start(&["--secs", "100000", "--parts", "hog", "--hogs", "2"]);
    let probe = Probe::start();
    thread::sleep(Duration::from_millis(2500));
    let before = user_dispatch_series(&sched.lines());
    let pid = sched.pid();
    let shared = probe.shared();
    let (worst_stopped, not_enabled, first_not_enabled, polls) = spawn_rt(move || {
        shared.reset();
        kill(pid, libc::SIGSTOP).expect("SIGSTOP scx-fifo");
        let stopped = now_ns();
        let (mut not_enabled, mut first, mut polls) = (0u64, None, 0u64);
        loop {
            let t = now_ns();
            if t >= stopped + 2000 * MS {
                break;
            }
            if fast_state() != FastState::Enabled {
                not_enabled += 1;
                first.get_or_insert(t - stopped);
            }
            polls += 1;
            sleep_until_ns(t + MS);
        }
        // The worst wait while it was stopped, including one still going on.
        let worst = shared.worst_ns();
        kill(pid, libc::SIGCONT).expect("SIGCONT scx-fifo");
        (worst, not_enabled, first, polls)
    })
    .join()
    .expect("the RT watcher panicked");
    let cont = Instant::now();
    thread::sleep(Duration::from_millis(1000));
    let worst_incl_recovery = probe.shared().worst_ns();

    // After SIGCONT it carries on: two more stats lines, each with more user dispatches.
    let mut after = Vec::new();
    let resumed = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        after = user_dispatch_series(&sched.lines())[before.len()..].to_vec();
        after.len() >= 3 && after.windows(2).skip(after.len() - 3).all(|w| w[1] > w[0])
    });
    let state_now = read_state().unwrap_or_default();
    load.kill();
    let probe_max = probe.stop();
    let dmesg_disabled = kmsg
        .sched_ext_lines()
        .into_iter()
        .filter(|l| l.contains("disabled"))
        .collect::<Vec<_>>();
    let (status, lines, _) = sched.stop();
    println!(
        "stall: probe_max_ms={:.1} (while stopped {:.1}, incl. 1 s after SIGCONT {:.1}, whole \
         test {:.1}); state not enabled in {not_enabled}/{polls} polls (first at {:?} ms); \
         user_dispatches before {:?}, after SIGCONT {:?} (resumed within {:.1?})",
        ms(worst_stopped.max(worst_incl_recovery)),
        ms(worst_stopped),
        ms(worst_incl_recovery),
        ms(probe_max),
        first_not_enabled.map(ms),
        before.iter().rev().take(3).rev().collect::<Vec<_>>(),
        after,
        cont.elapsed()
    );
    assert_no_stall(&kmsg, "stall");
    assert!(
        dmesg_disabled.is_empty(),
        "the scheduler was disabled during the stop:\n{}",
        dmesg_disabled.join("\n")
    );
    assert_eq!(
        not_enabled, 0,
        "sched_ext left `enabled` while scx-fifo was stopped"
    );
    assert_eq!(state_now, "enabled", "still attached after SIGCONT");
    let worst = worst_stopped.max(worst_incl_recovery);
    assert!(
        worst < 1000 * MS,
        "a normal task waited {:.1} ms while the scheduler was stopped (limit 1000 ms; the BPF \
         fallback should take over long before)",
        ms(worst)
    );
    assert!(
        resumed,
        "user dispatches did not keep increasing after SIGCONT: before {before:?}, after {after:?}"
    );
    assert!(
        status.success(),
        "scx-fifo exited with {status} after SIGINT: {lines:#?}"
    );
    let exit = lines
        .iter()
        .find(|l| l.contains("exit:"))
        .expect("exit line");
    assert!(exit.contains("unregistered from user space"), "{exit}");
}

// ---------------------------------------------------------------------------------------------
// 3. Memory pressure
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn memory_pressure_keeps_the_scheduler_attached() {
    require_guest();
    let kmsg = Kmsg::mark();
    let sched = SchedProc::start("scx-fifo", &["--stats-interval", "1"]);
    let pid = sched.pid();
    // Fill (88% of MemTotal, or until only ~32 MiB are available), then hold it while the
    // workload runs.
    let hog = Soak::start(&["--memhog", "88", "--floor-mib", "16", "--hold", "15"]);
    let hog_pid = hog.pid();
    let filled = wait_until(Duration::from_secs(90), Duration::from_millis(100), || {
        hog.lines()
            .iter()
            .any(|l| l.starts_with("vm-soak: memhog filled"))
    });
    let done = filled.then(|| mixed_workload(Duration::from_secs(10)));
    let (hog_status, hog_lines) = hog.wait(Duration::from_secs(90));
    let state = read_state().unwrap_or_default();
    let sched_alive = alive(pid);
    let oom: Vec<String> = kmsg
        .since()
        .into_iter()
        .filter(|l| {
            l.contains("Out of memory") || l.contains("oom-kill") || l.contains("Killed process")
        })
        .collect();
    assert_never_disabled(&kmsg, "memory pressure");
    let (status, lines, _) = sched.stop();
    println!("memory: workload {done:?}; OOM lines {oom:?}");
    assert_no_stall(&kmsg, "memory pressure");
    assert!(
        !oom.iter()
            .any(|l| l.contains(&format!("Killed process {pid} "))),
        "the scheduler was OOM-killed: {oom:#?}"
    );
    assert!(sched_alive, "scx-fifo died under memory pressure");
    assert_eq!(state, "enabled", "ejected under memory pressure");
    assert!(filled, "the memory hog never filled memory: {hog_lines:#?}");
    let hog_oom_killed = oom
        .iter()
        .any(|l| l.contains(&format!("Killed process {hog_pid} ")));
    if hog_oom_killed {
        // The strongest pressure there is; the OOM killer picked the hog, as asked.
        println!("memory: the memory hog was OOM-killed (it asked to be the first choice)");
    } else {
        assert!(
            hog_status.is_some_and(|s| s.success()),
            "the memory hog failed ({hog_status:?}): {hog_lines:#?}"
        );
        let m = kv_line(&hog_lines, "vm-soak: memhog touched_mib=");
        println!("memory: memhog {m:?}");
        let num = |k: &str| m[k].parse::<u64>().unwrap();
        // Pressure is what the hog left: it fills until only its floor is available. (Its
        // share of MemTotal depends on what the guest's initramfs already takes.)
        assert!(
            num("min_available_mib") <= 64,
            "only down to {} MiB available ({} of {} MiB touched): not much pressure",
            num("min_available_mib"),
            num("touched_mib"),
            num("memtotal_mib")
        );
    }
    assert!(status.success(), "scx-fifo exited with {status}");
    let c = counters(&lines, "final");
    assert_accounting(&c);
}

// ---------------------------------------------------------------------------------------------
// 4. Bad input to an in-process BpfScheduler
// ---------------------------------------------------------------------------------------------

/// The FIFO decision for `t`.
fn fifo(bpf: &mut BpfScheduler, t: &QueuedTask) {
    let mut d = DispatchedTask::new(t);
    if !t.idle_cpu() {
        d.cpu = RL_CPU_ANY;
    }
    bpf.dispatch_task(&d).expect("a FIFO dispatch");
}

/// Schedule until `done` (checked after every pass) or `timeout`: `policy` decides every
/// queued task (exit notices too). Ok(false) on timeout; Err if the scheduler stopped.
fn drive(
    bpf: &mut BpfScheduler,
    timeout: Duration,
    mut policy: impl FnMut(&mut BpfScheduler, &QueuedTask),
    mut done: impl FnMut(&mut BpfScheduler) -> bool,
) -> Result<bool, Error> {
    let end = Instant::now() + timeout;
    loop {
        while let Some(t) = bpf.dequeue_task()? {
            policy(bpf, &t);
        }
        if done(bpf) {
            return Ok(true);
        }
        if Instant::now() >= end {
            return Ok(false);
        }
        bpf.wait_for_tasks(Duration::from_millis(5))?;
    }
}

/// Plain FIFO for `dur`.
fn idle_for(bpf: &mut BpfScheduler, dur: Duration) -> Result<bool, Error> {
    drive(
        bpf,
        dur,
        |b, t| {
            if !t.is_exiting() {
                fifo(b, t)
            }
        },
        |_| false,
    )
    .map(|_| true)
}

/// Detach; the scheduler must never have been ejected, the loop must have succeeded and
/// every dispatch record must have exactly one outcome.
fn finish(bpf: BpfScheduler, outcome: Result<bool, Error>, what: &str) -> Stats {
    let report = bpf.shutdown_and_report().expect("shutdown_and_report");
    let s = report.stats;
    println!("{what}: exit {report}; {s}");
    assert_eq!(
        report.kind,
        ExitKind::Unregistered,
        "{what}: the scheduler was ejected: {report}"
    );
    let done = outcome.unwrap_or_else(|e| panic!("{what}: the scheduling loop failed: {e}"));
    assert!(
        done,
        "{what}: the workers did not all finish in time: queued tasks did not run"
    );
    assert_eq!(
        s.nr_dispatch_records,
        s.nr_user_dispatches + s.nr_cancel_dispatches + s.nr_failed_dispatches,
        "{what}: every dispatch record has exactly one outcome: {s}"
    );
    assert_eq!(s.nr_failed_dispatches, 0, "{what}: {s}");
    assert_eq!(s.nr_sched_congested, 0, "{what}: {s}");
    s
}

fn all_exited_ok(workers: &mut [Worker], what: &str) -> bool {
    let mut all = true;
    for w in workers.iter_mut() {
        match w.exited() {
            Some(st) => assert!(st.success(), "{what}: worker {} exited with {st}", w.pid),
            None => all = false,
        }
    }
    all
}

/// Fork-heavy short work: wake-ups and new tasks.
fn forky_script() -> String {
    format!(
        "for k in 1 2 3 4 5 6 7 8 9 10 11 12; do {}; /bin/true; done",
        busy(150)
    )
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn bad_input_same_task_dispatched_twice() {
    require_guest();
    let mut workers: Vec<Worker> = (0..2)
        .map(|_| Worker::spawn(&forky_script(), None))
        .collect();
    let mut bpf = BpfScheduler::init(5000, nr_cpus() as i32, false, false, false).expect("init");
    for w in &mut workers {
        w.release();
    }
    let mut doubles = 0u64;
    let outcome = drive(
        &mut bpf,
        Duration::from_secs(60),
        |b, t| {
            if t.is_exiting() {
                return;
            }
            let mut d = DispatchedTask::new(t);
            if !t.idle_cpu() {
                d.cpu = RL_CPU_ANY;
            }
            b.dispatch_task(&d).expect("first dispatch");
            b.dispatch_task(&d)
                .expect("the same dispatch again is accepted");
            doubles += 1;
        },
        |_| all_exited_ok(&mut workers, "twice"),
    )
    .and_then(|done| idle_for(&mut bpf, Duration::from_millis(300)).map(|_| done));
    let s = finish(bpf, outcome, "twice");
    println!("twice: {doubles} tasks dispatched twice");
    assert!(doubles > 0);
    assert!(
        s.nr_cancel_dispatches * 2 >= doubles,
        "most second dispatches must be cancelled: {doubles} doubles, {s}"
    );
    assert!(
        s.nr_user_dispatches <= s.nr_queued_events,
        "a task was dispatched twice for one enqueue: {s}"
    );
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn bad_input_dispatch_after_the_task_exited() {
    require_guest();
    let mut workers: Vec<Worker> = (0..3).map(|_| Worker::spawn(&busy(400), None)).collect();
    let pids: Vec<i32> = workers.iter().map(|w| w.pid).collect();
    let mut bpf = BpfScheduler::init(5000, nr_cpus() as i32, false, false, false).expect("init");
    for w in &mut workers {
        w.release();
    }
    #[derive(Default)]
    struct Seen {
        last: HashMap<i32, QueuedTask>,
        stale: u64,
        notices: u64,
        /// When each worker was found a zombie (and dispatched as one).
        zombie_at: HashMap<i32, Instant>,
        after_reap: Vec<i32>,
    }
    let seen = RefCell::new(Seen::default());
    // Its last record again, to its own CPU and to any CPU.
    let stale_pair = |b: &mut BpfScheduler, prev: &QueuedTask| {
        let mut d = Dispatch::new(prev);
        b.dispatch_task(&d)
            .expect("a dispatch for an exited task is accepted");
        d.cpu = RL_CPU_ANY;
        d.vtime = 7;
        b.dispatch_task(&d)
            .expect("a dispatch for an exited task is accepted");
    };
    let outcome = drive(
        &mut bpf,
        Duration::from_secs(60),
        |b, t| {
            let mut seen = seen.borrow_mut();
            if !pids.contains(&t.pid) {
                if !t.is_exiting() {
                    fifo(b, t);
                }
                return;
            }
            if t.is_exiting() {
                // Its exit notice: dispatch its last record right now.
                seen.notices += 1;
                if let Some(prev) = seen.last.get(&t.pid).copied() {
                    b.dispatch_task(&DispatchedTask::new(&prev))
                        .expect("a dispatch for an exited task is accepted");
                    seen.stale += 1;
                }
                return;
            }
            seen.last.insert(t.pid, *t);
            fifo(b, t);
        },
        |b| {
            let mut seen = seen.borrow_mut();
            for w in workers.iter_mut() {
                if seen.after_reap.contains(&w.pid) {
                    continue;
                }
                let prev = seen.last.get(&w.pid).copied();
                match seen.zombie_at.get(&w.pid).copied() {
                    // Dead but not reaped: the pid still finds the task. Dispatch it as such,
                    // and leave it a zombie for a while so BPF sees the records meanwhile.
                    None if w.is_zombie() => {
                        seen.zombie_at.insert(w.pid, Instant::now());
                        if let Some(prev) = prev {
                            stale_pair(b, &prev);
                            seen.stale += 2;
                        }
                    }
                    // Then reap it (the pid is gone) and dispatch it once more.
                    Some(at) if at.elapsed() > Duration::from_millis(300) => {
                        assert!(w.exited().is_some(), "a zombie can be reaped");
                        seen.after_reap.push(w.pid);
                        if let Some(prev) = prev {
                            stale_pair(b, &prev);
                            seen.stale += 2;
                        }
                    }
                    _ => {}
                }
            }
            seen.after_reap.len() == workers.len()
        },
    )
    .and_then(|done| idle_for(&mut bpf, Duration::from_millis(500)).map(|_| done));
    for w in workers.iter_mut() {
        assert!(
            w.exited().is_some_and(|s| s.success()),
            "worker {} failed",
            w.pid
        );
    }
    let Seen { stale, notices, .. } = seen.into_inner();
    let s = finish(bpf, outcome, "after-exit");
    println!(
        "after-exit: {stale} dispatches for exited tasks, as zombies and once reaped ({notices} \
         exit notices seen)"
    );
    assert!(
        stale >= 12,
        "every worker was dispatched as a zombie and after it was reaped"
    );
    assert!(
        s.nr_cancel_dispatches >= stale,
        "every dispatch for an exited task must be cancelled: {stale} sent, {s}"
    );
}

/// The CPUs `pid` may run on.
fn affinity_of(pid: i32) -> Option<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t, filled by sched_getaffinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect(),
        )
    }
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn bad_input_cpu_outside_affinity_is_bounced() {
    require_guest();
    let n = nr_cpus();
    assert!(n >= 2, "this test needs 2 CPUs");
    let target = n - 1;
    let mut workers = vec![
        Worker::spawn(&forky_script(), Some(target)),
        Worker::spawn(&busy(2000), Some(target)),
    ];
    let mut bpf = BpfScheduler::init(5000, n as i32, false, false, false).expect("init");
    for w in &mut workers {
        w.release();
    }
    let mut misdirected = 0u64;
    let outcome = drive(
        &mut bpf,
        Duration::from_secs(60),
        |b, t| {
            if t.is_exiting() {
                return;
            }
            if t.nr_cpus_allowed == 1 && !t.is_kthread() {
                if let Some(cpus) = affinity_of(t.pid).filter(|c| c.len() == 1) {
                    // A CPU the task may not use, with the current affinity generation.
                    let wrong = (cpus[0] + 1) % n;
                    let d = DispatchedTask {
                        pid: t.pid,
                        cpu: wrong as i32,
                        cpumask_cnt: t.cpumask_cnt,
                        slice_ns: 0,
                    };
                    b.dispatch_task(&d)
                        .expect("an off-affinity CPU is accepted");
                    misdirected += 1;
                    return;
                }
            }
            fifo(b, t);
        },
        |_| all_exited_ok(&mut workers, "affinity"),
    )
    .and_then(|done| idle_for(&mut bpf, Duration::from_millis(300)).map(|_| done));
    let s = finish(bpf, outcome, "affinity");
    println!(
        "affinity: {misdirected} dispatches to a CPU outside the task's affinity, {} bounced",
        s.nr_bounce_dispatches
    );
    assert!(misdirected > 0, "no pinned task was queued");
    assert!(
        s.nr_bounce_dispatches * 2 >= misdirected,
        "off-affinity dispatches must be bounced: {misdirected} sent, {s}"
    );
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn bad_input_zero_and_huge_slices_are_clamped() {
    require_guest();
    let n = nr_cpus();
    assert!(n >= 2, "this test needs 2 CPUs");
    let target = n - 1;
    // This thread runs the scheduler: keep it off the CPU the pinned tasks fight over.
    common::set_affinity(0);
    // A spinner and a short task share one CPU; both get "infinite" slices.
    let mut spinner = Worker::spawn("while :; do :; done", Some(target));
    let mut short = Worker::spawn(&busy(1500), Some(target));
    let ours = [spinner.pid, short.pid];
    let mut bpf = BpfScheduler::init(5000, n as i32, false, false, false).expect("init");
    let (mut huge, mut zero) = (0u64, 0u64);
    let mut policy = |b: &mut BpfScheduler, t: &QueuedTask| {
        if t.is_exiting() {
            return;
        }
        if ours.contains(&t.pid) {
            let d = Dispatch {
                slice_ns: u64::MAX,
                ..Dispatch::new(t)
            };
            b.dispatch_task(&d).expect("slice u64::MAX is accepted");
            huge += 1;
        } else {
            let mut d = DispatchedTask::new(t);
            d.slice_ns = 0;
            if !t.idle_cpu() {
                d.cpu = RL_CPU_ANY;
            }
            b.dispatch_task(&d).expect("slice 0 is accepted");
            zero += 1;
        }
    };
    spinner.release();
    let warm = drive(&mut bpf, Duration::from_millis(500), &mut policy, |_| false);
    let released = Instant::now();
    short.release();
    let mut took = None;
    let outcome = warm.and_then(|_| {
        drive(&mut bpf, Duration::from_secs(20), &mut policy, |_| {
            if short.exited().is_some() {
                took.get_or_insert(released.elapsed());
                true
            } else {
                false
            }
        })
    });
    let s = finish(bpf, outcome, "slices");
    spinner.kill();
    println!(
        "slices: {huge} dispatches with slice u64::MAX, {zero} with 0; the short task sharing \
         a CPU with a spinner finished {took:.2?} after its release"
    );
    assert!(short.exited().is_some_and(|s| s.success()));
    let took = took.expect("finished");
    assert!(
        took < Duration::from_secs(4),
        "the short task waited {took:.2?} behind a u64::MAX slice: it was not clamped \
         (SLICE_MAX_NS is 1 s)"
    );
    assert!(huge > 0 && zero > 0, "{s}");
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn bad_input_vtime_wraparound_all_run() {
    require_guest();
    let n = nr_cpus();
    let mut hogs: Vec<Worker> = (0..2 * n)
        .map(|_| Worker::spawn("while :; do :; done", None))
        .collect();
    let mut marker = Worker::spawn(&busy(800), None);
    let hog_pids: Vec<i32> = hogs.iter().map(|w| w.pid).collect();
    let marker_pid = marker.pid;
    let mut bpf = BpfScheduler::init(5000, n as i32, false, false, false).expect("init");
    // A vtime clock about to wrap: the first dispatches are just below u64::MAX, then small.
    let mut clock = u64::MAX - 5;
    let mut marker_first = None;
    let (mut before_wrap, mut after_wrap) = (0u64, 0u64);
    let mut policy = |b: &mut BpfScheduler, t: &QueuedTask, released: bool| {
        if t.is_exiting() {
            return;
        }
        if !hog_pids.contains(&t.pid) && t.pid != marker_pid {
            fifo(b, t);
            return;
        }
        let vtime = if t.pid == marker_pid && released && marker_first.is_none() {
            // Its first run after the release gets a vtime from before the wrap.
            marker_first = Some(u64::MAX - 5);
            u64::MAX - 5
        } else {
            let v = clock;
            clock = clock.wrapping_add(1);
            if clock == 0 {
                clock = 1; // 0 means FIFO
            }
            v
        };
        if vtime > u64::MAX / 2 {
            before_wrap += 1;
        } else {
            after_wrap += 1;
        }
        let d = Dispatch {
            cpu: RL_CPU_ANY,
            vtime,
            ..Dispatch::new(t)
        };
        b.dispatch_task(&d).expect("a vtime dispatch is accepted");
    };
    for h in &mut hogs {
        h.release();
    }
    let warm = drive(
        &mut bpf,
        Duration::from_millis(500),
        |b, t| policy(b, t, false),
        |_| false,
    );
    marker.release();
    let released = Instant::now();
    let mut took = None;
    let outcome = warm.and_then(|_| {
        drive(
            &mut bpf,
            Duration::from_secs(20),
            |b, t| policy(b, t, true),
            |_| {
                if marker.exited().is_some() {
                    took.get_or_insert(released.elapsed());
                    true
                } else {
                    false
                }
            },
        )
    });
    let s = finish(bpf, outcome, "vtime");
    for h in hogs {
        h.kill();
    }
    println!(
        "vtime: {before_wrap} dispatches with a vtime before the wrap, {after_wrap} after; the \
         marker (first vtime u64::MAX-5) finished {took:.2?} after its release, behind {} hogs",
        hog_pids.len()
    );
    assert!(marker.exited().is_some_and(|s| s.success()));
    assert!(before_wrap > 0 && after_wrap > 0, "the clock wrapped: {s}");
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn bad_input_init_while_another_scheduler_is_attached() {
    require_guest();
    let kmsg = Kmsg::mark();
    let sched = SchedProc::start("scx-fifo", &["--stats-interval", "0"]);
    for attempt in 0..2 {
        match BpfScheduler::init(5000, nr_cpus() as i32, false, false, false) {
            Err(Error::AlreadyAttached(who)) => {
                println!("attached: init #{attempt} refused: {who}");
                assert!(who.contains("scx_fifo"), "names the other scheduler: {who}");
            }
            Err(e) => panic!("init while scx-fifo is attached: expected AlreadyAttached, got {e}"),
            Ok(_) => panic!("init succeeded while scx-fifo is attached"),
        }
    }
    assert!(matches!(
        BpfScheduler::builder().name("other").build(),
        Err(Error::AlreadyAttached(_))
    ));
    thread::sleep(Duration::from_millis(500));
    assert_eq!(read_state().unwrap(), "enabled", "scx-fifo still attached");
    assert!(
        ops_name().starts_with("scx_fifo_"),
        "and still the one attached: {}",
        ops_name()
    );
    assert_never_disabled(&kmsg, "attached");
    let (status, lines, _) = sched.stop();
    assert!(status.success(), "scx-fifo exited with {status}");
    let exit = lines
        .iter()
        .find(|l| l.contains("exit:"))
        .expect("exit line");
    assert!(exit.contains("unregistered from user space"), "{exit}");
    // Nothing was left behind by the refused attempts: this process can attach now.
    let mut bpf = BpfScheduler::init(5000, nr_cpus() as i32, false, false, false)
        .expect("init once scx-fifo is gone");
    let outcome = idle_for(&mut bpf, Duration::from_millis(800));
    finish(bpf, outcome, "attached");
}

// ---------------------------------------------------------------------------------------------
// 5. Restart: CPU hotplug
// ---------------------------------------------------------------------------------------------

const CPU1_ONLINE: &str = "/sys/devices/system/cpu/cpu1/online";

/// Puts cpu1 back online when dropped, so a failure leaves 2 CPUs for the next test.
struct Cpu1Online;

impl Drop for Cpu1Online {
    fn drop(&mut self) {
        if std::fs::read_to_string(CPU1_ONLINE).is_ok_and(|s| s.trim() == "0") {
            let _ = std::fs::write(CPU1_ONLINE, "1");
        }
    }
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn restart_on_cpu_hotplug() {
    require_guest();
    assert!(
        Path::new(CPU1_ONLINE).exists(),
        "CPU hotplug is not available in this guest: {CPU1_ONLINE} does not exist (a kernel \
         without CONFIG_HOTPLUG_CPU, or only one CPU), so the restart on hotplug cannot be \
         tested"
    );
    assert_eq!(
        std::fs::read_to_string(CPU1_ONLINE).unwrap().trim(),
        "1",
        "cpu1 should be online at the start"
    );
    let kmsg = Kmsg::mark();
    let sched = SchedProc::start("scx-fifo", &["--stats-interval", "0"]);
    let _restore = Cpu1Online;
    const RESTART: &str = "scx-fifo: the kernel asked for a restart";
    for (i, (what, value)) in [("offline", "0"), ("online", "1")].into_iter().enumerate() {
        let t0 = Instant::now();
        std::fs::write(CPU1_ONLINE, value)
            .unwrap_or_else(|e| panic!("taking cpu1 {what}: write {value} to {CPU1_ONLINE}: {e}"));
        let wrote = t0.elapsed();
        let restarted = wait_until(Duration::from_secs(20), Duration::from_millis(10), || {
            count(&sched.lines(), RESTART) > i
        });
        let asked = t0.elapsed();
        assert!(
            restarted,
            "cpu1 {what}: scx-fifo never said the kernel asked for a restart: {:#?}",
            sched.lines()
        );
        let reattached = wait_until(Duration::from_secs(20), Duration::from_millis(10), || {
            count(&sched.lines(), "scx-fifo: attached") > i + 1
                && read_state().is_ok_and(|s| s == "enabled")
        });
        assert!(
            reattached,
            "cpu1 {what}: scx-fifo did not re-attach within 20 s (state {:?}): {:#?}",
            read_state(),
            sched.lines()
        );
        println!(
            "restart: cpu1 {what}: write took {wrote:.2?}, restart asked after {asked:.2?}, \
             enabled again after {:.2?}, ops {:?}",
            t0.elapsed(),
            ops_name()
        );
        assert!(ops_name().starts_with("scx_fifo_"), "{}", ops_name());
    }
    let lines = sched.lines();
    let exits: Vec<&String> = lines.iter().filter(|l| l.contains("exit:")).collect();
    println!("restart: exits so far {exits:#?}");
    assert!(
        exits.len() >= 2 && exits[..2].iter().all(|l| l.contains("UnregisteredKernel")),
        "each hotplug ended one attachment with a kernel unregistration: {exits:#?}"
    );
    // The re-attached scheduler works.
    mixed_workload(Duration::from_secs(5));
    assert_eq!(read_state().unwrap(), "enabled");
    let (status, lines, _) = sched.stop();
    assert!(status.success(), "scx-fifo exited with {status}");
    let last = lines.iter().rev().find(|l| l.contains("exit:")).unwrap();
    assert!(last.contains("unregistered from user space"), "{last}");
    assert_no_stall(&kmsg, "restart");
}

/// A ping-pong pair and two CPU hogs in this process, until `stop` is set. The pair counts its
/// round trips in `pingpongs`.
fn pingpong_and_hogs(
    stop: &Arc<AtomicBool>,
    pingpongs: &Arc<std::sync::atomic::AtomicU64>,
) -> Vec<thread::JoinHandle<()>> {
    use std::io::{Read, Write};
    let mut threads = Vec::new();
    for _ in 0..2 {
        let stop = stop.clone();
        threads.push(thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..10_000 {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
        }));
    }
    let (stop, count) = (stop.clone(), pingpongs.clone());
    threads.push(thread::spawn(move || {
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let echo = thread::spawn(move || {
            let mut buf = [0u8; 1];
            while b.read_exact(&mut buf).is_ok() && buf[0] != 0 {
                b.write_all(&buf).unwrap();
            }
        });
        let mut buf = [0u8; 1];
        while !stop.load(Ordering::Relaxed) {
            a.write_all(&[1]).unwrap();
            a.read_exact(&mut buf).unwrap();
            count.fetch_add(1, Ordering::Relaxed);
        }
        a.write_all(&[0]).unwrap();
        echo.join().unwrap();
    }));
    threads
}

/// The kernel's exit lands at any point of the scheduling loop; under load the loop is mostly
/// awake when it does. The run helper must treat it as a restart every time, never as an
/// error that ends the process.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn restart_on_cpu_hotplug_ten_times_under_load() {
    require_guest();
    assert!(
        Path::new(CPU1_ONLINE).exists(),
        "no CPU hotplug in this guest ({CPU1_ONLINE})"
    );
    let kmsg = Kmsg::mark();
    let sched = SchedProc::start("scx-fifo", &["--stats-interval", "0"]);
    let _restore = Cpu1Online;
    let stop = Arc::new(AtomicBool::new(false));
    let pingpongs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = pingpong_and_hogs(&stop, &pingpongs);
    const RESTART: &str = "scx-fifo: the kernel asked for a restart";
    let mut reattach_ms = Vec::new();
    // The phases of each restart (ms from the hotplug write): the write returns, scx-fifo
    // reports the kernel's request, it reports the new attachment, sched_ext is enabled.
    let mut phases: [Vec<f64>; 4] = Default::default();
    for i in 0..10 {
        let value = if i % 2 == 0 { "0" } else { "1" };
        let t0 = Instant::now();
        std::fs::write(CPU1_ONLINE, value)
            .unwrap_or_else(|e| panic!("write {value} to {CPU1_ONLINE}: {e}"));
        let written = t0.elapsed();
        let (mut asked, mut attached) = (None, None);
        let reattached = wait_until(Duration::from_secs(20), Duration::from_millis(5), || {
            let lines = sched.lines();
            if count(&lines, RESTART) > i {
                asked.get_or_insert(t0.elapsed());
            }
            if count(&lines, "scx-fifo: attached") > i + 1 {
                attached.get_or_insert(t0.elapsed());
            }
            asked.is_some() && attached.is_some() && read_state().is_ok_and(|s| s == "enabled")
        });
        let took = t0.elapsed();
        for (phase, at) in phases
            .iter_mut()
            .zip([Some(written), asked, attached, Some(took)])
        {
            phase.push(at.unwrap_or(took).as_secs_f64() * 1e3);
        }
        assert!(
            reattached,
            "hotplug {} of 10 (cpu1 online={value}): scx-fifo did not restart within 20 s \
             (state {:?}, process alive: {}): {:#?}",
            i + 1,
            read_state(),
            alive(sched.pid()),
            sched.lines()
        );
        reattach_ms.push(took.as_secs_f64() * 1e3);
        // Let the load run on the new attachment before the next hotplug.
        thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    println!(
        "restart x10 under load: hotplug write to enabled again {} ms; {} ping-pongs",
        distribution(&reattach_ms),
        pingpongs.load(Ordering::Relaxed)
    );
    for (name, phase) in [
        "hotplug write returned",
        "restart request reported",
        "attached again",
        "enabled again",
    ]
    .iter()
    .zip(&phases)
    {
        println!(
            "restart x10 under load: {name} after {} ms",
            distribution(phase)
        );
    }
    let (status, lines, _) = sched.stop();
    assert!(
        status.success(),
        "scx-fifo exited with {status}: {lines:#?}"
    );
    assert_eq!(count(&lines, RESTART), 10, "{lines:#?}");
    assert_no_stall(&kmsg, "restart x10");
}

// ---------------------------------------------------------------------------------------------
// 6. Soak
// ---------------------------------------------------------------------------------------------

const SOAK_ENV: &str = "SCX_VM_SOAK_SECS";

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn soak_mixed_stress_under_scx_fifo() {
    require_guest();
    let secs: u64 = std::env::var(SOAK_ENV)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{SOAK_ENV}={v:?}")))
        .unwrap_or(60);
    let kmsg = Kmsg::mark();
    let sched = SchedProc::start("scx-fifo", &["--stats-interval", "10"]);
    let probe = Probe::start();
    let stop = Arc::new(AtomicBool::new(false));
    let watch = {
        let stop = stop.clone();
        // Every 100 ms from a real-time thread: an ejection cannot hide from it.
        spawn_rt(move || {
            let (mut checks, mut bad, mut first_bad) = (0u64, 0u64, None);
            let start = now_ns();
            let mut next = start;
            while !stop.load(Ordering::Relaxed) {
                if fast_state() != FastState::Enabled {
                    bad += 1;
                    first_bad.get_or_insert(now_ns() - start);
                }
                checks += 1;
                next += 100 * MS;
                sleep_until_ns(next);
            }
            (checks, bad, first_bad)
        })
    };
    let soak = Soak::start(&["--secs", &secs.to_string()]);
    let (soak_status, soak_lines) = soak.wait(Duration::from_secs(secs + 120));
    stop.store(true, Ordering::Relaxed);
    let (checks, bad, first_bad) = watch.join().expect("the RT watcher panicked");
    let probe_max = probe.stop();
    // Idle for a moment so that nothing is in flight when the counters are read.
    thread::sleep(Duration::from_millis(2500));
    let state = read_state().unwrap_or_default();
    assert_never_disabled(&kmsg, "soak");
    let (status, lines, _) = sched.stop();
    let summary = soak_lines
        .iter()
        .find(|l| l.starts_with("vm-soak: done"))
        .cloned()
        .unwrap_or_default();
    println!(
        "soak: secs={secs} state_checks={checks} not_enabled={bad} (first at {:?} ms) \
         probe_max_ms={:.1}; {summary}",
        first_bad.map(ms),
        ms(probe_max)
    );
    assert_no_stall(&kmsg, "soak");
    assert_eq!(
        bad, 0,
        "sched_ext left `enabled` during the soak ({bad} of {checks} checks)"
    );
    assert_eq!(state, "enabled");
    assert!(
        soak_status.is_some_and(|s| s.success()),
        "vm-soak failed ({soak_status:?}): {soak_lines:#?}"
    );
    assert!(
        checks * 100 >= secs * 1000 * 8 / 10,
        "the state was checked only {checks} times in {secs} s"
    );
    assert!(status.success(), "scx-fifo exited with {status}");
    let c = counters(&lines, "final");
    println!("soak: final counters {c:?}");
    assert_accounting(&c);
}

// ---------------------------------------------------------------------------------------------

/// Run 64 threads (100 us of work, 2 ms of sleep) under a policy that holds every queued
/// task and decides them all at once every 30 ms, so that up to 64 tasks wait on user space
/// together; `capacity` is the stall guard's (None: the default). Checks that every thread
/// kept running and returns the counters.
fn held_in_batches(capacity: Option<u32>) -> Stats {
    let what = format!("stall guard capacity {capacity:?}");
    let mut builder = BpfScheduler::builder()
        .name("stall_guard_capacity_test")
        .stall_timeout_ms(1000);
    if let Some(entries) = capacity {
        builder = builder.stall_guard_capacity(entries);
    }
    let mut bpf = builder.build().expect("init");
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (stop, started) = (stop.clone(), started.clone());
            thread::spawn(move || {
                started.fetch_add(1, Ordering::Relaxed);
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    while t0.elapsed() < Duration::from_micros(100) {
                        std::hint::spin_loop();
                    }
                    thread::sleep(Duration::from_millis(2));
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    // Plain FIFO until every thread runs: starting threads contend on locks in the process,
    // and under the holding policy each hand-off of such a lock costs a whole batch.
    let all_started = drive(
        &mut bpf,
        Duration::from_secs(10),
        |b, t| {
            if !t.is_exiting() {
                fifo(b, t)
            }
        },
        |_| started.load(Ordering::Relaxed) == 64,
    );
    assert!(
        matches!(all_started, Ok(true)),
        "{what}: the 64 threads did not start: {all_started:?}"
    );
    let held = RefCell::new(Vec::<QueuedTask>::new());
    let mut last = Instant::now();
    let mut most_held = 0;
    let outcome = drive(
        &mut bpf,
        Duration::from_secs(2),
        |_, t| {
            if !t.is_exiting() {
                held.borrow_mut().push(*t);
            }
        },
        |b| {
            let mut held = held.borrow_mut();
            most_held = most_held.max(held.len());
            if last.elapsed() >= Duration::from_millis(30) {
                for t in held.drain(..) {
                    fifo(b, &t);
                }
                last = Instant::now();
            }
            false
        },
    );
    for t in held.borrow_mut().drain(..) {
        fifo(&mut bpf, &t);
    }
    stop.store(true, Ordering::Relaxed);
    let outcome = outcome.and_then(|_| idle_for(&mut bpf, Duration::from_millis(300)));
    let s = finish(bpf, outcome, &what);
    let rounds: Vec<u64> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    println!(
        "{what}: up to {most_held} tasks held at once; pending_lost {}; rounds per thread \
         min {:?} max {:?}",
        s.nr_pending_lost,
        rounds.iter().min(),
        rounds.iter().max()
    );
    assert!(
        most_held > 16,
        "{what}: only {most_held} tasks ever waited at once"
    );
    assert!(
        rounds.iter().all(|&r| r >= 10),
        "{what}: a thread barely ran: {rounds:?}"
    );
    s
}

/// More tasks waiting on user space than the stall guard remembers: the ones it can no
/// longer see are counted (nr_pending_lost), and still run when the policy decides. With
/// the default capacity none is lost.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn stall_guard_counts_the_waiting_tasks_it_can_no_longer_see() {
    require_guest();
    let small = held_in_batches(Some(16));
    assert!(
        small.nr_pending_lost > 0,
        "64 tasks waited with room for 16 entries, but none was counted lost: {small}"
    );
    let default = held_in_batches(None);
    assert_eq!(
        default.nr_pending_lost, 0,
        "the default capacity lost entries: {default}"
    );
}

/// The task-storage map of the scheduler this process loaded last (`task_ctx_stor`).
fn task_ctx_map() -> libbpf_rs::MapHandle {
    let id = libbpf_rs::query::MapInfoIter::default()
        .filter(|m| m.ty == libbpf_rs::MapType::TaskStorage && m.name == "task_ctx_stor")
        .map(|m| m.id)
        .max()
        .expect("no task_ctx_stor map is loaded");
    libbpf_rs::MapHandle::from_map_id(id).expect("opening task_ctx_stor by id")
}

/// A task without a task context (as when `init_task` could not allocate one) is run by BPF
/// itself and counted in `nr_untracked_dispatches`, never as ring congestion. The test takes
/// a sleeping shell's context away by deleting its entry in the task-storage map (the key
/// is a pidfd) while the shell is stopped, so that no decision is outstanding for it, then
/// lets it go on and schedules for a second.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn a_task_without_a_task_context_is_counted_untracked_not_congested() {
    use libbpf_rs::MapCore;
    require_guest();
    let mut sleeper = common::gated_shell("while :; do sleep 0.005; done", None);
    let mut bpf = BpfScheduler::builder().build().expect("init");
    common::release(&mut sleeper);
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, sleeper.id() as libc::pid_t, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    kill(sleeper.id(), libc::SIGSTOP).expect("SIGSTOP the sleeper");
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(5), || {
            stat_state(sleeper.id()) == Some('T')
        }),
        "the sleeper never showed as stopped"
    );
    let deleted = task_ctx_map().delete(&(pidfd as i32).to_ne_bytes());
    kill(sleeper.id(), libc::SIGCONT).expect("SIGCONT the sleeper");
    // SAFETY: pidfd is an fd this test opened and no longer uses.
    unsafe { libc::close(pidfd as i32) };
    deleted.expect("deleting the sleeper's task context");
    let outcome = idle_for(&mut bpf, Duration::from_secs(1));
    drop(sleeper.stop(libc::SIGKILL, Duration::from_secs(5)));
    // `finish` also checks that nothing counted as congestion.
    let s = finish(bpf, outcome, "untracked task");
    assert!(
        s.nr_untracked_dispatches > 0,
        "the sleeper without a context woke for a second but was never counted untracked: {s}"
    );
}
