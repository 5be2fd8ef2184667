//! Tier 3: `pilus observe` over real traffic in a two-node lab (VXLAN, etcd,
//! pods by pilus-cni, the lab's medium aggregation): flows name both sides
//! (pod, namespace, labels, node; other nodes' pods by the names the
//! cluster store carries), drops carry their reason and the policy
//! that decided, the filters (--pod, --namespace, --verdict, --port,
//! --protocol) return only what they match, `--all-nodes` gathers the other
//! node's flows through this node's agent (node-2's drop of node-1's
//! packet, asked on node-1), `--follow` prints a flow as it happens, the
//! three outputs (compact, table, JSON), and bad filters are refused.
//!
//! Needs root and etcd; fails (never skips) without them. The lab is
//! removed on failure too.

mod lab_fixture;

use lab_fixture::{replied, wait_for, LabNode, DB_FROM_BACKEND, NO, YES};
use pilus_api_types::{paths, Flow, FlowBatch, FlowVerdict, MonitorKind};
use pilus_lab::{plan::Routing, serve::Proto};
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

const PREFIX: &str = "t12obs";

/// `pilus observe ARGS -o json` on `node`: one flow per line.
fn observe(lab: &LabNode, node: &str, args: &[&str]) -> Vec<Flow> {
    let mut all = vec!["observe", "-o", "json", "--last", "4000"];
    all.extend_from_slice(args);
    let out = lab.pilus(node, &all);
    assert!(
        out.status.success(),
        "pilus {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn text(lab: &LabNode, node: &str, args: &[&str]) -> String {
    let out = lab.pilus(node, args);
    assert!(
        out.status.success(),
        "pilus {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ip(lab: &LabNode, pod: &str) -> std::net::Ipv4Addr {
    lab.lab.pod(pod).unwrap().ip
}

#[test]
fn observe_names_flows_filters_them_and_gathers_every_node() {
    let lab = LabNode::cluster(PREFIX, 2, 3, Routing::Tunnel);
    lab.import("node-1", DB_FROM_BACKEND);
    // The policy reaches node-2 through etcd: wait until it enforces it.
    wait_for(
        "node-2 enforcing the policy",
        Duration::from_secs(15),
        || !replied(&lab.probe("frontend-1", "db-2", Proto::Tcp, NO)),
    );
    assert!(replied(&lab.probe(
        "frontend-1",
        "backend-1",
        Proto::Tcp,
        YES
    )));
    assert!(replied(&lab.probe("backend-1", "db-2", Proto::Tcp, YES)));
    assert!(replied(&lab.probe(
        "frontend-1",
        "backend-1",
        Proto::Udp,
        YES
    )));
    assert!(!replied(&lab.probe("frontend-1", "db-2", Proto::Tcp, NO)));
    let (front1, back1, db2) = (
        ip(&lab, "frontend-1"),
        ip(&lab, "backend-1"),
        ip(&lab, "db-2"),
    );

    // This node's flows: its own pods by name, the other node's by address,
    // labels and node.
    let here = observe(&lab, "node-1", &[]);
    assert!(here.iter().all(|f| f.node == "node-1"));
    let same_node = here
        .iter()
        .find(|f| {
            f.source.ip == Some(front1)
                && f.destination.ip == Some(back1)
                && f.protocol == "TCP"
                && f.verdict == FlowVerdict::Forwarded
        })
        .expect("frontend-1 -> backend-1 forwarded on node-1");
    assert_eq!(
        (
            same_node.source.pod.as_deref(),
            same_node.source.namespace.as_deref(),
            same_node.destination.pod.as_deref(),
            same_node.source.node.as_deref(),
        ),
        (
            Some("frontend-1"),
            Some("demo"),
            Some("backend-1"),
            Some("node-1")
        )
    );
    assert!(same_node
        .source
        .labels
        .iter()
        .any(|l| l == "k8s:app=frontend"));
    let to_remote = here
        .iter()
        .find(|f| f.source.ip == Some(back1) && f.destination.ip == Some(db2))
        .expect("backend-1 -> db-2 seen leaving node-1");
    assert_eq!(to_remote.destination.node.as_deref(), Some("node-2"));
    // Named from the cluster store: node-2 published its pod's name.
    assert_eq!(to_remote.destination.pod.as_deref(), Some("db-2"));
    assert_eq!(to_remote.destination.namespace.as_deref(), Some("demo"));
    assert!(to_remote
        .destination
        .labels
        .iter()
        .any(|l| l == "k8s:app=db"));
    // The denied packets were dropped by node-2: not on node-1's list.
    assert!(!here
        .iter()
        .any(|f| f.verdict == FlowVerdict::Dropped && f.destination.ip == Some(db2)));

    // Every node's drops, asked on node-1: node-2 dropped frontend-1's
    // packets, and says why and by which policy.
    let drops = observe(&lab, "node-1", &["--all-nodes", "--verdict", "DROPPED"]);
    assert!(drops.iter().all(|f| f.verdict == FlowVerdict::Dropped));
    let denied = drops
        .iter()
        .find(|f| {
            f.node == "node-2"
                && f.event == MonitorKind::Drop
                && f.source.ip == Some(front1)
                && f.destination.ip == Some(db2)
        })
        .unwrap_or_else(|| panic!("node-2's drop of frontend-1 -> db-2 in {drops:#?}"));
    assert_eq!(denied.destination.pod.as_deref(), Some("db-2"));
    assert_eq!(denied.source.node.as_deref(), Some("node-1"));
    assert_eq!(denied.source.pod.as_deref(), Some("frontend-1"));
    assert_eq!(denied.drop_reason.as_ref().unwrap().name, "DROP_POLICY");
    assert_eq!(
        denied.policy.as_deref(),
        Some("CiliumNetworkPolicy demo/db-from-backend")
    );
    let merged = observe(&lab, "node-1", &["--all-nodes"]);
    assert!(merged.iter().any(|f| f.node == "node-1") && merged.iter().any(|f| f.node == "node-2"));
    assert!(
        merged.windows(2).all(|w| w[0].time_ns <= w[1].time_ns),
        "flows of both nodes merged oldest first"
    );

    // Filters: everything returned matches, and what should be there is.
    // A pod of another node is found by name too.
    let by_pod = observe(&lab, "node-1", &["--all-nodes", "--pod", "demo/db-2"]);
    assert!(by_pod.iter().any(|f| f.node == "node-1") && by_pod.iter().any(|f| f.node == "node-2"));
    assert!(!by_pod.is_empty());
    assert!(by_pod.iter().all(|f| [&f.source, &f.destination]
        .iter()
        .any(|e| e.pod.as_deref() == Some("db-2"))));
    let udp = observe(&lab, "node-1", &["--protocol", "udp"]);
    assert!(udp.iter().any(|f| f.destination.ip == Some(back1)));
    assert!(udp.iter().all(|f| f.protocol == "UDP"));
    let port80 = observe(&lab, "node-1", &["--port", "80", "--namespace", "demo"]);
    assert!(!port80.is_empty());
    assert!(port80
        .iter()
        .all(|f| f.source.port == Some(80) || f.destination.port == Some(80)));
    assert!(observe(&lab, "node-1", &["--namespace", "kube-system"]).is_empty());

    // The compact lines and the table, as a person reads them.
    let compact = text(&lab, "node-1", &["observe", "--last", "4000"]);
    assert!(
        compact
            .lines()
            .any(|l| l.contains("[node-1]: demo/frontend-1:")
                && l.contains("-> demo/backend-1:80")
                && l.contains("FORWARDED")),
        "{compact}"
    );
    let drops = text(
        &lab,
        "node-1",
        &["observe", "--all-nodes", "--verdict", "DROPPED"],
    );
    assert!(
        drops.lines().any(|l| l.contains("[node-2]")
            && l.contains("DROPPED (")
            && l.contains("policy CiliumNetworkPolicy demo/db-from-backend")),
        "{drops}"
    );
    let table = text(&lab, "node-1", &["observe", "-o", "table", "--last", "5"]);
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("TIME") && rows[0].contains("VERDICT"),
        "{table}"
    );
    assert_eq!(rows.len(), 6, "a header and the last 5 flows: {table}");

    // Following: flows of both nodes printed live by a follower on node-1.
    let mut follower = Command::new(lab.lab.paths.bin_dir.join("pilus"))
        .arg("--socket")
        .arg(lab.socket("node-1"))
        .args(["observe", "-f", "-o", "json", "--all-nodes"])
        .args(["--pod", "demo/db-2", "--verdict", "FORWARDED"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The follower asks where "now" is first: traffic until both nodes'
    // flows of it were printed.
    let mut followed: Vec<Flow> = Vec::new();
    for _ in 0..20 {
        assert!(replied(&lab.probe("backend-1", "db-2", Proto::Tcp, YES)));
        std::thread::sleep(Duration::from_millis(300));
        while let Ok(line) = rx.try_recv() {
            followed.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
        }
        if ["node-1", "node-2"]
            .iter()
            .all(|n| followed.iter().any(|f| f.node == *n))
        {
            break;
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        ["node-1", "node-2"]
            .iter()
            .all(|n| followed.iter().any(|f| f.node == *n)),
        "a follower on node-1 printed both nodes' flows within 10 s: {followed:#?}"
    );
    assert!(followed.iter().all(|f| f.verdict == FlowVerdict::Forwarded
        && [&f.source, &f.destination]
            .iter()
            .any(|e| e.pod.as_deref() == Some("db-2"))));

    // Bad filters are refused, with what was expected.
    let c = lab.client("node-1");
    for (q, says) in [
        ("verdict=maybe", "FORWARDED or DROPPED"),
        ("protocol=sctp", "tcp, udp or icmp"),
        ("port=http", "port numbers"),
        ("since=node-1:x", "not a sequence number"),
        ("nodes=some", "local or all"),
    ] {
        let r = c
            .request("GET", &format!("{}?{q}", paths::FLOWS), None)
            .unwrap();
        assert_eq!(r.status, 400, "{q}");
        assert!(
            r.error_message().contains(says),
            "{q}: {}",
            r.error_message()
        );
    }
    let b: FlowBatch = c
        .get_json(&format!("{}?nodes=all&last=0", paths::FLOWS))
        .unwrap();
    assert_eq!(
        b.nodes
            .iter()
            .map(|n| (n.node.as_str(), n.error.is_none()))
            .collect::<Vec<_>>(),
        [("node-1", true), ("node-2", true)]
    );
    let out = lab.pilus("node-1", &["observe", "--verdict", "maybe"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses an unknown verdict"
    );
}
