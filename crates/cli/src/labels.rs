//! `pilus endpoint labels`: add, change or delete an endpoint's labels by
//! hand, or many endpoints' at once from a YAML file (all or nothing).
//!
//! Runtimes that pass a CNI plugin no labels (podman, `ctr run --cni`)
//! leave pods with only their namespace; this is how an operator gives
//! them the labels policies select on, as `cilium endpoint labels` does.

use crate::{client::InvalidInput, table::print_json, Output};
use anyhow::{Context, Result};
use clap::Args;
use pilus_api_types::{
    paths, Endpoint, EndpointLabelsBatch, EndpointLabelsChange, EndpointLabelsItem,
};
use pilus_client::blocking::Client;
use std::{collections::BTreeMap, path::PathBuf};

/// Change an endpoint's labels (its identity, and so the policy that
/// applies to it and to its peers, follows at once, without a window in
/// which neither the old nor the new rules apply).
///
/// Labels are `key=value` (source `k8s`) or `source:key=value`, with
/// Kubernetes' label syntax; `reserved:` and `cidr:` are refused. A label
/// given by the CNI network configuration is changed only with
/// --override-cni. Any invalid input (a bad label, an unknown endpoint, a
/// key it does not have) exits with 2 and changes nothing.
///
/// With --from FILE, FILE maps endpoints to the labels to set (a null
/// value deletes the key), applied all or none:
///
///   shop/web: {app: web, tier: front}
///
///   5f3a9b2c: {app: db, legacy: null}     # a container id
#[derive(Args, Debug)]
pub struct LabelsArgs {
    /// The endpoint: an id, a container id or namespace/pod.
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    endpoint: Option<String>,
    /// Labels to add or change (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    add: Vec<String>,
    /// Label keys to delete (repeatable).
    #[arg(long, value_name = "KEY")]
    delete: Vec<String>,
    /// A YAML file mapping endpoints to labels.
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
    /// Allow changing or deleting labels the CNI configuration gave.
    #[arg(long)]
    override_cni: bool,
}

/// The file's form: endpoint → key → value (null: delete).
type LabelFile = BTreeMap<String, BTreeMap<String, Option<String>>>;

fn read_file(path: &PathBuf) -> Result<Vec<EndpointLabelsItem>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: LabelFile = yaml_serde::from_str(&text).map_err(|e| {
        InvalidInput(format!(
            "{}: expected a mapping of endpoints to {{key: value}} (null deletes a key): {e}",
            path.display()
        ))
    })?;
    if file.is_empty() {
        return Err(InvalidInput(format!("{}: names no endpoint", path.display())).into());
    }
    Ok(file
        .into_iter()
        .map(|(endpoint, labels)| {
            let mut item = EndpointLabelsItem {
                endpoint,
                ..Default::default()
            };
            for (k, v) in labels {
                match v {
                    Some(v) => item.add.push(format!("{k}={v}")),
                    None => item.delete.push(k),
                }
            }
            item
        })
        .collect())
}

/// An unknown endpoint is the caller's mistake here: exit 2, as for any
/// other invalid input of this command.
fn invalid_if_not_found(e: pilus_client::Error) -> anyhow::Error {
    match e {
        pilus_client::Error::Status {
            status: 404,
            message,
        } => InvalidInput(message).into(),
        other => other.into(),
    }
}

pub fn run(c: &Client, a: LabelsArgs, out: Output) -> Result<()> {
    let changed: Vec<Endpoint> = match (&a.endpoint, &a.from) {
        (Some(ep), None) => {
            if a.add.is_empty() && a.delete.is_empty() {
                return Err(InvalidInput("give --add KEY=VALUE or --delete KEY".into()).into());
            }
            let body = EndpointLabelsChange {
                add: a.add,
                delete: a.delete,
                override_cni: a.override_cni,
            };
            let path = format!("{}/{}/labels", paths::ENDPOINTS, ep);
            vec![c.post_json(&path, &body).map_err(invalid_if_not_found)?]
        }
        (None, Some(file)) => {
            if !a.add.is_empty() || !a.delete.is_empty() {
                return Err(InvalidInput(
                    "--from takes the labels from the file; drop --add/--delete".into(),
                )
                .into());
            }
            let body = EndpointLabelsBatch {
                items: read_file(file)?,
                override_cni: a.override_cni,
            };
            c.post_json(&format!("{}/labels", paths::ENDPOINTS), &body)
                .map_err(invalid_if_not_found)?
        }
        _ => return Err(InvalidInput("name an endpoint or --from FILE".into()).into()),
    };
    if out == Output::Json {
        return print_json(&changed);
    }
    for e in &changed {
        println!(
            "endpoint {} identity {}: {}",
            e.id,
            e.identity,
            e.label_sources
                .iter()
                .map(|l| format!("{} ({})", l.label, l.source))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
