//! Tier 3, issue 14: `pilus endpoint labels` on the real agent. A pod made
//! without labels is denied by a policy that wants `app=client`, allowed
//! once it is labelled, denied again when the label goes; a TCP stream
//! between allowed pods never stalls and never sees a drop while one side's
//! labels (and identity) change back and forth; bad input exits 2 and
//! changes nothing; labels and identities survive a restart.
//!
//! Needs root; fails (never skips) without it.

mod common;

use common::{pilus_cli, Cluster, NO, YES};
use pilus_api_types::{Endpoint, MonitorBatch};
use pilus_netns::probe;
use std::{
    io::{Read, Write},
    net::{SocketAddrV4, TcpStream},
    process::{Command, Output},
    time::{Duration, Instant},
};

const WEB_FROM_CLIENT: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-client, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
"#;

fn pilus(c: &Cluster, args: &[&str]) -> Output {
    Command::new(pilus_cli())
        .arg("--socket")
        .arg(c.socket())
        .args(args)
        .output()
        .unwrap()
}

fn endpoint_json(c: &Cluster, key: &str) -> String {
    let out = pilus(c, &["endpoint", "get", key, "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn reaches(c: &Cluster, from: &str, to: &str, allowed: bool) -> bool {
    let t = if allowed { YES } else { NO };
    let dst = c.pod("shop", to).ep.ipv4;
    probe::tcp(&c.pod("shop", from).ns, SocketAddrV4::new(dst, 80), t).unwrap()
}

#[test]
fn labels_given_by_hand_decide_policy() {
    let mut c = Cluster::new("t14lab", "hand", &[]);
    c.add_pod("shop", "web");
    c.add_pod_with_labels("shop", "bare", &[]);
    c.import(WEB_FROM_CLIENT).unwrap();
    assert!(
        !reaches(&c, "bare", "web", false),
        "an unlabelled pod is denied"
    );
    let add = pilus(
        &c,
        &["endpoint", "labels", "shop/bare", "--add", "app=client"],
    );
    assert!(add.status.success(), "{add:?}");
    assert!(
        reaches(&c, "bare", "web", true),
        "allowed once labelled app=client"
    );
    let got: Endpoint = serde_json::from_str(&endpoint_json(&c, "shop/bare")).unwrap();
    assert!(
        got.label_sources
            .iter()
            .any(|l| l.label == "k8s:app=client" && l.source == "user"),
        "{:?}",
        got.label_sources
    );
    let del = pilus(&c, &["endpoint", "labels", "shop/bare", "--delete", "app"]);
    assert!(del.status.success(), "{del:?}");
    assert!(
        !reaches(&c, "bare", "web", false),
        "denied again without the label"
    );

    // Bad input: exit 2, and the endpoint is as it was.
    let before = endpoint_json(&c, "shop/bare");
    let file = c.dir.join("labels.yaml");
    std::fs::write(&file, "shop/bare: {app: client}\nshop/nobody: {app: x}\n").unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["endpoint", "labels", "shop/bare", "--add", "app=-bad"],
        vec!["endpoint", "labels", "shop/bare", "--add", "Bad Key=x"],
        vec!["endpoint", "labels", "shop/bare", "--add", "reserved:host"],
        vec!["endpoint", "labels", "shop/nobody", "--add", "app=x"],
        vec!["endpoint", "labels", "shop/bare", "--delete", "tier"],
        vec!["endpoint", "labels", "shop/bare"],
        vec!["endpoint", "labels", "--from", file.to_str().unwrap()],
    ];
    for args in cases {
        let out = pilus(&c, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(
            endpoint_json(&c, "shop/bare"),
            before,
            "{args:?} changed it"
        );
    }
    // The file, once valid, is applied whole.
    std::fs::write(
        &file,
        "shop/bare: {app: client, tier: front}\nshop/web: {tier: back}\n",
    )
    .unwrap();
    let ok = pilus(
        &c,
        &["endpoint", "labels", "--from", file.to_str().unwrap()],
    );
    assert!(ok.status.success(), "{ok:?}");
    assert!(reaches(&c, "bare", "web", true));

    // A restart keeps the user's labels and the identities.
    let eps_before: Vec<Endpoint> = c.client().get_json("/v1/endpoints").unwrap();
    c.stop_agent();
    c.start_agent();
    let eps_after: Vec<Endpoint> = c.client().get_json("/v1/endpoints").unwrap();
    let key = |v: &[Endpoint]| {
        v.iter()
            .map(|e| (e.id, e.identity, e.labels.clone(), e.label_sources.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&eps_after), key(&eps_before));
    assert!(reaches(&c, "bare", "web", true));
}

#[test]
fn relabelling_never_stalls_an_allowed_stream() {
    let mut c = Cluster::new("t14lab", "flip", &[]);
    c.add_pod("shop", "web");
    c.add_pod_with_labels("shop", "client", &["app=client", "round=a"]);
    c.import(WEB_FROM_CLIENT).unwrap();
    let web = c.pod("shop", "web").ep.clone();
    let client = c.pod("shop", "client").ep.clone();
    let since: MonitorBatch = c.client().get_json("/v1/monitor?last=0").unwrap();
    let mut stream = c
        .pod("shop", "client")
        .ns
        .within(|| TcpStream::connect_timeout(&SocketAddrV4::new(web.ipv4, 80).into(), YES))
        .unwrap()
        .expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let echo = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut n, mut worst) = (0u32, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                stream.write_all(b"ping\n").unwrap();
                let mut buf = [0u8; 5];
                stream.read_exact(&mut buf).expect("the stream stalled");
                worst = worst.max(t.elapsed());
                n += 1;
            }
            (n, worst)
        })
    };
    let cp = c.client();
    for i in 0..100 {
        let round = if i % 2 == 0 { "round=b" } else { "round=a" };
        let _: Endpoint = cp
            .post_json(
                &format!("/v1/endpoints/{}/labels", client.id),
                &pilus_api_types::EndpointLabelsChange {
                    add: vec![round.into()],
                    ..Default::default()
                },
            )
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (echoes, worst) = echo.join().unwrap();
    assert!(echoes > 10, "only {echoes} round trips while relabelling");
    assert!(
        worst < Duration::from_secs(1),
        "a round trip took {worst:?}"
    );
    let drops: MonitorBatch = c
        .client()
        .get_json(&format!("/v1/monitor?since={}&type=drop", since.next))
        .unwrap();
    let ours: Vec<_> = drops
        .events
        .iter()
        .filter(|e| [web.id, client.id].contains(&e.endpoint))
        .collect();
    assert!(ours.is_empty(), "drops while relabelling: {ours:?}");
}
