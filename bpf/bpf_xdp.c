// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The XDP prefilter on the node's uplink (seed 001): IPv4 packets whose
 * source is on the deny list (pilus_prefilter, an LPM trie that
 * `pilus prefilter update|delete` changes at run time) are dropped before
 * the kernel allocates an skb for them. Everything else passes untouched to
 * the tc programs and the stack.
 *
 * A drop is counted and reported as every other drop is: the per-CPU
 * metrics slot (DROP_PREFILTER, ingress), a drop event on the ring (a loss
 * counted in pilus_evstats, as every loss), and the entry's own counters
 * for `pilus prefilter list`. The skb helpers of events.h cannot take an
 * xdp_md: the count and the packet's part of the event are written here for
 * XDP's context, the rest of the record is events.h's.
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/maps.h"
#include "lib/ipcache.h"
#include "lib/events.h"

#include <linux/ip.h>

static __always_inline void xdp_count_drop(__u32 len)
{
	__u32 idx = METRICS_INDEX(DROP_PREFILTER, DIR_INGRESS);
	struct metrics_value *m;

	m = bpf_map_lookup_elem(&pilus_metrics, &idx);
	if (m) {
		m->packets++;
		m->bytes += len;
	}
}

/* The drop event: events.h's record, with what XDP's context knows. */
static __always_inline void xdp_emit_drop(struct xdp_md *ctx, __u32 len, __u32 src_id)
{
	struct notify n;
	struct event *ev;
	__u64 cap;

	notify_init(&n, DIR_INGRESS);
	n.src_id = src_id;
	ev = event_reserve(&n, EVENT_DROP, DROP_PREFILTER, OBS_FROM_NETWORK, 0, 0, 0);
	if (!ev)
		return;
	ev->orig_len = len;
	ev->ifindex = ctx->ingress_ifindex;
	ev->hash = 0;	/* no skb yet, so no hash */
	cap = len;
	if (cap > EVENT_CAPTURE_LEN)
		cap = EVENT_CAPTURE_LEN;
	/* clang compares in 32 bits and the verifier then knows nothing of the
	 * upper half; the helper's size must be bounded in all 64. */
	asm volatile("%0 &= 0xff" : "+r"(cap));
	if (cap == 0 || bpf_xdp_load_bytes(ctx, 0, ev->data, cap) < 0)
		cap = 0;
	ev->cap_len = cap;
	event_submit(ev);
}

/*
 * Attachment/entry point is XDP on the node's uplink.
 * It corresponds to every frame arriving from the network, before tc's
 * from-netdev. A malformed or non-IPv4 frame is not the prefilter's to
 * judge: it passes, and the stack (or from-netdev) decides.
 */
SEC("xdp")
int xdp_prefilter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct prefilter_key key = { .prefix_len = 32 };
	struct prefilter_value *hit;
	struct iphdr *ip;
	__u32 len;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return XDP_PASS;
	key.ip4 = ip->saddr;
	hit = bpf_map_lookup_elem(&pilus_prefilter, &key);
	if (!hit)
		return XDP_PASS;
	len = (__u32)(data_end - data);
	__sync_fetch_and_add(&hit->packets, 1);
	__sync_fetch_and_add(&hit->bytes, len);
	xdp_count_drop(len);
	xdp_emit_drop(ctx, len, ipcache_identity(ip->saddr));
	return XDP_DROP;
}

char __license[] SEC("license") = "Dual BSD/GPL";
