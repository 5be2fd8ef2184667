//! Tier 2, issue 11: NodePort on the uplink through BPF_PROG_TEST_RUN. A
//! connection from the network to the node's address and a NodePort is
//! translated by `from_netdev` to a backend on this node (the client's
//! address kept) and delivered, byte for byte with checksums; the backend's
//! reply leaves the pod as it is and `to_netdev` sends it from the node's
//! address and the NodePort again (not masqueraded). A backend on another
//! node (externalTrafficPolicy: Cluster) is reached from the node's address
//! and a NAT port (DNAT and SNAT), sent back out of the uplink; its reply,
//! to that address and port, goes back to the client from the NodePort,
//! out of the uplink again. With externalTrafficPolicy: Local a NodePort
//! without a backend on this node drops with its reason; other traffic to
//! the node is left for the stack. An externalIP or LoadBalancer address
//! routed to the node is served the same way, its replies coming from that
//! address and port; a ClusterIP is never served from outside.

mod common;
use common::*;
use pilus_abi::{consts::*, Be16, Be32, Lb4Backend, Lb4Key, Lb4Service};
use pilus_datapath::{testrun::TC_ACT_REDIRECT, Program};
use pilus_packet::{tcp_flags::*, Mac, PacketBuilder};
use std::net::Ipv4Addr;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// A client outside the cluster.
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 19, 200, 9);
/// A pod on another node (not local).
const POD2: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);
const NODE_PORT: u16 = 30080;
const BPORT: u16 = 8080;
const FE: u32 = 9;
const UPLINK_MAC: Mac = [0x06, 0, 0, 0, 0, 0x01];
const GW_MAC: Mac = [0x06, 0, 0, 0, 0, 0xfe];
/// An externalIP (or LoadBalancer) address the network routes to the node.
const EXT_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 201, 10);
const EXT_PORT: u16 = 80;

/// NodePort and masquerade on, a NodePort frontend on 0.0.0.0:30080 over
/// `backend` (externalTrafficPolicy: Cluster).
fn fixture(backend: Ipv4Addr, proto: u8) -> Fx {
    fixture_with(backend, proto, 0, true)
}

/// `flags`: the frontend's `LB_F_*`; `masquerade`: on beside NodePort.
fn fixture_with(backend: Ipv4Addr, proto: u8, flags: u8, masquerade: bool) -> Fx {
    let nodeport = (Ipv4Addr::UNSPECIFIED, NODE_PORT, LB_TYPE_NODE_PORT);
    fixture_for(nodeport, backend, proto, flags, masquerade)
}

/// The frontend `(address, port, LB_TYPE_*)` over `backend`.
fn fixture_for(
    (address, port, svc_type): (Ipv4Addr, u16, u8),
    backend: Ipv4Addr,
    proto: u8,
    flags: u8,
    masquerade: bool,
) -> Fx {
    let mut fx = Fx::with_config(|n| {
        n.nodeport_ip4 = Some(NODE_IP);
        n.masquerade_ip4 = masquerade.then_some(NODE_IP);
    });
    let key = Lb4Key {
        address: Be32::from(address),
        dport: Be16::new(port),
        protocol: proto,
        scope: 0,
    };
    let svc = Lb4Service {
        id: FE,
        generation: 1,
        count: 0,
        affinity_timeout: 0,
        svc_type,
        algorithm: LB_ALG_RANDOM,
        flags,
        _pad: [0; 5],
    };
    let be = Lb4Backend {
        address: Be32::from(backend),
        port: Be16::new(BPORT),
        state: LB_BACKEND_ACTIVE,
        _pad: 0,
    };
    fx.dp.put_lb_frontend(&key, svc, &[(1, be)]).unwrap();
    fx
}

fn from_client() -> PacketBuilder {
    PacketBuilder::new(GW_MAC, UPLINK_MAC).ipv4(CLIENT, NODE_IP)
}

/// What B receives: the client's packet to B:8080 (TTL 63).
fn delivered_to_b() -> PacketBuilder {
    PacketBuilder::new(NODE_MAC_B, MAC_B)
        .ipv4(CLIENT, IP_B)
        .ttl(63)
}

#[test]
fn a_nodeport_connection_reaches_the_local_backend_and_its_reply_comes_from_the_node() {
    let mut fx = fixture(IP_B, TCP);
    let up = fx.stray_ifindex;
    let syn = from_client()
        .ip_id(3)
        .tcp(40000, NODE_PORT, SYN)
        .payload(b"GET");
    let out = fx.run(Program::FromNetdev, up, &syn.build());
    fx.expect_pass(&out, TC_ACT_REDIRECT, "SYN to the NodePort: delivered to B");
    let want = delivered_to_b()
        .ip_id(3)
        .tcp(40000, BPORT, SYN)
        .payload(b"GET")
        .build();
    assert_eq!(
        out.packet, want,
        "DNAT to B:8080, the client's address kept"
    );
    checksums_ok(&out.packet, "DNAT");

    // B answers the client; its own program hands the reply to the stack
    // as it is (the node's address is to_netdev's to put back).
    let synack = PacketBuilder::new(MAC_B, NODE_MAC_B)
        .ipv4(IP_B, CLIENT)
        .ip_id(4)
        .tcp(BPORT, 40000, SYN | ACK)
        .build();
    let out = fx.send_b(&synack);
    fx.expect_ok(&out, "SYN-ACK from B: to the stack");
    assert_eq!(out.packet, synack, "unchanged in the pod's program");

    // Routed to the uplink: from the node and the NodePort again, and not
    // masqueraded.
    let routed = PacketBuilder::new(UPLINK_MAC, GW_MAC)
        .ipv4(IP_B, CLIENT)
        .ttl(63)
        .ip_id(4)
        .tcp(BPORT, 40000, SYN | ACK);
    let out = fx.run(Program::ToNetdev, up, &routed.build());
    fx.expect_ok(&out, "SYN-ACK leaving");
    let want = PacketBuilder::new(UPLINK_MAC, GW_MAC)
        .ipv4(NODE_IP, CLIENT)
        .ttl(63)
        .ip_id(4)
        .tcp(NODE_PORT, 40000, SYN | ACK)
        .build();
    assert_eq!(out.packet, want, "reverse DNAT: from NODE_IP:30080");
    checksums_ok(&out.packet, "reverse DNAT");
    assert!(
        fx.dp.nat_entries().unwrap().is_empty(),
        "a NodePort reply is not masqueraded"
    );

    // The client's next segment goes to the same backend.
    let ack = from_client().ip_id(5).tcp(40000, NODE_PORT, ACK).build();
    let out = fx.run(Program::FromNetdev, up, &ack);
    fx.expect_pass(&out, TC_ACT_REDIRECT, "ACK");
    assert_eq!(
        out.packet,
        delivered_to_b().ip_id(5).tcp(40000, BPORT, ACK).build()
    );
}

#[test]
fn udp_to_a_nodeport_is_served_too() {
    let mut fx = fixture(IP_B, UDP);
    let up = fx.stray_ifindex;
    let q = from_client().udp(5353, NODE_PORT).payload(b"q").build();
    let out = fx.run(Program::FromNetdev, up, &q);
    fx.expect_pass(&out, TC_ACT_REDIRECT, "UDP to the NodePort");
    assert_eq!(
        out.packet,
        delivered_to_b().udp(5353, BPORT).payload(b"q").build()
    );
    fx.expect_ok(
        &fx.send_b(
            &PacketBuilder::new(MAC_B, NODE_MAC_B)
                .ipv4(IP_B, CLIENT)
                .udp(BPORT, 5353)
                .build(),
        ),
        "the answer from B",
    );
    let routed = PacketBuilder::new(UPLINK_MAC, GW_MAC)
        .ipv4(IP_B, CLIENT)
        .ttl(63)
        .udp(BPORT, 5353)
        .payload(b"a");
    let out = fx.run(Program::ToNetdev, up, &routed.build());
    fx.expect_ok(&out, "the answer leaving");
    assert_eq!(
        out.packet,
        PacketBuilder::new(UPLINK_MAC, GW_MAC)
            .ipv4(NODE_IP, CLIENT)
            .ttl(63)
            .udp(NODE_PORT, 5353)
            .payload(b"a")
            .build()
    );
    checksums_ok(&out.packet, "UDP reverse DNAT");
}

#[test]
fn with_external_traffic_policy_local_a_nodeport_without_a_backend_here_drops_with_its_reason() {
    let mut fx = fixture_with(POD2, TCP, LB_F_ETP_LOCAL, true);
    let syn = from_client().tcp(40000, NODE_PORT, SYN).build();
    let out = fx.run(Program::FromNetdev, fx.stray_ifindex, &syn);
    fx.expect_drop(&out, DROP_NO_LOCAL_BACKEND, "the only backend is on node 2");
    assert_eq!(fx.dp.metric(DROP_NO_LOCAL_BACKEND, DIR_INGRESS).unwrap(), 1);
}

#[test]
fn other_traffic_to_the_node_is_left_for_the_stack() {
    let mut fx = fixture(IP_B, TCP);
    for (what, pkt) in [
        ("another port", from_client().tcp(40000, 22, SYN).build()),
        (
            "the NodePort over UDP (a TCP NodePort)",
            from_client().udp(40000, NODE_PORT).build(),
        ),
    ] {
        let out = fx.run(Program::FromNetdev, fx.stray_ifindex, &pkt);
        fx.expect_ok(&out, what);
        assert_eq!(out.packet, pkt, "{what}: unchanged");
    }
}

/// The client's packet as another node's backend gets it: from the node's
/// address, to POD2, routed (TTL 63) out of the uplink it came in on (the
/// kernel's neighbour fills in the MACs).
fn forwarded_to_pod2() -> PacketBuilder {
    PacketBuilder::new(GW_MAC, UPLINK_MAC)
        .ipv4(NODE_IP, POD2)
        .ttl(63)
}

/// A client port in the NAT range and free is kept.
const CPORT: u16 = 62000;

/// The client's SYN to frontend `to` (address, port): DNAT to POD2:8080
/// and SNAT to the node's address (CPORT kept), routed back out of the
/// uplink.
fn syn_forwarded_to_pod2(fx: &mut Fx, to: (Ipv4Addr, u16)) {
    let syn = PacketBuilder::new(GW_MAC, UPLINK_MAC)
        .ipv4(CLIENT, to.0)
        .ip_id(7)
        .tcp(CPORT, to.1, SYN)
        .payload(b"GET")
        .build();
    let out = fx.run(Program::FromNetdev, fx.stray_ifindex, &syn);
    fx.expect_pass(&out, TC_ACT_REDIRECT, "SYN: out to POD2's node");
    let want = forwarded_to_pod2()
        .ip_id(7)
        .tcp(CPORT, BPORT, SYN)
        .payload(b"GET")
        .build();
    assert_eq!(
        out.packet, want,
        "DNAT to POD2:8080 and SNAT to the node's address, TTL decremented"
    );
    checksums_ok(&out.packet, "DNAT + SNAT");
}

/// POD2's SYN-ACK to the node comes in on the uplink and leaves again to
/// the client, from frontend `from` (address, port).
fn synack_back_from(fx: &mut Fx, from: (Ipv4Addr, u16)) {
    let synack = PacketBuilder::new(GW_MAC, UPLINK_MAC)
        .ipv4(POD2, NODE_IP)
        .ttl(63)
        .ip_id(8)
        .tcp(BPORT, CPORT, SYN | ACK)
        .build();
    let out = fx.run(Program::FromNetdev, fx.stray_ifindex, &synack);
    fx.expect_pass(&out, TC_ACT_REDIRECT, "SYN-ACK: back out to the client");
    let want = PacketBuilder::new(GW_MAC, UPLINK_MAC)
        .ipv4(from.0, CLIENT)
        .ttl(62)
        .ip_id(8)
        .tcp(from.1, CPORT, SYN | ACK)
        .build();
    assert_eq!(
        out.packet, want,
        "reverse SNAT to the client, reverse DNAT from the frontend"
    );
    checksums_ok(&out.packet, "reverse SNAT + DNAT");
}

#[test]
fn a_nodeport_connection_to_another_nodes_backend_leaves_from_the_node_and_its_reply_returns_from_the_nodeport(
) {
    // NodePort alone (no masquerade): its SNAT needs the node's address all
    // the same.
    let mut fx = fixture_with(POD2, TCP, 0, false);
    let up = fx.stray_ifindex;
    syn_forwarded_to_pod2(&mut fx, (NODE_IP, NODE_PORT));

    // Conntrack: the service entry pins POD2; the flow's entry, keyed by the
    // client's translated tuple, names the frontend for the replies.
    let ct = fx.dp.conntrack().unwrap();
    let (_, se) = ct
        .iter()
        .find(|(k, _)| k.scope == CT_SCOPE_SERVICE)
        .expect("a service entry");
    assert_eq!(
        (se.backend_addr.get(), se.backend_port.get()),
        (u32::from(POD2), BPORT)
    );
    let (fk, fe) = ct
        .iter()
        .find(|(k, _)| k.scope == CT_SCOPE_FLOW)
        .expect("the flow's entry");
    assert_eq!(
        (fk.saddr.get(), fk.daddr.get(), fk.dport.get()),
        (u32::from(CLIENT), u32::from(POD2), BPORT)
    );
    assert_eq!(fe.rev_nat_index, FE);
    // NAT: two entries, the way out and the way back.
    let nat = fx.dp.nat_entries().unwrap();
    assert_eq!(nat.len(), 2, "{nat:?}");
    let (_, back) = nat
        .iter()
        .find(|(k, _)| k.direction == NAT_DIR_INGRESS)
        .unwrap();
    assert_eq!(
        (back.to_addr.get(), back.to_port.get()),
        (u32::from(CLIENT), CPORT),
        "the reply's entry names the client"
    );

    // POD2 answers the node; the reply comes in on the uplink and leaves
    // again, from the node's address and the NodePort, to the client.
    synack_back_from(&mut fx, (NODE_IP, NODE_PORT));

    // The client's next segment takes the same backend and mapping.
    let ack = from_client().ip_id(9).tcp(CPORT, NODE_PORT, ACK).build();
    let out = fx.run(Program::FromNetdev, up, &ack);
    fx.expect_pass(&out, TC_ACT_REDIRECT, "ACK");
    assert_eq!(
        out.packet,
        forwarded_to_pod2().ip_id(9).tcp(CPORT, BPORT, ACK).build()
    );
    assert_eq!(fx.dp.nat_entries().unwrap().len(), 2, "no second mapping");
    assert!(fx.drops().is_empty(), "nothing dropped");
}

#[test]
fn udp_to_another_nodes_backend_gets_a_nat_port_when_the_clients_is_out_of_range() {
    let mut fx = fixture_with(POD2, UDP, 0, true);
    let up = fx.stray_ifindex;
    let q = from_client().udp(5353, NODE_PORT).payload(b"q").build();
    let out = fx.run(Program::FromNetdev, up, &q);
    fx.expect_pass(&out, TC_ACT_REDIRECT, "UDP to the NodePort");
    let nat = fx.dp.nat_entries().unwrap();
    let (out_key, out_map) = nat
        .iter()
        .find(|(k, _)| k.direction == NAT_DIR_EGRESS)
        .expect("the way out");
    assert_eq!(
        (out_key.saddr.get(), out_key.daddr.get()),
        (u32::from(CLIENT), u32::from(POD2))
    );
    let port = out_map.to_port.get();
    assert!(
        (61000..=65535).contains(&port),
        "a port of the NAT range, not {port}"
    );
    assert_eq!(
        out.packet,
        forwarded_to_pod2().udp(port, BPORT).payload(b"q").build()
    );
    checksums_ok(&out.packet, "UDP DNAT + SNAT");
    let answer = PacketBuilder::new(GW_MAC, UPLINK_MAC)
        .ipv4(POD2, NODE_IP)
        .ttl(63)
        .udp(BPORT, port)
        .payload(b"a")
        .build();
    let out = fx.run(Program::FromNetdev, up, &answer);
    fx.expect_pass(&out, TC_ACT_REDIRECT, "the answer, back to the client");
    assert_eq!(
        out.packet,
        PacketBuilder::new(GW_MAC, UPLINK_MAC)
            .ipv4(NODE_IP, CLIENT)
            .ttl(62)
            .udp(NODE_PORT, 5353)
            .payload(b"a")
            .build()
    );
    checksums_ok(&out.packet, "UDP reverse SNAT + DNAT");
}

/// The client's packet to the externalIP (or LoadBalancer) address.
fn to_external() -> PacketBuilder {
    PacketBuilder::new(GW_MAC, UPLINK_MAC).ipv4(CLIENT, EXT_IP)
}

#[test]
fn an_external_ip_or_load_balancer_address_reaches_the_local_backend_and_answers_from_itself() {
    for (what, svc_type) in [
        ("ExternalIP", LB_TYPE_EXTERNAL_IP),
        ("LoadBalancer", LB_TYPE_LOAD_BALANCER),
    ] {
        let mut fx = fixture_for((EXT_IP, EXT_PORT, svc_type), IP_B, TCP, 0, true);
        let up = fx.stray_ifindex;
        let syn = to_external().ip_id(3).tcp(40000, EXT_PORT, SYN).build();
        let out = fx.run(Program::FromNetdev, up, &syn);
        fx.expect_pass(
            &out,
            TC_ACT_REDIRECT,
            &format!("{what}: SYN delivered to B"),
        );
        assert_eq!(
            out.packet,
            delivered_to_b().ip_id(3).tcp(40000, BPORT, SYN).build(),
            "{what}: DNAT to B:8080, the client's address kept"
        );
        checksums_ok(&out.packet, "DNAT");

        // B's answer leaves its own program from the frontend's address
        // (the pod's reverse NAT, as for a pod client), and the uplink
        // leaves it as it is: not masqueraded, not taken for a NodePort's.
        let synack = |src: Ipv4Addr, sport: u16| {
            PacketBuilder::new(MAC_B, NODE_MAC_B)
                .ipv4(src, CLIENT)
                .ip_id(4)
                .tcp(sport, 40000, SYN | ACK)
        };
        let out = fx.send_b(&synack(IP_B, BPORT).build());
        fx.expect_ok(&out, &format!("{what}: SYN-ACK from B"));
        assert_eq!(
            out.packet,
            synack(EXT_IP, EXT_PORT).build(),
            "{what}: reverse NAT in B's program"
        );
        checksums_ok(&out.packet, "reverse NAT");
        let routed = PacketBuilder::new(UPLINK_MAC, GW_MAC)
            .ipv4(EXT_IP, CLIENT)
            .ttl(63)
            .ip_id(4)
            .tcp(EXT_PORT, 40000, SYN | ACK)
            .build();
        let out = fx.run(Program::ToNetdev, up, &routed);
        fx.expect_ok(&out, &format!("{what}: SYN-ACK leaving"));
        assert_eq!(out.packet, routed, "{what}: unchanged on the uplink");
        assert!(fx.dp.nat_entries().unwrap().is_empty(), "{what}: no NAT");
        assert!(fx.drops().is_empty(), "{what}: nothing dropped");
    }
}

#[test]
fn an_external_ip_served_by_another_nodes_backend_answers_from_the_external_ip() {
    let fe = (EXT_IP, EXT_PORT, LB_TYPE_EXTERNAL_IP);
    let mut fx = fixture_for(fe, POD2, TCP, 0, false);
    syn_forwarded_to_pod2(&mut fx, (EXT_IP, EXT_PORT));
    synack_back_from(&mut fx, (EXT_IP, EXT_PORT));
    assert!(fx.drops().is_empty(), "nothing dropped");
}

#[test]
fn with_external_traffic_policy_local_an_external_ip_without_a_backend_here_drops() {
    let fe = (EXT_IP, EXT_PORT, LB_TYPE_EXTERNAL_IP);
    let mut fx = fixture_for(fe, POD2, TCP, LB_F_ETP_LOCAL, true);
    let syn = to_external().tcp(40000, EXT_PORT, SYN).build();
    let out = fx.run(Program::FromNetdev, fx.stray_ifindex, &syn);
    fx.expect_drop(&out, DROP_NO_LOCAL_BACKEND, "the only backend is on node 2");
}

#[test]
fn a_cluster_ip_is_never_served_from_outside() {
    let fe = (EXT_IP, EXT_PORT, LB_TYPE_CLUSTER_IP);
    let mut fx = fixture_for(fe, IP_B, TCP, 0, true);
    let syn = to_external().tcp(40000, EXT_PORT, SYN).build();
    let out = fx.run(Program::FromNetdev, fx.stray_ifindex, &syn);
    fx.expect_ok(&out, "to the stack, which has no route for it");
    assert_eq!(out.packet, syn, "untranslated");
    assert!(fx.dp.conntrack().unwrap().is_empty(), "not tracked");
}
