//! Tier 3: services with real traffic, in a `pilus lab` cluster (node
//! namespaces, etcd, one pilusd per node, pods by pilus-cni): a pod's
//! connections to a ClusterIP spread over backends on its node and on the
//! others; replies come from the frontend (a capture in the client pod, a
//! UDP reply's source); removing a backend leaves a connection to another
//! one undisturbed; a backend's ingress policy denies a client through the
//! frontend as it does directly; a frontend without backends drops with its
//! reason; bad input is refused and the maps stay as they were. In tunnel
//! mode, and briefly with direct routing. The monitor on the service path:
//! each hop of a connection to a frontend whose backend is on another node,
//! with the addresses before and after the translation.
//!
//! Needs root and etcd; fails, never skips, without them. Each lab is
//! removed when its fixture drops, also on failure.

mod lab_fixture;

use lab_fixture::{wait_for, LabNode};
use pilus_api_types::{self as api, paths};
use pilus_lab::{
    capture::{capture, VXLAN_PORT},
    plan::Routing,
    serve::{self, Probe, Proto},
};
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket},
    path::PathBuf,
    time::Duration,
};

/// Frontends are in 198.19.128.0/17: neither a pod CIDR (198.18.<n>.0/24)
/// nor the underlay (198.19.0.0/24).
const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 128, 10);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 128, 11);
const YES: Duration = Duration::from_secs(3);
const NO: Duration = Duration::from_millis(500);

fn lab(prefix: &str, routing: Routing, nodes: u32) -> LabNode {
    LabNode::cluster(prefix, nodes, 2, routing)
}

/// This file's helpers: pods' addresses and namespaces, connections to a
/// frontend, the agents' service maps and drops.
impl LabNode {
    fn pod_ip(&self, pod: &str) -> Ipv4Addr {
        self.lab.pod(pod).unwrap().ip
    }

    fn pod_netns(&self, pod: &str) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.lab.pod(pod).unwrap().netns))
    }

    /// Port 80 of `to` (a frontend or a pod's address) from the pod `from`.
    fn probe_addr(&self, from: &str, to: Ipv4Addr, proto: Proto, timeout: Duration) -> Probe {
        serve::probe(
            &self.pod_netns(from),
            SocketAddrV4::new(to, 80),
            proto,
            timeout,
        )
    }

    /// `n` new TCP connections from `from` to the frontend: how many each
    /// backend (by its greeting) answered.
    fn spread(&self, from: &str, n: usize) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for i in 0..n {
            match self.probe_addr(from, VIP, Proto::Tcp, YES) {
                Probe::Reply { reply, .. } => *seen.entry(reply).or_insert(0) += 1,
                other => panic!("connection {i} from {from} to the frontend: {other:?}"),
            }
        }
        seen
    }

    fn bpf_lb(&self, node: &str) -> Vec<api::BpfLbFrontend> {
        self.client(node).get_json(paths::BPF_LB).unwrap()
    }

    fn drops(&self, node: &str) -> Vec<api::MonitorEvent> {
        let b: api::MonitorBatch = self
            .client(node)
            .get_json(&format!("{}?type=drop&last=500", paths::MONITOR))
            .unwrap();
        b.events
    }
}

/// The web service as Kubernetes would have it: a ClusterIP and an
/// EndpointSlice naming the backends.
fn manifest(backends: &[Ipv4Addr]) -> String {
    let endpoints: String = backends
        .iter()
        .map(|ip| format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: demo}}
spec:
  clusterIP: {VIP}
  selector: {{app: backend}}
  ports:
  - {{name: http, port: 80, targetPort: 80, protocol: TCP}}
  - {{name: echo, port: 80, targetPort: 80, protocol: UDP}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: demo
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
{endpoints}ports:
- {{name: http, port: 80, protocol: TCP}}
- {{name: echo, port: 80, protocol: UDP}}
"
    )
}

/// The sources of every IPv4 packet addressed to pod `pod`, captured in its
/// namespace while `traffic` runs.
fn sources_seen_by(fx: &LabNode, pod: &str, traffic: impl FnOnce()) -> BTreeSet<Ipv4Addr> {
    let me = fx.pod_ip(pod);
    let (cap, ()) = capture(&fx.pod_netns(pod), VXLAN_PORT, traffic).expect("capture in the pod");
    cap.plain
        .into_iter()
        .filter(|(_, dst)| *dst == me)
        .map(|(src, _)| src)
        .collect()
}

/// A UDP datagram to the frontend from `pod`: the greeting and who it
/// came from, as the client's socket sees it.
fn udp_to_vip(fx: &LabNode, pod: &str) -> (String, Ipv4Addr) {
    let _inside = pilus_netlink::netns::enter_path(&fx.pod_netns(pod)).unwrap();
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(YES)).unwrap();
    s.send_to(b"ping\n", SocketAddrV4::new(VIP, 80)).unwrap();
    let mut buf = [0u8; 256];
    let (n, from) = s.recv_from(&mut buf).expect("a UDP reply");
    let from = match from {
        std::net::SocketAddr::V4(a) => {
            assert_eq!(a.port(), 80, "the reply's source port");
            *a.ip()
        }
        other => panic!("reply from {other}"),
    };
    (String::from_utf8_lossy(&buf[..n]).trim().to_string(), from)
}

/// A TCP connection to the frontend from `pod`, kept open, with the
/// backend's greeting.
fn connect_vip(fx: &LabNode, pod: &str) -> (TcpStream, String) {
    let inside = pilus_netlink::netns::enter_path(&fx.pod_netns(pod)).unwrap();
    let mut s = TcpStream::connect_timeout(&SocketAddrV4::new(VIP, 80).into(), YES)
        .expect("connect to the frontend");
    drop(inside);
    // getpeername: the VIP. Per-packet LB never tells the socket about the
    // backend; once connect() is translated at the socket (issue 11's
    // socket-level LB) this is what the getpeername4 hook must keep true.
    assert_eq!(
        s.peer_addr().unwrap(),
        SocketAddrV4::new(VIP, 80).into(),
        "getpeername of a connection to the frontend"
    );
    s.set_read_timeout(Some(YES)).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    let greeting = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    (s, greeting)
}

fn backend_of(greeting: &str) -> &str {
    greeting.strip_prefix("hello from ").expect("a greeting")
}

fn service(backends: &[Ipv4Addr], extra: impl FnOnce(&mut api::Service)) -> api::Service {
    let mut s = api::Service {
        namespace: "demo".into(),
        name: "web".into(),
        frontends: ["TCP", "UDP"]
            .iter()
            .map(|p| api::ServiceFrontend {
                kind: "ClusterIP".into(),
                address: VIP.to_string(),
                port: 80,
                protocol: (*p).into(),
                port_name: if *p == "TCP" { "http" } else { "echo" }.into(),
            })
            .collect(),
        backends: backends
            .iter()
            .flat_map(|ip| {
                ["http", "echo"].map(|n| api::ServiceBackend {
                    address: ip.to_string(),
                    port: 80,
                    weight: 1,
                    state: "active".into(),
                    port_name: n.into(),
                })
            })
            .collect(),
        algorithm: "random".into(),
        session_affinity_seconds: None,
        external_traffic_policy: None,
    };
    extra(&mut s);
    s
}

const BACKENDS_ONLY_FROM_DB: &str = "
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: backend-from-db
  namespace: demo
spec:
  endpointSelector:
    matchLabels:
      app: backend
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: db
";

#[test]
fn services_in_a_tunnel_cluster() {
    let fx = lab("t11tun", Routing::Tunnel, 3);
    let backends: Vec<Ipv4Addr> = ["backend-1", "backend-2", "backend-3"]
        .iter()
        .map(|p| fx.pod_ip(p))
        .collect();

    // Imported from Kubernetes YAML with the CLI on node-1; every node
    // serves it (shared through etcd).
    let file = fx.lab.paths.dir.join("web.yaml");
    std::fs::write(&file, manifest(&backends)).unwrap();
    let out = fx.pilus("node-1", &["service", "import", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "pilus service import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported demo/web"));
    for n in ["node-1", "node-2", "node-3"] {
        wait_for(
            &format!("the service on {n}"),
            Duration::from_secs(5),
            || {
                fx.bpf_lb(n)
                    .iter()
                    .any(|f| f.frontend == format!("{VIP}:80/TCP") && f.count == 3)
            },
        );
    }
    let lb = fx.pilus("node-2", &["bpf", "lb", "list"]);
    assert!(String::from_utf8_lossy(&lb.stdout).contains(&format!("{VIP}:80/TCP")));

    // Spread: a backend on the client's node and two on others, each
    // about a third of 60 new connections (binomial: each gets at least 8
    // unless something is wrong, p < 1e-4).
    let spread = fx.spread("frontend-1", 60);
    assert_eq!(spread.len(), 3, "every backend answers: {spread:?}");
    for (b, n) in &spread {
        assert!(*n >= 8, "{b} got {n} of 60: {spread:?}");
    }

    // Replies come from the frontend: nothing from port 80 reaches the
    // client pod with a backend's address, and UDP replies' source is it.
    let seen = sources_seen_by(&fx, "frontend-1", || {
        fx.spread("frontend-1", 10);
    });
    assert_eq!(
        seen,
        BTreeSet::from([VIP]),
        "sources of replies in a capture"
    );
    let mut udp_backends = BTreeSet::new();
    for _ in 0..20 {
        let (greeting, from) = udp_to_vip(&fx, "frontend-2");
        assert_eq!(from, VIP, "UDP reply's source");
        udp_backends.insert(greeting);
    }
    assert!(udp_backends.len() >= 2, "UDP spreads too: {udp_backends:?}");

    // A long-lived connection to one backend is undisturbed when another
    // backend is removed, and new flows no longer reach the removed one.
    let (mut conn, greeting) = connect_vip(&fx, "frontend-3");
    let kept = backend_of(&greeting).to_string();
    let gone = ["backend-1", "backend-2", "backend-3"]
        .into_iter()
        .find(|b| *b != kept)
        .unwrap();
    let rest: Vec<Ipv4Addr> = ["backend-1", "backend-2", "backend-3"]
        .into_iter()
        .filter(|b| *b != gone)
        .map(|b| fx.pod_ip(b))
        .collect();
    let r: api::ServiceUpserted = fx
        .client("node-2")
        .post_json(paths::SERVICES, &service(&rest, |_| {}))
        .unwrap();
    assert!(!r.created);
    for n in ["node-1", "node-2", "node-3"] {
        wait_for(
            &format!("two backends on {n}"),
            Duration::from_secs(5),
            || fx.bpf_lb(n).iter().all(|f| f.count == 2),
        );
    }
    conn.write_all(b"still there?\n").unwrap();
    let mut buf = [0u8; 64];
    let n = conn.read(&mut buf).expect("the kept connection answers");
    assert_eq!(&buf[..n], b"still there?\n", "echoed by {kept}");
    let after = fx.spread("frontend-3", 20);
    assert!(
        !after.contains_key(&format!("hello from {gone}")),
        "{gone} was removed: {after:?}"
    );
    drop(conn);

    // Maglev: the same spread over the two backends.
    let r: api::ServiceUpserted = fx
        .client("node-1")
        .post_json(
            paths::SERVICES,
            &service(&backends, |s| s.algorithm = "maglev".into()),
        )
        .unwrap();
    assert!(!r.created);
    wait_for("maglev on node-1", Duration::from_secs(5), || {
        fx.bpf_lb("node-1").iter().all(|f| f.algorithm == "maglev")
    });
    let spread = fx.spread("frontend-1", 45);
    assert_eq!(spread.len(), 3, "maglev spreads over all three: {spread:?}");

    // A frontend without backends drops, with its reason.
    let empty = api::Service {
        name: "empty".into(),
        frontends: vec![api::ServiceFrontend {
            kind: "ClusterIP".into(),
            address: EMPTY_VIP.to_string(),
            port: 80,
            protocol: "TCP".into(),
            port_name: String::new(),
        }],
        backends: Vec::new(),
        ..service(&[], |_| {})
    };
    let _: api::ServiceUpserted = fx
        .client("node-1")
        .post_json(paths::SERVICES, &empty)
        .unwrap();
    assert_eq!(
        serve::probe(
            &fx.pod_netns("frontend-1"),
            SocketAddrV4::new(EMPTY_VIP, 80),
            Proto::Tcp,
            NO
        ),
        Probe::Timeout
    );
    wait_for("the no-backend drop", Duration::from_secs(3), || {
        fx.drops("node-1").iter().any(|e| {
            e.reason
                .as_ref()
                .is_some_and(|r| r.name == "DROP_NO_SERVICE_BACKEND")
                && e.packet.dst_ip == Some(EMPTY_VIP)
        })
    });

    // Bad input: refused with a clear message, the maps unchanged.
    let c = fx.client("node-1");
    let before = (
        fx.bpf_lb("node-1"),
        c.get_json::<Vec<api::ServiceInfo>>(paths::SERVICES)
            .unwrap(),
    );
    let outside = Ipv4Addr::new(198, 18, 99, 1);
    let bad: Vec<(&str, api::Service, &str)> = vec![
        (
            "malformed frontend",
            api::Service {
                name: "bad".into(),
                ..service(&[], |s| s.frontends[0].address = "198.19.128.300".into())
            },
            "is not an IPv4 address",
        ),
        (
            "a frontend another service has",
            api::Service {
                name: "bad".into(),
                ..service(&[], |_| {})
            },
            "is defined twice: by demo/web and by demo/bad",
        ),
        (
            "a backend outside every known range",
            service(&[fx.pod_ip("backend-1"), outside], |_| {}),
            "198.18.99.1 is outside every known range",
        ),
    ];
    for (what, s, want) in bad {
        let e = c
            .post_json::<_, api::ServiceUpserted>(paths::SERVICES, &s)
            .expect_err(what);
        match &e {
            pilus_client::Error::Status { status, message } => {
                assert_eq!(*status, 400, "{what}: {e}");
                assert!(message.contains(want), "{what}: {message}");
            }
            other => panic!("{what}: {other}"),
        }
    }
    let unknown = c
        .request(
            "PUT",
            paths::SERVICES,
            Some(br#"{"namespace":"demo","name":"x","frontends":[],"colour":"red"}"#),
        )
        .unwrap();
    assert_eq!(unknown.status, 400, "an unknown field");
    let after = (
        fx.bpf_lb("node-1"),
        c.get_json::<Vec<api::ServiceInfo>>(paths::SERVICES)
            .unwrap(),
    );
    assert_eq!(after, before, "bad input changed the maps or the services");
    // The CLI exits 2 on bad input.
    let out = fx.pilus(
        "node-1",
        &[
            "service",
            "upsert",
            "demo/bad",
            "--frontend",
            "198.19.128.12:0",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Policy through the service: backends admit only app=db, so the
    // frontend pods are denied through the frontend as directly.
    let _: api::PolicyImported = c
        .post_json(
            paths::POLICIES,
            &api::PolicyImport {
                files: vec![api::PolicyFile {
                    name: "policy.yaml".into(),
                    text: BACKENDS_ONLY_FROM_DB.into(),
                }],
            },
        )
        .unwrap();
    for n in ["node-1", "node-2", "node-3"] {
        wait_for(
            &format!("the policy on {n}"),
            Duration::from_secs(5),
            || {
                let s: api::Status = fx.client(n).get_json(paths::STATUS).unwrap();
                s.policies == 1
            },
        );
    }
    for _ in 0..6 {
        assert_eq!(
            fx.probe_addr("frontend-1", VIP, Proto::Tcp, NO),
            Probe::Timeout,
            "through the frontend"
        );
    }
    assert_eq!(
        fx.probe_addr("frontend-1", fx.pod_ip("backend-2"), Proto::Tcp, NO),
        Probe::Timeout,
        "directly"
    );
    // The drop names the chosen backend: on the backend's node, or on
    // node-1 for the local one.
    let policy_drop = |n: &str| {
        fx.drops(n).iter().any(|e| {
            e.reason.as_ref().is_some_and(|r| r.name == "DROP_POLICY")
                && e.packet.src_ip == Some(fx.pod_ip("frontend-1"))
                && backends.iter().any(|b| e.packet.dst_ip == Some(*b))
        })
    };
    wait_for(
        "policy drops of the translated packets",
        Duration::from_secs(3),
        || {
            ["node-1", "node-2", "node-3"]
                .iter()
                .any(|n| policy_drop(n))
        },
    );

    // The conntrack GC has run and is reported.
    wait_for("a conntrack GC pass", Duration::from_secs(15), || {
        fx.client("node-1")
            .get_json::<api::ConntrackStatus>(paths::CONNTRACK)
            .is_ok_and(|c| c.gc_runs > 0 && c.max_entries > 0)
    });
    // ... and its Prometheus metrics are the real GC's: the same passes and
    // removals as the status (read again until no pass falls between).
    wait_for(
        "the GC's passes in the metrics",
        Duration::from_secs(15),
        || {
            let st: api::ConntrackStatus = fx.client("node-1").get_json(paths::CONNTRACK).unwrap();
            let m = fx
                .http_get("node-1", METRICS, "/metrics", "text/plain")
                .body;
            sample(&m, "pilus_conntrack_gc_runs_total") == Some(st.gc_runs as f64)
                && sample(&m, "pilus_conntrack_gc_deleted_entries_total")
                    == Some(st.gc_deleted as f64)
                && sample(&m, "pilus_conntrack_gc_duration_seconds_count")
                    == Some(st.gc_runs as f64)
        },
    );
}

/// The agent's metrics address inside its node's namespace (the default).
const METRICS: &str = "127.0.0.1:9962";

/// The value of `series` (name and labels exactly) in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn services_with_direct_routing() {
    let fx = lab("t11dir", Routing::Direct, 2);
    let backends = [fx.pod_ip("backend-1"), fx.pod_ip("backend-2")];
    let _: api::ServiceUpserted = fx
        .client("node-2")
        .post_json(paths::SERVICES, &service(&backends, |_| {}))
        .unwrap();
    wait_for("the service on node-1", Duration::from_secs(5), || {
        fx.bpf_lb("node-1").len() == 2
    });
    let spread = fx.spread("frontend-1", 30);
    assert_eq!(spread.len(), 2, "local and remote backend: {spread:?}");
    let seen = sources_seen_by(&fx, "frontend-1", || {
        fx.spread("frontend-1", 6);
    });
    assert_eq!(seen, BTreeSet::from([VIP]));
    let (_, from) = udp_to_vip(&fx, "frontend-1");
    assert_eq!(from, VIP);
}

// ---------------------------------------------------------------------
// The monitor on the service path (issue 12)
// ---------------------------------------------------------------------

/// (node, observation point, state, src, dst, src identity, dst identity)
/// of a trace: the addresses show where the datapath translated.
type SvcHop = (String, String, String, String, String, u32, u32);

/// A pod's connection to a ClusterIP whose one backend is on the other
/// node, at aggregation none: the SYN leaves the client addressed to the
/// frontend, is translated to the backend in from-endpoint (to-overlay
/// already carries the backend's address), crosses the tunnel and is
/// delivered; the SYN-ACK comes back from the backend and is translated
/// back to the frontend before the client sees it (node-1's to-endpoint),
/// as seed 003 walks it.
#[test]
fn a_service_flow_shows_each_hop_with_the_frontend_then_the_backend() {
    let fx = lab("t12evsvc", Routing::Tunnel, 2);
    let b2 = fx.pod_ip("backend-2");
    let f1 = fx.pod_ip("frontend-1");
    let _: api::ServiceUpserted = fx
        .client("node-1")
        .post_json(paths::SERVICES, &service(&[b2], |_| {}))
        .unwrap();
    for n in ["node-1", "node-2"] {
        wait_for(
            &format!("the service on {n}"),
            Duration::from_secs(5),
            || {
                fx.bpf_lb(n)
                    .iter()
                    .any(|f| f.frontend == format!("{VIP}:80/TCP"))
            },
        );
        fx.set_aggregation(n, "none");
    }
    let (s1, s2) = (fx.monitor_next("node-1"), fx.monitor_next("node-2"));
    let (_conn, greeting) = connect_vip(&fx, "frontend-1");
    assert_eq!(backend_of(&greeting), "backend-2");
    let ours = |e: &api::MonitorEvent| {
        let ends = [e.packet.src_ip, e.packet.dst_ip];
        ends.contains(&Some(f1)) && (ends.contains(&Some(VIP)) || ends.contains(&Some(b2)))
    };
    let traces = |n: &str, since: u64| -> Vec<api::MonitorEvent> {
        let mut all = Vec::new();
        wait_for(&format!("{n}'s traces"), Duration::from_secs(3), || {
            let b: api::MonitorBatch = fx
                .client(n)
                .get_json(&format!("{}?since={since}&type=trace", paths::MONITOR))
                .unwrap();
            all = b.events.into_iter().filter(ours).collect();
            all.iter()
                .filter(|e| {
                    e.packet.tcp_flags.as_deref()
                        == Some(&["SYN".to_string(), "ACK".to_string()][..])
                })
                .count()
                >= 2
        });
        all
    };
    let (t1, t2) = (traces("node-1", s1), traces("node-2", s2));
    let hops = |node: &str, evs: &[api::MonitorEvent], flags: &[&str]| -> Vec<SvcHop> {
        let want: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        evs.iter()
            .filter(|e| e.packet.tcp_flags.as_ref() == Some(&want))
            .map(|e| {
                let at = |ip: Option<Ipv4Addr>| match ip {
                    Some(ip) if ip == VIP => "frontend".to_string(),
                    Some(ip) if ip == f1 => "frontend-1".to_string(),
                    Some(ip) if ip == b2 => "backend-2".to_string(),
                    other => format!("{other:?}"),
                };
                (
                    node.to_string(),
                    e.observation_point.clone(),
                    e.state.clone(),
                    at(e.packet.src_ip),
                    at(e.packet.dst_ip),
                    e.src_identity,
                    e.dst_identity,
                )
            })
            .collect()
    };
    let mut request = hops("node-1", &t1, &["SYN"]);
    request.extend(hops("node-2", &t2, &["SYN"]));
    let mut reply = hops("node-2", &t2, &["SYN", "ACK"]);
    reply.extend(hops("node-1", &t1, &["SYN", "ACK"]));
    let (f, b) = (
        fx.lab.pod("frontend-1").unwrap().identity,
        fx.lab.pod("backend-2").unwrap().identity,
    );
    let h = |node: &str, obs: &str, state: &str, src: &str, dst: &str, si: u32, di: u32| {
        (
            node.to_string(),
            obs.to_string(),
            state.to_string(),
            src.to_string(),
            dst.to_string(),
            si,
            di,
        )
    };
    assert_eq!(
        request,
        [
            h(
                "node-1",
                "from-endpoint",
                "unknown",
                "frontend-1",
                "frontend",
                f,
                // Before the translation the destination is the frontend,
                // which no ipcache entry names: world.
                2
            ),
            h(
                "node-1",
                "to-overlay",
                "new",
                "frontend-1",
                "backend-2",
                f,
                b
            ),
            h(
                "node-2",
                "from-overlay",
                "unknown",
                "frontend-1",
                "backend-2",
                f,
                b
            ),
            h(
                "node-2",
                "to-endpoint",
                "new",
                "frontend-1",
                "backend-2",
                f,
                b
            ),
        ]
    );
    assert_eq!(
        reply,
        [
            h(
                "node-2",
                "from-endpoint",
                "unknown",
                "backend-2",
                "frontend-1",
                b,
                f
            ),
            h(
                "node-2",
                "to-overlay",
                "reply",
                "backend-2",
                "frontend-1",
                b,
                f
            ),
            h(
                "node-1",
                "from-overlay",
                "unknown",
                "backend-2",
                "frontend-1",
                b,
                f
            ),
            h(
                "node-1",
                "to-endpoint",
                "reply",
                "frontend",
                "frontend-1",
                b,
                f
            ),
        ]
    );
}
