/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-packet service load balancing (Cilium's lb4): a pod's packet to a
 * frontend is translated to a backend (DNAT), the choice pinned by the
 * flow's service conntrack entry; replies, and ICMP errors about the flow,
 * are translated back to the frontend (reverse NAT) by whichever program
 * delivers them to the client: from_container (a backend on this node),
 * to_container (through the stack), from_overlay and from_netdev (a backend
 * on another node). The maps and their update order are in abi.h.
 */
#ifndef PILUS_LB_H
#define PILUS_LB_H

#include <stddef.h>
#include <linux/ip.h>
#include <linux/in.h>

#include "common.h"
#include "config.h"
#include "maps.h"
#include "ipv4.h"
#include "conntrack.h"
#include "hash.h"

/* skb->cb words the LB tail call hands back to ipv4_from_lxc. A magic value,
 * not a bit: from_container clears the word, and a value the stack left there
 * could not pass for it by accident. */
#define CB_LB_FLAGS	0
#define CB_REV_NAT	1
#define CB_F_LB_DONE	0x4c420001

#define IP_CSUM_OFF	(ETH_HLEN + offsetof(struct iphdr, check))
#define IP_SADDR_OFF	(ETH_HLEN + offsetof(struct iphdr, saddr))
#define IP_DADDR_OFF	(ETH_HLEN + offsetof(struct iphdr, daddr))

/* The frontend a pod's packet is addressed to, if any. */
static __always_inline struct lb4_service *lb4_lookup_service(const struct lb4_key *key)
{
	struct lb4_service *svc;

	if (key->protocol != IPPROTO_TCP && key->protocol != IPPROTO_UDP)
		return NULL;
	svc = bpf_map_lookup_elem(&pilus_lb4_svc, key);
	/* NodePort frontends are for bpf_host's from-netdev (a later issue);
	 * a pod reaching a node's port goes through the stack as before. */
	if (svc && svc->svc_type == LB_TYPE_NODE_PORT)
		return NULL;
	return svc;
}

static __always_inline struct lb4_key lb4_key_of(__be32 addr, __be16 port, __u8 protocol)
{
	struct lb4_key key = { .address = addr, .dport = port, .protocol = protocol };

	return key;
}

/* Does this packet from a pod need the LB tail call: to a frontend, or an
 * ICMP error about a reply that came from one? */
static __always_inline bool lb4_wants(const struct pkt4 *p)
{
	struct lb4_key key = lb4_key_of(p->tuple.daddr, p->tuple.dport, p->tuple.protocol);

	if (lb4_lookup_service(&key))
		return true;
	if (!p->icmp_error)
		return false;
	key = lb4_key_of(p->inner.saddr, p->inner.sport, p->inner.protocol);
	return lb4_lookup_service(&key) != NULL;
}

/* Offset of the packet's L4 checksum, 0 when it has none to update. */
static __always_inline __u32 lb4_l4_csum_off(const struct pkt4 *p)
{
	if (p->later_frag)
		return 0;
	if (p->tuple.protocol == IPPROTO_TCP)
		return p->l4_off + 16;
	if (p->tuple.protocol == IPPROTO_UDP)
		return p->l4_off + 6;
	return 0;
}

/* Rewrites the outer source or destination address and the IPv4 checksum. */
static __always_inline int lb4_rewrite_l3(struct __sk_buff *ctx, bool dst, __be32 old_addr,
					  __be32 new_addr)
{
	if (bpf_skb_store_bytes(ctx, dst ? IP_DADDR_OFF : IP_SADDR_OFF, &new_addr, 4, 0) < 0)
		return -DROP_WRITE_ERROR;
	if (bpf_l3_csum_replace(ctx, IP_CSUM_OFF, old_addr, new_addr, 4) < 0)
		return -DROP_CSUM_L3;
	return CTX_ACT_OK;
}

/*
 * Rewrites the packet's destination (dst) or source address and port, with
 * the IPv4 and L4 checksums updated incrementally (the address through the
 * pseudo-header). UDP's "no checksum" (0) stays 0 (BPF_F_MARK_MANGLED_0). A
 * later fragment has no L4 header: only its address changes (the first
 * fragment's checksum covers the whole datagram).
 */
static __always_inline int lb4_rewrite(struct __sk_buff *ctx, const struct pkt4 *p, bool dst,
				       __be32 old_addr, __be32 new_addr, __be16 old_port,
				       __be16 new_port)
{
	__u32 csum_off = lb4_l4_csum_off(p);
	__u64 mangled = p->tuple.protocol == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	int ret;

	ret = lb4_rewrite_l3(ctx, dst, old_addr, new_addr);
	if (ret < 0 || !csum_off)
		return ret;
	if (bpf_l4_csum_replace(ctx, csum_off, old_addr, new_addr,
				mangled | BPF_F_PSEUDO_HDR | 4) < 0)
		return -DROP_CSUM_L4;
	if (old_port == new_port)
		return CTX_ACT_OK;
	if (bpf_skb_store_bytes(ctx, p->l4_off + (dst ? 2 : 0), &new_port, 2, 0) < 0)
		return -DROP_WRITE_ERROR;
	if (bpf_l4_csum_replace(ctx, csum_off, old_port, new_port, mangled | 2) < 0)
		return -DROP_CSUM_L4;
	return CTX_ACT_OK;
}

/* Reads a 16-bit word of the packet (a checksum before and after an update). */
static __always_inline int lb4_load16(struct __sk_buff *ctx, __u32 off, __be16 *v)
{
	return bpf_skb_load_bytes(ctx, off, v, 2) < 0 ? -DROP_INVALID_ICMP_INNER : CTX_ACT_OK;
}

/*
 * Rewrites the datagram an ICMP error quotes: its source (inner_src) or
 * destination address and port, its IPv4 checksum, its L4 checksum where the
 * quote holds it, and the ICMP checksum for every word that changed. These are
 * plain fields inside the ICMP payload, so bpf_l3_csum_replace (a plain
 * one's-complement update of a 16-bit field, whatever the skb's checksum
 * state) updates each of them.
 */
static __always_inline int lb4_rewrite_icmp_inner(struct __sk_buff *ctx, const struct pkt4 *p,
						  bool inner_src, __be32 old_addr, __be32 new_addr,
						  __be16 old_port, __be16 new_port)
{
	__u32 icmp_csum = p->l4_off + 2, ip = p->l4_off + 8, l4, l4_csum = 0;
	__be16 ipc_old, ipc_new, l4c_old = 0, l4c_new;
	__u8 vihl;

	if (bpf_skb_load_bytes(ctx, ip, &vihl, 1) < 0)
		return -DROP_INVALID_ICMP_INNER;
	/* parse_icmp_inner checked the header length and that 8 bytes of L4
	 * follow it inside the datagram. */
	l4 = ip + (vihl & 0xf) * 4;
	if (p->inner.protocol == IPPROTO_UDP)
		l4_csum = l4 + 6;
	else if (p->inner.protocol == IPPROTO_TCP && l4 + 18 <= p->end)
		l4_csum = l4 + 16;

	if (lb4_load16(ctx, ip + 10, &ipc_old) < 0)
		return -DROP_INVALID_ICMP_INNER;
	if (bpf_skb_store_bytes(ctx, ip + (inner_src ? 12 : 16), &new_addr, 4, 0) < 0)
		return -DROP_WRITE_ERROR;
	if (bpf_l3_csum_replace(ctx, ip + 10, old_addr, new_addr, 4) < 0)
		return -DROP_CSUM_L3;
	if (lb4_load16(ctx, ip + 10, &ipc_new) < 0)
		return -DROP_INVALID_ICMP_INNER;
	if (bpf_l3_csum_replace(ctx, icmp_csum, old_addr, new_addr, 4) < 0 ||
	    bpf_l3_csum_replace(ctx, icmp_csum, ipc_old, ipc_new, 2) < 0)
		return -DROP_CSUM_L4;
	if (p->inner.protocol != IPPROTO_TCP && p->inner.protocol != IPPROTO_UDP)
		return CTX_ACT_OK;

	if (l4_csum && lb4_load16(ctx, l4_csum, &l4c_old) < 0)
		return -DROP_INVALID_ICMP_INNER;
	if (old_port != new_port) {
		if (bpf_skb_store_bytes(ctx, l4 + (inner_src ? 0 : 2), &new_port, 2, 0) < 0)
			return -DROP_WRITE_ERROR;
		if (bpf_l3_csum_replace(ctx, icmp_csum, old_port, new_port, 2) < 0)
			return -DROP_CSUM_L4;
	}
	/* A quoted UDP datagram without a checksum keeps none. */
	if (!l4_csum || (p->inner.protocol == IPPROTO_UDP && !l4c_old))
		return CTX_ACT_OK;
	if (bpf_l3_csum_replace(ctx, l4_csum, old_addr, new_addr, 4) < 0 ||
	    (old_port != new_port && bpf_l3_csum_replace(ctx, l4_csum, old_port, new_port, 2) < 0))
		return -DROP_CSUM_L4;
	if (lb4_load16(ctx, l4_csum, &l4c_new) < 0)
		return -DROP_INVALID_ICMP_INNER;
	if (bpf_l3_csum_replace(ctx, icmp_csum, l4c_old, l4c_new, 2) < 0)
		return -DROP_CSUM_L4;
	return CTX_ACT_OK;
}

/*
 * Reverse NAT on the way to a service's client. `e` and `ct_status` are
 * ct_lookup4's: a reply (CT_REPLY) of a service flow leaves as if the
 * frontend had sent it; an ICMP error about the client's packet (CT_RELATED
 * with the flow's entry) quotes it as the client sent it, to the frontend,
 * and comes from the frontend when the backend itself reports it.
 */
static __always_inline int lb4_rev_nat(struct __sk_buff *ctx, const struct pkt4 *p,
				       const struct ct_entry *e, int ct_status)
{
	struct lb4_reverse_nat *rn;
	__be32 vip;
	__be16 vport;
	__u32 idx;
	int ret;

	if (!e || !e->rev_nat_index)
		return CTX_ACT_OK;
	idx = e->rev_nat_index;
	rn = bpf_map_lookup_elem(&pilus_lb4_rnat, &idx);
	/* The frontend was deleted: its flows' replies go as they are (the
	 * client resets them). A NodePort's (address 0, the node's) replies
	 * leave through the uplink, where to_netdev translates them. */
	if (!rn || !rn->address)
		return CTX_ACT_OK;
	vip = rn->address;
	vport = rn->port;
	if (ct_status == CT_REPLY)
		return lb4_rewrite(ctx, p, false, p->tuple.saddr, vip, p->tuple.sport, vport);
	if (ct_status != CT_RELATED || !p->icmp_error)
		return CTX_ACT_OK;
	ret = lb4_rewrite_icmp_inner(ctx, p, false, p->inner.daddr, vip, p->inner.dport, vport);
	if (ret < 0 || p->tuple.saddr != p->inner.daddr)
		return ret;
	/* ICMP has no pseudo-header: only the IPv4 checksum follows. */
	return lb4_rewrite_l3(ctx, false, p->tuple.saddr, vip);
}

/*
 * An ICMP error a client sends about a reply it got from a frontend (its
 * socket was gone): it goes to the backend that sent the reply, quoting the
 * reply as the backend sent it.
 */
static __always_inline int lb4_icmp_to_backend(struct __sk_buff *ctx, const struct pkt4 *p,
					       __u32 now)
{
	struct ct_key4 key;
	struct ct_entry *e;
	__be32 addr;
	__be16 port;
	int ret;

	ct_key_reverse(&p->inner, &key);
	key.scope = CT_SCOPE_SERVICE;
	e = ct_find(&key, now);
	if (!e)
		return CTX_ACT_OK;	/* about no flow of ours: as it is */
	addr = e->backend_addr;
	port = e->backend_port;
	ret = lb4_rewrite_icmp_inner(ctx, p, true, p->inner.saddr, addr, p->inner.sport, port);
	if (ret < 0 || p->tuple.daddr != p->inner.saddr)
		return ret;
	return lb4_rewrite_l3(ctx, true, p->tuple.daddr, addr);
}

/* A backend id from the current generation of the frontend's slots or
 * Maglev table; -1 when that generation is gone (see lb4_select). */
static __always_inline int lb4_pick(const struct lb4_service *svc, const struct pkt4 *p,
				    __u32 *backend_id)
{
	if (svc->algorithm == LB_ALG_MAGLEV) {
		struct lb4_maglev_key mk = { .id = svc->id, .generation = svc->generation };
		struct lb4_maglev *table = bpf_map_lookup_elem(&pilus_lb4_mag, &mk);
		__u32 idx;

		if (!table)
			return -1;
		idx = jhash_3words(p->tuple.saddr, p->tuple.daddr,
				   ((__u32)p->tuple.sport << 16) | p->tuple.dport, p->tuple.protocol) %
		      LB_MAGLEV_M;
		/* clang turns the modulo into a multiply and shifts the verifier
		 * cannot bound: hide the value from the optimizer and check the
		 * bound where the verifier sees it. */
		asm volatile("" : "+r"(idx));
		if (idx >= LB_MAGLEV_M)
			return -1;
		*backend_id = table->backend_ids[idx];
		return 0;
	}
	struct lb4_slot_key sk = {
		.id = svc->id,
		.generation = svc->generation,
		.slot = bpf_get_prandom_u32() % svc->count,
	};
	__u32 *id = bpf_map_lookup_elem(&pilus_lb4_slot, &sk);

	if (!id)
		return -1;
	*backend_id = *id;
	return 0;
}

/* A backend of the frontend's current backend set (or -1, see lb4_select). */
static __always_inline int lb4_pick_backend(const struct lb4_service *svc, const struct pkt4 *p,
					    __u32 *backend_id, struct lb4_backend *backend)
{
	struct lb4_backend *be;

	if (lb4_pick(svc, p, backend_id) < 0)
		return -1;
	be = bpf_map_lookup_elem(&pilus_lb4_be, backend_id);
	if (!be)
		return -1;
	*backend = *be;
	return 0;
}

/*
 * Chooses a backend for a new flow to frontend `key` (whose entry *svc was
 * read): the client's affinity backend while it lasts and is active, else
 * one from the slots (random) or the Maglev table (by the flow's hash).
 */
static __always_inline int lb4_select(const struct lb4_key *key, struct lb4_service *svc,
				      const struct pkt4 *p, __u32 now, __u32 *backend_id,
				      struct lb4_backend *backend)
{
	struct lb4_affinity_key ak = { .id = svc->id, .client = p->tuple.saddr };
	struct lb4_service *again;

	if (svc->flags & LB_F_AFFINITY) {
		struct lb4_affinity *a = bpf_map_lookup_elem(&pilus_lb4_aff, &ak);
		struct lb4_backend *be = NULL;
		__u32 id = 0;

		if (a && a->expires > now) {
			id = a->backend_id;
			be = bpf_map_lookup_elem(&pilus_lb4_be, &id);
		}
		/* Backend ids are per frontend and never reused: one that is
		 * still there is still this frontend's. */
		if (be && be->state == LB_BACKEND_ACTIVE) {
			*backend_id = id;
			*backend = *be;
			goto chosen;
		}
	}
	if (!svc->count)
		return -DROP_NO_SERVICE_BACKEND;
	if (lb4_pick_backend(svc, p, backend_id, backend) < 0) {
		/* The writer swapped the entry for a new generation, and then
		 * deleted the old one's slots, between our two lookups: the
		 * entry read again names the new generation. */
		again = bpf_map_lookup_elem(&pilus_lb4_svc, key);
		if (!again || !again->count)
			return -DROP_NO_SERVICE_BACKEND;
		*svc = *again;
		if (lb4_pick_backend(svc, p, backend_id, backend) < 0)
			return -DROP_NO_SERVICE_BACKEND;
	}
chosen:
	if (svc->flags & LB_F_AFFINITY) {
		struct lb4_affinity a = {
			.backend_id = *backend_id,
			.expires = now + svc->affinity_timeout,
		};

		/* Best effort: a lost entry only loses stickiness. */
		bpf_map_update_elem(&pilus_lb4_aff, &ak, &a, BPF_ANY);
	}
	return CTX_ACT_OK;
}

/*
 * Translates a pod's packet to a frontend: the flow's pinned backend, or a
 * new choice pinned in a service conntrack entry; then DNAT. *rev_nat is set
 * to the frontend's id, for the flow's own conntrack entry.
 */
static __always_inline int lb4_local(struct __sk_buff *ctx, const struct pkt4 *p, __u32 now,
				     __u32 *rev_nat)
{
	struct lb4_key key = lb4_key_of(p->tuple.daddr, p->tuple.dport, p->tuple.protocol);
	struct lb4_backend be = {};
	struct lb4_service *svcp, svc;
	struct ct_entry *se;
	__u32 backend_id = 0;
	int ret;

	svcp = lb4_lookup_service(&key);
	if (!svcp)
		return CTX_ACT_OK;	/* deleted since ipv4_from_lxc looked */
	/* A copy: the map's value may be swapped while we use it. */
	svc = *svcp;
	se = ct_lookup_service(p, ctx->len, now);
	if (se) {
		be.address = se->backend_addr;
		be.port = se->backend_port;
	} else {
		ret = lb4_select(&key, &svc, p, now, &backend_id, &be);
		if (ret < 0)
			return ret;
		ret = ct_create_service(p, ctx->len, now, backend_id, be.address, be.port);
		if (ret < 0)
			return ret;
	}
	*rev_nat = svc.id;
	return lb4_rewrite(ctx, p, true, p->tuple.daddr, be.address, p->tuple.dport, be.port);
}

#endif /* PILUS_LB_H */
