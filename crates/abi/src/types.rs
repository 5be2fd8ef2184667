//! The `#[repr(C)]` mirrors of every struct in `bpf/lib/abi/abi.h`, in its order.

use crate::{Be16, Be32};

/// Value of `pilus_lxc` and `pilus_lxc_if`: a local pod as the datapath sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointInfo {
    pub ifindex: u32,
    pub sec_identity: u32,
    pub ip4: Be32,
    pub ep_id: u16,
    pub flags: u16,
    pub mac: [u8; 6],
    pub node_mac: [u8; 6],
    pub _pad: u32,
}

/// Key of the `pilus_ipcache` LPM trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpcacheKey {
    pub prefix_len: u32,
    pub ip4: Be32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpcacheValue {
    pub sec_identity: u32,
    pub tunnel_endpoint: Be32,
    pub flags: u8,
    pub _pad: [u8; 3],
}

/// Key of the `pilus_prefilter` LPM trie: a source CIDR the uplink's XDP
/// program drops.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefilterKey {
    pub prefix_len: u32,
    pub ip4: Be32,
}

/// What a `pilus_prefilter` entry has dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefilterValue {
    pub packets: u64,
    pub bytes: u64,
}

/// Key of the `pilus_policy` LPM trie; see `POLICY_PREFIX_*`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyKey {
    pub prefix_len: u32,
    pub sec_identity: u32,
    pub ep_id: u16,
    pub direction: u8,
    pub protocol: u8,
    pub dport: Be16,
    pub _pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    pub proxy_port: Be16,
    pub flags: u8,
    pub l4_prefix_len: u8,
    pub cookie: u32,
}

/// Index 0 of `pilus_polrev`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyRev {
    pub revision: u32,
    pub _pad: u32,
}

/// Key of `pilus_ct4`: the tuple of a flow's first packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey4 {
    pub saddr: Be32,
    pub daddr: Be32,
    pub sport: Be16,
    pub dport: Be16,
    pub protocol: u8,
    /// `CT_SCOPE_*`.
    pub scope: u8,
    pub _pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtEntry {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub expires: u32,
    pub src_identity: u32,
    pub policy_rev: u32,
    pub flags: u16,
    pub tx_tcp_flags: u8,
    pub rx_tcp_flags: u8,
    /// Monitor aggregation: the TCP flags each direction last reported in a
    /// trace, and when (monotonic seconds mod 65536).
    pub tx_flags_reported: u8,
    pub rx_flags_reported: u8,
    pub last_tx_report: u16,
    pub last_rx_report: u16,
    pub _pad0: u16,
    /// `CT_SCOPE_FLOW` of a service flow: the frontend replies come from.
    pub rev_nat_index: u32,
    /// `CT_SCOPE_SERVICE`: the backend the flow is pinned to.
    pub backend_id: u32,
    pub backend_addr: Be32,
    pub backend_port: Be16,
    pub _pad: u16,
}

/// Key of `pilus_nat4`: a masqueraded flow's tuple in one direction
/// (`NAT_DIR_EGRESS`: as the pod sends it; `NAT_DIR_INGRESS`: the reply as
/// it arrives at the node's address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatKey4 {
    pub saddr: Be32,
    pub daddr: Be32,
    pub sport: Be16,
    pub dport: Be16,
    pub protocol: u8,
    /// `NAT_DIR_*`.
    pub direction: u8,
    pub _pad: [u8; 2],
}

/// Value of `pilus_nat4`: what the direction's packets are translated to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatEntry4 {
    /// Egress: the node's address; ingress: the pod's.
    pub to_addr: Be32,
    /// Egress: the allocated port; ingress: the pod's port.
    pub to_port: Be16,
    /// `NAT_F_*`.
    pub flags: u16,
    /// Monotonic seconds, as `CtEntry::expires`.
    pub expires: u32,
    pub created: u32,
    pub packets: u64,
}

impl NatKey4 {
    /// The key of the other direction's entry of the same flow, given this
    /// entry's value: the reply's tuple for an egress entry, the pod's for
    /// an ingress one.
    pub fn partner(&self, value: &NatEntry4) -> NatKey4 {
        use crate::consts::{NAT_DIR_EGRESS, NAT_DIR_INGRESS};
        if self.direction == NAT_DIR_EGRESS {
            // pod -> peer becomes peer -> node's address and port.
            NatKey4 {
                saddr: self.daddr,
                daddr: value.to_addr,
                sport: self.dport,
                dport: value.to_port,
                protocol: self.protocol,
                direction: NAT_DIR_INGRESS,
                _pad: [0; 2],
            }
        } else {
            // peer -> node becomes pod's address and port -> peer.
            NatKey4 {
                saddr: value.to_addr,
                daddr: self.saddr,
                sport: value.to_port,
                dport: self.sport,
                protocol: self.protocol,
                direction: NAT_DIR_EGRESS,
                _pad: [0; 2],
            }
        }
    }
}

/// Key of `pilus_lb4_svc`: a frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lb4Key {
    pub address: Be32,
    pub dport: Be16,
    pub protocol: u8,
    pub scope: u8,
}

/// Value of `pilus_lb4_svc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4Service {
    pub id: u32,
    pub generation: u32,
    pub count: u32,
    pub affinity_timeout: u32,
    /// `LB_TYPE_*`.
    pub svc_type: u8,
    /// `LB_ALG_*`.
    pub algorithm: u8,
    /// `LB_F_*`.
    pub flags: u8,
    pub _pad: [u8; 5],
}

/// Key of `pilus_lb4_slot`; the value is a backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lb4SlotKey {
    pub id: u32,
    pub generation: u32,
    pub slot: u32,
}

/// Value of `pilus_lb4_be`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4Backend {
    pub address: Be32,
    pub port: Be16,
    /// `LB_BACKEND_*`.
    pub state: u8,
    pub _pad: u8,
}

/// Key of `pilus_lb4_mag`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lb4MaglevKey {
    pub id: u32,
    pub generation: u32,
}

/// Value of `pilus_lb4_mag`: 64 KiB, so keep it boxed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lb4Maglev {
    pub backend_ids: [u32; crate::consts::LB_MAGLEV_M as usize],
}

impl Default for Lb4Maglev {
    fn default() -> Self {
        Lb4Maglev {
            backend_ids: [0; crate::consts::LB_MAGLEV_M as usize],
        }
    }
}

/// Value of `pilus_lb4_rnat`, by frontend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4ReverseNat {
    pub address: Be32,
    pub port: Be16,
    pub _pad: u16,
}

/// Key of `pilus_lb4_aff`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4AffinityKey {
    pub id: u32,
    pub client: Be32,
}

/// Value of `pilus_lb4_aff`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4Affinity {
    pub backend_id: u32,
    pub expires: u32,
}

/// Key of `pilus_lb4_sk`: a socket (its cookie) and the backend socket-level
/// LB gave it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4SkKey {
    pub cookie: u64,
    pub address: Be32,
    pub port: Be16,
    pub _pad: u16,
}

/// Value of `pilus_lb4_sk`: the frontend the socket addressed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4SkValue {
    pub address: Be32,
    pub port: Be16,
    pub _pad: u16,
    pub id: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey4 {
    pub saddr: Be32,
    pub daddr: Be32,
    pub id: Be16,
    pub protocol: u8,
    pub _pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragPorts {
    pub sport: Be16,
    pub dport: Be16,
    pub policy_port: Be16,
    pub _pad: u16,
}

/// One per-CPU slot of `pilus_metrics`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MetricsValue {
    pub packets: u64,
    pub bytes: u64,
}

/// A record on the `pilus_events` ring buffer: a drop, a trace, a policy
/// verdict, a debug message or a capture (`EVENT_*`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    pub kind: u8,
    /// Drop: `DROP_*`; policy verdict: `POLICY_MATCH_*`; debug: `DBG_*`;
    /// capture: `CAPTURE_*`.
    pub subtype: u8,
    pub obs_point: u8,
    pub direction: u8,
    pub ep_id: u16,
    pub cap_len: u16,
    pub orig_len: u32,
    pub ifindex: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub ktime_ns: u64,
    /// `CT_*`, or `CT_UNKNOWN` before conntrack was consulted.
    pub ct_state: u8,
    /// Policy verdicts: `VERDICT_ALLOW` or `VERDICT_DENY`.
    pub verdict: u8,
    /// The local endpoint the packet is for, 0 if none.
    pub dst_ep_id: u16,
    pub cpu: u16,
    pub _pad: u16,
    /// Policy verdicts and policy drops: the deciding entry's cookie.
    pub cookie: u32,
    /// `skb->hash`.
    pub hash: u32,
    pub arg1: u32,
    pub arg2: u32,
    pub data: [u8; crate::consts::EVENT_CAPTURE_LEN as usize],
}

impl Default for Event {
    fn default() -> Event {
        Event {
            kind: 0,
            subtype: 0,
            obs_point: 0,
            direction: 0,
            ep_id: 0,
            cap_len: 0,
            orig_len: 0,
            ifindex: 0,
            src_identity: 0,
            dst_identity: 0,
            ktime_ns: 0,
            ct_state: 0,
            verdict: 0,
            dst_ep_id: 0,
            cpu: 0,
            _pad: 0,
            cookie: 0,
            hash: 0,
            arg1: 0,
            arg2: 0,
            data: [0; crate::consts::EVENT_CAPTURE_LEN as usize],
        }
    }
}

impl Event {
    /// Decodes a record read from the ring buffer; `None` if it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Event> {
        if bytes.len() < std::mem::size_of::<Event>() {
            return None;
        }
        // SAFETY: Event is repr(C) plain data, every bit pattern is valid, and
        // the length was checked; read_unaligned needs no alignment.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
    }

    /// The captured bytes of the packet.
    pub fn packet(&self) -> &[u8] {
        &self.data[..usize::from(self.cap_len).min(self.data.len())]
    }
}

/// Index 0 of `pilus_monconf`: the monitor's run-time settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MonitorConfig {
    /// `MONITOR_AGG_*`.
    pub aggregation: u32,
    /// `MONITOR_F_*`.
    pub flags: u32,
}

/// The slot of `pilus_evstats`, per CPU: ring-buffer records submitted and
/// lost.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EventStats {
    pub submitted: u64,
    pub lost: u64,
}

/// Index 0 of `pilus_abi`: the ABI a pin directory's maps were made with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AbiStamp {
    /// `PILUS_ABI_VERSION` of the build that made the pins.
    pub abi_version: u32,
    pub _pad: u32,
    /// Fingerprint of the shared structs' layouts (`pilus_datapath::pins`).
    pub layout_hash: u64,
}

/// Plain-data structs may be map keys and values (aya's `Pod`).
#[cfg(feature = "aya")]
mod pod {
    use super::*;

    macro_rules! pod {
        ($($t:ty),* $(,)?) => { $(
            // SAFETY: repr(C), no implicit padding (it is written out as _pad
            // fields and checked by the layout test), every bit pattern valid.
            unsafe impl aya::Pod for $t {}
        )* };
    }
    pod!(
        Be16,
        Be32,
        EndpointInfo,
        IpcacheKey,
        IpcacheValue,
        PrefilterKey,
        PrefilterValue,
        PolicyKey,
        PolicyValue,
        PolicyRev,
        CtKey4,
        CtEntry,
        NatKey4,
        NatEntry4,
        Lb4Key,
        Lb4Service,
        Lb4SlotKey,
        Lb4Backend,
        Lb4MaglevKey,
        Lb4Maglev,
        Lb4ReverseNat,
        Lb4AffinityKey,
        Lb4Affinity,
        Lb4SkKey,
        Lb4SkValue,
        FragKey4,
        FragPorts,
        MetricsValue,
        Event,
        MonitorConfig,
        EventStats,
        AbiStamp,
    );
}
