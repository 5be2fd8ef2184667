/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Local endpoints: who a packet belongs to, and delivery straight into a pod. */
#ifndef PILUS_LXC_H
#define PILUS_LXC_H

#include "common.h"
#include "config.h"
#include "ipv4.h"
#include "maps.h"

static __always_inline struct endpoint_info *lookup_ep_by_ifindex(__u32 ifindex)
{
	return bpf_map_lookup_elem(&pilus_lxc_if, &ifindex);
}

/* The address's slot in this node's pod CIDR: CONFIG_POD_CIDR4_SIZE or
 * more outside it (the subtraction wraps past the size). */
static __always_inline __u32 pod_cidr_index(__be32 ip4)
{
	return bpf_ntohl(ip4) - bpf_ntohl(CONFIG_POD_CIDR4);
}

static __always_inline struct endpoint_info *lookup_ep_by_ip(__be32 ip4)
{
	__u32 idx = pod_cidr_index(ip4);
	struct endpoint_info *ep;

	if (idx >= CONFIG_POD_CIDR4_SIZE)
		return NULL;
	ep = bpf_map_lookup_elem(&pilus_lxc, &idx);
	return ep && ep->ifindex ? ep : NULL;
}

/*
 * Routes a packet to a pod on this node without the host stack: TTL
 * decrement, MACs of the hop from gateway to pod, then bpf_redirect_peer into
 * the pod's namespace (which is why ip_forward may be 0 on the node).
 * Returns TC_ACT_REDIRECT or -DROP_*.
 */
static __always_inline int ipv4_local_delivery(struct __sk_buff *ctx,
					       const struct endpoint_info *dst)
{
	void *data, *data_end;
	struct ethhdr *eth;
	int ret;

	ret = ipv4_dec_ttl(ctx);
	if (ret < 0)
		return ret;
	/* The checksum helper invalidated packet pointers: pull them again. */
	if (!ctx_pull(ctx, ETH_HLEN, &data, &data_end))
		return -DROP_WRITE_ERROR;
	eth = data;
	__builtin_memcpy(eth->h_dest, dst->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, dst->node_mac, ETH_ALEN);
	return bpf_redirect_peer(dst->ifindex, 0);
}

#endif /* PILUS_LXC_H */
