//! `cargo xtask setup` and the tool checks every other command uses. (OWNER: helper A)
use anyhow::Result;

/// `cargo xtask setup` arguments.
#[derive(clap::Args)]
pub struct SetupArgs {}

pub fn run(_args: SetupArgs) -> Result<()> {
    anyhow::bail!("not yet implemented")
}
