//! `cargo xtask sim-compare`: run scenario files in the simulator and for real in a sched_ext
//! VM, under scx-fifo and the vruntime example, and print how the two agree.
//!
//! The simulator side is the `scx-sim` example of scx-userland-sim (run on the host, `--out`
//! JSON); the VM side is the `sim-compare-guest` example (guest driver: it starts each
//! scheduler, runs `scx-sim-real` on the scenario, stops the scheduler with SIGINT) in an
//! image built with vm-test's machinery, its `simcmp: {json}` console lines parsed from the
//! console log. The comparison is between ratios (vruntime / scx-fifo) measured within each
//! side, never between absolute figures: the VM runs under TCG.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use scx_userland_vm::kernel::KernelSelect;
use scx_userland_vm::qemu::{self, VmOptions};
use scx_userland_vm::suite::GuestBuild;

use crate::guest_once;
use crate::vm_test::{self, GuestProgram, ProgramKind};

/// The scenarios compared by default (under `scx-userland-sim/scenarios/`).
const SCENARIOS: &[&str] = &[
    "pingpong.json",
    "pingpong-hogs.json",
    "messages.json",
    "nice-hogs.json",
];
/// The two schedulers: (name in the table, simulator policy, guest program and arguments).
const SCHEDULERS: [(&str, &str, &str); 2] = [
    ("scx-fifo", "fifo", "/bin/scx-fifo --stats-interval 0"),
    ("vruntime", "vruntime", "/bin/vruntime"),
];
const PLAN_NAME: &str = "sim-compare";
/// A ratio within this factor of 1 counts as a tie when orders are compared.
const TIE: f64 = 1.10;
/// Wake-up waits below this (us) count as this much: under TCG a context switch alone takes
/// tens of microseconds, so the VM cannot tell smaller waits apart.
const WAIT_FLOOR_US: f64 = 20.0;

const SIM: GuestProgram = GuestProgram {
    package: "scx-userland-sim",
    kind: ProgramKind::Example,
    name: "scx-sim",
};
/// The guest's own programs (the schedulers come from [`vm_test::GUEST_PROGRAMS`]).
const GUEST_PROGRAMS: &[GuestProgram] = &[
    GuestProgram {
        package: "scx-userland-sim",
        kind: ProgramKind::Example,
        name: "sim-compare-guest",
    },
    GuestProgram {
        package: "scx-userland-sim",
        kind: ProgramKind::Bin,
        name: "scx-sim-real",
    },
];

/// `cargo xtask sim-compare` arguments.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "sim-compare",
    about = "Run scenarios in the simulator and in a sched_ext VM under scx-fifo and vruntime, \
             and print whether the two order the policies the same way",
    after_long_help = "Runs each scenario file (default: scx-userland-sim/scenarios/\
        {pingpong,pingpong-hogs,messages,nice-hogs}.json, with `cpus` set to --cpus) in the simulator \
        with scx-fifo's policy and the vruntime example's, then boots ONE sched_ext kernel \
        (--kernels selects it; 7.3 by default) in QEMU where, for every round and scenario, \
        each scheduler in turn is started, scx-sim-real runs the scenario with real threads, \
        and the scheduler is stopped with SIGINT.\n\n\
        Prints, per scenario and metric (wake-up wait p50/p99 of each group that wakes up, \
        the work done (run bursts completed) of each group, or its CPU share when it \
        completes few bursts), the simulator's value under each policy, the VM's median over \
        the rounds, the ratio vruntime/scx-fifo on each side, whether the two sides order \
        the policies the same way (`ok`; `~` when one side cannot tell them apart, `NO` when \
        the orders are opposite; a ratio within 10% of 1 is a tie, `=`, and so is a VM figure \
        whose rounds under the two schedulers overlap; waits below 20 us count as 20 us), and \
        whether the simulator's ratio is within --factor of the VM's. Disagreements are listed; they do \
        not fail the command, which fails only when a run failed (a scheduler did not attach, \
        died or ignored SIGINT; scx-sim-real failed; the guest misbehaved). Results go to \
        target/sim-compare/latest.json, the console to target/sim-compare/console.log.\n\n\
        Examples:\n  cargo xtask sim-compare --offline\n  cargo xtask sim-compare --offline \
        --rounds 5 --scenario my-scenario.json"
)]
pub struct SimCompareArgs {
    #[command(flatten)]
    pub kernels: KernelSelect,

    #[command(flatten)]
    pub vm: VmOptions,

    /// Rounds in the VM (each runs every scenario under every scheduler); the table shows
    /// medians.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,

    /// A scenario file to compare (JSON, as the simulator reads it); may be given several
    /// times [default: the three under scx-userland-sim/scenarios/].
    #[arg(long = "scenario", value_name = "FILE")]
    pub scenarios: Vec<PathBuf>,

    /// A ratio is "within" when sim/VM and VM/sim are both at most this.
    #[arg(long, value_name = "X", default_value_t = 2.0)]
    pub factor: f64,

    /// Timeout in seconds for the guest's runs (the boot gets 180 s more).
    #[arg(long, value_name = "SECS", default_value_t = 1200, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

/// One metric of one group, read out of a `SimResult` (as JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    WakeP50,
    WakeP99,
    Bursts,
    CpuShare,
}

impl Metric {
    fn label(self) -> &'static str {
        match self {
            Metric::WakeP50 => "wake p50 us",
            Metric::WakeP99 => "wake p99 us",
            Metric::Bursts => "work (bursts)",
            Metric::CpuShare => "cpu share %",
        }
    }

    fn read(self, group: &Value) -> Option<f64> {
        match self {
            Metric::WakeP50 => Some(group["wake_wait"]["p50_ns"].as_f64()? / 1000.0),
            Metric::WakeP99 => Some(group["wake_wait"]["p99_ns"].as_f64()? / 1000.0),
            Metric::Bursts => group["bursts"].as_f64(),
            Metric::CpuShare => Some(group["cpu_share"].as_f64()? * 100.0),
        }
    }
}

fn groups(result: &Value) -> impl Iterator<Item = &Value> {
    result["groups"].as_array().into_iter().flatten()
}

fn group<'a>(result: &'a Value, name: &str) -> Option<&'a Value> {
    groups(result).find(|g| g["name"] == name)
}

/// The metrics compared for a scenario, chosen from the simulator's scx-fifo result: the
/// wake-up waits of groups that wake up, and the work of each group (bursts completed, or
/// the CPU share of a group that completes few, like a CPU hog).
fn metrics_of(sim_fifo: &Value) -> Vec<(String, Metric)> {
    let mut out = Vec::new();
    for g in groups(sim_fifo) {
        let name = g["name"].as_str().unwrap_or("?").to_string();
        if g["wakeups"].as_u64().unwrap_or(0) > 0 {
            out.push((name.clone(), Metric::WakeP50));
            out.push((name.clone(), Metric::WakeP99));
        }
        let work = if g["bursts"].as_u64().unwrap_or(0) >= 100 {
            Metric::Bursts
        } else {
            Metric::CpuShare
        };
        out.push((name, work));
    }
    out
}

/// The value ratios are taken of: a wait below [`WAIT_FLOOR_US`] counts as that much.
fn floored(metric: Metric, v: f64) -> f64 {
    match metric {
        Metric::WakeP50 | Metric::WakeP99 => v.max(WAIT_FLOOR_US),
        Metric::Bursts | Metric::CpuShare => v,
    }
}

/// vruntime / fifo. Two zeros are equal (ratio 1); a zero under scx-fifo alone is infinite.
fn ratio(fifo: f64, vruntime: f64) -> f64 {
    if fifo == 0.0 && vruntime == 0.0 {
        1.0
    } else if fifo == 0.0 {
        f64::INFINITY
    } else {
        vruntime / fifo
    }
}

/// `<` (vruntime lower), `>` (higher) or `=` (within [`TIE`]).
fn order(r: f64) -> char {
    if r > TIE {
        '>'
    } else if r < 1.0 / TIE {
        '<'
    } else {
        '='
    }
}

/// How far apart two ratios are (>= 1; infinite if one is 0 or infinite and the other not).
fn spread(a: f64, b: f64) -> f64 {
    if a == b {
        return 1.0;
    }
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if lo <= 0.0 || hi.is_infinite() {
        f64::INFINITY
    } else {
        hi / lo
    }
}

fn middle(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn num(v: f64) -> String {
    if v.is_infinite() {
        "inf".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// What the guest printed.
#[derive(Debug, Default)]
struct Guest {
    /// (round, scenario, scheduler) → result.
    samples: Vec<(u64, String, String, Value)>,
    errors: Vec<String>,
    done: bool,
    garbled: usize,
}

fn parse_console(text: &str) -> Guest {
    let mut g = Guest::default();
    for line in text.lines() {
        let Some(at) = line.find("simcmp: {") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(line[at + "simcmp: ".len()..].trim_end()) else {
            g.garbled += 1;
            continue;
        };
        let field = |k: &str| v[k].as_str().unwrap_or("-").to_string();
        match v["type"].as_str() {
            Some("sample") => g.samples.push((
                v["round"].as_u64().unwrap_or(0),
                field("scenario"),
                field("scheduler"),
                v["result"].clone(),
            )),
            Some("error") => g.errors.push(format!(
                "round {} {} under {}: {}",
                v["round"],
                field("scenario"),
                field("scheduler"),
                field("message")
            )),
            Some("done") => g.done = true,
            _ => g.garbled += 1,
        }
    }
    g
}

/// One row of the comparison.
#[derive(Debug)]
struct Row {
    scenario: String,
    group: String,
    metric: Metric,
    sim: [f64; 2],
    /// Medians over the rounds.
    vm: [f64; 2],
    /// Every round's value (scx-fifo, vruntime).
    vm_rounds: [Vec<f64>; 2],
}

/// How the orders of the two sides compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Agree {
    /// The same order (or both ties).
    Same,
    /// One side tells the policies apart, the other cannot.
    OneTie,
    /// Opposite orders.
    Opposite,
}

impl Row {
    fn sim_ratio(&self) -> f64 {
        ratio(
            floored(self.metric, self.sim[0]),
            floored(self.metric, self.sim[1]),
        )
    }
    fn vm_ratio(&self) -> f64 {
        ratio(
            floored(self.metric, self.vm[0]),
            floored(self.metric, self.vm[1]),
        )
    }
    /// The VM's rounds under the two schedulers overlap: it cannot order them.
    fn vm_overlaps(&self) -> bool {
        let lo = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let [f, v] = &self.vm_rounds;
        lo(f).max(lo(v)) <= hi(f).min(hi(v))
    }
    fn sim_order(&self) -> char {
        order(self.sim_ratio())
    }
    fn vm_order(&self) -> char {
        if self.vm_overlaps() {
            '='
        } else {
            order(self.vm_ratio())
        }
    }
    fn agree(&self) -> Agree {
        match (self.sim_order(), self.vm_order()) {
            (a, b) if a == b => Agree::Same,
            ('=', _) | (_, '=') => Agree::OneTie,
            _ => Agree::Opposite,
        }
    }
    fn within(&self, factor: f64) -> bool {
        spread(self.sim_ratio(), self.vm_ratio()) <= factor
    }
}

fn render(rows: &[Row], factor: f64) -> String {
    let head = [
        "scenario",
        "group",
        "metric",
        "sim fifo",
        "sim vrt",
        "VM fifo",
        "VM vrt",
        "sim v/f",
        "VM v/f",
        "order",
        &format!("<={factor}x"),
    ]
    .map(String::from);
    let mut lines: Vec<[String; 11]> = vec![head];
    for r in rows {
        let (rs, rv) = (r.sim_ratio(), r.vm_ratio());
        lines.push([
            r.scenario.clone(),
            r.group.clone(),
            r.metric.label().to_string(),
            num(r.sim[0]),
            num(r.sim[1]),
            num(r.vm[0]),
            num(r.vm[1]),
            num(rs),
            num(rv),
            format!(
                "{}{} {}",
                r.sim_order(),
                r.vm_order(),
                match r.agree() {
                    Agree::Same => "ok",
                    Agree::OneTie => "~",
                    Agree::Opposite => "NO",
                }
            ),
            if r.within(factor) { "yes" } else { "NO" }.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..11)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c < 3 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Run the simulator on `file` under `policy`; its result as JSON.
fn simulate(sim: &Path, file: &Path, policy: &str, out_dir: &Path) -> Result<Value> {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("scenario");
    let out = out_dir.join(format!("sim-{stem}-{policy}.json"));
    let run = Command::new(sim)
        .arg(file)
        .args(["--policy", policy, "--out"])
        .arg(&out)
        .output()
        .with_context(|| format!("cannot run {}", sim.display()))?;
    if !run.status.success() {
        bail!(
            "the simulator failed on {} with {policy}: {}",
            file.display(),
            String::from_utf8_lossy(&run.stderr).trim()
        );
    }
    let text =
        std::fs::read_to_string(&out).with_context(|| format!("cannot read {}", out.display()))?;
    Ok(serde_json::from_str(&text)?)
}

pub fn run(args: SimCompareArgs) -> Result<()> {
    if !(args.factor.is_finite() && args.factor >= 1.0) {
        bail!("--factor: {} is not a number >= 1", args.factor);
    }
    crate::vm_setup(args.vm.verbose);
    qemu::install_interrupt_handler()?;
    let root = crate::workspace_root();
    let files: Vec<PathBuf> = if args.scenarios.is_empty() {
        SCENARIOS
            .iter()
            .map(|s| root.join("scx-userland-sim").join("scenarios").join(s))
            .collect()
    } else {
        args.scenarios.clone()
    };
    let out_dir = root.join("target").join("sim-compare");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;

    // The scenarios, on the VM's CPU count, as both sides will run them.
    let mut scenarios: Vec<(String, PathBuf, String)> = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let mut v: Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", f.display()))?;
        v["cpus"] = json!(args.vm.cpus);
        let name = v["name"].as_str().unwrap_or("scenario").to_string();
        if scenarios.iter().any(|(n, _, _)| *n == name) {
            bail!("two scenarios are named {name:?}; names must differ");
        }
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("scenario");
        let eff = out_dir.join(format!("{stem}.json"));
        std::fs::write(&eff, serde_json::to_string_pretty(&v)?)?;
        scenarios.push((name, eff, v.to_string()));
    }

    vm_test::ensure_tools()?;
    let kernel = guest_once::one_kernel(&args.kernels, "sim-compare")?;
    println!("xtask: building the simulator and the guest programs …");
    let mut all = vec![SIM];
    all.extend_from_slice(GUEST_PROGRAMS);
    for (name, _, _) in SCHEDULERS {
        match vm_test::GUEST_PROGRAMS.iter().find(|p| p.name == name) {
            Some(p) => all.push(*p),
            None => bail!("no guest program {name} in vm_test::GUEST_PROGRAMS"),
        }
    }
    let mut built = vm_test::build_programs(&all)?;
    let sim = built.remove(0).1;

    // The simulator side (milliseconds each).
    let mut sim_results: BTreeMap<(String, usize), Value> = BTreeMap::new();
    for (name, file, _) in &scenarios {
        for (i, (_, policy, _)) in SCHEDULERS.iter().enumerate() {
            let r = simulate(&sim, file, policy, &out_dir)
                .with_context(|| format!("scenario {name} ({})", file.display()))?;
            sim_results.insert((name.clone(), i), r);
        }
    }

    // The VM side: one boot.
    let build = GuestBuild {
        init: scx_userland_vm::guest::build_init()?,
        test_exes: Vec::new(),
        programs: built,
    };
    let mut argv = vec![
        "/bin/sim-compare-guest".to_string(),
        "--rounds".into(),
        args.rounds.to_string(),
    ];
    for (name, _, cmd) in SCHEDULERS {
        argv.extend(["--scheduler".to_string(), format!("{name}={cmd}")]);
    }
    for (_, _, json) in &scenarios {
        argv.extend(["--scenario".to_string(), json.clone()]);
    }
    println!(
        "xtask: sim-compare: {} scenario(s) x scx-fifo, vruntime x {} round(s) in the VM",
        scenarios.len(),
        args.rounds
    );
    let mut vm = args.vm.clone();
    vm.keep_logs.get_or_insert_with(|| out_dir.clone());
    let run = guest_once::run(
        &kernel,
        &build,
        &vm,
        PLAN_NAME,
        argv,
        Duration::from_secs(args.timeout),
        "console",
    )?;
    let (report, log) = (&run.report, &run.log);
    let guest = parse_console(&run.console);
    let mut problems = run.problems.clone();
    if !guest.done {
        problems.push("sim-compare-guest did not finish (no `done` line)".to_string());
    }
    problems.extend(guest.errors.iter().map(|e| format!("run failed: {e}")));

    // Medians of the VM's rounds, and the rows.
    let mut rows = Vec::new();
    for (name, _, _) in &scenarios {
        let fifo_sim = &sim_results[&(name.clone(), 0)];
        for (g, metric) in metrics_of(fifo_sim) {
            let sim: Vec<f64> = (0..2)
                .map(|i| {
                    group(&sim_results[&(name.clone(), i)], &g)
                        .and_then(|x| metric.read(x))
                        .unwrap_or(f64::NAN)
                })
                .collect();
            let rounds: Vec<Vec<f64>> = SCHEDULERS
                .iter()
                .map(|(sched, _, _)| {
                    guest
                        .samples
                        .iter()
                        .filter(|(_, s, k, _)| s == name && k == sched)
                        .filter_map(|(_, _, _, r)| metric.read(group(r, &g)?))
                        .collect()
                })
                .collect();
            let (Some(vf), Some(vv)) = (middle(rounds[0].clone()), middle(rounds[1].clone()))
            else {
                problems.push(format!("no VM figures for {name} {g} {}", metric.label()));
                continue;
            };
            rows.push(Row {
                scenario: name.clone(),
                group: g,
                metric,
                sim: [sim[0], sim[1]],
                vm: [vf, vv],
                vm_rounds: [rounds[0].clone(), rounds[1].clone()],
            });
        }
    }

    let saved = json!({
        "kernel": kernel.version,
        "accel": report.accel.to_string(),
        "cpus": args.vm.cpus,
        "rounds": args.rounds,
        "factor": args.factor,
        "problems": problems,
        "rows": rows.iter().map(|r| json!({
            "scenario": r.scenario, "group": r.group, "metric": r.metric.label(),
            "sim": r.sim, "vm": r.vm, "vm_rounds": r.vm_rounds,
            "sim_ratio": r.sim_ratio(), "vm_ratio": r.vm_ratio(),
            "sim_order": r.sim_order().to_string(), "vm_order": r.vm_order().to_string(),
            "same_order": r.agree() == Agree::Same, "within": r.within(args.factor),
        })).collect::<Vec<_>>(),
        "vm_samples": guest.samples.iter().map(|(round, s, k, r)| json!({
            "round": round, "scenario": s, "scheduler": k, "result": r,
        })).collect::<Vec<_>>(),
    });
    let latest = out_dir.join("latest.json");
    std::fs::write(&latest, serde_json::to_string_pretty(&saved)? + "\n")
        .with_context(|| format!("cannot write {}", latest.display()))?;

    println!();
    println!(
        "sim-compare on {} ({} vCPUs, accel {}): simulator vs VM (median of {} round(s)); \
         v/f = vruntime / scx-fifo",
        kernel.version, args.vm.cpus, report.accel, args.rounds
    );
    print!("{}", render(&rows, args.factor));
    let count = |a: Agree| rows.iter().filter(|r| r.agree() == a).count();
    let within = rows.iter().filter(|r| r.within(args.factor)).count();
    println!(
        "order (sim, then VM): < vruntime lower, > higher, = a tie (ratio within {:.0}% of 1; \
         in the VM also when the rounds under the two overlap); waits below {WAIT_FLOOR_US} us \
         count as {WAIT_FLOOR_US} us.",
        (TIE - 1.0) * 100.0
    );
    println!(
        "{} metrics: same order on {}, one side a tie on {} (~), opposite on {} (NO); \
         ratios within {}x on {within}",
        rows.len(),
        count(Agree::Same),
        count(Agree::OneTie),
        count(Agree::Opposite),
        args.factor
    );
    for r in rows
        .iter()
        .filter(|r| r.agree() != Agree::Same || !r.within(args.factor))
    {
        println!(
            "disagreement: {} {} {}: sim ratio {} ({}) vs VM ratio {} ({}, rounds {:?} vs {:?}){}",
            r.scenario,
            r.group,
            r.metric.label(),
            num(r.sim_ratio()),
            r.sim_order(),
            num(r.vm_ratio()),
            r.vm_order(),
            r.vm_rounds[0].iter().map(|v| num(*v)).collect::<Vec<_>>(),
            r.vm_rounds[1].iter().map(|v| num(*v)).collect::<Vec<_>>(),
            match r.agree() {
                Agree::Opposite => ", opposite order",
                Agree::OneTie => ", one side a tie",
                Agree::Same => ", ratios too far apart",
            }
        );
    }
    println!("{}", vm_test::wall_time_line(&kernel.version, report));
    if guest.garbled > 0 {
        println!(
            "xtask: warning: {} garbled `simcmp:` console line(s) ignored",
            guest.garbled
        );
    }
    println!(
        "xtask: console log {}, results {}",
        log.display(),
        latest.display()
    );
    if problems.is_empty() {
        return Ok(());
    }
    for p in &problems {
        println!("sim-compare problem: {p}");
    }
    bail!("sim-compare failed: {}", problems.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn ratios_orders_and_spreads() {
        assert_eq!(ratio(0.0, 0.0), 1.0);
        assert!(ratio(0.0, 5.0).is_infinite());
        assert_eq!(ratio(2.0, 3.0), 1.5);
        assert_eq!((order(1.5), order(0.5), order(1.05)), ('>', '<', '='));
        assert_eq!(spread(1.0, 2.0), 2.0);
        assert_eq!(spread(2.0, 1.0), 2.0);
        assert!(spread(0.0, 1.0).is_infinite());
        assert_eq!(spread(f64::INFINITY, f64::INFINITY), 1.0);
        assert_eq!(middle(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(middle(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(middle(vec![]), None);
    }

    #[test]
    fn parses_guest_lines() {
        let text = "[ 1.0] noise\n\
            simcmp: {\"type\":\"sample\",\"round\":1,\"scenario\":\"pp\",\"scheduler\":\"scx-fifo\",\
            \"result\":{\"groups\":[{\"name\":\"g\",\"wakeups\":3,\"bursts\":500,\"cpu_share\":0.5,\
            \"wake_wait\":{\"p50_ns\":2000,\"p99_ns\":9000}}]}}\n\
            simcmp: {\"type\":\"sample\",\"round\":1,\"sce\n\
            simcmp: {\"type\":\"error\",\"round\":2,\"scenario\":\"pp\",\"scheduler\":\"vruntime\",\"message\":\"boom\"}\n\
            simcmp: {\"type\":\"done\",\"runs\":2,\"errors\":1}\n";
        let g = parse_console(text);
        assert_eq!(g.samples.len(), 1);
        assert_eq!(g.garbled, 1);
        assert!(g.done);
        assert_eq!(g.errors, ["round 2 pp under vruntime: boom"]);
        let r = &g.samples[0].3;
        let m = metrics_of(r);
        assert_eq!(
            m,
            [
                ("g".to_string(), Metric::WakeP50),
                ("g".to_string(), Metric::WakeP99),
                ("g".to_string(), Metric::Bursts)
            ]
        );
        let gr = group(r, "g").unwrap();
        assert_eq!(Metric::WakeP99.read(gr), Some(9.0));
        assert_eq!(Metric::CpuShare.read(gr), Some(50.0));
    }

    fn row(metric: Metric, sim: [f64; 2], fifo: &[f64], vrt: &[f64]) -> Row {
        Row {
            scenario: "s".into(),
            group: "g".into(),
            metric,
            sim,
            vm: [
                middle(fifo.to_vec()).unwrap(),
                middle(vrt.to_vec()).unwrap(),
            ],
            vm_rounds: [fifo.to_vec(), vrt.to_vec()],
        }
    }

    #[test]
    fn table_flags_disagreements() {
        let rows = [
            // Waits: 10 us counts as 20 us.
            row(
                Metric::WakeP50,
                [10.0, 40.0],
                &[100.0, 110.0],
                &[150.0, 160.0],
            ),
            row(Metric::Bursts, [10.0, 5.0], &[100.0, 90.0], &[300.0, 310.0]),
            // The VM's rounds overlap: it cannot tell.
            row(
                Metric::Bursts,
                [10.0, 5.0],
                &[100.0, 200.0],
                &[150.0, 300.0],
            ),
            // Below the floor on both sides of the simulator: a tie.
            row(Metric::WakeP99, [1.0, 9.0], &[30.0, 31.0], &[30.0, 31.0]),
        ];
        assert_eq!(rows[0].sim_ratio(), 2.0);
        assert_eq!(rows[0].agree(), Agree::Same);
        assert!(rows[0].within(2.0));
        assert_eq!(rows[1].agree(), Agree::Opposite);
        assert!(!rows[1].within(2.0));
        assert_eq!((rows[2].vm_order(), rows[2].agree()), ('=', Agree::OneTie));
        assert_eq!((rows[3].sim_order(), rows[3].agree()), ('=', Agree::Same));
        let t = render(&rows, 2.0);
        assert!(t.contains(">> ok"), "{t}");
        assert!(t.contains("<> NO"), "{t}");
        assert!(t.contains("<= ~"), "{t}");
        let a = SimCompareArgs::parse_from(["sim-compare", "--offline"]);
        assert_eq!((a.rounds, a.factor, a.vm.cpus), (3, 2.0, 2));
        assert!(a.kernels.offline && a.scenarios.is_empty());
    }
}
