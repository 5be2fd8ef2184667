//! pilusd: loads (or re-attaches to) the pinned datapath, restores its state,
//! and serves the Pilus API on a unix socket until SIGTERM/SIGINT. Exiting
//! leaves the datapath running: programs, links and maps stay pinned.

use anyhow::{bail, Context, Result};
use clap::Parser;
use pilus_agent::{api, datapath::Pinned, monitor, plumbing::NetlinkPlumbing};
use pilus_api::types::paths;
use pilus_controlplane::{ControlPlane, Settings};
use pilus_datapath::{Datapath, EventReader, LoadOptions, NodeConfig, PodCidr};
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{atomic::AtomicBool, Arc},
};

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
    /// Report every forwarded packet as a trace event (`pilus monitor --type
    /// trace`), not only drops. Costs a ring-buffer record (a reserve, a
    /// 128-byte copy, a submit) on every packet the datapath forwards: for
    /// debugging, not for production load. Applies to every endpoint from
    /// start-up on, also those attached by an earlier run.
    #[arg(long)]
    trace: bool,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log: String,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Blocks SIGTERM and SIGINT in this thread (and so in every thread spawned
/// later), to take them synchronously with sigwait.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set; pthread_sigmask on the
    // calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("pilusd: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    // One malloc arena: the API's short-lived connection threads would
    // otherwise each grow an arena of their own and keep it, inflating the
    // agent's resident memory for nothing (it is lock-bound anyway).
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
        // exists so they all start inside. `ip netns exec` is no substitute:
        // it remounts /sys and hides bpffs.
        pilus_netlink::netns::enter_path(&path)
            .with_context(|| format!("entering network namespace {}", path.display()))?
            .stay();
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| args.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let signals = block_signals();

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
    let mut dp = Datapath::load(&LoadOptions {
        node: NodeConfig {
            router_ip4: router,
            pod_cidr,
            trace: args.trace,
            ..Default::default()
        },
        bpffs_root: args.bpffs.clone(),
        pin_dir: Some(pin_dir.clone()),
    })
    .context("loading the datapath")?;
    let event_reader =
        EventReader::new(&mut dp).context("opening the datapath's event ring buffer")?;
    let store = pilus_kvstore::LocalKv::open(&args.state_dir)
        .with_context(|| format!("opening the state in {}", args.state_dir.display()))?;
    let settings = Settings {
        node_name: args.node_name.clone().unwrap_or_else(hostname),
        pod_cidr: net,
        router,
        pin_dir,
        socket: args.socket.clone(),
        state_dir: args.state_dir.clone(),
    };
    let agent = ControlPlane::start(
        settings,
        Arc::new(Pinned::new(dp)),
        Arc::new(NetlinkPlumbing),
        Arc::new(store),
    )
    .context("restoring state")?;
    let agent = Arc::new(agent);
    let listener = pilus_api::bind(&args.socket)
        .with_context(|| format!("binding the API socket {}", args.socket.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(monitor::Monitor::new(monitor::CAPACITY));
    let reader = monitor::spawn_reader(event_reader, events.clone(), stop.clone(), monitor::TICK)
        .context("starting the monitor thread")?;
    let handler_agent = agent.clone();
    // The monitor's long polls wait on the monitor's own lock, not the
    // agent's: they are routed before the agent's routes.
    let handler: pilus_api::Handler = Arc::new(move |req| {
        if req.path.trim_end_matches('/') == paths::MONITOR {
            monitor::handle(&events, &handler_agent, &req)
        } else {
            api::handle(&handler_agent, req)
        }
    });
    let server = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || pilus_api::serve(listener, handler, stop))
            .context("starting the API thread")?
    };
    tracing::info!(socket = %args.socket.display(), trace = args.trace, "pilusd ready");

    let mut sig: libc::c_int = 0;
    // SAFETY: waits on the set blocked above; writes the signal number.
    unsafe { libc::sigwait(&signals, &mut sig) };
    tracing::info!(signal = sig, "stopping; the datapath keeps running");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = server.join();
    let _ = reader.join();
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}
