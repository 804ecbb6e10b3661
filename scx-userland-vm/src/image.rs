//! A newc cpio writer and the guest image builder.
//!
//! [`GuestImage`] collects the guest's file tree in memory (paths sorted, so the archive is
//! the same bytes for the same inputs: mtime 0, uid/gid 0, inode numbers assigned in path
//! order) and [`GuestImage::write`] streams it as an uncompressed newc ("070701") archive the
//! kernel unpacks as its initramfs. Every image has `/init` (the static guest init, see
//! [`crate::guest`]), the mount points it uses, and `/dev/console` and `/dev/null` so the
//! kernel can open the console for `/init` before devtmpfs is mounted.
//!
//! The plan (which tests `/init` runs) is rendered to `/etc/vm-plan`; its format and the
//! parser live in [`crate::guest::plan`], which the guest's `/init` is built from too.
//!
//! Host executables are added with the shared libraries `ldd` reports, at the same absolute
//! paths (symlinks resolved: the real file is stored under the linked name).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{bail, Context, Result};
pub use crate::guest::plan::{Plan, PlanTest, PLAN_PATH};
pub use crate::tools::HOST_BUSYBOX;

/// Applets linked into `/bin` by [`GuestImage::add_busybox`] (those the host build has).
const BUSYBOX_APPLETS: &[&str] = &[
    "[", "ash", "awk", "basename", "cat", "chmod", "chown", "chrt", "cp", "cut", "date", "dd",
    "df", "diff", "dirname", "dmesg", "du", "echo", "env", "expr", "false", "find", "free", "grep",
    "head", "hexdump", "hostname", "id", "ionice", "ip", "kill", "killall", "less", "ln", "ls",
    "lsmod", "mkdir", "modprobe", "insmod", "rmmod", "mount", "mv", "nice", "nproc", "od", "pgrep",
    "pidof", "pkill", "poweroff", "printf", "ps", "pwd", "readlink", "realpath", "reboot",
    "renice", "rm", "rmdir", "sed", "seq", "setsid", "sh", "sleep", "sort", "stat", "sync",
    "sysctl", "tail", "taskset", "tee", "test", "time", "timeout", "top", "touch", "tr", "true",
    "umount", "uname", "uniq", "uptime", "vi", "watch", "wc", "which", "xargs", "yes",
];

/// Directories every image has (mount points of the guest init and the usual places for programs).
/// Mount points below /sys live on sysfs, not in the image.
const BASE_DIRS: &[&str] = &[
    "bin", "dev", "etc", "lib", "proc", "root", "run", "sbin", "sys", "tmp", "usr/bin",
];

/// Where the bytes of a regular file come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Data {
    /// Read from this host file when the archive is written.
    Host(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

/// One archive member. `mode` holds permission bits only.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Data },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// A guest image under construction.
#[derive(Default)]
pub struct GuestImage {
    /// Keyed by the normalized guest path without the leading `/` (`bin/sh`).
    nodes: BTreeMap<String, Node>,
    plan: Option<Plan>,
}

/// `/a//b/./c/` → `a/b/c`; rejects relative paths, `..` and the root itself.
fn normalize(guest_path: &str) -> Result<String> {
    if !guest_path.starts_with('/') {
        bail!("guest path {guest_path:?} must be absolute");
    }
    let mut parts = Vec::new();
    for c in guest_path.split('/') {
        match c {
            "" | "." => {}
            ".." => bail!("guest path {guest_path:?} must not contain `..`"),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        bail!("guest path {guest_path:?} names the root directory");
    }
    Ok(parts.join("/"))
}

impl GuestImage {
    /// A new image whose `/init` is the given host binary (the guest init), with its
    /// shared libraries, the base directories and `/dev/console`, `/dev/null`.
    pub fn new(init: &Path) -> Result<Self> {
        let mut img = GuestImage::default();
        for d in BASE_DIRS {
            img.add_dir(&format!("/{d}"), 0o755)?;
        }
        img.add_dir("/tmp", 0o1777)?;
        img.add_dir("/root", 0o700)?;
        img.add_char_dev("/dev/console", 0o600, 5, 1)?;
        img.add_char_dev("/dev/null", 0o666, 1, 3)?;
        img.add_executable("/init", init)
            .with_context(|| format!("cannot add the guest init {}", init.display()))?;
        Ok(img)
    }

    /// Add a host executable as `/bin/<name>`, with every shared library it needs.
    pub fn add_binary(&mut self, name: &str, host_path: &Path) -> Result<()> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            bail!("binary name {name:?} must be a plain file name");
        }
        self.add_executable(&format!("/bin/{name}"), host_path)
    }

    /// Add a host executable at `guest_path` (mode 0755), with every shared library `ldd`
    /// reports (and the ELF interpreter) at the same absolute paths as on the host.
    pub fn add_executable(&mut self, guest_path: &str, host_path: &Path) -> Result<()> {
        let meta = fs::metadata(host_path)
            .with_context(|| format!("cannot read executable {}", host_path.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", host_path.display());
        }
        for lib in shared_libraries(host_path)? {
            let key = normalize(&lib)?;
            if self.nodes.contains_key(&key) {
                continue;
            }
            let real = fs::canonicalize(&lib).with_context(|| {
                format!(
                    "cannot resolve library {lib} (needed by {})",
                    host_path.display()
                )
            })?;
            let mode = fs::metadata(&real)
                .with_context(|| format!("cannot read library {}", real.display()))?
                .permissions()
                .mode()
                & 0o7777;
            self.insert(
                &lib,
                Node::File {
                    mode,
                    data: Data::Host(real),
                },
            )?;
        }
        self.add_file(guest_path, host_path, 0o755)
    }

    /// Add a regular file whose content is read from `host_path` when the image is written.
    pub fn add_file(&mut self, guest_path: &str, host_path: &Path, mode: u32) -> Result<()> {
        let data = Data::Host(host_path.to_path_buf());
        self.insert(
            guest_path,
            Node::File {
                mode: mode & 0o7777,
                data,
            },
        )
    }

    /// Add a regular file with the given content.
    pub fn add_bytes(&mut self, guest_path: &str, content: &[u8], mode: u32) -> Result<()> {
        let data = Data::Bytes(content.to_vec());
        self.insert(
            guest_path,
            Node::File {
                mode: mode & 0o7777,
                data,
            },
        )
    }

    /// Add a directory (and its missing parents, mode 0755).
    pub fn add_dir(&mut self, guest_path: &str, mode: u32) -> Result<()> {
        self.insert(
            guest_path,
            Node::Dir {
                mode: mode & 0o7777,
            },
        )
    }

    /// Add a symbolic link pointing at `target` (stored as given; relative is fine).
    pub fn add_symlink(&mut self, guest_path: &str, target: &str) -> Result<()> {
        if target.is_empty() {
            bail!("symlink {guest_path} needs a target");
        }
        self.insert(
            guest_path,
            Node::Symlink {
                target: target.to_string(),
            },
        )
    }

    /// Add a character device node.
    pub fn add_char_dev(
        &mut self,
        guest_path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        self.insert(
            guest_path,
            Node::CharDev {
                mode: mode & 0o7777,
                major,
                minor,
            },
        )
    }

    /// Whether the image has something at `guest_path`.
    pub fn contains(&self, guest_path: &str) -> bool {
        normalize(guest_path).is_ok_and(|k| self.nodes.contains_key(&k))
    }

    /// Add [`HOST_BUSYBOX`] as `/bin/busybox` with `/bin/<applet>` symlinks for a useful set
    /// of applets (existing `/bin` entries are kept). `Ok(false)` if the host has no busybox
    /// (Debian package busybox-static).
    pub fn add_busybox(&mut self) -> Result<bool> {
        let host = Path::new(HOST_BUSYBOX);
        if !host.is_file() {
            return Ok(false);
        }
        self.add_binary("busybox", host)?;
        // Link only applets this build has; if it cannot list them, link the whole set.
        let listed: Option<Vec<String>> = Command::new(host)
            .arg("--list")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            });
        for applet in BUSYBOX_APPLETS {
            if listed
                .as_ref()
                .is_some_and(|l| !l.iter().any(|a| a == applet))
            {
                continue;
            }
            let path = format!("/bin/{applet}");
            if !self.contains(&path) {
                self.add_symlink(&path, "busybox")?;
            }
        }
        Ok(true)
    }

    /// Add a host directory tree (e.g. kernel modules) under `guest_dir`: directories, regular
    /// files (with their permission bits) and symlinks (targets kept as they are).
    pub fn add_tree(&mut self, guest_dir: &str, host_dir: &Path) -> Result<()> {
        let meta = fs::symlink_metadata(host_dir)
            .with_context(|| format!("cannot read directory {}", host_dir.display()))?;
        if !meta.is_dir() {
            bail!("{} is not a directory", host_dir.display());
        }
        let base = format!("/{}", normalize(guest_dir)?);
        self.add_dir(&base, meta.permissions().mode())?;
        self.add_tree_inner(&base, host_dir)
    }

    fn add_tree_inner(&mut self, guest_dir: &str, host_dir: &Path) -> Result<()> {
        let entries = fs::read_dir(host_dir)
            .with_context(|| format!("cannot list directory {}", host_dir.display()))?;
        for ent in entries {
            let ent =
                ent.with_context(|| format!("cannot list directory {}", host_dir.display()))?;
            let host = ent.path();
            let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                bail!("{}: file name is not UTF-8", host.display());
            };
            let guest = format!("{guest_dir}/{name}");
            let meta = fs::symlink_metadata(&host)
                .with_context(|| format!("cannot read {}", host.display()))?;
            let ft = meta.file_type();
            let mode = meta.permissions().mode();
            if ft.is_dir() {
                self.add_dir(&guest, mode)?;
                self.add_tree_inner(&guest, &host)?;
            } else if ft.is_file() {
                self.add_file(&guest, &host, mode)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&host)
                    .with_context(|| format!("cannot read symlink {}", host.display()))?;
                let Some(target) = target.to_str() else {
                    bail!("{}: symlink target is not UTF-8", host.display());
                };
                self.add_symlink(&guest, target)?;
            } else {
                let kind = if ft.is_char_device() || ft.is_block_device() {
                    "device"
                } else {
                    "socket or fifo"
                };
                bail!("{}: cannot put a {kind} in the image", host.display());
            }
        }
        Ok(())
    }

    /// Set the plan `/init` runs (written as [`PLAN_PATH`]; checked by [`write`](Self::write)).
    pub fn set_plan(&mut self, plan: &Plan) {
        self.plan = Some(plan.clone());
    }

    /// Write the newc cpio archive to `out` (via a temporary file and a rename).
    pub fn write(&self, out: &Path) -> Result<()> {
        let mut nodes = self.nodes.clone();
        if let Some(plan) = &self.plan {
            let text = plan.render().context("the VM test plan is invalid")?;
            let mut with_plan = GuestImage { nodes, plan: None };
            with_plan.add_bytes(PLAN_PATH, text.as_bytes(), 0o644)?;
            nodes = with_plan.nodes;
        }
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        let file_name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = out.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
        let result = (|| -> Result<()> {
            let f = fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let mut w = BufWriter::new(f);
            write_archive(&mut w, &nodes)?;
            let f = w
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            f.sync_all()
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            fs::rename(&tmp, out)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.with_context(|| format!("writing the guest image {} failed", out.display()))
    }

    /// Insert `node` at `guest_path`, creating missing parents. A directory may be added
    /// again (its mode is updated); a non-directory replaces a non-directory; mixing a
    /// directory with anything else, or going through a non-directory, is an error.
    fn insert(&mut self, guest_path: &str, node: Node) -> Result<()> {
        let key = normalize(guest_path)?;
        let mut parent = String::new();
        let comps: Vec<&str> = key.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match self.nodes.get(&parent) {
                None => {
                    self.nodes.insert(parent.clone(), Node::Dir { mode: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(_) => {
                    bail!("cannot add /{key}: /{parent} is in the image and not a directory")
                }
            }
        }
        let new_is_dir = matches!(node, Node::Dir { .. });
        match self.nodes.get(&key) {
            Some(Node::Dir { .. }) if !new_is_dir => {
                bail!("cannot add /{key}: a directory of that name is already in the image")
            }
            Some(n) if new_is_dir && !matches!(n, Node::Dir { .. }) => {
                bail!("cannot add directory /{key}: a non-directory of that name is in the image")
            }
            _ => {}
        }
        self.nodes.insert(key, node);
        Ok(())
    }
}

/// The absolute paths of the shared libraries (and ELF interpreter) `ldd` reports for
/// `exe`; empty for a static executable.
pub(crate) fn shared_libraries(exe: &Path) -> Result<Vec<String>> {
    let out = Command::new("ldd").arg(exe).output().context(
        "cannot run `ldd` (install libc-bin) to find the shared libraries of a guest binary",
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = format!("{stdout}{stderr}");
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!(
            "`ldd {}` failed ({}): {}",
            exe.display(),
            out.status,
            stderr.trim()
        );
    }
    parse_ldd(&stdout).with_context(|| format!("`ldd {}`", exe.display()))
}

/// Library paths in `ldd` output, in order, without duplicates.
fn parse_ldd(text: &str) -> Result<Vec<String>> {
    let mut libs: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("library {} not found on the host", name.trim());
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        // `linux-vdso.so.1 (0x…)` and the like are provided by the kernel.
        if path.starts_with('/') && !libs.iter().any(|l| l == path) {
            libs.push(path.to_string());
        }
    }
    Ok(libs)
}

/// newc header: magic then 13 eight-digit hex fields.
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    filesize: u32,
    rdevmajor: u32,
    rdevminor: u32,
    namesize: u32,
}

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn write_entry(w: &mut impl Write, h: &Header, name: &str, data: &[u8]) -> Result<()> {
    let fields = [
        h.ino,
        h.mode,
        0, // uid
        0, // gid
        h.nlink,
        0, // mtime
        h.filesize,
        0, // devmajor
        0, // devminor
        h.rdevmajor,
        h.rdevminor,
        h.namesize,
        0, // check
    ];
    let mut buf = Vec::with_capacity(HEADER_LEN + name.len() + 4);
    buf.extend_from_slice(MAGIC);
    for f in fields {
        buf.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    buf.extend_from_slice(name.as_bytes());
    buf.push(0);
    buf.resize(buf.len() + pad4(buf.len()), 0);
    w.write_all(&buf)?;
    w.write_all(data)?;
    w.write_all(&[0u8; 3][..pad4(data.len())])?;
    Ok(())
}

/// Write `nodes` (keys without leading `/`, parents sorting before children) and the trailer.
fn write_archive(w: &mut impl Write, nodes: &BTreeMap<String, Node>) -> Result<()> {
    for (i, (name, node)) in nodes.iter().enumerate() {
        let ino = u32::try_from(i + 1)
            .ok()
            .context("too many files for a cpio archive")?;
        let owned;
        let (mode, nlink, rdev, data): (u32, u32, (u32, u32), &[u8]) = match node {
            Node::Dir { mode } => (S_IFDIR | mode, 2, (0, 0), &[]),
            Node::File { mode, data } => {
                let bytes = match data {
                    Data::Bytes(b) => b.as_slice(),
                    Data::Host(p) => {
                        owned = fs::read(p).with_context(|| {
                            format!(
                                "cannot read {} (for /{name} in the guest image)",
                                p.display()
                            )
                        })?;
                        owned.as_slice()
                    }
                };
                (S_IFREG | mode, 1, (0, 0), bytes)
            }
            Node::Symlink { target } => (S_IFLNK | 0o777, 1, (0, 0), target.as_bytes()),
            Node::CharDev { mode, major, minor } => (S_IFCHR | mode, 1, (*major, *minor), &[]),
        };
        let filesize = u32::try_from(data.len())
            .ok()
            .with_context(|| format!("/{name} is too large for a newc archive (4 GiB)"))?;
        let h = Header {
            ino,
            mode,
            nlink,
            filesize,
            rdevmajor: rdev.0,
            rdevminor: rdev.1,
            namesize: name.len() as u32 + 1,
        };
        write_entry(w, &h, name, data).context("cannot write the archive")?;
    }
    let h = Header {
        ino: 0,
        mode: 0,
        nlink: 1,
        filesize: 0,
        rdevmajor: 0,
        rdevminor: 0,
        namesize: TRAILER.len() as u32 + 1,
    };
    write_entry(w, &h, TRAILER, &[]).context("cannot write the archive")?;
    w.flush().context("cannot write the archive")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// One member as read back by [`read_archive`].
    #[derive(Debug, PartialEq, Eq)]
    struct Member {
        name: String,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
    }

    fn hex(field: &[u8]) -> u32 {
        u32::from_str_radix(std::str::from_utf8(field).unwrap(), 16).unwrap()
    }

    /// A strict newc reader: checks magic, zero uid/gid/mtime/check, NUL-terminated names,
    /// zero padding, and that the trailer ends the archive exactly.
    fn read_archive(mut b: &[u8]) -> Vec<Member> {
        let total = b.len();
        let mut out = Vec::new();
        loop {
            let off = total - b.len();
            assert_eq!(off % 4, 0, "header at unaligned offset {off}");
            assert_eq!(&b[..6], MAGIC, "magic at {off}");
            let f = |i: usize| hex(&b[6 + 8 * i..14 + 8 * i]);
            let (ino, mode, uid, gid, nlink, mtime, size) =
                (f(0), f(1), f(2), f(3), f(4), f(5), f(6));
            let (rmaj, rmin, namesize, check) = (f(9), f(10), f(11), f(12));
            assert_eq!((uid, gid, mtime, check, f(7), f(8)), (0, 0, 0, 0, 0, 0));
            let name_end = HEADER_LEN + namesize as usize;
            assert_eq!(b[name_end - 1], 0, "name not NUL-terminated");
            let name = std::str::from_utf8(&b[HEADER_LEN..name_end - 1])
                .unwrap()
                .to_string();
            let data_start = name_end + pad4(name_end);
            assert!(b[name_end..data_start].iter().all(|&x| x == 0));
            let data_end = data_start + size as usize;
            let next = data_end + pad4(data_end);
            assert!(b[data_end..next].iter().all(|&x| x == 0));
            let data = b[data_start..data_end].to_vec();
            b = &b[next..];
            if name == TRAILER {
                assert!(b.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push(Member {
                name,
                ino,
                mode,
                nlink,
                rdev: (rmaj, rmin),
                data,
            });
        }
    }

    fn archive(img: &GuestImage) -> Vec<u8> {
        let mut v = Vec::new();
        write_archive(&mut v, &img.nodes).unwrap();
        v
    }

    #[test]
    fn header_bytes_and_padding() {
        let mut v = Vec::new();
        let h = Header {
            ino: 7,
            mode: S_IFREG | 0o644,
            nlink: 1,
            filesize: 5,
            rdevmajor: 0,
            rdevminor: 0,
            namesize: 2,
        };
        write_entry(&mut v, &h, "a", b"hello").unwrap();
        let expect_header = concat!(
            "070701", "00000007", "000081A4", "00000000", "00000000", "00000001", "00000000",
            "00000005", "00000000", "00000000", "00000000", "00000000", "00000002", "00000000"
        );
        assert_eq!(&v[..HEADER_LEN], expect_header.as_bytes());
        // 110 + "a\0" = 112: already aligned, no name padding; 5 data bytes + 3 padding.
        assert_eq!(&v[HEADER_LEN..], b"a\0hello\0\0\0");

        // 110 + "ab\0" = 113 → 3 bytes of padding; 4 data bytes need none.
        let mut v = Vec::new();
        let h = Header {
            ino: 1,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            filesize: 4,
            rdevmajor: 0,
            rdevminor: 0,
            namesize: 3,
        };
        write_entry(&mut v, &h, "ab", b"busy").unwrap();
        assert_eq!(&v[HEADER_LEN..], b"ab\0\0\0\0busy");
        assert_eq!(v.len(), 120);
        assert_eq!(&v[6 + 8..6 + 16], b"0000A1FF");
    }

    #[test]
    fn trailer_ends_the_archive() {
        let v = archive(&GuestImage::default());
        assert_eq!(v.len(), 124); // 110 + "TRAILER!!!\0" (11) = 121 → 124
        assert!(v.starts_with(b"070701"));
        assert_eq!(&v[HEADER_LEN..HEADER_LEN + 11], b"TRAILER!!!\0");
        assert_eq!(&v[6 + 4 * 8..6 + 5 * 8], b"00000001"); // nlink
        assert!(read_archive(&v).is_empty());
    }

    #[test]
    fn round_trip_through_reader() {
        let dir = std::env::temp_dir().join(format!("initramfs-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let host = dir.join("payload");
        fs::write(&host, b"from the host\n").unwrap();

        let mut img = GuestImage::default();
        img.add_char_dev("/dev/console", 0o600, 5, 1).unwrap();
        img.add_file("/usr/lib/x/payload", &host, 0o640).unwrap();
        img.add_bytes("/etc/hello", b"hi", 0o644).unwrap();
        img.add_symlink("/bin/sh", "busybox").unwrap();
        img.add_dir("/tmp", 0o1777).unwrap();
        img.add_dir("/usr", 0o700).unwrap(); // already there as a parent: mode updated
        let v = archive(&img);
        fs::remove_dir_all(&dir).unwrap();

        let got = read_archive(&v);
        let names: Vec<&str> = got.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "etc",
                "etc/hello",
                "tmp",
                "usr",
                "usr/lib",
                "usr/lib/x",
                "usr/lib/x/payload"
            ]
        );
        let by = |n: &str| got.iter().find(|m| m.name == n).unwrap();
        assert_eq!(by("bin").mode, S_IFDIR | 0o755);
        assert_eq!(by("bin").nlink, 2);
        assert_eq!(by("bin/sh").mode, S_IFLNK | 0o777);
        assert_eq!(by("bin/sh").data, b"busybox");
        assert_eq!(by("dev/console").mode, S_IFCHR | 0o600);
        assert_eq!(by("dev/console").rdev, (5, 1));
        assert_eq!(by("etc/hello").data, b"hi");
        assert_eq!(by("tmp").mode, S_IFDIR | 0o1777);
        assert_eq!(by("usr").mode, S_IFDIR | 0o700);
        assert_eq!(by("usr/lib/x/payload").mode, S_IFREG | 0o640);
        assert_eq!(by("usr/lib/x/payload").data, b"from the host\n");
        // Stable, distinct inode numbers in path order.
        assert_eq!(
            got.iter().map(|m| m.ino).collect::<Vec<_>>(),
            (1..=11).collect::<Vec<_>>()
        );
        // Deterministic: the same members added in another order give the same bytes.
        let mut a = GuestImage::default();
        a.add_bytes("/z/1", b"one", 0o644).unwrap();
        a.add_symlink("/b", "z/1").unwrap();
        let mut b = GuestImage::default();
        b.add_symlink("/b", "z/1").unwrap();
        b.add_bytes("/z/1", b"one", 0o644).unwrap();
        assert_eq!(archive(&a), archive(&b));
    }

    #[test]
    fn insert_rules() {
        let mut img = GuestImage::default();
        img.add_bytes("/a/f", b"1", 0o644).unwrap();
        img.add_bytes("//a/./f", b"2", 0o600).unwrap(); // same path: replaced
        assert_eq!(img.nodes.len(), 2);
        assert_eq!(
            img.nodes["a/f"],
            Node::File {
                mode: 0o600,
                data: Data::Bytes(b"2".to_vec())
            }
        );
        assert!(img.add_dir("/a/f", 0o755).is_err());
        assert!(img.add_bytes("/a/f/g", b"", 0o644).is_err());
        assert!(img.add_bytes("/a", b"", 0o644).is_err());
        assert!(img.add_bytes("rel", b"", 0o644).is_err());
        assert!(img.add_bytes("/x/../y", b"", 0o644).is_err());
        assert!(img.add_dir("/", 0o755).is_err());
        assert!(img.contains("/a/f/") && !img.contains("/b"));
    }

    #[test]
    fn new_image_has_init_console_and_mount_points() {
        let mut img = GuestImage::new(Path::new("/bin/busybox")).unwrap();
        assert!(img.add_busybox().unwrap());
        for p in [
            "/init",
            "/dev",
            "/proc",
            "/sys",
            "/tmp",
            "/run",
            "/etc",
            "/bin/busybox",
            "/bin/sh",
        ] {
            assert!(img.contains(p), "{p}");
        }
        assert_eq!(
            img.nodes["dev/console"],
            Node::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1
            }
        );
        assert_eq!(
            img.nodes["dev/null"],
            Node::CharDev {
                mode: 0o666,
                major: 1,
                minor: 3
            }
        );
        assert_eq!(
            img.nodes["bin/sh"],
            Node::Symlink {
                target: "busybox".into()
            }
        );
        // Static busybox: no libraries came along.
        assert!(!img.contains("/lib64"));
    }

    #[test]
    fn dynamic_binary_brings_its_libraries() {
        let mut img = GuestImage::default();
        img.add_binary("ls", Path::new("/bin/ls")).unwrap();
        assert!(img.contains("/bin/ls"));
        let libs = shared_libraries(Path::new("/bin/ls")).unwrap();
        assert!(libs.iter().any(|l| l.contains("libc.so")), "{libs:?}");
        for lib in &libs {
            // The real file (symlinks resolved) under the linked name.
            let node = &img.nodes[&normalize(lib).unwrap()];
            let Node::File {
                data: Data::Host(p),
                ..
            } = node
            else {
                panic!("{lib}: {node:?}")
            };
            assert_eq!(p, &fs::canonicalize(lib).unwrap());
        }
        assert!(img.add_binary("a/b", Path::new("/bin/ls")).is_err());
        assert!(img.add_binary("x", Path::new("/nonexistent/x")).is_err());
    }

    #[test]
    fn ldd_output_parsing() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd1b1f5000)\n\
            \tlibselinux.so.1 => /lib/x86_64-linux-gnu/libselinux.so.1 (0x00007f0f4c5f0000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0f4c40f000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0f4c40f000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f0f4c65e000)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libselinux.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        let e = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(e.to_string().contains("libfoo.so.1"), "{e}");
        assert!(shared_libraries(Path::new("/bin/busybox"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn plan_lands_in_etc_and_bad_plan_fails_write() {
        let dir = std::env::temp_dir().join(format!("initramfs-plan-{}", std::process::id()));
        let out = dir.join("img.cpio");
        let mut img = GuestImage::default();
        let plan = Plan {
            env: vec![("K".into(), "a b".into())],
            tests: vec![PlanTest {
                name: "t".into(),
                timeout: Duration::from_secs(3),
                argv: vec!["/bin/true".into()],
            }],
        };
        img.set_plan(&plan);
        img.write(&out).unwrap();
        let got = read_archive(&fs::read(&out).unwrap());
        let m = got
            .iter()
            .find(|m| format!("/{}", m.name) == PLAN_PATH)
            .unwrap();
        assert_eq!(
            Plan::parse(std::str::from_utf8(&m.data).unwrap()).unwrap(),
            plan
        );
        // No temporary file left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);

        let mut bad = plan.clone();
        bad.tests[0].name = "has space".into();
        img.set_plan(&bad);
        let e = format!("{:#}", img.write(&dir.join("bad.cpio")).unwrap_err());
        assert!(e.contains("plan is invalid"), "{e}");
        assert!(!dir.join("bad.cpio").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Build the guest init, make an image with busybox and `plan`, boot it in QEMU (TCG) with
    /// `extra` appended to the command line; returns the `init: ` lines (from `init: ` on,
    /// trimmed) after checking that QEMU powered off by itself.
    fn boot(plan: Option<&Plan>, extra: &str, image: &str) -> Vec<String> {
        let kernel = std::env::var("SCX_VM_KERNEL").expect("set SCX_VM_KERNEL to a bzImage");
        let init = crate::guest::build_init().unwrap();
        let mut img = GuestImage::new(&init).unwrap();
        assert!(img.add_busybox().unwrap(), "install busybox-static");
        if let Some(plan) = plan {
            img.set_plan(plan);
        }
        let out = crate::cache::dir().join("images").join(image);
        img.write(&out).unwrap();
        let start = std::time::Instant::now();
        let o = Command::new("timeout")
            .arg("120")
            .arg("qemu-system-x86_64")
            .args(["-kernel", &kernel, "-initrd"])
            .arg(&out)
            .arg("-append")
            .arg(format!("console=ttyS0 panic=-1 quiet {extra}"))
            .args(["-nographic", "-no-reboot"])
            .args([
                "-m",
                "1G",
                "-smp",
                "2",
                "-accel",
                "tcg,thread=single",
                "-cpu",
                "max",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let console = String::from_utf8_lossy(&o.stdout);
        println!("{console}");
        println!(
            "qemu: {} after {:.1}s",
            o.status,
            start.elapsed().as_secs_f64()
        );
        assert!(
            o.status.success(),
            "qemu did not power off by itself: {}",
            o.status
        );
        // As a console parser must: `init: ` may follow firmware output on the same line.
        console
            .lines()
            .filter_map(|l| l.find("init: ").map(|i| l[i..].trim_end().to_string()))
            .collect()
    }

    fn t(name: &str, secs: u64, argv: &[&str]) -> PlanTest {
        PlanTest {
            name: name.into(),
            timeout: Duration::from_secs(secs),
            argv: argv.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn has(lines: &[String], prefix: &str) -> bool {
        lines.iter().any(|l| l.starts_with(prefix))
    }

    /// End to end: the guest init as /init, busybox, three tests, booted in QEMU (TCG).
    /// `SCX_VM_KERNEL=<bzImage> cargo test -p scx-userland-vm -- --ignored boots_in_qemu --nocapture`
    #[test]
    #[ignore = "builds the guest init and boots QEMU; needs SCX_VM_KERNEL=<bzImage>"]
    fn boots_in_qemu() {
        let plan = Plan {
            env: vec![],
            tests: vec![
                t("demo::true", 10, &["/bin/true"]),
                t("demo::false", 10, &["/bin/false"]),
                t("demo::sleep", 2, &["sleep", "30"]),
            ],
        };
        let lines = boot(Some(&plan), "", "initramfs-selftest.cpio");
        assert!(has(&lines, "init: kernel "));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("init: result demo::true ok ") && l.ends_with(" exit=0")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("init: result demo::false fail ") && l.ends_with(" exit=1")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("init: result demo::sleep timeout 2.")
                && l.ends_with(" timeout=2s")));
        assert!(has(&lines, "init: summary passed=1 failed=2"));
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("init: failure"))
                .count(),
            1
        );
        assert!(lines.contains(&"init: failure".to_string()));
        assert!(!has(&lines, "init: success"));
    }

    /// Crash, spawn failure, env with spaces, orphans and leftovers, in one boot.
    #[test]
    #[ignore = "builds the guest init and boots QEMU; needs SCX_VM_KERNEL=<bzImage>"]
    fn boots_in_qemu_edge_cases() {
        let sh = |name: &str, script: &str| t(name, 20, &["/bin/sh", "-c", script]);
        let plan = Plan {
            env: vec![("DEMO".into(), "with  spaces\tand tab".into())],
            tests: vec![
                sh("env", r#"test "$DEMO" = "$(printf 'with  spaces\tand tab')" && test "$SCX_VM_GUEST" = 1 && test "$HOME" = /tmp"#),
                sh("crash", "kill -SEGV $$"),
                t("missing", 5, &["/nonexistent"]),
                // An orphan that exits later (PID 1 must reap it) and one that never does
                // (the leftover sweep must kill it), each in a new session.
                sh("orphans", "(setsid sleep 0.3 &); (setsid sleep 1000 &); sleep 1; ! ps -o stat | grep ^Z"),
                sh("after", "sleep 2; ps -o pid,stat,args; ! ps -o stat,args | grep -e '^Z' -e '[s]leep 1000'"),
                sh("memlock", "test \"$(ulimit -l)\" = unlimited && grep -q ' /sys/fs/bpf bpf ' /proc/mounts"),
            ],
        };
        let lines = boot(Some(&plan), "", "initramfs-selftest-edge.cpio");
        for want in [
            "init: result env ok ",
            "init: result crash crash ",
            "init: result missing fail ",
            "init: result orphans ok ",
            "init: result after ok ",
            "init: result memlock ok ",
            "init: summary passed=4 failed=2",
        ] {
            assert!(has(&lines, want), "missing {want:?}");
        }
        assert!(lines.iter().any(|l| l.ends_with(" signal=11")));
        assert!(lines.iter().any(|l| l.ends_with(" spawn-errno=2")));
        assert!(has(&lines, "init: warning: killed 1 leftover"));
    }

    /// Without a plan, /init reports why and powers off.
    #[test]
    #[ignore = "builds the guest init and boots QEMU; needs SCX_VM_KERNEL=<bzImage>"]
    fn boots_in_qemu_without_plan() {
        let lines = boot(None, "", "initramfs-selftest-noplan.cpio");
        assert!(has(&lines, "init: kernel "));
        assert!(
            has(&lines, "init: failure plan: cannot read /etc/vm-plan"),
            "{lines:?}"
        );
        assert!(!has(&lines, "init: summary"));
    }
}
