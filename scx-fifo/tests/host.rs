//! scx-fifo on an ordinary host: clear errors, no attach. (The VM suite covers the real kernel.)

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

fn scx_fifo(args: &[&str], as_nobody: bool) -> Output {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_scx-fifo"));
    if !(as_nobody && is_root()) {
        return run(Command::new(&exe).args(args));
    }
    // `nobody` may not be able to reach the build directory (a checkout in a 0700 folder):
    // run a copy from a folder anyone can enter.
    let dir = std::env::temp_dir().join(format!("scx-fifo-host-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a folder for the copy");
    let copy = dir.join("scx-fifo");
    std::fs::copy(&exe, &copy).expect("copy scx-fifo");
    for (path, mode) in [(&dir, 0o755), (&copy, 0o755)] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("make the copy reachable");
    }
    let out = run(Command::new(&copy).args(args).uid(65534).gid(65534));
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn run(cmd: &mut Command) -> Output {
    cmd.env_remove("RUST_BACKTRACE")
        .output()
        .expect("run scx-fifo")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

#[test]
fn non_root_gets_a_permission_error() {
    let out = scx_fifo(&[], true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("permission denied") && err.contains("root"),
        "{err}"
    );
}

#[test]
fn missing_sched_ext_is_named() {
    if !is_root() {
        return non_root_gets_a_permission_error();
    }
    if std::path::Path::new("/sys/kernel/sched_ext").exists() {
        // A sched_ext host: argument errors still come before anything touches the kernel.
        let out = scx_fifo(&["--slice-us", "0"], false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("invalid time slice"),
            "{err}"
        );
        return;
    }
    let out = scx_fifo(&[], false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no sched_ext") && err.contains("CONFIG_SCHED_CLASS_EXT=y"),
        "{err}"
    );
    assert!(
        err.contains("cargo xtask vm-run"),
        "the error says what to do: {err}"
    );
}

#[test]
fn help_lists_every_option() {
    let out = scx_fifo(&["--help"], false);
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--slice-us",
        "--partial",
        "--full-user",
        "--debug",
        "--stats-interval",
        "--exit-dump-len",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}: {help}");
    }
}

/// The systemd unit in the repository is valid (systemd's own checker), starts only on
/// sched_ext kernels, restarts on failure and takes its arguments from an environment file.
#[test]
fn systemd_unit_is_valid() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/scx-fifo.service"
    ))
    .expect("the unit file");
    for line in [
        "ConditionPathIsDirectory=/sys/kernel/sched_ext",
        "Restart=on-failure",
        "EnvironmentFile=-/etc/default/scx-fifo",
        "ExecStart=/usr/local/bin/scx-fifo $SCX_FIFO_FLAGS",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing `{line}`");
    }
    // Point ExecStart at the binary just built and let systemd check the rest.
    let dir = std::env::temp_dir().join(format!("scx-fifo-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scx-fifo.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/scx-fifo", env!("CARGO_BIN_EXE_scx-fifo")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) runs");
    std::fs::remove_dir_all(&dir).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
}
