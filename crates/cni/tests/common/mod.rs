//! The fixture the CNI tests share: one node of `pilus lab` (its agent in a
//! node namespace, no pods) and pilus-cni run in that namespace with raw
//! environment variables and stdin, as a runtime runs it.
//!
//! Needs root; fails (never skips) without it. Dropping a [`Node`] removes
//! the agent, its pins and state and every namespace, also on failure.

#![allow(dead_code)]

use pilus_api_types as api;
use pilus_api_types::paths;
use pilus_client::blocking::Client;
use pilus_lab::{cni, Lab, Paths, Plan};
use serde_json::{json, Value};
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

pub fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pilus-cni"))
}

fn assert_root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the CNI driver tests need root"
    );
}

/// One node with its agent; removed on drop.
pub struct Node {
    pub lab: Lab,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = Lab::down(&self.lab.paths) {
            eprintln!("tearing down the test lab: {e}");
        }
    }
}

impl Node {
    pub fn new(tag: &str) -> Node {
        assert_root();
        pilus_netns::remove_stale("t7pod").unwrap();
        Node::with_prefix(&format!("t7{tag}"))
    }

    /// A node whose lab, pins and namespaces are named after `prefix`.
    pub fn with_prefix(prefix: &str) -> Node {
        assert_root();
        let prefix = prefix.to_string();
        let bin_dir = plugin().parent().unwrap().to_path_buf();
        assert!(
            bin_dir.join("pilusd").exists() && bin_dir.join("pilus").exists(),
            "pilusd and pilus must be built next to pilus-cni: run `cargo build --workspace --bins` first"
        );
        let paths = Paths {
            dir: std::env::temp_dir().join(format!("pilus-{prefix}")),
            pins: PathBuf::from(format!("/sys/fs/bpf/pilus-{prefix}")),
            bin_dir,
            prefix: prefix.clone(),
        };
        let _ = Lab::down(&paths);
        let lab = Lab::up(paths, Plan::new(&prefix, 1, 0).unwrap()).expect("lab up");
        Node { lab }
    }

    pub fn socket(&self) -> PathBuf {
        self.lab.state.nodes[0].socket.clone()
    }

    pub fn client(&self) -> Client {
        Client::new(self.socket())
    }

    pub fn node_ns(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.lab.state.nodes[0].netns)
    }

    pub fn conf(&self, version: &str, app: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "pilus",
            "type": "pilus-cni",
            "socket": self.socket(),
            "args": { "cni": { "labels": [ { "key": "app", "value": app } ] } },
        })
    }

    /// Runs the plugin in the node's namespace with exactly these
    /// variables and this stdin.
    pub fn raw(&self, env: &[(&str, &str)], stdin: &[u8]) -> cni::Outcome {
        let plugin = plugin();
        let node_ns = self.node_ns();
        cni::invoke(&cni::Call {
            plugin: &plugin,
            run_in: Some(&node_ns),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            stdin: stdin.to_vec(),
        })
        .expect("run pilus-cni")
    }

    pub fn call(&self, command: &str, cid: &str, netns: &str, conf: &Value) -> cni::Outcome {
        let args = format!("K8S_POD_NAMESPACE=shop;K8S_POD_NAME={cid}");
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", args.as_str()),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        let env: Vec<_> = env.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        self.raw(&env, &serde_json::to_vec(conf).unwrap())
    }

    pub fn status(&self) -> api::Status {
        self.client().get_json(paths::STATUS).unwrap()
    }

    /// Host links in the node namespace other than lo and the underlay.
    pub fn host_links(&self) -> Vec<String> {
        let ns = NetNsRef(self.lab.state.nodes[0].netns.clone());
        ns.links()
            .into_iter()
            .filter(|l| l != "lo" && l != "eth0")
            .collect()
    }

    /// Asserts the node holds no trace of any pod: no link, no address
    /// allocated, no endpoint, no cluster identity, no map entry.
    pub fn assert_clean(&self) {
        assert_eq!(self.host_links(), Vec::<String>::new(), "host links left");
        let s = self.status();
        assert_eq!((s.endpoints, s.ipam_used), (0, 0), "endpoints/IPs left");
        let ids: Vec<api::Identity> = self.client().get_json(paths::IDENTITIES).unwrap();
        let cluster: Vec<_> = ids.iter().filter(|i| i.kind != "reserved").collect();
        assert!(cluster.is_empty(), "identities left: {cluster:?}");
        let eps: Vec<api::BpfEndpointEntry> = self.client().get_json(paths::BPF_ENDPOINTS).unwrap();
        assert!(eps.is_empty(), "endpoint map entries left: {eps:?}");
        let ipc: Vec<api::BpfIpcacheEntry> = self.client().get_json(paths::BPF_IPCACHE).unwrap();
        let pods: Vec<_> = ipc
            .iter()
            .filter(|e| e.prefix.starts_with("198.18.1.") && e.prefix != "198.18.1.1/32")
            .collect();
        assert!(pods.is_empty(), "ipcache entries left: {pods:?}");
        let pol: Vec<api::BpfPolicyEntry> = self.client().get_json(paths::BPF_POLICY).unwrap();
        assert!(pol.is_empty(), "policy entries left: {pol:?}");
    }
}

/// Reads links of a namespace by name with `ip -o link`.
pub struct NetNsRef(pub String);

impl NetNsRef {
    pub fn links(&self) -> Vec<String> {
        let out = std::process::Command::new("ip")
            .args(["-n", &self.0, "-o", "link", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .collect()
    }
}

pub fn ip_of(result: &Value) -> Ipv4Addr {
    result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .parse()
        .unwrap()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
