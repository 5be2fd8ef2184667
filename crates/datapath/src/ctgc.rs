//! Conntrack garbage collection, on handles of its own: `pilus_ct4` is a
//! plain hash (full, it refuses new flows rather than evicting live ones),
//! so expired entries must be removed, and so must expired affinity
//! entries. A [`CtTable`] holds its own descriptors of those maps (and of
//! the drop counters, for insert failures), so a GC pass never holds the
//! lock the agent's map writes take. When to run is the control plane's
//! decision (`pilus_controlplane::ctgc`).

use crate::{clock, loader::Datapath, maps::ignore_missing, Error};
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use pilus_abi::{
    consts::{metrics_index, DIR_MAX, DROP_CT_CREATE_FAILED},
    CtEntry, CtKey4, Lb4Affinity, Lb4AffinityKey, MetricsValue,
};
use std::os::fd::AsFd;

const CT: &str = "pilus_ct4";
const AFFINITY: &str = crate::lb::AFFINITY;
const METRICS: &str = "pilus_metrics";

/// What one pass found and removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcPass {
    /// Conntrack entries seen.
    pub scanned: usize,
    /// Expired conntrack entries removed.
    pub deleted: usize,
    /// Expired affinity entries removed.
    pub affinity_deleted: usize,
}

impl GcPass {
    /// Conntrack entries left.
    pub fn remaining(&self) -> usize {
        self.scanned - self.deleted
    }
}

/// The conntrack and affinity maps (and the drop counters), on descriptors
/// of their own.
pub struct CtTable {
    ct: HashMap<MapData, CtKey4, CtEntry>,
    affinity: HashMap<MapData, Lb4AffinityKey, Lb4Affinity>,
    metrics: PerCpuArray<MapData, MetricsValue>,
    hz: u32,
    max_entries: u32,
}

/// A second handle on a loaded map: its descriptor duplicated.
fn dup(dp: &Datapath, name: &'static str) -> Result<MapData, Error> {
    let map = dp.ebpf.map(name).ok_or(Error::MissingMap { name })?;
    let data: &MapData = match map {
        Map::HashMap(m) | Map::LruHashMap(m) | Map::PerCpuArray(m) => m,
        _ => return Err(Error::MissingMap { name }),
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| Error::Syscall {
            call: "dup(map fd)",
            source,
        })?;
    MapData::from_fd(fd).map_err(|e| Error::map(name, e))
}

impl Datapath {
    /// Handles for the conntrack GC, independent of this datapath's lock.
    pub fn conntrack_table(&self) -> Result<CtTable, Error> {
        let ct = dup(self, CT)?;
        let max_entries = ct.info().map_err(|e| Error::map(CT, e))?.max_entries();
        Ok(CtTable {
            ct: HashMap::try_from(Map::HashMap(ct)).map_err(|e| Error::map(CT, e))?,
            affinity: HashMap::try_from(Map::LruHashMap(dup(self, AFFINITY)?))
                .map_err(|e| Error::map(AFFINITY, e))?,
            metrics: PerCpuArray::try_from(Map::PerCpuArray(dup(self, METRICS)?))
                .map_err(|e| Error::map(METRICS, e))?,
            hz: self.hz,
            max_entries,
        })
    }

    /// Writes conntrack entries as they are (tests: an entry near expiry,
    /// a full table).
    pub fn put_conntrack(&mut self, entries: &[(CtKey4, CtEntry)]) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, CtKey4, CtEntry> = HashMap::try_from(
            self.ebpf
                .map_mut(CT)
                .ok_or(Error::MissingMap { name: CT })?,
        )
        .map_err(|e| Error::map(CT, e))?;
        for (k, v) in entries {
            m.insert(k, v, 0).map_err(|e| Error::map(CT, e))?;
        }
        Ok(())
    }
}

impl CtTable {
    /// The table's size: a full table refuses new flows.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Conntrack's clock now (seconds on the kernel's tick).
    pub fn now(&self) -> Result<u32, Error> {
        clock::ct_now(self.hz)
    }

    /// New flows refused because an entry could not be written (the table
    /// was full), both directions, since the maps were created.
    pub fn insert_failures(&self) -> Result<u64, Error> {
        let mut n = 0;
        for dir in 0..DIR_MAX {
            let per_cpu = self
                .metrics
                .get(&metrics_index(DROP_CT_CREATE_FAILED, dir), 0)
                .map_err(|e| Error::map(METRICS, e))?;
            n += per_cpu.iter().map(|v| v.packets).sum::<u64>();
        }
        Ok(n)
    }

    /// One pass: every expired conntrack and affinity entry removed. An
    /// entry that expires is as good as gone to the datapath already; this
    /// makes its room usable again.
    pub fn gc(&mut self) -> Result<GcPass, Error> {
        let now = self.now()?;
        let mut pass = GcPass::default();
        let mut expired = Vec::new();
        for r in self.ct.iter() {
            let (k, v) = r.map_err(|e| Error::map(CT, e))?;
            pass.scanned += 1;
            if v.expires <= now {
                expired.push(k);
            }
        }
        for k in &expired {
            // A flow may have come back on the same tuple since the scan
            // (the datapath writes a new entry over an expired one): read
            // the entry again just before removing it.
            if self.ct.get(k, 0).is_ok_and(|v| v.expires > now) {
                continue;
            }
            ignore_missing(self.ct.remove(k), CT)?;
            pass.deleted += 1;
        }
        let mut stale = Vec::new();
        for r in self.affinity.iter() {
            let (k, v) = r.map_err(|e| Error::map(AFFINITY, e))?;
            if v.expires <= now {
                stale.push(k);
            }
        }
        for k in &stale {
            ignore_missing(self.affinity.remove(k), AFFINITY)?;
        }
        pass.affinity_deleted = stale.len();
        Ok(pass)
    }
}
