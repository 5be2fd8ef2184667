//! Tier 3, fuzzing (issue 15): the agent's API request bodies, and the HTTP
//! around them, against a real pilusd with two pods and a policy. Each case
//! starts from a valid request of one route and bends it (a field dropped,
//! retyped, made hostile; sometimes the raw bytes of the request), sends it
//! over the unix socket as raw bytes, and checks:
//!
//! - the agent answers (no hang, no crash) with a status line;
//! - an error is a 4xx with a JSON `{"error": "..."}` that says something
//!   (never a 5xx: bad input is the client's fault);
//! - a refused request changes nothing: endpoints, identities, policies,
//!   namespaces and the datapath's maps (through the API) are byte-for-byte
//!   what they were. An accepted one is undone (endpoint deleted, policy
//!   deleted) before the next case.
//!
//! At the end `pilus bpf … -o json` and `pilus endpoint list -o json` must
//! print what they printed before the campaign.
//!
//! `PILUS_FUZZ_CASES` (default 2,000) and `PILUS_FUZZ_SEED` (default 1)
//! set the run; a failure names its seed, so `PILUS_FUZZ_SEED=<seed>
//! PILUS_FUZZ_CASES=1` replays it alone. Needs root; fails without it.

mod common;

use common::{pilus_cli, Cluster};
use pilus_mutate::{mutate, mutate_bytes, Rng, HOSTILE_STRINGS};
use serde_json::{json, Value};
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    process::Command,
    time::Duration,
};

const POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;

/// A policy the campaign imports (then deletes) when a mutation leaves it
/// valid: a CIDR rule and an egress rule reach more of the engine.
const POLICY_JSON: &str = r#"{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy",
 "metadata":{"name":"fz","namespace":"shop"},
 "spec":{"endpointSelector":{"matchLabels":{"app":"client"}},
  "egress":[{"toCIDR":["198.19.7.0/24"],"toPorts":[{"ports":[{"port":"81","protocol":"UDP"}]}]}]}}"#;

/// [`POLICY`] under another name, as JSON.
const POLICY_WEB_JSON: &str = r#"{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy",
 "metadata":{"name":"web2","namespace":"shop"},
 "spec":{"endpointSelector":{"matchLabels":{"app":"web"}},
  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}],
   "toPorts":[{"ports":[{"port":"80","protocol":"TCP"}]}]}]}}"#;

struct Answer {
    status: u16,
    body: String,
}

/// Sends `raw` on a fresh connection, half-closes, reads the answer.
fn send_raw(c: &Cluster, raw: &[u8]) -> Result<Answer, String> {
    let mut s = UnixStream::connect(c.socket()).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // The server may answer (and close) before reading everything sent.
    let _ = s.write_all(raw);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    if let Err(e) = s.read_to_end(&mut out) {
        if out.is_empty() {
            return Err(format!("reading the answer: {e}"));
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in the answer {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    // The connection is keep-alive unless the request said otherwise, and
    // a bent request may not say so any more: bytes after a body that is
    // shorter than what was sent are the next request, with an answer of
    // their own. This request's answer is the first one, as long as its
    // Content-Length says.
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let body = match length {
        Some(n) => body
            .get(..n)
            .ok_or_else(|| format!("the answer's body is shorter than {n} bytes: {body:?}"))?,
        None => body,
    };
    Ok(Answer {
        status,
        body: body.to_string(),
    })
}

fn request(method: &str, target: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(b) = body {
        r.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    bytes
}

fn get(c: &Cluster, path: &str) -> String {
    let a = send_raw(c, &request("GET", path, None)).expect("GET");
    assert_eq!(a.status, 200, "GET {path}: {}", a.body);
    a.body
}

/// Everything a refused request must leave as it was, as the API shows it.
fn state(c: &Cluster) -> String {
    let mut status: Value = serde_json::from_str(&get(c, "/v1/status")).unwrap();
    status.as_object_mut().unwrap().remove("uptime_seconds");
    let mut s = status.to_string();
    for p in [
        "/v1/endpoints",
        "/v1/identities",
        "/v1/policies",
        "/v1/namespaces",
        "/v1/bpf/endpoints",
        "/v1/bpf/ipcache",
        "/v1/bpf/policy",
    ] {
        s.push('\n');
        s.push_str(&get(c, p));
    }
    s
}

/// What the CLI prints of the datapath and the endpoints.
fn cli_state(c: &Cluster) -> String {
    let mut s = String::new();
    let ids: Vec<String> = c.pods.iter().map(|p| p.ep.id.to_string()).collect();
    let per_pod: Vec<[&str; 4]> = ids.iter().map(|id| ["bpf", "policy", "get", id]).collect();
    for args in per_pod.iter().map(|a| &a[..]).chain([
        &["bpf", "ipcache", "list"][..],
        &["bpf", "endpoint", "list"],
        &["endpoint", "list"],
        &["identity", "list"],
    ]) {
        let out = Command::new(pilus_cli())
            .arg("--socket")
            .arg(c.socket())
            .args(args)
            .args(["-o", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "pilus {args:?}: {out:?}");
        s.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    s
}

/// One case: a request and how to undo it if the agent accepts it.
struct Case {
    what: String,
    raw: Vec<u8>,
    /// The bytes were cut or bent: the request may be incomplete, and a
    /// server may close without answering one it never fully received.
    bent: bool,
}

fn case(c: &Cluster, rng: &mut Rng) -> Case {
    let web = &c.pods[0];
    let (method, target, mut body): (&str, String, Option<Value>) = match rng.below(9) {
        0 | 1 => (
            "PUT",
            "/v1/endpoints".into(),
            Some(json!({
                // An existing attachment: the valid form is an idempotent
                // retry that changes nothing.
                "container_id": web.ep.container_id,
                "netns": web.ep.netns,
                "ifname": "eth0",
                "namespace": web.namespace,
                "pod_name": web.app,
                "labels": ["app=web", "k8s:tier=fz"],
            })),
        ),
        2 | 3 => (
            "POST",
            "/v1/policies".into(),
            Some(json!({
                "files": [{"name": "fz.yaml",
                           "text": *rng.pick(&[POLICY_JSON, POLICY_WEB_JSON])}],
            })),
        ),
        4 => (
            "POST",
            "/v1/policy/trace".into(),
            Some(json!({"src": "shop/client", "dst": "shop/web", "port": 80, "protocol": "TCP"})),
        ),
        5 => (
            "PUT",
            // A namespace without pods: relabelling it is harmless, and
            // a mutation that relabels `shop` instead is a bug.
            "/v1/namespaces/fz-empty/labels".into(),
            Some(json!({"namespace": "fz-empty", "labels": ["team=fz"]})),
        ),
        6 => (
            "POST",
            "/v1/cni/gc".into(),
            Some(json!({"network": "fz", "valid": [], "keep_created_since_unix_ms": 0})),
        ),
        7 => {
            let seg = rng
                .pick(HOSTILE_STRINGS)
                .replace(['/', ' ', '\0', '\\'], "_");
            let target = match rng.below(6) {
                0 => format!("/v1/endpoints/{seg}"),
                1 => format!("/v1/policies/{seg}"),
                2 => format!("/v1/identities/{seg}"),
                3 => format!("/v1/bpf/policy/{seg}"),
                4 => format!("/v1/policies?all={seg}"),
                _ => format!("/v1/{seg}"),
            };
            let method = *rng.pick(&["GET", "DELETE", "POST", "PATCH"]);
            (method, target, None)
        }
        _ => (
            "GET",
            format!(
                "/v1/policy/revision?wait={}&timeout_ms={}",
                rng.pick(&["0", "1", "x", "18446744073709551615"]),
                rng.pick(&["0", "1", "-5", "abc"])
            ),
            None,
        ),
    };
    if let Some(b) = body.as_mut() {
        for _ in 0..=rng.below(3) {
            if rng.chance(1, 3) {
                // Reach into the policy text itself.
                if let Some(t) = b.pointer_mut("/files/0/text") {
                    // The bases are JSON (which is also YAML); an earlier
                    // round may have made the text something else.
                    if let Some(Ok(mut doc)) = t.as_str().map(serde_json::from_str::<Value>) {
                        mutate(&mut doc, rng);
                        *t = Value::String(doc.to_string());
                        continue;
                    }
                }
            }
            mutate(b, rng);
        }
    }
    let bytes = body.as_ref().map(|b| serde_json::to_vec(b).unwrap());
    let mut raw = request(method, &target, bytes.as_deref());
    let bent = rng.chance(1, 10);
    if bent {
        for _ in 0..=rng.below(2) {
            mutate_bytes(&mut raw, rng);
        }
    }
    Case {
        bent,
        what: format!(
            "{method} {target} {}",
            body.map(|b| b.to_string()).unwrap_or_default()
        ),
        raw,
    }
}

/// Undoes what an accepted request made, so the next case starts from the
/// same maps.
fn undo(c: &Cluster, answer: &Answer) {
    let Ok(v) = serde_json::from_str::<Value>(&answer.body) else {
        return;
    };
    if v["created"] == json!(true) {
        let id = v["endpoint"]["id"].as_u64().unwrap();
        let a = send_raw(c, &request("DELETE", &format!("/v1/endpoints/{id}"), None)).unwrap();
        assert_eq!(a.status, 200, "undo endpoint {id}: {}", a.body);
    }
    if let Some(names) = v["policies"].as_array() {
        // Named as "<Kind> <namespace>/<name>"; deleted by the last part.
        for n in names
            .iter()
            .filter_map(Value::as_str)
            .map(|n| n.rsplit(' ').next().unwrap_or(n))
        {
            if n == "shop/web" {
                continue;
            }
            let a = send_raw(c, &request("DELETE", &format!("/v1/policies/{n}"), None)).unwrap();
            assert_eq!(a.status, 200, "undo policy {n}: {}", a.body);
        }
    }
}

#[test]
fn api_request_bodies_never_half_apply() {
    let mut c = Cluster::new("fzapi", "a", &[]);
    c.add_pod("shop", "web");
    c.add_pod("shop", "client");
    c.import(POLICY).unwrap();
    let cases: u64 = std::env::var("PILUS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let first: u64 = std::env::var("PILUS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let cli_before = cli_state(&c);
    let mut baseline = state(&c);
    let (mut accepted, mut refused) = (0, 0);
    for seed in first..first + cases {
        let mut rng = Rng::new(seed);
        let k = case(&c, &mut rng);
        let a = match send_raw(&c, &k.raw) {
            Ok(a) => a,
            // Closed without an answer: only for a request cut short.
            Err(e) if k.bent && e.contains("answer \"\"") => Answer {
                status: 499,
                body: r#"{"error":"closed without an answer"}"#.into(),
            },
            Err(e) => panic!("seed {seed}: {e}\n  request: {}", k.what),
        };
        assert!(
            c.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
            "seed {seed}: pilusd died\n  request: {}",
            k.what
        );
        // 505 is HTTP's own answer to a request line with a bad version.
        assert!(
            a.status < 500 || a.status == 505,
            "seed {seed}: {} for bad input: {}\n  request: {}",
            a.status,
            a.body,
            k.what
        );
        // 408 is the revision wait's "not yet", with the revision as body.
        if (200..300).contains(&a.status) || a.status == 408 {
            accepted += 1;
            undo(&c, &a);
            // An accepted namespace label or revision wait changes what the
            // API shows without touching the maps; start again from here.
            let now = state(&c);
            let maps = |s: &str| s.lines().skip(5).collect::<Vec<_>>().join("\n");
            assert_eq!(
                maps(&now),
                maps(&baseline),
                "seed {seed}: accepted and undone, the maps differ\n  request: {}",
                k.what
            );
            baseline = now;
            continue;
        }
        refused += 1;
        let err: Value = serde_json::from_str(&a.body).unwrap_or_else(|e| {
            panic!(
                "seed {seed}: {} without a JSON error body ({e}): {:?}\n  request: {}",
                a.status, a.body, k.what
            )
        });
        let msg = err["error"].as_str().unwrap_or_default();
        assert!(
            msg.len() > 3,
            "seed {seed}: {} with an empty message: {}\n  request: {}",
            a.status,
            a.body,
            k.what
        );
        let now = state(&c);
        assert!(
            now == baseline,
            "seed {seed}: refused ({} {msg}) but the state changed\n  request: {}\n  before: {baseline}\n  after: {now}",
            a.status,
            k.what
        );
    }
    eprintln!("api fuzz: {cases} cases from seed {first}: {accepted} accepted, {refused} refused");
    assert!(
        refused > cases / 4 && accepted > 10,
        "the campaign did not reach both sides: {accepted} accepted, {refused} refused"
    );
    assert_eq!(
        cli_state(&c),
        cli_before,
        "pilus bpf/endpoint -o json changed"
    );
}

/// Regressions for what the campaign found, one request each: every one is
/// refused with a 4xx naming the problem, and changes nothing.
#[test]
fn api_fuzz_findings_stay_refused() {
    let mut c = Cluster::new("fzapi", "b", &[]);
    c.add_pod("shop", "web");
    let web = c.pods[0].ep.clone();
    let before = state(&c);
    let ep = |container_id: &str, ifname: &str, netns: &str| {
        json!({"container_id": container_id, "netns": netns, "ifname": ifname,
               "namespace": "shop", "labels": ["app=x"]})
        .to_string()
    };
    let cases: Vec<(&str, &str, &str, String, u16, &str)> =
        vec![
        // The body named another namespace than the path: `shop` was
        // relabelled, changing its pods' identities.
        (
            "namespace body differs from path",
            "PUT",
            "/v1/namespaces/shop/labels",
            json!({"namespace": "other", "labels": ["team=x"]}).to_string(),
            400,
            "the body names",
        ),
        // `wait=x` and `timeout_ms=abc` were read as 0 and 10 s.
        ("revision wait=x", "GET", "/v1/policy/revision?wait=x", String::new(), 400, "wait"),
        (
            "revision timeout_ms=abc",
            "GET",
            "/v1/policy/revision?wait=1&timeout_ms=abc",
            String::new(),
            400,
            "timeout_ms",
        ),
        // A '/' in a container id made an endpoint the API cannot address.
        (
            "container id with '/'",
            "PUT",
            "/v1/endpoints",
            ep("a/b", "eth1", &web.netns),
            400,
            "container_id",
        ),
        // The pod's namespace already had eth0: a 500 from the kernel's EEXIST.
        (
            "interface already in the pod",
            "PUT",
            "/v1/endpoints",
            ep("another", "eth0", &web.netns),
            409,
            "File exists",
        ),
        // NUL and '%' passed the agent's own name check, then the kernel's
        // refusal came back as a 500.
        ("ifname with NUL", "PUT", "/v1/endpoints", ep("x1", "eth0\0", &web.netns), 400, "ifname"),
        ("ifname with %", "PUT", "/v1/endpoints", ep("x2", "%00", &web.netns), 400, "ifname"),
        (
            "netns that does not exist",
            "PUT",
            "/v1/endpoints",
            ep("x3", "eth1", "/run/netns/fzapi-no-such"),
            400,
            "network namespace",
        ),
        // A policy named " " could be imported but never deleted by name.
        (
            "policy name with a space",
            "POST",
            "/v1/policies",
            json!({"files": [{"name": "p.json", "text": POLICY_WEB_JSON.replace("web2", "a b")}]})
                .to_string(),
            400,
            "metadata.name",
        ),
    ];
    for (what, method, target, body, status, needle) in cases {
        let b = (!body.is_empty()).then_some(body.as_bytes());
        let a = send_raw(&c, &request(method, target, b)).unwrap();
        assert_eq!(a.status, status, "{what}: {}", a.body);
        assert!(a.body.contains(needle), "{what}: {}", a.body);
        assert_eq!(state(&c), before, "{what}: state changed");
    }
}
