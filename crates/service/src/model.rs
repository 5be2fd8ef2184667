//! A service as Pilus holds it: validated frontends and backends, built
//! from the API's wire form (`pilus_api_types::Service`) and turned back
//! into it. Every check that needs only the service itself is here; those
//! that need the other services and the cluster's ranges are in
//! [`crate::check`].

use crate::Error;
use pilus_api_types as api;
use std::{fmt, net::Ipv4Addr, str::FromStr};

/// Backends of one frontend at most (a Maglev table of M = 16381 entries
/// must give each a share).
pub const MAX_BACKENDS: usize = 4096;
/// Frontends of one service at most.
pub const MAX_FRONTENDS: usize = 256;
/// The largest backend weight.
pub const MAX_WEIGHT: u16 = 100;
/// The longest session affinity Kubernetes allows (a day).
pub const MAX_AFFINITY_SECONDS: u32 = 86_400;

/// `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for ServiceId {
    type Err = Error;

    /// `namespace/name`, or `name` in namespace `default`.
    fn from_str(s: &str) -> Result<ServiceId, Error> {
        let (namespace, name) = s.split_once('/').unwrap_or(("default", s));
        let id = ServiceId {
            namespace: namespace.into(),
            name: name.into(),
        };
        check_names(&id)?;
        Ok(id)
    }
}

/// Kubernetes' frontend kinds. Pods reach ClusterIP, ExternalIP and
/// LoadBalancer addresses through their own programs (a NodePort through
/// the stack); the network reaches NodePort, ExternalIP and LoadBalancer
/// frontends on a node's uplink (with `pilusd --node-port`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendType {
    ClusterIp,
    NodePort,
    ExternalIp,
    LoadBalancer,
}

impl FrontendType {
    pub const ALL: [FrontendType; 4] = [
        FrontendType::ClusterIp,
        FrontendType::NodePort,
        FrontendType::ExternalIp,
        FrontendType::LoadBalancer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FrontendType::ClusterIp => "ClusterIP",
            FrontendType::NodePort => "NodePort",
            FrontendType::ExternalIp => "ExternalIP",
            FrontendType::LoadBalancer => "LoadBalancer",
        }
    }

    /// Reached from outside the cluster (Kubernetes' "external" addresses,
    /// the ones externalTrafficPolicy governs): all but ClusterIP.
    pub fn is_external(self) -> bool {
        self != FrontendType::ClusterIp
    }

    /// By name, case-insensitively (`clusterip`, `ClusterIP`).
    pub fn parse(s: &str) -> Option<FrontendType> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// What identifies a frontend in the datapath: address, port, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrontendKey {
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for FrontendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.address, self.port, self.protocol.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    pub kind: FrontendType,
    pub key: FrontendKey,
    /// Backends of the same port name serve it.
    pub port_name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendState {
    Active,
    Terminating,
    Quarantined,
}

impl BackendState {
    pub fn name(self) -> &'static str {
        match self {
            BackendState::Active => "active",
            BackendState::Terminating => "terminating",
            BackendState::Quarantined => "quarantined",
        }
    }

    pub fn parse(s: &str) -> Option<BackendState> {
        [
            BackendState::Active,
            BackendState::Terminating,
            BackendState::Quarantined,
        ]
        .into_iter()
        .find(|b| b.name().eq_ignore_ascii_case(s))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub address: Ipv4Addr,
    pub port: u16,
    pub weight: u16,
    pub state: BackendState,
    pub port_name: String,
}

impl Backend {
    /// `address:port`: the name Maglev permutes by, and what people read.
    pub fn name(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Random,
    Maglev,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Random => "random",
            Algorithm::Maglev => "maglev",
        }
    }

    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_lowercase().as_str() {
            "random" => Some(Algorithm::Random),
            "maglev" => Some(Algorithm::Maglev),
            _ => None,
        }
    }
}

/// Kubernetes' `externalTrafficPolicy`: which backends serve a NodePort.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrafficPolicy {
    /// Every backend; one on another node is reached from the receiving
    /// node's address (SNAT), so it does not see the client's.
    #[default]
    Cluster,
    /// The receiving node's backends only, which see the client's address;
    /// a node without one drops the connection.
    Local,
}

impl TrafficPolicy {
    pub fn name(self) -> &'static str {
        match self {
            TrafficPolicy::Cluster => "Cluster",
            TrafficPolicy::Local => "Local",
        }
    }

    /// Kubernetes' spelling; `None` (not given) is Cluster.
    pub fn parse(s: Option<&str>) -> Option<TrafficPolicy> {
        match s {
            None | Some("Cluster") => Some(TrafficPolicy::Cluster),
            Some("Local") => Some(TrafficPolicy::Local),
            Some(_) => None,
        }
    }
}

/// A checked service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub id: ServiceId,
    pub frontends: Vec<Frontend>,
    pub backends: Vec<Backend>,
    pub algorithm: Algorithm,
    pub affinity_seconds: Option<u32>,
    /// Applies to the external frontends (NodePort, ExternalIP,
    /// LoadBalancer).
    pub traffic_policy: TrafficPolicy,
}

/// A DNS-1123 label: what Kubernetes requires of namespace and service
/// names (service names also start with a letter: DNS-1035).
fn dns_label(s: &str, letter_first: bool) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && (!letter_first || s.starts_with(|c: char| c.is_ascii_lowercase()))
}

fn check_names(id: &ServiceId) -> Result<(), Error> {
    let bad = |field: &str, reason: String| Error::Invalid {
        service: format!("{:?}", id.to_string()),
        field: field.into(),
        reason,
    };
    if !dns_label(&id.namespace, false) {
        return Err(bad(
            "namespace",
            format!("{:?} is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)", id.namespace),
        ));
    }
    if !dns_label(&id.name, true) {
        return Err(bad(
            "name",
            format!("{:?} is not a Kubernetes service name (a lowercase letter, then lowercase letters, digits and '-', at most 63)", id.name),
        ));
    }
    Ok(())
}

/// A port name: what Kubernetes allows a service port's name (a DNS
/// label), or empty.
fn port_name_ok(s: &str) -> bool {
    s.is_empty() || dns_label(s, false)
}

/// An IPv4 address as the API gives it, with a message for IPv6.
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, String> {
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(format!(
            "{s:?}: IPv6 is not supported (the datapath is IPv4 only)"
        ));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

/// Addresses no frontend or backend may have: unspecified (but a NodePort's
/// 0.0.0.0), loopback, multicast, broadcast, link-local.
fn special(a: Ipv4Addr) -> Option<&'static str> {
    if a.is_loopback() {
        Some("a loopback address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else if a.is_broadcast() {
        Some("the broadcast address")
    } else if a.is_link_local() {
        Some("a link-local address")
    } else if a.is_unspecified() {
        Some("the unspecified address")
    } else {
        None
    }
}

impl Service {
    /// Checks everything the service alone decides; the first problem is
    /// the error, naming the field.
    pub fn from_api(s: &api::Service) -> Result<Service, Error> {
        let id = ServiceId {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
        };
        check_names(&id)?;
        let bad = |field: String, reason: String| Error::Invalid {
            service: id.to_string(),
            field,
            reason,
        };
        if s.frontends.is_empty() {
            return Err(bad(
                "frontends".into(),
                "a service needs at least one frontend".into(),
            ));
        }
        if s.frontends.len() > MAX_FRONTENDS {
            return Err(bad(
                "frontends".into(),
                format!("{} frontends, at most {MAX_FRONTENDS}", s.frontends.len()),
            ));
        }
        let mut frontends: Vec<Frontend> = Vec::new();
        for (i, f) in s.frontends.iter().enumerate() {
            let field = |name: &str| format!("frontends[{i}].{name}");
            let kind = FrontendType::parse(&f.kind).ok_or_else(|| {
                bad(
                    field("type"),
                    format!(
                        "{:?} is not one of ClusterIP, NodePort, ExternalIP, LoadBalancer",
                        f.kind
                    ),
                )
            })?;
            let address = parse_ipv4(&f.address).map_err(|r| bad(field("address"), r))?;
            match (special(address), kind) {
                (Some("the unspecified address"), FrontendType::NodePort) => {}
                (Some(what), _) => {
                    return Err(bad(
                        field("address"),
                        format!(
                            "{address} is {what}; a frontend needs a unicast address{}",
                            if kind == FrontendType::NodePort {
                                ""
                            } else {
                                " (0.0.0.0 is for a NodePort on every node address)"
                            }
                        ),
                    ))
                }
                (None, _) => {}
            }
            if f.port == 0 {
                return Err(bad(field("port"), "port 0 is not a port".into()));
            }
            let protocol = Protocol::parse(&f.protocol).ok_or_else(|| {
                bad(
                    field("protocol"),
                    format!("{:?}: the datapath serves TCP and UDP", f.protocol),
                )
            })?;
            if !port_name_ok(&f.port_name) {
                return Err(bad(
                    field("port_name"),
                    format!(
                        "{:?} is not a port name (lowercase letters, digits and '-', at most 63)",
                        f.port_name
                    ),
                ));
            }
            let key = FrontendKey {
                address,
                port: f.port,
                protocol,
            };
            if let Some(j) = frontends.iter().position(|g| g.key == key) {
                return Err(Error::DuplicateFrontend {
                    frontend: key.to_string(),
                    first: format!("{id} frontends[{j}]"),
                    second: format!("{id} frontends[{i}]"),
                });
            }
            frontends.push(Frontend {
                kind,
                key,
                port_name: f.port_name.clone(),
            });
        }
        let mut backends: Vec<Backend> = Vec::new();
        for (i, b) in s.backends.iter().enumerate() {
            let field = |name: &str| format!("backends[{i}].{name}");
            let address = parse_ipv4(&b.address).map_err(|r| bad(field("address"), r))?;
            if let Some(what) = special(address) {
                return Err(bad(
                    field("address"),
                    format!("{address} is {what}, not a backend"),
                ));
            }
            if b.port == 0 {
                return Err(bad(field("port"), "port 0 is not a port".into()));
            }
            if b.weight > MAX_WEIGHT {
                return Err(bad(
                    field("weight"),
                    format!("{} is over the largest weight, {MAX_WEIGHT}", b.weight),
                ));
            }
            let state = BackendState::parse(&b.state).ok_or_else(|| {
                bad(
                    field("state"),
                    format!(
                        "{:?} is not one of active, terminating, quarantined",
                        b.state
                    ),
                )
            })?;
            if !frontends.iter().any(|f| f.port_name == b.port_name) {
                return Err(bad(
                    field("port_name"),
                    format!(
                        "no frontend has port name {:?}, so no frontend would use this backend",
                        b.port_name
                    ),
                ));
            }
            if let Some(f) = frontends.iter().find(|f| f.key.address == address) {
                return Err(bad(
                    field("address"),
                    format!("{address} is the service's own frontend {}", f.key),
                ));
            }
            let backend = Backend {
                address,
                port: b.port,
                weight: b.weight,
                state,
                port_name: b.port_name.clone(),
            };
            if backends
                .iter()
                .any(|o| o.address == address && o.port == b.port && o.port_name == b.port_name)
            {
                return Err(bad(
                    field("address"),
                    format!("backend {} is listed twice", backend.name()),
                ));
            }
            backends.push(backend);
        }
        for f in &frontends {
            let n = backends
                .iter()
                .filter(|b| b.port_name == f.port_name)
                .count();
            if n > MAX_BACKENDS {
                return Err(bad(
                    "backends".into(),
                    format!(
                        "frontend {} has {n} backends, at most {MAX_BACKENDS}",
                        f.key
                    ),
                ));
            }
        }
        let algorithm = Algorithm::parse(&s.algorithm).ok_or_else(|| {
            bad(
                "algorithm".into(),
                format!("{:?} is not one of random, maglev", s.algorithm),
            )
        })?;
        if let Some(t) = s.session_affinity_seconds {
            if t == 0 || t > MAX_AFFINITY_SECONDS {
                return Err(bad(
                    "session_affinity_seconds".into(),
                    format!("{t}: must be 1 to {MAX_AFFINITY_SECONDS} seconds"),
                ));
            }
        }
        let traffic_policy = TrafficPolicy::parse(s.external_traffic_policy.as_deref())
            .ok_or_else(|| {
                bad(
                    "external_traffic_policy".into(),
                    format!(
                        "{:?} is not one of Cluster, Local",
                        s.external_traffic_policy.as_deref().unwrap_or_default()
                    ),
                )
            })?;
        if traffic_policy == TrafficPolicy::Local && !frontends.iter().any(|f| f.kind.is_external())
        {
            return Err(bad(
                "external_traffic_policy".into(),
                "Local applies to NodePort, ExternalIP and LoadBalancer frontends, and the service has none"
                    .into(),
            ));
        }
        Ok(Service {
            id,
            frontends,
            backends,
            algorithm,
            affinity_seconds: s.session_affinity_seconds,
            traffic_policy,
        })
    }

    pub fn to_api(&self) -> api::Service {
        api::Service {
            namespace: self.id.namespace.clone(),
            name: self.id.name.clone(),
            frontends: self
                .frontends
                .iter()
                .map(|f| api::ServiceFrontend {
                    kind: f.kind.name().into(),
                    address: f.key.address.to_string(),
                    port: f.key.port,
                    protocol: f.key.protocol.name().into(),
                    port_name: f.port_name.clone(),
                })
                .collect(),
            backends: self
                .backends
                .iter()
                .map(|b| api::ServiceBackend {
                    address: b.address.to_string(),
                    port: b.port,
                    weight: b.weight,
                    state: b.state.name().into(),
                    port_name: b.port_name.clone(),
                })
                .collect(),
            algorithm: self.algorithm.name().into(),
            session_affinity_seconds: self.affinity_seconds,
            external_traffic_policy: match self.traffic_policy {
                TrafficPolicy::Cluster => None,
                TrafficPolicy::Local => Some(TrafficPolicy::Local.name().into()),
            },
        }
    }

    /// The backends of frontend `f` (by port name).
    pub fn backends_of<'a>(
        &'a self,
        f: &'a Frontend,
    ) -> impl Iterator<Item = &'a Backend> + Clone + 'a {
        self.backends
            .iter()
            .filter(move |b| b.port_name == f.port_name)
    }
}

/// The backends new flows to a frontend choose from: the active ones with
/// a weight, or when there are none the terminating ones (kube-proxy's
/// fallback, so a rollout's last pods keep serving); never quarantined.
pub fn selectable<'a>(backends: impl Iterator<Item = &'a Backend> + Clone) -> Vec<&'a Backend> {
    let of = |state| {
        backends
            .clone()
            .filter(|b| b.state == state && b.weight > 0)
            .collect::<Vec<_>>()
    };
    let active = of(BackendState::Active);
    if active.is_empty() {
        of(BackendState::Terminating)
    } else {
        active
    }
}

// ----- the CLI's text forms -----

/// A service in the API's form from `namespace/name` (namespace `default`
/// when omitted) and the text forms of its frontends and backends; random,
/// no affinity. Only the text forms are checked here:
/// [`Service::from_api`] checks the rest.
pub fn from_flags<S: AsRef<str>>(
    service: &str,
    frontends: &[S],
    backends: &[S],
) -> Result<api::Service, Error> {
    let (namespace, name) = service.split_once('/').unwrap_or(("default", service));
    Ok(api::Service {
        namespace: namespace.into(),
        name: name.into(),
        frontends: frontends
            .iter()
            .map(|f| parse_frontend_flag(f.as_ref()))
            .collect::<Result<_, _>>()?,
        backends: backends
            .iter()
            .map(|b| parse_backend_flag(b.as_ref()))
            .collect::<Result<_, _>>()?,
        algorithm: api::default_algorithm(),
        session_affinity_seconds: None,
        external_traffic_policy: None,
    })
}

/// `[TYPE:]ADDRESS:PORT[/PROTOCOL][,name=PORTNAME]`, TYPE one of
/// clusterip (default), nodeport, externalip, loadbalancer.
pub fn parse_frontend_flag(s: &str) -> Result<api::ServiceFrontend, Error> {
    let bad = |reason: &str| Error::Flag {
        flag: "--frontend",
        value: s.into(),
        reason: reason.into(),
    };
    let (main, opts) = s.split_once(',').unwrap_or((s, ""));
    let mut port_name = String::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("name", v)) => port_name = v.into(),
            _ => return Err(bad("options are name=PORTNAME")),
        }
    }
    let parts: Vec<&str> = main.split(':').collect();
    let (kind, addr, port) = match parts.as_slice() {
        [a, p] => ("ClusterIP", *a, *p),
        [t, a, p] => (*t, *a, *p),
        _ => return Err(bad("expected [TYPE:]ADDRESS:PORT[/PROTOCOL]")),
    };
    let kind = FrontendType::parse(kind)
        .ok_or_else(|| bad("TYPE is one of clusterip, nodeport, externalip, loadbalancer"))?;
    let (port, protocol) = port.split_once('/').unwrap_or((port, "TCP"));
    let port: u16 = port.parse().map_err(|_| bad("PORT is 1 to 65535"))?;
    Ok(api::ServiceFrontend {
        kind: kind.name().into(),
        address: addr.into(),
        port,
        protocol: protocol.to_ascii_uppercase(),
        port_name,
    })
}

/// `ADDRESS:PORT[,weight=N][,state=STATE][,name=PORTNAME]`.
pub fn parse_backend_flag(s: &str) -> Result<api::ServiceBackend, Error> {
    let bad = |reason: String| Error::Flag {
        flag: "--backend",
        value: s.into(),
        reason,
    };
    let mut parts = s.split(',');
    let main = parts.next().unwrap_or("");
    let (addr, port) = main
        .rsplit_once(':')
        .ok_or_else(|| bad("expected ADDRESS:PORT".into()))?;
    let port: u16 = port.parse().map_err(|_| bad("PORT is 1 to 65535".into()))?;
    let mut b = api::ServiceBackend {
        address: addr.into(),
        port,
        weight: api::default_weight(),
        state: api::default_backend_state(),
        port_name: String::new(),
    };
    for o in parts {
        match o.split_once('=') {
            Some(("weight", v)) => {
                b.weight = v
                    .parse()
                    .map_err(|_| bad(format!("weight {v:?} is not 0 to {MAX_WEIGHT}")))?
            }
            Some(("state", v)) => b.state = v.into(),
            Some(("name", v)) => b.port_name = v.into(),
            _ => {
                return Err(bad(format!(
                "{o:?}: options are weight=N, state=active|terminating|quarantined, name=PORTNAME"
            )))
            }
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> api::Service {
        api::Service {
            namespace: "shop".into(),
            name: "web".into(),
            frontends: vec![parse_frontend_flag("198.19.128.10:80/TCP").unwrap()],
            backends: vec![
                parse_backend_flag("198.18.1.10:8080").unwrap(),
                parse_backend_flag("198.18.2.10:8080,weight=3,state=terminating").unwrap(),
            ],
            algorithm: "maglev".into(),
            session_affinity_seconds: Some(600),
            external_traffic_policy: None,
        }
    }

    #[test]
    fn a_good_service_round_trips() {
        let s = Service::from_api(&svc()).unwrap();
        assert_eq!(s.id.to_string(), "shop/web");
        assert_eq!(s.frontends[0].key.to_string(), "198.19.128.10:80/TCP");
        assert_eq!(s.frontends[0].kind, FrontendType::ClusterIp);
        assert_eq!(s.backends[1].weight, 3);
        assert_eq!(s.backends[1].state, BackendState::Terminating);
        assert_eq!(s.algorithm, Algorithm::Maglev);
        assert_eq!(Service::from_api(&s.to_api()).unwrap(), s);
    }

    /// Each malformed field is refused with a message naming it.
    #[test]
    fn malformed_fields_are_refused_by_name() {
        type Edit = fn(&mut api::Service);
        let cases: Vec<(&str, Edit, &str)> = vec![
            ("bad name", |s| s.name = "Web".into(), "name"),
            ("bad namespace", |s| s.namespace = "a/b".into(), "namespace"),
            ("no frontend", |s| s.frontends.clear(), "frontends"),
            (
                "type",
                |s| s.frontends[0].kind = "Headless".into(),
                "frontends[0].type",
            ),
            (
                "address",
                |s| s.frontends[0].address = "198.19.128".into(),
                "frontends[0].address",
            ),
            (
                "ipv6",
                |s| s.frontends[0].address = "2001:db8::1".into(),
                "IPv6 is not supported",
            ),
            (
                "loopback",
                |s| s.frontends[0].address = "127.0.0.1".into(),
                "loopback",
            ),
            (
                "unspecified clusterip",
                |s| s.frontends[0].address = "0.0.0.0".into(),
                "unspecified",
            ),
            ("port 0", |s| s.frontends[0].port = 0, "frontends[0].port"),
            (
                "sctp",
                |s| s.frontends[0].protocol = "SCTP".into(),
                "TCP and UDP",
            ),
            (
                "port name",
                |s| s.frontends[0].port_name = "HTTP".into(),
                "port_name",
            ),
            (
                "backend address",
                |s| s.backends[0].address = "x".into(),
                "backends[0].address",
            ),
            (
                "backend multicast",
                |s| s.backends[0].address = "224.0.0.1".into(),
                "multicast",
            ),
            (
                "backend port",
                |s| s.backends[0].port = 0,
                "backends[0].port",
            ),
            ("weight", |s| s.backends[0].weight = 101, "weight"),
            (
                "state",
                |s| s.backends[0].state = "ready".into(),
                "backends[0].state",
            ),
            (
                "orphan port name",
                |s| s.backends[0].port_name = "grpc".into(),
                "no frontend has port name",
            ),
            (
                "backend is the frontend",
                |s| s.backends[0].address = "198.19.128.10".into(),
                "own frontend",
            ),
            (
                "backend twice",
                |s| s.backends[1] = s.backends[0].clone(),
                "listed twice",
            ),
            (
                "algorithm",
                |s| s.algorithm = "roundrobin".into(),
                "algorithm",
            ),
            (
                "affinity 0",
                |s| s.session_affinity_seconds = Some(0),
                "session_affinity_seconds",
            ),
            (
                "affinity too long",
                |s| s.session_affinity_seconds = Some(86_401),
                "session_affinity_seconds",
            ),
            (
                "traffic policy spelling",
                |s| s.external_traffic_policy = Some("local".into()),
                "\"local\" is not one of Cluster, Local",
            ),
            (
                "traffic policy without an external frontend",
                |s| s.external_traffic_policy = Some("Local".into()),
                "Local applies to NodePort, ExternalIP and LoadBalancer frontends",
            ),
        ];
        for (what, edit, want) in cases {
            let mut s = svc();
            edit(&mut s);
            let e = Service::from_api(&s).expect_err(what).to_string();
            assert!(e.contains(want), "{what}: {e}");
        }
        // A NodePort on every node address is 0.0.0.0.
        let mut s = svc();
        s.frontends[0] = parse_frontend_flag("nodeport:0.0.0.0:30080").unwrap();
        assert!(Service::from_api(&s).is_ok());
    }

    /// externalTrafficPolicy: Cluster when not given (Kubernetes' default,
    /// and not written back), Local kept through the round trip.
    #[test]
    fn the_external_traffic_policy_defaults_to_cluster_and_round_trips() {
        let mut s = svc();
        s.frontends
            .push(parse_frontend_flag("nodeport:0.0.0.0:30080").unwrap());
        let c = Service::from_api(&s).unwrap();
        assert_eq!(c.traffic_policy, TrafficPolicy::Cluster);
        assert_eq!(c.to_api().external_traffic_policy, None);
        s.external_traffic_policy = Some("Cluster".into());
        assert_eq!(Service::from_api(&s).unwrap(), c);
        s.external_traffic_policy = Some("Local".into());
        let l = Service::from_api(&s).unwrap();
        assert_eq!(l.traffic_policy, TrafficPolicy::Local);
        assert_eq!(l.to_api().external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(Service::from_api(&l.to_api()).unwrap(), l);
    }

    #[test]
    fn a_frontend_twice_in_one_service_is_refused() {
        let mut s = svc();
        s.frontends.push(s.frontends[0].clone());
        s.frontends[1].kind = "ExternalIP".into();
        let e = Service::from_api(&s).unwrap_err().to_string();
        assert!(e.contains("198.19.128.10:80/TCP is defined twice"), "{e}");
        // The same address and port over UDP is another frontend.
        s.frontends[1].protocol = "UDP".into();
        assert!(Service::from_api(&s).is_ok());
    }

    #[test]
    fn flags() {
        let f = parse_frontend_flag("externalip:198.19.129.1:53/udp,name=dns").unwrap();
        assert_eq!(
            (
                f.kind.as_str(),
                f.address.as_str(),
                f.port,
                f.protocol.as_str(),
                f.port_name.as_str()
            ),
            ("ExternalIP", "198.19.129.1", 53, "UDP", "dns")
        );
        for bad in [
            "198.19.128.1",
            "x:1.2.3.4:80",
            "198.19.128.1:http",
            "198.19.128.1:80,foo=1",
        ] {
            assert!(parse_frontend_flag(bad).is_err(), "{bad}");
        }
        let b = parse_backend_flag("198.18.1.5:8080,weight=0,state=quarantined,name=web").unwrap();
        assert_eq!(
            (b.weight, b.state.as_str(), b.port_name.as_str()),
            (0, "quarantined", "web")
        );
        for bad in [
            "198.18.1.5",
            "198.18.1.5:x",
            "198.18.1.5:80,weight=-1",
            "198.18.1.5:80,color=red",
        ] {
            assert!(parse_backend_flag(bad).is_err(), "{bad}");
        }
        assert!("shop/web".parse::<ServiceId>().is_ok());
        assert_eq!("web".parse::<ServiceId>().unwrap().namespace, "default");
        assert!("shop/Web".parse::<ServiceId>().is_err());
    }

    #[test]
    fn terminating_backends_serve_only_when_none_is_active() {
        let s = Service::from_api(&svc()).unwrap();
        let f = &s.frontends[0];
        let names = |v: Vec<&Backend>| v.iter().map(|b| b.name()).collect::<Vec<_>>();
        assert_eq!(names(selectable(s.backends_of(f))), ["198.18.1.10:8080"]);
        let mut t = s.clone();
        t.backends[0].state = BackendState::Quarantined;
        assert_eq!(names(selectable(t.backends_of(f))), ["198.18.2.10:8080"]);
        t.backends[1].state = BackendState::Quarantined;
        assert!(selectable(t.backends_of(f)).is_empty());
    }
}
