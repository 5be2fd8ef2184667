//! Where the control plane keeps its state: the [`KvStore`] trait (keys,
//! byte values, revisions, atomic conditional transactions — the shape of
//! etcd's API, so the cluster backend is etcd itself), [`LocalKv`], the
//! embedded backend a single node uses, kept on local disk, [`EtcdKv`], the
//! backend many nodes share, which is also a [`ClusterStore`] (leases,
//! watches, connection state), and [`MemKv`], in memory, for tests (also the
//! fake `ClusterStore`).

mod cluster;
mod etcd;
mod kv;
mod local;
mod mem;

pub use cluster::{ClusterStore, Connection, Lease, LeaseState, LeaseStatus, Watch, WatchEvent};
pub use etcd::{EtcdConfig, EtcdKv};

pub use kv::{Committed, Compare, KeyValue, KvError, KvStore, LeaseId, Op, Revision, Txn};
pub use local::LocalKv;
pub use mem::MemKv;
