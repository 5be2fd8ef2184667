//! IPv4 addresses, routes and policy routing rules: what a pod needs made,
//! and what a `pilus doctor` needs to read (every table, and the `ip rule`s
//! that choose between them).

use crate::{Error, Netlink};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage, AddressScope},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
    rule::{RuleAttribute, RuleMessage},
    AddressFamily, RouteNetlinkMessage,
};
use std::net::{IpAddr, Ipv4Addr};

/// The main routing table (`RT_TABLE_MAIN`), where routes go by default.
pub const TABLE_MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// An IPv4 address on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

/// An IPv4 route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub dst_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    /// `rtm_scope`: 0 universe, 253 link, 254 host.
    pub scope: u8,
    /// The table's id: 254 main, 255 local, 253 default, or any other.
    pub table: u32,
    /// `rtm_type`: 1 unicast, 2 local, 3 broadcast, 6 blackhole,
    /// 7 unreachable, 8 prohibit...
    pub kind: u8,
    /// The metric (`RTA_PRIORITY`), if set.
    pub metric: Option<u32>,
    /// The preferred source address (`RTA_PREFSRC`), if set.
    pub prefsrc: Option<Ipv4Addr>,
}

/// An IPv4 policy routing rule (`ip rule`): packets that match every
/// selector set here go to `table` (when `action` is 1, "to table").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub priority: u32,
    pub table: u32,
    /// `from`: 0.0.0.0/0 for "all".
    pub src: Ipv4Addr,
    pub src_len: u8,
    /// `to`: 0.0.0.0/0 for "all".
    pub dst: Ipv4Addr,
    pub dst_len: u8,
    /// `iif`, `oif`: input and output interface names.
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub fwmark: Option<u32>,
    pub fwmask: Option<u32>,
    /// `FR_ACT_*`: 1 to table, 2 goto, 3 nop, 6 blackhole, 7 unreachable,
    /// 8 prohibit.
    pub action: u8,
}

impl Rule {
    /// `PRIORITY: from all lookup TABLE`, the shape of the rules every
    /// namespace starts with.
    pub fn to_table(priority: u32, table: u32) -> Rule {
        Rule {
            priority,
            table,
            src: Ipv4Addr::UNSPECIFIED,
            src_len: 0,
            dst: Ipv4Addr::UNSPECIFIED,
            dst_len: 0,
            iif: None,
            oif: None,
            fwmark: None,
            fwmask: None,
            action: 1,
        }
    }
}

fn ipv4(a: &RouteAddress) -> Option<Ipv4Addr> {
    match a {
        RouteAddress::Inet(ip) => Some(*ip),
        _ => None,
    }
}

fn route_from(msg: &RouteMessage) -> Option<Route> {
    if msg.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut r = Route {
        dst: Ipv4Addr::UNSPECIFIED,
        dst_len: msg.header.destination_prefix_length,
        gateway: None,
        oif: None,
        scope: msg.header.scope.into(),
        // RTA_TABLE, below, holds ids beyond 255; the header's u8 is the
        // fallback of kernels before 2.6.19.
        table: msg.header.table.into(),
        kind: msg.header.kind.into(),
        metric: None,
        prefsrc: None,
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => r.dst = ipv4(a)?,
            RouteAttribute::Gateway(a) => r.gateway = ipv4(a),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Priority(p) => r.metric = Some(*p),
            RouteAttribute::PrefSource(a) => r.prefsrc = ipv4(a),
            _ => {}
        }
    }
    Some(r)
}

fn addr_from(msg: &AddressMessage) -> Option<Addr> {
    if msg.header.family != AddressFamily::Inet {
        return None;
    }
    let (mut local, mut address) = (None, None);
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(ip)) => local = Some(*ip),
            AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from
    // it only on point-to-point links (where it is the peer's).
    Some(Addr {
        index: msg.header.index,
        ip: local.or(address)?,
        prefix_len: msg.header.prefix_len,
    })
}

fn rule_from(msg: &RuleMessage) -> Option<Rule> {
    if msg.header.family != AddressFamily::Inet {
        return None;
    }
    let mut r = Rule {
        priority: 0,
        table: msg.header.table.into(),
        src: Ipv4Addr::UNSPECIFIED,
        src_len: msg.header.src_len,
        dst: Ipv4Addr::UNSPECIFIED,
        dst_len: msg.header.dst_len,
        iif: None,
        oif: None,
        fwmark: None,
        fwmask: None,
        action: msg.header.action.into(),
    };
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::Priority(p) => r.priority = *p,
            RuleAttribute::Table(t) => r.table = *t,
            RuleAttribute::Source(IpAddr::V4(ip)) => r.src = *ip,
            RuleAttribute::Destination(IpAddr::V4(ip)) => r.dst = *ip,
            RuleAttribute::Iifname(n) => r.iif = Some(n.clone()),
            RuleAttribute::Oifname(n) => r.oif = Some(n.clone()),
            RuleAttribute::FwMark(m) => r.fwmark = Some(*m),
            RuleAttribute::FwMask(m) => r.fwmask = Some(*m),
            _ => {}
        }
    }
    Some(r)
}

impl Netlink {
    /// Adds `ip/prefix_len` to a link (EEXIST if it is there already).
    pub fn add_addr(&mut self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<(), Error> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix_len;
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        msg.attributes = vec![
            AddressAttribute::Local(ip.into()),
            AddressAttribute::Address(ip.into()),
        ];
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("add address {ip}/{prefix_len} to link {index}"),
        )?;
        Ok(())
    }

    /// Every IPv4 address in the namespace.
    pub fn addrs(&mut self) -> Result<Vec<Addr>, Error> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        let replies = self.dump(RouteNetlinkMessage::GetAddress(msg), &|| {
            "list addresses".into()
        })?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => addr_from(a),
                _ => None,
            })
            .collect())
    }

    /// Adds a route of the main table via link `oif` (`gateway: None`: an
    /// on-link, scope link route). Never replaces: a route to the same
    /// destination that exists already (another interface's) fails with
    /// EEXIST.
    pub fn add_route(
        &mut self,
        dst: Ipv4Addr,
        dst_len: u8,
        gateway: Option<Ipv4Addr>,
        oif: u32,
    ) -> Result<(), Error> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = dst_len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = if gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        msg.header.kind = RouteType::Unicast;
        if dst_len > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        }
        if let Some(gw) = gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(oif));
        // NLM_F_EXCL without NLM_F_REPLACE: the kernel answers EEXIST
        // rather than taking over a route (found by the CNI fuzz campaign,
        // issue 15: a replaced default route left a pod without one).
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| match gateway {
                Some(gw) => format!("add route {dst}/{dst_len} via {gw} (link {oif})"),
                None => format!("add route {dst}/{dst_len} on link {oif}"),
            },
        )?;
        Ok(())
    }

    /// Deletes the main table's route to `dst/dst_len`; true if it was
    /// there (a missing one is fine: deleting is idempotent).
    pub fn delete_route(&mut self, dst: Ipv4Addr, dst_len: u8) -> Result<bool, Error> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = dst_len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.scope = RouteScope::NoWhere;
        if dst_len > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        }
        match self.request(RouteNetlinkMessage::DelRoute(msg), 0, &|| {
            format!("delete route {dst}/{dst_len}")
        }) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>, Error> {
        let mut all = self.routes_all()?;
        all.retain(|r| r.table == TABLE_MAIN);
        Ok(all)
    }

    /// The IPv4 routes of every table (main, local, and any other), each
    /// with its table's id.
    pub fn routes_all(&mut self) -> Result<Vec<Route>, Error> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let replies = self.dump(RouteNetlinkMessage::GetRoute(msg), &|| "list routes".into())?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => route_from(r),
                _ => None,
            })
            .collect())
    }

    /// The IPv4 policy routing rules, in the kernel's order (by priority).
    pub fn rules(&mut self) -> Result<Vec<Rule>, Error> {
        let mut msg = RuleMessage::default();
        msg.header.family = AddressFamily::Inet;
        let replies = self.dump(RouteNetlinkMessage::GetRule(msg), &|| "list rules".into())?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => rule_from(r),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_reply_keeps_its_table() {
        let gw = Ipv4Addr::new(198, 18, 0, 1);
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = 252; // RTA_TABLE wins over the header's byte
        msg.header.kind = RouteType::Unicast;
        msg.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet(gw)),
            RouteAttribute::Oif(3),
            RouteAttribute::Table(1000),
            RouteAttribute::Priority(20),
        ];
        let r = route_from(&msg).unwrap();
        assert_eq!(
            (r.dst_len, r.gateway, r.oif, r.table, r.kind, r.metric),
            (0, Some(gw), Some(3), 1000, 1, Some(20))
        );
        msg.header.address_family = AddressFamily::Inet6;
        assert_eq!(route_from(&msg), None, "IPv6 routes are not ours to read");
    }

    #[test]
    fn an_address_reply_prefers_the_local_address() {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = 32;
        msg.header.index = 4;
        msg.attributes = vec![
            AddressAttribute::Address(Ipv4Addr::new(198, 18, 0, 9).into()),
            AddressAttribute::Local(Ipv4Addr::new(198, 18, 0, 7).into()),
        ];
        assert_eq!(
            addr_from(&msg),
            Some(Addr {
                index: 4,
                ip: Ipv4Addr::new(198, 18, 0, 7),
                prefix_len: 32
            })
        );
    }
}
