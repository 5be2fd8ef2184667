//! How a policy entry is encoded in the LPM trie's keys: a port range becomes
//! the few (port, prefix) pairs that cover it exactly, so 1-65535 costs 16
//! entries, not 65535. Shared by the loader's typed maps and the (pure)
//! policy resolver, so both sides encode keys one way.

use crate::{
    consts::{POLICY_F_DENY, POLICY_PREFIX_FULL, POLICY_PREFIX_L3, POLICY_PREFIX_PROTO},
    Be16, PolicyKey, PolicyValue,
};

/// A port range whose first port is above its last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRangeError {
    pub lo: u16,
    pub hi: u16,
}

impl std::fmt::Display for PortRangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "port range {}-{} is inverted", self.lo, self.hi)
    }
}

impl std::error::Error for PortRangeError {}

/// Splits `lo..=hi` into maximal aligned blocks: (first port, prefix bits of
/// the 16-bit port that are fixed). Errors when `lo > hi`.
pub fn range_to_prefixes(lo: u16, hi: u16) -> Result<Vec<(u16, u8)>, PortRangeError> {
    if lo > hi {
        return Err(PortRangeError { lo, hi });
    }
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // The largest power-of-two block that starts at lo (alignment) and
        // still ends at or before hi.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1u32 << lo.trailing_zeros()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, (16 - size.trailing_zeros()) as u8));
        lo += size;
    }
    Ok(out)
}

/// One rule for one endpoint, direction and peer, before expansion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyEntry {
    pub ep_id: u16,
    pub direction: u8,
    /// Peer security identity; 0 = any peer.
    pub identity: u32,
    /// IP protocol; `None` = any protocol and port (an L3-only entry).
    pub protocol: Option<u8>,
    /// Inclusive destination port range; `None` = every port of `protocol`.
    pub ports: Option<(u16, u16)>,
    pub deny: bool,
    /// Rule reference reported with verdicts.
    pub cookie: u32,
}

impl PolicyEntry {
    /// The LPM keys and value that implement this entry.
    pub fn to_map_entries(&self) -> Result<Vec<(PolicyKey, PolicyValue)>, PortRangeError> {
        let base = PolicyKey {
            prefix_len: POLICY_PREFIX_L3,
            sec_identity: self.identity,
            ep_id: self.ep_id,
            direction: self.direction,
            ..Default::default()
        };
        let value = |l4_bits: u32| PolicyValue {
            proxy_port: Be16::new(0),
            flags: if self.deny { POLICY_F_DENY } else { 0 },
            l4_prefix_len: l4_bits as u8,
            cookie: self.cookie,
        };
        let Some(protocol) = self.protocol else {
            return Ok(vec![(base, value(0))]);
        };
        let with_proto = PolicyKey { protocol, ..base };
        let Some((lo, hi)) = self.ports else {
            let key = PolicyKey {
                prefix_len: POLICY_PREFIX_PROTO,
                ..with_proto
            };
            return Ok(vec![(key, value(POLICY_PREFIX_PROTO - POLICY_PREFIX_L3))]);
        };
        Ok(range_to_prefixes(lo, hi)?
            .into_iter()
            .map(|(port, bits)| {
                let prefix = POLICY_PREFIX_PROTO + u32::from(bits);
                let key = PolicyKey {
                    prefix_len: prefix,
                    dport: Be16::new(port),
                    ..with_proto
                };
                (key, value(prefix - POLICY_PREFIX_L3))
            })
            .collect())
    }
}

const _: () = assert!(POLICY_PREFIX_FULL == POLICY_PREFIX_PROTO + 16);

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(blocks: &[(u16, u8)]) -> Vec<u32> {
        blocks
            .iter()
            .flat_map(|&(p, bits)| {
                let size = 1u32 << (16 - bits);
                (u32::from(p)..u32::from(p) + size).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn single_port_is_one_full_prefix() {
        assert_eq!(range_to_prefixes(80, 80).unwrap(), vec![(80, 16)]);
    }

    #[test]
    fn whole_range_is_one_empty_prefix() {
        assert_eq!(range_to_prefixes(0, 65535).unwrap(), vec![(0, 0)]);
        assert_eq!(range_to_prefixes(1, 65535).unwrap().len(), 16);
    }

    #[test]
    fn ranges_are_covered_exactly() {
        for (lo, hi) in [
            (80, 90),
            (1000, 1999),
            (1, 1023),
            (8080, 8081),
            (65534, 65535),
            (0, 7),
        ] {
            let blocks = range_to_prefixes(lo, hi).unwrap();
            let ports = covered(&blocks);
            let want: Vec<u32> = (u32::from(lo)..=u32::from(hi)).collect();
            assert_eq!(ports, want, "range {lo}-{hi} -> {blocks:?}");
            assert!(blocks.len() <= 30, "{lo}-{hi} took {} blocks", blocks.len());
        }
    }

    #[test]
    fn inverted_range_is_an_error() {
        assert!(matches!(
            range_to_prefixes(90, 80),
            Err(PortRangeError { lo: 90, hi: 80 })
        ));
    }

    #[test]
    fn entries_carry_their_level() {
        let e = PolicyEntry {
            ep_id: 7,
            direction: 1,
            identity: 300,
            protocol: Some(6),
            ports: Some((80, 81)),
            deny: true,
            cookie: 9,
        };
        let v = e.to_map_entries().unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0.prefix_len, POLICY_PREFIX_PROTO + 15);
        assert_eq!(v[0].0.dport.get(), 80);
        assert_eq!(v[0].1.l4_prefix_len, 8 + 15);
        assert_eq!(v[0].1.flags, POLICY_F_DENY);
        let l3 = PolicyEntry {
            protocol: None,
            ports: None,
            ..e.clone()
        }
        .to_map_entries()
        .unwrap();
        assert_eq!(
            (l3[0].0.prefix_len, l3[0].1.l4_prefix_len),
            (POLICY_PREFIX_L3, 0)
        );
        let proto = PolicyEntry { ports: None, ..e }.to_map_entries().unwrap();
        assert_eq!(
            (proto[0].0.prefix_len, proto[0].1.l4_prefix_len),
            (POLICY_PREFIX_PROTO, 8)
        );
    }
}
