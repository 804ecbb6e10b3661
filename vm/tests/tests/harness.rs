//! Self-tests of the VM harness: they check the guest is what the other VM tests expect, and
//! `deliberate_failure` proves a failing test really fails the run
//! (`cargo xtask vm-test --fail-selftest`).

use std::time::Duration;

use vm_tests::{read_state, BTF_VMLINUX, FAIL_SELFTEST_ENV, STATE_PATH};

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn sched_ext_state_is_disabled() {
    let state = read_state().unwrap_or_else(|e| {
        panic!("cannot read {STATE_PATH}: {e} (is CONFIG_SCHED_CLASS_EXT=y in the guest kernel?)")
    });
    assert_eq!(
        state, "disabled",
        "no BPF scheduler should be loaded at test start"
    );
    // And it stays that way: nothing in the guest loads one behind our back.
    vm_tests::wait_for_state("disabled", Duration::from_millis(100)).unwrap();
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn btf_vmlinux_present() {
    let meta = std::fs::metadata(BTF_VMLINUX).unwrap_or_else(|e| {
        panic!("cannot stat {BTF_VMLINUX}: {e} (is CONFIG_DEBUG_INFO_BTF=y in the guest kernel?)")
    });
    assert!(meta.len() > 0, "{BTF_VMLINUX} is empty");
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn deliberate_failure() {
    let requested = std::env::var(FAIL_SELFTEST_ENV).is_ok_and(|v| v == "1");
    assert!(
        !requested,
        "deliberate failure requested by {FAIL_SELFTEST_ENV}=1 (cargo xtask vm-test --fail-selftest)"
    );
}

#[test]
#[ignore = "needs the sched_ext VM: cargo xtask vm-test"]
fn init_runs_the_demo_workload_as_a_program() {
    // The guest's /init doubles as a program (scx-userland-vm's `/init demo`).
    let out = vm_tests::run_with_timeout(
        std::process::Command::new("/init").args(["demo", "--duration", "1"]),
        Duration::from_secs(60),
    )
    .unwrap();
    let text = out.stdout_str();
    assert!(out.success(), "{text}{}", out.stderr_str());
    assert!(text.contains("workload done in"), "{text}");
}
