//! Cilium's rule format: CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy
//! and the bare rules array of `cilium policy import`.

use crate::{
    document::{describe, get, in_namespace, key, Ctx, Object, PortValue},
    labels::{Label, NAMESPACE_LABEL, SOURCE_K8S, SOURCE_RESERVED},
    Entity, Error, Peer, PeerRule, Policy, PolicyId, PolicyKind, PortRule, Protocol, Rule,
    Selector,
};
use serde_json::Value;

/// A CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy document.
pub(crate) fn cilium_policy(
    ctx: &Ctx,
    doc: &Value,
    m: &Object,
    kind: PolicyKind,
) -> Result<Policy, Error> {
    ctx.fields(
        m,
        "",
        &["apiVersion", "kind", "metadata", "spec", "specs", "status"],
        &[],
    )?;
    let (name, ns) = ctx.metadata(m)?;
    // A clusterwide policy has no namespace, whatever its metadata says.
    let namespace = match kind {
        PolicyKind::CiliumClusterwideNetworkPolicy => None,
        _ => Some(ns.unwrap_or_else(|| "default".into())),
    };
    let id = PolicyId {
        kind,
        namespace,
        name,
    };
    let ctx = &ctx.named(&id);
    let ns = id.namespace.as_deref();
    let mut rules = Vec::new();
    if let Some(spec) = get(m, "spec") {
        rules.push(rule(ctx, spec, "spec", ns)?);
    }
    for (path, spec) in ctx.list(m, "", "specs")?.unwrap_or_default() {
        rules.push(rule(ctx, spec, &path, ns)?);
    }
    if rules.is_empty() {
        return Err(ctx.err(
            "spec",
            "missing; a policy needs spec (an object) or specs (a non-empty list)",
        ));
    }
    Ok(Policy {
        id,
        rules,
        source: doc.clone(),
    })
}

/// `cilium policy import` JSON: each rule is its own policy, named by its
/// `name` label, or else by its place in the array (`policy.json[0]`).
pub(crate) fn rules_array(ctx: &Ctx, items: &[Value]) -> Result<Vec<(String, Policy)>, Error> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("[{i}]");
        let m = ctx.object(item, &path)?;
        let name = name_label(ctx, m, &path)?.unwrap_or_else(|| format!("{}[{i}]", ctx.source));
        let id = PolicyId {
            kind: PolicyKind::Rules,
            namespace: None,
            name,
        };
        let rule = rule(&ctx.named(&id), item, &path, None)?;
        // Kept as a one-rule array so that the source can be imported again.
        let source = Value::Array(vec![item.clone()]);
        out.push((
            format!("{}, {path}", ctx.place()),
            Policy {
                id,
                rules: vec![rule],
                source,
            },
        ));
    }
    Ok(out)
}

/// The value of the rule's label `name`. Labels are `{key, value, source}`
/// objects or `[source:]key=value` strings, as Cilium reads them.
fn name_label(ctx: &Ctx, m: &Object, path: &str) -> Result<Option<String>, Error> {
    for (lpath, l) in ctx.list(m, path, "labels")?.unwrap_or_default() {
        let label = match l {
            Value::String(s) => {
                Label::parse(s, "unspec").map_err(|e| ctx.err(&lpath, e.to_string()))?
            }
            _ => {
                let o = ctx.object(l, &lpath)?;
                ctx.fields(o, &lpath, &["key", "value", "source"], &[])?;
                let field = |f: &str| get(o, f).map_or(Ok(""), |v| ctx.string(v, &key(&lpath, f)));
                Label::new(field("source")?, field("key")?, field("value")?)
            }
        };
        if label.key == "name" {
            if label.value.is_empty() {
                return Err(ctx.err(&lpath, "the name label has an empty value"));
            }
            return Ok(Some(label.value));
        }
    }
    Ok(None)
}

/// One rule (a `spec`, an element of `specs` or of a rules array). `ns` is
/// the namespace of a CiliumNetworkPolicy, which confines its selectors.
fn rule(ctx: &Ctx, v: &Value, path: &str, ns: Option<&str>) -> Result<Rule, Error> {
    let m = ctx.object(v, path)?;
    ctx.fields(
        m,
        path,
        &[
            "endpointSelector",
            "ingress",
            "ingressDeny",
            "egress",
            "egressDeny",
            "enableDefaultDeny",
            "description",
            "labels",
        ],
        &[(
            "nodeSelector",
            "host policies; select pods with endpointSelector",
        )],
    )?;
    let spath = key(path, "endpointSelector");
    let Some(sel) = get(m, "endpointSelector") else {
        return Err(ctx.err(
            &spath,
            "missing; every rule needs an endpointSelector ({} selects every endpoint)",
        ));
    };
    let mut subject = Selector::new(ctx.selector(sel, &spath, &str::to_string)?);
    if let Some(ns) = ns {
        subject = subject.and(in_namespace(ns));
    }
    let peer_rules = |name: &str, names: &Names| -> Result<Vec<PeerRule>, Error> {
        ctx.list(m, path, name)?
            .unwrap_or_default()
            .into_iter()
            .map(|(p, v)| peer_rule(ctx, v, &p, names, ns))
            .collect()
    };
    let ingress = peer_rules("ingress", &INGRESS)?;
    let ingress_deny = peer_rules("ingressDeny", &INGRESS)?;
    let egress = peer_rules("egress", &EGRESS)?;
    let egress_deny = peer_rules("egressDeny", &EGRESS)?;
    let (deny_ingress, deny_egress) = default_deny(ctx, m, path)?;
    Ok(Rule {
        subject,
        enforce_ingress: deny_ingress && !(ingress.is_empty() && ingress_deny.is_empty()),
        enforce_egress: deny_egress && !(egress.is_empty() && egress_deny.is_empty()),
        ingress,
        egress,
        ingress_deny,
        egress_deny,
        origin: path.to_string(),
    })
}

/// `enableDefaultDeny: {ingress, egress}`: false keeps a rule from putting
/// its subjects into default deny (it only adds to what others allow).
fn default_deny(ctx: &Ctx, m: &Object, path: &str) -> Result<(bool, bool), Error> {
    let Some(v) = get(m, "enableDefaultDeny") else {
        return Ok((true, true));
    };
    let path = key(path, "enableDefaultDeny");
    let o = ctx.object(v, &path)?;
    ctx.fields(o, &path, &["ingress", "egress"], &[])?;
    let flag = |dir: &str| match get(o, dir) {
        None => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ctx.err(&key(&path, dir), "expected true or false")),
    };
    Ok((flag("ingress")?, flag("egress")?))
}

/// The peer field names of one direction.
struct Names {
    endpoints: &'static str,
    cidr: &'static str,
    cidr_set: &'static str,
    entities: &'static str,
    known: &'static [&'static str],
    unsupported: &'static [(&'static str, &'static str)],
}

const INGRESS: Names = Names {
    endpoints: "fromEndpoints",
    cidr: "fromCIDR",
    cidr_set: "fromCIDRSet",
    entities: "fromEntities",
    known: &[
        "fromEndpoints",
        "fromCIDR",
        "fromCIDRSet",
        "fromEntities",
        "toPorts",
        "icmps",
    ],
    unsupported: &[
        ("fromRequires", "requirements on peers"),
        ("fromServices", "service peers"),
        ("fromGroups", "cloud provider groups"),
        (
            "fromNodes",
            "node peers; use fromEntities host or remote-node",
        ),
        ("authentication", "mutual authentication"),
    ],
};

const EGRESS: Names = Names {
    endpoints: "toEndpoints",
    cidr: "toCIDR",
    cidr_set: "toCIDRSet",
    entities: "toEntities",
    known: &[
        "toEndpoints",
        "toCIDR",
        "toCIDRSet",
        "toEntities",
        "toPorts",
        "icmps",
    ],
    unsupported: &[
        ("toRequires", "requirements on peers"),
        ("toServices", "service peers"),
        ("toFQDNs", "DNS names; use toCIDR or toCIDRSet"),
        ("toGroups", "cloud provider groups"),
        ("toNodes", "node peers; use toEntities host or remote-node"),
        ("authentication", "mutual authentication"),
    ],
};

/// One element of `ingress`, `ingressDeny`, `egress` or `egressDeny`.
fn peer_rule(
    ctx: &Ctx,
    v: &Value,
    path: &str,
    names: &Names,
    ns: Option<&str>,
) -> Result<PeerRule, Error> {
    let m = ctx.object(v, path)?;
    ctx.fields(m, path, names.known, names.unsupported)?;
    let endpoints = ctx.list(m, path, names.endpoints)?;
    let cidrs = ctx.list(m, path, names.cidr)?;
    let cidr_sets = ctx.list(m, path, names.cidr_set)?;
    let entities = ctx.list(m, path, names.entities)?;
    // A peer field that is present but empty selects nothing (as in Cilium
    // since 1.15), unlike an absent one.
    let has_peer_field =
        endpoints.is_some() || cidrs.is_some() || cidr_sets.is_some() || entities.is_some();
    let mut peers = Vec::new();
    for (p, v) in endpoints.unwrap_or_default() {
        let mut sel = Selector::new(ctx.selector(v, &p, &str::to_string)?);
        // Endpoints of a namespaced policy are in its namespace unless the
        // selector says which namespace, or picks reserved identities
        // (which have none).
        let reserved = sel
            .requirements()
            .iter()
            .any(|r| r.source == SOURCE_RESERVED);
        if let Some(ns) = ns.filter(|_| !reserved && !sel.constrains(SOURCE_K8S, NAMESPACE_LABEL)) {
            sel = sel.and(in_namespace(ns));
        }
        peers.push(Peer::Selector(sel));
    }
    for (p, v) in cidrs.unwrap_or_default() {
        peers.push(Peer::Cidr {
            cidr: ctx.cidr(v, &p)?,
            except: Vec::new(),
        });
    }
    for (p, v) in cidr_sets.unwrap_or_default() {
        let o = ctx.object(v, &p)?;
        ctx.fields(
            o,
            &p,
            &["cidr", "except"],
            &[
                ("cidrGroupRef", "CiliumCIDRGroups"),
                ("cidrGroupSelector", "CiliumCIDRGroups"),
            ],
        )?;
        let (cidr, except) = ctx.cidr_set(o, &p)?;
        peers.push(Peer::Cidr { cidr, except });
    }
    for (p, v) in entities.unwrap_or_default() {
        let name = ctx.string(v, &p)?;
        let entity = Entity::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Entity::NAMES.iter().map(|(n, _)| *n).collect();
            ctx.err(
                &p,
                format!(
                    "unknown entity {name:?}; expected one of {}",
                    known.join(", ")
                ),
            )
        })?;
        peers.push(Peer::Entity(entity));
    }
    let mut ports = Vec::new();
    for (p, v) in ctx.list(m, path, "toPorts")?.unwrap_or_default() {
        to_ports(ctx, v, &p, &mut ports)?;
    }
    for (p, v) in ctx.list(m, path, "icmps")?.unwrap_or_default() {
        icmps(ctx, v, &p, &mut ports)?;
    }
    // Ports alone mean from/to anyone; `{}` matches nothing but still turns
    // default deny on.
    if !has_peer_field && !ports.is_empty() {
        peers.push(Peer::Any);
    }
    Ok(PeerRule {
        peers,
        ports,
        origin: path.to_string(),
    })
}

/// One `toPorts` element: its `ports`. L7 and TLS fields need a proxy.
fn to_ports(ctx: &Ctx, v: &Value, path: &str, out: &mut Vec<PortRule>) -> Result<(), Error> {
    let m = ctx.object(v, path)?;
    ctx.fields(
        m,
        path,
        &["ports"],
        &[
            ("rules", "L7 rules need a proxy"),
            ("serverNames", "TLS SNI matching"),
            ("listener", "Envoy listeners"),
            ("originatingTLS", "TLS interception"),
            ("terminatingTLS", "TLS interception"),
        ],
    )?;
    let ports = ctx.list(m, path, "ports")?.unwrap_or_default();
    if ports.is_empty() {
        // Cilium would match nothing here; more likely a mistake.
        return Err(ctx.err(
            &key(path, "ports"),
            "missing; list at least one port, or drop toPorts to allow every port",
        ));
    }
    for (p, v) in ports {
        out.push(port(ctx, v, &p)?);
    }
    Ok(())
}

/// `{port, endPort, protocol}`; port absent or 0 is every port.
fn port(ctx: &Ctx, v: &Value, path: &str) -> Result<PortRule, Error> {
    let m = ctx.object(v, path)?;
    ctx.fields(m, path, &["port", "endPort", "protocol"], &[])?;
    let ppath = key(path, "protocol");
    let protocol = match get(m, "protocol") {
        None => Protocol::Any,
        Some(v) => {
            let name = ctx.string(v, &ppath)?;
            match name.to_ascii_uppercase().as_str() {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                "SCTP" => Protocol::Sctp,
                "ICMP" => Protocol::Icmp,
                "ANY" => Protocol::Any,
                _ => {
                    return Err(ctx.err(
                        &ppath,
                        format!("protocol {name:?} is not one of TCP, UDP, SCTP, ICMP, ANY"),
                    ))
                }
            }
        }
    };
    let ppath = key(path, "port");
    let port = match get(m, "port").map(|v| ctx.port_value(v, &ppath)).transpose()? {
        None => 0,
        Some(PortValue::Number(n)) => u16::try_from(n)
            .map_err(|_| ctx.err(&ppath, format!("port {n} is larger than 65535")))?,
        Some(PortValue::Name(name)) => {
            return Err(ctx.err(
                &ppath,
                format!("named port {name:?} cannot be resolved: Pilus has no container port names; write the port number"),
            ))
        }
    };
    let epath = key(path, "endPort");
    let end = match get(m, "endPort") {
        None => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| {
                ctx.err(
                    &epath,
                    format!("expected a port number (0-65535), got {}", describe(v)),
                )
            })?,
    };
    if protocol == Protocol::Icmp && port != 0 {
        return Err(ctx.err(&ppath, "ICMP has no ports; select ICMP types with icmps"));
    }
    match (port, end) {
        (0, 0) => Ok(PortRule {
            protocol,
            ports: None,
        }),
        (0, _) => Err(ctx.err(&epath, "endPort needs a nonzero port to start the range")),
        (p, 0) => Ok(PortRule {
            protocol,
            ports: Some((p, p)),
        }),
        (p, e) if e < p => Err(ctx.err(
            &epath,
            format!("endPort {e} is below port {p}; endPort ends the range, so it must be ≥ port"),
        )),
        (p, e) => Ok(PortRule {
            protocol,
            ports: Some((p, e)),
        }),
    }
}

/// ICMPv4 message types by the names Cilium accepts.
const ICMP_TYPES: &[(&str, u8)] = &[
    ("EchoReply", 0),
    ("DestinationUnreachable", 3),
    ("Redirect", 5),
    ("EchoRequest", 8),
    ("TimeExceeded", 11),
    ("ParameterProblem", 12),
];

/// One `icmps` element: `{fields: [{type, family}]}`; each type becomes an
/// ICMP "port".
fn icmps(ctx: &Ctx, v: &Value, path: &str, out: &mut Vec<PortRule>) -> Result<(), Error> {
    let m = ctx.object(v, path)?;
    ctx.fields(m, path, &["fields"], &[])?;
    let Some(fields) = ctx.list(m, path, "fields")? else {
        return Err(ctx.err(
            &key(path, "fields"),
            "missing; list the ICMP types: fields: [{type: 8}]",
        ));
    };
    for (p, f) in fields {
        let o = ctx.object(f, &p)?;
        ctx.fields(o, &p, &["type", "family"], &[])?;
        if let Some(fam) = get(o, "family") {
            let fpath = key(&p, "family");
            match ctx.string(fam, &fpath)? {
                "IPv4" => {}
                "IPv6" => {
                    return Err(ctx.err(&fpath, "ICMPv6 is not supported by Pilus (IPv4 only)"))
                }
                other => {
                    return Err(ctx.err(&fpath, format!("family {other:?} is not IPv4 or IPv6")))
                }
            }
        }
        let tpath = key(&p, "type");
        let Some(t) = get(o, "type") else {
            return Err(ctx.err(&tpath, "missing; give an ICMP type number or name"));
        };
        let t = match ctx.port_value(t, &tpath)? {
            PortValue::Number(n) => u8::try_from(n)
                .map_err(|_| ctx.err(&tpath, format!("ICMP type {n} is larger than 255")))?,
            PortValue::Name(name) => ICMP_TYPES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| *t)
                .ok_or_else(|| {
                    let names: Vec<&str> = ICMP_TYPES.iter().map(|(n, _)| *n).collect();
                    ctx.err(
                        &tpath,
                        format!(
                            "unknown ICMP type {name:?}; use a number or one of {}",
                            names.join(", ")
                        ),
                    )
                })?,
        };
        out.push(PortRule {
            protocol: Protocol::Icmp,
            ports: Some((t.into(), t.into())),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_documents, Op, Requirement};

    fn parse(text: &str) -> Vec<Policy> {
        parse_documents(text, "policy.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> String {
        parse_documents(text, "policy.yaml")
            .unwrap_err()
            .to_string()
    }

    /// A CiliumNetworkPolicy in namespace `prod` with `spec` given in YAML.
    fn cnp(spec: &str) -> String {
        format!("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p, namespace: prod}}\nspec:\n{spec}")
    }

    fn rule_of(spec: &str) -> Rule {
        parse(&cnp(spec)).remove(0).rules.remove(0)
    }

    fn err_of(spec: &str) -> String {
        err(&cnp(spec))
    }

    fn ns(n: &str) -> Requirement {
        in_namespace(n)
    }

    fn req(k: &str, op: Op, vs: &[&str]) -> Requirement {
        Requirement::new(k, op, vs.iter().map(|s| s.to_string()).collect())
    }

    fn pr(peers: Vec<Peer>, ports: Vec<PortRule>, origin: &str) -> PeerRule {
        PeerRule {
            peers,
            ports,
            origin: origin.into(),
        }
    }

    fn tcp(lo: u16, hi: u16) -> PortRule {
        PortRule {
            protocol: Protocol::Tcp,
            ports: Some((lo, hi)),
        }
    }

    #[test]
    fn namespaced_policy() {
        let r = rule_of(
            "
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints:
    - {matchLabels: {app: lb}}
    - {matchLabels: {k8s:io.kubernetes.pod.namespace: infra, app: mon}}
    - {matchLabels: {reserved:host: ''}}
    - {}
    toPorts: [{ports: [{port: '80', protocol: tcp}, {port: 8000, endPort: 8080, protocol: TCP}]}]
  - fromCIDR: [198.18.0.0/16]
    fromCIDRSet: [{cidr: 198.18.0.0/15, except: [198.19.1.0/24]}]
    fromEntities: [world, host]
  - {}
  egress:
  - toPorts: [{ports: [{port: '53', protocol: UDP}, {port: '0', protocol: any}]}]
    icmps: [{fields: [{type: 8}, {type: EchoReply, family: IPv4}]}]
  egressDeny:
  - toEndpoints: [{matchExpressions: [{key: tier, operator: In, values: [db]}]}]
",
        );
        let sel = |reqs: Vec<Requirement>| Peer::Selector(Selector::new(reqs));
        assert_eq!(
            r.subject,
            Selector::new(vec![req("app", Op::In, &["web"]), ns("prod")])
        );
        assert!(r.enforce_ingress && r.enforce_egress);
        assert_eq!(r.origin, "spec");
        assert_eq!(
            r.ingress,
            vec![
                pr(
                    vec![
                        sel(vec![req("app", Op::In, &["lb"]), ns("prod")]),
                        sel(vec![req("app", Op::In, &["mon"]), ns("infra")]),
                        sel(vec![req("reserved:host", Op::In, &[""])]),
                        sel(vec![ns("prod")]),
                    ],
                    vec![tcp(80, 80), tcp(8000, 8080)],
                    "spec.ingress[0]"
                ),
                pr(
                    vec![
                        Peer::Cidr {
                            cidr: "198.18.0.0/16".parse().unwrap(),
                            except: vec![]
                        },
                        Peer::Cidr {
                            cidr: "198.18.0.0/15".parse().unwrap(),
                            except: vec!["198.19.1.0/24".parse().unwrap()]
                        },
                        Peer::Entity(Entity::World),
                        Peer::Entity(Entity::Host),
                    ],
                    vec![],
                    "spec.ingress[1]"
                ),
                pr(vec![], vec![], "spec.ingress[2]"),
            ]
        );
        let icmp = |t| PortRule {
            protocol: Protocol::Icmp,
            ports: Some((t, t)),
        };
        assert_eq!(
            r.egress,
            vec![pr(
                vec![Peer::Any],
                vec![
                    PortRule {
                        protocol: Protocol::Udp,
                        ports: Some((53, 53))
                    },
                    PortRule {
                        protocol: Protocol::Any,
                        ports: None
                    },
                    icmp(8),
                    icmp(0)
                ],
                "spec.egress[0]"
            )]
        );
        assert_eq!(
            r.egress_deny,
            vec![pr(
                vec![sel(vec![req("tier", Op::In, &["db"]), ns("prod")])],
                vec![],
                "spec.egressDeny[0]"
            )]
        );
        assert!(r.ingress_deny.is_empty());
    }

    #[test]
    fn empty_peer_list_selects_nothing_and_default_deny_can_be_off() {
        let r = rule_of(
            "
  endpointSelector: {}
  description: ignored
  labels: [{key: a, value: b}]
  enableDefaultDeny: {ingress: false}
  ingress: [{fromEndpoints: [], toPorts: [{ports: [{port: 80}]}]}]
  egress: []
",
        );
        assert_eq!(r.subject, Selector::new(vec![ns("prod")]));
        let any80 = PortRule {
            protocol: Protocol::Any,
            ports: Some((80, 80)),
        };
        assert_eq!(r.ingress, vec![pr(vec![], vec![any80], "spec.ingress[0]")]);
        assert!(!r.enforce_ingress && !r.enforce_egress);
        assert!(
            err_of("  endpointSelector: {}\n  enableDefaultDeny: {ingress: 'no'}\n")
                .contains("expected true or false")
        );
    }

    #[test]
    fn clusterwide_and_specs() {
        let ps = parse(
            "
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: cw, namespace: ignored}
specs:
- endpointSelector: {matchLabels: {app: a}}
  egress: [{toEndpoints: [{matchLabels: {app: b}}]}]
- endpointSelector: {}
  ingressDeny: [{fromEntities: [world]}]
status: {whatever: 1}
",
        );
        let p = &ps[0];
        assert_eq!(
            p.id,
            PolicyId {
                kind: PolicyKind::CiliumClusterwideNetworkPolicy,
                namespace: None,
                name: "cw".into()
            }
        );
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.rules[0].subject, Selector::labels([("app", "a")]));
        assert_eq!(p.rules[0].origin, "specs[0]");
        // Nothing confines a clusterwide policy's peers to a namespace.
        assert_eq!(
            p.rules[0].egress[0].peers,
            vec![Peer::Selector(Selector::labels([("app", "b")]))]
        );
        assert!(!p.rules[0].enforce_ingress && p.rules[0].enforce_egress);
        assert_eq!(p.rules[1].ingress_deny[0].origin, "specs[1].ingressDeny[0]");
        assert!(p.rules[1].enforce_ingress && !p.rules[1].enforce_egress);
        assert_eq!(p.source["status"]["whatever"], 1);
    }

    #[test]
    fn seed_rules_array() {
        let text = r#"[{"labels":[{"key":"name","value":"l3-rule"}],"endpointSelector":{"matchLabels":{"id":"app1"}},"ingress":[{"fromEndpoints":[{"matchLabels":{"id":"app2"}}],"toPorts":[{"ports":[{"port":"80","protocol":"TCP"}]}]}]},
            {"labels":["unspec:env=x"],"endpointSelector":{},"egress":[{}]}]"#;
        let ps = parse_documents(text, "rules.json").unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(
            ps[0].id,
            PolicyId {
                kind: PolicyKind::Rules,
                namespace: None,
                name: "l3-rule".into()
            }
        );
        assert_eq!(
            ps[0].rules,
            vec![Rule {
                subject: Selector::labels([("id", "app1")]),
                enforce_ingress: true,
                enforce_egress: false,
                ingress: vec![pr(
                    vec![Peer::Selector(Selector::labels([("id", "app2")]))],
                    vec![tcp(80, 80)],
                    "[0].ingress[0]"
                )],
                egress: vec![],
                ingress_deny: vec![],
                egress_deny: vec![],
                origin: "[0]".into(),
            }]
        );
        assert_eq!(ps[0].source[0]["labels"][0]["value"], "l3-rule");
        // No name label: named by place.
        assert_eq!(ps[1].id.name, "rules.json[1]");
        assert_eq!(
            ps[1].rules[0].egress,
            vec![pr(vec![], vec![], "[1].egress[0]")]
        );
        let dup = r#"[{"labels":["name=a"],"endpointSelector":{}},{"labels":["name=a"],"endpointSelector":{}}]"#;
        assert_eq!(
            parse_documents(dup, "r.json").unwrap_err().to_string(),
            "policy \"Rules a\" is defined twice in this import (r.json: document 1, [0] and r.json: document 1, [1])"
        );
        assert_eq!(
            parse_documents(r#"[{"endpointSelector":{},"ingres":[]}]"#, "r.json").unwrap_err().to_string(),
            "r.json: document 1 (Rules r.json[0]): [0].ingres: unknown field \"ingres\"; expected one of \
             endpointSelector, ingress, ingressDeny, egress, egressDeny, enableDefaultDeny, description, labels"
        );
    }

    #[test]
    fn unsupported_fields() {
        let e = |s: &str| err_of(&format!("  endpointSelector: {{}}\n{s}"));
        assert_eq!(
            e("  egress: [{toFQDNs: [{matchName: x.com}]}]"),
            "policy.yaml: document 1 (CiliumNetworkPolicy prod/p): spec.egress[0].toFQDNs: \
             toFQDNs is not supported by Pilus (DNS names; use toCIDR or toCIDRSet)"
        );
        assert!(e("  ingress: [{fromRequires: [{}]}]")
            .contains("fromRequires is not supported by Pilus"));
        assert!(e("  egress: [{toServices: []}]").contains("toServices is not supported by Pilus"));
        assert!(e("  egress: [{toGroups: []}]").contains("toGroups is not supported by Pilus"));
        assert!(e("  ingress: [{fromNodes: []}]").contains("fromNodes is not supported by Pilus"));
        assert!(e("  ingress: [{fromCIDRSet: [{cidrGroupRef: g}]}]")
            .contains("[0].cidrGroupRef: cidrGroupRef is not supported by Pilus"));
        assert!(e("  ingress: [{authentication: {mode: required}}]")
            .contains("authentication is not supported"));
        assert!(
            e("  ingress: [{toPorts: [{ports: [{port: '80'}], rules: {http: []}}]}]")
                .contains("spec.ingress[0].toPorts[0].rules: rules is not supported by Pilus")
        );
        for f in [
            "serverNames",
            "listener",
            "originatingTLS",
            "terminatingTLS",
        ] {
            assert!(e(&format!(
                "  egress: [{{toPorts: [{{ports: [{{port: '443'}}], {f}: x}}]}}]"
            ))
            .contains(&format!("{f} is not supported by Pilus")));
        }
        let e = err_of("  nodeSelector: {}\n");
        assert!(e.ends_with("spec.nodeSelector: nodeSelector is not supported by Pilus (host policies; select pods with endpointSelector)"), "{e}");
        assert!(err_of("  ingress: []\n").contains("spec.endpointSelector: missing"));
    }

    #[test]
    fn port_errors() {
        let e = |ports: &str| {
            err_of(&format!(
                "  endpointSelector: {{}}\n  ingress: [{{toPorts: [{{ports: [{ports}]}}]}}]\n"
            ))
        };
        assert_eq!(
            e("{port: http}"),
            "policy.yaml: document 1 (CiliumNetworkPolicy prod/p): spec.ingress[0].toPorts[0].ports[0].port: \
             named port \"http\" cannot be resolved: Pilus has no container port names; write the port number"
        );
        assert!(e("{port: 70000}").contains("ports[0].port: port 70000 is larger than 65535"));
        assert!(e("{port: -1}").contains("-1 is not a port number"));
        assert!(
            e("{port: 80, endPort: 79}").contains("ports[0].endPort: endPort 79 is below port 80")
        );
        assert!(e("{endPort: 90}").contains("endPort needs a nonzero port"));
        assert!(e("{port: 80, protocol: HTTP}").contains(
            "ports[0].protocol: protocol \"HTTP\" is not one of TCP, UDP, SCTP, ICMP, ANY"
        ));
        assert!(e("{port: 80, protocol: ICMP}").contains("ICMP has no ports"));
        assert!(e("{prot: 80}")
            .contains("unknown field \"prot\"; expected one of port, endPort, protocol"));
        assert!(
            err_of("  endpointSelector: {}\n  ingress: [{toPorts: [{}]}]\n")
                .contains("toPorts[0].ports: missing")
        );
        let icmp = |f: &str| {
            err_of(&format!(
                "  endpointSelector: {{}}\n  egress: [{{icmps: [{{fields: [{f}]}}]}}]\n"
            ))
        };
        assert!(
            icmp("{type: 8, family: IPv6}").contains("family: ICMPv6 is not supported by Pilus")
        );
        assert!(icmp("{type: Echo}")
            .contains("unknown ICMP type \"Echo\"; use a number or one of EchoReply"));
        assert!(icmp("{type: 256}").contains("ICMP type 256 is larger than 255"));
    }

    #[test]
    fn peer_errors() {
        let e = |rule: &str| err_of(&format!("  endpointSelector: {{}}\n  ingress: [{rule}]\n"));
        assert_eq!(
            e("{fromCIDR: [198.18.0.0/33]}"),
            "policy.yaml: document 1 (CiliumNetworkPolicy prod/p): spec.ingress[0].fromCIDR[0]: prefix length 33 is longer than 32"
        );
        assert!(e("{fromCIDR: [198.18.0.1/15]}").contains("has host bits set"));
        assert!(
            e("{fromCIDRSet: [{cidr: 198.18.0.0/16, except: [198.19.1.0/24]}]}").contains(
                "fromCIDRSet[0].except[0]: 198.19.1.0/24 is not inside cidr 198.18.0.0/16"
            )
        );
        assert!(e("{fromEntities: [everything]}")
            .contains("unknown entity \"everything\"; expected one of world, cluster, host, remote-node, health, init, unmanaged, kube-apiserver, all"));
        assert!(e(
            "{fromEndpoints: [{matchExpressions: [{key: a, operator: Equals, values: [b]}]}]}"
        )
        .contains(
            "fromEndpoints[0].matchExpressions[0].operator: operator \"Equals\" is not one of"
        ));
        assert!(e("{fromEndpoints: {matchLabels: {a: b}}}")
            .contains("fromEndpoints: expected a list, got an object"));
    }

    #[test]
    fn spec_is_required() {
        assert!(
            err("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\n")
                .contains("spec: missing")
        );
        assert!(err(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspecs: []\n"
        )
        .contains("spec: missing"));
        let p = &parse("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec: {endpointSelector: {}}\n")[0];
        assert_eq!(p.id.namespace.as_deref(), Some("default"));
        assert!(!p.rules[0].enforce_ingress && !p.rules[0].enforce_egress);
    }
}
