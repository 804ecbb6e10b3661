//! Helpers shared by the VM tests.
//!
//! The tests in `vm/tests/tests/` run inside the sched_ext guest that `cargo xtask vm-test`
//! boots. Each one is marked `#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]`, so a
//! host `cargo test` lists them as ignored; the guest runs them one at a time with
//! `--ignored --exact <name> --test-threads=1 --nocapture`, with `SCX_VM_GUEST=1` set.
//!
//! Guest programs the harness adds to the image live in `/bin/<name>` ([`guest_bin`]).

use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The sched_ext state file.
pub const STATE_PATH: &str = "/sys/kernel/sched_ext/state";

/// The kernel's BTF.
pub const BTF_VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Set (to `1`) by the guest's `/init` for every test.
pub const GUEST_ENV: &str = "SCX_VM_GUEST";

/// Set (to `1`) by `cargo xtask vm-test --fail-selftest`.
pub const FAIL_SELFTEST_ENV: &str = "SCX_VM_FAIL_SELFTEST";

/// The reason string every VM test's `#[ignore]` carries.
pub const IGNORE_REASON: &str = "needs the sched_ext VM: cargo xtask vm-test";

/// Are we running inside the VM harness's guest?
pub fn in_guest() -> bool {
    std::env::var_os(GUEST_ENV).is_some_and(|v| v == "1")
}

/// Panic with a clear message unless running inside the VM guest (call it first in tests that
/// would do damage on a host).
pub fn require_guest() {
    assert!(
        in_guest(),
        "this test needs the sched_ext VM ({GUEST_ENV}=1 is not set); run it with `cargo xtask vm-test`"
    );
}

/// The current sched_ext state (`disabled`, `enabling`, `enabled`, `disabling`), trimmed.
pub fn read_state() -> io::Result<String> {
    read_state_at(Path::new(STATE_PATH))
}

/// [`read_state`] from another file (tests of the harness itself use a fake one).
pub fn read_state_at(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string())
}

/// Poll `f` every `interval` until it returns true or `timeout` passes. Returns whether it did.
pub fn wait_until(timeout: Duration, interval: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(interval.min(deadline - now));
    }
}

/// Wait until the sched_ext state is `expected`. Returns how long it took; on timeout the error
/// says which state was seen last.
pub fn wait_for_state(expected: &str, timeout: Duration) -> io::Result<Duration> {
    wait_for_state_at(Path::new(STATE_PATH), expected, timeout)
}

/// [`wait_for_state`] on another file.
pub fn wait_for_state_at(path: &Path, expected: &str, timeout: Duration) -> io::Result<Duration> {
    let start = Instant::now();
    let mut last = String::new();
    let mut last_err = None;
    let reached = wait_until(timeout, Duration::from_millis(20), || {
        match read_state_at(path) {
            Ok(s) => {
                let hit = s == expected;
                last = s;
                hit
            }
            Err(e) => {
                last_err = Some(e);
                false
            }
        }
    });
    if reached {
        return Ok(start.elapsed());
    }
    let seen = match (last.is_empty(), last_err) {
        (false, _) => format!("last state {last:?}"),
        (true, Some(e)) => format!("{} unreadable: {e}", path.display()),
        (true, None) => "no state read".to_string(),
    };
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "sched_ext state did not become {expected:?} within {:.1} s ({seen})",
            timeout.as_secs_f64()
        ),
    ))
}

/// A program the harness put into the guest image: `/bin/<name>`.
pub fn guest_bin(name: &str) -> PathBuf {
    PathBuf::from("/bin").join(name)
}

/// Wait for `child` for at most `timeout`. `Ok(None)` means it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10).min(deadline - now));
    }
}

/// Send a signal to a child that has not been reaped yet.
pub fn signal(child: &Child, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: kill(2) on our own unreaped child.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Describe an exit status: `exit status 0`, `killed by signal 9 (SIGKILL)`.
pub fn describe_status(status: ExitStatus) -> String {
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

/// A child process that is killed and reaped when dropped, so a failing test never leaves
/// one behind.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        ChildGuard { child: Some(child) }
    }

    /// Spawn `cmd` under a guard.
    pub fn spawn(cmd: &mut Command) -> io::Result<Self> {
        cmd.spawn().map(Self::new)
    }

    pub fn child(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("child present until drop or into_inner")
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("child present").id()
    }

    /// Send a signal.
    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        signal(self.child.as_ref().expect("child present"), sig)
    }

    /// Wait at most `timeout`; `Ok(None)` = still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        wait_timeout(self.child(), timeout)
    }

    /// Ask politely with `sig`, then SIGKILL after `grace`. Returns the status and whether it
    /// had to be killed.
    pub fn stop(&mut self, sig: libc::c_int, grace: Duration) -> io::Result<(ExitStatus, bool)> {
        if let Some(status) = self.child().try_wait()? {
            return Ok((status, false));
        }
        self.signal(sig)?;
        if let Some(status) = self.wait_timeout(grace)? {
            return Ok((status, false));
        }
        self.child().kill()?;
        Ok((self.child().wait()?, true))
    }

    /// Give up the guard.
    pub fn into_inner(mut self) -> Child {
        self.child.take().expect("child present")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The result of [`run_with_timeout`].
#[derive(Debug)]
pub struct TimedOutput {
    /// None if the program was killed because it ran out of time.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl TimedOutput {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Run `cmd` to completion with captured stdout/stderr, killing it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<TimedOutput> {
    let start = Instant::now();
    let mut guard = ChildGuard::spawn(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    let out = guard.child().stdout.take().map(collect);
    let err = guard.child().stderr.take().map(collect);
    let status = match guard.wait_timeout(timeout)? {
        Some(s) => Some(s),
        None => {
            guard.child().kill()?;
            guard.child().wait()?;
            None
        }
    };
    let join = |h: Option<thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    Ok(TimedOutput {
        status,
        stdout: join(out),
        stderr: join(err),
        elapsed: start.elapsed(),
    })
}

fn collect(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// An anonymous private memory mapping, unmapped on drop: memory pressure for tests.
pub struct AnonMemory {
    ptr: *mut u8,
    len: usize,
}

impl AnonMemory {
    /// Map `len` bytes (nothing is touched yet); `None` when the kernel refuses.
    pub fn new(len: usize) -> Option<Self> {
        // SAFETY: a fresh anonymous mapping; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        Some(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Ask for transparent huge pages (`MADV_HUGEPAGE`); refused advice is harmless.
    pub fn advise_hugepage(&self) {
        // SAFETY: advice on our own mapping, of its own length.
        unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_HUGEPAGE) };
    }

    /// Write `value` into one byte of every 4 KiB page.
    pub fn touch(&self, value: u8) {
        for off in (0..self.len).step_by(4096) {
            // SAFETY: in bounds of our own mapping.
            unsafe { std::ptr::write_volatile(self.ptr.add(off), value) };
        }
    }
}

impl Drop for AnonMemory {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_bin_is_in_bin() {
        assert_eq!(guest_bin("scx-fifo"), PathBuf::from("/bin/scx-fifo"));
    }

    #[test]
    fn wait_until_reports_both_ways() {
        let mut n = 0;
        assert!(wait_until(
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                n += 1;
                n == 3
            }
        ));
        assert_eq!(n, 3);
        let start = Instant::now();
        assert!(!wait_until(
            Duration::from_millis(50),
            Duration::from_millis(5),
            || false
        ));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn run_with_timeout_captures_and_kills() {
        let out = run_with_timeout(
            Command::new("sh").args(["-c", "echo hi; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.stdout_str(), "hi\n");
        assert_eq!(out.stderr_str(), "err\n");
        assert_eq!(out.status.and_then(|s| s.code()), Some(3));
        assert!(!out.success());

        let out = run_with_timeout(
            Command::new("sh").args(["-c", "exec sleep 30"]),
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(out.timed_out());
        assert!(out.elapsed < Duration::from_secs(10));
    }

    #[test]
    fn guard_stops_with_signal_and_describes_it() {
        let mut g = ChildGuard::spawn(Command::new("sleep").arg("30")).unwrap();
        let (status, killed) = g.stop(libc::SIGINT, Duration::from_secs(5)).unwrap();
        assert!(!killed);
        assert_eq!(describe_status(status), "killed by signal 2 (SIGINT)");

        // A program that ignores SIGINT gets SIGKILLed after the grace period.
        let mut g =
            ChildGuard::spawn(Command::new("sh").args(["-c", "trap '' INT; exec sleep 30"]))
                .unwrap();
        thread::sleep(Duration::from_millis(100));
        let (status, killed) = g.stop(libc::SIGINT, Duration::from_millis(200)).unwrap();
        assert!(killed);
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn guard_kills_on_drop() {
        let g = ChildGuard::spawn(Command::new("sleep").arg("30")).unwrap();
        let pid = g.id() as libc::pid_t;
        drop(g);
        // The child is reaped: signalling it fails with ESRCH.
        // SAFETY: signal 0 only checks for existence.
        let r = unsafe { libc::kill(pid, 0) };
        assert_eq!(r, -1);
    }

    #[test]
    fn wait_for_state_times_out_with_a_message_off_vm() {
        if std::path::Path::new(STATE_PATH).exists() {
            return; // a sched_ext host; the state is whatever it is
        }
        let e = wait_for_state("enabled", Duration::from_millis(50)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("unreadable"), "{e}");
    }
}
