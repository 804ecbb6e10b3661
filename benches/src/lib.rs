//! Shared setup of the channel benchmarks: the BPF ends of the user<->BPF channel
//! (`bpf/channel.bpf.c`, loaded with libbpf-rs and run with `BPF_PROG_TEST_RUN`), and one
//! step function per measured path, so the benchmark and the round-trip test run exactly
//! the same code.
//!
//! The scx-userland path is [`Dispatch::write_packed`] into a [`RingWriter`] (what
//! `BpfScheduler::dispatch_tasks` does: up to `DISPATCH_BATCH_MAX` records a sample) and [`RingReader::consume`] +
//! [`QueuedTask::from_bytes`] (what `BpfScheduler::dequeue_task{,s}` do). The baseline is the
//! same records moved through libbpf-rs' [`UserRingBuffer`] (reserve/submit per record) and
//! [`RingBuffer`] (callback consume). Each path has its own pair of maps.
//!
//! Needs root (or CAP_BPF + CAP_PERFMON) and a kernel with user ring buffers and
//! `bpf_dynptr_size` (6.4+), but
//! no sched_ext: [`Channel::open`] says why it cannot run with [`Error::Unavailable`].
#![deny(missing_docs)]

use std::cell::RefCell;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;

use libbpf_rs::{
    MapCore, MapFlags, MapImpl, Object, ObjectBuilder, RingBuffer, RingBufferBuilder,
    UserRingBuffer,
};
use scx_userland::ring::{RingReader, RingWriter};
use scx_userland::{Dispatch, QueuedTask, DISPATCH_RECORD_LEN, RL_CPU_ANY};

/// The compiled `bpf/channel.bpf.c`.
pub const OBJECT: &[u8] = include_bytes!(env!("SCX_BENCH_BPF_OBJECT"));

/// Records moved per iteration.
pub const BATCH_SIZES: [usize; 4] = [1, 8, 64, 512];

/// Tasks the BPF side knows (as in `channel.bpf.c`): pids `FIRST_PID..FIRST_PID + NR_TASKS`.
pub const NR_TASKS: i32 = 1024;
/// The first known pid.
pub const FIRST_PID: i32 = 1000;
/// Most records one produce run makes (as in `channel.bpf.c`).
pub const MAX_PRODUCE: usize = 4096;

/// Why a benchmark step or the setup failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This host cannot run the benchmark (not root, or `bpf()` refused): skip, do not fail.
    #[error("{0}")]
    Unavailable(String),
    /// A libbpf-rs call failed.
    #[error("libbpf: {0}")]
    Bpf(#[from] libbpf_rs::Error),
    /// A syscall failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The records did not arrive as sent.
    #[error("{0}")]
    Mismatch(String),
}

/// The BPF side's counters (`struct bench_stats` in `channel.bpf.c`, in that order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Dispatch records the drain callbacks saw.
    pub dispatch_records: u64,
    /// Records `bpf_dynptr_read` could not read (wrong size).
    pub dispatch_read_errors: u64,
    /// Records for a pid the BPF side does not know.
    pub dispatch_unknown: u64,
    /// Records whose CPU was stale or impossible (sent to any CPU instead).
    pub dispatch_bounced: u64,
    /// Records fully handled.
    pub dispatch_ok: u64,
    /// `bpf_user_ringbuf_drain` failures.
    pub drain_errors: u64,
    /// Queued records produced.
    pub queued_records: u64,
    /// Produce attempts that found the ring full.
    pub queued_full: u64,
}

const STATS_WORDS: usize = 9;

/// Which ring flags the BPF ends pass (the `flags` of `bpf_user_ringbuf_drain` and
/// `bpf_ringbuf_submit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// `BPF_RB_NO_WAKEUP` on every ring: the channel alone, the same BPF work for both paths.
    Never,
    /// Each path as it ships. Ours does what `main.bpf.c` does: its drain passes
    /// `BPF_RB_NO_WAKEUP` and its producer wakes user space only while it sleeps (never here:
    /// the consumer polls). The libbpf-rs baseline passes flags 0, the default a plain libbpf
    /// program uses: the kernel queues an irq_work to wake a waiting producer (user ring,
    /// after every drain that took records) or consumer (ring buffer, when it had caught up),
    /// one self-IPI per run.
    Deployed,
}

const BPF_RB_NO_WAKEUP: u64 = 1;
/// `bench_config.nr_cpu_ids`: every CPU the generated dispatches name is valid.
const BENCH_NR_CPU_IDS: u32 = 64;

/// The loaded BPF object: its four rings and the programs that drain and fill them.
pub struct Channel {
    obj: Object,
    drain: OwnedFd,
    drain_base: OwnedFd,
    produce: OwnedFd,
    produce_base: OwnedFd,
}

/// `struct produce_args` of `channel.bpf.c`.
#[repr(C)]
struct ProduceArgs {
    n: u32,
    pad: u32,
}

fn refused(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("bpf() refused to {what}: {e}"))
}

impl Channel {
    /// Load the object and fill in the tasks its drain programs look up.
    pub fn open() -> Result<Self, Error> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Unavailable(
                "needs root: it loads BPF programs and runs them with BPF_PROG_TEST_RUN".into(),
            ));
        }
        let mut builder = ObjectBuilder::default();
        builder.name("channel")?;
        let open = builder
            .open_memory(OBJECT)
            .map_err(|e| refused("open the object", e))?;
        let obj = open
            .load()
            .map_err(|e| refused("load the ring buffer programs", e))?;
        let prog_fd = |name: &str| -> Result<OwnedFd, Error> {
            let prog = obj
                .progs()
                .find(|p| p.name() == name)
                .ok_or_else(|| Error::Mismatch(format!("no program {name} in the object")))?;
            Ok(prog.as_fd().try_clone_to_owned()?)
        };
        let this = Self {
            drain: prog_fd("drain_dispatched")?,
            drain_base: prog_fd("drain_dispatched_base")?,
            produce: prog_fd("produce_queued")?,
            produce_base: prog_fd("produce_queued_base")?,
            obj,
        };
        let tasks = this.map("tasks")?;
        for pid in FIRST_PID..FIRST_PID + NR_TASKS {
            // struct bench_task: cpumask_cnt, then zeros.
            let mut value = [0u8; 40];
            value[..8].copy_from_slice(&(pid as u64).to_ne_bytes());
            tasks.update(&pid.to_ne_bytes(), &value, MapFlags::ANY)?;
        }
        Ok(this)
    }

    fn map(&self, name: &str) -> Result<MapImpl<'_>, Error> {
        self.obj
            .maps()
            .find(|m| m.name() == name)
            .ok_or_else(|| Error::Mismatch(format!("no map {name} in the object")))
    }

    fn ring_size(map: &MapImpl<'_>) -> u32 {
        map.max_entries()
    }

    /// A duplicate of the fd of ring `name` (`dispatched`, `dispatched_base`, `queued` or
    /// `queued_base`) and its data size, for ends of one's own. Each ring takes one end only.
    pub fn ring(&self, name: &str) -> Result<(OwnedFd, u32), Error> {
        let map = self.map(name)?;
        Ok((map.as_fd().try_clone_to_owned()?, Self::ring_size(&map)))
    }

    /// Our producer end of the `dispatched` user ring.
    pub fn writer(&self) -> Result<RingWriter, Error> {
        let map = self.map("dispatched")?;
        Ok(RingWriter::new(map.as_fd(), Self::ring_size(&map))?)
    }

    /// Our consumer end of the `queued` ring.
    pub fn reader(&self) -> Result<RingReader, Error> {
        let map = self.map("queued")?;
        Ok(RingReader::new(map.as_fd(), Self::ring_size(&map))?)
    }

    /// libbpf-rs' producer end of the `dispatched_base` user ring.
    pub fn baseline_writer(&self) -> Result<UserRingBuffer, Error> {
        Ok(UserRingBuffer::new(&self.map("dispatched_base")?)?)
    }

    /// libbpf-rs' consumer end of the `queued_base` ring, as a plain user writes it: the
    /// callback decodes each record and appends it to `sink`.
    pub fn baseline_reader(
        &self,
        sink: Rc<RefCell<Vec<QueuedTask>>>,
    ) -> Result<RingBuffer<'static>, Error> {
        let map = self.map("queued_base")?;
        let mut builder = RingBufferBuilder::new();
        builder.add(&map, move |bytes: &[u8]| {
            match QueuedTask::from_bytes(bytes) {
                Some(task) => {
                    sink.borrow_mut().push(task);
                    0
                }
                None => -libc::EINVAL,
            }
        })?;
        Ok(builder.build()?)
    }

    fn run(fd: &OwnedFd, ctx: Option<&[u8]>) -> Result<u32, Error> {
        let mut opts = libbpf_sys::bpf_test_run_opts {
            sz: size_of::<libbpf_sys::bpf_test_run_opts>() as _,
            ..Default::default()
        };
        if let Some(ctx) = ctx {
            opts.ctx_in = ctx.as_ptr().cast();
            opts.ctx_size_in = ctx.len() as _;
        }
        // SAFETY: `opts` is a valid, sized bpf_test_run_opts; ctx_in outlives the call.
        let rc = unsafe { libbpf_sys::bpf_prog_test_run_opts(fd.as_raw_fd(), &mut opts) };
        if rc < 0 {
            return Err(io::Error::from_raw_os_error(-rc).into());
        }
        Ok(opts.retval)
    }

    /// Run `drain_dispatched` once: drains our user ring; returns the records drained.
    pub fn drain(&self) -> Result<u32, Error> {
        Self::run(&self.drain, None)
    }

    /// Run `drain_dispatched_base` once: drains the baseline's user ring.
    pub fn drain_baseline(&self) -> Result<u32, Error> {
        Self::run(&self.drain_base, None)
    }

    fn produce_on(fd: &OwnedFd, n: usize) -> Result<u32, Error> {
        let args = ProduceArgs {
            n: n.min(MAX_PRODUCE) as u32,
            pad: 0,
        };
        // SAFETY: ProduceArgs is plain old data without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&args as *const ProduceArgs).cast::<u8>(),
                size_of::<ProduceArgs>(),
            )
        };
        Self::run(fd, Some(bytes))
    }

    /// Run `produce_queued` once: `n` records into our ring; returns how many fit.
    pub fn produce(&self, n: usize) -> Result<u32, Error> {
        Self::produce_on(&self.produce, n)
    }

    /// Run `produce_queued_base` once: `n` records into the baseline's ring.
    pub fn produce_baseline(&self, n: usize) -> Result<u32, Error> {
        Self::produce_on(&self.produce_base, n)
    }

    fn internal_map(&self, suffix: &str) -> Result<MapImpl<'_>, Error> {
        self.obj
            .maps()
            .find(|m| m.name().to_string_lossy().ends_with(suffix))
            .ok_or_else(|| Error::Mismatch(format!("no {suffix} map in the object")))
    }

    /// Choose the ring flags of every BPF ring call from now on (`bench_config` in `channel.bpf.c`).
    pub fn set_wakeup(&self, wakeup: Wakeup) -> Result<(), Error> {
        let (ours, base): (u64, u64) = match wakeup {
            Wakeup::Never => (BPF_RB_NO_WAKEUP, BPF_RB_NO_WAKEUP),
            Wakeup::Deployed => (BPF_RB_NO_WAKEUP, 0),
        };
        let mut value = [0u8; 24];
        value[..8].copy_from_slice(&ours.to_ne_bytes());
        value[8..16].copy_from_slice(&base.to_ne_bytes());
        value[16..20].copy_from_slice(&BENCH_NR_CPU_IDS.to_ne_bytes());
        // consumer_sleeping (bytes 20..24) stays 0: the benchmark's consumer polls.
        self.internal_map(".data")?
            .update(&0u32.to_ne_bytes(), &value, MapFlags::ANY)?;
        Ok(())
    }

    /// The BPF side's counters.
    pub fn stats(&self) -> Result<Stats, Error> {
        let raw = self
            .internal_map(".bss")?
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)?
            .ok_or_else(|| Error::Mismatch(".bss has no value".into()))?;
        if raw.len() < STATS_WORDS * 8 {
            return Err(Error::Mismatch(format!(".bss is {} bytes", raw.len())));
        }
        let w = |i: usize| u64::from_ne_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap());
        Ok(Stats {
            dispatch_records: w(0),
            dispatch_read_errors: w(1),
            dispatch_unknown: w(2),
            dispatch_bounced: w(3),
            dispatch_ok: w(4),
            drain_errors: w(5),
            queued_records: w(6),
            queued_full: w(7),
        })
    }
}

/// `n` decisions as a scheduler makes them: known pids, a mix of own-CPU dispatches and
/// vtime-ordered any-CPU ones, default and explicit slices.
pub fn dispatches(n: usize) -> Vec<Dispatch> {
    (0..n)
        .map(|i| {
            let pid = FIRST_PID + (i as i32 % NR_TASKS);
            let any = i % 4 == 3;
            Dispatch {
                pid,
                cpu: if any { RL_CPU_ANY } else { (i % 2) as i32 },
                cpumask_cnt: pid as u64,
                slice_ns: if i % 3 == 0 { 0 } else { 3_000_000 },
                vtime: if any { i as u64 + 1 } else { 0 },
                ..Dispatch::default()
            }
        })
        .collect()
}

fn expect(what: &str, got: usize, want: usize) -> Result<(), Error> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Mismatch(format!(
            "{what}: {got} records, expected {want}"
        )))
    }
}

/// One dispatch iteration on our path: write the decisions packed, publish once (what
/// `BpfScheduler::dispatch_tasks` does), call `mid`, then run the drain program once.
pub fn dispatch_ours(
    ch: &Channel,
    w: &mut RingWriter,
    batch: &[Dispatch],
    mut mid: impl FnMut(),
) -> Result<(), Error> {
    if Dispatch::write_packed(batch, w) != batch.len() {
        return Err(Error::Mismatch("our user ring is full".into()));
    }
    w.publish();
    mid();
    expect("drained (ours)", ch.drain()? as usize, batch.len())
}

/// One dispatch iteration on the baseline: reserve, fill and submit each record with
/// libbpf-rs' `UserRingBuffer`, call `mid`, then run the drain program once.
pub fn dispatch_baseline(
    ch: &Channel,
    urb: &UserRingBuffer,
    batch: &[Dispatch],
    mut mid: impl FnMut(),
) -> Result<(), Error> {
    for d in batch {
        let mut sample = urb.reserve(DISPATCH_RECORD_LEN)?;
        sample.copy_from_slice(&d.to_bytes());
        urb.submit(sample)?;
    }
    mid();
    expect(
        "drained (baseline)",
        ch.drain_baseline()? as usize,
        batch.len(),
    )
}

/// One dequeue iteration on our path, batch form: run the produce program for `n` records,
/// call `mid`, then take them all in one `consume` pass into `out` (what
/// `BpfScheduler::dequeue_tasks` does).
pub fn dequeue_ours_batch(
    ch: &Channel,
    r: &mut RingReader,
    n: usize,
    out: &mut Vec<QueuedTask>,
    mut mid: impl FnMut(),
) -> Result<(), Error> {
    expect("produced (ours)", ch.produce(n)? as usize, n)?;
    mid();
    out.clear();
    let mut bad = false;
    r.consume(usize::MAX, |bytes| match QueuedTask::from_bytes(bytes) {
        Some(t) => out.push(t),
        None => bad = true,
    })
    .map_err(|e| Error::Mismatch(e.to_string()))?;
    if bad {
        return Err(Error::Mismatch("malformed queued record".into()));
    }
    expect("consumed (ours, batch)", out.len(), n)
}

/// One dequeue iteration on our path, single pops: like [`dequeue_ours_batch`], but one
/// `consume(1)` per record until the ring is empty (what a `dequeue_task` loop does).
pub fn dequeue_ours_single(
    ch: &Channel,
    r: &mut RingReader,
    n: usize,
    out: &mut Vec<QueuedTask>,
    mut mid: impl FnMut(),
) -> Result<(), Error> {
    expect("produced (ours)", ch.produce(n)? as usize, n)?;
    mid();
    out.clear();
    loop {
        let mut task = None;
        if r.consume(1, |bytes| task = QueuedTask::from_bytes(bytes))
            .map_err(|e| Error::Mismatch(e.to_string()))?
            == 0
        {
            break;
        }
        match task {
            Some(t) => out.push(t),
            None => return Err(Error::Mismatch("malformed queued record".into())),
        }
    }
    expect("consumed (ours, single)", out.len(), n)
}

/// One dequeue iteration on the baseline: run the produce program, call `mid`, then
/// `RingBuffer::consume` (its callback appends to the `sink` it was built with).
pub fn dequeue_baseline(
    ch: &Channel,
    rb: &RingBuffer<'_>,
    sink: &RefCell<Vec<QueuedTask>>,
    n: usize,
    mut mid: impl FnMut(),
) -> Result<(), Error> {
    expect("produced (baseline)", ch.produce_baseline(n)? as usize, n)?;
    mid();
    sink.borrow_mut().clear();
    rb.consume()?;
    expect("consumed (baseline)", sink.borrow().len(), n)
}
