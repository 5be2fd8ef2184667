//! `pilus bench cni`: CNI ADD and DEL latency, as a container runtime sees
//! it (`pilus-cni` exec'd in the node's namespace with `CNI_*` variables and
//! the network configuration on stdin), on a one-node lab with a private
//! pilusd. Pods are bare namespaces attached one after another, as kubelet
//! does.
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

use crate::Output;
use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use pilus_api_types::{self as api, paths};
use pilus_lab::{cni, Lab, Paths, Plan, PodPlan};
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
const TARGET_ADD_P99_MS: f64 = 50.0;
/// Address and gateway of the baseline pods: each is alone in its
/// namespace, so they never meet the CNI pods' addresses.
const BASE_NET: [u8; 3] = [198, 18, 250];
/// Untimed plugin runs first, so the first timed one does not pay for
/// reading the binary from disk.
const WARMUP_EXECS: usize = 3;

#[derive(Args, Debug)]
pub struct CniArgs {
    /// Pods attached (ADD) and then detached (DEL), one at a time.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=200))]
    pods: u32,
}

#[derive(Serialize)]
struct Latency {
    runs: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn latency(mut v: Vec<Duration>) -> Latency {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| ms(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    Latency {
        runs: v.len(),
        p50_ms: at(0.5),
        p90_ms: at(0.9),
        p99_ms: at(0.99),
        max_ms: ms(*v.last().expect("samples")),
    }
}

/// Where the median ADD's time goes: the median exec of a plugin that does
/// nothing, the median in-process plumbing, and the rest (the plugin's two
/// agent round trips, GET status and POST endpoint, and the agent's work
/// behind them: IPAM, identity, BPF maps, TCX attach and pin).
#[derive(Serialize)]
struct Breakdown {
    exec_ms: f64,
    plumbing_ms: f64,
    agent_and_rest_ms: f64,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    pods: u32,
    add: Latency,
    del: Latency,
    /// Baseline (a): veth pair + pod address and routes, in-process.
    plumbing_create: Latency,
    /// Baseline (a): deleting the veth pair, in-process.
    plumbing_delete: Latency,
    /// Baseline (b): exec of `pilus-cni` with CNI_COMMAND=VERSION.
    exec_version: Latency,
    add_p99_to_plumbing_p99: f64,
    add_p50_to_plumbing_p50: f64,
    del_p99_to_plumbing_delete_p99: f64,
    add_p50_breakdown: Breakdown,
    target_add_p99_ms: f64,
    add_meets_target: bool,
}

/// Removes the lab (agent, pins, namespaces, state) however the bench ends.
struct Teardown(Paths);

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Err(e) = Lab::down(&self.0) {
            eprintln!("pilus bench cni: tearing down the lab: {e}");
        }
    }
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Baseline (a), create: what a plugin process must do at the least, from
/// opening the pod's namespace and an rtnetlink socket to the default route.
/// Runs on a thread inside the node's namespace, as the plugin does.
fn plumb_create(netns: &Path, host_ifname: &str, ip: Ipv4Addr, gw: Ipv4Addr) -> Result<Duration> {
    let t = Instant::now();
    let ns = File::open(netns).with_context(|| format!("open {}", netns.display()))?;
    let mut nl = Netlink::open()?;
    pod::create(&mut nl, host_ifname, ns.as_fd(), "eth0")?;
    pod::configure(ns.as_fd(), "eth0", ip, gw, None)?;
    Ok(t.elapsed())
}

/// Baseline (a), delete: the host side goes, taking the pod side with it.
fn plumb_delete(host_ifname: &str) -> Result<Duration> {
    let t = Instant::now();
    let mut nl = Netlink::open()?;
    ensure!(
        nl.delete_link(host_ifname)?,
        "baseline link {host_ifname} was already gone"
    );
    Ok(t.elapsed())
}

/// Baseline (b): the plugin started the way ADD starts it (same namespace,
/// same stdio), asked only for its versions.
fn exec_version(plugin: &Path, node_ns: &Path) -> Result<Duration> {
    let out = cni::invoke(&cni::Call {
        plugin,
        run_in: Some(node_ns),
        env: vec![("CNI_COMMAND".into(), "VERSION".into())],
        stdin: br#"{"cniVersion":"1.0.0"}"#.to_vec(),
    })
    .with_context(|| format!("running {}", plugin.display()))?;
    ensure!(out.success, "pilus-cni VERSION failed: {}", out.error_msg());
    Ok(out.elapsed)
}

fn add(lab: &Lab, pod: &PodPlan) -> Result<Duration> {
    let out = lab.cni("ADD", pod)?;
    if !out.success {
        bail!("CNI ADD for {} failed: {}", pod.name, out.error_msg());
    }
    let ip = out
        .json
        .as_ref()
        .and_then(|j| j["ips"][0]["address"].as_str());
    ensure!(
        ip.is_some(),
        "CNI ADD for {} printed no address: {}",
        pod.name,
        out.stdout
    );
    Ok(out.elapsed)
}

fn del(lab: &Lab, pod: &PodPlan) -> Result<Duration> {
    let out = lab.cni("DEL", pod)?;
    if !out.success {
        bail!("CNI DEL for {} failed: {}", pod.name, out.error_msg());
    }
    Ok(out.elapsed)
}

pub fn run(a: CniArgs, output: Output) -> Result<()> {
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "pilus bench cni needs root (namespaces, eBPF)"
    );
    let exe = std::env::current_exe().context("locating the pilus binary")?;
    let paths = Paths {
        dir: std::env::temp_dir().join("pilus-bench-cni"),
        pins: PathBuf::from("/sys/fs/bpf/pilus-bench-cni"),
        bin_dir: exe
            .parent()
            .map(PathBuf::from)
            .context("the pilus binary has no directory")?,
        prefix: PREFIX.into(),
    };
    // A run killed by a signal never ran its teardown: sweep it first
    // (`up` refuses a lab whose state file is still there).
    Lab::down(&paths)?;
    let _teardown = Teardown(paths.clone());
    eprintln!("starting pilusd in a one-node lab...");
    let lab = Lab::up(paths, Plan::new(PREFIX, 1, 0)?, false)?;
    let plugin = lab.paths.binary("pilus-cni")?;
    let node_ns = netns_path(
        &lab.node(NODE)
            .context("the lab has no node-1")?
            .netns
            .clone(),
    );
    let pods = Plan::new(PREFIX, 1, a.pods)?.pods;

    // Declared after the teardown guard, so dropped (deleted) before it.
    let mut namespaces: Vec<NetNs> = Vec::new();
    eprintln!(
        "creating {} pod namespaces (+ as many for the baseline)...",
        pods.len()
    );
    for (i, p) in pods.iter().enumerate() {
        namespaces.push(NetNs::named(&p.netns)?);
        namespaces.push(NetNs::named(&format!("{PREFIX}-plumb{i}"))?);
    }

    for _ in 0..WARMUP_EXECS {
        exec_version(&plugin, &node_ns)?;
    }
    let gw = Ipv4Addr::new(BASE_NET[0], BASE_NET[1], BASE_NET[2], 1);
    let (mut t_add, mut t_del, mut t_pc, mut t_pd, mut t_exec) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    eprintln!("measuring {} ADDs, then {} DELs...", pods.len(), pods.len());
    {
        // The baseline's rtnetlink sockets and sysctl writes must act in the
        // node's namespace, where pilus-cni runs (the plugin calls enter it
        // themselves).
        let _in_node = pilus_netlink::netns::enter_path(&node_ns)?;
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
        let mut nl = Netlink::open()?;
        for p in &pods {
            let host = api::host_ifname(&p.container_id, "eth0");
            ensure!(
                nl.link(&host)?.is_none(),
                "CNI DEL left {host} (pod {}) behind",
                p.name
            );
        }
    }
    let left: Vec<api::Endpoint> = lab.client(NODE).get_json(paths::ENDPOINTS)?;
    ensure!(
        left.is_empty(),
        "the agent still has {} endpoints after every DEL",
        left.len()
    );
    drop(namespaces);

    let add = latency(t_add);
    let del = latency(t_del);
    let plumbing_create = latency(t_pc);
    let plumbing_delete = latency(t_pd);
    let exec_version = latency(t_exec);
    let r = Report {
        bench: "cni",
        pods: a.pods,
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
    };
    print(&r, output)
}

fn print(r: &Report, output: Output) -> Result<()> {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!(
        "pilus bench cni: {} pods, one at a time, one node (private pilusd)",
        r.pods
    );
    println!(
        "{:<46} {:>5} {:>8} {:>8} {:>8} {:>8}",
        "case", "runs", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (name, l) in [
        ("CNI ADD (exec pilus-cni, as a runtime does)", &r.add),
        ("CNI DEL", &r.del),
        (
            "baseline: veth + address + routes, in-process",
            &r.plumbing_create,
        ),
        ("baseline: veth delete, in-process", &r.plumbing_delete),
        ("baseline: exec pilus-cni VERSION", &r.exec_version),
    ] {
        println!(
            "{:<46} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            name, l.runs, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
        );
    }
    println!(
        "ADD / plumbing: p99 x{:.1}, p50 x{:.1};  DEL / veth delete: p99 x{:.1}",
        r.add_p99_to_plumbing_p99, r.add_p50_to_plumbing_p50, r.del_p99_to_plumbing_delete_p99
    );
    let b = &r.add_p50_breakdown;
    println!(
        "median ADD {:.2} ms = exec {:.2} + plumbing {:.2} + agent and the rest {:.2}",
        r.add.p50_ms, b.exec_ms, b.plumbing_ms, b.agent_and_rest_ms
    );
    println!(
        "target: ADD p99 <= {} ms: {}",
        r.target_add_p99_ms,
        if r.add_meets_target { "met" } else { "MISSED" }
    );
    Ok(())
}
