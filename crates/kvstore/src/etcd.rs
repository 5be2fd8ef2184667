//! The cluster backend: [`EtcdKv`], the [`KvStore`] and [`ClusterStore`]
//! over etcd's v3 API (the `etcd-client` crate), with etcd's own semantics
//! (see [`KvStore`] for where they differ from the local backends). This
//! module owns the bridge from blocking callers to the async client, the
//! mapping of etcd's answers to [`KvError`], and the background tasks: lease
//! keepers, watches and the health check.
//!
//! Every request has the configured timeout, enforced here and not by the
//! gRPC channel: a channel whose endpoints are all down can wait for one to
//! come up, and would hang the caller.

use crate::cluster::{ClusterStore, Connection, EndLease, Lease, LeaseShared, Watch, WatchEvent};
use crate::kv::{
    check_key, check_prefix, Committed, Compare, KeyValue, KvError, KvStore, LeaseId, Op, Revision,
    Txn,
};
use etcd_client as etcd;
use std::{
    error::Error as StdError,
    future::Future,
    sync::{mpsc, Arc, Mutex, Weak},
    time::{Duration, SystemTime},
};
use tokio::task::AbortHandle;

/// First wait before a watch or lease keeper tries again; doubled up to
/// [`BACKOFF_MAX`] while the store stays unreachable.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// HTTP/2 pings on idle connections: without them a watch on a connection
/// whose peer vanished (a partition, no RST) waits forever. etcd refuses
/// pings more often than every 5 s (`--grpc-keepalive-min-time`).
const PING_EVERY: Duration = Duration::from_secs(10);

/// One try of a request that [`Net::call_retrying`] may try again: etcd
/// holds a proposal made while its leader is gone until its own timeout,
/// and a new leader is there well before (an election timeout, 1 s by
/// default).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The key the health check reads (count only; nothing is written).
const HEALTH_KEY: &str = "pilus/.health";

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs (`http://198.18.0.1:2379`); requests go to any that
    /// answers.
    pub endpoints: Vec<String>,
    /// Limit for opening one TCP connection.
    pub connect_timeout: Duration,
    /// Limit for one request, connecting included.
    pub request_timeout: Duration,
    /// How often the connection state is checked when nothing else asks.
    pub health_every: Duration,
}

impl EtcdConfig {
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            health_every: Duration::from_secs(5),
        }
    }

    fn check(&self) -> Result<(), KvError> {
        let bad = |what: &str| {
            Err(KvError::Config {
                what: what.to_string(),
                source: None,
            })
        };
        if self.endpoints.is_empty() {
            return bad("no etcd endpoint given");
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return bad("a zero timeout would fail every request");
        }
        if self.health_every.is_zero() {
            return bad("a zero health check interval would spin");
        }
        Ok(())
    }
}

/// The runtime, shut down without waiting when its last user goes: that may
/// be on any thread, even inside another runtime's task, where waiting for
/// the workers would panic.
struct Rt(Option<tokio::runtime::Runtime>);

impl Rt {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0
            .as_ref()
            .expect("the runtime lives until Rt is dropped")
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A background task that is stopped when this is dropped; it keeps the
/// runtime alive until then.
struct TaskGuard {
    abort: AbortHandle,
    _rt: Arc<Rt>,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

/// What every request needs: the client, the timeout, and the connection
/// state it updates. Tasks hold clones of this, never the runtime (a task
/// that dropped the last handle of its own runtime would panic).
#[derive(Clone)]
struct Net {
    client: etcd::Client,
    timeout: Duration,
    conn: Arc<Mutex<Connection>>,
}

impl Net {
    /// Runs one request under the timeout, maps its error and notes whether
    /// the store answered. `lease` is the lease a "not found" would be about.
    async fn call<T, F>(&self, what: &str, lease: Option<LeaseId>, f: F) -> Result<T, KvError>
    where
        F: Future<Output = Result<T, etcd::Error>>,
    {
        let r = self.attempt(what, lease, f).await;
        match &r {
            Err(e @ KvError::Unavailable { .. }) => self.down(e),
            _ => self.up(),
        }
        r
    }

    /// [`Net::call`] for a request that is safe to send again (a read, or
    /// a transaction: every one Pilus commits either writes the same
    /// values again or is guarded by a comparison that a first, unanswered
    /// success makes fail). While the store is believed reachable, a try
    /// that gets no answer is repeated until the request's timeout: one
    /// member of several going, or an election, is not an outage. A store
    /// known to be unreachable is tried once, so callers fail fast.
    async fn call_retrying<T, F, Fut>(
        &self,
        what: &str,
        lease: Option<LeaseId>,
        make: F,
    ) -> Result<T, KvError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd::Error>>,
    {
        self.retrying(what, lease, make, true).await
    }

    /// [`Net::call_retrying`] for what keeps a stream open (a watch, a
    /// lease's keep-alive): a success says the store is reachable, a
    /// failure is not taken as proof that it is not — the stream's owner
    /// tries again, and the health check and the requests decide.
    async fn open_retrying<T, F, Fut>(
        &self,
        what: &str,
        lease: Option<LeaseId>,
        make: F,
    ) -> Result<T, KvError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd::Error>>,
    {
        self.retrying(what, lease, make, false).await
    }

    async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        lease: Option<LeaseId>,
        mut make: F,
        note_down: bool,
    ) -> Result<T, KvError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let reachable = !matches!(self.connection(), Connection::Unreachable { .. });
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let r = match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), make()).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(classify(what, e, lease)),
                Err(elapsed) => Err(KvError::Unavailable {
                    what: format!("{what}: no answer within {:?}", left.min(ATTEMPT_TIMEOUT)),
                    source: Some(Box::new(elapsed)),
                }),
            };
            let again = reachable
                && matches!(r, Err(KvError::Unavailable { .. }))
                && tokio::time::Instant::now() + RETRY_PAUSE < deadline;
            if !again {
                match &r {
                    Err(e @ KvError::Unavailable { .. }) => {
                        if note_down {
                            self.down(e)
                        }
                    }
                    _ => self.up(),
                }
                return r;
            }
            if let Err(e) = &r {
                tracing::debug!(error = %chain(e), "no answer from etcd; trying again");
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    fn connection(&self) -> Connection {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// [`Net::call`] without noting the outcome.
    async fn attempt<T, F>(&self, what: &str, lease: Option<LeaseId>, f: F) -> Result<T, KvError>
    where
        F: Future<Output = Result<T, etcd::Error>>,
    {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(what, e, lease)),
            Err(elapsed) => Err(KvError::Unavailable {
                what: format!("{what}: no answer within {:?}", self.timeout),
                source: Some(Box::new(elapsed)),
            }),
        }
    }

    fn up(&self) {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(*c, Connection::Connected { .. }) {
            tracing::info!("etcd is reachable");
            *c = Connection::Connected {
                since: SystemTime::now(),
            };
        }
    }

    fn down(&self, e: &KvError) {
        let error = chain(e);
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let since = match &*c {
            Connection::Unreachable { since, .. } => *since,
            _ => {
                tracing::warn!(error = %error, "etcd is unreachable");
                SystemTime::now()
            }
        };
        *c = Connection::Unreachable { since, error };
    }
}

/// An error and its sources on one line, for the connection state.
fn chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}

/// Sorts etcd's errors into "no answer" (worth retrying elsewhere or later)
/// and "answered no".
fn classify(what: &str, e: etcd::Error, lease: Option<LeaseId>) -> KvError {
    use tonic::Code;
    let what = what.to_string();
    match &e {
        etcd::Error::GRpcStatus(s) => match s.code() {
            // etcd's only NotFound for these requests: "requested lease not found".
            Code::NotFound if lease.is_some() => KvError::LeaseNotFound {
                lease: lease.expect("checked"),
                source: Box::new(e),
            },
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::ResourceExhausted
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::AlreadyExists
            | Code::NotFound
            | Code::Unimplemented => KvError::Rejected {
                what,
                source: Box::new(e),
            },
            _ => KvError::Unavailable {
                what,
                source: Some(Box::new(e)),
            },
        },
        // etcd-client's own word for a keep-alive answered with ttl 0.
        etcd::Error::LeaseKeepAliveError(_) if lease.is_some() => KvError::LeaseNotFound {
            lease: lease.expect("checked"),
            source: Box::new(e),
        },
        etcd::Error::InvalidArgs(_)
        | etcd::Error::InvalidUri(_)
        | etcd::Error::InvalidMetadataValue(_)
        | etcd::Error::EndpointError(_) => KvError::Config {
            what,
            source: Some(Box::new(e)),
        },
        _ => KvError::Unavailable {
            what,
            source: Some(Box::new(e)),
        },
    }
}

fn rev_i64(r: Revision) -> i64 {
    // Beyond i64 no revision exists; the comparison then simply fails.
    i64::try_from(r).unwrap_or(i64::MAX)
}

fn rev_u64(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

fn header_rev(h: Option<&etcd::ResponseHeader>) -> Revision {
    h.map_or(0, |h| rev_u64(h.revision()))
}

/// etcd keys are bytes; ours are text. A key that is not UTF-8 cannot have
/// come through a `KvStore`: it is skipped, loudly.
fn key_value(kv: &etcd::KeyValue) -> Option<KeyValue> {
    match std::str::from_utf8(kv.key()) {
        Ok(key) => Some(KeyValue {
            key: key.to_string(),
            value: kv.value().to_vec(),
            mod_revision: rev_u64(kv.mod_revision()),
        }),
        Err(_) => {
            tracing::warn!(key = ?String::from_utf8_lossy(kv.key()), "skipping a key that is not UTF-8");
            None
        }
    }
}

fn to_etcd(txn: &Txn) -> etcd::Txn {
    use etcd::{Compare as C, CompareOp::Equal};
    let when: Vec<C> = txn
        .when
        .iter()
        .map(|c| match c {
            // etcd's test for "no such key": it was never created.
            Compare::Absent(k) => C::create_revision(k.as_str(), Equal, 0),
            Compare::Equals(k, v) => C::value(k.as_str(), Equal, v.clone()),
            Compare::ModRevision(k, r) => C::mod_revision(k.as_str(), Equal, rev_i64(*r)),
        })
        .collect();
    let then: Vec<etcd::TxnOp> = txn
        .then
        .iter()
        .map(|op| match op {
            Op::Put { key, value, lease } => etcd::TxnOp::put(
                key.as_str(),
                value.clone(),
                lease.map(|l| etcd::PutOptions::new().with_lease(l.0)),
            ),
            Op::Delete { key } => etcd::TxnOp::delete(key.as_str(), None),
            Op::DeletePrefix { prefix } => etcd::TxnOp::delete(
                prefix.as_str(),
                Some(etcd::DeleteOptions::new().with_prefix()),
            ),
        })
        .collect();
    etcd::Txn::new().when(when).and_then(then)
}

/// The etcd backend.
///
/// `etcd-client` is async; the store's callers block. So `EtcdKv` owns a
/// small tokio runtime (one worker thread) that runs the gRPC connection,
/// lease keepers, watches and the health check, and each blocking call
/// waits on it. That works from any thread that is not driving async tasks:
/// plain threads, and tokio's blocking pool (`spawn_blocking`) of another
/// runtime. **Never call it from inside an async task**: the wait panics
/// there (it would stall that runtime's worker).
///
/// Failures to get an answer in time are [`KvError::Unavailable`] and mark
/// the [`Connection`] unreachable until the next answer.
///
/// Network namespaces: sockets are opened by the runtime's threads, which
/// inherit the namespace of the thread that called [`EtcdKv::connect`].
pub struct EtcdKv {
    net: Net,
    /// Leases granted here that are still held, so that commits can tell
    /// them which keys they own.
    leases: Mutex<Vec<Weak<LeaseShared>>>,
    _health: TaskGuard,
    /// Declared last: dropped after the guards above.
    rt: Arc<Rt>,
}

impl EtcdKv {
    /// Sets up the client. etcd need not be reachable yet: requests fail
    /// with [`KvError::Unavailable`] until it is, and [`EtcdKv::connection`]
    /// tells.
    pub fn connect(config: EtcdConfig) -> Result<EtcdKv, KvError> {
        config.check()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pilus-etcd")
            .enable_all()
            .build()
            .map_err(|e| KvError::Config {
                what: "cannot start the etcd client's runtime".into(),
                source: Some(Box::new(e)),
            })?;
        let rt = Arc::new(Rt(Some(rt)));
        let options = etcd::ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(PING_EVERY, config.request_timeout)
            .with_keep_alive_while_idle(true);
        let what = format!("connect to etcd at {}", config.endpoints.join(","));
        let client = rt.get().block_on(async {
            // Connecting is lazy (no request is sent), but bound it anyway.
            match tokio::time::timeout(
                config.request_timeout,
                etcd::Client::connect(&config.endpoints, Some(options)),
            )
            .await
            {
                Ok(r) => r.map_err(|e| classify(&what, e, None)),
                Err(elapsed) => Err(KvError::Unavailable {
                    what: what.clone(),
                    source: Some(Box::new(elapsed)),
                }),
            }
        })?;
        let net = Net {
            client,
            timeout: config.request_timeout,
            conn: Arc::new(Mutex::new(Connection::Unknown)),
        };
        let health = {
            let net = net.clone();
            let every = config.health_every;
            rt.get().spawn(async move {
                loop {
                    // Retried within the request timeout: with several
                    // members, the one a try went to may have just gone
                    // while the others serve. Serializable: any member
                    // answers from its own data, so an election (no leader
                    // for a moment) is not taken for an outage; writes
                    // meanwhile are retried by their callers. The result
                    // is in the connection state.
                    let client = &net.client;
                    let _ = net
                        .call_retrying("health check", None, || {
                            let mut kv = client.kv_client();
                            let probe = etcd::GetOptions::new()
                                .with_count_only()
                                .with_serializable();
                            async move { kv.get(HEALTH_KEY, Some(probe)).await }
                        })
                        .await;
                    tokio::time::sleep(every).await;
                }
            })
        };
        Ok(EtcdKv {
            net,
            leases: Mutex::new(Vec::new()),
            _health: TaskGuard {
                abort: health.abort_handle(),
                _rt: rt.clone(),
            },
            rt,
        })
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.get().block_on(f)
    }

    /// Compacts etcd's history up to `revision`: watches from before it get
    /// [`WatchEvent::Resync`]. (Clusters usually let etcd compact by
    /// itself, `--auto-compaction-retention`.)
    pub fn compact(&self, revision: Revision) -> Result<(), KvError> {
        let mut kv = self.net.client.kv_client();
        // Physical: return once the history is really gone, so a watch
        // started after this sees the compaction.
        let opts = etcd::CompactionOptions::new().with_physical();
        self.block_on(self.net.call(
            &format!("compact to revision {revision}"),
            None,
            kv.compact(rev_i64(revision), Some(opts)),
        ))?;
        Ok(())
    }

    /// Revokes any lease by id (e.g. one a dead node held): etcd deletes its
    /// keys now.
    pub fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        let mut leases = self.net.client.lease_client();
        self.block_on(self.net.call(
            &format!("revoke lease {lease}"),
            Some(lease),
            leases.revoke(lease.0),
        ))?;
        Ok(())
    }

    /// Tells the leases held here which keys a successful transaction put
    /// with them (and which it deleted or gave to someone else).
    fn remember(&self, txn: &Txn) {
        let mut held = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|w| w.upgrade().is_some_and(|l| !l.is_ended()));
        let held: Vec<Arc<LeaseShared>> = held.iter().filter_map(Weak::upgrade).collect();
        for op in &txn.then {
            for l in &held {
                match op {
                    Op::Put { key, value, lease } if *lease == Some(l.id()) => {
                        l.remember(key, value)
                    }
                    Op::Put { key, .. } | Op::Delete { key } => l.forget(key),
                    Op::DeletePrefix { prefix } => l.forget_prefix(prefix),
                }
            }
        }
    }
}

impl KvStore for EtcdKv {
    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), KvError> {
        check_prefix(prefix)?;
        let client = &self.net.client;
        // etcd returns a range in key order unless asked otherwise.
        let resp = self.block_on(self.net.call_retrying(
            &format!("list {prefix:?}"),
            None,
            || {
                let mut kv = client.kv_client();
                async move {
                    kv.get(prefix, Some(etcd::GetOptions::new().with_prefix()))
                        .await
                }
            },
        ))?;
        let kvs = resp.kvs().iter().filter_map(key_value).collect();
        Ok((kvs, header_rev(resp.header())))
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        check_key(key)?;
        let client = &self.net.client;
        let resp = self.block_on(self.net.call_retrying(&format!("get {key:?}"), None, || {
            let mut kv = client.kv_client();
            async move { kv.get(key, None).await }
        }))?;
        Ok(resp.kvs().first().and_then(key_value))
    }

    fn commit(&self, txn: Txn) -> Result<Committed, KvError> {
        // Everything is checked before anything is sent.
        txn.check()?;
        let lease = txn.first_leased().map(|(_, l)| l);
        let client = &self.net.client;
        let resp = self.block_on(self.net.call_retrying("commit a transaction", lease, || {
            let mut kv = client.kv_client();
            let t = to_etcd(&txn);
            async move { kv.txn(t).await }
        }))?;
        if resp.succeeded() {
            self.remember(&txn);
        }
        Ok(Committed {
            succeeded: resp.succeeded(),
            revision: header_rev(resp.header()),
        })
    }
}

impl ClusterStore for EtcdKv {
    fn grant_lease(&self, ttl: Duration) -> Result<Lease, KvError> {
        // etcd counts whole seconds; round up so the lease lasts at least `ttl`.
        let secs = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
        let client = &self.net.client;
        let secs_i64 = i64::try_from(secs).unwrap_or(i64::MAX);
        let resp = self.block_on(self.net.call_retrying("grant a lease", None, || {
            let mut leases = client.lease_client();
            async move { leases.grant(secs_i64, None).await }
        }))?;
        let id = LeaseId(resp.id());
        let granted = Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(secs).max(1));
        let shared = Arc::new(LeaseShared::new(id, granted));
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&shared));
        let keeper = self.rt.get().spawn(keep(self.net.clone(), shared.clone()));
        let guard = TaskGuard {
            abort: keeper.abort_handle(),
            _rt: self.rt.clone(),
        };
        let net = self.net.clone();
        let of = shared.clone();
        let end: EndLease = Box::new(move |revoke| {
            let rt = guard._rt.clone();
            // The keeper stops first, so that it cannot grant anew.
            drop(guard);
            if !revoke {
                return Ok(());
            }
            let lease = of.id();
            // Run on the runtime and wait here: this also runs from
            // `Drop`, where `block_on` inside an async context would panic
            // mid-unwind.
            let (tx, rx) = mpsc::channel();
            rt.get().spawn(async move {
                let mut leases = net.client.lease_client();
                let r = net
                    .call(
                        &format!("revoke lease {lease}"),
                        Some(lease),
                        leases.revoke(lease.0),
                    )
                    .await;
                let _ = tx.send(r.map(|_| ()));
            });
            match rx.recv() {
                Ok(r) => r,
                Err(e) => Err(KvError::Unavailable {
                    what: format!("revoke lease {lease}: the client stopped"),
                    source: Some(Box::new(e)),
                }),
            }
        });
        tracing::debug!(lease = %id, ttl = ?granted, "lease granted");
        Ok(Lease::new(shared, end))
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, KvError> {
        check_prefix(prefix)?;
        let (tx, rx) = mpsc::channel();
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let task = self.rt.get().spawn(follow(
            self.net.clone(),
            prefix.to_string(),
            from,
            tx,
            first_tx,
        ));
        let guard = TaskGuard {
            abort: task.abort_handle(),
            _rt: self.rt.clone(),
        };
        match self.block_on(first_rx) {
            Ok(Ok(())) => Ok(Watch::new(rx, Box::new(guard))),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(KvError::Unavailable {
                what: format!("watch {prefix:?}: the watch stopped before it started"),
                source: Some(Box::new(e)),
            }),
        }
    }

    fn connection(&self) -> Connection {
        self.net.connection()
    }
}

/// Doubling waits between attempts while the store is unreachable.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(BACKOFF_FIRST)
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_FIRST;
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
    }
}

/// Keeps a lease alive: a renewal every third of its ttl on one keep-alive
/// stream, a new stream after a failure, and a new lease (with the keys put
/// back) once etcd says the old one is gone.
async fn keep(net: Net, lease: Arc<LeaseShared>) {
    let period = lease.ttl / 3;
    let mut backoff = Backoff::new();
    loop {
        let id = lease.id();
        // Opening the stream is itself a renewal: etcd-client sends one and
        // waits for the answer (ttl 0: the lease is gone).
        let client = &net.client;
        let opened = net
            .open_retrying("renew a lease", Some(id), || {
                let mut leases = client.lease_client();
                async move { leases.keep_alive(id.0).await }
            })
            .await;
        match opened {
            Ok((mut keeper, mut stream)) => {
                lease.renewed();
                backoff.reset();
                loop {
                    tokio::time::sleep(period).await;
                    let renewal = async {
                        keeper.keep_alive().await?;
                        stream.message().await
                    };
                    // A broken stream is opened again (above); the member
                    // it ran over may be the only one gone.
                    match net.attempt("renew a lease", None, renewal).await {
                        Ok(Some(r)) if r.ttl() > 0 => lease.renewed(),
                        Ok(Some(_)) => {
                            lease.expired();
                            break;
                        }
                        Ok(None) | Err(_) => {
                            lease.unconfirmed();
                            break;
                        }
                    }
                }
            }
            Err(KvError::LeaseNotFound { .. }) => lease.expired(),
            Err(_) => lease.unconfirmed(),
        }
        if matches!(lease.state(), crate::cluster::LeaseState::Expired { .. }) {
            tracing::warn!(lease = %id, "the lease expired; granting a new one");
            regrant(&net, &lease).await;
            backoff.reset();
        } else {
            backoff.wait().await;
        }
    }
}

/// Grants a lease with the old one's ttl and puts back the keys this
/// process had put with the old one. A key that someone else created in the
/// meantime is theirs now and stays as it is.
async fn regrant(net: &Net, lease: &LeaseShared) {
    let mut backoff = Backoff::new();
    let secs = i64::try_from(lease.ttl.as_secs()).unwrap_or(i64::MAX);
    let id = loop {
        let client = &net.client;
        let granted = net
            .call_retrying("grant a lease", None, || {
                let mut leases = client.lease_client();
                async move { leases.grant(secs, None).await }
            })
            .await;
        match granted {
            Ok(r) => break LeaseId(r.id()),
            Err(_) => backoff.wait().await,
        }
    };
    'again: loop {
        for (key, value) in lease.keys() {
            let mut kv = net.client.kv_client();
            let txn = etcd::Txn::new()
                .when([etcd::Compare::create_revision(
                    key.as_str(),
                    etcd::CompareOp::Equal,
                    0,
                )])
                .and_then([etcd::TxnOp::put(
                    key.as_str(),
                    value,
                    Some(etcd::PutOptions::new().with_lease(id.0)),
                )]);
            match net
                .call("put a key back with its new lease", Some(id), kv.txn(txn))
                .await
            {
                Ok(r) if !r.succeeded() => {
                    tracing::info!(key, "a key of the expired lease has another owner now");
                    lease.forget(&key);
                }
                Ok(_) => {}
                Err(_) => {
                    backoff.wait().await;
                    continue 'again;
                }
            }
        }
        break;
    }
    tracing::info!(lease = %id, keys = lease.keys().len(), "lease granted anew, its keys put back");
    lease.regranted(id);
}

/// Follows `prefix` from `next` on, for as long as the consumer listens.
///
/// `next` is the first revision not yet delivered; every (re)connection
/// asks etcd for events from exactly there, so a disconnect (etcd
/// restarted, network lost) neither loses nor repeats an event. If etcd has
/// compacted that revision away, the consumer gets the prefix's current
/// keys ([`WatchEvent::Resync`]) and events from after them.
async fn follow(
    net: Net,
    prefix: String,
    mut next: Revision,
    tx: mpsc::Sender<WatchEvent>,
    first: tokio::sync::oneshot::Sender<Result<(), KvError>>,
) {
    let mut first = Some(first);
    let mut backoff = Backoff::new();
    loop {
        let ended = match open(&net, &prefix, next).await {
            Ok(Opened::Watching {
                mut stream,
                current,
            }) => {
                if next == 0 {
                    next = current + 1;
                }
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                }
                backoff.reset();
                deliver(&net, &prefix, &mut stream, &mut next, &tx).await
            }
            Ok(Opened::Compacted(compacted)) => {
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                }
                resync(&net, &prefix, compacted, &mut next, &tx).await
            }
            Err(e) => {
                if let Some(first) = first.take() {
                    let _ = first.send(Err(e));
                    return;
                }
                tracing::debug!(prefix, error = %chain(&e), "cannot watch yet; retrying");
                Ended::Broken
            }
        };
        match ended {
            Ended::Closed => return,
            Ended::Broken => backoff.wait().await,
            Ended::Resynced => {}
        }
    }
}

/// Why a watch stream ended.
enum Ended {
    /// Reconnect from the next revision, after a pause.
    Broken,
    /// Reconnect from the revision after the re-listing, now.
    Resynced,
    /// The consumer dropped the watch.
    Closed,
}

enum Opened {
    /// The watch is created; etcd was at revision `current`.
    Watching {
        // Boxed: the stream is large, and one is open per watch.
        stream: Box<etcd::WatchStream>,
        current: Revision,
    },
    /// The revision asked for was compacted away (etcd kept history from
    /// this one on).
    Compacted(Revision),
}

/// Opens a watch stream from `next` (0: from now) and waits until etcd has
/// answered the create.
async fn open(net: &Net, prefix: &str, next: Revision) -> Result<Opened, KvError> {
    let mut options = etcd::WatchOptions::new().with_prefix();
    if next > 0 {
        options = options.with_start_revision(rev_i64(next));
    }
    let client = &net.client;
    let create = || {
        let mut watches = client.watch_client();
        let options = options.clone();
        async move {
            let mut stream = watches.watch(prefix, Some(options)).await?;
            // etcd answers a create before it sends any event; etcd 3.4
            // reports a compacted start revision right after, but be ready
            // for both in one answer.
            match stream.message().await? {
                Some(r) if r.compact_revision() > 0 => {
                    Ok(Opened::Compacted(rev_u64(r.compact_revision())))
                }
                Some(r) if r.created() && !r.canceled() => {
                    let current = header_rev(r.header());
                    Ok(Opened::Watching {
                        stream: Box::new(stream),
                        current,
                    })
                }
                Some(r) => Err(etcd::Error::WatchError(format!(
                    "etcd did not create the watch: {}",
                    r.cancel_reason()
                ))),
                None => Err(etcd::Error::WatchError(
                    "the watch stream closed before the watch was created".into(),
                )),
            }
        }
    };
    net.open_retrying(&format!("watch {prefix:?}"), None, create)
        .await
}

/// Lists the prefix for a watch whose next revision was compacted away and
/// hands the listing to the consumer; the watch goes on after it.
async fn resync(
    net: &Net,
    prefix: &str,
    compacted: Revision,
    next: &mut Revision,
    tx: &mpsc::Sender<WatchEvent>,
) -> Ended {
    tracing::warn!(
        prefix,
        from = *next,
        compacted,
        "the watch's revision was compacted; re-listing"
    );
    let client = &net.client;
    let listed = net
        .call_retrying(&format!("list {prefix:?}"), None, || {
            let mut kv = client.kv_client();
            async move {
                kv.get(prefix, Some(etcd::GetOptions::new().with_prefix()))
                    .await
            }
        })
        .await;
    // On failure the next connection meets the compaction again.
    let Ok(listed) = listed else {
        return Ended::Broken;
    };
    let revision = header_rev(listed.header());
    let kvs = listed.kvs().iter().filter_map(key_value).collect();
    let event = WatchEvent::Resync {
        kvs,
        revision,
        compacted,
    };
    if tx.send(event).is_err() {
        return Ended::Closed;
    }
    *next = revision + 1;
    Ended::Resynced
}

/// A watch event's revision and what to deliver for it; `None` for the
/// event if it cannot be delivered (logged: a key that is not UTF-8, a kind
/// this client does not know), `None` altogether if it has no revision.
/// Never panics: an odd event must not stop the watch.
fn decode(prefix: &str, ev: &etcd::Event) -> Option<(Revision, Option<WatchEvent>)> {
    let Some(kv) = ev.kv() else {
        tracing::warn!(prefix, "skipping a watch event without a key");
        return None;
    };
    let rev = rev_u64(kv.mod_revision());
    // The raw kind: `Event::event_type` panics on one it does not know.
    let event = match (ev.0.r#type, key_value(kv)) {
        (_, None) => None,
        (0, Some(kv)) => Some(WatchEvent::Put { kv }),
        (1, Some(kv)) => Some(WatchEvent::Delete {
            key: kv.key,
            mod_revision: rev,
        }),
        (kind, Some(kv)) => {
            tracing::warn!(
                prefix,
                key = kv.key,
                kind,
                "skipping a watch event of an unknown kind"
            );
            None
        }
    };
    Some((rev, event))
}

/// Passes a stream's events on until it breaks.
async fn deliver(
    net: &Net,
    prefix: &str,
    stream: &mut etcd::WatchStream,
    next: &mut Revision,
    tx: &mpsc::Sender<WatchEvent>,
) -> Ended {
    loop {
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                tracing::debug!(prefix, "etcd closed the watch stream; reconnecting");
                return Ended::Broken;
            }
            Err(e) => {
                // Not itself a sign that the store is away: with several
                // members, the one this stream ran over may have gone while
                // the others serve. Opening the watch again tells.
                let e = classify(&format!("watch {prefix:?}"), e, None);
                tracing::debug!(prefix, error = %chain(&e), "the watch stream broke; reconnecting");
                return Ended::Broken;
            }
        };
        if resp.compact_revision() > 0 {
            return resync(net, prefix, rev_u64(resp.compact_revision()), next, tx).await;
        }
        if resp.canceled() {
            tracing::warn!(
                prefix,
                reason = resp.cancel_reason(),
                "etcd canceled the watch; watching again"
            );
            return Ended::Broken;
        }
        // etcd never splits one revision's events across responses, so
        // everything below the floor was delivered on an earlier stream.
        let floor = *next;
        for ev in resp.events() {
            let Some((rev, event)) = decode(prefix, ev) else {
                continue;
            };
            if rev < floor {
                continue;
            }
            *next = (*next).max(rev + 1);
            let Some(event) = event else {
                continue;
            };
            if tx.send(event).is_err() {
                return Ended::Closed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd::proto::{PbEvent, PbKeyValue};

    fn event(kind: i32, key: &[u8], rev: i64) -> etcd::Event {
        etcd::Event(PbEvent {
            r#type: kind,
            kv: Some(PbKeyValue {
                key: key.to_vec(),
                value: b"v".to_vec(),
                mod_revision: rev,
                ..Default::default()
            }),
            prev_kv: None,
        })
    }

    #[test]
    fn odd_watch_events_are_skipped_not_fatal() {
        let put = decode("p/", &event(0, b"p/a", 7)).unwrap();
        assert_eq!(
            put,
            (
                7,
                Some(WatchEvent::Put {
                    kv: KeyValue {
                        key: "p/a".into(),
                        value: b"v".to_vec(),
                        mod_revision: 7
                    }
                })
            )
        );
        assert_eq!(
            decode("p/", &event(1, b"p/a", 8)).unwrap(),
            (
                8,
                Some(WatchEvent::Delete {
                    key: "p/a".into(),
                    mod_revision: 8
                })
            )
        );
        // An unknown kind, a key that is not UTF-8: skipped, the revision
        // still counts (the watch must not ask for it again).
        assert_eq!(decode("p/", &event(9, b"p/a", 9)).unwrap(), (9, None));
        assert_eq!(decode("p/", &event(0, b"p/\xff", 10)).unwrap(), (10, None));
        let keyless = etcd::Event(PbEvent {
            r#type: 0,
            kv: None,
            prev_kv: None,
        });
        assert_eq!(decode("p/", &keyless), None);
    }

    #[test]
    fn errors_say_whether_the_store_answered() {
        use tonic::{Code, Status};
        let grpc = |code| etcd::Error::GRpcStatus(Status::new(code, "x"));
        let lease = Some(LeaseId(5));
        assert!(matches!(
            classify("t", grpc(Code::NotFound), lease),
            KvError::LeaseNotFound {
                lease: LeaseId(5),
                ..
            }
        ));
        assert!(matches!(
            classify("t", grpc(Code::InvalidArgument), None),
            KvError::Rejected { .. }
        ));
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Unknown] {
            assert!(matches!(
                classify("t", grpc(code), lease),
                KvError::Unavailable { .. }
            ));
        }
        assert!(matches!(
            classify("t", etcd::Error::InvalidArgs("x".into()), None),
            KvError::Config { .. }
        ));
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut c = EtcdConfig::new(Vec::<String>::new());
        assert!(matches!(
            EtcdKv::connect(c.clone()),
            Err(KvError::Config { .. })
        ));
        c.endpoints = vec!["http://198.18.0.1:2379".into()];
        c.request_timeout = Duration::ZERO;
        assert!(matches!(EtcdKv::connect(c), Err(KvError::Config { .. })));
        let c = EtcdConfig::new(["not a url"]);
        assert!(matches!(EtcdKv::connect(c), Err(KvError::Config { .. })));
    }
}
