//! Boot QEMU, stream and judge the serial console.
//!
//! One boot = one `qemu-system-x86_64` process with the guest's serial console on its stdout.
//! Every console line is echoed live with a prefix (all of them with [`Echo::All`]; with
//! [`Echo::Quiet`] only the guest programs' output, the kernel's `sched_ext` lines and kernel
//! trouble), saved to a log file, and fed to a [`ConsoleParser`] that understands the `init:`
//! lines the guest's `/init` prints and spots kernel trouble (oopses, panics, warnings,
//! lockups, sched_ext stalls).
//!
//! QEMU never outlives the process that started it: it runs with `PR_SET_PDEATHSIG(SIGKILL)`,
//! it is killed when the whole-boot timeout expires, and Ctrl-C kills it too once the
//! program has called [`install_interrupt_handler`] (the library never installs signal
//! handlers by itself).
//!
//! Acceleration: TCG is `-accel tcg,thread=single -cpu max` (multi-threaded TCG breaks kernel
//! text patching in the guest, so it is never used). `--accel auto` picks KVM only when
//! `/dev/kvm` opens, answers `KVM_GET_API_VERSION`, the CPU has vmx or svm, and a probe boot
//! under KVM reaches `init: success` within 10 s; the verdict is cached in
//! `<cache>/kvm-probe`, keyed by the host kernel release and the QEMU version.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use crate::error::{bail, err, Context, Result};

/// The QEMU binary every boot uses.
pub const QEMU: &str = "qemu-system-x86_64";

/// Kernel command line every boot starts with. `panic=-1` reboots at once on a panic, and
/// `-no-reboot` turns that reboot into QEMU exiting, so a panic ends the boot immediately.
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=-1";

/// How long QEMU may take to exit after `/init` printed its verdict (it powers off).
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

/// How long the KVM probe boot may take before KVM is declared unusable.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Console lines kept for error messages.
pub const TAIL_LINES: usize = 50;

// ---------------------------------------------------------------------------------------------
// Options shared by the VM commands
// ---------------------------------------------------------------------------------------------

/// `--accel` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM if a probe boot under KVM works on this host (verdict cached), else TCG.
    Auto,
    /// Software emulation (`-accel tcg,thread=single -cpu max`); slow but works everywhere.
    Tcg,
    /// Hardware virtualisation (`-accel kvm -cpu host`); needs a working /dev/kvm.
    Kvm,
}

/// The accelerator a boot really uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// `-accel tcg,thread=single -cpu max`.
    Tcg,
    /// `-accel kvm -cpu host`.
    Kvm,
}

impl Accel {
    /// The QEMU arguments selecting this accelerator.
    pub fn qemu_args(self) -> &'static [&'static str] {
        match self {
            // thread=single: multi-threaded TCG panics the guest when it patches kernel text.
            Accel::Tcg => &["-accel", "tcg,thread=single", "-cpu", "max"],
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        })
    }
}

/// Virtual machine options shared by the VM commands (command-line flags, for
/// `#[command(flatten)]`).
#[derive(clap::Args, Clone, Debug)]
pub struct VmOptions {
    /// Number of virtual CPUs.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cpus: u32,

    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(256..))]
    pub memory: u32,

    /// Spread the virtual CPUs over N sockets (QEMU `-smp CPUS,sockets=N,cores=CPUS/N`), each
    /// socket its own NUMA node with an equal share of the memory. --cpus must be a multiple
    /// of N. 1: one socket, no NUMA.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub sockets: u32,

    /// Accelerator: `auto` uses KVM only if a probe boot with KVM works on this host (the
    /// verdict is cached in the cache's kvm-probe file); `tcg` is software emulation; `kvm`
    /// forces KVM.
    #[arg(long, value_enum, value_name = "ACCEL", default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,

    /// Save each boot's full serial console to a file in DIR (created if missing) instead of
    /// the cache's logs directory.
    #[arg(long, value_name = "DIR")]
    pub keep_logs: Option<PathBuf>,

    /// Show the whole console (firmware, kernel boot log, /init's protocol lines) and every
    /// step, not only the programs' output and the kernel's sched_ext lines.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

impl VmOptions {
    /// How boots with these options echo the console.
    pub fn echo(&self) -> Echo {
        if self.verbose {
            Echo::All
        } else {
            Echo::Quiet
        }
    }

    /// The console log file of a boot: in --keep-logs DIR as `<stem>.log`, else
    /// `<cache>/logs/<timestamp>-<stem>.log`.
    pub fn log_file(&self, stem: &str) -> PathBuf {
        match &self.keep_logs {
            Some(dir) => dir.join(format!("{stem}.log")),
            None => crate::cache::log_file(stem),
        }
    }
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            cpus: 2,
            memory: 1024,
            sockets: 1,
            accel: AccelChoice::Auto,
            keep_logs: None,
            verbose: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Console parsing (pure)
// ---------------------------------------------------------------------------------------------

/// What the guest's `/init` said about the kernel it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestKernel {
    /// `uname -r` in the guest.
    pub release: String,
    /// Online CPUs.
    pub cpus: Option<u32>,
    /// Contents of /sys/kernel/sched_ext/state, or `absent`.
    pub sched_ext: String,
}

/// The outcome of one test, as `/init` reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with status 0.
    Ok,
    /// Exited non-zero, or could not be started.
    Fail,
    /// Killed at its timeout.
    Timeout,
    /// Killed by a signal.
    Crash,
    /// A word this parser does not know (counts as a failure).
    Other(String),
}

impl Outcome {
    fn parse(word: &str) -> Outcome {
        match word {
            "ok" => Outcome::Ok,
            "fail" => Outcome::Fail,
            "timeout" => Outcome::Timeout,
            "crash" => Outcome::Crash,
            other => Outcome::Other(other.to_string()),
        }
    }

    /// Whether this is [`Outcome::Ok`].
    pub fn is_ok(&self) -> bool {
        *self == Outcome::Ok
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Fail => f.write_str("fail"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::Crash => f.write_str("crash"),
            Outcome::Other(w) => f.write_str(w),
        }
    }
}

/// One `init: result …` line.
#[derive(Clone, Debug, PartialEq)]
pub struct TestResult {
    /// The plan's test name.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Seconds the test ran, as the guest measured it.
    pub secs: f64,
    /// Free text after the seconds (exit status, signal, …); may be empty.
    pub detail: String,
}

/// `/init`'s final word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `init: success`.
    Success,
    /// `init: failure [why]`.
    Failure(String),
}

/// A console line that makes the boot a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Which pattern matched.
    pub pattern: &'static str,
    /// The whole line.
    pub line: String,
}

/// Patterns that mark kernel trouble: `(needle, also-needed)`.
const FAILURE_PATTERNS: &[(&str, Option<&str>)] = &[
    ("Oops", None),
    ("Kernel panic", None),
    ("BUG:", None),
    ("WARNING:", None),
    ("soft lockup", None),
    ("hung_task", None),
    ("runnable task stall", None),
    ("sched_ext: ", Some("disabled (runnable task stall)")),
];

/// The failure pattern a console line matches, if any. `init:` lines (which quote test output
/// and names) are never judged.
pub fn failure_pattern(line: &str) -> Option<&'static str> {
    if line.trim_start().starts_with("init:") {
        return None;
    }
    FAILURE_PATTERNS
        .iter()
        .find(|(needle, also)| line.contains(needle) && also.is_none_or(|a| line.contains(a)))
        .map(|(needle, _)| *needle)
}

/// Incremental parser for the serial console.
#[derive(Debug, Default)]
pub struct ConsoleParser {
    /// The `init: kernel` line.
    pub kernel: Option<GuestKernel>,
    /// Tests that printed `init: start` (in order).
    pub started: Vec<String>,
    /// The `init: result` lines.
    pub results: Vec<TestResult>,
    /// `(passed, failed)` from `init: summary`.
    pub summary: Option<(u32, u32)>,
    /// `init: success` / `init: failure`.
    pub verdict: Option<Verdict>,
    /// Lines matching a failure pattern.
    pub problems: Vec<Problem>,
    /// The kernel's `sched_ext:` lines.
    pub sched_ext: Vec<String>,
    /// `init:` lines this parser could not make sense of.
    pub unparsed: Vec<String>,
    /// The last [`TAIL_LINES`] console lines, for error messages.
    pub tail: VecDeque<String>,
}

/// What a fed line was, as far as the caller cares.
#[derive(Debug, PartialEq, Eq)]
pub enum LineKind {
    /// `init: success` / `init: failure …` — the guest is done.
    Verdict,
    /// Anything else.
    Other,
}

impl ConsoleParser {
    /// A parser that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one console line (without its newline).
    pub fn feed(&mut self, line: &str) -> LineKind {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());

        if let Some(pattern) = failure_pattern(line) {
            self.problems.push(Problem {
                pattern,
                line: line.to_string(),
            });
        }
        if is_kernel_line(line) && line.contains("sched_ext:") {
            self.sched_ext.push(line.trim().to_string());
        }
        let Some(rest) = line.trim_start().strip_prefix("init: ") else {
            return LineKind::Other;
        };
        let rest = rest.trim_end();
        let (word, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let parsed = match word {
            "kernel" => parse_kernel(args).map(|k| self.kernel = Some(k)),
            "start" if !args.is_empty() => {
                self.started.push(args.to_string());
                Some(())
            }
            "result" => parse_result(args).map(|r| self.results.push(r)),
            "summary" => parse_summary(args).map(|s| self.summary = Some(s)),
            "success" if args.is_empty() => {
                self.verdict = Some(Verdict::Success);
                return LineKind::Verdict;
            }
            "failure" => {
                self.verdict = Some(Verdict::Failure(args.trim().to_string()));
                return LineKind::Verdict;
            }
            _ => None,
        };
        if parsed.is_none() {
            self.unparsed.push(line.to_string());
        }
        LineKind::Other
    }
}

/// Whether a console line is a kernel log line (`[    1.234567] …`).
pub fn is_kernel_line(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix('[') else {
        return false;
    };
    let Some((stamp, _)) = rest.split_once(']') else {
        return false;
    };
    let stamp = stamp.trim();
    !stamp.is_empty()
        && stamp.matches('.').count() == 1
        && stamp.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Whether [`Echo::Quiet`] shows a console line: kernel trouble and the kernel's `sched_ext`
/// lines always; once `/init` runs (`init_started`), the programs' output and /init's
/// warnings, but not the other kernel lines nor /init's protocol lines.
pub fn shown_quietly(line: &str, init_started: bool) -> bool {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix("init: ") {
        return rest.starts_with("warning");
    }
    if failure_pattern(line).is_some() || (is_kernel_line(line) && line.contains("sched_ext")) {
        return true;
    }
    init_started && !is_kernel_line(line) && !t.is_empty()
}

fn parse_kernel(args: &str) -> Option<GuestKernel> {
    let mut words = args.split_whitespace();
    let release = words.next()?.to_string();
    let mut kernel = GuestKernel {
        release,
        cpus: None,
        sched_ext: "absent".to_string(),
    };
    for word in words {
        match word.split_once('=') {
            Some(("cpus", n)) => kernel.cpus = n.parse().ok(),
            Some(("sched_ext", s)) => kernel.sched_ext = s.to_string(),
            _ => {}
        }
    }
    Some(kernel)
}

fn parse_result(args: &str) -> Option<TestResult> {
    let mut parts = args.splitn(4, ' ');
    let name = parts.next().filter(|n| !n.is_empty())?.to_string();
    let outcome = Outcome::parse(parts.next()?);
    let secs = parts.next()?.trim_end_matches('s').parse().ok()?;
    let detail = parts.next().unwrap_or("").trim().to_string();
    Some(TestResult {
        name,
        outcome,
        secs,
        detail,
    })
}

fn parse_summary(args: &str) -> Option<(u32, u32)> {
    let (mut passed, mut failed) = (None, None);
    for word in args.split_whitespace() {
        match word.split_once('=') {
            Some(("passed", n)) => passed = n.parse().ok(),
            Some(("failed", n)) => failed = n.parse().ok(),
            _ => {}
        }
    }
    Some((passed?, failed?))
}

/// Make a raw console line printable: drop terminal escape sequences (SeaBIOS clears the
/// screen), carriage returns and other control characters.
pub fn sanitize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            // Escape sequences: CSI (`ESC [`, parameters, one final byte in @..~) is skipped
            // whole; other escapes are two characters long (ESC c, ESC 7, …).
            '\x1b' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.trim_end().to_string()
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C
// ---------------------------------------------------------------------------------------------

/// The running QEMU, for the interrupt handler.
static CHILD: Mutex<Option<u32>> = Mutex::new(None);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static HANDLER: Once = Once::new();

/// Install (once) the Ctrl-C / SIGTERM / SIGHUP handler: it kills the running QEMU, waits for
/// it, prints `interrupted: QEMU stopped` and exits with status 130. Programs call this
/// before booting; the library never installs it by itself.
pub fn install_interrupt_handler() -> Result<()> {
    let mut result = Ok(());
    HANDLER.call_once(|| {
        result = ctrlc::set_handler(|| {
            INTERRUPTED.store(true, Ordering::SeqCst);
            let child = CHILD.lock().unwrap_or_else(|e| e.into_inner()).take();
            match child {
                Some(pid) => {
                    // SAFETY: plain syscalls on a pid this process spawned and has not reaped
                    // (it is taken out of CHILD before the boot loop reaps it).
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGKILL);
                        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
                    }
                    restore_terminal();
                    eprintln!("interrupted: QEMU stopped, nothing left running");
                }
                None => eprintln!("interrupted"),
            }
            std::process::exit(130);
        })
        .map_err(|e| err!("could not install the Ctrl-C handler: {e}"));
    });
    result
}

/// If the interrupt handler is running, let it finish the process (it exits with 130).
fn park_if_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One boot
// ---------------------------------------------------------------------------------------------

/// Everything one boot needs.
#[derive(Clone, Debug)]
pub struct BootSpec {
    /// Shown in the console prefix, e.g. `7.3.4` gives `[7.3.4] `.
    pub label: String,
    /// The kernel.
    pub bzimage: PathBuf,
    /// The guest image (newc cpio).
    pub initrd: PathBuf,
    /// Appended to [`BASE_CMDLINE`].
    pub extra_cmdline: Vec<String>,
    /// Guest memory.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Sockets the CPUs are spread over, each socket a NUMA node with an equal share of the
    /// memory (the last one takes the remainder); 1 is QEMU's default shape, without NUMA.
    /// `cpus` should be a multiple of it (QEMU refuses the shape otherwise).
    pub sockets: u32,
    /// The accelerator.
    pub accel: Accel,
    /// Whole-boot timeout: QEMU is killed after this long.
    pub timeout: Duration,
    /// Which console lines to echo to stdout.
    pub echo: Echo,
    /// Save the full console here.
    pub log: Option<PathBuf>,
    /// Wire this process's stdin to the guest console and echo its output raw (for an
    /// interactive shell).
    pub interactive: bool,
}

/// Which console lines a boot echoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// None.
    None,
    /// The programs' output, the kernel's sched_ext lines and kernel trouble
    /// ([`shown_quietly`]).
    Quiet,
    /// Every line.
    All,
}

impl BootSpec {
    /// The kernel command line.
    pub fn cmdline(&self) -> String {
        let mut line = BASE_CMDLINE.to_string();
        for extra in &self.extra_cmdline {
            line.push(' ');
            line.push_str(extra);
        }
        line
    }

    /// The full QEMU argument list.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-kernel".into(),
            self.bzimage.display().to_string(),
            "-initrd".into(),
            self.initrd.display().to_string(),
            "-append".into(),
            self.cmdline(),
            "-nographic".into(),
            "-no-reboot".into(),
            "-nic".into(),
            "none".into(),
            "-m".into(),
            self.memory_mib.to_string(),
        ];
        args.extend(self.smp_args());
        args.extend(self.accel.qemu_args().iter().map(|s| s.to_string()));
        args
    }

    /// `-smp`, and with several sockets a NUMA node (with its memory) per socket.
    fn smp_args(&self) -> Vec<String> {
        if self.sockets <= 1 {
            return vec!["-smp".into(), self.cpus.to_string()];
        }
        let sockets = self.sockets;
        let cores = (self.cpus / sockets).max(1);
        let mut args = vec![
            "-smp".into(),
            format!("{},sockets={sockets},cores={cores},threads=1", self.cpus),
        ];
        let share = self.memory_mib / sockets;
        for node in 0..sockets {
            let mib = if node + 1 == sockets {
                self.memory_mib - share * (sockets - 1)
            } else {
                share
            };
            let first = node * cores;
            args.extend([
                "-object".into(),
                format!("memory-backend-ram,id=mem{node},size={mib}M"),
                "-numa".into(),
                format!(
                    "node,nodeid={node},cpus={first}-{},memdev=mem{node}",
                    first + cores - 1
                ),
            ]);
        }
        args
    }
}

/// What happened during one boot.
#[derive(Debug)]
pub struct BootReport {
    /// The accelerator used.
    pub accel: Accel,
    /// What the console said.
    pub console: ConsoleParser,
    /// The whole-boot timeout expired and QEMU was killed.
    pub timed_out: Option<Duration>,
    /// QEMU had to be killed because it did not exit after `/init`'s verdict.
    pub no_poweroff: bool,
    /// QEMU's exit status (None if it could not be collected).
    pub exit: Option<ExitStatus>,
    /// From spawning QEMU to the `init: success|failure` line.
    pub boot_to_result: Option<Duration>,
    /// From spawning QEMU to its exit.
    pub elapsed: Duration,
    /// What QEMU printed on stderr.
    pub qemu_stderr: Vec<String>,
    /// Where the full console went.
    pub log: Option<PathBuf>,
}

impl BootReport {
    /// Print the last [`TAIL_LINES`] console lines and where the full log is (after a
    /// failure).
    pub fn print_failure_context(&self) {
        if !self.console.tail.is_empty() {
            println!("--- last {} console lines ---", self.console.tail.len());
            for l in &self.console.tail {
                println!("{l}");
            }
            println!("---");
        }
        if let Some(log) = &self.log {
            println!("full console log: {}", log.display());
        }
    }

    /// Why this boot counts as a failure regardless of the test results (empty = it behaved).
    pub fn guest_failures(&self) -> Vec<String> {
        let mut why = Vec::new();
        if let Some(t) = self.timed_out {
            why.push(format!(
                "the boot timed out after {} s and QEMU was killed (raise --timeout if the \
                 tests are just slow){}",
                t.as_secs(),
                self.last_line_hint()
            ));
        }
        let any_not_ok = self.console.results.iter().any(|r| !r.outcome.is_ok());
        match &self.console.verdict {
            Some(Verdict::Success) if any_not_ok => why
                .push("the guest's /init reported success although a test was not ok".to_string()),
            Some(Verdict::Success) => {}
            // A plain `init: failure` is how /init says a test failed: not a guest failure
            // of its own, as long as some test really was not ok.
            Some(Verdict::Failure(reason)) if reason.is_empty() && any_not_ok => {}
            Some(Verdict::Failure(reason)) if reason.is_empty() => why
                .push("the guest's /init reported failure although every test was ok".to_string()),
            Some(Verdict::Failure(reason)) => {
                why.push(format!("the guest's /init reported failure: {reason}"))
            }
            None if self.timed_out.is_none() => why.push(self.no_verdict_message()),
            None => {}
        }
        for p in &self.console.problems {
            why.push(format!(
                "kernel trouble on the console ({}): {}",
                p.pattern, p.line
            ));
        }
        if self.no_poweroff {
            why.push(format!(
                "QEMU did not exit within {} s of /init's verdict (the guest did not power \
                 off) and was killed",
                POWEROFF_GRACE.as_secs()
            ));
        }
        if let Some((passed, failed)) = self.console.summary {
            let ok = self
                .console
                .results
                .iter()
                .filter(|r| r.outcome.is_ok())
                .count();
            let bad = self.console.results.len() - ok;
            if (passed as usize, failed as usize) != (ok, bad) {
                why.push(format!(
                    "/init's summary (passed={passed} failed={failed}) does not match its \
                     result lines ({ok} ok, {bad} not ok)"
                ));
            }
        }
        why
    }

    fn no_verdict_message(&self) -> String {
        let status = match self.exit {
            Some(s) => describe_exit(s),
            None => "QEMU exited".to_string(),
        };
        let panic = self
            .console
            .problems
            .iter()
            .find(|p| p.pattern == "Kernel panic")
            .map(|p| format!(" after a kernel panic ({})", p.line.trim()));
        let mut msg = match panic {
            Some(p) => format!("{status}{p} without /init printing init: success or failure"),
            None if self.console.tail.is_empty() && !self.qemu_stderr.is_empty() => format!(
                "{status} without any console output; QEMU said: {}",
                self.qemu_stderr.join(" / ")
            ),
            None => format!(
                "{status} without /init printing init: success or failure{}",
                self.last_line_hint()
            ),
        };
        if self.console.kernel.is_none() && !self.console.tail.is_empty() {
            msg.push_str(" (init never started: no `init: kernel` line)");
        }
        msg
    }

    fn last_line_hint(&self) -> String {
        match self
            .console
            .tail
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
        {
            Some(l) => format!("; last console line: {}", l.trim()),
            None => String::new(),
        }
    }
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(0), _) => "QEMU exited".to_string(),
        (Some(c), _) => format!("QEMU exited with status {c}"),
        (None, Some(s)) => format!("QEMU was killed by signal {s}"),
        _ => format!("QEMU exited ({status})"),
    }
}

enum Msg {
    Console(String),
    Stderr(String),
    Eof,
}

/// Interactive boots: echo the console's bytes as they come (a shell prompt has no newline)
/// once this is set, and still send whole lines to the parser.
fn pump_raw(mut reader: impl Read, tx: mpsc::Sender<Msg>, raw: Arc<AtomicBool>) {
    let mut buf = [0u8; 4096];
    let mut line = Vec::new();
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if raw.load(Ordering::Relaxed) {
                    let mut o = std::io::stdout().lock();
                    let _ = o.write_all(&buf[..n]);
                    let _ = o.flush();
                }
                for &b in &buf[..n] {
                    if b == b'\n' {
                        let l = sanitize(&String::from_utf8_lossy(&line));
                        line.clear();
                        if tx.send(Msg::Console(l)).is_err() {
                            return;
                        }
                    } else {
                        line.push(b);
                    }
                }
            }
        }
    }
    if !line.is_empty() {
        let _ = tx.send(Msg::Console(sanitize(&String::from_utf8_lossy(&line))));
    }
    let _ = tx.send(Msg::Eof);
}

/// The terminal settings of stdin before an interactive boot (QEMU makes it raw).
static SAVED_TERMIOS: Mutex<Option<libc::termios>> = Mutex::new(None);

fn save_terminal() {
    // SAFETY: tcgetattr fills a zeroed termios for fd 0; failure (not a tty) is fine.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) == 0 {
            *SAVED_TERMIOS.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        }
    }
}

fn restore_terminal() {
    let saved = SAVED_TERMIOS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(t) = saved {
        // SAFETY: tcsetattr on fd 0 with settings tcgetattr returned.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
    }
}

fn pump(reader: impl Read, tx: mpsc::Sender<Msg>, wrap: fn(String) -> Msg) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = sanitize(&String::from_utf8_lossy(&buf));
                if tx.send(wrap(line)).is_err() {
                    return;
                }
            }
        }
    }
    let _ = tx.send(Msg::Eof);
}

/// Spawn QEMU so it dies with this process and does not see the terminal's Ctrl-C (the
/// handler kills it instead). Interactive boots stay in the terminal's process group so QEMU
/// can read it (it puts the terminal in raw mode, so Ctrl-C goes to the guest).
fn spawn_qemu(spec: &BootSpec) -> Result<Child> {
    let mut cmd = Command::new(QEMU);
    cmd.args(spec.qemu_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if spec.interactive {
        cmd.stdin(Stdio::inherit());
    } else {
        cmd.stdin(Stdio::null()).process_group(0);
    }
    // SAFETY: getpid is async-signal-safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only makes async-signal-safe syscalls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(std::io::Error::other(
                    "the parent exited while starting qemu",
                ));
            }
            Ok(())
        });
    }
    cmd.spawn().with_context(|| {
        format!(
            "could not start {QEMU}; install it with `{}`",
            crate::tools::install_line(&[crate::tools::Tool::Qemu])
        )
    })
}

/// Boot once and judge the console. Errors only when QEMU cannot be started or the log cannot
/// be written; everything the guest does wrong is in the report.
pub fn boot(spec: &BootSpec) -> Result<BootReport> {
    let mut log = match &spec.log {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("could not create the log directory {}", dir.display())
                })?;
            }
            let mut f = File::create(path)
                .with_context(|| format!("could not create the console log {}", path.display()))?;
            writeln!(f, "# {QEMU} {}", spec.qemu_args().join(" "))?;
            Some(f)
        }
        None => None,
    };

    if spec.interactive {
        save_terminal();
    }
    let start = Instant::now();
    let mut child = {
        // Hold the lock across spawn so the Ctrl-C handler never misses this child.
        let mut slot = CHILD.lock().unwrap_or_else(|e| e.into_inner());
        let child = spawn_qemu(spec)?;
        *slot = Some(child.id());
        child
    };

    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let tx2 = tx.clone();
    let raw = Arc::new(AtomicBool::new(false));
    if spec.interactive {
        let raw = raw.clone();
        std::thread::spawn(move || pump_raw(stdout, tx, raw));
    } else {
        std::thread::spawn(move || pump(stdout, tx, Msg::Console));
    }
    std::thread::spawn(move || pump(stderr, tx2, Msg::Stderr));

    let prefix = if spec.label.is_empty() {
        String::new()
    } else {
        format!("[{}] ", spec.label)
    };
    let mut console = ConsoleParser::new();
    let mut qemu_stderr = Vec::new();
    let mut boot_to_result = None;
    let mut timed_out = None;
    let mut no_poweroff = false;
    let mut open_streams = 2;
    let deadline = start + spec.timeout;
    let out = std::io::stdout();

    while open_streams > 0 {
        let now = Instant::now();
        let limit = match boot_to_result {
            Some(t) => (start + t + POWEROFF_GRACE).min(deadline),
            None => deadline,
        };
        if now >= limit {
            if boot_to_result.is_some() {
                no_poweroff = true;
            } else {
                timed_out = Some(spec.timeout);
            }
            break;
        }
        match rx.recv_timeout(limit - now) {
            Ok(Msg::Console(line)) => {
                let show = match spec.echo {
                    Echo::None => false,
                    Echo::All => true,
                    Echo::Quiet => shown_quietly(&line, console.kernel.is_some()),
                };
                if show && !raw.load(Ordering::Relaxed) {
                    let mut o = out.lock();
                    let _ = writeln!(o, "{prefix}{line}");
                    let _ = o.flush();
                }
                if let Some(f) = log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if console.feed(&line) == LineKind::Verdict && boot_to_result.is_none() {
                    boot_to_result = Some(start.elapsed());
                }
                if spec.interactive && console.kernel.is_some() {
                    raw.store(true, Ordering::Relaxed);
                }
            }
            Ok(Msg::Stderr(line)) => {
                if !line.is_empty() {
                    if spec.echo != Echo::None {
                        let mut o = out.lock();
                        let _ = writeln!(o, "{prefix}qemu: {line}");
                        let _ = o.flush();
                    }
                    if let Some(f) = log.as_mut() {
                        let _ = writeln!(f, "qemu: {line}");
                    }
                    qemu_stderr.push(line);
                }
            }
            Ok(Msg::Eof) => open_streams -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        park_if_interrupted();
    }
    park_if_interrupted();

    // Take the child out of the handler's reach, then make sure it is gone and reaped.
    let pid = CHILD.lock().unwrap_or_else(|e| e.into_inner()).take();
    if pid.is_none() {
        // The interrupt handler took it and is about to exit the process.
        park_if_interrupted();
    }
    if timed_out.is_some() || no_poweroff {
        let _ = child.kill();
    }
    let exit = child.wait().ok();
    let elapsed = start.elapsed();
    if spec.interactive {
        restore_terminal();
    }

    if let Some(f) = log.as_mut() {
        if let Some(t) = timed_out {
            let _ = writeln!(f, "# timed out after {} s, qemu killed", t.as_secs());
        }
        let _ = f.flush();
    }
    if let Some(t) = timed_out {
        println!(
            "{prefix}boot timed out after {} s; qemu killed",
            t.as_secs()
        );
    }

    Ok(BootReport {
        accel: spec.accel,
        console,
        timed_out,
        no_poweroff,
        exit,
        boot_to_result,
        elapsed,
        qemu_stderr,
        log: spec.log.clone(),
    })
}

// ---------------------------------------------------------------------------------------------
// Tool check and accelerator choice
// ---------------------------------------------------------------------------------------------

/// The first line of `qemu-system-x86_64 --version`, or an error telling how to install it.
pub fn qemu_version() -> Result<String> {
    let out = Command::new(QEMU)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "{QEMU} is not installed; install it with `{}`",
                crate::tools::install_line(&[crate::tools::Tool::Qemu])
            )
        })?;
    if !out.status.success() {
        bail!(
            "`{QEMU} --version` failed ({}); reinstall it (Debian package qemu-system-x86)",
            out.status
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

fn host_kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// `KVM_GET_API_VERSION` (`_IO(KVMIO, 0x00)`).
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
/// The only KVM API version there is.
const KVM_API_VERSION: libc::c_int = 12;

/// Whether `/proc/cpuinfo`'s flags have hardware virtualisation (vmx or svm).
pub fn cpuinfo_has_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|w| w == "vmx" || w == "svm"))
}

/// What can be checked about KVM without booting: /dev/kvm opens read-write and answers
/// `KVM_GET_API_VERSION` with 12, and the CPU has vmx or svm.
fn kvm_device_usable() -> std::result::Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm is not usable: {e}"))?;
    // SAFETY: an ioctl without arguments on a descriptor we own.
    let v = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if v != KVM_API_VERSION {
        return Err(format!(
            "/dev/kvm answered KVM_GET_API_VERSION with {v}, not {KVM_API_VERSION}"
        ));
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if !cpuinfo_has_virt(&cpuinfo) {
        return Err("the CPU flags in /proc/cpuinfo have neither vmx nor svm".to_string());
    }
    Ok(())
}

/// A cached KVM probe verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeVerdict {
    /// [`probe_key`] of the host it was measured on.
    pub key: String,
    /// Whether the probe boot worked.
    pub kvm_works: bool,
    /// What happened.
    pub detail: String,
}

impl ProbeVerdict {
    /// The cache file's text.
    pub fn render(&self) -> String {
        format!(
            "key={}\nkvm={}\ndetail={}\n",
            self.key,
            if self.kvm_works { "works" } else { "broken" },
            self.detail
        )
    }

    /// Parse [`render`](Self::render)'s text.
    pub fn parse(text: &str) -> Option<ProbeVerdict> {
        let (mut key, mut kvm, mut detail) = (None, None, String::new());
        for line in text.lines() {
            match line.split_once('=') {
                Some(("key", v)) => key = Some(v.to_string()),
                Some(("kvm", "works")) => kvm = Some(true),
                Some(("kvm", "broken")) => kvm = Some(false),
                Some(("detail", v)) => detail = v.to_string(),
                _ => {}
            }
        }
        Some(ProbeVerdict {
            key: key?,
            kvm_works: kvm?,
            detail,
        })
    }
}

/// The cache key: KVM behaviour depends on the host kernel and the QEMU build.
pub fn probe_key(host_release: &str, qemu_version: &str) -> String {
    format!("host {host_release} / {qemu_version}")
}

/// What a probe boot needs: a kernel and an image whose `/init` reaches `init: success` quickly.
pub struct ProbeImage {
    /// The kernel.
    pub bzimage: PathBuf,
    /// An image whose plan is empty.
    pub initrd: PathBuf,
}

/// Resolve `--accel`. `make_probe` is called only when a probe boot is really needed.
pub fn resolve_accel(
    choice: AccelChoice,
    make_probe: impl FnOnce() -> Result<ProbeImage>,
) -> Result<Accel> {
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Kvm => {
            kvm_device_usable()
                .map_err(|e| err!("--accel kvm: {e}; use --accel tcg (or auto) instead"))?;
            Ok(Accel::Kvm)
        }
        AccelChoice::Auto => {
            if let Err(e) = kvm_device_usable() {
                if crate::cache::verbose() {
                    println!("accel tcg ({e})");
                }
                return Ok(Accel::Tcg);
            }
            let key = probe_key(&host_kernel_release(), &qemu_version()?);
            let cache = crate::cache::dir().join("kvm-probe");
            if let Some(v) = std::fs::read_to_string(&cache)
                .ok()
                .and_then(|t| ProbeVerdict::parse(&t))
                .filter(|v| v.key == key)
            {
                let accel = if v.kvm_works { Accel::Kvm } else { Accel::Tcg };
                if crate::cache::verbose() {
                    println!(
                        "accel {accel} (cached KVM probe verdict: {}; details in {}, delete it \
                         to probe again)",
                        if v.kvm_works { "works" } else { "broken" },
                        cache.display()
                    );
                }
                return Ok(accel);
            }
            let probe = make_probe()?;
            println!(
                "probing KVM with a quick boot (at most {} s)…",
                KVM_PROBE_TIMEOUT.as_secs()
            );
            let verdict = probe_kvm(&probe, key)?;
            let dir = crate::cache::dir();
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("could not create {}", dir.display()))?;
            std::fs::write(&cache, verdict.render()).with_context(|| {
                format!("could not write the KVM probe cache {}", cache.display())
            })?;
            let accel = if verdict.kvm_works {
                Accel::Kvm
            } else {
                Accel::Tcg
            };
            println!(
                "accel {accel} (KVM probe: {}; cached in {})",
                if verdict.kvm_works {
                    "works".to_string()
                } else {
                    format!("broken: {}", verdict.detail)
                },
                cache.display()
            );
            Ok(accel)
        }
    }
}

fn probe_kvm(probe: &ProbeImage, key: String) -> Result<ProbeVerdict> {
    let spec = BootSpec {
        label: "kvm-probe".to_string(),
        bzimage: probe.bzimage.clone(),
        initrd: probe.initrd.clone(),
        extra_cmdline: Vec::new(),
        memory_mib: 512,
        cpus: 1,
        sockets: 1,
        accel: Accel::Kvm,
        timeout: KVM_PROBE_TIMEOUT,
        echo: Echo::None,
        log: Some(crate::cache::dir().join("kvm-probe.log")),
        interactive: false,
    };
    let report = boot(&spec)?;
    let problems = report.guest_failures();
    let kvm_works = report.console.verdict == Some(Verdict::Success) && problems.is_empty();
    let detail = if kvm_works {
        format!(
            "booted to init: success in {:.1} s",
            report.elapsed.as_secs_f64()
        )
    } else if let Some(first) = problems.first() {
        first.clone()
    } else {
        "the probe boot did not succeed".to_string()
    };
    Ok(ProbeVerdict {
        key,
        kvm_works,
        detail: detail.replace('\n', " "),
    })
}

/// The log path for one boot under `--keep-logs DIR`.
pub fn log_path(keep_logs: Option<&Path>, file_stem: &str) -> Option<PathBuf> {
    keep_logs.map(|dir| dir.join(format!("{file_stem}.log")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_run() {
        let mut p = ConsoleParser::new();
        let lines = [
            "[    0.000000] Linux version 7.3.4+deb13-amd64",
            "init: kernel 7.3.4+deb13-amd64 cpus=2 sched_ext=disabled",
            "init: start harness::btf_vmlinux_present",
            "init: result harness::btf_vmlinux_present ok 0.02 ",
            "init: start harness::deliberate_failure",
            "init: result harness::deliberate_failure fail 0.10 exit status 101",
            "init: summary passed=1 failed=1",
        ];
        for l in lines {
            assert_eq!(p.feed(l), LineKind::Other, "{l}");
        }
        assert_eq!(p.feed("init: failure 1 test failed"), LineKind::Verdict);
        assert_eq!(
            p.kernel,
            Some(GuestKernel {
                release: "7.3.4+deb13-amd64".into(),
                cpus: Some(2),
                sched_ext: "disabled".into()
            })
        );
        assert_eq!(p.started.len(), 2);
        assert_eq!(p.results.len(), 2);
        assert_eq!(p.results[0].outcome, Outcome::Ok);
        assert_eq!(p.results[0].detail, "");
        assert_eq!(p.results[1].outcome, Outcome::Fail);
        assert!((p.results[1].secs - 0.10).abs() < 1e-9);
        assert_eq!(p.results[1].detail, "exit status 101");
        assert_eq!(p.summary, Some((1, 1)));
        assert_eq!(p.verdict, Some(Verdict::Failure("1 test failed".into())));
        assert!(p.problems.is_empty());
        assert!(p.unparsed.is_empty());
    }

    #[test]
    fn verdict_variants() {
        let mut p = ConsoleParser::new();
        assert_eq!(p.feed("init: success"), LineKind::Verdict);
        assert_eq!(p.verdict, Some(Verdict::Success));
        let mut p = ConsoleParser::new();
        assert_eq!(p.feed("init: failure"), LineKind::Verdict);
        assert_eq!(p.verdict, Some(Verdict::Failure(String::new())));
        // Not a verdict: text mentioning init elsewhere in the line.
        let mut p = ConsoleParser::new();
        assert_eq!(
            p.feed("[    1.0] Run /init as init process"),
            LineKind::Other
        );
        assert_eq!(p.feed("something init: success"), LineKind::Other);
        assert_eq!(p.verdict, None);
    }

    #[test]
    fn other_outcomes_and_garbage() {
        let mut p = ConsoleParser::new();
        p.feed("init: result a::b timeout 120.00 killed after 120 s");
        p.feed("init: result a::c crash 0.5 signal 11");
        p.feed("init: result a::d weird 1.0");
        p.feed("init: result broken");
        p.feed("init: mystery line");
        let o: Vec<_> = p.results.iter().map(|r| r.outcome.clone()).collect();
        assert_eq!(
            o,
            vec![
                Outcome::Timeout,
                Outcome::Crash,
                Outcome::Other("weird".into())
            ]
        );
        assert!(!p.results[2].outcome.is_ok());
        assert_eq!(
            p.unparsed,
            vec!["init: result broken", "init: mystery line"]
        );
    }

    #[test]
    fn failure_patterns() {
        for (line, pat) in [
            ("[   3.1] Oops: general protection fault", "Oops"),
            ("[   3.1] Kernel panic - not syncing: Attempted to kill init!", "Kernel panic"),
            ("[   3.1] BUG: kernel NULL pointer dereference", "BUG:"),
            ("[   3.1] WARNING: CPU: 0 PID: 1 at kernel/sched/ext.c:100", "WARNING:"),
            ("[  30.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!", "BUG:"),
            ("[ 130.0] INFO: task foo:12 blocked; hung_task_timeout_secs", "hung_task"),
            ("[  12.0] sched_ext: BPF scheduler \"fifo\" disabled (runnable task stall)", "runnable task stall"),
            ("[  12.0] sched_ext: fifo: runnable task stall (kworker/0:1[10] failed to run for 5s)", "runnable task stall"),
        ] {
            assert_eq!(failure_pattern(line), Some(pat), "{line}");
        }
        for line in [
            "[    0.0] Kernel command line: console=ttyS0 panic=-1",
            "[    2.8] reboot: Power down",
            "init: result harness::x fail 0.1 panicked: BUG: here",
            "  init: result harness::x fail 0.1 WARNING: quoted",
        ] {
            assert_eq!(failure_pattern(line), None, "{line}");
        }
        let mut p = ConsoleParser::new();
        p.feed("[  5.0] WARNING: CPU: 1 PID: 7 at foo.c:1 bar+0x1/0x2");
        p.feed("init: success");
        assert_eq!(p.problems.len(), 1);
        assert_eq!(p.problems[0].pattern, "WARNING:");
    }

    #[test]
    fn sanitizes_console_noise() {
        assert_eq!(
            sanitize("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r\n"),
            "SeaBIOS (version 1.16.2)"
        );
        assert_eq!(sanitize("init: success\r\n"), "init: success");
        assert_eq!(sanitize("a\tb\x07c"), "a\tbc");
    }

    fn report(console: ConsoleParser) -> BootReport {
        BootReport {
            accel: Accel::Tcg,
            console,
            timed_out: None,
            no_poweroff: false,
            exit: Some(ExitStatus::from_raw(0)),
            boot_to_result: None,
            elapsed: Duration::from_secs(1),
            qemu_stderr: Vec::new(),
            log: None,
        }
    }

    #[test]
    fn judges_boots() {
        let mut ok = ConsoleParser::new();
        for l in [
            "init: kernel 7.3.4 cpus=2 sched_ext=disabled",
            "init: result a::b ok 0.1",
            "init: summary passed=1 failed=0",
            "init: success",
        ] {
            ok.feed(l);
        }
        assert!(report(ok).guest_failures().is_empty());

        // A panic: QEMU exits without a verdict.
        let mut panic = ConsoleParser::new();
        panic.feed("init: kernel 7.3.4 cpus=2 sched_ext=disabled");
        panic.feed("[  3.0] Kernel panic - not syncing: Attempted to kill init!");
        let why = report(panic).guest_failures();
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].contains("kernel panic"), "{why:?}");
        assert!(why[0].contains("without /init printing"), "{why:?}");

        // Every test ok, but a WARNING on the console.
        let mut warn = ConsoleParser::new();
        warn.feed("init: kernel 7.3.4 cpus=2 sched_ext=disabled");
        warn.feed("[  5.0] WARNING: CPU: 1 PID: 7 at foo.c:1 bar");
        warn.feed("init: summary passed=0 failed=0");
        warn.feed("init: success");
        let why = report(warn).guest_failures();
        assert_eq!(why.len(), 1);
        assert!(why[0].contains("WARNING:"));

        // A failing test: a plain `init: failure` is expected, `init: success` is not.
        let mut failed = ConsoleParser::new();
        failed.feed("init: result a::b fail 0.1 exit=101");
        failed.feed("init: summary passed=0 failed=1");
        failed.feed("init: failure");
        assert!(report(failed).guest_failures().is_empty());
        let mut liar = ConsoleParser::new();
        liar.feed("init: result a::b fail 0.1 exit=101");
        liar.feed("init: summary passed=0 failed=1");
        liar.feed("init: success");
        assert_eq!(report(liar).guest_failures().len(), 1);
        let mut odd = ConsoleParser::new();
        odd.feed("init: result a::b ok 0.1 exit=0");
        odd.feed("init: summary passed=1 failed=0");
        odd.feed("init: failure");
        assert_eq!(report(odd).guest_failures().len(), 1);
        let mut plan = ConsoleParser::new();
        plan.feed("init: failure plan: /etc/vm-plan: no such file");
        let why = report(plan).guest_failures();
        assert_eq!(
            why,
            ["the guest's /init reported failure: plan: /etc/vm-plan: no such file"]
        );

        // Summary that disagrees with the result lines.
        let mut lying = ConsoleParser::new();
        lying.feed("init: result a::b fail 0.1");
        lying.feed("init: summary passed=1 failed=0");
        lying.feed("init: failure");
        let why = report(lying).guest_failures();
        assert_eq!(why.len(), 1);
        assert!(why[0].contains("does not match"), "{why:?}");

        // Timeout.
        let mut r = report(ConsoleParser::new());
        r.timed_out = Some(Duration::from_secs(5));
        let why = r.guest_failures();
        assert_eq!(why.len(), 1);
        assert!(why[0].contains("timed out after 5 s"));

        // QEMU refused to start.
        let mut r = report(ConsoleParser::new());
        r.exit = Some(ExitStatus::from_raw(1 << 8));
        r.qemu_stderr = vec!["qemu-system-x86_64: could not load kernel".into()];
        let why = r.guest_failures();
        assert!(why[0].contains("status 1"), "{why:?}");
        assert!(why[0].contains("could not load kernel"), "{why:?}");
    }

    /// Boots a real kernel (the newest one cached under target/vm/kernels) with an init that
    /// does not exist: the kernel panics, QEMU exits, and the report says so.
    #[test]
    #[ignore = "boots QEMU with a cached kernel: run `cargo scx-vm run` once first"]
    fn a_kernel_panic_ends_the_boot_and_is_reported() {
        let kernels = crate::cache::dir().join("kernels");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&kernels)
            .expect("no cached kernels")
            .filter_map(|e| Some(e.ok()?.path().join("vmlinuz")))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        // Any image will do: rdinit names an init that is not there.
        let initrd = crate::cache::dir().join("images").join("panic-test.cpio");
        let mut img = crate::image::GuestImage::default();
        img.add_char_dev("/dev/console", 0o600, 5, 1).unwrap();
        img.write(&initrd).unwrap();
        let spec = BootSpec {
            label: "panic".into(),
            bzimage: found.pop().expect("no cached vmlinuz"),
            initrd,
            extra_cmdline: vec!["rdinit=/nonexistent".into()],
            memory_mib: 512,
            cpus: 1,
            sockets: 1,
            accel: Accel::Tcg,
            timeout: Duration::from_secs(120),
            echo: Echo::None,
            log: None,
            interactive: false,
        };
        let r = boot(&spec).unwrap();
        assert!(
            r.timed_out.is_none(),
            "the panic should end the boot at once"
        );
        assert_eq!(r.console.verdict, None);
        assert!(r
            .console
            .problems
            .iter()
            .any(|p| p.pattern == "Kernel panic"));
        let why = r.guest_failures();
        assert!(why[0].contains("after a kernel panic"), "{why:?}");
        assert!(why[0].contains("without /init printing"), "{why:?}");
    }

    #[test]
    fn quiet_echo_shows_programs_and_sched_ext_only() {
        assert!(is_kernel_line("[    0.000000] Linux version 7.3.4"));
        assert!(is_kernel_line("  [ 12.5] x"));
        assert!(!is_kernel_line("[7.3.4] x"));
        assert!(!is_kernel_line("scx-fifo: hello"));
        // Before /init: firmware and boot log hidden, sched_ext and trouble shown.
        assert!(!shown_quietly("SeaBIOS (version 1.16.2)", false));
        assert!(!shown_quietly("[    0.1] Linux version 7.3.4", false));
        assert!(shown_quietly(
            "[    0.1] BUG: kernel NULL pointer dereference",
            false
        ));
        // After: programs' output, sched_ext lines, /init warnings.
        assert!(shown_quietly("scx-fifo: 2 tasks dispatched", true));
        assert!(shown_quietly(
            "[    3.0] sched_ext: BPF scheduler \"fifo\" enabled",
            true
        ));
        assert!(!shown_quietly("[    3.0] random: crng init done", true));
        assert!(!shown_quietly("init: start run", true));
        assert!(!shown_quietly("init: result run ok 1.00 exit=0", true));
        assert!(shown_quietly(
            "init: warning: killed 1 leftover process(es)",
            true
        ));
        assert!(!shown_quietly("", true));
        let mut p = ConsoleParser::new();
        p.feed("[    3.0] sched_ext: BPF scheduler \"fifo\" enabled");
        p.feed("scx-vm: sched_ext: not a kernel line");
        assert_eq!(p.sched_ext.len(), 1);
    }

    #[test]
    fn cpuinfo_flags() {
        assert!(cpuinfo_has_virt(
            "processor\t: 0\nflags\t\t: fpu vme vmx sse\n"
        ));
        assert!(cpuinfo_has_virt("flags\t: fpu svm\n"));
        assert!(!cpuinfo_has_virt(
            "flags\t: fpu vme hypervisor\nvmx flags\t: ept\n"
        ));
    }

    #[test]
    fn probe_cache_round_trip() {
        let v = ProbeVerdict {
            key: probe_key("6.1.0-1-amd64", "QEMU emulator version 7.2.22"),
            kvm_works: false,
            detail: "QEMU exited with status 134".into(),
        };
        assert_eq!(ProbeVerdict::parse(&v.render()), Some(v.clone()));
        assert_eq!(ProbeVerdict::parse("key=x\n"), None);
        assert_ne!(
            probe_key("6.1.0-1-amd64", "QEMU emulator version 7.2.22"),
            probe_key("6.1.0-2-amd64", "QEMU emulator version 7.2.22")
        );
    }

    /// A TCG boot of 2 CPUs and 1 GiB, for command-line tests.
    fn spec() -> BootSpec {
        BootSpec {
            label: "x".into(),
            bzimage: "/k".into(),
            initrd: "/i".into(),
            extra_cmdline: vec![],
            memory_mib: 1024,
            cpus: 2,
            sockets: 1,
            accel: Accel::Tcg,
            timeout: Duration::from_secs(1),
            echo: Echo::None,
            log: None,
            interactive: false,
        }
    }

    #[test]
    fn tcg_is_single_threaded() {
        let spec = BootSpec {
            extra_cmdline: vec!["foo=1".into()],
            ..spec()
        };
        let args = spec.qemu_args().join(" ");
        assert!(args.contains("-accel tcg,thread=single -cpu max"), "{args}");
        assert!(!args.contains("thread=multi"));
        assert!(
            args.contains("-append console=ttyS0 panic=-1 foo=1"),
            "{args}"
        );
        assert!(args.contains("-no-reboot"));
        assert!(args.contains("-m 1024 -smp 2 -accel"), "{args}");
        assert!(!args.contains("-numa"));
    }

    #[test]
    fn sockets_are_numa_nodes_with_their_share_of_memory() {
        let one = BootSpec { cpus: 4, ..spec() };
        assert!(one.qemu_args().join(" ").contains("-m 1024 -smp 4 -accel"));
        let spec = BootSpec {
            memory_mib: 1025,
            sockets: 2,
            ..one
        };
        let args = spec.qemu_args().join(" ");
        assert!(
            args.contains(
                "-m 1025 -smp 4,sockets=2,cores=2,threads=1 \
                 -object memory-backend-ram,id=mem0,size=512M \
                 -numa node,nodeid=0,cpus=0-1,memdev=mem0 \
                 -object memory-backend-ram,id=mem1,size=513M \
                 -numa node,nodeid=1,cpus=2-3,memdev=mem1 -accel"
            ),
            "{args}"
        );
    }
}
