//! The client against canned servers on a unix socket in a scratch
//! directory (no root, no agent): what each answer turns into.

use pilus_client::{blocking::Client, encode_query, Error};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("pilus-client-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn socket(&self) -> PathBuf {
        self.0.join("agent.sock")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves `answers.len()` connections, one canned answer each, and returns
/// the requests it read (up to the end of the head plus `Content-Length`).
fn canned(socket: &Path, answers: Vec<&'static str>) -> thread::JoinHandle<Vec<String>> {
    let listener = UnixListener::bind(socket).unwrap();
    thread::spawn(move || {
        let mut seen = Vec::new();
        for answer in answers {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = s.read(&mut chunk).unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len || n == 0 {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            seen.push(String::from_utf8_lossy(&buf).into_owned());
            s.write_all(answer.as_bytes()).unwrap();
        }
        seen
    })
}

#[test]
fn answers_become_values_and_error_kinds() {
    let dir = Dir::new("kinds");
    let server = canned(
        &dir.socket(),
        vec![
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"a\":[1,2]}",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 27\r\n\r\n{\"error\":\"no such policy\"}\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nboom",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n[1,2,",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
        ],
    );
    let c = Client::new(dir.socket()).with_timeout(Duration::from_secs(10));
    let v: Value = c.post_json("/v1/x?y=1", &json!({"k": "v"})).unwrap();
    assert_eq!(v, json!({"a": [1, 2]}));
    match c.get_json::<Value>("/v1/policies/p") {
        Err(Error::Status { status, message }) => {
            assert_eq!((status, message.as_str()), (404, "no such policy"))
        }
        other => panic!("expected a 404, got {other:?}"),
    }
    c.delete_json::<()>("/v1/items/7").unwrap();
    match c.get_json::<Value>("/v1/status") {
        Err(Error::Status { status, message }) => {
            assert_eq!((status, message.as_str()), (500, "boom"))
        }
        other => panic!("expected a 500, got {other:?}"),
    }
    assert!(matches!(
        c.get_json::<Value>("/v1/status"),
        Err(Error::Decode { .. })
    ));
    // An empty error body says the reason phrase rather than nothing.
    match c.get_json::<Value>("/v1/status") {
        Err(Error::Status { status, message }) => {
            assert_eq!((status, message.as_str()), (400, "Bad Request"))
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    let seen = server.join().unwrap();
    assert!(
        seen[0].starts_with("POST /v1/x?y=1 HTTP/1.1\r\n"),
        "{}",
        seen[0]
    );
    assert!(seen[0].contains("content-type: application/json\r\n"));
    assert!(seen[0].ends_with("\r\n\r\n{\"k\":\"v\"}"), "{}", seen[0]);
    assert!(seen[2].starts_with("DELETE /v1/items/7 HTTP/1.1\r\n"));
}

#[test]
fn a_silent_agent_is_a_timeout_for_the_whole_request() {
    let dir = Dir::new("timeout");
    let listener = UnixListener::bind(dir.socket()).unwrap();
    // Accepts and reads, never answers.
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut sink = [0u8; 1024];
        while s.read(&mut sink).is_ok_and(|n| n > 0) {}
    });
    let t = Instant::now();
    let err = Client::new(dir.socket())
        .with_timeout(Duration::from_millis(300))
        .get_json::<Value>("/v1/status")
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    server.join().unwrap();
}

#[test]
fn connect_failure_names_the_socket() {
    let dir = Dir::new("connect");
    let err = Client::new(dir.socket())
        .get_json::<Value>("/v1/status")
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&dir.socket().display().to_string()),
        "{message}"
    );
    assert!(message.contains("agent running"), "{message}");
}

#[test]
fn targets_that_would_break_the_request_line_are_refused() {
    let c = Client::new("/nonexistent.sock");
    for target in ["v1/x", "/v1/x HTTP/1.1\r\nX: y", "/a b", "/a\0"] {
        assert!(
            matches!(
                c.request("GET", target, None),
                Err(Error::InvalidTarget { .. })
            ),
            "{target:?}"
        );
    }
    assert!(matches!(
        c.request("GE T", "/", None),
        Err(Error::InvalidMethod { .. })
    ));
    // An encoded query is a valid target.
    let q = encode_query(&[("name", "a b&c=d+é\r\n")]);
    assert!(matches!(
        c.request("GET", &format!("/v1/echo?{q}"), None),
        Err(Error::Connect { .. })
    ));
}
