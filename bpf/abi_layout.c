// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Not a program: one instance of every shared struct, so that this object's
 * BTF describes each of them exactly as the C compiler lays them out.
 * crates/datapath/tests/layout.rs compares that BTF with the Rust mirrors in
 * crates/abi (Cilium's alignchecker does the same for Go), and the loader
 * hashes it into the ABI stamp of its pins (crates/datapath/src/pins.rs).
 */
#include <linux/types.h>
#include "lib/abi/abi.h"

#define ABI(type) struct type abi_##type __attribute__((used))

ABI(endpoint_info);
ABI(ipcache_key);
ABI(ipcache_value);
ABI(policy_key);
ABI(policy_value);
ABI(policy_rev);
ABI(ct_key4);
ABI(ct_entry);
ABI(lb4_key);
ABI(lb4_service);
ABI(lb4_slot_key);
ABI(lb4_backend);
ABI(lb4_maglev_key);
ABI(lb4_maglev);
ABI(lb4_reverse_nat);
ABI(lb4_affinity_key);
ABI(lb4_affinity);
ABI(lb4_sk_key);
ABI(lb4_sk_value);
ABI(frag_key4);
ABI(frag_ports);
ABI(nat_key4);
ABI(nat_entry4);
ABI(prefilter_key);
ABI(prefilter_value);
ABI(metrics_value);
ABI(event);
ABI(monitor_config);
ABI(event_stats);
ABI(abi_stamp);
