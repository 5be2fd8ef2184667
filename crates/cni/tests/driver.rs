//! Tier 3: pilus-cni driven raw — environment variables and stdin, as a
//! runtime calls it, no CNI library — against a real pilusd in a node
//! namespace (a one-node `pilus lab` without pods), with pods that are
//! plain namespaces. Every command and error path of the spec: ADD, CHECK,
//! DEL (repeated, without prevResult, after the namespace is gone),
//! VERSION negotiation, STATUS, GC, malformed input, a missing agent; and
//! 100 ADD/DEL cycles that must leave nothing behind.
//!
//! Needs root; fails (never skips) without it. The fixture removes the
//! agent, its pins and state and every namespace, also on failure.

mod common;

use common::{ip_of, path_str, Node};
use pilus_api_types::{self as api, paths};
use pilus_lab::cni;
use pilus_netns::{probe::EchoServer, NetNs};
use serde_json::{json, Value};
use std::{net::SocketAddrV4, time::Duration};

#[test]
fn add_check_del_round_trip() {
    let node = Node::new("a");
    let pod_a = NetNs::new("t7pod").unwrap();
    let pod_b = NetNs::new("t7pod").unwrap();
    let (na, nb) = (path_str(&pod_a.path()), path_str(&pod_b.path()));

    // ADD: a spec-conformant 1.0.0 result.
    let add = node.call("ADD", "ctr-a", &na, &node.conf("1.0.0", "web"));
    assert!(add.success, "ADD failed: {} {}", add.stdout, add.stderr);
    let r = add.json.clone().expect("ADD prints JSON");
    assert_eq!(r["cniVersion"], "1.0.0");
    let ip_a = ip_of(&r);
    assert_eq!(r["ips"][0]["gateway"], "198.18.1.1");
    assert_eq!(r["ips"][0]["interface"], 1);
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(r["interfaces"][1]["sandbox"], na.as_str());
    assert!(r["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("lxc"));
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    // The pod has its address and default route; the agent knows the pod
    // by the CNI_ARGS names and the netconf labels.
    let addr = pod_a.ip(&["-4", "-o", "addr", "show", "eth0"]).unwrap();
    assert!(addr.contains(&format!("{ip_a}/32")), "{addr}");
    let route = pod_a.ip(&["-4", "route", "show", "default"]).unwrap();
    assert!(route.contains("via 198.18.1.1 dev eth0"), "{route}");
    let ep: api::Endpoint = node.client().get_json("/v1/endpoints/shop/ctr-a").unwrap();
    assert_eq!(ep.ipv4, ip_a);
    assert_eq!(ep.cni_network.as_deref(), Some("pilus"));
    assert!(
        ep.labels.iter().any(|l| l.ends_with("app=web")),
        "{:?}",
        ep.labels
    );
    assert_eq!(node.host_links(), vec![ep.host_ifname.clone()]);

    // Real traffic between two pods made by the plugin.
    let add_b = node.call("ADD", "ctr-b", &nb, &node.conf("1.1.0", "db"));
    assert!(add_b.success, "{}", add_b.stdout);
    let ip_b = ip_of(add_b.json.as_ref().unwrap());
    let _srv = EchoServer::start(&pod_b, &[80]).unwrap();
    assert!(
        pilus_netns::probe::tcp(&pod_a, SocketAddrV4::new(ip_b, 80), Duration::from_secs(3))
            .unwrap()
    );
    assert!(
        pilus_netns::probe::udp(&pod_a, SocketAddrV4::new(ip_b, 80), Duration::from_secs(3))
            .unwrap()
    );

    // ADD twice without DEL is refused and changes nothing.
    let again = node.call("ADD", "ctr-a", &na, &node.conf("1.0.0", "web"));
    assert!(!again.success);
    assert_eq!(again.error_code(), Some(100));
    assert!(
        again.error_msg().contains("DEL it before"),
        "{}",
        again.error_msg()
    );
    assert_eq!(node.status().endpoints, 2);

    // CHECK with prevResult passes; then breaks are detected.
    let mut check_conf = node.conf("1.0.0", "web");
    check_conf["prevResult"] = r.clone();
    let ok = node.call("CHECK", "ctr-a", &na, &check_conf);
    assert!(ok.success, "CHECK failed: {}", ok.stdout);
    assert!(ok.stdout.trim().is_empty());
    let no_prev = node.call("CHECK", "ctr-a", &na, &node.conf("1.0.0", "web"));
    assert_eq!(no_prev.error_code(), Some(7), "{}", no_prev.stdout);
    pod_a
        .ip(&["addr", "del", &format!("{ip_a}/32"), "dev", "eth0"])
        .unwrap();
    let broken = node.call("CHECK", "ctr-a", &na, &check_conf);
    assert_eq!(broken.error_code(), Some(101), "{}", broken.stdout);
    assert!(
        broken.error_msg().contains("does not have address"),
        "{}",
        broken.error_msg()
    );
    pod_a.ip(&["link", "set", "eth0", "down"]).unwrap();
    let down = node.call("CHECK", "ctr-a", &na, &check_conf);
    assert!(down.error_msg().contains("is down"), "{}", down.error_msg());

    // DEL with prevResult, then again: both succeed, print nothing.
    let mut del_conf = node.conf("1.0.0", "web");
    del_conf["prevResult"] = r;
    for _ in 0..2 {
        let del = node.call("DEL", "ctr-a", &na, &del_conf);
        assert!(del.success, "DEL failed: {}", del.stdout);
        assert!(del.stdout.trim().is_empty());
    }
    assert!(
        pod_a.ip(&["link", "show", "eth0"]).is_err(),
        "pod interface left"
    );
    // DEL without prevResult, after the namespace is gone, without CNI_NETNS.
    drop(_srv);
    drop(pod_b);
    let del_b = node.call("DEL", "ctr-b", "", &node.conf("1.1.0", "db"));
    assert!(del_b.success, "DEL failed: {}", del_b.stdout);
    node.assert_clean();
}

#[test]
fn version_errors_status_and_gc() {
    let node = Node::new("b");
    let pod = NetNs::new("t7pod").unwrap();
    let np = path_str(&pod.path());

    // VERSION negotiation: the caller's version echoed, all listed.
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let out = node.raw(
            &[("CNI_COMMAND", "VERSION")],
            json!({ "cniVersion": v }).to_string().as_bytes(),
        );
        assert!(out.success);
        let j = out.json.unwrap();
        assert_eq!(j["cniVersion"], v);
        let all = j["supportedVersions"].as_array().unwrap();
        for w in ["0.4.0", "1.0.0", "1.1.0"] {
            assert!(all.iter().any(|x| x == w), "{w} missing");
        }
    }
    let empty = node.raw(&[("CNI_COMMAND", "VERSION")], b"");
    assert_eq!(empty.json.unwrap()["cniVersion"], "1.1.0");

    // A 0.4.0 ADD gets a 0.4.0 result (IP entries name their version).
    let add = node.call("ADD", "old", &np, &node.conf("0.4.0", "web"));
    assert!(add.success, "{}", add.stdout);
    let j = add.json.unwrap();
    assert_eq!(
        (j["cniVersion"].as_str(), j["ips"][0]["version"].as_str()),
        (Some("0.4.0"), Some("4"))
    );
    assert!(
        node.call("DEL", "old", &np, &node.conf("0.4.0", "web"))
            .success
    );
    node.assert_clean();

    // Bad input: the spec's code, a message naming the problem, no change.
    let cases: Vec<(&str, cni::Outcome, u64, &str)> = vec![
        (
            "malformed JSON",
            node.raw(
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "x"),
                    ("CNI_NETNS", &np),
                    ("CNI_IFNAME", "eth0"),
                ],
                b"{\"cniVersion\": \"1.0.0\", ",
            ),
            6,
            "not valid JSON",
        ),
        (
            "missing CNI_NETNS",
            node.raw(
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "x"),
                    ("CNI_IFNAME", "eth0"),
                ],
                node.conf("1.0.0", "web").to_string().as_bytes(),
            ),
            4,
            "CNI_NETNS is required",
        ),
        (
            "unknown cniVersion",
            node.call("ADD", "x", &np, &node.conf("2.0.0", "web")),
            1,
            "not supported",
        ),
        (
            "a namespace that does not exist",
            node.call(
                "ADD",
                "x",
                "/run/netns/t7-no-such-ns",
                &node.conf("1.0.0", "web"),
            ),
            3,
            "CNI_NETNS",
        ),
        (
            "unknown CNI_ARGS key",
            node.raw(
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "x"),
                    ("CNI_NETNS", &np),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_ARGS", "COLOR=blue"),
                ],
                node.conf("1.0.0", "web").to_string().as_bytes(),
            ),
            4,
            "IgnoreUnknown",
        ),
    ];
    for (what, out, code, needle) in cases {
        assert!(!out.success, "{what}: succeeded");
        assert_eq!(out.error_code(), Some(code), "{what}: {}", out.stdout);
        assert!(
            out.error_msg().contains(needle),
            "{what}: {}",
            out.error_msg()
        );
        node.assert_clean();
    }

    // An agent that is not running: a clear error, no veth, no address.
    let mut nowhere = node.conf("1.0.0", "web");
    nowhere["socket"] = json!("/run/pilus-t7-nowhere.sock");
    let down = node.call("ADD", "x", &np, &nowhere);
    assert_eq!(down.error_code(), Some(11), "{}", down.stdout);
    assert!(
        down.error_msg().contains("not reachable"),
        "{}",
        down.error_msg()
    );
    assert!(
        pod.ip(&["link", "show", "eth0"]).is_err(),
        "pod interface made"
    );
    node.assert_clean();
    let status_down = node.raw(&[("CNI_COMMAND", "STATUS")], nowhere.to_string().as_bytes());
    assert_eq!(status_down.error_code(), Some(50));
    let status = node.raw(
        &[("CNI_COMMAND", "STATUS")],
        node.conf("1.1.0", "web").to_string().as_bytes(),
    );
    assert!(
        status.success && status.stdout.trim().is_empty(),
        "{}",
        status.stdout
    );

    // GC keeps the attachments listed and removes the others once they are
    // older than the grace period (0 here; the default spares them).
    let other = NetNs::new("t7pod").unwrap();
    assert!(
        node.call("ADD", "keep", &np, &node.conf("1.1.0", "web"))
            .success
    );
    assert!(
        node.call(
            "ADD",
            "stale",
            &path_str(&other.path()),
            &node.conf("1.1.0", "db")
        )
        .success
    );
    let mut gc = node.conf("1.1.0", "web");
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": "keep", "ifname": "eth0" }]);
    let out = node.raw(&[("CNI_COMMAND", "GC")], gc.to_string().as_bytes());
    assert!(out.success, "GC failed: {}", out.stdout);
    assert_eq!(
        node.status().endpoints,
        2,
        "a GC within the grace period deleted"
    );
    gc["gcGraceSeconds"] = json!(0);
    let out = node.raw(&[("CNI_COMMAND", "GC")], gc.to_string().as_bytes());
    assert!(out.success, "GC failed: {}", out.stdout);
    let eps: Vec<api::Endpoint> = node.client().get_json(paths::ENDPOINTS).unwrap();
    assert_eq!(
        eps.iter()
            .map(|e| e.container_id.as_str())
            .collect::<Vec<_>>(),
        vec!["keep"]
    );
    assert_eq!(node.host_links().len(), 1);
    assert!(
        node.call("DEL", "keep", &np, &node.conf("1.1.0", "web"))
            .success
    );
    node.assert_clean();
}

#[test]
fn hundred_add_del_cycles_leave_nothing() {
    let node = Node::new("c");
    let pod = NetNs::new("t7pod").unwrap();
    let np = path_str(&pod.path());
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..100 {
        // A new container and a new label each time, so identities are
        // allocated and released, not just reused.
        let cid = format!("cycle-{i}");
        let add = node.call(
            "ADD",
            &cid,
            &np,
            &node.conf("1.0.0", &format!("app{}", i % 7)),
        );
        assert!(add.success, "cycle {i}: ADD failed: {}", add.stdout);
        seen.insert(ip_of(add.json.as_ref().unwrap()));
        let del = node.call(
            "DEL",
            &cid,
            &np,
            &node.conf("1.0.0", &format!("app{}", i % 7)),
        );
        assert!(del.success, "cycle {i}: DEL failed: {}", del.stdout);
    }
    // Every ADD got an address of the node's pod CIDR; the allocator
    // rotates, so release is checked by assert_clean (none in use).
    assert!(
        seen.iter().all(|ip| ip.octets()[..3] == [198, 18, 1]),
        "{seen:?}"
    );
    node.assert_clean();
}

/// Issue 15: a GC whose configuration had no `cni.dev/valid-attachments`
/// exited 0 and deleted every pod of the network. Now every malformed GC is
/// refused with the spec's code, and two running pods keep their endpoints,
/// veths and connectivity; a GC racing ADDs never removes the new ones.
#[test]
fn gc_never_reads_a_bad_list_as_delete_everything() {
    let node = Node::new("g");
    let pod_a = NetNs::new("t7pod").unwrap();
    let pod_b = NetNs::new("t7pod").unwrap();
    let (na, nb) = (path_str(&pod_a.path()), path_str(&pod_b.path()));
    assert!(
        node.call("ADD", "run-a", &na, &node.conf("1.1.0", "web"))
            .success
    );
    let add_b = node.call("ADD", "run-b", &nb, &node.conf("1.1.0", "db"));
    assert!(add_b.success, "{}", add_b.stdout);
    let ip_b = ip_of(add_b.json.as_ref().unwrap());
    let _srv = EchoServer::start(&pod_b, &[80]).unwrap();
    let running = |when: &str| {
        let eps: Vec<api::Endpoint> = node.client().get_json(paths::ENDPOINTS).unwrap();
        let mut ids: Vec<_> = eps.iter().map(|e| e.container_id.clone()).collect();
        ids.sort();
        assert_eq!(ids, ["run-a", "run-b"], "{when}: endpoints");
        assert_eq!(node.host_links().len(), 2, "{when}: host veths");
        assert!(
            pilus_netns::probe::tcp(&pod_a, SocketAddrV4::new(ip_b, 80), Duration::from_secs(3))
                .unwrap(),
            "{when}: TCP between the running pods"
        );
    };
    running("before");

    let with = |version: &str, list: Option<Value>| {
        let mut c = node.conf(version, "web");
        c["gcGraceSeconds"] = json!(0);
        if let Some(l) = list {
            c["cni.dev/valid-attachments"] = l;
        }
        c
    };
    let cases = [
        (
            "no cni.dev/valid-attachments",
            with("1.1.0", None),
            7,
            "is missing",
        ),
        (
            "a null list",
            with("1.1.0", Some(Value::Null)),
            7,
            "is null",
        ),
        (
            "an object, not a list",
            with("1.1.0", Some(json!({}))),
            7,
            "must be a list",
        ),
        (
            "an entry without ifname",
            with("1.1.0", Some(json!([{ "containerID": "run-a" }]))),
            7,
            "\"ifname\"",
        ),
        (
            "an entry that is a string",
            with("1.1.0", Some(json!(["run-a/eth0"]))),
            7,
            "must be an object",
        ),
        (
            "cniVersion 1.0.0",
            with("1.0.0", Some(json!([]))),
            1,
            "1.1.0",
        ),
    ];
    for (what, conf, code, needle) in cases {
        let out = node.raw(&[("CNI_COMMAND", "GC")], conf.to_string().as_bytes());
        assert!(!out.success, "{what}: GC succeeded");
        assert_eq!(out.error_code(), Some(code), "{what}: {}", out.stdout);
        let msg = out.error_msg();
        assert!(
            msg.contains(needle) && msg.contains("nothing was deleted"),
            "{what}: {msg}"
        );
        running(what);
    }

    // ADDs racing GCs whose list (made before the ADD) lacks them: the
    // grace period spares them, however the two interleave.
    let valid = json!([
        { "containerID": "run-a", "ifname": "eth0" },
        { "containerID": "run-b", "ifname": "eth0" },
    ]);
    let mut racers = Vec::new();
    for i in 0..5 {
        let pod = NetNs::new("t7pod").unwrap();
        let np = path_str(&pod.path());
        let cid = format!("race-{i}");
        let done = std::sync::atomic::AtomicBool::new(false);
        let mut gcs = 0;
        let add = std::thread::scope(|s| {
            let adder = s.spawn(|| {
                let out = node.call("ADD", &cid, &np, &node.conf("1.1.0", "web"));
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                out
            });
            let mut gc = node.conf("1.1.0", "web");
            gc["cni.dev/valid-attachments"] = valid.clone();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let out = node.raw(&[("CNI_COMMAND", "GC")], gc.to_string().as_bytes());
                assert!(out.success, "GC failed: {}", out.stdout);
                gcs += 1;
            }
            adder.join().unwrap()
        });
        assert!(add.success, "{cid}: ADD failed: {}", add.stdout);
        assert!(gcs > 0, "{cid}: no GC ran during the ADD");
        let mut gc = node.conf("1.1.0", "web");
        gc["cni.dev/valid-attachments"] = valid.clone();
        let out = node.raw(&[("CNI_COMMAND", "GC")], gc.to_string().as_bytes());
        assert!(out.success, "GC failed: {}", out.stdout);
        let ep: api::Endpoint = node
            .client()
            .get_json(&format!("{}/{cid}?ifname=eth0", paths::ENDPOINTS))
            .unwrap_or_else(|e| panic!("{cid}: the racing GC removed the new attachment: {e}"));
        assert!(
            node.host_links().contains(&ep.host_ifname),
            "{cid}: link gone"
        );
        racers.push((cid, pod));
    }
    for (cid, pod) in &racers {
        let del = node.call(
            "DEL",
            cid,
            &path_str(&pod.path()),
            &node.conf("1.1.0", "web"),
        );
        assert!(del.success, "{}", del.stdout);
    }
    running("after the races");
    for cid in ["run-a", "run-b"] {
        assert!(
            node.call("DEL", cid, "", &node.conf("1.1.0", "web"))
                .success
        );
    }
    node.assert_clean();
}

/// Regressions for what the CNI fuzz campaign found (issue 15).
#[test]
fn cni_fuzz_findings_stay_refused() {
    let node = Node::new("h");
    let pod_a = NetNs::new("t7pod").unwrap();
    let pod_b = NetNs::new("t7pod").unwrap();
    let (na, nb) = (path_str(&pod_a.path()), path_str(&pod_b.path()));
    assert!(
        node.call("ADD", "run-a", &na, &node.conf("1.1.0", "web"))
            .success
    );
    let add_b = node.call("ADD", "run-b", &nb, &node.conf("1.1.0", "db"));
    let ip_b = ip_of(add_b.json.as_ref().unwrap());
    let _srv = EchoServer::start(&pod_b, &[80]).unwrap();
    let before = node.status();

    // A second interface ADDed into a running pod's namespace replaced the
    // pod's gateway and default routes; its DEL then left the pod with
    // none, and the pod was cut off.
    let mut env = vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "second"),
        ("CNI_NETNS", na.as_str()),
        ("CNI_IFNAME", "eth1"),
    ];
    let conf = node.conf("1.1.0", "web").to_string();
    let out = node.raw(&env, conf.as_bytes());
    assert_eq!(out.error_code(), Some(102), "{}", out.stdout);
    assert!(
        out.error_msg().contains("already has a route"),
        "{}",
        out.error_msg()
    );
    assert!(
        pod_a.ip(&["link", "show", "eth1"]).is_err(),
        "eth1 was made"
    );
    let after = node.status();
    assert_eq!(
        (after.endpoints, after.ipam_used, after.revision),
        (before.endpoints, before.ipam_used, before.revision)
    );
    assert!(
        pilus_netns::probe::tcp(&pod_a, SocketAddrV4::new(ip_b, 80), Duration::from_secs(3))
            .unwrap(),
        "the running pod lost its routes"
    );

    // A CNI_NETNS that opens but is no namespace ("/") failed in setns with
    // a bare EINVAL, as an I/O error.
    env[2] = ("CNI_NETNS", "/");
    env[3] = ("CNI_IFNAME", "eth0");
    let out = node.raw(&env, conf.as_bytes());
    assert_eq!(out.error_code(), Some(4), "{}", out.stdout);
    assert!(
        out.error_msg().contains("not a network namespace"),
        "{}",
        out.error_msg()
    );
    assert_eq!(node.status().endpoints, 2);

    for cid in ["run-a", "run-b"] {
        assert!(
            node.call("DEL", cid, "", &node.conf("1.1.0", "web"))
                .success
        );
    }
    node.assert_clean();
}
