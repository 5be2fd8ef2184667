//! Tier 1: services against in-memory maps and store (no root): what a
//! service becomes in the maps, every intermediate state of a change being
//! consistent (a packet could only ever see a whole backend set), bad input
//! refused whole with the maps unchanged, ids never reused, a restart that
//! writes nothing, Kubernetes import, and the conntrack GC's accounting.

use pilus_abi::consts::{
    LB_ALG_MAGLEV, LB_BACKEND_TERMINATING, LB_F_AFFINITY, LB_F_ETP_LOCAL, LB_MAGLEV_M,
    LB_TYPE_CLUSTER_IP, LB_TYPE_EXTERNAL_IP, LB_TYPE_NODE_PORT,
};
use pilus_api_types::{self as api, PolicyFile};
use pilus_controlplane::{
    ctgc::GcSchedule,
    datapath::CtGcPass,
    fake::{FakeDatapath, FakeMaps, FakePlumbing},
    ControlPlane, Settings,
};
use pilus_kvstore::{KvStore, MemKv};
use pilus_service::model::from_flags;
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

fn settings() -> Settings {
    Settings {
        node_name: "n1".into(),
        pod_cidr: "198.18.1.0/24".parse().unwrap(),
        router: Ipv4Addr::new(198, 18, 1, 1),
        pin_dir: PathBuf::from("/nonexistent"),
        socket: PathBuf::from("/nonexistent.sock"),
        state_dir: PathBuf::from("/nonexistent"),
        pod_mtu: None,
    }
}

fn start(dp: &FakeDatapath, store: &Arc<dyn KvStore>) -> ControlPlane {
    ControlPlane::start(
        settings(),
        Arc::new(dp.clone()),
        Arc::new(FakePlumbing::default()),
        store.clone(),
    )
    .expect("control plane")
}

fn fresh() -> (ControlPlane, FakeDatapath, Arc<dyn KvStore>) {
    let dp = FakeDatapath::default();
    let store: Arc<dyn KvStore> = Arc::new(MemKv::default());
    (start(&dp, &store), dp, store)
}

fn svc(name: &str, frontends: &[&str], backends: &[&str]) -> api::Service {
    from_flags(&format!("shop/{name}"), frontends, backends).unwrap()
}

/// Every frontend entry names a generation whose slots (or table) are all
/// there, each naming a backend that is there: what a packet reading the
/// maps at this moment would need.
fn consistent(m: &FakeMaps) -> Result<(), String> {
    for (k, v) in &m.lb_services {
        if v.algorithm == LB_ALG_MAGLEV {
            if v.count == 0 {
                continue;
            }
            let t = m
                .lb_maglev
                .iter()
                .find(|(mk, _)| mk.id == v.id && mk.generation == v.generation)
                .ok_or(format!("{k:?}: no table for generation {}", v.generation))?;
            for id in t.1.backend_ids.iter() {
                if !m.lb_backends.contains_key(id) {
                    return Err(format!("{k:?}: table names missing backend {id}"));
                }
            }
        } else {
            for slot in 0..v.count {
                let id = m
                    .lb_slots
                    .iter()
                    .find(|(s, _)| s.id == v.id && s.generation == v.generation && s.slot == slot)
                    .ok_or(format!(
                        "{k:?}: slot {slot} of generation {} missing",
                        v.generation
                    ))?
                    .1;
                if !m.lb_backends.contains_key(id) {
                    return Err(format!("{k:?}: slot {slot} names missing backend {id}"));
                }
            }
        }
        if !m.lb_rev_nat.contains_key(&v.id) {
            return Err(format!("{k:?}: no reverse NAT for {}", v.id));
        }
    }
    Ok(())
}

/// The backend addresses (`address:port`) a frontend's current generation
/// lets new flows choose.
fn chosen(m: &FakeMaps, vip: [u8; 4], port: u16) -> BTreeSet<String> {
    let (_, v) = m
        .lb_services
        .iter()
        .find(|(k, _)| Ipv4Addr::from(k.address) == Ipv4Addr::from(vip) && k.dport.get() == port)
        .expect("frontend");
    let ids: Vec<u32> = if v.algorithm == LB_ALG_MAGLEV {
        m.lb_maglev
            .iter()
            .filter(|(k, _)| k.id == v.id && k.generation == v.generation)
            .flat_map(|(_, t)| t.backend_ids.to_vec())
            .collect()
    } else {
        m.lb_slots
            .iter()
            .filter(|(k, _)| k.id == v.id && k.generation == v.generation)
            .map(|(_, id)| *id)
            .collect()
    };
    ids.iter()
        .map(|id| {
            let b = m.lb_backends[id];
            format!("{}:{}", Ipv4Addr::from(b.address), b.port.get())
        })
        .collect()
}

#[test]
fn a_service_becomes_its_frontends_slots_backends_and_reverse_nat() {
    let (cp, dp, _) = fresh();
    let mut s = svc(
        "web",
        &["198.19.128.10:80", "externalip:198.19.129.1:80"],
        &[
            "198.18.1.10:8080",
            "198.18.1.11:8080,weight=2",
            "198.18.1.12:8080,state=terminating",
        ],
    );
    s.session_affinity_seconds = Some(300);
    let r = cp.upsert_service(&s).unwrap();
    assert!(r.created);
    let m = dp.maps().clone();
    consistent(&m).unwrap();
    assert_eq!(m.lb_services.len(), 2);
    assert_eq!(m.lb_rev_nat.len(), 2);
    // Both frontends: the two active backends (weights 1 and 2: 3 slots),
    // the terminating one kept as a backend but not chosen.
    assert_eq!(
        chosen(&m, [198, 19, 128, 10], 80),
        BTreeSet::from(["198.18.1.10:8080".into(), "198.18.1.11:8080".into()])
    );
    let v = m.lb_services.values().next().unwrap();
    assert_eq!(
        (v.count, v.flags, v.affinity_timeout),
        (3, LB_F_AFFINITY, 300)
    );
    assert_eq!(m.lb_backends.len(), 6, "three per frontend");
    assert!(m
        .lb_backends
        .values()
        .any(|b| b.state == LB_BACKEND_TERMINATING));
    let info = cp.service_view("shop/web").unwrap();
    assert_eq!(info.service, Service::canonical(&s));
    assert_eq!(info.frontend_ids.len(), 2);
    let bpf = cp.bpf_lb().unwrap();
    assert_eq!(bpf[0].frontend, "198.19.128.10:80/TCP");
    assert_eq!(bpf[0].rev_nat.as_deref(), Some("198.19.128.10:80"));
    assert_eq!(bpf[0].backends.len(), 3, "slots: {:?}", bpf[0].backends);
    assert_eq!(cp.status().services, 1);
    assert_eq!(cp.status().frontends, 2);
}

/// externalTrafficPolicy: Local marks the service's frontends reached
/// from outside (NodePort, ExternalIP) only (a ClusterIP serves every
/// client from every backend); changing it back to Cluster clears the mark.
#[test]
fn external_traffic_policy_local_marks_the_external_frontends_only() {
    let (cp, dp, _) = fresh();
    let mut s = svc(
        "web",
        &[
            "198.19.128.10:80",
            "nodeport:0.0.0.0:30080",
            "externalip:198.19.201.10:80",
        ],
        &["198.18.1.10:8080"],
    );
    s.external_traffic_policy = Some("Local".into());
    cp.upsert_service(&s).unwrap();
    let flags = |dp: &FakeDatapath| {
        dp.maps()
            .lb_services
            .values()
            .map(|v| (v.svc_type, v.flags))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        flags(&dp),
        BTreeSet::from([
            (LB_TYPE_CLUSTER_IP, 0),
            (LB_TYPE_NODE_PORT, LB_F_ETP_LOCAL),
            (LB_TYPE_EXTERNAL_IP, LB_F_ETP_LOCAL)
        ])
    );
    // `pilus bpf lb list` says which frontend is Local.
    let local: Vec<_> = cp
        .bpf_lb()
        .unwrap()
        .into_iter()
        .filter(|f| f.local_traffic_only)
        .map(|f| f.frontend)
        .collect();
    assert_eq!(local, ["0.0.0.0:30080/TCP", "198.19.201.10:80/TCP"]);
    assert_eq!(
        cp.service_view("shop/web")
            .unwrap()
            .service
            .external_traffic_policy
            .as_deref(),
        Some("Local")
    );
    s.external_traffic_policy = None;
    cp.upsert_service(&s).unwrap();
    assert_eq!(
        flags(&dp),
        BTreeSet::from([
            (LB_TYPE_CLUSTER_IP, 0),
            (LB_TYPE_NODE_PORT, 0),
            (LB_TYPE_EXTERNAL_IP, 0)
        ])
    );
}

/// The API's form as the agent gives it back (defaults filled in).
struct Service;
impl Service {
    fn canonical(s: &api::Service) -> api::Service {
        pilus_service::Service::from_api(s).unwrap().to_api()
    }
}

/// A run of changes, with the maps checked after every single write.
#[test]
fn every_intermediate_state_of_a_change_is_a_whole_backend_set() {
    let (cp, dp, _) = fresh();
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let f = failures.clone();
    dp.observe(Arc::new(move |m: &FakeMaps| {
        if let Err(e) = consistent(m) {
            f.lock().unwrap().push(e);
        }
    }));
    let vip = "198.19.128.10:80";
    let steps: Vec<api::Service> = vec![
        svc("web", &[vip], &["198.18.1.10:8080", "198.18.1.11:8080"]),
        svc("web", &[vip], &["198.18.1.11:8080", "198.18.1.12:8080"]),
        svc("web", &[vip, "198.19.128.10:443"], &["198.18.1.12:8080"]),
        {
            let mut s = svc("web", &[vip], &["198.18.1.12:8080", "198.18.1.13:8080"]);
            s.algorithm = "maglev".into();
            s
        },
        {
            let mut s = svc("web", &[vip], &["198.18.1.13:8080"]);
            s.algorithm = "maglev".into();
            s
        },
        svc("web", &[vip], &[]),
        svc(
            "web",
            &[vip],
            &["198.18.1.14:8080,weight=3", "198.18.1.15:8080"],
        ),
    ];
    for (i, s) in steps.iter().enumerate() {
        cp.upsert_service(s).unwrap();
        let m = dp.maps().clone();
        let want: BTreeSet<String> = s
            .backends
            .iter()
            .map(|b| format!("{}:{}", b.address, b.port))
            .collect();
        assert_eq!(chosen(&m, [198, 19, 128, 10], 80), want, "step {i}");
    }
    cp.delete_service("shop/web").unwrap();
    let m = dp.maps().clone();
    assert!(
        m.lb_services.is_empty()
            && m.lb_slots.is_empty()
            && m.lb_backends.is_empty()
            && m.lb_maglev.is_empty()
            && m.lb_rev_nat.is_empty(),
        "nothing left: {m:?}"
    );
    let f = failures.lock().unwrap();
    assert!(f.is_empty(), "inconsistent intermediate states: {f:#?}");
}

#[test]
fn the_maglev_table_is_whole_and_fair() {
    let (cp, dp, _) = fresh();
    let mut s = svc(
        "web",
        &["198.19.128.10:80"],
        &["198.18.1.10:80", "198.18.1.11:80", "198.18.1.12:80"],
    );
    s.algorithm = "maglev".into();
    cp.upsert_service(&s).unwrap();
    let m = dp.maps().clone();
    assert_eq!(m.lb_maglev.len(), 1);
    let t = m.lb_maglev.values().next().unwrap();
    assert_eq!(t.backend_ids.len(), LB_MAGLEV_M as usize);
    for id in m.lb_backends.keys() {
        let n = t.backend_ids.iter().filter(|x| *x == id).count();
        assert!((5400..=5520).contains(&n), "backend {id}: {n} entries");
    }
}

/// Each bad request is refused whole, with a message saying what is wrong,
/// and the maps and the store are exactly as before.
#[test]
fn bad_input_is_refused_and_the_maps_are_unchanged() {
    let (cp, dp, store) = fresh();
    cp.upsert_service(&svc("web", &["198.19.128.10:80"], &["198.18.1.10:8080"]))
        .unwrap();
    let before = dp.maps().clone();
    let stored = store.list("pilus/").unwrap().0;
    type Edit = fn() -> api::Service;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "malformed frontend address",
            || svc("api", &["198.19.128.300:80"], &[]),
            "not an IPv4 address",
        ),
        (
            "frontend port 0",
            || svc("api", &["198.19.128.11:0"], &[]),
            "port 0",
        ),
        (
            "a frontend another service has",
            || svc("api", &["198.19.128.10:80"], &[]),
            "198.19.128.10:80/TCP is defined twice: by shop/web and by shop/api",
        ),
        (
            "a frontend in the pod CIDR",
            || svc("api", &["198.18.1.200:80"], &[]),
            "in the pod CIDR 198.18.1.0/24",
        ),
        (
            "a backend outside every range",
            || svc("api", &["198.19.128.11:80"], &["198.18.7.7:80"]),
            "198.18.7.7 is outside every known range",
        ),
        (
            "the same service, now with a bad backend",
            || {
                svc(
                    "web",
                    &["198.19.128.10:80"],
                    &["198.18.1.10:8080", "10.0.0.1:80"],
                )
            },
            "outside every known range",
        ),
        (
            "an IPv6 backend",
            || svc("api", &["198.19.128.11:80"], &["[2001:db8::1]:80"]),
            "IPv6",
        ),
    ];
    for (what, make, want) in cases {
        let e = cp.upsert_service(&make()).expect_err(what);
        assert_eq!(e.status(), 400, "{what}");
        assert!(e.message().contains(want), "{what}: {}", e.message());
        let after = dp.maps().clone();
        assert_eq!(after.writes, before.writes, "{what}: the maps were written");
        assert_eq!(
            store.list("pilus/").unwrap().0,
            stored,
            "{what}: the store changed"
        );
    }
    // An import with one bad document imports nothing.
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: good}\nspec: {clusterIP: 198.19.128.20, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {clusterIP: 198.19.128.21, prots: [{port: 80}]}\n";
    let e = cp
        .import_services(&[PolicyFile {
            name: "svc.yaml".into(),
            text: yaml.into(),
        }])
        .unwrap_err();
    assert!(
        e.message()
            .contains("svc.yaml: document 2: spec.prots: unknown field"),
        "{}",
        e.message()
    );
    assert_eq!(dp.maps().writes, before.writes);
    assert!(cp.service_view("default/good").is_err());
    // ... and the services that were there are still there, in the maps
    // and in the store.
    assert!(cp.service_view("shop/web").is_ok());
    assert_eq!(dp.maps().lb_services, before.lb_services);
    assert_eq!(store.list("pilus/").unwrap().0, stored);
    // Nothing is read as "delete everything": deleting needs a name that
    // exists, and an import of nothing is refused.
    assert_eq!(cp.delete_service("shop/nope").unwrap_err().status(), 404);
    assert_eq!(cp.delete_service("").unwrap_err().status(), 400);
    let e = cp
        .import_services(&[PolicyFile {
            name: "empty.yaml".into(),
            text: "---\n".into(),
        }])
        .unwrap_err();
    assert_eq!(e.status(), 400);
    assert_eq!(dp.maps().lb_services.len(), 1);
}

#[test]
fn ids_are_never_reused_and_a_restart_writes_nothing() {
    let (cp, dp, store) = fresh();
    cp.upsert_service(&svc("web", &["198.19.128.10:80"], &["198.18.1.10:80"]))
        .unwrap();
    let first = cp.service_view("shop/web").unwrap().frontend_ids[0];
    cp.delete_service("shop/web").unwrap();
    cp.upsert_service(&svc("web", &["198.19.128.10:80"], &["198.18.1.10:80"]))
        .unwrap();
    let second = cp.service_view("shop/web").unwrap().frontend_ids[0];
    assert!(second > first, "a new id: {first} then {second}");
    let backend_ids: BTreeSet<u32> = dp.maps().lb_backends.keys().copied().collect();
    cp.upsert_service(&svc("api", &["198.19.128.11:80"], &["198.18.1.11:80"]))
        .unwrap();
    drop(cp);

    // The same maps and store: nothing to write.
    let before = dp.maps().clone();
    let cp = start(&dp, &store);
    let after = dp.maps().clone();
    assert_eq!(
        after.writes, before.writes,
        "a clean restart writes nothing"
    );
    assert_eq!(cp.status().resync_written, 0);
    assert_eq!(cp.service_view("shop/web").unwrap().frontend_ids[0], second);
    // And new ids continue after the old ones.
    cp.upsert_service(&svc("db", &["198.19.128.12:80"], &["198.18.1.12:80"]))
        .unwrap();
    let db = cp.service_view("shop/db").unwrap().frontend_ids[0];
    assert!(db > second);
    assert!(dp
        .maps()
        .lb_backends
        .keys()
        .filter(|k| !backend_ids.contains(k))
        .all(|k| *k > *backend_ids.iter().max().unwrap()));
    drop(cp);

    // Maps that lost an entry and gained a stranger are repaired.
    {
        let mut m = dp.maps();
        let k = *m.lb_services.keys().next().unwrap();
        m.lb_services.remove(&k);
        m.lb_backends.insert(99_999, Default::default());
    }
    let cp = start(&dp, &store);
    consistent(&dp.maps()).unwrap();
    assert_eq!(dp.maps().lb_services.len(), 3);
    assert!(!dp.maps().lb_backends.contains_key(&99_999));
    assert!(cp.status().resync_written >= 1 && cp.status().resync_removed >= 1);
}

#[test]
fn kubernetes_documents_are_imported_whole() {
    let (cp, dp, _) = fresh();
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 198.19.128.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
- addresses: [198.18.1.10]
- addresses: [198.18.1.11]
  conditions: {ready: true}
ports: [{name: http, port: 8080}]
"#;
    let r = cp
        .import_services(&[PolicyFile {
            name: "web.yaml".into(),
            text: yaml.into(),
        }])
        .unwrap();
    assert_eq!(r.services, ["shop/web"]);
    assert_eq!(
        chosen(&dp.maps(), [198, 19, 128, 10], 80),
        BTreeSet::from(["198.18.1.10:8080".into(), "198.18.1.11:8080".into()])
    );
}

#[test]
fn the_gc_counts_and_adapts() {
    let dp = FakeDatapath::default();
    let store: Arc<dyn KvStore> = Arc::new(MemKv::default());
    let cp = start(&dp, &store);
    assert!(cp.conntrack_status().is_none(), "before the first pass");
    {
        let mut m = dp.maps();
        m.ct_max_entries = 1000;
        m.ct_next_pass = CtGcPass {
            scanned: 400,
            deleted: 200,
            affinity_deleted: 3,
            nat_scanned: 10,
            nat_deleted: 4,
        };
    }
    let s = GcSchedule::default();
    let pass = cp.ct_gc_once(Duration::from_secs(10), &s);
    assert_eq!(pass.next, Duration::from_secs(5), "half expired: sooner");
    assert_eq!(
        pass.run.map(|r| (r.deleted, r.nat_deleted)),
        Some((200, 4)),
        "the run a watcher sees"
    );
    let st = cp.conntrack_status().unwrap();
    assert_eq!(
        (
            st.entries,
            st.max_entries,
            st.gc_runs,
            st.gc_deleted,
            st.gc_affinity_deleted
        ),
        (200, 1000, 1, 200, 3)
    );
    assert_eq!(
        (st.nat_entries, st.gc_nat_deleted),
        (6, 4),
        "masquerade's NAT entries"
    );
    // The table filled and refused flows: at once.
    {
        let mut m = dp.maps();
        m.ct_insert_failures = 7;
        m.ct_next_pass = CtGcPass {
            scanned: 1000,
            deleted: 0,
            affinity_deleted: 0,
            ..Default::default()
        };
    }
    let pass = cp.ct_gc_once(Duration::from_secs(10), &s);
    assert_eq!(pass.next, s.min);
    assert_eq!(pass.run.map(|r| r.deleted), Some(0));
    let st = cp.conntrack_status().unwrap();
    assert_eq!((st.insert_failures, st.gc_runs, st.entries), (7, 2, 1000));
    assert_eq!(dp.maps().ct_gc_passes, 2);
    // A failed pass is no run (a watcher's run count stays), keeps the
    // interval and shows its error.
    dp.maps().fail_next_ct_gc = true;
    let pass = cp.ct_gc_once(Duration::from_secs(10), &s);
    assert_eq!(pass.run, None);
    assert_eq!(pass.next, Duration::from_secs(10));
    let st = cp.conntrack_status().unwrap();
    assert_eq!(st.gc_runs, 2);
    assert!(st.last_error.is_some(), "{st:?}");
}
