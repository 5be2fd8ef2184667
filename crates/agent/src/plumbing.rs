//! A pod's network plumbing: the veth pair (host side `lxc…` in the agent's
//! namespace, pod side in the pod's namespace), the pod's address and its
//! routes to the gateway, when the agent is asked through its API (the CNI
//! plugin does the same itself, with the same `pilus_netlink::pod` code).
//! [`NetlinkPlumbing`] does it over rtnetlink; [`FakePlumbing`] records
//! calls for tests.

use pilus_netlink::{pod, Netlink};
use std::{
    net::Ipv4Addr,
    os::fd::AsFd,
    path::PathBuf,
    sync::{Arc, Mutex},
};

#[derive(Debug, thiserror::Error)]
pub enum PlumbError {
    #[error("network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netlink {
        #[from]
        source: pilus_netlink::Error,
    },
}

#[derive(Clone, Debug)]
pub struct PlumbRequest {
    pub netns: PathBuf,
    pub ifname: String,
    pub host_ifname: String,
    pub ip: Ipv4Addr,
    pub router: Ipv4Addr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plumbed {
    pub host_ifindex: u32,
    pub host_mac: [u8; 6],
    pub mac: [u8; 6],
}

pub trait Plumbing: Send + Sync {
    fn create(&self, req: &PlumbRequest) -> Result<Plumbed, PlumbError>;
    /// Deletes the host side (the pod side goes with it); a missing link
    /// is fine.
    fn delete(&self, host_ifname: &str) -> Result<(), PlumbError>;
    /// The host side's ifindex and MAC, if the link exists.
    fn lookup(&self, host_ifname: &str) -> Option<(u32, [u8; 6])>;
}

/// The real thing, over rtnetlink (no process per request).
pub struct NetlinkPlumbing;

impl Plumbing for NetlinkPlumbing {
    fn create(&self, req: &PlumbRequest) -> Result<Plumbed, PlumbError> {
        let nl_err = |source| PlumbError::Netlink { source };
        let ns = std::fs::File::open(&req.netns).map_err(|source| PlumbError::Netns {
            path: req.netns.clone(),
            source,
        })?;
        let mut nl = Netlink::open().map_err(nl_err)?;
        let pair =
            pod::create(&mut nl, &req.host_ifname, ns.as_fd(), &req.ifname).map_err(nl_err)?;
        pod::configure(ns.as_fd(), &req.ifname, req.ip, req.router).map_err(nl_err)?;
        Ok(Plumbed {
            host_ifindex: pair.host.index,
            host_mac: pair.host.mac,
            mac: pair.pod.mac,
        })
    }

    fn delete(&self, host_ifname: &str) -> Result<(), PlumbError> {
        let mut nl = Netlink::open().map_err(|source| PlumbError::Netlink { source })?;
        nl.delete_link(host_ifname)
            .map(|_| ())
            .map_err(|source| PlumbError::Netlink { source })
    }

    fn lookup(&self, host_ifname: &str) -> Option<(u32, [u8; 6])> {
        let l = Netlink::open().ok()?.link(host_ifname).ok()??;
        Some((l.index, l.mac))
    }
}

/// Records plumbing without touching the kernel; clones share the links
/// (as a restarted agent sees the same kernel).
#[derive(Clone, Default)]
pub struct FakePlumbing {
    pub links: Arc<Mutex<Vec<(String, u32)>>>,
}

impl Plumbing for FakePlumbing {
    fn create(&self, req: &PlumbRequest) -> Result<Plumbed, PlumbError> {
        let mut links = self.links.lock().expect("lock");
        let idx = 100 + links.iter().map(|(_, i)| i - 99).max().unwrap_or(0);
        links.push((req.host_ifname.clone(), idx));
        Ok(Plumbed {
            host_ifindex: idx,
            host_mac: [2, 0, 0, 0, 0, idx as u8],
            mac: [2, 1, 0, 0, 0, idx as u8],
        })
    }
    fn delete(&self, host_ifname: &str) -> Result<(), PlumbError> {
        self.links
            .lock()
            .expect("lock")
            .retain(|(n, _)| n != host_ifname);
        Ok(())
    }
    fn lookup(&self, host_ifname: &str) -> Option<(u32, [u8; 6])> {
        self.links
            .lock()
            .expect("lock")
            .iter()
            .find(|(n, _)| n == host_ifname)
            .map(|(_, i)| (*i, [2, 0, 0, 0, 0, *i as u8]))
    }
}
