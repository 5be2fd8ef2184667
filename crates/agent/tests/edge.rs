//! Tier 3, issue 11: the node's edge on a `pilus lab` cluster (real pilusd
//! with `--masquerade`, real etcd, pods attached by pilus-cni). An
//! "outside" namespace on the lab's underlay bridge, with only its
//! underlay address (no route to any pod CIDR), runs a TCP server that
//! answers every connection with the peer address it sees. Pods of both
//! nodes reach it over TCP and ping it, and it sees each pod's NODE address
//! as the source (a port of masquerade's range); the ping's reply could not
//! even come back otherwise (the outside has no route to the pods). The
//! node's own connection keeps its own port, and pod to pod across nodes
//! keeps working beside it, in tunnel and direct mode.
//!
//! NodePort: an outside client reaches a NodePort on the node that runs
//! its backend, which sees the client's address; the other node drops it.
//!
//! Needs root and etcd; fails (never skips) without them. The lab and the
//! outside namespace are removed when the test ends, also on failure.

mod lab_fixture;

use lab_fixture::LabNode;
use pilus_api_types::{self as api, paths};
use pilus_lab::{
    outside::{Outside, OUTSIDE_IP},
    plan::Routing,
    serve::{self, Probe, Proto},
};
use std::{net::SocketAddrV4, time::Duration};

const YES: Duration = Duration::from_secs(3);

/// One lab at a time (a cluster is two agents and etcd on two cores).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the outside saw of `pod`'s connection: the source address and port.
fn seen_from(fx: &LabNode, outside: &Outside, pod: &str) -> SocketAddrV4 {
    outside
        .seen_from(&fx.lab, pod, YES)
        .expect("probe")
        .unwrap_or_else(|p| panic!("{pod} -> the outside over TCP: {p:?}"))
}

fn pods_reach_the_outside_from_their_nodes_address(prefix: &str, routing: Routing) {
    let _one = serial();
    let fx = LabNode::cluster(prefix, 2, 1, routing);
    let outside = Outside::new(&fx.lab, "out", OUTSIDE_IP).expect("the outside host");
    for (pod, node) in [("frontend-1", 0), ("frontend-2", 1)] {
        let node_ip = fx.lab.state.plan.nodes[node].underlay_ip;
        let pod_ip = fx.lab.pod(pod).unwrap().ip;
        let seen = seen_from(&fx, &outside, pod);
        assert_eq!(
            *seen.ip(),
            node_ip,
            "{pod} ({pod_ip}) must reach the outside from its node's address"
        );
        assert!(
            (61000..=65535).contains(&seen.port()),
            "{pod}: a port of masquerade's range, not {}",
            seen.port()
        );
        // Again: a new connection, a new mapping, the same address.
        assert_eq!(
            *seen_from(&fx, &outside, pod).ip(),
            node_ip,
            "{pod}, second connection"
        );
        assert!(
            outside.pinged_from(&fx.lab, pod, YES).unwrap(),
            "{pod} pings the outside"
        );
    }
    // The node's own connections are its own: they keep their port (from
    // the node's ephemeral range, apart from masquerade's) and work beside
    // the pods'.
    let node_ip = fx.lab.state.plan.nodes[0].underlay_ip;
    let own = serve::probe(
        &fx.netns("node-1"),
        SocketAddrV4::new(OUTSIDE_IP, outside.port),
        Proto::Tcp,
        YES,
    );
    let Probe::Reply { reply, .. } = &own else {
        panic!("node-1 -> the outside over TCP: {own:?}")
    };
    let seen: SocketAddrV4 = reply
        .strip_prefix("peer ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer {reply:?}"));
    assert_eq!(*seen.ip(), node_ip);
    assert!(
        (32768..=60999).contains(&seen.port()),
        "node-1's own port {} is from its ephemeral range",
        seen.port()
    );
    // Pod to pod across the nodes is not masqueraded and still works.
    for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
        let r = fx.probe("frontend-1", "frontend-2", proto, YES);
        assert!(
            matches!(r, Probe::Reply { .. }),
            "frontend-1 -> frontend-2 {proto}: {r:?}"
        );
    }
    drop(outside);
}

#[test]
fn tunnel_mode_pods_reach_the_outside_from_their_nodes_address() {
    pods_reach_the_outside_from_their_nodes_address("t11masqt", Routing::Tunnel);
}

#[test]
fn direct_mode_pods_reach_the_outside_from_their_nodes_address() {
    pods_reach_the_outside_from_their_nodes_address("t11masqd", Routing::Direct);
}

/// The monitor's last events of `kind` (`drop`, `trace`) on `node`.
fn events(fx: &LabNode, node: &str, kind: &str) -> Vec<api::MonitorEvent> {
    let b: api::MonitorBatch = fx
        .client(node)
        .get_json(&format!("{}?type={kind}&last=500", paths::MONITOR))
        .unwrap();
    b.events
}

/// Issue 11's NodePort: a NodePort frontend (0.0.0.0:30080) over
/// frontend-1 (on node-1). An outside client reaches it on node-1's
/// address, the backend sees the client's own address (its to-endpoint
/// trace), and the answer comes back from node-1:30080 (the client's
/// socket, connected there, accepts nothing else). node-2 has no backend of
/// it: the connection is dropped there with DROP_NO_LOCAL_BACKEND.
#[test]
fn a_nodeport_is_served_by_the_nodes_own_backend_with_the_clients_address() {
    let _one = serial();
    let fx = LabNode::cluster("t11nport", 2, 1, Routing::Tunnel);
    let outside = Outside::new(&fx.lab, "out", OUTSIDE_IP).expect("the outside host");
    let backend = fx.lab.pod("frontend-1").unwrap().ip;
    let svc = api::Service {
        namespace: "edge".into(),
        name: "web".into(),
        frontends: vec![api::ServiceFrontend {
            kind: "NodePort".into(),
            address: "0.0.0.0".into(),
            port: 30080,
            protocol: "TCP".into(),
            port_name: String::new(),
        }],
        backends: vec![api::ServiceBackend {
            address: backend.to_string(),
            port: 80,
            weight: 1,
            state: "active".into(),
            port_name: String::new(),
        }],
        algorithm: "random".into(),
        session_affinity_seconds: None,
        external_traffic_policy: None,
    };
    // The store may answer slowly on a loaded machine (a 503 that changed
    // nothing): try again.
    lab_fixture::wait_for("the NodePort service", Duration::from_secs(20), || {
        fx.client("node-1")
            .post_json::<_, api::ServiceUpserted>(paths::SERVICES, &svc)
            .is_ok()
    });
    let node = |i: usize| fx.lab.state.plan.nodes[i].underlay_ip;
    let probe = |ip, timeout| {
        serve::probe(
            &outside.netns_path(),
            SocketAddrV4::new(ip, 30080),
            Proto::Tcp,
            timeout,
        )
    };
    match probe(node(0), YES) {
        Probe::Reply { reply, .. } => assert_eq!(reply, "hello from frontend-1"),
        other => panic!("outside -> node-1:30080: {other:?}"),
    }
    // The agent drains the ring buffer on a timer: wait for the trace.
    let mut last = Vec::new();
    let seen = (0..50).any(|_| {
        last = events(&fx, "node-1", "trace");
        let found = last.iter().any(|e| {
            e.observation_point == "to-endpoint"
                && e.packet.src_ip == Some(OUTSIDE_IP)
                && e.packet.dst_ip == Some(backend)
                && e.packet.dst_port == Some(80)
        });
        if !found {
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    });
    let summary: Vec<_> = last
        .iter()
        .map(|e| {
            (
                e.observation_point.clone(),
                e.packet.src_ip,
                e.packet.dst_ip,
                e.packet.dst_port,
            )
        })
        .collect();
    assert!(
        seen,
        "frontend-1 got the connection from the client's own address: {summary:#?}"
    );

    // node-2 learns the service through etcd; it has no backend of it.
    lab_fixture::wait_for("node-2 drops the NodePort", Duration::from_secs(15), || {
        let r = probe(node(1), Duration::from_millis(300));
        assert!(
            !matches!(r, Probe::Reply { .. }),
            "node-2 has no backend: {r:?}"
        );
        events(&fx, "node-2", "drop").iter().any(|e| {
            e.reason
                .as_ref()
                .is_some_and(|r| r.name == "DROP_NO_LOCAL_BACKEND")
                && e.packet.src_ip == Some(OUTSIDE_IP)
        })
    });
}
