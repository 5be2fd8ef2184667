//! Tier 1: the API server (axum on hyper, on a unix socket in a scratch
//! directory) in front of an agent with in-memory maps and plumbing, no
//! root: routes and their error shapes, the request deadline, the long
//! polls' slots, the monitor route, and binding the socket.

use pilus_abi::{
    consts::{DROP_POLICY, EVENT_DROP, EVENT_TRACE, OBS_FROM_ENDPOINT, OBS_TO_ENDPOINT},
    Event,
};
use pilus_agent::{
    api::{self, BindError, Limits, Shared},
    monitor::Monitor,
};
use pilus_api_types::{
    EndpointCreate, EndpointCreated, MonitorBatch, MonitorKind, Revision, Status,
};
use pilus_client::{blocking::Client, Error};
use pilus_controlplane::{
    fake::{FakeDatapath, FakePlumbing},
    ControlPlane, Settings,
};
use serde_json::Value;
use std::{
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p =
            std::env::temp_dir().join(format!("pilus-api-server-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// pilusd's server around a fake agent, on its own runtime; stopped on drop.
struct Server {
    shared: Shared,
    events: Arc<Monitor>,
    socket: PathBuf,
    stop: watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: Dir,
}

impl Server {
    fn start(name: &str, limits: Limits) -> Server {
        let dir = Dir::new(name);
        let agent = ControlPlane::start(
            Settings {
                node_name: "n1".into(),
                pod_cidr: "198.18.0.0/24".parse().unwrap(),
                router: Ipv4Addr::new(198, 18, 0, 1),
                pin_dir: "/nonexistent".into(),
                socket: dir.0.join("run/pilus.sock"),
                state_dir: "/nonexistent".into(),
                pod_mtu: None,
            },
            Arc::new(FakeDatapath::default()),
            Arc::new(FakePlumbing::default()),
            Arc::new(pilus_kvstore::MemKv::default()),
        )
        .expect("control plane");
        let agent = Arc::new(agent);
        let events = Arc::new(Monitor::new(16));
        let socket = dir.0.join("run/pilus.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (stop, stopping) = watch::channel(false);
        let listener = api::bind(&socket).expect("bind");
        listener.set_nonblocking(true).unwrap();
        let shared = Shared::new(agent, events.clone(), stopping.clone());
        let server_shared = shared.clone();
        runtime.spawn(async move {
            let shared = server_shared;
            let listener = tokio::net::UnixListener::from_std(listener).unwrap();
            let app = api::router(shared, &limits);
            api::serve(listener, app, &limits, stopping).await
        });
        Server {
            shared,
            events,
            socket,
            stop,
            runtime: Some(runtime),
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.socket).with_timeout(Duration::from_secs(10))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn endpoint(app: &str) -> EndpointCreate {
    EndpointCreate {
        container_id: app.into(),
        netns: format!("/run/netns/{app}"),
        pod_name: Some(app.into()),
        labels: vec![format!("app={app}")],
        ..Default::default()
    }
}

#[test]
fn routes_answer_json_and_refuse_in_json() {
    let s = Server::start("routes", Limits::default());
    let c = s.client();
    let st: Status = c.get_json("/v1/status").unwrap();
    assert_eq!(st.node_name, "n1");
    // As before the move to axum: trailing and doubled slashes are the
    // same path.
    let _: Status = c.get_json("//v1/status/").unwrap();

    let r = c
        .request(
            "PUT",
            "/v1/endpoints",
            Some(&serde_json::to_vec(&endpoint("web")).unwrap()),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.error_message());
    let again: EndpointCreated = c.post_json("/v1/endpoints", &endpoint("web")).unwrap();
    assert!(!again.created, "a retried ADD finds it");
    let got: Value = c
        .get_json(&format!("/v1/endpoints/{}", again.endpoint.ipv4))
        .unwrap();
    assert_eq!(got["container_id"], "web");
    // `namespace/pod` as two segments, or as one with the '/' encoded: a
    // key is decoded after the path is split into segments.
    for target in ["/v1/endpoints/default/web", "/v1/endpoints/default%2Fweb"] {
        let got: Value = c.get_json(target).unwrap();
        assert_eq!(got["container_id"], "web", "{target}");
    }

    for (method, target, body, status, needle) in [
        ("GET", "/v1/nope", None, 404, "no such API path"),
        // A known path with another method: 404, as before.
        ("PATCH", "/v1/status", None, 404, "no such API path"),
        ("GET", "/v1/endpoints/nobody", None, 404, "not found"),
        ("GET", "/v1/identities/x", None, 400, "not a number"),
        (
            "POST",
            "/v1/policies",
            Some(&b"{not json"[..]),
            400,
            "invalid JSON",
        ),
        ("DELETE", "/v1/policies", None, 400, "all=true"),
        ("GET", "/v1/policy/revision?wait=x", None, 400, "wait"),
        (
            "GET",
            "/v1/policy/revision?timeout_ms=-5",
            None,
            400,
            "timeout_ms",
        ),
        ("POST", "/v1/monitor", None, 405, "only GET"),
        ("GET", "/v1/monitor?type=drops", None, 400, "type"),
        ("GET", "/v1/monitor?since=-1", None, 400, "since"),
        ("GET", "/v1/monitor?wait_ms=soon", None, 400, "wait_ms"),
        ("GET", "/v1/monitor?last=1.5", None, 400, "last"),
    ] {
        let r = c.request(method, target, body).unwrap();
        assert_eq!(r.status, status, "{method} {target}: {}", r.error_message());
        let v: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{method} {target}: not JSON ({e})"));
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{method} {target}: {msg}");
    }
    // The CLI's exit codes map from these kinds.
    assert!(matches!(
        c.get_json::<Value>("/v1/endpoints/nobody"),
        Err(Error::Status { status: 404, .. })
    ));
}

#[test]
fn a_request_past_its_deadline_gets_503_and_is_not_run_later() {
    let s = Server::start(
        "deadline",
        Limits {
            request_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let c = s.client();
    // Another change holds the agent: the request waits for it, in vain.
    let held = s.shared.hold_writes();
    let t = Instant::now();
    let r = c
        .request(
            "PUT",
            "/v1/endpoints",
            Some(&serde_json::to_vec(&endpoint("late")).unwrap()),
        )
        .unwrap();
    assert_eq!(r.status, 503, "{}", r.error_message());
    assert!(r.error_message().contains("did not complete"));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let st: Status = c.get_json("/v1/status").unwrap();
    assert_eq!(st.endpoints, 0, "the refused request ran after all");
}

#[test]
fn long_polls_wait_on_the_revision_and_take_turns_for_their_slots() {
    let s = Server::start(
        "longpoll",
        Limits {
            max_long_polls: 1,
            ..Limits::default()
        },
    );
    let c = s.client();
    let now: Revision = c.get_json("/v1/policy/revision").unwrap();
    // Woken by a change, not by a poll loop: creating an endpoint enforces
    // a new revision.
    let waiter = {
        let c = c.clone();
        let want = now.enforced + 1;
        std::thread::spawn(move || {
            let t = Instant::now();
            let r: Revision = c
                .get_json(&format!("/v1/policy/revision?wait={want}&timeout_ms=10000"))
                .unwrap();
            (r, t.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let created: EndpointCreated = c.post_json("/v1/endpoints", &endpoint("web")).unwrap();
    let (r, took) = waiter.join().unwrap();
    assert!(r.enforced >= created.revision, "{r:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A wait that times out answers 408 with the revision.
    let r = c
        .request("GET", "/v1/policy/revision?wait=999&timeout_ms=300", None)
        .unwrap();
    assert_eq!(r.status, 408);
    let body: Revision = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body.enforced, created.revision);

    // One slot for long polls: two 300 ms waits take turns. (A client
    // each, so no runtime is shared between them.)
    let t = Instant::now();
    let both: Vec<_> = (0..2)
        .map(|_| {
            let c = s.client();
            std::thread::spawn(move || {
                c.request("GET", "/v1/policy/revision?wait=999&timeout_ms=300", None)
                    .unwrap()
                    .status
            })
        })
        .collect();
    for h in both {
        assert_eq!(h.join().unwrap(), 408);
    }
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "two long polls ran at once with one slot: {:?}",
        t.elapsed()
    );
    // Ordinary requests have slots of their own.
    let _: Status = c.get_json("/v1/status").unwrap();
}

fn event(kind: u8, ep_id: u16) -> Event {
    Event {
        kind,
        subtype: if kind == EVENT_DROP { DROP_POLICY } else { 0 },
        obs_point: if kind == EVENT_DROP {
            OBS_FROM_ENDPOINT
        } else {
            OBS_TO_ENDPOINT
        },
        direction: 0,
        ep_id,
        cap_len: 0,
        orig_len: 60,
        ifindex: 5,
        src_identity: 256,
        dst_identity: 257,
        ktime_ns: 0,
        data: [0; 128],
        ..Default::default()
    }
}

#[test]
fn the_monitor_route_decodes_events_and_names_both_endpoints() {
    use pilus_packet::{tcp_flags::SYN, PacketBuilder};
    let s = Server::start("monitor", Limits::default());
    let c = s.client();
    let web: EndpointCreated = c.post_json("/v1/endpoints", &endpoint("web")).unwrap();
    let client: EndpointCreated = c.post_json("/v1/endpoints", &endpoint("client")).unwrap();
    let (web, client) = (web.endpoint, client.endpoint);
    let pkt = PacketBuilder::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(client.ipv4, web.ipv4)
        .tcp(40000, 80, SYN)
        .build();
    let mut drop = event(EVENT_DROP, client.id);
    drop.data[..pkt.len()].copy_from_slice(&pkt);
    drop.cap_len = pkt.len() as u16;

    // A poll that waits is woken by the push.
    let poll = {
        let c = c.clone();
        std::thread::spawn(move || {
            c.get_json::<MonitorBatch>("/v1/monitor?since=0&type=drop&wait_ms=5000")
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    s.events.push(&[event(EVENT_TRACE, web.id), drop], 0);
    let b = poll.join().unwrap();
    assert_eq!((b.next, b.lost, b.events.len()), (2, 0, 1));
    let e = &b.events[0];
    assert_eq!((e.seq, e.kind), (2, MonitorKind::Drop));
    assert_eq!(e.reason.as_ref().unwrap().name, "DROP_POLICY");
    assert_eq!(
        (e.src_endpoint, e.dst_endpoint),
        (Some(client.id), Some(web.id))
    );
    assert_eq!(
        (e.packet.src_ip, e.packet.dst_ip, e.packet.dst_port),
        (Some(client.ipv4), Some(web.ipv4), Some(80))
    );
    // Nothing newer: an empty answer after the wait.
    let b: MonitorBatch = c.get_json("/v1/monitor?since=2&wait_ms=20").unwrap();
    assert_eq!((b.next, b.events.len()), (2, 0));
}

#[test]
fn bind_refuses_a_live_socket_and_replaces_a_stale_one() {
    let dir = Dir::new("bind");
    let socket = dir.0.join("a/b/agent.sock");
    let live = api::bind(&socket).unwrap();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let parent_mode = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    // 0755 minus whatever the umask takes away.
    assert_eq!(parent_mode & 0o7022, 0, "parent mode {parent_mode:o}");

    let err = api::bind(&socket).unwrap_err();
    assert!(matches!(err, BindError::InUse { .. }), "{err:?}");
    assert!(err.to_string().contains("agent.sock"), "{err}");

    // Dropping the listener leaves the file behind, like a crash would.
    drop(live);
    assert!(socket.exists());
    let _replaced = api::bind(&socket).unwrap();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Anything that is not a socket is left alone.
    let file = dir.0.join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    assert!(matches!(
        api::bind(&file).unwrap_err(),
        BindError::NotASocket { .. }
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}
