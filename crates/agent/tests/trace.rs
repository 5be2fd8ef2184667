//! Tier 3: `pilus trace` (issue 12) against real traffic. Four pods on a
//! real agent, a policy matrix (ingress L3-L4, a deny beating an allow,
//! egress to one port and protocol); for every pair, port (80, 81) and
//! protocol (TCP, UDP) the trace's verdict must be what real traffic does,
//! and the traces must leave the live conntrack table, verdict counters and
//! event counters byte-for-byte as they were.
//!
//! Needs root; fails (never skips) without it. The guard removes the agent,
//! its pins, its state, every namespace and link, also when a test fails.

mod common;

use aya::maps::{HashMap as BpfHash, Map, MapData, PerCpuArray};
use common::{Cluster, Pod, NO, YES};
use pilus_abi::{CtEntry, CtKey4, EventStats, MetricsValue};
use pilus_api_types::{
    paths, Deleted, PacketTrace, PacketTraceRequest, Revision, Service, ServiceBackend,
    ServiceFrontend, ServiceUpserted, TraceOutcome,
};
use pilus_netns::probe;
use std::net::SocketAddrV4;
use std::{collections::HashMap, path::Path, time::Instant};

const PREFIX: &str = "t12tr";

fn four_pods(tag: &str) -> Cluster {
    Cluster::four_pods(PREFIX, tag)
}

/// (name, documents); `None` is the round without policy.
fn rounds() -> Vec<(&'static str, Option<&'static str>)> {
    vec![
        ("no policy", None),
        (
            "CNP: shop/web accepts only shop/client on 80/TCP",
            Some(
                r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-client, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#,
            ),
        ),
        (
            "CCNP: deny web (every namespace) from monitor, allow everything else",
            Some(
                r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: no-monitor-to-web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: monitor}}]
"#,
            ),
        ),
        (
            "NetworkPolicy egress: ops/monitor may send only UDP 81",
            Some(
                r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: monitor-out, namespace: ops}
spec:
  podSelector: {matchLabels: {app: monitor}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {}}]
    ports: [{protocol: UDP, port: 81}]
"#,
            ),
        ),
    ]
}

/// The live state a trace must not touch, as bytes: every conntrack entry
/// (sorted by key), every verdict counter and the event counters, per CPU.
fn live_state(pins: &Path) -> String {
    let open = |name: &str| MapData::from_pin(pins.join(name)).expect(name);
    let ct: BpfHash<MapData, CtKey4, CtEntry> =
        BpfHash::try_from(Map::HashMap(open("pilus_ct4"))).unwrap();
    let mut entries: Vec<String> = ct
        .iter()
        .map(|r| format!("{:?}", r.expect("conntrack entry")))
        .collect();
    entries.sort();
    let metrics_data = open("pilus_metrics");
    let n = metrics_data.info().unwrap().max_entries();
    let metrics: PerCpuArray<MapData, MetricsValue> =
        PerCpuArray::try_from(Map::PerCpuArray(metrics_data)).unwrap();
    let counters: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{:?}",
                metrics.get(&i, 0).unwrap().iter().collect::<Vec<_>>()
            )
        })
        .collect();
    let stats: PerCpuArray<MapData, EventStats> =
        PerCpuArray::try_from(Map::PerCpuArray(open("pilus_evstats"))).unwrap();
    let stats = format!("{:?}", stats.get(&0, 0).unwrap().iter().collect::<Vec<_>>());
    format!(
        "conntrack:\n{}\nmetrics:\n{}\nevents:\n{stats}\n",
        entries.join("\n"),
        counters.join("\n")
    )
}

fn trace(c: &Cluster, s: &Pod, d: &Pod, port: u16, proto: &str) -> PacketTrace {
    c.client()
        .post_json(
            paths::PACKET_TRACE,
            &PacketTraceRequest {
                from: format!("{}/{}", s.namespace, s.app),
                to: format!("{}/{}", d.namespace, d.app),
                proto: proto.to_ascii_lowercase(),
                port: Some(port),
                sport: None,
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "trace {}/{} -> {}/{}: {e}",
                s.namespace, s.app, d.namespace, d.app
            )
        })
}

type Case = (String, String, u16, &'static str);

fn key(s: &Pod, d: &Pod, port: u16, proto: &str) -> Case {
    (
        format!("{}/{}", s.namespace, s.app),
        format!("{}/{}", d.namespace, d.app),
        port,
        if proto == "TCP" { "TCP" } else { "UDP" },
    )
}

#[test]
fn trace_agrees_with_real_traffic_for_every_pair_and_changes_nothing() {
    let c = four_pods("matrix");
    for (name, doc) in rounds() {
        c.delete_all();
        if let Some(text) = doc {
            let r = c
                .import(text)
                .unwrap_or_else(|e| panic!("{name}: import failed: {e}"));
            let rev: Revision = c
                .client()
                .get_json(&format!("/v1/policy/revision?wait={}", r.revision))
                .unwrap();
            assert!(rev.enforced >= r.revision);
        }
        // The traces first, on a quiet node: nothing else writes conntrack
        // or the counters meanwhile (the flushed table gives the GC nothing
        // to expire).
        let _: Deleted = c.client().delete_json(paths::BPF_CT).unwrap();
        let before = live_state(&c.pins);
        let started = Instant::now();
        let mut verdicts: HashMap<Case, bool> = HashMap::new();
        let mut n = 0;
        for s in &c.pods {
            for d in &c.pods {
                if std::ptr::eq(s, d) {
                    continue;
                }
                for port in [80u16, 81] {
                    for proto in ["TCP", "UDP"] {
                        let t = trace(&c, s, d, port, proto);
                        n += 1;
                        let allowed = match t.verdict.outcome {
                            TraceOutcome::Delivered => {
                                assert_eq!(
                                    t.verdict.pod.as_deref(),
                                    Some(format!("{}/{}", d.namespace, d.app).as_str()),
                                    "{name}: delivered to the wrong pod: {t:#?}"
                                );
                                true
                            }
                            TraceOutcome::Dropped => {
                                let reason = t.verdict.reason.as_ref().expect("a drop reason");
                                assert!(
                                    reason.name.starts_with("DROP_POLICY"),
                                    "{name}: a pod-to-pod drop other than policy: {t:#?}"
                                );
                                assert!(
                                    t.verdict.policy.is_some(),
                                    "{name}: a policy drop names its policy: {t:#?}"
                                );
                                false
                            }
                            other => panic!("{name}: pod to local pod went {other:?}: {t:#?}"),
                        };
                        verdicts.insert(key(s, d, port, proto), allowed);
                    }
                }
            }
        }
        let took = started.elapsed();
        eprintln!(
            "{name}: {n} traces in {took:?} ({:?} each), {} allowed",
            took / n,
            verdicts.values().filter(|v| **v).count()
        );
        assert_eq!(
            live_state(&c.pins),
            before,
            "{name}: the traces changed the live conntrack, counters or event counters"
        );
        // Now real traffic, expected to do what the traces said.
        let bad = c.matrix(&|s, d, port, proto| verdicts[&key(s, d, port, proto)]);
        assert!(
            bad.is_empty(),
            "{name}: trace and real traffic disagree (expected = the trace):\n{}",
            bad.join("\n")
        );
        // The snapshot does see what packets change: real traffic did.
        assert_ne!(
            live_state(&c.pins),
            before,
            "{name}: real traffic changed nothing?"
        );
    }
}

#[test]
fn trace_names_policy_stack_and_refuses_bad_requests() {
    let c = four_pods("words");
    c.import(rounds()[1].1.unwrap()).unwrap();
    let client = c.pod("shop", "client");
    let web = c.pod("shop", "web");
    let monitor = c.pod("ops", "monitor");

    // Allowed: the ingress verdict names the policy and its rule.
    let t = trace(&c, client, web, 80, "TCP");
    assert_eq!(t.verdict.summary, "delivered to pod shop/web");
    let texts: Vec<&str> = t.steps.iter().map(|s| s.text.as_str()).collect();
    assert!(
        texts
            .iter()
            .any(|s| s.starts_with("policy: ingress of pod shop/web")
                && s.contains("allow (match L3-L4)")
                && s.contains("web-from-client")),
        "{texts:#?}"
    );
    assert!(
        texts.iter().any(|s| s.starts_with("conntrack: new")),
        "{texts:#?}"
    );
    assert!(t.load_ms.is_some(), "the first trace loads the copy");

    // Denied by default: the policy that selects the pod is named.
    let t = trace(&c, monitor, web, 80, "TCP");
    assert_eq!(t.verdict.outcome, TraceOutcome::Dropped);
    assert!(
        t.verdict.summary.starts_with("dropped: Policy denied")
            && t.verdict.summary.contains("web-from-client"),
        "{}",
        t.verdict.summary
    );
    assert!(t.load_ms.is_none(), "later traces reuse the copy");

    // A packet of a live connection (--sport): the trace starts from copies
    // of its conntrack entries, finds it established, skips policy, and
    // leaves the live entries as they were.
    let stream = client
        .ns
        .within(|| {
            std::net::TcpStream::connect_timeout(&SocketAddrV4::new(web.ep.ipv4, 80).into(), YES)
        })
        .unwrap()
        .expect("connect client -> web:80");
    let sport = stream.local_addr().unwrap().port();
    let before = live_state(&c.pins);
    let t: PacketTrace = c
        .client()
        .post_json(
            paths::PACKET_TRACE,
            &PacketTraceRequest {
                from: "shop/client".into(),
                to: "shop/web".into(),
                proto: "tcp".into(),
                port: Some(80),
                sport: Some(sport),
            },
        )
        .unwrap();
    let texts: Vec<&str> = t.steps.iter().map(|s| s.text.as_str()).collect();
    assert!(t.conntrack_copied >= 1, "the flow's entry: {texts:#?}");
    assert!(
        texts
            .iter()
            .any(|s| s.starts_with("conntrack: established flow")),
        "{texts:#?}"
    );
    assert!(
        !texts.iter().any(|s| s.starts_with("policy:")),
        "{texts:#?}"
    );
    assert!(texts[0].contains("tcp ACK"), "{texts:#?}");
    assert_eq!(t.verdict.outcome, TraceOutcome::Delivered);
    assert_eq!(
        live_state(&c.pins),
        before,
        "the live entries were only copied"
    );
    drop(stream);

    // Outside the pods, no tunnel: to the stack. ICMP too.
    let out: PacketTrace = c
        .client()
        .post_json(
            paths::PACKET_TRACE,
            &PacketTraceRequest {
                from: "shop/client".into(),
                to: "198.19.200.1:443".into(),
                proto: "tcp".into(),
                port: None,
                sport: None,
            },
        )
        .unwrap();
    assert_eq!(
        (out.verdict.outcome, out.verdict.summary.as_str()),
        (TraceOutcome::Stack, "to the stack")
    );
    let ping: PacketTrace = c
        .client()
        .post_json(
            paths::PACKET_TRACE,
            &PacketTraceRequest {
                from: "ops/monitor".into(),
                to: "ops/web".into(),
                proto: "icmp".into(),
                port: None,
                sport: None,
            },
        )
        .unwrap();
    assert_eq!(ping.verdict.outcome, TraceOutcome::Delivered);

    // A service: the trace shows the translation to the backend, then the
    // backend's policy; real traffic to the frontend agrees.
    let vip = std::net::Ipv4Addr::new(198, 19, 128, 10);
    let _: ServiceUpserted = c
        .client()
        .post_json(
            paths::SERVICES,
            &Service {
                namespace: "shop".into(),
                name: "websvc".into(),
                frontends: vec![ServiceFrontend {
                    kind: "ClusterIP".into(),
                    address: vip.to_string(),
                    port: 8080,
                    protocol: "TCP".into(),
                    port_name: String::new(),
                }],
                backends: vec![ServiceBackend {
                    address: web.ep.ipv4.to_string(),
                    port: 80,
                    weight: 1,
                    state: "active".into(),
                    port_name: String::new(),
                }],
                algorithm: "random".into(),
                session_affinity_seconds: None,
                external_traffic_policy: None,
            },
        )
        .unwrap();
    let svc = |from: &str| -> PacketTrace {
        c.client()
            .post_json(
                paths::PACKET_TRACE,
                &PacketTraceRequest {
                    from: from.into(),
                    to: format!("{vip}:8080"),
                    proto: "tcp".into(),
                    port: None,
                    sport: None,
                },
            )
            .unwrap()
    };
    let t = svc("shop/client");
    let texts: Vec<&str> = t.steps.iter().map(|s| s.text.as_str()).collect();
    let want = format!(
        "service shop/websvc {vip}:8080: backend {}:80 chosen",
        web.ep.ipv4
    );
    assert!(
        texts.iter().any(|s| s.contains(&want)),
        "{want}: {texts:#?}"
    );
    assert_eq!(t.verdict.summary, "delivered to pod shop/web");
    assert!(probe::tcp(&client.ns, SocketAddrV4::new(vip, 8080), YES).unwrap());
    let t = svc("ops/monitor");
    assert_eq!(t.verdict.outcome, TraceOutcome::Dropped, "{t:#?}");
    assert!(!probe::tcp(&monitor.ns, SocketAddrV4::new(vip, 8080), NO).unwrap());

    // Bad requests: refused with the reason, 400 or 404.
    for (req, status, words) in [
        (
            ("shop/nobody", "shop/web", "tcp", Some(80)),
            404,
            "no local pod",
        ),
        (
            ("shop/client", "shop/web", "sctp", Some(80)),
            400,
            "tcp, udp or icmp",
        ),
        (
            ("shop/client", "shop/web", "tcp", None),
            400,
            "needs a destination port",
        ),
    ] {
        let e = c
            .client()
            .post_json::<_, PacketTrace>(
                paths::PACKET_TRACE,
                &PacketTraceRequest {
                    from: req.0.into(),
                    to: req.1.into(),
                    proto: req.2.into(),
                    port: req.3,
                    sport: None,
                },
            )
            .expect_err("refused");
        let text = e.to_string();
        assert!(text.contains(words), "{req:?}: {text}");
        assert!(
            matches!(e, pilus_client::Error::Status { status: s, .. } if s == status),
            "{req:?}: {text}"
        );
    }

    // The CLI: numbered steps and the verdict, JSON, and the diagram.
    let text = c.pilus(&[
        "trace",
        "--from",
        "shop/client",
        "--to",
        "shop/web",
        "--proto",
        "tcp",
        "--port",
        "81",
    ]);
    assert!(
        text.contains("\n 1. pod shop/client sends") || text.contains("\n1. pod shop/client sends"),
        "{text}"
    );
    eprintln!("{text}");
    assert!(text.contains("Verdict: dropped: Policy denied"), "{text}");
    let svg = c.dir.join("trace.svg");
    let json = c.pilus(&[
        "-o",
        "json",
        "trace",
        "--from",
        "shop/client",
        "--to",
        "shop/web:80",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let t: PacketTrace = serde_json::from_str(&json).unwrap();
    assert_eq!(t.verdict.outcome, TraceOutcome::Delivered);
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(drawing.starts_with("<svg") && drawing.contains("delivered to pod shop/web"));
}
