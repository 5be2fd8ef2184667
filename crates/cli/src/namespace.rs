//! `pilus namespace label|list`: the labels Kubernetes namespaceSelectors
//! match (a namespace's pods change identity when they change).

use crate::{
    table::{print_json, Table},
    Output,
};
use anyhow::Result;
use clap::Subcommand;
use pilus_api_types::paths;
use pilus_api_types::NamespaceLabels;
use pilus_client::blocking::Client;

#[derive(Subcommand, Debug)]
pub enum NamespaceCommand {
    /// Set a namespace's labels (replacing the previous ones): `team=a env=prod`.
    Label {
        namespace: String,
        /// key=value pairs; none clears the labels.
        labels: Vec<String>,
    },
    /// List namespaces that have labels.
    List,
}

pub fn run(c: &Client, cmd: NamespaceCommand, out: Output) -> Result<()> {
    match cmd {
        NamespaceCommand::Label { namespace, labels } => {
            let body = NamespaceLabels {
                namespace: namespace.clone(),
                labels,
                revision: 0,
            };
            let r: NamespaceLabels =
                c.post_json(&format!("{}/{namespace}/labels", paths::NAMESPACES), &body)?;
            if out == Output::Json {
                return print_json(&r);
            }
            println!(
                "namespace {} labelled [{}]; policy revision {}",
                r.namespace,
                r.labels.join(", "),
                r.revision
            );
        }
        NamespaceCommand::List => {
            let v: Vec<NamespaceLabels> = c.get_json(paths::NAMESPACES)?;
            if out == Output::Json {
                return print_json(&v);
            }
            let mut t = Table::new(&["NAMESPACE", "LABELS"]);
            for n in &v {
                t.row(vec![n.namespace.clone(), n.labels.join("\n")]);
            }
            t.print();
        }
    }
    Ok(())
}
