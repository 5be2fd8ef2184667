//! Datapath events for people: a record of the `pilus_events` ring buffer
//! (a `pilus_abi::Event`, or a count of events the datapath lost) decoded
//! into a [`MonitorEvent`] — the packet's endpoints, pods and interface by
//! name, its conntrack state, the verdict and the policy behind it — and
//! rendered as `pilus monitor` prints it: one readable line
//! ([`format_line`]) or a `cilium monitor -j` line ([`cilium::json_line`]).
//!
//! Pure computation over bytes: what only the agent knows (endpoints, pods,
//! interfaces, policies) comes through [`Names`], so the agent (which
//! decodes) and the CLI (which prints) share this, and it is tested on
//! crafted records. A flow record (`pilus observe`) is built from the same
//! [`MonitorEvent`], and so is `pilus trace`'s story of a packet ([`trace`]).

pub mod cilium;
pub mod flow;
mod packet;
mod text;
pub mod trace;
mod wire;

pub use packet::{decode_packet, format_packet, icmp_name, proto_name, tcp_flag_names};
pub use text::format_line;

use pilus_abi::{consts::*, DropReason, Event};
use pilus_api_types::{
    MonitorDropReason, MonitorEvent, MonitorKind, MonitorPacket, MonitorPolicy, MonitorVerdict,
};
use std::net::Ipv4Addr;

/// What the agent reads from the datapath: an event, or how many events
/// one CPU could not put on the full ring buffer since the last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Event(Event),
    Lost { cpu: u16, count: u64 },
}

/// A policy decision of the datapath, to be named by the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyDecision {
    /// The endpoint whose policy decided.
    pub ep_id: u16,
    pub ingress: bool,
    /// The identity on the other side.
    pub peer: u32,
    pub protocol: u8,
    /// The destination port (for ICMP: the message type).
    pub port: u16,
    /// The deciding entry's cookie (0: default deny).
    pub cookie: u32,
    pub denied: bool,
}

/// What the agent knows about the things an event names. Each answer is
/// optional: an event is decoded whatever is known.
pub trait Names {
    /// The local endpoint with this address.
    fn endpoint_by_ip(&self, _ip: Ipv4Addr) -> Option<u16> {
        None
    }
    /// An endpoint's pod as `namespace/name`.
    fn pod(&self, _ep: u16) -> Option<String> {
        None
    }
    /// An interface's name.
    fn ifname(&self, _ifindex: u32) -> Option<String> {
        None
    }
    /// The policy behind a decision.
    fn policy(&self, _d: &PolicyDecision) -> Option<MonitorPolicy> {
        None
    }
}

/// Knows nothing: events decoded from their bytes alone.
pub struct NoNames;
impl Names for NoNames {}

/// Decodes one record. `time_ns` is its wall-clock time (the caller turns
/// the datapath's monotonic `ktime_ns` into it).
pub fn decode(rec: &Record, seq: u64, time_ns: u64, names: &dyn Names) -> MonitorEvent {
    match rec {
        Record::Event(ev) => decode_event(ev, seq, time_ns, names),
        Record::Lost { cpu, count } => MonitorEvent {
            seq,
            time_ns,
            kind: MonitorKind::Lost,
            cpu: *cpu,
            lost: Some(*count),
            ..Default::default()
        },
    }
}

pub fn kind_of(ev: &Event) -> MonitorKind {
    match ev.kind {
        EVENT_DROP => MonitorKind::Drop,
        EVENT_TRACE => MonitorKind::Trace,
        EVENT_POLICY_VERDICT => MonitorKind::PolicyVerdict,
        EVENT_DEBUG => MonitorKind::Debug,
        EVENT_CAPTURE => MonitorKind::Capture,
        _ => MonitorKind::Unknown,
    }
}

fn decode_event(ev: &Event, seq: u64, time_ns: u64, names: &dyn Names) -> MonitorEvent {
    let kind = kind_of(ev);
    let packet = decode_packet(ev.packet());
    let (src_endpoint, dst_endpoint) = endpoints(ev, &packet, names);
    let reason = (kind == MonitorKind::Drop).then(|| drop_reason(ev.subtype));
    let verdict = (kind == MonitorKind::PolicyVerdict).then(|| MonitorVerdict {
        action: match ev.verdict {
            VERDICT_ALLOW => "allow".into(),
            VERDICT_DENY => "deny".into(),
            n => format!("verdict-{n}"),
        },
        match_level: match_level_name(ev.subtype),
        protocol: packet.protocol.unwrap_or(0),
        port: policy_port(&packet),
    });
    let policy_decided = match kind {
        MonitorKind::PolicyVerdict => true,
        MonitorKind::Drop => matches!(ev.subtype, DROP_POLICY | DROP_POLICY_DENY),
        _ => false,
    };
    let policy = policy_decided
        .then(|| {
            let ingress = ev.direction == DIR_INGRESS;
            let ep_id = if ingress { dst_endpoint } else { src_endpoint };
            names.policy(&PolicyDecision {
                ep_id: ep_id.unwrap_or(0),
                ingress,
                peer: if ingress {
                    ev.src_identity
                } else {
                    ev.dst_identity
                },
                protocol: packet.protocol.unwrap_or(0),
                port: policy_port(&packet),
                cookie: ev.cookie,
                denied: kind == MonitorKind::Drop || ev.verdict == VERDICT_DENY,
            })
        })
        .flatten();
    let (message, delivered_to) = match kind {
        MonitorKind::Debug => (Some(debug_message(ev)), None),
        MonitorKind::Capture => (Some(capture_message(ev)), Some(ev.arg1)),
        _ => (None, None),
    };
    MonitorEvent {
        seq,
        time_ns,
        kind,
        cpu: ev.cpu,
        reason,
        observation_point: observation_point_name(ev.obs_point),
        direction: direction_name(ev.direction),
        state: ct_state_name(ev.ct_state),
        endpoint: ev.ep_id,
        src_endpoint,
        dst_endpoint,
        src_pod: src_endpoint.and_then(|e| names.pod(e)),
        dst_pod: dst_endpoint.and_then(|e| names.pod(e)),
        ifindex: ev.ifindex,
        ifname: names.ifname(ev.ifindex),
        src_identity: ev.src_identity,
        dst_identity: ev.dst_identity,
        orig_len: ev.orig_len,
        cap_len: ev.cap_len,
        hash: ev.hash,
        packet,
        data: hex(ev.packet()),
        verdict,
        policy,
        message,
        delivered_to,
        lost: None,
    }
}

/// The packet's source and destination endpoints. The datapath names the
/// destination when it is a local pod (`dst_ep_id`; from-endpoint traces
/// are reported before it is looked up), and reports the endpoint whose
/// program ran: the sender's unless that is the destination (a program on
/// the receiver's side: to-container, from-overlay, from-network). What it
/// does not name is looked up by address.
fn endpoints(ev: &Event, p: &MonitorPacket, names: &dyn Names) -> (Option<u16>, Option<u16>) {
    let by_ip = |ip: Option<Ipv4Addr>| ip.and_then(|ip| names.endpoint_by_ip(ip));
    let dst = (ev.dst_ep_id != 0)
        .then_some(ev.dst_ep_id)
        .or_else(|| by_ip(p.dst_ip));
    let src = if ev.ep_id != 0 && Some(ev.ep_id) != dst {
        Some(ev.ep_id)
    } else {
        by_ip(p.src_ip)
    };
    (src, dst)
}

/// What policy saw as the port: the destination port, or the ICMP type.
fn policy_port(p: &MonitorPacket) -> u16 {
    p.dst_port.or(p.icmp_type.map(u16::from)).unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of [`MonitorEvent::data`]; what does not parse is dropped.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// The reason for a drop code, from the drop table of `pilus_abi`.
pub fn drop_reason(code: u8) -> MonitorDropReason {
    match DropReason::from_code(code) {
        Some(r) => MonitorDropReason {
            code,
            name: r.name.to_string(),
            description: r.description.to_string(),
        },
        None => MonitorDropReason {
            code,
            name: format!("DROP_{code}"),
            description: format!("unknown drop reason {code}"),
        },
    }
}

/// Cilium's names of the observation points; `obs-<n>` for others.
pub fn observation_point_name(obs: u8) -> String {
    match obs {
        OBS_FROM_ENDPOINT => "from-endpoint".into(),
        OBS_TO_ENDPOINT => "to-endpoint".into(),
        OBS_TO_STACK => "to-stack".into(),
        OBS_FROM_STACK => "from-stack".into(),
        OBS_TO_OVERLAY => "to-overlay".into(),
        OBS_FROM_OVERLAY => "from-overlay".into(),
        OBS_TO_NETWORK => "to-network".into(),
        OBS_FROM_NETWORK => "from-network".into(),
        OBS_FROM_HOST => "from-host".into(),
        OBS_TO_HOST => "to-host".into(),
        n => format!("obs-{n}"),
    }
}

/// How cilium monitor sums up a trace at a point other than an endpoint
/// (`-> stack`, `<- overlay`, ...); `None` for the endpoint points, which
/// name their endpoint.
pub fn hop_summary(obs: &str) -> Option<&'static str> {
    Some(match obs {
        "to-stack" => "-> stack",
        "from-stack" => "<- stack",
        "to-overlay" => "-> overlay",
        "from-overlay" => "<- overlay",
        "to-network" => "-> network",
        "from-network" => "<- network",
        "to-host" => "-> host",
        "from-host" => "<- host",
        _ => return None,
    })
}

/// Cilium's names of conntrack states (`state` of cilium monitor -j).
pub fn ct_state_name(state: u8) -> String {
    match state {
        CT_NEW => "new".into(),
        CT_ESTABLISHED => "established".into(),
        CT_REPLY => "reply".into(),
        CT_RELATED => "related".into(),
        CT_UNKNOWN => "unknown".into(),
        n => format!("ct-{n}"),
    }
}

/// Cilium's names of policy match types.
pub fn match_level_name(level: u8) -> String {
    match level {
        POLICY_MATCH_NONE => "none".into(),
        POLICY_MATCH_L3_ONLY => "L3-Only".into(),
        POLICY_MATCH_L3_L4 => "L3-L4".into(),
        POLICY_MATCH_L4_ONLY => "L4-Only".into(),
        POLICY_MATCH_ALL => "all".into(),
        POLICY_MATCH_L3_PROTO => "L3-Proto".into(),
        POLICY_MATCH_PROTO_ONLY => "Proto-Only".into(),
        n => format!("match-{n}"),
    }
}

fn direction_name(dir: u8) -> String {
    match dir {
        DIR_INGRESS => "ingress".into(),
        DIR_EGRESS => "egress".into(),
        n => format!("dir-{n}"),
    }
}

/// A debug event in words, as Cilium's DebugMsg.Message says it.
pub fn debug_message(ev: &Event) -> String {
    match ev.subtype {
        DBG_LOCAL_DELIVERY => format!(
            "Attempting local delivery for container id {} from seclabel {}",
            ev.arg1, ev.arg2
        ),
        DBG_ENCAP => {
            // The datapath passes the address in network order.
            let node = Ipv4Addr::from(u32::from_be(ev.arg1));
            format!(
                "Encapsulating to node {node} ({:#x}) from seclabel {}",
                ev.arg1, ev.arg2
            )
        }
        DBG_CT_VERDICT => {
            let state = match ev.arg1 as u8 {
                CT_NEW => "New",
                CT_ESTABLISHED => "Established",
                CT_REPLY => "Reply",
                CT_RELATED => "Related",
                _ => "?",
            };
            format!("CT verdict: {state}")
        }
        DBG_DECAP => format!("Tunnel decap: id={} flowlabel=0", ev.arg1),
        DBG_TO_STACK => format!("Going to the stack, policy-skip={}", ev.arg1),
        n => format!("Unknown message type={n} arg1={} arg2={}", ev.arg1, ev.arg2),
    }
}

/// A capture's message, as Cilium's DebugCapture says it.
pub fn capture_message(ev: &Event) -> String {
    match ev.subtype {
        CAPTURE_DELIVERY => format!("Delivery to ifindex {}", ev.arg1),
        n => format!("Unknown message type={n} arg1={}", ev.arg1),
    }
}

#[cfg(test)]
mod tests;
