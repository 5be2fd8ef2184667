//! The `pilus` configurations: the full datapath through the real agent
//! and the real CNI plugin, the monitor at its default aggregation (medium:
//! drops and denials always, traces only for a flow's news), with an allow
//! policy that selects both pods.
//!
//! - [`AgentNode`]: one node — a private pilusd (its own namespace, pins,
//!   state; pod CIDR a /22, so 500 endpoints fit), the two pods attached
//!   by `pilus-cni` as a runtime runs it, filler endpoints made through
//!   the API, and the policy of [`policy_yaml`] at a chosen size.
//! - [`LabPair`]: two nodes of a `pilus lab` cluster (etcd on the
//!   underlay, tunnel or direct routing), a pod on each.

use super::iptables::server_ports;
use crate::{agent::Agent, error::Context, load::Ends, Error};
use pilus_api_types::{self as api, paths};
use pilus_lab::{cni, Lab, LabError, Paths, Plan, Routing, Teardown};
use pilus_netns::NetNs;
use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The private agent's pod CIDR: room for 1,000 endpoints.
const POD_CIDR: &str = "198.18.0.0/22";
/// The most endpoints [`AgentNode`] can hold (its CIDR, less the router
/// and the network and broadcast addresses, with room to spare).
pub const MAX_ENDPOINTS: usize = 1000;
/// The Kubernetes namespace of the bench's pods.
const NAMESPACE: &str = "bench";
/// How long a cluster may take to apply a policy on every node.
const POLICY_WAIT: Duration = Duration::from_secs(30);

/// The policy of the `pilus` and `iptables` configurations, as
/// CiliumNetworkPolicies: the server admits the client on `entries`
/// (protocol, port) pairs (the same as the iptables rules,
/// [`server_ports`]); the client may send to the server; every filler
/// admits the client on the bench's TCP port.
pub fn policy_yaml(entries: usize) -> String {
    let mut ports = String::new();
    for (i, (proto, port)) in server_ports(entries).into_iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(
            ports,
            "{sep}{{port: \"{port}\", protocol: {}}}",
            proto.to_uppercase()
        );
    }
    let doc = |name: &str, app: &str, rules: String| {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: {app}}}}}\n{rules}"
        )
    };
    let from_client = "  - fromEndpoints: [{matchLabels: {app: b13-client}}]\n";
    [
        doc(
            "b13-server",
            "b13-server",
            format!("  ingress:\n{from_client}    toPorts: [{{ports: [{ports}]}}]\n"),
        ),
        doc(
            "b13-client",
            "b13-client",
            "  egress:\n  - toEndpoints: [{matchLabels: {app: b13-server}}]\n".into(),
        ),
        doc(
            "b13-fillers",
            "b13-filler",
            format!(
                "  ingress:\n{from_client}    toPorts: [{{ports: [{{port: \"{}\", protocol: TCP}}]}}]\n",
                crate::load::TCP_PORT
            ),
        ),
    ]
    .join("---\n")
}

fn import(c: &pilus_client::blocking::Client, text: String) -> Result<api::PolicyImported, Error> {
    c.post_json(
        paths::POLICIES,
        &api::PolicyImport {
            files: vec![api::PolicyFile {
                name: "bench-traffic.yaml".into(),
                text,
            }],
        },
    )
    .context("importing the benchmark's policy")
}

/// One node with a private pilusd.
pub(crate) struct AgentNode {
    // Dropped before the agent: the pods' veths go with their namespaces.
    fillers: Vec<NetNs>,
    _pods: [NetNs; 2],
    agent: Agent,
    pub ends: Ends,
}

impl AgentNode {
    pub(crate) fn start(bin_dir: &Path) -> Result<AgentNode, Error> {
        let agent = Agent::start(&bin_dir.join("pilusd"), "b13a", POD_CIDR)?;
        let plugin = bin_dir.join("pilus-cni");
        if !plugin.is_file() {
            return Err(Error::MissingBinary { path: plugin });
        }
        let client = NetNs::new("b13p").context("creating a pod's namespace")?;
        let server = NetNs::new("b13p").context("creating a pod's namespace")?;
        cni_add(&agent, &plugin, &client, "b13-client")?;
        let server_ip = cni_add(&agent, &plugin, &server, "b13-server")?;
        let ends = Ends {
            client: client.path(),
            server: server.path(),
            server_ip,
        };
        Ok(AgentNode {
            fillers: Vec::new(),
            _pods: [client, server],
            agent,
            ends,
        })
    }

    /// Imports the policy at `entries`, replacing the one before; returns
    /// the server endpoint's resolved entries, as the agent counts them.
    pub(crate) fn set_policy(&self, entries: usize) -> Result<usize, Error> {
        let c = self.agent.client();
        import(&c, policy_yaml(entries))?;
        let ep: api::Endpoint = c
            .get_json(&format!("{}/b13-server", paths::ENDPOINTS))
            .context("reading the server's endpoint")?;
        Ok(ep.policy.entries)
    }

    /// Grows the node to `n` filler endpoints (a namespace each, the veth
    /// made by the agent, as `POST /v1/endpoints` does without a CNI).
    pub(crate) fn grow_fillers(&mut self, n: usize) -> Result<(), Error> {
        let c = self.agent.client();
        for i in self.fillers.len()..n {
            let ns = NetNs::new("b13q").context("creating a filler's namespace")?;
            let _: api::EndpointCreated = c
                .post_json(
                    paths::ENDPOINTS,
                    &api::EndpointCreate {
                        container_id: format!("b13-filler-{i}"),
                        netns: ns.path().display().to_string(),
                        namespace: NAMESPACE.into(),
                        pod_name: Some(format!("filler-{i}")),
                        labels: vec!["app=b13-filler".into()],
                        ..Default::default()
                    },
                )
                .context(format!("creating filler endpoint {i}"))?;
            self.fillers.push(ns);
        }
        Ok(())
    }

    /// A client of the private agent.
    pub(crate) fn client(&self) -> pilus_client::blocking::Client {
        self.agent.client()
    }

    /// Endpoints on the node, as the agent counts them.
    pub(crate) fn endpoints(&self) -> Result<usize, Error> {
        let s: api::Status = self
            .agent
            .client()
            .get_json(paths::STATUS)
            .context("GET /v1/status")?;
        Ok(s.endpoints)
    }

    pub(crate) fn check_alive(&mut self) -> Result<(), Error> {
        self.agent.check_alive()
    }
}

/// CNI ADD through `pilus-cni`, as a runtime runs it (in the agent's
/// namespace, the configuration on stdin); the pod's address.
fn cni_add(agent: &Agent, plugin: &Path, pod: &NetNs, id: &str) -> Result<Ipv4Addr, Error> {
    let netconf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "pilus",
        "type": "pilus-cni",
        "socket": agent.socket(),
        "args": { "cni": { "labels": [ { "key": "app", "value": id } ] } },
    });
    let node = agent.node().path();
    let out = cni::invoke(&cni::Call {
        plugin,
        run_in: Some(&node),
        env: cni::env(
            "ADD",
            id,
            &pod.path().display().to_string(),
            "eth0",
            &format!("K8S_POD_NAMESPACE={NAMESPACE};K8S_POD_NAME={id}"),
            plugin,
        ),
        stdin: netconf.to_string().into_bytes(),
    })
    .context(format!("running {}", plugin.display()))?;
    let address = out
        .json
        .as_ref()
        .and_then(|j| j["ips"][0]["address"].as_str())
        .and_then(|a| a.split('/').next()?.parse().ok());
    match (out.success, address) {
        (true, Some(ip)) => Ok(ip),
        _ => Err(Error::Unexpected {
            what: format!("CNI ADD for {id} failed: {}", out.error_msg()),
        }),
    }
}

/// Two nodes of a lab cluster, a pod on each.
pub(crate) struct LabPair {
    lab: Lab,
    _down: Teardown,
    pub ends: Ends,
}

impl LabPair {
    /// A two-node lab (prefix `prefix`, one etcd) with `routing`, a pod
    /// per node, and an allow policy between them applied on both nodes.
    pub(crate) fn start(bin_dir: &Path, prefix: &str, routing: Routing) -> Result<LabPair, Error> {
        let paths = Paths {
            dir: std::env::temp_dir().join(format!("pilus-bench-{prefix}")),
            pins: PathBuf::from(format!("/sys/fs/bpf/pilus-bench-{prefix}")),
            bin_dir: bin_dir.to_path_buf(),
            prefix: prefix.into(),
        };
        // A run killed by a signal never ran its teardown.
        Lab::down(&paths).context("removing a killed run's lab")?;
        let down = Teardown(paths.clone());
        // pilusd's default: no XDP prefilter (on a veth uplink, native
        // XDP turns the peer's GSO off: every segment crosses alone), no
        // masquerade (pod to pod never needs it).
        let plan = Plan::new(prefix, 2, 1)
            .map(Plan::without_prefilter)
            .map(Plan::without_masquerade)
            .and_then(|p| p.clustered(routing, 1, 10))
            .map_err(LabError::from)
            .context("planning the lab")?;
        tracing::info!(routing = routing.name(), "starting a two-node lab");
        // The lab's agents at the default monitor aggregation (medium), as
        // a node runs: traces only for a flow's news, drops always.
        let lab = Lab::up(paths, plan).context("bringing the lab up")?;
        let client = lab.pod("frontend-1").context("the client pod")?;
        let server = lab.pod("frontend-2").context("the server pod")?;
        let ends = Ends {
            client: PathBuf::from("/run/netns").join(&client.netns),
            server: PathBuf::from("/run/netns").join(&server.netns),
            server_ip: server.ip,
        };
        let pair = LabPair {
            lab,
            _down: down,
            ends,
        };
        pair.allow()?;
        Ok(pair)
    }

    /// Imports the allow policy on node-1 and waits until node-2 enforces
    /// it too (it arrives through etcd).
    fn allow(&self) -> Result<(), Error> {
        let text = format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: b13-allow, namespace: {}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: frontend}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: frontend}}}}]\n  egress:\n  - toEndpoints: [{{matchLabels: {{app: frontend}}}}]\n",
            pilus_lab::plan::POD_NAMESPACE
        );
        import(&self.lab.client("node-1"), text)?;
        let deadline = Instant::now() + POLICY_WAIT;
        let c = self.lab.client("node-2");
        loop {
            let policies: Vec<api::PolicySummary> = c
                .get_json(paths::POLICIES)
                .context("listing node-2's policies")?;
            let rev: api::Revision = c.get_json(paths::REVISION).context("node-2's revision")?;
            let there = policies
                .iter()
                .any(|p| p.name.ends_with("b13-allow") && p.endpoints > 0);
            if there && rev.enforced >= rev.revision {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Unexpected {
                    what: format!("node-2 did not enforce the allow policy within {POLICY_WAIT:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_has_one_port_per_entry_and_selects_every_pod() {
        let y = policy_yaml(10);
        assert_eq!(y.matches("apiVersion").count(), 3);
        assert_eq!(y.matches("{port: ").count(), 10 + 1);
        assert!(y.contains("{port: \"5201\", protocol: TCP}, {port: \"5202\", protocol: UDP}]"));
        for app in ["b13-server", "b13-client", "b13-filler"] {
            assert!(y.contains(&format!(
                "endpointSelector: {{matchLabels: {{app: {app}}}}}"
            )));
        }
    }
}
