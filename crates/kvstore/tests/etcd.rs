//! The `KvStore` contract, run against every backend; the `ClusterStore`
//! contract (watches, leases), run against etcd and its fake `MemKv`; and
//! etcd's own behaviour (lease expiry and renewal, resuming watches after a
//! crash, an unreachable store) against a real etcd 3.4 (Debian's
//! `etcd-server`).
//!
//! Each etcd test starts its own etcd in a network namespace of its own
//! (`t10etcd-…`), listening only on a 198.18.250.x address on that
//! namespace's `lo`, with its data dir under /tmp. The test thread enters
//! the namespace before it builds the client, so the client's runtime
//! threads (which inherit it) connect from inside. [`Etcd`] kills etcd and
//! removes the data dir and the namespace when dropped, also when the test
//! fails. The etcd tests need root and fail without it.

use pilus_kvstore::{
    ClusterStore, Committed, Compare, Connection, EtcdConfig, EtcdKv, KeyValue, KvError, KvStore,
    LeaseState, LocalKv, MemKv, Revision, Txn, Watch, WatchEvent,
};
use pilus_netns::{ChildGuard, NetNs};
use std::{
    fs,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex, Once},
    time::{Duration, Instant},
};

// ---------------------------------------------------------------------
// The contract every backend keeps.

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

/// What every `KvStore` guarantees, checked on a fresh store. Where etcd
/// and the local backends differ (a put of an unchanged value), only what
/// all of them promise is asserted.
fn contract(kv: &dyn KvStore) {
    let mut seen: Vec<Revision> = Vec::new();
    let (none, r0) = kv.list("c/").unwrap();
    assert!(none.is_empty());
    seen.push(r0);

    // A transaction applies whole; lists come in key order whatever order
    // the keys were written in; a key's mod revision is the revision of
    // the transaction that wrote it.
    let c1 = kv
        .commit(
            Txn::new()
                .put("c/b", "2")
                .put("c/a", "1")
                .put("c/c/x", "3")
                .put("d", "outside"),
        )
        .unwrap();
    assert!(c1.succeeded);
    assert!(c1.revision > r0);
    seen.push(c1.revision);
    let (all, r) = kv.list("c/").unwrap();
    assert_eq!(keys(&all), ["c/a", "c/b", "c/c/x"]);
    assert!(all.iter().all(|kv| kv.mod_revision == c1.revision));
    assert_eq!(r, c1.revision);
    let a = kv.get("c/a").unwrap().unwrap();
    assert_eq!(
        (a.value.as_slice(), a.mod_revision),
        (&b"1"[..], c1.revision)
    );
    assert_eq!(kv.get("c/zz").unwrap(), None);

    // A failing comparison applies nothing and keeps the revision.
    for failing in [
        Compare::Absent("c/a".into()),
        Compare::Equals("c/a".into(), b"other".to_vec()),
        Compare::Equals("c/missing".into(), b"".to_vec()),
        Compare::ModRevision("c/a".into(), c1.revision + 100),
        Compare::ModRevision("c/missing".into(), c1.revision),
    ] {
        let c = kv
            .commit(
                Txn::new()
                    .when(Compare::Absent("c/new".into()))
                    .when(failing.clone())
                    .put("c/new", "x")
                    .delete("c/a"),
            )
            .unwrap();
        assert_eq!(
            c,
            Committed {
                succeeded: false,
                revision: c1.revision
            },
            "{failing:?}"
        );
        assert_eq!(kv.get("c/new").unwrap(), None);
        assert!(kv.get("c/a").unwrap().is_some());
    }

    // Comparisons that hold let it apply: absent, equal value, mod
    // revision (0 for a missing key).
    let c2 = kv
        .commit(
            Txn::new()
                .when(Compare::Absent("c/new".into()))
                .when(Compare::Equals("c/a".into(), b"1".to_vec()))
                .when(Compare::ModRevision("c/b".into(), c1.revision))
                .when(Compare::ModRevision("c/missing".into(), 0))
                .put("c/new", "n")
                .delete("c/b"),
        )
        .unwrap();
    assert!(c2.succeeded);
    assert!(c2.revision > c1.revision);
    seen.push(c2.revision);
    assert_eq!(kv.get("c/new").unwrap().unwrap().mod_revision, c2.revision);
    assert_eq!(kv.get("c/b").unwrap(), None);

    // A delete-prefix takes exactly the keys under the prefix.
    kv.commit(Txn::new().put("c/cx", "sibling")).unwrap();
    let c3 = kv.commit(Txn::new().delete_prefix("c/c/")).unwrap();
    assert!(c3.succeeded);
    seen.push(c3.revision);
    assert_eq!(keys(&kv.list("c/").unwrap().0), ["c/a", "c/cx", "c/new"]);
    assert!(kv.get("d").unwrap().is_some());

    // Deleting what is not there changes nothing, the revision included.
    for nothing in [
        Txn::new().delete("c/absent"),
        Txn::new().delete_prefix("c/none/"),
    ] {
        assert_eq!(
            kv.commit(nothing).unwrap(),
            Committed {
                succeeded: true,
                revision: c3.revision
            }
        );
    }

    // Putting the value a key holds succeeds; the revision does not go
    // back (etcd makes a new one, the local backends keep it).
    let same = kv.commit(Txn::new().put("c/a", "1")).unwrap();
    assert!(same.succeeded);
    assert!(same.revision >= c3.revision);
    seen.push(same.revision);
    assert_eq!(kv.get("c/a").unwrap().unwrap().value, b"1");

    // Bad keys and double writes are refused before anything is applied.
    let (before, rev_before) = kv.list("").unwrap();
    for bad in [
        Txn::new().put("c/ok", "1").put("c/a b", "x"),
        Txn::new().put("c/ok", "1").delete(""),
        Txn::new()
            .when(Compare::Absent("c/\u{e9}".into()))
            .put("c/ok", "1"),
    ] {
        let e = kv.commit(bad.clone()).unwrap_err();
        assert!(matches!(e, KvError::InvalidKey { .. }), "{bad:?}: {e}");
    }
    for twice in [
        Txn::new().put("c/ok", "1").put("c/ok", "2"),
        Txn::new().delete_prefix("c/").put("c/ok", "1"),
    ] {
        let e = kv.commit(twice.clone()).unwrap_err();
        assert!(matches!(e, KvError::DuplicateKey { .. }), "{twice:?}: {e}");
    }
    assert!(matches!(kv.get("a b"), Err(KvError::InvalidKey { .. })));
    assert!(matches!(kv.list("a\tb"), Err(KvError::InvalidKey { .. })));
    assert_eq!(kv.list("").unwrap(), (before, rev_before));

    // The revision never went back.
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
}

#[test]
fn contract_memkv() {
    contract(&MemKv::default());
}

#[test]
fn contract_localkv() {
    let dir = std::env::temp_dir().join(format!("t10etcd-local-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let kv = LocalKv::open(&dir).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| contract(&kv)));
    drop(kv);
    fs::remove_dir_all(&dir).unwrap();
    if let Err(panic) = r {
        std::panic::resume_unwind(panic);
    }
}

// ---------------------------------------------------------------------
// The contract every cluster store keeps (and so the fake, MemKv).

fn next(w: &Watch) -> WatchEvent {
    w.recv_timeout(Duration::from_secs(10))
        .expect("a watch event within 10 s")
}

fn put_event(key: &str, value: &str, rev: Revision) -> WatchEvent {
    WatchEvent::Put {
        kv: KeyValue {
            key: key.into(),
            value: value.into(),
            mod_revision: rev,
        },
    }
}

fn delete_event(key: &str, rev: Revision) -> WatchEvent {
    WatchEvent::Delete {
        key: key.into(),
        mod_revision: rev,
    }
}

/// Watches and leases as every `ClusterStore` has them, on a fresh store;
/// `compact` compacts its history up to a revision.
fn cluster_contract(kv: &dyn ClusterStore, compact: &dyn Fn(Revision)) {
    assert!(matches!(kv.connection(), Connection::Connected { .. }));
    let r0 = kv.list("").unwrap().1;
    let all = kv.watch("w/", r0 + 1).unwrap();
    let r1 = kv.commit(Txn::new().put("w/a", "1")).unwrap().revision;
    let r2 = kv
        .commit(Txn::new().put("w/b", "2").put("w/c", "3").put("x/a", "no"))
        .unwrap()
        .revision;
    let r3 = kv.commit(Txn::new().delete_prefix("w/")).unwrap().revision;

    // In revision order, every event of a revision, nothing of other
    // prefixes; from a later revision, nothing before it; from 0, only
    // what comes after the call.
    let from_r2 = kv.watch("w/", r2).unwrap();
    let from_now = kv.watch("w/", 0).unwrap();
    let deletes = [
        delete_event("w/a", r3),
        delete_event("w/b", r3),
        delete_event("w/c", r3),
    ];
    let mut want = vec![put_event("w/a", "1", r1)];
    want.extend([put_event("w/b", "2", r2), put_event("w/c", "3", r2)]);
    want.extend(deletes.clone());
    assert_eq!(
        (0..want.len()).map(|_| next(&all)).collect::<Vec<_>>(),
        want
    );
    assert_eq!(
        (0..5).map(|_| next(&from_r2)).collect::<Vec<_>>(),
        want[1..]
    );
    let r4 = kv.commit(Txn::new().put("w/d", "4")).unwrap().revision;
    for w in [&all, &from_r2, &from_now] {
        assert_eq!(next(w), put_event("w/d", "4", r4));
    }

    // A leased key goes with its lease, seen by watches as a delete; a put
    // with a lease the store no longer has is refused whole.
    let lease = kv.grant_lease(Duration::from_secs(30)).unwrap();
    let id = lease.id();
    let r5 = kv
        .commit(Txn::new().put_leased("w/node", "up", id))
        .unwrap()
        .revision;
    assert_eq!(next(&all), put_event("w/node", "up", r5));
    lease.revoke().unwrap();
    let gone = next(&all);
    let WatchEvent::Delete { key, mod_revision } = &gone else {
        panic!("expected the leased key's delete, got {gone:?}");
    };
    assert_eq!(key, "w/node");
    assert!(*mod_revision > r5);
    assert_eq!(kv.get("w/node").unwrap(), None);
    let e = kv
        .commit(
            Txn::new()
                .put("w/plain", "1")
                .put_leased("w/node", "up", id),
        )
        .unwrap_err();
    assert!(
        matches!(e, KvError::LeaseNotFound { lease, .. } if lease == id),
        "{e}"
    );
    assert_eq!(kv.get("w/plain").unwrap(), None);

    // A watch from a compacted revision gets the prefix as it is now, then
    // the events after it.
    let (now, current) = kv.list("w/").unwrap();
    compact(current);
    let late = kv.watch("w/", r1).unwrap();
    assert_eq!(
        next(&late),
        WatchEvent::Resync {
            kvs: now,
            revision: current,
            compacted: current
        }
    );
    let r6 = kv.commit(Txn::new().put("w/e", "5")).unwrap().revision;
    assert_eq!(next(&late), put_event("w/e", "5", r6));
    assert_eq!(next(&all), put_event("w/e", "5", r6));
    for w in [&from_r2, &from_now] {
        let got: Vec<WatchEvent> = (0..3).map(|_| next(w)).collect();
        assert_eq!(
            got,
            [
                put_event("w/node", "up", r5),
                gone.clone(),
                put_event("w/e", "5", r6)
            ]
        );
    }
    for w in [&all, &from_r2, &from_now, &late] {
        assert!(w.try_recv().is_err());
    }
}

#[test]
fn cluster_contract_memkv() {
    let kv = MemKv::default();
    cluster_contract(&kv, &|r| kv.compact(r));
    // The fake's own hooks: a lease running out, an outage.
    let lease = kv.grant_lease(Duration::from_secs(2)).unwrap();
    kv.commit(Txn::new().put_leased("n/a", "1", lease.id()))
        .unwrap();
    kv.expire_lease(lease.id());
    assert_eq!(kv.get("n/a").unwrap(), None);
    assert!(matches!(lease.status().state, LeaseState::Expired { .. }));
    let down = Connection::Unreachable {
        since: std::time::SystemTime::now(),
        error: "test".into(),
    };
    kv.set_connection(down.clone());
    assert_eq!(kv.connection(), down);
}

// ---------------------------------------------------------------------
// A real etcd in a namespace of its own.

const PREFIX: &str = "t10etcd";

fn need_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the etcd tests run etcd in network namespaces: run them as root"
    );
    assert!(
        std::path::Path::new("/usr/bin/etcd").exists(),
        "etcd is not installed: `source scripts/deps.sh; pilus_build_deps` installs etcd-server"
    );
    // The store's logs (reconnects, re-grants) go with a failing test's
    // output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("pilus_kvstore=debug")
        .with_test_writer()
        .try_init();
    static CLEAN: Once = Once::new();
    CLEAN.call_once(|| {
        // Namespaces (and the etcd in them) and data dirs of a crashed run.
        pilus_netns::remove_stale(PREFIX).expect("remove stale namespaces");
        for entry in fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
                continue;
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
            // SAFETY: kill with signal 0 only asks whether the pid exists.
            if pid.is_some_and(|p| unsafe { libc::kill(p, 0) } != 0) {
                let _ = fs::remove_dir_all(entry.path());
                let _ = fs::remove_file(entry.path());
            }
        }
    });
}

/// An etcd server on `198.18.250.<n>` inside a namespace of its own: killed,
/// its files removed and the namespace deleted when dropped.
struct Etcd {
    n: u8,
    child: Mutex<Option<ChildGuard>>,
    dir: PathBuf,
    log: PathBuf,
    /// Declared last: deleted after etcd is gone.
    ns: NetNs,
}

impl Etcd {
    fn start(n: u8) -> Etcd {
        need_root();
        let ns = NetNs::new(PREFIX).expect("create a namespace");
        let base = std::env::temp_dir().join(format!("{PREFIX}-{}-{n}", std::process::id()));
        let etcd = Etcd {
            n,
            child: Mutex::new(None),
            dir: base.with_extension("data"),
            log: base.with_extension("log"),
            ns,
        };
        etcd.ns
            .ip(&["addr", "add", &format!("{}/32", etcd.addr()), "dev", "lo"])
            .expect("address on lo");
        etcd.run();
        etcd
    }

    fn addr(&self) -> String {
        format!("198.18.250.{}", self.n)
    }

    fn url(&self) -> String {
        format!("http://{}:{}", self.addr(), 24000 + u16::from(self.n))
    }

    fn peer_url(&self) -> String {
        format!("http://{}:{}", self.addr(), 24100 + u16::from(self.n))
    }

    /// Starts etcd on the data dir (new or kept from an earlier run).
    fn run(&self) {
        let name = format!("{PREFIX}{}", self.n);
        let url = self.url();
        let peer = self.peer_url();
        let cluster = format!("{name}={peer}");
        let mut cmd = self
            .ns
            .command(&[
                "etcd",
                "--name",
                &name,
                "--data-dir",
                self.dir.to_str().unwrap(),
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &name,
                // A single member elects itself after one election timeout.
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "300",
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
            ])
            .unwrap();
        // etcd also reads ETCD_* variables: none of the caller's apply here.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        *self.child.lock().unwrap() = Some(ChildGuard::spawn(cmd).expect("start etcd"));
    }

    /// SIGKILL, as a crash or an OOM kill would.
    fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            child.kill().expect("kill etcd");
        }
    }

    fn config(&self) -> EtcdConfig {
        let mut c = EtcdConfig::new([self.url()]);
        c.connect_timeout = Duration::from_millis(500);
        c.request_timeout = Duration::from_secs(1);
        c.health_every = Duration::from_millis(200);
        c
    }

    /// A client, once etcd answers (it has elected itself). Call it on a
    /// thread inside the namespace.
    fn client(&self) -> EtcdKv {
        let kv = EtcdKv::connect(self.config()).expect("client");
        wait_for("etcd to answer", Duration::from_secs(15), || {
            kv.list("").is_ok()
        });
        kv
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- etcd {} log (last lines) ---", self.n);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_file(&self.log);
    }
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------
// etcd tests.

#[test]
fn contract_etcd() {
    let etcd = Etcd::start(1);
    let _inside = etcd.ns.enter().unwrap();
    let kv = Arc::new(etcd.client());
    contract(kv.as_ref());

    // etcd's own difference: a put of an unchanged value is a new revision.
    let a = kv.get("c/a").unwrap().unwrap();
    let c = kv.commit(Txn::new().put("c/a", a.value.clone())).unwrap();
    assert!(c.revision > a.mod_revision);
    assert_eq!(kv.get("c/a").unwrap().unwrap().mod_revision, c.revision);

    // etcd's limit of operations per transaction (128 by default) is a
    // refusal, and nothing of the transaction is applied.
    let big = (0..129).fold(Txn::new(), |t, i| t.put(format!("big/{i}"), "x"));
    let e = kv.commit(big).unwrap_err();
    assert!(matches!(e, KvError::Rejected { .. }), "{e}");
    assert!(kv.list("big/").unwrap().0.is_empty());

    // Callable from a blocking-pool thread of another tokio runtime, as the
    // agent calls it (`spawn_blocking`).
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let from_pool = other.block_on({
        let kv = kv.clone();
        async move {
            tokio::task::spawn_blocking(move || kv.list("c/"))
                .await
                .unwrap()
        }
    });
    assert_eq!(from_pool.unwrap().1, c.revision);
    drop(other);
    assert!(matches!(kv.connection(), Connection::Connected { .. }));
}

#[test]
fn a_leased_key_lives_while_renewed_and_goes_after_the_ttl() {
    let etcd = Etcd::start(2);
    let _inside = etcd.ns.enter().unwrap();
    let kv = etcd.client();

    let lease = kv.grant_lease(Duration::from_secs(2)).unwrap();
    assert_eq!(lease.ttl(), Duration::from_secs(2));
    kv.commit(Txn::new().put_leased("nodes/a", "198.18.250.2", lease.id()))
        .unwrap();
    // Twice the ttl: only the renewals keep it.
    std::thread::sleep(Duration::from_secs(4));
    assert!(kv.get("nodes/a").unwrap().is_some());
    assert!(matches!(lease.status().state, LeaseState::Alive { .. }));

    // Renewals stop (as when the agent dies): the key goes within the ttl
    // (plus etcd's expiry check, every 500 ms), not at once.
    let stopped = Instant::now();
    let id = lease.abandon();
    assert!(kv.get("nodes/a").unwrap().is_some());
    wait_for(
        "the abandoned lease to expire",
        Duration::from_secs(5),
        || kv.get("nodes/a").unwrap().is_none(),
    );
    let gone = stopped.elapsed();
    // Renewed at most ttl/3 before: at least 2/3 of the ttl was left.
    assert!(gone >= Duration::from_secs(1), "gone after {gone:?}");
    // The store no longer knows it: a put with it is refused, whole.
    let e = kv
        .commit(Txn::new().put("plain", "1").put_leased("nodes/a", "x", id))
        .unwrap_err();
    assert!(
        matches!(e, KvError::LeaseNotFound { lease, .. } if lease == id),
        "{e}"
    );
    assert_eq!(kv.get("plain").unwrap(), None);

    // Revoking deletes the keys now.
    let lease = kv.grant_lease(Duration::from_secs(30)).unwrap();
    kv.commit(Txn::new().put_leased("nodes/b", "1", lease.id()))
        .unwrap();
    lease.revoke().unwrap();
    assert_eq!(kv.get("nodes/b").unwrap(), None);
    // And so does dropping the lease.
    let lease = kv.grant_lease(Duration::from_secs(30)).unwrap();
    kv.commit(Txn::new().put_leased("nodes/c", "1", lease.id()))
        .unwrap();
    drop(lease);
    assert_eq!(kv.get("nodes/c").unwrap(), None);
}

#[test]
fn an_expired_lease_is_granted_anew_and_its_keys_put_back() {
    let etcd = Etcd::start(3);
    let _inside = etcd.ns.enter().unwrap();
    let kv = etcd.client();
    let other = etcd.client();

    let lease = kv.grant_lease(Duration::from_secs(3)).unwrap();
    let old = lease.id();
    kv.commit(
        Txn::new()
            .put_leased("nodes/a", "mine", old)
            .put_leased("nodes/b", "mine", old),
    )
    .unwrap();
    // The lease ends behind the keeper's back, as when etcd let it expire
    // during a partition longer than the ttl; meanwhile another node takes
    // one of the keys.
    other.revoke_lease(old).unwrap();
    assert_eq!(kv.get("nodes/a").unwrap(), None);
    other.commit(Txn::new().put("nodes/b", "theirs")).unwrap();

    wait_for("a new lease", Duration::from_secs(10), || {
        lease.status().regrants == 1 && matches!(lease.status().state, LeaseState::Alive { .. })
    });
    assert_ne!(lease.id(), old);
    assert_eq!(kv.get("nodes/a").unwrap().unwrap().value, b"mine");
    // Not put back over the other node's value.
    assert_eq!(kv.get("nodes/b").unwrap().unwrap().value, b"theirs");
    // The new lease holds the key: revoking it takes the key away.
    lease.revoke().unwrap();
    assert_eq!(kv.get("nodes/a").unwrap(), None);
    assert_eq!(kv.get("nodes/b").unwrap().unwrap().value, b"theirs");
}

#[test]
fn a_watch_resumes_after_etcd_is_killed_and_restarted() {
    let etcd = Etcd::start(5);
    let _inside = etcd.ns.enter().unwrap();
    let kv = etcd.client();
    let start = kv.list("").unwrap().1;
    let w = kv.watch("r/", start + 1).unwrap();
    // A lease outlives a short outage: etcd gives every lease a full ttl
    // when it comes back, and the keeper renews it on a new stream.
    let lease = kv.grant_lease(Duration::from_secs(2)).unwrap();
    kv.commit(Txn::new().put_leased("nodes/r", "1", lease.id()))
        .unwrap();

    // A burst, and the kill right after the last commit returned: some of
    // it may not have reached the watch yet.
    let mut want = Vec::new();
    for i in 0..20 {
        let v = i.to_string();
        let r = kv
            .commit(Txn::new().put(format!("r/{i}"), v.clone()))
            .unwrap();
        want.push(put_event(&format!("r/{i}"), &v, r.revision));
    }
    etcd.kill();
    // Nobody can write during the outage, and the store says so.
    let e = kv.commit(Txn::new().put("r/lost", "x")).unwrap_err();
    assert!(matches!(e, KvError::Unavailable { .. }), "{e}");
    wait_for("the outage to show", Duration::from_secs(5), || {
        matches!(kv.connection(), Connection::Unreachable { .. })
            && matches!(lease.status().state, LeaseState::Unconfirmed { .. })
    });

    etcd.run();
    wait_for("etcd to come back", Duration::from_secs(15), || {
        kv.list("").is_ok()
    });
    assert!(matches!(kv.connection(), Connection::Connected { .. }));
    let r = kv.commit(Txn::new().put("r/after", "1")).unwrap().revision;
    want.push(put_event("r/after", "1", r));

    let got: Vec<WatchEvent> = (0..want.len()).map(|_| next(&w)).collect();
    assert_eq!(got, want);
    wait_for("the lease to be renewed", Duration::from_secs(5), || {
        matches!(lease.status().state, LeaseState::Alive { .. })
    });
    let status = lease.status();
    assert_eq!(status.regrants, 0, "{status:?}");
    assert!(kv.get("nodes/r").unwrap().is_some());
    // Nothing twice, nothing more.
    std::thread::sleep(Duration::from_millis(300));
    assert!(w.try_recv().is_err());
}

#[test]
fn cluster_contract_etcd() {
    let etcd = Etcd::start(4);
    let _inside = etcd.ns.enter().unwrap();
    let kv = etcd.client();
    cluster_contract(&kv, &|r| kv.compact(r).unwrap());
}

type Call<'a> = Box<dyn Fn() -> Result<(), KvError> + 'a>;

#[test]
fn an_unreachable_etcd_is_unavailable_within_the_timeout() {
    need_root();
    let ns = NetNs::new(PREFIX).unwrap();
    // Refused: the address is there, nothing listens. Black hole: the SYNs
    // go out of a veth whose other end has no address and answers nothing
    // (a fixed neighbour entry, so not even ARP fails), as in a partition.
    ns.ip(&["addr", "add", "198.18.250.7/32", "dev", "lo"])
        .unwrap();
    ns.ip(&[
        "link", "add", "t10hole", "type", "veth", "peer", "name", "t10sink",
    ])
    .unwrap();
    ns.ip(&["addr", "add", "198.18.251.1/24", "dev", "t10hole"])
        .unwrap();
    ns.ip(&["link", "set", "t10hole", "up"]).unwrap();
    ns.ip(&["link", "set", "t10sink", "up"]).unwrap();
    ns.ip(&[
        "neigh",
        "add",
        "198.18.251.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "t10hole",
        "nud",
        "permanent",
    ])
    .unwrap();
    let _inside = ns.enter().unwrap();

    for endpoint in ["http://198.18.250.7:24007", "http://198.18.251.2:24007"] {
        let mut config = EtcdConfig::new([endpoint]);
        config.connect_timeout = Duration::from_millis(500);
        config.request_timeout = Duration::from_secs(1);
        let kv = EtcdKv::connect(config).unwrap();
        let limit = Duration::from_millis(1800);
        let calls: [(&str, Call); 5] = [
            ("list", Box::new(|| kv.list("").map(drop))),
            ("get", Box::new(|| kv.get("a").map(drop))),
            (
                "commit",
                Box::new(|| kv.commit(Txn::new().put("a", "1")).map(drop)),
            ),
            (
                "grant",
                Box::new(|| kv.grant_lease(Duration::from_secs(5)).map(drop)),
            ),
            ("watch", Box::new(|| kv.watch("a/", 0).map(drop))),
        ];
        for (what, call) in calls {
            let t = Instant::now();
            let e = call().unwrap_err();
            let took = t.elapsed();
            assert!(
                matches!(e, KvError::Unavailable { .. }),
                "{endpoint} {what}: {e}"
            );
            assert!(took < limit, "{endpoint} {what} took {took:?}");
        }
        assert!(
            matches!(kv.connection(), Connection::Unreachable { .. }),
            "{:?}",
            kv.connection()
        );
        // Bad input is refused before anything is sent: at once, and as
        // what it is.
        let t = Instant::now();
        let e = kv.commit(Txn::new().put("a b", "1")).unwrap_err();
        assert!(matches!(e, KvError::InvalidKey { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_millis(100));
    }
}
