//! `vm-bench --baseline upstream`: the upstream user-space schedulers `scx_rlfifo` and
//! `scx_rustland` (crates.io, pinned [`VERSION`]), built once with `cargo install --locked`
//! into `target/upstream/<name>-<version>` (one shared build directory,
//! `target/upstream/build`) and reused while their binary exists.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::setup::{self, Need};

/// The pinned crates.io version of both schedulers.
pub const VERSION: &str = "1.1.4";

/// The upstream schedulers, in the order each round runs them.
pub const SCHEDULERS: &[&str] = &["scx_rlfifo", "scx_rustland"];

/// A rough build time for the progress line (the first one builds the shared dependencies).
const MINUTES: [u32; 2] = [10, 3];

/// `target/upstream`.
pub fn dir() -> PathBuf {
    crate::workspace_root().join("target").join("upstream")
}

/// Where `cargo install` puts `name`'s binary.
pub fn binary(root: &Path, name: &str) -> PathBuf {
    root.join(format!("{name}-{VERSION}"))
        .join("bin")
        .join(name)
}

/// The guest arguments each upstream scheduler gets before any `--sched-args`: none (their
/// statistics are off unless asked for, and their other output goes to vm-bench's per-run
/// log, not the console).
pub fn default_args(_name: &str) -> &'static [&'static str] {
    &[]
}

/// The last `n` lines of a log, indented.
pub(super) fn log_tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect()
}

/// Build (once) and return `(name, binary)` of every upstream scheduler.
pub fn ensure_built() -> Result<Vec<(String, PathBuf)>> {
    let root = dir();
    let mut out = Vec::new();
    for (i, name) in SCHEDULERS.iter().enumerate() {
        let bin = binary(&root, name);
        if !bin.is_file() {
            build(&root, name, MINUTES[i.min(MINUTES.len() - 1)])?;
        }
        out.push((name.to_string(), bin));
    }
    Ok(out)
}

fn build(root: &Path, name: &str, minutes: u32) -> Result<()> {
    setup::ensure(&[Need::UpstreamBuild, Need::Libclang])?;
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let log = root.join(format!("{name}-{VERSION}.build.log"));
    let file =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = file.try_clone()?;
    println!(
        "xtask: building {name} {VERSION} from crates.io (once, ~{minutes} min; log {}) …",
        log.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["install", "--locked", "--version", VERSION, "--root"])
        .arg(root.join(format!("{name}-{VERSION}")))
        .arg(name)
        .env("CARGO_TARGET_DIR", root.join("build"))
        // Built as a program of its own, not with this workspace's settings.
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
    // Their build scripts compile BPF with `clang`; Debian may only have `clang-19`.
    if setup::find_program("clang").is_none() {
        if let Some(clang) = setup::clang_path() {
            cmd.env("BPF_CLANG", clang);
        }
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run cargo install {name}"))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        bail!(
            "building {name} {VERSION} from crates.io failed ({status}); the end of its log:\n\
             {}(full log in {})",
            log_tail(&text, 40),
            log.display()
        );
    }
    let bin = binary(root, name);
    if !bin.is_file() {
        bail!(
            "cargo install {name} {VERSION} succeeded but left no {} (log {})",
            bin.display(),
            log.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_tail() {
        assert_eq!(
            binary(Path::new("/t/upstream"), "scx_rlfifo"),
            Path::new("/t/upstream/scx_rlfifo-1.1.4/bin/scx_rlfifo")
        );
        assert_eq!(log_tail("a\nb\nc\n", 2), "    b\n    c\n");
        assert_eq!(log_tail("", 2), "");
    }
}
