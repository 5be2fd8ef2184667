//! Issue 14: pilus-cni reads a containerd container's labels at ADD and
//! passes them to the agent as `runtime` labels — and a runtime that hangs,
//! floods, lies or names another container never fails or stalls the ADD.
//!
//! No containerd here (crates/cni/tests/containerd.rs runs the real one):
//! the "task" is a process in a network namespace of its own whose parent
//! is an executable named `containerd-shim-runc-v2` with a shim's command
//! line, and the `ctr` beside it is a script that answers as each case
//! needs. Needs root (the plugin makes veths); fails, never skips.

mod common;

use common::{ip_of, Node};
use pilus_api_types as api;
use pilus_api_types::paths;
use serde_json::json;
use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A fake shim and its task; the processes and the directory go on drop.
struct FakeTask {
    dir: PathBuf,
    shim: Child,
    pid: u32,
}

impl Drop for FakeTask {
    fn drop(&mut self) {
        // The shim leads a process group holding the task.
        unsafe {
            libc::kill(-(self.shim.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.shim.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl FakeTask {
    /// Starts the shim (a copy of bash under the shim's name) for
    /// container `id` of containerd namespace `ns`, with `ctr` as the
    /// script that answers for containerd.
    fn start(tag: &str, ns: &str, id: &str, ctr: &str) -> FakeTask {
        let dir = std::env::temp_dir().join(format!("pilus-t14rt-fake-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let shim = dir.join("containerd-shim-runc-v2");
        std::fs::copy("/bin/bash", &shim).unwrap();
        write_script(&dir.join("ctr"), ctr);
        let child = Command::new(&shim)
            .args([
                "-c",
                "unshare --net sleep 120 & wait",
                "-namespace",
                ns,
                "-id",
                id,
                "-address",
                "/run/t14rt-fake.sock",
            ])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut task = FakeTask {
            dir,
            pid: 0,
            shim: child,
        };
        // The task: the shim's child, once `unshare` has made its netns
        // and become `sleep`.
        let deadline = Instant::now() + Duration::from_secs(5);
        let own_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
        loop {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", task.shim.id()))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
                if comm.trim() == "sleep" && ns.is_some_and(|n| n != own_ns) {
                    task.pid = pid.parse().unwrap();
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the fake task never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        task
    }

    fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }

    fn marker(&self) -> PathBuf {
        self.dir.join("ctr-ran")
    }
}

fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `ctr containers info` of container `id` with these labels; it also
/// leaves a marker (so a test knows whether ctr ran) and checks that the
/// plugin asked about the right containerd, namespace and container.
fn answer(dir_marker: &str, ns: &str, id: &str, labels: serde_json::Value) -> String {
    let record = json!({ "ID": id, "Labels": labels, "Spec": { "ociVersion": "1.0.2" } });
    format!(
        "touch {dir_marker}\n[ \"$*\" = \"--address /run/t14rt-fake.sock --namespace {ns} containers info -- {id}\" ] || {{ echo \"unexpected arguments: $*\" >&2; exit 9; }}\ncat <<'EOF'\n{record}\nEOF"
    )
}

fn add(node: &Node, cid: &str, netns: &str, conf: &serde_json::Value) -> pilus_lab::cni::Outcome {
    node.raw(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        &serde_json::to_vec(conf).unwrap(),
    )
}

fn del(node: &Node, cid: &str, conf: &serde_json::Value) {
    let out = node.raw(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", cid),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        &serde_json::to_vec(conf).unwrap(),
    );
    assert!(out.success, "DEL {cid}: {}{}", out.stdout, out.stderr);
}

fn conf(node: &Node, mode: Option<&str>) -> serde_json::Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "pilus",
        "type": "pilus-cni",
        "socket": node.socket(),
    });
    if let Some(m) = mode {
        c["runtimeLabels"] = json!(m);
    }
    c
}

fn endpoint(node: &Node, cid: &str) -> api::Endpoint {
    node.client()
        .get_json(&format!("{}/{cid}?ifname=eth0", paths::ENDPOINTS))
        .unwrap()
}

fn runtime_labels(ep: &api::Endpoint) -> Vec<String> {
    ep.label_sources
        .iter()
        .filter(|l| l.source == "runtime")
        .map(|l| l.label.clone())
        .collect()
}

#[test]
fn containerd_labels_reach_the_endpoint_and_a_bad_runtime_never_fails_the_add() {
    let node = Node::with_prefix("t14rtfk");
    let auto = conf(&node, None);

    // 1. Labels read from "containerd": valid ones pass as `runtime`
    //    labels; the runtime's own are skipped, and invalid ones and
    //    Pilus's own keys with a note.
    let (ns, id) = ("t14rt-ns", "web-1");
    let cid = format!("{ns}-{id}");
    let marker = std::env::temp_dir().join("pilus-t14rt-fake-labels/ctr-ran");
    let t = FakeTask::start(
        "labels",
        ns,
        id,
        &answer(
            &marker.display().to_string(),
            ns,
            id,
            json!({
                "app": "web",
                "tier": "front",
                "io.containerd.image.config.stop-signal": "SIGTERM",
                "io.kubernetes.pod.namespace": "other",
                "bad key": "x",
            }),
        ),
    );
    let out = add(&node, &cid, &t.netns(), &auto);
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert!(t.marker().exists(), "ctr never ran");
    let ep = endpoint(&node, &cid);
    assert_eq!(ep.ipv4, ip_of(out.json.as_ref().unwrap()));
    let mut got = runtime_labels(&ep);
    got.sort();
    assert_eq!(got, vec!["k8s:app=web", "k8s:tier=front"], "{ep:?}");
    // The runtime's own labels are skipped quietly, the others named.
    assert!(
        !out.stderr.contains("stop-signal")
            && out.stderr.contains("\"bad key=x\"")
            && out.stderr.contains("\"io.kubernetes.pod.namespace=other\""),
        "{}",
        out.stderr
    );
    assert_eq!(ep.namespace, "default");
    del(&node, &cid, &auto);

    // 2. `runtimeLabels: off` never asks.
    std::fs::remove_file(t.marker()).unwrap();
    let out = add(&node, &cid, &t.netns(), &conf(&node, Some("off")));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert!(!t.marker().exists(), "ctr ran with runtimeLabels off");
    assert!(runtime_labels(&endpoint(&node, &cid)).is_empty());
    del(&node, &cid, &auto);

    // 3. A CNI_CONTAINERID that is not the task's: the labels of the
    //    process in CNI_NETNS are not this container's.
    let other = "t14rt-ns-web-2";
    let out = add(&node, other, &t.netns(), &auto);
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("is not container"), "{}", out.stderr);
    assert!(runtime_labels(&endpoint(&node, other)).is_empty());
    del(&node, other, &auto);
    drop(t);

    // 4. A runtime that never answers: the ADD goes on after the timeout.
    let t = FakeTask::start("hang", ns, id, "exec sleep 60");
    let start = Instant::now();
    let out = add(&node, &cid, &t.netns(), &auto);
    let took = start.elapsed();
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("did not answer"), "{}", out.stderr);
    assert!(took < Duration::from_secs(10), "the ADD took {took:?}");
    assert!(runtime_labels(&endpoint(&node, &cid)).is_empty());
    del(&node, &cid, &auto);
    drop(t);

    // 5. A runtime that floods its output, and one that fails.
    for (tag, script, said) in [
        ("flood", "exec yes", "more than"),
        (
            "fail",
            "echo 'no such container' >&2; exit 1",
            "no such container",
        ),
        ("junk", "echo '{\"ID\": 5}'", "not a container record"),
    ] {
        let t = FakeTask::start(tag, ns, id, script);
        let out = add(&node, &cid, &t.netns(), &auto);
        assert!(out.success, "{tag}: {}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(said), "{tag}: {}", out.stderr);
        assert!(runtime_labels(&endpoint(&node, &cid)).is_empty(), "{tag}");
        del(&node, &cid, &auto);
    }

    // 6. Not a containerd task at all (podman, CRI): auto says nothing,
    //    "containerd" says why there are no labels.
    let pod = pilus_netns::NetNs::new("t14rtfkpod").unwrap();
    let pod_path = pod.path().display().to_string();
    let out = add(&node, "t14rt-plain", &pod_path, &auto);
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "",
        "auto spoke about a non-containerd pod"
    );
    del(&node, "t14rt-plain", &auto);
    let out = add(
        &node,
        "t14rt-plain",
        &pod_path,
        &conf(&node, Some("containerd")),
    );
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("not the network namespace of a containerd task"),
        "{}",
        out.stderr
    );
    del(&node, "t14rt-plain", &auto);
    node.assert_clean();
}
