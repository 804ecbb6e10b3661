//! Fetch, verify and cache sched_ext-capable kernels.
//!
//! Kernels come from Debian's archive through apt, with a private apt state per suite under
//! `<cache>/apt/<suite>/` (the system's apt setup is never touched). The mirror is the one
//! the system's own apt sources use. Unpacked kernels are cached under
//! `<cache>/kernels/<release>/` (`vmlinuz`, `config`, `meta`); `<cache>` is [`crate::cache::dir`].
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use crate::error::{bail, err, Context, Result};
use crate::tools;

/// The suite `7.3` stands for.
pub const SUITE_7_3: &str = "trixie-backports";
/// The suite `7.2` stands for.
pub const SUITE_7_2: &str = "sid";
/// The kernel metapackage resolved in each suite.
const META_PACKAGE: &str = "linux-image-amd64";
/// Options a kernel must have to run sched_ext schedulers.
pub const REQUIRED_CONFIG: &[&str] = &["CONFIG_SCHED_CLASS_EXT", "CONFIG_DEBUG_INFO_BTF"];
/// Options the VM harness relies on (serial console, devtmpfs, initramfs); warned about.
pub const VM_CONFIG: &[&str] = &[
    "CONFIG_SERIAL_8250_CONSOLE",
    "CONFIG_DEVTMPFS",
    "CONFIG_BLK_DEV_INITRD",
];

/// Which kernel(s) a VM command boots (command-line flags, for `#[command(flatten)]`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KernelSelect {
    /// Debian kernels to boot, comma separated: `7.3` (= trixie-backports), `7.2` (= sid),
    /// suite names, or `all` [default: 7.3].
    #[arg(
        long,
        alias = "kernel-suite",
        value_name = "LIST",
        conflicts_with = "kernel"
    )]
    pub kernels: Option<String>,
    /// Boot your own bzImage instead (needs CONFIG_SCHED_CLASS_EXT=y and
    /// CONFIG_DEBUG_INFO_BTF=y).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Kernel modules directory to put in the guest (with --kernel).
    #[arg(long, value_name = "DIR", requires = "kernel")]
    pub modules: Option<PathBuf>,
    /// Use the newest cached kernel of each suite without asking apt.
    #[arg(long)]
    pub offline: bool,
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// Kernel release, e.g. `7.3.4+deb13-amd64`.
    pub version: String,
    /// The bzImage.
    pub bzimage: PathBuf,
    /// Its config, when known.
    pub config: Option<PathBuf>,
    /// A modules directory to include in the guest, when given.
    pub modules: Option<PathBuf>,
}

/// Resolve a selection to kernels (fetching/caching as needed).
pub fn select(sel: &KernelSelect) -> Result<Vec<Kernel>> {
    if let Some(path) = &sel.kernel {
        return Ok(vec![user_kernel(path, sel.modules.as_deref())?]);
    }
    let suites = parse_suites(sel.kernels.as_deref().unwrap_or("7.3"))?;
    suites.iter().map(|s| fetch(s, sel.offline)).collect()
}

// ---------------------------------------------------------------------------------------
// Suites

/// Map one name to a suite: `7.3`, `7.2`, or a Debian suite name.
pub fn parse_suite(name: &str) -> Result<String> {
    let name = name.trim();
    match name {
        "7.3" => Ok(SUITE_7_3.into()),
        "7.2" | "unstable" => Ok(SUITE_7_2.into()),
        "" => bail!("empty kernel/suite name"),
        _ if name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && name.as_bytes()[0].is_ascii_lowercase() =>
        {
            Ok(name.into())
        }
        _ => bail!(
            "unknown kernel `{name}`: use 7.3 (= {SUITE_7_3}), 7.2 (= {SUITE_7_2}), a Debian \
             suite name, or all"
        ),
    }
}

/// Parse a comma-separated list of kernels/suites (`all` = 7.3 and 7.2), without repeats.
pub fn parse_suites(list: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for item in list.split(',') {
        let names = if item.trim() == "all" {
            vec![SUITE_7_3.to_string(), SUITE_7_2.to_string()]
        } else {
            vec![parse_suite(item)?]
        };
        for n in names {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// System apt sources → the Debian mirror

/// One apt source entry (one-line or deb822), reduced to what we need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEntry {
    /// `deb`, `deb-src`.
    pub types: Vec<String>,
    /// Archive URIs.
    pub uris: Vec<String>,
    /// Suites (`bookworm`, `sid`, …).
    pub suites: Vec<String>,
    /// Components (`main`, …).
    pub components: Vec<String>,
}

/// Parse RFC822-style stanzas (`Field: value`, continuation lines start with blanks;
/// `#` comment lines are dropped). Field names are kept as written.
pub fn parse_stanzas(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = last.as_ref().and_then(|k| cur.get_mut(k)) {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_string();
            cur.insert(k.clone(), v.trim().to_string());
            last = Some(k);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Get a field case-insensitively (deb822 field names are case-insensitive).
fn field<'a>(st: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    st.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn words(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Parse a deb822 `.sources` file.
pub fn parse_deb822_sources(text: &str) -> Vec<SourceEntry> {
    parse_stanzas(text)
        .iter()
        .filter(|st| !field(st, "Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")))
        .map(|st| SourceEntry {
            types: words(field(st, "Types")),
            uris: words(field(st, "URIs")),
            suites: words(field(st, "Suites")),
            components: words(field(st, "Components")),
        })
        .filter(|e| !e.uris.is_empty() && !e.suites.is_empty())
        .collect()
}

/// Parse a one-line-style `sources.list` (`deb [opts] URI SUITE COMPONENTS…`).
pub fn parse_one_line_sources(text: &str) -> Vec<SourceEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((ty, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if ty != "deb" && ty != "deb-src" {
            continue;
        }
        let mut rest = rest.trim_start();
        if let Some(opts) = rest.strip_prefix('[') {
            let Some(end) = opts.find(']') else {
                continue;
            };
            rest = opts[end + 1..].trim_start();
        }
        let mut w = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (w.next(), w.next()) else {
            continue;
        };
        out.push(SourceEntry {
            types: vec![ty.into()],
            uris: vec![uri.into()],
            suites: vec![suite.into()],
            components: w.map(String::from).collect(),
        });
    }
    out
}

const DEBIAN_SUITES: &[&str] = &[
    "sid",
    "unstable",
    "testing",
    "stable",
    "oldstable",
    "oldoldstable",
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
];

/// Choose the main Debian archive URIs: a `deb` entry with the system codename as a suite
/// (not `-security`), falling back to an entry with a plain Debian suite name.
pub fn debian_mirror_uris(entries: &[SourceEntry], codename: Option<&str>) -> Vec<String> {
    let usable = |e: &&SourceEntry| {
        e.types.iter().any(|t| t == "deb")
            && e.uris.iter().any(|u| !u.starts_with("cdrom:"))
            && !e.uris.iter().any(|u| u.contains("security"))
    };
    let by_codename = codename.and_then(|c| {
        entries
            .iter()
            .filter(usable)
            .find(|e| e.suites.iter().any(|s| s == c))
    });
    let chosen = by_codename.or_else(|| {
        entries
            .iter()
            .filter(usable)
            .find(|e| e.suites.iter().any(|s| DEBIAN_SUITES.contains(&s.as_str())))
    });
    let mut uris: Vec<String> = Vec::new();
    for u in chosen.map(|e| e.uris.clone()).unwrap_or_default() {
        let u = u.trim_end_matches('/').to_string();
        if !u.starts_with("cdrom:") && !uris.contains(&u) {
            uris.push(u);
        }
    }
    uris
}

fn system_codename() -> Option<String> {
    let text = fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// All apt source entries configured on this system.
fn system_sources() -> Vec<SourceEntry> {
    let mut entries = Vec::new();
    if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
        entries.extend(parse_one_line_sources(&t));
    }
    let mut files: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(t) = fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => entries.extend(parse_deb822_sources(&t)),
            Some("list") => entries.extend(parse_one_line_sources(&t)),
            _ => {}
        }
    }
    entries
}

/// The private `sources.list` for `suite` on the given mirrors.
pub fn private_sources_list(uris: &[String], suite: &str) -> String {
    uris.iter()
        .map(|u| {
            format!(
                "deb [signed-by={}] {u} {suite} main\n",
                tools::DEBIAN_KEYRING
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Kernel configs

/// Which of `options` are not `=y` in a kernel config's text.
pub fn missing_config<'a>(config: &str, options: &[&'a str]) -> Vec<&'a str> {
    options
        .iter()
        .copied()
        .filter(|opt| {
            !config
                .lines()
                .any(|l| l.trim().strip_prefix(opt).is_some_and(|rest| rest == "=y"))
        })
        .collect()
}

/// Refuse a kernel whose config lacks what sched_ext needs; warn about VM options.
pub fn check_config(config_path: &Path, what: &str) -> Result<()> {
    let text = fs::read_to_string(config_path)
        .with_context(|| format!("reading kernel config {}", config_path.display()))?;
    check_config_text(&text, what, &config_path.display().to_string())
}

/// [`check_config`] on a config's text; `source` says where the config came from.
pub fn check_config_text(text: &str, what: &str, source: &str) -> Result<()> {
    let missing = missing_config(text, REQUIRED_CONFIG);
    if !missing.is_empty() {
        bail!(
            "kernel {what} cannot run sched_ext schedulers: its config ({source}) lacks {}",
            missing
                .iter()
                .map(|m| format!("{m}=y"))
                .collect::<Vec<_>>()
                .join(" and ")
        );
    }
    for opt in missing_config(text, VM_CONFIG) {
        eprintln!("kernel: warning: {what} has no {opt}=y; the VM may not boot");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Debian version ordering (dpkg's algorithm)

fn char_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (char_order(a.get(i).copied()), char_order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// Compare two Debian package versions (`epoch:upstream-revision`).
pub fn compare_debian_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.bytes().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((up, rev)) => (epoch, up, rev),
            None => (epoch, rest, ""),
        }
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| verrevcmp(ra.as_bytes(), rb.as_bytes()))
}

// ---------------------------------------------------------------------------------------
// Package metadata

/// Package names in a `Depends:` value (every alternative, without versions/arch).
pub fn depends_names(depends: &str) -> Vec<String> {
    depends
        .split([',', '|'])
        .filter_map(|d| {
            let name = d.trim().split([' ', '(', ':', '[']).next()?.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// How a suite ships its kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `linux-image-<rel>` holds `/boot/vmlinuz-<rel>` and `/boot/config-<rel>`.
    Image,
    /// `linux-image-<rel>` is a meta package; `linux-binary-<rel>` holds
    /// `usr/lib/modules/<rel>/vmlinuz` and `linux-base-<rel>` its config.
    BinaryBase,
}

/// The kernel release `linux-image-amd64` points to (its `linux-image-<rel>` dependency).
pub fn release_from_meta_depends(depends: &str) -> Option<String> {
    depends_names(depends).into_iter().find_map(|n| {
        n.strip_prefix("linux-image-")
            .filter(|r| *r != "amd64" && r.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .map(String::from)
    })
}

/// Decide the layout from `linux-image-<rel>`'s dependencies.
pub fn layout_from_image_depends(depends: &str, release: &str) -> Layout {
    let binary = format!("linux-binary-{release}");
    if depends_names(depends).contains(&binary) {
        Layout::BinaryBase
    } else {
        Layout::Image
    }
}

// ---------------------------------------------------------------------------------------
// Private apt

/// apt with a private state/cache for one suite.
struct PrivateApt {
    dir: PathBuf,
    suite: String,
}

impl PrivateApt {
    fn new(suite: &str) -> Result<Self> {
        let dir = crate::cache::dir().join("apt").join(suite);
        for sub in ["state/lists/partial", "cache/archives/partial"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(Self {
            dir,
            suite: suite.to_string(),
        })
    }

    fn write_sources(&self) -> Result<()> {
        let codename = system_codename();
        let uris = debian_mirror_uris(&system_sources(), codename.as_deref());
        if uris.is_empty() {
            bail!(
                "found no Debian archive in the system's apt sources (/etc/apt/sources.list, \
                 /etc/apt/sources.list.d/) to fetch kernels from; add the Debian mirror for {} \
                 or use --kernel PATH",
                codename.as_deref().unwrap_or("this system")
            );
        }
        let path = self.dir.join("sources.list");
        let text = private_sources_list(&uris, &self.suite);
        if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let d = self.dir.display();
        let mut c = Command::new(program);
        let mut opts = vec![
            format!("Dir::State={d}/state"),
            "Dir::State::status=/dev/null".into(),
            format!("Dir::Cache={d}/cache"),
            format!("Dir::Etc::SourceList={d}/sources.list"),
            "Dir::Etc::SourceParts=/dev/null".into(),
            "Dir::Etc::Preferences=/dev/null".into(),
            "Dir::Etc::PreferencesParts=/dev/null".into(),
            "Acquire::Languages=none".into(),
            "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false".into(),
            "APT::Architecture=amd64".into(),
            "APT::Architectures=amd64".into(),
        ];
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // The private dirs belong to root; apt's `_apt` sandbox user could not write them.
            opts.push("APT::Sandbox::User=root".into());
        }
        for o in opts {
            c.arg("-o").arg(o);
        }
        c.env("LC_ALL", "C");
        c
    }

    fn run(&self, program: &str, args: &[&str], cwd: Option<&Path>) -> Result<Output> {
        let mut c = self.command(program);
        c.args(args);
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        c.output()
            .with_context(|| format!("running {program} {}", args.join(" ")))
    }

    fn update(&self) -> Result<()> {
        let out = self.run("apt-get", &["-q", "update"], None)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let problem = stderr.lines().find(|l| l.starts_with("E:")).or_else(|| {
            stderr
                .lines()
                .find(|l| l.starts_with("W:") && l.contains("Failed"))
        });
        if !out.status.success() || problem.is_some() {
            bail!(
                "`apt-get update` for suite {} failed: {}",
                self.suite,
                problem.unwrap_or(stderr.trim()).trim()
            );
        }
        Ok(())
    }

    /// The fields of the candidate version of `pkg` in this suite.
    fn show_candidate(&self, pkg: &str) -> Result<BTreeMap<String, String>> {
        let out = self.run("apt-cache", &["policy", pkg], None)?;
        let policy = String::from_utf8_lossy(&out.stdout);
        let candidate = policy
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate:"))
            .map(str::trim)
            .filter(|v| *v != "(none)");
        let Some(version) = candidate else {
            bail!("package {pkg} is not in suite {}", self.suite);
        };
        let spec = format!("{pkg}={version}");
        let out = self.run("apt-cache", &["show", &spec], None)?;
        if !out.status.success() {
            bail!(
                "`apt-cache show {spec}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parse_stanzas(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .find(|st| field(st, "Package") == Some(pkg))
            .ok_or_else(|| err!("`apt-cache show {spec}` printed no record for {pkg}"))
    }

    fn download(&self, spec: &str, cwd: &Path) -> Result<()> {
        let out = self.run("apt-get", &["-q", "download", spec], Some(cwd))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let line = stderr
                .lines()
                .find(|l| l.starts_with("E:"))
                .unwrap_or(stderr.trim());
            bail!("`apt-get download {spec}` failed: {}", line.trim());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The cache

fn kernels_dir() -> PathBuf {
    crate::cache::dir().join("kernels")
}

/// A cached kernel's `meta` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The suite it came from.
    pub suite: String,
    /// The kernel release.
    pub release: String,
    /// Version of the package holding the vmlinuz.
    pub version: String,
    /// `name=version` of every package it was unpacked from.
    pub packages: String,
}

impl Meta {
    fn render(&self) -> String {
        format!(
            "suite={}\nrelease={}\nversion={}\npackages={}\n",
            self.suite, self.release, self.version, self.packages
        )
    }

    fn parse(text: &str) -> Option<Meta> {
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_string)
        };
        Some(Meta {
            suite: get("suite")?,
            release: get("release")?,
            version: get("version")?,
            packages: get("packages").unwrap_or_default(),
        })
    }
}

/// A kernel in the cache.
struct Cached {
    meta: Meta,
    dir: PathBuf,
}

impl Cached {
    fn kernel(&self) -> Kernel {
        Kernel {
            version: self.meta.release.clone(),
            bzimage: self.dir.join("vmlinuz"),
            config: Some(self.dir.join("config")),
            modules: None,
        }
    }
}

fn cached_kernels() -> Vec<Cached> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(kernels_dir()) else {
        return out;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let dir = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Some(meta) = fs::read_to_string(dir.join("meta"))
            .ok()
            .and_then(|t| Meta::parse(&t))
        else {
            continue;
        };
        if dir.join("vmlinuz").is_file() && dir.join("config").is_file() {
            out.push(Cached { meta, dir });
        }
    }
    out.sort_by(|a, b| {
        a.meta
            .suite
            .cmp(&b.meta.suite)
            .then_with(|| compare_debian_versions(&b.meta.version, &a.meta.version))
    });
    out
}

/// The newest cached kernel of `suite`.
fn newest_cached(suite: &str) -> Option<Cached> {
    cached_kernels().into_iter().find(|c| c.meta.suite == suite)
}

/// Print the cached kernels.
pub fn list() -> Result<()> {
    let all = cached_kernels();
    if all.is_empty() {
        println!(
            "no cached kernels in {} (boot once with network access to fetch one)",
            kernels_dir().display()
        );
        return Ok(());
    }
    for c in all {
        let size = fs::metadata(c.dir.join("vmlinuz"))
            .map(|m| m.len())
            .unwrap_or(0);
        println!(
            "{:<26} {:<18} {:<22} {} ({})",
            c.meta.release,
            c.meta.suite,
            c.meta.version,
            c.dir.join("vmlinuz").display(),
            human_size(size)
        );
    }
    Ok(())
}

/// Hold an exclusive `flock` on `path` (released when the file is dropped), so concurrent
/// xtask runs fetching the same suite take turns instead of failing on apt's own locks.
fn lock_exclusive(path: &Path, suite: &str) -> Result<fs::File> {
    use std::os::fd::AsRawFd;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!("kernel: {suite}: waiting for another process fetching the same suite");
        // SAFETY: as above.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "could not lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(file)
}

/// Removes a directory tree when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Remove `.tmp-*-<pid>` directories left by processes that no longer exist.
fn remove_stale_temp_dirs(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".tmp-")
            .and_then(|r| r.rsplit('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// `1.5 MiB`, `12.0 KiB`.
pub fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn offline_hint(suite: &str) -> String {
    match newest_cached(suite) {
        Some(c) => format!(
            "; to boot the cached {} instead, add --offline",
            c.meta.release
        ),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Fetching

/// Fetch (or reuse from the cache) the current kernel of `suite` (`7.3`, `7.2` or a suite
/// name). With `offline`, use the newest cached kernel of that suite without asking apt.
pub fn fetch(suite: &str, offline: bool) -> Result<Kernel> {
    let suite = parse_suite(suite)?;
    if offline {
        let c = newest_cached(&suite).ok_or_else(|| {
            err!(
                "no cached kernel for suite {suite} in {}: run once without --offline, with \
                 network access, to fetch it",
                kernels_dir().display()
            )
        })?;
        if crate::cache::verbose() {
            eprintln!(
                "kernel: {suite}: using cached {} ({}) offline",
                c.meta.release, c.meta.version
            );
        }
        return Ok(c.kernel());
    }
    fetch_online(&suite).map_err(|e| err!("{e:#}{}", offline_hint(&suite)))
}

fn fetch_online(suite: &str) -> Result<Kernel> {
    tools::require(tools::FETCH)?;
    let apt = PrivateApt::new(suite)?;
    let _lock = lock_exclusive(&apt.dir.join("xtask.lock"), suite)?;
    apt.write_sources()?;
    if crate::cache::verbose() {
        eprintln!(
            "kernel: {suite}: updating the package index (apt state in {})",
            apt.dir.display()
        );
    }
    apt.update()?;

    if crate::cache::verbose() {
        eprintln!("kernel: {suite}: resolving {META_PACKAGE}");
    }
    let meta_pkg = apt.show_candidate(META_PACKAGE)?;
    let meta_version = field(&meta_pkg, "Version").unwrap_or("?").to_string();
    let release =
        release_from_meta_depends(field(&meta_pkg, "Depends").unwrap_or("")).ok_or_else(|| {
            err!(
                "{META_PACKAGE} {meta_version} in {suite} depends on no linux-image-<release> \
                 package (Depends: {})",
                field(&meta_pkg, "Depends").unwrap_or("")
            )
        })?;
    let image_name = format!("linux-image-{release}");
    let image = apt.show_candidate(&image_name)?;
    let layout = layout_from_image_depends(field(&image, "Depends").unwrap_or(""), &release);
    let pkgs: Vec<BTreeMap<String, String>> = match layout {
        Layout::Image => vec![image],
        Layout::BinaryBase => vec![
            apt.show_candidate(&format!("linux-binary-{release}"))?,
            apt.show_candidate(&format!("linux-base-{release}"))?,
        ],
    };
    let specs: Vec<String> = pkgs
        .iter()
        .map(|p| {
            format!(
                "{}={}",
                field(p, "Package").unwrap_or(""),
                field(p, "Version").unwrap_or("")
            )
        })
        .collect();
    let version = field(&pkgs[0], "Version").unwrap_or("").to_string();
    let meta = Meta {
        suite: suite.to_string(),
        release: release.clone(),
        version: version.clone(),
        packages: specs.join(" "),
    };
    if crate::cache::verbose() {
        eprintln!(
            "kernel: {suite}: {META_PACKAGE} {meta_version} -> {release} ({})",
            specs.join(", ")
        );
    }

    let root = kernels_dir();
    let final_dir = root.join(&release);
    if let Some(old) = fs::read_to_string(final_dir.join("meta"))
        .ok()
        .and_then(|t| Meta::parse(&t))
    {
        if old == meta && final_dir.join("vmlinuz").is_file() && final_dir.join("config").is_file()
        {
            if crate::cache::verbose() {
                eprintln!(
                    "kernel: {suite}: {release} already cached in {}",
                    final_dir.display()
                );
            }
            return Ok(Cached {
                meta,
                dir: final_dir,
            }
            .kernel());
        }
    }

    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    remove_stale_temp_dirs(&root);
    let tmp = TempDir(root.join(format!(".tmp-{release}-{}", std::process::id())));
    let _ = fs::remove_dir_all(&tmp.0);
    let (debs, unpacked, staged) = (tmp.0.join("debs"), tmp.0.join("x"), tmp.0.join("k"));
    for d in [&debs, &unpacked, &staged] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }

    let total: u64 = pkgs
        .iter()
        .filter_map(|p| field(p, "Size")?.parse::<u64>().ok())
        .sum();
    eprintln!(
        "kernel: {suite}: downloading {} ({})",
        specs.join(" "),
        human_size(total)
    );
    let started = Instant::now();
    for spec in &specs {
        apt.download(spec, &debs)?;
    }
    eprintln!(
        "kernel: {suite}: downloaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut files: Vec<PathBuf> = fs::read_dir(&debs)
        .with_context(|| format!("reading {}", debs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    files.sort();
    if files.len() != specs.len() {
        bail!(
            "`apt-get download` left {} .deb files in {} instead of {}",
            files.len(),
            debs.display(),
            specs.len()
        );
    }
    for deb in &files {
        let out = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&unpacked)
            .output()
            .context("running dpkg-deb")?;
        if !out.status.success() {
            bail!(
                "`dpkg-deb -x {}` failed: {}",
                deb.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let find = |candidates: &[String]| -> Option<PathBuf> {
        candidates
            .iter()
            .map(|c| unpacked.join(c))
            .find(|p| p.is_file())
    };
    let vmlinuz = find(&[
        format!("usr/lib/modules/{release}/vmlinuz"),
        format!("boot/vmlinuz-{release}"),
        format!("lib/modules/{release}/vmlinuz"),
    ])
    .ok_or_else(|| err!("no vmlinuz for {release} in {}", specs.join(" ")))?;
    let config = find(&[
        format!("usr/lib/modules/{release}/config"),
        format!("boot/config-{release}"),
        format!("lib/modules/{release}/config"),
    ])
    .ok_or_else(|| err!("no kernel config for {release} in {}", specs.join(" ")))?;
    let config_text =
        fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
    let in_package = config.strip_prefix(&unpacked).unwrap_or(&config);
    check_config_text(
        &config_text,
        &format!("{release} from {suite}"),
        &format!("/{} in {}", in_package.display(), specs.join(" ")),
    )?;
    fs::rename(&vmlinuz, staged.join("vmlinuz")).context("staging vmlinuz")?;
    fs::rename(&config, staged.join("config")).context("staging config")?;
    fs::write(staged.join("meta"), meta.render()).context("writing meta")?;

    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)
            .with_context(|| format!("replacing {}", final_dir.display()))?;
    }
    fs::rename(&staged, &final_dir)
        .with_context(|| format!("moving the kernel into {}", final_dir.display()))?;
    eprintln!(
        "kernel: {suite}: cached {release} in {}",
        final_dir.display()
    );
    Ok(Cached {
        meta,
        dir: final_dir,
    }
    .kernel())
}

// ---------------------------------------------------------------------------------------
// User-supplied kernels

/// Config files that may belong to a user's bzImage, most specific first.
fn config_candidates(bzimage: &Path, release: Option<&str>) -> Vec<PathBuf> {
    let dir = bzimage.parent().unwrap_or(Path::new("."));
    let mut out = vec![dir.join("config")];
    if let Some(r) = release {
        out.push(dir.join(format!("config-{r}")));
        out.push(PathBuf::from(format!("/boot/config-{r}")));
    }
    // A kernel build tree: <tree>/arch/x86/boot/bzImage next to <tree>/.config.
    if bzimage.ends_with("arch/x86/boot/bzImage") {
        if let Some(tree) = bzimage.ancestors().nth(4) {
            out.push(tree.join(".config"));
        }
    }
    out
}

/// A kernel the user built: checks its config (or, without one, its BTF) for sched_ext.
pub fn user_kernel(path: &Path, modules: Option<&Path>) -> Result<Kernel> {
    let head = {
        use std::io::Read;
        let mut buf = Vec::new();
        fs::File::open(path)
            .map_err(|e| err!("cannot open --kernel {}: {e}", path.display()))?
            .take(64 * 1024)
            .read_to_end(&mut buf)
            .map_err(|e| err!("cannot read --kernel {}: {e}", path.display()))?;
        buf
    };
    let release = crate::vmlinux::bzimage_release(&head);
    if let Some(m) = modules {
        if !m.is_dir() {
            bail!("--modules {} is not a directory", m.display());
        }
    }
    let name = release
        .clone()
        .unwrap_or_else(|| path.display().to_string());
    let config = config_candidates(path, release.as_deref())
        .into_iter()
        .find(|p| p.is_file());
    match &config {
        Some(c) => {
            if crate::cache::verbose() {
                eprintln!(
                    "kernel: checking {} against {}",
                    path.display(),
                    c.display()
                );
            }
            check_config(c, &name)?;
        }
        None => {
            eprintln!(
                "kernel: no config found for {}; checking its BTF for sched_ext_ops",
                path.display()
            );
            if !crate::vmlinux::has_sched_ext_btf(path)? {
                bail!(
                    "kernel {} cannot run sched_ext schedulers: its BTF has no sched_ext_ops \
                     (build it with CONFIG_SCHED_CLASS_EXT=y and CONFIG_DEBUG_INFO_BTF=y)",
                    path.display()
                );
            }
        }
    }
    Ok(Kernel {
        version: name,
        bzimage: path.to_path_buf(),
        config,
        modules: modules.map(Path::to_path_buf),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_and_aliases() {
        assert_eq!(parse_suites("7.3").unwrap(), ["trixie-backports"]);
        assert_eq!(parse_suites("7.2").unwrap(), ["sid"]);
        assert_eq!(parse_suites("all").unwrap(), ["trixie-backports", "sid"]);
        assert_eq!(
            parse_suites("sid, 7.3,7.2,trixie-backports").unwrap(),
            ["sid", "trixie-backports"]
        );
        assert_eq!(parse_suites("unstable").unwrap(), ["sid"]);
        assert_eq!(parse_suites("trixie").unwrap(), ["trixie"]);
        assert!(parse_suites("7.x").is_err());
        assert!(parse_suites("7.3,").is_err());
        assert!(parse_suite("../etc").is_err());
        assert!(parse_suite("Sid").is_err());
    }

    #[test]
    fn select_flags_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            sel: KernelSelect,
        }
        let c = Cli::try_parse_from(["x", "--kernels", "all", "--offline"]).unwrap();
        assert_eq!(c.sel.kernels.as_deref(), Some("all"));
        assert!(c.sel.offline);
        let c = Cli::try_parse_from(["x", "--kernel", "/k", "--modules", "/m"]).unwrap();
        assert_eq!(c.sel.kernel, Some(PathBuf::from("/k")));
        assert!(Cli::try_parse_from(["x", "--kernel", "/k", "--kernels", "7.3"]).is_err());
        assert!(Cli::try_parse_from(["x", "--modules", "/m"]).is_err());
    }

    const ONE_LINE: &str = "\
# main archive
deb http://mirror.example/debian bookworm main contrib
deb-src http://mirror.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.example/debian-security bookworm-security main
deb [ signed-by=/k.gpg ] https://other.example/apt cloud-sdk-bookworm main
deb cdrom:[Debian 12]/ bookworm main
";

    const DEB822: &str = "\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian http://mirror2.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://third.example/node
Suites: nodistro
Components: main
Enabled: no
";

    #[test]
    fn one_line_sources() {
        let e = parse_one_line_sources(ONE_LINE);
        assert_eq!(e.len(), 5);
        assert_eq!(e[0].uris, ["http://mirror.example/debian"]);
        assert_eq!(e[0].suites, ["bookworm"]);
        assert_eq!(e[0].components, ["main", "contrib"]);
        assert_eq!(e[1].types, ["deb-src"]);
        assert_eq!(e[2].uris, ["http://mirror.example/debian-security"]);
        assert_eq!(e[2].suites, ["bookworm-security"]);
        assert_eq!(e[3].uris, ["https://other.example/apt"]);
        assert_eq!(
            debian_mirror_uris(&e, Some("bookworm")),
            ["http://mirror.example/debian"]
        );
        // Only the security/third-party entries: no mirror.
        assert!(debian_mirror_uris(&e[2..4], Some("bookworm")).is_empty());
    }

    #[test]
    fn deb822_sources() {
        let e = parse_deb822_sources(DEB822);
        assert_eq!(e.len(), 2, "the disabled stanza is dropped");
        assert_eq!(
            e[0].uris,
            [
                "http://mirror.example/debian",
                "http://mirror2.example/debian/"
            ]
        );
        assert_eq!(e[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            debian_mirror_uris(&e, Some("bookworm")),
            [
                "http://mirror.example/debian",
                "http://mirror2.example/debian"
            ]
        );
        // Unknown codename: fall back to a plain Debian suite name.
        assert_eq!(debian_mirror_uris(&e, None).len(), 2);
        let list = private_sources_list(&debian_mirror_uris(&e, Some("bookworm")), "sid");
        assert_eq!(
            list,
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://mirror.example/debian sid main\n\
             deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://mirror2.example/debian sid main\n"
        );
    }

    #[test]
    fn stanzas_with_continuations() {
        let st = parse_stanzas("Package: a\nDescription: x\n more\n\n\nPackage: b\n");
        assert_eq!(st.len(), 2);
        assert_eq!(field(&st[0], "description"), Some("x\nmore"));
        assert_eq!(field(&st[1], "Package"), Some("b"));
    }

    #[test]
    fn config_check() {
        let good = "CONFIG_SCHED_CLASS_EXT=y\n# comment\nCONFIG_DEBUG_INFO_BTF=y\n";
        assert!(missing_config(good, REQUIRED_CONFIG).is_empty());
        let bad = "# CONFIG_SCHED_CLASS_EXT is not set\nCONFIG_DEBUG_INFO_BTF=y\n\
                   CONFIG_DEBUG_INFO_BTF_MODULES=y\n";
        assert_eq!(
            missing_config(bad, REQUIRED_CONFIG),
            ["CONFIG_SCHED_CLASS_EXT"]
        );
        let module = "CONFIG_SCHED_CLASS_EXT=m\nCONFIG_DEBUG_INFO_BTF_MODULES=y\n";
        assert_eq!(missing_config(module, REQUIRED_CONFIG), REQUIRED_CONFIG);

        let dir = std::env::temp_dir().join(format!("xtask-cfg-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("config");
        fs::write(&p, bad).unwrap();
        let err = check_config(&p, "test").unwrap_err().to_string();
        assert!(err.contains("CONFIG_SCHED_CLASS_EXT=y"), "{err}");
        fs::write(&p, good).unwrap();
        check_config(&p, "test").unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debian_versions() {
        use Ordering::*;
        let c = compare_debian_versions;
        assert_eq!(c("7.3.4-1~bpo13+1", "7.3.4-1"), Less);
        assert_eq!(c("7.3.4-1~bpo13+1", "7.3.3-2~bpo13+1"), Greater);
        assert_eq!(c("7.10.1-1", "7.9.1-1"), Greater);
        assert_eq!(c("1:6.0-1", "7.3-1"), Greater);
        assert_eq!(c("7.2~rc1-1", "7.2-1"), Less);
        assert_eq!(c("7.2-1", "7.2-1"), Equal);
        assert_eq!(c("7.2-10", "7.2-9"), Greater);
        assert_eq!(c("7.2a-1", "7.2-1"), Greater);
        assert_eq!(c("7.2+b1", "7.2"), Greater);
    }

    #[test]
    fn metapackage_dependencies() {
        let bpo = "linux-base-amd64, linux-image-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), \
                   linux-modules-amd64";
        assert_eq!(
            release_from_meta_depends(bpo).as_deref(),
            Some("7.3.4+deb13-amd64")
        );
        assert_eq!(
            release_from_meta_depends("linux-image-7.2.1-amd64 (= 7.2.1-1)").as_deref(),
            Some("7.2.1-amd64")
        );
        assert_eq!(release_from_meta_depends("linux-image-amd64, foo"), None);
        let rel = "7.3.4+deb13-amd64";
        let image2 = "linux-base-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), \
                      linux-binary-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), \
                      linux-modules-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)";
        assert_eq!(layout_from_image_depends(image2, rel), Layout::BinaryBase);
        let image1 = "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | \
                      linux-initramfs-tool";
        assert_eq!(
            layout_from_image_depends(image1, "7.2.1-amd64"),
            Layout::Image
        );
        assert_eq!(
            depends_names("a (>= 1), b:any | c [amd64], d"),
            ["a", "b", "c", "d"]
        );
    }

    #[test]
    fn meta_round_trip() {
        let m = Meta {
            suite: "sid".into(),
            release: "7.2.1-amd64".into(),
            version: "7.2.1-1".into(),
            packages: "linux-image-7.2.1-amd64=7.2.1-1".into(),
        };
        assert_eq!(Meta::parse(&m.render()), Some(m));
        assert_eq!(Meta::parse("suite=sid\n"), None);
    }

    #[test]
    fn user_config_candidates() {
        let c = config_candidates(Path::new("/src/linux/arch/x86/boot/bzImage"), None);
        assert!(c.contains(&PathBuf::from("/src/linux/.config")));
        let c = config_candidates(Path::new("/k/vmlinuz-7.3.4"), Some("7.3.4"));
        assert_eq!(c[0], PathBuf::from("/k/config"));
        assert!(c.contains(&PathBuf::from("/boot/config-7.3.4")));
    }
}
