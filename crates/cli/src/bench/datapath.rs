//! `pilus bench datapath`: ns/packet of the pod programs under
//! BPF_PROG_TEST_RUN, against an empty classifier measured in the same run
//! (`pilus_bench::datapath`).

use super::met;
use crate::Output;
use anyhow::Result;
use clap::Args;
use pilus_bench::datapath::{self, Options, Report};

#[derive(Args, Debug)]
pub struct DatapathArgs {
    /// Runs per case (the kernel's repeat count, or calls for per-call cases).
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Policy entries loaded while measuring.
    #[arg(long, default_value_t = 10_000)]
    policy_entries: u32,
    /// Only the per-repeat cases (skips the slower per-call ones).
    #[arg(long)]
    repeat_only: bool,
}

pub fn run(a: DatapathArgs, output: Output) -> Result<()> {
    let report = datapath::run(&Options {
        repeat: a.repeat,
        policy_entries: a.policy_entries,
        repeat_only: a.repeat_only,
    })?;
    super::emit(&report, output, print_table)
}

fn print_table(r: &Report) {
    println!(
        "pilus bench datapath: BPF_PROG_TEST_RUN, {} policy entries",
        r.policy_entries
    );
    println!(
        "{:<56} {:<9} {:>9} {:>10} {:>8}  verdict",
        "case", "method", "runs", "ns/packet", "x empty"
    );
    for c in &r.cases {
        println!(
            "{:<56} {:<9} {:>9} {:>10.1} {:>8.2}  {}",
            c.name, c.method, c.runs, c.ns_per_packet, c.ratio_to_empty, c.verdict
        );
    }
    println!(
        "target: established <= {} ns/packet: {}",
        r.target_established_ns,
        met(r.established_meets_target)
    );
    println!(
        "target: established <= {}x the empty classifier: {}",
        r.target_established_ratio,
        met(r.established_meets_ratio)
    );
}
