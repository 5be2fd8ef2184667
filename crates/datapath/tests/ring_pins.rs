//! Regression: a `pilus_events` ring buffer pinned with a size that is not
//! the one the object defines (a pin left by an older build, or one made by
//! hand). aya 0.14 reused it silently and sized `RingBuf`'s mmap and offset
//! mask from the object's `max_entries`, not from the map it reused: a
//! smaller pinned ring failed to map (EINVAL), a larger one was read at wrong
//! offsets once the producer passed the object's size.
//!
//! Since pins are checked (`pilus_datapath::pins`), such a ring is refused
//! by `Datapath::load` before anything is created or written: the first
//! test asserts the refusal. The datapath's programs can no longer write
//! into a ring of another size, so `EventReader` cannot meet one either; it
//! still sizes itself from the kernel's description of the map in use, and
//! the second test keeps what remains of the old regression: a ring reused
//! from a pin, with records the previous load left in it, read across its
//! wrap-around.
//!
//! Needs root; fails (never skips) without it. Guards remove the namespace
//! and the pins, also when an assertion fails.

use aya::maps::{MapData, MapInfo};
use pilus_abi::consts::{DROP_UNKNOWN_L3, EVENT_DROP};
use pilus_datapath::{
    Datapath, Error, EventReader, LoadOptions, MapDef, NodeConfig, PinMismatch, PodCidr, Program,
};
use pilus_netns::NetNs;
use pilus_packet::PacketBuilder;
use std::{net::Ipv4Addr, path::PathBuf};

/// Removes the test's bpffs pin directory on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new(tag: &str) -> PinDir {
        let dir = PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/pilus-ringpin-{}-{tag}",
            std::process::id()
        )));
        let _ = std::fs::remove_dir_all(&dir.0);
        dir
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

const BPF_MAP_TYPE_RINGBUF: u32 = 27;
/// bpf/lib/maps.h's size of pilus_events.
const OBJECT_RING_BYTES: u32 = 1 << 20;

fn assert_root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the ring-buffer pin tests need root (CAP_BPF, CAP_NET_ADMIN): run them as root"
    );
}

fn options(pins: &PinDir) -> LoadOptions {
    LoadOptions {
        node: NodeConfig {
            router_ip4: Ipv4Addr::new(198, 18, 0, 1),
            pod_cidr: PodCidr::new(Ipv4Addr::new(198, 18, 0, 0), 16).unwrap(),
            ..Default::default()
        },
        pin_dir: Some(pins.0.clone()),
        ..Default::default()
    }
}

/// Replaces the pinned `pilus_events` with a ring buffer of `bytes`, as an
/// earlier build with another `max_entries` would have left it. Returns its
/// map id.
fn repin_ring(pins: &PinDir, bytes: u32) -> u32 {
    let path = pins.0.join("pilus_events");
    std::fs::remove_file(&path).expect("remove the pinned ring");
    let def = aya_obj::Map::new_from_params(BPF_MAP_TYPE_RINGBUF, 0, 0, bytes, 0);
    let ring = MapData::create(def, "pilus_events", None).expect("BPF_MAP_CREATE ringbuf");
    ring.pin(&path).expect("pin the ring");
    ring.info().expect("ring info").id()
}

/// An unknown ethertype, which from_container drops with an event; the UDP
/// source port tells the rounds apart, so a record read at a stale offset
/// shows.
fn frame(round: u16) -> Vec<u8> {
    let mut frame = PacketBuilder::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(Ipv4Addr::new(198, 18, 1, 10), Ipv4Addr::new(198, 18, 1, 20))
        .udp(1000 + round, 2000)
        .build();
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    frame
}

fn drop_frames(dp: &Datapath, ns: &NetNs, ifindex: u32, round: u16, n: u32) {
    let out = ns
        .within(|| dp.test_run(Program::FromContainer, ifindex, &frame(round), n))
        .expect("enter namespace")
        .expect("test run");
    assert_eq!(out.verdict, pilus_datapath::testrun::TC_ACT_SHOT);
}

fn assert_round(events: &mut EventReader, ifindex: u32, round: u16, n: u32) {
    let got = events.drain();
    assert_eq!(got.len(), n as usize, "round {round}: events read");
    for e in &got {
        assert_eq!(
            (e.kind, e.subtype, e.ifindex),
            (EVENT_DROP, DROP_UNKNOWN_L3, ifindex),
            "round {round}"
        );
        assert_eq!(
            e.packet(),
            &frame(round)[..],
            "round {round}: captured bytes"
        );
    }
}

#[test]
fn a_pinned_ring_of_another_size_is_refused() {
    assert_root();
    // Smaller and larger than the object's 1 MiB.
    for bytes in [64 << 10, 4 << 20] {
        let pins = PinDir::new(&format!("refuse{bytes}"));
        drop(Datapath::load(&options(&pins)).expect("fresh load"));
        let id = repin_ring(&pins, bytes);

        let err = match Datapath::load(&options(&pins)) {
            Ok(_) => panic!("a {bytes}-byte pinned ring was reused"),
            Err(e) => e,
        };
        let text = err.to_string();
        match &err {
            Error::IncompatiblePin {
                mismatch:
                    PinMismatch::Map {
                        map,
                        pinned,
                        expected,
                        ..
                    },
                ..
            } => {
                assert_eq!(map, "pilus_events", "{text}");
                let ring = |max_entries| MapDef {
                    map_type: BPF_MAP_TYPE_RINGBUF,
                    key_size: 0,
                    value_size: 0,
                    max_entries,
                    flags: 0,
                };
                assert_eq!(*pinned, ring(bytes), "{text}");
                assert_eq!(*expected, ring(OBJECT_RING_BYTES), "{text}");
            }
            other => panic!("expected a pilus_events mismatch, got {other:?}"),
        }
        for needle in [
            "pilus_events".to_string(),
            format!("RINGBUF key 0 value 0 max {bytes} flags 0x0"),
            format!("RINGBUF key 0 value 0 max {OBJECT_RING_BYTES} flags 0x0"),
        ] {
            assert!(text.contains(&needle), "{needle:?} not in: {text}");
        }
        // The hand-made ring is still the one pinned.
        let info = MapInfo::from_pin(pins.0.join("pilus_events")).expect("pinned ring");
        assert_eq!((info.id(), info.max_entries()), (id, bytes));
    }
}

#[test]
fn a_reused_ring_is_read_from_where_the_last_load_left_it() {
    assert_root();
    pilus_netns::remove_stale("pe2").expect("remove stale namespaces");
    let ns = NetNs::new("pe2").expect("test namespace");
    ns.ip(&["link", "add", "lxcr", "type", "veth", "peer", "name", "pr"])
        .expect("veth");
    let ifindex = ns.ifindex("lxcr").expect("ifindex");
    let pins = PinDir::new("reuse");

    // The first load drops 300 packets that nobody reads: they stay in
    // the pinned ring, as they do while an agent restarts.
    {
        let dp = Datapath::load(&options(&pins)).expect("fresh load");
        drop_frames(&dp, &ns, ifindex, 0, 300);
    }
    let mut dp = Datapath::load(&options(&pins)).expect("load reusing the pins");
    let mut events = EventReader::new(&mut dp).expect("event reader");
    assert_round(&mut events, ifindex, 0, 300);
    // Three rounds of 3000 records (168 bytes each) take the producer
    // past the ring's 1 MiB: the reader follows it around the wrap.
    for round in 1..4 {
        drop_frames(&dp, &ns, ifindex, round, 3000);
        assert_round(&mut events, ifindex, round, 3000);
    }
}
