/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * VXLAN between nodes: a pod's packet for a pod on another node leaves
 * through the node's VXLAN device (external / collect_md mode) with a tunnel
 * key naming the other node's underlay address and, as the VNI, the sending
 * pod's security identity (Cilium carries it the same way), so the receiver
 * knows who sent it without a lookup.
 */
#ifndef PILUS_ENCAP_H
#define PILUS_ENCAP_H

#include "common.h"
#include "config.h"

/* Outer TTL: the underlay is a few hops at most. */
#define TUNNEL_TTL 64

/*
 * Sets the tunnel key and redirects to the VXLAN device. Returns
 * TC_ACT_REDIRECT or -DROP_*.
 *
 * A packet that would not fit the underlay once encapsulated is dropped with
 * a reason of its own instead of being lost silently further down. Pods get
 * CONFIG_TUNNEL_MTU as their MTU, so this only catches what ignores it; a GSO
 * packet is cut into segments the pod's MTU already sized, so only its
 * segment size is checked.
 */
static __always_inline int encap_and_redirect(struct __sk_buff *ctx, __be32 tunnel_endpoint,
					      __u32 src_identity)
{
	struct bpf_tunnel_key key = {};
	__u32 l3_len = ctx->len - ETH_HLEN;

	if (ctx->gso_segs > 1) {
		if (ctx->gso_size > CONFIG_TUNNEL_MTU)
			return -DROP_FRAG_NEEDED;
	} else if (l3_len > CONFIG_TUNNEL_MTU) {
		return -DROP_FRAG_NEEDED;
	}
	key.remote_ipv4 = bpf_ntohl(tunnel_endpoint);
	/* The VNI is 24 bits: cluster identities (< 65536) fit; local (CIDR)
	 * identities never name a sending pod. */
	key.tunnel_id = src_identity & 0xffffff;
	key.tunnel_ttl = TUNNEL_TTL;
	if (bpf_skb_set_tunnel_key(ctx, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return -DROP_TUNNEL_KEY;
	return bpf_redirect(CONFIG_TUNNEL_IFINDEX, 0);
}

/* The sender's identity, from the VNI of a frame the VXLAN device received.
 * Returns 0 or -DROP_NO_TUNNEL_KEY. */
static __always_inline int tunnel_source_identity(struct __sk_buff *ctx, __u32 *identity)
{
	struct bpf_tunnel_key key = {};

	if (bpf_skb_get_tunnel_key(ctx, &key, sizeof(key), 0) < 0)
		return -DROP_NO_TUNNEL_KEY;
	*identity = key.tunnel_id;
	return CTX_ACT_OK;
}

#endif /* PILUS_ENCAP_H */
