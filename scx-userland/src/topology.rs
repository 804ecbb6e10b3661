//! The little topology the seed example needs: how many CPUs the machine has.

use std::fs;
use std::io;

/// The machine's CPUs, read from sysfs.
#[derive(Clone, Debug)]
pub struct Topology {
    possible: Vec<u32>,
    online: Vec<u32>,
}

impl Topology {
    /// Read `/sys/devices/system/cpu/{possible,online}`.
    pub fn new() -> io::Result<Self> {
        let read = |name: &str| -> io::Result<Vec<u32>> {
            let text = fs::read_to_string(format!("/sys/devices/system/cpu/{name}"))?;
            parse_cpu_list(&text).ok_or_else(|| io::Error::other(format!("cannot parse {name}")))
        };
        Ok(Self {
            possible: read("possible")?,
            online: read("online")?,
        })
    }

    /// Number of possible CPUs (the kernel's `nr_cpu_ids`).
    pub fn nr_cpus(&self) -> usize {
        self.possible.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// Number of online CPUs.
    pub fn nr_online_cpus(&self) -> usize {
        self.online.len()
    }

    /// The online CPU ids.
    pub fn online_cpus(&self) -> &[u32] {
        &self.online
    }
}

/// Parse a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?);
                if a > b {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

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
    }

    #[test]
    fn this_machine() {
        let t = super::Topology::new().unwrap();
        assert!(t.nr_cpus() >= t.nr_online_cpus() && t.nr_online_cpus() >= 1);
    }
}
