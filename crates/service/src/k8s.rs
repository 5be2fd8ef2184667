//! Kubernetes `Service` and `EndpointSlice` documents (YAML or JSON, one
//! or many per text, `List`s too) turned into Pilus services, as a cluster
//! would have them:
//!
//! - frontends: each service port on every IPv4 cluster IP (ClusterIP), on
//!   every external IP (ExternalIP), on every load-balancer ingress IP of
//!   the status (LoadBalancer), and its nodePort on 0.0.0.0 (NodePort, for
//!   types NodePort and LoadBalancer);
//! - backends: the endpoints of the slices labelled
//!   `kubernetes.io/service-name: <name>`, one per endpoint address and
//!   slice port that a service port of that name has: ready ones active,
//!   serving-but-terminating ones terminating, the others left out;
//! - `sessionAffinity: ClientIP` (with its timeout, default 10800 s),
//!   `externalTrafficPolicy` (Cluster or Local, for the addresses reached
//!   from outside), and the algorithm from the annotation
//!   `service.cilium.io/lb-algorithm`.
//!
//! The documents are read strictly: a field Kubernetes does not define for
//! these kinds (a typo) is refused with its path, as is any other kind.
//! Fields Kubernetes defines that do not matter here are accepted and
//! ignored. What cannot be served is skipped with a note: headless and
//! ExternalName services, IPv6 addresses and slices.

// The document structs name every field Kubernetes defines for these kinds,
// so that any other (a typo) is refused; the ones Pilus does not use are
// read as IgnoredAny and never looked at.
#![allow(dead_code)]

use crate::{Error, Service};
use pilus_api_types as api;
use serde::{de::IgnoredAny, Deserialize};
use std::collections::BTreeMap;

/// What an import found.
#[derive(Debug, Default)]
pub struct Imported {
    pub services: Vec<Service>,
    /// Read but not imported, and why.
    pub skipped: Vec<String>,
}

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const ALGORITHM_ANNOTATION: &str = "service.cilium.io/lb-algorithm";
/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ObjectMeta {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    // Defined by Kubernetes, not needed here.
    generate_name: Option<IgnoredAny>,
    uid: Option<IgnoredAny>,
    resource_version: Option<IgnoredAny>,
    generation: Option<IgnoredAny>,
    creation_timestamp: Option<IgnoredAny>,
    deletion_timestamp: Option<IgnoredAny>,
    deletion_grace_period_seconds: Option<IgnoredAny>,
    managed_fields: Option<IgnoredAny>,
    owner_references: Option<IgnoredAny>,
    finalizers: Option<IgnoredAny>,
    self_link: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct K8sService {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    #[serde(default)]
    spec: ServiceSpec,
    status: Option<ServiceStatus>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceSpec {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    cluster_ips: Option<Vec<String>>,
    #[serde(default)]
    ports: Vec<ServicePort>,
    #[serde(rename = "externalIPs", default)]
    external_ips: Vec<String>,
    session_affinity: Option<String>,
    session_affinity_config: Option<SessionAffinityConfig>,
    selector: Option<IgnoredAny>,
    external_traffic_policy: Option<String>,
    internal_traffic_policy: Option<IgnoredAny>,
    ip_families: Option<IgnoredAny>,
    ip_family_policy: Option<IgnoredAny>,
    #[serde(rename = "loadBalancerIP")]
    load_balancer_ip: Option<IgnoredAny>,
    load_balancer_source_ranges: Option<IgnoredAny>,
    load_balancer_class: Option<IgnoredAny>,
    allocate_load_balancer_node_ports: Option<IgnoredAny>,
    health_check_node_port: Option<IgnoredAny>,
    publish_not_ready_addresses: Option<IgnoredAny>,
    external_name: Option<IgnoredAny>,
    traffic_distribution: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServicePort {
    #[serde(default)]
    name: String,
    protocol: Option<String>,
    port: u16,
    target_port: Option<IgnoredAny>,
    node_port: Option<u16>,
    app_protocol: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionAffinityConfig {
    #[serde(rename = "clientIP")]
    client_ip: Option<ClientIpConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClientIpConfig {
    timeout_seconds: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceStatus {
    load_balancer: Option<LoadBalancerStatus>,
    conditions: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadBalancerStatus {
    #[serde(default)]
    ingress: Vec<LoadBalancerIngress>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LoadBalancerIngress {
    ip: Option<String>,
    hostname: Option<IgnoredAny>,
    ip_mode: Option<IgnoredAny>,
    ports: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EndpointSlice {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    address_type: String,
    #[serde(default)]
    endpoints: Option<Vec<Endpoint>>,
    #[serde(default)]
    ports: Option<Vec<EndpointPort>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Endpoint {
    addresses: Vec<String>,
    #[serde(default)]
    conditions: Conditions,
    hostname: Option<IgnoredAny>,
    node_name: Option<IgnoredAny>,
    zone: Option<IgnoredAny>,
    hints: Option<IgnoredAny>,
    target_ref: Option<IgnoredAny>,
    deprecated_topology: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Conditions {
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EndpointPort {
    name: Option<String>,
    protocol: Option<String>,
    port: Option<u16>,
    app_protocol: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct List {
    api_version: String,
    kind: String,
    #[serde(default)]
    items: Vec<yaml_serde::Value>,
    metadata: Option<IgnoredAny>,
}

/// Reads one document's value strictly into `T`, naming the failing field.
fn strict<T: serde::de::DeserializeOwned>(v: yaml_serde::Value, doc: &str) -> Result<T, Error> {
    serde_path_to_error::deserialize(v).map_err(|e| Error::Document {
        document: doc.into(),
        field: e.path().to_string(),
        reason: e.inner().to_string(),
    })
}

fn str_field<'a>(v: &'a yaml_serde::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|k| k.as_str())
}

/// Every Service and EndpointSlice of `text`, as Pilus services. `source`
/// names the text in errors.
pub fn parse_documents(text: &str, source: &str) -> Result<Imported, Error> {
    let mut services: Vec<(String, K8sService)> = Vec::new();
    let mut slices: Vec<(String, EndpointSlice)> = Vec::new();
    let mut values = Vec::new();
    for (i, de) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let doc = format!("{source}: document {}", i + 1);
        // On a syntax error the iterator repeats the error: stop at it.
        let v = yaml_serde::Value::deserialize(de).map_err(|source| Error::Syntax {
            document: doc.clone(),
            source,
        })?;
        if v.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        values.push((doc, v));
    }
    while let Some((doc, v)) = values.pop() {
        let kind = str_field(&v, "kind").unwrap_or("").to_string();
        let api = str_field(&v, "apiVersion").unwrap_or("").to_string();
        match (kind.as_str(), api.as_str()) {
            ("Service", "v1") => {
                let s = strict(v, &doc)?;
                services.push((doc, s))
            }
            ("EndpointSlice", "discovery.k8s.io/v1") => {
                let s = strict(v, &doc)?;
                slices.push((doc, s))
            }
            ("List" | "ServiceList" | "EndpointSliceList", _) => {
                let l: List = strict(v, &doc)?;
                for (j, item) in l.items.into_iter().enumerate() {
                    values.push((format!("{doc} items[{j}]"), item));
                }
            }
            _ => {
                return Err(Error::Document {
                    document: doc,
                    field: "kind".into(),
                    reason: format!(
                        "kind {kind:?} apiVersion {api:?}: expected a Service (v1) or an EndpointSlice (discovery.k8s.io/v1), or a List of them"
                    ),
                })
            }
        }
    }
    // Documents were read from the back: put them in file order again.
    services.reverse();
    slices.reverse();
    let mut out = Imported::default();
    for (doc, s) in &services {
        let doc = format!(
            "{doc} (Service {}/{})",
            s.metadata.namespace.as_deref().unwrap_or("default"),
            s.metadata.name.as_deref().unwrap_or("?")
        );
        if let Some(svc) = service(&doc, s, &slices, &mut out.skipped)? {
            out.services.push(svc);
        }
    }
    for (doc, sl) in &slices {
        let ns = sl.metadata.namespace.as_deref().unwrap_or("default");
        let owner = sl.metadata.labels.get(SERVICE_NAME_LABEL);
        let known = owner.is_some_and(|o| {
            services.iter().any(|(_, s)| {
                s.metadata.name.as_deref() == Some(o.as_str())
                    && s.metadata.namespace.as_deref().unwrap_or("default") == ns
            })
        });
        if !known {
            return Err(Error::Document {
                document: doc.clone(),
                field: format!("metadata.labels[{SERVICE_NAME_LABEL:?}]"),
                reason: match owner {
                    Some(o) => format!("names service {ns}/{o}, which is not in this import"),
                    None => "missing: an EndpointSlice must name its service".into(),
                },
            });
        }
    }
    Ok(out)
}

fn doc_err(doc: &str, field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Document {
        document: doc.into(),
        field: field.into(),
        reason: reason.into(),
    }
}

fn is_ipv6(s: &str) -> bool {
    s.parse::<std::net::Ipv6Addr>().is_ok()
}

/// One Kubernetes service as a Pilus service (None: skipped, noted).
fn service(
    doc: &str,
    s: &K8sService,
    slices: &[(String, EndpointSlice)],
    skipped: &mut Vec<String>,
) -> Result<Option<Service>, Error> {
    let name = s
        .metadata
        .name
        .clone()
        .ok_or_else(|| doc_err(doc, "metadata.name", "missing"))?;
    let namespace = s
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let id = format!("{namespace}/{name}");
    let kind = s.spec.kind.as_deref().unwrap_or("ClusterIP");
    match kind {
        "ClusterIP" | "NodePort" | "LoadBalancer" => {}
        "ExternalName" => {
            skipped.push(format!(
                "{id}: an ExternalName service (DNS only) has nothing to balance"
            ));
            return Ok(None);
        }
        other => {
            return Err(doc_err(
                doc,
                "spec.type",
                format!("{other:?} is not a Kubernetes service type"),
            ))
        }
    }
    let mut cluster_ips: Vec<String> = match (&s.spec.cluster_ips, &s.spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.clone(),
        (_, Some(ip)) => vec![ip.clone()],
        _ => Vec::new(),
    };
    if cluster_ips.iter().any(|ip| ip == "None") {
        skipped.push(format!(
            "{id}: a headless service (clusterIP None) has no frontend to serve"
        ));
        return Ok(None);
    }
    let mut take_v4 = |ips: &mut Vec<String>, what: &str| {
        ips.retain(|ip| {
            let v6 = is_ipv6(ip);
            if v6 {
                skipped.push(format!("{id}: {what} {ip}: IPv6 is not supported"));
            }
            !v6
        })
    };
    take_v4(&mut cluster_ips, "cluster IP");
    let mut external = s.spec.external_ips.clone();
    take_v4(&mut external, "external IP");
    let mut lb: Vec<String> = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .map(|l| l.ingress.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    if kind != "LoadBalancer" {
        lb.clear();
    }
    take_v4(&mut lb, "load-balancer IP");
    if s.spec.ports.is_empty() {
        return Err(doc_err(
            doc,
            "spec.ports",
            "a service without ports has nothing to balance",
        ));
    }
    let mut frontends = Vec::new();
    for (i, p) in s.spec.ports.iter().enumerate() {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        if protocol != "TCP" && protocol != "UDP" {
            return Err(doc_err(
                doc,
                format!("spec.ports[{i}].protocol"),
                format!("{protocol:?}: the datapath serves TCP and UDP"),
            ));
        }
        let mut add = |kind: &str, address: &str, port: u16| {
            frontends.push(api::ServiceFrontend {
                kind: kind.into(),
                address: address.into(),
                port,
                protocol: protocol.clone(),
                port_name: p.name.clone(),
            })
        };
        for ip in &cluster_ips {
            add("ClusterIP", ip, p.port);
        }
        for ip in &external {
            add("ExternalIP", ip, p.port);
        }
        for ip in &lb {
            add("LoadBalancer", ip, p.port);
        }
        if kind != "ClusterIP" {
            if let Some(np) = p.node_port {
                add("NodePort", "0.0.0.0", np);
            }
        }
    }
    if frontends.is_empty() {
        skipped.push(format!("{id}: no IPv4 address to serve it on"));
        return Ok(None);
    }
    let mut backends: Vec<api::ServiceBackend> = Vec::new();
    for (sdoc, sl) in slices.iter().filter(|(_, sl)| {
        sl.metadata.labels.get(SERVICE_NAME_LABEL) == Some(&name)
            && sl.metadata.namespace.as_deref().unwrap_or("default") == namespace
    }) {
        match sl.address_type.as_str() {
            "IPv4" => {}
            "IPv6" | "FQDN" => {
                skipped.push(format!(
                    "{id}: EndpointSlice {}: address type {} is not supported",
                    sl.metadata.name.as_deref().unwrap_or("?"),
                    sl.address_type
                ));
                continue;
            }
            other => {
                return Err(doc_err(
                    sdoc,
                    "addressType",
                    format!("{other:?} is not IPv4, IPv6 or FQDN"),
                ))
            }
        }
        for port in sl.ports.iter().flatten() {
            let pname = port.name.clone().unwrap_or_default();
            let proto = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            // The slice's port of a service port: same name and protocol.
            let Some(sp) =
                s.spec.ports.iter().find(|sp| {
                    sp.name == pname && sp.protocol.as_deref().unwrap_or("TCP") == proto
                })
            else {
                continue;
            };
            let Some(number) = port.port else { continue };
            for ep in sl.endpoints.iter().flatten() {
                let c = &ep.conditions;
                let ready = c.ready.unwrap_or(true);
                let terminating = c.terminating.unwrap_or(false);
                let serving = c.serving.unwrap_or(ready);
                let state = if ready && !terminating {
                    "active"
                } else if serving && terminating {
                    "terminating"
                } else {
                    continue; // not ready: Kubernetes routes nothing to it
                };
                for a in &ep.addresses {
                    let b = api::ServiceBackend {
                        address: a.clone(),
                        port: number,
                        weight: 1,
                        state: state.into(),
                        port_name: sp.name.clone(),
                    };
                    if !backends.iter().any(|o| {
                        o.address == b.address && o.port == b.port && o.port_name == b.port_name
                    }) {
                        backends.push(b);
                    }
                }
            }
        }
    }
    let algorithm = s
        .metadata
        .annotations
        .get(ALGORITHM_ANNOTATION)
        .cloned()
        .unwrap_or_else(api::default_algorithm);
    let affinity = match s.spec.session_affinity.as_deref() {
        None | Some("None") => None,
        Some("ClientIP") => Some(
            s.spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_SECONDS),
        ),
        Some(other) => {
            return Err(doc_err(
                doc,
                "spec.sessionAffinity",
                format!("{other:?} is not None or ClientIP"),
            ))
        }
    };
    // Only a service reached from outside (a NodePort, an externalIP, a
    // LoadBalancer address) has a policy for it, as in Kubernetes.
    let external_traffic_policy = match s.spec.external_traffic_policy.as_deref() {
        None | Some("Cluster") => None,
        Some("Local") if frontends.iter().any(|f| f.kind != "ClusterIP") => Some("Local".into()),
        Some("Local") => None,
        Some(other) => {
            return Err(doc_err(
                doc,
                "spec.externalTrafficPolicy",
                format!("{other:?} is not Cluster or Local"),
            ))
        }
    };
    Service::from_api(&api::Service {
        namespace,
        name,
        frontends,
        backends,
        algorithm,
        session_affinity_seconds: affinity,
        external_traffic_policy,
    })
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendState, FrontendType};

    const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  uid: 1f0e
  resourceVersion: "42"
  annotations:
    service.cilium.io/lb-algorithm: maglev
spec:
  type: LoadBalancer
  clusterIP: 198.19.128.10
  clusterIPs: [198.19.128.10, "2001:db8::10"]
  externalIPs: [198.19.129.1]
  selector: {app: web}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  externalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, targetPort: 8080, protocol: TCP, nodePort: 30080}
  - {name: dns, port: 53, targetPort: dns, protocol: UDP}
status:
  loadBalancer:
    ingress: [{ip: 198.19.130.1}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [198.18.1.10]
  conditions: {ready: true}
  nodeName: node-1
- addresses: [198.18.2.10]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [198.18.3.10]
  conditions: {ready: false}
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: dns, port: 5353, protocol: UDP}
"#;

    #[test]
    fn a_service_with_its_slice() {
        let imp = parse_documents(WEB, "web.yaml").unwrap();
        assert_eq!(imp.services.len(), 1);
        let s = &imp.services[0];
        assert_eq!(s.id.to_string(), "shop/web");
        let fronts: Vec<String> = s
            .frontends
            .iter()
            .map(|f| format!("{} {} {}", f.kind.name(), f.key, f.port_name))
            .collect();
        assert_eq!(
            fronts,
            [
                "ClusterIP 198.19.128.10:80/TCP http",
                "ExternalIP 198.19.129.1:80/TCP http",
                "LoadBalancer 198.19.130.1:80/TCP http",
                "NodePort 0.0.0.0:30080/TCP http",
                "ClusterIP 198.19.128.10:53/UDP dns",
                "ExternalIP 198.19.129.1:53/UDP dns",
                "LoadBalancer 198.19.130.1:53/UDP dns",
            ]
        );
        let backs: Vec<String> = s
            .backends
            .iter()
            .map(|b| format!("{} {} {}", b.name(), b.state.name(), b.port_name))
            .collect();
        assert_eq!(
            backs,
            [
                "198.18.1.10:8080 active http",
                "198.18.2.10:8080 terminating http",
                "198.18.1.10:5353 active dns",
                "198.18.2.10:5353 terminating dns",
            ]
        );
        assert_eq!(s.algorithm, crate::Algorithm::Maglev);
        assert_eq!(s.affinity_seconds, Some(600));
        assert_eq!(s.traffic_policy, crate::TrafficPolicy::Local);
        // Without the field: Kubernetes' default, Cluster.
        let cluster =
            parse_documents(&WEB.replace("  externalTrafficPolicy: Local\n", ""), "w").unwrap();
        assert_eq!(
            cluster.services[0].traffic_policy,
            crate::TrafficPolicy::Cluster
        );
        assert!(
            imp.skipped
                .iter()
                .any(|n| n.contains("2001:db8::10: IPv6 is not supported")),
            "{:?}",
            imp.skipped
        );
        assert_eq!(s.frontends[3].kind, FrontendType::NodePort);
        assert_eq!(s.backends[1].state, BackendState::Terminating);
    }

    #[test]
    fn lists_headless_and_external_name() {
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.invalid"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"}, "spec": {"clusterIP": "198.19.128.20", "ports": [{"port": 443}]}}
        ]}"#;
        let imp = parse_documents(text, "list.json").unwrap();
        assert_eq!(imp.services.len(), 1);
        assert_eq!(imp.services[0].id.to_string(), "default/api");
        assert!(imp.services[0].backends.is_empty(), "no slice: no backend");
        assert_eq!(imp.skipped.len(), 2, "{:?}", imp.skipped);
    }

    /// Each is refused whole, naming the document and the field.
    #[test]
    fn unknown_fields_kinds_and_orphans_are_refused() {
        let cases = [
            (
                WEB.replace("ports:\n  - {name: http", "prots:\n  - {name: http"),
                "web.yaml: document 1: spec.prots: unknown field `prots`",
            ),
            (
                WEB.replace("targetPort: 8080,", "targetPort: 8080, colour: red,"),
                "spec.ports[0].colour: unknown field `colour`",
            ),
            (
                WEB.replace("addressType: IPv4", "addressType: IPv4\nextra: 1"),
                "unknown field `extra`",
            ),
            (
                WEB.replace("conditions: {ready: true}", "conditions: {ready: yes-ish}"),
                "endpoints[0].conditions.ready",
            ),
            (
                WEB.replace("kind: EndpointSlice", "kind: Deployment"),
                "kind \"Deployment\"",
            ),
            (
                WEB.replace(
                    "kubernetes.io/service-name: web",
                    "kubernetes.io/service-name: other",
                ),
                "names service shop/other, which is not in this import",
            ),
            (
                WEB.replace("protocol: UDP}\nstatus", "protocol: SCTP}\nstatus"),
                "spec.ports[1].protocol",
            ),
            (
                WEB.replace("port: 80,", "port: 80000,"),
                "spec.ports[0].port",
            ),
            (
                WEB.replace("198.18.1.10]", "198.18.1.999]"),
                "backends[0].address",
            ),
            (
                WEB.replace(
                    "externalTrafficPolicy: Local",
                    "externalTrafficPolicy: Nearest",
                ),
                "spec.externalTrafficPolicy: \"Nearest\" is not Cluster or Local",
            ),
            ("kind: [Service\nspec: {".to_string(), "not YAML or JSON"),
        ];
        for (text, want) in cases {
            let e = parse_documents(&text, "web.yaml")
                .expect_err(want)
                .to_string();
            assert!(e.contains(want), "want {want:?} in: {e}");
        }
    }
}
