//! `pilus monitor -j`: one JSON object per event with the field names and
//! types of `cilium monitor -j` (Cilium's TraceNotifyVerbose,
//! DropNotifyVerbose, DebugMsg and DebugCapture JSON, with the packet
//! dissected into `summary` the way its gopacket layers print), so tools and
//! habits built on Cilium's output carry over. Fields Cilium does not have
//! are added, never renamed: `policy` on policy drops and verdicts,
//! `observationPoint` on drops. Cilium prints no JSON for policy verdicts;
//! theirs here mirrors its verdict log line.

use crate::{
    format_line, hop_summary, icmp_name,
    packet::{be16, ip},
    unhex,
    wire::{ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
};
use pilus_api_types::{MonitorEvent, MonitorKind};
use serde::Serialize;

/// A pair of endpoints of one layer (`l2`, `l3`, `l4` of the summary).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub src: String,
    pub dst: String,
}

/// Cilium's DissectSummary: each decoded layer as gopacket prints it, and
/// the addresses of layers 2 to 4.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DissectSummary {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ethernet: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ipv4: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tcp: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub udp: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub icmpv4: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l2: Option<Flow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l3: Option<Flow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l4: Option<Flow>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Trace<'a> {
    cpu: String,
    #[serde(rename = "type")]
    kind: &'static str,
    mark: String,
    ifindex: String,
    state: &'a str,
    observation_point: &'a str,
    trace_summary: String,
    source: u16,
    bytes: u32,
    src_label: u32,
    dst_label: u32,
    #[serde(rename = "dstID")]
    dst_id: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<DissectSummary>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Drop<'a> {
    cpu: String,
    #[serde(rename = "type")]
    kind: &'static str,
    mark: String,
    reason: &'a str,
    source: u16,
    bytes: u32,
    src_label: u32,
    dst_label: u32,
    #[serde(rename = "dstID")]
    dst_id: u32,
    /// Cilium's source location of the drop: Pilus does not carry it (0,
    /// as Cilium prints when unknown).
    #[serde(rename = "Line")]
    line: u16,
    #[serde(rename = "File")]
    file: u8,
    #[serde(rename = "ExtError")]
    ext_error: i8,
    #[serde(rename = "Ifindex")]
    ifindex: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<DissectSummary>,
    observation_point: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Verdict<'a> {
    cpu: String,
    #[serde(rename = "type")]
    kind: &'static str,
    mark: String,
    source: u16,
    bytes: u32,
    remote_label: u32,
    proto: u8,
    dst_port: u16,
    direction: &'a str,
    action: &'a str,
    #[serde(rename = "match")]
    match_level: &'a str,
    ifindex: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<DissectSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
}

#[derive(Serialize)]
struct Debug<'a> {
    cpu: String,
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct Capture<'a> {
    cpu: String,
    #[serde(rename = "type")]
    kind: &'static str,
    mark: String,
    message: &'a str,
    prefix: String,
    source: u16,
    bytes: u32,
    summary: String,
}

#[derive(Serialize)]
struct Lost {
    cpu: String,
    #[serde(rename = "type")]
    kind: &'static str,
    lost: u64,
}

/// Cilium's CPU prefix: `CPU 07:`.
fn cpu(e: &MonitorEvent) -> String {
    format!("CPU {:02}:", e.cpu)
}

fn mark(e: &MonitorEvent) -> String {
    format!("{:#x}", e.hash)
}

/// Cilium prints an interface by name, `"0"` when there is none.
fn ifname(e: &MonitorEvent) -> String {
    e.ifname.clone().unwrap_or_else(|| e.ifindex.to_string())
}

fn trace_summary(e: &MonitorEvent) -> String {
    match e.observation_point.as_str() {
        "to-endpoint" => format!("-> endpoint {}", e.dst_endpoint.unwrap_or(0)),
        "from-endpoint" => format!("<- endpoint {}", e.src_endpoint.unwrap_or(e.endpoint)),
        other => hop_summary(other).unwrap_or("unknown trace").to_string(),
    }
}

/// The event as one `cilium monitor -j` line (an unknown kind as its
/// readable line, quoted in a `message`).
pub fn json_line(e: &MonitorEvent) -> String {
    let data = unhex(&e.data);
    let summary = (!data.is_empty()).then(|| dissect(&data));
    let policy = e.policy.as_ref().map(|p| p.explanation.as_str());
    let r = match e.kind {
        MonitorKind::Trace => serde_json::to_string(&Trace {
            cpu: cpu(e),
            kind: "trace",
            mark: mark(e),
            ifindex: ifname(e),
            state: &e.state,
            observation_point: &e.observation_point,
            trace_summary: trace_summary(e),
            source: e.endpoint,
            bytes: e.orig_len,
            src_label: e.src_identity,
            dst_label: e.dst_identity,
            dst_id: e.dst_endpoint.unwrap_or(0),
            summary,
        }),
        MonitorKind::Drop => serde_json::to_string(&Drop {
            cpu: cpu(e),
            kind: "drop",
            mark: mark(e),
            reason: e.reason.as_ref().map_or("", |r| r.description.as_str()),
            source: e.endpoint,
            bytes: e.orig_len,
            src_label: e.src_identity,
            dst_label: e.dst_identity,
            dst_id: u32::from(e.dst_endpoint.unwrap_or(0)),
            line: 0,
            file: 0,
            ext_error: 0,
            ifindex: e.ifindex,
            summary,
            observation_point: &e.observation_point,
            policy,
        }),
        MonitorKind::PolicyVerdict => {
            let ingress = e.direction == "ingress";
            let v = e.verdict.as_ref();
            serde_json::to_string(&Verdict {
                cpu: cpu(e),
                kind: "policy-verdict",
                mark: mark(e),
                source: if ingress {
                    e.dst_endpoint
                } else {
                    e.src_endpoint
                }
                .unwrap_or(e.endpoint),
                bytes: e.orig_len,
                remote_label: if ingress {
                    e.src_identity
                } else {
                    e.dst_identity
                },
                proto: v.map_or(0, |v| v.protocol),
                dst_port: v.map_or(0, |v| v.port),
                direction: &e.direction,
                action: v.map_or("", |v| v.action.as_str()),
                match_level: v.map_or("", |v| v.match_level.as_str()),
                ifindex: ifname(e),
                summary,
                policy,
            })
        }
        MonitorKind::Debug => serde_json::to_string(&Debug {
            cpu: cpu(e),
            kind: "debug",
            message: e.message.as_deref().unwrap_or(""),
        }),
        MonitorKind::Capture => serde_json::to_string(&Capture {
            cpu: cpu(e),
            kind: "capture",
            mark: mark(e),
            message: e.message.as_deref().unwrap_or(""),
            prefix: format!("-> {}", e.delivered_to.unwrap_or(0)),
            source: e.endpoint,
            bytes: e.orig_len,
            summary: connection_summary(&data),
        }),
        MonitorKind::Lost => serde_json::to_string(&Lost {
            cpu: cpu(e),
            kind: "lost",
            lost: e.lost.unwrap_or(0),
        }),
        MonitorKind::Unknown => serde_json::to_string(&Debug {
            cpu: cpu(e),
            kind: "unknown",
            message: &format_line(e),
        }),
    };
    r.expect("plain structs serialize")
}

/// `[..n..]` as gopacket prints a byte slice it does not show, `[]` when
/// it is empty.
fn elided(n: usize) -> String {
    if n == 0 {
        "[]".into()
    } else {
        format!("[..{n}..]")
    }
}

fn mac(d: &[u8]) -> String {
    d.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Cilium's GetConnectionSummary: `sIP:sPort -> dIP:dPort tcp SYN, ACK`,
/// `sIP -> dIP EchoRequest`, `sIP -> dIP`, `sMAC -> dMAC type`.
pub fn connection_summary(d: &[u8]) -> String {
    let s = dissect(d);
    let (Some(l3), Some(p)) = (&s.l3, decoded(d)) else {
        return match &s.l2 {
            Some(l2) => format!("{} -> {} {}", l2.src, l2.dst, ethertype_name(be16(d, 12))),
            None => "[unknown]".into(),
        };
    };
    match (p.protocol, &s.l4) {
        (Some(IPPROTO_ICMP), _) => match (p.icmp_type, p.icmp_code) {
            (Some(t), Some(c)) => format!("{} -> {} {}", l3.src, l3.dst, icmp_name(t, c)),
            _ => format!("{} -> {}", l3.src, l3.dst),
        },
        (Some(proto), Some(l4)) => {
            let name = crate::proto_name(proto);
            let mut out = format!("{}:{} -> {}:{} {name}", l3.src, l4.src, l3.dst, l4.dst);
            if let Some(f) = p.tcp_flags.filter(|f| !f.is_empty()) {
                out.push(' ');
                out.push_str(&f.join(", "));
            }
            out
        }
        _ => format!("{} -> {}", l3.src, l3.dst),
    }
}

fn decoded(d: &[u8]) -> Option<pilus_api_types::MonitorPacket> {
    let p = crate::decode_packet(d);
    p.src_ip.is_some().then_some(p)
}

fn ethertype_name(t: u16) -> String {
    match t {
        ETH_P_IP => "IPv4".into(),
        ETH_P_ARP => "ARP".into(),
        ETH_P_IPV6 => "IPv6".into(),
        t => format!("{t:#06x}"),
    }
}

/// The captured bytes as Cilium's DissectSummary: each layer that was
/// captured whole, as gopacket's LayerString prints it.
pub fn dissect(d: &[u8]) -> DissectSummary {
    let mut s = DissectSummary::default();
    if d.len() < ETH_HLEN {
        return s;
    }
    let ethertype = be16(d, 12);
    let (dst, src) = (mac(&d[0..6]), mac(&d[6..12]));
    s.ethernet = format!(
        "Ethernet\t{{Contents={} Payload={} SrcMAC={src} DstMAC={dst} EthernetType={} Length=0}}",
        elided(ETH_HLEN),
        elided(d.len() - ETH_HLEN),
        ethertype_name(ethertype)
    );
    s.l2 = Some(Flow { src, dst });
    if ethertype != ETH_P_IP {
        return s;
    }
    let ipd = &d[ETH_HLEN..];
    if ipd.len() < 20 || ipd[0] >> 4 != 4 {
        return s;
    }
    let hlen = usize::from(ipd[0] & 0x0f) * 4;
    if hlen < 20 || ipd.len() < hlen {
        return s;
    }
    let total = usize::from(be16(ipd, 2));
    let end = total.clamp(hlen, ipd.len());
    let flags_frag = be16(ipd, 6);
    let flags = match (flags_frag & 0x4000 != 0, flags_frag & 0x2000 != 0) {
        (true, true) => "DF|MF",
        (true, false) => "DF",
        (false, true) => "MF",
        (false, false) => "",
    };
    let proto = ipd[9];
    let proto_name = match proto {
        IPPROTO_ICMP => "ICMPv4".to_string(),
        IPPROTO_TCP => "TCP".to_string(),
        IPPROTO_UDP => "UDP".to_string(),
        n => n.to_string(),
    };
    let (src, dst) = (ip(ipd, 12), ip(ipd, 16));
    s.ipv4 = format!(
        "IPv4\t{{Contents={} Payload={} Version=4 IHL={} TOS={} Length={total} Id={} Flags={flags} FragOffset={} TTL={} Protocol={proto_name} Checksum={} SrcIP={src} DstIP={dst} Options=[] Padding=[]}}",
        elided(hlen),
        elided(end - hlen),
        hlen / 4,
        ipd[1],
        be16(ipd, 4),
        flags_frag & 0x1fff,
        ipd[8],
        be16(ipd, 10),
    );
    s.l3 = Some(Flow {
        src: src.to_string(),
        dst: dst.to_string(),
    });
    if flags_frag & 0x1fff != 0 {
        return s; // a later fragment: no transport header
    }
    let l4 = &ipd[hlen..end];
    match proto {
        IPPROTO_TCP if l4.len() >= 20 => {
            let doff = usize::from(l4[12] >> 4) * 4;
            let f = l4[13];
            let bit = |b: u8| f & b != 0;
            let (sp, dp) = (be16(l4, 0), be16(l4, 2));
            s.tcp = format!(
                "TCP\t{{Contents={} Payload={} SrcPort={sp} DstPort={dp} Seq={} Ack={} DataOffset={} FIN={} SYN={} RST={} PSH={} ACK={} URG={} ECE={} CWR={} NS={} Window={} Checksum={} Urgent={} Options=[] Padding=[]}}",
                elided(doff.min(l4.len())),
                elided(l4.len().saturating_sub(doff)),
                u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
                u32::from_be_bytes([l4[8], l4[9], l4[10], l4[11]]),
                doff / 4,
                bit(0x01),
                bit(0x02),
                bit(0x04),
                bit(0x08),
                bit(0x10),
                bit(0x20),
                bit(0x40),
                bit(0x80),
                l4[12] & 1 != 0,
                be16(l4, 14),
                be16(l4, 16),
                be16(l4, 18),
            );
            s.l4 = Some(Flow {
                src: sp.to_string(),
                dst: dp.to_string(),
            });
        }
        IPPROTO_UDP if l4.len() >= 8 => {
            let (sp, dp) = (be16(l4, 0), be16(l4, 2));
            s.udp = format!(
                "UDP\t{{Contents={} Payload={} SrcPort={sp} DstPort={dp} Length={} Checksum={}}}",
                elided(8),
                elided(l4.len() - 8),
                be16(l4, 4),
                be16(l4, 6),
            );
            s.l4 = Some(Flow {
                src: sp.to_string(),
                dst: dp.to_string(),
            });
        }
        IPPROTO_ICMP if l4.len() >= 8 => {
            s.icmpv4 = format!(
                "ICMPv4\t{{Contents={} Payload={} TypeCode={} Checksum={} Id={} Seq={}}}",
                elided(8),
                elided(l4.len() - 8),
                icmp_name(l4[0], l4[1]),
                be16(l4, 2),
                be16(l4, 4),
                be16(l4, 6),
            );
        }
        _ => {}
    }
    s
}
