/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * NodePort on the uplink (Cilium's nodeport.h, SNAT mode): a connection
 * from the network to the node's address (CONFIG_NODEPORT_IP4) and a
 * NodePort frontend's port is translated in from_netdev to one of the
 * frontend's backends (DNAT), pinned by a service conntrack entry:
 *
 * - A backend ON THIS NODE gets the packet with the client's address kept;
 *   its replies leave through the stack to the uplink, where to_netdev
 *   translates them back to the node's address and port.
 * - A backend ON ANOTHER NODE (externalTrafficPolicy: Cluster only) gets it
 *   from the node's address and a NAT port (SNAT, lib/nat.h), through the
 *   tunnel or routed on the underlay: the backend answers this node, which
 *   alone can translate the reply back. The reply, arriving at the node's
 *   address, is reverse-SNATed to the client's address, leaves from the
 *   node's address and the NodePort again (the flow's conntrack entry names
 *   the frontend), and goes straight back out of the uplink.
 *
 * externalTrafficPolicy: Local (LB_F_ETP_LOCAL) chooses among this node's
 * backends only, and a node without one drops the connection
 * (DROP_NO_LOCAL_BACKEND): the client's address always reaches the backend.
 *
 * An externalIP or LoadBalancer frontend, whose address the network routes
 * to the node, is served the same way, from its own address: a local
 * backend's reply is put back to it by the pod's program (lb4_rev_nat, as
 * for a pod client), a remote backend's by nodeport_reply_remote.
 */
#ifndef PILUS_NODEPORT_H
#define PILUS_NODEPORT_H

#include <linux/in.h>

#include "common.h"
#include "config.h"
#include "maps.h"
#include "ipv4.h"
#include "conntrack.h"
#include "lxc.h"
#include "lb.h"
#include "hash.h"
#include "ipcache.h"
#include "encap.h"
#include "events.h"
#include "nat.h"

/* Slots (or Maglev entries) looked at for a backend on this node. A
 * frontend has a slot per backend: up to this many backends, every one is
 * seen. */
#define NODEPORT_LOCAL_SCAN	64

/* Is this packet from the network for a NodePort, externalIP or
 * LoadBalancer frontend (the tail call's business)? */
static __always_inline bool nodeport_wants(const struct pkt4 *p);

/* The frontend a packet from the network is addressed to: to the node's
 * address, a NodePort (on every node address: 0.0.0.0, as Kubernetes'
 * nodePort is written; its reverse-NAT entry's address 0 is what tells
 * to_netdev and the pod's program apart); to any other address, an
 * externalIP or LoadBalancer frontend of that address, which the network
 * routes to the node (as Cilium serves them on from-netdev). A ClusterIP is
 * the cluster's own: never served from outside. */
static __always_inline struct lb4_service *nodeport_lookup(const struct pkt4 *p,
							   struct lb4_key *key)
{
	struct lb4_service *svc;

	if (p->tuple.daddr == CONFIG_NODEPORT_IP4) {
		*key = lb4_key_of(0, p->tuple.dport, p->tuple.protocol);
		svc = bpf_map_lookup_elem(&pilus_lb4_svc, key);
		return svc && svc->svc_type == LB_TYPE_NODE_PORT ? svc : NULL;
	}
	/* The agent refuses a frontend in a pod CIDR: a pod's traffic from
	 * the network (direct routing) never pays for the lookup. */
	if (pod_cidr_index(p->tuple.daddr) < CONFIG_POD_CIDR4_SIZE)
		return NULL;
	*key = lb4_key_of(p->tuple.daddr, p->tuple.dport, p->tuple.protocol);
	svc = lb4_lookup_service(key); /* never a NodePort */
	return svc && svc->svc_type != LB_TYPE_CLUSTER_IP ? svc : NULL;
}

/* The scan's state, for bpf_loop's callback. */
struct nodeport_scan {
	const struct lb4_service *svc;
	struct lb4_maglev *table;	/* Maglev: the table; random: NULL (the slots) */
	__u32 start;
	__u32 n;
	__u32 backend_id;
	__u32 found;
	struct lb4_backend backend;
};

/* One slot (or Maglev entry) of the scan: stops (1) at a local backend. */
static long nodeport_scan_one(__u32 i, void *arg)
{
	struct nodeport_scan *s = arg;
	struct lb4_backend *be;
	__u32 idx = (s->start + i) % s->n, id;

	if (s->table) {
		/* The verifier requires the bound where it sees it. */
		asm volatile("" : "+r"(idx));
		if (idx >= LB_MAGLEV_M)
			return 1;
		id = s->table->backend_ids[idx];
	} else {
		struct lb4_slot_key sk = {
			.id = s->svc->id,
			.generation = s->svc->generation,
			.slot = idx,
		};
		__u32 *slot = bpf_map_lookup_elem(&pilus_lb4_slot, &sk);

		if (!slot)
			return 0;
		id = *slot;
	}
	be = bpf_map_lookup_elem(&pilus_lb4_be, &id);
	if (!be || !lookup_ep_by_ip(be->address))
		return 0;
	s->backend_id = id;
	s->backend = *be;
	s->found = 1;
	return 1;
}

static __always_inline bool nodeport_wants(const struct pkt4 *p)
{
	struct lb4_key key;

	if ((p->tuple.protocol != IPPROTO_TCP && p->tuple.protocol != IPPROTO_UDP) ||
	    p->icmp_error)
		return false;
	return nodeport_lookup(p, &key) != NULL;
}

/* A backend of `svc` that runs on this node: from a random slot on (or
 * the flow's Maglev entry on), the first whose address is a local pod.
 * The scan runs in bpf_loop (kernel 5.17), whose callback the verifier
 * checks once: unrolled into from_netdev, 64 rounds of lookups made the
 * program too complex to verify. */
static __always_inline int nodeport_select_local(const struct lb4_service *svc,
						 const struct pkt4 *p, __u32 *backend_id,
						 struct lb4_backend *backend)
{
	struct nodeport_scan s = { .svc = svc };

	if (!svc->count)
		return -DROP_NO_SERVICE_BACKEND;
	if (svc->algorithm == LB_ALG_MAGLEV) {
		struct lb4_maglev_key mk = { .id = svc->id, .generation = svc->generation };

		s.table = bpf_map_lookup_elem(&pilus_lb4_mag, &mk);
		if (!s.table)
			return -DROP_NO_SERVICE_BACKEND;
		s.n = LB_MAGLEV_M;
		s.start = jhash_3words(p->tuple.saddr, p->tuple.daddr,
				       ((__u32)p->tuple.sport << 16) | p->tuple.dport,
				       p->tuple.protocol);
	} else {
		s.n = svc->count;
		s.start = bpf_get_prandom_u32();
	}
	bpf_loop(s.n < NODEPORT_LOCAL_SCAN ? s.n : NODEPORT_LOCAL_SCAN, nodeport_scan_one, &s, 0);
	if (!s.found)
		return -DROP_NO_LOCAL_BACKEND;
	*backend_id = s.backend_id;
	*backend = s.backend;
	return CTX_ACT_OK;
}

/*
 * Translates a packet from the network to a NodePort frontend: the flow's
 * pinned backend, or a new choice (among this node's backends only with
 * externalTrafficPolicy: Local) pinned in a service conntrack entry; then
 * DNAT, and *p with it. *rev_nat is the frontend's id, for the flow's own
 * conntrack entry. Anything else is left as it is.
 */
__global_subprog int nodeport_lb(struct __sk_buff *ctx, struct pkt4 *p, __u32 now,
				 __u32 *rev_nat)
{
	struct lb4_backend be = {};
	struct lb4_service *svcp, svc;
	struct lb4_key key;
	struct ct_entry *se;
	__u32 backend_id = 0;
	int ret;

	if (!p || !rev_nat) /* never: a global function's pointers may be NULL */
		return CTX_ACT_OK;
	if ((p->tuple.protocol != IPPROTO_TCP && p->tuple.protocol != IPPROTO_UDP) ||
	    p->icmp_error)
		return CTX_ACT_OK;
	svcp = nodeport_lookup(p, &key);
	if (!svcp)
		return CTX_ACT_OK;
	/* A copy: the map's value may be swapped while we use it. */
	svc = *svcp;
	se = ct_lookup_service(p, ctx->len, now);
	if (se) {
		be.address = se->backend_addr;
		be.port = se->backend_port;
	} else {
		if (svc.flags & LB_F_ETP_LOCAL)
			ret = nodeport_select_local(&svc, p, &backend_id, &be);
		else
			ret = lb4_select(&key, &svc, p, now, &backend_id, &be);
		if (ret < 0)
			return ret;
		ret = ct_create_service(p, ctx->len, now, backend_id, be.address, be.port);
		if (ret < 0)
			return ret;
	}
	ret = lb4_rewrite(ctx, p, true, p->tuple.daddr, be.address, p->tuple.dport, be.port);
	if (ret < 0)
		return ret;
	*rev_nat = svc.id;
	p->tuple.daddr = be.address;
	p->tuple.dport = be.port;
	p->policy_port = be.port;
	return CTX_ACT_OK;
}

/* The frontend a flow's replies must come from, when its conntrack entry
 * names one: its address (0 for a NodePort: the node's) and port. */
static __always_inline bool nodeport_rev_frontend(const struct ct_entry *e, __be32 *addr,
						  __be16 *port)
{
	struct lb4_reverse_nat *rn;
	__u32 idx;

	if (!e || !e->rev_nat_index)
		return false;
	idx = e->rev_nat_index;
	rn = bpf_map_lookup_elem(&pilus_lb4_rnat, &idx);
	if (!rn)
		return false;
	*addr = rn->address;
	*port = rn->port;
	return true;
}

/*
 * A local backend's reply to a NodePort client, leaving through the
 * uplink: from the node's address and the frontend's port again (the
 * flow's conntrack entry, keyed by the client's tuple, names the frontend).
 * Returns 1 when it was one (masquerade must leave it alone), 0 when not,
 * or -DROP_*.
 */
static __always_inline int nodeport_rev_dnat(struct __sk_buff *ctx, const struct pkt4 *p,
					     __u32 now)
{
	struct ct_key4 rev;
	__be32 addr;
	__be16 port;
	int ret;

	if (p->tuple.protocol != IPPROTO_TCP && p->tuple.protocol != IPPROTO_UDP)
		return 0;
	ct_key_reverse(&p->tuple, &rev);
	/* Only a NodePort's (address 0): the pod's program already put an
	 * externalIP's or a LoadBalancer's address back (lb4_rev_nat). */
	if (!nodeport_rev_frontend(ct_find(&rev, now), &addr, &port) || addr)
		return 0;
	ret = lb4_rewrite(ctx, p, false, p->tuple.saddr, CONFIG_NODEPORT_IP4, p->tuple.sport,
			  port);
	return ret < 0 ? ret : 1;
}

/* Out of the uplink (the device the packet came in on) towards its
 * destination: the kernel's route and neighbour (bpf_redirect_neigh, 5.10)
 * give the next hop and its MAC. The stack could not forward these: their
 * source is the node's own address, a martian on a packet received. */
static __always_inline int nodeport_redirect_uplink(struct __sk_buff *ctx)
{
	int ret = ipv4_dec_ttl(ctx);

	if (ret < 0)
		return ret;
	return bpf_redirect_neigh(ctx->ifindex, NULL, 0, 0);
}

/*
 * A NodePort connection translated to a backend on another node
 * (externalTrafficPolicy: Cluster): tracked by its translated tuple, the
 * entry naming the frontend (`rev_nat`) for the replies; SNAT to the node's
 * address; then to the backend's node, through the tunnel (with the
 * remote-node identity, which is what the node's address is to the backend's
 * node, as direct routing's ipcache lookup finds it) or routed on the
 * underlay. Reported at to-overlay or to-network. Returns TC_ACT_REDIRECT
 * or -DROP_*.
 */
__global_subprog int nodeport_fwd_remote(struct __sk_buff *ctx, const struct pkt4 *p,
					 __u32 rev_nat, struct notify *n)
{
	struct ipcache_value *info;
	struct ct_entry *entry;
	__u32 now = bpf_mono_now();
	int ret, ct_status;

	if (!p || !n) /* never: a global function's pointers may be NULL */
		return -DROP_INVALID_IPV4;

	ct_status = ct_lookup4(p, ctx->len, now, &entry);
	n->ct_state = ct_status;
	if (ct_status == CT_NEW) {
		ret = ct_create4(p, ctx->len, now, n->src_id, 0, rev_nat);
		if (ret < 0)
			return ret;
	}
	ret = nat4_snat(ctx, p, now);
	if (ret < 0)
		return ret;
	if (CONFIG_TUNNEL_IFINDEX) {
		info = ipcache_lookup(p->tuple.daddr);
		if (!info || !info->tunnel_endpoint)
			return -DROP_NO_BACKEND_NODE;
		n->dst_id = info->sec_identity;
		ret = ipv4_dec_ttl(ctx);
		if (ret < 0)
			return ret;
		ret = encap_and_redirect(ctx, info->tunnel_endpoint, IDENTITY_REMOTE_NODE);
		if (ret < 0)
			return ret;
		send_trace_notify(ctx, n, OBS_TO_OVERLAY, entry, now);
		return ret;
	}
	n->dst_id = ipcache_identity(p->tuple.daddr);
	ret = nodeport_redirect_uplink(ctx);
	if (ret < 0)
		return ret;
	send_trace_notify(ctx, n, OBS_TO_NETWORK, entry, now);
	return ret;
}

/*
 * After reverse SNAT (lib/nat.h) to an address that is no local pod: the
 * reply of a connection this node forwarded to another node's backend
 * leaves from its frontend again (the node's address and the NodePort, or
 * the externalIP's or LoadBalancer's address and port), straight back out
 * of the uplink to the client. Returns 0 when the packet is no
 * such reply (the caller goes on), TC_ACT_REDIRECT, or -DROP_*.
 */
static __always_inline int nodeport_reply_remote(struct __sk_buff *ctx, const struct pkt4 *p,
						 struct notify *n)
{
	struct ct_entry *entry;
	__u32 now = bpf_mono_now();
	__be32 addr;
	__be16 port;
	int ret;

	if (p->tuple.protocol != IPPROTO_TCP && p->tuple.protocol != IPPROTO_UDP)
		return 0;
	n->ct_state = ct_lookup4(p, ctx->len, now, &entry);
	if (n->ct_state != CT_REPLY || !nodeport_rev_frontend(entry, &addr, &port))
		return 0;
	ret = lb4_rewrite(ctx, p, false, p->tuple.saddr, addr ? addr : CONFIG_NODEPORT_IP4,
			  p->tuple.sport, port);
	if (ret < 0)
		return ret;
	ret = nodeport_redirect_uplink(ctx);
	if (ret < 0)
		return ret;
	send_trace_notify(ctx, n, OBS_TO_NETWORK, entry, now);
	return ret;
}

#endif /* PILUS_NODEPORT_H */
