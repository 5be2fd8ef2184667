//! Many nodes (issue 10): how fast a new pod becomes known on every other
//! node (propagation through etcd, on a real lab), and what a large
//! cluster costs one real agent (scale, simulated: nodes with no datapath
//! behind them write their pods into etcd as real nodes do).
//!
//! - propagation: a lab of `nodes` nodes in tunnel mode; pods are added
//!   one at a time by CNI ADD, round-robin over the nodes (a tenth of them
//!   with labels no pod had, so their identity is allocated in etcd on the
//!   way); for each, the time from ADD's start and from its return until
//!   every other node's ipcache has the pod. The baseline is CNI ADD
//!   itself, in the same run.
//! - scale: one real agent on a lab etcd; `sim_nodes` simulated nodes
//!   register (leased, as real nodes) and publish `endpoints_per_node`
//!   pods each, plus their identities. Measured: how long the agent takes
//!   to know them all while they are written (watch), its RSS against its
//!   own RSS before (same run), the time one more pod takes to reach it,
//!   and a restart with them all in etcd (listing, not watch).

use crate::{
    error::Context,
    stats::{self, round, Latency},
    Error,
};
use pilus_api_types::{self as api, paths};
use pilus_controlplane::{
    cluster::{ipcache_key, node_key, IpcacheRecord, NodeRecord, Routing as NodeRouting},
    identities::id_key,
    persist::{self, StoredLabels},
};
use pilus_kvstore::{ClusterStore, EtcdConfig, EtcdKv, KvStore, Lease, Txn};
use pilus_lab::{plan::Routing, Lab, LabError, Paths, Plan, PodPlan, Teardown};
use serde::Serialize;
use std::{
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

/// Namespace prefixes of the two labs.
const PROPAGATION_PREFIX: &str = "pbprop";
const SCALE_PREFIX: &str = "pbscale";
/// Issue 10's target for the propagation p99, in ms.
pub const TARGET_PROPAGATION_P99_MS: f64 = 100.0;
/// How long one pod may take to reach every node before the run fails.
const KNOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the scale agent may take to ingest everything.
const INGEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The simulated nodes' leases outlive any run (the lab's etcd goes with
/// the lab).
const SIM_LEASE: Duration = Duration::from_secs(3600);
/// Keys per transaction (etcd's default limit is 128 operations).
const TXN_KEYS: usize = 100;
/// Simulated nodes at most (their pod CIDRs are 198.19.10.0/24 and up).
const MAX_SIM_NODES: u32 = 240;
/// Distinct label sets of the simulated pods.
const SIM_IDENTITIES: u32 = 100;
/// The simulated identities' numbers start here (above what the real
/// agent allocates in a run).
const SIM_IDENTITY_BASE: u32 = 60_000;

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Where pilusd, pilus-cni and pilus are.
    pub bin_dir: PathBuf,
    /// Propagation: nodes of the lab (2 to 8) and pods added (1 to 200).
    pub nodes: u32,
    pub pods: u32,
    /// Scale: simulated nodes (1 to 240) and pods each (1 to 250).
    pub sim_nodes: u32,
    pub endpoints_per_node: u32,
    /// Scale: single pods published after the bulk, timed one by one.
    pub one_more: u32,
}

impl ClusterOptions {
    pub fn new(bin_dir: PathBuf) -> ClusterOptions {
        ClusterOptions {
            bin_dir,
            nodes: 3,
            pods: 100,
            sim_nodes: 100,
            endpoints_per_node: 100,
            one_more: 20,
        }
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |option, reason: &str| {
            Err(Error::Options {
                option,
                reason: reason.into(),
            })
        };
        if !(2..=8).contains(&self.nodes) {
            return bad("--nodes", "2 to 8");
        }
        if !(1..=200).contains(&self.pods) {
            return bad("--pods", "1 to 200");
        }
        if !(1..=MAX_SIM_NODES).contains(&self.sim_nodes) {
            return bad("--sim-nodes", "1 to 240");
        }
        if !(1..=250).contains(&self.endpoints_per_node) {
            return bad("--endpoints-per-node", "1 to 250");
        }
        if !(1..=200).contains(&self.one_more) {
            return bad("--one-more", "1 to 200");
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    pub propagation: Propagation,
    pub scale: Scale,
}

#[derive(Clone, Debug, Serialize)]
pub struct Propagation {
    pub nodes: u32,
    pub pods: u32,
    /// CNI ADD on the pod's node (the baseline).
    pub cni_add: Latency,
    /// From ADD's return until every other node has the pod.
    pub after_add: Latency,
    /// From ADD's start until every other node has the pod.
    pub from_add_start: Latency,
    pub target_p99_ms: f64,
    /// `from_add_start`'s p99 within the target.
    pub met: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Scale {
    pub sim_nodes: u32,
    pub endpoints: u32,
    /// How long writing them into etcd took (the simulated nodes' side).
    pub write_ms: f64,
    /// From the first write until the agent knew every pod.
    pub ingest_ms: f64,
    /// The agent's RSS before (an empty cluster) and after.
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub rss_per_remote_endpoint_bytes: f64,
    /// One more pod, published alone: until the agent knows it.
    pub one_more: Latency,
    /// The agent restarted with everything in etcd: until it answers, and
    /// until it knows every pod again; its RSS then.
    pub restart_ready_ms: f64,
    pub restart_ingest_ms: f64,
    pub restart_rss_kib: u64,
    /// (restart RSS − RSS before) per pod: a fresh agent that read them
    /// all against a fresh agent with none (the RSS right after the bulk
    /// can reuse heap the start-up freed, so it undercounts).
    pub restart_rss_per_remote_endpoint_bytes: f64,
}

fn paths(opts: &ClusterOptions, prefix: &str) -> Paths {
    Paths {
        dir: std::env::temp_dir().join(format!("pilus-bench-{prefix}")),
        pins: PathBuf::from(format!("/sys/fs/bpf/pilus-bench-{prefix}")),
        bin_dir: opts.bin_dir.clone(),
        prefix: prefix.into(),
    }
}

/// A clustered lab (tunnel mode, one etcd member) with no pods yet.
fn lab_up(opts: &ClusterOptions, prefix: &str, nodes: u32) -> Result<(Lab, Teardown), Error> {
    let paths = paths(opts, prefix);
    // A run killed by a signal never ran its teardown.
    Lab::down(&paths).context("removing a killed run's lab")?;
    let teardown = Teardown(paths.clone());
    let plan = Plan::new(prefix, nodes, 0)
        .and_then(|p| p.clustered(Routing::Tunnel, 1, 15))
        .map_err(LabError::from)
        .context("planning the lab")?;
    let lab = Lab::up(paths, plan).context("bringing the lab up")?;
    Ok((lab, teardown))
}

pub fn run(opts: &ClusterOptions) -> Result<ClusterReport, Error> {
    crate::require_root("cluster", "network namespaces, eBPF and a lab etcd")?;
    opts.check()?;
    let propagation = propagation(opts)?;
    let scale = scale(opts)?;
    Ok(ClusterReport { propagation, scale })
}

/// Whether `node`'s ipcache has `ip` from another node.
fn knows(lab: &Lab, node: &str, ip: Ipv4Addr) -> Result<bool, Error> {
    let v: Vec<api::IpcacheEntry> = lab
        .client(node)
        .get_json(paths::IPCACHE)
        .context(format!("reading {node}'s ipcache"))?;
    let prefix = format!("{ip}/32");
    Ok(v.iter()
        .any(|e| e.prefix == prefix && e.sources.iter().any(|s| s.source == "remote-endpoint")))
}

fn propagation(opts: &ClusterOptions) -> Result<Propagation, Error> {
    tracing::info!(
        nodes = opts.nodes,
        "propagation: starting a lab with an etcd"
    );
    let (lab, _teardown) = lab_up(opts, PROPAGATION_PREFIX, opts.nodes)?;
    let nodes: Vec<String> = lab.state.nodes.iter().map(|n| n.name.clone()).collect();
    let (mut add, mut after, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..opts.pods {
        let node = &nodes[i as usize % nodes.len()];
        let name = format!("p{i}");
        let pod = PodPlan {
            netns: format!("{PROPAGATION_PREFIX}-{name}"),
            container_id: format!("{PROPAGATION_PREFIX}-{name}"),
            name,
            node: node.clone(),
            // Every tenth pod brings labels no pod had.
            app: format!("prop{}", i / 10),
        };
        pilus_netns::NetNs::named(&pod.netns)
            .context("creating a pod's namespace")?
            .persist();
        let start = Instant::now();
        let out = lab.cni("ADD", &pod).context("CNI ADD")?;
        let returned = Instant::now();
        if !out.success {
            return Err(Error::Unexpected {
                what: format!("CNI ADD of {} failed: {}", pod.name, out.error_msg()),
            });
        }
        let ip: Ipv4Addr = out
            .json
            .as_ref()
            .and_then(|j| j["ips"][0]["address"].as_str())
            .and_then(|a| a.split('/').next()?.parse().ok())
            .ok_or_else(|| Error::Unexpected {
                what: format!("CNI ADD of {} printed no address", pod.name),
            })?;
        let mut waiting: Vec<&String> = nodes.iter().filter(|n| *n != node).collect();
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for n in waiting {
                if !knows(&lab, n, ip)? {
                    still.push(n);
                }
            }
            waiting = still;
            if start.elapsed() > KNOWN_TIMEOUT {
                return Err(Error::Unexpected {
                    what: format!("{ip} was not known on {waiting:?} within {KNOWN_TIMEOUT:?}"),
                });
            }
        }
        let known = Instant::now();
        add.push(returned - start);
        after.push(known - returned);
        total.push(known - start);
    }
    let none = || Error::Unexpected {
        what: "no pods were measured".into(),
    };
    let from_add_start = Latency::of(total).ok_or_else(none)?;
    Ok(Propagation {
        nodes: opts.nodes,
        pods: opts.pods,
        cni_add: Latency::of(add).ok_or_else(none)?,
        after_add: Latency::of(after).ok_or_else(none)?,
        met: from_add_start.p99_ms <= TARGET_PROPAGATION_P99_MS,
        from_add_start,
        target_p99_ms: TARGET_PROPAGATION_P99_MS,
    })
}

/// An etcd client made inside the lab's underlay namespace (its sockets,
/// and its runtime's threads, stay there).
fn etcd_client(lab: &Lab) -> Result<EtcdKv, Error> {
    let ns = PathBuf::from("/run/netns").join(&lab.state.plan.underlay_netns);
    let url = lab
        .state
        .etcd
        .first()
        .map(|e| e.url.clone())
        .ok_or_else(|| Error::Unexpected {
            what: "the lab has no etcd".into(),
        })?;
    std::thread::spawn(move || -> Result<EtcdKv, Error> {
        pilus_netlink::netns::enter_path(&ns)
            .map_err(|source| Error::Netlink {
                what: format!("entering {}", ns.display()),
                source,
            })?
            .stay();
        EtcdKv::connect(EtcdConfig::new([url])).context("connecting to the lab's etcd")
    })
    .join()
    .map_err(|_| Error::Unexpected {
        what: "the etcd client's thread panicked".into(),
    })?
}

/// Simulated node `k` (below [`MAX_SIM_NODES`]): underlay 198.19.1.k+1,
/// pods in 198.19.(10+k).0/24 — apart from the lab's own addresses.
fn sim_node(k: u32) -> NodeRecord {
    NodeRecord {
        name: format!("sim-{k}"),
        underlay_ip: Ipv4Addr::new(198, 19, 1, k as u8 + 1),
        pod_cidr: format!("198.19.{}.0/24", 10 + k)
            .parse()
            .expect("a /24 in 198.18.0.0/15"),
        routing: NodeRouting::Tunnel,
    }
}

fn sim_pod(node: &NodeRecord, j: u32) -> Ipv4Addr {
    let o = node.pod_cidr.network().octets();
    Ipv4Addr::new(o[0], o[1], o[2], (j + 2) as u8)
}

fn sim_record(node: &NodeRecord, j: u32) -> IpcacheRecord {
    IpcacheRecord {
        identity: SIM_IDENTITY_BASE + j % SIM_IDENTITIES,
        node: node.name.clone(),
        tunnel_endpoint: node.underlay_ip,
        pod: None,
    }
}

/// Registers the simulated nodes and publishes their pods, as real nodes
/// do: each node's keys under its own lease, pods in transactions of
/// [`TXN_KEYS`]. Returns the leases (kept, so they are not revoked).
fn simulate(kv: &EtcdKv, opts: &ClusterOptions) -> Result<Vec<Lease>, Error> {
    let mut txn = Txn::new();
    for i in 0..SIM_IDENTITIES {
        let labels = StoredLabels {
            labels: vec![
                format!("k8s:app=sim-{i}"),
                "k8s:io.kubernetes.pod.namespace=sim".into(),
            ],
        };
        txn = txn.put(id_key(SIM_IDENTITY_BASE + i), persist::encode(&labels));
        if (i as usize + 1).is_multiple_of(TXN_KEYS) {
            kv.commit(std::mem::take(&mut txn))
                .context("writing identities")?;
        }
    }
    if !txn.is_empty() {
        kv.commit(txn).context("writing identities")?;
    }
    let mut leases = Vec::new();
    for k in 0..opts.sim_nodes {
        let lease = kv.grant_lease(SIM_LEASE).context("granting a lease")?;
        lease.keep_on_drop();
        let node = sim_node(k);
        let mut txn =
            Txn::new().put_leased(node_key(&node.name), persist::encode(&node), lease.id());
        for j in 0..opts.endpoints_per_node {
            txn = txn.put_leased(
                ipcache_key(sim_pod(&node, j)),
                persist::encode(&sim_record(&node, j)),
                lease.id(),
            );
            if (j as usize + 2).is_multiple_of(TXN_KEYS) {
                kv.commit(std::mem::take(&mut txn))
                    .context("publishing pods")?;
            }
        }
        if !txn.is_empty() {
            kv.commit(txn).context("publishing pods")?;
        }
        leases.push(lease);
    }
    Ok(leases)
}

fn remote_endpoints(lab: &Lab) -> Result<usize, Error> {
    let s: api::Status = lab
        .client("node-1")
        .get_json(paths::STATUS)
        .context("the agent's status")?;
    Ok(s.cluster.map_or(0, |c| c.remote_endpoints))
}

/// Polls until the agent knows `want` remote pods; returns when.
fn wait_remote(lab: &Lab, want: usize, pause: Duration) -> Result<Instant, Error> {
    let start = Instant::now();
    loop {
        if remote_endpoints(lab)? >= want {
            return Ok(Instant::now());
        }
        if start.elapsed() > INGEST_TIMEOUT {
            return Err(Error::Unexpected {
                what: format!(
                    "the agent did not know {want} remote pods within {INGEST_TIMEOUT:?}"
                ),
            });
        }
        std::thread::sleep(pause);
    }
}

fn scale(opts: &ClusterOptions) -> Result<Scale, Error> {
    tracing::info!("scale: starting one agent with a lab etcd");
    let (mut lab, _teardown) = lab_up(opts, SCALE_PREFIX, 1)?;
    let pid = |lab: &Lab| lab.node("node-1").map(|n| n.pid).unwrap_or(0);
    let kv = etcd_client(&lab)?;
    // Let the agent settle (its first publications, the allocator).
    std::thread::sleep(Duration::from_millis(500));
    let rss_before_kib = stats::rss_kib(pid(&lab))?;
    let total = (opts.sim_nodes * opts.endpoints_per_node) as usize;
    tracing::info!(
        nodes = opts.sim_nodes,
        pods = total,
        "scale: the simulated nodes publish their pods"
    );
    let start = Instant::now();
    let writer = std::thread::scope(|s| -> Result<(Duration, Instant), Error> {
        let w = s.spawn(|| -> Result<(Vec<Lease>, Duration), Error> {
            let leases = simulate(&kv, opts)?;
            Ok((leases, start.elapsed()))
        });
        let known = wait_remote(&lab, total, Duration::from_millis(20))?;
        let (leases, wrote) = w.join().map_err(|_| Error::Unexpected {
            what: "the simulated nodes' thread panicked".into(),
        })??;
        drop(leases);
        Ok((wrote, known))
    })?;
    let (write, known) = writer;
    // What the agent keeps, after what it freed settles.
    std::thread::sleep(Duration::from_millis(500));
    let rss_after_kib = stats::rss_kib(pid(&lab))?;
    tracing::info!("scale: one more pod at a time");
    let node = sim_node(0);
    let lease = kv.grant_lease(SIM_LEASE).context("granting a lease")?;
    lease.keep_on_drop();
    let mut one_more = Vec::new();
    for j in 0..opts.one_more {
        let ip = sim_pod(&node, opts.endpoints_per_node + j);
        let t = Instant::now();
        kv.commit(Txn::new().put_leased(
            ipcache_key(ip),
            persist::encode(&sim_record(&node, j)),
            lease.id(),
        ))
        .context("publishing one more pod")?;
        wait_remote(&lab, total + j as usize + 1, Duration::from_micros(500))?;
        one_more.push(t.elapsed());
    }
    let all = total + opts.one_more as usize;
    tracing::info!("scale: restarting the agent with everything in etcd");
    lab.stop_agent("node-1").context("stopping the agent")?;
    let t = Instant::now();
    lab.start_agent_again("node-1")
        .context("starting the agent again")?;
    let ready = t.elapsed();
    let reknown = wait_remote(&lab, all, Duration::from_millis(5))?;
    let restart_rss_kib = stats::rss_kib(pid(&lab))?;
    let endpoints = opts.sim_nodes * opts.endpoints_per_node;
    Ok(Scale {
        sim_nodes: opts.sim_nodes,
        endpoints,
        write_ms: round(write.as_secs_f64() * 1e3, 1),
        ingest_ms: round((known - start).as_secs_f64() * 1e3, 1),
        rss_before_kib,
        rss_after_kib,
        rss_per_remote_endpoint_bytes: round(
            (rss_after_kib.saturating_sub(rss_before_kib) * 1024) as f64 / f64::from(endpoints),
            1,
        ),
        one_more: Latency::of(one_more).ok_or_else(|| Error::Unexpected {
            what: "no single pods were measured".into(),
        })?,
        restart_ready_ms: round(ready.as_secs_f64() * 1e3, 1),
        restart_ingest_ms: round((reknown - t).as_secs_f64() * 1e3, 1),
        restart_rss_kib,
        restart_rss_per_remote_endpoint_bytes: round(
            (restart_rss_kib.saturating_sub(rss_before_kib) * 1024) as f64
                / f64::from(endpoints + opts.one_more),
            1,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_addresses_stay_in_the_benchmark_range_and_apart() {
        let mut seen = std::collections::BTreeSet::new();
        for k in 0..MAX_SIM_NODES {
            let n = sim_node(k);
            let u = n.underlay_ip.octets();
            assert_eq!(
                (u[0], u[1], u[2]),
                (198, 19, 1),
                "the lab's underlay is 198.19.0.0/24"
            );
            assert!(!n.pod_cidr.contains(&n.underlay_ip));
            for j in [0, 249] {
                let ip = sim_pod(&n, j);
                assert!(n.pod_cidr.contains(&ip));
                assert!(seen.insert(ip));
            }
            let o = n.pod_cidr.network().octets();
            assert!(o[0] == 198 && (o[1] == 18 || o[1] == 19), "{}", n.pod_cidr);
        }
        assert!(ClusterOptions::new(PathBuf::new()).check().is_ok());
        let mut o = ClusterOptions::new(PathBuf::new());
        o.sim_nodes = 0;
        assert!(o.check().is_err());
    }
}
