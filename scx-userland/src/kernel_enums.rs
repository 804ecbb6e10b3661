//! The sched_ext enums this crate needs, read from the running kernel's BTF, as sched_ext
//! schedulers do, so that a kernel that renumbers them is still understood.
//!
//! The values are read once, by the first `BpfScheduler` build, and kept for the process.
//! Before that (or on a kernel without BTF, which cannot run sched_ext anyway) the values of
//! the kernels this crate is tested on are used.

use std::sync::OnceLock;

use libbpf_rs::btf::types::{Enum, Enum64};
use libbpf_rs::btf::Btf;

/// The enum values in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KernelEnums {
    /// `SCX_OPS_SWITCH_PARTIAL` (`enum scx_ops_flags`).
    pub switch_partial: u64,
    /// `SCX_ECODE_ACT_RESTART` (`enum scx_exit_code`).
    pub ecode_act_restart: i64,
    /// `enum scx_exit_kind`: (value, name) of every member.
    pub exit_kinds: Vec<(i64, String)>,
}

/// The values of kernels 6.12 to 7.3.
fn builtin() -> KernelEnums {
    KernelEnums {
        switch_partial: 8,
        ecode_act_restart: 1 << 48,
        exit_kinds: [
            (0, "SCX_EXIT_NONE"),
            (1, "SCX_EXIT_DONE"),
            (64, "SCX_EXIT_UNREG"),
            (65, "SCX_EXIT_UNREG_BPF"),
            (66, "SCX_EXIT_UNREG_KERN"),
            (67, "SCX_EXIT_SYSRQ"),
            (1024, "SCX_EXIT_ERROR"),
            (1025, "SCX_EXIT_ERROR_BPF"),
            (1026, "SCX_EXIT_ERROR_STALL"),
        ]
        .into_iter()
        .map(|(v, n)| (v, n.to_string()))
        .collect(),
    }
}

static ENUMS: OnceLock<KernelEnums> = OnceLock::new();

/// The values in use: the kernel's once [`load`] ran, else the built-in ones.
pub(crate) fn get() -> KernelEnums {
    ENUMS.get().cloned().unwrap_or_else(builtin)
}

/// Read the values from the kernel's BTF (`/sys/kernel/btf/vmlinux`) once per process.
/// A member the kernel does not have keeps its built-in value.
pub(crate) fn load() -> Result<&'static KernelEnums, libbpf_rs::Error> {
    if let Some(e) = ENUMS.get() {
        return Ok(e);
    }
    let btf = Btf::from_vmlinux()?;
    let read = from_btf(&btf);
    Ok(ENUMS.get_or_init(|| read))
}

/// Every member of the enum (or enum64) `name` in `btf`.
fn members(btf: &Btf<'_>, name: &str) -> Vec<(i128, String)> {
    if let Some(e) = btf.type_by_name::<Enum<'_>>(name) {
        return e
            .iter()
            .filter_map(|m| Some((i128::from(m.value), m.name?.to_str()?.to_string())))
            .collect();
    }
    if let Some(e) = btf.type_by_name::<Enum64<'_>>(name) {
        return e
            .iter()
            .filter_map(|m| Some((m.value, m.name?.to_str()?.to_string())))
            .collect();
    }
    Vec::new()
}

fn from_btf(btf: &Btf<'_>) -> KernelEnums {
    let mut e = builtin();
    let find = |list: &[(i128, String)], member: &str| {
        list.iter().find(|(_, n)| n == member).map(|(v, _)| *v)
    };
    if let Some(v) = find(&members(btf, "scx_ops_flags"), "SCX_OPS_SWITCH_PARTIAL") {
        e.switch_partial = v as u64;
    }
    if let Some(v) = find(&members(btf, "scx_exit_code"), "SCX_ECODE_ACT_RESTART") {
        e.ecode_act_restart = v as i64;
    }
    let kinds = members(btf, "scx_exit_kind");
    if !kinds.is_empty() {
        e.exit_kinds = kinds.into_iter().map(|(v, n)| (v as i64, n)).collect();
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_values_name_every_kind() {
        let e = get();
        assert_eq!(e.switch_partial, 8);
        assert!(e
            .exit_kinds
            .iter()
            .any(|(v, n)| *v == 1026 && n == "SCX_EXIT_ERROR_STALL"));
    }

    /// On a kernel with sched_ext in its BTF the values come from there; on one without
    /// (this host may have none), nothing is overridden.
    #[test]
    fn kernel_btf_is_read_when_present() {
        let Ok(btf) = Btf::from_vmlinux() else {
            return;
        };
        let e = from_btf(&btf);
        if members(&btf, "scx_exit_kind").is_empty() {
            assert_eq!(e, builtin());
        } else {
            assert!(e.exit_kinds.iter().any(|(_, n)| n == "SCX_EXIT_UNREG_KERN"));
        }
    }
}
