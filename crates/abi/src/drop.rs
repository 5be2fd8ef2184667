//! Drop reasons by code: the names `pilus monitor` and metrics print.

use crate::consts::*;

/// A drop code with its name and what it means to an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropReason {
    pub code: u8,
    pub name: &'static str,
    pub description: &'static str,
}

/// Every drop code of abi.h. Codes are permanent: a retired one stays here.
pub const DROP_REASONS: &[DropReason] = &[
    r(
        DROP_UNKNOWN_L3,
        "DROP_UNKNOWN_L3",
        "Unknown L3 protocol (ethertype)",
    ),
    r(
        DROP_INVALID_ARP,
        "DROP_INVALID_ARP",
        "Invalid ARP packet (truncated or not Ethernet/IPv4)",
    ),
    r(
        DROP_INVALID_IPV4,
        "DROP_INVALID_IPV4",
        "Invalid IPv4 header (truncated, IHL < 5 or bad length)",
    ),
    r(
        DROP_INVALID_L4,
        "DROP_INVALID_L4",
        "Truncated or invalid TCP/UDP/ICMP header",
    ),
    r(
        DROP_INVALID_SIP,
        "DROP_INVALID_SIP",
        "Source IP is not the endpoint's (spoofing)",
    ),
    r(
        DROP_POLICY,
        "DROP_POLICY",
        "Policy denied: no rule allows this flow",
    ),
    r(
        DROP_POLICY_DENY,
        "DROP_POLICY_DENY",
        "Policy denied by a deny rule",
    ),
    r(
        DROP_NO_ENDPOINT,
        "DROP_NO_ENDPOINT",
        "Interface has no endpoint",
    ),
    r(
        DROP_IPV6_UNSUPPORTED,
        "DROP_IPV6_UNSUPPORTED",
        "IPv6 is not enabled in this datapath",
    ),
    r(
        DROP_FRAG_NOT_FOUND,
        "DROP_FRAG_NOT_FOUND",
        "Fragment whose first fragment was not seen",
    ),
    r(
        DROP_TTL_EXCEEDED,
        "DROP_TTL_EXCEEDED",
        "TTL exceeded on local delivery",
    ),
    r(DROP_CSUM_L3, "DROP_CSUM_L3", "IPv4 checksum update failed"),
    r(
        DROP_CT_CREATE_FAILED,
        "DROP_CT_CREATE_FAILED",
        "Conntrack entry could not be created",
    ),
    r(
        DROP_WRITE_ERROR,
        "DROP_WRITE_ERROR",
        "Packet rewrite failed",
    ),
    r(
        DROP_FRAG_TRACK_FAILED,
        "DROP_FRAG_TRACK_FAILED",
        "First fragment could not be tracked",
    ),
    r(
        DROP_INVALID_ICMP_INNER,
        "DROP_INVALID_ICMP_INNER",
        "ICMP error with a truncated inner packet",
    ),
    r(
        DROP_MISSED_TAIL_CALL,
        "DROP_MISSED_TAIL_CALL",
        "Missed tail call (program array slot empty)",
    ),
    r(
        DROP_INVALID_ETH,
        "DROP_INVALID_ETH",
        "Frame shorter than an Ethernet header",
    ),
    r(
        DROP_FRAG_NEEDED,
        "DROP_FRAG_NEEDED",
        "Packet larger than the tunnel's MTU (it would not fit encapsulated)",
    ),
    r(
        DROP_NO_TUNNEL_KEY,
        "DROP_NO_TUNNEL_KEY",
        "Frame from the overlay device without tunnel metadata",
    ),
    r(
        DROP_TUNNEL_KEY,
        "DROP_TUNNEL_KEY",
        "The tunnel key could not be set",
    ),
    r(
        DROP_NOT_LOCAL,
        "DROP_NOT_LOCAL",
        "From the overlay for an address no local endpoint has",
    ),
    r(
        DROP_NO_SERVICE_BACKEND,
        "DROP_NO_SERVICE_BACKEND",
        "Service has no backend to choose",
    ),
    r(
        DROP_CSUM_L4,
        "DROP_CSUM_L4",
        "L4 checksum could not be updated (service NAT)",
    ),
    r(
        DROP_PREFILTER,
        "DROP_PREFILTER",
        "Source denied by the XDP prefilter",
    ),
    r(
        DROP_NAT_NO_PORT,
        "DROP_NAT_NO_PORT",
        "Masquerade: no free port in the NAT range for this peer",
    ),
    r(
        DROP_NAT_CREATE_FAILED,
        "DROP_NAT_CREATE_FAILED",
        "Masquerade: NAT entry could not be created (table full)",
    ),
    r(
        DROP_NO_LOCAL_BACKEND,
        "DROP_NO_LOCAL_BACKEND",
        "NodePort: no backend on this node",
    ),
    r(
        DROP_NO_BACKEND_NODE,
        "DROP_NO_BACKEND_NODE",
        "NodePort: the backend's node is not known (no tunnel to it)",
    ),
];

const fn r(code: u8, name: &'static str, description: &'static str) -> DropReason {
    DropReason {
        code,
        name,
        description,
    }
}

impl DropReason {
    /// The reason for `code`, if it is one.
    pub fn from_code(code: u8) -> Option<&'static DropReason> {
        DROP_REASONS.iter().find(|r| r.code == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_constant_has_a_named_reason() {
        let drops: Vec<_> = ALL
            .iter()
            .filter(|(n, _)| n.starts_with("DROP_") && *n != "DROP_REASON_MAX")
            .collect();
        assert_eq!(drops.len(), DROP_REASONS.len());
        for (name, code) in drops {
            let r = DropReason::from_code(*code as u8)
                .unwrap_or_else(|| panic!("{name} has no reason"));
            assert_eq!(r.name, *name);
        }
    }
}
