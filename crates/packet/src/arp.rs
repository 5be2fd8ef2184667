//! ARP request/reply frames (Ethernet + IPv4 ARP only).

use std::net::Ipv4Addr;

use crate::{Mac, BROADCAST_MAC, ETH_HLEN, ETH_P_ARP, ETH_P_IP};

/// Length of an Ethernet/IPv4 ARP body.
pub(crate) const ARP_LEN: usize = 28;
/// ARP hardware type for Ethernet.
pub(crate) const ARPHRD_ETHER: u16 = 1;
/// ARP opcode: request.
pub const ARP_OP_REQUEST: u16 = 1;
/// ARP opcode: reply.
pub const ARP_OP_REPLY: u16 = 2;

fn arp_frame(
    eth_src: Mac,
    eth_dst: Mac,
    op: u16,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + ARP_LEN);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&ARPHRD_ETHER.to_be_bytes());
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    f.push(6); // hardware address length
    f.push(4); // protocol address length
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// ARP request "who has `target_ip`? tell `sender_ip`", broadcast from
/// `src_mac`, with a zero target hardware address.
pub fn arp_request(src_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        src_mac,
        BROADCAST_MAC,
        ARP_OP_REQUEST,
        src_mac,
        sender_ip,
        [0; 6],
        target_ip,
    )
}

/// ARP reply "`sender_ip` is at `src_mac`", unicast to `dst_mac`
/// (sha = `src_mac`, tha = `dst_mac`).
pub fn arp_reply(src_mac: Mac, dst_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        src_mac,
        dst_mac,
        ARP_OP_REPLY,
        src_mac,
        sender_ip,
        dst_mac,
        target_ip,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_byte_exact() {
        let mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
        let f = arp_request(mac, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        #[rustfmt::skip]
        let expected = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x08, 0x06,
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 10, 0, 0, 1,
            0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
        ];
        assert_eq!(f, expected);
    }

    #[test]
    fn reply_addresses() {
        let a = [0x02, 0, 0, 0, 0, 1];
        let b = [0x02, 0, 0, 0, 0, 2];
        let f = arp_reply(a, b, Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(f.len(), 42);
        assert_eq!(f[0..6], b);
        assert_eq!(f[6..12], a);
        assert_eq!(f[20..22], [0, 2]);
        assert_eq!(f[22..28], a);
        assert_eq!(f[28..32], [10, 0, 0, 2]);
        assert_eq!(f[32..38], b);
        assert_eq!(f[38..42], [10, 0, 0, 1]);
    }
}
