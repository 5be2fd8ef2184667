//! `pilus`: the Pilus command line. Thin: parsing and printing here, the work
//! in the agent (over its API socket) and the library crates.

mod bench;
mod bpf;
mod client;
mod cni;
mod config;
mod doctor;
mod endpoint;
mod identity;
mod ipcache;
mod lab;
mod labels;
mod monitor;
mod namespace;
mod node;
mod observe;
mod policy;
mod prefilter;
mod service;
mod status;
mod table;
mod trace;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (the agent or the kernel refused, or an I/O error)
  2  invalid input (bad flags, a rejected policy or request)
  3  not found (no such endpoint, identity or policy)
  4  the agent is not reachable (is pilusd running? see --socket)
  5  pilus doctor found a fault";

/// Pilus: eBPF container networking. Inspect and drive the agent (pilusd)
/// and its datapath, as `cilium` does for Cilium.
#[derive(Parser, Debug)]
#[command(name = "pilus", version, about, propagate_version = true, after_help = EXIT_CODES)]
struct Cli {
    /// Output format: human-readable tables, or JSON for scripts.
    /// `compact` (the default there) and `table` are `pilus observe`'s: other
    /// commands print `human` for them.
    #[arg(short = 'o', long = "output", value_enum, global = true, default_value_t = Output::Human)]
    output: Output,
    /// The agent's API socket.
    #[arg(
        long,
        global = true,
        env = "PILUS_SOCKET",
        default_value = "/run/pilus/pilus.sock"
    )]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
    Compact,
    Table,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The agent's health: node, endpoints, identities, policy revision.
    Status,
    /// Endpoints: the pods on this node.
    #[command(subcommand)]
    Endpoint(endpoint::EndpointCommand),
    /// Security identities (numbers standing for sets of labels).
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Network policies: import, show, delete, trace.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Services: frontends (ClusterIP, NodePort, ExternalIP, LoadBalancer)
    /// balanced over backends, per packet in the datapath; Kubernetes
    /// Service/EndpointSlice import.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// The ipcache as the agent holds it: every prefix with every source's
    /// entry (local endpoint, remote endpoint, node, policy CIDR), the one
    /// the datapath sees first.
    #[command(subcommand)]
    Ipcache(ipcache::IpcacheCommand),
    /// The cluster's nodes (with pilusd --etcd).
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// The XDP prefilter on the node's uplink: source CIDRs dropped before
    /// the kernel's stack sees them. update and delete change the list all
    /// or nothing; list shows what each entry dropped.
    #[command(subcommand)]
    Prefilter(prefilter::PrefilterCommand),
    /// Namespace labels, as Kubernetes namespaceSelectors see them.
    #[command(subcommand)]
    Namespace(namespace::NamespaceCommand),
    /// The datapath's BPF maps.
    #[command(subcommand)]
    Bpf(bpf::BpfCommand),
    /// The datapath's events, one line each (like `cilium monitor`).
    ///
    /// Drops (always, with their reason and, for policy drops, the policy
    /// and rule), policy verdicts (each new flow's allow or deny: the match
    /// level and the rule), traces at each observation point (from-endpoint,
    /// to-endpoint, to-stack, from-stack, to/from-overlay, to/from-network),
    /// each with the conntrack state and both identities — as many as the
    /// aggregation level lets through (`pilus config
    /// MonitorAggregationLevel=none` shows every packet) — and, opt-in,
    /// debug messages and captures (`pilus config debug=true capture=true`).
    /// The agent keeps the last 4096 events: without --follow, those are
    /// printed and the command exits; with it, new events are printed as
    /// they happen. Events lost by the datapath (a full ring buffer) or the
    /// agent are reported as such. `-j` prints `cilium monitor -j` JSON.
    ///
    ///   -> endpoint 13 (shop/web) (to-endpoint) flow 0x0 identity 256->257 state new ifindex lxc0a1b: 198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN
    ///
    ///   xx drop (Policy denied: no rule allows this flow) from-endpoint flow 0x0 to endpoint 13 (shop/web), ifindex lxc0a1b, identity 256->257, policy: default deny: endpoint selected by policy CiliumNetworkPolicy shop/web; no rule allows this peer: 198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN
    Monitor(monitor::MonitorArgs),
    /// Flows, as Hubble shows them: what happened to each packet the
    /// datapath reported (a trace: FORWARDED; a drop or a denial: DROPPED,
    /// with the reason and the policy), with both sides named — pod,
    /// namespace, identity labels, the node behind the address.
    ///
    /// Filters (each repeatable; a pod, namespace or port matches either
    /// side): --pod [NAMESPACE/]NAME, --namespace, --verdict
    /// FORWARDED|DROPPED, --port, --protocol tcp|udp|icmp. --all-nodes asks
    /// every node of the cluster (through this node's agent, as Hubble
    /// Relay does). `-o compact` (default) prints a line per flow, `-o
    /// table` a table, `-o json` a JSON object per line.
    ///
    ///   Dec  1 22:51:03.123 [node-1]: shop/client:43122 (ID:256) -> shop/web:80 (ID:257) to-endpoint FORWARDED (TCP Flags: SYN)
    Observe(observe::ObserveArgs),
    /// The agent's run-time settings: show them, or change them with
    /// KEY=VALUE (MonitorAggregationLevel=none|low|medium|maximum,
    /// Debug=true|false, Capture=true|false), as `cilium config` does.
    Config {
        /// Settings to change, e.g. `MonitorAggregationLevel=none debug=true`.
        settings: Vec<String>,
    },
    /// Check this node for faults that silently bypass or break the
    /// datapath, each with its evidence and a fix.
    ///
    /// The agent runs the checks in the node's network namespace: an `ip
    /// rule` that sends pod traffic (seed 002: pod replies) to another
    /// table around the pods' routes, or a pod without its route (routing);
    /// an endpoint veth or node device missing its program (programs);
    /// rp_filter and forwarding against the routing mode (sysctl); maps
    /// near full (map-pressure, from 75%; a fault from 90%); events the
    /// ring buffer lost since pilusd started (events-lost); the cluster
    /// store unreachable (etcd). Exit code 5 when any is a fault; warnings
    /// alone exit 0.
    Doctor(doctor::DoctorArgs),
    /// What would happen to this packet? The agent builds it (a TCP SYN, a
    /// UDP datagram or an ICMP echo request from the pod, to its gateway
    /// MAC) and runs it through the loaded programs with BPF_PROG_TEST_RUN
    /// against the live endpoint, ipcache, policy and service maps, on a
    /// private copy of everything a packet writes: a trace never changes
    /// conntrack, counters or the monitor's events. Prints each step
    /// (programs, conntrack, service translation, each policy verdict with
    /// its match level and rule, where it goes next) and the verdict:
    /// delivered to pod X, dropped (reason, policy), to the stack, or to
    /// node Y via tunnel. --svg FILE draws it as a sequence diagram.
    ///
    ///   pilus trace --from shop/client --to shop/web --proto tcp --port 80
    Trace(trace::TraceArgs),
    /// Benchmarks (measurements, not tests). Needs root.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The CNI plugin: install it for a container runtime.
    #[command(subcommand)]
    Cni(cni::CniCommand),
    /// A cluster on this machine, from network namespaces: up, down,
    /// status, exec, connect, and the demo. Needs root.
    Lab(lab::LabArgs),
}

fn main() {
    // `pilus ... | head` ends quietly, as a Unix tool does, instead of
    // panicking on the closed pipe.
    // SAFETY: restoring a signal's default disposition before any thread.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    // A benchmark runs for minutes: its progress (the library's info
    // events) is shown unless RUST_LOG says otherwise.
    let default_filter = match cli.command {
        Command::Bench(_) => "warn,pilus_bench=info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli) {
        eprintln!("pilus: {e:#}");
        std::process::exit(client::exit_code(&e));
    }
}

fn run(cli: Cli) -> Result<()> {
    let c = client::client(&cli.socket);
    let out = cli.output;
    match cli.command {
        Command::Status => status::run(&c, out),
        Command::Endpoint(cmd) => endpoint::run(&c, cmd, out),
        Command::Identity(cmd) => identity::run(&c, cmd, out),
        Command::Policy(cmd) => policy::run(&c, cmd, out),
        Command::Service(cmd) => service::run(&c, cmd, out),
        Command::Ipcache(cmd) => ipcache::run(&c, cmd, out),
        Command::Node(cmd) => node::run(&c, cmd, out),
        Command::Prefilter(cmd) => prefilter::run(&c, cmd, out),
        Command::Namespace(cmd) => namespace::run(&c, cmd, out),
        Command::Bpf(cmd) => bpf::run(&c, cmd, out),
        Command::Monitor(args) => monitor::run(&c, args, out),
        Command::Observe(args) => observe::run(&c, args, out),
        Command::Config { settings } => config::run(&c, settings, out),
        Command::Doctor(args) => doctor::run(&c, args, out),
        Command::Trace(args) => trace::run(&c, args, out),
        Command::Bench(cmd) => bench::run(cmd, out),
        Command::Cni(cmd) => cni::run(cmd, &cli.socket),
        Command::Lab(a) => lab::run(a, out),
    }
}
