//! Policy change → enforced latency, and the agent's memory, at scale
//! (default 1,000 endpoints and 1,000 rules), on a private pilusd with a
//! real veth pair for every endpoint.
//!
//! The change is timed around the API call that imports one changed rule:
//! pilusd answers only once the new revision's map writes are done.
//! Baselines measured in the same run: the API's round trip (`GET
//! /v1/status`), and `iptables -A` into a chain of as many rules, when
//! iptables is installed. Memory is pilusd's VmRSS before the endpoints,
//! after them and after the rules.
//!
//! Each endpoint is a pod of its own: a namespace, and a veth pair the
//! agent makes (as it does for `POST /v1/endpoints` without a host
//! interface).

use crate::{agent::Agent, error::Context, stats, stats::Latency, Error};
use pilus_api_types::{
    paths, EndpointCreate, EndpointCreated, PolicyFile, PolicyImport, PolicyImported, Status,
};
use pilus_client::blocking::Client;
use pilus_netns::NetNs;
use serde::Serialize;
use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

/// The change latency's p99 target, in ms.
pub const TARGET_P99_MS: f64 = 10.0;
/// The agent's memory target per endpoint, in KiB.
pub const TARGET_KIB_PER_ENDPOINT: f64 = 2.0;
/// The agent's pod CIDR: room for 16,000 endpoints.
const POD_CIDR: &str = "198.18.0.0/18";
pub const MAX_ENDPOINTS: usize = 16_000;

#[derive(Clone, Debug, Serialize)]
pub struct Options {
    /// Endpoints created (real veth pairs).
    pub endpoints: usize,
    /// Rules imported (one CiliumNetworkPolicy each).
    pub rules: usize,
    /// Distinct workloads (identities) among the endpoints.
    pub apps: usize,
    /// One-rule changes measured.
    pub changes: usize,
    /// The pilusd binary to start.
    pub pilusd: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub endpoints: usize,
    pub rules: usize,
    pub identities: usize,
    pub create_endpoint: Latency,
    pub initial_import_ms: f64,
    pub one_rule_change: Latency,
    /// Baseline: `GET /v1/status`, as many as changes, after them.
    pub api_round_trip: Latency,
    pub change_to_round_trip_ratio: f64,
    /// Baseline: `iptables -A` into a chain of `rules` rules (`None`:
    /// iptables is not installed).
    pub iptables_append: Option<Latency>,
    pub rss_start_kib: u64,
    pub rss_endpoints_kib: u64,
    pub rss_rules_kib: u64,
    pub kib_per_endpoint: f64,
    pub target_p99_ms: f64,
    pub target_kib_per_endpoint: f64,
    pub meets_latency_target: bool,
    pub meets_memory_target: bool,
}

fn cnp(j: usize, apps: usize, port: usize) -> String {
    let ns = format!("ns{}", j % apps % 10);
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: r{j}, namespace: {ns}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: a{}}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: a{}}}}}]\n    toPorts: [{{ports: [{{port: \"{port}\", protocol: TCP}}]}}]\n",
        j % apps,
        (j + 1) % apps
    )
}

fn import(c: &Client, text: String) -> Result<PolicyImported, Error> {
    c.post_json(
        paths::POLICIES,
        &PolicyImport {
            files: vec![PolicyFile {
                name: "bench.yaml".into(),
                text,
            }],
        },
    )
    .context("importing policy")
}

/// `iptables -A` into a chain of `rules` rules, `samples` times, in the
/// node's namespace; `None` if iptables is not there (or refuses).
fn iptables_baseline(node: &NetNs, rules: usize, samples: usize) -> Option<Latency> {
    let ok = |args: &[&str]| {
        node.command(&["iptables"])
            .ok()
            .map(|mut c| {
                c.args(args).stdout(Stdio::null()).stderr(Stdio::null());
                c.status().map(|s| s.success()).unwrap_or(false)
            })
            .unwrap_or(false)
    };
    if !ok(&["-N", "PILUSBENCH"]) {
        return None;
    }
    // iptables-restore for the bulk, then one `iptables -A` per sample: the
    // per-change cost an iptables-based policy agent pays.
    let mut bulk = String::from("*filter\n");
    for i in 0..rules {
        bulk.push_str(&format!(
            "-A PILUSBENCH -s 198.18.{}.{}/32 -p tcp --dport {} -j ACCEPT\n",
            i / 250,
            i % 250 + 1,
            1000 + i
        ));
    }
    bulk.push_str("COMMIT\n");
    let mut restore = node.command(&["iptables-restore", "--noflush"]).ok()?;
    restore.stdin(Stdio::piped());
    let mut child = restore.spawn().ok()?;
    std::io::Write::write_all(child.stdin.as_mut()?, bulk.as_bytes()).ok()?;
    drop(child.stdin.take());
    child.wait().ok()?;
    let mut v = Vec::new();
    for i in 0..samples {
        let port = (20000 + i).to_string();
        let t = Instant::now();
        if !ok(&[
            "-A",
            "PILUSBENCH",
            "-s",
            "198.19.0.1/32",
            "-p",
            "tcp",
            "--dport",
            &port,
            "-j",
            "ACCEPT",
        ]) {
            return None;
        }
        v.push(t.elapsed());
    }
    Latency::of(v)
}

fn check(opts: &Options) -> Result<(), Error> {
    let positive = [
        ("endpoints", opts.endpoints),
        ("rules", opts.rules),
        ("apps", opts.apps),
        ("changes", opts.changes),
    ];
    for (option, n) in positive {
        if n == 0 {
            return Err(Error::Options {
                option,
                reason: "must be at least 1".into(),
            });
        }
    }
    if opts.endpoints > MAX_ENDPOINTS {
        return Err(Error::Options {
            option: "endpoints",
            reason: format!(
                "{} exceeds the bench pod CIDR ({POD_CIDR}: {MAX_ENDPOINTS})",
                opts.endpoints
            ),
        });
    }
    Ok(())
}

/// Runs the benchmark. Needs root (namespaces, veths, bpffs).
pub fn run(opts: &Options) -> Result<Report, Error> {
    crate::require_root("policy", "namespaces, veths, bpffs")?;
    check(opts)?;
    let mut agent = Agent::start(&opts.pilusd, "pbnode", POD_CIDR)?;
    pilus_netns::remove_stale("pbpods").context("removing a killed run's namespaces")?;
    // A namespace per pod: the agent gives a pod one primary interface and
    // refuses a second whose routes would take the first one's.
    tracing::info!(endpoints = opts.endpoints, "creating pod namespaces");
    let pods = (0..opts.endpoints)
        .map(|_| NetNs::new("pbpods").context("creating a pod's namespace"))
        .collect::<Result<Vec<_>, _>>()?;
    let c = agent.client();
    let pid = agent.pid();
    let rss_start = stats::rss_kib(pid)?;

    tracing::info!(endpoints = opts.endpoints, "creating endpoints");
    let mut create = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let t = Instant::now();
        let _: EndpointCreated = c
            .post_json(
                paths::ENDPOINTS,
                &EndpointCreate {
                    container_id: format!("bench-{i}"),
                    netns: pod.path().display().to_string(),
                    ifname: "eth0".into(),
                    namespace: format!("ns{}", i % opts.apps % 10),
                    pod_name: Some(format!("p{i}")),
                    labels: vec![format!("app=a{}", i % opts.apps)],
                    ..Default::default()
                },
            )
            .context(format!("creating endpoint {i}"))?;
        create.push(t.elapsed());
    }
    let rss_eps = stats::rss_kib(pid)?;

    tracing::info!(rules = opts.rules, "importing rules");
    let all: Vec<String> = (0..opts.rules)
        .map(|j| cnp(j, opts.apps, 1000 + j))
        .collect();
    let t = Instant::now();
    import(&c, all.join("---\n"))?;
    let initial_import = t.elapsed();
    let rss_rules = stats::rss_kib(pid)?;

    tracing::info!(changes = opts.changes, "measuring one-rule changes");
    let mut changes = Vec::new();
    for k in 0..opts.changes {
        let j = (k * 7919) % opts.rules;
        let t = Instant::now();
        import(&c, cnp(j, opts.apps, 30000 + k))?;
        changes.push(t.elapsed());
    }
    let mut rtt = Vec::new();
    for _ in 0..opts.changes {
        let t = Instant::now();
        let _: Status = c.get_json(paths::STATUS).context("GET /v1/status")?;
        rtt.push(t.elapsed());
    }
    let status: Status = c.get_json(paths::STATUS).context("GET /v1/status")?;
    agent.check_alive()?;
    let ipt = iptables_baseline(agent.node(), opts.rules, opts.changes.min(100));
    drop(agent);

    let summary = |v: Vec<Duration>| Latency::of(v).expect("at least one sample (checked)");
    let change = summary(changes);
    let round_trip = summary(rtt);
    let per_ep = rss_eps.saturating_sub(rss_start) as f64 / opts.endpoints as f64;
    Ok(Report {
        bench: "policy",
        endpoints: opts.endpoints,
        rules: opts.rules,
        identities: status.identities,
        create_endpoint: summary(create),
        initial_import_ms: initial_import.as_secs_f64() * 1e3,
        change_to_round_trip_ratio: change.p50_ms / round_trip.p50_ms,
        meets_latency_target: change.p99_ms <= TARGET_P99_MS,
        one_rule_change: change,
        api_round_trip: round_trip,
        iptables_append: ipt,
        rss_start_kib: rss_start,
        rss_endpoints_kib: rss_eps,
        rss_rules_kib: rss_rules,
        kib_per_endpoint: stats::round(per_ep, 3),
        target_p99_ms: TARGET_P99_MS,
        target_kib_per_endpoint: TARGET_KIB_PER_ENDPOINT,
        meets_memory_target: per_ep <= TARGET_KIB_PER_ENDPOINT,
    })
}
