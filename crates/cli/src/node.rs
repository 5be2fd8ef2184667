//! `pilus node list`: the cluster's nodes as the agent knows them (from
//! the node registry in etcd).

use crate::{
    table::{print_json, Table},
    Output,
};
use anyhow::Result;
use clap::Subcommand;
use pilus_api_types::{paths, Node};
use pilus_client::blocking::Client;

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Every node: underlay address, pod CIDR, routing; `*` marks this one.
    List,
}

pub fn run(c: &Client, cmd: NodeCommand, out: Output) -> Result<()> {
    match cmd {
        NodeCommand::List => {
            let v: Vec<Node> = c.get_json(paths::NODES)?;
            if out == Output::Json {
                return print_json(&v);
            }
            if v.is_empty() {
                println!("this node is on its own (pilusd runs without --etcd)");
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "UNDERLAY", "POD CIDR", "ROUTING"]);
            for n in &v {
                let name = if n.local {
                    format!("{} *", n.name)
                } else {
                    n.name.clone()
                };
                t.row(vec![
                    name,
                    n.underlay_ip.to_string(),
                    n.pod_cidr.clone(),
                    n.routing.clone(),
                ]);
            }
            t.print();
        }
    }
    Ok(())
}
