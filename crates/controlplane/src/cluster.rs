//! Many nodes: what a node shares through the cluster store (etcd), and
//! what it learns from the others.
//!
//! ```text
//! pilus/v1/cluster/nodes/<node>      the node: underlay address, pod CIDR (leased)
//! pilus/v1/cluster/ipcache/<ip>      a pod: identity, node, tunnel endpoint (leased
//!                                    by the node that owns the pod)
//! pilus/v1/identities/...            cluster identities (see `identities`)
//! pilus/v1/policies/..., namespaces/ policies and namespace labels, imported
//!                                    on any node, applied on every node
//! ```
//!
//! Each node publishes its own node record and its pods' ipcache entries
//! under one lease, kept alive while the agent runs; a node whose agent is
//! gone loses them when the lease runs out, and every other node removes
//! them from its maps on the watch's delete events. An agent that stops
//! (SIGTERM) abandons its lease rather than revoking it, so a restart
//! within the ttl takes its keys over without the pods ever disappearing
//! from the other nodes.
//!
//! Watches start from the revision of the listing the node started from
//! and resume from the last event after a disconnect (the store's watch
//! does that); a compaction in between yields a full listing, which
//! replaces what the earlier events built.

use crate::{
    persist::{self, segment, ROOT},
    plumbing::PlumbError,
};
use ipnet::Ipv4Net;
use pilus_kvstore::{ClusterStore, KeyValue, Lease};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::Duration,
};

/// How pods on different nodes reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// VXLAN between nodes; the VNI carries the sender's identity.
    Tunnel,
    /// Pod CIDRs routed on the underlay; the receiver reads the sender's
    /// identity from its ipcache.
    Direct,
}

impl Routing {
    pub fn name(self) -> &'static str {
        match self {
            Routing::Tunnel => "tunnel",
            Routing::Direct => "direct",
        }
    }
}

/// What a node needs to join a cluster.
#[derive(Clone)]
pub struct ClusterSettings {
    pub store: Arc<dyn ClusterStore>,
    /// This node's address on the underlay (its tunnel endpoint).
    pub underlay_ip: Ipv4Addr,
    /// How long this node's keys outlive it.
    pub lease_ttl: Duration,
    pub routing: Routing,
    /// The routes to other nodes' pod CIDRs (direct routing).
    pub routes: Arc<dyn NodeRoutes>,
}

/// Routes to other nodes' pod CIDRs over the underlay (direct routing).
pub trait NodeRoutes: Send + Sync {
    fn add(&self, pod_cidr: Ipv4Net, via: Ipv4Addr) -> Result<(), PlumbError>;
    fn remove(&self, pod_cidr: Ipv4Net, via: Ipv4Addr) -> Result<(), PlumbError>;
}

/// Records routes without touching the kernel (tests, tunnel mode).
#[derive(Clone, Default)]
pub struct FakeRoutes {
    pub routes: Arc<Mutex<BTreeMap<Ipv4Net, Ipv4Addr>>>,
}

impl NodeRoutes for FakeRoutes {
    fn add(&self, pod_cidr: Ipv4Net, via: Ipv4Addr) -> Result<(), PlumbError> {
        self.routes.lock().expect("lock").insert(pod_cidr, via);
        Ok(())
    }
    fn remove(&self, pod_cidr: Ipv4Net, _via: Ipv4Addr) -> Result<(), PlumbError> {
        self.routes.lock().expect("lock").remove(&pod_cidr);
        Ok(())
    }
}

/// A node as the cluster store holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    pub routing: Routing,
}

/// A pod's ipcache entry as the cluster store holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcacheRecord {
    pub identity: u32,
    pub node: String,
    pub tunnel_endpoint: Ipv4Addr,
    /// The pod as `namespace/name`, so other nodes' flows can name it
    /// (absent in records of older agents, and for pods without a name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

pub fn nodes_prefix() -> String {
    format!("{ROOT}cluster/nodes/")
}

pub fn node_key(name: &str) -> String {
    format!("{}{}", nodes_prefix(), segment(name))
}

pub fn ipcache_prefix() -> String {
    format!("{ROOT}cluster/ipcache/")
}

pub fn ipcache_key(ip: Ipv4Addr) -> String {
    format!("{}{ip}", ipcache_prefix())
}

/// The address an ipcache key names.
pub fn ipcache_ip(key: &str) -> Option<Ipv4Addr> {
    key.strip_prefix(&ipcache_prefix())?.parse().ok()
}

pub fn decode_node(kv: &KeyValue) -> Option<NodeRecord> {
    persist::decode(kv).ok()
}

pub fn decode_ipcache(kv: &KeyValue) -> Option<(Ipv4Addr, IpcacheRecord)> {
    Some((ipcache_ip(&kv.key)?, persist::decode(kv).ok()?))
}

/// A node's membership in the cluster, held by its control plane.
pub struct Cluster {
    pub(crate) store: Arc<dyn ClusterStore>,
    pub(crate) lease: Arc<Lease>,
    pub(crate) me: NodeRecord,
    pub(crate) routes: Arc<dyn NodeRoutes>,
    /// The other nodes, by name.
    pub(crate) nodes: Mutex<BTreeMap<String, NodeRecord>>,
    /// Other nodes' pods by address, as `namespace/name`: what flows name
    /// them by (the datapath only needs their identities).
    pub(crate) remote_pods: Mutex<std::collections::HashMap<Ipv4Addr, String>>,
    /// This node's ipcache entries in the store may be stale (a write
    /// failed while the store was unreachable): publish them again.
    pub(crate) dirty: AtomicBool,
}

impl Cluster {
    pub fn routing(&self) -> Routing {
        self.me.routing
    }
}

impl Cluster {
    /// Puts this node's record under its lease.
    pub(crate) fn register(&self) -> Result<(), crate::Error> {
        let txn = pilus_kvstore::Txn::new().put_leased(
            node_key(&self.me.name),
            persist::encode(&self.me),
            self.lease.id(),
        );
        self.store
            .commit(txn)
            .map_err(|source| crate::Error::ClusterStore {
                doing: "registering this node",
                source,
            })?;
        Ok(())
    }

    /// What the other nodes published before this one started: nodes and
    /// their pods, into the ipcache (memory only: the caller resyncs the
    /// map) and the engine's address book.
    pub(crate) fn learn_all(
        &self,
        ipc: &mut crate::ipcache::IpcacheManager,
        pol: &mut crate::policy::PolicyManager,
    ) -> Result<(), crate::Error> {
        use crate::ipcache::{Entry, Source};
        let unavailable = |source| crate::Error::ClusterStore {
            doing: "reading the other nodes",
            source,
        };
        let (nodes, _) = self.store.list(&nodes_prefix()).map_err(unavailable)?;
        let mut known = self.nodes.lock().expect("lock");
        for kv in nodes {
            let Some(n) = decode_node(&kv) else {
                tracing::warn!(key = %kv.key, "skipping a node record that cannot be read");
                continue;
            };
            if n.name == self.me.name {
                continue;
            }
            if self.me.routing == Routing::Direct {
                if let Err(e) = self.routes.add(n.pod_cidr, n.underlay_ip) {
                    tracing::warn!(node = %n.name, error = %e, "cannot route to the node's pods");
                }
            }
            ipc.restore(
                host(n.underlay_ip),
                Source::Node,
                Entry::identity(pilus_abi::consts::IDENTITY_REMOTE_NODE),
            );
            known.insert(kv.key.clone(), n);
        }
        let (pods, _) = self.store.list(&ipcache_prefix()).map_err(unavailable)?;
        for kv in pods {
            let Some((ip, r)) = decode_ipcache(&kv) else {
                tracing::warn!(key = %kv.key, "skipping an ipcache entry that cannot be read");
                continue;
            };
            if r.node == self.me.name {
                continue;
            }
            ipc.restore(
                host(ip),
                Source::RemoteEndpoint,
                crate::ipcache::Entry {
                    identity: r.identity,
                    tunnel_endpoint: Some(r.tunnel_endpoint),
                },
            );
            pol.engine.set_address(ip, Some(r.identity));
        }
        Ok(())
    }
}

pub(crate) fn host(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, 32).expect("/32")
}
