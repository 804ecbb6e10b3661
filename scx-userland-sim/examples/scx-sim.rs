//! `scx-sim`: run a scenario file on the simulator with a built-in policy and print a table.
//!
//! ```sh
//! cargo run --release -p scx-userland-sim --example scx-sim -- \
//!     scx-userland-sim/scenarios/mixed-100.json --policy fifo [--direct-idle] [--json] [--out FILE]
//! ```
//!
//! Policies: `fifo` (scx-fifo's), `vruntime` (the vruntime example's), `seed` (the classic
//! `scx_rustland_core` README's FIFO). The same policy code runs on the kernel.

#[path = "../../scx-userland/examples/vruntime/policy.rs"]
mod vruntime;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use scx_userland_sim::{load_scenario, SeedFifo, SimError, SimResult, Simulator};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PolicyName {
    Fifo,
    Vruntime,
    Seed,
}

/// Run a scenario on the sched_ext simulator.
#[derive(Parser, Debug)]
struct Args {
    /// Scenario file (JSON).
    scenario: PathBuf,
    /// The policy to run.
    #[arg(long, value_enum, default_value = "fifo")]
    policy: PolicyName,
    /// Override the scenario's `sched.direct_idle` (the builder option).
    #[arg(long)]
    direct_idle: Option<bool>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the scenario's duration (ms).
    #[arg(long)]
    duration_ms: Option<u64>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the result as JSON to FILE (the policy's own output stays on stdout).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn run(args: &Args) -> Result<SimResult, SimError> {
    let mut scenario = load_scenario(&args.scenario)?;
    if let Some(d) = args.direct_idle {
        scenario.sched.direct_idle = d;
    }
    if let Some(s) = args.seed {
        scenario.seed = s;
    }
    if let Some(d) = args.duration_ms {
        scenario.duration_ms = d;
    }
    let sim = Simulator::new(&scenario)?;
    match args.policy {
        PolicyName::Fifo => sim.run(&mut scx_fifo::Fifo::new()),
        PolicyName::Vruntime => sim.run(&mut vruntime::Vruntime::new()),
        PolicyName::Seed => sim.run(&mut SeedFifo),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let t0 = Instant::now();
    match run(&args) {
        Ok(result) => {
            if let Some(out) = &args.out {
                if let Err(e) = std::fs::write(out, result.to_json()) {
                    eprintln!("scx-sim: cannot write {}: {e}", out.display());
                    return ExitCode::FAILURE;
                }
            }
            if args.json {
                println!("{}", result.to_json());
            } else {
                println!("{result}");
                println!(
                    "host time {:.3} s, {} events",
                    t0.elapsed().as_secs_f64(),
                    result.events
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("scx-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
