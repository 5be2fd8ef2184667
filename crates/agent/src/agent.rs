//! The agent's core: endpoints (IPAM, identity, plumbing, maps), policies
//! and namespace labels, applied to the datapath as map writes only, and
//! persisted so a restart resumes with the same identities and maps.

use crate::{
    dp::Maps,
    error::AgentError,
    ipam::Ipam,
    plumbing::{PlumbRequest, Plumbed, Plumbing},
    state::{Op, State, StoredEndpoint},
};
use pilus_abi::{Be32, EndpointInfo, PolicyKey, PolicyValue};
use pilus_api_types as api;
use pilus_kvstore::Store;
use pilus_policy::{identity::Kind, Change, Engine, Labels, Policy, PolicyId};
use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    path::PathBuf,
    time::Instant,
};

/// The maps' contents as the engine says they should be: endpoints,
/// ipcache (prefix → identity) and policy entries.
type Desired = (
    Vec<EndpointInfo>,
    BTreeMap<(Ipv4Addr, u32), u32>,
    HashMap<PolicyKey, PolicyValue>,
);

/// Compact the journal into a snapshot after this many operations.
const COMPACT_EVERY: usize = 1000;

#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub node_name: String,
    pub pod_cidr: (Ipv4Addr, u8),
    pub router: Ipv4Addr,
    pub pin_dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
}

pub struct Agent {
    pub(crate) node: NodeSettings,
    pub(crate) engine: Engine,
    ipam: Ipam,
    pub(crate) endpoints: BTreeMap<u16, StoredEndpoint>,
    pub(crate) dp: Box<dyn Maps>,
    plumbing: Box<dyn Plumbing>,
    store: Option<Store<State, Op>>,
    pub(crate) enforced: u64,
    pub(crate) resync: (usize, usize),
    started: Instant,
}

/// The workspace's one interface-name check (the kernel's rules).
fn validate_ifname(s: &str) -> Result<(), AgentError> {
    pilus_netlink::valid_ifname(s).map_err(|e| AgentError::Invalid {
        what: "ifname",
        reason: e.to_string(),
    })
}

/// Now, in Unix milliseconds (endpoint creation times).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Container ids are path segments of the API (`/v1/endpoints/{id}`) and
/// feed the host interface's name: the CNI plugin's rule (letters, digits,
/// '_', '.', '-'), plus a length bound.
fn validate_container_id(s: &str) -> Result<(), AgentError> {
    let ok = !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !ok {
        return Err(AgentError::Invalid {
            what: "container_id",
            reason: format!("{s:?} must be 1 to 256 letters, digits, '_', '.' or '-'"),
        });
    }
    Ok(())
}

/// Kubernetes namespace names are DNS labels.
pub fn validate_namespace(s: &str) -> Result<(), AgentError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if !ok {
        return Err(AgentError::Invalid {
            what: "namespace",
            reason: format!("{s:?} is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)"),
        });
    }
    Ok(())
}

impl Agent {
    /// Builds the agent from its persisted state (if any) and brings the
    /// maps in line with it: after a restart that writes nothing, because
    /// identities keep their numbers.
    pub fn start(
        node: NodeSettings,
        dp: Box<dyn Maps>,
        plumbing: Box<dyn Plumbing>,
        store: Option<(Store<State, Op>, State)>,
    ) -> Result<Agent, AgentError> {
        let (store, state) = match store {
            Some((s, st)) => (Some(s), st),
            None => (None, State::default()),
        };
        let mut engine = Engine::new();
        engine.prefer_identities(state.identities.iter().map(|(id, l)| (l.clone(), *id)));
        let (net, len) = node.pod_cidr;
        let mut agent = Agent {
            ipam: Ipam::new(net, len, node.router),
            node,
            engine,
            endpoints: BTreeMap::new(),
            dp,
            plumbing,
            store,
            enforced: 0,
            resync: (0, 0),
            started: Instant::now(),
        };
        for (ns, labels) in &state.namespaces {
            agent.engine.set_namespace_labels(ns, labels.clone())?;
        }
        for ep in state.endpoints.values() {
            // A pod deleted while the agent was down has no veth any more.
            let Some((ifindex, host_mac)) = agent.plumbing.lookup(&ep.host_ifname) else {
                tracing::warn!(endpoint = ep.id, host_ifname = %ep.host_ifname, "endpoint's link is gone; forgetting it");
                continue;
            };
            if let Err(e) = agent.ipam.claim(ep.ipv4) {
                tracing::warn!(endpoint = ep.id, error = %e, "cannot restore endpoint address; forgetting it");
                continue;
            }
            agent
                .engine
                .upsert_endpoint(ep.id, &ep.namespace, &ep.labels)?;
            let mut ep = ep.clone();
            ep.ifindex = ifindex;
            ep.host_mac = host_mac;
            agent.endpoints.insert(ep.id, ep);
        }
        let policies: Vec<Policy> = state.policies.values().cloned().collect();
        if !policies.is_empty() {
            agent.engine.import(policies)?;
        }
        agent.engine.set_revision(state.revision);
        drop(state);
        agent.resync = agent.resync_maps()?;
        for ep in agent.endpoints.values() {
            if !agent.dp.attached(&ep.host_ifname) {
                agent.dp.attach(&ep.host_ifname)?;
            }
        }
        agent.enforced = agent.engine.revision();
        // Persist what the restore settled on (dropped endpoints, identity
        // numbers) as a fresh snapshot.
        agent.compact()?;
        tracing::info!(
            endpoints = agent.endpoints.len(),
            policies = agent.engine.policies().count(),
            revision = agent.enforced,
            resync_written = agent.resync.0,
            resync_removed = agent.resync.1,
            "agent state restored"
        );
        Ok(agent)
    }

    /// The persisted state, built from the live one (not kept as a second
    /// copy: the agent's memory per endpoint matters).
    fn snapshot(&self) -> State {
        State {
            endpoints: self.endpoints.clone(),
            policies: self
                .engine
                .policies()
                .map(|(p, _)| (p.id.to_string(), p.clone()))
                .collect(),
            namespaces: self
                .engine
                .namespaces()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            identities: self
                .engine
                .identities()
                .iter()
                .filter(|i| i.kind != Kind::Reserved)
                .map(|i| (i.id, i.labels.clone()))
                .collect(),
            revision: self.engine.revision(),
        }
    }

    fn compact(&mut self) -> Result<(), AgentError> {
        let snap = self.store.as_ref().map(|_| self.snapshot());
        if let (Some(store), Some(snap)) = (self.store.as_mut(), snap) {
            store.compact(&snap)?;
        }
        Ok(())
    }

    fn endpoint_info(&self, ep: &StoredEndpoint) -> EndpointInfo {
        let (identity, flags) = match (
            self.engine.endpoint(ep.id),
            self.engine.endpoint_policy(ep.id),
        ) {
            (Some(r), p) => (r.identity, p.map_or(0, |p| p.flags())),
            _ => (0, 0),
        };
        EndpointInfo {
            ifindex: ep.ifindex,
            sec_identity: identity,
            ip4: Be32::from(ep.ipv4),
            ep_id: ep.id,
            flags,
            mac: ep.mac,
            node_mac: ep.host_mac,
            _pad: 0,
        }
    }

    /// The maps as the engine says they should be.
    fn desired(&self) -> Desired {
        let eps: Vec<EndpointInfo> = self
            .endpoints
            .values()
            .map(|e| self.endpoint_info(e))
            .collect();
        let mut ipc = BTreeMap::new();
        for e in &eps {
            ipc.insert((e.ip4.into(), 32), e.sec_identity);
        }
        for (c, id) in self.engine.cidr_identities() {
            ipc.insert((c.addr, u32::from(c.len)), id);
        }
        let mut pol = HashMap::new();
        for ep in self.endpoints.keys() {
            if let Some(p) = self.engine.endpoint_policy(*ep) {
                pol.extend(p.map_entries(*ep));
            }
        }
        (eps, ipc, pol)
    }

    /// Makes the pinned maps equal the desired state; returns (written,
    /// removed).
    fn resync_maps(&mut self) -> Result<(usize, usize), AgentError> {
        let (eps, ipc, pol) = self.desired();
        let (mut written, mut removed) = (0, 0);
        let have_eps = self.dp.endpoints()?;
        for e in &have_eps {
            if !eps.iter().any(|x| x.ifindex == e.ifindex) {
                self.dp.remove_endpoint(e)?;
                removed += 1;
            }
        }
        for e in &eps {
            if !have_eps.contains(e) {
                self.dp.upsert_endpoint(e)?;
                written += 1;
            }
        }
        let have_ipc: BTreeMap<(Ipv4Addr, u32), u32> = self
            .dp
            .ipcache()?
            .into_iter()
            .map(|(ip, len, v)| ((ip, len), v.sec_identity))
            .collect();
        for (&(ip, len), _) in have_ipc.iter().filter(|(k, _)| !ipc.contains_key(k)) {
            self.dp.remove_ipcache(ip, len)?;
            removed += 1;
        }
        for (&(ip, len), &id) in &ipc {
            if have_ipc.get(&(ip, len)) != Some(&id) {
                self.dp.upsert_ipcache(ip, len, id)?;
                written += 1;
            }
        }
        let have_pol: HashMap<PolicyKey, PolicyValue> =
            self.dp.policy_entries()?.into_iter().collect();
        let stale: Vec<PolicyKey> = have_pol
            .keys()
            .filter(|k| !pol.contains_key(k))
            .copied()
            .collect();
        let add: Vec<(PolicyKey, PolicyValue)> = pol
            .iter()
            .filter(|(k, v)| have_pol.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect();
        self.dp.put_policy(&add)?;
        self.dp.remove_policy(&stale)?;
        written += add.len();
        removed += stale.len();
        let rev = self.engine.revision() as u32;
        if self.dp.revision()? != rev {
            self.dp.set_revision(rev)?;
            written += 1;
        }
        Ok((written, removed))
    }

    /// Writes one change into the maps: for each endpoint new entries
    /// first, then its endpoint record (identity, enforcement flags), then
    /// the stale entries out — so no packet sees a half-applied policy that
    /// denies what both old and new allow.
    fn apply(&mut self, change: &Change) -> Result<(), AgentError> {
        for u in &change.endpoints {
            let old = u
                .old
                .as_ref()
                .map(|p| p.map_entries(u.ep_id))
                .unwrap_or_default();
            let new = u
                .new
                .as_ref()
                .map(|p| p.map_entries(u.ep_id))
                .unwrap_or_default();
            let add: Vec<(PolicyKey, PolicyValue)> = new
                .iter()
                .filter(|(k, v)| old.get(k) != Some(v))
                .map(|(k, v)| (*k, *v))
                .collect();
            let stale: Vec<PolicyKey> = old
                .keys()
                .filter(|k| !new.contains_key(k))
                .copied()
                .collect();
            self.dp.put_policy(&add)?;
            if let (Some(id), Some(ep)) = (u.identity, self.endpoints.get(&u.ep_id)) {
                let info = self.endpoint_info(ep);
                self.dp.upsert_endpoint(&info)?;
                if u.old_identity != Some(id) {
                    self.dp.upsert_ipcache(ep.ipv4, 32, id)?;
                }
            }
            self.dp.remove_policy(&stale)?;
        }
        for (c, id) in &change.cidr_upserts {
            self.dp.upsert_ipcache(c.addr, u32::from(c.len), *id)?;
        }
        for c in &change.cidr_removals {
            self.dp.remove_ipcache(c.addr, u32::from(c.len))?;
        }
        if change.revision != self.enforced {
            self.dp.set_revision(change.revision as u32)?;
        }
        self.enforced = change.revision;
        Ok(())
    }

    fn journal(&mut self, mut ops: Vec<Op>, change: &Change) -> Result<(), AgentError> {
        if !change.identities_added.is_empty() || !change.identities_removed.is_empty() {
            let added = change
                .identities_added
                .iter()
                .filter_map(|id| {
                    self.engine
                        .identities()
                        .get(*id)
                        .map(|i| (*id, i.labels.clone()))
                })
                .collect();
            ops.push(Op::Identities {
                added,
                removed: change.identities_removed.clone(),
            });
        }
        ops.push(Op::Revision(change.revision));
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        for op in &ops {
            store.append(op)?;
        }
        if store.journal_len() >= COMPACT_EVERY {
            self.compact()?;
        }
        Ok(())
    }

    // ----- endpoints -----

    pub fn create_endpoint(
        &mut self,
        req: &api::EndpointCreate,
    ) -> Result<api::EndpointCreated, AgentError> {
        validate_container_id(&req.container_id)?;
        if req.netns.trim().is_empty() {
            return Err(AgentError::Invalid {
                what: "netns",
                reason: "must name the pod's network namespace".into(),
            });
        }
        validate_ifname(&req.ifname)?;
        validate_namespace(&req.namespace)?;
        let labels = Labels::parse_all(&req.labels, pilus_policy::labels::SOURCE_K8S)?;
        if let Some(ep) = self
            .endpoints
            .values()
            .find(|e| e.container_id == req.container_id && e.ifname == req.ifname)
        {
            return Ok(api::EndpointCreated {
                created: false,
                endpoint: self.view(ep),
                revision: self.enforced,
            });
        }
        let id = (1..=u16::MAX)
            .find(|i| !self.endpoints.contains_key(i))
            .ok_or(AgentError::EndpointIds)?;
        // With the CNI plugin the pair exists already; check it before
        // anything is allocated.
        let existing = match &req.host_ifname {
            Some(host) => Some(self.existing_link(host, req.mac.as_deref())?),
            None => None,
        };
        let ip = self.ipam.allocate()?;
        let host = req
            .host_ifname
            .clone()
            .unwrap_or_else(|| api::host_ifname(&req.container_id, &req.ifname));
        let plumbed = match existing {
            Some(p) => p,
            None => {
                let plumbed = self.plumbing.create(&PlumbRequest {
                    netns: PathBuf::from(&req.netns),
                    ifname: req.ifname.clone(),
                    host_ifname: host.clone(),
                    ip,
                    router: self.node.router,
                });
                match plumbed {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = self.plumbing.delete(&host);
                        self.ipam.release(ip);
                        return Err(e.into());
                    }
                }
            }
        };
        let ep = StoredEndpoint {
            id,
            container_id: req.container_id.clone(),
            netns: req.netns.clone(),
            ifname: req.ifname.clone(),
            host_ifname: host.clone(),
            namespace: req.namespace.clone(),
            pod_name: req.pod_name.clone(),
            labels: labels.clone(),
            ipv4: ip,
            ifindex: plumbed.host_ifindex,
            mac: plumbed.mac,
            host_mac: plumbed.host_mac,
            cni_network: req.cni_network.clone(),
            created_unix_ms: unix_ms(),
        };
        let change = match self.engine.upsert_endpoint(id, &req.namespace, &labels) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.plumbing.delete(&host);
                self.ipam.release(ip);
                return Err(e.into());
            }
        };
        self.endpoints.insert(id, ep.clone());
        let applied = self.apply(&change).and_then(|_| Ok(self.dp.attach(&host)?));
        if let Err(e) = applied {
            // Undo: the engine, the maps, the link.
            let undo = self.engine.remove_endpoint(id);
            let _ = self.apply(&undo);
            let info = self.endpoint_info(&ep);
            let _ = self.dp.remove_endpoint(&info);
            let _ = self.dp.remove_ipcache(ip, 32);
            let _ = self.dp.detach(&host);
            self.endpoints.remove(&id);
            let _ = self.plumbing.delete(&host);
            self.ipam.release(ip);
            return Err(e);
        }
        self.journal(vec![Op::PutEndpoint(ep.clone())], &change)?;
        tracing::info!(endpoint = id, container = %req.container_id, ipv4 = %ip, identity = change.endpoints.iter().find(|u| u.ep_id == id).and_then(|u| u.identity), "endpoint created");
        Ok(api::EndpointCreated {
            created: true,
            endpoint: self.view(&ep),
            revision: self.enforced,
        })
    }

    /// The host side of a pair the CNI plugin made: it must exist here,
    /// and the pod side's MAC must be given.
    fn existing_link(&self, host: &str, mac: Option<&str>) -> Result<Plumbed, AgentError> {
        validate_ifname(host)?;
        let mac = mac
            .ok_or_else(|| AgentError::Invalid {
                what: "mac",
                reason: "the pod side's MAC is required with host_ifname".into(),
            })
            .and_then(|m| {
                pilus_netlink::pod::parse_mac(m).ok_or_else(|| AgentError::Invalid {
                    what: "mac",
                    reason: format!("{m:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
                })
            })?;
        let (host_ifindex, host_mac) =
            self.plumbing
                .lookup(host)
                .ok_or_else(|| AgentError::Invalid {
                    what: "host_ifname",
                    reason: format!(
                        "no interface {host:?} in the agent's network namespace (the CNI plugin must create it in the namespace pilusd runs in)"
                    ),
                })?;
        Ok(Plumbed {
            host_ifindex,
            host_mac,
            mac,
        })
    }

    /// The endpoint a CNI attachment (container id, ifname) made.
    pub fn find_attachment(&self, container_id: &str, ifname: &str) -> Option<&StoredEndpoint> {
        self.endpoints
            .values()
            .find(|e| e.container_id == container_id && e.ifname == ifname)
    }

    /// Finds an endpoint by id, container id or `namespace/pod`.
    pub fn find_endpoint(&self, key: &str) -> Option<&StoredEndpoint> {
        if let Ok(id) = key.parse::<u16>() {
            if let Some(e) = self.endpoints.get(&id) {
                return Some(e);
            }
        }
        if let Ok(ip) = key.parse::<Ipv4Addr>() {
            return self.endpoints.values().find(|e| e.ipv4 == ip);
        }
        self.endpoints.values().find(|e| {
            e.container_id == key
                || e.pod_name
                    .as_deref()
                    .is_some_and(|p| format!("{}/{p}", e.namespace) == key)
        })
    }

    /// Deletes an endpoint; deleting one that is not there is not an error.
    pub fn delete_endpoint(&mut self, id: u16) -> Result<api::Deleted, AgentError> {
        let Some(ep) = self.endpoints.get(&id).cloned() else {
            return Ok(api::Deleted {
                deleted: 0,
                revision: self.enforced,
            });
        };
        let info = self.endpoint_info(&ep);
        let change = self.engine.remove_endpoint(id);
        self.apply(&change)?;
        self.dp.remove_endpoint(&info)?;
        self.dp.remove_ipcache(ep.ipv4, 32)?;
        self.dp.detach(&ep.host_ifname)?;
        self.endpoints.remove(&id);
        self.plumbing.delete(&ep.host_ifname)?;
        self.ipam.release(ep.ipv4);
        self.journal(vec![Op::DeleteEndpoint(id)], &change)?;
        tracing::info!(endpoint = id, container = %ep.container_id, "endpoint deleted");
        Ok(api::Deleted {
            deleted: 1,
            revision: self.enforced,
        })
    }

    /// CNI GC of one network, whole under the agent's lock so no ADD can
    /// interleave: deletes the endpoints (and host links) of `req.network`
    /// whose attachment is not listed, sparing those created since
    /// `keep_created_since_unix_ms`. Every deletion is logged with its
    /// container id, since it removes a pod's network.
    pub fn cni_gc(&mut self, req: &api::CniGc) -> Result<api::CniGcDone, AgentError> {
        if req.network.is_empty() {
            return Err(AgentError::Invalid {
                what: "network",
                reason: "must name the CNI network whose endpoints are collected".into(),
            });
        }
        let mut stale = Vec::new();
        let mut kept_recent = Vec::new();
        for ep in self.endpoints.values() {
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
            self.delete_endpoint(id)?;
            tracing::info!(endpoint = id, container = %att.container_id, ifname = %att.ifname, network = %req.network, "CNI GC: deleted the endpoint of an attachment the runtime no longer has");
            deleted.push(att);
        }
        Ok(api::CniGcDone {
            deleted,
            kept_recent,
            revision: self.enforced,
        })
    }

    pub fn view(&self, ep: &StoredEndpoint) -> api::Endpoint {
        let pol = self.engine.endpoint_policy(ep.id);
        api::Endpoint {
            id: ep.id,
            container_id: ep.container_id.clone(),
            netns: ep.netns.clone(),
            ifname: ep.ifname.clone(),
            host_ifname: ep.host_ifname.clone(),
            namespace: ep.namespace.clone(),
            pod_name: ep.pod_name.clone(),
            labels: ep.labels.to_strings(),
            identity: self.engine.endpoint(ep.id).map_or(0, |r| r.identity),
            ipv4: ep.ipv4,
            gateway: self.node.router,
            prefix_len: 32,
            mac: pilus_netlink::pod::mac_string(&ep.mac),
            host_mac: pilus_netlink::pod::mac_string(&ep.host_mac),
            host_ifindex: ep.ifindex,
            cni_network: ep.cni_network.clone(),
            created_unix_ms: ep.created_unix_ms,
            policy: api::EndpointPolicyStatus {
                ingress_enforced: pol.as_ref().is_some_and(|p| p.ingress_enforced),
                egress_enforced: pol.as_ref().is_some_and(|p| p.egress_enforced),
                entries: pol.as_ref().map_or(0, |p| p.entries.len()),
            },
        }
    }

    // ----- policies -----

    /// Parses every file, then imports all policies at once: one invalid
    /// document rejects the whole import and nothing changes.
    pub fn import(&mut self, files: &[api::PolicyFile]) -> Result<api::PolicyImported, AgentError> {
        let mut all: Vec<Policy> = Vec::new();
        for f in files {
            for p in pilus_policy::parse_documents(&f.text, &f.name)? {
                if all.iter().any(|q| q.id == p.id) {
                    return Err(AgentError::DuplicatePolicy(p.id));
                }
                all.push(p);
            }
        }
        if all.is_empty() {
            return Err(AgentError::Invalid {
                what: "import",
                reason: "no policy documents found".into(),
            });
        }
        let names = all.iter().map(|p| p.id.to_string()).collect();
        let change = self.engine.import(all.clone())?;
        self.apply(&change)?;
        self.journal(vec![Op::PutPolicies(all)], &change)?;
        tracing::info!(
            revision = change.revision,
            endpoints_changed = change.endpoints.len(),
            "policies imported"
        );
        Ok(api::PolicyImported {
            revision: change.revision,
            policies: names,
        })
    }

    /// Deletes policies by name (`name`, `namespace/name`), or all.
    pub fn delete_policies(&mut self, name: Option<&str>) -> Result<api::Deleted, AgentError> {
        let ids: Vec<PolicyId> = match name {
            Some(n) => {
                let ids = self.engine.find_policies(n);
                if ids.is_empty() {
                    return Err(AgentError::NotFound {
                        what: "policy",
                        name: n.to_string(),
                    });
                }
                ids
            }
            None => self.engine.policies().map(|(p, _)| p.id.clone()).collect(),
        };
        let (change, n) = self.engine.delete(&ids);
        self.apply(&change)?;
        self.journal(vec![Op::DeletePolicies(ids)], &change)?;
        Ok(api::Deleted {
            deleted: n,
            revision: change.revision,
        })
    }

    pub fn set_namespace_labels(
        &mut self,
        ns: &str,
        labels: &[String],
    ) -> Result<api::NamespaceLabels, AgentError> {
        validate_namespace(ns)?;
        let l = Labels::parse_all(labels, pilus_policy::labels::SOURCE_K8S)?;
        let change = self.engine.set_namespace_labels(ns, l.clone())?;
        self.apply(&change)?;
        self.journal(
            vec![Op::SetNamespace {
                namespace: ns.to_string(),
                labels: l.clone(),
            }],
            &change,
        )?;
        Ok(api::NamespaceLabels {
            namespace: ns.to_string(),
            labels: l.iter().map(|x| format!("{}={}", x.key, x.value)).collect(),
            revision: change.revision,
        })
    }

    /// The datapath's maps (tests reach a fake through `as_any`).
    pub fn maps(&self) -> &dyn Maps {
        self.dp.as_ref()
    }

    pub fn status(&self) -> api::Status {
        api::Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node_name: self.node.node_name.clone(),
            pod_cidr: format!("{}/{}", self.node.pod_cidr.0, self.node.pod_cidr.1),
            router_ip: self.node.router,
            pin_dir: self.node.pin_dir.display().to_string(),
            socket: self.node.socket.display().to_string(),
            state_dir: self.node.state_dir.display().to_string(),
            endpoints: self.endpoints.len(),
            identities: self.engine.identities().len(),
            policies: self.engine.policies().count(),
            revision: self.engine.revision(),
            enforced_revision: self.enforced,
            ipam_used: self.ipam.used(),
            ipam_capacity: self.ipam.capacity(),
            resync_written: self.resync.0,
            resync_removed: self.resync.1,
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }
}
