/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Masquerade (Cilium's SNAT, lib/nat.h): a pod's packet leaving the node for
 * an address outside the cluster leaves from the node's address
 * (CONFIG_NAT_IP4) and a port allocated for the flow; the reply, arriving at
 * that address and port, is translated back to the pod's before anything
 * else looks at it. The two entries of a flow in pilus_nat4 and how they
 * lapse are described in abi.h.
 */
#ifndef PILUS_NAT_H
#define PILUS_NAT_H

#include <linux/in.h>

#include "common.h"
#include "config.h"
#include "maps.h"
#include "ipv4.h"
#include "ipcache.h"
#include "hash.h"
#include "lb.h"

/* Ports tried for a new flow before it is dropped (Cilium's
 * SNAT_COLLISION_RETRIES): the pod's own port, then random ones. */
#define NAT_COLLISION_RETRIES	32

#ifndef EEXIST
#define EEXIST	17
#endif

/* Is `addr` outside the cluster? Pods and nodes are in the ipcache with
 * their identities; the world is not (or is, as identity 2), and neither is
 * a policy's CIDR (a local identity). */
static __always_inline bool nat4_outside(__be32 addr)
{
	struct ipcache_value *v = ipcache_lookup(addr);

	if (!v)
		return true;
	return v->sec_identity == IDENTITY_WORLD || v->sec_identity >= IDENTITY_LOCAL_MIN;
}

/* Masquerade translates TCP, UDP and ICMP echo (the identifier is the port):
 * a request on the way out, its reply on the way in. Other packets pass as
 * they are. */
static __always_inline bool nat4_handles(const struct pkt4 *p, __u8 echo_type)
{
	if (p->tuple.protocol == IPPROTO_TCP || p->tuple.protocol == IPPROTO_UDP)
		return true;
	return p->tuple.protocol == IPPROTO_ICMP && !p->icmp_error &&
	       p->policy_port == bpf_htons(echo_type);
}

/* An entry's lifetime, from what its direction has seen: conntrack's
 * lifetimes, so a mapping never outlives the flow's conntrack entry by
 * much nor lapses before it. */
static __always_inline __u32 nat4_lifetime(__u8 protocol, __u16 flags)
{
	if (protocol != IPPROTO_TCP)
		return CONFIG_CT_LIFETIME_NONTCP;
	if (flags & NAT_F_CLOSING)
		return CONFIG_CT_CLOSE_TIMEOUT;
	if (flags & NAT_F_SEEN_NON_SYN)
		return CONFIG_CT_LIFETIME_TCP;
	return CONFIG_CT_SYN_TIMEOUT;
}

static __always_inline void nat4_account(struct nat_entry4 *e, const struct pkt4 *p, __u32 now)
{
	__u16 flags = e->flags;

	if (p->tuple.protocol == IPPROTO_TCP) {
		/* A bare SYN starts the connection (again, when the tuple is
		 * reused after a close): the earlier state no longer counts. */
		if ((p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
			flags = 0;
		else
			flags |= NAT_F_SEEN_NON_SYN;
		if (p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST))
			flags |= NAT_F_CLOSING;
	}
	e->flags = flags;
	e->packets++;
	e->expires = now + nat4_lifetime(p->tuple.protocol, flags);
}

/*
 * Rewrites the source (dst false) or destination address and port of a
 * translated packet with its checksums. TCP and UDP as the service LB
 * rewrites them; an ICMP echo's identifier sits under a checksum without
 * pseudo-header, so the address change leaves that checksum alone.
 */
static __always_inline int nat4_rewrite(struct __sk_buff *ctx, const struct pkt4 *p, bool dst,
					__be32 old_addr, __be32 new_addr, __be16 old_port,
					__be16 new_port)
{
	int ret;

	if (p->tuple.protocol != IPPROTO_ICMP)
		return lb4_rewrite(ctx, p, dst, old_addr, new_addr, old_port, new_port);
	ret = lb4_rewrite_l3(ctx, dst, old_addr, new_addr);
	if (ret < 0 || p->later_frag || old_port == new_port)
		return ret;
	if (bpf_skb_store_bytes(ctx, p->l4_off + 4, &new_port, 2, 0) < 0)
		return -DROP_WRITE_ERROR;
	if (bpf_l4_csum_replace(ctx, p->l4_off + 2, old_port, new_port, 2) < 0)
		return -DROP_CSUM_L4;
	return CTX_ACT_OK;
}

/*
 * A new flow's mapping: a port of the NAT range is claimed by writing the
 * reply's entry with BPF_NOEXIST (a port another flow to the same peer
 * holds is taken already, whichever CPU wrote it), then the flow's own
 * entry. The pod's port is kept when it is in the range and free; else
 * random ports are tried, NAT_COLLISION_RETRIES in all.
 */
static __always_inline int nat4_new_mapping(const struct pkt4 *p, const struct nat_key4 *okey,
					    __u32 now, __be16 *port)
{
	struct nat_key4 rkey = {
		.saddr = p->tuple.daddr,
		.daddr = CONFIG_NAT_IP4,
		.sport = p->tuple.dport,
		.protocol = p->tuple.protocol,
		.direction = NAT_DIR_INGRESS,
	};
	struct nat_entry4 rval = {
		.to_addr = p->tuple.saddr,
		.to_port = p->tuple.sport,
		.created = now,
		.expires = now + nat4_lifetime(p->tuple.protocol, 0),
	};
	struct nat_entry4 oval = {
		.to_addr = CONFIG_NAT_IP4,
		.created = now,
	};
	struct nat_entry4 *raced;
	__u32 min = CONFIG_NAT_PORT_MIN, range, off, i;
	int ret;

	if (CONFIG_NAT_PORT_MAX < min)
		return -DROP_NAT_NO_PORT;
	range = CONFIG_NAT_PORT_MAX - min + 1;
	off = bpf_ntohs(p->tuple.sport) - min;
	if (off >= range)
		off = jhash_3words(p->tuple.saddr, p->tuple.daddr,
				   ((__u32)p->tuple.sport << 16) | p->tuple.dport,
				   p->tuple.protocol) % range;
	for (i = 0; i < NAT_COLLISION_RETRIES; i++) {
		rkey.dport = bpf_htons((__u16)(min + off));
		ret = bpf_map_update_elem(&pilus_nat4, &rkey, &rval, BPF_NOEXIST);
		if (!ret)
			goto claimed;
		if (ret != -EEXIST)
			return -DROP_NAT_CREATE_FAILED;
		off = bpf_get_prandom_u32() % range;
	}
	return -DROP_NAT_NO_PORT;
claimed:
	oval.to_port = rkey.dport;
	nat4_account(&oval, p, now);
	ret = bpf_map_update_elem(&pilus_nat4, okey, &oval, BPF_NOEXIST);
	if (ret < 0) {
		bpf_map_delete_elem(&pilus_nat4, &rkey);
		if (ret != -EEXIST)
			return -DROP_NAT_CREATE_FAILED;
		/* Another CPU mapped the same flow first: its mapping it is. */
		raced = bpf_map_lookup_elem(&pilus_nat4, okey);
		if (!raced)
			return -DROP_NAT_CREATE_FAILED;
		*port = raced->to_port;
		return CTX_ACT_OK;
	}
	*port = rkey.dport;
	return CTX_ACT_OK;
}

/* Masquerades a pod's packet to the outside (the caller checked that it
 * is one): the flow's mapping, or a new one; then SNAT. */
static __always_inline int nat4_snat(struct __sk_buff *ctx, const struct pkt4 *p, __u32 now)
{
	struct nat_key4 key = {
		.saddr = p->tuple.saddr,
		.daddr = p->tuple.daddr,
		.sport = p->tuple.sport,
		.dport = p->tuple.dport,
		.protocol = p->tuple.protocol,
		.direction = NAT_DIR_EGRESS,
	};
	struct nat_entry4 *e;
	__be16 port;
	int ret;

	e = bpf_map_lookup_elem(&pilus_nat4, &key);
	if (e) {
		port = e->to_port;
		nat4_account(e, p, now);
	} else {
		ret = nat4_new_mapping(p, &key, now, &port);
		if (ret < 0)
			return ret;
	}
	return nat4_rewrite(ctx, p, false, p->tuple.saddr, CONFIG_NAT_IP4, p->tuple.sport, port);
}

/*
 * An ICMP error to the node's address about a masqueraded packet (a port
 * unreachable from the peer, a fragmentation-needed from a router on the
 * way): the quoted packet left from the node's address and port, so its
 * reply entry (the quote reversed) names the pod. The quote's source and
 * the error's destination become the pod's, and *p with them, so that the
 * pod's conntrack finds the flow (RELATED) and the pod's socket the error.
 */
static __always_inline int nat4_rev_snat_icmp_error(struct __sk_buff *ctx, struct pkt4 *p)
{
	struct nat_key4 key = {
		.saddr = p->inner.daddr,
		.daddr = p->inner.saddr,
		.sport = p->inner.dport,
		.dport = p->inner.sport,
		.protocol = p->inner.protocol,
		.direction = NAT_DIR_INGRESS,
	};
	struct nat_entry4 *e;
	__be32 addr;
	__be16 port;
	int ret;

	if (p->inner.saddr != p->tuple.daddr)
		return CTX_ACT_OK;
	e = bpf_map_lookup_elem(&pilus_nat4, &key);
	if (!e)
		return CTX_ACT_OK;
	addr = e->to_addr;
	port = e->to_port;
	ret = lb4_rewrite_icmp_inner(ctx, p, true, p->inner.saddr, addr, p->inner.sport, port);
	if (ret < 0)
		return ret;
	/* ICMP has no pseudo-header: only the IPv4 checksum follows. */
	ret = lb4_rewrite_l3(ctx, true, p->tuple.daddr, addr);
	if (ret < 0)
		return ret;
	p->inner.saddr = addr;
	p->inner.sport = port;
	p->tuple.daddr = addr;
	return 1;
}

/*
 * Reverse SNAT of a packet to the node's address: a reply of a masqueraded
 * flow (or an ICMP error about one) is translated to the pod's address and
 * port, and *p with it (the caller goes on to deliver it). Anything else
 * (the node's own traffic) is left as it is. Returns 1 when it translated,
 * 0 when not, or -DROP_*.
 */
static __always_inline int nat4_rev_snat(struct __sk_buff *ctx, struct pkt4 *p, __u32 now)
{
	struct nat_key4 key = {
		.saddr = p->tuple.saddr,
		.daddr = p->tuple.daddr,
		.sport = p->tuple.sport,
		.dport = p->tuple.dport,
		.protocol = p->tuple.protocol,
		.direction = NAT_DIR_INGRESS,
	};
	struct nat_entry4 *e;
	__be32 addr;
	__be16 port;
	int ret;

	if (p->icmp_error)
		return nat4_rev_snat_icmp_error(ctx, p);
	if (!nat4_handles(p, ICMP_ECHOREPLY))
		return CTX_ACT_OK;
	e = bpf_map_lookup_elem(&pilus_nat4, &key);
	if (!e)
		return CTX_ACT_OK;
	nat4_account(e, p, now);
	addr = e->to_addr;
	port = e->to_port;
	ret = nat4_rewrite(ctx, p, true, p->tuple.daddr, addr, p->tuple.dport, port);
	if (ret < 0)
		return ret;
	p->tuple.daddr = addr;
	p->tuple.dport = port;
	if (p->tuple.protocol != IPPROTO_ICMP)
		p->policy_port = port;
	return 1;
}

#endif /* PILUS_NAT_H */
