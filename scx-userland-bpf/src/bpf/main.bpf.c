// SPDX-License-Identifier: GPL-2.0-only
/*
 * scx-userland: a generic sched_ext scheduler whose policy lives in user space.
 *
 * Every task that wants a CPU is described to user space in a `queued` ring
 * buffer record; user space answers with `dispatched` records in a user ring
 * buffer, which ops.dispatch() drains into the per-CPU or shared DSQs.  BPF
 * itself only handles what user space cannot: the user-space scheduler's own
 * threads, per-CPU kernel threads, and the fallbacks that keep every task
 * running when a ring is full, a decision is stale, or user space stops.
 *
 * Stall guard: every task handed to user space is "outstanding" until a
 * dispatch (or the kernel) resolves it, and is also remembered in the
 * `pending` queue.  A timer checks every STALL_TICK_NS whether user space made
 * progress (consumed a record or sent a decision); when work is outstanding and
 * it made none for stall_ns, BPF enters fallback mode: ops.dispatch() runs the
 * remembered tasks itself.  The first decision that arrives from user space
 * ends fallback mode.  If the scheduler process dies, BPF unregisters itself.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "intf.h"

char _license[] SEC("license") = "GPL";

#ifndef PF_KTHREAD
#define PF_KTHREAD 0x00200000
#endif
#ifndef PF_EXITING
#define PF_EXITING 0x00000004
#endif
#ifndef PF_KSWAPD
#define PF_KSWAPD 0x00020000
#endif
#ifndef CLOCK_MONOTONIC
#define CLOCK_MONOTONIC 1
#endif
#ifndef ENOMEM
#define ENOMEM 12
#endif

/* Shared DSQs: FIFO for RL_CPU_ANY dispatches without a vtime, vtime-ordered for those with one. */
#define SHARED_DSQ 0
#define SHARED_VTIME_DSQ 1
/*
 * Per CPU: the task the scheduler's own wake-up displaced there, waiting to resume
 * (RESUME_DSQ + cpu, taken only by that CPU unless a higher class holds it).
 */
#define RESUME_DSQ 0x100

/*
 * sched_ext kfuncs.  Their spellings changed twice: 6.13 renamed the dispatch
 * kfuncs, and later kernels added versions that return whether they worked
 * (scx_bpf_dsq_insert___v2, __scx_bpf_dsq_insert_vtime with an argument struct,
 * scx_bpf_dsq_move_to_local___v2 with enqueue flags), keeping the older ones
 * only for compatibility.  Every spelling is weak, so one object loads on each
 * kernel, and bpf_ksym_exists() picks the newest the kernel's BTF offers, once
 * per call site at load time.  A "___compat" suffix is a CO-RE flavour: libbpf
 * matches the name before it, so "x___v2___compat" resolves to the kernel's
 * "x___v2".
 */
extern bool scx_bpf_dsq_insert___v2___compat(struct task_struct *p, u64 dsq_id, u64 slice,
					     u64 enq_flags) __ksym __weak;
extern bool __scx_bpf_dsq_insert_vtime(struct task_struct *p,
				       struct scx_bpf_dsq_insert_vtime_args *args) __ksym __weak;
extern bool scx_bpf_dsq_move_to_local___v2___compat(u64 dsq_id, u64 enq_flags) __ksym __weak;
extern void scx_bpf_reenqueue_local___v2___compat(void) __ksym __weak;
extern u32 scx_bpf_reenqueue_local(void) __ksym __weak;
extern void scx_bpf_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
extern void scx_bpf_dispatch(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
extern void scx_bpf_dsq_insert_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime,
				     u64 enq_flags) __ksym __weak;
extern void scx_bpf_dispatch_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime,
				   u64 enq_flags) __ksym __weak;
extern bool scx_bpf_dsq_move_to_local(u64 dsq_id) __ksym __weak;
extern bool scx_bpf_consume(u64 dsq_id) __ksym __weak;
extern bool scx_bpf_dsq_move(struct bpf_iter_scx_dsq *it__iter, struct task_struct *p, u64 dsq_id,
			     u64 enq_flags) __ksym __weak;
extern bool scx_bpf_dispatch_from_dsq(struct bpf_iter_scx_dsq *it__iter, struct task_struct *p,
				      u64 dsq_id, u64 enq_flags) __ksym __weak;
extern int bpf_iter_scx_dsq_new(struct bpf_iter_scx_dsq *it, u64 dsq_id, u64 flags) __ksym __weak;
extern struct task_struct *bpf_iter_scx_dsq_next(struct bpf_iter_scx_dsq *it) __ksym __weak;
extern void bpf_iter_scx_dsq_destroy(struct bpf_iter_scx_dsq *it) __ksym __weak;

extern s32 scx_bpf_create_dsq(u64 dsq_id, s32 node) __ksym;
extern s32 scx_bpf_select_cpu_dfl(struct task_struct *p, s32 prev_cpu, u64 wake_flags, bool *is_idle) __ksym;
extern void scx_bpf_kick_cpu(s32 cpu, u64 flags) __ksym;
extern u32 scx_bpf_dispatch_nr_slots(void) __ksym;
extern s32 scx_bpf_dsq_nr_queued(u64 dsq_id) __ksym;
extern s32 scx_bpf_task_cpu(const struct task_struct *p) __ksym;
extern bool scx_bpf_task_running(const struct task_struct *p) __ksym;
extern u32 scx_bpf_nr_cpu_ids(void) __ksym;
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;
extern bool bpf_cpumask_test_cpu(u32 cpu, const struct cpumask *cpumask) __ksym;
extern const struct cpumask *scx_bpf_get_online_cpumask(void) __ksym;
extern void scx_bpf_put_cpumask(const struct cpumask *cpumask) __ksym;
extern const struct cpumask *scx_bpf_get_idle_cpumask(void) __ksym;
extern void scx_bpf_put_idle_cpumask(const struct cpumask *cpumask) __ksym;
extern void scx_bpf_exit_bstr(s64 exit_code, char *fmt, unsigned long long *data, u32 data__sz) __ksym;

static __always_inline void dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags)
{
	if (bpf_ksym_exists(scx_bpf_dsq_insert___v2___compat))
		scx_bpf_dsq_insert___v2___compat(p, dsq_id, slice, enq_flags);
	else if (bpf_ksym_exists(scx_bpf_dsq_insert))
		scx_bpf_dsq_insert(p, dsq_id, slice, enq_flags);
	else
		scx_bpf_dispatch(p, dsq_id, slice, enq_flags);
}

static __always_inline void dsq_insert_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime,
					     u64 enq_flags)
{
	if (bpf_ksym_exists(__scx_bpf_dsq_insert_vtime)) {
		struct scx_bpf_dsq_insert_vtime_args args = {
			.dsq_id = dsq_id,
			.slice = slice,
			.vtime = vtime,
			.enq_flags = enq_flags,
		};

		__scx_bpf_dsq_insert_vtime(p, &args);
	} else if (bpf_ksym_exists(scx_bpf_dsq_insert_vtime)) {
		scx_bpf_dsq_insert_vtime(p, dsq_id, slice, vtime, enq_flags);
	} else {
		scx_bpf_dispatch_vtime(p, dsq_id, slice, vtime, enq_flags);
	}
}

/* @enq_flags (e.g. SCX_ENQ_HEAD) only where the kernel has the ___v2 kfunc. */
static __always_inline bool dsq_move_to_local_flags(u64 dsq_id, u64 enq_flags)
{
	if (bpf_ksym_exists(scx_bpf_dsq_move_to_local___v2___compat))
		return scx_bpf_dsq_move_to_local___v2___compat(dsq_id, enq_flags);
	if (bpf_ksym_exists(scx_bpf_dsq_move_to_local))
		return scx_bpf_dsq_move_to_local(dsq_id);
	return scx_bpf_consume(dsq_id);
}

static __always_inline bool dsq_move_to_local(u64 dsq_id)
{
	return dsq_move_to_local_flags(dsq_id, 0);
}

/* Move @p, met by the DSQ iterator @it, to @dsq_id; from ops.dispatch() or a timer. */
static __always_inline bool dsq_move(struct bpf_iter_scx_dsq *it, struct task_struct *p, u64 dsq_id,
				     u64 enq_flags)
{
	if (bpf_ksym_exists(scx_bpf_dsq_move))
		return scx_bpf_dsq_move(it, p, dsq_id, enq_flags);
	return scx_bpf_dispatch_from_dsq(it, p, dsq_id, enq_flags);
}

/* Send the tasks waiting in this CPU's local DSQ through ops.enqueue() again. */
static __always_inline void reenqueue_local(void)
{
	if (bpf_ksym_exists(scx_bpf_reenqueue_local___v2___compat))
		scx_bpf_reenqueue_local___v2___compat();
	else
		scx_bpf_reenqueue_local();
}

/*
 * Which spellings this kernel took, recorded once by ops.init() for user space
 * (BpfScheduler::kfunc_generation): 2 = the ___v2 / argument-struct kfuncs,
 * 1 = the 6.13 names, 0 = the 6.12 names.
 */
volatile u64 kfunc_generation;

static __always_inline u64 detect_kfunc_generation(void)
{
	if (bpf_ksym_exists(scx_bpf_dsq_insert___v2___compat) &&
	    bpf_ksym_exists(__scx_bpf_dsq_insert_vtime) &&
	    bpf_ksym_exists(scx_bpf_dsq_move_to_local___v2___compat))
		return 2;
	if (bpf_ksym_exists(scx_bpf_dsq_insert))
		return 1;
	return 0;
}

static char usersched_exited_msg[] = "the user-space scheduler exited";

/*
 * Set by user space before load: the scheduler's process, and its scheduling
 * thread, the one thread BPF runs ahead of others (more can be registered in
 * `privileged`).  Other threads of the process go through the policy.
 */
const volatile s32 usersched_tgid;
const volatile s32 usersched_pid;
const volatile u64 slice_ns_dfl = RL_SLICE_DFL_NS;
const volatile bool full_user;
const volatile bool debug;
/* A waking task that finds an idle CPU is dispatched there by BPF (Builder::direct_idle). */
const volatile bool direct_idle;
/* Outstanding work and no progress from user space for this long: fallback mode. */
const volatile u64 stall_ns = 100ULL * 1000 * 1000;
/*
 * A task waiting in a shared queue this long is moved to its CPU by the stall
 * timer (user space sets it below the kernel's watchdog timeout).
 */
const volatile u64 shared_rescue_ns = 1000ULL * 1000 * 1000;

#define STALL_TICK_NS (20ULL * 1000 * 1000)

/* Counters; user space reads them all and writes nr_queued / nr_scheduled. */
volatile u64 nr_online_cpus;
volatile u64 nr_running;
volatile u64 nr_queued;
volatile u64 nr_scheduled;
volatile u64 nr_user_dispatches;
volatile u64 nr_kernel_dispatches;
volatile u64 nr_cancel_dispatches;
volatile u64 nr_bounce_dispatches;
volatile u64 nr_failed_dispatches;
volatile u64 nr_sched_congested;
/* Records sent to user space (tasks, and exit notices) and dispatch records received. */
volatile u64 nr_queued_events;
volatile u64 nr_exit_events;
volatile u64 nr_dispatch_records;
/* Stall guard: times fallback mode was entered, tasks BPF ran in it, whether it is on. */
volatile u64 nr_stalls;
volatile u64 nr_fallback_dispatches;
/* Wake-ups BPF sent straight to an idle CPU (direct_idle). */
volatile u64 nr_direct_dispatches;
/* Tasks the scheduler's own wake-up preempted, put back at the head of their CPU's local queue. */
volatile u64 nr_displaced_dispatches;
/*
 * Tasks a higher sched class's taking of their CPU sent back through ops.enqueue(),
 * and decisions for such a CPU sent to any CPU instead.
 */
volatile u64 nr_reenqueued;
/* RL_CPU_ANY dispatches placed in the vtime-ordered shared queue. */
volatile u64 nr_vtime_dispatches;
/* Memory-management kernel threads (kswapd, kcompactd, khugepaged) BPF ran itself. */
volatile u64 nr_mm_kthread_dispatches;
/* Tasks without a task context (no record possible): BPF ran them itself. */
volatile u64 nr_untracked_dispatches;
/* Displaced tasks the stall timer moved to their CPU, whose ops.dispatch() never came. */
volatile u64 nr_resume_rescues;
/* Tasks the stall timer moved from a shared queue to a CPU after shared_rescue_ns. */
volatile u64 nr_shared_rescues;
/* Live stall-guard entries evicted from a full `pending` queue: invisible to the guard. */
volatile u64 nr_pending_lost;
volatile u64 fallback;
/* Tasks handed to user space and not yet resolved (signed: resolution races enqueue). */
volatile s64 nr_outstanding;
/* Set by user space just before it detaches: from then on nobody reads, and that is no stall. */
volatile u64 detaching;
/* Set by user space while it sleeps waiting for tasks (BpfScheduler::wait_for_tasks). */
volatile u64 usersched_sleeping;

/* The pid running on each CPU, 0 when idle. */
volatile u32 cpu_to_pid[RL_MAX_CPUS];
/* When the task running on each CPU started; 0 when idle or running the scheduler itself. */
volatile u64 cpu_run_start[RL_MAX_CPUS];
/* Per CPU: the pid the scheduler's own wake-up preempted there (0: none). */
s32 displaced[RL_MAX_CPUS];
/*
 * CPUs a higher sched class holds: from ops.cpu_release, or ops.disable of a task
 * that left sched_ext while running, until ops.cpu_acquire.
 */
u8 cpu_taken[RL_MAX_CPUS];

/* A preempting RL_CPU_ANY dispatch never cuts a running task shorter than this. */
#define PREEMPT_MIN_RUN_NS (200ULL * 1000)
/* The vtime queue waits at most this long behind the FIFO queue. */
#define VTIME_MAX_WAIT_NS (20ULL * 1000 * 1000)
/* When a CPU last took a task from the vtime queue (or found it empty). */
u64 vtime_served_ts;
/*
 * Head insertions into the FIFO queue stop once it has not been seen empty for
 * this long, so a stream of them cannot starve the tasks at its tail.
 */
#define FIFO_HEAD_MAX_NS (20ULL * 1000 * 1000)
/* When the FIFO queue was last seen empty. */
u64 fifo_empty_ts;
/* A displaced task with less of its slice left than this has used its turn. */
#define RESUME_MIN_SLICE_NS (100ULL * 1000)
/* Woken tasks go before a displaced task on its CPU for at most this long. */
#define RESUME_MAX_WAIT_NS (1000ULL * 1000)
/* A resume queue its CPU has not served for this long is served by the stall timer. */
#define RESUME_RESCUE_NS (10ULL * 1000 * 1000)
/*
 * Per CPU: when the oldest task waiting in its resume queue was displaced, or 0 when
 * one was cut short and goes first.
 */
u64 resume_ts[RL_MAX_CPUS];
/*
 * Per CPU: decisions its running ops.dispatch() carried out. Passed through memory
 * so the verifier does not follow the drain's tally into the branches on it.
 */
volatile u64 dispatched_now[RL_MAX_CPUS];

/* Filled in by ops.exit(). */
struct rl_exit_info exit_info;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} queued SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} dispatched SEC(".maps");

/* ops.dispatch() reads its samples with copy_sample(). */
#include "dispatch_sample.bpf.h"

struct task_ctx {
	/* 1 while a queued record is outstanding and no dispatch consumed it. */
	u64 queued;
	u64 cpumask_cnt;
	u64 start_ts;
	u64 stop_ts;
	u64 exec_runtime;
	/* The CPU select_cpu() found idle for this wake-up, or -1. */
	s32 idle_cpu;
	/* Set once a queued record was sent: only such tasks get an exit notice. */
	u32 reported;
	/* Bumped on every hand-over to user space; matches the live `pending` entry. */
	u64 seq;
	/* The slice the task had left when it last started running. */
	u64 run_slice;
	/* The CPU it last ran on (-1: never), and its CPU time from wake-up to sleep. */
	s32 last_cpu;
	u32 __pad;
	u64 last_burst_ns;
	/* When a decision (or BPF) last put it in a shared queue; 0 once it runs. */
	u64 shared_ts;
};

/* A task handed to user space, as remembered for the stall guard. */
struct pending_task {
	s32 pid;
	u32 __pad;
	u64 seq;
};

/*
 * Tasks handed to user space, in the order they were handed over, except that
 * run_pending() puts an entry that is still waiting back at the tail: the head
 * is not always the oldest.  When full, remember_pending() evicts the head and
 * counts it in nr_pending_lost if it was still waiting.  User space sets its size
 * at load (BpfSchedulerBuilder::stall_guard_capacity); this is the default.
 */
#define PENDING_MAX 32768
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, PENDING_MAX);
	__type(value, struct pending_task);
} pending SEC(".maps");

/* Threads of the scheduler process registered as privileged (BpfScheduler::privilege_thread). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RL_MAX_PRIVILEGED);
	__type(key, s32);
	__type(value, u8);
} privileged SEC(".maps");

struct stall_timer {
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct stall_timer);
} stall_timer_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctx_stor SEC(".maps");

static __always_inline struct task_ctx *lookup_task_ctx(struct task_struct *p)
{
	return bpf_task_storage_get(&task_ctx_stor, p, 0, 0);
}

/* The scheduling thread, or a thread of the scheduler process registered as privileged. */
static __always_inline bool is_usersched(const struct task_struct *p)
{
	s32 pid = p->pid;

	if (!usersched_tgid || p->tgid != usersched_tgid)
		return false;
	return pid == usersched_pid || bpf_map_lookup_elem(&privileged, &pid);
}

/* kswapd, kcompactd and khugepaged: a scheduler that faults under memory pressure waits on them. */
static __always_inline bool is_mm_kthread(const struct task_struct *p)
{
	char comm[10];

	if (!(p->flags & PF_KTHREAD))
		return false;
	if (p->flags & PF_KSWAPD)
		return true;
	if (bpf_probe_read_kernel(comm, sizeof(comm), p->comm))
		return false;
	return !__builtin_memcmp(comm, "kcompactd", 9) || !__builtin_memcmp(comm, "khugepaged", 10);
}

static __always_inline bool is_percpu_kthread(const struct task_struct *p)
{
	return (p->flags & PF_KTHREAD) && p->nr_cpus_allowed == 1;
}

static __always_inline bool usersched_has_work(void)
{
	return nr_queued || nr_scheduled || bpf_ringbuf_query(&queued, BPF_RB_AVAIL_DATA) > 0;
}

/* SCX_ENQ_HEAD for an insertion into the FIFO queue, unless its tail could starve. */
static __always_inline u64 fifo_head_flag(void)
{
	u64 now = bpf_ktime_get_ns();

	if (!scx_bpf_dsq_nr_queued(SHARED_DSQ)) {
		fifo_empty_ts = now;
		return SCX_ENQ_HEAD;
	}
	return now - fifo_empty_ts < FIFO_HEAD_MAX_NS ? SCX_ENQ_HEAD : 0;
}

/*
 * What is left of @tctx's slice after its last run, or 0 when less than
 * RESUME_MIN_SLICE_NS is: then the task used its turn and goes to user space.
 */
static __always_inline u64 resume_slice(struct task_ctx *tctx)
{
	u64 ran = tctx->stop_ts - tctx->start_ts;

	if (tctx->stop_ts < tctx->start_ts || ran + RESUME_MIN_SLICE_NS >= tctx->run_slice)
		return 0;
	return tctx->run_slice - ran;
}

/*
 * Publish a `queued` record. User space is woken only while it sleeps: an awake
 * scheduler reads the ring anyway, and the kernel's own wake-up (flags 0) would cost
 * an irq_work whenever the reader has caught up. The check follows the commit, a
 * full barrier, and user space sets the flag before its last look at the ring, so
 * one of the two always sees the other: no wake-up is lost.
 */
static __always_inline void submit_queued(void *rec)
{
	void *nudge;

	bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
	if (!usersched_sleeping)
		return;
	/* A discarded record carries the wake-up; readers skip it. */
	nudge = bpf_ringbuf_reserve(&queued, 8, 0);
	if (nudge)
		bpf_ringbuf_discard(nudge, BPF_RB_FORCE_WAKEUP);
}

static __always_inline u64 clamp_slice(u64 slice)
{
	if (!slice)
		return slice_ns_dfl;
	return slice > RL_SLICE_MAX_NS ? RL_SLICE_MAX_NS : slice;
}

/* Wake @cpu if it sits idle, so it looks at the DSQs; never the CPU we run on. */
static __always_inline void kick_if_idle(s32 cpu)
{
	if (cpu >= 0 && cpu != bpf_get_smp_processor_id())
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
}

/* Take @tctx's task out of user space's hands; true if it was outstanding. */
static __always_inline bool resolve(struct task_ctx *tctx)
{
	if (!__sync_lock_test_and_set(&tctx->queued, 0))
		return false;
	__sync_fetch_and_sub(&nr_outstanding, 1);
	return true;
}

/* Whether @e is the live entry of a task still waiting for user space. */
static __always_inline bool pending_live(const struct pending_task *e)
{
	struct task_struct *p = bpf_task_from_pid(e->pid);
	struct task_ctx *tctx;
	bool live;

	if (!p)
		return false;
	tctx = lookup_task_ctx(p);
	live = tctx && tctx->queued && tctx->seq == e->seq;
	bpf_task_release(p);
	return live;
}

/* Remember @e for the stall guard; a full queue gives up its head, counted if live. */
static __always_inline void remember_pending(struct pending_task *e)
{
	struct pending_task old;

	if (!bpf_map_push_elem(&pending, e, 0))
		return;
	if (!bpf_map_pop_elem(&pending, &old) && pending_live(&old))
		__sync_fetch_and_add(&nr_pending_lost, 1);
	bpf_map_push_elem(&pending, e, BPF_EXIST);
}

/*
 * Run, from ops.dispatch(), tasks user space was given but has not decided on:
 * all of them in fallback mode, as long as there are dispatch slots; otherwise
 * only drop the entries of tasks already resolved from the head of `pending`.
 */
static __always_inline void run_pending(void)
{
	struct pending_task e;
	struct task_struct *p;
	struct task_ctx *tctx;
	bool live;
	int i;

	bpf_for(i, 0, 64) {
		if (!fallback && bpf_map_peek_elem(&pending, &e))
			break;
		if (!scx_bpf_dispatch_nr_slots() || bpf_map_pop_elem(&pending, &e))
			break;
		p = bpf_task_from_pid(e.pid);
		if (!p)
			continue;
		tctx = lookup_task_ctx(p);
		live = tctx && tctx->queued && tctx->seq == e.seq;
		if (live && fallback) {
			if (resolve(tctx)) {
				tctx->shared_ts = bpf_ktime_get_ns();
				dsq_insert(p, SHARED_DSQ, slice_ns_dfl, 0);
				kick_if_idle(scx_bpf_task_cpu(p));
				__sync_fetch_and_add(&nr_fallback_dispatches, 1);
			}
		} else if (live) {
			/* Still waiting for user space, which is making progress: keep it. */
			bpf_map_push_elem(&pending, &e, BPF_EXIST);
			bpf_task_release(p);
			break;
		}
		bpf_task_release(p);
	}
}

/*
 * Only its CPU's ops.dispatch() takes from a resume queue, and a CPU whose local
 * queue never runs dry, as when other CPUs keep carrying out decisions made for
 * it, never calls it. From the stall timer: the oldest task of a resume queue
 * overdue by RESUME_RESCUE_NS moves to the head of its CPU's local queue and runs
 * there next.
 */
static __always_inline void rescue_resumes(u64 now)
{
	u32 cpu, nr_cpus = scx_bpf_nr_cpu_ids();
	struct task_struct *p;

	bpf_for(cpu, 0, nr_cpus) {
		if (cpu >= RL_MAX_CPUS)
			break;
		if (!scx_bpf_dsq_nr_queued(RESUME_DSQ + cpu) || now - resume_ts[cpu] < RESUME_RESCUE_NS)
			continue;
		bpf_for_each(scx_dsq, p, RESUME_DSQ + cpu, 0) {
			if (dsq_move(&___it, p, SCX_DSQ_LOCAL_ON | cpu, SCX_ENQ_HEAD)) {
				__sync_fetch_and_add(&nr_resume_rescues, 1);
				if (debug)
					bpf_printk("scx-userland: resume pid %d on cpu %d from the timer", p->pid, cpu);
			}
			break;
		}
	}
}

/*
 * A shared queue is served by whichever CPU calls ops.dispatch(), but a task that
 * may only use CPUs whose local queues never run dry waits there for good. From
 * the stall timer: a task among the first SHARED_RESCUE_SCAN of @dsq_id that has
 * waited shared_rescue_ns moves to the head of its CPU's local queue, if it may
 * run there.
 */
#define SHARED_RESCUE_SCAN 32
static __always_inline void rescue_shared(u64 dsq_id, u64 now)
{
	struct task_struct *p;
	struct task_ctx *tctx;
	s32 cpu;
	int n = 0;

	bpf_for_each(scx_dsq, p, dsq_id, 0) {
		if (++n > SHARED_RESCUE_SCAN)
			break;
		tctx = lookup_task_ctx(p);
		if (!tctx || !tctx->shared_ts || now - tctx->shared_ts < shared_rescue_ns)
			continue;
		cpu = scx_bpf_task_cpu(p);
		if (cpu < 0 || !bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
			continue;
		if (dsq_move(&___it, p, SCX_DSQ_LOCAL_ON | cpu, SCX_ENQ_HEAD)) {
			tctx->shared_ts = 0;
			__sync_fetch_and_add(&nr_shared_rescues, 1);
			if (debug)
				bpf_printk("scx-userland: pid %d waited in a shared queue: to cpu %d", p->pid, cpu);
		}
	}
}

static u64 last_cons_pos, last_dispatch_records, last_progress_ns;

/* Every STALL_TICK_NS: enter fallback mode if user space stopped making progress. */
static int stall_tick(void *map, int *key, struct bpf_timer *timer)
{
	u64 now = bpf_ktime_get_ns();
	u64 cons = bpf_ringbuf_query(&queued, BPF_RB_CONS_POS);
	u64 recs = nr_dispatch_records;
	bool waiting = nr_outstanding > 0 || bpf_ringbuf_query(&queued, BPF_RB_AVAIL_DATA) > 0;
	u32 cpu, nr_cpus = scx_bpf_nr_cpu_ids();

	if (!waiting || detaching || cons != last_cons_pos || recs != last_dispatch_records) {
		last_cons_pos = cons;
		last_dispatch_records = recs;
		last_progress_ns = now;
	} else if (!fallback && now - last_progress_ns >= stall_ns) {
		fallback = 1;
		__sync_fetch_and_add(&nr_stalls, 1);
		if (debug)
			bpf_printk("scx-userland: no progress from user space for %llu ns: fallback", now - last_progress_ns);
	}
	rescue_resumes(now);
	rescue_shared(SHARED_DSQ, now);
	rescue_shared(SHARED_VTIME_DSQ, now);
	if (fallback) {
		/* Make every CPU go through ops.dispatch() and pick up what waits. */
		bpf_for(cpu, 0, nr_cpus) {
			if (cpu >= RL_MAX_CPUS)
				break;
			scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
		}
	}
	if (!exit_info.kind)
		bpf_timer_start(timer, STALL_TICK_NS, 0);
	return 0;
}

/*
 * A preempting RL_CPU_ANY dispatch of @p: make room on an online CPU it may
 * use. An idle CPU is kicked awake; otherwise the CPU whose task has run the
 * longest (at least PREEMPT_MIN_RUN_NS, and never the scheduler itself) is
 * preempted.
 *
 * @draining: called from this CPU's ops.dispatch(), which shows no task (its
 * previous one stopped) and takes the head of the shared queues next. It is room
 * for @p only when nothing else waits there; otherwise another CPU must make it.
 */
static __always_inline void make_room(struct task_struct *p, bool draining)
{
	u64 now = bpf_ktime_get_ns(), oldest = now;
	u32 cpu, nr_cpus = scx_bpf_nr_cpu_ids();
	const struct cpumask *online = scx_bpf_get_online_cpumask();
	s32 victim = -1, idle = -1, self = -1;

	if (draining &&
	    scx_bpf_dsq_nr_queued(SHARED_DSQ) + scx_bpf_dsq_nr_queued(SHARED_VTIME_DSQ) > 1)
		self = bpf_get_smp_processor_id();

	bpf_for(cpu, 0, nr_cpus) {
		u64 started;

		if (cpu >= RL_MAX_CPUS)
			break;
		/* An offline CPU shows no task: it must not pass for an idle one. */
		if (!bpf_cpumask_test_cpu(cpu, online) || !bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
			continue;
		if ((s32)cpu == self || cpu_taken[cpu])
			continue;
		if (!cpu_to_pid[cpu]) {
			idle = cpu;
			break;
		}
		started = cpu_run_start[cpu];
		if (started && started < oldest) {
			oldest = started;
			victim = cpu;
		}
	}
	scx_bpf_put_cpumask(online);
	if (idle >= 0)
		scx_bpf_kick_cpu(idle, SCX_KICK_IDLE);
	else if (victim >= 0 && now - oldest >= PREEMPT_MIN_RUN_NS)
		scx_bpf_kick_cpu(victim, SCX_KICK_PREEMPT);
}

/*
 * @cpu runs a task of a higher sched class: known since ops.cpu_release, or, for
 * another CPU than this one, seen now (no task of ours runs there and it is not
 * idle), which catches a CPU a higher class took while idle (no ops.cpu_release
 * then). This CPU is never judged that way: while it enqueues, it is between two
 * tasks and would look taken.
 */
static __always_inline bool cpu_held_elsewhere(s32 cpu)
{
	const struct cpumask *idle;
	bool held;

	if (cpu < 0 || cpu >= RL_MAX_CPUS)
		return false;
	if (cpu_taken[cpu])
		return true;
	if (cpu_to_pid[cpu] || cpu == (s32)bpf_get_smp_processor_id())
		return false;
	idle = scx_bpf_get_idle_cpumask();
	held = !bpf_cpumask_test_cpu(cpu, idle);
	scx_bpf_put_idle_cpumask(idle);
	return held;
}

/*
 * @p is the scheduling thread, or the scheduler process's main thread, on its way out
 * while we are attached (a normal shutdown detaches first).
 */
static __always_inline bool usersched_gone(const struct task_struct *p)
{
	if (!usersched_tgid || detaching || !(p->flags & PF_EXITING))
		return false;
	return p->pid == usersched_pid || p->pid == usersched_tgid;
}

/*
 * The scheduler process is going away: step aside now. Waiting for its descriptors
 * to close would wait for all its threads to exit, and those that are not privileged
 * may be waiting for decisions that will never come.
 */
static __always_inline void step_aside(void)
{
	unsigned long long no_args[1] = {};

	fallback = 1;
	scx_bpf_exit_bstr(0, usersched_exited_msg, no_args, sizeof(no_args));
}

SEC("struct_ops/rl_select_cpu")
s32 BPF_PROG(rl_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	struct task_ctx *tctx = lookup_task_ctx(p);
	bool is_idle = false;
	s32 cpu;

	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle && direct_idle && !is_usersched(p)) {
		/* The policy opted in: an idle CPU is taken at once, no round trip. */
		dsq_insert(p, SCX_DSQ_LOCAL, slice_ns_dfl, 0);
		__sync_fetch_and_add(&nr_direct_dispatches, 1);
		is_idle = false;
	}
	if (tctx)
		tctx->idle_cpu = is_idle ? cpu : -1;
	return cpu;
}

SEC("struct_ops/rl_enqueue")
void BPF_PROG(rl_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct pending_task pend;
	struct queued_task_ctx *rec;
	struct task_ctx *tctx;
	s32 cpu = scx_bpf_task_cpu(p);
	u64 slice;

	if (enq_flags & SCX_ENQ_REENQ)
		__sync_fetch_and_add(&nr_reenqueued, 1);

	/* The scheduler itself runs at once on its CPU, ahead of others when it has work. */
	if (is_usersched(p)) {
		u64 flags = enq_flags;
		/* select_cpu found @cpu idle and claimed it: its idle bit is clear, not taken. */
		bool claimed = (tctx = lookup_task_ctx(p)) && tctx->idle_cpu == cpu;

		if ((enq_flags & SCX_ENQ_REENQ) || (!claimed && cpu_held_elsewhere(cpu))) {
			/* A higher class took (or holds) its CPU: first in line for any other. */
			dsq_insert(p, SHARED_DSQ, slice_ns_dfl, SCX_ENQ_HEAD);
			make_room(p, false);
			return;
		}
		if (usersched_has_work()) {
			flags |= SCX_ENQ_PREEMPT;
			/* Whatever runs there now is displaced by us, not by the policy. */
			if (cpu >= 0 && cpu < RL_MAX_CPUS)
				displaced[cpu] = cpu_to_pid[cpu];
		}
		dsq_insert(p, SCX_DSQ_LOCAL, slice_ns_dfl, flags);
		return;
	}

	/* Per-CPU kernel threads can only run where they are: no decision to make. */
	if (!full_user && is_percpu_kthread(p)) {
		dsq_insert(p, SCX_DSQ_LOCAL, slice_ns_dfl, enq_flags);
		__sync_fetch_and_add(&nr_kernel_dispatches, 1);
		return;
	}

	/* Reclaim and compaction must never wait for a scheduler that may be waiting on them. */
	if (!full_user && is_mm_kthread(p)) {
		dsq_insert(p, SHARED_DSQ, slice_ns_dfl, enq_flags | fifo_head_flag());
		kick_if_idle(cpu);
		__sync_fetch_and_add(&nr_mm_kthread_dispatches, 1);
		return;
	}

	/*
	 * Displaced by the scheduler's own thread, not by the policy: it resumes on its
	 * CPU after the scheduler, with what is left of its slice, as after a higher
	 * sched class ran. Bounded: that slice only shrinks, and once it is (nearly) used
	 * up the task goes to user space like any other. It waits in its CPU's resume
	 * queue, not in the local one: an empty local queue makes the CPU run
	 * ops.dispatch() when the scheduler sleeps, so the decisions just written are
	 * carried out at once, and tasks they woke go first (see rl_dispatch()).
	 */
	tctx = lookup_task_ctx(p);
	if (tctx && !(enq_flags & SCX_ENQ_WAKEUP) && cpu >= 0 && cpu < RL_MAX_CPUS &&
	    displaced[cpu] == p->pid && (u32)cpu < scx_bpf_nr_cpu_ids() &&
	    (slice = resume_slice(tctx))) {
		displaced[cpu] = 0;
		/*
		 * Cut short (less than PREEMPT_MIN_RUN_NS into its run, which no preemption
		 * by a policy does, e.g. displaced again as soon as it resumed): it goes
		 * first, as if it had waited.
		 */
		if (tctx->stop_ts - tctx->start_ts < PREEMPT_MIN_RUN_NS) {
			resume_ts[cpu] = 0;
			/* Ahead of a task displaced earlier that still waits here. */
			enq_flags |= SCX_ENQ_HEAD;
		} else if (!scx_bpf_dsq_nr_queued(RESUME_DSQ + cpu)) {
			/*
			 * Only a first one starts the clock: a task displaced later must not
			 * push back the turn of one that already waits.
			 */
			resume_ts[cpu] = bpf_ktime_get_ns();
		}
		dsq_insert(p, RESUME_DSQ + cpu, slice, enq_flags);
		__sync_fetch_and_add(&nr_displaced_dispatches, 1);
		return;
	}

	if (!tctx) {
		/* No context to track it by (its init_task failed): BPF runs it itself. */
		dsq_insert(p, SHARED_DSQ, slice_ns_dfl, enq_flags);
		kick_if_idle(cpu);
		__sync_fetch_and_add(&nr_untracked_dispatches, 1);
		return;
	}
	rec = bpf_ringbuf_reserve(&queued, sizeof(*rec), 0);
	if (!rec) {
		/* Ring full: BPF runs the task itself, nothing is lost. */
		dsq_insert(p, SHARED_DSQ, slice_ns_dfl, enq_flags);
		kick_if_idle(cpu);
		__sync_fetch_and_add(&nr_sched_congested, 1);
		return;
	}

	rec->pid = p->pid;
	rec->cpu = cpu;
	rec->tgid = p->tgid;
	rec->nr_cpus_allowed = p->nr_cpus_allowed;
	rec->cpumask_cnt = tctx->cpumask_cnt;
	rec->enq_flags = enq_flags;
	rec->sum_exec_runtime = p->se.sum_exec_runtime;
	rec->exec_runtime = tctx->exec_runtime;
	rec->weight = p->scx.weight;
	rec->start_ts = tctx->start_ts;
	rec->stop_ts = tctx->stop_ts;
	rec->enq_ts = bpf_ktime_get_ns();
	rec->vtime = p->scx.dsq_vtime;
	rec->flags = 0;
	rec->prev_cpu = tctx->last_cpu;
	rec->last_burst_ns = tctx->last_burst_ns;
	if (tctx->idle_cpu >= 0 && tctx->idle_cpu == cpu)
		rec->flags |= RL_QF_IDLE_CPU;
	if (p->flags & PF_KTHREAD)
		rec->flags |= RL_QF_KTHREAD;
	if (enq_flags & SCX_ENQ_WAKEUP)
		rec->flags |= RL_QF_WAKEUP;
	if (enq_flags & SCX_ENQ_REENQ)
		rec->flags |= RL_QF_REENQ;
	bpf_probe_read_kernel_str(rec->comm, sizeof(rec->comm), p->comm);

	/* Mark it outstanding (and remember it) before user space can see it. */
	pend.pid = p->pid;
	pend.seq = ++tctx->seq;
	pend.__pad = 0;
	if (!__sync_lock_test_and_set(&tctx->queued, 1))
		__sync_fetch_and_add(&nr_outstanding, 1);
	tctx->reported = 1;
	remember_pending(&pend);
	submit_queued(rec);
	__sync_fetch_and_add(&nr_queued_events, 1);
}

SEC("struct_ops/rl_dequeue")
void BPF_PROG(rl_dequeue, struct task_struct *p, u64 deq_flags)
{
	struct task_ctx *tctx = lookup_task_ctx(p);

	/* The kernel took the task back: a dispatch still in flight for it is stale. */
	if (tctx)
		resolve(tctx);
}

/* Carry out one decision of user space's. Returns 1 if done, 0 if it was stale. */
static __always_inline int dispatch_one(const struct dispatched_task_ctx *d)
{
	u64 slice, flags = d->flags, enq_flags = 0;
	s32 cpu = d->cpu, hint;
	struct task_struct *p;
	struct task_ctx *tctx;

	p = bpf_task_from_pid(d->pid);
	if (!p) {
		/* Exited meanwhile, or never existed. */
		__sync_fetch_and_add(&nr_cancel_dispatches, 1);
		if (debug)
			bpf_printk("scx-userland: cancel pid %d: no such task", d->pid);
		return 0;
	}

	tctx = lookup_task_ctx(p);
	if (!tctx || !resolve(tctx)) {
		/* Not waiting for a decision: dequeued, dispatched already, or never queued. */
		__sync_fetch_and_add(&nr_cancel_dispatches, 1);
		if (debug)
			bpf_printk("scx-userland: cancel pid %d: not waiting for a decision", d->pid);
		bpf_task_release(p);
		return 0;
	}

	slice = clamp_slice(d->slice_ns);
	hint = tctx->idle_cpu;
	tctx->idle_cpu = -1;

	if (cpu >= 0 && (d->cpumask_cnt != tctx->cpumask_cnt || (u32)cpu >= scx_bpf_nr_cpu_ids() ||
			 !bpf_cpumask_test_cpu(cpu, p->cpus_ptr))) {
		/* Stale or impossible target: let any CPU the task may use take it. */
		__sync_fetch_and_add(&nr_bounce_dispatches, 1);
		if (debug)
			bpf_printk("scx-userland: bounce pid %d: cpu %d not usable", d->pid, cpu);
		cpu = RL_CPU_ANY;
	}
	if (cpu >= 0 && cpu < RL_MAX_CPUS && cpu_taken[cpu]) {
		/* A higher class holds it: the task would wait behind that, maybe for seconds. */
		__sync_fetch_and_add(&nr_reenqueued, 1);
		cpu = RL_CPU_ANY;
	}
	if (debug)
		bpf_printk("scx-userland: dispatch pid %d cpu %d slice %llu", d->pid, cpu, slice);

	if (cpu >= 0) {
		if (flags & RL_DF_PREEMPT)
			enq_flags |= SCX_ENQ_PREEMPT;
		if (flags & RL_DF_HEAD)
			enq_flags |= SCX_ENQ_HEAD;
		dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, slice, enq_flags);
		kick_if_idle(cpu);
	} else {
		tctx->shared_ts = bpf_ktime_get_ns();
		if ((flags & RL_DF_VTIME) || d->vtime) {
			dsq_insert_vtime(p, SHARED_VTIME_DSQ, slice, d->vtime, 0);
			__sync_fetch_and_add(&nr_vtime_dispatches, 1);
		} else {
			if (flags & RL_DF_HEAD)
				enq_flags |= fifo_head_flag();
			dsq_insert(p, SHARED_DSQ, slice, enq_flags);
		}
		cpu = scx_bpf_task_cpu(p);
		if (flags & RL_DF_PREEMPT)
			make_room(p, true);
		else
			kick_if_idle(cpu);
	}
	/* An idle CPU claimed for this task but not used must look for work again. */
	if (hint >= 0 && hint != cpu)
		kick_if_idle(hint);

	bpf_task_release(p);
	return 1;
}

/* Room left in this ops.dispatch() for one more `dispatched` sample, however full. */
static __always_inline bool room_for_a_sample(void)
{
	return scx_bpf_dispatch_nr_slots() >= RL_DISPATCH_BATCH_MAX;
}

/* What one drain of `dispatched` did, added to the counters once at its end. */
struct drain_tally {
	u64 records;
	u64 dispatched;
};

/*
 * One sample of the `dispatched` user ring buffer: 1 to RL_DISPATCH_BATCH_MAX
 * records back to back, counted into the drain_tally at @ctx. Returns 1 to stop
 * draining.
 */
static long handle_dispatch(struct bpf_dynptr *dynptr, void *ctx)
{
	struct drain_tally *tally = ctx;
	struct dispatch_scratch *buf;
	u32 n, i;

	/* User space is deciding again. */
	if (fallback)
		fallback = 0;
	buf = copy_sample(dynptr, &n);
	if (!buf) {
		__sync_fetch_and_add(&nr_failed_dispatches, 1);
		goto next;
	}
	bpf_for(i, 0, n) {
		if (i >= RL_DISPATCH_BATCH_MAX)
			break;
		tally->dispatched += dispatch_one(&buf->rec[i]);
		tally->records++;
	}
next:
	return room_for_a_sample() ? 0 : 1;
}

/*
 * Nothing else to run here: take a displaced task whose CPU a higher class holds,
 * so it does not wait for that CPU to come back.
 */
static __always_inline void take_stranded_resume(s32 self)
{
	u32 cpu, nr_cpus = scx_bpf_nr_cpu_ids();

	bpf_for(cpu, 0, nr_cpus) {
		if (cpu >= RL_MAX_CPUS)
			break;
		if ((s32)cpu != self && cpu_taken[cpu] &&
		    dsq_move_to_local(RESUME_DSQ + cpu))
			return;
	}
}

SEC("struct_ops/rl_dispatch")
void BPF_PROG(rl_dispatch, s32 cpu, struct task_struct *prev)
{
	struct drain_tally tally = {};
	bool resume = false;
	u64 now, fresh = 0;

	/*
	 * User space never waits for room in this ring: no wake-up after draining.
	 * Test the number of samples, never the tally: a branch on the tally would make
	 * the verifier track its every value through the callback.
	 */
	if (room_for_a_sample() &&
	    bpf_user_ringbuf_drain(&dispatched, handle_dispatch, &tally, BPF_RB_NO_WAKEUP) > 0) {
		__sync_fetch_and_add(&nr_dispatch_records, tally.records);
		__sync_fetch_and_add(&nr_user_dispatches, tally.dispatched);
		if (cpu >= 0 && cpu < RL_MAX_CPUS)
			dispatched_now[cpu] = tally.dispatched;
	}
	run_pending();
	now = bpf_ktime_get_ns();

	/*
	 * The task the scheduler displaced here resumes behind the FIFO queue, and
	 * first, at the head of the local queue (where the kernel offers that), once it
	 * has waited RESUME_MAX_WAIT_NS. The decisions carried out just now are not
	 * counted in their queues until the kernel flushes them (at the next move to
	 * the local queue, or when this returns and it calls again): until it is
	 * overdue, the displaced task waits for them too.
	 */
	if (cpu >= 0 && cpu < RL_MAX_CPUS) {
		fresh = dispatched_now[cpu];
		dispatched_now[cpu] = 0;
		resume = scx_bpf_dsq_nr_queued(RESUME_DSQ + cpu) > 0;
	}
	if (resume && now - resume_ts[cpu] > RESUME_MAX_WAIT_NS &&
	    dsq_move_to_local_flags(RESUME_DSQ + cpu, SCX_ENQ_HEAD))
		return;
	if (resume && !fresh && !scx_bpf_dsq_nr_queued(SHARED_DSQ) &&
	    dsq_move_to_local(RESUME_DSQ + cpu))
		return;

	/*
	 * The FIFO queue first (the tasks a policy put first, and those BPF runs
	 * itself), then the vtime-ordered queue; but a vtime queue that has not been
	 * served for VTIME_MAX_WAIT_NS goes first once, so it can never starve.
	 */
	if (!scx_bpf_dsq_nr_queued(SHARED_VTIME_DSQ)) {
		vtime_served_ts = now;
	} else if (now - vtime_served_ts > VTIME_MAX_WAIT_NS &&
		   dsq_move_to_local(SHARED_VTIME_DSQ)) {
		vtime_served_ts = now;
		return;
	}
	if (dsq_move_to_local(SHARED_DSQ))
		return;
	fifo_empty_ts = now;
	if (resume) {
		if (!fresh)
			dsq_move_to_local(RESUME_DSQ + cpu);
		return;
	}
	if (dsq_move_to_local(SHARED_VTIME_DSQ)) {
		vtime_served_ts = now;
		return;
	}
	take_stranded_resume(cpu);
}

SEC("struct_ops/rl_runnable")
void BPF_PROG(rl_runnable, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = lookup_task_ctx(p);

	/* Waking up: what it ran since its previous wake-up was one burst. */
	if (tctx) {
		tctx->last_burst_ns = tctx->exec_runtime;
		tctx->exec_runtime = 0;
	}
}

SEC("struct_ops/rl_running")
void BPF_PROG(rl_running, struct task_struct *p)
{
	struct task_ctx *tctx = lookup_task_ctx(p);
	s32 cpu = scx_bpf_task_cpu(p);
	u64 now = bpf_ktime_get_ns();

	if (cpu >= 0 && cpu < RL_MAX_CPUS) {
		cpu_to_pid[cpu] = p->pid;
		cpu_run_start[cpu] = is_usersched(p) ? 0 : now;
		/* Whoever the scheduler displaced here was put back (or blocked) by now. */
		if (is_usersched(p))
			displaced[cpu] = 0;
	}
	if (tctx) {
		tctx->start_ts = now;
		tctx->shared_ts = 0;
		tctx->run_slice = p->scx.slice;
		tctx->last_cpu = cpu;
	}
	__sync_fetch_and_add(&nr_running, 1);
}

SEC("struct_ops/rl_stopping")
void BPF_PROG(rl_stopping, struct task_struct *p, bool runnable)
{
	struct task_ctx *tctx = lookup_task_ctx(p);
	s32 cpu = scx_bpf_task_cpu(p);
	u64 now = bpf_ktime_get_ns();

	if (cpu >= 0 && cpu < RL_MAX_CPUS) {
		cpu_to_pid[cpu] = 0;
		cpu_run_start[cpu] = 0;
	}
	/* The scheduling thread stops for good (or sleeps on its way out): no decision follows. */
	if (!runnable && usersched_gone(p))
		step_aside();
	if (tctx) {
		tctx->stop_ts = now;
		if (tctx->start_ts && now > tctx->start_ts)
			tctx->exec_runtime += now - tctx->start_ts;
	}
	__sync_fetch_and_sub(&nr_running, 1);
}

/*
 * A higher sched class (RT, deadline, stop) took @cpu: what waits in its local
 * DSQ would wait behind it. Send those tasks through ops.enqueue() again
 * (SCX_ENQ_REENQ), so user space, or BPF for its own threads, places them anew,
 * and until the CPU comes back (ops.cpu_acquire) send decisions for it elsewhere.
 */
SEC("struct_ops/rl_cpu_release")
void BPF_PROG(rl_cpu_release, s32 cpu, struct scx_cpu_release_args *args)
{
	if (cpu >= 0 && cpu < RL_MAX_CPUS)
		cpu_taken[cpu] = 1;
	reenqueue_local();
}

SEC("struct_ops/rl_cpu_acquire")
void BPF_PROG(rl_cpu_acquire, s32 cpu, struct scx_cpu_acquire_args *args)
{
	if (cpu >= 0 && cpu < RL_MAX_CPUS)
		cpu_taken[cpu] = 0;
}

/*
 * @p leaves sched_ext. When it does so while it runs, as a thread that makes itself
 * real-time does, its CPU passes to a higher class (RT or deadline; fair too in partial
 * mode) with no context switch and no ops.cpu_release: mark the CPU taken here and,
 * when it is this CPU, send what waits in its local DSQ elsewhere. The kernel calls
 * this before it sets the new class and priority, so they cannot be checked. (The
 * ___v2 kfunc may be called from any context; on kernels without it ops.cpu_release
 * stays the only trigger.) Exiting tasks and our own detach are not a class change.
 */
SEC("struct_ops/rl_disable")
void BPF_PROG(rl_disable, struct task_struct *p)
{
	s32 cpu;

	if (detaching || (p->flags & PF_EXITING) || !scx_bpf_task_running(p))
		return;
	cpu = scx_bpf_task_cpu(p);
	if (cpu < 0 || cpu >= RL_MAX_CPUS)
		return;
	cpu_taken[cpu] = 1;
	if (cpu == (s32)bpf_get_smp_processor_id() &&
	    bpf_ksym_exists(scx_bpf_reenqueue_local___v2___compat))
		scx_bpf_reenqueue_local___v2___compat();
}

SEC("struct_ops/rl_set_cpumask")
void BPF_PROG(rl_set_cpumask, struct task_struct *p, const struct cpumask *cpumask)
{
	struct task_ctx *tctx = lookup_task_ctx(p);

	if (tctx)
		__sync_fetch_and_add(&tctx->cpumask_cnt, 1);
}

SEC("struct_ops/rl_init_task")
s32 BPF_PROG(rl_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	struct task_ctx *tctx;

	tctx = bpf_task_storage_get(&task_ctx_stor, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tctx)
		return -ENOMEM;
	tctx->idle_cpu = -1;
	tctx->last_cpu = -1;
	return 0;
}

SEC("struct_ops/rl_exit_task")
void BPF_PROG(rl_exit_task, struct task_struct *p, struct scx_exit_task_args *args)
{
	struct task_ctx *tctx = lookup_task_ctx(p);
	struct queued_task_ctx *rec;

	if (usersched_gone(p)) {
		step_aside();
		return;
	}
	if (!tctx || !tctx->reported)
		return;
	/* Tell user space the task is gone (cpu < 0); best effort when the ring is full. */
	rec = bpf_ringbuf_reserve(&queued, sizeof(*rec), 0);
	if (!rec)
		return;
	__builtin_memset(rec, 0, sizeof(*rec));
	rec->pid = p->pid;
	rec->cpu = -1;
	rec->tgid = p->tgid;
	submit_queued(rec);
	__sync_fetch_and_add(&nr_exit_events, 1);
}

SEC("struct_ops.s/rl_init")
s32 BPF_PROG(rl_init)
{
	struct stall_timer *st;
	u32 key = 0, cpu;
	s32 err;

	kfunc_generation = detect_kfunc_generation();
	err = scx_bpf_create_dsq(SHARED_DSQ, -1);
	if (!err)
		err = scx_bpf_create_dsq(SHARED_VTIME_DSQ, -1);
	if (err)
		return err;
	bpf_for(cpu, 0, scx_bpf_nr_cpu_ids()) {
		if (cpu >= RL_MAX_CPUS)
			break;
		err = scx_bpf_create_dsq(RESUME_DSQ + cpu, -1);
		if (err)
			return err;
	}

	st = bpf_map_lookup_elem(&stall_timer_map, &key);
	if (!st)
		return -ENOMEM;
	last_progress_ns = bpf_ktime_get_ns();
	bpf_timer_init(&st->timer, &stall_timer_map, CLOCK_MONOTONIC);
	bpf_timer_set_callback(&st->timer, stall_tick);
	return bpf_timer_start(&st->timer, STALL_TICK_NS, 0);
}

SEC("struct_ops/rl_exit")
void BPF_PROG(rl_exit, struct scx_exit_info *ei)
{
	struct stall_timer *st;
	u32 key = 0;

	st = bpf_map_lookup_elem(&stall_timer_map, &key);
	if (st)
		bpf_timer_cancel(&st->timer);
	exit_info.exit_code = ei->exit_code;
	bpf_probe_read_kernel_str(exit_info.reason, sizeof(exit_info.reason), ei->reason);
	bpf_probe_read_kernel_str(exit_info.msg, sizeof(exit_info.msg), ei->msg);
	if (ei->dump)
		bpf_probe_read_kernel_str(exit_info.dump, sizeof(exit_info.dump), ei->dump);
	/* Written last: user space treats a non-zero kind as "the rest is complete". */
	__sync_lock_test_and_set(&exit_info.kind, ei->kind);
}

SEC(".struct_ops.link")
struct sched_ext_ops userland_ops = {
	.select_cpu = (void *)rl_select_cpu,
	.enqueue = (void *)rl_enqueue,
	.dequeue = (void *)rl_dequeue,
	.dispatch = (void *)rl_dispatch,
	.runnable = (void *)rl_runnable,
	.running = (void *)rl_running,
	.stopping = (void *)rl_stopping,
	.set_cpumask = (void *)rl_set_cpumask,
	.cpu_release = (void *)rl_cpu_release,
	.cpu_acquire = (void *)rl_cpu_acquire,
	.disable = (void *)rl_disable,
	.init_task = (void *)rl_init_task,
	.exit_task = (void *)rl_exit_task,
	.init = (void *)rl_init,
	.exit = (void *)rl_exit,
	.timeout_ms = 5000,
	/* Two full `dispatched` samples per ops.dispatch() (room_for_a_sample()). */
	.dispatch_max_batch = 2 * RL_DISPATCH_BATCH_MAX,
	.name = "userland",
};
