//! CNI ADD and DEL latency, as a container runtime sees it (`pilus-cni`
//! exec'd in the node's namespace with `CNI_*` variables and the network
//! configuration on stdin), on a one-node lab with a private pilusd. Pods
//! are bare namespaces attached one after another, as kubelet does.
//!
//! Two baselines are measured in the same run, interleaved pod by pod with
//! the CNI calls so that load from elsewhere on the machine hits all three
//! alike:
//! - the plumbing any CNI plugin must do, in-process over rtnetlink from the
//!   node's namespace: the veth pair into a fresh pod namespace, the pod
//!   side's address and routes (`pilus_netlink::pod::{create, configure}`),
//!   and deleting the pair again;
//! - starting the plugin at all: `pilus-cni` with `CNI_COMMAND=VERSION`
//!   (fork, exec, dynamic loading, stdin/stdout), which does no work.
//!
//! Every ADD must print an address, and after the DELs no host veth and no
//! agent endpoint may be left, or the benchmark fails.

use crate::{error::Context, stats::Latency, Error};
use pilus_api_types::{self as api, paths};
use pilus_lab::{cni, Lab, LabError, Paths, Plan, PodPlan, Teardown};
use pilus_netlink::{pod, Netlink};
use pilus_netns::NetNs;
use serde::Serialize;
use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::AsFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Namespace prefix of the bench's lab (node, underlay, pods, baselines).
const PREFIX: &str = "pbcni";
/// The node every pod is attached to (`Plan::new` names it).
const NODE: &str = "node-1";
/// CNI ADD's p99 target, in ms.
pub const TARGET_ADD_P99_MS: f64 = 50.0;
/// Address and gateway of the baseline pods: each is alone in its
/// namespace, so they never meet the CNI pods' addresses.
const BASE_NET: [u8; 3] = [198, 18, 250];
/// Untimed plugin runs first, so the first timed one does not pay for
/// reading the binary from disk.
const WARMUP_EXECS: usize = 3;
/// The most pods: the baseline's addresses are one /24.
pub const MAX_PODS: u32 = 200;

#[derive(Clone, Debug, Serialize)]
pub struct Options {
    /// Pods attached (ADD) and then detached (DEL), one at a time.
    pub pods: u32,
    /// Where `pilusd`, `pilus-cni` and `pilus` are (the lab runs them).
    pub bin_dir: PathBuf,
}

/// Where the median ADD's time goes: the median exec of a plugin that does
/// nothing, the median in-process plumbing, and the rest (the plugin's two
/// agent round trips, GET status and POST endpoint, and the agent's work
/// behind them: IPAM, identity, BPF maps, TCX attach and pin).
#[derive(Clone, Debug, Serialize)]
pub struct Breakdown {
    pub exec_ms: f64,
    pub plumbing_ms: f64,
    pub agent_and_rest_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub pods: u32,
    pub add: Latency,
    pub del: Latency,
    /// Baseline (a): veth pair + pod address and routes, in-process.
    pub plumbing_create: Latency,
    /// Baseline (a): deleting the veth pair, in-process.
    pub plumbing_delete: Latency,
    /// Baseline (b): exec of `pilus-cni` with CNI_COMMAND=VERSION.
    pub exec_version: Latency,
    pub add_p99_to_plumbing_p99: f64,
    pub add_p50_to_plumbing_p50: f64,
    pub del_p99_to_plumbing_delete_p99: f64,
    pub add_p50_breakdown: Breakdown,
    pub target_add_p99_ms: f64,
    pub add_meets_target: bool,
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Baseline (a), create: what a plugin process must do at the least, from
/// opening the pod's namespace and an rtnetlink socket to the default route.
/// Runs on a thread inside the node's namespace, as the plugin does.
fn plumb_create(
    netns: &Path,
    host_ifname: &str,
    ip: Ipv4Addr,
    gw: Ipv4Addr,
) -> Result<Duration, Error> {
    let t = Instant::now();
    let ns = File::open(netns).context(format!("opening {}", netns.display()))?;
    let what = "baseline: veth pair, address and routes in-process";
    let mut nl = Netlink::open().context(what)?;
    let pair = pod::create(&mut nl, host_ifname, ns.as_fd(), "eth0").context(what)?;
    pod::configure(ns.as_fd(), "eth0", ip, gw, None).context(what)?;
    pod::route_host(&mut nl, ip, pair.host.index).context(what)?;
    Ok(t.elapsed())
}

/// Baseline (a), delete: the host side goes, taking the pod side with it.
fn plumb_delete(host_ifname: &str) -> Result<Duration, Error> {
    let t = Instant::now();
    let what = "baseline: deleting the veth pair in-process";
    let mut nl = Netlink::open().context(what)?;
    if !nl.delete_link(host_ifname).context(what)? {
        return Err(Error::Unexpected {
            what: format!("baseline link {host_ifname} was already gone"),
        });
    }
    Ok(t.elapsed())
}

/// Baseline (b): the plugin started the way ADD starts it (same namespace,
/// same stdio), asked only for its versions.
fn exec_version(plugin: &Path, node_ns: &Path) -> Result<Duration, Error> {
    let out = cni::invoke(&cni::Call {
        plugin,
        run_in: Some(node_ns),
        env: vec![("CNI_COMMAND".into(), "VERSION".into())],
        stdin: br#"{"cniVersion":"1.0.0"}"#.to_vec(),
    })
    .context(format!("running {}", plugin.display()))?;
    if !out.success {
        return Err(Error::Unexpected {
            what: format!("pilus-cni VERSION failed: {}", out.error_msg()),
        });
    }
    Ok(out.elapsed)
}

fn add(lab: &Lab, pod: &PodPlan) -> Result<Duration, Error> {
    let out = lab
        .cni("ADD", pod)
        .context(format!("CNI ADD for {}", pod.name))?;
    let address = out
        .json
        .as_ref()
        .and_then(|j| j["ips"][0]["address"].as_str());
    match (out.success, address) {
        (true, Some(_)) => Ok(out.elapsed),
        (false, _) => Err(Error::Unexpected {
            what: format!("CNI ADD for {} failed: {}", pod.name, out.error_msg()),
        }),
        (true, None) => Err(Error::Unexpected {
            what: format!(
                "CNI ADD for {} printed no address: {}",
                pod.name, out.stdout
            ),
        }),
    }
}

fn del(lab: &Lab, pod: &PodPlan) -> Result<Duration, Error> {
    let out = lab
        .cni("DEL", pod)
        .context(format!("CNI DEL for {}", pod.name))?;
    if !out.success {
        return Err(Error::Unexpected {
            what: format!("CNI DEL for {} failed: {}", pod.name, out.error_msg()),
        });
    }
    Ok(out.elapsed)
}

/// Runs the benchmark. Needs root (namespaces, eBPF); the lab's pilusd,
/// pilus-cni and pilus must be in `opts.bin_dir`.
pub fn run(opts: &Options) -> Result<Report, Error> {
    crate::require_root("cni", "namespaces, eBPF")?;
    if !(1..=MAX_PODS).contains(&opts.pods) {
        return Err(Error::Options {
            option: "pods",
            reason: format!("must be 1 to {MAX_PODS}, not {}", opts.pods),
        });
    }
    let paths = Paths {
        dir: std::env::temp_dir().join("pilus-bench-cni"),
        pins: PathBuf::from("/sys/fs/bpf/pilus-bench-cni"),
        bin_dir: opts.bin_dir.clone(),
        prefix: PREFIX.into(),
    };
    // A run killed by a signal never ran its teardown: sweep it first
    // (`up` refuses a lab whose state file is still there).
    Lab::down(&paths).context("removing a killed run's lab")?;
    let _teardown = Teardown(paths.clone());
    tracing::info!("starting pilusd in a one-node lab");
    let plan = Plan::new(PREFIX, 1, 0)
        .map_err(LabError::from)
        .context("planning the lab")?;
    let lab = Lab::up(paths, plan).context("bringing the lab up")?;
    let plugin = lab.paths.binary("pilus-cni").context("the CNI plugin")?;
    let node = lab.node(NODE).ok_or_else(|| Error::Unexpected {
        what: format!("the lab has no {NODE}"),
    })?;
    let node_ns = netns_path(&node.netns);
    let pods = Plan::new(PREFIX, 1, opts.pods)
        .map_err(LabError::from)
        .context("planning the pods")?
        .pods;

    // Declared after the teardown guard, so dropped (deleted) before it.
    let mut namespaces: Vec<NetNs> = Vec::new();
    tracing::info!(
        pods = pods.len(),
        "creating pod namespaces (+ as many for the baseline)"
    );
    for (i, p) in pods.iter().enumerate() {
        let what = "creating the pods' namespaces";
        namespaces.push(NetNs::named(&p.netns).context(what)?);
        namespaces.push(NetNs::named(&format!("{PREFIX}-plumb{i}")).context(what)?);
    }

    for _ in 0..WARMUP_EXECS {
        exec_version(&plugin, &node_ns)?;
    }
    let gw = Ipv4Addr::new(BASE_NET[0], BASE_NET[1], BASE_NET[2], 1);
    let (mut t_add, mut t_del, mut t_pc, mut t_pd, mut t_exec) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    tracing::info!(pods = pods.len(), "measuring the ADDs, then the DELs");
    {
        // The baseline's rtnetlink sockets and sysctl writes must act in the
        // node's namespace, where pilus-cni runs (the plugin calls enter it
        // themselves).
        let _in_node =
            pilus_netlink::netns::enter_path(&node_ns).context("entering the node's namespace")?;
        for (i, p) in pods.iter().enumerate() {
            let ip = Ipv4Addr::new(BASE_NET[0], BASE_NET[1], BASE_NET[2], 2 + i as u8);
            t_pc.push(plumb_create(
                &netns_path(&format!("{PREFIX}-plumb{i}")),
                &format!("pbb{i}"),
                ip,
                gw,
            )?);
            t_exec.push(exec_version(&plugin, &node_ns)?);
            t_add.push(add(&lab, p)?);
        }
        for (i, p) in pods.iter().enumerate() {
            t_pd.push(plumb_delete(&format!("pbb{i}"))?);
            t_del.push(del(&lab, p)?);
        }
        // DEL must really have undone ADD, or its time means nothing.
        let mut nl = Netlink::open().context("checking what DEL left")?;
        for p in &pods {
            let host = api::host_ifname(&p.container_id, "eth0");
            if nl.link(&host).context("checking what DEL left")?.is_some() {
                return Err(Error::Unexpected {
                    what: format!("CNI DEL left {host} (pod {}) behind", p.name),
                });
            }
        }
    }
    let left: Vec<api::Endpoint> = lab
        .client(NODE)
        .get_json(paths::ENDPOINTS)
        .context("listing the agent's endpoints after every DEL")?;
    if !left.is_empty() {
        return Err(Error::Unexpected {
            what: format!(
                "the agent still has {} endpoints after every DEL",
                left.len()
            ),
        });
    }
    drop(namespaces);

    let summary = |v| Latency::of(v).expect("one sample per pod at least");
    let add = summary(t_add);
    let del = summary(t_del);
    let plumbing_create = summary(t_pc);
    let plumbing_delete = summary(t_pd);
    let exec_version = summary(t_exec);
    Ok(Report {
        bench: "cni",
        pods: opts.pods,
        add_p99_to_plumbing_p99: add.p99_ms / plumbing_create.p99_ms,
        add_p50_to_plumbing_p50: add.p50_ms / plumbing_create.p50_ms,
        del_p99_to_plumbing_delete_p99: del.p99_ms / plumbing_delete.p99_ms,
        add_p50_breakdown: Breakdown {
            exec_ms: exec_version.p50_ms,
            plumbing_ms: plumbing_create.p50_ms,
            agent_and_rest_ms: add.p50_ms - exec_version.p50_ms - plumbing_create.p50_ms,
        },
        target_add_p99_ms: TARGET_ADD_P99_MS,
        add_meets_target: add.p99_ms <= TARGET_ADD_P99_MS,
        add,
        del,
        plumbing_create,
        plumbing_delete,
        exec_version,
    })
}
