//! The files of the scheduler crate the outside-crate check generates. `{{NAME}}` (the crate
//! and binary name), `{{OPS}}` (its sched_ext ops name), `{{VERSION}}` (the packaged crates'
//! version) and `{{PATCH}}` (the `[patch.crates-io]` lines) are filled in by `package.rs`.

pub const CARGO_TOML: &str = r#"[package]
name = "{{NAME}}"
version = "0.1.0"
edition = "2021"
publish = false
description = "A FIFO sched_ext scheduler built on the packaged scx-userland crates"

[dependencies]
scx-userland = "{{VERSION}}"
anyhow = "1"

[dev-dependencies]
libc = "0.2"

# The crates as packaged for crates.io (unpacked .crate files), not the workspace's sources.
[patch.crates-io]
{{PATCH}}
# Not part of any enclosing workspace.
[workspace]
"#;

pub const MAIN_RS: &str = r#"//! {{NAME}}: the FIFO scheduler of the README's "Your own scheduler", on the packaged crates.

use scx_userland::{Backend, BpfScheduler, Dispatch, Error, Policy, Runner, RL_CPU_ANY};

struct Fifo;

impl Policy for Fifo {
    fn schedule<B: Backend>(&mut self, sched: &mut B) -> Result<(), Error> {
        while let Some(task) = sched.dequeue_task()? {
            if task.is_exiting() {
                continue;
            }
            let mut d = Dispatch::new(&task);
            if !task.idle_cpu() {
                d.cpu = RL_CPU_ANY; // the first CPU that frees up
            }
            sched.dispatch_task(&d)?;
        }
        sched.update_tasks(Some(0), Some(0)) // sleeps until more tasks come
    }
}

fn main() -> anyhow::Result<()> {
    let builder = BpfScheduler::builder().name("{{OPS}}").version(env!("CARGO_PKG_VERSION"));
    let report = Runner::new(builder).run(&mut Fifo)?;
    println!("{{NAME}}: exit: {report}");
    anyhow::ensure!(!report.kind.is_error(), "ejected: {report}");
    Ok(())
}
"#;

pub const VM_TEST_RS: &str = r#"//! {{NAME}} on a sched_ext kernel: it attaches, the kernel shows its ops name, and SIGINT
//! detaches it cleanly. Runs in the VM only: `cargo scx-vm test`.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STATE: &str = "/sys/kernel/sched_ext/state";
const OPS: &str = "/sys/kernel/sched_ext/root/ops";
/// Where the VM puts the package's binaries.
const BIN: &str = "/bin/{{NAME}}";

fn state() -> String {
    std::fs::read_to_string(STATE)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}

/// Poll the sched_ext state until it is `want` or `timeout` passes; the last state read.
fn wait_state(want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let now = state();
        if now == want || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait for the child to exit (killing it after `timeout`); its status and output.
fn finish(mut child: Child, timeout: Duration) -> (Option<std::process::ExitStatus>, String) {
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut out);
    }
    (status, out)
}

#[test]
#[ignore = "needs the sched_ext VM"]
fn attaches_then_sigint_detaches() {
    let child = Command::new(BIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {BIN}: {e}"));
    let pid = child.id() as libc::pid_t;

    let attached = wait_state("enabled", Duration::from_secs(20));
    if attached != "enabled" {
        let (status, out) = finish(child, Duration::ZERO);
        panic!("sched_ext state is {attached:?}, not \"enabled\" ({status:?}):\n{out}");
    }
    let ops = std::fs::read_to_string(OPS).unwrap_or_default();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(), "enabled", "{{NAME}} was ejected");

    // SAFETY: kill(2) on the pid of a child not yet waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "SIGINT");
    let (status, out) = finish(child, Duration::from_secs(20));
    // The name, then the version suffix: `{{OPS}}_0.1.0_x86_64_linux`.
    assert!(
        ops.trim().starts_with("{{OPS}}_0.1.0_"),
        "the kernel's ops name: {ops:?}"
    );
    let status = status.unwrap_or_else(|| panic!("{{NAME}} did not exit after SIGINT:\n{out}"));
    assert!(status.success(), "{{NAME}} exited with {status}:\n{out}");
    assert!(out.contains("{{NAME}}: exit:"), "no exit report:\n{out}");
    assert_eq!(wait_state("disabled", Duration::from_secs(10)), "disabled");
}
"#;
