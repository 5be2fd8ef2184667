//! Label selectors (Kubernetes `matchLabels` / `matchExpressions`), matched
//! against label sets. A selector key is `source:key` or a bare `key`, which
//! matches that key from any source (Cilium's `any:` default).

use crate::labels::{Labels, SOURCE_ANY};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One requirement on one key. `matchLabels: {k: v}` is `k In [v]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Requirement {
    pub source: String,
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl Requirement {
    /// `key` may carry a source prefix (`k8s:app`); without one it matches
    /// any source.
    pub fn new(key: &str, op: Op, mut values: Vec<String>) -> Requirement {
        let (source, key) = split_key(key);
        values.sort();
        values.dedup();
        Requirement {
            source: source.to_string(),
            key: key.to_string(),
            op,
            values,
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.source, &self.key);
        match self.op {
            Op::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
        }
    }

    fn qualified_key(&self) -> String {
        if self.source == SOURCE_ANY {
            self.key.clone()
        } else {
            format!("{}:{}", self.source, self.key)
        }
    }
}

/// `k8s:app` → ("k8s", "app"); `app` → ("any", "app"). Only a prefix before
/// the first `:` counts, and only if it has no `/` or `.` (label keys such as
/// `app.kubernetes.io/name` never contain `:`, so this is unambiguous).
pub fn split_key(key: &str) -> (&str, &str) {
    match key.split_once(':') {
        Some((src, k)) if !src.is_empty() && !src.contains(['/', '.']) => (src, k),
        _ => (SOURCE_ANY, key),
    }
}

/// All requirements must hold; the empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that selects every label set.
    pub fn all() -> Selector {
        Selector::default()
    }

    pub fn new(mut requirements: Vec<Requirement>) -> Selector {
        requirements.sort();
        requirements.dedup();
        Selector { requirements }
    }

    /// `matchLabels` only.
    pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Selector {
        Selector::new(
            pairs
                .into_iter()
                .map(|(k, v)| Requirement::new(k, Op::In, vec![v.to_string()]))
                .collect(),
        )
    }

    /// This selector with one more requirement.
    pub fn and(&self, r: Requirement) -> Selector {
        let mut v = self.requirements.clone();
        v.push(r);
        Selector::new(v)
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether some requirement is on `key` (from `source` or any source).
    pub fn constrains(&self, source: &str, key: &str) -> bool {
        self.requirements
            .iter()
            .any(|r| r.key == key && (r.source == source || r.source == SOURCE_ANY))
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match (r.op, r.values.as_slice()) {
                (Op::In, [v]) => format!("{}={}", r.qualified_key(), v),
                (Op::In, vs) => format!("{} in ({})", r.qualified_key(), vs.join(",")),
                (Op::NotIn, vs) => format!("{} notin ({})", r.qualified_key(), vs.join(",")),
                (Op::Exists, _) => r.qualified_key(),
                (Op::DoesNotExist, _) => format!("!{}", r.qualified_key()),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(items: &[&str]) -> Labels {
        Labels::parse_all(items, "k8s").unwrap()
    }

    #[test]
    fn match_labels_and_expressions() {
        let web = l(&["app=web", "tier=front"]);
        assert!(Selector::labels([("app", "web")]).matches(&web));
        assert!(Selector::labels([("k8s:app", "web")]).matches(&web));
        assert!(!Selector::labels([("reserved:app", "web")]).matches(&web));
        assert!(!Selector::labels([("app", "db")]).matches(&web));
        assert!(Selector::all().matches(&web));
        let r = |k: &str, op, vs: &[&str]| {
            Selector::new(vec![Requirement::new(
                k,
                op,
                vs.iter().map(|s| s.to_string()).collect(),
            )])
        };
        assert!(r("app", Op::In, &["db", "web"]).matches(&web));
        assert!(!r("app", Op::NotIn, &["db", "web"]).matches(&web));
        // NotIn and DoesNotExist hold when the key is absent (Kubernetes).
        assert!(r("env", Op::NotIn, &["prod"]).matches(&web));
        assert!(r("env", Op::DoesNotExist, &[]).matches(&web));
        assert!(r("tier", Op::Exists, &[]).matches(&web));
        assert!(!r("tier", Op::DoesNotExist, &[]).matches(&web));
    }

    #[test]
    fn keys_with_dots_and_slashes_have_no_source() {
        assert_eq!(
            split_key("app.kubernetes.io/name"),
            ("any", "app.kubernetes.io/name")
        );
        assert_eq!(
            split_key("k8s:io.kubernetes.pod.namespace"),
            ("k8s", "io.kubernetes.pod.namespace")
        );
        assert_eq!(split_key("reserved:host"), ("reserved", "host"));
    }
}
