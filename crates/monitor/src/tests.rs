//! The decoder and both renderings on crafted records: endpoints, pods and
//! policies by name, each kind's line, `cilium monitor -j` checked against a
//! line Cilium printed (seed 002), and packets cut short.

use super::*;
use crate::wire::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, ICMP_DEST_UNREACH, IPPROTO_ICMP, IPPROTO_UDP};
use pilus_api_types::MonitorFilter;
use pilus_packet::{arp_request, tcp_flags::*, PacketBuilder};

const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);
const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 6);
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 5];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 6];

fn event(kind: u8, subtype: u8, obs: u8, dir: u8, ep: u16, pkt: &[u8]) -> Event {
    let mut data = [0u8; EVENT_CAPTURE_LEN as usize];
    let cap = pkt.len().min(data.len());
    data[..cap].copy_from_slice(&pkt[..cap]);
    Event {
        kind,
        subtype,
        obs_point: obs,
        direction: dir,
        ep_id: ep,
        cap_len: cap as u16,
        orig_len: pkt.len() as u32,
        ifindex: 42,
        src_identity: 256,
        dst_identity: 257,
        ktime_ns: 1,
        ct_state: CT_NEW,
        cpu: 1,
        data,
        ..Default::default()
    }
}

fn syn() -> Vec<u8> {
    PacketBuilder::new(MAC_A, MAC_B)
        .ipv4(A, B)
        .tcp(43122, 80, SYN)
        .build()
}

/// A (198.18.0.5) is endpoint 12, pod shop/client; B (.6) endpoint 13,
/// shop/web; interface 42 is lxc12; policies are named by cookie.
struct Fake;

impl Names for Fake {
    fn endpoint_by_ip(&self, ip: Ipv4Addr) -> Option<u16> {
        match ip {
            A => Some(12),
            B => Some(13),
            _ => None,
        }
    }
    fn pod(&self, ep: u16) -> Option<String> {
        match ep {
            12 => Some("shop/client".into()),
            13 => Some("shop/web".into()),
            _ => None,
        }
    }
    fn ifname(&self, ifindex: u32) -> Option<String> {
        (ifindex == 42).then(|| "lxc12".into())
    }
    fn policy(&self, d: &PolicyDecision) -> Option<MonitorPolicy> {
        let explanation = if d.cookie == 0 {
            format!("default deny: endpoint selected by policy CiliumNetworkPolicy shop/web-only; no rule allows this peer ({d:?})")
        } else {
            format!("rule of cookie {:#x} ({d:?})", d.cookie)
        };
        Some(MonitorPolicy {
            cookie: d.cookie,
            endpoint: d.ep_id,
            direction: if d.ingress { "ingress" } else { "egress" }.into(),
            name: Some("CiliumNetworkPolicy shop/web-only".into()),
            rule: None,
            peers: None,
            selected_by: vec![],
            explanation,
        })
    }
}

/// A's SYN to B dropped by a deny rule of B's ingress, in A's program.
fn deny_at_web() -> Event {
    let mut ev = event(
        EVENT_DROP,
        DROP_POLICY_DENY,
        OBS_FROM_ENDPOINT,
        DIR_INGRESS,
        12,
        &syn(),
    );
    ev.dst_ep_id = 13;
    ev
}

fn dec(ev: &Event) -> MonitorEvent {
    decode(&Record::Event(*ev), 7, 99, &Fake)
}

#[test]
fn a_trace_names_both_endpoints_their_pods_the_interface_and_the_state() {
    // Local delivery, reported by the sender's program, which names the
    // destination endpoint.
    let mut ev = event(EVENT_TRACE, 0, OBS_TO_ENDPOINT, DIR_EGRESS, 12, &syn());
    ev.dst_ep_id = 13;
    ev.hash = 0xc1d6;
    let e = dec(&ev);
    assert_eq!(
        (e.seq, e.time_ns, e.kind, e.cpu),
        (7, 99, MonitorKind::Trace, 1)
    );
    assert_eq!((e.src_endpoint, e.dst_endpoint), (Some(12), Some(13)));
    assert_eq!(
        (e.src_pod.as_deref(), e.dst_pod.as_deref()),
        (Some("shop/client"), Some("shop/web"))
    );
    assert_eq!(
        (e.state.as_str(), e.ifname.as_deref()),
        ("new", Some("lxc12"))
    );
    assert_eq!(
        format_line(&e),
        "-> endpoint 13 (shop/web) (to-endpoint) flow 0xc1d6 identity 256->257 state new \
         ifindex lxc12: 198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN"
    );
    assert_eq!(e.reason, None);
    assert_eq!(e.policy, None);
    // From the stack into B: B's to-container program (the endpoint is the
    // destination); the source is found by address.
    let mut ev = event(EVENT_TRACE, 0, OBS_TO_ENDPOINT, DIR_INGRESS, 13, &syn());
    ev.dst_ep_id = 13;
    ev.ct_state = CT_REPLY;
    let e = decode(&Record::Event(ev), 1, 0, &NoNames);
    assert_eq!(
        (e.src_endpoint, e.dst_endpoint),
        (None, Some(13)),
        "nothing known by address"
    );
    assert!(format_line(&e).starts_with(
        "-> endpoint 13 (to-endpoint) flow 0x0 identity 256->257 state reply ifindex 42:"
    ));
    // The sender's from-endpoint, before the destination was looked up.
    let ev = event(EVENT_TRACE, 0, OBS_FROM_ENDPOINT, DIR_EGRESS, 12, &syn());
    let e = dec(&ev);
    assert_eq!(
        (e.src_endpoint, e.dst_endpoint),
        (Some(12), Some(13)),
        "the destination by address"
    );
    assert!(
        format_line(&e).starts_with("<- endpoint 12 (shop/client) (from-endpoint)"),
        "{}",
        format_line(&e)
    );
    // To the stack, to a remote address.
    let out = PacketBuilder::new(MAC_A, MAC_B)
        .ipv4(A, Ipv4Addr::new(198, 19, 9, 9))
        .udp(5353, 53)
        .build();
    let mut ev = event(EVENT_TRACE, 0, OBS_TO_STACK, DIR_EGRESS, 12, &out);
    ev.ct_state = CT_ESTABLISHED;
    let e = dec(&ev);
    assert_eq!((e.src_endpoint, e.dst_endpoint), (Some(12), None));
    assert_eq!(
        format_line(&e),
        "-> stack (to-stack) flow 0x0 identity 256->257 state established ifindex lxc12: \
         198.18.0.5:5353 -> 198.19.9.9:53 udp"
    );
}

#[test]
fn arrivals_from_other_nodes_name_the_local_receiver_only() {
    let remote = Ipv4Addr::new(198, 18, 2, 3);
    let pkt = PacketBuilder::new(MAC_A, MAC_B)
        .ipv4(remote, B)
        .tcp(40000, 80, SYN)
        .build();
    for obs in [OBS_FROM_OVERLAY, OBS_FROM_NETWORK] {
        let mut ev = event(EVENT_DROP, DROP_POLICY, obs, DIR_INGRESS, 13, &pkt);
        ev.dst_ep_id = 13;
        let e = dec(&ev);
        assert_eq!(
            (e.src_endpoint, e.dst_endpoint),
            (None, Some(13)),
            "obs {obs}"
        );
    }
    let back = PacketBuilder::new(MAC_A, MAC_B)
        .ipv4(B, remote)
        .tcp(80, 40000, SYN | ACK)
        .build();
    for obs in [OBS_TO_OVERLAY, OBS_TO_NETWORK] {
        let e = dec(&event(EVENT_TRACE, 0, obs, DIR_EGRESS, 13, &back));
        assert_eq!(
            (e.src_endpoint, e.dst_endpoint),
            (Some(13), None),
            "obs {obs}"
        );
    }
    let line = format_line(&dec(&event(
        EVENT_TRACE,
        0,
        OBS_TO_OVERLAY,
        DIR_EGRESS,
        13,
        &back,
    )));
    assert!(
        line.starts_with("-> overlay (to-overlay) flow 0x0"),
        "{line}"
    );
}

#[test]
fn a_policy_drop_names_the_policy_of_the_endpoint_whose_direction_decided() {
    // B's ingress policy, applied in A's program: B's policy, peer A.
    let mut ev = deny_at_web();
    ev.cookie = 0x3001;
    let e = dec(&ev);
    let r = e.reason.as_ref().unwrap();
    assert_eq!(
        (r.code, r.name.as_str()),
        (DROP_POLICY_DENY, "DROP_POLICY_DENY")
    );
    let p = e.policy.as_ref().expect("a policy drop is named");
    assert_eq!(
        (p.cookie, p.endpoint, p.direction.as_str()),
        (0x3001, 13, "ingress")
    );
    assert!(
        p.explanation.contains("ep_id: 13, ingress: true, peer: 256, protocol: 6, port: 80, cookie: 12289, denied: true"),
        "{}",
        p.explanation
    );
    assert_eq!(
        format_line(&e),
        format!(
            "xx drop (Policy denied by a deny rule) from-endpoint flow 0x0 to endpoint 13 (shop/web), \
             ifindex lxc12, identity 256->257, policy: {}: 198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN",
            p.explanation
        )
    );
    // A's egress default deny: A's policy, peer B's identity, cookie 0.
    let mut ev = event(
        EVENT_DROP,
        DROP_POLICY,
        OBS_FROM_ENDPOINT,
        DIR_EGRESS,
        12,
        &syn(),
    );
    ev.dst_ep_id = 13;
    let e = dec(&ev);
    let p = e.policy.unwrap();
    assert!(p.explanation.starts_with(
        "default deny: endpoint selected by policy CiliumNetworkPolicy shop/web-only"
    ));
    assert!(
        p.explanation
            .contains("ep_id: 12, ingress: false, peer: 257"),
        "{}",
        p.explanation
    );
    // Other drops have no policy.
    let e = dec(&event(
        EVENT_DROP,
        DROP_INVALID_SIP,
        OBS_FROM_ENDPOINT,
        DIR_EGRESS,
        12,
        &syn(),
    ));
    assert_eq!(e.policy, None);
    assert!(format_line(&e).starts_with("xx drop (Source IP is not the endpoint's (spoofing)) from-endpoint flow 0x0 to endpoint 13 (shop/web), ifindex lxc12, identity 256->257: "));
    // An unknown code stays numeric.
    let e = dec(&event(
        EVENT_DROP,
        200,
        OBS_TO_ENDPOINT,
        DIR_INGRESS,
        0,
        &syn(),
    ));
    assert_eq!(e.reason.unwrap().name, "DROP_200");
}

#[test]
fn a_policy_verdict_names_action_level_and_rule() {
    let mut ev = event(
        EVENT_POLICY_VERDICT,
        POLICY_MATCH_L3_L4,
        OBS_FROM_ENDPOINT,
        DIR_INGRESS,
        12,
        &syn(),
    );
    ev.verdict = VERDICT_ALLOW;
    ev.dst_ep_id = 13;
    ev.cookie = 0x4000;
    let e = dec(&ev);
    let v = e.verdict.as_ref().unwrap();
    assert_eq!(
        (
            v.action.as_str(),
            v.match_level.as_str(),
            v.protocol,
            v.port
        ),
        ("allow", "L3-L4", 6, 80)
    );
    let p = e.policy.as_ref().unwrap();
    assert!(p.explanation.contains("denied: false"), "{}", p.explanation);
    assert_eq!(
        format_line(&e),
        format!(
            "Policy verdict log: flow 0x0 local EP ID 13 (shop/web), remote ID 256, proto 6, ingress, \
             action allow, match L3-L4, policy: {}: 198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN",
            p.explanation
        )
    );
    for (level, name) in [
        (POLICY_MATCH_NONE, "none"),
        (POLICY_MATCH_L3_ONLY, "L3-Only"),
        (POLICY_MATCH_L4_ONLY, "L4-Only"),
        (POLICY_MATCH_ALL, "all"),
        (POLICY_MATCH_L3_PROTO, "L3-Proto"),
        (POLICY_MATCH_PROTO_ONLY, "Proto-Only"),
    ] {
        assert_eq!(match_level_name(level), name);
    }
}

#[test]
fn debug_capture_and_lost_records_read_as_cilium_says_them() {
    let mut ev = event(EVENT_DEBUG, DBG_LOCAL_DELIVERY, 0, 0, 12, &[]);
    (ev.arg1, ev.arg2) = (13, 256);
    let e = dec(&ev);
    assert_eq!(
        e.message.as_deref(),
        Some("Attempting local delivery for container id 13 from seclabel 256"),
        "seed 002's message"
    );
    assert_eq!(
        format_line(&e),
        "CPU 01: MARK 0x0 FROM 12 DEBUG: Attempting local delivery for container id 13 from seclabel 256"
    );
    let mut ev = event(EVENT_DEBUG, DBG_ENCAP, 0, 0, 12, &[]);
    ev.arg1 = u32::from_ne_bytes([198, 19, 0, 2]);
    ev.arg2 = 256;
    assert!(dec(&ev)
        .message
        .unwrap()
        .starts_with("Encapsulating to node 198.19.0.2 ("));
    for (sub, arg, want) in [
        (DBG_CT_VERDICT, u32::from(CT_REPLY), "CT verdict: Reply"),
        (DBG_DECAP, 300, "Tunnel decap: id=300 flowlabel=0"),
        (DBG_TO_STACK, 1, "Going to the stack, policy-skip=1"),
    ] {
        let mut ev = event(EVENT_DEBUG, sub, 0, 0, 12, &[]);
        ev.arg1 = arg;
        assert_eq!(dec(&ev).message.as_deref(), Some(want));
    }

    let mut ev = event(EVENT_CAPTURE, CAPTURE_DELIVERY, 0, 0, 12, &syn());
    ev.arg1 = 77;
    ev.dst_ep_id = 13;
    let e = dec(&ev);
    assert_eq!(
        (e.message.as_deref(), e.delivered_to),
        (Some("Delivery to ifindex 77"), Some(77))
    );
    assert_eq!(
        format_line(&e),
        "-> endpoint 13 (shop/web) (capture: Delivery to ifindex 77): 198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN"
    );

    let e = decode(&Record::Lost { cpu: 3, count: 57 }, 9, 0, &Fake);
    assert_eq!((e.kind, e.lost, e.cpu), (MonitorKind::Lost, Some(57), 3));
    assert_eq!(
        format_line(&e),
        "CPU 03: 57 events lost (the datapath's ring buffer was full)"
    );
    // A loss passes every filter: it is never hidden.
    let f = MonitorFilter {
        types: vec![MonitorKind::Drop],
        from: vec![99],
        ..Default::default()
    };
    assert!(f.matches(&e));
}

#[test]
fn filters_by_type_and_endpoint_as_cilium_monitor() {
    let mut ev = event(EVENT_TRACE, 0, OBS_TO_ENDPOINT, DIR_EGRESS, 12, &syn());
    ev.dst_ep_id = 13;
    let e = dec(&ev);
    let f = |types: Vec<MonitorKind>, from: Vec<u16>, to: Vec<u16>, related_to: Vec<u16>| {
        MonitorFilter {
            types,
            from,
            to,
            related_to,
        }
        .matches(&e)
    };
    assert!(f(vec![], vec![], vec![], vec![]));
    assert!(f(vec![MonitorKind::Trace], vec![12], vec![13], vec![]));
    assert!(!f(vec![MonitorKind::Drop], vec![], vec![], vec![]));
    assert!(
        !f(vec![], vec![13], vec![], vec![]),
        "13 is the destination"
    );
    assert!(!f(vec![], vec![], vec![12], vec![]));
    assert!(f(vec![], vec![], vec![], vec![13]));
    assert!(f(vec![], vec![], vec![], vec![12, 40]));
    assert!(!f(vec![], vec![], vec![], vec![40]));
    assert_eq!(
        MonitorKind::parse("policy-verdict"),
        Some(MonitorKind::PolicyVerdict)
    );
    assert_eq!(MonitorKind::PolicyVerdict.name(), "policy-verdict");
    assert_eq!(MonitorKind::parse("lost"), None, "not a type to ask for");
}

/// A trace line `cilium monitor -j` printed (seed 002, the first line),
/// with its addresses moved into 198.18.0.0/15.
const SEED_002_TRACE: &str = r#"{"cpu":"CPU 07:","type":"trace","mark":"0x0","ifindex":"0","state":"unknown","observationPoint":"from-endpoint","traceSummary":"\u003c- endpoint 1177","source":1177,"bytes":98,"srcLabel":50600,"dstLabel":0,"dstID":0,"summary":{"ethernet":"Ethernet\t{Contents=[..14..] Payload=[..86..] SrcMAC=5e:f0:f4:59:43:10 DstMAC=d2:be:ba:0b:21:63 EthernetType=IPv4 Length=0}","ipv4":"IPv4\t{Contents=[..20..] Payload=[..64..] Version=4 IHL=5 TOS=0 Length=84 Id=65482 Flags=DF FragOffset=0 TTL=64 Protocol=ICMPv4 Checksum=23459 SrcIP=198.18.1.83 DstIP=198.19.40.222 Options=[] Padding=[]}","icmpv4":"ICMPv4\t{Contents=[..8..] Payload=[..56..] TypeCode=EchoRequest Checksum=6019 Id=52535 Seq=1}","l2":{"src":"5e:f0:f4:59:43:10","dst":"d2:be:ba:0b:21:63"},"l3":{"src":"198.18.1.83","dst":"198.19.40.222"}}}"#;

/// The same line's debug and capture neighbours in seed 002.
const SEED_002_DEBUG: &str = r#"{"cpu":"CPU 06:","type":"debug","message":"Attempting local delivery for container id 1177 from seclabel 2"}"#;
const SEED_002_CAPTURE: &str = r#"{"cpu":"CPU 07:","type":"capture","mark":"0x0","message":"Delivery to ifindex 0","prefix":"-\u003e 0","source":1177,"bytes":98,"summary":"198.18.1.83 -\u003e 198.19.40.222 EchoRequest"}"#;

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Every field of Cilium's line is in ours, with the same JSON type, also
/// inside objects.
fn assert_cilium_fields(cilium: &serde_json::Value, ours: &serde_json::Value, at: &str) {
    let (serde_json::Value::Object(c), serde_json::Value::Object(o)) = (cilium, ours) else {
        panic!("{at}: not objects");
    };
    for (k, v) in c {
        let mine = o
            .get(k)
            .unwrap_or_else(|| panic!("{at}.{k} missing from {ours}"));
        assert_eq!(
            json_type(mine),
            json_type(v),
            "{at}.{k}: {mine} vs cilium's {v}"
        );
        if v.is_object() {
            assert_cilium_fields(v, mine, &format!("{at}.{k}"));
        }
    }
}

/// The echo request of seed 002's first line, rebuilt: same MACs, lengths,
/// id, flags and TTL.
fn seed_ping() -> Vec<u8> {
    PacketBuilder::new(
        [0x5e, 0xf0, 0xf4, 0x59, 0x43, 0x10],
        [0xd2, 0xbe, 0xba, 0x0b, 0x21, 0x63],
    )
    .ipv4(
        Ipv4Addr::new(198, 18, 1, 83),
        Ipv4Addr::new(198, 19, 40, 222),
    )
    .icmp_echo(true, 52535, 1)
    .payload(&[0u8; 56])
    .build()
}

#[test]
fn json_lines_carry_cilium_monitors_fields_with_their_types() {
    let ping = seed_ping();
    let mut ev = event(EVENT_TRACE, 0, OBS_FROM_ENDPOINT, DIR_EGRESS, 1177, &ping);
    (ev.ct_state, ev.cpu, ev.ifindex) = (CT_UNKNOWN, 7, 0);
    let line = cilium::json_line(&decode(&Record::Event(ev), 1, 0, &NoNames));
    let ours: serde_json::Value = serde_json::from_str(&line).unwrap();
    let seed: serde_json::Value = serde_json::from_str(SEED_002_TRACE).unwrap();
    assert_cilium_fields(&seed, &ours, "trace");
    // The values that do not depend on the node match too.
    for k in [
        "cpu",
        "type",
        "mark",
        "ifindex",
        "state",
        "observationPoint",
        "traceSummary",
        "source",
        "bytes",
    ] {
        assert_eq!(ours[k], seed[k], "{k}");
    }
    let (s, c) = (&ours["summary"], &seed["summary"]);
    assert_eq!((&s["l2"], &s["l3"]), (&c["l2"], &c["l3"]));
    assert_eq!(
        s["icmpv4"].as_str().unwrap().split(" Checksum").next(),
        c["icmpv4"].as_str().unwrap().split(" Checksum").next()
    );
    assert!(s["ethernet"].as_str().unwrap().starts_with("Ethernet\t{Contents=[..14..] Payload=[..84..] SrcMAC=5e:f0:f4:59:43:10 DstMAC=d2:be:ba:0b:21:63 EthernetType=IPv4"), "{}", s["ethernet"]);
    assert!(
        s["ipv4"].as_str().unwrap().starts_with(
            "IPv4\t{Contents=[..20..] Payload=[..64..] Version=4 IHL=5 TOS=0 Length=84 Id="
        ),
        "{}",
        s["ipv4"]
    );

    // Debug and capture, against their seed lines.
    let mut ev = event(EVENT_DEBUG, DBG_LOCAL_DELIVERY, 0, 0, 1177, &[]);
    (ev.arg1, ev.arg2, ev.cpu) = (1177, 2, 6);
    let line = cilium::json_line(&decode(&Record::Event(ev), 1, 0, &NoNames));
    assert_eq!(line, SEED_002_DEBUG, "byte for byte");
    let mut ev = event(EVENT_CAPTURE, CAPTURE_DELIVERY, 0, 0, 1177, &ping);
    ev.cpu = 7;
    let ours: serde_json::Value = serde_json::from_str(&cilium::json_line(&decode(
        &Record::Event(ev),
        1,
        0,
        &NoNames,
    )))
    .unwrap();
    let seed: serde_json::Value = serde_json::from_str(SEED_002_CAPTURE).unwrap();
    assert_cilium_fields(&seed, &ours, "capture");
    assert_eq!(ours, seed, "the same values too");

    // Drops: Cilium's DropNotifyVerbose fields, plus the policy.
    let ev = deny_at_web();
    let d: serde_json::Value = serde_json::from_str(&cilium::json_line(&dec(&ev))).unwrap();
    let cilium_drop = serde_json::json!({
        "cpu": "CPU 01:", "type": "drop", "mark": "0x0", "reason": "Policy denied by a deny rule",
        "source": 12, "bytes": 54, "srcLabel": 256, "dstLabel": 257, "dstID": 13,
        "Line": 0, "File": 0, "ExtError": 0, "Ifindex": 42,
        "summary": {"ethernet": "", "ipv4": "", "tcp": "", "l2": {"src": "", "dst": ""}, "l3": {"src": "", "dst": ""}, "l4": {"src": "", "dst": ""}}
    });
    assert_cilium_fields(&cilium_drop, &d, "drop");
    for k in [
        "type", "reason", "source", "srcLabel", "dstLabel", "dstID", "Ifindex",
    ] {
        assert_eq!(d[k], cilium_drop[k], "{k}");
    }
    assert!(
        d["policy"].as_str().unwrap().contains("cookie"),
        "the policy is named: {d}"
    );
    assert_eq!(
        d["summary"]["l4"],
        serde_json::json!({"src": "43122", "dst": "80"})
    );
    assert!(
        d["summary"]["tcp"]
            .as_str()
            .unwrap()
            .contains("SrcPort=43122 DstPort=80 "),
        "{}",
        d["summary"]["tcp"]
    );
    assert!(d["summary"]["tcp"]
        .as_str()
        .unwrap()
        .contains("FIN=false SYN=true RST=false"));

    // Policy verdicts (Cilium prints none in JSON: ours mirror its log line).
    let mut ev = event(
        EVENT_POLICY_VERDICT,
        POLICY_MATCH_L4_ONLY,
        OBS_FROM_ENDPOINT,
        DIR_INGRESS,
        12,
        &syn(),
    );
    (ev.verdict, ev.dst_ep_id) = (VERDICT_DENY, 13);
    let v: serde_json::Value = serde_json::from_str(&cilium::json_line(&dec(&ev))).unwrap();
    assert_eq!(
        (
            &v["type"],
            &v["source"],
            &v["remoteLabel"],
            &v["proto"],
            &v["dstPort"],
            &v["direction"],
            &v["action"],
            &v["match"]
        ),
        (
            &"policy-verdict".into(),
            &13.into(),
            &256.into(),
            &6.into(),
            &80.into(),
            &"ingress".into(),
            &"deny".into(),
            &"L4-Only".into()
        )
    );
    // Lost.
    let l = cilium::json_line(&decode(&Record::Lost { cpu: 1, count: 5 }, 1, 0, &NoNames));
    assert_eq!(l, r#"{"cpu":"CPU 01:","type":"lost","lost":5}"#);
}

#[test]
fn udp_and_truncated_packets_dissect_as_far_as_they_were_captured() {
    let udp = PacketBuilder::new(MAC_A, MAC_B)
        .ipv4(A, B)
        .udp(5353, 53)
        .payload(b"abcd")
        .build();
    let s = cilium::dissect(&udp);
    assert_eq!(
        s.l4,
        Some(cilium::Flow {
            src: "5353".into(),
            dst: "53".into()
        })
    );
    assert!(
        s.udp.starts_with(
            "UDP\t{Contents=[..8..] Payload=[..4..] SrcPort=5353 DstPort=53 Length=12 Checksum="
        ),
        "{}",
        s.udp
    );
    assert_eq!(
        cilium::connection_summary(&udp),
        "198.18.0.5:5353 -> 198.18.0.6:53 udp"
    );
    assert_eq!(
        cilium::connection_summary(&syn()),
        "198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN"
    );
    let cut = &syn()[..ETH_HLEN + 10];
    let s = cilium::dissect(cut);
    assert!(s.ethernet.starts_with("Ethernet") && s.ipv4.is_empty() && s.l3.is_none());
    assert_eq!(
        cilium::dissect(&[1, 2, 3]),
        cilium::DissectSummary::default()
    );
    assert_eq!(unhex(&hex(&syn())), syn());
}

#[test]
fn tcp_flags_and_icmp_types_by_name() {
    assert_eq!(tcp_flag_names(SYN | ACK), ["SYN", "ACK"]);
    assert_eq!(tcp_flag_names(FIN | ACK | PSH), ["FIN", "PSH", "ACK"]);
    assert!(tcp_flag_names(0).is_empty());
    let p = decode_packet(
        &PacketBuilder::new(MAC_A, MAC_B)
            .ipv4(A, B)
            .tcp(1, 2, RST | ACK)
            .build(),
    );
    assert_eq!(
        format_packet(&p),
        "198.18.0.5:1 -> 198.18.0.6:2 tcp RST, ACK"
    );
    let ping = PacketBuilder::new(MAC_A, MAC_B)
        .ipv4(A, B)
        .icmp_echo(true, 7, 1)
        .build();
    let p = decode_packet(&ping);
    assert_eq!(
        (p.protocol, p.icmp_type, p.icmp_code),
        (Some(IPPROTO_ICMP), Some(8), Some(0))
    );
    assert_eq!((p.src_port, p.dst_port), (None, None));
    assert_eq!(
        format_packet(&p),
        "198.18.0.5 -> 198.18.0.6 icmp EchoRequest"
    );
    let unreach = PacketBuilder::new(MAC_A, MAC_B)
        .ipv4(B, A)
        .icmp_error(ICMP_DEST_UNREACH, 3, &syn()[ETH_HLEN..])
        .build();
    assert_eq!(
        format_packet(&decode_packet(&unreach)),
        "198.18.0.6 -> 198.18.0.5 icmp DestinationUnreachable(code 3)"
    );
}

#[test]
fn truncated_and_odd_packets_say_where_decoding_stopped() {
    let full = syn();
    // The ports made it, the flags did not.
    let p = decode_packet(&full[..ETH_HLEN + 20 + 6]);
    assert_eq!(
        (p.src_port, p.dst_port, p.tcp_flags.clone()),
        (Some(43122), Some(80), None)
    );
    assert_eq!(
        p.error.as_deref(),
        Some("TCP header truncated (6 of 20 bytes captured)")
    );
    assert_eq!(
        format_packet(&p),
        "198.18.0.5:43122 -> 198.18.0.6:80 tcp [TCP header truncated (6 of 20 bytes captured)]"
    );
    let p = decode_packet(&full[..ETH_HLEN + 10]);
    assert_eq!((p.ethertype, p.src_ip), (Some(ETH_P_IP), None));
    assert!(p.error.unwrap().contains("IPv4 header truncated (10 of 20"));
    let p = decode_packet(&full[..6]);
    assert_eq!(p.ethertype, None);
    assert_eq!(
        format_packet(&p),
        "no packet captured [Ethernet header truncated (6 of 14 bytes captured)]"
    );
    // IP options cut off.
    let opts = PacketBuilder::new(MAC_A, MAC_B)
        .ipv4(A, B)
        .ip_options(&[1; 20])
        .tcp(1, 2, SYN)
        .build();
    let p = decode_packet(&opts[..ETH_HLEN + 30]);
    assert_eq!((p.src_ip, p.src_port), (Some(A), None));
    assert!(p.error.unwrap().contains("options truncated"));
    // Not IPv4 inside an IPv4 ethertype.
    let mut v6 = full.clone();
    v6[ETH_HLEN] = 0x65;
    assert_eq!(
        decode_packet(&v6).error.as_deref(),
        Some("IP version 6 in an IPv4 frame")
    );
}

#[test]
fn fragments_arp_and_other_ethertypes() {
    let first = PacketBuilder::new(MAC_A, MAC_B)
        .ipv4(A, B)
        .fragment(0, true)
        .udp(1000, 53)
        .build();
    let p = decode_packet(&first);
    assert!(p.fragment);
    assert_eq!(
        format_packet(&p),
        "198.18.0.5:1000 -> 198.18.0.6:53 udp fragment"
    );
    let later = PacketBuilder::new(MAC_A, MAC_B)
        .ipv4(A, B)
        .fragment(1480, false)
        .l4_raw(IPPROTO_UDP, &[0xab; 32])
        .build();
    let p = decode_packet(&later);
    assert_eq!(
        (p.fragment, p.src_port),
        (true, None),
        "no transport header in a later fragment"
    );
    assert_eq!(format_packet(&p), "198.18.0.5 -> 198.18.0.6 udp fragment");
    let arp = arp_request(MAC_A, A, Ipv4Addr::new(198, 18, 0, 1));
    let p = decode_packet(&arp);
    assert_eq!((p.arp_op, p.src_ip), (Some(1), Some(A)));
    assert_eq!(
        format_packet(&p),
        "arp request who-has 198.18.0.1 tell 198.18.0.5"
    );
    let v6 = PacketBuilder::new(MAC_A, MAC_B)
        .ethertype(ETH_P_IPV6)
        .build();
    assert_eq!(format_packet(&decode_packet(&v6)), "ipv6");
    let odd = PacketBuilder::new(MAC_A, MAC_B).ethertype(0x88b5).build();
    assert_eq!(format_packet(&decode_packet(&odd)), "ethertype 0x88b5");
}

#[test]
fn a_capture_cut_at_128_bytes_still_decodes_the_headers() {
    let big = PacketBuilder::new(MAC_A, MAC_B)
        .ipv4(A, B)
        .tcp(40000, 8080, PSH | ACK)
        .payload(&[0x55; 1400])
        .build();
    let ev = event(EVENT_TRACE, 0, OBS_TO_ENDPOINT, DIR_EGRESS, 12, &big);
    assert_eq!(ev.cap_len, 128);
    let e = dec(&ev);
    assert_eq!(e.orig_len as usize, big.len());
    assert_eq!(e.packet.error, None);
    assert_eq!(
        format_packet(&e.packet),
        "198.18.0.5:40000 -> 198.18.0.6:8080 tcp PSH, ACK"
    );
}
