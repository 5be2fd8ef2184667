/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The ingress side of a pod: whether a packet needs a policy decision,
 * delivery to a local pod with its events, and delivery of a packet that
 * came from another node (through the tunnel or the underlay), judged with
 * the sender's identity.
 */
#ifndef PILUS_INGRESS_H
#define PILUS_INGRESS_H

#include "common.h"
#include "config.h"
#include "conntrack.h"
#include "lxc.h"
#include "policy.h"
#include "events.h"
#include "lb.h"

/* Does this packet need a policy decision? Replies and related ICMP errors of
 * an allowed flow never do; an established flow does again once after every
 * policy change (its entry remembers the revision it was allowed at). */
static __always_inline bool needs_policy(int ct_status, const struct ct_entry *e, __u32 rev)
{
	if (ct_status == CT_NEW)
		return true;
	if (ct_status == CT_ESTABLISHED && e)
		return e->policy_rev != rev;
	return false;
}

/*
 * Delivers a packet to local endpoint `dst` (ipv4_local_delivery) and
 * reports it: the opt-in debug message before, the to-endpoint trace and
 * capture of the rewritten packet after. `e` is the flow's conntrack entry
 * (NULL for a new flow). Returns TC_ACT_REDIRECT or -DROP_*.
 */
static __always_inline int ipv4_deliver_reported(struct __sk_buff *ctx,
						 const struct endpoint_info *dst,
						 struct notify *n, struct ct_entry *e, __u32 now)
{
	int ret;

	send_debug(ctx, n, DBG_LOCAL_DELIVERY, dst->ep_id, n->src_id);
	ret = ipv4_local_delivery(ctx, dst);
	if (ret < 0)
		return ret;
	send_trace_notify(ctx, n, OBS_TO_ENDPOINT, e, now);
	send_capture(ctx, n, dst->ifindex);
	return ret;
}

/*
 * A packet from another node for local endpoint `ep`, sent by a peer of
 * identity n->src_id: conntrack, `ep`'s ingress policy (its verdict
 * reported), then local delivery. A reply from a service's backend on that
 * node is reverse-NATed here, before the client sees it. `rev_nat`: the
 * frontend a new flow was translated from (a NodePort), 0 if none. Returns
 * TC_ACT_REDIRECT or -DROP_*; `n` carries the flow's state to the drop
 * event, if any.
 */
static __always_inline int ipv4_deliver_from_node(struct __sk_buff *ctx, const struct pkt4 *p,
						  const struct endpoint_info *ep, struct notify *n,
						  __u32 rev_nat)
{
	struct policy_match m = {};
	struct ct_entry *entry;
	__u32 now, rev;
	int ret, ct_status;

	now = bpf_mono_now();
	ct_status = ct_lookup4(p, ctx->len, now, &entry);
	n->ct_state = ct_status;
	send_debug(ctx, n, DBG_CT_VERDICT, ct_status, 0);
	rev = policy_revision();
	if (needs_policy(ct_status, entry, rev)) {
		if (ep->flags & EP_F_INGRESS_ENFORCED) {
			ret = policy_can_access(ep->ep_id, DIR_INGRESS, n->src_id, p->tuple.protocol,
						p->policy_port, &m);
			send_policy_verdict(ctx, n, DIR_INGRESS, ret, m.level, m.cookie);
			if (ret < 0)
				return ret;
		}
		if (ct_status == CT_NEW) {
			ret = ct_create4(p, ctx->len, now, n->src_id, rev, rev_nat);
			if (ret < 0)
				return ret;
		} else if (entry) {
			entry->policy_rev = rev;
		}
	}
	ret = lb4_rev_nat(ctx, p, entry, ct_status);
	if (ret < 0)
		return ret;
	return ipv4_deliver_reported(ctx, ep, n, entry, now);
}

#endif /* PILUS_INGRESS_H */
