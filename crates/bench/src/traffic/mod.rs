//! Real pod-to-pod traffic through every configuration, on the same
//! topology, in the same run: `pilus bench traffic`.
//!
//! Topologies and their configurations:
//! - **same node**: `bare` (veth pairs and kernel routing, no BPF, no
//!   iptables), `pilus` (pilusd and pilus-cni, an allow policy selecting
//!   both pods), `iptables` (kernel routing with per-pod policy chains for
//!   the same policy);
//! - **two nodes, tunnel**: `bare` is plain kernel VXLAN, `pilus` is its
//!   tunnel mode (a `pilus lab` cluster);
//! - **two nodes, direct routing**: `bare` is plain kernel routing on the
//!   underlay, `pilus` is its direct-routing mode.
//!
//! Every topology also measures `bare-again`: the baseline a second time
//! at another place in the round, whose ratio to `bare` is the noise
//! floor. All hosts exist at once; each round measures every
//! (topology, test) for every configuration, in an order rotated round by
//! round, so no configuration always runs first or after another. Each
//! measurement warms up on its own sockets before its window. Ratios are
//! paired within the round ([`summary`]).
//!
//! Phases: `main` (every topology and test, at the small policy and
//! endpoint sizes), then the scaling series on the same node — `policy`
//! (the server's policy entries / iptables rules at the large size) and
//! `endpoints` (filler endpoints up to the large size) — each interleaved
//! with `bare` again. Then the service series ([`services`]): pod to a
//! ClusterIP with 1, 1k, 10k and 100k services, `pilus` against kube-proxy's
//! iptables, `bare` pod to pod as the floor.

mod bare;
pub mod iptables;
pub mod kube_proxy;
mod pilus;
pub mod services;
pub mod summary;

use crate::{
    load::{self, Ends, Measured, Pinning, Test, Timing},
    Error,
};
use bare::{Link, SameNode, TwoNodes};
use pilus::{AgentNode, LabPair};
use pilus_lab::Routing;
use serde::Serialize;
use std::{path::PathBuf, time::Duration};
use summary::{cdf_points, paired_ratios, quantile_us, round, Spread};

pub use pilus::{policy_yaml, MAX_ENDPOINTS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    SameNode,
    Tunnel,
    Direct,
    /// The same node's client to a ClusterIP whose endpoint is the server.
    Service,
}

impl Topology {
    pub fn title(self) -> &'static str {
        match self {
            Topology::SameNode => "pod to pod, same node",
            Topology::Tunnel => "pod to pod, two nodes, tunnel",
            Topology::Direct => "pod to pod, two nodes, direct routing",
            Topology::Service => "pod to service (ClusterIP), same node",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Topology::SameNode => "same-node",
            Topology::Tunnel => "tunnel",
            Topology::Direct => "direct",
            Topology::Service => "service",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Config {
    Bare,
    BareAgain,
    Pilus,
    Iptables,
}

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Config::Bare => "bare",
            Config::BareAgain => "bare-again",
            Config::Pilus => "pilus",
            Config::Iptables => "iptables",
        }
    }

    /// What the configuration is on a topology.
    pub fn about(self, t: Topology) -> &'static str {
        match (t, self) {
            (Topology::SameNode, Config::Bare | Config::BareAgain) => {
                "veth pairs + kernel routing, no BPF, no iptables"
            }
            (Topology::Tunnel, Config::Bare | Config::BareAgain) => {
                "plain kernel VXLAN (port 8472) + routing, no BPF"
            }
            (Topology::Direct, Config::Bare | Config::BareAgain) => {
                "plain kernel routing on the underlay, no BPF"
            }
            (Topology::SameNode, Config::Pilus) => "pilusd + pilus-cni, allow policy on both pods",
            (Topology::Tunnel, Config::Pilus) => {
                "pilus tunnel mode (identity in the VNI), allow policy"
            }
            (Topology::Direct, Config::Pilus) => {
                "pilus direct routing (bpf_host on the uplink), allow policy"
            }
            (Topology::Service, Config::Bare | Config::BareAgain) => {
                "pod to pod directly (no service), veth pairs + kernel routing"
            }
            (Topology::Service, Config::Pilus) => {
                "pilusd: the ClusterIP load-balanced in from-container, allow policy"
            }
            (Topology::Service, Config::Iptables) => {
                "kube-proxy iptables (KUBE-SERVICES -> SVC -> SEP DNAT) + per-pod chains"
            }
            (_, Config::Iptables) => "kernel routing + per-pod iptables chains, same policy",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Options {
    /// Where pilusd, pilus-cni and pilus are.
    pub bin_dir: PathBuf,
    pub warmup: Duration,
    pub duration: Duration,
    /// Rounds: every configuration measured once per round.
    pub repetitions: usize,
    /// Tests on the same node.
    pub tests: Vec<Test>,
    /// Tests across two nodes (empty: no two-node topologies).
    pub cross_node_tests: Vec<Test>,
    /// Tests of the scaling series (empty: no scaling phases).
    pub scaling_tests: Vec<Test>,
    /// The server's policy entries: the main phase's, the policy series'.
    pub policy_entries: [usize; 2],
    /// Endpoints on the node: the main phase's, the endpoints series'.
    pub endpoints: [usize; 2],
    /// Tests of the service series (empty: no service phases).
    pub service_tests: Vec<Test>,
    /// The service counts of the series, increasing.
    pub services: Vec<usize>,
}

impl Options {
    /// What `pilus bench traffic` runs by default: 10 rounds of 1.5 s
    /// windows after 0.3 s of warm-up. Many short rounds rather than a
    /// few long ones: on a shared machine, load from elsewhere comes in
    /// bursts of seconds; the closer in time the two measurements of a
    /// pair, and the more pairs, the more of it the paired median cancels
    /// (5 rounds of 3 s left a noise floor of ±25–240 % on this VM while
    /// others compiled).
    pub fn full(bin_dir: PathBuf) -> Options {
        Options {
            bin_dir,
            warmup: Duration::from_millis(300),
            duration: Duration::from_millis(1500),
            repetitions: 10,
            tests: Test::ALL.to_vec(),
            cross_node_tests: vec![Test::TcpRr, Test::TcpStream],
            scaling_tests: vec![Test::TcpRr, Test::TcpCrr],
            policy_entries: [10, 10_000],
            endpoints: [10, 500],
            service_tests: vec![Test::TcpCrr, Test::TcpRr],
            services: vec![1, 1_000, 10_000, 100_000],
        }
    }

    /// A smoke run (`--quick`): everything, tiny.
    pub fn quick(bin_dir: PathBuf) -> Options {
        Options {
            warmup: Duration::from_millis(30),
            duration: Duration::from_millis(150),
            repetitions: 2,
            policy_entries: [10, 100],
            endpoints: [10, 16],
            services: vec![1, 10],
            ..Options::full(bin_dir)
        }
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |option, reason: String| Err(Error::Options { option, reason });
        if self.repetitions == 0 {
            return bad("repetitions", "must be at least 1".into());
        }
        if self.duration.is_zero() {
            return bad("duration", "must be more than 0".into());
        }
        if self.tests.is_empty() {
            return bad("tests", "name at least one same-node test".into());
        }
        let [small, large] = self.policy_entries;
        if small < 2 || large < small || large > iptables::MAX_ENTRIES {
            return bad(
                "policy-entries",
                format!(
                    "need 2 <= small <= large <= {}, not {small} / {large}",
                    iptables::MAX_ENTRIES
                ),
            );
        }
        if self.services.windows(2).any(|w| w[0] >= w[1])
            || self.services.first().is_some_and(|&n| n == 0)
            || self
                .services
                .last()
                .is_some_and(|&n| n > kube_proxy::MAX_SERVICES)
        {
            return bad(
                "services",
                format!(
                    "need increasing counts from 1 to {}, not {:?}",
                    kube_proxy::MAX_SERVICES,
                    self.services
                ),
            );
        }
        let [small, large] = self.endpoints;
        if small < 2 || large < small || large > MAX_ENDPOINTS {
            return bad(
                "endpoints",
                format!("need 2 <= small <= large <= {MAX_ENDPOINTS}, not {small} / {large}"),
            );
        }
        Ok(())
    }
}

/// One measurement of a round.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub round: usize,
    /// Its place in the round's order for this test (0: first).
    pub position: usize,
    pub rate: f64,
    pub p50_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub client_cpu: f64,
    pub server_cpu: f64,
    pub lost: u64,
}

/// A configuration's results for one test.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub config: Config,
    pub about: &'static str,
    /// tx/s or Gbit/s over the rounds.
    pub rate: Spread,
    /// Its range in percent of the median.
    pub range_pct: f64,
    /// Rate over the same round's baseline rate, paired round by round.
    pub ratio: Spread,
    /// Medians over the rounds (none for TCP_STREAM).
    pub p50_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// CPU per transaction (µs) or per MiB (TCP_STREAM), median.
    pub client_cpu: f64,
    pub server_cpu: f64,
    /// UDP requests never answered, all rounds.
    pub lost: u64,
    /// Latency (µs) at [`summary::cdf_points`], the median over the
    /// rounds point by point; empty for TCP_STREAM.
    pub cdf_us: Vec<f64>,
    pub runs: Vec<Run>,
}

/// One test on one topology: every configuration against the baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub topology: Topology,
    pub test: Test,
    pub unit: &'static str,
    pub cpu_unit: &'static str,
    pub baseline: Config,
    /// `bare-again` over `bare`, paired: the noise floor (main phase).
    pub noise: Option<Spread>,
    pub rows: Vec<Row>,
}

impl Group {
    pub fn row(&self, c: Config) -> Option<&Row> {
        self.rows.iter().find(|r| r.config == c)
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    /// `main`, `policy` or `endpoints`.
    pub name: &'static str,
    /// Policy entries of the server (nominal; the iptables rules for it).
    pub policy_entries: usize,
    /// The server endpoint's entries as pilusd resolved them.
    pub pilus_policy_entries: usize,
    /// Rules in the iptables configuration's filter table.
    pub iptables_rules: usize,
    /// Endpoints on the node, as pilusd counts them.
    pub endpoints: usize,
    /// Services that exist (the service series; 0 elsewhere).
    pub services: usize,
    /// Seconds the agent took to import every service so far, in imports
    /// of [`services::BATCH`] (the service series).
    pub pilus_services_apply_s: Option<f64>,
    /// Seconds iptables-restore took to write this step's nat table, and
    /// its rules.
    pub iptables_services_apply_s: Option<f64>,
    pub iptables_nat_rules: usize,
    pub groups: Vec<Group>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub repetitions: usize,
    pub pinning: Pinning,
    pub iptables: String,
    /// The quantiles of every row's `cdf_us`.
    pub cdf_points: Vec<f64>,
    pub phases: Vec<Phase>,
}

impl Report {
    pub fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// The service series' phase at `n` services.
    pub fn service_phase(&self, n: usize) -> Option<&Phase> {
        self.phases
            .iter()
            .find(|p| p.name == "services" && p.services == n)
    }

    pub fn group(&self, phase: &str, t: Topology, test: Test) -> Option<&Group> {
        self.phase(phase)?
            .groups
            .iter()
            .find(|g| g.topology == t && g.test == test)
    }
}

/// Every host of the run, built before the first measurement and removed
/// (each by its own guard) when the run ends, however it ends.
struct Hosts {
    same_bare: SameNode,
    same_ipt: SameNode,
    same_pilus: AgentNode,
    /// Tunnel (kernel VXLAN, pilus) and direct (kernel routes, pilus).
    cross: Option<[(TwoNodes, LabPair); 2]>,
    /// The same nodes' client and server, the server reached at
    /// [`services::VIP`].
    svc_pilus: Ends,
    svc_ipt: Ends,
}

impl Hosts {
    fn ends(&self, t: Topology, c: Config) -> &Ends {
        let cross = |i: usize| {
            let (bare, pilus) = &self.cross.as_ref().expect("two-node hosts built")[i];
            match c {
                Config::Pilus => &pilus.ends,
                _ => &bare.ends,
            }
        };
        match (t, c) {
            (Topology::SameNode, Config::Bare | Config::BareAgain) => &self.same_bare.ends,
            (Topology::SameNode, Config::Iptables) => &self.same_ipt.ends,
            (Topology::SameNode, Config::Pilus) => &self.same_pilus.ends,
            (Topology::Tunnel, _) => cross(0),
            (Topology::Direct, _) => cross(1),
            (Topology::Service, Config::Bare | Config::BareAgain) => &self.same_bare.ends,
            (Topology::Service, Config::Pilus) => &self.svc_pilus,
            (Topology::Service, Config::Iptables) => &self.svc_ipt,
        }
    }

    /// The fillers on every same-node configuration, to `endpoints` in
    /// all (the two pods included).
    fn grow(&mut self, endpoints: usize) -> Result<(), Error> {
        let fillers = endpoints.saturating_sub(2);
        self.same_bare.grow_fillers(fillers)?;
        self.same_ipt.grow_fillers(fillers)?;
        self.same_pilus.grow_fillers(fillers)
    }

    /// The policy at `entries` in both configurations that have one:
    /// (pilus's resolved entries, iptables rules).
    fn policy(&self, entries: usize) -> Result<(usize, usize), Error> {
        Ok((
            self.same_pilus.set_policy(entries)?,
            self.same_ipt.apply_iptables(entries)?,
        ))
    }
}

fn iptables_version() -> Result<String, Error> {
    let out = std::process::Command::new("iptables")
        .arg("--version")
        .output()
        .map_err(|source| Error::Io {
            what: "running iptables --version (the iptables configuration needs iptables: apt-get install iptables)".into(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs the benchmark. Needs root (namespaces, eBPF), etcd (the two-node
/// labs), iptables, and pilusd, pilus-cni and pilus in `opts.bin_dir`.
pub fn run(opts: &Options) -> Result<Report, Error> {
    crate::require_root("traffic", "namespaces, eBPF")?;
    opts.check()?;
    let iptables = iptables_version()?;
    for prefix in ["b13b", "b13i", "b13p", "b13q", "b13x", "b13r"] {
        pilus_netns::remove_stale(prefix).map_err(|source| Error::Netns {
            what: "removing a killed run's namespaces".into(),
            source,
        })?;
    }
    tracing::info!("building the hosts");
    let cross = if opts.cross_node_tests.is_empty() {
        None
    } else {
        Some([
            (
                TwoNodes::build("b13x", Link::Vxlan)?,
                LabPair::start(&opts.bin_dir, "b13t", Routing::Tunnel)?,
            ),
            (
                TwoNodes::build("b13r", Link::Routed)?,
                LabPair::start(&opts.bin_dir, "b13d", Routing::Direct)?,
            ),
        ])
    };
    let same_ipt = SameNode::build("b13i")?;
    let same_pilus = AgentNode::start(&opts.bin_dir)?;
    let at_vip = |e: &Ends| Ends {
        server_ip: services::VIP,
        ..e.clone()
    };
    let mut hosts = Hosts {
        same_bare: SameNode::build("b13b")?,
        svc_pilus: at_vip(&same_pilus.ends),
        svc_ipt: at_vip(&same_ipt.ends),
        same_ipt,
        same_pilus,
        cross,
    };
    let timing = Timing {
        warmup: opts.warmup,
        duration: opts.duration,
    };
    let pin = Pinning::split();
    let m = Measure {
        timing,
        pin,
        repetitions: opts.repetitions,
    };
    let [p_small, p_large] = opts.policy_entries;
    let [e_small, e_large] = opts.endpoints;

    hosts.grow(e_small)?;
    let (pe, rules) = hosts.policy(p_small)?;
    let same = [
        Config::Bare,
        Config::BareAgain,
        Config::Pilus,
        Config::Iptables,
    ];
    let cross_configs = [Config::Bare, Config::BareAgain, Config::Pilus];
    let mut items: Vec<(Topology, Test, &[Config])> = opts
        .tests
        .iter()
        .map(|&t| (Topology::SameNode, t, &same[..]))
        .collect();
    if hosts.cross.is_some() {
        for topo in [Topology::Tunnel, Topology::Direct] {
            items.extend(
                opts.cross_node_tests
                    .iter()
                    .map(|&t| (topo, t, &cross_configs[..])),
            );
        }
    }
    let mut phases = vec![Phase {
        name: "main",
        policy_entries: p_small,
        pilus_policy_entries: pe,
        iptables_rules: rules,
        endpoints: hosts.same_pilus.endpoints()?,
        groups: m.phase("main", &hosts, &items)?,
        ..Default::default()
    }];
    hosts.same_pilus.check_alive()?;

    if !opts.scaling_tests.is_empty() {
        let three = [Config::Bare, Config::Pilus, Config::Iptables];
        let items: Vec<(Topology, Test, &[Config])> = opts
            .scaling_tests
            .iter()
            .map(|&t| (Topology::SameNode, t, &three[..]))
            .collect();
        let (pe, rules) = hosts.policy(p_large)?;
        phases.push(Phase {
            name: "policy",
            policy_entries: p_large,
            pilus_policy_entries: pe,
            iptables_rules: rules,
            endpoints: hosts.same_pilus.endpoints()?,
            groups: m.phase("policy", &hosts, &items)?,
            ..Default::default()
        });
        hosts.grow(e_large)?;
        // Back to the small policy, rendered for the new fillers.
        let (pe, rules) = hosts.policy(p_small)?;
        phases.push(Phase {
            name: "endpoints",
            policy_entries: p_small,
            pilus_policy_entries: pe,
            iptables_rules: rules,
            endpoints: hosts.same_pilus.endpoints()?,
            groups: m.phase("endpoints", &hosts, &items)?,
            ..Default::default()
        });
        hosts.same_pilus.check_alive()?;
    }

    if !opts.service_tests.is_empty() && !opts.services.is_empty() {
        let three = [Config::Bare, Config::Pilus, Config::Iptables];
        let items: Vec<(Topology, Test, &[Config])> = opts
            .service_tests
            .iter()
            .map(|&t| (Topology::Service, t, &three[..]))
            .collect();
        let (pe, rules) = hosts.policy(p_small)?;
        let mut have = 0;
        let mut pilus_s = 0.0;
        for &n in &opts.services {
            tracing::info!(services = n, "adding services");
            pilus_s += services::add_to_pilus(&hosts.same_pilus, have, n)?.as_secs_f64();
            have = n;
            let (ipt, nat_rules) = services::apply_to_iptables(&hosts.same_ipt, n)?;
            phases.push(Phase {
                name: "services",
                policy_entries: p_small,
                pilus_policy_entries: pe,
                iptables_rules: rules,
                endpoints: hosts.same_pilus.endpoints()?,
                services: n,
                pilus_services_apply_s: Some(round(pilus_s, 3)),
                iptables_services_apply_s: Some(round(ipt.as_secs_f64(), 3)),
                iptables_nat_rules: nat_rules,
                groups: m.phase("services", &hosts, &items)?,
            });
            hosts.same_pilus.check_alive()?;
        }
    }
    tracing::info!("removing the hosts");
    drop(hosts);
    Ok(Report {
        bench: "traffic",
        warmup_s: opts.warmup.as_secs_f64(),
        duration_s: opts.duration.as_secs_f64(),
        repetitions: opts.repetitions,
        pinning: pin,
        iptables,
        cdf_points: cdf_points(),
        phases,
    })
}

/// How each measurement is taken.
struct Measure {
    timing: Timing,
    pin: Pinning,
    repetitions: usize,
}

/// One measurement with what its row keeps.
struct Sample {
    run: Run,
    cdf: Vec<f64>,
}

fn sample(m: Measured, round: usize, position: usize) -> Sample {
    let mut ns = m.latency_ns.clone();
    ns.sort_unstable();
    let has = m.test.has_latency() && !ns.is_empty();
    let q = |x| has.then(|| round_us(quantile_us(&ns, x)));
    Sample {
        run: Run {
            round,
            position,
            rate: m.rate(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            client_cpu: m.cpu_per_unit(m.client_cpu_s),
            server_cpu: m.cpu_per_unit(m.server_cpu_s),
            lost: m.lost,
        },
        cdf: if has {
            cdf_points().iter().map(|&p| quantile_us(&ns, p)).collect()
        } else {
            Vec::new()
        },
    }
}

fn round_us(x: f64) -> f64 {
    round(x, 2)
}

impl Measure {
    /// Every item's configurations, `repetitions` rounds, the order of the
    /// configurations rotated by one each round.
    fn phase(
        &self,
        name: &str,
        hosts: &Hosts,
        items: &[(Topology, Test, &[Config])],
    ) -> Result<Vec<Group>, Error> {
        let mut cells: Vec<Vec<Vec<Sample>>> = items
            .iter()
            .map(|(_, _, cs)| cs.iter().map(|_| Vec::new()).collect())
            .collect();
        for round in 0..self.repetitions {
            tracing::info!(
                phase = name,
                round = round + 1,
                of = self.repetitions,
                "measuring"
            );
            for (k, &(topo, test, configs)) in items.iter().enumerate() {
                let n = configs.len();
                for position in 0..n {
                    let c = (position + round) % n;
                    let ends = hosts.ends(topo, configs[c]);
                    let m = load::run(test, ends, self.timing, self.pin).map_err(|e| {
                        Error::Unexpected {
                            what: format!(
                                "{} {} {}: {e}",
                                topo.name(),
                                test.name(),
                                configs[c].name()
                            ),
                        }
                    })?;
                    cells[k][c].push(sample(m, round, position));
                }
            }
        }
        Ok(items
            .iter()
            .zip(cells)
            .map(|(&(topo, test, configs), cells)| group(topo, test, configs, cells))
            .collect())
    }
}

fn group(topo: Topology, test: Test, configs: &[Config], cells: Vec<Vec<Sample>>) -> Group {
    let rates = |s: &[Sample]| s.iter().map(|x| x.run.rate).collect::<Vec<_>>();
    let base = configs
        .iter()
        .position(|&c| c == Config::Bare)
        .map(|i| rates(&cells[i]))
        .unwrap_or_default();
    let rows: Vec<Row> = configs
        .iter()
        .zip(cells)
        .map(|(&config, samples)| row(topo, config, &base, samples))
        .collect();
    let noise = rows
        .iter()
        .find(|r| r.config == Config::BareAgain)
        .map(|r| r.ratio);
    Group {
        topology: topo,
        test,
        unit: test.unit(),
        cpu_unit: test.cpu_unit(),
        baseline: Config::Bare,
        noise,
        rows,
    }
}

fn row(topo: Topology, config: Config, base: &[f64], samples: Vec<Sample>) -> Row {
    let med = |f: &dyn Fn(&Run) -> Option<f64>| {
        let v: Vec<f64> = samples.iter().filter_map(|s| f(&s.run)).collect();
        (!v.is_empty()).then(|| Spread::of(&v).median)
    };
    let rate_v: Vec<f64> = samples.iter().map(|s| s.run.rate).collect();
    let rate = Spread::of(&rate_v);
    let points = samples.iter().map(|s| s.cdf.len()).min().unwrap_or(0);
    let cdf_us = (0..points)
        .map(|i| {
            let v: Vec<f64> = samples.iter().map(|s| s.cdf[i]).collect();
            round_us(Spread::of(&v).median)
        })
        .collect();
    Row {
        config,
        about: config.about(topo),
        range_pct: round(rate.range_pct(), 2),
        ratio: paired_ratios(&rate_v, base),
        p50_us: med(&|r| r.p50_us),
        p90_us: med(&|r| r.p90_us),
        p99_us: med(&|r| r.p99_us),
        client_cpu: med(&|r| Some(r.client_cpu)).unwrap_or(0.0),
        server_cpu: med(&|r| Some(r.server_cpu)).unwrap_or(0.0),
        lost: samples.iter().map(|s| s.run.lost).sum(),
        rate,
        cdf_us,
        runs: samples.into_iter().map(|s| s.run).collect(),
    }
}
