//! `pilus lab`: a small cluster on one machine, built from network
//! namespaces and torn down again.
//!
//! - [`plan`]: names and addresses of nodes and pods (pure, all inside
//!   198.18.0.0/15);
//! - [`cni`]: calling a CNI plugin exactly as a runtime does (environment,
//!   stdin, stdout), from inside a chosen namespace;
//! - [`lab`]: `up`, `down`, `status`: node namespaces on an underlay
//!   bridge, an etcd on it when the nodes form a cluster, one pilusd per
//!   node inside its node namespace, pods attached
//!   through `pilus-cni`, a small server in each pod; the state of a lab
//!   is a JSON file, so `down` works from another process (and after a
//!   failed `up`);
//! - [`serve`]: the pods' server and the probe that talks to it;
//! - [`capture`]: what crosses the underlay (VXLAN frames and their VNI);
//! - [`outside`]: a host on the underlay outside the cluster, whose server
//!   tells each client the address it came from (masquerade);
//! - [`demo`]: `pilus lab demo`, the tour on a lab of its own, whose every
//!   claim is checked.
//!
//! Nothing is added to the root namespace: every link and address lives
//! in a namespace the lab created.

pub mod capture;
pub mod cni;
pub mod demo;
pub mod lab;
pub mod outside;
pub mod plan;
pub mod serve;

pub use lab::{Lab, LabError, Paths, Teardown};
pub use plan::{NodePlan, Plan, PodPlan, Routing};
