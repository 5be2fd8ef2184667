//! Conntrack garbage collection, on handles of its own: `pilus_ct4` is a
//! plain hash (full, it refuses new flows rather than evicting live ones),
//! so expired entries must be removed, and so must expired affinity
//! entries and masquerade's expired NAT mappings (`pilus_nat4`, also a
//! plain hash: a flow's two entries go together, see [`nat_expired`]). A [`CtTable`] holds its own descriptors of those maps (and of
//! the drop counters, for insert failures), so a GC pass never holds the
//! lock the agent's map writes take. When to run is the control plane's
//! decision (`pilus_controlplane::ctgc`).

use crate::{clock, loader::Datapath, maps::ignore_missing, Error};
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use pilus_abi::{
    consts::{metrics_index, DIR_MAX, DROP_CT_CREATE_FAILED},
    CtEntry, CtKey4, Lb4Affinity, Lb4AffinityKey, MetricsValue, NatEntry4, NatKey4,
};
use std::collections::HashMap as StdHashMap;
use std::os::fd::AsFd;

const CT: &str = "pilus_ct4";
const AFFINITY: &str = crate::lb::AFFINITY;
const METRICS: &str = "pilus_metrics";
const NAT: &str = "pilus_nat4";

/// What one pass found and removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcPass {
    /// Conntrack entries seen.
    pub scanned: usize,
    /// Expired conntrack entries removed.
    pub deleted: usize,
    /// Expired affinity entries removed.
    pub affinity_deleted: usize,
    /// NAT entries seen (two per masqueraded flow), and the expired ones
    /// removed.
    pub nat_scanned: usize,
    pub nat_deleted: usize,
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
    nat: HashMap<MapData, NatKey4, NatEntry4>,
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
            nat: HashMap::try_from(Map::HashMap(dup(self, NAT)?))
                .map_err(|e| Error::map(NAT, e))?,
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

    /// Writes NAT entries as they are (tests: a port already taken, an
    /// entry near expiry).
    pub fn put_nat(&mut self, entries: &[(NatKey4, NatEntry4)]) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, NatKey4, NatEntry4> = HashMap::try_from(
            self.ebpf
                .map_mut(NAT)
                .ok_or(Error::MissingMap { name: NAT })?,
        )
        .map_err(|e| Error::map(NAT, e))?;
        for (k, v) in entries {
            m.insert(k, v, 0).map_err(|e| Error::map(NAT, e))?;
        }
        Ok(())
    }

    /// Every NAT entry (masquerade's mappings, both directions).
    pub fn nat_entries(&self) -> Result<Vec<(NatKey4, NatEntry4)>, Error> {
        let m: HashMap<&MapData, NatKey4, NatEntry4> =
            HashMap::try_from(self.ebpf.map(NAT).ok_or(Error::MissingMap { name: NAT })?)
                .map_err(|e| Error::map(NAT, e))?;
        m.iter()
            .map(|r| r.map_err(|e| Error::map(NAT, e)))
            .collect()
    }
}

/// The NAT entries a GC pass removes at `now`: each entry is refreshed only
/// by its own direction's packets (a download refreshes the ingress entry,
/// not the egress one), so an expired entry goes only when its partner has
/// expired too or is gone. The egress entry comes first in the result: once
/// it is gone a new packet of the flow allocates afresh instead of using a
/// port whose reply entry is being removed.
pub fn nat_expired(entries: &[(NatKey4, NatEntry4)], now: u32) -> Vec<NatKey4> {
    let by_key: StdHashMap<NatKey4, &NatEntry4> = entries.iter().map(|(k, v)| (*k, v)).collect();
    let mut out: Vec<NatKey4> = entries
        .iter()
        .filter(|(k, v)| {
            v.expires <= now
                && by_key
                    .get(&k.partner(v))
                    .is_none_or(|partner| partner.expires <= now)
        })
        .map(|(k, _)| *k)
        .collect();
    out.sort_by_key(|k| k.direction);
    out
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
        let mut nat = Vec::new();
        for r in self.nat.iter() {
            nat.push(r.map_err(|e| Error::map(NAT, e))?);
        }
        pass.nat_scanned = nat.len();
        for k in nat_expired(&nat, now) {
            ignore_missing(self.nat.remove(&k), NAT)?;
            pass.nat_deleted += 1;
        }
        Ok(pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pilus_abi::{consts::*, Be16, Be32};
    use std::net::Ipv4Addr;

    /// A masqueraded flow's pair: pod 198.18.1.10:5000 -> 198.19.9.9:80,
    /// node 198.19.0.1:61000; each entry with its own expiry.
    fn pair(egress_expires: u32, ingress_expires: u32) -> Vec<(NatKey4, NatEntry4)> {
        let (pod, peer, node) = (
            Be32::from(Ipv4Addr::new(198, 18, 1, 10)),
            Be32::from(Ipv4Addr::new(198, 19, 9, 9)),
            Be32::from(Ipv4Addr::new(198, 19, 0, 1)),
        );
        let egress = NatKey4 {
            saddr: pod,
            daddr: peer,
            sport: Be16::new(5000),
            dport: Be16::new(80),
            protocol: 6,
            direction: NAT_DIR_EGRESS,
            _pad: [0; 2],
        };
        let ev = NatEntry4 {
            to_addr: node,
            to_port: Be16::new(61000),
            expires: egress_expires,
            ..Default::default()
        };
        let ingress = egress.partner(&ev);
        let iv = NatEntry4 {
            to_addr: pod,
            to_port: Be16::new(5000),
            expires: ingress_expires,
            ..Default::default()
        };
        assert_eq!(ingress.partner(&iv), egress, "partners of each other");
        assert_eq!(
            (ingress.saddr, ingress.daddr, ingress.sport, ingress.dport),
            (peer, node, Be16::new(80), Be16::new(61000))
        );
        vec![(egress, ev), (ingress, iv)]
    }

    #[test]
    fn a_nat_pair_lapses_together() {
        // Both live, or one live: kept.
        assert!(nat_expired(&pair(200, 200), 100).is_empty());
        assert!(nat_expired(&pair(50, 200), 100).is_empty());
        assert!(nat_expired(&pair(200, 50), 100).is_empty());
        // Both expired: both go, the egress entry first.
        let p = pair(50, 60);
        assert_eq!(nat_expired(&p, 100), vec![p[0].0, p[1].0]);
        // An orphan goes alone once expired.
        let p = pair(50, 200);
        assert_eq!(nat_expired(&p[..1], 100), vec![p[0].0]);
        assert!(nat_expired(&p[1..], 100).is_empty());
    }
}
