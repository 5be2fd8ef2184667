/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The contract between the datapath and userspace: every map key and value,
 * every event record, every drop code and constant that both sides read.
 *
 * Nothing else may be shared. crates/abi mirrors each struct with #[repr(C)]
 * and tests/layout.rs compares both layouts through the BTF of
 * bpf/abi_layout.c; a difference fails the build's tests.
 *
 * Rules (as in Aya's shared crates): no bool, enum or bitfield in a struct,
 * padding written out as _pad, network byte order named in the type (__be16,
 * __be32) and mirrored as Be16/Be32 in Rust.
 */
#ifndef PILUS_ABI_H
#define PILUS_ABI_H

#include <linux/types.h>

/* ---------------------------------------------------------------- identities */

/* Reserved security identities, numbered as Cilium numbers them. */
#define IDENTITY_UNKNOWN	0
#define IDENTITY_HOST		1
#define IDENTITY_WORLD		2
#define IDENTITY_UNMANAGED	3
#define IDENTITY_HEALTH		4
#define IDENTITY_INIT		5
#define IDENTITY_REMOTE_NODE	6
#define IDENTITY_KUBE_APISERVER	7
/* Cluster identities start here; CIDR identities are local, from 1 << 24. */
#define IDENTITY_CLUSTER_MIN	256
#define IDENTITY_LOCAL_MIN	(1U << 24)

/* ---------------------------------------------------------------- directions */

/* Policy and metrics direction: ingress = towards an endpoint. */
#define DIR_INGRESS	0
#define DIR_EGRESS	1
#define DIR_MAX		2

/* ---------------------------------------------------------------- drop codes */

/*
 * Drop reasons. Helpers return 0 (CTX_ACT_OK) or -DROP_*; the entry program
 * turns a negative return into TC_ACT_SHOT, a metric and a drop event.
 * These numbers are permanent: never renumber, retire as DROP_UNUSEDn.
 * Userspace names live in crates/abi (DropReason), with a test that every
 * code here has a name there.
 */
#define DROP_UNKNOWN_L3		130 /* ethertype this datapath does not handle */
#define DROP_INVALID_ARP	131 /* ARP truncated or not Ethernet/IPv4 */
#define DROP_INVALID_IPV4	132 /* IPv4 header truncated, IHL < 5, bad length */
#define DROP_INVALID_L4		133 /* TCP/UDP/ICMP header truncated */
#define DROP_INVALID_SIP	134 /* source IP is not the endpoint's (spoofing) */
#define DROP_POLICY		135 /* no policy entry allows the flow (default deny) */
#define DROP_POLICY_DENY	136 /* an explicit deny entry matched */
#define DROP_NO_ENDPOINT	137 /* interface has no endpoint in pilus_lxc_if */
#define DROP_IPV6_UNSUPPORTED	138 /* IPv6 is not enabled in this datapath yet */
#define DROP_FRAG_NOT_FOUND	139 /* non-first fragment whose first was not seen */
#define DROP_TTL_EXCEEDED	140 /* TTL would reach zero on local delivery */
#define DROP_CSUM_L3		141 /* IPv4 checksum could not be updated */
#define DROP_CT_CREATE_FAILED	142 /* conntrack entry could not be written */
#define DROP_WRITE_ERROR	143 /* packet rewrite (MAC) failed */
#define DROP_FRAG_TRACK_FAILED	144 /* first fragment could not be recorded */
#define DROP_INVALID_ICMP_INNER	145 /* ICMP error with a truncated inner header */
#define DROP_MISSED_TAIL_CALL	146 /* a tail call slot was empty */
#define DROP_INVALID_ETH	147 /* frame shorter than an Ethernet header */
#define DROP_FRAG_NEEDED	148 /* larger than the tunnel's MTU (encapsulated, it would not fit) */
#define DROP_NO_TUNNEL_KEY	149 /* from the overlay device without tunnel metadata */
#define DROP_TUNNEL_KEY		150 /* the tunnel key could not be set */
#define DROP_NOT_LOCAL		151 /* from the overlay for an address no local endpoint has */
#define DROP_NO_SERVICE_BACKEND	152 /* a service frontend with no backend to choose */
#define DROP_CSUM_L4		153 /* an L4 checksum could not be updated (NAT) */
#define DROP_PREFILTER		154 /* the source is on the XDP prefilter's deny list */
/* 155-159 unassigned; 160-169 the node's edge (masquerade, NodePort). */
#define DROP_NAT_NO_PORT	160 /* masquerade: no free port in the NAT range for this peer */
#define DROP_NAT_CREATE_FAILED	161 /* masquerade: a NAT entry could not be written (table full) */
#define DROP_NO_LOCAL_BACKEND	162 /* a NodePort with no backend on this node */
#define DROP_NO_BACKEND_NODE	163 /* NodePort: the backend's node is unknown (tunnel mode) */

#define DROP_REASON_MAX		256

/* Metric reason 0 counts packets that were forwarded, not dropped. */
#define METRIC_FORWARDED	0
/* Events lost to a full ring buffer are not a metric reason: they are
 * counted per CPU in pilus_evstats (struct event_stats). */

/* ---------------------------------------------------------------- endpoints */

#define EP_F_INGRESS_ENFORCED	(1U << 0) /* an ingress rule selects this endpoint */
#define EP_F_EGRESS_ENFORCED	(1U << 1) /* an egress rule selects this endpoint */

/*
 * Value of pilus_lxc and pilus_lxc_if: what the datapath needs to deliver to
 * and enforce for a local pod. pilus_lxc is an array indexed by the address's
 * offset in the node's pod CIDR (an empty slot has ifindex 0); pilus_lxc_if a
 * hash by host-side ifindex.
 */
struct endpoint_info {
	__u32 ifindex;		/* host-side veth; its peer is the pod's interface */
	__u32 sec_identity;	/* the pod's security identity */
	__be32 ip4;		/* the pod's address */
	__u16 ep_id;		/* endpoint id, the key of its policy entries */
	__u16 flags;		/* EP_F_* */
	__u8 mac[6];		/* pod-side MAC: destination MAC on delivery */
	__u8 node_mac[6];	/* host-side MAC: the pod's gateway MAC */
	__u32 _pad;
};

/* ---------------------------------------------------------------- ipcache */

/* Key of pilus_ipcache, an LPM trie: prefix_len counts bits of ip4. */
struct ipcache_key {
	__u32 prefix_len;
	__be32 ip4;
};

struct ipcache_value {
	__u32 sec_identity;
	__be32 tunnel_endpoint;	/* node to tunnel to, 0 when local or not tunnelled */
	__u8 flags;
	__u8 _pad[3];
};

/* ---------------------------------------------------------------- policy */

/*
 * Key of pilus_policy, an LPM trie. The matched data is, in order:
 * sec_identity (32 bits), ep_id (16), direction (8), protocol (8), dport (16).
 * POLICY_PREFIX_L3 bits fix (identity, endpoint, direction): an L3-only entry.
 * POLICY_PREFIX_PROTO bits add the protocol: "all ports of TCP".
 * POLICY_PREFIX_FULL bits add the whole port; a port range is written as the
 * few (port, prefix) pairs that cover it, never one entry per port.
 * sec_identity 0 means "any peer" (the L4-only and allow-all levels).
 */
struct policy_key {
	__u32 prefix_len;
	__u32 sec_identity;
	__u16 ep_id;
	__u8 direction;
	__u8 protocol;
	__be16 dport;
	__u16 _pad;
};

#define POLICY_PREFIX_L3	56
#define POLICY_PREFIX_PROTO	64
#define POLICY_PREFIX_FULL	80

#define POLICY_F_DENY		(1U << 0)

/*
 * l4_prefix_len repeats how many bits of (protocol, dport) the entry's key
 * fixes (0 = L3-only), because an LPM lookup does not return the key it
 * matched and the datapath must know which precedence level answered.
 * The writer guarantees that an entry already carries any deny of a wider
 * entry at the same level (port ranges overlapping within one identity).
 */
struct policy_value {
	__be16 proxy_port;	/* reserved for L7 redirection, 0 today */
	__u8 flags;		/* POLICY_F_* */
	__u8 l4_prefix_len;
	__u32 cookie;		/* the entry's id: the agent maps it back to its policy
				 * and rule; carried by policy verdict and drop events */
};

/* Index 0 of pilus_policy_rev: bumped by the agent on every policy change so
 * that an established flow re-checks policy once after a change. */
struct policy_rev {
	__u32 revision;
	__u32 _pad;
};

/* ---------------------------------------------------------------- conntrack */

/*
 * Key of pilus_ct4: the flow's tuple in the direction of its first packet.
 * For ICMP echo, sport carries the identifier on requests and dport on
 * replies, so a reply's reversed tuple finds the request's entry.
 */
struct ct_key4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 scope;		/* CT_SCOPE_*: which kind of entry the key names */
	__u8 _pad[2];
};

/*
 * A flow to a service has two entries. CT_SCOPE_SERVICE, keyed by the tuple
 * as the client sent it (to the frontend), pins the chosen backend
 * (backend_addr/backend_port) so every packet of the flow goes to it.
 * CT_SCOPE_FLOW, keyed by the translated tuple (to the backend), is the
 * ordinary entry; its rev_nat_index makes replies come from the frontend.
 */
#define CT_SCOPE_FLOW		0
#define CT_SCOPE_SERVICE	1

#define CT_F_TX_CLOSING		(1U << 0) /* FIN or RST seen from the originator */
#define CT_F_RX_CLOSING		(1U << 1) /* FIN or RST seen from the responder */
#define CT_F_SEEN_REPLY		(1U << 2) /* a reply was seen: the flow is established */
#define CT_F_SEEN_NON_SYN	(1U << 3) /* past the handshake */

struct ct_entry {
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
	__u32 expires;		/* monotonic seconds when the entry lapses */
	__u32 src_identity;	/* identity of the originator */
	__u32 policy_rev;	/* revision the original direction was allowed at */
	__u16 flags;		/* CT_F_* */
	__u8 tx_tcp_flags;	/* union of TCP flags seen from the originator */
	__u8 rx_tcp_flags;	/* union of TCP flags seen from the responder */
	/* Monitor aggregation (lib/events.h): what each direction last reported
	 * in a trace event, so that an established flow is traced again only
	 * when it has news. */
	__u8 tx_flags_reported;	/* tx_tcp_flags as of the last reported trace */
	__u8 rx_flags_reported;
	__u16 last_tx_report;	/* monotonic seconds of that trace, mod 65536 */
	__u16 last_rx_report;
	__u16 _pad0;
	__u32 rev_nat_index;	/* CT_SCOPE_FLOW of a service flow: pilus_lb4_rnat key
				 * of the frontend replies must come from; 0 none */
	__u32 backend_id;	/* CT_SCOPE_SERVICE: the chosen backend's id */
	__be32 backend_addr;	/* CT_SCOPE_SERVICE: where the flow is translated to */
	__be16 backend_port;
	__u16 _pad;
};

/* Result of a conntrack lookup, also reported in trace events. */
#define CT_NEW		0
#define CT_ESTABLISHED	1
#define CT_REPLY	2
#define CT_RELATED	3
/* Events only: observed before conntrack was consulted (from-* points). */
#define CT_UNKNOWN	4

/* ---------------------------------------------------------------- services */

/*
 * Load balancing, as Cilium's lb4 maps. One entry of pilus_lb4_svc per
 * frontend (address, port, protocol); its backends are chosen through the
 * frontend's slots (random) or Maglev table, both keyed by the frontend's id
 * and a generation. A change writes the new generation's slots (or table)
 * first and then replaces the frontend's entry with one that names the new
 * generation: a hash-map update swaps the whole value, so a packet sees the
 * old backend set or the new one, never a mix. The old generation is deleted
 * after the swap; a packet that read the old entry just before and misses its
 * slot reads the entry again.
 */
#define LB_TYPE_CLUSTER_IP	1
#define LB_TYPE_NODE_PORT	2 /* served on the uplink (from_netdev); pods skip it */
#define LB_TYPE_EXTERNAL_IP	3
#define LB_TYPE_LOAD_BALANCER	4

#define LB_ALG_RANDOM		1
#define LB_ALG_MAGLEV		2

#define LB_F_AFFINITY		(1U << 0) /* session affinity by client address */
/* externalTrafficPolicy: Local: a NodePort is served only by the node's own
 * backends, with the client's address kept; without it (Cluster), any
 * backend, one on another node reached from the node's address (SNAT). */
#define LB_F_ETP_LOCAL		(1U << 1)

/* Backend states: only active backends are in a frontend's slots (or, when
 * none is active, the terminating ones, as kube-proxy falls back to them). */
#define LB_BACKEND_ACTIVE	0
#define LB_BACKEND_TERMINATING	1
#define LB_BACKEND_QUARANTINED	2

/* Maglev lookup table size: a prime (Cilium's default M). */
#define LB_MAGLEV_M		16381

/* Key of pilus_lb4_svc: a frontend. */
struct lb4_key {
	__be32 address;
	__be16 dport;
	__u8 protocol;
	__u8 scope;		/* 0; NodePort's internal/external scopes later */
};

struct lb4_service {
	__u32 id;		/* frontend id: key of its slots, table, affinity and reverse NAT */
	__u32 generation;	/* which slots / Maglev table are current */
	__u32 count;		/* slots 0..count-1 of that generation (0: no backend) */
	__u32 affinity_timeout;	/* seconds, with LB_F_AFFINITY */
	__u8 svc_type;		/* LB_TYPE_* */
	__u8 algorithm;		/* LB_ALG_* */
	__u8 flags;		/* LB_F_* */
	__u8 _pad[5];
};

/* Key of pilus_lb4_slot: slot `slot` of generation `generation` of frontend
 * `id`; the value is a backend id. */
struct lb4_slot_key {
	__u32 id;
	__u32 generation;
	__u32 slot;
};

/* Value of pilus_lb4_be, by backend id (an id per frontend and
 * backend, never reused, so an affinity or conntrack entry naming a removed
 * backend finds nothing). */
struct lb4_backend {
	__be32 address;
	__be16 port;
	__u8 state;		/* LB_BACKEND_* */
	__u8 _pad;
};

/* Key of pilus_lb4_mag: the table of one generation of a frontend. */
struct lb4_maglev_key {
	__u32 id;
	__u32 generation;
};

/* Value of pilus_lb4_mag: backend ids, indexed by a flow's hash mod M. */
struct lb4_maglev {
	__u32 backend_ids[LB_MAGLEV_M];
};

/* Value of pilus_lb4_rnat, by frontend id: what replies come from. */
struct lb4_reverse_nat {
	__be32 address;
	__be16 port;
	__u16 _pad;
};

/* Key and value of pilus_lb4_aff: the backend a client was given. */
struct lb4_affinity_key {
	__u32 id;		/* frontend id */
	__be32 client;
};

struct lb4_affinity {
	__u32 backend_id;
	__u32 expires;		/* monotonic seconds, as ct_entry.expires */
};

/*
 * Key and value of pilus_lb4_sk: socket-level LB's reverse translation
 * (Cilium's lb4_reverse_nat_sk). connect4/sendmsg4 record, for the socket
 * (its cookie) and the backend they chose, the frontend the application
 * addressed; recvmsg4/getpeername4 show that frontend instead of the
 * backend. `id` is the frontend's id: an entry whose frontend is gone (or
 * now has another address) no longer translates.
 */
struct lb4_sk_key {
	__u64 cookie;		/* bpf_get_socket_cookie */
	__be32 address;		/* the backend */
	__be16 port;
	__u16 _pad;
};

struct lb4_sk_value {
	__be32 address;		/* the frontend */
	__be16 port;
	__u16 _pad;
	__u32 id;		/* the frontend's id (pilus_lb4_rnat's key) */
};

/* ---------------------------------------------------------------- fragments */

/* pilus_frag4: the ports of a fragmented datagram, learned from its first
 * fragment so that later fragments meet the same conntrack and policy. */
struct frag_key4 {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 protocol;
	__u8 _pad;
};

struct frag_ports {
	__be16 sport;
	__be16 dport;
	__be16 policy_port;	/* the port policy saw on the first fragment */
	__u16 _pad;
};

/* ---------------------------------------------------------------- NAT */

/*
 * Masquerade (SNAT of pods' traffic to the outside to the node's address),
 * as Cilium's SNAT map: two entries per flow in pilus_nat4.
 * NAT_DIR_EGRESS, keyed by the pod's tuple as it leaves (pod address and
 * port -> peer), holds the node's address and the port allocated to it.
 * NAT_DIR_INGRESS, keyed by the peer's reply as it arrives (peer -> node
 * address and allocated port), holds the pod's address and port: the
 * allocated port is taken by writing this entry first (BPF_NOEXIST), so two
 * flows never share a reply tuple. ICMP echo: the identifier is the port
 * (sport on requests, dport on replies, as in ct_key4).
 */
#define NAT_DIR_EGRESS		0
#define NAT_DIR_INGRESS		1

#define NAT_F_SEEN_NON_SYN	(1U << 0) /* TCP: past the SYN in this direction */
#define NAT_F_CLOSING		(1U << 1) /* TCP: FIN or RST seen in this direction */

struct nat_key4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 direction;		/* NAT_DIR_* */
	__u8 _pad[2];
};

/*
 * Both entries of a flow lapse together: the GC removes an expired entry
 * only when its partner (the key its value names) has expired too, since
 * each is refreshed by the packets of its own direction only.
 */
struct nat_entry4 {
	__be32 to_addr;		/* egress: the node's address; ingress: the pod's */
	__be16 to_port;		/* egress: the allocated port; ingress: the pod's port */
	__u16 flags;		/* NAT_F_* */
	__u32 expires;		/* monotonic seconds, as ct_entry.expires */
	__u32 created;		/* monotonic seconds */
	__u64 packets;		/* packets translated in this direction */
};

/* ---------------------------------------------------------------- prefilter */

/* Key of pilus_prefilter, an LPM trie of source CIDRs the uplink's XDP
 * program drops before the stack sees them: prefix_len counts bits of ip4. */
struct prefilter_key {
	__u32 prefix_len;
	__be32 ip4;
};

/* What an entry has dropped, updated atomically (the trie is not per-CPU). */
struct prefilter_value {
	__u64 packets;
	__u64 bytes;
};

#define PREFILTER_MAX		16384

/* ---------------------------------------------------------------- metrics */

/* pilus_metrics is a per-CPU array indexed by METRICS_INDEX(reason, dir). */
#define METRICS_INDEX(reason, dir)	((reason) * DIR_MAX + (dir))
#define METRICS_MAX			(DROP_REASON_MAX * DIR_MAX)

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

/* ---------------------------------------------------------------- events */

#define EVENT_DROP		1
#define EVENT_TRACE		2
#define EVENT_POLICY_VERDICT	3 /* a policy decision on a new flow (or after a revision bump) */
#define EVENT_DEBUG		4 /* opt-in (MONITOR_F_DEBUG): what a program decided, in words */
#define EVENT_CAPTURE		5 /* opt-in (MONITOR_F_CAPTURE): the packet as it is delivered */

/* Observation points, as cilium monitor names them. */
#define OBS_FROM_ENDPOINT	0
#define OBS_TO_ENDPOINT		1
#define OBS_TO_STACK		2
#define OBS_FROM_STACK		3
#define OBS_TO_OVERLAY		4
#define OBS_FROM_OVERLAY	5
#define OBS_TO_NETWORK		6
#define OBS_FROM_NETWORK	7
/* A host device's points (Cilium's cilium_host). Pilus has no host device
 * yet: the stack reaches pods through their /32 routes (from-stack), so no
 * program emits these today; the names are reserved for it. */
#define OBS_FROM_HOST		8
#define OBS_TO_HOST		9

/* How a policy verdict matched, as Cilium's PolicyMatchType numbers them
 * (event.subtype of EVENT_POLICY_VERDICT). */
#define POLICY_MATCH_NONE	0 /* no entry: default deny */
#define POLICY_MATCH_L3_ONLY	1 /* identity, every port */
#define POLICY_MATCH_L3_L4	2 /* identity, protocol and port */
#define POLICY_MATCH_L4_ONLY	3 /* any identity, protocol and port */
#define POLICY_MATCH_ALL	4 /* any identity, every port */
#define POLICY_MATCH_L3_PROTO	5 /* identity, every port of a protocol */
#define POLICY_MATCH_PROTO_ONLY	6 /* any identity, every port of a protocol */

/* event.verdict of EVENT_POLICY_VERDICT. */
#define VERDICT_ALLOW		1
#define VERDICT_DENY		2

/* event.subtype of EVENT_DEBUG, numbered as Cilium's DBG_* (lib/dbg.h). */
#define DBG_LOCAL_DELIVERY	2 /* arg1: endpoint id, arg2: source identity */
#define DBG_ENCAP		3 /* arg1: tunnel endpoint (network order), arg2: source identity */
#define DBG_CT_VERDICT		15 /* arg1: CT_* */
#define DBG_DECAP		16 /* arg1: the VNI */
#define DBG_TO_STACK		20 /* arg1: 1 if policy was skipped (established flow) */

/* event.subtype of EVENT_CAPTURE, numbered as Cilium's DBG_CAPTURE_*. */
#define CAPTURE_DELIVERY	4 /* arg1: the ifindex it is delivered to (0: the stack) */

#define EVENT_CAPTURE_LEN	128

/*
 * Record on the pilus_events ring buffer: one packet's trace, drop, policy
 * verdict, debug message or capture. The fields a kind does not use are 0.
 */
struct event {
	__u8 kind;		/* EVENT_* */
	__u8 subtype;		/* drop: DROP_*; verdict: POLICY_MATCH_*; debug: DBG_*; capture: CAPTURE_* */
	__u8 obs_point;		/* OBS_* */
	__u8 direction;		/* DIR_* (verdicts and drops: of the policy that decided) */
	__u16 ep_id;		/* endpoint the program ran for, 0 if none */
	__u16 cap_len;		/* bytes of data[] that hold the packet */
	__u32 orig_len;		/* the packet's length */
	__u32 ifindex;		/* the interface the program ran on */
	__u32 src_identity;
	__u32 dst_identity;
	__u64 ktime_ns;
	__u8 ct_state;		/* CT_*, CT_UNKNOWN before conntrack was consulted */
	__u8 verdict;		/* policy verdicts: VERDICT_* */
	__u16 dst_ep_id;	/* the local endpoint the packet is for, 0 if none */
	__u16 cpu;		/* the CPU that saw the packet */
	__u16 _pad;
	__u32 cookie;		/* verdicts and policy drops: the deciding entry's cookie */
	__u32 hash;		/* skb->hash (cilium monitor prints it as the "mark") */
	__u32 arg1;		/* debug and capture: DBG_* / CAPTURE_* arguments */
	__u32 arg2;
	__u8 data[EVENT_CAPTURE_LEN];
};

/*
 * Monitor aggregation, as Cilium's MonitorAggregationLevel: how many trace
 * events flows emit. Drops, policy verdicts and the opt-in kinds are never
 * aggregated.
 *   none:    a trace at every observation point of every packet.
 *   low:     no receive-side traces (the from-* points): one per packet and
 *            program that forwards it.
 *   medium:  low, and an established or reply packet is traced only when
 *            its flow has news in that direction: TCP flags not reported
 *            before, or MONITOR_REPORT_INTERVAL seconds since its last trace.
 *   maximum: medium without the interval: a direction is traced when its
 *            TCP flags change (SYN, SYN-ACK, the first ACK, FIN, RST) and
 *            a flow without flags (UDP, ICMP) once per direction.
 * New and related packets are traced at every level.
 */
#define MONITOR_AGG_NONE	0
#define MONITOR_AGG_LOW		1
#define MONITOR_AGG_MEDIUM	2
#define MONITOR_AGG_MAXIMUM	3
#define MONITOR_REPORT_INTERVAL	5

#define MONITOR_F_DEBUG		(1U << 0) /* emit EVENT_DEBUG */
#define MONITOR_F_CAPTURE	(1U << 1) /* emit EVENT_CAPTURE */

/* Index 0 of pilus_monconf: the monitor's settings, changed at run time by
 * the agent (no program is reloaded). */
struct monitor_config {
	__u32 aggregation;	/* MONITOR_AGG_* */
	__u32 flags;		/* MONITOR_F_* */
};

/* The one slot of pilus_evstats, per CPU: ring-buffer records submitted
 * and lost (the ring was full: bpf_ringbuf_reserve failed). */
struct event_stats {
	__u64 submitted;
	__u64 lost;
};

/* ---------------------------------------------------------------- ABI stamp */

/*
 * The ABI's version. Bump it when a map's key or value keeps its layout but
 * changes its meaning (a flag's bit, an index scheme): the layout hash below
 * cannot see that. Pins stamped with another version are never reused.
 */
#define PILUS_ABI_VERSION	2

/*
 * Index 0 of pilus_abi: the ABI the maps pinned beside it were made with.
 * Written by the loader when it creates a pin directory, never by a program.
 * layout_hash fingerprints every struct of this header as the compiler laid
 * it out (name, size, each field's name, offset and size), so a layout change
 * that nobody versioned still keeps an old pin from being reused.
 */
struct abi_stamp {
	__u32 abi_version;	/* PILUS_ABI_VERSION */
	__u32 _pad;
	__u64 layout_hash;
};

/* ---------------------------------------------------------------- tail calls */

/* Slots of pilus_calls, the program array of tail calls. */
#define CALL_IPV4_FROM_LXC	0
#define CALL_IPV4_TO_LXC	1
#define CALL_IPV4_LB		2 /* service translation of a pod's packet */
#define CALL_IPV4_NODEPORT	4 /* a NodePort connection from the network (bpf_host) */
#define CALL_IPV4_REV_SNAT	5 /* a packet to the masquerade address (bpf_host) */
#define CALL_IPV4_NODEPORT_REPLY 6 /* a reply another node's NodePort backend sent (bpf_host) */
#define CALLS_MAX		8

#endif /* PILUS_ABI_H */
