//! pilusd, the Pilus agent, as a library: the agent core ([`Agent`]), its
//! persisted state, IPAM, pod plumbing, the datapath behind a trait (so the
//! logic is tested with fakes, without root), the monitor's event ring and
//! the REST API server ([`api`], axum on hyper over a unix socket).

pub mod agent;
pub mod api;
pub mod dp;
mod error;
pub mod ipam;
pub mod monitor;
pub mod plumbing;
pub mod state;
mod views;

pub use agent::{Agent, NodeSettings};
pub use error::AgentError;
