//! What the monitor's events name — endpoints, their pods, interfaces and
//! the policies behind verdicts and drops — answered from the control
//! plane for one batch of events (`pilus_monitor::Names`). Endpoints are
//! named as they are now, not as they were when the packet passed.

use pilus_api_types as api;
use pilus_controlplane::ControlPlane;
use pilus_monitor::{Names, PolicyDecision};
use pilus_policy::{Decision, Direction};
use std::{cell::RefCell, collections::HashMap, net::Ipv4Addr};

/// A snapshot of the endpoints, and the control plane for policies (an
/// explanation is computed once per decision in the batch).
pub struct AgentNames<'a> {
    cp: &'a ControlPlane,
    by_ip: HashMap<Ipv4Addr, u16>,
    pods: HashMap<u16, String>,
    /// Host-side veths by ifindex.
    veths: HashMap<u32, String>,
    policies: RefCell<HashMap<PolicyDecision, api::MonitorPolicy>>,
}

impl<'a> AgentNames<'a> {
    pub fn new(cp: &'a ControlPlane) -> AgentNames<'a> {
        let eps = cp.endpoints_view();
        AgentNames {
            cp,
            by_ip: eps.iter().map(|e| (e.ipv4, e.id)).collect(),
            pods: eps
                .iter()
                .map(|e| {
                    let name = e.pod_name.clone().unwrap_or_else(|| e.container_id.clone());
                    (e.id, format!("{}/{name}", e.namespace))
                })
                .collect(),
            veths: eps
                .iter()
                .map(|e| (e.host_ifindex, e.host_ifname.clone()))
                .collect(),
            policies: RefCell::new(HashMap::new()),
        }
    }
}

/// The name of an interface of the agent's namespace (the VXLAN device,
/// the uplink), as the kernel knows it now.
fn if_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes (NUL
    // included) into the buffer we own, and returns NULL on failure.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

impl Names for AgentNames<'_> {
    fn endpoint_by_ip(&self, ip: Ipv4Addr) -> Option<u16> {
        self.by_ip.get(&ip).copied()
    }

    fn pod(&self, ep: u16) -> Option<String> {
        self.pods.get(&ep).cloned()
    }

    fn ifname(&self, ifindex: u32) -> Option<String> {
        if ifindex == 0 {
            return None;
        }
        self.veths
            .get(&ifindex)
            .cloned()
            .or_else(|| if_name(ifindex))
    }

    fn policy(&self, d: &PolicyDecision) -> Option<api::MonitorPolicy> {
        if let Some(p) = self.policies.borrow().get(d) {
            return Some(p.clone());
        }
        let p = self.cp.explain_policy(&Decision {
            ep_id: d.ep_id,
            direction: if d.ingress {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            peer: d.peer,
            protocol: d.protocol,
            port: d.port,
            cookie: d.cookie,
            denied: d.denied,
        });
        self.policies.borrow_mut().insert(*d, p.clone());
        Some(p)
    }
}
