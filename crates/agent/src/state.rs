//! What the agent persists in its state directory (snapshot + journal, see
//! `pilus_kvstore::store`): endpoints, policies as imported, namespace labels,
//! the identity numbers in use and the policy revision. On restart this is
//! replayed to the same engine state, identity numbers included, so the maps
//! it computes equal the ones still pinned.

use pilus_kvstore::Apply;
use pilus_policy::{Labels, Policy, PolicyId};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, net::Ipv4Addr};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEndpoint {
    pub id: u16,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub host_ifname: String,
    pub namespace: String,
    #[serde(default)]
    pub pod_name: Option<String>,
    pub labels: Labels,
    pub ipv4: Ipv4Addr,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub host_mac: [u8; 6],
    /// The CNI network that attached it; `None`: made through the API,
    /// with the agent doing the plumbing.
    #[serde(default)]
    pub cni_network: Option<String>,
    /// Creation time (Unix ms): CNI GC spares endpoints younger than its
    /// grace period. 0 in records written before it was kept.
    #[serde(default)]
    pub created_unix_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub endpoints: BTreeMap<u16, StoredEndpoint>,
    /// Keyed by the policy id's display form.
    pub policies: BTreeMap<String, Policy>,
    pub namespaces: BTreeMap<String, Labels>,
    /// Identity numbers in use (cluster and CIDR), so a restart keeps them.
    pub identities: BTreeMap<u32, Labels>,
    pub revision: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    PutEndpoint(StoredEndpoint),
    DeleteEndpoint(u16),
    PutPolicies(Vec<Policy>),
    DeletePolicies(Vec<PolicyId>),
    SetNamespace {
        namespace: String,
        labels: Labels,
    },
    Identities {
        added: Vec<(u32, Labels)>,
        removed: Vec<u32>,
    },
    Revision(u64),
}

impl Apply<Op> for State {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::PutEndpoint(e) => {
                self.endpoints.insert(e.id, e.clone());
            }
            Op::DeleteEndpoint(id) => {
                self.endpoints.remove(id);
            }
            Op::PutPolicies(ps) => {
                for p in ps {
                    self.policies.insert(p.id.to_string(), p.clone());
                }
            }
            Op::DeletePolicies(ids) => {
                for id in ids {
                    self.policies.remove(&id.to_string());
                }
            }
            Op::SetNamespace { namespace, labels } => {
                self.namespaces.insert(namespace.clone(), labels.clone());
            }
            Op::Identities { added, removed } => {
                for id in removed {
                    self.identities.remove(id);
                }
                for (id, l) in added {
                    self.identities.insert(*id, l.clone());
                }
            }
            Op::Revision(r) => self.revision = *r,
        }
    }
}
