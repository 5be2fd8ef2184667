//! A pod's network plumbing as the control plane asks for it: the veth
//! pair (host side `lxc…` in the agent's namespace, pod side in the pod's),
//! the pod's address and routes. The agent implements it over rtnetlink
//! (`pilus_netlink::pod`, shared with the CNI plugin);
//! [`crate::fake::FakePlumbing`] records calls for tests.

use std::{net::Ipv4Addr, path::PathBuf};

/// Whose fault a plumbing failure is: it decides the API's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlumbFault {
    /// The pod's network namespace does not exist (the caller's fault).
    NoNamespace,
    /// An interface or route the request needs is there already.
    Exists,
    /// The kernel refused for another reason.
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("plumbing the endpoint's network: {what}")]
pub struct PlumbError {
    pub fault: PlumbFault,
    pub what: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

#[derive(Clone, Debug)]
pub struct PlumbRequest {
    pub netns: PathBuf,
    pub ifname: String,
    pub host_ifname: String,
    pub ip: Ipv4Addr,
    pub router: Ipv4Addr,
    /// The pod interface's MTU, if not the default (tunnel mode).
    pub mtu: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plumbed {
    pub host_ifindex: u32,
    pub host_mac: [u8; 6],
    pub mac: [u8; 6],
}

pub trait Plumbing: Send + Sync {
    fn create(&self, req: &PlumbRequest) -> Result<Plumbed, PlumbError>;
    /// Deletes the host side (the pod side goes with it); a missing link is
    /// fine.
    fn delete(&self, host_ifname: &str) -> Result<(), PlumbError>;
    /// The host side's ifindex and MAC, if the link exists.
    fn lookup(&self, host_ifname: &str) -> Option<(u32, [u8; 6])>;
}
