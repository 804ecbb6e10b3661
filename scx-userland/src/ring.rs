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

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

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
    pub fn new(fd: BorrowedFd<'_>, size: u32) -> io::Result<Self> {
        let page = page_size();
        let size = size as usize;
        if !size.is_power_of_two() {
            return Err(io::Error::other("ring size is not a power of two"));
        }
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

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: as above, for the producer page.
        unsafe { AtomicU64::from_ptr(self.producer.ptr.as_ptr().cast()) }
    }

    /// Bytes produced and not yet consumed.
    pub fn pending(&self) -> u64 {
        let cons = self.consumer_pos().load(Ordering::Relaxed);
        self.producer_pos()
            .load(Ordering::Acquire)
            .wrapping_sub(cons)
    }

    /// Consume up to `max` committed records, handing each one's bytes to `f`; returns how many
    /// records `f` saw. The consumer position is published once, at the end.
    #[inline]
    pub fn consume(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let cons_pos = self.consumer_pos();
        let mut cons = cons_pos.load(Ordering::Relaxed);
        let prod = self.producer_pos().load(Ordering::Acquire);
        let mut seen = 0;
        while cons < prod && seen < max {
            // SAFETY: `cons & mask` is inside the data area; the header is 8-byte aligned.
            let hdr = unsafe { self.data.add((cons & self.mask) as usize) };
            // SAFETY: the header's first word is a u32 the kernel updates atomically.
            let len = unsafe { AtomicU32::from_ptr(hdr as *mut u32) }.load(Ordering::Acquire);
            if len & BUSY_BIT != 0 {
                break;
            }
            let sample = (len & !(BUSY_BIT | DISCARD_BIT)) as u64;
            if len & DISCARD_BIT == 0 {
                // SAFETY: the sample follows its header and is contiguous thanks to the
                // double mapping; the kernel never writes a committed record again.
                let bytes = unsafe {
                    std::slice::from_raw_parts(hdr.add(HDR_SZ as usize), sample as usize)
                };
                f(bytes);
                seen += 1;
            }
            cons += round_up8(sample + HDR_SZ);
        }
        cons_pos.store(cons, Ordering::Release);
        seen
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
    pub fn new(fd: BorrowedFd<'_>, size: u32) -> io::Result<Self> {
        let page = page_size();
        let size = size as usize;
        if !size.is_power_of_two() {
            return Err(io::Error::other("ring size is not a power of two"));
        }
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

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: page 0 starts with the consumer position.
        unsafe { AtomicU64::from_ptr(self.consumer.ptr.as_ptr().cast()) }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: the producer page starts with the producer position.
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
        let cons = self.consumer_pos().load(Ordering::Acquire);
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
        self.producer_pos().store(self.pending, Ordering::Release);
    }
}
