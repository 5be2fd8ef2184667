//! The one lab fixture of the tier-3 agent tests (metrics, doctor, nodes,
//! services): a lab of `pilus lab` (node namespaces, one real pilusd each,
//! pods attached by the real pilus-cni, a server on port 80 in each pod;
//! a cluster adds etcd on the underlay), HTTP over TCP inside a node's
//! namespace (where its agent serves metrics on 127.0.0.1:9962), `ip`/`tc`
//! and the `pilus` CLI run against a node, waiting for a condition.
//!
//! Needs root (and etcd for a cluster); fails (never skips) without them.
//! Dropping a [`LabNode`] removes the agents, etcd, pins, state and
//! namespaces, also on failure (and prints the agents' last log lines then).

#![allow(dead_code)]

use pilus_api_types::{self as api, paths};
use pilus_client::blocking::Client;
use pilus_lab::{
    plan::Routing,
    serve::{self, Probe, Proto},
    Lab, Paths, Plan,
};
use std::{
    io::{Read, Write},
    net::{SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

pub const YES: Duration = Duration::from_secs(3);
pub const NO: Duration = Duration::from_millis(400);

/// Ingress to `db` only from `backend` on TCP 80: `frontend` → `db` is
/// dropped with DROP_POLICY.
pub const DB_FROM_BACKEND: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: db-from-backend
  namespace: demo
spec:
  endpointSelector:
    matchLabels:
      app: db
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: backend
    toPorts:
    - ports:
      - port: \"80\"
        protocol: TCP
";

pub fn assert_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests build namespaces and load BPF: run them as root"
    );
}

pub struct LabNode {
    pub lab: Lab,
}

impl Drop for LabNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.lab.agent_logs(25));
        }
        if let Err(e) = Lab::down(&self.lab.paths) {
            eprintln!("tearing down the test lab: {e}");
        }
    }
}

/// The lab's paths; its binaries are the ones built next to pilusd
/// (`Lab::up` says which is missing).
fn paths(prefix: &str) -> Paths {
    assert_root();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_pilusd")).parent().unwrap();
    Paths::scratch(prefix, bin_dir.to_path_buf())
}

/// Polls `ok` every 50 ms until it holds, and says how long that took;
/// fails the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// A raw HTTP/1.1 answer.
pub struct Http {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl LabNode {
    /// One node on its own with `pods` pods (frontend-1, backend-1, db-1, ...).
    pub fn up(prefix: &str, pods: u32) -> LabNode {
        let paths = paths(prefix);
        let _ = Lab::down(&paths);
        let plan = Plan::new(prefix, 1, pods).unwrap();
        LabNode::serving(Lab::up(paths, plan).expect("lab up"))
    }

    /// `lab` once every pod's server answers: `Lab::up` starts them and
    /// returns, and a probe that comes first is refused (RST), not dropped.
    fn serving(lab: Lab) -> LabNode {
        let lab = LabNode { lab };
        for pod in &lab.lab.state.pods {
            wait_for(
                &format!("the server of {}", pod.name),
                Duration::from_secs(15),
                || replied(&lab.probe_from_node(&pod.node, &pod.name, Proto::Tcp, YES)),
            );
        }
        lab
    }

    /// `nodes` nodes in one cluster (one etcd member, a 15 s lease) with
    /// `routing`.
    pub fn cluster(prefix: &str, nodes: u32, pods: u32, routing: Routing) -> LabNode {
        LabNode::cluster_of(prefix, routing, nodes, pods, 1, 15)
    }

    /// `nodes` × `pods` (frontend-N, backend-N, ...) in one cluster of
    /// `etcd_members` etcd members, the agents' lease `lease_ttl` seconds.
    pub fn cluster_of(
        prefix: &str,
        routing: Routing,
        nodes: u32,
        pods: u32,
        etcd_members: u32,
        lease_ttl: u64,
    ) -> LabNode {
        assert!(
            Path::new("/usr/bin/etcd").exists(),
            "etcd is not installed: `source scripts/deps.sh; pilus_build_deps` installs etcd-server"
        );
        let paths = paths(prefix);
        let _ = Lab::down(&paths);
        let plan = Plan::new(prefix, nodes, pods)
            .unwrap()
            .clustered(routing, etcd_members, lease_ttl)
            .unwrap();
        LabNode::serving(Lab::up(paths, plan).expect("lab up"))
    }

    /// A cluster as [`LabNode::cluster`] makes it, its plan changed by
    /// `change` first (e.g. `Plan::with_socket_lb`).
    pub fn cluster_with(
        prefix: &str,
        nodes: u32,
        pods: u32,
        routing: Routing,
        change: impl FnOnce(Plan) -> Plan,
    ) -> LabNode {
        assert!(
            Path::new("/usr/bin/etcd").exists(),
            "etcd is not installed: `source scripts/deps.sh; pilus_build_deps` installs etcd-server"
        );
        let paths = paths(prefix);
        let _ = Lab::down(&paths);
        let plan = Plan::new(prefix, nodes, pods)
            .unwrap()
            .clustered(routing, 1, 15)
            .unwrap();
        LabNode::serving(Lab::up(paths, change(plan)).expect("lab up"))
    }

    pub fn netns(&self, node: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.lab.node(node).expect("node").netns)
    }

    pub fn client(&self, node: &str) -> Client {
        self.lab.client(node).with_timeout(Duration::from_secs(30))
    }

    pub fn socket(&self, node: &str) -> PathBuf {
        self.lab.node(node).expect("node").socket.clone()
    }

    /// `GET path` on `addr` from inside `node`'s namespace, `accept` as the
    /// Accept header. The socket is made in the namespace and used from
    /// here: a socket stays in the namespace it was made in.
    pub fn http_get(&self, node: &str, addr: &str, path: &str, accept: &str) -> Http {
        let stream = {
            let _inside = pilus_netlink::netns::enter_path(&self.netns(node)).unwrap();
            TcpStream::connect(addr)
        };
        let mut stream = stream.unwrap_or_else(|e| panic!("connect to {addr} in {node}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
        // Bodies here are small enough to come unchunked (Content-Length),
        // except a chunked one from a server that streams: undo that.
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Http {
            status,
            head: head.to_string(),
            body,
        }
    }

    /// `ip ARGS` in `node`'s namespace; it must succeed.
    pub fn ip(&self, node: &str, args: &str) {
        self.tool(node, "ip", args);
    }

    /// `tc ARGS` in `node`'s namespace; it must succeed.
    pub fn tc(&self, node: &str, args: &str) {
        self.tool(node, "tc", args);
    }

    fn tool(&self, node: &str, tool: &str, args: &str) {
        let ns = &self.lab.node(node).expect("node").netns;
        let out = Command::new(tool)
            .arg("-n")
            .arg(ns)
            .args(args.split_whitespace())
            .output()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} -n {ns} {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The `pilus` CLI against `node`'s agent.
    pub fn pilus(&self, node: &str, args: &[&str]) -> Output {
        Command::new(self.lab.paths.bin_dir.join("pilus"))
            .arg("--socket")
            .arg(self.socket(node))
            .args(args)
            .output()
            .expect("run pilus")
    }

    pub fn import(&self, node: &str, yaml: &str) -> api::PolicyImported {
        self.client(node)
            .post_json(
                paths::POLICIES,
                &api::PolicyImport {
                    files: vec![api::PolicyFile {
                        name: "policy.yaml".into(),
                        text: yaml.into(),
                    }],
                },
            )
            .expect("policy import")
    }

    /// Probes `to` (a pod) on port 80 from the pod `from`.
    pub fn probe(&self, from: &str, to: &str, proto: Proto, timeout: Duration) -> Probe {
        self.lab.connect(from, to, 80, proto, timeout).unwrap()
    }

    /// Probes pod `to` on port 80 from `node`'s own namespace (the node's
    /// stack, not a pod).
    pub fn probe_from_node(&self, node: &str, to: &str, proto: Proto, timeout: Duration) -> Probe {
        let ip = self.lab.pod(to).unwrap().ip;
        serve::probe(&self.netns(node), SocketAddrV4::new(ip, 80), proto, timeout)
    }

    /// Sets `node`'s monitor aggregation live (`none`: every packet at
    /// every point).
    pub fn set_aggregation(&self, node: &str, level: &str) {
        let c: api::MonitorConfig = self
            .client(node)
            .post_json(
                paths::MONITOR_CONFIG,
                &api::MonitorConfigUpdate {
                    aggregation: Some(level.into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(c.aggregation, level);
    }

    /// Where "now" is in `node`'s monitor sequence.
    pub fn monitor_next(&self, node: &str) -> u64 {
        let b: api::MonitorBatch = self
            .client(node)
            .get_json(&format!("{}?last=0", paths::MONITOR))
            .unwrap();
        b.next
    }

    pub fn doctor(&self, node: &str) -> api::DoctorReport {
        self.client(node)
            .get_json(paths::DOCTOR)
            .expect("GET /v1/doctor")
    }
}

pub fn replied(p: &Probe) -> bool {
    matches!(p, Probe::Reply { .. })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The check `name` of a report.
pub fn check<'a>(r: &'a api::DoctorReport, name: &str) -> &'a api::DoctorCheck {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {r:#?}"))
}

/// Every check ok, with a report to read when not.
pub fn assert_clean(r: &api::DoctorReport) {
    assert_eq!(r.status, api::Severity::Ok, "{r:#?}");
    for c in &r.checks {
        assert!(c.findings.is_empty(), "{c:#?}");
    }
}
