//! The policy engine's state: identities, endpoints (by their labels),
//! namespaces' labels and imported policies. Every mutation returns the
//! [`Change`] the datapath needs — per endpoint the old and new policy, and
//! the CIDR identities to add to or remove from the ipcache — computed
//! incrementally: only identities a changed rule or a changed identity can
//! affect are re-resolved, and endpoints with equal labels share one result.

use crate::{
    cidr::Cidr,
    explain::{entry_cookie, MAX_POLICY_COOKIE},
    identity::{Allocator, Identity, IdentityError, Kind, LocalAllocator},
    labels::{Label, Labels, NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX, SOURCE_K8S},
    resolve::{compute, peer_matches, Addresses, EndpointPolicy, Peers},
    rule::{Direction, Policy, PolicyId, Rule},
    selector::Selector,
};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("identity allocation failed")]
    Identity(#[from] IdentityError),
    #[error("endpoint {0} is not known")]
    UnknownEndpoint(u16),
    #[error("too many policies: every policy cookie (1 to {MAX_POLICY_COOKIE}) is in use")]
    TooManyPolicies,
}

/// An endpoint as the engine knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    pub namespace: String,
    /// The labels as given (before filtering).
    pub pod_labels: Labels,
    pub identity: u32,
}

/// What changed for one endpoint.
#[derive(Clone, Debug)]
pub struct Update {
    pub ep_id: u16,
    pub old_identity: Option<u32>,
    pub identity: Option<u32>,
    pub old: Option<Arc<EndpointPolicy>>,
    pub new: Option<Arc<EndpointPolicy>>,
}

/// Everything a mutation changed that the datapath must be told.
#[derive(Clone, Debug, Default)]
pub struct Change {
    pub revision: u64,
    pub endpoints: Vec<Update>,
    /// CIDR identities to write to the ipcache.
    pub cidr_upserts: Vec<(Cidr, u32)>,
    pub cidr_removals: Vec<Cidr>,
    pub identities_added: Vec<u32>,
    pub identities_removed: Vec<u32>,
}

#[derive(Default)]
struct Pending {
    /// Local identities whose policy must be recomputed.
    touched: BTreeSet<u32>,
    /// Identities allocated or freed (a freed one is kept for matching).
    added: Vec<Identity>,
    removed: Vec<Identity>,
    /// Endpoints whose identity changed: (old identity, old policy).
    endpoints: BTreeMap<u16, (Option<u32>, Option<Arc<EndpointPolicy>>)>,
    cidr_upserts: Vec<(Cidr, u32)>,
    cidr_removals: Vec<Cidr>,
    /// A policy was imported or deleted: the revision moves even if no
    /// endpoint's entries changed.
    policy_changed: bool,
}

pub struct Engine {
    ids: Box<dyn Allocator>,
    /// Identity numbers to reuse (from before a restart).
    prefer: HashMap<Labels, u32>,
    policies: BTreeMap<PolicyId, (Arc<Policy>, u32)>,
    next_cookie: u32,
    endpoints: BTreeMap<u16, EndpointRecord>,
    namespaces: BTreeMap<String, Labels>,
    /// Resolved policy of every identity that has local endpoints.
    resolved: HashMap<u32, Arc<EndpointPolicy>>,
    cidrs: BTreeMap<Cidr, usize>,
    cache: HashMap<Selector, Arc<[u32]>>,
    /// Endpoint addresses and their identities (local and remote), for
    /// Kubernetes ipBlocks, which select the pods inside them.
    addrs: Addresses,
    revision: u64,
}

impl Default for Engine {
    fn default() -> Engine {
        Engine::new()
    }
}

impl Engine {
    /// An engine that numbers identities itself ([`LocalAllocator`]).
    pub fn new() -> Engine {
        Engine::with_allocator(Box::new(LocalAllocator::new()))
    }

    /// An engine that asks `ids` for identity numbers.
    pub fn with_allocator(ids: Box<dyn Allocator>) -> Engine {
        Engine {
            ids,
            prefer: HashMap::new(),
            policies: BTreeMap::new(),
            next_cookie: 1,
            endpoints: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            resolved: HashMap::new(),
            cidrs: BTreeMap::new(),
            cache: HashMap::new(),
            addrs: Addresses::default(),
            revision: 0,
        }
    }

    /// Identity numbers to give these labels when they are next allocated
    /// (a restarted agent passes the ones it had).
    pub fn prefer_identities(&mut self, it: impl IntoIterator<Item = (Labels, u32)>) {
        self.prefer.extend(it);
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Sets the revision a restarted agent had: replaying its state bumps
    /// the counter, but what is enforced is the same revision as before.
    pub fn set_revision(&mut self, r: u64) {
        self.revision = r;
    }

    pub fn identities(&self) -> &dyn Allocator {
        self.ids.as_ref()
    }

    /// The allocator, if it is a `T`.
    pub fn identities_as<T: 'static>(&self) -> Option<&T> {
        self.ids.as_any()?.downcast_ref::<T>()
    }

    /// The endpoint addresses the engine knows, with their identities.
    pub fn addresses(&self) -> &Addresses {
        &self.addrs
    }

    pub fn endpoint(&self, ep_id: u16) -> Option<&EndpointRecord> {
        self.endpoints.get(&ep_id)
    }

    pub fn endpoints(&self) -> impl Iterator<Item = (u16, &EndpointRecord)> {
        self.endpoints.iter().map(|(k, v)| (*k, v))
    }

    /// The resolved policy of a local endpoint.
    pub fn endpoint_policy(&self, ep_id: u16) -> Option<Arc<EndpointPolicy>> {
        let ep = self.endpoints.get(&ep_id)?;
        self.resolved.get(&ep.identity).cloned()
    }

    pub fn policies(&self) -> impl Iterator<Item = (&Policy, u32)> {
        self.policies.values().map(|(p, c)| (p.as_ref(), *c))
    }

    pub fn policy(&self, id: &PolicyId) -> Option<&Policy> {
        self.policies.get(id).map(|(p, _)| p.as_ref())
    }

    pub fn namespace_labels(&self, ns: &str) -> Option<&Labels> {
        self.namespaces.get(ns)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&String, &Labels)> {
        self.namespaces.iter()
    }

    /// Every rule with its policy's cookie.
    pub fn rules(&self) -> impl Iterator<Item = (&PolicyId, &Rule, u32)> {
        self.policies
            .iter()
            .flat_map(|(id, (p, c))| p.rules.iter().map(move |r| (id, r, *c)))
    }

    /// The labels an endpoint's identity is made of: its security-relevant
    /// labels, its namespace, and its namespace's labels (so that Kubernetes
    /// namespaceSelectors are label selectors like any other).
    pub fn identity_labels(&self, namespace: &str, pod_labels: &Labels) -> Labels {
        let mut l = pod_labels.security_relevant();
        l.insert(Label::new(SOURCE_K8S, NAMESPACE_LABEL, namespace));
        // Kubernetes labels every namespace with its own name.
        l.insert(Label::new(
            SOURCE_K8S,
            &format!("{NAMESPACE_LABELS_PREFIX}kubernetes.io/metadata.name"),
            namespace,
        ));
        if let Some(ns) = self.namespaces.get(namespace) {
            for x in ns.iter() {
                l.insert(Label::new(
                    SOURCE_K8S,
                    &format!("{NAMESPACE_LABELS_PREFIX}{}", x.key),
                    &x.value,
                ));
            }
        }
        l
    }

    fn acquire(&mut self, labels: &Labels, p: &mut Pending) -> Result<u32, IdentityError> {
        let (id, new) = match self.prefer.get(labels) {
            Some(&want) if self.ids.lookup(labels).is_none() && self.ids.is_free(want) => {
                self.ids.restore(labels, want)?
            }
            _ => self.ids.acquire(labels)?,
        };
        if new {
            p.added
                .push(self.ids.get(id).expect("just allocated").clone());
        }
        Ok(id)
    }

    fn release(&mut self, id: u32, p: &mut Pending) {
        let before = self.ids.get(id).cloned();
        if self.ids.release(id) {
            p.removed.extend(before);
        }
    }

    /// Adds or replaces a local endpoint.
    pub fn upsert_endpoint(
        &mut self,
        ep_id: u16,
        namespace: &str,
        pod_labels: &Labels,
    ) -> Result<Change, EngineError> {
        let mut p = Pending::default();
        let labels = self.identity_labels(namespace, pod_labels);
        let id = self.acquire(&labels, &mut p)?;
        let old = self.endpoints.insert(
            ep_id,
            EndpointRecord {
                namespace: namespace.to_string(),
                pod_labels: pod_labels.clone(),
                identity: id,
            },
        );
        let old_id = old.map(|o| o.identity);
        p.endpoints.insert(
            ep_id,
            (old_id, old_id.and_then(|i| self.resolved.get(&i).cloned())),
        );
        if let Some(o) = old_id {
            self.release(o, &mut p);
        }
        p.touched.insert(id);
        Ok(self.finish(p))
    }

    /// Forgets a local endpoint; unknown ones change nothing.
    pub fn remove_endpoint(&mut self, ep_id: u16) -> Change {
        let mut p = Pending::default();
        if let Some(old) = self.endpoints.remove(&ep_id) {
            p.endpoints.insert(
                ep_id,
                (
                    Some(old.identity),
                    self.resolved.get(&old.identity).cloned(),
                ),
            );
            self.release(old.identity, &mut p);
        }
        self.finish(p)
    }

    /// Sets a namespace's labels; its endpoints change identity.
    pub fn set_namespace_labels(
        &mut self,
        ns: &str,
        labels: Labels,
    ) -> Result<Change, EngineError> {
        let mut p = Pending::default();
        let before = self.namespaces.insert(ns.to_string(), labels);
        let members: Vec<u16> = self
            .endpoints
            .iter()
            .filter(|(_, e)| e.namespace == ns)
            .map(|(k, _)| *k)
            .collect();
        // Acquire every new identity first so a failure changes nothing.
        let mut new_ids = Vec::new();
        for ep in &members {
            let e = &self.endpoints[ep];
            let l = self.identity_labels(&e.namespace, &e.pod_labels);
            match self.acquire(&l, &mut p) {
                Ok(id) => new_ids.push(id),
                Err(err) => {
                    for id in new_ids {
                        self.ids.release(id);
                    }
                    match before {
                        Some(b) => self.namespaces.insert(ns.to_string(), b),
                        None => self.namespaces.remove(ns),
                    };
                    return Err(err.into());
                }
            }
        }
        for (ep, id) in members.into_iter().zip(new_ids) {
            let e = self.endpoints.get_mut(&ep).expect("member");
            let old = std::mem::replace(&mut e.identity, id);
            p.endpoints
                .insert(ep, (Some(old), self.resolved.get(&old).cloned()));
            self.release(old, &mut p);
            p.touched.insert(id);
        }
        Ok(self.finish(p))
    }

    /// An identity another node allocated: rules whose peers it matches are
    /// resolved again for the local endpoints they select.
    pub fn observe_identity(&mut self, id: u32, labels: &Labels) -> Change {
        let mut p = Pending::default();
        if self.ids.observe(id, labels) {
            p.added
                .push(self.ids.get(id).expect("just observed").clone());
        }
        self.finish(p)
    }

    /// An identity another node released (if this node uses it, it stays).
    pub fn forget_identity(&mut self, id: u32) -> Change {
        let mut p = Pending::default();
        if let Some(gone) = self.ids.forget(id) {
            p.removed.push(gone);
        }
        self.finish(p)
    }

    /// Records that endpoint address `ip` has `identity` now (`None`: no
    /// endpoint has it any more). Kubernetes ipBlocks select the pods inside
    /// them through their identities, so the subjects of every rule whose
    /// ipBlock covers `ip` are resolved again.
    pub fn set_address(&mut self, ip: std::net::Ipv4Addr, identity: Option<u32>) -> Change {
        let mut p = Pending::default();
        if self.addrs.set(ip, identity) != identity {
            let local = self.local_identities();
            for (_, rule, _) in self.rules() {
                let covers = [Direction::Ingress, Direction::Egress].iter().any(|&d| {
                    rule.allows(d)
                        .iter()
                        .chain(rule.denies(d))
                        .flat_map(|pr| &pr.peers)
                        .any(|peer| matches!(peer, crate::rule::Peer::IpBlock { cidr, .. } if cidr.contains(&ip)))
                });
                if covers {
                    for &id in &local {
                        if rule
                            .subject
                            .matches(&self.ids.get(id).expect("local").labels)
                        {
                            p.touched.insert(id);
                        }
                    }
                }
            }
        }
        self.finish(p)
    }

    /// Adds or replaces policies, all or none.
    pub fn import(&mut self, policies: Vec<Policy>) -> Result<Change, EngineError> {
        self.import_with_cookies(policies.into_iter().map(|p| (p, None)).collect())
    }

    /// Policies as a restarted agent had them, each with the cookie it had
    /// then: cookies are in the map entries, so a restart that renumbered
    /// them would rewrite every entry.
    pub fn restore(&mut self, policies: Vec<(Policy, u32)>) -> Result<Change, EngineError> {
        if let Some(max) = policies.iter().map(|(_, c)| *c).max() {
            self.next_cookie = self.next_cookie.max(max + 1);
        }
        self.import_with_cookies(policies.into_iter().map(|(p, c)| (p, Some(c))).collect())
    }

    /// The cookie of a policy (its map entries carry it with their rule's
    /// index: [`entry_cookie`]).
    pub fn cookie(&self, id: &PolicyId) -> Option<u32> {
        self.policies.get(id).map(|(_, c)| *c)
    }

    /// The cookie of the entries `rule` (one of policy `id`'s) writes.
    pub(crate) fn entry_cookie_of(&self, id: &PolicyId, rule: &Rule) -> u32 {
        let Some((pol, c)) = self.policies.get(id) else {
            return 0;
        };
        let index = pol
            .rules
            .iter()
            .position(|r| std::ptr::eq(r, rule))
            .unwrap_or(0);
        entry_cookie(*c, index)
    }

    /// A cookie for a new policy: the next number, or once the numbers an
    /// entry cookie holds ([`MAX_POLICY_COOKIE`]) are used up, the lowest
    /// one no policy holds (deleted policies give theirs back).
    /// The caller checked that a number is free (fewer policies than
    /// numbers).
    fn fresh_cookie(&mut self) -> u32 {
        if self.next_cookie <= MAX_POLICY_COOKIE {
            self.next_cookie += 1;
            return self.next_cookie - 1;
        }
        let used: BTreeSet<u32> = self.policies.values().map(|(_, c)| *c).collect();
        (1..=MAX_POLICY_COOKIE)
            .find(|c| !used.contains(c))
            .expect("fewer policies than cookies (checked before the import)")
    }

    fn import_with_cookies(
        &mut self,
        policies: Vec<(Policy, Option<u32>)>,
    ) -> Result<Change, EngineError> {
        let mut p = Pending {
            policy_changed: true,
            ..Default::default()
        };
        // Every new policy needs a cookie of its own; refused before
        // anything changes.
        let new = policies
            .iter()
            .filter(|(p, _)| !self.policies.contains_key(&p.id))
            .count();
        if self.policies.len() + new > MAX_POLICY_COOKIE as usize {
            return Err(EngineError::TooManyPolicies);
        }
        // CIDR identities next: the only other step that can fail.
        let mut delta: BTreeMap<Cidr, isize> = BTreeMap::new();
        for (pol, _) in &policies {
            for c in cidrs_of(pol) {
                *delta.entry(c).or_default() += 1;
            }
            if let Some((old, _)) = self.policies.get(&pol.id) {
                for c in cidrs_of(old) {
                    *delta.entry(c).or_default() -= 1;
                }
            }
        }
        let mut acquired = Vec::new();
        for (c, d) in &delta {
            if *d > 0 && !self.cidrs.contains_key(c) && c.prefix_len() > 0 {
                match self.acquire_cidr(c, &mut p) {
                    Ok(id) => acquired.push(id),
                    Err(e) => {
                        for id in acquired {
                            self.ids.release(id);
                        }
                        return Err(e.into());
                    }
                }
            }
        }
        for (pol, want) in policies {
            let cookie = match (self.policies.get(&pol.id), want) {
                (Some((old, c)), _) => {
                    self.touch_subjects(old, &mut p);
                    want.unwrap_or(*c)
                }
                (None, Some(c)) => c,
                (None, None) => self.fresh_cookie(),
            };
            self.touch_subjects(&pol, &mut p);
            self.policies
                .insert(pol.id.clone(), (Arc::new(pol), cookie));
        }
        self.apply_cidr_delta(delta, &mut p);
        Ok(self.finish(p))
    }

    /// Removes policies; unknown ids are skipped. Returns the change and
    /// how many were removed.
    pub fn delete(&mut self, ids: &[PolicyId]) -> (Change, usize) {
        let mut p = Pending::default();
        let mut delta: BTreeMap<Cidr, isize> = BTreeMap::new();
        let mut n = 0;
        for id in ids {
            if let Some((old, _)) = self.policies.remove(id) {
                n += 1;
                p.policy_changed = true;
                self.touch_subjects(&old, &mut p);
                for c in cidrs_of(&old) {
                    *delta.entry(c).or_default() -= 1;
                }
            }
        }
        self.apply_cidr_delta(delta, &mut p);
        (self.finish(p), n)
    }

    fn acquire_cidr(&mut self, c: &Cidr, p: &mut Pending) -> Result<u32, IdentityError> {
        let labels = crate::identity::cidr_labels(c);
        let (id, new) = match self.prefer.get(&labels) {
            Some(&want) if self.ids.lookup(&labels).is_none() && self.ids.is_free(want) => {
                self.ids.restore_cidr(c, want)?
            }
            _ => self.ids.acquire_cidr(c)?,
        };
        if new {
            p.added
                .push(self.ids.get(id).expect("just allocated").clone());
        }
        p.cidr_upserts.push((*c, id));
        Ok(id)
    }

    /// Applies reference-count changes of CIDRs; identities for new ones
    /// were acquired already.
    fn apply_cidr_delta(&mut self, delta: BTreeMap<Cidr, isize>, p: &mut Pending) {
        for (c, d) in delta {
            if c.prefix_len() == 0 {
                continue; // 0.0.0.0/0 is the world identity itself
            }
            let refs = self.cidrs.entry(c).or_insert(0);
            let was = *refs;
            *refs = (was as isize + d).max(0) as usize;
            if *refs == 0 {
                self.cidrs.remove(&c);
                if was > 0 {
                    if let Some(id) = self.ids.lookup(&crate::identity::cidr_labels(&c)) {
                        self.release(id, p);
                        p.cidr_removals.push(c);
                    }
                }
            }
        }
    }

    /// Marks every local identity a policy's rules select.
    fn touch_subjects(&self, pol: &Policy, p: &mut Pending) {
        for id in self.local_identities() {
            let labels = &self.ids.get(id).expect("local identity").labels;
            if pol.rules.iter().any(|r| r.subject.matches(labels)) {
                p.touched.insert(id);
            }
        }
    }

    fn local_identities(&self) -> BTreeSet<u32> {
        self.endpoints.values().map(|e| e.identity).collect()
    }

    fn finish(&mut self, mut p: Pending) -> Change {
        let local = self.local_identities();
        if !p.added.is_empty() || !p.removed.is_empty() {
            self.cache.clear();
            // Rules with a peer that is (or was) one of these identities
            // change for every local identity they select.
            let changed: Vec<&Identity> = p.added.iter().chain(&p.removed).collect();
            for (_, rule, _) in self.rules() {
                let names_one = [Direction::Ingress, Direction::Egress].iter().any(|&d| {
                    rule.allows(d)
                        .iter()
                        .chain(rule.denies(d))
                        .flat_map(|pr| &pr.peers)
                        .any(|peer| changed.iter().any(|i| peer_matches(peer, i, &self.addrs)))
                });
                if names_one {
                    for &id in &local {
                        if rule
                            .subject
                            .matches(&self.ids.get(id).expect("local").labels)
                        {
                            p.touched.insert(id);
                        }
                    }
                }
            }
        }
        let mut old: HashMap<u32, Option<Arc<EndpointPolicy>>> = HashMap::new();
        // Each rule's entries carry its own cookie (policy and rule), so a
        // verdict names the rule that decided (crate::explain).
        let rules: Vec<(&Rule, u32)> = self
            .policies
            .values()
            .flat_map(|(pol, c)| {
                pol.rules
                    .iter()
                    .enumerate()
                    .map(move |(i, r)| (r, entry_cookie(*c, i)))
            })
            .collect();
        for &id in p.touched.iter().filter(|id| local.contains(id)) {
            let labels = &self.ids.get(id).expect("local").labels;
            let mut peers = Peers {
                ids: self.ids.as_ref(),
                cache: &mut self.cache,
                addrs: &self.addrs,
            };
            let new = compute(labels, rules.iter().copied(), &mut peers);
            let prev = self.resolved.get(&id).cloned();
            if prev.as_deref() != Some(&new) {
                old.insert(id, prev);
                self.resolved.insert(id, Arc::new(new));
            }
        }
        self.resolved.retain(|id, _| local.contains(id));

        let mut updates = Vec::new();
        for (&ep, (old_id, old_pol)) in &p.endpoints {
            let now = self.endpoints.get(&ep);
            updates.push(Update {
                ep_id: ep,
                old_identity: *old_id,
                identity: now.map(|e| e.identity),
                old: old_pol.clone(),
                new: now.and_then(|e| self.resolved.get(&e.identity).cloned()),
            });
        }
        for (&ep, e) in &self.endpoints {
            if p.endpoints.contains_key(&ep) {
                continue;
            }
            if let Some(prev) = old.get(&e.identity) {
                updates.push(Update {
                    ep_id: ep,
                    old_identity: Some(e.identity),
                    identity: Some(e.identity),
                    old: prev.clone(),
                    new: self.resolved.get(&e.identity).cloned(),
                });
            }
        }
        if p.policy_changed || !old.is_empty() {
            self.revision += 1;
        }
        Change {
            revision: self.revision,
            endpoints: updates,
            cidr_upserts: p.cidr_upserts,
            cidr_removals: p.cidr_removals,
            identities_added: p.added.iter().map(|i| i.id).collect(),
            identities_removed: p.removed.iter().map(|i| i.id).collect(),
        }
    }

    /// Ids of policies a user names: `name`, `namespace/name`, or
    /// `Kind/namespace/name`.
    pub fn find_policies(&self, name: &str) -> Vec<PolicyId> {
        self.policies
            .keys()
            .filter(|id| {
                let ns_name = match &id.namespace {
                    Some(ns) => format!("{ns}/{}", id.name),
                    None => id.name.clone(),
                };
                name == id.name || name == ns_name || name == format!("{}/{ns_name}", id.kind)
            })
            .cloned()
            .collect()
    }

    /// CIDR identities in use, for the ipcache.
    pub fn cidr_identities(&self) -> Vec<(Cidr, u32)> {
        self.ids
            .iter()
            .filter(|i| i.kind == Kind::Cidr)
            .filter_map(|i| i.cidr.map(|c| (c, i.id)))
            .collect()
    }
}

fn cidrs_of(p: &Policy) -> BTreeSet<Cidr> {
    p.rules.iter().flat_map(|r| r.cidrs()).collect()
}
