//! One readable line per event, as `cilium monitor` prints them, with what
//! Pilus adds: the observation point in parentheses, pods by name, and for
//! policy drops and verdicts the policy (and rule) that decided.

use crate::{format_packet, hop_summary};
use pilus_api_types::{MonitorEvent, MonitorKind};

fn or_unknown(ep: Option<u16>) -> String {
    ep.map_or_else(|| "?".into(), |e| e.to_string())
}

/// The interface: its name when known, else its index.
fn interface(e: &MonitorEvent) -> String {
    e.ifname.clone().unwrap_or_else(|| e.ifindex.to_string())
}

/// `ep 12 (shop/client)`, or `ep 12`.
fn named(ep: Option<u16>, pod: &Option<String>) -> String {
    match (ep, pod) {
        (Some(ep), Some(p)) => format!("{ep} ({p})"),
        (ep, _) => or_unknown(ep),
    }
}

fn policy_part(e: &MonitorEvent) -> String {
    e.policy
        .as_ref()
        .map(|p| format!(", policy: {}", p.explanation))
        .unwrap_or_default()
}

/// One line per event:
///
/// ```text
/// -> endpoint 13 (to-endpoint) flow 0x0 identity 256->257 state new ifindex lxc0a1b: 198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN
/// xx drop (Policy denied by a deny rule) from-endpoint flow 0x0 to endpoint 13, ifindex lxc0a1b, identity 256->257, policy: denied by CiliumNetworkPolicy shop/x rule spec.ingressDeny[0] (...): 198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN
/// Policy verdict log: flow 0x0 local EP ID 13, remote ID 256, proto 6, ingress, action allow, match L3-L4, policy: allowed by ...: 198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN
/// CPU 01: MARK 0x0 FROM 12 DEBUG: Attempting local delivery for container id 13 from seclabel 256
/// -> lxc0a1b (capture: Delivery to ifindex 7): 198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN
/// CPU 01: 57 events lost (the datapath's ring buffer was full)
/// ```
pub fn format_line(e: &MonitorEvent) -> String {
    let pkt = format_packet(&e.packet);
    let ids = format!("identity {}->{}", e.src_identity, e.dst_identity);
    let obs = &e.observation_point;
    match e.kind {
        MonitorKind::Trace => {
            let summary = match obs.as_str() {
                "to-endpoint" => format!("-> endpoint {}", named(e.dst_endpoint, &e.dst_pod)),
                "from-endpoint" => format!("<- endpoint {}", named(e.src_endpoint, &e.src_pod)),
                other => hop_summary(other).unwrap_or("-> ?").to_string(),
            };
            format!(
                "{summary} ({obs}) flow {:#x} {ids} state {} ifindex {}: {pkt}",
                e.hash,
                e.state,
                interface(e)
            )
        }
        MonitorKind::Drop => {
            let why = e
                .reason
                .as_ref()
                .map_or("unknown reason", |r| r.description.as_str());
            let to = e
                .dst_endpoint
                .map(|d| format!(" to endpoint {}", named(Some(d), &e.dst_pod)))
                .unwrap_or_default();
            format!(
                "xx drop ({why}) {obs} flow {:#x}{to}, ifindex {}, {ids}{}: {pkt}",
                e.hash,
                interface(e),
                policy_part(e)
            )
        }
        MonitorKind::PolicyVerdict => {
            let ingress = e.direction == "ingress";
            let (local, remote) = if ingress {
                (named(e.dst_endpoint, &e.dst_pod), e.src_identity)
            } else {
                (named(e.src_endpoint, &e.src_pod), e.dst_identity)
            };
            let (action, level, proto) = e
                .verdict
                .as_ref()
                .map_or(("?".to_string(), "?".to_string(), 0), |v| {
                    (v.action.clone(), v.match_level.clone(), v.protocol)
                });
            format!(
                "Policy verdict log: flow {:#x} local EP ID {local}, remote ID {remote}, proto {proto}, {}, action {action}, match {level}{}: {pkt}",
                e.hash,
                e.direction,
                policy_part(e)
            )
        }
        MonitorKind::Debug => format!(
            "CPU {:02}: MARK {:#x} FROM {} DEBUG: {}",
            e.cpu,
            e.hash,
            e.endpoint,
            e.message.as_deref().unwrap_or("")
        ),
        MonitorKind::Capture => {
            let to = match e.delivered_to {
                Some(0) | None => "stack".to_string(),
                Some(_) => interface_of_delivery(e),
            };
            format!(
                "-> {to} (capture: {}): {pkt}",
                e.message.as_deref().unwrap_or("")
            )
        }
        MonitorKind::Lost => format!(
            "CPU {:02}: {} events lost (the datapath's ring buffer was full)",
            e.cpu,
            e.lost.unwrap_or(0)
        ),
        MonitorKind::Unknown => format!("?? event ({obs}) ep {} {ids}: {pkt}", e.endpoint),
    }
}

/// Where a capture was delivered: the destination pod's endpoint when it
/// went to one, else the interface index.
fn interface_of_delivery(e: &MonitorEvent) -> String {
    match (e.dst_endpoint, e.delivered_to) {
        (Some(ep), _) => format!("endpoint {}", named(Some(ep), &e.dst_pod)),
        (None, Some(i)) => format!("ifindex {i}"),
        (None, None) => "?".into(),
    }
}
