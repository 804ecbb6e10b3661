// Compiling BPF C with clang, shared by this crate's build script and the benchmarks' (both
// include this file with `#[path]`), so every BPF object in the workspace is built the same way.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// clang from `$CLANG`, else `clang-19` or `clang` on PATH.
pub fn find_clang() -> Option<PathBuf> {
    if let Some(clang) = env::var_os("CLANG") {
        return Some(PathBuf::from(clang));
    }
    let path = env::var_os("PATH")?;
    ["clang-19", "clang"].iter().find_map(|name| {
        env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Compile `src` into the BPF object `obj` with the workspace's flags, searching `includes`
/// and libbpf's headers (`DEP_BPF_INCLUDE`, from a direct libbpf-sys dependency). Paths under
/// `prefix` are recorded relative to it in the debug info. Panics with what to do on failure.
pub fn compile_bpf(src: &Path, obj: &Path, includes: &[PathBuf], prefix: &Path) {
    let clang = find_clang().unwrap_or_else(|| {
        panic!("clang-19 is not on PATH: install it with `cargo xtask setup` (or set CLANG)")
    });
    let libbpf_include = env::var_os("DEP_BPF_INCLUDE")
        .map(PathBuf::from)
        .expect("libbpf-sys exports its headers (DEP_BPF_INCLUDE)");
    let mut cmd = Command::new(&clang);
    cmd.args([
        "-g",
        "-O2",
        "-target",
        "bpf",
        "-mcpu=v3",
        "-D__TARGET_ARCH_x86",
    ])
    // Kernels from 6.19 on are built with -fms-extensions; their BTF (and so vmlinux.h)
    // embeds anonymous members by tag.
    .args([
        "-fms-extensions",
        "-Wno-microsoft-anon-tag",
        "-Wall",
        "-Werror",
    ])
    .arg(format!("-fdebug-prefix-map={}=.", prefix.display()));
    for dir in includes.iter().chain([&libbpf_include]) {
        cmd.arg("-I").arg(dir);
    }
    let status = cmd
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(obj)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); install clang-19 with `cargo xtask setup` (or set CLANG)",
                clang.display()
            )
        });
    assert!(
        status.success(),
        "{} failed to compile {}",
        clang.display(),
        src.display()
    );
}
