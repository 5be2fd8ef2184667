//! The one internal form every policy document is parsed into. CiliumNetworkPolicy,
//! CiliumClusterwideNetworkPolicy, the plain rules array and Kubernetes
//! NetworkPolicy differ only in how they are read (`cnp`, `knp`); resolution
//! and tracing see only these types.

use crate::{cidr::Cidr, selector::Selector};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The datapath's encoding (`DIR_INGRESS` / `DIR_EGRESS` in abi.h).
    pub fn abi(self) -> u8 {
        match self {
            Direction::Ingress => pilus_abi::consts::DIR_INGRESS,
            Direction::Egress => pilus_abi::consts::DIR_EGRESS,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// Protocol of a port rule. `Any` with ports means TCP, UDP and SCTP (as in
/// Cilium); `Any` without ports means every protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Any,
}

impl Protocol {
    /// The IP protocol number, `None` for `Any`.
    pub fn number(self) -> Option<u8> {
        match self {
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Sctp => Some(132),
            Protocol::Icmp => Some(1),
            Protocol::Any => None,
        }
    }

    pub fn from_number(n: u8) -> Option<Protocol> {
        [Protocol::Tcp, Protocol::Udp, Protocol::Sctp, Protocol::Icmp]
            .into_iter()
            .find(|p| p.number() == Some(n))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmp => "ICMP",
            Protocol::Any => "ANY",
        })
    }
}

/// A protocol and an inclusive port range (for ICMP: the message type).
/// `ports: None` is every port of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRule {
    pub protocol: Protocol,
    pub ports: Option<(u16, u16)>,
}

impl fmt::Display for PortRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ports {
            None => write!(f, "*/{}", self.protocol),
            Some((lo, hi)) if lo == hi => write!(f, "{lo}/{}", self.protocol),
            Some((lo, hi)) => write!(f, "{lo}-{hi}/{}", self.protocol),
        }
    }
}

/// Cilium's entities: named groups of identities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Entity {
    /// Everything outside the cluster: reserved:world and CIDR identities.
    World,
    /// Every endpoint of the cluster plus host, remote-node, health, init,
    /// unmanaged and kube-apiserver.
    Cluster,
    Host,
    RemoteNode,
    Health,
    Init,
    Unmanaged,
    KubeApiserver,
    /// Every peer at all.
    All,
}

impl Entity {
    pub const NAMES: &'static [(&'static str, Entity)] = &[
        ("world", Entity::World),
        ("cluster", Entity::Cluster),
        ("host", Entity::Host),
        ("remote-node", Entity::RemoteNode),
        ("health", Entity::Health),
        ("init", Entity::Init),
        ("unmanaged", Entity::Unmanaged),
        ("kube-apiserver", Entity::KubeApiserver),
        ("all", Entity::All),
    ];

    pub fn parse(s: &str) -> Option<Entity> {
        Entity::NAMES.iter().find(|(n, _)| *n == s).map(|(_, e)| *e)
    }

    pub fn name(self) -> &'static str {
        Entity::NAMES
            .iter()
            .find(|(_, e)| *e == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// Who is on the other side of a rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Peer {
    /// Any peer at all (a rule with ports but no peer list, or a Kubernetes
    /// rule with no `from`/`to`).
    Any,
    /// Identities whose labels match (endpoints and reserved identities).
    Selector(Selector),
    /// Addresses outside the cluster within `cidr` and outside every
    /// `except` prefix.
    Cidr {
        cidr: Cidr,
        except: Vec<Cidr>,
    },
    /// A Kubernetes NetworkPolicy `ipBlock`: like [`Peer::Cidr`], and also
    /// the pods whose addresses fall inside (as the upstream e2e suite
    /// expects), matched through their identities.
    IpBlock {
        cidr: Cidr,
        except: Vec<Cidr>,
    },
    Entity(Entity),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Any => f.write_str("any peer"),
            Peer::Selector(s) => write!(f, "endpoints {s}"),
            Peer::Cidr { cidr, except } | Peer::IpBlock { cidr, except } => {
                let what = if matches!(self, Peer::Cidr { .. }) {
                    "cidr"
                } else {
                    "ipBlock"
                };
                write!(f, "{what} {cidr}")?;
                if !except.is_empty() {
                    let e: Vec<String> = except.iter().map(|c| c.to_string()).collect();
                    write!(f, " except {}", e.join(","))?;
                }
                Ok(())
            }
            Peer::Entity(e) => write!(f, "entity {}", e.name()),
        }
    }
}

/// One element of `ingress`/`egress`/`ingressDeny`/`egressDeny`: the peers
/// (any of them) on the ports (any of them; empty = every port and protocol).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRule {
    pub peers: Vec<Peer>,
    pub ports: Vec<PortRule>,
    /// Where it came from, for traces: `spec.ingress[0]`.
    pub origin: String,
}

/// Who a rule is about, and what it allows and denies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// The endpoints the rule applies to.
    pub subject: Selector,
    /// Whether the rule puts its subjects into default deny in each
    /// direction (it has rules for that direction, or Kubernetes
    /// `policyTypes` says so).
    pub enforce_ingress: bool,
    pub enforce_egress: bool,
    pub ingress: Vec<PeerRule>,
    pub egress: Vec<PeerRule>,
    pub ingress_deny: Vec<PeerRule>,
    pub egress_deny: Vec<PeerRule>,
    /// `spec`, `specs[1]`, `[0]` (rules array), `spec` (NetworkPolicy).
    pub origin: String,
}

impl Rule {
    pub fn enforces(&self, dir: Direction) -> bool {
        match dir {
            Direction::Ingress => self.enforce_ingress,
            Direction::Egress => self.enforce_egress,
        }
    }

    pub fn allows(&self, dir: Direction) -> &[PeerRule] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub fn denies(&self, dir: Direction) -> &[PeerRule] {
        match dir {
            Direction::Ingress => &self.ingress_deny,
            Direction::Egress => &self.egress_deny,
        }
    }

    /// Every CIDR a peer of this rule names (including `except` prefixes):
    /// each needs an identity and an ipcache entry.
    pub fn cidrs(&self) -> impl Iterator<Item = Cidr> + '_ {
        [
            &self.ingress,
            &self.egress,
            &self.ingress_deny,
            &self.egress_deny,
        ]
        .into_iter()
        .flatten()
        .flat_map(|pr| pr.peers.iter())
        .flat_map(|p| match p {
            Peer::Cidr { cidr, except } | Peer::IpBlock { cidr, except } => std::iter::once(*cidr)
                .chain(except.iter().copied())
                .collect(),
            _ => Vec::new(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyKind {
    CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy,
    /// `cilium policy import` JSON: a bare array of rules.
    Rules,
    NetworkPolicy,
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyKind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
            PolicyKind::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
            PolicyKind::Rules => "Rules",
            PolicyKind::NetworkPolicy => "NetworkPolicy",
        })
    }
}

/// What a policy is known by: importing one with the same id replaces it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyId {
    pub kind: PolicyKind,
    /// None for clusterwide policies and rules arrays.
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One imported document: its id, its rules, and its text as given (what
/// `pilus policy get` shows and the state store keeps).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: PolicyId,
    pub rules: Vec<Rule>,
    pub source: serde_json::Value,
}
