//! Real netlink against the kernel (root): a veth pair into a fresh
//! namespace, addresses, routes, lookups and deletes, all checked by
//! reading them back.

use pilus_netlink::{FilterSlot, Netlink, Route, TcHook};
use pilus_netns::NetNs;
use std::{net::Ipv4Addr, os::fd::AsFd};

#[test]
fn veth_into_a_namespace_with_address_and_routes() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    pilus_netns::remove_stale("t6nl").unwrap();
    let node = NetNs::new("t6nlnode").unwrap();
    let pod = NetNs::new("t6nlpod").unwrap();
    let pod_file = std::fs::File::open(pod.path()).unwrap();

    let _in_node = node.enter().unwrap();
    let mut nl = Netlink::open().unwrap();
    assert_eq!(nl.link("lxctest").unwrap(), None);
    nl.create_veth("lxctest", "eth0", pod_file.as_fd()).unwrap();
    let host = nl.link("lxctest").unwrap().expect("host side exists");
    assert!(!host.up);
    nl.set_up(host.index).unwrap();
    assert!(nl.link("lxctest").unwrap().unwrap().up);
    // The peer was created in the pod, never here.
    assert_eq!(nl.link("eth0").unwrap(), None);
    // A second pair with the same name is refused with EEXIST.
    let err = nl
        .create_veth("lxctest", "eth1", pod_file.as_fd())
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");

    let mut in_pod = Netlink::open_in(pod_file.as_fd()).unwrap();
    let eth0 = in_pod.link("eth0").unwrap().expect("peer is in the pod");
    assert_ne!(eth0.mac, [0; 6]);
    let ip = Ipv4Addr::new(198, 18, 9, 5);
    let gw = Ipv4Addr::new(198, 18, 9, 1);
    in_pod.set_up(eth0.index).unwrap();
    in_pod.add_addr(eth0.index, ip, 32).unwrap();
    in_pod.add_route(gw, 32, None, eth0.index).unwrap();
    in_pod
        .add_route(Ipv4Addr::UNSPECIFIED, 0, Some(gw), eth0.index)
        .unwrap();
    // Another interface's route is never replaced.
    let again = in_pod
        .add_route(Ipv4Addr::UNSPECIFIED, 0, Some(gw), eth0.index)
        .unwrap_err();
    assert_eq!(again.errno(), Some(libc::EEXIST), "{again}");
    let addrs = in_pod.addrs().unwrap();
    assert!(addrs
        .iter()
        .any(|a| a.index == eth0.index && a.ip == ip && a.prefix_len == 32));
    let routes = in_pod.routes().unwrap();
    assert!(routes.iter().any(|r| r
        == &Route {
            dst: Ipv4Addr::UNSPECIFIED,
            dst_len: 0,
            gateway: Some(gw),
            oif: Some(eth0.index),
            scope: 0,
            table: 254,
            kind: 1,
            metric: None,
            prefsrc: None,
        }));
    assert!(routes
        .iter()
        .any(|r| r.dst == gw && r.dst_len == 32 && r.gateway.is_none()));
    // `ip` sees the same thing.
    let shown = pod.ip(&["-4", "route", "show", "default"]).unwrap();
    assert!(shown.contains("via 198.18.9.1 dev eth0"), "{shown}");

    // Deleting the host side takes the pod side with it; twice is fine.
    assert!(nl.delete_link("lxctest").unwrap());
    assert!(!nl.delete_link("lxctest").unwrap());
    assert_eq!(in_pod.link("eth0").unwrap(), None);
    assert!(nl.link("bad/name").is_err());
}

/// Removing a filter that is not there is "nothing to remove", whether the
/// link has a clsact qdisc (ENOENT) or none at all (EINVAL with "Parent
/// Qdisc doesn't exists"): an agent cleaning up after an earlier one must
/// not fail on a link that never had programs.
#[test]
fn deleting_an_absent_filter_is_nothing_to_remove_with_or_without_clsact() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    pilus_netns::remove_stale("t6tc").unwrap();
    let node = NetNs::new("t6tcnode").unwrap();
    let pod = NetNs::new("t6tcpod").unwrap();
    let pod_file = std::fs::File::open(pod.path()).unwrap();
    let _in_node = node.enter().unwrap();
    let mut nl = Netlink::open().unwrap();
    nl.create_veth("lxctc", "eth0", pod_file.as_fd()).unwrap();
    let link = nl.link("lxctc").unwrap().expect("the veth");
    for hook in [TcHook::Ingress, TcHook::Egress] {
        let slot = FilterSlot {
            hook,
            priority: 1,
            handle: 1,
        };
        assert!(
            !nl.delete_bpf_filter(link.index, slot).unwrap(),
            "no clsact"
        );
    }
    assert!(nl.add_clsact(link.index).unwrap());
    for hook in [TcHook::Ingress, TcHook::Egress] {
        let slot = FilterSlot {
            hook,
            priority: 1,
            handle: 1,
        };
        assert!(
            !nl.delete_bpf_filter(link.index, slot).unwrap(),
            "clsact, no filter"
        );
    }
}
