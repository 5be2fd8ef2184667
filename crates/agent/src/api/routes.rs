//! The agent's routes. Each one is thin: parse the request, make one call
//! on the [`ControlPlane`](pilus_controlplane::ControlPlane) (on the
//! blocking pool, through [`Shared`]), answer with JSON. Errors carry the
//! status that says whose fault it was (`pilus_controlplane::Error::status`).
//!
//! Path parameters are percent-decoded by axum after the path is split into
//! segments, so an encoded `/` never changes which route matches.

use super::{
    reply::{json, ok, with_status, ApiError, JsonBody, Params},
    Shared,
};
use crate::prefilter::{PrefilterApi, RequestError as PrefilterRequestError};
use crate::trace::TraceError;
use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Router,
};
use pilus_abi::Aggregation;
use pilus_api_types::{self as api, paths};
use pilus_controlplane::Error;
use pilus_datapath::MonitorSettings;

pub fn router() -> Router<Shared> {
    Router::new()
        .route(paths::STATUS, get(status))
        .route(
            paths::ENDPOINTS,
            get(endpoints).put(create_endpoint).post(create_endpoint),
        )
        .route(
            &format!("{}/{{key}}", paths::ENDPOINTS),
            get(endpoint).delete(delete_endpoint),
        )
        .route(
            &format!("{}/{{namespace}}/{{pod}}", paths::ENDPOINTS),
            get(endpoint_of_pod),
        )
        .route(
            &format!("{}/labels", paths::ENDPOINTS),
            post(endpoint_labels_batch),
        )
        .route(
            &format!("{}/{{key}}/labels", paths::ENDPOINTS),
            put(endpoint_labels).post(endpoint_labels),
        )
        .route(
            &format!("{}/{{namespace}}/{{pod}}/labels", paths::ENDPOINTS),
            put(pod_labels).post(pod_labels),
        )
        .route(paths::CNI_GC, post(cni_gc))
        .route(paths::IDENTITIES, get(identities))
        .route(&format!("{}/{{id}}", paths::IDENTITIES), get(identity))
        .route(
            paths::POLICIES,
            get(policies)
                .post(import)
                .put(import)
                .delete(delete_all_policies),
        )
        .route(
            &format!("{}/{{*name}}", paths::POLICIES),
            get(policy).delete(delete_policy),
        )
        .route(paths::TRACE, post(trace))
        .route(paths::PACKET_TRACE, post(packet_trace))
        .route(paths::NAMESPACES, get(namespaces))
        .route(
            &format!("{}/{{namespace}}/labels", paths::NAMESPACES),
            put(namespace_labels).post(namespace_labels),
        )
        .route(paths::IPCACHE, get(ipcache))
        .route(paths::NODES, get(nodes))
        .route(paths::BPF_POLICY, get(bpf_policy_all))
        .route(&format!("{}/{{key}}", paths::BPF_POLICY), get(bpf_policy))
        .route(paths::BPF_IPCACHE, get(bpf_ipcache))
        .route(paths::BPF_ENDPOINTS, get(bpf_endpoints))
        .route(paths::BPF_CT, get(bpf_ct).delete(bpf_ct_flush))
        .route(
            paths::MONITOR_CONFIG,
            get(monitor_config)
                .put(set_monitor_config)
                .post(set_monitor_config),
        )
        .route(
            paths::SERVICES,
            get(services).put(upsert_service).post(upsert_service),
        )
        .route(paths::SERVICES_IMPORT, post(import_services))
        .route(
            &format!("{}/{{namespace}}/{{name}}", paths::SERVICES),
            get(service).delete(delete_service),
        )
        .route(paths::BPF_LB, get(bpf_lb))
        .route(paths::CONNTRACK, get(conntrack))
        .route(paths::DOCTOR, get(doctor))
        .route(paths::PREFILTER, get(prefilter_list).post(prefilter_add))
        .route(paths::PREFILTER_DELETE, post(prefilter_delete))
}

fn bad(what: &'static str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        what,
        reason: reason.into(),
    }
}

async fn status(State(s): State<Shared>) -> Result<Response, ApiError> {
    let events = s.events.clone();
    let v = s
        .read(move |a| {
            let mut st = a.status();
            let (events_read, events_lost) = events.counts();
            // The settings live in a map: a failed read leaves the
            // section out rather than failing the status.
            st.monitor = events
                .control()
                .settings()
                .ok()
                .map(|c| api::MonitorStatus {
                    config: config_view(c),
                    events_read,
                    events_lost,
                });
            st
        })
        .await?;
    Ok(json(StatusCode::OK, &v))
}

fn config_view(c: MonitorSettings) -> api::MonitorConfig {
    api::MonitorConfig {
        aggregation: c.aggregation.name().to_string(),
        debug: c.debug,
        capture: c.capture,
    }
}

fn settings_error(e: pilus_datapath::Error) -> ApiError {
    ApiError::internal(format!("the monitor's settings: {e}"))
}

/// `GET /v1/monitor/config`.
async fn monitor_config(State(s): State<Shared>) -> Result<Response, ApiError> {
    let events = s.events.clone();
    let c = s
        .read(move |_| events.control().settings())
        .await?
        .map_err(settings_error)?;
    Ok(json(StatusCode::OK, &config_view(c)))
}

/// `PUT` (or `POST`) `/v1/monitor/config`: changes what is given, at once (the programs
/// read the map on their next packet); an unknown level changes nothing.
async fn set_monitor_config(
    State(s): State<Shared>,
    JsonBody(b): JsonBody<api::MonitorConfigUpdate>,
) -> Result<Response, ApiError> {
    let aggregation = match &b.aggregation {
        None => None,
        Some(a) => Some(
            a.parse::<Aggregation>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
    };
    let events = s.events.clone();
    let c = s
        .write(move |_| {
            let mut c = events.control().settings()?;
            if let Some(a) = aggregation {
                c.aggregation = a;
            }
            c.debug = b.debug.unwrap_or(c.debug);
            c.capture = b.capture.unwrap_or(c.capture);
            events.control().set_settings(c)?;
            tracing::info!(
                aggregation = %c.aggregation,
                debug = c.debug,
                capture = c.capture,
                "monitor settings changed"
            );
            Ok(c)
        })
        .await?
        .map_err(settings_error)?;
    Ok(json(StatusCode::OK, &config_view(c)))
}

async fn endpoints(State(s): State<Shared>) -> Result<Response, ApiError> {
    let v = s.read(|a| a.endpoints_view()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn create_endpoint(
    State(s): State<Shared>,
    JsonBody(b): JsonBody<api::EndpointCreate>,
) -> Result<Response, ApiError> {
    let r = s.write(move |a| a.create_endpoint(&b)).await?;
    // A retried ADD finds the endpoint there already.
    let status = match &r {
        Ok(c) if !c.created => StatusCode::OK,
        _ => StatusCode::CREATED,
    };
    Ok(with_status(status, r))
}

/// `?ifname=` makes the key a container id and picks one of its
/// attachments (CNI is per container and interface).
async fn endpoint(
    State(s): State<Shared>,
    Path(key): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let ifname = q.get("ifname").map(str::to_owned);
    let r = s
        .read(move |a| a.endpoint_view(&key, ifname.as_deref()))
        .await?;
    Ok(ok(r))
}

async fn endpoint_of_pod(
    State(s): State<Shared>,
    Path((namespace, pod)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = format!("{namespace}/{pod}");
    Ok(ok(s.read(move |a| a.endpoint_view(&key, None)).await?))
}

async fn delete_endpoint(
    State(s): State<Shared>,
    Path(key): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let ifname = q.get("ifname").map(str::to_owned);
    // Deleting what is not there succeeds (CNI DEL).
    let r = s
        .write(move |a| a.delete_endpoint_by(&key, ifname.as_deref()))
        .await?;
    Ok(ok(r))
}

async fn endpoint_labels(
    State(s): State<Shared>,
    Path(key): Path<String>,
    JsonBody(b): JsonBody<api::EndpointLabelsChange>,
) -> Result<Response, ApiError> {
    relabel(s, key, b).await
}

async fn pod_labels(
    State(s): State<Shared>,
    Path((namespace, pod)): Path<(String, String)>,
    JsonBody(b): JsonBody<api::EndpointLabelsChange>,
) -> Result<Response, ApiError> {
    relabel(s, format!("{namespace}/{pod}"), b).await
}

async fn relabel(
    s: Shared,
    endpoint: String,
    b: api::EndpointLabelsChange,
) -> Result<Response, ApiError> {
    let item = api::EndpointLabelsItem {
        endpoint,
        add: b.add,
        delete: b.delete,
    };
    let r = s
        .write(move |a| {
            a.update_labels(&[item], b.override_cni)
                .map(|mut v| v.remove(0))
        })
        .await?;
    Ok(ok(r))
}

/// Labels of many endpoints at once (`pilus endpoint labels --from`): all
/// or none.
async fn endpoint_labels_batch(
    State(s): State<Shared>,
    JsonBody(b): JsonBody<api::EndpointLabelsBatch>,
) -> Result<Response, ApiError> {
    Ok(ok(s
        .write(move |a| a.update_labels(&b.items, b.override_cni))
        .await?))
}

async fn cni_gc(
    State(s): State<Shared>,
    JsonBody(b): JsonBody<api::CniGc>,
) -> Result<Response, ApiError> {
    Ok(ok(s.write(move |a| a.cni_gc(&b)).await?))
}

async fn identities(State(s): State<Shared>) -> Result<Response, ApiError> {
    let v = s.read(|a| a.identities_view()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn identity(State(s): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = id
        .parse::<u32>()
        .map_err(|_| bad("identity", format!("{id:?} is not a number")))?;
    Ok(ok(s.read(move |a| a.identity_view(id)).await?))
}

async fn policies(State(s): State<Shared>) -> Result<Response, ApiError> {
    Ok(ok(s.read(|a| a.policies_view(None)).await?))
}

async fn policy(State(s): State<Shared>, Path(name): Path<String>) -> Result<Response, ApiError> {
    Ok(ok(s.read(move |a| a.policies_view(Some(&name))).await?))
}

/// The body is read whole before the agent is called: a client that goes
/// away halfway through its upload changes nothing. Its latency (the
/// import itself, not its wait for a turn) goes to the metrics.
async fn import(
    State(s): State<Shared>,
    JsonBody(b): JsonBody<api::PolicyImport>,
) -> Result<Response, ApiError> {
    let instruments = s.instruments.clone();
    Ok(ok(s
        .write(move |a| {
            let started = std::time::Instant::now();
            let r = a.import(&b.files);
            instruments.observe_import(r.is_ok(), started.elapsed());
            r
        })
        .await?))
}

async fn delete_all_policies(State(s): State<Shared>, q: Params) -> Result<Response, ApiError> {
    if q.get("all") != Some("true") {
        return Err(ApiError::bad_request(
            "DELETE /v1/policies needs ?all=true (or a policy name in the path)",
        ));
    }
    Ok(ok(s.write(|a| a.delete_policies(None)).await?))
}

async fn delete_policy(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(ok(s.write(move |a| a.delete_policies(Some(&name))).await?))
}

async fn trace(
    State(s): State<Shared>,
    JsonBody(b): JsonBody<api::TraceRequest>,
) -> Result<Response, ApiError> {
    Ok(ok(s.read(move |a| a.trace(&b)).await?))
}

/// `POST /v1/trace`: a packet through the loaded programs, on a private
/// copy of the state they write (`crate::trace`).
async fn packet_trace(
    State(s): State<Shared>,
    JsonBody(b): JsonBody<api::PacketTraceRequest>,
) -> Result<Response, ApiError> {
    let Some(tracer) = s.tracer.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this agent has no datapath to trace through",
        ));
    };
    match s.read(move |cp| tracer.trace(cp, &b)).await? {
        Ok(t) => Ok(json(StatusCode::OK, &t)),
        Err(e) => {
            let status = match e {
                TraceError::Invalid(_) => StatusCode::BAD_REQUEST,
                TraceError::NotFound(_) => StatusCode::NOT_FOUND,
                TraceError::Datapath(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            if status.is_server_error() {
                tracing::error!(error = %pilus_datapath::error_chain(&e), "trace failed");
            }
            Err(ApiError::new(status, pilus_datapath::error_chain(&e)))
        }
    }
}

async fn namespaces(State(s): State<Shared>) -> Result<Response, ApiError> {
    let v = s.read(|a| a.namespaces_view()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn namespace_labels(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    JsonBody(b): JsonBody<api::NamespaceLabels>,
) -> Result<Response, ApiError> {
    // Two names for one namespace: which one was meant is a guess, and a
    // wrong guess relabels another namespace's pods.
    if !b.namespace.is_empty() && b.namespace != ns {
        return Ok(ApiError::from(bad(
            "namespace",
            format!("the body names {:?} but the path {ns:?}", b.namespace),
        ))
        .into_response());
    }
    Ok(ok(s
        .write(move |a| a.set_namespace_labels(&ns, &b.labels))
        .await?))
}

async fn bpf_policy_all(State(s): State<Shared>) -> Result<Response, ApiError> {
    Ok(ok(s.read(|a| a.bpf_policy(None)).await?))
}

async fn bpf_policy(
    State(s): State<Shared>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    Ok(ok(s.read(move |a| a.bpf_policy(Some(&key))).await?))
}

/// The ipcache as the control plane holds it, with every entry's sources.
async fn ipcache(State(s): State<Shared>) -> Result<Response, ApiError> {
    let v = s.read(|a| a.ipcache_view()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn nodes(State(s): State<Shared>) -> Result<Response, ApiError> {
    let v = s.read(|a| a.nodes_view()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn bpf_ipcache(State(s): State<Shared>) -> Result<Response, ApiError> {
    Ok(ok(s.read(|a| a.bpf_ipcache()).await?))
}

async fn bpf_endpoints(State(s): State<Shared>) -> Result<Response, ApiError> {
    Ok(ok(s.read(|a| a.bpf_endpoints()).await?))
}

async fn bpf_ct(State(s): State<Shared>) -> Result<Response, ApiError> {
    Ok(ok(s.read(|a| a.bpf_ct()).await?))
}

async fn bpf_ct_flush(State(s): State<Shared>) -> Result<Response, ApiError> {
    let r = s.write(|a| a.bpf_ct_flush()).await?;
    Ok(ok(r.map(|n| api::Deleted {
        deleted: n,
        revision: 0,
    })))
}

async fn services(State(s): State<Shared>) -> Result<Response, ApiError> {
    let v = s.read(|a| a.services_view()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn service(
    State(s): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = format!("{namespace}/{name}");
    Ok(ok(s.read(move |a| a.service_view(&key)).await?))
}

/// The body is read whole and checked (unknown fields refused) before the
/// agent is called; the agent checks the service against the others.
async fn upsert_service(
    State(s): State<Shared>,
    JsonBody(b): JsonBody<api::Service>,
) -> Result<Response, ApiError> {
    let r = s.write(move |a| a.upsert_service(&b)).await?;
    let status = match &r {
        Ok(u) if !u.created => StatusCode::OK,
        _ => StatusCode::CREATED,
    };
    Ok(with_status(status, r))
}

async fn import_services(
    State(s): State<Shared>,
    JsonBody(b): JsonBody<api::ServiceImport>,
) -> Result<Response, ApiError> {
    Ok(ok(s.write(move |a| a.import_services(&b.files)).await?))
}

async fn delete_service(
    State(s): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = format!("{namespace}/{name}");
    Ok(ok(s.write(move |a| a.delete_service(&key)).await?))
}

async fn bpf_lb(State(s): State<Shared>) -> Result<Response, ApiError> {
    Ok(ok(s.read(|a| a.bpf_lb()).await?))
}

/// Conntrack's size and its GC's counts (404 until the first pass).
async fn conntrack(State(s): State<Shared>) -> Result<Response, ApiError> {
    let v = s
        .read(|a| {
            a.conntrack_status()
                .ok_or(pilus_controlplane::Error::NotFound {
                    what: "conntrack GC state",
                    name: "(no pass has run yet)".into(),
                })
        })
        .await?;
    Ok(ok(v))
}

/// Every check, run on the blocking pool (netlink, sysctls and map walks);
/// it reads the control plane's views, never holds its writer's lock.
async fn doctor(State(s): State<Shared>) -> Result<Response, ApiError> {
    let Some(doctor) = s.doctor.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this agent has no datapath to check (pilus doctor needs pilusd)",
        ));
    };
    let report = tokio::task::spawn_blocking(move || doctor.run())
        .await
        .map_err(|e| ApiError::internal(format!("the doctor's checks failed: {e}")))?;
    Ok(json(StatusCode::OK, &report))
}

/// The prefilter's calls are map walks and writes of their own (not the
/// control plane's): on the blocking pool, outside the writers' turn.
async fn prefilter_call<T: serde::Serialize + Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&PrefilterApi) -> Result<T, PrefilterRequestError> + Send + 'static,
) -> Result<Response, ApiError> {
    let Some(p) = s.prefilter.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this agent has no datapath, so no prefilter",
        ));
    };
    let r = tokio::task::spawn_blocking(move || f(&p))
        .await
        .map_err(|e| ApiError::internal(format!("the prefilter call failed: {e}")))?;
    match r {
        Ok(v) => Ok(json(StatusCode::OK, &v)),
        Err(e) => {
            let status = match e {
                PrefilterRequestError::Invalid(_) => StatusCode::BAD_REQUEST,
                PrefilterRequestError::Missing(_) => StatusCode::NOT_FOUND,
                PrefilterRequestError::Datapath(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(ApiError::new(status, e.to_string()))
        }
    }
}

async fn prefilter_list(State(s): State<Shared>) -> Result<Response, ApiError> {
    prefilter_call(&s, |p| p.list()).await
}

async fn prefilter_add(
    State(s): State<Shared>,
    JsonBody(b): JsonBody<api::PrefilterChange>,
) -> Result<Response, ApiError> {
    prefilter_call(&s, move |p| {
        p.add(&b)?;
        p.list()
    })
    .await
}

async fn prefilter_delete(
    State(s): State<Shared>,
    JsonBody(b): JsonBody<api::PrefilterChange>,
) -> Result<Response, ApiError> {
    prefilter_call(&s, move |p| {
        p.remove(&b)?;
        p.list()
    })
    .await
}
