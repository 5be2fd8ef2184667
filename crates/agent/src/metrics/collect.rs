//! The scrape-time metrics: read when Prometheus asks, never kept.
//!
//! A read that fails (a map gone, a syscall refused) leaves its families
//! out of that scrape — Prometheus then marks the series stale rather than
//! showing a value that was not read — and counts one
//! `pilus_metrics_read_errors_total`.

use super::Sources;
use crate::monitor::EventTotals;
use pilus_abi::{
    consts::{DIR_EGRESS, DIR_INGRESS, METRIC_FORWARDED},
    DropReason, DROP_REASONS,
};
use pilus_api_types::Status;
use pilus_datapath::inspect::{Counters, Usage};
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};
use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};

/// The collector pilusd registers.
pub struct Collector {
    sources: Sources,
    /// Failed reads of the datapath's counters and of its maps.
    read_errors: [AtomicU64; 2],
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collector").finish_non_exhaustive()
    }
}

const READ_SOURCES: [&str; 2] = ["counters", "maps"];

impl Collector {
    pub fn new(sources: Sources) -> Collector {
        Collector {
            sources,
            read_errors: Default::default(),
        }
    }

    fn failed(&self, source: usize, e: &pilus_datapath::Error) {
        self.read_errors[source].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            source = READ_SOURCES[source],
            error = %pilus_datapath::error_chain(e),
            "reading the datapath for the metrics failed"
        );
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let status = self.sources.cp.status();
        encode_status(&mut enc, &status)?;
        encode_events(&mut enc, &self.sources.monitor.totals())?;
        if let Some(dp) = &self.sources.datapath {
            match dp.counters() {
                Ok(c) => encode_counters(&mut enc, &c)?,
                Err(e) => self.failed(0, &e),
            }
            match dp.usage() {
                Ok(u) => encode_usage(&mut enc, &u)?,
                Err(e) => self.failed(1, &e),
            }
        }
        counter(
            &mut enc,
            "pilus_metrics_read_errors",
            "Scrapes that could not read a part of the datapath (source: counters, maps); \
             that part was left out of the scrape",
            READ_SOURCES
                .iter()
                .zip(&self.read_errors)
                .map(|(s, n)| ([("source", *s)], n.load(Ordering::Relaxed))),
        )
    }
}

/// A family of `kind`: one sample per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in samples {
        v.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let samples = samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
    family(enc, name, help, MetricType::Counter, samples)
}

fn gauge<L: EncodeLabelSet, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let samples = samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
    family(enc, name, help, MetricType::Gauge, samples)
}

/// A gauge without labels.
fn gauge1(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A counter without labels.
fn counter1(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn direction(d: u8) -> &'static str {
    match d {
        DIR_INGRESS => "ingress",
        DIR_EGRESS => "egress",
        _ => "unknown",
    }
}

/// A drop code's stable name (`DROP_POLICY`), or `UNKNOWN_<code>` for a
/// code this build has no name for.
fn reason(code: u8) -> String {
    DropReason::from_code(code).map_or_else(|| format!("UNKNOWN_{code}"), |r| r.name.to_string())
}

fn protocol(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        n => n.to_string(),
    }
}

/// The control plane's counts.
pub fn encode_status(enc: &mut DescriptorEncoder, s: &Status) -> fmt::Result {
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    gauge1(
        enc,
        "pilus_endpoints",
        "Endpoints (pods) on this node",
        n(s.endpoints),
    )?;
    gauge1(
        enc,
        "pilus_identities",
        "Security identities this node knows (reserved, cluster and CIDR)",
        n(s.identities),
    )?;
    gauge1(
        enc,
        "pilus_policies",
        "Network policies imported",
        n(s.policies),
    )?;
    let rev = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    gauge1(
        enc,
        "pilus_policy_revision",
        "The policy revision: it grows with every change to policies, labels or identities",
        rev(s.revision),
    )?;
    gauge1(
        enc,
        "pilus_policy_enforced_revision",
        "The policy revision the datapath's maps enforce",
        rev(s.enforced_revision),
    )?;
    if let Some(c) = &s.cluster {
        gauge1(
            enc,
            "pilus_etcd_connected",
            "Whether the cluster store (etcd) is reachable: 1 connected, 0 unreachable or not yet \
             known",
            i64::from(c.store == "connected"),
        )?;
        gauge1(
            enc,
            "pilus_cluster_nodes",
            "Nodes of the cluster this node knows, itself included",
            n(c.nodes),
        )?;
    }
    Ok(())
}

/// The events the monitor read from the ring buffer.
pub fn encode_events(enc: &mut DescriptorEncoder, t: &EventTotals) -> fmt::Result {
    counter(
        enc,
        "pilus_datapath_events",
        "Events read from the datapath's ring buffer since the agent started, by type (drop, \
         trace, policy-verdict, debug, capture, unknown)",
        [
            ("drop", t.drops),
            ("trace", t.traces),
            ("policy-verdict", t.verdicts),
            ("debug", t.debug),
            ("capture", t.captures),
            ("unknown", t.other),
        ]
        .map(|(kind, v)| ([("type", kind)], v)),
    )
}

/// The datapath's verdict counters and lost events.
pub fn encode_counters(enc: &mut DescriptorEncoder, c: &Counters) -> fmt::Result {
    let forwarded: Vec<_> = [DIR_INGRESS, DIR_EGRESS]
        .iter()
        .map(|&d| {
            let (p, b) = c
                .verdicts
                .iter()
                .filter(|v| v.reason == METRIC_FORWARDED && v.direction == d)
                .fold((0, 0), |(p, b), v| (p + v.packets, b + v.bytes));
            (d, p, b)
        })
        .collect();
    counter(
        enc,
        "pilus_forward_packets",
        "Packets the datapath forwarded, by direction (ingress: towards a pod)",
        forwarded
            .iter()
            .map(|&(d, p, _)| ([("direction", direction(d))], p)),
    )?;
    counter(
        enc,
        "pilus_forward_bytes",
        "Bytes of the packets the datapath forwarded, by direction",
        forwarded
            .iter()
            .map(|&(d, _, b)| ([("direction", direction(d))], b)),
    )?;
    // Every known reason in both directions, zeros included: a series
    // that exists before its first drop lets `rate()` and `increase()` see
    // that drop. Codes this build has no name for only when counted.
    let count = |code: u8, dir: u8| {
        c.verdicts
            .iter()
            .find(|v| v.reason == code && v.direction == dir)
            .map_or((0, 0), |v| (v.packets, v.bytes))
    };
    let mut codes: Vec<u8> = DROP_REASONS.iter().map(|r| r.code).collect();
    for v in &c.verdicts {
        if v.reason != METRIC_FORWARDED && !codes.contains(&v.reason) {
            codes.push(v.reason);
        }
    }
    let drops: Vec<_> = codes
        .iter()
        .flat_map(|&code| [DIR_INGRESS, DIR_EGRESS].map(|d| (code, d)))
        .map(|(code, d)| {
            let (p, b) = count(code, d);
            (reason(code), direction(d), p, b)
        })
        .collect();
    counter(
        enc,
        "pilus_drop_packets",
        "Packets the datapath dropped, by reason (the DROP_* code's name) and direction",
        drops
            .iter()
            .map(|(r, d, p, _)| ([("reason", r.as_str()), ("direction", d)], *p)),
    )?;
    counter(
        enc,
        "pilus_drop_bytes",
        "Bytes of the packets the datapath dropped, by reason and direction",
        drops
            .iter()
            .map(|(r, d, _, b)| ([("reason", r.as_str()), ("direction", d)], *b)),
    )?;
    counter1(
        enc,
        "pilus_datapath_events_lost",
        "Events the datapath could not put on the ring buffer because it was full (the reader \
         fell behind); counted since the maps were created",
        c.events_lost,
    )
}

/// How full the maps are, and conntrack by protocol.
pub fn encode_usage(enc: &mut DescriptorEncoder, u: &Usage) -> fmt::Result {
    gauge(
        enc,
        "pilus_bpf_map_entries",
        "Entries in each hash, LRU and LPM map of the datapath",
        u.maps
            .iter()
            .map(|m| ([("map", m.name.as_str())], m.entries)),
    )?;
    gauge(
        enc,
        "pilus_bpf_map_max_entries",
        "The most entries each map can hold",
        u.maps
            .iter()
            .map(|m| ([("map", m.name.as_str())], u64::from(m.max_entries))),
    )?;
    gauge(
        enc,
        "pilus_bpf_map_pressure_ratio",
        "Entries over the most each map can hold (1: full; an LRU map then evicts, another \
         refuses writes)",
        u.maps
            .iter()
            .map(|m| ([("map", m.name.as_str())], m.pressure())),
    )?;
    // TCP, UDP and ICMP always, at 0 when there are none.
    let mut by_proto = u.conntrack.clone();
    for p in [1, 6, 17] {
        by_proto.entry(p).or_insert(0);
    }
    let ct: Vec<_> = by_proto.iter().map(|(&p, &n)| (protocol(p), n)).collect();
    gauge(
        enc,
        "pilus_conntrack_entries",
        "Connection tracking entries, by IP protocol",
        ct.iter().map(|(p, n)| ([("protocol", p.as_str())], *n)),
    )
}
