//! Build script: the version strings `-V` prints and the kernel-visible name carries (it only
//! sets environment variables for the compiler).

use std::process::Command;

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    // The git revision when built from a checkout; a packaged build has none.
    let rev = Command::new("git")
        .args(["rev-parse", "--short=7", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    let version = match rev {
        Some(rev) => format!("{version}-g{rev}"),
        None => version.to_string(),
    };
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=SCX_FIFO_VERSION={version}");
    println!("cargo:rustc-env=SCX_FIFO_FULL_VERSION={version} {target}");
    if let Ok(out) = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
    {
        if out.status.success() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            println!("cargo:rerun-if-changed={dir}/HEAD");
            println!("cargo:rerun-if-changed={dir}/refs");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
