//! The machine's CPU topology, read once from sysfs: CPUs, SMT siblings, cores, last-level
//! caches (LLCs) and NUMA nodes.
//!
//! Everything is read when the [`Topology`] is built and kept in arrays indexed by CPU id, so
//! the lookups a policy makes per task ([`Topology::llc_of`], [`Topology::core_of`], …) are
//! an index, with no syscall and no allocation.
//!
//! [`Topology::uniform`] makes up a machine for tests of a policy; with the `scx_utils`
//! feature, `Topology::from_scx_utils` converts the topology the `scx_utils` crate reads.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The largest CPU id accepted in a sysfs CPU list (bounds what a bad list can allocate).
pub const MAX_CPU_ID: u32 = 65_535;

/// Where one CPU sits. Core, LLC and node numbers are dense: `0..nr_cores()`,
/// `0..nr_llcs()`, `0..nr_nodes()`, numbered in the order of their lowest CPU id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuInfo {
    /// The CPU id.
    pub cpu: i32,
    /// Its physical core (CPUs of one core are SMT siblings).
    pub core: u32,
    /// Its last-level cache.
    pub llc: u32,
    /// Its NUMA node (0 on machines without NUMA).
    pub node: u32,
    /// Its physical package (socket), as the kernel numbers it.
    pub package: u32,
}

/// What groups one CPU with others, before the groups are numbered densely: CPUs with equal
/// keys share a core (or an LLC, a node).
struct RawCpu {
    core_key: (u32, u32),
    llc_key: (u32, u32),
    node: u32,
    package: u32,
}

/// The machine's CPUs and how they are grouped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    possible: Vec<i32>,
    online: Vec<i32>,
    /// Indexed by CPU id, `0..nr_cpus()`; `None` for a CPU that is not online.
    cpus: Vec<Option<CpuInfo>>,
    core_cpus: Vec<Vec<i32>>,
    llc_cpus: Vec<Vec<i32>>,
    node_cpus: Vec<Vec<i32>>,
}

impl Topology {
    /// Read the running machine's topology from `/sys/devices/system`.
    pub fn new() -> io::Result<Self> {
        Self::from_sysfs(Path::new("/sys/devices/system"))
    }

    /// Read a topology from a sysfs tree rooted at `root` (the folder that holds `cpu/` and,
    /// on NUMA machines, `node/`). Missing cache or node information is not an error: a CPU
    /// without cache information counts as its package's LLC, and without `node/` every CPU
    /// is on node 0.
    pub fn from_sysfs(root: &Path) -> io::Result<Self> {
        let cpu_dir = root.join("cpu");
        let read_list = |path: PathBuf| -> io::Result<Vec<u32>> {
            let text = fs::read_to_string(&path)?;
            parse_cpu_list(&text).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("cannot parse the CPU list in {}", path.display()),
                )
            })
        };
        let possible = read_list(cpu_dir.join("possible"))?;
        let online = read_list(cpu_dir.join("online"))?;
        let nr_cpus = possible
            .iter()
            .chain(&online)
            .max()
            .map_or(0, |&m| m as usize + 1);

        // NUMA nodes: node<N>/cpulist.
        let mut node_of = vec![0u32; nr_cpus];
        if let Ok(entries) = fs::read_dir(root.join("node")) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(id) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("node"))
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                for cpu in read_list(entry.path().join("cpulist")).unwrap_or_default() {
                    if let Some(slot) = node_of.get_mut(cpu as usize) {
                        *slot = id;
                    }
                }
            }
        }

        // Per online CPU: its core (the smallest CPU of its SMT siblings), its LLC (the
        // smallest CPU sharing its highest-level cache) and its package.
        let mut raw = BTreeMap::new();
        for &cpu in &online {
            let dir = cpu_dir.join(format!("cpu{cpu}"));
            let read_u32 = |rel: &str| -> Option<u32> {
                fs::read_to_string(dir.join(rel))
                    .ok()?
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .map(|v| v.max(0) as u32)
            };
            let package = read_u32("topology/physical_package_id").unwrap_or(0);
            let siblings = read_list(dir.join("topology/thread_siblings_list"))
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| vec![cpu]);
            let first_sibling = siblings.iter().copied().min().unwrap_or(cpu);
            let llc_first = highest_cache_shared_first(&dir.join("cache"));
            raw.insert(
                cpu,
                RawCpu {
                    core_key: (package, first_sibling),
                    // Without cache information, the package is the LLC.
                    llc_key: llc_first.map_or((package, u32::MAX), |first| (u32::MAX, first)),
                    node: node_of.get(cpu as usize).copied().unwrap_or(0),
                    package,
                },
            );
        }
        Ok(Self::from_raw(possible, online, nr_cpus, &raw))
    }

    /// Number the groups of `raw` densely, in the order of each group's lowest CPU (`raw`
    /// iterates by CPU), and index everything by CPU id (`0..nr_cpus`).
    fn from_raw(
        possible: Vec<u32>,
        online: Vec<u32>,
        nr_cpus: usize,
        raw: &BTreeMap<u32, RawCpu>,
    ) -> Self {
        let mut core_ids = BTreeMap::new();
        let mut llc_ids = BTreeMap::new();
        let mut node_ids = BTreeMap::new();
        let mut cpus = vec![None; nr_cpus];
        let (mut core_cpus, mut llc_cpus, mut node_cpus) = (
            Vec::<Vec<i32>>::new(),
            Vec::<Vec<i32>>::new(),
            Vec::<Vec<i32>>::new(),
        );
        // CPU ids are at most MAX_CPU_ID (parse_cpu_list and the constructors see to it), so
        // they fit the i32 every CPU id of the API is.
        let id = |cpu: u32| cpu as i32;
        for (&cpu, r) in raw {
            let dense = |ids: &mut BTreeMap<(u32, u32), u32>, groups: &mut Vec<Vec<i32>>, key| {
                let next = ids.len() as u32;
                let group = *ids.entry(key).or_insert(next);
                if group as usize == groups.len() {
                    groups.push(Vec::new());
                }
                groups[group as usize].push(id(cpu));
                group
            };
            let core = dense(&mut core_ids, &mut core_cpus, r.core_key);
            let llc = dense(&mut llc_ids, &mut llc_cpus, r.llc_key);
            let node = dense(&mut node_ids, &mut node_cpus, (r.node, 0));
            if let Some(slot) = cpus.get_mut(cpu as usize) {
                *slot = Some(CpuInfo {
                    cpu: id(cpu),
                    core,
                    llc,
                    node,
                    package: r.package,
                });
            }
        }
        Self {
            possible: possible.into_iter().map(id).collect(),
            online: online.into_iter().map(id).collect(),
            cpus,
            core_cpus,
            llc_cpus,
            node_cpus,
        }
    }

    /// A made-up machine, for testing a policy without one: `packages` packages of
    /// `cores_per_package` cores of `threads_per_core` SMT threads, each package its own LLC
    /// and NUMA node, every CPU online. CPUs are numbered package by package, core by core:
    /// CPU `(p * cores_per_package + c) * threads_per_core + t`. `None` when a count is 0 or
    /// the machine would have CPU ids above [`MAX_CPU_ID`].
    pub fn uniform(packages: u32, cores_per_package: u32, threads_per_core: u32) -> Option<Self> {
        let nr_cpus = packages
            .checked_mul(cores_per_package)?
            .checked_mul(threads_per_core)?;
        if nr_cpus == 0 || nr_cpus > MAX_CPU_ID + 1 {
            return None;
        }
        let raw = (0..nr_cpus)
            .map(|cpu| {
                let core = cpu / threads_per_core;
                let package = core / cores_per_package;
                let info = RawCpu {
                    core_key: (0, core),
                    llc_key: (0, package),
                    node: package,
                    package,
                };
                (cpu, info)
            })
            .collect();
        let all: Vec<u32> = (0..nr_cpus).collect();
        Some(Self::from_raw(all.clone(), all, nr_cpus as usize, &raw))
    }

    /// Number of possible CPUs (the kernel's `nr_cpu_ids`): CPU ids are below it.
    pub fn nr_cpus(&self) -> usize {
        self.possible.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// Number of online CPUs.
    pub fn nr_online_cpus(&self) -> usize {
        self.online.len()
    }

    /// The online CPU ids.
    pub fn online_cpus(&self) -> &[i32] {
        &self.online
    }

    /// Number of physical cores with an online CPU.
    pub fn nr_cores(&self) -> usize {
        self.core_cpus.len()
    }

    /// Number of last-level caches with an online CPU.
    pub fn nr_llcs(&self) -> usize {
        self.llc_cpus.len()
    }

    /// Number of NUMA nodes with an online CPU.
    pub fn nr_nodes(&self) -> usize {
        self.node_cpus.len()
    }

    /// Where `cpu` sits; `None` for a negative id, an id out of range or an offline CPU.
    #[inline]
    pub fn cpu(&self, cpu: i32) -> Option<&CpuInfo> {
        usize::try_from(cpu)
            .ok()
            .and_then(|i| self.cpus.get(i)?.as_ref())
    }

    /// The core of `cpu` (see [`cpu`](Self::cpu) for `None`).
    #[inline]
    pub fn core_of(&self, cpu: i32) -> Option<u32> {
        self.cpu(cpu).map(|c| c.core)
    }

    /// The last-level cache of `cpu` (see [`cpu`](Self::cpu) for `None`).
    #[inline]
    pub fn llc_of(&self, cpu: i32) -> Option<u32> {
        self.cpu(cpu).map(|c| c.llc)
    }

    /// The NUMA node of `cpu` (see [`cpu`](Self::cpu) for `None`).
    #[inline]
    pub fn node_of(&self, cpu: i32) -> Option<u32> {
        self.cpu(cpu).map(|c| c.node)
    }

    /// The online CPUs of `cpu`'s core, `cpu` included (empty for an unknown CPU).
    pub fn smt_siblings(&self, cpu: i32) -> &[i32] {
        self.core_of(cpu).map_or(&[], |core| self.core_cpus(core))
    }

    /// The online CPUs of core `core`, ascending (empty for an unknown core).
    pub fn core_cpus(&self, core: u32) -> &[i32] {
        self.core_cpus.get(core as usize).map_or(&[], Vec::as_slice)
    }

    /// The online CPUs that share last-level cache `llc`, ascending (empty for an unknown LLC).
    pub fn llc_cpus(&self, llc: u32) -> &[i32] {
        self.llc_cpus.get(llc as usize).map_or(&[], Vec::as_slice)
    }

    /// The online CPUs of NUMA node number `node` (dense, as in [`CpuInfo::node`]).
    pub fn node_cpus(&self, node: u32) -> &[i32] {
        self.node_cpus.get(node as usize).map_or(&[], Vec::as_slice)
    }
}

/// Why an [`scx_utils::Topology`] could not be converted into a [`Topology`].
#[cfg(feature = "scx_utils")]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FromScxUtilsError {
    /// The topology lists no CPU.
    #[error("the scx_utils topology lists no CPU")]
    NoCpus,
    /// A CPU id above [`MAX_CPU_ID`].
    #[error("CPU id {0} is above the largest supported id ({MAX_CPU_ID})")]
    CpuIdTooLarge(usize),
    /// A CPU's node or package id does not fit in 32 bits.
    #[error("CPU {cpu}: its {what} id {id} does not fit in 32 bits")]
    IdTooLarge {
        /// The CPU.
        cpu: usize,
        /// `"node"` or `"package"`.
        what: &'static str,
        /// The id.
        id: usize,
    },
}

#[cfg(feature = "scx_utils")]
impl Topology {
    /// The same machine as `topo`, a topology read by the `scx_utils` crate (feature
    /// `scx_utils`), for schedulers that already build one: `scx_utils::Topology::new()?`
    /// then `Topology::from_scx_utils(&topo)?` (or `Topology::try_from(&topo)`).
    ///
    /// Every online CPU of `topo` keeps the grouping `scx_utils` gave it: its core, its LLC,
    /// its NUMA node and its package. The core, LLC and node numbers are then renumbered
    /// densely in the order of their lowest CPU, as [`Topology::new`] numbers them, so both
    /// give the same numbers for the same grouping (`scx_utils`' own core and LLC ids are
    /// its internal counters and are not kept). Where the two may group differently:
    /// `scx_utils` takes the L3 (else the L2) as the LLC and splits an LLC that spans two
    /// NUMA nodes; [`Topology::new`] takes the highest-level data cache, whichever nodes
    /// share it. The possible CPUs are `0..topo.span.len()` (`scx_utils`' mask width).
    ///
    /// Errors: [`FromScxUtilsError`] for a topology without CPUs or with ids out of range.
    pub fn from_scx_utils(topo: &scx_utils::Topology) -> Result<Self, FromScxUtilsError> {
        if topo.all_cpus.is_empty() {
            return Err(FromScxUtilsError::NoCpus);
        }
        let id32 = |cpu: usize, what: &'static str, id: usize| {
            u32::try_from(id).map_err(|_| FromScxUtilsError::IdTooLarge { cpu, what, id })
        };
        let mut raw = BTreeMap::new();
        for (&id, cpu) in &topo.all_cpus {
            let cpu_id = u32::try_from(id)
                .ok()
                .filter(|&c| c <= MAX_CPU_ID)
                .ok_or(FromScxUtilsError::CpuIdTooLarge(id))?;
            // scx_utils' core and LLC ids are unique machine-wide: they only group here, so
            // the smallest CPU of the group stands for it (ids past u32 cannot collide).
            let group_first = |group: Option<Vec<usize>>| {
                group
                    .and_then(|g| g.into_iter().min())
                    .and_then(|c| u32::try_from(c).ok())
                    .unwrap_or(cpu_id)
            };
            let core_first = group_first(
                topo.all_cores
                    .get(&cpu.core_id)
                    .map(|c| c.cpus.keys().copied().collect()),
            );
            let llc_first = group_first(
                topo.all_llcs
                    .get(&cpu.llc_id)
                    .map(|l| l.all_cpus.keys().copied().collect()),
            );
            raw.insert(
                cpu_id,
                RawCpu {
                    core_key: (0, core_first),
                    llc_key: (0, llc_first),
                    node: id32(id, "node", cpu.node_id)?,
                    package: id32(id, "package", cpu.package_id)?,
                },
            );
        }
        let online: Vec<u32> = raw.keys().copied().collect();
        let max_online = online.last().map_or(0, |&c| c as usize + 1);
        let nr_cpus = topo.span.len().clamp(max_online, MAX_CPU_ID as usize + 1);
        let possible = (0..nr_cpus as u32).collect();
        Ok(Self::from_raw(possible, online, nr_cpus, &raw))
    }
}

#[cfg(feature = "scx_utils")]
impl TryFrom<&scx_utils::Topology> for Topology {
    type Error = FromScxUtilsError;

    /// [`Topology::from_scx_utils`].
    fn try_from(topo: &scx_utils::Topology) -> Result<Self, Self::Error> {
        Self::from_scx_utils(topo)
    }
}

/// The smallest CPU sharing the highest-level cache listed under `cache_dir` (`index<N>/level`
/// and `shared_cpu_list`), if any is listed.
fn highest_cache_shared_first(cache_dir: &Path) -> Option<u32> {
    let mut best: Option<(u32, u32)> = None;
    for entry in fs::read_dir(cache_dir).ok()?.flatten() {
        let path = entry.path();
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("index"))
        {
            continue;
        }
        let Some(level) = fs::read_to_string(path.join("level"))
            .ok()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            continue;
        };
        // Instruction caches do not hold data: not the LLC.
        if fs::read_to_string(path.join("type")).is_ok_and(|t| t.trim() == "Instruction") {
            continue;
        }
        let Some(first) = fs::read_to_string(path.join("shared_cpu_list"))
            .ok()
            .and_then(|t| parse_cpu_list(&t))
            .and_then(|l| l.into_iter().min())
        else {
            continue;
        };
        if best.is_none_or(|(l, _)| level > l) {
            best = Some((level, first));
        }
    }
    best.map(|(_, first)| first)
}

/// Parse a kernel CPU list such as `0-3,8,10-11`. `None` for anything else, and for ids
/// above [`MAX_CPU_ID`].
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?);
                if a > b || b > MAX_CPU_ID {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => {
                let cpu = part.parse().ok()?;
                if cpu > MAX_CPU_ID {
                    return None;
                }
                cpus.push(cpu);
            }
        }
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        // A huge range is refused, not allocated.
        assert_eq!(parse_cpu_list("0-4294967295"), None);
        assert_eq!(parse_cpu_list("70000"), None);
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// 2 packages x 2 cores x 2 SMT threads, one L3 per package, a NUMA node per package.
    /// CPU numbering as Linux often does: siblings are n and n+4.
    fn two_sockets(root: &Path, with_nodes: bool) {
        write(root, "cpu/possible", "0-7\n");
        write(root, "cpu/online", "0-7\n");
        for cpu in 0..8u32 {
            let package = (cpu % 4) / 2;
            let sib = cpu % 4;
            let d = format!("cpu/cpu{cpu}");
            write(
                root,
                &format!("{d}/topology/physical_package_id"),
                &format!("{package}\n"),
            );
            write(
                root,
                &format!("{d}/topology/thread_siblings_list"),
                &format!("{sib},{}\n", sib + 4),
            );
            write(root, &format!("{d}/cache/index0/level"), "1\n");
            write(root, &format!("{d}/cache/index0/type"), "Data\n");
            write(
                root,
                &format!("{d}/cache/index0/shared_cpu_list"),
                &format!("{sib},{}\n", sib + 4),
            );
            write(root, &format!("{d}/cache/index1/level"), "1\n");
            write(root, &format!("{d}/cache/index1/type"), "Instruction\n");
            write(
                root,
                &format!("{d}/cache/index1/shared_cpu_list"),
                &format!("{sib},{}\n", sib + 4),
            );
            let first = package * 2;
            write(root, &format!("{d}/cache/index3/level"), "3\n");
            write(root, &format!("{d}/cache/index3/type"), "Unified\n");
            write(
                root,
                &format!("{d}/cache/index3/shared_cpu_list"),
                &format!("{first}-{},{}-{}\n", first + 1, first + 4, first + 5),
            );
        }
        if with_nodes {
            write(root, "node/node0/cpulist", "0-1,4-5\n");
            write(root, "node/node1/cpulist", "2-3,6-7\n");
        }
    }

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("scx-topo-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn two_sockets_with_smt() {
        let root = tempdir("sockets");
        two_sockets(&root, true);
        let t = Topology::from_sysfs(&root).unwrap();
        fs::remove_dir_all(&root).unwrap();
        assert_eq!((t.nr_cpus(), t.nr_online_cpus()), (8, 8));
        assert_eq!((t.nr_cores(), t.nr_llcs(), t.nr_nodes()), (4, 2, 2));
        assert_eq!(t.smt_siblings(1), &[1, 5]);
        assert_eq!(t.smt_siblings(5), &[1, 5]);
        assert_eq!(t.llc_cpus(t.llc_of(6).unwrap()), &[2, 3, 6, 7]);
        assert_eq!(t.llc_of(0), t.llc_of(5));
        assert_ne!(t.llc_of(0), t.llc_of(2));
        assert_eq!(t.node_of(7), Some(1));
        assert_eq!(t.node_cpus(0), &[0, 1, 4, 5]);
        assert_eq!(t.cpu(3).unwrap().package, 1);
        // Bad ids are None / empty, never a panic.
        assert_eq!(t.cpu(-1), None);
        assert_eq!(t.llc_of(8), None);
        assert!(t.smt_siblings(i32::MAX).is_empty());
        assert!(t.llc_cpus(99).is_empty());
    }

    #[test]
    fn uniform_machines() {
        let t = Topology::uniform(2, 2, 2).unwrap();
        assert_eq!((t.nr_cpus(), t.nr_online_cpus()), (8, 8));
        assert_eq!((t.nr_cores(), t.nr_llcs(), t.nr_nodes()), (4, 2, 2));
        assert_eq!(t.smt_siblings(3), &[2, 3]);
        assert_eq!(t.llc_cpus(1), &[4, 5, 6, 7]);
        assert_eq!(t.cpu(5).unwrap().package, 1);
        assert_eq!(t.node_of(4), Some(1));
        assert!(Topology::uniform(0, 2, 2).is_none());
        assert!(Topology::uniform(2, 0, 1).is_none());
        assert!(Topology::uniform(u32::MAX, u32::MAX, 2).is_none());
        assert!(Topology::uniform(1, MAX_CPU_ID + 2, 1).is_none());
        assert_eq!(
            Topology::uniform(1, MAX_CPU_ID + 1, 1).unwrap().nr_cpus(),
            MAX_CPU_ID as usize + 1
        );
    }

    #[test]
    fn missing_cache_and_node_information() {
        let root = tempdir("bare");
        write(&root, "cpu/possible", "0-3\n");
        write(&root, "cpu/online", "0,2-3\n");
        let t = Topology::from_sysfs(&root).unwrap();
        fs::remove_dir_all(&root).unwrap();
        // No SMT or cache data: every CPU is its own core, all share the package's LLC.
        assert_eq!((t.nr_cores(), t.nr_llcs(), t.nr_nodes()), (3, 1, 1));
        assert_eq!(t.cpu(1), None, "offline CPU");
        assert_eq!(t.llc_cpus(0), &[0, 2, 3]);
    }

    #[test]
    fn unreadable_lists_are_errors() {
        let root = tempdir("bad");
        write(&root, "cpu/possible", "0-x\n");
        write(&root, "cpu/online", "0\n");
        let err = Topology::from_sysfs(&root).unwrap_err();
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(Topology::from_sysfs(Path::new("/nonexistent")).is_err());
    }

    /// scx_utils and sysfs read this machine the same way. Core, LLC and node numbers are
    /// compared as they are: both sides number their groups densely by lowest CPU, so equal
    /// groupings give equal numbers whatever ids scx_utils uses inside.
    #[cfg(feature = "scx_utils")]
    #[test]
    fn scx_utils_reads_this_machine_the_same_way() {
        let theirs = scx_utils::Topology::new().expect("scx_utils reads the topology");
        let converted = Topology::try_from(&theirs).expect("conversion");
        let ours = Topology::new().unwrap();
        assert_eq!(converted.nr_cpus(), ours.nr_cpus());
        assert_eq!(converted.online_cpus(), ours.online_cpus());
        assert_eq!(
            (
                converted.nr_cores(),
                converted.nr_llcs(),
                converted.nr_nodes()
            ),
            (ours.nr_cores(), ours.nr_llcs(), ours.nr_nodes())
        );
        assert_eq!(ours.online_cpus().len(), theirs.all_cpus.len());
        for &cpu in ours.online_cpus() {
            assert_eq!(converted.cpu(cpu), ours.cpu(cpu), "CPU {cpu}");
            assert_eq!(
                converted.smt_siblings(cpu),
                ours.smt_siblings(cpu),
                "CPU {cpu}"
            );
            // And against scx_utils' own view, through its structures.
            let their_cpu = &theirs.all_cpus[&(cpu as usize)];
            let their_siblings: Vec<i32> = theirs.all_cores[&their_cpu.core_id]
                .cpus
                .keys()
                .map(|&c| c as i32)
                .collect();
            assert_eq!(
                ours.smt_siblings(cpu),
                their_siblings.as_slice(),
                "CPU {cpu}"
            );
            assert_eq!(
                ours.cpu(cpu).unwrap().package as usize,
                their_cpu.package_id,
                "CPU {cpu}"
            );
        }
        println!(
            "scx_utils and sysfs agree: {} CPUs, {} cores, {} LLCs, {} nodes",
            ours.nr_online_cpus(),
            ours.nr_cores(),
            ours.nr_llcs(),
            ours.nr_nodes()
        );
    }

    #[test]
    fn this_machine() {
        let t = Topology::new().unwrap();
        assert!(t.nr_cpus() >= t.nr_online_cpus() && t.nr_online_cpus() >= 1);
        for &cpu in t.online_cpus() {
            let info = t.cpu(cpu).unwrap();
            assert!(t.smt_siblings(cpu).contains(&cpu));
            assert!(t.llc_cpus(info.llc).contains(&cpu));
        }
    }
}
