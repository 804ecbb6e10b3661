//! `cargo xtask codegen`: regenerate the checked-in artefacts, or check they are current.
//!
//! - `scx-userland-sys/src/bindings.rs`: bindgen over `include/intf.h`.
//! - `scx-userland-bpf/src/bpf/intf.h`: a copy of `scx-userland-sys/include/intf.h`, so the
//!   -bpf package holds every BPF source it is built from.
//! - `scx-userland-bpf/vendored/userland.bpf.o` (+ `.sha256`): the BPF object, compiled
//!   by the -bpf crate's build script with its `build-bpf` feature.
//! - `scx-userland-bpf/src/skel.rs`: the libbpf-cargo skeleton of the vendored object (so
//!   users of the crate need no libbpf-cargo), loading the object the build uses.
//! - `scx-userland-bpf/src/bpf/vmlinux.h`: only with `--vmlinux`, from the BTF of the
//!   trixie-backports kernel (network access to the Debian archive).
//!
//! `--check` writes nothing and fails when any of them is out of date.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::{self, Need};
use crate::workspace_root;

/// `cargo xtask codegen` arguments.
#[derive(clap::Parser)]
pub struct CodegenArgs {
    /// Only check that the checked-in artefacts are current; exit non-zero if not.
    #[arg(long)]
    check: bool,
    /// Also regenerate vmlinux.h from the BTF of Debian's trixie-backports kernel.
    #[arg(long, conflicts_with = "check")]
    vmlinux: bool,
}

const BINDINGS: &str = "scx-userland-sys/src/bindings.rs";
const INTF_H: &str = "scx-userland-sys/include/intf.h";
const INTF_H_COPY: &str = "scx-userland-bpf/src/bpf/intf.h";
const SKEL: &str = "scx-userland-bpf/src/skel.rs";
const VENDORED_OBJ: &str = "scx-userland-bpf/vendored/userland.bpf.o";
const VMLINUX_H: &str = "scx-userland-bpf/src/bpf/vmlinux.h";

pub fn run(args: CodegenArgs) -> Result<()> {
    let root = workspace_root();
    setup::ensure(&[Need::Libclang])?;

    if args.vmlinux {
        let kernel = crate::kernel::fetch("trixie-backports", false)?;
        crate::vmlinux::write_vmlinux_h(&kernel.bzimage, &root.join(VMLINUX_H))?;
        println!("codegen: wrote {VMLINUX_H} from kernel {}", kernel.version);
    }

    let bindings = generate_bindings(&root)?;
    let path = root.join(BINDINGS);
    let current = fs::read_to_string(&path).unwrap_or_default();
    let mut stale = Vec::new();
    if current != bindings {
        if args.check {
            stale.push(format!(
                "{BINDINGS} differs from bindgen's output for {INTF_H}"
            ));
        } else {
            fs::write(&path, &bindings).with_context(|| format!("writing {}", path.display()))?;
            println!("codegen: wrote {BINDINGS}");
        }
    }

    let intf = fs::read(root.join(INTF_H)).with_context(|| format!("reading {INTF_H}"))?;
    if fs::read(root.join(INTF_H_COPY)).ok().as_ref() != Some(&intf) {
        if args.check {
            stale.push(format!("{INTF_H_COPY} is not a copy of {INTF_H}"));
        } else {
            fs::write(root.join(INTF_H_COPY), &intf)
                .with_context(|| format!("writing {INTF_H_COPY}"))?;
            println!("codegen: copied {INTF_H} to {INTF_H_COPY}");
        }
    }

    let source_hash = bpf_source_hash(&root)?;
    let vendored_hash = fs::read_to_string(root.join(format!("{VENDORED_OBJ}.sha256")))
        .unwrap_or_default()
        .trim()
        .to_string();
    if vendored_hash != source_hash {
        if args.check {
            stale.push(format!(
                "{VENDORED_OBJ} was not built from the current BPF sources"
            ));
        } else {
            setup::ensure(&[Need::Clang, Need::LibbpfBuild])?;
            let (obj, hash) = build_bpf_object(&root)?;
            fs::copy(&obj, root.join(VENDORED_OBJ))
                .with_context(|| format!("copying {} to {VENDORED_OBJ}", obj.display()))?;
            fs::write(
                root.join(format!("{VENDORED_OBJ}.sha256")),
                format!("{hash}\n"),
            )?;
            println!(
                "codegen: rebuilt {VENDORED_OBJ} ({} bytes)",
                fs::metadata(&obj)?.len()
            );
        }
    }

    // The skeleton of the vendored object as it is now (rebuilt above if it was stale).
    let skel = generate_skeleton(&root)?;
    let current = fs::read_to_string(root.join(SKEL)).unwrap_or_default();
    if current != skel {
        if args.check {
            stale.push(format!(
                "{SKEL} differs from libbpf-cargo's skeleton of {VENDORED_OBJ}"
            ));
        } else {
            fs::write(root.join(SKEL), &skel).with_context(|| format!("writing {SKEL}"))?;
            println!("codegen: wrote {SKEL}");
        }
    }

    if !stale.is_empty() {
        bail!(
            "generated files are out of date:\n  {}\nrun `cargo xtask codegen` and commit the result",
            stale.join("\n  ")
        );
    }
    if args.check {
        println!("codegen: bindings, intf.h copy, vendored BPF object and skeleton are current");
    }
    Ok(())
}

/// bindgen over intf.h, with a header saying how to regenerate it.
fn generate_bindings(root: &Path) -> Result<String> {
    let header = root.join(INTF_H);
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .use_core()
        .layout_tests(true)
        .derive_default(true)
        .derive_debug(true)
        .derive_copy(true)
        .impl_debug(true)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .allowlist_type("queued_task_ctx|dispatched_task_ctx|rl_exit_info|rl_.*")
        .allowlist_var("RL_.*")
        .generate_comments(true)
        .clang_arg("-fparse-all-comments")
        .disable_header_comment()
        .generate()
        .map_err(|e| anyhow::anyhow!("bindgen failed on {}: {e}", header.display()))?;
    let body = bindings.to_string();
    let text = format!(
        "// Generated by `cargo xtask codegen` from include/intf.h. Do not edit.\n\
         // CI runs `cargo xtask codegen --check` and fails when this file drifts.\n\n{body}"
    );
    rustfmt(&text)
}

fn rustfmt(text: &str) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running rustfmt (rustup component add rustfmt)")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("rustfmt failed on the generated code");
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[path = "../../scx-userland-bpf/build_support/sources.rs"]
mod bpf_sources;

/// The skeleton of the vendored object, made as the -bpf build script makes it with
/// `build-bpf` (by the `xtask-skel` helper, which links libbpf so that xtask need not), with a
/// header saying how to regenerate it.
fn generate_skeleton(root: &Path) -> Result<String> {
    let tmp = root.join("target").join("xtask-codegen-skel.rs");
    fs::create_dir_all(root.join("target"))?;
    let out = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["run", "--quiet", "-p", "xtask-skel", "--"])
        .arg(root.join(VENDORED_OBJ))
        .arg(&tmp)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo run -p xtask-skel")?;
    if !out.status.success() {
        bail!("generating the skeleton of {VENDORED_OBJ} failed (see above)");
    }
    let skel = String::from_utf8(out.stdout).context("the skeleton is not UTF-8")?;
    let text = format!(
        "// Generated by `cargo xtask codegen` from vendored/userland.bpf.o (libbpf-cargo). Do not edit.\n\
         // CI runs `cargo xtask codegen --check` and fails when this file drifts. The object's\n\
         // bytes come from `SCX_USERLAND_BPF_OBJECT`, set by build.rs.\n\n{skel}"
    );
    rustfmt(&text)
}

/// The hash of the BPF sources, computed exactly as the -bpf build script does.
fn bpf_source_hash(root: &Path) -> Result<String> {
    bpf_sources::hash_sources(&root.join("scx-userland-bpf")).context("reading the BPF sources")
}

/// Build scx-userland-bpf with clang (`build-bpf`) and return (object path in OUT_DIR, its
/// source hash).
fn build_bpf_object(root: &Path) -> Result<(PathBuf, String)> {
    let out = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "-p",
            "scx-userland-bpf",
            "--features",
            "build-bpf",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo build -p scx-userland-bpf --features build-bpf")?;
    if !out.status.success() {
        bail!("building the BPF object failed (see the clang errors above)");
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "build-script-executed"
            && msg["package_id"]
                .as_str()
                .is_some_and(|id| id.contains("scx-userland-bpf"))
        {
            let out_dir = PathBuf::from(msg["out_dir"].as_str().unwrap_or_default());
            let obj = out_dir.join("userland.bpf.o");
            let hash = fs::read_to_string(out_dir.join("userland.bpf.o.sha256"))
                .with_context(|| format!("reading the hash beside {}", obj.display()))?;
            return Ok((obj, hash.trim().to_string()));
        }
    }
    bail!("cargo did not report the scx-userland-bpf build script's output directory")
}
