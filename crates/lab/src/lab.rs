//! Bringing a lab up and down. `up` records every step in `<dir>/lab.json`
//! as it goes, so `down` (in this process after a failure, or in another
//! one later) knows what to remove; `down` also finds what a crashed run
//! left without a record: namespaces by prefix, processes by the lab
//! directory on their command line, pins by directory.

use crate::{
    cni,
    plan::{ClusterPlan, EtcdPlan, Plan, PodPlan, POD_NAMESPACE},
    serve::{self, Probe, Proto},
};
use pilus_api_types as api;
use pilus_api_types::paths;
use pilus_client::blocking::Client;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The CNI network name lab pods are attached to.
pub const NETWORK: &str = "pilus";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{0}")]
    Setup(String),
    #[error("a lab is already up (state in {0}); run `pilus lab down` first")]
    AlreadyUp(PathBuf),
    #[error("no lab is up (no {0}); run `pilus lab up`")]
    NotUp(PathBuf),
    #[error("no pod {0:?} in the lab (see `pilus lab status`)")]
    NoPod(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// Where a lab keeps things.
#[derive(Clone, Debug)]
pub struct Paths {
    /// State file, sockets, agent state and logs.
    pub dir: PathBuf,
    /// The agents' pin directories live under this (on bpffs).
    pub pins: PathBuf,
    /// Where `pilusd`, `pilus-cni` and `pilus` are.
    pub bin_dir: PathBuf,
    /// Namespace name prefix.
    pub prefix: String,
}

impl Paths {
    /// A test's lab named after `prefix`: state under the temporary
    /// directory, pins under `/sys/fs/bpf/pilus-<prefix>`, the binaries in
    /// `bin_dir`.
    pub fn scratch(prefix: &str, bin_dir: PathBuf) -> Paths {
        Paths {
            dir: std::env::temp_dir().join(format!("pilus-{prefix}")),
            pins: PathBuf::from(format!("/sys/fs/bpf/pilus-{prefix}")),
            bin_dir,
            prefix: prefix.to_string(),
        }
    }

    /// The cgroup v2 directory of `node`'s socket-level LB (a plan
    /// [`with_socket_lb`](crate::Plan::with_socket_lb)): one per node, under
    /// the hybrid hierarchy's root, never the root itself.
    pub fn cgroup(&self, node: &str) -> PathBuf {
        Path::new(CGROUP_ROOT).join(format!("{}{}-{node}", CGROUP_PREFIX, self.prefix))
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("lab.json")
    }

    pub fn binary(&self, name: &str) -> Result<PathBuf, LabError> {
        let p = self.bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(LabError::Setup(format!(
                "{} is missing: build it with `cargo build --release --bins` (the lab runs the binaries next to `pilus`)",
                p.display()
            )))
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRun {
    pub name: String,
    pub netns: String,
    pub pid: u32,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub pod_cidr: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodRun {
    pub name: String,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub app: String,
    pub ip: Ipv4Addr,
    pub endpoint: u16,
    pub identity: u32,
    pub server_pid: u32,
    /// How long CNI ADD took.
    pub add_ms: f64,
}

/// A running etcd member (a clustered lab).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EtcdRun {
    pub name: String,
    pub ip: Ipv4Addr,
    pub url: String,
    pub pid: u32,
    pub log: PathBuf,
    pub data_dir: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub plan: Plan,
    #[serde(default)]
    pub etcd: Vec<EtcdRun>,
    pub nodes: Vec<NodeRun>,
    pub pods: Vec<PodRun>,
}

/// Removes the lab at these paths when dropped, however the code holding
/// it ends (a failed step, a panic).
pub struct Teardown(pub Paths);

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Err(e) = Lab::down(&self.0) {
            tracing::warn!(dir = %self.0.dir.display(), error = %e, "tearing down a lab");
        }
    }
}

/// A lab that is up.
pub struct Lab {
    pub paths: Paths,
    pub state: State,
}

pub(crate) fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(io("running ip (is iproute2 installed?)"))?;
    if !out.status.success() {
        return Err(LabError::Setup(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

fn new_netns(name: &str) -> Result<(), LabError> {
    let ns = pilus_netns::NetNs::named(name)
        .map_err(|e| LabError::Setup(format!("network namespace {name}: {e}")))?;
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
        .map_err(|e| LabError::Setup(format!("network namespace {name}: {e}")))?;
    ns.persist();
    Ok(())
}

/// Starts `cmd` detached (own session, so it outlives `pilus lab up`)
/// inside the namespace at `netns`.
fn spawn_in(mut cmd: Command, netns: &Path, log: &Path) -> Result<u32, LabError> {
    let ns = std::fs::File::open(netns).map_err(io(format!("open {}", netns.display())))?;
    let log = std::fs::File::create(log).map_err(io(format!("create {}", log.display())))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io("dup log"))?)
        .stderr(log);
    cni::exec_in_netns(&mut cmd, &ns, true);
    let child = cmd
        .spawn()
        .map_err(io(format!("start {:?}", cmd.get_program())))?;
    Ok(child.id())
}

/// Sends `signal` to `pid` and waits (10 s at most, then SIGKILL) until it
/// is gone.
fn stop(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a pid the lab started.
    unsafe { libc::kill(pid as i32, signal) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        reap(pid);
        std::thread::sleep(Duration::from_millis(10));
    }
    if alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    reap(pid);
}

/// `name` found on PATH (or the usual places when PATH is bare).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/bin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by us) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn reap(pid: u32) {
    // Our own children must be reaped or they stay zombies; others are
    // not ours to wait for (ECHILD, harmless).
    // SAFETY: waitpid with WNOHANG on a pid; no memory involved.
    unsafe {
        libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG);
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Lab {
    /// Builds the lab; on any failure everything made so far is removed
    /// and the error returned.
    pub fn up(paths: Paths, plan: Plan) -> Result<Lab, LabError> {
        if paths.state_file().exists() {
            return Err(LabError::AlreadyUp(paths.state_file()));
        }
        if unsafe { libc::geteuid() } != 0 {
            return Err(LabError::Setup(
                "pilus lab needs root (namespaces, eBPF)".into(),
            ));
        }
        for b in ["pilusd", "pilus-cni", "pilus"] {
            paths.binary(b)?;
        }
        // Leftovers of a crashed run with the same prefix are not adopted.
        Lab::down(&paths)?;
        std::fs::create_dir_all(&paths.dir)
            .map_err(io(format!("create {}", paths.dir.display())))?;
        let mut lab = Lab {
            paths,
            state: State {
                plan,
                etcd: Vec::new(),
                nodes: Vec::new(),
                pods: Vec::new(),
            },
        };
        match lab.build() {
            Ok(()) => Ok(lab),
            Err(e) => {
                let _ = Lab::down(&lab.paths);
                Err(e)
            }
        }
    }

    fn save(&self) -> Result<(), LabError> {
        let text = serde_json::to_vec_pretty(&self.state).expect("state serializes");
        let tmp = self.paths.dir.join("lab.json.tmp");
        std::fs::write(&tmp, text).map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, self.paths.state_file())
            .map_err(io(format!("write {}", self.paths.state_file().display())))
    }

    fn build(&mut self) -> Result<(), LabError> {
        self.save()?;
        let plan = self.state.plan.clone();
        new_netns(&plan.underlay_netns)?;
        ip(&[
            "-n",
            &plan.underlay_netns,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
        ])?;
        ip(&["-n", &plan.underlay_netns, "link", "set", "br0", "up"])?;
        if let Some(cluster) = &plan.cluster {
            for member in &cluster.etcd {
                ip(&[
                    "-n",
                    &plan.underlay_netns,
                    "addr",
                    "add",
                    &format!("{}/24", member.ip),
                    "dev",
                    "br0",
                ])?;
            }
            for member in &cluster.etcd {
                let run = self.spawn_etcd(member, cluster)?;
                self.state.etcd.push(run);
                self.save()?;
            }
        }
        for (i, node) in plan.nodes.iter().enumerate() {
            new_netns(&node.netns)?;
            let port = format!("n{}", i + 1);
            ip(&[
                "-n",
                &plan.underlay_netns,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &node.netns,
            ])?;
            ip(&[
                "-n",
                &plan.underlay_netns,
                "link",
                "set",
                &port,
                "master",
                "br0",
                "up",
            ])?;
            ip(&[
                "-n",
                &node.netns,
                "addr",
                "add",
                &format!("{}/24", node.underlay_ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &node.netns, "link", "set", "eth0", "up"])?;
            let run = self.start_agent(&node.name, &node.netns, &node.pod_cidr)?;
            self.state.nodes.push(run);
            self.save()?;
        }
        for pod in &plan.pods {
            let run = self.add_pod(pod)?;
            self.state.pods.push(run);
            self.save()?;
        }
        if plan.cluster.is_some() {
            self.wait_converged(Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// Starts one member of the lab's etcd in the underlay namespace; its
    /// data directory is kept, so a member started again rejoins with its
    /// data.
    fn spawn_etcd(&self, member: &EtcdPlan, cluster: &ClusterPlan) -> Result<EtcdRun, LabError> {
        let etcd = which("etcd").ok_or_else(|| {
            LabError::Setup(
                "etcd is not installed (a lab of many nodes runs one): apt-get install etcd-server"
                    .into(),
            )
        })?;
        let dir = self.paths.dir.join("etcd");
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let data_dir = dir.join(&member.name);
        let log = dir.join(format!("{}.log", member.name));
        let initial: Vec<String> = cluster
            .etcd
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect();
        let state = if data_dir.exists() { "existing" } else { "new" };
        let mut cmd = Command::new(etcd);
        cmd.arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-client-urls", &member.client_url()])
            .args(["--advertise-client-urls", &member.client_url()])
            .args(["--listen-peer-urls", &member.peer_url()])
            .args(["--initial-advertise-peer-urls", &member.peer_url()])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.state.plan.prefix])
            // A node publishes its pods in transactions of up to 100 keys.
            .args(["--max-txn-ops", "1024"])
            // One machine, no real network: elections may be quick.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        // etcd also reads ETCD_* variables: none of the caller's apply.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        let pid = spawn_in(cmd, &netns_path(&self.state.plan.underlay_netns), &log)?;
        Ok(EtcdRun {
            name: member.name.clone(),
            ip: member.ip,
            url: member.client_url(),
            pid,
            log,
            data_dir,
        })
    }

    /// Kills an etcd member (SIGKILL, as a crash would).
    pub fn kill_etcd(&mut self, name: &str) -> Result<(), LabError> {
        let run = self
            .state
            .etcd
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| LabError::Setup(format!("no etcd member {name:?} in the lab")))?;
        stop(run.pid, libc::SIGKILL);
        Ok(())
    }

    /// Starts a killed etcd member again on its data.
    pub fn start_etcd(&mut self, name: &str) -> Result<(), LabError> {
        let cluster = self
            .state
            .plan
            .cluster
            .clone()
            .ok_or_else(|| LabError::Setup("the lab has no etcd".into()))?;
        let member = cluster
            .etcd
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| LabError::Setup(format!("no etcd member {name:?} in the lab")))?;
        if let Some(run) = self.state.etcd.iter().find(|e| e.name == name) {
            if alive(run.pid) {
                return Err(LabError::Setup(format!("etcd member {name} is running")));
            }
        }
        let run = self.spawn_etcd(member, &cluster)?;
        self.state.etcd.retain(|e| e.name != name);
        self.state.etcd.push(run);
        self.save()
    }

    /// Stops a node's agent (SIGTERM: it exits cleanly and leaves its
    /// datapath and its keys in etcd, which live on for the lease's ttl).
    pub fn stop_agent(&mut self, node: &str) -> Result<(), LabError> {
        let run = self
            .node(node)
            .ok_or_else(|| LabError::Setup(format!("no node {node:?} in the lab")))?;
        stop(run.pid, libc::SIGTERM);
        Ok(())
    }

    /// Starts a stopped agent again, as it was started.
    pub fn start_agent_again(&mut self, node: &str) -> Result<(), LabError> {
        let plan = self
            .state
            .plan
            .node(node)
            .cloned()
            .ok_or_else(|| LabError::Setup(format!("no node {node:?} in the lab")))?;
        if self.node(node).is_some_and(|n| alive(n.pid)) {
            return Err(LabError::Setup(format!("the agent of {node} is running")));
        }
        let run = self.start_agent(&plan.name, &plan.netns, &plan.pod_cidr)?;
        for n in &mut self.state.nodes {
            if n.name == node {
                *n = run.clone();
            }
        }
        self.save()
    }

    /// Captures what crosses the underlay while `traffic` runs.
    pub fn capture_underlay<T>(
        &self,
        traffic: impl FnOnce() -> T,
    ) -> Result<(crate::capture::Capture, T), crate::capture::CaptureError> {
        crate::capture::capture(
            &netns_path(&self.state.plan.underlay_netns),
            crate::capture::VXLAN_PORT,
            traffic,
        )
    }

    /// Waits until every node knows every other node and every pod of the
    /// lab (its ipcache has each pod's address with the pod's identity).
    pub fn wait_converged(&self, limit: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + limit;
        loop {
            let missing = self.not_converged();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LabError::Setup(format!(
                    "the cluster did not converge within {} s: {}",
                    limit.as_secs(),
                    missing.join("; ")
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What some node does not know yet (empty when the lab converged).
    pub fn not_converged(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for node in &self.state.nodes {
            let c = self.client(&node.name).with_timeout(Duration::from_secs(2));
            match c.get_json::<Vec<api::Node>>(paths::NODES) {
                Ok(nodes) if nodes.len() == self.state.nodes.len() => {}
                Ok(nodes) => missing.push(format!(
                    "{} knows {} of {} nodes",
                    node.name,
                    nodes.len(),
                    self.state.nodes.len()
                )),
                Err(e) => missing.push(format!("{}: {e}", node.name)),
            }
            let Ok(ipcache) = c.get_json::<Vec<api::IpcacheEntry>>(paths::IPCACHE) else {
                continue;
            };
            for pod in &self.state.pods {
                let prefix = format!("{}/32", pod.ip);
                let known = ipcache
                    .iter()
                    .any(|e| e.prefix == prefix && e.identity == pod.identity);
                if !known {
                    missing.push(format!(
                        "{} does not know {} ({})",
                        node.name, pod.name, pod.ip
                    ));
                }
            }
        }
        missing
    }

    fn start_agent(&self, name: &str, netns: &str, pod_cidr: &str) -> Result<NodeRun, LabError> {
        let dir = self.paths.dir.join(name);
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let socket = dir.join("pilus.sock");
        let log = dir.join("pilusd.log");
        let mut cmd = Command::new(self.paths.binary("pilusd")?);
        cmd.arg("--node-name")
            .arg(name)
            .arg("--pod-cidr")
            .arg(pod_cidr)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--pin-dir")
            .arg(self.paths.pins.join(name))
            .arg("--socket")
            .arg(&socket)
            .args(["--log", "info"])
            .args([
                "--monitor-aggregation",
                &self.state.plan.monitor_aggregation,
            ]);
        if !self.state.plan.trace_events {
            cmd.arg("--no-trace-events");
        }
        if self.state.plan.prefilter && self.state.plan.cluster.is_some() {
            cmd.arg("--prefilter");
        }
        if self.state.plan.socket_lb {
            let cgroup = self.paths.cgroup(name);
            match std::fs::create_dir(&cgroup) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(io(format!("create the cgroup {}", cgroup.display()))(e))
                }
                _ => {}
            }
            cmd.arg("--socket-lb-cgroup").arg(&cgroup);
        }
        if self.state.plan.masquerade && self.state.plan.cluster.is_some() {
            cmd.arg("--masquerade");
        }
        if self.state.plan.node_port && self.state.plan.cluster.is_some() {
            cmd.arg("--node-port");
        }
        if let Some(cluster) = &self.state.plan.cluster {
            let node = self
                .state
                .plan
                .node(name)
                .ok_or_else(|| LabError::Setup(format!("no node {name} in the plan")))?;
            cmd.args(["--etcd", &cluster.etcd_urls()])
                .args(["--routing", cluster.routing.name()])
                .args(["--underlay-ip", &node.underlay_ip.to_string()])
                .args(["--uplink", "eth0"])
                .args(["--lease-ttl", &cluster.lease_ttl_s.to_string()]);
        }
        let pid = spawn_in(cmd, &netns_path(netns), &log)?;
        let run = NodeRun {
            name: name.to_string(),
            netns: netns.to_string(),
            pid,
            socket,
            log,
            pod_cidr: pod_cidr.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = Client::new(&run.socket).with_timeout(Duration::from_secs(5));
        loop {
            if client.get_json::<api::Status>(paths::STATUS).is_ok() {
                return Ok(run);
            }
            reap(pid);
            if !alive(pid) {
                return Err(LabError::Setup(format!(
                    "pilusd for {name} exited during start-up; its log ({}):\n{}",
                    run.log.display(),
                    tail(&run.log, 15)
                )));
            }
            if Instant::now() > deadline {
                return Err(LabError::Setup(format!(
                    "pilusd for {name} did not answer on {} within 30 s",
                    run.socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of every agent's log, each under a header
    /// naming its node (for a test that failed).
    pub fn agent_logs(&self, lines: usize) -> String {
        self.state
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {} pilusd log (last lines) ---\n{}\n",
                    n.name,
                    tail(&n.log, lines)
                )
            })
            .collect()
    }

    pub fn node(&self, name: &str) -> Option<&NodeRun> {
        self.state.nodes.iter().find(|n| n.name == name)
    }

    pub fn pod(&self, name: &str) -> Result<&PodRun, LabError> {
        self.state
            .pods
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| LabError::NoPod(name.to_string()))
    }

    /// Probes `to` (a pod name or an IPv4 address) on `port` from inside
    /// the pod `from`'s namespace.
    pub fn connect(
        &self,
        from: &str,
        to: &str,
        port: u16,
        proto: Proto,
        timeout: Duration,
    ) -> Result<Probe, LabError> {
        let src = self.pod(from)?;
        let dst: Ipv4Addr = match to.parse() {
            Ok(ip) => ip,
            Err(_) => self.pod(to)?.ip,
        };
        Ok(serve::probe(
            &netns_path(&src.netns),
            SocketAddrV4::new(dst, port),
            proto,
            timeout,
        ))
    }

    /// The agent of a node.
    pub fn client(&self, node: &str) -> Client {
        let n = self.node(node).expect("node of the lab");
        Client::new(&n.socket).with_timeout(Duration::from_secs(30))
    }

    /// The network configuration a runtime would pass for this pod.
    pub fn netconf(&self, node: &NodeRun, app: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "type": "pilus-cni",
            "socket": node.socket,
            "args": { "cni": { "labels": [ { "key": "app", "value": app } ] } },
        }))
        .expect("netconf serializes")
    }

    /// Calls pilus-cni for a pod, in its node's namespace.
    pub fn cni(&self, command: &str, pod: &PodPlan) -> Result<cni::Outcome, LabError> {
        let node = self
            .node(&pod.node)
            .ok_or_else(|| LabError::Setup(format!("no node {}", pod.node)))?;
        let plugin = self.paths.binary("pilus-cni")?;
        let node_ns = netns_path(&node.netns);
        let call = cni::Call {
            plugin: &plugin,
            run_in: Some(&node_ns),
            env: cni::env(
                command,
                &pod.container_id,
                &netns_path(&pod.netns).display().to_string(),
                "eth0",
                &format!(
                    "K8S_POD_NAMESPACE={POD_NAMESPACE};K8S_POD_NAME={}",
                    pod.name
                ),
                &plugin,
            ),
            stdin: self.netconf(node, &pod.app),
        };
        cni::invoke(&call).map_err(io(format!("running {}", plugin.display())))
    }

    /// Makes the pod's namespace, attaches it with CNI ADD and starts its
    /// server.
    pub fn add_pod(&self, pod: &PodPlan) -> Result<PodRun, LabError> {
        new_netns(&pod.netns)?;
        let out = self.cni("ADD", pod)?;
        if !out.success {
            return Err(LabError::Setup(format!(
                "CNI ADD for {} failed: {}",
                pod.name,
                out.error_msg()
            )));
        }
        let ip: Ipv4Addr = out
            .json
            .as_ref()
            .and_then(|j| j["ips"][0]["address"].as_str())
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                LabError::Setup(format!(
                    "CNI ADD for {} printed no address: {}",
                    pod.name, out.stdout
                ))
            })?;
        let ep: api::Endpoint = self
            .client(&pod.node)
            .get_json(&format!("{}/{}", paths::ENDPOINTS, pod.container_id))
            .map_err(|e| LabError::Setup(format!("endpoint of {}: {e}", pod.name)))?;
        let mut cmd = Command::new(self.paths.binary("pilus")?);
        cmd.args(["lab", "serve", "--name", &pod.name, "--lab-dir"])
            .arg(&self.paths.dir);
        let server_pid = spawn_in(
            cmd,
            &netns_path(&pod.netns),
            &self.paths.dir.join(format!("{}.log", pod.name)),
        )?;
        Ok(PodRun {
            name: pod.name.clone(),
            node: pod.node.clone(),
            netns: pod.netns.clone(),
            container_id: pod.container_id.clone(),
            app: pod.app.clone(),
            ip,
            endpoint: ep.id,
            identity: ep.identity,
            server_pid,
            add_ms: out.elapsed.as_secs_f64() * 1e3,
        })
    }

    /// The lab recorded in `paths`, if one is up.
    pub fn load(paths: &Paths) -> Result<Lab, LabError> {
        let file = paths.state_file();
        let text = match std::fs::read(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LabError::NotUp(file))
            }
            Err(e) => return Err(io(format!("read {}", file.display()))(e)),
        };
        let state = serde_json::from_slice(&text)
            .map_err(|e| LabError::Setup(format!("{} is not a lab state: {e}", file.display())))?;
        Ok(Lab {
            paths: paths.clone(),
            state,
        })
    }

    /// Removes everything a lab with these paths made (recorded or not):
    /// pods are detached with CNI DEL while their agent still runs, then
    /// processes stop, pins, namespaces and the nodes' socket-LB cgroups
    /// go. Returns what was removed.
    pub fn down(paths: &Paths) -> Result<Vec<String>, LabError> {
        let mut removed = Vec::new();
        if let Ok(lab) = Lab::load(paths) {
            for pod in &lab.state.pods {
                if let Some(p) = lab.state.plan.pod(&pod.name) {
                    if lab.node(&pod.node).is_some_and(|n| alive(n.pid)) {
                        let _ = lab.cni("DEL", p);
                    }
                }
            }
        }
        let dir = paths.dir.display().to_string();
        // Agents first, gently (they leave pinned state consistent).
        let procs = processes_mentioning(&dir);
        for &(pid, ref cmd) in &procs {
            let sig = if cmd.contains("pilusd") {
                libc::SIGTERM
            } else {
                libc::SIGKILL
            };
            // SAFETY: kill(2) on a pid read from /proc.
            unsafe { libc::kill(pid as i32, sig) };
            removed.push(format!("process {pid}"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for &(pid, _) in &procs {
            while alive(pid) && Instant::now() < deadline {
                reap(pid);
                std::thread::sleep(Duration::from_millis(10));
            }
            if alive(pid) {
                // SAFETY: as above.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            reap(pid);
        }
        // Removing the pins releases the maps (and detaches TCX links, where
        // the kernel had no tc); the tc filters that keep the programs and
        // maps alive go with the veths, in the namespaces removed next.
        if paths.pins.exists() {
            std::fs::remove_dir_all(&paths.pins)
                .map_err(io(format!("remove {}", paths.pins.display())))?;
            removed.push(paths.pins.display().to_string());
        }
        let gone = pilus_netns::remove_stale(&paths.prefix)
            .map_err(|e| LabError::Setup(format!("removing namespaces {}-*: {e}", paths.prefix)))?;
        removed.extend(gone.into_iter().map(|n| format!("netns {n}")));
        if paths.dir.exists() {
            std::fs::remove_dir_all(&paths.dir)
                .map_err(io(format!("remove {}", paths.dir.display())))?;
            removed.push(dir);
        }
        // Last: a cgroup that will not go (a process that survived
        // SIGKILL) leaves everything else removed.
        removed.extend(remove_cgroups(paths)?);
        Ok(removed)
    }
}

/// Makes `cmd`'s child move itself into the cgroup whose `cgroup.procs`
/// is open (for writing) at `procs` before it execs, so every socket it
/// makes is the cgroup's (socket-level LB translates them). `procs` must
/// stay open until the child is spawned.
pub fn exec_in_cgroup(cmd: &mut Command, procs: &std::fs::File) {
    use std::os::{fd::AsRawFd, unix::process::CommandExt};
    let fd = procs.as_raw_fd();
    // SAFETY: only write(2) (async-signal-safe) runs between fork and exec,
    // on a descriptor the caller keeps open.
    unsafe {
        cmd.pre_exec(move || {
            // "0": the writing process itself.
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Where the nodes' socket-LB cgroups are made, and their names' start.
const CGROUP_ROOT: &str = "/sys/fs/cgroup/unified";
const CGROUP_PREFIX: &str = "pilus-lab-";

/// Removes the nodes' socket-LB cgroups of the lab `paths` names, after
/// killing the processes left in them (the lab's: only what a lab user
/// moved there runs in them). The agents are gone by then, and with their
/// pins their links.
fn remove_cgroups(paths: &Paths) -> Result<Vec<String>, LabError> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else {
        return Ok(removed);
    };
    let start = format!("{CGROUP_PREFIX}{}-", paths.prefix);
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&start) || !e.path().is_dir() {
            continue;
        }
        let procs = e.path().join("cgroup.procs");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids: Vec<i32> = std::fs::read_to_string(&procs)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) on a process of the lab's own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::remove_dir(e.path()).map_err(io(format!("remove {}", e.path().display())))?;
        removed.push(format!("cgroup {}", e.path().display()));
    }
    Ok(removed)
}

/// Processes whose command line contains `needle` (never this one).
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(needle).then_some((pid, cmd))
        })
        .collect()
}
