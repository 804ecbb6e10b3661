//! `cargo xtask vm-run -- ARGS`. (OWNER: helper C)
use anyhow::Result;

/// `cargo xtask vm-run` arguments.
#[derive(clap::Args)]
pub struct VmRunArgs {}

pub fn run(_args: VmRunArgs) -> Result<()> {
    anyhow::bail!("not yet implemented")
}
