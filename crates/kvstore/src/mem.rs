//! An in-memory store with the same semantics, for tests and for running
//! without persistence. Clones share the keys (as a restarted process
//! would find them on disk).
//!
//! It is also the fake [`ClusterStore`] for root-less tests of what runs
//! on many nodes: leases it granted are accepted on puts (others are
//! [`KvError::LeaseNotFound`], as etcd answers), watches replay its history
//! and follow its commits, and a test plays the cluster's part by hand:
//! [`MemKv::expire_lease`] is a lease running out, [`MemKv::compact`] is
//! etcd's compaction, [`MemKv::set_connection`] an outage. Nothing expires
//! by itself and no lease is granted anew.

use crate::cluster::{ClusterStore, Connection, EndLease, Lease, LeaseShared, Watch, WatchEvent};
use crate::kv::{
    check_key, check_prefix, Committed, Compare, KeyValue, KvError, KvStore, LeaseId, Op, Revision,
    Txn,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{mpsc, Arc, Mutex, MutexGuard, Weak},
    time::{Duration, SystemTime},
};

#[derive(Clone, PartialEq, Eq)]
struct Stored {
    value: Vec<u8>,
    mod_revision: Revision,
    lease: Option<LeaseId>,
}

struct State {
    revision: Revision,
    keys: BTreeMap<String, Stored>,
    /// Every change from `compacted` on, in order, for watches to replay.
    history: Vec<WatchEvent>,
    compacted: Revision,
    /// Live watches: prefix, first revision wanted, where to send.
    watchers: Vec<(String, Revision, mpsc::Sender<WatchEvent>)>,
    /// Granted and not yet ended, with their holders' shared state.
    leases: BTreeMap<LeaseId, Weak<LeaseShared>>,
    next_lease: i64,
    connection: Connection,
}

impl Default for State {
    fn default() -> State {
        State {
            revision: 0,
            keys: BTreeMap::new(),
            history: Vec::new(),
            compacted: 0,
            watchers: Vec::new(),
            leases: BTreeMap::new(),
            next_lease: 1,
            connection: Connection::Connected {
                since: SystemTime::now(),
            },
        }
    }
}

fn event_revision(e: &WatchEvent) -> Revision {
    match e {
        WatchEvent::Put { kv } => kv.mod_revision,
        WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        WatchEvent::Resync { revision, .. } => *revision,
    }
}

fn event_key(e: &WatchEvent) -> &str {
    match e {
        WatchEvent::Put { kv } => &kv.key,
        WatchEvent::Delete { key, .. } => key,
        WatchEvent::Resync { .. } => "",
    }
}

impl State {
    fn list(&self, prefix: &str) -> Vec<KeyValue> {
        self.keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, s)| KeyValue {
                key: k.clone(),
                value: s.value.clone(),
                mod_revision: s.mod_revision,
            })
            .collect()
    }

    /// Records changes made at `self.revision` and hands them to watchers.
    fn publish(&mut self, events: Vec<WatchEvent>) {
        for e in &events {
            self.watchers.retain(|(prefix, from, tx)| {
                let wanted =
                    event_key(e).starts_with(prefix.as_str()) && event_revision(e) >= *from;
                // A watcher whose receiver is gone is dropped.
                !wanted || tx.send(e.clone()).is_ok()
            });
        }
        self.history.extend(events);
    }

    /// Deletes every key of `lease` (its end), as one new revision.
    fn drop_lease(&mut self, lease: LeaseId) {
        self.leases.remove(&lease);
        let gone: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, s)| s.lease == Some(lease))
            .map(|(k, _)| k.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        self.revision += 1;
        let mut events = Vec::with_capacity(gone.len());
        for key in gone {
            self.keys.remove(&key);
            events.push(WatchEvent::Delete {
                key,
                mod_revision: self.revision,
            });
        }
        self.publish(events);
    }
}

#[derive(Clone, Default)]
pub struct MemKv {
    inner: Arc<Mutex<State>>,
}

impl MemKv {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().expect("lock")
    }

    /// Transactions committed so far that changed something.
    pub fn revision(&self) -> Revision {
        self.lock().revision
    }

    /// What etcd does when a lease runs out: its keys are deleted (one
    /// revision, a Delete event each) and its holder sees it
    /// [`crate::LeaseState::Expired`].
    pub fn expire_lease(&self, lease: LeaseId) {
        let mut g = self.lock();
        if let Some(holder) = g.leases.get(&lease).and_then(Weak::upgrade) {
            holder.expired();
        }
        g.drop_lease(lease);
    }

    /// The lease `key` was put with, if any.
    pub fn lease_of(&self, key: &str) -> Option<LeaseId> {
        self.lock().keys.get(key).and_then(|s| s.lease)
    }

    /// Forgets history before `revision`: watches from earlier get
    /// [`WatchEvent::Resync`], as from etcd.
    pub fn compact(&self, revision: Revision) {
        let mut g = self.lock();
        let revision = revision.min(g.revision);
        g.compacted = g.compacted.max(revision);
        let compacted = g.compacted;
        g.history.retain(|e| event_revision(e) >= compacted);
    }

    /// What [`ClusterStore::connection`] reports from now on.
    pub fn set_connection(&self, connection: Connection) {
        self.lock().connection = connection;
    }
}

impl KvStore for MemKv {
    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), KvError> {
        check_prefix(prefix)?;
        let g = self.lock();
        Ok((g.list(prefix), g.revision))
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        check_key(key)?;
        let g = self.lock();
        Ok(g.keys.get(key).map(|s| KeyValue {
            key: key.to_string(),
            value: s.value.clone(),
            mod_revision: s.mod_revision,
        }))
    }

    fn commit(&self, txn: Txn) -> Result<Committed, KvError> {
        txn.check()?;
        let mut g = self.lock();
        let holds = |c: &Compare| match c {
            Compare::Absent(k) => !g.keys.contains_key(k),
            Compare::Equals(k, v) => g.keys.get(k).is_some_and(|s| &s.value == v),
            Compare::ModRevision(k, r) => g.keys.get(k).map_or(0, |s| s.mod_revision) == *r,
        };
        if !txn.when.iter().all(holds) {
            return Ok(Committed {
                succeeded: false,
                revision: g.revision,
            });
        }
        // Leases are checked only once the comparisons hold, as etcd does.
        for op in &txn.then {
            if let Op::Put {
                lease: Some(lease), ..
            } = op
            {
                if !g.leases.contains_key(lease) {
                    return Err(KvError::LeaseNotFound {
                        lease: *lease,
                        source: "the in-memory store granted no such lease".into(),
                    });
                }
            }
        }
        let rev = g.revision + 1;
        let mut events = Vec::new();
        for op in txn.then {
            match op {
                Op::Put { key, value, lease } => {
                    let new = Stored {
                        value,
                        mod_revision: rev,
                        lease,
                    };
                    // An unchanged value keeps its revision here (etcd
                    // would make a new one; see `KvStore`).
                    let same = g
                        .keys
                        .get(&key)
                        .is_some_and(|s| s.value == new.value && s.lease == new.lease);
                    if !same {
                        events.push(WatchEvent::Put {
                            kv: KeyValue {
                                key: key.clone(),
                                value: new.value.clone(),
                                mod_revision: rev,
                            },
                        });
                        g.keys.insert(key, new);
                    }
                }
                Op::Delete { key } => {
                    if g.keys.remove(&key).is_some() {
                        events.push(WatchEvent::Delete {
                            key,
                            mod_revision: rev,
                        });
                    }
                }
                Op::DeletePrefix { prefix } => {
                    let gone: BTreeSet<String> = g
                        .keys
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&prefix))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in gone {
                        g.keys.remove(&key);
                        events.push(WatchEvent::Delete {
                            key,
                            mod_revision: rev,
                        });
                    }
                }
            }
        }
        if !events.is_empty() {
            g.revision = rev;
            g.publish(events);
        }
        Ok(Committed {
            succeeded: true,
            revision: g.revision,
        })
    }
}

impl ClusterStore for MemKv {
    fn grant_lease(&self, ttl: Duration) -> Result<Lease, KvError> {
        let mut g = self.lock();
        let id = LeaseId(g.next_lease);
        g.next_lease += 1;
        let shared = Arc::new(LeaseShared::new(id, ttl));
        g.leases.insert(id, Arc::downgrade(&shared));
        let store = self.clone();
        let end: EndLease = Box::new(move |revoke| {
            if revoke {
                store.lock().drop_lease(id);
            }
            Ok(())
        });
        Ok(Lease::new(shared, end))
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, KvError> {
        check_prefix(prefix)?;
        let mut g = self.lock();
        let (tx, rx) = mpsc::channel();
        if from != 0 && from < g.compacted {
            let kvs = g.list(prefix);
            let _ = tx.send(WatchEvent::Resync {
                kvs,
                revision: g.revision,
                compacted: g.compacted,
            });
        } else if from != 0 {
            for e in g.history.iter().filter(|e| event_revision(e) >= from) {
                if event_key(e).starts_with(prefix) {
                    let _ = tx.send(e.clone());
                }
            }
        }
        g.watchers.push((prefix.to_string(), from, tx));
        // The receiver going away is what ends a watch here.
        Ok(Watch::new(rx, Box::new(())))
    }

    fn connection(&self) -> Connection {
        self.lock().connection.clone()
    }
}
