//! The host tools the VM needs, checked without installing anything.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The Debian archive keyring the kernel downloads are verified with.
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Where the busybox-static package installs busybox (the guest's shell and tools).
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// A host tool the VM commands use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// `qemu-system-x86_64`, to boot the VM.
    Qemu,
    /// A static busybox at [`HOST_BUSYBOX`], the guest's shell and tools.
    Busybox,
    /// `apt-get` and `apt-cache`, to fetch Debian kernels.
    Apt,
    /// `dpkg-deb`, to unpack kernel packages.
    DpkgDeb,
    /// The Debian archive keyring, to verify kernel downloads.
    Keyring,
    /// `ldd`, to find the shared libraries of guest programs.
    Ldd,
}

/// What booting a VM needs.
pub const BOOT: &[Tool] = &[Tool::Qemu, Tool::Busybox, Tool::Ldd];
/// What fetching a Debian kernel needs.
pub const FETCH: &[Tool] = &[Tool::Apt, Tool::DpkgDeb, Tool::Keyring];

impl Tool {
    /// The Debian package that provides it.
    pub fn package(self) -> &'static str {
        match self {
            Tool::Qemu => "qemu-system-x86",
            Tool::Busybox => "busybox-static",
            Tool::Apt => "apt",
            Tool::DpkgDeb => "dpkg",
            Tool::Keyring => "debian-archive-keyring",
            Tool::Ldd => "libc-bin",
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Qemu => "qemu-system-x86_64",
            Tool::Busybox => "a static busybox (/bin/busybox)",
            Tool::Apt => "apt-get",
            Tool::DpkgDeb => "dpkg-deb",
            Tool::Keyring => "the Debian archive keyring",
            Tool::Ldd => "ldd",
        }
    }

    /// Whether this host has it.
    pub fn present(self) -> bool {
        match self {
            Tool::Qemu => find_program("qemu-system-x86_64").is_some(),
            Tool::Busybox => is_static_busybox(Path::new(HOST_BUSYBOX)),
            Tool::Apt => find_program("apt-get").is_some() && find_program("apt-cache").is_some(),
            Tool::DpkgDeb => find_program("dpkg-deb").is_some(),
            Tool::Keyring => Path::new(DEBIAN_KEYRING).is_file(),
            Tool::Ldd => find_program("ldd").is_some(),
        }
    }
}

/// A static busybox: an executable that `ldd` does not call dynamic. (When `ldd` itself is
/// missing, any executable busybox counts.)
fn is_static_busybox(p: &Path) -> bool {
    if !is_executable(p) {
        return false;
    }
    match std::process::Command::new("ldd").arg(p).output() {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout) + String::from_utf8_lossy(&o.stderr);
            text.contains("not a dynamic executable") || text.contains("statically linked")
        }
        Err(_) => true,
    }
}

/// Find a program on PATH (also in the sbin directories, which a non-root PATH often lacks).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// A regular file with an execute bit.
pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The `apt-get install …` line for these tools.
pub fn install_line(tools: &[Tool]) -> String {
    let mut pkgs: Vec<&str> = Vec::new();
    for t in tools {
        if !pkgs.contains(&t.package()) {
            pkgs.push(t.package());
        }
    }
    format!("apt-get install {}", pkgs.join(" "))
}

/// Fail with [`Error::MissingTools`] (naming the exact `apt-get install` line) unless every
/// tool is present. Installs nothing.
pub fn require(tools: &[Tool]) -> Result<()> {
    let missing: Vec<Tool> = tools.iter().copied().filter(|t| !t.present()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::MissingTools {
        missing: missing
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", "),
        install: install_line(&missing),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_lines_name_each_package_once() {
        assert_eq!(
            install_line(&[Tool::Qemu, Tool::Busybox, Tool::Apt, Tool::Qemu]),
            "apt-get install qemu-system-x86 busybox-static apt"
        );
        let e = Error::MissingTools {
            missing: "qemu-system-x86_64".into(),
            install: install_line(&[Tool::Qemu]),
        };
        assert_eq!(
            e.to_string(),
            "qemu-system-x86_64 missing on this host; install with: apt-get install qemu-system-x86"
        );
    }

    #[test]
    fn finds_sh() {
        assert!(find_program("sh").is_some());
        assert!(find_program("surely-no-such-program-xyz").is_none());
        assert!(!is_executable(Path::new("/etc/passwd")));
        assert!(Tool::Ldd.present());
        assert!(require(&[Tool::Ldd]).is_ok());
    }
}
