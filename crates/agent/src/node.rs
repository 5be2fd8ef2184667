//! What a node of a cluster sets up beyond its pods: the VXLAN device
//! (tunnel mode), the routes to other nodes' pod CIDRs over the uplink
//! (direct routing), and the connection to the cluster store (etcd).

use pilus_controlplane::{
    cluster::{NodeRoutes, Routing},
    plumbing::{PlumbError, PlumbFault},
};
use pilus_netlink::{Netlink, VxlanSpec};
use std::net::Ipv4Addr;

/// The node's VXLAN device.
pub const VXLAN_DEVICE: &str = "pilus_vxlan";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("the VXLAN device {name}")]
    Vxlan {
        name: &'static str,
        #[source]
        source: pilus_netlink::Error,
    },
    #[error("the uplink {name:?} does not exist in the agent's namespace")]
    NoUplink { name: String },
    #[error("looking up the uplink {name:?}")]
    Uplink {
        name: String,
        #[source]
        source: pilus_netlink::Error,
    },
}

/// Makes sure the node's VXLAN device exists as this node needs it —
/// external mode, this port, this local address, learning off — creating
/// or re-creating it, and is up. Returns its ifindex. An agent restart
/// finds it as it left it and changes nothing (the pods' traffic runs on).
pub fn ensure_vxlan(local: Ipv4Addr, port: u16) -> Result<u32, NodeError> {
    let err = |source| NodeError::Vxlan {
        name: VXLAN_DEVICE,
        source,
    };
    let mut nl = Netlink::open().map_err(err)?;
    let want = VxlanSpec {
        name: VXLAN_DEVICE.into(),
        vni: None,
        port,
        learning: false,
        mtu: None,
        local: Some(local),
        underlay: None,
    };
    let found = nl.vxlan(VXLAN_DEVICE).map_err(err)?;
    let fits = found.as_ref().is_some_and(|v| {
        v.spec.vni.is_none()
            && v.spec.port == port
            && v.spec.local == Some(local)
            && !v.spec.learning
    });
    if !fits {
        if found.is_some() {
            tracing::info!(
                device = VXLAN_DEVICE,
                "re-creating the VXLAN device with this node's settings"
            );
            nl.delete_link(VXLAN_DEVICE).map_err(err)?;
        }
        nl.create_vxlan(&want).map_err(err)?;
    }
    let link = nl
        .link(VXLAN_DEVICE)
        .map_err(err)?
        .expect("the VXLAN device was just made");
    nl.set_up(link.index).map_err(err)?;
    Ok(link.index)
}

/// Turns on IPv4 forwarding in the agent's network namespace (as Cilium's
/// agent does): with direct routing the node routes its pods' packets to
/// the other nodes.
pub fn enable_forwarding() -> std::io::Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path)?.trim() != "1" {
        tracing::info!("enabling IPv4 forwarding (net.ipv4.ip_forward=1)");
        std::fs::write(path, "1")?;
    }
    Ok(())
}

/// The node's own ephemeral ports (net.ipv4.ip_local_port_range of the
/// agent's network namespace), which masquerade must keep out of.
pub fn local_port_range() -> std::io::Result<(u16, u16)> {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = std::fs::read_to_string(path)?;
    let bad = || std::io::Error::other(format!("{path}: unexpected {text:?}"));
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) => Ok((lo, hi)),
        _ => Err(bad()),
    }
}

/// The index of the uplink `name`.
pub fn uplink_index(name: &str) -> Result<u32, NodeError> {
    let mut nl = Netlink::open().map_err(|source| NodeError::Uplink {
        name: name.into(),
        source,
    })?;
    nl.link(name)
        .map_err(|source| NodeError::Uplink {
            name: name.into(),
            source,
        })?
        .map(|l| l.index)
        .ok_or_else(|| NodeError::NoUplink { name: name.into() })
}

/// Routes to other nodes' pod CIDRs through the uplink (direct routing).
pub struct NetlinkRoutes {
    pub uplink: u32,
}

fn plumb_error(what: String) -> impl FnOnce(pilus_netlink::Error) -> PlumbError {
    move |e| PlumbError {
        fault: PlumbFault::Other,
        what,
        source: Box::new(e),
    }
}

impl NodeRoutes for NetlinkRoutes {
    fn add(&self, pod_cidr: ipnet::Ipv4Net, via: Ipv4Addr) -> Result<(), PlumbError> {
        let what = format!("route {pod_cidr} via {via}");
        let mut nl = Netlink::open().map_err(plumb_error(what.clone()))?;
        // A route that is there already (an agent restart) is this one:
        // take it away first so `via` is the current one.
        let _ = nl.delete_route(pod_cidr.network(), pod_cidr.prefix_len());
        nl.add_route(
            pod_cidr.network(),
            pod_cidr.prefix_len(),
            Some(via),
            self.uplink,
        )
        .map_err(plumb_error(what))
    }

    fn remove(&self, pod_cidr: ipnet::Ipv4Net, via: Ipv4Addr) -> Result<(), PlumbError> {
        let what = format!("route {pod_cidr} via {via}");
        let mut nl = Netlink::open().map_err(plumb_error(what.clone()))?;
        nl.delete_route(pod_cidr.network(), pod_cidr.prefix_len())
            .map(|_| ())
            .map_err(plumb_error(what))
    }
}

/// How a route-less tunnel node answers NodeRoutes: it needs none.
pub struct NoRoutes;

impl NodeRoutes for NoRoutes {
    fn add(&self, _: ipnet::Ipv4Net, _: Ipv4Addr) -> Result<(), PlumbError> {
        Ok(())
    }
    fn remove(&self, _: ipnet::Ipv4Net, _: Ipv4Addr) -> Result<(), PlumbError> {
        Ok(())
    }
}

/// `--routing` as the command line takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RoutingArg {
    Tunnel,
    Direct,
}

impl From<RoutingArg> for Routing {
    fn from(r: RoutingArg) -> Routing {
        match r {
            RoutingArg::Tunnel => Routing::Tunnel,
            RoutingArg::Direct => Routing::Direct,
        }
    }
}
