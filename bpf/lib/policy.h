/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Policy enforcement: does endpoint `ep_id` allow traffic with peer identity
 * `peer` on (protocol, port) in `dir`? Levels, in Cilium's order:
 *   1. identity/proto/port   2. ANY/proto/port   3. identity/ANY   4. ANY/ANY
 * A deny at any level wins over every allow; with no entry at all the answer
 * is DROP_POLICY (default deny once an endpoint is selected; the caller skips
 * the check for a direction no rule selects).
 */
#ifndef PILUS_POLICY_H
#define PILUS_POLICY_H

#include "common.h"
#include "maps.h"

#define POLICY_NO_MATCH	0
#define POLICY_ALLOW	1

static __always_inline __u32 policy_revision(void)
{
	__u32 zero = 0;
	struct policy_rev *rev = bpf_map_lookup_elem(&pilus_polrev, &zero);

	return rev ? rev->revision : 0;
}

/* The entry that decided, for the policy verdict event. */
struct policy_match {
	__u32 cookie;	/* the entry's cookie (0: none decided, default deny) */
	__u8 level;	/* POLICY_MATCH_* */
};

/* The match level of an entry found for peer `identity` (0: any) whose key
 * fixes `l4_prefix_len` bits of (protocol, port). */
static __always_inline __u8 policy_match_level(__u32 identity, __u8 l4_prefix_len)
{
	if (l4_prefix_len > 8)
		return identity ? POLICY_MATCH_L3_L4 : POLICY_MATCH_L4_ONLY;
	if (l4_prefix_len == 8)
		return identity ? POLICY_MATCH_L3_PROTO : POLICY_MATCH_PROTO_ONLY;
	return identity ? POLICY_MATCH_L3_ONLY : POLICY_MATCH_ALL;
}

static __always_inline int policy_found(const struct policy_key *key,
					const struct policy_value *v, struct policy_match *m,
					int ret)
{
	m->cookie = v->cookie;
	m->level = policy_match_level(key->sec_identity, v->l4_prefix_len);
	return ret;
}

/*
 * Checks both levels of one identity (the packet's peer, or ANY = 0). The
 * full-length LPM lookup returns the longest entry: an L4 entry (levels 1/2)
 * or, failing that, the identity's L3-only entry (levels 3/4). Only when an
 * L4 allow answered can an L3-only deny hide behind it, so only then is the
 * L3-only level looked up on its own. *m names the entry that answered.
 */
static __always_inline int policy_check_identity(struct policy_key *key, struct policy_match *m)
{
	struct policy_value *v, *l3;

	key->prefix_len = POLICY_PREFIX_FULL;
	v = bpf_map_lookup_elem(&pilus_policy, key);
	if (!v)
		return POLICY_NO_MATCH;
	if (v->flags & POLICY_F_DENY)
		return policy_found(key, v, m, -DROP_POLICY_DENY);	/* 1./2. or 3./4. deny */
	if (v->l4_prefix_len) {
		key->prefix_len = POLICY_PREFIX_L3;
		l3 = bpf_map_lookup_elem(&pilus_policy, key);
		if (l3 && (l3->flags & POLICY_F_DENY))
			/* 3./4. deny beats 1./2. allow */
			return policy_found(key, l3, m, -DROP_POLICY_DENY);
	}
	return policy_found(key, v, m, POLICY_ALLOW);
}

/* Does endpoint `ep_id` allow `peer` on (protocol, port) in `dir`? Returns OK
 * or -DROP_POLICY(_DENY); *m names the deciding entry (level NONE, cookie 0
 * for a default deny). */
static __always_inline int policy_can_access(__u16 ep_id, __u8 dir, __u32 peer, __u8 protocol,
					     __be16 port, struct policy_match *m)
{
	struct policy_key key = {
		.sec_identity = peer,
		.ep_id = ep_id,
		.direction = dir,
		.protocol = protocol,
		.dport = port,
	};
	struct policy_match m_id = {}, m_any = {};
	int by_id, by_any;

	m->cookie = 0;
	m->level = POLICY_MATCH_NONE;
	by_id = policy_check_identity(&key, &m_id);		/* 1. and 3. */
	if (by_id < 0) {
		*m = m_id;
		return by_id;
	}
	key.sec_identity = 0;
	by_any = policy_check_identity(&key, &m_any);		/* 2. and 4. */
	if (by_any < 0) {
		*m = m_any;
		return by_any;
	}
	if (by_id == POLICY_ALLOW) {
		*m = m_id;
		return CTX_ACT_OK;
	}
	if (by_any == POLICY_ALLOW) {
		*m = m_any;
		return CTX_ACT_OK;
	}
	return -DROP_POLICY;
}

#endif /* PILUS_POLICY_H */
