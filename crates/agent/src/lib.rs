//! pilusd, the Pilus agent, as a library: the control plane
//! (`pilus_controlplane`) wired to the real datapath ([`datapath`]) and to
//! rtnetlink ([`plumbing`]), the monitor's event ring and what its events
//! name ([`names`]), the REST API server ([`api`], axum on hyper over a
//! unix socket), the Prometheus metrics ([`metrics`], on a TCP address) and
//! `pilus doctor`'s checks ([`doctor`]), both reading the datapath through
//! [`view`], and `pilus trace` ([`trace`]).

pub mod api;
pub mod datapath;
pub mod doctor;
pub mod flows;
pub mod metrics;
pub mod monitor;
pub mod names;
pub mod node;
pub mod plumbing;
pub mod prefilter;
pub mod trace;
pub mod view;
