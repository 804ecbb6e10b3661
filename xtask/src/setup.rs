//! `cargo xtask setup` and the tool checks every other command uses.
//!
//! Each [`Need`] is something a command requires (a program, a library, a file) with a probe
//! and the Debian packages that provide it. [`ensure`] installs missing ones with apt when
//! running as root on Debian, and otherwise fails with the exact command to run.
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};

/// `cargo xtask setup` arguments.
#[derive(clap::Args)]
pub struct SetupArgs {
    /// Only report what is missing (exit status 1 if anything is); install nothing.
    #[arg(long)]
    pub check: bool,
}

/// Something a command needs on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Need {
    /// `qemu-system-x86_64`, to boot the test VM.
    Qemu,
    /// A statically linked `busybox`, the guest's shell and tools.
    Busybox,
    /// `bpftool`, to dump a kernel's BTF as `vmlinux.h`.
    Bpftool,
    /// `clang` (19), to compile the BPF side.
    Clang,
    /// libclang (19), loaded at run time by bindgen.
    Libclang,
    /// libelf + zlib headers and pkg-config, to build libbpf.
    LibbpfBuild,
    /// `apt-get` and `apt-cache`, to fetch kernels.
    Apt,
    /// `dpkg-deb`, to unpack kernel packages.
    DpkgDeb,
    /// The Debian archive keyring, to verify kernel downloads.
    Keyring,
    /// The `zstd` tool.
    Zstd,
}

/// Every need, in the order `setup` reports them.
pub const ALL: &[Need] = &[
    Need::Clang,
    Need::Libclang,
    Need::LibbpfBuild,
    Need::Bpftool,
    Need::Qemu,
    Need::Busybox,
    Need::Apt,
    Need::DpkgDeb,
    Need::Keyring,
    Need::Zstd,
];

/// Every Debian package the project needs (`cargo xtask setup` installs these).
pub const PACKAGES: &[&str] = &[
    "clang-19",
    "llvm-19",
    "libclang-19-dev",
    "bpftool",
    "libelf-dev",
    "zlib1g-dev",
    "pkg-config",
    "qemu-system-x86",
    "busybox-static",
    "debian-archive-keyring",
    "zstd",
    "dpkg",
];

/// The Debian archive keyring the kernel downloads are verified with.
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

impl Need {
    /// Debian packages that satisfy this need.
    pub fn packages(self) -> &'static [&'static str] {
        match self {
            Need::Qemu => &["qemu-system-x86"],
            Need::Busybox => &["busybox-static"],
            Need::Bpftool => &["bpftool"],
            Need::Clang => &["clang-19", "llvm-19"],
            Need::Libclang => &["libclang-19-dev"],
            Need::LibbpfBuild => &["libelf-dev", "zlib1g-dev", "pkg-config"],
            Need::Apt => &["apt"],
            Need::DpkgDeb => &["dpkg"],
            Need::Keyring => &["debian-archive-keyring"],
            Need::Zstd => &["zstd"],
        }
    }

    /// What it is needed for, for messages.
    pub fn purpose(self) -> &'static str {
        match self {
            Need::Qemu => "booting the test VM",
            Need::Busybox => "the guest's shell and tools",
            Need::Bpftool => "dumping kernel BTF into vmlinux.h",
            Need::Clang => "compiling the BPF programs",
            Need::Libclang => "generating bindings with bindgen",
            Need::LibbpfBuild => "building libbpf",
            Need::Apt => "fetching kernels",
            Need::DpkgDeb => "unpacking kernel packages",
            Need::Keyring => "verifying kernel downloads",
            Need::Zstd => "zstd (de)compression",
        }
    }

    /// Look for it on this host: `Ok(where it was found)` or `Err(what is missing)`.
    pub fn probe(self) -> std::result::Result<String, String> {
        let prog = |name: &str| find_program(name).ok_or_else(|| format!("`{name}` not on PATH"));
        let shown = |p: PathBuf| p.display().to_string();
        match self {
            Need::Qemu => qemu_path()
                .map(shown)
                .ok_or_else(|| "`qemu-system-x86_64` not on PATH".into()),
            Need::Busybox => {
                let p = prog("busybox")?;
                match is_static_elf(&p) {
                    Some(true) => Ok(shown(p)),
                    Some(false) => Err(format!(
                        "{} is dynamically linked (the guest needs busybox-static)",
                        p.display()
                    )),
                    None => Err(format!("{} is not an ELF executable", p.display())),
                }
            }
            Need::Bpftool => bpftool_path()
                .map(shown)
                .ok_or_else(|| "`bpftool` not on PATH".into()),
            Need::Clang => clang_path()
                .map(shown)
                .ok_or_else(|| "`clang-19`/`clang` not on PATH".into()),
            Need::Libclang => libclang_path()
                .map(shown)
                .ok_or_else(|| "no /usr/lib/llvm-19/lib/libclang.so*".into()),
            Need::LibbpfBuild => {
                let pc = prog("pkg-config")?;
                let ok = Command::new(&pc)
                    .args(["--exists", "libelf", "zlib"])
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    Ok("pkg-config finds libelf and zlib".into())
                } else {
                    Err("`pkg-config --exists libelf zlib` fails".into())
                }
            }
            Need::Apt => {
                prog("apt-cache")?;
                prog("apt-get").map(shown)
            }
            Need::DpkgDeb => prog("dpkg-deb").map(shown),
            Need::Keyring => {
                if Path::new(DEBIAN_KEYRING).is_file() {
                    Ok(DEBIAN_KEYRING.into())
                } else {
                    Err(format!("no {DEBIAN_KEYRING}"))
                }
            }
            Need::Zstd => prog("zstd").map(shown),
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Need::Qemu => "qemu",
            Need::Busybox => "busybox",
            Need::Bpftool => "bpftool",
            Need::Clang => "clang",
            Need::Libclang => "libclang",
            Need::LibbpfBuild => "libbpf build deps",
            Need::Apt => "apt",
            Need::DpkgDeb => "dpkg-deb",
            Need::Keyring => "debian keyring",
            Need::Zstd => "zstd",
        };
        f.write_str(name)
    }
}

/// Find a program on PATH, also looking in the sbin directories (bpftool lives in
/// /usr/sbin, which a non-root PATH often lacks).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `clang-19`, else `clang`.
pub fn clang_path() -> Option<PathBuf> {
    find_program("clang-19").or_else(|| find_program("clang"))
}

/// `bpftool`.
pub fn bpftool_path() -> Option<PathBuf> {
    find_program("bpftool")
}

/// `qemu-system-x86_64`.
pub fn qemu_path() -> Option<PathBuf> {
    find_program("qemu-system-x86_64")
}

fn libclang_path() -> Option<PathBuf> {
    let dir = Path::new("/usr/lib/llvm-19/lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("libclang.so"))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// `Some(true)` for an ELF without a program interpreter (statically linked), `Some(false)`
/// for a dynamically linked ELF, `None` if it is not a readable 64-bit ELF.
fn is_static_elf(p: &Path) -> Option<bool> {
    let buf = std::fs::read(p).ok()?;
    elf_is_static(&buf)
}

fn elf_is_static(buf: &[u8]) -> Option<bool> {
    if !buf.starts_with(b"\x7fELF") || buf.get(4) != Some(&2) || buf.get(5) != Some(&1) {
        return None;
    }
    let rd16 = |o: usize| Some(u16::from_le_bytes(buf.get(o..o + 2)?.try_into().ok()?));
    let phoff = u64::from_le_bytes(buf.get(0x20..0x28)?.try_into().ok()?) as usize;
    let phentsize = rd16(0x36)? as usize;
    let phnum = rd16(0x38)? as usize;
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let ty = u32::from_le_bytes(buf.get(off..off + 4)?.try_into().ok()?);
        if ty == 3 {
            // PT_INTERP
            return Some(false);
        }
    }
    Some(true)
}

/// Whether missing packages can be installed here: root, on Debian, with apt-get.
fn can_install() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    root && Path::new("/etc/debian_version").exists() && find_program("apt-get").is_some()
}

fn install_line(pkgs: &[&str]) -> String {
    format!(
        "apt-get install -y --no-install-recommends {}",
        pkgs.join(" ")
    )
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Install Debian packages with the system apt (`apt-get update` runs once per process).
/// Fails with the command to run when this process cannot install (not root / not Debian).
pub fn install_packages(pkgs: &[&str], what: &str) -> Result<()> {
    if pkgs.is_empty() {
        return Ok(());
    }
    if !can_install() {
        bail!(
            "missing Debian packages for {what}: run as root `{}` (or `cargo xtask setup` as root)",
            install_line(pkgs)
        );
    }
    eprintln!("xtask: installing {} (needed for {what})", pkgs.join(" "));
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        let status = Command::new("apt-get")
            .args(["-q", "update"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .context("running apt-get update")?;
        if !status.success() {
            eprintln!(
                "xtask: warning: `apt-get update` failed ({status}); trying the install anyway"
            );
        }
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if !status.success() {
        bail!(
            "`{}` failed ({status}); fix the apt error above and run it again",
            install_line(pkgs)
        );
    }
    Ok(())
}

/// Make sure every need is met, installing missing packages when possible.
pub fn ensure(needs: &[Need]) -> Result<()> {
    let missing: Vec<(Need, String)> = needs
        .iter()
        .filter_map(|&n| n.probe().err().map(|why| (n, why)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = Vec::new();
    for (n, _) in &missing {
        for p in n.packages() {
            if !pkgs.contains(p) {
                pkgs.push(p);
            }
        }
    }
    let what = missing
        .iter()
        .map(|(n, _)| n.purpose())
        .collect::<Vec<_>>()
        .join(", ");
    if !can_install() {
        let why = missing
            .iter()
            .map(|(n, why)| format!("{n}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        bail!(
            "missing tools ({why}): run as root `{}` (or `cargo xtask setup` as root)",
            install_line(&pkgs)
        );
    }
    install_packages(&pkgs, &what)?;
    let still: Vec<String> = missing
        .iter()
        .filter_map(|(n, _)| n.probe().err().map(|why| format!("{n}: {why}")))
        .collect();
    if !still.is_empty() {
        bail!(
            "still missing after installing {}: {}",
            pkgs.join(" "),
            still.join("; ")
        );
    }
    Ok(())
}

/// Packages from `pkgs` that dpkg does not list as installed; `None` without dpkg-query.
fn uninstalled_packages(pkgs: &[&'static str]) -> Option<Vec<&'static str>> {
    find_program("dpkg-query")?;
    let mut missing = Vec::new();
    for &p in pkgs {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${db:Status-Status}", p])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if String::from_utf8_lossy(&out.stdout).trim() != "installed" {
            missing.push(p);
        }
    }
    Some(missing)
}

/// Print each need's state; return the missing needs and uninstalled packages.
fn report() -> (Vec<Need>, Vec<&'static str>) {
    let mut missing = Vec::new();
    for &n in ALL {
        match n.probe() {
            Ok(found) => println!("  ok       {:<18} {found}", n.to_string()),
            Err(why) => {
                println!(
                    "  MISSING  {:<18} {why} (for {})",
                    n.to_string(),
                    n.purpose()
                );
                missing.push(n);
            }
        }
    }
    let pkgs = uninstalled_packages(PACKAGES).unwrap_or_default();
    if !pkgs.is_empty() {
        println!("  packages not installed: {}", pkgs.join(" "));
    }
    (missing, pkgs)
}

pub fn run(args: SetupArgs) -> Result<()> {
    println!("xtask setup: checking the host tools");
    let (missing, pkgs) = report();
    if missing.is_empty() && pkgs.is_empty() {
        println!("xtask setup: everything is installed");
        return Ok(());
    }
    let mut all: Vec<&str> = pkgs;
    for n in &missing {
        for p in n.packages() {
            if !all.contains(p) {
                all.push(p);
            }
        }
    }
    if args.check {
        bail!(
            "missing: {}; run `cargo xtask setup` as root (or `{}`)",
            all.join(" "),
            install_line(&all)
        );
    }
    install_packages(&all, "the scx-userland toolchain and VM harness")?;
    println!("xtask setup: after installing");
    let (missing, _) = report();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|n| n.to_string()).collect();
        bail!("still missing after installing: {}", names.join(", "));
    }
    println!("xtask setup: everything is installed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_with_phdrs(types: &[u32]) -> Vec<u8> {
        let mut buf = vec![0u8; 0x40];
        buf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        buf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        buf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        buf[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for &t in types {
            let mut ph = [0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            buf.extend_from_slice(&ph);
        }
        buf
    }

    #[test]
    fn static_vs_dynamic_elf() {
        assert_eq!(elf_is_static(&elf_with_phdrs(&[1, 1, 4])), Some(true));
        assert_eq!(elf_is_static(&elf_with_phdrs(&[6, 3, 1])), Some(false));
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
    }

    #[test]
    fn every_need_package_is_in_the_setup_list() {
        for &n in ALL {
            for p in n.packages() {
                // `apt` itself cannot be installed by apt; everything else must be.
                assert!(
                    *p == "apt" || PACKAGES.contains(p),
                    "{n}: {p} not in PACKAGES"
                );
            }
        }
    }

    #[test]
    fn install_line_is_copy_pasteable() {
        assert_eq!(
            install_line(&["clang-19", "bpftool"]),
            "apt-get install -y --no-install-recommends clang-19 bpftool"
        );
    }
}
