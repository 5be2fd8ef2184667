//! Services: the [`ServiceManager`] that turns checked services
//! (`pilus_service::Service`) into the datapath's service maps, and the
//! control plane's service operations (upsert, import, delete, views),
//! persisted and, in a cluster, shared like policies.
//!
//! Each frontend (address, port, protocol) has an id (its reverse-NAT
//! index) and a generation; each of its backends an id of its own. Ids are
//! this node's, never reused (the counters are persisted, and raised past
//! any id found in the maps at start): a conntrack or affinity entry that
//! names a gone frontend or backend finds nothing rather than another one.
//!
//! A change of a frontend is atomic for the datapath: (1) the backend
//! entries, (2) the slots (random) or Maglev table of the next generation,
//! (3) its reverse-NAT entry, (4) the frontend's entry naming the new
//! generation, one map update that swaps the whole value, (5) the old
//! generation's slots or table and the backends it no longer has removed.
//! A packet reads the frontend's entry once and then only entries of that
//! generation: it sees the old set or the new one, never a mix. A removed
//! frontend goes in the opposite order, its entry first.

use crate::{
    control::ControlPlane,
    datapath::{DpResult, ServiceMap},
    persist, Error,
};
use ipnet::Ipv4Net;
use pilus_abi::{
    consts::{
        LB_ALG_MAGLEV, LB_ALG_RANDOM, LB_BACKEND_ACTIVE, LB_BACKEND_QUARANTINED,
        LB_BACKEND_TERMINATING, LB_F_AFFINITY, LB_F_ETP_LOCAL, LB_MAGLEV_M, LB_TYPE_CLUSTER_IP,
        LB_TYPE_EXTERNAL_IP, LB_TYPE_LOAD_BALANCER, LB_TYPE_NODE_PORT,
    },
    Be16, Be32, Lb4Backend, Lb4Key, Lb4Maglev, Lb4MaglevKey, Lb4ReverseNat, Lb4Service, Lb4SlotKey,
};
use pilus_api_types as api;
use pilus_kvstore::{KeyValue, Txn};
use pilus_service::{
    check_change, maglev, selectable, Algorithm, BackendState, Frontend, FrontendKey, FrontendType,
    Service, ServiceId, TrafficPolicy,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

/// The most slots a random frontend may have (weights expanded).
pub const MAX_SLOTS: usize = 65_536;

/// The next ids to hand out (persisted; both start at 1, 0 is "none").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextIds {
    pub frontend: u32,
    pub backend: u32,
}

impl Default for NextIds {
    fn default() -> Self {
        NextIds {
            frontend: 1,
            backend: 1,
        }
    }
}

/// What the datapath holds for one frontend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendState {
    pub id: u32,
    pub generation: u32,
    /// Slots of that generation (random; 0 for Maglev).
    #[serde(default)]
    pub slots: u32,
    /// Backend id by `address:port`.
    pub backends: BTreeMap<String, u32>,
}

/// A service's ids as this node keeps them: by frontend (`address:port/PROTO`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredIds {
    pub frontends: BTreeMap<String, FrontendState>,
}

#[derive(Clone, Debug)]
struct Installed {
    service: Service,
    /// By frontend key.
    frontends: BTreeMap<FrontendKey, FrontendState>,
}

impl Installed {
    fn ids(&self) -> StoredIds {
        StoredIds {
            frontends: self
                .frontends
                .iter()
                .map(|(k, s)| (k.to_string(), s.clone()))
                .collect(),
        }
    }
}

/// Everything to write for one frontend's new generation.
struct FrontendWrite {
    key: Lb4Key,
    state: FrontendState,
    value: Lb4Service,
    backends: Vec<(u32, Lb4Backend)>,
    slots: Vec<u32>,
    maglev: Option<Box<Lb4Maglev>>,
    rev_nat: Lb4ReverseNat,
    /// What it replaces.
    old: Option<FrontendState>,
}

pub fn lb_key(k: &FrontendKey) -> Lb4Key {
    Lb4Key {
        address: Be32::from(k.address),
        dport: Be16::new(k.port),
        protocol: k.protocol.number(),
        scope: 0,
    }
}

fn lb_type(t: FrontendType) -> u8 {
    match t {
        FrontendType::ClusterIp => LB_TYPE_CLUSTER_IP,
        FrontendType::NodePort => LB_TYPE_NODE_PORT,
        FrontendType::ExternalIp => LB_TYPE_EXTERNAL_IP,
        FrontendType::LoadBalancer => LB_TYPE_LOAD_BALANCER,
    }
}

fn lb_state(s: BackendState) -> u8 {
    match s {
        BackendState::Active => LB_BACKEND_ACTIVE,
        BackendState::Terminating => LB_BACKEND_TERMINATING,
        BackendState::Quarantined => LB_BACKEND_QUARANTINED,
    }
}

fn slot_keys(id: u32, generation: u32, n: usize) -> Vec<Lb4SlotKey> {
    (0..n as u32)
        .map(|slot| Lb4SlotKey {
            id,
            generation,
            slot,
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Frontends and their backends in the datapath, and the services they
/// come from.
pub struct ServiceManager {
    services: BTreeMap<ServiceId, Installed>,
    next: NextIds,
    dp: Arc<dyn ServiceMap>,
}

impl ServiceManager {
    pub fn new(dp: Arc<dyn ServiceMap>) -> ServiceManager {
        ServiceManager {
            services: BTreeMap::new(),
            next: NextIds::default(),
            dp,
        }
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub fn frontends(&self) -> usize {
        self.services.values().map(|s| s.frontends.len()).sum()
    }

    pub fn next_ids(&self) -> NextIds {
        self.next
    }

    pub fn get(&self, id: &ServiceId) -> Option<&Service> {
        self.services.get(id).map(|i| &i.service)
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values().map(|i| &i.service)
    }

    /// The service and its frontends' ids, for the API.
    pub fn info(&self, id: &ServiceId) -> Option<api::ServiceInfo> {
        let i = self.services.get(id)?;
        Some(api::ServiceInfo {
            service: i.service.to_api(),
            frontend_ids: i
                .service
                .frontends
                .iter()
                .map(|f| i.frontends.get(&f.key).map_or(0, |s| s.id))
                .collect(),
        })
    }

    pub fn infos(&self) -> Vec<api::ServiceInfo> {
        self.services
            .keys()
            .filter_map(|id| self.info(id))
            .collect()
    }

    /// The stored ids of a service, to persist after a change.
    pub fn stored_ids(&self, id: &ServiceId) -> Option<StoredIds> {
        self.services.get(id).map(Installed::ids)
    }

    /// Takes a service back at start, with the ids it had (nothing is
    /// written: [`Self::resync`] does that once all are back).
    pub fn restore(&mut self, service: Service, ids: StoredIds, next: NextIds) {
        self.next.frontend = self.next.frontend.max(next.frontend);
        self.next.backend = self.next.backend.max(next.backend);
        let frontends = service
            .frontends
            .iter()
            .filter_map(|f| Some((f.key, ids.frontends.get(&f.key.to_string())?.clone())))
            .collect();
        self.services
            .insert(service.id.clone(), Installed { service, frontends });
    }

    /// The counters as stored, when no service was restored to carry them.
    pub fn restore_next(&mut self, next: NextIds) {
        self.next.frontend = self.next.frontend.max(next.frontend);
        self.next.backend = self.next.backend.max(next.backend);
    }

    /// The new generation of frontend `f` of `s`, with ids for whatever is
    /// new (taken from `next`).
    fn plan(
        next: &mut NextIds,
        s: &Service,
        f: &Frontend,
        old: Option<&FrontendState>,
    ) -> Result<FrontendWrite, Error> {
        let id = old.map_or_else(
            || {
                let id = next.frontend;
                next.frontend += 1;
                id
            },
            |o| o.id,
        );
        let generation = old.map_or(1, |o| o.generation.wrapping_add(1).max(1));
        let mut state = FrontendState {
            id,
            generation,
            slots: 0,
            backends: BTreeMap::new(),
        };
        let mut backends = Vec::new();
        for b in s.backends_of(f) {
            let name = b.name();
            let bid = match old.and_then(|o| o.backends.get(&name)) {
                Some(bid) => *bid,
                None => {
                    let bid = next.backend;
                    next.backend += 1;
                    bid
                }
            };
            state.backends.insert(name, bid);
            backends.push((
                bid,
                Lb4Backend {
                    address: Be32::from(b.address),
                    port: Be16::new(b.port),
                    state: lb_state(b.state),
                    _pad: 0,
                },
            ));
        }
        let chosen = selectable(s.backends_of(f));
        let bid = |b: &pilus_service::Backend| state.backends[&b.name()];
        let (count, slots, table) = match s.algorithm {
            Algorithm::Random => {
                let g = chosen.iter().fold(0, |g, b| gcd(g, u32::from(b.weight)));
                let mut slots = Vec::new();
                for b in &chosen {
                    for _ in 0..u32::from(b.weight) / g.max(1) {
                        slots.push(bid(b));
                    }
                }
                if slots.len() > MAX_SLOTS {
                    return Err(Error::invalid(
                        "service",
                        format!(
                            "{}: frontend {}: the backends' weights need {} slots, at most {MAX_SLOTS} (make them more even)",
                            s.id, f.key, slots.len()
                        ),
                    ));
                }
                (slots.len() as u32, slots, None)
            }
            Algorithm::Maglev => {
                let entries: Vec<maglev::Entry> = chosen
                    .iter()
                    .map(|b| maglev::Entry {
                        name: b.name(),
                        weight: u32::from(b.weight),
                        id: bid(b),
                    })
                    .collect();
                let ids = maglev::table(&entries, LB_MAGLEV_M);
                let table = (!ids.is_empty()).then(|| {
                    let mut t = Box::<Lb4Maglev>::default();
                    t.backend_ids.copy_from_slice(&ids);
                    t
                });
                (chosen.len() as u32, Vec::new(), table)
            }
        };
        state.slots = slots.len() as u32;
        Ok(FrontendWrite {
            key: lb_key(&f.key),
            value: Lb4Service {
                id,
                generation,
                count,
                affinity_timeout: s.affinity_seconds.unwrap_or(0),
                svc_type: lb_type(f.kind),
                algorithm: match s.algorithm {
                    Algorithm::Random => LB_ALG_RANDOM,
                    Algorithm::Maglev => LB_ALG_MAGLEV,
                },
                flags: lb_flags(s, f),
                _pad: [0; 5],
            },
            state,
            backends,
            slots,
            maglev: table,
            rev_nat: Lb4ReverseNat {
                address: Be32::from(f.key.address),
                port: Be16::new(f.key.port),
                _pad: 0,
            },
            old: old.cloned(),
        })
    }

    /// The writes of one frontend's new generation, in the order the
    /// module's comment gives.
    fn write(dp: &dyn ServiceMap, w: &FrontendWrite) -> DpResult<()> {
        let id = w.state.id;
        let gen = w.state.generation;
        dp.put_lb_backends(&w.backends)?;
        let keys = slot_keys(id, gen, w.slots.len());
        let slots: Vec<(Lb4SlotKey, u32)> = keys.into_iter().zip(w.slots.iter().copied()).collect();
        dp.put_lb_slots(&slots)?;
        if let Some(t) = &w.maglev {
            dp.put_lb_maglev(
                &Lb4MaglevKey {
                    id,
                    generation: gen,
                },
                t,
            )?;
        }
        dp.put_lb_rev_nat(&[(id, w.rev_nat)])?;
        dp.put_lb_services(&[(w.key, w.value)])?;
        if let Some(old) = &w.old {
            Self::remove_generation(dp, old)?;
            let gone: Vec<u32> = old
                .backends
                .values()
                .filter(|b| !w.state.backends.values().any(|n| n == *b))
                .copied()
                .collect();
            dp.remove_lb_backends(&gone)?;
        }
        Ok(())
    }

    /// Removes a generation's slots and table (whichever it has).
    fn remove_generation(dp: &dyn ServiceMap, st: &FrontendState) -> DpResult<()> {
        dp.remove_lb_slots(&slot_keys(st.id, st.generation, st.slots as usize))?;
        dp.remove_lb_maglev(&Lb4MaglevKey {
            id: st.id,
            generation: st.generation,
        })
    }

    /// A frontend out of the datapath: its entry first, so no packet picks
    /// it any more, then what it named.
    fn unwrite(dp: &dyn ServiceMap, key: &FrontendKey, st: &FrontendState) -> DpResult<()> {
        dp.remove_lb_services(&[lb_key(key)])?;
        Self::remove_generation(dp, st)?;
        dp.remove_lb_backends(&st.backends.values().copied().collect::<Vec<_>>())?;
        dp.remove_lb_rev_nat(&[st.id])
    }

    /// Creates or replaces service `s` (already checked against the others)
    /// in the datapath. Returns whether it was new.
    pub fn upsert(&mut self, s: Service) -> Result<bool, Error> {
        let old = self.services.get(&s.id).cloned();
        let mut next = self.next;
        let mut plans = Vec::new();
        for f in &s.frontends {
            let prev = old.as_ref().and_then(|o| o.frontends.get(&f.key));
            plans.push((f.key, Self::plan(&mut next, &s, f, prev)?));
        }
        // Ids are taken even if a write below fails: never handed out twice.
        self.next = next;
        for (_, w) in &plans {
            Self::write(self.dp.as_ref(), w)?;
        }
        if let Some(o) = &old {
            for (k, st) in &o.frontends {
                if !s.frontends.iter().any(|f| f.key == *k) {
                    Self::unwrite(self.dp.as_ref(), k, st)?;
                }
            }
        }
        let frontends = plans.into_iter().map(|(k, w)| (k, w.state)).collect();
        self.services.insert(
            s.id.clone(),
            Installed {
                service: s,
                frontends,
            },
        );
        Ok(old.is_none())
    }

    /// Removes a service; false if it was not there.
    pub fn remove(&mut self, id: &ServiceId) -> Result<bool, Error> {
        let Some(i) = self.services.get(id).cloned() else {
            return Ok(false);
        };
        for (k, st) in &i.frontends {
            Self::unwrite(self.dp.as_ref(), k, st)?;
        }
        self.services.remove(id);
        Ok(true)
    }

    /// Brings the maps in line with the services after a restart: a
    /// frontend whose entry, slots or table, backends and reverse NAT are
    /// as they should be is left alone (a clean restart writes nothing);
    /// any other gets a new generation. Entries no service names go.
    /// Returns (frontends written, entries removed).
    pub fn resync(&mut self) -> Result<(usize, usize), Error> {
        let dp = self.dp.clone();
        let svc_map: BTreeMap<Lb4Key, Lb4Service> = dp.lb_services()?.into_iter().collect();
        let slots: BTreeMap<Lb4SlotKey, u32> = dp.lb_slots()?.into_iter().collect();
        let backends: BTreeMap<u32, Lb4Backend> = dp.lb_backends()?.into_iter().collect();
        let rev_nat: BTreeMap<u32, Lb4ReverseNat> = dp.lb_rev_nat()?.into_iter().collect();
        // Never hand out an id the maps still hold (a change that reached
        // the maps but not the store before a crash).
        let top_fe = svc_map
            .values()
            .map(|v| v.id)
            .chain(rev_nat.keys().copied())
            .max()
            .unwrap_or(0);
        let top_be = backends.keys().copied().max().unwrap_or(0);
        self.next.frontend = self.next.frontend.max(top_fe + 1);
        self.next.backend = self.next.backend.max(top_be + 1);

        let mut written = 0;
        let ids: Vec<ServiceId> = self.services.keys().cloned().collect();
        for sid in ids {
            let inst = self.services[&sid].clone();
            let mut states = BTreeMap::new();
            for f in &inst.service.frontends {
                let cur = inst.frontends.get(&f.key);
                // What the current generation should look like.
                let mut probe = self.next;
                let mut want = Self::plan(&mut probe, &inst.service, f, cur)?;
                if let Some(c) = cur {
                    want.state.generation = c.generation;
                    want.value.generation = c.generation;
                    want.old = None;
                }
                let in_place = cur.is_some()
                    && svc_map.get(&want.key) == Some(&want.value)
                    && rev_nat.get(&want.state.id) == Some(&want.rev_nat)
                    && want
                        .backends
                        .iter()
                        .all(|(id, b)| backends.get(id) == Some(b))
                    && slot_keys(want.state.id, want.state.generation, want.slots.len())
                        .iter()
                        .zip(&want.slots)
                        .all(|(k, id)| slots.get(k) == Some(id))
                    && (want.maglev.is_none()
                        || dp
                            .lb_maglev(&Lb4MaglevKey {
                                id: want.state.id,
                                generation: want.state.generation,
                            })?
                            .is_some_and(|t| Some(&t) == want.maglev.as_ref()));
                if in_place {
                    states.insert(f.key, want.state);
                    continue;
                }
                let mut next = self.next;
                let w = Self::plan(&mut next, &inst.service, f, cur)?;
                self.next = next;
                Self::write(dp.as_ref(), &w)?;
                written += 1;
                states.insert(f.key, w.state);
            }
            self.services.get_mut(&sid).expect("listed").frontends = states;
        }
        // Whatever no frontend names now.
        let mut want_keys = BTreeSet::new();
        let mut want_ids = BTreeSet::new();
        let mut want_backends = BTreeSet::new();
        let mut want_gens = BTreeSet::new();
        for i in self.services.values() {
            for (k, st) in &i.frontends {
                want_keys.insert(lb_key(k));
                want_ids.insert(st.id);
                want_gens.insert((st.id, st.generation));
                want_backends.extend(st.backends.values().copied());
            }
        }
        let mut removed = 0;
        let stale: Vec<Lb4Key> = dp
            .lb_services()?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !want_keys.contains(k))
            .collect();
        removed += stale.len();
        dp.remove_lb_services(&stale)?;
        let stale: Vec<Lb4SlotKey> = dp
            .lb_slots()?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !want_gens.contains(&(k.id, k.generation)))
            .collect();
        removed += stale.len();
        dp.remove_lb_slots(&stale)?;
        for k in dp.lb_maglev_keys()? {
            if !want_gens.contains(&(k.id, k.generation)) {
                dp.remove_lb_maglev(&k)?;
                removed += 1;
            }
        }
        let stale: Vec<u32> = dp
            .lb_backends()?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !want_backends.contains(k))
            .collect();
        removed += stale.len();
        dp.remove_lb_backends(&stale)?;
        let stale: Vec<u32> = dp
            .lb_rev_nat()?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !want_ids.contains(k))
            .collect();
        removed += stale.len();
        dp.remove_lb_rev_nat(&stale)?;
        Ok((written, removed))
    }

    /// The service maps decoded, per frontend (`GET /v1/bpf/lb`).
    pub fn bpf_view(&self) -> Result<Vec<api::BpfLbFrontend>, Error> {
        let dp = self.dp.as_ref();
        let slots = dp.lb_slots()?;
        let backends: BTreeMap<u32, Lb4Backend> = dp.lb_backends()?.into_iter().collect();
        let rev: BTreeMap<u32, Lb4ReverseNat> = dp.lb_rev_nat()?.into_iter().collect();
        let name = |id: &u32| {
            backends.get(id).map_or(format!("#{id} (missing)"), |b| {
                let addr = std::net::Ipv4Addr::from(b.address);
                format!("{addr}:{}", b.port.get())
            })
        };
        let mut out = Vec::new();
        let mut svcs = dp.lb_services()?;
        svcs.sort_by_key(|(_, v)| v.id);
        for (k, v) in svcs {
            let mut chosen: Vec<String> = Vec::new();
            if v.algorithm == LB_ALG_MAGLEV {
                if let Some(t) = dp.lb_maglev(&Lb4MaglevKey {
                    id: v.id,
                    generation: v.generation,
                })? {
                    let mut seen = BTreeSet::new();
                    for id in t.backend_ids.iter() {
                        if seen.insert(*id) {
                            chosen.push(name(id));
                        }
                    }
                }
            } else {
                let mut mine: Vec<(u32, u32)> = slots
                    .iter()
                    .filter(|(s, _)| s.id == v.id && s.generation == v.generation)
                    .map(|(s, id)| (s.slot, *id))
                    .collect();
                mine.sort();
                chosen = mine.iter().map(|(_, id)| name(id)).collect();
            }
            let proto = match k.protocol {
                6 => "TCP",
                17 => "UDP",
                _ => "?",
            };
            let kind = match v.svc_type {
                LB_TYPE_CLUSTER_IP => FrontendType::ClusterIp.name(),
                LB_TYPE_NODE_PORT => FrontendType::NodePort.name(),
                LB_TYPE_EXTERNAL_IP => FrontendType::ExternalIp.name(),
                LB_TYPE_LOAD_BALANCER => FrontendType::LoadBalancer.name(),
                _ => "?",
            };
            out.push(api::BpfLbFrontend {
                frontend: format!(
                    "{}:{}/{proto}",
                    std::net::Ipv4Addr::from(k.address),
                    k.dport.get()
                ),
                id: v.id,
                kind: kind.into(),
                algorithm: if v.algorithm == LB_ALG_MAGLEV {
                    "maglev"
                } else {
                    "random"
                }
                .into(),
                generation: v.generation,
                count: v.count,
                affinity_seconds: (v.flags & LB_F_AFFINITY != 0).then_some(v.affinity_timeout),
                local_traffic_only: v.flags & LB_F_ETP_LOCAL != 0,
                backends: chosen,
                rev_nat: rev
                    .get(&v.id)
                    .map(|r| format!("{}:{}", std::net::Ipv4Addr::from(r.address), r.port.get())),
            });
        }
        Ok(out)
    }
}

/// The datapath's `LB_F_*` of frontend `f`: affinity, and for one reached
/// from outside (NodePort, ExternalIP, LoadBalancer) externalTrafficPolicy:
/// Local.
fn lb_flags(s: &Service, f: &Frontend) -> u8 {
    let mut flags = 0;
    if s.affinity_seconds.is_some() {
        flags |= LB_F_AFFINITY;
    }
    if f.kind.is_external() && s.traffic_policy == TrafficPolicy::Local {
        flags |= LB_F_ETP_LOCAL;
    }
    flags
}

/// A stored service (the API's form), checked again on the way in.
pub(crate) fn decode_service(kv: &KeyValue) -> Result<Service, Error> {
    let s: api::Service = persist::decode(kv)?;
    Service::from_api(&s).map_err(|e| Error::invalid("stored service", e.to_string()))
}

impl ControlPlane {
    /// Every known node's pod CIDR: where backends may be.
    fn pod_cidrs(&self) -> Vec<Ipv4Net> {
        let mut v = vec![self.settings.pod_cidr];
        if let Some(c) = &self.cluster {
            v.extend(c.nodes.lock().expect("lock").values().map(|n| n.pod_cidr));
        }
        v
    }

    /// Checks, shares (in a cluster), writes and persists services, all
    /// checked before the first is written.
    fn apply_services(&self, services: Vec<Service>) -> Result<Vec<bool>, Error> {
        let _w = self.write_lock();
        let mut mgr = self.svc_mut();
        check_change(&services, mgr.services(), &self.pod_cidrs())?;
        let shared = services.iter().fold(Txn::new(), |t, s| {
            t.put(
                self.layout.service(&s.id.namespace, &s.id.name),
                persist::encode(&s.to_api()),
            )
        });
        let local = match self.cluster {
            Some(_) => {
                self.share_chunked(shared, "sharing the services with the other nodes")?;
                Txn::new()
            }
            None => shared,
        };
        let mut created = Vec::new();
        let mut txn = local;
        for s in services {
            let id = s.id.clone();
            created.push(mgr.upsert(s)?);
            let ids = mgr.stored_ids(&id).expect("just installed");
            txn = txn.put(
                self.layout.service_id(&id.namespace, &id.name),
                persist::encode(&ids),
            );
            tracing::info!(service = %id, "service written");
        }
        txn = txn.put(
            self.layout.service_next_ids(),
            persist::encode(&mgr.next_ids()),
        );
        self.store.commit(txn)?;
        Ok(created)
    }

    /// Creates or replaces one service (`PUT /v1/services`). Refused whole
    /// (400) when any field, a frontend another service has, or a backend
    /// outside every node's pod CIDR is wrong; the maps are then unchanged.
    pub fn upsert_service(&self, s: &api::Service) -> Result<api::ServiceUpserted, Error> {
        let svc = Service::from_api(s)?;
        let name = svc.id.to_string();
        let created = self.apply_services(vec![svc])?;
        Ok(api::ServiceUpserted {
            service: name,
            created: created[0],
        })
    }

    /// Imports Kubernetes Service and EndpointSlice documents: every file
    /// read and every service checked before the first is written.
    pub fn import_services(
        &self,
        files: &[api::PolicyFile],
    ) -> Result<api::ServicesImported, Error> {
        let mut all = Vec::new();
        let mut skipped = Vec::new();
        for f in files {
            let imp = pilus_service::k8s::parse_documents(&f.text, &f.name)?;
            all.extend(imp.services);
            skipped.extend(imp.skipped);
        }
        if all.is_empty() {
            return Err(Error::invalid(
                "import",
                match skipped.is_empty() {
                    true => "no Service document found".to_string(),
                    false => format!("no service to import: {}", skipped.join("; ")),
                },
            ));
        }
        let names: Vec<String> = all.iter().map(|s| s.id.to_string()).collect();
        self.apply_services(all)?;
        Ok(api::ServicesImported {
            services: names,
            skipped,
        })
    }

    /// Deletes one service by `namespace/name`; 404 if there is none.
    pub fn delete_service(&self, id: &str) -> Result<api::Deleted, Error> {
        let id: ServiceId = id.parse()?;
        let _w = self.write_lock();
        let mut mgr = self.svc_mut();
        if mgr.get(&id).is_none() {
            return Err(Error::NotFound {
                what: "service",
                name: id.to_string(),
            });
        }
        let key = self.layout.service(&id.namespace, &id.name);
        let mut txn = Txn::new().delete(self.layout.service_id(&id.namespace, &id.name));
        match self.cluster {
            Some(_) => self.share_chunked(
                Txn::new().delete(key),
                "sharing the deletion with the other nodes",
            )?,
            None => txn = txn.delete(key),
        }
        mgr.remove(&id)?;
        self.store.commit(txn)?;
        tracing::info!(service = %id, "service deleted");
        Ok(api::Deleted {
            deleted: 1,
            revision: 0,
        })
    }

    pub fn services_view(&self) -> Vec<api::ServiceInfo> {
        self.svc().infos()
    }

    pub fn service_view(&self, id: &str) -> Result<api::ServiceInfo, Error> {
        let id: ServiceId = id.parse()?;
        self.svc().info(&id).ok_or_else(|| Error::NotFound {
            what: "service",
            name: id.to_string(),
        })
    }

    pub fn bpf_lb(&self) -> Result<Vec<api::BpfLbFrontend>, Error> {
        self.svc().bpf_view()
    }

    /// A service another node shared (or changed): applied here unless it
    /// conflicts with one this node has (a frontend twice), which is logged
    /// and skipped.
    pub(crate) fn on_service_put(&self, kv: &KeyValue) -> Result<(), Error> {
        let s = match decode_service(kv) {
            Ok(s) if self.layout.service(&s.id.namespace, &s.id.name) == kv.key => s,
            Ok(_) => {
                tracing::warn!(key = %kv.key, "skipping a service stored under another service's key");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e.message(), "skipping a service that cannot be read");
                return Ok(());
            }
        };
        let _w = self.write_lock();
        let mut mgr = self.svc_mut();
        if mgr.get(&s.id) == Some(&s) {
            return Ok(()); // written here, or seen already
        }
        // Ranges are the writer's to check: this node may not know every
        // node yet. Frontends must not collide with ours.
        if let Err(e) = check_change(std::slice::from_ref(&s), mgr.services(), &[]) {
            if matches!(e, pilus_service::Error::DuplicateFrontend { .. }) {
                tracing::warn!(service = %s.id, error = %e, "skipping a service from the cluster");
                return Ok(());
            }
        }
        let id = s.id.clone();
        mgr.upsert(s)?;
        let ids = mgr.stored_ids(&id).expect("just installed");
        self.store.commit(
            Txn::new()
                .put(
                    self.layout.service_id(&id.namespace, &id.name),
                    persist::encode(&ids),
                )
                .put(
                    self.layout.service_next_ids(),
                    persist::encode(&mgr.next_ids()),
                ),
        )?;
        tracing::info!(service = %id, "service from the cluster applied");
        Ok(())
    }

    pub(crate) fn on_service_delete(&self, key: &str) -> Result<(), Error> {
        let _w = self.write_lock();
        let mut mgr = self.svc_mut();
        let ids: Vec<ServiceId> = mgr
            .services()
            .map(|s| s.id.clone())
            .filter(|id| self.layout.service(&id.namespace, &id.name) == key)
            .collect();
        for id in ids {
            mgr.remove(&id)?;
            self.store
                .commit(Txn::new().delete(self.layout.service_id(&id.namespace, &id.name)))?;
            tracing::info!(service = %id, "service deleted in the cluster");
        }
        Ok(())
    }

    /// The keys of the services this node has (for a watch's resync).
    pub(crate) fn service_keys(&self) -> Vec<String> {
        self.svc()
            .services()
            .map(|s| self.layout.service(&s.id.namespace, &s.id.name))
            .collect()
    }
}
