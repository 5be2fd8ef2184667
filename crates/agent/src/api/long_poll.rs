//! The two long polls: `GET /v1/policy/revision?wait=N&timeout_ms=T` and
//! `GET /v1/monitor?since=S&wait_ms=W&type=…&from=…&to=…&related_to=…&last=N`.
//! Both await a
//! `tokio::sync::watch` (the enforced revision that the mutating routes
//! publish; the monitor ring's newest sequence number) with a server-side
//! cap, and answer at once when the agent stops. A waiting poll holds no
//! thread and no lock.

use super::{
    reply::{json, ApiError, Params},
    Shared,
};
use crate::flows::{self, AgentFlowNames};
use crate::monitor::Query;
use axum::{
    extract::State,
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get},
    Router,
};
use pilus_api_types::{
    paths, FlowBatch, FlowFilter, FlowNodeStatus, FlowVerdict, MonitorBatch, MonitorFilter,
    MonitorKind, FLOWS_PEER_PORT, MONITOR_MAX_WAIT_MS,
};
use pilus_monitor::Record;
use std::time::Duration;

/// The longest a revision long poll is held, whatever the client asks.
pub const REVISION_MAX_WAIT_MS: u64 = 60_000;

/// What `timeout_ms` is when the client does not say.
const REVISION_DEFAULT_WAIT_MS: u64 = 10_000;

pub fn router() -> Router<Shared> {
    Router::new()
        .route(paths::REVISION, get(revision))
        // Only GET; anything else is told so (405), as before the move.
        .route(paths::MONITOR, any(monitor))
        .route(paths::FLOWS, get(flows))
}

/// What an agent serves the other nodes' agents on its underlay address:
/// its own flows, nothing else.
pub fn peer_router() -> Router<Shared> {
    Router::new().route(paths::FLOWS, get(peer_flows))
}

/// `GET /v1/policy/revision`: 200 with the [`Revision`](pilus_api_types::Revision)
/// once `enforced >= wait`, or 408 with it when `timeout_ms` (at most
/// [`REVISION_MAX_WAIT_MS`]) passes first.
async fn revision(State(s): State<Shared>, q: Params) -> Result<Response, ApiError> {
    // A parameter that does not parse is refused, not defaulted: a caller
    // that waits for revision "x" believes it waited.
    let number = |name: &'static str, default: u64| -> Result<u64, ApiError> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{name}: {v:?} is not a whole number"))),
        }
    };
    let wait = number("wait", 0)?;
    let timeout_ms = number("timeout_ms", REVISION_DEFAULT_WAIT_MS)?;
    let timeout = Duration::from_millis(timeout_ms.min(REVISION_MAX_WAIT_MS));
    let mut revisions = s.revision.subscribe();
    let mut stopping = s.stopping.clone();
    tokio::select! {
        // `wait_for` looks at the current value first, then at each one
        // the routes publish; the sender lives as long as `s`.
        _ = tokio::time::timeout(timeout, async {
            let _ = revisions.wait_for(|r| r.enforced >= wait).await.is_ok();
        }) => {}
        _ = async { let _ = stopping.wait_for(|stop| *stop).await.is_ok(); } => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the agent is stopping",
            ));
        }
    }
    let now = revisions.borrow().clone();
    let status = if now.enforced >= wait {
        StatusCode::OK
    } else {
        StatusCode::REQUEST_TIMEOUT
    };
    Ok(json(status, &now))
}

fn number<T: std::str::FromStr>(q: &Params, name: &str) -> Result<Option<T>, ApiError> {
    match q.get(name) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("{name}={v:?} is not a non-negative integer"))
        }),
    }
}

/// `GET /v1/monitor`: the events after `since`, waiting up to `wait_ms`
/// (at most [`MONITOR_MAX_WAIT_MS`]) for one.
async fn monitor(method: Method, State(s): State<Shared>, q: Params) -> Response {
    if method != Method::GET {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} {}: only GET", paths::MONITOR),
        )
        .into_response();
    }
    match monitor_batch(&s, &q).await {
        Ok(b) => json(StatusCode::OK, &b),
        Err(e) => e.into_response(),
    }
}

/// A comma-separated list of `name`'s values, each parsed by `parse`.
fn list<T>(
    q: &Params,
    name: &str,
    parse: impl Fn(&str) -> Option<T>,
    expected: &str,
) -> Result<Vec<T>, ApiError> {
    match q.get(name) {
        None | Some("") => Ok(Vec::new()),
        Some(v) => v
            .split(',')
            .map(|x| {
                parse(x.trim()).ok_or_else(|| {
                    ApiError::bad_request(format!("{name}={x:?}: expected {expected}"))
                })
            })
            .collect(),
    }
}

fn filter(q: &Params) -> Result<MonitorFilter, ApiError> {
    let ep = |s: &str| s.parse::<u16>().ok();
    let mut types = list(
        q,
        "type",
        |t| {
            if t == "all" {
                Some(None)
            } else {
                MonitorKind::parse(t).map(Some)
            }
        },
        "drop, trace, policy-verdict, debug, capture or all",
    )?;
    // `all` (or nothing) is every kind.
    if types.iter().any(Option::is_none) {
        types.clear();
    }
    Ok(MonitorFilter {
        types: types.into_iter().flatten().collect(),
        from: list(q, "from", ep, "endpoint ids")?,
        to: list(q, "to", ep, "endpoint ids")?,
        related_to: list(q, "related_to", ep, "endpoint ids")?,
    })
}

async fn monitor_batch(s: &Shared, q: &Params) -> Result<MonitorBatch, ApiError> {
    let filter = filter(q)?;
    let last: Option<usize> = number(q, "last")?;
    // Endpoints are only known once events are decoded: with an endpoint
    // filter, `last` is applied after it.
    let by_endpoint = !filter.any_endpoint();
    let query = Query {
        since: number(q, "since")?.unwrap_or(0),
        filter: filter.clone(),
        last: if by_endpoint { None } else { last },
    };
    let wait_ms: u64 = number(q, "wait_ms")?.unwrap_or(0);
    let wait = Duration::from_millis(wait_ms.min(MONITOR_MAX_WAIT_MS));
    let b = s.events.query(&query, wait, &s.stopping).await;
    let (next, lost) = (b.next, b.lost);
    let mut events = if b.events.is_empty() {
        Vec::new()
    } else {
        // Named as the endpoints and policies are now (on the blocking
        // pool: it takes the control plane's locks).
        s.read(move |cp| {
            let names = crate::names::AgentNames::new(cp);
            b.events
                .iter()
                .map(|e| pilus_monitor::decode(&e.record, e.seq, e.time_ns, &names))
                .filter(|e| filter.matches(e))
                .collect::<Vec<_>>()
        })
        .await?
    };
    if let (true, Some(n)) = (by_endpoint, last) {
        let skip = events.len().saturating_sub(n);
        events.drain(..skip);
    }
    Ok(MonitorBatch { next, lost, events })
}

/// The longest a cluster-wide flows poll waits for each node: a follower
/// hears from every node at least this often.
const FLOWS_CLUSTER_MAX_WAIT_MS: u64 = 1000;

/// How long past its wait a peer may take to answer before it is reported
/// unreachable for this poll.
const PEER_GRACE: Duration = Duration::from_secs(2);

/// The filter parameters of `GET /v1/flows`, checked; returned as the
/// filter and as the pairs a peer is asked with.
fn flow_filter(q: &Params) -> Result<(FlowFilter, Vec<(String, String)>), ApiError> {
    let text = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    let filter = FlowFilter {
        pods: list(q, "pod", text, "[NAMESPACE/]POD names")?,
        namespaces: list(q, "namespace", text, "namespace names")?,
        verdicts: list(q, "verdict", FlowVerdict::parse, "FORWARDED or DROPPED")?,
        ports: list(q, "port", |p| p.parse::<u16>().ok(), "port numbers")?,
        protocols: list(
            q,
            "protocol",
            |p| {
                let p = p.to_ascii_lowercase();
                ["tcp", "udp", "icmp"].contains(&p.as_str()).then_some(p)
            },
            "tcp, udp or icmp",
        )?,
    };
    let pairs = ["pod", "namespace", "verdict", "port", "protocol"]
        .iter()
        .filter_map(|k| q.get(k).map(|v| (k.to_string(), v.to_owned())))
        .collect();
    Ok((filter, pairs))
}

/// `GET /v1/flows?since=…&wait_ms=…&last=N&nodes=local|all&pod=…&namespace=…
/// &verdict=…&port=…&protocol=…`: flow records, this node's or every node's.
async fn flows(State(s): State<Shared>, q: Params) -> Response {
    match flow_batch(&s, &q, true).await {
        Ok(b) => json(StatusCode::OK, &b),
        Err(e) => e.into_response(),
    }
}

/// A peer's `GET /v1/flows`: this node's flows only (a peer never relays).
async fn peer_flows(State(s): State<Shared>, q: Params) -> Response {
    match flow_batch(&s, &q, false).await {
        Ok(b) => json(StatusCode::OK, &b),
        Err(e) => e.into_response(),
    }
}

async fn flow_batch(s: &Shared, q: &Params, may_relay: bool) -> Result<FlowBatch, ApiError> {
    let (filter, pairs) = flow_filter(q)?;
    let all = match q.get("nodes") {
        None | Some("") | Some("local") => false,
        Some("all") if may_relay => true,
        Some("all") => {
            return Err(ApiError::bad_request(
                "nodes=all: a peer answers for its own node only",
            ))
        }
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "nodes={v:?}: expected local or all"
            )))
        }
    };
    let since = flows::parse_since(q.get("since").unwrap_or("")).map_err(ApiError::bad_request)?;
    let last: Option<usize> = number(q, "last")?;
    let wait_ms: u64 = number(q, "wait_ms")?.unwrap_or(0);
    // The other nodes only matter to a cluster-wide answer.
    let (me, peers) = s
        .read(move |cp| {
            let peers = if all { cp.nodes_view() } else { Vec::new() };
            (cp.node_name().to_owned(), peers)
        })
        .await?;
    if !all {
        let wait = Duration::from_millis(wait_ms.min(MONITOR_MAX_WAIT_MS));
        return local_flows(s, &me, since.of(&me, true), filter, wait, last).await;
    }
    let wait_ms = wait_ms.min(FLOWS_CLUSTER_MAX_WAIT_MS);
    let mut asked = tokio::task::JoinSet::new();
    for peer in peers.into_iter().filter(|n| !n.local) {
        let cursor = since.of(&peer.name, false);
        let path = flows::peer_query(&pairs, cursor, wait_ms, last);
        let addr = std::net::SocketAddr::from((peer.underlay_ip, FLOWS_PEER_PORT));
        let client = pilus_client::Client::tcp(addr)
            .with_timeout(Duration::from_millis(wait_ms) + PEER_GRACE);
        asked.spawn(async move {
            client
                .get_json::<FlowBatch>(&path)
                .await
                .unwrap_or_else(|e| FlowBatch {
                    nodes: vec![FlowNodeStatus {
                        node: peer.name.clone(),
                        next: cursor,
                        lost: 0,
                        error: Some(format!("{addr}: {e}")),
                    }],
                    flows: Vec::new(),
                })
        });
    }
    let here = local_flows(
        s,
        &me,
        since.of(&me, true),
        filter,
        Duration::from_millis(wait_ms),
        last,
    )
    .await?;
    let mut batches = vec![here];
    while let Some(b) = asked.join_next().await {
        batches.push(b.map_err(|e| ApiError::internal(format!("asking a peer: {e}")))?);
    }
    Ok(flows::merge(batches, last))
}

/// This node's flows after `since`, waiting up to `wait` for one.
async fn local_flows(
    s: &Shared,
    me: &str,
    since: u64,
    filter: FlowFilter,
    wait: Duration,
    last: Option<usize>,
) -> Result<FlowBatch, ApiError> {
    let query = Query {
        since,
        filter: MonitorFilter {
            types: vec![
                MonitorKind::Trace,
                MonitorKind::Drop,
                MonitorKind::PolicyVerdict,
            ],
            ..Default::default()
        },
        last: None,
    };
    let b = s.events.query(&query, wait, &s.stopping).await;
    // The datapath's own losses (a full ring buffer) are in the ring as
    // records of their own; the agent's (overwritten before asked for) are
    // the batch's.
    let dropped_by_datapath: u64 = b
        .events
        .iter()
        .map(|e| match e.record {
            Record::Lost { count, .. } => count,
            Record::Event(_) => 0,
        })
        .sum();
    let mut flows = if b.events.is_empty() {
        Vec::new()
    } else {
        s.read(move |cp| {
            let names = crate::names::AgentNames::new(cp);
            let flow_names = AgentFlowNames::new(cp);
            b.events
                .iter()
                .map(|e| pilus_monitor::decode(&e.record, e.seq, e.time_ns, &names))
                .filter_map(|e| pilus_monitor::flow::flow_of(&e, &flow_names))
                .filter(|f| filter.matches(f))
                .collect::<Vec<_>>()
        })
        .await?
    };
    if let Some(n) = last {
        let skip = flows.len().saturating_sub(n);
        flows.drain(..skip);
    }
    Ok(FlowBatch {
        nodes: vec![FlowNodeStatus {
            node: me.to_owned(),
            next: b.next,
            lost: b.lost + dropped_by_datapath,
            error: None,
        }],
        flows,
    })
}
