//! Per-node constants, written into the object's `const volatile` globals
//! before verification (bpf/lib/config.h holds the C side and the meaning).

use pilus_abi::Be32;
use std::net::Ipv4Addr;

/// What one node's datapath is configured with at load time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// The pods' gateway: ARP requests for it are answered in the datapath.
    pub router_ip4: Ipv4Addr,
    pub ct_lifetime_tcp: u32,
    pub ct_lifetime_nontcp: u32,
    pub ct_syn_timeout: u32,
    pub ct_close_timeout: u32,
    /// Unread event bytes that make the datapath wake the reader.
    pub events_wakeup_bytes: u32,
    /// Emit a trace event for every forwarded packet.
    pub trace: bool,
    /// The kernel's CONFIG_HZ; 0 = measure it at load.
    pub hz: u32,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            router_ip4: Ipv4Addr::UNSPECIFIED,
            ct_lifetime_tcp: 21600,
            ct_lifetime_nontcp: 60,
            ct_syn_timeout: 60,
            ct_close_timeout: 10,
            events_wakeup_bytes: 64 * 1024,
            trace: false,
            hz: 0,
        }
    }
}

/// The values, owned, so the loader can borrow them while it loads.
pub(crate) struct Globals {
    router_ip4: Be32,
    values: [u32; 7],
}

impl NodeConfig {
    /// The globals to load with; `hz` is the measured or configured tick rate.
    pub(crate) fn globals(&self, hz: u32) -> Globals {
        Globals {
            router_ip4: Be32::from(self.router_ip4),
            values: [
                self.ct_lifetime_tcp,
                self.ct_lifetime_nontcp,
                self.ct_syn_timeout,
                self.ct_close_timeout,
                self.events_wakeup_bytes,
                u32::from(self.trace),
                hz,
            ],
        }
    }
}

impl Globals {
    pub(crate) fn apply<'a>(&'a self, loader: &mut aya::EbpfLoader<'a>) {
        const NAMES: [&str; 7] = [
            "CONFIG_CT_LIFETIME_TCP",
            "CONFIG_CT_LIFETIME_NONTCP",
            "CONFIG_CT_SYN_TIMEOUT",
            "CONFIG_CT_CLOSE_TIMEOUT",
            "CONFIG_EVENTS_WAKEUP_BYTES",
            "CONFIG_TRACE_ENABLED",
            "CONFIG_HZ",
        ];
        loader.override_global("CONFIG_ROUTER_IP4", &self.router_ip4, true);
        for (name, value) in NAMES.iter().zip(self.values.iter()) {
            loader.override_global(name, value, true);
        }
    }
}
