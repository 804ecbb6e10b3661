//! `vm-bench`: the guest side of `cargo xtask vm-bench`.
//!
//! ```text
//! vm-bench [--rounds N] [--warmup N] [--schedulers LIST] [--workloads LIST] [--duration SECS]
//!          [--loops N] [--forks N] [--groups N] [--msg-loops N] [--pipe-loops N]
//!          [--sched-args NAME=ARGS]...
//! ```
//!
//! Runs each workload under each scheduler, interleaved: for every round (warm-up rounds
//! first, then the measured ones), for every workload, for every scheduler in `--schedulers`
//! order. `default` is the kernel's own scheduler (nothing attached); any other name is the
//! program `/bin/<name>` (`scx-fifo` gets `--stats-interval 0`), started fresh for every run:
//! launch, wait for `/sys/kernel/sched_ext/state` = `enabled`, run the workload (its
//! processes are children of vm-bench, never of the scheduler), SIGINT, wait for the exit and
//! for `disabled`.
//!
//! Workloads (names for `--workloads`):
//!
//! - `pingpong`: two processes bounce one byte through two pipes for `--duration` seconds;
//!   round-trip mean, p50, p99 in µs.
//! - `pingpong_hogs`: the same beside 2 CPU-bound hog processes; p50, p99, mean and the hogs'
//!   loop iterations per second (summed) during the ping-pong window.
//! - `messages`: hackbench-style; 2 groups of 4 senders and 4 receivers (16 processes), each
//!   sender writes `--loops` 100-byte messages to every receiver of its group through pipes;
//!   elapsed seconds. Under a sched_ext scheduler also its CPU time (utime+stime from
//!   /proc/<pid>/stat) as a percentage of the elapsed time, and its user-space dispatch rate:
//!   `user_dispatches=N` of its `final` counters line divided by the time it was attached
//!   (enabled → SIGINT), during which only this workload ran.
//! - `forkexec`: fork + exec `/bin/true` + wait, `--forks` times; per second.
//!
//! Standard third-party tools (put into the image as `/bin/perf`, `/bin/hackbench` and
//! `/bin/cyclictest`, with their libraries):
//!
//! - `hackbench`: rt-tests' `hackbench -g GROUPS -l MSG_LOOPS` (processes, sockets); its
//!   `Time:` in seconds.
//! - `perf_messaging`: `perf bench sched messaging -g GROUPS -l MSG_LOOPS`; its `Total time`
//!   in seconds.
//! - `perf_pipe`: `perf bench sched pipe -l PIPE_LOOPS`; µs per operation and operations
//!   per second.
//! - `cyclictest`: the wake-up latency of a 1 ms periodic SCHED_OTHER task beside 2 CPU hogs:
//!   `cyclictest -q --policy=other -i 1000 -t 1 -l N` (N = `--duration` in ms) while 2 hog
//!   processes spin; average and maximum latency in µs and the hogs' loop iterations per
//!   second. A summary line showing a real-time priority is an error (the task must be
//!   SCHED_OTHER).
//!
//! A tool that fails, or whose output does not parse, fails the run with an error naming the
//! tool and showing its output.
//!
//! Every run of a sched_ext scheduler also yields a `sched` sample: `attach_s` (launch →
//! `enabled`), `detach_s` (SIGINT → process exit) and `disabled_s` (SIGINT → `disabled`).
//!
//! Results are console lines `bench: {json}`, one `write(2)` each:
//!
//! ```text
//! bench: {"type":"config","rounds":3,"warmup":1,"schedulers":[…],"workloads":[…],…}
//! bench: {"type":"sample","round":1,"warmup":false,"workload":"pingpong","scheduler":"default","metrics":{"p50_us":41.2,…}}
//! bench: {"type":"error","round":1,"workload":"messages","scheduler":"scx-fifo","message":"…"}
//! bench: {"type":"done","runs":24,"errors":0}
//! ```
//!
//! A failed run (scheduler did not attach, died, ignored SIGINT, …) is reported as an `error`
//! line and the benchmark goes on; vm-bench then exits 1. There are no timed assertions: this
//! is a benchmark.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vm_tests::{describe_status, guest_bin, read_state, ChildGuard};

const WORKLOADS: &[&str] = &[
    "pingpong",
    "pingpong_hogs",
    "messages",
    "forkexec",
    "hackbench",
    "perf_messaging",
    "perf_pipe",
    "cyclictest",
];

/// Processes per hackbench group, half senders and half receivers.
const GROUP_SENDERS: usize = 4;
const GROUP_RECEIVERS: usize = 4;
const GROUPS: usize = 2;
const MESSAGE_BYTES: usize = 100;
const HOGS: usize = 2;

#[derive(Debug, Clone, PartialEq)]
struct Options {
    rounds: u32,
    warmup: u32,
    schedulers: Vec<String>,
    workloads: Vec<String>,
    duration: Duration,
    loops: u32,
    forks: u32,
    /// Groups of hackbench and perf's messaging benchmark.
    groups: u32,
    /// Loops of hackbench and perf's messaging benchmark.
    msg_loops: u32,
    /// Operations of perf's pipe benchmark.
    pipe_loops: u32,
    /// Extra arguments per scheduler name.
    sched_args: Vec<(String, Vec<String>)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 3,
            warmup: 1,
            schedulers: vec!["default".into(), "scx-fifo".into(), "vruntime".into()],
            workloads: WORKLOADS.iter().map(|s| s.to_string()).collect(),
            duration: Duration::from_secs(2),
            loops: 4000,
            forks: 300,
            groups: 2,
            msg_loops: 50,
            pipe_loops: 20_000,
            sched_args: Vec::new(),
        }
    }
}

fn list(flag: &str, v: Option<String>) -> Result<Vec<String>, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    let items: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if items.is_empty() {
        return Err(format!("{flag}: empty list"));
    }
    Ok(items)
}

fn number<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options::default();
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--rounds" => o.rounds = number("--rounds", argv.next())?,
            "--warmup" => o.warmup = number("--warmup", argv.next())?,
            "--schedulers" => o.schedulers = list("--schedulers", argv.next())?,
            "--workloads" => o.workloads = list("--workloads", argv.next())?,
            "--duration" => {
                let s: f64 = number("--duration", argv.next())?;
                if !(s.is_finite() && s > 0.0 && s <= 3600.0) {
                    return Err(format!("--duration: {s} is not in (0, 3600] seconds"));
                }
                o.duration = Duration::from_secs_f64(s);
            }
            "--loops" => o.loops = number("--loops", argv.next())?,
            "--forks" => o.forks = number("--forks", argv.next())?,
            "--groups" => o.groups = number("--groups", argv.next())?,
            "--msg-loops" => o.msg_loops = number("--msg-loops", argv.next())?,
            "--pipe-loops" => o.pipe_loops = number("--pipe-loops", argv.next())?,
            "--sched-args" => {
                let v = argv.next().ok_or("--sched-args needs NAME=ARGS")?;
                let (name, args) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--sched-args: {v:?} is not NAME=ARGS"))?;
                o.sched_args.push((
                    name.to_string(),
                    args.split_whitespace().map(String::from).collect(),
                ));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    if [o.loops, o.forks, o.groups, o.msg_loops, o.pipe_loops].contains(&0) {
        return Err(
            "--loops, --forks, --groups, --msg-loops and --pipe-loops must be at least 1".into(),
        );
    }
    for w in &o.workloads {
        if !WORKLOADS.contains(&w.as_str()) {
            return Err(format!(
                "unknown workload {w:?} (known: {})",
                WORKLOADS.join(", ")
            ));
        }
    }
    for (name, _) in &o.sched_args {
        if !o.schedulers.contains(name) || name == "default" {
            return Err(format!(
                "--sched-args {name}=…: {name:?} is not a sched_ext scheduler in --schedulers"
            ));
        }
    }
    Ok(o)
}

/// The command line of a scheduler (`None` for `default`).
fn sched_argv(name: &str, o: &Options) -> Option<Vec<String>> {
    if name == "default" {
        return None;
    }
    let mut argv = vec![guest_bin(name).display().to_string()];
    if name == "scx-fifo" {
        argv.extend(["--stats-interval".to_string(), "0".to_string()]);
    }
    for (n, args) in &o.sched_args {
        if n == name {
            argv.extend(args.iter().cloned());
        }
    }
    Some(argv)
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| json_str(s)).collect();
    format!("[{}]", inner.join(","))
}

/// `{"k":v,…}`; non-finite values are left out (JSON has no NaN).
fn json_metrics(m: &[(&str, f64)]) -> String {
    let inner: Vec<String> = m
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(k, v)| format!("{}:{v}", json_str(k)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Print one line with a single write(2), so console lines do not interleave.
fn emit(line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(buf.as_bytes());
    let _ = out.flush();
}

fn say(msg: &str) {
    emit(&format!("vm-bench: {msg}"));
}

struct Run<'a> {
    round: u32,
    warmup: bool,
    workload: &'a str,
    scheduler: &'a str,
}

impl Run<'_> {
    fn head(&self, kind: &str) -> String {
        format!(
            "\"type\":{},\"round\":{},\"warmup\":{},\"workload\":{},\"scheduler\":{}",
            json_str(kind),
            self.round,
            self.warmup,
            json_str(self.workload),
            json_str(self.scheduler)
        )
    }

    fn sample(&self, workload: &str, m: &[(&str, f64)]) -> String {
        let run = Run { workload, ..*self };
        format!(
            "bench: {{{},\"metrics\":{}}}",
            run.head("sample"),
            json_metrics(m)
        )
    }

    fn error(&self, msg: &str) -> String {
        format!(
            "bench: {{{},\"message\":{}}}",
            self.head("error"),
            json_str(msg)
        )
    }
}

fn fmt_metrics(m: &[(&str, f64)]) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", short(*v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.3}M", v / 1e6)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

// ---------------------------------------------------------------------------------------------
// Low-level process helpers (the forked children only make async-signal-safe calls)
// ---------------------------------------------------------------------------------------------

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_err("pipe2"));
    }
    // SAFETY: fresh fds owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Fork; the child runs `child` (which must only make async-signal-safe calls and never
/// returns). Returns the child's pid.
fn fork_child(child: impl FnOnce() -> i32) -> Result<libc::pid_t, String> {
    // SAFETY: the child only runs `child`, which by contract makes async-signal-safe calls
    // (read, write, close, execv, arithmetic), and then _exit()s.
    match unsafe { libc::fork() } {
        -1 => Err(os_err("fork")),
        0 => {
            let code = child();
            // SAFETY: _exit is async-signal-safe and never returns.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid),
    }
}

fn close_raw(fd: RawFd) {
    // SAFETY: closing an fd inherited by a forked child, which owns its copy.
    unsafe { libc::close(fd) };
}

/// Read exactly `buf.len()` bytes (false on EOF or error).
fn read_full(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled part of `buf`.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        got += n as usize;
    }
    true
}

/// Write all of `buf` (false on error).
fn write_full(fd: RawFd, buf: &[u8]) -> bool {
    let mut put = 0;
    while put < buf.len() {
        // SAFETY: writing from the unwritten part of `buf`.
        let n = unsafe { libc::write(fd, buf[put..].as_ptr().cast(), buf.len() - put) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        put += n as usize;
    }
    true
}

/// Wait for a child; Ok(status) as waitpid reports it.
fn wait_pid(pid: libc::pid_t) -> Result<libc::c_int, String> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out pointer; `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(os_err("waitpid"));
        }
    }
}

fn exited_ok(status: libc::c_int) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Children killed (SIGKILL) and reaped when dropped.
#[derive(Default)]
struct Kids(Vec<libc::pid_t>);

impl Kids {
    /// Wait for every child; error unless all exited with status 0.
    fn wait_all(&mut self) -> Result<(), String> {
        let mut bad = 0;
        for pid in std::mem::take(&mut self.0) {
            if !exited_ok(wait_pid(pid)?) {
                bad += 1;
            }
        }
        if bad > 0 {
            return Err(format!("{bad} worker process(es) failed"));
        }
        Ok(())
    }
}

impl Drop for Kids {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill and reap our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Shared anonymous memory holding one counter per hog.
struct Counters {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Counters {
    fn new(n: usize) -> Result<Self, String> {
        let len = (n * 64).max(4096);
        // SAFETY: a fresh shared anonymous mapping; zero-filled by the kernel.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(os_err("mmap"));
        }
        Ok(Counters { ptr, len })
    }

    /// Counter `i` (each on its own cache line).
    fn get(&self, i: usize) -> &AtomicU64 {
        assert!(i * 64 + 8 <= self.len);
        // SAFETY: in bounds, 64-byte aligned (the mapping is page aligned), zero-initialised,
        // and only ever accessed atomically.
        unsafe { &*(self.ptr.cast::<u8>().add(i * 64).cast::<AtomicU64>()) }
    }
}

impl Drop for Counters {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; no reference outlives `self`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

/// Round-trip latencies in ns.
struct Latencies(Vec<u64>);

impl Latencies {
    fn percentile(sorted: &[u64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        // Nearest rank.
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1] as f64
    }

    fn metrics(mut self) -> Vec<(&'static str, f64)> {
        self.0.sort_unstable();
        let n = self.0.len();
        let mean = if n == 0 {
            f64::NAN
        } else {
            self.0.iter().sum::<u64>() as f64 / n as f64
        };
        vec![
            ("mean_us", mean / 1e3),
            ("p50_us", Self::percentile(&self.0, 50.0) / 1e3),
            ("p99_us", Self::percentile(&self.0, 99.0) / 1e3),
            ("round_trips", n as f64),
        ]
    }
}

/// One process echoes bytes back; we time `write` → `read` round trips for `dur`.
fn pingpong(dur: Duration) -> Result<Latencies, String> {
    let (to_r, to_w) = pipe()?;
    let (back_r, back_w) = pipe()?;
    let (cr, cw, pw, pr) = (
        to_r.as_raw_fd(),
        back_w.as_raw_fd(),
        to_w.as_raw_fd(),
        back_r.as_raw_fd(),
    );
    let mut kids = Kids::default();
    kids.0.push(fork_child(|| {
        close_raw(pw);
        close_raw(pr);
        let mut b = [0u8; 1];
        while read_full(cr, &mut b) {
            if !write_full(cw, &b) {
                return 1;
            }
        }
        0
    })?);
    drop(to_r);
    drop(back_w);

    let mut b = [0u8; 1];
    // A few untimed round trips first (the child has to start running).
    for _ in 0..20 {
        if !write_full(pw, &b) || !read_full(pr, &mut b) {
            return Err("the ping-pong partner went away".into());
        }
    }
    let mut lat = Vec::with_capacity(1 << 16);
    let end = now_ns() + dur.as_nanos() as u64;
    loop {
        let t0 = now_ns();
        if t0 >= end {
            break;
        }
        if !write_full(pw, &b) || !read_full(pr, &mut b) {
            return Err("the ping-pong partner went away".into());
        }
        lat.push(now_ns() - t0);
    }
    drop(to_w); // EOF: the partner exits
    drop(back_r);
    kids.wait_all()?;
    Ok(Latencies(lat))
}

/// Spin, adding the iterations done to `counter` in batches.
fn hog(counter: &AtomicU64) -> i32 {
    const BATCH: u64 = 10_000;
    let mut x = 1u64;
    loop {
        for _ in 0..BATCH {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        std::hint::black_box(x);
        counter.fetch_add(BATCH, Ordering::Relaxed);
    }
}

/// Run `f` beside [`HOGS`] CPU-bound processes; its result and the hogs' loop iterations per
/// second (summed) while it ran.
fn beside_hogs<T>(f: impl FnOnce() -> Result<T, String>) -> Result<(T, f64), String> {
    let counters = Counters::new(HOGS)?;
    let mut hogs = Kids::default();
    for i in 0..HOGS {
        let c = counters.get(i);
        hogs.0.push(fork_child(|| hog(c))?);
    }
    // Let the hogs get going before the measured window.
    std::thread::sleep(Duration::from_millis(300));
    let sum = || {
        (0..HOGS)
            .map(|i| counters.get(i).load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let (c0, t0) = (sum(), Instant::now());
    let out = f()?;
    let (c1, window) = (sum(), t0.elapsed());
    drop(hogs); // SIGKILL and reap
    Ok((out, (c1 - c0) as f64 / window.as_secs_f64()))
}

fn pingpong_hogs(dur: Duration) -> Result<Vec<(&'static str, f64)>, String> {
    let (lat, hog_ips) = beside_hogs(|| pingpong(dur))?;
    let mut m = lat.metrics();
    m.push(("hog_ips", hog_ips));
    Ok(m)
}

/// Hackbench-style message passing; returns the elapsed time.
fn messages(loops: u32) -> Result<Duration, String> {
    let (start_r, start_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let (sr, sw, rr, rw) = (
        start_r.as_raw_fd(),
        start_w.as_raw_fd(),
        ready_r.as_raw_fd(),
        ready_w.as_raw_fd(),
    );
    let mut kids = Kids::default();
    let mut pipes = Vec::new();
    for _ in 0..GROUPS {
        let group: Vec<(OwnedFd, OwnedFd)> = (0..GROUP_RECEIVERS)
            .map(|_| pipe())
            .collect::<Result<_, _>>()?;
        let ins: Vec<RawFd> = group.iter().map(|(r, _)| r.as_raw_fd()).collect();
        let outs: Vec<RawFd> = group.iter().map(|(_, w)| w.as_raw_fd()).collect();
        // Every child: say it is ready, then wait for EOF on the start pipe.
        let barrier = || {
            close_raw(sw);
            close_raw(rr);
            if !write_full(rw, &[1]) {
                return false;
            }
            let mut b = [0u8; 1];
            // SAFETY: reading one byte into `b`; 0 (EOF) is the start signal.
            unsafe { libc::read(sr, b.as_mut_ptr().cast(), 1) == 0 }
        };
        for &inp in &ins {
            let want = GROUP_SENDERS * loops as usize * MESSAGE_BYTES;
            kids.0.push(fork_child(|| {
                if !barrier() {
                    return 2;
                }
                let mut buf = [0u8; MESSAGE_BYTES];
                let mut got = 0;
                while got < want {
                    // SAFETY: reading into `buf`.
                    let n = unsafe { libc::read(inp, buf.as_mut_ptr().cast(), buf.len()) };
                    if n <= 0 {
                        return 1;
                    }
                    got += n as usize;
                }
                0
            })?);
        }
        for _ in 0..GROUP_SENDERS {
            let outs = &outs;
            kids.0.push(fork_child(|| {
                if !barrier() {
                    return 2;
                }
                let buf = [0x5au8; MESSAGE_BYTES];
                for _ in 0..loops {
                    for &out in outs {
                        if !write_full(out, &buf) {
                            return 1;
                        }
                    }
                }
                0
            })?);
        }
        pipes.extend(group);
    }
    drop(pipes);
    drop(start_r);
    drop(ready_w);
    let mut b = vec![0u8; kids.0.len()];
    if !read_full(rr, &mut b) {
        return Err("a message-passing worker died before starting".into());
    }
    let t0 = Instant::now();
    drop(start_w); // go
    kids.wait_all()?;
    Ok(t0.elapsed())
}

/// fork + exec /bin/true + wait, `n` times; returns the elapsed time.
fn forkexec(n: u32) -> Result<Duration, String> {
    let path = CString::new("/bin/true").expect("no NUL");
    let argv = [path.as_ptr(), std::ptr::null()];
    let t0 = Instant::now();
    for _ in 0..n {
        let pid = fork_child(|| {
            // SAFETY: a NUL-terminated path and argv; on failure we fall through to _exit.
            unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
            127
        })?;
        let status = wait_pid(pid)?;
        if !exited_ok(status) {
            return Err(format!("/bin/true failed (wait status {status})"));
        }
    }
    Ok(t0.elapsed())
}

// ---------------------------------------------------------------------------------------------
// Standard third-party tools
// ---------------------------------------------------------------------------------------------

/// The guest program a tool workload runs (`None` for our own workloads).
fn tool_program(workload: &str) -> Option<&'static str> {
    match workload {
        "hackbench" => Some("hackbench"),
        "perf_messaging" | "perf_pipe" => Some("perf"),
        "cyclictest" => Some("cyclictest"),
        _ => None,
    }
}

/// The command line of a tool workload.
fn tool_argv(workload: &str, o: &Options) -> Option<Vec<String>> {
    let bin = guest_bin(tool_program(workload)?).display().to_string();
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let mut argv = vec![bin];
    let (groups, msg_loops) = (o.groups.to_string(), o.msg_loops.to_string());
    let messaging = ["-g", groups.as_str(), "-l", msg_loops.as_str()];
    match workload {
        "hackbench" => argv.extend(v(&messaging)),
        "perf_messaging" => {
            argv.extend(v(&["bench", "sched", "messaging"]));
            argv.extend(v(&messaging));
        }
        "perf_pipe" => argv.extend(v(&[
            "bench",
            "sched",
            "pipe",
            "-l",
            &o.pipe_loops.to_string(),
        ])),
        "cyclictest" => {
            // One wake-up per ms for the duration. `--policy=other` alone: a `-p` given
            // before it would make cyclictest pick a real-time priority anyway.
            let loops = (o.duration.as_secs_f64() * 1000.0).round().max(1.0) as u64;
            argv.extend(v(&[
                "-q",
                "--policy=other",
                "-i",
                "1000",
                "-t",
                "1",
                "-l",
                &loops.to_string(),
                "--default-system",
            ]))
        }
        _ => return None,
    }
    Some(argv)
}

/// Run a tool to completion: its standard output and error, or an error naming it and
/// showing what it printed.
fn run_tool(argv: &[String]) -> Result<String, String> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start `{}`: {e}", argv.join(" ")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}); it printed:\n{}",
            argv.join(" "),
            describe_status(out.status),
            text.trim_end()
        ));
    }
    Ok(text)
}

/// The error for output that does not parse.
fn unparsable(tool: &str, why: &str, text: &str) -> String {
    format!(
        "cannot parse the output of {tool}: {why}; it printed:\n{}",
        text.trim_end()
    )
}

/// A non-negative finite number.
fn parse_number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

/// The first token after `prefix` on the first line (trimmed) that starts with it.
fn value_after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
}

/// The first token of the first line (trimmed) whose last token is `suffix`.
fn value_before<'a>(text: &'a str, suffix: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| match l.split_whitespace().collect::<Vec<&str>>()[..] {
            [value, unit] if unit == suffix => Some(value),
            _ => None,
        })
}

/// Seconds of `perf bench sched messaging` (`Total time: 0.245 [sec]`).
fn parse_perf_messaging(text: &str) -> Result<f64, String> {
    const TOOL: &str = "perf bench sched messaging";
    value_after(text, "Total time:")
        .and_then(parse_number)
        .ok_or_else(|| unparsable(TOOL, "no `Total time: <seconds> [sec]` line", text))
}

/// `(µs per operation, operations per second)` of `perf bench sched pipe`.
fn parse_perf_pipe(text: &str) -> Result<(f64, f64), String> {
    const TOOL: &str = "perf bench sched pipe";
    let us = value_before(text, "usecs/op")
        .and_then(parse_number)
        .ok_or_else(|| unparsable(TOOL, "no `<number> usecs/op` line", text))?;
    let ops = value_before(text, "ops/sec")
        .and_then(parse_number)
        .ok_or_else(|| unparsable(TOOL, "no `<number> ops/sec` line", text))?;
    Ok((us, ops))
}

/// Seconds of rt-tests' hackbench (`Time: 0.161`).
fn parse_hackbench(text: &str) -> Result<f64, String> {
    value_after(text, "Time:")
        .and_then(parse_number)
        .ok_or_else(|| unparsable("hackbench", "no `Time: <seconds>` line", text))
}

/// cyclictest's summary of its measuring thread, in µs.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cyclic {
    priority: u32,
    cycles: u64,
    min_us: f64,
    avg_us: f64,
    max_us: f64,
}

/// The first `T:` summary line of `cyclictest -q`, e.g.
/// `T: 0 (1234) P: 0 I:1000 C:   1500 Min:     29 Act:   80 Avg:  148 Max:    8063`.
fn parse_cyclictest(text: &str) -> Result<Cyclic, String> {
    const TOOL: &str = "cyclictest";
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("T:"))
        .ok_or_else(|| unparsable(TOOL, "no `T: …` summary line", text))?;
    // `I:1000` has no space after the colon; the other fields do.
    let spaced = line.replace(':', ": ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let field = |key: &str| -> Result<f64, String> {
        tokens
            .windows(2)
            .find(|w| w[0] == key)
            .and_then(|w| parse_number(w[1]))
            .ok_or_else(|| unparsable(TOOL, &format!("no number after `{key}`"), text))
    };
    let c = Cyclic {
        priority: field("P:")? as u32,
        cycles: field("C:")? as u64,
        min_us: field("Min:")?,
        avg_us: field("Avg:")?,
        max_us: field("Max:")?,
    };
    if c.cycles == 0 {
        return Err(unparsable(TOOL, "it measured no cycle", text));
    }
    if c.priority != 0 {
        return Err(format!(
            "cyclictest ran its measuring thread at real-time priority {} instead of \
             SCHED_OTHER; it printed:\n{}",
            c.priority,
            text.trim_end()
        ));
    }
    Ok(c)
}

/// Run a tool workload; its metrics.
fn tool_workload(w: &str, o: &Options) -> Result<Vec<(&'static str, f64)>, String> {
    let argv = tool_argv(w, o).ok_or_else(|| format!("{w} is not a tool workload"))?;
    Ok(match w {
        "hackbench" => vec![("time_s", parse_hackbench(&run_tool(&argv)?)?)],
        "perf_messaging" => vec![("time_s", parse_perf_messaging(&run_tool(&argv)?)?)],
        "perf_pipe" => {
            let (us, ops) = parse_perf_pipe(&run_tool(&argv)?)?;
            vec![("us_per_op", us), ("ops_per_s", ops)]
        }
        "cyclictest" => {
            let (out, hog_ips) = beside_hogs(|| run_tool(&argv))?;
            let c = parse_cyclictest(&out)?;
            vec![
                ("avg_us", c.avg_us),
                ("max_us", c.max_us),
                ("min_us", c.min_us),
                ("cycles", c.cycles as f64),
                ("hog_ips", hog_ips),
            ]
        }
        _ => return Err(format!("{w} is not a tool workload")),
    })
}

// ---------------------------------------------------------------------------------------------
// Schedulers
// ---------------------------------------------------------------------------------------------

/// utime + stime of a process in clock ticks, from `/proc/<pid>/stat` text.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts with field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some(parse_cpu_ticks(&stat)? as f64 / hz)
}

/// The `key=value` numbers of the last line with `final` and `user_dispatches=`.
fn final_counter(lines: &str, key: &str) -> Option<u64> {
    let line = lines
        .lines()
        .rev()
        .find(|l| l.contains("final") && l.contains("user_dispatches="))?;
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn wait_state(want: &str, timeout: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    loop {
        let s = read_state().map_err(|e| format!("cannot read the sched_ext state: {e}"))?;
        if s == want {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            return Err(format!(
                "sched_ext state is {s:?}, not {want:?}, after {:.1} s",
                timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A running sched_ext scheduler.
struct Sched {
    name: String,
    guard: ChildGuard,
    log: std::path::PathBuf,
    attach: Duration,
    enabled_at: Instant,
}

/// What stopping a scheduler measured.
struct Stopped {
    detach: Duration,
    disabled: Duration,
    attached: Duration,
    output: String,
}

/// A failed scheduler's output: all of it goes to the console (prefixed), and the gist (the
/// last lines before any backtrace) is returned for the error message.
fn failure_output(name: &str, text: &str) -> String {
    for line in text.lines() {
        emit(&format!("vm-bench: {name}| {line}"));
    }
    let body: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Stack backtrace:") && !l.contains("stack backtrace:"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let gist = body[body.len().saturating_sub(4)..].join(" | ");
    if gist.is_empty() {
        "no output".to_string()
    } else {
        gist
    }
}

fn log_gist(name: &str, path: &Path) -> String {
    failure_output(name, &std::fs::read_to_string(path).unwrap_or_default())
}

impl Sched {
    fn start(name: &str, argv: &[String], seq: u32) -> Result<Sched, String> {
        wait_state("disabled", Duration::from_secs(10))
            .map_err(|e| format!("before starting {name}: {e}"))?;
        let log = std::path::PathBuf::from(format!("/tmp/vm-bench-{seq}-{name}.log"));
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let mut guard = ChildGuard::spawn(
            Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err),
        )
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
        loop {
            if let Some(st) = guard.child().try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "{name} exited ({}) before sched_ext became enabled: {}",
                    describe_status(st),
                    log_gist(name, &log)
                ));
            }
            if read_state().is_ok_and(|s| s == "enabled") {
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(format!("{name} did not attach within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Sched {
            name: name.to_string(),
            guard,
            log,
            attach: t0.elapsed(),
            enabled_at: Instant::now(),
        })
    }

    fn pid(&self) -> u32 {
        self.guard.id()
    }

    /// Still attached and running? (An ejected scheduler exits or leaves `enabled`.)
    fn check(&mut self) -> Result<(), String> {
        if let Some(st) = self.guard.child().try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "{} exited ({}) during the workload: {}",
                self.name,
                describe_status(st),
                log_gist(&self.name, &self.log)
            ));
        }
        match read_state() {
            Ok(s) if s == "enabled" => Ok(()),
            Ok(s) => Err(format!(
                "sched_ext state became {s:?} during the workload (ejected?)"
            )),
            Err(e) => Err(format!("cannot read the sched_ext state: {e}")),
        }
    }

    fn stop(mut self) -> Result<Stopped, String> {
        let attached = self.enabled_at.elapsed();
        let t0 = Instant::now();
        self.guard
            .signal(libc::SIGINT)
            .map_err(|e| format!("cannot SIGINT {}: {e}", self.name))?;
        let mut disabled = None;
        let status = loop {
            if disabled.is_none() && read_state().is_ok_and(|s| s == "disabled") {
                disabled = Some(t0.elapsed());
            }
            if let Some(st) = self.guard.child().try_wait().map_err(|e| e.to_string())? {
                break st;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = self.guard.stop(libc::SIGKILL, Duration::from_secs(5));
                return Err(format!(
                    "{} ignored SIGINT for 30 s and was killed",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let detach = t0.elapsed();
        let disabled = match disabled {
            Some(d) => d,
            None => {
                wait_state("disabled", Duration::from_secs(10))?;
                t0.elapsed()
            }
        };
        let output = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        if !status.success() {
            return Err(format!(
                "{} exited with {} after SIGINT: {}",
                self.name,
                describe_status(status),
                failure_output(&self.name, &output)
            ));
        }
        Ok(Stopped {
            detach,
            disabled,
            attached,
            output,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

/// Run one workload (under whatever is attached); `sched` is the scheduler process, if any.
fn run_workload(
    w: &str,
    o: &Options,
    sched: Option<&mut Sched>,
) -> Result<Vec<(&'static str, f64)>, String> {
    let pid = sched.as_ref().map(|s| s.pid());
    let m = match w {
        "pingpong" => pingpong(o.duration)?.metrics(),
        "pingpong_hogs" => pingpong_hogs(o.duration)?,
        "messages" => {
            let cpu0 = pid.and_then(cpu_secs);
            let elapsed = messages(o.loops)?;
            let cpu1 = pid.and_then(cpu_secs);
            let mut m = vec![("elapsed_s", elapsed.as_secs_f64())];
            if let (Some(a), Some(b)) = (cpu0, cpu1) {
                m.push(("sched_cpu_pct", 100.0 * (b - a) / elapsed.as_secs_f64()));
            }
            m
        }
        "forkexec" => {
            let t = forkexec(o.forks)?;
            vec![("per_s", f64::from(o.forks) / t.as_secs_f64())]
        }
        w if tool_program(w).is_some() => tool_workload(w, o)?,
        other => return Err(format!("unknown workload {other}")),
    };
    if let Some(s) = sched {
        s.check()?;
    }
    Ok(m)
}

/// One (round, workload, scheduler) run; prints its sample lines.
fn one_run(run: &Run, o: &Options, seq: u32) -> Result<(), String> {
    let Some(argv) = sched_argv(run.scheduler, o) else {
        let m = run_workload(run.workload, o, None)?;
        emit(&run.sample(run.workload, &m));
        say(&format!(
            "  {} {}: {}",
            run.workload,
            run.scheduler,
            fmt_metrics(&m)
        ));
        return Ok(());
    };
    let mut sched = Sched::start(run.scheduler, &argv, seq)?;
    let attach = sched.attach;
    let result = run_workload(run.workload, o, Some(&mut sched));
    let stopped = sched.stop();
    let mut m = result?;
    let stopped = stopped?;
    if run.workload == "messages" {
        if let Some(n) = final_counter(&stopped.output, "user_dispatches") {
            m.push(("user_dispatches", n as f64));
            m.push((
                "dispatches_per_s",
                n as f64 / stopped.attached.as_secs_f64(),
            ));
        }
        if let Some(n) = final_counter(&stopped.output, "kernel_dispatches") {
            m.push(("kernel_dispatches", n as f64));
        }
    }
    emit(&run.sample(run.workload, &m));
    let life = [
        ("attach_s", attach.as_secs_f64()),
        ("detach_s", stopped.detach.as_secs_f64()),
        ("disabled_s", stopped.disabled.as_secs_f64()),
    ];
    emit(&run.sample("sched", &life));
    say(&format!(
        "  {} {}: {} | {}",
        run.workload,
        run.scheduler,
        fmt_metrics(&m),
        fmt_metrics(&life)
    ));
    Ok(())
}

fn config_line(o: &Options) -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let sched_args: Vec<String> = o
        .sched_args
        .iter()
        .map(|(n, a)| format!("{n}={}", a.join(" ")))
        .collect();
    format!(
        "bench: {{\"type\":\"config\",\"rounds\":{},\"warmup\":{},\"schedulers\":{},\
         \"workloads\":{},\"duration_s\":{},\"loops\":{},\"forks\":{},\"groups\":{},\
         \"msg_loops\":{},\"pipe_loops\":{},\"sched_args\":{},\"kernel\":{},\"cpus\":{cpus}}}",
        o.rounds,
        o.warmup,
        json_list(&o.schedulers),
        json_list(&o.workloads),
        o.duration.as_secs_f64(),
        o.loops,
        o.forks,
        o.groups,
        o.msg_loops,
        o.pipe_loops,
        json_list(&sched_args),
        json_str(release.trim())
    )
}

fn run(o: &Options) -> u32 {
    // Fail fast on a scheduler that is not in the image.
    for s in &o.schedulers {
        if let Some(argv) = sched_argv(s, o) {
            if !Path::new(&argv[0]).exists() {
                say(&format!("{} is not in the guest image", argv[0]));
                emit(&format!(
                    "bench: {{\"type\":\"error\",\"scheduler\":{},\"message\":{}}}",
                    json_str(s),
                    json_str(&format!("{} is missing", argv[0]))
                ));
                return 1;
            }
        }
    }
    // And on a tool that is not.
    for w in &o.workloads {
        if let Some(argv) = tool_argv(w, o) {
            if !Path::new(&argv[0]).exists() {
                say(&format!("{} is not in the guest image", argv[0]));
                emit(&format!(
                    "bench: {{\"type\":\"error\",\"workload\":{},\"message\":{}}}",
                    json_str(w),
                    json_str(&format!("{} is missing", argv[0]))
                ));
                return 1;
            }
        }
    }
    let _ = std::fs::create_dir_all("/tmp");
    emit(&config_line(o));
    say(&format!(
        "{} warm-up + {} measured round(s) of {} under {}",
        o.warmup,
        o.rounds,
        o.workloads.join(", "),
        o.schedulers.join(", ")
    ));
    let (mut runs, mut errors, mut seq) = (0u32, 0u32, 0u32);
    let t0 = Instant::now();
    for round in 0..o.warmup + o.rounds {
        let warmup = round < o.warmup;
        let number = if warmup {
            round + 1
        } else {
            round - o.warmup + 1
        };
        say(&format!(
            "{} round {number} ({:.0} s in)",
            if warmup { "warm-up" } else { "measured" },
            t0.elapsed().as_secs_f64()
        ));
        for w in &o.workloads {
            for s in &o.schedulers {
                seq += 1;
                runs += 1;
                let r = Run {
                    round: number,
                    warmup,
                    workload: w,
                    scheduler: s,
                };
                if let Err(e) = one_run(&r, o, seq) {
                    errors += 1;
                    say(&format!("  {w} {s}: ERROR: {e}"));
                    emit(&r.error(&e));
                }
            }
        }
    }
    emit(&format!(
        "bench: {{\"type\":\"done\",\"runs\":{runs},\"errors\":{errors},\"secs\":{:.1}}}",
        t0.elapsed().as_secs_f64()
    ));
    errors
}

fn main() -> ExitCode {
    let o = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vm-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        0 => {
            say("done");
            ExitCode::SUCCESS
        }
        n => {
            say(&format!("{n} run(s) failed"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_flags() {
        assert_eq!(parse(&[]).unwrap(), Options::default());
        let o = parse(&[
            "--rounds",
            "2",
            "--warmup",
            "0",
            "--schedulers",
            "default,scx-fifo",
            "--workloads",
            "pingpong,forkexec",
            "--duration",
            "0.5",
            "--loops",
            "7",
            "--forks",
            "9",
            "--sched-args",
            "scx-fifo=--slice-us 1000",
        ])
        .unwrap();
        assert_eq!((o.rounds, o.warmup, o.loops, o.forks), (2, 0, 7, 9));
        assert_eq!(o.schedulers, ["default", "scx-fifo"]);
        assert_eq!(o.workloads, ["pingpong", "forkexec"]);
        assert_eq!(o.duration, Duration::from_millis(500));
        assert_eq!(
            sched_argv("scx-fifo", &o).unwrap(),
            [
                "/bin/scx-fifo",
                "--stats-interval",
                "0",
                "--slice-us",
                "1000"
            ]
        );
        assert_eq!(sched_argv("default", &o), None);
        assert_eq!(
            sched_argv("vruntime", &Options::default()).unwrap(),
            ["/bin/vruntime"]
        );
        assert!(parse(&["--rounds", "0"]).is_err());
        assert!(parse(&["--workloads", "nope"]).is_err());
        assert!(parse(&["--duration", "-1"]).is_err());
        assert!(parse(&["--sched-args", "other=--x"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn percentiles_and_metrics() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(Latencies::percentile(&v, 50.0), 50_000.0);
        assert_eq!(Latencies::percentile(&v, 99.0), 99_000.0);
        assert_eq!(Latencies::percentile(&[7], 99.0), 7.0);
        assert!(Latencies::percentile(&[], 50.0).is_nan());
        let m = Latencies(v).metrics();
        assert_eq!(m[0], ("mean_us", 50.5));
        assert_eq!(m[1], ("p50_us", 50.0));
        assert_eq!(m[3], ("round_trips", 100.0));
    }

    #[test]
    fn json_lines() {
        assert_eq!(json_str("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
        assert_eq!(
            json_metrics(&[("x", 1.5), ("nan", f64::NAN), ("y", 2.0)]),
            r#"{"x":1.5,"y":2}"#
        );
        let r = Run {
            round: 2,
            warmup: false,
            workload: "pingpong",
            scheduler: "scx-fifo",
        };
        assert_eq!(
            r.sample("sched", &[("attach_s", 0.25)]),
            r#"bench: {"type":"sample","round":2,"warmup":false,"workload":"sched","scheduler":"scx-fifo","metrics":{"attach_s":0.25}}"#
        );
        assert!(r.error("boom").ends_with(r#""message":"boom"}"#));
        assert!(config_line(&Options::default()).starts_with(r#"bench: {"type":"config","rounds":3,"warmup":1,"schedulers":["default","scx-fifo","vruntime"]"#));
    }

    #[test]
    fn parses_proc_stat_and_counters() {
        let stat = "42 (scx fifo) S 1 42 42 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 3 0 5";
        assert_eq!(parse_cpu_ticks(stat), Some(175));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        let out = "scx-fifo: attached\nscx-fifo: final online_cpus=2 user_dispatches=1234 \
                   kernel_dispatches=5\nscx-fifo: exit: ok\n";
        assert_eq!(final_counter(out, "user_dispatches"), Some(1234));
        assert_eq!(final_counter(out, "kernel_dispatches"), Some(5));
        assert_eq!(final_counter("nothing", "user_dispatches"), None);
    }

    const PERF_MESSAGING: &str = "\
# Running 'sched/messaging' benchmark:
# 20 sender and receiver processes per group
# 2 groups == 80 processes run

     Total time: 0.245 [sec]
";
    const PERF_PIPE: &str = "\
# Running 'sched/pipe' benchmark:
# Executed 10000 pipe operations between two processes

     Total time: 0.026 [sec]

       2.609900 usecs/op
         383156 ops/sec
";
    const HACKBENCH: &str = "\
Running in process mode with 2 groups using 40 file descriptors each (== 80 tasks)
Each sender will pass 100 messages of 100 bytes
Time: 0.161
";
    const CYCLICTEST: &str = "\
WARN: not setting cpu_dma_latency from cyclictest
T: 0 (19442) P: 0 I:1000 C:   1500 Min:     29 Act:   80 Avg:  148 Max:    8063
";

    #[test]
    fn parses_tool_output() {
        assert_eq!(parse_perf_messaging(PERF_MESSAGING), Ok(0.245));
        assert_eq!(parse_perf_pipe(PERF_PIPE), Ok((2.6099, 383156.0)));
        assert_eq!(parse_hackbench(HACKBENCH), Ok(0.161));
        assert_eq!(
            parse_cyclictest(CYCLICTEST),
            Ok(Cyclic {
                priority: 0,
                cycles: 1500,
                min_us: 29.0,
                avg_us: 148.0,
                max_us: 8063.0
            })
        );
        // Failures name the tool, say what is missing and show the text.
        let e = parse_perf_messaging("perf: 'bench' is not a perf-command\n").unwrap_err();
        assert!(
            e.starts_with("cannot parse the output of perf bench sched messaging: no `Total time"),
            "{e}"
        );
        assert!(
            e.ends_with("it printed:\nperf: 'bench' is not a perf-command"),
            "{e}"
        );
        // The time of pipe is not its µs/op.
        let e = parse_perf_pipe(PERF_MESSAGING).unwrap_err();
        assert!(
            e.contains("perf bench sched pipe: no `<number> usecs/op` line"),
            "{e}"
        );
        let e = parse_perf_pipe("       2.6 usecs/op\n").unwrap_err();
        assert!(e.contains("ops/sec"), "{e}");
        let e = parse_hackbench("Time: soon\n").unwrap_err();
        assert!(e.contains("hackbench: no `Time: <seconds>` line"), "{e}");
        assert!(parse_hackbench("Time: -1\n").is_err());
        assert!(parse_hackbench("").is_err());
        let e = parse_cyclictest("# /dev/cpu_dma_latency set to 0us\n").unwrap_err();
        assert!(
            e.starts_with("cannot parse the output of cyclictest: no `T: …`"),
            "{e}"
        );
        let e =
            parse_cyclictest("T: 0 (1) P: 0 I:1000 C: 10 Min: 1 Act: 2 Avg: x Max: 4").unwrap_err();
        assert!(e.contains("no number after `Avg:`"), "{e}");
        let e =
            parse_cyclictest("T: 0 (1) P: 0 I:1000 C: 0 Min: 0 Act: 0 Avg: 0 Max: 0").unwrap_err();
        assert!(e.contains("no cycle"), "{e}");
        // A real-time measuring thread is not what the benchmark measures.
        let rt = "defaulting realtime priority to 2\nT: 0 (7) P: 2 I:1000 C: 9 Min: 1 Act: 2 Avg: 3 Max: 4\n";
        let e = parse_cyclictest(rt).unwrap_err();
        assert!(
            e.starts_with("cyclictest ran its measuring thread at real-time priority 2"),
            "{e}"
        );
    }

    #[test]
    fn tool_command_lines() {
        let o = parse(&[
            "--groups",
            "3",
            "--msg-loops",
            "50",
            "--pipe-loops",
            "7",
            "--duration",
            "1.5",
        ])
        .unwrap();
        assert_eq!(
            tool_argv("hackbench", &o).unwrap(),
            ["/bin/hackbench", "-g", "3", "-l", "50"]
        );
        assert_eq!(
            tool_argv("perf_messaging", &o).unwrap(),
            [
                "/bin/perf",
                "bench",
                "sched",
                "messaging",
                "-g",
                "3",
                "-l",
                "50"
            ]
        );
        assert_eq!(
            tool_argv("perf_pipe", &o).unwrap(),
            ["/bin/perf", "bench", "sched", "pipe", "-l", "7"]
        );
        let c = tool_argv("cyclictest", &o).unwrap();
        assert_eq!(c[..3], ["/bin/cyclictest", "-q", "--policy=other"]);
        assert!(!c.iter().any(|a| a == "-p"), "{c:?}");
        assert!(c.windows(2).any(|w| w == ["-l", "1500"]), "{c:?}");
        assert!(c.windows(2).any(|w| w == ["-i", "1000"]), "{c:?}");
        assert_eq!(tool_argv("pingpong", &o), None);
        assert!(parse(&["--pipe-loops", "0"]).is_err());
        let e = run_tool(&["/bin/sh".into(), "-c".into(), "echo oops; exit 3".into()]).unwrap_err();
        assert!(
            e.contains("failed (exit status 3); it printed:\noops"),
            "{e}"
        );
    }

    #[test]
    fn workloads_run_on_the_host() {
        // Small versions of each workload, under whatever scheduler the host has.
        let m = pingpong(Duration::from_millis(50)).unwrap().metrics();
        assert!(m[3].1 > 0.0, "{m:?}");
        let m = pingpong_hogs(Duration::from_millis(50)).unwrap();
        assert!(m.iter().any(|(k, v)| *k == "hog_ips" && *v > 0.0), "{m:?}");
        assert!(messages(5).unwrap() > Duration::ZERO);
        if Path::new("/bin/true").exists() {
            assert!(forkexec(3).unwrap() > Duration::ZERO);
        }
        // The real tools, where this host has them (`cargo xtask setup` installs them).
        let o = parse(&[
            "--msg-loops",
            "5",
            "--pipe-loops",
            "100",
            "--duration",
            "0.1",
        ])
        .unwrap();
        for w in ["hackbench", "perf_messaging", "perf_pipe", "cyclictest"] {
            if Path::new(&tool_argv(w, &o).unwrap()[0]).exists() {
                let m = tool_workload(w, &o).unwrap_or_else(|e| panic!("{w}: {e}"));
                assert!(m.iter().all(|(_, v)| v.is_finite()), "{w}: {m:?}");
            }
        }
    }
}
