//! Packet builder and parser for datapath tests and benchmarks: byte-exact frames in, parsed views out.
//!
//! Everything here is pure computation over byte slices (no sockets, no
//! syscalls), so the same code produces the `BPF_PROG_TEST_RUN` input frame,
//! the byte-exact frame the datapath is expected to emit, and the parsed view
//! used in assertions on what it actually emitted.
//!
//! ```
//! use pilus_packet::{parse, tcp_flags, Ipv4Addr, L4Info, PacketBuilder};
//!
//! let frame = PacketBuilder::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
//!     .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
//!     .tcp(1234, 80, tcp_flags::SYN)
//!     .build();
//! let parsed = parse(&frame).unwrap();
//! assert!(parsed.ipv4.unwrap().checksum_ok);
//! assert!(matches!(parsed.l4, Some(L4Info::Tcp { dport: 80, checksum_ok: true, .. })));
//! ```

mod arp;
mod build;
mod checksum;
mod parse;

pub use arp::{arp_reply, arp_request};
pub use build::{Layout, PacketBuilder};
pub use checksum::{checksum, l4_checksum};
pub use parse::{parse, ArpInfo, Ipv4Info, L4Info, ParseError, Parsed};
pub use std::net::Ipv4Addr;

/// An Ethernet MAC address in wire order.
pub type Mac = [u8; 6];

/// The Ethernet broadcast address (destination of ARP requests).
pub const BROADCAST_MAC: Mac = [0xff; 6];

/// Length of an untagged Ethernet II header.
pub const ETH_HLEN: usize = 14;

/// Ethertype of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// Ethertype of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// Ethertype of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// ICMP echo reply type.
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP destination unreachable type.
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP echo request type.
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP time exceeded type.
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// Destination-unreachable code "fragmentation needed and DF set".
pub const ICMP_FRAG_NEEDED: u8 = 4;

/// TCP header flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}
