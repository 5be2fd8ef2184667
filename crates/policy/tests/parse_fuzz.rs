//! Fuzzing the policy parser and the engine's import (docs/fuzzing.md says
//! how to run it longer and how to replay a failure).
//!
//! Documents are generated from valid skeletons of every kind Pilus reads —
//! CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, Kubernetes
//! NetworkPolicy, `cilium policy import` rules arrays and `kind: List` — then
//! mutated: fields replaced by values of the wrong type, huge or negative
//! numbers, random or Unicode strings, deep nesting; fields removed or added;
//! bad CIDRs, ports and ranges; random label keys and values. Several go in
//! one text, as YAML or JSON. A second campaign then mutates the text's
//! bytes.
//!
//! What must hold:
//!
//! - `parse_documents` never panics;
//! - an error names the source and a document number (syntax errors too);
//! - the same documents written as YAML and as JSON read the same;
//! - what parses imports into an `Engine` holding endpoints without panic;
//!   if the import is refused, everything the engine shows (policies,
//!   identities, endpoints and their entries, revision) is exactly as
//!   before, and the engine goes on exactly like one that never saw it;
//! - if it is accepted, deleting the imported policies again gives back
//!   every endpoint's entries and every identity.
//!
//! Imports are refused only when a CIDR identity cannot be allocated, so
//! some engines are told to give a few prefixes identity numbers outside
//! the CIDR range (as a corrupt restored state could), which fails their
//! allocation.

use pilus_policy::{
    engine::EndpointRecord,
    identity::{cidr_labels, Identity},
    parse_documents, Cidr, EndpointPolicy, Engine, Error, Labels, Policy, PolicyId,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{json, Number, Value};

/// What the text is called in errors; a space and a dot to show that any
/// name comes through.
const SOURCE: &str = "fuzz policy.yaml";

/// Cases per run: enough for CI at the default, more with PROPTEST_CASES.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

// ---- Field values ------------------------------------------------------

fn s(x: &str) -> Value {
    Value::String(x.to_string())
}

/// Strings of every kind: plain, any printable Unicode, control characters.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z][a-z0-9.-]{0,8}",
        2 => "\\PC{0,12}",
        1 => prop::collection::vec(any::<char>(), 0..8).prop_map(String::from_iter),
    ]
}

/// Mostly `valid`, sometimes `invalid`: a skeleton of twenty fields must
/// still come out valid often enough for imports to be exercised.
fn mostly<T: std::fmt::Debug + Clone + 'static>(
    valid: impl Strategy<Value = T> + 'static,
    invalid: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = T> {
    prop_oneof![30 => valid.boxed(), 1 => invalid.boxed()]
}

/// A string from `valid` mostly; sometimes one from `invalid` or any text.
fn pick(
    valid: &'static [&'static str],
    invalid: &'static [&'static str],
) -> impl Strategy<Value = Value> {
    let odd = if invalid.is_empty() {
        any_text().prop_map(Value::String).boxed()
    } else {
        prop_oneof![
            prop::sample::select(invalid).prop_map(s),
            any_text().prop_map(Value::String),
        ]
        .boxed()
    };
    mostly(prop::sample::select(valid).prop_map(s), odd)
}

fn label_key() -> impl Strategy<Value = String> {
    mostly(
        prop::sample::select(
            &[
                "app",
                "tier",
                "team",
                "env",
                "k8s:app",
                "any:tier",
                "reserved:host",
                "k8s:io.kubernetes.pod.namespace",
                "io.kubernetes.pod.namespace",
                "kubernetes.io/metadata.name",
                "io.cilium.k8s.namespace.labels.team",
            ][..],
        )
        .prop_map(str::to_string),
        prop_oneof![
            prop::sample::select(&["", ":", "a:", ":b", "reserved:world"][..])
                .prop_map(str::to_string),
            any_text(),
        ],
    )
}

fn label_value() -> impl Strategy<Value = Value> {
    mostly(
        prop::sample::select(
            &[
                "web", "client", "db", "monitor", "shop", "ops", "dev", "prod", "front", "",
            ][..],
        )
        .prop_map(s),
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::Bool),
            any_text().prop_map(Value::String),
        ],
    )
}

/// Prefixes in 198.18.0.0/15 (the test range) that the engines below know,
/// so that some of them can be made to fail allocation.
const POOL: &[&str] = &[
    "198.18.0.0/15",
    "198.18.0.0/16",
    "198.19.0.0/16",
    "198.18.1.0/24",
    "198.18.2.0/24",
    "198.19.255.255/32",
];

/// Prefixes and forms that are refused: host bits, lengths, IPv6.
const BAD_CIDRS: &[&str] = &[
    "198.18.0.1/16",
    "198.18.0.0/33",
    "198.18.0.0/",
    "198.18.0.0/-1",
    "198.18.256.0/24",
    "198.18.0.0/24/8",
    "::ffff:198.18.0.1/128",
    "198.18.0.0 /24",
    "198.18.0.0/0x10",
    "",
];

fn cidr() -> impl Strategy<Value = Value> {
    let valid = (0u32..1 << 17, 15u8..=32).prop_map(|(n, len)| {
        let addr = 0xc612_0000u32 | n;
        let network = addr & (u32::MAX << (32 - len));
        Value::String(format!("{}/{len}", std::net::Ipv4Addr::from(network)))
    });
    mostly(
        prop_oneof![
            6 => prop::sample::select(POOL).prop_map(s),
            3 => valid,
            1 => Just(s("0.0.0.0/0")),
        ],
        pick(BAD_CIDRS, &[]),
    )
}

/// A port number as written: a number or a string of digits.
fn port_number(range: std::ops::RangeInclusive<u64>) -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => range.clone().prop_map(Value::from),
        1 => range.prop_map(|n| Value::String(n.to_string())),
    ]
}

/// Ports that are refused: out of range, negative, fractional, named.
fn bad_port() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(&[u64::MAX, 1 << 53, 65_536, 70_000][..]).prop_map(Value::from),
        prop::sample::select(&[i64::MIN, -1, -65_535][..]).prop_map(Value::from),
        Just(json!(80.5)),
        prop::sample::select(&["65536", "-1", "http", "1e3", " 80", ""][..]).prop_map(s),
    ]
}

/// `{port, endPort}`: endPort at or after port, sometimes not.
fn port_range(min: u64) -> impl Strategy<Value = (Option<Value>, Option<Value>)> {
    let range =
        (min..=65_535u64, 0u64..100, prop::bool::weighted(0.3)).prop_map(|(p, len, end)| {
            (
                Some(Value::from(p)),
                end.then(|| Value::from((p + len).min(65_535))),
            )
        });
    mostly(
        prop_oneof![
            3 => range,
            1 => port_number(min..=65_535).prop_map(|p| (Some(p), None)),
            1 => Just((None, None)),
        ],
        (
            prop::option::of(bad_port()),
            prop::option::of(prop_oneof![bad_port(), port_number(0..=65_535)]),
        ),
    )
}

// ---- Document skeletons ------------------------------------------------

/// An object from optional fields: absent ones are left out.
fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect(),
    )
}

fn opt<T: Strategy<Value = Value>>(t: T) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(0.4, t)
}

fn list<T: Strategy<Value = Value>>(t: T, max: usize) -> impl Strategy<Value = Value> {
    prop::collection::vec(t, 0..=max).prop_map(Value::Array)
}

fn selector() -> impl Strategy<Value = Value> {
    let expression = (
        label_key(),
        pick(
            &["In", "NotIn", "Exists", "DoesNotExist"],
            &["in", "Equals"],
        ),
        prop::collection::vec(label_value(), 1..3),
        prop::bool::weighted(0.03),
    )
        .prop_map(|(k, op, values, odd)| {
            // In and NotIn take values, Exists and DoesNotExist none;
            // `odd` gets that wrong.
            let takes = matches!(op.as_str(), Some("In" | "NotIn"));
            let values = (takes != odd).then_some(Value::Array(values));
            object(vec![
                ("key", Some(Value::String(k))),
                ("operator", Some(op)),
                ("values", values),
            ])
        });
    (
        opt(
            prop::collection::btree_map(label_key(), label_value(), 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ),
        opt(list(expression, 2)),
    )
        .prop_map(|(ml, me)| object(vec![("matchLabels", ml), ("matchExpressions", me)]))
}

fn cidr_set() -> impl Strategy<Value = Value> {
    // The exceptions lie inside the prefix, mostly.
    let inside = (
        prop::sample::select(&["198.18.0.0/15", "198.18.0.0/16"][..]),
        prop::collection::vec(
            prop::sample::select(&["198.18.1.0/24", "198.18.2.0/24", "198.18.1.128/25"][..]),
            0..3,
        ),
    )
        .prop_map(|(c, except)| json!({"cidr": c, "except": except}));
    let any = (cidr(), opt(list(cidr(), 2)))
        .prop_map(|(c, except)| object(vec![("cidr", Some(c)), ("except", except)]));
    prop_oneof![2 => inside, 1 => any]
}

fn cnp_port() -> impl Strategy<Value = Value> {
    (
        port_range(1),
        opt(pick(
            &["TCP", "UDP", "SCTP", "ANY", "tcp", "Udp"],
            &["ICMP", "HTTP"],
        )),
    )
        .prop_map(|((p, e), pr)| object(vec![("port", p), ("endPort", e), ("protocol", pr)]))
}

fn icmp() -> impl Strategy<Value = Value> {
    let field = (
        mostly(
            prop_oneof![
                (0u64..=255).prop_map(Value::from),
                prop::sample::select(&["EchoRequest", "EchoReply", "TimeExceeded", "8"][..])
                    .prop_map(s),
            ],
            prop_oneof![Just(json!(256)), Just(s("Ping")), Just(Value::Null)],
        ),
        opt(pick(&["IPv4"], &["IPv6", "ipv4"])),
    )
        .prop_map(|(t, f)| object(vec![("type", Some(t)), ("family", f)]));
    mostly(
        list(field, 2).prop_map(|fields| json!({ "fields": fields })),
        Just(json!({})),
    )
}

/// One element of ingress/ingressDeny (`from`) or egress/egressDeny (`to`).
fn cnp_peer_rule(ingress: bool) -> impl Strategy<Value = Value> {
    let to_ports = list(
        mostly(
            prop::collection::vec(cnp_port(), 1..3).prop_map(|ports| json!({ "ports": ports })),
            Just(json!({"ports": []})),
        ),
        2,
    );
    (
        opt(list(selector(), 2)),
        opt(list(cidr(), 2)),
        opt(list(cidr_set(), 2)),
        opt(list(
            pick(
                &[
                    "world",
                    "cluster",
                    "host",
                    "remote-node",
                    "all",
                    "kube-apiserver",
                    "health",
                ],
                &["planet"],
            ),
            2,
        )),
        opt(to_ports),
        prop::option::weighted(0.1, list(icmp(), 1)),
    )
        .prop_map(move |(eps, cidrs, sets, entities, ports, icmps)| {
            let (e, c, cs, en) = if ingress {
                ("fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities")
            } else {
                ("toEndpoints", "toCIDR", "toCIDRSet", "toEntities")
            };
            object(vec![
                (e, eps),
                (c, cidrs),
                (cs, sets),
                (en, entities),
                ("toPorts", ports),
                ("icmps", icmps),
            ])
        })
}

/// A Cilium rule (a `spec`, an element of `specs` or of a rules array).
fn cnp_rule() -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(0.97, selector()),
        opt(list(cnp_peer_rule(true), 2)),
        prop::option::weighted(0.2, list(cnp_peer_rule(true), 1)),
        opt(list(cnp_peer_rule(false), 2)),
        prop::option::weighted(0.2, list(cnp_peer_rule(false), 1)),
        prop::option::weighted(
            0.15,
            (
                opt(any::<bool>().prop_map(Value::Bool)),
                opt(any::<bool>().prop_map(Value::Bool)),
            )
                .prop_map(|(i, e)| object(vec![("ingress", i), ("egress", e)])),
        ),
    )
        .prop_map(|(sel, ing, ingd, eg, egd, dd)| {
            object(vec![
                ("endpointSelector", sel),
                ("ingress", ing),
                ("ingressDeny", ingd),
                ("egress", eg),
                ("egressDeny", egd),
                ("enableDefaultDeny", dd),
            ])
        })
}

fn name() -> impl Strategy<Value = Value> {
    // A small pool, so that documents of one text sometimes collide.
    pick(
        &["a", "b", "allow-web", "deny-all", "web-to-db", "égress"],
        &[""],
    )
}

fn namespace() -> impl Strategy<Value = Value> {
    pick(&["shop", "ops", "dev", "default"], &[""])
}

fn cilium_policy(clusterwide: bool) -> impl Strategy<Value = Value> {
    (
        name(),
        opt(namespace()),
        prop::bool::weighted(0.8),
        cnp_rule(),
        prop::collection::vec(cnp_rule(), 1..3),
    )
        .prop_map(move |(name, ns, single, rule, rules)| {
            object(vec![
                ("apiVersion", Some(s("cilium.io/v2"))),
                (
                    "kind",
                    Some(s(if clusterwide {
                        "CiliumClusterwideNetworkPolicy"
                    } else {
                        "CiliumNetworkPolicy"
                    })),
                ),
                (
                    "metadata",
                    Some(object(vec![("name", Some(name)), ("namespace", ns)])),
                ),
                ("spec", single.then_some(rule)),
                ("specs", (!single).then_some(Value::Array(rules))),
            ])
        })
}

fn knp_peer() -> impl Strategy<Value = Value> {
    mostly(
        prop_oneof![
            3 => selector().prop_map(|p| json!({"podSelector": p})),
            2 => (selector(), opt(selector())).prop_map(|(n, p)| {
                object(vec![("namespaceSelector", Some(n)), ("podSelector", p)])
            }),
            2 => cidr_set().prop_map(|b| json!({"ipBlock": b})),
        ],
        prop_oneof![
            Just(json!({})),
            (selector(), cidr_set()).prop_map(|(p, b)| json!({"podSelector": p, "ipBlock": b})),
        ],
    )
}

fn knp_rule(ingress: bool) -> impl Strategy<Value = Value> {
    let port = (
        opt(pick(&["TCP", "UDP", "SCTP"], &["tcp", "ICMP"])),
        port_range(1),
    )
        .prop_map(|(pr, (p, e))| object(vec![("protocol", pr), ("port", p), ("endPort", e)]));
    (opt(list(knp_peer(), 2)), opt(list(port, 2))).prop_map(move |(peers, ports)| {
        object(vec![
            (if ingress { "from" } else { "to" }, peers),
            ("ports", ports),
        ])
    })
}

fn network_policy() -> impl Strategy<Value = Value> {
    (
        name(),
        opt(namespace()),
        prop::option::weighted(0.97, selector()),
        opt(list(pick(&["Ingress", "Egress"], &["ingress"]), 2)),
        opt(list(knp_rule(true), 2)),
        opt(list(knp_rule(false), 2)),
    )
        .prop_map(|(name, ns, pods, types, ing, eg)| {
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": object(vec![("name", Some(name)), ("namespace", ns)]),
                "spec": object(vec![
                    ("podSelector", pods),
                    ("policyTypes", types),
                    ("ingress", ing),
                    ("egress", eg),
                ]),
            })
        })
}

/// `cilium policy import`: rules named by a `name` label, or by position.
fn rules_array() -> impl Strategy<Value = Value> {
    let label = prop_oneof![
        (name(), pick(&["unspec", "k8s"], &[""]))
            .prop_map(|(v, src)| { json!({"key": "name", "value": v, "source": src}) }),
        name().prop_map(|v| Value::String(format!("name={}", v.as_str().unwrap_or("")))),
        mostly(Just(s("team=shop")), any_text().prop_map(Value::String)),
    ];
    list(
        (cnp_rule(), opt(list(label, 2))).prop_map(|(mut rule, labels)| {
            if let (Value::Object(m), Some(l)) = (&mut rule, labels) {
                m.insert("labels".into(), l);
            }
            rule
        }),
        3,
    )
}

fn policy_object() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => cilium_policy(false),
        2 => cilium_policy(true),
        3 => network_policy(),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => policy_object(),
        2 => rules_array(),
        1 => list(policy_object(), 3).prop_map(|items| {
            json!({"apiVersion": "v1", "kind": "List", "items": items})
        }),
    ]
}

// ---- Mutations of the value tree ---------------------------------------

/// Values that do not belong: wrong types, extremes, Unicode, nesting.
fn wild() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        any_text().prop_map(Value::String),
        (1usize..5000).prop_map(|n| Value::String("x".repeat(n))),
        cidr(),
        bad_port(),
    ];
    let nested = leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(label_key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        8 => nested,
        // Nesting deeper than any parser should follow.
        1 => (1usize..300, any::<bool>()).prop_map(|(depth, arrays)| {
            let mut v = Value::Null;
            for _ in 0..depth {
                v = if arrays { Value::Array(vec![v]) } else { json!({"a": v}) };
            }
            v
        }),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Replace(Index, Value),
    Remove(Index),
    AddField(Index, String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let field_name = prop_oneof![
        3 => prop::sample::select(&[
            "spec", "specs", "ingress", "egress", "fromEndpoint", "toFQDNs", "nodeSelector",
            "rules", "status", "metadata", "kind", "apiVersion", "items", "ports",
        ][..])
        .prop_map(str::to_string),
        1 => any_text(),
    ];
    prop_oneof![
        4 => (any::<Index>(), wild()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        2 => any::<Index>().prop_map(Mutation::Remove),
        2 => (any::<Index>(), field_name, wild()).prop_map(|(i, k, v)| Mutation::AddField(i, k, v)),
    ]
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    At(usize),
}

/// Every node's path, root first.
fn paths(v: &Value) -> Vec<Vec<Step>> {
    let mut out = vec![Vec::new()];
    let mut i = 0;
    while i < out.len() {
        let path = out[i].clone();
        match node(v, &path) {
            Some(Value::Object(m)) => {
                for k in m.keys() {
                    let mut p = path.clone();
                    p.push(Step::Key(k.clone()));
                    out.push(p);
                }
            }
            Some(Value::Array(a)) => {
                for j in 0..a.len() {
                    let mut p = path.clone();
                    p.push(Step::At(j));
                    out.push(p);
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn node<'a>(v: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, step| match step {
        Step::Key(k) => v.get(k),
        Step::At(i) => v.get(i),
    })
}

fn node_mut<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, step| match step {
        Step::Key(k) => v.get_mut(k),
        Step::At(i) => v.get_mut(i),
    })
}

fn mutate(doc: &mut Value, m: &Mutation) {
    let all = paths(doc);
    let pick = |i: &Index| all[i.index(all.len())].clone();
    match m {
        Mutation::Replace(i, v) => {
            if let Some(n) = node_mut(doc, &pick(i)) {
                *n = v.clone();
            }
        }
        Mutation::Remove(i) => {
            let mut path = pick(i);
            let Some(last) = path.pop() else {
                *doc = Value::Null;
                return;
            };
            match (node_mut(doc, &path), last) {
                (Some(Value::Object(m)), Step::Key(k)) => {
                    m.remove(&k);
                }
                (Some(Value::Array(a)), Step::At(j)) => {
                    a.remove(j);
                }
                _ => {}
            }
        }
        Mutation::AddField(i, k, v) => match node_mut(doc, &pick(i)) {
            Some(Value::Object(m)) => {
                m.insert(k.clone(), v.clone());
            }
            Some(Value::Array(a)) => a.push(v.clone()),
            _ => {}
        },
    }
}

fn mutated_document() -> impl Strategy<Value = Value> {
    (
        document(),
        prop_oneof![Just(Vec::new()), prop::collection::vec(mutation(), 1..4)],
    )
        .prop_map(|(mut doc, ms)| {
            for m in &ms {
                mutate(&mut doc, m);
            }
            doc
        })
}

// ---- Rendering -----------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Format {
    Json,
    JsonPretty,
    Yaml,
}

fn render(docs: &[Value], format: Format, leading: bool, trailing: bool) -> String {
    let mut parts: Vec<String> = docs
        .iter()
        .map(|d| match format {
            Format::Json => serde_json::to_string(d).expect("JSON"),
            Format::JsonPretty => serde_json::to_string_pretty(d).expect("JSON"),
            Format::Yaml => yaml_serde::to_string(d).expect("YAML"),
        })
        .collect();
    if leading {
        parts.insert(0, String::new());
    }
    if trailing {
        parts.push(String::new());
    }
    parts.join("\n---\n")
}

/// Characters YAML 1.1 does not allow in a stream, even inside a quoted
/// string, where JSON takes them as they are.
fn yaml_refuses(c: char) -> bool {
    matches!(c, '\u{7f}'..='\u{84}' | '\u{86}'..='\u{9f}' | '\u{fffe}' | '\u{ffff}')
        || (c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{85}'))
}

// ---- Checking --------------------------------------------------------------

/// The document number an error names, if it names one in `SOURCE`.
fn document_number(message: &str) -> Option<usize> {
    let at = message.find(&format!("{SOURCE}: document "))?;
    let rest = &message[at + SOURCE.len() + ": document ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn check_error(e: &Error, documents: usize) -> Result<(), TestCaseError> {
    let message = e.to_string();
    let n = document_number(&message);
    prop_assert!(
        n.is_some_and(|n| (1..=documents).contains(&n)),
        "error does not name {SOURCE:?} and a document 1..={documents}: {message}"
    );
    if let Error::Syntax { document, .. } = e {
        prop_assert!(document.starts_with(SOURCE), "{document}");
    }
    Ok(())
}

/// Everything an engine shows.
#[derive(Debug, PartialEq)]
struct Observed {
    revision: u64,
    policies: Vec<(Policy, u32)>,
    identities: Vec<Identity>,
    endpoints: Vec<(u16, EndpointRecord, Option<EndpointPolicy>)>,
    cidrs: Vec<(Cidr, u32)>,
    namespaces: Vec<(String, Labels)>,
}

fn observe(e: &Engine) -> Observed {
    Observed {
        revision: e.revision(),
        policies: e.policies().map(|(p, c)| (p.clone(), c)).collect(),
        identities: e.identities().iter().cloned().collect(),
        endpoints: e
            .endpoints()
            .map(|(id, r)| (id, r.clone(), e.endpoint_policy(id).map(|p| (*p).clone())))
            .collect(),
        cidrs: e.cidr_identities(),
        namespaces: e
            .namespaces()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn labels(items: &[&str]) -> Labels {
    Labels::parse_all(items, "k8s").expect("labels")
}

/// Policies every engine starts with, so that imports also replace some.
const BASELINE: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - fromCIDRSet: [{cidr: 198.18.0.0/16, except: [198.18.1.0/24]}]
  egress:
  - toCIDR: [198.19.0.0/16]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: ops}
spec: {podSelector: {}}
"#;

/// An engine with namespaces, endpoints and the baseline policies; the
/// prefixes of `POOL` picked by `poison` then get identity numbers outside
/// the CIDR range, so that an import naming them is refused.
fn engine(poison: u8) -> Engine {
    let mut e = Engine::new();
    for (ns, l) in [
        ("shop", &["team=shop", "env=prod"][..]),
        ("ops", &["team=ops"][..]),
        ("dev", &["env=dev"][..]),
    ] {
        e.set_namespace_labels(ns, labels(l)).expect("namespace");
    }
    for (i, (ns, l)) in [
        ("shop", &["app=web", "tier=front"][..]),
        ("shop", &["app=client"][..]),
        ("shop", &["app=db", "tier=data"][..]),
        ("ops", &["app=monitor"][..]),
        ("ops", &["app=web", "tier=front"][..]),
        ("dev", &["app=client"][..]),
        ("default", &["app=web"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        e.upsert_endpoint(i as u16 + 1, ns, &labels(l))
            .expect("endpoint");
    }
    e.import(parse_documents(BASELINE, "baseline.yaml").expect("baseline"))
        .expect("baseline import");
    let bad: Vec<(Labels, u32)> = POOL
        .iter()
        .enumerate()
        .filter(|(i, _)| poison & (1 << i) != 0)
        .map(|(i, c)| (cidr_labels(&c.parse().expect("pool")), 200 + i as u32))
        .collect();
    e.prefer_identities(bad);
    e
}

/// What comes after an import, the same for every engine compared.
fn afterwards(e: &mut Engine) {
    let later = r#"{"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "later"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "client"}},
                 "egress": [{"toCIDR": ["198.18.3.0/24"]}, {"toEndpoints": [{}]}]}}"#;
    e.import(parse_documents(later, "later.json").expect("later"))
        .expect("later import");
    e.upsert_endpoint(30, "shop", &labels(&["app=web", "tier=canary"]))
        .expect("endpoint");
    e.remove_endpoint(2);
}

/// Imports what parsed into an engine and checks what the engine shows.
fn check_import(policies: Vec<Policy>, poison: u8) -> Result<(), TestCaseError> {
    let mut e = engine(poison);
    let before = observe(&e);
    let baseline: Vec<PolicyId> = before.policies.iter().map(|(p, _)| p.id.clone()).collect();
    match e.import(policies.clone()) {
        Err(_) => {
            prop_assert_eq!(&observe(&e), &before, "a refused import changed the engine");
            // Nothing hidden changed either: it goes on like an engine that
            // never saw the import.
            let mut fresh = engine(poison);
            afterwards(&mut e);
            afterwards(&mut fresh);
            prop_assert_eq!(
                observe(&e),
                observe(&fresh),
                "a refused import left a trace"
            );
        }
        Ok(change) => {
            prop_assert_eq!(change.revision, before.revision + 1);
            prop_assert_eq!(e.revision(), change.revision);
            for p in &policies {
                prop_assert_eq!(e.policy(&p.id), Some(p));
            }
            // Deleting what was added gives every entry and identity back.
            if policies.iter().all(|p| !baseline.contains(&p.id)) {
                let ids: Vec<PolicyId> = policies.iter().map(|p| p.id.clone()).collect();
                let (_, n) = e.delete(&ids);
                prop_assert_eq!(n, policies.len());
                let after = observe(&e);
                prop_assert_eq!(&after.policies, &before.policies);
                prop_assert_eq!(&after.identities, &before.identities);
                prop_assert_eq!(&after.endpoints, &before.endpoints);
                prop_assert_eq!(&after.cidrs, &before.cidrs);
            }
        }
    }
    Ok(())
}

/// Upper bound on the document numbers an error about `text` can name:
/// each document starts at the start or after a `---` or `...` line, and
/// one more for a syntax error found while looking for the next document
/// (`{...}}` is "document 2: ... did not find expected <document start> at
/// line 1 column N").
fn max_documents(text: &str) -> usize {
    2 + text
        .lines()
        .filter(|l| l.starts_with("---") || l.starts_with("..."))
        .count()
}

/// Parses `text` (at most `documents` documents) and checks the error, or
/// the import of what it gives.
fn check_text(
    text: &str,
    documents: usize,
    poison: u8,
) -> Result<Option<Vec<Policy>>, TestCaseError> {
    match parse_documents(text, SOURCE) {
        Err(e) => {
            check_error(&e, documents)?;
            Ok(None)
        }
        Ok(policies) => {
            check_import(policies.clone(), poison)?;
            Ok(Some(policies))
        }
    }
}

// ---- Byte mutations ----------------------------------------------------------

#[derive(Clone, Debug)]
enum ByteMutation {
    Flip(Index, u8),
    Insert(Index, &'static str),
    Delete(Index, usize),
    Duplicate(Index, usize),
    Truncate(Index),
}

/// Text that means something to a YAML or JSON reader.
const TOKENS: &[&str] = &[
    "---\n",
    "...\n",
    "\n",
    " ",
    "\t",
    ":",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "#",
    "&a ",
    "*a",
    "!!binary ",
    "!!str ",
    "!tag ",
    "<<: *a",
    "? ",
    "%YAML 1.1\n",
    "|\n",
    ">-\n",
    "~",
    "null",
    ".nan",
    "-.inf",
    "0x1F",
    "0o17",
    "1_000",
    "1e999",
    "-0",
    "yes",
    "\u{feff}",
    "\u{2028}",
    "\\u0000",
    "\\ud800",
    "é",
    "\0",
];

fn byte_mutation() -> impl Strategy<Value = ByteMutation> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..=255).prop_map(|(i, m)| ByteMutation::Flip(i, m)),
        3 => (any::<Index>(), prop::sample::select(TOKENS)).prop_map(|(i, t)| ByteMutation::Insert(i, t)),
        2 => (any::<Index>(), 1usize..16).prop_map(|(i, n)| ByteMutation::Delete(i, n)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| ByteMutation::Duplicate(i, n)),
        1 => any::<Index>().prop_map(ByteMutation::Truncate),
    ]
}

fn mutate_bytes(bytes: &mut Vec<u8>, m: &ByteMutation) {
    let at = |i: &Index, len: usize| i.index(len + 1);
    match m {
        ByteMutation::Flip(i, mask) => {
            if !bytes.is_empty() {
                let j = i.index(bytes.len());
                bytes[j] ^= mask;
            }
        }
        ByteMutation::Insert(i, t) => {
            let j = at(i, bytes.len());
            bytes.splice(j..j, t.bytes());
        }
        ByteMutation::Delete(i, n) => {
            let j = at(i, bytes.len());
            let end = (j + n).min(bytes.len());
            bytes.drain(j..end);
        }
        ByteMutation::Duplicate(i, n) => {
            let j = at(i, bytes.len());
            let end = (j + n).min(bytes.len());
            let copy = bytes[j..end].to_vec();
            bytes.splice(end..end, copy);
        }
        ByteMutation::Truncate(i) => {
            let j = at(i, bytes.len());
            bytes.truncate(j);
        }
    }
}

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![
        Just(Format::Yaml),
        Just(Format::Json),
        Just(Format::JsonPretty)
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_documents_parse_or_fail_naming_the_document(
        docs in prop::collection::vec(mutated_document(), 1..4),
        format in format(),
        leading in any::<bool>(),
        trailing in any::<bool>(),
        poison in any::<u8>(),
    ) {
        let text = render(&docs, format, leading, trailing);
        let documents = docs.len() + usize::from(leading) + usize::from(trailing);
        let parsed = check_text(&text, documents, poison)?;
        // The same documents as YAML and as JSON read alike: the JSON
        // reader reads a text of one JSON value, the YAML reader the rest.
        // YAML refuses some characters JSON allows raw in strings, so a
        // `---` stream of JSON documents with one of those is excepted.
        let other = match format {
            Format::Yaml => Format::Json,
            _ => Format::Yaml,
        };
        let other_text = render(&docs, other, leading, trailing);
        let json_text = if matches!(format, Format::Yaml) { &other_text } else { &text };
        let stream = docs.len() > 1 || leading || trailing;
        if stream && json_text.chars().any(yaml_refuses) {
            return Ok(());
        }
        let again = parse_documents(&other_text, SOURCE);
        match (&parsed, &again) {
            (Some(a), Ok(b)) => prop_assert_eq!(a, b),
            (None, Err(_)) => {}
            _ => prop_assert!(
                false,
                "{:?} reads as {} but {:?} as {}",
                format,
                if parsed.is_some() { "policies" } else { "an error" },
                other,
                match &again { Ok(_) => "policies".to_string(), Err(e) => e.to_string() },
            ),
        }
    }

    #[test]
    fn mutated_bytes_parse_or_fail_naming_the_document(
        docs in prop::collection::vec(document(), 1..3),
        format in format(),
        mutations in prop::collection::vec(byte_mutation(), 1..5),
        poison in any::<u8>(),
    ) {
        let mut bytes = render(&docs, format, false, false).into_bytes();
        for m in &mutations {
            mutate_bytes(&mut bytes, m);
        }
        let text = String::from_utf8_lossy(&bytes);
        check_text(&text, max_documents(&text), poison)?;
    }
}
