//! Neighbour entries: ARP (`ip neigh`) and the forwarding database of a
//! VXLAN device (`bridge fdb`), both `RTM_*NEIGH` messages told apart by
//! their family (`AF_INET` or `AF_BRIDGE`).
//!
//! For the overlay between nodes: an FDB entry with MAC 00:00:00:00:00:00
//! and a remote's IP makes the VXLAN device send broadcast and unknown
//! traffic to that remote, one entry per remote (appended, not replaced);
//! a permanent ARP entry answers for a remote pod's gateway without ARP
//! crossing the tunnel.

use crate::{Error, Netlink};
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
    route::RouteType,
    AddressFamily, RouteNetlinkMessage,
};
use std::net::Ipv4Addr;

/// `NUD_NOARP | NUD_PERMANENT`, the state `bridge fdb append` gives an
/// entry: static, never aged out or probed.
const FDB_STATE: u16 = 0x40 | 0x80;

/// An IPv4 neighbour (ARP) entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neigh {
    pub index: u32,
    pub ip: Ipv4Addr,
    /// `None` for an entry still resolving or failed.
    pub mac: Option<[u8; 6]>,
    /// `NUD_*` bits: 0x80 permanent, 0x02 reachable, 0x04 stale...
    pub state: u16,
}

/// A forwarding database entry of a bridge-like device (a VXLAN device
/// here): frames to `mac` go to the remote `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub index: u32,
    pub mac: [u8; 6],
    /// The remote VTEP; `None` on entries that have none (e.g. the
    /// multicast addresses every Ethernet device lists).
    pub dst: Option<Ipv4Addr>,
    /// The VNI and UDP port, when the entry overrides the device's.
    pub vni: Option<u32>,
    pub port: Option<u16>,
    /// `NUD_*` bits, as for [`Neigh::state`].
    pub state: u16,
}

fn mac6(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

fn neigh_from(msg: &NeighbourMessage) -> Option<Neigh> {
    if msg.header.family != AddressFamily::Inet {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(*a),
            NeighbourAttribute::LinkLayerAddress(l) => mac = mac6(l),
            _ => {}
        }
    }
    Some(Neigh {
        index: msg.header.ifindex,
        ip: ip?,
        mac,
        state: msg.header.state.into(),
    })
}

fn fdb_from(msg: &NeighbourMessage) -> Option<FdbEntry> {
    if msg.header.family != AddressFamily::Bridge {
        return None;
    }
    let mut e = FdbEntry {
        index: msg.header.ifindex,
        mac: [0; 6],
        dst: None,
        vni: None,
        port: None,
        state: msg.header.state.into(),
    };
    let mut has_mac = false;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::LinkLayerAddress(l) => {
                e.mac = mac6(l)?;
                has_mac = true;
            }
            // The family is AF_BRIDGE, so the library leaves the address
            // as bytes: four for an IPv4 remote.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                e.dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => e.dst = Some(*a),
            NeighbourAttribute::Vni(v) => e.vni = Some(*v),
            NeighbourAttribute::Port(p) => e.port = Some(*p),
            _ => {}
        }
    }
    has_mac.then_some(e)
}

/// An FDB request for `mac` -> `dst` on the device `index`, on the device
/// itself (`NTF_SELF`, `bridge fdb ... self`) rather than on a bridge above.
fn fdb_msg(index: u32, mac: [u8; 6], dst: Ipv4Addr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::from(FDB_STATE);
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
        NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)),
    ];
    msg
}

fn arp_msg(index: u32, ip: Ipv4Addr, mac: Option<[u8; 6]>) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(ip))];
    if let Some(mac) = mac {
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    }
    msg
}

impl Netlink {
    /// Adds a permanent ARP entry `ip` -> `mac` on link `index` (EEXIST if
    /// the link has an entry for `ip` already).
    pub fn add_neigh(&mut self, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<(), Error> {
        self.request(
            RouteNetlinkMessage::NewNeighbour(arp_msg(index, ip, Some(mac))),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("add neighbour {ip} on link {index}"),
        )?;
        Ok(())
    }

    /// Deletes the ARP entry for `ip` on link `index`; `Ok(false)` if there
    /// was none.
    pub fn delete_neigh(&mut self, index: u32, ip: Ipv4Addr) -> Result<bool, Error> {
        match self.request(
            RouteNetlinkMessage::DelNeighbour(arp_msg(index, ip, None)),
            0,
            &|| format!("delete neighbour {ip} on link {index}"),
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every IPv4 neighbour entry of the namespace, of every state.
    pub fn neighs(&mut self) -> Result<Vec<Neigh>, Error> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        let replies = self.dump(RouteNetlinkMessage::GetNeighbour(msg), &|| {
            "list neighbours".into()
        })?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => neigh_from(n),
                _ => None,
            })
            .collect())
    }

    /// `bridge fdb append <mac> dev <index> dst <dst>`: adds a remote for
    /// `mac` next to any it has (the all-zero MAC gathers one entry per
    /// remote for flooding). Appending a remote that is there is a no-op.
    pub fn fdb_append(&mut self, index: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), Error> {
        self.request(
            RouteNetlinkMessage::NewNeighbour(fdb_msg(index, mac, dst)),
            NLM_F_CREATE | NLM_F_APPEND,
            &|| {
                format!(
                    "append fdb entry {} dst {dst} on link {index}",
                    mac_hex(&mac)
                )
            },
        )?;
        Ok(())
    }

    /// Deletes the remote `dst` of `mac` on link `index`, leaving its other
    /// remotes. Deleting what is not there is no error: the kernel answers
    /// ENOENT only when `mac` has no entry at all, and success when it has
    /// other remotes, so "was it there" has no reliable answer.
    pub fn fdb_delete(&mut self, index: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), Error> {
        match self.request(
            RouteNetlinkMessage::DelNeighbour(fdb_msg(index, mac, dst)),
            0,
            &|| {
                format!(
                    "delete fdb entry {} dst {dst} on link {index}",
                    mac_hex(&mac)
                )
            },
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The FDB entries of link `index` (one per remote of each MAC).
    pub fn fdb(&mut self, index: u32) -> Result<Vec<FdbEntry>, Error> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        let replies = self.dump(RouteNetlinkMessage::GetNeighbour(msg), &|| {
            format!("list the fdb of link {index}")
        })?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => fdb_from(n),
                _ => None,
            })
            .filter(|e| e.index == index)
            .collect())
    }
}

fn mac_hex(m: &[u8; 6]) -> String {
    crate::pod::mac_string(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdb_and_arp_replies_are_told_apart_by_family() {
        let remote = Ipv4Addr::new(198, 18, 1, 2);
        let mut fdb = fdb_msg(7, [0; 6], remote);
        // As the kernel answers: the remote's bytes, with family AF_BRIDGE.
        fdb.attributes[1] =
            NeighbourAttribute::Destination(NeighbourAddress::Other(remote.octets().to_vec()));
        fdb.attributes.push(NeighbourAttribute::Vni(42));
        assert_eq!(
            fdb_from(&fdb),
            Some(FdbEntry {
                index: 7,
                mac: [0; 6],
                dst: Some(remote),
                vni: Some(42),
                port: None,
                state: FDB_STATE,
            })
        );
        assert_eq!(neigh_from(&fdb), None);
        let arp = arp_msg(3, remote, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(
            neigh_from(&arp),
            Some(Neigh {
                index: 3,
                ip: remote,
                mac: Some([2, 0, 0, 0, 0, 1]),
                state: 0x80,
            })
        );
        assert_eq!(fdb_from(&arp), None);
    }
}
