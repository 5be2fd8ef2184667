/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Includes, attributes and small helpers every program uses. */
#ifndef PILUS_COMMON_H
#define PILUS_COMMON_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi/abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define likely(x)	__builtin_expect(!!(x), 1)
#define unlikely(x)	__builtin_expect(!!(x), 0)

/* Helpers return CTX_ACT_OK or a negative DROP_* code (see abi.h). */
#define CTX_ACT_OK	0

#define NSEC_PER_SEC	1000000000ULL

/* Monotonic seconds: the clock conntrack lifetimes are kept in. It is
 * CLOCK_MONOTONIC, so userspace garbage collection can compare with it. */
static __always_inline __u32 bpf_mono_now(void)
{
	return (__u32)(bpf_ktime_get_ns() / NSEC_PER_SEC);
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
	*data = (void *)(long)ctx->data;
	*data_end = (void *)(long)ctx->data_end;
	if (*data + len <= *data_end)
		return true;
	if (ctx->len < len)
		return false;
	if (bpf_skb_pull_data(ctx, len) < 0)
		return false;
	*data = (void *)(long)ctx->data;
	*data_end = (void *)(long)ctx->data_end;
	return *data + len <= *data_end;
}

#endif /* PILUS_COMMON_H */
