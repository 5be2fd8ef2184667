//! The Rust side of the layout check: size and field offsets of each mirror,
//! by the C struct's name, for comparison with the object's BTF.

use crate::*;
use std::mem::{offset_of, size_of};

/// One field: its name (as in C), byte offset and byte size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// One shared struct as Rust lays it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructLayout {
    pub c_name: &'static str,
    pub size: usize,
    pub fields: Vec<FieldLayout>,
}

fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

macro_rules! layout {
    ($t:ty, $c:literal, [$($f:ident),* $(,)?]) => {
        StructLayout {
            c_name: $c,
            size: size_of::<$t>(),
            fields: vec![$(FieldLayout {
                name: stringify!($f),
                offset: offset_of!($t, $f),
                size: field_size::<$t, _>(|s| &s.$f),
            }),*],
        }
    };
}

/// Every shared struct. A struct added to abi.h must be added here and to
/// bpf/abi_layout.c, or the layout test fails on the missing name.
pub fn all() -> Vec<StructLayout> {
    vec![
        layout!(
            EndpointInfo,
            "endpoint_info",
            [
                ifindex,
                sec_identity,
                ip4,
                ep_id,
                flags,
                mac,
                node_mac,
                _pad
            ]
        ),
        layout!(IpcacheKey, "ipcache_key", [prefix_len, ip4]),
        layout!(PrefilterKey, "prefilter_key", [prefix_len, ip4]),
        layout!(PrefilterValue, "prefilter_value", [packets, bytes]),
        layout!(
            IpcacheValue,
            "ipcache_value",
            [sec_identity, tunnel_endpoint, flags, _pad]
        ),
        layout!(
            PolicyKey,
            "policy_key",
            [
                prefix_len,
                sec_identity,
                ep_id,
                direction,
                protocol,
                dport,
                _pad
            ]
        ),
        layout!(
            PolicyValue,
            "policy_value",
            [proxy_port, flags, l4_prefix_len, cookie]
        ),
        layout!(PolicyRev, "policy_rev", [revision, _pad]),
        layout!(
            CtKey4,
            "ct_key4",
            [saddr, daddr, sport, dport, protocol, scope, _pad]
        ),
        layout!(
            CtEntry,
            "ct_entry",
            [
                tx_packets,
                tx_bytes,
                rx_packets,
                rx_bytes,
                expires,
                src_identity,
                policy_rev,
                flags,
                tx_tcp_flags,
                rx_tcp_flags,
                tx_flags_reported,
                rx_flags_reported,
                last_tx_report,
                last_rx_report,
                _pad0,
                rev_nat_index,
                backend_id,
                backend_addr,
                backend_port,
                _pad
            ]
        ),
        layout!(
            NatKey4,
            "nat_key4",
            [saddr, daddr, sport, dport, protocol, direction, _pad]
        ),
        layout!(
            NatEntry4,
            "nat_entry4",
            [to_addr, to_port, flags, expires, created, packets]
        ),
        layout!(Lb4Key, "lb4_key", [address, dport, protocol, scope]),
        layout!(
            Lb4Service,
            "lb4_service",
            [
                id,
                generation,
                count,
                affinity_timeout,
                svc_type,
                algorithm,
                flags,
                _pad
            ]
        ),
        layout!(Lb4SlotKey, "lb4_slot_key", [id, generation, slot]),
        layout!(Lb4Backend, "lb4_backend", [address, port, state, _pad]),
        layout!(Lb4MaglevKey, "lb4_maglev_key", [id, generation]),
        layout!(Lb4Maglev, "lb4_maglev", [backend_ids]),
        layout!(Lb4ReverseNat, "lb4_reverse_nat", [address, port, _pad]),
        layout!(Lb4AffinityKey, "lb4_affinity_key", [id, client]),
        layout!(Lb4Affinity, "lb4_affinity", [backend_id, expires]),
        layout!(Lb4SkKey, "lb4_sk_key", [cookie, address, port, _pad]),
        layout!(Lb4SkValue, "lb4_sk_value", [address, port, _pad, id]),
        layout!(FragKey4, "frag_key4", [saddr, daddr, id, protocol, _pad]),
        layout!(FragPorts, "frag_ports", [sport, dport, policy_port, _pad]),
        layout!(MetricsValue, "metrics_value", [packets, bytes]),
        layout!(
            Event,
            "event",
            [
                kind,
                subtype,
                obs_point,
                direction,
                ep_id,
                cap_len,
                orig_len,
                ifindex,
                src_identity,
                dst_identity,
                ktime_ns,
                ct_state,
                verdict,
                dst_ep_id,
                cpu,
                _pad,
                cookie,
                hash,
                arg1,
                arg2,
                data
            ]
        ),
        layout!(MonitorConfig, "monitor_config", [aggregation, flags]),
        layout!(EventStats, "event_stats", [submitted, lost]),
        layout!(AbiStamp, "abi_stamp", [abi_version, _pad, layout_hash]),
    ]
}
