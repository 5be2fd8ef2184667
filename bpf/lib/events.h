/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Verdict accounting: the per-CPU metrics (reason x direction) and the
 * drop/trace records on the pilus_events ring buffer. Only entry programs call
 * these; helpers below them return OK or -DROP_*.
 */
#ifndef PILUS_EVENTS_H
#define PILUS_EVENTS_H

#include "common.h"
#include "config.h"
#include "maps.h"

static __always_inline void metrics_count(struct __sk_buff *ctx, __u32 reason, __u8 dir)
{
	__u32 idx = METRICS_INDEX(reason, dir);
	struct metrics_value *m;

	m = bpf_map_lookup_elem(&pilus_metrics, &idx);
	if (m) {
		/* Per-CPU slot: no other CPU writes it, no atomics needed. */
		m->packets++;
		m->bytes += ctx->len;
	}
}

/* Records one packet on the ring buffer. Wakes the reader only when enough
 * is waiting: a wakeup per packet would cost more than the datapath itself. */
static __always_inline void emit_event(struct __sk_buff *ctx, __u8 type, __u8 subtype,
				       __u8 obs, __u8 dir, __u16 ep_id,
				       __u32 src_id, __u32 dst_id)
{
	struct event *ev;
	__u32 cap;
	__u64 flags;

	ev = bpf_ringbuf_reserve(&pilus_events, sizeof(*ev), 0);
	if (!ev) {
		/* The reader fell behind and the ring is full: count the loss, so
		 * it is never silent (pilus_datapath_events_lost_total). */
		metrics_count(ctx, METRIC_EVENTS_LOST, dir);
		return;
	}
	ev->kind = type;
	ev->subtype = subtype;
	ev->obs_point = obs;
	ev->direction = dir;
	ev->ep_id = ep_id;
	ev->orig_len = ctx->len;
	ev->ifindex = ctx->ifindex;
	ev->src_identity = src_id;
	ev->dst_identity = dst_id;
	ev->ktime_ns = bpf_ktime_get_ns();

	cap = ctx->len;
	if (cap > EVENT_CAPTURE_LEN)
		cap = EVENT_CAPTURE_LEN;
	/* The helper takes a non-zero size the verifier can bound: 1..128. */
	if (cap == 0 || bpf_skb_load_bytes(ctx, 0, ev->data, cap) < 0)
		cap = 0;
	ev->cap_len = cap;

	flags = bpf_ringbuf_query(&pilus_events, BPF_RB_AVAIL_DATA) >= CONFIG_EVENTS_WAKEUP_BYTES ?
		BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(ev, flags);
}

/*
 * Turns a negative helper return into the verdict: counts it, reports it and
 * returns TC_ACT_SHOT. The one place a drop becomes visible (Cilium's
 * send_drop_notify).
 */
static __always_inline int send_drop_notify(struct __sk_buff *ctx, int ret, __u8 dir,
					    __u16 ep_id, __u32 src_id, __u32 dst_id, __u8 obs)
{
	__u32 reason = (__u32)(-ret);

	if (reason >= DROP_REASON_MAX)
		reason = DROP_REASON_MAX - 1;
	metrics_count(ctx, reason, dir);
	emit_event(ctx, EVENT_DROP, (__u8)reason, obs, dir, ep_id, src_id, dst_id);
	return TC_ACT_SHOT;
}

/* Counts a forwarded packet and, when tracing is on, reports where it went. */
static __always_inline void send_trace_notify(struct __sk_buff *ctx, __u8 obs, __u8 dir,
					      __u16 ep_id, __u32 src_id, __u32 dst_id)
{
	metrics_count(ctx, METRIC_FORWARDED, dir);
	if (CONFIG_TRACE_ENABLED)
		emit_event(ctx, EVENT_TRACE, 0, obs, dir, ep_id, src_id, dst_id);
}

#endif /* PILUS_EVENTS_H */
