//! Read-only answers: endpoints, identities, policies, traces, the ipcache
//! with its sources, and the datapath's maps decoded. Each takes one
//! manager's read lock (or none: map dumps read the datapath directly).

use crate::{control::ControlPlane, endpoints::StoredEndpoint, policy::PolicyManager, Error};
use pilus_abi::consts::{DIR_INGRESS, POLICY_F_DENY, POLICY_PREFIX_PROTO};
use pilus_api_types as api;
use pilus_policy::{
    identity::{Identity, Kind},
    lookup::Verdict,
    rule::Direction,
    trace::{DirectionTrace, Party, Trace},
    Labels, Protocol,
};
use std::net::Ipv4Addr;

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Reserved => "reserved",
        Kind::Cluster => "cluster",
        Kind::Cidr => "cidr",
    }
}

fn identity_view(i: &Identity) -> api::Identity {
    api::Identity {
        id: i.id,
        kind: kind_name(i.kind).into(),
        labels: i.labels.to_strings(),
        refs: i.refs,
    }
}

/// The engine's trace in the API's wire form (pilus-api-types does not
/// link the policy engine, so the two are kept apart and converted here).
fn trace_view(t: Trace) -> api::Trace {
    fn verdict(v: Verdict) -> api::Verdict {
        match v {
            Verdict::Unenforced => api::Verdict::Unenforced,
            Verdict::Allowed { cookie } => api::Verdict::Allowed { cookie },
            Verdict::DeniedByDefault => api::Verdict::DeniedByDefault,
            Verdict::Denied { cookie } => api::Verdict::Denied { cookie },
        }
    }
    fn direction(d: DirectionTrace) -> api::DirectionTrace {
        api::DirectionTrace {
            direction: match d.direction {
                Direction::Ingress => api::Direction::Ingress,
                Direction::Egress => api::Direction::Egress,
            },
            endpoint: d.endpoint,
            selected_by: d.selected_by,
            matches: d
                .matches
                .into_iter()
                .map(|m| api::RuleMatch {
                    policy: m.policy,
                    rule: m.rule,
                    deny: m.deny,
                })
                .collect(),
            verdict: verdict(d.verdict),
            datapath: verdict(d.datapath),
        }
    }
    api::Trace {
        src: t.src,
        dst: t.dst,
        protocol: t.protocol,
        port: t.port,
        egress: t.egress.map(direction),
        ingress: t.ingress.map(direction),
        allowed: t.allowed,
    }
}

pub fn parse_protocol(s: &str) -> Result<u8, Error> {
    let p = match s.to_ascii_uppercase().as_str() {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        "SCTP" => Protocol::Sctp,
        "ICMP" => Protocol::Icmp,
        _ => {
            return Err(Error::invalid(
                "protocol",
                format!("{s:?} is not one of TCP, UDP, SCTP, ICMP"),
            ))
        }
    };
    Ok(p.number().expect("concrete protocol"))
}

fn not_found(what: &'static str, name: &str) -> Error {
    Error::NotFound {
        what,
        name: name.to_string(),
    }
}

impl ControlPlane {
    pub(crate) fn view(&self, ep: &StoredEndpoint, pol: &PolicyManager) -> api::Endpoint {
        let p = pol.engine().endpoint_policy(ep.id);
        api::Endpoint {
            id: ep.id,
            container_id: ep.container_id.clone(),
            netns: ep.netns.clone(),
            ifname: ep.ifname.clone(),
            host_ifname: ep.host_ifname.clone(),
            namespace: ep.namespace.clone(),
            pod_name: ep.pod_name.clone(),
            labels: ep.labels.to_strings(),
            identity: pol.engine().endpoint(ep.id).map_or(0, |r| r.identity),
            ipv4: ep.ipv4,
            gateway: self.settings.router,
            prefix_len: 32,
            mac: pilus_netlink::pod::mac_string(&ep.mac),
            host_mac: pilus_netlink::pod::mac_string(&ep.host_mac),
            host_ifindex: ep.ifindex,
            cni_network: ep.cni_network.clone(),
            created_unix_ms: ep.created_unix_ms,
            mtu: self.settings.pod_mtu,
            label_sources: ep
                .labels
                .iter()
                .map(|l| api::EndpointLabel {
                    label: l.to_string(),
                    source: ep.source_of(&l).name().into(),
                })
                .collect(),
            policy: api::EndpointPolicyStatus {
                ingress_enforced: p.as_ref().is_some_and(|p| p.ingress_enforced),
                egress_enforced: p.as_ref().is_some_and(|p| p.egress_enforced),
                entries: p.as_ref().map_or(0, |p| p.entries.len()),
            },
        }
    }

    pub fn endpoints_view(&self) -> Vec<api::Endpoint> {
        let eps = self.eps();
        let pol = self.pol();
        eps.iter().map(|e| self.view(e, &pol)).collect()
    }

    /// The endpoint `key` names (id, address, container id,
    /// `namespace/pod`), or with `ifname` the attachment of container `key`.
    pub fn endpoint_view(&self, key: &str, ifname: Option<&str>) -> Result<api::Endpoint, Error> {
        let eps = self.eps();
        let ep = match ifname {
            Some(i) => eps.attachment(key, i),
            None => eps.find(key),
        };
        let ep = ep.ok_or_else(|| not_found("endpoint", key))?;
        Ok(self.view(ep, &self.pol()))
    }

    /// The policy behind a datapath decision (a verdict or a policy drop
    /// event): the rule whose entry's cookie it carries, or for a default
    /// deny the policies that select the endpoint.
    pub fn explain_policy(&self, d: &pilus_policy::Decision) -> api::MonitorPolicy {
        let pol = self.pol();
        let x = pol.engine().explain(d);
        let (name, rule, peers, selected_by) = match &x {
            pilus_policy::Explanation::Rule {
                policy,
                rule,
                peer_rule,
                peers,
                ..
            } => (
                Some(policy.to_string()),
                Some(peer_rule.clone().unwrap_or_else(|| rule.clone())),
                peers.clone(),
                Vec::new(),
            ),
            pilus_policy::Explanation::DefaultDeny { selected_by } => (
                selected_by.first().map(|p| p.to_string()),
                None,
                None,
                selected_by.iter().map(|p| p.to_string()).collect(),
            ),
            _ => (None, None, None, Vec::new()),
        };
        api::MonitorPolicy {
            cookie: d.cookie,
            endpoint: d.ep_id,
            direction: d.direction.to_string(),
            name,
            rule,
            peers,
            selected_by,
            explanation: x.to_string(),
        }
    }

    /// The id of the local endpoint with address `ip` (the monitor names
    /// the endpoints of events with it).
    pub fn endpoint_id_by_ip(&self, ip: Ipv4Addr) -> Option<u16> {
        self.eps().by_ip(ip).map(|e| e.id)
    }

    pub fn identities_view(&self) -> Vec<api::Identity> {
        self.pol()
            .engine()
            .identities()
            .iter()
            .map(identity_view)
            .collect()
    }

    pub fn identity_view(&self, id: u32) -> Result<api::Identity, Error> {
        self.pol()
            .engine()
            .identities()
            .get(id)
            .map(identity_view)
            .ok_or_else(|| not_found("identity", &id.to_string()))
    }

    pub fn namespaces_view(&self) -> Vec<api::NamespaceLabels> {
        self.pol()
            .engine()
            .namespaces()
            .map(|(ns, l)| api::NamespaceLabels {
                namespace: ns.clone(),
                labels: l.iter().map(|x| format!("{}={}", x.key, x.value)).collect(),
                revision: 0,
            })
            .collect()
    }

    pub fn policies_view(&self, name: Option<&str>) -> Result<Vec<api::PolicySummary>, Error> {
        let eps = self.eps();
        let pol = self.pol();
        let engine = pol.engine();
        let ids = name.map(|n| engine.find_policies(n));
        if let (Some(ids), Some(n)) = (&ids, name) {
            if ids.is_empty() {
                return Err(not_found("policy", n));
            }
        }
        Ok(engine
            .policies()
            .filter(|(p, _)| ids.as_ref().is_none_or(|ids| ids.contains(&p.id)))
            .map(|(p, _)| api::PolicySummary {
                kind: p.id.kind.to_string(),
                namespace: p.id.namespace.clone(),
                name: p.id.name.clone(),
                rules: p.rules.len(),
                endpoints: eps
                    .iter()
                    .filter(|ep| {
                        let labels = engine
                            .endpoint(ep.id)
                            .and_then(|r| engine.identities().get(r.identity))
                            .map(|i| &i.labels);
                        labels.is_some_and(|l| p.rules.iter().any(|r| r.subject.matches(l)))
                    })
                    .count(),
                source: p.source.clone(),
            })
            .collect())
    }

    /// A trace party from what a user typed: endpoint id, pod address,
    /// `namespace/pod`, container id, another address (world or a CIDR
    /// identity), or labels.
    fn party(&self, s: &str, pol: &PolicyManager) -> Result<Party, Error> {
        let engine = pol.engine();
        if let Some(ep) = self.eps().find(s) {
            let id = engine.endpoint(ep.id).map_or(0, |r| r.identity);
            let identity = engine
                .identities()
                .get(id)
                .cloned()
                .ok_or_else(|| not_found("identity", &id.to_string()))?;
            return Ok(Party {
                identity,
                ep_id: Some(ep.id),
                name: format!("endpoint {} ({} {})", ep.id, ep.namespace, ep.ipv4),
            });
        }
        if let Ok(ip) = s.parse::<Ipv4Addr>() {
            // What the ipcache says of it: a (remote) endpoint's identity,
            // else the longest CIDR identity containing it, else the world.
            let by_address = engine
                .addresses()
                .identity_of(ip)
                .and_then(|id| engine.identities().get(id));
            let best = engine
                .identities()
                .iter()
                .filter(|i| i.cidr.is_some_and(|c| c.contains(&ip)))
                .max_by_key(|i| i.cidr.map(|c| c.prefix_len()));
            let identity = match by_address.or(best) {
                Some(i) => i.clone(),
                None => engine
                    .identities()
                    .get(pilus_abi::consts::IDENTITY_WORLD)
                    .cloned()
                    .expect("reserved"),
            };
            return Ok(Party {
                name: format!("{ip} (identity {})", identity.id),
                identity,
                ep_id: None,
            });
        }
        if !s.contains('=') && !s.contains(':') {
            return Err(not_found("endpoint", s));
        }
        let items: Vec<&str> = s.split([',', ' ']).filter(|x| !x.is_empty()).collect();
        let labels = Labels::parse_all(&items, pilus_policy::labels::SOURCE_K8S)?;
        let id = engine.identities().lookup(&labels);
        let identity = match id.and_then(|i| engine.identities().get(i)) {
            Some(i) => i.clone(),
            None => Identity {
                id: 0,
                kind: Kind::Cluster,
                labels: labels.clone(),
                refs: 0,
                cidr: None,
            },
        };
        // Labels stand for a pod that would have them: trace both sides.
        Ok(Party {
            name: format!("labels {labels}"),
            identity,
            ep_id: Some(0),
        })
    }

    pub fn trace(&self, req: &api::TraceRequest) -> Result<api::Trace, Error> {
        let proto = parse_protocol(&req.protocol)?;
        let pol = self.pol();
        let src = self.party(&req.src, &pol)?;
        let dst = self.party(&req.dst, &pol)?;
        Ok(trace_view(pol.engine().trace(&src, &dst, proto, req.port)))
    }

    /// The ipcache as the control plane holds it: every prefix with every
    /// source's entry, the winner (what the datapath holds) first.
    pub fn ipcache_view(&self) -> Vec<api::IpcacheEntry> {
        self.ipc()
            .entries()
            .map(|(prefix, sources)| api::IpcacheEntry {
                prefix: prefix.to_string(),
                identity: sources[0].1.identity,
                sources: sources
                    .iter()
                    .map(|(s, e)| api::IpcacheSource {
                        source: serde_json::to_value(s)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        identity: e.identity,
                        tunnel_endpoint: e.tunnel_endpoint,
                    })
                    .collect(),
            })
            .collect()
    }

    // ----- the datapath's maps, decoded (no control-plane lock) -----

    pub fn bpf_policy(&self, endpoint: Option<&str>) -> Result<Vec<api::BpfPolicyEntry>, Error> {
        let ep = match endpoint {
            Some(key) => Some(
                self.eps()
                    .find(key)
                    .map(|e| e.id)
                    .ok_or_else(|| not_found("endpoint", key))?,
            ),
            None => None,
        };
        let mut v: Vec<api::BpfPolicyEntry> = self
            .dp
            .policy_entries()?
            .into_iter()
            .filter(|(k, _)| ep.is_none_or(|e| k.ep_id == e))
            .map(|(k, v)| {
                let bits = k.prefix_len.saturating_sub(POLICY_PREFIX_PROTO);
                let port = k.dport.get();
                let span = if bits == 0 {
                    65535
                } else {
                    (1u32 << (16 - bits)) - 1
                } as u16;
                api::BpfPolicyEntry {
                    endpoint: k.ep_id,
                    direction: if k.direction == DIR_INGRESS {
                        "ingress"
                    } else {
                        "egress"
                    }
                    .into(),
                    identity: k.sec_identity,
                    protocol: k.protocol,
                    port,
                    port_end: port.saturating_add(span),
                    deny: v.flags & POLICY_F_DENY != 0,
                    cookie: v.cookie,
                    prefix_len: k.prefix_len,
                }
            })
            .collect();
        v.sort_by_key(|e| {
            (
                e.endpoint,
                e.direction.clone(),
                e.identity,
                e.protocol,
                e.port,
                e.prefix_len,
            )
        });
        Ok(v)
    }

    pub fn bpf_endpoints(&self) -> Result<Vec<api::BpfEndpointEntry>, Error> {
        let mut v: Vec<api::BpfEndpointEntry> = self
            .dp
            .endpoints()?
            .into_iter()
            .map(|e| api::BpfEndpointEntry {
                ifindex: e.ifindex,
                endpoint: e.ep_id,
                ipv4: e.ip4.into(),
                identity: e.sec_identity,
                mac: pilus_netlink::pod::mac_string(&e.mac),
            })
            .collect();
        v.sort_by_key(|e| e.endpoint);
        Ok(v)
    }

    pub fn bpf_ipcache(&self) -> Result<Vec<api::BpfIpcacheEntry>, Error> {
        let mut v: Vec<(ipnet::Ipv4Net, u32)> = self
            .dp
            .ipcache()?
            .into_iter()
            .map(|(p, val)| (p, val.sec_identity))
            .collect();
        v.sort();
        Ok(v.into_iter()
            .map(|(p, id)| api::BpfIpcacheEntry {
                prefix: p.to_string(),
                identity: id,
            })
            .collect())
    }

    pub fn bpf_ct(&self) -> Result<Vec<api::BpfCtEntry>, Error> {
        let now = i64::from(self.dp.ct_now()?);
        Ok(self
            .dp
            .conntrack()?
            .into_iter()
            .map(|(k, e)| {
                let (saddr, daddr): (Ipv4Addr, Ipv4Addr) = (k.saddr.into(), k.daddr.into());
                api::BpfCtEntry {
                    protocol: k.protocol,
                    src: format!("{saddr}:{}", k.sport.get()),
                    dst: format!("{daddr}:{}", k.dport.get()),
                    state: ct_state(e.flags),
                    expires_in: i64::from(e.expires) - now,
                    flags: e.flags,
                    nat: if k.scope == pilus_abi::consts::CT_SCOPE_SERVICE {
                        Some(format!(
                            "to {}:{} (backend {})",
                            Ipv4Addr::from(e.backend_addr),
                            e.backend_port.get(),
                            e.backend_id
                        ))
                    } else {
                        (e.rev_nat_index != 0)
                            .then(|| format!("reply from frontend {}", e.rev_nat_index))
                    },
                }
            })
            .collect())
    }

    pub fn bpf_ct_flush(&self) -> Result<usize, Error> {
        Ok(self.dp.flush_conntrack()?)
    }
}

fn ct_state(flags: u16) -> String {
    use pilus_abi::consts::*;
    let mut v = Vec::new();
    for (bit, name) in [
        (CT_F_SEEN_REPLY, "seen-reply"),
        (CT_F_TX_CLOSING, "tx-closing"),
        (CT_F_RX_CLOSING, "rx-closing"),
    ] {
        if flags & bit != 0 {
            v.push(name);
        }
    }
    if v.is_empty() {
        "new".into()
    } else {
        v.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pilus_policy::trace::RuleMatch;

    /// The API's trace types are a hand-written copy of the engine's (so the
    /// CNI plugin need not link the engine): the two must serialize alike,
    /// or `pilus policy trace` against an older agent would misread it.
    #[test]
    fn the_wire_trace_serializes_like_the_engines() {
        let dir = |direction, verdict, datapath| DirectionTrace {
            direction,
            endpoint: "shop/web".into(),
            selected_by: vec!["CiliumNetworkPolicy shop/web".into()],
            matches: vec![RuleMatch {
                policy: "CiliumNetworkPolicy shop/web".into(),
                rule: "spec.ingress[0]".into(),
                deny: true,
            }],
            verdict,
            datapath,
        };
        for (egress, ingress) in [
            (
                Some(dir(
                    Direction::Egress,
                    Verdict::Unenforced,
                    Verdict::Allowed { cookie: 7 },
                )),
                Some(dir(
                    Direction::Ingress,
                    Verdict::DeniedByDefault,
                    Verdict::Denied { cookie: 9 },
                )),
            ),
            (None, None),
        ] {
            let t = Trace {
                src: "198.18.0.2".into(),
                dst: "shop/web".into(),
                protocol: 6,
                port: 80,
                egress,
                ingress,
                allowed: false,
            };
            let engine = serde_json::to_value(&t).unwrap();
            let wire = serde_json::to_value(trace_view(t)).unwrap();
            assert_eq!(wire, engine);
            let back: api::Trace = serde_json::from_value(engine).unwrap();
            assert_eq!(serde_json::to_value(back).unwrap(), wire);
        }
    }
}
