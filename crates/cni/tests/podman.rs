//! Tier 3 with a real container runtime: Debian's podman (runc, CNI
//! backend) attaches containers through pilus-cni to a pilusd running in a
//! node namespace (podman runs under `nsenter --net` into that namespace,
//! so the host side of every veth lives there, not in the root namespace).
//! Containers get their address from Pilus, reach each other, and a policy
//! imported with `pilus policy import` is enforced on them. Podman passes a
//! plugin no container labels (issue 14, docs/runtimes.md): a container's
//! labels come from the network's `args.cni.labels`, or are given to its
//! endpoint afterwards with `pilus endpoint labels`. Podman's own
//! 10.88.0.0/16 network can never be used: its plugin directory holds only
//! pilus-cni (see scripts/podman.sh).
//!
//! Needs root, podman, runc and busybox-static (scripts/test.sh installs
//! them); fails, never skips, without them.

use pilus_api_types as api;
use pilus_api_types::paths;
use pilus_client::blocking::Client;
use pilus_lab::{Lab, Paths, Plan};
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pilus-cni"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Drop removes podman's containers first (their DEL needs the agent),
/// then the node.
struct Fixture {
    podman: Podman,
    lab: Lab,
}

struct Podman {
    dir: PathBuf,
    netns: String,
    socket: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.podman.bash("podman_cleanup \"$PODMAN_DIR\"", false);
        // podman_cleanup removed $PODMAN_DIR; the plugin directory and the
        // policy file are beside it.
        let _ = std::fs::remove_dir_all(&self.podman.dir);
        if let Err(e) = Lab::down(&self.lab.paths) {
            eprintln!("tearing down the test lab: {e}");
        }
    }
}

impl Podman {
    /// Runs a bash snippet with scripts/podman.sh sourced and this test's
    /// isolated podman set up, inside the node namespace.
    fn bash(&self, script: &str, check: bool) -> (bool, String) {
        let labelled = |name: &str, app: Option<&str>| {
            let args = app.map_or(String::new(), |a| {
                format!(r#","args":{{"cni":{{"labels":[{{"key":"app","value":"{a}"}}]}}}}"#)
            });
            format!(
                r#"podman_conflist {name} '{{"type":"pilus-cni","socket":"{}"{args}}}' >/dev/null"#,
                self.socket.display()
            )
        };
        let full = format!(
            "set -euo pipefail\nsource {}/scripts/podman.sh\nexport PILUS_CNI_BIN_DIR={}\nexport PILUS_PODMAN_NETNS={}\npodman_env {} >/dev/null\n{}\n{}\n{}\n{script}\n",
            repo().display(),
            self.dir.join("bin").display(),
            self.netns,
            self.dir.join("podman").display(),
            labelled("pilus", None),
            labelled("pilus-web", Some("web")),
            labelled("pilus-client", Some("client")),
        );
        let start = Instant::now();
        let out = Command::new("bash")
            .arg("-c")
            .arg(&full)
            .output()
            .expect("run bash");
        // Podman steps are slow enough to be worth a line each in the log.
        eprintln!(
            "podman step ({:.1} s): {}",
            start.elapsed().as_secs_f64(),
            script.lines().next().unwrap_or("")
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if check {
            assert!(
                out.status.success(),
                "podman step failed:\n{script}\n---\n{text}"
            );
        }
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Fixture {
    /// A node (lab `prefix`) and a podman of its own under
    /// $TMPDIR/`dir_name`: tests of this file may run side by side.
    fn new(prefix: &str, dir_name: &str) -> Fixture {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the podman test needs root"
        );
        for tool in ["podman", "runc", "nsenter"] {
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
            dir: std::env::temp_dir().join(format!("pilus-{prefix}")),
            pins: PathBuf::from(format!("/sys/fs/bpf/pilus-{prefix}")),
            bin_dir,
            prefix: prefix.into(),
        };
        let _ = Lab::down(&paths);
        let lab = Lab::up(paths, Plan::new(prefix, 1, 0).unwrap()).expect("lab up");
        let dir = std::env::temp_dir().join(dir_name);
        let podman = Podman {
            dir: dir.clone(),
            netns: lab.state.nodes[0].netns.clone(),
            socket: lab.state.nodes[0].socket.clone(),
        };
        // Leftovers of a crashed run first, then a plugin directory that
        // holds pilus-cni and nothing else.
        let _ = podman.bash("podman_cleanup \"$PODMAN_DIR\"", false);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::copy(plugin(), dir.join("bin/pilus-cni")).unwrap();
        let f = Fixture { podman, lab };
        f.podman.bash("podman_image >/dev/null", true);
        f
    }

    fn client(&self) -> Client {
        Client::new(&self.lab.state.nodes[0].socket)
    }

    fn endpoints(&self) -> Vec<api::Endpoint> {
        self.client().get_json(paths::ENDPOINTS).unwrap()
    }

    /// Runs the pilus CLI against the node's agent; asserts it succeeds.
    fn pilus(&self, args: &[&str]) -> String {
        let out = Command::new(self.lab.paths.bin_dir.join("pilus"))
            .arg("--socket")
            .arg(&self.lab.state.nodes[0].socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pilus {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Imports the policy that lets only app=client into app=web (port 80).
    fn import_web_from_client(&self) {
        let policy = self.podman.dir.join("web-from-client.yaml");
        std::fs::write(&policy, WEB_FROM_CLIENT).unwrap();
        self.pilus(&["policy", "import", &policy.display().to_string()]);
    }

    /// `wget` from inside running container `name`; the page, or None.
    fn fetch_from(&self, name: &str, url: &str) -> Option<String> {
        let (ok, out) = self.podman.bash(
            &format!("pmn exec {name} sh -c 'timeout 3 wget -q -O - {url}; exit $?'"),
            false,
        );
        ok.then(|| out.trim().to_string())
    }

    /// Starts the web container on the app=web network; its endpoint.
    fn start_web(&self) -> api::Endpoint {
        self.podman.bash(
            "pmn run -d --name web --network pilus-web \"$PILUS_PODMAN_IMAGE\" \
             sh -c 'mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www' >/dev/null",
            true,
        );
        let eps = self.endpoints();
        eps.into_iter()
            .find(|e| e.pod_name.as_deref() == Some("web"))
            .unwrap_or_else(|| panic!("no endpoint for the web container"))
    }

    /// Waits until no endpoint is left, then checks that no address and no
    /// host link is either.
    fn assert_all_gone(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.endpoints().is_empty() {
            assert!(
                Instant::now() < deadline,
                "endpoints left: {:?}",
                self.endpoints()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let s: api::Status = self.client().get_json(paths::STATUS).unwrap();
        assert_eq!(s.ipam_used, 0);
        let links = Command::new("ip")
            .args(["-n", &self.lab.state.nodes[0].netns, "-o", "link", "show"])
            .output()
            .unwrap();
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(!links.contains("lxc"), "host links left: {links}");
    }

    /// `wget` from a fresh container on `network`; the page, or None.
    /// (busybox-static's `wget -T` crashes, so `timeout` bounds it; under a
    /// shell, because as PID 1 wget would ignore timeout's SIGTERM.)
    fn fetch(&self, network: &str, url: &str) -> Option<String> {
        let (ok, out) = self.podman.bash(
            &format!("pmn run --rm --network {network} \"$PILUS_PODMAN_IMAGE\" sh -c 'timeout 3 wget -q -O - {url}; exit $?'"),
            false,
        );
        ok.then(|| out.trim().to_string())
    }
}

const WEB_FROM_CLIENT: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: web-from-client\n  namespace: default\nspec:\n  endpointSelector:\n    matchLabels:\n      app: web\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: client\n    toPorts:\n    - ports:\n      - port: \"80\"\n        protocol: TCP\n";

#[test]
fn podman_containers_get_pilus_addresses_traffic_and_policy() {
    let f = Fixture::new("t8pm", "pilus-t8-podman");

    // A server container on the labelled network.
    let web = &f.start_web();
    assert_eq!(web.ipv4.octets()[..3], [198, 18, 1], "{web:?}");
    assert!(
        web.labels.iter().any(|l| l.ends_with("app=web")),
        "{:?}",
        web.labels
    );
    assert_eq!(web.cni_network.as_deref(), Some("pilus-web"));
    assert!(web.netns.starts_with("/run/netns/"), "{}", web.netns);
    // Inside the container: Pilus's address, never podman's 10.88.0.0/16.
    let (_, addrs) = f.podman.bash("pmn exec web ip -4 -o addr show", true);
    assert!(addrs.contains(&format!("{}/32", web.ipv4)), "{addrs}");
    assert!(!addrs.contains("10.88."), "{addrs}");

    // Wait for httpd, then traffic from other containers.
    let url = format!("http://{}/", web.ipv4);
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        if let Some(p) = f.fetch("pilus-client", &url) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "web never answered from a client container"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(page, "hello-from-web");
    assert_eq!(f.fetch("pilus", &url).as_deref(), Some("hello-from-web"));

    // A policy imported with `pilus policy import`: only app=client in.
    f.import_web_from_client();
    assert_eq!(
        f.fetch("pilus-client", &url).as_deref(),
        Some("hello-from-web")
    );
    assert_eq!(
        f.fetch("pilus", &url),
        None,
        "an unlabelled container got through the policy"
    );

    // Removing the containers removes their endpoints and links.
    f.podman.bash("pmn rm -f -t 0 web >/dev/null", true);
    f.assert_all_gone();
}

/// Issue 14: `podman run --label` does not reach the plugin (podman 4.3
/// passes none at ADD, and its container is locked meanwhile), so a policy
/// on app=client denies such a container until its endpoint is labelled
/// with `pilus endpoint labels`; deleting the label denies it again. Real
/// connections from inside the running container each time.
#[test]
fn podman_container_labelled_with_pilus_endpoint_labels() {
    let f = Fixture::new("t14rtpm", "pilus-t14rt-podman");
    let web = f.start_web();
    let url = format!("http://{}/", web.ipv4);
    let (_, id) = f.podman.bash(
        "pmn run -d --name client --label app=client --network pilus \"$PILUS_PODMAN_IMAGE\" sleep 600",
        true,
    );
    let id = id.trim().to_string();
    let client = f
        .endpoints()
        .into_iter()
        .find(|e| e.container_id == id)
        .unwrap_or_else(|| panic!("no endpoint for container {id}"));
    let app_labels = |ep: &api::Endpoint| -> Vec<String> {
        ep.labels
            .iter()
            .filter(|l| l.contains("app="))
            .cloned()
            .collect()
    };
    // Podman's --label never reached the endpoint.
    assert_eq!(app_labels(&client), Vec::<String>::new(), "{client:?}");

    // Before any policy the client reaches web (httpd may need a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.fetch_from("client", &url).as_deref() != Some("hello-from-web") {
        assert!(Instant::now() < deadline, "web never answered the client");
        std::thread::sleep(Duration::from_millis(200));
    }
    f.import_web_from_client();
    assert_eq!(
        f.fetch_from("client", &url),
        None,
        "an unlabelled podman container got through the policy"
    );

    // Labelled by its container id, as `podman run -d` printed it.
    f.pilus(&["endpoint", "labels", &id, "--add", "app=client"]);
    let ep: api::Endpoint = f
        .client()
        .get_json(&format!("{}/{}", paths::ENDPOINTS, client.id))
        .unwrap();
    assert!(
        ep.label_sources
            .iter()
            .any(|l| l.label.ends_with("app=client") && l.source == "user"),
        "{ep:?}"
    );
    assert_eq!(
        f.fetch_from("client", &url).as_deref(),
        Some("hello-from-web"),
        "the labelled client was denied"
    );

    f.pilus(&["endpoint", "labels", &id, "--delete", "app"]);
    assert_eq!(
        f.fetch_from("client", &url),
        None,
        "the client got through after its label was deleted"
    );

    f.podman.bash("pmn rm -f -t 0 client web >/dev/null", true);
    f.assert_all_gone();
}
