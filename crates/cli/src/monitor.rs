//! `pilus monitor`: the datapath's drop and trace events, one line each, as
//! `cilium monitor` prints them; `-f` follows them live by long-polling
//! `GET /v1/monitor`.

use crate::Output;
use anyhow::Result;
use clap::{Args, ValueEnum};
use pilus_api_types::paths;
use pilus_api_types::MonitorBatch;
use pilus_api_types::MonitorFilter;
use pilus_api_types::MONITOR_MAX_WAIT_MS;
use pilus_client::blocking::Client;
use pilus_client::encode_query;
use pilus_monitor::format_line;
use std::io::Write;

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// Which events: `drop`, `trace` (forwarded packets; only when pilusd
    /// runs with --trace) or `all`.
    #[arg(short = 't', long = "type", value_name = "TYPE", value_enum, default_value_t = EventType::All)]
    kind: EventType,
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
    Drop,
    Trace,
    All,
}

impl EventType {
    fn filter(self) -> MonitorFilter {
        match self {
            EventType::Drop => MonitorFilter::Drop,
            EventType::Trace => MonitorFilter::Trace,
            EventType::All => MonitorFilter::All,
        }
    }
}

fn fetch(
    c: &Client,
    since: u64,
    filter: MonitorFilter,
    wait_ms: u64,
    last: Option<usize>,
) -> Result<MonitorBatch> {
    let (since, wait_ms) = (since.to_string(), wait_ms.to_string());
    let last = last.map(|n| n.to_string());
    let mut q = vec![
        ("since", since.as_str()),
        ("type", filter.as_str()),
        ("wait_ms", wait_ms.as_str()),
    ];
    if let Some(l) = &last {
        q.push(("last", l.as_str()));
    }
    Ok(c.get_json(&format!("{}?{}", paths::MONITOR, encode_query(&q)))?)
}

pub fn run(c: &Client, args: MonitorArgs, out: Output) -> Result<()> {
    if args.count == Some(0) {
        return Ok(());
    }
    let filter = args.kind.filter();
    let mut since = match (args.since, args.follow) {
        (Some(s), _) => s,
        (None, false) => 0,
        // Following starts now, as `cilium monitor` does: ask only where
        // "now" is.
        (None, true) => fetch(c, 0, filter, 0, Some(0))?.next,
    };
    let wait_ms = if args.follow { MONITOR_MAX_WAIT_MS } else { 0 };
    let mut printed = 0u64;
    let mut stdout = std::io::stdout().lock();
    loop {
        let b = fetch(c, since, filter, wait_ms, None)?;
        if b.lost > 0 {
            eprintln!(
                "!! {} events lost: the agent's buffer overwrote them before they were read",
                b.lost
            );
        }
        for e in &b.events {
            let line = match out {
                Output::Human => format_line(e),
                Output::Json => serde_json::to_string(e)?,
            };
            // A reader that went away (`| head`) ends the command quietly.
            if writeln!(stdout, "{line}").is_err() {
                return Ok(());
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
