//! What the control plane needs from the datapath, as narrow traits: each
//! manager holds only the map it writes (endpoints, ipcache, policy, the
//! service maps; conntrack for its GC). The agent implements them over the
//! loaded BPF objects (the only code that makes BPF syscalls);
//! [`crate::fake::FakeDatapath`] implements them in memory for tests.
//!
//! Methods take `&self`: an implementation serializes its own writes.

use ipnet::Ipv4Net;
use pilus_abi::{
    CtEntry, CtKey4, EndpointInfo, IpcacheValue, Lb4Backend, Lb4Key, Lb4Maglev, Lb4MaglevKey,
    Lb4ReverseNat, Lb4Service, Lb4SlotKey, PolicyKey, PolicyValue,
};

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

/// What one conntrack GC pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtGcPass {
    /// Entries seen, and the expired ones removed.
    pub scanned: u64,
    pub deleted: u64,
    /// Expired affinity entries removed.
    pub affinity_deleted: u64,
    /// Masquerade's NAT entries seen and the expired ones removed (a
    /// flow's two entries lapse together).
    pub nat_scanned: u64,
    pub nat_deleted: u64,
}

/// Connection tracking, for `pilus bpf ct` and the GC.
pub trait Conntrack: Send + Sync {
    fn conntrack(&self) -> DpResult<Vec<(CtKey4, CtEntry)>>;
    fn flush_conntrack(&self) -> DpResult<usize>;
    /// The conntrack clock now, to show remaining lifetimes.
    fn ct_now(&self) -> DpResult<u32>;
    /// One GC pass: expired conntrack and affinity entries removed.
    fn ct_gc(&self) -> DpResult<CtGcPass>;
    /// The table's size (full, it refuses new flows).
    fn ct_max_entries(&self) -> DpResult<u64>;
    /// New flows the datapath refused because an entry could not be
    /// written, since the maps were made.
    fn ct_insert_failures(&self) -> DpResult<u64>;
}

/// The service maps (`pilus_lb4_*`). The order of writes that keeps a
/// change atomic per frontend is [`crate::services`]'s.
pub trait ServiceMap: Send + Sync {
    fn put_lb_services(&self, entries: &[(Lb4Key, Lb4Service)]) -> DpResult<()>;
    fn remove_lb_services(&self, keys: &[Lb4Key]) -> DpResult<()>;
    fn lb_services(&self) -> DpResult<Vec<(Lb4Key, Lb4Service)>>;
    fn put_lb_slots(&self, entries: &[(Lb4SlotKey, u32)]) -> DpResult<()>;
    fn remove_lb_slots(&self, keys: &[Lb4SlotKey]) -> DpResult<()>;
    fn lb_slots(&self) -> DpResult<Vec<(Lb4SlotKey, u32)>>;
    fn put_lb_backends(&self, entries: &[(u32, Lb4Backend)]) -> DpResult<()>;
    fn remove_lb_backends(&self, ids: &[u32]) -> DpResult<()>;
    fn lb_backends(&self) -> DpResult<Vec<(u32, Lb4Backend)>>;
    fn put_lb_maglev(&self, key: &Lb4MaglevKey, table: &Lb4Maglev) -> DpResult<()>;
    fn remove_lb_maglev(&self, key: &Lb4MaglevKey) -> DpResult<()>;
    fn lb_maglev_keys(&self) -> DpResult<Vec<Lb4MaglevKey>>;
    fn lb_maglev(&self, key: &Lb4MaglevKey) -> DpResult<Option<Box<Lb4Maglev>>>;
    fn put_lb_rev_nat(&self, entries: &[(u32, Lb4ReverseNat)]) -> DpResult<()>;
    fn remove_lb_rev_nat(&self, ids: &[u32]) -> DpResult<()>;
    fn lb_rev_nat(&self) -> DpResult<Vec<(u32, Lb4ReverseNat)>>;
}

/// Everything at once, as the agent hands it over.
pub trait Datapath: EndpointMap + IpcacheMap + PolicyMap + Links + Conntrack + ServiceMap {
    /// For tests to reach a fake behind the trait object.
    fn as_any(&self) -> &dyn std::any::Any;
}
