//! What the control plane needs from the datapath, as narrow traits: each
//! manager holds only the map it writes. The agent implements them over the
//! loaded BPF objects (the only code that makes BPF syscalls);
//! [`crate::fake::FakeDatapath`] implements them in memory for tests.
//!
//! Methods take `&self`: an implementation serializes its own writes.

use ipnet::Ipv4Net;
use pilus_abi::{CtEntry, CtKey4, EndpointInfo, IpcacheValue, PolicyKey, PolicyValue};

/// A datapath operation that failed, with the implementation's error.
#[derive(Debug, thiserror::Error)]
#[error("datapath: {op}")]
pub struct DatapathError {
    pub op: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl DatapathError {
    pub fn new(op: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        DatapathError {
            op,
            source: Box::new(source),
        }
    }
}

pub type DpResult<T> = Result<T, DatapathError>;

/// Local endpoints (`pilus_lxc`, `pilus_lxc_if`).
pub trait EndpointMap: Send + Sync {
    fn upsert_endpoint(&self, ep: &EndpointInfo) -> DpResult<()>;
    fn remove_endpoint(&self, ep: &EndpointInfo) -> DpResult<()>;
    fn endpoints(&self) -> DpResult<Vec<EndpointInfo>>;
}

/// Prefix → identity (and tunnel endpoint): `pilus_ipcache`.
pub trait IpcacheMap: Send + Sync {
    fn upsert_ipcache(&self, prefix: Ipv4Net, value: &IpcacheValue) -> DpResult<()>;
    fn remove_ipcache(&self, prefix: Ipv4Net) -> DpResult<()>;
    fn ipcache(&self) -> DpResult<Vec<(Ipv4Net, IpcacheValue)>>;
}

/// Per-endpoint policy entries and the enforced revision.
pub trait PolicyMap: Send + Sync {
    fn put_policy(&self, entries: &[(PolicyKey, PolicyValue)]) -> DpResult<()>;
    fn remove_policy(&self, keys: &[PolicyKey]) -> DpResult<()>;
    fn policy_entries(&self) -> DpResult<Vec<(PolicyKey, PolicyValue)>>;
    fn set_revision(&self, revision: u32) -> DpResult<()>;
    fn revision(&self) -> DpResult<u32>;
}

/// The pod programs on a host-side veth, attached so that they outlive the
/// agent; `attached` tells a restarted agent what is already there.
pub trait Links: Send + Sync {
    fn attach(&self, host_ifname: &str) -> DpResult<()>;
    fn attached(&self, host_ifname: &str) -> bool;
    fn detach(&self, host_ifname: &str) -> DpResult<()>;
}

/// Connection tracking, for `pilus bpf ct`.
pub trait Conntrack: Send + Sync {
    fn conntrack(&self) -> DpResult<Vec<(CtKey4, CtEntry)>>;
    fn flush_conntrack(&self) -> DpResult<usize>;
    /// The conntrack clock now, to show remaining lifetimes.
    fn ct_now(&self) -> DpResult<u32>;
}

/// Everything at once, as the agent hands it over.
pub trait Datapath: EndpointMap + IpcacheMap + PolicyMap + Links + Conntrack {
    /// For tests to reach a fake behind the trait object.
    fn as_any(&self) -> &dyn std::any::Any;
}
