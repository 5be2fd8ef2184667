//! pilusd, the Pilus agent, as a library: the control plane
//! (`pilus_controlplane`) wired to the real datapath ([`datapath`]) and to
//! rtnetlink ([`plumbing`]), the REST routes ([`api`]) and the monitor.

pub mod api;
pub mod datapath;
pub mod monitor;
pub mod plumbing;
