//! Policy semantics, table-driven and without root: each case imports one
//! policy text (YAML or JSON; CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy,
//! `cilium policy import` rules arrays, Kubernetes NetworkPolicy) into a fresh
//! engine holding pods in three namespaces, optionally changes namespace
//! labels or deletes a policy, and checks one flow (pod, reserved identity or
//! external address → pod or address) against the expected answer.
//!
//! The answer is computed the way the kernel does it: `lookup::verdict` over
//! the resolved map entries — the source's egress AND the destination's
//! ingress. `Engine::trace` must agree, and within each direction the
//! trace's rule-based verdict must agree with its datapath verdict.
//!
//! Covered: matchLabels and matchExpressions (In, NotIn, Exists,
//! DoesNotExist); CNP namespace scoping of subjects and peers, explicit
//! namespace and reserved labels; CCNP across namespaces and its `{}`
//! wildcard; Kubernetes podSelector / namespaceSelector (labels,
//! `kubernetes.io/metadata.name`, `{}`, AND vs OR), ipBlock (which selects
//! the pods inside it, unlike CNP CIDRs; pods have 198.18.0.x addresses),
//! policyTypes,
//! `ingress: [{}]`, deny-all; CIDR, CIDR except, longest-prefix identities,
//! 0.0.0.0/0; entities; deny precedence; port ranges and protocols; unions;
//! `enableDefaultDeny`; namespace relabelling and policy deletion.

use pilus_policy::{lookup, parse_documents, trace::Party, Direction, Engine, Labels};
use std::net::Ipv4Addr;

/// Pods: (name, namespace, labels). The endpoint id is the index + 1.
const PODS: &[(&str, &str, &[&str])] = &[
    (
        "web",
        "shop",
        &["app=web", "tier=front", "pod-template-hash=6d4f"],
    ),
    ("client", "shop", &["app=client"]),
    ("db", "shop", &["app=db", "tier=data"]),
    ("monitor", "ops", &["app=monitor"]),
    // Same pod labels as shop's web, in another namespace.
    ("ops-web", "ops", &["app=web", "tier=front"]),
    ("dev-client", "dev", &["app=client"]),
    // A second pod of shop's web: the two share one identity.
    (
        "web-b",
        "shop",
        &["app=web", "tier=front", "pod-template-hash=6d4f"],
    ),
];

/// The address of pod `i` (index in [`PODS`]): 198.18.0.2, .3, ...
fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 2 + i as u8)
}

/// Tells the engine every pod's address and current identity, as the
/// ipcache does after each change.
fn sync_addresses(e: &mut Engine) {
    for i in 0..PODS.len() {
        let id = e.endpoint(i as u16 + 1).expect("pod").identity;
        e.set_address(pod_ip(i), Some(id));
    }
}

const NAMESPACES: &[(&str, &[&str])] = &[
    ("shop", &["team=shop", "env=prod"]),
    ("ops", &["team=ops"]),
    ("dev", &["env=dev"]),
];

/// What to do after the import, before the flow is checked.
#[derive(Clone, Copy)]
enum After {
    Nothing,
    /// Replace a namespace's labels.
    NamespaceLabels(&'static str, &'static [&'static str]),
    /// Delete the policies `Engine::find_policies` finds by this name.
    Delete(&'static str),
}

struct Case {
    name: &'static str,
    policy: &'static str,
    /// `src -> dst proto/port`; a party is a pod name, a reserved identity
    /// (`host`, `remote-node`, `world`) or an IPv4 address.
    flow: &'static str,
    allowed: bool,
    after: After,
}

fn case(name: &'static str, policy: &'static str, flow: &'static str, allowed: bool) -> Case {
    Case {
        name,
        policy,
        flow,
        allowed,
        after: After::Nothing,
    }
}

impl Case {
    fn then(self, after: After) -> Case {
        Case { after, ..self }
    }
}

fn labels(items: &[&str]) -> Labels {
    Labels::parse_all(items, "k8s").expect("labels")
}

fn engine() -> Engine {
    let mut e = Engine::new();
    for (ns, l) in NAMESPACES {
        e.set_namespace_labels(ns, labels(l)).expect("namespace");
    }
    for (i, (_, ns, l)) in PODS.iter().enumerate() {
        e.upsert_endpoint(i as u16 + 1, ns, &labels(l))
            .expect("endpoint");
    }
    sync_addresses(&mut e);
    e
}

fn reserved(e: &Engine, name: &str) -> u32 {
    e.identities()
        .lookup(&Labels::new().with("reserved", name, ""))
        .unwrap_or_else(|| panic!("no reserved identity {name}"))
}

/// A pod (with its endpoint), a reserved identity, or an address seen with
/// the identity of the longest CIDR identity containing it (else world).
fn party(e: &Engine, name: &str) -> Party {
    // A pod's address is the pod: its /32 in the ipcache beats any CIDR.
    let pod = PODS
        .iter()
        .position(|p| p.0 == name)
        .or_else(|| (0..PODS.len()).find(|&i| pod_ip(i).to_string() == name));
    let (id, ep_id) = if let Some(i) = pod {
        let ep = i as u16 + 1;
        (e.endpoint(ep).expect("pod").identity, Some(ep))
    } else if let Ok(ip) = name.parse::<Ipv4Addr>() {
        let longest = e
            .identities()
            .iter()
            .filter_map(|i| {
                i.cidr
                    .filter(|c| c.contains(&ip))
                    .map(|c| (c.prefix_len(), i.id))
            })
            .max();
        (
            longest.map_or_else(|| reserved(e, "world"), |(_, id)| id),
            None,
        )
    } else {
        (reserved(e, name), None)
    };
    Party {
        identity: e.identities().get(id).expect("identity").clone(),
        ep_id,
        name: name.to_string(),
    }
}

/// The datapath's answer for endpoint `ep`; no resolved policy: allowed.
fn datapath(e: &Engine, ep: u16, dir: Direction, peer: u32, proto: u8, port: u16) -> bool {
    e.endpoint_policy(ep).is_none_or(|p| {
        lookup::verdict(&p.map_entries(ep), p.flags(), ep, dir, peer, proto, port).allowed()
    })
}

fn parse_flow(flow: &str) -> (&str, &str, u8, u16) {
    let f: Vec<&str> = flow.split_whitespace().collect();
    let [src, "->", dst, pp] = f[..] else {
        panic!("bad flow {flow:?}")
    };
    let (proto, port) = pp.split_once('/').expect("proto/port");
    let proto = match proto {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        "icmp" => 1,
        p => panic!("unknown protocol {p}"),
    };
    (src, dst, proto, port.parse().expect("port"))
}

/// Runs one case; the error says what went wrong.
fn run(c: &Case) -> Result<(), String> {
    let mut e = engine();
    let policies = parse_documents(c.policy, c.name).map_err(|err| format!("parse: {err}"))?;
    e.import(policies).map_err(|err| format!("import: {err}"))?;
    match c.after {
        After::Nothing => {}
        After::NamespaceLabels(ns, l) => {
            e.set_namespace_labels(ns, labels(l))
                .map_err(|err| format!("relabel: {err}"))?;
            sync_addresses(&mut e);
        }
        After::Delete(name) => {
            let ids = e.find_policies(name);
            if e.delete(&ids).1 == 0 {
                return Err(format!("no policy {name:?} to delete"));
            }
        }
    }
    let (src, dst, proto, port) = parse_flow(c.flow);
    let (s, d) = (party(&e, src), party(&e, dst));
    let egress = s
        .ep_id
        .is_none_or(|ep| datapath(&e, ep, Direction::Egress, d.identity.id, proto, port));
    let ingress = d
        .ep_id
        .is_none_or(|ep| datapath(&e, ep, Direction::Ingress, s.identity.id, proto, port));
    let mut problems = Vec::new();
    if (egress && ingress) != c.allowed {
        problems.push(format!(
            "map entries: expected {}, got {} (egress {egress}, ingress {ingress})",
            word(c.allowed),
            word(egress && ingress)
        ));
    }
    let t = e.trace(&s, &d, proto, port);
    if t.allowed != c.allowed {
        problems.push(format!(
            "trace: expected {}, got {}",
            word(c.allowed),
            word(t.allowed)
        ));
    }
    for dt in t.egress.iter().chain(&t.ingress) {
        if dt.verdict.allowed() != dt.datapath.allowed() {
            problems.push(format!(
                "trace {}: rules say {:?}, entries say {:?}",
                dt.direction, dt.verdict, dt.datapath
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n  "))
    }
}

fn word(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "denied"
    }
}

#[test]
fn identity_labels_are_pod_labels_namespace_and_namespace_labels() {
    let e = engine();
    let id = e.endpoint(1).expect("web").identity;
    let got = e
        .identities()
        .get(id)
        .expect("identity")
        .labels
        .to_strings();
    assert_eq!(
        got,
        [
            "k8s:app=web",
            "k8s:io.cilium.k8s.namespace.labels.env=prod",
            "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop",
            "k8s:io.cilium.k8s.namespace.labels.team=shop",
            "k8s:io.kubernetes.pod.namespace=shop",
            "k8s:tier=front",
        ]
    );
    // Same pod labels in another namespace: another identity.
    assert_ne!(id, e.endpoint(5).expect("ops-web").identity);
}

#[test]
fn policy_semantics() {
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        if let Err(why) = run(c) {
            failures.push(format!(
                "case {:?}: {} — expected {}\n  {why}\n  policy:\n{}",
                c.name,
                c.flow,
                word(c.allowed),
                c.policy
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

// ---- Policies ----------------------------------------------------------

const WEB_FROM_CLIENT_80: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-client, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;

const DB_EXPRESSIONS_IN_NOTIN: &str = r#"{
  "apiVersion": "cilium.io/v2",
  "kind": "CiliumNetworkPolicy",
  "metadata": {"name": "db-expr", "namespace": "shop"},
  "spec": {
    "endpointSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["data"]}]},
    "ingress": [{"fromEndpoints": [
      {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["client"]}]}
    ]}]
  }
}"#;

const TIERED_EXISTS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: tiered, namespace: shop}
spec:
  endpointSelector:
    matchExpressions: [{key: tier, operator: Exists}]
  ingress:
  - fromEndpoints:
    - matchExpressions: [{key: tier, operator: DoesNotExist}]
"#;

const CLIENT_TO_WEB_CNP: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-out, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: web}}]
"#;

const CCNP_MONITOR_SCRAPES_WEB: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: monitor-scrapes-web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: monitor}}]
    toPorts: [{ports: [{port: "9090"}]}]
"#;

const WEB_FROM_OPS_NAMESPACE: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-ops, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints:
    - matchLabels: {k8s:io.kubernetes.pod.namespace: ops}
"#;

const WEB_FROM_HOST_RESERVED_LABEL: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-host, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints:
    - matchLabels: {"reserved:host": ""}
"#;

const CNP_DB_FROM_EMPTY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: same-namespace, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{}]
"#;

const CCNP_DB_FROM_EMPTY: &str = r#"{
  "apiVersion": "cilium.io/v2",
  "kind": "CiliumClusterwideNetworkPolicy",
  "metadata": {"name": "db-from-anyone"},
  "spec": {
    "endpointSelector": {"matchLabels": {"app": "db"}},
    "ingress": [{"fromEndpoints": [{}]}]
  }
}"#;

const CCNP_TEAM_OPS_FROM_HOST: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: team-ops-only-host}
spec:
  endpointSelector:
    matchLabels: {k8s:io.cilium.k8s.namespace.labels.team: ops}
  ingress:
  - fromEntities: [host]
"#;

const KNP_DB_FROM_TEAM_OPS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-team-ops, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: ops}}
"#;

const KNP_DB_FROM_DEV_BY_NAME: &str = r#"{
  "apiVersion": "networking.k8s.io/v1",
  "kind": "NetworkPolicy",
  "metadata": {"name": "db-from-dev", "namespace": "shop"},
  "spec": {
    "podSelector": {"matchLabels": {"app": "db"}},
    "policyTypes": ["Ingress"],
    "ingress": [{
      "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dev"}}}],
      "ports": [{"port": 5432}]
    }]
  }
}"#;

const KNP_AND: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-dev-clients, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {env: dev}}
      podSelector: {matchLabels: {app: client}}
"#;

const KNP_OR: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-dev-or-clients, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {env: dev}}
    - podSelector: {matchLabels: {app: client}}
"#;

const KNP_SHOP_INTERNAL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: shop-internal, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {}
"#;

const KNP_WEB_FROM_ANY_POD: &str = r#"{
  "apiVersion": "networking.k8s.io/v1",
  "kind": "NetworkPolicy",
  "metadata": {"name": "web-from-any-pod", "namespace": "shop"},
  "spec": {
    "podSelector": {"matchLabels": {"app": "web"}},
    "ingress": [{"from": [{"namespaceSelector": {}}]}]
  }
}"#;

const KNP_WEB_ALLOW_ALL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{}]
"#;

const KNP_SHOP_DENY_ALL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;

const KNP_CLIENT_EGRESS_ONLY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {app: web}}
    ports: [{port: 80, protocol: TCP}]
"#;

const KNP_IMPLICIT_TYPES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: implicit-types, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  egress:
  - to: [{podSelector: {matchLabels: {app: web}}}]
"#;

const KNP_EGRESS_TYPE_IGNORES_INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-type-only, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Egress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
  egress: [{}]
"#;

const KNP_DB_PORT_RANGE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-range, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{protocol: TCP, port: 32000, endPort: 32768}]
"#;

const KNP_DB_ALL_UDP: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-udp, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{protocol: UDP}]
"#;

const KNP_WEB_IPBLOCK: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-ipblock, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - ipBlock: {cidr: 198.19.0.0/16, except: [198.19.128.0/17]}
    ports: [{port: 443}]
"#;

const WEB_FROM_CIDR_EXCEPT: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-partners, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDRSet:
    - cidr: 198.18.0.0/16
      except: [198.18.1.0/24]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"#;

const WEB_CIDR_LONGEST_PREFIX: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-cidr-deny-inner, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDR: [198.18.0.0/16]
  ingressDeny:
  - fromCIDR: [198.18.3.0/24]
"#;

const CLIENT_TO_CIDR_JSON: &str = r#"{
  "apiVersion": "cilium.io/v2",
  "kind": "CiliumNetworkPolicy",
  "metadata": {"name": "client-to-partner", "namespace": "shop"},
  "spec": {
    "endpointSelector": {"matchLabels": {"app": "client"}},
    "egress": [{"toCIDR": ["198.19.0.0/24"]}]
  }
}"#;

const WEB_FROM_INTERNET: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-internet, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDR: [0.0.0.0/0]
"#;

const WEB_FROM_INTERNET_PLUS_CIDR: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-internet, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDR: [0.0.0.0/0]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db-to-backup, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: db}}
  egress:
  - toCIDR: [198.18.1.0/24]
"#;

const WEB_FROM_WORLD: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-world, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [world]
"#;

const WEB_FROM_CLUSTER: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-cluster, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [cluster]
"#;

const WEB_FROM_HOST: &str = r#"{
  "apiVersion": "cilium.io/v2",
  "kind": "CiliumNetworkPolicy",
  "metadata": {"name": "web-from-host-entity", "namespace": "shop"},
  "spec": {
    "endpointSelector": {"matchLabels": {"app": "web"}},
    "ingress": [{"fromEntities": ["host"]}]
  }
}"#;

const WEB_TO_WORLD: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-to-world, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEntities: [world]
"#;

const DENY_BEATS_ALLOW_ALL: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: all-but-client-80, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;

const L3_DENY_BEATS_L4_ALLOW: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l3-deny, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
"#;

const RANGE_WITH_DENIED_PORT: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: range-minus-8005, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8000", endPort: 8010, protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8005", protocol: TCP}]}]
"#;

const WEB_SCTP: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-diameter, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "3868", protocol: SCTP}]}]
"#;

const WEB_DNS_ANY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-dns, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "53", protocol: ANY}]}]
"#;

const UNION_CNP_AND_KNP: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-client, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 8080}]
"#;

const SELECTS_NOTHING: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: nobody, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: does-not-exist}}
  ingressDeny:
  - fromEntities: [all]
"#;

const NO_DEFAULT_DENY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: only-deny-client, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  enableDefaultDeny: {ingress: false}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
"#;

/// The `cilium policy import` format the seed state uses.
const RULES_ARRAY_CIDR: &str = r#"[{"labels":[{"key":"name","value":"cidr"}],"endpointSelector":{"matchLabels":{"app":"client"}},
  "egress":[{"toCIDRSet":[{"cidr":"198.19.0.0/16","except":["198.19.1.0/24"]}]}]}]"#;

const RULES_ARRAY_ENDPOINTS: &str = r#"[{"labels":[{"key":"name","value":"web-from-clients"}],
  "endpointSelector":{"matchLabels":{"app":"web"}},
  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}]}]}]"#;

const ALLOW_THEN_CLUSTERWIDE_DENY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-client, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: deny-clients}
spec:
  endpointSelector: {}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
"#;

const CNP_EMPTY_INGRESS_RULE: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-lockdown, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{}]
"#;

const CNP_EMPTY_PEER_LIST: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-nobody, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: []
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;

const CNP_PORTS_ONLY_EGRESS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-dns-out, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toPorts: [{ports: [{port: "53", protocol: UDP}]}]
"#;

const CNP_ANY_NAMESPACE_EXISTS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-all-pods, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints:
    - matchExpressions: [{key: io.kubernetes.pod.namespace, operator: Exists}]
"#;

const CCNP_SPECS_EXPLICIT_NAMESPACE: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: two-specs}
specs:
- endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: dev}}]
- endpointSelector: {matchLabels: {app: monitor}}
  ingress:
  - fromEntities: [remote-node]
"#;

const CNP_ALL_TCP_PORT_ZERO: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-all-tcp, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "0", protocol: TCP}]}]
"#;

const CNP_ANY_RANGE: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-any-range, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8000", endPort: 8001}]}]
"#;

const CNP_ICMP_ECHO: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-ping, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    icmps: [{fields: [{type: 8}]}]
"#;

const DENY_ANY_PROTOCOL_PORT: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-not-53, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "53", protocol: ANY}]}]
"#;

const DENY_ALL_ENTITY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-deny-everyone, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
  ingressDeny:
  - fromEntities: [all]
"#;

const EGRESS_DENY_CIDR: &str = r#"{
  "apiVersion": "cilium.io/v2",
  "kind": "CiliumNetworkPolicy",
  "metadata": {"name": "web-out-but-not-there", "namespace": "shop"},
  "spec": {
    "endpointSelector": {"matchLabels": {"app": "web"}},
    "egress": [{"toEntities": ["world"]}],
    "egressDeny": [{"toCIDR": ["198.19.1.0/24"]}]
  }
}"#;

const DEFAULT_DENY_OFF_AND_ON: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: additive, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  enableDefaultDeny: {ingress: false}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: strict, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: db}}]
"#;

const DEFAULT_DENY_OFF_ALLOW_ONLY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: additive, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  enableDefaultDeny: {ingress: false}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
"#;

const KNP_EGRESS_DENY_ALL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: no-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Egress]
  egress: []
"#;

const KNP_EGRESS_IPBLOCK: &str = r#"{
  "apiVersion": "networking.k8s.io/v1",
  "kind": "NetworkPolicy",
  "metadata": {"name": "client-out", "namespace": "shop"},
  "spec": {
    "podSelector": {"matchLabels": {"app": "client"}},
    "policyTypes": ["Egress"],
    "egress": [{
      "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["198.19.0.0/16"]}}],
      "ports": [{"protocol": "UDP", "port": 53}]
    }]
  }
}"#;

/// client may send only to db's address (198.18.0.4).
const KNP_EGRESS_DB_32: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-to-db-ip, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 198.18.0.4/32}}]
"#;

/// client may send to every pod address but db's.
const KNP_EGRESS_EXCEPT_DB: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-to-pods-but-db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 198.18.0.0/24, except: [198.18.0.4/32]}}]
"#;

/// web takes 443 only from client's address (198.18.0.3).
const KNP_WEB_FROM_CLIENT_32: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client-ip, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{ipBlock: {cidr: 198.18.0.3/32}}]
    ports: [{port: 443}]
"#;

/// client may send to web's address only (not web-b's, same identity).
const KNP_EGRESS_WEB_32: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-to-web-ip, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 198.18.0.2/32}}]
"#;

/// client may send to a block holding both web pods (198.18.0.2 and .8).
/// Each ipBlock is judged on its own: two /32s, one per pod, would select
/// neither.
const KNP_EGRESS_WEB_BOTH: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-to-webs, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 198.18.0.0/28, except: [198.18.0.4/32]}}]
"#;

const TWO_POLICIES_SAME_CIDR: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-partner, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDR: [198.19.0.0/24]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-to-partner, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toCIDR: [198.19.0.0/24]
"#;

const KNP_EXPLICIT_EMPTY_INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-closed, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: []
"#;

const KNP_CLIENTS_ANY_NAMESPACE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-all-clients, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - namespaceSelector: {}
      podSelector: {matchLabels: {app: client}}
"#;

const KNP_NAMESPACE_EXPRESSIONS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-non-shop, namespace: shop}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: In, values: [web, db]}]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: team, operator: NotIn, values: [shop]}]
"#;

const KNP_NAMESPACE_NAME_IN: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-named, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [ops, shop]}]
"#;

const KNP_PORTS_ONLY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-https, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: 443}]
"#;

const KNP_HIGH_PORTS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-high, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: 1024, endPort: 65535}]
"#;

const CNP_ODD_RANGE: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-odd-range, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "3", endPort: 5, protocol: UDP}]}]
"#;

const OVERLAPPING_RANGES_TWO_POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-range, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8000", endPort: 8010, protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: no-high-8000s}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingressDeny:
  - fromEntities: [all]
    toPorts: [{ports: [{port: "8008", endPort: 8020, protocol: TCP}]}]
"#;

const KNP_ALLOW_ALL_WITH_CNP_DENY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: not-client-80, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;

// ---- Cases ---------------------------------------------------------------

/// One row per case: name, policy, flow, expected.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use After::*;
    vec![
        // matchLabels, ports, protocols.
        case("matchLabels: selected peer on the allowed port", WEB_FROM_CLIENT_80, "client -> web tcp/80", true),
        case("matchLabels: selected peer on another port", WEB_FROM_CLIENT_80, "client -> web tcp/81", false),
        case("matchLabels: peer not selected", WEB_FROM_CLIENT_80, "db -> web tcp/80", false),
        case("protocol mismatch: UDP to a TCP rule", WEB_FROM_CLIENT_80, "client -> web udp/80", false),
        case("ingress-only policy leaves egress open", WEB_FROM_CLIENT_80, "web -> db tcp/5432", true),
        case("external address to a selected pod", WEB_FROM_CLIENT_80, "198.18.7.7 -> web tcp/80", false),
        // CNP namespace scoping.
        case("CNP peer: same labels in another namespace do not match", WEB_FROM_CLIENT_80, "dev-client -> web tcp/80", false),
        case("CNP subject: same labels in another namespace are not selected", WEB_FROM_CLIENT_80, "monitor -> ops-web tcp/80", true),
        case("CNP toEndpoints: peer in the policy's namespace", CLIENT_TO_WEB_CNP, "client -> web tcp/80", true),
        case("CNP toEndpoints: same labels in another namespace do not match", CLIENT_TO_WEB_CNP, "client -> ops-web tcp/80", false),
        case("CNP egress-only policy leaves ingress open", CLIENT_TO_WEB_CNP, "db -> client tcp/8080", true),
        case("CNP explicit namespace label: peer in that namespace", WEB_FROM_OPS_NAMESPACE, "monitor -> web tcp/80", true),
        case("CNP explicit namespace label: own namespace not added", WEB_FROM_OPS_NAMESPACE, "client -> web tcp/80", false),
        case("CNP reserved: label is not namespaced", WEB_FROM_HOST_RESERVED_LABEL, "host -> web tcp/80", true),
        case("CNP reserved: label selects only that identity", WEB_FROM_HOST_RESERVED_LABEL, "client -> web tcp/80", false),
        case("CNP fromEndpoints {}: pods of the namespace", CNP_DB_FROM_EMPTY, "client -> db tcp/5432", true),
        case("CNP fromEndpoints {}: not pods of other namespaces", CNP_DB_FROM_EMPTY, "monitor -> db tcp/5432", false),
        case("CNP fromEndpoints {}: not the world", CNP_DB_FROM_EMPTY, "198.18.7.7 -> db tcp/5432", false),
        // matchExpressions.
        case("matchExpressions In selects the subject; NotIn admits the peer", DB_EXPRESSIONS_IN_NOTIN, "web -> db tcp/5432", true),
        case("matchExpressions NotIn excludes the peer", DB_EXPRESSIONS_IN_NOTIN, "client -> db tcp/5432", false),
        case("matchExpressions In: unselected pod stays open", DB_EXPRESSIONS_IN_NOTIN, "client -> web tcp/80", true),
        case("matchExpressions NotIn: still namespaced in a CNP", DB_EXPRESSIONS_IN_NOTIN, "monitor -> db tcp/5432", false),
        case("matchExpressions DoesNotExist admits a peer without the key", TIERED_EXISTS, "client -> db tcp/5432", true),
        case("matchExpressions DoesNotExist rejects a peer with the key", TIERED_EXISTS, "web -> db tcp/5432", false),
        case("matchExpressions Exists selects every pod with the key", TIERED_EXISTS, "db -> web tcp/80", false),
        case("matchExpressions Exists: pod without the key stays open", TIERED_EXISTS, "web -> client tcp/8080", true),
        // CCNP.
        case("CCNP: peer in another namespace", CCNP_MONITOR_SCRAPES_WEB, "monitor -> web tcp/9090", true),
        case("CCNP: subjects in every namespace", CCNP_MONITOR_SCRAPES_WEB, "monitor -> ops-web tcp/9090", true),
        case("CCNP: peer not selected", CCNP_MONITOR_SCRAPES_WEB, "client -> web tcp/9090", false),
        case("port without protocol is ANY: UDP", CCNP_MONITOR_SCRAPES_WEB, "monitor -> web udp/9090", true),
        case("port without protocol is ANY: SCTP", CCNP_MONITOR_SCRAPES_WEB, "monitor -> web sctp/9090", true),
        case("ANY with a port is not ICMP", CCNP_MONITOR_SCRAPES_WEB, "monitor -> web icmp/8", false),
        case("CCNP fromEndpoints {}: every pod", CCNP_DB_FROM_EMPTY, "monitor -> db tcp/5432", true),
        case("CCNP fromEndpoints {}: every peer, world too", CCNP_DB_FROM_EMPTY, "198.18.7.7 -> db tcp/5432", true),
        case("CCNP selecting by namespace label", CCNP_TEAM_OPS_FROM_HOST, "client -> monitor tcp/80", false),
        case("CCNP selecting by namespace label: other namespaces open", CCNP_TEAM_OPS_FROM_HOST, "client -> dev-client tcp/80", true),
        case("namespace relabelled into a CCNP's selection", CCNP_TEAM_OPS_FROM_HOST, "client -> dev-client tcp/80", false)
            .then(NamespaceLabels("dev", &["team=ops"])),
        case("namespace relabelled out of a CCNP's selection", CCNP_TEAM_OPS_FROM_HOST, "client -> monitor tcp/80", true)
            .then(NamespaceLabels("ops", &["team=platform"])),
        // Kubernetes namespaceSelector.
        case("K8s namespaceSelector by label: matching namespace", KNP_DB_FROM_TEAM_OPS, "monitor -> db tcp/5432", true),
        case("K8s namespaceSelector by label: own namespace not implied", KNP_DB_FROM_TEAM_OPS, "client -> db tcp/5432", false),
        case("K8s namespaceSelector by label: other namespace", KNP_DB_FROM_TEAM_OPS, "dev-client -> db tcp/5432", false),
        case("K8s namespaceSelector: namespace relabelled after import gains access", KNP_DB_FROM_TEAM_OPS, "dev-client -> db tcp/5432", true)
            .then(NamespaceLabels("dev", &["team=ops"])),
        case("K8s namespaceSelector: namespace relabelled after import loses access", KNP_DB_FROM_TEAM_OPS, "monitor -> db tcp/5432", false)
            .then(NamespaceLabels("ops", &["team=platform"])),
        case("K8s namespaceSelector by kubernetes.io/metadata.name", KNP_DB_FROM_DEV_BY_NAME, "dev-client -> db tcp/5432", true),
        case("K8s namespaceSelector by metadata.name: other namespace", KNP_DB_FROM_DEV_BY_NAME, "monitor -> db tcp/5432", false),
        case("K8s port without protocol is TCP", KNP_DB_FROM_DEV_BY_NAME, "dev-client -> db udp/5432", false),
        case("K8s podSelector AND namespaceSelector: both match", KNP_AND, "dev-client -> db tcp/5432", true),
        case("K8s podSelector AND namespaceSelector: only the pod matches", KNP_AND, "client -> db tcp/5432", false),
        case("K8s two peers OR: podSelector alone is the own namespace", KNP_OR, "client -> db tcp/5432", true),
        case("K8s two peers OR: namespaceSelector alone", KNP_OR, "dev-client -> db tcp/5432", true),
        case("K8s two peers OR: neither", KNP_OR, "web -> db tcp/5432", false),
        case("K8s empty podSelector: every pod of the namespace is a peer", KNP_SHOP_INTERNAL, "client -> web tcp/80", true),
        case("K8s empty podSelector: not pods of other namespaces", KNP_SHOP_INTERNAL, "monitor -> web tcp/80", false),
        case("K8s empty podSelector subject: only the policy's namespace", KNP_SHOP_INTERNAL, "monitor -> ops-web tcp/80", true),
        case("K8s empty namespaceSelector: pods of any namespace", KNP_WEB_FROM_ANY_POD, "dev-client -> web tcp/80", true),
        case("K8s empty namespaceSelector: not the world", KNP_WEB_FROM_ANY_POD, "198.18.7.7 -> web tcp/80", false),
        // Kubernetes policyTypes and empty rules.
        case("K8s ingress [{}]: allows the world", KNP_WEB_ALLOW_ALL, "198.18.7.7 -> web tcp/443", true),
        case("K8s ingress [{}]: allows any pod, any protocol", KNP_WEB_ALLOW_ALL, "monitor -> web udp/53", true),
        case("K8s policyTypes [Ingress] without rules denies all", KNP_SHOP_DENY_ALL, "client -> web tcp/80", false),
        case("K8s deny-all ingress leaves egress open", KNP_SHOP_DENY_ALL, "web -> monitor tcp/80", true),
        case("K8s egress-only policy: allowed destination", KNP_CLIENT_EGRESS_ONLY, "client -> web tcp/80", true),
        case("K8s egress-only policy: other destination", KNP_CLIENT_EGRESS_ONLY, "client -> db tcp/5432", false),
        case("K8s egress-only policy: world denied", KNP_CLIENT_EGRESS_ONLY, "client -> 198.18.7.7 udp/53", false),
        case("K8s egress-only policy leaves ingress open", KNP_CLIENT_EGRESS_ONLY, "db -> client tcp/8080", true),
        case("K8s egress rules imply policyTypes Ingress too", KNP_IMPLICIT_TYPES, "web -> client tcp/8080", false),
        case("K8s implicit policyTypes: egress rule applies", KNP_IMPLICIT_TYPES, "client -> web tcp/80", true),
        case("K8s policyTypes [Egress]: ingress rules are ignored", KNP_EGRESS_TYPE_IGNORES_INGRESS, "client -> db tcp/5432", true),
        // Kubernetes ports.
        case("K8s endPort: first port", KNP_DB_PORT_RANGE, "web -> db tcp/32000", true),
        case("K8s endPort: last port", KNP_DB_PORT_RANGE, "web -> db tcp/32768", true),
        case("K8s endPort: one past", KNP_DB_PORT_RANGE, "web -> db tcp/32769", false),
        case("K8s endPort: one before", KNP_DB_PORT_RANGE, "web -> db tcp/31999", false),
        case("K8s port omitted: every port of the protocol", KNP_DB_ALL_UDP, "web -> db udp/5353", true),
        case("K8s port omitted: only that protocol", KNP_DB_ALL_UDP, "web -> db tcp/5353", false),
        // Kubernetes ipBlock.
        case("K8s ipBlock: inside", KNP_WEB_IPBLOCK, "198.19.1.1 -> web tcp/443", true),
        case("K8s ipBlock: inside except", KNP_WEB_IPBLOCK, "198.19.200.1 -> web tcp/443", false),
        case("K8s ipBlock: outside the block", KNP_WEB_IPBLOCK, "198.18.1.1 -> web tcp/443", false),
        case("K8s ipBlock does not match pods", KNP_WEB_IPBLOCK, "client -> web tcp/443", false),
        // CIDR.
        case("CIDR except: inside the cidr, outside the except", WEB_FROM_CIDR_EXCEPT, "198.18.2.3 -> web tcp/443", true),
        case("CIDR except: last address of the cidr", WEB_FROM_CIDR_EXCEPT, "198.18.255.255 -> web tcp/443", true),
        case("CIDR except: inside the except", WEB_FROM_CIDR_EXCEPT, "198.18.1.9 -> web tcp/443", false),
        case("CIDR except: outside the cidr is world", WEB_FROM_CIDR_EXCEPT, "198.19.0.1 -> web tcp/443", false),
        case("CIDR except: right address, wrong port", WEB_FROM_CIDR_EXCEPT, "198.18.2.3 -> web tcp/80", false),
        case("CIDR: longest prefix identity, outer allowed", WEB_CIDR_LONGEST_PREFIX, "198.18.4.4 -> web tcp/80", true),
        case("CIDR: longest prefix identity, inner denied", WEB_CIDR_LONGEST_PREFIX, "198.18.3.4 -> web tcp/80", false),
        case("toCIDR: inside", CLIENT_TO_CIDR_JSON, "client -> 198.19.0.10 tcp/443", true),
        case("toCIDR: outside", CLIENT_TO_CIDR_JSON, "client -> 198.19.1.10 tcp/443", false),
        case("toCIDR: pods are not in the cidr", CLIENT_TO_CIDR_JSON, "client -> web tcp/80", false),
        case("0.0.0.0/0 matches the world", WEB_FROM_INTERNET, "198.19.9.9 -> web tcp/80", true),
        case("0.0.0.0/0 does not match pods", WEB_FROM_INTERNET, "client -> web tcp/80", false),
        case("0.0.0.0/0 matches CIDR identities of other policies", WEB_FROM_INTERNET_PLUS_CIDR, "198.18.1.5 -> web tcp/80", true),
        // Entities.
        case("entity world: external address", WEB_FROM_WORLD, "198.18.7.7 -> web tcp/80", true),
        case("entity world: not pods", WEB_FROM_WORLD, "client -> web tcp/80", false),
        case("entity world: not the host", WEB_FROM_WORLD, "host -> web tcp/80", false),
        case("entity cluster: pods of other namespaces", WEB_FROM_CLUSTER, "monitor -> web tcp/80", true),
        case("entity cluster: the host", WEB_FROM_CLUSTER, "host -> web tcp/80", true),
        case("entity cluster: remote nodes", WEB_FROM_CLUSTER, "remote-node -> web tcp/80", true),
        case("entity cluster: not the world", WEB_FROM_CLUSTER, "198.18.7.7 -> web tcp/80", false),
        case("entity host: the host", WEB_FROM_HOST, "host -> web tcp/10250", true),
        case("entity host: not remote nodes", WEB_FROM_HOST, "remote-node -> web tcp/10250", false),
        case("toEntities world: external destination", WEB_TO_WORLD, "web -> 198.19.1.1 tcp/443", true),
        case("toEntities world: not pods", WEB_TO_WORLD, "web -> db tcp/5432", false),
        // Deny precedence.
        case("entity all: the world", DENY_BEATS_ALLOW_ALL, "198.18.7.7 -> web tcp/80", true),
        case("ingressDeny beats an allow-all", DENY_BEATS_ALLOW_ALL, "client -> web tcp/80", false),
        case("ingressDeny on one port: other ports allowed", DENY_BEATS_ALLOW_ALL, "client -> web tcp/81", true),
        case("ingressDeny on one peer: other peers allowed", DENY_BEATS_ALLOW_ALL, "db -> web tcp/80", true),
        case("L3 deny beats an L4 allow", L3_DENY_BEATS_L4_ALLOW, "client -> web tcp/80", false),
        case("deny in another (clusterwide) policy beats an allow", ALLOW_THEN_CLUSTERWIDE_DENY, "client -> web tcp/80", false),
        case("deleting the deny policy restores reachability", ALLOW_THEN_CLUSTERWIDE_DENY, "client -> web tcp/80", true)
            .then(Delete("deny-clients")),
        case("deleting a deny-all policy restores reachability", KNP_SHOP_DENY_ALL, "client -> web tcp/80", true)
            .then(Delete("shop/deny-all")),
        // Port ranges with a denied port inside.
        case("endPort: one before the range", RANGE_WITH_DENIED_PORT, "client -> web tcp/7999", false),
        case("endPort: first port", RANGE_WITH_DENIED_PORT, "client -> web tcp/8000", true),
        case("endPort: below the denied port", RANGE_WITH_DENIED_PORT, "client -> web tcp/8004", true),
        case("deny on a port inside an allowed range", RANGE_WITH_DENIED_PORT, "client -> web tcp/8005", false),
        case("endPort: above the denied port", RANGE_WITH_DENIED_PORT, "client -> web tcp/8006", true),
        case("endPort: last port", RANGE_WITH_DENIED_PORT, "client -> web tcp/8010", true),
        case("endPort: one past", RANGE_WITH_DENIED_PORT, "client -> web tcp/8011", false),
        // Protocols.
        case("SCTP rule: SCTP", WEB_SCTP, "client -> web sctp/3868", true),
        case("SCTP rule: not TCP", WEB_SCTP, "client -> web tcp/3868", false),
        case("ANY protocol: UDP", WEB_DNS_ANY, "client -> web udp/53", true),
        case("ANY protocol: TCP", WEB_DNS_ANY, "client -> web tcp/53", true),
        case("ANY protocol: other port", WEB_DNS_ANY, "client -> web udp/54", false),
        // Several policies; none; no default deny.
        case("two policies on one endpoint: the first's allow", UNION_CNP_AND_KNP, "client -> web tcp/80", true),
        case("two policies on one endpoint: the second's allow", UNION_CNP_AND_KNP, "db -> web tcp/8080", true),
        case("two policies on one endpoint: neither", UNION_CNP_AND_KNP, "client -> web tcp/8080", false),
        case("a policy selecting nothing changes nothing", SELECTS_NOTHING, "client -> web tcp/80", true),
        case("enableDefaultDeny ingress false: the denied peer", NO_DEFAULT_DENY, "client -> web tcp/80", false),
        case("enableDefaultDeny ingress false: other pods allowed", NO_DEFAULT_DENY, "db -> web tcp/80", true),
        case("enableDefaultDeny ingress false: world allowed", NO_DEFAULT_DENY, "198.18.7.7 -> web tcp/80", true),
        // CNP edge forms.
        case("CNP ingress [{}]: default deny, nothing allowed", CNP_EMPTY_INGRESS_RULE, "client -> web tcp/80", false),
        case("CNP fromEndpoints []: present but empty selects nothing", CNP_EMPTY_PEER_LIST, "client -> web tcp/80", false),
        case("CNP toPorts without peers: any destination on that port", CNP_PORTS_ONLY_EGRESS, "web -> 198.18.7.7 udp/53", true),
        case("CNP toPorts without peers: pods on that port", CNP_PORTS_ONLY_EGRESS, "web -> dev-client udp/53", true),
        case("CNP toPorts without peers: other ports denied", CNP_PORTS_ONLY_EGRESS, "web -> db tcp/5432", false),
        case("CNP namespace Exists expression: pods of every namespace", CNP_ANY_NAMESPACE_EXISTS, "monitor -> web tcp/80", true),
        case("CNP namespace Exists expression: not the world", CNP_ANY_NAMESPACE_EXISTS, "198.18.7.7 -> web tcp/80", false),
        case("CCNP specs[0]: explicit namespace label", CCNP_SPECS_EXPLICIT_NAMESPACE, "dev-client -> db tcp/5432", true),
        case("CCNP specs[0]: other namespaces denied", CCNP_SPECS_EXPLICIT_NAMESPACE, "client -> db tcp/5432", false),
        case("CCNP specs[1]: entity remote-node", CCNP_SPECS_EXPLICIT_NAMESPACE, "remote-node -> monitor tcp/9100", true),
        case("CCNP specs[1]: entity remote-node is not the host", CCNP_SPECS_EXPLICIT_NAMESPACE, "host -> monitor tcp/9100", false),
        case("CNP port 0: every port of the protocol", CNP_ALL_TCP_PORT_ZERO, "client -> web tcp/65535", true),
        case("CNP port 0: only that protocol", CNP_ALL_TCP_PORT_ZERO, "client -> web udp/53", false),
        case("ANY with a range: SCTP at endPort", CNP_ANY_RANGE, "client -> web sctp/8001", true),
        case("ANY with a range: one past endPort", CNP_ANY_RANGE, "client -> web udp/8002", false),
        case("icmps: allowed type", CNP_ICMP_ECHO, "client -> web icmp/8", true),
        case("icmps: other type", CNP_ICMP_ECHO, "client -> web icmp/0", false),
        case("icmps: not TCP", CNP_ICMP_ECHO, "client -> web tcp/8", false),
        // More deny precedence.
        case("deny ANY on a port: UDP denied under an L3 allow", DENY_ANY_PROTOCOL_PORT, "client -> web udp/53", false),
        case("deny ANY on a port: TCP denied under an L3 allow", DENY_ANY_PROTOCOL_PORT, "client -> web tcp/53", false),
        case("deny ANY on a port: other ports still allowed", DENY_ANY_PROTOCOL_PORT, "client -> web tcp/54", true),
        case("deny ANY on a port: ICMP still allowed", DENY_ANY_PROTOCOL_PORT, "client -> web icmp/8", true),
        case("ingressDeny entity all beats an L3 allow", DENY_ALL_ENTITY, "client -> web tcp/80", false),
        case("egressDeny CIDR beats toEntities world", EGRESS_DENY_CIDR, "web -> 198.19.1.1 tcp/443", false),
        case("egressDeny CIDR: rest of the world allowed", EGRESS_DENY_CIDR, "web -> 198.19.2.1 tcp/443", true),
        case("enableDefaultDeny false with another default-deny policy: deny by default", DEFAULT_DENY_OFF_AND_ON, "monitor -> web tcp/80", false),
        case("enableDefaultDeny false with another default-deny policy: both allows", DEFAULT_DENY_OFF_AND_ON, "client -> web tcp/80", true),
        case("enableDefaultDeny false with another default-deny policy: the strict one's allow", DEFAULT_DENY_OFF_AND_ON, "db -> web tcp/80", true),
        case("enableDefaultDeny false with only allows: everything still allowed", DEFAULT_DENY_OFF_ALLOW_ONLY, "monitor -> web tcp/80", true),
        // More Kubernetes.
        case("K8s policyTypes [Egress] with egress []: egress denied", KNP_EGRESS_DENY_ALL, "db -> web tcp/80", false),
        case("K8s policyTypes [Egress] with egress []: ingress open", KNP_EGRESS_DENY_ALL, "web -> db tcp/5432", true),
        case("K8s egress ipBlock 0.0.0.0/0: the world", KNP_EGRESS_IPBLOCK, "client -> 198.18.7.7 udp/53", true),
        case("K8s egress ipBlock 0.0.0.0/0: inside except", KNP_EGRESS_IPBLOCK, "client -> 198.19.3.3 udp/53", false),
        // Kubernetes: an ipBlock selects the pods inside it too (upstream
        // e2e "should allow egress access to server in CIDR block"); a CNP
        // CIDR never does (the CNP cases above).
        case("K8s egress ipBlock 0.0.0.0/0 also selects pods", KNP_EGRESS_IPBLOCK, "client -> web udp/53", true),
        case("K8s egress ipBlock of one pod's /32: that pod", KNP_EGRESS_DB_32, "client -> db tcp/5432", true),
        case("K8s egress ipBlock of one pod's /32: by its address", KNP_EGRESS_DB_32, "client -> 198.18.0.4 tcp/5432", true),
        case("K8s egress ipBlock of one pod's /32: another pod", KNP_EGRESS_DB_32, "client -> monitor tcp/5432", false),
        case("K8s egress ipBlock except one pod's /32: other pods", KNP_EGRESS_EXCEPT_DB, "client -> monitor tcp/5432", true),
        case("K8s egress ipBlock except one pod's /32: that pod", KNP_EGRESS_EXCEPT_DB, "client -> db tcp/5432", false),
        case("K8s egress ipBlock except one pod's /32: the world outside", KNP_EGRESS_EXCEPT_DB, "client -> 198.19.7.7 tcp/5432", false),
        case("K8s ingress ipBlock of a pod's /32", KNP_WEB_FROM_CLIENT_32, "client -> web tcp/443", true),
        case("K8s ingress ipBlock of a pod's /32: not another pod", KNP_WEB_FROM_CLIENT_32, "dev-client -> web tcp/443", false),
        // Pods are matched through identities: web and web-b share one, and
        // a block holding only one of them selects neither (fail closed).
        case("K8s ipBlock with one of two pods of an identity: fail closed", KNP_EGRESS_WEB_32, "client -> web tcp/80", false),
        case("K8s ipBlock with both pods of an identity", KNP_EGRESS_WEB_BOTH, "client -> web-b tcp/80", true),
        case("K8s explicit ingress []: deny all", KNP_EXPLICIT_EMPTY_INGRESS, "client -> db tcp/5432", false),
        case("K8s namespaceSelector {} AND podSelector: pod in another namespace", KNP_CLIENTS_ANY_NAMESPACE, "dev-client -> db tcp/5432", true),
        case("K8s namespaceSelector {} AND podSelector: other pods", KNP_CLIENTS_ANY_NAMESPACE, "monitor -> db tcp/5432", false),
        case("K8s namespaceSelector NotIn: namespace without the label", KNP_NAMESPACE_EXPRESSIONS, "dev-client -> db tcp/5432", true),
        case("K8s namespaceSelector NotIn: namespace with another value", KNP_NAMESPACE_EXPRESSIONS, "monitor -> web tcp/80", true),
        case("K8s namespaceSelector NotIn: excluded namespace", KNP_NAMESPACE_EXPRESSIONS, "client -> web tcp/80", false),
        case("K8s namespaceSelector NotIn: still not the world", KNP_NAMESPACE_EXPRESSIONS, "198.18.7.7 -> db tcp/5432", false),
        case("K8s podSelector In expression: unselected pod open", KNP_NAMESPACE_EXPRESSIONS, "web -> client tcp/8080", true),
        case("K8s metadata.name In: listed namespace", KNP_NAMESPACE_NAME_IN, "client -> web tcp/80", true),
        case("K8s metadata.name In: unlisted namespace", KNP_NAMESPACE_NAME_IN, "dev-client -> web tcp/80", false),
        case("K8s ports without from: the world on that port", KNP_PORTS_ONLY, "198.18.7.7 -> web tcp/443", true),
        case("K8s ports without from: other ports", KNP_PORTS_ONLY, "monitor -> web tcp/80", false),
        case("K8s endPort 65535: one before", KNP_HIGH_PORTS, "client -> web tcp/1023", false),
        case("K8s endPort 65535: first", KNP_HIGH_PORTS, "client -> web tcp/1024", true),
        case("K8s endPort 65535: last", KNP_HIGH_PORTS, "client -> web tcp/65535", true),
        case("odd range: one before", CNP_ODD_RANGE, "client -> web udp/2", false),
        case("odd range: first", CNP_ODD_RANGE, "client -> web udp/3", true),
        case("odd range: middle", CNP_ODD_RANGE, "client -> web udp/4", true),
        case("odd range: last", CNP_ODD_RANGE, "client -> web udp/5", true),
        case("odd range: one past", CNP_ODD_RANGE, "client -> web udp/6", false),
        case("overlapping deny range in another policy: below the overlap", OVERLAPPING_RANGES_TWO_POLICIES, "client -> web tcp/8007", true),
        case("overlapping deny range in another policy: start of the overlap", OVERLAPPING_RANGES_TWO_POLICIES, "client -> web tcp/8008", false),
        case("overlapping deny range in another policy: end of the allow", OVERLAPPING_RANGES_TWO_POLICIES, "client -> web tcp/8010", false),
        case("K8s allow-all plus a CNP port deny: the denied port", KNP_ALLOW_ALL_WITH_CNP_DENY, "client -> web tcp/80", false),
        case("K8s allow-all plus a CNP port deny: other ports", KNP_ALLOW_ALL_WITH_CNP_DENY, "client -> web tcp/81", true),
        case("K8s allow-all plus a CNP port deny: other peers", KNP_ALLOW_ALL_WITH_CNP_DENY, "198.18.7.7 -> web tcp/80", true),
        case("0.0.0.0/0 does not match the host", WEB_FROM_INTERNET, "host -> web tcp/80", false),
        // The engine after changes.
        case("peer's namespace relabelled: its new identity is still a peer", WEB_FROM_CLIENT_80, "client -> web tcp/80", true)
            .then(NamespaceLabels("shop", &["team=retail"])),
        case("subject's namespace relabelled: its new identity is still enforced", WEB_FROM_CLIENT_80, "db -> web tcp/80", false)
            .then(NamespaceLabels("shop", &["team=retail"])),
        case("CCNP peer's namespace relabelled: still a peer", CCNP_MONITOR_SCRAPES_WEB, "monitor -> web tcp/9090", true)
            .then(NamespaceLabels("ops", &["team=platform"])),
        case("deleting one of two policies naming a CIDR keeps the other's", TWO_POLICIES_SAME_CIDR, "198.19.0.5 -> web tcp/80", true)
            .then(Delete("shop/client-to-partner")),
        case("deleting a CIDR egress policy reopens egress", TWO_POLICIES_SAME_CIDR, "client -> db tcp/5432", true)
            .then(Delete("shop/client-to-partner")),
        case("deleting one of two policies naming a CIDR: egress to it still allowed", TWO_POLICIES_SAME_CIDR, "client -> 198.19.0.5 tcp/443", true)
            .then(Delete("shop/web-from-partner")),
        // The rules-array format (no namespace scoping).
        case("rules array: toCIDRSet inside", RULES_ARRAY_CIDR, "client -> 198.19.2.2 tcp/443", true),
        case("rules array: toCIDRSet except", RULES_ARRAY_CIDR, "client -> 198.19.1.2 tcp/443", false),
        case("rules array: egress enforced for pods too", RULES_ARRAY_CIDR, "client -> web tcp/80", false),
        case("rules array: peers of every namespace", RULES_ARRAY_ENDPOINTS, "dev-client -> web tcp/80", true),
        case("rules array: subjects of every namespace", RULES_ARRAY_ENDPOINTS, "db -> ops-web tcp/80", false),
    ]
}

/// A pod created after a Kubernetes ipBlock policy, inside the block, is
/// selected without a re-import; when it goes, so does the selection.
#[test]
fn ipblock_follows_pods_as_they_come_and_go() {
    let mut e = engine();
    let policies = parse_documents(KNP_EGRESS_EXCEPT_DB, "p.yaml").unwrap();
    e.import(policies).unwrap();
    let client = 2;
    let late_ip = Ipv4Addr::new(198, 18, 0, 50);
    let allowed = |e: &Engine, id: u32| datapath(e, client, Direction::Egress, id, 6, 80);
    // The pod's identity before it has an address: not selected.
    e.upsert_endpoint(100, "dev", &labels(&["app=late"]))
        .unwrap();
    let late = e.endpoint(100).unwrap().identity;
    assert!(!allowed(&e, late), "selected before its address was known");
    let change = e.set_address(late_ip, Some(late));
    assert!(
        change.endpoints.iter().any(|u| u.ep_id == client),
        "client's entries were not recomputed"
    );
    assert!(
        allowed(&e, late),
        "a pod made later inside the block is not selected"
    );
    // Moving it outside the block (a new address) deselects it.
    e.set_address(late_ip, None);
    e.set_address(Ipv4Addr::new(198, 19, 0, 50), Some(late));
    assert!(!allowed(&e, late));
    // An address that does not change anything changes nothing.
    let rev = e.revision();
    e.set_address(Ipv4Addr::new(198, 19, 0, 50), Some(late));
    assert_eq!(e.revision(), rev);
}
