//! The error type of every fallible call in this crate.

use std::io;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The running kernel was built without sched_ext.
    #[error(
        "this kernel has no sched_ext support (/sys/kernel/sched_ext is missing): it needs \
         CONFIG_SCHED_CLASS_EXT=y; boot such a kernel, or try it in a VM with `cargo xtask vm-run`"
    )]
    Unsupported,
    /// The caller may not load BPF schedulers.
    #[error(
        "permission denied: loading a sched_ext scheduler needs root (CAP_SYS_ADMIN and CAP_BPF); \
         run it with sudo"
    )]
    PermissionDenied,
    /// Another sched_ext scheduler (or another `BpfScheduler` in this process) is attached.
    #[error("a sched_ext scheduler is already attached ({0}); stop it before starting another")]
    AlreadyAttached(String),
    /// `slice_us` given to `init` is zero or longer than the maximum slice.
    #[error("invalid time slice {slice_us} us: it must be between 1 and {max_us} us")]
    InvalidSlice {
        /// The slice asked for.
        slice_us: u64,
        /// The largest allowed.
        max_us: u64,
    },
    /// `nr_cpus` given to `init` is not between 1 and the machine's possible CPUs.
    #[error("invalid nr_cpus {nr_cpus}: this machine has {max} possible CPUs")]
    InvalidNrCpus {
        /// The count asked for.
        nr_cpus: i64,
        /// The machine's possible CPUs.
        max: u32,
    },
    /// The machine has more possible CPUs than the BPF component can track.
    #[error("this machine has {nr_cpu_ids} possible CPUs; the BPF component tracks at most {max}")]
    TooManyCpus {
        /// The machine's possible CPU ids.
        nr_cpu_ids: u32,
        /// The most the BPF component supports.
        max: u32,
    },
    /// A thread id that is not a thread of this process.
    #[error("thread {0} is not a thread of this process")]
    NotOurThread(i32),
    /// No room for another privileged thread.
    #[error("at most {0} threads can be privileged")]
    TooManyPrivileged(u32),
    /// A CPU number that is neither `RL_CPU_ANY` nor a CPU of this machine.
    #[error("invalid cpu {cpu}: use RL_CPU_ANY or a CPU in 0..{nr_cpu_ids}")]
    InvalidCpu {
        /// The CPU given.
        cpu: i32,
        /// Number of possible CPU ids.
        nr_cpu_ids: u32,
    },
    /// A scheduler name the kernel would refuse.
    #[error("invalid scheduler name {0:?}: use 1 to 127 letters, digits, '_' or '.'")]
    InvalidName(String),
    /// A watchdog timeout outside 1..=30000 ms.
    #[error("invalid timeout {0} ms: it must be between 1 and 30000 ms")]
    InvalidTimeout(u32),
    /// `SCX_TIMEOUT_MS` is set but is not a number of milliseconds.
    #[error("SCX_TIMEOUT_MS={0:?} is not a timeout in ms: set it to 1 to 30000, or unset it")]
    InvalidTimeoutEnv(String),
    /// A stall-guard timeout outside 10..=10000 ms or not below the watchdog timeout.
    #[error("invalid stall timeout {stall_ms} ms: use 10 to 10000 ms, below the watchdog's {timeout_ms} ms")]
    InvalidStallTimeout {
        /// The stall timeout asked for.
        stall_ms: u32,
        /// The watchdog timeout in force.
        timeout_ms: u32,
    },
    /// A stall-guard capacity outside 16..=4194304 entries.
    #[error("invalid stall-guard capacity {0}: use 16 to 4194304 entries")]
    InvalidStallGuardCapacity(u32),
    /// A pid that cannot name a task (zero or negative).
    #[error("invalid pid {0}: pids are positive")]
    InvalidPid(i32),
    /// No task with this pid exists.
    #[error("no task with pid {0}")]
    NoSuchTask(i32),
    /// The dispatch ring stayed full: BPF is not draining it.
    #[error("the dispatch ring is full and BPF is not draining it")]
    DispatchRingFull,
    /// A record in the queued ring did not have the expected size.
    #[error("malformed record of {0} bytes in the queued ring (BPF object and crate disagree)")]
    MalformedRecord(usize),
    /// The BPF component stopped (see `shutdown_and_report` for why). Kept for callers that
    /// match on it: the scheduling calls report an exit through `exited()` and `Ok` values,
    /// never through this error.
    #[error("the BPF scheduler has exited")]
    Exited,
    /// Opening or loading the BPF object failed.
    #[error("loading the BPF scheduler failed")]
    Load(#[source] libbpf_rs::Error),
    /// Registering the scheduler with the kernel failed.
    #[error("attaching the BPF scheduler failed")]
    Attach(#[source] libbpf_rs::Error),
    /// Serving or reading statistics failed.
    #[error("{context}: {message}")]
    Stats {
        /// What was being done.
        context: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A system call failed (the OS error is the [`source`](std::error::Error::source)).
    #[error("{context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { context, source }
    }
}
