//! Datapath events for people: a `pilus_abi::Event` (the record bpf_lxc.c
//! puts on the `pilus_events` ring buffer) decoded into a [`MonitorEvent`],
//! and the one-line `pilus monitor` rendering of it, Cilium-style.
//!
//! Pure computation over bytes, so the agent (which decodes) and the CLI
//! (which prints) share it and it is tested on crafted packets. Captured
//! packets are cut at 128 bytes, so decoding never requires the whole
//! datagram: it reads what the headers need and says where it stopped.

use pilus_abi::{consts::*, DropReason, Event};
use pilus_api_types::{MonitorDropReason, MonitorEvent, MonitorKind, MonitorPacket};
use std::net::Ipv4Addr;
use wire::{
    tcp_flags, ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ICMP_DEST_UNREACH, ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST, ICMP_TIME_EXCEEDED, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};

mod wire;

/// Decodes one event. `time_ns` is its wall-clock time (the caller turns
/// the datapath's monotonic `ktime_ns` into it); `endpoint_by_ip` names the
/// local endpoint with an address, for the side of the packet the event's
/// own endpoint is not.
pub fn decode(
    ev: &Event,
    seq: u64,
    time_ns: u64,
    endpoint_by_ip: impl Fn(Ipv4Addr) -> Option<u16>,
) -> MonitorEvent {
    let kind = match ev.kind {
        EVENT_DROP => MonitorKind::Drop,
        EVENT_TRACE => MonitorKind::Trace,
        _ => MonitorKind::Unknown,
    };
    let reason = (kind == MonitorKind::Drop).then(|| drop_reason(ev.subtype));
    let packet = decode_packet(ev.packet());
    let own = (ev.ep_id != 0).then_some(ev.ep_id);
    let other = |ip: Option<Ipv4Addr>| ip.and_then(&endpoint_by_ip);
    let (src_endpoint, dst_endpoint) = if endpoint_is_destination(ev.obs_point, ev.direction) {
        (other(packet.src_ip), own)
    } else {
        (own, other(packet.dst_ip))
    };
    MonitorEvent {
        seq,
        time_ns,
        kind,
        reason,
        observation_point: observation_point_name(ev.obs_point),
        direction: direction_name(ev.direction),
        endpoint: ev.ep_id,
        src_endpoint,
        dst_endpoint,
        ifindex: ev.ifindex,
        src_identity: ev.src_identity,
        dst_identity: ev.dst_identity,
        orig_len: ev.orig_len,
        cap_len: ev.cap_len,
        packet,
    }
}

/// Whether an event's endpoint is the packet's receiver. bpf_lxc.c reports
/// the endpoint whose program ran: the sender's in from-container (drops
/// at from-endpoint, whatever the direction of the policy that dropped,
/// and the to-endpoint/to-stack traces, which are egress), the receiver's
/// in to-container (to-endpoint, ingress). bpf_overlay.c and bpf_host.c
/// report the local receiver of what arrives from another node
/// (from-overlay, from-network) and the local sender of what leaves
/// (to-overlay, to-network).
fn endpoint_is_destination(obs: u8, dir: u8) -> bool {
    matches!(obs, OBS_FROM_OVERLAY | OBS_FROM_NETWORK)
        || (obs == OBS_TO_ENDPOINT && dir == DIR_INGRESS)
}

/// The reason for a drop code, from the drop table of `pilus_abi`.
pub fn drop_reason(code: u8) -> MonitorDropReason {
    match DropReason::from_code(code) {
        Some(r) => MonitorDropReason {
            code,
            name: r.name.to_string(),
            description: r.description.to_string(),
        },
        None => MonitorDropReason {
            code,
            name: format!("DROP_{code}"),
            description: format!("unknown drop reason {code}"),
        },
    }
}

/// `from-endpoint`, `to-endpoint`, `to-stack`, `from-stack` (Cilium's
/// names), `obs-<n>` for others.
pub fn observation_point_name(obs: u8) -> String {
    match obs {
        OBS_FROM_ENDPOINT => "from-endpoint".into(),
        OBS_TO_ENDPOINT => "to-endpoint".into(),
        OBS_TO_STACK => "to-stack".into(),
        OBS_FROM_STACK => "from-stack".into(),
        OBS_TO_OVERLAY => "to-overlay".into(),
        OBS_FROM_OVERLAY => "from-overlay".into(),
        OBS_TO_NETWORK => "to-network".into(),
        OBS_FROM_NETWORK => "from-network".into(),
        n => format!("obs-{n}"),
    }
}

fn direction_name(dir: u8) -> String {
    match dir {
        DIR_INGRESS => "ingress".into(),
        DIR_EGRESS => "egress".into(),
        n => format!("dir-{n}"),
    }
}

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

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn ip(d: &[u8], at: usize) -> Ipv4Addr {
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

fn icmp_name(t: u8, code: u8) -> String {
    match t {
        ICMP_ECHO_REPLY => "EchoReply".into(),
        ICMP_ECHO_REQUEST => "EchoRequest".into(),
        ICMP_DEST_UNREACH => format!("DestinationUnreachable(code {code})"),
        ICMP_TIME_EXCEEDED => format!("TimeExceeded(code {code})"),
        _ => format!("type {t} code {code}"),
    }
}

fn proto_name(proto: u8) -> String {
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

fn endpoint_or_unknown(ep: Option<u16>) -> String {
    ep.map_or_else(|| "?".into(), |e| e.to_string())
}

/// One line per event, as `cilium monitor` prints them:
///
/// ```text
/// xx drop (Policy denied: no rule allows this flow) ep 12 identity 256->257: 198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN
/// -> endpoint 13 (to-endpoint) identity 256->257: 198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN
/// -> stack (to-stack) ep 12 identity 256->2: 198.18.0.5:43122 -> 203.0.113.9:443 tcp SYN
/// ```
pub fn format_line(e: &MonitorEvent) -> String {
    let ids = format!("identity {}->{}", e.src_identity, e.dst_identity);
    let pkt = format_packet(&e.packet);
    let who = if e.endpoint != 0 {
        format!("ep {}", e.endpoint)
    } else {
        format!("ifindex {}", e.ifindex)
    };
    let obs = &e.observation_point;
    match e.kind {
        MonitorKind::Drop => {
            let why = e
                .reason
                .as_ref()
                .map_or("unknown reason", |r| r.description.as_str());
            format!("xx drop ({why}) {who} {ids}: {pkt}")
        }
        MonitorKind::Trace => match obs.as_str() {
            "to-endpoint" => format!(
                "-> endpoint {} ({obs}) {ids}: {pkt}",
                endpoint_or_unknown(e.dst_endpoint)
            ),
            "from-endpoint" => format!(
                "<- endpoint {} ({obs}) {ids}: {pkt}",
                endpoint_or_unknown(e.src_endpoint)
            ),
            "to-stack" => format!("-> stack ({obs}) {who} {ids}: {pkt}"),
            "from-stack" => format!("<- stack ({obs}) {who} {ids}: {pkt}"),
            // The hops between nodes (Cilium's names for the points).
            "to-overlay" => format!("-> overlay ({obs}) {who} {ids}: {pkt}"),
            "from-overlay" => format!("<- overlay ({obs}) {who} {ids}: {pkt}"),
            "to-network" => format!("-> network ({obs}) {who} {ids}: {pkt}"),
            "from-network" => format!("<- network ({obs}) {who} {ids}: {pkt}"),
            _ => format!("-> ? ({obs}) {who} {ids}: {pkt}"),
        },
        MonitorKind::Unknown => format!("?? event ({obs}) {who} {ids}: {pkt}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pilus_packet::{arp_request, tcp_flags::*, PacketBuilder};

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);
    const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 6);
    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 5];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 6];

    fn event(kind: u8, subtype: u8, obs: u8, dir: u8, ep: u16, pkt: &[u8]) -> Event {
        let mut data = [0u8; EVENT_CAPTURE_LEN as usize];
        let cap = pkt.len().min(data.len());
        data[..cap].copy_from_slice(&pkt[..cap]);
        Event {
            kind,
            subtype,
            obs_point: obs,
            direction: dir,
            ep_id: ep,
            cap_len: cap as u16,
            orig_len: pkt.len() as u32,
            ifindex: 42,
            src_identity: 256,
            dst_identity: 257,
            ktime_ns: 1,
            data,
            ..Default::default()
        }
    }

    fn syn() -> Vec<u8> {
        PacketBuilder::new(MAC_A, MAC_B)
            .ipv4(A, B)
            .tcp(43122, 80, SYN)
            .build()
    }

    /// A: endpoint 12, B: endpoint 13.
    fn eps(ip: Ipv4Addr) -> Option<u16> {
        match ip {
            A => Some(12),
            B => Some(13),
            _ => None,
        }
    }

    #[test]
    fn policy_drop_at_the_sender_decodes_and_prints_like_cilium() {
        let ev = event(
            EVENT_DROP,
            DROP_POLICY,
            OBS_FROM_ENDPOINT,
            DIR_INGRESS,
            12,
            &syn(),
        );
        let e = decode(&ev, 7, 99, eps);
        assert_eq!((e.seq, e.time_ns, e.kind), (7, 99, MonitorKind::Drop));
        let r = e.reason.as_ref().unwrap();
        assert_eq!((r.code, r.name.as_str()), (DROP_POLICY, "DROP_POLICY"));
        assert_eq!(r.description, "Policy denied: no rule allows this flow");
        assert_eq!(e.observation_point, "from-endpoint");
        assert_eq!(e.direction, "ingress");
        // Reported by the sender's program although the receiver's ingress
        // policy dropped it.
        assert_eq!((e.src_endpoint, e.dst_endpoint), (Some(12), Some(13)));
        assert_eq!(
            e.packet,
            MonitorPacket {
                ethertype: Some(ETH_P_IP),
                src_ip: Some(A),
                dst_ip: Some(B),
                protocol: Some(IPPROTO_TCP),
                src_port: Some(43122),
                dst_port: Some(80),
                tcp_flags: Some(vec!["SYN".into()]),
                ..Default::default()
            }
        );
        assert_eq!(
            format_line(&e),
            "xx drop (Policy denied: no rule allows this flow) ep 12 identity 256->257: \
             198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN"
        );
    }

    #[test]
    fn traces_name_the_receiving_endpoint() {
        // Local delivery, reported by the sender's from-container program.
        let ev = event(EVENT_TRACE, 0, OBS_TO_ENDPOINT, DIR_EGRESS, 12, &syn());
        let e = decode(&ev, 1, 0, eps);
        assert_eq!(e.kind, MonitorKind::Trace);
        assert_eq!(e.reason, None);
        assert_eq!(
            (e.endpoint, e.src_endpoint, e.dst_endpoint),
            (12, Some(12), Some(13))
        );
        assert_eq!(
            format_line(&e),
            "-> endpoint 13 (to-endpoint) identity 256->257: 198.18.0.5:43122 -> 198.18.0.6:80 tcp SYN"
        );
        // From the stack into the pod: the receiver's to-container program.
        let ev = event(EVENT_TRACE, 0, OBS_TO_ENDPOINT, DIR_INGRESS, 13, &syn());
        let e = decode(&ev, 2, 0, |_| None);
        assert_eq!((e.src_endpoint, e.dst_endpoint), (None, Some(13)));
        assert!(format_line(&e).starts_with("-> endpoint 13 (to-endpoint)"));
        // To the stack: the destination is not a local pod.
        let out = PacketBuilder::new(MAC_A, MAC_B)
            .ipv4(A, Ipv4Addr::new(198, 19, 9, 9))
            .udp(5353, 53)
            .build();
        let ev = event(EVENT_TRACE, 0, OBS_TO_STACK, DIR_EGRESS, 12, &out);
        let e = decode(&ev, 3, 0, eps);
        assert_eq!((e.src_endpoint, e.dst_endpoint), (Some(12), None));
        assert_eq!(
            format_line(&e),
            "-> stack (to-stack) ep 12 identity 256->257: 198.18.0.5:5353 -> 198.19.9.9:53 udp"
        );
    }

    #[test]
    fn arrivals_from_other_nodes_name_the_local_receiver_only() {
        // A pod of another node (not in this node's endpoints) sends to B.
        let remote = Ipv4Addr::new(198, 18, 2, 3);
        let pkt = PacketBuilder::new(MAC_A, MAC_B)
            .ipv4(remote, B)
            .tcp(40000, 80, SYN)
            .build();
        for obs in [OBS_FROM_OVERLAY, OBS_FROM_NETWORK] {
            let ev = event(EVENT_DROP, DROP_POLICY, obs, DIR_INGRESS, 13, &pkt);
            let e = decode(&ev, 1, 0, eps);
            assert_eq!(
                (e.src_endpoint, e.dst_endpoint),
                (None, Some(13)),
                "obs {obs}"
            );
        }
        // B sends to it: the local sender.
        let pkt = PacketBuilder::new(MAC_A, MAC_B)
            .ipv4(B, remote)
            .tcp(80, 40000, SYN)
            .build();
        for obs in [OBS_TO_OVERLAY, OBS_TO_NETWORK] {
            let ev = event(EVENT_TRACE, 0, obs, DIR_EGRESS, 13, &pkt);
            let e = decode(&ev, 1, 0, eps);
            assert_eq!(
                (e.src_endpoint, e.dst_endpoint),
                (Some(13), None),
                "obs {obs}"
            );
        }
        let ev = event(EVENT_TRACE, 0, OBS_TO_OVERLAY, DIR_EGRESS, 13, &pkt);
        let line = format_line(&decode(&ev, 1, 0, eps));
        assert!(line.starts_with("-> overlay (to-overlay) ep 13"), "{line}");
    }

    #[test]
    fn drop_without_an_endpoint_names_the_interface_and_unknown_codes_stay_numeric() {
        let ev = event(EVENT_DROP, 200, OBS_TO_ENDPOINT, DIR_INGRESS, 0, &syn());
        let e = decode(&ev, 1, 0, eps);
        let r = e.reason.clone().unwrap();
        assert_eq!((r.name.as_str(), r.code), ("DROP_200", 200));
        assert_eq!((e.src_endpoint, e.dst_endpoint), (Some(12), None));
        assert!(
            format_line(&e).starts_with("xx drop (unknown drop reason 200) ifindex 42 identity"),
            "{}",
            format_line(&e)
        );
        let ev = event(9, 0, 9, 5, 3, &syn());
        let e = decode(&ev, 1, 0, eps);
        assert_eq!(e.kind, MonitorKind::Unknown);
        assert_eq!(
            (e.observation_point.as_str(), e.direction.as_str()),
            ("obs-9", "dir-5")
        );
    }

    #[test]
    fn tcp_flags_and_icmp_types_by_name() {
        assert_eq!(tcp_flag_names(SYN | ACK), ["SYN", "ACK"]);
        assert_eq!(tcp_flag_names(FIN | ACK | PSH), ["FIN", "PSH", "ACK"]);
        assert!(tcp_flag_names(0).is_empty());
        let p = decode_packet(
            &PacketBuilder::new(MAC_A, MAC_B)
                .ipv4(A, B)
                .tcp(1, 2, RST | ACK)
                .build(),
        );
        assert_eq!(
            format_packet(&p),
            "198.18.0.5:1 -> 198.18.0.6:2 tcp RST, ACK"
        );
        let ping = PacketBuilder::new(MAC_A, MAC_B)
            .ipv4(A, B)
            .icmp_echo(true, 7, 1)
            .build();
        let p = decode_packet(&ping);
        assert_eq!(
            (p.protocol, p.icmp_type, p.icmp_code),
            (Some(IPPROTO_ICMP), Some(8), Some(0))
        );
        assert_eq!((p.src_port, p.dst_port), (None, None));
        assert_eq!(
            format_packet(&p),
            "198.18.0.5 -> 198.18.0.6 icmp EchoRequest"
        );
        let unreach = PacketBuilder::new(MAC_A, MAC_B)
            .ipv4(B, A)
            .icmp_error(ICMP_DEST_UNREACH, 3, &syn()[ETH_HLEN..])
            .build();
        assert_eq!(
            format_packet(&decode_packet(&unreach)),
            "198.18.0.6 -> 198.18.0.5 icmp DestinationUnreachable(code 3)"
        );
    }

    #[test]
    fn a_capture_cut_at_128_bytes_still_decodes_the_headers() {
        let big = PacketBuilder::new(MAC_A, MAC_B)
            .ipv4(A, B)
            .tcp(40000, 8080, PSH | ACK)
            .payload(&[0x55; 1400])
            .build();
        let ev = event(EVENT_TRACE, 0, OBS_TO_ENDPOINT, DIR_EGRESS, 12, &big);
        assert_eq!(ev.cap_len, 128);
        let e = decode(&ev, 1, 0, eps);
        assert_eq!(e.orig_len as usize, big.len());
        assert_eq!(e.packet.error, None);
        assert_eq!(
            format_packet(&e.packet),
            "198.18.0.5:40000 -> 198.18.0.6:8080 tcp PSH, ACK"
        );
    }

    #[test]
    fn truncated_and_odd_packets_say_where_decoding_stopped() {
        let full = syn();
        // The ports made it, the flags did not.
        let p = decode_packet(&full[..ETH_HLEN + 20 + 6]);
        assert_eq!(
            (p.src_port, p.dst_port, p.tcp_flags.clone()),
            (Some(43122), Some(80), None)
        );
        assert_eq!(
            p.error.as_deref(),
            Some("TCP header truncated (6 of 20 bytes captured)")
        );
        assert_eq!(
            format_packet(&p),
            "198.18.0.5:43122 -> 198.18.0.6:80 tcp [TCP header truncated (6 of 20 bytes captured)]"
        );
        let p = decode_packet(&full[..ETH_HLEN + 10]);
        assert_eq!((p.ethertype, p.src_ip), (Some(ETH_P_IP), None));
        assert!(p.error.unwrap().contains("IPv4 header truncated (10 of 20"));
        let p = decode_packet(&full[..6]);
        assert_eq!(p.ethertype, None);
        assert_eq!(
            format_packet(&p),
            "no packet captured [Ethernet header truncated (6 of 14 bytes captured)]"
        );
        // IP options cut off.
        let opts = PacketBuilder::new(MAC_A, MAC_B)
            .ipv4(A, B)
            .ip_options(&[1; 20])
            .tcp(1, 2, SYN)
            .build();
        let p = decode_packet(&opts[..ETH_HLEN + 30]);
        assert_eq!((p.src_ip, p.src_port), (Some(A), None));
        assert!(p.error.unwrap().contains("options truncated"));
        // Not IPv4 inside an IPv4 ethertype.
        let mut v6 = full.clone();
        v6[ETH_HLEN] = 0x65;
        assert_eq!(
            decode_packet(&v6).error.as_deref(),
            Some("IP version 6 in an IPv4 frame")
        );
    }

    #[test]
    fn fragments_arp_and_other_ethertypes() {
        let first = PacketBuilder::new(MAC_A, MAC_B)
            .ipv4(A, B)
            .fragment(0, true)
            .udp(1000, 53)
            .build();
        let p = decode_packet(&first);
        assert!(p.fragment);
        assert_eq!(
            format_packet(&p),
            "198.18.0.5:1000 -> 198.18.0.6:53 udp fragment"
        );
        let later = PacketBuilder::new(MAC_A, MAC_B)
            .ipv4(A, B)
            .fragment(1480, false)
            .l4_raw(IPPROTO_UDP, &[0xab; 32])
            .build();
        let p = decode_packet(&later);
        assert_eq!(
            (p.fragment, p.src_port),
            (true, None),
            "no transport header in a later fragment"
        );
        assert_eq!(format_packet(&p), "198.18.0.5 -> 198.18.0.6 udp fragment");
        let arp = arp_request(MAC_A, A, Ipv4Addr::new(198, 18, 0, 1));
        let p = decode_packet(&arp);
        assert_eq!((p.arp_op, p.src_ip), (Some(1), Some(A)));
        assert_eq!(
            format_packet(&p),
            "arp request who-has 198.18.0.1 tell 198.18.0.5"
        );
        let v6 = PacketBuilder::new(MAC_A, MAC_B)
            .ethertype(ETH_P_IPV6)
            .build();
        assert_eq!(format_packet(&decode_packet(&v6)), "ipv6");
        let odd = PacketBuilder::new(MAC_A, MAC_B).ethertype(0x88b5).build();
        assert_eq!(format_packet(&decode_packet(&odd)), "ethertype 0x88b5");
    }

    #[test]
    fn events_round_trip_through_json() {
        let ev = event(
            EVENT_DROP,
            DROP_POLICY_DENY,
            OBS_FROM_ENDPOINT,
            DIR_EGRESS,
            12,
            &syn(),
        );
        let e = decode(&ev, 5, 6, eps);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "drop");
        assert_eq!(json["reason"]["name"], "DROP_POLICY_DENY");
        assert_eq!(json["packet"]["src_ip"], "198.18.0.5");
        assert_eq!(json["packet"]["tcp_flags"][0], "SYN");
        assert!(
            json["packet"].get("icmp_type").is_none(),
            "absent fields are left out: {json}"
        );
        let back: MonitorEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}
