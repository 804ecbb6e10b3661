//! Run and test Linux `sched_ext` schedulers in a QEMU virtual machine that boots a
//! sched_ext kernel, from any cargo workspace, on a host whose own kernel lacks sched_ext.
//!
//! The `cargo-scx-vm` binary (`cargo scx-vm run|test`, and `cargo-scx-vm runner` for
//! `.cargo/config.toml`) is a thin command line over this library:
//!
//! - [`kernel`]: fetch Debian's sched_ext kernels through a private apt state (or take your
//!   own bzImage) and cache them;
//! - [`guest`]: the guest's static `/init` (built once from this crate's own sources), which
//!   runs a [`guest::plan`] of programs with timeouts, and doubles as `/init run` (start a
//!   scheduler, wait for `enabled`, run a workload, SIGINT, report) and `/init demo`;
//! - [`image`]: the initramfs (a newc cpio) with `/init`, busybox and your programs and their
//!   shared libraries;
//! - [`qemu`]: boot QEMU (TCG `thread=single`, or KVM when a probe says it works), stream and
//!   judge the serial console (oops, panic, warning, lockup, sched_ext stall);
//! - [`suite`] and [`session`]: the commands as functions; [`cargo`]: which program to build
//!   and where its executable is.
//!
//! Everything is cached under [`cache::dir`] (`<target dir>/vm` of the workspace, or
//! `SCX_VM_CACHE`). The library prints progress lines and the guest's output on stdout; it
//! never installs signal handlers by itself (call [`qemu::install_interrupt_handler`]) and
//! never installs packages (missing tools are reported with the `apt-get install` line).
#![deny(missing_docs)]

pub mod cache;
pub mod cargo;
mod error;
pub mod guest;
pub mod image;
pub mod kernel;
pub mod qemu;
pub mod session;
pub mod suite;
pub mod tools;
pub mod vmlinux;

pub use error::{Error, Result};
