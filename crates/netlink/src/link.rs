//! Links: looked up by name or dumped whole, veth pairs whose peer is born
//! in another namespace, VXLAN devices for the overlay between nodes, up,
//! MTU and delete. The types here are Pilus's own, so callers do not follow
//! netlink-packet-route's versions.

use crate::{valid_ifname, Error, Netlink};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    link::{
        InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    },
    RouteNetlinkMessage,
};
use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, BorrowedFd},
};

/// A link as `RTM_GETLINK` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// All zeroes for a link without an Ethernet address (`lo` has one of
    /// zeroes anyway).
    pub mac: [u8; 6],
    pub up: bool,
    pub mtu: u32,
    /// `IFLA_INFO_KIND`: "veth", "vxlan", "dummy"...; `None` for a device
    /// with no rtnetlink kind (`lo`, physical NICs).
    pub kind: Option<String>,
}

/// A VXLAN device as Pilus makes it, and as [`Netlink::vxlan`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    /// `None`: external mode (`IFLA_VXLAN_COLLECT_METADATA`, `ip link add
    /// ... external`): one device for every VNI and remote, each packet's
    /// tunnel key (set by the datapath with `bpf_skb_set_tunnel_key`) says
    /// where it goes. `Some(vni)`: a classic device with one VNI.
    pub vni: Option<u32>,
    /// The UDP destination port (4789 is IANA's; Linux's default is 8472).
    pub port: u16,
    /// Whether the device learns remote MACs from received packets into its
    /// FDB. Off for Pilus, where the control plane knows every remote.
    pub learning: bool,
    /// The device's MTU; `None` lets the kernel pick (underlay minus 50).
    pub mtu: Option<u32>,
    /// The source address of encapsulated packets, if not chosen per route.
    pub local: Option<Ipv4Addr>,
    /// The underlay link (`dev`), by index.
    pub underlay: Option<u32>,
}

/// A VXLAN device found by [`Netlink::vxlan`]: the link, and its VXLAN
/// settings as the kernel reports them (`spec.mtu` is always known here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanLink {
    pub link: Link,
    pub spec: VxlanSpec,
}

fn link_from(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: [0; 6],
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: 0,
        kind: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) if a.len() == 6 => link.mac.copy_from_slice(a),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    link
}

fn vxlan_from(msg: &LinkMessage) -> Option<VxlanLink> {
    let link = link_from(msg);
    let data = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(d)) => Some(d),
            _ => None,
        }),
        _ => None,
    })?;
    let mut spec = VxlanSpec {
        name: link.name.clone(),
        vni: None,
        // The kernel reports every setting; these are only placeholders.
        port: 0,
        learning: false,
        mtu: Some(link.mtu),
        local: None,
        underlay: None,
    };
    let mut external = false;
    for d in data {
        match d {
            InfoVxlan::Id(v) => spec.vni = Some(*v),
            InfoVxlan::Port(p) => spec.port = *p,
            InfoVxlan::Learning(l) => spec.learning = *l,
            InfoVxlan::CollectMetadata(c) => external = *c,
            InfoVxlan::Local(ip) => spec.local = Some(*ip),
            InfoVxlan::Link(i) => spec.underlay = Some(*i),
            _ => {}
        }
    }
    if external {
        // An external device reports VNI 0: it has none of its own.
        spec.vni = None;
    }
    Some(VxlanLink { link, spec })
}

fn new_links(replies: Vec<RouteNetlinkMessage>) -> impl Iterator<Item = LinkMessage> {
    replies.into_iter().filter_map(|m| match m {
        RouteNetlinkMessage::NewLink(l) => Some(l),
        _ => None,
    })
}

fn by_name(name: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg
}

impl Netlink {
    /// The raw `RTM_NEWLINK` of the link called `name`; `None` if none.
    fn get_link(&mut self, name: &str) -> Result<Option<LinkMessage>, Error> {
        valid_ifname(name)?;
        let got = self.request(RouteNetlinkMessage::GetLink(by_name(name)), 0, &|| {
            format!("look up link {name}")
        });
        match got {
            Ok(replies) => Ok(new_links(replies).next()),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link called `name`, or `None` if there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, Error> {
        Ok(self.get_link(name)?.as_ref().map(link_from))
    }

    /// Every link in the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, Error> {
        let replies = self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            &|| "list links".into(),
        )?;
        Ok(new_links(replies).map(|l| link_from(&l)).collect())
    }

    /// Creates a veth pair: `name` here, `peer` created directly inside
    /// the namespace open at `peer_ns` (so it never exists in ours).
    /// Fails with EEXIST if either name is taken.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_ns: BorrowedFd<'_>,
    ) -> Result<(), Error> {
        valid_ifname(name)?;
        valid_ifname(peer)?;
        let mut peer_msg = by_name(peer);
        peer_msg
            .attributes
            .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
        let mut msg = by_name(name);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("create veth {name} (peer {peer})"),
        )?;
        Ok(())
    }

    /// Creates a VXLAN device as `spec` says (EEXIST if the name is taken;
    /// EADDRINUSE-like refusals if another device of the namespace already
    /// holds the same port in the same mode).
    pub fn create_vxlan(&mut self, spec: &VxlanSpec) -> Result<(), Error> {
        valid_ifname(&spec.name)?;
        let mut data = vec![
            InfoVxlan::Port(spec.port),
            InfoVxlan::Learning(spec.learning),
        ];
        match spec.vni {
            // The kernel refuses a VNI together with external mode.
            None => data.push(InfoVxlan::CollectMetadata(true)),
            Some(vni) => data.push(InfoVxlan::Id(vni)),
        }
        if let Some(ip) = spec.local {
            data.push(InfoVxlan::Local(ip));
        }
        if let Some(index) = spec.underlay {
            data.push(InfoVxlan::Link(index));
        }
        let mut msg = by_name(&spec.name);
        if let Some(mtu) = spec.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(data)),
        ]));
        let name = &spec.name;
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("create vxlan {name}"),
        )?;
        Ok(())
    }

    /// The VXLAN device called `name`; `None` if there is no link by that
    /// name or it is not a VXLAN device.
    pub fn vxlan(&mut self, name: &str) -> Result<Option<VxlanLink>, Error> {
        Ok(self.get_link(name)?.as_ref().and_then(vxlan_from))
    }

    /// Sets a link up.
    pub fn set_up(&mut self, index: u32) -> Result<(), Error> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(msg), 0, &|| {
            format!("set link {index} up")
        })?;
        Ok(())
    }

    /// Sets a link's MTU (EINVAL beyond the device's minimum or maximum).
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), Error> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RouteNetlinkMessage::SetLink(msg), 0, &|| {
            format!("set the MTU of link {index} to {mtu}")
        })?;
        Ok(())
    }

    /// Deletes the link called `name`; `Ok(false)` if there was none.
    pub fn delete_link(&mut self, name: &str) -> Result<bool, Error> {
        valid_ifname(name)?;
        match self.request(RouteNetlinkMessage::DelLink(by_name(name)), 0, &|| {
            format!("delete link {name}")
        }) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_reply_becomes_a_link() {
        let mut msg = LinkMessage::default();
        msg.header.index = 42;
        msg.header.flags = LinkFlags::Up | LinkFlags::Running;
        msg.attributes = vec![
            LinkAttribute::IfName("lxc1".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 9]),
            LinkAttribute::Mtu(1450),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        assert_eq!(
            link_from(&msg),
            Link {
                index: 42,
                name: "lxc1".into(),
                mac: [2, 0, 0, 0, 0, 9],
                up: true,
                mtu: 1450,
                kind: Some("veth".into()),
            }
        );
        assert_eq!(vxlan_from(&msg), None, "a veth is no VXLAN device");
    }

    #[test]
    fn an_external_vxlan_has_no_vni() {
        let mut msg = by_name("pilus_vxlan");
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(0),
                InfoVxlan::CollectMetadata(true),
                InfoVxlan::Port(8472),
                InfoVxlan::Learning(false),
            ])),
        ]));
        let v = vxlan_from(&msg).unwrap();
        assert_eq!(
            (v.spec.vni, v.spec.port, v.spec.learning),
            (None, 8472, false)
        );
        assert_eq!(v.link.kind.as_deref(), Some("vxlan"));
    }
}
