//! Services without syscalls: the model (frontends of four kinds, backends
//! with weights and states, random or Maglev selection, session affinity),
//! its checks (alone, and against the other services and the cluster's pod
//! CIDRs), the Maglev table as Cilium builds it, and the import of
//! Kubernetes `Service` and `EndpointSlice` documents. The control plane
//! turns a [`Service`] into map writes; the CLI parses its flags here.

pub mod check;
mod error;
pub mod k8s;
pub mod maglev;
pub mod model;

pub use check::check_change;
pub use error::Error;
pub use model::{
    selectable, Algorithm, Backend, BackendState, Frontend, FrontendKey, FrontendType, Protocol,
    Service, ServiceId, TrafficPolicy,
};
