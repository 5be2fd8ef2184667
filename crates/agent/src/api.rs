//! The REST routes: each request is parsed, handed to one method of the
//! [`ControlPlane`] (which locks what it needs), and answered with JSON
//! (errors as `{"error": ...}` with a status that says whose fault it was).

use pilus_api::{types as api, Request, Response};
use pilus_controlplane::{ControlPlane, Error};
use std::time::{Duration, Instant};

fn respond<T: serde::Serialize>(status: u16, r: Result<T, Error>) -> Response {
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

fn bad(what: &'static str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        what,
        reason: reason.into(),
    }
}

fn body<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, Error> {
    req.json().map_err(|e| bad("request body", e.to_string()))
}

/// The longest a revision long poll is held, whatever the client asks.
const MAX_WAIT_MS: u64 = 60_000;

fn not_found(path: &str) -> Response {
    Response::error(404, &format!("no such API path {path:?}"))
}

/// Routes one request.
pub fn handle(cp: &ControlPlane, req: Request) -> Response {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let m = req.method.as_str();
    match (m, segs.as_slice()) {
        ("GET", ["v1", "status"]) => Response::json(200, &cp.status()),
        ("GET", ["v1", "endpoints"]) => Response::json(200, &cp.endpoints_view()),
        ("PUT" | "POST", ["v1", "endpoints"]) => {
            let r = body::<api::EndpointCreate>(&req).and_then(|b| cp.create_endpoint(&b));
            let status = match &r {
                Ok(c) if !c.created => 200,
                _ => 201,
            };
            respond(status, r)
        }
        ("GET", ["v1", "endpoints", key]) => {
            respond(200, cp.endpoint_view(key, req.query_get("ifname")))
        }
        ("GET", ["v1", "endpoints", ns, pod]) => {
            respond(200, cp.endpoint_view(&format!("{ns}/{pod}"), None))
        }
        // `?ifname=` makes the key a container id and picks one of its
        // attachments (CNI DEL is per container and interface); deleting
        // what is not there succeeds.
        ("DELETE", ["v1", "endpoints", key]) => {
            respond(200, cp.delete_endpoint_by(key, req.query_get("ifname")))
        }
        ("POST", ["v1", "cni", "gc"]) => {
            respond(200, body::<api::CniGc>(&req).and_then(|b| cp.cni_gc(&b)))
        }
        ("GET", ["v1", "identities"]) => Response::json(200, &cp.identities_view()),
        ("GET", ["v1", "identities", id]) => respond(
            200,
            id.parse::<u32>()
                .map_err(|_| bad("identity", format!("{id:?} is not a number")))
                .and_then(|id| cp.identity_view(id)),
        ),
        ("GET", ["v1", "policies"]) => respond(200, cp.policies_view(None)),
        ("GET", ["v1", "policies", name @ ..]) => {
            respond(200, cp.policies_view(Some(&name.join("/"))))
        }
        ("POST" | "PUT", ["v1", "policies"]) => respond(
            200,
            body::<api::PolicyImport>(&req).and_then(|b| cp.import(&b.files)),
        ),
        ("DELETE", ["v1", "policies"]) => {
            if req.query_get("all") != Some("true") {
                return Response::error(
                    400,
                    "DELETE /v1/policies needs ?all=true (or a policy name in the path)",
                );
            }
            respond(200, cp.delete_policies(None))
        }
        ("DELETE", ["v1", "policies", name @ ..]) => {
            respond(200, cp.delete_policies(Some(&name.join("/"))))
        }
        ("GET", ["v1", "policy", "revision"]) => {
            // A parameter that does not parse is refused, not defaulted: a
            // caller that waits for revision "x" believes it waited.
            let number = |name: &'static str, default: u64| -> Result<u64, Error> {
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
            let deadline = Instant::now() + Duration::from_millis(timeout_ms.min(MAX_WAIT_MS));
            loop {
                let s = cp.status();
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
            body::<api::TraceRequest>(&req).and_then(|b| cp.trace(&b)),
        ),
        ("GET", ["v1", "namespaces"]) => Response::json(200, &cp.namespaces_view()),
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
                cp.set_namespace_labels(ns, &b.labels)
            }),
        ),
        ("GET", ["v1", "ipcache"]) => Response::json(200, &cp.ipcache_view()),
        ("GET", ["v1", "bpf", "policy"]) => respond(200, cp.bpf_policy(None)),
        ("GET", ["v1", "bpf", "policy", key]) => respond(200, cp.bpf_policy(Some(key))),
        ("GET", ["v1", "bpf", "ipcache"]) => respond(200, cp.bpf_ipcache()),
        ("GET", ["v1", "bpf", "endpoints"]) => respond(200, cp.bpf_endpoints()),
        ("GET", ["v1", "bpf", "ct"]) => respond(200, cp.bpf_ct()),
        ("DELETE", ["v1", "bpf", "ct"]) => respond(
            200,
            cp.bpf_ct_flush().map(|n| api::Deleted {
                deleted: n,
                revision: 0,
            }),
        ),
        _ => not_found(&req.path),
    }
}
