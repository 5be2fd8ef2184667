//! Reading policy documents: splitting YAML/JSON text into documents,
//! choosing each one's parser by kind (`cnp`, `knp`), catching duplicate
//! policies, and the helpers both parsers share (error context, strict JSON
//! walking, label selectors, CIDRs, port values).

use crate::{
    cidr::Cidr,
    cnp, knp,
    labels::{NAMESPACE_LABEL, SOURCE_K8S},
    Error, Op, Policy, PolicyId, PolicyKind, Requirement,
};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::{collections::BTreeMap, fmt};

pub(crate) type Object = Map<String, Value>;

/// Parses every policy in `text` (YAML or JSON, one or many `---`-separated
/// documents). `source` names the text in errors (`policy.yaml`) and names
/// unlabelled rules of a rules array (`policy.json[0]`).
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<Policy>, Error> {
    let mut read = Read {
        source,
        policies: Vec::new(),
        seen: BTreeMap::new(),
    };
    // A text that is one JSON value is read as JSON. The YAML reader would
    // take most of it alike, but it refuses characters that JSON allows
    // unescaped in strings (DEL, C1 controls), calling a valid JSON policy
    // "not YAML or JSON".
    if text.trim_start().starts_with(['{', '[']) {
        let mut de = serde_json::Deserializer::from_str(text);
        if let Ok(Strict(value)) = Strict::deserialize(&mut de) {
            if de.end().is_ok() {
                read.document(1, value)?;
                return Ok(read.policies);
            }
        }
        // Otherwise YAML (a `---` stream of JSON documents, say, where
        // those characters must be escaped) or an error, which the YAML
        // reader explains.
    }
    for (i, de) in yaml_serde::Deserializer::from_str(text).enumerate() {
        // On a syntax error the iterator keeps yielding the same error
        // forever, so the first one ends the loop.
        let value = match Strict::deserialize(de) {
            Ok(Strict(v)) => v,
            Err(e) => {
                return Err(Error::Syntax {
                    document: format!("{source}: document {}", i + 1),
                    source: e,
                })
            }
        };
        read.document(i + 1, value)?;
    }
    Ok(read.policies)
}

/// The policies read so far from one text.
struct Read<'a> {
    source: &'a str,
    policies: Vec<Policy>,
    /// Where each policy was defined, to refuse a second definition.
    seen: BTreeMap<PolicyId, String>,
}

impl Read<'_> {
    /// Adds the policies of document `number` (from 1).
    fn document(&mut self, number: usize, value: Value) -> Result<(), Error> {
        if value.is_null() {
            return Ok(()); // an empty document, e.g. after a trailing `---`
        }
        let ctx = Ctx {
            document: format!("{}: document {number}", self.source),
            base: String::new(),
            name: None,
            source: self.source.to_string(),
        };
        for (place, policy) in document_policies(&ctx, &value)? {
            if let Some(first) = self.seen.get(&policy.id) {
                return Err(Error::Duplicate {
                    what: "policy",
                    name: policy.id.to_string(),
                    first: first.clone(),
                    second: place,
                });
            }
            self.seen.insert(policy.id.clone(), place);
            self.policies.push(policy);
        }
        Ok(())
    }
}

const SUPPORTED: &str = "supported are kind CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy \
     (apiVersion cilium.io/v2), kind NetworkPolicy (apiVersion networking.k8s.io/v1), \
     kind List of those, or a JSON array of rules (cilium policy import)";

/// One document's policies, each with where it is (for duplicate errors).
fn document_policies(ctx: &Ctx, v: &Value) -> Result<Vec<(String, Policy)>, Error> {
    match v {
        Value::Array(items) => cnp::rules_array(ctx, items),
        Value::Object(m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
            ctx.fields(m, "", &["apiVersion", "kind", "metadata", "items"], &[])?;
            let items = ctx.array(m.get("items").unwrap_or(&Value::Null), "items")?;
            let mut out = Vec::new();
            for (j, item) in items.iter().enumerate() {
                let ctx = ctx.at(&format!("items[{j}]"));
                out.push((ctx.place(), object_document(&ctx, item)?));
            }
            Ok(out)
        }
        _ => Ok(vec![(ctx.place(), object_document(ctx, v)?)]),
    }
}

/// A single Kubernetes-style object: dispatch on kind and apiVersion.
fn object_document(ctx: &Ctx, v: &Value) -> Result<Policy, Error> {
    let Value::Object(m) = v else {
        return Err(ctx.err(
            "",
            format!("expected a policy object, got {}; {SUPPORTED}", describe(v)),
        ));
    };
    let kind = m.get("kind").and_then(Value::as_str);
    let api = m.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let (kind, want_api) = match kind {
        Some("CiliumNetworkPolicy") => (PolicyKind::CiliumNetworkPolicy, "cilium.io/v2"),
        Some("CiliumClusterwideNetworkPolicy") => {
            (PolicyKind::CiliumClusterwideNetworkPolicy, "cilium.io/v2")
        }
        Some("NetworkPolicy") => (PolicyKind::NetworkPolicy, "networking.k8s.io/v1"),
        Some(k) => {
            return Err(ctx.err(
                "kind",
                format!("kind {k:?} (apiVersion {api:?}) is not a policy Pilus reads; {SUPPORTED}"),
            ))
        }
        None => {
            return Err(ctx.err(
                "kind",
                format!("missing (a string is required); {SUPPORTED}"),
            ))
        }
    };
    if api != want_api {
        return Err(ctx.err(
            "apiVersion",
            format!("{kind} needs apiVersion {want_api:?}, not {api:?}"),
        ));
    }
    match kind {
        PolicyKind::NetworkPolicy => knp::network_policy(ctx, v, m),
        _ => cnp::cilium_policy(ctx, v, m, kind),
    }
}

/// Where a document is, for error messages.
#[derive(Clone)]
pub(crate) struct Ctx {
    /// `policy.yaml: document 2`.
    document: String,
    /// Path of this policy inside the document (`items[3]` in a List), put
    /// before every field path.
    base: String,
    /// The policy's id once known (`CiliumNetworkPolicy default/allow-web`).
    name: Option<String>,
    /// The text's name (`policy.yaml`).
    pub source: String,
}

impl Ctx {
    /// The same document, now known by `id`.
    pub fn named(&self, id: &PolicyId) -> Ctx {
        Ctx {
            name: Some(id.to_string()),
            ..self.clone()
        }
    }

    fn at(&self, base: &str) -> Ctx {
        Ctx {
            base: key(&self.base, base),
            ..self.clone()
        }
    }

    /// `policy.yaml: document 2`, or `policy.yaml: document 2, items[3]`.
    pub fn place(&self) -> String {
        if self.base.is_empty() {
            self.document.clone()
        } else {
            format!("{}, {}", self.document, self.base)
        }
    }

    pub fn err(&self, field: &str, reason: impl Into<String>) -> Error {
        let field = key(&self.base, field);
        Error::Document {
            document: match &self.name {
                Some(n) => format!("{} ({n})", self.document),
                None => self.document.clone(),
            },
            field: if field.is_empty() {
                "(document)".into()
            } else {
                field
            },
            reason: reason.into(),
        }
    }

    /// Rejects fields other than `known`; `unsupported` are Cilium fields
    /// Pilus cannot implement, named with why. A typo must not silently
    /// drop a rule.
    pub fn fields(
        &self,
        m: &Object,
        path: &str,
        known: &[&str],
        unsupported: &[(&str, &str)],
    ) -> Result<(), Error> {
        for k in m.keys() {
            if let Some((_, what)) = unsupported.iter().find(|(u, _)| u == k) {
                return Err(self.err(
                    &key(path, k),
                    format!("{k} is not supported by Pilus ({what})"),
                ));
            }
            if !known.contains(&k.as_str()) {
                return Err(self.err(
                    &key(path, k),
                    format!("unknown field {k:?}; expected one of {}", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    pub fn object<'a>(&self, v: &'a Value, path: &str) -> Result<&'a Object, Error> {
        v.as_object()
            .ok_or_else(|| self.err(path, format!("expected an object, got {}", describe(v))))
    }

    pub fn array<'a>(&self, v: &'a Value, path: &str) -> Result<&'a [Value], Error> {
        v.as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| self.err(path, format!("expected a list, got {}", describe(v))))
    }

    pub fn string<'a>(&self, v: &'a Value, path: &str) -> Result<&'a str, Error> {
        v.as_str()
            .ok_or_else(|| self.err(path, format!("expected a string, got {}", describe(v))))
    }

    /// The optional list `m[name]` with each element's path; `None` if absent
    /// or null (as Kubernetes reads null).
    pub fn list<'a>(
        &self,
        m: &'a Object,
        path: &str,
        name: &str,
    ) -> Result<Option<Vec<(String, &'a Value)>>, Error> {
        let path = key(path, name);
        match get(m, name) {
            None => Ok(None),
            Some(v) => Ok(Some(
                self.array(v, &path)?
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{path}[{i}]"), v))
                    .collect(),
            )),
        }
    }

    /// `metadata.name` (required) and `metadata.namespace` (if any); other
    /// metadata is Kubernetes bookkeeping and ignored.
    pub fn metadata(&self, doc: &Object) -> Result<(String, Option<String>), Error> {
        let meta = self.object(get(doc, "metadata").unwrap_or(&Value::Null), "metadata")?;
        let name = match get(meta, "name") {
            Some(v) => self.string(v, "metadata.name")?,
            None => "",
        };
        if name.is_empty() {
            return Err(self.err("metadata.name", "missing; every policy needs a name"));
        }
        // Names are how policies are listed and deleted (`/v1/policies/
        // {namespace}/{name}`): one the API cannot address could never be
        // deleted alone. Kubernetes' own rules: a DNS subdomain, and a DNS
        // label for the namespace.
        if !dns_name(name, 253, true) {
            return Err(self.err(
                "metadata.name",
                format!("{name:?} is not a Kubernetes object name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253)"),
            ));
        }
        let ns = match get(meta, "namespace") {
            Some(v) => Some(self.string(v, "metadata.namespace")?).filter(|s| !s.is_empty()),
            None => None,
        };
        if let Some(ns) = ns.filter(|ns| !dns_name(ns, 63, false)) {
            return Err(self.err(
                "metadata.namespace",
                format!("{ns:?} is not a Kubernetes namespace name (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63)"),
            ));
        }
        Ok((name.to_string(), ns.map(str::to_string)))
    }

    /// A label selector's requirements (`matchLabels`, `matchExpressions`),
    /// each key passed through `map_key` (Kubernetes policies give their keys
    /// a source and rewrite namespace keys).
    pub fn selector(
        &self,
        v: &Value,
        path: &str,
        map_key: &dyn Fn(&str) -> String,
    ) -> Result<Vec<Requirement>, Error> {
        let m = self.object(v, path)?;
        self.fields(m, path, &["matchLabels", "matchExpressions"], &[])?;
        let mut reqs = Vec::new();
        if let Some(labels) = get(m, "matchLabels") {
            let lpath = key(path, "matchLabels");
            for (k, v) in self.object(labels, &lpath)? {
                let kpath = key(&lpath, k);
                if k.is_empty() {
                    return Err(self.err(&kpath, "a label key must not be empty"));
                }
                reqs.push(Requirement::new(
                    &map_key(k),
                    Op::In,
                    vec![self.label_value(v, &kpath)?],
                ));
            }
        }
        for (epath, e) in self.list(m, path, "matchExpressions")?.unwrap_or_default() {
            reqs.push(self.expression(e, &epath, map_key)?);
        }
        Ok(reqs)
    }

    fn expression(
        &self,
        v: &Value,
        path: &str,
        map_key: &dyn Fn(&str) -> String,
    ) -> Result<Requirement, Error> {
        let m = self.object(v, path)?;
        self.fields(m, path, &["key", "operator", "values"], &[])?;
        let k = self.string(get(m, "key").unwrap_or(&Value::Null), &key(path, "key"))?;
        if k.is_empty() {
            return Err(self.err(&key(path, "key"), "a label key must not be empty"));
        }
        let opath = key(path, "operator");
        let op = match self.string(get(m, "operator").unwrap_or(&Value::Null), &opath)? {
            "In" => Op::In,
            "NotIn" => Op::NotIn,
            "Exists" => Op::Exists,
            "DoesNotExist" => Op::DoesNotExist,
            other => {
                return Err(self.err(
                    &opath,
                    format!("operator {other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                ))
            }
        };
        let values = self
            .list(m, path, "values")?
            .unwrap_or_default()
            .into_iter()
            .map(|(p, v)| self.label_value(v, &p))
            .collect::<Result<Vec<_>, _>>()?;
        match op {
            Op::In | Op::NotIn if values.is_empty() => Err(self.err(
                &key(path, "values"),
                format!("operator {op:?} needs at least one value"),
            )),
            Op::Exists | Op::DoesNotExist if !values.is_empty() => Err(self.err(
                &key(path, "values"),
                format!("operator {op:?} takes no values; remove them"),
            )),
            _ => Ok(Requirement::new(&map_key(k), op, values)),
        }
    }

    /// Label values are strings; YAML reads `version: 2` as a number, which
    /// Kubernetes rejects too.
    fn label_value(&self, v: &Value, path: &str) -> Result<String, Error> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(_) | Value::Bool(_) => Err(self.err(
                path,
                format!(
                    "label values are strings, got {}; quote it: \"{v}\"",
                    describe(v)
                ),
            )),
            _ => Err(self.err(
                path,
                format!("label values are strings, got {}", describe(v)),
            )),
        }
    }

    pub fn cidr(&self, v: &Value, path: &str) -> Result<Cidr, Error> {
        crate::cidr::parse(self.string(v, path)?).map_err(|e| self.err(path, e))
    }

    /// `{cidr, except: [..]}` (CiliumNetworkPolicy `fromCIDRSet`, Kubernetes
    /// `ipBlock`); the caller has checked the fields.
    pub fn cidr_set(&self, m: &Object, path: &str) -> Result<(Cidr, Vec<Cidr>), Error> {
        let cpath = key(path, "cidr");
        let cidr = self.cidr(get(m, "cidr").unwrap_or(&Value::Null), &cpath)?;
        let mut except = Vec::new();
        for (epath, e) in self.list(m, path, "except")?.unwrap_or_default() {
            let e = self.cidr(e, &epath)?;
            if !cidr.contains(&e) {
                return Err(self.err(
                    &epath,
                    format!("{e} is not inside cidr {cidr}; an exception must lie within the cidr"),
                ));
            }
            except.push(e);
        }
        Ok((cidr, except))
    }

    /// A port as written: a number, a string of digits, or a name.
    pub fn port_value<'a>(&self, v: &'a Value, path: &str) -> Result<PortValue<'a>, Error> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .map(PortValue::Number)
                .ok_or_else(|| self.err(path, format!("{n} is not a port number (0-65535)"))),
            Value::String(s) => Ok(s.parse().map_or(PortValue::Name(s), PortValue::Number)),
            _ => Err(self.err(path, format!("expected a port number, got {}", describe(v)))),
        }
    }
}

pub(crate) enum PortValue<'a> {
    Number(u64),
    Name(&'a str),
}

/// A DNS label (RFC 1123) of at most `max` bytes, or with `dots` a DNS
/// subdomain (labels joined by '.').
fn dns_name(s: &str, max: usize, dots: bool) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    s.len() <= max
        && if dots {
            s.split('.').all(label)
        } else {
            label(s)
        }
}

/// `m[name]`, with null read as absent.
pub(crate) fn get<'a>(m: &'a Object, name: &str) -> Option<&'a Value> {
    m.get(name).filter(|v| !v.is_null())
}

/// A field's path: `spec` + `ingress` → `spec.ingress`, `spec.ingress` +
/// `[0]` → `spec.ingress[0]`, `` + `spec` → `spec`.
pub(crate) fn key(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else if name.is_empty() || name.starts_with('[') {
        format!("{path}{name}")
    } else {
        format!("{path}.{name}")
    }
}

/// The requirement that a pod is in namespace `ns`.
pub(crate) fn in_namespace(ns: &str) -> Requirement {
    Requirement::new(
        &format!("{SOURCE_K8S}:{NAMESPACE_LABEL}"),
        Op::In,
        vec![ns.to_string()],
    )
}

pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A JSON value read from YAML, refusing a key repeated within one mapping:
/// serde_json's `Value` would silently keep the last, so a second `ingress:`
/// would drop the first one's rules.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(n.into())
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(n.into())
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{n} is not a finite number")))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(Strict(x)) = seq.next_element()? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Object::new();
        while let Some(k) = map.next_key::<String>()? {
            if m.contains_key(&k) {
                return Err(A::Error::custom(format!(
                    "key {k:?} appears twice in one mapping"
                )));
            }
            let Strict(v) = map.next_value()?;
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Rule, Selector};

    fn err(text: &str) -> String {
        parse_documents(text, "policy.yaml")
            .unwrap_err()
            .to_string()
    }

    /// Found by the API fuzz campaign (issue 15): a policy named " " was
    /// imported and could then never be deleted by name.
    #[test]
    fn names_follow_kubernetes_rules() {
        let doc = |name: &str, ns: &str| {
            format!(
                "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name:?}, namespace: {ns:?}}}\nspec: {{endpointSelector: {{}}}}\n"
            )
        };
        for bad in [
            " ",
            "a b",
            "Web",
            "-a",
            "a-",
            "a/b",
            "a..b",
            &"x".repeat(254),
        ] {
            assert!(err(&doc(bad, "shop")).contains("metadata.name"), "{bad:?}");
        }
        for bad in ["Shop", "a.b", "-x", &"x".repeat(64)] {
            assert!(
                err(&doc("p", bad)).contains("metadata.namespace"),
                "{bad:?}"
            );
        }
        for good in ["a", "web-1", "a.b.c", &"x".repeat(63)] {
            assert!(
                parse_documents(&doc(good, "shop-1"), "p.yaml").is_ok(),
                "{good:?}"
            );
        }
    }

    const CNP: &str = "
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow-web, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{}]
";

    const KNP: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all}
spec: {podSelector: {}}
";

    #[test]
    fn multi_document_yaml_skips_empty_documents() {
        let text = format!("---\n{CNP}---\n# nothing here\n---\n{KNP}---\n");
        let ps = parse_documents(&text, "policy.yaml").unwrap();
        let ids: Vec<String> = ps.iter().map(|p| p.id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "CiliumNetworkPolicy prod/allow-web",
                "NetworkPolicy default/deny-all"
            ]
        );
        assert_eq!(ps[1].source["metadata"]["name"], "deny-all");
        assert!(parse_documents("", "x").unwrap().is_empty());
    }

    #[test]
    fn json_is_read_too() {
        let text = r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "np", "namespace":	"a"}, "spec": {"podSelector": {}}}"#;
        let ps = parse_documents(text, "np.json").unwrap();
        assert_eq!(ps[0].id.namespace.as_deref(), Some("a"));
        let Rule { subject, .. } = &ps[0].rules[0];
        assert_eq!(*subject, Selector::new(vec![in_namespace("a")]));
    }

    #[test]
    fn kind_list_makes_each_item_a_document() {
        let text = "
apiVersion: v1
kind: List
items:
- {apiVersion: cilium.io/v2, kind: CiliumClusterwideNetworkPolicy, metadata: {name: a}, spec: {endpointSelector: {}}}
- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: b}, spec: {podSelector: {}}}
";
        let ps = parse_documents(text, "policy.yaml").unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].id.to_string(), "CiliumClusterwideNetworkPolicy a");
        assert_eq!(ps[1].source["metadata"]["name"], "b");
        let bad = text.replace("podSelector: {}", "podSelectr: {}");
        assert_eq!(
            err(&bad),
            "policy.yaml: document 1 (NetworkPolicy default/b): items[1].spec.podSelectr: \
             unknown field \"podSelectr\"; expected one of podSelector, policyTypes, ingress, egress"
        );
    }

    #[test]
    fn bad_document_is_named_by_number() {
        let text = format!(
            "{CNP}---\n{}",
            CNP.replace("allow-web", "other")
                .replace("{}", "{fromEndpoint: []}")
        );
        assert_eq!(
            err(&text),
            "policy.yaml: document 2 (CiliumNetworkPolicy prod/other): spec.ingress[0].fromEndpoint: \
             unknown field \"fromEndpoint\"; expected one of fromEndpoints, fromCIDR, fromCIDRSet, \
             fromEntities, toPorts, icmps"
        );
    }

    #[test]
    fn yaml_syntax_error_names_the_document() {
        let e = parse_documents(&format!("{CNP}---\nspec: [1\n"), "policy.yaml").unwrap_err();
        assert!(
            matches!(&e, Error::Syntax { document, .. } if document == "policy.yaml: document 2")
        );
        assert_eq!(e.to_string(), "policy.yaml: document 2: not YAML or JSON");
        let e = parse_documents("a: 1\na: 2\n", "p.yaml").unwrap_err();
        let Error::Syntax { source, .. } = e else {
            panic!("{e}")
        };
        assert!(
            source.to_string().contains("key \"a\" appears twice"),
            "{source}"
        );
    }

    /// Found by tests/parse_fuzz.rs: JSON allows DEL and C1 control
    /// characters unescaped in strings, YAML refuses them anywhere, so a
    /// valid JSON policy was "not YAML or JSON".
    #[test]
    fn json_with_a_raw_del_character_is_read_as_json() {
        let text = "{\"apiVersion\": \"networking.k8s.io/v1\", \"kind\": \"NetworkPolicy\",
            \"metadata\": {\"name\": \"np\", \"annotations\": {\"note\": \"a\u{7f}b\u{85}c\u{9f}\"}},
            \"spec\": {\"podSelector\": {}}}\n";
        let ps = parse_documents(text, "np.json").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ps[0].id.to_string(), "NetworkPolicy default/np");
        assert_eq!(
            ps[0].source["metadata"]["annotations"]["note"],
            "a\u{7f}b\u{85}c\u{9f}"
        );
        // Read as JSON, it is still checked for repeated keys and named as
        // document 1.
        let e = parse_documents("{\"a\": 1, \"a\": 2}", "p.json").unwrap_err();
        assert!(e.to_string().starts_with("p.json: document 1: "), "{e}");
        assert!(
            std::error::Error::source(&e)
                .unwrap()
                .to_string()
                .contains("key \"a\" appears twice"),
            "{e:?}"
        );
        let e = err("[{\"endpointSelector\": {}, \"ingress\": [{\"toPort\": []}]}]");
        assert!(e.starts_with("policy.yaml: document 1 (Rules policy.yaml[0]): [0].ingress[0].toPort: unknown field"), "{e}");
        // A `---` stream of JSON documents is still YAML, which wants such
        // characters escaped.
        let plain = text
            .replace("\u{7f}", "")
            .replace("\u{85}", "")
            .replace("\u{9f}", "");
        let two = format!("{plain}---\n{}", plain.replace("\"np\"", "\"np2\""));
        assert_eq!(parse_documents(&two, "np.json").unwrap().len(), 2);
        let two = format!("{text}---\n{plain}");
        assert_eq!(
            parse_documents(&two, "np.json").unwrap_err().to_string(),
            "np.json: document 1: not YAML or JSON"
        );
    }

    /// Found by tests/parse_fuzz.rs: serde_json's default float parser may
    /// be off by one unit in the last place, so a float kept in a JSON
    /// policy's source came out different from the same document in YAML
    /// (and from what was written).
    #[test]
    fn json_floats_are_read_exactly() {
        let doc = |x: &str| {
            format!(
                "{{\"apiVersion\": \"networking.k8s.io/v1\", \"kind\": \"NetworkPolicy\",
                 \"metadata\": {{\"name\": \"np\", \"x\": {x}}}, \"spec\": {{\"podSelector\": {{}}}}}}"
            )
        };
        let x = -8.457710652773364e-66_f64;
        let json = parse_documents(&doc(&x.to_string()), "np.json").unwrap();
        assert_eq!(json[0].source["metadata"]["x"].as_f64(), Some(x));
        // The same document as YAML (a `---` stream goes to the YAML reader).
        let yaml = parse_documents(&format!("---\n{}", doc(&x.to_string())), "np.yaml").unwrap();
        assert_eq!(json, yaml);
    }

    #[test]
    fn wrong_kind_or_api_version() {
        assert_eq!(
            err(&CNP.replace("cilium.io/v2", "cilium.io/v1")),
            "policy.yaml: document 1: apiVersion: CiliumNetworkPolicy needs apiVersion \"cilium.io/v2\", not \"cilium.io/v1\""
        );
        assert_eq!(
            err(&KNP.replace("networking.k8s.io/v1", "v1")),
            "policy.yaml: document 1: apiVersion: NetworkPolicy needs apiVersion \"networking.k8s.io/v1\", not \"v1\""
        );
        let e = err("apiVersion: apps/v1\nkind: Deployment\n");
        assert!(e.starts_with("policy.yaml: document 1: kind: kind \"Deployment\" (apiVersion \"apps/v1\") is not a policy"), "{e}");
        assert!(
            e.contains(
                "CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy (apiVersion cilium.io/v2)"
            ),
            "{e}"
        );
        assert!(err("metadata: {name: x}\n").contains("kind: missing"));
        assert!(err("just a string")
            .contains("(document): expected a policy object, got the string \"just a string\""));
    }

    #[test]
    fn duplicates_are_refused() {
        let e = parse_documents(&format!("{CNP}---\n{KNP}---\n{CNP}"), "policy.yaml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "policy \"CiliumNetworkPolicy prod/allow-web\" is defined twice in this import \
             (policy.yaml: document 1 and policy.yaml: document 3)"
        );
        // Same name in another namespace or of another kind is another policy.
        let other = CNP.replace("prod", "dev");
        assert_eq!(
            parse_documents(&format!("{CNP}---\n{other}"), "p")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn metadata_name_is_required() {
        assert_eq!(
            err(&KNP.replace("name: deny-all", "labels: {}")),
            "policy.yaml: document 1: metadata.name: missing; every policy needs a name"
        );
        assert_eq!(
            err(&KNP.replace("deny-all", "''")),
            "policy.yaml: document 1: metadata.name: missing; every policy needs a name"
        );
        assert!(err(&KNP.replace("name: deny-all", "name: 5"))
            .contains("metadata.name: expected a string, got the number 5"));
    }

    #[test]
    fn selectors() {
        let ctx = Ctx {
            document: "d".into(),
            base: String::new(),
            name: None,
            source: "s".into(),
        };
        let sel = |y: &str| {
            let v: Value = yaml_serde::from_str(y).unwrap();
            ctx.selector(&v, "sel", &|k| k.to_string())
                .map(Selector::new)
        };
        let r = |k: &str, op, vs: &[&str]| {
            Requirement::new(k, op, vs.iter().map(|s| s.to_string()).collect())
        };
        assert_eq!(
            sel("{matchLabels: {k8s:app: web}, matchExpressions: [{key: tier, operator: NotIn, values: [db]}, {key: x, operator: Exists}]}").unwrap(),
            Selector::new(vec![r("k8s:app", Op::In, &["web"]), r("tier", Op::NotIn, &["db"]), r("x", Op::Exists, &[])])
        );
        let e = |y: &str| sel(y).unwrap_err().to_string();
        assert_eq!(
            e("{matchLabels: {version: 2}}"),
            "d: sel.matchLabels.version: label values are strings, got the number 2; quote it: \"2\""
        );
        assert_eq!(
            e("{matchExpressions: [{key: a, operator: in, values: [b]}]}"),
            "d: sel.matchExpressions[0].operator: operator \"in\" is not one of In, NotIn, Exists, DoesNotExist"
        );
        assert!(
            e("{matchExpressions: [{key: a, operator: In}]}").contains("needs at least one value")
        );
        assert!(
            e("{matchExpressions: [{key: a, operator: Exists, values: [b]}]}")
                .contains("takes no values")
        );
        assert!(
            e("{matchExpressions: [{key: a, operator: In, values: [true]}]}").contains(
                "values[0]: label values are strings, got the boolean true; quote it: \"true\""
            )
        );
        assert!(e("{matchLabel: {a: b}}").contains(
            "unknown field \"matchLabel\"; expected one of matchLabels, matchExpressions"
        ));
        assert!(e("[a]").contains("sel: expected an object, got a list"));
    }
}
