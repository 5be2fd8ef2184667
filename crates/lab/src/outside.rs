//! A host outside the cluster: a namespace on the lab's underlay bridge
//! with only an underlay address (no route to any pod CIDR), running a TCP
//! server that answers every connection with the address it came from
//! (`peer ADDRESS:PORT`). What a pod's masqueraded traffic looks like from
//! the outside: the node's address, and no way back to the pod but through
//! the node.

use crate::{
    lab::ip,
    serve::{Probe, Proto},
    Lab, LabError,
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

/// The outside host's address on the underlay by default: above the
/// nodes (.1-.32) and the etcd members (.200-.202).
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 240);
/// The port its server listens on.
pub const OUTSIDE_PORT: u16 = 8080;

/// The host, and its server thread; both go on drop (and the namespace
/// with `Lab::down`, whose sweep its name's prefix matches).
pub struct Outside {
    netns: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

impl Outside {
    /// Adds namespace `<prefix>-<name>` on the lab's underlay bridge with
    /// `ip`/24, and starts its server on [`OUTSIDE_PORT`].
    pub fn new(lab: &Lab, name: &str, ip_addr: Ipv4Addr) -> Result<Outside, LabError> {
        let netns = format!("{}-{name}", lab.state.plan.prefix);
        let _ = ip(&["netns", "del", &netns]);
        ip(&["netns", "add", &netns])?;
        let mut out = Outside {
            netns,
            ip: ip_addr,
            port: OUTSIDE_PORT,
            stop: Arc::new(AtomicBool::new(false)),
            server: None,
        };
        let underlay = lab.state.plan.underlay_netns.clone();
        let port = format!("o-{name}");
        let addr = format!("{ip_addr}/24");
        let ns = out.netns.clone();
        for args in [
            vec![
                "-n", &underlay, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ],
            vec!["-n", &underlay, "link", "set", &port, "master", "br0", "up"],
            vec!["-n", &ns, "addr", "add", &addr, "dev", "eth0"],
            vec!["-n", &ns, "link", "set", "eth0", "up"],
            vec!["-n", &ns, "link", "set", "lo", "up"],
        ] {
            ip(&args)?;
        }
        out.server = Some(out.peer_server()?);
        Ok(out)
    }

    /// Routes `dest`/32 through `via` (a node's underlay address), as a
    /// network routes an externalIP or LoadBalancer address to the node
    /// that announces it; replaces any earlier route to `dest`.
    pub fn route(&self, dest: Ipv4Addr, via: Ipv4Addr) -> Result<(), LabError> {
        let (dest, via) = (format!("{dest}/32"), via.to_string());
        ip(&["-n", &self.netns, "route", "replace", &dest, "via", &via])
    }

    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    /// Serves `peer ADDRESS:PORT` to every connection until dropped; bound
    /// before this returns.
    fn peer_server(&self) -> Result<JoinHandle<()>, LabError> {
        let (path, stop, port) = (self.netns_path(), self.stop.clone(), self.port);
        let (bound, ready) = mpsc::channel();
        let h = std::thread::spawn(move || {
            // This thread stays in the outside's namespace.
            let listener = pilus_netlink::netns::enter_path(&path)
                .map_err(|e| e.to_string())
                .and_then(|inside| {
                    let l = TcpListener::bind(("0.0.0.0", port)).map_err(|e| e.to_string())?;
                    l.set_nonblocking(true).map_err(|e| e.to_string())?;
                    Ok((inside, l))
                });
            let (_inside, l) = match listener {
                Ok(v) => {
                    let _ = bound.send(Ok(()));
                    v
                }
                Err(e) => {
                    let _ = bound.send(Err(e));
                    return;
                }
            };
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, peer)) => {
                        // One write: the probe reads once, and writeln!
                        // would send the pieces of its format apart.
                        let _ = c.write_all(format!("peer {peer}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        match ready.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(h),
            Ok(Err(e)) => Err(LabError::Setup(format!(
                "the outside host's server on port {port}: {e}"
            ))),
            Err(_) => Err(LabError::Setup(
                "the outside host's server did not start".into(),
            )),
        }
    }

    /// Connects from pod `pod` to the outside's server: the source address
    /// and port it saw, or what the probe got instead.
    pub fn seen_from(
        &self,
        lab: &Lab,
        pod: &str,
        timeout: Duration,
    ) -> Result<Result<SocketAddrV4, Probe>, LabError> {
        let p = lab.connect(pod, &self.ip.to_string(), self.port, Proto::Tcp, timeout)?;
        Ok(match &p {
            Probe::Reply { reply, .. } => reply
                .strip_prefix("peer ")
                .and_then(|a| a.parse().ok())
                .ok_or(p),
            _ => Err(p),
        })
    }

    /// Pings the outside from pod `pod`.
    pub fn pinged_from(&self, lab: &Lab, pod: &str, timeout: Duration) -> Result<bool, LabError> {
        let p = lab.connect(pod, &self.ip.to_string(), 0, Proto::Icmp, timeout)?;
        Ok(matches!(p, Probe::Reply { .. }))
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.server.take() {
            let _ = h.join();
        }
        let _ = ip(&["netns", "del", &self.netns]);
    }
}
