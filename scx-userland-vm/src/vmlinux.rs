//! Read a bzImage: its release string, the ELF vmlinux inside it, and whether its BTF knows
//! `sched_ext_ops` (for `--kernel PATH` without a config).
//!
//! An x86 bzImage is a real-mode setup area followed by a compressed payload that the
//! decompressor unpacks into the ELF vmlinux. The boot protocol header tells where the
//! payload lives: `setup_sects` at 0x1f1 (0 means 4), `payload_offset` at 0x248 and
//! `payload_length` at 0x24c (both u32 LE, relative to the start of the protected-mode
//! code at `(setup_sects + 1) * 512`).
use std::fs;
use std::io::Read;
use std::path::Path;

use crate::error::{bail, err, Context, Result};

const ELF_MAGIC: &[u8] = b"\x7fELF";
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Where a bzImage's compressed payload sits, as its boot header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BzHeader {
    /// Number of 512-byte setup sectors (after the boot sector).
    pub setup_sects: u32,
    /// Payload offset relative to the protected-mode code.
    pub payload_offset: u32,
    /// Payload length in bytes.
    pub payload_length: u32,
}

impl BzHeader {
    /// Absolute file offset of the payload.
    pub fn payload_start(&self) -> usize {
        (self.setup_sects as usize + 1) * 512 + self.payload_offset as usize
    }
}

fn u16_at(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(buf.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(buf: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(off..off + 8)?.try_into().ok()?))
}

/// Parse the boot protocol header of an x86 bzImage.
pub fn parse_bzimage_header(buf: &[u8]) -> Result<BzHeader> {
    if buf.len() < 0x250 || buf.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not an x86 bzImage (no `HdrS` boot header at 0x202) and not an ELF file");
    }
    let setup_sects = match buf[0x1f1] {
        0 => 4,
        n => u32::from(n),
    };
    let hdr = BzHeader {
        setup_sects,
        payload_offset: u32_at(buf, 0x248).unwrap_or(0),
        payload_length: u32_at(buf, 0x24c).unwrap_or(0),
    };
    if hdr.payload_length == 0 {
        bail!("bzImage has no payload (boot protocol older than 2.08?)");
    }
    let end = hdr.payload_start() + hdr.payload_length as usize;
    if end > buf.len() {
        bail!(
            "bzImage payload runs past the end of the file ({} + {} > {} bytes): truncated download?",
            hdr.payload_start(),
            hdr.payload_length,
            buf.len()
        );
    }
    Ok(hdr)
}

/// The kernel release a bzImage announces (the first word of its `kernel_version` string),
/// e.g. `7.3.4+deb13-amd64`. `None` for an ELF or a header without the string.
pub fn bzimage_release(buf: &[u8]) -> Option<String> {
    if buf.get(0x202..0x206) != Some(b"HdrS") {
        return None;
    }
    let ptr = u16_at(buf, 0x20e)? as usize;
    if ptr == 0 {
        return None;
    }
    let s = buf.get(ptr + 0x200..)?;
    let end = s.iter().position(|&b| b == 0 || b == b' ')?;
    let release = std::str::from_utf8(&s[..end]).ok()?;
    (!release.is_empty()).then(|| release.to_string())
}

/// Name a payload's compression from its magic bytes (for error messages).
fn compression_name(payload: &[u8]) -> &'static str {
    if payload.starts_with(ZSTD_MAGIC) {
        "zstd"
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        "xz"
    } else if payload.starts_with(&[0x42, 0x5a, 0x68]) {
        "bzip2"
    } else if payload.starts_with(&[0x5d, 0x00, 0x00]) {
        "lzma"
    } else if payload.starts_with(&[0x89, b'L', b'Z', b'O']) {
        "lzo"
    } else if payload.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        "lz4"
    } else {
        "unknown"
    }
}

/// Turn an in-memory bzImage (or ELF) into the ELF vmlinux.
pub fn extract_vmlinux_from_bytes(buf: &[u8]) -> Result<Vec<u8>> {
    if buf.starts_with(ELF_MAGIC) {
        return Ok(buf.to_vec());
    }
    let hdr = parse_bzimage_header(buf)?;
    let start = hdr.payload_start();
    let payload = &buf[start..start + hdr.payload_length as usize];
    let format = compression_name(payload);
    if format != "zstd" {
        bail!(
            "bzImage payload is {format}-compressed; only zstd payloads (Debian's kernels) are \
             supported: pass an ELF vmlinux instead"
        );
    }
    // The kernel appends the uncompressed size (4 bytes) after the zstd frame, which the
    // `zstd` tool rejects as a truncated second frame: decode exactly one frame.
    let mut reader = payload;
    let mut dec = ruzstd::decoding::StreamingDecoder::new(&mut reader)
        .map_err(|e| err!("bzImage zstd payload has a bad frame header: {e}"))?;
    let mut out = Vec::with_capacity(payload.len() * 4);
    dec.read_to_end(&mut out)
        .context("decompressing the bzImage's zstd payload")?;
    if !out.starts_with(ELF_MAGIC) {
        bail!("the bzImage payload decompressed, but the result is not an ELF vmlinux");
    }
    Ok(out)
}

/// Read a bzImage (or an ELF vmlinux, returned as is) and return the ELF vmlinux.
pub fn extract_vmlinux(bzimage: &Path) -> Result<Vec<u8>> {
    let buf = fs::read(bzimage)
        .map_err(|e| err!("cannot read kernel image {}: {e}", bzimage.display()))?;
    extract_vmlinux_from_bytes(&buf)
        .map_err(|e| err!("cannot extract vmlinux from {}: {e:#}", bzimage.display()))
}

/// The bytes of the section called `name` in a 64-bit little-endian ELF file.
pub fn elf_section<'a>(elf: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    if !elf.starts_with(ELF_MAGIC) || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let bad = || err!("malformed ELF section headers");
    let shoff = u64_at(elf, 0x28).ok_or_else(bad)? as usize;
    let shentsize = u16_at(elf, 0x3a).ok_or_else(bad)? as usize;
    let shnum = u16_at(elf, 0x3c).ok_or_else(bad)? as usize;
    let shstrndx = u16_at(elf, 0x3e).ok_or_else(bad)? as usize;
    if shentsize < 0x40 || shstrndx >= shnum {
        return Err(bad());
    }
    let section = |i: usize| -> Result<(u32, &'a [u8])> {
        let h = shoff + i * shentsize;
        let name = u32_at(elf, h).ok_or_else(bad)?;
        let off = u64_at(elf, h + 0x18).ok_or_else(bad)? as usize;
        let size = u64_at(elf, h + 0x20).ok_or_else(bad)? as usize;
        let ty = u32_at(elf, h + 4).ok_or_else(bad)?;
        // SHT_NOBITS (8) has no bytes in the file.
        let data = if ty == 8 {
            &[][..]
        } else {
            elf.get(off..off.checked_add(size).ok_or_else(bad)?)
                .ok_or_else(bad)?
        };
        Ok((name, data))
    };
    let (_, strtab) = section(shstrndx)?;
    for i in 0..shnum {
        let (name_off, data) = section(i)?;
        let Some(rest) = strtab.get(name_off as usize..) else {
            continue;
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if &rest[..end] == name.as_bytes() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether an ELF vmlinux carries BTF that names `sched_ext_ops`.
pub fn elf_has_sched_ext_btf(elf: &[u8]) -> Result<bool> {
    Ok(match elf_section(elf, ".BTF")? {
        Some(btf) => contains(btf, b"\0sched_ext_ops\0"),
        None => false,
    })
}

/// Whether a bzImage (or ELF vmlinux) has BTF describing `struct sched_ext_ops`: a cheap
/// check for kernels that come without a config.
pub fn has_sched_ext_btf(bzimage: &Path) -> Result<bool> {
    let elf = extract_vmlinux(bzimage)?;
    elf_has_sched_ext_btf(&elf)
        .map_err(|e| err!("reading the ELF inside {}: {e:#}", bzimage.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic bzImage: boot header, `setup_sects` sectors, then `payload`.
    fn bzimage(setup_sects_byte: u8, payload_offset: u32, payload: &[u8]) -> Vec<u8> {
        let sects = if setup_sects_byte == 0 {
            4
        } else {
            setup_sects_byte as usize
        };
        let start = (sects + 1) * 512 + payload_offset as usize;
        let mut buf = vec![0u8; start + payload.len() + 4];
        buf[0x1f1] = setup_sects_byte;
        buf[0x202..0x206].copy_from_slice(b"HdrS");
        buf[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        let ver = b"7.3.4+deb13-amd64 (someone@example) #1 SMP\0";
        buf[0x300..0x300 + ver.len()].copy_from_slice(ver);
        buf[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
        buf[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        buf[start..start + payload.len()].copy_from_slice(payload);
        buf
    }

    #[test]
    fn header_offsets() {
        let buf = bzimage(39, 716, b"\x28\xb5\x2f\xfdxxxx");
        let h = parse_bzimage_header(&buf).unwrap();
        assert_eq!(h.setup_sects, 39);
        assert_eq!(h.payload_offset, 716);
        assert_eq!(h.payload_length, 8);
        assert_eq!(h.payload_start(), 40 * 512 + 716);
        assert_eq!(&buf[h.payload_start()..h.payload_start() + 4], ZSTD_MAGIC);
        assert_eq!(bzimage_release(&buf).as_deref(), Some("7.3.4+deb13-amd64"));
    }

    #[test]
    fn zero_setup_sects_means_four() {
        let buf = bzimage(0, 16, b"abc");
        let h = parse_bzimage_header(&buf).unwrap();
        assert_eq!(h.setup_sects, 4);
        assert_eq!(h.payload_start(), 5 * 512 + 16);
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(parse_bzimage_header(&[0u8; 4096]).is_err());
        let mut buf = bzimage(4, 0, &[0u8; 100]);
        buf.truncate(buf.len() - 50);
        let err = parse_bzimage_header(&buf).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn names_other_compressions() {
        let gz = bzimage(4, 0, &[0x1f, 0x8b, 8, 0, 0, 0]);
        let err = extract_vmlinux_from_bytes(&gz).unwrap_err().to_string();
        assert!(err.contains("gzip"), "{err}");
        let xz = bzimage(4, 0, &[0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2]);
        let err = extract_vmlinux_from_bytes(&xz).unwrap_err().to_string();
        assert!(err.contains("xz"), "{err}");
    }

    #[test]
    fn elf_passes_through() {
        let elf = b"\x7fELF\x02\x01rest".to_vec();
        assert_eq!(extract_vmlinux_from_bytes(&elf).unwrap(), elf);
    }

    /// A zstd frame made of one raw block holding `data` (no compression, no checksum).
    fn raw_zstd_frame(data: &[u8]) -> Vec<u8> {
        let mut f = ZSTD_MAGIC.to_vec();
        // Frame header descriptor: single segment, 4-byte frame content size.
        f.push(0b1010_0000);
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        // Block header: last block, raw, size.
        let bh = 1 | ((data.len() as u32) << 3);
        f.extend_from_slice(&bh.to_le_bytes()[..3]);
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn decodes_one_zstd_frame_ignoring_trailing_size() {
        let elf: Vec<u8> = b"\x7fELF\x02\x01".iter().copied().chain(0..200u8).collect();
        let mut payload = raw_zstd_frame(&elf);
        payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        let buf = bzimage(39, 716, &payload);
        assert_eq!(extract_vmlinux_from_bytes(&buf).unwrap(), elf);
    }

    #[test]
    fn zstd_payload_that_is_not_elf() {
        let buf = bzimage(4, 0, &raw_zstd_frame(b"not an elf at all"));
        let err = extract_vmlinux_from_bytes(&buf).unwrap_err().to_string();
        assert!(err.contains("not an ELF"), "{err}");
    }

    /// A minimal ELF64 with sections: null, .shstrtab, .BTF.
    fn elf_with_btf(btf: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.BTF\0";
        let mut elf = vec![0u8; 0x40];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let strtab_off = elf.len();
        elf.extend_from_slice(shstrtab);
        let btf_off = elf.len();
        elf.extend_from_slice(btf);
        let shoff = elf.len();
        let sh = |name: u32, ty: u32, off: usize, size: usize| {
            let mut h = [0u8; 0x40];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&ty.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        let headers = [
            sh(0, 0, 0, 0),
            sh(1, 3, strtab_off, shstrtab.len()),
            sh(11, 1, btf_off, btf.len()),
        ];
        for h in headers {
            elf.extend_from_slice(&h);
        }
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&0x40u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn btf_search() {
        let yes = elf_with_btf(b"\x9f\xeb\0task_struct\0sched_ext_ops\0rq\0");
        assert!(elf_has_sched_ext_btf(&yes).unwrap());
        assert_eq!(elf_section(&yes, ".BTF").unwrap().unwrap().len(), 32);
        // A longer name that merely contains it does not count.
        let no = elf_with_btf(b"\x9f\xeb\0task_struct\0bpf_sched_ext_ops_x\0");
        assert!(!elf_has_sched_ext_btf(&no).unwrap());
        assert!(elf_section(&no, ".text").unwrap().is_none());
        assert!(elf_has_sched_ext_btf(b"\x7fELF\x01\x01").is_err());
    }
}
