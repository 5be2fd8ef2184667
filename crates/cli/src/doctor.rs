//! `pilus doctor`: the node's faults that bypass or break the datapath, as
//! the agent finds them (`GET /v1/doctor`: it runs the checks in the node's
//! namespace, where the rules, routes, devices and maps are), printed with
//! their evidence and fix. Exit code 5 when any check found a fault.

use crate::{client::FaultsFound, table::print_json, Output};
use anyhow::Result;
use clap::Args;
use pilus_api_types::{paths, DoctorReport, Severity};
use pilus_client::blocking::Client;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct DoctorArgs {}

/// Walking a full conntrack table takes a while: longer than a usual call.
const TIMEOUT: Duration = Duration::from_secs(60);

fn tag(s: Severity) -> &'static str {
    match s {
        Severity::Ok => "[ok]   ",
        Severity::Warning => "[WARN] ",
        Severity::Fault => "[FAULT]",
    }
}

pub fn run(c: &Client, _args: DoctorArgs, out: Output) -> Result<()> {
    let c = c.clone().with_timeout(TIMEOUT);
    let r: DoctorReport = c.get_json(paths::DOCTOR)?;
    let count = |s: Severity| {
        r.checks
            .iter()
            .flat_map(|c| &c.findings)
            .filter(|f| f.severity == s)
            .count()
    };
    let (faults, warnings) = (count(Severity::Fault), count(Severity::Warning));
    if out == Output::Json {
        print_json(&r)?;
    } else {
        println!(
            "node {}: {faults} fault(s), {warnings} warning(s)\n",
            r.node_name
        );
        let width = r.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let indent = " ".repeat(tag(Severity::Ok).len() + width + 3);
        for check in &r.checks {
            println!(
                "{} {:<width$}  {}",
                tag(check.status),
                check.name,
                check.title
            );
            println!("{indent}{}", check.summary);
            for f in &check.findings {
                println!("{indent}{} {}", tag(f.severity).trim(), f.problem);
                for e in &f.evidence {
                    println!("{indent}  seen: {e}");
                }
                println!("{indent}  fix:  {}", f.fix);
            }
        }
    }
    if faults > 0 {
        return Err(FaultsFound(faults).into());
    }
    Ok(())
}
