//! `cargo xtask test`: every test the project has, in one command.
//!
//! 1. installs what is missing (`cargo xtask setup`),
//! 2. checks the generated files are current (`cargo xtask codegen --check`),
//! 3. runs the host tests (`cargo test --workspace`), and the topology tests of
//!    `scx-userland` with its optional `scx_utils` feature (whose build needs clang),
//! 4. packages the publishable crates and builds and runs a scheduler crate outside the
//!    workspace from them, with no clang (`cargo xtask package --outside-check`),
//! 5. runs the VM suite on the sched_ext kernels (`cargo xtask vm-test --kernels all`),
//! 6. compares the simulator with the VM on kernel 7.3 (`cargo xtask sim-compare`); it fails
//!    only when a run fails, never on a disagreement, which it prints.

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::{codegen, package, setup, vm_test, workspace_root};

/// `cargo xtask test` arguments.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Kernels for the VM suite (as `vm-test --kernels`).
    #[arg(long, default_value = "all")]
    kernels: String,
    /// Use cached kernels only (as `vm-test --offline`).
    #[arg(long)]
    offline: bool,
}

pub fn run(args: TestArgs) -> Result<()> {
    setup::ensure(setup::ALL)?;

    println!("xtask test: checking generated files");
    codegen::run(codegen::CodegenArgs::parse_from(["codegen", "--check"]))?;

    println!("xtask test: cargo test --workspace");
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(["test", "--workspace"])
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("cargo test --workspace failed");
    }

    println!("xtask test: cargo test -p scx-userland --features scx_utils --lib topology");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace_root()).args([
        "test",
        "-p",
        "scx-userland",
        "--features",
        "scx_utils",
        "--lib",
        "topology",
    ]);
    // scx_utils' build script runs `clang` (or $BPF_CLANG); Debian names it clang-19.
    if std::env::var_os("BPF_CLANG").is_none() {
        if let Some(clang) = setup::clang_path() {
            cmd.env("BPF_CLANG", clang);
        }
    }
    let status = cmd
        .status()
        .context("running cargo test -p scx-userland --features scx_utils")?;
    if !status.success() {
        bail!("cargo test -p scx-userland --features scx_utils failed");
    }

    println!(
        "xtask test: packages and the outside-crate check (cargo output: target/xtask-package.log)"
    );
    let mut package_args = vec!["package", "--outside-check"];
    if args.offline {
        package_args.push("--offline");
    }
    package::run(package::PackageArgs::parse_from(package_args))?;

    println!("xtask test: VM suite on kernels {}", args.kernels);
    let mut vm_args = vec!["vm-test", "--kernels", &args.kernels];
    if args.offline {
        vm_args.push("--offline");
    }
    vm_test::run(vm_test::VmTestArgs::parse_from(vm_args))?;

    println!("xtask test: simulator vs VM (cargo xtask sim-compare, kernel 7.3)");
    let mut cmp_args = vec!["sim-compare"];
    if args.offline {
        cmp_args.push("--offline");
    }
    crate::sim_compare::run(crate::sim_compare::SimCompareArgs::parse_from(cmp_args))
}
