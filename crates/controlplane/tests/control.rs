//! Tier 1: the control plane against in-memory maps, plumbing and store
//! (no root): endpoints, identities, policy import/delete, atomic
//! rejection, the ipcache's sources, Kubernetes ipBlocks that follow pods,
//! CNI GC, and a restart that finds the maps already right.

use ipnet::Ipv4Net;
use pilus_api_types::{EndpointCreate, PolicyFile};
use pilus_controlplane::{
    fake::{FakeDatapath, FakeMaps, FakePlumbing},
    ControlPlane, Settings,
};
use pilus_kvstore::{KvStore, LocalKv, MemKv};
use pilus_policy::{lookup, Direction};
use std::{collections::HashMap, net::Ipv4Addr, path::PathBuf, sync::Arc};

fn settings() -> Settings {
    Settings {
        node_name: "n1".into(),
        pod_cidr: "198.18.0.0/24".parse().unwrap(),
        router: Ipv4Addr::new(198, 18, 0, 1),
        pin_dir: PathBuf::from("/nonexistent"),
        socket: PathBuf::from("/nonexistent.sock"),
        state_dir: PathBuf::from("/nonexistent"),
        pod_mtu: None,
    }
}

fn cp_with(plumbing: FakePlumbing, dp: FakeDatapath, store: Arc<dyn KvStore>) -> ControlPlane {
    ControlPlane::start(settings(), Arc::new(dp), Arc::new(plumbing), store).expect("control plane")
}

fn fresh() -> ControlPlane {
    cp_with(
        FakePlumbing::default(),
        FakeDatapath::default(),
        Arc::new(MemKv::default()),
    )
}

/// The fake maps now (a copy).
fn fake(a: &ControlPlane) -> FakeMaps {
    a.datapath()
        .as_any()
        .downcast_ref::<FakeDatapath>()
        .expect("fake")
        .maps()
        .clone()
}

fn host(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, 32).unwrap()
}

fn ipcache_identity(a: &ControlPlane, prefix: Ipv4Net) -> Option<u32> {
    fake(a).ipcache.get(&prefix).map(|v| v.sec_identity)
}

fn ep(a: &ControlPlane, cid: &str, ns: &str, labels: &[&str]) -> (u16, u32, Ipv4Addr) {
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

fn import(a: &ControlPlane, text: &str) -> Result<u64, String> {
    a.import(&[PolicyFile {
        name: "test.yaml".into(),
        text: text.into(),
    }])
    .map(|r| r.revision)
    .map_err(|e| e.message())
}

/// What the datapath answers for endpoint `ep` in `dir` from `peer`.
fn allowed(a: &ControlPlane, ep: u16, dir: Direction, peer: u32, proto: u8, port: u16) -> bool {
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
    let a = fresh();
    let (e1, id1, ip1) = ep(&a, "c1", "shop", &["app=web", "pod-template-hash=abc"]);
    let (e2, id2, ip2) = ep(&a, "c2", "shop", &["app=web", "pod-template-hash=def"]);
    let (_, id3, _) = ep(&a, "c3", "other", &["app=web"]);
    // Noise labels are filtered: one identity; another namespace: another.
    assert_eq!(id1, id2);
    assert_ne!(id1, id3);
    assert!(id1 >= 256);
    assert_ne!(ip1, ip2);
    assert_eq!(ip1, Ipv4Addr::new(198, 18, 0, 2));
    let f = fake(&a);
    assert_eq!(f.endpoints.len(), 3);
    assert_eq!(ipcache_identity(&a, host(ip1)), Some(id1));
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
    assert!(!f.ipcache.contains_key(&host(ip2)));
    // The identity is still used by c1.
    assert!(a.identity_view(id1).is_ok());
}

#[test]
fn bad_endpoint_requests_change_nothing() {
    let a = fresh();
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
    let a = fresh();
    let (web, _, _) = ep(&a, "w", "shop", &["app=web"]);
    let (_, client, _) = ep(&a, "c", "shop", &["app=client"]);
    let (_, other, _) = ep(&a, "o", "shop", &["app=other"]);
    assert!(allowed(&a, web, Direction::Ingress, other, 6, 80));
    let rev = import(&a, WEB_FROM_CLIENT).unwrap();
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
    let a = fresh();
    ep(&a, "w", "shop", &["app=web"]);
    import(&a, WEB_FROM_CLIENT).unwrap();
    let before: HashMap<_, _> = fake(&a).policy;
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
    let err = import(&a, &bad).unwrap_err();
    assert!(err.contains("document 2"), "{err}");
    assert!(err.contains("http"), "{err}");
    assert_eq!(fake(&a).policy, before);
    assert_eq!(fake(&a).writes, writes);
    assert_eq!(a.policies_view(None).unwrap().len(), 1);
}

#[test]
fn restart_restores_state_and_writes_nothing() {
    let dir = std::env::temp_dir().join(format!("pilus-cp-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let plumbing = FakePlumbing::default();
    let dp = FakeDatapath::default();
    let a = cp_with(
        plumbing.clone(),
        dp.clone(),
        Arc::new(LocalKv::open(&dir).unwrap()),
    );
    let (web, web_id, _) = ep(&a, "w", "shop", &["app=web"]);
    ep(&a, "c", "shop", &["app=client"]);
    let (gone, _, _) = ep(&a, "g", "shop", &["app=gone"]);
    a.delete_endpoint(gone).unwrap();
    a.set_namespace_labels("shop", &["team=a".into()]).unwrap();
    import(&a, WEB_FROM_CLIENT).unwrap();
    import(
        &a,
        r#"[{"labels":[{"key":"name","value":"cidr"}],"endpointSelector":{"matchLabels":{"app":"client"}},
            "egress":[{"toCIDRSet":[{"cidr":"198.19.0.0/16","except":["198.19.1.0/24"]}]}]}]"#,
    )
    .unwrap();
    import(&a, KNP_EGRESS_PODS).unwrap();
    let maps = fake(&a);
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

    // The same kernel (maps) and the state from disk.
    let b = cp_with(plumbing, dp, Arc::new(LocalKv::open(&dir).unwrap()));
    let f = fake(&b);
    assert_eq!(f.endpoints, maps.endpoints);
    assert_eq!(f.ipcache, maps.ipcache);
    assert_eq!(f.policy, maps.policy);
    assert_eq!(f.revision, maps.revision);
    let s = b.status();
    assert_eq!((s.resync_written, s.resync_removed), (0, 0));
    assert_eq!(s.revision, status.revision);
    assert_eq!(s.endpoints, 2);
    assert_eq!(s.policies, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The maps follow the store, not the other way round: maps changed behind
/// the agent's back (or a crash between a map write and its transaction)
/// are put right at start.
#[test]
fn start_makes_the_maps_equal_the_stored_state() {
    let store = MemKv::default();
    let plumbing = FakePlumbing::default();
    let dp = FakeDatapath::default();
    let a = cp_with(plumbing.clone(), dp.clone(), Arc::new(store.clone()));
    ep(&a, "w", "shop", &["app=web"]);
    ep(&a, "c", "shop", &["app=client"]);
    import(&a, WEB_FROM_CLIENT).unwrap();
    let maps = fake(&a);
    drop(a);
    {
        let mut m = dp.maps();
        m.policy.clear();
        m.ipcache
            .insert("198.18.9.0/24".parse().unwrap(), Default::default());
        m.revision = 999;
    }
    let b = cp_with(plumbing, dp, Arc::new(store));
    let f = fake(&b);
    assert_eq!(
        (f.policy, f.ipcache, f.revision),
        (maps.policy, maps.ipcache, maps.revision)
    );
    let s = b.status();
    assert!(s.resync_written > 0 && s.resync_removed == 1, "{s:?}");
}

#[test]
fn one_rule_change_touches_only_selected_endpoints() {
    let a = fresh();
    for i in 0..50 {
        ep(&a, &format!("p{i}"), "shop", &[&format!("app=a{}", i % 10)]);
    }
    import(&a, WEB_FROM_CLIENT).unwrap();
    let writes = fake(&a).writes;
    // Selects the 5 endpoints of app=a3.
    import(
        &a,
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
    let a = fresh();
    let mk = |a: &ControlPlane, cid: &str, net: Option<&str>| {
        a.create_endpoint(&EndpointCreate {
            container_id: cid.into(),
            netns: format!("/run/netns/{cid}"),
            cni_network: net.map(str::to_string),
            ..Default::default()
        })
        .unwrap()
        .endpoint
    };
    let keep = mk(&a, "keep", Some("pilus"));
    let stale = mk(&a, "stale", Some("pilus"));
    mk(&a, "other-net", Some("other"));
    mk(&a, "api-made", None);
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

const KNP_EGRESS_PODS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-to-pods, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 198.18.0.0/24, except: [198.18.0.3/32]}}]
"#;

/// Issue 9: a CNP `toCIDR` naming a pod's /32 replaced the pod's identity in
/// the ipcache with a CIDR identity, and deleting the policy removed the
/// pod's entry. The endpoint's own entry wins and survives; a CIDR that is
/// no endpoint gets its CIDR identity, which goes with its policy.
#[test]
fn a_policy_cidr_never_changes_who_a_pod_is() {
    let a = fresh();
    let (_, web_id, web_ip) = ep(&a, "w", "shop", &["app=web"]);
    ep(&a, "c", "shop", &["app=client"]);
    import(
        &a,
        &format!(
            r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: to-web-ip, namespace: shop}}
spec:
  endpointSelector: {{matchLabels: {{app: client}}}}
  egress:
  - toCIDR: ["{web_ip}/32", "198.19.5.0/24"]
"#
        ),
    )
    .unwrap();
    assert_eq!(ipcache_identity(&a, host(web_ip)), Some(web_id));
    let outside: Ipv4Net = "198.19.5.0/24".parse().unwrap();
    let cidr_id = ipcache_identity(&a, outside).expect("the CIDR has an identity");
    assert!(cidr_id >= 1 << 24);
    let view = a.ipcache_view();
    let pod = view
        .iter()
        .find(|e| e.prefix == format!("{web_ip}/32"))
        .unwrap();
    let sources: Vec<&str> = pod.sources.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(sources, ["local-endpoint", "policy-cidr"]);
    a.delete_policies(Some("shop/to-web-ip")).unwrap();
    assert_eq!(ipcache_identity(&a, host(web_ip)), Some(web_id));
    assert_eq!(ipcache_identity(&a, outside), None);
    // And the pod's entry goes with the pod, the CIDR's with its policy.
    let ids: Vec<u32> = fake(&a).ipcache.values().map(|v| v.sec_identity).collect();
    assert!(!ids.contains(&cidr_id));
}

/// Kubernetes NetworkPolicy: an ipBlock selects the pods inside it, and a
/// pod created after the import is selected without a re-import; one in an
/// `except` is not.
#[test]
fn ipblock_follows_pods_through_the_control_plane() {
    let a = fresh();
    let (client, _, _) = ep(&a, "c", "shop", &["app=client"]);
    let (_, db_id, db_ip) = ep(&a, "d", "shop", &["app=db"]);
    assert_eq!(db_ip, Ipv4Addr::new(198, 18, 0, 3), "the except names db");
    import(&a, KNP_EGRESS_PODS).unwrap();
    assert!(!allowed(&a, client, Direction::Egress, db_id, 6, 80));
    let (_, late_id, _) = ep(&a, "late", "ops", &["app=late"]);
    assert!(
        allowed(&a, client, Direction::Egress, late_id, 6, 80),
        "a pod made after the import, inside the block"
    );
    // Deleting the pod deselects its identity (no address any more).
    let id = a
        .endpoints_view()
        .iter()
        .find(|e| e.container_id == "late")
        .unwrap()
        .id;
    a.delete_endpoint(id).unwrap();
    assert!(!fake(&a).policy.keys().any(|k| k.sec_identity == late_id));
}

/// An identity change (here a namespace relabel: both pods move to new
/// identities) never opens a window in which a flow that the old and the
/// new rules both allow is denied: every intermediate state of the maps is
/// checked, after every single write.
#[test]
fn an_identity_change_never_denies_what_old_and_new_allow() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };
    let dp = FakeDatapath::default();
    let a = cp_with(
        FakePlumbing::default(),
        dp.clone(),
        Arc::new(MemKv::default()),
    );
    let (web, _, _) = ep(&a, "w", "shop", &["app=web"]);
    let (_, _, client_ip) = ep(&a, "c", "shop", &["app=client"]);
    import(&a, WEB_FROM_CLIENT).unwrap();
    let checked = Arc::new(AtomicUsize::new(0));
    let denied = Arc::new(Mutex::new(Vec::new()));
    let (c, d) = (checked.clone(), denied.clone());
    dp.observe(Arc::new(move |m: &FakeMaps| {
        let peer = m
            .ipcache
            .get(&host(client_ip))
            .map_or(0, |v| v.sec_identity);
        let flags = m
            .endpoints
            .values()
            .find(|e| e.ep_id == web)
            .map_or(0, |e| e.flags);
        if !lookup::verdict(&m.policy, flags, web, Direction::Ingress, peer, 6, 80).allowed() {
            d.lock()
                .unwrap()
                .push(format!("client as {peer}, web flags {flags:#x}"));
        }
        c.fetch_add(1, Ordering::Relaxed);
    }));
    for i in 0..10 {
        a.set_namespace_labels("shop", &[format!("round={i}")])
            .unwrap();
    }
    assert!(
        checked.load(Ordering::Relaxed) > 40,
        "too few writes observed"
    );
    let denied = denied.lock().unwrap();
    assert!(denied.is_empty(), "denied in between: {denied:?}");
}

fn relabel(a: &ControlPlane, ep: &str, add: &[&str], delete: &[&str]) -> Result<u32, String> {
    a.update_labels(
        &[pilus_api_types::EndpointLabelsItem {
            endpoint: ep.into(),
            add: add.iter().map(|s| s.to_string()).collect(),
            delete: delete.iter().map(|s| s.to_string()).collect(),
        }],
        false,
    )
    .map(|v| v[0].identity)
    .map_err(|e| e.message())
}

/// Issue 14: a pod whose runtime passed no labels gets them by hand, and
/// its identity (and so policy) follows; labels survive a restart.
#[test]
fn endpoint_labels_change_identity_and_policy() {
    let store = MemKv::default();
    let plumbing = FakePlumbing::default();
    let dp = FakeDatapath::default();
    let a = cp_with(plumbing.clone(), dp.clone(), Arc::new(store.clone()));
    let (web, _, _) = ep(&a, "w", "shop", &["app=web"]);
    let (_, bare_id, _) = ep(&a, "bare", "shop", &[]);
    import(&a, WEB_FROM_CLIENT).unwrap();
    assert!(!allowed(&a, web, Direction::Ingress, bare_id, 6, 80));
    let client_id = relabel(&a, "bare", &["app=client"], &[]).unwrap();
    assert_ne!(client_id, bare_id);
    assert!(allowed(&a, web, Direction::Ingress, client_id, 6, 80));
    let view = a.endpoint_view("bare", None).unwrap();
    assert_eq!(
        view.label_sources
            .iter()
            .map(|l| (l.label.as_str(), l.source.as_str()))
            .collect::<Vec<_>>(),
        [("k8s:app=client", "user")]
    );
    let back = relabel(&a, "bare", &[], &["app"]).unwrap();
    assert_eq!(back, bare_id, "the same labels, the same identity");
    assert!(!allowed(&a, web, Direction::Ingress, back, 6, 80));
    let again = relabel(&a, "shop/bare", &["app=client", "team=x"], &[]).unwrap();
    let maps = fake(&a);
    drop(a);
    let b = cp_with(plumbing, dp, Arc::new(store));
    let v = b.endpoint_view("bare", None).unwrap();
    assert_eq!(v.identity, again);
    assert!(
        v.labels.contains(&"k8s:team=x".to_string()),
        "{:?}",
        v.labels
    );
    assert_eq!(fake(&b).policy, maps.policy);
    assert_eq!(
        (b.status().resync_written, b.status().resync_removed),
        (0, 0)
    );
}

/// Issue 14: every bad label change is refused whole, and nothing changes.
#[test]
fn bad_label_changes_are_refused_whole() {
    use pilus_api_types::EndpointLabelsItem;
    let a = fresh();
    ep(&a, "w", "shop", &["app=web"]);
    let cni = a
        .create_endpoint(&EndpointCreate {
            container_id: "cni".into(),
            netns: "/run/netns/cni".into(),
            labels: vec!["app=db".into()],
            cni_network: Some("pilus".into()),
            runtime_labels: vec!["tier=back".into(), "app=ignored".into()],
            ..Default::default()
        })
        .unwrap()
        .endpoint;
    let sources: Vec<_> = cni
        .label_sources
        .iter()
        .map(|l| format!("{}={}", l.label, l.source))
        .collect();
    assert_eq!(sources, ["k8s:app=db=cni", "k8s:tier=back=runtime"]);
    let before = (a.endpoints_view(), fake(&a).policy, fake(&a).ipcache);
    let item = |ep: &str, add: &[&str], delete: &[&str]| EndpointLabelsItem {
        endpoint: ep.into(),
        add: add.iter().map(|s| s.to_string()).collect(),
        delete: delete.iter().map(|s| s.to_string()).collect(),
    };
    let cases: Vec<(Vec<EndpointLabelsItem>, &str)> = vec![
        (vec![item("w", &["app=-bad"], &[])], "value"),
        (vec![item("w", &["Bad Key=x"], &[])], "key"),
        (vec![item("w", &["reserved:host"], &[])], "reserved"),
        (vec![item("nope", &["app=x"], &[])], "not found"),
        (vec![item("w", &[], &["team"])], "has no label"),
        (vec![item("w", &[], &["app=web"])], "name a key"),
        (vec![item("cni", &["app=other"], &[])], "override-cni"),
        (vec![item("cni", &[], &["app"])], "override-cni"),
        // One good item and one bad: the good one is not applied either.
        (
            vec![item("w", &["team=a"], &[]), item("nope", &["x=y"], &[])],
            "not found",
        ),
        (
            vec![item("w", &["team=a"], &[]), item("w", &["team=b"], &[])],
            "named twice",
        ),
        (vec![], "no endpoint"),
    ];
    for (items, needle) in cases {
        let e = a.update_labels(&items, false).unwrap_err();
        assert!(e.message().contains(needle), "{needle}: {}", e.message());
        assert!(e.status() == 400 || e.status() == 404, "{}", e.status());
        assert_eq!(
            (a.endpoints_view(), fake(&a).policy, fake(&a).ipcache),
            before,
            "{needle}: something changed"
        );
    }
    // A runtime label is the user's to change; a CNI one with the flag.
    relabel(&a, "cni", &["tier=front"], &[]).unwrap();
    a.update_labels(&[item("cni", &["app=other"], &[])], true)
        .unwrap();
}
