//! An in-memory store with the same semantics, for tests and for running
//! without persistence. Clones share the keys (as a restarted process
//! would find them on disk). No leases: a leased put is refused.

use crate::kv::{
    check_key, check_prefix, Committed, Compare, KeyValue, KvError, KvStore, Op, Revision, Txn,
};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

/// The store's revision, and each key's value with its mod revision.
type Keys = (Revision, BTreeMap<String, (Vec<u8>, Revision)>);

#[derive(Clone, Default)]
pub struct MemKv {
    inner: Arc<Mutex<Keys>>,
}

impl MemKv {
    /// Transactions committed so far that changed something.
    pub fn revision(&self) -> Revision {
        self.inner.lock().expect("lock").0
    }
}

impl KvStore for MemKv {
    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), KvError> {
        check_prefix(prefix)?;
        let g = self.inner.lock().expect("lock");
        let kvs =
            g.1.range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, (v, r))| KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                    mod_revision: *r,
                })
                .collect();
        Ok((kvs, g.0))
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        check_key(key)?;
        let g = self.inner.lock().expect("lock");
        Ok(g.1.get(key).map(|(v, r)| KeyValue {
            key: key.to_string(),
            value: v.clone(),
            mod_revision: *r,
        }))
    }

    fn commit(&self, txn: Txn) -> Result<Committed, KvError> {
        txn.check()?;
        if let Some((key, lease)) = txn.first_leased() {
            return Err(KvError::LeaseUnsupported {
                key: key.to_string(),
                lease,
            });
        }
        let mut g = self.inner.lock().expect("lock");
        let holds = |c: &Compare| match c {
            Compare::Absent(k) => !g.1.contains_key(k),
            Compare::Equals(k, v) => g.1.get(k).is_some_and(|(x, _)| x == v),
            Compare::ModRevision(k, r) => g.1.get(k).map_or(0, |(_, x)| *x) == *r,
        };
        if !txn.when.iter().all(holds) {
            return Ok(Committed {
                succeeded: false,
                revision: g.0,
            });
        }
        let before = g.1.clone();
        let rev = g.0 + 1;
        for op in txn.then {
            match op {
                Op::Put { key, value, .. } => {
                    if g.1.get(&key).map(|(v, _)| v) != Some(&value) {
                        g.1.insert(key, (value, rev));
                    }
                }
                Op::Delete { key } => {
                    g.1.remove(&key);
                }
                Op::DeletePrefix { prefix } => g.1.retain(|k, _| !k.starts_with(&prefix)),
            }
        }
        if g.1 != before {
            g.0 = rev;
        }
        Ok(Committed {
            succeeded: true,
            revision: g.0,
        })
    }
}
