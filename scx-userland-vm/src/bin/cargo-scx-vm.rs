//! `cargo scx-vm`: run and test sched_ext schedulers in a QEMU VM on a sched_ext kernel.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use scx_userland_vm::cargo::{self, ProgramKind};
use scx_userland_vm::kernel::KernelSelect;
use scx_userland_vm::qemu::{self, VmOptions};
use scx_userland_vm::session::{self, RunSpec, TestSpec, Workload};
use scx_userland_vm::suite::{self, Which};
use scx_userland_vm::{cache, kernel};

const AFTER_HELP: &str = "\
Guest programs are in the guest's /bin as /bin/NAME (the scheduler, the package's binaries, \
--add programs, and test executables as /bin/vmtest-<target>); busybox provides /bin/sh and \
the usual tools; /init run and /init demo are the scheduler runner and the built-in demo \
workload, usable from tests too.

Everything is cached in <cargo target dir>/vm (kernels, apt state, images, the guest /init, \
logs/<timestamp>-<what>.log with every boot's full console); --cache-dir DIR or SCX_VM_CACHE \
moves it. Needs qemu-system-x86_64, busybox-static, apt-get and dpkg-deb (it says the exact \
apt-get install line when one is missing; it installs nothing).";

/// Run and test Linux sched_ext schedulers in a QEMU VM that boots a sched_ext kernel.
#[derive(Parser)]
#[command(name = "cargo scx-vm", bin_name = "cargo scx-vm", version, after_help = AFTER_HELP)]
struct Cli {
    /// Keep kernels, images, logs here instead of the target dir's vm/ (also SCX_VM_CACHE).
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a scheduler, boot the VM, run it beside a workload, stop it with SIGINT.
    Run(RunArgs),
    /// Run a package's VM tests inside the VM, one at a time, and print a results table.
    Test(TestArgs),
    /// Boot the VM and run one program there (a cargo `runner` for .cargo/config.toml).
    Runner(RunnerArgs),
    /// Fetch (or list) the cached sched_ext kernels.
    Kernel(KernelArgs),
}

#[derive(Args)]
#[command(after_long_help = "\
The scheduler is resolved in the current workspace with cargo metadata: --bin/--example NAME \
(in -p PKG, or the workspace), else the only binary of -p PKG, of the current package or of \
the workspace (otherwise the error lists the candidates); --path EXE runs a program you built. \
It is built alone (cargo build --release, one invocation), put into the guest as /bin/NAME \
and started with ARGS. Once /sys/kernel/sched_ext/state says enabled (at most \
--enable-timeout), the workload runs: /bin/sh -c CMD with --workload (killed after \
--timeout), an interactive shell on the console with --shell (this terminal becomes the \
guest's console; exit or Ctrl-D ends it), or the built-in demo (2 CPU hogs, a pipe \
ping-pong pair, fork bursts) for --duration seconds. Then the scheduler gets SIGINT and its \
exit status and output (its exit report) are shown.

Exits non-zero when the scheduler never attached, was ejected (sched_ext disabled while it \
ran), exited with an error, when the workload failed or hung, or when the kernel logged an \
oops, BUG, WARNING, lockup or stall; the last 50 console lines and the log path are printed.

Examples:
  cargo scx-vm run -p scx-fifo
  cargo scx-vm run --bin my-sched --workload 'stress-ng --cpu 2 -t 5' --add /usr/bin/stress-ng
  cargo scx-vm run --path target/release/my-sched --shell -- --slice-us 5000")]
struct RunArgs {
    /// The package of the scheduler.
    #[arg(short = 'p', long = "package", value_name = "PKG")]
    package: Option<String>,
    /// Run this binary target.
    #[arg(long, value_name = "NAME", group = "what")]
    bin: Option<String>,
    /// Run this example target.
    #[arg(long, value_name = "NAME", group = "what")]
    example: Option<String>,
    /// Run this executable (no build).
    #[arg(long, value_name = "EXE", group = "what", conflicts_with = "package")]
    path: Option<PathBuf>,
    /// The workload: a shell command run in the guest (`/bin/sh -c CMD`).
    #[arg(long, value_name = "CMD", conflicts_with = "shell")]
    workload: Option<String>,
    /// An interactive shell on the console instead of a workload.
    #[arg(long)]
    shell: bool,
    /// Seconds the built-in demo runs (without --workload/--shell).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86400))]
    duration: u64,
    /// Put this host program (and the shared libraries it needs) into the guest's /bin.
    #[arg(long, value_name = "PATH")]
    add: Vec<PathBuf>,
    /// Seconds the workload may run before it is killed and the run fails.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Seconds the scheduler has to attach (sched_ext state `enabled`).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    enable_timeout: u64,
    #[command(flatten)]
    kernels: KernelSelect,
    #[command(flatten)]
    vm: VmOptions,
    /// Arguments for the scheduler (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

#[derive(Args)]
#[command(after_long_help = "\
Builds the package's test executables (cargo test --no-run, --release unless --debug) and \
its binaries, lists each executable's tests on the host (--list), and runs them in the guest \
one at a time (--exact, --test-threads=1, --nocapture) with a per-test timeout. By default \
only the #[ignore]d tests run: mark VM-only tests like this, so that a host `cargo test` \
skips them:

    #[test]
    #[ignore = \"needs the sched_ext VM\"]
    fn attaches() { /* start /bin/my-sched, check /sys/kernel/sched_ext/state … */ }

In the guest, SCX_VM_GUEST=1 is set, the package's binaries are /bin/NAME, and \
`/init run --scheduler /bin/NAME --workload CMD` runs a scheduler beside a workload. Prints a \
table (test, result, secs, kernel) and fails if a test is not ok or missing, or the kernel \
logged an oops, BUG, WARNING, lockup or stall.

To run a test binary with a plain `cargo test` in the VM instead, see `cargo-scx-vm runner \
--help`.")]
struct TestArgs {
    /// The package whose tests run (default: the current package).
    #[arg(short = 'p', long = "package", value_name = "PKG")]
    package: Option<String>,
    /// Only this test target (tests/NAME.rs); may be repeated.
    #[arg(long = "test", value_name = "NAME")]
    tests: Vec<String>,
    /// Only tests whose `<target>::<test>` name contains PATTERN; may be repeated.
    #[arg(long = "filter", value_name = "PATTERN")]
    filter: Vec<String>,
    /// Run every test in the VM, not only the ignored (VM-only) ones.
    #[arg(long)]
    all_tests: bool,
    /// Build in the debug profile instead of --release.
    #[arg(long)]
    debug: bool,
    /// Print the tests that would run and exit.
    #[arg(long)]
    list: bool,
    /// Per-test timeout in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    test_timeout: u64,
    /// Whole-boot timeout in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Put this host program (and its shared libraries) into the guest's /bin.
    #[arg(long, value_name = "PATH")]
    add: Vec<PathBuf>,
    #[command(flatten)]
    kernels: KernelSelect,
    #[command(flatten)]
    vm: VmOptions,
}

#[derive(Args)]
#[command(after_long_help = "\
A cargo runner: cargo calls it with the executable and its arguments, so in .cargo/config.toml

    [target.x86_64-unknown-linux-gnu]
    runner = [\"cargo-scx-vm\", \"runner\", \"--add\", \"target/release/my-sched\"]

makes `cargo test` (and `cargo run`) boot the VM and run each test executable there; use \
`cargo test -- --ignored` for the VM-only tests. The executable is /bin/<its file name> in \
the guest (with the shared libraries ldd names); its output is streamed and its exit status \
is this command's (128+N for signal N). Options go before EXE; SCX_VM_ADD=PATH:PATH adds \
programs too.")]
struct RunnerArgs {
    /// Put this host program (and its shared libraries) into the guest's /bin.
    #[arg(long, value_name = "PATH")]
    add: Vec<PathBuf>,
    /// Seconds the program may run.
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    #[command(flatten)]
    kernels: KernelSelect,
    #[command(flatten)]
    vm: VmOptions,
    /// The executable and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "EXE [ARGS]..."
    )]
    command: Vec<String>,
}

#[derive(Args)]
struct KernelArgs {
    /// Suites to fetch: 7.3, 7.2, a Debian suite name, all, or a comma-separated list
    /// (nothing: list the cached kernels).
    #[arg(long, value_name = "LIST")]
    fetch: Option<String>,
    /// Use the newest cached kernel of each suite without asking apt.
    #[arg(long)]
    offline: bool,
}

fn setup(cache_dir: Option<PathBuf>, vm: Option<&VmOptions>) -> Result<()> {
    if let Some(d) = cache_dir {
        cache::set_dir(d);
    }
    if let Some(vm) = vm {
        cache::set_verbose(vm.verbose);
    }
    qemu::install_interrupt_handler()?;
    Ok(())
}

fn run(cache_dir: Option<PathBuf>, a: RunArgs) -> Result<()> {
    setup(cache_dir, Some(&a.vm))?;
    let extra = session::added_programs(&a.add)?;
    let cwd = std::env::current_dir().context("no current directory")?;
    let scheduler = match &a.path {
        Some(p) => {
            session::check_executable(p, "--path")?;
            (session::guest_name(p)?, p.clone())
        }
        None => {
            let ws = cargo::metadata(&cwd)?;
            let wanted = match (&a.bin, &a.example) {
                (Some(b), _) => Some((ProgramKind::Bin, b.as_str())),
                (_, Some(e)) => Some((ProgramKind::Example, e.as_str())),
                _ => None,
            };
            let prog = cargo::resolve_program(&ws, &cwd, a.package.as_deref(), wanted)?;
            println!("building {}…", prog.name);
            cargo::build_programs(&cwd, std::slice::from_ref(&prog))?.remove(0)
        }
    };
    suite::ensure_tools()?;
    let kernels = suite::select_kernels(&a.kernels)?;
    let workload = match (&a.workload, a.shell) {
        (Some(w), _) => Workload::Command(w.clone()),
        (None, true) => Workload::Shell,
        (None, false) => Workload::Demo(Duration::from_secs(a.duration)),
    };
    let spec = RunSpec {
        scheduler,
        extra,
        args: a.args,
        workload,
        timeout: Duration::from_secs(a.timeout),
        enable_timeout: Duration::from_secs(a.enable_timeout),
        boot_timeout: None,
    };
    session::run_scheduler(&spec, &kernels, &a.vm)?;
    Ok(())
}

fn test(cache_dir: Option<PathBuf>, a: TestArgs) -> Result<()> {
    setup(cache_dir, Some(&a.vm))?;
    let cwd = std::env::current_dir().context("no current directory")?;
    let ws = cargo::metadata(&cwd)?;
    let package = match &a.package {
        Some(p) => ws.package(p)?.name.clone(),
        None => match ws.current_package(&cwd) {
            Some(p) => p.name.clone(),
            None => bail!(
                "no current package in {}; pick one with -p (packages: {})",
                cwd.display(),
                ws.packages
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let spec = TestSpec {
        dir: cwd,
        package,
        tests: a.tests,
        filters: a.filter,
        which: if a.all_tests {
            Which::All
        } else {
            Which::Ignored
        },
        release: !a.debug,
        test_timeout: Duration::from_secs(a.test_timeout),
        timeout: Duration::from_secs(a.timeout),
        extra: session::added_programs(&a.add)?,
        list: a.list,
    };
    session::test_package(&spec, &a.kernels, &a.vm)?;
    Ok(())
}

fn runner(cache_dir: Option<PathBuf>, a: RunnerArgs) -> Result<i32> {
    setup(cache_dir, Some(&a.vm))?;
    let mut add = a.add.clone();
    if let Some(list) = std::env::var_os("SCX_VM_ADD") {
        add.extend(std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()));
    }
    let extra = session::added_programs(&add)?;
    let (exe, args) = a.command.split_first().context("no executable given")?;
    suite::ensure_tools()?;
    let kernels = suite::select_kernels(&a.kernels)?;
    Ok(session::run_program(
        std::path::Path::new(exe),
        args,
        &extra,
        &kernels,
        &a.vm,
        Duration::from_secs(a.timeout),
    )?)
}

fn kernels(cache_dir: Option<PathBuf>, a: KernelArgs) -> Result<()> {
    setup(cache_dir, None)?;
    match a.fetch {
        Some(list) => {
            for s in kernel::parse_suites(&list)? {
                let k = kernel::fetch(&s, a.offline)?;
                println!("{s}: {} ({})", k.version, k.bzimage.display());
            }
        }
        None => kernel::list()?,
    }
    Ok(())
}

/// `cargo scx-vm …` runs `cargo-scx-vm scx-vm …`; a cargo runner runs `cargo-scx-vm runner …`.
fn args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "scx-vm") {
        args.remove(1);
    }
    args
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(args());
    let result = match cli.command {
        Cmd::Run(a) => run(cli.cache_dir, a).map(|()| 0),
        Cmd::Test(a) => test(cli.cache_dir, a).map(|()| 0),
        Cmd::Runner(a) => runner(cli.cache_dir, a),
        Cmd::Kernel(a) => kernels(cli.cache_dir, a).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("cargo scx-vm: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(args)
    }

    #[test]
    fn command_lines() {
        let Cmd::Run(a) = parse(&[
            "cargo-scx-vm",
            "run",
            "-p",
            "scx-fifo",
            "--workload",
            "true",
            "--add",
            "/bin/ls",
            "--kernel-suite",
            "7.2",
            "--offline",
            "--verbose",
            "--",
            "--slice-us",
            "5",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert_eq!(a.package.as_deref(), Some("scx-fifo"));
        assert_eq!(a.workload.as_deref(), Some("true"));
        assert_eq!(a.add, [PathBuf::from("/bin/ls")]);
        assert_eq!(a.kernels.kernels.as_deref(), Some("7.2"));
        assert!(a.kernels.offline && a.vm.verbose);
        assert_eq!(a.args, ["--slice-us", "5"]);
        assert_eq!((a.duration, a.timeout, a.enable_timeout), (10, 300, 30));
        assert!(parse(&["x", "run", "--bin", "a", "--example", "b"]).is_err());
        assert!(parse(&["x", "run", "--shell", "--workload", "b"]).is_err());
        assert!(parse(&["x", "run", "-p", "a", "--path", "/bin/true"]).is_err());

        let Cmd::Runner(r) = parse(&[
            "x",
            "runner",
            "--add",
            "/a",
            "/t/harness-1",
            "--ignored",
            "--exact",
            "x",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert_eq!(r.add, [PathBuf::from("/a")]);
        assert_eq!(r.command, ["/t/harness-1", "--ignored", "--exact", "x"]);
        assert!(parse(&["x", "runner"]).is_err());

        let Cmd::Test(t) = parse(&[
            "x",
            "test",
            "-p",
            "vm-tests",
            "--test",
            "harness",
            "--filter",
            "a",
            "--kernels",
            "all",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert_eq!(
            (t.tests.len(), t.filter.len(), t.debug, t.all_tests),
            (1, 1, false, false)
        );
        let c = parse(&["x", "--cache-dir", "/c", "kernel"]).unwrap();
        assert_eq!(c.cache_dir, Some(PathBuf::from("/c")));
    }
}
