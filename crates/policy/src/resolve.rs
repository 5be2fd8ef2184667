//! From rules to what one identity's datapath lookups need: which directions
//! are enforced, and a normalized list of (direction, peer identity,
//! protocol, ports) → allow | deny entries. Normalized means that within one
//! (direction, identity, protocol) allowed and denied port ranges never
//! overlap, so the LPM trie's longest match can never let an allow hide a
//! deny (the datapath relies on this; see bpf/lib/policy.h).

use crate::{
    cidr::Cidr,
    identity::{Allocator, Identity, Kind},
    labels::Labels,
    rule::{Direction, Entity, Peer, PeerRule, Rule},
    selector::Selector,
};
use pilus_abi::{
    consts::{EP_F_EGRESS_ENFORCED, EP_F_INGRESS_ENFORCED},
    PolicyEntry, PolicyKey, PolicyValue,
};
use serde::Serialize;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    sync::Arc,
};

/// TCP, UDP and SCTP: what Cilium's `ANY` means once ports are given.
const ANY_WITH_PORTS: [u8; 3] = [6, 17, 132];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Entry {
    pub direction: Direction,
    /// Peer identity; 0 = any peer.
    pub identity: u32,
    /// None = every protocol (an L3-only entry).
    pub protocol: Option<u8>,
    /// Inclusive; None = every port of `protocol`.
    pub ports: Option<(u16, u16)>,
    pub deny: bool,
    /// The rule it came from (the policy's cookie), reported with verdicts.
    pub cookie: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EndpointPolicy {
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
    pub entries: Vec<Entry>,
}

impl EndpointPolicy {
    pub fn enforced(&self, dir: Direction) -> bool {
        match dir {
            Direction::Ingress => self.ingress_enforced,
            Direction::Egress => self.egress_enforced,
        }
    }

    /// The endpoint map's `flags` bits for enforcement.
    pub fn flags(&self) -> u16 {
        let mut f = 0;
        if self.ingress_enforced {
            f |= EP_F_INGRESS_ENFORCED;
        }
        if self.egress_enforced {
            f |= EP_F_EGRESS_ENFORCED;
        }
        f
    }

    /// The LPM entries of endpoint `ep_id`.
    pub fn map_entries(&self, ep_id: u16) -> HashMap<PolicyKey, PolicyValue> {
        let mut out = HashMap::new();
        for e in &self.entries {
            let pe = PolicyEntry {
                ep_id,
                direction: e.direction.abi(),
                identity: e.identity,
                protocol: e.protocol,
                ports: e.ports,
                deny: e.deny,
                cookie: e.cookie,
            };
            // Normalized ranges are never inverted.
            for (k, v) in pe.to_map_entries().expect("normalized port ranges") {
                out.insert(k, v);
            }
        }
        out
    }
}

/// Which identities a peer stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSet {
    Any,
    Ids(Arc<[u32]>),
}

/// Peer resolution against the current identities, with the selector → ids
/// answers cached (cleared by the owner whenever identities change).
pub struct Peers<'a> {
    pub ids: &'a dyn Allocator,
    pub cache: &'a mut HashMap<Selector, Arc<[u32]>>,
    pub addrs: &'a Addresses,
}

/// Endpoint addresses (local and remote) and their identities: what a
/// Kubernetes ipBlock needs to select the pods inside it.
#[derive(Clone, Debug, Default)]
pub struct Addresses {
    by_ip: BTreeMap<Ipv4Addr, u32>,
    by_identity: HashMap<u32, BTreeSet<Ipv4Addr>>,
}

impl Addresses {
    /// Sets (or with `None` removes) the identity of `ip`; returns the old.
    pub fn set(&mut self, ip: Ipv4Addr, identity: Option<u32>) -> Option<u32> {
        let old = match identity {
            Some(id) => self.by_ip.insert(ip, id),
            None => self.by_ip.remove(&ip),
        };
        if let Some(o) = old {
            if let Some(set) = self.by_identity.get_mut(&o) {
                set.remove(&ip);
                if set.is_empty() {
                    self.by_identity.remove(&o);
                }
            }
        }
        if let Some(id) = identity {
            self.by_identity.entry(id).or_default().insert(ip);
        }
        old
    }

    pub fn identity_of(&self, ip: Ipv4Addr) -> Option<u32> {
        self.by_ip.get(&ip).copied()
    }

    /// The addresses of the endpoints with identity `id`.
    pub fn of_identity(&self, id: u32) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.by_identity.get(&id).into_iter().flatten().copied()
    }
}

fn in_block(ip: &Ipv4Addr, cidr: &Cidr, except: &[Cidr]) -> bool {
    cidr.contains(ip) && !except.iter().any(|e| e.contains(ip))
}

/// Whether identity `id` is one of the peers `peer` stands for.
pub fn peer_matches(peer: &Peer, id: &Identity, addrs: &Addresses) -> bool {
    match peer {
        Peer::Any => true,
        Peer::Selector(s) => s.matches(&id.labels),
        Peer::Cidr { cidr, except } => cidr_matches(cidr, except, id),
        // Kubernetes: an ipBlock also selects the pods whose addresses it
        // covers. Pods are matched through their identity, which pods with
        // equal labels share, so an identity is selected only when every
        // address that has it is inside: a block never opens to an address
        // outside it (fail closed).
        Peer::IpBlock { cidr, except } => {
            cidr_matches(cidr, except, id)
                || (id.kind == Kind::Cluster && {
                    let mut ips = addrs.of_identity(id.id).peekable();
                    ips.peek().is_some() && ips.all(|ip| in_block(&ip, cidr, except))
                })
        }
        Peer::Entity(e) => entity_matches(*e, id),
    }
}

/// A CIDR peer: the CIDR identities inside it (and outside every except).
fn cidr_matches(cidr: &Cidr, except: &[Cidr], id: &Identity) -> bool {
    match (id.kind, id.cidr) {
        (Kind::Cidr, Some(c)) => cidr.contains(&c) && !except.iter().any(|e| e.contains(&c)),
        // An address no prefix covers is the world; only /0 includes it.
        _ => id.id == pilus_abi::consts::IDENTITY_WORLD && cidr.prefix_len() == 0,
    }
}

fn entity_matches(e: Entity, id: &Identity) -> bool {
    use pilus_abi::consts::*;
    match e {
        Entity::All => true,
        Entity::World => id.id == IDENTITY_WORLD || id.kind == Kind::Cidr,
        Entity::Cluster => {
            id.kind == Kind::Cluster || (id.kind == Kind::Reserved && id.id != IDENTITY_WORLD)
        }
        Entity::Host => id.id == IDENTITY_HOST,
        Entity::RemoteNode => id.id == IDENTITY_REMOTE_NODE,
        Entity::Health => id.id == IDENTITY_HEALTH,
        Entity::Init => id.id == IDENTITY_INIT,
        Entity::Unmanaged => id.id == IDENTITY_UNMANAGED,
        Entity::KubeApiserver => id.id == IDENTITY_KUBE_APISERVER,
    }
}

impl Peers<'_> {
    pub fn resolve(&mut self, peer: &Peer) -> PeerSet {
        match peer {
            Peer::Any | Peer::Entity(Entity::All) => PeerSet::Any,
            // The empty selector is Cilium's wildcard: every peer.
            Peer::Selector(s) if s.is_empty() => PeerSet::Any,
            Peer::Selector(s) => {
                if let Some(v) = self.cache.get(s) {
                    return PeerSet::Ids(v.clone());
                }
                let v: Arc<[u32]> = self
                    .ids
                    .iter()
                    .filter(|i| s.matches(&i.labels))
                    .map(|i| i.id)
                    .collect();
                self.cache.insert(s.clone(), v.clone());
                PeerSet::Ids(v)
            }
            _ => PeerSet::Ids(
                self.ids
                    .iter()
                    .filter(|i| peer_matches(peer, i, self.addrs))
                    .map(|i| i.id)
                    .collect(),
            ),
        }
    }
}

/// Allowed and denied ports of one (direction, identity, protocol).
#[derive(Default)]
struct Spans {
    allow: Vec<(u32, u32)>,
    deny: Vec<(u32, u32)>,
    allow_cookie: u32,
    deny_cookie: u32,
}

fn merge(mut v: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    v.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// `a` minus `b`, both merged.
fn subtract(a: &[(u32, u32)], b: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for &(mut lo, hi) in a {
        for &(blo, bhi) in b {
            if bhi < lo || blo > hi {
                continue;
            }
            if blo > lo {
                out.push((lo, blo - 1));
            }
            lo = bhi + 1;
            if lo > hi {
                break;
            }
        }
        if lo <= hi {
            out.push((lo, hi));
        }
    }
    out
}

fn ports_of(p: (u32, u32)) -> Option<(u16, u16)> {
    if p == (0, 65535) {
        None
    } else {
        Some((p.0 as u16, p.1 as u16))
    }
}

/// Collects the entries of every rule and normalizes them.
#[derive(Default)]
struct Builder {
    /// (direction, identity) → L3-only (allow cookie, deny cookie).
    l3: BTreeMap<(Direction, u32), (Option<u32>, Option<u32>)>,
    l4: BTreeMap<(Direction, u32, u8), Spans>,
}

impl Builder {
    fn add(&mut self, dir: Direction, pr: &PeerRule, deny: bool, cookie: u32, peers: &mut Peers) {
        let mut ids: Vec<u32> = Vec::new();
        for p in &pr.peers {
            match peers.resolve(p) {
                PeerSet::Any => ids.push(0),
                PeerSet::Ids(v) => ids.extend_from_slice(&v),
            }
        }
        ids.sort_unstable();
        ids.dedup();
        for &id in &ids {
            if pr.ports.is_empty() {
                let e = self.l3.entry((dir, id)).or_default();
                let slot = if deny { &mut e.1 } else { &mut e.0 };
                slot.get_or_insert(cookie);
                continue;
            }
            for port in &pr.ports {
                let span = port
                    .ports
                    .map_or((0, 65535), |(lo, hi)| (u32::from(lo), u32::from(hi)));
                let protos: &[u8] = match (port.protocol.number(), port.ports) {
                    (Some(n), _) => &[n][..],
                    (None, Some(_)) => &ANY_WITH_PORTS[..],
                    (None, None) => &[],
                };
                if protos.is_empty() {
                    // ANY protocol and every port: the same as L3-only.
                    let e = self.l3.entry((dir, id)).or_default();
                    let slot = if deny { &mut e.1 } else { &mut e.0 };
                    slot.get_or_insert(cookie);
                    continue;
                }
                for &proto in protos {
                    let s = self.l4.entry((dir, id, proto)).or_default();
                    if deny {
                        if s.deny.is_empty() {
                            s.deny_cookie = cookie;
                        }
                        s.deny.push(span);
                    } else {
                        if s.allow.is_empty() {
                            s.allow_cookie = cookie;
                        }
                        s.allow.push(span);
                    }
                }
            }
        }
    }

    fn finish(self) -> Vec<Entry> {
        let mut out = Vec::new();
        for (&(direction, identity), &(allow, deny)) in &self.l3 {
            // A deny beats an allow of the same level.
            if let Some(cookie) = deny {
                out.push(Entry {
                    direction,
                    identity,
                    protocol: None,
                    ports: None,
                    deny: true,
                    cookie,
                });
            } else if let Some(cookie) = allow {
                out.push(Entry {
                    direction,
                    identity,
                    protocol: None,
                    ports: None,
                    deny: false,
                    cookie,
                });
            }
        }
        for ((direction, identity, proto), s) in self.l4 {
            let l3_denied = matches!(self.l3.get(&(direction, identity)), Some((_, Some(_))));
            if l3_denied {
                continue; // every port of every protocol is denied already
            }
            let deny = merge(s.deny);
            let allow = subtract(&merge(s.allow), &deny);
            for (spans, is_deny, cookie) in
                [(deny, true, s.deny_cookie), (allow, false, s.allow_cookie)]
            {
                for p in spans {
                    out.push(Entry {
                        direction,
                        identity,
                        protocol: Some(proto),
                        ports: ports_of(p),
                        deny: is_deny,
                        cookie,
                    });
                }
            }
        }
        out.sort();
        out
    }
}

/// The policy of endpoints with `labels`, from every rule that selects them.
/// `rules` yields each rule with its policy's cookie.
pub fn compute<'r>(
    labels: &Labels,
    rules: impl Iterator<Item = (&'r Rule, u32)>,
    peers: &mut Peers,
) -> EndpointPolicy {
    let mut b = Builder::default();
    let mut has_rules = [false; 2];
    let mut default_deny = [false; 2];
    for (rule, cookie) in rules {
        if !rule.subject.matches(labels) {
            continue;
        }
        for (i, dir) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            if rule.enforces(dir) {
                default_deny[i] = true;
            }
            for pr in rule.allows(dir) {
                has_rules[i] = true;
                b.add(dir, pr, false, cookie, peers);
            }
            for pr in rule.denies(dir) {
                has_rules[i] = true;
                b.add(dir, pr, true, cookie, peers);
            }
        }
    }
    for (i, dir) in [Direction::Ingress, Direction::Egress]
        .into_iter()
        .enumerate()
    {
        // Rules for a direction that does not default to deny (Cilium's
        // enableDefaultDeny: false): enforce it, with everything not denied
        // allowed, so their denies still apply.
        if has_rules[i] && !default_deny[i] {
            b.l3.entry((dir, 0)).or_default().0.get_or_insert(0);
        }
    }
    EndpointPolicy {
        ingress_enforced: has_rules[0] || default_deny[0],
        egress_enforced: has_rules[1] || default_deny[1],
        entries: b.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_arithmetic() {
        assert_eq!(
            merge(vec![(80, 90), (85, 100), (101, 101), (200, 200)]),
            vec![(80, 101), (200, 200)]
        );
        assert_eq!(
            subtract(&[(0, 65535)], &[(80, 80)]),
            vec![(0, 79), (81, 65535)]
        );
        assert_eq!(
            subtract(&[(80, 90)], &[(0, 85), (88, 88)]),
            vec![(86, 87), (89, 90)]
        );
        assert_eq!(subtract(&[(80, 90)], &[(0, 65535)]), vec![]);
        assert_eq!(
            subtract(&[(80, 90), (100, 110)], &[(95, 96)]),
            vec![(80, 90), (100, 110)]
        );
    }
}
