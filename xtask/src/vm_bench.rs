//! `cargo xtask vm-bench`: benchmark workloads under the kernel's default scheduler and the
//! scx-userland schedulers, in one VM boot.
//!
//! The guest side is `vm/tests/src/bin/vm-bench.rs` (it documents the workloads, the metrics
//! and its `bench: {json}` console lines). This side builds the guest with vm-test's
//! machinery, boots one kernel, keeps the whole console in a log file, parses the result lines
//! from it, and prints a table of medians with ratios to `default`, the targets, and
//! (with `--compare`) the ratios to an earlier run. Results are written to
//! `target/vm-bench/<timestamp>.json` and `target/vm-bench/latest.json`.
//!
//! `--baseline upstream` adds the upstream schedulers ([`upstream`]) to the same boot and a
//! table of our schedulers' ratios to the best upstream figure; `--ab REV_A,REV_B` runs two
//! builds of scx-fifo against each other ([`ab`]).

mod ab;
mod upstream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use scx_userland_vm::image::{Plan, PlanTest};
use scx_userland_vm::kernel::KernelSelect;
use scx_userland_vm::qemu::{self, VmOptions};

use crate::setup::Need;
use crate::vm_test::{self, GuestProgram, ProgramKind, GUEST_PROGRAMS};

/// The guest program (a binary of the vm-tests package).
const GUEST: &str = "vm-bench";
/// The plan's test name.
const PLAN_NAME: &str = "vm-bench";
const DEFAULT_SCHEDULERS: &str = "default,scx-fifo,vruntime";
const WORKLOADS: &[&str] = &[
    "pingpong",
    "pingpong_hogs",
    "messages",
    "forkexec",
    "hackbench",
    "perf_messaging",
    "perf_pipe",
    "cyclictest",
];
/// The workloads that run a third-party tool, and the guest programs they need.
const TOOL_WORKLOADS: &[(&str, &str)] = &[
    ("hackbench", "hackbench"),
    ("perf_messaging", "perf"),
    ("perf_pipe", "perf"),
    ("cyclictest", "cyclictest"),
];
/// The schedulers of an A/B run.
const AB_SCHEDULERS: [&str; 3] = ["default", ab::NAMES[0], ab::NAMES[1]];
/// Identifies the JSON files this command writes.
const FORMAT: &str = "scx-userland vm-bench 1";

/// `cargo xtask vm-bench` arguments.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "vm-bench",
    about = "Benchmark workloads under the default scheduler and the scx-userland schedulers, \
             in one VM boot",
    after_long_help = "Builds the guest (as vm-test does, plus the schedulers named in \
        --schedulers), boots one sched_ext kernel (--kernels selects one) in QEMU and runs /bin/vm-bench there. For \
        every round (the --warmup rounds first, then the --rounds measured ones), every \
        workload and every scheduler in turn (interleaved: default, scx-fifo, vruntime, \
        default, …), it starts the scheduler (none for `default`), waits for sched_ext to be \
        enabled, runs the workload, sends SIGINT and waits for the exit.\n\n\
        Workloads: pingpong (1-byte round trips between two processes over two pipes: mean, \
        p50, p99 in µs), pingpong_hogs (the same beside 2 CPU-bound processes: latencies and \
        the hogs' loop iterations per second), messages (hackbench-style: 16 processes in 2 \
        groups of 4 senders and 4 receivers, --loops 100-byte messages per sender and \
        receiver: elapsed seconds; plus the scheduler's CPU time (utime+stime) in percent of \
        one CPU over that time, and its user-space dispatches per second, from its `final` counters line over the time \
        it was attached), forkexec (fork+exec /bin/true and wait, --forks times: per \
        second). Standard third-party tools, put into the guest with their libraries: \
        hackbench (rt-tests' `hackbench -g GROUPS -l MSG_LOOPS`: seconds), perf_messaging \
        (`perf bench sched messaging -g GROUPS -l MSG_LOOPS`: seconds), perf_pipe (`perf \
        bench sched pipe -l PIPE_LOOPS`: µs per operation), cyclictest (the wake-up latency \
        of a 1 ms periodic SCHED_OTHER task beside 2 CPU hogs, `cyclictest --policy=other -i \
        1000` for --duration: average and maximum in µs, and the hogs' loop iterations per \
        second). Every scheduler run also measures attach (launch to `enabled`), detach \
        (SIGINT to process exit) and disabled (SIGINT to `disabled`).\n\n\
        --baseline upstream builds scx_rlfifo and scx_rustland 1.1.4 from crates.io once \
        (`cargo install --locked` into target/upstream; needs clang and libseccomp-dev, which \
        `cargo xtask setup` installs) and runs them in the same boot, after default: default, \
        scx_rlfifo, scx_rustland, scx-fifo, vruntime. A second table gives our schedulers' \
        ratios to the best upstream figure of each metric (the lowest, or the highest where \
        higher is better).\n\n\
        --ab REV_A,REV_B builds scx-fifo at two git revisions (exported with git archive into \
        target/ab, built in release, cached by commit) and runs them as scx-fifo-a and \
        scx-fifo-b, interleaved with default, for at least 3 rounds. Its table gives each \
        metric's two medians, B/A, each side's range over the rounds, and a verdict: `A \
        better` or `B better` only when the two ranges do not overlap and the medians differ \
        by more than the wider range; otherwise `within noise`.\n\n\
        Prints a table of medians over the measured rounds, with each scheduler's ratio to \
        default (x0.95 = 0.95 times the default's value; see the `better` column for which \
        way is good), the issue's targets, and with --compare the ratios of this run to an \
        earlier one. Writes target/vm-bench/<timestamp>.json, and target/vm-bench/latest.json \
        when the run completed without problems; the whole console goes to target/vm-bench/<timestamp>.console.log (or --keep-logs \
        DIR). Absolute times under TCG are meaningless: compare ratios within one boot. \
        Nothing is asserted about the figures; the command fails only if the guest \
        misbehaved or a run failed (a scheduler did not attach, died, or ignored SIGINT).\n\n\
        Examples:\n  cargo xtask vm-bench --baseline upstream --offline\n  cargo xtask vm-bench \
        --ab HEAD~1,HEAD --workloads hackbench,cyclictest\n  cargo xtask vm-bench \
        --schedulers default,scx-fifo\n  cargo xtask vm-bench \
        --workloads pingpong_hogs --sched-args 'scx-fifo=--slice-us 1000'\n  cargo xtask \
        vm-bench --compare target/vm-bench/20250101T120000Z.json\n  cargo xtask vm-bench \
        --show target/vm-bench/latest.json"
)]
pub struct VmBenchArgs {
    #[command(flatten)]
    pub kernels: KernelSelect,

    #[command(flatten)]
    pub vm: VmOptions,

    /// Measured rounds; the table shows the median over them.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

    /// Warm-up rounds run first and left out of the medians.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub warmup: u32,

    /// Schedulers, comma separated, in the order each round runs them: `default` (the
    /// kernel's own scheduler, nothing attached) or a guest program (`scx-fifo`, `vruntime`,
    /// any name in GUEST_PROGRAMS or an example of scx-userland) [default:
    /// default,scx-fifo,vruntime; without this flag an unavailable vruntime is skipped with a
    /// warning].
    #[arg(long, value_name = "LIST")]
    pub schedulers: Option<String>,

    /// Workloads, comma separated: pingpong, pingpong_hogs, messages, forkexec, hackbench,
    /// perf_messaging, perf_pipe, cyclictest [default: all].
    #[arg(long, value_name = "LIST")]
    pub workloads: Option<String>,

    /// Extra arguments for one scheduler, as NAME=ARGS (split at whitespace), e.g.
    /// `scx-fifo=--slice-us 1000`; may be given several times. scx-fifo always gets
    /// `--stats-interval 0` first.
    #[arg(long = "sched-args", value_name = "NAME=ARGS")]
    pub sched_args: Vec<String>,

    /// Seconds each ping-pong measurement (pingpong, pingpong_hogs) runs.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub duration: f64,

    /// Messages each messages-workload sender writes to each receiver of its group.
    #[arg(long, value_name = "N", default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..))]
    pub loops: u32,

    /// fork+exec+wait iterations of the forkexec workload.
    #[arg(long, value_name = "N", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    pub forks: u32,

    /// Groups (of 20 senders and 20 receivers) of hackbench and perf_messaging.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub groups: u32,

    /// Loops (messages per sender and receiver) of hackbench and perf_messaging.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub msg_loops: u32,

    /// Operations of perf_pipe.
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub pipe_loops: u32,

    /// Also run a baseline's schedulers in the same boot: `upstream` = scx_rlfifo and
    /// scx_rustland 1.1.4 from crates.io (built once into target/upstream), run after
    /// `default`; adds a table of ratios to the best upstream figure.
    #[arg(long, value_name = "SET", value_enum)]
    pub baseline: Option<Baseline>,

    /// A/B: build scx-fifo at two git revisions (e.g. HEAD~1,HEAD; cached by commit in
    /// target/ab) and run them as scx-fifo-a and scx-fifo-b with default, interleaved, at
    /// least 3 rounds; prints both medians, B/A and a verdict per metric.
    #[arg(long, value_name = "REV_A,REV_B", conflicts_with_all = ["baseline", "schedulers"])]
    pub ab: Option<String>,

    /// Timeout in seconds for the benchmark inside the guest (the boot gets 180 s more).
    #[arg(long, value_name = "SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,

    /// Also print the ratio of this run's medians to those of an earlier run's JSON file.
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,

    /// Do not boot: print the table of a saved JSON file (with --compare, against another).
    #[arg(long, value_name = "FILE")]
    pub show: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// The schedulers `--baseline` adds.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// scx_rlfifo and scx_rustland 1.1.4 (crates.io).
    Upstream,
}

/// Which way a metric is good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Better {
    Lower,
    Higher,
    /// Informational (e.g. a rate that is neither good nor bad).
    Neither,
}

impl Better {
    fn word(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
            Better::Neither => "-",
        }
    }
}

/// The table's rows, in order. Metrics not listed here are kept in the JSON but not shown.
const ROWS: &[(&str, &str, Better)] = &[
    ("pingpong", "mean_us", Better::Lower),
    ("pingpong", "p50_us", Better::Lower),
    ("pingpong", "p99_us", Better::Lower),
    ("pingpong_hogs", "mean_us", Better::Lower),
    ("pingpong_hogs", "p50_us", Better::Lower),
    ("pingpong_hogs", "p99_us", Better::Lower),
    ("pingpong_hogs", "hog_ips", Better::Higher),
    ("messages", "elapsed_s", Better::Lower),
    ("messages", "sched_cpu_pct", Better::Lower),
    ("messages", "dispatches_per_s", Better::Neither),
    ("forkexec", "per_s", Better::Higher),
    ("hackbench", "time_s", Better::Lower),
    ("perf_messaging", "time_s", Better::Lower),
    ("perf_pipe", "us_per_op", Better::Lower),
    ("cyclictest", "avg_us", Better::Lower),
    ("cyclictest", "max_us", Better::Lower),
    ("cyclictest", "hog_ips", Better::Higher),
    ("sched", "attach_s", Better::Lower),
    ("sched", "detach_s", Better::Lower),
    ("sched", "disabled_s", Better::Lower),
];

/// One measurement of one run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    pub round: u64,
    pub warmup: bool,
    pub workload: String,
    pub scheduler: String,
    pub metrics: BTreeMap<String, f64>,
}

/// Everything the guest said in `bench:` lines.
#[derive(Clone, Debug, Default)]
pub(crate) struct GuestOutput {
    pub config: Option<Value>,
    pub samples: Vec<Sample>,
    /// `error` lines, rendered.
    pub errors: Vec<String>,
    pub done: Option<Value>,
    /// `bench:` lines that were not valid JSON (console garbling).
    pub garbled: Vec<String>,
}

/// The JSON text of a `bench: {…}` console line (not `vm-bench: …` progress lines).
fn bench_payload(line: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(i) = line[from..].find("bench: {") {
        let at = from + i;
        let prev = line[..at].chars().next_back();
        if !prev.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_') {
            return Some(line[at + "bench: ".len()..].trim_end());
        }
        from = at + 1;
    }
    None
}

/// Parse the guest's result lines out of the console text.
pub(crate) fn parse_console(text: &str) -> GuestOutput {
    let mut out = GuestOutput::default();
    for line in text.lines() {
        let Some(payload) = bench_payload(line) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(payload) else {
            out.garbled.push(line.to_string());
            continue;
        };
        match v["type"].as_str() {
            Some("config") => out.config = Some(v),
            Some("done") => out.done = Some(v),
            Some("error") => out.errors.push(format!(
                "round {} {} under {}: {}",
                v["round"].as_u64().map_or("-".into(), |r| r.to_string()),
                v["workload"].as_str().unwrap_or("-"),
                v["scheduler"].as_str().unwrap_or("-"),
                v["message"].as_str().unwrap_or("?")
            )),
            Some("sample") => {
                let metrics = v["metrics"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, x)| Some((k.clone(), x.as_f64()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                match (
                    v["round"].as_u64(),
                    v["workload"].as_str(),
                    v["scheduler"].as_str(),
                ) {
                    (Some(round), Some(w), Some(s)) => out.samples.push(Sample {
                        round,
                        warmup: v["warmup"].as_bool().unwrap_or(false),
                        workload: w.to_string(),
                        scheduler: s.to_string(),
                        metrics,
                    }),
                    _ => out.garbled.push(line.to_string()),
                }
            }
            _ => out.garbled.push(line.to_string()),
        }
    }
    out
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// workload → metric → scheduler → value.
pub(crate) type Medians = BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>;

/// Medians over the measured (non-warm-up) samples.
pub(crate) fn medians(samples: &[Sample]) -> Medians {
    let mut all: BTreeMap<(&str, &str, &str), Vec<f64>> = BTreeMap::new();
    for s in samples.iter().filter(|s| !s.warmup) {
        for (k, v) in &s.metrics {
            all.entry((&s.workload, k, &s.scheduler))
                .or_default()
                .push(*v);
        }
    }
    let mut out = Medians::new();
    for ((w, m, s), mut v) in all {
        if let Some(x) = median(&mut v) {
            out.entry(w.into())
                .or_default()
                .entry(m.into())
                .or_default()
                .insert(s.into(), x);
        }
    }
    out
}

/// A shown figure whose measured rounds disagree by more than [`NOISY_SPREAD`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Noisy {
    pub workload: String,
    pub metric: String,
    pub scheduler: String,
    pub min: f64,
    pub max: f64,
}

/// max/min over the measured rounds above which a figure is flagged as noisy.
const NOISY_SPREAD: f64 = 2.0;

/// The table's figures whose measured rounds spread by more than [`NOISY_SPREAD`]x.
pub(crate) fn noisy(samples: &[Sample]) -> Vec<Noisy> {
    let mut out = Vec::new();
    for (w, metric, _) in ROWS {
        let mut by_sched: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for s in samples.iter().filter(|s| !s.warmup && s.workload == *w) {
            if let Some(v) = s.metrics.get(*metric) {
                by_sched.entry(&s.scheduler).or_default().push(*v);
            }
        }
        for (sched, v) in by_sched {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if v.len() >= 2 && min > 0.0 && max / min > NOISY_SPREAD {
                out.push(Noisy {
                    workload: w.to_string(),
                    metric: metric.to_string(),
                    scheduler: sched.to_string(),
                    min,
                    max,
                });
            }
        }
    }
    out
}

pub(crate) fn render_noisy(n: &[Noisy]) -> String {
    if n.is_empty() {
        return String::new();
    }
    let items: Vec<String> = n
        .iter()
        .map(|n| {
            format!(
                "{}/{} {} {}..{}",
                n.workload,
                n.metric,
                n.scheduler,
                fmt_value(n.min),
                fmt_value(n.max)
            )
        })
        .collect();
    format!(
        "noisy (measured rounds differ by more than {NOISY_SPREAD}x; more --rounds help): {}\n",
        items.join(", ")
    )
}

fn noisy_json(n: &[Noisy]) -> Value {
    n.iter()
        .map(|n| {
            json!({
                "workload": n.workload,
                "metric": n.metric,
                "scheduler": n.scheduler,
                "min": n.min,
                "max": n.max,
            })
        })
        .collect()
}

fn get(m: &Medians, w: &str, metric: &str, s: &str) -> Option<f64> {
    m.get(w)?.get(metric)?.get(s).copied()
}

fn medians_to_json(m: &Medians) -> Value {
    serde_json::to_value(m).unwrap_or(Value::Null)
}

fn medians_from_json(v: &Value) -> Medians {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// A value with a sensible number of digits.
pub(crate) fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1e7 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("x{r:.2}"))
}

/// The rows shown: the known ones with data, in order.
fn shown_rows(m: &Medians) -> Vec<(&'static str, &'static str, Better)> {
    ROWS.iter()
        .copied()
        .filter(|(w, metric, _)| m.get(*w).and_then(|x| x.get(*metric)).is_some())
        .collect()
}

/// Columns padded to their widest cell: the first `left` left-aligned, the rest right-aligned.
fn render_grid(head: &[String], rows: &[Vec<String>], left: usize) -> String {
    let cols = head.len();
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([head[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (c, cell) in cells.iter().enumerate() {
            let pad = width[c] - cell.chars().count();
            if c < left {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            }
            if c + 1 < cells.len() {
                s.push_str("  ");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head);
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// The main table: medians, and each scheduler's ratio to `default`.
pub(crate) fn render_table(m: &Medians, schedulers: &[String]) -> String {
    let mut head = vec!["workload/metric".to_string(), "better".to_string()];
    head.extend(schedulers.iter().cloned());
    let has_default = schedulers.iter().any(|s| s == "default");
    let rows: Vec<Vec<String>> = shown_rows(m)
        .into_iter()
        .map(|(w, metric, better)| {
            let mut row = vec![format!("{w}/{metric}"), better.word().to_string()];
            let base = get(m, w, metric, "default");
            for s in schedulers {
                let cell = match get(m, w, metric, s) {
                    None => "-".to_string(),
                    Some(v) if s == "default" || !has_default => fmt_value(v),
                    Some(v) => match base.and_then(|b| ratio(v, b)) {
                        Some(r) => format!("{} {}", fmt_value(v), fmt_ratio(Some(r))),
                        None => fmt_value(v),
                    },
                };
                row.push(cell);
            }
            row
        })
        .collect();
    render_grid(&head, &rows, 2)
}

/// The best upstream figure of a metric and whose it is: the lowest, or the highest where
/// higher is better; `None` for a metric without a direction or without upstream data.
fn best_upstream<'a>(
    m: &Medians,
    w: &str,
    metric: &str,
    better: Better,
    upstream: &'a [String],
) -> Option<(f64, &'a str)> {
    let figures = upstream
        .iter()
        .filter_map(|s| Some((get(m, w, metric, s)?, s.as_str())));
    match better {
        Better::Lower => figures.min_by(|a, b| a.0.total_cmp(&b.0)),
        Better::Higher => figures.max_by(|a, b| a.0.total_cmp(&b.0)),
        Better::Neither => None,
    }
}

/// `value / best upstream` of one of our schedulers.
fn vs_best_upstream(
    m: &Medians,
    w: &str,
    metric: &str,
    better: Better,
    s: &str,
    upstream: &[String],
) -> Option<f64> {
    let (best, _) = best_upstream(m, w, metric, better, upstream)?;
    ratio(get(m, w, metric, s)?, best)
}

/// `better`, `worse` or `equal` for a ratio to a reference, by the metric's direction.
fn judge(r: f64, better: Better) -> &'static str {
    let good = match better {
        Better::Lower => r < 1.0,
        Better::Higher => r > 1.0,
        Better::Neither => return "",
    };
    if r == 1.0 {
        "equal"
    } else if good {
        "better"
    } else {
        "worse"
    }
}

/// Our schedulers against the best upstream figure of each metric.
pub(crate) fn render_vs_upstream(m: &Medians, ours: &[String], upstream: &[String]) -> String {
    let mut head = vec![
        "workload/metric".to_string(),
        "better".to_string(),
        "best upstream".to_string(),
    ];
    head.extend(ours.iter().map(|s| format!("{s} / best")));
    let rows: Vec<Vec<String>> = shown_rows(m)
        .into_iter()
        .filter_map(|(w, metric, better)| {
            let (best, who) = best_upstream(m, w, metric, better, upstream)?;
            let mut row = vec![
                format!("{w}/{metric}"),
                better.word().to_string(),
                format!("{} {who}", fmt_value(best)),
            ];
            for s in ours {
                row.push(match get(m, w, metric, s).and_then(|v| ratio(v, best)) {
                    Some(r) => format!("{} {}", fmt_ratio(Some(r)), judge(r, better)),
                    None => "-".to_string(),
                });
            }
            Some(row)
        })
        .collect();
    render_grid(&head, &rows, 2)
}

/// Ratios of this run's medians to an earlier run's.
pub(crate) fn render_compare(now: &Medians, before: &Medians, schedulers: &[String]) -> String {
    let mut head = vec!["workload/metric".to_string(), "better".to_string()];
    head.extend(schedulers.iter().map(|s| format!("{s} now/before")));
    let rows: Vec<Vec<String>> = shown_rows(now)
        .into_iter()
        .map(|(w, metric, better)| {
            let mut row = vec![format!("{w}/{metric}"), better.word().to_string()];
            for s in schedulers {
                let r = match (get(now, w, metric, s), get(before, w, metric, s)) {
                    (Some(a), Some(b)) => ratio(a, b),
                    _ => None,
                };
                row.push(fmt_ratio(r));
            }
            row
        })
        .collect();
    render_grid(&head, &rows, 2)
}

/// The standard workloads' metrics scx-fifo should match the best upstream scheduler on.
const STANDARD: &[(&str, &str, &str)] = &[
    ("hackbench", "time_s", "hackbench time"),
    ("perf_messaging", "time_s", "perf messaging time"),
    ("perf_pipe", "us_per_op", "perf pipe µs/op"),
    ("cyclictest", "avg_us", "wake-up latency beside 2 hogs, avg"),
    ("cyclictest", "max_us", "wake-up latency beside 2 hogs, max"),
    ("forkexec", "per_s", "fork rate"),
];

/// A target, judged on this run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Target {
    pub what: String,
    /// The measured figure (a ratio, or seconds).
    pub value: Option<f64>,
    pub op: &'static str,
    pub limit: f64,
    pub unit: &'static str,
}

impl Target {
    pub fn met(&self) -> Option<bool> {
        let v = self.value?;
        Some(match self.op {
            "<=" => v <= self.limit,
            _ => v >= self.limit,
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "what": self.what,
            "value": self.value,
            "op": self.op,
            "limit": self.limit,
            "unit": self.unit,
            "met": self.met(),
        })
    }
}

/// The targets for the schedulers in this run (`upstream`: the upstream schedulers in it).
pub(crate) fn targets(m: &Medians, schedulers: &[String], upstream: &[String]) -> Vec<Target> {
    let has = |s: &str| schedulers.iter().any(|x| x == s);
    let vs_default = |w: &str, metric: &str, s: &str| {
        ratio(get(m, w, metric, s)?, get(m, w, metric, "default")?)
    };
    let mut out = Vec::new();
    let mut rel = |what: &str, w: &str, metric: &str, s: &str, op, limit| {
        if has(s) && has("default") {
            out.push(Target {
                what: format!("{what} {s} vs default"),
                value: vs_default(w, metric, s),
                op,
                limit,
                unit: "x",
            });
        }
    };
    rel("pingpong p50", "pingpong", "p50_us", "scx-fifo", "<=", 1.2);
    rel(
        "messages time",
        "messages",
        "elapsed_s",
        "scx-fifo",
        "<=",
        0.4,
    );
    rel(
        "pingpong+2 hogs p50",
        "pingpong_hogs",
        "p50_us",
        "scx-fifo",
        "<=",
        1.0,
    );
    rel(
        "pingpong+2 hogs p50",
        "pingpong_hogs",
        "p50_us",
        "vruntime",
        "<=",
        0.25,
    );
    rel(
        "pingpong+2 hogs hog work",
        "pingpong_hogs",
        "hog_ips",
        "vruntime",
        ">=",
        0.9,
    );
    rel(
        "wake-up latency beside 2 hogs (cyclictest avg)",
        "cyclictest",
        "avg_us",
        "scx-fifo",
        "<=",
        2.0,
    );
    rel(
        "hog work beside the ping-pong",
        "pingpong_hogs",
        "hog_ips",
        "scx-fifo",
        ">=",
        0.9,
    );
    if has("scx-fifo") && !upstream.is_empty() {
        for &(w, metric, what) in STANDARD {
            let better = ROWS
                .iter()
                .find(|r| r.0 == w && r.1 == metric)
                .map_or(Better::Neither, |r| r.2);
            out.push(Target {
                what: format!("{what} scx-fifo vs best upstream"),
                value: vs_best_upstream(m, w, metric, better, "scx-fifo", upstream),
                op: if better == Better::Higher { ">=" } else { "<=" },
                limit: 1.0,
                unit: "x",
            });
        }
    }
    for s in schedulers
        .iter()
        .filter(|s| *s != "default" && !upstream.contains(s))
    {
        out.push(Target {
            what: format!("attach {s}"),
            value: get(m, "sched", "attach_s", s),
            op: "<=",
            limit: 0.5,
            unit: "s",
        });
        out.push(Target {
            what: format!("graceful detach {s}"),
            value: get(m, "sched", "detach_s", s),
            op: "<=",
            limit: 0.2,
            unit: "s",
        });
    }
    out
}

pub(crate) fn render_targets(t: &[Target]) -> String {
    let rows: Vec<Vec<String>> = t
        .iter()
        .map(|t| {
            let value = match (t.value, t.unit) {
                (None, _) => "-".to_string(),
                (Some(v), "x") => fmt_ratio(Some(v)),
                (Some(v), unit) => format!("{v:.3} {unit}"),
            };
            let limit = match t.unit {
                "x" => format!("{} {:.2}x", t.op, t.limit),
                unit => format!("{} {} {unit}", t.op, t.limit),
            };
            let verdict = match t.met() {
                Some(true) => "met",
                Some(false) => "missed",
                None => "no data",
            };
            vec![t.what.clone(), value, limit, verdict.into()]
        })
        .collect();
    let head = ["target", "measured", "target", "verdict"].map(String::from);
    render_grid(&head, &rows, 1)
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

fn bench_dir() -> PathBuf {
    crate::workspace_root().join("target").join("vm-bench")
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_date(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01, so leap days fall at the end of each 400-year era.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // month, March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `(file stamp, ISO 8601)` in UTC: `20250102T030405Z`, `2025-01-02T03:04:05Z`.
pub(crate) fn timestamps(t: SystemTime) -> (String, String) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (y, mo, d) = civil_date(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let (h, mi, se) = (s / 3600, s / 60 % 60, s % 60);
    (
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{se:02}Z"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}Z"),
    )
}

fn sample_json(s: &Sample) -> Value {
    json!({
        "round": s.round,
        "warmup": s.warmup,
        "workload": s.workload,
        "scheduler": s.scheduler,
        "metrics": s.metrics,
    })
}

fn sample_from_json(v: &Value) -> Option<Sample> {
    Some(Sample {
        round: v["round"].as_u64()?,
        warmup: v["warmup"].as_bool()?,
        workload: v["workload"].as_str()?.to_string(),
        scheduler: v["scheduler"].as_str()?.to_string(),
        metrics: serde_json::from_value(v["metrics"].clone()).ok()?,
    })
}

/// A saved run.
struct Saved {
    medians: Medians,
    samples: Vec<Sample>,
    schedulers: Vec<String>,
    /// The A/B sides, described (empty unless an A/B run).
    ab: Vec<String>,
    label: String,
}

fn load(path: &Path) -> Result<Saved> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    if v["format"] != FORMAT {
        bail!(
            "{} is not a `cargo xtask vm-bench` result (format {:?}, expected {FORMAT:?})",
            path.display(),
            v["format"]
        );
    }
    let schedulers = v["schedulers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let samples = v["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(sample_from_json)
        .collect();
    let ab = v["ab"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["describe"].as_str().map(String::from))
        .collect();
    Ok(Saved {
        medians: medians_from_json(&v["medians"]),
        samples,
        schedulers,
        ab,
        label: format!(
            "{} ({}, {}, {} rounds)",
            path.display(),
            v["created"].as_str().unwrap_or("?"),
            v["kernel"].as_str().unwrap_or("?"),
            v["rounds"]
        ),
    })
}

fn print_compare(now: &Medians, schedulers: &[String], file: &Path) -> Result<()> {
    let before = load(file)?;
    let both: Vec<String> = schedulers
        .iter()
        .filter(|s| before.schedulers.contains(s))
        .cloned()
        .collect();
    println!();
    println!("compared with {}:", before.label);
    if both.is_empty() {
        println!("(no scheduler in common)");
        return Ok(());
    }
    print!("{}", render_compare(now, &before.medians, &both));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------

fn split_list(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        if !out.iter().any(|x| x == item) {
            out.push(item.to_string());
        }
    }
    out
}

/// The guest programs to build for these schedulers, and the schedulers that will run.
/// A scheduler is a `GUEST_PROGRAMS` entry or an example of scx-userland; when the
/// list was not given explicitly, an unavailable `vruntime` is dropped with a warning.
fn resolve_schedulers(
    list: &[String],
    explicit: bool,
    known: &[GuestProgram],
    external: &[String],
    example_exists: impl Fn(&str) -> bool,
) -> Result<(Vec<GuestProgram>, Vec<String>)> {
    let mut programs: Vec<GuestProgram> = known.to_vec();
    let mut run = Vec::new();
    for s in list {
        if s == "default" || external.contains(s) {
            // Nothing to build here (an external program is built elsewhere).
            run.push(s.clone());
            continue;
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("--schedulers: {s:?} is not a program name");
        }
        if programs.iter().any(|p| p.name == s) {
            run.push(s.clone());
        } else if example_exists(s) {
            programs.push(GuestProgram {
                package: "scx-userland",
                kind: ProgramKind::Example,
                // Lives for the rest of this short-lived process.
                name: Box::leak(s.clone().into_boxed_str()),
            });
            run.push(s.clone());
        } else if !explicit && s == "vruntime" {
            println!(
                "xtask: warning: no `vruntime` scheduler yet (scx-userland/examples/\
                 vruntime.rs); benchmarking without it"
            );
        } else {
            bail!(
                "--schedulers: no guest program `{s}`: not in GUEST_PROGRAMS \
                 (xtask/src/vm_test.rs) and no scx-userland/examples/{s}.rs"
            );
        }
    }
    if run.is_empty() {
        bail!("--schedulers: nothing to benchmark");
    }
    Ok((programs, run))
}

/// The scheduler list: `--schedulers` (or the default list, or the A/B list), with the
/// upstream schedulers inserted after `default` unless the list names them.
fn scheduler_list(args: &VmBenchArgs) -> Vec<String> {
    if args.ab.is_some() {
        return AB_SCHEDULERS.iter().map(|s| s.to_string()).collect();
    }
    let mut list = split_list(args.schedulers.as_deref().unwrap_or(DEFAULT_SCHEDULERS));
    if args.baseline == Some(Baseline::Upstream) {
        let at = list
            .iter()
            .position(|s| s == "default")
            .map_or(0, |i| i + 1);
        let missing: Vec<String> = upstream::SCHEDULERS
            .iter()
            .filter(|u| !list.iter().any(|s| s == *u))
            .map(|u| u.to_string())
            .collect();
        list.splice(at..at, missing);
    }
    list
}

/// The upstream schedulers among these.
fn upstream_in(schedulers: &[String]) -> Vec<String> {
    schedulers
        .iter()
        .filter(|s| upstream::SCHEDULERS.contains(&s.as_str()))
        .cloned()
        .collect()
}

/// The guest programs the selected workloads need.
fn tools_for(workloads: &[String]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (w, tool) in TOOL_WORKLOADS {
        if workloads.iter().any(|x| x == w) && !out.contains(tool) {
            out.push(tool);
        }
    }
    out
}

/// The host executable of a tool the guest gets as `/bin/<tool>`.
fn tool_path(tool: &str) -> Result<PathBuf> {
    let found = match tool {
        "perf" => crate::setup::perf_path(),
        other => crate::setup::find_program(other),
    };
    found.with_context(|| format!("no `{tool}` on this host; run `cargo xtask setup` as root"))
}

/// The guest command line; `sched_args` are added after `--sched-args`.
fn guest_argv(
    args: &VmBenchArgs,
    schedulers: &[String],
    workloads: &[String],
    sched_args: &[String],
) -> Vec<String> {
    let mut argv = vec![
        format!("/bin/{GUEST}"),
        "--rounds".into(),
        args.rounds.to_string(),
        "--warmup".into(),
        args.warmup.to_string(),
        "--schedulers".into(),
        schedulers.join(","),
        "--workloads".into(),
        workloads.join(","),
        "--duration".into(),
        args.duration.to_string(),
        "--loops".into(),
        args.loops.to_string(),
        "--forks".into(),
        args.forks.to_string(),
        "--groups".into(),
        args.groups.to_string(),
        "--msg-loops".into(),
        args.msg_loops.to_string(),
        "--pipe-loops".into(),
        args.pipe_loops.to_string(),
    ];
    for s in sched_args.iter().chain(&args.sched_args) {
        argv.push("--sched-args".into());
        argv.push(s.clone());
    }
    argv
}

fn validate(args: &VmBenchArgs, schedulers: &[String]) -> Result<Vec<String>> {
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 3600.0) {
        bail!("--duration: {} is not in (0, 3600] seconds", args.duration);
    }
    if args.ab.is_some() && args.rounds < 3 {
        bail!(
            "--ab needs at least 3 measured rounds for its verdicts (--rounds {})",
            args.rounds
        );
    }
    let workloads = match &args.workloads {
        Some(w) => split_list(w),
        None => WORKLOADS.iter().map(|s| s.to_string()).collect(),
    };
    if workloads.is_empty() {
        bail!("--workloads: nothing to run");
    }
    for w in &workloads {
        if !WORKLOADS.contains(&w.as_str()) {
            bail!(
                "--workloads: unknown workload {w:?} (known: {})",
                WORKLOADS.join(", ")
            );
        }
    }
    for sa in &args.sched_args {
        let Some((name, _)) = sa.split_once('=') else {
            bail!("--sched-args: {sa:?} is not NAME=ARGS");
        };
        if name == "default" || !schedulers.iter().any(|s| s == name) {
            bail!("--sched-args {sa:?}: {name:?} is not a sched_ext scheduler of this run");
        }
    }
    Ok(workloads)
}

/// Every table of a run: medians with ratios to default, noisy figures, ratios to the best
/// upstream figure (when upstream schedulers ran), the A/B comparison (when it is one), and
/// the targets.
fn print_tables(med: &Medians, samples: &[Sample], schedulers: &[String], ab_sides: &[String]) {
    print!("{}", render_table(med, schedulers));
    print!("{}", render_noisy(&noisy(samples)));
    let upstream = upstream_in(schedulers);
    let ours: Vec<String> = schedulers
        .iter()
        .filter(|s| *s != "default" && !upstream.contains(s))
        .cloned()
        .collect();
    if !upstream.is_empty() && !ours.is_empty() {
        println!();
        println!(
            "ours vs the best upstream scheduler ({}) per metric (`better`: ours is better):",
            upstream.join(", ")
        );
        print!("{}", render_vs_upstream(med, &ours, &upstream));
    }
    let ab_rows = ab::rows(samples);
    if !ab_rows.is_empty() {
        println!();
        println!(
            "A/B ({}): a verdict only where the ranges over the rounds do not overlap and the \
             medians differ by more than the wider range",
            ab_sides.join("; ")
        );
        print!("{}", ab::render(&ab_rows));
    }
    println!();
    println!("targets (informational; nothing is asserted):");
    print!("{}", render_targets(&targets(med, schedulers, &upstream)));
}

fn show(file: &Path, compare: Option<&Path>) -> Result<()> {
    let saved = load(file)?;
    println!("{}:", saved.label);
    print_tables(&saved.medians, &saved.samples, &saved.schedulers, &saved.ab);
    if let Some(c) = compare {
        print_compare(&saved.medians, &saved.schedulers, c)?;
    }
    Ok(())
}

pub fn run(args: VmBenchArgs) -> Result<()> {
    if let Some(file) = &args.show {
        return show(file, args.compare.as_deref());
    }
    crate::vm_setup(args.vm.verbose);
    qemu::install_interrupt_handler()?;
    if let Some(c) = &args.compare {
        // Fail before a long run, not after it.
        load(c)?;
    }
    if let Some(spec) = &args.ab {
        ab::parse_spec(spec)?;
    }

    let explicit = args.schedulers.is_some() || args.ab.is_some();
    let list = scheduler_list(&args);
    let mut external: Vec<String> = upstream_in(&list);
    if args.ab.is_some() {
        external.extend(ab::NAMES.iter().map(|s| s.to_string()));
    }
    let examples = crate::workspace_root()
        .join("scx-userland")
        .join("examples");
    let (programs, schedulers) =
        resolve_schedulers(&list, explicit, GUEST_PROGRAMS, &external, |name| {
            // An example is `examples/NAME.rs` or `examples/NAME/main.rs`.
            examples.join(format!("{name}.rs")).is_file()
                || examples.join(name).join("main.rs").is_file()
        })?;
    let workloads = validate(&args, &schedulers)?;

    vm_test::ensure_tools()?;
    let tools = tools_for(&workloads);
    let mut needs = Vec::new();
    if tools.contains(&"perf") {
        needs.push(Need::Perf);
    }
    if tools.contains(&"hackbench") || tools.contains(&"cyclictest") {
        needs.push(Need::RtTests);
    }
    crate::setup::ensure(&needs)?;
    let mut extra: Vec<(String, PathBuf)> = Vec::new();
    for t in &tools {
        extra.push((t.to_string(), tool_path(t)?));
    }
    let upstream = upstream_in(&schedulers);
    let mut sched_args: Vec<String> = Vec::new();
    if !upstream.is_empty() {
        for (name, bin) in upstream::ensure_built()? {
            if upstream.contains(&name) {
                let a = upstream::default_args(&name);
                if !a.is_empty() {
                    sched_args.push(format!("{name}={}", a.join(" ")));
                }
                extra.push((name, bin));
            }
        }
    }
    let mut ab_sides = Vec::new();
    if let Some(spec) = &args.ab {
        for side in ab::prepare(spec)? {
            if ab::has_stats_interval(&side.binary) {
                sched_args.push(format!("{}=--stats-interval 0", side.name));
            }
            extra.push((side.name.to_string(), side.binary.clone()));
            ab_sides.push(side);
        }
    }

    let kernel = &crate::guest_once::one_kernel(&args.kernels, "vm-bench")?;
    let mut build = vm_test::build_guest(&programs)?;
    if !build.programs.iter().any(|(n, _)| n == GUEST) {
        bail!("the vm-tests package built no `{GUEST}` binary (vm/tests/src/bin/{GUEST}.rs)");
    }
    for (name, path) in extra {
        build.programs.retain(|(n, _)| *n != name);
        build.programs.push((name, path));
    }
    let accel = qemu::resolve_accel(args.vm.accel, || vm_test::probe_image(&build, kernel))?;

    let argv = guest_argv(&args, &schedulers, &workloads, &sched_args);
    let plan = Plan {
        env: vec![("RUST_BACKTRACE".to_string(), "1".to_string())],
        tests: vec![PlanTest {
            name: PLAN_NAME.to_string(),
            timeout: Duration::from_secs(args.timeout),
            argv: argv.clone(),
        }],
    };
    let image = vm_test::write_image(&build, &[], kernel, &plan, "vm-bench")?;

    let started = SystemTime::now();
    let (stamp, created) = timestamps(started);
    let dir = bench_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // The results are read back from the console log, so there always is one.
    let mut vm = args.vm.clone();
    let log_dir = vm.keep_logs.get_or_insert_with(|| dir.clone()).clone();
    let log_stem = format!("{stamp}.console");
    let log = qemu::log_path(Some(&log_dir), &log_stem).expect("a log directory is set");
    println!(
        "xtask: vm-bench: {} under {}; {} warm-up + {} measured round(s)",
        workloads.join(", "),
        schedulers.join(", "),
        args.warmup,
        args.rounds
    );
    for side in &ab_sides {
        println!("xtask: {}", side.describe());
    }
    let label = vm_test::labels(std::slice::from_ref(kernel)).remove(0);
    let report = vm_test::boot_kernel(
        kernel,
        &label,
        &image,
        &vm,
        accel,
        Duration::from_secs(args.timeout + 180),
        &log_stem,
    )?;

    let console = std::fs::read_to_string(&log)
        .with_context(|| format!("cannot read the console log {}", log.display()))?;
    let out = parse_console(&console);
    let med = medians(&out.samples);
    let tgts = targets(&med, &schedulers, &upstream);
    let noise = noisy(&out.samples);

    let mut problems = Vec::new();
    match report.console.results.iter().find(|r| r.name == PLAN_NAME) {
        Some(r) if r.outcome.is_ok() => {}
        Some(r) => problems.push(format!(
            "the guest's vm-bench {} after {:.1} s ({})",
            r.outcome, r.secs, r.detail
        )),
        None => problems.push("the guest's vm-bench reported no result".to_string()),
    }
    problems.extend(report.guest_failures());
    if out.done.is_none() {
        problems.push("vm-bench did not finish (no `done` line)".to_string());
    }
    for e in &out.errors {
        problems.push(format!("run failed: {e}"));
    }
    let complete = problems.is_empty();
    let ab_descriptions: Vec<String> = ab_sides.iter().map(ab::Side::describe).collect();

    let result = json!({
        "format": FORMAT,
        "created": created,
        "kernel": kernel.version,
        "accel": report.accel.to_string(),
        "cpus": vm.cpus,
        "memory_mib": vm.memory,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "schedulers": schedulers,
        "upstream": upstream,
        "upstream_version": (!upstream.is_empty()).then_some(upstream::VERSION),
        "ab": ab_sides.iter().map(|s| json!({
            "label": s.label,
            "name": s.name,
            "rev": s.rev,
            "commit": s.commit,
            "describe": s.describe(),
        })).collect::<Vec<_>>(),
        "workloads": workloads,
        "guest_argv": argv,
        "guest_config": out.config.clone().unwrap_or(Value::Null),
        "boot_to_result_s": report.boot_to_result.map(|d| d.as_secs_f64()),
        "complete": complete,
        "problems": problems,
        "medians": medians_to_json(&med),
        "targets": tgts.iter().map(Target::to_json).collect::<Vec<_>>(),
        "noisy": noisy_json(&noise),
        "samples": out.samples.iter().map(sample_json).collect::<Vec<_>>(),
        "console_log": log.display().to_string(),
    });
    let text = serde_json::to_string_pretty(&result)? + "\n";
    let file = dir.join(format!("{stamp}.json"));
    std::fs::write(&file, &text).with_context(|| format!("cannot write {}", file.display()))?;
    let latest = dir.join("latest.json");
    if complete {
        std::fs::write(&latest, &text)
            .with_context(|| format!("cannot write {}", latest.display()))?;
    }

    println!();
    println!(
        "vm-bench on {} ({} vCPUs, accel {}): medians of {} measured round(s), ratio to default",
        kernel.version, vm.cpus, report.accel, args.rounds
    );
    print_tables(&med, &out.samples, &schedulers, &ab_descriptions);
    if let Some(c) = &args.compare {
        print_compare(&med, &schedulers, c)?;
    }
    println!();
    println!("{}", vm_test::wall_time_line(&kernel.version, &report));
    if !out.garbled.is_empty() {
        println!(
            "xtask: warning: {} garbled `bench:` console line(s) ignored, e.g. {}",
            out.garbled.len(),
            out.garbled[0]
        );
    }
    println!("xtask: console log {}", log.display());
    println!("xtask: results written to {}", file.display());
    if complete {
        println!("xtask: and to {}", latest.display());
        return Ok(());
    }
    println!(
        "xtask: {} not updated: the run was incomplete",
        latest.display()
    );
    for p in &problems {
        println!("vm-bench problem: {p}");
    }
    bail!("vm-bench failed: {}", problems.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The lines of a rendered table with their runs of spaces squashed.
    pub(crate) fn squash_lines(t: &str) -> Vec<String> {
        t.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }

    const CONSOLE: &str = r#"# qemu-system-x86_64 …
[    1.0] random kernel line
vm-bench: measured round 1 (3 s in)
bench: {"type":"config","rounds":2,"warmup":1,"schedulers":["default","scx-fifo"]}
bench: {"type":"sample","round":1,"warmup":true,"workload":"pingpong","scheduler":"default","metrics":{"p50_us":1000}}
bench: {"type":"sample","round":1,"warmup":false,"workload":"pingpong","scheduler":"default","metrics":{"p50_us":10,"mean_us":12}}
bench: {"type":"sample","round":1,"warmup":false,"workload":"pingpong","scheduler":"scx-fifo","metrics":{"p50_us":11}}
bench: {"type":"sample","round":1,"warmup":false,"workload":"sched","scheduler":"scx-fifo","metrics":{"attach_s":0.4,"detach_s":0.1}}
bench: {"type":"sample","round":2,"warmup":false,"workload":"pingpong","scheduler":"default","metrics":{"p50_us":20,"mean_us":14}}
garbage bench: {"type":"sample","round":2,"warmup":fal[  3.1] printk
bench: {"type":"sample","round":2,"warmup":false,"workload":"pingpong","scheduler":"scx-fifo","metrics":{"p50_us":13}}
bench: {"type":"sample","round":2,"warmup":false,"workload":"sched","scheduler":"scx-fifo","metrics":{"attach_s":0.8,"detach_s":0.5}}
bench: {"type":"error","round":2,"workload":"messages","scheduler":"scx-fifo","message":"boom"}
bench: {"type":"done","runs":4,"errors":1}
"#;

    #[test]
    fn parses_console_and_takes_medians() {
        let out = parse_console(CONSOLE);
        assert_eq!(out.config.as_ref().unwrap()["rounds"], 2);
        assert!(out.done.is_some());
        assert_eq!(out.samples.len(), 7);
        assert_eq!(out.garbled.len(), 1);
        assert_eq!(out.errors, ["round 2 messages under scx-fifo: boom"]);
        let m = medians(&out.samples);
        // The warm-up sample (1000) is left out.
        assert_eq!(get(&m, "pingpong", "p50_us", "default"), Some(15.0));
        assert_eq!(get(&m, "pingpong", "p50_us", "scx-fifo"), Some(12.0));
        assert_eq!(
            get(&m, "sched", "attach_s", "scx-fifo"),
            Some(0.6000000000000001)
        );
        assert_eq!(get(&m, "pingpong", "p50_us", "vruntime"), None);
        assert_eq!(medians_from_json(&medians_to_json(&m)), m);

        let s = ["default".to_string(), "scx-fifo".to_string()];
        let table = render_table(&m, &s);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "workload/metric   better  default     scx-fifo");
        assert_eq!(lines[1], "pingpong/mean_us  lower     13.00            -");
        assert_eq!(lines[2], "pingpong/p50_us   lower     15.00  12.00 x0.80");
        // No default figure: no ratio.
        assert_eq!(lines[3], "sched/attach_s    lower         -        0.600");

        let t = targets(&m, &s, &[]);
        assert_eq!(t[0].what, "pingpong p50 scx-fifo vs default");
        assert_eq!(t[0].value, Some(0.8));
        assert_eq!(t[0].met(), Some(true));
        assert_eq!(t[1].met(), None); // no messages data
        let attach = t.iter().find(|t| t.what == "attach scx-fifo").unwrap();
        assert_eq!(attach.met(), Some(false));
        let detach = t
            .iter()
            .find(|t| t.what == "graceful detach scx-fifo")
            .unwrap();
        assert_eq!(detach.met(), Some(false));
        assert!(!t.iter().any(|t| t.what.contains("vruntime")));
        let rt = squash_lines(&render_targets(&t));
        assert_eq!(rt[1], "pingpong p50 scx-fifo vs default x0.80 <= 1.20x met");
        assert_eq!(
            rt[2],
            "messages time scx-fifo vs default - <= 0.40x no data"
        );
        assert_eq!(
            rt[4],
            "wake-up latency beside 2 hogs (cyclictest avg) scx-fifo vs default - <= 2.00x no data"
        );
        assert_eq!(rt[6], "attach scx-fifo 0.600 s <= 0.5 s missed");
        assert_eq!(rt[7], "graceful detach scx-fifo 0.300 s <= 0.2 s missed");

        // pingpong default: 10 and 20 (2x, not noisy); sched detach 0.1 and 0.5 (5x).
        let n = noisy(&out.samples);
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!(
            (n[0].workload.as_str(), n[0].metric.as_str(), n[0].max),
            ("sched", "detach_s", 0.5)
        );
        assert!(render_noisy(&n).ends_with(": sched/detach_s scx-fifo 0.100..0.500\n"));
        assert_eq!(render_noisy(&[]), "");
        let back: Vec<Sample> = out
            .samples
            .iter()
            .filter_map(|s| sample_from_json(&sample_json(s)))
            .collect();
        assert_eq!(back, out.samples);

        let mut before = m.clone();
        before
            .get_mut("pingpong")
            .unwrap()
            .get_mut("p50_us")
            .unwrap()
            .insert("default".into(), 30.0);
        let c = render_compare(&m, &before, &s);
        assert!(c.contains("pingpong/p50_us"), "{c}");
        assert!(c.contains("x0.50"), "{c}");
    }

    #[test]
    fn finds_bench_lines_only() {
        assert_eq!(bench_payload("bench: {\"a\":1}  "), Some("{\"a\":1}"));
        assert_eq!(bench_payload("xx bench: {}"), Some("{}"));
        assert_eq!(bench_payload("vm-bench: {not a result}"), None);
        assert_eq!(bench_payload("vm-bench: round 1"), None);
        assert_eq!(bench_payload("nothing"), None);
    }

    #[test]
    fn medians_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn formats_values_and_ratios() {
        assert_eq!(fmt_value(123_456_789.0), "123.5M");
        assert_eq!(fmt_value(1234.4), "1234");
        assert_eq!(fmt_value(123.45), "123.5");
        assert_eq!(fmt_value(12.345), "12.35");
        assert_eq!(fmt_value(0.1234), "0.123");
        assert_eq!(fmt_ratio(ratio(1.0, 4.0)), "x0.25");
        assert_eq!(fmt_ratio(ratio(1.0, 0.0)), "-");
    }

    #[test]
    fn timestamps_are_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(0);
        assert_eq!(
            timestamps(t),
            ("19700101T000000Z".into(), "1970-01-01T00:00:00Z".into())
        );
        // 2024-02-29 12:34:56 UTC (a leap day).
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(timestamps(t).1, "2024-02-29T12:34:56Z");
        // 2000-03-01 and 2100-12-31.
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(47_846), (2100, 12, 31));
        assert_eq!(civil_date(-1), (1969, 12, 31));
    }

    #[test]
    fn resolves_schedulers() {
        let l = split_list("default, scx-fifo,vruntime,default");
        assert_eq!(l, ["default", "scx-fifo", "vruntime"]);
        let fifo = [GuestProgram {
            package: "scx-fifo",
            kind: ProgramKind::Bin,
            name: "scx-fifo",
        }];
        // Not explicit and no example: vruntime is dropped.
        let (p, s) = resolve_schedulers(&l, false, &fifo, &[], |_| false).unwrap();
        assert_eq!(s, ["default", "scx-fifo"]);
        assert_eq!(p, fifo);
        // Explicit: an error.
        assert!(resolve_schedulers(&l, true, &fifo, &[], |_| false).is_err());
        // The example exists: built as one.
        let (p, s) = resolve_schedulers(&l, true, &fifo, &[], |n| n == "vruntime").unwrap();
        assert_eq!(s, l);
        let v = p.iter().find(|p| p.name == "vruntime").unwrap();
        assert_eq!((v.package, v.kind), ("scx-userland", ProgramKind::Example));
        // Already a guest program: not added twice.
        let (p, _) = resolve_schedulers(&l, true, &p, &[], |_| true).unwrap();
        assert_eq!(p.iter().filter(|p| p.name == "vruntime").count(), 1);
        assert!(resolve_schedulers(&["../x".to_string()], true, &fifo, &[], |_| true).is_err());
        assert!(resolve_schedulers(&[], true, &fifo, &[], |_| true).is_err());
        // External programs (upstream, A/B builds) are taken as they are.
        let ext = ["scx_rlfifo".to_string()];
        let l = split_list("default,scx_rlfifo,scx-fifo");
        let (p, s) = resolve_schedulers(&l, true, &fifo, &ext, |_| false).unwrap();
        assert_eq!(s, l);
        assert_eq!(p, fifo);
    }

    #[test]
    fn args_and_guest_argv() {
        let a = VmBenchArgs::parse_from(["vm-bench"]);
        assert_eq!(
            (a.rounds, a.warmup, a.loops, a.forks, a.timeout),
            (3, 1, 4000, 300, 3600)
        );
        assert_eq!(a.vm.cpus, 2);
        assert!(a.schedulers.is_none() && a.compare.is_none() && a.show.is_none());
        let a = VmBenchArgs::parse_from([
            "vm-bench",
            "--rounds",
            "5",
            "--schedulers",
            "default,scx-fifo",
            "--workloads",
            "pingpong",
            "--sched-args",
            "scx-fifo=--slice-us 1000",
            "--duration",
            "1.5",
        ]);
        let s = ["default".to_string(), "scx-fifo".to_string()];
        let w = validate(&a, &s).unwrap();
        assert_eq!(w, ["pingpong"]);
        assert_eq!(
            guest_argv(&a, &s, &w, &["scx-fifo=--stats-interval 0".to_string()]),
            [
                "/bin/vm-bench",
                "--rounds",
                "5",
                "--warmup",
                "1",
                "--schedulers",
                "default,scx-fifo",
                "--workloads",
                "pingpong",
                "--duration",
                "1.5",
                "--loops",
                "4000",
                "--forks",
                "300",
                "--groups",
                "2",
                "--msg-loops",
                "50",
                "--pipe-loops",
                "20000",
                "--sched-args",
                "scx-fifo=--stats-interval 0",
                "--sched-args",
                "scx-fifo=--slice-us 1000"
            ]
        );
        let bad = VmBenchArgs::parse_from(["vm-bench", "--workloads", "nope"]);
        assert!(validate(&bad, &s).is_err());
        let bad = VmBenchArgs::parse_from(["vm-bench", "--sched-args", "vruntime=-x"]);
        assert!(validate(&bad, &s).is_err());
        let bad = VmBenchArgs::parse_from(["vm-bench", "--duration", "0"]);
        assert!(validate(&bad, &s).is_err());
        let bad = VmBenchArgs::parse_from(["vm-bench", "--ab", "HEAD~1,HEAD", "--rounds", "2"]);
        assert!(validate(&bad, &s).is_err());
        assert!(
            VmBenchArgs::try_parse_from(["vm-bench", "--ab", "a,b", "--baseline", "upstream"])
                .is_err()
        );
        assert!(VmBenchArgs::try_parse_from([
            "vm-bench",
            "--ab",
            "a,b",
            "--schedulers",
            "default"
        ])
        .is_err());
    }

    #[test]
    fn scheduler_lists() {
        let list = |a: &[&str]| {
            let mut v = vec!["vm-bench"];
            v.extend(a);
            scheduler_list(&VmBenchArgs::parse_from(v))
        };
        assert_eq!(list(&[]), ["default", "scx-fifo", "vruntime"]);
        assert_eq!(
            list(&["--baseline", "upstream"]),
            [
                "default",
                "scx_rlfifo",
                "scx_rustland",
                "scx-fifo",
                "vruntime"
            ]
        );
        assert_eq!(
            list(&[
                "--baseline",
                "upstream",
                "--schedulers",
                "scx-fifo,scx_rustland"
            ]),
            ["scx_rlfifo", "scx-fifo", "scx_rustland"]
        );
        assert_eq!(
            list(&["--ab", "HEAD~1,HEAD"]),
            ["default", "scx-fifo-a", "scx-fifo-b"]
        );
        assert_eq!(
            upstream_in(&list(&["--baseline", "upstream"])),
            ["scx_rlfifo", "scx_rustland"]
        );
        let w: Vec<String> = WORKLOADS.iter().map(|s| s.to_string()).collect();
        assert_eq!(tools_for(&w), ["hackbench", "perf", "cyclictest"]);
        assert!(tools_for(&w[..4]).is_empty());
    }

    #[test]
    fn ratios_to_the_best_upstream() {
        let mut m = Medians::new();
        let mut put = |w: &str, metric: &str, s: &str, v: f64| {
            m.entry(w.into())
                .or_default()
                .entry(metric.into())
                .or_default()
                .insert(s.into(), v);
        };
        // Lower is better: the best upstream is the lowest.
        put("hackbench", "time_s", "default", 1.0);
        put("hackbench", "time_s", "scx_rlfifo", 0.8);
        put("hackbench", "time_s", "scx_rustland", 0.6);
        put("hackbench", "time_s", "scx-fifo", 0.9);
        // Higher is better: the highest.
        put("forkexec", "per_s", "scx_rlfifo", 300.0);
        put("forkexec", "per_s", "scx_rustland", 100.0);
        put("forkexec", "per_s", "scx-fifo", 330.0);
        // No direction: no best.
        put("messages", "dispatches_per_s", "scx_rlfifo", 5.0);
        put("messages", "dispatches_per_s", "scx-fifo", 5.0);
        let up = ["scx_rlfifo".to_string(), "scx_rustland".to_string()];
        assert_eq!(
            best_upstream(&m, "hackbench", "time_s", Better::Lower, &up),
            Some((0.6, "scx_rustland"))
        );
        assert_eq!(
            best_upstream(&m, "forkexec", "per_s", Better::Higher, &up),
            Some((300.0, "scx_rlfifo"))
        );
        assert_eq!(
            best_upstream(&m, "messages", "dispatches_per_s", Better::Neither, &up),
            None
        );
        let r = vs_best_upstream(&m, "hackbench", "time_s", Better::Lower, "scx-fifo", &up);
        assert_eq!(r, Some(1.5));
        assert_eq!(
            (judge(1.5, Better::Lower), judge(1.1, Better::Higher)),
            ("worse", "better")
        );
        assert_eq!(judge(1.0, Better::Lower), "equal");
        let lines = squash_lines(&render_vs_upstream(&m, &["scx-fifo".to_string()], &up));
        assert_eq!(
            lines[0],
            "workload/metric better best upstream scx-fifo / best"
        );
        assert_eq!(
            lines[1],
            "forkexec/per_s higher 300.0 scx_rlfifo x1.10 better"
        );
        assert_eq!(
            lines[2],
            "hackbench/time_s lower 0.600 scx_rustland x1.50 worse"
        );
        assert_eq!(lines.len(), 3);
        let s: Vec<String> = ["default", "scx_rlfifo", "scx_rustland", "scx-fifo"]
            .map(String::from)
            .to_vec();
        let t = targets(&m, &s, &up);
        let hb = t
            .iter()
            .find(|t| t.what == "hackbench time scx-fifo vs best upstream")
            .unwrap();
        assert_eq!((hb.value, hb.met()), (Some(1.5), Some(false)));
        let fork = t
            .iter()
            .find(|t| t.what == "fork rate scx-fifo vs best upstream")
            .unwrap();
        assert_eq!((fork.op, fork.met()), (">=", Some(true)));
        // Upstream schedulers get no attach/detach targets of ours.
        assert!(!t.iter().any(|t| t.what.contains("scx_rlfifo")));
    }
}
