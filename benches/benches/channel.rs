//! Throughput of the user<->BPF channel on this host, ours against plain libbpf-rs.
//!
//! - `dispatch/*`: N decisions produced into a real `BPF_MAP_TYPE_USER_RINGBUF`, then one
//!   `BPF_PROG_TEST_RUN` of a `SEC("syscall")` program that drains them the way the
//!   scheduler's ops.dispatch() does. `ours` = `Dispatch::write_packed` (up to
//!   `DISPATCH_BATCH_MAX` records a sample) and one `publish`; `libbpf-rs` =
//!   `UserRingBuffer::reserve`/`submit` per record, each read in place by its drain.
//! - `dequeue/*`: one `BPF_PROG_TEST_RUN` producing N `queued_task_ctx` records into a real
//!   `BPF_MAP_TYPE_RINGBUF`, then consuming them: `ours-batch` = one `RingReader::consume`
//!   pass, `ours-single` = `consume(1)` per record, `libbpf-rs` = `RingBuffer::consume` with
//!   a decoding callback. Every path decodes with `QueuedTask::from_bytes` into a `Vec`.
//!
//! The criterion groups run with `BPF_RB_NO_WAKEUP` on every BPF end: the channel alone,
//! the same per-record BPF work for both paths.
//!
//! After the criterion groups, a fixed-time loop (each path in turn, interleaved) measures
//! records/s per path in two modes and prints ours/baseline ratios: the channel alone, and
//! as deployed (ours with main.bpf.c's ring flags, which wake user space only while it
//! sleeps; the baseline with flags 0, a plain libbpf program's default, whose kernel
//! wake-up costs an irq_work per run that moves records). Also written
//! to `target/bench/channel.json`; a second, instrumented loop splits each path's time
//! into its user-space side and its `BPF_PROG_TEST_RUN` side.
//!
//! Needs root; otherwise it prints why it is skipped and exits 0.
//! `SCX_BENCH_RATIOS_ONLY=1` skips the criterion groups.

use std::cell::RefCell;
use std::hint::black_box;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use libbpf_rs::{RingBuffer, UserRingBuffer};
use scx_userland::ring::{RingReader, RingWriter};
use scx_userland::{Dispatch, QueuedTask};
use scx_userland_benches::{
    dequeue_baseline, dequeue_ours_batch, dequeue_ours_single, dispatch_baseline, dispatch_ours,
    dispatches, Channel, Error, Wakeup, BATCH_SIZES,
};
use serde_json::json;

/// Ratio targets of the issue.
const DISPATCH_TARGET: f64 = 3.0;
const DEQUEUE_TARGET: f64 = 2.0;

/// Fixed-time loop: per batch size, ROUNDS rounds of SLICE per path, paths interleaved.
const ROUNDS: usize = 6;
const SLICE: Duration = Duration::from_millis(80);
const WARMUP: Duration = Duration::from_millis(50);
/// Instrumented loop (user side vs BPF side), per path and batch size.
const SPLIT_TIME: Duration = Duration::from_millis(150);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    DispatchOurs,
    DispatchBaseline,
    DequeueOursBatch,
    DequeueOursSingle,
    DequeueBaseline,
}

const PATHS: [Path; 5] = [
    Path::DispatchOurs,
    Path::DispatchBaseline,
    Path::DequeueOursBatch,
    Path::DequeueOursSingle,
    Path::DequeueBaseline,
];

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::DispatchOurs => "dispatch ours",
            Path::DispatchBaseline => "dispatch libbpf-rs",
            Path::DequeueOursBatch => "dequeue ours-batch",
            Path::DequeueOursSingle => "dequeue ours-single",
            Path::DequeueBaseline => "dequeue libbpf-rs",
        }
    }

    /// Whether the user-space side runs before the BPF run (dispatch) or after (dequeue).
    fn user_first(self) -> bool {
        matches!(self, Path::DispatchOurs | Path::DispatchBaseline)
    }
}

/// Both ends of both paths, set up once.
struct Ends {
    ch: Channel,
    writer: RingWriter,
    baseline_writer: UserRingBuffer,
    reader: RingReader,
    baseline_sink: Rc<RefCell<Vec<QueuedTask>>>,
    baseline_reader: RingBuffer<'static>,
    out: Vec<QueuedTask>,
    batches: Vec<Vec<Dispatch>>,
}

impl Ends {
    fn new(ch: Channel) -> Result<Self, Error> {
        let sink = Rc::new(RefCell::new(Vec::with_capacity(1024)));
        Ok(Self {
            writer: ch.writer()?,
            baseline_writer: ch.baseline_writer()?,
            reader: ch.reader()?,
            baseline_reader: ch.baseline_reader(sink.clone())?,
            baseline_sink: sink,
            out: Vec::with_capacity(1024),
            batches: BATCH_SIZES.iter().map(|&n| dispatches(n)).collect(),
            ch,
        })
    }

    /// One iteration of `path` with `n` records; `mid` runs between its two halves.
    #[inline(always)]
    fn step(&mut self, path: Path, n: usize, mid: impl FnMut()) -> Result<(), Error> {
        let batch = || {
            BATCH_SIZES
                .iter()
                .position(|&b| b == n)
                .expect("a batch size")
        };
        match path {
            Path::DispatchOurs => {
                let records = &self.batches[batch()];
                dispatch_ours(&self.ch, &mut self.writer, records, mid)
            }
            Path::DispatchBaseline => {
                let records = &self.batches[batch()];
                dispatch_baseline(&self.ch, &self.baseline_writer, records, mid)
            }
            Path::DequeueOursBatch => {
                dequeue_ours_batch(&self.ch, &mut self.reader, n, &mut self.out, mid)?;
                black_box(&self.out);
                Ok(())
            }
            Path::DequeueOursSingle => {
                dequeue_ours_single(&self.ch, &mut self.reader, n, &mut self.out, mid)?;
                black_box(&self.out);
                Ok(())
            }
            Path::DequeueBaseline => {
                dequeue_baseline(&self.ch, &self.baseline_reader, &self.baseline_sink, n, mid)?;
                black_box(&self.baseline_sink);
                Ok(())
            }
        }
    }

    fn must(&mut self, path: Path, n: usize) {
        if let Err(e) = self.step(path, n, || ()) {
            panic!("{} x{n}: {e}", path.name());
        }
    }
}

fn criterion_groups(c: &mut Criterion, ends: &mut Ends) {
    let mut group = c.benchmark_group("dispatch");
    for &n in &BATCH_SIZES {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("ours", n), |b| {
            b.iter(|| ends.must(Path::DispatchOurs, n))
        });
        group.bench_function(BenchmarkId::new("libbpf-rs", n), |b| {
            b.iter(|| ends.must(Path::DispatchBaseline, n))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("dequeue");
    for &n in &BATCH_SIZES {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("ours-batch", n), |b| {
            b.iter(|| ends.must(Path::DequeueOursBatch, n))
        });
        group.bench_function(BenchmarkId::new("ours-single", n), |b| {
            b.iter(|| ends.must(Path::DequeueOursSingle, n))
        });
        group.bench_function(BenchmarkId::new("libbpf-rs", n), |b| {
            b.iter(|| ends.must(Path::DequeueBaseline, n))
        });
    }
    group.finish();
}

/// Run `path` for about `dur`; returns (records moved, time taken).
fn run_for(ends: &mut Ends, path: Path, n: usize, dur: Duration) -> (u64, Duration) {
    // Look at the clock about every 64 records, so it costs nothing next to the work.
    let per_check = (64 / n).max(1);
    let start = Instant::now();
    let mut iters = 0u64;
    loop {
        for _ in 0..per_check {
            ends.must(path, n);
        }
        iters += per_check as u64;
        let elapsed = start.elapsed();
        if elapsed >= dur {
            return (iters * n as u64, elapsed);
        }
    }
}

/// Run `path` for about `dur` with a clock read between its halves; returns the mean
/// (user-side, BPF-side) time per iteration.
fn run_split(ends: &mut Ends, path: Path, n: usize, dur: Duration) -> (Duration, Duration) {
    let (mut first, mut second) = (Duration::ZERO, Duration::ZERO);
    let mut iters = 0u32;
    let start = Instant::now();
    while start.elapsed() < dur {
        let t0 = Instant::now();
        let mut t_mid = t0;
        if let Err(e) = ends.step(path, n, || t_mid = Instant::now()) {
            panic!("{} x{n}: {e}", path.name());
        }
        let t1 = Instant::now();
        first += t_mid - t0;
        second += t1 - t_mid;
        iters += 1;
    }
    let (first, second) = (first / iters, second / iters);
    if path.user_first() {
        (first, second)
    } else {
        (second, first)
    }
}

#[derive(Clone, Copy, Default)]
struct Figures {
    /// Records per second in the fixed-time loop.
    rate: f64,
    /// User-space time per record (ns), instrumented loop.
    user_ns: f64,
    /// BPF_PROG_TEST_RUN time per iteration (ns), instrumented loop.
    bpf_ns: f64,
}

fn measure(ends: &mut Ends) -> Rows {
    let mut rows = Vec::new();
    for &n in &BATCH_SIZES {
        let mut tally = [(0u64, Duration::ZERO); 5];
        for &p in &PATHS {
            run_for(ends, p, n, WARMUP);
        }
        for round in 0..ROUNDS {
            // Rotate the order so no path always runs first or right after another.
            for k in 0..PATHS.len() {
                let i = (k + round) % PATHS.len();
                let (elems, t) = run_for(ends, PATHS[i], n, SLICE);
                tally[i].0 += elems;
                tally[i].1 += t;
            }
        }
        let mut figs = [Figures::default(); 5];
        for (i, &p) in PATHS.iter().enumerate() {
            let (user, bpf) = run_split(ends, p, n, SPLIT_TIME);
            figs[i] = Figures {
                rate: tally[i].0 as f64 / tally[i].1.as_secs_f64(),
                user_ns: user.as_nanos() as f64 / n as f64,
                bpf_ns: bpf.as_nanos() as f64,
            };
        }
        rows.push((n, figs));
    }
    rows
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            manifest.parent().unwrap_or(manifest).join("target")
        })
}

const D_OURS: usize = 0;
const D_BASE: usize = 1;
const Q_BATCH: usize = 2;
const Q_SINGLE: usize = 3;
const Q_BASE: usize = 4;

type Rows = Vec<(usize, [Figures; 5])>;

/// The targets, judged on one mode's rows.
struct Verdict {
    dispatch64: f64,
    dequeue64: f64,
    dequeue_worst: f64,
}

impl Verdict {
    fn of(rows: &Rows) -> Self {
        let ratio = |f: &[Figures; 5], a: usize, b: usize| f[a].rate / f[b].rate;
        let at64 = rows.iter().find(|(n, _)| *n == 64).map(|(_, f)| f);
        Self {
            dispatch64: at64.map_or(0.0, |f| ratio(f, D_OURS, D_BASE)),
            dequeue64: at64.map_or(0.0, |f| ratio(f, Q_BATCH, Q_BASE)),
            dequeue_worst: rows
                .iter()
                .map(|(_, f)| ratio(f, Q_BATCH, Q_BASE))
                .fold(f64::INFINITY, f64::min),
        }
    }
}

fn print_rows(title: &str, rows: &Rows) {
    let m = |r: f64| r / 1e6;
    println!();
    println!("{title}");
    println!(
        "  Mrecords/s, fixed-time loop ({ROUNDS} x {} ms per path, paths interleaved)",
        SLICE.as_millis()
    );
    println!(
        "  {:>5} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>9} {:>6} {:>6}",
        "batch",
        "disp ours",
        "libbpf-rs",
        "ratio",
        "deq batch",
        "deq singl",
        "libbpf-rs",
        "r.bat",
        "r.sgl"
    );
    for (n, f) in rows {
        println!(
            "  {:>5} | {:>9.3} {:>9.3} {:>5.2}x | {:>9.3} {:>9.3} {:>9.3} {:>5.2}x {:>5.2}x",
            n,
            m(f[D_OURS].rate),
            m(f[D_BASE].rate),
            f[D_OURS].rate / f[D_BASE].rate,
            m(f[Q_BATCH].rate),
            m(f[Q_SINGLE].rate),
            m(f[Q_BASE].rate),
            f[Q_BATCH].rate / f[Q_BASE].rate,
            f[Q_SINGLE].rate / f[Q_BASE].rate,
        );
    }
    println!(
        "  where the time goes ({} ms instrumented loop): user-space ns/record | BPF_PROG_TEST_RUN ns/run",
        SPLIT_TIME.as_millis()
    );
    println!(
        "  {:>5} | {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9}",
        "batch",
        "disp ours",
        "libbpf-rs",
        "deq batch",
        "deq singl",
        "libbpf-rs",
        "drain",
        "drain(b)",
        "produce",
        "produce(b)"
    );
    for (n, f) in rows {
        println!(
            "  {:>5} | {:>9.1} {:>9.1} | {:>9.1} {:>9.1} {:>9.1} | {:>9.0} {:>9.0} | {:>9.0} {:>9.0}",
            n,
            f[D_OURS].user_ns,
            f[D_BASE].user_ns,
            f[Q_BATCH].user_ns,
            f[Q_SINGLE].user_ns,
            f[Q_BASE].user_ns,
            f[D_OURS].bpf_ns,
            f[D_BASE].bpf_ns,
            f[Q_BATCH].bpf_ns,
            f[Q_BASE].bpf_ns,
        );
    }
    let v = Verdict::of(rows);
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "  target dispatch batch 64 >= {DISPATCH_TARGET}x libbpf-rs: {:.2}x, {}",
        v.dispatch64,
        met(v.dispatch64 >= DISPATCH_TARGET)
    );
    println!(
        "  target dequeue >= {DEQUEUE_TARGET}x libbpf-rs: batch 64 {:.2}x, worst batch size {:.2}x, {}",
        v.dequeue64,
        v.dequeue_worst,
        met(v.dequeue_worst >= DEQUEUE_TARGET)
    );
}

fn rows_json(rows: &Rows) -> serde_json::Value {
    let row = |(n, f): &(usize, [Figures; 5])| {
        let path = |i: usize| {
            json!({
                "records_per_s": f[i].rate,
                "user_ns_per_record": f[i].user_ns,
                "bpf_run_ns": f[i].bpf_ns,
            })
        };
        json!({
            "batch": n,
            "dispatch": {
                "ours": path(D_OURS),
                "libbpf_rs": path(D_BASE),
                "ratio": f[D_OURS].rate / f[D_BASE].rate,
                "user_side_ratio": f[D_BASE].user_ns / f[D_OURS].user_ns,
            },
            "dequeue": {
                "ours_batch": path(Q_BATCH),
                "ours_single": path(Q_SINGLE),
                "libbpf_rs": path(Q_BASE),
                "ratio_batch": f[Q_BATCH].rate / f[Q_BASE].rate,
                "ratio_single": f[Q_SINGLE].rate / f[Q_BASE].rate,
                "user_side_ratio_batch": f[Q_BASE].user_ns / f[Q_BATCH].user_ns,
                "user_side_ratio_single": f[Q_BASE].user_ns / f[Q_SINGLE].user_ns,
            },
        })
    };
    let v = Verdict::of(rows);
    json!({
        "rows": rows.iter().map(row).collect::<Vec<_>>(),
        "targets": {
            "dispatch_batch64_ratio": {
                "want": DISPATCH_TARGET, "got": v.dispatch64, "met": v.dispatch64 >= DISPATCH_TARGET,
            },
            "dequeue_batch64_ratio": {
                "want": DEQUEUE_TARGET, "got": v.dequeue64, "met": v.dequeue64 >= DEQUEUE_TARGET,
            },
            "dequeue_worst_ratio": {
                "want": DEQUEUE_TARGET, "got": v.dequeue_worst, "met": v.dequeue_worst >= DEQUEUE_TARGET,
            },
        },
    })
}

fn write_json(modes: &[(Wakeup, Rows)], ch: &Channel) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut by_mode = serde_json::Map::new();
    for (mode, rows) in modes {
        by_mode.insert(mode_key(*mode).into(), rows_json(rows));
    }
    let stats = ch.stats().ok();
    let doc = json!({
        "bench": "scx-userland-benches/channel",
        "kernel": kernel,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "method": format!(
            "fixed-time loop: per batch size, {ROUNDS} rounds of {} ms per path, paths \
             interleaved; one iteration moves N records, with one BPF_PROG_TEST_RUN; the \
             user/BPF split comes from a separate instrumented loop of {} ms per path; \
             ratio = ours records/s / libbpf-rs records/s",
            SLICE.as_millis(),
            SPLIT_TIME.as_millis()
        ),
        "modes": by_mode,
        "bpf_counters": stats.map(|s| json!({
            "dispatch_records": s.dispatch_records,
            "dispatch_ok": s.dispatch_ok,
            "dispatch_bounced": s.dispatch_bounced,
            "dispatch_unknown": s.dispatch_unknown,
            "dispatch_read_errors": s.dispatch_read_errors,
            "drain_errors": s.drain_errors,
            "queued_records": s.queued_records,
            "queued_full": s.queued_full,
        })),
    });
    let dir = target_dir().join("bench");
    let file = dir.join("channel.json");
    let text = serde_json::to_string_pretty(&doc).expect("JSON") + "\n";
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, text)) {
        Ok(()) => println!("\nwrote {}", file.display()),
        Err(e) => eprintln!("could not write {}: {e}", file.display()),
    }
}

fn mode_key(mode: Wakeup) -> &'static str {
    match mode {
        Wakeup::Never => "no_wakeup",
        Wakeup::Deployed => "as_deployed",
    }
}

fn mode_title(mode: Wakeup) -> &'static str {
    match mode {
        Wakeup::Never => "the channel alone (BPF_RB_NO_WAKEUP on both BPF ends)",
        Wakeup::Deployed => {
            "as deployed (ours: main.bpf.c's flags, no wake-up while user space is awake; \
             libbpf-rs: flags 0, one irq_work per run)"
        }
    }
}

fn fail(e: Error) -> ! {
    eprintln!("channel bench: setup failed: {e}");
    std::process::exit(1);
}

fn main() {
    let ch = match Channel::open() {
        Ok(ch) => ch,
        Err(Error::Unavailable(why)) => {
            println!("channel bench skipped: {why}");
            return;
        }
        Err(e) => fail(e),
    };
    let mut ends = Ends::new(ch).unwrap_or_else(|e| fail(e));
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    let ratios_only = std::env::var("SCX_BENCH_RATIOS_ONLY").is_ok_and(|v| v == "1");

    if !ratios_only {
        ends.ch
            .set_wakeup(Wakeup::Never)
            .unwrap_or_else(|e| fail(e));
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2))
            .sample_size(30)
            .nresamples(20_000)
            .configure_from_args();
        criterion_groups(&mut c, &mut ends);
        c.final_summary();
    }
    if quick {
        return;
    }

    let mut modes = Vec::new();
    for mode in [Wakeup::Never, Wakeup::Deployed] {
        ends.ch.set_wakeup(mode).unwrap_or_else(|e| fail(e));
        let rows = measure(&mut ends);
        print_rows(mode_title(mode), &rows);
        modes.push((mode, rows));
    }
    write_json(&modes, &ends.ch);
}
