//! The control plane's pod plumbing over rtnetlink (no process per
//! request), with the same `pilus_netlink::pod` code the CNI plugin uses.

use pilus_controlplane::plumbing::{PlumbError, PlumbFault, PlumbRequest, Plumbed, Plumbing};
use pilus_netlink::{pod, Netlink};
use std::os::fd::AsFd;

pub struct NetlinkPlumbing;

fn netlink_error(what: String) -> impl FnOnce(pilus_netlink::Error) -> PlumbError {
    move |e| PlumbError {
        fault: match e.errno() {
            Some(libc::EEXIST) => PlumbFault::Exists,
            _ => PlumbFault::Other,
        },
        what,
        source: Box::new(e),
    }
}

impl Plumbing for NetlinkPlumbing {
    fn create(&self, req: &PlumbRequest) -> Result<Plumbed, PlumbError> {
        let ns = std::fs::File::open(&req.netns).map_err(|e| PlumbError {
            fault: PlumbFault::NoNamespace,
            what: format!("network namespace {}", req.netns.display()),
            source: Box::new(e),
        })?;
        let mut nl = Netlink::open().map_err(netlink_error("opening rtnetlink".into()))?;
        let pair = pod::create(&mut nl, &req.host_ifname, ns.as_fd(), &req.ifname).map_err(
            netlink_error(format!(
                "creating veth {} (peer {})",
                req.host_ifname, req.ifname
            )),
        )?;
        pod::configure(ns.as_fd(), &req.ifname, req.ip, req.router, req.mtu).map_err(
            netlink_error(format!("configuring {} in the pod", req.ifname)),
        )?;
        pod::route_host(&mut nl, req.ip, pair.host.index).map_err(netlink_error(format!(
            "route {}/32 dev {}",
            req.ip, req.host_ifname
        )))?;
        Ok(Plumbed {
            host_ifindex: pair.host.index,
            host_mac: pair.host.mac,
            mac: pair.pod.mac,
        })
    }

    fn delete(&self, host_ifname: &str) -> Result<(), PlumbError> {
        let what = format!("deleting {host_ifname}");
        let mut nl = Netlink::open().map_err(netlink_error(what.clone()))?;
        nl.delete_link(host_ifname)
            .map(|_| ())
            .map_err(netlink_error(what))
    }

    fn lookup(&self, host_ifname: &str) -> Option<(u32, [u8; 6])> {
        let l = Netlink::open().ok()?.link(host_ifname).ok()??;
        Some((l.index, l.mac))
    }
}
