// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Programs on the node's uplink (the underlay device): in direct-routing
 * mode, where pod CIDRs are routed between nodes without encapsulation, a
 * packet from a pod on another node carries no identity on the wire: the
 * ipcache, which the cluster store fills with every pod's address and
 * identity, says who sent it (seed 003's path). With masquerade on (either
 * routing mode), pods' traffic to the outside leaves from the node's address
 * (to_netdev) and its replies are translated back (from_netdev), lib/nat.h.
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/ipv4.h"
#include "lib/conntrack.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/lxc.h"
#include "lib/lb.h"
#include "lib/ingress.h"
#include "lib/nat.h"

/*
 * Attachment/entry point is ingress for the node's uplink.
 * It corresponds to packets arriving from the network: a reply to a
 * masqueraded flow is first translated back to its pod; then, for a local
 * pod, they go straight to it, judged by its ingress policy (reported at
 * from-network and to-endpoint); the rest to the stack.
 */
SEC("classifier")
int from_netdev(struct __sk_buff *ctx)
{
	struct endpoint_info *ep = NULL;
	void *data, *data_end;
	struct pkt4 p = {};
	struct notify n;
	int ret;

	if (!ctx_pull(ctx, ETH_HLEN, &data, &data_end))
		return TC_ACT_OK;
	if (bpf_ntohs(((struct ethhdr *)data)->h_proto) != ETH_P_IP)
		/* ARP, and whatever else the node itself speaks. */
		return TC_ACT_OK;
	ret = ipv4_parse(ctx, &p);
	if (ret < 0)
		/* Not ours to judge: the node's own stack decides. */
		return TC_ACT_OK;
	if (CONFIG_NAT_IP4 && p.tuple.daddr == CONFIG_NAT_IP4) {
		ret = nat4_rev_snat(ctx, &p, bpf_mono_now());
		if (ret < 0) {
			notify_init(&n, DIR_INGRESS);
			notify_addrs(&n, &p);
			return send_drop(ctx, ret, &n, OBS_FROM_NETWORK);
		}
	}
	ep = lookup_ep_by_ip(p.tuple.daddr);
	if (!ep)
		return TC_ACT_OK;
	notify_init(&n, DIR_INGRESS);
	notify_addrs(&n, &p);
	n.ep_id = ep->ep_id;
	n.dst_ep_id = ep->ep_id;
	n.dst_id = ep->sec_identity;
	n.src_id = ipcache_identity(p.tuple.saddr);
	send_trace(ctx, &n, OBS_FROM_NETWORK, NULL, 0);
	ret = ipv4_deliver_from_node(ctx, &p, ep, &n);
	if (ret < 0)
		return send_drop(ctx, ret, &n, OBS_FROM_NETWORK);
	return ret;
}

/*
 * The conntrack state of a packet leaving through the uplink, as the pod's
 * program left it (read only: that program tracked the packet already). Its
 * entry was made by this very packet when it has counted one packet and no
 * reply.
 */
static __always_inline __u8 ct_state_seen(const struct pkt4 *p)
{
	struct ct_key4 rev;
	struct ct_entry *e;
	__u32 now = bpf_mono_now();

	e = ct_find(&p->tuple, now);
	if (e)
		return e->tx_packets <= 1 && !(e->flags & CT_F_SEEN_REPLY) ? CT_NEW :
									      CT_ESTABLISHED;
	ct_key_reverse(&p->tuple, &rev);
	if (ct_find(&rev, now))
		return CT_REPLY;
	return CT_UNKNOWN;
}

/* Reports a pod's packet leaving through the uplink (to-network), as it
 * left the pod (before masquerade). */
static __always_inline void to_netdev_trace(struct __sk_buff *ctx, const struct pkt4 *p,
					    struct notify *n)
{
	/* The pod's program traced this packet's flow news already (to-stack);
	 * this point has no conntrack update of its own, so at medium and
	 * maximum it reports a flow's first packet and its SYN, FIN and RST
	 * segments only. */
	n->ct_state = ct_state_seen(p);
	if (n->aggregation >= MONITOR_AGG_MEDIUM && n->ct_state != CT_NEW &&
	    !(p->tcp_flags & MONITOR_REPORT_FLAGS))
		return;
	send_trace(ctx, n, OBS_TO_NETWORK, NULL, 0);
}

/*
 * Attachment/entry point is egress for the node's uplink.
 * It corresponds to packets leaving the node: pods' traffic to other nodes
 * (direct routing) and to the outside is observed here (to-network), and
 * the latter masqueraded (SNAT to the node's address) when that is on.
 */
SEC("classifier")
int to_netdev(struct __sk_buff *ctx)
{
	void *data, *data_end;
	struct pkt4 p = {};
	struct endpoint_info *ep;
	struct notify n;
	int ret;

	if (!CONFIG_TRACE_ENABLED && !CONFIG_NAT_IP4)
		return TC_ACT_OK;
	if (!ctx_pull(ctx, ETH_HLEN, &data, &data_end) ||
	    bpf_ntohs(((struct ethhdr *)data)->h_proto) != ETH_P_IP || ipv4_parse(ctx, &p) < 0)
		return TC_ACT_OK;
	ep = lookup_ep_by_ip(p.tuple.saddr);
	if (!ep)
		return TC_ACT_OK;
	notify_init(&n, DIR_EGRESS);
	notify_addrs(&n, &p);
	n.ep_id = ep->ep_id;
	n.src_id = ep->sec_identity;
	if (CONFIG_TRACE_ENABLED)
		to_netdev_trace(ctx, &p, &n);
	/* Pod to pod and pod to node keep the pod's address: only the
	 * outside sees the node's. */
	if (CONFIG_NAT_IP4 && nat4_handles(&p, ICMP_ECHO) && nat4_outside(p.tuple.daddr)) {
		ret = nat4_snat(ctx, &p, bpf_mono_now());
		if (ret < 0)
			return send_drop(ctx, ret, &n, OBS_TO_NETWORK);
	}
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual BSD/GPL";
