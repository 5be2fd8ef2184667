//! Reading a running datapath without its loader: how full each map is, the
//! verdict counters, and whether each hook runs this datapath's programs —
//! for Prometheus metrics and `pilus doctor`.
//!
//! An [`Inspector`] opens the pinned maps itself and keeps its own file
//! descriptors, so a reader never waits for the control plane's writes
//! (the agent keeps the loaded [`Datapath`](crate::Datapath) behind a lock
//! for them) and never holds them up: a scrape that walks a full conntrack
//! table takes no lock at all. Everything here only reads.

use crate::{
    attach::{self, HookStatus, NodeDevice},
    loader::Object,
    maps::{read_counters, DropCount},
    pins, sys, Error,
};
use aya::maps::{Map, MapData, PerCpuArray};
use aya_obj::generated::bpf_map_type;
use pilus_abi::{CtKey4, EventStats, MetricsValue};
use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

/// The map the verdict counters live in.
const METRICS_MAP: &str = "pilus_metrics";
/// The ring buffer's per-CPU counters of records submitted and lost: the
/// one place a lost event is counted (the monitor reads them too).
const EVSTATS_MAP: &str = "pilus_evstats";
/// The maps that tell this datapath's programs from others: the tail-call
/// array every endpoint program uses (see [`Inspector::endpoint_hooks`]),
/// and the ring buffer every node program reports on. Not the verdict
/// counters: `to_netdev` only traces, and counts nothing.
const CALLS_MAP: &str = "pilus_calls";
const EVENTS_MAP: &str = "pilus_events";
const CT_MAP: &str = "pilus_ct4";

/// How full one map is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapUsage {
    pub name: String,
    /// The map's type as bpftool names it, lower case (`lru_hash`).
    pub kind: String,
    /// Entries found by walking its keys. A walk while entries are being
    /// deleted can start over and count some twice: never more than
    /// `max_entries`.
    pub entries: u64,
    pub max_entries: u32,
}

impl MapUsage {
    /// `entries / max_entries`, 0 for a map with no room at all.
    pub fn pressure(&self) -> f64 {
        if self.max_entries == 0 {
            0.0
        } else {
            self.entries as f64 / f64::from(self.max_entries)
        }
    }
}

/// The maps whose entries exist only once written, each with its usage;
/// and, from the same walk, the conntrack entries by IP protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub maps: Vec<MapUsage>,
    /// Conntrack entries by IP protocol number (6 TCP, 17 UDP, 1 ICMP).
    pub conntrack: BTreeMap<u8, u64>,
}

/// The datapath's counters (`pilus_metrics` and `pilus_evstats`), summed
/// over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Forwarded packets (reason `METRIC_FORWARDED`) and drops (`DROP_*`),
    /// by direction; zero slots are left out.
    pub verdicts: Vec<DropCount>,
    /// Events the full ring buffer had no room for (`pilus_evstats`, the
    /// same per-CPU counters the monitor reports its losses from): lost,
    /// never silently.
    pub events_lost: u64,
}

struct Opened {
    name: String,
    map: MapData,
    kind: bpf_map_type,
    key_size: usize,
    max_entries: u32,
}

/// Read-only handles on the maps pinned in one pin directory.
pub struct Inspector {
    pin_dir: PathBuf,
    /// The maps whose usage is counted (hash, LRU and LPM maps).
    counted: Vec<Opened>,
    metrics: PerCpuArray<MapData, MetricsValue>,
    evstats: PerCpuArray<MapData, EventStats>,
    calls_id: u32,
    events_id: u32,
}

fn open_pin(pin_dir: &Path, name: &str) -> Result<MapData, Error> {
    let path = pin_dir.join(name);
    MapData::from_pin(&path).map_err(|e| Error::ReadPin {
        path,
        source: Box::new(e),
    })
}

fn map_id(name: &'static str, map: &MapData) -> Result<u32, Error> {
    map.info().map(|i| i.id()).map_err(|e| Error::map(name, e))
}

/// Map types whose entries exist only once written: their usage is
/// meaningful (an array's slots always all exist).
fn is_counted(kind: bpf_map_type) -> bool {
    matches!(
        kind,
        bpf_map_type::BPF_MAP_TYPE_HASH
            | bpf_map_type::BPF_MAP_TYPE_LRU_HASH
            | bpf_map_type::BPF_MAP_TYPE_PERCPU_HASH
            | bpf_map_type::BPF_MAP_TYPE_LRU_PERCPU_HASH
            | bpf_map_type::BPF_MAP_TYPE_LPM_TRIE
    )
}

fn kind_name(kind: bpf_map_type) -> String {
    let name = format!("{kind:?}");
    name.strip_prefix("BPF_MAP_TYPE_")
        .unwrap_or(&name)
        .to_lowercase()
}

impl Inspector {
    /// Opens the maps the BPF objects pin by name in `pin_dir` (every
    /// object's, so a map a new object adds is counted without a change
    /// here). The datapath must have been loaded on that directory.
    pub fn open(pin_dir: &Path) -> Result<Inspector, Error> {
        let mut names: Vec<String> = Vec::new();
        for object in Object::ALL {
            for m in pins::object_maps(object.bytes(), &[])? {
                if !names.contains(&m.name) {
                    names.push(m.name);
                }
            }
        }
        names.sort();
        let mut counted = Vec::new();
        for name in &names {
            let map = open_pin(pin_dir, name)?;
            let info = map.info().map_err(|e| Error::ReadPin {
                path: pin_dir.join(name),
                source: Box::new(e),
            })?;
            // A type this aya does not know is not one we count.
            let Ok(kind) = bpf_map_type::try_from(info.map_type().map_or(0, |t| t as u32)) else {
                continue;
            };
            if is_counted(kind) {
                counted.push(Opened {
                    name: name.clone(),
                    kind,
                    key_size: info.key_size() as usize,
                    max_entries: info.max_entries(),
                    map,
                });
            }
        }
        let calls = open_pin(pin_dir, CALLS_MAP)?;
        let events = open_pin(pin_dir, EVENTS_MAP)?;
        let metrics = Map::from_map_data(open_pin(pin_dir, METRICS_MAP)?)
            .and_then(PerCpuArray::try_from)
            .map_err(|e| Error::map(METRICS_MAP, e))?;
        let evstats = Map::from_map_data(open_pin(pin_dir, EVSTATS_MAP)?)
            .and_then(PerCpuArray::try_from)
            .map_err(|e| Error::map(EVSTATS_MAP, e))?;
        Ok(Inspector {
            pin_dir: pin_dir.to_path_buf(),
            counted,
            metrics,
            evstats,
            calls_id: map_id(CALLS_MAP, &calls)?,
            events_id: map_id(EVENTS_MAP, &events)?,
        })
    }

    /// The pin directory the maps were opened from.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// How full each hash, LRU and LPM map is (by name), and the conntrack
    /// entries by protocol, from one walk over their keys: one syscall per
    /// entry, no lock.
    pub fn usage(&self) -> Result<Usage, Error> {
        let mut usage = Usage::default();
        let ct_proto = std::mem::offset_of!(CtKey4, protocol);
        for m in &self.counted {
            let is_ct = m.name == CT_MAP && m.key_size == std::mem::size_of::<CtKey4>();
            let entries = walk_keys(m, |key| {
                if is_ct {
                    *usage.conntrack.entry(key[ct_proto]).or_insert(0) += 1;
                }
            })
            .map_err(|source| Error::Syscall {
                call: "bpf(BPF_MAP_GET_NEXT_KEY) over a pinned map",
                source,
            })?;
            usage.maps.push(MapUsage {
                name: m.name.clone(),
                kind: kind_name(m.kind),
                entries,
                max_entries: m.max_entries,
            });
        }
        Ok(usage)
    }

    /// The verdict counters and the events the ring buffer lost, summed
    /// over CPUs.
    pub fn counters(&self) -> Result<Counters, Error> {
        let verdicts = read_counters(&self.metrics)?;
        let per_cpu = self
            .evstats
            .get(&0, 0)
            .map_err(|e| Error::map(EVSTATS_MAP, e))?;
        Ok(Counters {
            verdicts,
            events_lost: per_cpu.iter().map(|v| v.lost).sum(),
        })
    }

    /// The hooks of endpoint veth `ifname` (in the calling thread's
    /// namespace): each runs this datapath's program or not, with the
    /// filters found there. `None` if there is no such link.
    pub fn endpoint_hooks(&self, ifname: &str) -> Result<Option<Vec<HookStatus>>, Error> {
        attach::endpoint_hooks(self.calls_id, &self.pin_dir, ifname)
    }

    /// Whether the socket-LB programs run on `cgroup` through the links
    /// pinned for them (see [`crate::sock`]).
    pub fn socket_lb_hooks(
        &self,
        cgroup: &Path,
    ) -> Result<Vec<crate::sock::SockHookStatus>, Error> {
        let path = self.pin_dir.join(crate::sock::SOCK_MAP);
        let ours = aya::maps::MapInfo::from_pin(&path)
            .map(|i| i.id())
            .map_err(|e| Error::ReadPin {
                path,
                source: Box::new(e),
            })?;
        crate::sock::socket_lb_hooks(&self.pin_dir, cgroup, ours)
    }

    /// The hooks of node device `ifname` (the uplink, the VXLAN device).
    /// `None` if there is no such link.
    pub fn device_hooks(
        &self,
        ifname: &str,
        role: NodeDevice,
    ) -> Result<Option<Vec<HookStatus>>, Error> {
        attach::device_hooks(self.events_id, ifname, role)
    }
}

/// Walks every key of `m`, at most `max_entries` of them; returns how many.
fn walk_keys(m: &Opened, mut visit: impl FnMut(&[u8])) -> std::io::Result<u64> {
    let mut key = vec![0u8; m.key_size];
    let mut next = vec![0u8; m.key_size];
    let mut n = 0u64;
    let fd = m.map.fd().as_fd();
    while n < u64::from(m.max_entries) {
        let from = (n > 0).then_some(key.as_slice());
        if !sys::map_next_key(fd, from, &mut next)? {
            break;
        }
        visit(&next);
        n += 1;
        std::mem::swap(&mut key, &mut next);
    }
    Ok(n)
}

impl crate::Datapath {
    /// An [`Inspector`] on this datapath's pinned maps.
    pub fn inspector(&self) -> Result<Inspector, Error> {
        Inspector::open(self.pin_dir().ok_or(Error::NotPinned)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_and_kind_names() {
        let u = MapUsage {
            name: "pilus_frag4".into(),
            kind: kind_name(bpf_map_type::BPF_MAP_TYPE_LRU_HASH),
            entries: 6144,
            max_entries: 8192,
        };
        assert_eq!(u.kind, "lru_hash");
        assert_eq!(u.pressure(), 0.75);
        let none = MapUsage {
            max_entries: 0,
            ..u
        };
        assert_eq!(none.pressure(), 0.0);
        assert!(is_counted(bpf_map_type::BPF_MAP_TYPE_LPM_TRIE));
        assert!(!is_counted(bpf_map_type::BPF_MAP_TYPE_ARRAY));
    }
}
