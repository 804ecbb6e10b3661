//! The framework end to end on a real sched_ext kernel: scx-fifo and the classic FIFO example attach,
//! carry a mixed workload, account for every task, and detach cleanly; `get_cpu_pid` and
//! partial mode do what they say.

mod common;
mod common_rel;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_accounting, counters, gated_shell, mixed_workload, release, SchedProc};
use scx_userland::{BpfScheduler, Dispatch, DispatchedTask, Error, Stats, RL_CPU_ANY};
use vm_tests::{read_state, ChildGuard};

const WORK: Duration = Duration::from_secs(20);

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn attach_then_sigint_detaches() {
    let sched = SchedProc::start("scx-fifo", &["--stats-interval", "0"]);
    assert_eq!(read_state().unwrap(), "enabled");
    let ops = std::fs::read_to_string("/sys/kernel/sched_ext/root/ops").unwrap();
    // The kernel-visible name carries the version, as sched_ext schedulers' names do.
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        ops.trim().starts_with(&format!("scx_fifo_{version}"))
            && ops.trim().ends_with("_x86_64_linux"),
        "ops name {ops:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (status, lines, _) = sched.stop();
    assert!(
        status.success(),
        "scx-fifo exited with {status}: {lines:#?}"
    );
    let exit = lines
        .iter()
        .find(|l| l.contains("exit:"))
        .expect("an exit line");
    assert!(exit.contains("unregistered from user space"), "{exit}");
    assert_eq!(read_state().unwrap(), "disabled");
}

fn mixed_work_under(name: &str, args: &[&str]) {
    let sched = SchedProc::start(name, args);
    mixed_workload(WORK);
    // Idle for a moment: the scheduler must report nothing left queued.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        read_state().unwrap(),
        "enabled",
        "{name} was ejected during the workload"
    );
    let before = sched.lines();
    let (status, lines, _) = sched.stop();
    assert!(status.success(), "{name} exited with {status}");
    if args.contains(&"1") {
        let idle = counters(&before, "stats");
        assert_eq!(idle["queued"], 0, "nr_queued back to 0 when idle: {idle:?}");
    }
    let c = counters(&lines, "final");
    println!("{name} final counters: {c:?}");
    assert_accounting(&c);
    // The pinned task moved mid-run and its new affinity was honoured without an ejection:
    // any dispatch made for the old CPU was bounced, never dropped (accounting above).
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn scx_fifo_runs_mixed_work() {
    mixed_work_under("scx-fifo", &["--stats-interval", "1"]);
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn seed_example_runs_mixed_work() {
    mixed_work_under("seed_fifo", &[]);
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn vruntime_example_runs_mixed_work() {
    mixed_work_under("vruntime", &[]);
}

/// Run a FIFO loop in this process for `dur`, calling `probe` after every pass.
fn fifo_for(bpf: &mut BpfScheduler, dur: Duration, mut probe: impl FnMut(&mut BpfScheduler)) {
    let end = Instant::now() + dur;
    while Instant::now() < end {
        while let Some(task) = bpf.dequeue_task().expect("dequeue") {
            if task.cpu >= 0 {
                let mut d = DispatchedTask::new(&task);
                if !task.idle_cpu() {
                    d.cpu = RL_CPU_ANY;
                }
                bpf.dispatch_task(&d).expect("dispatch");
            }
        }
        probe(bpf);
        bpf.wait_for_tasks(Duration::from_millis(5)).expect("wait");
    }
}

/// A busy loop pinned to `cpu`, spinning once [`release`]d.
fn spinner_on(cpu: usize) -> ChildGuard {
    gated_shell("while :; do :; done", Some(cpu))
}

/// Short sleeps in a loop: a stream of wake-ups.
const SLEEPER: &str = "i=0; while [ $i -lt 400 ]; do sleep 0.005; i=$((i+1)); done";

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn get_cpu_pid_tracks_a_pinned_task() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(cpus >= 2, "this test needs 2 CPUs");
    let target = cpus - 1;
    // This thread runs the scheduler: keep it off the CPU under observation.
    common::set_affinity(0);
    let mut spinner = spinner_on(target);
    let mut bpf = BpfScheduler::init(5000, cpus as i32, false, false, false).expect("init");

    // Nothing of ours runs on the target CPU yet: it is idle most of the time.
    let (mut idle, mut samples) = (0, 0);
    fifo_for(&mut bpf, Duration::from_millis(800), |b| {
        samples += 1;
        idle += (b.get_cpu_pid(target as i32) == 0) as u32;
    });
    println!("cpu {target} idle in {idle}/{samples} samples before the spinner");
    assert!(
        samples > 0 && idle * 2 > samples,
        "cpu {target} should read 0 while idle"
    );

    release(&mut spinner);
    let pid = spinner.id();
    let ran_before = ran_ns(pid);
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() } as u32;
    let (mut hits, mut samples, mut not_me) = (0, 0, 0);
    let mut seen = std::collections::HashMap::<u32, u32>::new();
    fifo_for(&mut bpf, Duration::from_secs(3), |b| {
        samples += 1;
        let on_target = b.get_cpu_pid(target as i32);
        hits += (on_target == pid) as u32;
        *seen.entry(on_target).or_default() += 1;
        // This thread is running on cpu 0 as it reads, so cpu 0 must show it.
        not_me += (b.get_cpu_pid(0) != me) as u32;
    });
    let ran_ms = (ran_ns(pid) - ran_before) / 1_000_000;
    println!(
        "cpu {target} showed spinner {pid} in {hits}/{samples} samples (pids seen: {seen:?}); \
         it ran {ran_ms} ms of 3 s; cpu 0 showed another pid than this thread ({me}) {not_me} times"
    );
    assert_eq!(not_me, 0, "cpu 0 must show the thread that reads it");
    // Samples follow queued-task events, which come when the spinner was just taken off
    // its CPU: they under-count it. Its run time says whether it owned the CPU.
    assert!(
        ran_ms > 1500,
        "the busy pinned task should own cpu {target}"
    );
    assert!(
        hits >= 20,
        "cpu {target} should show the spinner that owns it"
    );
    assert_eq!(bpf.get_cpu_pid(-1), 0);
    assert_eq!(bpf.get_cpu_pid(9999), 0);

    let report = bpf.shutdown_and_report().expect("report");
    assert_eq!(
        report.kind,
        scx_userland::ExitKind::Unregistered,
        "{report}"
    );
    // Only now wait for the spinner to die: its exit no longer needs our scheduler.
    drop(spinner.stop(libc::SIGKILL, Duration::from_secs(5)));
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn partial_mode_takes_only_sched_ext_tasks() {
    let mut bpf = BpfScheduler::builder()
        .partial(true)
        .build()
        .expect("init partial");
    let busy = "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.2; i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done";

    let mut ext = Command::new("/bin/sh");
    ext.args(["-c", busy]);
    // SAFETY: only a syscall between fork and exec.
    unsafe {
        ext.pre_exec(|| {
            let param = libc::sched_param { sched_priority: 0 };
            // SCHED_EXT is policy 7.
            if libc::sched_setscheduler(0, 7, &param) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut ext = ChildGuard::spawn(&mut ext).expect("spawn the SCHED_EXT task");
    let mut other = ChildGuard::spawn(Command::new("/bin/sh").args(["-c", busy])).expect("spawn");
    let (ext_pid, other_pid) = (ext.id() as i32, other.id() as i32);

    let mut seen = std::collections::HashSet::new();
    let end = Instant::now() + Duration::from_secs(20);
    let mut exited = (false, false);
    while Instant::now() < end && !(exited.0 && exited.1) {
        while let Some(task) = bpf.dequeue_task().expect("dequeue") {
            if task.cpu >= 0 {
                seen.insert(task.pid);
                bpf.dispatch_task(&DispatchedTask::new(&task))
                    .expect("dispatch");
            }
        }
        bpf.wait_for_tasks(Duration::from_millis(5)).expect("wait");
        exited.0 |= ext.child().try_wait().unwrap().is_some();
        exited.1 |= other.child().try_wait().unwrap().is_some();
    }
    assert!(exited.0 && exited.1, "both tasks should finish");
    assert!(
        seen.contains(&ext_pid),
        "the SCHED_EXT task went through user space"
    );
    assert!(
        !seen.contains(&other_pid),
        "a SCHED_NORMAL task reached user space in partial mode"
    );
    let report = bpf.shutdown_and_report().unwrap();
    assert_eq!(
        report.kind,
        scx_userland::ExitKind::Unregistered,
        "{report}"
    );
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn second_init_and_bad_dispatches_are_typed_errors() {
    let mut bpf = BpfScheduler::init(5000, 2, false, false, false).expect("init");
    assert!(matches!(
        BpfScheduler::init(5000, 2, false, false, false),
        Err(Error::AlreadyAttached(_))
    ));
    let bad = |pid, cpu| DispatchedTask {
        pid,
        cpu,
        cpumask_cnt: 0,
        slice_ns: 0,
    };
    assert!(matches!(
        bpf.dispatch_task(&bad(1, -5)),
        Err(Error::InvalidCpu { .. })
    ));
    assert!(matches!(
        bpf.dispatch_task(&bad(1, 9999)),
        Err(Error::InvalidCpu { .. })
    ));
    assert!(matches!(
        bpf.dispatch_task(&bad(0, 0)),
        Err(Error::InvalidPid(0))
    ));
    // Accepted and handled in BPF: a pid that does not exist, and one never queued (pid 1).
    bpf.dispatch_task(&bad(4_000_000, 0)).unwrap();
    bpf.dispatch_task(&bad(1, RL_CPU_ANY)).unwrap();
    fifo_for(&mut bpf, Duration::from_secs(1), |_| {});
    let report = bpf.shutdown_and_report().unwrap();
    assert_eq!(
        report.kind,
        scx_userland::ExitKind::Unregistered,
        "{report}"
    );
    assert!(report.stats.nr_cancel_dispatches >= 2, "{}", report.stats);
}

/// Run `sleeper` (released) under `bpf` for `dur` with a FIFO loop; returns the final stats.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn batched_decisions_travel_packed_and_each_is_carried_out() {
    // Every pass hands all its decisions over in one dispatch_tasks call, each real one
    // between two for a pid that does not exist: several records to a ring sample (up to
    // DISPATCH_BATCH_MAX), every one decoded at its own offset. A misread record would
    // leave a task undispatched (stall guard, watchdog) or the counts wrong.
    let mut sleepers: Vec<_> = (0..4).map(|_| gated_shell(SLEEPER, None)).collect();
    let mut bpf = BpfScheduler::builder().build().expect("init");
    for s in &mut sleepers {
        release(s);
    }
    let bogus = |n| Dispatch {
        pid: 4_000_000 + n,
        cpu: RL_CPU_ANY,
        ..Dispatch::default()
    };
    // Three samples' worth (16 + 16 + 8) to begin with.
    let mut batch: Vec<_> = (0..40).map(bogus).collect();
    bpf.dispatch_tasks(&batch).expect("dispatch 40");
    let (mut real, mut sent, mut longest) = (0u64, batch.len() as u64, batch.len());
    let end = Instant::now() + Duration::from_secs(2);
    // After 2 s, go on only until BPF has drained every record sent (the last ones may
    // still wait in the ring), for at most 2 s more.
    while Instant::now() < end
        || (bpf.stats().nr_dispatch_records != sent
            && Instant::now() < end + Duration::from_secs(2))
    {
        batch.clear();
        while let Some(task) = bpf.dequeue_task().expect("dequeue") {
            if task.cpu >= 0 {
                let mut d = Dispatch::new(&task);
                if !task.idle_cpu() {
                    d.cpu = RL_CPU_ANY;
                }
                batch.extend([bogus(1), d, bogus(2)]);
                real += 1;
            }
        }
        bpf.dispatch_tasks(&batch).expect("dispatch a batch");
        sent += batch.len() as u64;
        longest = longest.max(batch.len());
        bpf.wait_for_tasks(Duration::from_millis(5)).expect("wait");
    }
    let report = bpf.shutdown_and_report().expect("report");
    for mut s in sleepers {
        drop(s.stop(libc::SIGKILL, Duration::from_secs(5)));
    }
    let st = report.stats;
    println!("{real} tasks, {sent} records, longest batch {longest}: {st}");
    assert_eq!(
        report.kind,
        scx_userland::ExitKind::Unregistered,
        "{report}"
    );
    assert!(
        longest > scx_userland::DISPATCH_BATCH_MAX,
        "never a full sample: {longest}"
    );
    assert_eq!(st.nr_dispatch_records, sent, "{st}");
    assert_eq!(st.nr_failed_dispatches, 0, "{st}");
    assert_eq!(
        st.nr_user_dispatches + st.nr_cancel_dispatches,
        sent,
        "{st}"
    );
    assert!(st.nr_cancel_dispatches >= 2 * real, "{st}");
    assert!(st.nr_user_dispatches > 50, "{st}");
}

fn stats_after(mut bpf: BpfScheduler, sleeper: &mut ChildGuard, dur: Duration) -> Stats {
    release(sleeper);
    fifo_for(&mut bpf, dur, |_| ());
    let report = bpf.shutdown_and_report().expect("report");
    assert_eq!(
        report.kind,
        scx_userland::ExitKind::Unregistered,
        "{report}"
    );
    report.stats
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn direct_idle_dispatches_wakeups_in_bpf_only_when_asked() {
    // On: wake-ups that find an idle CPU never reach user space.
    let mut sleeper = gated_shell(SLEEPER, None);
    let bpf = BpfScheduler::builder()
        .direct_idle(true)
        .build()
        .expect("init");
    let on = stats_after(bpf, &mut sleeper, Duration::from_millis(1500));
    println!("direct_idle on: {on}");
    drop(sleeper.stop(libc::SIGKILL, Duration::from_secs(5)));
    assert!(
        on.nr_direct_dispatches > 50,
        "idle wake-ups dispatched in BPF: {on}"
    );

    // Off (the default): every one of them comes to user space.
    let mut sleeper = gated_shell(SLEEPER, None);
    let bpf = BpfScheduler::builder().build().expect("init");
    let off = stats_after(bpf, &mut sleeper, Duration::from_millis(1500));
    println!("direct_idle off: {off}");
    drop(sleeper.stop(libc::SIGKILL, Duration::from_secs(5)));
    assert_eq!(off.nr_direct_dispatches, 0, "{off}");
    assert!(off.nr_user_dispatches > 50, "{off}");
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn task_preempted_by_the_scheduler_is_put_back() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    // Every CPU busy, and a stream of wake-ups: each time the scheduler wakes up to decide,
    // it preempts a spinner, which BPF puts back at the head of the queue itself.
    let mut spinners: Vec<_> = (0..cpus).map(spinner_on).collect();
    let mut sleeper = gated_shell(SLEEPER, None);
    let bpf = BpfScheduler::builder().build().expect("init");
    for s in &mut spinners {
        release(s);
    }
    let stats = stats_after(bpf, &mut sleeper, Duration::from_secs(2));
    println!("with {cpus} spinners: {stats}");
    for mut s in spinners {
        drop(s.stop(libc::SIGKILL, Duration::from_secs(5)));
    }
    drop(sleeper.stop(libc::SIGKILL, Duration::from_secs(5)));
    assert!(stats.nr_displaced_dispatches > 0, "{stats}");
    assert!(stats.nr_user_dispatches > 0, "{stats}");
    assert_eq!(stats.nr_failed_dispatches, 0, "{stats}");
}

/// A task woken while every CPU is busy runs as soon as the scheduler has decided, ahead of
/// the task the scheduler's own wake-up displaced (which then finishes its slice): the CPU the
/// scheduler leaves carries out the decisions it just wrote before resuming anyone.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn a_woken_task_runs_before_the_task_the_scheduler_displaced() {
    // Long slices: a decision left waiting behind a displaced spinner would wait for milliseconds.
    const SLICE_US: u64 = 20_000;
    let cpus = std::thread::available_parallelism().unwrap().get();
    let mut spinners: Vec<_> = (0..cpus).map(spinner_on).collect();
    let mut bpf = BpfScheduler::builder()
        .slice_us(SLICE_US)
        .build()
        .expect("init");
    for s in &mut spinners {
        release(s);
    }
    // A thread of ours that sleeps 3 ms at a time (not privileged: it goes through the policy).
    let sleeper = common_rel::SleeperThread::start(Duration::from_millis(3), None);
    let delays = common_rel::wakeup_delays(&mut bpf, &sleeper, Duration::from_secs(2), |_| {});
    drop(sleeper);
    let report = bpf.shutdown_and_report().expect("report");
    for mut s in spinners {
        drop(s.stop(libc::SIGKILL, Duration::from_secs(5)));
    }
    let st = report.stats;
    let median = delays.get(delays.len() / 2).copied().unwrap_or(u64::MAX);
    println!(
        "woken beside {cpus} spinners: {} decisions to run, median {} us, slice {SLICE_US} us; {st}",
        delays.len(),
        median / 1000
    );
    assert_eq!(
        report.kind,
        scx_userland::ExitKind::Unregistered,
        "{report}"
    );
    assert!(delays.len() >= 50, "too few wake-ups to judge: {st}");
    assert!(st.nr_displaced_dispatches > 0, "{st}");
    // Waiting behind the displaced spinner costs the rest of its slice (10 ms on average).
    assert!(
        median < SLICE_US * 1000 / 8,
        "woken tasks waited {} us (median) for the CPU the scheduler left: {st}",
        median / 1000
    );
}

/// Nanoseconds `pid` has run (first field of /proc/PID/schedstat).
fn ran_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
    stat.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Four spinners per CPU whose dispatches `busy` shapes, all in the FIFO queue, which is
/// then never empty, and a last spinner whose dispatches `waiting` shapes. Returns how
/// many ns the last one ran in 3 s; the scheduler must not have been ejected.
fn waiting_spinner_ran(busy: impl Fn(&mut Dispatch), waiting: impl Fn(&mut Dispatch)) -> u64 {
    let cpus = std::thread::available_parallelism().unwrap().get();
    let mut others: Vec<_> = (0..4 * cpus)
        .map(|_| gated_shell("while :; do :; done", None))
        .collect();
    let mut victim = gated_shell("while :; do :; done", None);
    let victim_pid = victim.id() as i32;
    let mut bpf = BpfScheduler::builder()
        .slice_us(5000)
        .build()
        .expect("init");
    for s in others.iter_mut().chain(std::iter::once(&mut victim)) {
        release(s);
    }
    let before = ran_ns(victim.id());
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        while let Some(task) = bpf.dequeue_task().expect("dequeue") {
            if task.is_exiting() {
                continue;
            }
            let mut d = Dispatch::new(&task);
            d.cpu = RL_CPU_ANY;
            if task.pid == victim_pid {
                waiting(&mut d);
            } else {
                busy(&mut d);
            }
            bpf.dispatch_task(&d).expect("dispatch");
        }
        bpf.wait_for_tasks(Duration::from_millis(5)).expect("wait");
    }
    let ran = ran_ns(victim.id()) - before;
    let report = bpf.shutdown_and_report().expect("report");
    for mut s in others {
        drop(s.stop(libc::SIGKILL, Duration::from_secs(5)));
    }
    drop(victim.stop(libc::SIGKILL, Duration::from_secs(5)));
    println!(
        "waiting spinner ran {} ms of 3 s; {}",
        ran / 1_000_000,
        report.stats
    );
    assert_eq!(
        report.kind,
        scx_userland::ExitKind::Unregistered,
        "{report}"
    );
    ran
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn vtime_queue_is_served_behind_a_busy_fifo_queue() {
    // Strictly FIFO queue first, the vtime-queued spinner would wait forever (and trip the
    // kernel's watchdog).
    let turn = std::cell::Cell::new(0);
    let ran = waiting_spinner_ran(
        |_| (),
        |d| {
            turn.set(turn.get() + 1);
            d.vtime = turn.get();
        },
    );
    assert!(ran > 30_000_000, "the vtime queue starved: ran {ran} ns");
}

/// `Dispatch::by_vtime(task, 0)` joins the vtime-ordered queue: there, 0 is a vtime like any
/// other (a plain `vtime: 0` would mean the FIFO queue).
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn vtime_zero_joins_the_vtime_queue_when_asked() {
    let mut sleeper = gated_shell(SLEEPER, None);
    let mut bpf = BpfScheduler::builder().build().expect("init");
    release(&mut sleeper);
    let (mut at_zero, mut fifo) = (0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        while let Some(task) = bpf.dequeue_task().expect("dequeue") {
            if task.is_exiting() {
                continue;
            }
            // Every other decision at vtime 0, the rest FIFO.
            let d = if (at_zero + fifo) % 2 == 0 {
                at_zero += 1;
                Dispatch::by_vtime(&task, 0)
            } else {
                fifo += 1;
                Dispatch::fifo(&task)
            };
            bpf.dispatch_task(&d).expect("dispatch");
        }
        bpf.wait_for_tasks(Duration::from_millis(5)).expect("wait");
    }
    let report = bpf.shutdown_and_report().expect("report");
    drop(sleeper.stop(libc::SIGKILL, Duration::from_secs(5)));
    let st = report.stats;
    println!("{at_zero} decisions at vtime 0, {fifo} FIFO: {st}");
    assert!(at_zero > 50, "too few decisions to judge: {st}");
    // Each vtime-0 decision BPF carried out went to the vtime queue, and no FIFO one did
    // (some decisions may be cancelled, the task having moved on, and the last few may still
    // be in the ring when the scheduler detaches: BPF never reads those).
    let unread = (at_zero + fifo).saturating_sub(st.nr_dispatch_records);
    assert!(
        st.nr_vtime_dispatches <= at_zero
            && st.nr_vtime_dispatches + st.nr_cancel_dispatches + unread >= at_zero,
        "{at_zero} vtime-0 decisions but {} vtime dispatches: {st}",
        st.nr_vtime_dispatches
    );
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn head_insertions_cannot_starve_the_fifo_tail() {
    // Every busy spinner goes back to the head each time: strictly honoured, the one at the
    // tail would never run.
    let ran = waiting_spinner_ran(|d| d.head = true, |_| ());
    assert!(ran > 30_000_000, "the FIFO tail starved: ran {ran} ns");
}

/// The statistics of a running scheduler, read twice: through `scx_userland::stats::monitor`
/// (the `scx_stats` client) and with a raw request on the socket, in the line-based JSON
/// protocol every `scx_stats` client speaks.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn statistics_are_served_the_sched_ext_way() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    let sched = SchedProc::start("scx-fifo", &["--stats", "0"]);
    let work = std::thread::spawn(|| mixed_workload(Duration::from_secs(3)));
    std::thread::sleep(Duration::from_secs(1));

    // 1. The scx_stats client, through the library (what `scx-fifo --monitor` uses).
    let mut readings = Vec::new();
    scx_userland::stats::monitor(None, Duration::from_millis(200), |m| {
        readings.push(m.clone());
        readings.len() < 3
    })
    .expect("reading the statistics with the scx_stats client");
    println!("client readings: {:?}", readings.last());
    assert!(
        readings[2].nr_user_dispatches + readings[2].nr_direct_dispatches
            > readings[0].nr_user_dispatches + readings[0].nr_direct_dispatches,
        "the counters move between readings: {readings:#?}"
    );
    assert!(
        readings[2].policy.contains_key("wakeups"),
        "the policy's own counters: {:?}",
        readings[2].policy
    );

    // 2. A raw request, as any client would send it.
    let mut stream = UnixStream::connect(scx_userland::stats::STATS_SOCKET).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"{\"req\":\"stats\",\"args\":{\"target\":\"top\"}}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .expect("a response line");
    println!("raw response: {}", line.trim());
    assert!(
        line.starts_with("{") && line.contains("\"errno\":0"),
        "{line}"
    );
    for field in ["nr_user_dispatches", "nr_running", "nr_stalls", "wakeups"] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    // And the field descriptions.
    stream.write_all(b"{\"req\":\"stats_meta\"}\n").unwrap();
    let mut meta = String::new();
    BufReader::new(&stream)
        .read_line(&mut meta)
        .expect("a stats_meta line");
    assert!(
        meta.contains("Dispatches redirected to a CPU the task may use"),
        "{meta}"
    );

    // 3. `--monitor` of the binary itself prints a reading.
    let out = Command::new(vm_tests::guest_bin("scx-fifo"))
        .args(["--monitor", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(out.id() as i32, libc::SIGINT) };
    let out = out.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("--monitor printed: {text}");
    assert!(
        text.contains("scx-fifo: run ") && text.contains("wakeups"),
        "{text}"
    );

    work.join().unwrap();
    let (status, lines, _) = sched.stop();
    assert!(
        status.success(),
        "scx-fifo exited with {status}: {lines:#?}"
    );
    // The server is gone with the scheduler.
    assert!(UnixStream::connect(scx_userland::stats::STATS_SOCKET).is_err());
}

/// Everything in the kernel's trace buffer written by the BPF component (`bpf_printk`), and
/// the buffer emptied.
fn take_bpf_trace() -> Vec<String> {
    const TRACE: &str = "/sys/kernel/tracing/trace";
    let text = std::fs::read_to_string(TRACE).expect("read the trace buffer (tracefs)");
    // Opening it for writing with truncation empties it.
    std::fs::write(TRACE, b"").expect("empty the trace buffer");
    text.lines()
        .filter(|l| l.contains("scx-userland: "))
        .map(str::to_string)
        .collect()
}

/// `debug(true)` traces decisions, bounces and cancels to the kernel's trace buffer;
/// without it, nothing is written there.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn debug_traces_decisions_bounces_and_cancels_only_when_asked() {
    take_bpf_trace();
    for debug in [false, true] {
        let mut sleeper = gated_shell(SLEEPER, None);
        let mut bpf = BpfScheduler::builder().debug(debug).build().expect("init");
        release(&mut sleeper);
        let mut bounced = false;
        fifo_for(&mut bpf, Duration::from_secs(1), |b| {
            // One decision for a task that does not exist: cancelled.
            let _ = b.dispatch_task(&Dispatch {
                pid: 4_000_001,
                cpu: RL_CPU_ANY,
                ..Dispatch::default()
            });
        });
        // And one with a stale affinity generation: bounced.
        let end = Instant::now() + Duration::from_secs(2);
        while !bounced && Instant::now() < end {
            while let Some(task) = bpf.dequeue_task().expect("dequeue") {
                if task.is_exiting() {
                    continue;
                }
                let mut d = Dispatch::new(&task);
                if !bounced && d.cpu >= 0 {
                    d.cpumask_cnt = d.cpumask_cnt.wrapping_add(1);
                    bounced = true;
                }
                bpf.dispatch_task(&d).expect("dispatch");
            }
            bpf.wait_for_tasks(Duration::from_millis(5)).expect("wait");
        }
        let report = bpf.shutdown_and_report().expect("report");
        drop(sleeper.stop(libc::SIGKILL, Duration::from_secs(5)));
        let lines = take_bpf_trace();
        let count = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
        let (dispatches, cancels, bounces) = (
            count("scx-userland: dispatch pid"),
            count("scx-userland: cancel pid 4000001: no such task"),
            count("scx-userland: bounce pid"),
        );
        println!(
            "debug={debug}: {} trace lines: {dispatches} dispatch, {cancels} cancel, {bounces} \
             bounce; {}",
            lines.len(),
            report.stats
        );
        if debug {
            assert!(bounced, "no task to bounce came");
            assert!(
                dispatches > 10 && cancels > 0 && bounces > 0,
                "debug on: {:?}",
                &lines[..lines.len().min(20)]
            );
        } else {
            assert!(
                lines.is_empty(),
                "debug off, yet: {:?}",
                &lines[..lines.len().min(20)]
            );
        }
    }
}
