//! The embedded backend: the whole key space in memory, every committed
//! transaction one line of the snapshot + journal store on local disk (see
//! `store`), so a transaction is durable and atomic exactly as one journal
//! line is. A restart replays the journal to the same keys and revisions.
//! No leases: a single node has no peer to notice it is gone, so a leased
//! put is refused instead of being kept forever.

use crate::kv::{
    check_key, check_prefix, Committed, Compare, KeyValue, KvError, KvStore, Op, Revision, Txn,
};
use crate::store::{Apply, Store};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, path::Path, sync::Mutex};

/// Fold the journal into a snapshot after this many transactions.
const COMPACT_EVERY: usize = 1000;

/// The key space as the snapshot holds it. Values are kept as text: the
/// control plane writes JSON, and the files stay readable.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Keys {
    revision: Revision,
    keys: BTreeMap<String, Stored>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stored {
    value: String,
    rev: Revision,
}

/// One committed transaction, as a journal line.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Batch {
    rev: Revision,
    ops: Vec<BatchOp>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BatchOp {
    Put { key: String, value: String },
    Delete { key: String },
    DeletePrefix { prefix: String },
}

impl Apply<Batch> for Keys {
    fn apply(&mut self, b: &Batch) {
        for op in &b.ops {
            match op {
                BatchOp::Put { key, value } => {
                    self.keys.insert(
                        key.clone(),
                        Stored {
                            value: value.clone(),
                            rev: b.rev,
                        },
                    );
                }
                BatchOp::Delete { key } => {
                    self.keys.remove(key);
                }
                BatchOp::DeletePrefix { prefix } => {
                    self.keys.retain(|k, _| !k.starts_with(prefix.as_str()));
                }
            }
        }
        self.revision = b.rev;
    }
}

impl Keys {
    fn holds(&self, c: &Compare) -> bool {
        match c {
            Compare::Absent(k) => !self.keys.contains_key(k),
            Compare::Equals(k, v) => self.keys.get(k).is_some_and(|s| s.value.as_bytes() == v),
            Compare::ModRevision(k, r) => self.keys.get(k).map_or(0, |s| s.rev) == *r,
        }
    }

    /// Whether `op` would change anything: a transaction that changes
    /// nothing keeps the revision (as etcd does for deletes of absent keys).
    fn changes(&self, op: &BatchOp) -> bool {
        match op {
            BatchOp::Put { key, value } => self.keys.get(key).is_none_or(|s| &s.value != value),
            BatchOp::Delete { key } => self.keys.contains_key(key),
            BatchOp::DeletePrefix { prefix } => self
                .keys
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(prefix.as_str())),
        }
    }
}

struct Inner {
    store: Store<Keys, Batch>,
    keys: Keys,
}

/// The local backend. One process owns the directory.
pub struct LocalKv {
    inner: Mutex<Inner>,
}

impl LocalKv {
    /// Opens (creating) the store in `dir` and replays it.
    pub fn open(dir: &Path) -> Result<LocalKv, KvError> {
        let (mut store, keys) = Store::<Keys, Batch>::open(dir)?;
        // Start from a fresh snapshot: the journal stays short, and files
        // written by an older format are rewritten in the current one.
        store.compact(&keys)?;
        Ok(LocalKv {
            inner: Mutex::new(Inner { store, keys }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the keys half-changed:
        // they are only changed after the journal line is written, in one
        // infallible step.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key_value(key: &str, s: &Stored) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: s.value.as_bytes().to_vec(),
        mod_revision: s.rev,
    }
}

impl KvStore for LocalKv {
    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), KvError> {
        check_prefix(prefix)?;
        let inner = self.lock();
        let kvs = inner
            .keys
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, s)| key_value(k, s))
            .collect();
        Ok((kvs, inner.keys.revision))
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        check_key(key)?;
        Ok(self.lock().keys.keys.get(key).map(|s| key_value(key, s)))
    }

    fn commit(&self, txn: Txn) -> Result<Committed, KvError> {
        txn.check()?;
        if let Some((key, lease)) = txn.first_leased() {
            return Err(KvError::LeaseUnsupported {
                key: key.to_string(),
                lease,
            });
        }
        let mut ops = Vec::with_capacity(txn.then.len());
        for op in txn.then {
            ops.push(match op {
                Op::Put { key, value, .. } => {
                    let value = String::from_utf8(value).map_err(|_| KvError::InvalidKey {
                        key: key.clone(),
                        reason: "the local store keeps text values (UTF-8)",
                    })?;
                    BatchOp::Put { key, value }
                }
                Op::Delete { key } => BatchOp::Delete { key },
                Op::DeletePrefix { prefix } => BatchOp::DeletePrefix { prefix },
            });
        }
        let mut inner = self.lock();
        let revision = inner.keys.revision;
        if !txn.when.iter().all(|c| inner.keys.holds(c)) {
            return Ok(Committed {
                succeeded: false,
                revision,
            });
        }
        if !ops.iter().any(|op| inner.keys.changes(op)) {
            return Ok(Committed {
                succeeded: true,
                revision,
            });
        }
        let batch = Batch {
            rev: revision + 1,
            ops,
        };
        // Written first: if the append fails, memory still equals disk.
        inner.store.append(&batch)?;
        inner.keys.apply(&batch);
        if inner.store.journal_len() >= COMPACT_EVERY {
            let Inner { store, keys } = &mut *inner;
            store.compact(keys)?;
        }
        Ok(Committed {
            succeeded: true,
            revision: batch.rev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pilus-kv-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn transactions_apply_whole_and_survive_a_reopen() {
        let d = dir("txn");
        let kv = LocalKv::open(&d).unwrap();
        let c = kv
            .commit(Txn::new().put("a/1", "x").put("a/2", "y").put("b/1", "z"))
            .unwrap();
        assert_eq!((c.succeeded, c.revision), (true, 1));
        // A failed comparison applies nothing.
        let c = kv
            .commit(
                Txn::new()
                    .when(Compare::Absent("a/1".into()))
                    .put("a/3", "w"),
            )
            .unwrap();
        assert_eq!((c.succeeded, c.revision), (false, 1));
        let c = kv
            .commit(
                Txn::new()
                    .when(Compare::ModRevision("a/1".into(), 1))
                    .when(Compare::Equals("b/1".into(), b"z".to_vec()))
                    .delete_prefix("a/")
                    .put("c/1", "v"),
            )
            .unwrap();
        assert_eq!((c.succeeded, c.revision), (true, 2));
        // Changing nothing keeps the revision.
        assert_eq!(kv.commit(Txn::new().delete("nope")).unwrap().revision, 2);
        assert_eq!(kv.commit(Txn::new().put("c/1", "v")).unwrap().revision, 2);
        drop(kv);
        let kv = LocalKv::open(&d).unwrap();
        let (all, rev) = kv.list("").unwrap();
        assert_eq!(rev, 2);
        let keys: Vec<_> = all
            .iter()
            .map(|k| (k.key.as_str(), k.mod_revision))
            .collect();
        assert_eq!(keys, [("b/1", 1), ("c/1", 2)]);
        assert_eq!(kv.get("c/1").unwrap().unwrap().value, b"v");
        assert!(kv.list("a/").unwrap().0.is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_keys_and_values_change_nothing() {
        let d = dir("bad");
        let kv = LocalKv::open(&d).unwrap();
        for bad in [
            Txn::new().put("ok", "1").put("", "x"),
            Txn::new().put("a b", "x"),
        ] {
            assert!(kv.commit(bad).is_err());
        }
        assert!(kv.commit(Txn::new().put("k", vec![0xff, 0xfe])).is_err());
        let leased = kv.commit(Txn::new().put_leased("k", "v", crate::LeaseId(7)));
        assert!(
            matches!(leased, Err(KvError::LeaseUnsupported { ref key, .. }) if key == "k"),
            "{leased:?}"
        );
        assert_eq!(kv.list("").unwrap(), (vec![], 0));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn compaction_keeps_everything() {
        let d = dir("compact");
        let kv = LocalKv::open(&d).unwrap();
        for i in 0..(COMPACT_EVERY + 10) {
            kv.commit(Txn::new().put(format!("k/{}", i % 50), i.to_string()))
                .unwrap();
        }
        drop(kv);
        let kv = LocalKv::open(&d).unwrap();
        let (all, rev) = kv.list("k/").unwrap();
        assert_eq!((all.len(), rev), (50, (COMPACT_EVERY + 10) as u64));
        assert_eq!(kv.get("k/9").unwrap().unwrap().value, b"1009");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
