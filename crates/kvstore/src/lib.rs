//! Where the control plane keeps its state: the [`KvStore`] trait (keys,
//! byte values, revisions, atomic conditional transactions — the shape of
//! etcd's API, so the cluster backend is etcd itself), [`LocalKv`], the
//! embedded backend a single node uses, kept on local disk, [`EtcdKv`], the
//! backend many nodes share, which is also a [`ClusterStore`] (leases,
//! watches, connection state), and [`MemKv`], in memory, for tests (also the
//! fake `ClusterStore`).
//!
//! [`LocalKv`] keeps its data with [`store`]: an embedded snapshot +
//! journal in one local directory (CRC-checked records, crash-safe
//! compaction), generic over the state and operation types.

mod cluster;
mod error;
mod etcd;
mod kv;
mod local;
mod mem;
pub mod store;

pub use cluster::{ClusterStore, Connection, Lease, LeaseState, LeaseStatus, Watch, WatchEvent};
pub use error::Error;
pub use etcd::{EtcdConfig, EtcdKv};
pub use kv::{Committed, Compare, KeyValue, KvError, KvStore, LeaseId, Op, Revision, Txn};
pub use local::LocalKv;
pub use mem::MemKv;
pub use store::{Apply, Options, Store};

#[cfg(test)]
mod testutil;
