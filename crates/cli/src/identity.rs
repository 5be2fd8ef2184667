//! `pilus identity list|get`.

use crate::{
    table::{print_json, Table},
    Output,
};
use anyhow::Result;
use clap::Subcommand;
use pilus_api_types::paths;
use pilus_api_types::Identity;
use pilus_client::blocking::Client;

#[derive(Subcommand, Debug)]
pub enum IdentityCommand {
    /// List identities: reserved, cluster (pod labels) and CIDR.
    List,
    /// Show one identity by number.
    Get { id: u32 },
}

pub fn run(c: &Client, cmd: IdentityCommand, out: Output) -> Result<()> {
    let ids: Vec<Identity> = match cmd {
        IdentityCommand::List => c.get_json(paths::IDENTITIES)?,
        IdentityCommand::Get { id } => vec![c.get_json(&format!("{}/{id}", paths::IDENTITIES))?],
    };
    if out == Output::Json {
        return print_json(&ids);
    }
    let mut t = Table::new(&["ID", "KIND", "USERS", "LABELS"]);
    for i in &ids {
        t.row(vec![
            i.id.to_string(),
            i.kind.clone(),
            i.refs.to_string(),
            i.labels.join("\n"),
        ]);
    }
    t.print();
    Ok(())
}
