//! The protocol numbers the decoder reads (Ethernet types, IP protocols,
//! ICMP types, TCP flags). They are the RFCs', fixed for good; they are
//! written here so that the agent, which decodes, does not link the test
//! packet builder for a dozen constants. A test checks each against
//! pilus-packet's, which builds the frames the decoder is tested on.

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;

/// TCP header flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

#[cfg(test)]
mod tests {
    /// Every constant equals the packet builder's, so the decoder reads
    /// what the tests' frames (and the kernel's) carry.
    #[test]
    fn the_same_numbers_as_pilus_packet() {
        use pilus_packet as p;
        assert_eq!(super::ETH_HLEN, p::ETH_HLEN);
        assert_eq!(
            [super::ETH_P_IP, super::ETH_P_ARP, super::ETH_P_IPV6],
            [p::ETH_P_IP, p::ETH_P_ARP, p::ETH_P_IPV6]
        );
        assert_eq!(
            [super::IPPROTO_ICMP, super::IPPROTO_TCP, super::IPPROTO_UDP],
            [p::IPPROTO_ICMP, p::IPPROTO_TCP, p::IPPROTO_UDP]
        );
        assert_eq!(
            [
                super::ICMP_ECHO_REPLY,
                super::ICMP_DEST_UNREACH,
                super::ICMP_ECHO_REQUEST,
                super::ICMP_TIME_EXCEEDED
            ],
            [
                p::ICMP_ECHO_REPLY,
                p::ICMP_DEST_UNREACH,
                p::ICMP_ECHO_REQUEST,
                p::ICMP_TIME_EXCEEDED
            ]
        );
        use super::tcp_flags as f;
        use pilus_packet::tcp_flags as g;
        assert_eq!(
            [
                f::FIN,
                f::SYN,
                f::RST,
                f::PSH,
                f::ACK,
                f::URG,
                f::ECE,
                f::CWR
            ],
            [
                g::FIN,
                g::SYN,
                g::RST,
                g::PSH,
                g::ACK,
                g::URG,
                g::ECE,
                g::CWR
            ]
        );
    }
}
