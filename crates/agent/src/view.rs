//! What the metrics and `pilus doctor` read from the datapath, as one
//! narrow trait: [`pilus_datapath::Inspector`] (its own descriptors of the
//! pinned maps, no lock shared with the control plane's writes) in pilusd,
//! fakes in tests.

use pilus_datapath::{
    inspect::{Counters, Usage},
    Error, HookStatus, Inspector, NodeDevice, SockHookStatus,
};
use std::path::Path;

pub trait DatapathView: Send + Sync + 'static {
    /// How full each hash, LRU and LPM map is; conntrack by protocol.
    fn usage(&self) -> Result<Usage, Error>;
    /// The verdict counters and the events the ring buffer lost.
    fn counters(&self) -> Result<Counters, Error>;
    /// The hooks of an endpoint's host veth; `None`: no such link.
    fn endpoint_hooks(&self, ifname: &str) -> Result<Option<Vec<HookStatus>>, Error>;
    /// The hooks of a node device; `None`: no such link.
    fn device_hooks(
        &self,
        ifname: &str,
        role: NodeDevice,
    ) -> Result<Option<Vec<HookStatus>>, Error>;
    /// Whether the socket-LB programs run on `cgroup`.
    fn socket_lb_hooks(&self, cgroup: &Path) -> Result<Vec<SockHookStatus>, Error>;
}

impl DatapathView for Inspector {
    fn usage(&self) -> Result<Usage, Error> {
        Inspector::usage(self)
    }
    fn counters(&self) -> Result<Counters, Error> {
        Inspector::counters(self)
    }
    fn endpoint_hooks(&self, ifname: &str) -> Result<Option<Vec<HookStatus>>, Error> {
        Inspector::endpoint_hooks(self, ifname)
    }
    fn device_hooks(
        &self,
        ifname: &str,
        role: NodeDevice,
    ) -> Result<Option<Vec<HookStatus>>, Error> {
        Inspector::device_hooks(self, ifname, role)
    }
    fn socket_lb_hooks(&self, cgroup: &Path) -> Result<Vec<SockHookStatus>, Error> {
        Inspector::socket_lb_hooks(self, cgroup)
    }
}
