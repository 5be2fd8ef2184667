//! The agent's REST API on its unix socket: axum routes on hyper's HTTP/1.1,
//! served by a tokio runtime with fixed limits.
//!
//! - [`server`]: the socket (mode 0600, a live agent's never stolen), the
//!   accept loop, per-connection limits and graceful shutdown;
//! - [`limits`]: what a request may cost ([`Limits`]) and the middleware
//!   that enforces it (body size, deadline, concurrency);
//! - `routes`: the agent's routes, each parse → one [`ControlPlane`] call →
//!   respond; `long_poll`: the revision wait and the monitor, which await
//!   notifications instead of holding the agent;
//! - `reply`: JSON bodies, errors as `{"error": "..."}` and the request
//!   extractors that refuse in that shape;
//! - `parse_errors`: the same shape for what hyper refuses before a route
//!   ever sees the request.
//!
//! Control-plane calls run on tokio's blocking pool ([`Shared::read`],
//! [`Shared::write`]): they take the managers' std locks and make syscalls
//! (map writes, netlink), and must never stall the runtime's few worker
//! threads.

pub mod limits;
mod long_poll;
mod parse_errors;
mod reply;
mod routes;
pub mod server;

pub use limits::Limits;
pub use reply::ApiError;
pub use server::{bind, serve, BindError};

use crate::{
    doctor::Doctor, metrics::Instruments, monitor::Monitor, prefilter::PrefilterApi,
    trace::PacketTracer,
};
use pilus_api_types as api;
use pilus_controlplane::ControlPlane;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{oneshot, watch};

/// What every route shares: the control plane, the revision it enforces
/// (for long polls), the monitor's ring, whether the agent is stopping, the
/// metrics it records as it goes and the doctor.
#[derive(Clone)]
pub struct Shared {
    cp: Arc<ControlPlane>,
    /// Changes take turns here before they reach the control plane, so one
    /// whose client is gone (or whose deadline passed) while it waited is
    /// dropped instead of run late.
    writes: Arc<Mutex<()>>,
    revision: Arc<watch::Sender<api::Revision>>,
    events: Arc<Monitor>,
    stopping: watch::Receiver<bool>,
    instruments: Instruments,
    /// `None` where nothing can be checked (an agent without a real
    /// datapath): `GET /v1/doctor` then says so.
    doctor: Option<Arc<Doctor>>,
    /// `None` in an agent without a real datapath: `/v1/prefilter` then
    /// says so.
    prefilter: Option<Arc<PrefilterApi>>,
    /// `None` in an agent without a real datapath: `/v1/trace` then says
    /// so.
    tracer: Option<Arc<PacketTracer>>,
}

fn revision_of(cp: &ControlPlane) -> api::Revision {
    let s = cp.status();
    api::Revision {
        revision: s.revision,
        enforced: s.enforced_revision,
    }
}

impl Shared {
    /// `stopping` turns true when the agent shuts down: long polls answer
    /// at once instead of holding up the exit.
    pub fn new(
        cp: Arc<ControlPlane>,
        events: Arc<Monitor>,
        stopping: watch::Receiver<bool>,
    ) -> Shared {
        let now = revision_of(&cp);
        Shared {
            cp,
            writes: Arc::new(Mutex::new(())),
            revision: Arc::new(watch::Sender::new(now)),
            events,
            stopping,
            instruments: Instruments::default(),
            doctor: None,
            prefilter: None,
            tracer: None,
        }
    }

    /// Records into these instruments (the ones the metrics export).
    pub fn with_instruments(mut self, instruments: Instruments) -> Shared {
        self.instruments = instruments;
        self
    }

    /// Answers `GET /v1/doctor` with this doctor's checks.
    pub fn with_doctor(mut self, doctor: Arc<Doctor>) -> Shared {
        self.doctor = Some(doctor);
        self
    }

    /// Serves `/v1/prefilter` with this deny list.
    pub fn with_prefilter(mut self, prefilter: Arc<PrefilterApi>) -> Shared {
        self.prefilter = Some(prefilter);
        self
    }

    /// Serves `/v1/trace` with this tracer.
    pub fn with_tracer(mut self, tracer: Arc<PacketTracer>) -> Shared {
        self.tracer = Some(tracer);
        self
    }

    /// Holds every change back while the guard lives (for tests of what
    /// waits behind a busy agent).
    pub fn hold_writes(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the control plane on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&ControlPlane) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run(false, f).await
    }

    /// Runs `f` on the control plane on the blocking pool, then publishes
    /// the revision it leaves enforced to the revision long polls.
    pub async fn write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&ControlPlane) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run(true, f).await
    }

    async fn run<T, F>(&self, publish: bool, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&ControlPlane) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let cp = Arc::clone(&self.cp);
        let writes = Arc::clone(&self.writes);
        let revision = Arc::clone(&self.revision);
        let spawned = tokio::task::spawn_blocking(move || {
            // A request whose client went away or whose deadline passed
            // before its turn came is not run: nobody would learn whether
            // it was. Once started, a call runs to its end.
            if tx.is_closed() {
                return;
            }
            let _turn = publish.then(|| writes.lock().unwrap_or_else(|p| p.into_inner()));
            if tx.is_closed() {
                return;
            }
            let out = f(&cp);
            if publish {
                let now = revision_of(&cp);
                revision.send_if_modified(|r| {
                    let changed = (r.revision, r.enforced) != (now.revision, now.enforced);
                    *r = now;
                    changed
                });
            }
            let _ = tx.send(out);
        });
        drop(spawned);
        // Dropped without an answer: `f` panicked, or the runtime is
        // shutting down.
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

/// What an agent of a cluster serves its peers on its underlay address
/// (`GET /v1/flows` for this node only), behind `limits`.
pub fn peer_router(shared: Shared, limits: &Limits) -> axum::Router {
    limits::apply(axum::Router::new(), long_poll::peer_router(), limits).with_state(shared)
}
