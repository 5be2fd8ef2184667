//! Interning of what many endpoints hold alike. The pods of a workload have
//! equal label sets and equal label sources, so their endpoint records
//! share one copy of each (and the policy engine's records share the label
//! set with them): a thousand endpoints of a hundred workloads keep a
//! hundred sets, not a thousand.
//!
//! A value that only the interner still holds is let go by a sweep, which
//! runs when the interner has doubled since the last one: the cost is
//! amortized over the values interned, no caller has to say when a value
//! is no longer used, and what is kept beyond the values in use stays
//! within their number (plus a small floor).

use std::{collections::HashSet, hash::Hash};

/// Below this many values the interner never sweeps.
const SWEEP_FLOOR: usize = 64;

pub(crate) struct Interner<T> {
    values: HashSet<T>,
    /// How many values hold the memory of this one (the interner's own
    /// included): a reference count.
    holders: fn(&T) -> usize,
    sweep_at: usize,
}

impl<T: Clone + Eq + Hash> Interner<T> {
    pub(crate) fn new(holders: fn(&T) -> usize) -> Interner<T> {
        Interner {
            values: HashSet::new(),
            holders,
            sweep_at: SWEEP_FLOOR,
        }
    }

    /// The value equal to `v` that is already shared, or `v` (now shared).
    pub(crate) fn intern(&mut self, v: T) -> T {
        if let Some(shared) = self.values.get(&v) {
            return shared.clone();
        }
        if self.values.len() >= self.sweep_at {
            self.sweep();
        }
        self.values.insert(v.clone());
        v
    }

    /// Lets go of the values no one but the interner holds.
    fn sweep(&mut self) {
        let holders = self.holders;
        self.values.retain(|v| holders(v) > 1);
        self.sweep_at = (2 * self.values.len()).max(SWEEP_FLOOR);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn equal_values_share_and_unused_ones_go_at_the_next_sweep() {
        let mut i: Interner<Arc<String>> = Interner::new(Arc::strong_count);
        let a = i.intern(Arc::new("web".to_string()));
        let b = i.intern(Arc::new("web".to_string()));
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        // Held by no one else now, but kept until the interner is full.
        let kept: Vec<_> = (0..SWEEP_FLOOR - 1)
            .map(|n| i.intern(Arc::new(n.to_string())))
            .collect();
        assert_eq!(i.len(), SWEEP_FLOOR);
        assert!(i.values.iter().any(|v| v.as_str() == "web"));
        // The next new value sweeps first: "web" goes, the held ones stay.
        let _db = i.intern(Arc::new("db".to_string()));
        assert_eq!(i.len(), SWEEP_FLOOR);
        assert!(i.values.iter().all(|v| v.as_str() != "web"));
        drop(kept);
    }
}
