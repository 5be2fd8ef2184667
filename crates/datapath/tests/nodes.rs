//! Tier 3, issue 10: two nodes without an agent. Two node namespaces on an
//! underlay veth (198.19.0.1 and .2), each with its own datapath (its own
//! pins and pod CIDR) and one pod; the maps are written by the test the way
//! the control plane writes them.
//!
//! - **tunnel:** each node has a VXLAN device in external mode with
//!   `from_overlay` on it; a pod's packet for the other node's pod leaves
//!   through it with the sender's identity as the VNI (checked on the wire
//!   with a raw capture on the underlay), is judged by the receiving pod's
//!   ingress policy with that identity, and is delivered; replies come back
//!   the same way; a packet too big for the tunnel is a counted drop.
//! - **direct routing:** no encapsulation; the pod CIDRs are routed on the
//!   underlay, `from_netdev` on the receiving uplink reads the sender's
//!   identity from the ipcache and delivers.
//!
//! Needs root; fails (never skips) without it. Guards remove every
//! namespace, link and pin, also when an assertion fails.

use pilus_abi::{consts::*, Be32, EndpointInfo, IpcacheValue};
use pilus_datapath::{
    Datapath, EndpointLinks, LoadOptions, NodeConfig, NodeDevice, PodCidr, PolicyEntry,
};
use pilus_netlink::{Netlink, VxlanSpec};
use pilus_netns::{probe, veth_pair, NetNs};
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::{Duration, Instant},
};

const YES: Duration = Duration::from_secs(3);
const NO: Duration = Duration::from_millis(500);
const VXLAN_PORT: u16 = 8472;

/// Removes a test's bpffs pin directory on drop.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One node: its namespace, datapath, pod. Field order is drop order.
struct Node {
    _server: probe::EchoServer,
    _links: EndpointLinks,
    dp: Datapath,
    _pins: PinDir,
    pod: NetNs,
    pod_ip: Ipv4Addr,
    ep: EndpointInfo,
    underlay: Ipv4Addr,
    ns: NetNs,
}

fn identity(n: u8) -> u32 {
    300 + u32::from(n)
}

/// Node `n` (1 or 2): namespace, underlay address 198.19.0.n, pod CIDR
/// 198.18.n.0/24, a pod at 198.18.n.10 with MTU `pod_mtu`.
fn node(n: u8, tunnel: bool, pod_mtu: u32) -> Node {
    let ns = NetNs::new("t10node").expect("node namespace");
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
    let underlay = Ipv4Addr::new(198, 19, 0, n);
    // Tests run in parallel in one process: a counter keeps them apart.
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/pilus-t10-{}-{}-{n}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )));
    let _ = std::fs::remove_dir_all(&pins.0);
    let router = Ipv4Addr::new(198, 18, n, 1);
    let pod_ip = Ipv4Addr::new(198, 18, n, 10);
    let pod = NetNs::new("t10pod").expect("pod namespace");
    pod.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
    veth_pair(&ns, "lxc0", &pod, "eth0").expect("pod veth");
    pod.ip(&["link", "set", "eth0", "mtu", &pod_mtu.to_string()])
        .unwrap();
    pod.ip(&["addr", "add", &format!("{pod_ip}/32"), "dev", "eth0"])
        .unwrap();
    pod.ip(&[
        "route",
        "add",
        &router.to_string(),
        "dev",
        "eth0",
        "scope",
        "link",
    ])
    .unwrap();
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        &router.to_string(),
        "dev",
        "eth0",
    ])
    .unwrap();
    let (dp, links) = ns
        .within(|| {
            let tunnel_ifindex = if tunnel { make_vxlan(underlay) } else { 0 };
            let mut dp = Datapath::load(&LoadOptions {
                node: NodeConfig {
                    router_ip4: router,
                    pod_cidr: PodCidr::new(Ipv4Addr::new(198, 18, n, 0), 24).unwrap(),
                    tunnel_ifindex,
                    ..Default::default()
                },
                bpffs_root: PathBuf::from("/sys/fs/bpf"),
                pin_dir: Some(pins.0.clone()),
            })
            .expect("load");
            let links = dp.attach_endpoint("lxc0").expect("attach the pod");
            (dp, links)
        })
        .unwrap();
    let ep = EndpointInfo {
        ifindex: ns.ifindex("lxc0").unwrap(),
        sec_identity: identity(n),
        ip4: Be32::from(pod_ip),
        ep_id: u16::from(n),
        flags: 0,
        mac: pod.mac("eth0").unwrap(),
        node_mac: ns.mac("lxc0").unwrap(),
        _pad: 0,
    };
    let server = probe::EchoServer::start(&pod, &[80]).unwrap();
    Node {
        _server: server,
        _links: links,
        dp,
        _pins: pins,
        pod,
        pod_ip,
        ep,
        underlay,
        ns,
    }
}

/// The VXLAN device in external mode; returns its ifindex.
fn make_vxlan(local: Ipv4Addr) -> u32 {
    let mut nl = Netlink::open().unwrap();
    nl.create_vxlan(&VxlanSpec {
        name: "vx0".into(),
        vni: None,
        port: VXLAN_PORT,
        learning: false,
        mtu: None,
        local: Some(local),
        underlay: None,
    })
    .expect("vxlan");
    let l = nl.link("vx0").unwrap().expect("vx0");
    nl.set_up(l.index).unwrap();
    l.index
}

/// Two nodes joined by the underlay; each knows the other's pod.
fn two_nodes(tunnel: bool, pod_mtu: u32) -> (Node, Node) {
    let mut a = node(1, tunnel, pod_mtu);
    let mut b = node(2, tunnel, pod_mtu);
    veth_pair(&a.ns, "eth0", &b.ns, "eth0").expect("underlay");
    for (me, other) in [(&a, &b), (&b, &a)] {
        me.ns
            .ip(&["addr", "add", &format!("{}/24", me.underlay), "dev", "eth0"])
            .unwrap();
        me.ns.ip(&["link", "set", "eth0", "up"]).unwrap();
        if !tunnel {
            // Direct routing: the other node's pod CIDR via its underlay
            // address, and forwarding for what the pods send to the stack.
            me.ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
            me.ns
                .ip(&[
                    "route",
                    "add",
                    &format!("198.18.{}.0/24", other.underlay.octets()[3]),
                    "via",
                    &other.underlay.to_string(),
                ])
                .unwrap();
        }
    }
    let knows = |me: &mut Node, other_ip: Ipv4Addr, other_id: u32, other_underlay: Ipv4Addr| {
        let ep = me.ep;
        me.dp.upsert_endpoint(&ep).unwrap();
        me.dp
            .upsert_ipcache(
                other_ip,
                32,
                &IpcacheValue {
                    sec_identity: other_id,
                    tunnel_endpoint: if tunnel {
                        Be32::from(other_underlay)
                    } else {
                        Be32::from(Ipv4Addr::UNSPECIFIED)
                    },
                    ..Default::default()
                },
            )
            .unwrap();
        let role = if tunnel {
            ("vx0", NodeDevice::Overlay)
        } else {
            ("eth0", NodeDevice::Uplink)
        };
        me.ns
            .within(|| me.dp.attach_node_device(role.0, role.1))
            .unwrap()
            .expect("attach the node device");
    };
    let (a_ip, a_id, a_under) = (a.pod_ip, a.ep.sec_identity, a.underlay);
    let (b_ip, b_id, b_under) = (b.pod_ip, b.ep.sec_identity, b.underlay);
    knows(&mut a, b_ip, b_id, b_under);
    knows(&mut b, a_ip, a_id, a_under);
    (a, b)
}

/// Makes `n`'s pod accept only `from` on TCP port 80 (and anything from
/// its own node's stack for the probes' ARP, which never reaches policy).
fn allow_only(n: &mut Node, from: u32) {
    let mut ep = n.ep;
    ep.flags = EP_F_INGRESS_ENFORCED;
    n.dp.upsert_endpoint(&ep).unwrap();
    // A fresh entry set: the old one (another identity) goes first.
    let old: Vec<_> =
        n.dp.policy_entries()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.ep_id == ep.ep_id)
            .collect();
    n.dp.remove_policy_raw(&old).unwrap();
    n.dp.insert_policy(&PolicyEntry {
        ep_id: ep.ep_id,
        direction: DIR_INGRESS,
        identity: from,
        protocol: Some(6),
        ports: Some((80, 80)),
        deny: false,
        cookie: 1,
    })
    .unwrap();
}

fn tcp(from: &Node, to: &Node, t: Duration) -> bool {
    probe::tcp(&from.pod, SocketAddrV4::new(to.pod_ip, 80), t).unwrap()
}

/// VNIs of VXLAN frames seen on `ns`'s `ifname` while `during` runs.
fn vnis_on_the_wire(ns: &NetNs, ifname: &str, during: impl FnOnce()) -> Vec<u32> {
    let sock = ns
        .within(|| unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            );
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            fd
        })
        .unwrap();
    let index = ns.ifindex(ifname).unwrap();
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = index as i32;
    let rc = unsafe {
        libc::bind(
            sock,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    unsafe {
        libc::setsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut vnis = Vec::new();
            let mut buf = [0u8; 2048];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = unsafe {
                    libc::recv(sock, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0)
                };
                if n <= 0 {
                    continue;
                }
                let f = &buf[..n as usize];
                // Ethernet, IPv4 (IHL), UDP to the VXLAN port, VXLAN header.
                if f.len() < 14 + 20 + 8 + 8 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 17 {
                    continue;
                }
                let ihl = usize::from(f[14] & 0x0f) * 4;
                let udp = 14 + ihl;
                if f.len() < udp + 16 || u16::from_be_bytes([f[udp + 2], f[udp + 3]]) != VXLAN_PORT
                {
                    continue;
                }
                let vx = udp + 8;
                vnis.push(u32::from_be_bytes([0, f[vx + 4], f[vx + 5], f[vx + 6]]));
            }
            unsafe { libc::close(sock) };
            vnis
        })
    };
    during();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap()
}

fn drops(dp: &Datapath, reason: u8) -> u64 {
    dp.metrics()
        .unwrap()
        .iter()
        .filter(|d| d.reason == reason)
        .map(|d| d.packets)
        .sum()
}

#[test]
fn tunnel_carries_the_senders_identity_and_policy_applies_on_arrival() {
    assert!(unsafe { libc::geteuid() } == 0, "the node tests need root");
    let (a, mut b) = two_nodes(true, 1450);
    assert!(
        tcp(&a, &b, YES),
        "pod on node 1 -> pod on node 2 through the tunnel"
    );
    assert!(tcp(&b, &a, YES), "and back");
    assert!(
        probe::udp(&a.pod, SocketAddrV4::new(b.pod_ip, 80), YES).unwrap(),
        "UDP"
    );
    assert!(probe::ping(&a.pod, b.pod_ip, YES).unwrap(), "ICMP");
    // The VNI on the wire is the sender's identity, both ways.
    let vnis = vnis_on_the_wire(&b.ns, "eth0", || {
        assert!(tcp(&a, &b, YES));
    });
    assert!(vnis.contains(&identity(1)), "{vnis:?}");
    assert!(
        vnis.contains(&identity(2)),
        "replies carry node 2's pod: {vnis:?}"
    );
    assert!(
        vnis.iter().all(|v| [identity(1), identity(2)].contains(v)),
        "{vnis:?}"
    );
    // Node 2's pod accepts only identity 999: node 1's pod is refused on
    // arrival, by node 2's datapath, with node 1's pod's identity.
    allow_only(&mut b, 999);
    let before = drops(&b.dp, DROP_POLICY);
    assert!(!tcp(&a, &b, NO));
    assert!(
        drops(&b.dp, DROP_POLICY) > before,
        "a policy drop on the receiving node"
    );
    allow_only(&mut b, identity(1));
    assert!(tcp(&a, &b, YES), "allowed once the VNI's identity is");
}

#[test]
fn a_packet_too_big_for_the_tunnel_is_a_counted_drop() {
    assert!(unsafe { libc::geteuid() } == 0, "the node tests need root");
    // Pods left at 1500: what they send at full size cannot be encapsulated.
    let (a, b) = two_nodes(true, 1500);
    let before = drops(&a.dp, DROP_FRAG_NEEDED);
    // UDP with DF set, echoed by the other pod if it arrives: 1472 bytes of
    // payload make a 1500-byte packet, 1400 fit.
    let echoed = |size: usize| -> bool {
        a.pod
            .within(|| {
                let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                let on: libc::c_int = libc::IP_PMTUDISC_DO;
                let rc = unsafe {
                    libc::setsockopt(
                        std::os::fd::AsRawFd::as_raw_fd(&s),
                        libc::IPPROTO_IP,
                        libc::IP_MTU_DISCOVER,
                        &on as *const _ as *const libc::c_void,
                        std::mem::size_of::<libc::c_int>() as u32,
                    )
                };
                assert_eq!(rc, 0);
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let payload = vec![7u8; size];
                s.send_to(&payload, SocketAddrV4::new(b.pod_ip, 80))
                    .unwrap();
                let mut buf = vec![0u8; 2048];
                s.recv_from(&mut buf).is_ok()
            })
            .unwrap()
    };
    assert!(
        !echoed(1472),
        "a 1500-byte packet crossed a 1450-byte tunnel"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while drops(&a.dp, DROP_FRAG_NEEDED) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        drops(&a.dp, DROP_FRAG_NEEDED) > before,
        "never a silent loss: node 1 {:?}",
        a.dp.metrics().unwrap()
    );
    assert!(echoed(1400), "what fits crosses");
}

#[test]
fn direct_routing_reads_the_senders_identity_from_the_ipcache() {
    assert!(unsafe { libc::geteuid() } == 0, "the node tests need root");
    let (a, mut b) = two_nodes(false, 1500);
    assert!(tcp(&a, &b, YES), "pod on node 1 -> pod on node 2, routed");
    assert!(tcp(&b, &a, YES), "and back");
    assert!(
        probe::udp(&a.pod, SocketAddrV4::new(b.pod_ip, 80), YES).unwrap(),
        "UDP"
    );
    assert!(probe::ping(&a.pod, b.pod_ip, YES).unwrap(), "ICMP");
    let vnis = vnis_on_the_wire(&b.ns, "eth0", || assert!(tcp(&a, &b, YES)));
    assert!(
        vnis.is_empty(),
        "direct routing encapsulates nothing: {vnis:?}"
    );
    allow_only(&mut b, 999);
    let before = drops(&b.dp, DROP_POLICY);
    assert!(!tcp(&a, &b, NO));
    assert!(drops(&b.dp, DROP_POLICY) > before, "judged on arrival");
    allow_only(&mut b, identity(1));
    assert!(
        tcp(&a, &b, YES),
        "the ipcache's identity for node 1's pod is allowed"
    );
}
