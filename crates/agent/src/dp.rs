//! The agent's view of the datapath: the map writes and attachments it
//! makes. One implementation drives the real pinned maps; [`FakeDatapath`]
//! keeps them in memory so the agent's logic is tested without root.

use pilus_abi::{CtEntry, CtKey4, EndpointInfo, IpcacheValue, PolicyKey, PolicyValue};
use pilus_datapath::Datapath;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
};

pub type DpResult<T> = Result<T, pilus_datapath::Error>;

pub trait Maps: Send {
    fn upsert_endpoint(&mut self, ep: &EndpointInfo) -> DpResult<()>;
    fn remove_endpoint(&mut self, ep: &EndpointInfo) -> DpResult<()>;
    fn endpoints(&self) -> DpResult<Vec<EndpointInfo>>;
    fn upsert_ipcache(&mut self, ip: Ipv4Addr, len: u32, identity: u32) -> DpResult<()>;
    fn remove_ipcache(&mut self, ip: Ipv4Addr, len: u32) -> DpResult<()>;
    fn ipcache(&self) -> DpResult<Vec<(Ipv4Addr, u32, IpcacheValue)>>;
    fn put_policy(&mut self, entries: &[(PolicyKey, PolicyValue)]) -> DpResult<()>;
    fn remove_policy(&mut self, keys: &[PolicyKey]) -> DpResult<()>;
    fn policy_entries(&self) -> DpResult<Vec<(PolicyKey, PolicyValue)>>;
    fn set_revision(&mut self, r: u32) -> DpResult<()>;
    fn revision(&self) -> DpResult<u32>;
    fn conntrack(&self) -> DpResult<Vec<(CtKey4, CtEntry)>>;
    fn flush_conntrack(&mut self) -> DpResult<usize>;
    /// Attaches the pod programs to a host-side veth, pinned so they
    /// outlive the agent.
    fn attach(&mut self, host_ifname: &str) -> DpResult<()>;
    fn attached(&self, host_ifname: &str) -> bool;
    fn detach(&mut self, host_ifname: &str) -> DpResult<()>;
    /// The conntrack clock now, to show remaining lifetimes.
    fn ct_now(&self) -> DpResult<u32>;
    /// For tests to reach a fake behind the trait object.
    fn as_any(&self) -> &dyn std::any::Any;
}

impl Maps for Datapath {
    fn upsert_endpoint(&mut self, ep: &EndpointInfo) -> DpResult<()> {
        Datapath::upsert_endpoint(self, ep)
    }
    fn remove_endpoint(&mut self, ep: &EndpointInfo) -> DpResult<()> {
        Datapath::remove_endpoint(self, ep)
    }
    fn endpoints(&self) -> DpResult<Vec<EndpointInfo>> {
        Datapath::endpoints(self)
    }
    fn upsert_ipcache(&mut self, ip: Ipv4Addr, len: u32, identity: u32) -> DpResult<()> {
        let v = IpcacheValue {
            sec_identity: identity,
            ..Default::default()
        };
        Datapath::upsert_ipcache(self, ip, len, &v)
    }
    fn remove_ipcache(&mut self, ip: Ipv4Addr, len: u32) -> DpResult<()> {
        Datapath::remove_ipcache(self, ip, len)
    }
    fn ipcache(&self) -> DpResult<Vec<(Ipv4Addr, u32, IpcacheValue)>> {
        Datapath::ipcache(self)
    }
    fn put_policy(&mut self, entries: &[(PolicyKey, PolicyValue)]) -> DpResult<()> {
        self.put_policy_raw(entries)
    }
    fn remove_policy(&mut self, keys: &[PolicyKey]) -> DpResult<()> {
        self.remove_policy_raw(keys)
    }
    fn policy_entries(&self) -> DpResult<Vec<(PolicyKey, PolicyValue)>> {
        Datapath::policy_entries(self)
    }
    fn set_revision(&mut self, r: u32) -> DpResult<()> {
        self.set_policy_revision(r)
    }
    fn revision(&self) -> DpResult<u32> {
        self.policy_revision()
    }
    fn conntrack(&self) -> DpResult<Vec<(CtKey4, CtEntry)>> {
        Datapath::conntrack(self)
    }
    fn flush_conntrack(&mut self) -> DpResult<usize> {
        Datapath::flush_conntrack(self)
    }
    fn attach(&mut self, host_ifname: &str) -> DpResult<()> {
        self.attach_endpoint_pinned(host_ifname)
    }
    fn attached(&self, host_ifname: &str) -> bool {
        self.endpoint_links_pinned(host_ifname)
    }
    fn detach(&mut self, host_ifname: &str) -> DpResult<()> {
        self.detach_endpoint_pinned(host_ifname)
    }
    fn ct_now(&self) -> DpResult<u32> {
        Datapath::ct_now(self)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// In-memory maps with the same semantics (for tests without root).
#[derive(Default, Clone, Debug)]
pub struct FakeDatapath {
    pub endpoints: BTreeMap<u32, EndpointInfo>,
    pub ipcache: BTreeMap<(Ipv4Addr, u32), u32>,
    pub policy: HashMap<PolicyKey, PolicyValue>,
    pub revision: u32,
    pub attached: BTreeSet<String>,
    /// Counts map writes, to check that a no-op changes nothing.
    pub writes: usize,
}

impl Maps for FakeDatapath {
    fn upsert_endpoint(&mut self, ep: &EndpointInfo) -> DpResult<()> {
        self.writes += 1;
        self.endpoints.insert(ep.ifindex, *ep);
        Ok(())
    }
    fn remove_endpoint(&mut self, ep: &EndpointInfo) -> DpResult<()> {
        self.writes += 1;
        self.endpoints.remove(&ep.ifindex);
        Ok(())
    }
    fn endpoints(&self) -> DpResult<Vec<EndpointInfo>> {
        Ok(self.endpoints.values().copied().collect())
    }
    fn upsert_ipcache(&mut self, ip: Ipv4Addr, len: u32, identity: u32) -> DpResult<()> {
        self.writes += 1;
        self.ipcache.insert((ip, len), identity);
        Ok(())
    }
    fn remove_ipcache(&mut self, ip: Ipv4Addr, len: u32) -> DpResult<()> {
        self.writes += 1;
        self.ipcache.remove(&(ip, len));
        Ok(())
    }
    fn ipcache(&self) -> DpResult<Vec<(Ipv4Addr, u32, IpcacheValue)>> {
        Ok(self
            .ipcache
            .iter()
            .map(|(&(ip, len), &id)| {
                (
                    ip,
                    len,
                    IpcacheValue {
                        sec_identity: id,
                        ..Default::default()
                    },
                )
            })
            .collect())
    }
    fn put_policy(&mut self, entries: &[(PolicyKey, PolicyValue)]) -> DpResult<()> {
        self.writes += entries.len();
        self.policy.extend(entries.iter().copied());
        Ok(())
    }
    fn remove_policy(&mut self, keys: &[PolicyKey]) -> DpResult<()> {
        self.writes += keys.len();
        for k in keys {
            self.policy.remove(k);
        }
        Ok(())
    }
    fn policy_entries(&self) -> DpResult<Vec<(PolicyKey, PolicyValue)>> {
        Ok(self.policy.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn set_revision(&mut self, r: u32) -> DpResult<()> {
        self.writes += 1;
        self.revision = r;
        Ok(())
    }
    fn revision(&self) -> DpResult<u32> {
        Ok(self.revision)
    }
    fn conntrack(&self) -> DpResult<Vec<(CtKey4, CtEntry)>> {
        Ok(Vec::new())
    }
    fn flush_conntrack(&mut self) -> DpResult<usize> {
        Ok(0)
    }
    fn attach(&mut self, host_ifname: &str) -> DpResult<()> {
        self.attached.insert(host_ifname.to_string());
        Ok(())
    }
    fn attached(&self, host_ifname: &str) -> bool {
        self.attached.contains(host_ifname)
    }
    fn detach(&mut self, host_ifname: &str) -> DpResult<()> {
        self.attached.remove(host_ifname);
        Ok(())
    }
    fn ct_now(&self) -> DpResult<u32> {
        Ok(0)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
