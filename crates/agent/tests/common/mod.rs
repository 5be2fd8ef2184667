//! The real-traffic fixture shared by the agent's tier-3 tests: pilusd as a
//! child process inside a node namespace, pods (namespaces with a veth,
//! made by the agent) created through its API, echo servers on 80 and 81.
//!
//! Needs root; fails (never skips) without it. Dropping a [`Cluster`]
//! stops the agent and removes its pins, its state and every namespace and
//! link, also when a test fails; a run killed before that is swept by the
//! next one (namespaces, pins and state whose process is gone).

#![allow(dead_code)]

use pilus_api_types::BpfPolicyEntry;
use pilus_api_types::Deleted;
use pilus_api_types::Endpoint;
use pilus_api_types::EndpointCreate;
use pilus_api_types::EndpointCreated;
use pilus_api_types::PolicyFile;
use pilus_api_types::PolicyImport;
use pilus_api_types::PolicyImported;
use pilus_api_types::Status;
use pilus_client::blocking::Client;
use pilus_netns::{probe, ChildGuard, NetNs};
use std::{
    net::SocketAddrV4,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

pub const YES: Duration = Duration::from_secs(3);
pub const NO: Duration = Duration::from_millis(500);

pub struct Pod {
    pub ns: NetNs,
    pub namespace: &'static str,
    pub app: &'static str,
    pub ep: Endpoint,
}

/// Field order is drop order: servers, agent, pins and state, namespaces.
pub struct Cluster {
    pub servers: Vec<probe::EchoServer>,
    pub agent: Option<ChildGuard>,
    pub pins: PathBuf,
    pub dir: PathBuf,
    pub pods: Vec<Pod>,
    pub node: NetNs,
    /// Names this test's namespaces (`<prefix>node-…`, `<prefix>pod-…`),
    /// pins, state directory and node.
    pub prefix: &'static str,
    /// Extra pilusd flags (`--monitor-aggregation none`).
    pub agent_args: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.servers.clear();
        self.agent = None;
        // Removing the pins releases the maps; they are freed when the last
        // program using them goes: its tc filters go with the veths, when
        // the namespaces are deleted.
        if let Err(e) = std::fs::remove_dir_all(&self.pins) {
            eprintln!("could not remove {}: {e}", self.pins.display());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn pilusd() -> &'static str {
    env!("CARGO_BIN_EXE_pilusd")
}

/// The `pilus` CLI, built next to pilusd by `cargo build --workspace`
/// (scripts/test.sh does that first).
pub fn pilus_cli() -> PathBuf {
    let p = Path::new(pilusd()).with_file_name("pilus");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        p.display()
    );
    p
}

impl Cluster {
    /// A node namespace running pilusd (with `agent_args`), no pods yet.
    /// `prefix` (letters and digits) keeps each test file's namespaces and
    /// pins apart from the others'; `tag` each test's within a file.
    pub fn new(prefix: &'static str, tag: &str, agent_args: &[&str]) -> Cluster {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the real-traffic tests need root"
        );
        for ns in ["node", "pod"] {
            pilus_netns::remove_stale(&format!("{prefix}{ns}")).expect("remove stale namespaces");
        }
        remove_stale_dirs(Path::new("/sys/fs/bpf"), prefix);
        remove_stale_dirs(&std::env::temp_dir(), prefix);
        let node = NetNs::new(&format!("{prefix}node")).expect("node namespace");
        node.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
        let dir = std::env::temp_dir().join(format!("pilus-{prefix}-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pins = PathBuf::from(format!(
            "/sys/fs/bpf/pilus-{prefix}-{tag}-{}",
            std::process::id()
        ));
        let mut c = Cluster {
            servers: Vec::new(),
            agent: None,
            pins,
            dir,
            pods: Vec::new(),
            node,
            prefix,
            agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
        };
        c.start_agent();
        c
    }

    /// The four pods of the matrix tests: web and client in `shop`, web
    /// and monitor in `ops`, the namespaces labelled team=shop and
    /// team=ops.
    pub fn four_pods(prefix: &'static str, tag: &str) -> Cluster {
        let mut c = Cluster::new(prefix, tag, &[]);
        for (ns, app) in [
            ("shop", "web"),
            ("shop", "client"),
            ("ops", "web"),
            ("ops", "monitor"),
        ] {
            c.add_pod(ns, app);
        }
        for (ns, team) in [("shop", "team=shop"), ("ops", "team=ops")] {
            let _: pilus_api_types::NamespaceLabels = c
                .client()
                .post_json(
                    &format!("/v1/namespaces/{ns}/labels"),
                    &pilus_api_types::NamespaceLabels {
                        namespace: ns.into(),
                        labels: vec![team.into()],
                        revision: 0,
                    },
                )
                .unwrap();
        }
        c
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("pilus.sock")
    }

    pub fn client(&self) -> Client {
        Client::new(self.socket())
    }

    pub fn start_agent(&mut self) {
        let mut cmd = Command::new(pilusd());
        cmd.args([
            "--netns",
            self.node.name(),
            "--log",
            "warn",
            "--node-name",
            self.prefix,
            "--pod-cidr",
            "198.18.0.0/24",
        ])
        .arg("--state-dir")
        .arg(self.dir.join("state"))
        .arg("--pin-dir")
        .arg(&self.pins)
        .arg("--socket")
        .arg(self.socket())
        .args(&self.agent_args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        self.agent = Some(ChildGuard::spawn(cmd).expect("start pilusd"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = self.client().get_json::<Status>("/v1/status") {
                assert_eq!(s.node_name, self.prefix);
                return;
            }
            if let Some(st) = self.agent.as_mut().unwrap().try_wait().unwrap() {
                panic!("pilusd exited during start-up: {st}");
            }
            assert!(
                Instant::now() < deadline,
                "pilusd did not answer within 20s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as a service manager stops it; waits for the exit.
    pub fn stop_agent(&mut self) {
        let mut g = self.agent.take().expect("agent running");
        unsafe { libc::kill(g.pid() as i32, libc::SIGTERM) };
        let st = g
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("pilusd exits on SIGTERM");
        assert!(st.success(), "pilusd exit status {st}");
    }

    /// SIGKILL: a crash at whatever point the agent was.
    pub fn kill_agent(&mut self) {
        let mut g = self.agent.take().expect("agent running");
        unsafe { libc::kill(g.pid() as i32, libc::SIGKILL) };
        g.wait_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("pilusd dies on SIGKILL");
        // The socket of a killed agent stays behind; the next start
        // replaces it (nothing answers on it).
    }

    pub fn add_pod(&mut self, namespace: &'static str, app: &'static str) {
        self.add_pod_with_labels(namespace, app, &[&format!("app={app}")]);
    }

    /// A pod named `app` with exactly these labels (none: as a runtime that
    /// passes none makes it).
    pub fn add_pod_with_labels(
        &mut self,
        namespace: &'static str,
        app: &'static str,
        labels: &[&str],
    ) {
        let ns = NetNs::new(&format!("{}pod", self.prefix)).expect("pod namespace");
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
        let r: EndpointCreated = self
            .client()
            .post_json(
                "/v1/endpoints",
                &EndpointCreate {
                    container_id: format!("{}-{namespace}-{app}", ns.name()),
                    netns: ns.path().display().to_string(),
                    ifname: "eth0".into(),
                    namespace: namespace.into(),
                    pod_name: Some(app.into()),
                    labels: labels.iter().map(|l| l.to_string()).collect(),
                    ..Default::default()
                },
            )
            .expect("create endpoint");
        assert!(r.created);
        self.servers
            .push(probe::EchoServer::start(&ns, &[80, 81]).unwrap());
        self.pods.push(Pod {
            ns,
            namespace,
            app,
            ep: r.endpoint,
        });
    }

    pub fn import(&self, text: &str) -> Result<PolicyImported, pilus_client::Error> {
        self.client().post_json(
            "/v1/policies",
            &PolicyImport {
                files: vec![PolicyFile {
                    name: "policy.yaml".into(),
                    text: text.into(),
                }],
            },
        )
    }

    pub fn delete_all(&self) {
        let _: Deleted = self.client().delete_json("/v1/policies?all=true").unwrap();
    }

    /// Every (src, dst, port, proto) probed at once; returns the mismatches.
    pub fn matrix(&self, expect: &(dyn Fn(&Pod, &Pod, u16, &str) -> bool + Sync)) -> Vec<String> {
        let mut cases = Vec::new();
        for s in &self.pods {
            for d in &self.pods {
                if std::ptr::eq(s, d) {
                    continue;
                }
                for port in [80u16, 81] {
                    for proto in ["TCP", "UDP"] {
                        cases.push((s, d, port, proto));
                    }
                }
            }
        }
        std::thread::scope(|sc| {
            let handles: Vec<_> = cases
                .iter()
                .map(|&(s, d, port, proto)| {
                    sc.spawn(move || {
                        let want = expect(s, d, port, proto);
                        let dst = SocketAddrV4::new(d.ep.ipv4, port);
                        let t = if want { YES } else { NO };
                        let got = if proto == "TCP" {
                            probe::tcp(&s.ns, dst, t)
                        } else {
                            probe::udp(&s.ns, dst, t)
                        }
                        .expect("probe");
                        (got != want).then(|| {
                            format!(
                                "{}/{} -> {}/{} {port}/{proto}: expected {}, got {}",
                                s.namespace,
                                s.app,
                                d.namespace,
                                d.app,
                                if want { "allowed" } else { "denied" },
                                if got { "allowed" } else { "denied" }
                            )
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect()
        })
    }

    pub fn pod(&self, namespace: &str, app: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.app == app)
            .expect("pod")
    }

    /// Runs the `pilus` CLI against this agent; its stdout (it must
    /// succeed).
    pub fn pilus(&self, args: &[&str]) -> String {
        let out = Command::new(pilus_cli())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pilus {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn bpf_policy_all(&self) -> Vec<BpfPolicyEntry> {
        let mut v = Vec::new();
        for p in &self.pods {
            let e: Vec<BpfPolicyEntry> = self
                .client()
                .get_json(&format!("/v1/bpf/policy/{}", p.ep.id))
                .unwrap();
            v.extend(e);
        }
        v
    }
}

/// Removes `pilus-<prefix>-<tag>-<pid>` directories under `root` whose
/// process is gone: the pins (which keep a killed run's programs attached
/// and maps alive) and state of a run that never reached its guards.
fn remove_stale_dirs(root: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let start = format!("pilus-{prefix}-");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&start) else {
            continue;
        };
        let Some(pid) = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Err(err) = std::fs::remove_dir_all(e.path()) {
            eprintln!("could not remove stale {}: {err}", e.path().display());
        }
    }
}
