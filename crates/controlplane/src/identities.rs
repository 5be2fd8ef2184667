//! Cluster-wide identities: the same labels get the same number on every
//! node. [`ClusterAllocator`] implements the policy engine's
//! [`Allocator`] over the cluster store:
//!
//! ```text
//! pilus/v1/identities/ids/<id>               the labels of identity <id>
//! pilus/v1/identities/labels/<labels>        the id of a label set (the index)
//! pilus/v1/identities/users/<id>/<node>      node <node> uses it (leased)
//! ```
//!
//! A number is taken with one transaction that checks neither key exists,
//! so two nodes racing for the same labels or the same number cannot both
//! win. Using an existing identity re-writes its `ids` key (bumping its
//! revision) together with the node's `users` key; the last user to leave
//! deletes the identity with a transaction conditioned on the revision it
//! saw, so a node that took the identity meanwhile (and so bumped the
//! revision) keeps it alive. A node that dies takes its `users` keys with
//! its lease; [`ClusterAllocator::collect`] removes identities nobody uses.
//!
//! Reserved and CIDR identities stay node-local ([`LocalAllocator`]): CIDR
//! identities never leave the node, as in Cilium.

use crate::persist::{self, segment, StoredLabels, ROOT};
use pilus_kvstore::{ClusterStore, Compare, KvError, LeaseId, Txn};
use pilus_policy::{
    identity::{self, Allocator, Identity, IdentityError, Kind, LocalAllocator},
    Cidr, Labels,
};
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

pub fn ids_prefix() -> String {
    format!("{ROOT}identities/ids/")
}

pub fn id_key(id: u32) -> String {
    format!("{}{id}", ids_prefix())
}

fn labels_key(l: &Labels) -> String {
    format!("{ROOT}identities/labels/{}", segment(&l.to_string()))
}

fn users_prefix(id: u32) -> String {
    format!("{ROOT}identities/users/{id}/")
}

/// How often an allocation retries after losing a race to another node.
const ATTEMPTS: usize = 32;

fn store_error(what: &str, e: KvError) -> IdentityError {
    IdentityError::Store {
        what: what.to_string(),
        source: Box::new(e),
    }
}

/// The lease the node's `users` keys live by (it changes if the store
/// grants it anew).
pub type LeaseOf = Arc<dyn Fn() -> LeaseId + Send + Sync>;

pub struct ClusterAllocator {
    store: Arc<dyn ClusterStore>,
    node: String,
    lease: LeaseOf,
    /// Reserved and CIDR identities.
    local: LocalAllocator,
    /// Every cluster identity known here; `refs` counts this node's users.
    cluster: BTreeMap<u32, Identity>,
    by_labels: HashMap<Labels, u32>,
}

impl ClusterAllocator {
    /// Reads every cluster identity there is.
    pub fn new(
        store: Arc<dyn ClusterStore>,
        node: &str,
        lease: LeaseOf,
    ) -> Result<ClusterAllocator, IdentityError> {
        let mut a = ClusterAllocator {
            store,
            node: segment(node),
            lease,
            local: LocalAllocator::new(),
            cluster: BTreeMap::new(),
            by_labels: HashMap::new(),
        };
        let (kvs, _) = a
            .store
            .list(&ids_prefix())
            .map_err(|e| store_error("listing identities", e))?;
        for kv in kvs {
            match decode_id(&kv) {
                Some((id, labels)) => {
                    a.observe(id, &labels);
                }
                None => tracing::warn!(key = %kv.key, "skipping an identity that cannot be read"),
            }
        }
        Ok(a)
    }

    fn users_key(&self, id: u32) -> String {
        format!("{}{}", users_prefix(id), self.node)
    }

    fn insert(&mut self, id: u32, labels: &Labels, refs: usize) -> bool {
        let new = !self.cluster.contains_key(&id);
        let e = self.cluster.entry(id).or_insert_with(|| Identity {
            id,
            kind: Kind::Cluster,
            labels: labels.clone(),
            refs: 0,
            cidr: None,
        });
        e.refs += refs;
        self.by_labels.insert(labels.clone(), id);
        new
    }

    /// Uses the existing identity `id` of `labels`: fails (Ok(false)) if it
    /// was deleted or changed meanwhile.
    fn join(&self, id: u32, value: &[u8]) -> Result<bool, IdentityError> {
        let txn = Txn::new()
            .when(Compare::Equals(id_key(id), value.to_vec()))
            .put(id_key(id), value.to_vec())
            .put_leased(self.users_key(id), "", (self.lease)());
        self.store
            .commit(txn)
            .map(|c| c.succeeded)
            .map_err(|e| store_error("joining an identity", e))
    }

    /// The `skip`-th lowest number no identity holds (that this node knows
    /// of): a node that lost a race tries further up, so racing nodes
    /// spread out instead of colliding on the same lowest number again.
    fn free_number(&self, skip: usize) -> Result<u32, IdentityError> {
        let (lo, hi) = identity::range(Kind::Cluster);
        let mut left = skip;
        let mut next = lo;
        for &id in self.cluster.range(lo..=hi).map(|(k, _)| k) {
            while next < id {
                if left == 0 {
                    return Ok(next);
                }
                left -= 1;
                next += 1;
            }
            next = id + 1;
        }
        let n = next.saturating_add(left as u32);
        if n > hi {
            return Err(IdentityError::Exhausted {
                kind: Kind::Cluster,
            });
        }
        Ok(n)
    }

    /// Reads every identity the store has (after losing a race).
    fn refresh(&mut self) -> Result<(), IdentityError> {
        let (kvs, _) = self
            .store
            .list(&ids_prefix())
            .map_err(|e| store_error("listing identities", e))?;
        for kv in kvs {
            if let Some((id, labels)) = decode_id(&kv) {
                self.observe(id, &labels);
            }
        }
        Ok(())
    }

    fn acquire_cluster(
        &mut self,
        labels: &Labels,
        want: Option<u32>,
    ) -> Result<(u32, bool), IdentityError> {
        if let Some(&id) = self.by_labels.get(labels) {
            if self.cluster.get(&id).is_some_and(|i| i.refs > 0) {
                self.cluster.get_mut(&id).expect("known").refs += 1;
                return Ok((id, false));
            }
        }
        let value = persist::encode(&StoredLabels::of(labels));
        let lkey = labels_key(labels);
        let mut candidate = want;
        for attempt in 0..ATTEMPTS {
            let existing = self
                .store
                .get(&lkey)
                .map_err(|e| store_error("looking up labels", e))?;
            if let Some(kv) = existing {
                let id = std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                if let Some(id) = id {
                    if self.join(id, &value)? {
                        let new = self.insert(id, labels, 1);
                        return Ok((id, new));
                    }
                }
                // Being deleted, or written by something else: look again.
                continue;
            }
            let id = match candidate.take() {
                Some(w) if self.is_free(w) && identity::range(Kind::Cluster).0 <= w => w,
                _ => self.free_number(attempt)?,
            };
            let txn = Txn::new()
                .when(Compare::Absent(id_key(id)))
                .when(Compare::Absent(lkey.clone()))
                .put(id_key(id), value.clone())
                .put(lkey.clone(), id.to_string())
                .put_leased(self.users_key(id), "", (self.lease)());
            let done = self
                .store
                .commit(txn)
                .map_err(|e| store_error("allocating an identity", e))?;
            if done.succeeded {
                let new = self.insert(id, labels, 1);
                return Ok((id, new));
            }
            // Another node took the number or the labels: learn what the
            // store holds now.
            self.refresh()?;
        }
        Err(IdentityError::Store {
            what: format!("lost the race for an identity for {labels} {ATTEMPTS} times"),
            source: "too many concurrent allocations".into(),
        })
    }

    /// Deletes identity `id` if no node uses it (any more). True if it was
    /// deleted.
    fn delete_if_unused(&self, id: u32) -> Result<bool, KvError> {
        let (users, _) = self.store.list(&users_prefix(id))?;
        if !users.is_empty() {
            return Ok(false);
        }
        let Some(kv) = self.store.get(&id_key(id))? else {
            return Ok(true);
        };
        let mut txn = Txn::new()
            .when(Compare::ModRevision(id_key(id), kv.mod_revision))
            .delete(id_key(id));
        if let Some((_, labels)) = decode_id(&kv) {
            txn = txn.delete(labels_key(&labels));
        }
        Ok(self.store.commit(txn)?.succeeded)
    }

    /// Removes identities no node uses (their last user's node died and
    /// its lease took its `users` keys). Returns how many were removed.
    pub fn collect(&self) -> Result<usize, KvError> {
        let mut n = 0;
        for &id in self.cluster.keys() {
            if self.cluster[&id].refs == 0 && self.delete_if_unused(id)? {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// An identity as its `ids` key holds it.
pub fn decode_id(kv: &pilus_kvstore::KeyValue) -> Option<(u32, Labels)> {
    let id = kv.key.strip_prefix(&ids_prefix())?.parse().ok()?;
    let labels = persist::decode::<StoredLabels>(kv).ok()?.labels().ok()?;
    Some((id, labels))
}

impl Allocator for ClusterAllocator {
    fn get(&self, id: u32) -> Option<&Identity> {
        self.cluster.get(&id).or_else(|| self.local.get(id))
    }

    fn lookup(&self, labels: &Labels) -> Option<u32> {
        self.by_labels
            .get(labels)
            .copied()
            .or_else(|| self.local.lookup(labels))
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Identity> + '_> {
        // Reserved (1-7) and cluster (256-65535) before CIDR (1<<24 on):
        // number order, as the local allocator gives it.
        let (reserved, cidr): (Vec<&Identity>, Vec<&Identity>) =
            self.local.iter().partition(|i| i.kind == Kind::Reserved);
        Box::new(
            reserved
                .into_iter()
                .chain(self.cluster.values())
                .chain(cidr),
        )
    }

    fn len(&self) -> usize {
        self.local.len() + self.cluster.len()
    }

    fn is_free(&self, id: u32) -> bool {
        self.local.is_free(id) && !self.cluster.contains_key(&id)
    }

    fn acquire_kind(
        &mut self,
        labels: &Labels,
        kind: Kind,
        want: Option<u32>,
        cidr: Option<Cidr>,
    ) -> Result<(u32, bool), IdentityError> {
        match kind {
            Kind::Cluster => self.acquire_cluster(labels, want),
            _ => self.local.acquire_kind(labels, kind, want, cidr),
        }
    }

    fn release(&mut self, id: u32) -> bool {
        let Some(e) = self.cluster.get_mut(&id) else {
            return self.local.release(id);
        };
        e.refs = e.refs.saturating_sub(1);
        if e.refs > 0 {
            return false;
        }
        let key = self.users_key(id);
        if let Err(e) = self.store.commit(Txn::new().delete(key)) {
            // The lease takes the key when this node goes; until then the
            // identity merely lives longer than it must.
            tracing::warn!(identity = id, error = %e, "cannot drop this node's use of an identity");
            return false;
        }
        match self.delete_if_unused(id) {
            Ok(true) => {
                let gone = self.cluster.remove(&id).expect("known");
                self.by_labels.remove(&gone.labels);
                true
            }
            // Others use it: it stays known, with no user here.
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(identity = id, error = %e, "cannot delete an unused identity; it is collected later");
                false
            }
        }
    }

    fn observe(&mut self, id: u32, labels: &Labels) -> bool {
        if self.cluster.get(&id).is_some_and(|i| &i.labels != labels) {
            // Renumbered behind our back (deleted and taken again): the old
            // labels' index entry goes.
            let old = self.cluster.remove(&id).expect("known");
            self.by_labels.remove(&old.labels);
        }
        self.insert(id, labels, 0)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn forget(&mut self, id: u32) -> Option<Identity> {
        if self.cluster.get(&id).is_none_or(|i| i.refs > 0) {
            return None;
        }
        let gone = self.cluster.remove(&id)?;
        self.by_labels.remove(&gone.labels);
        Some(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pilus_kvstore::{KvStore, MemKv};

    fn labels(s: &[&str]) -> Labels {
        Labels::parse_all(s, "k8s").unwrap()
    }

    struct Node {
        alloc: ClusterAllocator,
        lease: Arc<pilus_kvstore::Lease>,
    }

    fn node(store: &MemKv, name: &str) -> Node {
        let lease = Arc::new(
            store
                .grant_lease(std::time::Duration::from_secs(10))
                .unwrap(),
        );
        let l = lease.clone();
        let alloc =
            ClusterAllocator::new(Arc::new(store.clone()), name, Arc::new(move || l.id())).unwrap();
        Node { alloc, lease }
    }

    /// Issue 10: the same labels get the same number on every node, and the
    /// number goes when the last user anywhere is gone.
    #[test]
    fn same_labels_same_number_everywhere_released_by_the_last_user() {
        let store = MemKv::default();
        let mut a = node(&store, "a");
        let mut b = node(&store, "b");
        let web = labels(&["app=web"]);
        let (id, new) = a.alloc.acquire(&web).unwrap();
        assert!(new && id >= 256);
        assert_eq!(b.alloc.acquire(&web).unwrap(), (id, true));
        let (db, _) = b.alloc.acquire(&labels(&["app=db"])).unwrap();
        assert_ne!(db, id);
        // a lets go: b still uses it, so it stays in the store.
        assert!(!a.alloc.release(id));
        assert!(store.get(&id_key(id)).unwrap().is_some());
        // a node that learns of it (a watch) sees the same labels.
        let mut c = node(&store, "c");
        assert_eq!(c.alloc.lookup(&web), Some(id));
        assert!(b.alloc.release(id), "the last user frees it");
        assert!(store.get(&id_key(id)).unwrap().is_none());
        assert!(store.get(&labels_key(&web)).unwrap().is_none());
        assert!(c.alloc.forget(id).is_some());
        // The number is free again for other labels.
        assert_eq!(c.alloc.acquire(&labels(&["app=api"])).unwrap().0, id);
    }

    /// A node that dies takes its uses with its lease; collecting removes
    /// identities nobody uses any more.
    #[test]
    fn a_dead_nodes_identities_are_collected() {
        let store = MemKv::default();
        let mut a = node(&store, "a");
        let (id, _) = a.alloc.acquire(&labels(&["app=web"])).unwrap();
        let b = node(&store, "b");
        assert_eq!(b.alloc.collect().unwrap(), 0, "a still uses it");
        store.expire_lease(a.lease.id());
        assert_eq!(b.alloc.collect().unwrap(), 1);
        assert!(store.get(&id_key(id)).unwrap().is_none());
    }

    /// Nodes racing for numbers never get the same one for different labels.
    #[test]
    fn racing_nodes_never_share_a_number() {
        let store = MemKv::default();
        let ids: Vec<(String, u32)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|n| {
                    let store = store.clone();
                    s.spawn(move || {
                        let mut me = node(&store, &format!("n{n}"));
                        (0..20)
                            .map(|i| {
                                let l = format!("app=a{n}-{i}");
                                (l.clone(), me.alloc.acquire(&labels(&[&l])).unwrap().0)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut numbers: Vec<u32> = ids.iter().map(|(_, id)| *id).collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), ids.len(), "two label sets share a number");
    }

    /// CIDR identities stay on the node: nothing of them reaches the store.
    #[test]
    fn cidr_identities_stay_local() {
        let store = MemKv::default();
        let mut a = node(&store, "a");
        let c = pilus_policy::cidr::parse("198.19.0.0/16").unwrap();
        let (id, _) = a.alloc.acquire_cidr(&c).unwrap();
        assert!(id >= 1 << 24);
        assert!(store
            .list(&format!("{ROOT}identities/"))
            .unwrap()
            .0
            .is_empty());
        assert!(a.alloc.get(id).is_some());
        assert!(a.alloc.get(2).is_some(), "reserved identities are there");
    }
}
