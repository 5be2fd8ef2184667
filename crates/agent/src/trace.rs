//! `pilus trace` in the agent (`POST /v1/trace`): resolves the endpoints,
//! builds the packet the sending pod would send (Ethernet to its gateway
//! MAC, IPv4, a TCP SYN, a UDP datagram or an ICMP echo request), runs it
//! through the datapath's private copy of the pod programs
//! (`pilus_datapath::trace`: the live endpoint, ipcache, policy and service
//! maps; private conntrack, counters and events) and tells its story with
//! the names the monitor uses (`pilus_monitor::trace`).
//!
//! The copy is loaded on the first trace (the verifier's ~300 ms) and kept
//! for the next ones; each run starts from empty private maps.

use crate::datapath::Pinned;
use pilus_abi::{
    consts::{CT_SCOPE_FLOW, CT_SCOPE_SERVICE, DBG_ENCAP, EVENT_DEBUG},
    Be16, Be32, CtKey4,
};
use pilus_api_types as api;
use pilus_controlplane::ControlPlane;
use pilus_monitor::{
    decode, decode_packet,
    trace::{story, TraceFacts},
    Record,
};
use pilus_packet::{tcp_flags, PacketBuilder};
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::{Arc, Mutex},
};

/// Why a trace was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("invalid trace request: {0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("running the trace")]
    Datapath(#[source] pilus_datapath::Error),
}

/// The source port of traced TCP and UDP packets (and the ICMP echo id):
/// any port does, each trace starts from an empty conntrack.
pub const TRACE_SPORT: u16 = 40_000;

/// Runs traces; holds the private copy between them.
pub struct PacketTracer {
    dp: Arc<Pinned>,
    tracer: Mutex<Option<pilus_datapath::Tracer>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// A request, checked.
struct Probe {
    src: api::Endpoint,
    dst_ip: Ipv4Addr,
    dst: Option<api::Endpoint>,
    proto: Proto,
    port: Option<u16>,
    /// Given: a packet of the flow that uses it.
    sport: Option<u16>,
}

fn find_endpoint<'a>(eps: &'a [api::Endpoint], key: &str) -> Option<&'a api::Endpoint> {
    if let Some((ns, pod)) = key.split_once('/') {
        return eps
            .iter()
            .find(|e| e.namespace == ns && e.pod_name.as_deref() == Some(pod));
    }
    if let Ok(id) = key.parse::<u16>() {
        return eps.iter().find(|e| e.id == id);
    }
    if let Ok(ip) = key.parse::<Ipv4Addr>() {
        return eps.iter().find(|e| e.ipv4 == ip);
    }
    eps.iter().find(|e| e.container_id == key)
}

fn mac(s: &str, what: &str) -> Result<[u8; 6], TraceError> {
    let bad = || TraceError::Invalid(format!("{what} has no usable MAC address ({s:?})"));
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    parts.try_into().map_err(|_| bad())
}

/// Checks a request against the endpoints there are.
fn probe(req: &api::PacketTraceRequest, eps: &[api::Endpoint]) -> Result<Probe, TraceError> {
    let proto = match req.proto.to_ascii_lowercase().as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        other => {
            return Err(TraceError::Invalid(format!(
                "protocol {other:?}: expected tcp, udp or icmp"
            )))
        }
    };
    let src = find_endpoint(eps, &req.from)
        .ok_or_else(|| {
            TraceError::NotFound(format!(
                "no local pod {:?} (give namespace/name, an endpoint id, a container id or its \
                 address)",
                req.from
            ))
        })?
        .clone();
    let (dst, dst_ip, to_port) = if let Ok(sa) = req.to.parse::<SocketAddrV4>() {
        (
            eps.iter().find(|e| e.ipv4 == *sa.ip()).cloned(),
            *sa.ip(),
            Some(sa.port()),
        )
    } else if let Ok(ip) = req.to.parse::<Ipv4Addr>() {
        (eps.iter().find(|e| e.ipv4 == ip).cloned(), ip, None)
    } else if let Some(e) = find_endpoint(eps, &req.to) {
        (Some(e.clone()), e.ipv4, None)
    } else {
        // A pod with a port: `shop/web:80`.
        let (key, port) = match req.to.rsplit_once(':') {
            Some((k, p)) => (k, p.parse::<u16>().ok()),
            None => (req.to.as_str(), None),
        };
        let e = find_endpoint(eps, key)
            .filter(|_| port.is_some())
            .ok_or_else(|| {
                TraceError::NotFound(format!(
                "no local pod {:?} (give namespace/name[:port], an endpoint id, or an IPv4 address \
                 with an optional :port)",
                req.to
            ))
            })?;
        (Some(e.clone()), e.ipv4, port)
    };
    let port = match (proto, req.port, to_port) {
        (Proto::Icmp, None, None) => None,
        (Proto::Icmp, _, _) => {
            return Err(TraceError::Invalid(
                "icmp has no port (an echo request is traced)".into(),
            ))
        }
        (_, Some(a), Some(b)) if a != b => {
            return Err(TraceError::Invalid(format!(
                "two destination ports: {a} (port) and {b} (in to)"
            )))
        }
        (_, Some(0), _) | (_, _, Some(0)) => {
            return Err(TraceError::Invalid("port 0 cannot be traced".into()))
        }
        (_, Some(p), _) | (_, None, Some(p)) => Some(p),
        (_, None, None) => {
            return Err(TraceError::Invalid(format!(
                "{} needs a destination port (port, or to as ADDRESS:PORT)",
                req.proto.to_ascii_lowercase()
            )))
        }
    };
    let sport = match (proto, req.sport) {
        (_, None) => None,
        (Proto::Icmp, Some(_)) => {
            return Err(TraceError::Invalid(
                "icmp has no source port (an echo request is traced)".into(),
            ))
        }
        (_, Some(0)) => return Err(TraceError::Invalid("source port 0 cannot be traced".into())),
        (_, Some(p)) => Some(p),
    };
    if dst.as_ref().is_some_and(|d| d.id == src.id) {
        return Err(TraceError::Invalid(
            "a pod's traffic to itself never leaves it: pick another destination".into(),
        ));
    }
    Ok(Probe {
        src,
        dst_ip,
        dst,
        proto,
        port,
        sport,
    })
}

impl Probe {
    fn ip_proto(&self) -> u8 {
        match self.proto {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
        }
    }

    /// The conntrack keys of the flow a given source port names: its own
    /// and its reply's, and its service entry (a frontend's).
    fn conntrack_keys(&self) -> Vec<CtKey4> {
        let Some(sport) = self.sport else {
            return Vec::new();
        };
        let (src, dst, dport) = (self.src.ipv4, self.dst_ip, self.port.unwrap_or(0));
        let key = |s, d, sp, dp, scope| CtKey4 {
            saddr: Be32::from(s),
            daddr: Be32::from(d),
            sport: Be16::new(sp),
            dport: Be16::new(dp),
            protocol: self.ip_proto(),
            scope,
            _pad: [0; 2],
        };
        vec![
            key(src, dst, sport, dport, CT_SCOPE_FLOW),
            key(dst, src, dport, sport, CT_SCOPE_FLOW),
            key(src, dst, sport, dport, CT_SCOPE_SERVICE),
        ]
    }
}

/// The frame the pod sends: from its MAC to its gateway's (the host-side
/// veth's, which the datapath answers ARP with). `established`: a TCP
/// packet of a known connection (an ACK), else a SYN.
fn frame(p: &Probe, established: bool) -> Result<Vec<u8>, TraceError> {
    let b = PacketBuilder::new(
        mac(&p.src.mac, "the source pod")?,
        mac(&p.src.host_mac, "the source pod's veth")?,
    )
    .ipv4(p.src.ipv4, p.dst_ip);
    let port = p.port.unwrap_or(0);
    let sport = p.sport.unwrap_or(TRACE_SPORT);
    let flags = if established {
        tcp_flags::ACK
    } else {
        tcp_flags::SYN
    };
    Ok(match p.proto {
        Proto::Tcp => b.tcp(sport, port, flags),
        Proto::Udp => b.udp(sport, port).payload(b"pilus trace"),
        Proto::Icmp => b.icmp_echo(true, TRACE_SPORT, 1),
    }
    .build())
}

fn pod_name(e: &api::Endpoint) -> String {
    format!(
        "{}/{}",
        e.namespace,
        e.pod_name.as_deref().unwrap_or(&e.container_id)
    )
}

fn peer(ip: Ipv4Addr, e: Option<&api::Endpoint>) -> api::TracePeer {
    api::TracePeer {
        ip,
        pod: e.map(pod_name),
        endpoint: e.map(|e| e.id),
    }
}

impl PacketTracer {
    pub fn new(dp: Arc<Pinned>) -> PacketTracer {
        PacketTracer {
            dp,
            tracer: Mutex::new(None),
        }
    }

    /// Traces one packet. Blocking (map reads, BPF_PROG_TEST_RUN, the
    /// first time the verifier): call it on the blocking pool.
    pub fn trace(
        &self,
        cp: &ControlPlane,
        req: &api::PacketTraceRequest,
    ) -> Result<api::PacketTrace, TraceError> {
        let eps = cp.endpoints_view();
        let p = probe(req, &eps)?;
        let seed = self
            .dp
            .conntrack_entries(&p.conntrack_keys())
            .map_err(TraceError::Datapath)?;
        let pkt = frame(&p, !seed.is_empty())?;
        // One trace at a time: they share the copy's private maps.
        let mut held = self.tracer.lock().unwrap_or_else(|e| e.into_inner());
        let mut load_ms = None;
        let tracer = match &mut *held {
            Some(t) => t,
            slot @ None => {
                // The datapath's lock only while the live maps are pinned
                // for the copy, not during its verification.
                let setup = self.dp.tracer_setup().map_err(TraceError::Datapath)?;
                let t = setup.load().map_err(TraceError::Datapath)?;
                load_ms = Some(t.load_time().as_millis() as u64);
                tracing::info!(
                    load_ms,
                    "loaded the private copy of the pod programs for traces"
                );
                slot.insert(t)
            }
        };
        let run = tracer
            .from_container(p.src.host_ifindex, &pkt, &seed)
            .map_err(TraceError::Datapath)?;
        drop(held);

        let names = crate::names::AgentNames::new(cp);
        let events: Vec<api::MonitorEvent> = run
            .events
            .iter()
            .enumerate()
            .map(|(i, ev)| decode(&Record::Event(*ev), i as u64 + 1, 0, &names))
            .collect();
        let tunnel = run
            .events
            .iter()
            .find(|e| e.kind == EVENT_DEBUG && e.subtype == DBG_ENCAP)
            // The datapath passes the address in network order.
            .map(|e| Ipv4Addr::from(u32::from_be(e.arg1)))
            .map(|ip| {
                let node = cp
                    .nodes_view()
                    .into_iter()
                    .find(|n| n.underlay_ip == ip)
                    .map(|n| n.name);
                (ip, node)
            });
        let sent = decode_packet(&pkt);
        let out = decode_packet(&run.packet);
        let nat = match (sent.dst_ip, sent.dst_port, out.dst_ip, out.dst_port) {
            (Some(a), Some(ap), Some(b), Some(bp)) if (a, ap) != (b, bp) => {
                let front = SocketAddrV4::new(a, ap);
                let service = cp.services_view().into_iter().find(|s| {
                    s.service
                        .frontends
                        .iter()
                        .any(|f| f.address.parse::<Ipv4Addr>().ok() == Some(a) && f.port == ap)
                });
                Some((
                    front,
                    SocketAddrV4::new(b, bp),
                    service.map(|s| format!("{}/{}", s.service.namespace, s.service.name)),
                ))
            }
            _ => None,
        };
        // Handed to the stack, a packet for another node's pod CIDR is
        // routed there (direct routing).
        let routed_to = out.dst_ip.or(sent.dst_ip).and_then(|dst| {
            cp.nodes_view().into_iter().find_map(|n| {
                let cidr: ipnet::Ipv4Net = n.pod_cidr.parse().ok()?;
                (!n.local && cidr.contains(&dst)).then_some((n.name, n.pod_cidr))
            })
        });
        let (steps, verdict) = story(&TraceFacts {
            src_pod: pod_name(&p.src),
            sent: &sent,
            tc_verdict: run.verdict,
            events: &events,
            tunnel,
            nat,
            routed_to,
            conntrack_copied: seed.len(),
        });
        Ok(api::PacketTrace {
            node: cp.status().node_name,
            from: peer(p.src.ipv4, Some(&p.src)),
            to: peer(p.dst_ip, p.dst.as_ref()),
            proto: req.proto.to_ascii_lowercase(),
            sport: (p.proto != Proto::Icmp).then_some(p.sport.unwrap_or(TRACE_SPORT)),
            dport: p.port,
            steps,
            verdict,
            conntrack_copied: seed.len(),
            load_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: u16, ns: &str, pod: &str, ip: [u8; 4]) -> api::Endpoint {
        serde_json::from_value(serde_json::json!({
            "id": id, "container_id": format!("c{id}"), "netns": "/run/netns/x",
            "ifname": "eth0", "host_ifname": format!("lxc{id}"), "namespace": ns,
            "pod_name": pod, "labels": [], "identity": 256, "ipv4": Ipv4Addr::from(ip),
            "gateway": "198.18.0.1", "prefix_len": 32, "mac": "02:00:00:00:00:0a",
            "host_mac": "06:00:00:00:00:0a", "host_ifindex": 7,
            "policy": {"ingress_enforced": false, "egress_enforced": false, "entries": 0}
        }))
        .expect("an endpoint")
    }

    fn req(from: &str, to: &str, proto: &str, port: Option<u16>) -> api::PacketTraceRequest {
        api::PacketTraceRequest {
            from: from.into(),
            to: to.into(),
            proto: proto.into(),
            port,
            sport: None,
        }
    }

    #[test]
    fn requests_are_checked_before_anything_runs() {
        let eps = [
            ep(1, "shop", "client", [198, 18, 0, 5]),
            ep(2, "shop", "web", [198, 18, 0, 6]),
        ];
        let p = probe(&req("shop/client", "shop/web", "TCP", Some(80)), &eps).unwrap();
        assert_eq!(
            (p.dst_ip, p.port, p.proto),
            (Ipv4Addr::new(198, 18, 0, 6), Some(80), Proto::Tcp)
        );
        let p = probe(&req("1", "198.19.0.10:53", "udp", None), &eps).unwrap();
        assert_eq!(
            (p.dst_ip, p.port, p.dst.is_none()),
            (Ipv4Addr::new(198, 19, 0, 10), Some(53), true)
        );
        let p = probe(&req("c1", "shop/web:81", "udp", None), &eps).unwrap();
        assert_eq!((p.dst.map(|d| d.id), p.port), (Some(2), Some(81)));
        let p = probe(&req("c1", "198.18.0.6", "icmp", None), &eps).unwrap();
        assert_eq!(p.dst.map(|d| d.id), Some(2));
        let udp = probe(&req("shop/client", "shop/web", "udp", Some(81)), &eps).unwrap();
        assert!(frame(&udp, false).is_ok());
        // A source port names the flow: its key, its reply's, its service's.
        let p = probe(
            &api::PacketTraceRequest {
                sport: Some(41_000),
                ..req("shop/client", "shop/web", "tcp", Some(80))
            },
            &eps,
        )
        .unwrap();
        let keys = p.conntrack_keys();
        assert_eq!(keys.len(), 3);
        assert_eq!((keys[0].sport.get(), keys[0].dport.get()), (41_000, 80));
        assert_eq!((keys[1].sport.get(), keys[1].dport.get()), (80, 41_000));
        assert_eq!(Ipv4Addr::from(keys[1].saddr), Ipv4Addr::new(198, 18, 0, 6));
        assert_eq!(keys[2].scope, CT_SCOPE_SERVICE);
        for (r, want) in [
            (
                req("shop/nobody", "shop/web", "tcp", Some(80)),
                "no local pod",
            ),
            (
                req("shop/client", "shop/nobody", "tcp", Some(80)),
                "no local pod",
            ),
            (
                req("shop/client", "shop/web", "sctp", Some(80)),
                "expected tcp, udp or icmp",
            ),
            (
                req("shop/client", "shop/web", "tcp", None),
                "needs a destination port",
            ),
            (
                req("shop/client", "shop/web", "icmp", Some(1)),
                "icmp has no port",
            ),
            (
                req("shop/client", "198.18.0.6:80", "tcp", Some(81)),
                "two destination ports",
            ),
            (req("shop/client", "shop/web", "tcp", Some(0)), "port 0"),
            (req("shop/client", "shop/client", "tcp", Some(80)), "itself"),
            (
                api::PacketTraceRequest {
                    sport: Some(5),
                    ..req("shop/client", "shop/web", "icmp", None)
                },
                "no source port",
            ),
        ] {
            let e = probe(&r, &eps)
                .err()
                .unwrap_or_else(|| panic!("{r:?} accepted"));
            assert!(e.to_string().contains(want), "{r:?}: {e}");
        }
    }
}
