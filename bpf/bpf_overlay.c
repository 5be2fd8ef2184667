// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The program on the node's VXLAN device (external / collect_md mode), for
 * frames the device decapsulated: pods on other nodes sending to pods here.
 * The VNI carries the sender's security identity (see lib/encap.h), so the
 * receiving pod's ingress policy needs no lookup to know who sent it.
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
#include "lib/encap.h"
#include "lib/ingress.h"

/*
 * Attachment/entry point is ingress for the VXLAN device.
 * It corresponds to packets other nodes' pods send through the tunnel.
 * Reports them at from-overlay, then at to-endpoint once delivered.
 */
SEC("classifier")
int from_overlay(struct __sk_buff *ctx)
{
	struct endpoint_info *ep = NULL;
	void *data, *data_end;
	struct pkt4 p = {};
	struct notify n;
	__u16 proto;
	int ret;

	notify_init(&n, DIR_INGRESS);
	if (!ctx_pull(ctx, ETH_HLEN, &data, &data_end)) {
		ret = -DROP_INVALID_ETH;
		goto drop;
	}
	proto = bpf_ntohs(((struct ethhdr *)data)->h_proto);
	if (proto == ETH_P_ARP)
		/* Only pods' IPv4 comes through the tunnel; let the stack
		 * deal with anything else it gets. */
		return TC_ACT_OK;
	if (proto != ETH_P_IP) {
		ret = proto == ETH_P_IPV6 ? -DROP_IPV6_UNSUPPORTED : -DROP_UNKNOWN_L3;
		goto drop;
	}
	ret = tunnel_source_identity(ctx, &n.src_id);
	if (ret < 0)
		goto drop;
	send_debug(ctx, &n, DBG_DECAP, n.src_id, 0);
	ret = ipv4_parse(ctx, &p);
	if (ret < 0)
		goto drop;
	ep = lookup_ep_by_ip(p.tuple.daddr);
	if (!ep) {
		/* Other nodes tunnel only to this node's pods: anything else
		 * is misrouted, and counted as such. */
		ret = -DROP_NOT_LOCAL;
		goto drop;
	}
	n.ep_id = ep->ep_id;
	n.dst_ep_id = ep->ep_id;
	n.dst_id = ep->sec_identity;
	send_trace(ctx, &n, OBS_FROM_OVERLAY, NULL, 0);
	ret = ipv4_deliver_from_node(ctx, &p, ep, &n, 0);
	if (ret < 0)
		goto drop;
	return ret;
drop:
	return send_drop(ctx, ret, &n, OBS_FROM_OVERLAY);
}

char __license[] SEC("license") = "Dual BSD/GPL";
