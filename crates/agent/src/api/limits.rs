//! What one client may cost the agent, and the middleware that holds it to
//! that. The connection-level limits (how many, how long a request head may
//! take) are applied by [`super::server`]; the request-level ones here:
//!
//! - a body larger than [`Limits::max_body`] is refused with 413: at once
//!   from its `Content-Length`, or when a chunked body passes the limit;
//! - at most [`Limits::max_requests`] ordinary requests and
//!   [`Limits::max_long_polls`] long polls are served at once; more wait
//!   for a slot (a waiting request holds no thread);
//! - an ordinary request gets [`Limits::request_timeout`] from the end of
//!   its head to its response, body upload and waiting for a slot
//!   included: 503 after that. (Long polls have their own caps.)
//!
//! Every refusal, also axum's own (an unknown path, a path parameter that
//! does not decode), is answered `{"error": "..."}`.

use super::{reply::ApiError, Shared};
use axum::{
    extract::{DefaultBodyLimit, Request},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use http_body_util::BodyExt;
use std::time::Duration;
use tower::limit::GlobalConcurrencyLimitLayer;

/// The API server's limits. [`Limits::default`] is what pilusd uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From accepting a connection (or the end of its previous response) to
    /// the end of a request head. Also the idle keep-alive timeout: hyper
    /// runs this timer whenever a connection waits for a head, so a
    /// connection that says nothing is closed after it too.
    pub header_read_timeout: Duration,
    /// Connections held at once; further ones wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
    /// Ordinary requests (not long polls) being served at once.
    pub max_requests: usize,
    /// Long polls (revision wait, monitor) being served at once.
    pub max_long_polls: usize,
    /// An ordinary request's time from its head to its response.
    pub request_timeout: Duration,
    /// The largest request body (policy imports can be large).
    pub max_body: usize,
    /// How long in-flight requests get to finish when the agent stops.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 2048,
            max_requests: 256,
            max_long_polls: 64,
            request_timeout: Duration::from_secs(30),
            max_body: 8 << 20,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// `routes` and `long_polls` behind their limits, as one router.
pub fn apply(
    routes: Router<Shared>,
    long_polls: Router<Shared>,
    limits: &Limits,
) -> Router<Shared> {
    let timeout = limits.request_timeout;
    // axum refuses a route layer on a router without routes (the peers'
    // router has long polls only).
    let routes = if !routes.has_routes() {
        routes
    } else {
        routes
            // Innermost first: a slot, then (outside it) the deadline, so
            // time spent waiting for a slot counts.
            .route_layer(GlobalConcurrencyLimitLayer::new(limits.max_requests))
            .route_layer(middleware::from_fn(move |req: Request, next: Next| {
                deadline(timeout, req, next)
            }))
    };
    let long_polls =
        long_polls.route_layer(GlobalConcurrencyLimitLayer::new(limits.max_long_polls));
    let max_body = limits.max_body;
    routes
        .merge(long_polls)
        .fallback(not_found)
        // A known path with another method: 404 as before the move to
        // axum, which would answer 405 (the monitor says 405 itself).
        .method_not_allowed_fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            refuse_oversized(max_body, req, next)
        }))
        .layer(middleware::map_response(json_errors))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such API path {:?}", req.uri().path()),
    )
}

async fn deadline(timeout: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request did not complete within {timeout:?}; a change it asked for was \
                 either made whole or not at all: ask the agent which"
            ),
        )
        .into_response(),
    }
}

/// 413 from the announced length, before a byte of the body is read.
async fn refuse_oversized(max_body: usize, req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(n) if n > max_body as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {n} bytes is over the {max_body}-byte limit"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// Gives an error response that is not JSON yet (axum's own rejections are
/// plain text, its fallbacks empty) the API's `{"error": ...}` shape.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    // These bodies are axum's short messages; a long one is cut, not
    // buffered whole.
    let (_, body) = response.into_parts();
    let text = match http_body_util::Limited::new(body, 4096).collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    ApiError::new(status, message).into_response()
}
