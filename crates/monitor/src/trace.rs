//! `pilus trace`'s story of a packet: the decoded events of one run through
//! the datapath's private copy (see `pilus_datapath::trace`), with what the
//! agent knows around them, turned into numbered steps on the lanes of a
//! sequence diagram (pod -> veth -> node -> tunnel -> node -> pod) and a
//! verdict in words. Pure: tested on crafted events.

use crate::format_packet;
use pilus_api_types::{
    MonitorEvent, MonitorKind, MonitorPacket, TraceLane, TraceOutcome, TraceStep, TraceVerdict,
};
use std::net::{Ipv4Addr, SocketAddrV4};

/// tc verdicts (linux/pkt_cls.h).
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;
const TC_ACT_REDIRECT: i32 = 7;

/// Everything a trace's story is made of.
#[derive(Clone, Debug)]
pub struct TraceFacts<'a> {
    /// The sending pod, `namespace/name`.
    pub src_pod: String,
    /// The packet as the pod sent it.
    pub sent: &'a MonitorPacket,
    /// from-container's tc verdict.
    pub tc_verdict: i32,
    /// Its events, in order.
    pub events: &'a [MonitorEvent],
    /// The tunnel's far end (the datapath's encap debug message) and the
    /// node there, when it went to the tunnel.
    pub tunnel: Option<(Ipv4Addr, Option<String>)>,
    /// The destination as sent and as it left, when a service translated it,
    /// with the service's name when known.
    pub nat: Option<(SocketAddrV4, SocketAddrV4, Option<String>)>,
    /// Another node whose pod CIDR holds the destination, and that CIDR:
    /// where the stack routes a packet handed to it (direct routing).
    pub routed_to: Option<(String, String)>,
    /// Live conntrack entries of the flow copied into the trace's table.
    pub conntrack_copied: usize,
}

/// The name of a tc verdict.
pub fn tc_verdict_name(v: i32) -> String {
    match v {
        TC_ACT_OK => "TC_ACT_OK".into(),
        TC_ACT_SHOT => "TC_ACT_SHOT".into(),
        TC_ACT_REDIRECT => "TC_ACT_REDIRECT".into(),
        -1 => "TC_ACT_UNSPEC".into(),
        n => format!("tc verdict {n}"),
    }
}

fn step(lane: TraceLane, to_lane: Option<TraceLane>, text: String) -> TraceStep {
    TraceStep {
        lane,
        to_lane,
        text,
        event: None,
    }
}

fn pod_or_ep(ep: Option<u16>, pod: &Option<String>) -> String {
    match (pod, ep) {
        (Some(p), _) => format!("pod {p}"),
        (None, Some(e)) => format!("endpoint {e}"),
        (None, None) => "?".into(),
    }
}

/// One event as a step: its lane, where it sends the packet, its words.
/// `dst`: where the packet is addressed at this point (debug events carry
/// no packet).
fn event_step(e: &MonitorEvent, f: &TraceFacts<'_>, dst: Option<Ipv4Addr>) -> TraceStep {
    use TraceLane::*;
    let veth = e.ifname.clone().unwrap_or_else(|| e.ifindex.to_string());
    let (to, text) = match e.kind {
        MonitorKind::Trace => match e.observation_point.as_str() {
            "from-endpoint" => (
                None,
                format!(
                    "from-container (tc ingress of {veth}), tail call to ipv4_from_lxc: from {} \
                     (identity {})",
                    pod_or_ep(e.src_endpoint, &e.src_pod),
                    e.src_identity
                ),
            ),
            "to-endpoint" => (
                Some(DestinationPod),
                format!(
                    "to-endpoint: redirected to {} (identity {}), conntrack {}",
                    pod_or_ep(e.dst_endpoint, &e.dst_pod),
                    e.dst_identity,
                    e.state
                ),
            ),
            "to-overlay" => (
                Some(Tunnel),
                format!(
                    "to-overlay: encapsulated (destination identity {})",
                    e.dst_identity
                ),
            ),
            "to-stack" => (
                Some(Node),
                format!(
                    "to-stack: handed to the node's stack (destination identity {})",
                    e.dst_identity
                ),
            ),
            other => (None, format!("{other}: {}", format_packet(&e.packet))),
        },
        MonitorKind::PolicyVerdict => {
            let ingress = e.direction == "ingress";
            let (whose, peer) = if ingress {
                (pod_or_ep(e.dst_endpoint, &e.dst_pod), e.src_identity)
            } else {
                (pod_or_ep(e.src_endpoint, &e.src_pod), e.dst_identity)
            };
            let (action, level) = e
                .verdict
                .as_ref()
                .map_or(("?", "?"), |v| (v.action.as_str(), v.match_level.as_str()));
            let why = e
                .policy
                .as_ref()
                .map(|p| format!(": {}", p.explanation))
                .unwrap_or_default();
            (
                None,
                format!(
                    "policy: {} of {whose}, peer identity {peer}: {action} (match {level}){why}",
                    e.direction
                ),
            )
        }
        MonitorKind::Drop => {
            let why = e.reason.as_ref().map_or("unknown reason".to_string(), |r| {
                format!("{} ({})", r.description, r.name)
            });
            let policy = e
                .policy
                .as_ref()
                .map(|p| format!(", {}", p.explanation))
                .unwrap_or_default();
            (None, format!("dropped: {why}{policy}"))
        }
        MonitorKind::Debug => {
            let m = e.message.as_deref().unwrap_or("");
            let dst = e
                .packet
                .dst_ip
                .or(dst)
                .map_or_else(|| "the destination".to_string(), |ip| ip.to_string());
            let text = if m.starts_with("CT verdict") {
                format!("conntrack: {} flow", e.state)
            } else if m.starts_with("Encapsulating") {
                match &f.tunnel {
                    Some((ip, node)) => format!(
                        "ipcache: {dst} (identity {}) is behind node {ip}{}: VXLAN with VNI {} \
                         (the source identity)",
                        e.dst_identity,
                        node.as_ref().map(|n| format!(" ({n})")).unwrap_or_default(),
                        e.src_identity
                    ),
                    None => format!("debug: {m}"),
                }
            } else if m.starts_with("Attempting local delivery") {
                format!(
                    "local delivery: {dst} is {} (identity {})",
                    pod_or_ep(e.dst_endpoint, &e.dst_pod),
                    e.dst_identity
                )
            } else if m.starts_with("Going to the stack") {
                format!(
                    "ipcache: {dst} is identity {}, not a local pod and no tunnel: to the stack",
                    e.dst_identity
                )
            } else {
                format!("debug: {m}")
            };
            (None, text)
        }
        MonitorKind::Capture => (None, format!("leaves as {}", format_packet(&e.packet))),
        _ => (None, crate::format_line(e)),
    };
    TraceStep {
        lane: SourceVeth,
        to_lane: to,
        text,
        event: Some(e.clone()),
    }
}

/// The numbered steps and the verdict of one trace.
pub fn story(f: &TraceFacts<'_>) -> (Vec<TraceStep>, TraceVerdict) {
    use TraceLane::*;
    let mut steps = vec![step(
        SourcePod,
        Some(SourceVeth),
        format!("pod {} sends {}", f.src_pod, format_packet(f.sent)),
    )];
    if f.conntrack_copied > 0 {
        steps.push(step(
            SourceVeth,
            None,
            format!(
                "conntrack: {} live entr{} of this flow copied into the trace's own table",
                f.conntrack_copied,
                if f.conntrack_copied == 1 { "y" } else { "ies" }
            ),
        ));
    }
    let mut nat_told = false;
    let mut dst = f.sent.dst_ip;
    for e in f.events {
        // A service's translation happened in the tail call between the
        // from-endpoint report and the next event.
        let from_endpoint = e.kind == MonitorKind::Trace && e.observation_point == "from-endpoint";
        if !nat_told && !from_endpoint {
            if let Some((front, back, name)) = &f.nat {
                let name = name.as_ref().map(|n| format!(" {n}")).unwrap_or_default();
                steps.push(step(
                    SourceVeth,
                    None,
                    format!(
                        "ipv4_lb_from_lxc (tail call): service{name} {front}: backend {back} \
                         chosen, destination translated (DNAT); tail call back to ipv4_from_lxc"
                    ),
                ));
                dst = Some(*back.ip());
            }
            nat_told = true;
        }
        dst = e.packet.dst_ip.or(dst);
        steps.push(event_step(e, f, dst));
    }
    let verdict = verdict(f);
    if let (TraceOutcome::Tunnel, Some((ip, node))) = (verdict.outcome, &f.tunnel) {
        let to = node.clone().unwrap_or_else(|| ip.to_string());
        steps.push(step(
            Tunnel,
            Some(RemoteNode),
            format!("VXLAN to {to} ({ip}); its from-overlay delivers to the pod"),
        ));
    }
    if let (TraceOutcome::Stack, Some((node, cidr))) = (verdict.outcome, &f.routed_to) {
        steps.push(step(
            Node,
            Some(RemoteNode),
            format!(
                "the stack routes it to {node} (pod CIDR {cidr}); its from-netdev delivers to the pod"
            ),
        ));
    }
    (steps, verdict)
}

fn verdict(f: &TraceFacts<'_>) -> TraceVerdict {
    let drop = f.events.iter().find(|e| e.kind == MonitorKind::Drop);
    let delivered = f
        .events
        .iter()
        .find(|e| e.kind == MonitorKind::Trace && e.observation_point == "to-endpoint");
    let mut v = TraceVerdict {
        outcome: TraceOutcome::Dropped,
        summary: String::new(),
        pod: None,
        tunnel_endpoint: None,
        node: None,
        reason: None,
        policy: None,
        tc_verdict: tc_verdict_name(f.tc_verdict),
    };
    match (f.tc_verdict, &f.tunnel, delivered) {
        (TC_ACT_SHOT, _, _) => {
            v.reason = drop.and_then(|d| d.reason.clone());
            v.policy = drop.and_then(|d| d.policy.clone());
            let why = v
                .reason
                .as_ref()
                .map_or("no drop event".to_string(), |r| r.description.clone());
            let policy = v
                .policy
                .as_ref()
                .map(|p| format!(" ({})", p.explanation))
                .unwrap_or_default();
            v.summary = format!("dropped: {why}{policy}");
        }
        (TC_ACT_REDIRECT, Some((ip, node)), _) => {
            v.outcome = TraceOutcome::Tunnel;
            v.tunnel_endpoint = Some(*ip);
            v.node = node.clone();
            v.summary = format!(
                "to {} via tunnel",
                node.clone().unwrap_or_else(|| format!("node {ip}"))
            );
        }
        (TC_ACT_REDIRECT, None, Some(e)) => {
            v.outcome = TraceOutcome::Delivered;
            v.pod = e.dst_pod.clone();
            v.summary = format!("delivered to {}", pod_or_ep(e.dst_endpoint, &e.dst_pod));
        }
        (TC_ACT_OK, _, _) => {
            v.outcome = TraceOutcome::Stack;
            v.summary = match &f.routed_to {
                Some((node, _)) => {
                    v.node = Some(node.clone());
                    format!("to {node} via the stack (direct routing)")
                }
                None => "to the stack".into(),
            };
        }
        (other, _, _) => {
            v.summary = format!(
                "{}: the trace cannot say where it went",
                tc_verdict_name(other)
            );
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use pilus_api_types::{MonitorDropReason, MonitorPolicy, MonitorVerdict};

    fn ev(kind: MonitorKind, obs: &str) -> MonitorEvent {
        MonitorEvent {
            seq: 0,
            time_ns: 0,
            kind,
            cpu: 0,
            reason: None,
            observation_point: obs.into(),
            direction: "egress".into(),
            state: "new".into(),
            endpoint: 12,
            src_endpoint: Some(12),
            dst_endpoint: Some(13),
            src_pod: Some("shop/client".into()),
            dst_pod: Some("shop/web".into()),
            ifindex: 7,
            ifname: Some("lxc0a".into()),
            src_identity: 256,
            dst_identity: 257,
            orig_len: 54,
            cap_len: 54,
            ..Default::default()
        }
    }

    fn policy(text: &str) -> MonitorPolicy {
        MonitorPolicy {
            cookie: 1,
            endpoint: 13,
            direction: "ingress".into(),
            name: Some("CiliumNetworkPolicy shop/web".into()),
            rule: None,
            peers: None,
            selected_by: vec![],
            explanation: text.into(),
        }
    }

    fn facts<'a>(
        sent: &'a MonitorPacket,
        verdict: i32,
        events: &'a [MonitorEvent],
    ) -> TraceFacts<'a> {
        TraceFacts {
            src_pod: "shop/client".into(),
            sent,
            tc_verdict: verdict,
            events,
            tunnel: None,
            nat: None,
            routed_to: None,
            conntrack_copied: 0,
        }
    }

    #[test]
    fn delivered_story_walks_from_the_pod_to_the_peer() {
        let mut pv = ev(MonitorKind::PolicyVerdict, "from-endpoint");
        pv.direction = "ingress".into();
        pv.verdict = Some(MonitorVerdict {
            action: "allow".into(),
            match_level: "L3-L4".into(),
            protocol: 6,
            port: 80,
        });
        pv.policy = Some(policy(
            "allowed by CiliumNetworkPolicy shop/web rule spec.ingress[0]",
        ));
        let events = [
            ev(MonitorKind::Trace, "from-endpoint"),
            pv,
            ev(MonitorKind::Trace, "to-endpoint"),
        ];
        let sent = MonitorPacket::default();
        let (steps, v) = story(&facts(&sent, TC_ACT_REDIRECT, &events));
        assert_eq!(v.outcome, TraceOutcome::Delivered);
        assert_eq!(v.summary, "delivered to pod shop/web");
        assert_eq!(v.pod.as_deref(), Some("shop/web"));
        assert_eq!(steps.len(), 4);
        let mut f = facts(&sent, TC_ACT_REDIRECT, &events);
        f.conntrack_copied = 2;
        let (copied, _) = story(&f);
        assert_eq!(
            copied[1].text,
            "conntrack: 2 live entries of this flow copied into the trace's own table"
        );
        assert_eq!(steps[0].lane, TraceLane::SourcePod);
        assert_eq!(steps[0].to_lane, Some(TraceLane::SourceVeth));
        assert!(steps[2].text.starts_with("policy: ingress of pod shop/web, peer identity 256: allow (match L3-L4): allowed by"), "{}", steps[2].text);
        assert_eq!(steps[3].to_lane, Some(TraceLane::DestinationPod));
    }

    #[test]
    fn dropped_story_names_the_reason_and_policy() {
        let mut d = ev(MonitorKind::Drop, "from-endpoint");
        d.reason = Some(MonitorDropReason {
            code: 133,
            name: "DROP_POLICY".into(),
            description: "Policy denied: no rule allows this flow".into(),
        });
        d.policy = Some(policy(
            "denied by default (selected by CiliumNetworkPolicy shop/web)",
        ));
        let events = [ev(MonitorKind::Trace, "from-endpoint"), d];
        let sent = MonitorPacket::default();
        let (steps, v) = story(&facts(&sent, TC_ACT_SHOT, &events));
        assert_eq!(v.outcome, TraceOutcome::Dropped);
        assert_eq!(
            v.summary,
            "dropped: Policy denied: no rule allows this flow (denied by default (selected by CiliumNetworkPolicy shop/web))"
        );
        assert_eq!(v.reason.unwrap().name, "DROP_POLICY");
        assert!(steps.last().unwrap().text.starts_with("dropped: "));
    }

    #[test]
    fn tunnel_and_stack_and_service_translation() {
        let mut encap = ev(MonitorKind::Debug, "");
        encap.message =
            Some("Encapsulating to node 198.18.100.2 (0x264612c6) from seclabel 256".into());
        // Debug events carry no packet: the destination is the one after
        // the service's translation, not the frontend the pod sent to.
        let mut from = ev(MonitorKind::Trace, "from-endpoint");
        from.packet.dst_ip = Some(Ipv4Addr::new(198, 19, 0, 10));
        let events = [from, encap, ev(MonitorKind::Trace, "to-overlay")];
        let sent = MonitorPacket {
            dst_ip: Some(Ipv4Addr::new(198, 19, 0, 10)),
            ..Default::default()
        };
        let mut f = facts(&sent, TC_ACT_REDIRECT, &events);
        f.tunnel = Some((Ipv4Addr::new(198, 18, 100, 2), Some("node-2".into())));
        f.nat = Some((
            SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 10), 80),
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 5), 8080),
            Some("shop/web".into()),
        ));
        let (steps, v) = story(&f);
        assert_eq!(v.summary, "to node-2 via tunnel");
        assert_eq!(v.node.as_deref(), Some("node-2"));
        let texts: Vec<&str> = steps.iter().map(|s| s.text.as_str()).collect();
        assert!(
            texts[2].starts_with(
                "ipv4_lb_from_lxc (tail call): service shop/web 198.19.0.10:80: backend \
                 198.18.1.5:8080"
            ),
            "{texts:?}"
        );
        assert_eq!(
            texts[3],
            "ipcache: 198.18.1.5 (identity 257) is behind node 198.18.100.2 (node-2): VXLAN with \
             VNI 256 (the source identity)"
        );
        assert_eq!(steps.last().unwrap().to_lane, Some(TraceLane::RemoteNode));

        f.tunnel = None;
        f.nat = None;
        let events = [ev(MonitorKind::Trace, "to-stack")];
        f.events = &events;
        f.tc_verdict = TC_ACT_OK;
        let (steps, v) = story(&f);
        assert_eq!(
            (v.outcome, v.summary.as_str()),
            (TraceOutcome::Stack, "to the stack")
        );
        assert_eq!(steps[1].to_lane, Some(TraceLane::Node));
        assert_eq!(steps.len(), 2);

        // Direct routing: the stack takes it to the node of its pod CIDR.
        f.routed_to = Some(("node-2".into(), "198.18.2.0/24".into()));
        let (steps, v) = story(&f);
        assert_eq!(v.summary, "to node-2 via the stack (direct routing)");
        assert_eq!(v.node.as_deref(), Some("node-2"));
        let last = steps.last().unwrap();
        assert_eq!(
            (last.lane, last.to_lane),
            (TraceLane::Node, Some(TraceLane::RemoteNode))
        );
        assert!(
            last.text.contains("pod CIDR 198.18.2.0/24"),
            "{}",
            last.text
        );
    }
}
