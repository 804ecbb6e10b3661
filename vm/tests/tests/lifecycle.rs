//! Who BPF privileges, what happens when a higher sched class takes a CPU, what a queued task
//! tells the policy, and which kfunc spellings the kernel gave us.

mod common;
mod common_rel;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{counters, set_affinity, SchedProc};
use common_rel::{make_current_thread_rt, Kmsg};
use scx_userland::{BpfScheduler, DispatchedTask, QueuedTask, RL_CPU_ANY};
use vm_tests::require_guest;

/// The calling thread's id.
fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// CPU time of thread `tid` of this process so far (ns), from schedstat.
fn thread_runtime_ns(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time of process `pid` (ns), from schedstat.
fn process_runtime_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// FIFO every task for `dur`, calling `seen` with each one first.
fn fifo_for(bpf: &mut BpfScheduler, dur: Duration, mut seen: impl FnMut(&QueuedTask)) {
    let end = Instant::now() + dur;
    while Instant::now() < end {
        while let Some(t) = bpf.dequeue_task().expect("dequeue") {
            seen(&t);
            if t.is_exiting() {
                continue;
            }
            let mut d = DispatchedTask::new(&t);
            if !t.idle_cpu() {
                d.cpu = RL_CPU_ANY;
            }
            bpf.dispatch_task(&d).expect("dispatch");
        }
        bpf.wait_for_tasks(Duration::from_millis(5))
            .expect("wait_for_tasks");
    }
}

/// A CPU-bound thread of the scheduler's own process is scheduled by the policy like any
/// task, not run ahead of everyone (only the scheduling thread is); a task sharing its CPU
/// keeps its share. `privilege_thread` makes it privileged on request.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn only_the_scheduling_thread_is_privileged() {
    require_guest();
    // A spinner process on CPU 1, spawned before the scheduler (see common::gated_shell).
    let mut other = common_rel::Worker::spawn("while :; do :; done", Some(1));
    // A CPU-bound helper thread of this process, on CPU 1 too.
    let stop = Arc::new(AtomicBool::new(false));
    let helper_tid = Arc::new(AtomicU64::new(0));
    let helper = {
        let (stop, tid) = (stop.clone(), helper_tid.clone());
        thread::spawn(move || {
            set_affinity(1);
            tid.store(gettid() as u64, Ordering::SeqCst);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        })
    };
    while helper_tid.load(Ordering::SeqCst) == 0 {
        thread::yield_now();
    }
    let helper_tid = helper_tid.load(Ordering::SeqCst) as i32;
    set_affinity(0);
    let mut bpf = BpfScheduler::builder()
        .name("privilege_test")
        .build()
        .expect("attach");
    other.release();

    let (h0, o0, t0) = (
        thread_runtime_ns(helper_tid),
        process_runtime_ns(other.pid as u32),
        Instant::now(),
    );
    let mut helper_queued = 0;
    fifo_for(&mut bpf, Duration::from_secs(2), |t| {
        if t.pid == helper_tid {
            helper_queued += 1;
        }
    });
    let wall = t0.elapsed().as_nanos() as f64;
    let helper_share = (thread_runtime_ns(helper_tid) - h0) as f64 / wall;
    let other_share = (process_runtime_ns(other.pid as u32) - o0) as f64 / wall;
    println!(
        "privilege: helper thread queued {helper_queued} times; CPU 1 shares over 2 s: \
         helper {helper_share:.2}, other process {other_share:.2}"
    );

    // Privileged on request: from now on BPF runs it without asking the policy.
    bpf.privilege_thread(helper_tid).expect("privilege_thread");
    assert!(matches!(
        bpf.privilege_thread(999_999),
        Err(scx_userland::Error::NotOurThread(999_999))
    ));
    thread::sleep(Duration::from_millis(50));
    let mut queued_after = 0;
    fifo_for(&mut bpf, Duration::from_secs(1), |t| {
        if t.pid == helper_tid {
            queued_after += 1;
        }
    });
    stop.store(true, Ordering::Relaxed);
    let report = bpf.shutdown_and_report().expect("report");
    helper.join().unwrap();
    other.kill();
    println!("privilege: after privilege_thread, queued {queued_after} times; {report}");

    assert!(
        helper_queued > 0,
        "the helper thread never reached the policy: every thread of the process is privileged"
    );
    assert!(
        other_share > 0.25,
        "the other process got {other_share:.2} of CPU 1 beside the helper thread \
         (helper {helper_share:.2})"
    );
    assert!(
        queued_after <= 1,
        "a privileged thread still went to the policy {queued_after} times"
    );
}

/// A real-time task takes CPU 1 for 3 s while scx-fifo has work queued there: the tasks that
/// waited on CPU 1 are placed again (cpu_release), so every one keeps running, and the
/// kernel reports no stall.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn a_cpu_taken_by_a_realtime_task_gives_its_waiting_tasks_back() {
    require_guest();
    let kmsg = Kmsg::mark();
    let sched = SchedProc::start("scx-fifo", &["--stats", "0"]);
    let stop = Arc::new(AtomicBool::new(false));
    // Workers that wake every millisecond and run a little: some always wait on CPU 1.
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut last = Instant::now();
                let mut worst = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let spin = Instant::now();
                    while spin.elapsed() < Duration::from_micros(300) {
                        std::hint::spin_loop();
                    }
                    thread::sleep(Duration::from_millis(1));
                    worst = worst.max(last.elapsed());
                    last = Instant::now();
                }
                worst
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    // The real-time hog on CPU 1 for 3 s.
    let hog = thread::spawn(|| {
        set_affinity(1);
        make_current_thread_rt(50).expect("SCHED_FIFO");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            std::hint::spin_loop();
        }
    });
    hog.join().unwrap();
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let worst: Vec<Duration> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let (status, lines, _) = sched.stop();
    let c = counters(&lines, "final");
    println!(
        "rt hog: worst gap per worker {worst:?}; reenqueued {:?}",
        c.get("reenqueued")
    );
    assert!(status.success(), "scx-fifo exited with {status}");
    assert!(
        kmsg.stall_lines().is_empty(),
        "stall: {:?}",
        kmsg.stall_lines()
    );
    assert!(
        c["reenqueued"] > 0,
        "no task was placed again when CPU 1 was taken: {c:?}"
    );
    let max = worst.iter().max().copied().unwrap_or_default();
    assert!(
        max < Duration::from_millis(500),
        "a worker waited {max:?} behind the real-time task"
    );
}

/// What a queued task says: the CPU it last ran on and that CPU's LLC, and, at a wake-up,
/// how long it ran before it slept (its exec_runtime is 0 then: it has not run since).
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn queued_tasks_tell_where_they_ran_and_how_long_they_ran_before_sleeping() {
    require_guest();
    // Runs ~3 ms, sleeps 2 ms, again.
    let mut worker = common_rel::Worker::spawn(
        "while :; do i=0; while [ $i -lt 400 ]; do i=$((i+1)); done; sleep 0.002; done",
        None,
    );
    let mut bpf = BpfScheduler::builder()
        .name("queued_fields_test")
        .build()
        .expect("attach");
    assert_eq!(
        bpf.kfunc_generation(),
        2,
        "the kernel offers scx_bpf_dsq_insert___v2 and friends: the newest spellings are used"
    );
    worker.release();
    let topo = bpf.topology().clone();
    let mut wakeups = Vec::new();
    fifo_for(&mut bpf, Duration::from_secs(2), |t| {
        if !t.is_exiting() && t.is_wakeup() && t.prev_cpu >= 0 {
            wakeups.push(*t);
        }
    });
    let report = bpf.shutdown_and_report().expect("report");
    worker.kill();
    println!(
        "queued fields: {} wake-ups with a previous CPU; {report}",
        wakeups.len()
    );
    assert!(
        wakeups.len() > 10,
        "too few wake-ups seen: {}",
        wakeups.len()
    );
    for t in &wakeups {
        assert_eq!(t.exec_runtime, 0, "exec_runtime at a wake-up: {t:?}");
        assert!((t.prev_cpu as usize) < topo.nr_cpus(), "{t:?}");
        assert_eq!(
            t.prev_llc,
            topo.llc_of(t.prev_cpu).map_or(-1, |l| l as i32),
            "{t:?}"
        );
    }
    let bursts: Vec<u64> = wakeups
        .iter()
        .filter(|t| t.comm_str() == "sh")
        .map(|t| t.last_burst_ns)
        .collect();
    let busy = bursts.iter().filter(|&&b| b > 500_000).count();
    println!(
        "queued fields: sh wake-ups {}, bursts > 0.5 ms: {busy}, e.g. {:?}",
        bursts.len(),
        &bursts[..bursts.len().min(8)]
    );
    assert!(
        busy * 2 > bursts.len(),
        "a task that runs ~3 ms between sleeps should show bursts > 0.5 ms: {bursts:?}"
    );
}

/// Once the kernel has ended the scheduler, every scheduling call says so through `Ok`
/// values and `exited()`, never an error: a loop written with `?` reaches its exit report
/// (and its restart) whenever the exit lands.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn a_kernel_exit_is_reported_through_ok_values_not_errors() {
    require_guest();
    const CPU1: &str = "/sys/devices/system/cpu/cpu1/online";
    let mut bpf = BpfScheduler::builder()
        .name("exit_semantics_test")
        .build()
        .expect("attach");
    fifo_for(&mut bpf, Duration::from_millis(300), |_| {});
    // CPU hotplug makes the kernel unregister the scheduler (and ask for a restart).
    std::fs::write(CPU1, "0").expect("taking cpu1 offline");
    let t0 = Instant::now();
    while !bpf.exited() && t0.elapsed() < Duration::from_secs(10) {
        // Keep scheduling with `?`-style calls until the exit lands.
        while let Some(t) = bpf.dequeue_task().expect("dequeue before the exit") {
            if !t.is_exiting() {
                let mut d = DispatchedTask::new(&t);
                d.cpu = RL_CPU_ANY;
                bpf.dispatch_task(&d).expect("dispatch before the exit");
            }
        }
        bpf.update_tasks(Some(0), Some(0))
            .expect("update_tasks before the exit");
    }
    std::fs::write(CPU1, "1").expect("putting cpu1 back online");
    assert!(bpf.exited(), "the hotplug did not end the scheduler");
    // Drain what is left, then every call is Ok.
    let mut left = 0;
    while let Some(_t) = bpf.dequeue_task().expect("dequeue after the exit is Ok") {
        left += 1;
    }
    assert_eq!(bpf.dequeue_task().expect("dequeue after the exit"), None);
    let mut batch = Vec::new();
    assert_eq!(
        bpf.dequeue_tasks(&mut batch, 64)
            .expect("dequeue_tasks after the exit"),
        0
    );
    bpf.update_tasks(Some(0), Some(0))
        .expect("update_tasks after the exit");
    bpf.notify_complete(0)
        .expect("notify_complete after the exit");
    assert!(!bpf
        .wait_for_tasks(Duration::from_millis(50))
        .expect("wait_for_tasks after the exit"));
    let d = DispatchedTask {
        pid: 1,
        cpu: RL_CPU_ANY,
        cpumask_cnt: 0,
        slice_ns: 0,
    };
    bpf.dispatch_task(&d)
        .expect("dispatch after the exit is dropped, not an error");
    let report = bpf.shutdown_and_report().expect("report");
    println!("exit semantics: {left} records drained after the exit; {report}");
    assert!(
        report.should_restart(),
        "a hotplug asks for a restart: {report}"
    );
}
