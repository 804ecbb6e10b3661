//! `cargo xtask vm-run [--duration SECS] [kernel/VM flags] -- ARGS`: boot a sched_ext kernel in
//! QEMU and run `/bin/scx-fifo ARGS` there beside the built-in demo workload. A thin wrapper
//! over the scx-userland-vm library (`cargo scx-vm run -p scx-fifo` does the same); the guest
//! side is the guest `/init`'s `run` mode.

use std::time::Duration;

use anyhow::{Context, Result};

use scx_userland_vm::kernel::KernelSelect;
use scx_userland_vm::qemu::{self, VmOptions};
use scx_userland_vm::session::{self, RunSpec, Workload};

use crate::vm_test::{self, GuestProgram, ProgramKind};

const SCHEDULER: GuestProgram = GuestProgram {
    package: "scx-fifo",
    kind: ProgramKind::Bin,
    name: "scx-fifo",
};

/// `cargo xtask vm-run` arguments.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "vm-run",
    about = "Boot a sched_ext kernel in QEMU and run scx-fifo there with a demo workload",
    after_long_help = "Boots a sched_ext kernel in QEMU (for hosts whose own kernel has no \
        sched_ext) and runs `/bin/scx-fifo ARGS` in it. Once sched_ext reports `enabled`, a demo \
        workload (CPU hogs, a pipe ping-pong pair, bursts of short-lived forks) runs for \
        --duration seconds; then scx-fifo gets SIGINT and its exit status is printed. \
        The programs' output and the kernel's sched_ext lines are shown (everything with \
        --verbose; the whole console is always in target/vm/logs). Fails if scx-fifo never \
        enabled sched_ext, was ejected, died early or exited unsuccessfully.\n\n\
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

/// Does the workspace have the scheduler's package and binary?
fn scheduler_available() -> Result<bool> {
    let ws = scx_userland_vm::cargo::metadata(&crate::workspace_root())?;
    Ok(ws
        .packages
        .iter()
        .any(|p| p.name == SCHEDULER.package && p.targets_of("bin").contains(&SCHEDULER.name)))
}

/// The run: scx-fifo beside the demo for `duration` seconds.
pub(crate) fn run_spec(args: &VmRunArgs, exe: std::path::PathBuf) -> RunSpec {
    let duration = Duration::from_secs(args.duration);
    RunSpec {
        scheduler: (SCHEDULER.name.to_string(), exe),
        extra: Vec::new(),
        args: args.args.clone(),
        workload: Workload::Demo(duration),
        // Only a --workload command is limited by this; the demo stops by itself.
        timeout: duration,
        enable_timeout: Duration::from_secs(60),
        boot_timeout: None,
    }
}

pub fn run(args: VmRunArgs) -> Result<()> {
    crate::vm_setup(args.vm.verbose);
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
    println!("building {}…", SCHEDULER.name);
    let (_, exe) = vm_test::build_programs(&[SCHEDULER])?
        .pop()
        .context("no scx-fifo executable")?;
    let mut spec = run_spec(&args, exe);
    if let Some(t) = args.timeout {
        spec.boot_timeout = Some(Duration::from_secs(t));
    }
    session::run_scheduler(&spec, &kernels, &args.vm)
        .map_err(|e| anyhow::anyhow!("vm-run failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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
            session::run_argv(&run_spec(&a, "/t/scx-fifo".into())),
            [
                "/init",
                "run",
                "--scheduler",
                "/bin/scx-fifo",
                "--enable-timeout",
                "60",
                "--duration",
                "3",
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

    #[test]
    fn finds_the_scheduler_in_this_workspace() {
        assert!(scheduler_available().unwrap());
    }
}
