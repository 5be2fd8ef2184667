//! `pilus bench all`: every benchmark in one run, one after another —
//! traffic first (the longest and the one most disturbed by other work),
//! then the datapath's ns/packet, CNI, policy and memory, the API, and the
//! agent's start with endpoints restored — with a description of the
//! machine, its load before and after, and the target table: every target
//! of issues 13 and 10 with what was measured and whether it is met.

use crate::{
    api, cni, datapath,
    load::Test,
    machine, policy, restart,
    traffic::{self, summary::paired_ratios, Config, Topology},
    Error,
};
use serde::Serialize;
use std::{path::PathBuf, time::Duration, time::Instant};

#[derive(Clone, Debug, Serialize)]
pub struct Options {
    pub quick: bool,
    pub traffic: traffic::Options,
    pub datapath: datapath::Options,
    pub cni: cni::Options,
    pub policy: policy::Options,
    pub api: api::Options,
    pub restart: restart::Options,
}

impl Options {
    /// Every benchmark at the sizes its targets name.
    pub fn full(bin_dir: PathBuf) -> Options {
        let pilusd = bin_dir.join("pilusd");
        Options {
            quick: false,
            traffic: traffic::Options::full(bin_dir.clone()),
            datapath: datapath::Options::default(),
            cni: cni::Options { pods: 100, bin_dir },
            policy: policy::Options {
                endpoints: 1000,
                rules: 1000,
                apps: 100,
                changes: 300,
                pilusd: pilusd.clone(),
            },
            api: api::Options {
                requests: 2000,
                half_open: 1000,
                phase: Duration::from_secs(12),
                pilusd: pilusd.clone(),
            },
            restart: restart::Options {
                endpoints: 500,
                restarts: 5,
                pilusd,
            },
        }
    }

    /// A smoke run for CI: every benchmark, tiny; its numbers mean
    /// nothing.
    pub fn quick(bin_dir: PathBuf) -> Options {
        let pilusd = bin_dir.join("pilusd");
        Options {
            quick: true,
            traffic: traffic::Options::quick(bin_dir.clone()),
            datapath: datapath::Options {
                repeat: 1000,
                policy_entries: 100,
                repeat_only: false,
            },
            cni: cni::Options { pods: 3, bin_dir },
            policy: policy::Options {
                endpoints: 4,
                rules: 6,
                apps: 2,
                changes: 5,
                pilusd: pilusd.clone(),
            },
            api: api::Options {
                requests: 20,
                half_open: 20,
                phase: Duration::from_millis(300),
                pilusd: pilusd.clone(),
            },
            restart: restart::Options {
                endpoints: 4,
                restarts: 2,
                pilusd,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Met,
    Missed,
    NotMeasured,
}

/// One row of the target table.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub issue: u32,
    pub metric: &'static str,
    /// `>= 1.00`, `<= 50 ms`, ...
    pub target: String,
    pub measured: Option<f64>,
    /// The measured value as the table shows it, with its range.
    pub shown: String,
    pub verdict: Verdict,
    pub note: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub quick: bool,
    pub machine: machine::Machine,
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    pub seconds: f64,
    pub targets: Vec<Target>,
    pub traffic: traffic::Report,
    pub datapath: datapath::Report,
    pub cni: cni::Report,
    pub policy: policy::Report,
    pub api: api::Report,
    pub restart: restart::Report,
}

/// Runs everything. Needs what each benchmark needs (root, etcd,
/// iptables, the workspace's binaries).
pub fn run(opts: &Options) -> Result<Report, Error> {
    crate::require_root("all", "namespaces, eBPF")?;
    let machine = machine::describe();
    let load_before = machine::loadavg();
    let t = Instant::now();
    tracing::info!("traffic");
    let traffic = traffic::run(&opts.traffic)?;
    tracing::info!("datapath");
    let datapath = datapath::run(&opts.datapath)?;
    tracing::info!("cni");
    let cni = cni::run(&opts.cni)?;
    tracing::info!("policy");
    let policy = policy::run(&opts.policy)?;
    tracing::info!("api");
    let api = api::run(&opts.api)?;
    tracing::info!("restart");
    let restart = restart::run(&opts.restart)?;
    let mut r = Report {
        bench: "all",
        quick: opts.quick,
        machine,
        load_before,
        load_after: machine::loadavg(),
        seconds: crate::stats::round(t.elapsed().as_secs_f64(), 1),
        targets: Vec::new(),
        traffic,
        datapath,
        cni,
        policy,
        api,
        restart,
    };
    r.targets = targets(&r);
    Ok(r)
}

/// At least `min` (a ratio).
fn at_least(min: f64) -> impl Fn(f64) -> bool {
    move |x| x >= min
}

fn at_most(max: f64) -> impl Fn(f64) -> bool {
    move |x| x <= max
}

fn target(
    issue: u32,
    metric: &'static str,
    want: &str,
    measured: Option<(f64, String)>,
    ok: impl Fn(f64) -> bool,
    note: String,
) -> Target {
    match measured {
        Some((v, shown)) => Target {
            issue,
            metric,
            target: want.into(),
            measured: Some(v),
            shown,
            verdict: if ok(v) { Verdict::Met } else { Verdict::Missed },
            note,
        },
        None => Target {
            issue,
            metric,
            target: want.into(),
            measured: None,
            shown: "—".into(),
            verdict: Verdict::NotMeasured,
            note,
        },
    }
}

/// A traffic ratio of `cfg` against the baseline (or, with `against`,
/// against another configuration, paired round by round), as the target
/// table shows it, with the group's noise floor.
fn traffic_ratio(
    r: &traffic::Report,
    topo: Topology,
    test: Test,
    against: Option<Config>,
) -> (Option<(f64, String)>, String) {
    let Some(g) = r.group("main", topo, test) else {
        return (None, format!("{} {} not run", topo.name(), test.name()));
    };
    let Some(row) = g.row(Config::Pilus) else {
        return (None, "no pilus row".into());
    };
    let ratio = match against.and_then(|c| g.row(c)) {
        Some(other) => {
            let rates = |r: &traffic::Row| r.runs.iter().map(|x| x.rate).collect::<Vec<_>>();
            paired_ratios(&rates(row), &rates(other))
        }
        None => row.ratio,
    };
    let noise = g
        .noise
        .map(|n| {
            format!(
                "noise floor ±{:.1} % (middle half of the rounds; ±{:.1} % in the worst)",
                n.middle_reach_from_one_pct(),
                n.reach_from_one_pct()
            )
        })
        .unwrap_or_default();
    let within = g.noise.is_some_and(|n| {
        let reach = n.middle_reach_from_one_pct() / 100.0;
        (ratio.median - 1.0).abs() <= reach
    });
    let note = if within && against.is_none() {
        format!("{noise}: the difference from bare is within it")
    } else {
        noise
    };
    (
        Some((
            ratio.median,
            format!(
                "{:.3} [{:.3}–{:.3}] ({:.3}–{:.3})",
                ratio.median, ratio.p25, ratio.p75, ratio.min, ratio.max
            ),
        )),
        note,
    )
}

/// Every target row of issues 13 and 10, from what was measured.
pub fn targets(r: &Report) -> Vec<Target> {
    let t = &r.traffic;
    let mut v = Vec::new();
    let mut ratio_row = |issue, metric, want: &str, min, topo, test, against| {
        let (m, note) = traffic_ratio(t, topo, test, against);
        v.push(target(issue, metric, want, m, at_least(min), note));
    };
    ratio_row(
        13,
        "pod→pod TCP_RR rate, pilus / bare, same node",
        "≥ 1.00",
        1.0,
        Topology::SameNode,
        Test::TcpRr,
        None,
    );
    ratio_row(
        13,
        "pod→pod TCP_STREAM, pilus / bare, same node",
        "≥ 0.98",
        0.98,
        Topology::SameNode,
        Test::TcpStream,
        None,
    );
    ratio_row(
        13,
        "pod→pod TCP_CRR, pilus / bare, same node",
        "≥ 0.97",
        0.97,
        Topology::SameNode,
        Test::TcpCrr,
        None,
    );
    ratio_row(
        13,
        "pod→pod TCP_RR, pilus / iptables CNI with the same policy",
        "≥ 1.10",
        1.10,
        Topology::SameNode,
        Test::TcpRr,
        Some(Config::Iptables),
    );
    ratio_row(
        10,
        "two nodes TCP_RR, pilus tunnel / kernel VXLAN",
        "≥ 1.00",
        1.0,
        Topology::Tunnel,
        Test::TcpRr,
        None,
    );
    ratio_row(
        10,
        "two nodes TCP_STREAM, pilus tunnel / kernel VXLAN",
        "≥ 0.98",
        0.98,
        Topology::Tunnel,
        Test::TcpStream,
        None,
    );
    ratio_row(
        10,
        "two nodes TCP_RR, pilus direct / kernel routing",
        "≥ 1.00",
        1.0,
        Topology::Direct,
        Test::TcpRr,
        None,
    );
    ratio_row(
        10,
        "two nodes TCP_STREAM, pilus direct / kernel routing",
        "≥ 0.98",
        0.98,
        Topology::Direct,
        Test::TcpStream,
        None,
    );
    for metric in [
        "pod→service TCP_CRR at 100k services / at 1 service (≥ 0.95)",
        "pod→service TCP_CRR at 10k services, pilus / iptables (≥ 2)",
    ] {
        let (metric, want) = metric.rsplit_once(" (").expect("metric (target)");
        v.push(target(
            13,
            metric,
            want.trim_end_matches(')'),
            None,
            |_| false,
            format!("services: {}", traffic::SERVICES),
        ));
    }
    let est = r
        .datapath
        .cases
        .iter()
        .find(|c| c.method == "repeat" && c.name.starts_with("established"));
    v.push(target(
        13,
        "from-container established, ns/packet (test-run) / empty classifier",
        "≤ 3.0",
        est.map(|c| {
            (
                c.ratio_to_empty,
                format!("{:.2} ({:.1} ns/packet)", c.ratio_to_empty, c.ns_per_packet),
            )
        }),
        at_most(3.0),
        format!(
            "{} policy entries, repeat method",
            r.datapath.policy_entries
        ),
    ));
    v.push(target(
        13,
        "CNI ADD p99",
        "≤ 50 ms",
        Some((r.cni.add.p99_ms, format!("{:.2} ms", r.cni.add.p99_ms))),
        at_most(cni::TARGET_ADD_P99_MS),
        format!("{} pods; p50 {:.2} ms", r.cni.pods, r.cni.add.p50_ms),
    ));
    let p = &r.policy;
    v.push(target(
        13,
        "policy change → enforced p99, 1k endpoints",
        "≤ 10 ms",
        Some((
            p.one_rule_change.p99_ms,
            format!("{:.2} ms", p.one_rule_change.p99_ms),
        )),
        at_most(policy::TARGET_P99_MS),
        format!("{} endpoints, {} rules", p.endpoints, p.rules),
    ));
    v.push(target(
        13,
        "agent memory per endpoint",
        "≤ 2 KiB",
        Some((p.kib_per_endpoint, format!("{:.2} KiB", p.kib_per_endpoint))),
        at_most(policy::TARGET_KIB_PER_ENDPOINT),
        format!("RSS after {} endpoints, less before", p.endpoints),
    ));
    v
}
