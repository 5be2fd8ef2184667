//! Tier 3: `pilus trace` across nodes (issue 12). A two-node cluster of
//! `pilus lab` (etcd). Tunnel mode: a trace on node-1 to a pod of node-2
//! ends "to node-2 via tunnel", naming the node whose underlay address the
//! datapath encapsulated to, as real traffic goes; to a pod of its own
//! node it is delivered; the CLI draws the tunnel in the diagram. Direct
//! routing: "to node-2 via the stack", the node of the pod CIDR.
//!
//! Needs root and etcd; fails (never skips) without them. The lab's guard
//! removes agents, etcd, pins, state and namespaces, also on failure.

mod lab_fixture;

use lab_fixture::{LabNode, YES};
use pilus_api_types::{paths, PacketTrace, PacketTraceRequest, TraceLane, TraceOutcome};
use pilus_lab::{
    plan::Routing,
    serve::{Probe, Proto},
};

/// One cluster at a time (2 agents and etcd each: two at once on a 2-core
/// machine slow everything down, as nodes.rs found).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|p| p.into_inner())
}

fn trace(fx: &LabNode, node: &str, from: &str, to: &str) -> PacketTrace {
    fx.client(node)
        .post_json(
            paths::PACKET_TRACE,
            &PacketTraceRequest {
                from: from.into(),
                to: to.into(),
                proto: "tcp".into(),
                port: None,
                sport: None,
            },
        )
        .unwrap_or_else(|e| panic!("trace {from} -> {to} on {node}: {e}"))
}

#[test]
fn a_trace_to_another_nodes_pod_says_which_node_the_tunnel_leads_to() {
    let _one = serial();
    let fx = LabNode::cluster("t12trl", 2, 2, Routing::Tunnel);
    let f1 = fx.lab.pod("frontend-1").unwrap().clone();
    let b1 = fx.lab.pod("backend-1").unwrap().clone();
    let b2 = fx.lab.pod("backend-2").unwrap().clone();
    assert_ne!(f1.node, b2.node);
    let remote = fx
        .lab
        .state
        .plan
        .node(&b2.node)
        .expect("backend-2's node")
        .clone();

    let t = trace(&fx, &f1.node, &f1.ip.to_string(), &format!("{}:80", b2.ip));
    assert_eq!(t.verdict.outcome, TraceOutcome::Tunnel, "{t:#?}");
    assert_eq!(t.verdict.summary, format!("to {} via tunnel", b2.node));
    assert_eq!(t.verdict.node.as_deref(), Some(b2.node.as_str()));
    assert_eq!(t.verdict.tunnel_endpoint, Some(remote.underlay_ip));
    assert!(
        t.steps
            .iter()
            .any(|s| s.to_lane == Some(TraceLane::Tunnel) && s.text.starts_with("to-overlay")),
        "{t:#?}"
    );
    assert_eq!(t.steps.last().unwrap().to_lane, Some(TraceLane::RemoteNode));
    // Real traffic takes that way and arrives.
    assert!(
        matches!(
            fx.probe("frontend-1", "backend-2", Proto::Tcp, YES),
            Probe::Reply { .. }
        ),
        "frontend-1 -> backend-2 over the tunnel"
    );

    // A pod of the same node: delivered there, no tunnel.
    let t = trace(&fx, &f1.node, &f1.ip.to_string(), &format!("{}:80", b1.ip));
    assert_eq!(t.verdict.outcome, TraceOutcome::Delivered, "{t:#?}");

    // The CLI's diagram has the tunnel and the remote node as columns.
    let svg = std::env::temp_dir().join(format!("pilus-t12trl-{}.svg", std::process::id()));
    let out = fx.pilus(
        &f1.node,
        &[
            "trace",
            "--from",
            &f1.ip.to_string(),
            "--to",
            &b2.ip.to_string(),
            "--port",
            "80",
            "--svg",
            svg.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "pilus trace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        text.contains(&format!("Verdict: to {} via tunnel", b2.node)),
        "{text}"
    );
    let drawing = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&svg);
    assert!(drawing.contains(">tunnel<"), "{drawing}");
    assert!(drawing.contains(&format!(">{}<", b2.node)), "{drawing}");
}

#[test]
fn in_direct_routing_a_trace_names_the_node_the_stack_routes_to() {
    let _one = serial();
    let fx = LabNode::cluster("t12trd", 2, 2, Routing::Direct);
    let f1 = fx.lab.pod("frontend-1").unwrap().clone();
    let b2 = fx.lab.pod("backend-2").unwrap().clone();
    let t = trace(&fx, &f1.node, &f1.ip.to_string(), &format!("{}:80", b2.ip));
    assert_eq!(t.verdict.outcome, TraceOutcome::Stack, "{t:#?}");
    assert_eq!(
        t.verdict.summary,
        format!("to {} via the stack (direct routing)", b2.node)
    );
    assert_eq!(t.verdict.node.as_deref(), Some(b2.node.as_str()));
    let last = t.steps.last().unwrap();
    assert_eq!(
        (last.lane, last.to_lane),
        (TraceLane::Node, Some(TraceLane::RemoteNode))
    );
    assert!(
        matches!(
            fx.probe("frontend-1", "backend-2", Proto::Tcp, YES),
            Probe::Reply { .. }
        ),
        "frontend-1 -> backend-2 routed by the stack"
    );
}
