//! `pilus bench policy`: policy change → enforced latency and the agent's
//! memory per endpoint, on a private pilusd with real endpoints
//! (`pilus_bench::policy`).

use super::{latency, met};
use crate::Output;
use anyhow::Result;
use clap::Args;
use pilus_bench::policy::{self, Options, Report};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// Endpoints created (real veth pairs).
    #[arg(long, default_value_t = 1000)]
    endpoints: usize,
    /// Rules imported (one CiliumNetworkPolicy each).
    #[arg(long, default_value_t = 1000)]
    rules: usize,
    /// Distinct workloads (identities) among the endpoints.
    #[arg(long, default_value_t = 100)]
    apps: usize,
    /// One-rule changes measured.
    #[arg(long, default_value_t = 300)]
    changes: usize,
    /// The pilusd binary (default: next to this one).
    #[arg(long)]
    pilusd: Option<PathBuf>,
}

pub fn run(a: PolicyArgs, output: Output) -> Result<()> {
    let report = policy::run(&Options {
        endpoints: a.endpoints,
        rules: a.rules,
        apps: a.apps,
        changes: a.changes,
        pilusd: super::pilusd(a.pilusd)?,
    })?;
    super::emit(&report, output, print_table)
}

fn print_table(r: &Report) {
    println!(
        "endpoints {}, rules {}, identities {}",
        r.endpoints, r.rules, r.identities
    );
    println!(
        "endpoint create (API, veth + maps): {}",
        latency(&r.create_endpoint)
    );
    println!(
        "initial import of {} rules:         {:.1} ms",
        r.rules, r.initial_import_ms
    );
    println!(
        "one-rule change → enforced:         {}  (target p99 ≤ {} ms: {})",
        latency(&r.one_rule_change),
        r.target_p99_ms,
        met(r.meets_latency_target)
    );
    println!(
        "API round trip (baseline):          {}  (change/round-trip p50 ×{:.1})",
        latency(&r.api_round_trip),
        r.change_to_round_trip_ratio
    );
    match &r.iptables_append {
        Some(x) => println!(
            "iptables -A into {} rules:          {}",
            r.rules,
            latency(x)
        ),
        None => {
            println!("iptables baseline:                  not measured (iptables not installed)")
        }
    }
    println!(
        "agent RSS: start {} KiB, +{} endpoints {} KiB, +{} rules {} KiB → {:.2} KiB/endpoint (target ≤ {}: {})",
        r.rss_start_kib,
        r.endpoints,
        r.rss_endpoints_kib,
        r.rules,
        r.rss_rules_kib,
        r.kib_per_endpoint,
        r.target_kib_per_endpoint,
        met(r.meets_memory_target)
    );
}
