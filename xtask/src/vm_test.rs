//! `cargo xtask vm-test`. (OWNER: helper C)
use anyhow::Result;

/// `cargo xtask vm-test` arguments.
#[derive(clap::Args)]
pub struct VmTestArgs {}

pub fn run(_args: VmTestArgs) -> Result<()> {
    anyhow::bail!("not yet implemented")
}
