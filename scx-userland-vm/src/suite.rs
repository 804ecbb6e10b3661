//! Run a crate's test executables inside the VM, one test at a time, and judge them: the
//! engine of `cargo scx-vm test` and `cargo xtask vm-test`.
//!
//! The test executables and the package's binaries are built on the host (one `cargo test
//! --no-run`), their tests listed on the host (`--list`), and put into the guest image as
//! `/bin/vmtest-<stem>` and `/bin/<bin>`; the guest's `/init` runs each test with `--exact`
//! (and `--ignored` or `--include-ignored`), with a timeout. A boot fails when a test is not
//! ok or missing, or the kernel logged an oops, panic, warning, lockup or sched_ext stall.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{bail, Context, Result};
use crate::image::{GuestImage, Plan, PlanTest};
use crate::kernel::{self, Kernel, KernelSelect};
use crate::qemu::{self, Accel, BootReport, BootSpec, ProbeImage, VmOptions};

/// Test executables are installed as `/bin/<prefix><stem>`.
pub const TEST_EXE_PREFIX: &str = "vmtest-";

/// A test executable.
#[derive(Clone, Debug)]
pub struct TestExe {
    /// The cargo target name with `-` as `_` (`harness` for tests/harness.rs), the prefix of
    /// its test names.
    pub stem: String,
    /// The host executable.
    pub path: PathBuf,
}

impl TestExe {
    /// Its name in the guest's `/bin`.
    pub fn guest_name(&self) -> String {
        format!("{TEST_EXE_PREFIX}{}", self.stem)
    }
}

/// `/bin/<name>` programs and their host executables.
pub type Programs = Vec<(String, PathBuf)>;

/// Everything the guest image is made of.
#[derive(Clone, Debug)]
pub struct GuestBuild {
    /// The static guest `/init` ([`crate::guest::build_init`]).
    pub init: PathBuf,
    /// The test executables.
    pub test_exes: Vec<TestExe>,
    /// `/bin/<name>` programs.
    pub programs: Programs,
}

/// Build the test executables (and the binaries, which `cargo test` builds for integration
/// tests) of `package` in `dir`'s workspace, in one `cargo test --no-run`. `tests` limits
/// them to these `--test` targets.
pub fn build_tests(
    dir: &Path,
    package: &str,
    tests: &[String],
    release: bool,
) -> Result<(Vec<TestExe>, Programs)> {
    let mut args: Vec<String> = vec!["test".into()];
    if release {
        args.push("--release".into());
    }
    args.extend(["-p".into(), package.to_string(), "--no-run".into()]);
    for t in tests {
        args.extend(["--test".into(), t.clone()]);
    }
    let artifacts = crate::cargo::cargo_artifacts(dir, &args)?;
    let (exes, bins) = split_artifacts(artifacts, package)?;
    if exes.is_empty() {
        bail!("`cargo {}` produced no test executable", args.join(" "));
    }
    Ok((exes, bins))
}

/// The test executables and the `/bin` programs among a package's artifacts.
///
/// A test executable is named after its target, and after its kind too unless it is an
/// integration test: the unit tests of `src/bin/vm-demo.rs` are `bin_vm_demo`, those of the
/// library `lib_<name>`, so neither can take the place of `tests/vm_demo.rs` (`vm_demo`).
/// Two different executables with one name are an error, never a silent drop.
pub fn split_artifacts(
    artifacts: Vec<crate::cargo::Artifact>,
    package: &str,
) -> Result<(Vec<TestExe>, Programs)> {
    let mut exes: Vec<TestExe> = Vec::new();
    let mut bins = Vec::new();
    for a in artifacts.into_iter().filter(|a| a.package == package) {
        if a.test {
            let name = a.target.replace('-', "_");
            let stem = if a.kinds.iter().any(|k| k == "test") {
                name
            } else {
                format!("{}_{name}", a.kinds.first().map_or("unit", String::as_str))
            };
            match exes.iter().find(|e| e.stem == stem) {
                Some(e) if e.path == a.executable => {}
                Some(e) => bail!(
                    "two test executables of {package} are both named {stem}: {} and {}; \
                     rename one of the targets",
                    e.path.display(),
                    a.executable.display()
                ),
                None => exes.push(TestExe {
                    stem,
                    path: a.executable,
                }),
            }
        } else if a.kinds.iter().any(|k| k == "bin") {
            bins.push((a.target, a.executable));
        }
    }
    Ok((exes, bins))
}

/// One VM test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmTest {
    /// `<stem>::<test>`.
    pub name: String,
    /// The libtest name inside its executable.
    pub test: String,
    /// Index into the build's test executables.
    pub exe: usize,
}

/// Parse `--list --format terse` output: `name: test` lines.
pub fn parse_test_list(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.trim_end().strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

/// Sort alphabetically, with tests whose own name starts with `zz_` last.
pub fn order_tests(tests: &mut [VmTest]) {
    tests.sort_by(|a, b| {
        let last = |t: &VmTest| t.test.rsplit("::").next().unwrap_or("").starts_with("zz_");
        (last(a), &a.name).cmp(&(last(b), &b.name))
    });
}

/// Keep tests matching any pattern (all when there are none).
pub fn filter_tests(tests: Vec<VmTest>, patterns: &[String]) -> Vec<VmTest> {
    if patterns.is_empty() {
        return tests;
    }
    tests
        .into_iter()
        .filter(|t| patterns.iter().any(|p| t.name.contains(p.as_str())))
        .collect()
}

/// Which tests of an executable run in the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The `#[ignore]`d ones (the VM-only tests; the host's `cargo test` skips them).
    Ignored,
    /// All of them (ignored or not).
    All,
}

/// List the tests of every executable by running it on the host with `--list`.
pub fn enumerate(exes: &[TestExe], which: Which) -> Result<Vec<VmTest>> {
    let mut tests = Vec::new();
    for (i, exe) in exes.iter().enumerate() {
        let mut cmd = Command::new(&exe.path);
        cmd.args(["--list", "--format", "terse"]);
        if which == Which::Ignored {
            cmd.arg("--ignored");
        } else {
            cmd.arg("--include-ignored");
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not run {} --list", exe.path.display()))?;
        if !out.status.success() {
            bail!(
                "`{} --list --format terse` failed ({}): {}",
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

/// The plan `/init` runs: each test alone (`--exact`, one thread, output not captured), with
/// `env` and `RUST_BACKTRACE=1`.
pub fn make_plan(
    build: &GuestBuild,
    tests: &[VmTest],
    test_timeout: Duration,
    which: Which,
    env: &[(String, String)],
) -> Plan {
    let mut plan_env = vec![("RUST_BACKTRACE".to_string(), "1".to_string())];
    plan_env.extend(env.iter().cloned());
    let tests = tests
        .iter()
        .map(|t| PlanTest {
            name: t.name.clone(),
            timeout: test_timeout,
            argv: vec![
                format!("/bin/{}", build.test_exes[t.exe].guest_name()),
                match which {
                    Which::Ignored => "--ignored".into(),
                    Which::All => "--include-ignored".into(),
                },
                "--exact".into(),
                t.test.clone(),
                "--test-threads=1".into(),
                "--nocapture".into(),
            ],
        })
        .collect();
    Plan {
        env: plan_env,
        tests,
    }
}

// ---------------------------------------------------------------------------------------------
// Images and boots
// ---------------------------------------------------------------------------------------------

fn images_dir() -> PathBuf {
    crate::cache::dir().join("images")
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

/// Write the full guest image for one kernel: `/init`, the test executables `tests` use, the
/// programs, busybox, the kernel's modules (if any) and the plan.
pub fn write_image(
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
        bail!(
            "no static busybox on this host; install it with `{}`",
            crate::tools::install_line(&[crate::tools::Tool::Busybox])
        );
    }
    if let Some(modules) = &kernel.modules {
        let dir = format!("/lib/modules/{}", kernel.version);
        image
            .add_tree(&dir, modules)
            .with_context(|| format!("could not add {} to the guest image", modules.display()))?;
    }
    image.set_plan(plan);
    let size = write_checked(&image, &out)?;
    if crate::cache::verbose() {
        println!(
            "wrote image {} ({:.1} MiB)",
            out.display(),
            size as f64 / (1024.0 * 1024.0)
        );
    }
    Ok(out)
}

/// The `auto` accelerator probe: `/init` with an empty plan, which reports success at once.
pub fn probe_image(init: &Path, kernel: &Kernel) -> Result<ProbeImage> {
    let out = images_dir().join("kvm-probe.cpio");
    let mut image = GuestImage::new(init).context("could not start the probe image")?;
    image.set_plan(&Plan::default());
    write_checked(&image, &out)?;
    Ok(ProbeImage {
        bzimage: kernel.bzimage.clone(),
        initrd: out,
    })
}

/// Check the host tools booting needs (installs nothing; the error names the `apt-get
/// install` line).
pub fn ensure_tools() -> Result<()> {
    crate::tools::require(crate::tools::BOOT)?;
    qemu::qemu_version().map(|_| ())
}

/// Select the kernels, failing clearly when there are none.
pub fn select_kernels(sel: &KernelSelect) -> Result<Vec<Kernel>> {
    let kernels = kernel::select(sel).context("could not select a kernel to boot")?;
    if kernels.is_empty() {
        bail!("no kernel selected; use --kernels 7.3 or --kernel PATH");
    }
    Ok(kernels)
}

/// The short label in the console prefix: `7.3.4` for `7.3.4+deb13-amd64`.
pub fn short_release(release: &str) -> &str {
    release.split(['+', '-']).next().unwrap_or(release)
}

/// Console prefix labels for these kernels, padded to the same width.
pub fn labels(kernels: &[Kernel]) -> Vec<String> {
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

/// Boot one kernel with an image (quiet unless `vm.verbose`; the console always goes to a log
/// file).
#[allow(clippy::too_many_arguments)]
pub fn boot_kernel(
    kernel: &Kernel,
    label: &str,
    image: &Path,
    vm: &VmOptions,
    accel: Accel,
    timeout: Duration,
    log_stem: &str,
    interactive: bool,
) -> Result<BootReport> {
    if !vm.cpus.is_multiple_of(vm.sockets) {
        bail!(
            "--cpus {} cannot be spread over --sockets {}: use a multiple of it",
            vm.cpus,
            vm.sockets
        );
    }
    let spec = BootSpec {
        label: label.to_string(),
        bzimage: kernel.bzimage.clone(),
        initrd: image.to_path_buf(),
        extra_cmdline: Vec::new(),
        memory_mib: vm.memory,
        cpus: vm.cpus,
        sockets: vm.sockets,
        accel,
        timeout,
        echo: vm.echo(),
        log: Some(vm.log_file(log_stem)),
        interactive,
    };
    let sockets = if vm.sockets > 1 {
        format!(" in {} sockets/NUMA nodes", vm.sockets)
    } else {
        String::new()
    };
    println!(
        "booting {} ({} MiB, {} CPU{}{sockets}, accel {accel}, timeout {} s)…",
        kernel.version,
        vm.memory,
        vm.cpus,
        if vm.cpus == 1 { "" } else { "s" },
        timeout.as_secs()
    );
    let report = qemu::boot(&spec)
        .with_context(|| format!("could not boot {}", kernel.bzimage.display()))?;
    if let (Some(path), true) = (&spec.log, vm.keep_logs.is_some() || crate::cache::verbose()) {
        println!("console saved to {}", path.display());
    }
    Ok(report)
}

/// One row of the results table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The test name.
    pub test: String,
    /// ok, fail, timeout, crash, missing, unexpected, …
    pub result: String,
    /// Seconds it ran.
    pub secs: Option<f64>,
    /// The kernel release.
    pub kernel: String,
    /// Exit status, signal, …
    pub detail: String,
}

impl Row {
    /// Whether the result is `ok`.
    pub fn ok(&self) -> bool {
        self.result == "ok"
    }
}

/// Match a boot's results against the plan: one row per planned test (in plan order), then any
/// result nobody planned.
pub fn collate(planned: &[String], kernel: &str, report: &BootReport) -> Vec<Row> {
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
pub fn render_table(rows: &[Row]) -> String {
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
pub fn wall_time_line(kernel: &str, report: &BootReport) -> String {
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

/// The results of a suite on some kernels.
#[derive(Debug, Default)]
pub struct SuiteReport {
    /// One row per planned test and kernel (and per unexpected result).
    pub rows: Vec<Row>,
    /// [`wall_time_line`] per kernel.
    pub walls: Vec<String>,
    /// `<kernel>: <why>` for each guest failure ([`BootReport::guest_failures`]).
    pub guest_trouble: Vec<String>,
}

/// Boot each kernel with its image and the plan, and collate the results.
#[allow(clippy::too_many_arguments)]
pub fn run_suite(
    build: &GuestBuild,
    tests: &[VmTest],
    plan: &Plan,
    kernels: &[Kernel],
    vm: &VmOptions,
    accel: Accel,
    timeout: Duration,
    what: &str,
) -> Result<SuiteReport> {
    let planned: Vec<String> = plan.tests.iter().map(|t| t.name.clone()).collect();
    let labels = labels(kernels);
    let mut report = SuiteReport::default();
    for (kernel, label) in kernels.iter().zip(&labels) {
        let image = write_image(build, tests, kernel, plan, what)?;
        let boot = boot_kernel(
            kernel,
            label,
            &image,
            vm,
            accel,
            timeout,
            &format!("{what}-{}", kernel.version),
            false,
        )?;
        let rows = collate(&planned, &kernel.version, &boot);
        let trouble = boot.guest_failures();
        if !trouble.is_empty() || rows.iter().any(|r| !r.ok()) {
            boot.print_failure_context();
        }
        report.rows.extend(rows);
        report.walls.push(wall_time_line(&kernel.version, &boot));
        for why in trouble {
            report
                .guest_trouble
                .push(format!("{}: {why}", kernel.version));
        }
    }
    Ok(report)
}

impl SuiteReport {
    /// Print the table, the wall times and the guest failures; `Err` (naming what was not
    /// ok) unless every result was ok and no guest misbehaved. `what` prefixes the verdict
    /// lines (`xtask: vm-test`).
    pub fn finish(&self, what: &str) -> Result<()> {
        println!();
        print!("{}", render_table(&self.rows));
        println!();
        for w in &self.walls {
            println!("{w}");
        }
        for t in &self.guest_trouble {
            println!("guest failure: {t}");
        }
        let bad: Vec<&Row> = self.rows.iter().filter(|r| !r.ok()).collect();
        let passed = self.rows.len() - bad.len();
        if bad.is_empty() && self.guest_trouble.is_empty() {
            println!("{what} passed: {passed} test result(s) ok");
            return Ok(());
        }
        let mut problems = Vec::new();
        if !bad.is_empty() {
            let names: Vec<String> = bad
                .iter()
                .map(|r| format!("{} {} on {}", r.test, r.result, r.kernel))
                .collect();
            problems.push(format!(
                "{} of {} test result(s) not ok ({})",
                bad.len(),
                self.rows.len(),
                names.join(", ")
            ));
        }
        if !self.guest_trouble.is_empty() {
            problems.push(format!(
                "{} guest failure(s), see above",
                self.guest_trouble.len()
            ));
        }
        bail!("{what} failed: {}", problems.join("; "))
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::ConsoleParser;

    #[test]
    fn parses_test_lists() {
        let out =
            "btf_vmlinux_present: test\nsched_ext_state_is_disabled: test\nbench_x: bench\n\n";
        assert_eq!(
            parse_test_list(out),
            ["btf_vmlinux_present", "sched_ext_state_is_disabled"]
        );
    }

    fn artifact(target: &str, kind: &str, test: bool, exe: &str) -> crate::cargo::Artifact {
        crate::cargo::Artifact {
            package: "vm-tests".into(),
            target: target.into(),
            kinds: vec![kind.into()],
            test,
            executable: exe.into(),
        }
    }

    #[test]
    fn a_binary_and_a_test_of_one_name_are_both_kept() {
        // tests/vm_demo.rs and the unit tests of src/bin/vm-demo.rs both build `vm_demo-<hash>`.
        let arts = vec![
            artifact("vm-demo", "bin", true, "/t/deps/vm_demo-1"),
            artifact("vm_demo", "test", true, "/t/deps/vm_demo-2"),
            artifact("vm_tests", "lib", true, "/t/deps/vm_tests-3"),
            artifact("vm-demo", "bin", false, "/t/vm-demo"),
            artifact("vm_demo", "test", true, "/t/deps/vm_demo-2"),
        ];
        let (exes, bins) = split_artifacts(arts, "vm-tests").unwrap();
        let stems: Vec<_> = exes
            .iter()
            .map(|e| (e.stem.as_str(), e.path.clone()))
            .collect();
        assert_eq!(
            stems,
            [
                ("bin_vm_demo", "/t/deps/vm_demo-1".into()),
                ("vm_demo", "/t/deps/vm_demo-2".into()),
                ("lib_vm_tests", "/t/deps/vm_tests-3".into()),
            ]
        );
        assert_eq!(bins, [("vm-demo".to_string(), "/t/vm-demo".into())]);
        let clash = vec![
            artifact("a-b", "test", true, "/t/deps/a_b-1"),
            artifact("a_b", "test", true, "/t/deps/a_b-2"),
        ];
        let e = split_artifacts(clash, "vm-tests").unwrap_err().to_string();
        assert!(e.contains("both named a_b"), "{e}");
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
    fn plans_exact_runs() {
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
        let env = [("SCX_VM_FAIL_SELFTEST".to_string(), "1".to_string())];
        let plan = make_plan(&build, &tests, Duration::from_secs(7), Which::Ignored, &env);
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
        assert_eq!(plan.env[0], ("RUST_BACKTRACE".into(), "1".into()));
        let plan = make_plan(&build, &tests, Duration::from_secs(7), Which::All, &[]);
        assert_eq!(plan.tests[0].argv[1], "--include-ignored");
        assert_eq!(plan.env.len(), 1);
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
            log: None,
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
}
