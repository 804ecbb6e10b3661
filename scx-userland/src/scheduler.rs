//! [`BpfScheduler`]: load, attach and talk to the BPF component.

use std::ffi::CStr;
use std::fs;
use std::marker::PhantomData;
use std::mem::{size_of, ManuallyDrop, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, OpenObject};
use scx_userland_bpf::skel::{types, UserlandSkel, UserlandSkelBuilder};
use scx_userland_sys as sys;

use crate::ring::{RingReader, RingWriter};
use crate::task::{Dispatch, QueuedTask, RL_CPU_ANY, SLICE_MAX_NS};
use crate::topology::Topology;
use crate::Error;

/// Only one scheduler can be attached at a time, machine-wide; this catches a second one
/// in the same process before the kernel does.
static ATTACHED: AtomicBool = AtomicBool::new(false);

/// The longest scheduler name the kernel keeps (`SCX_OPS_NAME_LEN` less the NUL).
const OPS_NAME_MAX: usize = 127;
/// The kernel's watchdog limit for `timeout_ms`.
const SCX_WATCHDOG_MAX_MS: u32 = 30_000;
/// The stall guard's memory of hand-overs by default (the BPF `pending` queue's size).
const STALL_GUARD_CAPACITY_DEFAULT: u32 = 32_768;
/// The bounds [`BpfSchedulerBuilder::stall_guard_capacity`] accepts.
const STALL_GUARD_CAPACITY_RANGE: std::ops::RangeInclusive<u32> = 16..=(1 << 22);
/// How long `update_tasks`/`notify_complete` sleep at most when there is nothing to do.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Every option of the BPF component. [`BpfScheduler::init`] covers the classic five; the
/// builder adds the rest.
#[derive(Clone, Debug)]
pub struct BpfSchedulerBuilder {
    slice_us: u64,
    nr_cpus: Option<i64>,
    partial: bool,
    full_user: bool,
    debug: bool,
    exit_dump_len: u32,
    name: String,
    timeout_ms: u32,
    stall_timeout_ms: u32,
    stall_guard_capacity: u32,
    lock_memory: bool,
    direct_idle: bool,
    version: Option<String>,
}

/// The environment variable that overrides the watchdog timeout, as for every sched_ext
/// scheduler.
pub const SCX_TIMEOUT_MS_ENV: &str = "SCX_TIMEOUT_MS";

impl Default for BpfSchedulerBuilder {
    fn default() -> Self {
        Self {
            slice_us: crate::SLICE_DEFAULT_NS / 1000,
            nr_cpus: None,
            partial: false,
            full_user: false,
            debug: false,
            exit_dump_len: 0,
            name: "userland".to_string(),
            timeout_ms: 5000,
            stall_timeout_ms: 100,
            stall_guard_capacity: STALL_GUARD_CAPACITY_DEFAULT,
            lock_memory: true,
            direct_idle: false,
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
        }
    }
}

impl BpfSchedulerBuilder {
    /// Default time slice in microseconds (used when a dispatch asks for 0). 1 to 1,000,000.
    pub fn slice_us(mut self, slice_us: u64) -> Self {
        self.slice_us = slice_us;
        self
    }

    /// Number of CPUs the scheduler manages; default: all possible CPUs.
    pub fn nr_cpus(mut self, nr_cpus: usize) -> Self {
        self.nr_cpus = Some(i64::try_from(nr_cpus).unwrap_or(i64::MAX));
        self
    }

    /// Schedule only tasks whose policy is `SCHED_EXT`; others stay with the default scheduler.
    pub fn partial(mut self, partial: bool) -> Self {
        self.partial = partial;
        self
    }

    /// Send per-CPU kernel threads to user space too, instead of dispatching them in BPF.
    pub fn full_user(mut self, full_user: bool) -> Self {
        self.full_user = full_user;
        self
    }

    /// Enable the BPF component's debug output (`bpf_printk`, in the kernel trace buffer).
    pub fn debug(mut self, debug: bool) -> Self {
        self.debug = debug;
        self
    }

    /// Bytes of the kernel's debug dump to keep in the exit report on an error exit (0: none;
    /// at most 32 KiB are kept).
    pub fn exit_dump_len(mut self, len: u32) -> Self {
        self.exit_dump_len = len;
        self
    }

    /// The name shown in `/sys/kernel/sched_ext/root/ops` (letters, digits, `_` and `.`),
    /// followed there by the version suffix (see [`version`](Self::version)).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// The version the kernel-visible name carries, as sched_ext schedulers do:
    /// `<name>_<version>_<arch>_<os>` in `/sys/kernel/sched_ext/root/ops`, e.g.
    /// `scx_fifo_0.1.0_x86_64_linux` (characters other than letters, digits, `_` and `.`
    /// become `_`; the suffix is cut to fit the kernel's 127 characters). Default: this
    /// crate's version; pass your scheduler's, e.g. `env!("CARGO_PKG_VERSION")`.
    pub fn version(mut self, version: &str) -> Self {
        self.version = Some(version.to_string());
        self
    }

    /// Whether the kernel-visible name carries the version suffix (default: yes). With
    /// `false` it is exactly [`name`](Self::name).
    pub fn version_suffix(mut self, on: bool) -> Self {
        if !on {
            self.version = None;
        } else if self.version.is_none() {
            self.version = Some(env!("CARGO_PKG_VERSION").to_string());
        }
        self
    }

    /// The name the kernel will show: [`name`](Self::name) plus the version suffix.
    pub fn ops_name(&self) -> String {
        let Some(version) = &self.version else {
            return self.name.clone();
        };
        let suffix: String = format!(
            "_{version}_{}_{}",
            std::env::consts::ARCH,
            std::env::consts::OS
        )
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
        let room = OPS_NAME_MAX.saturating_sub(self.name.len());
        format!("{}{}", self.name, &suffix[..suffix.len().min(room)])
    }

    /// How long a runnable task may wait before the kernel's watchdog ejects the scheduler, in
    /// ms (1 to 30,000; default 5,000). The environment variable `SCX_TIMEOUT_MS`, when set,
    /// overrides it (within the same bounds), as for every sched_ext scheduler. Before that, a
    /// task that has waited in a shared queue for a quarter of it (20 ms to 1 s) is moved to the
    /// head of its CPU's local queue by BPF ([`Stats::nr_shared_rescues`]).
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = ms;
        self
    }

    /// Stall guard: when tasks wait on user space and it makes no progress (consumes no task
    /// and sends no decision) for this long, BPF runs the waiting tasks itself until user space
    /// decides again. 10 to 10,000 ms, below `timeout_ms`; default 100. Detection adds up to
    /// 20 ms (the guard's tick).
    pub fn stall_timeout_ms(mut self, ms: u32) -> Self {
        self.stall_timeout_ms = ms;
        self
    }

    /// How many hand-overs to user space the stall guard remembers (16 to 4,194,304; default
    /// 32,768). It finds the tasks waiting on user space through these entries. When it is full,
    /// the entry at its head (usually the oldest) is dropped for the new one; if that task was
    /// still waiting, the guard can no longer run it in a stall, and
    /// [`Stats::nr_pending_lost`] counts it. Raise it for policies that keep tens of thousands of
    /// tasks waiting; each entry takes 16 bytes of kernel memory.
    pub fn stall_guard_capacity(mut self, entries: u32) -> Self {
        self.stall_guard_capacity = entries;
        self
    }

    /// Idle fast path: a waking task that finds an idle CPU (the kernel's idle selection, at
    /// wake-up) is dispatched there by BPF at once, with the default slice, and never reaches
    /// user space (counted in [`Stats::nr_direct_dispatches`]). Every other task still comes to
    /// [`BpfScheduler::dequeue_task`]. Turn it on when the policy would send such a task to
    /// that idle CPU anyway (FIFO, vruntime): it saves a round trip per wake-up. Default: off.
    pub fn direct_idle(mut self, direct_idle: bool) -> Self {
        self.direct_idle = direct_idle;
        self
    }

    /// Lock the process's memory (`mlockall`) so the scheduler never waits on a page fault
    /// while every other task waits on it. Default: on.
    pub fn lock_memory(mut self, lock: bool) -> Self {
        self.lock_memory = lock;
        self
    }

    /// Load the BPF component and attach it: from here on, tasks come to this process.
    pub fn build<'a>(&self) -> Result<BpfScheduler<'a>, Error> {
        BpfScheduler::start(self)
    }
}

/// The connection to the BPF component: tasks in through [`dequeue_task`](Self::dequeue_task),
/// decisions out through [`dispatch_task`](Self::dispatch_task).
///
/// Dropping it detaches the scheduler; [`shutdown_and_report`](Self::shutdown_and_report)
/// does the same and says why the scheduler stopped.
///
/// The lifetime `'a` ties nothing you pass in: the BPF object lives inside the value, and
/// the parameter is kept so that code written as `struct Scheduler<'a> { bpf:
/// BpfScheduler<'a> }` keeps compiling; any lifetime, `'static` included, works.
///
/// It is neither `Send` nor `Sync`: the thread that built it is the scheduling thread,
/// the one BPF runs ahead of other tasks, so it must stay on that thread (use
/// [`Waker`] or a [`Stopper`](crate::Stopper) to reach it from others).
///
/// ```compile_fail
/// fn needs_send<T: Send>() {}
/// needs_send::<scx_userland::BpfScheduler<'static>>();
/// ```
pub struct BpfScheduler<'a> {
    // Field order is drop order: detach first, then unmap, then free the object.
    link: Option<Link>,
    queued: RingReader,
    dispatched: RingWriter,
    epoll: OwnedFd,
    waker: Waker,
    skel: ManuallyDrop<UserlandSkel<'static>>,
    /// The skeleton's `.bss` mapping, shared with BPF, which updates it concurrently: only
    /// ever accessed through raw pointers and atomics, never through Rust references.
    bss: NonNull<types::bss>,
    open_object: NonNull<MaybeUninit<OpenObject>>,
    nr_cpu_ids: u32,
    topology: Topology,
    locked_memory: bool,
    _lifetime: PhantomData<&'a mut ()>,
}

/// Wakes a [`BpfScheduler`] sleeping in `update_tasks`/`notify_complete`/`wait_for_tasks`,
/// e.g. from a signal-handling thread, so a shutdown is not delayed by the idle wait.
#[derive(Clone, Debug)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    /// Wake the scheduler's wait (it returns as if a task had arrived).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to an eventfd; a full counter (EAGAIN) is already a wake-up.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// A counter of the BPF component's `.bss`, read when created and, if it was assigned through
/// `*counter = …` (or `+=`), written back when dropped. This keeps the `nr_*_mut()` accessors'
/// `*bpf.nr_queued_mut() = n` form working without a `&mut u64` into memory that BPF updates
/// concurrently. Reads and writes are single atomic accesses; a read-modify-write such as
/// `+= 1` is not atomic as a whole (an update BPF makes in between is overwritten), so only
/// assign the counters user space owns (`nr_queued`, `nr_scheduled`) and read the others.
pub struct CounterMut<'a> {
    shared: &'a AtomicU64,
    value: u64,
    written: bool,
}

impl std::ops::Deref for CounterMut<'_> {
    type Target = u64;
    fn deref(&self) -> &u64 {
        &self.value
    }
}

impl std::ops::DerefMut for CounterMut<'_> {
    fn deref_mut(&mut self) -> &mut u64 {
        self.written = true;
        &mut self.value
    }
}

impl Drop for CounterMut<'_> {
    fn drop(&mut self) {
        if self.written {
            self.shared.store(self.value, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for CounterMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value.fmt(f)
    }
}

/// A `u64` field of the shared `.bss`, as the atomic that BPF and user space share it as.
macro_rules! shared_u64 {
    ($self:ident . $($field:tt)+) => {
        // SAFETY: `bss` points into the live `.bss` mapping for `$self`'s lifetime; the field
        // is an aligned u64 (asserted by the BPF object's layout); BPF accesses it
        // concurrently, so it is only ever accessed atomically from here.
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*$self.bss.as_ptr()).$($field)+)) }
    };
}

macro_rules! counter_mut {
    ($($(#[$doc:meta])* $fn:ident => $field:ident;)*) => {$(
        $(#[$doc])*
        ///
        /// Returns a [`CounterMut`]: `*bpf.nr_…_mut()` reads the counter, and
        /// `*bpf.nr_…_mut() = n` sets it.
        pub fn $fn(&mut self) -> CounterMut<'_> {
            let shared = shared_u64!(self.$field);
            CounterMut { value: shared.load(Ordering::Relaxed), shared, written: false }
        }
    )*};
}

/// A snapshot of the BPF component's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPUs the scheduler manages.
    pub nr_online_cpus: u64,
    /// Tasks running right now.
    pub nr_running: u64,
    /// Tasks user space reported as queued (`update_tasks`).
    pub nr_queued: u64,
    /// Tasks user space reported as scheduled but not yet dispatched.
    pub nr_scheduled: u64,
    /// Dispatches from user space that reached a DSQ (bounced ones included).
    pub nr_user_dispatches: u64,
    /// Tasks BPF dispatched itself (per-CPU kernel threads).
    pub nr_kernel_dispatches: u64,
    /// Dispatches dropped because the task exited, was dequeued, or was not waiting.
    pub nr_cancel_dispatches: u64,
    /// Dispatches whose CPU the task may not (or no longer) use, sent to a CPU it may use.
    pub nr_bounce_dispatches: u64,
    /// Dispatch ring samples BPF could not read (not a whole number of records).
    pub nr_failed_dispatches: u64,
    /// Tasks BPF ran itself because the queued ring was full.
    pub nr_sched_congested: u64,
    /// Task records sent to user space.
    pub nr_queued_events: u64,
    /// Exit notices sent to user space.
    pub nr_exit_events: u64,
    /// Dispatch records BPF received.
    pub nr_dispatch_records: u64,
    /// Times the stall guard found user space stuck and BPF took over.
    pub nr_stalls: u64,
    /// Tasks BPF ran itself while user space was stuck.
    pub nr_fallback_dispatches: u64,
    /// Wake-ups BPF sent straight to an idle CPU ([`BpfSchedulerBuilder::direct_idle`]).
    pub nr_direct_dispatches: u64,
    /// Tasks preempted by the scheduler's own thread, which BPF keeps for their CPU to finish
    /// their slice (no round trip: the policy did not preempt them). They resume once the
    /// decisions the scheduler just made are carried out, and the tasks those put in the FIFO
    /// queue have run (or after 1 ms).
    pub nr_displaced_dispatches: u64,
    /// Tasks a higher sched class's taking of their CPU sent back through enqueue (they are
    /// placed again instead of waiting behind it), and decisions for a CPU such a class
    /// holds, sent to any CPU instead.
    pub nr_reenqueued: u64,
    /// Dispatches to [`RL_CPU_ANY`](crate::RL_CPU_ANY) placed in the vtime-ordered shared
    /// queue ([`Target::Vtime`](crate::Target::Vtime)).
    pub nr_vtime_dispatches: u64,
    /// Memory-management kernel threads (kswapd, kcompactd, khugepaged) BPF ran itself.
    pub nr_mm_kthread_dispatches: u64,
    /// Tasks without a task context that BPF ran itself.
    pub nr_untracked_dispatches: u64,
    /// Displaced tasks BPF's timer moved to their CPU because that CPU did not look at its
    /// resume queue in time (its local queue never ran dry).
    pub nr_resume_rescues: u64,
    /// Tasks BPF's timer moved from a shared queue to the head of their CPU's local queue
    /// after they waited there for the lesser of 1 s and a quarter of `timeout_ms` (every CPU
    /// they may use kept busy with tasks sent to it).
    pub nr_shared_rescues: u64,
    /// Stall-guard entries evicted from its full queue while their task still waited (such a
    /// task is invisible to the guard until user space decides on it).
    pub nr_pending_lost: u64,
    /// Tasks handed to user space and not yet decided on.
    pub nr_outstanding: i64,
    /// True while BPF runs the tasks itself (user space stuck).
    pub fallback: bool,
}

impl std::fmt::Display for Stats {
    /// `key=value` pairs, one space apart: easy to read and to parse.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "online_cpus={} running={} queued={} scheduled={} user_dispatches={} \
             kernel_dispatches={} cancel_dispatches={} bounce_dispatches={} \
             failed_dispatches={} sched_congested={} queued_events={} exit_events={} \
             dispatch_records={} stalls={} fallback_dispatches={} direct_dispatches={} \
             displaced_dispatches={} reenqueued={} vtime_dispatches={} mm_kthread_dispatches={} \
             untracked_dispatches={} resume_rescues={} shared_rescues={} pending_lost={} outstanding={} fallback={}",
            self.nr_online_cpus,
            self.nr_running,
            self.nr_queued,
            self.nr_scheduled,
            self.nr_user_dispatches,
            self.nr_kernel_dispatches,
            self.nr_cancel_dispatches,
            self.nr_bounce_dispatches,
            self.nr_failed_dispatches,
            self.nr_sched_congested,
            self.nr_queued_events,
            self.nr_exit_events,
            self.nr_dispatch_records,
            self.nr_stalls,
            self.nr_fallback_dispatches,
            self.nr_direct_dispatches,
            self.nr_displaced_dispatches,
            self.nr_reenqueued,
            self.nr_vtime_dispatches,
            self.nr_mm_kthread_dispatches,
            self.nr_untracked_dispatches,
            self.nr_resume_rescues,
            self.nr_shared_rescues,
            self.nr_pending_lost,
            self.nr_outstanding,
            u8::from(self.fallback)
        )
    }
}

/// The number of CPUs to manage: `nr_cpus` if given (1 to the machine's CPU ids), else all of
/// them; refused when the machine has more CPU ids than the BPF component's per-CPU arrays
/// hold ([`sys::RL_MAX_CPUS`]): it would not see the CPUs beyond.
fn check_cpus(nr_cpu_ids: usize, nr_cpus: Option<i64>) -> Result<i64, Error> {
    let max = sys::RL_MAX_CPUS;
    let nr_cpu_ids = match u32::try_from(nr_cpu_ids) {
        Ok(n) if n <= max => n,
        _ => {
            return Err(Error::TooManyCpus {
                nr_cpu_ids: u32::try_from(nr_cpu_ids).unwrap_or(u32::MAX),
                max,
            })
        }
    };
    let nr_cpus = nr_cpus.unwrap_or(nr_cpu_ids.into());
    if nr_cpus < 1 || nr_cpus > nr_cpu_ids.into() {
        return Err(Error::InvalidNrCpus {
            nr_cpus,
            max: nr_cpu_ids,
        });
    }
    Ok(nr_cpus)
}

impl<'a> BpfScheduler<'a> {
    /// Load and attach the BPF component (the classic `scx_rustland_core` signature).
    ///
    /// - `slice_us`: default time slice, 1 to 1,000,000 us, used when a dispatch says 0.
    /// - `nr_cpus`: CPUs to manage, 1 to the machine's possible CPUs.
    /// - `partial`: only schedule `SCHED_EXT` tasks.
    /// - `full_user`: per-CPU kernel threads go through user space too.
    /// - `debug`: BPF debug output.
    ///
    /// Errors: [`Error::Unsupported`] without sched_ext, [`Error::PermissionDenied`] without
    /// root, [`Error::AlreadyAttached`] when a scheduler is already attached (including a
    /// second `init` in this process), [`Error::InvalidSlice`]/[`Error::InvalidNrCpus`] for
    /// bad arguments.
    pub fn init(
        slice_us: u64,
        nr_cpus: i32,
        partial: bool,
        full_user: bool,
        debug: bool,
    ) -> Result<Self, Error> {
        let mut builder = Self::builder()
            .slice_us(slice_us)
            .partial(partial)
            .full_user(full_user)
            .debug(debug);
        // The classic i32 as is: a negative count is refused by `build` (InvalidNrCpus).
        builder.nr_cpus = Some(nr_cpus.into());
        builder.build()
    }

    /// All options, with defaults.
    pub fn builder() -> BpfSchedulerBuilder {
        BpfSchedulerBuilder::default()
    }

    fn start(opts: &BpfSchedulerBuilder) -> Result<Self, Error> {
        let max_slice_us = SLICE_MAX_NS / 1000;
        if opts.slice_us == 0 || opts.slice_us > max_slice_us {
            return Err(Error::InvalidSlice {
                slice_us: opts.slice_us,
                max_us: max_slice_us,
            });
        }
        let topo = Topology::new().map_err(Error::io("reading the CPU topology"))?;
        let nr_cpus = check_cpus(topo.nr_cpus(), opts.nr_cpus)?;
        if opts.name.is_empty()
            || opts.name.len() > OPS_NAME_MAX
            || !opts
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(Error::InvalidName(opts.name.clone()));
        }
        let mut opts = opts.clone();
        if let Ok(text) = std::env::var(SCX_TIMEOUT_MS_ENV) {
            opts.timeout_ms = text
                .trim()
                .parse()
                .map_err(|_| Error::InvalidTimeoutEnv(text.clone()))?;
        }
        let opts = &opts;
        if opts.timeout_ms == 0 || opts.timeout_ms > SCX_WATCHDOG_MAX_MS {
            return Err(Error::InvalidTimeout(opts.timeout_ms));
        }
        if !(10..=10_000).contains(&opts.stall_timeout_ms)
            || opts.stall_timeout_ms >= opts.timeout_ms
        {
            return Err(Error::InvalidStallTimeout {
                stall_ms: opts.stall_timeout_ms,
                timeout_ms: opts.timeout_ms,
            });
        }
        if !STALL_GUARD_CAPACITY_RANGE.contains(&opts.stall_guard_capacity) {
            return Err(Error::InvalidStallGuardCapacity(opts.stall_guard_capacity));
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::PermissionDenied);
        }
        check_support(std::path::Path::new("/sys/kernel"))?;
        // The kernel's own numbering of the sched_ext enums this crate uses.
        crate::kernel_enums::load().map_err(Error::Load)?;
        if ATTACHED.swap(true, Ordering::SeqCst) {
            return Err(Error::AlreadyAttached(
                "another BpfScheduler in this process".into(),
            ));
        }
        let res = Self::start_attached(opts, nr_cpus as u64, topo);
        if res.is_err() {
            ATTACHED.store(false, Ordering::SeqCst);
        }
        res
    }

    fn start_attached(
        opts: &BpfSchedulerBuilder,
        nr_cpus: u64,
        topology: Topology,
    ) -> Result<Self, Error> {
        if let Some(current) = attached_scheduler() {
            return Err(Error::AlreadyAttached(current));
        }
        let storage = NonNull::from(Box::leak(Box::new(MaybeUninit::<OpenObject>::uninit())));
        // SAFETY: the storage lives until `Drop` (or the error path below) frees it, after the
        // skeleton that borrows it is gone, so treating the borrow as 'static is sound.
        let skel = match load(opts, unsafe { &mut *storage.as_ptr() }) {
            Ok(skel) => skel,
            Err(e) => {
                // SAFETY: nothing borrows the storage any more; it was leaked from a Box above.
                drop(unsafe { Box::from_raw(storage.as_ptr()) });
                return Err(e);
            }
        };
        let mut this = Self::wrap(skel, storage, topology)?;
        shared_u64!(this.nr_online_cpus).store(nr_cpus, Ordering::Relaxed);
        if opts.lock_memory {
            // SAFETY: mlockall has no memory-safety preconditions.
            this.locked_memory =
                unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } == 0;
        }
        let link =
            this.skel.maps.userland_ops.attach_struct_ops().map_err(
                |e| match attached_scheduler() {
                    Some(other) => Error::AlreadyAttached(other),
                    None => Error::Attach(e),
                },
            )?;
        this.link = Some(link);
        Ok(this)
    }

    /// Build the value around a loaded skeleton; on error the skeleton and storage are freed.
    fn wrap(
        mut skel: UserlandSkel<'static>,
        storage: NonNull<MaybeUninit<OpenObject>>,
        topology: Topology,
    ) -> Result<Self, Error> {
        // Taken before the scheduler is attached, while nothing else touches the mapping.
        let bss = skel.maps.bss_data.as_deref_mut().map(NonNull::from);
        let rings = (|| {
            let bss = bss.ok_or(Error::Io {
                context: "mapping the BPF object's .bss",
                source: std::io::Error::other("the object has no .bss map"),
            })?;
            let queued = RingReader::new(skel.maps.queued.as_fd(), skel.maps.queued.max_entries())
                .map_err(Error::io("mapping the queued ring"))?;
            let dispatched = RingWriter::new(
                skel.maps.dispatched.as_fd(),
                skel.maps.dispatched.max_entries(),
            )
            .map_err(Error::io("mapping the dispatched ring"))?;
            let epoll = epoll_for(skel.maps.queued.as_fd().as_raw_fd())?;
            Ok((queued, dispatched, epoll, bss))
        })();
        let (queued, dispatched, (epoll, waker), bss) = match rings {
            Ok(r) => r,
            Err(e) => {
                drop(skel);
                // SAFETY: the skeleton borrowing the storage is gone.
                drop(unsafe { Box::from_raw(storage.as_ptr()) });
                return Err(e);
            }
        };
        Ok(Self {
            link: None,
            queued,
            dispatched,
            epoll,
            waker,
            skel: ManuallyDrop::new(skel),
            bss,
            open_object: storage,
            nr_cpu_ids: topology.nr_cpus() as u32,
            topology,
            locked_memory: false,
            _lifetime: PhantomData,
        })
    }

    /// The next task that wants a CPU, or `None` when none is waiting. Never blocks.
    ///
    /// A task with `cpu < 0` is a notice that it exited: there is nothing to dispatch.
    ///
    /// Once the kernel has ended the scheduler (see [`exited`](Self::exited)) this drains what
    /// is left in the ring and then returns `Ok(None)`: an exit is a lifecycle event, not an
    /// error. Check [`exited`](Self::exited) in the loop and then call
    /// [`shutdown_and_report`](Self::shutdown_and_report).
    pub fn dequeue_task(&mut self) -> Result<Option<QueuedTask>, Error> {
        let mut task = None;
        self.take(1, |t| task = Some(t))?;
        Ok(task)
    }

    /// Append up to `max` waiting tasks to `out` in one pass over the ring; returns how many
    /// (0 once the scheduler has exited and the ring is drained, as for
    /// [`dequeue_task`](Self::dequeue_task)).
    pub fn dequeue_tasks(&mut self, out: &mut Vec<QueuedTask>, max: usize) -> Result<usize, Error> {
        self.take(max, |t| out.push(t))
    }

    /// Hand up to `max` waiting tasks to `sink`; [`Error::MalformedRecord`] for a record of the
    /// wrong size.
    fn take(&mut self, max: usize, mut sink: impl FnMut(QueuedTask)) -> Result<usize, Error> {
        let mut bad = None;
        let topology = &self.topology;
        let n = self
            .queued
            .consume(max, |bytes| match QueuedTask::from_bytes(bytes) {
                Some(mut t) => {
                    t.prev_llc = topology.llc_of(t.prev_cpu).map_or(-1, |llc| llc as i32);
                    sink(t)
                }
                None => bad = Some(bytes.len()),
            })
            .map_err(|e| Error::MalformedRecord(e.len as usize))?;
        if let Some(len) = bad {
            return Err(Error::MalformedRecord(len));
        }
        Ok(n)
    }

    /// Hand a decision to the BPF component: a [`DispatchedTask`](crate::DispatchedTask) (the
    /// classic record) or a [`Dispatch`].
    ///
    /// Checked here: `pid > 0` ([`Error::InvalidPid`]) and `cpu` is [`RL_CPU_ANY`] or a CPU id
    /// of this machine ([`Error::InvalidCpu`]). Handled safely in BPF and counted: a task that
    /// exited, was never queued or was already dispatched (cancelled); a CPU outside the
    /// task's affinity or a stale `cpumask_cnt` (bounced to a CPU it may use). A slice of 0
    /// means the default; longer than [`SLICE_MAX_NS`] is clamped.
    pub fn dispatch_task<T: Into<Dispatch> + Copy>(&mut self, task: &T) -> Result<(), Error> {
        self.dispatch_tasks(std::slice::from_ref(&(*task).into()))
    }

    /// Hand several decisions over at once (checked as in [`dispatch_task`](Self::dispatch_task);
    /// none is sent when one is invalid). They travel [`DISPATCH_BATCH_MAX`](crate::DISPATCH_BATCH_MAX)
    /// to a ring sample, which makes a batch much cheaper for BPF to drain than single calls.
    ///
    /// After the kernel has ended the scheduler, decisions are accepted and dropped (there is
    /// no kernel side left to carry them out): `Ok(())`.
    pub fn dispatch_tasks(&mut self, tasks: &[Dispatch]) -> Result<(), Error> {
        for t in tasks {
            self.check_dispatch(t)?;
        }
        let mut sent = 0;
        let mut tries = 0;
        loop {
            sent += Dispatch::write_packed(&tasks[sent..], &mut self.dispatched);
            self.dispatched.publish();
            if sent == tasks.len() {
                return Ok(());
            }
            // Full: let our CPU go through the kernel's dispatch path, which drains it. Nothing
            // drains it once the scheduler has exited: the rest is dropped.
            if self.exited() {
                return Ok(());
            }
            if tries == 1000 {
                return Err(Error::DispatchRingFull);
            }
            tries += 1;
            std::thread::yield_now();
        }
    }

    fn check_dispatch(&self, t: &Dispatch) -> Result<(), Error> {
        if t.pid <= 0 {
            return Err(Error::InvalidPid(t.pid));
        }
        if t.cpu != RL_CPU_ANY && (t.cpu < 0 || t.cpu as u32 >= self.nr_cpu_ids) {
            return Err(Error::InvalidCpu {
                cpu: t.cpu,
                nr_cpu_ids: self.nr_cpu_ids,
            });
        }
        Ok(())
    }

    /// Tell the BPF component how much work user space still holds: `nr_queued` tasks waiting
    /// in its queues and `nr_scheduled` decided but not yet dispatched (`None` leaves a count
    /// as it is). While either is non-zero BPF keeps the scheduler running ahead of others.
    ///
    /// When both end up zero and no task is waiting, this sleeps until a task arrives (or
    /// ~100 ms pass, or a [`Waker`] fires), so a loop of dequeue/dispatch/update never spins.
    /// Once the scheduler has exited it returns at once, with `Ok(())`.
    pub fn update_tasks(
        &mut self,
        nr_queued: Option<u64>,
        nr_scheduled: Option<u64>,
    ) -> Result<(), Error> {
        if let Some(n) = nr_queued {
            self.set_nr_queued(n);
        }
        if let Some(n) = nr_scheduled {
            self.set_nr_scheduled(n);
        }
        let queued = shared_u64!(self.nr_queued).load(Ordering::Relaxed);
        if queued == 0 && shared_u64!(self.nr_scheduled).load(Ordering::Relaxed) == 0 {
            self.wait_for_tasks(IDLE_WAIT)?;
        }
        Ok(())
    }

    /// Like [`update_tasks`](Self::update_tasks)`(None, Some(nr_pending))`.
    pub fn notify_complete(&mut self, nr_pending: u64) -> Result<(), Error> {
        self.update_tasks(None, Some(nr_pending))
    }

    /// Sleep until a task is waiting in the ring, `timeout` passes, or the [`Waker`] fires.
    /// Returns whether a task is waiting. Once the scheduler has exited it does not sleep and
    /// returns whether records are left to drain.
    pub fn wait_for_tasks(&mut self, timeout: Duration) -> Result<bool, Error> {
        if self.queued.pending() > 0 {
            return Ok(true);
        }
        if self.exited() {
            return Ok(false);
        }
        // BPF wakes us only while this flag is set (an awake scheduler costs it nothing).
        // Set it before the last look at the ring: a record committed after that look sees
        // the flag (BPF reads it after its commit, a full barrier), so none sleeps unseen.
        let sleeping = shared_u64!(self.usersched_sleeping);
        sleeping.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let n = if self.queued.pending() > 0 {
            0
        } else {
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: a valid epoll fd and an event buffer of the length given.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 2, ms) };
            for ev in events.iter().take(n.max(0) as usize) {
                if ev.u64 == WAKER_TOKEN {
                    let mut buf = 0u64;
                    // SAFETY: draining the eventfd's 8-byte counter.
                    unsafe {
                        libc::read(self.waker.0.as_raw_fd(), (&mut buf as *mut u64).cast(), 8)
                    };
                }
            }
            n
        };
        sleeping.store(0, Ordering::Relaxed);
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Io {
                    context: "waiting for tasks",
                    source: err,
                });
            }
        }
        Ok(self.queued.pending() > 0)
    }

    /// Let thread `tid` of this process run ahead of other tasks, as the scheduling thread
    /// does (BPF dispatches it at once, and it never waits for the policy). Only the thread
    /// that built the scheduler is privileged by default: every other thread of the process
    /// (a logger, a statistics server, a worker pool) goes through the policy like any task.
    /// Privilege a thread only if the scheduling loop waits for it.
    ///
    /// Errors: [`Error::NotOurThread`] for a tid that is not a thread of this process,
    /// [`Error::TooManyPrivileged`] past `RL_MAX_PRIVILEGED` threads.
    pub fn privilege_thread(&mut self, tid: i32) -> Result<(), Error> {
        if tid <= 0 || !std::path::Path::new(&format!("/proc/self/task/{tid}")).exists() {
            return Err(Error::NotOurThread(tid));
        }
        self.skel
            .maps
            .privileged
            .update(&tid.to_ne_bytes(), &[1u8], libbpf_rs::MapFlags::ANY)
            .map_err(|_| Error::TooManyPrivileged(sys::RL_MAX_PRIVILEGED))
    }

    /// Which generation of sched_ext kfunc spellings the kernel offered and the BPF component
    /// uses: 2 for the newest (`scx_bpf_dsq_insert___v2`, `__scx_bpf_dsq_insert_vtime`,
    /// `scx_bpf_dsq_move_to_local___v2`), 1 for the 6.13 names, 0 for the 6.12 ones.
    pub fn kfunc_generation(&self) -> u64 {
        shared_u64!(self.kfunc_generation).load(Ordering::Relaxed)
    }

    /// Number of possible CPU ids: CPUs are `0..nr_cpu_ids()`.
    pub fn nr_cpu_ids(&self) -> usize {
        self.nr_cpu_ids as usize
    }

    /// The machine's topology, as read when the scheduler was built.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// A handle that interrupts the idle wait from another thread.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// An idle CPU for task `pid`, asked again from user space: `prev_cpu` if it is idle and
    /// the task may use it, else the first idle CPU in the task's affinity, else `None`.
    /// `prev_cpu` may be negative (no preference). `flags` is reserved (pass 0).
    pub fn select_cpu(&self, pid: i32, prev_cpu: i32, _flags: u64) -> Result<Option<i32>, Error> {
        if pid <= 0 {
            return Err(Error::InvalidPid(pid));
        }
        if prev_cpu >= 0 && prev_cpu as u32 >= self.nr_cpu_ids {
            return Err(Error::InvalidCpu {
                cpu: prev_cpu,
                nr_cpu_ids: self.nr_cpu_ids,
            });
        }
        // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::sched_getaffinity(pid, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::ESRCH) {
                Error::NoSuchTask(pid)
            } else {
                Error::Io {
                    context: "reading the task's affinity",
                    source: err,
                }
            });
        }
        // SAFETY: CPU_ISSET reads the set in bounds (cpu < CPU_SETSIZE is checked).
        let allowed = |cpu: i32| {
            cpu >= 0
                && (cpu as usize) < libc::CPU_SETSIZE as usize
                && unsafe { libc::CPU_ISSET(cpu as usize, &set) }
        };
        if allowed(prev_cpu) && self.get_cpu_pid(prev_cpu) == 0 {
            return Ok(Some(prev_cpu));
        }
        Ok((0..self.nr_cpu_ids as i32).find(|&cpu| allowed(cpu) && self.get_cpu_pid(cpu) == 0))
    }

    /// The pid running on `cpu` (0 when idle, and for a CPU id out of range).
    pub fn get_cpu_pid(&self, cpu: i32) -> u32 {
        if cpu < 0 || cpu as u32 >= self.nr_cpu_ids || cpu as usize >= sys::RL_MAX_CPUS as usize {
            return 0;
        }
        // SAFETY: in bounds (checked above) of the live .bss mapping; BPF writes the aligned
        // u32 slot concurrently, so it is read atomically.
        unsafe {
            std::sync::atomic::AtomicU32::from_ptr(std::ptr::addr_of_mut!(
                (*self.bss.as_ptr()).cpu_to_pid[cpu as usize]
            ))
        }
        .load(Ordering::Relaxed)
    }

    counter_mut! {
        /// CPUs the scheduler manages.
        nr_online_cpus_mut => nr_online_cpus;
        /// Tasks running right now (maintained by BPF).
        nr_running_mut => nr_running;
        /// Tasks waiting in user space's queues: keep it current so BPF knows work is pending.
        nr_queued_mut => nr_queued;
        /// Tasks user space decided on but has not dispatched yet.
        nr_scheduled_mut => nr_scheduled;
        /// Dispatches from user space that reached a DSQ.
        nr_user_dispatches_mut => nr_user_dispatches;
        /// Tasks BPF dispatched itself (per-CPU kernel threads).
        nr_kernel_dispatches_mut => nr_kernel_dispatches;
        /// Dispatches dropped as stale (task exited, dequeued, or not waiting).
        nr_cancel_dispatches_mut => nr_cancel_dispatches;
        /// Dispatches redirected to a CPU the task may use.
        nr_bounce_dispatches_mut => nr_bounce_dispatches;
        /// Dispatch ring samples BPF could not read (not a whole number of records).
        nr_failed_dispatches_mut => nr_failed_dispatches;
        /// Tasks BPF ran itself because the queued ring was full.
        nr_sched_congested_mut => nr_sched_congested;
    }

    /// Set the number of tasks waiting in user space's queues (the counter user space owns;
    /// BPF reads it to know work is pending). Same as `*bpf.nr_queued_mut() = n`.
    pub fn set_nr_queued(&mut self, n: u64) {
        shared_u64!(self.nr_queued).store(n, Ordering::Relaxed);
    }

    /// Set the number of tasks decided on and not yet dispatched (owned by user space, read
    /// by BPF). Same as `*bpf.nr_scheduled_mut() = n`.
    pub fn set_nr_scheduled(&mut self, n: u64) {
        shared_u64!(self.nr_scheduled).store(n, Ordering::Relaxed);
    }

    /// Every counter, each read atomically. BPF keeps counting while they are read, so the
    /// values are from slightly different moments: sums across counters can be off by the
    /// events of those few nanoseconds (at rest, e.g. after
    /// [`shutdown_and_report`](Self::shutdown_and_report), they are exact).
    pub fn stats(&self) -> Stats {
        macro_rules! read {
            ($field:ident) => {
                shared_u64!(self.$field).load(Ordering::Relaxed)
            };
        }
        Stats {
            nr_online_cpus: read!(nr_online_cpus),
            nr_running: read!(nr_running),
            nr_queued: read!(nr_queued),
            nr_scheduled: read!(nr_scheduled),
            nr_user_dispatches: read!(nr_user_dispatches),
            nr_kernel_dispatches: read!(nr_kernel_dispatches),
            nr_cancel_dispatches: read!(nr_cancel_dispatches),
            nr_bounce_dispatches: read!(nr_bounce_dispatches),
            nr_failed_dispatches: read!(nr_failed_dispatches),
            nr_sched_congested: read!(nr_sched_congested),
            nr_queued_events: read!(nr_queued_events),
            nr_exit_events: read!(nr_exit_events),
            nr_dispatch_records: read!(nr_dispatch_records),
            nr_stalls: read!(nr_stalls),
            nr_fallback_dispatches: read!(nr_fallback_dispatches),
            nr_direct_dispatches: read!(nr_direct_dispatches),
            nr_displaced_dispatches: read!(nr_displaced_dispatches),
            nr_reenqueued: read!(nr_reenqueued),
            nr_vtime_dispatches: read!(nr_vtime_dispatches),
            nr_mm_kthread_dispatches: read!(nr_mm_kthread_dispatches),
            nr_untracked_dispatches: read!(nr_untracked_dispatches),
            nr_resume_rescues: read!(nr_resume_rescues),
            nr_shared_rescues: read!(nr_shared_rescues),
            nr_pending_lost: read!(nr_pending_lost),
            // SAFETY: an aligned s64 of the live .bss mapping, updated concurrently by BPF,
            // read atomically.
            nr_outstanding: unsafe {
                std::sync::atomic::AtomicI64::from_ptr(std::ptr::addr_of_mut!(
                    (*self.bss.as_ptr()).nr_outstanding
                ))
            }
            .load(Ordering::Relaxed),
            fallback: read!(fallback) != 0,
        }
    }

    /// True once the BPF component stopped (the kernel ejected or unregistered it).
    pub fn exited(&self) -> bool {
        // SAFETY: an aligned i32 of the live .bss mapping, written concurrently by BPF, read
        // atomically. ops.exit() writes `kind` last, so Acquire makes the rest of the record
        // visible.
        unsafe {
            std::sync::atomic::AtomicI32::from_ptr(std::ptr::addr_of_mut!(
                (*self.bss.as_ptr()).exit_info.kind
            ))
        }
        .load(Ordering::Acquire)
            != 0
    }

    /// Detach (if still attached) and report why the scheduler stopped.
    pub fn shutdown_and_report(mut self) -> Result<ExitReport, Error> {
        // Dropping the link unregisters the scheduler; the kernel runs ops.exit() before the
        // unregistration returns, so the exit record is complete afterwards.
        self.detach();
        let mut report = self.exit_report();
        report.stats = self.stats();
        Ok(report)
    }

    fn exit_report(&self) -> ExitReport {
        // SAFETY: a plain copy out of the live .bss mapping through a raw pointer; it is only
        // called after the unregistration returned, and nothing writes the record after
        // ops.exit().
        let info: types::rl_exit_info =
            unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*self.bss.as_ptr()).exit_info)) };
        let text = |bytes: &[std::ffi::c_char]| {
            // SAFETY: c_char and u8 have the same layout.
            let bytes: &[u8] = unsafe { &*(bytes as *const [std::ffi::c_char] as *const [u8]) };
            CStr::from_bytes_until_nul(bytes)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
        };
        ExitReport {
            kind: ExitKind::from_raw(info.kind),
            exit_code: info.exit_code,
            reason: text(&info.reason),
            message: text(&info.msg),
            dump: text(&info.dump),
            stats: Stats::default(),
        }
    }
}

impl BpfScheduler<'_> {
    /// Unregister the scheduler (once), telling the stall guard that nobody reads from now on.
    fn detach(&mut self) {
        if let Some(link) = self.link.take() {
            shared_u64!(self.detaching).store(1, Ordering::SeqCst);
            drop(link);
        }
    }
}

impl Drop for BpfScheduler<'_> {
    fn drop(&mut self) {
        self.detach();
        // SAFETY: the skeleton is dropped exactly once, here, before the storage it borrows.
        unsafe { ManuallyDrop::drop(&mut self.skel) };
        // SAFETY: leaked from a Box in `start_attached`; nothing borrows it any more.
        drop(unsafe { Box::from_raw(self.open_object.as_ptr()) });
        if self.locked_memory {
            // SAFETY: no preconditions.
            unsafe { libc::munlockall() };
        }
        ATTACHED.store(false, Ordering::SeqCst);
    }
}

const RING_TOKEN: u64 = 1;
const WAKER_TOKEN: u64 = 2;

/// An epoll set watching the queued ring and a fresh eventfd (the [`Waker`]).
fn epoll_for(ring_fd: i32) -> Result<(OwnedFd, Waker), Error> {
    // SAFETY: plain syscalls; the returned fds are owned right away.
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        if ep < 0 {
            return Err(Error::io("creating an epoll set")(
                std::io::Error::last_os_error(),
            ));
        }
        let ep = OwnedFd::from_raw_fd(ep);
        let ev = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
        if ev < 0 {
            return Err(Error::io("creating an eventfd")(
                std::io::Error::last_os_error(),
            ));
        }
        let ev = OwnedFd::from_raw_fd(ev);
        for (fd, token) in [(ring_fd, RING_TOKEN), (ev.as_raw_fd(), WAKER_TOKEN)] {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: token,
            };
            if libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) != 0 {
                return Err(Error::io("watching the queued ring")(
                    std::io::Error::last_os_error(),
                ));
            }
        }
        Ok((ep, Waker(Arc::new(ev))))
    }
}

/// [`Error::Unsupported`] unless `<sysfs_kernel>/sched_ext` exists.
fn check_support(sysfs_kernel: &std::path::Path) -> Result<(), Error> {
    if sysfs_kernel.join("sched_ext").is_dir() {
        Ok(())
    } else {
        Err(Error::Unsupported)
    }
}

/// The name of the sched_ext scheduler attached right now, if any.
fn attached_scheduler() -> Option<String> {
    let state = fs::read_to_string("/sys/kernel/sched_ext/state").ok()?;
    if state.trim() == "disabled" {
        return None;
    }
    let ops = fs::read_to_string("/sys/kernel/sched_ext/root/ops").unwrap_or_default();
    Some(format!("state {}, ops {:?}", state.trim(), ops.trim()))
}

/// Open the skeleton, apply the options, load it.
fn load(
    opts: &BpfSchedulerBuilder,
    storage: &'static mut MaybeUninit<OpenObject>,
) -> Result<UserlandSkel<'static>, Error> {
    let mut open = UserlandSkelBuilder::default()
        .open(storage)
        .map_err(Error::Load)?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .expect("the object has a .rodata");
    // SAFETY: getpid has no preconditions.
    rodata.usersched_tgid = unsafe { libc::getpid() };
    // The thread building the scheduler is the one that runs its loop (a BpfScheduler is not
    // Send): only it runs ahead of other tasks.
    // SAFETY: gettid has no preconditions.
    rodata.usersched_pid = unsafe { libc::gettid() };
    rodata.slice_ns_dfl = opts.slice_us * 1000;
    rodata.full_user = opts.full_user;
    rodata.debug = opts.debug;
    rodata.direct_idle = opts.direct_idle;
    rodata.stall_ns = u64::from(opts.stall_timeout_ms) * 1_000_000;
    rodata.shared_rescue_ns = u64::from((opts.timeout_ms / 4).clamp(20, 1000)) * 1_000_000;

    open.maps
        .pending
        .set_max_entries(opts.stall_guard_capacity)
        .map_err(Error::Load)?;

    let ops = open.struct_ops.userland_ops_mut();
    if opts.partial {
        // `SCX_OPS_SWITCH_PARTIAL`: only tasks whose policy is SCHED_EXT are scheduled by us.
        ops.flags |= crate::kernel_enums::get().switch_partial;
    }
    ops.exit_dump_len = opts.exit_dump_len;
    ops.timeout_ms = opts.timeout_ms;
    ops.name = [0; 128];
    for (dst, src) in ops.name.iter_mut().zip(opts.ops_name().bytes()) {
        *dst = src as _;
    }
    open.load().map_err(|e| {
        if e.kind() == libbpf_rs::ErrorKind::PermissionDenied {
            Error::PermissionDenied
        } else {
            Error::Load(e)
        }
    })
}

/// How the scheduler was stopped (`enum scx_exit_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// Still running (no exit recorded).
    None,
    /// The BPF scheduler finished on its own.
    Done,
    /// Unregistered from user space (detached by this process).
    Unregistered,
    /// Unregistered by the BPF program.
    UnregisteredBpf,
    /// Unregistered by the kernel (e.g. CPU hotplug: see [`ExitReport::should_restart`]).
    UnregisteredKernel,
    /// Disabled with SysRq-S.
    SysRq,
    /// A runtime error in the kernel's checks.
    Error,
    /// `scx_bpf_error()` from BPF.
    ErrorBpf,
    /// The watchdog found a runnable task that waited too long.
    ErrorStall,
    /// A kind this crate does not know.
    Other(i32),
}

impl ExitKind {
    /// The kind the kernel numbers `kind`, by its name in the kernel's `enum scx_exit_kind`.
    fn from_raw(kind: i32) -> Self {
        let enums = crate::kernel_enums::get();
        let name = enums
            .exit_kinds
            .iter()
            .find(|(v, _)| *v == i64::from(kind))
            .map(|(_, n)| n.as_str());
        match name {
            Some("SCX_EXIT_NONE") => Self::None,
            Some("SCX_EXIT_DONE") => Self::Done,
            Some("SCX_EXIT_UNREG") => Self::Unregistered,
            Some("SCX_EXIT_UNREG_BPF") => Self::UnregisteredBpf,
            Some("SCX_EXIT_UNREG_KERN") => Self::UnregisteredKernel,
            Some("SCX_EXIT_SYSRQ") => Self::SysRq,
            Some("SCX_EXIT_ERROR") => Self::Error,
            Some("SCX_EXIT_ERROR_BPF") => Self::ErrorBpf,
            Some("SCX_EXIT_ERROR_STALL") => Self::ErrorStall,
            _ => Self::Other(kind),
        }
    }

    /// True for the error kinds (the scheduler was ejected).
    pub fn is_error(self) -> bool {
        matches!(self, Self::Error | Self::ErrorBpf | Self::ErrorStall)
            || matches!(self, Self::Other(k) if k >= 1024)
    }
}

/// Why the scheduler stopped, from the kernel.
#[derive(Clone, Debug)]
pub struct ExitReport {
    /// The exit kind.
    pub kind: ExitKind,
    /// The exit code (user bits, and the kernel's `SCX_ECODE_*` bits).
    pub exit_code: i64,
    /// The kernel's short reason, e.g. "unregistered from user space".
    pub reason: String,
    /// The detailed message, if any.
    pub message: String,
    /// The kernel's debug dump (with `exit_dump_len`), if any.
    pub dump: String,
    /// The counters after the scheduler stopped (quiescent, so they add up exactly).
    pub stats: Stats,
}

impl ExitReport {
    /// True when the kernel asks the scheduler to re-initialise and carry on (e.g. after CPU
    /// hotplug).
    pub fn should_restart(&self) -> bool {
        // `SCX_ECODE_ACT_RESTART`, as the kernel numbers it.
        self.exit_code & crate::kernel_enums::get().ecode_act_restart != 0
    }
}

impl std::fmt::Display for ExitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.kind)?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        if !self.message.is_empty() {
            write!(f, " ({})", self.message)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_counts_beyond_the_bpf_arrays_are_refused() {
        let max = sys::RL_MAX_CPUS as usize;
        assert_eq!(check_cpus(max, None).unwrap(), max as i64);
        assert!(matches!(
            check_cpus(max + 1, None),
            Err(Error::TooManyCpus { nr_cpu_ids, .. }) if nr_cpu_ids as usize == max + 1
        ));
        assert!(matches!(
            check_cpus(usize::MAX, Some(1)),
            Err(Error::TooManyCpus { .. })
        ));
        assert_eq!(check_cpus(4, Some(2)).unwrap(), 2);
        for bad in [0, -1, 5] {
            assert!(matches!(
                check_cpus(4, Some(bad)),
                Err(Error::InvalidNrCpus { max: 4, .. })
            ));
        }
    }

    #[test]
    fn exit_kinds() {
        assert_eq!(ExitKind::from_raw(64), ExitKind::Unregistered);
        assert!(ExitKind::from_raw(1026).is_error());
        assert!(!ExitKind::from_raw(66).is_error());
        assert_eq!(ExitKind::from_raw(5000), ExitKind::Other(5000));
        let r = ExitReport {
            kind: ExitKind::UnregisteredKernel,
            exit_code: (1 << 48) | (1 << 32),
            reason: "hotplug".into(),
            message: String::new(),
            dump: String::new(),
            stats: Stats::default(),
        };
        assert!(r.should_restart());
        assert_eq!(r.to_string(), "UnregisteredKernel: hotplug");
    }

    #[test]
    fn support_check_names_the_missing_feature() {
        let err = check_support(std::path::Path::new("/nonexistent")).unwrap_err();
        assert!(matches!(err, Error::Unsupported));
        assert!(err.to_string().contains("CONFIG_SCHED_CLASS_EXT=y"));
        let dir = std::env::temp_dir().join(format!("scx-userland-support-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sched_ext")).unwrap();
        assert!(check_support(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        assert!(matches!(
            BpfScheduler::init(0, 1, false, false, false),
            Err(Error::InvalidSlice { .. })
        ));
        assert!(matches!(
            BpfScheduler::init(u64::MAX, 1, false, false, false),
            Err(Error::InvalidSlice { .. })
        ));
        assert!(matches!(
            BpfScheduler::init(5000, 0, false, false, false),
            Err(Error::InvalidNrCpus { .. })
        ));
        assert!(matches!(
            BpfScheduler::init(5000, 1 << 20, false, false, false),
            Err(Error::InvalidNrCpus { .. })
        ));
        assert!(matches!(
            BpfScheduler::builder().name("bad name!").build(),
            Err(Error::InvalidName(_))
        ));
        assert!(matches!(
            BpfScheduler::builder().timeout_ms(0).build(),
            Err(Error::InvalidTimeout(0))
        ));
        assert!(matches!(
            BpfScheduler::builder().stall_timeout_ms(5).build(),
            Err(Error::InvalidStallTimeout { .. })
        ));
        assert!(matches!(
            BpfScheduler::builder()
                .timeout_ms(1000)
                .stall_timeout_ms(1000)
                .build(),
            Err(Error::InvalidStallTimeout { .. })
        ));
        for entries in [0, 15, (1 << 22) + 1, u32::MAX] {
            assert!(matches!(
                BpfScheduler::builder().stall_guard_capacity(entries).build(),
                Err(Error::InvalidStallGuardCapacity(n)) if n == entries
            ));
        }
        // SCX_TIMEOUT_MS overrides timeout_ms within the same bounds. (In this test only:
        // the other tests never call build with valid arguments.)
        for (value, expect_env_error) in [("abc", true), ("", true), ("0", false), ("40000", false)]
        {
            std::env::set_var(SCX_TIMEOUT_MS_ENV, value);
            let res = BpfScheduler::builder().build();
            std::env::remove_var(SCX_TIMEOUT_MS_ENV);
            match res {
                Err(Error::InvalidTimeoutEnv(v)) if expect_env_error => assert_eq!(v, value),
                Err(Error::InvalidTimeout(ms)) if !expect_env_error => {
                    assert_eq!(ms.to_string(), value)
                }
                other => panic!("SCX_TIMEOUT_MS={value:?}: {:?}", other.err()),
            }
        }
    }

    #[test]
    fn ops_name_carries_the_version() {
        let b = BpfScheduler::builder()
            .name("scx_fifo")
            .version("1.2.3-g0abc");
        let name = b.ops_name();
        assert!(name.starts_with("scx_fifo_1.2.3_g0abc_"), "{name}");
        assert!(name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.'));
        assert_eq!(b.clone().version_suffix(false).ops_name(), "scx_fifo");
        // The default carries this crate's version.
        let default = BpfScheduler::builder().name("x").ops_name();
        assert!(default.starts_with(&format!("x_{}_", env!("CARGO_PKG_VERSION"))));
        // A long name keeps the kernel's limit.
        let long = "n".repeat(120);
        assert_eq!(BpfScheduler::builder().name(&long).ops_name().len(), 127);
    }
}
