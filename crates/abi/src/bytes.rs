//! Network-byte-order integers: the byte order lives in the type, not in a comment.

use std::fmt;

/// A 16-bit value stored in network byte order (C `__be16`).
#[repr(transparent)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Be16(u16);

/// A 32-bit value stored in network byte order (C `__be32`).
#[repr(transparent)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Be32(u32);

impl Be16 {
    /// From a host-order value.
    pub const fn new(host: u16) -> Self {
        Self(host.to_be())
    }
    /// The host-order value.
    pub const fn get(self) -> u16 {
        u16::from_be(self.0)
    }
}

impl Be32 {
    /// From a host-order value.
    pub const fn new(host: u32) -> Self {
        Self(host.to_be())
    }
    /// The host-order value.
    pub const fn get(self) -> u32 {
        u32::from_be(self.0)
    }
}

impl From<std::net::Ipv4Addr> for Be32 {
    fn from(ip: std::net::Ipv4Addr) -> Self {
        Self::new(u32::from(ip))
    }
}

impl From<Be32> for std::net::Ipv4Addr {
    fn from(v: Be32) -> Self {
        std::net::Ipv4Addr::from(v.get())
    }
}

impl fmt::Debug for Be16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Be16({})", self.get())
    }
}

impl fmt::Debug for Be32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Be32({})", std::net::Ipv4Addr::from(self.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_network_order() {
        let port = Be16::new(0x1234);
        // SAFETY-free check of the in-memory bytes: big-endian whatever the host.
        let raw: [u8; 2] = unsafe { std::mem::transmute(port) };
        assert_eq!(raw, [0x12, 0x34]);
        assert_eq!(port.get(), 0x1234);
        let ip = Be32::from(std::net::Ipv4Addr::new(198, 18, 0, 1));
        let raw: [u8; 4] = unsafe { std::mem::transmute(ip) };
        assert_eq!(raw, [198, 18, 0, 1]);
    }
}
