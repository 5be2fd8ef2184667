//! The datapath's policy lookup (bpf/lib/policy.h) re-done over a copy of
//! the LPM entries: used by `pilus policy trace` to say what the kernel will
//! answer, and by tests to check resolved entries the way the kernel reads
//! them — longest prefix first, a deny at any level winning.

use pilus_abi::{
    consts::{
        EP_F_EGRESS_ENFORCED, EP_F_INGRESS_ENFORCED, POLICY_F_DENY, POLICY_PREFIX_FULL,
        POLICY_PREFIX_L3, POLICY_PREFIX_PROTO,
    },
    Be16, PolicyKey, PolicyValue,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use crate::rule::Direction;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    /// No rule selects the endpoint in this direction.
    Unenforced,
    Allowed {
        cookie: u32,
    },
    /// Selected, and nothing allows it (DROP_POLICY).
    DeniedByDefault,
    /// A deny rule matched (DROP_POLICY_DENY).
    Denied {
        cookie: u32,
    },
}

impl Verdict {
    pub fn allowed(self) -> bool {
        matches!(self, Verdict::Unenforced | Verdict::Allowed { .. })
    }
}

/// The longest entry covering `key` (a full-length key), as the LPM trie
/// returns it for a lookup with prefix length `max`.
fn lpm(m: &HashMap<PolicyKey, PolicyValue>, key: &PolicyKey, max: u32) -> Option<PolicyValue> {
    (POLICY_PREFIX_L3..=max).rev().find_map(|p| {
        let mut k = PolicyKey {
            prefix_len: p,
            ..*key
        };
        if p < POLICY_PREFIX_PROTO {
            k.protocol = 0;
        }
        let port_bits = p.saturating_sub(POLICY_PREFIX_PROTO);
        let port = key.dport.get();
        let masked = if port_bits == 0 {
            0
        } else {
            port & (u16::MAX << (16 - port_bits))
        };
        k.dport = Be16::new(masked);
        m.get(&k).copied()
    })
}

enum Check {
    NoMatch,
    Allow(u32),
    Deny(u32),
}

fn check_identity(m: &HashMap<PolicyKey, PolicyValue>, key: &PolicyKey) -> Check {
    let Some(v) = lpm(m, key, POLICY_PREFIX_FULL) else {
        return Check::NoMatch;
    };
    if v.flags & POLICY_F_DENY != 0 {
        return Check::Deny(v.cookie);
    }
    if v.l4_prefix_len != 0 {
        if let Some(l3) = lpm(m, key, POLICY_PREFIX_L3) {
            if l3.flags & POLICY_F_DENY != 0 {
                return Check::Deny(l3.cookie);
            }
        }
    }
    Check::Allow(v.cookie)
}

/// What the datapath answers for endpoint `ep_id` (with endpoint flags
/// `flags`) and a packet from/to `peer` on (`protocol`, `port`).
pub fn verdict(
    m: &HashMap<PolicyKey, PolicyValue>,
    flags: u16,
    ep_id: u16,
    dir: Direction,
    peer: u32,
    protocol: u8,
    port: u16,
) -> Verdict {
    let bit = match dir {
        Direction::Ingress => EP_F_INGRESS_ENFORCED,
        Direction::Egress => EP_F_EGRESS_ENFORCED,
    };
    if flags & bit == 0 {
        return Verdict::Unenforced;
    }
    let mut key = PolicyKey {
        prefix_len: POLICY_PREFIX_FULL,
        sec_identity: peer,
        ep_id,
        direction: dir.abi(),
        protocol,
        dport: Be16::new(port),
        _pad: 0,
    };
    let by_id = check_identity(m, &key);
    if let Check::Deny(c) = by_id {
        return Verdict::Denied { cookie: c };
    }
    key.sec_identity = 0;
    let by_any = check_identity(m, &key);
    match (by_id, by_any) {
        (_, Check::Deny(c)) => Verdict::Denied { cookie: c },
        (Check::Allow(c), _) | (_, Check::Allow(c)) => Verdict::Allowed { cookie: c },
        _ => Verdict::DeniedByDefault,
    }
}
