//! From a datapath decision back to its rule: the cookie a policy entry
//! carries (and a verdict or drop event reports) names the policy and the
//! rule within it; the peer and port of the packet name the peer rule and
//! selector that matched. A default deny has no entry: it is explained by
//! the policies that select the endpoint in that direction.
//!
//! A cookie is `policy cookie << RULE_BITS | rule index`. Policy cookies are
//! the engine's own numbers (kept across restarts); an entry that several
//! rules would write carries the first of them (see `resolve::Builder`).

use crate::{
    engine::Engine,
    identity::Identity,
    rule::{Direction, PolicyId, Rule},
    trace::peer_rule_matches,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Bits of an entry cookie that number the rule within its policy.
pub const RULE_BITS: u32 = 12;
/// The largest policy cookie an entry cookie holds.
pub const MAX_POLICY_COOKIE: u32 = (1 << (32 - RULE_BITS)) - 1;
const RULE_MASK: u32 = (1 << RULE_BITS) - 1;

/// The cookie of the entries rule `rule_index` of the policy with cookie
/// `policy` writes. A document with more rules than the field holds shares
/// the last number among the rest (explained as the policy only).
pub fn entry_cookie(policy: u32, rule_index: usize) -> u32 {
    (policy << RULE_BITS) | (rule_index.min(RULE_MASK as usize) as u32)
}

/// (policy cookie, rule index) of an entry cookie.
pub fn split_cookie(cookie: u32) -> (u32, usize) {
    (cookie >> RULE_BITS, (cookie & RULE_MASK) as usize)
}

/// A decision of the datapath to explain: endpoint `ep_id`'s policy in
/// `direction` about `peer` on (`protocol`, `port`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub ep_id: u16,
    pub direction: Direction,
    pub peer: u32,
    pub protocol: u8,
    pub port: u16,
    /// The deciding entry's cookie (0: none, a default deny).
    pub cookie: u32,
    pub denied: bool,
}

/// What decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Explanation {
    /// A rule's entry: its policy, the rule (`spec`, `specs[1]`), its
    /// endpoint selector, and the peer rule (`spec.ingressDeny[0]`) and
    /// peers that match this peer (absent when the peer's identity is no
    /// longer known, or the rule changed since).
    Rule {
        policy: PolicyId,
        rule: String,
        subject: String,
        peer_rule: Option<String>,
        peers: Option<String>,
        deny: bool,
    },
    /// Nothing allows the peer, and these policies select the endpoint in
    /// this direction.
    DefaultDeny { selected_by: Vec<PolicyId> },
    /// Allowed without an entry of a rule: the direction's rules do not
    /// default to deny (`enableDefaultDeny: false`), so what they do not
    /// deny is allowed.
    NoDefaultDeny,
    /// The cookie names no policy this agent has (deleted since).
    Unknown { cookie: u32 },
}

impl Explanation {
    /// The policy that decided, or the first that selects the endpoint.
    pub fn policy(&self) -> Option<&PolicyId> {
        match self {
            Explanation::Rule { policy, .. } => Some(policy),
            Explanation::DefaultDeny { selected_by } => selected_by.first(),
            _ => None,
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Explanation::Rule {
                policy,
                rule,
                subject,
                peer_rule,
                peers,
                deny,
            } => {
                let what = if *deny { "denied by" } else { "allowed by" };
                write!(f, "{what} {policy}")?;
                match (peer_rule, peers) {
                    (Some(pr), Some(p)) => write!(f, " rule {pr} ({p})"),
                    _ => write!(f, " rule {rule} (endpoints {subject})"),
                }
            }
            Explanation::DefaultDeny { selected_by } if selected_by.is_empty() => {
                f.write_str("default deny: no rule allows this peer")
            }
            Explanation::DefaultDeny { selected_by } => {
                let names: Vec<String> = selected_by.iter().map(|p| p.to_string()).collect();
                write!(
                    f,
                    "default deny: endpoint selected by policy {}; no rule allows this peer",
                    names.join(", ")
                )
            }
            Explanation::NoDefaultDeny => {
                f.write_str("allowed: the direction's rules do not default to deny")
            }
            Explanation::Unknown { cookie } => {
                write!(f, "policy entry {cookie:#x} of a policy no longer known")
            }
        }
    }
}

impl Engine {
    /// The rule (and its policy) that entry `cookie` came from.
    pub fn rule_of_cookie(&self, cookie: u32) -> Option<(&PolicyId, usize, &Rule)> {
        let (policy, index) = split_cookie(cookie);
        let (pol, _) = self.policies().find(|(_, c)| *c == policy)?;
        let rule = pol.rules.get(index)?;
        Some((&pol.id, index, rule))
    }

    /// The policies with a rule that selects endpoint `ep_id` in `dir`.
    pub fn selecting(&self, ep_id: u16, dir: Direction) -> Vec<PolicyId> {
        let Some(labels) = self
            .endpoint(ep_id)
            .and_then(|e| self.identities().get(e.identity))
            .map(|i| i.labels.clone())
        else {
            return Vec::new();
        };
        let mut out: Vec<PolicyId> = Vec::new();
        for (pid, rule, _) in self.rules() {
            let in_dir =
                rule.enforces(dir) || !rule.allows(dir).is_empty() || !rule.denies(dir).is_empty();
            if in_dir && rule.subject.matches(&labels) && !out.contains(pid) {
                out.push(pid.clone());
            }
        }
        out
    }

    /// Explains a datapath decision.
    pub fn explain(&self, d: &Decision) -> Explanation {
        if d.cookie == 0 {
            return if d.denied {
                Explanation::DefaultDeny {
                    selected_by: self.selecting(d.ep_id, d.direction),
                }
            } else {
                Explanation::NoDefaultDeny
            };
        }
        let Some((policy, _, rule)) = self.rule_of_cookie(d.cookie) else {
            return Explanation::Unknown { cookie: d.cookie };
        };
        let peer: Option<&Identity> = self.identities().get(d.peer);
        let rules = if d.denied {
            rule.denies(d.direction)
        } else {
            rule.allows(d.direction)
        };
        let matched = peer.and_then(|peer| {
            rules
                .iter()
                .find(|pr| peer_rule_matches(pr, peer, self.addresses(), d.protocol, d.port))
        });
        Explanation::Rule {
            policy: policy.clone(),
            rule: rule.origin.clone(),
            subject: rule.subject.to_string(),
            peer_rule: matched.map(|pr| pr.origin.clone()),
            peers: matched.map(|pr| {
                let peers: Vec<String> = pr.peers.iter().map(|p| p.to_string()).collect();
                let ports: Vec<String> = pr.ports.iter().map(|p| p.to_string()).collect();
                if ports.is_empty() {
                    peers.join(", ")
                } else {
                    format!("{} on {}", peers.join(", "), ports.join(", "))
                }
            }),
            deny: d.denied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_split_into_policy_and_rule() {
        assert_eq!(split_cookie(entry_cookie(7, 3)), (7, 3));
        assert_eq!(
            split_cookie(entry_cookie(MAX_POLICY_COOKIE, 0)),
            (MAX_POLICY_COOKIE, 0)
        );
        // Past the field, the rest share the last number.
        assert_eq!(
            split_cookie(entry_cookie(1, 100_000)),
            (1, RULE_MASK as usize)
        );
        assert_ne!(
            entry_cookie(1, 0),
            0,
            "a rule's cookie is never 0 (no rule)"
        );
    }
}
