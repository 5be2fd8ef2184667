//! Dumps against the real kernel (root), in namespaces the tests make and
//! remove: routes of every table with their table ids, policy routing
//! rules (what a `pilus doctor` reads to find an `ip rule` that sends pod
//! replies elsewhere), and a dump of 2,000 routes, far more than one
//! datagram holds. The state is made with iproute2 where this crate has no
//! call for it, so the reading side is checked against another writer.

use pilus_netlink::{Netlink, Route, Rule};
use pilus_netns::NetNs;
use std::net::Ipv4Addr;

const PREFIX: &str = "t9nldump";

/// A namespace with a link `d0` up, holding 198.18.3.1/24 (one end of a
/// veth pair whose other end stays in the namespace too: this kernel may
/// lack the dummy driver).
fn node() -> (NetNs, Netlink, u32) {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    pilus_netns::remove_stale(PREFIX).unwrap();
    let ns = NetNs::new(PREFIX).unwrap();
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d0p"])
        .unwrap();
    ns.ip(&["link", "set", "d0p", "up"]).unwrap();
    ns.ip(&["link", "set", "d0", "up"]).unwrap();
    ns.ip(&["addr", "add", "198.18.3.1/24", "dev", "d0"])
        .unwrap();
    let mut nl = Netlink::open_path(&ns.path()).unwrap();
    let d0 = nl.link("d0").unwrap().unwrap().index;
    (ns, nl, d0)
}

#[test]
fn routes_of_every_table_carry_their_table() {
    let (ns, mut nl, d0) = node();
    ns.ip(&[
        "route",
        "add",
        "198.18.4.0/24",
        "via",
        "198.18.3.2",
        "dev",
        "d0",
        "table",
        "100",
    ])
    .unwrap();
    ns.ip(&[
        "route",
        "add",
        "blackhole",
        "198.18.5.0/24",
        "table",
        "1000",
    ])
    .unwrap();
    ns.ip(&[
        "route",
        "add",
        "198.18.7.0/24",
        "via",
        "198.18.3.3",
        "metric",
        "50",
    ])
    .unwrap();

    let all = nl.routes_all().unwrap();
    let find = |dst: [u8; 4], len: u8, table: u32| {
        all.iter()
            .find(|r| r.dst == Ipv4Addr::from(dst) && r.dst_len == len && r.table == table)
            .copied()
            .unwrap_or_else(|| panic!("no {dst:?}/{len} in table {table}: {all:#?}"))
    };
    let r = find([198, 18, 4, 0], 24, 100);
    assert_eq!(
        (r.gateway, r.oif, r.kind),
        (Some(Ipv4Addr::new(198, 18, 3, 2)), Some(d0), 1)
    );
    // A table id past 255 needs RTA_TABLE, not the header's byte.
    let r = find([198, 18, 5, 0], 24, 1000);
    assert_eq!((r.kind, r.oif), (6, None), "a blackhole route");
    let r = find([198, 18, 7, 0], 24, 254);
    assert_eq!(r.metric, Some(50));
    // The kernel's own: the subnet route (main), the local address (local).
    let r = find([198, 18, 3, 0], 24, 254);
    assert_eq!(
        (r.scope, r.prefsrc),
        (253, Some(Ipv4Addr::new(198, 18, 3, 1)))
    );
    let r = find([198, 18, 3, 1], 32, 255);
    assert_eq!(r.kind, 2, "a local route");

    // `routes` is the main table only.
    let main = nl.routes().unwrap();
    assert!(main.iter().all(|r| r.table == 254));
    assert_eq!(
        main.len(),
        all.iter().filter(|r| r.table == 254).count(),
        "{main:#?}"
    );
    assert!(main.iter().any(|r| r.dst == Ipv4Addr::new(198, 18, 7, 0)));
}

#[test]
fn policy_rules_are_dumped_with_their_selectors() {
    let (ns, mut nl, _) = node();
    ns.ip(&[
        "rule",
        "add",
        "from",
        "198.18.3.0/24",
        "table",
        "100",
        "priority",
        "1000",
    ])
    .unwrap();
    ns.ip(&[
        "rule",
        "add",
        "to",
        "198.18.6.0/24",
        "iif",
        "d0",
        "fwmark",
        "0x10/0xff",
        "table",
        "200",
        "priority",
        "1001",
    ])
    .unwrap();

    let rules = nl.rules().unwrap();
    let prios: Vec<u32> = rules.iter().map(|r| r.priority).collect();
    assert_eq!(prios, [0, 1000, 1001, 32766, 32767], "{rules:#?}");
    // The three every namespace starts with.
    for (prio, table) in [(0, 255), (32766, 254), (32767, 253)] {
        let r = rules.iter().find(|r| r.priority == prio).unwrap();
        assert_eq!((r.table, r.src_len, r.dst_len, r.action), (table, 0, 0, 1));
    }
    assert_eq!(
        rules[1],
        Rule {
            priority: 1000,
            table: 100,
            src: Ipv4Addr::new(198, 18, 3, 0),
            src_len: 24,
            dst: Ipv4Addr::UNSPECIFIED,
            dst_len: 0,
            iif: None,
            oif: None,
            fwmark: None,
            fwmask: None,
            action: 1,
        }
    );
    assert_eq!(
        rules[2],
        Rule {
            priority: 1001,
            table: 200,
            src: Ipv4Addr::UNSPECIFIED,
            src_len: 0,
            dst: Ipv4Addr::new(198, 18, 6, 0),
            dst_len: 24,
            iif: Some("d0".into()),
            oif: None,
            fwmark: Some(0x10),
            fwmask: Some(0xff),
            action: 1,
        }
    );
}

#[test]
fn a_dump_of_two_thousand_routes_is_whole() {
    let (_ns, mut nl, d0) = node();
    // 198.19.0.0 - 198.19.7.207, inside the benchmark range.
    let base = u32::from(Ipv4Addr::new(198, 19, 0, 0));
    let want: Vec<Ipv4Addr> = (0..2000).map(|i| Ipv4Addr::from(base + i)).collect();
    for &dst in &want {
        nl.add_route(dst, 32, None, d0).unwrap();
    }
    let routes = nl.routes().unwrap();
    let mut got: Vec<Ipv4Addr> = routes
        .iter()
        .filter(|r| r.dst_len == 32 && r.oif == Some(d0) && r.scope == 253)
        .map(|r| r.dst)
        .collect();
    got.sort();
    assert_eq!(got, want);
    // Each once: a dump must neither lose nor repeat an entry.
    assert_eq!(routes.len(), 2000 + 1, "2,000 host routes and d0's subnet");
    let expected_one = Route {
        dst: want[1999],
        dst_len: 32,
        gateway: None,
        oif: Some(d0),
        scope: 253,
        table: 254,
        kind: 1,
        metric: None,
        prefsrc: None,
    };
    assert!(routes.contains(&expected_one));
}
