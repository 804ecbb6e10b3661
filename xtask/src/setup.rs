//! `cargo xtask setup` and the tool checks every other command uses.
//!
//! Each [`Need`] is something a command requires (a program, a library, a file) with a probe
//! and the Debian packages that provide it. [`ensure`] installs missing ones with apt when
//! running as root on Debian, and otherwise fails with the exact command to run.
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};

/// `cargo xtask setup` arguments.
#[derive(clap::Args)]
pub struct SetupArgs {
    /// Only report what is missing (exit status 1 if anything is); install nothing.
    #[arg(long)]
    pub check: bool,
}

/// Something a command needs on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Need {
    /// `qemu-system-x86_64`, to boot the test VM.
    Qemu,
    /// A statically linked `busybox`, the guest's shell and tools.
    Busybox,
    /// `bpftool`, to dump a kernel's BTF as `vmlinux.h`.
    Bpftool,
    /// `clang` (19), to compile the BPF side.
    Clang,
    /// libclang (19), loaded at run time by bindgen.
    Libclang,
    /// libelf + zlib headers and pkg-config, to build libbpf.
    LibbpfBuild,
    /// `apt-get` and `apt-cache`, to fetch kernels.
    Apt,
    /// `dpkg-deb`, to unpack kernel packages.
    DpkgDeb,
    /// The Debian archive keyring, to verify kernel downloads.
    Keyring,
    /// The `zstd` tool.
    Zstd,
    /// `perf` (linux-perf), whose `perf bench sched …` vm-bench runs in the guest.
    Perf,
    /// rt-tests' `hackbench` and `cyclictest`, which vm-bench runs in the guest.
    RtTests,
    /// `clang` (as `BPF_CLANG`) and the libseccomp, libelf and zlib development files, to
    /// build the upstream schedulers of
    /// `vm-bench --baseline upstream`.
    UpstreamBuild,
}

/// Every need, in the order `setup` reports them.
pub const ALL: &[Need] = &[
    Need::Clang,
    Need::Libclang,
    Need::LibbpfBuild,
    Need::Bpftool,
    Need::Qemu,
    Need::Busybox,
    Need::Apt,
    Need::DpkgDeb,
    Need::Keyring,
    Need::Zstd,
    Need::Perf,
    Need::RtTests,
    Need::UpstreamBuild,
];

/// Every Debian package the project needs (`cargo xtask setup` installs these).
pub const PACKAGES: &[&str] = &[
    "clang-19",
    "llvm-19",
    "libclang-19-dev",
    "bpftool",
    "libelf-dev",
    "zlib1g-dev",
    "pkg-config",
    "qemu-system-x86",
    "busybox-static",
    "debian-archive-keyring",
    "zstd",
    "dpkg",
    "linux-perf",
    "rt-tests",
    "libseccomp-dev",
];

/// The Debian archive keyring the kernel downloads are verified with.
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

impl Need {
    /// Debian packages that satisfy this need.
    pub fn packages(self) -> &'static [&'static str] {
        match self {
            Need::Qemu => &["qemu-system-x86"],
            Need::Busybox => &["busybox-static"],
            Need::Bpftool => &["bpftool"],
            Need::Clang => &["clang-19", "llvm-19"],
            Need::Libclang => &["libclang-19-dev"],
            Need::LibbpfBuild => &["libelf-dev", "zlib1g-dev", "pkg-config"],
            Need::Apt => &["apt"],
            Need::DpkgDeb => &["dpkg"],
            Need::Keyring => &["debian-archive-keyring"],
            Need::Zstd => &["zstd"],
            Need::Perf => &["linux-perf"],
            Need::RtTests => &["rt-tests"],
            Need::UpstreamBuild => &[
                "clang-19",
                "libseccomp-dev",
                "libelf-dev",
                "zlib1g-dev",
                "pkg-config",
            ],
        }
    }

    /// What it is needed for, for messages.
    pub fn purpose(self) -> &'static str {
        match self {
            Need::Qemu => "booting the test VM",
            Need::Busybox => "the guest's shell and tools",
            Need::Bpftool => "dumping kernel BTF into vmlinux.h",
            Need::Clang => "compiling the BPF programs",
            Need::Libclang => "generating bindings with bindgen",
            Need::LibbpfBuild => "building libbpf",
            Need::Apt => "fetching kernels",
            Need::DpkgDeb => "unpacking kernel packages",
            Need::Keyring => "verifying kernel downloads",
            Need::Zstd => "zstd (de)compression",
            Need::Perf => "vm-bench's perf bench workloads",
            Need::RtTests => "vm-bench's hackbench and cyclictest workloads",
            Need::UpstreamBuild => {
                "building the upstream schedulers (vm-bench --baseline upstream)"
            }
        }
    }

    /// Look for it on this host: `Ok(where it was found)` or `Err(what is missing)`.
    pub fn probe(self) -> std::result::Result<String, String> {
        let prog = |name: &str| find_program(name).ok_or_else(|| format!("`{name}` not on PATH"));
        let shown = |p: PathBuf| p.display().to_string();
        match self {
            Need::Qemu => qemu_path()
                .map(shown)
                .ok_or_else(|| "`qemu-system-x86_64` not on PATH".into()),
            Need::Busybox => {
                let p = prog("busybox")?;
                match is_static_elf(&p) {
                    Some(true) => Ok(shown(p)),
                    Some(false) => Err(format!(
                        "{} is dynamically linked (the guest needs busybox-static)",
                        p.display()
                    )),
                    None => Err(format!("{} is not an ELF executable", p.display())),
                }
            }
            Need::Bpftool => bpftool_path()
                .map(shown)
                .ok_or_else(|| "`bpftool` not on PATH".into()),
            Need::Clang => clang_path()
                .map(shown)
                .ok_or_else(|| "`clang-19`/`clang` not on PATH".into()),
            Need::Libclang => libclang_path()
                .map(shown)
                .ok_or_else(|| "no /usr/lib/llvm-19/lib/libclang.so*".into()),
            Need::LibbpfBuild => {
                let pc = prog("pkg-config")?;
                let ok = Command::new(&pc)
                    .args(["--exists", "libelf", "zlib"])
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    Ok("pkg-config finds libelf and zlib".into())
                } else {
                    Err("`pkg-config --exists libelf zlib` fails".into())
                }
            }
            Need::Apt => {
                prog("apt-cache")?;
                prog("apt-get").map(shown)
            }
            Need::DpkgDeb => prog("dpkg-deb").map(shown),
            Need::Keyring => {
                if Path::new(DEBIAN_KEYRING).is_file() {
                    Ok(DEBIAN_KEYRING.into())
                } else {
                    Err(format!("no {DEBIAN_KEYRING}"))
                }
            }
            Need::Zstd => prog("zstd").map(shown),
            Need::Perf => perf_path().map(shown).ok_or_else(|| {
                "no perf executable (an ELF /usr/bin/perf or /usr/bin/perf_<version>)".into()
            }),
            Need::RtTests => {
                prog("cyclictest")?;
                prog("hackbench").map(shown)
            }
            Need::UpstreamBuild => {
                let clang = clang_path().ok_or("`clang-19`/`clang` not on PATH")?;
                let pc = prog("pkg-config")?;
                let ok = Command::new(&pc)
                    .args(["--exists", "libseccomp", "libelf", "zlib"])
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    Ok(format!("{}, libseccomp, libelf and zlib", clang.display()))
                } else {
                    Err("`pkg-config --exists libseccomp libelf zlib` fails".into())
                }
            }
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Need::Qemu => "qemu",
            Need::Busybox => "busybox",
            Need::Bpftool => "bpftool",
            Need::Clang => "clang",
            Need::Libclang => "libclang",
            Need::LibbpfBuild => "libbpf build deps",
            Need::Apt => "apt",
            Need::DpkgDeb => "dpkg-deb",
            Need::Keyring => "debian keyring",
            Need::Zstd => "zstd",
            Need::Perf => "perf",
            Need::RtTests => "rt-tests",
            Need::UpstreamBuild => "upstream build deps",
        };
        f.write_str(name)
    }
}

/// Find a program on PATH, also looking in the sbin directories (bpftool lives in
/// /usr/sbin, which a non-root PATH often lacks).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `clang-19`, else `clang`.
pub fn clang_path() -> Option<PathBuf> {
    find_program("clang-19").or_else(|| find_program("clang"))
}

/// `bpftool`.
pub fn bpftool_path() -> Option<PathBuf> {
    find_program("bpftool")
}

/// `qemu-system-x86_64`.
pub fn qemu_path() -> Option<PathBuf> {
    find_program("qemu-system-x86_64")
}

/// The perf executable itself. Debian's `/usr/bin/perf` is either perf (an ELF) or a
/// wrapper script that runs `perf_<version>` for the running kernel; a guest runs another
/// kernel, so it gets the newest `perf_<version>` ELF.
pub fn perf_path() -> Option<PathBuf> {
    perf_in(Path::new("/usr/bin"))
}

fn perf_in(dir: &Path) -> Option<PathBuf> {
    let is_elf = |p: &Path| is_executable(p) && is_static_elf(p).is_some();
    let plain = dir.join("perf");
    if is_elf(&plain) {
        return Some(plain);
    }
    let mut versioned: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix("perf_")?;
            let key: Vec<u64> = version
                .split(['.', '-'])
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            Some((key, e.path()))
        })
        .filter(|(_, p)| is_elf(p))
        .collect();
    versioned.sort();
    versioned.pop().map(|(_, p)| p)
}

fn libclang_path() -> Option<PathBuf> {
    let dir = Path::new("/usr/lib/llvm-19/lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("libclang.so"))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// `Some(true)` for an ELF without a program interpreter (statically linked), `Some(false)`
/// for a dynamically linked ELF, `None` if it is not a readable 64-bit ELF.
fn is_static_elf(p: &Path) -> Option<bool> {
    let buf = std::fs::read(p).ok()?;
    elf_is_static(&buf)
}

fn elf_is_static(buf: &[u8]) -> Option<bool> {
    if !buf.starts_with(b"\x7fELF") || buf.get(4) != Some(&2) || buf.get(5) != Some(&1) {
        return None;
    }
    let rd16 = |o: usize| Some(u16::from_le_bytes(buf.get(o..o + 2)?.try_into().ok()?));
    let phoff = u64::from_le_bytes(buf.get(0x20..0x28)?.try_into().ok()?) as usize;
    let phentsize = rd16(0x36)? as usize;
    let phnum = rd16(0x38)? as usize;
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let ty = u32::from_le_bytes(buf.get(off..off + 4)?.try_into().ok()?);
        if ty == 3 {
            // PT_INTERP
            return Some(false);
        }
    }
    Some(true)
}

/// Whether missing packages can be installed here: root, on Debian, with apt-get.
fn can_install() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    root && Path::new("/etc/debian_version").exists() && find_program("apt-get").is_some()
}

fn install_line(pkgs: &[&str]) -> String {
    format!(
        "apt-get install -y --no-install-recommends {}",
        pkgs.join(" ")
    )
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);
static LOG_STARTED: AtomicBool = AtomicBool::new(false);

/// Test hook: `XTASK_SETUP_PRETEND_MISSING=pkg,pkg…` makes setup treat these packages as not
/// installed (apt simulates against a copy of the dpkg status without them) and turns every
/// install into a simulation: nothing is installed and the system package index is not updated.
const PRETEND_ENV: &str = "XTASK_SETUP_PRETEND_MISSING";

fn pretend_missing() -> Vec<String> {
    std::env::var(PRETEND_ENV)
        .unwrap_or_default()
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Where apt's own output goes (shown on failure).
fn apt_log_path() -> PathBuf {
    crate::vm_dir().join("setup-apt.log")
}

/// Run an apt command, appending its output to the log; `(success, output)`.
fn run_logged(mut cmd: Command) -> Result<(bool, String)> {
    use std::io::Write;
    let shown = format!("{cmd:?}");
    cmd.env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = apt_log_path();
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let fresh = !LOG_STARTED.swap(true, Ordering::SeqCst);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!fresh)
        .truncate(fresh)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(f, "==== $ {shown}\n{text}==== {}\n", out.status)
        .with_context(|| format!("writing {}", log.display()))?;
    Ok((out.status.success(), text))
}

/// The last lines of apt output, indented, for an error message.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].iter().map(|l| format!("    {l}\n")).collect()
}

/// Why `apt-get -s` failed: its unmet-dependency block and `E:` lines.
fn apt_error_summary(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut in_unmet = false;
    for l in text.lines() {
        if l.starts_with("The following packages have unmet dependencies") {
            in_unmet = true;
        } else if in_unmet && !l.starts_with(' ') {
            in_unmet = false;
        }
        if in_unmet || l.starts_with("E: ") {
            out.push(l.trim());
        }
    }
    if out.is_empty() {
        out = text.lines().rev().take(3).collect();
        out.reverse();
    }
    out.join("; ")
}

/// One `Inst` line of `apt-get -s install`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Inst {
    name: String,
    /// The installed version this replaces, if any.
    old: Option<String>,
    new: String,
    /// Where the new version comes from, e.g. `Debian Backports:stable-backports`.
    release: String,
}

/// What an `apt-get -s install` would do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Plan {
    installs: Vec<Inst>,
    /// `(package, installed version)` of every `Remv`/`Purg` line.
    removals: Vec<(String, String)>,
}

/// Parse the `Inst`/`Remv`/`Purg` lines of `apt-get -s` output.
fn parse_simulation(text: &str) -> Plan {
    let mut plan = Plan::default();
    for line in text.lines() {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if name.is_empty() {
            continue;
        }
        let mut rest = rest.trim_start();
        let mut old = None;
        if let Some(r) = rest.strip_prefix('[') {
            if let Some((v, after)) = r.split_once(']') {
                old = Some(v.trim().to_string());
                rest = after.trim_start();
            }
        }
        match kind {
            "Remv" | "Purg" => plan
                .removals
                .push((name.to_string(), old.unwrap_or_default())),
            "Inst" => {
                let Some(inner) = rest
                    .strip_prefix('(')
                    .and_then(|r| r.split_once(')'))
                    .map(|(i, _)| i)
                else {
                    continue;
                };
                let (new, release) = inner.split_once(' ').unwrap_or((inner, ""));
                let release = match release.rfind(" [") {
                    Some(i) => &release[..i],
                    None => release,
                };
                plan.installs.push(Inst {
                    name: name.to_string(),
                    old,
                    new: new.to_string(),
                    release: release.trim().to_string(),
                });
            }
            _ => {}
        }
    }
    plan
}

impl Plan {
    /// What it would do to installed packages that setup must never do: remove or downgrade.
    /// `lt(a, b)` is "version a is older than version b".
    fn harm(&self, lt: impl Fn(&str, &str) -> bool) -> Vec<String> {
        let mut harm: Vec<String> = self
            .removals
            .iter()
            .map(|(n, v)| format!("remove {n} {v}"))
            .collect();
        for i in &self.installs {
            if let Some(old) = &i.old {
                if lt(&i.new, old) {
                    harm.push(format!("downgrade {} {old} to {}", i.name, i.new));
                }
            }
        }
        harm
    }
}

/// `dpkg --compare-versions a lt b`; if dpkg cannot answer, any change counts as older.
fn version_lt(a: &str, b: &str) -> bool {
    match Command::new("dpkg")
        .args(["--compare-versions", a, "lt", b])
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.code() == Some(0) || s.code() == Some(1) => s.success(),
        _ => a != b,
    }
}

/// The system's codename (`VERSION_CODENAME` in /etc/os-release).
fn system_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// A `deb` source of the system's apt: its URIs and suites.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DebSource {
    uris: Vec<String>,
    suites: Vec<String>,
}

/// The `deb` entries of a one-line `sources.list` (`deb [opts] URI SUITE COMPONENTS…`).
fn one_line_debs(text: &str) -> Vec<DebSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let mut rest = rest.trim_start();
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((_, after)) = opts.split_once(']') else {
                continue;
            };
            rest = after;
        }
        let mut w = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (w.next(), w.next()) {
            out.push(DebSource {
                uris: vec![uri.into()],
                suites: vec![suite.into()],
            });
        }
    }
    out
}

/// The enabled `Types: deb` stanzas of a deb822 `.sources` file.
fn deb822_debs(text: &str) -> Vec<DebSource> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    for stanza in lines.split(|l| l.trim().is_empty()) {
        let mut fields: Vec<(String, String)> = Vec::new();
        for l in stanza {
            if l.starts_with([' ', '\t']) {
                if let Some((_, v)) = fields.last_mut() {
                    v.push(' ');
                    v.push_str(l.trim());
                }
            } else if let Some((k, v)) = l.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |k: &str| -> Vec<String> {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.split_whitespace().map(String::from).collect())
                .unwrap_or_default()
        };
        let disabled = get("enabled").iter().any(|v| v.eq_ignore_ascii_case("no"));
        let (uris, suites) = (get("uris"), get("suites"));
        if !disabled && get("types").iter().any(|t| t == "deb") && !uris.is_empty() {
            out.push(DebSource { uris, suites });
        }
    }
    out
}

/// Every `deb` source the system's apt uses (the files apt reads; others are ignored).
fn system_sources() -> Vec<DebSource> {
    let mut entries = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        entries.extend(one_line_debs(&t));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(t) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => entries.extend(deb822_debs(&t)),
            Some("list") => entries.extend(one_line_debs(&t)),
            _ => {}
        }
    }
    entries
}

/// The private `sources.list` adding `<codename>-backports` on the mirror the system uses for
/// `<codename>` (just a comment when the system's sources already have that suite).
fn backports_sources_list(entries: &[DebSource], codename: &str) -> Result<String> {
    let suite = format!("{codename}-backports");
    if entries.iter().any(|e| e.suites.contains(&suite)) {
        return Ok(format!("# {suite} is in the system's apt sources\n"));
    }
    let mut uris: Vec<String> = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.suites.iter().any(|s| s == codename))
    {
        for u in &e.uris {
            let u = u.trim_end_matches('/');
            if !u.starts_with("cdrom:") && !uris.iter().any(|x| x == u) {
                uris.push(u.to_string());
            }
        }
    }
    if uris.is_empty() {
        bail!("the system's apt sources have no `deb` entry for {codename} to take a mirror from");
    }
    Ok(uris
        .iter()
        .map(|u| format!("deb [signed-by={DEBIAN_KEYRING}] {u} {suite} main\n"))
        .collect())
}

/// How to run apt: the system's apt, or with extra `-o` options (a private package index, a
/// pretend dpkg status) and a target release.
#[derive(Default)]
struct Apt {
    opts: Vec<String>,
    target: Option<String>,
}

impl Apt {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("apt-get");
        for o in &self.opts {
            c.arg("-o").arg(o);
        }
        c.args(args);
        c
    }

    /// The `apt-get install` arguments after the `-o` options.
    fn install_args<'a>(&'a self, pkgs: &[&'a str], simulate: bool) -> Vec<&'a str> {
        let mut a = vec!["install", "-q", if simulate { "-s" } else { "-y" }];
        a.push("--no-install-recommends");
        if !simulate {
            // Belt and braces: the simulation said nothing goes; make apt refuse if it would.
            a.push("--no-remove");
        }
        if let Some(t) = &self.target {
            a.extend(["-t", t.as_str()]);
        }
        a.extend(pkgs);
        a
    }

    /// The shell line for installing `pkgs` this way.
    fn line(&self, pkgs: &[&str]) -> String {
        let mut w: Vec<String> = vec!["apt-get".into()];
        for o in &self.opts {
            w.push("-o".into());
            w.push(o.clone());
        }
        w.extend(
            self.install_args(pkgs, false)
                .iter()
                .filter(|a| **a != "-q")
                .map(|a| a.to_string()),
        );
        w.join(" ")
    }

    /// Simulate installing `pkgs`: the plan, or why apt cannot resolve it.
    fn simulate(&self, pkgs: &[&str]) -> Result<std::result::Result<Plan, String>> {
        let (ok, text) = run_logged(self.command(&self.install_args(pkgs, true)))?;
        Ok(if ok {
            Ok(parse_simulation(&text))
        } else {
            Err(apt_error_summary(&text))
        })
    }

    fn install(&self, pkgs: &[&str]) -> Result<()> {
        let (ok, text) = run_logged(self.command(&self.install_args(pkgs, false)))?;
        if !ok {
            bail!(
                "`{}` failed; apt said:\n{}(full output in {})",
                self.line(pkgs),
                tail(&text, 25),
                apt_log_path().display()
            );
        }
        Ok(())
    }
}

/// apt options that make apt see `pretend` as not installed: a copy of the dpkg status
/// without their records.
fn pretend_status_opts(pretend: &[String]) -> Result<Vec<String>> {
    if pretend.is_empty() {
        return Ok(Vec::new());
    }
    let status =
        std::fs::read_to_string("/var/lib/dpkg/status").context("reading /var/lib/dpkg/status")?;
    let kept: Vec<&str> = status
        .split("\n\n")
        .filter(|st| {
            let name = st
                .lines()
                .find_map(|l| l.strip_prefix("Package:"))
                .map(str::trim);
            !name.is_some_and(|n| pretend.iter().any(|p| p == n))
        })
        .collect();
    let dir = crate::vm_dir().join("apt").join("setup-pretend");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("status");
    std::fs::write(&path, kept.join("\n\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(vec![format!("Dir::State::status={}", path.display())])
}

/// The system apt plus a private package index that adds `<codename>-backports` (under
/// `target/vm/apt/setup-backports`; the system's apt configuration and index stay as they are),
/// with `-t <codename>-backports`. Runs `apt-get update` on the private index.
fn backports_apt(codename: &str, base_opts: &[String]) -> Result<Apt> {
    let dir = crate::vm_dir().join("apt").join("setup-backports");
    for sub in ["lists/partial", "cache/archives/partial"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    let list = dir.join("sources.list");
    let text = backports_sources_list(&system_sources(), codename)?;
    std::fs::write(&list, text).with_context(|| format!("writing {}", list.display()))?;
    let mut opts = vec![
        format!("Dir::Etc::SourceList={}", list.display()),
        format!("Dir::State::Lists={}", dir.join("lists").display()),
        format!("Dir::Cache={}", dir.join("cache").display()),
    ];
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        // The private dirs belong to root; apt's `_apt` sandbox user could not write them.
        opts.push("APT::Sandbox::User=root".into());
    }
    opts.extend(base_opts.iter().cloned());
    let apt = Apt {
        opts,
        target: Some(format!("{codename}-backports")),
    };
    let (ok, text) = run_logged(apt.command(&["-q", "update"]))?;
    if !ok {
        let errs: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
        bail!(
            "`apt-get update` with {codename}-backports failed: {}",
            errs.join("; ")
        );
    }
    Ok(apt)
}

/// Install Debian packages with apt, never removing or downgrading an installed package:
/// simulate first; if the system's sources would remove or downgrade something, try the
/// system codename's backports suite; if that does not fit either, stop and say why.
/// Fails with the command to run when this process cannot install (not root / not Debian).
pub fn install_packages(pkgs: &[&str], what: &str) -> Result<()> {
    if pkgs.is_empty() {
        return Ok(());
    }
    if !can_install() {
        bail!(
            "missing Debian packages for {what}: run as root `{}` (or `cargo xtask setup` as root)",
            install_line(pkgs)
        );
    }
    let pretend = pretend_missing();
    let dry = !pretend.is_empty();
    let log = apt_log_path();
    if !dry && !APT_UPDATED.swap(true, Ordering::SeqCst) {
        eprintln!("xtask: updating the apt package index");
        let (ok, _) = run_logged(Apt::default().command(&["-q", "update"]))?;
        if !ok {
            eprintln!(
                "xtask: warning: `apt-get update` failed (see {}); trying the install anyway",
                log.display()
            );
        }
    }
    let base_opts = pretend_status_opts(&pretend)?;
    let system = Apt {
        opts: base_opts.clone(),
        target: None,
    };
    let first = system.simulate(pkgs)?;
    let why = match &first {
        Ok(plan) => plan.harm(version_lt),
        Err(e) => vec![format!("fail: {e}")],
    };
    if why.is_empty() {
        if dry {
            eprintln!(
                "xtask: simulation ({PRETEND_ENV} set): would run `{}`",
                system.line(pkgs)
            );
            return Ok(());
        }
        eprintln!("xtask: installing {} (needed for {what})", pkgs.join(" "));
        return system.install(pkgs);
    }
    let wanted = install_line(pkgs);
    let Some(codename) = system_codename() else {
        bail!(
            "not installing: `{wanted}` would {}; the system has no VERSION_CODENAME to look \
             for a backports suite. Install versions that fit the installed packages by hand.",
            why.join(", ")
        );
    };
    eprintln!(
        "xtask: `{wanted}` would {}; trying {codename}-backports (apt log {})",
        why.join(", "),
        log.display()
    );
    let bpo = backports_apt(&codename, &base_opts);
    let second = match &bpo {
        Ok(apt) => apt.simulate(pkgs)?.map_err(|e| format!("fail: {e}")),
        Err(e) => Err(format!("{e:#}")),
    };
    let bpo_why = match &second {
        Ok(plan) => plan.harm(version_lt),
        Err(e) => vec![e.clone()],
    };
    if let (Ok(apt), Ok(plan), true) = (&bpo, &second, bpo_why.is_empty()) {
        let from: Vec<String> = plan
            .installs
            .iter()
            .filter(|i| i.release.to_ascii_lowercase().contains("backports"))
            .map(|i| format!("{} {}", i.name, i.new))
            .collect();
        eprintln!(
            "xtask: from {codename}-backports: {} ({codename}'s own versions would {})",
            if from.is_empty() {
                "nothing".into()
            } else {
                from.join(", ")
            },
            why.join(", ")
        );
        if dry {
            eprintln!(
                "xtask: simulation ({PRETEND_ENV} set): would run `{}`",
                apt.line(pkgs)
            );
            return Ok(());
        }
        eprintln!("xtask: installing {} (needed for {what})", pkgs.join(" "));
        return apt.install(pkgs);
    }
    let backports = match &bpo {
        Ok(apt) => format!("`{}` would {}", apt.line(pkgs), bpo_why.join(", ")),
        Err(e) => format!("{codename}-backports is not usable: {e:#}"),
    };
    bail!(
        "not installing {what}; setup never removes or downgrades an installed package.\n  \
         `{wanted}` would {}\n  {backports}\n  \
         Install versions of {} that fit the installed packages yourself (or remove the \
         conflicting packages if you no longer need them), then run `cargo xtask setup` again. \
         apt's output is in {}",
        why.join(", "),
        pkgs.join(" "),
        log.display()
    );
}

/// Make sure every need is met, installing missing packages when possible.
pub fn ensure(needs: &[Need]) -> Result<()> {
    let missing: Vec<(Need, String)> = needs
        .iter()
        .filter_map(|&n| n.probe().err().map(|why| (n, why)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = Vec::new();
    for (n, _) in &missing {
        for p in n.packages() {
            if !pkgs.contains(p) {
                pkgs.push(p);
            }
        }
    }
    let what = missing
        .iter()
        .map(|(n, _)| n.purpose())
        .collect::<Vec<_>>()
        .join(", ");
    if !can_install() {
        let why = missing
            .iter()
            .map(|(n, why)| format!("{n}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        bail!(
            "missing tools ({why}): run as root `{}` (or `cargo xtask setup` as root)",
            install_line(&pkgs)
        );
    }
    install_packages(&pkgs, &what)?;
    let still: Vec<String> = missing
        .iter()
        .filter_map(|(n, _)| n.probe().err().map(|why| format!("{n}: {why}")))
        .collect();
    if !still.is_empty() {
        bail!(
            "still missing after installing {}: {}",
            pkgs.join(" "),
            still.join("; ")
        );
    }
    Ok(())
}

/// Packages from `pkgs` that dpkg does not list as installed; `None` without dpkg-query.
fn uninstalled_packages(pkgs: &[&'static str]) -> Option<Vec<&'static str>> {
    find_program("dpkg-query")?;
    let mut missing = Vec::new();
    let pretend = pretend_missing();
    for &p in pkgs {
        if pretend.iter().any(|x| x == p) {
            missing.push(p);
            continue;
        }
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${db:Status-Status}", p])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if String::from_utf8_lossy(&out.stdout).trim() != "installed" {
            missing.push(p);
        }
    }
    Some(missing)
}

/// Print each need's state; return the missing needs and uninstalled packages.
fn report() -> (Vec<Need>, Vec<&'static str>) {
    let mut missing = Vec::new();
    for &n in ALL {
        match n.probe() {
            Ok(found) => println!("  ok       {:<19} {found}", n.to_string()),
            Err(why) => {
                println!(
                    "  MISSING  {:<19} {why} (for {})",
                    n.to_string(),
                    n.purpose()
                );
                missing.push(n);
            }
        }
    }
    let pkgs = uninstalled_packages(PACKAGES).unwrap_or_default();
    if !pkgs.is_empty() {
        println!("  packages not installed: {}", pkgs.join(" "));
    }
    (missing, pkgs)
}

pub fn run(args: SetupArgs) -> Result<()> {
    println!("xtask setup: checking the host tools");
    let (missing, pkgs) = report();
    if missing.is_empty() && pkgs.is_empty() {
        println!("xtask setup: everything is installed");
        return Ok(());
    }
    let mut all: Vec<&str> = pkgs;
    for n in &missing {
        for p in n.packages() {
            if !all.contains(p) {
                all.push(p);
            }
        }
    }
    if args.check {
        bail!(
            "missing: {}; run `cargo xtask setup` as root (or `{}`)",
            all.join(" "),
            install_line(&all)
        );
    }
    install_packages(&all, "the scx-userland toolchain and VM harness")?;
    if !pretend_missing().is_empty() {
        println!("xtask setup: simulation only ({PRETEND_ENV} set); installed nothing");
        return Ok(());
    }
    println!("xtask setup: after installing");
    let (missing, _) = report();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|n| n.to_string()).collect();
        bail!("still missing after installing: {}", names.join(", "));
    }
    println!("xtask setup: everything is installed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_with_phdrs(types: &[u32]) -> Vec<u8> {
        let mut buf = vec![0u8; 0x40];
        buf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        buf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        buf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        buf[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for &t in types {
            let mut ph = [0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            buf.extend_from_slice(&ph);
        }
        buf
    }

    #[test]
    fn static_vs_dynamic_elf() {
        assert_eq!(elf_is_static(&elf_with_phdrs(&[1, 1, 4])), Some(true));
        assert_eq!(elf_is_static(&elf_with_phdrs(&[6, 3, 1])), Some(false));
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
    }

    #[test]
    fn finds_the_perf_executable_behind_the_wrapper() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xtask-perf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let put = |name: &str, data: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, data).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let elf = elf_with_phdrs(&[3, 1]);
        assert_eq!(perf_in(&dir), None);
        put("perf", b"#!/bin/sh\nexec perf_$(uname -r) \"$@\"\n");
        put("perf_6.1", &elf);
        let newest = put("perf_6.12", &elf);
        put("perf_7.0", b"#!/bin/sh\n"); // not an ELF
        put("perf_x", &elf); // not a version
        assert_eq!(perf_in(&dir), Some(newest));
        let plain = put("perf", &elf);
        assert_eq!(perf_in(&dir), Some(plain));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_need_package_is_in_the_setup_list() {
        for &n in ALL {
            for p in n.packages() {
                // `apt` itself cannot be installed by apt; everything else must be.
                assert!(
                    *p == "apt" || PACKAGES.contains(p),
                    "{n}: {p} not in PACKAGES"
                );
            }
        }
    }

    /// Versions compared as plain strings: enough for the fixtures below.
    fn lt(a: &str, b: &str) -> bool {
        a < b
    }

    #[test]
    fn simulation_with_a_removal() {
        let text = "\
Reading package lists...
The following packages will be REMOVED:
  qemu-utils
0 upgraded, 2 newly installed, 1 to remove and 133 not upgraded.
Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]
Inst seabios (1.16.2-1 Debian:12.15/oldstable [all])
Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b3 Debian:12.15/oldstable [amd64])
Conf seabios (1.16.2-1 Debian:12.15/oldstable [all])
";
        let plan = parse_simulation(text);
        assert_eq!(
            plan.removals,
            [("qemu-utils".into(), "1:10.0.2+ds-2+deb13u1~bpo12+1".into())]
        );
        assert_eq!(plan.installs.len(), 2);
        assert_eq!(
            plan.installs[1],
            Inst {
                name: "qemu-system-x86".into(),
                old: None,
                new: "1:7.2+dfsg-7+deb12u18+b3".into(),
                release: "Debian:12.15/oldstable".into(),
            }
        );
        assert_eq!(
            plan.harm(lt),
            ["remove qemu-utils 1:10.0.2+ds-2+deb13u1~bpo12+1"]
        );
    }

    #[test]
    fn simulation_with_a_downgrade_and_an_upgrade() {
        let text = "\
Inst libfoo1 [2.0-1] (1.0-1 Debian:12.15/oldstable [amd64]) []
Inst libbar1 [1.0-1] (1.1-1 Debian:12.15/oldstable [amd64])
Purg oldpkg [3.0]
";
        let plan = parse_simulation(text);
        assert_eq!(plan.installs[0].old.as_deref(), Some("2.0-1"));
        assert_eq!(plan.installs[0].new, "1.0-1");
        assert_eq!(
            plan.harm(lt),
            ["remove oldpkg 3.0", "downgrade libfoo1 2.0-1 to 1.0-1"]
        );
    }

    #[test]
    fn clean_simulation() {
        let text = "\
Inst qemu-system-common (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64])
Inst qemu-system-x86 (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64])
Conf qemu-system-x86 (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64])
";
        let plan = parse_simulation(text);
        assert!(plan.removals.is_empty());
        assert_eq!(
            plan.installs[0].release,
            "Debian Backports:oldstable-backports"
        );
        assert!(plan.harm(lt).is_empty());
        assert!(
            parse_simulation("qemu-system-x86 is already the newest version.\n")
                .harm(lt)
                .is_empty()
        );
    }

    #[test]
    fn dpkg_version_order() {
        if find_program("dpkg").is_none() {
            return;
        }
        assert!(version_lt("1:7.2+dfsg-7", "1:10.0.2+ds-2"));
        assert!(version_lt("1.16.3-2~bpo12+1", "1.16.3-2"));
        assert!(!version_lt("1.0", "1.0"));
    }

    #[test]
    fn apt_error_summary_keeps_the_reason() {
        let text = "\
Reading package lists...
The following packages have unmet dependencies:
 qemu-system-x86 : Depends: qemu-system-common (= 1:10.0.2) but 1:7.2 is to be installed
E: Unable to correct problems, you have held broken packages.
";
        assert_eq!(
            apt_error_summary(text),
            "The following packages have unmet dependencies:; qemu-system-x86 : Depends: \
             qemu-system-common (= 1:10.0.2) but 1:7.2 is to be installed; E: Unable to correct \
             problems, you have held broken packages."
        );
    }

    #[test]
    fn backports_source_from_the_system_mirror() {
        let deb822 = "\
Types: deb
# a comment
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
";
        let one_line = "deb [arch=amd64] http://other.example/debian bookworm main # x\n\
                        deb-src http://src.example/debian bookworm main\n";
        let mut e = deb822_debs(deb822);
        assert_eq!(e.len(), 2);
        e.extend(one_line_debs(one_line));
        assert_eq!(e.len(), 3);
        assert_eq!(
            backports_sources_list(&e, "bookworm").unwrap(),
            format!(
                "deb [signed-by={DEBIAN_KEYRING}] http://mirror.example/debian bookworm-backports main\n\
                 deb [signed-by={DEBIAN_KEYRING}] http://other.example/debian bookworm-backports main\n"
            )
        );
        e.push(DebSource {
            uris: vec!["http://mirror.example/debian".into()],
            suites: vec!["bookworm-backports".into()],
        });
        assert!(backports_sources_list(&e, "bookworm")
            .unwrap()
            .starts_with('#'));
        assert!(backports_sources_list(&e, "trixie").is_err());
    }

    #[test]
    fn install_line_is_copy_pasteable() {
        assert_eq!(
            install_line(&["clang-19", "bpftool"]),
            "apt-get install -y --no-install-recommends clang-19 bpftool"
        );
    }
}
