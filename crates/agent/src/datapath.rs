//! The control plane's datapath traits (and the monitor's settings) over the
//! loaded, pinned BPF objects: the one place in the agent that reaches
//! `pilus_datapath` (and through it aya). The maps sit behind one lock; each
//! call is a few map operations.

use ipnet::Ipv4Net;
use pilus_abi::{CtEntry, CtKey4, EndpointInfo, IpcacheValue, PolicyKey, PolicyValue};
use pilus_controlplane::datapath::{
    Conntrack, Datapath, DatapathError, DpResult, EndpointMap, IpcacheMap, Links, PolicyMap,
};
use std::sync::{Mutex, MutexGuard};

pub struct Pinned(Mutex<pilus_datapath::Datapath>);

impl Pinned {
    pub fn new(dp: pilus_datapath::Datapath) -> Pinned {
        Pinned(Mutex::new(dp))
    }

    fn dp(&self) -> MutexGuard<'_, pilus_datapath::Datapath> {
        // A panic mid-call leaves the kernel's maps as they are; the
        // control plane's next resync reconciles them.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn err(op: &'static str) -> impl FnOnce(pilus_datapath::Error) -> DatapathError {
    move |e| DatapathError::new(op, e)
}

impl EndpointMap for Pinned {
    fn upsert_endpoint(&self, ep: &EndpointInfo) -> DpResult<()> {
        self.dp()
            .upsert_endpoint(ep)
            .map_err(err("write the endpoint map"))
    }
    fn remove_endpoint(&self, ep: &EndpointInfo) -> DpResult<()> {
        self.dp()
            .remove_endpoint(ep)
            .map_err(err("remove from the endpoint map"))
    }
    fn endpoints(&self) -> DpResult<Vec<EndpointInfo>> {
        self.dp().endpoints().map_err(err("read the endpoint map"))
    }
}

impl IpcacheMap for Pinned {
    fn upsert_ipcache(&self, prefix: Ipv4Net, value: &IpcacheValue) -> DpResult<()> {
        self.dp()
            .upsert_ipcache(prefix.network(), u32::from(prefix.prefix_len()), value)
            .map_err(err("write the ipcache"))
    }
    fn remove_ipcache(&self, prefix: Ipv4Net) -> DpResult<()> {
        self.dp()
            .remove_ipcache(prefix.network(), u32::from(prefix.prefix_len()))
            .map_err(err("remove from the ipcache"))
    }
    fn ipcache(&self) -> DpResult<Vec<(Ipv4Net, IpcacheValue)>> {
        let entries = self.dp().ipcache().map_err(err("read the ipcache"))?;
        Ok(entries
            .into_iter()
            .filter_map(|(ip, len, v)| Some((Ipv4Net::new(ip, len as u8).ok()?, v)))
            .collect())
    }
}

impl PolicyMap for Pinned {
    fn put_policy(&self, entries: &[(PolicyKey, PolicyValue)]) -> DpResult<()> {
        self.dp()
            .put_policy_raw(entries)
            .map_err(err("write policy entries"))
    }
    fn remove_policy(&self, keys: &[PolicyKey]) -> DpResult<()> {
        self.dp()
            .remove_policy_raw(keys)
            .map_err(err("remove policy entries"))
    }
    fn policy_entries(&self) -> DpResult<Vec<(PolicyKey, PolicyValue)>> {
        self.dp()
            .policy_entries()
            .map_err(err("read the policy map"))
    }
    fn set_revision(&self, revision: u32) -> DpResult<()> {
        self.dp()
            .set_policy_revision(revision)
            .map_err(err("write the policy revision"))
    }
    fn revision(&self) -> DpResult<u32> {
        self.dp()
            .policy_revision()
            .map_err(err("read the policy revision"))
    }
}

impl Links for Pinned {
    fn attach(&self, host_ifname: &str) -> DpResult<()> {
        self.dp()
            .attach_endpoint_lasting(host_ifname)
            .map_err(err("attach the pod programs"))
    }
    fn attached(&self, host_ifname: &str) -> bool {
        self.dp().endpoint_attached(host_ifname)
    }
    fn detach(&self, host_ifname: &str) -> DpResult<()> {
        self.dp()
            .detach_endpoint_lasting(host_ifname)
            .map_err(err("detach the pod programs"))
    }
}

impl Conntrack for Pinned {
    fn conntrack(&self) -> DpResult<Vec<(CtKey4, CtEntry)>> {
        self.dp().conntrack().map_err(err("read conntrack"))
    }
    fn flush_conntrack(&self) -> DpResult<usize> {
        self.dp().flush_conntrack().map_err(err("flush conntrack"))
    }
    fn ct_now(&self) -> DpResult<u32> {
        self.dp().ct_now().map_err(err("read the conntrack clock"))
    }
}

impl crate::monitor::MonitorControl for Pinned {
    fn settings(&self) -> Result<pilus_datapath::MonitorSettings, pilus_datapath::Error> {
        self.dp().monitor_settings()
    }
    fn set_settings(
        &self,
        s: pilus_datapath::MonitorSettings,
    ) -> Result<(), pilus_datapath::Error> {
        self.dp().set_monitor_settings(s)
    }
}

impl Datapath for Pinned {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
