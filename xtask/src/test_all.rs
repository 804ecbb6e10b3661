//! `cargo xtask test`: every test the project has. (OWNER: lead)
use anyhow::Result;

/// `cargo xtask test` arguments.
#[derive(clap::Args)]
pub struct TestArgs {}

pub fn run(_args: TestArgs) -> Result<()> {
    anyhow::bail!("not yet implemented")
}
