/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking for IPv4: one LRU entry per flow, keyed by the tuple of
 * its first packet. A packet is ESTABLISHED (its own tuple is there), a REPLY
 * (the reversed tuple is there), RELATED (an ICMP error about a tracked flow)
 * or NEW. A reply-direction packet with no entry is simply NEW: it meets
 * policy like any other first packet, never a free pass.
 *
 * A flow to a service also has a CT_SCOPE_SERVICE entry, keyed by the tuple
 * the client sent, which pins the chosen backend (lib/lb.h); only the
 * client's packets meet it.
 */
#ifndef PILUS_CONNTRACK_H
#define PILUS_CONNTRACK_H

#include "common.h"
#include "config.h"
#include "ipv4.h"
#include "maps.h"

#define CT_F_CLOSING	(CT_F_TX_CLOSING | CT_F_RX_CLOSING)

/* Monitor aggregation's per-flow state (ct_has_news in lib/events.h): the
 * TCP flags whose first appearance in a direction is news at medium and
 * maximum (an ACK-only or PSH packet of an established flow is not), and
 * the bit of ct_entry.{tx,rx}_flags_reported saying the direction was
 * reported once (CWR's bit, outside the report flags, so the two never mix). */
#define MONITOR_REPORT_FLAGS	(TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST)
#define MONITOR_REPORTED_ONCE	0x80

static __always_inline void ct_key_reverse(const struct ct_key4 *in, struct ct_key4 *out)
{
	out->saddr = in->daddr;
	out->daddr = in->saddr;
	out->sport = in->dport;
	out->dport = in->sport;
	out->protocol = in->protocol;
	out->scope = CT_SCOPE_FLOW;
	out->_pad[0] = 0;
	out->_pad[1] = 0;
}

/* Lifetimes follow the TCP state: a handshake gets CT_SYN_TIMEOUT, an
 * established flow CT_LIFETIME_TCP, one closed both ways CT_CLOSE_TIMEOUT.
 * A service entry sees only the client's packets: the client's first
 * non-SYN (its handshake ACK) establishes it, its FIN or RST closes it. */
static __always_inline __u32 ct_lifetime(const struct ct_entry *e, __u8 protocol, __u8 scope)
{
	if (protocol != IPPROTO_TCP)
		return CONFIG_CT_LIFETIME_NONTCP;
	if (scope == CT_SCOPE_SERVICE) {
		if (e->flags & CT_F_CLOSING)
			return CONFIG_CT_CLOSE_TIMEOUT;
		if (e->flags & CT_F_SEEN_NON_SYN)
			return CONFIG_CT_LIFETIME_TCP;
		return CONFIG_CT_SYN_TIMEOUT;
	}
	if ((e->flags & CT_F_CLOSING) == CT_F_CLOSING)
		return CONFIG_CT_CLOSE_TIMEOUT;
	if ((e->flags & (CT_F_SEEN_REPLY | CT_F_SEEN_NON_SYN)) ==
	    (CT_F_SEEN_REPLY | CT_F_SEEN_NON_SYN))
		return CONFIG_CT_LIFETIME_TCP;
	return CONFIG_CT_SYN_TIMEOUT;
}

static __always_inline void ct_account(struct ct_entry *e, bool reply, const struct pkt4 *p,
				       __u32 len, __u32 now, __u8 scope)
{
	__u8 closing = 0;

	if (reply) {
		e->rx_packets++;
		e->rx_bytes += len;
		e->rx_tcp_flags |= p->tcp_flags;
		e->flags |= CT_F_SEEN_REPLY;
		if (p->tcp_flags & TCP_FLAG_FIN)
			closing = CT_F_RX_CLOSING;
	} else {
		e->tx_packets++;
		e->tx_bytes += len;
		e->tx_tcp_flags |= p->tcp_flags;
		if (p->tcp_flags & TCP_FLAG_FIN)
			closing = CT_F_TX_CLOSING;
	}
	/* A reset ends the flow for both sides at once. */
	if (p->tcp_flags & TCP_FLAG_RST)
		closing = CT_F_CLOSING;
	if (p->tuple.protocol == IPPROTO_TCP && !(p->tcp_flags & TCP_FLAG_SYN))
		e->flags |= CT_F_SEEN_NON_SYN;
	e->flags |= closing;
	e->expires = now + ct_lifetime(e, p->tuple.protocol, scope);
}

/* A bare SYN on a tuple whose connection already closed both ways (for a
 * service entry: that the client closed) is a new connection reusing the
 * ports: it must meet policy, and a service's choice of backend, again. */
static __always_inline bool ct_is_reopen(const struct ct_entry *e, const struct pkt4 *p,
					 __u8 scope)
{
	__u16 closed = scope == CT_SCOPE_SERVICE ? (e->flags & CT_F_CLOSING) :
		       (e->flags & CT_F_CLOSING) == CT_F_CLOSING;

	return p->tuple.protocol == IPPROTO_TCP &&
	       (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN && closed;
}

static __always_inline struct ct_entry *ct_find(const struct ct_key4 *key, __u32 now)
{
	struct ct_entry *e = bpf_map_lookup_elem(&pilus_ct4, key);

	/* An expired entry is as good as none; LRU or GC will reclaim it. */
	if (e && e->expires <= now)
		return NULL;
	return e;
}

/*
 * Classifies the packet and, for a tracked flow, updates its entry. *entry is
 * the flow's entry for ESTABLISHED and REPLY, and for RELATED when the error
 * quotes a packet of the flow's originator (so it travels back to the
 * originator, as a reply does: a service flow's reverse NAT applies to it).
 */
static __always_inline int ct_lookup4(const struct pkt4 *p, __u32 len, __u32 now,
				      struct ct_entry **entry)
{
	struct ct_key4 rev;
	struct ct_entry *e;

	*entry = NULL;
	e = ct_find(&p->tuple, now);
	if (e) {
		if (ct_is_reopen(e, p, CT_SCOPE_FLOW))
			return CT_NEW;
		ct_account(e, false, p, len, now, CT_SCOPE_FLOW);
		*entry = e;
		return CT_ESTABLISHED;
	}
	ct_key_reverse(&p->tuple, &rev);
	e = ct_find(&rev, now);
	if (e) {
		ct_account(e, true, p, len, now, CT_SCOPE_FLOW);
		*entry = e;
		return CT_REPLY;
	}
	if (p->icmp_error) {
		/* The quoted packet went the other way: from us, if we sent it. */
		e = ct_find(&p->inner, now);
		if (e) {
			*entry = e;
			return CT_RELATED;
		}
		ct_key_reverse(&p->inner, &rev);
		if (ct_find(&rev, now))
			return CT_RELATED;
	}
	return CT_NEW;
}

/* Tracks a new flow. `rev_nat_index`: the frontend a service flow's replies
 * must come from (0: not a service flow). */
static __always_inline int ct_create4(const struct pkt4 *p, __u32 len, __u32 now,
				      __u32 src_identity, __u32 policy_rev, __u32 rev_nat_index)
{
	struct ct_entry e = {
		.src_identity = src_identity,
		.policy_rev = policy_rev,
		/* A new flow's first packet is traced at every aggregation level:
		 * its direction starts out reported. */
		.tx_flags_reported = (p->tcp_flags & MONITOR_REPORT_FLAGS) | MONITOR_REPORTED_ONCE,
		.last_tx_report = (__u16)now,
		.rev_nat_index = rev_nat_index,
	};

	ct_account(&e, false, p, len, now, CT_SCOPE_FLOW);
	/* The table is a plain hash: full, the update fails and the flow is
	 * dropped (fail closed, counted) until the agent's GC makes room. */
	if (bpf_map_update_elem(&pilus_ct4, &p->tuple, &e, BPF_ANY) < 0)
		return -DROP_CT_CREATE_FAILED;
	return CTX_ACT_OK;
}

/* The service entry of the packet's flow (keyed by the tuple as the client
 * sent it), accounted; NULL for a new flow or a reopened one. */
static __always_inline struct ct_entry *ct_lookup_service(const struct pkt4 *p, __u32 len,
							  __u32 now)
{
	struct ct_key4 key = p->tuple;
	struct ct_entry *e;

	key.scope = CT_SCOPE_SERVICE;
	e = ct_find(&key, now);
	if (!e || ct_is_reopen(e, p, CT_SCOPE_SERVICE))
		return NULL;
	ct_account(e, false, p, len, now, CT_SCOPE_SERVICE);
	return e;
}

/* Pins a new service flow to the backend chosen for it. */
static __always_inline int ct_create_service(const struct pkt4 *p, __u32 len, __u32 now,
					     __u32 backend_id, __be32 addr, __be16 port)
{
	struct ct_key4 key = p->tuple;
	struct ct_entry e = {
		.backend_id = backend_id,
		.backend_addr = addr,
		.backend_port = port,
	};

	key.scope = CT_SCOPE_SERVICE;
	ct_account(&e, false, p, len, now, CT_SCOPE_SERVICE);
	if (bpf_map_update_elem(&pilus_ct4, &key, &e, BPF_ANY) < 0)
		return -DROP_CT_CREATE_FAILED;
	return CTX_ACT_OK;
}

#endif /* PILUS_CONNTRACK_H */
