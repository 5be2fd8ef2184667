/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ARP responder: a pod asks for its gateway's MAC and the datapath forges the
 * answer in place (seed 000: "the ARP reply is forged"), with the host-side
 * veth's MAC, so no gateway address needs to exist on the host.
 */
#ifndef PILUS_ARP_H
#define PILUS_ARP_H

#include "common.h"
#include "config.h"

/* From linux/if_arp.h, which drags in libc headers a BPF build cannot use. */
#define ARPHRD_ETHER	1
#define ARPOP_REQUEST	1
#define ARPOP_REPLY	2

/* The Ethernet/IPv4 ARP body (struct arphdr stops before the addresses). */
struct arp_eth4 {
	__be16 hrd;
	__be16 pro;
	__u8 hln;
	__u8 pln;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__be32 sip;
	__u8 tha[ETH_ALEN];
	__be32 tip;
} __attribute__((packed));

#define ARP_LEN (ETH_HLEN + sizeof(struct arp_eth4))

/*
 * Returns 1 when the frame was turned into a reply to send back out of the
 * same interface, 0 when it is an ARP the datapath leaves to the stack, or
 * -DROP_INVALID_ARP.
 */
static __always_inline int arp_respond(struct __sk_buff *ctx, const __u8 *router_mac)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct arp_eth4 *arp;
	__be32 sip;

	if (!ctx_pull(ctx, ARP_LEN, &data, &data_end))
		return -DROP_INVALID_ARP;
	eth = data;
	arp = data + ETH_HLEN;
	if (arp->hrd != bpf_htons(ARPHRD_ETHER) || arp->pro != bpf_htons(ETH_P_IP) ||
	    arp->hln != ETH_ALEN || arp->pln != 4)
		return -DROP_INVALID_ARP;
	/* Only requests for the gateway; gratuitous ARP (sip == tip) is not a question. */
	if (arp->op != bpf_htons(ARPOP_REQUEST) || arp->tip != CONFIG_ROUTER_IP4 ||
	    arp->sip == arp->tip || CONFIG_ROUTER_IP4 == 0)
		return 0;

	sip = arp->sip;
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, router_mac, ETH_ALEN);
	arp->op = bpf_htons(ARPOP_REPLY);
	__builtin_memcpy(arp->tha, arp->sha, ETH_ALEN);
	arp->tip = sip;
	__builtin_memcpy(arp->sha, router_mac, ETH_ALEN);
	arp->sip = CONFIG_ROUTER_IP4;
	return 1;
}

#endif /* PILUS_ARP_H */
