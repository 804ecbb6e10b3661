//! `vm-soak`: load for the reliability VM tests, run in its own process under the scheduler
//! being tested.
//!
//! ```text
//! vm-soak [--secs S] [--parts LIST] [--hogs N]
//! vm-soak --memhog PERCENT [--hold SECS] [--floor-mib MIB]
//! ```
//!
//! The first form runs mixed stress for `S` seconds (default: `$SCX_VM_SOAK_SECS`, else 60):
//! every part in `LIST` (comma-separated; default all) on its own thread:
//!
//! - `fork`: bursts of 16 forks whose children exit at once;
//! - `exec`: `/bin/true`, over and over;
//! - `hog`: `N` (default 2) busy loops;
//! - `affinity`: a thread that pins itself to each CPU in turn (checking it really runs
//!   there), then to all;
//! - `nice`: a busy thread cycling its nice value from -10 to 19;
//! - `threads`: groups of 8 short-lived threads;
//! - `mem`: rounds of mapping, touching and unmapping ~30% of the available memory;
//! - `pingpong`: a byte bounced between two threads through pipes;
//! - `sleep`: 1 ms sleeps, recording the latest wake-up.
//!
//! It prints progress every 10 s and, at the end, one line
//! `vm-soak: done secs=… forks=… execs=… …` (`key=value` pairs). It exits 1 (after a
//! `vm-soak: FAILED: …` line) if a part made no progress, a pinned thread ran on a CPU it was
//! not allowed, or the run overran by more than 30 s.
//!
//! The second form maps and touches `PERCENT`% of MemTotal in 16 MiB chunks (stopping early
//! if MemAvailable falls below `--floor-mib` + 16, default 48), prints `vm-soak: memhog
//! filled …`, keeps touching it for `--hold` seconds (default 3), prints
//! `vm-soak: memhog touched_mib=… …` with the reclaim counters of /proc/vmstat, and exits. It
//! makes itself the OOM killer's first choice.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use vm_tests::AnonMemory;

const ALL_PARTS: &[&str] = &[
    "fork", "exec", "hog", "affinity", "nice", "threads", "mem", "pingpong", "sleep",
];
const SOAK_ENV: &str = "SCX_VM_SOAK_SECS";
const MIB: usize = 1 << 20;

#[derive(Debug)]
enum Mode {
    Stress {
        secs: u64,
        parts: Vec<String>,
        hogs: usize,
    },
    Memhog {
        percent: u64,
        hold: Duration,
        floor_mib: u64,
    },
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Mode, String> {
    let env_secs = std::env::var(SOAK_ENV).ok();
    let mut secs = match env_secs {
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| format!("{SOAK_ENV}={v:?} is not a number of seconds"))?,
        None => 60,
    };
    let mut parts: Vec<String> = ALL_PARTS.iter().map(|s| s.to_string()).collect();
    let mut hogs = 2;
    let mut memhog = None;
    let mut hold = Duration::from_secs(3);
    let mut floor_mib = 48;
    let num = |flag: &str, v: Option<String>| -> Result<u64, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse::<u64>()
            .map_err(|_| format!("{flag}: {v:?} is not a whole number"))
    };
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--secs" => secs = num("--secs", argv.next())?,
            "--hogs" => hogs = num("--hogs", argv.next())? as usize,
            "--parts" => {
                let list = argv.next().ok_or("--parts needs a value")?;
                parts = list.split(',').map(str::to_string).collect();
                if let Some(bad) = parts.iter().find(|p| !ALL_PARTS.contains(&p.as_str())) {
                    return Err(format!(
                        "unknown part {bad:?} (parts: {})",
                        ALL_PARTS.join(",")
                    ));
                }
            }
            "--memhog" => memhog = Some(num("--memhog", argv.next())?),
            "--hold" => hold = Duration::from_secs(num("--hold", argv.next())?),
            "--floor-mib" => floor_mib = num("--floor-mib", argv.next())?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(match memhog {
        Some(percent) if (1..=99).contains(&percent) => Mode::Memhog {
            percent,
            hold,
            floor_mib,
        },
        Some(p) => return Err(format!("--memhog {p}: give a percentage from 1 to 99")),
        None => Mode::Stress { secs, parts, hogs },
    })
}

// ---------------------------------------------------------------------------------------------
// Small system helpers
// ---------------------------------------------------------------------------------------------

fn nr_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

fn pin(cpus: &[usize]) -> bool {
    // SAFETY: a zeroed cpu_set_t filled with CPU_SET and passed with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn current_cpu() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::sched_getcpu() }.max(0) as usize
}

fn spin_for(d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut x = 1u64;
    while Instant::now() < end {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
}

fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds that we then own.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fds owned by nobody else.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

/// `/proc/meminfo` in kB.
fn meminfo() -> BTreeMap<String, u64> {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

fn mem_available_mib() -> u64 {
    meminfo().get("MemAvailable").copied().unwrap_or(0) / 1024
}

/// The reclaim counters of `/proc/vmstat`: pgscan, pgsteal and allocation stalls.
fn reclaim_counters() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for l in std::fs::read_to_string("/proc/vmstat")
        .unwrap_or_default()
        .lines()
    {
        let Some((k, v)) = l.split_once(' ') else {
            continue;
        };
        let Ok(v) = v.trim().parse::<u64>() else {
            continue;
        };
        let key = if k.starts_with("allocstall") {
            "allocstall"
        } else if k == "pgscan_kswapd" || k == "pgscan_direct" || k == "oom_kill" {
            k
        } else if k.starts_with("pgsteal_") {
            "pgsteal"
        } else {
            continue;
        };
        *out.entry(key.to_string()).or_insert(0) += v;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Memory hog
// ---------------------------------------------------------------------------------------------

fn memhog(percent: u64, hold: Duration, floor_mib: u64) -> Result<(), String> {
    // Be the OOM killer's first choice, so that nothing else (the scheduler) is.
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "1000") {
        println!("vm-soak: warning: cannot set oom_score_adj: {e}");
    }
    let total_mib = meminfo().get("MemTotal").copied().unwrap_or(0) / 1024;
    let target_mib = total_mib * percent / 100;
    let before = reclaim_counters();
    let start = Instant::now();
    println!(
        "vm-soak: memhog: MemTotal {total_mib} MiB, MemAvailable {} MiB, target {target_mib} MiB \
         ({percent}%), floor {floor_mib} MiB available",
        mem_available_mib()
    );
    let chunk = 16 * MIB;
    let mut regions = Vec::new();
    let mut min_avail = u64::MAX;
    let mut at_floor = false;
    while (regions.len() * chunk / MIB) < target_mib as usize {
        let avail = mem_available_mib();
        min_avail = min_avail.min(avail);
        if avail < floor_mib + 16 {
            at_floor = true;
            break;
        }
        let Some(r) = AnonMemory::new(chunk) else {
            break;
        };
        r.touch(1);
        regions.push(r);
    }
    let filled = start.elapsed();
    println!(
        "vm-soak: memhog filled touched_mib={} min_available_mib={min_avail} fill_secs={:.2}",
        regions.len() * chunk / MIB,
        filled.as_secs_f64()
    );
    let hold_end = Instant::now() + hold;
    let mut round = 2u8;
    while Instant::now() < hold_end {
        for r in &regions {
            r.touch(round);
        }
        round = round.wrapping_add(1);
        min_avail = min_avail.min(mem_available_mib());
        thread::sleep(Duration::from_millis(100));
    }
    let after = reclaim_counters();
    let delta = |k: &str| {
        let get = |m: &BTreeMap<String, u64>| m.get(k).copied().unwrap_or(0);
        get(&after).saturating_sub(get(&before))
    };
    let touched_mib = regions.len() * chunk / MIB;
    drop(regions);
    println!(
        "vm-soak: memhog touched_mib={touched_mib} target_mib={target_mib} memtotal_mib={total_mib} \
         min_available_mib={min_avail} stopped_at_floor={} fill_secs={:.2} hold_secs={} \
         pgscan_kswapd={} pgscan_direct={} pgsteal={} allocstall={} oom_kill={}",
        if at_floor { "yes" } else { "no" },
        filled.as_secs_f64(),
        hold.as_secs(),
        delta("pgscan_kswapd"),
        delta("pgscan_direct"),
        delta("pgsteal"),
        delta("allocstall"),
        delta("oom_kill"),
    );
    if touched_mib == 0 {
        return Err("could not map any memory".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Mixed stress
// ---------------------------------------------------------------------------------------------

/// Counters of every part, by name.
#[derive(Default)]
struct Counters {
    map: BTreeMap<&'static str, AtomicU64>,
}

impl Counters {
    fn new() -> Counters {
        let mut map = BTreeMap::new();
        for k in [
            "forks",
            "execs",
            "hog_loops",
            "affinity_changes",
            "affinity_violations",
            "nice_changes",
            "threads",
            "mem_rounds",
            "mem_peak_mib",
            "pingpongs",
            "sleeps",
            "sleep_max_late_us",
        ] {
            map.insert(k, AtomicU64::new(0));
        }
        Counters { map }
    }

    fn add(&self, k: &str, n: u64) {
        self.map[k].fetch_add(n, Ordering::Relaxed);
    }

    fn max(&self, k: &str, n: u64) {
        self.map[k].fetch_max(n, Ordering::Relaxed);
    }

    fn get(&self, k: &str) -> u64 {
        self.map[k].load(Ordering::Relaxed)
    }

    fn line(&self) -> String {
        self.map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Which counter proves each part made progress.
fn progress_counter(part: &str) -> &'static str {
    match part {
        "fork" => "forks",
        "exec" => "execs",
        "hog" => "hog_loops",
        "affinity" => "affinity_changes",
        "nice" => "nice_changes",
        "threads" => "threads",
        "mem" => "mem_rounds",
        "pingpong" => "pingpongs",
        _ => "sleeps",
    }
}

fn start_part(
    part: &str,
    hogs: usize,
    stop: &Arc<AtomicBool>,
    c: &Arc<Counters>,
) -> Vec<thread::JoinHandle<()>> {
    let mut hs = Vec::new();
    let running = {
        let stop = stop.clone();
        move || !stop.load(Ordering::Relaxed)
    };
    match part {
        "fork" => {
            let (c, running) = (c.clone(), running.clone());
            hs.push(thread::spawn(move || {
                while running() {
                    let mut pids = Vec::new();
                    for _ in 0..16 {
                        // SAFETY: the child only calls _exit, which is async-signal-safe.
                        match unsafe { libc::fork() } {
                            0 => unsafe { libc::_exit(0) },
                            p if p > 0 => pids.push(p),
                            _ => break,
                        }
                    }
                    for pid in pids {
                        // SAFETY: reaping our own child.
                        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                        c.add("forks", 1);
                    }
                }
            }));
        }
        "exec" => {
            let (c, running) = (c.clone(), running.clone());
            hs.push(thread::spawn(move || {
                while running() {
                    if Command::new("/bin/true")
                        .status()
                        .is_ok_and(|s| s.success())
                    {
                        c.add("execs", 1);
                    }
                }
            }));
        }
        "hog" => {
            for _ in 0..hogs {
                let (c, running) = (c.clone(), running.clone());
                hs.push(thread::spawn(move || {
                    while running() {
                        std::hint::black_box(spin_for(Duration::from_millis(10)));
                        c.add("hog_loops", 1);
                    }
                }));
            }
        }
        "affinity" => {
            let (c, running) = (c.clone(), running.clone());
            hs.push(thread::spawn(move || {
                let n = nr_cpus();
                let all: Vec<usize> = (0..n).collect();
                let mut k = 0usize;
                while running() {
                    let cpu = k % (n + 1);
                    k += 1;
                    if cpu == n {
                        if pin(&all) {
                            c.add("affinity_changes", 1);
                        }
                        spin_for(Duration::from_millis(5));
                        continue;
                    }
                    if !pin(&[cpu]) {
                        continue; // e.g. that CPU is offline
                    }
                    c.add("affinity_changes", 1);
                    spin_for(Duration::from_millis(3));
                    if current_cpu() != cpu {
                        c.add("affinity_violations", 1);
                    }
                }
                pin(&all);
            }));
        }
        "nice" => {
            let (c, running) = (c.clone(), running.clone());
            hs.push(thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() } as libc::id_t;
                let mut k = 0usize;
                while running() {
                    let nice = [-10, -5, 0, 5, 10, 19][k % 6];
                    k += 1;
                    // SAFETY: changing this thread's own nice value.
                    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } == 0 {
                        c.add("nice_changes", 1);
                    }
                    spin_for(Duration::from_millis(10));
                }
            }));
        }
        "threads" => {
            let (c, running) = (c.clone(), running.clone());
            hs.push(thread::spawn(move || {
                while running() {
                    let group: Vec<_> = (0..8u64)
                        .map(|i| thread::spawn(move || std::hint::black_box(i * 3)))
                        .collect();
                    for t in group {
                        let _ = t.join();
                        c.add("threads", 1);
                    }
                }
            }));
        }
        "mem" => {
            let (c, running) = (c.clone(), running.clone());
            hs.push(thread::spawn(move || {
                while running() {
                    let mib = (mem_available_mib() * 30 / 100).clamp(4, 256) as usize;
                    if let Some(r) = AnonMemory::new(mib * MIB) {
                        r.touch(1);
                        c.max("mem_peak_mib", mib as u64);
                        for v in 2..7u8 {
                            if !running() {
                                break;
                            }
                            thread::sleep(Duration::from_millis(100));
                            r.touch(v);
                        }
                        c.add("mem_rounds", 1);
                    } else {
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }));
        }
        "pingpong" => {
            let (ping_r, ping_w) = pipe();
            let (pong_r, pong_w) = pipe();
            let (c, running) = (c.clone(), running.clone());
            let (mut w, mut r) = (ping_w, pong_r);
            hs.push(thread::spawn(move || {
                let mut b = [0u8; 1];
                while running() {
                    if w.write_all(&b).is_err() || r.read_exact(&mut b).is_err() {
                        break;
                    }
                    c.add("pingpongs", 1);
                }
                // Dropping `w` gives the echo thread EOF.
            }));
            let (mut r, mut w) = (ping_r, pong_w);
            hs.push(thread::spawn(move || {
                let mut b = [0u8; 1];
                while r.read_exact(&mut b).is_ok() {
                    if w.write_all(&b).is_err() {
                        break;
                    }
                }
            }));
        }
        _ => {
            let (c, running) = (c.clone(), running.clone());
            hs.push(thread::spawn(move || {
                while running() {
                    let t0 = Instant::now();
                    thread::sleep(Duration::from_millis(1));
                    let late = t0.elapsed().saturating_sub(Duration::from_millis(1));
                    c.max("sleep_max_late_us", late.as_micros() as u64);
                    c.add("sleeps", 1);
                }
            }));
        }
    }
    hs
}

fn stress(secs: u64, parts: &[String], hogs: usize) -> Result<(), String> {
    println!(
        "vm-soak: {secs} s of {} ({} CPUs, {hogs} hogs)",
        parts.join(","),
        nr_cpus()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let c = Arc::new(Counters::new());
    let start = Instant::now();
    let mut handles = Vec::new();
    for p in parts {
        handles.extend(start_part(p, hogs, &stop, &c));
    }
    let dur = Duration::from_secs(secs);
    let mut next_report = Duration::from_secs(10);
    while start.elapsed() < dur {
        thread::sleep(Duration::from_millis(100).min(dur.saturating_sub(start.elapsed())));
        if secs >= 20 && start.elapsed() >= next_report {
            println!(
                "vm-soak: progress t={} s {}",
                next_report.as_secs(),
                c.line()
            );
            next_report += Duration::from_secs(10);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join()
            .map_err(|_| "a stress thread panicked".to_string())?;
    }
    let took = start.elapsed();
    println!("vm-soak: done secs={:.1} {}", took.as_secs_f64(), c.line());
    let idle: Vec<&str> = parts
        .iter()
        .map(|p| progress_counter(p))
        .filter(|k| c.get(k) == 0)
        .collect();
    if !idle.is_empty() {
        return Err(format!("no progress in {}", idle.join(", ")));
    }
    if c.get("affinity_violations") > 0 {
        return Err(format!(
            "a pinned thread ran on a CPU outside its affinity {} time(s)",
            c.get("affinity_violations")
        ));
    }
    if took > dur + Duration::from_secs(30) {
        return Err(format!("overran: {took:.1?} for {secs} s"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let mode = match parse_args(std::env::args().skip(1)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vm-soak: {e}");
            return ExitCode::from(2);
        }
    };
    let res = match mode {
        Mode::Stress { secs, parts, hogs } => stress(secs, &parts, hogs),
        Mode::Memhog {
            percent,
            hold,
            floor_mib,
        } => memhog(percent, hold, floor_mib),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("vm-soak: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Mode, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_both_modes() {
        match parse(&["--secs", "5", "--parts", "hog,fork", "--hogs", "3"]).unwrap() {
            Mode::Stress { secs, parts, hogs } => {
                assert_eq!((secs, hogs), (5, 3));
                assert_eq!(parts, ["hog", "fork"]);
            }
            m => panic!("{m:?}"),
        }
        match parse(&["--memhog", "88", "--hold", "4"]).unwrap() {
            Mode::Memhog { percent, hold, .. } => {
                assert_eq!((percent, hold), (88, Duration::from_secs(4)));
            }
            m => panic!("{m:?}"),
        }
        assert!(parse(&["--parts", "hog,nope"]).is_err());
        assert!(parse(&["--memhog", "100"]).is_err());
        assert!(parse(&["--secs"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn a_short_stress_run_makes_progress() {
        stress(1, &["hog".into(), "threads".into(), "sleep".into()], 1).unwrap();
    }
}
