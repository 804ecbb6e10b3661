//! Where the runner keeps its kernels, apt state, images, guest `/init` builds and console
//! logs, and how chatty it is.
//!
//! The cache directory is, in order: [`set_dir`] (the binaries' `--cache-dir DIR`), the
//! environment variable `SCX_VM_CACHE`, or `<target directory>/vm` of the cargo workspace the
//! process runs in (`cargo metadata`'s `target_directory`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{bail, Context, Result};

/// The environment variable that overrides the cache directory.
pub const CACHE_ENV: &str = "SCX_VM_CACHE";

static DIR: OnceLock<PathBuf> = OnceLock::new();
static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Use `dir` as the cache directory for the rest of the process (first call wins). Returns
/// false when a directory was already chosen (explicitly or by [`dir`]).
pub fn set_dir(dir: PathBuf) -> bool {
    DIR.set(dir).is_ok()
}

/// The cache directory (see the module docs); resolved once. Falls back to `./target/vm`
/// (made absolute) when `cargo metadata` cannot tell.
pub fn dir() -> PathBuf {
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        match target_directory(Path::new(".")) {
            Ok(t) => t.join("vm"),
            Err(_) => std::env::current_dir()
                .unwrap_or_default()
                .join("target")
                .join("vm"),
        }
    })
    .clone()
}

/// Show the whole console and every step (`--verbose`).
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// Whether `--verbose` was given.
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// The cargo target directory of the workspace containing `dir`.
pub fn target_directory(dir: &Path) -> Result<PathBuf> {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("could not run `cargo metadata`")?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` failed in {} ({})",
            dir.display(),
            out.status
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` printed no target_directory")
}

/// `<cache>/logs/<timestamp>-<what>.log`: where a boot's full console goes.
pub fn log_file(what: &str) -> PathBuf {
    let what: String = what
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir()
        .join("logs")
        .join(format!("{}-{what}.log", timestamp()))
}

/// `YYYYMMDD-HHMMSS` (UTC) now.
pub fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    stamp(secs)
}

/// `YYYYMMDD-HHMMSS` (UTC) of a Unix time.
pub fn stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        assert_eq!(stamp(0), "19700101-000000");
        assert_eq!(stamp(1_795_000_000), "20261118-110640");
        assert_eq!(stamp(951_782_400), "20000229-000000");
    }

    #[test]
    fn log_names_are_safe() {
        let p = log_file("run scx/fifo 7.3.4+deb13");
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with("-run_scx_fifo_7.3.4+deb13.log"), "{name}");
        assert_eq!(p.parent().unwrap().file_name().unwrap(), "logs");
    }
}
