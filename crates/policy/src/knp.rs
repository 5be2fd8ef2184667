//! Kubernetes NetworkPolicy (networking.k8s.io/v1), with Kubernetes'
//! semantics, in Pilus's rule form.

use crate::{
    document::{describe, get, in_namespace, key, Ctx, Object, PortValue},
    labels::{NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX, SOURCE_K8S},
    Error, Op, Peer, PeerRule, Policy, PolicyId, PolicyKind, PortRule, Protocol, Requirement, Rule,
    Selector,
};
use serde_json::Value;

/// The well-known label every namespace has, which names it; Cilium gives
/// pods their namespace's name as `k8s:io.kubernetes.pod.namespace`.
const NAMESPACE_NAME_KEY: &str = "kubernetes.io/metadata.name";

pub(crate) fn network_policy(ctx: &Ctx, doc: &Value, m: &Object) -> Result<Policy, Error> {
    ctx.fields(
        m,
        "",
        &["apiVersion", "kind", "metadata", "spec", "status"],
        &[],
    )?;
    let (name, ns) = ctx.metadata(m)?;
    let ns = ns.unwrap_or_else(|| "default".into());
    let id = PolicyId {
        kind: PolicyKind::NetworkPolicy,
        namespace: Some(ns.clone()),
        name,
    };
    let ctx = &ctx.named(&id);
    let Some(spec) = get(m, "spec") else {
        return Err(ctx.err(
            "spec",
            "missing; a NetworkPolicy needs a spec with a podSelector",
        ));
    };
    let spec = ctx.object(spec, "spec")?;
    ctx.fields(
        spec,
        "spec",
        &["podSelector", "policyTypes", "ingress", "egress"],
        &[],
    )?;
    let Some(pods) = get(spec, "podSelector") else {
        return Err(ctx.err(
            "spec.podSelector",
            "missing; write podSelector: {} to select every pod of the namespace",
        ));
    };
    let subject =
        Selector::new(ctx.selector(pods, "spec.podSelector", &pod_key)?).and(in_namespace(&ns));
    // Rules of a direction the policy does not enforce are still checked, so
    // that mistakes in them are not silently kept.
    let rules = |dir: &str, peers: &str| -> Result<Option<Vec<PeerRule>>, Error> {
        ctx.list(spec, "spec", dir)?
            .map(|rs| {
                rs.into_iter()
                    .map(|(p, v)| peer_rule(ctx, v, &p, peers, &ns))
                    .collect()
            })
            .transpose()
    };
    let ingress = rules("ingress", "from")?;
    let egress = rules("egress", "to")?;
    let (enforce_ingress, enforce_egress) =
        policy_types(ctx, spec, egress.as_ref().is_some_and(|e| !e.is_empty()))?;
    Ok(Policy {
        id,
        rules: vec![Rule {
            subject,
            enforce_ingress,
            enforce_egress,
            ingress: ingress.filter(|_| enforce_ingress).unwrap_or_default(),
            egress: egress.filter(|_| enforce_egress).unwrap_or_default(),
            ingress_deny: Vec::new(),
            egress_deny: Vec::new(),
            origin: "spec".into(),
        }],
        source: doc.clone(),
    })
}

/// Which directions the policy isolates. Without `policyTypes`, Kubernetes
/// takes Ingress, plus Egress if there are egress rules.
fn policy_types(ctx: &Ctx, spec: &Object, has_egress: bool) -> Result<(bool, bool), Error> {
    let types = ctx.list(spec, "spec", "policyTypes")?.unwrap_or_default();
    if types.is_empty() {
        return Ok((true, has_egress));
    }
    let (mut ingress, mut egress) = (false, false);
    for (p, t) in types {
        match ctx.string(t, &p)? {
            "Ingress" => ingress = true,
            "Egress" => egress = true,
            other => {
                return Err(ctx.err(
                    &p,
                    format!("policy type {other:?} is not Ingress or Egress"),
                ))
            }
        }
    }
    Ok((ingress, egress))
}

/// A pod label key: NetworkPolicy selects Kubernetes labels only.
fn pod_key(k: &str) -> String {
    format!("{SOURCE_K8S}:{k}")
}

/// A namespace label key, as Cilium copies namespace labels onto pods.
fn namespace_key(k: &str) -> String {
    if k == NAMESPACE_NAME_KEY {
        format!("{SOURCE_K8S}:{NAMESPACE_LABEL}")
    } else {
        format!("{SOURCE_K8S}:{NAMESPACE_LABELS_PREFIX}{k}")
    }
}

/// `ingress[i]` (`peers` = "from") or `egress[i]` ("to"). No peers is any
/// peer; no ports is every port.
fn peer_rule(
    ctx: &Ctx,
    v: &Value,
    path: &str,
    peers_name: &str,
    ns: &str,
) -> Result<PeerRule, Error> {
    let m = ctx.object(v, path)?;
    ctx.fields(m, path, &[peers_name, "ports"], &[])?;
    let mut peers = ctx
        .list(m, path, peers_name)?
        .unwrap_or_default()
        .into_iter()
        .map(|(p, v)| peer(ctx, v, &p, ns))
        .collect::<Result<Vec<_>, _>>()?;
    if peers.is_empty() {
        peers.push(Peer::Any);
    }
    let ports = ctx
        .list(m, path, "ports")?
        .unwrap_or_default()
        .into_iter()
        .map(|(p, v)| port(ctx, v, &p))
        .collect::<Result<_, _>>()?;
    Ok(PeerRule {
        peers,
        ports,
        origin: path.to_string(),
    })
}

fn peer(ctx: &Ctx, v: &Value, path: &str, ns: &str) -> Result<Peer, Error> {
    let m = ctx.object(v, path)?;
    ctx.fields(
        m,
        path,
        &["podSelector", "namespaceSelector", "ipBlock"],
        &[],
    )?;
    let pods = get(m, "podSelector")
        .map(|v| ctx.selector(v, &key(path, "podSelector"), &pod_key))
        .transpose()?;
    let namespaces = get(m, "namespaceSelector")
        .map(|v| ctx.selector(v, &key(path, "namespaceSelector"), &namespace_key))
        .transpose()?;
    let block = get(m, "ipBlock");
    match (pods, namespaces, block) {
        (None, None, Some(b)) => {
            let bpath = key(path, "ipBlock");
            let o = ctx.object(b, &bpath)?;
            ctx.fields(o, &bpath, &["cidr", "except"], &[])?;
            // Kubernetes' ipBlock, unlike Cilium's CIDR rules, also selects
            // the pods inside it.
            let (cidr, except) = ctx.cidr_set(o, &bpath)?;
            Ok(Peer::IpBlock { cidr, except })
        }
        (_, _, Some(_)) => Err(ctx.err(
            &key(path, "ipBlock"),
            "ipBlock cannot be combined with podSelector or namespaceSelector; make it a separate peer",
        )),
        (Some(pods), None, None) => Ok(Peer::Selector(Selector::new(pods).and(in_namespace(ns)))),
        (pods, Some(mut reqs), None) => {
            // Only pods, which all have a namespace: not the host, world or
            // other reserved identities.
            let pod_ns = format!("{SOURCE_K8S}:{NAMESPACE_LABEL}");
            reqs.push(Requirement::new(&pod_ns, Op::Exists, Vec::new()));
            reqs.extend(pods.unwrap_or_default());
            Ok(Peer::Selector(Selector::new(reqs)))
        }
        (None, None, None) => Err(ctx.err(path, "an empty peer selects nothing; give podSelector, namespaceSelector or ipBlock")),
    }
}

/// `{protocol, port, endPort}`; protocol defaults to TCP, no port is every
/// port of the protocol.
fn port(ctx: &Ctx, v: &Value, path: &str) -> Result<PortRule, Error> {
    let m = ctx.object(v, path)?;
    ctx.fields(m, path, &["protocol", "port", "endPort"], &[])?;
    let ppath = key(path, "protocol");
    let protocol = match get(m, "protocol")
        .map(|v| ctx.string(v, &ppath))
        .transpose()?
    {
        None | Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        // Kubernetes spells them in upper case only.
        Some(other) => {
            return Err(ctx.err(
                &ppath,
                format!("protocol {other:?} is not one of TCP, UDP, SCTP (upper case)"),
            ))
        }
    };
    let ppath = key(path, "port");
    let port = match get(m, "port").map(|v| ctx.port_value(v, &ppath)).transpose()? {
        None => None,
        Some(PortValue::Number(n @ 1..=65535)) => Some(n as u16),
        Some(PortValue::Number(n)) => return Err(ctx.err(&ppath, format!("port {n} is not between 1 and 65535"))),
        Some(PortValue::Name(name)) => {
            return Err(ctx.err(
                &ppath,
                format!(
                    "named port {name:?} cannot be resolved: Pilus does not know the pods' container port names; use the port number"
                ),
            ))
        }
    };
    let epath = key(path, "endPort");
    let Some(end) = get(m, "endPort") else {
        return Ok(PortRule {
            protocol,
            ports: port.map(|p| (p, p)),
        });
    };
    let end = end
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| {
            ctx.err(
                &epath,
                format!("expected a port number (1-65535), got {}", describe(end)),
            )
        })?;
    match port {
        None => Err(ctx.err(&epath, "endPort needs a numeric port to start the range")),
        Some(p) if end < p => Err(ctx.err(
            &epath,
            format!("endPort {end} is below port {p}; endPort must be ≥ port"),
        )),
        Some(p) => Ok(PortRule {
            protocol,
            ports: Some((p, end)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_documents;

    fn knp(spec: &str) -> String {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np, namespace: shop, labels: {{a: b}}}}\nspec:\n{spec}"
        )
    }

    fn rule_of(spec: &str) -> Rule {
        let mut ps = parse_documents(&knp(spec), "np.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ps[0].id.to_string(), "NetworkPolicy shop/np");
        ps.remove(0).rules.remove(0)
    }

    fn err_of(spec: &str) -> String {
        parse_documents(&knp(spec), "np.yaml")
            .unwrap_err()
            .to_string()
    }

    fn req(k: &str, op: Op, vs: &[&str]) -> Requirement {
        Requirement::new(k, op, vs.iter().map(|s| s.to_string()).collect())
    }

    fn ns_exists() -> Requirement {
        req("k8s:io.kubernetes.pod.namespace", Op::Exists, &[])
    }

    fn port(protocol: Protocol, ports: Option<(u16, u16)>) -> PortRule {
        PortRule { protocol, ports }
    }

    #[test]
    fn peers_and_ports() {
        let r = rule_of(
            "
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: api}}
    - namespaceSelector: {matchLabels: {team: ops}}
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: mon}}
      podSelector: {matchExpressions: [{key: app, operator: In, values: [prom]}]}
    - namespaceSelector: {}
    - ipBlock: {cidr: 198.18.0.0/15, except: [198.19.9.0/24]}
    ports:
    - {port: 5432}
    - {protocol: UDP, port: '53'}
    - {port: 8000, endPort: 8100}
    - {protocol: SCTP}
",
        );
        assert_eq!(
            r.subject,
            Selector::new(vec![req("k8s:app", Op::In, &["db"]), in_namespace("shop")])
        );
        assert!(r.enforce_ingress && !r.enforce_egress);
        let sel = |reqs: Vec<Requirement>| Peer::Selector(Selector::new(reqs));
        assert_eq!(
            r.ingress,
            vec![PeerRule {
                peers: vec![
                    sel(vec![req("k8s:app", Op::In, &["api"]), in_namespace("shop")]),
                    sel(vec![
                        req("k8s:io.cilium.k8s.namespace.labels.team", Op::In, &["ops"]),
                        ns_exists()
                    ]),
                    sel(vec![
                        in_namespace("mon"),
                        ns_exists(),
                        req("k8s:app", Op::In, &["prom"])
                    ]),
                    sel(vec![ns_exists()]),
                    Peer::IpBlock {
                        cidr: "198.18.0.0/15".parse().unwrap(),
                        except: vec!["198.19.9.0/24".parse().unwrap()]
                    },
                ],
                ports: vec![
                    port(Protocol::Tcp, Some((5432, 5432))),
                    port(Protocol::Udp, Some((53, 53))),
                    port(Protocol::Tcp, Some((8000, 8100))),
                    port(Protocol::Sctp, None),
                ],
                origin: "spec.ingress[0]".into(),
            }]
        );
        assert!(r.egress.is_empty() && r.ingress_deny.is_empty() && r.egress_deny.is_empty());
        assert_eq!(r.origin, "spec");
    }

    #[test]
    fn policy_types_decide_enforcement() {
        // Default: Ingress, plus Egress when there are egress rules.
        let r = rule_of("  podSelector: {}\n  egress: [{to: [], ports: []}]\n");
        assert!(r.enforce_ingress && r.enforce_egress);
        assert!(r.ingress.is_empty());
        assert_eq!(
            r.egress,
            vec![PeerRule {
                peers: vec![Peer::Any],
                ports: vec![],
                origin: "spec.egress[0]".into()
            }]
        );
        let r = rule_of("  podSelector: {}\n  egress: []\n");
        assert!(r.enforce_ingress && !r.enforce_egress);
        // `ingress: [{}]` allows everything.
        let r = rule_of("  podSelector: {}\n  ingress: [{}]\n");
        assert_eq!(
            r.ingress,
            vec![PeerRule {
                peers: vec![Peer::Any],
                ports: vec![],
                origin: "spec.ingress[0]".into()
            }]
        );
        // Egress only: ingress rules are not applied.
        let r = rule_of("  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]\n");
        assert!(!r.enforce_ingress && r.enforce_egress);
        assert!(r.ingress.is_empty() && r.egress.is_empty());
        let r = rule_of("  podSelector: {}\n  policyTypes: [Ingress, Egress]\n");
        assert!(r.enforce_ingress && r.enforce_egress && r.ingress.is_empty());
        assert!(err_of("  podSelector: {}\n  policyTypes: [ingress]\n")
            .ends_with("spec.policyTypes[0]: policy type \"ingress\" is not Ingress or Egress"));
    }

    #[test]
    fn errors() {
        let e = |rule: &str| err_of(&format!("  podSelector: {{}}\n  ingress: [{rule}]\n"));
        assert_eq!(
            e("{ports: [{port: http}]}"),
            "np.yaml: document 1 (NetworkPolicy shop/np): spec.ingress[0].ports[0].port: named port \"http\" \
             cannot be resolved: Pilus does not know the pods' container port names; use the port number"
        );
        assert!(e("{ports: [{port: 0}]}").contains("port 0 is not between 1 and 65535"));
        assert!(e("{ports: [{port: 65536}]}").contains("port 65536 is not between 1 and 65535"));
        assert!(e("{ports: [{protocol: tcp, port: 80}]}")
            .contains("ports[0].protocol: protocol \"tcp\" is not one of TCP, UDP, SCTP"));
        assert!(e("{ports: [{port: 90, endPort: 80}]}")
            .contains("ports[0].endPort: endPort 80 is below port 90"));
        assert!(e("{ports: [{endPort: 80}]}").contains("endPort needs a numeric port"));
        assert!(e("{ports: [{port: 80, endport: 90}]}")
            .contains("unknown field \"endport\"; expected one of protocol, port, endPort"));
        assert!(
            e("{from: [{}]}").contains("spec.ingress[0].from[0]: an empty peer selects nothing")
        );
        assert!(
            e("{from: [{ipBlock: {cidr: 198.18.0.0/15}, podSelector: {}}]}")
                .contains("from[0].ipBlock: ipBlock cannot be combined")
        );
        assert!(
            e("{from: [{ipBlock: {cidr: 198.18.0.0/16, except: [198.19.0.0/24]}}]}").contains(
                "from[0].ipBlock.except[0]: 198.19.0.0/24 is not inside cidr 198.18.0.0/16"
            )
        );
        assert!(e("{from: [{ipBlock: {cidr: 198.18.0.0/40}}]}")
            .contains("from[0].ipBlock.cidr: prefix length 40 is longer than 32"));
        assert!(
            e("{from: [{ipBlock: {}}]}").contains("ipBlock.cidr: expected a string, got nothing")
        );
        assert!(
            e("{from: [{namespaceSelector: {matchExpressions: [{key: a, operator: Is}]}}]}")
                .contains("operator \"Is\" is not one of")
        );
        assert!(e("{to: []}").contains("unknown field \"to\"; expected one of from, ports"));
        assert!(err_of("  policyTypes: [Ingress]\n").contains("spec.podSelector: missing"));
        assert!(err_of("  podSelector: {}\n  egres: []\n").contains("unknown field \"egres\""));
    }
}
