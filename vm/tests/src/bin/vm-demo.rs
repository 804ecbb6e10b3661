//! `vm-demo`: the scheduler runner of the guest's `/init run` (from scx-userland-vm) as a
//! host program, so `tests/vm_demo.rs` can test it with a fake scheduler and state file.
//!
//! ```text
//! vm-demo [--duration SECS] [--scheduler PATH] [--workload CMD | --shell]
//!         [--workload-timeout SECS] [--enable-timeout SECS] [--state-file PATH] [--] ARGS...
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = scx_userland_vm::guest::command_main("run", &args);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
