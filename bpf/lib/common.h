/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Includes, attributes and small helpers every program uses. */
#ifndef PILUS_COMMON_H
#define PILUS_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi/abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/*
 * A global function: the verifier checks it once, on its own, against its
 * prototype, instead of along every path of every caller that would inline
 * it. For a large path shared by several branches (the uplink's delivery
 * to a pod, NodePort's translation and forwarding) that is the difference
 * between seconds and a tenth of a second per program at every agent
 * start. A call costs a few instructions. Pointer arguments are then
 * "maybe NULL" to the verifier, so such a function checks them; its frame
 * and its callers' together stay within BPF's 512-byte stack.
 */
#define __global_subprog __attribute__((noinline))

#define likely(x)	__builtin_expect(!!(x), 1)
#define unlikely(x)	__builtin_expect(!!(x), 0)

/* Helpers return CTX_ACT_OK or a negative DROP_* code (see abi.h). */
#define CTX_ACT_OK	0

/*
 * Packet pointers read with one load each, in asm: otherwise clang may reuse
 * an earlier 32-bit load of the field and zero-extend it (`w3 = w3`), and the
 * verifier no longer knows the register is the packet end (as Cilium's
 * ctx_data_end does).
 */
static __always_inline void *ctx_data(const struct __sk_buff *ctx)
{
	void *ptr;

	asm volatile("%0 = *(u32 *)(%1 + %2)" : "=r"(ptr) : "r"(ctx), "i"(offsetof(struct __sk_buff, data)));
	return ptr;
}

static __always_inline void *ctx_data_end(const struct __sk_buff *ctx)
{
	void *ptr;

	asm volatile("%0 = *(u32 *)(%1 + %2)" : "=r"(ptr) : "r"(ctx), "i"(offsetof(struct __sk_buff, data_end)));
	return ptr;
}

/*
 * Makes sure the first `len` bytes of the packet are in the linear area so
 * that direct packet access can read them. Returns false when the packet is
 * shorter than `len`: the caller drops it as truncated. On true, *data and
 * *data_end are reloaded (pulling invalidates earlier packet pointers).
 */
static __always_inline bool ctx_pull(struct __sk_buff *ctx, __u32 len,
				     void **data, void **data_end)
{
	*data = ctx_data(ctx);
	*data_end = ctx_data_end(ctx);
	if (*data + len <= *data_end)
		return true;
	if (ctx->len < len)
		return false;
	if (bpf_skb_pull_data(ctx, len) < 0)
		return false;
	*data = ctx_data(ctx);
	*data_end = ctx_data_end(ctx);
	return *data + len <= *data_end;
}

#endif /* PILUS_COMMON_H */
