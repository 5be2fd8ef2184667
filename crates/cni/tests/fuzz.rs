//! Tier 3, fuzzing (issue 15): pilus-cni's environment and stdin, bent from
//! valid invocations, against a real agent with two running pods. Each case
//! picks a command, container, namespace and interface (valid ones and
//! hostile ones), a network configuration that starts valid and gets 0-3
//! structural mutations (sometimes raw byte mutations), runs the plugin as
//! a runtime does, and checks:
//!
//! - no panic, exit 0 or 1, stdout empty, a result, or a CNI error object
//!   (`code` > 0, a non-empty `msg`, `cniVersion`);
//! - a refused invocation changes nothing: the agent's endpoints,
//!   identities, policies and maps (through the API), the host links and
//!   the links in every pod namespace are as they were;
//! - an accepted ADD is undone by a clean DEL, after which the maps are as
//!   they were; the running pods still talk over TCP at the end.
//!
//! Requests that are valid *and* destructive by design (DEL of a running
//! pod, a well-formed GC list that omits one) are not generated: GC lists
//! always carry the running pods, and DEL never names them.
//!
//! `PILUS_FUZZ_CASES` (default 2,000) and `PILUS_FUZZ_SEED` (default 1)
//! set the run; a failure names its seed. Needs root; fails without it.

mod common;

use common::{path_str, NetNsRef, Node};
use pilus_api_types::{self as api, paths};
use pilus_mutate::{mutate, mutate_bytes, Rng, HOSTILE_STRINGS};
use pilus_netns::{probe::EchoServer, NetNs};
use serde_json::{json, Value};
use std::{net::SocketAddrV4, time::Duration};

const RUNNING: [&str; 2] = ["run-a", "run-b"];

struct Pods {
    a: NetNs,
    b: NetNs,
    /// An empty namespace a fuzzed ADD may attach to.
    spare: NetNs,
}

/// Everything a refused invocation must leave as it was.
fn state(node: &Node, pods: &Pods) -> String {
    let c = node.client();
    let mut status: Value = c.get_json(paths::STATUS).unwrap();
    status.as_object_mut().unwrap().remove("uptime_seconds");
    let mut s = status.to_string();
    for p in [
        paths::ENDPOINTS,
        paths::IDENTITIES,
        paths::POLICIES,
        paths::BPF_ENDPOINTS,
        paths::BPF_IPCACHE,
        paths::BPF_POLICY,
    ] {
        let v: Value = c.get_json(p).unwrap();
        s.push('\n');
        s.push_str(&v.to_string());
    }
    s.push_str(&format!("\nhost links {:?}", node.host_links()));
    for ns in [&pods.a, &pods.b, &pods.spare] {
        s.push_str(&format!(
            "\n{} links {:?}",
            ns.name(),
            NetNsRef(ns.name().to_string()).links()
        ));
    }
    s
}

struct Case {
    what: String,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
}

fn case(node: &Node, pods: &Pods, add_a: &Value, rng: &mut Rng) -> Case {
    let command = *rng.pick(&[
        "ADD", "ADD", "DEL", "CHECK", "CHECK", "GC", "GC", "STATUS", "VERSION",
    ]);
    let hostile = |rng: &mut Rng| rng.pick(HOSTILE_STRINGS).to_string();
    let container = match rng.below(5) {
        0 if command != "DEL" => RUNNING[rng.below(2)].to_string(),
        1 => hostile(rng),
        _ => format!("fz-{}", rng.below(4)),
    };
    let netns = match rng.below(6) {
        0 => path_str(&pods.a.path()),
        1 => "/run/netns/fz-no-such".into(),
        2 => hostile(rng),
        _ => path_str(&pods.spare.path()),
    };
    let ifname = match rng.below(5) {
        0 => "eth1".into(),
        1 => hostile(rng),
        _ => "eth0".into(),
    };
    let args = match rng.below(5) {
        0 => format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={};FOO=bar", hostile(rng)),
        1 => hostile(rng),
        2 => String::new(),
        _ => format!("K8S_POD_NAMESPACE=shop;K8S_POD_NAME={container}"),
    };
    let mut env: Vec<(String, String)> = [
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", container),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
        ("CNI_ARGS", args),
        ("CNI_PATH", "/opt/cni/bin".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if rng.chance(1, 6) {
        let i = rng.below(env.len());
        if rng.chance(1, 2) {
            env.remove(i);
        } else {
            env[i].1 = hostile(rng);
        }
    }
    const VERSIONS: [&str; 4] = ["0.4.0", "1.0.0", "1.1.0", "1.1.0"];
    let version = VERSIONS[rng.below(VERSIONS.len())];
    let mut conf = node.conf(version, "fz");
    conf["cni.dev/valid-attachments"] = json!(RUNNING
        .iter()
        .map(|c| json!({ "containerID": c, "ifname": "eth0" }))
        .collect::<Vec<_>>());
    if rng.chance(1, 2) {
        conf["gcGraceSeconds"] = json!(0);
    }
    if rng.chance(1, 2) {
        conf["prevResult"] = add_a.clone();
    }
    for _ in 0..rng.below(4) {
        mutate(&mut conf, rng);
    }
    keep_running_pods_listed(&mut conf);
    let mut stdin = serde_json::to_vec(&conf).unwrap();
    if rng.chance(1, 10) {
        mutate_bytes(&mut stdin, rng);
    }
    // No runtime can pass a NUL in an environment variable.
    for (_, v) in &mut env {
        v.retain(|ch| ch != '\0');
    }
    Case {
        what: format!("{env:?} {}", String::from_utf8_lossy(&stdin)),
        env,
        stdin,
    }
}

/// A well-formed list that omits a running pod is a legitimate order to
/// delete it: put them back, so only malformed lists are explored.
fn keep_running_pods_listed(conf: &mut Value) {
    let Some(list) = conf
        .get_mut("cni.dev/valid-attachments")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for c in RUNNING {
        list.push(json!({ "containerID": c, "ifname": "eth0" }));
    }
}

/// Checks the output's form; returns the error code if it failed.
fn check_output(out: &pilus_lab::cni::Outcome, seed: u64, what: &str) -> Option<u64> {
    assert!(
        !out.stderr.contains("panicked"),
        "seed {seed}: pilus-cni panicked: {}\n  case: {what}",
        out.stderr
    );
    assert!(
        matches!(out.code, Some(0) | Some(1)),
        "seed {seed}: exit {:?}: {}\n  case: {what}",
        out.code,
        out.stderr
    );
    if out.success {
        if !out.stdout.trim().is_empty() {
            let j = out.json.as_ref().unwrap_or_else(|| {
                panic!(
                    "seed {seed}: success with non-JSON output {:?}\n  case: {what}",
                    out.stdout
                )
            });
            assert!(
                j.get("cniVersion").is_some(),
                "seed {seed}: {j}\n  case: {what}"
            );
        }
        return None;
    }
    let j = out.json.as_ref().unwrap_or_else(|| {
        panic!(
            "seed {seed}: failure without a JSON error: {:?}\n  case: {what}",
            out.stdout
        )
    });
    let code = j["code"].as_u64().filter(|c| *c > 0);
    let msg = j["msg"].as_str().unwrap_or_default();
    assert!(
        code.is_some() && !msg.is_empty() && j["cniVersion"].is_string(),
        "seed {seed}: malformed CNI error object {j}\n  case: {what}"
    );
    code
}

#[test]
fn cni_invocations_never_half_apply() {
    let node = Node::new("fz");
    let pods = Pods {
        a: NetNs::new("t7pod").unwrap(),
        b: NetNs::new("t7pod").unwrap(),
        spare: NetNs::new("t7pod").unwrap(),
    };
    let add_a = node.call(
        "ADD",
        RUNNING[0],
        &path_str(&pods.a.path()),
        &node.conf("1.1.0", "web"),
    );
    assert!(add_a.success, "{}", add_a.stdout);
    let add_b = node.call(
        "ADD",
        RUNNING[1],
        &path_str(&pods.b.path()),
        &node.conf("1.1.0", "db"),
    );
    assert!(add_b.success, "{}", add_b.stdout);
    let ip_b = common::ip_of(add_b.json.as_ref().unwrap());
    let _srv = EchoServer::start(&pods.b, &[80]).unwrap();
    let add_a = add_a.json.unwrap();

    let cases: u64 = std::env::var("PILUS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let first: u64 = std::env::var("PILUS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut baseline = state(&node, &pods);
    let (mut accepted, mut refused) = (0, 0);
    let mut codes = std::collections::BTreeMap::new();
    for seed in first..first + cases {
        let mut rng = Rng::new(seed);
        let k = case(&node, &pods, &add_a, &mut rng);
        let env: Vec<(&str, &str)> = k
            .env
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let out = node.raw(&env, &k.stdin);
        match check_output(&out, seed, &k.what) {
            Some(code) => {
                refused += 1;
                *codes.entry(code).or_insert(0) += 1;
                let now = state(&node, &pods);
                assert!(
                    now == baseline,
                    "seed {seed}: refused ({}) but the state changed\n  case: {}\n  before: {baseline}\n  after: {now}",
                    out.stdout.trim(),
                    k.what
                );
            }
            None => {
                accepted += 1;
                let get = |name: &str| env_var(&env, name);
                if get("CNI_COMMAND") == "ADD" {
                    // Undo with a clean DEL of that attachment.
                    let del = node.raw(
                        &[
                            ("CNI_COMMAND", "DEL"),
                            ("CNI_CONTAINERID", &get("CNI_CONTAINERID")),
                            ("CNI_IFNAME", &get("CNI_IFNAME")),
                        ],
                        node.conf("1.1.0", "fz").to_string().as_bytes(),
                    );
                    assert!(del.success, "seed {seed}: undoing the ADD: {}", del.stdout);
                }
                // Revisions and the IP allocator's cursor move on an ADD and
                // its DEL; the maps and links must not.
                let now = state(&node, &pods);
                let maps = |s: &str| s.lines().skip(4).collect::<Vec<_>>().join("\n");
                assert_eq!(
                    maps(&now),
                    maps(&baseline),
                    "seed {seed}: accepted and undone, the maps or links differ\n  case: {}",
                    k.what
                );
                baseline = now;
            }
        }
    }
    eprintln!("cni fuzz: {cases} cases from seed {first}: {accepted} accepted, {refused} refused, error codes {codes:?}");
    assert!(
        refused > cases / 4 && accepted > cases / 20,
        "the campaign did not reach both sides: {accepted} accepted, {refused} refused"
    );
    assert!(
        pilus_netns::probe::tcp(&pods.a, SocketAddrV4::new(ip_b, 80), Duration::from_secs(3))
            .unwrap(),
        "the running pods lost their connectivity"
    );
    let eps: Vec<api::Endpoint> = node.client().get_json(paths::ENDPOINTS).unwrap();
    assert_eq!(eps.len(), 2, "{eps:?}");
    for c in RUNNING {
        assert!(node.call("DEL", c, "", &node.conf("1.1.0", "web")).success);
    }
    node.assert_clean();
}

fn env_var(env: &[(&str, &str)], name: &str) -> String {
    env.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}
