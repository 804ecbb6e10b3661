//! The commands, as library calls: run a scheduler in the VM ([`run_scheduler`]), run one
//! program there and return its exit status ([`run_program`], the cargo runner), and run a
//! package's tests there ([`test_package`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{bail, err, Context, Result};
use crate::image::{Plan, PlanTest};
use crate::kernel::{Kernel, KernelSelect};
use crate::qemu::{self, Accel, BootReport, VmOptions};
use crate::suite::{self, GuestBuild, Programs, Which};

/// What the scheduler runs beside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// The built-in demo (2 CPU hogs, a pipe ping-pong pair, fork bursts) for this long.
    Demo(Duration),
    /// `/bin/sh -c CMD` in the guest.
    Command(String),
    /// An interactive `/bin/sh` on the console (this process's stdin goes to the guest).
    Shell,
}

/// One scheduler run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The scheduler's guest name (`/bin/<name>`) and host executable.
    pub scheduler: (String, PathBuf),
    /// More programs for the guest's `/bin` (`--add`).
    pub extra: Programs,
    /// The scheduler's arguments.
    pub args: Vec<String>,
    /// What runs while it is attached.
    pub workload: Workload,
    /// How long the workload may run (a [`Workload::Command`] is killed after it).
    pub timeout: Duration,
    /// How long the scheduler has to attach.
    pub enable_timeout: Duration,
    /// The whole boot's limit (default: the workload's time, plus time to attach, stop and
    /// boot).
    pub boot_timeout: Option<Duration>,
}

/// Check that `path` is an executable file (for `--path`, `--add`, the runner).
pub fn check_executable(path: &Path, flag: &str) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| {
        err!(
            "{flag} {}: {e}; give the path of an executable",
            path.display()
        )
    })?;
    if !meta.is_file() || !crate::tools::is_executable(path) {
        bail!(
            "{flag} {} is not an executable file; give the path of a program (chmod +x it if \
             it is one)",
            path.display()
        );
    }
    Ok(())
}

/// The guest name of a host program: its file name.
pub fn guest_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(str::to_string)
        .with_context(|| format!("{} has no usable file name", path.display()))
}

/// `--add PATH`s as `/bin/<file name>` programs.
pub fn added_programs(paths: &[PathBuf]) -> Result<Programs> {
    let mut out: Programs = Vec::new();
    for p in paths {
        check_executable(p, "--add")?;
        let name = guest_name(p)?;
        if out.iter().any(|(n, _)| *n == name) {
            bail!("--add: two programs are called {name}; the guest's /bin can hold only one");
        }
        out.push((name, p.clone()));
    }
    Ok(out)
}

/// The guest command line of a run: `/init run …`.
pub fn run_argv(spec: &RunSpec) -> Vec<String> {
    let mut argv = vec![
        "/init".to_string(),
        "run".to_string(),
        "--scheduler".to_string(),
        format!("/bin/{}", spec.scheduler.0),
        "--enable-timeout".to_string(),
        spec.enable_timeout.as_secs().to_string(),
    ];
    match &spec.workload {
        Workload::Demo(d) => argv.extend(["--duration".to_string(), d.as_secs().to_string()]),
        Workload::Command(c) => argv.extend([
            "--workload".to_string(),
            c.clone(),
            "--workload-timeout".to_string(),
            spec.timeout.as_secs().to_string(),
        ]),
        Workload::Shell => argv.push("--shell".to_string()),
    }
    argv.push("--".to_string());
    argv.extend(spec.args.iter().cloned());
    argv
}

/// The plan test's name for a run.
pub const RUN_TEST: &str = "run";

/// Kernel `sched_ext` lines that say a scheduler was ejected or failed (a normal exit reads
/// `disabled (unregistered from user space)`).
pub fn ejection_lines(report: &BootReport) -> Vec<String> {
    report
        .console
        .sched_ext
        .iter()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            (l.contains("disabled (") && !l.contains("unregistered from user space"))
                || l.contains("error")
                || l.contains("stall")
        })
        .cloned()
        .collect()
}

/// Why a run failed (empty = it did not).
pub fn run_failures(report: &BootReport) -> Vec<String> {
    let mut why = Vec::new();
    match report.console.results.iter().find(|r| r.name == RUN_TEST) {
        Some(r) if r.outcome.is_ok() => {}
        Some(r) => {
            let said = report
                .console
                .tail
                .iter()
                .find_map(|l| l.split_once("scx-vm: FAILED: ").map(|(_, w)| w.to_string()));
            why.push(match said {
                Some(w) => w,
                None => format!("the run ended {} ({})", r.outcome, r.detail),
            });
        }
        None if report.timed_out.is_none() => why.push("the run reported no result".to_string()),
        None => {}
    }
    let ejected = ejection_lines(report);
    if !ejected.is_empty() {
        why.push(format!("the kernel says: {}", ejected.join(" / ")));
    }
    for w in report.guest_failures() {
        // A failed run makes /init say `failure`; that is not news.
        if !w.contains("/init reported failure although") {
            why.push(w);
        }
    }
    why
}

fn accel_for(vm: &VmOptions, init: &Path, kernel: &Kernel) -> Result<Accel> {
    qemu::resolve_accel(vm.accel, || suite::probe_image(init, kernel))
}

/// Boot each kernel and run the scheduler there with the workload. Prints the guest's
/// output (quietly unless `vm.verbose`); on failure the last console lines and the log path,
/// and returns one line saying what happened.
pub fn run_scheduler(spec: &RunSpec, kernels: &[Kernel], vm: &VmOptions) -> Result<()> {
    let init = crate::guest::build_init()?;
    let kernel0 = kernels.first().context("no kernel selected")?;
    let accel = accel_for(vm, &init, kernel0)?;
    let mut programs = vec![spec.scheduler.clone()];
    programs.extend(spec.extra.iter().cloned());
    let build = GuestBuild {
        init,
        test_exes: Vec::new(),
        programs,
    };
    let work = match spec.workload {
        Workload::Demo(d) => d,
        _ => spec.timeout,
    };
    // Attaching and stopping get their own time on top of the workload.
    let plan_timeout = work + spec.enable_timeout + Duration::from_secs(60);
    let plan = Plan {
        env: vec![("RUST_BACKTRACE".to_string(), "1".to_string())],
        tests: vec![PlanTest {
            name: RUN_TEST.to_string(),
            timeout: plan_timeout,
            argv: run_argv(spec),
        }],
    };
    let labels = suite::labels(kernels);
    let mut failures = Vec::new();
    for (kernel, label) in kernels.iter().zip(&labels) {
        let stem = format!("run-{}-{}", spec.scheduler.0, kernel.version);
        let image = suite::write_image(
            &build,
            &[],
            kernel,
            &plan,
            &format!("run-{}", spec.scheduler.0),
        )?;
        let report = suite::boot_kernel(
            kernel,
            label,
            &image,
            vm,
            accel,
            spec.boot_timeout
                .unwrap_or(plan_timeout + Duration::from_secs(180)),
            &stem,
            spec.workload == Workload::Shell,
        )?;
        let why = run_failures(&report);
        if why.is_empty() {
            let secs = report
                .console
                .results
                .iter()
                .find(|r| r.name == RUN_TEST)
                .map(|r| r.secs)
                .unwrap_or_default();
            println!(
                "{}: {} ran ok ({:.1} s in the guest; {})",
                kernel.version,
                spec.scheduler.0,
                secs,
                suite::wall_time_line(&kernel.version, &report)
                    .split_once(": ")
                    .map(|(_, w)| w)
                    .unwrap_or_default()
            );
            continue;
        }
        report.print_failure_context();
        failures.push(format!("{}: {}", kernel.version, why.join("; ")));
    }
    if failures.is_empty() {
        return Ok(());
    }
    bail!("{}", failures.join("; "))
}

/// Run `exe ARGS` alone in the VM (with `extra` programs in `/bin`) on the first kernel and
/// return its exit code (128 + N when killed by signal N). Kernel trouble (oops, warning,
/// stall) makes an exit code 0 into 1.
pub fn run_program(
    exe: &Path,
    args: &[String],
    extra: &Programs,
    kernels: &[Kernel],
    vm: &VmOptions,
    timeout: Duration,
) -> Result<i32> {
    check_executable(exe, "the program")?;
    let name = guest_name(exe)?;
    let init = crate::guest::build_init()?;
    let kernel = kernels.first().context("no kernel selected")?;
    let accel = accel_for(vm, &init, kernel)?;
    let mut programs = vec![(name.clone(), exe.to_path_buf())];
    programs.extend(extra.iter().cloned());
    let build = GuestBuild {
        init,
        test_exes: Vec::new(),
        programs,
    };
    let mut argv = vec![format!("/bin/{name}")];
    argv.extend(args.iter().cloned());
    let plan = Plan {
        env: vec![("RUST_BACKTRACE".to_string(), "1".to_string())],
        tests: vec![PlanTest {
            name: "runner".to_string(),
            timeout,
            argv,
        }],
    };
    let image = suite::write_image(&build, &[], kernel, &plan, "runner")?;
    let report = suite::boot_kernel(
        kernel,
        "",
        &image,
        vm,
        accel,
        timeout + Duration::from_secs(180),
        &format!("runner-{name}"),
        false,
    )?;
    let trouble: Vec<String> = report
        .guest_failures()
        .into_iter()
        .filter(|w| !w.contains("/init reported failure although"))
        .collect();
    let code = match report.console.results.iter().find(|r| r.name == "runner") {
        Some(r) => exit_code(&r.detail),
        None => None,
    };
    let Some(code) = code else {
        report.print_failure_context();
        bail!(
            "{} did not finish in the VM: {}",
            name,
            if trouble.is_empty() {
                "no result".to_string()
            } else {
                trouble.join("; ")
            }
        );
    };
    if !trouble.is_empty() {
        report.print_failure_context();
        for t in &trouble {
            eprintln!("cargo-scx-vm runner: {t}");
        }
        return Ok(if code == 0 { 1 } else { code });
    }
    Ok(code)
}

/// The exit code in an `init: result` detail: `exit=N` → N, `signal=N` → 128 + N; `None`
/// for a timeout or a program that could not start.
pub fn exit_code(detail: &str) -> Option<i32> {
    if let Some(n) = detail.strip_prefix("exit=") {
        return n.parse().ok();
    }
    if let Some(n) = detail.strip_prefix("signal=") {
        return n.parse::<i32>().ok().map(|s| 128 + s);
    }
    None
}

/// `cargo scx-vm test`.
#[derive(Clone, Debug)]
pub struct TestSpec {
    /// The workspace directory to build in.
    pub dir: PathBuf,
    /// The package whose tests run.
    pub package: String,
    /// Only these `--test` targets (all test targets when empty).
    pub tests: Vec<String>,
    /// Only tests whose `<target>::<test>` name contains one of these.
    pub filters: Vec<String>,
    /// The ignored tests (default) or all.
    pub which: Which,
    /// Build with `--release`.
    pub release: bool,
    /// Per-test timeout.
    pub test_timeout: Duration,
    /// Whole-boot timeout.
    pub timeout: Duration,
    /// More programs for the guest's `/bin`.
    pub extra: Programs,
    /// Print the tests that would run and stop.
    pub list: bool,
}

/// Build a package's tests, run them in the VM on each kernel, print the results table;
/// `Err` unless every test was ok and the kernel behaved.
pub fn test_package(spec: &TestSpec, kernels: &KernelSelect, vm: &VmOptions) -> Result<()> {
    println!("building the tests of {}…", spec.package);
    let (exes, mut bins) = suite::build_tests(&spec.dir, &spec.package, &spec.tests, spec.release)?;
    let tests = suite::filter_tests(suite::enumerate(&exes, spec.which)?, &spec.filters);
    if spec.list {
        for t in &tests {
            println!("{}", t.name);
        }
        return Ok(());
    }
    if tests.is_empty() {
        bail!(
            "no test to run in the VM{}: mark VM-only tests #[ignore = \"needs the sched_ext \
             VM\"] (or pass --all-tests)",
            if spec.filters.is_empty() {
                String::new()
            } else {
                format!(" matches --filter {}", spec.filters.join(", --filter "))
            }
        );
    }
    suite::ensure_tools()?;
    let kernels = suite::select_kernels(kernels)?;
    bins.extend(spec.extra.iter().cloned());
    let build = GuestBuild {
        init: crate::guest::build_init()?,
        test_exes: exes,
        programs: bins,
    };
    println!("{} test(s) on {} kernel(s)", tests.len(), kernels.len());
    let accel = accel_for(vm, &build.init, &kernels[0])?;
    let plan = suite::make_plan(&build, &tests, spec.test_timeout, spec.which, &[]);
    let report = suite::run_suite(
        &build,
        &tests,
        &plan,
        &kernels,
        vm,
        accel,
        spec.timeout,
        &format!("test-{}", spec.package),
    )?;
    report.finish("cargo scx-vm test")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::ConsoleParser;

    fn spec(workload: Workload) -> RunSpec {
        RunSpec {
            scheduler: ("scx-fifo".into(), "/x/scx-fifo".into()),
            extra: vec![],
            args: vec!["--slice-us".into(), "500".into()],
            workload,
            timeout: Duration::from_secs(300),
            enable_timeout: Duration::from_secs(30),
            boot_timeout: None,
        }
    }

    #[test]
    fn guest_command_lines() {
        assert_eq!(
            run_argv(&spec(Workload::Demo(Duration::from_secs(10)))),
            [
                "/init",
                "run",
                "--scheduler",
                "/bin/scx-fifo",
                "--enable-timeout",
                "30",
                "--duration",
                "10",
                "--",
                "--slice-us",
                "500"
            ]
        );
        let a = run_argv(&spec(Workload::Command("echo hi".into())));
        assert_eq!(
            a[6..],
            [
                "--workload",
                "echo hi",
                "--workload-timeout",
                "300",
                "--",
                "--slice-us",
                "500"
            ]
        );
        assert!(run_argv(&spec(Workload::Shell)).contains(&"--shell".to_string()));
    }

    #[test]
    fn exit_codes_from_details() {
        assert_eq!(exit_code("exit=0"), Some(0));
        assert_eq!(exit_code("exit=101"), Some(101));
        assert_eq!(exit_code("signal=9"), Some(137));
        assert_eq!(exit_code("timeout=30s"), None);
        assert_eq!(exit_code("spawn-errno=2"), None);
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
            boot_to_result: Some(Duration::from_secs(5)),
            elapsed: Duration::from_secs(6),
            qemu_stderr: vec![],
            log: None,
        }
    }

    #[test]
    fn judges_runs() {
        let ok = report(&[
            "init: kernel 7.3.4 cpus=2 sched_ext=disabled",
            "[    5.0] sched_ext: BPF scheduler \"fifo\" enabled",
            "[    9.0] sched_ext: BPF scheduler \"fifo\" disabled (unregistered from user space)",
            "init: result run ok 5.00 exit=0",
            "init: summary passed=1 failed=0",
            "init: success",
        ]);
        assert!(run_failures(&ok).is_empty(), "{:?}", run_failures(&ok));
        let failed = report(&[
            "init: kernel 7.3.4 cpus=2 sched_ext=disabled",
            "scx-vm: FAILED: the workload failed (exit status 1) after 0.1 s",
            "init: result run fail 3.00 exit=1",
            "init: summary passed=0 failed=1",
            "init: failure",
        ]);
        assert_eq!(
            run_failures(&failed),
            ["the workload failed (exit status 1) after 0.1 s"]
        );
        let ejected = report(&[
            "init: kernel 7.3.4 cpus=2 sched_ext=disabled",
            "[    6.0] sched_ext: BPF scheduler \"fifo\" disabled (runtime error)",
            "scx-vm: FAILED: the scheduler was ejected: …",
            "init: result run fail 3.00 exit=1",
            "init: summary passed=0 failed=1",
            "init: failure",
        ]);
        let why = run_failures(&ejected);
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[1].contains("disabled (runtime error)"), "{why:?}");
    }

    #[test]
    fn bad_programs_are_refused_clearly() {
        let e = check_executable(Path::new("/etc/passwd"), "--path")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--path /etc/passwd is not an executable file"),
            "{e}"
        );
        let e = check_executable(Path::new("/nonexistent/x"), "--path")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--path /nonexistent/x: "), "{e}");
        assert!(check_executable(Path::new("/bin/sh"), "--path").is_ok());
        let p = added_programs(&["/bin/sh".into(), "/bin/true".into()]).unwrap();
        assert_eq!(p[0].0, "sh");
        assert!(added_programs(&["/bin/sh".into(), "/usr/bin/sh".into()]).is_err());
    }
}
