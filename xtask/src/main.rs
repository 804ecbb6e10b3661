//! `cargo xtask …`: the project's developer commands. One module per subcommand.

mod codegen;
mod guest_once;
mod kernel;
mod package;
mod setup;
mod sim_compare;
mod test_all;
mod vm_bench;
mod vm_run;
mod vm_test;

mod vmlinux;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Developer tasks for scx-userland.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the Debian packages the project needs (clang, bpftool, qemu, …).
    Setup(setup::SetupArgs),
    /// Fetch and cache a sched_ext-capable kernel for the VM.
    Kernel(kernel::KernelArgs),
    /// Regenerate the checked-in artefacts (bindings, vendored BPF object, vmlinux.h).
    Codegen(codegen::CodegenArgs),
    /// Boot a sched_ext kernel in QEMU and run the VM test suite inside it.
    VmTest(vm_test::VmTestArgs),
    /// Boot a sched_ext kernel in QEMU and run scx-fifo there with a demo workload.
    VmRun(vm_run::VmRunArgs),
    /// Benchmark workloads under the default scheduler and the scx-userland schedulers, in one VM boot.
    VmBench(vm_bench::VmBenchArgs),
    /// Package the publishable crates, verified; `--outside-check`: build and run a crate from them.
    Package(package::PackageArgs),
    /// Run scenarios in the simulator and in a sched_ext VM, and compare how each orders the policies.
    SimCompare(sim_compare::SimCompareArgs),
    /// Run every test: host unit tests, codegen drift check, and the VM suite.
    Test(test_all::TestArgs),
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Where the VM harness keeps its downloads and images: `<root>/target/vm` (or
/// `SCX_VM_CACHE`).
pub fn vm_dir() -> PathBuf {
    match std::env::var_os(scx_userland_vm::cache::CACHE_ENV).filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("target").join("vm"),
    }
}

/// Point the scx-userland-vm library at [`vm_dir`] and set its verbosity.
pub fn vm_setup(verbose: bool) {
    scx_userland_vm::cache::set_dir(vm_dir());
    scx_userland_vm::cache::set_verbose(verbose);
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup(args) => setup::run(args),
        Command::Kernel(args) => kernel::run(args),
        Command::Codegen(args) => codegen::run(args),
        Command::VmTest(args) => vm_test::run(args),
        Command::VmRun(args) => vm_run::run(args),
        Command::VmBench(args) => vm_bench::run(args),
        Command::Package(args) => package::run(args),
        Command::SimCompare(args) => sim_compare::run(args),
        Command::Test(args) => test_all::run(args),
    }
}
