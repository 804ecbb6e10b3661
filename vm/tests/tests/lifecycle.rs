//! Who BPF privileges, what happens when a higher sched class takes a CPU, what a queued task
//! tells the policy, and which kfunc spellings the kernel gave us.

mod common;
mod common_rel;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::set_affinity;
use common_rel::{make_current_thread_rt, Kmsg};
use scx_userland::{BpfScheduler, Dispatch, DispatchedTask, QueuedTask, RL_CPU_ANY};
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

/// A real-time task takes CPU 1 for 3 s while the policy keeps sending six workers there:
/// those waiting in its local queue when it is taken come back to the policy (cpu_release
/// re-enqueues them, flagged `is_reenqueued()`), and the decisions made for CPU 1 while the
/// real-time task holds it go to any CPU instead, so every worker keeps running and the
/// kernel reports no stall. Without either, they would wait there up to the whole 3 s.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn a_cpu_taken_by_a_realtime_task_gives_its_waiting_tasks_back() {
    require_guest();
    let kmsg = Kmsg::mark();
    let mut bpf = BpfScheduler::builder()
        .name("rt_takes_cpu_test")
        .build()
        .expect("init");
    let stop = Arc::new(AtomicBool::new(false));
    let (tids_tx, tids_rx) = std::sync::mpsc::channel();
    // Workers that wake every millisecond and run 300 us: more than one CPU can take.
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let stop = stop.clone();
            let tids_tx = tids_tx.clone();
            thread::spawn(move || {
                tids_tx.send(gettid()).unwrap();
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
    let worker_tids: Vec<i32> = (0..6).map(|_| tids_rx.recv().unwrap()).collect();
    let hog_started = Arc::new(AtomicBool::new(false));
    let hog_done = Arc::new(AtomicBool::new(false));
    let hog = {
        let (started, done) = (hog_started.clone(), hog_done.clone());
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(500));
            set_affinity(1);
            make_current_thread_rt(50).expect("SCHED_FIFO");
            started.store(true, Ordering::Relaxed);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(3) {
                std::hint::spin_loop();
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    let (mut to_cpu1, mut came_back) = (0u64, 0u64);
    let mut after_done = None;
    // The scheduling loop's own worst gap (and its CPU around it) tells a stuck scheduler
    // from workers stranded behind the hog.
    let t0 = Instant::now();
    let (mut last_iter, mut loop_gap) = (Instant::now(), (Duration::ZERO, Duration::ZERO, 0, 0));
    let mut cpu_before = 0;
    let mut runnable = vec![(None::<Duration>, (), 0u64); worker_tids.len()];
    let mut longest_wait = (Duration::ZERO, Duration::ZERO, String::new());
    loop {
        // SAFETY: sched_getcpu has no preconditions.
        let cpu_now = unsafe { libc::sched_getcpu() };
        let gap = last_iter.elapsed();
        if gap > loop_gap.0 {
            loop_gap = (gap, t0.elapsed(), cpu_before, cpu_now);
        }
        while let Some(t) = bpf.dequeue_task().expect("dequeue") {
            if t.is_exiting() {
                continue;
            }
            if t.is_reenqueued() {
                came_back += 1;
            }
            let d = if worker_tids.contains(&t.pid) {
                to_cpu1 += 1;
                Dispatch::on_cpu(&t, 1)
            } else if t.idle_cpu() {
                Dispatch::new(&t)
            } else {
                Dispatch::fifo(&t)
            };
            bpf.dispatch_task(&d).expect("dispatch");
        }
        // Where a worker waits when it waits long: runnable ('R') but not running, per /proc.
        for (i, tid) in worker_tids.iter().enumerate() {
            let stat =
                std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit_once(") ")
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            let (state, cpu) = (fields.first().copied(), fields.get(36).copied());
            let run_ns = thread_runtime_ns(*tid);
            if state == Some("R") && run_ns == runnable[i].2 {
                let since = *runnable[i].0.get_or_insert(t0.elapsed());
                let waited = t0.elapsed() - since;
                if waited > longest_wait.0 {
                    longest_wait = (waited, since, cpu.unwrap_or("?").to_string());
                }
            } else {
                runnable[i].0 = None;
            }
            runnable[i].2 = run_ns;
        }
        // SAFETY: sched_getcpu has no preconditions.
        cpu_before = unsafe { libc::sched_getcpu() };
        last_iter = Instant::now();
        bpf.wait_for_tasks(Duration::from_millis(5)).expect("wait");
        if hog_done.load(Ordering::Relaxed) {
            let at = *after_done.get_or_insert_with(Instant::now);
            if at.elapsed() > Duration::from_millis(300) {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    hog.join().unwrap();
    assert!(hog_started.load(Ordering::Relaxed));
    let report = bpf.shutdown_and_report().expect("report");
    let worst: Vec<Duration> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    println!(
        "scheduling loop: worst gap {:?} ending at {:?}, on CPU {} before, {} after",
        loop_gap.0, loop_gap.1, loop_gap.2, loop_gap.3
    );
    println!(
        "longest runnable wait without running: {:?} from {:?}, on CPU {}",
        longest_wait.0, longest_wait.1, longest_wait.2
    );
    println!(
        "rt hog: {to_cpu1} dispatches to CPU 1, {came_back} came back re-enqueued; worst gap \
         per worker {worst:?}; {}",
        report.stats
    );
    assert_eq!(
        report.kind,
        scx_userland::ExitKind::Unregistered,
        "{report}"
    );
    assert!(
        kmsg.stall_lines().is_empty(),
        "stall: {:?}",
        kmsg.stall_lines()
    );
    assert!(
        report.stats.nr_reenqueued > 0,
        "no task was placed again when CPU 1 was taken: {}",
        report.stats
    );
    let max = worst.iter().max().copied().unwrap_or_default();
    // The hog makes itself real-time while it runs on CPU 1: no ops.cpu_release then; BPF's
    // ops.disable marks the CPU taken and asks for its local queue to be re-enqueued. Measured
    // worst gaps: 7 to 37 ms on 7.3 in most runs. On 7.2 (and in some 7.3 runs) the workers
    // already queued on CPU 1 wait 0.95 s, once 2.05 s: traced, the re-enqueue asked from
    // ops.disable (the ___v2 kfunc defers it) takes effect only when the kernel lends CPU 1
    // back to sched_ext, in its once-a-second window. The bound is that window, not the 3 s
    // hold: nobody waits for the whole hold.
    assert!(
        max < Duration::from_millis(2600),
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

/// Spinner threads that may only use CPU 0, each noting the longest it went without running
/// while measuring, and a thread on CPU 1 that sleeps 1 ms at a time: its wake-ups make
/// CPU 1 pass through `ops.dispatch` and carry out the decisions made for CPU 0.
struct Crowd {
    kmsg: Kmsg,
    measure: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    spinners: Vec<(i32, thread::JoinHandle<u64>)>,
    sleeper: thread::JoinHandle<()>,
}

impl Crowd {
    fn start(nr_spinners: usize) -> Crowd {
        let (measure, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let spinners = (0..nr_spinners)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                let (measure, stop) = (measure.clone(), stop.clone());
                let handle = thread::spawn(move || {
                    set_affinity(0);
                    tx.send(gettid()).expect("send the thread id");
                    let (mut last, mut worst) = (common_rel::now_ns(), 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let now = common_rel::now_ns();
                        if measure.load(Ordering::Relaxed) {
                            worst = worst.max(now - last);
                        }
                        last = now;
                    }
                    worst
                });
                (rx.recv().expect("the spinner's thread id"), handle)
            })
            .collect();
        let sleeper = {
            let stop = stop.clone();
            thread::spawn(move || {
                set_affinity(1);
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(1));
                }
            })
        };
        Crowd {
            kmsg: Kmsg::mark(),
            measure,
            stop,
            spinners,
            sleeper,
        }
    }

    /// Thread id of spinner `i`.
    fn tid(&self, i: usize) -> i32 {
        self.spinners[i].0
    }

    /// Start noting gaps (attaching itself may hold tasks up for a while under emulation).
    fn measure(&self) {
        self.measure.store(true, Ordering::Relaxed);
    }

    /// Stop noting gaps, detach `bpf` (asserting the kernel reported no stall and did not
    /// eject it), and return each spinner's longest gap (ms), with the counters.
    fn finish(self, bpf: BpfScheduler) -> (Vec<f64>, scx_userland::Stats) {
        self.measure.store(false, Ordering::Relaxed);
        let stats = bpf.stats();
        let report = bpf.shutdown_and_report().expect("report");
        self.stop.store(true, Ordering::Relaxed);
        let worst = self
            .spinners
            .into_iter()
            .map(|(_, h)| common_rel::ms(h.join().unwrap()))
            .collect();
        self.sleeper.join().unwrap();
        println!("{report}");
        let stalls = self.kmsg.stall_lines();
        assert!(stalls.is_empty(), "{stalls:?}");
        assert!(
            !report.kind.is_error(),
            "the kernel ejected the scheduler: {report}"
        );
        (worst, stats)
    }
}

/// A policy that sends every task back to the CPU it ran on, with eight spinners that may only
/// use CPU 0. The scheduler runs on CPU 0 first, where each of its wake-ups with work
/// displaces the spinner running there into BPF's resume queue for CPU 0, which only CPU 0
/// serves, when its local queue runs dry. Then the scheduler may use CPU 1 too and wakes up
/// there (CPU 1 has only a thread that sleeps 1 ms at a time): CPU 1 now carries out the
/// decisions for CPU 0, whose local queue never runs dry. A spinner left in the resume queue
/// would wait there until the kernel's watchdog ejected the scheduler; BPF's timer serves a
/// resume queue left waiting, so every spinner keeps running.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn a_displaced_task_never_waits_behind_a_busy_local_queue() {
    require_guest();
    let crowd = Crowd::start(8);
    set_affinity(0);
    let mut bpf = BpfScheduler::builder()
        .name("resume_starve_test")
        .timeout_ms(10_000)
        .build()
        .expect("attach");
    crowd.measure();

    let t0 = Instant::now();
    let (mut displaced_on_cpu0, mut seen) = (0, 0);
    while t0.elapsed() < Duration::from_secs(5) && !bpf.exited() {
        // This wake-up displaced a spinner on CPU 0 (it waits in the resume queue now).
        let displaced = bpf.stats().nr_displaced_dispatches;
        let just_displaced = displaced > seen;
        seen = displaced;
        while let Some(t) = bpf.dequeue_task().expect("dequeue") {
            if !t.is_exiting() {
                // Back where it ran.
                bpf.dispatch_task(&DispatchedTask::new(&t))
                    .expect("dispatch");
            }
        }
        if displaced_on_cpu0 == 0 && just_displaced && t0.elapsed() > Duration::from_millis(500) {
            // CPU 0 stays allowed: no migration, and CPU 0's queues are left as they are.
            displaced_on_cpu0 = displaced;
            common::pin_this_thread(&[0, 1]);
        }
        bpf.wait_for_tasks(Duration::from_millis(5))
            .expect("wait_for_tasks");
    }
    let (worst, stats) = crowd.finish(bpf);
    println!(
        "busy local queue: longest waits of the spinners on CPU 0 {worst:.1?} ms; \
         {displaced_on_cpu0} displaced in the first 0.5 s, {} in all, {} rescued from a \
         resume queue",
        stats.nr_displaced_dispatches, stats.nr_resume_rescues
    );
    assert!(displaced_on_cpu0 > 0, "no spinner was displaced on CPU 0");
    let longest = worst.iter().cloned().fold(0.0, f64::max);
    assert!(
        longest < 750.0,
        "a spinner went {longest:.1} ms without running (all: {worst:.1?} ms)"
    );
}

/// A policy that sends every task back to the CPU it ran on, except one spinner, which it
/// sends to any CPU (the shared queue), though it may only use CPU 0. Seven spinners share
/// CPU 0; the scheduler and a thread that sleeps 1 ms at a time are on CPU 1, which carries
/// out the decisions for CPU 0, so CPU 0's local queue never runs dry and CPU 0 never takes
/// from the shared queue. BPF's timer moves a task that waited there for the lesser of 1 s
/// and a quarter of `timeout_ms` to the head of its CPU's local queue: the spinner keeps
/// running, and the kernel's watchdog never ejects the scheduler.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn a_task_no_cpu_takes_from_the_shared_queue_is_moved_to_its_cpu() {
    require_guest();
    // Spinner 0 is sent to any CPU, the others back to CPU 0.
    let crowd = Crowd::start(7);
    let odd = crowd.tid(0);
    set_affinity(1);
    let mut bpf = BpfScheduler::builder()
        .name("shared_starve_test")
        .timeout_ms(8_000)
        .build()
        .expect("attach");
    crowd.measure();

    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(6) && !bpf.exited() {
        while let Some(t) = bpf.dequeue_task().expect("dequeue") {
            if !t.is_exiting() {
                let mut d = DispatchedTask::new(&t);
                if t.pid == odd {
                    d.cpu = RL_CPU_ANY;
                }
                bpf.dispatch_task(&d).expect("dispatch");
            }
        }
        bpf.wait_for_tasks(Duration::from_millis(5))
            .expect("wait_for_tasks");
    }
    let (worst, stats) = crowd.finish(bpf);
    let odd_worst = worst[0];
    println!(
        "shared queue: longest wait of the spinner sent to any CPU {odd_worst:.1} ms, of the \
         others {:.1?} ms; {} moved from a shared queue",
        &worst[1..],
        stats.nr_shared_rescues
    );
    // A move comes after 1 s in the queue (8 s / 4, at most 1 s), checked every 20 ms; a
    // move can be undone when a higher class takes CPU 0 (it goes through the policy again).
    assert!(
        odd_worst < 3000.0,
        "the spinner in the shared queue went {odd_worst:.1} ms without running"
    );
    assert!(stats.nr_shared_rescues > 0, "{stats}");
}
