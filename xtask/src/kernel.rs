//! `cargo xtask kernel …`: fetch, verify and cache sched_ext-capable kernels. (OWNER: helper A)
use std::path::PathBuf;

use anyhow::Result;

/// `cargo xtask kernel` arguments.
#[derive(clap::Args)]
pub struct KernelArgs {}

/// Which kernel(s) a VM command boots. Flattened into `vm-test` and `vm-run`.
#[derive(clap::Args, Clone, Debug)]
pub struct KernelSelect {}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// Kernel release, e.g. `7.3.4+deb13-amd64`.
    pub version: String,
    /// The bzImage.
    pub bzimage: PathBuf,
    /// Its config, when known.
    pub config: Option<PathBuf>,
    /// A modules directory to include in the guest, when given.
    pub modules: Option<PathBuf>,
}

/// Resolve a selection to kernels (fetching/caching as needed).
pub fn select(_sel: &KernelSelect) -> Result<Vec<Kernel>> {
    anyhow::bail!("not yet implemented")
}

pub fn run(_args: KernelArgs) -> Result<()> {
    anyhow::bail!("not yet implemented")
}
