//! How the control plane's state lies in the [`KvStore`]: one key per
//! endpoint, policy, namespace and identity, with JSON values in a form of
//! their own (not the in-memory types), so a refactor of those never makes
//! a node unable to read its state.
//!
//! ```text
//! pilus/v1/nodes/<node>/endpoints/<id>     an endpoint of this node
//! pilus/v1/nodes/<node>/identities/<id>    an identity number this node holds
//! pilus/v1/nodes/<node>/revision           the policy revision enforced
//! pilus/v1/nodes/<node>/cookies/<policy>   (in a cluster) the cookie of a policy
//! pilus/v1/nodes/<node>/services/<ns>/<name>  this node's ids of a service's
//!                                          frontends and backends
//! pilus/v1/nodes/<node>/service-next-ids   the next frontend and backend ids
//! pilus/v1/policies/<kind>/<ns|->/<name>   a policy, as its source document
//! pilus/v1/namespaces/<ns>                 a namespace's labels
//! pilus/v1/services/<ns>/<name>            a service (the API's form)
//! ```
//!
//! Every change of the control plane is one transaction, so a crash leaves
//! the state before or after it, never half of it.

use crate::{endpoints::StoredEndpoint, Error};
use pilus_kvstore::{KeyValue, Txn};
use pilus_policy::{Labels, Policy, PolicyId, PolicyKind};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub const ROOT: &str = "pilus/v1/";

/// A key segment: letters, digits, '.', '_' and '-' as they are, any other
/// byte as `%XX`, so names with '/' or spaces cannot change the layout.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// The keys of one node's state.
#[derive(Clone, Debug)]
pub struct Layout {
    node: String,
}

impl Layout {
    pub fn new(node: &str) -> Layout {
        Layout {
            node: segment(node),
        }
    }

    pub fn endpoints(&self) -> String {
        format!("{ROOT}nodes/{}/endpoints/", self.node)
    }

    pub fn endpoint(&self, id: u16) -> String {
        format!("{}{id}", self.endpoints())
    }

    pub fn identities(&self) -> String {
        format!("{ROOT}nodes/{}/identities/", self.node)
    }

    pub fn identity(&self, id: u32) -> String {
        format!("{}{id}", self.identities())
    }

    pub fn revision(&self) -> String {
        format!("{ROOT}nodes/{}/revision", self.node)
    }

    pub fn policies(&self) -> String {
        format!("{ROOT}policies/")
    }

    pub fn policy(&self, id: &PolicyId) -> String {
        format!(
            "{}{}/{}/{}",
            self.policies(),
            id.kind,
            id.namespace.as_deref().map_or("-".into(), segment),
            segment(&id.name)
        )
    }

    /// The cookies this node gave policies (in a cluster, where the
    /// cluster store holds the policies themselves).
    pub fn cookies(&self) -> String {
        format!("{ROOT}nodes/{}/cookies/", self.node)
    }

    pub fn cookie(&self, id: &PolicyId) -> String {
        format!(
            "{}{}",
            self.cookies(),
            self.policy(id).trim_start_matches(&self.policies())
        )
    }

    pub fn namespaces(&self) -> String {
        format!("{ROOT}namespaces/")
    }

    /// Services, shared like policies (the cluster store in a cluster).
    pub fn services(&self) -> String {
        format!("{ROOT}services/")
    }

    pub fn service(&self, namespace: &str, name: &str) -> String {
        format!(
            "{}{}/{}",
            self.services(),
            segment(namespace),
            segment(name)
        )
    }

    /// This node's ids of services' frontends and backends (ids are the
    /// node's own: its conntrack and affinity entries name them).
    pub fn service_ids(&self) -> String {
        format!("{ROOT}nodes/{}/services/", self.node)
    }

    pub fn service_id(&self, namespace: &str, name: &str) -> String {
        format!(
            "{}{}/{}",
            self.service_ids(),
            segment(namespace),
            segment(name)
        )
    }

    pub fn service_next_ids(&self) -> String {
        format!("{ROOT}nodes/{}/service-next-ids", self.node)
    }

    pub fn namespace(&self, ns: &str) -> String {
        format!("{}{}", self.namespaces(), segment(ns))
    }
}

/// A policy as stored: its id and its source document, parsed again on
/// restore by the same parser an import uses.
#[derive(Serialize, Deserialize)]
pub struct StoredPolicy {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The id its map entries carry, kept so a restart rewrites none.
    pub cookie: u32,
    pub document: serde_json::Value,
}

impl StoredPolicy {
    pub fn of(p: &Policy, cookie: u32) -> StoredPolicy {
        StoredPolicy {
            kind: p.id.kind.to_string(),
            namespace: p.id.namespace.clone(),
            name: p.id.name.clone(),
            cookie,
            document: p.source.clone(),
        }
    }

    /// The policy again. A rules-array rule's name may come from its place
    /// in the file it was imported from; the stored id is the one it had.
    pub fn policy(&self, key: &str) -> Result<Policy, Error> {
        let text = self.document.to_string();
        let mut ps = pilus_policy::parse_documents(&text, key)?;
        let (Some(mut p), true) = (ps.pop(), ps.is_empty()) else {
            return Err(Error::invalid(
                "stored policy",
                format!("{key} does not hold exactly one policy"),
            ));
        };
        if p.id.kind == PolicyKind::Rules {
            p.id.name = self.name.clone();
        }
        if p.id.to_string()
            != (PolicyId {
                kind: p.id.kind,
                namespace: self.namespace.clone(),
                name: self.name.clone(),
            })
            .to_string()
            || p.id.kind.to_string() != self.kind
        {
            return Err(Error::invalid(
                "stored policy",
                format!("{key} holds {} instead", p.id),
            ));
        }
        Ok(p)
    }
}

/// Labels as stored: their `source:key=value` strings.
#[derive(Serialize, Deserialize)]
pub struct StoredLabels {
    pub labels: Vec<String>,
}

impl StoredLabels {
    pub fn of(l: &Labels) -> StoredLabels {
        StoredLabels {
            labels: l.to_strings(),
        }
    }

    pub fn labels(&self) -> Result<Labels, Error> {
        Ok(Labels::parse_all(&self.labels, "unspec")?)
    }
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("stored records serialize")
}

pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, Error> {
    serde_json::from_slice(&kv.value).map_err(|source| Error::Stored {
        key: kv.key.clone(),
        source,
    })
}

/// The part of a key after `prefix`.
pub fn tail<'a>(kv: &'a KeyValue, prefix: &str) -> &'a str {
    kv.key.strip_prefix(prefix).unwrap_or(&kv.key)
}

/// Adds the writes of one endpoint record.
pub fn put_endpoint(txn: Txn, layout: &Layout, ep: &StoredEndpoint) -> Txn {
    txn.put(layout.endpoint(ep.id), encode(ep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_change_the_layout() {
        assert_eq!(segment("web-1.a_b"), "web-1.a_b");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment(""), "%00");
        let l = Layout::new("node/1");
        assert_eq!(l.endpoint(7), "pilus/v1/nodes/node%2F1/endpoints/7");
        let id = PolicyId {
            kind: PolicyKind::Rules,
            namespace: None,
            name: "p.json[2]".into(),
        };
        assert_eq!(l.policy(&id), "pilus/v1/policies/Rules/-/p.json%5B2%5D");
    }

    #[test]
    fn stored_policies_come_back_with_their_id() {
        let text = r#"[{"endpointSelector": {}, "ingress": [{}]}, {"endpointSelector": {"matchLabels": {"app": "x"}}}]"#;
        for p in pilus_policy::parse_documents(text, "p.json").unwrap() {
            let back = StoredPolicy::of(&p, 1).policy("k").unwrap();
            assert_eq!((back.id.clone(), back.rules.len()), (p.id.clone(), 1));
        }
        let cnp = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a, namespace: shop}\nspec: {endpointSelector: {}}\n";
        let p = pilus_policy::parse_documents(cnp, "c.yaml")
            .unwrap()
            .remove(0);
        let mut s = StoredPolicy::of(&p, 1);
        assert_eq!(s.policy("k").unwrap().id, p.id);
        s.name = "other".into();
        assert!(s.policy("k").is_err());
    }
}
