// SPDX-License-Identifier: GPL-2.0-only
/*
 * channel.bpf.c - the BPF ends of the user<->BPF channel, for the benchmarks.
 *
 * Two pairs of rings with the layouts of the real scheduler (intf.h): `dispatched`
 * and `dispatched_base` are user rings (user space produces, BPF drains), `queued`
 * and `queued_base` are BPF ring buffers (BPF produces, user space consumes).  The
 * scx-userland path and the plain libbpf-rs baseline get a pair each, so neither
 * ever sees the other's producer or consumer position.
 *
 * Every program is SEC("syscall"), run by user space with BPF_PROG_TEST_RUN: no
 * sched_ext is needed.  The drain programs do per record what ops.dispatch() of
 * the real component does short of the sched_ext kfuncs (read the record, look
 * the task up, validate the target, clamp the slice, count); the produce programs
 * fill in a queued_task_ctx per record the way ops.enqueue() does.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "intf.h"
/* The real component's way of reading a `dispatched` sample. */
#include "dispatch_sample.bpf.h"

char _license[] SEC("license") = "GPL";

/* Must match the Rust side (benches/src/lib.rs). */
#define RING_BYTES (256 * 1024)
#define NR_TASKS 1024
#define FIRST_PID 1000
#define MAX_PRODUCE 4096

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, RING_BYTES);
} dispatched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, RING_BYTES);
} dispatched_base SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RING_BYTES);
} queued SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RING_BYTES);
} queued_base SEC(".maps");

/* What the dispatcher knows about a task (the real one keeps it in task storage). */
struct bench_task {
	u64 cpumask_cnt;
	u64 slice_total;
	u64 vtime;
	u64 nr_dispatched;
	s32 last_cpu;
	/* RL_DF_* of the last dispatch. */
	u32 last_flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NR_TASKS);
	__type(key, s32);
	__type(value, struct bench_task);
} tasks SEC(".maps");

/* Counters, one struct so user space can read it at a fixed layout (benches/src/lib.rs). */
struct bench_stats {
	u64 dispatch_records;
	u64 dispatch_read_errors;
	u64 dispatch_unknown;
	u64 dispatch_bounced;
	u64 dispatch_ok;
	u64 drain_errors;
	u64 queued_records;
	u64 queued_full;
	/* Advances with every produced record, so consecutive runs describe other tasks. */
	u64 produce_seq;
};

/* The only variable in .bss: its layout is the struct's. */
struct bench_stats stats;
/* Set by user space between runs; the only variable in .data (benches/src/lib.rs). */
struct bench_config {
	/*
	 * Flags of bpf_user_ringbuf_drain() and bpf_ringbuf_submit() on the scx-userland
	 * rings and on the baseline's: 0 wakes user space up through irq_work,
	 * BPF_RB_NO_WAKEUP does not.
	 */
	u64 ours_flags;
	u64 base_flags;
	/* Largest valid CPU id + 1 (the real component asks scx_bpf_nr_cpu_ids()). */
	u32 nr_cpu_ids;
	/*
	 * main.bpf.c's `usersched_sleeping`: after each record, our producer wakes user
	 * space only if it sleeps. The benchmark's consumer never sleeps: always 0.
	 */
	u32 consumer_sleeping;
};

volatile struct bench_config bench_config = {
	.ours_flags = 0,
	.base_flags = 0,
	.nr_cpu_ids = 64,
};

extern void *bpf_dynptr_slice(const struct bpf_dynptr *p, __u32 offset, void *buffer__opt,
			      __u32 buffer__szk) __ksym;

/* One decision: what the real dispatch_one() does, short of the sched_ext kfuncs. */
static __always_inline int dispatch_one(const struct dispatched_task_ctx *d)
{
	s32 cpu = d->cpu, pid = d->pid;
	struct bench_task *t;
	u64 slice;

	t = bpf_map_lookup_elem(&tasks, &pid);
	if (!t) {
		__sync_fetch_and_add(&stats.dispatch_unknown, 1);
		return 0;
	}

	slice = d->slice_ns ? d->slice_ns : RL_SLICE_DFL_NS;
	if (slice > RL_SLICE_MAX_NS)
		slice = RL_SLICE_MAX_NS;
	if (cpu >= 0 && (d->cpumask_cnt != t->cpumask_cnt || (u32)cpu >= bench_config.nr_cpu_ids)) {
		__sync_fetch_and_add(&stats.dispatch_bounced, 1);
		cpu = RL_CPU_ANY;
	}

	t->last_cpu = cpu;
	t->slice_total += slice;
	if (cpu < 0 && d->vtime)
		t->vtime = d->vtime;
	t->last_flags = d->flags;
	t->nr_dispatched++;
	return 1;
}

/* What one drain did, added to `stats` once at its end (as ops.dispatch() does). */
struct drain_tally {
	u64 records;
	u64 ok;
};

static __always_inline void tally_one(const struct dispatched_task_ctx *d, struct drain_tally *tally)
{
	tally->ok += dispatch_one(d);
	tally->records++;
}

/*
 * One `dispatched` sample of ours: 1 to RL_DISPATCH_BATCH_MAX records back to back,
 * read as the real handle_dispatch() reads it (one copy, then each record).
 */
static long handle_dispatch(struct bpf_dynptr *dynptr, void *ctx)
{
	struct drain_tally *tally = ctx;
	struct dispatch_scratch *buf;
	u32 n, i;

	buf = copy_sample(dynptr, &n);
	if (!buf) {
		__sync_fetch_and_add(&stats.dispatch_read_errors, 1);
		return 0;
	}
	bpf_for(i, 0, n) {
		if (i >= RL_DISPATCH_BATCH_MAX)
			break;
		tally_one(&buf->rec[i], tally);
	}
	return 0;
}

/*
 * One sample of the baseline's: a single record, read the fastest way there is for
 * one (in place, no copy).
 */
static long handle_dispatch_base(struct bpf_dynptr *dynptr, void *ctx)
{
	struct drain_tally *tally = ctx;
	const struct dispatched_task_ctx *d = bpf_dynptr_slice(dynptr, 0, NULL, sizeof(*d));

	if (!d) {
		__sync_fetch_and_add(&stats.dispatch_read_errors, 1);
		return 0;
	}
	tally_one(d, tally);
	return 0;
}

/* The callback is a constant of bpf_user_ringbuf_drain(): one macro use per ring. */
#define DRAIN(ring, cb, flags)								\
	({										\
		struct drain_tally tally = {};						\
		long n = bpf_user_ringbuf_drain(ring, cb, &tally, flags);		\
											\
		if (n < 0)								\
			__sync_fetch_and_add(&stats.drain_errors, 1);			\
		__sync_fetch_and_add(&stats.dispatch_records, tally.records);		\
		__sync_fetch_and_add(&stats.dispatch_ok, tally.ok);			\
		(int)tally.records;							\
	})

/* Drain everything user space published; returns the number of records. */
SEC("syscall")
int drain_dispatched(void *ctx)
{
	return DRAIN(&dispatched, handle_dispatch, bench_config.ours_flags);
}

SEC("syscall")
int drain_dispatched_base(void *ctx)
{
	return DRAIN(&dispatched_base, handle_dispatch_base, bench_config.base_flags);
}

/* BPF_PROG_TEST_RUN context of the produce programs. */
struct produce_args {
	/* Records to produce (at most MAX_PRODUCE). */
	u32 n;
	u32 __pad;
};

struct produce_state {
	u64 seq;
	u64 now;
	u32 produced;
};

/* Fill in one `queued` record field by field, like ops.enqueue() does. */
static __always_inline void fill_queued(struct queued_task_ctx *rec, u64 seq, u64 now)
{
	s32 pid = FIRST_PID + (s32)(seq % NR_TASKS);

	rec->pid = pid;
	rec->cpu = seq & 1;
	rec->tgid = pid;
	rec->nr_cpus_allowed = 2;
	rec->cpumask_cnt = pid;
	rec->enq_flags = 1;
	rec->sum_exec_runtime = seq * 1000;
	rec->exec_runtime = 500;
	rec->weight = 100;
	rec->start_ts = now - 2000;
	rec->stop_ts = now - 1000;
	rec->enq_ts = now;
	rec->vtime = seq;
	rec->flags = RL_QF_WAKEUP;
	rec->prev_cpu = seq & 1;
	/* "bench", NUL-padded, as two little-endian words. */
	*(u64 *)&rec->comm[0] = 0x68636e6562ULL;
	*(u64 *)&rec->comm[8] = 0;
	rec->last_burst_ns = 700;
}

/*
 * The ring is a map, which the verifier wants as a constant in bpf_ringbuf_reserve():
 * one bpf_loop() callback and one program per ring.
 */
#define DEFINE_PRODUCER(prog, ring, flags, wake_sleeper)						\
	static long prog##_one(u64 i, void *data)					\
	{										\
		struct produce_state *st = data;					\
		struct queued_task_ctx *rec;						\
											\
		rec = bpf_ringbuf_reserve(&ring, sizeof(*rec), 0);			\
		if (!rec) {								\
			__sync_fetch_and_add(&stats.queued_full, 1);			\
			return 1;							\
		}									\
		fill_queued(rec, st->seq + i, st->now);					\
		bpf_ringbuf_submit(rec, flags);						\
		if ((wake_sleeper) && bench_config.consumer_sleeping) {			\
			/* What main.bpf.c does when the scheduler sleeps. */		\
			void *w = bpf_ringbuf_reserve(&ring, 8, 0);			\
											\
			if (w)								\
				bpf_ringbuf_discard(w, BPF_RB_FORCE_WAKEUP);		\
		}									\
		st->produced++;								\
		return 0;								\
	}										\
											\
	/* Produce args->n records into `ring`; returns how many fit. */		\
	SEC("syscall")									\
	int prog(struct produce_args *args)						\
	{										\
		struct produce_state st = {						\
			.seq = stats.produce_seq,						\
			.now = bpf_ktime_get_ns(),					\
			.produced = 0,							\
		};									\
		u32 n = args->n;							\
											\
		if (n > MAX_PRODUCE)							\
			n = MAX_PRODUCE;						\
		bpf_loop(n, prog##_one, &st, 0);					\
		stats.produce_seq += st.produced;						\
		__sync_fetch_and_add(&stats.queued_records, st.produced);		\
		return st.produced;							\
	}

DEFINE_PRODUCER(produce_queued, queued, bench_config.ours_flags, true)
DEFINE_PRODUCER(produce_queued_base, queued_base, bench_config.base_flags, false)
