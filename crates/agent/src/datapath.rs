//! The control plane's datapath traits (and the monitor's settings) over the
//! loaded, pinned BPF objects: the one place in the agent that reaches
//! `pilus_datapath` (and through it aya). The maps sit behind one lock; each
//! call is a few map operations. The conntrack GC has map descriptors of its
//! own behind another lock, so a pass over a large table never holds up the
//! API's map writes.

use ipnet::Ipv4Net;
use pilus_abi::{
    CtEntry, CtKey4, EndpointInfo, IpcacheValue, Lb4Backend, Lb4Key, Lb4Maglev, Lb4MaglevKey,
    Lb4ReverseNat, Lb4Service, Lb4SlotKey, PolicyKey, PolicyValue,
};
use pilus_controlplane::datapath::{
    Conntrack, CtGcPass, Datapath, DatapathError, DpResult, EndpointMap, IpcacheMap, Links,
    PolicyMap, ServiceMap,
};
use pilus_datapath::CtTable;
use std::sync::{Mutex, MutexGuard};

pub struct Pinned {
    dp: Mutex<pilus_datapath::Datapath>,
    gc: Mutex<CtTable>,
}

impl Pinned {
    pub fn new(dp: pilus_datapath::Datapath) -> Result<Pinned, pilus_datapath::Error> {
        let gc = dp.conntrack_table()?;
        Ok(Pinned {
            dp: Mutex::new(dp),
            gc: Mutex::new(gc),
        })
    }

    fn dp(&self) -> MutexGuard<'_, pilus_datapath::Datapath> {
        // A panic mid-call leaves the kernel's maps as they are; the
        // control plane's next resync reconciles them.
        self.dp.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins the live maps for `pilus trace`'s private copy, under the
    /// lock only for that (see [`pilus_datapath::TracerSetup`]).
    pub fn tracer_setup(&self) -> Result<pilus_datapath::TracerSetup, pilus_datapath::Error> {
        self.dp().tracer_setup()
    }

    /// The live conntrack entries of those of `keys` that exist.
    pub fn conntrack_entries(
        &self,
        keys: &[CtKey4],
    ) -> Result<Vec<(CtKey4, CtEntry)>, pilus_datapath::Error> {
        self.dp().conntrack_entries(keys)
    }

    fn gc(&self) -> MutexGuard<'_, CtTable> {
        self.gc.lock().unwrap_or_else(|p| p.into_inner())
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
    fn ct_gc(&self) -> DpResult<CtGcPass> {
        let p = self.gc().gc().map_err(err("conntrack GC"))?;
        Ok(CtGcPass {
            scanned: p.scanned as u64,
            deleted: p.deleted as u64,
            affinity_deleted: p.affinity_deleted as u64,
            nat_scanned: p.nat_scanned as u64,
            nat_deleted: p.nat_deleted as u64,
        })
    }
    fn ct_max_entries(&self) -> DpResult<u64> {
        Ok(u64::from(self.gc().max_entries()))
    }
    fn ct_insert_failures(&self) -> DpResult<u64> {
        self.gc()
            .insert_failures()
            .map_err(err("read the conntrack insert failures"))
    }
}

impl ServiceMap for Pinned {
    fn put_lb_services(&self, entries: &[(Lb4Key, Lb4Service)]) -> DpResult<()> {
        self.dp()
            .put_lb_services(entries)
            .map_err(err("write service frontends"))
    }
    fn remove_lb_services(&self, keys: &[Lb4Key]) -> DpResult<()> {
        self.dp()
            .remove_lb_services(keys)
            .map_err(err("remove service frontends"))
    }
    fn lb_services(&self) -> DpResult<Vec<(Lb4Key, Lb4Service)>> {
        self.dp()
            .lb_services()
            .map_err(err("read service frontends"))
    }
    fn put_lb_slots(&self, entries: &[(Lb4SlotKey, u32)]) -> DpResult<()> {
        self.dp()
            .put_lb_slots(entries)
            .map_err(err("write service slots"))
    }
    fn remove_lb_slots(&self, keys: &[Lb4SlotKey]) -> DpResult<()> {
        self.dp()
            .remove_lb_slots(keys)
            .map_err(err("remove service slots"))
    }
    fn lb_slots(&self) -> DpResult<Vec<(Lb4SlotKey, u32)>> {
        self.dp().lb_slots().map_err(err("read service slots"))
    }
    fn put_lb_backends(&self, entries: &[(u32, Lb4Backend)]) -> DpResult<()> {
        self.dp()
            .put_lb_backends(entries)
            .map_err(err("write service backends"))
    }
    fn remove_lb_backends(&self, ids: &[u32]) -> DpResult<()> {
        self.dp()
            .remove_lb_backends(ids)
            .map_err(err("remove service backends"))
    }
    fn lb_backends(&self) -> DpResult<Vec<(u32, Lb4Backend)>> {
        self.dp()
            .lb_backends()
            .map_err(err("read service backends"))
    }
    fn put_lb_maglev(&self, key: &Lb4MaglevKey, table: &Lb4Maglev) -> DpResult<()> {
        self.dp()
            .put_lb_maglev(key, table)
            .map_err(err("write a Maglev table"))
    }
    fn remove_lb_maglev(&self, key: &Lb4MaglevKey) -> DpResult<()> {
        self.dp()
            .remove_lb_maglev(key)
            .map_err(err("remove a Maglev table"))
    }
    fn lb_maglev_keys(&self) -> DpResult<Vec<Lb4MaglevKey>> {
        self.dp()
            .lb_maglev_keys()
            .map_err(err("read the Maglev tables"))
    }
    fn lb_maglev(&self, key: &Lb4MaglevKey) -> DpResult<Option<Box<Lb4Maglev>>> {
        self.dp().lb_maglev(key).map_err(err("read a Maglev table"))
    }
    fn put_lb_rev_nat(&self, entries: &[(u32, Lb4ReverseNat)]) -> DpResult<()> {
        self.dp()
            .put_lb_rev_nat(entries)
            .map_err(err("write reverse NAT entries"))
    }
    fn remove_lb_rev_nat(&self, ids: &[u32]) -> DpResult<()> {
        self.dp()
            .remove_lb_rev_nat(ids)
            .map_err(err("remove reverse NAT entries"))
    }
    fn lb_rev_nat(&self) -> DpResult<Vec<(u32, Lb4ReverseNat)>> {
        self.dp()
            .lb_rev_nat()
            .map_err(err("read reverse NAT entries"))
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
