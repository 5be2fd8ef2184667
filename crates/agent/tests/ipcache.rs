//! Tier 3, issue 9: who owns the ipcache, Kubernetes ipBlocks that select
//! pods, and a crash in the middle of changes — on the real agent with real
//! traffic.
//!
//! - a CNP `toCIDR` naming a pod's /32 leaves the pod's identity in the
//!   ipcache (and deleting the policy leaves it too); a CIDR that is no
//!   endpoint gets a CIDR identity that comes and goes with its policy;
//! - a NetworkPolicy ipBlock of one pod's /32 allows egress to that pod; a
//!   block with an `except` of one pod allows every pod but that one, and a
//!   pod created after the import, inside the block, without a re-import;
//! - pilusd killed with SIGKILL during a loop of imports and deletes comes
//!   back with maps equal to its stored state, and traffic that matches
//!   the stored policy.
//!
//! Needs root; fails (never skips) without it.

mod common;

use common::{Cluster, NO, YES};
use pilus_api_types::{BpfIpcacheEntry, Endpoint, PolicySummary, Status};
use pilus_netns::probe;
use std::{net::SocketAddrV4, time::Duration};

fn pods(tag: &str) -> Cluster {
    let mut c = Cluster::new("t9ipc", tag, &[]);
    c.add_pod("shop", "web");
    c.add_pod("shop", "client");
    c.add_pod("ops", "monitor");
    c
}

fn ipcache(c: &Cluster) -> Vec<BpfIpcacheEntry> {
    c.client().get_json("/v1/bpf/ipcache").unwrap()
}

fn identity_of(c: &Cluster, prefix: &str) -> Option<u32> {
    ipcache(c)
        .into_iter()
        .find(|e| e.prefix == prefix)
        .map(|e| e.identity)
}

fn tcp(c: &Cluster, from: (&str, &str), to: (&str, &str), port: u16) -> bool {
    let dst = c.pod(to.0, to.1).ep.ipv4;
    let t = YES.max(NO);
    probe::tcp(&c.pod(from.0, from.1).ns, SocketAddrV4::new(dst, port), t).unwrap()
}

#[test]
fn a_policy_cidr_naming_a_pod_never_changes_who_the_pod_is() {
    let c = pods("cidr");
    let web = c.pod("shop", "web").ep.clone();
    let web32 = format!("{}/32", web.ipv4);
    assert_eq!(identity_of(&c, &web32), Some(web.identity));
    c.import(&format!(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: client-out, namespace: shop}}
spec:
  endpointSelector: {{matchLabels: {{app: client}}}}
  egress:
  - toCIDR: ["{web32}", "198.19.5.0/24"]
"#
    ))
    .unwrap();
    // The pod is still itself: a CIDR rule never selects a managed
    // endpoint (Cilium's semantics), so client → web is now denied, while
    // other pods still reach web.
    assert_eq!(identity_of(&c, &web32), Some(web.identity));
    let cidr_id = identity_of(&c, "198.19.5.0/24").expect("a CIDR identity for the CIDR");
    assert!(cidr_id >= 1 << 24, "{cidr_id}");
    assert!(!tcp(&c, ("shop", "client"), ("shop", "web"), 80));
    assert!(tcp(&c, ("ops", "monitor"), ("shop", "web"), 80));
    // The API shows both writers of the pod's /32, the pod first.
    let view: Vec<serde_json::Value> = c.client().get_json("/v1/ipcache").unwrap();
    let entry = view.iter().find(|e| e["prefix"] == web32.as_str()).unwrap();
    let sources: Vec<&str> = entry["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["local-endpoint", "policy-cidr"]);

    c.delete_all();
    assert_eq!(
        identity_of(&c, &web32),
        Some(web.identity),
        "the pod's entry went with the policy"
    );
    assert_eq!(identity_of(&c, "198.19.5.0/24"), None);
    assert!(tcp(&c, ("shop", "client"), ("shop", "web"), 80));
}

#[test]
fn knp_ipblocks_select_pods_on_real_traffic() {
    let mut c = pods("knp");
    let web = c.pod("shop", "web").ep.ipv4;
    let monitor = c.pod("ops", "monitor").ep.ipv4;
    c.import(&format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: client-to-web-ip, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: client}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{ipBlock: {{cidr: {web}/32}}}}]
"#
    ))
    .unwrap();
    assert!(
        tcp(&c, ("shop", "client"), ("shop", "web"), 80),
        "egress to one pod's /32"
    );
    assert!(!tcp(&c, ("shop", "client"), ("ops", "monitor"), 80));
    c.delete_all();

    c.import(&format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: client-to-pods, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: client}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{ipBlock: {{cidr: 198.18.0.0/24, except: [{monitor}/32]}}}}]
"#
    ))
    .unwrap();
    assert!(tcp(&c, ("shop", "client"), ("shop", "web"), 80));
    assert!(
        !tcp(&c, ("shop", "client"), ("ops", "monitor"), 80),
        "the except"
    );
    // A pod created now, inside the block, is allowed without a re-import.
    c.add_pod("dev", "late");
    assert!(
        tcp(&c, ("shop", "client"), ("dev", "late"), 80),
        "a pod made after the import"
    );
}

#[test]
fn a_killed_agent_restarts_to_its_stored_state() {
    let mut c = pods("crash");
    const P: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-80, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;
    for round in 0..3 {
        // Imports and deletes as fast as the agent takes them, killed at a
        // point nobody chose.
        let socket = c.socket();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let looper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let client = pilus_client::blocking::Client::new(socket);
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let body = pilus_api_types::PolicyImport {
                        files: vec![pilus_api_types::PolicyFile {
                            name: "p.yaml".into(),
                            text: P.into(),
                        }],
                    };
                    let _ = client.post_json::<_, serde_json::Value>("/v1/policies", &body);
                    let _ = client.delete_json::<serde_json::Value>("/v1/policies/shop/web-80");
                    n += 1;
                }
                n
            })
        };
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        c.kill_agent();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let loops = looper.join().unwrap();
        assert!(loops > 0, "round {round}: no change ran before the kill");
        c.start_agent();
        let stored: Vec<PolicySummary> = c.client().get_json("/v1/policies").unwrap();
        // What the maps say must be what the stored state says.
        let enforced = !stored.is_empty();
        assert_eq!(
            tcp(&c, ("shop", "client"), ("shop", "web"), 81),
            !enforced,
            "round {round}: traffic to 81 vs the stored policy ({} policies)",
            stored.len()
        );
        assert!(tcp(&c, ("shop", "client"), ("shop", "web"), 80));
        // A clean restart now finds nothing to fix: the maps were already
        // the stored state's.
        let maps = (c.bpf_policy_all(), ipcache(&c));
        c.stop_agent();
        c.start_agent();
        let s: Status = c.client().get_json("/v1/status").unwrap();
        assert_eq!(
            (s.resync_written, s.resync_removed),
            (0, 0),
            "round {round}: the first restart left the maps off the stored state"
        );
        assert_eq!((c.bpf_policy_all(), ipcache(&c)), maps);
        let eps: Vec<Endpoint> = c.client().get_json("/v1/endpoints").unwrap();
        assert_eq!(eps.len(), 3);
    }
}
