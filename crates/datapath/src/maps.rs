//! Typed access to the datapath's maps: endpoints, ipcache, policy, conntrack
//! and metrics. Every write the control plane makes goes through here.

use crate::monitor::MonitorSettings;
use crate::{loader::Datapath, Error};
use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, MapData, PerCpuArray,
};
use pilus_abi::{
    consts::{DIR_MAX, DROP_REASON_MAX},
    CtEntry, CtKey4, EndpointInfo, EventStats, IpcacheValue, MetricsValue, MonitorConfig,
    PolicyKey, PolicyRev, PolicyValue,
};
use std::{borrow::Borrow, net::Ipv4Addr};

pub use pilus_abi::PolicyEntry;

/// Packets and bytes counted for one (reason, direction): reason 0
/// (`METRIC_FORWARDED`) counts forwarded packets, the `DROP_*` codes drops.
/// Events lost to a full ring are counted apart, per CPU (`pilus_evstats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropCount {
    pub reason: u8,
    pub direction: u8,
    pub packets: u64,
    pub bytes: u64,
}

/// The part of a policy key after prefix_len, as the LPM trie stores it.
type PolicyData = [u8; 12];

fn policy_lpm_key(k: &PolicyKey) -> Key<PolicyData> {
    // SAFETY: PolicyKey is repr(C) plain data of 16 bytes (checked by the
    // layout test); bytes 4..16 are the matched data after prefix_len.
    let bytes: [u8; 16] = unsafe { std::mem::transmute(*k) };
    let mut data = [0u8; 12];
    data.copy_from_slice(&bytes[4..]);
    Key::new(k.prefix_len, data)
}

fn policy_key_from_lpm(k: &Key<PolicyData>) -> PolicyKey {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&k.prefix_len().to_ne_bytes());
    bytes[4..].copy_from_slice(&k.data());
    // SAFETY: as above; every bit pattern is a valid PolicyKey.
    unsafe { std::mem::transmute(bytes) }
}

macro_rules! typed_map {
    ($self:ident, $kind:ident, $name:literal) => {
        $kind::try_from(
            $self
                .ebpf
                .map_mut($name)
                .ok_or(Error::MissingMap { name: $name })?,
        )
        .map_err(|e| Error::map($name, e))?
    };
    (ro $self:ident, $kind:ident, $name:literal) => {
        $kind::try_from(
            $self
                .ebpf
                .map($name)
                .ok_or(Error::MissingMap { name: $name })?,
        )
        .map_err(|e| Error::map($name, e))?
    };
}

impl Datapath {
    /// Makes a local endpoint known to the datapath (both indexes). Its
    /// address must lie in the node's pod CIDR; nothing is written otherwise.
    pub fn upsert_endpoint(&mut self, ep: &EndpointInfo) -> Result<(), Error> {
        let slot = self.pod_cidr.slot(ep.ip4.into())?;
        let mut by_ip: Array<&mut MapData, EndpointInfo> = typed_map!(self, Array, "pilus_lxc");
        by_ip
            .set(slot, ep, 0)
            .map_err(|e| Error::map("pilus_lxc", e))?;
        let mut by_if: HashMap<&mut MapData, u32, EndpointInfo> =
            typed_map!(self, HashMap, "pilus_lxc_if");
        by_if
            .insert(ep.ifindex, ep, 0)
            .map_err(|e| Error::map("pilus_lxc_if", e))
    }

    /// Forgets a local endpoint; absent entries are not an error.
    pub fn remove_endpoint(&mut self, ep: &EndpointInfo) -> Result<(), Error> {
        let slot = self.pod_cidr.slot(ep.ip4.into())?;
        let mut by_if: HashMap<&mut MapData, u32, EndpointInfo> =
            typed_map!(self, HashMap, "pilus_lxc_if");
        ignore_missing(by_if.remove(&ep.ifindex), "pilus_lxc_if")?;
        let mut by_ip: Array<&mut MapData, EndpointInfo> = typed_map!(self, Array, "pilus_lxc");
        // An empty slot (ifindex 0) is "no local endpoint" to the datapath.
        by_ip
            .set(slot, EndpointInfo::default(), 0)
            .map_err(|e| Error::map("pilus_lxc", e))
    }

    /// Every local endpoint, from the by-ifindex index.
    pub fn endpoints(&self) -> Result<Vec<EndpointInfo>, Error> {
        let by_if: HashMap<&MapData, u32, EndpointInfo> =
            typed_map!(ro self, HashMap, "pilus_lxc_if");
        by_if
            .iter()
            .map(|r| r.map(|(_, v)| v).map_err(|e| Error::map("pilus_lxc_if", e)))
            .collect()
    }

    /// Maps `ip/prefix_len` to an identity (and tunnel endpoint).
    pub fn upsert_ipcache(
        &mut self,
        ip: Ipv4Addr,
        prefix_len: u32,
        value: &IpcacheValue,
    ) -> Result<(), Error> {
        let mut m: LpmTrie<&mut MapData, [u8; 4], IpcacheValue> =
            typed_map!(self, LpmTrie, "pilus_ipcache");
        m.insert(&Key::new(prefix_len, ip.octets()), value, 0)
            .map_err(|e| Error::map("pilus_ipcache", e))
    }

    pub fn remove_ipcache(&mut self, ip: Ipv4Addr, prefix_len: u32) -> Result<(), Error> {
        let mut m: LpmTrie<&mut MapData, [u8; 4], IpcacheValue> =
            typed_map!(self, LpmTrie, "pilus_ipcache");
        ignore_missing(
            m.remove(&Key::new(prefix_len, ip.octets())),
            "pilus_ipcache",
        )
    }

    /// Every ipcache entry as (prefix, prefix length, value).
    pub fn ipcache(&self) -> Result<Vec<(Ipv4Addr, u32, IpcacheValue)>, Error> {
        let m: LpmTrie<&MapData, [u8; 4], IpcacheValue> =
            typed_map!(ro self, LpmTrie, "pilus_ipcache");
        m.iter()
            .map(|r| {
                r.map(|(k, v)| (Ipv4Addr::from(k.data()), k.prefix_len(), v))
                    .map_err(|e| Error::map("pilus_ipcache", e))
            })
            .collect()
    }

    /// Writes every LPM entry of `entry`. All are validated before the first
    /// write, so a bad entry changes nothing.
    pub fn insert_policy(&mut self, entry: &PolicyEntry) -> Result<(), Error> {
        let kv = entry.to_map_entries()?;
        let mut m: LpmTrie<&mut MapData, PolicyData, PolicyValue> =
            typed_map!(self, LpmTrie, "pilus_policy");
        for (k, v) in &kv {
            m.insert(&policy_lpm_key(k), v, 0)
                .map_err(|e| Error::map("pilus_policy", e))?;
        }
        Ok(())
    }

    pub fn remove_policy(&mut self, entry: &PolicyEntry) -> Result<(), Error> {
        let kv = entry.to_map_entries()?;
        let mut m: LpmTrie<&mut MapData, PolicyData, PolicyValue> =
            typed_map!(self, LpmTrie, "pilus_policy");
        for (k, _) in &kv {
            ignore_missing(m.remove(&policy_lpm_key(k)), "pilus_policy")?;
        }
        Ok(())
    }

    /// Writes raw LPM entries (as a resolver computed them).
    pub fn put_policy_raw(&mut self, entries: &[(PolicyKey, PolicyValue)]) -> Result<(), Error> {
        let mut m: LpmTrie<&mut MapData, PolicyData, PolicyValue> =
            typed_map!(self, LpmTrie, "pilus_policy");
        for (k, v) in entries {
            m.insert(&policy_lpm_key(k), v, 0)
                .map_err(|e| Error::map("pilus_policy", e))?;
        }
        Ok(())
    }

    /// Removes raw LPM entries; missing ones are fine.
    pub fn remove_policy_raw(&mut self, keys: &[PolicyKey]) -> Result<(), Error> {
        let mut m: LpmTrie<&mut MapData, PolicyData, PolicyValue> =
            typed_map!(self, LpmTrie, "pilus_policy");
        for k in keys {
            ignore_missing(m.remove(&policy_lpm_key(k)), "pilus_policy")?;
        }
        Ok(())
    }

    /// Every raw policy entry.
    pub fn policy_entries(&self) -> Result<Vec<(PolicyKey, PolicyValue)>, Error> {
        let m: LpmTrie<&MapData, PolicyData, PolicyValue> =
            typed_map!(ro self, LpmTrie, "pilus_policy");
        m.iter()
            .map(|r| {
                r.map(|(k, v)| (policy_key_from_lpm(&k), v))
                    .map_err(|e| Error::map("pilus_policy", e))
            })
            .collect()
    }

    pub fn policy_revision(&self) -> Result<u32, Error> {
        let m: Array<&MapData, PolicyRev> = typed_map!(ro self, Array, "pilus_polrev");
        Ok(m.get(&0, 0)
            .map_err(|e| Error::map("pilus_polrev", e))?
            .revision)
    }

    /// Publishes a new policy revision: established flows re-check policy once.
    pub fn set_policy_revision(&mut self, revision: u32) -> Result<(), Error> {
        let mut m: Array<&mut MapData, PolicyRev> = typed_map!(self, Array, "pilus_polrev");
        m.set(0, PolicyRev { revision, _pad: 0 }, 0)
            .map_err(|e| Error::map("pilus_polrev", e))
    }

    /// Every conntrack entry.
    pub fn conntrack(&self) -> Result<Vec<(CtKey4, CtEntry)>, Error> {
        let m: HashMap<&MapData, CtKey4, CtEntry> = typed_map!(ro self, HashMap, "pilus_ct4");
        m.iter()
            .map(|r| r.map_err(|e| Error::map("pilus_ct4", e)))
            .collect()
    }

    /// Removes every conntrack entry; returns how many.
    pub fn flush_conntrack(&mut self) -> Result<usize, Error> {
        let keys: Vec<CtKey4> = self.conntrack()?.into_iter().map(|(k, _)| k).collect();
        let mut m: HashMap<&mut MapData, CtKey4, CtEntry> = typed_map!(self, HashMap, "pilus_ct4");
        for k in &keys {
            ignore_missing(m.remove(k), "pilus_ct4")?;
        }
        Ok(keys.len())
    }

    /// Non-zero counters, summed over CPUs.
    pub fn metrics(&self) -> Result<Vec<DropCount>, Error> {
        let m: PerCpuArray<&MapData, MetricsValue> =
            typed_map!(ro self, PerCpuArray, "pilus_metrics");
        read_counters(&m)
    }

    /// Packets counted for one (reason, direction), summed over CPUs: one
    /// slot read, not the whole table.
    pub fn metric(&self, reason: u8, direction: u8) -> Result<u64, Error> {
        let m: PerCpuArray<&MapData, MetricsValue> =
            typed_map!(ro self, PerCpuArray, "pilus_metrics");
        let idx = pilus_abi::consts::metrics_index(reason, direction);
        let per_cpu = m.get(&idx, 0).map_err(|e| Error::map("pilus_metrics", e))?;
        Ok(per_cpu.iter().map(|v| v.packets).sum())
    }
}

impl Datapath {
    /// Writes the monitor's settings (`pilus_monconf`); every program reads
    /// them on its next packet.
    pub fn set_monitor_settings(&mut self, s: MonitorSettings) -> Result<(), Error> {
        let mut m: Array<&mut MapData, MonitorConfig> = typed_map!(self, Array, "pilus_monconf");
        m.set(0, s.to_abi(), 0)
            .map_err(|e| Error::map("pilus_monconf", e))
    }

    pub fn monitor_settings(&self) -> Result<MonitorSettings, Error> {
        let m: Array<&MapData, MonitorConfig> = typed_map!(ro self, Array, "pilus_monconf");
        let c = m.get(&0, 0).map_err(|e| Error::map("pilus_monconf", e))?;
        Ok(MonitorSettings::from_abi(c))
    }

    /// The ring buffer's counters (`pilus_evstats`), per CPU.
    pub fn event_stats(&self) -> Result<Vec<EventStats>, Error> {
        let m: PerCpuArray<&MapData, EventStats> =
            typed_map!(ro self, PerCpuArray, "pilus_evstats");
        let v = m.get(&0, 0).map_err(|e| Error::map("pilus_evstats", e))?;
        Ok(v.iter().copied().collect())
    }
}

/// Every non-zero slot of `pilus_metrics`, summed over CPUs, in slot order.
pub(crate) fn read_counters<T: Borrow<MapData>>(
    m: &PerCpuArray<T, MetricsValue>,
) -> Result<Vec<DropCount>, Error> {
    let mut out = Vec::new();
    for reason in 0..DROP_REASON_MAX {
        for dir in 0..DIR_MAX {
            let idx = pilus_abi::consts::metrics_index(reason as u8, dir);
            let per_cpu = m.get(&idx, 0).map_err(|e| Error::map("pilus_metrics", e))?;
            let (packets, bytes) = per_cpu
                .iter()
                .fold((0, 0), |(p, b), v| (p + v.packets, b + v.bytes));
            if packets > 0 {
                out.push(DropCount {
                    reason: reason as u8,
                    direction: dir,
                    packets,
                    bytes,
                });
            }
        }
    }
    Ok(out)
}

pub(crate) fn ignore_missing(
    r: Result<(), aya::maps::MapError>,
    name: &'static str,
) -> Result<(), Error> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other.map_err(|e| Error::map(name, e)),
    }
}
