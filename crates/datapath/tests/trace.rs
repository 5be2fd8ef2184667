//! Tier 2: `pilus trace`'s private copy of the pod programs (issue 12).
//! The copy decides as the live datapath does (it reads the live endpoint,
//! ipcache and policy maps), reports every step on its own ring, and
//! leaves the live conntrack, counters and event ring untouched.

mod common;
use common::*;
use pilus_abi::consts::*;
use pilus_abi::CtKey4;
use pilus_datapath::{
    testrun::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    TraceRun, Tracer,
};
use pilus_packet::{
    tcp_flags::{ACK, SYN},
    PacketBuilder,
};
use std::time::Instant;

fn syn(fx: &Fx, dst: std::net::Ipv4Addr, dport: u16) -> Vec<u8> {
    PacketBuilder::new(MAC_A, fx.a.node_mac)
        .ipv4(IP_A, dst)
        .tcp(40_000, dport, SYN)
        .build()
}

fn trace(fx: &Fx, t: &mut Tracer, pkt: &[u8]) -> TraceRun {
    fx.ns
        .within(|| t.from_container(fx.a.ifindex, pkt, &[]))
        .expect("enter ns")
        .expect("trace run")
}

fn kinds(r: &TraceRun) -> Vec<(u8, u8)> {
    r.events.iter().map(|e| (e.kind, e.obs_point)).collect()
}

#[test]
fn trace_copy_decides_like_the_datapath_and_changes_nothing_live() {
    let mut fx = Fx::new();
    fx.enforce('b', true, false);
    fx.allow(EP_B, INGRESS, ID_A, Some(TCP), Some((80, 80)));

    let ct = fx.dp.conntrack().unwrap();
    let metrics = fx.dp.metrics().unwrap();
    let stats = fx.dp.event_stats().unwrap();

    let started = Instant::now();
    let mut t = fx.dp.tracer_setup().unwrap().load().unwrap();
    eprintln!(
        "trace copy loaded in {:?} (verifier and map creation: {:?})",
        started.elapsed(),
        t.load_time()
    );

    // Allowed: delivered to B, B's ingress policy reported as allowed.
    let r = trace(&fx, &mut t, &syn(&fx, IP_B, 80));
    assert_eq!(r.verdict, TC_ACT_REDIRECT, "events: {:?}", kinds(&r));
    let verdict = r
        .events
        .iter()
        .find(|e| e.kind == EVENT_POLICY_VERDICT)
        .expect("a policy verdict");
    assert_eq!(
        (verdict.verdict, verdict.direction),
        (VERDICT_ALLOW, INGRESS)
    );
    assert!(
        r.events
            .iter()
            .any(|e| e.kind == EVENT_TRACE && e.obs_point == OBS_TO_ENDPOINT),
        "to-endpoint reported: {:?}",
        kinds(&r)
    );
    assert!(
        r.events
            .iter()
            .any(|e| e.kind == EVENT_DEBUG && e.subtype == DBG_CT_VERDICT),
        "debug events on in the copy: {:?}",
        kinds(&r)
    );

    // Denied: dropped by policy, the drop reported.
    let r = trace(&fx, &mut t, &syn(&fx, IP_B, 81));
    assert_eq!(r.verdict, TC_ACT_SHOT);
    let drop = r
        .events
        .iter()
        .find(|e| e.kind == EVENT_DROP)
        .expect("a drop event");
    assert_eq!(drop.subtype, DROP_POLICY, "{}", name(drop.subtype));

    // Not a local pod and no tunnel: to the stack.
    let r = trace(&fx, &mut t, &syn(&fx, IP_REMOTE, 443));
    assert_eq!(r.verdict, TC_ACT_OK);
    assert!(r
        .events
        .iter()
        .any(|e| e.kind == EVENT_TRACE && e.obs_point == OBS_TO_STACK));

    // The same SYN twice: each trace starts from an empty private
    // conntrack, so each is a new flow meeting policy.
    for _ in 0..2 {
        let r = trace(&fx, &mut t, &syn(&fx, IP_B, 80));
        assert!(r
            .events
            .iter()
            .any(|e| e.kind == EVENT_POLICY_VERDICT && e.ct_state == CT_NEW));
    }

    // Nothing live changed: conntrack, counters, the event ring and its
    // counters.
    assert_eq!(fx.dp.conntrack().unwrap(), ct, "live conntrack");
    assert_eq!(
        format!("{:?}", fx.dp.metrics().unwrap()),
        format!("{metrics:?}"),
        "live metrics"
    );
    assert_eq!(fx.dp.event_stats().unwrap(), stats, "live event counters");
    assert!(fx.events.drain().is_empty(), "nothing on the live ring");

    // The live datapath, given the same packet, does create state: the
    // comparison above could have failed.
    let out = fx.send_a(&syn(&fx, IP_B, 80));
    assert_eq!(out.verdict, TC_ACT_REDIRECT);
    let live = fx.dp.conntrack().unwrap();
    assert_ne!(live, ct, "the live run creates a flow");

    // A packet of that flow, traced with copies of its live entries: the
    // copy finds it established and skips policy; the live entry is not
    // touched (its counters would have grown).
    let keys: Vec<CtKey4> = live.iter().map(|(k, _)| *k).collect();
    let seed = fx.dp.conntrack_entries(&keys).unwrap();
    assert_eq!(seed.len(), live.len());
    let ack = PacketBuilder::new(MAC_A, fx.a.node_mac)
        .ipv4(IP_A, IP_B)
        .tcp(40_000, 80, ACK)
        .build();
    let r = fx
        .ns
        .within(|| t.from_container(fx.a.ifindex, &ack, &seed))
        .expect("enter ns")
        .expect("trace run");
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    assert!(
        r.events
            .iter()
            .any(|e| e.kind == EVENT_TRACE && e.ct_state == CT_ESTABLISHED),
        "{:?}",
        kinds(&r)
    );
    assert!(
        !r.events.iter().any(|e| e.kind == EVENT_POLICY_VERDICT),
        "an established flow skips policy"
    );
    assert_eq!(fx.dp.conntrack().unwrap(), live, "live entries untouched");
    // Asked for a tuple nobody uses, nothing is copied.
    let mut none = keys[0];
    none.sport = pilus_abi::Be16::new(1);
    assert!(fx.dp.conntrack_entries(&[none]).unwrap().is_empty());

    // No pins are left behind by the copy.
    let leftovers: Vec<_> = std::fs::read_dir("/sys/fs/bpf")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("pilus-private-{}-", std::process::id())))
        .collect();
    assert!(leftovers.is_empty(), "private pin dirs left: {leftovers:?}");
}
