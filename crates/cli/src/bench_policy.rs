//! `pilus bench policy`: policy change → enforced latency, and the agent's
//! memory, at scale (default 1,000 endpoints and 1,000 rules). Starts a
//! private pilusd in its own namespaces, with real veths for every endpoint.
//! Baseline measured in the same run: the API's round trip (GET status), and
//! `iptables -A` into a chain of as many rules, when iptables is installed.

use crate::Output;
use anyhow::{bail, Context, Result};
use clap::Args;
use pilus_api_types::EndpointCreate;
use pilus_api_types::EndpointCreated;
use pilus_api_types::PolicyFile;
use pilus_api_types::PolicyImport;
use pilus_api_types::PolicyImported;
use pilus_api_types::Status;
use pilus_client::blocking::Client;
use pilus_netns::{ChildGuard, NetNs};
use serde::Serialize;
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// Endpoints created (real veth pairs).
    #[arg(long, default_value_t = 1000)]
    endpoints: usize,
    /// Rules imported (one CiliumNetworkPolicy each).
    #[arg(long, default_value_t = 1000)]
    rules: usize,
    /// Distinct workloads (identities) among the endpoints.
    #[arg(long, default_value_t = 100)]
    apps: usize,
    /// One-rule changes measured.
    #[arg(long, default_value_t = 300)]
    changes: usize,
    /// The pilusd binary (default: next to this one).
    #[arg(long)]
    pilusd: Option<PathBuf>,
}

#[derive(Serialize)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    endpoints: usize,
    rules: usize,
    identities: usize,
    create_endpoint: Latency,
    initial_import_ms: f64,
    one_rule_change: Latency,
    api_round_trip: Latency,
    change_to_round_trip_ratio: f64,
    iptables_append: Option<Latency>,
    rss_start_kib: u64,
    rss_endpoints_kib: u64,
    rss_rules_kib: u64,
    kib_per_endpoint: f64,
    target_p99_ms: f64,
    target_kib_per_endpoint: f64,
    meets_latency_target: bool,
    meets_memory_target: bool,
}

fn latency(mut v: Vec<Duration>) -> Latency {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| ms(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    Latency {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: ms(*v.last().expect("samples")),
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn cnp(j: usize, apps: usize, port: usize) -> String {
    let ns = format!("ns{}", j % apps % 10);
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: r{j}, namespace: {ns}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: a{}}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: a{}}}}}]\n    toPorts: [{{ports: [{{port: \"{port}\", protocol: TCP}}]}}]\n",
        j % apps,
        (j + 1) % apps
    )
}

fn import(c: &Client, text: String) -> Result<PolicyImported> {
    Ok(c.post_json(
        "/v1/policies",
        &PolicyImport {
            files: vec![PolicyFile {
                name: "bench.yaml".into(),
                text,
            }],
        },
    )?)
}

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
    Some(latency(v))
}

pub fn run(a: PolicyArgs, out: Output) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("pilus bench policy needs root (namespaces, veths, bpffs)");
    }
    if a.endpoints > 16000 {
        bail!(
            "--endpoints {} exceeds the bench pod CIDR (198.18.0.0/18)",
            a.endpoints
        );
    }
    let pilusd = match a.pilusd.clone() {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("pilusd"),
    };
    if !pilusd.exists() {
        bail!(
            "{} not found: build it (cargo build --release --workspace) or pass --pilusd",
            pilusd.display()
        );
    }
    for prefix in ["pbnode", "pbpods"] {
        pilus_netns::remove_stale(prefix)?;
    }
    let node = NetNs::new("pbnode")?;
    let pods = NetNs::new("pbpods")?;
    let dir = std::env::temp_dir().join(format!("pilus-bench-policy-{}", std::process::id()));
    let pins = PathBuf::from(format!(
        "/sys/fs/bpf/pilus-bench-policy-{}",
        std::process::id()
    ));
    struct Cleanup(PathBuf, PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let socket = dir.join("pilus.sock");
    let mut cmd = Command::new(&pilusd);
    cmd.args([
        "--netns",
        node.name(),
        "--pod-cidr",
        "198.18.0.0/18",
        "--log",
        "warn",
    ])
    .arg("--state-dir")
    .arg(dir.join("state"))
    .arg("--pin-dir")
    .arg(&pins)
    .arg("--socket")
    .arg(&socket)
    .stdout(Stdio::null());
    let agent = ChildGuard::spawn(cmd)?;
    let _cleanup = Cleanup(dir.clone(), pins.clone());
    let c = Client::new(&socket);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.get_json::<Status>("/v1/status").is_err() {
        if Instant::now() > deadline {
            bail!("pilusd did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss_start = rss_kib(agent.pid())?;
    eprintln!("creating {} endpoints...", a.endpoints);
    let mut create = Vec::new();
    for i in 0..a.endpoints {
        let t = Instant::now();
        let _: EndpointCreated = c.post_json(
            "/v1/endpoints",
            &EndpointCreate {
                container_id: format!("bench-{i}"),
                netns: pods.path().display().to_string(),
                ifname: format!("e{i}"),
                namespace: format!("ns{}", i % a.apps % 10),
                pod_name: Some(format!("p{i}")),
                labels: vec![format!("app=a{}", i % a.apps)],
                ..Default::default()
            },
        )?;
        create.push(t.elapsed());
    }
    let rss_eps = rss_kib(agent.pid())?;
    eprintln!("importing {} rules...", a.rules);
    let all: Vec<String> = (0..a.rules).map(|j| cnp(j, a.apps, 1000 + j)).collect();
    let t = Instant::now();
    import(&c, all.join("---\n"))?;
    let initial_import = t.elapsed();
    let rss_rules = rss_kib(agent.pid())?;
    eprintln!("measuring {} one-rule changes...", a.changes);
    let mut changes = Vec::new();
    for k in 0..a.changes {
        let j = (k * 7919) % a.rules;
        let t = Instant::now();
        import(&c, cnp(j, a.apps, 30000 + k))?;
        changes.push(t.elapsed());
    }
    let mut rtt = Vec::new();
    for _ in 0..a.changes {
        let t = Instant::now();
        let _: Status = c.get_json("/v1/status")?;
        rtt.push(t.elapsed());
    }
    let status: Status = c.get_json("/v1/status")?;
    let ipt = iptables_baseline(&node, a.rules, a.changes.min(100));
    drop(agent);
    let change = latency(changes);
    let round_trip = latency(rtt);
    let per_ep = (rss_eps.saturating_sub(rss_start)) as f64 / a.endpoints.max(1) as f64;
    let r = Report {
        bench: "policy",
        endpoints: a.endpoints,
        rules: a.rules,
        identities: status.identities,
        create_endpoint: latency(create),
        initial_import_ms: initial_import.as_secs_f64() * 1e3,
        change_to_round_trip_ratio: change.p50_ms / round_trip.p50_ms,
        meets_latency_target: change.p99_ms <= 10.0,
        one_rule_change: change,
        api_round_trip: round_trip,
        iptables_append: ipt,
        rss_start_kib: rss_start,
        rss_endpoints_kib: rss_eps,
        rss_rules_kib: rss_rules,
        kib_per_endpoint: per_ep,
        target_p99_ms: 10.0,
        target_kib_per_endpoint: 2.0,
        meets_memory_target: per_ep <= 2.0,
    };
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "endpoints {}, rules {}, identities {}",
        r.endpoints, r.rules, r.identities
    );
    let l = |x: &Latency| {
        format!(
            "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            x.p50_ms, x.p99_ms, x.max_ms
        )
    };
    println!(
        "endpoint create (API, veth + maps): {}",
        l(&r.create_endpoint)
    );
    println!(
        "initial import of {} rules:         {:.1} ms",
        r.rules, r.initial_import_ms
    );
    println!(
        "one-rule change → enforced:         {}  (target p99 ≤ 10 ms: {})",
        l(&r.one_rule_change),
        if r.meets_latency_target {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "API round trip (baseline):          {}  (change/round-trip p50 ×{:.1})",
        l(&r.api_round_trip),
        r.change_to_round_trip_ratio
    );
    match &r.iptables_append {
        Some(x) => println!("iptables -A into {} rules:          {}", r.rules, l(x)),
        None => {
            println!("iptables baseline:                  not measured (iptables not installed)")
        }
    }
    println!(
        "agent RSS: start {} KiB, +{} endpoints {} KiB, +{} rules {} KiB → {:.2} KiB/endpoint (target ≤ 2: {})",
        r.rss_start_kib, r.endpoints, r.rss_endpoints_kib, r.rules, r.rss_rules_kib, r.kib_per_endpoint,
        if r.meets_memory_target { "met" } else { "MISSED" }
    );
    Ok(())
}
