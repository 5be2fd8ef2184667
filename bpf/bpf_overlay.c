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
 */
SEC("classifier")
int from_overlay(struct __sk_buff *ctx)
{
	struct endpoint_info *ep = NULL;
	void *data, *data_end;
	struct pkt4 p = {};
	__u32 src_id = 0;
	__u16 proto;
	int ret;

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
	ret = tunnel_source_identity(ctx, &src_id);
	if (ret < 0)
		goto drop;
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
	send_trace_notify(ctx, OBS_FROM_OVERLAY, DIR_INGRESS, ep->ep_id, src_id, ep->sec_identity);
	ret = ipv4_deliver_from_node(ctx, &p, ep, src_id);
	if (ret < 0)
		goto drop;
	send_trace_notify(ctx, OBS_TO_ENDPOINT, DIR_INGRESS, ep->ep_id, src_id, ep->sec_identity);
	return ret;
drop:
	return send_drop_notify(ctx, ret, DIR_INGRESS, ep ? ep->ep_id : 0, src_id,
				ep ? ep->sec_identity : 0, OBS_FROM_OVERLAY);
}

char __license[] SEC("license") = "Dual BSD/GPL";
