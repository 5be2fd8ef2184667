//! The agent's REST API on its unix socket: axum routes on hyper's HTTP/1.1,
//! served by a tokio runtime with fixed limits.
//!
//! - [`server`]: the socket (mode 0600, a live agent's never stolen), the
//!   accept loop, per-connection limits and graceful shutdown;
//! - [`limits`]: what a request may cost ([`Limits`]) and the middleware
//!   that enforces it (body size, deadline, concurrency);
//! - `routes`: the agent's routes, each parse → one [`Agent`] call →
//!   respond; `long_poll`: the revision wait and the monitor, which await
//!   notifications instead of holding the agent;
//! - `reply`: JSON bodies, errors as `{"error": "..."}` and the request
//!   extractors that refuse in that shape;
//! - `parse_errors`: the same shape for what hyper refuses before a route
//!   ever sees the request.
//!
//! Agent calls run on tokio's blocking pool ([`Shared::read`],
//! [`Shared::write`]): they take a std mutex and make syscalls (map writes,
//! netlink), and must never stall the runtime's few worker threads.

pub mod limits;
mod long_poll;
mod parse_errors;
mod reply;
mod routes;
pub mod server;

pub use limits::Limits;
pub use reply::ApiError;
pub use server::{bind, serve, BindError};

use crate::{agent::Agent, monitor::Monitor};
use pilus_api_types as api;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};

/// What every route shares: the agent, the revision it enforces (for
/// long polls), the monitor's ring, and whether the agent is stopping.
#[derive(Clone)]
pub struct Shared {
    agent: Arc<Mutex<Agent>>,
    revision: Arc<watch::Sender<api::Revision>>,
    events: Arc<Monitor>,
    stopping: watch::Receiver<bool>,
}

fn revision_of(a: &Agent) -> api::Revision {
    api::Revision {
        revision: a.engine.revision(),
        enforced: a.enforced,
    }
}

impl Shared {
    /// `stopping` turns true when the agent shuts down: long polls answer
    /// at once instead of holding up the exit.
    pub fn new(
        agent: Arc<Mutex<Agent>>,
        events: Arc<Monitor>,
        stopping: watch::Receiver<bool>,
    ) -> Shared {
        let now = revision_of(&agent.lock().unwrap_or_else(|p| p.into_inner()));
        Shared {
            agent,
            revision: Arc::new(watch::Sender::new(now)),
            events,
            stopping,
        }
    }

    /// Runs `f` on the agent (locked) on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Agent) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run(false, move |a| f(a)).await
    }

    /// Runs `f` on the agent (locked) on the blocking pool, then publishes
    /// the revision it leaves enforced to the revision long polls.
    pub async fn write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut Agent) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run(true, f).await
    }

    async fn run<T, F>(&self, publish: bool, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut Agent) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let agent = Arc::clone(&self.agent);
        let revision = Arc::clone(&self.revision);
        let spawned = tokio::task::spawn_blocking(move || {
            // A request whose client went away or whose deadline passed
            // before its turn came is not run: nobody would learn whether
            // it was. Once started, a call runs to its end.
            if tx.is_closed() {
                return;
            }
            let mut a = agent.lock().unwrap_or_else(|p| p.into_inner());
            if tx.is_closed() {
                return;
            }
            let out = f(&mut a);
            if publish {
                let now = revision_of(&a);
                revision.send_if_modified(|r| {
                    let changed = (r.revision, r.enforced) != (now.revision, now.enforced);
                    *r = now;
                    changed
                });
            }
            drop(a);
            let _ = tx.send(out);
        });
        drop(spawned);
        // Dropped without an answer: `f` panicked (the lock is poisoned,
        // which the next call ignores), or the runtime is shutting down.
        rx.await.map_err(|_| {
            ApiError::internal("the request handler panicked or the agent is stopping")
        })
    }
}

/// The whole API as one router: the agent's routes and the long polls,
/// each group behind its limits (see [`limits`]).
pub fn router(shared: Shared, limits: &Limits) -> axum::Router {
    limits::apply(routes::router(), long_poll::router(), limits).with_state(shared)
}
