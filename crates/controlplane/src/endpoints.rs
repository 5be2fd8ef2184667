//! The endpoints' owner: the records of this node's pods (who, where, which
//! interface), their addresses (IPAM over the node's pod CIDR), their
//! plumbing, their programs on the host-side veth and their entries in the
//! endpoint map. Identities and policy are the policy manager's; this one
//! only writes what they decided into the endpoint map. Records with equal
//! labels share one label set and one map of label sources
//! ([`crate::intern`]).

use crate::{
    datapath::{DpResult, EndpointMap, Links},
    intern::Interner,
    ipam::Ipam,
    plumbing::{PlumbRequest, Plumbed, Plumbing},
    Error,
};
use pilus_abi::{Be32, EndpointInfo};
use pilus_policy::Labels;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf, sync::Arc};

/// One endpoint, as kept in memory and in the store.
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
    /// grace period.
    #[serde(default)]
    pub created_unix_ms: u64,
    /// Who gave each label, by `source:key` (absent: the user).
    #[serde(default)]
    pub label_sources: LabelSources,
}

/// Who gave each of an endpoint's labels, by `source:key`; shared, as the
/// label set is, by the endpoints of a workload (see [`crate::intern`]).
pub type LabelSources = Arc<BTreeMap<String, LabelSource>>;

/// Who gave an endpoint a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelSource {
    /// The CNI network configuration (`args.cni.labels`).
    Cni,
    /// The container runtime's own metadata.
    Runtime,
    /// `pilus endpoint labels`, or the API's endpoint create.
    User,
}

impl LabelSource {
    pub fn name(self) -> &'static str {
        match self {
            LabelSource::Cni => "cni",
            LabelSource::Runtime => "runtime",
            LabelSource::User => "user",
        }
    }
}

/// The key a label's source is kept under.
pub fn label_key(l: &pilus_policy::Label) -> String {
    format!("{}:{}", l.source, l.key)
}

impl StoredEndpoint {
    /// Its entry in the endpoint map, with what the policy manager decided.
    pub fn info(&self, identity: u32, flags: u16) -> EndpointInfo {
        EndpointInfo {
            ifindex: self.ifindex,
            sec_identity: identity,
            ip4: Be32::from(self.ipv4),
            ep_id: self.id,
            flags,
            mac: self.mac,
            node_mac: self.host_mac,
            _pad: 0,
        }
    }

    pub fn source_of(&self, l: &pilus_policy::Label) -> LabelSource {
        self.label_sources
            .get(&label_key(l))
            .copied()
            .unwrap_or(LabelSource::User)
    }

    /// Whether a user's key names it: its id, address, container id or
    /// `namespace/pod`.
    fn named(&self, key: &str) -> bool {
        key.parse::<u16>() == Ok(self.id)
            || key.parse::<Ipv4Addr>() == Ok(self.ipv4)
            || self.container_id == key
            || self
                .pod_name
                .as_deref()
                .is_some_and(|p| key.split_once('/') == Some((self.namespace.as_str(), p)))
    }
}

/// The veth pair of a new endpoint: made by the CNI plugin already, or to
/// be made here.
pub enum Pair {
    Existing {
        host_ifname: String,
        mac: String,
    },
    Make {
        netns: PathBuf,
        ifname: String,
        host_ifname: String,
    },
}

pub struct EndpointManager {
    records: BTreeMap<u16, StoredEndpoint>,
    label_sets: Interner<Labels>,
    label_sources: Interner<LabelSources>,
    ipam: Ipam,
    router: Ipv4Addr,
    mtu: Option<u32>,
    plumbing: Arc<dyn Plumbing>,
    map: Arc<dyn EndpointMap>,
    links: Arc<dyn Links>,
}

impl EndpointManager {
    pub fn new(
        pod_cidr: ipnet::Ipv4Net,
        router: Ipv4Addr,
        mtu: Option<u32>,
        plumbing: Arc<dyn Plumbing>,
        map: Arc<dyn EndpointMap>,
        links: Arc<dyn Links>,
    ) -> EndpointManager {
        EndpointManager {
            records: BTreeMap::new(),
            label_sets: Interner::new(Labels::holders),
            label_sources: Interner::new(Arc::strong_count),
            ipam: Ipam::new(pod_cidr.network(), pod_cidr.prefix_len(), router),
            router,
            mtu,
            plumbing,
            map,
            links,
        }
    }

    pub fn get(&self, id: u16) -> Option<&StoredEndpoint> {
        self.records.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &StoredEndpoint> {
        self.records.values()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn ipam_used(&self) -> usize {
        self.ipam.used()
    }

    pub fn ipam_capacity(&self) -> usize {
        self.ipam.capacity()
    }

    pub fn router(&self) -> Ipv4Addr {
        self.router
    }

    /// The endpoint a CNI attachment (container id, ifname) made.
    pub fn attachment(&self, container_id: &str, ifname: &str) -> Option<&StoredEndpoint> {
        self.records
            .values()
            .find(|e| e.container_id == container_id && e.ifname == ifname)
    }

    /// Finds an endpoint by id, address, container id or `namespace/pod`.
    pub fn find(&self, key: &str) -> Option<&StoredEndpoint> {
        if let Ok(id) = key.parse::<u16>() {
            if let Some(e) = self.records.get(&id) {
                return Some(e);
            }
        }
        self.records.values().find(|e| e.named(key))
    }

    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&StoredEndpoint> {
        self.records.values().find(|e| e.ipv4 == ip)
    }

    /// A restored endpoint whose link still exists: takes its address and
    /// the link's current index. `false`: it cannot be restored (logged).
    pub fn restore(&mut self, mut ep: StoredEndpoint) -> bool {
        let Some((ifindex, host_mac)) = self.plumbing.lookup(&ep.host_ifname) else {
            tracing::warn!(endpoint = ep.id, host_ifname = %ep.host_ifname, "endpoint's link is gone; forgetting it");
            return false;
        };
        if let Err(e) = self.ipam.claim(ep.ipv4) {
            tracing::warn!(endpoint = ep.id, error = %e, "cannot restore endpoint address; forgetting it");
            return false;
        }
        ep.ifindex = ifindex;
        ep.host_mac = host_mac;
        self.insert(ep);
        true
    }

    /// The shared copies of a label set and its sources: what a record
    /// holds, and what the policy engine's record should be given.
    pub fn intern(&mut self, labels: Labels, sources: LabelSources) -> (Labels, LabelSources) {
        (
            self.label_sets.intern(labels),
            self.label_sources.intern(sources),
        )
    }

    /// Allocates an id and an address and makes (or checks) the veth pair.
    /// Nothing is recorded yet: [`insert`](Self::insert) does, once the
    /// policy side has succeeded; [`abandon`](Self::abandon) undoes this.
    pub fn prepare(&mut self, pair: &Pair) -> Result<(u16, Ipv4Addr, String, Plumbed), Error> {
        let id = (1..=u16::MAX)
            .find(|i| !self.records.contains_key(i))
            .ok_or(Error::EndpointIds)?;
        let existing = match pair {
            Pair::Existing { host_ifname, mac } => Some(self.existing_link(host_ifname, mac)?),
            Pair::Make { .. } => None,
        };
        let ip = self.ipam.allocate()?;
        let (host, plumbed) = match (pair, existing) {
            (Pair::Existing { host_ifname, .. }, Some(p)) => (host_ifname.clone(), p),
            (
                Pair::Make {
                    netns,
                    ifname,
                    host_ifname,
                },
                _,
            ) => {
                let made = self.plumbing.create(&PlumbRequest {
                    netns: netns.clone(),
                    ifname: ifname.clone(),
                    host_ifname: host_ifname.clone(),
                    ip,
                    router: self.router,
                    mtu: self.mtu,
                });
                match made {
                    Ok(p) => (host_ifname.clone(), p),
                    Err(e) => {
                        let _ = self.plumbing.delete(host_ifname);
                        self.ipam.release(ip);
                        return Err(e.into());
                    }
                }
            }
            (Pair::Existing { .. }, None) => unreachable!("checked above"),
        };
        Ok((id, ip, host, plumbed))
    }

    /// Undoes [`prepare`](Self::prepare) (the plugin-made pair stays: the
    /// plugin removes what it made).
    pub fn abandon(&mut self, ip: Ipv4Addr, host: &str, made_here: bool) {
        if made_here {
            let _ = self.plumbing.delete(host);
        }
        self.ipam.release(ip);
    }

    pub fn insert(&mut self, mut ep: StoredEndpoint) {
        (ep.labels, ep.label_sources) = self.intern(ep.labels, ep.label_sources);
        self.records.insert(ep.id, ep);
    }

    /// Replaces an endpoint's labels (and their sources).
    pub fn set_labels(&mut self, id: u16, labels: Labels, sources: LabelSources) {
        let (labels, sources) = self.intern(labels, sources);
        if let Some(e) = self.records.get_mut(&id) {
            e.labels = labels;
            e.label_sources = sources;
        }
    }

    /// Drops the record only (an ADD being undone, see
    /// [`abandon`](Self::abandon)).
    pub fn forget(&mut self, id: u16) {
        self.records.remove(&id);
    }

    /// Forgets an endpoint: its map entry, programs, link and address.
    pub fn remove(
        &mut self,
        id: u16,
        info: &EndpointInfo,
    ) -> Result<Option<StoredEndpoint>, Error> {
        let Some(ep) = self.records.get(&id).cloned() else {
            return Ok(None);
        };
        self.map.remove_endpoint(info)?;
        self.links.detach(&ep.host_ifname)?;
        self.records.remove(&id);
        self.plumbing.delete(&ep.host_ifname)?;
        self.ipam.release(ep.ipv4);
        Ok(Some(ep))
    }

    pub fn write_info(&self, info: &EndpointInfo) -> DpResult<()> {
        self.map.upsert_endpoint(info)
    }

    pub fn remove_info(&self, info: &EndpointInfo) -> DpResult<()> {
        self.map.remove_endpoint(info)
    }

    pub fn attach(&self, host_ifname: &str) -> DpResult<()> {
        if self.links.attached(host_ifname) {
            return Ok(());
        }
        self.links.attach(host_ifname)
    }

    pub fn detach(&self, host_ifname: &str) -> DpResult<()> {
        self.links.detach(host_ifname)
    }

    /// Makes the endpoint map equal `want`; returns (written, removed).
    pub fn resync(&self, want: &[EndpointInfo]) -> DpResult<(usize, usize)> {
        let have = self.map.endpoints()?;
        let (mut written, mut removed) = (0, 0);
        for e in &have {
            if !want.iter().any(|x| x.ifindex == e.ifindex) {
                self.map.remove_endpoint(e)?;
                removed += 1;
            }
        }
        for e in want {
            if !have.contains(e) {
                self.map.upsert_endpoint(e)?;
                written += 1;
            }
        }
        Ok((written, removed))
    }

    /// The host side of a pair the CNI plugin made: it must exist here,
    /// and the pod side's MAC must be given.
    fn existing_link(&self, host: &str, mac: &str) -> Result<Plumbed, Error> {
        crate::validate::ifname(host)?;
        let mac = crate::validate::mac(mac)?;
        let (host_ifindex, host_mac) = self.plumbing.lookup(host).ok_or_else(|| {
            Error::invalid(
                "host_ifname",
                format!(
                    "no interface {host:?} in the agent's network namespace (the CNI plugin must create it in the namespace pilusd runs in)"
                ),
            )
        })?;
        Ok(Plumbed {
            host_ifindex,
            host_mac,
            mac,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeDatapath, FakePlumbing};

    fn record(id: u16, app: &str) -> StoredEndpoint {
        let labels = Labels::parse_all(&[format!("app={app}")], "k8s").unwrap();
        let sources = labels
            .iter()
            .map(|l| (label_key(&l), LabelSource::Cni))
            .collect();
        StoredEndpoint {
            id,
            container_id: format!("c{id}"),
            netns: format!("/run/netns/p{id}"),
            ifname: "eth0".into(),
            host_ifname: format!("lxc{id}"),
            namespace: "shop".into(),
            pod_name: None,
            labels,
            ipv4: Ipv4Addr::new(198, 18, 0, id as u8),
            ifindex: u32::from(id),
            mac: [2, 0, 0, 0, 0, id as u8],
            host_mac: [2, 0, 0, 0, 1, id as u8],
            cni_network: Some("pilus".into()),
            created_unix_ms: 0,
            label_sources: Arc::new(sources),
        }
    }

    /// Issue 9: every endpoint kept its own copy of its labels and their
    /// sources; the pods of a workload now share one of each.
    #[test]
    fn the_endpoints_of_a_workload_share_their_labels_and_sources() {
        let dp = Arc::new(FakeDatapath::default());
        let mut eps = EndpointManager::new(
            "198.18.0.0/24".parse().unwrap(),
            Ipv4Addr::new(198, 18, 0, 1),
            None,
            Arc::new(FakePlumbing::default()),
            dp.clone(),
            dp,
        );
        for (id, app) in [(1, "web"), (2, "web"), (3, "db")] {
            eps.insert(record(id, app));
        }
        let (a, b, c) = (
            eps.get(1).unwrap(),
            eps.get(2).unwrap(),
            eps.get(3).unwrap(),
        );
        assert!(Arc::ptr_eq(&a.label_sources, &b.label_sources));
        // Three holders of the web set: two records and the interner.
        assert_eq!((a.labels.holders(), c.labels.holders()), (3, 2));
        assert_eq!(a.labels, b.labels);
        assert_ne!(a.labels, c.labels);
        // Relabeling one shares the other workload's set.
        let (db_labels, db_sources) = (c.labels.clone(), c.label_sources.clone());
        eps.set_labels(2, db_labels, db_sources);
        assert_eq!(eps.get(2).unwrap().labels.holders(), 3);
        assert_eq!(eps.get(1).unwrap().labels.holders(), 2);
    }
}
