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
 * IPv6 sockets are translated when they address an IPv4-mapped frontend
 * (::ffff:a.b.c.d), as dual-stack applications (Java's default) do for
 * IPv4: connect6, recvmsg6 and getpeername6 do what their IPv4 twins do on
 * the address's last word.
 *
 * Return values: 1 lets the call go on (translated or not); 0 refuses it
 * with the errno set by bpf_set_retval (EPERM without one).
 *
 * Kernel: sendmsg4 4.18, recvmsg4 5.2, bpf_get_netns_cookie here 5.7,
 * getpeername4 5.8, bpf_set_retval 5.18; links (the agent pins them) 5.7.
 */
#include <linux/errno.h>
#include "lib/common.h"
#include "lib/config.h"
#include "lib/maps.h"
#include "lib/lb.h"

#define SYS_PROCEED	1
#define SYS_REJECT	0

/* sock_xlate_fwd's "the address was a frontend and is now a backend". */
#define SOCK_XLATED	1

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

/* An IPv4 address the socket uses: its own (AF_INET) or mapped into an
 * AF_INET6 socket's address (::ffff:a.b.c.d, what dual-stack sockets use
 * for IPv4 peers). Each entry program touches only its own family's field:
 * the verifier refuses user_ip4 in an IPv6 hook and user_ip6 in an IPv4 one. */
struct sock_addr4 {
	__be32 addr;
	__be16 port;
};

/*
 * The forward translation of (addr, port) for the socket: a frontend gets a
 * backend, written back into *a, and the frontend is remembered for the
 * socket and that backend. Returns SOCK_XLATED, CTX_ACT_OK (not a
 * frontend) or -DROP_NO_SERVICE_BACKEND.
 */
static __always_inline int sock_xlate_fwd(struct bpf_sock_addr *ctx, struct sock_addr4 *a)
{
	struct lb4_key key = lb4_key_of(a->addr, a->port, (__u8)ctx->protocol);
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
	p.tuple.daddr = a->addr;
	p.tuple.sport = fold16(cookie);
	p.tuple.dport = a->port;
	p.tuple.protocol = key.protocol;
	ret = lb4_select(&key, &svc, &p, bpf_mono_now(), &backend_id, &be);
	if (ret < 0)
		return ret;
	sk.cookie = cookie;
	sk.address = be.address;
	sk.port = be.port;
	rev.address = a->addr;
	rev.port = a->port;
	rev.id = svc.id;
	/* Best effort, as Cilium's: without the entry the socket still
	 * reaches the backend, only getpeername/recvfrom show the backend. */
	bpf_map_update_elem(&pilus_lb4_sk, &sk, &rev, BPF_ANY);
	a->addr = be.address;
	a->port = be.port;
	return SOCK_XLATED;
}

/*
 * The reverse translation: a backend this socket was given shows as the
 * frontend it addressed, while that frontend still exists as it was.
 * Returns whether *a was rewritten.
 */
static __always_inline bool sock_xlate_rev(struct bpf_sock_addr *ctx, struct sock_addr4 *a)
{
	struct lb4_sk_key sk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = a->addr,
		.port = a->port,
	};
	struct lb4_reverse_nat *rn;
	struct lb4_sk_value *rev;
	__u32 id;

	rev = bpf_map_lookup_elem(&pilus_lb4_sk, &sk);
	if (!rev)
		return false;
	id = rev->id;
	rn = bpf_map_lookup_elem(&pilus_lb4_rnat, &id);
	if (!rn || rn->address != rev->address || rn->port != rev->port) {
		/* The frontend was deleted (or its id reused for another):
		 * the socket talks to the backend it has, by its name. */
		bpf_map_delete_elem(&pilus_lb4_sk, &sk);
		return false;
	}
	a->addr = rev->address;
	a->port = rev->port;
	return true;
}

/* connect4 and sendmsg4. */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx)
{
	struct sock_addr4 a = { .addr = ctx->user_ip4, .port = (__be16)ctx->user_port };
	int ret;

	ret = sock_xlate_fwd(ctx, &a);
	if (ret != SOCK_XLATED)
		return ret;
	ctx->user_ip4 = a.addr;
	ctx->user_port = (__u32)a.port;
	return CTX_ACT_OK;
}

/* recvmsg4 and getpeername4. */
static __always_inline void sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct sock_addr4 a = { .addr = ctx->user_ip4, .port = (__be16)ctx->user_port };

	if (!sock_xlate_rev(ctx, &a))
		return;
	ctx->user_ip4 = a.addr;
	ctx->user_port = (__u32)a.port;
}

/* Whether an AF_INET6 socket's address is IPv4-mapped, and which. */
static __always_inline bool sock6_v4_mapped(struct bpf_sock_addr *ctx, struct sock_addr4 *a)
{
	if (ctx->user_ip6[0] != 0 || ctx->user_ip6[1] != 0 ||
	    ctx->user_ip6[2] != bpf_htonl(0xffff))
		return false;
	a->addr = ctx->user_ip6[3];
	a->port = (__be16)ctx->user_port;
	return true;
}

/* connect6 of an IPv4-mapped address. IPv6 proper is not load-balanced
 * (the datapath has no IPv6 yet): anything else goes on untouched. */
static __always_inline int sock6_xlate_fwd(struct bpf_sock_addr *ctx)
{
	struct sock_addr4 a;
	int ret;

	if (!sock6_v4_mapped(ctx, &a))
		return CTX_ACT_OK;
	ret = sock_xlate_fwd(ctx, &a);
	if (ret != SOCK_XLATED)
		return ret;
	ctx->user_ip6[3] = a.addr;
	ctx->user_port = (__u32)a.port;
	return CTX_ACT_OK;
}

/* recvmsg6 and getpeername6 of an IPv4-mapped address. */
static __always_inline void sock6_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct sock_addr4 a;

	if (!sock6_v4_mapped(ctx, &a) || !sock_xlate_rev(ctx, &a))
		return;
	ctx->user_ip6[3] = a.addr;
	ctx->user_port = (__u32)a.port;
}

/* A refused translation: counted, and the call fails with ECONNREFUSED (a
 * frontend without backends refuses, as kube-proxy's REJECT rule does). */
static __always_inline int sock_reject(int ret)
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

	return ret < 0 ? sock_reject(ret) : SYS_PROCEED;
}

/*
 * Attachment/entry point is sendmsg() with an address on IPv4 UDP sockets of
 * the cgroup (unconnected UDP): each datagram is translated on its own.
 */
SEC("cgroup/sendmsg4")
int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	int ret = sock4_xlate_fwd(ctx);

	return ret < 0 ? sock_reject(ret) : SYS_PROCEED;
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

/*
 * Attachment/entry point is connect() on IPv6 sockets of the cgroup, for an
 * IPv4-mapped peer (::ffff:a.b.c.d): a dual-stack socket's IPv4
 * connection. Its unconnected UDP datagrams to such a peer are sent by the
 * IPv4 stack, so sendmsg4 translates them (udpv6_sendmsg hands them to
 * udp_sendmsg with an AF_INET address).
 */
SEC("cgroup/connect6")
int sock6_connect(struct bpf_sock_addr *ctx)
{
	int ret = sock6_xlate_fwd(ctx);

	return ret < 0 ? sock_reject(ret) : SYS_PROCEED;
}

/*
 * Attachment/entry point is recvmsg() on IPv6 UDP sockets of the cgroup:
 * an IPv4-mapped source shown to the application.
 */
SEC("cgroup/recvmsg6")
int sock6_recvmsg(struct bpf_sock_addr *ctx)
{
	sock6_xlate_rev(ctx);
	return SYS_PROCEED;
}

/*
 * Attachment/entry point is getpeername() on IPv6 sockets of the cgroup.
 */
SEC("cgroup/getpeername6")
int sock6_getpeername(struct bpf_sock_addr *ctx)
{
	sock6_xlate_rev(ctx);
	return SYS_PROCEED;
}

char __license[] SEC("license") = "Dual BSD/GPL";
