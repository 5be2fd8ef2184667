/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4 and L4 parsing into the tuple conntrack and policy work on, including
 * options, fragments (ports learned from the first fragment) and the inner
 * tuple of ICMP errors; and the TTL decrement of a routed packet.
 *
 * The IPv4 header sits at a fixed offset and is read in place; everything
 * after it starts at a variable offset (IHL) and is copied out with
 * bpf_skb_load_bytes, which bounds-checks for us and also reads non-linear
 * data, so the verifier never has to prove a variable packet offset.
 */
#ifndef PILUS_IPV4_H
#define PILUS_IPV4_H

#include <stddef.h>
#include <linux/ip.h>
#include <linux/in.h>

#include "common.h"
#include "maps.h"

/* ICMP types (linux/icmp.h pulls in libc headers a BPF build cannot use). */
#define ICMP_ECHOREPLY		0
#define ICMP_DEST_UNREACH	3
#define ICMP_SOURCE_QUENCH	4
#define ICMP_REDIRECT		5
#define ICMP_ECHO		8
#define ICMP_TIME_EXCEEDED	11
#define ICMP_PARAMETERPROB	12

#define IP4_MIN_LEN	(ETH_HLEN + sizeof(struct iphdr))
#define IP_MF		0x2000
#define IP_OFFSET_MASK	0x1fff

#define TCP_FLAG_FIN	0x01
#define TCP_FLAG_SYN	0x02
#define TCP_FLAG_RST	0x04
#define TCP_FLAG_ACK	0x10

/* What the rest of the datapath knows about an IPv4 packet. */
struct pkt4 {
	struct ct_key4 tuple;	/* in the packet's direction */
	struct ct_key4 inner;	/* ICMP errors: the tuple of the packet in error */
	__u32 l4_off;
	__u32 end;		/* offset just past the datagram (Ethernet + total length) */
	__be16 policy_port;	/* dport, or the ICMP type for ICMP */
	__u8 tcp_flags;
	__u8 icmp_error;	/* 1: inner holds the offending tuple */
	__u8 ttl;
	__u8 later_frag;	/* 1: a non-first fragment, no L4 header in this packet */
	__u8 _pad[2];
};

static __always_inline bool icmp_is_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_SOURCE_QUENCH ||
	       type == ICMP_REDIRECT || type == ICMP_TIME_EXCEEDED ||
	       type == ICMP_PARAMETERPROB;
}

/* Ports of an ICMP message in the tuple: an echo's identifier rides in sport on
 * requests and in dport on replies, so a reply reversed finds its request. */
static __always_inline void icmp_ports(__u8 type, __be16 id, __be16 *sport, __be16 *dport)
{
	*sport = 0;
	*dport = 0;
	if (type == ICMP_ECHO)
		*sport = id;
	else if (type == ICMP_ECHOREPLY)
		*dport = id;
}

/* Reads the tuple of the datagram quoted in an ICMP error (RFC 792: its IP
 * header and at least its first 8 bytes). */
static __always_inline int parse_icmp_inner(struct __sk_buff *ctx, __u32 off, __u32 end,
					    struct ct_key4 *inner)
{
	struct iphdr ip;
	__u8 l4[8];
	__u32 hlen;

	if (off + sizeof(ip) > end || bpf_skb_load_bytes(ctx, off, &ip, sizeof(ip)) < 0)
		return -DROP_INVALID_ICMP_INNER;
	hlen = ip.ihl * 4;
	if (ip.version != 4 || hlen < sizeof(ip))
		return -DROP_INVALID_ICMP_INNER;
	if (off + hlen + sizeof(l4) > end ||
	    bpf_skb_load_bytes(ctx, off + hlen, l4, sizeof(l4)) < 0)
		return -DROP_INVALID_ICMP_INNER;
	inner->saddr = ip.saddr;
	inner->daddr = ip.daddr;
	inner->protocol = ip.protocol;
	if (ip.protocol == IPPROTO_TCP || ip.protocol == IPPROTO_UDP) {
		__builtin_memcpy(&inner->sport, &l4[0], 2);
		__builtin_memcpy(&inner->dport, &l4[2], 2);
	} else if (ip.protocol == IPPROTO_ICMP) {
		__be16 id;

		__builtin_memcpy(&id, &l4[4], 2);
		icmp_ports(l4[0], id, &inner->sport, &inner->dport);
	}
	return CTX_ACT_OK;
}

/* Reads L4 ports and flags from a packet that carries its L4 header. */
static __always_inline int parse_l4(struct __sk_buff *ctx, __u32 end, struct pkt4 *p)
{
	__u32 off = p->l4_off;

	switch (p->tuple.protocol) {
	case IPPROTO_TCP: {
		__u8 tcp[20];

		if (off + sizeof(tcp) > end)
			return -DROP_INVALID_L4;
		/* Fast path, no IP options (nearly every packet): copy from a
		 * constant packet offset, no helper call. Otherwise let the helper
		 * copy from the variable offset. */
		void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);

		if (off == ETH_HLEN + 20 && data + ETH_HLEN + 20 + sizeof(tcp) <= data_end) {
			__builtin_memcpy(tcp, data + ETH_HLEN + 20, sizeof(tcp));
		} else if (bpf_skb_load_bytes(ctx, off, tcp, sizeof(tcp)) < 0) {
			return -DROP_INVALID_L4;
		}
		if ((tcp[12] >> 4) * 4 < sizeof(tcp) || off + (tcp[12] >> 4) * 4 > end)
			return -DROP_INVALID_L4;
		__builtin_memcpy(&p->tuple.sport, &tcp[0], 2);
		__builtin_memcpy(&p->tuple.dport, &tcp[2], 2);
		p->tcp_flags = tcp[13];
		p->policy_port = p->tuple.dport;
		break;
	}
	case IPPROTO_UDP: {
		__be16 ports[2];

		if (off + 8 > end || bpf_skb_load_bytes(ctx, off, ports, sizeof(ports)) < 0)
			return -DROP_INVALID_L4;
		p->tuple.sport = ports[0];
		p->tuple.dport = ports[1];
		p->policy_port = ports[1];
		break;
	}
	case IPPROTO_ICMP: {
		__u8 icmp[8];
		__be16 id;

		if (off + sizeof(icmp) > end || bpf_skb_load_bytes(ctx, off, icmp, sizeof(icmp)) < 0)
			return -DROP_INVALID_L4;
		__builtin_memcpy(&id, &icmp[4], 2);
		icmp_ports(icmp[0], id, &p->tuple.sport, &p->tuple.dport);
		p->policy_port = bpf_htons(icmp[0]);
		if (icmp_is_error(icmp[0])) {
			p->icmp_error = 1;
			return parse_icmp_inner(ctx, off + sizeof(icmp), end, &p->inner);
		}
		break;
	}
	default:
		/* Other protocols have no ports: L3-only policy decides them. */
		break;
	}
	return CTX_ACT_OK;
}

/*
 * Parses the IPv4 packet after the Ethernet header into *p.
 * Fragments: the first fragment carries the L4 header and records its ports
 * in pilus_frag4; later fragments take the ports from there, so conntrack and
 * port policy treat every fragment of a datagram alike. A later fragment whose
 * first was never seen (reordered, or forged) is dropped: it cannot be matched
 * to any port rule.
 */
static __always_inline int ipv4_parse(struct __sk_buff *ctx, struct pkt4 *p)
{
	void *data, *data_end;
	struct iphdr *ip;
	__u32 hlen, tot_len, end;
	__u16 frag;

	if (!ctx_pull(ctx, IP4_MIN_LEN, &data, &data_end))
		return -DROP_INVALID_IPV4;
	ip = data + ETH_HLEN;
	hlen = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	if (ip->version != 4 || hlen < sizeof(*ip) || tot_len < hlen ||
	    ETH_HLEN + tot_len > ctx->len)
		return -DROP_INVALID_IPV4;

	p->tuple.saddr = ip->saddr;
	p->tuple.daddr = ip->daddr;
	p->tuple.protocol = ip->protocol;
	p->ttl = ip->ttl;
	p->l4_off = ETH_HLEN + hlen;
	end = ETH_HLEN + tot_len;
	p->end = end;
	frag = bpf_ntohs(ip->frag_off);

	if (frag & IP_OFFSET_MASK) {
		struct frag_key4 fk = {
			.saddr = ip->saddr, .daddr = ip->daddr,
			.id = ip->id, .protocol = ip->protocol,
		};
		struct frag_ports *ports;

		p->later_frag = 1;
		ports = bpf_map_lookup_elem(&pilus_frag4, &fk);
		if (!ports)
			return -DROP_FRAG_NOT_FOUND;
		p->tuple.sport = ports->sport;
		p->tuple.dport = ports->dport;
		p->policy_port = ports->policy_port;
		return CTX_ACT_OK;
	}

	if (frag & IP_MF) {
		struct frag_key4 fk = {
			.saddr = ip->saddr, .daddr = ip->daddr,
			.id = ip->id, .protocol = ip->protocol,
		};
		struct frag_ports ports = {};
		int ret = parse_l4(ctx, end, p);

		if (ret < 0)
			return ret;
		ports.sport = p->tuple.sport;
		ports.dport = p->tuple.dport;
		ports.policy_port = p->policy_port;
		if (bpf_map_update_elem(&pilus_frag4, &fk, &ports, BPF_ANY) < 0)
			return -DROP_FRAG_TRACK_FAILED;
		return CTX_ACT_OK;
	}
	return parse_l4(ctx, end, p);
}

/*
 * Decrements the TTL of a packet the datapath routes itself (local delivery
 * skips the stack, which would otherwise do it), with an incremental checksum
 * update (RFC 1624) of the 16-bit word that holds TTL and protocol.
 */
static __always_inline int ipv4_dec_ttl(struct __sk_buff *ctx)
{
	void *data, *data_end;
	struct iphdr *ip;
	__u16 old, new;

	if (!ctx_pull(ctx, IP4_MIN_LEN, &data, &data_end))
		return -DROP_INVALID_IPV4;
	ip = data + ETH_HLEN;
	if (ip->ttl <= 1)
		return -DROP_TTL_EXCEEDED;
	__builtin_memcpy(&old, &ip->ttl, 2);
	ip->ttl--;
	__builtin_memcpy(&new, &ip->ttl, 2);
	if (bpf_l3_csum_replace(ctx, ETH_HLEN + offsetof(struct iphdr, check), old, new, 2) < 0)
		return -DROP_CSUM_L3;
	return CTX_ACT_OK;
}

#endif /* PILUS_IPV4_H */
