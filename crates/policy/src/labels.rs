//! Labels and label sets, in Cilium's `source:key=value` form, and the filter
//! that keeps only the security-relevant ones.

use serde::{Deserialize, Serialize};
use std::{fmt, sync::Arc};

/// The namespace a pod lives in, as Cilium labels it.
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Prefix of a namespace's own labels when copied onto its pods (Cilium's
/// convention); Kubernetes `namespaceSelector`s select on these.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// Source of labels that come from Kubernetes (the default).
pub const SOURCE_K8S: &str = "k8s";
/// Source of the reserved identities' labels (`reserved:host`).
pub const SOURCE_RESERVED: &str = "reserved";
/// Source of CIDR identities' labels (`cidr:198.18.0.0/24`).
pub const SOURCE_CIDR: &str = "cidr";
/// In a selector: a key from any source.
pub const SOURCE_ANY: &str = "any";

/// Labels that change with every rollout and would split one workload into
/// many identities; Cilium's default label filter drops them too.
const NOISE_KEYS: &[&str] = &[
    "pod-template-hash",
    "pod-template-generation",
    "controller-revision-hash",
    "controller-uid",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-completion-index",
];

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Label {
    pub source: String,
    pub key: String,
    pub value: String,
}

impl Label {
    pub fn new(source: &str, key: &str, value: &str) -> Label {
        Label {
            source: source.to_string(),
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    /// Parses `source:key=value`, `key=value` (source `default_source`) or a
    /// bare `key` (empty value). The source is what precedes the first `:`
    /// when that comes before any `=` (keys like `app.kubernetes.io/name`
    /// contain no `:`).
    pub fn parse(s: &str, default_source: &str) -> Result<Label, crate::Error> {
        let s = s.trim();
        let (kv, source) = match (s.find(':'), s.find('=')) {
            (Some(c), eq) if eq.is_none_or(|e| c < e) => (&s[c + 1..], &s[..c]),
            _ => (s, default_source),
        };
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        if key.is_empty() {
            return Err(crate::Error::Label {
                label: s.to_string(),
                reason: "the key is empty".into(),
            });
        }
        if source.is_empty() {
            return Err(crate::Error::Label {
                label: s.to_string(),
                reason: "the source before ':' is empty".into(),
            });
        }
        Ok(Label::new(source, key, value))
    }

    /// Checks that a label a user or a runtime gives a pod is one Kubernetes
    /// would accept (`[prefix/]name`, name and value at most 63 characters
    /// of letters, digits, '-', '_' and '.', starting and ending with a
    /// letter or digit; the prefix a DNS subdomain) and does not claim a
    /// source only Pilus assigns (`reserved:`, `cidr:`).
    pub fn check_pod_label(&self) -> Result<(), crate::Error> {
        let fail = |reason: String| crate::Error::Label {
            label: self.to_string(),
            reason,
        };
        if [SOURCE_RESERVED, SOURCE_CIDR].contains(&self.source.as_str()) {
            return Err(fail(format!(
                "the source {:?} is Pilus's own; pod labels cannot use it",
                self.source
            )));
        }
        // Pilus derives these from the pod's namespace: a pod label with
        // one of these keys would pass for another namespace (or its
        // labels) in every namespaceSelector.
        if self.key == NAMESPACE_LABEL || self.key.starts_with(NAMESPACE_LABELS_PREFIX) {
            return Err(fail(format!(
                "the key {:?} is set by Pilus from the pod's namespace; pod labels cannot set it",
                self.key
            )));
        }
        let (prefix, name) = match self.key.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, self.key.as_str()),
        };
        if let Some(p) = prefix {
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            if p.len() > 253 || !p.split('.').all(label_ok) {
                return Err(fail(format!(
                    "the key's prefix {p:?} must be a DNS subdomain (lowercase letters, digits, '-' and '.')"
                )));
            }
        }
        let part_ok = |s: &str, empty_ok: bool| {
            (s.is_empty() && empty_ok)
                || (!s.is_empty()
                    && s.len() <= 63
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                    && s.as_bytes()[0].is_ascii_alphanumeric()
                    && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
        };
        if !part_ok(name, false) {
            return Err(fail(format!(
                "the key's name {name:?} must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            )));
        }
        if !part_ok(&self.value, true) {
            return Err(fail(format!(
                "the value {:?} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
                self.value
            )));
        }
        Ok(())
    }

    pub fn is_noise(&self) -> bool {
        NOISE_KEYS.contains(&self.key.as_str()) || self.key.starts_with("annotation.")
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.source, self.key)
        } else {
            write!(f, "{}:{}={}", self.source, self.key, self.value)
        }
    }
}

/// A set of labels, at most one per (source, key), in a stable order: equal
/// sets compare equal and hash alike, which is what identities are keyed by.
///
/// Kept as one shared, sorted slice: cloning a set (the endpoint record,
/// the engine's record and every endpoint of a workload hold the same one)
/// costs a reference count, not a copy. A change makes a new slice.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Arc<[Label]>);

/// Where (source, key) is in a sorted slice of labels, or would be.
fn find(labels: &[Label], source: &str, key: &str) -> Result<usize, usize> {
    labels.binary_search_by(|l| (l.source.as_str(), l.key.as_str()).cmp(&(source, key)))
}

impl Labels {
    pub fn new() -> Labels {
        Labels::default()
    }

    pub fn from_labels(it: impl IntoIterator<Item = Label>) -> Labels {
        let mut v: Vec<Label> = Vec::new();
        for l in it {
            // A later label replaces an earlier one of the same source and key.
            match find(&v, &l.source, &l.key) {
                Ok(i) => v[i] = l,
                Err(i) => v.insert(i, l),
            }
        }
        Labels(v.into())
    }

    /// Parses each string with [`Label::parse`].
    pub fn parse_all<S: AsRef<str>>(
        items: &[S],
        default_source: &str,
    ) -> Result<Labels, crate::Error> {
        items
            .iter()
            .map(|s| Label::parse(s.as_ref(), default_source))
            .collect::<Result<Vec<_>, _>>()
            .map(Labels::from_labels)
    }

    /// Adds a label, replacing the value of the same source and key.
    pub fn insert(&mut self, l: Label) {
        let mut v = self.0.to_vec();
        match find(&v, &l.source, &l.key) {
            Ok(i) => v[i] = l,
            Err(i) => v.insert(i, l),
        }
        self.0 = v.into();
    }

    /// Removes the label of `source` and `key`; true if it was there.
    pub fn remove_key(&mut self, source: &str, key: &str) -> bool {
        let Ok(i) = find(&self.0, source, key) else {
            return false;
        };
        let mut v = self.0.to_vec();
        v.remove(i);
        self.0 = v.into();
        true
    }

    pub fn with(mut self, source: &str, key: &str, value: &str) -> Labels {
        self.insert(Label::new(source, key, value));
        self
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Label> + '_ {
        self.0.iter().cloned()
    }

    /// How many `Labels` values share this set's memory: an interner that
    /// holds the only one left can let it go.
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// The value of `key` from `source` (or from any source for
    /// [`SOURCE_ANY`]).
    pub fn get(&self, source: &str, key: &str) -> Option<&str> {
        if source == SOURCE_ANY {
            return self
                .0
                .iter()
                .find(|l| l.key == key)
                .map(|l| l.value.as_str());
        }
        find(&self.0, source, key)
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    /// The pod's namespace, if it has one.
    pub fn namespace(&self) -> Option<&str> {
        self.get(SOURCE_K8S, NAMESPACE_LABEL)
    }

    /// Only the labels that identify a workload for policy.
    pub fn security_relevant(&self) -> Labels {
        Labels::from_labels(self.iter().filter(|l| !l.is_noise()))
    }

    /// The strings `source:key=value`, sorted.
    pub fn to_strings(&self) -> Vec<String> {
        self.iter().map(|l| l.to_string()).collect()
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strings().join(","))
    }
}

impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_strings().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        Labels::parse_all(&v, SOURCE_K8S).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_labels_follow_kubernetes_syntax() {
        let ok = [
            "app=web",
            "app.kubernetes.io/name=db",
            "k8s:tier=",
            "team=a-b_c.d",
        ];
        for l in ok {
            Label::parse(l, "k8s").unwrap().check_pod_label().unwrap();
        }
        let bad = [
            "reserved:host",
            "cidr:x=1",
            "app=-web",
            "app=web!",
            "-app=x",
            "Bad.Prefix/app=x",
            "a/b/c=x",
            "x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            // Found reviewing the runtime-label path: namespace spoofing.
            "io.kubernetes.pod.namespace=kube-system",
            "io.cilium.k8s.namespace.labels.team=ops",
        ];
        for l in bad {
            assert!(
                Label::parse(l, "k8s").unwrap().check_pod_label().is_err(),
                "{l} accepted"
            );
        }
    }

    #[test]
    fn parses_source_key_value() {
        assert_eq!(
            Label::parse("k8s:app=web", "x").unwrap(),
            Label::new("k8s", "app", "web")
        );
        assert_eq!(
            Label::parse("app=web", "k8s").unwrap(),
            Label::new("k8s", "app", "web")
        );
        assert_eq!(
            Label::parse("reserved:host", "k8s").unwrap(),
            Label::new("reserved", "host", "")
        );
        // A ':' in the value is not a source.
        assert_eq!(
            Label::parse("url=http://x", "k8s").unwrap(),
            Label::new("k8s", "url", "http://x")
        );
        assert!(Label::parse("=web", "k8s").is_err());
        assert!(Label::parse(":app=web", "k8s").is_err());
    }

    #[test]
    fn noise_is_filtered() {
        let l = Labels::parse_all(
            &[
                "app=web",
                "pod-template-hash=abc",
                "controller-revision-hash=1",
            ],
            "k8s",
        )
        .unwrap();
        assert_eq!(l.security_relevant().to_strings(), vec!["k8s:app=web"]);
    }

    #[test]
    fn a_later_label_replaces_one_of_the_same_key_and_clones_share() {
        let mut l = Labels::parse_all(&["b=1", "a=1", "k8s:b=2", "x:b=3"], "k8s").unwrap();
        assert_eq!(l.to_strings(), vec!["k8s:a=1", "k8s:b=2", "x:b=3"]);
        let shared = l.clone();
        assert_eq!(shared.holders(), 2);
        l.insert(Label::new("k8s", "c", "3"));
        assert!(l.remove_key("x", "b"));
        assert!(!l.remove_key("x", "b"));
        assert_eq!(l.to_strings(), vec!["k8s:a=1", "k8s:b=2", "k8s:c=3"]);
        // A change makes a new set; the shared one is as it was.
        assert_eq!(shared.to_strings(), vec!["k8s:a=1", "k8s:b=2", "x:b=3"]);
        assert_eq!((shared.holders(), l.holders()), (1, 1));
    }

    #[test]
    fn equal_sets_compare_equal_in_any_order() {
        let a = Labels::parse_all(&["a=1", "b=2"], "k8s").unwrap();
        let b = Labels::parse_all(&["b=2", "a=1"], "k8s").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get(SOURCE_ANY, "b"), Some("2"));
        assert_eq!(a.get("reserved", "b"), None);
    }
}
