/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * intf.h - the one definition of everything the scx-userland BPF component and
 * user space share: the queued-task and dispatched-task records that travel
 * through the ring buffers, the exit record, and the limits both sides use.
 *
 * The BPF program includes this file after vmlinux.h; the Rust bindings in
 * scx-userland-sys are generated from it by `cargo xtask codegen`.  Every
 * record is laid out with explicit sizes and no implicit padding, and the
 * _Static_asserts at the bottom pin the layout so neither side can drift.
 */
#ifndef __SCX_USERLAND_INTF_H
#define __SCX_USERLAND_INTF_H

#ifndef __bpf__
/* Outside BPF (bindgen) there is no vmlinux.h: spell the kernel's fixed-width types. */
typedef signed int __s32;
typedef unsigned int __u32;
typedef signed long long __s64;
typedef unsigned long long __u64;
#endif

/* Limits. */
enum rl_consts {
	/* Largest CPU id + 1 the CPU ownership map can describe. */
	RL_MAX_CPUS = 1024,
	/* Length of a task's comm, as in the kernel. */
	RL_TASK_COMM_LEN = 16,
	/* Length of the exit reason and message strings. */
	RL_EXIT_REASON_LEN = 128,
	RL_EXIT_MSG_LEN = 1024,
	/* Bytes of the kernel's debug dump kept in the exit record. */
	RL_EXIT_DUMP_LEN = 32768,
	/*
	 * Most dispatched_task_ctx records one `dispatched` sample may carry, back to
	 * back: a batch of decisions costs the BPF drain one sample per this many.
	 */
	RL_DISPATCH_BATCH_MAX = 16,
	/* Threads of the scheduler process that can be registered as privileged. */
	RL_MAX_PRIVILEGED = 64,
};

/* DispatchedTask.cpu value: run the task on any CPU it may use. */
#define RL_CPU_ANY (-1)

/* Default and largest time slice a dispatch may ask for, in nanoseconds. */
#define RL_SLICE_DFL_NS (5ULL * 1000 * 1000)
#define RL_SLICE_MAX_NS (1000ULL * 1000 * 1000)

/* queued_task_ctx.flags */
enum rl_queued_flags {
	/* `cpu` was idle when the task was enqueued (and is held for it). */
	RL_QF_IDLE_CPU = 1U << 0,
	/* The task is a kernel thread. */
	RL_QF_KTHREAD = 1U << 1,
	/* The task woke up (rather than being preempted or re-queued). */
	RL_QF_WAKEUP = 1U << 2,
	/*
	 * A higher sched class took the CPU whose local queue the task waited in, and
	 * the kernel handed it back to be placed again (SCX_ENQ_REENQ).
	 */
	RL_QF_REENQ = 1U << 3,
};

/* dispatched_task_ctx.flags */
enum rl_dispatch_flags {
	/*
	 * Preempt whatever runs on the target CPU; with RL_CPU_ANY, wake an idle CPU
	 * or else preempt the CPU whose task has run the longest.
	 */
	RL_DF_PREEMPT = 1U << 0,
	/* Queue at the head of the target's queue instead of the tail. */
	RL_DF_HEAD = 1U << 1,
	/*
	 * With RL_CPU_ANY: join the vtime-ordered shared queue, whatever the vtime
	 * (0 included). Without it, a nonzero vtime selects that queue too.
	 */
	RL_DF_VTIME = 1U << 2,
};

/*
 * A task that wants a CPU, sent by BPF to user space through the `queued`
 * ring buffer.  A record with cpu < 0 announces that the task exited.
 */
struct queued_task_ctx {
	__s32 pid;
	/* CPU the task is enqueued on (an idle CPU when RL_QF_IDLE_CPU), < 0: exiting. */
	__s32 cpu;
	/* Thread group (process) id. */
	__s32 tgid;
	/* Number of CPUs the task may run on. */
	__s32 nr_cpus_allowed;
	/* Bumped on every affinity change; echo it back in the dispatch. */
	__u64 cpumask_cnt;
	/* The kernel's SCX_ENQ_* flags of this enqueue. */
	__u64 enq_flags;
	/* Total CPU time the task has consumed (ns). */
	__u64 sum_exec_runtime;
	/* CPU time since the task last woke up (ns). */
	__u64 exec_runtime;
	/* Scheduling weight (100 = nice 0). */
	__u64 weight;
	/* When the task last started and stopped running, and when it was queued (ns, CLOCK_MONOTONIC). */
	__u64 start_ts;
	__u64 stop_ts;
	__u64 enq_ts;
	/* The task's current virtual time in the kernel's DSQ ordering. */
	__u64 vtime;
	/* RL_QF_* */
	__u32 flags;
	/* The CPU the task last ran on; -1 if it never ran under this scheduler. */
	__s32 prev_cpu;
	char comm[RL_TASK_COMM_LEN];
	/*
	 * CPU time the task used between its previous wake-up and going to sleep (ns):
	 * short for interactive tasks, long for CPU-bound ones. 0 until it slept once.
	 */
	__u64 last_burst_ns;
};

/*
 * A scheduling decision, sent by user space to BPF through the `dispatched`
 * user ring buffer: each sample holds 1 to RL_DISPATCH_BATCH_MAX of them.
 */
struct dispatched_task_ctx {
	__s32 pid;
	/* Target CPU, or RL_CPU_ANY. */
	__s32 cpu;
	/* The queued record's cpumask_cnt; a stale value makes BPF re-check the affinity. */
	__u64 cpumask_cnt;
	/* Time slice in ns; 0 means the scheduler's default. */
	__u64 slice_ns;
	/*
	 * Virtual time for ordering in the vtime-ordered shared queue (RL_CPU_ANY
	 * only); 0 means the FIFO queue unless RL_DF_VTIME is set.
	 */
	__u64 vtime;
	/* RL_DF_* */
	__u64 flags;
};

/* Why and how the scheduler stopped, filled in by ops.exit(). */
struct rl_exit_info {
	/* enum scx_exit_kind; 0 while the scheduler is running. */
	__s32 kind;
	__u32 __pad;
	/* Exit code: user-defined low bits, SCX_ECODE_* action/reason bits. */
	__s64 exit_code;
	char reason[RL_EXIT_REASON_LEN];
	char msg[RL_EXIT_MSG_LEN];
	char dump[RL_EXIT_DUMP_LEN];
};

_Static_assert(sizeof(struct queued_task_ctx) == 120, "queued_task_ctx layout");
_Static_assert(__builtin_offsetof(struct queued_task_ctx, cpumask_cnt) == 16, "queued_task_ctx layout");
_Static_assert(__builtin_offsetof(struct queued_task_ctx, flags) == 88, "queued_task_ctx layout");
_Static_assert(__builtin_offsetof(struct queued_task_ctx, prev_cpu) == 92, "queued_task_ctx layout");
_Static_assert(__builtin_offsetof(struct queued_task_ctx, comm) == 96, "queued_task_ctx layout");
_Static_assert(__builtin_offsetof(struct queued_task_ctx, last_burst_ns) == 112, "queued_task_ctx layout");
_Static_assert(sizeof(struct dispatched_task_ctx) == 40, "dispatched_task_ctx layout");
_Static_assert(__builtin_offsetof(struct dispatched_task_ctx, slice_ns) == 16, "dispatched_task_ctx layout");
_Static_assert(__builtin_offsetof(struct dispatched_task_ctx, flags) == 32, "dispatched_task_ctx layout");
_Static_assert(sizeof(struct rl_exit_info) == 16 + RL_EXIT_REASON_LEN + RL_EXIT_MSG_LEN + RL_EXIT_DUMP_LEN,
	       "rl_exit_info layout");

#endif /* __SCX_USERLAND_INTF_H */
