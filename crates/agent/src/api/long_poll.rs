//! The two long polls: `GET /v1/policy/revision?wait=N&timeout_ms=T` and
//! `GET /v1/monitor?since=S&wait_ms=W&type=…&last=N`. Both await a
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
use pilus_api_types::{paths, MonitorBatch, MonitorFilter, MONITOR_MAX_WAIT_MS};
use std::{collections::HashMap, net::Ipv4Addr, time::Duration};

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

async fn monitor_batch(s: &Shared, q: &Params) -> Result<MonitorBatch, ApiError> {
    let filter = match q.get("type") {
        None | Some("") => MonitorFilter::All,
        Some(t) => MonitorFilter::parse(t).ok_or_else(|| {
            ApiError::bad_request(format!("type={t:?}: expected drop, trace or all"))
        })?,
    };
    let query = Query {
        since: number(q, "since")?.unwrap_or(0),
        filter,
        last: number(q, "last")?,
    };
    let wait_ms: u64 = number(q, "wait_ms")?.unwrap_or(0);
    let wait = Duration::from_millis(wait_ms.min(MONITOR_MAX_WAIT_MS));
    let b = s.events.query(&query, wait, &s.stopping).await;
    // Local endpoints by address, for the side of each packet the event's
    // own endpoint is not (as they are now, not as they were).
    let by_ip: HashMap<Ipv4Addr, u16> = if b.events.is_empty() {
        HashMap::new()
    } else {
        s.read(|a| {
            a.endpoints_view()
                .into_iter()
                .map(|e| (e.ipv4, e.id))
                .collect()
        })
        .await?
    };
    let events = b
        .events
        .iter()
        .map(|e| pilus_monitor::decode(&e.event, e.seq, e.time_ns, |ip| by_ip.get(&ip).copied()))
        .collect();
    Ok(MonitorBatch {
        next: b.next,
        lost: b.lost,
        events,
    })
}
