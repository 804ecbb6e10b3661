//! `cargo xtask vm-run [--duration SECS] [kernel/VM flags] -- ARGS`: boot a sched_ext kernel in
//! QEMU and run `/bin/scx-fifo ARGS` there beside a demo workload (the guest side is
//! `vm/tests/src/bin/vm-demo.rs`), streaming its output. (OWNER: helper C)

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::initramfs::{Plan, PlanTest};
use crate::kernel::KernelSelect;
use crate::qemu::{self, VmOptions};
use crate::vm_test::{self, GuestProgram, ProgramKind, GUEST_PROGRAMS};

const SCHEDULER: GuestProgram = GuestProgram {
    package: "scx-fifo",
    kind: ProgramKind::Bin,
    name: "scx-fifo",
};

/// The guest program that drives the demo.
const DEMO: &str = "vm-demo";

/// `cargo xtask vm-run` arguments.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "vm-run",
    about = "Boot a sched_ext kernel in QEMU and run scx-fifo there with a demo workload",
    after_long_help = "Boots a sched_ext kernel in QEMU (for hosts whose own kernel has no \
        sched_ext) and runs `/bin/scx-fifo ARGS` in it. Once sched_ext reports `enabled`, a demo \
        workload (CPU hogs, a pipe ping-pong pair, bursts of short-lived forks) runs for \
        --duration seconds; then scx-fifo gets SIGINT and its exit status is printed. \
        Everything the guest prints is streamed. Fails if scx-fifo never enabled sched_ext, \
        died early or exited unsuccessfully.\n\n\
        Example: cargo xtask vm-run --duration 20 -- --slice-us 5000 --stats-interval 1"
)]
pub struct VmRunArgs {
    #[command(flatten)]
    pub kernels: KernelSelect,

    #[command(flatten)]
    pub vm: VmOptions,

    /// Seconds the demo workload runs with the scheduler enabled.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub duration: u64,

    /// Whole-boot timeout in seconds (default: --duration + 300).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,

    /// Arguments passed to scx-fifo (after `--`), e.g. `-- --slice-us 5000 --debug`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// Does `cargo metadata` (no deps) list `package` with a bin target `bin`?
pub(crate) fn metadata_has_bin(metadata: &Value, package: &str, bin: &str) -> bool {
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| {
            p["name"] == package
                && p["targets"].as_array().into_iter().flatten().any(|t| {
                    t["name"] == bin
                        && t["kind"]
                            .as_array()
                            .is_some_and(|k| k.iter().any(|k| k == "bin"))
                })
        })
}

fn scheduler_available() -> Result<bool> {
    let out =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(crate::workspace_root())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("could not run `cargo metadata`")?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` failed ({}); is the workspace manifest valid?",
            out.status
        );
    }
    let v: Value =
        serde_json::from_slice(&out.stdout).context("`cargo metadata` printed invalid JSON")?;
    Ok(metadata_has_bin(&v, SCHEDULER.package, SCHEDULER.name))
}

/// The guest command line of the demo.
pub(crate) fn demo_argv(duration: u64, args: &[String]) -> Vec<String> {
    let mut argv = vec![
        format!("/bin/{DEMO}"),
        "--duration".to_string(),
        duration.to_string(),
        "--scheduler".to_string(),
        format!("/bin/{}", SCHEDULER.name),
        "--".to_string(),
    ];
    argv.extend(args.iter().cloned());
    argv
}

pub fn run(args: VmRunArgs) -> Result<()> {
    qemu::install_interrupt_handler()?;
    let timeout = args.timeout.unwrap_or(args.duration + 300);

    if !scheduler_available()? {
        println!(
            "xtask: package {} has no `{}` binary yet, so there is nothing to demo; running the \
             harness self-tests (vm-test --filter harness::) instead",
            SCHEDULER.package, SCHEDULER.name
        );
        return vm_test::run(vm_test::VmTestArgs {
            kernels: args.kernels,
            vm: args.vm,
            filter: vec!["harness::".to_string()],
            timeout,
            test_timeout: 120,
            fail_selftest: false,
            list: false,
            soak: None,
        });
    }

    vm_test::ensure_tools()?;
    let kernels = vm_test::select_kernels(&args.kernels)?;
    let mut programs: Vec<GuestProgram> = GUEST_PROGRAMS.to_vec();
    if !programs.iter().any(|p| p.name == SCHEDULER.name) {
        programs.push(SCHEDULER);
    }
    let build = vm_test::build_guest(&programs)?;
    if !build.programs.iter().any(|(n, _)| n == DEMO) {
        bail!("the vm-tests package built no `{DEMO}` binary (vm/tests/src/bin/{DEMO}.rs)");
    }

    let accel = qemu::resolve_accel(args.vm.accel, || vm_test::probe_image(&build, &kernels[0]))?;
    let plan = Plan {
        env: vec![("RUST_BACKTRACE".to_string(), "1".to_string())],
        tests: vec![PlanTest {
            name: DEMO.to_string(),
            // Enabling, stopping and the state checks get two minutes on top of the workload.
            timeout: Duration::from_secs(args.duration + 120),
            argv: demo_argv(args.duration, &args.args),
        }],
    };
    let labels = vm_test::labels(&kernels);

    let mut failures = Vec::new();
    let mut walls = Vec::new();
    for (kernel, label) in kernels.iter().zip(&labels) {
        let image = vm_test::write_image(&build, &[], kernel, &plan, "vm-run")?;
        let report = vm_test::boot_kernel(
            kernel,
            label,
            &image,
            &args.vm,
            accel,
            Duration::from_secs(timeout),
            &format!("vm-run-{}", kernel.version),
        )?;
        walls.push(vm_test::wall_time_line(&kernel.version, &report));
        match report.console.results.iter().find(|r| r.name == DEMO) {
            Some(r) if r.outcome.is_ok() => {
                println!(
                    "xtask: {}: scx-fifo demo ok ({:.1} s)",
                    kernel.version, r.secs
                )
            }
            Some(r) => failures.push(format!(
                "{}: the demo {} after {:.1} s{}",
                kernel.version,
                r.outcome,
                r.secs,
                if r.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.detail)
                }
            )),
            None => failures.push(format!("{}: the demo reported no result", kernel.version)),
        }
        for why in report.guest_failures() {
            failures.push(format!("{}: {why}", kernel.version));
        }
    }
    for w in &walls {
        println!("{w}");
    }
    if failures.is_empty() {
        return Ok(());
    }
    for f in &failures {
        println!("vm-run failure: {f}");
    }
    bail!("vm-run failed: {}", failures.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn finds_bin_targets_in_metadata() {
        let v: Value = serde_json::from_str(
            r#"{"packages":[
                {"name":"scx-fifo","targets":[{"name":"scx_fifo","kind":["lib"]}]},
                {"name":"other","targets":[{"name":"scx-fifo","kind":["bin"]}]}
            ]}"#,
        )
        .unwrap();
        assert!(!metadata_has_bin(&v, "scx-fifo", "scx-fifo"));
        let v: Value = serde_json::from_str(
            r#"{"packages":[{"name":"scx-fifo","targets":[{"name":"scx-fifo","kind":["bin"]}]}]}"#,
        )
        .unwrap();
        assert!(metadata_has_bin(&v, "scx-fifo", "scx-fifo"));
    }

    #[test]
    fn passes_args_after_double_dash() {
        let a = VmRunArgs::parse_from([
            "vm-run",
            "--duration",
            "3",
            "--",
            "--slice-us",
            "500",
            "--partial",
        ]);
        assert_eq!(a.duration, 3);
        assert_eq!(a.args, ["--slice-us", "500", "--partial"]);
        assert_eq!(
            demo_argv(a.duration, &a.args),
            [
                "/bin/vm-demo",
                "--duration",
                "3",
                "--scheduler",
                "/bin/scx-fifo",
                "--",
                "--slice-us",
                "500",
                "--partial"
            ]
        );
        let a = VmRunArgs::parse_from(["vm-run"]);
        assert_eq!((a.duration, a.timeout), (10, None));
        assert!(a.args.is_empty());
    }
}
