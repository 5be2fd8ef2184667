//! pilusd: loads (or re-attaches to) the pinned datapath, restores its state,
//! and serves the Pilus API on a unix socket until SIGTERM/SIGINT. Exiting
//! leaves the datapath running: programs, links and maps stay pinned.

use anyhow::{bail, Context, Result};
use clap::Parser;
use pilus_agent::{api, dp::Maps, monitor, plumbing::NetlinkPlumbing, Agent, NodeSettings};
use pilus_api::types::paths;
use pilus_datapath::{Datapath, EventReader, LoadOptions, NodeConfig, PodCidr};
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{atomic::AtomicBool, Arc, Mutex},
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

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let (a, l) = s
        .split_once('/')
        .with_context(|| format!("--pod-cidr {s:?}: expected ADDRESS/LENGTH"))?;
    Ok((
        a.parse()
            .with_context(|| format!("--pod-cidr {s:?}: bad address"))?,
        l.parse()
            .with_context(|| format!("--pod-cidr {s:?}: bad length"))?,
    ))
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
        let guard = pilus_netns::enter_path(&path)
            .with_context(|| format!("entering network namespace {}", path.display()))?;
        std::mem::forget(guard);
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| args.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let signals = block_signals();

    let (net, len) = parse_cidr(&args.pod_cidr)?;
    let pod_cidr = PodCidr::new(net, len).context("--pod-cidr")?;
    let router = args
        .router_ip
        .unwrap_or_else(|| Ipv4Addr::from(u32::from(net) + 1));
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
    let store = pilus_kvstore::Store::open(&args.state_dir)
        .with_context(|| format!("opening the state in {}", args.state_dir.display()))?;
    let node = NodeSettings {
        node_name: args.node_name.clone().unwrap_or_else(hostname),
        pod_cidr: (net, len),
        router,
        pin_dir,
        socket: args.socket.clone(),
        state_dir: args.state_dir.clone(),
    };
    let dp: Box<dyn Maps> = Box::new(dp);
    let agent = Agent::start(node, dp, Box::new(NetlinkPlumbing), Some(store))
        .context("restoring state")?;
    let agent = Arc::new(Mutex::new(agent));
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
