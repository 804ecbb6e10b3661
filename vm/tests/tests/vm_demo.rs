//! Tests of the scheduler runner behind `cargo xtask vm-run` / `cargo scx-vm run` (the guest
//! `/init`'s `run` mode, from scx-userland-vm). On the host, through `vm-demo` with a fake
//! scheduler script and a fake sched_ext state file (not `#[ignore]`d: they need no VM, and
//! the guest only runs ignored tests); in the VM, `/init run` with scx-fifo for real.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vm_tests::run_with_timeout;

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("vm-demo-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A fake scheduler: `body` is a sh script with $STATE = the state file.
    fn scheduler(&self, body: &str) -> PathBuf {
        let script = self.path("fake-scheduler");
        let state = self.path("state");
        fs::write(&state, "disabled\n").unwrap();
        fs::write(
            &script,
            format!("#!/bin/sh\nSTATE='{}'\n{body}\n", state.display()),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        script
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn demo(scheduler: &Path, state: &Path, extra: &[&str]) -> vm_tests::TimedOutput {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vm-demo"));
    cmd.arg("--scheduler")
        .arg(scheduler)
        .arg("--state-file")
        .arg(state)
        .args(extra);
    run_with_timeout(&mut cmd, Duration::from_secs(60)).unwrap()
}

#[test]
fn runs_the_workload_and_stops_the_scheduler_with_sigint() {
    let s = Scratch::new("ok");
    // Record the arguments, become "enabled", and on SIGINT go back to "disabled", exit 0.
    let sched = s.scheduler(&format!(
        "echo \"$@\" > '{}'\n\
         trap 'echo disabled > \"$STATE\"; exit 0' INT\n\
         echo enabled > \"$STATE\"\n\
         while :; do sleep 0.05; done",
        s.path("args").display()
    ));
    let out = demo(
        &sched,
        &s.path("state"),
        &["--duration", "1", "--", "--slice-us", "500", "--partial"],
    );
    let text = out.stdout_str();
    assert!(out.success(), "{text}\n{}", out.stderr_str());
    assert_eq!(
        fs::read_to_string(s.path("args")).unwrap().trim(),
        "--slice-us 500 --partial"
    );
    assert!(text.contains("sched_ext enabled after"), "{text}");
    assert!(text.contains("exit: exit status 0"), "{text}");
    assert!(text.contains("scx-vm: ok"), "{text}");
    // The workload really ran.
    let done = text
        .lines()
        .find(|l| l.contains("workload done"))
        .expect("workload line");
    // "scx-vm: workload done in 1.0 s: 12 hog loops, 3456 ping-pongs, 789 forks"
    let counts = done.rsplit(": ").next().unwrap();
    for (part, what) in counts.split(", ").zip(["hog loops", "ping-pongs", "forks"]) {
        let n: u64 = part
            .strip_suffix(what)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no count of {what} in {done:?}"));
        assert!(n > 0, "no {what}: {done}");
    }
}

#[test]
fn fails_when_the_scheduler_exits_before_enabling() {
    let s = Scratch::new("early");
    let sched = s.scheduler("exit 0");
    let out = demo(&sched, &s.path("state"), &["--duration", "1"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1));
    assert!(
        out.stdout_str()
            .contains("exited (exit status 0) before sched_ext became enabled"),
        "{}",
        out.stdout_str()
    );
}

#[test]
fn fails_when_sched_ext_never_becomes_enabled() {
    let s = Scratch::new("never");
    let sched = s.scheduler("trap 'exit 0' INT\nwhile :; do sleep 0.05; done");
    let out = demo(
        &sched,
        &s.path("state"),
        &["--duration", "1", "--enable-timeout", "0.5"],
    );
    assert_eq!(out.status.and_then(|s| s.code()), Some(1));
    assert!(
        out.stdout_str().contains("did not become enabled within"),
        "{}",
        out.stdout_str()
    );
}

#[test]
fn fails_when_the_scheduler_exits_badly_on_sigint() {
    let s = Scratch::new("bad");
    let sched = s.scheduler(
        "trap 'echo disabled > \"$STATE\"; exit 3' INT\n\
         echo enabled > \"$STATE\"\n\
         while :; do sleep 0.05; done",
    );
    let out = demo(&sched, &s.path("state"), &["--duration", "0.5"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1));
    let text = out.stdout_str();
    assert!(text.contains("exit: exit status 3"), "{text}");
    assert!(text.contains("did not exit cleanly"), "{text}");
}

#[test]
fn fails_when_the_scheduler_dies_during_the_workload() {
    let s = Scratch::new("dies");
    let sched =
        s.scheduler("echo enabled > \"$STATE\"\nsleep 0.3\necho disabled > \"$STATE\"\nexit 0");
    let out = demo(&sched, &s.path("state"), &["--duration", "5"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1));
    assert!(
        out.stdout_str().contains("while the workload ran"),
        "{}",
        out.stdout_str()
    );
}

#[test]
fn runs_a_workload_command_and_fails_when_it_fails() {
    let s = Scratch::new("workload");
    let sched = s.scheduler(
        "trap 'echo disabled > \"$STATE\"; exit 0' INT\n\
         echo enabled > \"$STATE\"\n\
         while :; do sleep 0.05; done",
    );
    let out = demo(
        &sched,
        &s.path("state"),
        &["--workload", "echo from-the-workload"],
    );
    let text = out.stdout_str();
    assert!(out.success(), "{text}");
    assert!(text.contains("from-the-workload"), "{text}");
    assert!(
        text.contains("scx-vm: workload exit: exit status 0"),
        "{text}"
    );

    let out = demo(&sched, &s.path("state"), &["--workload", "exit 4"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1));
    assert!(
        out.stdout_str()
            .contains("FAILED: the workload failed (exit status 4)"),
        "{}",
        out.stdout_str()
    );

    let out = demo(
        &sched,
        &s.path("state"),
        &["--workload", "sleep 30", "--workload-timeout", "0.5"],
    );
    assert_eq!(out.status.and_then(|s| s.code()), Some(1));
    assert!(
        out.stdout_str().contains("did not finish within"),
        "{}",
        out.stdout_str()
    );
}

#[test]
fn notices_an_ejected_scheduler() {
    let s = Scratch::new("ejected");
    // sched_ext goes away while the scheduler keeps running (the kernel ejected it).
    let sched = s.scheduler(
        "trap 'exit 0' INT\n\
         echo enabled > \"$STATE\"\n\
         sleep 0.3\n\
         echo disabled > \"$STATE\"\n\
         while :; do sleep 0.05; done",
    );
    let out = demo(&sched, &s.path("state"), &["--duration", "5"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1));
    assert!(
        out.stdout_str().contains("the scheduler was ejected"),
        "{}",
        out.stdout_str()
    );
}

/// The built-in demo with the real scx-fifo, as `cargo xtask vm-run` runs it, but through
/// `/init run` from inside a VM test.
#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn demo_with_scx_fifo_in_the_guest() {
    vm_tests::require_guest();
    let out = run_with_timeout(
        Command::new("/init").args(["run", "--scheduler", "/bin/scx-fifo", "--duration", "3"]),
        Duration::from_secs(90),
    )
    .unwrap();
    let text = out.stdout_str();
    println!("{text}{}", out.stderr_str());
    assert!(out.success(), "/init run failed: {text}");
    assert!(text.contains("sched_ext enabled after"), "{text}");
    assert!(text.contains("ops "), "{text}");
    assert!(text.contains("scx-vm: ok"), "{text}");
}
