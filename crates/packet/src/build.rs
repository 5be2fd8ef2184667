//! `PacketBuilder`: byte-exact Ethernet/IPv4/L4 frames and their header layout.

use std::net::Ipv4Addr;

use crate::checksum::{checksum, l4_checksum};
use crate::{Mac, ETH_HLEN, ETH_P_IP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

const IPV4_MIN_HLEN: usize = 20;
// IHL is 4 bits of 32-bit words: at most 15 * 4 = 60 bytes, 40 of options.
const IPV4_MAX_OPTIONS: usize = 40;
const IP_DF: u16 = 0x4000;
const IP_MF: u16 = 0x2000;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const ICMP_HLEN: usize = 8;

/// Which L4 header (if any) follows the IPv4 header.
#[derive(Clone, Debug, PartialEq, Eq)]
enum L4 {
    None,
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    IcmpEcho {
        request: bool,
        id: u16,
        seq: u16,
    },
    IcmpError {
        icmp_type: u8,
        code: u8,
        inner: Vec<u8>,
    },
    Raw {
        proto: u8,
        bytes: Vec<u8>,
    },
}

impl L4 {
    fn proto(&self) -> u8 {
        match self {
            // No L4 configured: protocol 0 marks "nothing meaningful here";
            // use `l4_raw(proto, &[])` to pick a number with no header.
            L4::None => 0,
            L4::Tcp { .. } => IPPROTO_TCP,
            L4::Udp { .. } => IPPROTO_UDP,
            L4::IcmpEcho { .. } | L4::IcmpError { .. } => IPPROTO_ICMP,
            L4::Raw { proto, .. } => *proto,
        }
    }

    /// Bytes this L4 variant contributes before the builder payload.
    fn header_len(&self) -> usize {
        match self {
            L4::None => 0,
            L4::Tcp { .. } => TCP_HLEN,
            L4::Udp { .. } => UDP_HLEN,
            L4::IcmpEcho { .. } => ICMP_HLEN,
            L4::IcmpError { inner, .. } => ICMP_HLEN + inner.len(),
            L4::Raw { bytes, .. } => bytes.len(),
        }
    }
}

/// Builds an Ethernet frame carrying IPv4 (or raw ethertype).
///
/// Defaults from [`PacketBuilder::new`]: ethertype IPv4, addresses 0.0.0.0,
/// TTL 64, IP id 0, TOS 0, no options, not fragmented, DF clear, empty
/// payload, no L4 header (IP protocol 0).
///
/// The builder panics only on programmer error, never on packet contents:
/// an IP datagram longer than 65535 bytes, more than 40 bytes of IP options,
/// or a fragment offset that is not a multiple of 8.
#[derive(Clone, Debug)]
pub struct PacketBuilder {
    src_mac: Mac,
    dst_mac: Mac,
    ethertype: u16,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    ttl: u8,
    tos: u8,
    id: u16,
    dont_fragment: bool,
    options: Vec<u8>,
    frag_offset: u16,
    more_fragments: bool,
    // Kept outside `L4::Tcp` so `tcp_seq_ack` works in either call order.
    tcp_seq: u32,
    tcp_ack: u32,
    tcp_window: u16,
    l4: L4,
    payload: Vec<u8>,
}

/// Byte offsets where each header starts/ends in a built frame, so tests can
/// truncate "inside each header".
///
/// Offsets are into [`PacketBuilder::build`] output (Ethernet header at 0).
/// For a non-IPv4 ethertype, `l3_start == payload_start == 14`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Start of the IPv4 header (end of the Ethernet header).
    pub l3_start: usize,
    /// Start of the L4 header, if one is emitted (none for non-first fragments).
    pub l4_start: Option<usize>,
    /// Start of the bytes given to [`PacketBuilder::payload`]. For ICMP errors
    /// this is after the quoted inner datagram; for `l4_raw` after its bytes.
    pub payload_start: usize,
    /// Total frame length.
    pub total: usize,
}

impl PacketBuilder {
    /// Starts a frame from `src_mac` to `dst_mac` with the defaults above.
    pub fn new(src_mac: Mac, dst_mac: Mac) -> Self {
        Self {
            src_mac,
            dst_mac,
            ethertype: ETH_P_IP,
            src_ip: Ipv4Addr::UNSPECIFIED,
            dst_ip: Ipv4Addr::UNSPECIFIED,
            ttl: 64,
            tos: 0,
            id: 0,
            dont_fragment: false,
            options: Vec::new(),
            frag_offset: 0,
            more_fragments: false,
            tcp_seq: 1,
            tcp_ack: 0,
            tcp_window: 65535,
            l4: L4::None,
            payload: Vec::new(),
        }
    }

    /// Sets the IPv4 source and destination addresses.
    pub fn ipv4(mut self, src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        self.src_ip = src;
        self.dst_ip = dst;
        self
    }

    /// Sets the IPv4 TTL.
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the IPv4 TOS/DSCP+ECN byte.
    pub fn tos(mut self, tos: u8) -> Self {
        self.tos = tos;
        self
    }

    /// Sets the IPv4 identification field.
    pub fn ip_id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    /// Sets or clears the IPv4 Don't Fragment flag.
    pub fn dont_fragment(mut self, df: bool) -> Self {
        self.dont_fragment = df;
        self
    }

    /// Sets raw IPv4 options. They are padded with zeros (EOL) to a multiple
    /// of 4 and the IHL is computed from the result.
    ///
    /// # Panics
    /// If `opts` is longer than 40 bytes (cannot be expressed in the IHL).
    pub fn ip_options(mut self, opts: &[u8]) -> Self {
        assert!(
            opts.len() <= IPV4_MAX_OPTIONS,
            "IPv4 options are limited to {IPV4_MAX_OPTIONS} bytes, got {}",
            opts.len()
        );
        let mut padded = opts.to_vec();
        padded.resize(opts.len().div_ceil(4) * 4, 0);
        self.options = padded;
        self
    }

    /// Makes this a fragment at `offset_bytes` into the original datagram.
    ///
    /// With a non-zero offset no L4 header is emitted: the bytes after the IP
    /// header are exactly the payload, as on the wire.
    ///
    /// # Panics
    /// If `offset_bytes` is not a multiple of 8 (the wire field counts 8-byte
    /// units, so such an offset is unrepresentable).
    pub fn fragment(mut self, offset_bytes: u16, more_fragments: bool) -> Self {
        assert!(
            offset_bytes.is_multiple_of(8),
            "fragment offset {offset_bytes} is not a multiple of 8"
        );
        self.frag_offset = offset_bytes;
        self.more_fragments = more_fragments;
        self
    }

    /// Adds a 20-byte TCP header (seq 1, ack 0 unless set, window 65535).
    pub fn tcp(mut self, sport: u16, dport: u16, flags: u8) -> Self {
        self.l4 = L4::Tcp {
            sport,
            dport,
            flags,
        };
        self
    }

    /// Sets the TCP sequence and acknowledgment numbers.
    pub fn tcp_seq_ack(mut self, seq: u32, ack: u32) -> Self {
        self.tcp_seq = seq;
        self.tcp_ack = ack;
        self
    }

    /// Sets the TCP window (default 65535).
    pub fn tcp_window(mut self, window: u16) -> Self {
        self.tcp_window = window;
        self
    }

    /// Adds an 8-byte UDP header; length and checksum are computed.
    pub fn udp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = L4::Udp { sport, dport };
        self
    }

    /// Adds an ICMP echo header: type 8 if `request`, else type 0 (reply).
    pub fn icmp_echo(mut self, request: bool, id: u16, seq: u16) -> Self {
        self.l4 = L4::IcmpEcho { request, id, seq };
        self
    }

    /// Adds an ICMP error message: type, code, checksum, 4 zero "unused"
    /// bytes, then `inner` (the offending IPv4 header plus at least 8 bytes of
    /// its data, without Ethernet; see [`PacketBuilder::build_ip`]). Any
    /// payload follows `inner`. `inner` is not validated so tests can quote
    /// malformed datagrams.
    pub fn icmp_error(mut self, icmp_type: u8, code: u8, inner: &[u8]) -> Self {
        self.l4 = L4::IcmpError {
            icmp_type,
            code,
            inner: inner.to_vec(),
        };
        self
    }

    /// Uses `bytes` verbatim as the L4 header+data under protocol `proto`.
    /// No checksum is computed; any payload follows `bytes`.
    pub fn l4_raw(mut self, proto: u8, bytes: &[u8]) -> Self {
        self.l4 = L4::Raw {
            proto,
            bytes: bytes.to_vec(),
        };
        self
    }

    /// Sets the bytes after the L4 header (or after the Ethernet header for a
    /// non-IPv4 ethertype).
    pub fn payload(mut self, data: &[u8]) -> Self {
        self.payload = data.to_vec();
        self
    }

    /// Sets the ethertype. For anything but IPv4, `build()` emits the Ethernet
    /// header followed by the payload only; all IP/L4 settings are ignored.
    pub fn ethertype(mut self, ethertype: u16) -> Self {
        self.ethertype = ethertype;
        self
    }

    fn is_ipv4(&self) -> bool {
        self.ethertype == ETH_P_IP
    }

    fn ip_header_len(&self) -> usize {
        IPV4_MIN_HLEN + self.options.len()
    }

    /// Non-first fragments carry no L4 header on the wire.
    fn l4_header_len(&self) -> usize {
        if self.frag_offset == 0 {
            self.l4.header_len()
        } else {
            0
        }
    }

    /// Header offsets of the frame [`PacketBuilder::build`] would produce.
    pub fn layout(&self) -> Layout {
        let l3_start = ETH_HLEN;
        if !self.is_ipv4() {
            return Layout {
                l3_start,
                l4_start: None,
                payload_start: l3_start,
                total: l3_start + self.payload.len(),
            };
        }
        let l4_at = l3_start + self.ip_header_len();
        let l4_len = self.l4_header_len();
        let l4_start = (self.frag_offset == 0 && self.l4 != L4::None).then_some(l4_at);
        let payload_start = l4_at + l4_len;
        Layout {
            l3_start,
            l4_start,
            payload_start,
            total: payload_start + self.payload.len(),
        }
    }

    /// Builds the full Ethernet frame.
    ///
    /// IPv4 total length and header checksum, TCP/UDP checksums (with the
    /// pseudo-header) and the ICMP checksum are all computed. For a first
    /// fragment with MF set the L4 checksum covers only the bytes present.
    ///
    /// # Panics
    /// If the IPv4 datagram would exceed 65535 bytes.
    pub fn build(&self) -> Vec<u8> {
        let body = self.build_ip();
        let mut frame = Vec::with_capacity(ETH_HLEN + body.len());
        frame.extend_from_slice(&self.dst_mac);
        frame.extend_from_slice(&self.src_mac);
        frame.extend_from_slice(&self.ethertype.to_be_bytes());
        frame.extend_from_slice(&body);
        frame
    }

    /// Like [`PacketBuilder::build`] but without the Ethernet header, e.g. to
    /// quote as the inner datagram of an ICMP error. For a non-IPv4 ethertype
    /// this is just the payload.
    ///
    /// # Panics
    /// If the IPv4 datagram would exceed 65535 bytes.
    pub fn build_ip(&self) -> Vec<u8> {
        if !self.is_ipv4() {
            return self.payload.clone();
        }
        let segment = self.build_segment();
        let hlen = self.ip_header_len();
        let total = hlen + segment.len();
        let total_len = u16::try_from(total)
            .unwrap_or_else(|_| panic!("IPv4 datagram of {total} bytes exceeds 65535"));

        let mut flags_frag = self.frag_offset / 8;
        if self.dont_fragment {
            flags_frag |= IP_DF;
        }
        if self.more_fragments {
            flags_frag |= IP_MF;
        }
        // hlen <= 60, so hlen / 4 fits the 4-bit IHL field.
        let ihl = (hlen / 4) as u8;

        let mut ip = Vec::with_capacity(total);
        ip.push(0x40 | ihl);
        ip.push(self.tos);
        ip.extend_from_slice(&total_len.to_be_bytes());
        ip.extend_from_slice(&self.id.to_be_bytes());
        ip.extend_from_slice(&flags_frag.to_be_bytes());
        ip.push(self.ttl);
        ip.push(self.l4.proto());
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src_ip.octets());
        ip.extend_from_slice(&self.dst_ip.octets());
        ip.extend_from_slice(&self.options);
        let csum = checksum(&ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        ip.extend_from_slice(&segment);
        ip
    }

    /// L4 header (if emitted) + payload, with the L4 checksum filled in.
    fn build_segment(&self) -> Vec<u8> {
        let mut seg = Vec::with_capacity(self.l4_header_len() + self.payload.len());
        if self.frag_offset != 0 {
            seg.extend_from_slice(&self.payload);
            return seg;
        }
        // Offset of the checksum field within `seg`, for variants that have one.
        let csum_at = match &self.l4 {
            L4::None => None,
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                seg.extend_from_slice(&sport.to_be_bytes());
                seg.extend_from_slice(&dport.to_be_bytes());
                seg.extend_from_slice(&self.tcp_seq.to_be_bytes());
                seg.extend_from_slice(&self.tcp_ack.to_be_bytes());
                seg.push(((TCP_HLEN / 4) as u8) << 4);
                seg.push(*flags);
                seg.extend_from_slice(&self.tcp_window.to_be_bytes());
                seg.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                Some(16)
            }
            L4::Udp { sport, dport } => {
                // Oversized payloads are caught by the total-length check in
                // build_ip; saturate here so that check is what reports it.
                let len = u16::try_from(UDP_HLEN + self.payload.len()).unwrap_or(u16::MAX);
                seg.extend_from_slice(&sport.to_be_bytes());
                seg.extend_from_slice(&dport.to_be_bytes());
                seg.extend_from_slice(&len.to_be_bytes());
                seg.extend_from_slice(&[0, 0]);
                Some(6)
            }
            L4::IcmpEcho { request, id, seq } => {
                seg.push(if *request { 8 } else { 0 });
                seg.push(0);
                seg.extend_from_slice(&[0, 0]);
                seg.extend_from_slice(&id.to_be_bytes());
                seg.extend_from_slice(&seq.to_be_bytes());
                Some(2)
            }
            L4::IcmpError {
                icmp_type,
                code,
                inner,
            } => {
                seg.push(*icmp_type);
                seg.push(*code);
                seg.extend_from_slice(&[0, 0]);
                seg.extend_from_slice(&[0, 0, 0, 0]); // unused
                seg.extend_from_slice(inner);
                Some(2)
            }
            L4::Raw { bytes, .. } => {
                seg.extend_from_slice(bytes);
                None
            }
        };
        seg.extend_from_slice(&self.payload);

        if let Some(at) = csum_at {
            let csum = match self.l4 {
                L4::Tcp { .. } => l4_checksum(self.src_ip, self.dst_ip, IPPROTO_TCP, &seg),
                L4::Udp { .. } => {
                    // RFC 768: a computed 0 is sent as 0xffff, because 0 on
                    // the wire means "no checksum".
                    match l4_checksum(self.src_ip, self.dst_ip, IPPROTO_UDP, &seg) {
                        0 => 0xffff,
                        c => c,
                    }
                }
                // ICMP has no pseudo-header.
                _ => checksum(&seg),
            };
            seg[at..at + 2].copy_from_slice(&csum.to_be_bytes());
        }
        seg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp_flags;

    const A: Mac = [0x02, 0, 0, 0, 0, 0x01];
    const B: Mac = [0x02, 0, 0, 0, 0, 0x02];

    fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
        Ipv4Addr::new(a, b, c, d)
    }

    #[test]
    fn tcp_syn_is_byte_exact_with_hand_computed_checksums() {
        let frame = PacketBuilder::new(A, B)
            .ipv4(ip(10, 0, 0, 1), ip(10, 0, 0, 2))
            .tcp(1234, 80, tcp_flags::SYN)
            .build();
        // IPv4 checksum by hand: 4500+0028+0000+0000+4006+0a00+0001+0a00+0002
        // = 0x9931 -> !0x9931 = 0x66ce.
        // TCP checksum by hand: pseudo 0a00+0001+0a00+0002+0006+0014 = 0x141d;
        // header 04d2+0050+0000+0001+0000+0000+5002+ffff+0000+0000 = 0x15524;
        // total 0x16941 -> fold 0x6942 -> !0x6942 = 0x96bd.
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            // Ethernet: dst, src, type
            0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00,
            // IPv4
            0x45, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00, 0x40, 0x06, 0x66, 0xce,
            10, 0, 0, 1, 10, 0, 0, 2,
            // TCP
            0x04, 0xd2, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff,
            0x96, 0xbd, 0x00, 0x00,
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn ipv4_header_matches_known_vector() {
        // Same header as the checksum known vector (checksum 0xb861): DF set,
        // UDP protocol, total length 0x73.
        let pkt = PacketBuilder::new(A, B)
            .ipv4(ip(192, 168, 0, 1), ip(192, 168, 0, 199))
            .dont_fragment(true)
            .l4_raw(IPPROTO_UDP, &[0u8; 0x73 - 20])
            .build_ip();
        assert_eq!(
            pkt[..20],
            [
                0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
                0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7
            ]
        );
    }

    #[test]
    fn icmp_echo_checksum_hand_computed() {
        let pkt = PacketBuilder::new(A, B)
            .ipv4(ip(10, 0, 0, 1), ip(10, 0, 0, 2))
            .icmp_echo(true, 0x1234, 1)
            .build_ip();
        // 0800+0000+1234+0001 = 0x1a35 -> !0x1a35 = 0xe5ca.
        assert_eq!(pkt[20..], [0x08, 0x00, 0xe5, 0xca, 0x12, 0x34, 0x00, 0x01]);
        let reply = PacketBuilder::new(A, B)
            .icmp_echo(false, 0x1234, 1)
            .build_ip();
        assert_eq!(reply[20], 0);
        // Type 0 instead of 8 raises the checksum by 0x0800.
        assert_eq!(reply[22..24], [0xed, 0xca]);
    }

    #[test]
    fn udp_length_and_checksum_verify() {
        let (s, d) = (ip(10, 1, 0, 5), ip(10, 2, 0, 7));
        let pkt = PacketBuilder::new(A, B)
            .ipv4(s, d)
            .udp(5353, 53)
            .payload(b"hello")
            .build_ip();
        assert_eq!(pkt.len(), 20 + 8 + 5);
        assert_eq!(pkt[9], IPPROTO_UDP);
        assert_eq!(u16::from_be_bytes([pkt[24], pkt[25]]), 13);
        assert_ne!(pkt[26..28], [0, 0]);
        assert_eq!(l4_checksum(s, d, IPPROTO_UDP, &pkt[20..]), 0);
        assert_eq!(checksum(&pkt[..20]), 0);
    }

    #[test]
    fn udp_zero_checksum_is_sent_as_ffff() {
        // Choose the last payload word so the one's-complement sum is 0xffff
        // (computed checksum 0): find it from the sum without that word.
        let (s, d) = (ip(10, 0, 0, 1), ip(10, 0, 0, 2));
        let base = PacketBuilder::new(A, B).ipv4(s, d).udp(1, 2);
        let probe = base.clone().payload(&[0, 0]).build_ip();
        let mut seg = probe[20..].to_vec();
        seg[6..8].copy_from_slice(&[0, 0]);
        // !checksum = folded sum; adding (0xffff - sum) makes it 0xffff.
        let partial = !l4_checksum(s, d, IPPROTO_UDP, &seg);
        let word = 0xffff - partial;
        let pkt = base.payload(&word.to_be_bytes()).build_ip();
        assert_eq!(pkt[26..28], [0xff, 0xff]);
        assert_eq!(l4_checksum(s, d, IPPROTO_UDP, &pkt[20..]), 0);
    }

    #[test]
    fn options_are_padded_and_ihl_computed() {
        let pkt = PacketBuilder::new(A, B)
            .ip_options(&[0x01, 0x01, 0x01, 0x01, 0x94])
            .build_ip();
        assert_eq!(pkt[0], 0x47);
        assert_eq!(pkt[20..28], [0x01, 0x01, 0x01, 0x01, 0x94, 0, 0, 0]);
        assert_eq!(pkt.len(), 28);
        assert_eq!(checksum(&pkt[..28]), 0);
    }

    #[test]
    fn fragment_fields_and_no_l4_on_later_fragments() {
        let base = PacketBuilder::new(A, B)
            .ipv4(ip(1, 1, 1, 1), ip(2, 2, 2, 2))
            .ip_id(0xbeef)
            .udp(1000, 2000)
            .payload(&[0xaa; 16]);
        let later = base.clone().fragment(1480, true).build_ip();
        assert_eq!(later[4..6], [0xbe, 0xef]);
        // 1480 / 8 = 185 = 0xb9, MF = 0x2000.
        assert_eq!(later[6..8], [0x20, 0xb9]);
        assert_eq!(later[9], IPPROTO_UDP);
        assert_eq!(later[20..], [0xaa; 16]);
        assert_eq!(later.len(), 36);

        let first = base.fragment(0, true).build_ip();
        assert_eq!(first[6..8], [0x20, 0x00]);
        assert_eq!(first.len(), 20 + 8 + 16);
    }

    #[test]
    fn df_and_tos_and_ttl() {
        let pkt = PacketBuilder::new(A, B)
            .dont_fragment(true)
            .tos(0xb8)
            .ttl(1)
            .build_ip();
        assert_eq!(pkt[1], 0xb8);
        assert_eq!(pkt[6..8], [0x40, 0x00]);
        assert_eq!(pkt[8], 1);
        assert_eq!(pkt[9], 0);
    }

    #[test]
    fn icmp_error_quotes_inner_after_unused_word() {
        let inner = PacketBuilder::new(A, B)
            .ipv4(ip(10, 0, 0, 2), ip(10, 0, 0, 9))
            .udp(4000, 53)
            .payload(&[7; 32])
            .build_ip();
        let quoted = &inner[..28];
        let pkt = PacketBuilder::new(A, B)
            .ipv4(ip(10, 0, 0, 1), ip(10, 0, 0, 2))
            .icmp_error(3, 4, quoted)
            .build_ip();
        assert_eq!(pkt[20..22], [3, 4]);
        assert_eq!(pkt[24..28], [0, 0, 0, 0]);
        assert_eq!(pkt[28..], *quoted);
        assert_eq!(checksum(&pkt[20..]), 0);
    }

    #[test]
    fn non_ipv4_ethertype_is_header_plus_payload() {
        let b = PacketBuilder::new(A, B)
            .ethertype(crate::ETH_P_IPV6)
            .tcp(1, 2, 0)
            .payload(&[1, 2, 3]);
        let frame = b.build();
        assert_eq!(frame.len(), 17);
        assert_eq!(frame[12..14], [0x86, 0xdd]);
        assert_eq!(frame[14..], [1, 2, 3]);
        assert_eq!(
            b.layout(),
            Layout {
                l3_start: 14,
                l4_start: None,
                payload_start: 14,
                total: 17
            }
        );
    }

    #[test]
    fn layout_matches_built_frame() {
        let b = PacketBuilder::new(A, B)
            .ip_options(&[1, 1, 1, 1])
            .tcp(1, 2, tcp_flags::ACK)
            .payload(b"xyz");
        let l = b.layout();
        let frame = b.build();
        assert_eq!(
            l,
            Layout {
                l3_start: 14,
                l4_start: Some(38),
                payload_start: 58,
                total: 61
            }
        );
        assert_eq!(frame.len(), l.total);
        assert_eq!(&frame[l.payload_start..], b"xyz");

        let frag = PacketBuilder::new(A, B)
            .tcp(1, 2, 0)
            .fragment(8, false)
            .payload(b"ab");
        assert_eq!(frag.layout().l4_start, None);
        assert_eq!(frag.layout().payload_start, 34);
        assert_eq!(frag.build().len(), frag.layout().total);

        let none = PacketBuilder::new(A, B).payload(b"ab");
        assert_eq!(none.layout().l4_start, None);
        assert_eq!(none.layout().payload_start, 34);
    }

    #[test]
    fn seq_ack_and_window_in_either_order() {
        let a = PacketBuilder::new(A, B)
            .tcp_seq_ack(0x01020304, 0x0a0b0c0d)
            .tcp(1, 2, tcp_flags::ACK)
            .build_ip();
        let b = PacketBuilder::new(A, B)
            .tcp(1, 2, tcp_flags::ACK)
            .tcp_seq_ack(0x01020304, 0x0a0b0c0d)
            .build_ip();
        assert_eq!(a, b);
        assert_eq!(a[24..32], [1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(a[32], 0x50);
        assert_eq!(a[34..36], [0xff, 0xff]);
    }

    #[test]
    #[should_panic(expected = "multiple of 8")]
    fn unaligned_fragment_offset_panics() {
        let _ = PacketBuilder::new(A, B).fragment(12, false);
    }

    #[test]
    #[should_panic(expected = "exceeds 65535")]
    fn oversized_datagram_panics() {
        let _ = PacketBuilder::new(A, B)
            .udp(1, 2)
            .payload(&vec![0; 65535 - 28 + 1])
            .build();
    }

    #[test]
    fn largest_datagram_fits() {
        let pkt = PacketBuilder::new(A, B)
            .udp(1, 2)
            .payload(&vec![0; 65535 - 28])
            .build_ip();
        assert_eq!(pkt[2..4], [0xff, 0xff]);
    }

    #[test]
    #[should_panic(expected = "limited to 40")]
    fn too_many_options_panic() {
        let _ = PacketBuilder::new(A, B).ip_options(&[1; 41]);
    }
}
