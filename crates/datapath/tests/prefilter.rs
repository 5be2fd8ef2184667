//! Tier 2: the XDP prefilter (bpf/bpf_xdp.c) on crafted frames through
//! BPF_PROG_TEST_RUN — a listed source is dropped and counted three ways
//! (its entry, the metrics slot, a drop event), everything else passes;
//! and the deny list changes all or nothing (issue 11).

mod common;
use common::*;
use ipnet::Ipv4Net;
use pilus_abi::consts::*;
use pilus_datapath::{Prefilter, PrefilterError};
use pilus_packet::{tcp_flags::SYN, PacketBuilder};
use std::net::Ipv4Addr;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// A frame from a sender outside the cluster to pod B.
fn from(src: Ipv4Addr) -> Vec<u8> {
    PacketBuilder::new([0x02, 0, 0, 0, 0, 0x99], NODE_MAC_B)
        .ipv4(src, IP_B)
        .tcp(40000, 80, SYN)
        .build()
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn cidrs(p: &Prefilter) -> Vec<String> {
    p.list()
        .unwrap()
        .iter()
        .map(|e| e.cidr.to_string())
        .collect()
}

#[test]
fn a_listed_source_is_dropped_and_counted_everything_else_passes() {
    let mut fx = Fx::new();
    let p = Prefilter::of(&fx.dp).expect("the prefilter's map");
    let outside = Ipv4Addr::new(198, 19, 7, 7);
    let frame = from(outside);
    assert_eq!(
        fx.dp.test_run_prefilter(&frame).unwrap(),
        XDP_PASS,
        "empty list"
    );

    p.add(&[net("198.19.7.0/24"), net("198.19.200.1/32")])
        .unwrap();
    assert_eq!(cidrs(&p), ["198.19.7.0/24", "198.19.200.1/32"]);
    assert_eq!(
        fx.dp.test_run_prefilter(&frame).unwrap(),
        XDP_DROP,
        "listed /24"
    );
    // Counted three ways: the entry, the metrics slot, a drop event.
    let e = &p.list().unwrap()[0];
    assert_eq!((e.packets, e.bytes), (1, frame.len() as u64));
    assert_eq!(p.list().unwrap()[1].packets, 0);
    assert_eq!(fx.dp.metric(DROP_PREFILTER, DIR_INGRESS).unwrap(), 1);
    let drops = fx.drops();
    assert_eq!(drops.len(), 1, "{drops:?}");
    let d = &drops[0];
    assert_eq!(
        (d.subtype, d.obs_point, d.direction, d.src_identity),
        (DROP_PREFILTER, OBS_FROM_NETWORK, DIR_INGRESS, ID_REMOTE),
        "the source's identity is the ipcache's (the fixture names 198.19.0.0/16)"
    );
    assert_eq!(d.orig_len as usize, frame.len());
    assert_eq!(
        &d.data[26..30],
        &outside.octets(),
        "the captured frame's source"
    );

    // Not listed, not IPv4, too short to judge: passed to the stack.
    for (what, f) in [
        ("another source", from(Ipv4Addr::new(198, 19, 8, 1))),
        ("the /32's neighbour", from(Ipv4Addr::new(198, 19, 200, 2))),
        (
            "ARP",
            PacketBuilder::new([0x02, 0, 0, 0, 0, 0x99], NODE_MAC_B)
                .ethertype(0x0806)
                .payload(&[0; 28])
                .build(),
        ),
        ("a truncated IPv4 header", frame[..14 + 10].to_vec()),
    ] {
        assert_eq!(fx.dp.test_run_prefilter(&f).unwrap(), XDP_PASS, "{what}");
    }
    assert!(fx.drops().is_empty());
    assert_eq!(fx.dp.metric(DROP_PREFILTER, DIR_INGRESS).unwrap(), 1);

    // Deleted: the sender passes again.
    p.remove(&[net("198.19.7.0/24")]).unwrap();
    assert_eq!(
        fx.dp.test_run_prefilter(&frame).unwrap(),
        XDP_PASS,
        "deleted"
    );
    assert_eq!(cidrs(&p), ["198.19.200.1/32"]);
}

#[test]
fn a_change_that_cannot_be_made_whole_changes_nothing() {
    let fx = Fx::new();
    let p = Prefilter::of(&fx.dp).expect("the prefilter's map");
    p.add(&[net("198.19.1.0/24")]).unwrap();
    let refused = [
        (
            p.add(&[net("198.19.2.0/24"), net("198.19.1.0/24")]),
            "already",
        ),
        (
            p.add(&[net("198.19.3.0/24"), net("198.19.3.0/24")]),
            "twice",
        ),
        (p.add(&[]), "no CIDR"),
        (p.remove(&[]), "no CIDR"),
        (
            p.remove(&[net("198.19.1.0/24"), net("198.19.9.0/24")]),
            "not on",
        ),
    ];
    for (r, want) in refused {
        let e = r.expect_err(want);
        assert!(e.to_string().contains(want), "{e}");
        assert!(!matches!(e, PrefilterError::Datapath(_)), "{e}");
        assert_eq!(cidrs(&p), ["198.19.1.0/24"], "after {e}");
    }
    let frame = from(Ipv4Addr::new(198, 19, 2, 2));
    assert_eq!(
        fx.dp.test_run_prefilter(&frame).unwrap(),
        XDP_PASS,
        "the refused add wrote nothing"
    );
}
