/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The ingress side of a pod: whether a packet needs a policy decision, and
 * delivery to a local pod of a packet that came from another node (through
 * the tunnel or the underlay), judged with the sender's identity.
 */
#ifndef PILUS_INGRESS_H
#define PILUS_INGRESS_H

#include "common.h"
#include "config.h"
#include "conntrack.h"
#include "lxc.h"
#include "policy.h"
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
 * A packet from another node for local endpoint `ep`, sent by a peer of
 * identity `src_id`: conntrack, `ep`'s ingress policy, then local delivery.
 * A reply from a service's backend on that node is reverse-NATed here, before
 * the client sees it. Returns TC_ACT_REDIRECT or -DROP_*.
 */
static __always_inline int ipv4_deliver_from_node(struct __sk_buff *ctx, const struct pkt4 *p,
						  const struct endpoint_info *ep, __u32 src_id)
{
	struct ct_entry *entry;
	__u32 now, rev, cookie = 0;
	int ret, ct_status;

	now = bpf_mono_now();
	ct_status = ct_lookup4(p, ctx->len, now, &entry);
	rev = policy_revision();
	if (needs_policy(ct_status, entry, rev)) {
		if (ep->flags & EP_F_INGRESS_ENFORCED) {
			ret = policy_can_access(ep->ep_id, DIR_INGRESS, src_id, p->tuple.protocol,
						p->policy_port, &cookie);
			if (ret < 0)
				return ret;
		}
		if (ct_status == CT_NEW) {
			ret = ct_create4(p, ctx->len, now, src_id, rev, 0);
			if (ret < 0)
				return ret;
		} else if (entry) {
			entry->policy_rev = rev;
		}
	}
	ret = lb4_rev_nat(ctx, p, entry, ct_status);
	if (ret < 0)
		return ret;
	return ipv4_local_delivery(ctx, ep);
}

#endif /* PILUS_INGRESS_H */
