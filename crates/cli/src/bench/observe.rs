//! `pilus bench observe`: the cost of observability — pod-to-pod TCP_RR
//! and TCP_STREAM at each monitor aggregation level against trace events
//! compiled out and bare veth routing (`pilus_bench::observe`).

use crate::Output;
use anyhow::Result;
use clap::Args;
use pilus_bench::observe::{self, Options, Report};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ObserveArgs {
    /// Rounds; each measures every configuration once, in a rotated order.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Seconds of each TCP_RR and each TCP_STREAM measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// The iperf3 binary (Debian's `iperf3`).
    #[arg(long, default_value = "iperf3")]
    iperf3: PathBuf,
}

pub fn run(a: ObserveArgs, output: Output) -> Result<()> {
    let report = observe::run(&Options {
        bin_dir: super::bin_dir()?,
        iperf3: a.iperf3,
        rounds: a.rounds,
        seconds: a.seconds,
    })?;
    super::emit(&report, output, print_table)
}

fn print_table(r: &Report) {
    println!(
        "pilus bench observe: pod to pod on one node, {} rounds of {} s per measurement (load {} before, {} after)",
        r.rounds, r.seconds, r.loadavg_before, r.loadavg_after
    );
    println!(
        "{:<34} {:>10} {:>9} {:>8} {:>10} {:>9} {:>8}",
        "configuration", "TCP_RR/s", "vs out", "vs bare", "STREAM Gb", "vs out", "vs bare"
    );
    for row in &r.rows {
        println!(
            "{:<34} {:>10.0} {:>9.3} {:>8.3} {:>10.2} {:>9.3} {:>8.3}",
            row.name,
            row.rr_median,
            row.rr_vs_compiled_out,
            row.rr_vs_bare,
            row.stream_median,
            row.stream_vs_compiled_out,
            row.stream_vs_bare
        );
    }
    println!(
        "medium costs {:.1}% of the TCP_RR rate and {:.1}% of STREAM throughput against trace events compiled out (target <= 3%: {})",
        r.medium_rr_cost_pct,
        r.medium_stream_cost_pct,
        super::met(r.target_met())
    );
}
