//! The CNI protocol (spec 1.0.0 and 1.1.0, with 0.3.x/0.4.0 results for
//! older runtimes): the environment a runtime sets, the network
//! configuration on stdin, version negotiation, and the result and error
//! objects printed on stdout. Everything is checked before the plugin acts,
//! so malformed input changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::{collections::BTreeMap, net::Ipv4Addr};

/// The versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest, answered when a request names none.
pub const LATEST: &str = "1.1.0";
/// Where pilusd listens unless the network configuration says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/pilus/pilus.sock";

/// The spec's well-known error codes, and Pilus's own (100 and up).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// The agent refused the request (its message says why).
    pub const AGENT_REFUSED: u32 = 100;
    /// CHECK found the interface not as ADD left it.
    pub const CHECK_FAILED: u32 = 101;
    /// The container's network namespace is not one an ADD can use as it
    /// is (another interface already routes it).
    pub const CONTAINER_CONFLICT: u32 = 102;
}

/// A CNI error object: printed as JSON on stdout, with a non-zero exit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({ "cniVersion": version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

/// The `CNI_*` variables, validated for the command they came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// Empty for DEL when the namespace is gone, and for GC/STATUS.
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` pairs, validated.
    pub args: BTreeMap<String, String>,
}

/// `CNI_ARGS` keys understood here; others need `IgnoreUnknown=1`.
const KNOWN_ARGS: &[&str] = &[
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

fn invalid_env(msg: String) -> CniError {
    CniError::new(code::INVALID_ENV, msg)
}

impl Env {
    /// Reads the environment through `get` (tests pass a map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let raw = get("CNI_COMMAND").unwrap_or_default();
        let command = match raw.as_str() {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "" => {
                return Err(invalid_env(
                    "CNI_COMMAND is not set: pilus-cni is a CNI plugin, run by a container runtime (ADD, DEL, CHECK, STATUS, GC or VERSION)".into(),
                ))
            }
            other => {
                return Err(invalid_env(format!(
                    "CNI_COMMAND={other:?} is not a CNI command (ADD, DEL, CHECK, STATUS, GC, VERSION)"
                )))
            }
        };
        let attach = matches!(command, Command::Add | Command::Del | Command::Check);
        let need = |name: &str| -> Result<String, CniError> {
            match get(name) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(invalid_env(format!("{name} is required for {raw}"))),
            }
        };
        let (container_id, ifname) = if attach {
            (need("CNI_CONTAINERID")?, need("CNI_IFNAME")?)
        } else {
            (String::new(), String::new())
        };
        let netns = if matches!(command, Command::Add | Command::Check) {
            need("CNI_NETNS")?
        } else {
            get("CNI_NETNS").unwrap_or_default()
        };
        if attach {
            let ok = container_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
            if !ok {
                return Err(invalid_env(format!(
                    "CNI_CONTAINERID={container_id:?} may only contain letters, digits, '_', '.' and '-'"
                )));
            }
            pilus_netlink::valid_ifname(&ifname)
                .map_err(|e| invalid_env(format!("CNI_IFNAME: {e}")))?;
        }
        let args = parse_args(&get("CNI_ARGS").unwrap_or_default())?;
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }
}

/// `K=V;K2=V2`, as the conventions define `CNI_ARGS`.
pub fn parse_args(raw: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for pair in raw.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            invalid_env(format!(
                "CNI_ARGS: {pair:?} is not KEY=VALUE (pairs are separated by ';')"
            ))
        })?;
        out.insert(k.to_string(), v.to_string());
    }
    let ignore_unknown = out
        .get("IgnoreUnknown")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"));
    if !ignore_unknown {
        if let Some(k) = out.keys().find(|k| !KNOWN_ARGS.contains(&k.as_str())) {
            return Err(invalid_env(format!(
                "CNI_ARGS: unknown key {k:?} (known: {}; set IgnoreUnknown=1 to pass others)",
                KNOWN_ARGS.join(", ")
            )));
        }
    }
    Ok(out)
}

/// A label as runtimes pass them in `args.cni.labels`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Label {
    pub key: String,
    pub value: String,
}

/// A container attachment GC must keep.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// How long after its creation an endpoint is safe from GC unless the
/// configuration says otherwise. A runtime computes its list of valid
/// attachments before it calls GC, so an ADD that finishes in between is
/// missing from the list although it is very much in use.
pub const DEFAULT_GC_GRACE_SECONDS: u64 = 60;

/// The network configuration on stdin (one plugin of a conflist, with
/// `name` and `cniVersion` filled in by the runtime).
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    /// The agent's socket.
    pub socket: String,
    pub labels: Vec<Label>,
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` exactly as given (GC only): checked by
    /// [`NetConf::gc_attachments`], never read as a default.
    pub valid_attachments: Option<Value>,
    /// `gcGraceSeconds`: endpoints younger than this survive GC.
    pub gc_grace_seconds: u64,
    /// `runtimeLabels`: whether ADD reads the container's labels from the
    /// runtime's metadata ([`crate::runtime`]).
    pub runtime_labels: crate::runtime::Mode,
}

fn bad_config(msg: String) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

fn version_key(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let key = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(key)
}

/// Checks a requested version against [`SUPPORTED_VERSIONS`].
pub fn check_version(v: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        return Ok(());
    }
    let msg = match version_key(v) {
        Some(_) => format!(
            "cniVersion {v:?} is not supported by pilus-cni (supported: {})",
            SUPPORTED_VERSIONS.join(", ")
        ),
        None => format!("cniVersion {v:?} is not a version (expected e.g. \"1.0.0\")"),
    };
    Err(CniError::new(code::INCOMPATIBLE_VERSION, msg))
}

impl NetConf {
    /// Parses stdin. `{}` fields the plugin does not know are allowed (a
    /// conflist carries runtime-specific keys), but the ones it uses are
    /// checked for type.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("the network configuration on stdin is not valid JSON: {e}"),
            )
        })?;
        let obj = v.as_object().ok_or_else(|| {
            CniError::new(
                code::DECODE,
                "the network configuration on stdin must be a JSON object",
            )
        })?;
        let string = |key: &str| -> Result<Option<String>, CniError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(bad_config(format!("{key} must be a string, not {other}"))),
            }
        };
        let cni_version = string("cniVersion")?.ok_or_else(|| {
            bad_config("cniVersion is missing from the network configuration".into())
        })?;
        check_version(&cni_version)?;
        let name = string("name")?
            .ok_or_else(|| bad_config("name is missing from the network configuration".into()))?;
        let name_ok = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if !name_ok {
            return Err(bad_config(format!(
                "network name {name:?} must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
            )));
        }
        let socket = string("socket")?.unwrap_or_else(|| DEFAULT_SOCKET.to_string());
        if !socket.starts_with('/') {
            return Err(bad_config(format!(
                "socket {socket:?} must be an absolute path to pilusd's API socket"
            )));
        }
        let labels = match obj
            .get("args")
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("labels"))
        {
            None | Some(Value::Null) => Vec::new(),
            Some(l) => serde_json::from_value::<Vec<Label>>(l.clone()).map_err(|e| {
                bad_config(format!(
                    "args.cni.labels must be a list of {{\"key\": ..., \"value\": ...}}: {e}"
                ))
            })?,
        };
        for l in &labels {
            if l.key.is_empty() || l.key.contains(['=', ';']) {
                return Err(bad_config(format!(
                    "args.cni.labels: key {:?} must be non-empty and contain no '=' or ';'",
                    l.key
                )));
            }
        }
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(p @ Value::Object(_)) => Some(p.clone()),
            Some(other) => {
                return Err(bad_config(format!(
                    "prevResult must be an object, not {other}"
                )))
            }
        };
        let gc_grace_seconds = match obj.get("gcGraceSeconds") {
            None | Some(Value::Null) => DEFAULT_GC_GRACE_SECONDS,
            Some(v) => v
                .as_u64()
                .filter(|s| *s <= MAX_GC_GRACE_SECONDS)
                .ok_or_else(|| {
                    bad_config(format!(
                        "gcGraceSeconds must be a whole number of seconds from 0 to {MAX_GC_GRACE_SECONDS}, not {v}"
                    ))
                })?,
        };
        let runtime_labels = match string("runtimeLabels")? {
            None => crate::runtime::Mode::default(),
            Some(m) => crate::runtime::Mode::parse(&m).ok_or_else(|| {
                bad_config(format!(
                    "runtimeLabels {m:?} is not one of {}",
                    crate::runtime::Mode::NAMES.join(", ")
                ))
            })?,
        };
        Ok(NetConf {
            cni_version,
            name,
            socket,
            labels,
            prev_result,
            valid_attachments: obj.get("cni.dev/valid-attachments").cloned(),
            gc_grace_seconds,
            runtime_labels,
        })
    }

    /// The attachments GC must keep. GC deletes everything of this network
    /// that is not listed, so the list is required and checked whole: a
    /// missing key, `null` or a malformed entry is an error, never read as
    /// "nothing is valid" (the most destructive reading of a bad request).
    /// GC exists from CNI 1.1.0 on; an older configuration cannot ask for it.
    pub fn gc_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        if version_key(&self.cni_version) < Some((1, 1, 0)) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "GC needs cniVersion 1.1.0 or later; this configuration says {:?}, so nothing was deleted",
                    self.cni_version
                ),
            ));
        }
        let refuse = |why: String| {
            bad_config(format!(
                "GC: {why}; nothing was deleted (cni.dev/valid-attachments must list every attachment still in use, as [{{\"containerID\": ..., \"ifname\": ...}}])"
            ))
        };
        let list = match &self.valid_attachments {
            None => return Err(refuse("cni.dev/valid-attachments is missing".into())),
            Some(Value::Null) => return Err(refuse("cni.dev/valid-attachments is null".into())),
            Some(Value::Array(list)) => list,
            Some(other) => {
                return Err(refuse(format!(
                    "cni.dev/valid-attachments must be a list, not {other}"
                )))
            }
        };
        list.iter()
            .enumerate()
            .map(|(i, a)| {
                let field = |k: &str| match a.get(k) {
                    Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                    _ => Err(refuse(format!(
                        "cni.dev/valid-attachments[{i}] = {a} needs a non-empty string {k:?}"
                    ))),
                };
                if !a.is_object() {
                    return Err(refuse(format!(
                        "cni.dev/valid-attachments[{i}] must be an object, not {a}"
                    )));
                }
                Ok(Attachment {
                    container_id: field("containerID")?,
                    ifname: field("ifname")?,
                })
            })
            .collect()
    }
}

/// The longest `gcGraceSeconds` accepted (a day): a larger value is more
/// likely a unit mistake than a wish.
pub const MAX_GC_GRACE_SECONDS: u64 = 86_400;

/// What ADD made, rendered per the requested version by [`result_json`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub host_ifname: String,
    pub host_mac: String,
    pub ifname: String,
    pub mac: String,
    pub sandbox: String,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

/// The ADD result: the host interface, the pod interface (with its
/// sandbox), the /32 address on the pod interface, the default route.
pub fn result_json(version: &str, a: &Attached) -> Value {
    let mut ip = json!({
        "address": format!("{}/32", a.ip),
        "gateway": a.gateway.to_string(),
        "interface": 1,
    });
    if version.starts_with("0.") {
        // 0.3.x and 0.4.0 name the family in each IP entry.
        ip["version"] = json!("4");
    }
    json!({
        "cniVersion": version,
        "interfaces": [
            { "name": a.host_ifname, "mac": a.host_mac },
            { "name": a.ifname, "mac": a.mac, "sandbox": a.sandbox },
        ],
        "ips": [ip],
        "routes": [{ "dst": "0.0.0.0/0", "gw": a.gateway.to_string() }],
        "dns": {},
    })
}

/// The VERSION answer: echoes the caller's version if it is one we speak.
pub fn version_json(requested: Option<&str>) -> Value {
    let v = requested
        .filter(|v| SUPPORTED_VERSIONS.contains(v))
        .unwrap_or(LATEST);
    json!({ "cniVersion": v, "supportedVersions": SUPPORTED_VERSIONS })
}

/// The addresses a previous result lists (for CHECK).
pub fn prev_result_ips(prev: &Value) -> Vec<String> {
    prev.get("ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|i| i.get("address").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_vars(|k| m.get(k).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc-123"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;FOO=bar",
        ),
    ];

    #[test]
    fn reads_the_environment() {
        let e = env(ADD).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.args["K8S_POD_NAMESPACE"], "shop");
        assert_eq!(e.args["K8S_POD_NAME"], "web-0");
    }

    #[test]
    fn refuses_bad_environments_with_code_4() {
        let without = |k: &str| -> Vec<(&str, &str)> {
            ADD.iter().copied().filter(|(n, _)| *n != k).collect()
        };
        for missing in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let e = env(&without(missing)).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV, "{missing}");
            assert!(e.msg.contains(missing), "{}", e.msg);
        }
        let mut bad = without("CNI_COMMAND");
        bad.push(("CNI_COMMAND", "ATTACH"));
        assert_eq!(env(&bad).unwrap_err().code, code::INVALID_ENV);
        let mut bad = without("CNI_IFNAME");
        bad.push(("CNI_IFNAME", "a-very-long-interface"));
        assert!(env(&bad).unwrap_err().msg.contains("CNI_IFNAME"));
        let mut bad = without("CNI_CONTAINERID");
        bad.push(("CNI_CONTAINERID", "a/b"));
        assert!(env(&bad).unwrap_err().msg.contains("CNI_CONTAINERID"));
        let mut bad = without("CNI_ARGS");
        bad.push(("CNI_ARGS", "FOO=bar"));
        assert!(env(&bad).unwrap_err().msg.contains("IgnoreUnknown"));
        let mut bad = without("CNI_ARGS");
        bad.push(("CNI_ARGS", "novalue"));
        assert_eq!(env(&bad).unwrap_err().code, code::INVALID_ENV);
    }

    #[test]
    fn del_needs_no_netns_and_version_needs_nothing() {
        let del: Vec<_> = ADD
            .iter()
            .copied()
            .filter(|(n, _)| *n != "CNI_NETNS")
            .map(|(k, v)| {
                if k == "CNI_COMMAND" {
                    (k, "DEL")
                } else {
                    (k, v)
                }
            })
            .collect();
        assert_eq!(env(&del).unwrap().netns, "");
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
        assert_eq!(
            env(&[("CNI_COMMAND", "STATUS")]).unwrap().command,
            Command::Status
        );
        assert_eq!(env(&[("CNI_COMMAND", "GC")]).unwrap().command, Command::Gc);
    }

    #[test]
    fn parses_a_network_configuration() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"pilus","type":"pilus-cni","socket":"/run/x.sock",
                "args":{"cni":{"labels":[{"key":"app","value":"web"}]}},"runtimeConfig":{}}"#,
        )
        .unwrap();
        assert_eq!(c.name, "pilus");
        assert_eq!(c.socket, "/run/x.sock");
        assert_eq!(
            c.labels,
            vec![Label {
                key: "app".into(),
                value: "web".into()
            }]
        );
        let d = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","type":"pilus-cni"}"#).unwrap();
        assert_eq!(d.socket, DEFAULT_SOCKET);
        assert_eq!(d.runtime_labels, crate::runtime::Mode::Auto);
        for (v, m) in [
            ("off", crate::runtime::Mode::Off),
            ("containerd", crate::runtime::Mode::Containerd),
            ("auto", crate::runtime::Mode::Auto),
        ] {
            let c = NetConf::parse(
                format!(r#"{{"cniVersion":"1.0.0","name":"n","runtimeLabels":"{v}"}}"#).as_bytes(),
            )
            .unwrap();
            assert_eq!(c.runtime_labels, m);
        }
    }

    #[test]
    fn refuses_bad_configurations_with_spec_codes() {
        let cases: &[(&[u8], u32, &str)] = &[
            (b"{not json", code::DECODE, "not valid JSON"),
            (b"[1]", code::DECODE, "JSON object"),
            (br#"{"name":"n"}"#, code::INVALID_CONFIG, "cniVersion is missing"),
            (br#"{"cniVersion":"9.9.9","name":"n"}"#, code::INCOMPATIBLE_VERSION, "not supported"),
            (br#"{"cniVersion":"one","name":"n"}"#, code::INCOMPATIBLE_VERSION, "not a version"),
            (br#"{"cniVersion":"1.0.0"}"#, code::INVALID_CONFIG, "name is missing"),
            (br#"{"cniVersion":"1.0.0","name":"bad name"}"#, code::INVALID_CONFIG, "network name"),
            (br#"{"cniVersion":"1.0.0","name":"n","socket":"rel.sock"}"#, code::INVALID_CONFIG, "absolute"),
            (br#"{"cniVersion":"1.0.0","name":"n","socket":5}"#, code::INVALID_CONFIG, "must be a string"),
            (br#"{"cniVersion":"1.0.0","name":"n","args":{"cni":{"labels":["app=web"]}}}"#, code::INVALID_CONFIG, "labels"),
            (br#"{"cniVersion":"1.0.0","name":"n","args":{"cni":{"labels":[{"key":"","value":"x"}]}}}"#, code::INVALID_CONFIG, "labels"),
            (br#"{"cniVersion":"1.0.0","name":"n","prevResult":[]}"#, code::INVALID_CONFIG, "prevResult"),
            (br#"{"cniVersion":"1.0.0","name":"n","runtimeLabels":"podman"}"#, code::INVALID_CONFIG, "runtimeLabels"),
            (br#"{"cniVersion":"1.0.0","name":"n","runtimeLabels":true}"#, code::INVALID_CONFIG, "runtimeLabels"),
        ];
        for (input, code, needle) in cases {
            let e = NetConf::parse(input).unwrap_err();
            assert_eq!(e.code, *code, "{}", String::from_utf8_lossy(input));
            assert!(
                e.msg.contains(needle),
                "{} -> {}",
                String::from_utf8_lossy(input),
                e.msg
            );
        }
    }

    /// Issue 15: a GC whose configuration lacked `cni.dev/valid-attachments`
    /// deleted every pod of the network. Each malformed list is refused.
    #[test]
    fn gc_without_a_well_formed_list_is_refused() {
        let conf = |extra: &str| {
            NetConf::parse(format!(r#"{{"cniVersion":"1.1.0","name":"n"{extra}}}"#).as_bytes())
                .unwrap()
        };
        let cases: &[(&str, u32, &str)] = &[
            ("", code::INVALID_CONFIG, "is missing"),
            (
                r#","cni.dev/valid-attachments":null"#,
                code::INVALID_CONFIG,
                "is null",
            ),
            (
                r#","cni.dev/valid-attachments":{}"#,
                code::INVALID_CONFIG,
                "must be a list",
            ),
            (
                r#","cni.dev/valid-attachments":"a""#,
                code::INVALID_CONFIG,
                "must be a list",
            ),
            (
                r#","cni.dev/valid-attachments":[1]"#,
                code::INVALID_CONFIG,
                "must be an object",
            ),
            (
                r#","cni.dev/valid-attachments":[{"containerID":"a"}]"#,
                code::INVALID_CONFIG,
                "\"ifname\"",
            ),
            (
                r#","cni.dev/valid-attachments":[{"containerID":"","ifname":"eth0"}]"#,
                code::INVALID_CONFIG,
                "\"containerID\"",
            ),
            (
                r#","cni.dev/valid-attachments":[{"containerID":5,"ifname":"eth0"}]"#,
                code::INVALID_CONFIG,
                "\"containerID\"",
            ),
        ];
        for (extra, code, needle) in cases {
            let e = conf(extra).gc_attachments().unwrap_err();
            assert_eq!(e.code, *code, "{extra}");
            assert!(e.msg.contains(needle), "{extra} -> {}", e.msg);
            assert!(e.msg.contains("nothing was deleted"), "{}", e.msg);
        }
        let ok =
            conf(r#","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0","extra":1}]"#);
        assert_eq!(ok.gc_attachments().unwrap().len(), 1);
        let empty = conf(r#","cni.dev/valid-attachments":[]"#);
        assert_eq!(empty.gc_attachments().unwrap(), vec![]);
        for old in ["0.4.0", "1.0.0"] {
            let c = NetConf::parse(
                format!(r#"{{"cniVersion":"{old}","name":"n","cni.dev/valid-attachments":[]}}"#)
                    .as_bytes(),
            )
            .unwrap();
            let e = c.gc_attachments().unwrap_err();
            assert_eq!(e.code, code::INCOMPATIBLE_VERSION, "{old}");
            assert!(e.msg.contains("1.1.0"), "{}", e.msg);
        }
        assert_eq!(conf("").gc_grace_seconds, DEFAULT_GC_GRACE_SECONDS);
        assert_eq!(conf(r#","gcGraceSeconds":0"#).gc_grace_seconds, 0);
        for bad in ["-1", "1.5", "\"10s\"", "86401"] {
            let e = NetConf::parse(
                format!(r#"{{"cniVersion":"1.1.0","name":"n","gcGraceSeconds":{bad}}}"#).as_bytes(),
            )
            .unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{bad}");
        }
    }

    #[test]
    fn negotiates_versions() {
        assert_eq!(version_json(Some("0.4.0"))["cniVersion"], "0.4.0");
        assert_eq!(version_json(Some("1.0.0"))["cniVersion"], "1.0.0");
        assert_eq!(version_json(None)["cniVersion"], LATEST);
        let all = version_json(None)["supportedVersions"].clone();
        for v in ["0.4.0", "1.0.0", "1.1.0"] {
            assert!(all.as_array().unwrap().iter().any(|x| x == v));
        }
    }

    #[test]
    fn renders_results_per_version() {
        let a = Attached {
            host_ifname: "lxc0".into(),
            host_mac: "02:00:00:00:00:01".into(),
            ifname: "eth0".into(),
            mac: "02:00:00:00:00:02".into(),
            sandbox: "/run/netns/x".into(),
            ip: Ipv4Addr::new(198, 18, 0, 5),
            gateway: Ipv4Addr::new(198, 18, 0, 1),
        };
        let r = result_json("1.0.0", &a);
        assert_eq!(r["ips"][0]["address"], "198.18.0.5/32");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(r["interfaces"][1]["sandbox"], "/run/netns/x");
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(result_json("0.4.0", &a)["ips"][0]["version"], "4");
        assert_eq!(prev_result_ips(&r), vec!["198.18.0.5/32".to_string()]);
    }

    #[test]
    fn error_objects() {
        let e = CniError::new(code::TRY_AGAIN_LATER, "agent down").details("connect: refused");
        let j = e.to_json("1.0.0");
        assert_eq!(j["code"], 11);
        assert_eq!(j["msg"], "agent down");
        assert_eq!(j["details"], "connect: refused");
        assert!(CniError::new(1, "x")
            .to_json("1.0.0")
            .get("details")
            .is_none());
    }
}
