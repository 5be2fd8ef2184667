//! pilusd: loads (or re-attaches to) the pinned datapath, restores its state,
//! and serves the Pilus API on a unix socket until SIGTERM/SIGINT. Exiting
//! leaves the datapath running: programs, links and maps stay pinned.
//!
//! Everything after start-up runs on one tokio runtime with a fixed number
//! of threads (see [`runtime`]): no client, however many connections it
//! opens, makes the agent grow threads.

use anyhow::{bail, Context, Result};
use clap::Parser;
use pilus_abi::Aggregation;
use pilus_agent::{
    api::{self, Limits},
    datapath::Pinned,
    doctor::{facts::NodeSetup, Doctor},
    metrics::{self, ConntrackGcMetrics, Instruments, Metrics, MetricsAddress},
    monitor,
    node::{self, RoutingArg},
    plumbing::NetlinkPlumbing,
    prefilter::PrefilterApi,
    trace::PacketTracer,
    view::DatapathView,
};
use pilus_controlplane::{
    cluster::{ClusterSettings, NodeRoutes, Routing},
    ControlPlane, Settings,
};
use pilus_datapath::{
    config::TUNNEL_MTU, Datapath, EventReader, LoadOptions, MonitorSettings, NatPorts, NodeConfig,
    NodeDevice, PodCidr, Prefilter,
};
use pilus_kvstore::{EtcdConfig, EtcdKv};
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tokio::signal::unix::{signal, SignalKind};

/// The runtime's worker threads: the API and the monitor are I/O-bound, and
/// the agent's work runs on the blocking pool.
const WORKER_THREADS: usize = 2;

/// The blocking pool's cap, where control-plane calls (map writes, netlink)
/// run. Changes are serialized by the control plane's writer lock, so more
/// threads would only wait on it; queued calls wait as tasks, not threads.
const MAX_BLOCKING_THREADS: usize = 4;

/// The Pilus agent: pod endpoints, identities and network policy, enforced
/// by eBPF programs it loads and pins.
#[derive(Parser, Debug)]
#[command(name = "pilusd", version)]
struct Args {
    /// This node's name (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// The pod CIDR this node allocates endpoint addresses from (/16 to /30).
    #[arg(long, default_value = "10.244.0.0/24")]
    pod_cidr: String,
    /// The pods' gateway address (default: the pod CIDR's first address).
    #[arg(long)]
    router_ip: Option<Ipv4Addr>,
    /// Where the agent keeps its state (snapshot + journal).
    #[arg(long, default_value = "/var/lib/pilus")]
    state_dir: PathBuf,
    /// The bpffs mount point (mounted if it is not one).
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
    /// Directory for pinned maps, programs and links (default: <bpffs>/pilus).
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// The API socket (mode 0600).
    #[arg(long, default_value = "/run/pilus/pilus.sock")]
    socket: PathBuf,
    /// Run inside this network namespace (a name under /run/netns or a
    /// path), entered before any thread starts.
    #[arg(long)]
    netns: Option<String>,
    /// How many trace events flows emit, as Cilium's MonitorAggregationLevel:
    /// `none` (every packet at every observation point), `low` (no
    /// receive-side points), `medium` (established flows only when they
    /// have news: new TCP flags, or every 5 s), `maximum` (only on new TCP
    /// flags). Drops and policy denials are always reported. Changed live
    /// with `pilus config MonitorAggregationLevel=LEVEL`; applies to every
    /// endpoint, also those attached by an earlier run.
    #[arg(long, value_name = "LEVEL", default_value = "medium")]
    monitor_aggregation: Aggregation,
    /// Compile trace events out of the datapath (the verifier removes them):
    /// only drops and policy denials are ever reported. The floor the
    /// observability benchmark compares against.
    #[arg(long)]
    no_trace_events: bool,
    /// Attach the XDP prefilter to --uplink (`pilus prefilter` fills its
    /// deny list). Off by default: native XDP on a veth uplink turns its
    /// peer's GSO off, so every segment crosses alone (cross-node
    /// TCP_STREAM fell to 0.3-0.4x of kernel routing with it attached).
    #[arg(long)]
    prefilter: bool,
    /// Socket-level service LB: attach bpf_sock.c's connect4, sendmsg4,
    /// recvmsg4 and getpeername4 programs (and connect6, recvmsg6 and
    /// getpeername6 for IPv4-mapped addresses) to this cgroup v2 directory
    /// (e.g. /sys/fs/cgroup/unified on a hybrid system, /sys/fs/cgroup on a
    /// unified one, for the whole node). Sockets of its processes reach a
    /// ClusterIP's backend directly, translated once at connect()/sendmsg()
    /// instead of per packet, and still see the ClusterIP as their peer.
    /// The links are pinned and outlive the agent. Off by default: a start
    /// without it removes an earlier agent's.
    #[arg(long, value_name = "PATH")]
    socket_lb_cgroup: Option<PathBuf>,
    /// Masquerade: pods' traffic to addresses outside the cluster (not a
    /// pod, not a node) leaves from this node's --underlay-ip, SNATed on
    /// --uplink and translated back on the way in, in either routing mode.
    /// Needs --etcd with --uplink. Turns IPv4 forwarding on.
    #[arg(long)]
    masquerade: bool,
    /// The ports masquerade and NodePort's SNAT allocate from, MIN-MAX.
    /// They must not overlap the node's own ephemeral ports
    /// (net.ipv4.ip_local_port_range), or a reply to the node's own
    /// connection could be taken for a translated flow's.
    #[arg(long, value_name = "MIN-MAX", default_value = "61000-65535")]
    masquerade_ports: NatPorts,
    /// NodePort: connections from the network to this node's --underlay-ip
    /// and a NodePort frontend's port are served on --uplink by the
    /// frontend's backends. A backend on this node sees the client's
    /// address; one on another node (externalTrafficPolicy: Cluster) is
    /// reached from this node's address (SNAT, --masquerade-ports). With
    /// externalTrafficPolicy: Local only this node's backends serve, and a
    /// node without one drops. Needs --etcd with --uplink.
    #[arg(long)]
    node_port: bool,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log: String,
    /// The cluster store: etcd client URLs (comma-separated). With it the
    /// node joins a cluster (identities, pods, nodes and policies shared
    /// through etcd); without, it is on its own and keeps its state
    /// locally only.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// With --etcd: how pods on different nodes reach each other. `tunnel`:
    /// VXLAN, the VNI carries the sender's identity. `direct`: pod CIDRs are
    /// routed on the underlay (through --uplink).
    #[arg(long, value_enum, default_value = "tunnel")]
    routing: RoutingArg,
    /// With --etcd: this node's address on the underlay (the other nodes'
    /// tunnel endpoint and next hop for its pods).
    #[arg(long)]
    underlay_ip: Option<Ipv4Addr>,
    /// With --etcd: the uplink device (direct routing: it carries the routes
    /// to other nodes' pods and gets the host programs).
    #[arg(long)]
    uplink: Option<String>,
    /// Seconds this node's keys in etcd outlive it (a stopped agent's pods
    /// stay known this long, so a restart is seamless).
    #[arg(long, default_value_t = 15)]
    lease_ttl: u64,
    /// The VXLAN UDP port (tunnel mode).
    #[arg(long, default_value_t = 8472)]
    vxlan_port: u16,
    /// Where to serve Prometheus metrics (`GET /metrics`), as ADDRESS:PORT
    /// in the agent's network namespace, or `none`.
    #[arg(long, default_value = metrics::DEFAULT_ADDRESS)]
    metrics_address: MetricsAddress,
    /// Where this agent serves its flows to the other nodes' agents (read
    /// only: `GET /v1/flows` of this node, for `pilus observe --all-nodes`
    /// on any node): `auto` is the underlay address, port 4244, in a
    /// cluster and nowhere on a node of its own; or ADDRESS:PORT; or `none`.
    #[arg(long, default_value = "auto")]
    flows_address: String,
}

/// Where `--flows-address` says the peer flows are served, if anywhere.
fn flows_address(args: &Args) -> Result<Option<std::net::SocketAddr>> {
    match args.flows_address.as_str() {
        "none" => Ok(None),
        "auto" => Ok(args
            .underlay_ip
            .filter(|_| !args.etcd.is_empty())
            .map(|ip| std::net::SocketAddr::from((ip, pilus_api_types::FLOWS_PEER_PORT)))),
        a => a
            .parse()
            .map(Some)
            .with_context(|| format!("--flows-address {a:?}: expected auto, none or ADDRESS:PORT")),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("pilusd: {e:#}");
        std::process::exit(1);
    }
}

/// The runtime: [`WORKER_THREADS`] workers and at most
/// [`MAX_BLOCKING_THREADS`] blocking threads, whatever the load.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_name("pilusd")
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn run() -> Result<()> {
    // One malloc arena: the runtime's threads would otherwise each grow an
    // arena of their own and keep it, inflating the agent's resident
    // memory for nothing (the agent's work is under one lock anyway).
    // SAFETY: mallopt before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let args = Args::parse();
    if let Some(ns) = &args.netns {
        let path = if ns.contains('/') {
            PathBuf::from(ns)
        } else {
            Path::new("/run/netns").join(ns)
        };
        // setns acts on the calling thread only: do it before any thread
        // (the runtime's included) exists so they all start inside. `ip
        // netns exec` is no substitute: it remounts /sys and hides bpffs.
        pilus_netlink::netns::enter_path(&path)
            .with_context(|| format!("entering network namespace {}", path.display()))?
            .stay();
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| args.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();

    let net: ipnet::Ipv4Net = args
        .pod_cidr
        .parse()
        .with_context(|| format!("--pod-cidr {:?}: expected ADDRESS/LENGTH", args.pod_cidr))?;
    if net.trunc() != net {
        bail!(
            "--pod-cidr {net} has host bits set (the network is {})",
            net.trunc()
        );
    }
    let pod_cidr = PodCidr::from_net(net).context("--pod-cidr")?;
    let router = args
        .router_ip
        .unwrap_or_else(|| Ipv4Addr::from(u32::from(net.network()) + 1));
    if pod_cidr.slot(router).is_err() {
        bail!("--router-ip {router} is outside the pod CIDR {pod_cidr}");
    }
    let pin_dir = args
        .pin_dir
        .clone()
        .unwrap_or_else(|| args.bpffs.join("pilus"));
    let clustered = !args.etcd.is_empty();
    let routing = Routing::from(args.routing);
    let underlay = match (clustered, args.underlay_ip) {
        (true, None) => bail!("--etcd needs --underlay-ip (this node's address on the underlay)"),
        (_, u) => u,
    };
    // Checked before anything is loaded; used once the API is up.
    flows_address(&args)?;
    let uplink = match (clustered, routing, &args.uplink) {
        (true, Routing::Direct, None) => bail!("--routing direct needs --uplink"),
        (true, _, Some(u)) => Some((u.clone(), node::uplink_index(u)?)),
        _ => None,
    };
    let masquerade_ip = match (args.masquerade, &uplink, underlay) {
        (false, _, _) => None,
        (true, Some(_), Some(ip)) if clustered => Some(ip),
        (true, _, _) => bail!("--masquerade needs --etcd with --underlay-ip and --uplink"),
    };
    let nodeport_ip = match (args.node_port, &uplink, underlay) {
        (false, _, _) => None,
        (true, Some(_), Some(ip)) if clustered => Some(ip),
        (true, _, _) => bail!("--node-port needs --etcd with --underlay-ip and --uplink"),
    };
    // Both SNAT to the node's address from the masquerade ports.
    if masquerade_ip.is_some() || nodeport_ip.is_some() {
        let (lo, hi) = node::local_port_range()
            .context("reading the node's ephemeral ports for --masquerade-ports")?;
        if args.masquerade_ports.overlaps(lo, hi) {
            bail!(
                "--masquerade-ports {} overlaps the node's own ephemeral ports \
                 (net.ipv4.ip_local_port_range {lo}-{hi}): replies to the node's own \
                 connections could be taken for a translated flow's; choose ports outside it",
                args.masquerade_ports
            );
        }
    }
    let tunnel_ifindex = match (clustered, routing, underlay) {
        (true, Routing::Tunnel, Some(local)) => node::ensure_vxlan(local, args.vxlan_port)?,
        _ => 0,
    };
    if let Some(cgroup) = &args.socket_lb_cgroup {
        pilus_datapath::sock::check_cgroup(cgroup).context("--socket-lb-cgroup")?;
    }
    let mut dp = Datapath::load(&LoadOptions {
        node: NodeConfig {
            router_ip4: router,
            pod_cidr,
            trace_events: !args.no_trace_events,
            tunnel_ifindex,
            masquerade_ip4: masquerade_ip,
            nat_ports: args.masquerade_ports,
            nodeport_ip4: nodeport_ip,
            ..Default::default()
        },
        bpffs_root: args.bpffs.clone(),
        pin_dir: Some(pin_dir.clone()),
    })
    .context("loading the datapath")?;
    dp.set_monitor_settings(MonitorSettings {
        aggregation: args.monitor_aggregation,
        ..Default::default()
    })
    .context("setting the monitor's aggregation level")?;
    if tunnel_ifindex != 0 {
        dp.attach_node_device(node::VXLAN_DEVICE, NodeDevice::Overlay)
            .context("attaching the overlay program")?;
    }
    // The uplink's programs: direct routing delivers other nodes' pods'
    // packets there, masquerade translates pods' traffic to the outside,
    // NodePort serves connections from it.
    let uplink_programs =
        routing == Routing::Direct || masquerade_ip.is_some() || nodeport_ip.is_some();
    match (&uplink, uplink_programs) {
        (Some((name, _)), true) => {
            // Pods' traffic to other nodes and to the outside leaves
            // through the stack, which routes it to the uplink only when
            // the node forwards.
            node::enable_forwarding().context("enabling IPv4 forwarding")?;
            dp.attach_node_device(name, NodeDevice::Uplink)
                .context("attaching the uplink programs")?;
        }
        (Some((name, _)), false) => {
            // An earlier agent's (with masquerade) would go on translating.
            dp.detach_node_device(name, NodeDevice::Uplink)
                .context("removing an earlier agent's uplink programs")?;
        }
        (None, _) => {}
    }
    // The prefilter drops listed senders on the uplink before the stack
    // (or from-netdev) sees them, in either routing mode.
    let prefilter_on = match (&uplink, args.prefilter) {
        (Some((name, _)), true) => {
            dp.attach_prefilter(name)
                .context("attaching the XDP prefilter to the uplink")?;
            Some(name.clone())
        }
        (None, true) => bail!("--prefilter needs an uplink (--etcd with --uplink)"),
        (_, false) => {
            if let Some((name, _)) = &uplink {
                // An earlier agent's prefilter is not left running.
                pilus_datapath::prefilter::detach_prefilter(&pin_dir, name)
                    .context("removing an earlier XDP prefilter")?;
            }
            None
        }
    };
    match &args.socket_lb_cgroup {
        Some(cgroup) => dp.attach_socket_lb(cgroup).with_context(|| {
            format!(
                "attaching socket-level LB to the cgroup {}",
                cgroup.display()
            )
        })?,
        // An earlier agent's socket LB is not left running.
        None => pilus_datapath::sock::detach_socket_lb(&pin_dir)
            .context("removing an earlier agent's socket-level LB")?,
    }
    let prefilter = Arc::new(PrefilterApi::new(
        Prefilter::open(&pin_dir).context("opening the prefilter's deny list")?,
        prefilter_on,
    ));
    let event_reader =
        EventReader::new(&mut dp).context("opening the datapath's event ring buffer")?;
    // Its own descriptors of the pinned maps: metrics and the doctor read
    // them without the lock the control plane's writes take.
    let view: Arc<dyn DatapathView> = Arc::new(
        dp.inspector()
            .context("opening the pinned maps for the metrics and pilus doctor")?,
    );
    let setup = NodeSetup {
        routing: clustered.then_some(routing),
        uplink: match (uplink_programs, &uplink) {
            (true, Some((name, _))) => Some(name.clone()),
            _ => None,
        },
        overlay: (tunnel_ifindex != 0).then(|| node::VXLAN_DEVICE.to_string()),
        socket_lb_cgroup: args.socket_lb_cgroup.clone(),
        masquerade: masquerade_ip.is_some(),
        node_port: nodeport_ip.is_some(),
    };
    let store = pilus_kvstore::LocalKv::open(&args.state_dir)
        .with_context(|| format!("opening the state in {}", args.state_dir.display()))?;
    let settings = Settings {
        node_name: args.node_name.clone().unwrap_or_else(hostname),
        pod_cidr: net,
        router,
        pin_dir,
        socket: args.socket.clone(),
        state_dir: args.state_dir.clone(),
        pod_mtu: (tunnel_ifindex != 0).then_some(TUNNEL_MTU),
    };
    let cluster = match underlay {
        Some(underlay_ip) if clustered => {
            let store =
                EtcdKv::connect(EtcdConfig::new(args.etcd.clone())).context("the etcd client")?;
            let routes: Arc<dyn NodeRoutes> = match &uplink {
                Some((_, index)) if routing == Routing::Direct => {
                    Arc::new(node::NetlinkRoutes { uplink: *index })
                }
                _ => Arc::new(node::NoRoutes),
            };
            Some(ClusterSettings {
                store: Arc::new(store),
                underlay_ip,
                lease_ttl: Duration::from_secs(args.lease_ttl),
                routing,
                routes,
            })
        }
        _ => None,
    };
    let dp: Arc<Pinned> =
        Arc::new(Pinned::new(dp).context("opening the conntrack table for its GC")?);
    let store: Arc<dyn pilus_kvstore::KvStore> = Arc::new(store);
    // With etcd away at start, wait for it (the datapath keeps running on
    // what it has meanwhile); every other error ends the start.
    let mut wait = Duration::from_millis(200);
    let agent = loop {
        match ControlPlane::start_with(
            settings.clone(),
            dp.clone(),
            Arc::new(NetlinkPlumbing),
            store.clone(),
            cluster.clone(),
        ) {
            Ok(a) => break a,
            Err(e @ pilus_controlplane::Error::ClusterStore { .. })
            | Err(e @ pilus_controlplane::Error::Store(_))
                if clustered =>
            {
                tracing::warn!(error = %e.message(), retry_in = ?wait, "the cluster store is not available; waiting for it");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(anyhow::Error::new(e).context("restoring state")),
        }
    };
    let agent = Arc::new(agent);
    let _cluster_threads = agent.spawn_cluster().context("following the cluster")?;
    // The GC's passes go to the metrics as they happen (counters: nothing
    // to read at scrape time).
    let ct_gc_metrics = ConntrackGcMetrics::default();
    let _ct_gc = {
        let m = ct_gc_metrics.clone();
        agent
            .spawn_ct_gc(pilus_controlplane::ctgc::GcSchedule::default(), move |r| {
                m.record_run(r.deleted, r.nat_deleted, r.took)
            })
            .context("starting the conntrack GC")?
    };

    let limits = Limits::default();
    // The connections, plus room for the maps, links and the state files.
    match api::server::ensure_open_files(limits.max_connections as u64 + 512) {
        Ok(n) => tracing::debug!(open_files = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
    let runtime = runtime()?;
    let observe = Observe {
        view,
        setup,
        monitor_control: dp.clone(),
        tracer: Arc::new(PacketTracer::new(dp.clone())),
        ct_gc: ct_gc_metrics,
        prefilter,
    };
    runtime.block_on(serve(
        &args,
        Arc::clone(&agent),
        event_reader,
        observe,
        &limits,
    ))?;
    // A change still running on the blocking pool finishes before the
    // process exits: it is never cut in half by the exit. The node's keys
    // in etcd stay for their ttl: a restart takes them over and other
    // nodes never lose its pods; a node that does not come back is removed
    // when they run out.
    agent.wait_idle();
    agent.keep_cluster_keys_on_exit();
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// What the metrics and the doctor read besides the control plane.
struct Observe {
    view: Arc<dyn DatapathView>,
    setup: NodeSetup,
    /// The monitor's run-time settings (pilus_monconf).
    monitor_control: Arc<Pinned>,
    tracer: Arc<PacketTracer>,
    /// The conntrack GC thread's runs.
    ct_gc: ConntrackGcMetrics,
    prefilter: Arc<PrefilterApi>,
}

/// Serves the API and the metrics and reads the monitor's events until
/// SIGTERM or SIGINT.
async fn serve(
    args: &Args,
    agent: Arc<ControlPlane>,
    event_reader: EventReader,
    observe: Observe,
    limits: &Limits,
) -> Result<()> {
    // Handlers before the socket exists: from the moment a client can
    // reach the agent, a signal stops it cleanly.
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let listener = api::bind(&args.socket)
        .with_context(|| format!("binding the API socket {}", args.socket.display()))?;
    listener
        .set_nonblocking(true)
        .context("making the API socket nonblocking")?;
    let listener =
        tokio::net::UnixListener::from_std(listener).context("registering the API socket")?;

    let (stop, stopping) = tokio::sync::watch::channel(false);
    let events = Arc::new(monitor::Monitor::with_control(
        monitor::CAPACITY,
        observe.monitor_control.clone(),
    ));
    let reader = tokio::spawn(monitor::read_events(
        monitor::DatapathEvents(event_reader),
        Arc::clone(&events),
        monitor::TICK,
        stopping.clone(),
    ));
    let instruments = Instruments::default();
    let metrics_server = match args.metrics_address {
        MetricsAddress::Off => None,
        MetricsAddress::At(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "binding the metrics address {addr} (--metrics-address none turns them off)"
                )
            })?;
            let sources = metrics::Sources {
                cp: Arc::clone(&agent),
                monitor: Arc::clone(&events),
                datapath: Some(Arc::clone(&observe.view)),
            };
            let registry = Arc::new(Metrics::new(sources, &instruments, Some(&observe.ct_gc)));
            let app = metrics::router(registry);
            let stopping = stopping.clone();
            tracing::info!(address = %addr, "serving metrics");
            Some(tokio::spawn(async move {
                api::serve(listener, app, &metrics::limits(), stopping).await
            }))
        }
    };
    let doctor = Arc::new(Doctor::new(Arc::clone(&agent), observe.view, observe.setup));
    let shared = api::Shared::new(agent, events, stopping.clone())
        .with_instruments(instruments)
        .with_doctor(doctor)
        .with_prefilter(observe.prefilter)
        .with_tracer(observe.tracer);
    let peers_server = match flows_address(args)? {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("binding the flows address {addr} (--flows-address none turns it off)")
            })?;
            let app = api::peer_router(shared.clone(), &metrics::limits());
            let stopping = stopping.clone();
            tracing::info!(address = %addr, "serving flows to the other nodes");
            Some(tokio::spawn(async move {
                api::serve(listener, app, &metrics::limits(), stopping).await
            }))
        }
    };
    let app = api::router(shared, limits);
    let server = {
        let limits = limits.clone();
        tokio::spawn(async move { api::serve(listener, app, &limits, stopping).await })
    };
    tracing::info!(
        socket = %args.socket.display(),
        monitor_aggregation = %args.monitor_aggregation,
        trace_events = !args.no_trace_events,
        "pilusd ready"
    );

    let signal = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal, "stopping; the datapath keeps running");
    stop.send_replace(true);
    match server.await {
        Ok(0) => {}
        Ok(dropped) => tracing::warn!(dropped, "API connections cut at exit"),
        Err(e) => tracing::error!(error = %e, "the API server task failed"),
    }
    if let Some(p) = peers_server {
        if let Err(e) = p.await {
            tracing::error!(error = %e, "the flows server task failed");
        }
    }
    if let Some(m) = metrics_server {
        if let Err(e) = m.await {
            tracing::error!(error = %e, "the metrics server task failed");
        }
    }
    // The socket goes first, so a client sees "not running" rather than a
    // socket nobody answers.
    if let Err(e) = std::fs::remove_file(&args.socket) {
        tracing::warn!(error = %e, socket = %args.socket.display(), "cannot remove the API socket");
    }
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the monitor's event reader failed"),
        Err(e) => tracing::error!(error = %e, "the monitor's event reader task failed"),
    }
    Ok(())
}
