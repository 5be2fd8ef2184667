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
//! TCP_RR is a loop of our own: one connection, one byte each way per
//! transaction, TCP_NODELAY, the client and server threads `setns`'d into
//! their pods (not pinned: the machine has two CPUs). TCP_STREAM is
//! iperf3's (Debian's), one stream, its receiver's rate.

use crate::{error::Context, Error};
use pilus_api_types::{paths, MonitorConfig, MonitorConfigUpdate};
use pilus_lab::{Lab, LabError, Paths, Plan};
use pilus_netns::{veth_pair, ChildGuard, NetNs};
use serde::Serialize;
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The labs' namespace prefixes and the bare setup's.
pub const PREFIXES: [&str; 3] = ["pbobsa", "pbobsb", "pbobsbare"];
const RR_PORT: u16 = 7000;
const STREAM_PORT: u16 = 5201;
/// The first part of each TCP_RR measurement, not counted.
const RR_WARMUP: Duration = Duration::from_millis(300);

#[derive(Clone, Debug)]
pub struct Options {
    /// Where pilusd, pilus-cni and pilus are.
    pub bin_dir: PathBuf,
    /// The iperf3 binary.
    pub iperf3: PathBuf,
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
    pub rr_median: f64,
    pub stream_median: f64,
    /// Against trace events compiled out (1.0: the same).
    pub rr_vs_compiled_out: f64,
    pub stream_vs_compiled_out: f64,
    /// Against bare veth routing.
    pub rr_vs_bare: f64,
    pub stream_vs_bare: f64,
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

/// A pair of pods: where the client and the server run.
#[derive(Clone, Debug)]
struct Pair {
    client_ns: PathBuf,
    server_ns: PathBuf,
    server_ip: Ipv4Addr,
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
fn lab(opts: &Options, prefix: &str, trace_events: bool) -> Result<(Lab, LabDown, Pair), Error> {
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
    let pair = Pair {
        client_ns: Path::new("/run/netns").join(&client.netns),
        server_ns: Path::new("/run/netns").join(&server.netns),
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

    fn pair(&self) -> Pair {
        Pair {
            client_ns: self.pods[0].path(),
            server_ns: self.pods[1].path(),
            server_ip: Ipv4Addr::new(198, 18, 251, 2),
        }
    }
}

/// Runs `f` on a new thread inside the namespace at `ns`.
fn in_ns<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::thread::JoinHandle<Result<T, Error>> {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let _inside =
            pilus_netlink::netns::enter_path(&ns).context(format!("entering {}", ns.display()))?;
        f().context(format!("TCP_RR in {}", ns.display()))
    })
}

/// TCP_RR: transactions per second over `seconds` (after a warm-up).
fn tcp_rr(pair: &Pair, seconds: u32) -> Result<f64, Error> {
    let listening = std::sync::Arc::new(std::sync::Barrier::new(2));
    let ready = listening.clone();
    let server = in_ns(&pair.server_ns, move || {
        let l = TcpListener::bind(("0.0.0.0", RR_PORT))?;
        ready.wait();
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        loop {
            match s.read(&mut b)? {
                0 => return Ok(()),
                _ => s.write_all(&b)?,
            }
        }
    });
    listening.wait();
    let dst = SocketAddrV4::new(pair.server_ip, RR_PORT);
    let run = Duration::from_secs(u64::from(seconds));
    let client = in_ns(&pair.client_ns, move || {
        let mut s = TcpStream::connect_timeout(&dst.into(), Duration::from_secs(3))?;
        s.set_nodelay(true)?;
        let mut b = [1u8; 1];
        let start = Instant::now();
        let (mut counted, mut since) = (0u64, None);
        while start.elapsed() < RR_WARMUP + run {
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            match since {
                None if start.elapsed() >= RR_WARMUP => since = Some(Instant::now()),
                Some(_) => counted += 1,
                None => {}
            }
        }
        let took = since.map_or(Duration::ZERO, |t| t.elapsed());
        Ok(counted as f64 / took.as_secs_f64().max(1e-9))
    });
    let tps = join(client)?;
    join(server)?;
    Ok(tps)
}

fn join<T>(h: std::thread::JoinHandle<Result<T, Error>>) -> Result<T, Error> {
    h.join().map_err(|_| Error::Unexpected {
        what: "a TCP_RR thread panicked".into(),
    })?
}

fn iperf3_in(ns: &Path, iperf3: &Path) -> Command {
    let name = ns
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &name]).arg(iperf3);
    c
}

/// TCP_STREAM: iperf3's receiver rate over `seconds`, in Gbit/s.
fn tcp_stream(pair: &Pair, iperf3: &Path, seconds: u32) -> Result<f64, Error> {
    let mut server = iperf3_in(&pair.server_ns, iperf3);
    server
        .args(["-s", "-1", "-p", &STREAM_PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = ChildGuard::spawn(server).context("starting the iperf3 server")?;
    let mut last = String::new();
    // The server needs a moment to listen.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let out = iperf3_in(&pair.client_ns, iperf3)
            .args([
                "-c",
                &pair.server_ip.to_string(),
                "-p",
                &STREAM_PORT.to_string(),
                "-t",
                &seconds.to_string(),
                "-J",
            ])
            .output()
            .context("running the iperf3 client")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Unexpected {
                    what: format!("iperf3's report does not parse ({e}): {text}"),
                })?;
            let bps = v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .ok_or_else(|| Error::Unexpected {
                    what: format!("no end.sum_received.bits_per_second in iperf3's report: {text}"),
                })?;
            return Ok(bps / 1e9);
        }
        last = text;
    }
    Err(Error::Unexpected {
        what: format!("iperf3 never connected: {last}"),
    })
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

/// Runs the benchmark. Needs root, iperf3, and the workspace's binaries in
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
            let t = tcp_rr(pair, opts.seconds)?;
            let g = tcp_stream(pair, &opts.iperf3, opts.seconds)?;
            tracing::info!(
                round,
                config = config.name(),
                tcp_rr = t,
                stream_gbps = g,
                "measured"
            );
            rr[i].push(t);
            stream[i].push(g);
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
            rr_vs_compiled_out: paired(&rr[i], &rr[floor]),
            stream_vs_compiled_out: paired(&stream[i], &stream[floor]),
            rr_vs_bare: paired(&rr[i], &rr[bare_i]),
            stream_vs_bare: paired(&stream[i], &stream[bare_i]),
            rr_tps: rr[i].clone(),
            stream_gbps: stream[i].clone(),
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
