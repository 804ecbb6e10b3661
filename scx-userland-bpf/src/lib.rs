//! The scx-userland BPF component.
//!
//! A generic sched_ext scheduler, written in BPF C (`src/bpf/main.bpf.c`), that hands every
//! task wanting a CPU to user space and carries user space's decisions back into the kernel.
//! This crate ships it ready to load:
//!
//! - [`OBJECT`]: the compiled BPF object (the vendored one, or one built with clang when the
//!   `build-bpf` feature is enabled),
//! - [`skel`]: its libbpf-cargo skeleton (`UserlandSkelBuilder`), used by the safe
//!   `scx-userland` crate; it loads [`OBJECT`],
//! - [`SOURCE_HASH`] / [`OBJECT_SOURCE_HASH`]: whether the object matches the sources.
//!
//! The record layouts it exchanges with user space are in `scx-userland-sys`.
#![deny(missing_docs)]

/// The BPF object's bytes.
pub const OBJECT: &[u8] = include_bytes!(env!("SCX_USERLAND_BPF_OBJECT"));

/// sha256 of the BPF sources as they are in this tree.
pub const SOURCE_HASH: &str = env!("SCX_USERLAND_BPF_SOURCE_HASH");

/// sha256 of the sources the vendored object was built from.
pub const OBJECT_SOURCE_HASH: &str = include_str!("../vendored/userland.bpf.o.sha256");

/// The libbpf-cargo skeleton of [`OBJECT`] (checked in, generated from the vendored object).
#[cfg(not(feature = "build-bpf"))]
#[allow(
    missing_docs,
    clippy::all,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals
)]
#[rustfmt::skip]
pub mod skel;

/// The libbpf-cargo skeleton of [`OBJECT`] (generated from the object built with clang).
#[cfg(feature = "build-bpf")]
#[allow(
    missing_docs,
    clippy::all,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals
)]
pub mod skel {
    include!(concat!(env!("OUT_DIR"), "/skel.rs"));
}

#[cfg(test)]
mod tests {
    #[test]
    fn vendored_object_matches_sources() {
        assert_eq!(
            super::OBJECT_SOURCE_HASH.trim(),
            super::SOURCE_HASH,
            "the BPF sources changed but vendored/userland.bpf.o was not rebuilt: \
             run `cargo xtask codegen`"
        );
    }

    #[test]
    fn object_is_bpf_elf() {
        let obj = super::OBJECT;
        assert_eq!(&obj[..4], b"\x7fELF");
        // e_machine at offset 18: EM_BPF = 247.
        assert_eq!(u16::from_le_bytes([obj[18], obj[19]]), 247);
    }
}
