/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-node constants, set by the loader before the programs are verified
 * (aya EbpfLoader::override_global). One object serves every node and every
 * endpoint: nothing here changes per pod, and nothing is compiled at run time.
 * Names and meaning are mirrored by crates/datapath/src/config.rs.
 */
#ifndef PILUS_CONFIG_H
#define PILUS_CONFIG_H

#include "common.h"

#define DECLARE_CONFIG(type, name, value, description) \
	const volatile type name = value /* description */

/* The pods' default gateway: ARP requests for it are answered by the datapath. */
DECLARE_CONFIG(__be32, CONFIG_ROUTER_IP4, 0, "gateway address answered in ARP");
/* The node's pod CIDR: where local endpoints' addresses come from. */
DECLARE_CONFIG(__be32, CONFIG_POD_CIDR4, 0, "network address of the node's pod CIDR");
DECLARE_CONFIG(__u32, CONFIG_POD_CIDR4_SIZE, 256, "addresses in it (pilus_lxc's size)");
/* Conntrack lifetimes in seconds, Cilium's defaults. */
DECLARE_CONFIG(__u32, CONFIG_CT_LIFETIME_TCP, 21600, "established TCP lifetime");
DECLARE_CONFIG(__u32, CONFIG_CT_LIFETIME_NONTCP, 60, "UDP/ICMP/other lifetime");
DECLARE_CONFIG(__u32, CONFIG_CT_SYN_TIMEOUT, 60, "TCP handshake lifetime");
DECLARE_CONFIG(__u32, CONFIG_CT_CLOSE_TIMEOUT, 10, "TCP lifetime after FIN/RST both ways");
/* Ring-buffer events are submitted without waking the reader (a wakeup costs
 * about 6 us) until this many bytes wait; the agent also drains on a timer. */
DECLARE_CONFIG(__u32, CONFIG_EVENTS_WAKEUP_BYTES, 65536, "unread bytes that force a wakeup");
/* The kernel's tick rate, measured by the loader (no interface reports it). */
DECLARE_CONFIG(__u32, CONFIG_HZ, 1000, "kernel CONFIG_HZ");
/* Tunnel mode: the VXLAN device (external, collect_md) pods on other nodes are
 * reached through; 0 in direct-routing mode (the stack routes them). */
DECLARE_CONFIG(__u32, CONFIG_TUNNEL_IFINDEX, 0, "VXLAN device's ifindex, 0: no tunnel");
/* The largest IP packet that still fits the underlay once encapsulated (the
 * pods' MTU in tunnel mode). */
DECLARE_CONFIG(__u32, CONFIG_TUNNEL_MTU, 1450, "largest IPv4 packet the tunnel carries");
/* SNAT: translated flows leave from this address (the node's, on its
 * uplink) and a port of [NAT_PORT_MIN, NAT_PORT_MAX], a range the agent keeps
 * apart from the node's own ephemeral ports (ip_local_port_range), so replies
 * to the node's own connections are never taken for a translated flow's.
 * Masquerade (CONFIG_MASQUERADE) and NodePort to another node's backend use
 * it. 0: no SNAT. */
DECLARE_CONFIG(__be32, CONFIG_NAT_IP4, 0, "SNAT address, 0: off");
/* 1: pods' traffic to the outside is masqueraded (SNAT to CONFIG_NAT_IP4). */
DECLARE_CONFIG(__u32, CONFIG_MASQUERADE, 0, "masquerade pods' traffic to the outside");
DECLARE_CONFIG(__u32, CONFIG_NAT_PORT_MIN, 61000, "lowest port masquerade allocates");
DECLARE_CONFIG(__u32, CONFIG_NAT_PORT_MAX, 65535, "highest port masquerade allocates");
/* NodePort: connections from the network to this address (the node's, on
 * its uplink) and a NodePort frontend's port are served by from_netdev.
 * 0: off. */
DECLARE_CONFIG(__be32, CONFIG_NODEPORT_IP4, 0, "NodePort address, 0: off");
/* 1: trace, policy-verdict (allow), debug and capture events may be sent; how
 * many is set at run time (pilus_monconf: aggregation level, debug,
 * capture). 0: they are compiled out (the verifier removes the dead code):
 * the floor the observability benchmark compares against. Drops and denials
 * are reported either way. */
DECLARE_CONFIG(__u32, CONFIG_TRACE_ENABLED, 1, "trace events compiled in");

/* Conntrack time, in seconds: jiffies over HZ. bpf_jiffies64() is the
 * cheapest clock a program has; a ktime read costs ~37 ns per packet on this
 * VM and the coarse ktime ~12 ns more than jiffies, for a precision lifetimes
 * in seconds never use. Userspace reads jiffies from /proc/timer_list
 * (crates/datapath/src/clock.rs). */
static __always_inline __u32 bpf_mono_now(void)
{
	return (__u32)(bpf_jiffies64() / CONFIG_HZ);
}

#endif /* PILUS_CONFIG_H */
