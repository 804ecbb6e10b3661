//! `xtask-skel OBJECT SCRATCH`: prints the skeleton of the BPF object `OBJECT` on standard
//! output, made exactly as the scx-userland-bpf build script makes it with `build-bpf`.
//! `SCRATCH` is a file libbpf-cargo may write and this program removes.
//!
//! `cargo xtask codegen` runs it (after `cargo xtask setup` installed libbpf's build needs).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[path = "../../../scx-userland-bpf/build_support/skel.rs"]
mod bpf_skel;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [obj, scratch] = args.as_slice() else {
        eprintln!("usage: xtask-skel OBJECT SCRATCH");
        return ExitCode::from(2);
    };
    match bpf_skel::generate_skeleton(obj, scratch) {
        Ok(text) => match std::io::stdout().write_all(text.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask-skel: writing the skeleton: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("xtask-skel: {e}");
            ExitCode::FAILURE
        }
    }
}
