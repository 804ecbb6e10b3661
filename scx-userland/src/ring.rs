//! Direct, syscall-free access to the two BPF rings, through their memory mappings.
//!
//! The kernel's ring buffer ABI (`BPF_MAP_TYPE_RINGBUF` and `BPF_MAP_TYPE_USER_RINGBUF`):
//! page 0 of the map holds the consumer position, page 1 the producer position, and the data
//! area follows, mapped twice in a row so a record that wraps is still contiguous. Each record
//! starts with an 8-byte header whose first 32 bits are its length plus two flags (busy,
//! discard); records are 8-byte aligned. Positions only grow; `pos & (size - 1)` is the offset.
//!
//! [`RingReader`] consumes what BPF produced (the `queued` ring); [`RingWriter`] produces
//! what BPF drains (the `dispatched` user ring). Each ring must have exactly one user-space
//! end: `BpfScheduler` owns its two, and `&mut self` on every method keeps it that way.
//!
//! They are public for code that brings its own maps (benchmarks, custom loaders): pair them
//! with [`QueuedTask::from_bytes`](crate::QueuedTask::from_bytes) and
//! [`Dispatch::to_bytes`](crate::Dispatch::to_bytes).
//!
//! # Soundness
//!
//! The constructors are safe because they trust nothing they are given: they ask the kernel
//! (`BPF_OBJ_GET_INFO_BY_FD`) for the map's type and size and refuse a fd that is not a ring
//! of the expected kind and size, so the mappings always match the ring. Every record length
//! read from shared memory is checked against what the producer has published before it
//! becomes a slice. Read-only mappings are only read with `Relaxed` atomic loads followed by
//! an `Acquire` fence (the kind of atomic access Rust allows on read-only memory).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HDR_SZ: u64 = 8;

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let sz = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if sz > 0 {
        sz as usize
    } else {
        4096
    }
}

/// One `mmap`ed region, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize, prot: libc::c_int, offset: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of a BPF map fd; the kernel validates len/offset/prot.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?,
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn round_up8(n: u64) -> u64 {
    (n + 7) & !7
}

/// `BPF_MAP_TYPE_RINGBUF`.
const MAP_TYPE_RINGBUF: u32 = 27;
/// `BPF_MAP_TYPE_USER_RINGBUF`.
const MAP_TYPE_USER_RINGBUF: u32 = 31;
/// The `bpf()` command `BPF_OBJ_GET_INFO_BY_FD`.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The leading fields of the kernel's `struct bpf_map_info` (the kernel fills at most the
/// length it is given).
#[repr(C)]
#[derive(Default)]
struct MapInfoHead {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// The `info` member of the kernel's `union bpf_attr`.
#[repr(C)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Check with the kernel that `fd` is a BPF map of type `map_type` whose data area is `size`
/// bytes, a power of two.
fn check_ring(fd: BorrowedFd<'_>, map_type: u32, size: u32) -> io::Result<()> {
    let kind = if map_type == MAP_TYPE_RINGBUF {
        "BPF_MAP_TYPE_RINGBUF"
    } else {
        "BPF_MAP_TYPE_USER_RINGBUF"
    };
    let mut info = MapInfoHead::default();
    let mut attr = InfoByFdAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<MapInfoHead>() as u32,
        info: (&mut info as *mut MapInfoHead) as u64,
    };
    // SAFETY: BPF_OBJ_GET_INFO_BY_FD writes at most `info_len` bytes to `info`, which points
    // to a live MapInfoHead of that size; `attr` is a valid, fully initialised attribute.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoByFdAttr,
            size_of::<InfoByFdAttr>() as u32,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the fd is not a BPF map ({err}): pass the fd of a {kind} map"),
        ));
    }
    if info.map_type != map_type {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the fd is a BPF map of type {}, not a {kind} ({map_type})",
                info.map_type
            ),
        ));
    }
    if info.max_entries != size || !size.is_power_of_two() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "ring size {size} given, but the map's data area is {} bytes: pass its max_entries",
                info.max_entries
            ),
        ));
    }
    Ok(())
}

/// The sample length and the whole record's length (header included, rounded up to 8) of a
/// committed record whose header word is `len`, if it fits in the `available` published bytes.
fn record_extent(len: u32, available: u64) -> Result<(u64, u64), MalformedRecord> {
    let sample = u64::from(len & !(BUSY_BIT | DISCARD_BIT));
    let total = round_up8(sample + HDR_SZ);
    if total > available {
        return Err(MalformedRecord {
            len: total,
            available,
        });
    }
    Ok((sample, total))
}

/// A record header in the ring claims more bytes than the producer has published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed ring record: its header claims {len} bytes but only {available} are published")]
pub struct MalformedRecord {
    /// The length the header claims (header included, rounded up to 8).
    pub len: u64,
    /// Bytes published past the record's start.
    pub available: u64,
}

/// Consumer end of a `BPF_MAP_TYPE_RINGBUF`.
pub struct RingReader {
    consumer: Mapping,
    producer: Mapping,
    /// Start of the (doubly mapped) data area, one page into `producer`.
    data: *const u8,
    mask: u64,
}

// SAFETY: the mappings are plain shared memory; access is synchronised by the ring protocol.
unsafe impl Send for RingReader {}

impl RingReader {
    /// Map the ring behind `fd` (a `BPF_MAP_TYPE_RINGBUF`), whose data area is `size` bytes
    /// (its max_entries, a power of two).
    ///
    /// Errors with [`io::ErrorKind::InvalidInput`] when the kernel says `fd` is not such a map
    /// or its size is not `size`.
    pub fn new(fd: BorrowedFd<'_>, size: u32) -> io::Result<Self> {
        check_ring(fd, MAP_TYPE_RINGBUF, size)?;
        let page = page_size();
        let size = size as usize;
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * size, libc::PROT_READ, page)?;
        // SAFETY: the producer mapping is one page plus the data area, twice.
        let data = unsafe { producer.ptr.as_ptr().add(page) }.cast_const();
        Ok(Self {
            consumer,
            producer,
            data,
            mask: size as u64 - 1,
        })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: page 0 starts with the 8-byte aligned consumer position, for the mapping's life.
        unsafe { AtomicU64::from_ptr(self.consumer.ptr.as_ptr().cast()) }
    }

    /// The producer position, as published. The producer page is mapped read-only, so this
    /// is a `Relaxed` load plus an `Acquire` fence: it pairs with the kernel's
    /// `smp_store_release(&rb->producer_pos, …)` in `__bpf_ringbuf_reserve`, so the headers of
    /// the records below it are visible.
    fn producer_pos(&self) -> u64 {
        // SAFETY: the producer page starts with the 8-byte aligned producer position, for the
        // mapping's life; a Relaxed atomic load is allowed on read-only memory.
        let pos = unsafe { AtomicU64::from_ptr(self.producer.ptr.as_ptr().cast()) }
            .load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        pos
    }

    /// Bytes produced and not yet consumed.
    pub fn pending(&self) -> u64 {
        let cons = self.consumer_pos().load(Ordering::Relaxed);
        self.producer_pos().wrapping_sub(cons)
    }

    /// Consume up to `max` committed records, handing each one's bytes to `f`; returns how many
    /// records `f` saw. The consumer position is published once, at the end.
    ///
    /// A header whose length runs past the published producer position is refused with
    /// [`MalformedRecord`] (the records before it are consumed; the ring stays at the bad
    /// record).
    #[inline]
    pub fn consume(
        &mut self,
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, MalformedRecord> {
        let cons_pos = self.consumer_pos();
        let mut cons = cons_pos.load(Ordering::Relaxed);
        let prod = self.producer_pos();
        let mut seen = 0;
        let mut result = Ok(());
        while cons < prod && seen < max {
            // SAFETY: `cons & mask` is inside the data area; the header is 8-byte aligned.
            let hdr = unsafe { self.data.add((cons & self.mask) as usize) };
            // SAFETY: the header's first word is a u32 the kernel updates atomically; the
            // mapping is read-only, so Relaxed plus a fence: it pairs with the `xchg` that
            // commits the record in `bpf_ringbuf_commit`, so the sample's bytes are visible.
            let len = unsafe { AtomicU32::from_ptr(hdr as *mut u32) }.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if len & BUSY_BIT != 0 {
                break;
            }
            let (sample, total) = match record_extent(len, prod - cons) {
                Ok(extent) => extent,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if len & DISCARD_BIT == 0 {
                // SAFETY: the sample follows its header, lies below the published producer
                // position (checked above, so within one ring size) and is contiguous thanks
                // to the double mapping; the kernel never writes a committed record again.
                let bytes = unsafe {
                    std::slice::from_raw_parts(hdr.add(HDR_SZ as usize), sample as usize)
                };
                f(bytes);
                seen += 1;
            }
            cons += total;
        }
        // Pairs with the kernel's `smp_load_acquire(&rb->consumer_pos)` in
        // `__bpf_ringbuf_reserve`: the space we read is free only after this store.
        cons_pos.store(cons, Ordering::Release);
        result.map(|()| seen)
    }
}

/// Producer end of a `BPF_MAP_TYPE_USER_RINGBUF`.
pub struct RingWriter {
    consumer: Mapping,
    producer: Mapping,
    /// Start of the (doubly mapped) data area, one page into `producer`.
    data: *mut u8,
    size: u64,
    /// Producer position of records written but not yet published.
    pending: u64,
}

// SAFETY: see RingReader.
unsafe impl Send for RingWriter {}

impl RingWriter {
    /// Map the user ring behind `fd` (a `BPF_MAP_TYPE_USER_RINGBUF`), whose data area is
    /// `size` bytes (its max_entries, a power of two).
    ///
    /// Errors with [`io::ErrorKind::InvalidInput`] when the kernel says `fd` is not such a map
    /// or its size is not `size`.
    pub fn new(fd: BorrowedFd<'_>, size: u32) -> io::Result<Self> {
        check_ring(fd, MAP_TYPE_USER_RINGBUF, size)?;
        let page = page_size();
        let size = size as usize;
        let consumer = Mapping::new(fd, page, libc::PROT_READ, 0)?;
        let producer = Mapping::new(
            fd,
            page + 2 * size,
            libc::PROT_READ | libc::PROT_WRITE,
            page,
        )?;
        // SAFETY: the producer mapping is one page plus the data area, twice.
        let data = unsafe { producer.ptr.as_ptr().add(page) };
        let mut this = Self {
            consumer,
            producer,
            data,
            size: size as u64,
            pending: 0,
        };
        this.pending = this.producer_pos().load(Ordering::Acquire);
        Ok(this)
    }

    /// The consumer position, as the kernel published it. Page 0 is mapped read-only, so a
    /// `Relaxed` load plus an `Acquire` fence: it pairs with the kernel's
    /// `smp_store_release(&rb->consumer_pos, …)` in `__bpf_user_ringbuf_sample_release`, so
    /// the kernel is done with the space below it before we write there again.
    fn consumer_pos(&self) -> u64 {
        // SAFETY: page 0 starts with the 8-byte aligned consumer position, for the mapping's
        // life; a Relaxed atomic load is allowed on read-only memory.
        let pos = unsafe { AtomicU64::from_ptr(self.consumer.ptr.as_ptr().cast()) }
            .load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        pos
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: the producer page (mapped read-write) starts with the producer position.
        unsafe { AtomicU64::from_ptr(self.producer.ptr.as_ptr().cast()) }
    }

    /// Copy `record` into the ring without publishing it yet. False when the ring is full.
    #[inline]
    pub fn write(&mut self, record: &[u8]) -> bool {
        self.write_with(record.len(), |dst| dst.copy_from_slice(record))
    }

    /// Add a record of `len` bytes that `fill` writes in place, without publishing it yet.
    /// False (and `fill` not called) when the ring is full.
    #[inline]
    pub fn write_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        let total = round_up8(len as u64 + HDR_SZ);
        let cons = self.consumer_pos();
        if self.pending.wrapping_sub(cons) + total > self.size {
            return false;
        }
        let off = (self.pending & (self.size - 1)) as usize;
        // SAFETY: `off + total` lies within the doubly mapped data area (one page in), which
        // the kernel does not read past the published producer position.
        unsafe {
            let hdr = self.data.add(off);
            fill(std::slice::from_raw_parts_mut(
                hdr.add(HDR_SZ as usize),
                len,
            ));
            // pg_off (unused for user rings), then the length with neither flag set.
            (hdr.add(4) as *mut u32).write(0);
            AtomicU32::from_ptr(hdr as *mut u32).store(len as u32, Ordering::Release);
        }
        self.pending += total;
        true
    }

    /// Make every written record visible to the BPF consumer.
    pub fn publish(&mut self) {
        // Pairs with the kernel's `smp_load_acquire(&rb->producer_pos)` in
        // `__bpf_user_ringbuf_peek`: the records below it are complete.
        self.producer_pos().store(self.pending, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lengths_are_checked_against_what_is_published() {
        assert_eq!(record_extent(112, 120), Ok((112, 120)));
        assert_eq!(record_extent(113 | DISCARD_BIT, 128), Ok((113, 128)));
        // A header that claims more than the producer published never becomes a slice.
        assert_eq!(
            record_extent(4096, 120),
            Err(MalformedRecord {
                len: 4104,
                available: 120
            })
        );
        assert!(record_extent(!BUSY_BIT, 1 << 20).is_err());
    }

    #[test]
    fn a_fd_that_is_not_a_map_is_refused() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsFd::as_fd(&file);
        for err in [
            RingReader::new(fd, 4096).err().unwrap(),
            RingWriter::new(fd, 4096).err().unwrap(),
        ] {
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        }
    }
}
