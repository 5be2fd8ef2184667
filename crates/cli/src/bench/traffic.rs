//! `pilus bench traffic`: real pod-to-pod traffic (TCP_RR, TCP_CRR,
//! UDP_RR, TCP_STREAM) through bare kernel routing, Pilus and iptables on
//! the same topologies, interleaved, with the noise floor
//! (`pilus_bench::traffic`).

use crate::{client::InvalidInput, Output};
use anyhow::Result;
use clap::{Args, ValueEnum};
use pilus_bench::{
    load::Test,
    traffic::{self, Options, Report},
};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TestArg {
    TcpRr,
    TcpCrr,
    UdpRr,
    TcpStream,
}

impl From<TestArg> for Test {
    fn from(t: TestArg) -> Test {
        match t {
            TestArg::TcpRr => Test::TcpRr,
            TestArg::TcpCrr => Test::TcpCrr,
            TestArg::UdpRr => Test::UdpRr,
            TestArg::TcpStream => Test::TcpStream,
        }
    }
}

#[derive(Args, Debug)]
pub struct TrafficArgs {
    /// A smoke run: every topology, configuration and phase, tiny (the
    /// other flags still apply on top).
    #[arg(long)]
    pub quick: bool,
    /// Rounds (every configuration measured once per round).
    #[arg(long)]
    pub repetitions: Option<usize>,
    /// Seconds each measurement times, after its warm-up.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Seconds of warm-up before each measurement's window.
    #[arg(long)]
    pub warmup_seconds: Option<f64>,
    /// Same-node tests (default: all four).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub tests: Vec<TestArg>,
    /// Two-node tests (default: tcp-rr,tcp-stream).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub cross_node_tests: Vec<TestArg>,
    /// No two-node topologies (no etcd, no labs).
    #[arg(long)]
    pub no_cross_node: bool,
    /// No scaling phases (policy entries, endpoints).
    #[arg(long)]
    pub no_scaling: bool,
    /// The server's policy entries, the main phase's and the series' (e.g. 10,10000).
    #[arg(long, value_delimiter = ',', value_name = "SMALL,LARGE")]
    pub policy_entries: Vec<usize>,
    /// Endpoints on the node, the main phase's and the series' (e.g. 10,500).
    #[arg(long, value_delimiter = ',', value_name = "SMALL,LARGE")]
    pub endpoints: Vec<usize>,
}

fn seconds(flag: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| InvalidInput(format!("--{flag} {s}: {e}")).into())
}

/// `SMALL,LARGE`: exactly two values.
fn pair(flag: &str, v: &[usize]) -> Result<[usize; 2]> {
    match v {
        [a, b] => Ok([*a, *b]),
        _ => Err(InvalidInput(format!("--{flag} takes two values, SMALL,LARGE")).into()),
    }
}

impl TrafficArgs {
    /// The library's options: full or quick, then each flag given.
    pub fn options(&self) -> Result<Options> {
        let bin_dir = super::bin_dir()?;
        let mut o = if self.quick {
            Options::quick(bin_dir)
        } else {
            Options::full(bin_dir)
        };
        if let Some(r) = self.repetitions {
            o.repetitions = r;
        }
        if let Some(s) = self.seconds {
            o.duration = seconds("seconds", s)?;
        }
        if let Some(s) = self.warmup_seconds {
            o.warmup = seconds("warmup-seconds", s)?;
        }
        if !self.tests.is_empty() {
            o.tests = self.tests.iter().map(|&t| t.into()).collect();
        }
        if !self.cross_node_tests.is_empty() {
            o.cross_node_tests = self.cross_node_tests.iter().map(|&t| t.into()).collect();
        }
        if self.no_cross_node {
            o.cross_node_tests.clear();
        }
        if self.no_scaling {
            o.scaling_tests.clear();
        }
        if !self.policy_entries.is_empty() {
            o.policy_entries = pair("policy-entries", &self.policy_entries)?;
        }
        if !self.endpoints.is_empty() {
            o.endpoints = pair("endpoints", &self.endpoints)?;
        }
        Ok(o)
    }
}

pub fn run(a: TrafficArgs, output: Output) -> Result<()> {
    let report = traffic::run(&a.options()?)?;
    super::emit(&report, output, print_table)
}

/// The report as a table: one block per phase, a line per configuration.
pub fn print_table(r: &Report) {
    println!(
        "pilus bench traffic: {} rounds, {:.2} s windows after {:.2} s warm-up, client CPU {:?}, server CPU {:?}",
        r.repetitions, r.duration_s, r.warmup_s, r.pinning.client, r.pinning.server
    );
    for p in &r.phases {
        println!(
            "\nphase {}: policy entries {} (pilus {}, iptables rules {}), endpoints {}",
            p.name, p.policy_entries, p.pilus_policy_entries, p.iptables_rules, p.endpoints
        );
        for g in &p.groups {
            let noise = g
                .noise
                .map(|n| {
                    format!(
                        ", noise floor ±{:.1} % (middle half), ±{:.1} % (worst round)",
                        n.middle_reach_from_one_pct(),
                        n.reach_from_one_pct()
                    )
                })
                .unwrap_or_default();
            println!(
                "{} {} ({}{noise})",
                g.topology.title(),
                g.test.name(),
                g.unit
            );
            println!(
                "  {:<11} {:>11} {:>7} {:>15} {:>8} {:>8} {:>8} {:>9} {:>9}",
                "config",
                "rate",
                "range%",
                "ratio [min-max]",
                "p50 µs",
                "p90 µs",
                "p99 µs",
                "cli cpu",
                "srv cpu"
            );
            for row in &g.rows {
                let us = |x: Option<f64>| x.map(|v| format!("{v:.1}")).unwrap_or("-".into());
                println!(
                    "  {:<11} {:>11.2} {:>7.1} {:>5.3} [{:.2}-{:.2}] {:>8} {:>8} {:>8} {:>9.2} {:>9.2}",
                    row.config.name(),
                    row.rate.median,
                    row.range_pct,
                    row.ratio.median,
                    row.ratio.min,
                    row.ratio.max,
                    us(row.p50_us),
                    us(row.p90_us),
                    us(row.p99_us),
                    row.client_cpu,
                    row.server_cpu
                );
            }
        }
    }
    println!("\nservices: {}", r.services);
}
