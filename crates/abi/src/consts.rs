//! Every integer `#define` of `bpf/lib/abi/abi.h`, with the same name and value.
//! The test at the bottom reads the header and fails on any difference.

macro_rules! consts {
    ($($name:ident: $t:ty = $v:expr;)*) => {
        $(pub const $name: $t = $v;)*
        /// Name and value of every constant, for the cross-check with abi.h.
        pub const ALL: &[(&str, u64)] = &[$((stringify!($name), $name as u64)),*];
    };
}

consts! {
    IDENTITY_UNKNOWN: u32 = 0;
    IDENTITY_HOST: u32 = 1;
    IDENTITY_WORLD: u32 = 2;
    IDENTITY_UNMANAGED: u32 = 3;
    IDENTITY_HEALTH: u32 = 4;
    IDENTITY_INIT: u32 = 5;
    IDENTITY_REMOTE_NODE: u32 = 6;
    IDENTITY_KUBE_APISERVER: u32 = 7;
    IDENTITY_CLUSTER_MIN: u32 = 256;
    IDENTITY_LOCAL_MIN: u32 = 1 << 24;

    DIR_INGRESS: u8 = 0;
    DIR_EGRESS: u8 = 1;
    DIR_MAX: u8 = 2;

    DROP_UNKNOWN_L3: u8 = 130;
    DROP_INVALID_ARP: u8 = 131;
    DROP_INVALID_IPV4: u8 = 132;
    DROP_INVALID_L4: u8 = 133;
    DROP_INVALID_SIP: u8 = 134;
    DROP_POLICY: u8 = 135;
    DROP_POLICY_DENY: u8 = 136;
    DROP_NO_ENDPOINT: u8 = 137;
    DROP_IPV6_UNSUPPORTED: u8 = 138;
    DROP_FRAG_NOT_FOUND: u8 = 139;
    DROP_TTL_EXCEEDED: u8 = 140;
    DROP_CSUM_L3: u8 = 141;
    DROP_CT_CREATE_FAILED: u8 = 142;
    DROP_WRITE_ERROR: u8 = 143;
    DROP_FRAG_TRACK_FAILED: u8 = 144;
    DROP_INVALID_ICMP_INNER: u8 = 145;
    DROP_MISSED_TAIL_CALL: u8 = 146;
    DROP_INVALID_ETH: u8 = 147;
    DROP_FRAG_NEEDED: u8 = 148;
    DROP_NO_TUNNEL_KEY: u8 = 149;
    DROP_TUNNEL_KEY: u8 = 150;
    DROP_NOT_LOCAL: u8 = 151;
    DROP_NO_SERVICE_BACKEND: u8 = 152;
    DROP_CSUM_L4: u8 = 153;
    DROP_PREFILTER: u8 = 154;
    DROP_NAT_NO_PORT: u8 = 160;
    DROP_NAT_CREATE_FAILED: u8 = 161;
    DROP_NO_LOCAL_BACKEND: u8 = 162;
    DROP_NO_BACKEND_NODE: u8 = 163;
    DROP_REASON_MAX: u32 = 256;
    METRIC_FORWARDED: u8 = 0;

    PREFILTER_MAX: u32 = 16384;

    EP_F_INGRESS_ENFORCED: u16 = 1 << 0;
    EP_F_EGRESS_ENFORCED: u16 = 1 << 1;

    POLICY_PREFIX_L3: u32 = 56;
    POLICY_PREFIX_PROTO: u32 = 64;
    POLICY_PREFIX_FULL: u32 = 80;
    POLICY_F_DENY: u8 = 1 << 0;

    CT_F_TX_CLOSING: u16 = 1 << 0;
    CT_F_RX_CLOSING: u16 = 1 << 1;
    CT_F_SEEN_REPLY: u16 = 1 << 2;
    CT_F_SEEN_NON_SYN: u16 = 1 << 3;
    CT_SCOPE_FLOW: u8 = 0;
    CT_SCOPE_SERVICE: u8 = 1;
    CT_NEW: u8 = 0;
    CT_ESTABLISHED: u8 = 1;
    CT_REPLY: u8 = 2;
    CT_RELATED: u8 = 3;
    CT_UNKNOWN: u8 = 4;

    NAT_DIR_EGRESS: u8 = 0;
    NAT_DIR_INGRESS: u8 = 1;
    NAT_F_SEEN_NON_SYN: u16 = 1 << 0;
    NAT_F_CLOSING: u16 = 1 << 1;

    LB_TYPE_CLUSTER_IP: u8 = 1;
    LB_TYPE_NODE_PORT: u8 = 2;
    LB_TYPE_EXTERNAL_IP: u8 = 3;
    LB_TYPE_LOAD_BALANCER: u8 = 4;
    LB_ALG_RANDOM: u8 = 1;
    LB_ALG_MAGLEV: u8 = 2;
    LB_F_AFFINITY: u8 = 1 << 0;
    LB_F_ETP_LOCAL: u8 = 1 << 1;
    LB_BACKEND_ACTIVE: u8 = 0;
    LB_BACKEND_TERMINATING: u8 = 1;
    LB_BACKEND_QUARANTINED: u8 = 2;
    LB_MAGLEV_M: u32 = 16381;

    METRICS_MAX: u32 = DROP_REASON_MAX * DIR_MAX as u32;

    EVENT_DROP: u8 = 1;
    EVENT_TRACE: u8 = 2;
    EVENT_POLICY_VERDICT: u8 = 3;
    EVENT_DEBUG: u8 = 4;
    EVENT_CAPTURE: u8 = 5;
    OBS_FROM_ENDPOINT: u8 = 0;
    OBS_TO_ENDPOINT: u8 = 1;
    OBS_TO_STACK: u8 = 2;
    OBS_FROM_STACK: u8 = 3;
    OBS_TO_OVERLAY: u8 = 4;
    OBS_FROM_OVERLAY: u8 = 5;
    OBS_TO_NETWORK: u8 = 6;
    OBS_FROM_NETWORK: u8 = 7;
    OBS_FROM_HOST: u8 = 8;
    OBS_TO_HOST: u8 = 9;
    POLICY_MATCH_NONE: u8 = 0;
    POLICY_MATCH_L3_ONLY: u8 = 1;
    POLICY_MATCH_L3_L4: u8 = 2;
    POLICY_MATCH_L4_ONLY: u8 = 3;
    POLICY_MATCH_ALL: u8 = 4;
    POLICY_MATCH_L3_PROTO: u8 = 5;
    POLICY_MATCH_PROTO_ONLY: u8 = 6;
    VERDICT_ALLOW: u8 = 1;
    VERDICT_DENY: u8 = 2;
    DBG_LOCAL_DELIVERY: u8 = 2;
    DBG_ENCAP: u8 = 3;
    DBG_CT_VERDICT: u8 = 15;
    DBG_DECAP: u8 = 16;
    DBG_TO_STACK: u8 = 20;
    CAPTURE_DELIVERY: u8 = 4;
    EVENT_CAPTURE_LEN: u32 = 128;
    MONITOR_AGG_NONE: u32 = 0;
    MONITOR_AGG_LOW: u32 = 1;
    MONITOR_AGG_MEDIUM: u32 = 2;
    MONITOR_AGG_MAXIMUM: u32 = 3;
    MONITOR_REPORT_INTERVAL: u32 = 5;
    MONITOR_F_DEBUG: u32 = 1 << 0;
    MONITOR_F_CAPTURE: u32 = 1 << 1;

    CALL_IPV4_FROM_LXC: u32 = 0;
    CALL_IPV4_TO_LXC: u32 = 1;
    CALL_IPV4_LB: u32 = 2;
    CALL_IPV4_NODEPORT: u32 = 4;
    CALL_IPV4_REV_SNAT: u32 = 5;
    CALL_IPV4_NODEPORT_REPLY: u32 = 6;
    CALLS_MAX: u32 = 8;

    PILUS_ABI_VERSION: u32 = 2;
}

/// `METRICS_INDEX(reason, dir)` of abi.h: the slot of `pilus_metrics`.
pub const fn metrics_index(reason: u8, dir: u8) -> u32 {
    reason as u32 * DIR_MAX as u32 + dir as u32
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    const HEADER: &str = include_str!("../../../bpf/lib/abi/abi.h");

    /// Evaluates the few forms abi.h uses: `130`, `256U`, `(1U << 24)`,
    /// `(A * B)` of earlier names. Anything else is a test failure, which keeps
    /// the header simple enough to check.
    fn eval(expr: &str, known: &BTreeMap<String, u64>) -> Option<u64> {
        let e = expr
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .trim();
        let num = |s: &str| -> Option<u64> {
            let s = s.trim().trim_end_matches(['U', 'L', 'u', 'l']);
            s.parse().ok().or_else(|| known.get(s).copied())
        };
        if let Some((a, b)) = e.split_once("<<") {
            return Some(num(a)? << num(b)?);
        }
        if let Some((a, b)) = e.split_once('*') {
            return Some(num(a)? * num(b)?);
        }
        num(e)
    }

    fn header_defines() -> BTreeMap<String, u64> {
        let mut known = BTreeMap::new();
        for line in HEADER.lines() {
            let Some(rest) = line.strip_prefix("#define ") else {
                continue;
            };
            let rest = rest.split("/*").next().unwrap_or("").trim();
            let mut parts = rest.splitn(2, char::is_whitespace);
            let name = parts.next().unwrap_or("");
            let value = parts.next().unwrap_or("").trim();
            if name.contains('(') || value.is_empty() {
                continue; // function-like macro or include guard
            }
            let v =
                eval(value, &known).unwrap_or_else(|| panic!("cannot evaluate {name} = {value}"));
            known.insert(name.to_string(), v);
        }
        known
    }

    #[test]
    fn every_header_constant_matches_rust() {
        let header = header_defines();
        let rust: BTreeMap<String, u64> = super::ALL
            .iter()
            .map(|(n, v)| (n.to_string(), *v))
            .collect();
        assert!(
            header.len() > 50,
            "parsed only {} defines from abi.h",
            header.len()
        );
        for (name, value) in &header {
            assert_eq!(
                rust.get(name),
                Some(value),
                "abi.h {name} = {value}, Rust has {:?}",
                rust.get(name)
            );
        }
        for name in rust.keys() {
            assert!(
                header.contains_key(name),
                "Rust constant {name} is not in abi.h"
            );
        }
    }

    #[test]
    fn metrics_index_matches_header_macro() {
        assert!(HEADER.contains("#define METRICS_INDEX(reason, dir)\t((reason) * DIR_MAX + (dir))"));
        assert_eq!(super::metrics_index(135, super::DIR_EGRESS), 271);
    }
}
