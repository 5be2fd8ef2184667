//! In-memory stand-ins for the datapath and the pod plumbing, with the same
//! semantics, so the control plane is tested without root. Clones share
//! state (as a restarted agent finds the same kernel).

use crate::{
    datapath::{
        Conntrack, CtGcPass, Datapath, DpResult, EndpointMap, IpcacheMap, Links, PolicyMap,
        ServiceMap,
    },
    plumbing::{PlumbError, PlumbRequest, Plumbed, Plumbing},
};
use ipnet::Ipv4Net;
use pilus_abi::{
    CtEntry, CtKey4, EndpointInfo, IpcacheValue, Lb4Backend, Lb4Key, Lb4Maglev, Lb4MaglevKey,
    Lb4ReverseNat, Lb4Service, Lb4SlotKey, PolicyKey, PolicyValue,
};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

/// The maps and attachments, as a fake keeps them.
#[derive(Clone, Debug, Default)]
pub struct FakeMaps {
    pub endpoints: BTreeMap<u32, EndpointInfo>,
    pub ipcache: BTreeMap<Ipv4Net, IpcacheValue>,
    pub policy: HashMap<PolicyKey, PolicyValue>,
    pub revision: u32,
    pub attached: BTreeSet<String>,
    pub lb_services: BTreeMap<Lb4Key, Lb4Service>,
    pub lb_slots: BTreeMap<Lb4SlotKey, u32>,
    pub lb_backends: BTreeMap<u32, Lb4Backend>,
    pub lb_maglev: BTreeMap<Lb4MaglevKey, Box<Lb4Maglev>>,
    pub lb_rev_nat: BTreeMap<u32, Lb4ReverseNat>,
    /// What the conntrack GC reports: the next pass's result, the table's
    /// size, insert failures, passes run.
    pub ct_next_pass: CtGcPass,
    pub ct_max_entries: u64,
    pub ct_insert_failures: u64,
    pub ct_gc_passes: u64,
    /// Map writes, to check that a no-op changes nothing.
    pub writes: usize,
    /// When set, the next map write of the service maps fails (and this
    /// is cleared): a datapath failure in the middle of a change.
    pub fail_next_lb_write: bool,
    /// When set, the next conntrack GC pass fails (and this is cleared).
    pub fail_next_ct_gc: bool,
}

/// Called with the maps after every write (to check a property of every
/// intermediate state).
pub type Observer = Arc<dyn Fn(&FakeMaps) + Send + Sync>;

#[derive(Clone, Default)]
pub struct FakeDatapath {
    maps: Arc<Mutex<FakeMaps>>,
    observer: Arc<Mutex<Option<Observer>>>,
}

impl FakeDatapath {
    /// The maps now.
    pub fn maps(&self) -> MutexGuard<'_, FakeMaps> {
        self.maps.lock().expect("fake datapath lock")
    }

    /// Calls `f` with the maps after every write from now on.
    pub fn observe(&self, f: Observer) {
        *self.observer.lock().expect("lock") = Some(f);
    }

    fn wrote(&self) {
        let f = self.observer.lock().expect("lock").clone();
        if let Some(f) = f {
            f(&self.maps());
        }
    }

    /// A write of `n` entries of the service maps, seen by the observer.
    fn lb_write(&self, n: usize, f: impl FnOnce(&mut FakeMaps)) -> DpResult<()> {
        let mut m = self.maps();
        if std::mem::take(&mut m.fail_next_lb_write) {
            return Err(crate::datapath::DatapathError::new(
                "write the service maps",
                std::io::Error::other("injected failure"),
            ));
        }
        m.writes += n;
        f(&mut m);
        drop(m);
        self.wrote();
        Ok(())
    }

    /// The identity the ipcache gives `prefix`, if any.
    pub fn ipcache_identity(&self, prefix: &str) -> Option<u32> {
        let p: Ipv4Net = prefix.parse().expect("prefix");
        self.maps().ipcache.get(&p).map(|v| v.sec_identity)
    }
}

impl EndpointMap for FakeDatapath {
    fn upsert_endpoint(&self, ep: &EndpointInfo) -> DpResult<()> {
        let mut m = self.maps();
        m.writes += 1;
        m.endpoints.insert(ep.ifindex, *ep);
        drop(m);
        self.wrote();
        Ok(())
    }
    fn remove_endpoint(&self, ep: &EndpointInfo) -> DpResult<()> {
        let mut m = self.maps();
        m.writes += 1;
        m.endpoints.remove(&ep.ifindex);
        drop(m);
        self.wrote();
        Ok(())
    }
    fn endpoints(&self) -> DpResult<Vec<EndpointInfo>> {
        Ok(self.maps().endpoints.values().copied().collect())
    }
}

impl IpcacheMap for FakeDatapath {
    fn upsert_ipcache(&self, prefix: Ipv4Net, value: &IpcacheValue) -> DpResult<()> {
        let mut m = self.maps();
        m.writes += 1;
        m.ipcache.insert(prefix, *value);
        drop(m);
        self.wrote();
        Ok(())
    }
    fn remove_ipcache(&self, prefix: Ipv4Net) -> DpResult<()> {
        let mut m = self.maps();
        m.writes += 1;
        m.ipcache.remove(&prefix);
        drop(m);
        self.wrote();
        Ok(())
    }
    fn ipcache(&self) -> DpResult<Vec<(Ipv4Net, IpcacheValue)>> {
        Ok(self.maps().ipcache.iter().map(|(k, v)| (*k, *v)).collect())
    }
}

impl PolicyMap for FakeDatapath {
    fn put_policy(&self, entries: &[(PolicyKey, PolicyValue)]) -> DpResult<()> {
        let mut m = self.maps();
        m.writes += entries.len();
        m.policy.extend(entries.iter().copied());
        drop(m);
        self.wrote();
        Ok(())
    }
    fn remove_policy(&self, keys: &[PolicyKey]) -> DpResult<()> {
        let mut m = self.maps();
        m.writes += keys.len();
        for k in keys {
            m.policy.remove(k);
        }
        drop(m);
        self.wrote();
        Ok(())
    }
    fn policy_entries(&self) -> DpResult<Vec<(PolicyKey, PolicyValue)>> {
        Ok(self.maps().policy.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn set_revision(&self, revision: u32) -> DpResult<()> {
        let mut m = self.maps();
        m.writes += 1;
        m.revision = revision;
        drop(m);
        self.wrote();
        Ok(())
    }
    fn revision(&self) -> DpResult<u32> {
        Ok(self.maps().revision)
    }
}

impl Links for FakeDatapath {
    fn attach(&self, host_ifname: &str) -> DpResult<()> {
        self.maps().attached.insert(host_ifname.to_string());
        Ok(())
    }
    fn attached(&self, host_ifname: &str) -> bool {
        self.maps().attached.contains(host_ifname)
    }
    fn detach(&self, host_ifname: &str) -> DpResult<()> {
        self.maps().attached.remove(host_ifname);
        Ok(())
    }
}

impl Conntrack for FakeDatapath {
    fn conntrack(&self) -> DpResult<Vec<(CtKey4, CtEntry)>> {
        Ok(Vec::new())
    }
    fn flush_conntrack(&self) -> DpResult<usize> {
        Ok(0)
    }
    fn ct_now(&self) -> DpResult<u32> {
        Ok(0)
    }
    fn ct_gc(&self) -> DpResult<CtGcPass> {
        let mut m = self.maps();
        if std::mem::take(&mut m.fail_next_ct_gc) {
            return Err(crate::datapath::DatapathError::new(
                "walk pilus_ct4",
                std::io::Error::other("injected failure"),
            ));
        }
        m.ct_gc_passes += 1;
        Ok(m.ct_next_pass)
    }
    fn ct_max_entries(&self) -> DpResult<u64> {
        Ok(self.maps().ct_max_entries)
    }
    fn ct_insert_failures(&self) -> DpResult<u64> {
        Ok(self.maps().ct_insert_failures)
    }
}

impl ServiceMap for FakeDatapath {
    fn put_lb_services(&self, entries: &[(Lb4Key, Lb4Service)]) -> DpResult<()> {
        self.lb_write(entries.len(), |m| {
            m.lb_services.extend(entries.iter().copied())
        })
    }
    fn remove_lb_services(&self, keys: &[Lb4Key]) -> DpResult<()> {
        self.lb_write(keys.len(), |m| {
            keys.iter().for_each(|k| {
                m.lb_services.remove(k);
            })
        })
    }
    fn lb_services(&self) -> DpResult<Vec<(Lb4Key, Lb4Service)>> {
        Ok(self
            .maps()
            .lb_services
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect())
    }
    fn put_lb_slots(&self, entries: &[(Lb4SlotKey, u32)]) -> DpResult<()> {
        self.lb_write(entries.len(), |m| {
            m.lb_slots.extend(entries.iter().copied())
        })
    }
    fn remove_lb_slots(&self, keys: &[Lb4SlotKey]) -> DpResult<()> {
        self.lb_write(keys.len(), |m| {
            keys.iter().for_each(|k| {
                m.lb_slots.remove(k);
            })
        })
    }
    fn lb_slots(&self) -> DpResult<Vec<(Lb4SlotKey, u32)>> {
        Ok(self.maps().lb_slots.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn put_lb_backends(&self, entries: &[(u32, Lb4Backend)]) -> DpResult<()> {
        self.lb_write(entries.len(), |m| {
            m.lb_backends.extend(entries.iter().copied())
        })
    }
    fn remove_lb_backends(&self, ids: &[u32]) -> DpResult<()> {
        self.lb_write(ids.len(), |m| {
            ids.iter().for_each(|k| {
                m.lb_backends.remove(k);
            })
        })
    }
    fn lb_backends(&self) -> DpResult<Vec<(u32, Lb4Backend)>> {
        Ok(self
            .maps()
            .lb_backends
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect())
    }
    fn put_lb_maglev(&self, key: &Lb4MaglevKey, table: &Lb4Maglev) -> DpResult<()> {
        self.lb_write(1, |m| {
            m.lb_maglev.insert(*key, Box::new(*table));
        })
    }
    fn remove_lb_maglev(&self, key: &Lb4MaglevKey) -> DpResult<()> {
        self.lb_write(1, |m| {
            m.lb_maglev.remove(key);
        })
    }
    fn lb_maglev_keys(&self) -> DpResult<Vec<Lb4MaglevKey>> {
        Ok(self.maps().lb_maglev.keys().copied().collect())
    }
    fn lb_maglev(&self, key: &Lb4MaglevKey) -> DpResult<Option<Box<Lb4Maglev>>> {
        Ok(self.maps().lb_maglev.get(key).cloned())
    }
    fn put_lb_rev_nat(&self, entries: &[(u32, Lb4ReverseNat)]) -> DpResult<()> {
        self.lb_write(entries.len(), |m| {
            m.lb_rev_nat.extend(entries.iter().copied())
        })
    }
    fn remove_lb_rev_nat(&self, ids: &[u32]) -> DpResult<()> {
        self.lb_write(ids.len(), |m| {
            ids.iter().for_each(|k| {
                m.lb_rev_nat.remove(k);
            })
        })
    }
    fn lb_rev_nat(&self) -> DpResult<Vec<(u32, Lb4ReverseNat)>> {
        Ok(self
            .maps()
            .lb_rev_nat
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect())
    }
}

impl Datapath for FakeDatapath {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Records plumbing without touching the kernel.
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

/// Settings for a control plane on fakes: node `node_name`, pod CIDR
/// 198.18.0.0/24 with its router at .1, the socket under `scratch`, no
/// pins and no state on disk.
pub fn settings(node_name: &str, scratch: &std::path::Path) -> crate::Settings {
    crate::Settings {
        node_name: node_name.into(),
        pod_cidr: "198.18.0.0/24".parse().expect("a CIDR"),
        router: std::net::Ipv4Addr::new(198, 18, 0, 1),
        pin_dir: "/nonexistent".into(),
        socket: scratch.join("pilus.sock"),
        state_dir: "/nonexistent".into(),
        pod_mtu: None,
    }
}
