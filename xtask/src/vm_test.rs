//! `cargo xtask vm-test`: build the guest, boot each selected sched_ext kernel in QEMU, run the
//! VM test suite inside it and print a results table. (OWNER: helper C)
//!
//! The building blocks (guest build, test enumeration, image writing, booting) are shared with
//! `cargo xtask vm-run`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::initramfs::{GuestImage, Plan, PlanTest};
use crate::kernel::{self, Kernel, KernelSelect};
use crate::qemu::{self, Accel, BootReport, BootSpec, ProbeImage, VmOptions};
use crate::setup::{self, Need};

/// What kind of cargo target a guest program is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    Bin,
    Example,
}

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
];

/// The guest's `/init`.
const INIT_PACKAGE: &str = "vm-init";
/// The VM test suite.
const TESTS_PACKAGE: &str = "vm-tests";
/// Test executables are installed as `/bin/<prefix><stem>`.
const TEST_EXE_PREFIX: &str = "vmtest-";

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
        QEMU (one after another) and runs every VM test in it, one at a time. Prints a table \
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

// ---------------------------------------------------------------------------------------------
// Building with cargo
// ---------------------------------------------------------------------------------------------

/// One `compiler-artifact` message with an executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Artifact {
    pub package: String,
    pub target: String,
    pub kinds: Vec<String>,
    /// Built as a test harness (`cargo test`).
    pub test: bool,
    pub executable: PathBuf,
}

/// Parse cargo's `--message-format=json` output; only artifacts with an executable.
pub(crate) fn parse_artifacts(json_lines: &str) -> Vec<Artifact> {
    let mut out = Vec::new();
    for line in json_lines.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        // package_id looks like `path+file:///…/vm/tests#vm-tests@0.1.0` (or `#0.1.0` when
        // the directory name is the package name); the manifest path is unambiguous.
        let package = package_name(&v).unwrap_or_default();
        let target = &v["target"];
        out.push(Artifact {
            package,
            target: target["name"].as_str().unwrap_or_default().to_string(),
            kinds: target["kind"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            test: v["profile"]["test"].as_bool().unwrap_or(false),
            executable: PathBuf::from(exe),
        });
    }
    out
}

fn package_name(v: &Value) -> Option<String> {
    let id = v["package_id"].as_str()?;
    let frag = id.rsplit_once('#').map(|(_, f)| f)?;
    match frag.split_once('@') {
        Some((name, _)) => Some(name.to_string()),
        None => {
            // `#0.1.0`: the name is the last path component before '#'.
            let path = id.rsplit_once('#')?.0;
            Some(path.rsplit('/').next()?.to_string())
        }
    }
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(crate::workspace_root());
    cmd
}

/// Run cargo with JSON messages and return the executables it produced.
pub(crate) fn cargo_artifacts(args: &[&str]) -> Result<Vec<Artifact>> {
    let mut cmd = cargo();
    cmd.args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = cmd
        .output()
        .with_context(|| format!("could not run `cargo {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`cargo {}` failed ({}); fix the build errors above",
            args.join(" "),
            out.status
        );
    }
    Ok(parse_artifacts(&String::from_utf8_lossy(&out.stdout)))
}

/// Build one guest program and return its executable.
pub(crate) fn build_program(p: &GuestProgram) -> Result<PathBuf> {
    let flag = match p.kind {
        ProgramKind::Bin => "--bin",
        ProgramKind::Example => "--example",
    };
    let artifacts = cargo_artifacts(&["build", "--release", "-p", p.package, flag, p.name])?;
    artifacts
        .into_iter()
        .find(|a| a.target == p.name && !a.test)
        .map(|a| a.executable)
        .ok_or_else(|| {
            anyhow!(
                "`cargo build --release -p {} {flag} {}` produced no executable named {}; check \
                 GUEST_PROGRAMS in xtask/src/vm_test.rs",
                p.package,
                p.name,
                p.name
            )
        })
}

/// A test executable of the VM suite.
#[derive(Clone, Debug)]
pub(crate) struct TestExe {
    /// The cargo target name (`harness` for tests/harness.rs), the prefix of its test names.
    pub stem: String,
    pub path: PathBuf,
}

impl TestExe {
    pub fn guest_name(&self) -> String {
        format!("{TEST_EXE_PREFIX}{}", self.stem)
    }
}

/// `/bin/<name>` programs and their host executables.
pub(crate) type Programs = Vec<(String, PathBuf)>;

/// Everything the guest image is made of.
#[derive(Clone, Debug)]
pub(crate) struct GuestBuild {
    pub init: PathBuf,
    pub test_exes: Vec<TestExe>,
    /// `/bin/<name>` programs: the vm-tests binaries (vm-demo) and the guest programs.
    pub programs: Programs,
}

/// Build the vm-tests test executables and binaries.
pub(crate) fn build_tests() -> Result<(Vec<TestExe>, Programs)> {
    let artifacts = cargo_artifacts(&["test", "--release", "-p", TESTS_PACKAGE, "--no-run"])?;
    let mut exes = Vec::new();
    let mut bins = Vec::new();
    for a in artifacts.into_iter().filter(|a| a.package == TESTS_PACKAGE) {
        if a.test {
            exes.push(TestExe {
                stem: a.target.replace('-', "_"),
                path: a.executable,
            });
        } else if a.kinds.iter().any(|k| k == "bin") {
            bins.push((a.target, a.executable));
        }
    }
    if exes.is_empty() {
        bail!("`cargo test --release -p {TESTS_PACKAGE} --no-run` produced no test executable");
    }
    Ok((exes, bins))
}

/// Build the whole guest: `/init`, the test suite and `extra` programs.
pub(crate) fn build_guest(extra: &[GuestProgram]) -> Result<GuestBuild> {
    println!("xtask: building the guest's /init ({INIT_PACKAGE}) …");
    let init = cargo_artifacts(&["build", "--release", "-p", INIT_PACKAGE])?
        .into_iter()
        .find(|a| a.package == INIT_PACKAGE && a.kinds.iter().any(|k| k == "bin") && !a.test)
        .map(|a| a.executable)
        .ok_or_else(|| anyhow!("`cargo build --release -p {INIT_PACKAGE}` produced no binary"))?;
    println!("xtask: building the VM tests ({TESTS_PACKAGE}) …");
    let (test_exes, mut programs) = build_tests()?;
    if !extra.is_empty() {
        println!("xtask: building guest programs …");
    }
    for p in extra {
        if programs.iter().any(|(n, _)| n == p.name) {
            continue;
        }
        programs.push((p.name.to_string(), build_program(p)?));
    }
    Ok(GuestBuild {
        init,
        test_exes,
        programs,
    })
}

// ---------------------------------------------------------------------------------------------
// Test enumeration and plan
// ---------------------------------------------------------------------------------------------

/// One VM test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VmTest {
    /// `<stem>::<test>`.
    pub name: String,
    /// The libtest name inside its executable.
    pub test: String,
    /// Index into the build's test executables.
    pub exe: usize,
}

/// Parse `--list --format terse` output: `name: test` lines.
pub(crate) fn parse_test_list(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.trim_end().strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

/// Sort alphabetically, with tests whose own name starts with `zz_` last.
pub(crate) fn order_tests(tests: &mut [VmTest]) {
    tests.sort_by(|a, b| {
        let last = |t: &VmTest| t.test.rsplit("::").next().unwrap_or("").starts_with("zz_");
        (last(a), &a.name).cmp(&(last(b), &b.name))
    });
}

/// Keep tests matching any pattern (all when there are none).
pub(crate) fn filter_tests(tests: Vec<VmTest>, patterns: &[String]) -> Vec<VmTest> {
    if patterns.is_empty() {
        return tests;
    }
    tests
        .into_iter()
        .filter(|t| patterns.iter().any(|p| t.name.contains(p.as_str())))
        .collect()
}

/// List the ignored (VM-only) tests of every executable by running it on the host.
pub(crate) fn enumerate(exes: &[TestExe]) -> Result<Vec<VmTest>> {
    let mut tests = Vec::new();
    for (i, exe) in exes.iter().enumerate() {
        let out = Command::new(&exe.path)
            .args(["--list", "--format", "terse", "--ignored"])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not run {} --list", exe.path.display()))?;
        if !out.status.success() {
            bail!(
                "`{} --list --format terse --ignored` failed ({}): {}",
                exe.path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        for test in parse_test_list(&String::from_utf8_lossy(&out.stdout)) {
            tests.push(VmTest {
                name: format!("{}::{test}", exe.stem),
                test,
                exe: i,
            });
        }
    }
    order_tests(&mut tests);
    Ok(tests)
}

/// The plan `/init` runs.
pub(crate) fn make_plan(
    build: &GuestBuild,
    tests: &[VmTest],
    test_timeout: Duration,
    fail_selftest: bool,
) -> Plan {
    let mut env = vec![("RUST_BACKTRACE".to_string(), "1".to_string())];
    if fail_selftest {
        env.push(("SCX_VM_FAIL_SELFTEST".to_string(), "1".to_string()));
    }
    let tests = tests
        .iter()
        .map(|t| PlanTest {
            name: t.name.clone(),
            timeout: test_timeout,
            argv: vec![
                format!("/bin/{}", build.test_exes[t.exe].guest_name()),
                "--ignored".into(),
                "--exact".into(),
                t.test.clone(),
                "--test-threads=1".into(),
                "--nocapture".into(),
            ],
        })
        .collect();
    Plan { env, tests }
}

/// The guest environment variable that carries `--soak`.
pub(crate) const SOAK_ENV: &str = "SCX_VM_SOAK_SECS";
/// How long the soak test runs without `--soak`.
const SOAK_DEFAULT_SECS: u64 = 60;

/// Soak tests (`*soak*`): pass `--soak` to the guest and give them time for the soak plus
/// start-up and checks.
pub(crate) fn apply_soak(plan: &mut Plan, tests: &[VmTest], soak: Option<u64>) {
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
// Images and boots
// ---------------------------------------------------------------------------------------------

fn images_dir() -> PathBuf {
    crate::vm_dir().join("images")
}

fn write_checked(image: &GuestImage, out: &Path) -> Result<u64> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    image
        .write(out)
        .with_context(|| format!("could not write the guest image {}", out.display()))?;
    Ok(std::fs::metadata(out)
        .with_context(|| format!("the guest image {} was not written", out.display()))?
        .len())
}

/// Write the full guest image for one kernel.
pub(crate) fn write_image(
    build: &GuestBuild,
    tests: &[VmTest],
    kernel: &Kernel,
    plan: &Plan,
    name: &str,
) -> Result<PathBuf> {
    let out = images_dir().join(format!("{name}-{}.cpio", kernel.version));
    let mut image = GuestImage::new(&build.init).context("could not start the guest image")?;
    let mut used: Vec<usize> = tests.iter().map(|t| t.exe).collect();
    used.sort_unstable();
    used.dedup();
    for i in used {
        let exe = &build.test_exes[i];
        image
            .add_binary(&exe.guest_name(), &exe.path)
            .with_context(|| format!("could not add {} to the guest image", exe.path.display()))?;
    }
    for (name, path) in &build.programs {
        image
            .add_binary(name, path)
            .with_context(|| format!("could not add {} to the guest image", path.display()))?;
    }
    if !image
        .add_busybox()
        .context("could not add busybox to the guest image")?
    {
        bail!("no static busybox on this host; run `cargo xtask setup` (Debian package busybox-static)");
    }
    if let Some(modules) = &kernel.modules {
        let dir = format!("/lib/modules/{}", kernel.version);
        image
            .add_tree(&dir, modules)
            .with_context(|| format!("could not add {} to the guest image", modules.display()))?;
    }
    image.set_plan(plan);
    print!("xtask: writing image {} …", out.display());
    let size = write_checked(&image, &out)?;
    println!(" ({:.1} MiB)", size as f64 / (1024.0 * 1024.0));
    Ok(out)
}

/// The `auto` accelerator probe: `/init` with an empty plan, which reports success at once.
pub(crate) fn probe_image(build: &GuestBuild, kernel: &Kernel) -> Result<ProbeImage> {
    let out = images_dir().join("kvm-probe.cpio");
    let mut image = GuestImage::new(&build.init).context("could not start the probe image")?;
    image.set_plan(&Plan::default());
    write_checked(&image, &out)?;
    Ok(ProbeImage {
        bzimage: kernel.bzimage.clone(),
        initrd: out,
    })
}

/// Check (and if possible install) the host tools the VM commands need.
pub(crate) fn ensure_tools() -> Result<()> {
    setup::ensure(&[Need::Qemu, Need::Busybox, Need::LibbpfBuild])
        .context("the VM needs qemu-system-x86_64 and a static busybox")?;
    qemu::qemu_version().map(|_| ())
}

/// Select the kernels, failing clearly when there are none.
pub(crate) fn select_kernels(sel: &KernelSelect) -> Result<Vec<Kernel>> {
    let kernels = kernel::select(sel).context("could not select a kernel to boot")?;
    if kernels.is_empty() {
        bail!("no kernel selected; see `cargo xtask kernel --help`");
    }
    Ok(kernels)
}

/// The short label in the console prefix: `7.3.4` for `7.3.4+deb13-amd64`.
pub(crate) fn short_release(release: &str) -> &str {
    release.split(['+', '-']).next().unwrap_or(release)
}

/// Console prefix labels for these kernels, padded to the same width.
pub(crate) fn labels(kernels: &[Kernel]) -> Vec<String> {
    let width = kernels
        .iter()
        .map(|k| short_release(&k.version).len())
        .max()
        .unwrap_or(0);
    kernels
        .iter()
        .map(|k| format!("{:<width$}", short_release(&k.version)))
        .collect()
}

/// Boot one kernel with an image.
pub(crate) fn boot_kernel(
    kernel: &Kernel,
    label: &str,
    image: &Path,
    vm: &VmOptions,
    accel: Accel,
    timeout: Duration,
    log_stem: &str,
) -> Result<BootReport> {
    let spec = BootSpec {
        label: label.to_string(),
        bzimage: kernel.bzimage.clone(),
        initrd: image.to_path_buf(),
        extra_cmdline: Vec::new(),
        memory_mib: vm.memory,
        cpus: vm.cpus,
        accel,
        timeout,
        echo: true,
        log: qemu::log_path(vm.keep_logs.as_deref(), log_stem),
    };
    println!(
        "xtask: booting {} ({} MiB, {} CPU{}, accel {accel}, timeout {} s) …",
        kernel.version,
        vm.memory,
        vm.cpus,
        if vm.cpus == 1 { "" } else { "s" },
        timeout.as_secs()
    );
    let report = qemu::boot(&spec)
        .with_context(|| format!("could not boot {}", kernel.bzimage.display()))?;
    if let Some(path) = &spec.log {
        println!("xtask: console saved to {}", path.display());
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// One row of the results table.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Row {
    pub test: String,
    /// ok, fail, timeout, crash, missing, unexpected, …
    pub result: String,
    pub secs: Option<f64>,
    pub kernel: String,
    pub detail: String,
}

impl Row {
    pub fn ok(&self) -> bool {
        self.result == "ok"
    }
}

/// Match a boot's results against the plan: one row per planned test (in plan order), then any
/// result nobody planned.
pub(crate) fn collate(planned: &[String], kernel: &str, report: &BootReport) -> Vec<Row> {
    let mut by_name: BTreeMap<&str, &qemu::TestResult> = BTreeMap::new();
    for r in &report.console.results {
        by_name.entry(r.name.as_str()).or_insert(r);
    }
    let mut rows: Vec<Row> = planned
        .iter()
        .map(|name| match by_name.remove(name.as_str()) {
            Some(r) => Row {
                test: name.clone(),
                result: r.outcome.to_string(),
                secs: Some(r.secs),
                kernel: kernel.to_string(),
                detail: r.detail.clone(),
            },
            None => Row {
                test: name.clone(),
                result: "missing".into(),
                secs: None,
                kernel: kernel.to_string(),
                detail: "no result from the guest".into(),
            },
        })
        .collect();
    for (name, r) in by_name {
        rows.push(Row {
            test: name.to_string(),
            result: "unexpected".into(),
            secs: Some(r.secs),
            kernel: kernel.to_string(),
            detail: format!("not in the plan; reported {}", r.outcome),
        });
    }
    rows
}

/// Render the results table.
pub(crate) fn render_table(rows: &[Row]) -> String {
    let head = ["test", "result", "secs", "kernel"];
    let secs: Vec<String> = rows
        .iter()
        .map(|r| {
            r.secs
                .map(|s| format!("{s:.2}"))
                .unwrap_or_else(|| "-".into())
        })
        .collect();
    let w0 = rows
        .iter()
        .map(|r| r.test.len())
        .chain([head[0].len()])
        .max()
        .unwrap_or(0);
    let w1 = rows
        .iter()
        .map(|r| r.result.len())
        .chain([head[1].len()])
        .max()
        .unwrap_or(0);
    let w2 = secs
        .iter()
        .map(|s| s.len())
        .chain([head[2].len()])
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "{:<w0$}  {:<w1$}  {:>w2$}  {}\n",
        head[0], head[1], head[2], head[3]
    );
    for (r, s) in rows.iter().zip(&secs) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {}",
            r.test, r.result, s, r.kernel
        );
        out.push_str(&line);
        if !r.ok() && !r.detail.is_empty() {
            out.push_str("  (");
            out.push_str(&r.detail);
            out.push(')');
        }
        out.push('\n');
    }
    out
}

/// One line per kernel: boot-to-result wall time.
pub(crate) fn wall_time_line(kernel: &str, report: &BootReport) -> String {
    match report.boot_to_result {
        Some(t) => format!(
            "{kernel}: boot-to-result {:.1} s (accel {}, qemu ran {:.1} s)",
            t.as_secs_f64(),
            report.accel,
            report.elapsed.as_secs_f64()
        ),
        None => format!(
            "{kernel}: no result (accel {}, qemu ran {:.1} s)",
            report.accel,
            report.elapsed.as_secs_f64()
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------

pub fn run(args: VmTestArgs) -> Result<()> {
    qemu::install_interrupt_handler()?;

    if args.list {
        println!("xtask: building the VM tests ({TESTS_PACKAGE}) …");
        let (exes, _) = build_tests()?;
        let tests = filter_tests(enumerate(&exes)?, &args.filter);
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
    let all = enumerate(&build.test_exes)?;
    let tests = filter_tests(all, &args.filter);
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
    let mut plan = make_plan(
        &build,
        &tests,
        Duration::from_secs(args.test_timeout),
        args.fail_selftest,
    );
    apply_soak(&mut plan, &tests, args.soak);
    let planned: Vec<String> = tests.iter().map(|t| t.name.clone()).collect();
    let labels = labels(&kernels);

    let mut rows = Vec::new();
    let mut walls = Vec::new();
    let mut guest_trouble = Vec::new();
    for (kernel, label) in kernels.iter().zip(&labels) {
        let image = write_image(&build, &tests, kernel, &plan, "vm-test")?;
        let report = boot_kernel(
            kernel,
            label,
            &image,
            &args.vm,
            accel,
            Duration::from_secs(args.timeout + args.soak.unwrap_or(0)),
            &format!("vm-test-{}", kernel.version),
        )?;
        rows.extend(collate(&planned, &kernel.version, &report));
        walls.push(wall_time_line(&kernel.version, &report));
        for why in report.guest_failures() {
            guest_trouble.push(format!("{}: {why}", kernel.version));
        }
    }

    println!();
    print!("{}", render_table(&rows));
    println!();
    for w in &walls {
        println!("{w}");
    }
    for t in &guest_trouble {
        println!("guest failure: {t}");
    }

    let bad: Vec<&Row> = rows.iter().filter(|r| !r.ok()).collect();
    let passed = rows.len() - bad.len();
    if bad.is_empty() && guest_trouble.is_empty() {
        println!("xtask: vm-test passed: {passed} test result(s) ok");
        return Ok(());
    }
    let mut what = Vec::new();
    if !bad.is_empty() {
        let names: Vec<String> = bad
            .iter()
            .map(|r| format!("{} {} on {}", r.test, r.result, r.kernel))
            .collect();
        what.push(format!(
            "{} of {} test result(s) not ok ({})",
            bad.len(),
            rows.len(),
            names.join(", ")
        ));
    }
    if !guest_trouble.is_empty() {
        what.push(format!(
            "{} guest failure(s), see above",
            guest_trouble.len()
        ));
    }
    bail!("vm-test failed: {}", what.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::{Accel, ConsoleParser};
    use clap::Parser;

    #[test]
    fn parses_cargo_json() {
        let json = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/vm/tests#vm-tests@0.1.0","target":{"kind":["test"],"name":"harness"},"profile":{"test":true},"executable":"/w/target/release/deps/harness-1234"}
{"reason":"compiler-artifact","package_id":"path+file:///w/vm/tests#vm-tests@0.1.0","target":{"kind":["lib"],"name":"vm_tests"},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","package_id":"path+file:///w/vm/tests#vm-tests@0.1.0","target":{"kind":["bin"],"name":"vm-demo"},"profile":{"test":false},"executable":"/w/target/release/vm-demo"}
{"reason":"compiler-artifact","package_id":"path+file:///w/scx-fifo#0.1.0","target":{"kind":["bin"],"name":"scx-fifo"},"profile":{"test":false},"executable":"/w/target/release/scx-fifo"}
{"reason":"build-finished","success":true}
not json"#;
        let a = parse_artifacts(json);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].package, "vm-tests");
        assert_eq!(a[0].target, "harness");
        assert!(a[0].test);
        assert_eq!(
            a[0].executable,
            PathBuf::from("/w/target/release/deps/harness-1234")
        );
        assert_eq!(a[1].kinds, ["bin"]);
        assert!(!a[1].test);
        assert_eq!(a[2].package, "scx-fifo");
    }

    #[test]
    fn parses_test_lists() {
        let out =
            "btf_vmlinux_present: test\nsched_ext_state_is_disabled: test\nbench_x: bench\n\n";
        assert_eq!(
            parse_test_list(out),
            ["btf_vmlinux_present", "sched_ext_state_is_disabled"]
        );
    }

    fn t(name: &str) -> VmTest {
        let (stem, test) = name.split_once("::").unwrap();
        VmTest {
            name: name.into(),
            test: test.into(),
            exe: usize::from(stem == "b"),
        }
    }

    #[test]
    fn orders_and_filters() {
        let mut v = vec![
            t("b::zz_last"),
            t("b::alpha"),
            t("a::zz_end"),
            t("a::mod::beta"),
            t("a::alpha"),
        ];
        order_tests(&mut v);
        let names: Vec<&str> = v.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "a::alpha",
                "a::mod::beta",
                "b::alpha",
                "a::zz_end",
                "b::zz_last"
            ]
        );

        let f = filter_tests(v.clone(), &["alpha".into()]);
        assert_eq!(f.len(), 2);
        let f = filter_tests(v.clone(), &["beta".into(), "zz_last".into()]);
        let names: Vec<&str> = f.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a::mod::beta", "b::zz_last"]);
        assert_eq!(filter_tests(v.clone(), &[]).len(), 5);
        assert!(filter_tests(v, &["nope".into()]).is_empty());
    }

    #[test]
    fn plans_exact_ignored_runs() {
        let build = GuestBuild {
            init: "/init".into(),
            test_exes: vec![TestExe {
                stem: "harness".into(),
                path: "/h".into(),
            }],
            programs: vec![],
        };
        let tests = vec![VmTest {
            name: "harness::x".into(),
            test: "x".into(),
            exe: 0,
        }];
        let plan = make_plan(&build, &tests, Duration::from_secs(7), true);
        assert_eq!(plan.tests.len(), 1);
        assert_eq!(plan.tests[0].name, "harness::x");
        assert_eq!(plan.tests[0].timeout, Duration::from_secs(7));
        assert_eq!(
            plan.tests[0].argv,
            [
                "/bin/vmtest-harness",
                "--ignored",
                "--exact",
                "x",
                "--test-threads=1",
                "--nocapture"
            ]
        );
        assert!(plan
            .env
            .contains(&("SCX_VM_FAIL_SELFTEST".into(), "1".into())));
        let plan = make_plan(&build, &tests, Duration::from_secs(7), false);
        assert!(!plan.env.iter().any(|(k, _)| k == "SCX_VM_FAIL_SELFTEST"));
    }

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
        let mut plan = make_plan(&build, &tests, Duration::from_secs(120), false);
        apply_soak(&mut plan, &tests, None);
        assert!(!plan.env.iter().any(|(k, _)| k == SOAK_ENV));
        assert_eq!(plan.tests[0].timeout, Duration::from_secs(120));
        assert_eq!(plan.tests[1].timeout, Duration::from_secs(180));
        let mut plan = make_plan(&build, &tests, Duration::from_secs(120), false);
        apply_soak(&mut plan, &tests, Some(600));
        assert!(plan.env.contains(&(SOAK_ENV.into(), "600".into())));
        assert_eq!(plan.tests[0].timeout, Duration::from_secs(120));
        assert_eq!(plan.tests[1].timeout, Duration::from_secs(720));
        let a = VmTestArgs::parse_from(["vm-test", "--soak", "600", "--filter", "soak"]);
        assert_eq!(a.soak, Some(600));
        assert!(VmTestArgs::parse_from(["vm-test"]).soak.is_none());
    }

    fn report(lines: &[&str]) -> BootReport {
        let mut console = ConsoleParser::new();
        for l in lines {
            console.feed(l);
        }
        BootReport {
            accel: Accel::Tcg,
            console,
            timed_out: None,
            no_poweroff: false,
            exit: None,
            boot_to_result: Some(Duration::from_millis(9500)),
            elapsed: Duration::from_secs(10),
            qemu_stderr: vec![],
        }
    }

    #[test]
    fn collates_missing_and_unexpected() {
        let planned = vec!["h::a".to_string(), "h::b".to_string(), "h::c".to_string()];
        let r = report(&[
            "init: result h::a ok 0.10",
            "init: result h::c fail 0.20 exit status 101",
            "init: result h::zzz ok 0.30",
        ]);
        let rows = collate(&planned, "7.3.4+deb13-amd64", &r);
        let got: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.test.as_str(), r.result.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("h::a", "ok"),
                ("h::b", "missing"),
                ("h::c", "fail"),
                ("h::zzz", "unexpected")
            ]
        );
        let table = render_table(&rows);
        assert!(table.lines().next().unwrap().starts_with("test"));
        assert!(
            table.contains("h::c    fail        0.20  7.3.4+deb13-amd64  (exit status 101)"),
            "{table}"
        );
        assert!(
            table.contains("h::b    missing        -  7.3.4+deb13-amd64"),
            "{table}"
        );
        assert_eq!(
            wall_time_line("7.3.4+deb13-amd64", &r),
            "7.3.4+deb13-amd64: boot-to-result 9.5 s (accel tcg, qemu ran 10.0 s)"
        );
    }

    #[test]
    fn labels_are_short_and_padded() {
        assert_eq!(short_release("7.3.4+deb13-amd64"), "7.3.4");
        assert_eq!(short_release("7.2.10-amd64"), "7.2.10");
        let k = |v: &str| Kernel {
            version: v.into(),
            bzimage: "/b".into(),
            config: None,
            modules: None,
        };
        assert_eq!(
            labels(&[k("7.3.4+deb13-amd64"), k("7.2.10+deb13-amd64")]),
            ["7.3.4 ", "7.2.10"]
        );
    }

    #[test]
    fn args_have_defaults() {
        let a = VmTestArgs::parse_from(["vm-test"]);
        assert_eq!(
            (a.vm.cpus, a.vm.memory, a.timeout, a.test_timeout),
            (2, 1024, 900, 120)
        );
        assert_eq!(a.vm.accel, qemu::AccelChoice::Auto);
        assert!(!a.fail_selftest && !a.list);
        let a = VmTestArgs::parse_from([
            "vm-test", "--filter", "x", "--filter", "y", "--accel", "tcg",
        ]);
        assert_eq!(a.filter, ["x", "y"]);
        assert_eq!(a.vm.accel, qemu::AccelChoice::Tcg);
        // What `cargo xtask test` builds.
        let a = VmTestArgs::parse_from(["vm-test", "--kernels", "all"]);
        assert_eq!(a.kernels.kernels.as_deref(), Some("all"));
        let d = VmTestArgs::default();
        assert_eq!((d.timeout, d.vm.cpus, d.kernels.kernels), (900, 2, None));
    }
}
