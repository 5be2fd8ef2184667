//! pilusd, the Pilus agent, as a library: the control plane
//! (`pilus_controlplane`) wired to the real datapath ([`datapath`]) and to
//! rtnetlink ([`plumbing`]), the monitor's event ring and what its events
//! name ([`names`]), and the REST API
//! server ([`api`], axum on hyper over a unix socket).

pub mod api;
pub mod datapath;
pub mod monitor;
pub mod names;
pub mod node;
pub mod plumbing;
