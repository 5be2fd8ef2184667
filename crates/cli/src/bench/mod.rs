//! `pilus bench`: the benchmarks of `pilus-bench`, one file per
//! subcommand. Each turns its flags into the library's options, runs it
//! and prints the report: a table, or the report itself with `-o json`.

mod all;
mod api;
mod cluster;
mod cni;
mod datapath;
mod observe;
mod policy;
mod restart;
mod traffic;

use crate::Output;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// ns/packet of the pod programs (BPF_PROG_TEST_RUN) vs. an empty classifier.
    Datapath(datapath::DatapathArgs),
    /// Policy change → enforced latency and agent memory at 1,000 endpoints
    /// and 1,000 rules (starts a private pilusd).
    Policy(policy::PolicyArgs),
    /// CNI ADD/DEL latency of pilus-cni over 100 pods (one-node lab with a
    /// private pilusd) vs. in-process veth plumbing and a bare plugin exec.
    Cni(cni::CniArgs),
    /// GET /v1/status latency, threads and RSS of an idle pilusd vs. the
    /// same pilusd holding 1,000 half-open connections (starts a private
    /// pilusd).
    Api(api::ApiArgs),
    /// Many nodes: how fast a new pod is known on every node of a 3-node
    /// lab (vs. CNI ADD), and one agent's ingest time and memory for 100
    /// simulated nodes with 10,000 pods in etcd.
    Cluster(cluster::ClusterArgs),
    /// The cost of observability: pod-to-pod TCP_RR and TCP_STREAM with the
    /// monitor's aggregation at none, medium and maximum vs. trace events
    /// compiled out and bare veth routing (two one-node labs), with the CPU
    /// time per transaction and per MiB.
    Observe(observe::ObserveArgs),
    /// Real pod-to-pod traffic: TCP_RR, TCP_CRR, UDP_RR, TCP_STREAM through
    /// bare kernel routing, Pilus and per-pod iptables chains on one node,
    /// and across two nodes (tunnel vs. kernel VXLAN, direct vs. kernel
    /// routes), interleaved, with the noise floor; scaling series for
    /// policy entries and endpoints.
    Traffic(traffic::TrafficArgs),
    /// pilusd's start time with 500 endpoints restored vs. with none
    /// (starts a private pilusd).
    Restart(restart::RestartArgs),
    /// Every benchmark in one run, with the target table of issues 13 and
    /// 10; --docs DIR writes the generated page and its SVG plots.
    All(all::AllArgs),
}

pub fn run(cmd: BenchCommand, output: Output) -> Result<()> {
    match cmd {
        BenchCommand::Datapath(args) => datapath::run(args, output),
        BenchCommand::Policy(args) => policy::run(args, output),
        BenchCommand::Cni(args) => cni::run(args, output),
        BenchCommand::Api(args) => api::run(args, output),
        BenchCommand::Cluster(args) => cluster::run(args, output),
        BenchCommand::Observe(args) => observe::run(args, output),
        BenchCommand::Traffic(args) => traffic::run(args, output),
        BenchCommand::Restart(args) => restart::run(args, output),
        BenchCommand::All(args) => all::run(args, output),
    }
}

/// Where the other binaries (pilusd, pilus-cni) are unless a flag says:
/// next to this one, as `cargo build --bins` puts them.
fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the pilus binary")?;
    exe.parent()
        .map(PathBuf::from)
        .context("the pilus binary has no directory")
}

/// The path of `pilusd`: `--pilusd`, else next to this binary.
fn pilusd(flag: Option<PathBuf>) -> Result<PathBuf> {
    match flag {
        Some(p) => Ok(p),
        None => Ok(bin_dir()?.join("pilusd")),
    }
}

/// Prints a report: the report itself with `-o json`, else its table.
fn emit<R: serde::Serialize>(report: &R, output: Output, table: fn(&R)) -> Result<()> {
    match output {
        Output::Json => crate::table::print_json(report),
        Output::Human | Output::Compact | Output::Table => {
            table(report);
            Ok(())
        }
    }
}

/// A latency summary on one line.
fn latency(x: &pilus_bench::stats::Latency) -> String {
    format!(
        "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        x.p50_ms, x.p99_ms, x.max_ms
    )
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}
