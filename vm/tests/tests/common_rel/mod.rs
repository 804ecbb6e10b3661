//! Helpers of the reliability VM tests: a real-time watcher thread that sched_ext never
//! schedules, a wake-up latency probe that it does, the kernel log, and in-process workers.
//!
//! Code that runs on a real-time thread here never allocates, locks or prints while the
//! scheduler under test may be stuck: a SCHED_OTHER thread holding the lock could be the very
//! task that is waiting for a CPU.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use vm_tests::{guest_bin, ChildGuard};

/// The kernel's watchdog message (built from two halves so that this source never prints it by
/// accident: the harness fails a run on that console line).
pub const STALL_NEEDLE: &str = concat!("runnable task", " stall");

/// CLOCK_MONOTONIC in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleep until CLOCK_MONOTONIC reaches `deadline_ns` (no allocation, safe on an RT thread).
pub fn sleep_until_ns(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: an absolute sleep on a valid timespec; EINTR just ends it early.
    while unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    } == libc::EINTR
    {}
}

/// Make the calling thread SCHED_FIFO: the real-time class runs ahead of sched_ext, so such a
/// thread keeps running whatever the scheduler under test does.
pub fn make_current_thread_rt(prio: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: pid 0 is the calling thread; a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Run `f` on a new SCHED_FIFO (priority 50) thread.
pub fn spawn_rt<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    std::thread::spawn(move || {
        make_current_thread_rt(50).expect("SCHED_FIFO for the watcher thread (root needed)");
        f()
    })
}

/// sched_ext's state as read by a real-time thread: no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastState {
    Enabled,
    Disabled,
    /// `enabling` or `disabling`.
    Changing,
    Unreadable,
}

/// Read `/sys/kernel/sched_ext/state` into a stack buffer.
pub fn fast_state() -> FastState {
    let mut buf = [0u8; 32];
    // SAFETY: a NUL-terminated path; read into a buffer of the size given; fd closed after.
    let n = unsafe {
        let fd = libc::open(
            c"/sys/kernel/sched_ext/state".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return FastState::Unreadable;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return FastState::Unreadable;
    }
    let text = &buf[..n as usize];
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    match text {
        b"enabled" => FastState::Enabled,
        b"disabled" => FastState::Disabled,
        _ => FastState::Changing,
    }
}

/// Send `sig` to `pid`.
pub fn kill(pid: u32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) with a plain pid.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Milliseconds, for printing.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// `min=.. p50=.. p90=.. max=..` of some millisecond figures.
pub fn distribution(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "min={:.1} p50={:.1} p90={:.1} max={:.1}",
        v.first().copied().unwrap_or(f64::NAN),
        percentile(&v, 50),
        percentile(&v, 90),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

// ---------------------------------------------------------------------------------------------
// The wake-up probe
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
pub struct ProbeShared {
    stop: AtomicBool,
    /// Worst lateness of a completed 1 ms sleep since the last reset.
    max_late_ns: AtomicU64,
    /// Worst since the probe started.
    all_time_max_ns: AtomicU64,
    /// When the sleep in progress started (0: not sleeping).
    sleep_start_ns: AtomicU64,
    wakes: AtomicU64,
}

const PROBE_PERIOD_NS: u64 = 1_000_000;

impl ProbeShared {
    /// Forget the worst wait so far (safe on an RT thread).
    pub fn reset(&self) {
        self.max_late_ns.store(0, Ordering::SeqCst);
    }

    /// The worst wait since the last reset, counting a sleep that is overdue right now.
    pub fn worst_ns(&self) -> u64 {
        let done = self.max_late_ns.load(Ordering::SeqCst);
        let start = self.sleep_start_ns.load(Ordering::SeqCst);
        let pending = if start == 0 {
            0
        } else {
            now_ns().saturating_sub(start + PROBE_PERIOD_NS)
        };
        done.max(pending)
    }

    pub fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::SeqCst)
    }
}

/// A normal (SCHED_OTHER, so sched_ext-scheduled) thread that sleeps 1 ms at a time and
/// records how late it woke up: the longest time a runnable task waited for a CPU.
pub struct Probe {
    shared: Arc<ProbeShared>,
    handle: Option<JoinHandle<()>>,
}

impl Probe {
    pub fn start() -> Probe {
        let shared = Arc::new(ProbeShared::default());
        let s = shared.clone();
        let handle = std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                let start = now_ns();
                s.sleep_start_ns.store(start, Ordering::SeqCst);
                sleep_until_ns(start + PROBE_PERIOD_NS);
                let late = now_ns().saturating_sub(start + PROBE_PERIOD_NS);
                s.sleep_start_ns.store(0, Ordering::SeqCst);
                s.max_late_ns.fetch_max(late, Ordering::SeqCst);
                s.all_time_max_ns.fetch_max(late, Ordering::SeqCst);
                s.wakes.fetch_add(1, Ordering::Relaxed);
            }
        });
        Probe {
            shared,
            handle: Some(handle),
        }
    }

    pub fn shared(&self) -> Arc<ProbeShared> {
        self.shared.clone()
    }

    /// Stop it; returns the worst wait over its whole life.
    pub fn stop(mut self) -> u64 {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("the probe thread panicked");
        }
        self.shared.all_time_max_ns.load(Ordering::SeqCst)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// The kernel log
// ---------------------------------------------------------------------------------------------

/// A position in the kernel log (`/dev/kmsg`): [`Kmsg::since`] returns what came after it.
pub struct Kmsg {
    after_seq: Option<u64>,
}

fn read_kmsg() -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    {
        Ok(f) => f,
        Err(e) => panic!("cannot open /dev/kmsg: {e}"),
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: read into our buffer; one record per read.
        let n = unsafe { libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EPIPE) | Some(libc::EINTR) => continue, // overwritten record
                _ => break,                                        // EAGAIN: the end
            }
        }
        if n == 0 {
            break;
        }
        let rec = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
        let Some((head, text)) = rec.split_once(';') else {
            continue;
        };
        let seq = head.split(',').nth(1).and_then(|s| s.parse().ok());
        if let Some(seq) = seq {
            let msg = text.lines().next().unwrap_or("").to_string();
            out.push((seq, msg));
        }
    }
    out
}

impl Kmsg {
    /// Remember the end of the kernel log as it is now.
    pub fn mark() -> Kmsg {
        Kmsg {
            after_seq: read_kmsg().last().map(|(s, _)| *s),
        }
    }

    /// Kernel log lines logged since [`mark`](Self::mark).
    pub fn since(&self) -> Vec<String> {
        read_kmsg()
            .into_iter()
            .filter(|(s, _)| self.after_seq.is_none_or(|a| *s > a))
            .map(|(_, m)| m)
            .collect()
    }

    /// The watchdog's stall lines logged since the mark.
    pub fn stall_lines(&self) -> Vec<String> {
        self.since()
            .into_iter()
            .filter(|l| l.contains(STALL_NEEDLE))
            .collect()
    }

    /// sched_ext's own lines (enable, disable, errors) logged since the mark.
    pub fn sched_ext_lines(&self) -> Vec<String> {
        self.since()
            .into_iter()
            .filter(|l| l.contains("sched_ext"))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Load in other processes
// ---------------------------------------------------------------------------------------------

/// `/bin/vm-soak ARGS` with its stdout echoed (prefixed) and collected.
pub struct Soak {
    pub guard: ChildGuard,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Soak {
    pub fn start(args: &[&str]) -> Soak {
        use std::io::BufRead;
        let mut child = Command::new(guest_bin("vm-soak"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn /bin/vm-soak: {e}"));
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                println!("[vm-soak] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Soak {
            guard: ChildGuard::new(child),
            lines,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.guard.id()
    }

    /// Its output so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Wait for it to finish on its own (at most `timeout`); all its output.
    pub fn wait(mut self, timeout: Duration) -> (Option<ExitStatus>, Vec<String>) {
        let status = self
            .guard
            .wait_timeout(timeout)
            .expect("waiting for vm-soak");
        if status.is_none() {
            let _ = self.guard.stop(libc::SIGKILL, Duration::from_secs(5));
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let lines = self.lines.lock().unwrap().clone();
        (status, lines)
    }

    /// SIGKILL it (load that runs until stopped).
    pub fn kill(mut self) {
        let _ = self.guard.stop(libc::SIGKILL, Duration::from_secs(5));
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The `key=value` pairs of the last line of `lines` that starts with `prefix`.
pub fn kv_line(lines: &[String], prefix: &str) -> std::collections::HashMap<String, String> {
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {lines:#?}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Workers for in-process schedulers
// ---------------------------------------------------------------------------------------------

/// A `/bin/sh -c SCRIPT` child that waits for [`Worker::release`] before it starts: a thread
/// running a `BpfScheduler` must never spawn (spawning waits for the child's exec, which
/// needs the scheduler), so workers are spawned before `init` and released after.
pub struct Worker {
    guard: ChildGuard,
    pub pid: i32,
    status: Option<ExitStatus>,
}

impl Worker {
    /// `cpu`: pin it (and what it forks) to this CPU.
    pub fn spawn(script: &str, cpu: Option<usize>) -> Worker {
        let guard = crate::common::gated_shell(script, cpu);
        let pid = guard.id() as i32;
        Worker {
            guard,
            pid,
            status: None,
        }
    }

    /// Let it run (a pipe write: never waits for a task to be scheduled).
    pub fn release(&mut self) {
        let stdin = self.guard.child().stdin.as_mut().expect("piped stdin");
        stdin.write_all(b"go\n").expect("release the worker");
    }

    /// Its exit status once it has exited (reaps it; never blocks).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.guard.child().try_wait().expect("try_wait");
        }
        self.status
    }

    /// Has it exited, without reaping it (it stays a zombie, its pid still names it)?
    pub fn is_zombie(&self) -> bool {
        if self.status.is_some() {
            return false;
        }
        // SAFETY: waitid on our own child with WNOWAIT only looks; siginfo is ours to fill.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            r == 0 && info.si_pid() == self.pid
        }
    }

    /// Kill it (only once no in-process scheduler is attached).
    pub fn kill(mut self) {
        let _ = self.guard.stop(libc::SIGKILL, Duration::from_secs(5));
    }
}

/// A busy loop of `n` shell iterations (no forks).
pub fn busy(n: u32) -> String {
    format!("i=0; while [ $i -lt {n} ]; do i=$((i+1)); done")
}

/// Read a whole small file, e.g. from /proc.
pub fn read_file(path: &str) -> String {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .unwrap_or_else(|e| panic!("read {path}: {e}"));
    s
}

// ---------------------------------------------------------------------------------------------
// Holding another process's struct_ops link
// ---------------------------------------------------------------------------------------------

/// A duplicate, in this process, of `pid`'s sched_ext (struct_ops) BPF link: while it is open,
/// that process dying does not detach the scheduler by closing its descriptors, so only the
/// BPF component itself can notice the death.
pub struct HeldLink(std::os::fd::OwnedFd);

impl HeldLink {
    pub fn grab(pid: u32) -> io::Result<HeldLink> {
        use std::os::fd::FromRawFd;
        let mut target = None;
        for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
            let entry = entry?;
            let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if info
                .lines()
                .any(|l| l.starts_with("link_type:") && l.contains("struct_ops"))
            {
                target = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok());
                break;
            }
        }
        let fd = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no struct_ops link among its fds")
        })?;
        // SAFETY: plain syscalls; the descriptors returned are owned right away.
        unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
            if pidfd < 0 {
                return Err(io::Error::last_os_error());
            }
            let pidfd = std::os::fd::OwnedFd::from_raw_fd(pidfd as i32);
            let dup = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
            if dup < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(HeldLink(std::os::fd::OwnedFd::from_raw_fd(dup as i32)))
        }
    }
}

/// A thread of this process that sleeps `period` at a time until dropped. It is not
/// privileged, so each of its wake-ups goes through the policy.
pub struct SleeperThread {
    stop: Arc<AtomicBool>,
    tid: Arc<std::sync::atomic::AtomicI32>,
    handle: Option<JoinHandle<()>>,
}

impl SleeperThread {
    /// Starts it, pinned to `cpus` when given, and waits until it knows its thread id.
    pub fn start(period: Duration, cpus: Option<Vec<usize>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let handle = {
            let (stop, tid) = (stop.clone(), tid.clone());
            std::thread::spawn(move || {
                if let Some(cpus) = cpus {
                    crate::common::pin_this_thread(&cpus);
                }
                // SAFETY: gettid has no preconditions.
                tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(period);
                }
            })
        };
        while tid.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        Self {
            stop,
            tid,
            handle: Some(handle),
        }
    }

    /// Its thread id (the `pid` of its `QueuedTask`s).
    pub fn tid(&self) -> i32 {
        self.tid.load(Ordering::Relaxed)
    }
}

impl Drop for SleeperThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Schedules every task in FIFO order from this thread for `dur`, `shape` adjusting the
/// decision for each wake-up of `sleeper`. Returns, for each of those wake-ups, the ns from
/// the decision to the start of the run it led to (read from the sleeper's next record).
pub fn wakeup_delays(
    bpf: &mut scx_userland::BpfScheduler,
    sleeper: &SleeperThread,
    dur: Duration,
    shape: impl Fn(&mut scx_userland::Dispatch),
) -> Vec<u64> {
    let mut decided = None;
    let mut delays = Vec::new();
    let end = std::time::Instant::now() + dur;
    while std::time::Instant::now() < end {
        while let Some(task) = bpf.dequeue_task().expect("dequeue") {
            if task.is_exiting() {
                continue;
            }
            let mut d = scx_userland::Dispatch::fifo(&task);
            if task.pid == sleeper.tid() {
                if let Some(at) = decided.take() {
                    if task.start_ts > at {
                        delays.push(task.start_ts - at);
                    }
                }
                if task.is_wakeup() {
                    decided = Some(now_ns());
                    shape(&mut d);
                }
            }
            bpf.dispatch_task(&d).expect("dispatch");
        }
        bpf.wait_for_tasks(Duration::from_millis(5)).expect("wait");
    }
    delays.sort_unstable();
    delays
}
