//! Tier 3: real traffic. A node namespace and two pod namespaces joined to it
//! by veth pairs; the programs attached with TCX to the host-side veths; policy
//! written by the test; real TCP, UDP and ICMP from the pods' own stacks.
//!
//! The node has no address for the pods' gateway (198.18.0.1) and
//! ip_forward=0: pods only reach each other because the datapath answers the
//! gateway's ARP and delivers with bpf_redirect_peer.
//!
//! Needs root; fails (never skips) without it. Guards remove every namespace,
//! link and pin, also when an assertion fails.

use pilus_abi::{consts::*, Be32, EndpointInfo, IpcacheValue};
use pilus_datapath::{Datapath, EndpointLinks, LoadOptions, NodeConfig, PodCidr, PolicyEntry};
use pilus_netns::{probe, veth_pair, NetNs};
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 20);
const ID_A: u32 = 300;
const ID_B: u32 = 400;
const EP_A: u16 = 10;
const EP_B: u16 = 20;
const YES: Duration = Duration::from_secs(3);
const NO: Duration = Duration::from_millis(400);

/// Removes a test's bpffs pin directory on drop.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

struct Pod {
    ns: NetNs,
    ip: Ipv4Addr,
    ep: EndpointInfo,
}

/// Field order is drop order: servers and links go before the datapath, the
/// datapath before its pins, the namespaces last.
struct Node {
    _servers: Vec<probe::EchoServer>,
    links: Vec<EndpointLinks>,
    dp: Option<Datapath>,
    pins: PinDir,
    a: Pod,
    b: Pod,
    node: NetNs,
}

fn pod(node: &NetNs, host_if: &str, ip: Ipv4Addr, id: u32, ep_id: u16) -> Pod {
    let ns = NetNs::new("t3pod").expect("pod namespace");
    veth_pair(node, host_if, &ns, "eth0").expect("veth");
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
    ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])
        .unwrap();
    // As a CNI plugin configures a pod: the gateway is on-link, and default.
    ns.ip(&[
        "route",
        "add",
        &ROUTER.to_string(),
        "dev",
        "eth0",
        "scope",
        "link",
    ])
    .unwrap();
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        &ROUTER.to_string(),
        "dev",
        "eth0",
    ])
    .unwrap();
    let ep = EndpointInfo {
        ifindex: node.ifindex(host_if).unwrap(),
        sec_identity: id,
        ip4: Be32::from(ip),
        ep_id,
        flags: 0,
        mac: ns.mac("eth0").unwrap(),
        node_mac: node.mac(host_if).unwrap(),
        _pad: 0,
    };
    Pod { ns, ip, ep }
}

fn load(pins: &PinDir) -> Datapath {
    Datapath::load(&LoadOptions {
        node: NodeConfig {
            router_ip4: ROUTER,
            pod_cidr: PodCidr::new(Ipv4Addr::new(198, 18, 0, 0), 16).expect("pod CIDR"),
            ..Default::default()
        },
        pin_dir: Some(pins.0.clone()),
        ..Default::default()
    })
    .expect("load datapath")
}

impl Node {
    fn new() -> Node {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the real-traffic tests need root"
        );
        for prefix in ["t3node", "t3pod"] {
            pilus_netns::remove_stale(prefix).expect("remove stale namespaces");
        }
        let node = NetNs::new("t3node").expect("node namespace");
        node.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
        // The short-cut must not depend on the node forwarding.
        node.sysctl("net.ipv4.ip_forward", "0").unwrap();
        let a = pod(&node, "lxca", IP_A, ID_A, EP_A);
        let b = pod(&node, "lxcb", IP_B, ID_B, EP_B);
        let pins = PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/pilus-t3-{}-{}",
            std::process::id(),
            node.name()
        )));
        let mut dp = load(&pins);
        dp.upsert_endpoint(&a.ep).unwrap();
        dp.upsert_endpoint(&b.ep).unwrap();
        for (ip, id) in [(IP_A, ID_A), (IP_B, ID_B)] {
            dp.upsert_ipcache(
                ip,
                32,
                &IpcacheValue {
                    sec_identity: id,
                    ..Default::default()
                },
            )
            .unwrap();
        }
        let servers = vec![
            probe::EchoServer::start(&a.ns, &[80, 81]).unwrap(),
            probe::EchoServer::start(&b.ns, &[80, 81]).unwrap(),
        ];
        let mut n = Node {
            _servers: servers,
            links: Vec::new(),
            dp: Some(dp),
            pins,
            a,
            b,
            node,
        };
        n.attach();
        n
    }

    fn attach(&mut self) {
        let dp = self.dp.as_mut().unwrap();
        for ifname in ["lxca", "lxcb"] {
            let link = self
                .node
                .within(|| dp.attach_endpoint(ifname))
                .unwrap()
                .expect("attach");
            assert_eq!(link.mode, "tcx", "kernel 6.18 attaches with TCX");
            self.links.push(link);
        }
    }

    fn dp(&mut self) -> &mut Datapath {
        self.dp.as_mut().unwrap()
    }

    fn set_flags(&mut self, which: char, flags: u16) {
        let ep = if which == 'a' {
            &mut self.a.ep
        } else {
            &mut self.b.ep
        };
        ep.flags = flags;
        let ep = *ep;
        self.dp().upsert_endpoint(&ep).unwrap();
    }

    fn allow(
        &mut self,
        ep_id: u16,
        dir: u8,
        identity: u32,
        proto: Option<u8>,
        ports: Option<(u16, u16)>,
    ) {
        let e = PolicyEntry {
            ep_id,
            direction: dir,
            identity,
            protocol: proto,
            ports,
            deny: false,
            cookie: 0,
        };
        self.dp().insert_policy(&e).unwrap();
    }

    fn metric(&self, reason: u8, dir: u8) -> u64 {
        self.dp.as_ref().unwrap().metric(reason, dir).unwrap()
    }
}

fn tcp(from: &Pod, to: &Pod, port: u16, t: Duration) -> bool {
    probe::tcp(&from.ns, SocketAddrV4::new(to.ip, port), t).unwrap()
}
fn udp(from: &Pod, to: &Pod, port: u16, t: Duration) -> bool {
    probe::udp(&from.ns, SocketAddrV4::new(to.ip, port), t).unwrap()
}
fn ping(from: &Pod, to: &Pod, t: Duration) -> bool {
    probe::ping(&from.ns, to.ip, t).unwrap()
}

#[test]
fn pods_reach_each_other_only_as_policy_allows() {
    let mut n = Node::new();
    assert_eq!(
        n.node.sysctl_get("net.ipv4.ip_forward").unwrap().trim(),
        "0"
    );

    // Nothing selected: everything flows, through the datapath alone.
    assert!(ping(&n.a, &n.b, YES), "ping A->B, no policy");
    assert!(tcp(&n.a, &n.b, 80, YES), "TCP A->B:80, no policy");
    assert!(tcp(&n.b, &n.a, 81, YES), "TCP B->A:81, no policy");
    assert!(udp(&n.a, &n.b, 81, YES), "UDP A->B:81, no policy");
    // The gateway's MAC the pod learned is the host-side veth's: forged ARP.
    let neigh = n.a.ns.ip(&["neigh", "show", &ROUTER.to_string()]).unwrap();
    let mac =
        n.a.ep
            .node_mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
    assert!(
        neigh.contains(&mac),
        "pod A's neighbour entry for the gateway: {neigh}"
    );
    assert!(
        n.metric(METRIC_FORWARDED, DIR_EGRESS) > 0,
        "forwarded packets counted"
    );

    // B selected for ingress; only A on TCP 80 admitted.
    n.set_flags('b', EP_F_INGRESS_ENFORCED);
    n.allow(EP_B, DIR_INGRESS, ID_A, Some(6), Some((80, 80)));
    let drops_before = n.metric(DROP_POLICY, DIR_INGRESS);
    assert!(tcp(&n.a, &n.b, 80, YES), "TCP A->B:80 allowed");
    assert!(!tcp(&n.a, &n.b, 81, NO), "TCP A->B:81 denied");
    assert!(!udp(&n.a, &n.b, 80, NO), "UDP A->B:80 denied");
    assert!(!ping(&n.a, &n.b, NO), "ping A->B denied");
    assert!(
        n.metric(DROP_POLICY, DIR_INGRESS) > drops_before,
        "policy drops counted"
    );
    // B's own egress is unselected, so B still reaches A on any port.
    assert!(tcp(&n.b, &n.a, 81, YES), "TCP B->A:81 (A unselected)");

    // Widen: ICMP echo and a UDP port range.
    n.allow(EP_B, DIR_INGRESS, ID_A, Some(1), Some((8, 8)));
    n.allow(EP_B, DIR_INGRESS, ID_A, Some(17), Some((80, 81)));
    assert!(ping(&n.a, &n.b, YES), "ping A->B allowed by ICMP type 8");
    assert!(udp(&n.a, &n.b, 80, YES), "UDP A->B:80 in range");
    assert!(udp(&n.a, &n.b, 81, YES), "UDP A->B:81 in range");

    // B selected for egress with nothing allowed: B starts nothing, yet
    // answers what A starts (replies skip policy).
    n.set_flags('b', EP_F_INGRESS_ENFORCED | EP_F_EGRESS_ENFORCED);
    assert!(!tcp(&n.b, &n.a, 80, NO), "TCP B->A denied by B's egress");
    assert!(tcp(&n.a, &n.b, 80, YES), "TCP A->B:80 replies pass");
    assert!(ping(&n.a, &n.b, YES), "ping replies pass");

    // Deselect: full reachability again.
    n.set_flags('b', 0);
    assert!(
        tcp(&n.a, &n.b, 81, YES) && tcp(&n.b, &n.a, 80, YES),
        "open again"
    );
}

#[test]
fn an_allowed_connection_survives_a_reload_from_pins() {
    let mut n = Node::new();
    n.set_flags('b', EP_F_INGRESS_ENFORCED);
    n.allow(EP_B, DIR_INGRESS, ID_A, Some(6), Some((80, 80)));
    assert!(tcp(&n.a, &n.b, 80, YES));
    let ct_before = n.dp().conntrack().unwrap().len();
    assert!(ct_before > 0, "the connection left conntrack entries");

    // A second load from the same pins sees the same maps.
    let dp2 = load(&n.pins);
    assert_eq!(
        dp2.endpoints().unwrap().len(),
        2,
        "endpoints survive in pinned maps"
    );
    assert_eq!(dp2.policy_entries().unwrap().len(), 1, "policy survives");
    assert!(
        dp2.conntrack().unwrap().len() >= ct_before,
        "conntrack survives"
    );
    // Swap the running datapath for the reloaded one and re-attach.
    n.links.clear();
    n.dp = Some(dp2);
    n.attach();
    assert!(tcp(&n.a, &n.b, 80, YES), "TCP A->B:80 after reload");
    assert!(
        !tcp(&n.a, &n.b, 81, NO),
        "policy still enforced after reload"
    );
}

/// The IPv4 truncations BPF_PROG_TEST_RUN refuses to inject (an IPv4
/// ethertype with less than 20 bytes of header): sent raw from a pod.
#[test]
fn truncated_ipv4_headers_from_a_pod_are_dropped() {
    let n = Node::new();
    let frame = pilus_packet::PacketBuilder::new(n.a.ep.mac, n.a.ep.node_mac)
        .ipv4(IP_A, IP_B)
        .udp(1, 2)
        .build();
    let before = n.metric(DROP_INVALID_IPV4, DIR_EGRESS);
    for cut in 14..34 {
        probe::send_raw_frame(&n.a.ns, "eth0", &frame[..cut]).unwrap();
    }
    // The frames cross the veth asynchronously; wait for all twenty.
    let deadline = std::time::Instant::now() + YES;
    while n.metric(DROP_INVALID_IPV4, DIR_EGRESS) < before + 20
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        n.metric(DROP_INVALID_IPV4, DIR_EGRESS),
        before + 20,
        "every cut dropped as DROP_INVALID_IPV4"
    );
}
