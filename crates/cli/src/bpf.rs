//! `pilus bpf …`: the datapath's maps as the kernel holds them (read by the
//! agent from the pinned maps), like `cilium bpf`.

use crate::{
    table::{print_json, Table},
    Output,
};
use anyhow::Result;
use clap::Subcommand;
use pilus_api_types::paths;
use pilus_api_types::BpfCtEntry;
use pilus_api_types::BpfEndpointEntry;
use pilus_api_types::BpfIpcacheEntry;
use pilus_api_types::BpfLbFrontend;
use pilus_api_types::BpfPolicyEntry;
use pilus_api_types::Deleted;
use pilus_client::blocking::Client;
use pilus_policy::Protocol;

#[derive(Subcommand, Debug)]
pub enum BpfCommand {
    /// The policy map.
    #[command(subcommand)]
    Policy(BpfPolicyCommand),
    /// The ipcache: address prefixes → security identities.
    #[command(subcommand)]
    Ipcache(BpfListCommand),
    /// The endpoint map: interfaces → endpoints.
    #[command(subcommand)]
    Endpoint(BpfListCommand),
    /// The connection tracking table.
    #[command(subcommand)]
    Ct(BpfCtCommand),
    /// The service maps, per frontend: the backends new flows choose from
    /// (slot order, or each once for Maglev) and the reverse NAT.
    #[command(subcommand)]
    Lb(BpfListCommand),
}

#[derive(Subcommand, Debug)]
pub enum BpfPolicyCommand {
    /// One endpoint's entries (by id, container id, address or namespace/pod).
    Get { endpoint: String },
}

#[derive(Subcommand, Debug)]
pub enum BpfListCommand {
    List,
}

#[derive(Subcommand, Debug)]
pub enum BpfCtCommand {
    List,
    /// Remove every entry (established flows then meet policy again).
    Flush,
}

fn proto_name(p: u8) -> String {
    match (p, Protocol::from_number(p)) {
        (0, _) => "ANY".into(),
        (_, Some(x)) => x.to_string(),
        (n, None) => n.to_string(),
    }
}

pub fn run(c: &Client, cmd: BpfCommand, out: Output) -> Result<()> {
    match cmd {
        BpfCommand::Policy(BpfPolicyCommand::Get { endpoint }) => {
            let v: Vec<BpfPolicyEntry> =
                c.get_json(&format!("{}/{endpoint}", paths::BPF_POLICY))?;
            if out == Output::Json {
                return print_json(&v);
            }
            let mut t = Table::new(&[
                "POLICY",
                "DIRECTION",
                "IDENTITY",
                "PORT/PROTO",
                "PREFIX",
                "COOKIE",
            ]);
            for e in &v {
                let port = match (e.protocol, e.port, e.port_end) {
                    (0, _, _) => "ANY".to_string(),
                    (p, 0, 65535) => format!("ANY/{}", proto_name(p)),
                    (p, a, b) if a == b => format!("{a}/{}", proto_name(p)),
                    (p, a, b) => format!("{a}-{b}/{}", proto_name(p)),
                };
                t.row(vec![
                    if e.deny { "Deny" } else { "Allow" }.into(),
                    e.direction.clone(),
                    if e.identity == 0 {
                        "ANY".into()
                    } else {
                        e.identity.to_string()
                    },
                    port,
                    e.prefix_len.to_string(),
                    e.cookie.to_string(),
                ]);
            }
            t.print();
        }
        BpfCommand::Ipcache(BpfListCommand::List) => {
            let v: Vec<BpfIpcacheEntry> = c.get_json(paths::BPF_IPCACHE)?;
            if out == Output::Json {
                return print_json(&v);
            }
            let mut t = Table::new(&["PREFIX", "IDENTITY"]);
            for e in &v {
                t.row(vec![e.prefix.clone(), e.identity.to_string()]);
            }
            t.print();
        }
        BpfCommand::Endpoint(BpfListCommand::List) => {
            let v: Vec<BpfEndpointEntry> = c.get_json(paths::BPF_ENDPOINTS)?;
            if out == Output::Json {
                return print_json(&v);
            }
            let mut t = Table::new(&["IFINDEX", "ENDPOINT", "IPV4", "IDENTITY", "MAC"]);
            for e in &v {
                t.row(vec![
                    e.ifindex.to_string(),
                    e.endpoint.to_string(),
                    e.ipv4.to_string(),
                    e.identity.to_string(),
                    e.mac.clone(),
                ]);
            }
            t.print();
        }
        BpfCommand::Ct(BpfCtCommand::List) => {
            let v: Vec<BpfCtEntry> = c.get_json(paths::BPF_CT)?;
            if out == Output::Json {
                return print_json(&v);
            }
            let mut t = Table::new(&["PROTO", "SOURCE", "DESTINATION", "STATE", "EXPIRES", "NAT"]);
            for e in &v {
                t.row(vec![
                    proto_name(e.protocol),
                    e.src.clone(),
                    e.dst.clone(),
                    e.state.clone(),
                    format!("{}s", e.expires_in),
                    e.nat.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            t.print();
        }
        BpfCommand::Lb(BpfListCommand::List) => {
            let v: Vec<BpfLbFrontend> = c.get_json(paths::BPF_LB)?;
            if out == Output::Json {
                return print_json(&v);
            }
            let mut t = Table::new(&[
                "FRONTEND",
                "ID",
                "TYPE",
                "ALGORITHM",
                "GEN",
                "COUNT",
                "AFFINITY",
                "BACKENDS",
                "REV-NAT",
            ]);
            for e in &v {
                t.row(vec![
                    e.frontend.clone(),
                    e.id.to_string(),
                    if e.local_traffic_only {
                        format!("{} (Local)", e.kind)
                    } else {
                        e.kind.clone()
                    },
                    e.algorithm.clone(),
                    e.generation.to_string(),
                    e.count.to_string(),
                    e.affinity_seconds.map_or("-".into(), |s| format!("{s}s")),
                    if e.backends.is_empty() {
                        "(none: DROP_NO_SERVICE_BACKEND)".into()
                    } else {
                        e.backends.join(" ")
                    },
                    e.rev_nat.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            t.print();
        }
        BpfCommand::Ct(BpfCtCommand::Flush) => {
            let d: Deleted = c.delete_json(paths::BPF_CT)?;
            if out == Output::Json {
                return print_json(&d);
            }
            println!("flushed {} entries", d.deleted);
        }
    }
    Ok(())
}
