//! Tier 3: real traffic. A node namespace and two pod namespaces joined to it
//! by veth pairs; the programs attached to the host-side veths (with TCX
//! links the test owns, or lastingly as the agent attaches them: tc filters,
//! TCX pins as the fallback); policy written by the test; real TCP, UDP and
//! ICMP from the pods' own stacks.
//!
//! The node has no address for the pods' gateway (198.18.0.1) and
//! ip_forward=0: pods only reach each other because the datapath answers the
//! gateway's ARP and delivers with bpf_redirect_peer.
//!
//! Needs root; fails (never skips) without it. Guards remove every namespace,
//! link and pin, also when an assertion fails.

use pilus_abi::{consts::*, Be32, EndpointInfo, IpcacheValue};
use pilus_datapath::{
    AttachMode, Datapath, EndpointLinks, LoadOptions, NodeConfig, PodCidr, PolicyEntry,
};
use pilus_netlink::{BpfFilter, Netlink, TcHook};
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
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
    let ep = plug(node, host_if, &ns, ip, id, ep_id);
    Pod { ns, ip, ep }
}

/// The pods' endpoints and ipcache entries, into a datapath's maps.
fn write_pods(dp: &mut Datapath, a: &Pod, b: &Pod) {
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
}

/// The veth pair of a pod, its address and routes; the endpoint it makes.
fn plug(
    node: &NetNs,
    host_if: &str,
    ns: &NetNs,
    ip: Ipv4Addr,
    id: u32,
    ep_id: u16,
) -> EndpointInfo {
    veth_pair(node, host_if, ns, "eth0").expect("veth");
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
    EndpointInfo {
        ifindex: node.ifindex(host_if).unwrap(),
        sec_identity: id,
        ip4: Be32::from(ip),
        ep_id,
        flags: 0,
        mac: ns.mac("eth0").unwrap(),
        node_mac: node.mac(host_if).unwrap(),
        _pad: 0,
    }
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
    /// The node with both pods, their endpoints and ipcache entries, and
    /// the programs attached with TCX links the test owns.
    fn new() -> Node {
        let mut n = Node::unattached();
        n.attach();
        n
    }

    /// The same, with nothing attached yet.
    fn unattached() -> Node {
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
        write_pods(&mut dp, &a, &b);
        let servers = vec![
            probe::EchoServer::start(&a.ns, &[80, 81]).unwrap(),
            probe::EchoServer::start(&b.ns, &[80, 81]).unwrap(),
        ];
        Node {
            _servers: servers,
            links: Vec::new(),
            dp: Some(dp),
            pins,
            a,
            b,
            node,
        }
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

    /// Attaches the pod programs to `ifname` as the agent does.
    fn attach_lasting(&mut self, ifname: &str) {
        let dp = self.dp.as_mut().unwrap();
        self.node
            .within(|| dp.attach_endpoint_lasting(ifname))
            .unwrap()
            .unwrap_or_else(|e| panic!("lasting attach to {ifname}: {e:?}"));
    }

    fn detach_lasting(&mut self, ifname: &str) {
        let dp = self.dp.as_ref().unwrap();
        self.node
            .within(|| dp.detach_endpoint_lasting(ifname))
            .unwrap()
            .unwrap_or_else(|e| panic!("detach from {ifname}: {e:?}"));
    }

    fn attached(&self, ifname: &str) -> bool {
        let dp = self.dp.as_ref().unwrap();
        self.node.within(|| dp.endpoint_attached(ifname)).unwrap()
    }

    /// The cls_bpf filters on one hook of `ifname` in the node.
    fn filters(&self, ifname: &str, hook: TcHook) -> Vec<BpfFilter> {
        self.node
            .within(|| {
                let mut nl = Netlink::open().unwrap();
                let index = nl.link(ifname).unwrap().expect("link").index;
                nl.bpf_filters(index, hook).unwrap()
            })
            .unwrap()
    }

    /// The names of the cls_bpf filters on `ifname`, (ingress, egress).
    fn filter_names(&self, ifname: &str) -> (Vec<String>, Vec<String>) {
        let names = |hook| {
            self.filters(ifname, hook)
                .into_iter()
                .map(|f| f.name.unwrap_or_default())
                .collect()
        };
        (names(TcHook::Ingress), names(TcHook::Egress))
    }

    /// Pod B's veth deleted and made again under the same names (a new
    /// ifindex and MACs), its endpoint entry rewritten.
    fn replug_b(&mut self) {
        self.node.ip(&["link", "del", "lxcb"]).unwrap();
        let old = self.b.ep;
        let mut ep = plug(&self.node, "lxcb", &self.b.ns, IP_B, ID_B, EP_B);
        ep.flags = old.flags;
        self.b.ep = ep;
        let dp = self.dp();
        dp.remove_endpoint(&old).unwrap();
        dp.upsert_endpoint(&ep).unwrap();
    }

    fn pin_path(&self, ifname: &str, hook: &str) -> PathBuf {
        self.pins.0.join("links").join(format!("{ifname}_{hook}"))
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

/// B admits only A on TCP 80; A is unselected.
fn police_b(n: &mut Node) {
    n.set_flags('b', EP_F_INGRESS_ENFORCED);
    n.allow(EP_B, DIR_INGRESS, ID_A, Some(6), Some((80, 80)));
}

fn assert_policed(n: &Node, when: &str) {
    assert!(tcp(&n.a, &n.b, 80, YES), "TCP A->B:80 allowed, {when}");
    assert!(!tcp(&n.a, &n.b, 81, NO), "TCP A->B:81 denied, {when}");
    assert!(
        tcp(&n.b, &n.a, 81, YES),
        "TCP B->A:81 (A unselected), {when}"
    );
}

/// One filter per hook, each running its program: (ingress, egress).
fn one_each() -> (Vec<String>, Vec<String>) {
    (vec!["from_container".into()], vec!["to_container".into()])
}

/// Issue 9: lasting attachments are tc filters, not pinned TCX links; they
/// must outlive the datapath object (the agent), and a new load from the
/// same pins must see them and leave them be.
#[test]
fn a_lasting_attachment_outlives_its_datapath_and_stays_policed() {
    let mut n = Node::unattached();
    police_b(&mut n);
    assert!(!n.attached("lxca") && !n.attached("lxcb"));
    n.attach_lasting("lxca");
    n.attach_lasting("lxcb");
    assert!(n.attached("lxca") && n.attached("lxcb"));
    assert_eq!(n.filter_names("lxcb"), one_each(), "tc filters on 6.18");
    assert!(
        !n.pin_path("lxcb", "ingress").exists(),
        "no TCX pin in tc mode"
    );
    assert_policed(&n, "attached");

    // As when the agent exits: the datapath object goes, nothing else.
    n.dp = None;
    assert_policed(&n, "with no datapath object left in any process");

    // As when it starts again.
    n.dp = Some(load(&n.pins));
    assert!(
        n.attached("lxca") && n.attached("lxcb"),
        "a new load sees both endpoints attached"
    );
    n.attach_lasting("lxcb");
    assert_eq!(
        n.filter_names("lxcb"),
        one_each(),
        "attaching an attached endpoint adds nothing"
    );
    assert_policed(&n, "after a reload from the pins");
}

#[test]
fn attaching_and_detaching_twice_is_fine() {
    let mut n = Node::unattached();
    for _ in 0..2 {
        n.attach_lasting("lxca");
        n.attach_lasting("lxcb");
        assert_eq!(n.filter_names("lxcb"), one_each());
    }
    police_b(&mut n);
    assert_policed(&n, "attached twice");
    for _ in 0..2 {
        n.detach_lasting("lxcb");
        assert!(!n.attached("lxcb"));
        assert_eq!(n.filter_names("lxcb"), (vec![], vec![]));
    }
    // Without the programs on B's veth nothing reaches B (the node does
    // not forward): detached means detached.
    assert!(!tcp(&n.a, &n.b, 80, NO), "TCP A->B:80 after detach");
    n.detach_lasting("nosuchveth");
    n.attach_lasting("lxcb");
    assert_policed(&n, "attached again");
}

#[test]
fn a_veth_deleted_and_made_again_under_its_name_is_attached_afresh() {
    let mut n = Node::unattached();
    police_b(&mut n);
    n.attach_lasting("lxca");
    n.attach_lasting("lxcb");
    n.replug_b();
    assert!(!n.attached("lxcb"), "the new veth has nothing attached");
    n.attach_lasting("lxcb");
    assert!(n.attached("lxcb"));
    assert_eq!(n.filter_names("lxcb"), one_each());
    assert_policed(&n, "on the new veth");
}

/// The fallback, and a half-done attach: B's egress slot is taken by a
/// filter the tc attach cannot replace (another kind, another protocol),
/// so the tc attach fails after its ingress filter went in. That filter
/// must be gone again, and both programs attached with pinned TCX links.
#[test]
fn a_half_done_tc_attach_is_undone_and_tcx_attaches_both() {
    let mut n = Node::unattached();
    police_b(&mut n);
    n.attach_lasting("lxca");
    let tc = |args: &str| {
        let args: Vec<&str> = args.split(' ').collect();
        n.node.run(&[&["tc"][..], &args].concat()).expect("tc")
    };
    tc("qdisc add dev lxcb clsact");
    tc("filter add dev lxcb egress pref 1 protocol ip u32 match u32 0 0");
    n.attach_lasting("lxcb");
    assert_eq!(
        n.filter_names("lxcb"),
        (vec![], vec![]),
        "the ingress filter of the failed tc attach was removed"
    );
    assert!(n.pin_path("lxcb", "ingress").exists());
    assert!(n.pin_path("lxcb", "egress").exists());
    assert!(n.attached("lxcb"), "attached with TCX");
    assert_policed(&n, "attached with TCX");

    // A restarted agent sees the TCX attachment too.
    n.dp = Some(load(&n.pins));
    assert!(n.attached("lxcb"));
    n.detach_lasting("lxcb");
    assert!(!n.attached("lxcb"));
    assert!(!n.pin_path("lxcb", "ingress").exists());
    assert!(!n.pin_path("lxcb", "egress").exists());
}

/// A TCX pin outlives the veth it was attached to. A veth made again under
/// the same name must not pass for attached, and attaching it replaces the
/// stale pins.
#[test]
fn a_tcx_pin_left_by_a_deleted_veth_is_not_taken_for_an_attachment() {
    let mut n = Node::unattached();
    police_b(&mut n);
    n.attach_lasting("lxca");
    n.dp().set_attach_mode(AttachMode::Tcx);
    n.attach_lasting("lxcb");
    assert_eq!(n.filter_names("lxcb"), (vec![], vec![]), "TCX, not tc");
    assert!(n.attached("lxcb"));
    assert_policed(&n, "attached with TCX");

    n.replug_b();
    assert!(n.pin_path("lxcb", "ingress").exists(), "the stale pin");
    assert!(!n.attached("lxcb"), "a stale pin is no attachment");
    n.dp().set_attach_mode(AttachMode::Tc);
    n.attach_lasting("lxcb");
    assert!(!n.pin_path("lxcb", "ingress").exists(), "stale pin removed");
    assert!(!n.pin_path("lxcb", "egress").exists(), "stale pin removed");
    assert_eq!(n.filter_names("lxcb"), one_each());
    assert_policed(&n, "on the new veth");
}

/// The README's way out of an incompatible pin directory is to remove it.
/// The tc filters (unlike pinned TCX links) stay, with the old programs on
/// the old maps; a datapath loaded afresh must not take them for its own,
/// but replace them, or what it writes would never be enforced.
#[test]
fn filters_left_on_the_maps_of_a_removed_pin_directory_are_replaced() {
    let mut n = Node::unattached();
    police_b(&mut n);
    n.attach_lasting("lxca");
    n.attach_lasting("lxcb");
    n.dp = None;
    std::fs::remove_dir_all(&n.pins.0).unwrap();
    // With its last pin and fd gone the kernel empties the tail-call array
    // (`prog_array_map_clear`, kernel/bpf/arraymap.c), so the old programs
    // drop what they would tail-call (the stack's traffic to a pod, a
    // service's translation). A pod's own IPv4 path is no tail call: pod to
    // pod goes on, under the old maps' policy, until the new datapath
    // replaces the filters.
    assert_policed(&n, "by the old programs on the old maps");

    let mut dp = load(&n.pins);
    write_pods(&mut dp, &n.a, &n.b);
    n.dp = Some(dp);
    assert!(
        !n.attached("lxca") && !n.attached("lxcb"),
        "filters running on other maps are not this datapath's"
    );
    // The new maps: B admits A on TCP 81 only.
    n.set_flags('b', EP_F_INGRESS_ENFORCED);
    n.allow(EP_B, DIR_INGRESS, ID_A, Some(6), Some((81, 81)));
    n.attach_lasting("lxca");
    n.attach_lasting("lxcb");
    assert!(n.attached("lxca") && n.attached("lxcb"));
    assert_eq!(n.filter_names("lxcb"), one_each(), "replaced, not added");
    assert!(tcp(&n.a, &n.b, 81, YES), "the new policy admits 81");
    assert!(!tcp(&n.a, &n.b, 80, NO), "and no longer 80");
}
