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
//! NodePort and externalIP (externalTrafficPolicy Cluster, then Local), in
//! tunnel and direct mode: an outside client reaches a NodePort, or an
//! externalIP its route sends to either node, on the node that runs its
//! backend, which sees the client's address, and on the other node, which
//! forwards it from its own address; with Local, the other node drops it
//! and the backend's node still serves it.
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
/// An externalIP: neither a node's nor in a pod CIDR; the outside's route
/// sends it to a node.
const EXTERNAL_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 19, 201, 10);

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

/// Waits for `node`'s trace of a packet delivered to `backend`:80 from
/// `src`: whom the backend saw the connection from.
fn wait_for_delivery(
    fx: &LabNode,
    node: &str,
    src: std::net::Ipv4Addr,
    backend: std::net::Ipv4Addr,
) {
    let mut last = Vec::new();
    // The agent drains the ring buffer on a timer: wait for the trace.
    let seen = (0..50).any(|_| {
        last = events(fx, node, "trace");
        let found = last.iter().any(|e| {
            e.observation_point == "to-endpoint"
                && e.packet.src_ip == Some(src)
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
        "{backend} on {node} got the connection from {src}: {summary:#?}"
    );
}

/// Issue 11's NodePort and externalIP: a service with a NodePort frontend
/// (0.0.0.0:30080) and an externalIP one (EXTERNAL_IP:80) over frontend-1
/// (on node-1), reached by an outside client (whose route for the
/// externalIP names node-1, then node-2, as a network announcing it would).
///
/// - externalTrafficPolicy Cluster (the default): through node-1 the
///   backend sees the client's own address (its to-endpoint trace);
///   through node-2, node-2 forwards the connection from its own address
///   (the backend sees node-2's) and the answer comes back from the
///   frontend (node-2:30080, EXTERNAL_IP:80). The client's socket,
///   connected there, accepts nothing else.
/// - Local: node-2, with no backend of its own, drops the connection with
///   DROP_NO_LOCAL_BACKEND; node-1 still serves it.
fn nodeport_and_external_ip_with_each_traffic_policy(prefix: &str, routing: Routing) {
    let _one = serial();
    let fx = LabNode::cluster(prefix, 2, 1, routing);
    let outside = Outside::new(&fx.lab, "out", OUTSIDE_IP).expect("the outside host");
    let backend = fx.lab.pod("frontend-1").unwrap().ip;
    let mut svc = api::Service {
        namespace: "edge".into(),
        name: "web".into(),
        frontends: vec![
            api::ServiceFrontend {
                kind: "NodePort".into(),
                address: "0.0.0.0".into(),
                port: 30080,
                protocol: "TCP".into(),
                port_name: String::new(),
            },
            api::ServiceFrontend {
                kind: "ExternalIP".into(),
                address: EXTERNAL_IP.to_string(),
                port: 80,
                protocol: "TCP".into(),
                port_name: String::new(),
            },
        ],
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
    let upsert = |svc: &api::Service| {
        // The store may answer slowly on a loaded machine (a 503 that
        // changed nothing): try again.
        lab_fixture::wait_for("the NodePort service", Duration::from_secs(20), || {
            fx.client("node-1")
                .post_json::<_, api::ServiceUpserted>(paths::SERVICES, svc)
                .is_ok()
        });
    };
    upsert(&svc);
    let node = |i: usize| fx.lab.state.plan.nodes[i].underlay_ip;
    let probe_to =
        |to: SocketAddrV4, timeout| serve::probe(&outside.netns_path(), to, Proto::Tcp, timeout);
    let probe = |ip, timeout| probe_to(SocketAddrV4::new(ip, 30080), timeout);
    let served = |ip| {
        matches!(probe(ip, Duration::from_millis(500)),
            Probe::Reply { reply, .. } if reply == "hello from frontend-1")
    };
    let external = SocketAddrV4::new(EXTERNAL_IP, 80);
    let served_external = || {
        matches!(probe_to(external, Duration::from_millis(500)),
            Probe::Reply { reply, .. } if reply == "hello from frontend-1")
    };
    match probe(node(0), YES) {
        Probe::Reply { reply, .. } => assert_eq!(reply, "hello from frontend-1"),
        other => panic!("outside -> node-1:30080: {other:?}"),
    }
    wait_for_delivery(&fx, "node-1", OUTSIDE_IP, backend);

    // node-2 learns the service through etcd and forwards to node-1's
    // backend from its own address.
    lab_fixture::wait_for(
        "node-2 serves the NodePort from node-1's backend",
        Duration::from_secs(15),
        || served(node(1)),
    );
    for _ in 0..3 {
        match probe(node(1), YES) {
            Probe::Reply { reply, .. } => assert_eq!(reply, "hello from frontend-1"),
            other => panic!("outside -> node-2:30080 (Cluster): {other:?}"),
        }
    }
    wait_for_delivery(&fx, "node-1", node(1), backend);
    assert!(
        !events(&fx, "node-2", "drop")
            .iter()
            .any(|e| e.packet.src_ip == Some(OUTSIDE_IP)),
        "node-2 dropped none of the client's packets"
    );

    // The externalIP, routed to node-1 (the backend's), then to node-2: the
    // answer (on a socket connected to the externalIP) comes from it.
    outside.route(EXTERNAL_IP, node(0)).expect("route");
    match probe_to(external, YES) {
        Probe::Reply { reply, .. } => assert_eq!(reply, "hello from frontend-1"),
        other => panic!("outside -> {external} via node-1: {other:?}"),
    }
    outside.route(EXTERNAL_IP, node(1)).expect("route");
    match probe_to(external, YES) {
        Probe::Reply { reply, .. } => assert_eq!(reply, "hello from frontend-1"),
        other => panic!("outside -> {external} via node-2 (Cluster): {other:?}"),
    }

    // Local: only the backend's node serves.
    svc.external_traffic_policy = Some("Local".into());
    upsert(&svc);
    let dropped_on_node_2 = |port: u16| {
        events(&fx, "node-2", "drop").iter().any(|e| {
            e.reason
                .as_ref()
                .is_some_and(|r| r.name == "DROP_NO_LOCAL_BACKEND")
                && e.packet.src_ip == Some(OUTSIDE_IP)
                && e.packet.dst_port == Some(port)
        })
    };
    lab_fixture::wait_for("node-2 drops the NodePort", Duration::from_secs(15), || {
        let r = probe(node(1), Duration::from_millis(300));
        !matches!(r, Probe::Reply { .. }) && dropped_on_node_2(30080)
    });
    // The externalIP's route still names node-2.
    let r = probe_to(external, Duration::from_millis(500));
    assert!(
        !matches!(r, Probe::Reply { .. }),
        "node-2 does not serve the externalIP (Local): {r:?}"
    );
    lab_fixture::wait_for(
        "node-2 drops the externalIP's connection",
        Duration::from_secs(5),
        || dropped_on_node_2(80),
    );
    assert!(served(node(0)), "node-1 still serves it (Local)");
    outside.route(EXTERNAL_IP, node(0)).expect("route");
    assert!(served_external(), "node-1 serves the externalIP (Local)");
}

#[test]
fn tunnel_mode_a_nodeport_and_an_external_ip_are_served_on_either_node_and_only_locally_with_local_policy(
) {
    nodeport_and_external_ip_with_each_traffic_policy("t11npt", Routing::Tunnel);
}

#[test]
fn direct_mode_a_nodeport_and_an_external_ip_are_served_on_either_node_and_only_locally_with_local_policy(
) {
    nodeport_and_external_ip_with_each_traffic_policy("t11npd", Routing::Direct);
}
