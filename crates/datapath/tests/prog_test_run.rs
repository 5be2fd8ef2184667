//! Tier 2: the pod programs through BPF_PROG_TEST_RUN. Each case gives the
//! input packet, the expected verdict, and where it matters the expected
//! output packet, drop event and map changes.

mod common;
use common::*;
use pilus_abi::consts::*;
use pilus_datapath::{testrun::TC_ACT_SHOT, Program};
use pilus_packet::{arp_reply, arp_request, parse, tcp_flags::*, PacketBuilder, BROADCAST_MAC};

// ---------------------------------------------------------------- ARP

#[test]
fn arp_request_for_gateway_is_answered_by_the_datapath() {
    let mut fx = Fx::new();
    let req = arp_request(MAC_A, IP_A, ROUTER);
    let out = fx.send_a(&req);
    // bpf_redirect back out of the same veth: the pod receives the reply.
    fx.expect_redirect(&out, "ARP for the gateway");
    let want = arp_reply(NODE_MAC_A, MAC_A, ROUTER, IP_A);
    assert_eq!(out.packet[..want.len()], want[..], "forged ARP reply");
    let p = parse(&out.packet).unwrap().arp.unwrap();
    assert_eq!(
        (p.op, p.sha, p.spa, p.tha, p.tpa),
        (2, NODE_MAC_A, ROUTER, MAC_A, IP_A)
    );
}

#[test]
fn arp_for_other_addresses_and_gratuitous_arp_go_to_the_stack() {
    let mut fx = Fx::new();
    let other = arp_request(MAC_A, IP_A, IP_B);
    let out = fx.send_a(&other);
    fx.expect_ok(&out, "ARP for a non-gateway address");
    assert_eq!(out.packet, other, "left unchanged");
    let gratuitous = arp_request(MAC_A, ROUTER, ROUTER);
    let out = fx.send_a(&gratuitous);
    fx.expect_ok(&out, "gratuitous ARP");
}

#[test]
fn malformed_arp_is_dropped() {
    let mut fx = Fx::new();
    let mut bad = arp_request(MAC_A, IP_A, ROUTER);
    bad[14 + 4] = 16; // hln: not Ethernet
    let out = fx.send_a(&bad);
    fx.expect_drop(&out, DROP_INVALID_ARP, "ARP with hln 16");
    let out = fx.run(
        Program::FromContainer,
        fx.stray_ifindex,
        &arp_request(MAC_A, IP_A, ROUTER),
    );
    fx.expect_drop(
        &out,
        DROP_NO_ENDPOINT,
        "ARP on an interface with no endpoint",
    );
}

// ---------------------------------------------------------------- policy levels

/// The four precedence levels, as entries on B's ingress for peer A.
#[derive(Clone, Copy, Debug)]
enum Level {
    L3L4,
    L4Only,
    L3Only,
    AllowAll,
}
const LEVELS: [Level; 4] = [Level::L3L4, Level::L4Only, Level::L3Only, Level::AllowAll];

fn put(fx: &mut Fx, level: Level, deny: bool) {
    let (id, proto, ports) = match level {
        Level::L3L4 => (ID_A, Some(TCP), Some((80, 80))),
        Level::L4Only => (0, Some(TCP), Some((80, 80))),
        Level::L3Only => (ID_A, None, None),
        Level::AllowAll => (0, None, None),
    };
    fx.dp
        .insert_policy(&entry(EP_B, INGRESS, id, proto, ports, deny))
        .unwrap();
}

#[test]
fn each_policy_level_allows_on_its_own() {
    for level in LEVELS {
        let mut fx = Fx::new();
        fx.enforce('b', true, false);
        put(&mut fx, level, false);
        let out = fx.send_a(&a_to_b().tcp(40000, 80, SYN).build());
        fx.expect_redirect(&out, &format!("{level:?} allows A->B:80"));
        // What each level does not cover stays denied.
        let other_port = fx.send_a(&a_to_b().tcp(40001, 81, SYN).build());
        match level {
            Level::L3L4 | Level::L4Only => {
                fx.expect_drop(&other_port, DROP_POLICY, &format!("{level:?}, port 81"))
            }
            Level::L3Only | Level::AllowAll => {
                fx.expect_redirect(&other_port, &format!("{level:?}, port 81"))
            }
        }
    }
}

#[test]
fn l3_levels_only_cover_their_identity() {
    let mut fx = Fx::new();
    fx.enforce('a', true, false);
    // A admits B only; a remote identity from the stack is refused.
    fx.allow(EP_A, INGRESS, ID_B, None, None);
    let out = fx.send_b(&b_to_a().udp(5000, 53).build());
    fx.expect_redirect(&out, "B->A allowed by L3");
    let remote = PacketBuilder::new(MAC_B, MAC_A)
        .ipv4(IP_REMOTE, IP_A)
        .udp(5000, 53)
        .build();
    let out = fx.run(Program::ToContainer, fx.a.ifindex, &remote);
    fx.expect_drop(&out, DROP_POLICY, "remote identity to A");
}

#[test]
fn deny_beats_allow_at_every_level_combination() {
    for deny_level in LEVELS {
        for allow_level in LEVELS {
            let mut fx = Fx::new();
            fx.enforce('b', true, false);
            put(&mut fx, allow_level, false);
            // Writing the deny after the allow replaces an identical key; the
            // combinations with identical keys test deny over allow directly.
            put(&mut fx, deny_level, true);
            let out = fx.send_a(&a_to_b().tcp(40000, 80, SYN).build());
            fx.expect_drop(
                &out,
                DROP_POLICY_DENY,
                &format!("deny at {deny_level:?} with allow at {allow_level:?}"),
            );
        }
    }
}

#[test]
fn selected_endpoint_without_entries_denies_by_default() {
    let mut fx = Fx::new();
    fx.enforce('b', true, false);
    // An entry for somebody else does not admit A.
    fx.allow(EP_B, INGRESS, ID_REMOTE, None, None);
    fx.allow(EP_A, INGRESS, ID_A, None, None);
    let out = fx.send_a(&a_to_b().tcp(40000, 80, SYN).build());
    fx.expect_drop(&out, DROP_POLICY, "B selected for ingress, no entry for A");
    assert_eq!(
        fx.dp.metric(DROP_POLICY, DIR_INGRESS).unwrap(),
        1,
        "counted as an ingress drop"
    );
    // Egress default deny is counted on the egress side.
    fx.enforce('a', false, true);
    fx.enforce('b', false, false);
    let out = fx.send_a(&a_to_b().udp(1, 2).build());
    fx.expect_drop(&out, DROP_POLICY, "A selected for egress, no entry");
    assert_eq!(fx.dp.metric(DROP_POLICY, DIR_EGRESS).unwrap(), 1);
}

#[test]
fn unselected_direction_allows_all() {
    let mut fx = Fx::new();
    // A is selected for ingress only: its egress is open. B is not selected.
    fx.enforce('a', true, false);
    let out = fx.send_a(&a_to_b().tcp(40000, 8080, SYN).build());
    fx.expect_redirect(&out, "A egress unselected, B unselected");
    let out = fx.send_a(
        &PacketBuilder::new(MAC_A, NODE_MAC_A)
            .ipv4(IP_A, IP_REMOTE)
            .udp(1, 2)
            .build(),
    );
    fx.expect_ok(&out, "A to a remote address goes to the stack");
    // ... while A's selected ingress denies B.
    let out = fx.send_b(&b_to_a().tcp(40000, 22, SYN).build());
    fx.expect_drop(&out, DROP_POLICY, "A ingress selected");
}

#[test]
fn egress_policy_uses_the_destination_identity() {
    let mut fx = Fx::new();
    fx.enforce('a', false, true);
    fx.allow(EP_A, EGRESS, ID_REMOTE, Some(TCP), Some((443, 443)));
    let to_remote = |port| {
        PacketBuilder::new(MAC_A, NODE_MAC_A)
            .ipv4(IP_A, IP_REMOTE)
            .tcp(40000, port, SYN)
            .build()
    };
    let out = fx.send_a(&to_remote(443));
    fx.expect_ok(&out, "egress to the remote CIDR identity on 443");
    let out = fx.send_a(&to_remote(80));
    fx.expect_drop(&out, DROP_POLICY, "egress to remote on 80");
    // An address the ipcache does not know is the world (identity 2).
    fx.allow(EP_A, EGRESS, IDENTITY_WORLD, Some(UDP), None);
    let world = PacketBuilder::new(MAC_A, NODE_MAC_A)
        .ipv4(IP_A, "198.18.200.1".parse().unwrap())
        .udp(1, 53)
        .build();
    let out = fx.send_a(&world);
    fx.expect_ok(&out, "egress to world, UDP any port");
}

#[test]
fn port_range_edges() {
    let mut fx = Fx::new();
    fx.enforce('b', true, false);
    fx.allow(EP_B, INGRESS, ID_A, Some(TCP), Some((1000, 1999)));
    fx.allow(EP_B, INGRESS, 0, Some(UDP), Some((80, 90)));
    for (proto, port, allowed) in [
        (TCP, 999, false),
        (TCP, 1000, true),
        (TCP, 1500, true),
        (TCP, 1999, true),
        (TCP, 2000, false),
        (UDP, 79, false),
        (UDP, 80, true),
        (UDP, 90, true),
        (UDP, 91, false),
        (TCP, 85, false),
    ] {
        let b = a_to_b();
        let pkt = if proto == TCP {
            b.tcp(40000, port, SYN)
        } else {
            b.udp(40000, port)
        }
        .build();
        let out = fx.send_a(&pkt);
        let what = format!("proto {proto} port {port}");
        if allowed {
            fx.expect_redirect(&out, &what);
        } else {
            fx.expect_drop(&out, DROP_POLICY, &what);
        }
    }
    // A range is a handful of LPM entries, not one per port.
    assert!(fx.dp.policy_entries().unwrap().len() < 20);
}

// ---------------------------------------------------------------- conntrack

/// A and B both selected both ways; only A->B:80 is allowed (A egress, B ingress).
fn strict_pair() -> Fx {
    let mut fx = Fx::new();
    fx.enforce('a', true, true);
    fx.enforce('b', true, true);
    fx.allow(EP_A, EGRESS, ID_B, Some(TCP), Some((80, 80)));
    fx.allow(EP_B, INGRESS, ID_A, Some(TCP), Some((80, 80)));
    fx
}

#[test]
fn established_reply_skips_policy() {
    let mut fx = strict_pair();
    let out = fx.send_a(&a_to_b().tcp(40000, 80, SYN).build());
    fx.expect_redirect(&out, "SYN A->B:80");
    // B's egress and A's ingress allow nothing, yet the reply passes.
    let out = fx.send_b(&b_to_a().tcp(80, 40000, SYN | ACK).build());
    fx.expect_redirect(&out, "SYN-ACK B->A as a reply");
    let out = fx.send_a(&a_to_b().tcp(40000, 80, ACK).build());
    fx.expect_redirect(&out, "ACK A->B established");
    let ct = fx.dp.conntrack().unwrap();
    assert_eq!(ct.len(), 1, "one entry per flow: {ct:?}");
    let (k, e) = ct[0];
    assert_eq!(
        (k.saddr.get(), k.dport.get(), k.protocol),
        (u32::from(IP_A), 80, TCP)
    );
    assert_eq!((e.tx_packets, e.rx_packets), (2, 1));
    assert_eq!(e.flags & CT_F_SEEN_REPLY, CT_F_SEEN_REPLY);
    assert_eq!(e.src_identity, ID_A);
}

#[test]
fn reply_without_conntrack_is_treated_as_new() {
    let mut fx = strict_pair();
    // No SYN went first: a SYN-ACK from B is a new flow, and B's egress denies it.
    let out = fx.send_b(&b_to_a().tcp(80, 40000, SYN | ACK).build());
    fx.expect_drop(&out, DROP_POLICY, "unsolicited SYN-ACK");
    assert!(
        fx.dp.conntrack().unwrap().is_empty(),
        "a dropped packet creates no entry"
    );
}

#[test]
fn tcp_lifetimes_follow_the_handshake_and_close() {
    let mut fx = Fx::new();
    let lifetime = |fx: &Fx| {
        let ct = fx.dp.conntrack().unwrap();
        assert_eq!(ct.len(), 1);
        ct[0].1.expires.saturating_sub(fx.dp.ct_now().unwrap())
    };
    fx.send_a(&a_to_b().tcp(40000, 80, SYN).build());
    let t = lifetime(&fx);
    assert!((58..=60).contains(&t), "SYN: syn timeout, got {t}");
    fx.send_b(&b_to_a().tcp(80, 40000, SYN | ACK).build());
    fx.send_a(&a_to_b().tcp(40000, 80, ACK).build());
    let t = lifetime(&fx);
    assert!(t > 21000, "established: TCP lifetime, got {t}");
    fx.send_a(&a_to_b().tcp(40000, 80, FIN | ACK).build());
    assert!(lifetime(&fx) > 21000, "half closed stays established");
    fx.send_b(&b_to_a().tcp(80, 40000, FIN | ACK).build());
    let t = lifetime(&fx);
    assert!(
        (8..=10).contains(&t),
        "closed both ways: close timeout, got {t}"
    );
    let flags = fx.dp.conntrack().unwrap()[0].1.flags;
    assert_eq!(
        flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING),
        CT_F_TX_CLOSING | CT_F_RX_CLOSING
    );
    fx.drops();
}

#[test]
fn rst_closes_and_a_new_syn_reopens_through_policy() {
    let mut fx = strict_pair();
    fx.send_a(&a_to_b().tcp(40000, 80, SYN).build());
    fx.send_b(&b_to_a().tcp(80, 40000, RST | ACK).build());
    let e = fx.dp.conntrack().unwrap()[0].1;
    assert_eq!(
        e.flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING),
        CT_F_TX_CLOSING | CT_F_RX_CLOSING
    );
    // Revoke the allow without a revision bump: only a re-opening SYN sees it.
    fx.dp
        .remove_policy(&entry(
            EP_B,
            INGRESS,
            ID_A,
            Some(TCP),
            Some((80, 80)),
            false,
        ))
        .unwrap();
    let out = fx.send_a(&a_to_b().tcp(40000, 80, SYN).build());
    fx.expect_drop(
        &out,
        DROP_POLICY,
        "SYN on a closed tuple is a new connection",
    );
}

#[test]
fn udp_and_icmp_echo_are_tracked() {
    let mut fx = strict_pair();
    fx.allow(EP_A, EGRESS, ID_B, Some(UDP), Some((53, 53)));
    fx.allow(EP_B, INGRESS, ID_A, Some(UDP), Some((53, 53)));
    fx.allow(EP_A, EGRESS, ID_B, Some(ICMP), Some((8, 8)));
    fx.allow(EP_B, INGRESS, ID_A, Some(ICMP), Some((8, 8)));
    let out = fx.send_a(&a_to_b().udp(5353, 53).build());
    fx.expect_redirect(&out, "UDP query");
    let out = fx.send_b(&b_to_a().udp(53, 5353).build());
    fx.expect_redirect(&out, "UDP answer as a reply");
    let out = fx.send_a(&a_to_b().icmp_echo(true, 77, 1).build());
    fx.expect_redirect(&out, "echo request (policy on ICMP type 8)");
    let out = fx.send_b(&b_to_a().icmp_echo(false, 77, 1).build());
    fx.expect_redirect(&out, "echo reply matches the request");
    let out = fx.send_b(&b_to_a().icmp_echo(false, 78, 1).build());
    fx.expect_drop(&out, DROP_POLICY, "echo reply with another identifier");
    let udp = fx
        .dp
        .conntrack()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k.protocol == UDP)
        .unwrap();
    let t = udp.1.expires.saturating_sub(fx.dp.ct_now().unwrap());
    assert!((58..=60).contains(&t), "UDP lifetime, got {t}");
}

#[test]
fn icmp_errors_of_a_tracked_flow_are_related() {
    let mut fx = strict_pair();
    fx.allow(EP_A, EGRESS, ID_B, Some(UDP), None);
    fx.allow(EP_B, INGRESS, ID_A, Some(UDP), None);
    let query = a_to_b().udp(5353, 9999);
    fx.expect_redirect(&fx.send_a(&query.build()), "UDP to a closed port");
    // B's stack answers port unreachable, quoting A's datagram.
    let unreach = b_to_a().icmp_error(3, 3, &query.build_ip()).build();
    let out = fx.send_b(&unreach);
    fx.expect_redirect(&out, "port unreachable about a tracked flow");
    // The same error about a flow nobody sent meets policy (B egress: nothing).
    let stranger = a_to_b().udp(1111, 2222).build_ip();
    let out = fx.send_b(&b_to_a().icmp_error(3, 3, &stranger).build());
    fx.expect_drop(&out, DROP_POLICY, "ICMP error about an unknown flow");
}

#[test]
fn policy_change_reaches_established_flows_after_a_revision_bump() {
    let mut fx = strict_pair();
    fx.send_a(&a_to_b().tcp(40000, 80, SYN).build());
    fx.send_b(&b_to_a().tcp(80, 40000, SYN | ACK).build());
    fx.drops();
    fx.dp
        .remove_policy(&entry(
            EP_B,
            INGRESS,
            ID_A,
            Some(TCP),
            Some((80, 80)),
            false,
        ))
        .unwrap();
    // Until the agent publishes the change, the flow keeps its verdict...
    fx.expect_redirect(
        &fx.send_a(&a_to_b().tcp(40000, 80, ACK).build()),
        "before the bump",
    );
    fx.dp.set_policy_revision(1).unwrap();
    assert_eq!(fx.dp.policy_revision().unwrap(), 1);
    // ...and once it is published, the next packet is checked again.
    let out = fx.send_a(&a_to_b().tcp(40000, 80, ACK).build());
    fx.expect_drop(&out, DROP_POLICY, "after the bump");
    // Replies never re-check.
    fx.expect_redirect(
        &fx.send_b(&b_to_a().tcp(80, 40000, ACK).build()),
        "reply after the bump",
    );
}

// ---------------------------------------------------------------- local delivery

#[test]
fn local_delivery_rewrites_macs_and_decrements_ttl_with_correct_checksum() {
    let mut fx = Fx::new();
    let input = a_to_b()
        .ttl(64)
        .ip_id(4242)
        .tcp(40000, 80, SYN)
        .payload(b"hello")
        .build();
    let out = fx.send_a(&input);
    fx.expect_redirect(&out, "local delivery");
    let want = PacketBuilder::new(NODE_MAC_B, MAC_B)
        .ipv4(IP_A, IP_B)
        .ttl(63)
        .ip_id(4242)
        .tcp(40000, 80, SYN)
        .payload(b"hello")
        .build();
    assert_eq!(
        out.packet, want,
        "output packet: MACs of the gateway->B hop, TTL 63, checksum updated"
    );
    let p = parse(&out.packet).unwrap().ipv4.unwrap();
    assert!(p.checksum_ok, "IPv4 checksum after the TTL decrement");
    assert_eq!(fx.dp.metric(METRIC_FORWARDED, DIR_EGRESS).unwrap(), 1);
}

#[test]
fn ttl_one_is_not_delivered() {
    let mut fx = Fx::new();
    let out = fx.send_a(&a_to_b().ttl(1).udp(1, 2).build());
    fx.expect_drop(&out, DROP_TTL_EXCEEDED, "TTL 1");
}

#[test]
fn non_local_destinations_go_to_the_stack_unchanged() {
    let mut fx = Fx::new();
    let pkt = PacketBuilder::new(MAC_A, NODE_MAC_A)
        .ipv4(IP_A, IP_REMOTE)
        .tcp(1, 2, SYN)
        .build();
    let out = fx.send_a(&pkt);
    fx.expect_ok(&out, "to the stack");
    assert_eq!(out.packet, pkt, "the stack routes it: no rewrite here");
}

#[test]
fn to_container_enforces_ingress_for_traffic_from_the_stack() {
    let mut fx = Fx::new();
    fx.enforce('b', true, false);
    fx.allow(EP_B, INGRESS, IDENTITY_HOST, Some(TCP), Some((80, 80)));
    let from_host = |port| {
        PacketBuilder::new(NODE_MAC_B, MAC_B)
            .ipv4(ROUTER, IP_B)
            .tcp(33000, port, SYN)
            .build()
    };
    let pkt = from_host(80);
    let out = fx.to_b(&pkt);
    fx.expect_ok(&out, "host -> B:80");
    assert_eq!(out.packet, pkt);
    let out = fx.to_b(&from_host(81));
    fx.expect_drop(&out, DROP_POLICY, "host -> B:81");
    // B's answer to the host is a reply in from_container.
    let out = fx.send_b(
        &PacketBuilder::new(MAC_B, NODE_MAC_B)
            .ipv4(IP_B, ROUTER)
            .tcp(80, 33000, SYN | ACK)
            .build(),
    );
    fx.expect_ok(&out, "B's reply to the host");
    // ARP from the host towards the pod is the pod's to answer.
    fx.expect_ok(
        &fx.to_b(&arp_request(NODE_MAC_B, ROUTER, IP_B)),
        "host ARP to pod",
    );
    let out = fx.run(Program::ToContainer, fx.stray_ifindex, &from_host(80));
    fx.expect_drop(&out, DROP_NO_ENDPOINT, "to_container with no endpoint");
}

// ---------------------------------------------------------------- validation

#[test]
fn spoofed_source_is_dropped_with_a_reason() {
    let mut fx = Fx::new();
    let spoofed = spoofed();
    let out = fx.send_a(&spoofed);
    assert_eq!(out.verdict, TC_ACT_SHOT);
    let drops = fx.drops();
    assert_eq!(drops.len(), 1);
    let ev = drops[0];
    assert_eq!(
        (ev.subtype, ev.ep_id, ev.direction, ev.src_identity),
        (DROP_INVALID_SIP, EP_A, DIR_EGRESS, ID_A)
    );
    assert_eq!(ev.ifindex, fx.a.ifindex);
    assert_eq!(ev.orig_len as usize, spoofed.len());
    assert_eq!(ev.packet(), &spoofed[..], "the event carries the packet");
    assert_eq!(fx.dp.metric(DROP_INVALID_SIP, DIR_EGRESS).unwrap(), 1);
    // B's address from A's interface is spoofing too.
    let as_b = PacketBuilder::new(MAC_A, NODE_MAC_A)
        .ipv4(IP_B, IP_A)
        .udp(1, 2)
        .build();
    fx.expect_drop(&fx.send_a(&as_b), DROP_INVALID_SIP, "B's address from A");
}

#[test]
fn unknown_ethertype_and_ipv6_are_dropped_and_counted() {
    let mut fx = Fx::new();
    let lldp = PacketBuilder::new(MAC_A, BROADCAST_MAC)
        .ethertype(0x88cc)
        .payload(&[0; 32])
        .build();
    fx.expect_drop(&fx.send_a(&lldp), DROP_UNKNOWN_L3, "LLDP ethertype");
    let v6 = PacketBuilder::new(MAC_A, NODE_MAC_A)
        .ethertype(0x86dd)
        .payload(&[0x60; 40])
        .build();
    fx.expect_drop(&fx.send_a(&v6), DROP_IPV6_UNSUPPORTED, "IPv6 from the pod");
    fx.expect_drop(&fx.to_b(&v6), DROP_IPV6_UNSUPPORTED, "IPv6 to the pod");
    assert_eq!(fx.dp.metric(DROP_IPV6_UNSUPPORTED, DIR_EGRESS).unwrap(), 1);
    assert_eq!(fx.dp.metric(DROP_IPV6_UNSUPPORTED, DIR_INGRESS).unwrap(), 1);
    let bad_version = {
        let mut p = a_to_b().udp(1, 2).build();
        p[14] = 0x65; // version 6 in an IPv4 frame
        p
    };
    fx.expect_drop(
        &fx.send_a(&bad_version),
        DROP_INVALID_IPV4,
        "version 6 in ethertype IPv4",
    );
}

#[test]
fn packet_on_an_interface_without_endpoint_is_dropped() {
    let mut fx = Fx::new();
    let out = fx.run(
        Program::FromContainer,
        fx.stray_ifindex,
        &a_to_b().udp(1, 2).build(),
    );
    fx.expect_drop(&out, DROP_NO_ENDPOINT, "no endpoint");
}

#[test]
fn ip_options_are_skipped_to_find_the_ports() {
    let mut fx = Fx::new();
    fx.enforce('b', true, false);
    fx.allow(EP_B, INGRESS, ID_A, Some(TCP), Some((80, 80)));
    // Record Route (7), 11 bytes + EOL padding: IHL 8.
    let rr = [7u8, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0];
    let with_opts = |port| {
        a_to_b()
            .ip_options(&rr)
            .tcp(40000, port, SYN)
            .payload(b"x")
            .build()
    };
    let input = with_opts(80);
    assert_eq!(parse(&input).unwrap().ipv4.unwrap().header_len, 32);
    let out = fx.send_a(&input);
    fx.expect_redirect(&out, "options, port 80");
    let p = parse(&out.packet).unwrap();
    assert_eq!(
        (p.ipv4.as_ref().unwrap().ttl, p.ipv4.unwrap().checksum_ok),
        (63, true)
    );
    assert_eq!(out.packet[14 + 20..14 + 31], rr[..], "options kept");
    fx.expect_drop(&fx.send_a(&with_opts(81)), DROP_POLICY, "options, port 81");
}

#[test]
fn fragments_follow_their_first_fragment() {
    let mut fx = Fx::new();
    fx.enforce('b', true, false);
    fx.allow(EP_B, INGRESS, ID_A, Some(UDP), Some((53, 53)));
    let first = |id, port| {
        a_to_b()
            .ip_id(id)
            .fragment(0, true)
            .udp(5000, port)
            .payload(&[1; 64])
            .build()
    };
    let later = |id| {
        a_to_b()
            .ip_id(id)
            .fragment(72, false)
            .l4_raw(UDP, &[])
            .payload(&[2; 40])
            .build()
    };
    fx.expect_redirect(&fx.send_a(&first(7, 53)), "first fragment to 53");
    fx.expect_redirect(
        &fx.send_a(&later(7)),
        "second fragment, ports from the first",
    );
    // A first fragment to a denied port is dropped, and so are the rest.
    fx.expect_drop(
        &fx.send_a(&first(8, 54)),
        DROP_POLICY,
        "first fragment to 54",
    );
    fx.expect_drop(&fx.send_a(&later(8)), DROP_POLICY, "second fragment to 54");
    // A later fragment whose first never came cannot be judged by port.
    fx.expect_drop(
        &fx.send_a(&later(9)),
        DROP_FRAG_NOT_FOUND,
        "orphan fragment",
    );
}

// ---------------------------------------------------------------- truncation

/// Every way a header can be cut: for each frame, every prefix from 14 bytes
/// (BPF_PROG_TEST_RUN refuses less than an Ethernet header) to one byte short.
/// None may pass; each must be a drop with a reason.
///
/// The kernel's test runner itself refuses an IPv4-ethertype frame shorter
/// than Ethernet + 20 bytes (EINVAL, the program never runs); that refusal is
/// asserted here, and those cuts are sent as raw frames from a pod in the
/// real-traffic test, where the datapath must drop them.
#[test]
fn every_truncation_of_every_header_is_dropped_with_a_reason() {
    let mut fx = Fx::new();
    let inner = a_to_b().udp(1, 2).build_ip();
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("tcp", a_to_b().tcp(40000, 80, SYN).payload(b"abcd").build()),
        (
            "tcp+options",
            a_to_b()
                .ip_options(&[1, 1, 1, 1])
                .tcp(40000, 80, SYN)
                .build(),
        ),
        ("udp", a_to_b().udp(5000, 53).payload(b"q").build()),
        ("icmp echo", a_to_b().icmp_echo(true, 1, 1).build()),
        ("icmp error", a_to_b().icmp_error(3, 3, &inner).build()),
        ("arp", arp_request(MAC_A, IP_A, ROUTER)),
    ];
    for (what, frame) in &frames {
        for cut in 14..frame.len() {
            if *what != "arp" && cut < 34 {
                assert!(
                    fx.try_send_a(&frame[..cut]).is_err(),
                    "{what} cut at {cut}: kernel ran it"
                );
                continue;
            }
            let out = fx.send_a(&frame[..cut]);
            let drops = fx.drops();
            assert_eq!(
                out.verdict, TC_ACT_SHOT,
                "{what} cut at {cut}: passed with verdict {}",
                out.verdict
            );
            assert_eq!(drops.len(), 1, "{what} cut at {cut}: want one drop event");
            let reason = drops[0].subtype;
            let want: &[u8] = if *what == "arp" {
                &[DROP_INVALID_ARP]
            } else {
                &[DROP_INVALID_IPV4]
            };
            assert!(
                want.contains(&reason),
                "{what} cut at {cut}: reason {}",
                name(reason)
            );
        }
    }
}

/// The same cuts with the IPv4 total length rewritten to match, so that each
/// header's own bounds check, not the length check, has to catch them.
#[test]
fn headers_cut_short_inside_a_consistent_datagram_are_dropped() {
    let mut fx = Fx::new();
    let inner = a_to_b().udp(1, 2).build_ip();
    let cases: Vec<(&str, PacketBuilder, u8)> = vec![
        ("tcp", a_to_b().tcp(40000, 80, SYN), DROP_INVALID_L4),
        (
            "tcp+ip options",
            a_to_b().ip_options(&[1, 1, 1, 1]).tcp(40000, 80, SYN),
            DROP_INVALID_L4,
        ),
        ("udp", a_to_b().udp(5000, 53), DROP_INVALID_L4),
        ("icmp", a_to_b().icmp_echo(true, 1, 1), DROP_INVALID_L4),
        (
            "icmp error",
            a_to_b().icmp_error(3, 3, &inner),
            DROP_INVALID_ICMP_INNER,
        ),
    ];
    for (what, b, l4_reason) in cases {
        let layout = b.layout();
        let full = b.build();
        let l4 = layout.l4_start.expect("l4 header");
        for cut in 34..layout.payload_start {
            let mut frame = full[..cut].to_vec();
            let tot = (cut - 14) as u16;
            frame[16..18].copy_from_slice(&tot.to_be_bytes());
            frame[24..26].copy_from_slice(&[0, 0]);
            let c = pilus_packet::checksum(&frame[14..34]);
            frame[24..26].copy_from_slice(&c.to_be_bytes());
            let out = fx.send_a(&frame);
            let drops = fx.drops();
            assert_eq!(out.verdict, TC_ACT_SHOT, "{what} cut at {cut} passed");
            let want = if cut < l4 {
                DROP_INVALID_IPV4
            } else if *what == *"icmp error" && cut >= l4 + 8 {
                l4_reason
            } else if *what == *"icmp error" {
                DROP_INVALID_L4
            } else {
                l4_reason
            };
            assert_eq!(drops.len(), 1, "{what} cut at {cut}");
            assert_eq!(
                drops[0].subtype,
                want,
                "{what} cut at {cut}: {} want {}",
                name(drops[0].subtype),
                name(want)
            );
        }
    }
    // A TCP data offset that points past the datagram is a truncated header too.
    let mut bad_doff = a_to_b().tcp(40000, 80, SYN).build();
    bad_doff[14 + 20 + 12] = 0xf0;
    fx.expect_drop(
        &fx.send_a(&bad_doff),
        DROP_INVALID_L4,
        "TCP doff 15 in a 20-byte header",
    );
    let mut small_doff = a_to_b().tcp(40000, 80, SYN).build();
    small_doff[14 + 20 + 12] = 0x40;
    fx.expect_drop(&fx.send_a(&small_doff), DROP_INVALID_L4, "TCP doff 4");
    let mut small_ihl = a_to_b().udp(1, 2).build();
    small_ihl[14] = 0x44;
    fx.expect_drop(&fx.send_a(&small_ihl), DROP_INVALID_IPV4, "IHL 4");
}

#[test]
fn endpoint_outside_the_pod_cidr_is_refused_and_nothing_is_written() {
    let mut fx = Fx::new();
    let before = fx.dp.endpoints().unwrap().len();
    let mut outside = fx.a;
    outside.ip4 = pilus_abi::Be32::from(IP_REMOTE);
    outside.ifindex = fx.stray_ifindex;
    let err = fx.dp.upsert_endpoint(&outside).unwrap_err();
    assert!(
        err.to_string()
            .contains("outside the node's pod CIDR 198.18.0.0/16"),
        "{err}"
    );
    assert_eq!(
        fx.dp.endpoints().unwrap().len(),
        before,
        "no half-written endpoint"
    );
    // And a removed endpoint is no longer a local destination.
    let b = fx.b;
    fx.dp.remove_endpoint(&b).unwrap();
    let out = fx.send_a(&a_to_b().udp(1, 2).build());
    fx.expect_ok(&out, "B removed: to the stack, not delivered");
}

/// Waits on the ring buffer while another thread causes one drop 50 ms later;
/// returns how long the wait took and what it drained.
fn wait_while_dropping(
    fx: &mut Fx,
    wait: std::time::Duration,
) -> (std::time::Duration, Vec<pilus_abi::Event>) {
    use std::time::{Duration, Instant};
    let spoofed = spoofed();
    fx.events.drain();
    let Fx {
        events, dp, ns, a, ..
    } = fx;
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            ns.within(|| dp.test_run(Program::FromContainer, a.ifindex, &spoofed, 1))
                .unwrap()
                .unwrap();
        });
        let t = Instant::now();
        let evs = events.wait(wait).unwrap();
        (t.elapsed(), evs)
    })
}

#[test]
fn events_wake_the_reader_only_past_the_threshold() {
    use std::time::Duration;
    // Default threshold (64 KiB): a drop does not wake a waiting reader; its
    // timer drains the event.
    let mut fx = Fx::new();
    let (took, evs) = wait_while_dropping(&mut fx, Duration::from_millis(400));
    assert!(
        took >= Duration::from_millis(350),
        "woken by one event: {took:?}"
    );
    assert_eq!(evs.len(), 1, "the timer drain delivers the event");
    // Threshold of 1 byte: the event forces a wakeup at once.
    let mut fx = Fx::with_config(|c| c.events_wakeup_bytes = 1);
    let (took, evs) = wait_while_dropping(&mut fx, Duration::from_secs(5));
    assert!(
        took < Duration::from_secs(1),
        "no wakeup past the threshold: {took:?}"
    );
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].subtype, DROP_INVALID_SIP);
}
