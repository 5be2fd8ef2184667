//! Where the control plane keeps its state: the [`KvStore`] trait (keys,
//! byte values, revisions, atomic conditional transactions — the shape of
//! etcd's API, so the cluster backend is etcd itself), [`LocalKv`], the
//! embedded backend a single node uses, and [`MemKv`] for tests.
//!
//! [`LocalKv`] keeps its data with [`store`]: an embedded snapshot +
//! journal in one local directory (CRC-checked records, crash-safe
//! compaction), generic over the state and operation types.

mod error;
mod kv;
mod local;
mod mem;
pub mod store;

pub use error::Error;
pub use kv::{Committed, Compare, KeyValue, KvError, KvStore, Op, Revision, Txn};
pub use local::LocalKv;
pub use mem::MemKv;
pub use store::{Apply, Options, Store};

#[cfg(test)]
mod testutil;
