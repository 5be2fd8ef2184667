//! Pilus's control plane, without BPF or netlink calls: managers that each
//! own their state — endpoints (records, IPAM, plumbing, the endpoint map),
//! policy (the engine with its identity allocator, the policy map), the
//! ipcache (entries with sources and a fixed precedence), services (the
//! load-balancing maps, changed atomically per frontend) — composed by
//! [`ControlPlane`], which serializes changes, applies them to the datapath
//! through narrow traits ([`datapath`]) and persists each as one transaction
//! of a [`pilus_kvstore::KvStore`]. [`fake`] has in-memory datapath and
//! plumbing, so all of it is tested without root.

pub mod cluster;
pub mod control;
pub mod ctgc;
pub mod datapath;
pub mod endpoints;
mod error;
pub mod fake;
pub mod identities;
mod intern;
pub mod ipam;
pub mod ipcache;
pub mod persist;
pub mod plumbing;
pub mod policy;
pub mod services;
mod sync;
mod validate;
mod views;

pub use control::{ControlPlane, Settings};
pub use error::Error;
pub use views::parse_protocol;
