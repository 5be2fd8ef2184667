//! rtnetlink message encoding and decoding: a header, a fixed family
//! struct, then type-length-value attributes padded to 4 bytes, which may
//! nest. No I/O here, so every layout is checked by unit tests.

use std::net::Ipv4Addr;

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_GETROUTE: u16 = 26;

pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_LINKINFO: u16 = 18;
pub const IFLA_NET_NS_FD: u16 = 28;
pub const IFLA_INFO_KIND: u16 = 1;
pub const IFLA_INFO_DATA: u16 = 2;
pub const VETH_INFO_PEER: u16 = 1;

pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;

pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_TABLE: u16 = 15;

pub const RT_TABLE_MAIN: u8 = 254;
pub const RTPROT_STATIC: u8 = 4;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RTN_UNICAST: u8 = 1;

pub const AF_INET: u8 = 2;
pub const IFF_UP: u32 = 0x1;

/// Size of `struct ifinfomsg`.
pub const IFINFOMSG_LEN: usize = 16;
/// Size of `struct ifaddrmsg`.
pub const IFADDRMSG_LEN: usize = 8;
/// Size of `struct rtmsg` (eight u8 fields, then `rtm_flags`).
pub const RTMSG_LEN: usize = 12;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One request being built: header first, its length patched on `finish`.
pub struct Builder {
    buf: Vec<u8>,
    /// Offsets of attributes still open for nesting.
    open: Vec<usize>,
}

impl Builder {
    pub fn new(kind: u16, flags: u16, seq: u32) -> Builder {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        Builder {
            buf,
            open: Vec::new(),
        }
    }

    /// `struct ifinfomsg`.
    pub fn ifinfo(&mut self, index: i32, flags: u32, change: u32) -> &mut Self {
        self.buf.extend_from_slice(&[0, 0, 0, 0]); // family, pad, type
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
        self
    }

    /// `struct ifaddrmsg` for IPv4.
    pub fn ifaddr(&mut self, prefix_len: u8, scope: u8, index: u32) -> &mut Self {
        self.buf.extend_from_slice(&[AF_INET, prefix_len, 0, scope]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self
    }

    /// `struct rtmsg` for an IPv4 unicast route in the main table.
    pub fn rtmsg(&mut self, dst_len: u8, scope: u8) -> &mut Self {
        self.buf.extend_from_slice(&[
            AF_INET,
            dst_len,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_STATIC,
            scope,
            RTN_UNICAST,
        ]);
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // rtm_flags
        self
    }

    /// A family struct of `len` zero bytes with the family set (dumps).
    pub fn family(&mut self, family: u8, len: usize) -> &mut Self {
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        self.buf[start] = family;
        self
    }

    pub fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// A NUL-terminated string attribute (interface names, link kinds).
    pub fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    pub fn attr_u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    pub fn attr_ipv4(&mut self, kind: u16, ip: Ipv4Addr) -> &mut Self {
        self.attr(kind, &ip.octets())
    }

    /// Opens a nested attribute; close it with [`Builder::end`].
    pub fn begin(&mut self, kind: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self
    }

    pub fn end(&mut self) -> &mut Self {
        let start = self.open.pop().expect("end without begin");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// Raw bytes inside the current position (a nested family struct).
    pub fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        assert!(self.open.is_empty(), "unclosed nested attribute");
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        std::mem::take(&mut self.buf)
    }
}

/// A received message: its type, flags, sequence and body after the header.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub body: &'a [u8],
}

/// Splits a datagram into messages; `None` if a length is inconsistent.
pub fn messages(mut buf: &[u8]) -> Option<Vec<Message<'_>>> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        out.push(Message {
            kind: u16::from_ne_bytes(buf[4..6].try_into().ok()?),
            flags: u16::from_ne_bytes(buf[6..8].try_into().ok()?),
            seq: u32::from_ne_bytes(buf[8..12].try_into().ok()?),
            body: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Some(out)
}

/// The errno of an `NLMSG_ERROR` body (0 is an acknowledgement).
pub fn error_code(body: &[u8]) -> Option<i32> {
    Some(-i32::from_ne_bytes(body.get(0..4)?.try_into().ok()?))
}

/// Iterates `(type, payload)` over attributes; stops at a malformed one.
pub fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff; // NLA_F_NESTED etc.
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((kind, payload))
    })
}

/// A NUL-terminated string payload.
pub fn attr_string(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

pub fn attr_ipv4(payload: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = payload.get(0..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

pub fn attr_u32(payload: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_and_padding() {
        let msg = Builder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, 7)
            .ifinfo(0, 0, 0)
            .attr_str(IFLA_IFNAME, "eth0")
            .finish();
        // 16 header + 16 ifinfomsg + (4 + 5 -> 12) attribute.
        assert_eq!(msg.len(), 44);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 44);
        assert_eq!(
            u16::from_ne_bytes(msg[4..6].try_into().unwrap()),
            RTM_GETLINK
        );
        assert_eq!(u32::from_ne_bytes(msg[8..12].try_into().unwrap()), 7);
        let a: Vec<_> = attrs(&msg[32..]).collect();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, IFLA_IFNAME);
        assert_eq!(attr_string(a[0].1), "eth0");
    }

    #[test]
    fn nested_veth_peer() {
        let msg = Builder::new(RTM_NEWLINK, NLM_F_REQUEST, 1)
            .ifinfo(0, 0, 0)
            .attr_str(IFLA_IFNAME, "lxc0123")
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER)
            .raw(&[0; IFINFOMSG_LEN])
            .attr_str(IFLA_IFNAME, "eth0")
            .attr_u32(IFLA_NET_NS_FD, 9)
            .end()
            .end()
            .end()
            .finish();
        let top: Vec<_> = attrs(&msg[NLMSG_HDRLEN + IFINFOMSG_LEN..]).collect();
        assert_eq!(top.len(), 2);
        let (kind, linkinfo) = top[1];
        assert_eq!(kind, IFLA_LINKINFO);
        let li: Vec<_> = attrs(linkinfo).collect();
        assert_eq!(attr_string(li[0].1), "veth");
        let data: Vec<_> = attrs(li[1].1).collect();
        assert_eq!(data[0].0, VETH_INFO_PEER);
        let peer: Vec<_> = attrs(&data[0].1[IFINFOMSG_LEN..]).collect();
        assert_eq!(attr_string(peer[0].1), "eth0");
        assert_eq!(attr_u32(peer[1].1), Some(9));
        // The outer length covers everything.
        assert_eq!(
            msg.len(),
            u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize
        );
    }

    #[test]
    fn splits_a_datagram() {
        let mut d = Builder::new(RTM_NEWLINK, NLM_F_MULTI, 3)
            .ifinfo(5, IFF_UP, 0)
            .finish();
        let mut done = Builder::new(NLMSG_DONE, NLM_F_MULTI, 3)
            .raw(&[0; 4])
            .finish();
        d.append(&mut done);
        let m = messages(&d).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].kind, RTM_NEWLINK);
        assert_eq!(m[0].body.len(), IFINFOMSG_LEN);
        assert_eq!(m[1].kind, NLMSG_DONE);
        // A length past the end is refused, not read.
        d[0] = 200;
        assert!(messages(&d).is_none());
    }

    #[test]
    fn error_codes() {
        assert_eq!(error_code(&(-17i32).to_ne_bytes()), Some(17));
        assert_eq!(error_code(&0i32.to_ne_bytes()), Some(0));
        assert_eq!(error_code(&[1, 2]), None);
    }
}
