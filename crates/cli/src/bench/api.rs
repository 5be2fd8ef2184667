//! `pilus bench api`: `GET /v1/status` latency, threads and RSS of an idle
//! private pilusd, and of the same pilusd holding half-open connections
//! (`pilus_bench::api`).

use crate::{client::InvalidInput, Output};
use anyhow::Result;
use clap::Args;
use pilus_bench::{
    api::{self, Options, Readings, Report},
    stats::Latency,
};
use std::{path::PathBuf, time::Duration};

#[derive(Args, Debug)]
pub struct ApiArgs {
    /// Timed GET /v1/status requests in each phase (idle, held, idle again).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Half-open connections held (a request line and one header, never
    /// the blank line), reopened as the agent's header timeout closes them.
    #[arg(long, default_value_t = 1000)]
    half_open: usize,
    /// Seconds each phase lasts at least, its requests spread evenly over
    /// it (more than two of the agent's 5 s header timeouts by default, so
    /// the held phase sees every connection closed and reopened).
    #[arg(long, default_value_t = 12.0)]
    phase_seconds: f64,
    /// The pilusd binary (default: next to this one).
    #[arg(long)]
    pilusd: Option<PathBuf>,
}

pub fn run(a: ApiArgs, output: Output) -> Result<()> {
    let report = api::run(&Options {
        requests: a.requests,
        half_open: a.half_open,
        phase: Duration::try_from_secs_f64(a.phase_seconds)
            .map_err(|e| InvalidInput(format!("--phase-seconds {}: {e}", a.phase_seconds)))?,
        pilusd: super::pilusd(a.pilusd)?,
    })?;
    super::emit(&report, output, print_table)
}

fn print_table(r: &Report) {
    println!(
        "pilus bench api: GET /v1/status, {} requests per phase spread over {} s, private pilusd",
        r.requests, r.phase_s
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6}",
        "phase", "p50 ms", "p90 ms", "p99 ms", "max ms", "threads", "RSS KiB", "fds"
    );
    let held = format!("{} half-open held", r.half_open);
    for (name, l, x) in [
        ("idle (baseline)", &r.idle, &r.readings_idle),
        (held.as_str(), &r.held, &r.readings_held),
        ("idle again", &r.idle_after, &r.readings_after),
    ] {
        row(name, l, x);
    }
    println!(
        "held / idle: p50 x{:.2}, p99 x{:.2}",
        r.held_to_idle_p50, r.held_to_idle_p99
    );
    println!(
        "held phase {:.2} s: fewest open {} and accepted by the agent {} of {} at a request; {} closed by the header timeout and reopened; opened and accepted in {:.1} ms",
        r.held_phase_s, r.held_min, r.accepted_min, r.half_open, r.reopened, r.accept_ms
    );
}

fn row(name: &str, l: &Latency, x: &Readings) {
    println!(
        "{:<34} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8} {:>9} {:>6}",
        name, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, x.threads, x.rss_kib, x.open_fds
    );
}
