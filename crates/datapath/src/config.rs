//! Per-node constants, written into the object's `const volatile` globals
//! before verification (bpf/lib/config.h holds the C side and the meaning).

use crate::Error;
use ipnet::Ipv4Net;
use pilus_abi::Be32;
use std::net::Ipv4Addr;

/// The node's pod CIDR: local endpoints take their addresses from it, and
/// the datapath finds them by their offset in it. An `ipnet::Ipv4Net`
/// checked for what the endpoint array can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodCidr(Ipv4Net);

impl PodCidr {
    /// The largest pod CIDR: a /16, 65536 slots (2 MiB of endpoint array).
    pub const MIN_PREFIX: u8 = 16;

    pub fn network(&self) -> Ipv4Addr {
        self.0.network()
    }

    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    pub fn net(&self) -> Ipv4Net {
        self.0
    }

    /// Validates a prefix: a /16 to /30 with no host bits set.
    pub fn from_net(net: Ipv4Net) -> Result<PodCidr, Error> {
        PodCidr::new(net.addr(), net.prefix_len())
    }

    /// Validates `network/prefix_len`: a /16 to /30 with no host bits set.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<PodCidr, Error> {
        let bad = |reason| Error::PodCidr {
            network,
            prefix_len,
            reason,
        };
        if !(Self::MIN_PREFIX..=30).contains(&prefix_len) {
            return Err(bad("the prefix length must be between /16 and /30"));
        }
        let net =
            Ipv4Net::new(network, prefix_len).map_err(|_| bad("the prefix length is over 32"))?;
        if net.network() != network {
            return Err(bad("host bits are set"));
        }
        Ok(PodCidr(net))
    }

    /// Number of addresses, and slots of pilus_lxc.
    pub fn size(&self) -> u32 {
        1 << (32 - u32::from(self.prefix_len()))
    }

    /// The slot of `ip` in pilus_lxc, or an error if it is outside.
    pub fn slot(&self, ip: Ipv4Addr) -> Result<u32, Error> {
        let off = u32::from(ip).wrapping_sub(u32::from(self.network()));
        if off >= self.size() {
            return Err(Error::OutsidePodCidr {
                ip,
                cidr: self.to_string(),
            });
        }
        Ok(off)
    }
}

impl std::fmt::Display for PodCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The ports masquerade allocates from: an inclusive range of
/// unprivileged ports. It must stay apart from the node's own ephemeral
/// ports (its `ip_local_port_range`, 32768-60999 by default): a reply to
/// the node's own connection must never be taken for a pod's (the agent
/// checks; [`NatPorts::overlaps`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatPorts {
    min: u16,
    max: u16,
}

impl NatPorts {
    /// Validates `min-max`: unprivileged (1024 and up), not empty.
    pub fn new(min: u16, max: u16) -> Result<NatPorts, Error> {
        let bad = |reason| Error::NatPorts { min, max, reason };
        if min < 1024 {
            return Err(bad("the ports must be unprivileged (1024 and up)"));
        }
        if max < min {
            return Err(bad("the range is empty (the maximum is below the minimum)"));
        }
        Ok(NatPorts { min, max })
    }

    pub fn min(&self) -> u16 {
        self.min
    }

    pub fn max(&self) -> u16 {
        self.max
    }

    /// Does the range share a port with `lo..=hi` (e.g. the node's
    /// `ip_local_port_range`)?
    pub fn overlaps(&self, lo: u16, hi: u16) -> bool {
        self.min <= hi && lo <= self.max
    }
}

impl Default for NatPorts {
    /// Above Linux's default ephemeral range (32768-60999).
    fn default() -> Self {
        NatPorts {
            min: 61000,
            max: 65535,
        }
    }
}

impl std::fmt::Display for NatPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl std::str::FromStr for NatPorts {
    type Err = Error;

    /// `MIN-MAX`, as `ip_local_port_range` is written (a dash or blanks).
    fn from_str(s: &str) -> Result<NatPorts, Error> {
        let bad = || Error::NatPortsSyntax {
            text: s.to_string(),
        };
        let mut it = s
            .split(|c: char| c == '-' || c.is_whitespace())
            .filter(|p| !p.is_empty());
        let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        let min = a.parse().map_err(|_| bad())?;
        let max = b.parse().map_err(|_| bad())?;
        NatPorts::new(min, max)
    }
}

/// What one node's datapath is configured with at load time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// The pods' gateway: ARP requests for it are answered in the datapath.
    pub router_ip4: Ipv4Addr,
    /// Where local pods' addresses come from.
    pub pod_cidr: PodCidr,
    pub ct_lifetime_tcp: u32,
    pub ct_lifetime_nontcp: u32,
    pub ct_syn_timeout: u32,
    pub ct_close_timeout: u32,
    /// Unread event bytes that make the datapath wake the reader.
    pub events_wakeup_bytes: u32,
    /// Trace events (and allowed policy verdicts, debug messages and
    /// captures) compiled in; how many are sent is set at run time
    /// ([`crate::MonitorSettings`]). `false` compiles them out: drops and
    /// denials only, the floor of the observability benchmark.
    pub trace_events: bool,
    /// The kernel's CONFIG_HZ; 0 = measure it at load.
    pub hz: u32,
    /// Tunnel mode: the VXLAN device's ifindex (0: no tunnel, pods on other
    /// nodes are reached through the stack: direct routing).
    pub tunnel_ifindex: u32,
    /// The largest IPv4 packet the tunnel carries (the pods' MTU then).
    pub tunnel_mtu: u32,
    /// Conntrack entries (`pilus_ct4`'s size). A full table refuses new
    /// flows (a counted drop) until the agent's GC makes room.
    pub ct_max_entries: u32,
    /// Masquerade: pods' traffic to addresses outside the cluster leaves
    /// from this address (the node's, on its uplink, where `to_netdev`
    /// and `from_netdev` must be attached); `None`: off.
    pub masquerade_ip4: Option<Ipv4Addr>,
    /// The ports masquerade (and NodePort's SNAT) allocates from.
    pub nat_ports: NatPorts,
    /// NAT entries (`pilus_nat4`'s size, two per flow). Full, new flows to
    /// the outside are refused (a counted drop) until the GC makes room.
    pub nat_max_entries: u32,
    /// NodePort: connections from the network to this address (the
    /// node's, on its uplink) and a NodePort frontend's port are served by
    /// the frontend's backends, those on other nodes from this address and
    /// a port of `nat_ports` (SNAT); `None`: off.
    pub nodeport_ip4: Option<Ipv4Addr>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            router_ip4: Ipv4Addr::UNSPECIFIED,
            // A product default; tests and benchmarks use 198.18.0.0/15 ranges.
            pod_cidr: PodCidr(Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 24).expect("a /24")),
            ct_lifetime_tcp: 21600,
            ct_lifetime_nontcp: 60,
            ct_syn_timeout: 60,
            ct_close_timeout: 10,
            events_wakeup_bytes: 64 * 1024,
            trace_events: true,
            hz: 0,
            tunnel_ifindex: 0,
            tunnel_mtu: TUNNEL_MTU,
            ct_max_entries: CT_MAX_ENTRIES,
            masquerade_ip4: None,
            nat_ports: NatPorts::default(),
            nat_max_entries: NAT_MAX_ENTRIES,
            nodeport_ip4: None,
        }
    }
}

/// Conntrack entries by default: Cilium's default for its TCP table.
pub const CT_MAX_ENTRIES: u32 = 262_144;

/// NAT entries by default: 65536 masqueraded flows.
pub const NAT_MAX_ENTRIES: u32 = 131_072;

/// The pods' MTU in tunnel mode: a 1500-byte underlay less VXLAN's 50
/// bytes (outer Ethernet is not counted; outer IPv4 20, UDP 8, VXLAN 8,
/// inner Ethernet 14).
pub const TUNNEL_MTU: u32 = 1450;

/// The values, owned, so the loader can borrow them while it loads: one
/// table of (global, value), so names and values cannot drift apart.
pub(crate) struct Globals {
    router_ip4: Be32,
    pod_cidr: Be32,
    nat_ip4: Be32,
    nodeport_ip4: Be32,
    values: Vec<(&'static str, u32)>,
}

impl NodeConfig {
    /// The globals to load with; `hz` is the measured or configured tick rate.
    pub(crate) fn globals(&self, hz: u32) -> Globals {
        Globals {
            router_ip4: Be32::from(self.router_ip4),
            pod_cidr: Be32::from(self.pod_cidr.network()),
            // NodePort's SNAT (to another node's backend) uses masquerade's
            // address, ports and table: the node's address either way.
            nat_ip4: Be32::from(
                self.masquerade_ip4
                    .or(self.nodeport_ip4)
                    .unwrap_or(Ipv4Addr::UNSPECIFIED),
            ),
            nodeport_ip4: Be32::from(self.nodeport_ip4.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            values: vec![
                ("CONFIG_CT_LIFETIME_TCP", self.ct_lifetime_tcp),
                ("CONFIG_CT_LIFETIME_NONTCP", self.ct_lifetime_nontcp),
                ("CONFIG_CT_SYN_TIMEOUT", self.ct_syn_timeout),
                ("CONFIG_CT_CLOSE_TIMEOUT", self.ct_close_timeout),
                ("CONFIG_EVENTS_WAKEUP_BYTES", self.events_wakeup_bytes),
                ("CONFIG_TRACE_ENABLED", u32::from(self.trace_events)),
                ("CONFIG_HZ", hz),
                ("CONFIG_POD_CIDR4_SIZE", self.pod_cidr.size()),
                ("CONFIG_TUNNEL_IFINDEX", self.tunnel_ifindex),
                ("CONFIG_TUNNEL_MTU", self.tunnel_mtu),
                (
                    "CONFIG_MASQUERADE",
                    u32::from(self.masquerade_ip4.is_some()),
                ),
                ("CONFIG_NAT_PORT_MIN", u32::from(self.nat_ports.min())),
                ("CONFIG_NAT_PORT_MAX", u32::from(self.nat_ports.max())),
            ],
        }
    }
}

impl Globals {
    /// Sets every global; each object must have them all (they all include
    /// bpf/lib/config.h), so a missing one is an error, not a default.
    pub(crate) fn apply<'a>(&'a self, loader: &mut aya::EbpfLoader<'a>) {
        loader.override_global("CONFIG_ROUTER_IP4", &self.router_ip4, true);
        loader.override_global("CONFIG_POD_CIDR4", &self.pod_cidr, true);
        loader.override_global("CONFIG_NAT_IP4", &self.nat_ip4, true);
        loader.override_global("CONFIG_NODEPORT_IP4", &self.nodeport_ip4, true);
        for (name, value) in &self.values {
            loader.override_global(name, value, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidr_validation_and_slots() {
        let c = PodCidr::new(Ipv4Addr::new(198, 18, 0, 0), 16).unwrap();
        assert_eq!(c.size(), 65536);
        assert_eq!(c.slot(Ipv4Addr::new(198, 18, 1, 10)).unwrap(), 266);
        assert!(c.slot(Ipv4Addr::new(198, 19, 0, 0)).is_err());
        assert!(c.slot(Ipv4Addr::new(198, 17, 255, 255)).is_err());
        assert!(
            PodCidr::new(Ipv4Addr::new(198, 18, 0, 0), 15).is_err(),
            "too large"
        );
        assert!(
            PodCidr::new(Ipv4Addr::new(198, 18, 0, 1), 24).is_err(),
            "host bits"
        );
    }

    #[test]
    fn nat_ports_parse_validate_and_overlap() {
        let p: NatPorts = "61000-65535".parse().unwrap();
        assert_eq!((p.min(), p.max()), (61000, 65535));
        assert_eq!(p, NatPorts::default());
        let p: NatPorts = "40000\t40009".parse().unwrap();
        assert_eq!(p.to_string(), "40000-40009");
        for bad in [
            "",
            "61000",
            "1-2-3",
            "x-2",
            "100-2000",
            "5000-4000",
            "61000-70000",
        ] {
            assert!(bad.parse::<NatPorts>().is_err(), "{bad:?}");
        }
        // Linux's default ephemeral range and the default NAT range.
        assert!(!NatPorts::default().overlaps(32768, 60999));
        assert!(NatPorts::default().overlaps(32768, 61000));
        assert!(NatPorts::new(30000, 32768).unwrap().overlaps(32768, 60999));
    }
}
