//! What many nodes need from the store beyond [`KvStore`]: leases that take
//! a node's keys away when the node is gone, watches that follow a prefix
//! from a revision and resume where they were after a disconnect, and the
//! state of the connection (for `pilus status`). This module owns the
//! [`ClusterStore`] trait and its backend-neutral handles ([`Lease`],
//! [`Watch`]); etcd ([`crate::EtcdKv`]) implements it.
//!
//! A trait rather than methods on `EtcdKv`: the managers that keep nodes and
//! identities in the cluster take a `ClusterStore`, so they can be tested
//! without root or etcd against the fake, [`crate::MemKv`], as the rest of
//! the control plane is. One contract test runs against both.

use crate::kv::{KeyValue, KvError, KvStore, LeaseId, Revision};
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        mpsc, Arc, Mutex, MutexGuard,
    },
    time::{Duration, SystemTime},
};

/// A [`KvStore`] shared by the nodes of a cluster. Calls block, like
/// [`KvStore`]'s.
pub trait ClusterStore: KvStore {
    /// Grants a lease of at least `ttl` (etcd counts whole seconds and may
    /// raise a short one to its minimum) and renews it in the background
    /// until the [`Lease`] is revoked or dropped.
    fn grant_lease(&self, ttl: Duration) -> Result<Lease, KvError>;

    /// Follows every key under `prefix` from revision `from` on (0: from
    /// the revision current when this returns). Errors only when the first
    /// watch cannot be set up; after that the watch reconnects by itself.
    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, KvError>;

    /// Whether the store answers, and since when.
    fn connection(&self) -> Connection;
}

/// The connection to the store as its last request (or health check) found
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Nothing has been asked yet.
    Unknown,
    /// The store has answered since `since`.
    Connected { since: SystemTime },
    /// No answer since `since`; `error` is the last failure, for people.
    Unreachable { since: SystemTime, error: String },
}

/// One change under a watched prefix, in revision order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// `kv.key` was written at `kv.mod_revision`.
    Put { kv: KeyValue },
    /// `key` was deleted at `mod_revision` (by a delete, a delete-prefix or
    /// the end of its lease).
    Delete { key: String, mod_revision: Revision },
    /// The events the watch still had to deliver were compacted away (the
    /// store kept history only from `compacted` on), so they cannot be
    /// replayed. `kvs` is every key under the prefix at `revision`:
    /// replace what was built from earlier events with it. Events go on
    /// from `revision + 1`.
    Resync {
        kvs: Vec<KeyValue>,
        revision: Revision,
        compacted: Revision,
    },
}

/// The receiving end of [`ClusterStore::watch`], for blocking code (the
/// `recv`s block the calling thread). Dropping it stops the watch.
///
/// Events are queued without bound while the consumer does not read them:
/// the watch never blocks on its consumer, so it never falls behind the
/// store (where etcd would cancel it).
pub struct Watch {
    rx: mpsc::Receiver<WatchEvent>,
    /// Stops whatever produces the events when dropped.
    _stop: Box<dyn Send>,
}

impl Watch {
    pub(crate) fn new(rx: mpsc::Receiver<WatchEvent>, stop: Box<dyn Send>) -> Watch {
        Watch { rx, _stop: stop }
    }

    /// The next event; `None` once the watch has ended (the store it came
    /// from was dropped).
    pub fn recv(&self) -> Option<WatchEvent> {
        self.rx.recv().ok()
    }

    /// The next event if one comes within `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<WatchEvent, mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// The next event if one is queued.
    pub fn try_recv(&self) -> Result<WatchEvent, mpsc::TryRecvError> {
        self.rx.try_recv()
    }
}

/// How a lease stands, as its keeper last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// The store confirmed the lease at `renewed`: its keys stay at least
    /// until `renewed + ttl`.
    Alive { renewed: SystemTime },
    /// Renewals fail since `since` (the store is unreachable). The store may
    /// still hold the lease; it drops it `ttl` after `renewed` at the latest
    /// unless it restarts meanwhile (etcd then gives every lease a full ttl).
    Unconfirmed {
        since: SystemTime,
        renewed: SystemTime,
    },
    /// The store no longer has the lease (it ran out while the store was
    /// unreachable, or someone revoked it), so its keys are gone. The keeper
    /// grants a new lease and puts the keys back.
    Expired { since: SystemTime },
    /// Revoked or abandoned by its holder: nobody renews it any more.
    Ended,
}

/// A snapshot of [`Lease::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The lease now in use (it changes when the lease is granted anew).
    pub id: LeaseId,
    pub state: LeaseState,
    /// How often the lease expired and was granted anew.
    pub regrants: u64,
}

/// What a lease's holder, its keeper task and the store's commits share.
pub(crate) struct LeaseShared {
    pub(crate) ttl: Duration,
    id: AtomicI64,
    regrants: AtomicU64,
    state: Mutex<LeaseState>,
    /// Keys this process put with the lease, with their values: written
    /// again when the lease is granted anew, since the store deleted them
    /// with the old one.
    keys: Mutex<BTreeMap<String, Vec<u8>>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is a single assignment: a panic
    // elsewhere cannot leave them half-written.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LeaseShared {
    pub(crate) fn new(id: LeaseId, ttl: Duration) -> LeaseShared {
        LeaseShared {
            ttl,
            id: AtomicI64::new(id.0),
            regrants: AtomicU64::new(0),
            state: Mutex::new(LeaseState::Alive {
                renewed: SystemTime::now(),
            }),
            keys: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn id(&self) -> LeaseId {
        LeaseId(self.id.load(Ordering::Acquire))
    }

    pub(crate) fn state(&self) -> LeaseState {
        locked(&self.state).clone()
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.state() == LeaseState::Ended
    }

    pub(crate) fn renewed(&self) {
        let mut s = locked(&self.state);
        if *s != LeaseState::Ended {
            *s = LeaseState::Alive {
                renewed: SystemTime::now(),
            };
        }
    }

    /// A renewal failed for want of an answer.
    pub(crate) fn unconfirmed(&self) {
        let mut s = locked(&self.state);
        if let LeaseState::Alive { renewed } = *s {
            *s = LeaseState::Unconfirmed {
                since: SystemTime::now(),
                renewed,
            };
        }
    }

    /// The store said it does not know the lease.
    pub(crate) fn expired(&self) {
        let mut s = locked(&self.state);
        if matches!(
            *s,
            LeaseState::Alive { .. } | LeaseState::Unconfirmed { .. }
        ) {
            *s = LeaseState::Expired {
                since: SystemTime::now(),
            };
        }
    }

    /// Granted anew as `id`, with every remembered key put back.
    pub(crate) fn regranted(&self, id: LeaseId) {
        self.id.store(id.0, Ordering::Release);
        self.regrants.fetch_add(1, Ordering::Relaxed);
        self.renewed();
    }

    pub(crate) fn end(&self) {
        *locked(&self.state) = LeaseState::Ended;
    }

    pub(crate) fn remember(&self, key: &str, value: &[u8]) {
        locked(&self.keys).insert(key.to_string(), value.to_vec());
    }

    pub(crate) fn forget(&self, key: &str) {
        locked(&self.keys).remove(key);
    }

    pub(crate) fn forget_prefix(&self, prefix: &str) {
        locked(&self.keys).retain(|k, _| !k.starts_with(prefix));
    }

    pub(crate) fn keys(&self) -> BTreeMap<String, Vec<u8>> {
        locked(&self.keys).clone()
    }
}

/// How a backend ends a lease: `true` revokes it (the store deletes its
/// keys now), `false` only stops renewing it.
pub(crate) type EndLease = Box<dyn FnOnce(bool) -> Result<(), KvError> + Send + Sync>;

/// A lease granted by [`ClusterStore::grant_lease`], renewed in the
/// background (every third of its ttl) for as long as this value lives.
///
/// Put keys with it through [`crate::Txn::put_leased`] with [`Lease::id`].
/// If the lease expires anyway (the store was unreachable for longer than
/// the ttl), the keeper grants a new one and puts back every key this
/// process put with it (those that nobody else has created since);
/// [`Lease::status`] shows that, and `id` changes. A commit racing with
/// that gets [`KvError::LeaseNotFound`]: take the new `id` and retry.
///
/// Dropping the lease revokes it, as [`Lease::revoke`] does but without
/// reporting failure (the store then drops it after its ttl).
pub struct Lease {
    shared: Arc<LeaseShared>,
    end: Option<EndLease>,
    /// Set by [`Lease::keep_on_drop`]: dropping abandons instead of
    /// revoking.
    keep: std::sync::atomic::AtomicBool,
}

impl Lease {
    pub(crate) fn new(shared: Arc<LeaseShared>, end: EndLease) -> Lease {
        Lease {
            shared,
            end: Some(end),
            keep: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The lease now in use.
    pub fn id(&self) -> LeaseId {
        self.shared.id()
    }

    /// The ttl the store granted.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    pub fn status(&self) -> LeaseStatus {
        LeaseStatus {
            id: self.shared.id(),
            state: self.shared.state(),
            regrants: self.shared.regrants.load(Ordering::Relaxed),
        }
    }

    /// Stops renewing and revokes the lease: the store deletes its keys now.
    pub fn revoke(mut self) -> Result<(), KvError> {
        self.finish(true)
    }

    /// Stops renewing without revoking, as a crash would: the store deletes
    /// the keys once the ttl has run out. Returns the lease's id.
    pub fn abandon(mut self) -> LeaseId {
        let id = self.id();
        // Only stops the keeper task: nothing to fail.
        let _ = self.finish(false);
        id
    }

    fn finish(&mut self, revoke: bool) -> Result<(), KvError> {
        self.shared.end();
        match self.end.take() {
            Some(end) => end(revoke),
            None => Ok(()),
        }
    }
}

impl Lease {
    /// From now on, dropping the lease abandons it (as [`Lease::abandon`])
    /// instead of revoking it: its keys stay until the ttl runs out. For a
    /// holder shared behind an `Arc` that is stopping for a restart, whose
    /// successor takes the keys over within the ttl.
    pub fn keep_on_drop(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let revoke = !self.keep.load(Ordering::Relaxed);
        if let Err(e) = self.finish(revoke) {
            tracing::warn!(lease = %self.id(), error = %e, "cannot revoke the lease; the store drops it after its ttl");
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("status", &self.status())
            .field("ttl", &self.shared.ttl)
            .finish()
    }
}
