//! Flows (`GET /v1/flows`, `pilus observe`): the monitor's bounded ring of
//! events read as Hubble-like flow records, named from the control plane,
//! filtered, and — with `nodes=all` — gathered from every node of the
//! cluster, as Hubble Relay does.
//!
//! Pods of other nodes are named from the cluster store (each node
//! publishes its pods' names with their identities).
//!
//! The flow buffer is the monitor's ring ([`crate::monitor::CAPACITY`]
//! records): flows are its trace, drop and policy-verdict events, so the
//! agent keeps one bounded copy of what the datapath reported, not two.
//! Each agent of a cluster also serves `GET /v1/flows` (this node's only,
//! nothing else) on its underlay address, port
//! [`api::FLOWS_PEER_PORT`](pilus_api_types::FLOWS_PEER_PORT), where the
//! agent a client asked reaches it.

use pilus_api_types as api;
use pilus_controlplane::ControlPlane;
use pilus_monitor::flow::FlowNames;
use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
};

/// What the cluster knows about the sides of this node's flows: identity
/// labels, and the node each address lives behind.
pub struct AgentFlowNames {
    node: String,
    labels: HashMap<u32, Vec<String>>,
    nodes: HashMap<Ipv4Addr, String>,
    pods: HashMap<Ipv4Addr, String>,
}

impl AgentFlowNames {
    pub fn new(cp: &ControlPlane) -> AgentFlowNames {
        let node = cp.node_name().to_owned();
        let underlay: HashMap<Ipv4Addr, String> = cp
            .nodes_view()
            .into_iter()
            .map(|n| (n.underlay_ip, n.name))
            .collect();
        let mut nodes: HashMap<Ipv4Addr, String> = HashMap::new();
        for e in cp.endpoints_view() {
            nodes.insert(e.ipv4, node.clone());
        }
        for entry in cp.ipcache_view() {
            let Some(ip) = entry
                .prefix
                .strip_suffix("/32")
                .and_then(|p| p.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let behind = entry
                .sources
                .iter()
                .find_map(|s| s.tunnel_endpoint)
                .and_then(|t| underlay.get(&t).cloned());
            if let Some(n) = behind {
                nodes.entry(ip).or_insert(n);
            }
        }
        for (ip, name) in &underlay {
            nodes.entry(*ip).or_insert_with(|| name.clone());
        }
        AgentFlowNames {
            node,
            labels: cp
                .identities_view()
                .into_iter()
                .map(|i| (i.id, i.labels))
                .collect(),
            nodes,
            pods: cp.remote_pods(),
        }
    }
}

impl FlowNames for AgentFlowNames {
    fn node(&self) -> String {
        self.node.clone()
    }
    fn labels(&self, identity: u32) -> Vec<String> {
        self.labels.get(&identity).cloned().unwrap_or_default()
    }
    fn node_of(&self, ip: Ipv4Addr) -> Option<String> {
        self.nodes.get(&ip).cloned()
    }
    fn pod_of(&self, ip: Ipv4Addr) -> Option<String> {
        self.pods.get(&ip).cloned()
    }
}

/// `since`: a sequence number of this node (`120`), or a cursor per node as
/// a cluster-wide answer hands out (`node-1:120,node-2:7`).
pub fn parse_since(s: &str) -> Result<Since, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Since::default());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Since {
            here: Some(n),
            nodes: BTreeMap::new(),
        });
    }
    let mut nodes = BTreeMap::new();
    for part in s.split(',') {
        let (node, seq) = part
            .rsplit_once(':')
            .ok_or_else(|| format!("since={part:?}: expected a sequence number or NODE:SEQ,..."))?;
        let seq = seq
            .parse::<u64>()
            .map_err(|_| format!("since={part:?}: {seq:?} is not a sequence number"))?;
        if node.is_empty() || nodes.insert(node.to_owned(), seq).is_some() {
            return Err(format!("since={part:?}: a node named twice, or no node"));
        }
    }
    Ok(Since { here: None, nodes })
}

/// Where each node's flows are to resume.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Since {
    /// A plain number: this node's cursor.
    pub here: Option<u64>,
    pub nodes: BTreeMap<String, u64>,
}

impl Since {
    /// The cursor for `node` (`local`: the node answering).
    pub fn of(&self, node: &str, local: bool) -> u64 {
        match (self.nodes.get(node), local) {
            (Some(n), _) => *n,
            (None, true) => self.here.unwrap_or(0),
            (None, false) => 0,
        }
    }
}

/// The query string of a peer's `GET /v1/flows` for its own flows.
pub fn peer_query(
    filter: &[(String, String)],
    since: u64,
    wait_ms: u64,
    last: Option<usize>,
) -> String {
    let mut q: Vec<(&str, String)> = filter
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    q.push(("since", since.to_string()));
    q.push(("wait_ms", wait_ms.to_string()));
    if let Some(n) = last {
        q.push(("last", n.to_string()));
    }
    q.push(("nodes", "local".into()));
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    format!("{}?{}", api::paths::FLOWS, pilus_client::encode_query(&q))
}

/// One answer of many nodes: flows merged oldest first (by time, then node
/// and sequence, so equal times keep a stable order), `last` applied to
/// the merge.
pub fn merge(batches: Vec<api::FlowBatch>, last: Option<usize>) -> api::FlowBatch {
    let mut nodes = Vec::new();
    let mut flows = Vec::new();
    for b in batches {
        nodes.extend(b.nodes);
        flows.extend(b.flows);
    }
    flows.sort_by(|a, b| (a.time_ns, &a.node, a.seq).cmp(&(b.time_ns, &b.node, b.seq)));
    if let Some(n) = last {
        let skip = flows.len().saturating_sub(n);
        flows.drain(..skip);
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    api::FlowBatch { nodes, flows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_number_or_a_cursor_per_node() {
        assert_eq!(parse_since("").unwrap(), Since::default());
        let s = parse_since("12").unwrap();
        assert_eq!((s.of("node-1", true), s.of("node-2", false)), (12, 0));
        let s = parse_since("node-1:12,node-2:7").unwrap();
        assert_eq!((s.of("node-1", true), s.of("node-2", false)), (12, 7));
        assert_eq!(s.of("node-3", false), 0);
        for bad in [
            "x",
            "node-1:",
            ":4",
            "node-1:1,node-1:2",
            "node-1:-1",
            "1,2",
        ] {
            assert!(parse_since(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn flow(node: &str, seq: u64, time_ns: u64) -> api::Flow {
        api::Flow {
            time_ns,
            node: node.into(),
            seq,
            verdict: api::FlowVerdict::Forwarded,
            event: api::MonitorKind::Trace,
            drop_reason: None,
            observation_point: "to-endpoint".into(),
            traffic_direction: "ingress".into(),
            state: "new".into(),
            protocol: "TCP".into(),
            tcp_flags: Vec::new(),
            source: Default::default(),
            destination: Default::default(),
            policy: None,
            policy_explanation: None,
            match_level: None,
            interface: None,
            summary: String::new(),
        }
    }

    fn batch(node: &str, flows: Vec<api::Flow>) -> api::FlowBatch {
        api::FlowBatch {
            nodes: vec![api::FlowNodeStatus {
                node: node.into(),
                next: flows.last().map_or(0, |f| f.seq),
                lost: 0,
                error: None,
            }],
            flows,
        }
    }

    #[test]
    fn merging_orders_by_time_across_nodes_and_keeps_the_newest() {
        let a = batch("node-2", vec![flow("node-2", 1, 10), flow("node-2", 2, 30)]);
        let b = batch("node-1", vec![flow("node-1", 5, 20), flow("node-1", 6, 30)]);
        let m = merge(vec![a, b], None);
        let order: Vec<(&str, u64)> = m.flows.iter().map(|f| (f.node.as_str(), f.seq)).collect();
        assert_eq!(
            order,
            [("node-2", 1), ("node-1", 5), ("node-1", 6), ("node-2", 2)]
        );
        assert_eq!(m.nodes[0].node, "node-1");
        let m = merge(
            vec![batch("n", vec![flow("n", 1, 1), flow("n", 2, 2)])],
            Some(1),
        );
        assert_eq!(m.flows.len(), 1);
        assert_eq!(m.flows[0].seq, 2);
    }

    #[test]
    fn a_peer_is_asked_for_its_own_flows_from_its_cursor() {
        let q = peer_query(&[("verdict".into(), "DROPPED".into())], 9, 500, None);
        assert_eq!(
            q,
            "/v1/flows?verdict=DROPPED&since=9&wait_ms=500&nodes=local"
        );
    }
}
