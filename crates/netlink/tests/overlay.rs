//! What the overlay between nodes needs, against the real kernel (root),
//! each in a namespace the test makes and removes: a VXLAN device in
//! external (collect_md) mode, its FDB entries, ARP entries, MTU and the
//! link dump. Every result is read back both through this crate and
//! through iproute2, which decodes the kernel's answer on its own.

use pilus_netlink::{FdbEntry, Netlink, VxlanSpec};
use pilus_netns::NetNs;
use std::net::Ipv4Addr;

const PREFIX: &str = "t9nlvx";

fn node() -> (NetNs, Netlink) {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    pilus_netns::remove_stale(PREFIX).unwrap();
    let ns = NetNs::new(PREFIX).unwrap();
    let nl = Netlink::open_path(&ns.path()).unwrap();
    (ns, nl)
}

fn spec(name: &str) -> VxlanSpec {
    VxlanSpec {
        name: name.into(),
        vni: None,
        port: 8472,
        learning: false,
        mtu: Some(1450),
        local: Some(Ipv4Addr::new(198, 18, 0, 1)),
        underlay: None,
    }
}

#[test]
fn an_external_vxlan_device_is_created_and_found_again() {
    let (ns, mut nl) = node();
    let want = spec("pvx0");
    nl.create_vxlan(&want).unwrap();

    let found = nl.vxlan("pvx0").unwrap().expect("the device exists");
    assert_eq!(found.spec, want);
    assert_eq!(found.link.kind.as_deref(), Some("vxlan"));
    assert_eq!(found.link.mtu, 1450);
    assert!(!found.link.up);
    let shown = ns.ip(&["-d", "link", "show", "pvx0"]).unwrap();
    for word in [
        "mtu 1450",
        "external",
        "dstport 8472",
        "nolearning",
        "local 198.18.0.1",
    ] {
        assert!(shown.contains(word), "no {word:?} in {shown}");
    }

    // A second device of the name is refused, not merged.
    let again = nl.create_vxlan(&want).unwrap_err();
    assert_eq!(again.errno(), Some(libc::EEXIST), "{again}");
    // Only VXLAN devices are found as such.
    assert_eq!(nl.vxlan("lo").unwrap(), None);
    assert_eq!(nl.vxlan("nosuch").unwrap(), None);

    // A classic device with its own VNI, learning on, the kernel's MTU.
    let classic = VxlanSpec {
        name: "pvx1".into(),
        vni: Some(42),
        port: 4789,
        learning: true,
        mtu: None,
        local: None,
        underlay: None,
    };
    nl.create_vxlan(&classic).unwrap();
    let found = nl.vxlan("pvx1").unwrap().unwrap();
    assert_eq!(
        (found.spec.vni, found.spec.port, found.spec.learning),
        (Some(42), 4789, true)
    );
    let shown = ns.ip(&["-d", "link", "show", "pvx1"]).unwrap();
    assert!(shown.contains("vxlan id 42"), "{shown}");
    assert!(!shown.contains("external"), "{shown}");

    // Up, MTU, and the dump of every link.
    nl.set_up(found.link.index).unwrap();
    nl.set_mtu(found.link.index, 1400).unwrap();
    let link = nl.link("pvx1").unwrap().unwrap();
    assert!(link.up);
    assert_eq!(link.mtu, 1400);
    assert!(ns
        .ip(&["link", "show", "pvx1"])
        .unwrap()
        .contains("mtu 1400"));
    let bad = nl.set_mtu(found.link.index, 10).unwrap_err();
    assert_eq!(bad.errno(), Some(libc::EINVAL), "{bad}");
    let mut names: Vec<String> = nl.links().unwrap().into_iter().map(|l| l.name).collect();
    names.sort();
    assert_eq!(names, ["lo", "pvx0", "pvx1"]);

    assert!(nl.delete_link("pvx0").unwrap());
    assert!(nl.delete_link("pvx1").unwrap());
    assert_eq!(nl.vxlan("pvx0").unwrap(), None);
}

#[test]
fn fdb_entries_of_a_vxlan_device_are_appended_listed_and_deleted() {
    let (ns, mut nl) = node();
    nl.create_vxlan(&spec("pvx0")).unwrap();
    let vx = nl.link("pvx0").unwrap().unwrap();
    nl.set_up(vx.index).unwrap();

    let flood = [0u8; 6];
    let (r1, r2) = (Ipv4Addr::new(198, 18, 1, 1), Ipv4Addr::new(198, 18, 1, 2));
    nl.fdb_append(vx.index, flood, r1).unwrap();
    nl.fdb_append(vx.index, flood, r2).unwrap();
    // Appending a remote that is there already changes nothing.
    nl.fdb_append(vx.index, flood, r1).unwrap();
    let pod_mac = [0x02, 0x50, 0, 0, 0, 7];
    nl.fdb_append(vx.index, pod_mac, r2).unwrap();

    let remotes = |nl: &mut Netlink, mac: [u8; 6]| {
        let mut v: Vec<Ipv4Addr> = nl
            .fdb(vx.index)
            .unwrap()
            .into_iter()
            .filter(|e| e.mac == mac)
            .filter_map(|e| e.dst)
            .collect();
        v.sort();
        v
    };
    assert_eq!(remotes(&mut nl, flood), [r1, r2]);
    assert_eq!(remotes(&mut nl, pod_mac), [r2]);
    let entry = nl
        .fdb(vx.index)
        .unwrap()
        .into_iter()
        .find(|e| e.mac == pod_mac)
        .unwrap();
    assert_eq!(
        entry,
        FdbEntry {
            index: vx.index,
            mac: pod_mac,
            dst: Some(r2),
            vni: None,
            port: None,
            // NUD_NOARP | NUD_PERMANENT, as `bridge fdb append` makes it.
            state: 0xc0,
        }
    );
    let shown = String::from_utf8(
        ns.exec(&["bridge", "fdb", "show", "dev", "pvx0"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    for line in [
        "00:00:00:00:00:00 dst 198.18.1.1 self permanent",
        "00:00:00:00:00:00 dst 198.18.1.2 self permanent",
        "02:50:00:00:00:07 dst 198.18.1.2 self permanent",
    ] {
        assert!(shown.contains(line), "no {line:?} in {shown}");
    }

    // Deleting one remote of the flood MAC leaves the other; deleting it
    // twice is no error, whether the MAC has other remotes or none.
    nl.fdb_delete(vx.index, flood, r1).unwrap();
    nl.fdb_delete(vx.index, flood, r1).unwrap();
    assert_eq!(remotes(&mut nl, flood), [r2]);
    nl.fdb_delete(vx.index, flood, r2).unwrap();
    nl.fdb_delete(vx.index, flood, r2).unwrap();
    nl.fdb_delete(vx.index, pod_mac, r2).unwrap();
    assert!(nl.fdb(vx.index).unwrap().iter().all(|e| e.dst.is_none()));
    let shown = String::from_utf8(
        ns.exec(&["bridge", "fdb", "show", "dev", "pvx0"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!shown.contains("dst"), "{shown}");
}

#[test]
fn arp_entries_are_added_listed_and_deleted() {
    let (ns, mut nl) = node();
    nl.create_vxlan(&spec("pvx0")).unwrap();
    let vx = nl.link("pvx0").unwrap().unwrap();
    nl.set_up(vx.index).unwrap();

    let ip = Ipv4Addr::new(198, 18, 2, 1);
    let mac = [0x02, 0x50, 0, 0, 2, 1];
    nl.add_neigh(vx.index, ip, mac).unwrap();
    let again = nl.add_neigh(vx.index, ip, mac).unwrap_err();
    assert_eq!(again.errno(), Some(libc::EEXIST), "{again}");

    let found = nl
        .neighs()
        .unwrap()
        .into_iter()
        .find(|n| n.ip == ip)
        .expect("the entry is listed");
    assert_eq!(
        (found.index, found.mac, found.state),
        (vx.index, Some(mac), 0x80)
    );
    let shown = ns.ip(&["neigh", "show", "dev", "pvx0"]).unwrap();
    assert!(
        shown.contains("198.18.2.1 lladdr 02:50:00:00:02:01 PERMANENT"),
        "{shown}"
    );

    assert!(nl.delete_neigh(vx.index, ip).unwrap());
    assert!(!nl.delete_neigh(vx.index, ip).unwrap());
    assert!(nl.neighs().unwrap().iter().all(|n| n.ip != ip));
}
