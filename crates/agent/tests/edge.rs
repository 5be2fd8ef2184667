//! Tier 3, issue 11: the node's edge on a `pilus lab` cluster (real pilusd
//! with `--masquerade`, real etcd, pods attached by pilus-cni). An
//! "outside" namespace on the lab's underlay bridge, with only its
//! underlay address (no route to any pod CIDR), runs a TCP server that
//! answers every connection with the peer address it sees. Pods of both
//! nodes reach it over TCP and ping it, and it sees each pod's NODE address
//! as the source (a port of masquerade's range); the ping's reply could not
//! even come back otherwise (the outside has no route to the pods). Pod to
//! pod across nodes keeps working beside it, in tunnel and direct mode.
//!
//! Needs root and etcd; fails (never skips) without them. The lab and the
//! outside namespace are removed when the test ends, also on failure.

mod lab_fixture;

use lab_fixture::LabNode;
use pilus_lab::{
    plan::Routing,
    serve::{self, Probe, Proto},
};
use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

const YES: Duration = Duration::from_secs(3);
/// The outside's address on the lab's underlay (nodes are .1, .2, ...).
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 240);
const OUTSIDE_PORT: u16 = 8080;

/// One lab at a time (a cluster is two agents and etcd on two cores).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A namespace on the lab's underlay bridge with a server that tells each
/// TCP client the address it came from. Its namespace goes on drop.
struct Outside {
    netns: String,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

impl Outside {
    fn new(fx: &LabNode, name: &str) -> Outside {
        let netns = format!("{}-{name}", fx.lab.state.plan.prefix);
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &netns])
            .output();
        let mut out = Outside {
            netns,
            stop: Arc::new(AtomicBool::new(false)),
            server: None,
        };
        let underlay = &fx.lab.state.plan.underlay_netns;
        let port = format!("o-{name}");
        let addr = format!("{OUTSIDE_IP}/24");
        for args in [
            vec!["netns", "add", &out.netns],
            vec![
                "-n", underlay, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &out.netns,
            ],
            vec!["-n", underlay, "link", "set", &port, "master", "br0", "up"],
            vec!["-n", &out.netns, "addr", "add", &addr, "dev", "eth0"],
            vec!["-n", &out.netns, "link", "set", "eth0", "up"],
            vec!["-n", &out.netns, "link", "set", "lo", "up"],
        ] {
            let o = std::process::Command::new("ip")
                .args(&args)
                .output()
                .expect("ip (iproute2)");
            assert!(
                o.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        out.server = Some(out.peer_server());
        out
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.netns))
    }

    /// Serves `peer ADDRESS:PORT` to every connection until dropped; bound
    /// before this returns.
    fn peer_server(&self) -> JoinHandle<()> {
        let (path, stop) = (self.path(), self.stop.clone());
        let (bound, ready) = mpsc::channel();
        let h = std::thread::spawn(move || {
            // This thread stays in the outside's namespace.
            let _inside = pilus_netlink::netns::enter_path(&path).expect("enter the outside");
            let l =
                TcpListener::bind(("0.0.0.0", OUTSIDE_PORT)).expect("bind the outside's server");
            l.set_nonblocking(true).unwrap();
            bound.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, peer)) => {
                        let _ = writeln!(c, "peer {peer}");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        ready
            .recv_timeout(Duration::from_secs(5))
            .expect("the outside's server is listening");
        h
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.server.take() {
            let _ = h.join();
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

/// What the outside saw of `pod`'s connection: the source address and port.
fn seen_from(fx: &LabNode, pod: &str) -> SocketAddrV4 {
    let ns = PathBuf::from("/run/netns").join(&fx.lab.pod(pod).unwrap().netns);
    match serve::probe(
        &ns,
        SocketAddrV4::new(OUTSIDE_IP, OUTSIDE_PORT),
        Proto::Tcp,
        YES,
    ) {
        Probe::Reply { reply, .. } => reply
            .strip_prefix("peer ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{pod}: unexpected answer {reply:?}")),
        other => panic!("{pod} -> the outside over TCP: {other:?}"),
    }
}

fn pings_outside(fx: &LabNode, pod: &str) -> bool {
    let ns = PathBuf::from("/run/netns").join(&fx.lab.pod(pod).unwrap().netns);
    matches!(
        serve::probe(&ns, SocketAddrV4::new(OUTSIDE_IP, 0), Proto::Icmp, YES),
        Probe::Reply { .. }
    )
}

fn pods_reach_the_outside_from_their_nodes_address(prefix: &str, routing: Routing) {
    let _one = serial();
    let fx = LabNode::cluster(prefix, 2, 1, routing);
    let outside = Outside::new(&fx, "out");
    for (pod, node) in [("frontend-1", 0), ("frontend-2", 1)] {
        let node_ip = fx.lab.state.plan.nodes[node].underlay_ip;
        let pod_ip = fx.lab.pod(pod).unwrap().ip;
        let seen = seen_from(&fx, pod);
        assert_eq!(
            *seen.ip(),
            node_ip,
            "{pod} ({pod_ip}) must reach the outside from its node's address"
        );
        assert!(
            (61000..=65535).contains(&seen.port()),
            "{pod}: a port of masquerade's range, not {}",
            seen.port()
        );
        // Again: a new connection, a new mapping, the same address.
        assert_eq!(
            *seen_from(&fx, pod).ip(),
            node_ip,
            "{pod}, second connection"
        );
        assert!(pings_outside(&fx, pod), "{pod} pings the outside");
    }
    // Pod to pod across the nodes is not masqueraded and still works.
    for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
        let r = fx.probe("frontend-1", "frontend-2", proto, YES);
        assert!(
            matches!(r, Probe::Reply { .. }),
            "frontend-1 -> frontend-2 {proto}: {r:?}"
        );
    }
    drop(outside);
}

#[test]
fn tunnel_mode_pods_reach_the_outside_from_their_nodes_address() {
    pods_reach_the_outside_from_their_nodes_address("t11masqt", Routing::Tunnel);
}

#[test]
fn direct_mode_pods_reach_the_outside_from_their_nodes_address() {
    pods_reach_the_outside_from_their_nodes_address("t11masqd", Routing::Direct);
}
