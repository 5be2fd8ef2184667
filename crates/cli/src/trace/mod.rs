//! `pilus trace`: what would happen to this packet? The agent builds it
//! (`POST /v1/trace`), runs it through the loaded programs on a private
//! copy of the state they write, and answers with its steps; here they are
//! printed, numbered, with the verdict, or drawn as a sequence diagram
//! ([`svg`]).

mod svg;

use crate::{table::print_json, Output};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use pilus_api_types::{paths, PacketTrace, PacketTraceRequest};
use pilus_client::blocking::Client;
use std::{path::PathBuf, time::Duration};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// The sending pod: namespace/name, an endpoint id, a container id or
    /// its address.
    #[arg(long)]
    pub from: String,
    /// The destination: a pod (as --from), or an IPv4 address with an
    /// optional :port.
    #[arg(long)]
    pub to: String,
    /// The protocol: a TCP SYN, a UDP datagram or an ICMP echo request.
    #[arg(long, value_enum, default_value_t = Proto::Tcp)]
    pub proto: Proto,
    /// The destination port (tcp, udp), unless --to gives it.
    #[arg(long)]
    pub port: Option<u16>,
    /// The source port (tcp, udp): trace a packet of the flow that uses
    /// it. Its live conntrack entries are copied into the trace's own table
    /// (never changed), and a TCP packet of a known connection is an ACK.
    /// Without it: the first packet of a new flow.
    #[arg(long)]
    pub sport: Option<u16>,
    /// Also draw the packet's life as a sequence diagram (SVG) into FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// The first trace loads a private copy of the programs (the verifier's
/// time): longer than a usual call.
const TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(c: &Client, a: TraceArgs, out: Output) -> Result<()> {
    let c = c.clone().with_timeout(TIMEOUT);
    let t: PacketTrace = c.post_json(
        paths::PACKET_TRACE,
        &PacketTraceRequest {
            from: a.from,
            to: a.to,
            proto: a.proto.name().into(),
            port: a.port,
            sport: a.sport,
        },
    )?;
    if let Some(path) = &a.svg {
        std::fs::write(path, svg::render(&t))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match out {
        Output::Json => print_json(&t)?,
        Output::Human | Output::Compact | Output::Table => print!("{}", render(&t)),
    }
    Ok(())
}

fn endpoint_name(p: &pilus_api_types::TracePeer) -> String {
    match &p.pod {
        Some(pod) => format!("{pod} ({})", p.ip),
        None => p.ip.to_string(),
    }
}

/// The trace for people: what was sent, the numbered steps, the verdict.
pub fn render(t: &PacketTrace) -> String {
    let port = t.dport.map(|p| format!(":{p}")).unwrap_or_default();
    let mut s = format!(
        "Tracing {} {} -> {}{port} on node {}\n\n",
        t.proto,
        endpoint_name(&t.from),
        endpoint_name(&t.to),
        t.node
    );
    let width = t.steps.len().to_string().len();
    for (i, step) in t.steps.iter().enumerate() {
        s.push_str(&format!("{:>width$}. {}\n", i + 1, step.text));
    }
    s.push_str(&format!(
        "\nVerdict: {} [{}]\n",
        t.verdict.summary, t.verdict.tc_verdict
    ));
    if let Some(ms) = t.load_ms {
        s.push_str(&format!(
            "(the agent loaded its private copy of the programs for this trace: {ms} ms)\n"
        ));
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pilus_api_types::{TraceLane, TraceOutcome, TracePeer, TraceStep, TraceVerdict};
    use std::net::Ipv4Addr;

    pub fn sample(outcome: TraceOutcome) -> PacketTrace {
        let step = |lane, to_lane, text: &str| TraceStep {
            lane,
            to_lane,
            text: text.into(),
            event: None,
        };
        let mut steps = vec![
            step(
                TraceLane::SourcePod,
                Some(TraceLane::SourceVeth),
                "pod shop/client sends 198.18.0.5:40000 -> 198.18.0.6:80 tcp SYN",
            ),
            step(TraceLane::SourceVeth, None, "conntrack: new flow"),
        ];
        let summary = match outcome {
            TraceOutcome::Delivered => {
                steps.push(step(
                    TraceLane::SourceVeth,
                    Some(TraceLane::DestinationPod),
                    "to-endpoint: redirected to pod shop/web",
                ));
                "delivered to pod shop/web"
            }
            TraceOutcome::Dropped => {
                steps.push(step(
                    TraceLane::SourceVeth,
                    None,
                    "dropped: Policy denied <by> \"x\" & y",
                ));
                "dropped: Policy denied"
            }
            TraceOutcome::Stack => {
                steps.push(step(
                    TraceLane::SourceVeth,
                    Some(TraceLane::Node),
                    "to-stack",
                ));
                "to the stack"
            }
            TraceOutcome::Tunnel => {
                steps.push(step(
                    TraceLane::SourceVeth,
                    Some(TraceLane::Tunnel),
                    "to-overlay",
                ));
                steps.push(step(
                    TraceLane::Tunnel,
                    Some(TraceLane::RemoteNode),
                    "VXLAN to node-2",
                ));
                "to node-2 via tunnel"
            }
        };
        PacketTrace {
            node: "node-1".into(),
            from: TracePeer {
                ip: Ipv4Addr::new(198, 18, 0, 5),
                pod: Some("shop/client".into()),
                endpoint: Some(1),
            },
            to: TracePeer {
                ip: Ipv4Addr::new(198, 18, 0, 6),
                pod: Some("shop/web".into()),
                endpoint: Some(2),
            },
            proto: "tcp".into(),
            sport: Some(40000),
            dport: Some(80),
            steps,
            verdict: TraceVerdict {
                outcome,
                summary: summary.into(),
                pod: None,
                tunnel_endpoint: None,
                node: None,
                reason: None,
                policy: None,
                tc_verdict: "TC_ACT_REDIRECT".into(),
            },
            conntrack_copied: 0,
            load_ms: Some(310),
        }
    }

    #[test]
    fn steps_are_numbered_and_the_verdict_ends_the_story() {
        let text = render(&sample(TraceOutcome::Delivered));
        assert_eq!(
            text,
            "Tracing tcp shop/client (198.18.0.5) -> shop/web (198.18.0.6):80 on node node-1\n\n\
             1. pod shop/client sends 198.18.0.5:40000 -> 198.18.0.6:80 tcp SYN\n\
             2. conntrack: new flow\n\
             3. to-endpoint: redirected to pod shop/web\n\n\
             Verdict: delivered to pod shop/web [TC_ACT_REDIRECT]\n\
             (the agent loaded its private copy of the programs for this trace: 310 ms)\n"
        );
    }
}
