//! `pilus prefilter update|delete|list`: the XDP prefilter's deny list of
//! source CIDRs on the node's uplink, changed at run time (as `cilium
//! prefilter` does). A change is all or nothing: one bad CIDR refuses it.

use crate::{
    table::{print_json, Table},
    Output,
};
use anyhow::Result;
use clap::Subcommand;
use pilus_api_types::{paths, PrefilterChange, PrefilterList};
use pilus_client::blocking::Client;

#[derive(Subcommand, Debug)]
pub enum PrefilterCommand {
    /// Drop packets from these sources on the uplink, before the stack.
    Update {
        /// A source CIDR (198.19.0.0/16) or address; repeat for more.
        #[arg(long = "cidr", required = true, value_name = "CIDR")]
        cidrs: Vec<String>,
    },
    /// Stop dropping these sources; each must be on the list.
    Delete {
        /// A CIDR as listed; repeat for more.
        #[arg(long = "cidr", required = true, value_name = "CIDR")]
        cidrs: Vec<String>,
    },
    /// The deny list, with what each entry has dropped.
    List,
}

pub fn run(c: &Client, cmd: PrefilterCommand, out: Output) -> Result<()> {
    let list: PrefilterList = match cmd {
        PrefilterCommand::Update { cidrs } => {
            c.post_json(paths::PREFILTER, &PrefilterChange { cidrs })?
        }
        PrefilterCommand::Delete { cidrs } => {
            c.post_json(paths::PREFILTER_DELETE, &PrefilterChange { cidrs })?
        }
        PrefilterCommand::List => c.get_json(paths::PREFILTER)?,
    };
    if out == Output::Json {
        return print_json(&list);
    }
    match &list.device {
        Some(d) => println!(
            "XDP prefilter on {d}: {} of {} entries",
            list.entries.len(),
            list.max_entries
        ),
        None => println!(
            "the prefilter is not attached (pilusd --prefilter, with an uplink): the list is kept, nothing is filtered"
        ),
    }
    if !list.entries.is_empty() {
        let mut t = Table::new(&["CIDR", "DROPPED PACKETS", "DROPPED BYTES"]);
        for e in &list.entries {
            t.row(vec![
                e.cidr.clone(),
                e.packets.to_string(),
                e.bytes.to_string(),
            ]);
        }
        t.print();
    }
    Ok(())
}
