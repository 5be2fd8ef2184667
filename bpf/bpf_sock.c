// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level service load balancing (Cilium's bpf_sock.c): programs on a
 * cgroup v2 directory that translate a frontend (ClusterIP) to a backend
 * once per connect() or UDP sendmsg(), instead of once per packet. The
 * socket is then addressed to the backend itself: its packets meet no
 * frontend in from-container's service lookup and are not translated a
 * second time, and no reverse NAT is needed on the way back. What the
 * application sees stays the frontend: recvmsg4 and getpeername4 translate
 * the backend back, through pilus_lb4_sk.
 *
 * The choice is lb.h's (random slots, Maglev, affinity) on the same pinned
 * service maps bpf_lxc uses. A socket has no source port yet when it
 * connects, so the "flow" it hashes is the socket: the client is the
 * socket's network namespace (its cookie folded to 32 bits: a pod, or the
 * node), the source port the socket's cookie folded to 16 bits.
 *
 * Return values: 1 lets the call go on (translated or not); 0 refuses it
 * with the errno set by bpf_set_retval (EPERM without one).
 */
#include <linux/errno.h>
#include "lib/common.h"
#include "lib/config.h"
#include "lib/maps.h"
#include "lib/lb.h"

#define SYS_PROCEED	1
#define SYS_REJECT	0

static __always_inline __u32 fold32(__u64 v)
{
	return (__u32)v ^ (__u32)(v >> 32);
}

static __always_inline __u16 fold16(__u64 v)
{
	__u32 w = fold32(v);

	return (__u16)w ^ (__u16)(w >> 16);
}

/* A drop reason counted without a packet (bytes stay 0): what the agent's
 * metrics show for a refused connect() or sendmsg(). */
static __always_inline void sock_count(__u32 reason)
{
	__u32 idx = METRICS_INDEX(reason, DIR_EGRESS);
	struct metrics_value *m = bpf_map_lookup_elem(&pilus_metrics, &idx);

	if (m)
		m->packets++;	/* per-CPU slot: no atomics */
}

/*
 * connect4 and sendmsg4: a socket addressing a frontend is given a backend
 * and its address rewritten; the frontend is remembered for the socket and
 * that backend. Returns CTX_ACT_OK or -DROP_NO_SERVICE_BACKEND.
 */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx)
{
	__be32 vip = ctx->user_ip4;
	__be16 vport = (__be16)ctx->user_port;
	struct lb4_key key = lb4_key_of(vip, vport, (__u8)ctx->protocol);
	struct lb4_backend be = {};
	struct lb4_service *svcp, svc;
	struct lb4_sk_value rev = {};
	struct lb4_sk_key sk = {};
	struct pkt4 p = {};
	__u32 backend_id = 0;
	__u64 cookie;
	int ret;

	svcp = lb4_lookup_service(&key);
	if (!svcp)
		return CTX_ACT_OK;
	/* A copy: the map's value may be swapped while we use it. */
	svc = *svcp;
	cookie = bpf_get_socket_cookie(ctx);
	p.tuple.saddr = fold32(bpf_get_netns_cookie(ctx));
	p.tuple.daddr = vip;
	p.tuple.sport = fold16(cookie);
	p.tuple.dport = vport;
	p.tuple.protocol = key.protocol;
	ret = lb4_select(&key, &svc, &p, bpf_mono_now(), &backend_id, &be);
	if (ret < 0)
		return ret;
	sk.cookie = cookie;
	sk.address = be.address;
	sk.port = be.port;
	rev.address = vip;
	rev.port = vport;
	rev.id = svc.id;
	/* Best effort, as Cilium's: without the entry the socket still
	 * reaches the backend, only getpeername/recvfrom show the backend. */
	bpf_map_update_elem(&pilus_lb4_sk, &sk, &rev, BPF_ANY);
	ctx->user_ip4 = be.address;
	ctx->user_port = (__u32)be.port;
	return CTX_ACT_OK;
}

/*
 * recvmsg4 and getpeername4: a backend this socket was given shows as the
 * frontend it addressed, while that frontend still exists as it was.
 */
static __always_inline void sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct lb4_sk_key sk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
	};
	struct lb4_reverse_nat *rn;
	struct lb4_sk_value *rev;
	__u32 id;

	rev = bpf_map_lookup_elem(&pilus_lb4_sk, &sk);
	if (!rev)
		return;
	id = rev->id;
	rn = bpf_map_lookup_elem(&pilus_lb4_rnat, &id);
	if (!rn || rn->address != rev->address || rn->port != rev->port) {
		/* The frontend was deleted (or its id reused for another):
		 * the socket talks to the backend it has, by its name. */
		bpf_map_delete_elem(&pilus_lb4_sk, &sk);
		return;
	}
	ctx->user_ip4 = rev->address;
	ctx->user_port = (__u32)rev->port;
}

/* A refused translation: counted, and the call fails with ECONNREFUSED (a
 * frontend without backends refuses, as kube-proxy's REJECT rule does). */
static __always_inline int sock4_reject(int ret)
{
	sock_count((__u32)-ret);
	bpf_set_retval(-ECONNREFUSED);
	return SYS_REJECT;
}

/*
 * Attachment/entry point is connect() on IPv4 sockets of the cgroup.
 * It corresponds to TCP (and connected UDP) sockets being given their peer.
 */
SEC("cgroup/connect4")
int sock4_connect(struct bpf_sock_addr *ctx)
{
	int ret = sock4_xlate_fwd(ctx);

	return ret < 0 ? sock4_reject(ret) : SYS_PROCEED;
}

/*
 * Attachment/entry point is sendmsg() with an address on IPv4 UDP sockets of
 * the cgroup (unconnected UDP): each datagram is translated on its own.
 */
SEC("cgroup/sendmsg4")
int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	int ret = sock4_xlate_fwd(ctx);

	return ret < 0 ? sock4_reject(ret) : SYS_PROCEED;
}

/*
 * Attachment/entry point is recvmsg() on IPv4 UDP sockets of the cgroup: the
 * source address handed to the application.
 */
SEC("cgroup/recvmsg4")
int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

/*
 * Attachment/entry point is getpeername() on IPv4 sockets of the cgroup.
 */
SEC("cgroup/getpeername4")
int sock4_getpeername(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

char __license[] SEC("license") = "Dual BSD/GPL";
