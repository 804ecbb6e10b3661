//! `cargo xtask codegen`: regenerate checked-in artefacts. (OWNER: lead)
use anyhow::Result;

/// `cargo xtask codegen` arguments.
#[derive(clap::Args)]
pub struct CodegenArgs {}

pub fn run(_args: CodegenArgs) -> Result<()> {
    anyhow::bail!("not yet implemented")
}
