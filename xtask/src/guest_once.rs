//! Boot one kernel to run one guest program and read its console: the shape of the commands
//! that measure in a VM (`sim-compare`; `vm-bench` uses `one_kernel` and has the boot steps
//! inline, because it keeps its console next to its results).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use scx_userland_vm::image::{Plan, PlanTest};
use scx_userland_vm::kernel::{Kernel, KernelSelect};
use scx_userland_vm::qemu::{self, BootReport, VmOptions};
use scx_userland_vm::suite::GuestBuild;

use crate::vm_test;

/// The one kernel of the selection; `what` names the command in the error.
pub fn one_kernel(sel: &KernelSelect, what: &str) -> Result<Kernel> {
    let mut kernels = vm_test::select_kernels(sel)?;
    if kernels.len() > 1 {
        bail!(
            "{what} boots one kernel, but the selection has {}; pick one, e.g. --kernels 7.3",
            kernels.len()
        );
    }
    Ok(kernels.remove(0))
}

/// What one boot gave.
pub struct GuestRun {
    pub report: BootReport,
    /// The whole console.
    pub console: String,
    /// Where it is kept.
    pub log: PathBuf,
    /// What went wrong: the program's outcome if not a pass, and the guest's misbehaviour.
    pub problems: Vec<String>,
}

/// Boot `kernel` with `build` and a plan running `argv` (named `name`, killed after
/// `timeout`; the boot gets 180 s more). The console is kept as `vm.log_file(log_stem)`
/// (with `--keep-logs DIR`: `DIR/<log_stem>.log`).
pub fn run(
    kernel: &Kernel,
    build: &GuestBuild,
    vm: &VmOptions,
    name: &str,
    argv: Vec<String>,
    timeout: Duration,
    log_stem: &str,
) -> Result<GuestRun> {
    let accel = qemu::resolve_accel(vm.accel, || vm_test::probe_image(build, kernel))?;
    let plan = Plan {
        env: vec![("RUST_BACKTRACE".to_string(), "1".to_string())],
        tests: vec![PlanTest {
            name: name.to_string(),
            timeout,
            argv,
        }],
    };
    let image = vm_test::write_image(build, &[], kernel, &plan, name)?;
    let log = vm.log_file(log_stem);
    let label = vm_test::labels(std::slice::from_ref(kernel)).remove(0);
    let report = vm_test::boot_kernel(
        kernel,
        &label,
        &image,
        vm,
        accel,
        timeout + Duration::from_secs(180),
        log_stem,
    )?;
    let console = std::fs::read_to_string(&log)
        .with_context(|| format!("cannot read the console log {}", log.display()))?;
    let mut problems = Vec::new();
    match report.console.results.iter().find(|r| r.name == name) {
        Some(r) if r.outcome.is_ok() => {}
        Some(r) => problems.push(format!(
            "the guest's {name} {} after {:.1} s ({})",
            r.outcome, r.secs, r.detail
        )),
        None => problems.push(format!("the guest's {name} reported no result")),
    }
    problems.extend(report.guest_failures());
    Ok(GuestRun {
        report,
        console,
        log,
        problems,
    })
}
