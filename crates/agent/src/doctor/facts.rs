//! What the checks look at, gathered in one pass on the node: the control
//! plane's views of its endpoints, nodes and cluster store; rtnetlink's
//! links, rules and the routes of every table; the sysctls under
//! `/proc/sys/net/ipv4`; the datapath's hooks, maps and counters through
//! [`DatapathView`]. The checks are pure functions of [`Facts`].
//!
//! Nothing here takes the control plane's writer lock: its views hold its
//! managers' read locks for a moment each.

use crate::view::DatapathView;
use ipnet::Ipv4Net;
use pilus_api_types::ClusterStatus;
use pilus_controlplane::{cluster::Routing, ControlPlane};
use pilus_datapath::{inspect::Usage, HookStatus, NodeDevice, SockHookStatus};
use pilus_netlink::{Netlink, Route, Rule};
use std::{collections::BTreeMap, net::Ipv4Addr};

/// A local endpoint, as the routing checks need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointFact {
    pub id: u16,
    /// `namespace/pod` (the container id for a pod without a name).
    pub name: String,
    pub ip: Ipv4Addr,
    pub host_ifname: String,
    pub host_ifindex: u32,
}

/// The policy routing state of the node's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Net {
    pub rules: Vec<Rule>,
    /// Every table's routes.
    pub routes: Vec<Route>,
}

/// A device whose hooks should run Pilus's programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookFact {
    pub ifname: String,
    /// What it is: `endpoint 3 (default/web)`, `uplink`, `overlay`.
    pub what: String,
    /// `Ok(None)`: the device does not exist.
    pub hooks: Result<Option<Vec<HookStatus>>, String>,
}

/// Socket-level LB's programs on the cgroup the agent was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketLbFact {
    pub cgroup: String,
    pub hooks: Result<Vec<SockHookStatus>, String>,
}

/// Events the ring buffer lost (packets whose event found it full).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventsLost {
    /// Since the maps were created (the counter is pinned with them).
    pub total: u64,
    /// Since this agent started.
    pub since_start: u64,
}

/// Everything the checks look at.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    pub node_name: String,
    /// This node's pod CIDR and pin directory, for the fixes.
    pub pod_cidr: String,
    pub pin_dir: String,
    /// `None`: a node on its own.
    pub routing: Option<Routing>,
    pub uplink: Option<String>,
    pub overlay: Option<String>,
    /// Masquerade is on: pods' traffic to the outside is routed by the
    /// node (forwarding needed in either routing mode).
    pub masquerade: bool,
    /// NodePort is on: the backends' replies are routed by the node to the
    /// uplink (forwarding needed in either routing mode).
    pub node_port: bool,
    pub endpoints: Vec<EndpointFact>,
    /// Other nodes' pod CIDRs, by node name.
    pub remote_pod_cidrs: Vec<(String, Ipv4Net)>,
    /// Link names by index, to print routes as `ip route` does.
    pub links: BTreeMap<u32, String>,
    pub net: Result<Net, String>,
    /// Values by sysctl name (`net.ipv4.conf.all.rp_filter`); one that
    /// could not be read is absent.
    pub sysctls: BTreeMap<String, u32>,
    pub hooks: Vec<HookFact>,
    /// `None`: socket-level LB is off (no --socket-lb-cgroup).
    pub socket_lb: Option<SocketLbFact>,
    pub usage: Result<Usage, String>,
    pub events_lost: Result<EventsLost, String>,
    pub cluster: Option<ClusterStatus>,
}

/// What the agent was started with that the checks need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSetup {
    pub routing: Option<Routing>,
    /// The uplink, when it carries the node programs (direct routing, or
    /// masquerade in either mode).
    pub uplink: Option<String>,
    /// The VXLAN device (tunnel mode).
    pub overlay: Option<String>,
    /// The cgroup of socket-level LB (--socket-lb-cgroup).
    pub socket_lb_cgroup: Option<std::path::PathBuf>,
    /// `--masquerade`.
    pub masquerade: bool,
    /// `--node-port`.
    pub node_port: bool,
}

fn chain(e: &dyn std::error::Error) -> String {
    pilus_datapath::error_chain(e)
}

/// `net.ipv4.conf.<dev>.<key>`.
pub fn conf_key(dev: &str, key: &str) -> String {
    format!("net.ipv4.conf.{dev}.{key}")
}

pub const IP_FORWARD: &str = "net.ipv4.ip_forward";

fn read_sysctl(name: &str) -> Option<u32> {
    // The name's dots are path separators, except inside a device name:
    // build the path from the parts instead of replacing dots.
    let path = match name.strip_prefix("net.ipv4.conf.") {
        Some(rest) => {
            let (dev, key) = rest.rsplit_once('.')?;
            format!("/proc/sys/net/ipv4/conf/{dev}/{key}")
        }
        None => format!("/proc/sys/{}", name.replace('.', "/")),
    };
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_net(nl: &mut Netlink) -> Result<(Net, BTreeMap<u32, String>), pilus_netlink::Error> {
    let links = nl.links()?.into_iter().map(|l| (l.index, l.name)).collect();
    let net = Net {
        rules: nl.rules()?,
        routes: nl.routes_all()?,
    };
    Ok((net, links))
}

/// Gathers the facts on this node (in the calling thread's namespace:
/// pilusd's threads are all in the node's).
pub fn gather(
    cp: &ControlPlane,
    view: &dyn DatapathView,
    setup: &NodeSetup,
    lost_at_start: Option<u64>,
) -> Facts {
    let status = cp.status();
    let endpoints: Vec<EndpointFact> = cp
        .endpoints_view()
        .into_iter()
        .map(|e| EndpointFact {
            id: e.id,
            name: format!(
                "{}/{}",
                e.namespace,
                e.pod_name.as_deref().unwrap_or(&e.container_id)
            ),
            ip: e.ipv4,
            host_ifname: e.host_ifname,
            host_ifindex: e.host_ifindex,
        })
        .collect();
    let remote_pod_cidrs = cp
        .nodes_view()
        .into_iter()
        .filter(|n| !n.local)
        .filter_map(|n| Some((n.name, n.pod_cidr.parse().ok()?)))
        .collect();
    let (net, links) = match Netlink::open().and_then(|mut nl| read_net(&mut nl)) {
        Ok((net, links)) => (Ok(net), links),
        Err(e) => (Err(chain(&e)), BTreeMap::new()),
    };
    let mut names = vec![IP_FORWARD.to_string()];
    let mut devices = vec!["all".to_string()];
    devices.extend(endpoints.iter().map(|e| e.host_ifname.clone()));
    devices.extend(setup.uplink.clone());
    for dev in &devices {
        names.push(conf_key(dev, "rp_filter"));
        names.push(conf_key(dev, "forwarding"));
    }
    let sysctls = names
        .into_iter()
        .filter_map(|n| Some((n.clone(), read_sysctl(&n)?)))
        .collect();
    let mut hooks: Vec<HookFact> = endpoints
        .iter()
        .map(|e| HookFact {
            ifname: e.host_ifname.clone(),
            what: format!("endpoint {} ({})", e.id, e.name),
            hooks: view.endpoint_hooks(&e.host_ifname).map_err(|e| chain(&e)),
        })
        .collect();
    let devices = [
        (&setup.uplink, NodeDevice::Uplink, "uplink"),
        (&setup.overlay, NodeDevice::Overlay, "overlay"),
    ];
    for (dev, role, what) in devices {
        if let Some(dev) = dev {
            hooks.push(HookFact {
                ifname: dev.clone(),
                what: what.to_string(),
                hooks: view.device_hooks(dev, role).map_err(|e| chain(&e)),
            });
        }
    }
    let counters = view.counters();
    let events_lost = match (&counters, lost_at_start) {
        (Ok(c), Some(start)) => Ok(EventsLost {
            total: c.events_lost,
            since_start: c.events_lost.saturating_sub(start),
        }),
        (Ok(_), None) => Err("the count at the agent's start is not known".into()),
        (Err(e), _) => Err(chain(e)),
    };
    Facts {
        node_name: status.node_name,
        pod_cidr: status.pod_cidr,
        pin_dir: status.pin_dir,
        routing: setup.routing,
        uplink: setup.uplink.clone(),
        overlay: setup.overlay.clone(),
        masquerade: setup.masquerade,
        node_port: setup.node_port,
        endpoints,
        remote_pod_cidrs,
        links,
        net,
        sysctls,
        hooks,
        socket_lb: setup.socket_lb_cgroup.as_ref().map(|cg| SocketLbFact {
            cgroup: cg.display().to_string(),
            hooks: view.socket_lb_hooks(cg).map_err(|e| chain(&e)),
        }),
        usage: view.usage().map_err(|e| chain(&e)),
        events_lost,
        cluster: status.cluster,
    }
}
