//! The ipcache's owner. Many writers name prefixes — local endpoints, remote
//! endpoints (from the cluster store), nodes, CIDRs of policies — and each
//! entry remembers who wrote it. A fixed precedence picks the one the
//! datapath sees, so a policy's `toCIDR: [<pod IP>/32]` never changes who
//! the pod is, and removing one writer's entry never removes another's.

use crate::datapath::{DpResult, IpcacheMap};
use ipnet::Ipv4Net;
use pilus_abi::{Be32, IpcacheValue};
use serde::Serialize;
use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc};

/// Who wrote an entry. The order is the precedence: the first wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// An endpoint of this node: its own /32.
    LocalEndpoint,
    /// An endpoint of another node, from the cluster store.
    RemoteEndpoint,
    /// A node's own addresses.
    Node,
    /// A CIDR a policy names (the CIDR identity).
    PolicyCidr,
}

impl Source {
    /// Every source, in precedence order (their discriminants index
    /// [`Sources`]).
    pub const ALL: [Source; 4] = [
        Source::LocalEndpoint,
        Source::RemoteEndpoint,
        Source::Node,
        Source::PolicyCidr,
    ];

    /// Whether entries of this source stand for an endpoint (whose address
    /// Kubernetes ipBlocks select).
    pub fn is_endpoint(self) -> bool {
        matches!(self, Source::LocalEndpoint | Source::RemoteEndpoint)
    }
}

/// What one source says of a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub identity: u32,
    /// The node to tunnel to (remote endpoints), if any.
    pub tunnel_endpoint: Option<Ipv4Addr>,
}

impl Entry {
    pub fn identity(identity: u32) -> Entry {
        Entry {
            identity,
            tunnel_endpoint: None,
        }
    }

    fn value(&self) -> IpcacheValue {
        IpcacheValue {
            sec_identity: self.identity,
            tunnel_endpoint: Be32::from(self.tunnel_endpoint.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            ..Default::default()
        }
    }
}

/// Every source's entry for one prefix, in precedence order. Held inline
/// (one slot per source) rather than in a map of its own: a prefix has
/// one or two writers, and a map per prefix cost an allocation of eleven
/// slots for every endpoint's /32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sources([Option<Entry>; Source::ALL.len()]);

impl Sources {
    fn insert(&mut self, source: Source, entry: Entry) {
        self.0[source as usize] = Some(entry);
    }

    /// Removes `source`'s entry; false if it had none.
    fn remove(&mut self, source: Source) -> bool {
        self.0[source as usize].take().is_some()
    }

    /// Every entry, the winner first.
    fn iter(&self) -> impl Iterator<Item = (Source, Entry)> + '_ {
        Source::ALL
            .iter()
            .zip(&self.0)
            .filter_map(|(s, e)| e.map(|e| (*s, e)))
    }

    fn winner(&self) -> Option<(Source, Entry)> {
        self.iter().next()
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}

/// How the winner of a prefix changed with one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WinnerChange {
    pub prefix: Ipv4Net,
    pub before: Option<(Source, Entry)>,
    pub after: Option<(Source, Entry)>,
}

impl WinnerChange {
    /// The identity of an endpoint at this /32 before and after, when that
    /// changed (what the policy engine's address book needs).
    pub fn endpoint_identity(&self) -> Option<(Ipv4Addr, Option<u32>)> {
        let ep = |w: Option<(Source, Entry)>| {
            w.filter(|(s, _)| s.is_endpoint()).map(|(_, e)| e.identity)
        };
        (self.prefix.prefix_len() == 32 && ep(self.before) != ep(self.after))
            .then(|| (self.prefix.addr(), ep(self.after)))
    }
}

pub struct IpcacheManager {
    map: Arc<dyn IpcacheMap>,
    prefixes: BTreeMap<Ipv4Net, Sources>,
}

impl IpcacheManager {
    pub fn new(map: Arc<dyn IpcacheMap>) -> IpcacheManager {
        IpcacheManager {
            map,
            prefixes: BTreeMap::new(),
        }
    }

    pub fn winner(&self, prefix: &Ipv4Net) -> Option<(Source, Entry)> {
        self.prefixes.get(prefix).and_then(Sources::winner)
    }

    /// Sets `source`'s entry for `prefix` in memory only (a restore, which
    /// [`resync`](Self::resync)s the datapath once at the end).
    pub fn restore(&mut self, prefix: Ipv4Net, source: Source, entry: Entry) {
        self.prefixes
            .entry(prefix.trunc())
            .or_default()
            .insert(source, entry);
    }

    /// Sets `source`'s entry for `prefix`; the datapath is written when the
    /// winner changes. On a datapath error nothing changes here.
    pub fn upsert(
        &mut self,
        prefix: Ipv4Net,
        source: Source,
        entry: Entry,
    ) -> DpResult<Option<WinnerChange>> {
        let prefix = prefix.trunc();
        let before = self.winner(&prefix);
        let mut sources = self.prefixes.get(&prefix).copied().unwrap_or_default();
        sources.insert(source, entry);
        self.commit(prefix, before, sources)
    }

    /// Removes `source`'s entry for `prefix` (others stay).
    pub fn remove(&mut self, prefix: Ipv4Net, source: Source) -> DpResult<Option<WinnerChange>> {
        let prefix = prefix.trunc();
        let before = self.winner(&prefix);
        let Some(mut sources) = self.prefixes.get(&prefix).copied() else {
            return Ok(None);
        };
        if !sources.remove(source) {
            return Ok(None);
        }
        self.commit(prefix, before, sources)
    }

    fn commit(
        &mut self,
        prefix: Ipv4Net,
        before: Option<(Source, Entry)>,
        sources: Sources,
    ) -> DpResult<Option<WinnerChange>> {
        let after = sources.winner();
        let value = |w: Option<(Source, Entry)>| w.map(|(_, e)| e.value());
        if value(before) != value(after) {
            match after {
                Some((_, e)) => self.map.upsert_ipcache(prefix, &e.value())?,
                None => self.map.remove_ipcache(prefix)?,
            }
        }
        if sources.is_empty() {
            self.prefixes.remove(&prefix);
        } else {
            self.prefixes.insert(prefix, sources);
        }
        Ok((before != after).then_some(WinnerChange {
            prefix,
            before,
            after,
        }))
    }

    /// Every prefix with every source's entry, winner first.
    pub fn entries(&self) -> impl Iterator<Item = (Ipv4Net, Vec<(Source, Entry)>)> + '_ {
        self.prefixes.iter().map(|(p, s)| (*p, s.iter().collect()))
    }

    /// What the datapath should hold: each prefix's winner.
    pub fn desired(&self) -> BTreeMap<Ipv4Net, IpcacheValue> {
        self.prefixes
            .iter()
            .filter_map(|(p, s)| s.winner().map(|(_, e)| (*p, e.value())))
            .collect()
    }

    /// Makes the datapath's map equal [`desired`](Self::desired); returns
    /// (written, removed).
    pub fn resync(&self) -> DpResult<(usize, usize)> {
        let want = self.desired();
        let have: BTreeMap<Ipv4Net, IpcacheValue> = self.map.ipcache()?.into_iter().collect();
        let (mut written, mut removed) = (0, 0);
        for p in have.keys().filter(|p| !want.contains_key(p)) {
            self.map.remove_ipcache(*p)?;
            removed += 1;
        }
        for (p, v) in &want {
            if have.get(p) != Some(v) {
                self.map.upsert_ipcache(*p, v)?;
                written += 1;
            }
        }
        Ok((written, removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeDatapath;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// Issue 9: a CNP `toCIDR: [<pod IP>/32]` replaced the pod's identity in
    /// the ipcache with a CIDR identity, and deleting the policy removed the
    /// pod's entry altogether.
    #[test]
    fn a_policy_cidr_never_replaces_or_removes_an_endpoint() {
        let dp = FakeDatapath::default();
        let mut ipc = IpcacheManager::new(Arc::new(dp.clone()));
        let pod = net("198.18.0.5/32");
        ipc.upsert(pod, Source::LocalEndpoint, Entry::identity(256))
            .unwrap();
        let c = ipc
            .upsert(pod, Source::PolicyCidr, Entry::identity(1 << 24))
            .unwrap();
        assert_eq!(c, None, "the winner must not change");
        assert_eq!(dp.ipcache_identity("198.18.0.5/32"), Some(256));
        ipc.remove(pod, Source::PolicyCidr).unwrap();
        assert_eq!(dp.ipcache_identity("198.18.0.5/32"), Some(256));
        // The other order: the pod arrives after the policy's CIDR.
        let later = net("198.18.0.6/32");
        ipc.upsert(later, Source::PolicyCidr, Entry::identity(1 << 24))
            .unwrap();
        let c = ipc
            .upsert(later, Source::LocalEndpoint, Entry::identity(257))
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint_identity(), Some((later.addr(), Some(257))));
        assert_eq!(dp.ipcache_identity("198.18.0.6/32"), Some(257));
        // The pod goes: the policy's CIDR identity is back.
        let c = ipc.remove(later, Source::LocalEndpoint).unwrap().unwrap();
        assert_eq!(c.endpoint_identity(), Some((later.addr(), None)));
        assert_eq!(dp.ipcache_identity("198.18.0.6/32"), Some(1 << 24));
        ipc.remove(later, Source::PolicyCidr).unwrap();
        assert_eq!(dp.ipcache_identity("198.18.0.6/32"), None);
        assert_eq!(ipc.desired().len(), 1);
    }

    #[test]
    fn precedence_is_fixed_and_writes_happen_only_when_the_winner_changes() {
        let dp = FakeDatapath::default();
        let mut ipc = IpcacheManager::new(Arc::new(dp.clone()));
        let p = net("198.18.7.0/24");
        ipc.upsert(p, Source::PolicyCidr, Entry::identity(1 << 24))
            .unwrap();
        let writes = dp.maps().writes;
        // A node entry beats a policy CIDR; a remote endpoint beats a node.
        ipc.upsert(p, Source::Node, Entry::identity(6)).unwrap();
        ipc.upsert(
            p,
            Source::RemoteEndpoint,
            Entry {
                identity: 300,
                tunnel_endpoint: Some(Ipv4Addr::new(198, 19, 0, 2)),
            },
        )
        .unwrap();
        assert_eq!(dp.maps().writes, writes + 2);
        let v = dp.maps().ipcache[&p];
        assert_eq!(
            (v.sec_identity, Ipv4Addr::from(v.tunnel_endpoint)),
            (300, Ipv4Addr::new(198, 19, 0, 2))
        );
        // Rewriting a losing source writes nothing.
        ipc.upsert(p, Source::PolicyCidr, Entry::identity(1 << 24))
            .unwrap();
        assert_eq!(dp.maps().writes, writes + 2);
        // A prefix written with host bits is its network.
        ipc.upsert(net("198.18.7.9/24"), Source::Node, Entry::identity(6))
            .unwrap();
        assert_eq!(ipc.entries().count(), 1);
        // Removing a source that never wrote changes nothing.
        assert_eq!(
            ipc.remove(net("198.18.9.0/24"), Source::Node).unwrap(),
            None
        );
    }

    /// `Sources` indexes its slots by discriminant and reads them in slot
    /// order: `Source::ALL` must be every source, in that order, which is
    /// the precedence order.
    #[test]
    fn the_sources_table_is_in_precedence_order() {
        for (i, s) in Source::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        assert!(Source::ALL.windows(2).all(|w| w[0] < w[1]));
        let mut s = Sources::default();
        s.insert(Source::PolicyCidr, Entry::identity(1 << 24));
        s.insert(Source::Node, Entry::identity(6));
        assert_eq!(s.winner(), Some((Source::Node, Entry::identity(6))));
        assert!(s.remove(Source::Node) && !s.remove(Source::Node));
        assert!(s.remove(Source::PolicyCidr) && s.is_empty());
    }

    #[test]
    fn resync_makes_the_map_equal_the_winners() {
        let dp = FakeDatapath::default();
        let mut ipc = IpcacheManager::new(Arc::new(dp.clone()));
        ipc.upsert(
            net("198.18.0.2/32"),
            Source::LocalEndpoint,
            Entry::identity(256),
        )
        .unwrap();
        dp.upsert_ipcache(net("198.18.0.9/32"), &Entry::identity(999).value())
            .unwrap();
        dp.remove_ipcache(net("198.18.0.2/32")).unwrap();
        assert_eq!(ipc.resync().unwrap(), (1, 1));
        assert_eq!(ipc.resync().unwrap(), (0, 0));
        assert_eq!(dp.ipcache_identity("198.18.0.2/32"), Some(256));
    }
}
