//! `pilus ipcache list`: the control plane's ipcache, with every writer of
//! each prefix (unlike `pilus bpf ipcache list`, which shows what the
//! datapath holds: the winners only).

use crate::{
    table::{print_json, Table},
    Output,
};
use anyhow::Result;
use clap::Subcommand;
use pilus_api_types::{paths, IpcacheEntry};
use pilus_client::blocking::Client;

#[derive(Subcommand, Debug)]
pub enum IpcacheCommand {
    /// Every prefix, its identity and who wrote it (the winner first).
    List,
}

pub fn run(c: &Client, cmd: IpcacheCommand, out: Output) -> Result<()> {
    match cmd {
        IpcacheCommand::List => {
            let v: Vec<IpcacheEntry> = c.get_json(paths::IPCACHE)?;
            if out == Output::Json {
                return print_json(&v);
            }
            let mut t = Table::new(&["PREFIX", "IDENTITY", "SOURCES"]);
            for e in &v {
                let sources: Vec<String> = e
                    .sources
                    .iter()
                    .map(|s| match s.tunnel_endpoint {
                        Some(n) => format!("{} {} via {n}", s.source, s.identity),
                        None => format!("{} {}", s.source, s.identity),
                    })
                    .collect();
                t.row(vec![
                    e.prefix.clone(),
                    e.identity.to_string(),
                    sources.join(", "),
                ]);
            }
            t.print();
        }
    }
    Ok(())
}
