//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), as Cilium builds
//! its tables: a table of M (prime) entries, each backend's preference list
//! a permutation of the table from two hashes of its name (offset = h1 mod
//! M, skip = h2 mod (M - 1) + 1), the table filled by the backends in turn,
//! each taking its next preferred free entry. Every backend ends up with
//! M/N entries give or take one, and removing one backend moves little more
//! than its own entries.
//!
//! Weights (Cilium's weighted Maglev): a backend of weight w takes w turns
//! per round, so its share is w / Σw.
//!
//! The hash is SipHash-1-3 (128 bits: h1 and h2 are its halves) with fixed
//! keys, stable across builds and machines: every node computes the same
//! table for the same backends.

use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// Cilium's default table size (a prime): 16381.
pub const DEFAULT_M: u32 = 16_381;

/// One backend as Maglev sees it: the name it is permuted by (`address:port`),
/// its weight (> 0), and what the table holds for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub weight: u32,
    pub id: u32,
}

/// Fixed keys: "pilus maglev" in ASCII, padded. Changing them moves every
/// flow of every Maglev service.
const K0: u64 = 0x7069_6c75_7320_6d61;
const K1: u64 = 0x676c_6576_0000_0000;

fn hashes(name: &str) -> (u64, u64) {
    let mut h = SipHasher13::new_with_keys(K0, K1);
    h.write(name.as_bytes());
    let h = h.finish128();
    (h.h1, h.h2)
}

/// The table: `m` backend ids (`m` must be prime, as the permutations need;
/// empty when there are no backends). Backends of weight 0 take no entry.
/// The result depends on the set of backends, not on their order.
pub fn table(backends: &[Entry], m: u32) -> Vec<u32> {
    let mut bs: Vec<&Entry> = backends.iter().filter(|b| b.weight > 0).collect();
    if bs.is_empty() || m == 0 {
        return Vec::new();
    }
    // Order by name: the fill order must not depend on how the caller
    // listed them (two nodes must agree).
    bs.sort_by(|a, b| a.name.cmp(&b.name));
    let m64 = u64::from(m);
    let perm: Vec<(u64, u64)> = bs
        .iter()
        .map(|b| {
            let (h1, h2) = hashes(&b.name);
            (h1 % m64, h2 % (m64 - 1) + 1)
        })
        .collect();
    let mut next = vec![0u64; bs.len()];
    let mut entry: Vec<Option<u32>> = vec![None; m as usize];
    let mut filled = 0u32;
    // Weights: a backend takes `weight` turns a round; divided by their gcd
    // so equal weights cost one turn each.
    let g = bs.iter().fold(0, |g, b| gcd(g, b.weight));
    'fill: loop {
        for (i, b) in bs.iter().enumerate() {
            for _ in 0..b.weight / g {
                let (offset, skip) = perm[i];
                let mut c = ((offset + next[i] * skip) % m64) as usize;
                while entry[c].is_some() {
                    next[i] += 1;
                    c = ((offset + next[i] * skip) % m64) as usize;
                }
                entry[c] = Some(b.id);
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    entry.into_iter().map(|e| e.expect("filled")).collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn backends(n: u32) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                name: format!("198.18.{}.{}:8080", 1 + i / 200, 10 + i % 200),
                weight: 1,
                id: 100 + i,
            })
            .collect()
    }

    fn shares(t: &[u32]) -> BTreeMap<u32, usize> {
        let mut s = BTreeMap::new();
        for id in t {
            *s.entry(*id).or_insert(0) += 1;
        }
        s
    }

    /// Each backend's share is within 1% of the table of its fair share.
    #[test]
    fn every_backend_gets_its_share_within_one_percent() {
        for n in [1, 2, 3, 7, 10, 50, 100, 251] {
            let t = table(&backends(n), DEFAULT_M);
            assert_eq!(t.len(), DEFAULT_M as usize);
            let s = shares(&t);
            assert_eq!(s.len(), n as usize, "n={n}: every backend has entries");
            let fair = f64::from(DEFAULT_M) / f64::from(n);
            for (id, c) in s {
                let off = (c as f64 - fair).abs() / f64::from(DEFAULT_M);
                assert!(off <= 0.01, "n={n}: backend {id} has {c}, fair {fair:.1}");
            }
        }
    }

    /// Removing one of N backends moves at most 1/N of the table plus a
    /// little: the removed backend's own entries must move, few others do.
    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        for n in [3, 5, 10, 20, 50, 100] {
            let all = backends(n);
            let before = table(&all, DEFAULT_M);
            for gone in [0, n / 2, n - 1] {
                let rest: Vec<Entry> = all.iter().filter(|b| b.id != 100 + gone).cloned().collect();
                let after = table(&rest, DEFAULT_M);
                let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
                let frac = moved as f64 / f64::from(DEFAULT_M);
                let bound = 1.0 / f64::from(n) + 0.03;
                assert!(
                    frac <= bound,
                    "n={n}, removing {gone}: {frac:.4} of entries moved, bound {bound:.4}"
                );
                // Entries of the backends that stayed mostly stay theirs.
                assert!(after.iter().all(|id| *id != 100 + gone));
            }
        }
    }

    #[test]
    fn order_does_not_matter_and_weights_set_the_shares() {
        let mut bs = backends(5);
        let a = table(&bs, DEFAULT_M);
        bs.reverse();
        assert_eq!(table(&bs, DEFAULT_M), a, "same set, same table");
        bs[0].weight = 3;
        let s = shares(&table(&bs, DEFAULT_M));
        let heavy = s[&bs[0].id] as f64 / f64::from(DEFAULT_M);
        assert!((heavy - 3.0 / 7.0).abs() <= 0.01, "weight 3 of 7: {heavy}");
        bs[1].weight = 0;
        assert!(!table(&bs, DEFAULT_M).contains(&bs[1].id), "weight 0: none");
        assert!(table(&[], DEFAULT_M).is_empty());
    }

    #[test]
    fn the_hash_is_stable() {
        // A change here moves every flow of every Maglev service on an
        // upgrade: it must be deliberate.
        let t = table(&backends(3), 13);
        assert_eq!(
            t,
            [100, 100, 101, 101, 102, 100, 101, 102, 100, 100, 102, 102, 101]
        );
    }
}
