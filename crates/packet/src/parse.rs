//! `parse`: a checked, read-only view of frames the datapath emitted, for assertions.

use std::net::Ipv4Addr;

use thiserror::Error;

use crate::arp::{ARPHRD_ETHER, ARP_LEN};
use crate::checksum::{checksum, l4_checksum};
use crate::{Mac, ETH_HLEN, ETH_P_ARP, ETH_P_IP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// Why a frame could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ParseError {
    /// A header (or the datagram its length field claims) runs past the end
    /// of the frame.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// IPv4 version nibble is not 4.
    #[error("IP version {0} in an IPv4 ethertype frame")]
    BadVersion(u8),
    /// IHL below the 5-word minimum.
    #[error("bad IPv4 IHL {0} (minimum 5)")]
    BadIhl(u8),
    /// IPv4 total length smaller than its own header.
    #[error("IPv4 total length {total_len} is smaller than header length {header_len}")]
    BadTotalLength { total_len: u16, header_len: usize },
    /// TCP data offset below the 5-word minimum.
    #[error("bad TCP data offset {0} (minimum 5)")]
    BadTcpDataOffset(u8),
    /// UDP length below 8 or beyond the IP payload.
    #[error("bad UDP length {len} (IP payload has {available} bytes)")]
    BadUdpLength { len: u16, available: usize },
    /// ARP for something other than Ethernet/IPv4.
    #[error("unsupported ARP htype {htype} ptype {ptype:#06x} hlen {hlen} plen {plen}")]
    UnsupportedArp {
        htype: u16,
        ptype: u16,
        hlen: u8,
        plen: u8,
    },
}

/// A parsed view for assertions on packets the datapath emitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub ethertype: u16,
    /// Set when the ethertype is IPv4.
    pub ipv4: Option<Ipv4Info>,
    /// Set when the ethertype is ARP.
    pub arp: Option<ArpInfo>,
    /// Set for TCP/UDP/ICMP in a first (offset 0) fragment or unfragmented datagram.
    pub l4: Option<L4Info>,
}

/// IPv4 header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Info {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    /// IHL in bytes.
    pub header_len: usize,
    pub total_len: u16,
    pub id: u16,
    /// Fragment offset in bytes (wire value × 8).
    pub frag_offset: u16,
    pub more_fragments: bool,
    /// Header checksum as found on the wire.
    pub checksum: u16,
    pub checksum_ok: bool,
}

/// Ethernet/IPv4 ARP body fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArpInfo {
    pub op: u16,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tha: Mac,
    pub tpa: Ipv4Addr,
}

/// L4 header fields. `checksum_ok` covers the L4 bytes inside the IPv4 total
/// length (with the pseudo-header for TCP/UDP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4Info {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        checksum_ok: bool,
    },
    /// A zero UDP checksum means "not computed" (RFC 768) and counts as ok.
    Udp {
        sport: u16,
        dport: u16,
        checksum_ok: bool,
    },
    /// `id`/`seq` are bytes 4..8 of the ICMP header; for non-echo types they
    /// are the raw "rest of header" words (e.g. next-hop MTU in `seq`).
    Icmp {
        icmp_type: u8,
        code: u8,
        id: u16,
        seq: u16,
        checksum_ok: bool,
    },
}

fn need(what: &'static str, data: &[u8], need: usize) -> Result<(), ParseError> {
    if data.len() < need {
        return Err(ParseError::Truncated {
            what,
            need,
            have: data.len(),
        });
    }
    Ok(())
}

// Callers check lengths with `need` first; these keep indexing in one place.
fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn mac(d: &[u8], at: usize) -> Mac {
    let mut m = [0; 6];
    m.copy_from_slice(&d[at..at + 6]);
    m
}

fn ipv4(d: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(d[at], d[at + 1], d[at + 2], d[at + 3])
}

/// Parses an Ethernet frame. IPv4 and ARP bodies are decoded; other
/// ethertypes yield only the Ethernet fields. Bytes past the IPv4 total
/// length (e.g. Ethernet padding) are ignored. L4 is parsed only for first
/// fragments (offset 0) carrying TCP, UDP or ICMP.
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    need("ethernet header", frame, ETH_HLEN)?;
    let mut parsed = Parsed {
        dst_mac: mac(frame, 0),
        src_mac: mac(frame, 6),
        ethertype: be16(frame, 12),
        ipv4: None,
        arp: None,
        l4: None,
    };
    let body = &frame[ETH_HLEN..];
    match parsed.ethertype {
        ETH_P_IP => {
            let (info, segment) = parse_ipv4(body)?;
            if info.frag_offset == 0 {
                parsed.l4 = parse_l4(&info, segment)?;
            }
            parsed.ipv4 = Some(info);
        }
        ETH_P_ARP => parsed.arp = Some(parse_arp(body)?),
        _ => {}
    }
    Ok(parsed)
}

/// Returns the header view and the bytes after the header up to total length.
fn parse_ipv4(d: &[u8]) -> Result<(Ipv4Info, &[u8]), ParseError> {
    need("ipv4 header", d, 20)?;
    let version = d[0] >> 4;
    if version != 4 {
        return Err(ParseError::BadVersion(version));
    }
    let ihl = d[0] & 0x0f;
    if ihl < 5 {
        return Err(ParseError::BadIhl(ihl));
    }
    let header_len = usize::from(ihl) * 4;
    need("ipv4 options", d, header_len)?;
    let total_len = be16(d, 2);
    let total = usize::from(total_len);
    if total < header_len {
        return Err(ParseError::BadTotalLength {
            total_len,
            header_len,
        });
    }
    need("ipv4 datagram", d, total)?;
    let flags_frag = be16(d, 6);
    let info = Ipv4Info {
        src: ipv4(d, 12),
        dst: ipv4(d, 16),
        ttl: d[8],
        proto: d[9],
        header_len,
        total_len,
        id: be16(d, 4),
        // 13-bit field of 8-byte units; 0x1fff * 8 still fits in u16.
        frag_offset: (flags_frag & 0x1fff) * 8,
        more_fragments: flags_frag & 0x2000 != 0,
        checksum: be16(d, 10),
        checksum_ok: checksum(&d[..header_len]) == 0,
    };
    Ok((info, &d[header_len..total]))
}

fn parse_l4(ip: &Ipv4Info, seg: &[u8]) -> Result<Option<L4Info>, ParseError> {
    let l4 = match ip.proto {
        IPPROTO_TCP => {
            need("tcp header", seg, 20)?;
            let doff = seg[12] >> 4;
            if doff < 5 {
                return Err(ParseError::BadTcpDataOffset(doff));
            }
            need("tcp options", seg, usize::from(doff) * 4)?;
            L4Info::Tcp {
                sport: be16(seg, 0),
                dport: be16(seg, 2),
                flags: seg[13],
                checksum_ok: l4_checksum(ip.src, ip.dst, IPPROTO_TCP, seg) == 0,
            }
        }
        IPPROTO_UDP => {
            need("udp header", seg, 8)?;
            let len = be16(seg, 4);
            if usize::from(len) < 8 || usize::from(len) > seg.len() {
                return Err(ParseError::BadUdpLength {
                    len,
                    available: seg.len(),
                });
            }
            let dgram = &seg[..usize::from(len)];
            let checksum_ok =
                be16(seg, 6) == 0 || l4_checksum(ip.src, ip.dst, IPPROTO_UDP, dgram) == 0;
            L4Info::Udp {
                sport: be16(seg, 0),
                dport: be16(seg, 2),
                checksum_ok,
            }
        }
        IPPROTO_ICMP => {
            need("icmp header", seg, 8)?;
            L4Info::Icmp {
                icmp_type: seg[0],
                code: seg[1],
                id: be16(seg, 4),
                seq: be16(seg, 6),
                checksum_ok: checksum(seg) == 0,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(l4))
}

fn parse_arp(d: &[u8]) -> Result<ArpInfo, ParseError> {
    // Check the fixed part first so a non-Ethernet/IPv4 ARP reports what it
    // is rather than a misleading length error.
    need("arp header", d, 8)?;
    let (htype, ptype, hlen, plen) = (be16(d, 0), be16(d, 2), d[4], d[5]);
    if htype != ARPHRD_ETHER || ptype != ETH_P_IP || hlen != 6 || plen != 4 {
        return Err(ParseError::UnsupportedArp {
            htype,
            ptype,
            hlen,
            plen,
        });
    }
    need("arp body", d, ARP_LEN)?;
    Ok(ArpInfo {
        op: be16(d, 6),
        sha: mac(d, 8),
        spa: ipv4(d, 14),
        tha: mac(d, 18),
        tpa: ipv4(d, 24),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{arp_reply, arp_request, tcp_flags, PacketBuilder, ETH_P_IPV6};

    const A: Mac = [0x02, 0, 0, 0, 0, 0x0a];
    const B: Mac = [0x02, 0, 0, 0, 0, 0x0b];
    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

    fn base() -> PacketBuilder {
        PacketBuilder::new(A, B).ipv4(SRC, DST)
    }

    #[test]
    fn tcp_round_trip() {
        let frame = base()
            .ttl(17)
            .ip_id(0x4242)
            .tcp(40000, 443, tcp_flags::SYN | tcp_flags::ACK)
            .tcp_seq_ack(7, 8)
            .payload(b"data")
            .build();
        let p = parse(&frame).expect("valid frame");
        assert_eq!(p.dst_mac, B);
        assert_eq!(p.src_mac, A);
        assert_eq!(p.ethertype, ETH_P_IP);
        assert_eq!(p.arp, None);
        let ip = p.ipv4.expect("ipv4");
        assert_eq!(
            ip,
            Ipv4Info {
                src: SRC,
                dst: DST,
                ttl: 17,
                proto: IPPROTO_TCP,
                header_len: 20,
                total_len: 44,
                id: 0x4242,
                frag_offset: 0,
                more_fragments: false,
                checksum: be16(&frame, 24),
                checksum_ok: true,
            }
        );
        assert_eq!(
            p.l4,
            Some(L4Info::Tcp {
                sport: 40000,
                dport: 443,
                flags: tcp_flags::SYN | tcp_flags::ACK,
                checksum_ok: true,
            })
        );
    }

    #[test]
    fn udp_and_icmp_round_trip() {
        let p = parse(&base().udp(53, 5353).payload(&[1; 33]).build()).expect("udp");
        assert_eq!(
            p.l4,
            Some(L4Info::Udp {
                sport: 53,
                dport: 5353,
                checksum_ok: true
            })
        );
        let p = parse(&base().icmp_echo(false, 9, 10).payload(b"ping").build()).expect("icmp");
        assert_eq!(
            p.l4,
            Some(L4Info::Icmp {
                icmp_type: 0,
                code: 0,
                id: 9,
                seq: 10,
                checksum_ok: true
            })
        );
    }

    #[test]
    fn icmp_error_round_trip() {
        let inner = base().udp(1, 2).payload(&[0; 20]).build_ip();
        let p = parse(&base().icmp_error(11, 0, &inner[..28]).build()).expect("icmp error");
        assert_eq!(
            p.l4,
            Some(L4Info::Icmp {
                icmp_type: 11,
                code: 0,
                id: 0,
                seq: 0,
                checksum_ok: true
            })
        );
    }

    #[test]
    fn corrupted_checksums_are_reported() {
        let mut frame = base().tcp(1, 2, tcp_flags::ACK).payload(b"abc").build();
        let l = base().tcp(1, 2, tcp_flags::ACK).payload(b"abc").layout();
        // Flip a payload byte: L4 checksum breaks, IP header checksum does not.
        frame[l.payload_start] ^= 0xff;
        let p = parse(&frame).expect("parse");
        assert!(p.ipv4.as_ref().expect("ipv4").checksum_ok);
        assert!(matches!(
            p.l4,
            Some(L4Info::Tcp {
                checksum_ok: false,
                ..
            })
        ));
        // Rewrite the TTL without fixing the header checksum.
        frame[l.l3_start + 8] -= 1;
        let p = parse(&frame).expect("parse");
        assert!(!p.ipv4.expect("ipv4").checksum_ok);

        let mut udp = base().udp(1, 2).payload(b"abc").build();
        udp[l.l3_start + 27] ^= 1;
        assert!(matches!(
            parse(&udp).expect("parse").l4,
            Some(L4Info::Udp {
                checksum_ok: false,
                ..
            })
        ));
        // Zero checksum = "not computed", which is valid for UDP over IPv4.
        udp[l.l3_start + 26..l.l3_start + 28].copy_from_slice(&[0, 0]);
        assert!(matches!(
            parse(&udp).expect("parse").l4,
            Some(L4Info::Udp {
                checksum_ok: true,
                ..
            })
        ));
    }

    #[test]
    fn fragments() {
        let later = base()
            .ip_id(77)
            .udp(1, 2)
            .fragment(2960, false)
            .payload(&[5; 10])
            .build();
        let p = parse(&later).expect("fragment");
        let ip = p.ipv4.expect("ipv4");
        assert_eq!(ip.frag_offset, 2960);
        assert!(!ip.more_fragments);
        assert_eq!(ip.proto, IPPROTO_UDP);
        assert_eq!(ip.total_len, 30);
        assert_eq!(p.l4, None);

        let first = base().udp(1, 2).fragment(0, true).payload(&[5; 16]).build();
        let p = parse(&first).expect("first fragment");
        assert!(p.ipv4.expect("ipv4").more_fragments);
        assert!(matches!(
            p.l4,
            Some(L4Info::Udp {
                sport: 1,
                dport: 2,
                ..
            })
        ));
    }

    #[test]
    fn options_round_trip() {
        let frame = base()
            .ip_options(&[0x94, 0x04, 0, 0, 0x01])
            .tcp(1, 2, 0)
            .build();
        let p = parse(&frame).expect("options");
        let ip = p.ipv4.expect("ipv4");
        assert_eq!(ip.header_len, 28);
        assert!(ip.checksum_ok);
        assert!(matches!(
            p.l4,
            Some(L4Info::Tcp {
                checksum_ok: true,
                ..
            })
        ));
    }

    #[test]
    fn arp_round_trip() {
        let p = parse(&arp_request(A, SRC, DST)).expect("request");
        assert_eq!(p.dst_mac, [0xff; 6]);
        assert_eq!(p.ethertype, ETH_P_ARP);
        assert_eq!(p.ipv4, None);
        assert_eq!(
            p.arp,
            Some(ArpInfo {
                op: 1,
                sha: A,
                spa: SRC,
                tha: [0; 6],
                tpa: DST
            })
        );
        let p = parse(&arp_reply(B, A, DST, SRC)).expect("reply");
        assert_eq!(
            p.arp,
            Some(ArpInfo {
                op: 2,
                sha: B,
                spa: DST,
                tha: A,
                tpa: SRC
            })
        );
        assert_eq!((p.src_mac, p.dst_mac), (B, A));
    }

    #[test]
    fn other_ethertype_has_only_ethernet_fields() {
        let frame = PacketBuilder::new(A, B)
            .ethertype(ETH_P_IPV6)
            .payload(&[0x60; 40])
            .build();
        let p = parse(&frame).expect("ipv6 frame");
        assert_eq!(p.ethertype, ETH_P_IPV6);
        assert_eq!((p.ipv4, p.arp, p.l4), (None, None, None));
    }

    #[test]
    fn trailing_padding_is_ignored() {
        let mut frame = base().udp(1, 2).build();
        frame.resize(60, 0);
        let p = parse(&frame).expect("padded");
        assert_eq!(p.ipv4.expect("ipv4").total_len, 28);
        assert!(matches!(
            p.l4,
            Some(L4Info::Udp {
                checksum_ok: true,
                ..
            })
        ));
    }

    #[test]
    fn truncation_inside_each_header() {
        let b = base()
            .ip_options(&[1, 1, 1, 1])
            .tcp(1, 2, tcp_flags::SYN)
            .payload(b"xyz");
        let frame = b.build();
        let l = b.layout();
        let l4 = l.l4_start.expect("tcp emitted");
        let what = |cut: usize| match parse(&frame[..cut]) {
            Err(ParseError::Truncated { what, need, have }) => {
                assert!(need > have, "cut {cut}: need {need} <= have {have}");
                what
            }
            other => panic!("cut {cut}: expected Truncated, got {other:?}"),
        };
        assert_eq!(what(l.l3_start - 1), "ethernet header");
        assert_eq!(what(l.l3_start + 10), "ipv4 header");
        assert_eq!(what(l.l3_start + 22), "ipv4 options");
        // The IP total length covers the TCP header, so cutting inside it
        // means the datagram itself is short.
        assert_eq!(what(l4 + 10), "ipv4 datagram");
        assert_eq!(what(l.total - 1), "ipv4 datagram");
        assert!(parse(&frame[..l.total]).is_ok());

        let arp = arp_request(A, SRC, DST);
        assert_eq!(what_arp(&arp[..20]), "arp header");
        assert_eq!(what_arp(&arp[..30]), "arp body");
    }

    fn what_arp(frame: &[u8]) -> &'static str {
        match parse(frame) {
            Err(ParseError::Truncated { what, .. }) => what,
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn l4_truncation_within_total_length() {
        // IP total length shorter than a TCP header: the datagram is
        // complete but its L4 header is not.
        let frame = base().l4_raw(IPPROTO_TCP, &[0; 12]).build();
        assert_eq!(
            parse(&frame),
            Err(ParseError::Truncated {
                what: "tcp header",
                need: 20,
                have: 12
            })
        );
        let frame = base().l4_raw(IPPROTO_UDP, &[0; 4]).build();
        assert!(matches!(
            parse(&frame),
            Err(ParseError::Truncated {
                what: "udp header",
                ..
            })
        ));
        let frame = base().l4_raw(IPPROTO_ICMP, &[8, 0]).build();
        assert!(matches!(
            parse(&frame),
            Err(ParseError::Truncated {
                what: "icmp header",
                ..
            })
        ));
        // Unknown protocols are not decoded at all.
        let p = parse(&base().l4_raw(47, &[1, 2]).build()).expect("gre-ish");
        assert_eq!(p.l4, None);
        assert_eq!(p.ipv4.expect("ipv4").proto, 47);
    }

    #[test]
    fn malformed_headers() {
        let good = base().tcp(1, 2, 0).build();
        let mut f = good.clone();
        f[14] = 0x65;
        assert_eq!(parse(&f), Err(ParseError::BadVersion(6)));
        let mut f = good.clone();
        f[14] = 0x44;
        assert_eq!(parse(&f), Err(ParseError::BadIhl(4)));
        let mut f = good.clone();
        f[16..18].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            parse(&f),
            Err(ParseError::BadTotalLength {
                total_len: 19,
                header_len: 20
            })
        );
        let mut f = good.clone();
        f[34 + 12] = 0x40;
        assert_eq!(parse(&f), Err(ParseError::BadTcpDataOffset(4)));
        let mut f = good;
        f[34 + 12] = 0x60;
        assert!(matches!(
            parse(&f),
            Err(ParseError::Truncated {
                what: "tcp options",
                need: 24,
                have: 20
            })
        ));

        let mut u = base().udp(1, 2).payload(&[0; 4]).build();
        u[38..40].copy_from_slice(&13u16.to_be_bytes());
        assert_eq!(
            parse(&u),
            Err(ParseError::BadUdpLength {
                len: 13,
                available: 12
            })
        );

        let mut a = arp_request(A, SRC, DST);
        a[14 + 5] = 16;
        assert_eq!(
            parse(&a),
            Err(ParseError::UnsupportedArp {
                htype: 1,
                ptype: ETH_P_IP,
                hlen: 6,
                plen: 16
            })
        );
    }

    #[test]
    fn errors_display() {
        let e = ParseError::Truncated {
            what: "ipv4 header",
            need: 20,
            have: 3,
        };
        assert_eq!(
            e.to_string(),
            "truncated ipv4 header: need 20 bytes, have 3"
        );
    }
}
