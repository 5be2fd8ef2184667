//! Tier 2: the monitor's events through BPF_PROG_TEST_RUN. Every trace
//! carries its conntrack state and both identities (also for established and
//! reply packets, which never looked the peer up for policy); a policy
//! decision is reported as a verdict with its level, direction and the
//! deciding entry's cookie; the aggregation level (set at run time in
//! pilus_monconf) thins established flows' traces but never drops or
//! denials; debug and capture are opt-in; a full ring counts its losses per
//! CPU; and trace events compiled out leave only drops and denials.

mod common;
use common::*;
use pilus_abi::{consts::*, Aggregation, Event};
use pilus_datapath::{
    monitor::totals,
    testrun::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    MonitorSettings, PolicyEntry, Program,
};
use pilus_packet::{tcp_flags::*, PacketBuilder, ETH_HLEN};

fn set(fx: &mut Fx, aggregation: Aggregation, debug: bool, capture: bool) {
    fx.dp
        .set_monitor_settings(MonitorSettings {
            aggregation,
            debug,
            capture,
        })
        .unwrap();
    assert_eq!(
        fx.dp.monitor_settings().unwrap(),
        MonitorSettings {
            aggregation,
            debug,
            capture
        },
        "the settings read back"
    );
}

fn of_kind(evs: &[Event], kind: u8) -> Vec<Event> {
    evs.iter().filter(|e| e.kind == kind).copied().collect()
}

/// (observation point, ct state) of each trace, in order.
fn points(evs: &[Event]) -> Vec<(u8, u8)> {
    of_kind(evs, EVENT_TRACE)
        .iter()
        .map(|e| (e.obs_point, e.ct_state))
        .collect()
}

/// B admits A on 80/TCP (or denies it), with this cookie.
fn b_on_80_from_a(fx: &mut Fx, deny: bool, cookie: u32) {
    fx.dp
        .insert_policy(&policy_entry(
            INGRESS,
            ID_A,
            Some(TCP),
            Some((80, 80)),
            deny,
            cookie,
        ))
        .unwrap();
}

fn policy_entry(
    dir: u8,
    identity: u32,
    proto: Option<u8>,
    ports: Option<(u16, u16)>,
    deny: bool,
    cookie: u32,
) -> PolicyEntry {
    PolicyEntry {
        ep_id: EP_B,
        direction: dir,
        identity,
        protocol: proto,
        ports,
        deny,
        cookie,
    }
}

const REMOTE_DST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 19, 5, 9);

#[test]
fn traces_carry_the_ct_state_and_both_identities_of_every_packet() {
    let mut fx = Fx::new();
    set(&mut fx, Aggregation::None, false, false);
    fx.events.drain();

    // A -> B, a new flow: from-endpoint before conntrack, then delivery.
    let out = fx.send_a(&a_to_b().tcp(40000, 80, SYN).build());
    assert_eq!(out.verdict, TC_ACT_REDIRECT, "{}", "SYN A->B");
    let evs = fx.events.drain();
    assert_eq!(
        points(&evs),
        [(OBS_FROM_ENDPOINT, CT_UNKNOWN), (OBS_TO_ENDPOINT, CT_NEW)]
    );
    let t = of_kind(&evs, EVENT_TRACE);
    assert_eq!(
        (
            t[0].ep_id,
            t[0].src_identity,
            t[0].dst_identity,
            t[0].dst_ep_id
        ),
        (EP_A, ID_A, ID_B, 0),
        "from-endpoint: both identities (the destination's from the ipcache), before delivery was decided"
    );
    assert_eq!(
        (
            t[1].ep_id,
            t[1].src_identity,
            t[1].dst_identity,
            t[1].dst_ep_id
        ),
        (EP_A, ID_A, ID_B, EP_B)
    );
    assert_eq!(t[1].ifindex, fx.a.ifindex);
    assert_eq!(
        t[1].packet()[ETH_HLEN + 8],
        63,
        "to-endpoint shows the packet as delivered (TTL decremented)"
    );
    assert!(
        of_kind(&evs, EVENT_POLICY_VERDICT).is_empty(),
        "B is not selected by any policy"
    );

    // The reply, from B's program: REPLY with both identities.
    let out = fx.send_b(&b_to_a().tcp(80, 40000, SYN | ACK).build());
    assert_eq!(out.verdict, TC_ACT_REDIRECT, "{}", "SYN-ACK B->A");
    let evs = fx.events.drain();
    assert_eq!(
        points(&evs),
        [(OBS_FROM_ENDPOINT, CT_UNKNOWN), (OBS_TO_ENDPOINT, CT_REPLY)]
    );
    let t = of_kind(&evs, EVENT_TRACE)[1];
    assert_eq!(
        (t.ep_id, t.src_identity, t.dst_identity, t.dst_ep_id),
        (EP_B, ID_B, ID_A, EP_A)
    );

    // Established.
    fx.send_a(&a_to_b().tcp(40000, 80, ACK).build());
    let evs = fx.events.drain();
    assert_eq!(points(&evs)[1], (OBS_TO_ENDPOINT, CT_ESTABLISHED));
    let t = of_kind(&evs, EVENT_TRACE)[1];
    assert_eq!((t.src_identity, t.dst_identity), (ID_A, ID_B));

    // To the stack: the destination's identity comes from the ipcache, also
    // for established and reply packets, which never asked it for policy
    // (they were reported with identity 0 before).
    let to_remote = |flags| {
        PacketBuilder::new(MAC_A, NODE_MAC_A)
            .ipv4(IP_A, REMOTE_DST)
            .tcp(41000, 443, flags)
            .build()
    };
    for (flags, state) in [(SYN, CT_NEW), (ACK, CT_ESTABLISHED)] {
        let out = fx.send_a(&to_remote(flags));
        assert_eq!(out.verdict, TC_ACT_OK, "{}", "A to a remote address");
        let evs = fx.events.drain();
        let t = *of_kind(&evs, EVENT_TRACE).last().unwrap();
        assert_eq!(
            (
                t.obs_point,
                t.ct_state,
                t.src_identity,
                t.dst_identity,
                t.dst_ep_id
            ),
            (OBS_TO_STACK, state, ID_A, ID_REMOTE, 0),
            "to-stack, {state}"
        );
    }
    // The remote's reply comes from the stack into A: from-stack, then
    // to-endpoint as a reply, its source named by the ipcache.
    let reply = PacketBuilder::new(NODE_MAC_A, MAC_A)
        .ipv4(REMOTE_DST, IP_A)
        .tcp(443, 41000, SYN | ACK)
        .build();
    let out = fx.run(Program::ToContainer, fx.a.ifindex, &reply);
    assert_eq!(out.verdict, TC_ACT_OK, "{}", "the remote's reply into A");
    let evs = fx.events.drain();
    assert_eq!(
        points(&evs),
        [(OBS_FROM_STACK, CT_UNKNOWN), (OBS_TO_ENDPOINT, CT_REPLY)]
    );
    for t in of_kind(&evs, EVENT_TRACE) {
        assert_eq!(
            (t.ep_id, t.src_identity, t.dst_identity, t.dst_ep_id),
            (EP_A, ID_REMOTE, ID_A, EP_A),
            "{t:?}"
        );
    }
}

#[test]
fn policy_verdicts_name_the_level_direction_and_entry_that_decided() {
    // (peer identity, protocol, ports) of the one allow entry, and its level.
    type Case = (Option<u32>, Option<u8>, Option<(u16, u16)>, u8);
    let cases: [Case; 6] = [
        (Some(ID_A), Some(TCP), Some((80, 80)), POLICY_MATCH_L3_L4),
        (None, Some(TCP), Some((80, 80)), POLICY_MATCH_L4_ONLY),
        (Some(ID_A), None, None, POLICY_MATCH_L3_ONLY),
        (None, None, None, POLICY_MATCH_ALL),
        (Some(ID_A), Some(TCP), None, POLICY_MATCH_L3_PROTO),
        (None, Some(TCP), None, POLICY_MATCH_PROTO_ONLY),
    ];
    for (i, (id, proto, ports, level)) in cases.into_iter().enumerate() {
        let mut fx = Fx::new();
        set(&mut fx, Aggregation::Medium, false, false);
        fx.enforce('b', true, false);
        let cookie = 0x1000 + i as u32;
        fx.dp
            .insert_policy(&policy_entry(
                INGRESS,
                id.unwrap_or(0),
                proto,
                ports,
                false,
                cookie,
            ))
            .unwrap();
        fx.events.drain();
        let out = fx.send_a(&a_to_b().tcp(40000, 80, SYN).build());
        assert_eq!(
            out.verdict,
            TC_ACT_REDIRECT,
            "{}",
            &format!("allowed at level {level}")
        );
        let evs = fx.events.drain();
        let v = of_kind(&evs, EVENT_POLICY_VERDICT);
        assert_eq!(v.len(), 1, "one verdict (B's ingress): {evs:?}");
        assert_eq!(
            (v[0].verdict, v[0].subtype, v[0].direction, v[0].cookie),
            (VERDICT_ALLOW, level, DIR_INGRESS, cookie),
            "case {i}"
        );
        assert_eq!(
            (
                v[0].ep_id,
                v[0].dst_ep_id,
                v[0].src_identity,
                v[0].dst_identity,
                v[0].ct_state
            ),
            (EP_A, EP_B, ID_A, ID_B, CT_NEW)
        );
        // The established flow is not judged again: no verdict.
        fx.send_a(&a_to_b().tcp(40000, 80, ACK).build());
        assert!(of_kind(&fx.events.drain(), EVENT_POLICY_VERDICT).is_empty());
    }

    // A deny rule: the verdict and the drop both carry its cookie.
    let mut fx = Fx::new();
    fx.enforce('b', true, false);
    fx.dp
        .insert_policy(&policy_entry(INGRESS, 0, None, None, false, 7))
        .unwrap();
    b_on_80_from_a(&mut fx, true, 0x2002);
    fx.events.drain();
    let out = fx.send_a(&a_to_b().tcp(40000, 80, SYN).build());
    assert_eq!(out.verdict, TC_ACT_SHOT);
    let evs = fx.events.drain();
    let v = of_kind(&evs, EVENT_POLICY_VERDICT);
    assert_eq!(
        (
            v.len(),
            v[0].verdict,
            v[0].subtype,
            v[0].cookie,
            v[0].direction
        ),
        (1, VERDICT_DENY, POLICY_MATCH_L3_L4, 0x2002, DIR_INGRESS)
    );
    let d = of_kind(&evs, EVENT_DROP);
    assert_eq!(
        (
            d.len(),
            d[0].subtype,
            d[0].cookie,
            d[0].dst_ep_id,
            d[0].direction
        ),
        (1, DROP_POLICY_DENY, 0x2002, EP_B, DIR_INGRESS)
    );
    assert_eq!((d[0].src_identity, d[0].dst_identity), (ID_A, ID_B));

    // Default deny (A's egress selected, nothing allows B): level none,
    // cookie 0, direction egress.
    let mut fx = Fx::new();
    fx.enforce('a', false, true);
    fx.events.drain();
    let out = fx.send_a(&a_to_b().udp(5000, 53).build());
    fx.expect_drop(&out, DROP_POLICY, "A's egress default deny");
    // expect_drop drained the events: send again and look at them whole.
    fx.send_a(&a_to_b().udp(5000, 53).build());
    let evs = fx.events.drain();
    let v = of_kind(&evs, EVENT_POLICY_VERDICT);
    assert_eq!(
        (v[0].verdict, v[0].subtype, v[0].cookie, v[0].direction),
        (VERDICT_DENY, POLICY_MATCH_NONE, 0, DIR_EGRESS)
    );
    let d = of_kind(&evs, EVENT_DROP);
    assert_eq!(
        (d[0].subtype, d[0].direction, d[0].ep_id),
        (DROP_POLICY, DIR_EGRESS, EP_A)
    );
}

#[test]
fn aggregation_thins_established_traces_but_never_drops_or_denials() {
    let mut fx = Fx::new();
    let syn = a_to_b().tcp(40000, 80, SYN).build();
    let syn_ack = b_to_a().tcp(80, 40000, SYN | ACK).build();
    let ack = a_to_b().tcp(40000, 80, ACK).build();
    let data = a_to_b().tcp(40000, 80, PSH | ACK).payload(b"GET /").build();
    let data_back = b_to_a().tcp(80, 40000, PSH | ACK).payload(b"200").build();
    let fin = a_to_b().tcp(40000, 80, FIN | ACK).build();

    // Low: no from-endpoint, a to-endpoint per packet.
    set(&mut fx, Aggregation::Low, false, false);
    fx.events.drain();
    for p in [&syn, &ack, &data, &data] {
        fx.send_a(p);
    }
    let evs = fx.events.drain();
    assert_eq!(
        points(&evs),
        [
            (OBS_TO_ENDPOINT, CT_NEW),
            (OBS_TO_ENDPOINT, CT_ESTABLISHED),
            (OBS_TO_ENDPOINT, CT_ESTABLISHED),
            (OBS_TO_ENDPOINT, CT_ESTABLISHED)
        ]
    );

    // Medium and maximum: the SYN (new), the SYN-ACK (the reply
    // direction's first packet) and the FIN; never the ACK-only or data
    // segments in between (the interval of medium is 5 s, far away).
    for level in [Aggregation::Medium, Aggregation::Maximum] {
        let mut fx = Fx::new();
        set(&mut fx, level, false, false);
        fx.events.drain();
        let mut seen = Vec::new();
        for (p, from_a) in [
            (&syn, true),
            (&syn_ack, false),
            (&ack, true),
            (&data, true),
            (&data_back, false),
            (&data, true),
            (&data_back, false),
            (&fin, true),
            (&data, true),
        ] {
            if from_a {
                fx.send_a(p);
            } else {
                fx.send_b(p);
            }
            seen.push(points(&fx.events.drain()));
        }
        assert_eq!(
            seen,
            [
                vec![(OBS_TO_ENDPOINT, CT_NEW)],
                vec![(OBS_TO_ENDPOINT, CT_REPLY)],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![(OBS_TO_ENDPOINT, CT_ESTABLISHED)],
                vec![],
            ],
            "{level}"
        );

        // UDP: the request's first packet and the reply direction's first.
        let q = a_to_b().udp(5353, 53).build();
        let r = b_to_a().udp(53, 5353).build();
        let mut seen = Vec::new();
        for (p, from_a) in [(&q, true), (&r, false), (&q, true), (&r, false)] {
            if from_a {
                fx.send_a(p);
            } else {
                fx.send_b(p);
            }
            seen.push(points(&fx.events.drain()).len());
        }
        assert_eq!(seen, [1, 1, 0, 0], "UDP at {level}");

        // Drops and denials are never aggregated: a spoofed packet and a
        // denied flow, many times.
        fx.enforce('b', true, false);
        for _ in 0..5 {
            fx.send_a(&spoofed());
            fx.send_a(&a_to_b().tcp(40100, 22, SYN).build());
        }
        let evs = fx.events.drain();
        let drops = of_kind(&evs, EVENT_DROP);
        assert_eq!(drops.len(), 10, "every drop at {level}");
        assert_eq!(
            drops
                .iter()
                .filter(|d| d.subtype == DROP_INVALID_SIP)
                .count(),
            5
        );
        let denials = of_kind(&evs, EVENT_POLICY_VERDICT);
        assert_eq!(denials.len(), 5, "every denial at {level}");
        assert!(denials.iter().all(|v| v.verdict == VERDICT_DENY));
    }
}

#[test]
fn debug_messages_and_captures_are_opt_in() {
    let mut fx = Fx::new();
    set(&mut fx, Aggregation::Medium, false, false);
    fx.events.drain();
    fx.send_a(&a_to_b().tcp(40000, 80, SYN).build());
    let evs = fx.events.drain();
    assert!(
        of_kind(&evs, EVENT_DEBUG).is_empty() && of_kind(&evs, EVENT_CAPTURE).is_empty(),
        "off by default: {evs:?}"
    );

    set(&mut fx, Aggregation::Medium, true, true);
    fx.send_a(&a_to_b().tcp(40001, 80, SYN).build());
    let evs = fx.events.drain();
    let dbg: Vec<(u8, u32, u32)> = of_kind(&evs, EVENT_DEBUG)
        .iter()
        .map(|e| (e.subtype, e.arg1, e.arg2))
        .collect();
    assert_eq!(
        dbg,
        [
            (DBG_CT_VERDICT, u32::from(CT_NEW), 0),
            (DBG_LOCAL_DELIVERY, u32::from(EP_B), ID_A)
        ],
        "seed 002's \"Attempting local delivery for container id … from seclabel …\""
    );
    assert!(
        of_kind(&evs, EVENT_DEBUG).iter().all(|e| e.cap_len == 0),
        "debug carries no packet"
    );
    let cap = of_kind(&evs, EVENT_CAPTURE);
    assert_eq!(cap.len(), 1);
    assert_eq!(
        (cap[0].subtype, cap[0].arg1, cap[0].ep_id),
        (CAPTURE_DELIVERY, fx.b.ifindex, EP_A)
    );
    let pkt = pilus_packet::parse(cap[0].packet()).unwrap();
    assert_eq!(
        (pkt.dst_mac, pkt.src_mac),
        (MAC_B, NODE_MAC_B),
        "the capture is the packet as delivered"
    );
    // Established packets at medium: no trace, but debug and capture are
    // not aggregated.
    fx.send_a(&a_to_b().tcp(40001, 80, ACK).build());
    let evs = fx.events.drain();
    assert!(of_kind(&evs, EVENT_TRACE).is_empty());
    assert_eq!(of_kind(&evs, EVENT_CAPTURE).len(), 1);
    assert_eq!(of_kind(&evs, EVENT_DEBUG).len(), 2);
    // To the stack.
    fx.send_a(
        &PacketBuilder::new(MAC_A, NODE_MAC_A)
            .ipv4(IP_A, REMOTE_DST)
            .udp(1, 2)
            .build(),
    );
    let evs = fx.events.drain();
    assert!(of_kind(&evs, EVENT_DEBUG)
        .iter()
        .any(|e| (e.subtype, e.arg1) == (DBG_TO_STACK, 0)));
    assert_eq!(
        of_kind(&evs, EVENT_CAPTURE)[0].arg1,
        0,
        "delivered to the stack"
    );
}

#[test]
fn a_full_ring_counts_each_lost_event_on_its_cpu() {
    let mut fx = Fx::new();
    set(&mut fx, Aggregation::None, false, false);
    fx.events.drain();
    let before = totals(&fx.dp.event_stats().unwrap());
    // 20,000 runs of one packet, two traces each (from-endpoint and
    // to-endpoint), and nobody reading: the 1 MiB ring (~5,400 records)
    // fills and the rest is lost, and counted.
    const RUNS: u32 = 20_000;
    let pkt = a_to_b().udp(5000, 53).build();
    fx.ns
        .within(|| {
            fx.dp
                .test_run(Program::FromContainer, fx.a.ifindex, &pkt, RUNS)
        })
        .unwrap()
        .unwrap();
    let stats = fx.dp.event_stats().unwrap();
    let after = totals(&stats);
    let (submitted, lost) = (after.submitted - before.submitted, after.lost - before.lost);
    assert_eq!(
        submitted + lost,
        2 * u64::from(RUNS),
        "every event is submitted or counted lost"
    );
    assert!(
        lost > 0 && submitted > 0,
        "submitted {submitted}, lost {lost}"
    );
    // The test run ran on one CPU: the loss is counted there.
    assert_eq!(
        stats.iter().filter(|s| s.lost > 0).count(),
        1,
        "per CPU: {stats:?}"
    );
    // The reader sees the same counters, and what was submitted.
    assert_eq!(totals(&fx.events.stats().unwrap()), after);
    let mut read = 0u64;
    loop {
        let n = fx.events.drain().len();
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    assert_eq!(read, submitted);
}

#[test]
fn trace_events_compiled_out_leave_drops_and_denials() {
    let mut fx = Fx::with_config(|c| c.trace_events = false);
    set(&mut fx, Aggregation::None, true, true);
    fx.events.drain();
    fx.enforce('b', true, false);
    b_on_80_from_a(&mut fx, false, 3);
    let out = fx.send_a(&a_to_b().tcp(40000, 80, SYN).build());
    assert_eq!(out.verdict, TC_ACT_REDIRECT, "{}", "allowed");
    let out = fx.send_a(&a_to_b().tcp(40000, 81, SYN).build());
    assert_eq!(out.verdict, TC_ACT_SHOT);
    let evs = fx.events.drain();
    let kinds: Vec<(u8, u8)> = evs.iter().map(|e| (e.kind, e.verdict)).collect();
    assert_eq!(
        kinds,
        [(EVENT_POLICY_VERDICT, VERDICT_DENY), (EVENT_DROP, 0)],
        "only the denial and its drop"
    );
}
