//! `vm-bench --ab REV_A,REV_B`: two builds of scx-fifo in one boot.
//!
//! Each revision is exported with `git archive` into `target/ab/src/<commit>`, built there in
//! release (`cargo build --release --locked -p scx-fifo`, one shared build directory
//! `target/ab/build`), and its binary kept as `target/ab/<commit>/scx-fifo`; a commit whose
//! binary exists is not built again. In the guest they are the schedulers `scx-fifo-a` and
//! `scx-fifo-b`, interleaved with `default`.
//!
//! The verdict on a metric ([`verdict`]) is given only when the difference exceeds the
//! round-to-round spread: the ranges (min..max over the measured rounds) of A and B do not
//! overlap, and the medians differ by more than the wider of the two ranges.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::upstream::log_tail;
use super::{fmt_ratio, fmt_value, median, ratio, render_grid, Better, Sample, ROWS};

/// The guest names of the two builds.
pub const NAMES: [&str; 2] = ["scx-fifo-a", "scx-fifo-b"];

/// One side of the comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Side {
    /// `A` or `B`.
    pub label: &'static str,
    /// The guest program name ([`NAMES`]).
    pub name: &'static str,
    /// The revision as given.
    pub rev: String,
    /// Its full commit hash.
    pub commit: String,
    /// The built binary on the host.
    pub binary: PathBuf,
}

impl Side {
    pub fn describe(&self) -> String {
        format!(
            "{} = {} = {} ({})",
            self.label,
            self.name,
            self.rev,
            &self.commit[..12.min(self.commit.len())]
        )
    }
}

/// `REV_A,REV_B` → the two revisions.
pub fn parse_spec(spec: &str) -> Result<[String; 2]> {
    let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
    match parts[..] {
        [a, b] if !a.is_empty() && !b.is_empty() => Ok([a.to_string(), b.to_string()]),
        _ => bail!("--ab: {spec:?} is not two git revisions REV_A,REV_B (e.g. HEAD~1,HEAD)"),
    }
}

fn git(root: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(root).stdin(Stdio::null());
    c
}

/// The full commit hash of a revision.
fn resolve(root: &Path, rev: &str) -> Result<String> {
    if rev.starts_with('-') {
        bail!("--ab: {rev:?} is not a git revision");
    }
    let out = git(root)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("{rev}^{{commit}}"))
        .output()
        .context("cannot run git")?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || hash.len() < 40 {
        bail!("--ab: {rev:?} is not a commit of this repository (git rev-parse failed)");
    }
    Ok(hash)
}

/// `target/ab`.
fn dir() -> PathBuf {
    crate::workspace_root().join("target").join("ab")
}

/// Resolve both revisions and build what is not cached.
pub fn prepare(spec: &str) -> Result<[Side; 2]> {
    let revs = parse_spec(spec)?;
    let root = crate::workspace_root();
    // Both resolved before anything is built: a build takes minutes, and HEAD may move.
    let commits = [resolve(&root, &revs[0])?, resolve(&root, &revs[1])?];
    let mut sides = Vec::new();
    for (i, (rev, commit)) in revs.iter().zip(commits).enumerate() {
        let binary = dir().join(&commit).join("scx-fifo");
        if !binary.is_file() {
            build(&root, rev, &commit, &binary)?;
        }
        sides.push(Side {
            label: ["A", "B"][i],
            name: NAMES[i],
            rev: rev.clone(),
            commit,
            binary,
        });
    }
    if sides[0].commit == sides[1].commit {
        println!(
            "xtask: note: both revisions are commit {}: an A/A run (it shows the noise)",
            sides[0].commit
        );
    }
    let b = sides.pop().expect("two sides");
    let a = sides.pop().expect("two sides");
    Ok([a, b])
}

fn build(root: &Path, rev: &str, commit: &str, binary: &Path) -> Result<()> {
    let base = dir();
    let src = base.join("src").join(commit);
    let log = base.join(format!("{commit}.build.log"));
    if src.exists() {
        std::fs::remove_dir_all(&src)
            .with_context(|| format!("cannot remove {}", src.display()))?;
    }
    std::fs::create_dir_all(&src).with_context(|| format!("cannot create {}", src.display()))?;
    println!(
        "xtask: building scx-fifo at {rev} ({}) in release (once; log {}) …",
        &commit[..12],
        log.display()
    );
    let tar = base.join("src").join(format!("{commit}.tar"));
    let st = git(root)
        .args(["archive", "--format=tar", "-o"])
        .arg(&tar)
        .arg(commit)
        .status()
        .context("cannot run git archive")?;
    if !st.success() {
        bail!("git archive {commit} failed ({st})");
    }
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .status()
        .context("cannot run tar")?;
    let _ = std::fs::remove_file(&tar);
    if !st.success() {
        bail!("unpacking the export of {commit} failed ({st})");
    }
    let file =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = file.try_clone()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = base.join("build");
    let st = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "scx-fifo",
            "--bin",
            "scx-fifo",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&src)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .context("cannot run cargo build")?;
    if !st.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail = log_tail(&text, 40);
        bail!(
            "building scx-fifo at {rev} ({commit}) failed ({st}); the end of its log:\n{tail}\
             (full log in {}; the export is in {})",
            log.display(),
            src.display()
        );
    }
    let built = target.join("release").join("scx-fifo");
    let out_dir = binary.parent().expect("binary has a directory");
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let tmp = out_dir.join("scx-fifo.tmp");
    std::fs::copy(&built, &tmp)
        .with_context(|| format!("cannot copy {} to {}", built.display(), tmp.display()))?;
    std::fs::rename(&tmp, binary)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), binary.display()))?;
    let _ = std::fs::remove_dir_all(&src);
    Ok(())
}

/// Whether a build's `--help` offers `--stats-interval` (older revisions may not).
pub fn has_stats_interval(binary: &Path) -> bool {
    Command::new(binary)
        .arg("--help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--stats-interval"))
}

// ---------------------------------------------------------------------------------------------
// Verdicts
// ---------------------------------------------------------------------------------------------

/// What the measured rounds say about A against B on one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    ABetter,
    BBetter,
    /// The difference does not exceed the round-to-round spread.
    WithinNoise,
    /// A metric with no good direction (shown for information).
    NoDirection,
    /// Fewer than 2 measured rounds on a side.
    TooFewRounds,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::ABetter => "A better",
            Verdict::BBetter => "B better",
            Verdict::WithinNoise => "within noise",
            Verdict::NoDirection => "-",
            Verdict::TooFewRounds => "too few rounds",
        }
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// The verdict on one metric from A's and B's measured rounds: a side is better only if
/// the two ranges do not overlap and the medians differ by more than the wider range.
pub fn verdict(a: &[f64], b: &[f64], better: Better) -> Verdict {
    if a.len() < 2 || b.len() < 2 {
        return Verdict::TooFewRounds;
    }
    if better == Better::Neither {
        return Verdict::NoDirection;
    }
    let (alo, ahi) = range(a);
    let (blo, bhi) = range(b);
    let spread = (ahi - alo).max(bhi - blo);
    let (ma, mb) = (
        median(&mut a.to_vec()).unwrap_or(f64::NAN),
        median(&mut b.to_vec()).unwrap_or(f64::NAN),
    );
    let apart = ahi < blo || bhi < alo;
    if !apart || (ma - mb).abs() <= spread {
        return Verdict::WithinNoise;
    }
    let a_lower = ma < mb;
    match (better, a_lower) {
        (Better::Lower, true) | (Better::Higher, false) => Verdict::ABetter,
        _ => Verdict::BBetter,
    }
}

/// The measured values of one (workload, metric, scheduler).
fn values(samples: &[Sample], w: &str, metric: &str, sched: &str) -> Vec<f64> {
    samples
        .iter()
        .filter(|s| !s.warmup && s.workload == w && s.scheduler == sched)
        .filter_map(|s| s.metrics.get(metric).copied())
        .collect()
}

/// One row of the A/B table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub workload: &'static str,
    pub metric: &'static str,
    pub better: Better,
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    pub verdict: Verdict,
}

/// The A/B rows with data on both sides, in table order.
pub fn rows(samples: &[Sample]) -> Vec<Row> {
    ROWS.iter()
        .filter_map(|&(w, metric, better)| {
            let a = values(samples, w, metric, NAMES[0]);
            let b = values(samples, w, metric, NAMES[1]);
            if a.is_empty() || b.is_empty() {
                return None;
            }
            let verdict = verdict(&a, &b, better);
            Some(Row {
                workload: w,
                metric,
                better,
                a,
                b,
                verdict,
            })
        })
        .collect()
}

fn range_text(v: &[f64]) -> String {
    let (lo, hi) = range(v);
    format!("{}..{}", fmt_value(lo), fmt_value(hi))
}

/// The A/B table: medians, B/A, each side's range and the verdict.
pub fn render(rows: &[Row]) -> String {
    let head = [
        "workload/metric",
        "better",
        "A median",
        "B median",
        "B/A",
        "A range",
        "B range",
        "verdict",
    ]
    .map(String::from);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let ma = median(&mut r.a.clone()).unwrap_or(f64::NAN);
            let mb = median(&mut r.b.clone()).unwrap_or(f64::NAN);
            vec![
                format!("{}/{}", r.workload, r.metric),
                r.better.word().to_string(),
                fmt_value(ma),
                fmt_value(mb),
                fmt_ratio(ratio(mb, ma)),
                range_text(&r.a),
                range_text(&r.b),
                r.verdict.word().to_string(),
            ]
        })
        .collect();
    render_grid(&head, &cells, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn verdicts() {
        use Better::*;
        // Apart, and the medians differ by more than either range.
        assert_eq!(
            verdict(&[10.0, 11.0, 12.0], &[14.0, 15.0, 16.0], Lower),
            Verdict::ABetter
        );
        assert_eq!(
            verdict(&[10.0, 11.0, 12.0], &[14.0, 15.0, 16.0], Higher),
            Verdict::BBetter
        );
        assert_eq!(
            verdict(&[20.0, 21.0, 22.0], &[10.0, 11.0, 12.0], Lower),
            Verdict::BBetter
        );
        // Overlapping ranges: noise, however far apart the medians.
        assert_eq!(
            verdict(&[10.0, 10.0, 30.0], &[29.0, 31.0, 32.0], Lower),
            Verdict::WithinNoise
        );
        // Apart, but a wide round-to-round spread (10..20) exceeds the gap of the medians.
        assert_eq!(
            verdict(&[10.0, 15.0, 20.0], &[21.0, 21.0, 22.0], Lower),
            Verdict::WithinNoise
        );
        // Identical builds.
        assert_eq!(
            verdict(&[5.0, 5.0, 5.0], &[5.0, 5.0, 5.0], Lower),
            Verdict::WithinNoise
        );
        // Equal constant rounds on each side, different: apart with zero spread.
        assert_eq!(verdict(&[5.0, 5.0], &[6.0, 6.0], Higher), Verdict::BBetter);
        assert_eq!(
            verdict(&[1.0, 2.0], &[8.0, 9.0], Neither),
            Verdict::NoDirection
        );
        assert_eq!(verdict(&[1.0], &[8.0, 9.0], Lower), Verdict::TooFewRounds);
        assert_eq!(Verdict::WithinNoise.word(), "within noise");
    }

    fn sample(round: u64, warmup: bool, sched: &str, v: f64) -> Sample {
        Sample {
            round,
            warmup,
            workload: "hackbench".into(),
            scheduler: sched.into(),
            metrics: BTreeMap::from([("time_s".to_string(), v)]),
        }
    }

    #[test]
    fn table_from_samples() {
        let s = vec![
            sample(1, true, NAMES[0], 100.0), // warm-up: left out
            sample(1, false, NAMES[0], 1.0),
            sample(1, false, NAMES[1], 2.0),
            sample(2, false, NAMES[0], 1.1),
            sample(2, false, NAMES[1], 2.2),
            sample(3, false, NAMES[0], 1.2),
            sample(3, false, NAMES[1], 2.1),
            sample(3, false, "default", 9.0),
        ];
        let r = rows(&s);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].a, [1.0, 1.1, 1.2]);
        assert_eq!(r[0].verdict, Verdict::ABetter);
        let lines = super::super::tests::squash_lines(&render(&r));
        assert_eq!(
            lines[0],
            "workload/metric better A median B median B/A A range B range verdict"
        );
        assert_eq!(
            lines[1],
            "hackbench/time_s lower 1.10 2.10 x1.91 1.00..1.20 2.00..2.20 A better"
        );
    }

    #[test]
    fn specs() {
        assert_eq!(parse_spec("HEAD~1, HEAD").unwrap(), ["HEAD~1", "HEAD"]);
        assert!(parse_spec("HEAD").is_err());
        assert!(parse_spec("a,b,c").is_err());
        assert!(parse_spec(",HEAD").is_err());
        assert!(resolve(Path::new("/nonexistent"), "-x").is_err());
    }
}
