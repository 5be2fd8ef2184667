//! Tier 1: the metrics pilusd exports, from a control plane on in-memory
//! maps and a fake datapath view, no root: every family named `pilus_…`
//! with HELP and TYPE, the values read at scrape time (verdicts by reason
//! and direction, lost events, map pressure, conntrack by protocol, the
//! control plane's counts, the monitor's events, import latency), a failed
//! read left out and counted, both formats on `GET /metrics`, and the
//! conntrack GC hook. (Debian's promtool and a real Prometheus server check
//! a real agent's exposition in `metrics.rs`.)

use axum::body::Body;
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use pilus_abi::{
    consts::{DIR_EGRESS, DIR_INGRESS, DROP_POLICY, EVENT_DROP, METRIC_FORWARDED},
    Event,
};
use pilus_agent::{
    metrics::{self, ConntrackGcMetrics, Instruments, Metrics, Sources},
    monitor::Monitor,
    view::DatapathView,
};
use pilus_api_types::EndpointCreate;
use pilus_controlplane::{
    fake::{self, FakeDatapath, FakePlumbing},
    ControlPlane,
};
use pilus_datapath::{
    inspect::{Counters, MapUsage, Usage},
    DropCount, Error, HookStatus, NodeDevice, SockHookStatus,
};
use std::{sync::Arc, time::Duration};
use tower::ServiceExt;

/// A datapath view with fixed answers; `broken` makes every read fail.
struct FakeView {
    broken: bool,
}

impl DatapathView for FakeView {
    fn usage(&self) -> Result<Usage, Error> {
        if self.broken {
            return Err(Error::NotPinned);
        }
        let m = |name: &str, kind: &str, entries, max_entries| MapUsage {
            name: name.into(),
            kind: kind.into(),
            entries,
            max_entries,
        };
        Ok(Usage {
            maps: vec![
                m("pilus_ct4", "lru_hash", 5, 262144),
                m("pilus_frag4", "lru_hash", 8192, 8192),
            ],
            conntrack: [(6, 4), (17, 1)].into_iter().collect(),
        })
    }
    fn counters(&self) -> Result<Counters, Error> {
        if self.broken {
            return Err(Error::NotPinned);
        }
        let c = |reason, direction, packets, bytes| DropCount {
            reason,
            direction,
            packets,
            bytes,
        };
        Ok(Counters {
            verdicts: vec![
                c(METRIC_FORWARDED, DIR_EGRESS, 10, 1000),
                c(DROP_POLICY, DIR_INGRESS, 3, 180),
                c(200, DIR_EGRESS, 1, 60),
            ],
            events_lost: 2,
        })
    }
    fn endpoint_hooks(&self, _: &str) -> Result<Option<Vec<HookStatus>>, Error> {
        Ok(None)
    }
    fn device_hooks(&self, _: &str, _: NodeDevice) -> Result<Option<Vec<HookStatus>>, Error> {
        Ok(None)
    }
    fn socket_lb_hooks(&self, _: &std::path::Path) -> Result<Vec<SockHookStatus>, Error> {
        Ok(Vec::new())
    }
}

fn control_plane() -> Arc<ControlPlane> {
    let dir = std::env::temp_dir().join(format!("pilus-metrics-expo-{}", std::process::id()));
    let cp = ControlPlane::start(
        fake::settings("n1", &dir),
        Arc::new(FakeDatapath::default()),
        Arc::new(FakePlumbing::default()),
        Arc::new(pilus_kvstore::MemKv::default()),
    )
    .expect("control plane");
    cp.create_endpoint(&EndpointCreate {
        container_id: "web".into(),
        netns: "/run/netns/web".into(),
        pod_name: Some("web".into()),
        labels: vec!["app=web".into()],
        ..Default::default()
    })
    .expect("endpoint");
    Arc::new(cp)
}

fn drop_event() -> Event {
    let mut e = Event::from_bytes(&[0; std::mem::size_of::<Event>()]).unwrap();
    (e.kind, e.subtype, e.direction) = (EVENT_DROP, DROP_POLICY, DIR_INGRESS);
    e
}

fn metrics(broken: bool, gc: Option<&ConntrackGcMetrics>) -> (Metrics, Instruments) {
    let monitor = Arc::new(Monitor::new(16));
    monitor.push(&[drop_event()], 0);
    let instruments = Instruments::default();
    let sources = Sources {
        cp: control_plane(),
        monitor,
        datapath: Some(Arc::new(FakeView { broken })),
    };
    (Metrics::new(sources, &instruments, gc), instruments)
}

/// The value of the sample line `name{labels}` (exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_value_read_at_scrape_time() {
    let (m, instruments) = metrics(false, None);
    instruments.observe_import(true, Duration::from_millis(3));
    let text = m.encode(false).unwrap();
    for (series, want) in [
        (
            r#"pilus_drop_packets_total{reason="DROP_POLICY",direction="ingress"}"#,
            3.0,
        ),
        (
            r#"pilus_drop_bytes_total{reason="DROP_POLICY",direction="ingress"}"#,
            180.0,
        ),
        // Known reasons exist before their first drop.
        (
            r#"pilus_drop_packets_total{reason="DROP_POLICY_DENY",direction="egress"}"#,
            0.0,
        ),
        (
            r#"pilus_drop_packets_total{reason="UNKNOWN_200",direction="egress"}"#,
            1.0,
        ),
        (r#"pilus_forward_packets_total{direction="egress"}"#, 10.0),
        (r#"pilus_forward_bytes_total{direction="egress"}"#, 1000.0),
        (r#"pilus_forward_packets_total{direction="ingress"}"#, 0.0),
        ("pilus_datapath_events_lost_total", 2.0),
        (r#"pilus_datapath_events_total{type="drop"}"#, 1.0),
        (r#"pilus_bpf_map_entries{map="pilus_frag4"}"#, 8192.0),
        (r#"pilus_bpf_map_max_entries{map="pilus_ct4"}"#, 262144.0),
        (r#"pilus_bpf_map_pressure_ratio{map="pilus_frag4"}"#, 1.0),
        (r#"pilus_conntrack_entries{protocol="tcp"}"#, 4.0),
        (r#"pilus_conntrack_entries{protocol="udp"}"#, 1.0),
        (r#"pilus_conntrack_entries{protocol="icmp"}"#, 0.0),
        ("pilus_endpoints", 1.0),
        ("pilus_policies", 0.0),
        (
            r#"pilus_policy_import_duration_seconds_count{outcome="applied"}"#,
            1.0,
        ),
        (
            r#"pilus_policy_import_duration_seconds_count{outcome="refused"}"#,
            0.0,
        ),
        (
            r#"pilus_policy_import_duration_seconds_bucket{outcome="applied",le="0.004"}"#,
            1.0,
        ),
        (r#"pilus_metrics_read_errors_total{source="maps"}"#, 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in:\n{text}");
    }
    assert!(sample(&text, "pilus_identities").unwrap() >= 1.0);
    assert!(sample(&text, "pilus_policy_revision").is_some());
    // A node on its own has no etcd to report on.
    assert!(!text.contains("pilus_etcd_connected"), "{text}");
    // Every family is pilus_..., with HELP and TYPE, and no sample comes
    // without its family's TYPE.
    let mut typed = Vec::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(name.starts_with("pilus_"), "{l}");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
            typed.push(name.to_string());
        } else if !l.starts_with('#') {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(
                typed.iter().any(|t| name == t
                    || name
                        .strip_prefix(t.as_str())
                        .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))),
                "{name} has no TYPE"
            );
        }
    }
}

#[test]
fn a_failed_read_is_left_out_and_counted() {
    let (m, _) = metrics(true, None);
    m.encode(false).unwrap();
    let text = m.encode(false).unwrap();
    assert!(!text.contains("pilus_drop_packets_total{"), "{text}");
    assert!(!text.contains("pilus_bpf_map_entries{"), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"pilus_metrics_read_errors_total{source="counters"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, r#"pilus_metrics_read_errors_total{source="maps"}"#),
        Some(2.0)
    );
    // The control plane's part is still there.
    assert_eq!(sample(&text, "pilus_endpoints"), Some(1.0));
}

#[test]
fn the_conntrack_gc_hook_exports_its_runs() {
    let gc = ConntrackGcMetrics::default();
    let (m, _) = metrics(false, Some(&gc));
    gc.record_run(7, 4, Duration::from_millis(2));
    let text = m.encode(true).unwrap();
    assert_eq!(
        sample(&text, "pilus_nat_gc_deleted_entries_total"),
        Some(4.0)
    );
    assert_eq!(sample(&text, "pilus_conntrack_gc_runs_total"), Some(1.0));
    assert_eq!(
        sample(&text, "pilus_conntrack_gc_deleted_entries_total"),
        Some(7.0)
    );
    assert_eq!(
        sample(&text, "pilus_conntrack_gc_duration_seconds_count"),
        Some(1.0)
    );
    let (none, _) = metrics(false, None);
    assert!(!none.encode(true).unwrap().contains("conntrack_gc"));
}

async fn get(app: axum::Router, accept: Option<&str>) -> (StatusCode, String, String) {
    let mut req = Request::get("/metrics");
    if let Some(a) = accept {
        req = req.header(header::ACCEPT, a);
    }
    let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let kind = resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, kind, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn both_formats_on_get_metrics() {
    let (m, _) = metrics(false, None);
    let app = metrics::router(Arc::new(m));
    let (status, kind, text) = get(app.clone(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kind, metrics::PROMETHEUS_TEXT);
    assert!(
        text.contains("# TYPE pilus_drop_packets_total counter"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, kind, text) = get(app, Some(prometheus_accept)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kind, metrics::OPENMETRICS);
    assert!(text.contains("# TYPE pilus_drop_packets counter"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}
