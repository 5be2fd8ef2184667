//! `pilus endpoint list|get|labels`.

use crate::{
    table::{print_json, Table},
    Output,
};
use anyhow::Result;
use clap::Subcommand;
use pilus_api_types::paths;
use pilus_api_types::Endpoint;
use pilus_client::blocking::Client;

#[derive(Subcommand, Debug)]
pub enum EndpointCommand {
    /// List the node's endpoints (pods).
    List,
    /// Show one endpoint: by id, container id, pod address or namespace/pod.
    Get {
        endpoint: String,
    },
    Labels(crate::labels::LabelsArgs),
}

fn enforcement(e: &Endpoint) -> (&'static str, &'static str) {
    let f = |b| if b { "Enabled" } else { "Disabled" };
    (f(e.policy.ingress_enforced), f(e.policy.egress_enforced))
}

pub fn run(c: &Client, cmd: EndpointCommand, out: Output) -> Result<()> {
    match cmd {
        EndpointCommand::List => {
            let eps: Vec<Endpoint> = c.get_json(paths::ENDPOINTS)?;
            if out == Output::Json {
                return print_json(&eps);
            }
            let mut t = Table::new(&[
                "ENDPOINT",
                "POLICY (ingress)",
                "POLICY (egress)",
                "IDENTITY",
                "LABELS",
                "IPv4",
                "INTERFACE",
            ]);
            for e in &eps {
                let (i, o) = enforcement(e);
                let mut labels = e.labels.clone();
                labels.push(format!("k8s:io.kubernetes.pod.namespace={}", e.namespace));
                t.row(vec![
                    e.id.to_string(),
                    i.into(),
                    o.into(),
                    e.identity.to_string(),
                    labels.join("\n"),
                    e.ipv4.to_string(),
                    e.host_ifname.clone(),
                ]);
            }
            t.print();
        }
        EndpointCommand::Labels(a) => return crate::labels::run(c, a, out),
        EndpointCommand::Get { endpoint } => {
            let e: Endpoint = c.get_json(&format!("{}/{}", paths::ENDPOINTS, endpoint))?;
            if out == Output::Json {
                return print_json(&e);
            }
            let (i, o) = enforcement(&e);
            println!("Endpoint:     {}", e.id);
            println!("Container:    {}", e.container_id);
            if let Some(p) = &e.pod_name {
                println!("Pod:          {}/{p}", e.namespace);
            }
            println!("Namespace:    {}", e.namespace);
            println!("Identity:     {}", e.identity);
            let labels: Vec<String> = e
                .label_sources
                .iter()
                .map(|l| format!("{} ({})", l.label, l.source))
                .collect();
            println!("Labels:       {}", labels.join(", "));
            println!(
                "IPv4:         {}/{} via {}",
                e.ipv4, e.prefix_len, e.gateway
            );
            println!("Interface:    {} in {} (MAC {})", e.ifname, e.netns, e.mac);
            println!(
                "Host side:    {} (ifindex {}, MAC {})",
                e.host_ifname, e.host_ifindex, e.host_mac
            );
            println!(
                "Policy:       ingress {i}, egress {o}, {} entries",
                e.policy.entries
            );
        }
    }
    Ok(())
}
