//! The policy's owner: the engine (policies, namespaces' labels, endpoints'
//! identities and resolved entries, through the identity [`Allocator`]) and
//! the policy map. It turns the engine's changes into map writes, for each
//! endpoint new entries first and stale ones last, so no packet meets a
//! half-written policy that denies what both old and new allow.
//!
//! [`Allocator`]: pilus_policy::Allocator

use crate::datapath::{DpResult, PolicyMap};
use pilus_abi::{PolicyKey, PolicyValue};
use pilus_policy::{Engine, Update};
use std::{collections::HashMap, sync::Arc};

pub struct PolicyManager {
    pub(crate) engine: Engine,
    map: Arc<dyn PolicyMap>,
    /// The revision the datapath enforces (written last by every change).
    enforced: u64,
}

/// One endpoint's entries before and after a change, split into what to
/// add (before its endpoint record is rewritten) and what to remove (after).
pub struct EntryDelta {
    pub add: Vec<(PolicyKey, PolicyValue)>,
    pub stale: Vec<PolicyKey>,
}

impl PolicyManager {
    pub fn new(engine: Engine, map: Arc<dyn PolicyMap>) -> PolicyManager {
        PolicyManager {
            engine,
            map,
            enforced: 0,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn enforced(&self) -> u64 {
        self.enforced
    }

    /// The identity and enforcement flags of an endpoint (0, 0 if unknown).
    pub fn identity_and_flags(&self, ep: u16) -> (u32, u16) {
        match self.engine.endpoint(ep) {
            Some(r) => (
                r.identity,
                self.engine.endpoint_policy(ep).map_or(0, |p| p.flags()),
            ),
            None => (0, 0),
        }
    }

    pub fn delta(u: &Update) -> EntryDelta {
        let old = u
            .old
            .as_ref()
            .map(|p| p.map_entries(u.ep_id))
            .unwrap_or_default();
        let new = u
            .new
            .as_ref()
            .map(|p| p.map_entries(u.ep_id))
            .unwrap_or_default();
        EntryDelta {
            add: new
                .iter()
                .filter(|(k, v)| old.get(k) != Some(v))
                .map(|(k, v)| (*k, *v))
                .collect(),
            stale: old
                .keys()
                .filter(|k| !new.contains_key(k))
                .copied()
                .collect(),
        }
    }

    pub fn put(&self, entries: &[(PolicyKey, PolicyValue)]) -> DpResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.map.put_policy(entries)
    }

    pub fn remove(&self, keys: &[PolicyKey]) -> DpResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.map.remove_policy(keys)
    }

    /// Publishes `revision` as enforced (the datapath's counter too).
    pub fn enforce(&mut self, revision: u64) -> DpResult<()> {
        if revision != self.enforced {
            self.map.set_revision(revision as u32)?;
        }
        self.enforced = revision;
        Ok(())
    }

    /// Every endpoint's entries as the engine says they should be.
    pub fn desired(&self, endpoints: impl Iterator<Item = u16>) -> HashMap<PolicyKey, PolicyValue> {
        let mut out = HashMap::new();
        for ep in endpoints {
            if let Some(p) = self.engine.endpoint_policy(ep) {
                out.extend(p.map_entries(ep));
            }
        }
        out
    }

    /// Makes the policy map and revision equal the engine's; returns
    /// (written, removed).
    pub fn resync(&mut self, endpoints: impl Iterator<Item = u16>) -> DpResult<(usize, usize)> {
        let want = self.desired(endpoints);
        let have: HashMap<PolicyKey, PolicyValue> =
            self.map.policy_entries()?.into_iter().collect();
        let stale: Vec<PolicyKey> = have
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        let add: Vec<(PolicyKey, PolicyValue)> = want
            .iter()
            .filter(|(k, v)| have.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect();
        self.put(&add)?;
        self.remove(&stale)?;
        let (mut written, removed) = (add.len(), stale.len());
        let rev = self.engine.revision();
        if self.map.revision()? != rev as u32 {
            self.map.set_revision(rev as u32)?;
            written += 1;
        }
        self.enforced = rev;
        Ok((written, removed))
    }
}
