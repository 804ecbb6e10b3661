//! `cargo xtask kernel …`: fetch, list and dump the sched_ext kernels. The fetching and the
//! cache are the scx-userland-vm library's ([`scx_userland_vm::kernel`]).

use std::fs;
use std::path::PathBuf;

use anyhow::Result;

pub use scx_userland_vm::kernel::fetch;
use scx_userland_vm::kernel::{human_size, list, parse_suites, user_kernel};

/// `cargo xtask kernel` arguments.
#[derive(clap::Args)]
pub struct KernelArgs {
    #[command(subcommand)]
    command: KernelCommand,
}

#[derive(clap::Subcommand)]
enum KernelCommand {
    /// Download (or reuse the cached) kernel of a suite and print its paths.
    Fetch {
        /// Suite(s): `7.3` (= trixie-backports), `7.2` (= sid), a suite name, `all`, or a
        /// comma-separated list.
        #[arg(long, default_value = "7.3")]
        suite: String,
        /// Use the newest cached kernel; do not ask apt.
        #[arg(long)]
        offline: bool,
    },
    /// List the cached kernels.
    List,
    /// Write `vmlinux.h` (bpftool's C dump of the kernel's BTF).
    VmlinuxH {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// Suite of the kernel to use (`7.3`, `7.2` or a suite name).
        #[arg(long, default_value = "7.3", conflicts_with = "kernel")]
        suite: String,
        /// Use this bzImage (or ELF vmlinux) instead of a Debian kernel.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Use the newest cached kernel; do not ask apt.
        #[arg(long)]
        offline: bool,
    },
}

pub fn run(args: KernelArgs) -> Result<()> {
    crate::vm_setup(false);
    match args.command {
        KernelCommand::Fetch { suite, offline } => {
            crate::setup::ensure(&[
                crate::setup::Need::Apt,
                crate::setup::Need::Keyring,
                crate::setup::Need::DpkgDeb,
            ])?;
            for s in parse_suites(&suite)? {
                let k = fetch(&s, offline)?;
                println!("{s}: {}", k.version);
                println!("  bzimage: {}", k.bzimage.display());
                if let Some(c) = &k.config {
                    println!("  config:  {}", c.display());
                }
            }
            Ok(())
        }
        KernelCommand::List => Ok(list()?),
        KernelCommand::VmlinuxH {
            out,
            suite,
            kernel,
            offline,
        } => {
            let k = match kernel {
                Some(path) => user_kernel(&path, None)?,
                None => fetch(&suite, offline)?,
            };
            eprintln!(
                "kernel: dumping the BTF of {} into {}",
                k.version,
                out.display()
            );
            crate::vmlinux::write_vmlinux_h(&k.bzimage, &out)?;
            let size = fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            println!(
                "{} ({}, from {})",
                out.display(),
                human_size(size),
                k.version
            );
            Ok(())
        }
    }
}
