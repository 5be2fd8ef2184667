//! Tier 2, issue 11: masquerade through BPF_PROG_TEST_RUN. A pod's packet
//! to the outside leaves `to_netdev` from the node's address and an
//! allocated port, byte for byte against frames the packet builder computes
//! from scratch (IPv4 and L4 checksums included), for TCP, UDP and ICMP
//! echo; the reply is translated back on `from_netdev` and delivered to the
//! pod, and so is an ICMP error about a masqueraded datagram, quoting it as
//! the pod sent it. A port another flow holds is not reused; no free port is a counted
//! drop with its own reason; pod to pod, pod to node, the node's own
//! traffic and a node without masquerade are left alone.

mod common;
use common::*;
use pilus_abi::{consts::*, Be16, Be32, NatEntry4, NatKey4};
use pilus_datapath::{testrun::TC_ACT_REDIRECT, NatPorts, Program};
use pilus_packet::{tcp_flags::*, Mac, PacketBuilder};
use std::net::Ipv4Addr;

/// The node's address on its uplink: what the outside sees.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// Outside the cluster: no ipcache entry of its own (inside IP_REMOTE's
/// /16, a CIDR identity: the world as far as the cluster goes).
const OUT: Ipv4Addr = Ipv4Addr::new(198, 19, 200, 7);
/// Another node, and a pod on it (their ipcache entries are written below).
const NODE2_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const POD2: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);
const UPLINK_MAC: Mac = [0x06, 0, 0, 0, 0, 0x01];
const GW_MAC: Mac = [0x06, 0, 0, 0, 0, 0xfe];

fn fixture(ports: Option<NatPorts>) -> Fx {
    let mut fx = Fx::with_config(|n| {
        n.masquerade_ip4 = Some(NODE_IP);
        if let Some(p) = ports {
            n.nat_ports = p;
        }
    });
    for (ip, id) in [(NODE2_IP, IDENTITY_REMOTE_NODE), (POD2, 500)] {
        let v = pilus_abi::IpcacheValue {
            sec_identity: id,
            ..Default::default()
        };
        fx.dp.upsert_ipcache(ip, 32, &v).unwrap();
    }
    fx
}

/// What the node's stack puts on the uplink for pod A: routed (TTL 63),
/// from the uplink's MAC to the next hop's.
fn a_leaving(dst: Ipv4Addr) -> PacketBuilder {
    PacketBuilder::new(UPLINK_MAC, GW_MAC)
        .ipv4(IP_A, dst)
        .ttl(63)
}

/// As the outside sees it: from the node.
fn node_leaving(dst: Ipv4Addr) -> PacketBuilder {
    PacketBuilder::new(UPLINK_MAC, GW_MAC)
        .ipv4(NODE_IP, dst)
        .ttl(63)
}

/// The outside's reply as it arrives on the uplink.
fn reply_to_node() -> PacketBuilder {
    PacketBuilder::new(GW_MAC, UPLINK_MAC).ipv4(OUT, NODE_IP)
}

/// What A receives: delivered by from_netdev (TTL 63, the gateway's MAC).
fn delivered_to_a() -> PacketBuilder {
    PacketBuilder::new(NODE_MAC_A, MAC_A)
        .ipv4(OUT, IP_A)
        .ttl(63)
}

fn to_netdev(fx: &Fx, pkt: &[u8]) -> pilus_datapath::testrun::Outcome {
    fx.run(Program::ToNetdev, fx.stray_ifindex, pkt)
}

fn from_netdev(fx: &Fx, pkt: &[u8]) -> pilus_datapath::testrun::Outcome {
    fx.run(Program::FromNetdev, fx.stray_ifindex, pkt)
}

/// The flow's egress entry (pod's tuple) and its partner, which must be
/// there: (allocated port, egress entry, ingress entry).
fn mapping(fx: &Fx, proto: u8, sport: u16) -> (u16, NatEntry4, NatEntry4) {
    let all = fx.dp.nat_entries().unwrap();
    let (k, e) = all
        .iter()
        .find(|(k, _)| {
            k.direction == NAT_DIR_EGRESS
                && k.protocol == proto
                && k.saddr == Be32::from(IP_A)
                && k.sport == Be16::new(sport)
        })
        .unwrap_or_else(|| panic!("no egress entry for {proto}/{sport}: {all:?}"));
    assert_eq!(e.to_addr, Be32::from(NODE_IP));
    let partner = k.partner(e);
    let (_, r) = all
        .iter()
        .find(|(k, _)| *k == partner)
        .unwrap_or_else(|| panic!("no ingress entry {partner:?}: {all:?}"));
    assert_eq!(
        (r.to_addr, r.to_port),
        (Be32::from(IP_A), Be16::new(sport)),
        "the reply's entry names the pod"
    );
    (e.to_port.get(), *e, *r)
}

fn in_default_range(port: u16) -> bool {
    let r = NatPorts::default();
    (r.min()..=r.max()).contains(&port)
}

#[test]
fn tcp_to_the_outside_leaves_from_the_node_and_the_reply_reaches_the_pod() {
    let mut fx = fixture(None);
    // The pod's program tracks the flow and hands it to the stack.
    let from_pod = PacketBuilder::new(MAC_A, NODE_MAC_A)
        .ipv4(IP_A, OUT)
        .tcp(40000, 80, SYN)
        .build();
    let out = fx.send_a(&from_pod);
    fx.expect_ok(&out, "SYN to the outside: to the stack");

    let syn = a_leaving(OUT).ip_id(5).tcp(40000, 80, SYN).payload(b"x");
    let out = to_netdev(&fx, &syn.build());
    fx.expect_ok(&out, "SYN leaving the uplink");
    // 40000 is the node's own ephemeral range, not the NAT range: a port
    // of the range is allocated instead.
    let (port, egress, ingress) = mapping(&fx, TCP, 40000);
    assert!(in_default_range(port), "allocated {port}");
    let want = node_leaving(OUT)
        .ip_id(5)
        .tcp(port, 80, SYN)
        .payload(b"x")
        .build();
    assert_eq!(out.packet, want, "SNAT: from the node's address and {port}");
    checksums_ok(&out.packet, "SNAT");
    let now = fx.dp.ct_now().unwrap();
    assert!(egress.expires > now && ingress.expires > now);
    assert_eq!(egress.packets, 1);

    // The reply to the node's address and port reaches the pod.
    let synack = reply_to_node()
        .ip_id(6)
        .tcp(80, port, SYN | ACK)
        .payload(b"hi")
        .build();
    let out = from_netdev(&fx, &synack);
    fx.expect_pass(&out, TC_ACT_REDIRECT, "SYN-ACK: delivered to A");
    let want = delivered_to_a()
        .ip_id(6)
        .tcp(80, 40000, SYN | ACK)
        .payload(b"hi")
        .build();
    assert_eq!(out.packet, want, "reverse SNAT: to A:40000");
    checksums_ok(&out.packet, "reverse SNAT");

    // The flow keeps its mapping; no second one.
    let ack = a_leaving(OUT).ip_id(7).tcp(40000, 80, ACK).build();
    let out = to_netdev(&fx, &ack);
    fx.expect_ok(&out, "ACK");
    assert_eq!(
        out.packet,
        node_leaving(OUT).ip_id(7).tcp(port, 80, ACK).build()
    );
    assert_eq!(fx.dp.nat_entries().unwrap().len(), 2, "one pair");
    let (_, egress, ingress) = mapping(&fx, TCP, 40000);
    assert_eq!((egress.packets, ingress.packets), (2, 1));
    assert_eq!(egress.flags & NAT_F_SEEN_NON_SYN, NAT_F_SEEN_NON_SYN);
}

#[test]
fn udp_keeps_the_pods_port_when_it_is_free_and_in_the_range() {
    let mut fx = fixture(None);
    let dgram = a_leaving(OUT).udp(61234, 53).payload(b"query").build();
    let out = to_netdev(&fx, &dgram);
    fx.expect_ok(&out, "UDP leaving");
    let (port, _, _) = mapping(&fx, UDP, 61234);
    assert_eq!(port, 61234, "the pod's own port was free");
    assert_eq!(
        out.packet,
        node_leaving(OUT).udp(61234, 53).payload(b"query").build()
    );
    checksums_ok(&out.packet, "UDP SNAT");

    let answer = reply_to_node().udp(53, 61234).payload(b"answer").build();
    let out = from_netdev(&fx, &answer);
    fx.expect_pass(&out, TC_ACT_REDIRECT, "UDP answer: delivered to A");
    assert_eq!(
        out.packet,
        delivered_to_a().udp(53, 61234).payload(b"answer").build()
    );
    checksums_ok(&out.packet, "UDP reverse SNAT");
}

#[test]
fn an_icmp_echo_is_masqueraded_with_its_identifier_as_the_port() {
    let mut fx = fixture(None);
    let echo = a_leaving(OUT).icmp_echo(true, 0x1234, 1).payload(b"ping");
    let out = to_netdev(&fx, &echo.build());
    fx.expect_ok(&out, "echo request leaving");
    let (id, _, _) = mapping(&fx, ICMP, 0x1234);
    assert!(in_default_range(id), "identifier {id}");
    assert_eq!(
        out.packet,
        node_leaving(OUT)
            .icmp_echo(true, id, 1)
            .payload(b"ping")
            .build(),
        "SNAT: the node's address, identifier {id}"
    );
    checksums_ok(&out.packet, "ICMP SNAT");

    let reply = reply_to_node()
        .icmp_echo(false, id, 1)
        .payload(b"ping")
        .build();
    let out = from_netdev(&fx, &reply);
    fx.expect_pass(&out, TC_ACT_REDIRECT, "echo reply: delivered to A");
    assert_eq!(
        out.packet,
        delivered_to_a()
            .icmp_echo(false, 0x1234, 1)
            .payload(b"ping")
            .build(),
        "reverse SNAT: A's identifier again"
    );
    checksums_ok(&out.packet, "ICMP reverse SNAT");
}

/// The reply tuple `OUT:80 -> NODE_IP:port` held by another flow (another
/// pod's, here B's).
fn taken(port: u16) -> (NatKey4, NatEntry4) {
    (
        NatKey4 {
            saddr: Be32::from(OUT),
            daddr: Be32::from(NODE_IP),
            sport: Be16::new(80),
            dport: Be16::new(port),
            protocol: TCP,
            direction: NAT_DIR_INGRESS,
            _pad: [0; 2],
        },
        NatEntry4 {
            to_addr: Be32::from(IP_B),
            to_port: Be16::new(port),
            expires: u32::MAX,
            ..Default::default()
        },
    )
}

#[test]
fn a_port_another_flow_holds_is_not_reused() {
    let mut fx = fixture(Some(NatPorts::new(61000, 61003).unwrap()));
    fx.dp.put_nat(&[taken(61001)]).unwrap();
    let syn = a_leaving(OUT).tcp(61001, 80, SYN).build();
    let out = to_netdev(&fx, &syn);
    fx.expect_ok(&out, "SYN whose own port is taken");
    let (port, _, _) = mapping(&fx, TCP, 61001);
    assert!(
        port != 61001 && (61000..=61003).contains(&port),
        "another port of the range: {port}"
    );
    assert_eq!(out.packet, node_leaving(OUT).tcp(port, 80, SYN).build());
    checksums_ok(&out.packet, "SNAT to another port");
    // B's mapping is untouched: its reply still goes to B.
    let held = fx
        .dp
        .nat_entries()
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == taken(61001).0)
        .unwrap();
    assert_eq!(held.1.to_addr, Be32::from(IP_B));

    // The same port from A to another peer port is a different reply
    // tuple: free.
    let other = a_leaving(OUT).tcp(61001, 443, SYN).build();
    fx.expect_ok(&to_netdev(&fx, &other), "SYN to port 443");
    let all = fx.dp.nat_entries().unwrap();
    let (k, e) = all
        .iter()
        .find(|(k, _)| k.direction == NAT_DIR_EGRESS && k.dport == Be16::new(443))
        .unwrap();
    assert_eq!(k.sport.get(), 61001);
    assert_eq!(
        e.to_port.get(),
        61001,
        "kept: nobody holds OUT:443 -> 61001"
    );
}

#[test]
fn no_free_port_is_a_counted_drop_with_its_reason() {
    let mut fx = fixture(Some(NatPorts::new(61000, 61000).unwrap()));
    fx.dp.put_nat(&[taken(61000)]).unwrap();
    let syn = a_leaving(OUT).tcp(40000, 80, SYN).build();
    let out = to_netdev(&fx, &syn);
    fx.expect_drop(&out, DROP_NAT_NO_PORT, "the only port is taken");
    assert_eq!(fx.dp.metric(DROP_NAT_NO_PORT, DIR_EGRESS).unwrap(), 1);
    assert_eq!(
        fx.dp.nat_entries().unwrap().len(),
        1,
        "nothing written but what was there"
    );
    // Another peer port is another reply tuple: that flow gets the port.
    let other = a_leaving(OUT).tcp(40000, 443, SYN).build();
    let out = to_netdev(&fx, &other);
    fx.expect_ok(&out, "to port 443");
    assert_eq!(out.packet, node_leaving(OUT).tcp(61000, 443, SYN).build());
}

#[test]
fn pod_to_pod_pod_to_node_and_the_nodes_own_traffic_keep_their_addresses() {
    let mut fx = fixture(None);
    for (what, pkt) in [
        (
            "pod to a pod on another node",
            a_leaving(POD2).tcp(40000, 80, SYN).build(),
        ),
        (
            "pod to another node",
            a_leaving(NODE2_IP).tcp(40000, 80, SYN).build(),
        ),
        (
            "the node's own connection",
            node_leaving(OUT).tcp(40000, 80, SYN).build(),
        ),
        (
            "a pod's ICMP error to the outside",
            a_leaving(OUT)
                .icmp_error(
                    3,
                    3,
                    &PacketBuilder::new(GW_MAC, UPLINK_MAC)
                        .ipv4(OUT, IP_A)
                        .udp(53, 5353)
                        .build_ip(),
                )
                .build(),
        ),
    ] {
        let out = to_netdev(&fx, &pkt);
        fx.expect_ok(&out, what);
        assert_eq!(out.packet, pkt, "{what}: unchanged");
    }
    assert!(fx.dp.nat_entries().unwrap().is_empty());
    // A packet to the node's address that is no reply of a masqueraded
    // flow is the node's own: left for the stack.
    let to_node = reply_to_node().tcp(80, 61500, SYN | ACK).build();
    let out = from_netdev(&fx, &to_node);
    fx.expect_ok(&out, "to the node itself");
    assert_eq!(out.packet, to_node);
}

#[test]
fn without_masquerade_a_pods_packet_leaves_as_it_is() {
    let mut fx = Fx::new();
    let syn = a_leaving(OUT).tcp(40000, 80, SYN).build();
    let out = to_netdev(&fx, &syn);
    fx.expect_ok(&out, "SYN, masquerade off");
    assert_eq!(out.packet, syn);
    assert!(fx.dp.nat_entries().unwrap().is_empty());
}

#[test]
fn the_gc_removes_a_lapsed_mapping_pair_and_keeps_a_live_one() {
    let mut fx = fixture(None);
    let syn = a_leaving(OUT).tcp(40000, 80, SYN).build();
    fx.expect_ok(&to_netdev(&fx, &syn), "a live flow");
    // A pair that lapsed: both directions expired.
    let (k, mut v) = taken(61999);
    v.expires = 1;
    let egress = k.partner(&v);
    let ev = NatEntry4 {
        to_addr: Be32::from(NODE_IP),
        to_port: Be16::new(61999),
        expires: 1,
        ..Default::default()
    };
    fx.dp.put_nat(&[(k, v), (egress, ev)]).unwrap();
    assert_eq!(fx.dp.nat_entries().unwrap().len(), 4);
    let mut gc = fx.dp.conntrack_table().unwrap();
    let pass = gc.gc().unwrap();
    assert_eq!((pass.nat_scanned, pass.nat_deleted), (4, 2));
    let left = fx.dp.nat_entries().unwrap();
    assert_eq!(left.len(), 2);
    assert!(left
        .iter()
        .all(|(k, _)| k.dport != Be16::new(61999) && k.sport != Be16::new(61999)));
}

#[test]
fn an_icmp_error_about_a_masqueraded_datagram_reaches_the_pod_quoting_it_as_the_pod_sent_it() {
    let mut fx = fixture(None);
    let from_pod = PacketBuilder::new(MAC_A, NODE_MAC_A)
        .ipv4(IP_A, OUT)
        .udp(40000, 53)
        .payload(b"query")
        .build();
    fx.expect_ok(&fx.send_a(&from_pod), "UDP to the outside: to the stack");
    let out = to_netdev(
        &fx,
        &a_leaving(OUT).udp(40000, 53).payload(b"query").build(),
    );
    fx.expect_ok(&out, "UDP leaving");
    let (port, _, _) = mapping(&fx, UDP, 40000);
    // What the outside got, quoted back in its port unreachable.
    let quoted = node_leaving(OUT).udp(port, 53).payload(b"query").build_ip();
    let unreachable = reply_to_node().icmp_error(3, 3, &quoted).build();
    let out = from_netdev(&fx, &unreachable);
    fx.expect_pass(&out, TC_ACT_REDIRECT, "port unreachable: delivered to A");
    let as_sent = a_leaving(OUT).udp(40000, 53).payload(b"query").build_ip();
    let want = delivered_to_a().icmp_error(3, 3, &as_sent).build();
    assert_eq!(
        out.packet, want,
        "to A, quoting A's datagram from A:40000, every checksum updated"
    );
    checksums_ok(&out.packet, "ICMP error after reverse SNAT");
    // An error about no flow of ours (the node's own datagram) is left
    // for the stack.
    let own = node_leaving(OUT).udp(61777, 53).build_ip();
    let err = reply_to_node().icmp_error(3, 3, &own).build();
    let out = from_netdev(&fx, &err);
    fx.expect_ok(&out, "about the node's own datagram");
    assert_eq!(out.packet, err);
}

#[test]
fn every_fragment_of_a_masqueraded_datagram_is_translated_both_ways() {
    let mut fx = fixture(None);
    let first = a_leaving(OUT)
        .ip_id(77)
        .fragment(0, true)
        .udp(40000, 53)
        .payload(&[1; 16]);
    let out = to_netdev(&fx, &first.build());
    fx.expect_ok(&out, "first fragment leaving");
    let (port, _, _) = mapping(&fx, UDP, 40000);
    assert_eq!(
        out.packet,
        node_leaving(OUT)
            .ip_id(77)
            .fragment(0, true)
            .udp(port, 53)
            .payload(&[1; 16])
            .build(),
        "first fragment: address and port"
    );
    let later = a_leaving(OUT)
        .ip_id(77)
        .fragment(24, false)
        .l4_raw(UDP, &[])
        .payload(&[2; 8]);
    let out = to_netdev(&fx, &later.build());
    fx.expect_ok(&out, "later fragment leaving");
    assert_eq!(
        out.packet,
        node_leaving(OUT)
            .ip_id(77)
            .fragment(24, false)
            .l4_raw(UDP, &[])
            .payload(&[2; 8])
            .build(),
        "later fragment: the address (it has no ports)"
    );

    // The answer, fragmented too.
    let first = reply_to_node()
        .ip_id(78)
        .fragment(0, true)
        .udp(53, port)
        .payload(&[3; 16]);
    let out = from_netdev(&fx, &first.build());
    fx.expect_pass(&out, TC_ACT_REDIRECT, "first fragment of the answer");
    assert_eq!(
        out.packet,
        delivered_to_a()
            .ip_id(78)
            .fragment(0, true)
            .udp(53, 40000)
            .payload(&[3; 16])
            .build()
    );
    let later = reply_to_node()
        .ip_id(78)
        .fragment(24, false)
        .l4_raw(UDP, &[])
        .payload(&[4; 8]);
    let out = from_netdev(&fx, &later.build());
    fx.expect_pass(&out, TC_ACT_REDIRECT, "later fragment of the answer");
    assert_eq!(
        out.packet,
        delivered_to_a()
            .ip_id(78)
            .fragment(24, false)
            .l4_raw(UDP, &[])
            .payload(&[4; 8])
            .build()
    );
}

#[test]
fn a_full_nat_table_refuses_a_new_flow_with_its_reason_and_keeps_the_others() {
    // Room for one flow's pair.
    let mut fx = Fx::with_config(|n| {
        n.masquerade_ip4 = Some(NODE_IP);
        n.nat_max_entries = 2;
    });
    let first = a_leaving(OUT).tcp(40000, 80, SYN).build();
    fx.expect_ok(&to_netdev(&fx, &first), "the first flow");
    let second = a_leaving(OUT).tcp(40001, 80, SYN).build();
    let out = to_netdev(&fx, &second);
    fx.expect_drop(&out, DROP_NAT_CREATE_FAILED, "no room for a second pair");
    assert_eq!(fx.dp.metric(DROP_NAT_CREATE_FAILED, DIR_EGRESS).unwrap(), 1);
    // The first flow goes on.
    let (port, _, _) = mapping(&fx, TCP, 40000);
    let ack = a_leaving(OUT).tcp(40000, 80, ACK).build();
    let out = to_netdev(&fx, &ack);
    fx.expect_ok(&out, "the first flow's next segment");
    assert_eq!(out.packet, node_leaving(OUT).tcp(port, 80, ACK).build());
}
