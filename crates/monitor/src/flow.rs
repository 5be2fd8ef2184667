//! Flow records (`pilus observe`, as Hubble shows flows): a decoded trace,
//! drop or policy-verdict event with both sides named — pod, namespace,
//! identity labels, the node behind the address — and its verdict, and the
//! three ways `pilus observe` prints them (compact lines, a table, JSON).
//!
//! What only the agent knows comes through [`FlowNames`], so this is tested
//! on crafted events like the rest of the crate.

use crate::format_packet;
use pilus_api_types::{Flow, FlowEndpoint, FlowVerdict, MonitorEvent, MonitorKind};
use std::net::Ipv4Addr;

/// What the agent knows about the sides of a flow.
pub trait FlowNames {
    /// The node reporting the flows.
    fn node(&self) -> String;
    /// An identity's labels, sorted.
    fn labels(&self, _identity: u32) -> Vec<String> {
        Vec::new()
    }
    /// The node an address lives behind (this node for its own pods).
    fn node_of(&self, _ip: Ipv4Addr) -> Option<String> {
        None
    }
    /// Another node's pod at this address, as `namespace/name` (the event
    /// names this node's own).
    fn pod_of(&self, _ip: Ipv4Addr) -> Option<String> {
        None
    }
}

/// The namespace a label set names (`k8s:io.kubernetes.pod.namespace=X`).
fn namespace_label(labels: &[String]) -> Option<String> {
    labels.iter().find_map(|l| {
        l.strip_prefix("k8s:io.kubernetes.pod.namespace=")
            .map(str::to_owned)
    })
}

fn endpoint(
    names: &dyn FlowNames,
    ip: Option<Ipv4Addr>,
    port: Option<u16>,
    identity: u32,
    pod: &Option<String>,
) -> FlowEndpoint {
    let labels = names.labels(identity);
    // The monitor names local pods `namespace/name`; the cluster store the
    // other nodes'.
    let pod = pod.clone().or_else(|| ip.and_then(|ip| names.pod_of(ip)));
    let (namespace, pod) = match pod.as_deref().and_then(|p| p.split_once('/')) {
        Some((ns, name)) => (Some(ns.to_owned()), Some(name.to_owned())),
        None => (namespace_label(&labels), None),
    };
    FlowEndpoint {
        ip,
        port,
        identity,
        pod,
        namespace,
        labels,
        node: ip.and_then(|ip| names.node_of(ip)),
    }
}

/// `TCP`, `UDP`, `ICMPv4` as Hubble names them.
fn protocol(n: Option<u8>) -> String {
    match n {
        Some(6) => "TCP".into(),
        Some(17) => "UDP".into(),
        Some(1) => "ICMPv4".into(),
        Some(n) => format!("proto {n}"),
        None => "unknown".into(),
    }
}

/// The flow an event records; `None` for events that are not about a
/// packet's fate (debug messages, captures, losses).
pub fn flow_of(e: &MonitorEvent, names: &dyn FlowNames) -> Option<Flow> {
    let verdict = match e.kind {
        MonitorKind::Trace => FlowVerdict::Forwarded,
        MonitorKind::Drop => FlowVerdict::Dropped,
        MonitorKind::PolicyVerdict => match e.verdict.as_ref() {
            Some(v) if v.action == "allow" => FlowVerdict::Forwarded,
            _ => FlowVerdict::Dropped,
        },
        _ => return None,
    };
    let p = &e.packet;
    let source = endpoint(names, p.src_ip, p.src_port, e.src_identity, &e.src_pod);
    let destination = endpoint(names, p.dst_ip, p.dst_port, e.dst_identity, &e.dst_pod);
    let mut summary = match e.kind {
        MonitorKind::Drop => format!(
            "drop: {}",
            e.reason
                .as_ref()
                .map_or("unknown reason".into(), |r| r.description.clone())
        ),
        MonitorKind::PolicyVerdict => format!(
            "policy-verdict: {} {} {}",
            e.verdict.as_ref().map_or("?", |v| v.match_level.as_str()),
            e.direction.to_uppercase(),
            if verdict == FlowVerdict::Forwarded {
                "ALLOWED"
            } else {
                "DENIED"
            }
        ),
        _ => format!("{} {}", e.observation_point, e.state),
    };
    summary.push_str(": ");
    summary.push_str(&format_packet(p));
    Some(Flow {
        time_ns: e.time_ns,
        node: names.node(),
        seq: e.seq,
        verdict,
        event: e.kind,
        drop_reason: e.reason.clone(),
        observation_point: e.observation_point.clone(),
        traffic_direction: e.direction.clone(),
        state: e.state.clone(),
        protocol: protocol(p.protocol),
        tcp_flags: p.tcp_flags.clone().unwrap_or_default(),
        source,
        destination,
        policy: e.policy.as_ref().and_then(|p| p.name.clone()),
        policy_explanation: e.policy.as_ref().map(|p| p.explanation.clone()),
        match_level: e.verdict.as_ref().map(|v| v.match_level.clone()),
        interface: e.ifname.clone(),
        summary,
    })
}

/// `Dec  1 22:51:03.123` (UTC), as Hubble's compact output starts.
pub fn format_time(time_ns: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time_ns / 1_000_000_000;
    let millis = (time_ns / 1_000_000) % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{} {day:>2} {:02}:{:02}:{:02}.{millis:03}",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// What a flow's verdict column says: `FORWARDED`, or for drops
/// `DROPPED (reason)`.
fn verdict_text(f: &Flow) -> String {
    match (&f.verdict, &f.drop_reason) {
        (FlowVerdict::Dropped, Some(r)) => format!("DROPPED ({})", r.description),
        (v, _) => v.as_str().to_string(),
    }
}

fn policy_text(f: &Flow) -> String {
    match (&f.policy, &f.policy_explanation) {
        (Some(name), _) => format!(" policy {name}"),
        (None, Some(why)) if f.verdict == FlowVerdict::Dropped => format!(" ({why})"),
        _ => String::new(),
    }
}

/// One line per flow, as `hubble observe` prints them:
///
/// ```text
/// Dec  1 22:51:03.123 [node-1]: default/client:43122 (ID:256) -> default/web:80 (ID:257) to-endpoint FORWARDED (TCP Flags: SYN)
/// ```
pub fn format_compact(f: &Flow) -> String {
    let side = |e: &FlowEndpoint| format!("{} (ID:{})", e.display(), e.identity);
    let mut line = format!(
        "{} [{}]: {} -> {} {} {}",
        format_time(f.time_ns),
        f.node,
        side(&f.source),
        side(&f.destination),
        f.observation_point,
        verdict_text(f),
    );
    if f.event == MonitorKind::PolicyVerdict {
        line.push_str(&format!(
            " policy-verdict:{} {}",
            f.match_level.as_deref().unwrap_or("?"),
            f.traffic_direction.to_uppercase()
        ));
    }
    match f.protocol.as_str() {
        "TCP" if !f.tcp_flags.is_empty() => {
            line.push_str(&format!(" (TCP Flags: {})", f.tcp_flags.join(", ")))
        }
        "TCP" => {}
        p => line.push_str(&format!(" {p}")),
    }
    line.push_str(&policy_text(f));
    line
}

/// The table's header and one row per flow, columns separated by two
/// spaces and aligned.
pub fn format_table(flows: &[Flow]) -> Vec<String> {
    let header = [
        "TIME",
        "NODE",
        "SOURCE",
        "DESTINATION",
        "TYPE",
        "VERDICT",
        "SUMMARY",
    ];
    let rows: Vec<[String; 7]> = flows
        .iter()
        .map(|f| {
            [
                format_time(f.time_ns),
                f.node.clone(),
                f.source.display(),
                f.destination.display(),
                f.observation_point.clone(),
                verdict_text(f),
                format!("{}{}", f.summary, policy_text(f)),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pilus_api_types::{
        FlowFilter, MonitorDropReason, MonitorPacket, MonitorPolicy, MonitorVerdict,
    };

    struct Cluster;
    impl FlowNames for Cluster {
        fn node(&self) -> String {
            "node-1".into()
        }
        fn labels(&self, identity: u32) -> Vec<String> {
            match identity {
                256 => vec![
                    "k8s:app=client".into(),
                    "k8s:io.kubernetes.pod.namespace=shop".into(),
                ],
                300 => vec![
                    "k8s:app=db".into(),
                    "k8s:io.kubernetes.pod.namespace=store".into(),
                ],
                2 => vec!["reserved:world".into()],
                _ => Vec::new(),
            }
        }
        fn node_of(&self, ip: Ipv4Addr) -> Option<String> {
            match ip.octets()[2] {
                1 => Some("node-1".into()),
                2 => Some("node-2".into()),
                _ => None,
            }
        }
        fn pod_of(&self, ip: Ipv4Addr) -> Option<String> {
            (ip == Ipv4Addr::new(198, 18, 2, 7)).then(|| "store/cache".into())
        }
    }

    fn event(kind: MonitorKind) -> MonitorEvent {
        MonitorEvent {
            seq: 7,
            time_ns: 1_796_169_063_123_000_000,
            kind,
            cpu: 1,
            reason: None,
            observation_point: "to-endpoint".into(),
            direction: "ingress".into(),
            state: "new".into(),
            endpoint: 12,
            src_endpoint: Some(11),
            dst_endpoint: None,
            src_pod: Some("shop/client".into()),
            dst_pod: None,
            ifindex: 9,
            ifname: Some("lxc0a".into()),
            src_identity: 256,
            dst_identity: 300,
            orig_len: 60,
            cap_len: 60,
            hash: 0,
            packet: MonitorPacket {
                ethertype: Some(0x0800),
                src_ip: Some(Ipv4Addr::new(198, 18, 1, 5)),
                dst_ip: Some(Ipv4Addr::new(198, 18, 2, 6)),
                protocol: Some(6),
                src_port: Some(43122),
                dst_port: Some(5432),
                tcp_flags: Some(vec!["SYN".into()]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn policy(name: &str) -> MonitorPolicy {
        MonitorPolicy {
            cookie: 1 << 12,
            endpoint: 12,
            direction: "ingress".into(),
            name: Some(name.into()),
            rule: Some("spec.ingressDeny[0]".into()),
            peers: None,
            selected_by: Vec::new(),
            explanation: format!("denied by {name} rule spec.ingressDeny[0]"),
        }
    }

    #[test]
    fn a_trace_is_a_forwarded_flow_with_both_sides_named() {
        let f = flow_of(&event(MonitorKind::Trace), &Cluster).expect("a flow");
        assert_eq!(f.verdict, FlowVerdict::Forwarded);
        assert_eq!(f.node, "node-1");
        assert_eq!(f.protocol, "TCP");
        assert_eq!(f.source.pod.as_deref(), Some("client"));
        assert_eq!(f.source.namespace.as_deref(), Some("shop"));
        assert_eq!(f.source.node.as_deref(), Some("node-1"));
        assert_eq!(f.source.port, Some(43122));
        // Not a pod of this node: the namespace from its identity's labels.
        assert_eq!(f.destination.pod, None);
        assert_eq!(f.destination.namespace.as_deref(), Some("store"));
        assert_eq!(f.destination.node.as_deref(), Some("node-2"));
        assert_eq!(f.destination.labels, Cluster.labels(300));
        // Another node's pod the cluster store names.
        let mut e = event(MonitorKind::Trace);
        e.packet.dst_ip = Some(Ipv4Addr::new(198, 18, 2, 7));
        let f2 = flow_of(&e, &Cluster).unwrap();
        assert_eq!(
            (
                f2.destination.namespace.as_deref(),
                f2.destination.pod.as_deref()
            ),
            (Some("store"), Some("cache"))
        );
        assert_eq!(
            format_compact(&f),
            "Dec  1 23:51:03.123 [node-1]: shop/client:43122 (ID:256) -> \
             198.18.2.6:5432 (ID:300) to-endpoint FORWARDED (TCP Flags: SYN)"
        );
    }

    #[test]
    fn a_policy_drop_names_its_reason_and_policy() {
        let mut e = event(MonitorKind::Drop);
        e.reason = Some(MonitorDropReason {
            code: 133,
            name: "DROP_POLICY_DENY".into(),
            description: "Policy denied by a deny rule".into(),
        });
        e.policy = Some(policy("CiliumNetworkPolicy store/no-shop"));
        let f = flow_of(&e, &Cluster).expect("a flow");
        assert_eq!(f.verdict, FlowVerdict::Dropped);
        assert_eq!(
            f.policy.as_deref(),
            Some("CiliumNetworkPolicy store/no-shop")
        );
        let line = format_compact(&f);
        assert!(
            line.contains("DROPPED (Policy denied by a deny rule)")
                && line.ends_with("policy CiliumNetworkPolicy store/no-shop"),
            "{line}"
        );
        let table = format_table(std::slice::from_ref(&f));
        assert_eq!(table.len(), 2);
        assert!(table[0].starts_with("TIME") && table[0].contains("VERDICT"));
        assert!(table[1].contains("DROPPED") && table[1].contains("shop/client:43122"));
    }

    #[test]
    fn verdicts_follow_the_policy_action_and_other_kinds_are_not_flows() {
        let mut e = event(MonitorKind::PolicyVerdict);
        e.verdict = Some(MonitorVerdict {
            action: "allow".into(),
            match_level: "L3-L4".into(),
            protocol: 6,
            port: 5432,
        });
        let f = flow_of(&e, &Cluster).unwrap();
        assert_eq!(f.verdict, FlowVerdict::Forwarded);
        assert!(format_compact(&f).contains("policy-verdict:L3-L4 INGRESS"));
        e.verdict.as_mut().unwrap().action = "deny".into();
        assert_eq!(flow_of(&e, &Cluster).unwrap().verdict, FlowVerdict::Dropped);
        for k in [MonitorKind::Debug, MonitorKind::Capture, MonitorKind::Lost] {
            assert!(flow_of(&event(k), &Cluster).is_none(), "{k:?}");
        }
    }

    #[test]
    fn filters_match_either_side_and_all_lists_must_match() {
        let f = flow_of(&event(MonitorKind::Trace), &Cluster).unwrap();
        let yes = |flt: FlowFilter| assert!(flt.matches(&f), "{flt:?}");
        let no = |flt: FlowFilter| assert!(!flt.matches(&f), "{flt:?}");
        yes(FlowFilter::default());
        yes(FlowFilter {
            pods: vec!["client".into()],
            ..Default::default()
        });
        yes(FlowFilter {
            pods: vec!["shop/client".into()],
            ..Default::default()
        });
        no(FlowFilter {
            pods: vec!["store/client".into()],
            ..Default::default()
        });
        yes(FlowFilter {
            namespaces: vec!["store".into()],
            ports: vec![5432],
            protocols: vec!["tcp".into()],
            verdicts: vec![FlowVerdict::Forwarded],
            ..Default::default()
        });
        no(FlowFilter {
            namespaces: vec!["store".into()],
            protocols: vec!["udp".into()],
            ..Default::default()
        });
        no(FlowFilter {
            verdicts: vec![FlowVerdict::Dropped],
            ..Default::default()
        });
        no(FlowFilter {
            ports: vec![80],
            ..Default::default()
        });
    }

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(format_time(0), "Jan  1 00:00:00.000");
        // 2024-02-29 12:34:56.789 UTC.
        assert_eq!(
            format_time(1_709_210_096_789_000_000),
            "Feb 29 12:34:56.789"
        );
    }
}
