/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The ipcache: longest-prefix match from an address to its security identity. */
#ifndef PILUS_IPCACHE_H
#define PILUS_IPCACHE_H

#include "common.h"
#include "maps.h"

/* An address nobody told us about is the world (identity 2), as in Cilium. */
static __always_inline __u32 ipcache_identity(__be32 addr)
{
	struct ipcache_key key = { .prefix_len = 32, .ip4 = addr };
	struct ipcache_value *v = bpf_map_lookup_elem(&pilus_ipcache, &key);

	return v ? v->sec_identity : IDENTITY_WORLD;
}

#endif /* PILUS_IPCACHE_H */
