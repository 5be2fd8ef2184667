//! `pilus policy trace`: would a packet from one party to another on a port
//! be allowed, and by which rules? Evaluated twice: from the rules (which
//! names them) and from the resolved datapath entries (what the kernel will
//! answer); the two must agree.

use crate::{
    engine::Engine,
    identity::Identity,
    lookup::{self, Verdict},
    resolve::{compute, peer_matches, Addresses, Peers},
    rule::{Direction, PeerRule, PolicyId, Protocol, Rule},
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One side of a trace: an identity, and the endpoint if it is local.
#[derive(Clone, Debug)]
pub struct Party {
    pub identity: Identity,
    pub ep_id: Option<u16>,
    /// How the user named it, for output.
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RuleMatch {
    pub policy: String,
    /// `spec.ingress[0]`.
    pub rule: String,
    pub deny: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DirectionTrace {
    pub direction: Direction,
    /// The endpoint whose policy applies.
    pub endpoint: String,
    /// Policies whose rules select the endpoint in this direction.
    pub selected_by: Vec<String>,
    pub matches: Vec<RuleMatch>,
    /// From the rules.
    pub verdict: Verdict,
    /// From the resolved map entries, as the datapath looks them up.
    pub datapath: Verdict,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trace {
    pub src: String,
    pub dst: String,
    pub protocol: u8,
    pub port: u16,
    /// The source's egress policy (only for a local source).
    pub egress: Option<DirectionTrace>,
    /// The destination's ingress policy (only for a local destination).
    pub ingress: Option<DirectionTrace>,
    pub allowed: bool,
}

fn ports_match(pr: &PeerRule, protocol: u8, port: u16) -> bool {
    pr.ports.is_empty()
        || pr.ports.iter().any(|p| {
            let proto_ok = match (p.protocol, p.ports) {
                (Protocol::Any, None) => true,
                (Protocol::Any, Some(_)) => matches!(protocol, 6 | 17 | 132),
                (x, _) => x.number() == Some(protocol),
            };
            proto_ok && p.ports.is_none_or(|(lo, hi)| (lo..=hi).contains(&port))
        })
}

pub(crate) fn peer_rule_matches(
    pr: &PeerRule,
    peer: &Identity,
    addrs: &Addresses,
    protocol: u8,
    port: u16,
) -> bool {
    pr.peers.iter().any(|p| {
        // The empty selector is the wildcard (see resolve::Peers).
        matches!(p, crate::rule::Peer::Selector(s) if s.is_empty()) || peer_matches(p, peer, addrs)
    }) && ports_match(pr, protocol, port)
}

impl Engine {
    fn trace_direction(
        &self,
        dir: Direction,
        subject: &Party,
        peer: &Identity,
        protocol: u8,
        port: u16,
    ) -> DirectionTrace {
        let labels = &subject.identity.labels;
        let mut selected_by = Vec::new();
        let mut matches = Vec::new();
        let (mut has_rules, mut default_deny) = (false, false);
        let selecting: Vec<(&PolicyId, &Rule, u32)> = self
            .rules()
            .filter(|(_, r, _)| r.subject.matches(labels))
            .collect();
        for (pid, rule, _) in &selecting {
            let in_dir =
                rule.enforces(dir) || !rule.allows(dir).is_empty() || !rule.denies(dir).is_empty();
            if !in_dir {
                continue;
            }
            default_deny |= rule.enforces(dir);
            has_rules |= !rule.allows(dir).is_empty() || !rule.denies(dir).is_empty();
            let name = pid.to_string();
            if !selected_by.contains(&name) {
                selected_by.push(name.clone());
            }
            for (prs, deny) in [(rule.allows(dir), false), (rule.denies(dir), true)] {
                for pr in prs {
                    if peer_rule_matches(pr, peer, self.addresses(), protocol, port) {
                        matches.push(RuleMatch {
                            policy: name.clone(),
                            rule: format!("{} {}", rule.origin, pr.origin).trim().to_string(),
                            deny,
                        });
                    }
                }
            }
        }
        let verdict = if matches.iter().any(|m| m.deny) {
            Verdict::Denied { cookie: 0 }
        } else if !matches.is_empty() || (has_rules && !default_deny) {
            Verdict::Allowed { cookie: 0 }
        } else if has_rules || default_deny {
            Verdict::DeniedByDefault
        } else {
            Verdict::Unenforced
        };
        // What the datapath will answer: the entries this endpoint gets.
        let mut cache = HashMap::new();
        let mut peers = Peers {
            ids: self.identities(),
            cache: &mut cache,
            addrs: self.addresses(),
        };
        let rules: Vec<(&Rule, u32)> = selecting
            .iter()
            .map(|(pid, r, _)| (*r, self.entry_cookie_of(pid, r)))
            .collect();
        let pol = compute(labels, rules.into_iter(), &mut peers);
        let ep = subject.ep_id.unwrap_or(0);
        let datapath = lookup::verdict(
            &pol.map_entries(ep),
            pol.flags(),
            ep,
            dir,
            peer.id,
            protocol,
            port,
        );
        DirectionTrace {
            direction: dir,
            endpoint: subject.name.clone(),
            selected_by,
            matches,
            verdict,
            datapath,
        }
    }

    /// Traces `src` → `dst` on (`protocol`, `port`).
    pub fn trace(&self, src: &Party, dst: &Party, protocol: u8, port: u16) -> Trace {
        let egress = src
            .ep_id
            .map(|_| self.trace_direction(Direction::Egress, src, &dst.identity, protocol, port));
        let ingress = dst
            .ep_id
            .map(|_| self.trace_direction(Direction::Ingress, dst, &src.identity, protocol, port));
        let allowed = [&egress, &ingress]
            .into_iter()
            .flatten()
            .all(|t| t.datapath.allowed());
        Trace {
            src: src.name.clone(),
            dst: dst.name.clone(),
            protocol,
            port,
            egress,
            ingress,
            allowed,
        }
    }
}
