//! The sched_ext guest's `/init` (PID 1), built as a static executable (see
//! [`super::build_init`](crate::guest::build_init)); std and libc only.
//!
//! Run as PID 1, it mounts the usual pseudo file systems, raises `RLIMIT_MEMLOCK`, reads the plan
//! ([`plan::PLAN_PATH`], format in `plan.rs`), runs each test as a child in its own process
//! group with a timeout, reports on the console (its stdout), and powers the machine off.
//! PID 1 must never exit (the kernel would panic), so every way out, including a panic, ends
//! in `reboot(RB_POWER_OFF)`; with `vm.shell=1` on the kernel command line it execs `/bin/sh`
//! on the console after the tests instead.
//!
//! Run as any other PID, it is a multi-call program for the guest's programs:
//! `/init run …` starts a scheduler, waits for sched_ext to be enabled, runs a workload (or
//! the built-in demo, or a shell), stops the scheduler with SIGINT and reports
//! (`super::demo`); `/init demo --duration SECS` runs only the built-in demo workload.
//!
//! # Console line grammar
//!
//! Every line `/init` writes starts with `init: ` and is written with one `write(2)`. Lines
//! of tests and of the kernel may come in between; a parser should look for these prefixes
//! and ignore everything else (including other `init: ` lines, e.g. `init: warning: …`).
//! On a serial console lines end in `\r\n`, and text without a newline from firmware or a
//! test may precede `init: ` on the same line: find `init: ` in the line (`/init` prints a
//! newline before its first line to limit this) and trim trailing whitespace.
//! `<name>` is a test name (no whitespace), `<detail>` one token without whitespace.
//!
//! ```text
//! init: kernel <release> cpus=<n> sched_ext=<state>    once, first; <state> is the
//!                                                      content of /sys/kernel/sched_ext/state
//!                                                      (e.g. enabled, disabled) or "absent"
//! init: start <name>                                   before each test
//! init: result <name> <verdict> <seconds> <detail>     exactly once per started test
//! init: summary passed=<N> failed=<M>                  after all tests; M counts fail,
//!                                                      timeout and crash
//! init: success                                        every test was ok (also: no tests)
//! init: failure                                        some test was not ok
//! init: failure plan: <why>                            plan missing/unreadable/invalid; no
//!                                                      tests ran
//! init: failure mount: <why>                           a required mount failed; no tests ran
//! init: failure panic: <message>                       `/init` itself panicked
//! ```
//!
//! Exactly one line starting with `init: success` or `init: failure` ends a run; after it
//! the guest powers off (or, with `vm.shell=1`, starts a shell).
//!
//! `<verdict>` and `<detail>`:
//!
//! | verdict   | meaning                                  | detail                   |
//! |-----------|------------------------------------------|--------------------------|
//! | `ok`      | exited with status 0                     | `exit=0`                 |
//! | `fail`    | exited non-zero                          | `exit=<code>`            |
//! | `fail`    | could not be started (e.g. not found)    | `spawn-errno=<errno>`    |
//! | `timeout` | still running at its timeout; the whole  | `timeout=<t>s` (e.g.     |
//! |           | process group was SIGKILLed              | `30s`, `2.5s`)           |
//! | `crash`   | killed by a signal (not by the timeout)  | `signal=<n>` (`11`)      |
//!
//! `<seconds>` is the wall time from start to reaping, with two decimals (`0.03`).

use std::ffi::CString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::plan::{self, Plan, PlanTest};

/// Write one console line in one `write(2)` (errors are ignored: there is nobody to tell).
fn say(line: &str) {
    let mut buf = String::with_capacity(line.len() + 7);
    buf.push_str("init: ");
    buf.push_str(line);
    buf.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(buf.as_bytes());
    let _ = out.flush();
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Sync and power off; never returns.
fn power_off() -> ! {
    // SAFETY: plain syscalls without pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Only reached if reboot(2) failed; PID 1 must not exit, so wait forever.
    say(&format!(
        "warning: reboot(RB_POWER_OFF) failed: errno {}",
        errno()
    ));
    loop {
        // SAFETY: pause(2) has no arguments.
        unsafe { libc::pause() };
    }
}

/// A file system `/init` mounts.
struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: libc::c_ulong,
    data: &'static str,
    /// A failure is fatal (`init: failure mount: …`) rather than a warning.
    required: bool,
}

const NOSUID: libc::c_ulong = libc::MS_NOSUID;
const NODEV: libc::c_ulong = libc::MS_NODEV;
const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;

const fn m(
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: libc::c_ulong,
    data: &'static str,
    required: bool,
) -> Mount {
    Mount {
        source,
        target,
        fstype,
        flags,
        data,
        required,
    }
}

/// In order: later targets live on earlier mounts.
const MOUNTS: &[Mount] = &[
    m("proc", "/proc", "proc", NOSUID | NODEV | NOEXEC, "", true),
    m("sysfs", "/sys", "sysfs", NOSUID | NODEV | NOEXEC, "", true),
    m("devtmpfs", "/dev", "devtmpfs", NOSUID, "mode=0755", true),
    m("tmpfs", "/tmp", "tmpfs", NOSUID | NODEV, "mode=1777", true),
    m("tmpfs", "/run", "tmpfs", NOSUID | NODEV, "mode=0755", false),
    m(
        "devpts",
        "/dev/pts",
        "devpts",
        NOSUID | NOEXEC,
        "mode=0620,ptmxmode=0666",
        false,
    ),
    m(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        NOSUID | NODEV,
        "mode=1777",
        false,
    ),
    m(
        "bpf",
        "/sys/fs/bpf",
        "bpf",
        NOSUID | NODEV | NOEXEC,
        "mode=0700",
        false,
    ),
    m(
        "tracefs",
        "/sys/kernel/tracing",
        "tracefs",
        NOSUID | NODEV | NOEXEC,
        "",
        false,
    ),
    m(
        "debugfs",
        "/sys/kernel/debug",
        "debugfs",
        NOSUID | NODEV | NOEXEC,
        "",
        false,
    ),
    m(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        NOSUID | NODEV | NOEXEC,
        "",
        false,
    ),
];

fn cstr(s: &str) -> CString {
    CString::new(s).expect("static strings have no NUL")
}

fn mount_one(mt: &Mount) -> Result<(), String> {
    // Mount points on sysfs already exist (mkdir there fails), elsewhere create them.
    if let Err(e) = std::fs::create_dir_all(mt.target) {
        if !std::path::Path::new(mt.target).is_dir() {
            return Err(format!("mkdir {}: {e}", mt.target));
        }
    }
    let (src, tgt, fs, data) = (
        cstr(mt.source),
        cstr(mt.target),
        cstr(mt.fstype),
        cstr(mt.data),
    );
    let data_ptr = if mt.data.is_empty() {
        std::ptr::null()
    } else {
        data.as_ptr().cast()
    };
    // SAFETY: all pointers are NUL-terminated strings alive for the call (or null data).
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), mt.flags, data_ptr) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("{} on {}: {e}", mt.fstype, mt.target));
    }
    Ok(())
}

fn mount_all() -> Result<(), String> {
    for mt in MOUNTS {
        if let Err(e) = mount_one(mt) {
            if mt.required {
                return Err(e);
            }
            say(&format!("warning: optional mount failed: {e}"));
        }
    }
    Ok(())
}

fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `lim` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        say(&format!(
            "warning: setrlimit(RLIMIT_MEMLOCK, infinity): errno {}",
            errno()
        ));
    }
}

/// Set `IFF_UP` on `lo`; best effort.
fn loopback_up() {
    // SAFETY: a socket, two ioctls on a zeroed ifreq whose name we fill, and close.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            say(&format!("warning: lo: socket: errno {}", errno()));
            return;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        let ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) == 0 && {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) == 0
        };
        if !ok {
            say(&format!("warning: lo: cannot bring up: errno {}", errno()));
        }
        libc::close(fd);
    }
}

fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct; release is NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "unknown".into();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

fn online_cpus() -> i64 {
    // SAFETY: sysconf has no pointer arguments.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }
}

/// `<state>` of the kernel line: one token.
fn sched_ext_state(content: Option<&str>) -> String {
    match content.map(str::trim) {
        None => "absent".into(),
        Some("") => "empty".into(),
        Some(s) => s.split_whitespace().collect::<Vec<_>>().join("_"),
    }
}

/// Whether the kernel command line asks for a shell after the tests.
fn wants_shell(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == "vm.shell=1")
}

/// The outcome of one test.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Ok,
    Fail,
    Timeout,
    Crash,
}

impl Verdict {
    fn as_str(&self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Fail => "fail",
            Verdict::Timeout => "timeout",
            Verdict::Crash => "crash",
        }
    }
}

/// Classify a `waitpid` status; `timed_out` wins over the SIGKILL it caused.
fn classify(status: libc::c_int, timed_out: bool, timeout: Duration) -> (Verdict, String) {
    if timed_out {
        return (
            Verdict::Timeout,
            format!("timeout={}s", fmt_secs_short(timeout)),
        );
    }
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        let v = if code == 0 {
            Verdict::Ok
        } else {
            Verdict::Fail
        };
        (v, format!("exit={code}"))
    } else if libc::WIFSIGNALED(status) {
        (Verdict::Crash, format!("signal={}", libc::WTERMSIG(status)))
    } else {
        (Verdict::Crash, format!("status={status:#x}"))
    }
}

/// `30` for 30 s, `2.5` for 2500 ms, `0.001` for 1 ms.
fn fmt_secs_short(d: Duration) -> String {
    let ms = d.as_millis();
    let mut s = format!("{}", ms / 1000);
    let frac = ms % 1000;
    if frac != 0 {
        let f = format!("{frac:03}");
        let _ = write!(s, ".{}", f.trim_end_matches('0'));
    }
    s
}

fn result_line(name: &str, v: &Verdict, elapsed: Duration, detail: &str) -> String {
    format!(
        "result {name} {} {:.2} {detail}",
        v.as_str(),
        elapsed.as_secs_f64()
    )
}

/// Reap every child that has exited; returns the status of `pid` if it was among them.
fn reap_nohang(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut found = None;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r <= 0 {
            return found;
        }
        if r == pid {
            found = Some(status);
        }
    }
}

/// Wait (with SIGCHLD blocked) until a child may have changed state, at most `d`.
fn wait_sigchld(d: Duration) {
    // SAFETY: a set holding SIGCHLD and a valid timespec.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let ts = libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        };
        libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
    }
}

/// Block SIGCHLD (so `sigtimedwait` sees it) and give it a no-op handler (so it is never
/// discarded as ignored). Children get an empty signal mask and default handlers from
/// `std::process::Command` and `execve`.
fn setup_sigchld() {
    extern "C" fn nop(_: libc::c_int) {}
    // SAFETY: installing a handler that does nothing; masks are valid sigsets.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = nop as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Whether `/proc/<pid>/stat` describes a kernel thread (PF_KTHREAD in `flags`).
fn is_kernel_thread(stat: &str) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    // Fields after the `(comm)`, which may contain spaces: state ppid pgrp session tty_nr
    // tpgid flags …
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    rest.split_whitespace()
        .nth(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// SIGKILL every user process but us (between tests nothing else should run), then reap
/// them, waiting up to a second.
fn kill_leftovers(pgid: libc::pid_t) {
    // SAFETY: kill(2) on a process group; ESRCH (already gone) is fine.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let me = std::process::id().to_string();
    let mut killed = 0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for ent in dir.flatten() {
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(pid) = name.parse::<libc::pid_t>() else {
                continue;
            };
            if name == me || pid <= 1 {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(ent.path().join("stat")) else {
                continue;
            };
            if is_kernel_thread(&stat) {
                continue;
            }
            // SAFETY: plain kill(2).
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r < 0 || (r == 0 && Instant::now() >= deadline) {
            // ECHILD: no child left. Or give up waiting: stragglers are reaped later.
            break;
        }
        if r == 0 {
            wait_sigchld(Duration::from_millis(50));
        }
    }
    if killed > 0 {
        say(&format!("warning: killed {killed} leftover process(es)"));
    }
}

/// Run one test; prints its start and result lines; returns whether it was ok.
fn run_test(t: &PlanTest) -> bool {
    say(&format!("start {}", t.name));
    let start = Instant::now();
    let spawned = Command::new(&t.argv[0])
        .args(&t.argv[1..])
        .stdin(Stdio::null())
        .process_group(0)
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            say(&format!("warning: cannot start {}: {e}", t.name));
            let detail = format!("spawn-errno={}", e.raw_os_error().unwrap_or(0));
            say(&result_line(
                &t.name,
                &Verdict::Fail,
                start.elapsed(),
                &detail,
            ));
            return false;
        }
    };
    let pid = child.id() as libc::pid_t;
    // We reap with waitpid(-1) ourselves; the handle is not needed (dropping it neither
    // waits nor kills).
    drop(child);
    let deadline = start + t.timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = reap_nohang(pid) {
            break st;
        }
        let now = Instant::now();
        if !timed_out && now >= deadline {
            timed_out = true;
            // SAFETY: kill(2) on the test's process group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            continue;
        }
        let left = if timed_out {
            Duration::from_millis(100)
        } else {
            deadline - now
        };
        wait_sigchld(left);
    };
    let elapsed = start.elapsed();
    let (v, detail) = classify(status, timed_out, t.timeout);
    say(&result_line(&t.name, &v, elapsed, &detail));
    kill_leftovers(pid);
    v == Verdict::Ok
}

fn set_env(plan: &Plan) {
    // PID 1 is single-threaded, so changing its environment is sound.
    std::env::set_var("PATH", "/bin:/usr/bin:/sbin");
    std::env::set_var("HOME", "/tmp");
    std::env::set_var("SCX_VM_GUEST", "1");
    for (k, v) in &plan.env {
        std::env::set_var(k, v);
    }
}

fn load_plan() -> Result<Plan, String> {
    let text = std::fs::read_to_string(plan::PLAN_PATH)
        .map_err(|e| format!("cannot read {}: {e}", plan::PLAN_PATH))?;
    Plan::parse(&text).map_err(|e| format!("{}: {e}", plan::PLAN_PATH))
}

/// The real terminal behind `/dev/console` (`/dev/ttyS0`), from
/// `/sys/class/tty/console/active` (last entry is the preferred console).
pub(super) fn console_tty(active: &str) -> Option<String> {
    active
        .split_whitespace()
        .last()
        .map(|t| format!("/dev/{t}"))
}

/// Make the console's real tty our stdio and controlling terminal (job control needs it;
/// `/dev/console` cannot be one). Best effort: on failure the shell runs without job control.
fn take_console_tty() {
    let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    let Some(tty) = console_tty(&active) else {
        return;
    };
    let Ok(path) = CString::new(tty) else { return };
    // SAFETY: open/dup2/close on our own descriptors, setsid and an ioctl without pointers.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if fd < 0 {
            return;
        }
        libc::setsid();
        libc::ioctl(fd, libc::TIOCSCTTY, 1);
        for target in 0..3 {
            libc::dup2(fd, target);
        }
        if fd > 2 {
            libc::close(fd);
        }
    }
}

fn exec_shell() {
    say("vm.shell=1: starting /bin/sh on the console (poweroff -f to leave)");
    std::env::set_var("PS1", "vm# ");
    take_console_tty();
    let e = Command::new("/bin/sh").exec();
    say(&format!("warning: cannot exec /bin/sh: {e}"));
}

/// The entry point of `/init`.
pub fn main() {
    if std::process::id() != 1 {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if let Some(mode) = args
            .first()
            .filter(|m| ["run", "demo"].contains(&m.as_str()))
        {
            std::process::exit(super::demo::main(mode, &args[1..]));
        }
        // Running it on a host as PID 1's code would mount over /proc and power the machine
        // off.
        eprintln!(
            "init: refusing to run: not PID 1 (this is the VM guest's /init); as a program it \
             takes `run [OPTIONS] [-- ARGS]` or `demo [--duration SECS]`"
        );
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "unknown".to_string()
        };
        let loc = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()));
        say(&format!("failure panic: {msg}{}", loc.unwrap_or_default()));
        power_off();
    }));
    if let Err(e) = mount_all() {
        say(&format!("failure mount: {e}"));
        power_off();
    }
    raise_memlock();
    loopback_up();
    setup_sigchld();

    // Firmware output before the kernel may leave the console mid-line ("Booting from
    // ROM.."): start ours on a fresh one.
    let _ = std::io::stdout().write_all(b"\n");
    let state = std::fs::read_to_string("/sys/kernel/sched_ext/state").ok();
    say(&format!(
        "kernel {} cpus={} sched_ext={}",
        kernel_release(),
        online_cpus(),
        sched_ext_state(state.as_deref())
    ));
    let shell = wants_shell(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());

    let plan = match load_plan() {
        Ok(p) => p,
        Err(e) => {
            say(&format!("failure plan: {e}"));
            if shell {
                set_env(&Plan::default());
                exec_shell();
            }
            power_off();
        }
    };
    set_env(&plan);

    let mut passed = 0;
    let mut failed = 0;
    for t in &plan.tests {
        if run_test(t) {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    say(&format!("summary passed={passed} failed={failed}"));
    say(if failed == 0 { "success" } else { "failure" });
    if shell {
        exec_shell();
    }
    power_off();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_statuses() {
        let t = Duration::from_secs(30);
        // Encodings as from wait(2): exit code in bits 8..16, signal in the low 7 bits.
        assert_eq!(classify(0, false, t), (Verdict::Ok, "exit=0".into()));
        assert_eq!(classify(1 << 8, false, t), (Verdict::Fail, "exit=1".into()));
        assert_eq!(
            classify(101 << 8, false, t),
            (Verdict::Fail, "exit=101".into())
        );
        assert_eq!(classify(11, false, t), (Verdict::Crash, "signal=11".into()));
        assert_eq!(
            classify(0x80 | 6, false, t),
            (Verdict::Crash, "signal=6".into())
        );
        assert_eq!(
            classify(9, true, t),
            (Verdict::Timeout, "timeout=30s".into())
        );
        // A test that exited just as the timeout hit still counts as a timeout.
        let t2 = Duration::from_millis(2500);
        assert_eq!(
            classify(0, true, t2),
            (Verdict::Timeout, "timeout=2.5s".into())
        );
    }

    #[test]
    fn short_seconds() {
        assert_eq!(fmt_secs_short(Duration::from_secs(2)), "2");
        assert_eq!(fmt_secs_short(Duration::from_millis(2500)), "2.5");
        assert_eq!(fmt_secs_short(Duration::from_millis(1)), "0.001");
        assert_eq!(fmt_secs_short(Duration::from_millis(10_050)), "10.05");
    }

    #[test]
    fn result_line_grammar() {
        let l = result_line(
            "a::b",
            &Verdict::Timeout,
            Duration::from_millis(2004),
            "timeout=2s",
        );
        assert_eq!(l, "result a::b timeout 2.00 timeout=2s");
        let l = result_line("x", &Verdict::Ok, Duration::from_micros(31_400), "exit=0");
        assert_eq!(l, "result x ok 0.03 exit=0");
    }

    #[test]
    fn kernel_line_pieces() {
        assert_eq!(sched_ext_state(None), "absent");
        assert_eq!(sched_ext_state(Some("enabled\n")), "enabled");
        assert_eq!(sched_ext_state(Some("\n")), "empty");
        assert!(wants_shell("console=ttyS0 vm.shell=1 quiet"));
        assert!(!wants_shell("console=ttyS0 vm.shell=10 xvm.shell=1"));
        assert_eq!(console_tty("tty0 ttyS0\n").as_deref(), Some("/dev/ttyS0"));
        assert_eq!(console_tty(""), None);
    }

    #[test]
    fn kthread_detection() {
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 8";
        let user = "57 (sh (weird) name) S 1 57 57 34816 57 4194560 99 0 0 0";
        assert!(is_kernel_thread(kthread));
        assert!(!is_kernel_thread(user));
        assert!(!is_kernel_thread("garbage"));
    }
}
