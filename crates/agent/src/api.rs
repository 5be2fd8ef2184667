//! The REST routes: each request is parsed, handed to the [`Agent`] under
//! its lock, and answered with JSON (errors as `{"error": ...}` with a
//! status that says whose fault it was).

use crate::{agent::Agent, error::AgentError};
use pilus_api::{types as api, Request, Response};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

fn respond<T: serde::Serialize>(status: u16, r: Result<T, AgentError>) -> Response {
    match r {
        Ok(v) => Response::json(status, &v),
        Err(e) => {
            if e.status() >= 500 {
                tracing::error!(error = %e.message(), "request failed");
            }
            Response::error(e.status(), &e.message())
        }
    }
}

fn bad(what: &'static str, reason: impl Into<String>) -> AgentError {
    AgentError::Invalid {
        what,
        reason: reason.into(),
    }
}

fn body<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, AgentError> {
    req.json().map_err(|e| bad("request body", e.to_string()))
}

/// The longest a revision long poll is held, whatever the client asks.
const MAX_WAIT_MS: u64 = 60_000;

fn not_found(path: &str) -> Response {
    Response::error(404, &format!("no such API path {path:?}"))
}

/// Routes one request.
pub fn handle(agent: &Arc<Mutex<Agent>>, req: Request) -> Response {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let lock = || agent.lock().unwrap_or_else(|p| p.into_inner());
    let m = req.method.as_str();
    match (m, segs.as_slice()) {
        ("GET", ["v1", "status"]) => Response::json(200, &lock().status()),
        ("GET", ["v1", "endpoints"]) => Response::json(200, &lock().endpoints_view()),
        ("PUT" | "POST", ["v1", "endpoints"]) => {
            let r = body::<api::EndpointCreate>(&req).and_then(|b| lock().create_endpoint(&b));
            let status = match &r {
                Ok(c) if !c.created => 200,
                _ => 201,
            };
            respond(status, r)
        }
        ("GET", ["v1", "endpoints", key]) => {
            let a = lock();
            let found = match req.query_get("ifname") {
                Some(ifname) => a.find_attachment(key, ifname),
                None => a.find_endpoint(key),
            };
            respond(
                200,
                found.map(|e| a.view(e)).ok_or(AgentError::NotFound {
                    what: "endpoint",
                    name: key.to_string(),
                }),
            )
        }
        ("GET", ["v1", "endpoints", ns, pod]) => {
            let a = lock();
            let key = format!("{ns}/{pod}");
            respond(
                200,
                a.find_endpoint(&key)
                    .map(|e| a.view(e))
                    .ok_or(AgentError::NotFound {
                        what: "endpoint",
                        name: key.clone(),
                    }),
            )
        }
        ("DELETE", ["v1", "endpoints", key]) => {
            let mut a = lock();
            // `?ifname=` makes the key a container id and picks one of its
            // attachments (CNI DEL is per container and interface).
            let id = match req.query_get("ifname") {
                Some(ifname) => a.find_attachment(key, ifname).map(|e| e.id),
                None => a.find_endpoint(key).map(|e| e.id),
            };
            respond(
                200,
                match id {
                    Some(id) => a.delete_endpoint(id),
                    // Deleting what is not there succeeds (CNI DEL).
                    None => Ok(api::Deleted {
                        deleted: 0,
                        revision: a.status().enforced_revision,
                    }),
                },
            )
        }
        ("POST", ["v1", "cni", "gc"]) => respond(
            200,
            body::<api::CniGc>(&req).and_then(|b| lock().cni_gc(&b)),
        ),
        ("GET", ["v1", "identities"]) => Response::json(200, &lock().identities_view()),
        ("GET", ["v1", "identities", id]) => respond(
            200,
            id.parse::<u32>()
                .map_err(|_| bad("identity", format!("{id:?} is not a number")))
                .and_then(|id| lock().identity_view(id)),
        ),
        ("GET", ["v1", "policies"]) => respond(200, lock().policies_view(None)),
        ("GET", ["v1", "policies", name @ ..]) => {
            respond(200, lock().policies_view(Some(&name.join("/"))))
        }
        ("POST" | "PUT", ["v1", "policies"]) => respond(
            200,
            body::<api::PolicyImport>(&req).and_then(|b| lock().import(&b.files)),
        ),
        ("DELETE", ["v1", "policies"]) => {
            if req.query_get("all") != Some("true") {
                return Response::error(
                    400,
                    "DELETE /v1/policies needs ?all=true (or a policy name in the path)",
                );
            }
            respond(200, lock().delete_policies(None))
        }
        ("DELETE", ["v1", "policies", name @ ..]) => {
            respond(200, lock().delete_policies(Some(&name.join("/"))))
        }
        ("GET", ["v1", "policy", "revision"]) => {
            // A parameter that does not parse is refused, not defaulted: a
            // caller that waits for revision "x" believes it waited.
            let number = |name: &'static str, default: u64| -> Result<u64, AgentError> {
                match req.query_get(name) {
                    None => Ok(default),
                    Some(v) => v
                        .parse()
                        .map_err(|_| bad(name, format!("{v:?} is not a whole number"))),
                }
            };
            let (wait, timeout_ms) = match (number("wait", 0), number("timeout_ms", 10_000)) {
                (Ok(w), Ok(t)) => (w, t),
                (Err(e), _) | (_, Err(e)) => return respond::<()>(400, Err(e)),
            };
            let timeout = Duration::from_millis(timeout_ms.min(MAX_WAIT_MS));
            let deadline = Instant::now() + timeout;
            loop {
                let s = lock().status();
                if s.enforced_revision >= wait || Instant::now() >= deadline {
                    let code = if s.enforced_revision >= wait {
                        200
                    } else {
                        408
                    };
                    return Response::json(
                        code,
                        &api::Revision {
                            revision: s.revision,
                            enforced: s.enforced_revision,
                        },
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        ("POST", ["v1", "policy", "trace"]) => respond(
            200,
            body::<api::TraceRequest>(&req).and_then(|b| lock().trace(&b)),
        ),
        ("GET", ["v1", "namespaces"]) => {
            let a = lock();
            let v: Vec<api::NamespaceLabels> = a
                .engine
                .namespaces()
                .map(|(ns, l)| api::NamespaceLabels {
                    namespace: ns.clone(),
                    labels: l.iter().map(|x| format!("{}={}", x.key, x.value)).collect(),
                    revision: 0,
                })
                .collect();
            Response::json(200, &v)
        }
        ("PUT" | "POST", ["v1", "namespaces", ns, "labels"]) => respond(
            200,
            body::<api::NamespaceLabels>(&req).and_then(|b| {
                // Two names for one namespace: which one was meant is a
                // guess, and a wrong guess relabels another namespace's pods.
                if !b.namespace.is_empty() && b.namespace != *ns {
                    return Err(bad(
                        "namespace",
                        format!("the body names {:?} but the path {ns:?}", b.namespace),
                    ));
                }
                lock().set_namespace_labels(ns, &b.labels)
            }),
        ),
        ("GET", ["v1", "bpf", "policy"]) => respond(200, lock().bpf_policy(None)),
        ("GET", ["v1", "bpf", "policy", key]) => {
            let a = lock();
            let id = a.find_endpoint(key).map(|e| e.id);
            respond(
                200,
                id.ok_or(AgentError::NotFound {
                    what: "endpoint",
                    name: key.to_string(),
                })
                .and_then(|id| a.bpf_policy(Some(id))),
            )
        }
        ("GET", ["v1", "bpf", "ipcache"]) => respond(200, lock().bpf_ipcache()),
        ("GET", ["v1", "bpf", "endpoints"]) => respond(200, lock().bpf_endpoints()),
        ("GET", ["v1", "bpf", "ct"]) => respond(200, lock().bpf_ct()),
        ("DELETE", ["v1", "bpf", "ct"]) => respond(
            200,
            lock().bpf_ct_flush().map(|n| api::Deleted {
                deleted: n,
                revision: 0,
            }),
        ),
        _ => not_found(&req.path),
    }
}
