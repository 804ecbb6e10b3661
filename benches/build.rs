//! Build script: compile `bpf/channel.bpf.c` (the BPF ends of the benchmarked channel) with
//! clang into `OUT_DIR/channel.bpf.o`.

#[path = "../scx-userland-bpf/build_support/clang.rs"]
mod clang;

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src = manifest.join("bpf/channel.bpf.c");
    let intf_dir = manifest.join("../scx-userland-sys/include");
    let vmlinux_dir = manifest.join("../scx-userland-bpf/src/bpf");
    for path in [
        src.clone(),
        intf_dir.join("intf.h"),
        vmlinux_dir.join("vmlinux.h"),
        vmlinux_dir.join("dispatch_sample.bpf.h"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../scx-userland-bpf/build_support/clang.rs");
    println!("cargo:rerun-if-env-changed=CLANG");

    let obj = out.join("channel.bpf.o");
    // intf.h from scx-userland-sys first: the layouts the benchmark's Rust side is built with
    // (scx-userland-bpf/src/bpf holds a copy of it, kept identical by `cargo xtask codegen`).
    clang::compile_bpf(&src, &obj, &[intf_dir, vmlinux_dir], &manifest);
    println!("cargo:rustc-env=SCX_BENCH_BPF_OBJECT={}", obj.display());
}
