//! Tier 3: the real agent (pilusd, a child process) running inside a node
//! namespace, pods created through its API, real TCP and UDP between them.
//!
//! - a dozen policies (both formats), each probed pod-to-pod on 80/81 TCP
//!   and UDP and compared with its expected reachability table;
//! - an agent restart during a TCP connection: the connection survives, the
//!   maps and state are the same afterwards;
//! - invalid documents rejected with a precise message, the policy map
//!   unchanged as `pilus bpf policy get` shows it.
//!
//! Needs root; fails (never skips) without it. The guard removes the agent,
//! its pins, its state, every namespace and link, also when a test fails.

mod common;

use common::{pilus_cli, Cluster, Pod, NO, YES};
use pilus_api_types::{BpfIpcacheEntry, Endpoint, Identity, Revision, Status};
use pilus_netns::probe;
use std::{
    io::{Read, Write},
    net::{SocketAddrV4, TcpStream},
    process::Command,
};

fn is(p: &Pod, namespace: &str, app: &str) -> bool {
    p.namespace == namespace && p.app == app
}

fn four_pods(tag: &str) -> Cluster {
    Cluster::four_pods("t4", tag)
}

type Expect = fn(&Pod, &Pod, u16, &str) -> bool;

/// (name, documents, expected reachability).
fn policies() -> Vec<(&'static str, &'static str, Expect)> {
    vec![
        (
            "CNP: shop/web accepts only shop/client on 80/TCP",
            r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-client, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#,
            |s, d, port, proto| !is(d, "shop", "web") || (is(s, "shop", "client") && port == 80 && proto == "TCP"),
        ),
        (
            "NetworkPolicy: default deny ingress in shop",
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#,
            |_, d, _, _| d.namespace != "shop",
        ),
        (
            "NetworkPolicy: shop accepts namespaces labelled team=ops on 80 (TCP by default)",
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-ops, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: ops}}}]
    ports: [{port: 80}]
"#,
            |s, d, port, proto| d.namespace != "shop" || (s.namespace == "ops" && port == 80 && proto == "TCP"),
        ),
        (
            "CNP egress: shop/client may only reach shop/web, ports 80-81 any protocol",
            r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-out, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "80", endPort: 81}]}]
"#,
            |s, d, _, _| !is(s, "shop", "client") || is(d, "shop", "web"),
        ),
        (
            "CCNP: deny web (every namespace) from monitor, allow everything else",
            r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: no-monitor-to-web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: monitor}}]
"#,
            |s, d, _, _| !(d.app == "web" && s.app == "monitor"),
        ),
        (
            "NetworkPolicy egress: ops/monitor may send only UDP 81, to pods of any namespace",
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: monitor-out, namespace: ops}
spec:
  podSelector: {matchLabels: {app: monitor}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {}}]
    ports: [{protocol: UDP, port: 81}]
"#,
            |s, _, port, proto| !is(s, "ops", "monitor") || (port == 81 && proto == "UDP"),
        ),
        (
            "CNP: ops/web accepts the cluster on UDP 80 only",
            r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: ops-web-udp, namespace: ops}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [cluster]
    toPorts: [{ports: [{port: "80", endPort: 80, protocol: UDP}]}]
"#,
            |_, d, port, proto| !is(d, "ops", "web") || (port == 80 && proto == "UDP"),
        ),
        (
            "CNP fromCIDR: a CIDR peer never matches pods (they have identities), so shop/web accepts nobody",
            r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-cidr, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDRSet: [{cidr: 198.18.0.0/16, except: [198.18.0.128/25]}]
"#,
            |_, d, _, _| !is(d, "shop", "web"),
        ),
        (
            "Rules array (cilium policy import): every web accepts client on 80/TCP",
            r#"[{
  "labels": [{"key": "name", "value": "l3-rule"}],
  "endpointSelector": {"matchLabels": {"app": "web"}},
  "ingress": [{
    "fromEndpoints": [{"matchLabels": {"app": "client"}}],
    "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]
  }]
}]"#,
            |s, d, port, proto| d.app != "web" || (s.app == "client" && port == 80 && proto == "TCP"),
        ),
        (
            "Two policies select shop/web: the union of what they allow",
            r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ops}}, podSelector: {matchLabels: {app: monitor}}}]
    ports: [{protocol: UDP, port: 81}]
"#,
            |s, d, port, proto| {
                !is(d, "shop", "web")
                    || (is(s, "shop", "client") && port == 80 && proto == "TCP")
                    || (is(s, "ops", "monitor") && port == 81 && proto == "UDP")
            },
        ),
        (
            "NetworkPolicy: podSelector AND namespaceSelector (client pods of team=shop) into ops/web",
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: and, namespace: ops}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: shop}}
      podSelector: {matchLabels: {app: client}}
"#,
            |s, d, _, _| !is(d, "ops", "web") || is(s, "shop", "client"),
        ),
        (
            "CNP deny precedence: shop/client allowed everything except 81 (any protocol)",
            r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-no-81, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEntities: [all]
  egressDeny:
  - toEndpoints: [{matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: Exists}]}]
    toPorts: [{ports: [{port: "81", protocol: ANY}]}]
"#,
            |s, _, port, _| !is(s, "shop", "client") || port != 81,
        ),
    ]
}

#[test]
fn policy_matrix_over_real_traffic() {
    let c = four_pods("matrix");
    let all = c.matrix(&|_, _, _, _| true);
    assert!(
        all.is_empty(),
        "without policy everything is reachable:\n{}",
        all.join("\n")
    );
    for (name, text, expect) in policies() {
        let r = c
            .import(text)
            .unwrap_or_else(|e| panic!("{name}: import failed: {e}"));
        // The import answers once its revision is enforced.
        let rev: Revision = c
            .client()
            .get_json(&format!("/v1/policy/revision?wait={}", r.revision))
            .unwrap();
        assert!(rev.enforced >= r.revision);
        let bad = c.matrix(&expect);
        assert!(bad.is_empty(), "{name}:\n{}", bad.join("\n"));
        c.delete_all();
        // Deleting restores full reachability; check a sample of what the
        // policy denied.
        let back = c.matrix(&|_, _, _, _| true);
        assert!(
            back.is_empty(),
            "{name}, after delete:\n{}",
            back.join("\n")
        );
        // Nothing is left in the policy map.
        assert!(
            c.bpf_policy_all().is_empty(),
            "{name}: entries left after delete"
        );
    }
}

#[test]
fn agent_restart_keeps_connections_state_and_maps() {
    let mut c = four_pods("restart");
    c.import(policies()[0].1).unwrap();
    let client = c.pod("shop", "client");
    let web = c.pod("shop", "web").ep.ipv4;
    // A long-lived connection, opened inside the client's namespace.
    let mut stream = client
        .ns
        .within(|| TcpStream::connect_timeout(&SocketAddrV4::new(web, 80).into(), YES))
        .unwrap()
        .expect("connect");
    stream.set_read_timeout(Some(YES)).unwrap();
    let echo = |s: &mut TcpStream, msg: &[u8]| {
        s.write_all(msg).unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf)
            .expect("echo over the kept connection");
        assert_eq!(buf, msg);
    };
    echo(&mut stream, b"before restart\n");

    let dump = |c: &Cluster| {
        let eps: Vec<Endpoint> = c.client().get_json("/v1/endpoints").unwrap();
        let ids: Vec<Identity> = c.client().get_json("/v1/identities").unwrap();
        let ipc: Vec<BpfIpcacheEntry> = c.client().get_json("/v1/bpf/ipcache").unwrap();
        let rev: Revision = c.client().get_json("/v1/policy/revision").unwrap();
        (
            serde_json::to_string(&eps).unwrap(),
            ids.iter()
                .map(|i| (i.id, i.labels.clone(), i.refs))
                .collect::<Vec<_>>(),
            ipc,
            c.bpf_policy_all(),
            rev.revision,
        )
    };
    let before = dump(&c);
    c.stop_agent();
    // The datapath runs without the agent: the connection, and new allowed
    // connections, still work; denied ones are still denied.
    echo(&mut stream, b"agent down\n");
    let client = c.pod("shop", "client");
    assert!(probe::tcp(&client.ns, SocketAddrV4::new(web, 80), YES).unwrap());
    assert!(!probe::tcp(&client.ns, SocketAddrV4::new(web, 81), NO).unwrap());
    c.start_agent();
    echo(&mut stream, b"after restart\n");
    let after = dump(&c);
    assert_eq!(before, after, "state and maps after restart");
    let s: Status = c.client().get_json("/v1/status").unwrap();
    assert_eq!(
        (s.resync_written, s.resync_removed),
        (0, 0),
        "a restart rewrites nothing"
    );
    // And the restarted agent still manages the datapath.
    c.delete_all();
    assert!(probe::tcp(&c.pod("shop", "client").ns, SocketAddrV4::new(web, 81), YES).unwrap());
}

#[test]
fn invalid_documents_are_rejected_and_change_nothing() {
    let c = four_pods("invalid");
    c.import(policies()[0].1).unwrap();
    let cli = pilus_cli();
    let bpf_get = |ep: u16| c.pilus(&["bpf", "policy", "get", &ep.to_string(), "-o", "json"]);
    let eps: Vec<u16> = c.pods.iter().map(|p| p.ep.id).collect();
    let before: Vec<String> = eps.iter().map(|&e| bpf_get(e)).collect();
    assert!(
        before.iter().any(|s| s.contains("\"identity\"")),
        "the valid policy wrote entries"
    );
    let ok_doc = policies()[1].1;
    let cases: &[(&str, &str)] = &[
        ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: n}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEndpoint: []}]", "fromEndpoint"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: http}]}]", "named port"),
        ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: n}\nspec:\n  endpointSelector: {}\n  ingress: [{fromCIDR: [198.18.0.1/8]}]", "host bits"),
        ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: n}\nspec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"90\", endPort: 80}]}]}]", "endPort"),
        ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: n}\nspec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"80\", protocol: QUIC}]}]}]", "QUIC"),
        ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: n}\nspec:\n  endpointSelector: {matchExpressions: [{key: app, operator: Maybe}]}", "Maybe"),
        ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: n}\nspec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"80\"}], rules: {http: [{method: GET}]}}]}]", "not supported"),
        ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: n}\nspec: {endpointSelector: {}, ingress: [{fromEntities: [moon]}]}", "moon"),
        ("kind: [unclosed", "YAML"),
    ];
    for (doc, needle) in cases {
        // A valid document first: the whole import must still be refused.
        let text = format!("{ok_doc}\n---\n{doc}\n");
        let path = c.dir.join("bad.yaml");
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(&cli)
            .args(["--socket"])
            .arg(c.socket())
            .args(["policy", "import"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "exit code for an invalid document ({needle}): {err}"
        );
        assert!(
            err.contains("document 2"),
            "the message names the document: {err}"
        );
        assert!(
            err.to_lowercase().contains(&needle.to_lowercase()),
            "the message says why ({needle}): {err}"
        );
        let now: Vec<String> = eps.iter().map(|&e| bpf_get(e)).collect();
        assert_eq!(
            now, before,
            "maps changed after a rejected import ({needle})"
        );
    }
    let policies: Vec<serde_json::Value> = c.client().get_json("/v1/policies").unwrap();
    assert_eq!(policies.len(), 1);
    // A missing endpoint is exit code 3.
    let out = Command::new(&cli)
        .args(["--socket"])
        .arg(c.socket())
        .args(["endpoint", "get", "9999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}
