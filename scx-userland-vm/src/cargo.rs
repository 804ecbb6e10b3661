//! Cargo: the workspace (`cargo metadata`), which program to run, and building it
//! (`--message-format=json` to find the executables).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::error::{bail, err, Context, Result};

/// One `compiler-artifact` message with an executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// The package name.
    pub package: String,
    /// The target name.
    pub target: String,
    /// The target kinds (`bin`, `test`, `example`, `lib`, …).
    pub kinds: Vec<String>,
    /// Built as a test harness (`cargo test`).
    pub test: bool,
    /// The executable.
    pub executable: PathBuf,
}

/// Parse cargo's `--message-format=json` output; only artifacts with an executable.
pub fn parse_artifacts(json_lines: &str) -> Vec<Artifact> {
    let mut out = Vec::new();
    for line in json_lines.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        // package_id looks like `path+file:///…/vm/tests#vm-tests@0.1.0` (or `#0.1.0` when
        // the directory name is the package name); the manifest path is unambiguous.
        let package = package_name(&v).unwrap_or_default();
        let target = &v["target"];
        out.push(Artifact {
            package,
            target: target["name"].as_str().unwrap_or_default().to_string(),
            kinds: strings(&target["kind"]),
            test: v["profile"]["test"].as_bool().unwrap_or(false),
            executable: PathBuf::from(exe),
        });
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn package_name(v: &Value) -> Option<String> {
    let id = v["package_id"].as_str()?;
    let frag = id.rsplit_once('#').map(|(_, f)| f)?;
    match frag.split_once('@') {
        Some((name, _)) => Some(name.to_string()),
        None => {
            // `#0.1.0`: the name is the last path component before '#'.
            let path = id.rsplit_once('#')?.0;
            Some(path.rsplit('/').next()?.to_string())
        }
    }
}

fn cargo(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir);
    cmd
}

/// Run `cargo ARGS` in `dir` with JSON messages (quiet unless `--verbose`; errors and
/// warnings still show) and return the executables it produced.
pub fn cargo_artifacts(dir: &Path, args: &[String]) -> Result<Vec<Artifact>> {
    let mut cmd = cargo(dir);
    cmd.args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !crate::cache::verbose() {
        cmd.arg("--quiet");
    }
    let out = cmd
        .output()
        .with_context(|| format!("could not run `cargo {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`cargo {}` failed ({}); fix the build errors above",
            args.join(" "),
            out.status
        );
    }
    Ok(parse_artifacts(&String::from_utf8_lossy(&out.stdout)))
}

// ---------------------------------------------------------------------------------------------
// The workspace
// ---------------------------------------------------------------------------------------------

/// A workspace as `cargo metadata --no-deps` describes it.
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    /// The workspace root.
    pub root: PathBuf,
    /// The target directory.
    pub target_directory: PathBuf,
    /// The member packages.
    pub packages: Vec<Package>,
}

/// A workspace member.
#[derive(Clone, Debug, Default)]
pub struct Package {
    /// The package name.
    pub name: String,
    /// The directory of its Cargo.toml.
    pub dir: PathBuf,
    /// Its targets: `(name, kinds)`.
    pub targets: Vec<(String, Vec<String>)>,
}

impl Package {
    /// The names of its targets of `kind` (`bin`, `example`, `test`).
    pub fn targets_of(&self, kind: &str) -> Vec<&str> {
        self.targets
            .iter()
            .filter(|(_, k)| k.iter().any(|k| k == kind))
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// Parse `cargo metadata --format-version 1 --no-deps`.
pub fn parse_metadata(v: &Value) -> Result<Workspace> {
    let root = v["workspace_root"]
        .as_str()
        .context("`cargo metadata` printed no workspace_root")?;
    let target = v["target_directory"]
        .as_str()
        .context("`cargo metadata` printed no target_directory")?;
    let packages = v["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| Package {
            name: p["name"].as_str().unwrap_or_default().to_string(),
            dir: Path::new(p["manifest_path"].as_str().unwrap_or_default())
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            targets: p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    (
                        t["name"].as_str().unwrap_or_default().to_string(),
                        strings(&t["kind"]),
                    )
                })
                .collect(),
        })
        .collect();
    Ok(Workspace {
        root: root.into(),
        target_directory: target.into(),
        packages,
    })
}

/// `cargo metadata` of the workspace containing `dir`.
pub fn metadata(dir: &Path) -> Result<Workspace> {
    let out = cargo(dir)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("could not run `cargo metadata`")?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` failed in {} ({}); run this inside a cargo workspace",
            dir.display(),
            out.status
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| err!("`cargo metadata` printed invalid JSON: {e}"))?;
    parse_metadata(&v)
}

impl Workspace {
    /// The member whose directory holds `cwd` (the innermost one).
    pub fn current_package(&self, cwd: &Path) -> Option<&Package> {
        self.packages
            .iter()
            .filter(|p| cwd.starts_with(&p.dir))
            .max_by_key(|p| p.dir.components().count())
    }

    /// The member called `name`, or an error listing the members.
    pub fn package(&self, name: &str) -> Result<&Package> {
        self.packages
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                err!(
                    "no package `{name}` in the workspace {}; its packages: {}",
                    self.root.display(),
                    self.packages
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

// ---------------------------------------------------------------------------------------------
// Which program
// ---------------------------------------------------------------------------------------------

/// A bin or an example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// `--bin`.
    Bin,
    /// `--example`.
    Example,
}

impl ProgramKind {
    /// The cargo target kind.
    pub fn kind(self) -> &'static str {
        match self {
            ProgramKind::Bin => "bin",
            ProgramKind::Example => "example",
        }
    }

    /// The cargo flag.
    pub fn flag(self) -> &'static str {
        match self {
            ProgramKind::Bin => "--bin",
            ProgramKind::Example => "--example",
        }
    }
}

/// A program of the workspace to build for the guest (installed as `/bin/<name>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// Its package.
    pub package: String,
    /// Bin or example.
    pub kind: ProgramKind,
    /// The target name.
    pub name: String,
}

/// Pick the program `cargo scx-vm run` runs: `--bin`/`--example NAME` (in `-p PKG`, or in the
/// workspace), or else the only binary of `-p PKG` / of the current package / of the
/// workspace. Errors list the candidates.
pub fn resolve_program(
    ws: &Workspace,
    cwd: &Path,
    package: Option<&str>,
    wanted: Option<(ProgramKind, &str)>,
) -> Result<Program> {
    let scope: Vec<&Package> = match package {
        Some(p) => vec![ws.package(p)?],
        None => ws.packages.iter().collect(),
    };
    let list = |kind: ProgramKind, pkgs: &[&Package]| -> String {
        let all: Vec<String> = pkgs
            .iter()
            .flat_map(|p| {
                p.targets_of(kind.kind())
                    .into_iter()
                    .map(move |t| format!("{} (-p {})", t, p.name))
            })
            .collect();
        if all.is_empty() {
            "none".to_string()
        } else {
            all.join(", ")
        }
    };
    let where_ = || match package {
        Some(p) => format!("package `{p}`"),
        None => "the workspace".to_string(),
    };
    if let Some((kind, name)) = wanted {
        let found: Vec<&&Package> = scope
            .iter()
            .filter(|p| p.targets_of(kind.kind()).contains(&name))
            .collect();
        return match found.as_slice() {
            [p] => Ok(Program {
                package: p.name.clone(),
                kind,
                name: name.to_string(),
            }),
            [] => Err(err!(
                "no {} `{name}` in {}; {}s there: {}",
                kind.kind(),
                where_(),
                kind.kind(),
                list(kind, &scope)
            )),
            many => Err(err!(
                "several packages have a {} `{name}` ({}); pick one with -p",
                kind.kind(),
                many.iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
    }
    // The current package first (when no -p), then the whole scope.
    let current = if package.is_none() {
        ws.current_package(cwd)
            .filter(|p| !p.targets_of("bin").is_empty())
    } else {
        None
    };
    let pool: Vec<&Package> = match current {
        Some(p) => vec![p],
        None => scope,
    };
    let bins: Vec<(&Package, &str)> = pool
        .iter()
        .flat_map(|p| p.targets_of("bin").into_iter().map(move |b| (*p, b)))
        .collect();
    match bins.as_slice() {
        [(p, b)] => Ok(Program {
            package: p.name.clone(),
            kind: ProgramKind::Bin,
            name: b.to_string(),
        }),
        [] => Err(err!(
            "{} has no binary to run; name one with --bin, --example or --path",
            where_()
        )),
        _ => Err(err!(
            "{} has several binaries; pick one with --bin NAME (and -p PKG): {}",
            match current {
                Some(p) => format!("package `{}`", p.name),
                None => where_(),
            },
            list(ProgramKind::Bin, &pool)
        )),
    }
}

/// Build `programs` (release) in one cargo invocation in `dir`; returns `(name, executable)`
/// in the same order.
pub fn build_programs(dir: &Path, programs: &[Program]) -> Result<Vec<(String, PathBuf)>> {
    if programs.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec!["build".to_string(), "--release".to_string()];
    for p in programs {
        args.extend([
            "-p".to_string(),
            p.package.clone(),
            p.kind.flag().to_string(),
            p.name.clone(),
        ]);
    }
    let artifacts = cargo_artifacts(dir, &args)?;
    programs
        .iter()
        .map(|p| {
            artifacts
                .iter()
                .find(|a| {
                    a.package == p.package
                        && a.target == p.name
                        && !a.test
                        && a.kinds.iter().any(|k| k == p.kind.kind())
                })
                .map(|a| (p.name.clone(), a.executable.clone()))
                .ok_or_else(|| {
                    err!(
                        "`cargo {}` produced no executable for {} {} of {}",
                        args.join(" "),
                        p.kind.kind(),
                        p.name,
                        p.package
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cargo_json() {
        let json = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/vm/tests#vm-tests@0.1.0","target":{"kind":["test"],"name":"harness"},"profile":{"test":true},"executable":"/w/target/release/deps/harness-1234"}
{"reason":"compiler-artifact","package_id":"path+file:///w/vm/tests#vm-tests@0.1.0","target":{"kind":["lib"],"name":"vm_tests"},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","package_id":"path+file:///w/vm/tests#vm-tests@0.1.0","target":{"kind":["bin"],"name":"vm-demo"},"profile":{"test":false},"executable":"/w/target/release/vm-demo"}
{"reason":"compiler-artifact","package_id":"path+file:///w/scx-fifo#0.1.0","target":{"kind":["bin"],"name":"scx-fifo"},"profile":{"test":false},"executable":"/w/target/release/scx-fifo"}
{"reason":"build-finished","success":true}
not json"#;
        let a = parse_artifacts(json);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].package, "vm-tests");
        assert_eq!(a[0].target, "harness");
        assert!(a[0].test);
        assert_eq!(
            a[0].executable,
            PathBuf::from("/w/target/release/deps/harness-1234")
        );
        assert_eq!(a[1].kinds, ["bin"]);
        assert!(!a[1].test);
        assert_eq!(a[2].package, "scx-fifo");
    }

    fn ws() -> Workspace {
        let v: Value = serde_json::from_str(
            r#"{"workspace_root":"/w","target_directory":"/w/target","packages":[
                {"name":"scx-fifo","manifest_path":"/w/scx-fifo/Cargo.toml","targets":[
                    {"name":"scx-fifo","kind":["bin"]}]},
                {"name":"lib","manifest_path":"/w/lib/Cargo.toml","targets":[
                    {"name":"lib","kind":["lib"]},{"name":"seed","kind":["example"]}]},
                {"name":"tools","manifest_path":"/w/tools/Cargo.toml","targets":[
                    {"name":"a","kind":["bin"]},{"name":"b","kind":["bin"]},
                    {"name":"scx-fifo","kind":["example"]}]}
            ]}"#,
        )
        .unwrap();
        parse_metadata(&v).unwrap()
    }

    fn pick(cwd: &str, p: Option<&str>, w: Option<(ProgramKind, &str)>) -> Result<Program> {
        resolve_program(&ws(), Path::new(cwd), p, w)
    }

    #[test]
    fn resolves_the_program_to_run() {
        use ProgramKind::*;
        let w = ws();
        assert_eq!(w.target_directory, PathBuf::from("/w/target"));
        assert_eq!(w.packages[1].dir, PathBuf::from("/w/lib"));
        let p = pick("/w", Some("scx-fifo"), None).unwrap();
        assert_eq!(
            (p.package.as_str(), p.kind, p.name.as_str()),
            ("scx-fifo", Bin, "scx-fifo")
        );
        // The current package's only binary.
        let p = pick("/w/scx-fifo/src", None, None).unwrap();
        assert_eq!(p.name, "scx-fifo");
        // At the root: several candidates, listed.
        let e = pick("/w", None, None).unwrap_err().to_string();
        assert!(e.contains("several binaries"), "{e}");
        assert!(
            e.contains("scx-fifo (-p scx-fifo), a (-p tools), b (-p tools)"),
            "{e}"
        );
        let e = pick("/w/tools", None, None).unwrap_err().to_string();
        assert!(e.contains("package `tools` has several binaries"), "{e}");
        let p = pick("/w", None, Some((Bin, "b"))).unwrap();
        assert_eq!(p.package, "tools");
        let p = pick("/w", None, Some((Example, "seed"))).unwrap();
        assert_eq!((p.package.as_str(), p.kind), ("lib", Example));
        let e = pick("/w", None, Some((Bin, "nope")))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("no bin `nope` in the workspace; bins there:"),
            "{e}"
        );
        let e = pick("/w", Some("lib"), None).unwrap_err().to_string();
        assert!(e.contains("package `lib` has no binary"), "{e}");
        let e = pick("/w", Some("zzz"), None).unwrap_err().to_string();
        assert!(
            e.contains("no package `zzz`") && e.contains("scx-fifo, lib, tools"),
            "{e}"
        );
        // In the library's directory (no bins): the workspace's candidates.
        assert!(pick("/w/lib", None, None).is_err());
    }
}
