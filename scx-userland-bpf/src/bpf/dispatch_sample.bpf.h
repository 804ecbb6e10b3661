/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * dispatch_sample.bpf.h - how a `dispatched` user ring sample is read: 1 to
 * RL_DISPATCH_BATCH_MAX dispatched_task_ctx records back to back, copied once into
 * a per-CPU scratch so the dynptr is not needed (nor kept live) while the records
 * are carried out. Shared by main.bpf.c and the channel benchmark, so the benchmark
 * drains exactly as the scheduler does.
 */
#ifndef __SCX_USERLAND_DISPATCH_SAMPLE_BPF_H
#define __SCX_USERLAND_DISPATCH_SAMPLE_BPF_H

extern __u32 bpf_dynptr_size(const struct bpf_dynptr *p) __ksym;

struct dispatch_scratch {
	struct dispatched_task_ctx rec[RL_DISPATCH_BATCH_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct dispatch_scratch);
} dispatch_scratch SEC(".maps");

/*
 * Copy the sample behind @dynptr into this CPU's scratch. Returns it, with the
 * number of records in *@n, or NULL for a sample that is not a whole number of
 * records (1 to RL_DISPATCH_BATCH_MAX).
 */
static __always_inline struct dispatch_scratch *copy_sample(struct bpf_dynptr *dynptr, u32 *n)
{
	const u32 rec = sizeof(struct dispatched_task_ctx);
	u32 size = bpf_dynptr_size(dynptr), zero = 0;
	struct dispatch_scratch *buf;

	*n = size / rec;
	buf = bpf_map_lookup_elem(&dispatch_scratch, &zero);
	if (!buf || !*n || size > sizeof(buf->rec) || *n * rec != size ||
	    bpf_dynptr_read(buf->rec, size, dynptr, 0, 0))
		return NULL;
	return buf;
}

#endif /* __SCX_USERLAND_DISPATCH_SAMPLE_BPF_H */
