/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Verdict accounting and the monitor's events: the per-CPU metrics (reason x
 * direction) and the records on the pilus_events ring buffer — drops, traces
 * at each observation point (as many as the aggregation level in
 * pilus_monconf wants), policy verdicts, and the opt-in debug messages and
 * captures. Only entry programs (and the helpers that decide policy for them)
 * call these; helpers below them return OK or -DROP_*.
 *
 * An entry program fills one struct notify as it learns about the packet
 * (who sent it, for whom, its conntrack state, the policy that decided) and
 * hands it to each send_*: every event of a packet tells the same story.
 */
#ifndef PILUS_EVENTS_H
#define PILUS_EVENTS_H

#include "common.h"
#include "config.h"
#include "maps.h"
#include "conntrack.h"
#include "ipcache.h"

/* What the events of one packet say besides the packet itself. */
struct notify {
	__u32 src_id;		/* 0 until known; looked up (ipcache) only to report */
	__u32 dst_id;
	__be32 saddr;		/* for those lookups; 0 before the packet was parsed */
	__be32 daddr;
	__u32 cookie;		/* the policy entry that decided, 0 if none */
	__u16 ep_id;		/* the endpoint the program runs for */
	__u16 dst_ep_id;	/* the local endpoint the packet is for */
	__u8 dir;		/* direction of the policy that decides (drops, verdicts) */
	__u8 ct_state;		/* CT_*, CT_UNKNOWN until conntrack was asked */
	__u8 _pad[2];
	__u32 aggregation;	/* MONITOR_AGG_* (pilus_monconf, read once per packet) */
	__u32 mflags;		/* MONITOR_F_* */
};

/* Starts the story of a packet: reads the monitor's settings once. With
 * trace events compiled out (CONFIG_TRACE_ENABLED 0) nothing but drops and
 * denials is ever sent, and the verifier removes the rest. */
static __always_inline void notify_init(struct notify *n, __u8 dir)
{
	__u32 zero = 0;
	struct monitor_config *cfg;

	__builtin_memset(n, 0, sizeof(*n));
	n->dir = dir;
	n->ct_state = CT_UNKNOWN;
	n->aggregation = MONITOR_AGG_MAXIMUM;
	if (!CONFIG_TRACE_ENABLED)
		return;
	cfg = bpf_map_lookup_elem(&pilus_monconf, &zero);
	if (cfg) {
		n->aggregation = cfg->aggregation;
		n->mflags = cfg->flags;
	}
}

static __always_inline void notify_addrs(struct notify *n, const struct pkt4 *p)
{
	n->saddr = p->tuple.saddr;
	n->daddr = p->tuple.daddr;
}

/* Both identities, for an event about to be sent: a trace of an established
 * flow never needed them for policy, so they are looked up here (and only
 * when the event is sent). */
static __always_inline void notify_identities(struct notify *n)
{
	if (!n->src_id && n->saddr)
		n->src_id = ipcache_identity(n->saddr);
	if (!n->dst_id && n->daddr)
		n->dst_id = ipcache_identity(n->daddr);
}

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

static __always_inline void event_count(bool lost)
{
	__u32 zero = 0;
	struct event_stats *st = bpf_map_lookup_elem(&pilus_evstats, &zero);

	if (!st)
		return;
	/* Per-CPU slot, as the metrics. */
	if (lost)
		st->lost++;
	else
		st->submitted++;
}

/*
 * A record on the ring for one event, its fields filled from `n` except
 * what only the program's context knows (orig_len, ifindex, hash and the
 * packet: the caller's, skb or XDP). NULL when the ring is full: the loss
 * is then counted, so it is never silent — one counter (pilus_evstats, per
 * CPU) for the monitor's in-sequence loss records and for
 * pilus_datapath_events_lost_total alike.
 */
static __always_inline struct event *event_reserve(const struct notify *n, __u8 kind,
						   __u8 subtype, __u8 obs, __u8 verdict,
						   __u32 arg1, __u32 arg2)
{
	struct event *ev = bpf_ringbuf_reserve(&pilus_events, sizeof(*ev), 0);

	if (!ev) {
		event_count(true);
		return NULL;
	}
	ev->kind = kind;
	ev->subtype = subtype;
	ev->obs_point = obs;
	ev->direction = n->dir;
	ev->ep_id = n->ep_id;
	ev->src_identity = n->src_id;
	ev->dst_identity = n->dst_id;
	ev->ktime_ns = bpf_ktime_get_ns();
	ev->ct_state = n->ct_state;
	ev->verdict = verdict;
	ev->dst_ep_id = n->dst_ep_id;
	ev->cpu = bpf_get_smp_processor_id();
	ev->_pad = 0;
	ev->cookie = n->cookie;
	ev->arg1 = arg1;
	ev->arg2 = arg2;
	return ev;
}

/* Submits a record event_reserve gave, waking the reader only when enough
 * is waiting: a wakeup per packet would cost more than the datapath itself. */
static __always_inline void event_submit(struct event *ev)
{
	__u64 flags;

	flags = bpf_ringbuf_query(&pilus_events, BPF_RB_AVAIL_DATA) >= CONFIG_EVENTS_WAKEUP_BYTES ?
		BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(ev, flags);
	event_count(false);
}

/*
 * Records one event of an skb program on the ring buffer, with the first
 * EVENT_CAPTURE_LEN bytes of the packet (debug messages carry none). A full
 * ring loses the event, and the loss is counted (per CPU) for the agent to
 * report.
 */
static __always_inline void emit_event(struct __sk_buff *ctx, const struct notify *n, __u8 kind,
				       __u8 subtype, __u8 obs, __u8 verdict, __u32 arg1, __u32 arg2)
{
	struct event *ev;
	__u32 cap = 0;

	ev = event_reserve(n, kind, subtype, obs, verdict, arg1, arg2);
	if (!ev)
		return;
	ev->orig_len = ctx->len;
	ev->ifindex = ctx->ifindex;
	ev->hash = ctx->hash;
	if (kind != EVENT_DEBUG) {
		cap = ctx->len;
		if (cap > EVENT_CAPTURE_LEN)
			cap = EVENT_CAPTURE_LEN;
		/* The helper takes a non-zero size the verifier can bound: 1..128. */
		if (cap == 0 || bpf_skb_load_bytes(ctx, 0, ev->data, cap) < 0)
			cap = 0;
	}
	ev->cap_len = cap;
	event_submit(ev);
}

/*
 * Turns a negative helper return into the verdict: counts it, reports it and
 * returns TC_ACT_SHOT. The one place a drop becomes visible (Cilium's
 * send_drop_notify). Drops are never aggregated.
 */
static __always_inline int send_drop(struct __sk_buff *ctx, int ret, struct notify *n, __u8 obs)
{
	__u32 reason = (__u32)(-ret);

	if (reason >= DROP_REASON_MAX)
		reason = DROP_REASON_MAX - 1;
	metrics_count(ctx, reason, n->dir);
	notify_identities(n);
	emit_event(ctx, n, EVENT_DROP, (__u8)reason, obs, 0, 0, 0);
	return TC_ACT_SHOT;
}

/* send_drop for a program that knows no more than this about the packet
 * (before it was parsed, or outside the IPv4 path). */
static __always_inline int send_drop_notify(struct __sk_buff *ctx, int ret, __u8 dir,
					    __u16 ep_id, __u32 src_id, __u32 dst_id, __u8 obs)
{
	struct notify n;

	notify_init(&n, dir);
	n.ep_id = ep_id;
	n.src_id = src_id;
	n.dst_id = dst_id;
	return send_drop(ctx, ret, &n, obs);
}

/* The receive-side observation points, which every level but none hides
 * (Cilium's TRACE_AGGREGATE_RX): the point that forwards the packet reports
 * it anyway. */
static __always_inline bool obs_is_receive(__u8 obs)
{
	return obs == OBS_FROM_ENDPOINT || obs == OBS_FROM_STACK || obs == OBS_FROM_OVERLAY ||
	       obs == OBS_FROM_NETWORK || obs == OBS_FROM_HOST;
}

/*
 * Whether the flow of entry `e` has news in this packet's direction since its
 * last reported trace (medium and maximum; see MONITOR_AGG_* in abi.h), and
 * if so remembers that it was reported. Two CPUs racing on one flow may both
 * report: a duplicate trace, never a missing one.
 */
static __always_inline bool ct_has_news(struct ct_entry *e, bool reply, __u32 now, __u32 level)
{
	__u8 seen = (reply ? e->rx_tcp_flags : e->tx_tcp_flags) & MONITOR_REPORT_FLAGS;
	__u8 reported = reply ? e->rx_flags_reported : e->tx_flags_reported;
	__u16 last = reply ? e->last_rx_report : e->last_tx_report;
	bool news;

	news = !(reported & MONITOR_REPORTED_ONCE) ||
	       seen != (reported & MONITOR_REPORT_FLAGS);
	/* Seconds mod 65536: the difference is right across the wrap. */
	if (!news && level == MONITOR_AGG_MEDIUM)
		news = (__u16)((__u16)now - last) >= MONITOR_REPORT_INTERVAL;
	if (!news)
		return false;
	if (reply) {
		e->rx_flags_reported = seen | MONITOR_REPORTED_ONCE;
		e->last_rx_report = (__u16)now;
	} else {
		e->tx_flags_reported = seen | MONITOR_REPORTED_ONCE;
		e->last_tx_report = (__u16)now;
	}
	return true;
}

/*
 * Whether the aggregation level wants a trace of this packet at `obs`.
 * `e` is the packet's conntrack entry (NULL when it has none: a new flow, or
 * a program that does not track), `now` the conntrack clock.
 */
static __always_inline bool trace_wanted(const struct notify *n, __u8 obs, struct ct_entry *e,
					 __u32 now)
{
	if (!CONFIG_TRACE_ENABLED)
		return false;
	if (n->aggregation == MONITOR_AGG_NONE)
		return true;
	if (obs_is_receive(obs))
		return false;
	if (n->aggregation == MONITOR_AGG_LOW)
		return true;
	if (n->ct_state == CT_NEW || n->ct_state == CT_RELATED || !e)
		return true;
	return ct_has_news(e, n->ct_state == CT_REPLY, now, n->aggregation);
}

/* Reports the packet at observation point `obs` (no counting: a receive
 * point is followed by the point that forwards or drops the packet). */
static __always_inline void send_trace(struct __sk_buff *ctx, struct notify *n, __u8 obs,
				       struct ct_entry *e, __u32 now)
{
	if (!trace_wanted(n, obs, e, now))
		return;
	notify_identities(n);
	emit_event(ctx, n, EVENT_TRACE, 0, obs, 0, 0, 0);
}

/* Counts a forwarded packet and reports where it went. */
static __always_inline void send_trace_notify(struct __sk_buff *ctx, struct notify *n, __u8 obs,
					      struct ct_entry *e, __u32 now)
{
	metrics_count(ctx, METRIC_FORWARDED, n->dir);
	send_trace(ctx, n, obs, e, now);
}

/*
 * Reports a policy decision of `dir` (`ret`: OK or -DROP_*) with its match
 * level and the deciding entry's cookie, which stays in `n` for the drop
 * that may follow. Denials are always reported; allows unless trace events
 * are compiled out (they come once per new flow, never per packet).
 */
static __always_inline void send_policy_verdict(struct __sk_buff *ctx, struct notify *n, __u8 dir,
						int ret, __u8 match, __u32 cookie)
{
	__u8 saved = n->dir;

	n->cookie = cookie;
	if (ret >= 0 && !CONFIG_TRACE_ENABLED)
		return;
	n->dir = dir;
	notify_identities(n);
	emit_event(ctx, n, EVENT_POLICY_VERDICT, match, OBS_FROM_ENDPOINT,
		   ret < 0 ? VERDICT_DENY : VERDICT_ALLOW, 0, 0);
	n->dir = saved;
}

/* An opt-in debug message (MONITOR_F_DEBUG): DBG_* with its arguments. */
static __always_inline void send_debug(struct __sk_buff *ctx, const struct notify *n, __u8 dbg,
				       __u32 arg1, __u32 arg2)
{
	if (CONFIG_TRACE_ENABLED && (n->mflags & MONITOR_F_DEBUG))
		emit_event(ctx, n, EVENT_DEBUG, dbg, 0, 0, arg1, arg2);
}

/* An opt-in capture (MONITOR_F_CAPTURE) of the packet as it leaves for
 * `ifindex` (0: the stack), after every rewrite. */
static __always_inline void send_capture(struct __sk_buff *ctx, const struct notify *n,
					 __u32 ifindex)
{
	if (CONFIG_TRACE_ENABLED && (n->mflags & MONITOR_F_CAPTURE))
		emit_event(ctx, n, EVENT_CAPTURE, CAPTURE_DELIVERY, 0, 0, ifindex, 0);
}

#endif /* PILUS_EVENTS_H */
