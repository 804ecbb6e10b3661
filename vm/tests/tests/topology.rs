//! Tests that need a machine of a particular shape: `cargo xtask vm-test` boots them on their
//! own, with 4 CPUs in 2 sockets of 2 cores (QEMU `-smp 4,sockets=2,cores=2,threads=1`), each
//! socket a NUMA node with half the memory (see `SHAPED_TARGETS` in xtask/src/vm_test.rs).
//!
//! - the framework's `Topology` sees that machine, and so does the `llc` example;
//! - the `llc` example keeps wake-ups in the last-level cache they come from;
//! - the memory-management kernel threads are dispatched by BPF (and counted) unless
//!   `full_user`. This one runs here rather than in the main boot so that its memory pressure
//!   and sysctl changes touch no other test;
//! - a preempting dispatch makes room on an online CPU, never on an offline one (needs a CPU
//!   to take offline besides the scheduler's and two busy ones).

mod common;
mod common_rel;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{counters, SchedProc};
use scx_userland::Topology;
use vm_tests::require_guest;

/// What sysfs says about each CPU, printed so a failure shows the machine QEMU built.
fn dump_sysfs() {
    let read = |p: &str| {
        std::fs::read_to_string(p).map_or_else(|e| format!("<{e}>"), |s| s.trim().to_string())
    };
    for cpu in 0..4 {
        let d = format!("/sys/devices/system/cpu/cpu{cpu}");
        let mut caches = Vec::new();
        for i in 0..5 {
            let c = format!("{d}/cache/index{i}");
            if std::path::Path::new(&c).exists() {
                caches.push(format!(
                    "L{} {} shared {}",
                    read(&format!("{c}/level")),
                    read(&format!("{c}/type")),
                    read(&format!("{c}/shared_cpu_list"))
                ));
            }
        }
        println!(
            "sysfs cpu{cpu}: package {} core_id {} siblings {} caches [{}]",
            read(&format!("{d}/topology/physical_package_id")),
            read(&format!("{d}/topology/core_id")),
            read(&format!("{d}/topology/thread_siblings_list")),
            caches.join("; ")
        );
    }
    for node in 0..3 {
        let p = format!("/sys/devices/system/node/node{node}/cpulist");
        println!("sysfs node{node}: cpus {}", read(&p));
    }
}

/// The guest is 2 sockets x 2 cores, a NUMA node per socket, and `Topology` (which policies
/// use) and the `llc` example both see that: 4 CPUs, 4 cores without SMT siblings, 2
/// packages, 2 nodes, and 2 LLCs (QEMU gives each socket its own L3, which Linux reports as
/// shared by the socket's CPUs).
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn the_policy_sees_two_sockets_of_two_cores() {
    require_guest();
    dump_sysfs();
    let t = Topology::new().expect("reading the topology");
    let llcs: Vec<&[i32]> = (0..t.nr_llcs() as u32).map(|l| t.llc_cpus(l)).collect();
    println!(
        "topology: {} CPUs, {} cores, {} LLCs {llcs:?}, {} nodes",
        t.nr_online_cpus(),
        t.nr_cores(),
        t.nr_llcs(),
        t.nr_nodes()
    );
    assert_eq!(t.online_cpus(), &[0, 1, 2, 3]);
    assert_eq!(t.nr_cores(), 4, "threads=1: every CPU is a core");
    for cpu in 0..4 {
        assert_eq!(t.smt_siblings(cpu), &[cpu], "no SMT sibling");
        let info = t.cpu(cpu).unwrap();
        assert_eq!(info.package, cpu as u32 / 2, "CPU {cpu}'s socket");
        assert_eq!(info.node, cpu as u32 / 2, "CPU {cpu}'s NUMA node");
    }
    assert_eq!(t.nr_nodes(), 2);
    assert_eq!((t.node_cpus(0), t.node_cpus(1)), (&[0, 1][..], &[2, 3][..]));
    assert_eq!(llcs, [&[0, 1][..], &[2, 3][..]], "an L3 per socket");

    // The example reads the same machine.
    let sched = SchedProc::start("llc", &[]);
    let (status, lines, _) = sched.stop();
    assert!(status.success(), "llc exited with {status}");
    let seen = lines
        .iter()
        .find(|l| l.starts_with("llc: attached; topology:"))
        .unwrap_or_else(|| panic!("no topology line from llc: {lines:#?}"));
    assert!(
        seen.contains("4 CPUs, 4 cores, 2 LLCs, 2 nodes; LLC CPUs [0, 1] [2, 3]"),
        "{seen}"
    );
}

/// How one run's wake-ups landed: `(same LLC, all)`, from the workload's own view (the CPU it
/// was on before it slept, the CPU it is on after it woke up).
fn wakeup_locality(t: &Topology, dur: Duration) -> (u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, t) = (stop.clone(), t.clone());
            thread::spawn(move || {
                let (mut same, mut all) = (0u64, 0u64);
                // SAFETY: no preconditions.
                let cpu = || unsafe { libc::sched_getcpu() };
                while !stop.load(Ordering::Relaxed) {
                    // Work ~1 ms, sleep ~1 ms: the three workers keep about half the
                    // machine busy, so where a wake-up goes is a choice.
                    let spin = Instant::now();
                    while spin.elapsed() < Duration::from_millis(1) {
                        std::hint::spin_loop();
                    }
                    let before = cpu();
                    thread::sleep(Duration::from_millis(1));
                    let after = cpu();
                    all += 1;
                    if t.llc_of(before).is_some() && t.llc_of(before) == t.llc_of(after) {
                        same += 1;
                    }
                }
                (same, all)
            })
        })
        .collect();
    thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    workers
        .into_iter()
        .map(|w| w.join().unwrap())
        .fold((0, 0), |(s, a), (s1, a1)| (s + s1, a + a1))
}

/// The `llc` example keeps wake-ups in their LLC: the workload itself sees that most of its
/// wake-ups land in the LLC it slept in, and the policy's own counts agree. scx-fifo on the
/// same workload is printed for comparison.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn the_llc_example_keeps_wakeups_in_their_llc() {
    require_guest();
    let t = Topology::new().expect("reading the topology");
    assert_eq!(t.nr_llcs(), 2, "this test needs 2 LLCs");
    let dur = Duration::from_secs(3);

    let mut runs = BTreeMap::new();
    for name in ["scx-fifo", "llc"] {
        let args: &[&str] = if name == "scx-fifo" {
            &["--stats", "0"]
        } else {
            &[]
        };
        let sched = SchedProc::start(name, args);
        let (same, all) = wakeup_locality(&t, dur);
        let (status, lines, _) = sched.stop();
        assert!(status.success(), "{name} exited with {status}");
        println!(
            "{name}: {same} of {all} wake-ups in their LLC ({:.1} %)",
            100.0 * same as f64 / all.max(1) as f64
        );
        runs.insert(name, (same, all, lines));
    }
    let (same, all, lines) = &runs["llc"];
    let (fifo_same, fifo_all, _) = &runs["scx-fifo"];
    let share = *same as f64 / (*all).max(1) as f64;
    let fifo_share = *fifo_same as f64 / (*fifo_all).max(1) as f64;
    println!(
        "wake-ups in their LLC: llc {:.1} %, scx-fifo {:.1} % (ratio {:.2})",
        100.0 * share,
        100.0 * fifo_share,
        share / fifo_share.max(1e-9)
    );

    // The policy's own view of every wake-up in the machine (not only the workload's).
    let placements = lines
        .iter()
        .find(|l| l.starts_with("llc: placements"))
        .unwrap_or_else(|| panic!("no placements line from llc: {lines:#?}"));
    let p: BTreeMap<&str, u64> = placements
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    let c = counters(lines, "final");
    println!(
        "llc: {placements}; user_dispatches {}",
        c["user_dispatches"]
    );
    let policy_wakeups = p["wakeup_same_llc"] + p["wakeup_idle_core"] + p["wakeup_any"];

    assert!(*all > 200, "too few wake-ups measured: {all}");
    assert!(
        share >= 0.93,
        "only {same} of {all} wake-ups stayed in their LLC under llc ({:.1} %)",
        100.0 * share
    );
    assert!(
        p["wakeup_same_llc"] * 100 >= policy_wakeups * 93,
        "the policy placed only {} of {policy_wakeups} wake-ups in their LLC: {placements}",
        p["wakeup_same_llc"]
    );
}

/// The pids of the memory-management kernel threads, by name.
fn mm_kthreads() -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim();
        if ["kswapd", "kcompactd", "khugepaged"]
            .iter()
            .any(|p| comm.starts_with(p))
        {
            found.push((pid, comm.to_string()));
        }
    }
    found.sort();
    found
}

/// Context switches of `pid` so far (voluntary + involuntary): it ran at least that often.
fn switches(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// A `/proc/meminfo` field, in MiB.
fn meminfo_mib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// Take free memory until about `keep_free_mib` is left, touching every page, hold it for
/// `hold`, and give it back. The squeezed part is asked for THP (`MADV_HUGEPAGE`), so
/// khugepaged has an address space to scan.
fn squeeze_memory(keep_free_mib: u64, hold: Duration) -> (u64, u64) {
    let take = meminfo_mib("MemFree:").saturating_sub(keep_free_mib).max(4);
    let len = (take as usize) << 20;
    let mem = vm_tests::AnonMemory::new(len).unwrap_or_else(|| panic!("mmap of {take} MiB"));
    mem.advise_hugepage();
    mem.touch(1);
    let free_low = meminfo_mib("MemFree:");
    thread::sleep(hold);
    drop(mem);
    (take, free_low)
}

/// One run of scx-fifo under memory pressure: its mm_kthread_dispatches counter, and how often
/// the mm kthreads ran meanwhile.
fn mm_run(extra: &[&str]) -> (u64, u64) {
    let threads = mm_kthreads();
    let before: u64 = threads.iter().map(|(pid, _)| switches(*pid)).sum();
    let mut args = vec!["--stats", "0", "--no-direct-idle"];
    args.extend_from_slice(extra);
    let sched = SchedProc::start("scx-fifo", &args);
    // Drop the page cache, compact, and take most of the free memory: kswapd wakes up to
    // reclaim, kcompactd to compact, khugepaged to scan the squeezed memory.
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop_caches");
    std::fs::write("/proc/sys/vm/compact_memory", "1").expect("compact_memory");
    let (took, free_low) = squeeze_memory(96, Duration::from_secs(2));
    println!("memory squeeze: took {took} MiB, {free_low} MiB left free");
    thread::sleep(Duration::from_millis(300));
    let (status, lines, _) = sched.stop();
    assert!(status.success(), "scx-fifo {extra:?} exited with {status}");
    let after: u64 = threads.iter().map(|(pid, _)| switches(*pid)).sum();
    let c = counters(&lines, "final");
    (c["mm_kthread_dispatches"], after - before)
}

/// Write `value` to `path`, returning what was there (to put back with [`restore`]).
fn set(path: &str, value: &str) -> Option<(String, String)> {
    let old = std::fs::read_to_string(path).ok()?;
    std::fs::write(path, value).ok()?;
    Some((path.to_string(), old))
}

fn restore(saved: Vec<Option<(String, String)>>) {
    for (path, old) in saved.into_iter().flatten() {
        // `enabled` reads like "always [madvise] never": write back the bracketed word.
        let old = old
            .split_whitespace()
            .find(|w| w.starts_with('['))
            .map_or(old.trim(), |w| w.trim_matches(['[', ']']));
        let _ = std::fs::write(&path, old);
    }
}

/// kswapd, kcompactd and khugepaged never wait for user space: under memory pressure they run
/// and BPF dispatches them itself (`mm_kthread_dispatches` rises). With `full_user` they go
/// through the policy like any task: they still run, and the counter stays 0.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn mm_kthreads_are_dispatched_by_bpf_unless_full_user() {
    require_guest();
    let threads = mm_kthreads();
    println!("mm kthreads: {threads:?}");
    assert!(
        threads.iter().any(|(_, c)| c.starts_with("kswapd")),
        "no kswapd in the guest: {threads:?}"
    );
    // Wake kswapd early: the low watermark far above the minimum (10 % of memory), so
    // taking most free memory makes it reclaim without any allocation failing. And let
    // khugepaged scan every 10 ms instead of every 10 s.
    let thp = "/sys/kernel/mm/transparent_hugepage";
    let saved = vec![
        set("/proc/sys/vm/watermark_scale_factor", "1000"),
        set(&format!("{thp}/enabled"), "madvise"),
        set(&format!("{thp}/khugepaged/scan_sleep_millisecs"), "10"),
        set(&format!("{thp}/khugepaged/alloc_sleep_millisecs"), "10"),
    ];
    println!("tuned: {saved:?}");
    assert!(saved[0].is_some(), "could not set watermark_scale_factor");

    let (bpf_dispatched, ran) = mm_run(&[]);
    println!("default: mm_kthread_dispatches {bpf_dispatched}, mm kthreads switched {ran} times");
    let (user_dispatched, user_ran) = mm_run(&["--full-user"]);
    println!(
        "full_user: mm_kthread_dispatches {user_dispatched}, mm kthreads switched {user_ran} times"
    );
    restore(saved);

    assert!(
        ran > 0 && user_ran > 0,
        "the mm kthreads did not run ({ran}, {user_ran})"
    );
    assert!(
        bpf_dispatched > 0,
        "the mm kthreads ran {ran} times under memory pressure but BPF dispatched none of them"
    );
    assert_eq!(
        user_dispatched, 0,
        "with full_user BPF must leave the mm kthreads to user space"
    );
}

/// Puts CPU 3 back online when dropped, whatever the test did in between.
struct Cpu3Offline;

const CPU3_ONLINE: &str = "/sys/devices/system/cpu/cpu3/online";

impl Cpu3Offline {
    fn take() -> Self {
        std::fs::write(CPU3_ONLINE, "0").expect("taking CPU 3 offline");
        Cpu3Offline
    }
}

impl Drop for Cpu3Offline {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(CPU3_ONLINE, "1") {
            eprintln!("putting CPU 3 back online: {e}");
        }
    }
}

/// A preempting dispatch makes room on a CPU that is online. CPU 3 is offline (it shows no
/// task, as an idle CPU does); a thread allowed on CPUs 1 to 3 sleeps 3 ms at a time while
/// spinners with 40 ms slices hold CPUs 1 and 2, and the scheduler runs on CPU 0. Each
/// wake-up is dispatched with `preempt`: the spinner that ran longest must make way at once.
/// Kicking the offline CPU instead leaves the thread waiting for a spinner's slice to end.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn a_preempting_dispatch_makes_room_on_an_online_cpu_never_an_offline_one() {
    use scx_userland::{BpfScheduler, ExitKind};
    require_guest();
    const SLICE_US: u64 = 40_000;
    let offline = Cpu3Offline::take();
    common::pin_this_thread(&[0]);
    let mut spinners: Vec<_> = [1, 2]
        .into_iter()
        .map(|cpu| common::gated_shell("while :; do :; done", Some(cpu)))
        .collect();
    let mut bpf = BpfScheduler::builder()
        .slice_us(SLICE_US)
        .build()
        .expect("init");
    for s in &mut spinners {
        common::release(s);
    }
    let sleeper = common_rel::SleeperThread::start(Duration::from_millis(3), Some(vec![1, 2, 3]));
    let delays = common_rel::wakeup_delays(&mut bpf, &sleeper, Duration::from_secs(2), |d| {
        d.preempt = true
    });
    drop(sleeper);
    let report = bpf.shutdown_and_report().expect("report");
    for mut s in spinners {
        drop(s.stop(libc::SIGKILL, Duration::from_secs(5)));
    }
    drop(offline);
    common::pin_this_thread(&[0, 1, 2, 3]);
    let median = delays.get(delays.len() / 2).copied().unwrap_or(u64::MAX);
    let st = report.stats;
    println!(
        "preempting wake-ups with CPU 3 offline: {} decisions to run, median {} us, slice \
         {SLICE_US} us; {st}",
        delays.len(),
        median / 1000
    );
    assert_eq!(report.kind, ExitKind::Unregistered, "{report}");
    assert!(delays.len() >= 50, "too few wake-ups to judge: {st}");
    // Waiting for a spinner's slice to end costs 20 ms on average (seen on 7.3: 16.5 ms when
    // the offline CPU was kicked instead, 2.6 ms when room is made).
    assert!(
        median < SLICE_US * 1000 / 4,
        "preempting wake-ups waited {} us (median) with CPUs 1 and 2 busy: no room was made",
        median / 1000
    );
}
