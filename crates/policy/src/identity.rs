//! Security identities: the numbers the datapath sees instead of labels.
//! Endpoints with equal security-relevant labels share one identity; the
//! reserved identities are fixed; CIDR identities are local to the node.
//! An identity is released when its last user goes.
//!
//! Who hands out the numbers is the [`Allocator`] trait: [`LocalAllocator`]
//! numbers them in this process (one node); a cluster-wide allocator (the
//! same labels get the same number on every node) implements the same
//! trait over the shared store. The policy engine only asks it.

use crate::{
    cidr::Cidr,
    labels::{Label, Labels, SOURCE_CIDR, SOURCE_RESERVED},
};
use pilus_abi::consts::{
    IDENTITY_CLUSTER_MIN, IDENTITY_HEALTH, IDENTITY_HOST, IDENTITY_INIT, IDENTITY_KUBE_APISERVER,
    IDENTITY_LOCAL_MIN, IDENTITY_REMOTE_NODE, IDENTITY_UNMANAGED, IDENTITY_WORLD,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The reserved identities, as in Cilium.
pub const RESERVED: &[(u32, &str)] = &[
    (IDENTITY_HOST, "host"),
    (IDENTITY_WORLD, "world"),
    (IDENTITY_UNMANAGED, "unmanaged"),
    (IDENTITY_HEALTH, "health"),
    (IDENTITY_INIT, "init"),
    (IDENTITY_REMOTE_NODE, "remote-node"),
    (IDENTITY_KUBE_APISERVER, "kube-apiserver"),
];

/// Cluster identities are 16-bit in Cilium's encoding; stay within it.
const CLUSTER_MAX: u32 = 65535;
const LOCAL_MAX: u32 = (1 << 24) + (1 << 24) - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Reserved,
    /// Labels of pods: allocated from 256.
    Cluster,
    /// A prefix named by a policy: allocated from 1<<24.
    Cidr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub id: u32,
    pub kind: Kind,
    pub labels: Labels,
    /// Users: endpoints for cluster identities, policies for CIDR ones.
    pub refs: usize,
    /// The prefix of a CIDR identity.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cidr: Option<Cidr>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no free {kind:?} identity left")]
    Exhausted { kind: Kind },
    #[error("identity {id} is already held by other labels ({held_by})")]
    Conflict { id: u32, held_by: String },
    #[error("identity {id} is outside the range of {kind:?} identities")]
    OutOfRange { id: u32, kind: Kind },
    /// A cluster-wide allocator could not reach its store (or lost a race
    /// too often); nothing was allocated.
    #[error("the cluster's identity store: {what}")]
    Store {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Hands out identity numbers and keeps the table of the identities known,
/// with their labels (which selectors match against). Every acquisition is
/// one more user of an identity; [`release`](Allocator::release) is one
/// fewer, and the last one frees it.
pub trait Allocator: Send + Sync {
    fn get(&self, id: u32) -> Option<&Identity>;
    fn lookup(&self, labels: &Labels) -> Option<u32>;
    /// Every identity known, reserved ones included, in number order.
    fn iter(&self) -> Box<dyn Iterator<Item = &Identity> + '_>;
    fn len(&self) -> usize;
    /// Whether `id` is free (not reserved, not held).
    fn is_free(&self, id: u32) -> bool;
    /// One more user of the identity of `labels`, allocating one of `kind`
    /// if it is new — numbered `want` if given (a restart keeps its
    /// numbers). Returns (id, newly allocated).
    fn acquire_kind(
        &mut self,
        labels: &Labels,
        kind: Kind,
        want: Option<u32>,
        cidr: Option<Cidr>,
    ) -> Result<(u32, bool), IdentityError>;
    /// One user fewer; true when the identity was freed. Reserved
    /// identities are never freed.
    fn release(&mut self, id: u32) -> bool;

    /// Learns an identity another node allocated (selectors must see it
    /// to resolve rules naming its pods). True if it was not known.
    fn observe(&mut self, id: u32, labels: &Labels) -> bool {
        let _ = (id, labels);
        false
    }

    /// Forgets an identity another node released, unless this node still
    /// uses it. Returns it if it was known and is gone now.
    fn forget(&mut self, id: u32) -> Option<Identity> {
        let _ = id;
        None
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The allocator itself, for an owner that knows its type (to reach
    /// what only that kind of allocator does).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// The identity of a pod's security labels.
    fn acquire(&mut self, labels: &Labels) -> Result<(u32, bool), IdentityError> {
        self.acquire_kind(labels, Kind::Cluster, None, None)
    }

    /// The identity of a policy's CIDR.
    fn acquire_cidr(&mut self, c: &Cidr) -> Result<(u32, bool), IdentityError> {
        self.acquire_kind(&cidr_labels(c), Kind::Cidr, None, Some(*c))
    }

    /// Re-creates an identity with the number it had before a restart, so
    /// the maps written then stay valid.
    fn restore(&mut self, labels: &Labels, id: u32) -> Result<(u32, bool), IdentityError> {
        self.acquire_kind(labels, Kind::Cluster, Some(id), None)
    }

    /// As [`restore`](Self::restore), for a CIDR identity.
    fn restore_cidr(&mut self, c: &Cidr, id: u32) -> Result<(u32, bool), IdentityError> {
        self.acquire_kind(&cidr_labels(c), Kind::Cidr, Some(id), Some(*c))
    }
}

/// The labels of a CIDR identity: the prefix, and `reserved:world` because
/// the prefix is outside the cluster (so `world` selectors match it too).
pub fn cidr_labels(c: &Cidr) -> Labels {
    Labels::from_labels([
        Label::new(SOURCE_CIDR, &c.to_string(), ""),
        Label::new(SOURCE_RESERVED, "world", ""),
    ])
}

/// Numbers identities in this process, lowest free number first, so they
/// stay small and are reused (like Cilium's local allocator).
#[derive(Clone, Debug)]
pub struct LocalAllocator {
    by_id: BTreeMap<u32, Identity>,
    by_labels: HashMap<Labels, u32>,
}

impl Default for LocalAllocator {
    fn default() -> Self {
        LocalAllocator::new()
    }
}

impl LocalAllocator {
    pub fn new() -> LocalAllocator {
        let mut a = LocalAllocator {
            by_id: BTreeMap::new(),
            by_labels: HashMap::new(),
        };
        for &(id, name) in RESERVED {
            let labels = Labels::new().with(SOURCE_RESERVED, name, "");
            a.by_labels.insert(labels.clone(), id);
            a.by_id.insert(
                id,
                Identity {
                    id,
                    kind: Kind::Reserved,
                    labels,
                    refs: 0,
                    cidr: None,
                },
            );
        }
        a
    }

    fn free_id(&self, lo: u32, hi: u32, kind: Kind) -> Result<u32, IdentityError> {
        // The map is ordered: walk the used numbers to the first gap.
        let mut next = lo;
        for &id in self.by_id.range(lo..=hi).map(|(k, _)| k) {
            if id != next {
                break;
            }
            next += 1;
        }
        if next > hi {
            return Err(IdentityError::Exhausted { kind });
        }
        Ok(next)
    }
}

/// The range identities of `kind` are numbered from.
pub fn range(kind: Kind) -> (u32, u32) {
    match kind {
        Kind::Cidr => (IDENTITY_LOCAL_MIN, LOCAL_MAX),
        _ => (IDENTITY_CLUSTER_MIN, CLUSTER_MAX),
    }
}

impl Allocator for LocalAllocator {
    fn get(&self, id: u32) -> Option<&Identity> {
        self.by_id.get(&id)
    }

    fn lookup(&self, labels: &Labels) -> Option<u32> {
        self.by_labels.get(labels).copied()
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Identity> + '_> {
        Box::new(self.by_id.values())
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    fn is_free(&self, id: u32) -> bool {
        !self.by_id.contains_key(&id)
    }

    fn acquire_kind(
        &mut self,
        labels: &Labels,
        kind: Kind,
        want: Option<u32>,
        cidr: Option<Cidr>,
    ) -> Result<(u32, bool), IdentityError> {
        if let Some(&id) = self.by_labels.get(labels) {
            if let Some(w) = want.filter(|&w| w != id) {
                return Err(IdentityError::Conflict {
                    id: w,
                    held_by: self.by_id[&id].labels.to_string(),
                });
            }
            let e = self.by_id.get_mut(&id).expect("indexes agree");
            e.refs += 1;
            return Ok((id, false));
        }
        let (lo, hi) = range(kind);
        let id = match want {
            Some(w) if !(lo..=hi).contains(&w) => {
                return Err(IdentityError::OutOfRange { id: w, kind })
            }
            Some(w) => {
                if let Some(other) = self.by_id.get(&w) {
                    return Err(IdentityError::Conflict {
                        id: w,
                        held_by: other.labels.to_string(),
                    });
                }
                w
            }
            None => self.free_id(lo, hi, kind)?,
        };
        self.by_labels.insert(labels.clone(), id);
        self.by_id.insert(
            id,
            Identity {
                id,
                kind,
                labels: labels.clone(),
                refs: 1,
                cidr,
            },
        );
        Ok((id, true))
    }

    fn release(&mut self, id: u32) -> bool {
        let Some(e) = self.by_id.get_mut(&id) else {
            return false;
        };
        if e.kind == Kind::Reserved {
            return false;
        }
        e.refs = e.refs.saturating_sub(1);
        if e.refs > 0 {
            return false;
        }
        let e = self.by_id.remove(&id).expect("present");
        self.by_labels.remove(&e.labels);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &[&str]) -> Labels {
        Labels::parse_all(s, "k8s").unwrap()
    }

    #[test]
    fn equal_labels_share_and_release_frees() {
        let mut a = LocalAllocator::new();
        assert_eq!(a.acquire(&l(&["app=web"])).unwrap(), (256, true));
        assert_eq!(a.acquire(&l(&["app=db"])).unwrap(), (257, true));
        assert_eq!(a.acquire(&l(&["app=web"])).unwrap(), (256, false));
        assert!(!a.release(256));
        assert!(a.release(256));
        assert!(a.get(256).is_none());
        // The lowest free number is reused.
        assert_eq!(a.acquire(&l(&["app=api"])).unwrap(), (256, true));
        assert!(!a.release(IDENTITY_WORLD));
        assert_eq!(
            a.lookup(&Labels::new().with("reserved", "host", "")),
            Some(1)
        );
    }

    #[test]
    fn cidr_identities_are_local() {
        let mut a = LocalAllocator::new();
        let c = crate::cidr::parse("198.18.0.0/24").unwrap();
        assert_eq!(a.acquire_cidr(&c).unwrap(), (1 << 24, true));
        let id = a.get(1 << 24).unwrap();
        assert_eq!(id.kind, Kind::Cidr);
        assert_eq!(id.cidr, Some(c));
        assert_eq!(
            id.labels.to_strings(),
            vec!["cidr:198.18.0.0/24", "reserved:world"]
        );
    }

    #[test]
    fn restore_keeps_numbers_and_detects_conflicts() {
        let mut a = LocalAllocator::new();
        assert_eq!(a.restore(&l(&["app=web"]), 300).unwrap(), (300, true));
        assert_eq!(a.acquire(&l(&["app=db"])).unwrap(), (256, true));
        assert!(matches!(
            a.restore(&l(&["app=x"]), 300),
            Err(IdentityError::Conflict { id: 300, .. })
        ));
        assert!(matches!(
            a.restore(&l(&["app=y"]), 7),
            Err(IdentityError::OutOfRange { .. })
        ));
    }
}
