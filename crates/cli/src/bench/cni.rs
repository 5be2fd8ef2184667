//! `pilus bench cni`: CNI ADD and DEL latency of `pilus-cni` as a runtime
//! runs it, on a one-node lab with a private pilusd, against in-process
//! plumbing and a bare plugin exec (`pilus_bench::cni`).

use super::met;
use crate::Output;
use anyhow::Result;
use clap::Args;
use pilus_bench::cni::{self, Options, Report, MAX_PODS};

#[derive(Args, Debug)]
pub struct CniArgs {
    /// Pods attached (ADD) and then detached (DEL), one at a time.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PODS)))]
    pods: u32,
}

pub fn run(a: CniArgs, output: Output) -> Result<()> {
    let report = cni::run(&Options {
        pods: a.pods,
        bin_dir: super::bin_dir()?,
    })?;
    super::emit(&report, output, print_table)
}

fn print_table(r: &Report) {
    println!(
        "pilus bench cni: {} pods, one at a time, one node (private pilusd)",
        r.pods
    );
    println!(
        "{:<46} {:>5} {:>8} {:>8} {:>8} {:>8}",
        "case", "runs", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (name, l) in [
        ("CNI ADD (exec pilus-cni, as a runtime does)", &r.add),
        ("CNI DEL", &r.del),
        (
            "baseline: veth + address + routes, in-process",
            &r.plumbing_create,
        ),
        ("baseline: veth delete, in-process", &r.plumbing_delete),
        ("baseline: exec pilus-cni VERSION", &r.exec_version),
    ] {
        println!(
            "{:<46} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            name, l.runs, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
        );
    }
    println!(
        "ADD / plumbing: p99 x{:.1}, p50 x{:.1};  DEL / veth delete: p99 x{:.1}",
        r.add_p99_to_plumbing_p99, r.add_p50_to_plumbing_p50, r.del_p99_to_plumbing_delete_p99
    );
    let b = &r.add_p50_breakdown;
    println!(
        "median ADD {:.2} ms = exec {:.2} + plumbing {:.2} + agent and the rest {:.2}",
        r.add.p50_ms, b.exec_ms, b.plumbing_ms, b.agent_and_rest_ms
    );
    println!(
        "target: ADD p99 <= {} ms: {}",
        r.target_add_p99_ms,
        met(r.add_meets_target)
    );
}
