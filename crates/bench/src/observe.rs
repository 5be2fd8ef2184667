//! The cost of observability (issue 12): pod-to-pod TCP_RR and TCP_STREAM
//! on one node through Pilus with the monitor's aggregation at none,
//! medium and maximum (no monitor client attached), and at none with a
//! `pilus monitor -f` client attached, against the same pods with trace
//! events compiled out of the datapath and against bare veth routing.
//!
//! Every configuration is up at once — a one-node lab whose aggregation is
//! changed live, a one-node lab started with `--no-trace-events`, and three
//! namespaces routed by the kernel — and measured in the same run, in
//! rounds whose order rotates, so drift of a shared machine spreads over
//! all of them. Ratios are paired within a round, then the median is taken.
//!
//! TCP_RR and TCP_STREAM are the load generators of `pilus bench traffic`
//! ([`crate::load`]): client and server threads `setns`'d into their pods,
//! each pinned to a CPU of its own, a warm-up, then a timed window. Each
//! measurement also has the CPU time both threads spent (their thread CPU
//! clocks; a veth hands its packet to the receiver on the sender's CPU, tc
//! programs included, so that is where the datapath's work is charged):
//! per transaction and per MiB it says what observability costs even
//! where a rate does not — one ping-pong connection's rate on a VM swings
//! with the vCPUs' idle wake-ups far more than any program's cost.

use crate::{
    error::Context,
    load::{self, Ends, Measured, Pinning, Test, Timing},
    Error,
};
use pilus_api_types::{paths, MonitorConfig, MonitorConfigUpdate};
use pilus_lab::{Lab, LabError, Paths, Plan};
use pilus_netns::{veth_pair, ChildGuard, NetNs};
use serde::Serialize;
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

/// The labs' namespace prefixes and the bare setup's.
pub const PREFIXES: [&str; 3] = ["pbobsa", "pbobsb", "pbobsbare"];
/// The first part of each measurement, not counted.
const WARMUP: Duration = Duration::from_millis(300);

#[derive(Clone, Debug)]
pub struct Options {
    /// Where pilusd, pilus-cni and pilus are.
    pub bin_dir: PathBuf,
    pub rounds: u32,
    /// Seconds of each measurement.
    pub seconds: u32,
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Config {
    /// Three namespaces, veths, the kernel's routing; no BPF.
    Bare,
    /// Pilus with trace events compiled out (drops and denials only).
    CompiledOut,
    AggregationNone,
    /// At none, with `pilus monitor -f` reading every event.
    AggregationNoneWithClient,
    AggregationMedium,
    AggregationMaximum,
}

impl Config {
    pub const ALL: [Config; 6] = [
        Config::Bare,
        Config::CompiledOut,
        Config::AggregationNone,
        Config::AggregationNoneWithClient,
        Config::AggregationMedium,
        Config::AggregationMaximum,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Config::Bare => "bare veth routing",
            Config::CompiledOut => "pilus, trace events compiled out",
            Config::AggregationNone => "pilus, aggregation none",
            Config::AggregationNoneWithClient => "pilus, none + pilus monitor -f",
            Config::AggregationMedium => "pilus, aggregation medium",
            Config::AggregationMaximum => "pilus, aggregation maximum",
        }
    }

    /// The aggregation level it sets on the lab with events compiled in.
    fn level(self) -> Option<&'static str> {
        match self {
            Config::AggregationNone | Config::AggregationNoneWithClient => Some("none"),
            Config::AggregationMedium => Some("medium"),
            Config::AggregationMaximum => Some("maximum"),
            _ => None,
        }
    }
}

/// One configuration's numbers: each round's, their medians, and the
/// medians of the ratios paired within each round.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub config: Config,
    pub name: &'static str,
    /// Transactions per second, per round.
    pub rr_tps: Vec<f64>,
    /// Gbit/s, per round.
    pub stream_gbps: Vec<f64>,
    /// CPU time of both ends per transaction (µs), per round.
    pub rr_cpu_us: Vec<f64>,
    /// CPU time of both ends per MiB received (µs), per round.
    pub stream_cpu_us: Vec<f64>,
    pub rr_median: f64,
    pub stream_median: f64,
    pub rr_cpu_median: f64,
    pub stream_cpu_median: f64,
    /// Against trace events compiled out (1.0: the same).
    pub rr_vs_compiled_out: f64,
    pub stream_vs_compiled_out: f64,
    /// Against bare veth routing.
    pub rr_vs_bare: f64,
    pub stream_vs_bare: f64,
    /// CPU per transaction / per MiB against trace events compiled out
    /// (1.10: 10 % more CPU for the same work).
    pub rr_cpu_vs_compiled_out: f64,
    pub stream_cpu_vs_compiled_out: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub rounds: u32,
    pub seconds: u32,
    /// `/proc/loadavg` before and after (the machine is shared).
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub rows: Vec<Row>,
    /// What medium costs against trace events compiled out, in percent of
    /// the TCP_RR rate and of the STREAM throughput (target: <= 3).
    pub medium_rr_cost_pct: f64,
    pub medium_stream_cost_pct: f64,
    /// What medium costs in CPU per transaction and per MiB against trace
    /// events compiled out, in percent (not part of the target: the rates
    /// are; this says what a rate on a noisy machine may hide).
    pub medium_rr_cpu_cost_pct: f64,
    pub medium_stream_cpu_cost_pct: f64,
}

impl Report {
    pub fn target_met(&self) -> bool {
        self.medium_rr_cost_pct <= 3.0 && self.medium_stream_cost_pct <= 3.0
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Removes a lab however the benchmark ends.
struct LabDown(Paths);

impl Drop for LabDown {
    fn drop(&mut self) {
        if let Err(e) = Lab::down(&self.0) {
            tracing::warn!(error = %e, "removing the observability benchmark's lab");
        }
    }
}

fn lab_paths(opts: &Options, prefix: &str) -> Paths {
    Paths {
        dir: std::env::temp_dir().join(format!("pilus-bench-{prefix}")),
        pins: PathBuf::from(format!("/sys/fs/bpf/pilus-bench-{prefix}")),
        bin_dir: opts.bin_dir.clone(),
        prefix: prefix.into(),
    }
}

/// A one-node lab with two pods (frontend-1, backend-1).
fn lab(opts: &Options, prefix: &str, trace_events: bool) -> Result<(Lab, LabDown, Ends), Error> {
    let paths = lab_paths(opts, prefix);
    Lab::down(&paths).context("removing a killed run's lab")?;
    let down = LabDown(paths.clone());
    let mut plan = Plan::new(prefix, 1, 2)
        .map_err(LabError::from)
        .context("planning the lab")?;
    if !trace_events {
        plan = plan.without_trace_events();
    }
    let lab = Lab::up(paths, plan).context("bringing the lab up")?;
    let (client, server) = (
        lab.pod("frontend-1").context("the client pod")?,
        lab.pod("backend-1").context("the server pod")?,
    );
    let pair = Ends {
        client: Path::new("/run/netns").join(&client.netns),
        server: Path::new("/run/netns").join(&server.netns),
        server_ip: server.ip,
    };
    Ok((lab, down, pair))
}

/// Bare veth routing: a node namespace routing between two pod namespaces,
/// each on a veth with a /24 of its own (198.18.250.0/24, 198.18.251.0/24).
struct Bare {
    // Dropped (deleted) in this order; the veths go with them.
    pods: [NetNs; 2],
    _node: NetNs,
}

impl Bare {
    fn up() -> Result<Bare, Error> {
        pilus_netns::remove_stale(PREFIXES[2]).context("removing a killed run's namespaces")?;
        let what = "building the bare veth setup";
        let node = NetNs::new(PREFIXES[2]).context(what)?;
        let pods = [
            NetNs::new(PREFIXES[2]).context(what)?,
            NetNs::new(PREFIXES[2]).context(what)?,
        ];
        node.sysctl("net.ipv4.ip_forward", "1").context(what)?;
        for (i, pod) in pods.iter().enumerate() {
            let net = 250 + i;
            let veth = format!("v{i}");
            veth_pair(&node, &veth, pod, "eth0").context(what)?;
            node.ip(&["addr", "add", &format!("198.18.{net}.1/24"), "dev", &veth])
                .context(what)?;
            pod.ip(&["addr", "add", &format!("198.18.{net}.2/24"), "dev", "eth0"])
                .context(what)?;
            pod.ip(&["route", "add", "default", "via", &format!("198.18.{net}.1")])
                .context(what)?;
        }
        Ok(Bare { pods, _node: node })
    }

    fn pair(&self) -> Ends {
        Ends {
            client: self.pods[0].path(),
            server: self.pods[1].path(),
            server_ip: Ipv4Addr::new(198, 18, 251, 2),
        }
    }
}

/// One measurement of `test` between `ends`: its rate (tx/s or Gbit/s)
/// and the CPU time both ends spent per unit (µs per tx or per MiB).
fn measure(test: Test, ends: &Ends, seconds: u32) -> Result<(f64, f64), Error> {
    let timing = Timing {
        warmup: WARMUP,
        duration: Duration::from_secs(u64::from(seconds)),
    };
    let m: Measured = load::run(test, ends, timing, Pinning::split())?;
    Ok((m.rate(), m.cpu_per_unit(m.client_cpu_s + m.server_cpu_s)))
}

fn set_level(lab: &Lab, level: &str) -> Result<(), Error> {
    let c: MonitorConfig = lab
        .client("node-1")
        .post_json(
            paths::MONITOR_CONFIG,
            &MonitorConfigUpdate {
                aggregation: Some(level.into()),
                ..Default::default()
            },
        )
        .context("setting the aggregation level")?;
    if c.aggregation != level {
        return Err(Error::Unexpected {
            what: format!(
                "asked for aggregation {level}, the agent has {}",
                c.aggregation
            ),
        });
    }
    Ok(())
}

/// Runs the benchmark. Needs root and the workspace's binaries in
/// `opts.bin_dir`.
pub fn run(opts: &Options) -> Result<Report, Error> {
    crate::require_root("observe", "namespaces, eBPF")?;
    if opts.rounds == 0 || opts.seconds == 0 {
        return Err(Error::Options {
            option: "rounds/seconds",
            reason: "must be at least 1".into(),
        });
    }
    let loadavg_before = loadavg();
    tracing::info!(loadavg = %loadavg_before, "bringing up two one-node labs and the bare veth setup");
    let (with_events, _down_a, pilus_pair) = lab(opts, PREFIXES[0], true)?;
    let (_without, _down_b, floor_pair) = lab(opts, PREFIXES[1], false)?;
    let bare = Bare::up()?;
    let bare_pair = bare.pair();
    let pilus_cli = opts.bin_dir.join("pilus");
    let socket = with_events
        .node("node-1")
        .map(|n| n.socket.clone())
        .ok_or_else(|| Error::Unexpected {
            what: "the lab has no node-1".into(),
        })?;

    let mut rr: Vec<Vec<f64>> = vec![Vec::new(); Config::ALL.len()];
    let mut stream: Vec<Vec<f64>> = vec![Vec::new(); Config::ALL.len()];
    let mut rr_cpu: Vec<Vec<f64>> = vec![Vec::new(); Config::ALL.len()];
    let mut stream_cpu: Vec<Vec<f64>> = vec![Vec::new(); Config::ALL.len()];
    for round in 0..opts.rounds as usize {
        for k in 0..Config::ALL.len() {
            let i = (k + round) % Config::ALL.len();
            let config = Config::ALL[i];
            let pair = match config {
                Config::Bare => &bare_pair,
                Config::CompiledOut => &floor_pair,
                _ => &pilus_pair,
            };
            if let Some(level) = config.level() {
                set_level(&with_events, level)?;
            }
            let _client = match config {
                Config::AggregationNoneWithClient => {
                    let mut c = Command::new(&pilus_cli);
                    c.arg("--socket")
                        .arg(&socket)
                        .args(["monitor", "-f"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    Some(ChildGuard::spawn(c).context("starting pilus monitor -f")?)
                }
                _ => None,
            };
            let (t, t_cpu) = measure(Test::TcpRr, pair, opts.seconds)?;
            let (g, g_cpu) = measure(Test::TcpStream, pair, opts.seconds)?;
            tracing::info!(
                round,
                config = config.name(),
                tcp_rr = t,
                rr_cpu_us = t_cpu,
                stream_gbps = g,
                stream_cpu_us_per_mib = g_cpu,
                "measured"
            );
            rr[i].push(t);
            stream[i].push(g);
            rr_cpu[i].push(t_cpu);
            stream_cpu[i].push(g_cpu);
        }
    }
    let idx = |c: Config| Config::ALL.iter().position(|x| *x == c).unwrap_or(0);
    let paired = |v: &[f64], base: &[f64]| {
        median(v.iter().zip(base).map(|(a, b)| a / b.max(1e-9)).collect())
    };
    let (floor, bare_i) = (idx(Config::CompiledOut), idx(Config::Bare));
    let rows: Vec<Row> = Config::ALL
        .iter()
        .enumerate()
        .map(|(i, &config)| Row {
            config,
            name: config.name(),
            rr_median: median(rr[i].clone()),
            stream_median: median(stream[i].clone()),
            rr_cpu_median: median(rr_cpu[i].clone()),
            stream_cpu_median: median(stream_cpu[i].clone()),
            rr_cpu_vs_compiled_out: paired(&rr_cpu[i], &rr_cpu[floor]),
            stream_cpu_vs_compiled_out: paired(&stream_cpu[i], &stream_cpu[floor]),
            rr_vs_compiled_out: paired(&rr[i], &rr[floor]),
            stream_vs_compiled_out: paired(&stream[i], &stream[floor]),
            rr_vs_bare: paired(&rr[i], &rr[bare_i]),
            stream_vs_bare: paired(&stream[i], &stream[bare_i]),
            rr_tps: rr[i].clone(),
            stream_gbps: stream[i].clone(),
            rr_cpu_us: rr_cpu[i].clone(),
            stream_cpu_us: stream_cpu[i].clone(),
        })
        .collect();
    let medium = &rows[idx(Config::AggregationMedium)];
    let cost = |ratio: f64| (1.0 - ratio) * 100.0;
    Ok(Report {
        rounds: opts.rounds,
        seconds: opts.seconds,
        loadavg_before,
        loadavg_after: loadavg(),
        medium_rr_cost_pct: cost(medium.rr_vs_compiled_out),
        medium_stream_cost_pct: cost(medium.stream_vs_compiled_out),
        medium_rr_cpu_cost_pct: (medium.rr_cpu_vs_compiled_out - 1.0) * 100.0,
        medium_stream_cpu_cost_pct: (medium.stream_cpu_vs_compiled_out - 1.0) * 100.0,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
