//! Turn a kernel's BTF into `vmlinux.h` (`cargo xtask codegen --vmlinux`, `cargo xtask
//! kernel vmlinux-h`). The bzImage is read by `scx_userland_vm::vmlinux`.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Generate `vmlinux.h` from a kernel's BTF with `bpftool btf dump … format c`, written to
/// `out` atomically.
pub fn write_vmlinux_h(bzimage: &Path, out: &Path) -> Result<()> {
    crate::setup::ensure(&[crate::setup::Need::Bpftool])?;
    let bpftool = crate::setup::bpftool_path().context("bpftool not found after setup")?;

    let elf = scx_userland_vm::vmlinux::extract_vmlinux(bzimage)?;
    let tmp_dir = crate::vm_dir().join("tmp");
    fs::create_dir_all(&tmp_dir).with_context(|| format!("creating {}", tmp_dir.display()))?;
    let elf_path = TempFile(tmp_dir.join(format!("vmlinux-{}", std::process::id())));
    fs::write(&elf_path.0, &elf).with_context(|| format!("writing {}", elf_path.0.display()))?;
    drop(elf);

    let output = Command::new(&bpftool)
        .args(["btf", "dump", "file"])
        .arg(&elf_path.0)
        .args(["format", "c"])
        .output()
        .with_context(|| format!("running {}", bpftool.display()))?;
    if !output.status.success() {
        bail!(
            "`bpftool btf dump file … format c` failed on the vmlinux of {}: {}",
            bzimage.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let needle: &[u8] = b"struct sched_ext_ops {";
    if !output.stdout.windows(needle.len()).any(|w| w == needle) {
        bail!(
            "the BTF of {} has no `struct sched_ext_ops`: this kernel was built without \
             CONFIG_SCHED_CLASS_EXT",
            bzimage.display()
        );
    }

    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut tmp_name = out.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp_out = TempFile(PathBuf::from(tmp_name));
    fs::write(&tmp_out.0, &output.stdout)
        .with_context(|| format!("writing {}", tmp_out.0.display()))?;
    fs::rename(&tmp_out.0, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
