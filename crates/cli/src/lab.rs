//! `pilus lab`: up, down, status, exec, connect, demo (and the pods'
//! `serve`), over the pilus-lab library (the demo is `pilus_lab::demo`,
//! written to stdout).

use crate::{client::InvalidInput, table::Table, Output};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use pilus_abi::Aggregation;
use pilus_api_types::{self as api, paths};
use pilus_lab::{
    plan::Routing,
    serve::{self, Probe, Proto},
    Lab, Paths, Plan,
};
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

#[derive(Args, Debug)]
pub struct LabArgs {
    /// Where the lab keeps its state, sockets and logs.
    #[arg(
        long,
        env = "PILUS_LAB_DIR",
        default_value = "/run/pilus-lab",
        global = true
    )]
    lab_dir: PathBuf,
    /// Prefix of the lab's namespace names (and its bpffs pin directory).
    #[arg(long, env = "PILUS_LAB_PREFIX", default_value = "plab", global = true)]
    prefix: String,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabRouting {
    Tunnel,
    Direct,
    None,
}

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Build the lab: node namespaces on an underlay, one pilusd per node,
    /// pods attached through pilus-cni, a server (TCP/UDP 80) in each pod.
    Up {
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        #[arg(long, default_value_t = 3)]
        pods_per_node: u32,
        /// The agents' monitor aggregation level: how many trace events
        /// flows emit (`none`, `low`, `medium`, `maximum`; drops and
        /// policy denials are always reported). Changed live with `pilus
        /// config MonitorAggregationLevel=LEVEL`.
        #[arg(long, value_name = "LEVEL", default_value = "medium")]
        monitor_aggregation: Aggregation,
        /// How nodes' pods reach each other: `tunnel` (VXLAN, the VNI
        /// carries the sender's identity), `direct` (pod CIDRs routed on
        /// the underlay) or `none` (no etcd, each node on its own). Any
        /// but `none` starts an etcd on the underlay and points every
        /// agent at it. Default: tunnel with 2 or more nodes, none with 1.
        #[arg(long, value_enum)]
        routing: Option<LabRouting>,
        /// Members of the lab's etcd (1, 3 or 5).
        #[arg(long, default_value_t = 1)]
        etcd_members: u32,
        /// Seconds a node's keys outlive its agent (pilusd --lease-ttl).
        #[arg(long, default_value_t = 15)]
        lease_ttl: u64,
        /// Socket-level service LB (pilusd --socket-lb-cgroup) on a cgroup
        /// of each node's own, /sys/fs/cgroup/unified/pilus-lab-PREFIX-NODE:
        /// the sockets of processes moved there (`pilus lab exec` runs its
        /// command there) reach a ClusterIP's backend directly.
        #[arg(long)]
        socket_lb: bool,
    },
    /// Remove everything the lab made: pods (CNI DEL), agents, pins,
    /// namespaces, socket-LB cgroups, state.
    Down,
    /// Nodes, agents and pods of the lab that is up.
    Status,
    /// Run a command inside a pod's network namespace (and, in a lab up
    /// with --socket-lb, in its node's cgroup: its ClusterIP connections
    /// are translated at the socket).
    Exec {
        pod: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Connect from a pod to another pod (or address) and show the reply.
    Connect {
        from: String,
        /// A pod name or an IPv4 address.
        to: String,
        #[arg(long, default_value_t = 80)]
        port: u16,
        #[arg(long)]
        udp: bool,
        /// An ICMP echo instead (--port is not used).
        #[arg(long, conflicts_with = "udp")]
        icmp: bool,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// The tour: a lab, pod-to-pod traffic and its path, a policy that
    /// denies (and why), its removal, and teardown.
    Demo,
    /// A pod's server (started by `up`; not for direct use).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 80)]
        port: u16,
    },
}

pub fn paths(a: &LabArgs) -> Result<Paths> {
    let exe = std::env::current_exe().context("locating the pilus binary")?;
    Ok(Paths {
        dir: a.lab_dir.clone(),
        pins: PathBuf::from(format!("/sys/fs/bpf/pilus-{}", a.prefix)),
        bin_dir: exe
            .parent()
            .map(PathBuf::from)
            .context("the pilus binary has no directory")?,
        prefix: a.prefix.clone(),
    })
}

pub fn run(a: LabArgs, out: Output) -> Result<()> {
    if let LabCommand::Serve { name, port, .. } = &a.command {
        return serve::serve(name, *port).with_context(|| format!("serving on port {port}"));
    }
    let p = paths(&a)?;
    match a.command {
        LabCommand::Up {
            nodes,
            pods_per_node,
            monitor_aggregation,
            routing,
            etcd_members,
            lease_ttl,
            socket_lb,
        } => {
            let plan = Plan::new(&p.prefix, nodes, pods_per_node)
                .map_err(|e| InvalidInput(e.to_string()))?
                .with_monitor_aggregation(monitor_aggregation);
            let plan = if socket_lb {
                plan.with_socket_lb()
            } else {
                plan
            };
            let routing = routing.unwrap_or(if nodes > 1 {
                LabRouting::Tunnel
            } else {
                LabRouting::None
            });
            let plan = match routing {
                LabRouting::None => Ok(plan),
                LabRouting::Tunnel => plan.clustered(Routing::Tunnel, etcd_members, lease_ttl),
                LabRouting::Direct => plan.clustered(Routing::Direct, etcd_members, lease_ttl),
            }
            .map_err(|e| InvalidInput(e.to_string()))?;
            let start = Instant::now();
            let lab = Lab::up(p, plan)?;
            if out == Output::Json {
                return crate::table::print_json(&lab.state);
            }
            println!(
                "lab up in {:.1} s: {} node(s), {} pod(s)\n",
                start.elapsed().as_secs_f64(),
                lab.state.nodes.len(),
                lab.state.pods.len()
            );
            print_status(&lab);
        }
        LabCommand::Down => {
            let removed = Lab::down(&p)?;
            if removed.is_empty() {
                println!("no lab to remove");
            } else {
                println!("lab removed ({} objects)", removed.len());
            }
        }
        LabCommand::Status => {
            let lab = Lab::load(&p)?;
            if out == Output::Json {
                return crate::table::print_json(&lab.state);
            }
            print_status(&lab);
        }
        LabCommand::Exec { pod, cmd } => {
            let lab = Lab::load(&p)?;
            let pod = lab.pod(&pod)?;
            let ns = std::fs::File::open(format!("/run/netns/{}", pod.netns))
                .with_context(|| format!("opening the namespace of {}", pod.name))?;
            let mut c = std::process::Command::new(&cmd[0]);
            c.args(&cmd[1..]);
            pilus_lab::cni::exec_in_netns(&mut c, &ns, false);
            let procs = if lab.state.plan.socket_lb {
                let path = p.cgroup(&pod.node).join("cgroup.procs");
                Some(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .with_context(|| format!("opening {}", path.display()))?,
                )
            } else {
                None
            };
            if let Some(procs) = &procs {
                pilus_lab::lab::exec_in_cgroup(&mut c, procs);
            }
            let status = c
                .status()
                .with_context(|| format!("running {:?} in {}", cmd[0], pod.name))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        LabCommand::Connect {
            from,
            to,
            port,
            udp,
            icmp,
            timeout_ms,
        } => {
            if port == 0 {
                bail!(InvalidInput("--port must be 1-65535".into()));
            }
            let lab = Lab::load(&p)?;
            let proto = match (udp, icmp) {
                (true, _) => Proto::Udp,
                (_, true) => Proto::Icmp,
                _ => Proto::Tcp,
            };
            let r = lab.connect(&from, &to, port, proto, Duration::from_millis(timeout_ms))?;
            println!("{}", r.describe(&from, &to, port, proto));
            if !matches!(r, Probe::Reply { .. }) {
                std::process::exit(1);
            }
        }
        LabCommand::Demo => pilus_lab::demo::run(p, &mut std::io::stdout().lock())?,
        LabCommand::Serve { .. } => unreachable!("handled above"),
    }
    Ok(())
}

pub fn print_status(lab: &Lab) {
    match &lab.state.plan.cluster {
        Some(c) => {
            let members: Vec<String> = lab
                .state
                .etcd
                .iter()
                .map(|e| format!("{} ({})", e.name, e.url))
                .collect();
            println!(
                "cluster: routing {}, etcd {}\n",
                c.routing.name(),
                members.join(", ")
            );
        }
        None => println!("nodes on their own (no etcd)\n"),
    }
    let mut t = Table::new(&["NODE", "NETNS", "POD CIDR", "AGENT", "ENDPOINTS", "SOCKET"]);
    for n in &lab.state.nodes {
        let st = lab.client(&n.name).get_json::<api::Status>(paths::STATUS);
        let (agent, eps) = match &st {
            Ok(s) => (format!("up (pid {})", n.pid), s.endpoints.to_string()),
            Err(_) => ("DOWN".to_string(), "-".to_string()),
        };
        t.row(vec![
            n.name.clone(),
            n.netns.clone(),
            n.pod_cidr.clone(),
            agent,
            eps,
            n.socket.display().to_string(),
        ]);
    }
    t.print();
    println!();
    let mut t = Table::new(&[
        "POD", "NODE", "IPV4", "ENDPOINT", "IDENTITY", "LABELS", "CNI ADD",
    ]);
    for p in &lab.state.pods {
        t.row(vec![
            p.name.clone(),
            p.node.clone(),
            p.ip.to_string(),
            p.endpoint.to_string(),
            p.identity.to_string(),
            format!("app={}", p.app),
            format!("{:.1} ms", p.add_ms),
        ]);
    }
    t.print();
}
