//! Regression: `EventReader` on a `pilus_events` ring buffer reused from a
//! pin whose size is not the one the object defines (a pin left by an older
//! build, or one made by hand). aya 0.14 sized the reader's mmap and offset
//! mask from the object's `max_entries`, not from the map it reused: a
//! smaller pinned ring failed to map (EINVAL), a larger one was read at wrong
//! offsets once the producer passed the object's size.
//!
//! Needs root; fails (never skips) without it. Guards remove the namespace
//! and the pins, also when an assertion fails.

use pilus_abi::consts::{DROP_UNKNOWN_L3, EVENT_DROP};
use pilus_datapath::{Datapath, EventReader, LoadOptions, NodeConfig, PodCidr, Program};
use pilus_netns::NetNs;
use pilus_packet::PacketBuilder;
use std::{ffi::CString, net::Ipv4Addr, os::unix::ffi::OsStrExt, path::PathBuf};

/// Removes the test's bpffs pin directory on drop.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> libc::c_long {
    // SAFETY: bpf(2) reads (and for some commands writes) `attr`, a zeroed
    // buffer of the size passed; the kernel accepts a larger attr whose
    // unknown tail is zero.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

/// Creates a ring buffer of `bytes` and pins it at `path`, as an earlier
/// load with another `max_entries` would have left it.
fn pin_ring(path: &std::path::Path, bytes: u32) {
    let mut attr = [0u8; 128];
    // union bpf_attr, BPF_MAP_CREATE: map_type, key_size, value_size,
    // max_entries (u32 each).
    attr[0..4].copy_from_slice(&BPF_MAP_TYPE_RINGBUF.to_ne_bytes());
    attr[12..16].copy_from_slice(&bytes.to_ne_bytes());
    let fd = bpf(BPF_MAP_CREATE, &mut attr);
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE ringbuf: {}",
        std::io::Error::last_os_error()
    );
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut attr = [0u8; 128];
    // BPF_OBJ_PIN: pathname (u64), bpf_fd (u32).
    attr[0..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    let rc = bpf(BPF_OBJ_PIN, &mut attr);
    let err = std::io::Error::last_os_error();
    // SAFETY: our own fd, closed once; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
    assert_eq!(rc, 0, "BPF_OBJ_PIN {}: {err}", path.display());
}

/// Loads the datapath over a pinned ring of `ring_bytes`, then runs `rounds`
/// of `per_round` drops, each round with its own packet, and reads them back.
fn read_through_a_pinned_ring(
    ns: &NetNs,
    ifindex: u32,
    ring_bytes: u32,
    rounds: u16,
    per_round: u32,
) {
    let what = format!("{} KiB pinned ring", ring_bytes >> 10);
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/pilus-ringpin-{}-{}",
        std::process::id(),
        ring_bytes
    )));
    std::fs::create_dir_all(&pins.0).expect("pin directory");
    pin_ring(&pins.0.join("pilus_events"), ring_bytes);

    let mut dp = Datapath::load(&LoadOptions {
        node: NodeConfig {
            router_ip4: Ipv4Addr::new(198, 18, 0, 1),
            pod_cidr: PodCidr::new(Ipv4Addr::new(198, 18, 0, 0), 16).unwrap(),
            ..Default::default()
        },
        pin_dir: Some(pins.0.clone()),
        ..Default::default()
    })
    .expect("load datapath from the pins");
    let mut events =
        EventReader::new(&mut dp).unwrap_or_else(|e| panic!("{what}: event reader: {e:?}"));

    for round in 0..rounds {
        // An unknown ethertype, which from_container drops with an event;
        // the UDP port tells the rounds apart, so a record read at a stale
        // offset shows.
        let mut frame = PacketBuilder::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(Ipv4Addr::new(198, 18, 1, 10), Ipv4Addr::new(198, 18, 1, 20))
            .udp(1000 + round, 2000)
            .build();
        frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        let out = ns
            .within(|| dp.test_run(Program::FromContainer, ifindex, &frame, per_round))
            .expect("enter namespace")
            .expect("test run");
        assert_eq!(out.verdict, pilus_datapath::testrun::TC_ACT_SHOT);
        let got = events.drain();
        assert_eq!(
            got.len(),
            per_round as usize,
            "{what}, round {round}: events read"
        );
        for e in &got {
            assert_eq!(
                (e.kind, e.subtype, e.ifindex),
                (EVENT_DROP, DROP_UNKNOWN_L3, ifindex),
                "{what}, round {round}"
            );
            assert_eq!(
                e.packet(),
                &frame[..],
                "{what}, round {round}: captured bytes"
            );
        }
    }
}

#[test]
fn events_are_read_from_a_pinned_ring_of_another_size() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the ring-buffer pin test needs root (CAP_BPF, CAP_NET_ADMIN): run it as root"
    );
    pilus_netns::remove_stale("pe2").expect("remove stale namespaces");
    let ns = NetNs::new("pe2").expect("test namespace");
    ns.ip(&["link", "add", "lxcr", "type", "veth", "peer", "name", "pr"])
        .expect("veth");
    let ifindex = ns.ifindex("lxcr").expect("ifindex");
    // bpf/lib/maps.h says 1 MiB. Smaller: four rounds of 300 records (168
    // bytes each) wrap the 64 KiB ring three times.
    read_through_a_pinned_ring(&ns, ifindex, 64 << 10, 4, 300);
    // Larger: three rounds of 3000 take the producer past 1 MiB, where a
    // mask made from the object's size would point back into round one.
    read_through_a_pinned_ring(&ns, ifindex, 4 << 20, 3, 3000);
}
