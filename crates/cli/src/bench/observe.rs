//! `pilus bench observe`: the cost of observability — pod-to-pod TCP_RR
//! and TCP_STREAM at each monitor aggregation level against trace events
//! compiled out and bare veth routing (`pilus_bench::observe`).

use crate::Output;
use anyhow::Result;
use clap::Args;
use pilus_bench::observe::{self, Options, Report};

#[derive(Args, Debug)]
pub struct ObserveArgs {
    /// Rounds; each measures every configuration once, in a rotated order.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Seconds of each TCP_RR and each TCP_STREAM measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
}

pub fn run(a: ObserveArgs, output: Output) -> Result<()> {
    let report = observe::run(&Options {
        bin_dir: super::bin_dir()?,
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
        "{:<34} {:>10} {:>7} {:>7} {:>8} {:>7} {:>9} {:>7} {:>7} {:>9} {:>7}",
        "configuration",
        "TCP_RR/s",
        "vs out",
        "vs bare",
        "CPU µs/tx",
        "vs out",
        "STREAM Gb",
        "vs out",
        "vs bare",
        "µs/MiB",
        "vs out"
    );
    for row in &r.rows {
        println!(
            "{:<34} {:>10.0} {:>7.3} {:>7.3} {:>9.2} {:>7.3} {:>9.2} {:>7.3} {:>7.3} {:>9.1} {:>7.3}",
            row.name,
            row.rr_median,
            row.rr_vs_compiled_out,
            row.rr_vs_bare,
            row.rr_cpu_median,
            row.rr_cpu_vs_compiled_out,
            row.stream_median,
            row.stream_vs_compiled_out,
            row.stream_vs_bare,
            row.stream_cpu_median,
            row.stream_cpu_vs_compiled_out
        );
    }
    println!(
        "medium costs {:.1}% of the TCP_RR rate and {:.1}% of STREAM throughput against trace events compiled out (target <= 3%: {})",
        r.medium_rr_cost_pct,
        r.medium_stream_cost_pct,
        super::met(r.target_met())
    );
    println!(
        "medium costs {:+.1}% CPU per transaction and {:+.1}% per MiB against trace events compiled out",
        r.medium_rr_cpu_cost_pct, r.medium_stream_cpu_cost_pct
    );
}
