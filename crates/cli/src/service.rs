//! `pilus service upsert|delete|list|get|import`: services (frontends and
//! the backends they balance over), by flags, from a file of the API's
//! form, or from Kubernetes Service and EndpointSlice YAML.

use crate::{
    client::InvalidInput,
    table::{print_json, Table},
    Output,
};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pilus_api_types::{
    self as api, paths, Deleted, PolicyFile, ServiceImport, ServiceInfo, ServiceUpserted,
    ServicesImported,
};
use pilus_client::blocking::Client;
use pilus_service::model::from_flags;
use std::io::Read;

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Create or replace a service. Any invalid part (a malformed frontend,
    /// a frontend another service has, a backend outside every node's pod
    /// CIDR) refuses the whole service, exit 2, and changes nothing.
    Upsert(UpsertArgs),
    /// Delete one service (`namespace/name`).
    Delete { service: String },
    /// Every service, one line per frontend.
    List,
    /// One service, in the API's form (`-o json` to feed `upsert --from`).
    Get { service: String },
    /// Import Kubernetes Service and EndpointSlice documents (YAML or JSON,
    /// `---`-separated, Lists too; `-` reads standard input): frontends
    /// from cluster IPs, external IPs, load-balancer IPs and node ports,
    /// backends from the slices labelled kubernetes.io/service-name, ClientIP
    /// affinity, externalTrafficPolicy, the algorithm from the annotation
    /// service.cilium.io/lb-algorithm. All or nothing: a field Kubernetes
    /// does not define, another kind, or a bad service refuses the import.
    Import {
        #[arg(required = true)]
        files: Vec<String>,
    },
}

/// Frontends are `[TYPE:]ADDRESS:PORT[/PROTOCOL][,name=PORTNAME]`, TYPE
/// one of clusterip (default), nodeport (address 0.0.0.0: every node
/// address), externalip, loadbalancer. Backends are
/// `ADDRESS:PORT[,weight=N][,state=active|terminating|quarantined][,name=PORTNAME]`;
/// a backend serves the frontends of its port name.
///
///   pilus service upsert shop/web --frontend 198.19.128.10:80/TCP
///   --backend 198.18.1.10:8080 --backend 198.18.2.10:8080,weight=2
///   --algorithm maglev --affinity 10800
#[derive(Args, Debug)]
pub struct UpsertArgs {
    /// `namespace/name` (namespace `default` when omitted).
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    service: Option<String>,
    /// `[TYPE:]ADDRESS:PORT[/PROTOCOL][,name=PORTNAME]` (repeatable); TYPE
    /// is clusterip (default), nodeport (address 0.0.0.0: every node
    /// address), externalip or loadbalancer. E.g. 198.19.128.10:80/TCP.
    #[arg(long, value_name = "FRONTEND")]
    frontend: Vec<String>,
    /// `ADDRESS:PORT[,weight=N][,state=active|terminating|quarantined][,name=PORTNAME]`
    /// (repeatable); a backend serves the frontends of its port name. E.g.
    /// 198.18.1.10:8080,weight=2.
    #[arg(long, value_name = "BACKEND")]
    backend: Vec<String>,
    /// `random` (default) or `maglev`.
    #[arg(long, default_value = "random")]
    algorithm: String,
    /// Session affinity by client address, for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    affinity: Option<u32>,
    /// `Cluster` (default: any backend, one on another node reached from
    /// the receiving node's address) or `Local` (the receiving node's
    /// backends only, which see the client's address): Kubernetes'
    /// externalTrafficPolicy, for the NodePort, ExternalIP and LoadBalancer
    /// frontends.
    #[arg(long, value_name = "POLICY")]
    external_traffic_policy: Option<String>,
    /// A JSON or YAML file holding the service in the API's form.
    #[arg(long, value_name = "FILE")]
    from: Option<String>,
}

fn read(f: &str) -> Result<String> {
    if f == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        return Ok(s);
    }
    std::fs::read_to_string(f).with_context(|| format!("reading {f}"))
}

fn invalid(e: impl std::fmt::Display) -> anyhow::Error {
    InvalidInput(e.to_string()).into()
}

fn service_of(a: UpsertArgs) -> Result<api::Service> {
    if let Some(f) = &a.from {
        // The API's form, strictly: an unknown field is refused here too.
        let text = read(f)?;
        return yaml_serde::from_str(&text).map_err(|e| invalid(format!("{f}: {e}")));
    }
    let mut s =
        from_flags(&a.service.unwrap_or_default(), &a.frontend, &a.backend).map_err(invalid)?;
    s.algorithm = a.algorithm;
    s.session_affinity_seconds = a.affinity;
    s.external_traffic_policy = a.external_traffic_policy;
    Ok(s)
}

fn path_of(service: &str) -> String {
    let (ns, name) = service.split_once('/').unwrap_or(("default", service));
    format!("{}/{ns}/{name}", paths::SERVICES)
}

pub fn run(c: &Client, cmd: ServiceCommand, out: Output) -> Result<()> {
    match cmd {
        ServiceCommand::Upsert(a) => {
            let s = service_of(a)?;
            let r: ServiceUpserted = c.post_json(paths::SERVICES, &s)?;
            if out == Output::Json {
                return print_json(&r);
            }
            let what = if r.created { "created" } else { "updated" };
            println!("service {} {what}", r.service);
        }
        ServiceCommand::Delete { service } => {
            let d: Deleted = c.delete_json(&path_of(&service))?;
            if out == Output::Json {
                return print_json(&d);
            }
            println!("service {service} deleted");
        }
        ServiceCommand::List => {
            let v: Vec<ServiceInfo> = c.get_json(paths::SERVICES)?;
            if out == Output::Json {
                return print_json(&v);
            }
            let mut t = Table::new(&["SERVICE", "ID", "TYPE", "FRONTEND", "ALGORITHM", "BACKENDS"]);
            for i in &v {
                let s = &i.service;
                for (f, id) in s.frontends.iter().zip(&i.frontend_ids) {
                    let backends: Vec<String> = s
                        .backends
                        .iter()
                        .filter(|b| b.port_name == f.port_name)
                        .map(|b| {
                            let mut d = format!("{}:{}", b.address, b.port);
                            if b.state != "active" {
                                d.push_str(&format!(" ({})", b.state));
                            }
                            if b.weight != 1 {
                                d.push_str(&format!(" (weight {})", b.weight));
                            }
                            d
                        })
                        .collect();
                    let mut algorithm = match s.session_affinity_seconds {
                        Some(t) => format!("{}, affinity {t}s", s.algorithm),
                        None => s.algorithm.clone(),
                    };
                    if f.kind == "NodePort" {
                        if let Some(p) = &s.external_traffic_policy {
                            algorithm.push_str(&format!(", {p} traffic"));
                        }
                    }
                    t.row(vec![
                        format!("{}/{}", s.namespace, s.name),
                        id.to_string(),
                        f.kind.clone(),
                        format!("{}:{}/{}", f.address, f.port, f.protocol),
                        algorithm,
                        if backends.is_empty() {
                            "(none)".into()
                        } else {
                            backends.join(", ")
                        },
                    ]);
                }
            }
            t.print();
        }
        ServiceCommand::Get { service } => {
            let i: ServiceInfo = c.get_json(&path_of(&service))?;
            if out == Output::Json {
                return print_json(&i.service);
            }
            print!(
                "{}",
                yaml_serde::to_string(&i.service).context("printing the service")?
            );
        }
        ServiceCommand::Import { files } => {
            let files = files
                .iter()
                .map(|f| {
                    Ok(PolicyFile {
                        name: if f == "-" {
                            "<stdin>".into()
                        } else {
                            f.clone()
                        },
                        text: read(f)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let r: ServicesImported =
                c.post_json(paths::SERVICES_IMPORT, &ServiceImport { files })?;
            if out == Output::Json {
                return print_json(&r);
            }
            for s in &r.services {
                println!("imported {s}");
            }
            for s in &r.skipped {
                println!("skipped {s}");
            }
        }
    }
    Ok(())
}
