//! `pilus observe`: flow records, as `hubble observe` prints them — a
//! compact line, a table or JSON per flow — this node's or, with
//! --all-nodes, every node's; --follow long-polls `GET /v1/flows` with the
//! cursor each answer hands back. Flows the buffers lost are said.

use crate::Output;
use anyhow::Result;
use clap::{Args, ValueEnum};
use pilus_api_types::{paths, FlowBatch, MONITOR_MAX_WAIT_MS};
use pilus_client::blocking::Client;
use pilus_client::encode_query;
use pilus_monitor::flow::{format_compact, format_table};
use std::io::Write;

#[derive(Args, Debug)]
pub struct ObserveArgs {
    /// Only flows from or to this pod (`NAMESPACE/NAME`, or `NAME` in any
    /// namespace; repeat for several).
    #[arg(long, value_name = "POD")]
    pod: Vec<String>,
    /// Only flows from or to a pod of this namespace.
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Vec<String>,
    /// Only FORWARDED or DROPPED flows.
    #[arg(long, value_enum, ignore_case = true)]
    verdict: Vec<Verdict>,
    /// Only flows from or to this port.
    #[arg(long)]
    port: Vec<u16>,
    /// Only flows of this protocol.
    #[arg(long, value_enum, ignore_case = true)]
    protocol: Vec<Protocol>,
    /// Every node's flows, not only this node's.
    #[arg(long)]
    all_nodes: bool,
    /// Only the newest N flows (of what the agents hold), then exit.
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// Keep printing flows as they happen, until interrupted (or --count).
    #[arg(short = 'f', long)]
    follow: bool,
    /// Stop after printing N flows.
    #[arg(short = 'n', long, value_name = "N")]
    count: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
enum Verdict {
    Forwarded,
    Dropped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

/// The query string of the filters.
fn filter_query(a: &ObserveArgs) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    let verdicts: Vec<&str> = a
        .verdict
        .iter()
        .map(|v| match v {
            Verdict::Forwarded => "FORWARDED",
            Verdict::Dropped => "DROPPED",
        })
        .collect();
    let protocols: Vec<&str> = a
        .protocol
        .iter()
        .map(|p| match p {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        })
        .collect();
    for (k, v) in [
        ("pod", join(&a.pod)),
        ("namespace", join(&a.namespace)),
        ("verdict", verdicts.join(",")),
        ("port", join(&a.port)),
        ("protocol", protocols.join(",")),
    ] {
        if !v.is_empty() {
            q.push((k, v));
        }
    }
    if a.all_nodes {
        q.push(("nodes", "all".into()));
    }
    q
}

fn fetch(
    c: &Client,
    filter: &[(&'static str, String)],
    since: &str,
    wait_ms: u64,
    last: Option<usize>,
) -> Result<FlowBatch> {
    let mut q: Vec<(&str, String)> =
        vec![("since", since.into()), ("wait_ms", wait_ms.to_string())];
    q.extend(filter.iter().cloned());
    if let Some(l) = last {
        q.push(("last", l.to_string()));
    }
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Ok(c.get_json(&format!("{}?{}", paths::FLOWS, encode_query(&q)))?)
}

/// The cursor to resume from: every node's `next`.
fn cursor(b: &FlowBatch) -> String {
    b.nodes
        .iter()
        .map(|n| format!("{}:{}", n.node, n.next))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn run(c: &Client, args: ObserveArgs, out: Output) -> Result<()> {
    if args.count == Some(0) {
        return Ok(());
    }
    let filter = filter_query(&args);
    // Following starts now, as `hubble observe -f` does.
    let mut since = if args.follow && args.last.is_none() {
        cursor(&fetch(c, &filter, "", 0, Some(0))?)
    } else {
        String::new()
    };
    let wait_ms = if args.follow { MONITOR_MAX_WAIT_MS } else { 0 };
    let mut last = args.last;
    let mut printed = 0u64;
    let mut header = out == Output::Table;
    let mut stdout = std::io::stdout().lock();
    loop {
        let b = fetch(c, &filter, &since, wait_ms, last.take())?;
        for n in &b.nodes {
            if let Some(e) = &n.error {
                eprintln!("!! node {}: not answering: {e}", n.node);
            }
            if n.lost > 0 {
                eprintln!(
                    "!! node {}: {} events lost (a full buffer overwrote them before they were read)",
                    n.node, n.lost
                );
            }
        }
        let take = match args.count {
            Some(n) => ((n - printed) as usize).min(b.flows.len()),
            None => b.flows.len(),
        };
        let flows = &b.flows[..take];
        let lines: Vec<String> = match out {
            Output::Json => flows
                .iter()
                .map(|f| serde_json::to_string(f).expect("a flow serializes"))
                .collect(),
            Output::Table if !flows.is_empty() => {
                let mut t = format_table(flows);
                if !header {
                    t.remove(0);
                }
                header = false;
                t
            }
            Output::Table => Vec::new(),
            Output::Human | Output::Compact => flows.iter().map(format_compact).collect(),
        };
        for line in lines {
            // A reader that went away (`| head`) ends the command quietly.
            if writeln!(stdout, "{line}").is_err() {
                return Ok(());
            }
        }
        printed += take as u64;
        if stdout.flush().is_err() || args.count == Some(printed) {
            return Ok(());
        }
        since = cursor(&b);
        if !args.follow {
            return Ok(());
        }
    }
}
