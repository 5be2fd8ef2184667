//! Tier 1, issue 10: several nodes' control planes sharing one cluster store
//! (the in-memory `MemKv`, pinned to etcd's behaviour by the store's own
//! contract tests), each with its own fake datapath: identities numbered
//! alike, pods and nodes learned from the store, policies imported on one
//! node applied on all, a node's lease running out, an unavailable store,
//! and entries something else wrote that cannot be read.

use pilus_api_types::{EndpointCreate, PolicyFile};
use pilus_controlplane::{
    cluster::{ClusterSettings, FakeRoutes, Routing},
    fake::{FakeDatapath, FakePlumbing},
    ControlPlane, Settings,
};
use pilus_kvstore::{
    ClusterStore, Committed, Connection, KeyValue, KvError, KvStore, Lease, MemKv, Revision, Txn,
    Watch,
};
use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// The cluster store, which a test can make unreachable.
#[derive(Clone)]
struct Store {
    inner: MemKv,
    down: Arc<AtomicBool>,
}

impl Store {
    fn check(&self) -> Result<(), KvError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(KvError::Unavailable {
                what: "etcd is down (test)".into(),
                source: None,
            });
        }
        Ok(())
    }
}

impl KvStore for Store {
    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), KvError> {
        self.check()?;
        self.inner.list(prefix)
    }
    fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        self.check()?;
        self.inner.get(key)
    }
    fn commit(&self, txn: Txn) -> Result<Committed, KvError> {
        self.check()?;
        self.inner.commit(txn)
    }
}

impl ClusterStore for Store {
    fn grant_lease(&self, ttl: Duration) -> Result<Lease, KvError> {
        self.check()?;
        self.inner.grant_lease(ttl)
    }
    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, KvError> {
        self.inner.watch(prefix, from)
    }
    fn connection(&self) -> Connection {
        self.inner.connection()
    }
}

struct Node {
    cp: Arc<ControlPlane>,
    dp: FakeDatapath,
    routes: FakeRoutes,
    _threads: Vec<std::thread::JoinHandle<()>>,
}

fn node(store: &Store, n: u8, routing: Routing) -> Node {
    let dp = FakeDatapath::default();
    let routes = FakeRoutes::default();
    let cp = ControlPlane::start_with(
        Settings {
            node_name: format!("node-{n}"),
            pod_cidr: format!("198.18.{n}.0/24").parse().unwrap(),
            router: Ipv4Addr::new(198, 18, n, 1),
            pin_dir: PathBuf::from("/nonexistent"),
            socket: PathBuf::from("/nonexistent.sock"),
            state_dir: PathBuf::from("/nonexistent"),
            pod_mtu: None,
        },
        Arc::new(dp.clone()),
        Arc::new(FakePlumbing::default()),
        Arc::new(MemKv::default()),
        Some(ClusterSettings {
            store: Arc::new(store.clone()),
            underlay_ip: Ipv4Addr::new(198, 19, 0, 10 + n),
            lease_ttl: Duration::from_secs(10),
            routing,
            routes: Arc::new(routes.clone()),
        }),
    )
    .expect("control plane");
    let cp = Arc::new(cp);
    let threads = cp.spawn_cluster().unwrap();
    Node {
        cp,
        dp,
        routes,
        _threads: threads,
    }
}

fn pod(n: &Node, cid: &str, labels: &[&str]) -> (u32, Ipv4Addr) {
    let e =
        n.cp.create_endpoint(&EndpointCreate {
            container_id: cid.into(),
            netns: format!("/run/netns/{cid}"),
            namespace: "shop".into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
        .endpoint;
    (e.identity, e.ipv4)
}

/// Waits until `f` holds (the watches deliver asynchronously).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ipcache(n: &Node, ip: Ipv4Addr) -> Option<(u32, Ipv4Addr)> {
    n.dp.maps()
        .ipcache
        .get(&ipnet::Ipv4Net::new(ip, 32).unwrap())
        .map(|v| (v.sec_identity, Ipv4Addr::from(v.tunnel_endpoint)))
}

fn store() -> Store {
    Store {
        inner: MemKv::default(),
        down: Arc::new(AtomicBool::new(false)),
    }
}

#[test]
fn nodes_share_identities_pods_and_policies() {
    let s = store();
    let a = node(&s, 1, Routing::Tunnel);
    let b = node(&s, 2, Routing::Direct);
    let (web_a, web_ip) = pod(&a, "web-a", &["app=web"]);
    let (web_b, _) = pod(&b, "web-b", &["app=web"]);
    assert_eq!(
        web_a, web_b,
        "the same labels, the same number on both nodes"
    );
    let (client, client_ip) = pod(&b, "client", &["app=client"]);
    // Each node learns the other's pods, with the node to tunnel to.
    eventually("b learns a's pod", || {
        ipcache(&b, web_ip) == Some((web_a, Ipv4Addr::new(198, 19, 0, 11)))
    });
    eventually("a learns b's pod", || {
        ipcache(&a, client_ip) == Some((client, Ipv4Addr::new(198, 19, 0, 12)))
    });
    // The nodes themselves: remote-node identity, and a route in direct mode.
    eventually("a knows node 2", || {
        ipcache(&a, Ipv4Addr::new(198, 19, 0, 12)).map(|v| v.0) == Some(6)
    });
    eventually("b routes to a's pod CIDR", || {
        b.routes
            .routes
            .lock()
            .unwrap()
            .get(&"198.18.1.0/24".parse().unwrap())
            == Some(&Ipv4Addr::new(198, 19, 0, 11))
    });
    assert_eq!(b.cp.status().cluster.unwrap().nodes, 2);
    // A policy imported on a applies on b.
    a.cp.import(&[PolicyFile {
        name: "p.yaml".into(),
        text: "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: web, namespace: shop}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: client}}]\n".into(),
    }])
    .unwrap();
    eventually("b enforces a's policy", || {
        b.dp.maps().policy.keys().any(|k| k.sec_identity == client)
    });
    assert_eq!(b.cp.policies_view(None).unwrap().len(), 1);
    a.cp.delete_policies(Some("shop/web")).unwrap();
    eventually("b drops it too", || b.dp.maps().policy.is_empty());
    // A pod that goes is withdrawn everywhere.
    let id =
        b.cp.endpoints_view()
            .into_iter()
            .find(|e| e.container_id == "client")
            .unwrap()
            .id;
    b.cp.delete_endpoint(id).unwrap();
    eventually("a forgets b's pod", || ipcache(&a, client_ip).is_none());
}

#[test]
fn a_node_whose_lease_runs_out_disappears() {
    let s = store();
    let a = node(&s, 1, Routing::Tunnel);
    let b = node(&s, 2, Routing::Direct);
    let (_, ip) = pod(&a, "web", &["app=web"]);
    eventually("b learns a's pod", || ipcache(&b, ip).is_some());
    eventually("b routes to a", || {
        !b.routes.routes.lock().unwrap().is_empty()
    });
    // a's agent is gone: its lease runs out.
    let keys = s.inner.list("pilus/v1/cluster/nodes/node-1").unwrap().0;
    let lease = s
        .inner
        .lease_of(&keys[0].key)
        .expect("the node record is leased");
    drop(a);
    s.inner.expire_lease(lease);
    eventually("b forgets a's pod", || ipcache(&b, ip).is_none());
    eventually("b forgets a", || {
        ipcache(&b, Ipv4Addr::new(198, 19, 0, 11)).is_none()
            && b.routes.routes.lock().unwrap().is_empty()
    });
    assert_eq!(b.cp.status().cluster.unwrap().nodes, 1);
}

#[test]
fn an_unreachable_store_refuses_shared_changes_and_the_node_catches_up() {
    let s = store();
    let a = node(&s, 1, Routing::Tunnel);
    let b = node(&s, 2, Routing::Tunnel);
    let (_, web_ip) = pod(&a, "web", &["app=web"]);
    eventually("b learns a's pod", || ipcache(&b, web_ip).is_some());
    let before = a.dp.maps().policy.clone();
    s.down.store(true, Ordering::Relaxed);
    let e = a
        .cp
        .import(&[PolicyFile {
            name: "p.yaml".into(),
            text: "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: deny, namespace: shop}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n".into(),
        }])
        .unwrap_err();
    assert_eq!(e.status(), 503, "{}", e.message());
    assert!(
        e.message().contains("nothing was changed"),
        "{}",
        e.message()
    );
    assert_eq!(a.dp.maps().policy, before);
    assert!(a.cp.policies_view(None).unwrap().is_empty());
    // Pods already known keep their entries while the store is away.
    assert!(ipcache(&b, web_ip).is_some());
    s.down.store(false, Ordering::Relaxed);
    assert!(a
        .cp
        .import(&[PolicyFile {
            name: "p.yaml".into(),
            text: "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: deny, namespace: shop}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n".into(),
        }])
        .is_ok());
    eventually("b applies it once the store is back", || {
        b.cp.policies_view(None).unwrap().len() == 1
    });
}

/// Entries something else wrote that cannot be decoded are logged and
/// skipped: no crash, nothing half-applied, later good entries still apply.
#[test]
fn entries_that_cannot_be_read_are_skipped() {
    let s = store();
    let b = node(&s, 2, Routing::Tunnel);
    let maps = b.dp.maps().clone();
    for (k, v) in [
        ("pilus/v1/cluster/ipcache/198.18.1.9", "not json"),
        ("pilus/v1/cluster/ipcache/garbage", "{}"),
        ("pilus/v1/cluster/nodes/node-x", "{\"name\": 5}"),
        ("pilus/v1/identities/ids/notanumber", "[]"),
        (
            "pilus/v1/policies/CiliumNetworkPolicy/shop/x",
            "{\"kind\": 1}",
        ),
        ("pilus/v1/namespaces/shop", "\"labels\""),
    ] {
        s.inner.commit(Txn::new().put(k, v)).unwrap();
    }
    let a = node(&s, 1, Routing::Tunnel);
    let (_, ip) = pod(&a, "web", &["app=web"]);
    // a's node and its pod arrive on separate watches, in either order:
    // wait for both (under load the pod came first and the count was
    // read one short).
    eventually("b still learns good entries", || {
        ipcache(&b, ip).is_some() && b.dp.maps().ipcache.len() >= maps.ipcache.len() + 2
    });
    let now = b.dp.maps().clone();
    assert_eq!(now.policy, maps.policy);
    assert_eq!(
        now.ipcache.len(),
        maps.ipcache.len() + 2,
        "a's node and its pod, nothing else"
    );
}

/// A service written on one node applies on every node (its maps), with
/// backends in any node's pod CIDR; its deletion too. While the store is
/// unreachable a service change is refused whole.
#[test]
fn services_are_shared_like_policies() {
    let s = store();
    let a = node(&s, 1, Routing::Tunnel);
    let b = node(&s, 2, Routing::Tunnel);
    eventually("a knows node 2", || {
        a.cp.status().cluster.unwrap().nodes == 2
    });
    let web = pilus_service::model::from_flags(
        "shop/web",
        &["198.19.128.10:80"],
        &["198.18.1.10:8080", "198.18.2.10:8080"],
    )
    .unwrap();
    a.cp.upsert_service(&web).unwrap();
    eventually("b has the frontend", || {
        b.dp.maps().lb_services.len() == 1 && b.dp.maps().lb_slots.len() == 2
    });
    assert_eq!(b.cp.services_view().len(), 1);
    // A backend outside both nodes' pod CIDRs is refused where it is written.
    let mut bad = web.clone();
    bad.backends[0].address = "198.18.3.10".into();
    let e = b.cp.upsert_service(&bad).unwrap_err();
    assert!(
        e.message().contains("outside every known range"),
        "{}",
        e.message()
    );
    // The store away: refused, nothing changes anywhere.
    s.down.store(true, Ordering::Relaxed);
    let mut other = web.clone();
    other.name = "api".into();
    other.frontends[0].address = "198.19.128.11".into();
    let e = a.cp.upsert_service(&other).unwrap_err();
    assert_eq!(e.status(), 503, "{}", e.message());
    assert_eq!(a.dp.maps().lb_services.len(), 1);
    s.down.store(false, Ordering::Relaxed);
    b.cp.delete_service("shop/web").unwrap();
    eventually("a drops it too", || a.dp.maps().lb_services.is_empty());
    assert!(a.cp.services_view().is_empty());
}
