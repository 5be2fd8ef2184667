//! `pilus policy import|get|delete|trace`.

use crate::{
    table::{print_json, Table},
    Output,
};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use pilus_api_types::paths;
use pilus_api_types::Deleted;
use pilus_api_types::DirectionTrace;
use pilus_api_types::PolicyFile;
use pilus_api_types::PolicyImport;
use pilus_api_types::PolicyImported;
use pilus_api_types::PolicySummary;
use pilus_api_types::Trace;
use pilus_api_types::TraceRequest;
use pilus_api_types::Verdict;
use pilus_client::blocking::Client;
use std::io::Read;

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Import policy files (YAML or JSON; CiliumNetworkPolicy,
    /// CiliumClusterwideNetworkPolicy, `cilium policy import` rule arrays,
    /// Kubernetes NetworkPolicy; several documents per file). All or
    /// nothing: one invalid document rejects the whole import. Returns once
    /// the new revision is enforced. `-` reads standard input.
    Import {
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Show imported policies, or one by name (`name` or `namespace/name`).
    Get { name: Option<String> },
    /// Delete a policy by name, or every policy with --all.
    Delete {
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// Would traffic from SRC to DST on a port be allowed, and by which rules?
    Trace(TraceArgs),
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// Source: endpoint id, pod address, namespace/pod, container id, any
    /// other address, or labels (`k8s:app=web,k8s:io.kubernetes.pod.namespace=shop`).
    #[arg(short = 's', long)]
    src: String,
    /// Destination, in the same forms as --src.
    #[arg(short = 'd', long)]
    dst: String,
    /// Destination port and protocol: `80/TCP`, `53/UDP`, `8/ICMP` (ICMP type).
    /// The protocol defaults to TCP.
    #[arg(long)]
    dport: String,
}

fn read_file(f: &str) -> Result<PolicyFile> {
    let text = if f == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?
    };
    Ok(PolicyFile {
        name: if f == "-" {
            "<stdin>".into()
        } else {
            f.to_string()
        },
        text,
    })
}

pub fn parse_dport(s: &str) -> Result<(u16, String)> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "TCP"));
    let port: u16 = port.parse().map_err(|_| {
        crate::client::InvalidInput(format!(
            "--dport {s:?}: expected PORT[/PROTOCOL], e.g. 80/TCP"
        ))
    })?;
    Ok((port, proto.to_ascii_uppercase()))
}

fn verdict_text(v: &Verdict) -> &'static str {
    match v {
        Verdict::Unenforced => "allowed (no policy selects it in this direction)",
        Verdict::Allowed { .. } => "allowed",
        Verdict::DeniedByDefault => "DENIED (selected, and no rule allows it: default deny)",
        Verdict::Denied { .. } => "DENIED (a deny rule matches)",
    }
}

fn print_direction(label: &str, t: &DirectionTrace) {
    println!("{label} policy of {}:", t.endpoint);
    if t.selected_by.is_empty() {
        println!("  no policy selects it");
    } else {
        println!("  selected by: {}", t.selected_by.join("; "));
    }
    for m in &t.matches {
        let what = if m.deny { "denied by" } else { "allowed by" };
        println!("  {what} {} ({})", m.policy, m.rule);
    }
    if t.matches.is_empty() && !t.selected_by.is_empty() {
        println!("  no rule matches this peer and port");
    }
    println!("  verdict: {}", verdict_text(&t.verdict));
    if t.datapath != t.verdict && t.datapath.allowed() != t.verdict.allowed() {
        println!(
            "  WARNING: the datapath entries answer {}",
            verdict_text(&t.datapath)
        );
    }
}

pub fn run(c: &Client, cmd: PolicyCommand, out: Output) -> Result<()> {
    match cmd {
        PolicyCommand::Import { files } => {
            let files = files
                .iter()
                .map(|f| read_file(f))
                .collect::<Result<Vec<_>>>()?;
            let r: PolicyImported = c.post_json(paths::POLICIES, &PolicyImport { files })?;
            if out == Output::Json {
                return print_json(&r);
            }
            for p in &r.policies {
                println!("imported {p}");
            }
            println!("policy revision {} enforced", r.revision);
        }
        PolicyCommand::Get { name } => {
            let path = match &name {
                Some(n) => format!("{}/{n}", paths::POLICIES),
                None => paths::POLICIES.to_string(),
            };
            let v: Vec<PolicySummary> = c.get_json(&path)?;
            if out == Output::Json {
                return print_json(&v);
            }
            if name.is_some() {
                for p in &v {
                    println!(
                        "# {} {}",
                        p.kind,
                        p.namespace
                            .as_deref()
                            .map_or(p.name.clone(), |ns| format!("{ns}/{}", p.name))
                    );
                    println!("{}", serde_json::to_string_pretty(&p.source)?);
                }
                return Ok(());
            }
            let mut t = Table::new(&["KIND", "NAMESPACE", "NAME", "RULES", "ENDPOINTS"]);
            for p in &v {
                t.row(vec![
                    p.kind.clone(),
                    p.namespace.clone().unwrap_or_else(|| "-".into()),
                    p.name.clone(),
                    p.rules.to_string(),
                    p.endpoints.to_string(),
                ]);
            }
            t.print();
        }
        PolicyCommand::Delete { name, all } => {
            let path = match (&name, all) {
                (Some(n), false) => format!("{}/{n}", paths::POLICIES),
                (None, true) => format!("{}?all=true", paths::POLICIES),
                _ => bail!("name a policy to delete, or pass --all"),
            };
            let d: Deleted = c.delete_json(&path)?;
            if out == Output::Json {
                return print_json(&d);
            }
            println!(
                "deleted {} policies; policy revision {} enforced",
                d.deleted, d.revision
            );
        }
        PolicyCommand::Trace(a) => {
            let (port, protocol) = parse_dport(&a.dport)?;
            let req = TraceRequest {
                src: a.src,
                dst: a.dst,
                port,
                protocol: protocol.clone(),
            };
            let t: Trace = c.post_json(paths::TRACE, &req)?;
            if out == Output::Json {
                return print_json(&t);
            }
            println!("Tracing {} -> {} on {port}/{protocol}\n", t.src, t.dst);
            match &t.egress {
                Some(e) => print_direction("Egress", e),
                None => {
                    println!("Egress: the source is not a local endpoint; no egress policy applies")
                }
            }
            println!();
            match &t.ingress {
                Some(i) => print_direction("Ingress", i),
                None => println!(
                    "Ingress: the destination is not a local endpoint; no ingress policy applies"
                ),
            }
            println!(
                "\nFinal verdict: {}",
                if t.allowed { "ALLOWED" } else { "DENIED" }
            );
        }
    }
    Ok(())
}
