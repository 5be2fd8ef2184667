//! Tier 3: what a misbehaving client can do to a real pilusd's API, and
//! what it cannot (issue 9). Found as a new user on the thread-per-
//! connection server: 3,000 connections each sending half a request kept
//! 3,000 agent threads alive. Now:
//!
//! - 1,000 half-open requests hold no threads (the count stays under the
//!   runtime's workers + blocking cap + a few), `GET /v1/status` still
//!   answers, and the header-read timeout closes them;
//! - a body over the limit gets 413 and changes nothing;
//! - a malformed request line or header gets 400 with a JSON error;
//! - a client that goes away in the middle of a policy import leaves
//!   nothing half-applied.
//!
//! Needs root; fails without it.

mod common;

use common::Cluster;
use pilus_api_types::{PolicyFile, PolicyImport, Status};
use serde_json::Value;
use std::{
    io::{ErrorKind, Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

/// pilusd's runtime: 2 workers and at most 4 blocking threads, plus the
/// main thread; the rest is headroom for what the libraries may start.
const MAX_THREADS: usize = 16;

/// pilusd's header-read timeout (api::Limits::default()).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

const POLICY: &str = r#"{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy",
 "metadata":{"name":"web","namespace":"shop"},
 "spec":{"endpointSelector":{"matchLabels":{"app":"web"}},
  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}],
   "toPorts":[{"ports":[{"port":"80","protocol":"TCP"}]}]}]}}"#;

/// A field of `/proc/<pid>/status` (`Threads`, `VmRSS`), as a number.
fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The test holds over a thousand sockets: more than a default soft limit
/// of 1024 open files allows.
fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on one rlimit we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= 4096,
        "the test needs 4096 open files, the hard limit is {}",
        lim.rlim_cur
    );
}

struct Answer {
    status: u16,
    body: String,
}

/// Reads one answer (head, then the body its Content-Length announces).
fn read_answer(s: &mut UnixStream) -> Answer {
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // The answer may be followed by a reset of what we still sent.
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !buf.is_empty() => break,
            Err(e) => panic!("reading the answer: {e} (after {buf:?})"),
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if length.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    Answer {
        status,
        body: body.to_string(),
    }
}

/// Sends `raw`, half-closes, reads the answer.
fn send_raw(socket: &Path, raw: &[u8]) -> Answer {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(raw).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    read_answer(&mut s)
}

/// The `error` of a JSON error body; panics on any other body.
fn error_of(a: &Answer) -> String {
    let v: Value = serde_json::from_str(&a.body)
        .unwrap_or_else(|e| panic!("{} without a JSON body ({e}): {:?}", a.status, a.body));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no \"error\" in {:?}", a.body))
        .to_string()
}

/// What a refused request must leave as it was, as the API shows it.
fn state(c: &Cluster) -> String {
    let client = c.client();
    let mut s = String::new();
    for p in [
        "/v1/endpoints",
        "/v1/identities",
        "/v1/policies",
        "/v1/bpf/endpoints",
        "/v1/bpf/ipcache",
        "/v1/bpf/policy",
    ] {
        let r = client.request("GET", p, None).unwrap();
        assert_eq!(r.status, 200, "GET {p}");
        s.push_str(&String::from_utf8_lossy(&r.body));
        s.push('\n');
    }
    let status: Status = client.get_json("/v1/status").unwrap();
    s.push_str(&format!(
        "policies {} revision {} enforced {}",
        status.policies, status.revision, status.enforced_revision
    ));
    s
}

fn cluster(tag: &str) -> Cluster {
    let mut c = Cluster::new("abuse", tag, &[]);
    c.add_pod("shop", "web");
    c.add_pod("shop", "client");
    c
}

fn import_body(text: &str) -> Vec<u8> {
    serde_json::to_vec(&PolicyImport {
        files: vec![PolicyFile {
            name: "policy.json".into(),
            text: text.into(),
        }],
    })
    .unwrap()
}

fn post_head(target: &str, length: usize) -> Vec<u8> {
    format!(
        "POST {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn half_open_requests_hold_no_threads_and_the_header_timeout_closes_them() {
    raise_open_files();
    let c = Cluster::new("abuse", "a", &[]);
    let pid = c.agent.as_ref().unwrap().pid();
    let (threads_before, rss_before) = (proc_status(pid, "Threads"), proc_status(pid, "VmRSS"));

    let opened = Instant::now();
    let mut held: Vec<UnixStream> = (0..1000)
        .map(|i| {
            let mut s =
                UnixStream::connect(c.socket()).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            // A request line and one header, never the blank line.
            s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n")
                .unwrap();
            s
        })
        .collect();
    let opened = opened.elapsed();
    // Give the agent the time to accept and start reading all of them.
    std::thread::sleep(Duration::from_millis(500));

    let threads = proc_status(pid, "Threads");
    let t = Instant::now();
    let status: Status = c
        .client()
        .with_timeout(Duration::from_secs(10))
        .get_json("/v1/status")
        .expect("status while 1,000 requests are half-open");
    let latency = t.elapsed();
    let rss_held = proc_status(pid, "VmRSS");
    assert_eq!(status.node_name, "abuse");
    eprintln!(
        "1,000 half-open requests (opened in {opened:?}): threads {threads_before} -> {threads}, \
         RSS {rss_before} -> {rss_held} KiB, GET /v1/status in {latency:?}"
    );
    assert!(
        threads as usize <= MAX_THREADS,
        "pilusd has {threads} threads with 1,000 half-open requests"
    );
    assert!(
        latency < Duration::from_secs(3),
        "GET /v1/status took {latency:?}"
    );

    // Held, not refused: nothing has been answered or closed yet.
    let early = opened + Duration::from_millis(500) + latency;
    assert!(early < HEADER_TIMEOUT, "opening took too long to tell");
    for (i, s) in held.iter_mut().enumerate() {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("connection {i} before the header timeout: {other:?}"),
        }
        s.set_nonblocking(false).unwrap();
    }

    // After the header timeout the agent has closed every one: end of
    // stream, without an answer.
    let deadline = Instant::now() + HEADER_TIMEOUT + Duration::from_secs(10);
    for (i, s) in held.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => {}
            other => panic!(
                "connection {i} was not closed by the header timeout: {other:?} {:?}",
                String::from_utf8_lossy(&b)
            ),
        }
    }
    drop(held);
    let threads_after = proc_status(pid, "Threads");
    let rss_after = proc_status(pid, "VmRSS");
    eprintln!("after the timeout: threads {threads_after}, RSS {rss_after} KiB");
    assert!(threads_after as usize <= MAX_THREADS);
    let _: Status = c.client().get_json("/v1/status").unwrap();
}

#[test]
fn an_idle_connection_is_closed_by_the_same_timer() {
    let c = Cluster::new("abuse", "i", &[]);
    let t = Instant::now();
    let mut s = UnixStream::connect(c.socket()).unwrap();
    // One whole request, answered, then nothing: keep-alive, idle.
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut s);
    assert_eq!(a.status, 200, "{}", a.body);
    let mut b = [0u8; 16];
    s.set_read_timeout(Some(HEADER_TIMEOUT + Duration::from_secs(10)))
        .unwrap();
    assert_eq!(s.read(&mut b).unwrap(), 0, "closed without another answer");
    let took = t.elapsed();
    assert!(
        took >= HEADER_TIMEOUT - Duration::from_millis(500),
        "closed after {took:?}, before the idle timeout"
    );
    // A connection that never says anything goes the same way.
    let mut silent = UnixStream::connect(c.socket()).unwrap();
    silent
        .set_read_timeout(Some(HEADER_TIMEOUT + Duration::from_secs(10)))
        .unwrap();
    assert_eq!(silent.read(&mut b).unwrap(), 0);
}

#[test]
fn a_body_over_the_limit_gets_413_and_changes_nothing() {
    let c = cluster("b");
    let before = state(&c);
    // A valid import, padded with whitespace past the 8 MiB limit: under
    // the limit it would be applied.
    let mut body = import_body(POLICY);
    body.splice(1..1, std::iter::repeat_n(b' ', 9 << 20));
    assert!(body.len() > 8 << 20);

    // Announced: refused from the Content-Length, before the body is read.
    let mut s = UnixStream::connect(c.socket()).unwrap();
    s.write_all(&post_head("/v1/policies", body.len())).unwrap();
    // The agent answers and closes while this is still being sent.
    let sender = {
        let mut s = s.try_clone().unwrap();
        let body = body.clone();
        std::thread::spawn(move || {
            let _ = s.write_all(&body);
        })
    };
    let a = read_answer(&mut s);
    sender.join().unwrap();
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(error_of(&a).contains("limit"), "{}", a.body);

    // Chunked, with no length announced: refused once the limit is passed.
    let mut s = UnixStream::connect(c.socket()).unwrap();
    s.write_all(
        b"POST /v1/policies HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let sender = {
        let mut s = s.try_clone().unwrap();
        let body = body.clone();
        std::thread::spawn(move || {
            for piece in body.chunks(64 << 10) {
                let chunk = [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
                if s.write_all(&chunk).is_err() {
                    return;
                }
            }
            let _ = s.write_all(b"0\r\n\r\n");
        })
    };
    let a = read_answer(&mut s);
    sender.join().unwrap();
    assert_eq!(a.status, 413, "{}", a.body);
    error_of(&a);

    // Through the client too: the kind the CLI maps to its exit code.
    match c.client().request("POST", "/v1/policies", Some(&body)) {
        Ok(r) => assert_eq!(r.status, 413, "{}", r.error_message()),
        // The agent may close before the client has sent it all.
        Err(e @ pilus_client::Error::Transport { .. }) => {
            eprintln!("the client saw the connection closed mid-body: {e}")
        }
        Err(e) => panic!("expected a 413, got {e:?}"),
    }
    assert_eq!(state(&c), before, "a refused body changed the state");

    // The same import under the limit is applied: the refusal above was
    // the limit's doing.
    c.import(POLICY).expect("the import under the limit");
    assert_ne!(state(&c), before);
}

#[test]
fn a_malformed_request_line_or_header_gets_400_in_json() {
    let c = Cluster::new("abuse", "m", &[]);
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /v1/status HTTP/1.1 extra\r\nHost: localhost\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\n folded: x\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nHo\x01st: x\r\n\r\n",
        b"POST /v1/policies HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    ] {
        let a = send_raw(&c.socket(), raw);
        assert_eq!(
            a.status,
            400,
            "{:?}: {}",
            String::from_utf8_lossy(raw),
            a.body
        );
        let msg = error_of(&a);
        assert!(msg.len() > 10, "{msg:?}");
    }
    // A query that is not percent-encoded UTF-8, and a path that is not
    // the API's: the routes' own refusals, in the same shape.
    let a = send_raw(
        &c.socket(),
        b"GET /v1/policy/revision?wait=%zz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(error_of(&a).contains("percent-encoded"), "{}", a.body);
    let a = send_raw(
        &c.socket(),
        b"GET /v2/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(error_of(&a).contains("/v2/x"), "{}", a.body);
    let _: Status = c.client().get_json("/v1/status").unwrap();
}

#[test]
fn a_client_gone_in_the_middle_of_an_import_leaves_nothing_half_applied() {
    let c = cluster("d");
    let before = state(&c);
    let body = import_body(POLICY);
    let half = body.len() / 2;

    // Half the body, then the connection is closed.
    let mut s = UnixStream::connect(c.socket()).unwrap();
    s.write_all(&post_head("/v1/policies", body.len())).unwrap();
    s.write_all(&body[..half]).unwrap();
    drop(s);

    // Half the body, then the write side only: the agent says why.
    let mut s = UnixStream::connect(c.socket()).unwrap();
    s.write_all(&post_head("/v1/policies", body.len())).unwrap();
    s.write_all(&body[..half]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let a = read_answer(&mut s);
    assert_eq!(a.status, 400, "{}", a.body);
    error_of(&a);

    // A stalled upload: half the body, then nothing until the request
    // deadline would pass; closed here after a while instead.
    let mut s = UnixStream::connect(c.socket()).unwrap();
    s.write_all(&post_head("/v1/policies", body.len())).unwrap();
    s.write_all(&body[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);

    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(state(&c), before, "a cut import changed the state");

    // The whole body is applied: the cut ones were valid imports.
    let mut s = UnixStream::connect(c.socket()).unwrap();
    s.write_all(&post_head("/v1/policies", body.len())).unwrap();
    s.write_all(&body).unwrap();
    let a = read_answer(&mut s);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_ne!(state(&c), before);
}

#[test]
fn sigterm_answers_the_long_polls_and_removes_the_socket() {
    let mut c = Cluster::new("abuse", "s", &[]);
    let polls: Vec<_> = [
        "/v1/policy/revision?wait=999999&timeout_ms=60000",
        "/v1/monitor?since=999999&wait_ms=60000",
    ]
    .into_iter()
    .map(|target| {
        let mut s = UnixStream::connect(c.socket()).unwrap();
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .unwrap();
        std::thread::spawn(move || read_answer(&mut s))
    })
    .collect();
    // Both polls are waiting in the agent by now.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    c.stop_agent();
    let stopped = t.elapsed();
    let answers: Vec<Answer> = polls.into_iter().map(|p| p.join().unwrap()).collect();
    assert!(
        stopped < Duration::from_secs(3),
        "pilusd took {stopped:?} to stop with two long polls open"
    );
    // The revision wait says the agent is stopping; the monitor answers
    // with what it has (nothing).
    assert_eq!(answers[0].status, 503, "{}", answers[0].body);
    assert!(error_of(&answers[0]).contains("stopping"));
    assert_eq!(answers[1].status, 200, "{}", answers[1].body);
    assert!(!c.socket().exists(), "the socket is left behind");
}
