//! `pilus bench restart`: how long pilusd takes to start again with its
//! endpoints restored, against the same restart with none
//! (`pilus_bench::restart`).

use crate::Output;
use anyhow::Result;
use clap::Args;
use pilus_bench::restart::{self, Options, Report, MAX_ENDPOINTS};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// Endpoints restored (each a veth pair into a namespace of its own).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=MAX_ENDPOINTS as i64))]
    endpoints: u32,
    /// Restarts timed, with and without the endpoints.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    restarts: u32,
    /// The pilusd binary (default: next to this one).
    #[arg(long)]
    pilusd: Option<PathBuf>,
}

pub fn run(a: RestartArgs, output: Output) -> Result<()> {
    let report = restart::run(&Options {
        endpoints: a.endpoints as usize,
        restarts: a.restarts as usize,
        pilusd: super::pilusd(a.pilusd)?,
    })?;
    super::emit(&report, output, print_table)
}

fn print_table(r: &Report) {
    println!(
        "pilus bench restart: pilusd stopped (SIGTERM) and started again, timed until it answers"
    );
    println!(
        "{:<34} {:>5} {:>9} {:>9} {:>9}",
        "restart", "runs", "p50 ms", "p90 ms", "max ms"
    );
    let full = format!("{} endpoints restored", r.endpoints);
    for (name, l) in [
        ("no endpoints (baseline)", &r.empty),
        (full.as_str(), &r.restored),
    ] {
        println!(
            "{:<34} {:>5} {:>9.1} {:>9.1} {:>9.1}",
            name, l.runs, l.p50_ms, l.p90_ms, l.max_ms
        );
    }
    println!(
        "restored / empty at p50: x{:.2}; last resync wrote {}, removed {}",
        r.ratio_p50, r.resync_written, r.resync_removed
    );
}
