//! The kernel-only hosts the benchmark compares Pilus with, built with
//! iproute2 alone (no BPF, nothing of Pilus's plumbing, so the baseline
//! does not share a bug with what it measures):
//!
//! - [`SameNode`]: a node namespace routing between two pod namespaces,
//!   each on a veth pair with a /32 address, a gateway on the node's `lo`
//!   (whose ARP the node answers, as for any local address) and a /32
//!   route back — the shape of a Pilus pod, forwarded by the node's stack.
//!   With iptables rules it is the `iptables` configuration.
//! - [`TwoNodes`]: two such nodes on an underlay bridge, one pod each,
//!   joined by plain kernel VXLAN (a point-to-point VXLAN device per node,
//!   port 8472, pod MTU 1450 as Pilus's tunnel gives) or by routes to each
//!   other's pod /24 through the underlay.
//!
//! Every namespace is a [`NetNs`], removed with its links when dropped.

use super::iptables::{self, Layout};
use crate::{error::Context, load::Ends, Error};
use pilus_netns::NetNs;
use std::{
    fmt::Write as _,
    io::Write as _,
    net::Ipv4Addr,
    process::{Command, Stdio},
};

/// The same-node pods' gateway, client and server.
const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
/// VXLAN's overhead on IPv4 (outer IP, UDP, VXLAN, inner Ethernet).
const VXLAN_MTU: u32 = 1450;

/// Runs `cmd` with `input` on its stdin; a non-zero exit is an error with
/// its stderr.
fn run_with_stdin(mut cmd: Command, input: &str, what: &str) -> Result<(), Error> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context(format!("{what}: starting"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A child that exits early closes its end: its status says why.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let out = child
        .wait_with_output()
        .context(format!("{what}: waiting"))?;
    if !out.status.success() {
        return Err(Error::Unexpected {
            what: format!(
                "{what}: {} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        });
    }
    Ok(())
}

/// `ip -n <ns> -batch -`: many link, address and route changes for one
/// process start.
fn ip_batch(ns: &NetNs, cmds: &str) -> Result<(), Error> {
    let mut cmd = Command::new("ip");
    cmd.args(["-n", ns.name(), "-batch", "-"]);
    run_with_stdin(cmd, cmds, &format!("ip -batch in {}", ns.name()))
}

/// A namespace for a host of the benchmark: IPv6 off (no router
/// solicitations or DAD on the measured links).
fn host(prefix: &str) -> Result<NetNs, Error> {
    let ns = NetNs::new(prefix).context("creating a namespace")?;
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
        .context("turning IPv6 off")?;
    ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
        .context("turning IPv6 off")?;
    Ok(ns)
}

/// A node namespace that forwards, with its pods' gateway on `lo`.
fn node(prefix: &str, gateway: Ipv4Addr) -> Result<NetNs, Error> {
    let n = host(prefix)?;
    n.sysctl("net.ipv4.ip_forward", "1")
        .context("enabling forwarding")?;
    ip_batch(&n, &format!("addr add {gateway}/32 dev lo\n"))?;
    Ok(n)
}

/// A pod namespace on a veth pair to `node` (host side `host_if`), as a
/// CNI plugin would make it, with Pilus's addressing.
fn pod(
    prefix: &str,
    node: &NetNs,
    host_if: &str,
    ip: Ipv4Addr,
    gateway: Ipv4Addr,
    mtu: u32,
) -> Result<NetNs, Error> {
    let p = host(prefix)?;
    ip_batch(
        node,
        &format!(
            "link add {host_if} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {}\nlink set {host_if} up\nroute add {ip}/32 dev {host_if}\n",
            p.name()
        ),
    )?;
    ip_batch(
        &p,
        &format!(
            "addr add {ip}/32 dev eth0\nlink set eth0 up\nroute add {gateway}/32 dev eth0\nroute add default via {gateway} dev eth0\n"
        ),
    )?;
    Ok(p)
}

/// Two pods on one node, forwarded by the node's stack.
pub(crate) struct SameNode {
    // Dropped first: the pods' veths go with their namespaces.
    _pods: [NetNs; 2],
    node: NetNs,
    fillers: Vec<Ipv4Addr>,
    pub ends: Ends,
}

/// The address of the `i`-th filler endpoint (any node): out of the way of
/// the pods, inside 198.18.0.0/15.
pub(crate) fn filler_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 4 + (i / 250) as u8, (i % 250) as u8 + 2)
}

impl SameNode {
    pub(crate) fn build(prefix: &str) -> Result<SameNode, Error> {
        let node = node(prefix, GATEWAY)?;
        let client = pod(prefix, &node, "b13h0", CLIENT, GATEWAY, 1500)?;
        let server = pod(prefix, &node, "b13h1", SERVER, GATEWAY, 1500)?;
        let ends = Ends {
            client: client.path(),
            server: server.path(),
            server_ip: SERVER,
        };
        Ok(SameNode {
            _pods: [client, server],
            node,
            fillers: Vec::new(),
            ends,
        })
    }

    /// Grows the node to `n` filler endpoints: veth pairs with a /32 route
    /// each, as a pod's (the pod side stays in the node: only the node's
    /// links, routes and rules matter to the measured flow).
    pub(crate) fn grow_fillers(&mut self, n: usize) -> Result<(), Error> {
        let mut cmds = String::new();
        for i in self.fillers.len()..n {
            let ip = filler_ip(i);
            let _ = write!(
                cmds,
                "link add b13f{i} type veth peer name b13g{i}\nlink set b13f{i} up\nlink set b13g{i} up\nroute add {ip}/32 dev b13f{i}\n"
            );
            self.fillers.push(ip);
        }
        if !cmds.is_empty() {
            ip_batch(&self.node, &cmds)?;
        }
        Ok(())
    }

    /// Installs the iptables configuration for the benchmark's policy
    /// with `entries` rules on the server and a chain per filler; returns
    /// the rules in the filter table.
    pub(crate) fn apply_iptables(&self, entries: usize) -> Result<usize, Error> {
        let text = iptables::ruleset(
            &Layout {
                client: CLIENT,
                server: SERVER,
                fillers: self.fillers.clone(),
            },
            entries,
        );
        let cmd = self
            .node
            .command(&["iptables-restore"])
            .context("iptables-restore")?;
        run_with_stdin(
            cmd,
            &text,
            "iptables-restore (is iptables installed? apt-get install iptables)",
        )?;
        Ok(text.lines().filter(|l| l.starts_with("-A ")).count())
    }
}

/// How two kernel-only nodes reach each other's pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Link {
    /// A point-to-point VXLAN device per node (no BPF).
    Vxlan,
    /// Routes to the other node's pod /24 via its underlay address.
    Routed,
}

/// Two nodes on an underlay bridge, a pod on each.
pub(crate) struct TwoNodes {
    _pods: Vec<NetNs>,
    _nodes: Vec<NetNs>,
    _underlay: NetNs,
    pub ends: Ends,
}

impl TwoNodes {
    pub(crate) fn build(prefix: &str, link: Link) -> Result<TwoNodes, Error> {
        let underlay = host(prefix)?;
        ip_batch(&underlay, "link add br0 type bridge\nlink set br0 up\n")?;
        let mut nodes = Vec::new();
        let mut pods = Vec::new();
        let mtu = match link {
            Link::Vxlan => VXLAN_MTU,
            Link::Routed => 1500,
        };
        for (i, j) in [(1u8, 2u8), (2, 1)] {
            let gw = Ipv4Addr::new(198, 18, i, 1);
            let n = node(prefix, gw)?;
            pilus_netns::veth_pair(&underlay, &format!("n{i}"), &n, "eth0")
                .context("linking a node to the underlay")?;
            ip_batch(&underlay, &format!("link set n{i} master br0\n"))?;
            let mut cmds = format!("addr add 198.19.0.{i}/24 dev eth0\n");
            match link {
                Link::Vxlan => {
                    let _ = write!(
                        cmds,
                        "link add b13vx type vxlan id 1 local 198.19.0.{i} remote 198.19.0.{j} dstport 8472 dev eth0\naddr add 198.18.200.{i}/24 dev b13vx\nlink set b13vx up\nroute add 198.18.{j}.0/24 via 198.18.200.{j} dev b13vx\n"
                    );
                }
                Link::Routed => {
                    let _ = writeln!(cmds, "route add 198.18.{j}.0/24 via 198.19.0.{j} dev eth0");
                }
            }
            ip_batch(&n, &cmds)?;
            let ip = Ipv4Addr::new(198, 18, i, 10);
            pods.push(pod(prefix, &n, "b13h0", ip, gw, mtu)?);
            nodes.push(n);
        }
        let ends = Ends {
            client: pods[0].path(),
            server: pods[1].path(),
            server_ip: Ipv4Addr::new(198, 18, 2, 10),
        };
        Ok(TwoNodes {
            _pods: pods,
            _nodes: nodes,
            _underlay: underlay,
            ends,
        })
    }
}
