//! Build script: compile `bpf/channel.bpf.c` (the BPF ends of the benchmarked channel) with
//! clang into `OUT_DIR/channel.bpf.o`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src = manifest.join("bpf/channel.bpf.c");
    let intf_dir = manifest.join("../crates/scx-userland-sys/include");
    let vmlinux_dir = manifest.join("../crates/scx-userland-bpf/src/bpf");
    for path in [
        src.clone(),
        intf_dir.join("intf.h"),
        vmlinux_dir.join("vmlinux.h"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = env::var_os("CLANG")
        .map(PathBuf::from)
        .or_else(find_clang)
        .unwrap_or_else(|| {
            panic!(
                "clang-19 is not on PATH: the benchmarks compile their BPF program with it. \
                 Install it with `cargo xtask setup` (or point CLANG at a clang)."
            )
        });
    let libbpf_include = env::var_os("DEP_BPF_INCLUDE")
        .map(PathBuf::from)
        .expect("libbpf-sys exports its headers (DEP_BPF_INCLUDE)");
    let obj = out.join("channel.bpf.o");

    let status = Command::new(&clang)
        .args([
            "-g",
            "-O2",
            "-target",
            "bpf",
            "-mcpu=v3",
            "-D__TARGET_ARCH_x86",
        ])
        // vmlinux.h of kernels built with -fms-extensions embeds anonymous members by tag.
        .args([
            "-fms-extensions",
            "-Wno-microsoft-anon-tag",
            "-Wall",
            "-Werror",
        ])
        .arg(format!("-fdebug-prefix-map={}=.", manifest.display()))
        .arg("-I")
        .arg(&vmlinux_dir)
        .arg("-I")
        .arg(&intf_dir)
        .arg("-I")
        .arg(&libbpf_include)
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj)
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
    println!("cargo:rustc-env=SCX_BENCH_BPF_OBJECT={}", obj.display());
}

fn find_clang() -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    ["clang-19", "clang"].iter().find_map(|name| {
        env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}
