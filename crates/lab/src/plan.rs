//! What a lab consists of, computed from its size: node and pod names,
//! namespace names, pod CIDRs and underlay addresses. Pure, so the layout
//! rules (addresses only in 198.18.0.0/15, names within limits) are tested
//! without root.

use pilus_abi::Aggregation;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Pod roles, cycled through on every node; a pod's `app` label.
pub const ROLES: &[&str] = &["frontend", "backend", "db", "cache", "worker", "batch"];
/// The Kubernetes namespace lab pods are in.
pub const POD_NAMESPACE: &str = "demo";
pub const MAX_NODES: u8 = 32;
pub const MAX_PODS_PER_NODE: u16 = 200;
/// etcd members a clustered lab may run (odd: a majority must survive).
pub const ETCD_MEMBERS: &[u8] = &[1, 3, 5];
/// The first etcd member's address on the underlay (the others follow);
/// above every node's address.
pub const ETCD_BASE: u8 = 200;
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;

/// How pods on different nodes reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// VXLAN between the nodes; the VNI carries the sender's identity.
    Tunnel,
    /// Pod CIDRs routed on the underlay.
    Direct,
}

impl Routing {
    /// The name pilusd's `--routing` takes.
    pub fn name(self) -> &'static str {
        match self {
            Routing::Tunnel => "tunnel",
            Routing::Direct => "direct",
        }
    }
}

/// One member of the lab's etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdPlan {
    /// `etcd-1`, ...
    pub name: String,
    /// Its address on the underlay bridge (198.19.0.200 and up).
    pub ip: Ipv4Addr,
}

impl EtcdPlan {
    pub fn client_url(&self) -> String {
        format!("http://{}:{ETCD_CLIENT_PORT}", self.ip)
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}:{ETCD_PEER_PORT}", self.ip)
    }
}

/// A lab whose nodes form one cluster: an etcd on the underlay, every
/// agent pointed at it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPlan {
    pub routing: Routing,
    pub etcd: Vec<EtcdPlan>,
    /// Seconds a node's keys outlive its agent.
    pub lease_ttl_s: u64,
}

impl ClusterPlan {
    /// Every member's client URL, comma-separated (pilusd's `--etcd`).
    pub fn etcd_urls(&self) -> String {
        self.etcd
            .iter()
            .map(EtcdPlan::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// `node-1`, ...
    pub name: String,
    pub netns: String,
    /// 198.18.<i>.0/24.
    pub pod_cidr: String,
    /// The node's address on the underlay, 198.19.0.<i>/24.
    pub underlay_ip: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    /// `frontend-1`: role, then node number.
    pub name: String,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub app: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Prefix of every namespace name (and the container ids).
    pub prefix: String,
    pub underlay_netns: String,
    pub nodes: Vec<NodePlan>,
    pub pods: Vec<PodPlan>,
    /// None: every node on its own (no etcd, pods reach only pods of
    /// their node).
    #[serde(default)]
    pub cluster: Option<ClusterPlan>,
    /// The agents' `--monitor-aggregation` (the level's name).
    #[serde(default = "default_aggregation")]
    pub monitor_aggregation: String,
    /// Trace events compiled into the agents' datapath (false:
    /// `--no-trace-events`, the observability benchmark's floor).
    #[serde(default = "yes")]
    pub trace_events: bool,
    /// The agents' `--prefilter` (clustered nodes, which have an uplink):
    /// the XDP prefilter attached to it.
    #[serde(default = "yes")]
    pub prefilter: bool,
    /// The agents' `--socket-lb-cgroup`: socket-level service LB on a
    /// cgroup of each node's own ([`crate::Paths::cgroup`]), made by the
    /// lab. Processes run in it (moved there by whoever starts them) have
    /// their ClusterIP connections translated at the socket.
    #[serde(default)]
    pub socket_lb: bool,
    /// The agents' `--masquerade` (clustered nodes, which have an uplink):
    /// pods reach the outside from their node's address.
    #[serde(default = "yes")]
    pub masquerade: bool,
    /// The agents' `--node-port` (clustered nodes): NodePort frontends
    /// served on the uplink.
    #[serde(default = "yes")]
    pub node_port: bool,
}

fn yes() -> bool {
    true
}

fn default_aggregation() -> String {
    Aggregation::default().name().to_string()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("--nodes must be 1 to {MAX_NODES}, not {0}")]
    Nodes(u32),
    #[error("--pods-per-node must be 0 to {MAX_PODS_PER_NODE}, not {0}")]
    Pods(u32),
    #[error("lab prefix {0:?} must be 1-12 lowercase letters or digits, starting with a letter")]
    Prefix(String),
    #[error("--etcd-members must be one of {ETCD_MEMBERS:?}, not {0}")]
    EtcdMembers(u32),
    #[error("--lease-ttl must be 2 to 3600 seconds, not {0}")]
    LeaseTtl(u64),
}

impl Plan {
    pub fn new(prefix: &str, nodes: u32, pods_per_node: u32) -> Result<Plan, PlanError> {
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 12
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !prefix_ok {
            return Err(PlanError::Prefix(prefix.to_string()));
        }
        if nodes == 0 || nodes > u32::from(MAX_NODES) {
            return Err(PlanError::Nodes(nodes));
        }
        if pods_per_node > u32::from(MAX_PODS_PER_NODE) {
            return Err(PlanError::Pods(pods_per_node));
        }
        let mut plan = Plan {
            prefix: prefix.to_string(),
            underlay_netns: format!("{prefix}-underlay"),
            nodes: Vec::new(),
            pods: Vec::new(),
            cluster: None,
            monitor_aggregation: default_aggregation(),
            trace_events: true,
            prefilter: true,
            socket_lb: false,
            masquerade: true,
            node_port: true,
        };
        for i in 1..=nodes {
            let node = format!("node-{i}");
            plan.nodes.push(NodePlan {
                name: node.clone(),
                netns: format!("{prefix}-node{i}"),
                pod_cidr: format!("198.18.{i}.0/24"),
                underlay_ip: Ipv4Addr::new(198, 19, 0, i as u8),
            });
            for k in 0..pods_per_node as usize {
                let role = ROLES[k % ROLES.len()];
                let round = k / ROLES.len();
                let name = if round == 0 {
                    format!("{role}-{i}")
                } else {
                    format!("{role}{}-{i}", round + 1)
                };
                plan.pods.push(PodPlan {
                    netns: format!("{prefix}-{name}"),
                    container_id: format!("{prefix}-{name}"),
                    name,
                    node: node.clone(),
                    app: role.to_string(),
                });
            }
        }
        Ok(plan)
    }

    /// The same lab with its agents at another monitor aggregation level
    /// than the default (medium).
    pub fn with_monitor_aggregation(mut self, level: Aggregation) -> Plan {
        self.monitor_aggregation = level.name().to_string();
        self
    }

    /// The same lab with trace events compiled out of its datapath.
    /// Agents without the XDP prefilter (pilusd's default).
    pub fn without_prefilter(mut self) -> Plan {
        self.prefilter = false;
        self
    }

    /// The same lab with socket-level LB on each node's cgroup.
    pub fn with_socket_lb(mut self) -> Plan {
        self.socket_lb = true;
        self
    }

    /// Agents without masquerade and NodePort (pilusd's default): the
    /// uplink programs only where direct routing needs them.
    pub fn without_masquerade(mut self) -> Plan {
        self.masquerade = false;
        self.node_port = false;
        self
    }

    pub fn without_trace_events(mut self) -> Plan {
        self.trace_events = false;
        self
    }

    /// The same lab as one cluster: `etcd_members` etcd servers on the
    /// underlay, nodes connected by `routing`.
    pub fn clustered(
        mut self,
        routing: Routing,
        etcd_members: u32,
        lease_ttl_s: u64,
    ) -> Result<Plan, PlanError> {
        if !ETCD_MEMBERS.iter().any(|&m| u32::from(m) == etcd_members) {
            return Err(PlanError::EtcdMembers(etcd_members));
        }
        if !(2..=3600).contains(&lease_ttl_s) {
            return Err(PlanError::LeaseTtl(lease_ttl_s));
        }
        self.cluster = Some(ClusterPlan {
            routing,
            etcd: (0..etcd_members as u8)
                .map(|k| EtcdPlan {
                    name: format!("etcd-{}", k + 1),
                    ip: Ipv4Addr::new(198, 19, 0, ETCD_BASE + k),
                })
                .collect(),
            lease_ttl_s,
        });
        Ok(self)
    }

    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn pod(&self, name: &str) -> Option<&PodPlan> {
        self.pods.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_benchmark_range(ip: Ipv4Addr) -> bool {
        let o = ip.octets();
        o[0] == 198 && (o[1] == 18 || o[1] == 19)
    }

    #[test]
    fn names_and_addresses() {
        let p = Plan::new("plab", 2, 3).unwrap();
        assert_eq!(p.nodes.len(), 2);
        assert_eq!(p.pods.len(), 6);
        assert_eq!(p.nodes[1].pod_cidr, "198.18.2.0/24");
        assert_eq!(p.pods[0].name, "frontend-1");
        assert_eq!(p.pods[4].name, "backend-2");
        assert_eq!(p.pods[4].netns, "plab-backend-2");
        assert_eq!(p.pods[4].app, "backend");
        for n in &p.nodes {
            assert!(in_benchmark_range(n.underlay_ip));
            let base: Ipv4Addr = n.pod_cidr.split('/').next().unwrap().parse().unwrap();
            assert!(in_benchmark_range(base));
        }
    }

    #[test]
    fn many_pods_get_distinct_names() {
        let p = Plan::new("plab", 1, 14).unwrap();
        let mut names: Vec<_> = p.pods.iter().map(|p| p.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 14);
        assert!(p.pod("frontend3-1").is_some());
    }

    #[test]
    fn a_cluster_has_its_etcd_on_the_underlay() {
        let p = Plan::new("plab", 3, 2)
            .unwrap()
            .clustered(Routing::Direct, 3, 15)
            .unwrap();
        let c = p.cluster.as_ref().unwrap();
        assert_eq!(c.routing.name(), "direct");
        assert_eq!(c.etcd.len(), 3);
        assert_eq!(
            c.etcd_urls(),
            "http://198.19.0.200:2379,http://198.19.0.201:2379,http://198.19.0.202:2379"
        );
        for e in &c.etcd {
            assert!(in_benchmark_range(e.ip));
            assert!(p.nodes.iter().all(|n| n.underlay_ip != e.ip));
        }
        // The largest lab's nodes stay below the etcd addresses.
        let big = Plan::new("plab", u32::from(MAX_NODES), 0).unwrap();
        assert!(big
            .nodes
            .iter()
            .all(|n| n.underlay_ip.octets()[3] < ETCD_BASE));
        assert_eq!(
            Plan::new("plab", 3, 2)
                .unwrap()
                .clustered(Routing::Tunnel, 2, 15),
            Err(PlanError::EtcdMembers(2))
        );
        assert_eq!(
            Plan::new("plab", 3, 2)
                .unwrap()
                .clustered(Routing::Tunnel, 1, 0),
            Err(PlanError::LeaseTtl(0))
        );
    }

    #[test]
    fn refuses_bad_sizes() {
        assert_eq!(Plan::new("plab", 0, 1), Err(PlanError::Nodes(0)));
        assert_eq!(Plan::new("plab", 33, 1), Err(PlanError::Nodes(33)));
        assert_eq!(Plan::new("plab", 1, 201), Err(PlanError::Pods(201)));
        assert!(Plan::new("Bad-", 1, 1).is_err());
    }
}
