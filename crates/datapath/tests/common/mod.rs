//! Shared fixture of the BPF_PROG_TEST_RUN tests: a datapath with private
//! (unpinned) maps, two endpoints A and B on real veth interfaces in a test
//! namespace (the kernel resolves the test run's ifindex there), and helpers
//! to run a packet and read back verdicts, drop events and counters.
//!
//! Needs root. Without it the fixture panics: a test that cannot run fails.

#![allow(dead_code)]

use pilus_abi::{
    consts::{EP_F_EGRESS_ENFORCED, EP_F_INGRESS_ENFORCED, EVENT_DROP},
    Be32, EndpointInfo, Event, IpcacheValue,
};
use pilus_datapath::{
    testrun::{verdict_name, Outcome, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    Datapath, EventReader, LoadOptions, NodeConfig, PodCidr, PolicyEntry, Program,
};
use pilus_netns::NetNs;
use pilus_packet::{Mac, PacketBuilder};
use std::net::Ipv4Addr;

pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 20);
/// An address the ipcache knows as a remote CIDR identity (not local).
pub const IP_REMOTE: Ipv4Addr = Ipv4Addr::new(198, 19, 5, 5);
pub const ID_A: u32 = 300;
pub const ID_B: u32 = 400;
pub const ID_REMOTE: u32 = 16_777_217;
pub const EP_A: u16 = 10;
pub const EP_B: u16 = 20;
pub const MAC_A: Mac = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: Mac = [0x02, 0, 0, 0, 0, 0x0b];
pub const NODE_MAC_A: Mac = [0x06, 0, 0, 0, 0, 0x0a];
pub const NODE_MAC_B: Mac = [0x06, 0, 0, 0, 0, 0x0b];

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const INGRESS: u8 = 0;
pub const EGRESS: u8 = 1;

pub struct Fx {
    pub dp: Datapath,
    pub events: EventReader,
    pub a: EndpointInfo,
    pub b: EndpointInfo,
    /// An interface with no endpoint.
    pub stray_ifindex: u32,
    // Dropped last: the namespace (and its veths) outlive the datapath's use.
    pub ns: NetNs,
}

impl Fx {
    pub fn new() -> Fx {
        Self::with_config(|_| {})
    }

    /// A fixture whose node configuration `f` adjusts first.
    pub fn with_config(f: impl FnOnce(&mut NodeConfig)) -> Fx {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the BPF_PROG_TEST_RUN tests need root (CAP_BPF, CAP_NET_ADMIN): run them as root"
        );
        // A run killed by a signal never ran its guards: sweep what it left.
        pilus_netns::remove_stale("pt2").expect("remove stale namespaces");
        let ns = NetNs::new("pt2").expect("create test namespace");
        for (host, peer) in [("lxca", "pa"), ("lxcb", "pb"), ("lxcx", "px")] {
            ns.ip(&["link", "add", host, "type", "veth", "peer", "name", peer])
                .expect("veth");
        }
        let ifindex = |n| ns.ifindex(n).expect("ifindex");
        let mut node = NodeConfig {
            router_ip4: ROUTER,
            pod_cidr: PodCidr::new(Ipv4Addr::new(198, 18, 0, 0), 16).expect("pod CIDR"),
            ..Default::default()
        };
        f(&mut node);
        let mut dp = Datapath::load(&LoadOptions {
            node,
            pin_dir: None,
            ..Default::default()
        })
        .expect("load datapath");
        let events = EventReader::new(&mut dp).expect("event reader");
        let ep = |ifindex, ip, id, ep_id, mac, node_mac| EndpointInfo {
            ifindex,
            sec_identity: id,
            ip4: Be32::from(ip),
            ep_id,
            flags: 0,
            mac,
            node_mac,
            _pad: 0,
        };
        let a = ep(ifindex("lxca"), IP_A, ID_A, EP_A, MAC_A, NODE_MAC_A);
        let b = ep(ifindex("lxcb"), IP_B, ID_B, EP_B, MAC_B, NODE_MAC_B);
        let stray_ifindex = ifindex("lxcx");
        let mut fx = Fx {
            dp,
            events,
            a,
            b,
            stray_ifindex,
            ns,
        };
        fx.dp.upsert_endpoint(&fx.a).unwrap();
        fx.dp.upsert_endpoint(&fx.b).unwrap();
        for (ip, len, id) in [
            (IP_A, 32, ID_A),
            (IP_B, 32, ID_B),
            (ROUTER, 32, 1),
            (IP_REMOTE, 16, ID_REMOTE),
        ] {
            let v = IpcacheValue {
                sec_identity: id,
                ..Default::default()
            };
            fx.dp.upsert_ipcache(ip, len, &v).unwrap();
        }
        fx
    }

    /// Sets which directions a policy selects for A or B.
    pub fn enforce(&mut self, which: char, ingress: bool, egress: bool) {
        let mut flags = 0;
        if ingress {
            flags |= EP_F_INGRESS_ENFORCED;
        }
        if egress {
            flags |= EP_F_EGRESS_ENFORCED;
        }
        let ep = if which == 'a' {
            &mut self.a
        } else {
            &mut self.b
        };
        ep.flags = flags;
        let ep = *ep;
        self.dp.upsert_endpoint(&ep).unwrap();
    }

    pub fn allow(
        &mut self,
        ep_id: u16,
        dir: u8,
        identity: u32,
        proto: Option<u8>,
        ports: Option<(u16, u16)>,
    ) {
        self.dp
            .insert_policy(&entry(ep_id, dir, identity, proto, ports, false))
            .unwrap();
    }

    pub fn run(&self, p: Program, ifindex: u32, pkt: &[u8]) -> Outcome {
        self.ns
            .within(|| self.dp.test_run(p, ifindex, pkt, 1))
            .expect("enter ns")
            .expect("test run")
    }

    /// Runs from_container on A's veth; Err when the kernel refuses the input.
    pub fn try_send_a(&self, pkt: &[u8]) -> Result<Outcome, pilus_datapath::Error> {
        self.ns
            .within(|| {
                self.dp
                    .test_run(Program::FromContainer, self.a.ifindex, pkt, 1)
            })
            .expect("enter ns")
    }

    /// A packet leaving pod A (or B), through from_container on its veth.
    pub fn send_a(&self, pkt: &[u8]) -> Outcome {
        self.run(Program::FromContainer, self.a.ifindex, pkt)
    }
    pub fn send_b(&self, pkt: &[u8]) -> Outcome {
        self.run(Program::FromContainer, self.b.ifindex, pkt)
    }
    /// A packet the stack routes to pod B, through to_container.
    pub fn to_b(&self, pkt: &[u8]) -> Outcome {
        self.run(Program::ToContainer, self.b.ifindex, pkt)
    }

    /// Drop events since the last call.
    pub fn drops(&mut self) -> Vec<Event> {
        self.events
            .drain()
            .into_iter()
            .filter(|e| e.kind == EVENT_DROP)
            .collect()
    }

    /// Asserts a drop with `reason`, its event, and nothing else reported.
    pub fn expect_drop(&mut self, out: &Outcome, reason: u8, what: &str) {
        assert_eq!(
            out.verdict,
            TC_ACT_SHOT,
            "{what}: want TC_ACT_SHOT ({}), got {}",
            name(reason),
            verdict_name(out.verdict)
        );
        let drops = self.drops();
        assert_eq!(drops.len(), 1, "{what}: want one drop event, got {drops:?}");
        assert_eq!(
            drops[0].subtype,
            reason,
            "{what}: drop reason {} ({}), want {} ({})",
            drops[0].subtype,
            name(drops[0].subtype),
            reason,
            name(reason)
        );
    }

    pub fn expect_pass(&mut self, out: &Outcome, verdict: i32, what: &str) {
        let drops = self.drops();
        assert_eq!(
            out.verdict,
            verdict,
            "{what}: want {}, got {} (drops: {:?})",
            verdict_name(verdict),
            verdict_name(out.verdict),
            drops.iter().map(|d| name(d.subtype)).collect::<Vec<_>>()
        );
        assert!(drops.is_empty(), "{what}: unexpected drop events {drops:?}");
    }

    pub fn expect_redirect(&mut self, out: &Outcome, what: &str) {
        self.expect_pass(out, TC_ACT_REDIRECT, what)
    }
    pub fn expect_ok(&mut self, out: &Outcome, what: &str) {
        self.expect_pass(out, TC_ACT_OK, what)
    }
}

pub fn entry(
    ep_id: u16,
    dir: u8,
    identity: u32,
    proto: Option<u8>,
    ports: Option<(u16, u16)>,
    deny: bool,
) -> PolicyEntry {
    PolicyEntry {
        ep_id,
        direction: dir,
        identity,
        protocol: proto,
        ports,
        deny,
        cookie: 0,
    }
}

pub fn name(code: u8) -> &'static str {
    pilus_abi::DropReason::from_code(code).map_or("?", |r| r.name)
}

/// A UDP datagram from A's veth with a source address that is not A's.
pub fn spoofed() -> Vec<u8> {
    PacketBuilder::new(MAC_A, NODE_MAC_A)
        .ipv4("198.18.1.99".parse().unwrap(), IP_B)
        .udp(1, 2)
        .build()
}

/// A → B over the gateway: what pod A puts on its eth0.
pub fn a_to_b() -> PacketBuilder {
    PacketBuilder::new(MAC_A, NODE_MAC_A).ipv4(IP_A, IP_B)
}
pub fn b_to_a() -> PacketBuilder {
    PacketBuilder::new(MAC_B, NODE_MAC_B).ipv4(IP_B, IP_A)
}

/// A translated frame's IPv4 checksum and its TCP, UDP or ICMP checksum
/// are right (a frame without a transport header fails).
pub fn checksums_ok(frame: &[u8], what: &str) {
    use pilus_packet::{parse, L4Info};
    let p = parse(frame).unwrap_or_else(|e| panic!("{what}: unparsable: {e:?}"));
    assert!(
        p.ipv4.as_ref().unwrap().checksum_ok,
        "{what}: IPv4 checksum"
    );
    match p.l4 {
        Some(L4Info::Tcp { checksum_ok, .. })
        | Some(L4Info::Udp { checksum_ok, .. })
        | Some(L4Info::Icmp { checksum_ok, .. }) => assert!(checksum_ok, "{what}: L4 checksum"),
        None => panic!("{what}: no L4"),
    }
}
