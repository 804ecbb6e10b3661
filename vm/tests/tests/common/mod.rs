//! Shared by the framework's VM tests: a mixed workload, and a scheduler process under test.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vm_tests::{guest_bin, read_state, wait_for_state, ChildGuard};

/// What each part of [`mixed_workload`] got done.
#[derive(Debug, Default)]
pub struct WorkDone {
    pub execs: u64,
    pub pingpongs: u64,
    pub hog_loops: u64,
    pub pinned_cpus_seen: Vec<i32>,
    pub nice_changes: u64,
    pub short_threads: u64,
}

fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A shell that runs `script` once a line arrives on its stdin (pinned to `cpu`, and what it
/// forks, if one is given). The thread that runs a `BpfScheduler` must never spawn (spawning
/// waits for the child's exec, which needs the scheduler): spawn these before `init`, and
/// release them after with a pipe write, which never waits for a task to be scheduled.
pub fn gated_shell(script: &str, cpu: Option<usize>) -> ChildGuard {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &format!("read go; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    if let Some(cpu) = cpu {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    ChildGuard::spawn(&mut cmd).expect("spawn a gated shell")
}

/// Lets a [`gated_shell`] start its script.
pub fn release(gated: &mut ChildGuard) {
    let stdin = gated.child().stdin.as_mut().expect("piped stdin");
    stdin.write_all(b"go\n").expect("release a gated shell");
}

/// Pins the calling thread to `cpu`.
pub fn set_affinity(cpu: usize) {
    pin_this_thread(&[cpu]);
}

/// Pins the calling thread to `cpus`.
pub fn pin_this_thread(cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t, filled with CPU_SET and passed with its size; pid 0 is this
    // thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        rc,
        0,
        "pinning to {cpus:?}: {}",
        std::io::Error::last_os_error()
    );
}

fn current_cpu() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::sched_getcpu() }
}

fn spin_until(deadline: Instant) -> u64 {
    let mut n = 0u64;
    while Instant::now() < deadline {
        for _ in 0..10_000 {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    n
}

/// Fork/exec storm, pipe ping-pong, CPU hogs, a task pinned to one CPU then moved, nice
/// changes and short-lived threads, all at once for `dur`. Panics if any part made no
/// progress or the whole took far longer than asked (tasks starved).
pub fn mixed_workload(dur: Duration) -> WorkDone {
    let start = Instant::now();
    let deadline = start + dur;
    let mut parts: Vec<JoinHandle<(&'static str, u64, Vec<i32>)>> = Vec::new();

    parts.push(std::thread::spawn(move || {
        let mut n = 0;
        while Instant::now() < deadline {
            let st = Command::new("/bin/true").status().expect("spawn /bin/true");
            assert!(st.success());
            n += 1;
        }
        ("execs", n, vec![])
    }));
    parts.push(std::thread::spawn(move || {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 1];
            while b.read_exact(&mut buf).is_ok() && buf[0] != 0 {
                b.write_all(&buf).unwrap();
            }
        });
        let mut n = 0;
        let mut buf = [0u8; 1];
        while Instant::now() < deadline {
            a.write_all(&[1]).unwrap();
            a.read_exact(&mut buf).unwrap();
            n += 1;
        }
        a.write_all(&[0]).unwrap();
        echo.join().unwrap();
        ("pingpongs", n, vec![])
    }));
    for _ in 0..2 {
        parts.push(std::thread::spawn(move || {
            ("hog_loops", spin_until(deadline), vec![])
        }));
    }
    parts.push(std::thread::spawn(move || {
        let last = cpu_count() - 1;
        let mid = start + dur / 2;
        let mut seen = Vec::new();
        set_affinity(0);
        spin_until(mid.min(Instant::now() + Duration::from_millis(200)));
        seen.push(current_cpu());
        spin_until(mid);
        set_affinity(last);
        spin_until(Instant::now() + Duration::from_millis(200));
        seen.push(current_cpu());
        spin_until(deadline);
        ("pinned", 1, seen)
    }));
    parts.push(std::thread::spawn(move || {
        let mut n = 0;
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as libc::id_t;
        while Instant::now() < deadline {
            let nice = [-5, 0, 5, 10, 19][n as usize % 5];
            // SAFETY: setting this thread's own nice value.
            assert_eq!(
                unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) },
                0
            );
            spin_until(Instant::now() + Duration::from_millis(20));
            n += 1;
        }
        ("nice_changes", n, vec![])
    }));
    parts.push(std::thread::spawn(move || {
        let mut n = 0;
        while Instant::now() < deadline {
            let handles: Vec<_> = (0..4)
                .map(|i| std::thread::spawn(move || std::hint::black_box(i * 2)))
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            n += 4;
        }
        ("short_threads", n, vec![])
    }));

    let mut done = WorkDone::default();
    for p in parts {
        let (what, n, seen) = p.join().expect("a workload part panicked");
        match what {
            "execs" => done.execs = n,
            "pingpongs" => done.pingpongs = n,
            "hog_loops" => done.hog_loops += n,
            "pinned" => done.pinned_cpus_seen = seen,
            "nice_changes" => done.nice_changes = n,
            _ => done.short_threads = n,
        }
    }
    let took = start.elapsed();
    println!("workload: {done:?} in {took:.2?}");
    assert!(
        done.execs > 0 && done.pingpongs > 0 && done.hog_loops > 0,
        "{done:?}"
    );
    assert!(done.nice_changes > 0 && done.short_threads > 0, "{done:?}");
    let last = cpu_count() as i32 - 1;
    assert_eq!(
        done.pinned_cpus_seen,
        vec![0, last],
        "the pinned task ran where it was pinned"
    );
    assert!(
        took < dur + Duration::from_secs(15),
        "the workload overran: {took:?}"
    );
    done
}

/// A scheduler binary running in the guest, with its output collected (and echoed).
pub struct SchedProc {
    guard: ChildGuard,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    pub attach_time: Duration,
}

impl SchedProc {
    /// Start `/bin/<name> args…` and wait until sched_ext is enabled.
    pub fn start(name: &str, args: &[&str]) -> Self {
        assert_eq!(
            read_state().unwrap(),
            "disabled",
            "a scheduler is already attached"
        );
        let t0 = Instant::now();
        let mut child = Command::new(guest_bin(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let out = child.stdout.take().unwrap();
        let guard = ChildGuard::new(child);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let tag = name.to_string();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("[{tag}] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let mut guard = guard;
        let attach_time = loop {
            if let Ok(t) = wait_for_state("enabled", Duration::from_millis(100)) {
                break t;
            }
            if let Some(st) = guard.child().try_wait().unwrap() {
                panic!("{name} exited with {st} before sched_ext became enabled");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{name} did not attach in 20 s"
            );
        };
        let ops = std::fs::read_to_string("/sys/kernel/sched_ext/root/ops").unwrap_or_default();
        println!(
            "{name}: enabled after {:.3?} (launch to enabled {:.3?}), ops {:?}",
            attach_time,
            t0.elapsed(),
            ops.trim()
        );
        Self {
            guard,
            lines,
            reader: Some(reader),
            attach_time: t0.elapsed(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.guard.id()
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGINT it and wait (10 s at most); returns its status, all output, and how long it took.
    pub fn stop(mut self) -> (ExitStatus, Vec<String>, Duration) {
        let t0 = Instant::now();
        let (status, killed) = self
            .guard
            .stop(libc::SIGINT, Duration::from_secs(10))
            .expect("stopping the scheduler");
        let took = t0.elapsed();
        assert!(
            !killed,
            "the scheduler ignored SIGINT for 10 s and had to be killed"
        );
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        wait_for_state("disabled", Duration::from_secs(5)).expect("state back to disabled");
        println!("scheduler stopped {:.3?} after SIGINT: {status}", took);
        (status, self.lines(), took)
    }
}

/// The `key=value` counters of the last line containing `marker` (e.g. "final").
pub fn counters(lines: &[String], marker: &str) -> HashMap<String, u64> {
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains(marker) && l.contains("user_dispatches="))
        .unwrap_or_else(|| panic!("no `{marker}` counters line in {lines:#?}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// The accounting that must hold once the scheduler has stopped.
pub fn assert_accounting(c: &HashMap<String, u64>) {
    let g = |k: &str| {
        *c.get(k)
            .unwrap_or_else(|| panic!("counter {k} missing: {c:?}"))
    };
    assert!(
        g("user_dispatches") > 0,
        "nothing went through user space: {c:?}"
    );
    assert_eq!(
        g("dispatch_records"),
        g("user_dispatches") + g("cancel_dispatches") + g("failed_dispatches"),
        "every dispatch record has exactly one outcome: {c:?}"
    );
    assert_eq!(g("failed_dispatches"), 0, "{c:?}");
    assert_eq!(
        g("sched_congested"),
        0,
        "the queued ring never filled: {c:?}"
    );
    let in_flight = g("queued_events") - g("dispatch_records").min(g("queued_events"));
    assert!(g("dispatch_records") <= g("queued_events"), "{c:?}");
    assert!(
        in_flight <= 64,
        "{in_flight} queued tasks were never dispatched, bounced or cancelled: {c:?}"
    );
}
