//! Pilus's benchmarks: measurements, never assertions. Each area is a
//! module that takes typed options, builds its own hosts (network
//! namespaces in 198.18.0.0/15, a private pilusd where it needs one),
//! measures, removes everything it made (also when it fails), and returns
//! a typed report (serde, for `pilus bench ... -o json`). Every number is
//! reported next to a baseline measured in the same run; nothing here
//! prints: the CLI renders the reports.
//!
//! - [`datapath`]: ns/packet of the pod programs under BPF_PROG_TEST_RUN,
//!   against an empty classifier;
//! - [`cni`]: CNI ADD/DEL latency of `pilus-cni` as a runtime runs it,
//!   against in-process veth plumbing and a bare plugin exec;
//! - [`policy`]: policy change → enforced latency and the agent's memory
//!   per endpoint, against the API's round trip;
//! - [`api`]: `GET /v1/status` latency, threads and RSS of an idle agent
//!   and of the same agent holding 1,000 half-open connections;
//! - [`observe`]: the cost of observability — pod-to-pod TCP_RR and
//!   TCP_STREAM at each monitor aggregation level, against trace events
//!   compiled out and bare veth routing;
//! - [`cluster`]: many nodes — how fast a new pod is known on every node
//!   (against CNI ADD), and one agent's ingest time and memory for a large
//!   simulated cluster (against its own empty-cluster RSS).
//!
//! [`stats`] has the latency summary and the `/proc` readings they share;
//! the private agent of [`policy`] and [`api`] is `agent`'s.
//!
//! All of them need root (BPF, namespaces, bpffs) and say so as an error.

mod agent;
pub mod all;
pub mod api;
pub mod cluster;
pub mod cni;
pub mod datapath;
pub mod docs;
mod error;
pub mod load;
pub mod machine;
pub mod observe;
pub mod plot;
pub mod policy;
pub mod restart;
pub mod stats;
pub mod traffic;

pub use error::Error;

/// Fails unless the process is root: every benchmark needs it.
fn require_root(bench: &'static str, why: &'static str) -> Result<(), Error> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::NotRoot { bench, why });
    }
    Ok(())
}
