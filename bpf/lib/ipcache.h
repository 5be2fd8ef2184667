/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The ipcache: longest-prefix match from an address to its security identity. */
#ifndef PILUS_IPCACHE_H
#define PILUS_IPCACHE_H

#include "common.h"
#include "maps.h"

/* The longest prefix holding `addr`: its identity and, for a pod on another
 * node, the node to tunnel to. */
static __always_inline struct ipcache_value *ipcache_lookup(__be32 addr)
{
	struct ipcache_key key = { .prefix_len = 32, .ip4 = addr };

	return bpf_map_lookup_elem(&pilus_ipcache, &key);
}

/* An address nobody told us about is the world (identity 2), as in Cilium. */
static __always_inline __u32 ipcache_identity(__be32 addr)
{
	struct ipcache_value *v = ipcache_lookup(addr);

	return v ? v->sec_identity : IDENTITY_WORLD;
}

#endif /* PILUS_IPCACHE_H */
