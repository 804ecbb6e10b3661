//! `cargo xtask package`: the crates as crates.io would get them.
//!
//! 1. `cargo package` **with verification** of every publishable workspace crate, all in one
//!    command (cargo builds each from its `.crate` file, the unpublished ones it depends on
//!    coming from a temporary local registry), then prints their sizes.
//! 2. With `--outside-check`, the outside-crate check: a small FIFO scheduler crate is written
//!    into a temporary folder outside the workspace, depending on the *packaged* crates
//!    (the unpacked `.crate` files, through `[patch.crates-io]`), and built with no clang on
//!    PATH and `CLANG` pointing nowhere, which proves a downstream build needs no clang. Then,
//!    when the workspace has `scx-userland-vm`, its packaged `cargo-scx-vm` is installed and
//!    runs the scheduler in the sched_ext VM (`cargo scx-vm run`) and its own VM test
//!    (`cargo scx-vm test`).
//!
//! Cargo's output goes to `target/xtask-package.log`; a failing step prints its part of it.

mod templates;

use std::env;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::workspace_root;

/// The generated scheduler crate (and binary) and its sched_ext ops name.
const OUTSIDE_CRATE: &str = "outside-fifo";
const OUTSIDE_OPS: &str = "outside_fifo";
/// The crate that provides `cargo scx-vm`.
const VM_CRATE: &str = "scx-userland-vm";
/// What the `--workload` of `cargo scx-vm run` prints when the scheduler is attached.
const RUN_MARKER: &str = "outside-check: state=enabled ops=outside_fifo_0.1.0_";
/// Set as `CLANG` for the outside builds: a clang that does not exist.
const NO_CLANG: &str = "/nonexistent/clang-for-the-outside-check";

/// `cargo xtask package` arguments.
#[derive(clap::Parser)]
pub struct PackageArgs {
    /// Also build a scheduler crate outside the workspace from the packaged crates, with no
    /// clang, and run it in the sched_ext VM.
    #[arg(long)]
    pub outside_check: bool,
    /// With --outside-check: build only, skip the VM runs.
    #[arg(long, requires = "outside_check")]
    pub no_vm: bool,
    /// Kernels for the VM runs (as `cargo scx-vm --kernels`).
    #[arg(long, default_value = "7.3")]
    pub kernels: String,
    /// No network: cargo's `--offline`, and cached kernels only (`cargo scx-vm --offline`).
    #[arg(long)]
    pub offline: bool,
    /// Leave this publishable crate out (repeatable).
    #[arg(long, value_name = "CRATE")]
    pub exclude: Vec<String>,
    /// Keep the outside check's temporary folder (its path is printed).
    #[arg(long)]
    pub keep: bool,
}

/// A publishable workspace crate.
struct Crate {
    name: String,
    version: String,
}

impl Crate {
    fn file_stem(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

pub fn run(args: PackageArgs) -> Result<()> {
    let root = workspace_root();
    let (mut crates, target_dir) = publishable(&root)?;
    crates.retain(|c| !args.exclude.contains(&c.name));
    let mut log = Log::create(&target_dir.join("xtask-package.log"))?;
    if crates.is_empty() {
        bail!("no publishable crate in the workspace");
    }
    let names: Vec<&str> = crates.iter().map(|c| c.name.as_str()).collect();

    // Registry crates are never rebuilt once built, and the packages verify against each
    // other through a temporary local registry under the same version on every run: start
    // with no package and no built artifact of ours, in a target dir of its own (where the
    // rest of the dependency tree stays built).
    let verify_dir = target_dir.join("package-verify");
    let package_dir = verify_dir.join("package");
    if package_dir.exists() {
        fs::remove_dir_all(&package_dir)
            .with_context(|| format!("removing the stale {}", package_dir.display()))?;
    }
    for sub in [".fingerprint", "deps", "build"] {
        let dir = verify_dir.join("debug").join(sub);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().replace('_', "-");
            if name.starts_with("scx-userland") || name.starts_with("libscx-userland") {
                let path = entry.path();
                let res = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                res.with_context(|| format!("removing the stale {}", path.display()))?;
            }
        }
    }

    forget_unpacked(&crates)?;

    let mut cmd = cargo();
    cmd.current_dir(&root)
        .env("CARGO_TARGET_DIR", &verify_dir)
        .args(["package", "--allow-dirty"]);
    if args.offline {
        cmd.arg("--offline");
    }
    for name in &names {
        cmd.args(["-p", name]);
    }
    log.run(
        &format!("cargo package (with verification) of {}", names.join(", ")),
        &mut cmd,
    )?;
    for c in &crates {
        let file = package_dir.join(format!("{}.crate", c.file_stem()));
        let bytes = fs::metadata(&file)
            .with_context(|| format!("{} was not written", file.display()))?
            .len();
        println!(
            "package: {}.crate: {:.1} KiB, {} files",
            c.file_stem(),
            bytes as f64 / 1024.0,
            crate_files(&file)?
        );
    }

    if args.outside_check {
        outside_check(&root, &target_dir, &crates, &args, &mut log)?;
    }
    Ok(())
}

/// Removes cargo's unpacked copies of our own crates taken from a *local* registry.
///
/// Cargo unpacks every registry crate once into `$CARGO_HOME/registry/src/<source>/`
/// and reuses that folder whenever the source and version match, without comparing the
/// contents. The temporary registry `cargo package` verifies against sits at the same path on
/// every run and our version does not change between commits, so without this the verify
/// build compiles the sources of the *first* run ever made in this checkout path. Local
/// registries are the folders whose name starts with `-` (no host); crates.io's are left alone.
fn forget_unpacked(crates: &[Crate]) -> Result<()> {
    let cargo_home = match env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => match env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".cargo"),
            None => return Ok(()),
        },
    };
    let Ok(sources) = fs::read_dir(cargo_home.join("registry").join("src")) else {
        return Ok(());
    };
    for source in sources.flatten() {
        if !source.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for c in crates {
            let unpacked = source.path().join(c.file_stem());
            if unpacked.exists() {
                fs::remove_dir_all(&unpacked)
                    .with_context(|| format!("removing the stale {}", unpacked.display()))?;
            }
        }
    }
    Ok(())
}

/// The workspace crates cargo may publish (`publish` unset), in `cargo metadata` order, and
/// cargo's target directory.
fn publishable(root: &Path) -> Result<(Vec<Crate>, PathBuf)> {
    let out = cargo()
        .current_dir(root)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed");
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut crates = Vec::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        // `publish = false` is `[]`; unset is `null` (any registry).
        if !pkg["publish"].is_null() {
            continue;
        }
        crates.push(Crate {
            name: pkg["name"].as_str().unwrap_or_default().to_string(),
            version: pkg["version"].as_str().unwrap_or_default().to_string(),
        });
    }
    let target_dir = meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")?;
    Ok((crates, target_dir))
}

/// Number of files in a `.crate` (a gzipped tar).
fn crate_files(file: &Path) -> Result<usize> {
    let out = Command::new("tar")
        .arg("-tzf")
        .arg(file)
        .output()
        .context("running tar")?;
    if !out.status.success() {
        bail!("tar -tzf {} failed", file.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.ends_with('/'))
        .count())
}

fn outside_check(
    root: &Path,
    target_dir: &Path,
    crates: &[Crate],
    args: &PackageArgs,
    log: &mut Log,
) -> Result<()> {
    // One fixed folder (so the builds in target/outside-check are reused from run to run),
    // held under a lock against a concurrent check.
    let tmp = env::temp_dir().join("scx-userland-outside-check");
    if tmp.starts_with(root) {
        bail!(
            "the temporary folder {} is inside the workspace; set TMPDIR elsewhere",
            tmp.display()
        );
    }
    let _lock = lock(&tmp.with_extension("lock"))?;
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = outside_check_in(root, target_dir, &tmp, crates, args, log);
    if result.is_ok() && !args.keep {
        let _ = fs::remove_dir_all(&tmp);
    } else {
        println!("outside check: kept {}", tmp.display());
    }
    result
}

fn outside_check_in(
    root: &Path,
    target_dir: &Path,
    tmp: &Path,
    crates: &[Crate],
    args: &PackageArgs,
    log: &mut Log,
) -> Result<()> {
    // The packages, unpacked as cargo would unpack them from a registry.
    let unpacked = tmp.join("crates");
    fs::create_dir_all(&unpacked)?;
    for c in crates {
        let file = target_dir
            .join("package-verify")
            .join("package")
            .join(format!("{}.crate", c.file_stem()));
        // `-m`: the files get the time of unpacking, so builds of an earlier check in the
        // reused target dir are never taken for current.
        let status = Command::new("tar")
            .arg("-xmzf")
            .arg(&file)
            .arg("-C")
            .arg(&unpacked)
            .status()
            .context("running tar")?;
        if !status.success() {
            bail!("unpacking {} failed", file.display());
        }
    }
    let find = |name: &str| crates.iter().find(|c| c.name == name);

    // The scheduler crate.
    let dir = tmp.join(OUTSIDE_CRATE);
    let Some(userland) = find("scx-userland") else {
        bail!("scx-userland is not among the packaged crates");
    };
    let mut patch = String::new();
    for name in ["scx-userland-sys", "scx-userland-bpf", "scx-userland"] {
        let c = find(name).with_context(|| format!("{name} is not among the packaged crates"))?;
        let path = unpacked.join(c.file_stem());
        patch.push_str(&format!("{name} = {{ path = {} }}\n", toml_str(&path)));
    }
    let fill = |template: &str| {
        template
            .replace("{{NAME}}", OUTSIDE_CRATE)
            .replace("{{OPS}}", OUTSIDE_OPS)
            .replace("{{VERSION}}", &userland.version)
            .replace("{{PATCH}}", &patch)
    };
    fs::create_dir_all(dir.join("src"))?;
    fs::create_dir_all(dir.join("tests"))?;
    fs::write(dir.join("Cargo.toml"), fill(templates::CARGO_TOML))?;
    fs::write(dir.join("src/main.rs"), fill(templates::MAIN_RS))?;
    fs::write(dir.join("tests/vm.rs"), fill(templates::VM_TEST_RS))?;
    // The workspace's lock file, so the same dependency versions are used (cargo prunes it).
    fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"))?;

    // No clang: PATH without any clang*, CLANG pointing nowhere.
    let path = path_without_clang(tmp)?;
    if let Some(found) = find_clang(&path) {
        bail!(
            "outside check: {} is still reachable on the stripped PATH",
            found.display()
        );
    }
    let target = target_dir.join("outside-check");
    let outside = |cargo_args: &[&str]| {
        let mut cmd = cargo();
        cmd.current_dir(&dir)
            .env("PATH", &path)
            .env("CLANG", NO_CLANG)
            .env("CARGO_TARGET_DIR", &target)
            .args(cargo_args);
        if args.offline {
            cmd.arg("--offline");
        }
        cmd
    };
    log.run(
        &format!(
            "outside check: cargo build --all-targets of {} in {} (no clang on PATH, CLANG={NO_CLANG})",
            OUTSIDE_CRATE,
            dir.display()
        ),
        &mut outside(&["build", "--all-targets"]),
    )?;
    log.run(
        "outside check: cargo test on the host (the VM test is ignored there)",
        &mut outside(&["test"]),
    )?;
    // The counter-proof: building the BPF program (`build-bpf`) needs clang, and must fail here.
    let (built, output) = log.run_status(
        "outside check: cargo check --features scx-userland/build-bpf must fail (it needs clang)",
        &mut outside(&["check", "--features", "scx-userland/build-bpf"]),
    )?;
    if built || !output.contains(NO_CLANG) {
        log.fail(
            "outside check: the no-clang counter-proof",
            &format!(
                "{}\nexpected the build-bpf build to fail trying to run {NO_CLANG}",
                output
            ),
        )?;
    }
    println!(
        "outside check: {OUTSIDE_CRATE} built from the packaged crates with no clang on PATH and CLANG={NO_CLANG}"
    );

    // The VM part, through the packaged cargo-scx-vm.
    let vm = find(VM_CRATE);
    if args.no_vm || vm.is_none() {
        let why = if args.no_vm {
            "--no-vm was given".to_string()
        } else {
            format!("`{VM_CRATE}` (`cargo scx-vm`) is not among the packaged crates")
        };
        let bar = "!".repeat(78);
        println!("{bar}");
        println!("!!! outside check: VM PART SKIPPED: {why}.");
        println!("!!! {OUTSIDE_CRATE} was built but NOT run on a sched_ext kernel.");
        println!("{bar}");
        return Ok(());
    }
    let vm = vm.expect("checked above");
    let cargo_root = tmp.join("cargo-root");
    log.run(
        &format!("outside check: cargo install cargo-scx-vm from the packaged {VM_CRATE}"),
        cargo()
            .current_dir(tmp)
            .env("PATH", &path)
            .env("CLANG", NO_CLANG)
            .env("CARGO_TARGET_DIR", target_dir.join("outside-check-install"))
            .args(["install", "--locked"])
            .args(args.offline.then_some("--offline"))
            .arg("--path")
            .arg(unpacked.join(vm.file_stem()))
            .arg("--root")
            .arg(&cargo_root),
    )?;
    let vm_path =
        env::join_paths(std::iter::once(cargo_root.join("bin")).chain(env::split_paths(&path)))?;
    let cache = root.join("target").join("vm");
    let vm_flags = |cmd: &mut Command| {
        cmd.env("PATH", &vm_path)
            .args(["--kernels", &args.kernels, "--cache-dir"])
            .arg(&cache);
    };
    let workload = "sleep 1; echo \"outside-check: state=$(cat /sys/kernel/sched_ext/state) \
                    ops=$(cat /sys/kernel/sched_ext/root/ops)\"";
    let mut run = outside(&[
        "scx-vm",
        "run",
        "--bin",
        OUTSIDE_CRATE,
        "--workload",
        workload,
    ]);
    vm_flags(&mut run);
    let output = log.run(
        &format!(
            "outside check: cargo scx-vm run --bin {OUTSIDE_CRATE} (kernels {})",
            args.kernels
        ),
        &mut run,
    )?;
    if !output.contains(RUN_MARKER) {
        log.fail(
            "outside check: cargo scx-vm run",
            &format!("its output lacks `{RUN_MARKER}`"),
        )?;
    }
    let mut test = outside(&["scx-vm", "test"]);
    vm_flags(&mut test);
    log.run(
        &format!(
            "outside check: cargo scx-vm test (kernels {})",
            args.kernels
        ),
        &mut test,
    )?;
    println!(
        "outside check: {OUTSIDE_CRATE} ran on sched_ext kernel(s) {} and its VM test passed",
        args.kernels
    );
    Ok(())
}

/// An exclusive lock on `path` (created if need be), held until the file is dropped.
fn lock(path: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock(2) on an open file descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        println!(
            "outside check: waiting for another check to release {}",
            path.display()
        );
        // SAFETY: as above.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(file)
}

/// The toolchain's cargo (the one running xtask).
fn cargo() -> Command {
    Command::new(env!("CARGO"))
}

/// A TOML basic string holding `path`.
fn toml_str(path: &Path) -> String {
    let s = path.to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn is_clang(name: &OsStr) -> bool {
    name.to_string_lossy().starts_with("clang")
}

/// PATH with every clang* left out: a directory holding one is replaced by a folder (under
/// `tmp`) of symlinks to everything else in it.
fn path_without_clang(tmp: &Path) -> Result<OsString> {
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs = Vec::new();
    for (i, dir) in env::split_paths(&path).enumerate() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let names: Vec<OsString> = entries.flatten().map(|e| e.file_name()).collect();
        if !names.iter().any(|n| is_clang(n)) {
            dirs.push(dir);
            continue;
        }
        let shim = tmp.join("path").join(i.to_string());
        fs::create_dir_all(&shim)?;
        for name in names.iter().filter(|n| !is_clang(n)) {
            std::os::unix::fs::symlink(dir.join(name), shim.join(name))
                .with_context(|| format!("linking {}", shim.join(name).display()))?;
        }
        dirs.push(shim);
    }
    Ok(env::join_paths(dirs)?)
}

/// A clang* reachable through `path`, if any.
fn find_clang(path: &OsStr) -> Option<PathBuf> {
    env::split_paths(path).find_map(|dir| {
        fs::read_dir(&dir)
            .ok()?
            .flatten()
            .find(|e| is_clang(&e.file_name()))
            .map(|e| e.path())
    })
}

/// The log file all cargo output goes to.
struct Log {
    path: PathBuf,
    file: File,
}

impl Log {
    fn create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Run `cmd` with its output appended to the log; print `step`, and on failure the
    /// step's output. Returns the step's output.
    fn run(&mut self, step: &str, cmd: &mut Command) -> Result<String> {
        let (success, output) = self.run_status(step, cmd)?;
        if !success {
            self.fail(step, &output)?;
        }
        Ok(output)
    }

    /// Run `cmd` with its output appended to the log and print `step`; whether it succeeded,
    /// and its output.
    fn run_status(&mut self, step: &str, cmd: &mut Command) -> Result<(bool, String)> {
        println!("{step}");
        let start = self.file.seek(SeekFrom::End(0))?;
        writeln!(self.file, "==> {step}\n$ {cmd:?}")?;
        let status = cmd
            .stdin(Stdio::null())
            .stdout(self.file.try_clone()?)
            .stderr(self.file.try_clone()?)
            .status()
            .with_context(|| format!("running {cmd:?}"))?;
        writeln!(self.file, "==> {status}")?;
        let output = self.since(start)?;
        Ok((status.success(), output))
    }

    /// The log's text from `start` on.
    fn since(&mut self, start: u64) -> Result<String> {
        let mut bytes = Vec::new();
        self.file.seek(SeekFrom::Start(start))?;
        self.file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Print what failed and return the error.
    fn fail(&mut self, step: &str, detail: &str) -> Result<()> {
        eprintln!("{detail}");
        bail!("{step} failed (full log: {})", self.path.display())
    }
}
