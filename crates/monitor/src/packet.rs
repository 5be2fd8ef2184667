//! The captured bytes of a packet, decoded as far as they go (Ethernet,
//! then IPv4 with TCP, UDP or ICMP, or ARP), and their one-line summary.
//! Captures are cut at 128 bytes, so decoding never requires the whole
//! datagram: it reads what the headers need and says where it stopped.

use crate::wire::{
    tcp_flags, ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ICMP_DEST_UNREACH, ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST, ICMP_TIME_EXCEEDED, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};
use pilus_api_types::MonitorPacket;
use std::net::Ipv4Addr;

/// The names of the TCP flags set in `flags`, SYN and FIN first as
/// `tcpdump` and Hubble order them.
pub fn tcp_flag_names(flags: u8) -> Vec<String> {
    const NAMES: [(u8, &str); 8] = [
        (tcp_flags::SYN, "SYN"),
        (tcp_flags::FIN, "FIN"),
        (tcp_flags::RST, "RST"),
        (tcp_flags::PSH, "PSH"),
        (tcp_flags::ACK, "ACK"),
        (tcp_flags::URG, "URG"),
        (tcp_flags::ECE, "ECE"),
        (tcp_flags::CWR, "CWR"),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

pub(crate) fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

pub(crate) fn ip(d: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(d[at], d[at + 1], d[at + 2], d[at + 3])
}

/// Decodes the captured bytes of a packet as far as they go: Ethernet, then
/// IPv4 (TCP, UDP, ICMP) or ARP.
pub fn decode_packet(bytes: &[u8]) -> MonitorPacket {
    let mut p = MonitorPacket::default();
    if bytes.len() < ETH_HLEN {
        p.error = Some(format!(
            "Ethernet header truncated ({} of {ETH_HLEN} bytes captured)",
            bytes.len()
        ));
        return p;
    }
    let ethertype = be16(bytes, 12);
    p.ethertype = Some(ethertype);
    let body = &bytes[ETH_HLEN..];
    match ethertype {
        ETH_P_IP => decode_ipv4(body, &mut p),
        ETH_P_ARP => decode_arp(body, &mut p),
        _ => {}
    }
    p
}

fn decode_ipv4(d: &[u8], p: &mut MonitorPacket) {
    if d.len() < 20 {
        p.error = Some(format!(
            "IPv4 header truncated ({} of 20 bytes captured)",
            d.len()
        ));
        return;
    }
    let version = d[0] >> 4;
    if version != 4 {
        p.error = Some(format!("IP version {version} in an IPv4 frame"));
        return;
    }
    p.src_ip = Some(ip(d, 12));
    p.dst_ip = Some(ip(d, 16));
    p.protocol = Some(d[9]);
    let header_len = usize::from(d[0] & 0x0f) * 4;
    if header_len < 20 {
        p.error = Some(format!("bad IPv4 header length {header_len}"));
        return;
    }
    let flags_frag = be16(d, 6);
    let offset = flags_frag & 0x1fff;
    p.fragment = offset != 0 || flags_frag & 0x2000 != 0;
    if offset != 0 {
        // Only the first fragment carries the transport header.
        return;
    }
    if d.len() < header_len {
        p.error = Some(format!(
            "IPv4 options truncated ({} of {header_len} bytes captured)",
            d.len()
        ));
        return;
    }
    // Up to the datagram's end when it was captured whole (Ethernet padding
    // is not the transport's), else up to what was captured.
    let total = usize::from(be16(d, 2));
    let end = if total >= header_len && total <= d.len() {
        total
    } else {
        d.len()
    };
    let seg = &d[header_len..end];
    let short = |what: &str, need: usize| {
        Some(format!(
            "{what} header truncated ({} of {need} bytes captured)",
            seg.len()
        ))
    };
    match d[9] {
        IPPROTO_TCP => {
            if seg.len() < 4 {
                p.error = short("TCP", 20);
                return;
            }
            p.src_port = Some(be16(seg, 0));
            p.dst_port = Some(be16(seg, 2));
            if seg.len() < 14 {
                p.error = short("TCP", 20);
                return;
            }
            p.tcp_flags = Some(tcp_flag_names(seg[13]));
        }
        IPPROTO_UDP => {
            if seg.len() < 4 {
                p.error = short("UDP", 8);
                return;
            }
            p.src_port = Some(be16(seg, 0));
            p.dst_port = Some(be16(seg, 2));
        }
        IPPROTO_ICMP => {
            if seg.len() < 2 {
                p.error = short("ICMP", 8);
                return;
            }
            p.icmp_type = Some(seg[0]);
            p.icmp_code = Some(seg[1]);
        }
        _ => {}
    }
}

/// Ethernet/IPv4 ARP: 28 bytes (htype, ptype, hlen, plen, op, sha, spa,
/// tha, tpa).
fn decode_arp(d: &[u8], p: &mut MonitorPacket) {
    if d.len() < 28 {
        p.error = Some(format!(
            "ARP body truncated ({} of 28 bytes captured)",
            d.len()
        ));
        return;
    }
    if be16(d, 0) != 1 || be16(d, 2) != ETH_P_IP || d[4] != 6 || d[5] != 4 {
        p.error = Some("ARP for something other than Ethernet/IPv4".into());
        return;
    }
    p.arp_op = Some(be16(d, 6));
    p.src_ip = Some(ip(d, 14));
    p.dst_ip = Some(ip(d, 24));
}

pub fn icmp_name(t: u8, code: u8) -> String {
    match t {
        ICMP_ECHO_REPLY => "EchoReply".into(),
        ICMP_ECHO_REQUEST => "EchoRequest".into(),
        ICMP_DEST_UNREACH => format!("DestinationUnreachable(code {code})"),
        ICMP_TIME_EXCEEDED => format!("TimeExceeded(code {code})"),
        _ => format!("type {t} code {code}"),
    }
}

pub fn proto_name(proto: u8) -> String {
    match proto {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        n => format!("proto {n}"),
    }
}

/// The packet part of a line: `198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN`.
pub fn format_packet(p: &MonitorPacket) -> String {
    let mut s = match (p.ethertype, p.src_ip, p.dst_ip) {
        (None, _, _) => "no packet captured".to_string(),
        (Some(ETH_P_ARP), Some(src), Some(dst)) => match p.arp_op {
            Some(1) => format!("arp request who-has {dst} tell {src}"),
            Some(2) => format!("arp reply {src} -> {dst}"),
            op => format!("arp op {} {src} -> {dst}", op.unwrap_or(0)),
        },
        (Some(ETH_P_IP), Some(src), Some(dst)) => {
            let proto = p.protocol.unwrap_or(0);
            match (p.src_port, p.dst_port) {
                (Some(sp), Some(dp)) => format!("{src}:{sp} -> {dst}:{dp} {}", proto_name(proto)),
                _ => format!("{src} -> {dst} {}", proto_name(proto)),
            }
        }
        (Some(ETH_P_IP), _, _) => "ipv4".to_string(),
        (Some(ETH_P_ARP), _, _) => "arp".to_string(),
        (Some(ETH_P_IPV6), _, _) => "ipv6".to_string(),
        (Some(t), _, _) => format!("ethertype {t:#06x}"),
    };
    if let Some(flags) = p.tcp_flags.as_ref().filter(|f| !f.is_empty()) {
        s.push(' ');
        s.push_str(&flags.join(", "));
    }
    if let (Some(t), Some(c)) = (p.icmp_type, p.icmp_code) {
        s.push(' ');
        s.push_str(&icmp_name(t, c));
    }
    if p.fragment {
        s.push_str(" fragment");
    }
    if let Some(e) = &p.error {
        s.push_str(&format!(" [{e}]"));
    }
    s
}
