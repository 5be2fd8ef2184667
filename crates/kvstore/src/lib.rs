//! Where the control plane keeps its state: the [`KvStore`] trait (keys,
//! byte values, revisions, atomic conditional transactions — the shape of
//! etcd's API, so the cluster backend is etcd itself) and [`LocalKv`], the
//! embedded backend a single node uses, kept on local disk.

mod kv;
mod local;
mod mem;

pub use kv::{Committed, Compare, KeyValue, KvError, KvStore, LeaseId, Op, Revision, Txn};
pub use local::LocalKv;
pub use mem::MemKv;
