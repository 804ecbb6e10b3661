//! `vm-demo`: the guest side of `cargo xtask vm-run`.
//!
//! ```text
//! vm-demo [--duration SECS] [--scheduler PATH] [--enable-timeout SECS] [--state-file PATH]
//!         [--] ARGS...
//! ```
//!
//! Starts the scheduler (`/bin/scx-fifo ARGS` by default), waits until
//! `/sys/kernel/sched_ext/state` says `enabled`, runs a demo workload for `--duration` seconds
//! (CPU hogs, a pipe ping-pong pair and a burst of short-lived forks), then sends the scheduler
//! SIGINT, waits for it and prints its exit status. Exits non-zero if the scheduler never got
//! enabled, died early, or exited unsuccessfully, or sched_ext did not return to `disabled`.
//! (`--state-file` replaces the sysfs state file; the harness's own tests use a fake one.)

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use vm_tests::{describe_status, guest_bin, read_state_at, wait_for_state_at, ChildGuard};

struct Options {
    duration: Duration,
    scheduler: String,
    enable_timeout: Duration,
    state_file: PathBuf,
    args: Vec<String>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        duration: Duration::from_secs(10),
        scheduler: guest_bin("scx-fifo").display().to_string(),
        enable_timeout: Duration::from_secs(60),
        state_file: PathBuf::from(vm_tests::STATE_PATH),
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
            "--state-file" => {
                opts.state_file = argv.next().ok_or("--state-file needs a value")?.into();
            }
            "--scheduler" => {
                opts.scheduler = argv.next().ok_or("--scheduler needs a value")?;
            }
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
    Ok(opts)
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

fn run(opts: Options) -> Result<(), String> {
    let read_state = || read_state_at(&opts.state_file);
    println!(
        "vm-demo: starting {} {} (sched_ext state: {})",
        opts.scheduler,
        opts.args.join(" "),
        read_state().unwrap_or_else(|e| format!("unreadable: {e}"))
    );
    let mut sched = ChildGuard::spawn(Command::new(&opts.scheduler).args(&opts.args))
        .map_err(|e| format!("cannot start {}: {e}", opts.scheduler))?;

    // Wait for `enabled`, but notice a scheduler that dies first.
    let start = Instant::now();
    loop {
        if let Some(status) = sched.child().try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "{} exited ({}) before sched_ext became enabled",
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
                "sched_ext state did not become enabled within {:.0} s (it is {state:?})",
                opts.enable_timeout.as_secs_f64()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    println!(
        "vm-demo: sched_ext enabled after {:.2} s; running the workload for {:.0} s \
         (2 CPU hogs, a pipe ping-pong pair, fork bursts)",
        start.elapsed().as_secs_f64(),
        opts.duration.as_secs_f64()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let handles = start_workload(&stop, &counters);
    let work_start = Instant::now();
    let mut died = None;
    while work_start.elapsed() < opts.duration {
        if let Some(status) = sched.child().try_wait().map_err(|e| e.to_string())? {
            died = Some(status);
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    println!(
        "vm-demo: workload done in {:.1} s: {} hog loops, {} ping-pongs, {} forks",
        work_start.elapsed().as_secs_f64(),
        counters.hog_loops.load(Ordering::Relaxed),
        counters.ping_pongs.load(Ordering::Relaxed),
        counters.forks.load(Ordering::Relaxed)
    );
    if let Some(status) = died {
        return Err(format!(
            "{} exited ({}) while the workload ran",
            opts.scheduler,
            describe_status(status)
        ));
    }

    println!("vm-demo: sending SIGINT to {}", opts.scheduler);
    let (status, killed) = sched
        .stop(libc::SIGINT, Duration::from_secs(30))
        .map_err(|e| format!("cannot stop {}: {e}", opts.scheduler))?;
    println!(
        "vm-demo: {} exit: {}{}",
        opts.scheduler,
        describe_status(status),
        if killed {
            " (SIGKILLed: it ignored SIGINT for 30 s)"
        } else {
            ""
        }
    );
    if let Err(e) = wait_for_state_at(&opts.state_file, "disabled", Duration::from_secs(10)) {
        return Err(format!("after the scheduler exited: {e}"));
    }
    if killed || !status.success() {
        return Err(format!("{} did not exit cleanly", opts.scheduler));
    }
    Ok(())
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vm-demo: {e}");
            return ExitCode::from(2);
        }
    };
    match run(opts) {
        Ok(()) => {
            println!("vm-demo: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("vm-demo: FAILED: {e}");
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
    fn parses_flags_and_passes_the_rest_on() {
        let o = parse(&["--duration", "3", "--", "--slice-us", "500", "--partial"]).unwrap();
        assert_eq!(o.duration, Duration::from_secs(3));
        assert_eq!(o.scheduler, "/bin/scx-fifo");
        assert_eq!(o.args, ["--slice-us", "500", "--partial"]);

        let o = parse(&["--scheduler", "/bin/x", "--debug"]).unwrap();
        assert_eq!(o.scheduler, "/bin/x");
        assert_eq!(o.args, ["--debug"]);

        assert!(parse(&["--duration"]).is_err());
        assert!(parse(&["--duration", "soon"]).is_err());
    }
}
