//! `pilus trace`'s private copy of the pod programs: bpf_lxc.o loaded a
//! second time, with the node's globals, on the LIVE maps a packet only
//! reads (endpoints, ipcache, policy, services) and on PRIVATE, fresh maps
//! for everything a packet writes (conntrack, counters, the event ring,
//! session affinity, fragments) or the trace sets (the monitor's settings,
//! the tail-call array, filled with the copy's own programs). A packet run
//! through it with BPF_PROG_TEST_RUN meets the node's real state and
//! changes none of it; its events, read from the private ring, are the
//! steps of its life.
//!
//! The live maps are handed to aya by pinning this process's own
//! descriptors of them in a private bpffs directory (aya 0.14 reuses maps
//! only through pins), so the copy uses exactly the maps of the loaded
//! [`Datapath`], pinned or not; the pins go as soon as the copy is loaded.

use crate::{
    config::NodeConfig,
    loader::{fill_tail_calls, private_pin_dir, LXC_PROGRAMS},
    objects, testrun, Datapath, Error,
};
use aya::{
    maps::{Array, HashMap, MapData, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions},
    Ebpf, EbpfLoader,
};
use pilus_abi::{
    consts::{MONITOR_AGG_NONE, MONITOR_F_CAPTURE, MONITOR_F_DEBUG},
    CtEntry, CtKey4, Event, FragKey4, FragPorts, Lb4Affinity, Lb4AffinityKey, MonitorConfig,
};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// How a trace treats a map of bpf_lxc.o.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceMap {
    /// No packet writes it: the live map itself.
    Live,
    /// A packet writes it, or the trace sets it: a fresh map of its own,
    /// of this many entries (`None`: the object's size).
    Private(Option<u32>),
}

/// Private maps that are preallocated get few entries: one trace makes one
/// or two flows, and a full-size conntrack table would cost ~30 MiB.
const SMALL: Option<u32> = Some(1024);

/// Every map of bpf_lxc.o and how a trace treats it: the one table the
/// loader and the completeness test read. A map missing here is private
/// (a trace stays contained) and fails `every_map_of_the_object_is_classified`.
pub const TRACE_MAPS: &[(&str, TraceMap)] = &[
    ("pilus_lxc", TraceMap::Live),
    ("pilus_lxc_if", TraceMap::Live),
    ("pilus_ipcache", TraceMap::Live),
    ("pilus_policy", TraceMap::Live),
    ("pilus_polrev", TraceMap::Live),
    ("pilus_lb4_svc", TraceMap::Live),
    ("pilus_lb4_slot", TraceMap::Live),
    ("pilus_lb4_be", TraceMap::Live),
    ("pilus_lb4_mag", TraceMap::Live),
    ("pilus_lb4_rnat", TraceMap::Live),
    ("pilus_prefilter", TraceMap::Live),
    ("pilus_abi", TraceMap::Live),
    // Written by every new flow (and by established ones' counters).
    ("pilus_ct4", TraceMap::Private(SMALL)),
    ("pilus_lb4_aff", TraceMap::Private(SMALL)),
    ("pilus_frag4", TraceMap::Private(SMALL)),
    // The socket hooks' reverse translations: no tc program touches it,
    // so the copy's is an empty stand-in.
    ("pilus_lb4_sk", TraceMap::Private(SMALL)),
    // Masquerade's translations: written by the uplink's programs only.
    ("pilus_nat4", TraceMap::Private(SMALL)),
    ("pilus_metrics", TraceMap::Private(None)),
    ("pilus_evstats", TraceMap::Private(None)),
    // 64 KiB: ~300 events, far more than one packet's.
    ("pilus_events", TraceMap::Private(Some(1 << 16))),
    // Every event, debug messages and captures included, whatever the
    // node's monitor is set to.
    ("pilus_monconf", TraceMap::Private(None)),
    // Filled with the copy's own programs.
    ("pilus_calls", TraceMap::Private(None)),
];

/// How a trace treats map `name` (unknown maps: private).
pub fn trace_map(name: &str) -> TraceMap {
    TRACE_MAPS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(TraceMap::Private(None), |(_, t)| *t)
}

/// The live maps, pinned for the copy's loader; removed on drop (the maps
/// themselves live on: the datapath and the copy hold them).
pub struct TracerSetup {
    dir: PathBuf,
    node: NodeConfig,
    pinned: Vec<PathBuf>,
}

impl Drop for TracerSetup {
    fn drop(&mut self) {
        for p in &self.pinned {
            let _ = std::fs::remove_file(p);
        }
        // The private maps aya pinned here too.
        for (name, _) in TRACE_MAPS {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove the trace's pin directory");
        }
    }
}

/// Removes the private pin directories of processes that are gone: one
/// killed while it loaded a copy left the live maps pinned there too, which
/// would keep them alive after their own pins are removed.
fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("pilus-private-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match std::fs::remove_dir_all(e.path()) {
            Ok(()) => {
                tracing::info!(dir = %e.path().display(), "removed a stale private pin directory")
            }
            Err(err) => {
                tracing::warn!(dir = %e.path().display(), error = %err, "could not remove a stale private pin directory")
            }
        }
    }
}

impl Datapath {
    /// The first half of making a [`Tracer`]: pins this datapath's live
    /// maps where the copy's loader finds them. Quick (a few syscalls), so
    /// a caller holding the datapath's lock can release it before
    /// [`TracerSetup::load`] spends the verifier's time.
    pub fn tracer_setup(&self) -> Result<TracerSetup, Error> {
        sweep_stale(&self.bpffs_root);
        let dir = private_pin_dir(&self.bpffs_root)?;
        let mut setup = TracerSetup {
            dir,
            node: self.node.clone(),
            pinned: Vec::new(),
        };
        for (name, how) in TRACE_MAPS {
            if *how != TraceMap::Live {
                continue;
            }
            let map = self.ebpf.map(name).ok_or(Error::MissingMap { name })?;
            let path = setup.dir.join(name);
            map.pin(&path).map_err(|source| Error::PinMap {
                name,
                path: path.clone(),
                source: Box::new(source),
            })?;
            setup.pinned.push(path);
        }
        Ok(setup)
    }
}

impl Datapath {
    /// The live conntrack entries of those of `keys` that exist: a trace of
    /// a packet of an existing flow starts from them.
    pub fn conntrack_entries(&self, keys: &[CtKey4]) -> Result<Vec<(CtKey4, CtEntry)>, Error> {
        const NAME: &str = "pilus_ct4";
        let m: HashMap<&MapData, CtKey4, CtEntry> = HashMap::try_from(
            self.ebpf
                .map(NAME)
                .ok_or(Error::MissingMap { name: NAME })?,
        )
        .map_err(|e| Error::map(NAME, e))?;
        let mut out = Vec::new();
        for k in keys {
            match m.get(k, 0) {
                Ok(v) => out.push((*k, v)),
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(Error::map(NAME, e)),
            }
        }
        Ok(out)
    }
}

impl TracerSetup {
    /// Loads and verifies the private copy of bpf_lxc.o.
    pub fn load(self) -> Result<Tracer, Error> {
        let started = Instant::now();
        // Trace events compiled in even when the node's are not: a trace
        // is made of them.
        let node = NodeConfig {
            trace_events: true,
            ..self.node.clone()
        };
        let globals = node.globals(node.hz);
        let mut loader = EbpfLoader::new();
        globals.apply(&mut loader);
        for (name, how) in TRACE_MAPS {
            if let TraceMap::Private(Some(n)) = how {
                loader.map_max_entries(name, *n);
            }
        }
        loader.map_max_entries("pilus_lxc", node.pod_cidr.size());
        loader.default_map_pin_directory(&self.dir);
        let mut ebpf = loader.load(objects::BPF_LXC).map_err(|e| Error::Load {
            object: "bpf_lxc.o (trace copy)",
            source: Box::new(e),
        })?;
        // Every map is the copy's now; the pins are not needed any more.
        drop(self);
        for p in LXC_PROGRAMS {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(p.name())
                .ok_or(Error::MissingProgram { name: p.name() })?
                .try_into()
                .map_err(|e| Error::program(p.name(), e))?;
            prog.load().map_err(|e| Error::program(p.name(), e))?;
        }
        fill_tail_calls(&mut ebpf)?;
        {
            const NAME: &str = "pilus_monconf";
            let mut conf: Array<&mut MapData, MonitorConfig> =
                Array::try_from(ebpf.map_mut(NAME).ok_or(Error::MissingMap { name: NAME })?)
                    .map_err(|e| Error::map(NAME, e))?;
            conf.set(
                0,
                MonitorConfig {
                    aggregation: MONITOR_AGG_NONE,
                    flags: MONITOR_F_DEBUG | MONITOR_F_CAPTURE,
                },
                0,
            )
            .map_err(|e| Error::map(NAME, e))?;
        }
        const RING: &str = "pilus_events";
        let ring = RingBuf::try_from(
            ebpf.take_map(RING)
                .ok_or(Error::MissingMap { name: RING })?,
        )
        .map_err(|e| Error::map(RING, e))?;
        let load_time = started.elapsed();
        tracing::debug!(?load_time, "trace copy of bpf_lxc.o loaded");
        Ok(Tracer {
            ebpf,
            ring,
            load_time,
        })
    }
}

/// The private copy, ready to run packets.
pub struct Tracer {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    load_time: Duration,
}

/// What one packet did in the copy.
#[derive(Clone, Debug)]
pub struct TraceRun {
    /// The tc verdict of the entry program.
    pub verdict: i32,
    /// The packet as it left (rewritten MACs, TTL, NAT, encapsulation).
    pub packet: Vec<u8>,
    /// Its events, in the order the programs sent them.
    pub events: Vec<Event>,
}

/// Removes every entry of a private hash map of the copy.
fn clear<K: aya::Pod, V: aya::Pod>(ebpf: &mut Ebpf, name: &'static str) -> Result<(), Error> {
    let map = ebpf.map_mut(name).ok_or(Error::MissingMap { name })?;
    // aya takes an LRU hash for a HashMap too.
    let mut m: HashMap<&mut MapData, K, V> =
        HashMap::try_from(map).map_err(|e| Error::map(name, e))?;
    let keys: Vec<K> = m.keys().filter_map(Result::ok).collect();
    for k in keys {
        // Gone already is as good.
        let _ = m.remove(&k);
    }
    Ok(())
}

impl Tracer {
    /// How long loading and verifying the copy took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Runs `frame` through from-container as if the pod behind host-side
    /// interface `ifindex` sent it (the interface must exist in the
    /// caller's network namespace). Each run starts from empty private
    /// maps but for `conntrack`, copies of live entries (see
    /// [`Datapath::conntrack_entries`]): without them it traces the first
    /// packet of a new flow.
    pub fn from_container(
        &mut self,
        ifindex: u32,
        frame: &[u8],
        conntrack: &[(CtKey4, CtEntry)],
    ) -> Result<TraceRun, Error> {
        clear::<CtKey4, CtEntry>(&mut self.ebpf, "pilus_ct4")?;
        {
            const NAME: &str = "pilus_ct4";
            let mut ct: HashMap<&mut MapData, CtKey4, CtEntry> = HashMap::try_from(
                self.ebpf
                    .map_mut(NAME)
                    .ok_or(Error::MissingMap { name: NAME })?,
            )
            .map_err(|e| Error::map(NAME, e))?;
            for (k, v) in conntrack {
                ct.insert(k, v, 0).map_err(|e| Error::map(NAME, e))?;
            }
        }
        clear::<Lb4AffinityKey, Lb4Affinity>(&mut self.ebpf, "pilus_lb4_aff")?;
        clear::<FragKey4, FragPorts>(&mut self.ebpf, "pilus_frag4")?;
        // Whatever an earlier, failed run left.
        while self.ring.next().is_some() {}
        let p = crate::Program::FromContainer;
        let prog: &SchedClassifier = self
            .ebpf
            .program(p.name())
            .ok_or(Error::MissingProgram { name: p.name() })?
            .try_into()
            .map_err(|e| Error::program(p.name(), e))?;
        let out = testrun::run(
            |opts: TestRunOptions<'_>| prog.test_run(opts),
            p.name(),
            ifindex,
            frame,
            1,
        )?;
        let mut events = Vec::new();
        while let Some(item) = self.ring.next() {
            if let Some(ev) = Event::from_bytes(&item) {
                events.push(ev);
            }
        }
        Ok(TraceRun {
            verdict: out.verdict,
            packet: out.packet,
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_of_the_object_is_classified() {
        let maps = crate::pins::object_maps(objects::BPF_LXC, &[]).unwrap();
        let names: Vec<&str> = maps.iter().map(|m| m.name.as_str()).collect();
        for n in &names {
            assert!(
                TRACE_MAPS.iter().any(|(t, _)| t == n),
                "map {n} of bpf_lxc.o is not in TRACE_MAPS: say whether a packet writes it \
                 (private to a trace) or only reads it (live)"
            );
        }
        for (t, _) in TRACE_MAPS {
            assert!(names.contains(t), "TRACE_MAPS names {t}, not in bpf_lxc.o");
        }
    }

    #[test]
    fn what_packets_write_is_private() {
        for m in [
            "pilus_ct4",
            "pilus_metrics",
            "pilus_events",
            "pilus_evstats",
            "pilus_lb4_aff",
            "pilus_frag4",
            "pilus_calls",
        ] {
            assert!(matches!(trace_map(m), TraceMap::Private(_)), "{m}");
        }
        assert_eq!(trace_map("pilus_unknown_new_map"), TraceMap::Private(None));
        assert_eq!(trace_map("pilus_policy"), TraceMap::Live);
    }
}
