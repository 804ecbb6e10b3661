//! The guest side of `cargo scx-vm run` (and `cargo xtask vm-run`): `/init run …`, and the
//! built-in demo workload (`/init demo …`). std and libc only: it is part of the static
//! guest `/init`.
//!
//! ```text
//! /init run [--scheduler PATH] [--duration SECS] [--workload CMD | --shell]
//!           [--workload-timeout SECS] [--enable-timeout SECS] [--state-file PATH]
//!           [--] ARGS...
//! /init demo [--duration SECS]
//! ```
//!
//! `run` starts the scheduler (`/bin/scx-fifo ARGS` by default), waits until
//! `/sys/kernel/sched_ext/state` says `enabled` (at most `--enable-timeout`, 30 s) and prints
//! the ops name, then runs the workload: `/bin/sh -c CMD` with `--workload` (killed after
//! `--workload-timeout`), an interactive `/bin/sh` on the console with `--shell`, or else the
//! built-in demo (2 CPU hogs, a pipe ping-pong pair and bursts of short-lived forks) for
//! `--duration` seconds (10). Then it sends the scheduler SIGINT, waits for it (SIGKILL after
//! 30 s) and prints its exit status. Exits 1 if the scheduler never attached, was ejected
//! (sched_ext left `enabled` while it ran), died early or exited unsuccessfully, if the
//! workload failed or hung, or if sched_ext did not return to `disabled`; the reason is on a
//! `scx-vm: FAILED: ` line. Exits 2 on bad arguments. (`--state-file` replaces the sysfs
//! state file; tests on a host use a fake one.)

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The sched_ext state file.
const STATE_PATH: &str = "/sys/kernel/sched_ext/state";
/// The name of the attached scheduler's ops.
const OPS_PATH: &str = "/sys/kernel/sched_ext/root/ops";

/// `run`'s options.
#[derive(Debug)]
struct Options {
    duration: Duration,
    scheduler: String,
    enable_timeout: Duration,
    state_file: PathBuf,
    workload: Option<String>,
    shell: bool,
    workload_timeout: Option<Duration>,
    args: Vec<String>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        duration: Duration::from_secs(10),
        scheduler: "/bin/scx-fifo".to_string(),
        enable_timeout: Duration::from_secs(30),
        state_file: PathBuf::from(STATE_PATH),
        workload: None,
        shell: false,
        workload_timeout: None,
        args: Vec::new(),
    };
    let secs = |flag: &str, v: Option<String>| -> Result<Duration, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("{flag}: {v:?} is not a number of seconds"))
    };
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--duration" => opts.duration = secs("--duration", argv.next())?,
            "--enable-timeout" => opts.enable_timeout = secs("--enable-timeout", argv.next())?,
            "--workload-timeout" => {
                opts.workload_timeout = Some(secs("--workload-timeout", argv.next())?)
            }
            "--state-file" => {
                opts.state_file = argv.next().ok_or("--state-file needs a value")?.into();
            }
            "--scheduler" => {
                opts.scheduler = argv.next().ok_or("--scheduler needs a value")?;
            }
            "--workload" => opts.workload = Some(argv.next().ok_or("--workload needs a value")?),
            "--shell" => opts.shell = true,
            "--" => {
                opts.args.extend(argv);
                break;
            }
            _ => {
                // The first unknown word starts the scheduler's own arguments.
                opts.args.push(arg);
                opts.args.extend(argv);
                break;
            }
        }
    }
    if opts.shell && opts.workload.is_some() {
        return Err("--shell and --workload exclude each other".into());
    }
    Ok(opts)
}

/// Describe an exit status: `exit status 0`, `killed by signal 9 (SIGKILL)`.
fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGINT => " (SIGINT)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGBUS => " (SIGBUS)",
                _ => "",
            };
            format!("killed by signal {sig}{name}")
        }
        None => format!("{status}"),
    }
}

fn read_state_at(path: &std::path::Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string())
}

/// A child killed (with its process group when it has one) and reaped when dropped.
struct Guard {
    child: Child,
    group: bool,
}

impl Guard {
    fn try_wait(&mut self) -> Result<Option<ExitStatus>, String> {
        self.child.try_wait().map_err(|e| e.to_string())
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        let target = if self.group { -pid } else { pid };
        // SAFETY: kill(2) on our own unreaped child (or its process group).
        unsafe { libc::kill(target, sig) };
    }

    /// Ask with `sig`, SIGKILL after `grace`. Returns the status and whether it was killed.
    fn stop(&mut self, sig: libc::c_int, grace: Duration) -> Result<(ExitStatus, bool), String> {
        if let Some(s) = self.try_wait()? {
            return Ok((s, false));
        }
        self.signal(sig);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(s) = self.try_wait()? {
                return Ok((s, false));
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.signal(libc::SIGKILL);
        Ok((self.child.wait().map_err(|e| e.to_string())?, true))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

#[derive(Default)]
struct Counters {
    hog_loops: AtomicU64,
    ping_pongs: AtomicU64,
    forks: AtomicU64,
}

fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds that we then own.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fds owned by nobody else.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

/// Start the workload threads; they run until `stop` is set.
fn start_workload(stop: &Arc<AtomicBool>, c: &Arc<Counters>) -> Vec<thread::JoinHandle<()>> {
    let mut handles = Vec::new();
    for _ in 0..2 {
        let (stop, c) = (stop.clone(), c.clone());
        handles.push(thread::spawn(move || {
            let mut x = 1u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..100_000 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                std::hint::black_box(x);
                c.hog_loops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Ping-pong: two threads bounce one byte through two pipes. The pinger stops; closing its
    // write end makes the ponger see EOF.
    let (ping_r, ping_w) = pipe();
    let (pong_r, pong_w) = pipe();
    {
        let (stop, c) = (stop.clone(), c.clone());
        let (mut w, mut r) = (ping_w, pong_r);
        handles.push(thread::spawn(move || {
            let mut b = [0u8; 1];
            while !stop.load(Ordering::Relaxed) {
                if w.write_all(&b).is_err() || r.read_exact(&mut b).is_err() {
                    break;
                }
                c.ping_pongs.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    {
        let (mut r, mut w) = (ping_r, pong_w);
        handles.push(thread::spawn(move || {
            let mut b = [0u8; 1];
            while r.read_exact(&mut b).is_ok() {
                if w.write_all(&b).is_err() {
                    break;
                }
            }
        }));
    }

    // Fork bursts: 32 children that exit at once, then a short pause.
    {
        let (stop, c) = (stop.clone(), c.clone());
        handles.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut pids = Vec::new();
                for _ in 0..32 {
                    // SAFETY: the child only calls _exit, which is async-signal-safe.
                    let pid = unsafe { libc::fork() };
                    match pid {
                        // SAFETY: _exit in the forked child.
                        0 => unsafe { libc::_exit(0) },
                        p if p > 0 => pids.push(p),
                        _ => break,
                    }
                }
                for pid in pids {
                    // SAFETY: reaping our own child.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                    c.forks.fetch_add(1, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    handles
}

/// Stop the demo threads and print their counts.
fn finish_demo(
    stop: &AtomicBool,
    handles: Vec<thread::JoinHandle<()>>,
    c: &Counters,
    started: Instant,
) {
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    println!(
        "scx-vm: workload done in {:.1} s: {} hog loops, {} ping-pongs, {} forks",
        started.elapsed().as_secs_f64(),
        c.hog_loops.load(Ordering::Relaxed),
        c.ping_pongs.load(Ordering::Relaxed),
        c.forks.load(Ordering::Relaxed)
    );
}

/// An interactive `/bin/sh` on the console's real tty, as its controlling terminal.
fn spawn_shell() -> Result<Child, String> {
    let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    let tty = super::init::console_tty(&active).ok_or("no console tty for the shell")?;
    let path = std::ffi::CString::new(tty).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("/bin/sh");
    cmd.env("PS1", "vm# ");
    // SAFETY: the closure only makes async-signal-safe syscalls (setsid, open, ioctl, dup2,
    // close) on a path allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::ioctl(fd, libc::TIOCSCTTY, 1);
            for target in 0..3 {
                libc::dup2(fd, target);
            }
            if fd > 2 {
                libc::close(fd);
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start /bin/sh: {e}"))
}

/// What the workload phase ended with.
enum Phase {
    /// Ran to the end; `Err` = the workload itself failed.
    Done(Result<(), String>),
    /// The scheduler exited while the workload ran.
    SchedulerDied(ExitStatus),
    /// sched_ext left `enabled` while the scheduler ran.
    Ejected(String),
}

fn run(opts: Options) -> Result<(), String> {
    let read_state = || read_state_at(&opts.state_file);
    println!(
        "scx-vm: starting {} {} (sched_ext state: {})",
        opts.scheduler,
        opts.args.join(" "),
        read_state().unwrap_or_else(|e| format!("unreadable: {e}"))
    );
    let mut sched = Guard {
        child: Command::new(&opts.scheduler)
            .args(&opts.args)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", opts.scheduler))?,
        group: false,
    };

    // Wait for `enabled`, but notice a scheduler that dies first.
    let start = Instant::now();
    loop {
        if let Some(status) = sched.try_wait()? {
            return Err(format!(
                "{} exited ({}) before sched_ext became enabled: it never attached",
                opts.scheduler,
                describe_status(status)
            ));
        }
        if read_state().is_ok_and(|s| s == "enabled") {
            break;
        }
        if start.elapsed() >= opts.enable_timeout {
            let state = read_state().unwrap_or_else(|e| format!("unreadable: {e}"));
            let _ = sched.stop(libc::SIGINT, Duration::from_secs(10));
            return Err(format!(
                "sched_ext state did not become enabled within {:.0} s (it is {state:?}): {} \
                 never attached a sched_ext scheduler",
                opts.enable_timeout.as_secs_f64(),
                opts.scheduler
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let ops = std::fs::read_to_string(OPS_PATH)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string());
    let what = if opts.shell {
        "starting a shell on the console (exit or Ctrl-D ends it)".to_string()
    } else if let Some(w) = &opts.workload {
        format!("running the workload: {w}")
    } else {
        format!(
            "running the demo workload for {:.0} s (2 CPU hogs, a pipe ping-pong pair, fork \
             bursts)",
            opts.duration.as_secs_f64()
        )
    };
    println!(
        "scx-vm: sched_ext enabled after {:.2} s, ops {ops}; {what}",
        start.elapsed().as_secs_f64()
    );

    let work_start = Instant::now();
    let phase = workload_phase(&opts, &mut sched, &read_state, work_start)?;

    println!("scx-vm: sending SIGINT to {}", opts.scheduler);
    let (status, killed) = sched
        .stop(libc::SIGINT, Duration::from_secs(30))
        .map_err(|e| format!("cannot stop {}: {e}", opts.scheduler))?;
    println!(
        "scx-vm: {} exit: {}{}",
        opts.scheduler,
        describe_status(status),
        if killed {
            " (SIGKILLed: it ignored SIGINT for 30 s)"
        } else {
            ""
        }
    );
    let disabled = wait_state(&opts.state_file, "disabled", Duration::from_secs(10));
    match phase {
        Phase::Ejected(state) => {
            return Err(format!(
                "the scheduler was ejected: sched_ext went from enabled to {state:?} while the \
                 workload ran ({} then exited: {})",
                opts.scheduler,
                describe_status(status)
            ))
        }
        Phase::SchedulerDied(st) => {
            return Err(format!(
                "{} exited ({}) while the workload ran",
                opts.scheduler,
                describe_status(st)
            ))
        }
        Phase::Done(Err(e)) => return Err(e),
        Phase::Done(Ok(())) => {}
    }
    if let Err(e) = disabled {
        return Err(format!("after the scheduler exited: {e}"));
    }
    if killed || !status.success() {
        return Err(format!("{} did not exit cleanly", opts.scheduler));
    }
    Ok(())
}

/// Run the workload while watching the scheduler and the sched_ext state.
fn workload_phase(
    opts: &Options,
    sched: &mut Guard,
    read_state: &dyn Fn() -> std::io::Result<String>,
    work_start: Instant,
) -> Result<Phase, String> {
    let ejected = || match read_state() {
        Ok(s) if s == "enabled" => None,
        Ok(s) => Some(s),
        Err(e) => Some(format!("unreadable: {e}")),
    };
    if opts.workload.is_none() && !opts.shell {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let handles = start_workload(&stop, &counters);
        let mut phase = Phase::Done(Ok(()));
        while work_start.elapsed() < opts.duration {
            if let Some(status) = sched.try_wait()? {
                phase = Phase::SchedulerDied(status);
                break;
            }
            if let Some(s) = ejected() {
                phase = Phase::Ejected(s);
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        finish_demo(&stop, handles, &counters, work_start);
        return Ok(phase);
    }
    let mut work = if opts.shell {
        Guard {
            child: spawn_shell()?,
            group: false,
        }
    } else {
        let cmd = opts.workload.as_deref().unwrap_or_default();
        Guard {
            child: Command::new("/bin/sh")
                .args(["-c", cmd])
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot start the workload `/bin/sh -c {cmd}`: {e}"))?,
            group: true,
        }
    };
    let mut ejected_state = None;
    loop {
        if let Some(status) = work.try_wait()? {
            if let Some(s) = ejected_state {
                return Ok(Phase::Ejected(s));
            }
            if opts.shell || status.success() {
                println!("scx-vm: workload exit: {}", describe_status(status));
                return Ok(Phase::Done(Ok(())));
            }
            println!("scx-vm: workload exit: {}", describe_status(status));
            return Ok(Phase::Done(Err(format!(
                "the workload failed ({}) after {:.1} s",
                describe_status(status),
                work_start.elapsed().as_secs_f64()
            ))));
        }
        if let Some(limit) = opts.workload_timeout {
            if work_start.elapsed() >= limit {
                work.signal(libc::SIGKILL);
                let _ = work.child.wait();
                return Ok(Phase::Done(Err(format!(
                    "the workload did not finish within {:.0} s and was killed (raise --timeout)",
                    limit.as_secs_f64()
                ))));
            }
        }
        if !opts.shell {
            if let Some(status) = sched.try_wait()? {
                let _ = work.stop(libc::SIGKILL, Duration::from_secs(1));
                return Ok(Phase::SchedulerDied(status));
            }
            if let Some(s) = ejected() {
                let _ = work.stop(libc::SIGKILL, Duration::from_secs(1));
                return Ok(Phase::Ejected(s));
            }
        } else if ejected_state.is_none() {
            if let Some(s) = ejected() {
                println!("scx-vm: warning: sched_ext is now {s:?}: the scheduler was ejected");
                ejected_state = Some(s);
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until the state file says `expected`.
fn wait_state(path: &std::path::Path, expected: &str, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let s = read_state_at(path);
        if s.as_deref().is_ok_and(|s| s == expected) {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            let seen = match s {
                Ok(s) => format!("last state {s:?}"),
                Err(e) => format!("{} unreadable: {e}", path.display()),
            };
            return Err(format!(
                "sched_ext state did not become {expected:?} within {:.1} s ({seen})",
                timeout.as_secs_f64()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `/init run …` and `/init demo …`: returns the exit code.
pub fn main(mode: &str, args: &[String]) -> i32 {
    let opts = match parse_args(args.iter().cloned()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("scx-vm: {e}");
            return 2;
        }
    };
    if mode == "demo" {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let started = Instant::now();
        let handles = start_workload(&stop, &counters);
        thread::sleep(opts.duration);
        finish_demo(&stop, handles, &counters, started);
        return 0;
    }
    match run(opts) {
        Ok(()) => {
            println!("scx-vm: ok");
            0
        }
        Err(e) => {
            println!("scx-vm: FAILED: {e}");
            1
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
    fn parses_flags_and_passes_the_rest_on() {
        let o = parse(&["--duration", "3", "--", "--slice-us", "500", "--partial"]).unwrap();
        assert_eq!(o.duration, Duration::from_secs(3));
        assert_eq!(o.scheduler, "/bin/scx-fifo");
        assert_eq!(o.args, ["--slice-us", "500", "--partial"]);
        assert_eq!(o.enable_timeout, Duration::from_secs(30));

        let o = parse(&["--scheduler", "/bin/x", "--debug"]).unwrap();
        assert_eq!(o.scheduler, "/bin/x");
        assert_eq!(o.args, ["--debug"]);

        let o = parse(&["--workload", "echo hi; sleep 1", "--workload-timeout", "5"]).unwrap();
        assert_eq!(o.workload.as_deref(), Some("echo hi; sleep 1"));
        assert_eq!(o.workload_timeout, Some(Duration::from_secs(5)));
        assert!(parse(&["--shell"]).unwrap().shell);

        assert!(parse(&["--duration"]).is_err());
        assert!(parse(&["--duration", "soon"]).is_err());
        assert!(parse(&["--shell", "--workload", "x"]).is_err());
    }

    #[test]
    fn describes_statuses() {
        assert_eq!(describe_status(ExitStatus::from_raw(0)), "exit status 0");
        assert_eq!(
            describe_status(ExitStatus::from_raw(3 << 8)),
            "exit status 3"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
    }
}
