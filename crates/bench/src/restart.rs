//! Agent start time with endpoints restored: a private pilusd is stopped
//! (SIGTERM, datapath and pods left running) and started again on its
//! state and pins, timed from its start until it answers
//! `GET /v1/status` — it serves the API only once it has loaded the
//! programs, restored every endpoint and resynced the pinned maps. The
//! baseline, in the same run on the same agent: the same restart with no
//! endpoints, before any is made.

use crate::{agent::Agent, error::Context, stats::Latency, Error};
use pilus_api_types::{paths, EndpointCreate, EndpointCreated, Status};
use pilus_netns::NetNs;
use serde::Serialize;
use std::{path::PathBuf, time::Duration};

/// The agent's pod CIDR: room for 1,000 endpoints.
const POD_CIDR: &str = "198.18.0.0/22";
pub const MAX_ENDPOINTS: usize = 1000;

#[derive(Clone, Debug, Serialize)]
pub struct Options {
    /// Endpoints restored (each a veth pair into a namespace of its own).
    pub endpoints: usize,
    /// Restarts timed, with and without the endpoints.
    pub restarts: usize,
    pub pilusd: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub endpoints: usize,
    /// Baseline: restarts of the same agent with no endpoints.
    pub empty: Latency,
    pub restored: Latency,
    /// Median with the endpoints over median without.
    pub ratio_p50: f64,
    /// What the last restart's resync had to change in the pinned maps
    /// (0/0: the datapath was as the state said).
    pub resync_written: usize,
    pub resync_removed: usize,
}

/// Runs the benchmark. Needs root (namespaces, veths, bpffs).
pub fn run(opts: &Options) -> Result<Report, Error> {
    crate::require_root("restart", "namespaces, veths, bpffs")?;
    if opts.restarts == 0 || opts.endpoints == 0 || opts.endpoints > MAX_ENDPOINTS {
        return Err(Error::Options {
            option: "endpoints/restarts",
            reason: format!(
                "need 1-{MAX_ENDPOINTS} endpoints and at least one restart, not {} / {}",
                opts.endpoints, opts.restarts
            ),
        });
    }
    let mut agent = Agent::start(&opts.pilusd, "b13s", POD_CIDR)?;
    pilus_netns::remove_stale("b13e").context("removing a killed run's namespaces")?;
    let times = |agent: &mut Agent, want: usize| -> Result<Vec<Duration>, Error> {
        let mut v = Vec::new();
        for _ in 0..opts.restarts {
            v.push(agent.restart()?);
            let s: Status = agent
                .client()
                .get_json(paths::STATUS)
                .context("GET /v1/status")?;
            if s.endpoints != want {
                return Err(Error::Unexpected {
                    what: format!(
                        "the restarted agent has {} endpoints, not {want}",
                        s.endpoints
                    ),
                });
            }
        }
        Ok(v)
    };
    tracing::info!(restarts = opts.restarts, "restarting with no endpoints");
    let empty = times(&mut agent, 0)?;
    tracing::info!(endpoints = opts.endpoints, "creating endpoints");
    let c = agent.client();
    let mut pods = Vec::new();
    for i in 0..opts.endpoints {
        let ns = NetNs::new("b13e").context("creating a pod's namespace")?;
        let _: EndpointCreated = c
            .post_json(
                paths::ENDPOINTS,
                &EndpointCreate {
                    container_id: format!("b13-restore-{i}"),
                    netns: ns.path().display().to_string(),
                    namespace: "bench".into(),
                    pod_name: Some(format!("r{i}")),
                    labels: vec![format!("app=r{}", i % 10)],
                    ..Default::default()
                },
            )
            .context(format!("creating endpoint {i}"))?;
        pods.push(ns);
    }
    tracing::info!(restarts = opts.restarts, "restarting with the endpoints");
    let restored = times(&mut agent, opts.endpoints)?;
    let s: Status = agent
        .client()
        .get_json(paths::STATUS)
        .context("GET /v1/status")?;
    // The agent first (it must not see its pods go), then the pods.
    drop(agent);
    drop(pods);
    let summary = |v| Latency::of(v).expect("at least one restart (checked)");
    let (empty, restored) = (summary(empty), summary(restored));
    Ok(Report {
        bench: "restart",
        endpoints: opts.endpoints,
        ratio_p50: restored.p50_ms / empty.p50_ms,
        empty,
        restored,
        resync_written: s.resync_written,
        resync_removed: s.resync_removed,
    })
}
