//! `cargo xtask vm-test`: build the guest, boot each selected sched_ext kernel in QEMU, run the
//! VM test suite (the `vm-tests` package) inside it and print a results table.
//!
//! A thin wrapper over the scx-userland-vm library (the engine of `cargo scx-vm test`), plus
//! what only this repository has: the extra guest programs every image carries
//! ([`GUEST_PROGRAMS`]), `--soak` and `--fail-selftest`. The building blocks are shared with
//! `cargo xtask vm-run` and `vm-bench`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

pub use scx_userland_vm::cargo::ProgramKind;
use scx_userland_vm::cargo::{self, Program};
use scx_userland_vm::image::Plan;
use scx_userland_vm::kernel::{Kernel, KernelSelect};
use scx_userland_vm::qemu::{self, Accel, BootReport, ProbeImage, VmOptions};
use scx_userland_vm::suite::{self, GuestBuild, SuiteReport, TestExe, VmTest, Which};
pub use scx_userland_vm::suite::{labels, wall_time_line};

use crate::setup::{self, Need};
use crate::workspace_root;

/// A program built for the guest and added to its image as `/bin/<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestProgram {
    pub package: &'static str,
    pub kind: ProgramKind,
    pub name: &'static str,
}

/// Extra programs every guest image carries (schedulers and examples the VM tests start via
/// `vm_tests::guest_bin(name)`). A program that fails to build fails the run.
///
/// e.g. `GuestProgram { package: "scx-fifo", kind: ProgramKind::Bin, name: "scx-fifo" }` or
/// `GuestProgram { package: "scx-userland", kind: ProgramKind::Example, name: "seed_fifo" }`.
pub const GUEST_PROGRAMS: &[GuestProgram] = &[
    GuestProgram {
        package: "scx-fifo",
        kind: ProgramKind::Bin,
        name: "scx-fifo",
    },
    GuestProgram {
        package: "scx-userland",
        kind: ProgramKind::Example,
        name: "seed_fifo",
    },
    GuestProgram {
        package: "scx-userland",
        kind: ProgramKind::Example,
        name: "vruntime",
    },
    GuestProgram {
        package: "scx-userland",
        kind: ProgramKind::Example,
        name: "llc",
    },
];

/// The VM test suite.
const TESTS_PACKAGE: &str = "vm-tests";

/// A test target of the VM suite that needs a machine of another shape: its tests run in a
/// boot of their own, with these CPUs and sockets instead of the command line's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShapedTarget {
    /// The test executable's stem (`topology` for vm/tests/tests/topology.rs).
    pub stem: &'static str,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Sockets (each a NUMA node) the CPUs are spread over.
    pub sockets: u32,
}

/// The targets booted in their own shape: `topology` needs 2 sockets x 2 cores.
pub const SHAPED_TARGETS: &[ShapedTarget] = &[ShapedTarget {
    stem: "topology",
    cpus: 4,
    sockets: 2,
}];

/// The tests one boot runs, and with which machine.
#[derive(Clone, Debug)]
pub struct BootGroup {
    /// Names the image and the console log (`vm-test`, `vm-test-topology`).
    pub what: String,
    /// The machine.
    pub vm: VmOptions,
    /// Its tests, in run order.
    pub tests: Vec<VmTest>,
}

/// Split `tests` into boots: those of [`SHAPED_TARGETS`] in a boot per target with its shape,
/// the rest in one boot with `vm`. Groups without tests are left out.
pub fn boot_groups(tests: &[VmTest], exes: &[TestExe], vm: &VmOptions) -> Vec<BootGroup> {
    let shape_of = |t: &VmTest| SHAPED_TARGETS.iter().find(|s| s.stem == exes[t.exe].stem);
    let mut groups = vec![BootGroup {
        what: "vm-test".into(),
        vm: vm.clone(),
        tests: tests
            .iter()
            .filter(|t| shape_of(t).is_none())
            .cloned()
            .collect(),
    }];
    for shape in SHAPED_TARGETS {
        let mut shaped = vm.clone();
        shaped.cpus = shape.cpus;
        shaped.sockets = shape.sockets;
        groups.push(BootGroup {
            what: format!("vm-test-{}", shape.stem),
            vm: shaped,
            tests: tests
                .iter()
                .filter(|t| shape_of(t) == Some(shape))
                .cloned()
                .collect(),
        });
    }
    groups.retain(|g| !g.tests.is_empty());
    groups
}

/// `cargo xtask vm-test` arguments.
///
/// Also usable programmatically, e.g.
/// `VmTestArgs::parse_from(["vm-test", "--kernels", "all"])` (via [`clap::Parser`]).
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "vm-test",
    about = "Boot a sched_ext kernel in QEMU and run the VM test suite inside it",
    after_long_help = "Builds the guest (/init, the vm-tests test executables and the guest \
        programs), writes an initramfs under target/vm/images, boots each selected kernel in \
        QEMU (one after another) and runs every VM test in it, one at a time. The tests of \
        vm/tests/tests/topology.rs run in a boot of their own, with 4 CPUs in 2 sockets (2 \
        NUMA nodes), whatever --cpus and --sockets say. Prints a table \
        of results and each kernel's boot-to-result wall time. Exits non-zero if any test \
        failed or is missing from the results, or the guest misbehaved (kernel oops, panic, \
        warning, lockup, sched_ext stall, no result, timeout)."
)]
pub struct VmTestArgs {
    #[command(flatten)]
    pub kernels: KernelSelect,

    #[command(flatten)]
    pub vm: VmOptions,

    /// Run only tests whose name (`<binary>::<test>`, see --list) contains PATTERN; may be
    /// given several times (a test matching any of them runs).
    #[arg(long = "filter", value_name = "PATTERN")]
    pub filter: Vec<String>,

    /// Whole-boot timeout in seconds: QEMU is killed and the run fails after this long.
    #[arg(long, value_name = "SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,

    /// Per-test timeout in seconds: the guest kills a test (and its process group) after this
    /// long and reports it as `timeout`.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub test_timeout: u64,

    /// Make the harness self-test `harness::deliberate_failure` fail (sets
    /// SCX_VM_FAIL_SELFTEST=1 in the guest), to check that failures are reported.
    #[arg(long)]
    pub fail_selftest: bool,

    /// Print the VM tests (after --filter) in the order they run, and exit without booting.
    #[arg(long)]
    pub list: bool,

    /// Run the soak test (tests named `*soak*`) for SECONDS instead of its short default
    /// (60 s): passed to the guest as SCX_VM_SOAK_SECS; that test's timeout and the
    /// whole-boot timeout grow to match. E.g. `--soak 600 --filter soak`.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub soak: Option<u64>,
}

impl Default for VmTestArgs {
    /// The same as `cargo xtask vm-test` without flags.
    fn default() -> Self {
        <Self as clap::Parser>::parse_from(["vm-test"])
    }
}

/// The guest environment variable that carries `--soak`.
pub const SOAK_ENV: &str = "SCX_VM_SOAK_SECS";
/// How long the soak test runs without `--soak`.
const SOAK_DEFAULT_SECS: u64 = 60;

/// Soak tests (`*soak*`): pass `--soak` to the guest and give them time for the soak plus
/// start-up and checks.
pub fn apply_soak(plan: &mut Plan, tests: &[VmTest], soak: Option<u64>) {
    if let Some(secs) = soak {
        plan.env.push((SOAK_ENV.to_string(), secs.to_string()));
    }
    let needed = Duration::from_secs(soak.unwrap_or(SOAK_DEFAULT_SECS) + 120);
    for (p, t) in plan.tests.iter_mut().zip(tests) {
        if t.test.contains("soak") {
            p.timeout = p.timeout.max(needed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building blocks (also used by vm-run and vm-bench)
// ---------------------------------------------------------------------------------------------

/// Check (and, as root on Debian, install) the host tools the VM commands need.
pub fn ensure_tools() -> Result<()> {
    setup::ensure(&[Need::Qemu, Need::Busybox, Need::LibbpfBuild])?;
    Ok(suite::ensure_tools()?)
}

/// Select the kernels, failing clearly when there are none.
pub fn select_kernels(sel: &KernelSelect) -> Result<Vec<Kernel>> {
    Ok(suite::select_kernels(sel)?)
}

/// Build these programs in one cargo invocation.
pub fn build_programs(programs: &[GuestProgram]) -> Result<Vec<(String, PathBuf)>> {
    let programs: Vec<Program> = programs
        .iter()
        .map(|p| Program {
            package: p.package.to_string(),
            kind: p.kind,
            name: p.name.to_string(),
        })
        .collect();
    Ok(cargo::build_programs(&workspace_root(), &programs)?)
}

/// Build the whole guest: `/init`, the vm-tests test executables and binaries, and `extra`.
pub fn build_guest(extra: &[GuestProgram]) -> Result<GuestBuild> {
    let init = scx_userland_vm::guest::build_init()?;
    println!("xtask: building the VM tests ({TESTS_PACKAGE}) …");
    let (test_exes, mut programs) =
        suite::build_tests(&workspace_root(), TESTS_PACKAGE, &[], true)?;
    let missing: Vec<GuestProgram> = extra
        .iter()
        .filter(|p| !programs.iter().any(|(n, _)| n == p.name))
        .copied()
        .collect();
    if !missing.is_empty() {
        println!("xtask: building guest programs …");
        programs.extend(build_programs(&missing)?);
    }
    Ok(GuestBuild {
        init,
        test_exes,
        programs,
    })
}

/// The `auto` accelerator probe image.
pub fn probe_image(build: &GuestBuild, kernel: &Kernel) -> scx_userland_vm::Result<ProbeImage> {
    suite::probe_image(&build.init, kernel)
}

/// Write the full guest image for one kernel.
pub fn write_image(
    build: &GuestBuild,
    tests: &[VmTest],
    kernel: &Kernel,
    plan: &Plan,
    name: &str,
) -> Result<PathBuf> {
    Ok(suite::write_image(build, tests, kernel, plan, name)?)
}

/// Boot one kernel with an image.
pub fn boot_kernel(
    kernel: &Kernel,
    label: &str,
    image: &Path,
    vm: &VmOptions,
    accel: Accel,
    timeout: Duration,
    log_stem: &str,
) -> Result<BootReport> {
    Ok(suite::boot_kernel(
        kernel, label, image, vm, accel, timeout, log_stem, false,
    )?)
}

// ---------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------

pub fn run(args: VmTestArgs) -> Result<()> {
    crate::vm_setup(args.vm.verbose);
    qemu::install_interrupt_handler()?;

    if args.list {
        println!("xtask: building the VM tests ({TESTS_PACKAGE}) …");
        let (exes, _) = suite::build_tests(&workspace_root(), TESTS_PACKAGE, &[], true)?;
        let tests = suite::filter_tests(suite::enumerate(&exes, Which::Ignored)?, &args.filter);
        for t in &tests {
            println!("{}", t.name);
        }
        if tests.is_empty() && !args.filter.is_empty() {
            bail!(
                "no VM test matches --filter {}",
                args.filter.join(", --filter ")
            );
        }
        return Ok(());
    }

    ensure_tools()?;
    let kernels = select_kernels(&args.kernels)?;
    let build = build_guest(GUEST_PROGRAMS)?;
    let all = suite::enumerate(&build.test_exes, Which::Ignored)?;
    let tests = suite::filter_tests(all, &args.filter);
    if tests.is_empty() {
        if args.filter.is_empty() {
            bail!("the VM test suite ({TESTS_PACKAGE}) has no #[ignore]d VM tests");
        }
        bail!(
            "no VM test matches --filter {}; `cargo xtask vm-test --list` shows them",
            args.filter.join(", --filter ")
        );
    }
    println!(
        "xtask: {} VM test(s) on {} kernel(s)",
        tests.len(),
        kernels.len()
    );

    let accel = qemu::resolve_accel(args.vm.accel, || probe_image(&build, &kernels[0]))?;
    let mut env = Vec::new();
    if args.fail_selftest {
        env.push(("SCX_VM_FAIL_SELFTEST".to_string(), "1".to_string()));
    }
    // One boot per machine shape (most tests share one; see SHAPED_TARGETS).
    let mut report = SuiteReport::default();
    for group in boot_groups(&tests, &build.test_exes, &args.vm) {
        let mut plan = suite::make_plan(
            &build,
            &group.tests,
            Duration::from_secs(args.test_timeout),
            Which::Ignored,
            &env,
        );
        apply_soak(&mut plan, &group.tests, args.soak);
        let part = suite::run_suite(
            &build,
            &group.tests,
            &plan,
            &kernels,
            &group.vm,
            accel,
            Duration::from_secs(args.timeout + args.soak.unwrap_or(0)),
            &group.what,
        )?;
        report.rows.extend(part.rows);
        let shaped = group.vm.sockets > 1 || group.vm.cpus != args.vm.cpus;
        for wall in part.walls {
            report.walls.push(if shaped {
                format!(
                    "{wall} [{} CPUs, {} sockets]",
                    group.vm.cpus, group.vm.sockets
                )
            } else {
                wall
            });
        }
        report.guest_trouble.extend(part.guest_trouble);
    }
    Ok(report.finish("xtask: vm-test")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use scx_userland_vm::qemu::AccelChoice;
    use scx_userland_vm::suite::make_plan;

    #[test]
    fn soak_goes_to_the_guest_and_stretches_its_timeout() {
        let build = GuestBuild {
            init: "/init".into(),
            test_exes: vec![TestExe {
                stem: "reliability".into(),
                path: "/r".into(),
            }],
            programs: vec![],
        };
        let t = |name: &str| VmTest {
            name: format!("reliability::{name}"),
            test: name.into(),
            exe: 0,
        };
        let tests = vec![t("death"), t("soak_mixed")];
        let mut plan = make_plan(
            &build,
            &tests,
            Duration::from_secs(120),
            Which::Ignored,
            &[],
        );
        apply_soak(&mut plan, &tests, None);
        assert!(!plan.env.iter().any(|(k, _)| k == SOAK_ENV));
        assert_eq!(plan.tests[0].timeout, Duration::from_secs(120));
        assert_eq!(plan.tests[1].timeout, Duration::from_secs(180));
        let mut plan = make_plan(
            &build,
            &tests,
            Duration::from_secs(120),
            Which::Ignored,
            &[],
        );
        apply_soak(&mut plan, &tests, Some(600));
        assert!(plan.env.contains(&(SOAK_ENV.into(), "600".into())));
        assert_eq!(plan.tests[0].timeout, Duration::from_secs(120));
        assert_eq!(plan.tests[1].timeout, Duration::from_secs(720));
        let a = VmTestArgs::parse_from(["vm-test", "--soak", "600", "--filter", "soak"]);
        assert_eq!(a.soak, Some(600));
        assert!(VmTestArgs::parse_from(["vm-test"]).soak.is_none());
    }

    #[test]
    fn shaped_targets_boot_on_their_own() {
        let exes = vec![
            TestExe {
                stem: "lifecycle".into(),
                path: "/l".into(),
            },
            TestExe {
                stem: "topology".into(),
                path: "/t".into(),
            },
        ];
        let t = |name: &str, exe| VmTest {
            name: name.into(),
            test: name.into(),
            exe,
        };
        let tests = vec![t("a", 0), t("b", 1), t("c", 0)];
        let groups = boot_groups(&tests, &exes, &VmOptions::default());
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].what, "vm-test");
        assert_eq!((groups[0].vm.cpus, groups[0].vm.sockets), (2, 1));
        assert_eq!(groups[0].tests, [t("a", 0), t("c", 0)]);
        assert_eq!(groups[1].what, "vm-test-topology");
        assert_eq!((groups[1].vm.cpus, groups[1].vm.sockets), (4, 2));
        assert_eq!(groups[1].tests, [t("b", 1)]);
        // A filter that keeps only one kind boots only that machine.
        let only = boot_groups(&tests[1..2], &exes, &VmOptions::default());
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].what, "vm-test-topology");
        assert!(boot_groups(&[], &exes, &VmOptions::default()).is_empty());
    }

    #[test]
    fn args_have_defaults() {
        let a = VmTestArgs::parse_from(["vm-test"]);
        assert_eq!(
            (a.vm.cpus, a.vm.memory, a.timeout, a.test_timeout),
            (2, 1024, 900, 120)
        );
        assert_eq!(a.vm.accel, AccelChoice::Auto);
        assert!(!a.fail_selftest && !a.list);
        let a = VmTestArgs::parse_from([
            "vm-test", "--filter", "x", "--filter", "y", "--accel", "tcg",
        ]);
        assert_eq!(a.filter, ["x", "y"]);
        assert_eq!(a.vm.accel, AccelChoice::Tcg);
        // What `cargo xtask test` builds.
        let a = VmTestArgs::parse_from(["vm-test", "--kernels", "all"]);
        assert_eq!(a.kernels.kernels.as_deref(), Some("all"));
        let d = VmTestArgs::default();
        assert_eq!((d.timeout, d.vm.cpus, d.kernels.kernels), (900, 2, None));
    }
}
