//! `pilus monitor`: the datapath's events — traces, drops, policy verdicts,
//! debug messages, captures — one readable line each, or with `-j` one
//! `cilium monitor -j` JSON object per line; `-f` follows them live by
//! long-polling `GET /v1/monitor`. Events the datapath or the agent lost
//! are said, never skipped silently.

use crate::Output;
use anyhow::Result;
use clap::{Args, ValueEnum};
use pilus_api_types::{paths, MonitorBatch, MonitorKind, MONITOR_MAX_WAIT_MS};
use pilus_client::blocking::Client;
use pilus_client::encode_query;
use pilus_monitor::{cilium, format_line};
use std::io::Write;

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// Only events of this type (repeat for several): `trace`, `drop`,
    /// `policy-verdict`, `debug`, `capture`. Default: all.
    #[arg(short = 't', long = "type", value_name = "TYPE", value_enum)]
    types: Vec<EventType>,
    /// Only packets from this endpoint (id; repeat for several).
    #[arg(long, value_name = "EP")]
    from: Vec<u16>,
    /// Only packets to this endpoint.
    #[arg(long, value_name = "EP")]
    to: Vec<u16>,
    /// Only packets from or to this endpoint.
    #[arg(long, value_name = "EP")]
    related_to: Vec<u16>,
    /// One JSON object per event with `cilium monitor -j`'s fields
    /// (`type`, `observationPoint`, `traceSummary`, `source`, `srcLabel`,
    /// `dstLabel`, `dstID`, `state`, `ifindex`, `summary`, ...). `-o json`
    /// prints the same.
    #[arg(short = 'j', long)]
    json: bool,
    /// Start after this sequence number (an event's `seq`, or the `next`
    /// of an earlier answer) instead of at the oldest event the agent holds
    /// or, with --follow, at the newest.
    #[arg(long, value_name = "SEQ")]
    since: Option<u64>,
    /// Keep printing events as they happen, until interrupted (or --count).
    #[arg(short = 'f', long)]
    follow: bool,
    /// Stop after printing N events.
    #[arg(short = 'n', long, value_name = "N")]
    count: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EventType {
    Trace,
    Drop,
    PolicyVerdict,
    Debug,
    Capture,
}

impl EventType {
    fn kind(self) -> MonitorKind {
        match self {
            EventType::Trace => MonitorKind::Trace,
            EventType::Drop => MonitorKind::Drop,
            EventType::PolicyVerdict => MonitorKind::PolicyVerdict,
            EventType::Debug => MonitorKind::Debug,
            EventType::Capture => MonitorKind::Capture,
        }
    }
}

fn ids(v: &[u16]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The query string of everything but `since`, `wait_ms` and `last`.
fn filter_query(a: &MonitorArgs) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if !a.types.is_empty() {
        let t: Vec<&str> = a.types.iter().map(|t| t.kind().name()).collect();
        q.push(("type", t.join(",")));
    }
    for (name, v) in [
        ("from", &a.from),
        ("to", &a.to),
        ("related_to", &a.related_to),
    ] {
        if !v.is_empty() {
            q.push((name, ids(v)));
        }
    }
    q
}

fn fetch(
    c: &Client,
    filter: &[(&'static str, String)],
    since: u64,
    wait_ms: u64,
    last: Option<usize>,
) -> Result<MonitorBatch> {
    let mut q: Vec<(&str, String)> = vec![
        ("since", since.to_string()),
        ("wait_ms", wait_ms.to_string()),
    ];
    q.extend(filter.iter().cloned());
    if let Some(l) = last {
        q.push(("last", l.to_string()));
    }
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Ok(c.get_json(&format!("{}?{}", paths::MONITOR, encode_query(&q)))?)
}

pub fn run(c: &Client, args: MonitorArgs, out: Output) -> Result<()> {
    if args.count == Some(0) {
        return Ok(());
    }
    let json = args.json || out == Output::Json;
    let filter = filter_query(&args);
    let mut since = match (args.since, args.follow) {
        (Some(s), _) => s,
        (None, false) => 0,
        // Following starts now, as `cilium monitor` does: ask only where
        // "now" is.
        (None, true) => fetch(c, &filter, 0, 0, Some(0))?.next,
    };
    let wait_ms = if args.follow { MONITOR_MAX_WAIT_MS } else { 0 };
    let mut printed = 0u64;
    let mut stdout = std::io::stdout().lock();
    loop {
        let b = fetch(c, &filter, since, wait_ms, None)?;
        if b.lost > 0 {
            eprintln!(
                "!! {} events lost: the agent's buffer overwrote them before they were read",
                b.lost
            );
        }
        for e in &b.events {
            let line = if json {
                cilium::json_line(e)
            } else {
                format_line(e)
            };
            // A reader that went away (`| head`) ends the command quietly.
            if writeln!(stdout, "{line}").is_err() {
                return Ok(());
            }
            // A loss is said, but is not one of the events counted.
            if e.kind == MonitorKind::Lost {
                continue;
            }
            printed += 1;
            if args.count == Some(printed) {
                let _ = stdout.flush();
                return Ok(());
            }
        }
        // Live output must not wait in the pipe's buffer.
        if stdout.flush().is_err() {
            return Ok(());
        }
        since = b.next;
        if !args.follow {
            return Ok(());
        }
    }
}
