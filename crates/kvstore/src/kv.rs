//! The store interface: a flat key space of byte values, each with the
//! revision that last changed it, read by key or prefix and changed by
//! transactions that apply all their operations or none (optionally only
//! if their comparisons hold). etcd offers exactly this; the local backend
//! implements the same semantics.
//!
//! This module also owns what every backend checks before it touches
//! anything ([`Txn::check`]): well-formed keys, and no key written twice in
//! one transaction. etcd refuses the latter, so the local backends refuse it
//! too; code tested against them then behaves the same on etcd.

/// A store-wide counter, bumped by every transaction that changes something.
pub type Revision = u64;

/// A lease of the cluster store: keys put with it are deleted by the store
/// when the lease expires (its holder stopped renewing it) or is revoked.
/// Only the cluster store has leases (see `ClusterStore`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // etcdctl prints lease ids in hex; the same form finds them there.
        write!(f, "{:x}", self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the transaction that last wrote the key.
    pub mod_revision: Revision,
}

/// A condition a transaction checks before it applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// No value is stored under the key.
    Absent(String),
    /// The key holds exactly this value.
    Equals(String, Vec<u8>),
    /// The key was last written at this revision (0: absent).
    ModRevision(String, Revision),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Writes `value` under `key`; with a `lease`, the store deletes the key
    /// when the lease ends. Only a `ClusterStore` has leases (etcd, and
    /// `MemKv` as its fake); `LocalKv` refuses a leased put rather than keep
    /// forever a key meant to vanish.
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    DeletePrefix {
        prefix: String,
    },
}

/// Operations applied together, if every comparison holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub when: Vec<Compare>,
    pub then: Vec<Op>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    pub fn when(mut self, c: Compare) -> Txn {
        self.when.push(c);
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Txn {
        self.then.push(Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        });
        self
    }

    /// A put attached to `lease`: the key goes when the lease does.
    pub fn put_leased(
        mut self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Txn {
        self.then.push(Op::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        });
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Txn {
        self.then.push(Op::Delete { key: key.into() });
        self
    }

    pub fn delete_prefix(mut self, prefix: impl Into<String>) -> Txn {
        self.then.push(Op::DeletePrefix {
            prefix: prefix.into(),
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.then.is_empty()
    }

    /// What every backend checks before it applies (or sends) anything:
    /// every key well-formed (prefixes may be empty: all keys), and no key
    /// written twice — two puts of one key, or a put of a key that a delete
    /// in the same transaction also covers. etcd refuses such a transaction
    /// ("duplicate key given in txn request"), because its operations are
    /// not ordered; the local backends refuse it too, so that code tested
    /// against them does not fail on etcd. Deleting a key twice is fine.
    pub fn check(&self) -> Result<(), KvError> {
        for c in &self.when {
            match c {
                Compare::Absent(k) | Compare::Equals(k, _) | Compare::ModRevision(k, _) => {
                    check_key(k)?
                }
            }
        }
        let mut puts = std::collections::BTreeSet::new();
        for op in &self.then {
            match op {
                Op::Put { key, .. } => {
                    check_key(key)?;
                    if !puts.insert(key.as_str()) {
                        return Err(KvError::DuplicateKey { key: key.clone() });
                    }
                }
                Op::Delete { key } => check_key(key)?,
                Op::DeletePrefix { prefix } => check_prefix(prefix)?,
            }
        }
        for op in &self.then {
            let covered = match op {
                Op::Put { .. } => None,
                Op::Delete { key } => puts.get(key.as_str()),
                Op::DeletePrefix { prefix } => puts
                    .range(prefix.as_str()..)
                    .next()
                    .filter(|k| k.starts_with(prefix.as_str())),
            };
            if let Some(key) = covered {
                return Err(KvError::DuplicateKey {
                    key: key.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The first leased put, for backends without leases to refuse.
    pub(crate) fn first_leased(&self) -> Option<(&str, LeaseId)> {
        self.then.iter().find_map(|op| match op {
            Op::Put {
                key,
                lease: Some(l),
                ..
            } => Some((key.as_str(), *l)),
            _ => None,
        })
    }
}

/// What a transaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// False when a comparison failed: nothing was applied.
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: Revision,
}

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("the local state store")]
    Local(#[from] crate::Error),
    #[error("key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// Refused before anything was applied; see [`Txn::check`].
    #[error("the transaction writes key {key:?} more than once (etcd refuses this, so every backend does)")]
    DuplicateKey { key: String },
    /// A leased put given to a backend without leases.
    #[error("key {key:?} is put with lease {lease}, but leases need the cluster store (etcd); this backend has none")]
    LeaseUnsupported { key: String, lease: LeaseId },
    /// The store does not know the lease (it expired or was revoked), so
    /// nothing of the transaction was applied.
    #[error("lease {lease} has expired or was revoked")]
    LeaseNotFound {
        lease: LeaseId,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store is not reachable, or did not answer in time: nothing is
    /// known about whether a write was applied.
    #[error("the store is not reachable: {what}")]
    Unavailable {
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The store answered and refused the request (e.g. etcd's limits on
    /// operations per transaction or request size): nothing was applied.
    #[error("the store refused {what}")]
    Rejected {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store's client settings cannot work (e.g. an endpoint that is no
    /// URL).
    #[error("cannot set up the store client: {what}")]
    Config {
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// A key-value store with etcd's semantics. Calls block; the agent makes
/// them off its async workers.
///
/// What every backend guarantees (the contract test in
/// `tests/etcd.rs` runs against each): a transaction applies whole or not
/// at all; a failed comparison applies nothing and keeps the revision; the
/// revision never decreases, rises with every transaction that changes a
/// key, and is the `mod_revision` of the keys that transaction wrote;
/// deleting absent keys changes nothing; lists are in key order; bad keys
/// and duplicate writes are refused before anything is applied or sent.
///
/// Where backends differ: etcd makes a new revision for every successful
/// transaction that puts, even a put of the value a key already holds (the
/// local backends keep the revision then); etcd limits a transaction to
/// `--max-txn-ops` operations (128 by default) and a request to
/// `--max-request-bytes` (1.5 MiB), answered with [`KvError::Rejected`];
/// the local store keeps only UTF-8 values; `LocalKv` has no leases.
pub trait KvStore: Send + Sync {
    /// Every key under `prefix` (in key order) and the revision read at.
    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), KvError>;

    fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError>;

    /// Applies `txn` whole if its comparisons hold, else nothing.
    fn commit(&self, txn: Txn) -> Result<Committed, KvError>;
}

/// Keys are printable ASCII without spaces, so that every backend (and a
/// person reading the state) sees the same key.
pub(crate) fn check_key(key: &str) -> Result<(), KvError> {
    let reason = if key.is_empty() {
        "must not be empty"
    } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
        "must be printable ASCII without spaces"
    } else {
        return Ok(());
    };
    Err(KvError::InvalidKey {
        key: key.to_string(),
        reason,
    })
}

/// A prefix is a key that may be empty (every key).
pub(crate) fn check_prefix(prefix: &str) -> Result<(), KvError> {
    if prefix.is_empty() {
        Ok(())
    } else {
        check_key(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_written_twice_is_refused() {
        let dup = |t: Txn| match t.check() {
            Err(KvError::DuplicateKey { key }) => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(dup(Txn::new().put("a/1", "x").put("a/1", "y")), "a/1");
        assert_eq!(dup(Txn::new().put("a/1", "x").delete("a/1")), "a/1");
        assert_eq!(dup(Txn::new().delete_prefix("a/").put("a/1", "x")), "a/1");
        assert_eq!(dup(Txn::new().delete_prefix("").put("b", "x")), "b");
        // Disjoint writes, and deletes that overlap each other, are fine.
        Txn::new()
            .delete_prefix("a/")
            .delete("a/1")
            .put("a", "x")
            .put("b/1", "y")
            .check()
            .unwrap();
    }

    #[test]
    fn every_key_of_a_transaction_is_checked() {
        for bad in [
            Txn::new().when(Compare::Absent("a b".into())),
            Txn::new().delete(""),
            Txn::new().delete_prefix("a\tb"),
            Txn::new().put("ok", "1").put("\u{e9}", "x"),
        ] {
            assert!(
                matches!(bad.check(), Err(KvError::InvalidKey { .. })),
                "{bad:?}"
            );
        }
    }
}
