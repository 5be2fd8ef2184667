//! Tier 1: the agent's logic against in-memory maps and plumbing (no
//! root): endpoints, identities, policy import/delete, atomic rejection,
//! and a restart that finds the maps already right.

use pilus_agent::{
    dp::FakeDatapath,
    plumbing::FakePlumbing,
    state::{Op, State},
    Agent, NodeSettings,
};
use pilus_api_types::{EndpointCreate, PolicyFile};
use pilus_policy::{lookup, Direction};
use std::{collections::HashMap, net::Ipv4Addr, path::PathBuf};

fn node() -> NodeSettings {
    NodeSettings {
        node_name: "n1".into(),
        pod_cidr: (Ipv4Addr::new(198, 18, 0, 0), 24),
        router: Ipv4Addr::new(198, 18, 0, 1),
        pin_dir: PathBuf::from("/nonexistent"),
        socket: PathBuf::from("/nonexistent.sock"),
        state_dir: PathBuf::from("/nonexistent"),
    }
}

fn agent_with(plumbing: FakePlumbing, dp: FakeDatapath, dir: Option<&std::path::Path>) -> Agent {
    let store = dir.map(|d| pilus_kvstore::Store::<State, Op>::open(d).expect("store"));
    Agent::start(node(), Box::new(dp), Box::new(plumbing), store).expect("agent")
}

fn fake(a: &Agent) -> &FakeDatapath {
    a.maps()
        .as_any()
        .downcast_ref::<FakeDatapath>()
        .expect("fake")
}

fn ep(a: &mut Agent, cid: &str, ns: &str, labels: &[&str]) -> (u16, u32, Ipv4Addr) {
    let r = a
        .create_endpoint(&EndpointCreate {
            container_id: cid.into(),
            netns: format!("/run/netns/{cid}"),
            ifname: "eth0".into(),
            namespace: ns.into(),
            pod_name: Some(cid.into()),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .expect("create endpoint");
    assert!(r.created);
    (r.endpoint.id, r.endpoint.identity, r.endpoint.ipv4)
}

fn import(a: &mut Agent, text: &str) -> Result<u64, String> {
    a.import(&[PolicyFile {
        name: "test.yaml".into(),
        text: text.into(),
    }])
    .map(|r| r.revision)
    .map_err(|e| e.message())
}

/// What the datapath answers for endpoint `ep` in `dir` from `peer`.
fn allowed(a: &Agent, ep: u16, dir: Direction, peer: u32, proto: u8, port: u16) -> bool {
    let f = fake(a);
    let flags = f
        .endpoints
        .values()
        .find(|e| e.ep_id == ep)
        .expect("endpoint in map")
        .flags;
    lookup::verdict(&f.policy, flags, ep, dir, peer, proto, port).allowed()
}

const WEB_FROM_CLIENT: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;

#[test]
fn endpoints_get_addresses_identities_and_maps() {
    let mut a = agent_with(FakePlumbing::default(), FakeDatapath::default(), None);
    let (e1, id1, ip1) = ep(&mut a, "c1", "shop", &["app=web", "pod-template-hash=abc"]);
    let (e2, id2, ip2) = ep(&mut a, "c2", "shop", &["app=web", "pod-template-hash=def"]);
    let (_, id3, _) = ep(&mut a, "c3", "other", &["app=web"]);
    // Noise labels are filtered: one identity; another namespace: another.
    assert_eq!(id1, id2);
    assert_ne!(id1, id3);
    assert!(id1 >= 256);
    assert_ne!(ip1, ip2);
    assert_eq!(ip1, Ipv4Addr::new(198, 18, 0, 2));
    let f = fake(&a);
    assert_eq!(f.endpoints.len(), 3);
    assert_eq!(f.ipcache.get(&(ip1, 32)), Some(&id1));
    assert_eq!(f.attached.len(), 3);
    // A retried ADD returns the same endpoint.
    let again = a
        .create_endpoint(&EndpointCreate {
            container_id: "c1".into(),
            netns: "/run/netns/c1".into(),
            ifname: "eth0".into(),
            namespace: "shop".into(),
            pod_name: None,
            labels: vec!["app=web".into()],
            ..Default::default()
        })
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.endpoint.id, e1);
    // Delete is idempotent and frees everything.
    assert_eq!(a.delete_endpoint(e2).unwrap().deleted, 1);
    assert_eq!(a.delete_endpoint(e2).unwrap().deleted, 0);
    let f = fake(&a);
    assert_eq!(f.endpoints.len(), 2);
    assert!(!f.ipcache.contains_key(&(ip2, 32)));
    // The identity is still used by c1.
    assert!(a.identity_view(id1).is_ok());
}

#[test]
fn bad_endpoint_requests_change_nothing() {
    let mut a = agent_with(FakePlumbing::default(), FakeDatapath::default(), None);
    for (cid, ns, ifname, label) in [
        ("", "default", "eth0", "app=x"),
        ("c", "Not_A_Namespace", "eth0", "app=x"),
        ("c", "default", "this-name-is-too-long", "app=x"),
        ("c", "default", "eth0", "=novalue"),
    ] {
        let err = a
            .create_endpoint(&EndpointCreate {
                container_id: cid.into(),
                netns: "/run/netns/x".into(),
                ifname: ifname.into(),
                namespace: ns.into(),
                pod_name: None,
                labels: vec![label.into()],
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(err.status(), 400, "{}", err.message());
    }
    assert_eq!(fake(&a).writes, 0);
    assert!(a.endpoints_view().is_empty());
}

#[test]
fn policy_import_enforces_and_delete_restores() {
    let mut a = agent_with(FakePlumbing::default(), FakeDatapath::default(), None);
    let (web, _, _) = ep(&mut a, "w", "shop", &["app=web"]);
    let (_, client, _) = ep(&mut a, "c", "shop", &["app=client"]);
    let (_, other, _) = ep(&mut a, "o", "shop", &["app=other"]);
    assert!(allowed(&a, web, Direction::Ingress, other, 6, 80));
    let rev = import(&mut a, WEB_FROM_CLIENT).unwrap();
    assert_eq!(fake(&a).revision as u64, rev);
    assert!(allowed(&a, web, Direction::Ingress, client, 6, 80));
    assert!(!allowed(&a, web, Direction::Ingress, client, 6, 81));
    assert!(!allowed(&a, web, Direction::Ingress, other, 6, 80));
    // Egress is not selected: allowed.
    assert!(allowed(&a, web, Direction::Egress, other, 17, 53));
    let d = a.delete_policies(Some("shop/web")).unwrap();
    assert_eq!(d.deleted, 1);
    assert!(d.revision > rev);
    assert!(fake(&a).policy.is_empty());
    assert!(allowed(&a, web, Direction::Ingress, other, 6, 80));
    assert_eq!(a.delete_policies(Some("nope")).unwrap_err().status(), 404);
}

#[test]
fn invalid_import_is_rejected_whole_and_maps_stay() {
    let mut a = agent_with(FakePlumbing::default(), FakeDatapath::default(), None);
    ep(&mut a, "w", "shop", &["app=web"]);
    import(&mut a, WEB_FROM_CLIENT).unwrap();
    let before: HashMap<_, _> = fake(&a).policy.clone();
    let writes = fake(&a).writes;
    let bad = format!(
        "{WEB_FROM_CLIENT}---\n{}",
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: http}]
"#
    );
    let err = import(&mut a, &bad).unwrap_err();
    assert!(err.contains("document 2"), "{err}");
    assert!(err.contains("http"), "{err}");
    assert_eq!(fake(&a).policy, before);
    assert_eq!(fake(&a).writes, writes);
    assert_eq!(a.policies_view(None).unwrap().len(), 1);
}

#[test]
fn restart_restores_state_and_writes_nothing() {
    let dir = std::env::temp_dir().join(format!("pilus-agent-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let plumbing = FakePlumbing::default();
    let mut a = agent_with(plumbing.clone(), FakeDatapath::default(), Some(&dir));
    let (web, web_id, _) = ep(&mut a, "w", "shop", &["app=web"]);
    ep(&mut a, "c", "shop", &["app=client"]);
    let (gone, _, _) = ep(&mut a, "g", "shop", &["app=gone"]);
    a.delete_endpoint(gone).unwrap();
    a.set_namespace_labels("shop", &["team=a".into()]).unwrap();
    import(&mut a, WEB_FROM_CLIENT).unwrap();
    import(
        &mut a,
        r#"[{"labels":[{"key":"name","value":"cidr"}],"endpointSelector":{"matchLabels":{"app":"client"}},
            "egress":[{"toCIDRSet":[{"cidr":"198.19.0.0/16","except":["198.19.1.0/24"]}]}]}]"#,
    )
    .unwrap();
    let maps = fake(&a).clone();
    let status = a.status();
    let web_identity = a
        .endpoints_view()
        .iter()
        .find(|e| e.id == web)
        .unwrap()
        .identity;
    assert_ne!(
        web_identity, web_id,
        "namespace labels changed the identity"
    );
    drop(a);

    let b = agent_with(plumbing, maps.clone(), Some(&dir));
    let f = fake(&b);
    assert_eq!(f.endpoints, maps.endpoints);
    assert_eq!(f.ipcache, maps.ipcache);
    assert_eq!(f.policy, maps.policy);
    assert_eq!(f.revision, maps.revision);
    let s = b.status();
    assert_eq!((s.resync_written, s.resync_removed), (0, 0));
    assert_eq!(s.revision, status.revision);
    assert_eq!(s.endpoints, 2);
    assert_eq!(s.policies, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_rule_change_touches_only_selected_endpoints() {
    let mut a = agent_with(FakePlumbing::default(), FakeDatapath::default(), None);
    for i in 0..50 {
        ep(
            &mut a,
            &format!("p{i}"),
            "shop",
            &[&format!("app=a{}", i % 10)],
        );
    }
    import(&mut a, WEB_FROM_CLIENT).unwrap();
    let writes = fake(&a).writes;
    // Selects the 5 endpoints of app=a3.
    import(
        &mut a,
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a3, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: a3}}
  egress:
  - toEndpoints: [{matchLabels: {app: a4}}]
"#,
    )
    .unwrap();
    let delta = fake(&a).writes - writes;
    // 5 endpoints × (1 entry + 1 endpoint record) + the revision.
    assert_eq!(delta, 11, "writes for a one-rule change");
}

/// Issue 15: CNI GC deletes only its own network's unlisted endpoints, and
/// never one younger than the grace the plugin computed.
#[test]
fn cni_gc_is_scoped_to_its_network_and_spares_young_endpoints() {
    use pilus_api_types::{CniAttachment, CniGc};
    let mut a = agent_with(FakePlumbing::default(), FakeDatapath::default(), None);
    let mk = |a: &mut Agent, cid: &str, net: Option<&str>| {
        a.create_endpoint(&EndpointCreate {
            container_id: cid.into(),
            netns: format!("/run/netns/{cid}"),
            cni_network: net.map(str::to_string),
            ..Default::default()
        })
        .unwrap()
        .endpoint
    };
    let keep = mk(&mut a, "keep", Some("pilus"));
    let stale = mk(&mut a, "stale", Some("pilus"));
    mk(&mut a, "other-net", Some("other"));
    mk(&mut a, "api-made", None);
    let att = |cid: &str| CniAttachment {
        container_id: cid.into(),
        ifname: "eth0".into(),
    };
    let gc = |since: u64| CniGc {
        network: "pilus".into(),
        valid: vec![att("keep")],
        keep_created_since_unix_ms: since,
    };
    // Everything was created after this cut-off: nothing goes.
    let young = a.cni_gc(&gc(stale.created_unix_ms)).unwrap();
    assert_eq!(
        (young.deleted.len(), young.kept_recent),
        (0, vec![att("stale")])
    );
    let done = a.cni_gc(&gc(stale.created_unix_ms + 1)).unwrap();
    assert_eq!(done.deleted, vec![att("stale")]);
    let left: Vec<String> = a
        .endpoints_view()
        .into_iter()
        .map(|e| e.container_id)
        .collect();
    assert_eq!(left, ["keep", "other-net", "api-made"]);
    assert!(keep.created_unix_ms > 0);
    let mut bad = gc(0);
    bad.network.clear();
    assert!(a.cni_gc(&bad).is_err());
    assert_eq!(a.status().endpoints, 3);
}
