//! The store interface: a flat key space of byte values, each with the
//! revision that last changed it, read by key or prefix and changed by
//! transactions that apply all their operations or none (optionally only
//! if their comparisons hold). etcd offers exactly this; the local backend
//! implements the same semantics.

/// A store-wide counter, bumped by every transaction that changes something.
pub type Revision = u64;

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
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
    DeletePrefix { prefix: String },
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
    #[error("the store is not reachable: {what}")]
    Unavailable {
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// A key-value store with etcd's semantics. Calls block; the agent makes
/// them off its async workers.
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
