//! Keeping a node in step with the cluster: publishing this node's pods to
//! the cluster store, and applying what the other nodes publish (nodes,
//! pods, identities, policies, namespaces, services) as the watches deliver it —
//! each event under the writer lock, through the same `apply` as a local
//! change, so a remote change reaches the maps in the same gapless order.
//!
//! A bad entry written by something else is logged and skipped; it never
//! stops the watch or half-applies.

use crate::{
    cluster::{
        decode_ipcache, decode_node, host, ipcache_key, ipcache_prefix, nodes_prefix,
        IpcacheRecord, Routing,
    },
    control::{apply, ControlPlane, Touched},
    identities::{decode_id, ids_prefix},
    ipcache::{Entry, Source},
    persist::{self, StoredLabels, StoredPolicy},
    Error,
};
use pilus_api_types as api;
use pilus_kvstore::{Connection, KeyValue, Txn, WatchEvent};
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    sync::{atomic::Ordering, Arc},
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

/// What a watch follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    Nodes,
    Pods,
    Identities,
    Policies,
    Namespaces,
    Services,
}

/// The cluster store allows this many operations in one transaction
/// (etcd's default `--max-txn-ops` is 128).
const TXN_OPS: usize = 100;

impl ControlPlane {
    fn feed_prefix(&self, f: Feed) -> String {
        match f {
            Feed::Nodes => nodes_prefix(),
            Feed::Pods => ipcache_prefix(),
            Feed::Identities => ids_prefix(),
            Feed::Policies => self.layout.policies(),
            Feed::Namespaces => self.layout.namespaces(),
            Feed::Services => self.layout.services(),
        }
    }

    /// Publishes every local pod's ipcache entry under this node's lease
    /// and removes entries of this node that name no local pod any more.
    pub fn publish_all(&self) -> Result<(), Error> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        let unavailable = |source| Error::ClusterStore {
            doing: "publishing this node's pods",
            source,
        };
        let (have, _) = c.store.list(&ipcache_prefix()).map_err(unavailable)?;
        let mut ops: Vec<Txn> = Vec::new();
        let mut txn = Txn::new();
        let mut n = 0;
        let mut mine = BTreeSet::new();
        {
            let eps = self.eps();
            let pol = self.pol();
            for ep in eps.iter() {
                let Some(r) = pol.engine().endpoint(ep.id) else {
                    continue;
                };
                mine.insert(ep.ipv4);
                let rec = IpcacheRecord {
                    identity: r.identity,
                    node: c.me.name.clone(),
                    tunnel_endpoint: c.me.underlay_ip,
                    pod: ep
                        .pod_name
                        .as_ref()
                        .map(|name| format!("{}/{name}", ep.namespace)),
                };
                txn = txn.put_leased(ipcache_key(ep.ipv4), persist::encode(&rec), c.lease.id());
                n += 1;
                if n % TXN_OPS == 0 {
                    ops.push(std::mem::take(&mut txn));
                }
            }
        }
        for kv in &have {
            let stale = decode_ipcache(kv)
                .is_some_and(|(ip, r)| r.node == c.me.name && !mine.contains(&ip));
            if stale {
                txn = txn.delete(kv.key.clone());
                n += 1;
                if n % TXN_OPS == 0 {
                    ops.push(std::mem::take(&mut txn));
                }
            }
        }
        ops.push(txn);
        for t in ops.into_iter().filter(|t| !t.is_empty()) {
            c.store.commit(t).map_err(unavailable)?;
        }
        c.dirty.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes (or with `None` withdraws) one local pod; on failure the
    /// maintenance loop publishes everything again later.
    /// `pod` names it (`namespace/name`) for the other nodes' flows.
    pub(crate) fn publish(&self, ip: Ipv4Addr, identity: Option<u32>, pod: Option<String>) {
        let Some(c) = &self.cluster else {
            return;
        };
        let txn = match identity {
            Some(id) => Txn::new().put_leased(
                ipcache_key(ip),
                persist::encode(&IpcacheRecord {
                    identity: id,
                    node: c.me.name.clone(),
                    tunnel_endpoint: c.me.underlay_ip,
                    pod,
                }),
                c.lease.id(),
            ),
            None => Txn::new().delete(ipcache_key(ip)),
        };
        if let Err(e) = c.store.commit(txn) {
            tracing::warn!(ip = %ip, error = %e, "cannot publish a pod to the cluster; retrying later");
            c.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Applies one watch event. Errors are logged: a watch never stops.
    pub fn on_cluster_event(&self, feed: Feed, ev: WatchEvent) {
        let r = match ev {
            WatchEvent::Put { kv } => self.on_put(feed, &kv),
            WatchEvent::Delete { key, .. } => self.on_delete(feed, &key),
            WatchEvent::Resync { kvs, .. } => self.on_resync(feed, kvs),
        };
        if let Err(e) = r {
            tracing::warn!(feed = ?feed, error = %e.message(), "cannot apply a cluster change");
        }
    }

    fn on_put(&self, feed: Feed, kv: &KeyValue) -> Result<(), Error> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        if feed == Feed::Services {
            // Services touch none of the other managers.
            return self.on_service_put(kv);
        }
        let _w = self.write_lock();
        let eps = self.eps();
        let mut pol = self.pol_mut();
        let mut ipc = self.ipc_mut();
        let mut touched = Touched::default();
        let mut local = Txn::new();
        match feed {
            Feed::Nodes => {
                let Some(n) = decode_node(kv) else {
                    tracing::warn!(key = %kv.key, "skipping a node record that cannot be read");
                    return Ok(());
                };
                if n.name == c.me.name {
                    return Ok(());
                }
                let before = c
                    .nodes
                    .lock()
                    .expect("lock")
                    .insert(kv.key.clone(), n.clone());
                if let Some(b) = before.filter(|b| b != &n) {
                    self.forget_node(&b, &mut ipc);
                }
                if c.me.routing == Routing::Direct {
                    if let Err(e) = c.routes.add(n.pod_cidr, n.underlay_ip) {
                        tracing::warn!(node = %n.name, error = %e, "cannot route to the node's pods");
                    }
                }
                ipc.upsert(
                    host(n.underlay_ip),
                    Source::Node,
                    Entry::identity(pilus_abi::consts::IDENTITY_REMOTE_NODE),
                )?;
                tracing::info!(node = %n.name, underlay = %n.underlay_ip, pod_cidr = %n.pod_cidr, "node joined");
            }
            Feed::Pods => {
                let Some((ip, r)) = decode_ipcache(kv) else {
                    tracing::warn!(key = %kv.key, "skipping an ipcache entry that cannot be read");
                    return Ok(());
                };
                if r.node == c.me.name {
                    return Ok(());
                }
                {
                    let mut pods = c.remote_pods.lock().unwrap_or_else(|p| p.into_inner());
                    match &r.pod {
                        Some(p) => pods.insert(ip, p.clone()),
                        None => pods.remove(&ip),
                    };
                }
                let w = ipc.upsert(
                    host(ip),
                    Source::RemoteEndpoint,
                    Entry {
                        identity: r.identity,
                        tunnel_endpoint: Some(r.tunnel_endpoint),
                    },
                )?;
                if let Some((ip, id)) = w.and_then(|w| w.endpoint_identity()) {
                    let change = pol.engine.set_address(ip, id);
                    apply(&eps, &mut pol, &mut ipc, change, &mut touched)?;
                }
            }
            Feed::Identities => {
                let Some((id, labels)) = decode_id(kv) else {
                    tracing::warn!(key = %kv.key, "skipping an identity that cannot be read");
                    return Ok(());
                };
                let change = pol.engine.observe_identity(id, &labels);
                apply(&eps, &mut pol, &mut ipc, change, &mut touched)?;
            }
            Feed::Policies => {
                let p = match persist::decode::<StoredPolicy>(kv).and_then(|s| s.policy(&kv.key)) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(key = %kv.key, error = %e.message(), "skipping a policy that cannot be read");
                        return Ok(());
                    }
                };
                if pol
                    .engine()
                    .policy(&p.id)
                    .is_some_and(|q| q.source == p.source)
                {
                    return Ok(()); // imported here, or seen already
                }
                let id = p.id.clone();
                let change = pol.engine.import(vec![p])?;
                apply(&eps, &mut pol, &mut ipc, change, &mut touched)?;
                let cookie = pol.engine().cookie(&id).unwrap_or(0);
                local = local.put(self.layout.cookie(&id), persist::encode(&cookie));
                tracing::info!(policy = %id, "policy from the cluster applied");
            }
            Feed::Namespaces => {
                let ns = persist::tail(kv, &self.layout.namespaces()).to_string();
                let labels = match persist::decode::<StoredLabels>(kv).and_then(|l| l.labels()) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(key = %kv.key, error = %e.message(), "skipping namespace labels that cannot be read");
                        return Ok(());
                    }
                };
                if pol.engine().namespace_labels(&ns) == Some(&labels) {
                    return Ok(());
                }
                let change = pol.engine.set_namespace_labels(&ns, labels)?;
                apply(&eps, &mut pol, &mut ipc, change, &mut touched)?;
            }
            Feed::Services => unreachable!("handled before the locks"),
        }
        self.persist(local, &touched, &pol)
    }

    fn on_delete(&self, feed: Feed, key: &str) -> Result<(), Error> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        if feed == Feed::Services {
            return self.on_service_delete(key);
        }
        let _w = self.write_lock();
        let eps = self.eps();
        let mut pol = self.pol_mut();
        let mut ipc = self.ipc_mut();
        let mut touched = Touched::default();
        let mut local = Txn::new();
        match feed {
            Feed::Nodes => {
                let gone = c.nodes.lock().expect("lock").remove(key);
                if let Some(n) = gone {
                    self.forget_node(&n, &mut ipc);
                    tracing::info!(node = %n.name, "node left the cluster");
                }
            }
            Feed::Pods => {
                let Some(ip) = crate::cluster::ipcache_ip(key) else {
                    return Ok(());
                };
                c.remote_pods
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&ip);
                let w = ipc.remove(host(ip), Source::RemoteEndpoint)?;
                if let Some((ip, id)) = w.and_then(|w| w.endpoint_identity()) {
                    let change = pol.engine.set_address(ip, id);
                    apply(&eps, &mut pol, &mut ipc, change, &mut touched)?;
                }
            }
            Feed::Identities => {
                let Some(id) = key
                    .strip_prefix(&ids_prefix())
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    return Ok(());
                };
                let change = pol.engine.forget_identity(id);
                apply(&eps, &mut pol, &mut ipc, change, &mut touched)?;
            }
            Feed::Policies => {
                let ids: Vec<_> = pol
                    .engine()
                    .policies()
                    .map(|(p, _)| p.id.clone())
                    .filter(|id| self.layout.policy(id) == key)
                    .collect();
                if ids.is_empty() {
                    return Ok(()); // deleted here, or never known
                }
                let (change, _) = pol.engine.delete(&ids);
                apply(&eps, &mut pol, &mut ipc, change, &mut touched)?;
                for id in &ids {
                    local = local.delete(self.layout.cookie(id));
                    tracing::info!(policy = %id, "policy deleted in the cluster");
                }
            }
            Feed::Namespaces => {
                let ns = key
                    .strip_prefix(&self.layout.namespaces())
                    .unwrap_or(key)
                    .to_string();
                if pol.engine().namespace_labels(&ns).is_none() {
                    return Ok(());
                }
                let change = pol
                    .engine
                    .set_namespace_labels(&ns, pilus_policy::Labels::new())?;
                apply(&eps, &mut pol, &mut ipc, change, &mut touched)?;
            }
            Feed::Services => unreachable!("handled before the locks"),
        }
        self.persist(local, &touched, &pol)
    }

    /// A full listing replaces what earlier events built: everything in it
    /// is put, everything known but not in it is deleted.
    fn on_resync(&self, feed: Feed, kvs: Vec<KeyValue>) -> Result<(), Error> {
        let listed: BTreeSet<String> = kvs.iter().map(|kv| kv.key.clone()).collect();
        let known: Vec<String> = match feed {
            Feed::Nodes => self
                .cluster
                .as_ref()
                .map(|c| c.nodes.lock().expect("lock").keys().cloned().collect())
                .unwrap_or_default(),
            Feed::Pods => remote_pods(&self.ipc())
                .map(|p| ipcache_key(p.addr()))
                .collect(),
            Feed::Identities => self
                .pol()
                .engine()
                .identities()
                .iter()
                .filter(|i| i.kind == pilus_policy::identity::Kind::Cluster && i.refs == 0)
                .map(|i| format!("{}{}", ids_prefix(), i.id))
                .collect(),
            Feed::Policies => self
                .pol()
                .engine()
                .policies()
                .map(|(p, _)| self.layout.policy(&p.id))
                .collect(),
            Feed::Namespaces => self
                .pol()
                .engine()
                .namespaces()
                .map(|(ns, _)| self.layout.namespace(ns))
                .collect(),
            Feed::Services => self.service_keys(),
        };
        for key in known.iter().filter(|k| !listed.contains(*k)) {
            self.on_delete(feed, key)?;
        }
        for kv in &kvs {
            self.on_put(feed, kv)?;
        }
        Ok(())
    }

    fn forget_node(
        &self,
        n: &crate::cluster::NodeRecord,
        ipc: &mut crate::ipcache::IpcacheManager,
    ) {
        let Some(c) = &self.cluster else {
            return;
        };
        if c.me.routing == Routing::Direct {
            if let Err(e) = c.routes.remove(n.pod_cidr, n.underlay_ip) {
                tracing::warn!(node = %n.name, error = %e, "cannot remove the route to the node's pods");
            }
        }
        if let Err(e) = ipc.remove(host(n.underlay_ip), Source::Node) {
            tracing::warn!(node = %n.name, error = %e.source, "cannot remove the node from the ipcache");
        }
    }

    /// Follows the cluster: one thread per watch, and a maintenance loop
    /// that publishes this node's pods again after the store was
    /// unreachable and collects identities nobody uses. The threads end
    /// when the control plane is dropped.
    pub fn spawn_cluster(self: &Arc<Self>) -> Result<Vec<JoinHandle<()>>, Error> {
        let Some(c) = &self.cluster else {
            return Ok(Vec::new());
        };
        let mut handles = Vec::new();
        // From now: what happened before was read at start. A change
        // between that read and this watch is delivered or already applied
        // (applying is idempotent), since the watch starts at the store's
        // revision when the listing was made at the latest.
        let (_, from) = c
            .store
            .list(&format!("{}none/", crate::persist::ROOT))
            .map_err(|source| Error::ClusterStore {
                doing: "reading the cluster's revision",
                source,
            })?;
        for feed in [
            Feed::Nodes,
            Feed::Pods,
            Feed::Identities,
            Feed::Policies,
            Feed::Namespaces,
            Feed::Services,
        ] {
            let watch = c
                .store
                .watch(&self.feed_prefix(feed), from.max(1))
                .map_err(|source| Error::ClusterStore {
                    doing: "watching the cluster",
                    source,
                })?;
            let cp = Arc::downgrade(self);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("watch-{feed:?}").to_lowercase())
                    .spawn(move || loop {
                        match watch.recv_timeout(Duration::from_millis(500)) {
                            Ok(ev) => match cp.upgrade() {
                                Some(cp) => cp.on_cluster_event(feed, ev),
                                None => return,
                            },
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                                if cp.strong_count() == 0 {
                                    return;
                                }
                            }
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    })
                    .map_err(|e| Error::invalid("threads", e.to_string()))?,
            );
        }
        let cp = Arc::downgrade(self);
        handles.push(
            std::thread::Builder::new()
                .name("cluster-upkeep".into())
                .spawn(move || {
                    let mut tick = 0u64;
                    loop {
                        std::thread::sleep(Duration::from_secs(1));
                        let Some(cp) = cp.upgrade() else {
                            return;
                        };
                        cp.upkeep(tick);
                        tick += 1;
                    }
                })
                .map_err(|e| Error::invalid("threads", e.to_string()))?,
        );
        Ok(handles)
    }

    /// Once a second: publish again what could not be; every 30 s collect
    /// identities that no node uses.
    fn upkeep(&self, tick: u64) {
        let Some(c) = &self.cluster else {
            return;
        };
        if c.dirty.load(Ordering::Relaxed) {
            match c.register().and_then(|()| self.publish_all()) {
                Ok(()) => tracing::info!("this node's pods are published to the cluster again"),
                Err(e) => {
                    tracing::debug!(error = %e.message(), "the cluster store is still unavailable")
                }
            }
        }
        if tick % 30 == 29 {
            let _w = self.write_lock();
            let pol = self.pol();
            let collected = pol
                .engine()
                .identities_as::<crate::identities::ClusterAllocator>()
                .map(|a| a.collect());
            match collected {
                Some(Ok(n)) if n > 0 => {
                    tracing::info!(identities = n, "collected identities no node uses")
                }
                Some(Err(e)) => tracing::debug!(error = %e, "cannot collect unused identities now"),
                _ => {}
            }
        }
    }

    /// How this node stands in the cluster, for `pilus status`.
    pub fn cluster_status(&self) -> Option<api::ClusterStatus> {
        let c = self.cluster.as_ref()?;
        let since = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let (state, since, error) = match c.store.connection() {
            Connection::Unknown => ("unknown", None, None),
            Connection::Connected { since: t } => ("connected", Some(since(t)), None),
            Connection::Unreachable { since: t, error } => {
                ("unreachable", Some(since(t)), Some(error))
            }
        };
        Some(api::ClusterStatus {
            store: state.into(),
            since_unix: since,
            error,
            nodes: c.nodes.lock().expect("lock").len() + 1,
            remote_endpoints: remote_pods(&self.ipc()).count(),
            routing: c.me.routing.name().into(),
            underlay_ip: c.me.underlay_ip,
            lease: lease_text(&c.lease.status().state),
            pending_publish: c.dirty.load(Ordering::Relaxed),
        })
    }

    /// This node and the others it knows, by name; empty on its own.
    /// Other nodes' pods by address, as `namespace/name` (empty on a node
    /// of its own).
    pub fn remote_pods(&self) -> std::collections::HashMap<Ipv4Addr, String> {
        self.cluster.as_ref().map_or_else(Default::default, |c| {
            c.remote_pods
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    pub fn nodes_view(&self) -> Vec<api::Node> {
        let Some(c) = self.cluster.as_ref() else {
            return Vec::new();
        };
        let view = |n: &crate::cluster::NodeRecord, local| api::Node {
            name: n.name.clone(),
            underlay_ip: n.underlay_ip,
            pod_cidr: n.pod_cidr.to_string(),
            routing: n.routing.name().into(),
            local,
        };
        let mut all: Vec<api::Node> = std::iter::once(view(&c.me, true))
            .chain(
                c.nodes
                    .lock()
                    .expect("lock")
                    .values()
                    .map(|n| view(n, false)),
            )
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// The /32s of other nodes' pods in the ipcache.
fn remote_pods(ipc: &crate::ipcache::IpcacheManager) -> impl Iterator<Item = ipnet::Ipv4Net> + '_ {
    ipc.entries()
        .filter(|(p, s)| {
            p.prefix_len() == 32 && s.iter().any(|(s, _)| *s == Source::RemoteEndpoint)
        })
        .map(|(p, _)| p)
}

/// The lease's state in words, ages in seconds.
fn lease_text(state: &pilus_kvstore::LeaseState) -> String {
    use pilus_kvstore::LeaseState;
    let ago = |t: &SystemTime| {
        SystemTime::now()
            .duration_since(*t)
            .map_or(0, |d| d.as_secs())
    };
    match state {
        LeaseState::Alive { renewed } => format!("alive (renewed {}s ago)", ago(renewed)),
        LeaseState::Unconfirmed { since, renewed } => format!(
            "unconfirmed for {}s (last renewed {}s ago)",
            ago(since),
            ago(renewed)
        ),
        LeaseState::Expired { since } => {
            format!("expired {}s ago (being granted anew)", ago(since))
        }
        LeaseState::Ended => "ended".into(),
    }
}
