//! Prometheus metrics of the agent and its datapath (with prometheus-client,
//! the Prometheus project's Rust client), served on a TCP address of their
//! own (`pilusd --metrics-address`, default `127.0.0.1:9962`, `none` for
//! off) by the agent's runtime: `GET /metrics` answers OpenMetrics to a
//! client that asks for it (a Prometheus server does) and the Prometheus
//! text format 0.0.4 to any other (curl, `promtool check metrics`).
//!
//! - [`collect`]: what is read at each scrape — the datapath's counters and
//!   maps through [`DatapathView`] (its own descriptors of the pins: a
//!   scrape takes no lock a change needs), the control plane's counts (its
//!   status: its managers' read locks for a moment, never the writer's
//!   lock), the monitor's event totals;
//! - [`Instruments`]: what the agent records as it happens (the latency of
//!   policy imports), and [`ConntrackGcMetrics`], the conntrack GC
//!   thread's runs;
//! - [`router`]: the HTTP side, served by [`crate::api::serve`] with limits
//!   of its own (few scrapes at once, each with a deadline).

pub mod collect;

use crate::{monitor::Monitor, view::DatapathView};
use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use pilus_controlplane::ControlPlane;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use std::{fmt, net::SocketAddr, str::FromStr, sync::Arc, time::Duration};
use tower::limit::GlobalConcurrencyLimitLayer;

/// `--metrics-address`: where the metrics are served, or not at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAddress {
    Off,
    At(SocketAddr),
}

/// The default: this node's loopback, on the port Cilium's agent uses for
/// its own metrics. In a lab every node's agent runs in its own namespace,
/// so each has its own 127.0.0.1:9962.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9962";

#[derive(Debug, thiserror::Error)]
#[error("{given:?} is not an address (ADDRESS:PORT, e.g. {DEFAULT_ADDRESS}) nor `none`")]
pub struct BadAddress {
    given: String,
    #[source]
    source: std::net::AddrParseError,
}

impl FromStr for MetricsAddress {
    type Err = BadAddress;
    fn from_str(s: &str) -> Result<MetricsAddress, BadAddress> {
        if s == "none" {
            return Ok(MetricsAddress::Off);
        }
        s.parse()
            .map(MetricsAddress::At)
            .map_err(|source| BadAddress {
                given: s.to_string(),
                source,
            })
    }
}

/// The label of an import's latency: whether it was applied.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `applied` or `refused`.
    pub outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.5 ms to ~4 s in doublings: a policy import is a map write per entry.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// What the agent records as it happens (cheap clones of shared cells).
#[derive(Clone, Debug)]
pub struct Instruments {
    import_duration: Histograms<Outcome>,
}

impl Default for Instruments {
    fn default() -> Instruments {
        let import_duration: Histograms<Outcome> = Family::new_with_constructor(latency_histogram);
        // Both series from the start, so the first import is an increase
        // Prometheus can see (a series appears with its first sample).
        for outcome in ["applied", "refused"] {
            drop(import_duration.get_or_create(&Outcome { outcome }));
        }
        Instruments { import_duration }
    }
}

impl Instruments {
    /// A policy import took `took`, and was applied or refused whole.
    pub fn observe_import(&self, applied: bool, took: Duration) {
        let outcome = if applied { "applied" } else { "refused" };
        self.import_duration
            .get_or_create(&Outcome { outcome })
            .observe(took.as_secs_f64());
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "pilus_policy_import_duration_seconds",
            "Time to validate a policy import and write its entries into the datapath, by \
             outcome (applied, or refused whole)",
            self.import_duration.clone(),
        );
    }
}

/// The conntrack GC's metrics: pilusd creates one of these, hands it to
/// [`Metrics::new`] and has its GC thread call
/// [`record_run`](Self::record_run) after every completed pass. A registry
/// made without one (tests of other parts) has no such series, so none
/// claims a GC that never runs.
#[derive(Clone, Debug)]
pub struct ConntrackGcMetrics {
    runs: Counter,
    deleted: Counter,
    nat_deleted: Counter,
    duration: Histogram,
}

impl Default for ConntrackGcMetrics {
    fn default() -> ConntrackGcMetrics {
        ConntrackGcMetrics {
            runs: Counter::default(),
            deleted: Counter::default(),
            nat_deleted: Counter::default(),
            duration: latency_histogram(),
        }
    }
}

impl ConntrackGcMetrics {
    /// One GC pass that deleted `deleted` expired conntrack entries and
    /// `nat_deleted` expired NAT entries in `took`.
    pub fn record_run(&self, deleted: u64, nat_deleted: u64, took: Duration) {
        self.runs.inc();
        self.deleted.inc_by(deleted);
        self.nat_deleted.inc_by(nat_deleted);
        self.duration.observe(took.as_secs_f64());
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "pilus_conntrack_gc_runs",
            "Conntrack garbage collection passes",
            self.runs.clone(),
        );
        r.register(
            "pilus_conntrack_gc_deleted_entries",
            "Expired conntrack entries the garbage collector deleted",
            self.deleted.clone(),
        );
        r.register(
            "pilus_nat_gc_deleted_entries",
            "Expired masquerade NAT entries the conntrack garbage collector deleted",
            self.nat_deleted.clone(),
        );
        r.register(
            "pilus_conntrack_gc_duration_seconds",
            "Time one conntrack garbage collection pass took",
            self.duration.clone(),
        );
    }
}

/// Where the scrape-time values come from.
#[derive(Clone)]
pub struct Sources {
    pub cp: Arc<ControlPlane>,
    pub monitor: Arc<Monitor>,
    /// The datapath; `None` where there is none to read (tests of the
    /// control plane's part).
    pub datapath: Option<Arc<dyn DatapathView>>,
}

/// The registry of everything pilusd exports.
pub struct Metrics {
    registry: Registry,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The content types of the two formats.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

impl Metrics {
    pub fn new(
        sources: Sources,
        instruments: &Instruments,
        conntrack_gc: Option<&ConntrackGcMetrics>,
    ) -> Metrics {
        let mut registry = Registry::default();
        instruments.register(&mut registry);
        if let Some(gc) = conntrack_gc {
            gc.register(&mut registry);
        }
        registry.register_collector(Box::new(collect::Collector::new(sources)));
        Metrics { registry }
    }

    /// The exposition now, in OpenMetrics or the Prometheus text format.
    /// Blocking: the collectors read the datapath's maps.
    pub fn encode(&self, openmetrics: bool) -> Result<String, fmt::Error> {
        let mut out = String::new();
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        }
        Ok(out)
    }
}

/// Scrapes served at once; more wait for a turn (a scrape walks every
/// map, so a burst of them must not multiply that).
const MAX_SCRAPES: usize = 2;
/// A scrape's deadline: a Prometheus server gives up after its
/// `scrape_timeout` (10 s by default) anyway.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The metrics' connection limits for [`crate::api::serve`].
pub fn limits() -> crate::api::Limits {
    crate::api::Limits {
        max_connections: 64,
        ..Default::default()
    }
}

/// `GET /metrics` (and `/`, for a browser pointed at the address).
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/", get(index))
        .route_layer(GlobalConcurrencyLimitLayer::new(MAX_SCRAPES))
        .with_state(metrics)
}

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "pilusd metrics: GET /metrics\n",
    )
        .into_response()
}

/// Whether the client's `Accept` asks for OpenMetrics (Prometheus servers
/// list it first).
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

async fn scrape(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let openmetrics = wants_openmetrics(&headers);
    let work = tokio::task::spawn_blocking(move || metrics.encode(openmetrics));
    let failed = |why: String| {
        tracing::warn!(error = %why, "a metrics scrape failed");
        (StatusCode::INTERNAL_SERVER_ERROR, why).into_response()
    };
    match tokio::time::timeout(SCRAPE_TIMEOUT, work).await {
        Ok(Ok(Ok(body))) => {
            let kind = if openmetrics {
                OPENMETRICS
            } else {
                PROMETHEUS_TEXT
            };
            ([(header::CONTENT_TYPE, kind)], body).into_response()
        }
        Ok(Ok(Err(e))) => failed(format!("encoding the metrics: {e}")),
        Ok(Err(e)) => failed(format!("the scrape task failed: {e}")),
        Err(_) => failed(format!("the scrape took over {SCRAPE_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            "none".parse::<MetricsAddress>().unwrap(),
            MetricsAddress::Off
        );
        assert_eq!(
            DEFAULT_ADDRESS.parse::<MetricsAddress>().unwrap(),
            MetricsAddress::At(SocketAddr::from(([127, 0, 0, 1], 9962)))
        );
        let e = "localhost".parse::<MetricsAddress>().unwrap_err();
        assert!(e.to_string().contains("ADDRESS:PORT"), "{e}");
    }

    #[test]
    fn openmetrics_only_when_asked() {
        let mut h = HeaderMap::new();
        assert!(!wants_openmetrics(&h));
        h.insert(
            header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
                .parse()
                .unwrap(),
        );
        assert!(wants_openmetrics(&h));
    }
}
