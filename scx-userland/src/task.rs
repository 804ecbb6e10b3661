//! The two records a scheduler works with: [`QueuedTask`] in, [`DispatchedTask`] (or the fuller
//! [`Dispatch`]) out.

use std::mem::size_of;

use scx_userland_sys as sys;

use crate::ring::RingWriter;

/// Size of one encoded [`Dispatch`] record.
pub const DISPATCH_RECORD_LEN: usize = size_of::<sys::dispatched_task_ctx>();

/// Most [`Dispatch`] records one `dispatched` ring sample carries ([`Dispatch::write_packed`]).
pub const DISPATCH_BATCH_MAX: usize = sys::RL_DISPATCH_BATCH_MAX as usize;

/// [`QueuedTask::rl_flags`] bit: `cpu` was idle at enqueue time and is held for the task
/// ([`QueuedTask::idle_cpu`]).
pub const RL_QF_IDLE_CPU: u32 = sys::RL_QF_IDLE_CPU;
/// [`QueuedTask::rl_flags`] bit: the task is a kernel thread ([`QueuedTask::is_kthread`]).
pub const RL_QF_KTHREAD: u32 = sys::RL_QF_KTHREAD;
/// [`QueuedTask::rl_flags`] bit: the task just woke up ([`QueuedTask::is_wakeup`]).
pub const RL_QF_WAKEUP: u32 = sys::RL_QF_WAKEUP;
/// [`QueuedTask::rl_flags`] bit: a higher sched class took the CPU the task waited on
/// ([`QueuedTask::is_reenqueued`]).
pub const RL_QF_REENQ: u32 = sys::RL_QF_REENQ;

/// `DispatchedTask::cpu` / `Dispatch::cpu` value: run on any CPU the task may use.
pub const RL_CPU_ANY: i32 = sys::RL_CPU_ANY;

/// The time slice a dispatch gets when it asks for 0, unless `init` set another default.
pub const SLICE_DEFAULT_NS: u64 = sys::RL_SLICE_DFL_NS as u64;

/// The longest time slice a dispatch may ask for; longer ones are clamped to it (so one task
/// can never starve the others into the kernel's watchdog).
pub const SLICE_MAX_NS: u64 = sys::RL_SLICE_MAX_NS as u64;

/// A task that wants a CPU, as reported by the BPF component.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueuedTask {
    /// Thread id.
    pub pid: i32,
    /// The CPU the task is enqueued on: the CPU the kernel picked for it (an idle one when
    /// [`QueuedTask::idle_cpu`] is true). Negative: the task exited, and needs no dispatch.
    pub cpu: i32,
    /// Process (thread group) id.
    pub tgid: i32,
    /// Number of CPUs the task may run on.
    pub nr_cpus_allowed: i32,
    /// Affinity generation: pass it back in the dispatch unchanged.
    pub cpumask_cnt: u64,
    /// The kernel's `SCX_ENQ_*` flags of this enqueue.
    pub flags: u64,
    /// Total CPU time consumed (ns).
    pub sum_exec_runtime: u64,
    /// CPU time consumed since the task last woke up (ns). At a wake-up
    /// ([`is_wakeup`](Self::is_wakeup)) this is always 0: the task has not run since; use
    /// [`last_burst_ns`](Self::last_burst_ns) there. For a task that used up its slice or was
    /// preempted, it is what it ran since its wake-up.
    pub exec_runtime: u64,
    /// CPU time the task used between its previous wake-up and going to sleep (ns): short
    /// for interactive tasks, long for CPU-bound ones; 0 until it slept once. This is what
    /// tells them apart at a wake-up.
    pub last_burst_ns: u64,
    /// The CPU the task last ran on; -1 if it has not run under this scheduler yet.
    pub prev_cpu: i32,
    /// The last-level cache of [`prev_cpu`](Self::prev_cpu) (dense numbering of
    /// [`Topology::llc_of`](crate::Topology::llc_of)); -1 when unknown. Filled in by
    /// [`BpfScheduler`](crate::BpfScheduler); [`from_bytes`](Self::from_bytes) leaves -1.
    pub prev_llc: i32,
    /// Scheduling weight (100 = nice 0; higher = more important).
    pub weight: u64,
    /// When the task last started running (ns, CLOCK_MONOTONIC; 0 = never).
    pub start_ts: u64,
    /// When the task last stopped running (ns, CLOCK_MONOTONIC; 0 = never).
    pub stop_ts: u64,
    /// When it was queued (ns, CLOCK_MONOTONIC).
    pub enq_ts: u64,
    /// The task's virtual time in the kernel's ordering.
    pub vtime: u64,
    /// [`RL_QF_IDLE_CPU`], [`RL_QF_KTHREAD`], [`RL_QF_WAKEUP`], [`RL_QF_REENQ`] bits (see the
    /// accessors).
    pub rl_flags: u32,
    /// The task's command name, NUL-padded.
    pub comm: [u8; 16],
}

impl QueuedTask {
    /// Decode one `queued` ring record; `None` unless it is exactly one `queued_task_ctx`.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size_of::<sys::queued_task_ctx>() {
            return None;
        }
        // SAFETY: the length matches and queued_task_ctx is plain old data.
        let raw: sys::queued_task_ctx = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(Self::from_raw(&raw))
    }

    pub(crate) fn from_raw(raw: &sys::queued_task_ctx) -> Self {
        Self {
            pid: raw.pid,
            cpu: raw.cpu,
            tgid: raw.tgid,
            nr_cpus_allowed: raw.nr_cpus_allowed,
            cpumask_cnt: raw.cpumask_cnt,
            flags: raw.enq_flags,
            sum_exec_runtime: raw.sum_exec_runtime,
            exec_runtime: raw.exec_runtime,
            last_burst_ns: raw.last_burst_ns,
            prev_cpu: raw.prev_cpu,
            prev_llc: -1,
            weight: raw.weight,
            start_ts: raw.start_ts,
            stop_ts: raw.stop_ts,
            enq_ts: raw.enq_ts,
            vtime: raw.vtime,
            rl_flags: raw.flags,
            comm: raw.comm.map(|c| c as u8),
        }
    }

    /// True for the notice that the task exited (`cpu < 0`): nothing to dispatch.
    pub fn is_exiting(&self) -> bool {
        self.cpu < 0
    }

    /// True when `cpu` was idle at enqueue time and is held for this task.
    pub fn idle_cpu(&self) -> bool {
        self.rl_flags & RL_QF_IDLE_CPU != 0
    }

    /// True when the task just woke up (rather than being preempted or re-queued).
    pub fn is_wakeup(&self) -> bool {
        self.rl_flags & RL_QF_WAKEUP != 0
    }

    /// True when the task had been dispatched to a CPU that a higher sched class (real-time,
    /// deadline) then took: it comes back to be placed again, best on another CPU.
    pub fn is_reenqueued(&self) -> bool {
        self.rl_flags & RL_QF_REENQ != 0
    }

    /// True for kernel threads.
    pub fn is_kthread(&self) -> bool {
        self.rl_flags & RL_QF_KTHREAD != 0
    }

    /// The command name as text.
    pub fn comm_str(&self) -> &str {
        let end = self
            .comm
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(self.comm.len());
        std::str::from_utf8(&self.comm[..end]).unwrap_or("?")
    }
}

/// A scheduling decision: run task `pid` on `cpu` for `slice_ns`.
///
/// This is the classic `scx_rustland_core` record and stays exactly these four fields, so
/// `DispatchedTask { pid, cpu, cpumask_cnt, slice_ns }` always compiles. For a virtual time
/// or enqueue flags, use [`Dispatch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchedTask {
    /// The task's pid, from its [`QueuedTask`].
    pub pid: i32,
    /// Target CPU, or [`RL_CPU_ANY`].
    pub cpu: i32,
    /// The [`QueuedTask::cpumask_cnt`] the decision was made with.
    pub cpumask_cnt: u64,
    /// Time slice in ns; 0 = the scheduler's default; above [`SLICE_MAX_NS`] is clamped.
    pub slice_ns: u64,
}

impl DispatchedTask {
    /// A decision for `task`: its own CPU, default slice.
    pub fn new(task: &QueuedTask) -> Self {
        Self {
            pid: task.pid,
            cpu: task.cpu,
            cpumask_cnt: task.cpumask_cnt,
            slice_ns: 0,
        }
    }
}

/// Which shared queue a dispatch to [`RL_CPU_ANY`] waits in until a CPU takes it.
///
/// Every CPU looks in the FIFO queue first and then in the vtime-ordered one, except that a
/// vtime queue not served for 20 ms goes first once, so neither can starve the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Queue {
    /// First in, first out ([`Dispatch::head`] puts a task at the front instead).
    #[default]
    Fifo,
    /// Ordered by [`Dispatch::vtime`], smallest first, compared with wrap-around as the
    /// kernel does; any value is a vtime, 0 included. Tasks with equal vtimes run in the
    /// order they were dispatched.
    Vtime,
}

/// Where a [`Dispatch`] sends its task, in words ([`Dispatch::target`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The local queue of this CPU (BPF redirects it to a CPU the task may use if it may
    /// not use this one).
    Cpu(i32),
    /// Any CPU, through the FIFO shared queue.
    Fifo,
    /// Any CPU, through the vtime-ordered shared queue, at this vtime.
    Vtime(u64),
}

/// A scheduling decision with everything a modern kernel can take.
///
/// The named constructors say where the task goes: [`Dispatch::on_cpu`],
/// [`Dispatch::fifo`] and [`Dispatch::by_vtime`]; [`Dispatch::target`] says it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dispatch {
    /// The task's pid.
    pub pid: i32,
    /// Target CPU, or [`RL_CPU_ANY`].
    pub cpu: i32,
    /// The [`QueuedTask::cpumask_cnt`] the decision was made with.
    pub cpumask_cnt: u64,
    /// Time slice in ns; 0 = default; clamped to [`SLICE_MAX_NS`].
    pub slice_ns: u64,
    /// For [`RL_CPU_ANY`] dispatches to the vtime-ordered queue: the task's place in it.
    /// A nonzero vtime selects that queue even when [`queue`](Self::queue) is
    /// [`Queue::Fifo`]; to queue at vtime 0, set `queue` to [`Queue::Vtime`]
    /// ([`Dispatch::by_vtime`] does). Ignored for a dispatch to a CPU.
    pub vtime: u64,
    /// For [`RL_CPU_ANY`] dispatches: the shared queue (see [`vtime`](Self::vtime)).
    pub queue: Queue,
    /// Run soon: preempt whatever runs on `cpu`; with [`RL_CPU_ANY`], wake an idle CPU the
    /// task may use or, if none is idle, preempt the one whose task has run the longest
    /// (at least 200 us; never the scheduler itself).
    pub preempt: bool,
    /// Queue ahead of the tasks already waiting instead of behind them (not with `vtime`).
    pub head: bool,
}

impl Dispatch {
    /// A decision for `task`: its own CPU, default slice, FIFO.
    pub fn new(task: &QueuedTask) -> Self {
        DispatchedTask::new(task).into()
    }

    /// Run `task` on `cpu` (its local queue), default slice.
    pub fn on_cpu(task: &QueuedTask, cpu: i32) -> Self {
        Self {
            cpu,
            ..Self::new(task)
        }
    }

    /// Run `task` on the first CPU it may use that takes it from the FIFO shared queue.
    pub fn fifo(task: &QueuedTask) -> Self {
        Self::on_cpu(task, RL_CPU_ANY)
    }

    /// Run `task` on any CPU it may use, in `vtime` order among the other vtime-ordered
    /// dispatches (0 is a vtime like any other here).
    pub fn by_vtime(task: &QueuedTask, vtime: u64) -> Self {
        Self {
            vtime,
            queue: Queue::Vtime,
            ..Self::fifo(task)
        }
    }

    /// Where this decision sends the task.
    pub fn target(&self) -> Target {
        if self.cpu >= 0 {
            Target::Cpu(self.cpu)
        } else if self.queue == Queue::Vtime || self.vtime != 0 {
            Target::Vtime(self.vtime)
        } else {
            Target::Fifo
        }
    }

    /// Encode as one `dispatched` user ring record (slice clamped, flags packed).
    pub fn to_bytes(&self) -> [u8; DISPATCH_RECORD_LEN] {
        let raw = self.to_raw();
        // SAFETY: dispatched_task_ctx is plain old data without padding, of exactly this size.
        unsafe { std::mem::transmute::<sys::dispatched_task_ctx, [u8; DISPATCH_RECORD_LEN]>(raw) }
    }

    /// Write the leading decisions of `tasks` into `ring` without publishing them, packed
    /// [`DISPATCH_BATCH_MAX`] to a sample, the way
    /// [`BpfScheduler::dispatch_tasks`](crate::BpfScheduler::dispatch_tasks) sends them: the
    /// BPF drain pays its per-sample cost once per pack. Returns how many were written
    /// (fewer than `tasks.len()` once the ring is full). Nothing is validated here.
    pub fn write_packed(tasks: &[Dispatch], ring: &mut RingWriter) -> usize {
        let mut written = 0;
        for pack in tasks.chunks(DISPATCH_BATCH_MAX) {
            let fits = ring.write_with(pack.len() * DISPATCH_RECORD_LEN, |dst| {
                for (task, out) in pack.iter().zip(dst.chunks_exact_mut(DISPATCH_RECORD_LEN)) {
                    out.copy_from_slice(&task.to_bytes());
                }
            });
            if !fits {
                break;
            }
            written += pack.len();
        }
        written
    }

    pub(crate) fn to_raw(self) -> sys::dispatched_task_ctx {
        let mut flags = 0u64;
        if self.preempt {
            flags |= sys::RL_DF_PREEMPT as u64;
        }
        if self.head {
            flags |= sys::RL_DF_HEAD as u64;
        }
        if self.queue == Queue::Vtime {
            flags |= sys::RL_DF_VTIME as u64;
        }
        sys::dispatched_task_ctx {
            pid: self.pid,
            cpu: self.cpu,
            cpumask_cnt: self.cpumask_cnt,
            slice_ns: self.slice_ns.min(SLICE_MAX_NS),
            vtime: self.vtime,
            flags,
        }
    }
}

impl From<DispatchedTask> for Dispatch {
    fn from(t: DispatchedTask) -> Self {
        Self {
            pid: t.pid,
            cpu: t.cpu,
            cpumask_cnt: t.cpumask_cnt,
            slice_ns: t.slice_ns,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_literal_and_conversion() {
        let t = DispatchedTask {
            pid: 7,
            cpu: 1,
            cpumask_cnt: 3,
            slice_ns: 0,
        };
        let raw = Dispatch::from(t).to_raw();
        assert_eq!(
            (raw.pid, raw.cpu, raw.cpumask_cnt, raw.slice_ns),
            (7, 1, 3, 0)
        );
        assert_eq!((raw.vtime, raw.flags), (0, 0));
    }

    #[test]
    fn slice_is_clamped_and_flags_encoded() {
        let d = Dispatch {
            pid: 1,
            cpu: RL_CPU_ANY,
            slice_ns: u64::MAX,
            preempt: true,
            head: true,
            ..Dispatch::default()
        };
        let raw = d.to_raw();
        assert_eq!(raw.slice_ns, SLICE_MAX_NS);
        assert_eq!(raw.flags, (sys::RL_DF_PREEMPT | sys::RL_DF_HEAD) as u64);
    }

    #[test]
    fn named_constructors_say_where_the_task_goes() {
        let t = QueuedTask {
            pid: 5,
            cpu: 1,
            cpumask_cnt: 9,
            ..QueuedTask::default()
        };
        assert_eq!(Dispatch::new(&t).target(), Target::Cpu(1));
        assert_eq!(Dispatch::on_cpu(&t, 0).target(), Target::Cpu(0));
        assert_eq!(Dispatch::fifo(&t).target(), Target::Fifo);
        let v0 = Dispatch::by_vtime(&t, 0);
        assert_eq!((v0.target(), v0.cpumask_cnt), (Target::Vtime(0), 9));
        assert_eq!(v0.to_raw().flags, sys::RL_DF_VTIME as u64);
        // A nonzero vtime alone has always meant the vtime queue.
        let legacy = Dispatch {
            vtime: 3,
            ..Dispatch::fifo(&t)
        };
        assert_eq!(
            (legacy.target(), legacy.to_raw().flags),
            (Target::Vtime(3), 0)
        );
        assert_eq!(Dispatch::fifo(&t).to_raw().flags, 0);
    }

    #[test]
    fn queued_task_accessors() {
        let mut raw = sys::queued_task_ctx {
            pid: 42,
            cpu: -1,
            flags: sys::RL_QF_IDLE_CPU | sys::RL_QF_WAKEUP,
            ..Default::default()
        };
        raw.comm[..4].copy_from_slice(&[b'b' as _, b'a' as _, b's' as _, b'h' as _]);
        let t = QueuedTask::from_raw(&raw);
        assert!(t.is_exiting() && t.idle_cpu() && t.is_wakeup() && !t.is_kthread());
        assert_eq!(t.comm_str(), "bash");
        assert_eq!(DispatchedTask::new(&t).pid, 42);
    }
}
