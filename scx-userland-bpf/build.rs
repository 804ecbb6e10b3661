//! Build script: provide the BPF object and its libbpf-cargo skeleton.
//!
//! By default the vendored object (`vendored/userland.bpf.o`) is used, so users need no
//! clang. With the `build-bpf` feature or `SCX_USERLAND_BPF_BUILD=1` the object is compiled
//! from `src/bpf/main.bpf.c` with clang instead. Either way the skeleton is generated into
//! `OUT_DIR`, and the hash of the BPF sources is exported so a test can tell whether the
//! vendored object is stale.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "build_support/clang.rs"]
mod clang;
#[path = "build_support/sources.rs"]
mod sources;

use sources::{hash_sources, SOURCES};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    for src in SOURCES {
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-changed=build_support/sources.rs");
    println!("cargo:rerun-if-changed=build_support/clang.rs");
    println!("cargo:rerun-if-changed=vendored/userland.bpf.o");
    println!("cargo:rerun-if-changed=vendored/userland.bpf.o.sha256");
    println!("cargo:rerun-if-env-changed=SCX_USERLAND_BPF_BUILD");
    println!("cargo:rerun-if-env-changed=CLANG");

    let source_hash = hash_sources(&manifest).expect("reading the BPF sources");
    println!("cargo:rustc-env=SCX_USERLAND_BPF_SOURCE_HASH={source_hash}");

    let build = env::var_os("CARGO_FEATURE_BUILD_BPF").is_some()
        || env::var("SCX_USERLAND_BPF_BUILD").is_ok_and(|v| v == "1");
    let obj = if build {
        let obj = out.join("userland.bpf.o");
        compile(&manifest, &obj);
        fs::write(
            out.join("userland.bpf.o.sha256"),
            format!("{source_hash}\n"),
        )
        .expect("write the object's source hash");
        obj
    } else {
        manifest.join("vendored/userland.bpf.o")
    };
    println!("cargo:rustc-env=SCX_USERLAND_BPF_OBJECT={}", obj.display());
    println!("cargo:object={}", obj.display());

    libbpf_cargo::SkeletonBuilder::new()
        .obj(&obj)
        .generate(out.join("skel.rs"))
        .unwrap_or_else(|e| panic!("generating the skeleton from {}: {e:#}", obj.display()));
}

fn compile(manifest: &Path, obj: &Path) {
    let includes = [
        manifest.join("src/bpf"),
        manifest.join("../scx-userland-sys/include"),
    ];
    clang::compile_bpf(
        &manifest.join("src/bpf/main.bpf.c"),
        obj,
        &includes,
        manifest,
    );

    // DWARF is not needed at run time (BTF is kept): strip it when llvm-strip is at hand.
    for strip in ["llvm-strip-19", "llvm-strip"] {
        if Command::new(strip)
            .arg("-g")
            .arg(obj)
            .status()
            .is_ok_and(|s| s.success())
        {
            break;
        }
    }
}
