//! Tier 2: services through BPF_PROG_TEST_RUN. The DNAT of a pod's packet
//! to a frontend and the reverse NAT of the backend's reply, byte for byte
//! (checksums included) against frames the packet builder computes from
//! scratch, for TCP, UDP and ICMP errors, on every path a reply reaches the
//! client; the pinned backend; affinity; Maglev; the no-backend drop;
//! policy on the backend's identity; a full conntrack table and its GC.

mod common;
use common::*;
use pilus_abi::{
    consts::*, Be16, Be32, CtEntry, CtKey4, Lb4Affinity, Lb4AffinityKey, Lb4Backend, Lb4Key,
    Lb4Maglev, Lb4MaglevKey, Lb4Service, Lb4SlotKey,
};
use pilus_datapath::{testrun::TC_ACT_SHOT, Program};
use pilus_packet::{parse, tcp_flags::*, L4Info, PacketBuilder};
use std::{collections::BTreeSet, net::Ipv4Addr};

/// Frontends are in 198.19.128.0/17 (no pod CIDR, no underlay).
const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 128, 10);
const VPORT: u16 = 80;
const BPORT: u16 = 8080;
/// The frontend's id (its reverse-NAT index).
const FE: u32 = 7;
/// A second address of B's, for services with two backends: B itself on
/// another port.
const BPORT2: u16 = 9090;

struct Svc {
    proto: u8,
    algorithm: u8,
    flags: u8,
    affinity_timeout: u32,
    /// (backend id, address, port, state)
    backends: Vec<(u32, Ipv4Addr, u16, u8)>,
}

impl Svc {
    fn new(proto: u8, backends: &[(u32, Ipv4Addr, u16)]) -> Svc {
        Svc {
            proto,
            algorithm: LB_ALG_RANDOM,
            flags: 0,
            affinity_timeout: 0,
            backends: backends
                .iter()
                .map(|&(id, ip, port)| (id, ip, port, LB_BACKEND_ACTIVE))
                .collect(),
        }
    }
}

fn key(proto: u8) -> Lb4Key {
    Lb4Key {
        address: Be32::from(VIP),
        dport: Be16::new(VPORT),
        protocol: proto,
        scope: 0,
    }
}

/// Writes a frontend as the control plane would: backends, the slots (or
/// Maglev table) of generation 1, reverse NAT, then the entry.
fn install(fx: &mut Fx, s: &Svc) {
    let backends: Vec<(u32, Lb4Backend)> = s
        .backends
        .iter()
        .map(|&(id, ip, port, state)| {
            (
                id,
                Lb4Backend {
                    address: Be32::from(ip),
                    port: Be16::new(port),
                    state,
                    _pad: 0,
                },
            )
        })
        .collect();
    let svc = Lb4Service {
        id: FE,
        generation: 1,
        count: 0,
        affinity_timeout: s.affinity_timeout,
        svc_type: LB_TYPE_CLUSTER_IP,
        algorithm: s.algorithm,
        flags: s.flags,
        _pad: [0; 5],
    };
    // The datapath chooses among the slots: only active backends get one.
    let (active, idle): (Vec<_>, Vec<_>) = backends
        .into_iter()
        .partition(|(_, b)| b.state == LB_BACKEND_ACTIVE);
    fx.dp.put_lb_backends(&idle).unwrap();
    if s.algorithm == LB_ALG_MAGLEV {
        let mut t = Box::<Lb4Maglev>::default();
        for (i, e) in t.backend_ids.iter_mut().enumerate() {
            *e = active[i % active.len()].0;
        }
        fx.dp
            .put_lb_maglev(
                &Lb4MaglevKey {
                    id: FE,
                    generation: 1,
                },
                &t,
            )
            .unwrap();
    }
    fx.dp.put_lb_frontend(&key(s.proto), svc, &active).unwrap();
}

/// What pod A sends to the frontend.
fn a_to_vip() -> PacketBuilder {
    PacketBuilder::new(MAC_A, NODE_MAC_A).ipv4(IP_A, VIP)
}

/// The backend (B) as it reaches it after the gateway: translated, TTL 63.
fn delivered_to_b() -> PacketBuilder {
    PacketBuilder::new(NODE_MAC_B, MAC_B)
        .ipv4(IP_A, IP_B)
        .ttl(63)
}

/// What A receives back: from the frontend, TTL 63.
fn delivered_to_a_from_vip() -> PacketBuilder {
    PacketBuilder::new(NODE_MAC_A, MAC_A)
        .ipv4(VIP, IP_A)
        .ttl(63)
}

fn checksums_ok(frame: &[u8], what: &str) {
    let p = parse(frame).unwrap_or_else(|e| panic!("{what}: unparsable: {e:?}"));
    assert!(
        p.ipv4.as_ref().unwrap().checksum_ok,
        "{what}: IPv4 checksum"
    );
    match p.l4 {
        Some(L4Info::Tcp { checksum_ok, .. }) | Some(L4Info::Udp { checksum_ok, .. }) => {
            assert!(checksum_ok, "{what}: L4 checksum")
        }
        _ => {}
    }
}

fn backend_of(frame: &[u8]) -> (Ipv4Addr, u16) {
    let p = parse(frame).unwrap();
    let dst = p.ipv4.unwrap().dst;
    let port = match p.l4 {
        Some(L4Info::Tcp { dport, .. }) | Some(L4Info::Udp { dport, .. }) => dport,
        other => panic!("no ports: {other:?}"),
    };
    (dst, port)
}

// ---------------------------------------------------------------- TCP

#[test]
fn tcp_to_a_frontend_is_translated_and_the_reply_comes_from_it() {
    let mut fx = Fx::new();
    install(&mut fx, &Svc::new(TCP, &[(1, IP_B, BPORT)]));
    let syn = a_to_vip()
        .ip_id(11)
        .tcp(40000, VPORT, SYN)
        .payload(b"hello")
        .build();
    let out = fx.send_a(&syn);
    fx.expect_redirect(&out, "SYN to the frontend, delivered to B");
    let want = delivered_to_b()
        .ip_id(11)
        .tcp(40000, BPORT, SYN)
        .payload(b"hello")
        .build();
    assert_eq!(
        out.packet, want,
        "DNAT: destination B:8080, checksums updated"
    );
    checksums_ok(&out.packet, "DNAT");

    // Two entries: the service entry pins B, the flow's entry remembers the
    // frontend for the replies.
    let ct = fx.dp.conntrack().unwrap();
    assert_eq!(ct.len(), 2, "{ct:?}");
    let (sk, se) = ct
        .iter()
        .find(|(k, _)| k.scope == CT_SCOPE_SERVICE)
        .unwrap();
    assert_eq!((sk.daddr.get(), sk.dport.get()), (u32::from(VIP), VPORT));
    assert_eq!(
        (se.backend_id, se.backend_addr.get(), se.backend_port.get()),
        (1, u32::from(IP_B), BPORT)
    );
    let (fk, fe) = ct.iter().find(|(k, _)| k.scope == CT_SCOPE_FLOW).unwrap();
    assert_eq!((fk.daddr.get(), fk.dport.get()), (u32::from(IP_B), BPORT));
    assert_eq!(fe.rev_nat_index, FE);

    // B answers from 8080; A gets it from the frontend.
    let synack = PacketBuilder::new(MAC_B, NODE_MAC_B)
        .ipv4(IP_B, IP_A)
        .ip_id(12)
        .tcp(BPORT, 40000, SYN | ACK)
        .payload(b"hi")
        .build();
    let out = fx.send_b(&synack);
    fx.expect_redirect(&out, "SYN-ACK from B, delivered to A");
    let want = delivered_to_a_from_vip()
        .ip_id(12)
        .tcp(VPORT, 40000, SYN | ACK)
        .payload(b"hi")
        .build();
    assert_eq!(out.packet, want, "reverse NAT: source VIP:80");
    checksums_ok(&out.packet, "reverse NAT");

    // The rest of the flow keeps its backend.
    let ack = a_to_vip().ip_id(13).tcp(40000, VPORT, ACK).build();
    let out = fx.send_a(&ack);
    fx.expect_redirect(&out, "ACK of the established flow");
    assert_eq!(
        out.packet,
        delivered_to_b().ip_id(13).tcp(40000, BPORT, ACK).build()
    );
    assert_eq!(fx.dp.conntrack().unwrap().len(), 2, "no new entries");
}

#[test]
fn the_backend_stays_pinned_when_the_backend_set_changes() {
    let mut fx = Fx::new();
    install(&mut fx, &Svc::new(TCP, &[(1, IP_B, BPORT)]));
    fx.expect_redirect(
        &fx.send_a(&a_to_vip().tcp(40000, VPORT, SYN).build()),
        "SYN",
    );
    // The frontend now names only another backend (generation 2 in place
    // of 1, as the control plane swaps them).
    fx.dp
        .put_lb_backends(&[(
            2,
            Lb4Backend {
                address: Be32::from(IP_B),
                port: Be16::new(BPORT2),
                state: LB_BACKEND_ACTIVE,
                _pad: 0,
            },
        )])
        .unwrap();
    fx.dp
        .put_lb_slots(&[(
            Lb4SlotKey {
                id: FE,
                generation: 2,
                slot: 0,
            },
            2,
        )])
        .unwrap();
    let mut svc = fx
        .dp
        .lb_services()
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == key(TCP))
        .unwrap()
        .1;
    svc.generation = 2;
    fx.dp.put_lb_services(&[(key(TCP), svc)]).unwrap();
    fx.dp
        .remove_lb_slots(&[Lb4SlotKey {
            id: FE,
            generation: 1,
            slot: 0,
        }])
        .unwrap();
    fx.dp.remove_lb_backends(&[1]).unwrap();
    let out = fx.send_a(&a_to_vip().tcp(40000, VPORT, ACK).build());
    fx.expect_redirect(&out, "established flow after the change");
    assert_eq!(backend_of(&out.packet), (IP_B, BPORT), "still its backend");
    let out = fx.send_a(&a_to_vip().tcp(40001, VPORT, SYN).build());
    fx.expect_redirect(&out, "a new flow after the change");
    assert_eq!(backend_of(&out.packet), (IP_B, BPORT2), "the new set");
}

// ---------------------------------------------------------------- UDP

#[test]
fn udp_to_a_frontend_and_back_with_and_without_a_checksum() {
    let mut fx = Fx::new();
    install(&mut fx, &Svc::new(UDP, &[(1, IP_B, BPORT)]));
    let q = a_to_vip()
        .ip_id(5)
        .udp(5353, VPORT)
        .payload(b"query")
        .build();
    let out = fx.send_a(&q);
    fx.expect_redirect(&out, "UDP to the frontend");
    assert_eq!(
        out.packet,
        delivered_to_b()
            .ip_id(5)
            .udp(5353, BPORT)
            .payload(b"query")
            .build()
    );
    checksums_ok(&out.packet, "UDP DNAT");
    let answer = PacketBuilder::new(MAC_B, NODE_MAC_B)
        .ipv4(IP_B, IP_A)
        .ip_id(6)
        .udp(BPORT, 5353)
        .payload(b"answer")
        .build();
    let out = fx.send_b(&answer);
    fx.expect_redirect(&out, "UDP answer");
    assert_eq!(
        out.packet,
        delivered_to_a_from_vip()
            .ip_id(6)
            .udp(VPORT, 5353)
            .payload(b"answer")
            .build()
    );
    checksums_ok(&out.packet, "UDP reverse NAT");

    // A datagram without a checksum (0) keeps none.
    let mut q = a_to_vip().ip_id(7).udp(5354, VPORT).payload(b"q").build();
    q[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let out = fx.send_a(&q);
    fx.expect_redirect(&out, "UDP without checksum");
    assert_eq!(
        &out.packet[14 + 20 + 6..14 + 20 + 8],
        &[0, 0],
        "still no checksum"
    );
    assert_eq!(backend_of(&out.packet), (IP_B, BPORT));
    assert!(parse(&out.packet).unwrap().ipv4.unwrap().checksum_ok);
}

// ---------------------------------------------------------------- ICMP errors

/// B's port unreachable about A's datagram reaches A as the frontend's,
/// quoting A's datagram as A sent it (to the frontend); for TCP too, where
/// the quote holds the TCP checksum.
#[test]
fn icmp_errors_about_a_service_flow_are_translated_for_the_client() {
    for proto in [UDP, TCP] {
        let mut fx = Fx::new();
        install(&mut fx, &Svc::new(proto, &[(1, IP_B, BPORT)]));
        let l4 = |b: PacketBuilder, sport, dport| match proto {
            UDP => b.udp(sport, dport).payload(b"data"),
            _ => b.tcp(sport, dport, SYN),
        };
        let out = fx.send_a(&l4(a_to_vip().ip_id(21), 40000, VPORT).build());
        fx.expect_redirect(&out, "to the frontend");
        // B's stack quotes what it got: translated, TTL 63.
        let got_by_b = l4(
            PacketBuilder::new(MAC_A, MAC_B)
                .ipv4(IP_A, IP_B)
                .ttl(63)
                .ip_id(21),
            40000,
            BPORT,
        )
        .build_ip();
        assert_eq!(&out.packet[14..], &got_by_b[..], "B got this");
        let unreach = PacketBuilder::new(MAC_B, NODE_MAC_B)
            .ipv4(IP_B, IP_A)
            .ip_id(22)
            .icmp_error(3, 3, &got_by_b)
            .build();
        let out = fx.send_b(&unreach);
        fx.expect_redirect(&out, &format!("proto {proto}: port unreachable to A"));
        let as_a_sent = l4(
            PacketBuilder::new(MAC_A, MAC_B)
                .ipv4(IP_A, VIP)
                .ttl(63)
                .ip_id(21),
            40000,
            VPORT,
        )
        .build_ip();
        let want = delivered_to_a_from_vip()
            .ip_id(22)
            .icmp_error(3, 3, &as_a_sent)
            .build();
        assert_eq!(
            out.packet, want,
            "proto {proto}: from the frontend, quoting A's packet to the frontend"
        );
    }
}

/// An error that A sends about the frontend's reply (its socket was gone)
/// goes to the backend, quoting the reply as the backend sent it.
#[test]
fn an_icmp_error_from_the_client_goes_to_the_backend() {
    let mut fx = Fx::new();
    install(&mut fx, &Svc::new(UDP, &[(1, IP_B, BPORT)]));
    fx.expect_redirect(&fx.send_a(&a_to_vip().udp(40000, VPORT).build()), "query");
    let reply_as_a_got_it = PacketBuilder::new(NODE_MAC_A, MAC_A)
        .ipv4(VIP, IP_A)
        .ttl(63)
        .ip_id(31)
        .udp(VPORT, 40000)
        .payload(b"late")
        .build_ip();
    let err = a_to_vip()
        .ip_id(32)
        .icmp_error(3, 3, &reply_as_a_got_it)
        .build();
    let out = fx.send_a(&err);
    fx.expect_redirect(&out, "A's port unreachable, to B");
    let as_b_sent = PacketBuilder::new(MAC_B, NODE_MAC_B)
        .ipv4(IP_B, IP_A)
        .ttl(63)
        .ip_id(31)
        .udp(BPORT, 40000)
        .payload(b"late")
        .build_ip();
    let want = delivered_to_b()
        .ip_id(32)
        .icmp_error(3, 3, &as_b_sent)
        .build();
    assert_eq!(out.packet, want);
}

// ---------------------------------------------------------------- other paths

/// A backend elsewhere: the translated packet goes to the stack, and the
/// reply the stack routes to A (to_container) is reverse-NATed there.
#[test]
fn a_remote_backend_goes_through_the_stack_and_its_reply_is_translated_in_to_container() {
    let mut fx = Fx::new();
    install(&mut fx, &Svc::new(TCP, &[(1, IP_REMOTE, BPORT)]));
    let out = fx.send_a(&a_to_vip().ip_id(41).tcp(40000, VPORT, SYN).build());
    fx.expect_ok(&out, "to the stack");
    let want = PacketBuilder::new(MAC_A, NODE_MAC_A)
        .ipv4(IP_A, IP_REMOTE)
        .ip_id(41)
        .tcp(40000, BPORT, SYN)
        .build();
    assert_eq!(
        out.packet, want,
        "translated, routed by the stack (TTL kept)"
    );
    let reply = PacketBuilder::new(NODE_MAC_A, MAC_A)
        .ipv4(IP_REMOTE, IP_A)
        .ttl(62)
        .ip_id(42)
        .tcp(BPORT, 40000, SYN | ACK)
        .build();
    let out = fx.run(Program::ToContainer, fx.a.ifindex, &reply);
    fx.expect_ok(&out, "the reply, through to_container");
    let want = PacketBuilder::new(NODE_MAC_A, MAC_A)
        .ipv4(VIP, IP_A)
        .ttl(62)
        .ip_id(42)
        .tcp(VPORT, 40000, SYN | ACK)
        .build();
    assert_eq!(out.packet, want, "from the frontend");
}

#[test]
fn a_frontend_without_backends_drops_with_its_own_reason() {
    let mut fx = Fx::new();
    install(&mut fx, &Svc::new(TCP, &[]));
    let out = fx.send_a(&a_to_vip().tcp(40000, VPORT, SYN).build());
    fx.expect_drop(&out, DROP_NO_SERVICE_BACKEND, "no backend");
    assert_eq!(
        fx.dp.metric(DROP_NO_SERVICE_BACKEND, DIR_EGRESS).unwrap(),
        1
    );
    assert!(fx.dp.conntrack().unwrap().is_empty(), "nothing tracked");
    // Only terminating or quarantined backends: not chosen either (the
    // control plane puts no such backend in the slots).
    let mut fx = Fx::new();
    let mut s = Svc::new(UDP, &[(1, IP_B, BPORT)]);
    s.backends[0].3 = LB_BACKEND_QUARANTINED;
    install(&mut fx, &s);
    let out = fx.send_a(&a_to_vip().udp(1, VPORT).build());
    fx.expect_drop(&out, DROP_NO_SERVICE_BACKEND, "a quarantined backend only");
    // Another port of the frontend's address is no service: to the stack.
    let out = fx.send_a(&a_to_vip().udp(1, 81).build());
    fx.expect_ok(&out, "port 81: no frontend");
}

#[test]
fn node_port_frontends_are_not_served_to_pods_yet() {
    let mut fx = Fx::new();
    install(&mut fx, &Svc::new(TCP, &[(1, IP_B, BPORT)]));
    let (k, mut v) = fx.dp.lb_services().unwrap()[0];
    v.svc_type = LB_TYPE_NODE_PORT;
    fx.dp.put_lb_services(&[(k, v)]).unwrap();
    let pkt = a_to_vip().tcp(40000, VPORT, SYN).build();
    let out = fx.send_a(&pkt);
    fx.expect_ok(&out, "a NodePort frontend: the stack's");
    assert_eq!(out.packet, pkt, "untranslated");
}

#[test]
fn policy_applies_to_the_chosen_backend() {
    let mut fx = Fx::new();
    install(&mut fx, &Svc::new(TCP, &[(1, IP_B, BPORT)]));
    // B admits only the remote identity: A is denied, through the frontend
    // as directly, and the drop names B's identity.
    fx.enforce('b', true, false);
    fx.allow(EP_B, INGRESS, ID_REMOTE, None, None);
    let out = fx.send_a(&a_to_vip().tcp(40000, VPORT, SYN).build());
    assert_eq!(out.verdict, TC_ACT_SHOT);
    let drops = fx.drops();
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert_eq!(drops[0].subtype, DROP_POLICY);
    assert_eq!((drops[0].src_identity, drops[0].dst_identity), (ID_A, ID_B));
    // Allowed on B's port 8080 (the backend's, not the frontend's 80).
    fx.allow(EP_B, INGRESS, ID_A, Some(TCP), Some((BPORT, BPORT)));
    fx.expect_redirect(
        &fx.send_a(&a_to_vip().tcp(40001, VPORT, SYN).build()),
        "allowed on the backend's port",
    );
    // A's egress policy sees B too.
    fx.enforce('a', false, true);
    let out = fx.send_a(&a_to_vip().tcp(40002, VPORT, SYN).build());
    fx.expect_drop(&out, DROP_POLICY, "A's egress has nothing for B");
    fx.allow(EP_A, EGRESS, ID_B, Some(TCP), Some((BPORT, BPORT)));
    fx.expect_redirect(
        &fx.send_a(&a_to_vip().tcp(40003, VPORT, SYN).build()),
        "A's egress allows B:8080",
    );
}

// ---------------------------------------------------------------- selection

fn backends_seen(fx: &mut Fx, flows: u16, proto: u8) -> BTreeSet<(Ipv4Addr, u16)> {
    let mut seen = BTreeSet::new();
    for i in 0..flows {
        let b = a_to_vip();
        let pkt = if proto == TCP {
            b.tcp(20000 + i, VPORT, SYN)
        } else {
            b.udp(20000 + i, VPORT)
        }
        .build();
        let out = fx.send_a(&pkt);
        fx.expect_redirect(&out, &format!("flow {i}"));
        seen.insert(backend_of(&out.packet));
    }
    seen
}

#[test]
fn random_spreads_and_affinity_keeps_a_client_on_its_backend() {
    let two = [(1, IP_B, BPORT), (2, IP_B, BPORT2)];
    let mut fx = Fx::new();
    install(&mut fx, &Svc::new(TCP, &two));
    assert_eq!(backends_seen(&mut fx, 40, TCP).len(), 2, "random: both");

    let mut fx = Fx::new();
    let mut s = Svc::new(TCP, &two);
    s.flags = LB_F_AFFINITY;
    s.affinity_timeout = 600;
    install(&mut fx, &s);
    let seen = backends_seen(&mut fx, 40, TCP);
    assert_eq!(
        seen.len(),
        1,
        "affinity: one backend for every flow of A: {seen:?}"
    );
    let aff = fx.dp.lb_affinity().unwrap();
    assert_eq!(aff.len(), 1);
    let (k, v) = aff[0];
    assert_eq!((k.id, k.client.get()), (FE, u32::from(IP_A)));
    let now = fx.dp.ct_now().unwrap();
    assert!(
        (595..=600).contains(&v.expires.saturating_sub(now)),
        "{v:?}"
    );
    // Expired: the client may get either again; point it at the other one
    // with a fresh entry and it follows.
    let other = if seen.contains(&(IP_B, BPORT)) { 2 } else { 1 };
    fx.dp
        .put_lb_affinity(&[(
            k,
            Lb4Affinity {
                backend_id: other,
                expires: now + 100,
            },
        )])
        .unwrap();
    // (New flows: the old ones are pinned to their backend.)
    fx.dp.flush_conntrack().unwrap();
    let seen2 = backends_seen(&mut fx, 5, TCP);
    assert_eq!(seen2.len(), 1);
    assert_ne!(seen2, seen, "follows its affinity entry");
    // An entry naming a backend the frontend no longer has is ignored.
    fx.dp
        .put_lb_affinity(&[(
            Lb4AffinityKey {
                id: FE,
                client: Be32::from(IP_A),
            },
            Lb4Affinity {
                backend_id: 99,
                expires: now + 100,
            },
        )])
        .unwrap();
    let out = fx.send_a(&a_to_vip().tcp(30000, VPORT, SYN).build());
    fx.expect_redirect(&out, "stale affinity");
    let chosen = fx.dp.lb_affinity().unwrap()[0].1.backend_id;
    assert!(
        [1, 2].contains(&chosen),
        "a backend of the frontend: {chosen}"
    );
}

#[test]
fn maglev_follows_the_table() {
    let two = [(1, IP_B, BPORT), (2, IP_B, BPORT2)];
    let mut fx = Fx::new();
    let mut s = Svc::new(UDP, &two);
    s.algorithm = LB_ALG_MAGLEV;
    install(&mut fx, &s);
    let seen = backends_seen(&mut fx, 64, UDP);
    assert_eq!(seen.len(), 2, "a table of both: both, by the flows' hashes");
    // A flow's backend is a function of its tuple: the same flow again
    // (its conntrack gone) gets the same one.
    let pkt = a_to_vip().udp(33333, VPORT).build();
    let first = backend_of(&fx.send_a(&pkt).packet);
    fx.dp.flush_conntrack().unwrap();
    assert_eq!(backend_of(&fx.send_a(&pkt).packet), first);
    fx.drops();
    // A table that names one backend only.
    let mut only = Box::<Lb4Maglev>::default();
    only.backend_ids.fill(2);
    fx.dp
        .put_lb_maglev(
            &Lb4MaglevKey {
                id: FE,
                generation: 1,
            },
            &only,
        )
        .unwrap();
    fx.dp.flush_conntrack().unwrap();
    let seen = backends_seen(&mut fx, 16, UDP);
    assert_eq!(seen, BTreeSet::from([(IP_B, BPORT2)]));
}

// ---------------------------------------------------------------- conntrack

/// A full table refuses new flows with a counted drop (fail closed) and
/// keeps serving established ones; expired entries removed by the GC make
/// room again.
#[test]
fn a_full_conntrack_table_fails_closed_until_gc_makes_room() {
    let mut fx = Fx::with_config(|c| c.ct_max_entries = 4);
    let mut gc = fx.dp.conntrack_table().unwrap();
    assert_eq!(gc.max_entries(), 4);
    for port in 0..4 {
        fx.expect_redirect(
            &fx.send_a(&a_to_b().udp(1000 + port, 53).build()),
            &format!("flow {port}"),
        );
    }
    let out = fx.send_a(&a_to_b().udp(2000, 53).build());
    fx.expect_drop(&out, DROP_CT_CREATE_FAILED, "a fifth flow in a table of 4");
    assert_eq!(gc.insert_failures().unwrap(), 1);
    // Established flows still pass.
    fx.expect_redirect(&fx.send_a(&a_to_b().udp(1000, 53).build()), "established");
    // Nothing has expired: the GC removes nothing.
    let pass = gc.gc().unwrap();
    assert_eq!((pass.scanned, pass.deleted), (4, 0));
    // Two flows expire.
    let now = gc.now().unwrap();
    let mut expired: Vec<(CtKey4, CtEntry)> = fx.dp.conntrack().unwrap();
    expired.truncate(2);
    for (_, e) in &mut expired {
        e.expires = now.saturating_sub(1);
    }
    fx.dp.put_conntrack(&expired).unwrap();
    let pass = gc.gc().unwrap();
    assert_eq!((pass.scanned, pass.deleted, pass.remaining()), (4, 2, 2));
    fx.expect_redirect(&fx.send_a(&a_to_b().udp(2000, 53).build()), "room again");
    // Expired affinity entries go too.
    fx.dp
        .put_lb_affinity(&[
            (
                Lb4AffinityKey {
                    id: 1,
                    client: Be32::from(IP_A),
                },
                Lb4Affinity {
                    backend_id: 1,
                    expires: now.saturating_sub(1),
                },
            ),
            (
                Lb4AffinityKey {
                    id: 2,
                    client: Be32::from(IP_A),
                },
                Lb4Affinity {
                    backend_id: 1,
                    expires: now + 100,
                },
            ),
        ])
        .unwrap();
    assert_eq!(gc.gc().unwrap().affinity_deleted, 1);
    assert_eq!(fx.dp.lb_affinity().unwrap().len(), 1);
}

// ---------------------------------------------------------------- events (issue 12)

/// The monitor with services: a pod's packet to a frontend is traced at
/// from-endpoint once, as the pod sent it (to the frontend), not again when
/// the translation's tail call comes back into ipv4_from_lxc; the
/// to-endpoint trace is of the translated packet, for the backend's
/// endpoint, with the flow's state. Regression guard for the merge of the
/// events and services branches.
#[test]
fn a_packet_to_a_frontend_is_traced_once_at_from_endpoint() {
    let mut fx = Fx::new();
    install(&mut fx, &Svc::new(TCP, &[(1, IP_B, BPORT)]));
    fx.dp
        .set_monitor_settings(pilus_datapath::MonitorSettings {
            aggregation: pilus_abi::Aggregation::None,
            debug: false,
            capture: false,
        })
        .unwrap();
    fx.events.drain();
    for (flags, state) in [(SYN, CT_NEW), (ACK, CT_ESTABLISHED)] {
        let out = fx.send_a(&a_to_vip().tcp(40000, VPORT, flags).build());
        assert_eq!(
            out.packet,
            delivered_to_b().tcp(40000, BPORT, flags).build()
        );
        let evs = fx.events.drain();
        let at = |obs: u8| -> Vec<_> {
            evs.iter()
                .filter(|e| e.kind == EVENT_TRACE && e.obs_point == obs)
                .collect()
        };
        let from = at(OBS_FROM_ENDPOINT);
        assert_eq!(from.len(), 1, "flags {flags:#x}: {evs:?}");
        let sent = parse(&from[0].data[..usize::from(from[0].cap_len)]).unwrap();
        assert_eq!(sent.ipv4.unwrap().dst, VIP, "as the pod sent it");
        let to = at(OBS_TO_ENDPOINT);
        assert_eq!(to.len(), 1, "flags {flags:#x}: {evs:?}");
        assert_eq!(
            (to[0].dst_ep_id, to[0].ct_state, to[0].dst_identity),
            (EP_B, state, ID_B),
            "flags {flags:#x}"
        );
    }
}
