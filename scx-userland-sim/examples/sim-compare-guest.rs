//! `sim-compare-guest`: the guest side of `cargo xtask sim-compare`. Inside a sched_ext VM,
//! for every round, scenario and scheduler in turn (interleaved), it starts the scheduler,
//! waits for `/sys/kernel/sched_ext/state` to read `enabled`, runs the scenario for real with
//! `scx-sim-real`, checks the scheduler is still attached, stops it with SIGINT and waits
//! for its exit and for `disabled`.
//!
//! ```text
//! sim-compare-guest --rounds 3 \
//!     --scheduler 'scx-fifo=/bin/scx-fifo --stats-interval 0' --scheduler vruntime=/bin/vruntime \
//!     --scenario '{"name":"pingpong",…}' --scenario '{…}'
//! ```
//!
//! Prints one `simcmp: {json}` line per event, each with a single write:
//! `{"type":"sample","round":R,"scenario":S,"scheduler":N,"result":{"groups":[…]}}` (of each
//! group of the `SimResult`: name, wakeups, bursts, cpu_share, wake_wait p50/p99),
//! `{"type":"error","round":R,"scenario":S,"scheduler":N,"message":M}` and at the end
//! `{"type":"done","runs":N,"errors":E}`. Exits non-zero if any run failed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use scx_userland_sim::{Scenario, SimResult};
use serde_json::json;

const STATE: &str = "/sys/kernel/sched_ext/state";
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const DETACH_TIMEOUT: Duration = Duration::from_secs(30);
const USAGE: &str = "usage: sim-compare-guest [--rounds N] [--real PATH] \
    --scheduler 'NAME=PROGRAM [ARG…]'… --scenario JSON…";

struct Options {
    rounds: u32,
    real: PathBuf,
    schedulers: Vec<(String, Vec<String>)>,
    scenarios: Vec<Scenario>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        rounds: 3,
        real: PathBuf::from("/bin/scx-sim-real"),
        schedulers: Vec::new(),
        scenarios: Vec::new(),
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rounds" => {
                o.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?;
            }
            "--real" => o.real = PathBuf::from(value()?),
            "--scheduler" => {
                let v = value()?;
                let (name, cmd) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--scheduler {v:?} is not NAME=PROGRAM [ARG…]"))?;
                let argv: Vec<String> = cmd.split_whitespace().map(String::from).collect();
                if name.is_empty() || argv.is_empty() {
                    return Err(format!("--scheduler {v:?} is not NAME=PROGRAM [ARG…]"));
                }
                o.schedulers.push((name.to_string(), argv));
            }
            "--scenario" => {
                let s = Scenario::from_json(&value()?).map_err(|e| format!("--scenario: {e}"))?;
                o.scenarios.push(s);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.rounds == 0 || o.schedulers.is_empty() || o.scenarios.is_empty() {
        return Err(format!(
            "need --rounds >= 1, a --scheduler and a --scenario\n{USAGE}"
        ));
    }
    Ok(o)
}

/// One line on the console, with a single write(2).
fn emit(v: &serde_json::Value) {
    let line = format!("simcmp: {v}\n");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

fn state() -> String {
    std::fs::read_to_string(STATE)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}

fn wait_state(want: &str, timeout: Duration) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        let s = state();
        if s == want {
            return Ok(());
        }
        if t0.elapsed() >= timeout {
            return Err(format!(
                "sched_ext state is {s:?}, not {want:?}, after {} s",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn describe(st: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => st.to_string(),
    }
}

/// The last lines of a scheduler's log, for an error message.
fn gist(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

/// A child killed (SIGKILL) and reaped if it is still running when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Guard {
    fn wait_for(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, String> {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.0.try_wait().map_err(|e| e.to_string())? {
                return Ok(Some(st));
            }
            if t0.elapsed() >= timeout {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Run `scenario_file` for real under the scheduler `argv`; the groups' figures of the
/// result (name, wakeups, bursts, cpu_share, wake_wait p50/p99).
fn one_run(
    o: &Options,
    name: &str,
    argv: &[String],
    scenario_file: &Path,
    dur_ms: u64,
) -> Result<serde_json::Value, String> {
    wait_state("disabled", Duration::from_secs(10))
        .map_err(|e| format!("before starting {name}: {e}"))?;
    let log = PathBuf::from(format!("/tmp/sim-compare-{name}.log"));
    let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
    let mut sched = Guard(child);
    let t0 = Instant::now();
    while state() != "enabled" {
        if let Some(st) = sched.0.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "{name} exited ({}) before sched_ext became enabled: {}",
                describe(st),
                gist(&log)
            ));
        }
        if t0.elapsed() > ATTACH_TIMEOUT {
            return Err(format!("{name} did not attach within {ATTACH_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }

    let real = Command::new(&o.real)
        .arg(scenario_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", o.real.display()))?;
    let mut real = Guard(real);
    let limit = Duration::from_millis(dur_ms) + Duration::from_secs(60);
    let status = real.wait_for(limit)?;
    let output = {
        let mut stdout = String::new();
        let mut stderr = String::new();
        use std::io::Read;
        if let Some(mut s) = real.0.stdout.take() {
            let _ = s.read_to_string(&mut stdout);
        }
        if let Some(mut s) = real.0.stderr.take() {
            let _ = s.read_to_string(&mut stderr);
        }
        (stdout, stderr)
    };
    match status {
        None => return Err(format!("scx-sim-real did not finish within {limit:?}")),
        Some(st) if !st.success() => {
            return Err(format!(
                "scx-sim-real failed ({}): {}",
                describe(st),
                output.1.trim()
            ))
        }
        Some(_) => {}
    }
    // Still attached all along? (An ejected scheduler exits or leaves `enabled`.)
    if let Some(st) = sched.0.try_wait().map_err(|e| e.to_string())? {
        return Err(format!(
            "{name} exited ({}) during the run: {}",
            describe(st),
            gist(&log)
        ));
    }
    let s = state();
    if s != "enabled" {
        return Err(format!(
            "sched_ext state became {s:?} during the run (ejected?)"
        ));
    }
    // SAFETY: kill(2) on our own child, not yet reaped (try_wait above saw it running).
    if unsafe { libc::kill(sched.0.id() as libc::pid_t, libc::SIGINT) } != 0 {
        return Err(format!(
            "cannot SIGINT {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    match sched.wait_for(DETACH_TIMEOUT)? {
        None => return Err(format!("{name} ignored SIGINT for {DETACH_TIMEOUT:?}")),
        Some(st) if !st.success() => {
            return Err(format!(
                "{name} exited with {} after SIGINT: {}",
                describe(st),
                gist(&log)
            ))
        }
        Some(_) => {}
    }
    wait_state("disabled", Duration::from_secs(10))?;
    let result: SimResult = serde_json::from_str(&output.0)
        .map_err(|e| format!("scx-sim-real printed no result ({e})"))?;
    // What the comparison reads, to keep console lines short.
    let groups: Vec<_> = result
        .groups
        .iter()
        .map(|g| {
            json!({
                "name": g.name, "wakeups": g.wakeups, "bursts": g.bursts,
                "cpu_share": g.cpu_share,
                "wake_wait": {"p50_ns": g.wake_wait.p50_ns, "p99_ns": g.wake_wait.p99_ns},
            })
        })
        .collect();
    Ok(json!({ "groups": groups }))
}

fn main() -> ExitCode {
    let o = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sim-compare-guest: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut files = Vec::new();
    for (i, s) in o.scenarios.iter().enumerate() {
        let path = PathBuf::from(format!("/tmp/sim-compare-{i}.json"));
        if let Err(e) = std::fs::write(&path, s.to_json()) {
            eprintln!("sim-compare-guest: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        files.push(path);
    }
    let (mut runs, mut errors) = (0u32, 0u32);
    for round in 1..=o.rounds {
        for (s, file) in o.scenarios.iter().zip(&files) {
            for (name, argv) in &o.schedulers {
                runs += 1;
                match one_run(&o, name, argv, file, s.duration_ms) {
                    Ok(result) => emit(&json!({
                        "type": "sample", "round": round, "scenario": s.name,
                        "scheduler": name, "result": result,
                    })),
                    Err(message) => {
                        errors += 1;
                        emit(&json!({
                            "type": "error", "round": round, "scenario": s.name,
                            "scheduler": name, "message": message,
                        }));
                    }
                }
            }
        }
    }
    emit(&json!({"type": "done", "runs": runs, "errors": errors}));
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
