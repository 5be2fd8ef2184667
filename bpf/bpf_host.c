// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Programs on the node's uplink (the underlay device): in direct-routing
 * mode, where pod CIDRs are routed between nodes without encapsulation, a
 * packet from a pod on another node carries no identity on the wire: the
 * ipcache, which the cluster store fills with every pod's address and
 * identity, says who sent it (seed 003's path). With masquerade on (either
 * routing mode), pods' traffic to the outside leaves from the node's address
 * (to_netdev) and its replies are translated back (from_netdev), lib/nat.h.
 * With NodePort on, connections to the node's address and a NodePort are
 * served by the frontend's backends, on this node or another
 * (lib/nodeport.h).
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
#include "lib/nodeport.h"

/*
 * Delivers a packet from the network to the local pod it is addressed to
 * (after any translation), judged by the pod's ingress policy and reported
 * at from-network and to-endpoint; anything else goes to the stack.
 * `rev_nat`: the frontend a new flow was translated from, 0 if none.
 */
__global_subprog int from_netdev_deliver(struct __sk_buff *ctx, const struct pkt4 *p,
					 __u32 rev_nat)
{
	struct endpoint_info *ep;
	struct notify n;
	int ret;

	if (!p) /* never: a global function's pointers may be NULL */
		return TC_ACT_OK;
	ep = lookup_ep_by_ip(p->tuple.daddr);
	if (!ep)
		return TC_ACT_OK;
	notify_init(&n, DIR_INGRESS);
	notify_addrs(&n, p);
	n.ep_id = ep->ep_id;
	n.dst_ep_id = ep->ep_id;
	n.dst_id = ep->sec_identity;
	n.src_id = ipcache_identity(p->tuple.saddr);
	send_trace(ctx, &n, OBS_FROM_NETWORK, NULL, 0);
	ret = ipv4_deliver_from_node(ctx, p, ep, &n, rev_nat);
	if (ret < 0)
		return send_drop(ctx, ret, &n, OBS_FROM_NETWORK);
	return ret;
}

/* A drop before delivery, with what is known of the packet. */
static __always_inline int from_netdev_drop(struct __sk_buff *ctx, const struct pkt4 *p, int ret)
{
	struct notify n;

	notify_init(&n, DIR_INGRESS);
	notify_addrs(&n, p);
	return send_drop(ctx, ret, &n, OBS_FROM_NETWORK);
}

/* A packet from the network the node's edge forwards itself (not to a
 * local pod): reported from-network, with its sender's identity. */
static __always_inline void from_netdev_forwarding(struct __sk_buff *ctx, const struct pkt4 *p,
						   struct notify *n)
{
	notify_init(n, DIR_INGRESS);
	notify_addrs(n, p);
	n->src_id = ipcache_identity(p->tuple.saddr);
	send_trace(ctx, n, OBS_FROM_NETWORK, NULL, 0);
}

/*
 * Tail call target for a connection from the network to a NodePort,
 * externalIP or LoadBalancer frontend (from_netdev saw it): translated to a
 * backend (lib/nodeport.h) and delivered when it is on this node, or
 * forwarded from the node's address to the backend's node.
 */
SEC("classifier")
int nodeport_from_netdev(struct __sk_buff *ctx)
{
	struct pkt4 p = {};
	struct notify n;
	__u32 rev_nat = 0;
	int ret;

	ret = ipv4_parse(ctx, &p);
	if (ret < 0)
		return from_netdev_drop(ctx, &p, ret);
	ret = nodeport_lb(ctx, &p, bpf_mono_now(), &rev_nat);
	if (ret < 0)
		return from_netdev_drop(ctx, &p, ret);
	if (lookup_ep_by_ip(p.tuple.daddr))
		return from_netdev_deliver(ctx, &p, rev_nat);
	from_netdev_forwarding(ctx, &p, &n);
	ret = nodeport_fwd_remote(ctx, &p, rev_nat, &n);
	if (ret < 0)
		return send_drop(ctx, ret, &n, OBS_FROM_NETWORK);
	return ret;
}

/*
 * Tail call target for a packet to the node's SNAT address: a reply of a
 * masqueraded flow (or an ICMP error about one) translated back to its pod
 * (lib/nat.h) and delivered, or a reply of a NodePort connection another
 * node's backend served, sent back to its client (lib/nodeport.h); the
 * node's own traffic to the stack.
 */
SEC("classifier")
int nat_from_netdev(struct __sk_buff *ctx)
{
	struct pkt4 p = {};
	int ret;

	ret = ipv4_parse(ctx, &p);
	if (ret < 0)
		return TC_ACT_OK;
	ret = nat4_rev_snat(ctx, &p, bpf_mono_now());
	if (ret < 0)
		return from_netdev_drop(ctx, &p, ret);
	if (!ret)
		return TC_ACT_OK;
	if (CONFIG_NODEPORT_IP4 && !lookup_ep_by_ip(p.tuple.daddr)) {
		/* Not for a pod here: a NodePort client's reply (a program of
		 * its own: with delivery too, too many paths to verify). */
		bpf_tail_call(ctx, &pilus_calls, CALL_IPV4_NODEPORT_REPLY);
		return from_netdev_drop(ctx, &p, -DROP_MISSED_TAIL_CALL);
	}
	return from_netdev_deliver(ctx, &p, 0);
}

/*
 * Tail call target for a reply nat_from_netdev translated back to an
 * address that is no local pod's: a NodePort connection's, which another
 * node's backend served, leaves from the node's address and the NodePort
 * to its client (lib/nodeport.h); anything else to the stack.
 */
SEC("classifier")
int nodeport_reply_netdev(struct __sk_buff *ctx)
{
	struct pkt4 p = {};
	struct notify n;
	int ret;

	ret = ipv4_parse(ctx, &p);
	if (ret < 0)
		return from_netdev_drop(ctx, &p, ret);
	from_netdev_forwarding(ctx, &p, &n);
	ret = nodeport_reply_remote(ctx, &p, &n);
	if (ret < 0)
		return send_drop(ctx, ret, &n, OBS_FROM_NETWORK);
	return ret ? ret : TC_ACT_OK;
}

/*
 * Attachment/entry point is ingress for the node's uplink.
 * It corresponds to packets arriving from the network: a connection to a
 * NodePort, externalIP or LoadBalancer frontend (nodeport_from_netdev) and
 * a reply to a masqueraded flow (nat_from_netdev) go to their own programs,
 * which translate and deliver them (tail calls: one program for all of it
 * was too many paths to verify); for a local pod, packets go straight to
 * it, judged by its ingress policy (reported at from-network and
 * to-endpoint); the rest to the stack.
 */
SEC("classifier")
int from_netdev(struct __sk_buff *ctx)
{
	void *data, *data_end;
	struct pkt4 p = {};
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
	/* To a NodePort on the node's address, or to an externalIP or
	 * LoadBalancer address the network routes here. (A NodePort is never
	 * in masquerade's port range, so a reply is never taken for a NodePort
	 * connection.) */
	if (CONFIG_NODEPORT_IP4 && nodeport_wants(&p)) {
		bpf_tail_call(ctx, &pilus_calls, CALL_IPV4_NODEPORT);
		return from_netdev_drop(ctx, &p, -DROP_MISSED_TAIL_CALL);
	}
	if (CONFIG_NAT_IP4 && p.tuple.daddr == CONFIG_NAT_IP4) {
		bpf_tail_call(ctx, &pilus_calls, CALL_IPV4_REV_SNAT);
		return from_netdev_drop(ctx, &p, -DROP_MISSED_TAIL_CALL);
	}
	return from_netdev_deliver(ctx, &p, 0);
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
 * (direct routing) and to the outside is observed here (to-network), a
 * NodePort backend's replies leave from the node's address and port again,
 * and the rest to the outside is masqueraded (SNAT to the node's address)
 * when that is on.
 */
SEC("classifier")
int to_netdev(struct __sk_buff *ctx)
{
	void *data, *data_end;
	struct pkt4 p = {};
	struct endpoint_info *ep;
	struct notify n;
	int ret;

	if (!CONFIG_TRACE_ENABLED && !CONFIG_MASQUERADE && !CONFIG_NODEPORT_IP4)
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
	if (CONFIG_NODEPORT_IP4) {
		/* A NodePort backend's reply: from the node again. */
		ret = nodeport_rev_dnat(ctx, &p, bpf_mono_now());
		if (ret < 0)
			return send_drop(ctx, ret, &n, OBS_TO_NETWORK);
		if (ret > 0)
			return TC_ACT_OK;
	}
	/* Pod to pod and pod to node keep the pod's address: only the
	 * outside sees the node's. */
	if (CONFIG_MASQUERADE && nat4_handles(&p, ICMP_ECHO) && nat4_outside(p.tuple.daddr)) {
		ret = nat4_snat(ctx, &p, bpf_mono_now());
		if (ret < 0)
			return send_drop(ctx, ret, &n, OBS_TO_NETWORK);
	}
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual BSD/GPL";
