// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Programs on a pod's host-side veth. One object serves every pod of the node:
 * which pod a packet belongs to comes from pilus_lxc_if (by ifindex), so
 * adding a pod writes maps and attaches these already-verified programs.
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/maps.h"
#include "lib/events.h"
#include "lib/arp.h"
#include "lib/ipv4.h"
#include "lib/conntrack.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/lxc.h"
#include "lib/encap.h"
#include "lib/lb.h"
#include "lib/ingress.h"

/*
 * IPv4 from a pod (from_container's, and ipv4_from_lxc's when the service
 * translation's tail call comes back): anti-spoofing, service translation
 * (the CALL_IPV4_LB tail call, which comes back with the packet translated
 * to a backend: `lb_done`), conntrack, the destination's identity, the pod's
 * egress policy, and either local delivery (with the destination's ingress
 * policy), the tunnel to the node of a pod elsewhere (tunnel mode), or the
 * host stack. A reply of a service flow whose client is here is reverse-NATed
 * on the way. Reports the packet at from-endpoint (once, as the pod sent it:
 * not again after the translation) and where it goes (to-endpoint,
 * to-overlay, to-stack), each policy verdict, and any drop.
 */
static __always_inline int handle_ipv4_from_lxc(struct __sk_buff *ctx, bool lb_done)
{
	struct endpoint_info *ep, *dst_ep;
	struct policy_match m = {};
	struct pkt4 p = {};
	struct ct_entry *entry = NULL;
	struct notify n;
	__u32 now = 0, rev, rev_nat = 0;
	int ret, ct_status;
	bool checked;

	notify_init(&n, DIR_EGRESS);
	if (lb_done)
		rev_nat = ctx->cb[CB_REV_NAT];

	ret = ipv4_parse(ctx, &p);
	/* The sending pod, found by its address (an inlined array lookup, not
	 * the hash by ifindex): the endpoint of that address must be the one
	 * this veth belongs to, which is the anti-spoofing check too. Only a
	 * packet that fails it pays for the lookup by ifindex, to tell a
	 * spoofed source from an interface without an endpoint. */
	ep = ret < 0 ? NULL : lookup_ep_by_ip(p.tuple.saddr);
	if (!ep || ep->ifindex != ctx->ifindex) {
		ep = lookup_ep_by_ifindex(ctx->ifindex);
		if (!ep) {
			ret = -DROP_NO_ENDPOINT;
			goto drop;
		}
		n.ep_id = ep->ep_id;
		n.src_id = ep->sec_identity;
		if (ret >= 0) {
			notify_addrs(&n, &p);
			ret = -DROP_INVALID_SIP;
		}
		goto drop;
	}
	n.ep_id = ep->ep_id;
	n.src_id = ep->sec_identity;
	notify_addrs(&n, &p);
	/* Cilium's from-endpoint: before anything was decided (dstLabel 0),
	 * as the pod sent it — once: not again when the service translation's
	 * tail call comes back. */
	if (!lb_done)
		send_trace(ctx, &n, OBS_FROM_ENDPOINT, NULL, 0);

	dst_ep = lookup_ep_by_ip(p.tuple.daddr);
	if (dst_ep) {
		n.dst_id = dst_ep->sec_identity;
		n.dst_ep_id = dst_ep->ep_id;
	}

	now = bpf_mono_now();
	ct_status = ct_lookup4(&p, ctx->len, now, &entry);
	n.ct_state = ct_status;
	/* Only a new flow can be addressed to a frontend: a service flow's
	 * own entry is keyed by its backend, so a packet to a frontend never
	 * finds one (and ct_lookup4 changed nothing for it). A pod's address
	 * is never a frontend (the agent refuses one in a pod CIDR). So
	 * established flows, and traffic between pods, never pay for the
	 * service lookup. */
	if (ct_status == CT_NEW && !dst_ep && !lb_done && lb4_wants(&p)) {
		bpf_tail_call(ctx, &pilus_calls, CALL_IPV4_LB);
		ret = -DROP_MISSED_TAIL_CALL;
		goto drop;
	}
	send_debug(ctx, &n, DBG_CT_VERDICT, ct_status, 0);
	ret = lb4_rev_nat(ctx, &p, entry, ct_status);
	if (ret < 0)
		goto drop;

	rev = policy_revision();
	checked = needs_policy(ct_status, entry, rev);
	if (checked) {
		/* The ipcache (an LPM walk) is only asked when policy is: an
		 * established flow's packets never pay for it (unless a trace
		 * reports them). */
		if (!dst_ep)
			n.dst_id = ipcache_identity(p.tuple.daddr);
		if (ep->flags & EP_F_EGRESS_ENFORCED) {
			ret = policy_can_access(ep->ep_id, DIR_EGRESS, n.dst_id, p.tuple.protocol,
						p.policy_port, &m);
			send_policy_verdict(ctx, &n, DIR_EGRESS, ret, m.level, m.cookie);
			if (ret < 0)
				goto drop;
		}
		if (dst_ep && (dst_ep->flags & EP_F_INGRESS_ENFORCED)) {
			n.dir = DIR_INGRESS;
			ret = policy_can_access(dst_ep->ep_id, DIR_INGRESS, ep->sec_identity,
						p.tuple.protocol, p.policy_port, &m);
			send_policy_verdict(ctx, &n, DIR_INGRESS, ret, m.level, m.cookie);
			if (ret < 0)
				goto drop;
			n.dir = DIR_EGRESS;
		}
		if (ct_status == CT_NEW) {
			ret = ct_create4(&p, ctx->len, now, ep->sec_identity, rev, rev_nat);
			if (ret < 0)
				goto drop;
		} else if (entry) {
			entry->policy_rev = rev;
		}
	}

	if (dst_ep) {
		ret = ipv4_deliver_reported(ctx, dst_ep, &n, entry, now);
		if (ret < 0) {
			n.dir = DIR_INGRESS;
			goto drop;
		}
		return ret;
	}
	if (CONFIG_TUNNEL_IFINDEX) {
		/* A pod on another node: every packet needs its node (the
		 * ipcache names it), not only those that needed policy. */
		struct ipcache_value *info = ipcache_lookup(p.tuple.daddr);

		if (info && info->tunnel_endpoint) {
			n.dst_id = info->sec_identity;
			send_debug(ctx, &n, DBG_ENCAP, info->tunnel_endpoint, ep->sec_identity);
			ret = encap_and_redirect(ctx, info->tunnel_endpoint, ep->sec_identity);
			if (ret < 0)
				goto drop;
			send_trace_notify(ctx, &n, OBS_TO_OVERLAY, entry, now);
			send_capture(ctx, &n, CONFIG_TUNNEL_IFINDEX);
			return ret;
		}
	}
	send_debug(ctx, &n, DBG_TO_STACK, !checked, 0);
	send_trace_notify(ctx, &n, OBS_TO_STACK, entry, now);
	send_capture(ctx, &n, 0);
	return TC_ACT_OK;
drop:
	return send_drop(ctx, ret, &n, OBS_FROM_ENDPOINT);
}

/* Tail call target: the service translation's way back into the IPv4 path
 * (handle_ipv4_from_lxc) with the packet translated. */
SEC("classifier")
int ipv4_from_lxc(struct __sk_buff *ctx)
{
	return handle_ipv4_from_lxc(ctx, ctx->cb[CB_LB_FLAGS] == CB_F_LB_DONE);
}

/*
 * Tail call target for IPv4 from a pod to a service frontend (or an ICMP
 * error about a reply that came from one): the backend is chosen (or the
 * flow's pinned one taken) and the packet translated to it, then back to
 * ipv4_from_lxc, which judges and delivers the translated packet: policy
 * applies to the backend's identity, as if the pod had addressed it.
 */
SEC("classifier")
int ipv4_lb_from_lxc(struct __sk_buff *ctx)
{
	struct endpoint_info *ep;
	struct pkt4 p = {};
	__u32 rev_nat = 0, src_id = 0;
	__u16 ep_id = 0;
	int ret;

	ep = lookup_ep_by_ifindex(ctx->ifindex);
	if (!ep) {
		ret = -DROP_NO_ENDPOINT;
		goto drop;
	}
	ep_id = ep->ep_id;
	src_id = ep->sec_identity;
	ret = ipv4_parse(ctx, &p);
	if (ret < 0)
		goto drop;
	if (p.icmp_error)
		ret = lb4_icmp_to_backend(ctx, &p, bpf_mono_now());
	else
		ret = lb4_local(ctx, &p, bpf_mono_now(), &rev_nat);
	if (ret < 0)
		goto drop;
	ctx->cb[CB_LB_FLAGS] = CB_F_LB_DONE;
	ctx->cb[CB_REV_NAT] = rev_nat;
	bpf_tail_call(ctx, &pilus_calls, CALL_IPV4_FROM_LXC);
	ret = -DROP_MISSED_TAIL_CALL;
drop:
	return send_drop_notify(ctx, ret, DIR_EGRESS, ep_id, src_id, 0, OBS_FROM_ENDPOINT);
}

/*
 * Tail call target for IPv4 that the host stack routes to a pod (from the
 * host, or from outside the node): the pod's ingress policy. Reports the
 * packet at from-stack and to-endpoint.
 */
SEC("classifier")
int ipv4_to_lxc(struct __sk_buff *ctx)
{
	struct policy_match m = {};
	struct endpoint_info *ep;
	struct pkt4 p = {};
	struct ct_entry *entry = NULL;
	struct notify n;
	__u32 now = 0, rev;
	int ret, ct_status;

	notify_init(&n, DIR_INGRESS);
	ep = lookup_ep_by_ifindex(ctx->ifindex);
	if (!ep) {
		ret = -DROP_NO_ENDPOINT;
		goto drop;
	}
	n.ep_id = ep->ep_id;
	n.dst_ep_id = ep->ep_id;
	n.dst_id = ep->sec_identity;

	ret = ipv4_parse(ctx, &p);
	if (ret < 0)
		goto drop;
	notify_addrs(&n, &p);
	send_trace(ctx, &n, OBS_FROM_STACK, NULL, 0);

	now = bpf_mono_now();
	ct_status = ct_lookup4(&p, ctx->len, now, &entry);
	n.ct_state = ct_status;
	send_debug(ctx, &n, DBG_CT_VERDICT, ct_status, 0);
	rev = policy_revision();
	if (needs_policy(ct_status, entry, rev)) {
		struct endpoint_info *src_ep = lookup_ep_by_ip(p.tuple.saddr);

		n.src_id = src_ep ? src_ep->sec_identity : ipcache_identity(p.tuple.saddr);
		if (ep->flags & EP_F_INGRESS_ENFORCED) {
			ret = policy_can_access(ep->ep_id, DIR_INGRESS, n.src_id, p.tuple.protocol,
						p.policy_port, &m);
			send_policy_verdict(ctx, &n, DIR_INGRESS, ret, m.level, m.cookie);
			if (ret < 0)
				goto drop;
		}
		if (ct_status == CT_NEW) {
			ret = ct_create4(&p, ctx->len, now, n.src_id, rev, 0);
			if (ret < 0)
				goto drop;
		} else if (entry) {
			entry->policy_rev = rev;
		}
	}
	/* A service's reply the stack routed here (its backend is the host, or
	 * it came in where no program of ours saw it). */
	ret = lb4_rev_nat(ctx, &p, entry, ct_status);
	if (ret < 0)
		goto drop;
	send_debug(ctx, &n, DBG_LOCAL_DELIVERY, ep->ep_id, n.src_id);
	send_trace_notify(ctx, &n, OBS_TO_ENDPOINT, entry, now);
	send_capture(ctx, &n, ctx->ifindex);
	return TC_ACT_OK;
drop:
	return send_drop(ctx, ret, &n, OBS_TO_ENDPOINT);
}

static __always_inline int ethertype(struct __sk_buff *ctx, __u16 *proto)
{
	void *data, *data_end;
	struct ethhdr *eth;

	if (!ctx_pull(ctx, ETH_HLEN, &data, &data_end))
		return -DROP_INVALID_ETH;
	eth = data;
	*proto = bpf_ntohs(eth->h_proto);
	return CTX_ACT_OK;
}

/*
 * Attachment/entry point is ingress for the host-side veth.
 * It corresponds to packets leaving the container.
 */
SEC("classifier")
int from_container(struct __sk_buff *ctx)
{
	struct endpoint_info *ep;
	__u16 proto = 0;
	int ret;

	ret = ethertype(ctx, &proto);
	if (ret < 0)
		goto drop;

	switch (proto) {
	case ETH_P_IP:
		/* Whatever the stack left in cb must not pass for the LB's mark.
		 * The IPv4 path runs here, not through a tail call (~4 ns a
		 * packet); the service translation's tail call comes back to
		 * ipv4_from_lxc, the same path. */
		ctx->cb[CB_LB_FLAGS] = 0;
		ctx->cb[CB_REV_NAT] = 0;
		return handle_ipv4_from_lxc(ctx, false);
	case ETH_P_ARP:
		ep = lookup_ep_by_ifindex(ctx->ifindex);
		if (!ep) {
			ret = -DROP_NO_ENDPOINT;
			break;
		}
		ret = arp_respond(ctx, ep->node_mac);
		if (ret > 0)
			/* Back out of the same veth: the reply reaches the pod. */
			return bpf_redirect(ctx->ifindex, 0);
		if (ret == 0)
			return TC_ACT_OK;
		break;
	case ETH_P_IPV6:
		ret = -DROP_IPV6_UNSUPPORTED;
		break;
	default:
		ret = -DROP_UNKNOWN_L3;
		break;
	}
drop:
	return send_drop_notify(ctx, ret, DIR_EGRESS, 0, 0, 0, OBS_FROM_ENDPOINT);
}

/*
 * Attachment/entry point is egress for the host-side veth.
 * It corresponds to packets the host stack sends into the container.
 */
SEC("classifier")
int to_container(struct __sk_buff *ctx)
{
	__u16 proto = 0;
	int ret;

	ret = ethertype(ctx, &proto);
	if (ret < 0)
		goto drop;

	switch (proto) {
	case ETH_P_IP:
		bpf_tail_call(ctx, &pilus_calls, CALL_IPV4_TO_LXC);
		ret = -DROP_MISSED_TAIL_CALL;
		break;
	case ETH_P_ARP:
		/* The host resolving the pod's MAC: the pod answers itself. */
		return TC_ACT_OK;
	case ETH_P_IPV6:
		ret = -DROP_IPV6_UNSUPPORTED;
		break;
	default:
		ret = -DROP_UNKNOWN_L3;
		break;
	}
drop:
	return send_drop_notify(ctx, ret, DIR_INGRESS, 0, 0, 0, OBS_TO_ENDPOINT);
}

char __license[] SEC("license") = "Dual BSD/GPL";
