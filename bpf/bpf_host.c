// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Programs on the node's uplink (the underlay device) in direct-routing
 * mode, where pod CIDRs are routed between nodes without encapsulation. A
 * packet from a pod on another node carries no identity on the wire: the
 * ipcache, which the cluster store fills with every pod's address and
 * identity, says who sent it (seed 003's path).
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

/*
 * Attachment/entry point is ingress for the node's uplink.
 * It corresponds to packets arriving from the network: for a local pod they
 * go straight to it, judged by its ingress policy; the rest to the stack.
 */
SEC("classifier")
int from_netdev(struct __sk_buff *ctx)
{
	struct endpoint_info *ep = NULL;
	void *data, *data_end;
	struct pkt4 p = {};
	__u32 src_id = 0;
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
	ep = lookup_ep_by_ip(p.tuple.daddr);
	if (!ep)
		return TC_ACT_OK;
	src_id = ipcache_identity(p.tuple.saddr);
	send_trace_notify(ctx, OBS_FROM_NETWORK, DIR_INGRESS, ep->ep_id, src_id, ep->sec_identity);
	ret = ipv4_deliver_from_node(ctx, &p, ep, src_id);
	if (ret < 0)
		return send_drop_notify(ctx, ret, DIR_INGRESS, ep->ep_id, src_id, ep->sec_identity,
					OBS_FROM_NETWORK);
	send_trace_notify(ctx, OBS_TO_ENDPOINT, DIR_INGRESS, ep->ep_id, src_id, ep->sec_identity);
	return ret;
}

/*
 * Attachment/entry point is egress for the node's uplink.
 * It corresponds to packets leaving the node: pods' traffic to other nodes
 * (and, later, masquerade to the outside) is observed here.
 */
SEC("classifier")
int to_netdev(struct __sk_buff *ctx)
{
	void *data, *data_end;
	struct pkt4 p = {};
	struct endpoint_info *ep;

	if (!ctx_pull(ctx, ETH_HLEN, &data, &data_end) ||
	    bpf_ntohs(((struct ethhdr *)data)->h_proto) != ETH_P_IP || ipv4_parse(ctx, &p) < 0)
		return TC_ACT_OK;
	ep = lookup_ep_by_ip(p.tuple.saddr);
	if (ep)
		send_trace_notify(ctx, OBS_TO_NETWORK, DIR_EGRESS, ep->ep_id, ep->sec_identity,
				  ipcache_identity(p.tuple.daddr));
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual BSD/GPL";
