// The BPF sources and their hash, shared by this crate's build script and `cargo xtask codegen`
// (both include this file with `#[path]`), so the two can never disagree on what "current" means.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Every file the BPF object is built from, relative to the scx-userland-bpf crate.
pub const SOURCES: &[&str] = &[
    "src/bpf/main.bpf.c",
    "src/bpf/dispatch_sample.bpf.h",
    "src/bpf/vmlinux.h",
    // A copy of scx-userland-sys/include/intf.h, so this crate builds from its package alone;
    // `cargo xtask codegen` keeps it identical to the original.
    "src/bpf/intf.h",
    // The compiler flags are part of what the object is built from.
    "build_support/clang.rs",
];

/// sha256 (hex) over the sources' names, lengths and contents, in `SOURCES` order.
pub fn hash_sources(crate_dir: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    for src in SOURCES {
        let bytes = std::fs::read(crate_dir.join(src))?;
        hasher.update(src.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
