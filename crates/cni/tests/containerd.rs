//! Tier 3 with a real container runtime, issue 14: containerd 1.6 and
//! `ctr run --cni --label app=...` attach containers through pilus-cni to a
//! pilusd in a node namespace (ctr runs under `nsenter --net` there, so the
//! host side of every veth lives there). pilus-cni reads each container's
//! labels from containerd at ADD: the endpoint carries them with source
//! `runtime`, and a policy that selects on them is enforced on real
//! connections. When ctr's task exits, ctr's DEL removes the endpoint.
//!
//! containerd is our own (scripts/containerd.sh: config, root, state and
//! socket under a scratch directory; never the system's /run/containerd),
//! and ctr sees only this test's CNI configuration and plugin directory.
//! Needs root, containerd, runc and busybox-static (scripts/test.sh
//! installs them); fails, never skips, without them.

use pilus_api_types as api;
use pilus_api_types::paths;
use pilus_client::blocking::Client;
use pilus_lab::{Lab, Paths, Plan};
use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

const PREFIX: &str = "t14rtcd";
/// The containerd namespace: CNI_CONTAINERID is `t14rt-ID`.
const NAMESPACE: &str = "t14rt";

fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pilus-cni"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Containerd {
    dir: PathBuf,
    netns: String,
}

/// Drop stops the foreground `ctr run`s and containerd first (their DEL
/// needs the agent), then the node.
struct Fixture {
    ctrd: Containerd,
    foreground: Vec<Child>,
    lab: Lab,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self
            .ctrd
            .bash("containerd_cleanup \"$CONTAINERD_DIR\"", false);
        for c in &mut self.foreground {
            // Each leads a process group: bash and its ctr.
            unsafe {
                libc::kill(-(c.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = c.wait();
        }
        if let Err(e) = Lab::down(&self.lab.paths) {
            eprintln!("tearing down the test lab: {e}");
        }
    }
}

impl Containerd {
    /// A bash snippet with scripts/containerd.sh sourced and this test's
    /// containerd set up, ctr running in the node namespace.
    fn script(&self, script: &str) -> String {
        format!(
            "set -euo pipefail\nsource {}/scripts/containerd.sh\nexport PILUS_CNI_BIN_DIR={} PILUS_CTR_NETNS={} CONTAINERD_NAMESPACE={NAMESPACE}\ncontainerd_env {} >/dev/null\n{script}\n",
            repo().display(),
            self.dir.join("bin").display(),
            self.netns,
            self.dir.display(),
        )
    }

    fn bash(&self, script: &str, check: bool) -> (bool, String) {
        let start = Instant::now();
        let out = Command::new("bash")
            .arg("-c")
            .arg(self.script(script))
            .output()
            .expect("run bash");
        eprintln!(
            "containerd step ({:.1} s): {}",
            start.elapsed().as_secs_f64(),
            script.lines().next().unwrap_or("")
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if check {
            assert!(
                out.status.success(),
                "containerd step failed:\n{script}\n---\n{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (out.status.success(), stdout)
    }
}

impl Fixture {
    fn new() -> Fixture {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the containerd test needs root"
        );
        for tool in ["containerd", "ctr", "runc", "nsenter", "unshare"] {
            let ok = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                ok,
                "{tool} is not installed: scripts/test.sh installs it (apt)"
            );
        }
        let bin_dir = plugin().parent().unwrap().to_path_buf();
        let paths = Paths {
            dir: std::env::temp_dir().join(format!("pilus-{PREFIX}")),
            pins: PathBuf::from(format!("/sys/fs/bpf/pilus-{PREFIX}")),
            bin_dir,
            prefix: PREFIX.into(),
        };
        let _ = Lab::down(&paths);
        let lab = Lab::up(paths, Plan::new(PREFIX, 1, 0).unwrap()).expect("lab up");
        let ctrd = Containerd {
            dir: std::env::temp_dir().join("pilus-t14rt-containerd"),
            netns: lab.state.nodes[0].netns.clone(),
        };
        let socket = lab.state.nodes[0].socket.clone();
        // Leftovers of a crashed run first; then a plugin directory that
        // holds pilus-cni and nothing else.
        let _ = ctrd.bash("containerd_cleanup \"$CONTAINERD_DIR\"", false);
        let f = Fixture {
            ctrd,
            foreground: Vec::new(),
            lab,
        };
        std::fs::create_dir_all(f.ctrd.dir.join("bin")).unwrap();
        std::fs::copy(plugin(), f.ctrd.dir.join("bin/pilus-cni")).unwrap();
        f.ctrd.bash(
            &format!(
                "containerd_start\ncontainerd_conflist pilus '{{\"type\":\"pilus-cni\",\"socket\":\"{}\"}}'\ncontainerd_image",
                socket.display()
            ),
            true,
        );
        f
    }

    fn client(&self) -> Client {
        Client::new(&self.lab.state.nodes[0].socket)
    }

    fn endpoints(&self) -> Vec<api::Endpoint> {
        self.client().get_json(paths::ENDPOINTS).unwrap()
    }

    /// Starts `ctr run --cni --rm` in the foreground of a process of its
    /// own (ctr calls DEL only when it sees its task exit), and waits for
    /// the container's endpoint.
    fn start(&mut self, id: &str, label: Option<&str>, command: &str) -> api::Endpoint {
        let label = label.map_or(String::new(), |l| format!("--label {l}"));
        let child = Command::new("bash")
            .arg("-c")
            .arg(self.ctrd.script(&format!(
                "ctr_run --cni --rm {label} \"$PILUS_CTR_IMAGE\" {id} {command}"
            )))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        self.foreground.push(child);
        let cid = format!("{NAMESPACE}-{id}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(ep) = self.endpoints().into_iter().find(|e| e.container_id == cid) {
                return ep;
            }
            assert!(Instant::now() < deadline, "no endpoint for {cid}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `wget` from a fresh container (foreground `ctr run --cni --rm`); the
    /// page, or None. (busybox-static's `wget -T` crashes, so `timeout`
    /// bounds it, under a shell: as PID 1 wget would ignore its SIGTERM.)
    fn fetch(&self, label: Option<&str>, url: &str) -> Option<String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!("fetch{}", N.fetch_add(1, Ordering::Relaxed));
        let label = label.map_or(String::new(), |l| format!("--label {l}"));
        let (ok, out) = self.ctrd.bash(
            &format!("ctr_run --cni --rm {label} \"$PILUS_CTR_IMAGE\" {id} sh -c 'timeout 3 wget -q -O - {url}; exit $?'"),
            false,
        );
        ok.then(|| out.trim().to_string())
    }

    fn wait_gone(&self, cid: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.endpoints().iter().any(|e| e.container_id == cid) {
            assert!(
                Instant::now() < deadline,
                "the endpoint of {cid} outlived its container"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn runtime_labels(ep: &api::Endpoint) -> Vec<String> {
    ep.label_sources
        .iter()
        .filter(|l| l.source == "runtime")
        .map(|l| l.label.clone())
        .collect()
}

#[test]
fn ctr_run_labels_become_runtime_labels_that_policy_selects() {
    let mut f = Fixture::new();

    let web = f.start(
        "web",
        Some("app=web"),
        "sh -c 'mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www'",
    );
    assert_eq!(web.ipv4.octets()[..3], [198, 18, 1], "{web:?}");
    // containerd's own label (io.containerd.image.config.stop-signal)
    // stays out of the identity.
    assert_eq!(runtime_labels(&web), vec!["k8s:app=web"], "{web:?}");
    assert!(web.netns.starts_with("/proc/"), "{}", web.netns);

    let client = f.start("client", Some("app=client"), "sleep 300");
    assert_eq!(
        runtime_labels(&client),
        vec!["k8s:app=client"],
        "{client:?}"
    );
    assert_ne!(client.identity, web.identity);

    // Wait for httpd, then traffic from other containers.
    let url = format!("http://{}/", web.ipv4);
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        if let Some(p) = f.fetch(Some("app=client"), &url) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "web never answered from a client container"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(page, "hello-from-web");
    assert_eq!(f.fetch(None, &url).as_deref(), Some("hello-from-web"));

    // Only app=client into app=web.
    let policy = f.lab.paths.dir.join("web-from-client.yaml");
    std::fs::write(
        &policy,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: web-from-client\n  namespace: default\nspec:\n  endpointSelector:\n    matchLabels:\n      app: web\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: client\n    toPorts:\n    - ports:\n      - port: \"80\"\n        protocol: TCP\n",
    )
    .unwrap();
    let out = Command::new(f.lab.paths.bin_dir.join("pilus"))
        .arg("--socket")
        .arg(&f.lab.state.nodes[0].socket)
        .args(["policy", "import"])
        .arg(&policy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        f.fetch(Some("app=client"), &url).as_deref(),
        Some("hello-from-web")
    );
    assert_eq!(
        f.fetch(None, &url),
        None,
        "an unlabelled container got through the policy"
    );
    assert_eq!(
        f.fetch(Some("app=other"), &url),
        None,
        "a container labelled app=other got through the policy"
    );

    // The client's task ends: ctr's DEL removes its endpoint.
    f.ctrd.bash("ctrn task kill -s KILL client", true);
    f.wait_gone(&format!("{NAMESPACE}-client"));
    f.ctrd.bash("ctrn task kill -s KILL web", true);
    f.wait_gone(&format!("{NAMESPACE}-web"));
    for c in &mut f.foreground {
        let status = c.wait().unwrap();
        assert!(!status.success(), "ctr run of a killed task: {status}");
    }
    f.foreground.clear();
    assert_eq!(f.endpoints(), vec![]);
    let s: api::Status = f.client().get_json(paths::STATUS).unwrap();
    assert_eq!(s.ipam_used, 0);
    // --rm: ctr removed the containers too.
    let (_, left) = f.ctrd.bash("ctrn containers ls -q", true);
    assert_eq!(left.trim(), "", "containers left");
    let links = Command::new("ip")
        .args(["-n", &f.lab.state.nodes[0].netns, "-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("lxc"), "host links left: {links}");
}
