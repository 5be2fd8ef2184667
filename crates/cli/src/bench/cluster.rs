//! `pilus bench cluster`: many nodes — propagation of a new pod to every
//! node, and one agent against a large simulated cluster
//! (`pilus_bench::cluster`).

use super::{latency, met};
use crate::Output;
use anyhow::Result;
use clap::Args;
use pilus_bench::cluster::{self, ClusterOptions, ClusterReport};

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Propagation: nodes of the lab.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Propagation: pods added, one at a time, round-robin over the nodes.
    #[arg(long, default_value_t = 100)]
    pods: u32,
    /// Scale: simulated nodes (no datapath behind them).
    #[arg(long, default_value_t = 100)]
    sim_nodes: u32,
    /// Scale: pods each simulated node publishes.
    #[arg(long, default_value_t = 100)]
    endpoints_per_node: u32,
    /// Scale: single pods published after the bulk, timed one by one.
    #[arg(long, default_value_t = 20)]
    one_more: u32,
}

pub fn run(a: ClusterArgs, output: Output) -> Result<()> {
    let mut opts = ClusterOptions::new(super::bin_dir()?);
    opts.nodes = a.nodes;
    opts.pods = a.pods;
    opts.sim_nodes = a.sim_nodes;
    opts.endpoints_per_node = a.endpoints_per_node;
    opts.one_more = a.one_more;
    let report = cluster::run(&opts)?;
    super::emit(&report, output, print_table)
}

fn print_table(r: &ClusterReport) {
    let p = &r.propagation;
    println!(
        "propagation: {} nodes, {} pods added one at a time",
        p.nodes, p.pods
    );
    println!(
        "  CNI ADD (baseline):                 {}",
        latency(&p.cni_add)
    );
    println!(
        "  known everywhere, after ADD:        {}",
        latency(&p.after_add)
    );
    println!(
        "  known everywhere, from ADD's start: {}  (target p99 ≤ {} ms: {})",
        latency(&p.from_add_start),
        p.target_p99_ms,
        met(p.met)
    );
    let s = &r.scale;
    println!(
        "scale: {} simulated nodes, {} pods, one real agent",
        s.sim_nodes, s.endpoints
    );
    println!("  written into etcd in:               {:.0} ms", s.write_ms);
    println!(
        "  known to the agent after:           {:.0} ms (watch)",
        s.ingest_ms
    );
    println!(
        "  agent RSS:                          {} KiB before, {} KiB after ({:.0} bytes per remote pod)",
        s.rss_before_kib, s.rss_after_kib, s.rss_per_remote_endpoint_bytes
    );
    println!(
        "  one more pod, until known:          {}",
        latency(&s.one_more)
    );
    println!(
        "  agent restart with all in etcd:     ready in {:.0} ms, all known after {:.0} ms, RSS {} KiB ({:.0} bytes per remote pod)",
        s.restart_ready_ms, s.restart_ingest_ms, s.restart_rss_kib, s.restart_rss_per_remote_endpoint_bytes
    );
}
