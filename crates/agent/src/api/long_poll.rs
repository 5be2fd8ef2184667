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
use crate::monitor::Query;
use axum::{
    extract::State,
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get},
    Router,
};
use pilus_api_types::{paths, MonitorBatch, MonitorFilter, MonitorKind, MONITOR_MAX_WAIT_MS};
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
