/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map the datapath reads or writes. All are pinned by name under the
 * loader's bpffs directory, so a second load (an agent restart) reuses them
 * and the datapath keeps its state. Names stay within 15 characters (the
 * kernel's object name limit).
 */
#ifndef PILUS_MAPS_H
#define PILUS_MAPS_H

#include "common.h"

#define PIN_BY_NAME 1 /* LIBBPF_PIN_BY_NAME */

/*
 * Local endpoints by IPv4 address: the destination side of local delivery.
 * Local pods get their addresses from the node's pod CIDR, so an array
 * indexed by the offset in it answers "is this a local pod" with an inlined
 * array access instead of a hash lookup (~25 ns per packet here). The loader
 * sizes it to the CIDR (at most /16).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(max_entries, 256);
	__uint(pinning, PIN_BY_NAME);
} pilus_lxc SEC(".maps");

/* Local endpoints by host-side ifindex: who the program runs for. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, PIN_BY_NAME);
} pilus_lxc_if SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, 512000);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, PIN_BY_NAME);
} pilus_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, PIN_BY_NAME);
} pilus_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct policy_rev);
	__uint(max_entries, 1);
	__uint(pinning, PIN_BY_NAME);
} pilus_polrev SEC(".maps");

/*
 * Conntrack. A plain hash, not an LRU: when it is full a new flow cannot be
 * tracked and is dropped (DROP_CT_CREATE_FAILED, counted), instead of the
 * kernel silently evicting a live flow's entry. The agent's GC removes
 * expired entries (crates/controlplane/src/ctgc.rs). The loader sizes it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ct_key4);
	__type(value, struct ct_entry);
	__uint(max_entries, 262144);
	__uint(pinning, PIN_BY_NAME);
} pilus_ct4 SEC(".maps");

/*
 * Masquerade's NAT table (two entries per flow, see abi.h). A plain hash, as
 * conntrack: full, a new flow to the outside is dropped
 * (DROP_NAT_CREATE_FAILED, counted) rather than a live mapping evicted; the
 * agent's conntrack GC removes expired pairs. The loader sizes it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct nat_key4);
	__type(value, struct nat_entry4);
	__uint(max_entries, 131072);
	__uint(pinning, PIN_BY_NAME);
} pilus_nat4 SEC(".maps");

/*
 * Services (see abi.h). Hash maps without preallocation: an update swaps in a
 * new element and frees the old one only after an RCU grace period, so a
 * program that looked up the old value keeps reading a whole, unchanging
 * one; and memory follows what is used (a Maglev table is 64 KiB).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, PIN_BY_NAME);
} pilus_lb4_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_slot_key);
	__type(value, __u32);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, PIN_BY_NAME);
} pilus_lb4_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, PIN_BY_NAME);
} pilus_lb4_be SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_maglev_key);
	__type(value, struct lb4_maglev);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, PIN_BY_NAME);
} pilus_lb4_mag SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_reverse_nat);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, PIN_BY_NAME);
} pilus_lb4_rnat SEC(".maps");

/* Session affinity: an LRU, since losing an entry only loses stickiness. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb4_affinity);
	__uint(max_entries, 65536);
	__uint(pinning, PIN_BY_NAME);
} pilus_lb4_aff SEC(".maps");

/*
 * Socket-level LB's reverse translation, by socket cookie and backend
 * (bpf_sock.c). An LRU: sockets close without telling the datapath, so
 * entries of closed sockets are evicted by newer ones instead of filling it
 * (Cilium's lb4_reverse_nat_sk does the same).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_sk_key);
	__type(value, struct lb4_sk_value);
	__uint(max_entries, 262144);
	__uint(pinning, PIN_BY_NAME);
} pilus_lb4_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key4);
	__type(value, struct frag_ports);
	__uint(max_entries, 8192);
	__uint(pinning, PIN_BY_NAME);
} pilus_frag4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(max_entries, METRICS_MAX);
	__uint(pinning, PIN_BY_NAME);
} pilus_metrics SEC(".maps");

/* The XDP prefilter's deny list (bpf_xdp.c), changed by `pilus prefilter`. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct prefilter_key);
	__type(value, struct prefilter_value);
	__uint(max_entries, PREFILTER_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, PIN_BY_NAME);
} pilus_prefilter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, PIN_BY_NAME);
} pilus_events SEC(".maps");

/* The monitor's run-time settings (struct monitor_config at index 0):
 * aggregation level, debug and capture. An array, so the verifier inlines
 * the lookup; read only where a trace or an opt-in event might be sent. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct monitor_config);
	__uint(max_entries, 1);
	__uint(pinning, PIN_BY_NAME);
} pilus_monconf SEC(".maps");

/* Ring-buffer records submitted and lost, per CPU (struct event_stats at
 * index 0): a full ring loses events, and the agent reports how many. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct event_stats);
	__uint(max_entries, 1);
	__uint(pinning, PIN_BY_NAME);
} pilus_evstats SEC(".maps");

/*
 * The stamp of this pin directory (struct abi_stamp at index 0): which ABI
 * the maps pinned beside it were made with. No program reads it; the loader
 * writes it on a fresh load and checks it before reusing any pin.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct abi_stamp);
	__uint(max_entries, 1);
	__uint(pinning, PIN_BY_NAME);
} pilus_abi SEC(".maps");

/* Tail-call targets. Pinned: an unpinned program array is emptied by the
 * kernel when its last user-space reference closes, which would turn every
 * packet into DROP_MISSED_TAIL_CALL after the agent exits. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, CALLS_MAX);
	__uint(pinning, PIN_BY_NAME);
} pilus_calls SEC(".maps");

#endif /* PILUS_MAPS_H */
