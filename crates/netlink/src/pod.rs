//! A pod's interface as Pilus makes it, in one place for the CNI plugin and
//! the agent: a veth pair whose host side (`lxc…`) stays in the caller's
//! namespace and whose pod side is created inside the pod's namespace; a
//! /32 address; an on-link route to the gateway and a default route via it
//! (the gateway's ARP is answered by the datapath on the host side); and on
//! the host, a /32 route to the pod through its veth.

use crate::{in_netns, Error, Link, Netlink};
use std::{net::Ipv4Addr, os::fd::BorrowedFd};

/// A link that should be there and is not (ENODEV, as the kernel says).
fn missing(op: String) -> Error {
    Error::Kernel {
        op,
        detail: None,
        source: std::io::Error::from_raw_os_error(libc::ENODEV),
    }
}

/// Both ends of a pod's veth pair, as created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub host: Link,
    pub pod: Link,
}

/// Best effort: IPv6 off on pod links keeps router solicitations and DAD
/// (which the IPv4-only datapath would only count as drops) off the wire.
fn ipv6_off(ifname: &str) {
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
        "1",
    );
}

/// Creates the pair and sets the host side up. On failure nothing is left
/// behind (a pair half made is deleted).
pub fn create(
    host: &mut Netlink,
    host_ifname: &str,
    netns: BorrowedFd<'_>,
    ifname: &str,
) -> Result<Pair, Error> {
    host.create_veth(host_ifname, ifname, netns)?;
    let made = (|| {
        let host_link = host
            .link(host_ifname)?
            .ok_or_else(|| missing(format!("look up {host_ifname} after creating it")))?;
        ipv6_off(host_ifname);
        host.set_up(host_link.index)?;
        let mut in_pod = Netlink::open_in(netns)?;
        let pod = in_pod
            .link(ifname)?
            .ok_or_else(|| missing(format!("look up {ifname} in the pod after creating it")))?;
        Ok(Pair {
            host: host_link,
            pod,
        })
    })();
    if made.is_err() {
        let _ = host.delete_link(host_ifname);
    }
    made
}

/// Inside the pod: `lo` up, the address, the link up, the routes.
pub fn configure(
    netns: BorrowedFd<'_>,
    ifname: &str,
    ip: Ipv4Addr,
    gateway: Ipv4Addr,
    mtu: Option<u32>,
) -> Result<(), Error> {
    in_netns(netns, || -> Result<(), Error> {
        let mut nl = Netlink::open()?;
        ipv6_off(ifname);
        if let Some(lo) = nl.link("lo")? {
            nl.set_up(lo.index)?;
        }
        let link = nl
            .link(ifname)?
            .ok_or_else(|| missing(format!("look up {ifname} in the pod")))?;
        match nl.add_addr(link.index, ip, 32) {
            Err(e) if e.errno() != Some(libc::EEXIST) => return Err(e),
            _ => {}
        }
        // Before the link is up, so the pod never sends what the node's
        // tunnel cannot carry.
        if let Some(mtu) = mtu {
            nl.set_mtu(link.index, mtu)?;
        }
        nl.set_up(link.index)?;
        // Added, never replaced: in a namespace where another interface
        // already routes to the gateway or by default, replacing would take
        // that interface's routes, and deleting this one later would leave
        // the pod with none (found by the CNI fuzz campaign, issue 15).
        let routes = [
            (gateway, 32, None),
            (Ipv4Addr::UNSPECIFIED, 0, Some(gateway)),
        ];
        for (dst, len, via) in routes {
            nl.add_route(dst, len, via, link.index)
                .map_err(|e| match e.errno() {
                    Some(libc::EEXIST) => Error::RouteTaken {
                        dst: format!("{dst}/{len}"),
                        ifname: ifname.to_string(),
                    },
                    _ => e,
                })?;
        }
        Ok(())
    })?
}

/// The route [`configure`] would need that the pod's namespace already
/// has through another interface (a default route, or one to `gateway`),
/// so an ADD can be refused before anything is made.
pub fn route_taken(netns: BorrowedFd<'_>, gateway: Ipv4Addr) -> Result<Option<String>, Error> {
    let routes = Netlink::open_in(netns)?.routes()?;
    Ok(routes
        .iter()
        .find(|r| r.dst_len == 0 || (r.dst_len == 32 && r.dst == gateway))
        .map(|r| format!("{}/{}", r.dst, r.dst_len)))
}

/// What [`check`] expects to find.
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    pub host_ifname: &'a str,
    pub ifname: &'a str,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// The pod side's MAC, if known.
    pub mac: Option<[u8; 6]>,
}

/// Checks that the pod's interface is still as [`create`] and
/// [`configure`] left it; `Ok(problems)` lists every difference found.
/// On the host (the caller's namespace): the route to the pod's address
/// through its veth, as Cilium's per-endpoint routes. The node's own
/// traffic to the pod, and what its stack forwards to it, take it and
/// enter the pod through the to-container program. The route goes with
/// the veth. A route to `ip` already there names an address the agent has
/// just given to this pod: it is replaced.
pub fn route_host(nl: &mut Netlink, ip: Ipv4Addr, host_index: u32) -> Result<(), Error> {
    match nl.add_route(ip, 32, None, host_index) {
        Err(e) if e.errno() == Some(libc::EEXIST) => {
            nl.delete_route(ip, 32)?;
            nl.add_route(ip, 32, None, host_index)
        }
        other => other,
    }
}

pub fn check(
    host: &mut Netlink,
    netns: BorrowedFd<'_>,
    want: &Expected<'_>,
) -> Result<Vec<String>, Error> {
    let mut problems = Vec::new();
    match host.link(want.host_ifname)? {
        None => problems.push(format!("host interface {} is missing", want.host_ifname)),
        Some(l) => {
            if !l.up {
                problems.push(format!("host interface {} is down", want.host_ifname));
            }
            let routed = host.routes()?.iter().any(|r| {
                r.dst == want.ip && r.dst_len == 32 && r.gateway.is_none() && r.oif == Some(l.index)
            });
            if !routed {
                problems.push(format!(
                    "the host has no route to {}/32 through {}",
                    want.ip, want.host_ifname
                ));
            }
        }
    }
    let mut nl = Netlink::open_in(netns)?;
    let Some(link) = nl.link(want.ifname)? else {
        problems.push(format!("interface {} is missing in the pod", want.ifname));
        return Ok(problems);
    };
    if !link.up {
        problems.push(format!("interface {} is down", want.ifname));
    }
    if let Some(mac) = want.mac {
        if link.mac != mac {
            problems.push(format!(
                "interface {} has MAC {} instead of {}",
                want.ifname,
                mac_string(&link.mac),
                mac_string(&mac)
            ));
        }
    }
    let addrs = nl.addrs()?;
    if !addrs
        .iter()
        .any(|a| a.index == link.index && a.ip == want.ip && a.prefix_len == 32)
    {
        problems.push(format!(
            "interface {} does not have address {}/32",
            want.ifname, want.ip
        ));
    }
    let routes = nl.routes()?;
    if !routes
        .iter()
        .any(|r| r.dst_len == 0 && r.gateway == Some(want.gateway) && r.oif == Some(link.index))
    {
        problems.push(format!(
            "no default route via {} on {}",
            want.gateway, want.ifname
        ));
    }
    Ok(problems)
}

pub fn mac_string(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m = [0x02, 0xab, 0, 1, 0xff, 9];
        assert_eq!(parse_mac(&mac_string(&m)), Some(m));
        assert_eq!(parse_mac("02:ab:00:01:ff"), None);
        assert_eq!(parse_mac("02:ab:00:01:ff:09:00"), None);
        assert_eq!(parse_mac("zz:ab:00:01:ff:09"), None);
    }
}
