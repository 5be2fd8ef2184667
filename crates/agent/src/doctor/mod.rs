//! `pilus doctor`: faults of a node that silently bypass or break the
//! datapath, each with what was seen and what to do (`GET /v1/doctor`).
//!
//! The checks run in the agent, not in the CLI: the agent lives in the
//! node's network namespace (its rules, routes, sysctls and devices are the
//! ones that matter, wherever `pilus` runs), holds the pinned maps open
//! (their fill and counters need no root of the caller), and knows what
//! ought to be — its endpoints and their veths, the routing mode, the
//! uplink, the other nodes' pod CIDRs, its etcd connection. The CLI only
//! prints the report and turns a fault into its exit code.
//!
//! - [`facts`]: gathering, in one pass (rtnetlink, `/proc/sys`, the
//!   datapath through [`DatapathView`], the control plane's views);
//! - [`checks`]: one pure function per check over the facts;
//! - [`fib`]: the kernel's route choice over dumped rules and routes.

pub mod checks;
pub mod facts;
pub mod fib;
#[cfg(test)]
mod tests;

use crate::view::DatapathView;
use facts::{Facts, NodeSetup};
use pilus_api_types::DoctorReport;
use pilus_controlplane::ControlPlane;
use std::sync::Arc;

/// The doctor of one agent.
pub struct Doctor {
    cp: Arc<ControlPlane>,
    view: Arc<dyn DatapathView>,
    setup: NodeSetup,
    /// The ring buffer's lost-event count when the agent started: losses
    /// before it are history, losses since are news.
    lost_at_start: Option<u64>,
}

impl Doctor {
    pub fn new(cp: Arc<ControlPlane>, view: Arc<dyn DatapathView>, setup: NodeSetup) -> Doctor {
        let lost_at_start = match view.counters() {
            Ok(c) => Some(c.events_lost),
            Err(e) => {
                tracing::warn!(error = %pilus_datapath::error_chain(&e), "cannot read the lost-event counter");
                None
            }
        };
        Doctor {
            cp,
            view,
            setup,
            lost_at_start,
        }
    }

    /// Every check, now. Blocking (netlink, sysctls, map walks).
    pub fn run(&self) -> DoctorReport {
        let facts = facts::gather(
            &self.cp,
            self.view.as_ref(),
            &self.setup,
            self.lost_at_start,
        );
        report(&facts)
    }
}

/// The report of every check over `facts`.
pub fn report(facts: &Facts) -> DoctorReport {
    let checks = checks::all(facts);
    DoctorReport {
        node_name: facts.node_name.clone(),
        status: checks::worst(checks.iter().map(|c| c.status)),
        checks,
    }
}
