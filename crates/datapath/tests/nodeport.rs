//! Tier 2, issue 11: NodePort on the uplink through BPF_PROG_TEST_RUN. A
//! connection from the network to the node's address and a NodePort is
//! translated by `from_netdev` to a backend on this node (the client's
//! address kept) and delivered, byte for byte with checksums; the backend's
//! reply leaves the pod as it is and `to_netdev` sends it from the node's
//! address and the NodePort again (not masqueraded). A NodePort without a
//! backend on this node drops with its reason; other traffic to the node
//! is left for the stack.

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

/// NodePort and masquerade on, a NodePort frontend on 0.0.0.0:30080 over
/// `backend`.
fn fixture(backend: Ipv4Addr, proto: u8) -> Fx {
    let mut fx = Fx::with_config(|n| {
        n.nodeport_ip4 = Some(NODE_IP);
        n.masquerade_ip4 = Some(NODE_IP);
    });
    let key = Lb4Key {
        address: Be32::from(Ipv4Addr::UNSPECIFIED),
        dport: Be16::new(NODE_PORT),
        protocol: proto,
        scope: 0,
    };
    let svc = Lb4Service {
        id: FE,
        generation: 1,
        count: 0,
        affinity_timeout: 0,
        svc_type: LB_TYPE_NODE_PORT,
        algorithm: LB_ALG_RANDOM,
        flags: 0,
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
fn a_nodeport_without_a_backend_on_this_node_drops_with_its_reason() {
    let mut fx = fixture(POD2, TCP);
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
