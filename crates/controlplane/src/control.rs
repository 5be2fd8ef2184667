//! The control plane: the managers (endpoints, policy with its identities,
//! ipcache) composed, each behind its own lock, with changes serialized by
//! one writer lock and persisted as one store transaction each.
//!
//! Lock order: writer, then endpoints, then policy, then ipcache, then
//! services. A change
//! holds the writer lock throughout and each manager's lock only for the
//! steps that touch it, read-only where it only reads; a read (a listing,
//! a status) takes one manager's read lock and never waits for the writer,
//! so a policy import does not stall `pilus endpoint list` or the CNI
//! plugin's status check.

use crate::{
    cluster::{Cluster, ClusterSettings, NodeRecord},
    datapath::Datapath,
    endpoints::{label_key, EndpointManager, LabelSource, LabelSources, Pair, StoredEndpoint},
    identities::ClusterAllocator,
    ipcache::{Entry, IpcacheManager, Source},
    persist::{self, Layout, StoredLabels, StoredPolicy},
    plumbing::Plumbing,
    policy::PolicyManager,
    services::{self, NextIds, ServiceManager, StoredIds},
    validate, Error,
};
use ipnet::Ipv4Net;
use pilus_api_types as api;
use pilus_kvstore::{KvStore, Txn};
use pilus_policy::{identity::Kind, Change, Engine, Labels, Policy, PolicyId};
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::Instant,
};

/// What a node is configured with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub node_name: String,
    pub pod_cidr: Ipv4Net,
    pub router: Ipv4Addr,
    pub pin_dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// The pods' MTU when it is not the default (tunnel mode: what the
    /// tunnel carries).
    pub pod_mtu: Option<u32>,
}

pub struct ControlPlane {
    pub(crate) settings: Settings,
    pub(crate) layout: Layout,
    writer: Mutex<()>,
    pub(crate) endpoints: RwLock<EndpointManager>,
    pub(crate) policy: RwLock<PolicyManager>,
    pub(crate) ipcache: RwLock<IpcacheManager>,
    pub(crate) services: RwLock<ServiceManager>,
    pub(crate) dp: Arc<dyn Datapath>,
    /// This node's own state (endpoints, revision, local identities).
    pub(crate) store: Arc<dyn KvStore>,
    /// Membership in a cluster, if any.
    pub(crate) cluster: Option<Cluster>,
    resync: (usize, usize),
    started: Instant,
    /// The conntrack GC's state, once it runs (`crate::ctgc`).
    pub(crate) ct_status: Mutex<Option<api::ConntrackStatus>>,
}

/// Whether identities of `kind` are persisted in the node's own store:
/// all but the reserved ones on a single node; in a cluster the cluster
/// store keeps cluster identities, so only CIDR ones.
fn kept_locally(kind: Kind, clustered: bool) -> bool {
    match kind {
        Kind::Reserved => false,
        Kind::Cluster => !clustered,
        Kind::Cidr => true,
    }
}

/// Now, in Unix milliseconds (endpoint creation times).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn host_prefix(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, 32).expect("/32")
}

/// Identities a change set added or removed, to persist.
#[derive(Default)]
pub(crate) struct Touched {
    added: Vec<u32>,
    removed: Vec<u32>,
}

impl Touched {
    fn record(&mut self, c: &Change) {
        self.added.extend(&c.identities_added);
        self.removed.extend(&c.identities_removed);
    }

    /// The writes that keep the store's identity numbers equal the engine's.
    fn persist(&self, mut txn: Txn, layout: &Layout, engine: &Engine, clustered: bool) -> Txn {
        for id in &self.removed {
            if engine.identities().get(*id).is_none() {
                txn = txn.delete(layout.identity(*id));
            }
        }
        for id in &self.added {
            if let Some(i) = engine
                .identities()
                .get(*id)
                .filter(|i| kept_locally(i.kind, clustered))
            {
                txn = txn.put(
                    layout.identity(*id),
                    persist::encode(&StoredLabels::of(&i.labels)),
                );
            }
        }
        txn
    }
}

/// An endpoint's labels and their sources after `item`, or why not.
fn relabel(
    ep: &StoredEndpoint,
    item: &api::EndpointLabelsItem,
    override_cni: bool,
) -> Result<(Labels, LabelSources), Error> {
    let mut labels = ep.labels.clone();
    let mut sources = BTreeMap::clone(&ep.label_sources);
    let guard = |l: &pilus_policy::Label, doing: &str| -> Result<(), Error> {
        if ep.source_of(l) == LabelSource::Cni && !override_cni {
            return Err(Error::invalid(
                "labels",
                format!(
                    "endpoint {}: label {l} comes from the CNI network configuration; {doing} it only with --override-cni",
                    ep.id
                ),
            ));
        }
        Ok(())
    };
    for k in &item.delete {
        let want = pilus_policy::Label::parse(k, pilus_policy::labels::SOURCE_K8S)?;
        if !want.value.is_empty() {
            return Err(Error::invalid(
                "labels",
                format!("delete {k:?}: name a key, not key=value"),
            ));
        }
        let found = labels
            .iter()
            .find(|l| l.source == want.source && l.key == want.key)
            .ok_or_else(|| {
                Error::invalid(
                    "labels",
                    format!(
                        "endpoint {} has no label {}:{}",
                        ep.id, want.source, want.key
                    ),
                )
            })?;
        guard(&found, "delete")?;
        labels.remove_key(&found.source, &found.key);
        sources.remove(&label_key(&found));
    }
    for l in Labels::parse_all(&item.add, pilus_policy::labels::SOURCE_K8S)?.iter() {
        l.check_pod_label()?;
        if let Some(old) = labels
            .iter()
            .find(|o| o.source == l.source && o.key == l.key)
        {
            if old.value != l.value {
                guard(&old, "change")?;
            }
        }
        labels.remove_key(&l.source, &l.key);
        sources.insert(label_key(&l), LabelSource::User);
        labels.insert(l);
    }
    Ok((labels, Arc::new(sources)))
}

/// Writes one engine change into the maps and the ipcache, and follows the
/// address changes it causes (a Kubernetes ipBlock selects endpoints by
/// address) until nothing more changes.
///
/// In three phases across the whole change, so that every packet is judged
/// by either the old rules or the new ones, never by neither (an endpoint
/// whose labels change moves to an identity its peers must already accept):
/// 1. every new policy entry, of every endpoint;
/// 2. the switches: endpoint records (identity, enforcement), the ipcache's
///    endpoint /32s and policy CIDRs;
/// 3. every stale entry out.
pub(crate) fn apply(
    eps: &EndpointManager,
    pol: &mut PolicyManager,
    ipc: &mut IpcacheManager,
    change: Change,
    touched: &mut Touched,
) -> Result<(), Error> {
    let mut pending = vec![change];
    while let Some(change) = pending.pop() {
        touched.record(&change);
        let deltas: Vec<_> = change.endpoints.iter().map(PolicyManager::delta).collect();
        let adds: Vec<_> = deltas.iter().flat_map(|d| d.add.iter().copied()).collect();
        pol.put(&adds)?;
        for u in &change.endpoints {
            let (Some(id), Some(ep)) = (u.identity, eps.get(u.ep_id)) else {
                continue;
            };
            let (_, flags) = pol.identity_and_flags(u.ep_id);
            eps.write_info(&ep.info(id, flags))?;
            if u.old_identity != Some(id) {
                let w = ipc.upsert(
                    host_prefix(ep.ipv4),
                    Source::LocalEndpoint,
                    Entry::identity(id),
                )?;
                if let Some((ip, id)) = w.and_then(|w| w.endpoint_identity()) {
                    pending.push(pol.engine.set_address(ip, id));
                }
            }
        }
        for (c, id) in &change.cidr_upserts {
            ipc.upsert(*c, Source::PolicyCidr, Entry::identity(*id))?;
        }
        for c in &change.cidr_removals {
            ipc.remove(*c, Source::PolicyCidr)?;
        }
        let stale: Vec<_> = deltas
            .iter()
            .flat_map(|d| d.stale.iter().copied())
            .collect();
        pol.remove(&stale)?;
    }
    let rev = pol.engine.revision();
    pol.enforce(rev)?;
    Ok(())
}

/// The services in the (local or cluster) store, with this node's ids from
/// its own store. In a cluster an entry something else wrote may be
/// unreadable, or conflict with another's frontend: skipped with a warning,
/// as a policy would be.
fn restore_services(
    layout: &Layout,
    local: &dyn KvStore,
    shared: &dyn KvStore,
    clustered: bool,
    dp: Arc<dyn Datapath>,
) -> Result<ServiceManager, Error> {
    let mut mgr = ServiceManager::new(dp);
    let next: NextIds = match local.get(&layout.service_next_ids())? {
        Some(kv) => persist::decode(&kv)?,
        None => NextIds::default(),
    };
    let mut ids = BTreeMap::new();
    for kv in local.list(&layout.service_ids())?.0 {
        ids.insert(
            persist::tail(&kv, &layout.service_ids()).to_string(),
            persist::decode::<StoredIds>(&kv)?,
        );
    }
    for kv in shared.list(&layout.services())?.0 {
        let s = match services::decode_service(&kv) {
            Ok(s) => s,
            Err(e) if clustered => {
                tracing::warn!(key = %kv.key, error = %e.message(), "skipping a service that cannot be read");
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = pilus_service::check_change(std::slice::from_ref(&s), mgr.services(), &[]) {
            if matches!(e, pilus_service::Error::DuplicateFrontend { .. }) {
                tracing::warn!(service = %s.id, error = %e, "skipping a service whose frontend another has");
                continue;
            }
        }
        let tail = layout
            .service_id(&s.id.namespace, &s.id.name)
            .trim_start_matches(&layout.service_ids())
            .to_string();
        let stored = ids.remove(&tail).unwrap_or_default();
        mgr.restore(s, stored, next);
    }
    mgr.restore_next(next);
    Ok(mgr)
}

impl ControlPlane {
    /// Builds a single node's control plane from the stored state and
    /// brings the maps in line with it: after a restart that writes
    /// nothing, because identities keep their numbers.
    pub fn start(
        settings: Settings,
        dp: Arc<dyn Datapath>,
        plumbing: Arc<dyn Plumbing>,
        store: Arc<dyn KvStore>,
    ) -> Result<ControlPlane, Error> {
        ControlPlane::start_with(settings, dp, plumbing, store, None)
    }

    /// As [`start`](Self::start); with `cluster`, the node joins a cluster:
    /// identities are numbered cluster-wide, policies and namespaces live
    /// in the cluster store, the node publishes itself and its pods and
    /// learns the other nodes' (call [`spawn_cluster`](Self::spawn_cluster)
    /// to follow their changes). `local` keeps the node's own state.
    pub fn start_with(
        settings: Settings,
        dp: Arc<dyn Datapath>,
        plumbing: Arc<dyn Plumbing>,
        local: Arc<dyn KvStore>,
        cluster: Option<ClusterSettings>,
    ) -> Result<ControlPlane, Error> {
        validate::node_name(&settings.node_name)?;
        let layout = Layout::new(&settings.node_name);
        let joined = match &cluster {
            None => None,
            Some(c) => {
                let lease = Arc::new(c.store.grant_lease(c.lease_ttl)?);
                Some(Cluster {
                    store: c.store.clone(),
                    me: NodeRecord {
                        name: settings.node_name.clone(),
                        underlay_ip: c.underlay_ip,
                        pod_cidr: settings.pod_cidr,
                        routing: c.routing,
                    },
                    lease,
                    routes: c.routes.clone(),
                    nodes: Mutex::new(BTreeMap::new()),
                    remote_pods: Mutex::new(Default::default()),
                    dirty: AtomicBool::new(true),
                })
            }
        };
        // Where policies and namespaces live: the cluster's store, or ours.
        let shared: Arc<dyn KvStore> = match &joined {
            Some(c) => c.store.clone(),
            None => local.clone(),
        };
        let mut engine = match &joined {
            Some(c) => {
                let l = c.lease.clone();
                Engine::with_allocator(Box::new(ClusterAllocator::new(
                    c.store.clone(),
                    &settings.node_name,
                    Arc::new(move || l.id()),
                )?))
            }
            None => Engine::new(),
        };
        let mut held = BTreeMap::new();
        for kv in local.list(&layout.identities())?.0 {
            let id: u32 = persist::tail(&kv, &layout.identities())
                .parse()
                .map_err(|_| Error::invalid("stored identity", kv.key.clone()))?;
            held.insert(id, persist::decode::<StoredLabels>(&kv)?.labels()?);
        }
        engine.prefer_identities(held.iter().map(|(id, l)| (l.clone(), *id)));
        for kv in shared.list(&layout.namespaces())?.0 {
            let ns = persist::tail(&kv, &layout.namespaces()).to_string();
            match persist::decode::<StoredLabels>(&kv).and_then(|l| l.labels()) {
                Ok(l) => {
                    engine.set_namespace_labels(&ns, l)?;
                }
                // As for policies below: a shared store may hold entries
                // something else wrote.
                Err(e) if joined.is_some() => {
                    tracing::warn!(key = %kv.key, error = %e.message(), "skipping namespace labels that cannot be read")
                }
                Err(e) => return Err(e),
            }
        }
        let mut eps = EndpointManager::new(
            settings.pod_cidr,
            settings.router,
            settings.pod_mtu,
            plumbing,
            dp.clone(),
            dp.clone(),
        );
        let mut forgotten = Vec::new();
        for kv in local.list(&layout.endpoints())?.0 {
            let ep: StoredEndpoint = persist::decode(&kv)?;
            let id = ep.id;
            if eps.restore(ep) {
                // The record's (interned) set, so the engine shares it.
                let ep = eps.get(id).expect("just restored");
                engine.upsert_endpoint(id, &ep.namespace, &ep.labels)?;
            } else {
                forgotten.push(id);
            }
        }
        // In a cluster the node keeps its own cookies (see `keep_policy`).
        let mut cookies = BTreeMap::new();
        if joined.is_some() {
            for kv in local.list(&layout.cookies())?.0 {
                let tail = persist::tail(&kv, &layout.cookies()).to_string();
                cookies.insert(tail, persist::decode::<u32>(&kv)?);
            }
        }
        let mut policies = Vec::new();
        let mut fresh = Vec::new();
        for kv in shared.list(&layout.policies())?.0 {
            let tail = persist::tail(&kv, &layout.policies()).to_string();
            let read = persist::decode::<StoredPolicy>(&kv)
                .and_then(|s| Ok((s.policy(&kv.key)?, s.cookie)))
                .map(|(p, c)| match joined {
                    Some(_) => (p, cookies.get(&tail).copied()),
                    None => (p, Some(c)),
                });
            match read {
                Ok((p, Some(c))) => policies.push((p, c)),
                Ok((p, None)) => fresh.push(p),
                // Something else wrote it (a cluster store is shared): one
                // unreadable entry must not keep the node from starting.
                Err(e) if joined.is_some() => {
                    tracing::warn!(key = %kv.key, error = %e.message(), "skipping a policy that cannot be read")
                }
                Err(e) => return Err(e),
            }
        }
        if !policies.is_empty() {
            engine.restore(policies)?;
        }
        let mut fresh_cookies = Txn::new();
        if !fresh.is_empty() {
            let ids: Vec<PolicyId> = fresh.iter().map(|p| p.id.clone()).collect();
            engine.import(fresh)?;
            for id in &ids {
                let c = engine.cookie(id).unwrap_or(0);
                fresh_cookies = fresh_cookies.put(layout.cookie(id), persist::encode(&c));
            }
        }
        for ep in eps.iter() {
            let id = engine.endpoint(ep.id).map(|r| r.identity);
            engine.set_address(ep.ipv4, id);
        }
        let revision = match local.get(&layout.revision())? {
            Some(kv) => persist::decode::<u64>(&kv)?,
            None => engine.revision(),
        };
        // Replaying bumped the counter; what is enforced is what was.
        engine.set_revision(revision);

        let mut ipc = IpcacheManager::new(dp.clone());
        let mut pol = PolicyManager::new(engine, dp.clone());
        let mut want_eps = Vec::new();
        for ep in eps.iter() {
            let (id, flags) = pol.identity_and_flags(ep.id);
            want_eps.push(ep.info(id, flags));
            ipc.restore(
                host_prefix(ep.ipv4),
                Source::LocalEndpoint,
                Entry::identity(id),
            );
        }
        for (c, id) in pol.engine().cidr_identities() {
            ipc.restore(c, Source::PolicyCidr, Entry::identity(id));
        }
        if let Some(c) = &joined {
            c.learn_all(&mut ipc, &mut pol)?;
        }
        let svc = restore_services(
            &layout,
            local.as_ref(),
            shared.as_ref(),
            joined.is_some(),
            dp.clone(),
        )?;
        let e = eps.resync(&want_eps)?;
        let i = ipc.resync()?;
        let p = pol.resync(eps.iter().map(|e| e.id))?;
        let mut svc = svc;
        let sv = svc.resync()?;
        for ep in eps.iter() {
            eps.attach(&ep.host_ifname)?;
        }
        // Persist what the restore settled on: forgotten endpoints, cookies
        // given now, and the identity numbers in use (cluster identities
        // live in the cluster).
        let mut txn = fresh_cookies;
        for id in forgotten {
            txn = txn.delete(layout.endpoint(id));
        }
        let now: BTreeMap<u32, Labels> = pol
            .engine()
            .identities()
            .iter()
            .filter(|i| kept_locally(i.kind, joined.is_some()))
            .map(|i| (i.id, i.labels.clone()))
            .collect();
        for id in held.keys().filter(|id| !now.contains_key(id)) {
            txn = txn.delete(layout.identity(*id));
        }
        for (id, l) in now.iter().filter(|(id, l)| held.get(id) != Some(l)) {
            txn = txn.put(layout.identity(*id), persist::encode(&StoredLabels::of(l)));
        }
        txn = txn.put(layout.service_next_ids(), persist::encode(&svc.next_ids()));
        for s in svc.services() {
            if let Some(ids) = svc.stored_ids(&s.id) {
                txn = txn.put(
                    layout.service_id(&s.id.namespace, &s.id.name),
                    persist::encode(&ids),
                );
            }
        }
        local.commit(txn)?;
        let resync = (e.0 + i.0 + p.0 + sv.0, e.1 + i.1 + p.1 + sv.1);
        tracing::info!(
            endpoints = eps.len(),
            policies = pol.engine().policies().count(),
            services = svc.len(),
            revision = pol.enforced(),
            resync_written = resync.0,
            resync_removed = resync.1,
            cluster = joined.is_some(),
            "control plane state restored"
        );
        let cp = ControlPlane {
            layout,
            settings,
            writer: Mutex::new(()),
            endpoints: RwLock::new(eps),
            policy: RwLock::new(pol),
            ipcache: RwLock::new(ipc),
            services: RwLock::new(svc),
            dp,
            store: local,
            cluster: joined,
            resync,
            started: Instant::now(),
            ct_status: Mutex::new(None),
        };
        if let Some(c) = &cp.cluster {
            c.register()?;
            // Best effort now; the maintenance loop retries.
            if let Err(e) = cp.publish_all() {
                tracing::warn!(error = %e.message(), "cannot publish this node's pods yet; retrying");
            }
        }
        Ok(cp)
    }

    // ----- locks -----

    pub(crate) fn write_lock(&self) -> MutexGuard<'_, ()> {
        // The state behind a poisoned lock is still consistent at the
        // granularity of one manager step; refusing all further changes
        // would be worse than continuing.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn eps(&self) -> RwLockReadGuard<'_, EndpointManager> {
        self.endpoints.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn eps_mut(&self) -> RwLockWriteGuard<'_, EndpointManager> {
        self.endpoints.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn pol(&self) -> RwLockReadGuard<'_, PolicyManager> {
        self.policy.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn pol_mut(&self) -> RwLockWriteGuard<'_, PolicyManager> {
        self.policy.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn ipc(&self) -> RwLockReadGuard<'_, IpcacheManager> {
        self.ipcache.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn ipc_mut(&self) -> RwLockWriteGuard<'_, IpcacheManager> {
        self.ipcache.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn svc(&self) -> RwLockReadGuard<'_, ServiceManager> {
        self.services.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn svc_mut(&self) -> RwLockWriteGuard<'_, ServiceManager> {
        self.services.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits `txn` to the node's own store, plus the identity numbers and
    /// the revision.
    pub(crate) fn persist(
        &self,
        txn: Txn,
        touched: &Touched,
        pol: &PolicyManager,
    ) -> Result<(), Error> {
        let txn = touched
            .persist(txn, &self.layout, pol.engine(), self.cluster.is_some())
            .put(self.layout.revision(), persist::encode(&pol.enforced()));
        self.store.commit(txn)?;
        Ok(())
    }

    /// Writes what every node shares (policies, namespaces) to the cluster
    /// store, before anything changes here: if the store is unreachable the
    /// change is refused whole. On a single node there is no cluster store:
    /// nothing to do (the node's own store takes them with `persist`).
    fn share(&self, txn: Txn) -> Result<(), Error> {
        self.share_chunked(txn, "sharing the change with the other nodes")
    }

    /// As `share`, for a change that may exceed one etcd transaction's
    /// operations: committed in transactions of at most 100 (an outage in
    /// between leaves the first ones shared; the change is then refused
    /// here and applied only where the watch delivered it).
    pub(crate) fn share_chunked(&self, txn: Txn, doing: &'static str) -> Result<(), Error> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        for ops in txn.then.chunks(100) {
            let t = Txn {
                when: Vec::new(),
                then: ops.to_vec(),
            };
            c.store
                .commit(t)
                .map_err(|source| Error::ClusterStore { doing, source })?;
        }
        Ok(())
    }

    /// The node's own record of a policy: on a single node the policy
    /// itself with its cookie; in a cluster (where the cluster store holds
    /// the policy) only the cookie, so a restart keeps it.
    fn keep_policy(&self, txn: Txn, id: &PolicyId, p: &Policy, cookie: u32) -> Txn {
        match self.cluster {
            Some(_) => txn.put(self.layout.cookie(id), persist::encode(&cookie)),
            None => txn.put(
                self.layout.policy(id),
                persist::encode(&StoredPolicy::of(p, cookie)),
            ),
        }
    }

    fn forget_policy(&self, txn: Txn, id: &PolicyId) -> Txn {
        match self.cluster {
            Some(_) => txn.delete(self.layout.cookie(id)),
            None => txn.delete(self.layout.policy(id)),
        }
    }

    // ----- endpoints -----

    pub fn create_endpoint(
        &self,
        req: &api::EndpointCreate,
    ) -> Result<api::EndpointCreated, Error> {
        validate::container_id(&req.container_id)?;
        if req.netns.trim().is_empty() {
            return Err(Error::invalid(
                "netns",
                "must name the pod's network namespace",
            ));
        }
        validate::ifname(&req.ifname)?;
        validate::namespace(&req.namespace)?;
        // The network configuration's labels win over the runtime's.
        let given = if req.cni_network.is_some() {
            LabelSource::Cni
        } else {
            LabelSource::User
        };
        let mut labels = Labels::new();
        let mut label_sources = BTreeMap::new();
        for (items, source) in [
            (&req.runtime_labels, LabelSource::Runtime),
            (&req.labels, given),
        ] {
            for l in Labels::parse_all(items, pilus_policy::labels::SOURCE_K8S)?.iter() {
                l.check_pod_label()?;
                labels.remove_key(&l.source, &l.key);
                label_sources.insert(label_key(&l), source);
                labels.insert(l);
            }
        }
        let pair = match (&req.host_ifname, &req.mac) {
            (Some(host), Some(mac)) => Pair::Existing {
                host_ifname: host.clone(),
                mac: mac.clone(),
            },
            (Some(_), None) => {
                return Err(Error::invalid(
                    "mac",
                    "the pod side's MAC is required with host_ifname",
                ))
            }
            (None, _) => Pair::Make {
                netns: PathBuf::from(&req.netns),
                ifname: req.ifname.clone(),
                host_ifname: api::host_ifname(&req.container_id, &req.ifname),
            },
        };
        let made_here = matches!(pair, Pair::Make { .. });
        let _w = self.write_lock();
        if let Some(ep) = self.eps().attachment(&req.container_id, &req.ifname) {
            let view = self.view(ep, &self.pol());
            return Ok(api::EndpointCreated {
                created: false,
                endpoint: view,
                revision: self.pol().enforced(),
            });
        }
        let (id, ip, host, plumbed) = self.eps_mut().prepare(&pair)?;
        let ep = StoredEndpoint {
            id,
            container_id: req.container_id.clone(),
            netns: req.netns.clone(),
            ifname: req.ifname.clone(),
            host_ifname: host.clone(),
            namespace: req.namespace.clone(),
            pod_name: req.pod_name.clone(),
            labels,
            ipv4: ip,
            ifindex: plumbed.host_ifindex,
            mac: plumbed.mac,
            host_mac: plumbed.host_mac,
            cni_network: req.cni_network.clone(),
            created_unix_ms: unix_ms(),
            label_sources: Arc::new(label_sources),
        };
        let mut eps = self.eps_mut();
        let mut pol = self.pol_mut();
        let mut ipc = self.ipc_mut();
        // The shared copies, so the record and the engine's record hold one
        // set with every endpoint of the same labels.
        let mut ep = ep;
        (ep.labels, ep.label_sources) = eps.intern(ep.labels, ep.label_sources);
        let change = match pol.engine.upsert_endpoint(id, &req.namespace, &ep.labels) {
            Ok(c) => c,
            Err(e) => {
                eps.abandon(ip, &host, made_here);
                return Err(e.into());
            }
        };
        eps.insert(ep.clone());
        let mut touched = Touched::default();
        let applied = apply(&eps, &mut pol, &mut ipc, change, &mut touched)
            .and_then(|()| Ok(eps.attach(&host)?));
        if let Err(e) = applied {
            // Undo: the engine, the maps, the link.
            let undo = pol.engine.remove_endpoint(id);
            let _ = apply(&eps, &mut pol, &mut ipc, undo, &mut Touched::default());
            let _ = ipc.remove(host_prefix(ip), Source::LocalEndpoint);
            let _ = eps.remove_info(&ep.info(0, 0));
            let _ = eps.detach(&host);
            eps.forget(id);
            eps.abandon(ip, &host, made_here);
            return Err(e);
        }
        self.persist(
            persist::put_endpoint(Txn::new(), &self.layout, &ep),
            &touched,
            &pol,
        )?;
        let identity = pol.engine().endpoint(id).map(|r| r.identity);
        let pod = ep
            .pod_name
            .as_ref()
            .map(|n| format!("{}/{n}", ep.namespace));
        self.publish(ip, identity, pod);
        tracing::info!(endpoint = id, container = %req.container_id, ipv4 = %ip, identity, "endpoint created");
        Ok(api::EndpointCreated {
            created: true,
            endpoint: self.view(&ep, &pol),
            revision: pol.enforced(),
        })
    }

    /// Deletes an endpoint; deleting one that is not there is not an error.
    pub fn delete_endpoint(&self, id: u16) -> Result<api::Deleted, Error> {
        let _w = self.write_lock();
        self.delete_endpoint_locked(id)
    }

    fn delete_endpoint_locked(&self, id: u16) -> Result<api::Deleted, Error> {
        let mut eps = self.eps_mut();
        let mut pol = self.pol_mut();
        let mut ipc = self.ipc_mut();
        let Some(ep) = eps.get(id).cloned() else {
            return Ok(api::Deleted {
                deleted: 0,
                revision: pol.enforced(),
            });
        };
        let (identity, flags) = pol.identity_and_flags(id);
        let info = ep.info(identity, flags);
        let change = pol.engine.remove_endpoint(id);
        let mut touched = Touched::default();
        apply(&eps, &mut pol, &mut ipc, change, &mut touched)?;
        if let Some(w) = ipc.remove(host_prefix(ep.ipv4), Source::LocalEndpoint)? {
            if let Some((ip, id)) = w.endpoint_identity() {
                let c = pol.engine.set_address(ip, id);
                apply(&eps, &mut pol, &mut ipc, c, &mut touched)?;
            }
        }
        eps.remove(id, &info)?;
        self.persist(Txn::new().delete(self.layout.endpoint(id)), &touched, &pol)?;
        self.publish(ep.ipv4, None, None);
        tracing::info!(endpoint = id, container = %ep.container_id, "endpoint deleted");
        Ok(api::Deleted {
            deleted: 1,
            revision: pol.enforced(),
        })
    }

    /// Deletes the endpoint `key` names (with `ifname`: the attachment of
    /// container `key`); a missing one is no error (CNI DEL).
    pub fn delete_endpoint_by(
        &self,
        key: &str,
        ifname: Option<&str>,
    ) -> Result<api::Deleted, Error> {
        let _w = self.write_lock();
        let id = {
            let eps = self.eps();
            match ifname {
                Some(i) => eps.attachment(key, i).map(|e| e.id),
                None => eps.find(key).map(|e| e.id),
            }
        };
        match id {
            Some(id) => self.delete_endpoint_locked(id),
            None => Ok(api::Deleted {
                deleted: 0,
                revision: self.pol().enforced(),
            }),
        }
    }

    /// CNI GC of one network, whole under the writer lock so no ADD can
    /// interleave: deletes the endpoints (and host links) of `req.network`
    /// whose attachment is not listed, sparing those created since
    /// `keep_created_since_unix_ms`. Every deletion is logged with its
    /// container id, since it removes a pod's network.
    pub fn cni_gc(&self, req: &api::CniGc) -> Result<api::CniGcDone, Error> {
        if req.network.is_empty() {
            return Err(Error::invalid(
                "network",
                "must name the CNI network whose endpoints are collected",
            ));
        }
        let _w = self.write_lock();
        let mut stale = Vec::new();
        let mut kept_recent = Vec::new();
        for ep in self.eps().iter() {
            if ep.cni_network.as_deref() != Some(req.network.as_str()) {
                continue;
            }
            let listed = req
                .valid
                .iter()
                .any(|a| a.container_id == ep.container_id && a.ifname == ep.ifname);
            if listed {
                continue;
            }
            let att = api::CniAttachment {
                container_id: ep.container_id.clone(),
                ifname: ep.ifname.clone(),
            };
            if ep.created_unix_ms >= req.keep_created_since_unix_ms {
                tracing::info!(endpoint = ep.id, container = %ep.container_id, ifname = %ep.ifname, network = %req.network, "CNI GC: not in the runtime's list but created within the grace period; kept");
                kept_recent.push(att);
            } else {
                stale.push((ep.id, att));
            }
        }
        let mut deleted = Vec::new();
        for (id, att) in stale {
            self.delete_endpoint_locked(id)?;
            tracing::info!(endpoint = id, container = %att.container_id, ifname = %att.ifname, network = %req.network, "CNI GC: deleted the endpoint of an attachment the runtime no longer has");
            deleted.push(att);
        }
        Ok(api::CniGcDone {
            deleted,
            kept_recent,
            revision: self.pol().enforced(),
        })
    }

    /// Changes endpoints' labels, all or none: every change is checked
    /// (the endpoint exists, each label has Kubernetes' syntax and no
    /// reserved source, a deleted key is there, a CNI-given label is only
    /// changed with `override_cni`) before the first is applied. Each
    /// endpoint's identity follows its labels; the maps change in the
    /// order that never denies what old and new rules both allow.
    pub fn update_labels(
        &self,
        items: &[api::EndpointLabelsItem],
        override_cni: bool,
    ) -> Result<Vec<api::Endpoint>, Error> {
        if items.is_empty() {
            return Err(Error::invalid("labels", "no endpoint to change"));
        }
        let _w = self.write_lock();
        let mut plan: Vec<(u16, Labels, LabelSources)> = Vec::new();
        {
            let eps = self.eps();
            for item in items {
                let ep = eps.find(&item.endpoint).ok_or_else(|| Error::NotFound {
                    what: "endpoint",
                    name: item.endpoint.clone(),
                })?;
                if plan.iter().any(|(id, _, _)| *id == ep.id) {
                    return Err(Error::invalid(
                        "labels",
                        format!("endpoint {} is named twice", item.endpoint),
                    ));
                }
                let (labels, sources) = relabel(ep, item, override_cni)?;
                plan.push((ep.id, labels, sources));
            }
        }
        let mut eps = self.eps_mut();
        let mut pol = self.pol_mut();
        let mut ipc = self.ipc_mut();
        let mut touched = Touched::default();
        let mut txn = Txn::new();
        for (id, labels, sources) in &plan {
            let ns = eps.get(*id).expect("checked").namespace.clone();
            let (labels, sources) = eps.intern(labels.clone(), sources.clone());
            let change = pol.engine.upsert_endpoint(*id, &ns, &labels)?;
            eps.set_labels(*id, labels, sources);
            apply(&eps, &mut pol, &mut ipc, change, &mut touched)?;
            txn = persist::put_endpoint(txn, &self.layout, eps.get(*id).expect("checked"));
        }
        self.persist(txn, &touched, &pol)?;
        for (id, labels, _) in &plan {
            let identity = pol.engine().endpoint(*id).map(|r| r.identity);
            if let Some(ep) = eps.get(*id) {
                let pod = ep
                    .pod_name
                    .as_ref()
                    .map(|n| format!("{}/{n}", ep.namespace));
                self.publish(ep.ipv4, identity, pod);
            }
            tracing::info!(endpoint = id, labels = %labels, identity, "endpoint labels changed");
        }
        Ok(plan
            .iter()
            .map(|(id, _, _)| self.view(eps.get(*id).expect("checked"), &pol))
            .collect())
    }

    // ----- policies -----

    /// Parses every file, then imports all policies at once: one invalid
    /// document rejects the whole import and nothing changes.
    pub fn import(&self, files: &[api::PolicyFile]) -> Result<api::PolicyImported, Error> {
        let mut all: Vec<Policy> = Vec::new();
        for f in files {
            for p in pilus_policy::parse_documents(&f.text, &f.name)? {
                if all.iter().any(|q| q.id == p.id) {
                    return Err(Error::DuplicatePolicy(p.id));
                }
                all.push(p);
            }
        }
        if all.is_empty() {
            return Err(Error::invalid("import", "no policy documents found"));
        }
        let names = all.iter().map(|p| p.id.to_string()).collect();
        let _w = self.write_lock();
        let eps = self.eps();
        let mut pol = self.pol_mut();
        let mut ipc = self.ipc_mut();
        let stored: Vec<(PolicyId, Policy)> =
            all.iter().map(|p| (p.id.clone(), p.clone())).collect();
        // Cookies are this node's: the cluster store holds none.
        self.share(stored.iter().fold(Txn::new(), |t, (id, p)| {
            t.put(
                self.layout.policy(id),
                persist::encode(&StoredPolicy::of(p, 0)),
            )
        }))?;
        let change = pol.engine.import(all)?;
        let mut txn = Txn::new();
        for (id, p) in &stored {
            let cookie = pol.engine().cookie(id).unwrap_or(0);
            txn = self.keep_policy(txn, id, p, cookie);
        }
        let revision = change.revision;
        let endpoints_changed = change.endpoints.len();
        let mut touched = Touched::default();
        apply(&eps, &mut pol, &mut ipc, change, &mut touched)?;
        self.persist(txn, &touched, &pol)?;
        tracing::info!(revision, endpoints_changed, "policies imported");
        Ok(api::PolicyImported {
            revision: pol.enforced(),
            policies: names,
        })
    }

    /// Deletes policies by name (`name`, `namespace/name`), or all.
    pub fn delete_policies(&self, name: Option<&str>) -> Result<api::Deleted, Error> {
        let _w = self.write_lock();
        let eps = self.eps();
        let mut pol = self.pol_mut();
        let mut ipc = self.ipc_mut();
        let ids: Vec<PolicyId> = match name {
            Some(n) => {
                let ids = pol.engine().find_policies(n);
                if ids.is_empty() {
                    return Err(Error::NotFound {
                        what: "policy",
                        name: n.to_string(),
                    });
                }
                ids
            }
            None => pol.engine().policies().map(|(p, _)| p.id.clone()).collect(),
        };
        self.share(
            ids.iter()
                .fold(Txn::new(), |t, id| t.delete(self.layout.policy(id))),
        )?;
        let (change, n) = pol.engine.delete(&ids);
        let mut touched = Touched::default();
        apply(&eps, &mut pol, &mut ipc, change, &mut touched)?;
        let txn = ids
            .iter()
            .fold(Txn::new(), |t, id| self.forget_policy(t, id));
        self.persist(txn, &touched, &pol)?;
        Ok(api::Deleted {
            deleted: n,
            revision: pol.enforced(),
        })
    }

    pub fn set_namespace_labels(
        &self,
        ns: &str,
        labels: &[String],
    ) -> Result<api::NamespaceLabels, Error> {
        validate::namespace(ns)?;
        let l = Labels::parse_all(labels, pilus_policy::labels::SOURCE_K8S)?;
        let _w = self.write_lock();
        let eps = self.eps();
        let mut pol = self.pol_mut();
        let mut ipc = self.ipc_mut();
        let write = Txn::new().put(
            self.layout.namespace(ns),
            persist::encode(&StoredLabels::of(&l)),
        );
        let local = match self.cluster {
            Some(_) => {
                self.share(write)?;
                Txn::new()
            }
            None => write,
        };
        let change = pol.engine.set_namespace_labels(ns, l.clone())?;
        let revision = change.revision;
        let mut touched = Touched::default();
        apply(&eps, &mut pol, &mut ipc, change, &mut touched)?;
        self.persist(local, &touched, &pol)?;
        Ok(api::NamespaceLabels {
            namespace: ns.to_string(),
            labels: l.iter().map(|x| format!("{}={}", x.key, x.value)).collect(),
            revision,
        })
    }

    // ----- status -----

    /// This node's name (without the rest of [`Self::status`], which takes
    /// the managers' locks).
    pub fn node_name(&self) -> &str {
        &self.settings.node_name
    }

    pub fn status(&self) -> api::Status {
        let (endpoints, ipam_used, ipam_capacity) = {
            let eps = self.eps();
            (eps.len(), eps.ipam_used(), eps.ipam_capacity())
        };
        let pol = self.pol();
        api::Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node_name: self.settings.node_name.clone(),
            pod_cidr: self.settings.pod_cidr.to_string(),
            router_ip: self.settings.router,
            pin_dir: self.settings.pin_dir.display().to_string(),
            socket: self.settings.socket.display().to_string(),
            state_dir: self.settings.state_dir.display().to_string(),
            endpoints,
            identities: pol.engine().identities().len(),
            policies: pol.engine().policies().count(),
            revision: pol.engine().revision(),
            enforced_revision: pol.enforced(),
            ipam_used,
            ipam_capacity,
            resync_written: self.resync.0,
            resync_removed: self.resync.1,
            uptime_seconds: self.started.elapsed().as_secs(),
            cluster: self.cluster_status(),
            monitor: None,
            services: self.svc().len(),
            frontends: self.svc().frontends(),
        }
    }

    /// Conntrack and its GC, once a pass has run.
    pub fn conntrack_status(&self) -> Option<api::ConntrackStatus> {
        self.ct_status.lock().expect("lock").clone()
    }

    /// Makes this node's cluster keys (its record, its pods) outlive the
    /// agent by their lease's ttl instead of going with it: for a stop
    /// before a restart, so other nodes never lose this node's pods.
    pub fn keep_cluster_keys_on_exit(&self) {
        if let Some(c) = &self.cluster {
            c.lease.keep_on_drop();
        }
    }

    /// Returns once no change is running (the agent waits for this before
    /// it exits, so none is cut in half).
    pub fn wait_idle(&self) {
        drop(self.write_lock());
    }

    /// The revision the datapath enforces now.
    pub fn enforced_revision(&self) -> u64 {
        self.pol().enforced()
    }

    /// The datapath, for tests to reach a fake.
    pub fn datapath(&self) -> &dyn Datapath {
        self.dp.as_ref()
    }
}
