//! Build script: provide the BPF object (and, with `build-bpf`, its skeleton).
//!
//! By default the vendored object (`vendored/userland.bpf.o`) is used with the checked-in
//! skeleton (`src/skel.rs`): no clang, no libbpf-cargo. With the `build-bpf` feature the
//! object is compiled from `src/bpf/main.bpf.c` with clang into `OUT_DIR` and its skeleton is
//! generated there too. Either way the hash of the BPF sources is exported so a test can tell
//! whether the vendored object is stale.

use std::env;
use std::path::PathBuf;

#[cfg(feature = "build-bpf")]
#[path = "build_support/clang.rs"]
mod clang;
#[cfg(feature = "build-bpf")]
#[path = "build_support/skel.rs"]
mod skel;
#[path = "build_support/sources.rs"]
mod sources;

use sources::{hash_sources, SOURCES};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    for src in SOURCES {
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-changed=build_support/sources.rs");
    println!("cargo:rerun-if-changed=build_support/clang.rs");
    println!("cargo:rerun-if-changed=build_support/skel.rs");
    println!("cargo:rerun-if-changed=vendored/userland.bpf.o");
    println!("cargo:rerun-if-changed=vendored/userland.bpf.o.sha256");

    let source_hash = hash_sources(&manifest).expect("reading the BPF sources");
    println!("cargo:rustc-env=SCX_USERLAND_BPF_SOURCE_HASH={source_hash}");

    #[cfg(feature = "build-bpf")]
    let obj = build::object_and_skeleton(&manifest, &source_hash);
    // The default: the vendored object, whose skeleton is checked in. Never calls clang.
    #[cfg(not(feature = "build-bpf"))]
    let obj = manifest.join("vendored/userland.bpf.o");
    println!("cargo:rustc-env=SCX_USERLAND_BPF_OBJECT={}", obj.display());
    println!("cargo:object={}", obj.display());
}

#[cfg(feature = "build-bpf")]
mod build {
    use std::env;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use crate::{clang, skel};

    /// Compile main.bpf.c with clang into `OUT_DIR/userland.bpf.o` (its source hash beside it)
    /// and generate its skeleton into `OUT_DIR/skel.rs`; returns the object's path.
    pub fn object_and_skeleton(manifest: &Path, source_hash: &str) -> PathBuf {
        println!("cargo:rerun-if-env-changed=CLANG");
        let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
        let obj = out.join("userland.bpf.o");
        compile(manifest, &obj);
        fs::write(
            out.join("userland.bpf.o.sha256"),
            format!("{source_hash}\n"),
        )
        .expect("write the object's source hash");
        let skel = skel::generate_skeleton(&obj, &out.join("skel.tmp.rs"))
            .unwrap_or_else(|e| panic!("{e}"));
        fs::write(out.join("skel.rs"), skel).expect("write the skeleton");
        obj
    }

    fn compile(manifest: &Path, obj: &Path) {
        // src/bpf holds everything main.bpf.c includes but libbpf's headers (`DEP_BPF_INCLUDE`).
        let includes = [manifest.join("src/bpf")];
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
}
