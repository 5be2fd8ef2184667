//! Host-scope IPAM: addresses for endpoints from the node's pod CIDR. The
//! network address, the gateway (router) and the broadcast address are never
//! handed out.

use std::{collections::BTreeSet, net::Ipv4Addr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("the pod CIDR {cidr} has no free address left")]
    Exhausted { cidr: String },
    #[error("{ip} is outside the pod CIDR {cidr}")]
    Outside { ip: Ipv4Addr, cidr: String },
    #[error("{ip} is already allocated")]
    InUse { ip: Ipv4Addr },
}

pub struct Ipam {
    network: u32,
    size: u32,
    router: Ipv4Addr,
    used: BTreeSet<u32>,
    /// Where the next search starts: addresses are not reused right away,
    /// so a stale conntrack entry of a deleted pod rarely meets a new one.
    next: u32,
}

impl Ipam {
    pub fn new(network: Ipv4Addr, prefix_len: u8, router: Ipv4Addr) -> Ipam {
        Ipam {
            network: u32::from(network),
            size: 1u32 << (32 - u32::from(prefix_len)),
            router,
            used: BTreeSet::new(),
            next: 1,
        }
    }

    fn cidr(&self) -> String {
        format!(
            "{}/{}",
            Ipv4Addr::from(self.network),
            32 - self.size.trailing_zeros()
        )
    }

    fn usable(&self, off: u32) -> bool {
        off != 0 && off != self.size - 1 && self.network + off != u32::from(self.router)
    }

    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        for i in 0..self.size {
            let off = (self.next + i) % self.size;
            if self.usable(off) && !self.used.contains(&off) {
                self.used.insert(off);
                self.next = (off + 1) % self.size;
                return Ok(Ipv4Addr::from(self.network + off));
            }
        }
        Err(IpamError::Exhausted { cidr: self.cidr() })
    }

    /// Marks an address as taken (restoring state after a restart).
    pub fn claim(&mut self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let off = u32::from(ip).wrapping_sub(self.network);
        if off >= self.size || !self.usable(off) {
            return Err(IpamError::Outside {
                ip,
                cidr: self.cidr(),
            });
        }
        if !self.used.insert(off) {
            return Err(IpamError::InUse { ip });
        }
        self.next = self.next.max(off + 1) % self.size;
        Ok(())
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip).wrapping_sub(self.network));
    }

    pub fn used(&self) -> usize {
        self.used.len()
    }

    /// Addresses endpoints can get in total.
    pub fn capacity(&self) -> usize {
        (0..self.size).filter(|&o| self.usable(o)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_network_router_broadcast_and_exhausts() {
        let mut ipam = Ipam::new(
            Ipv4Addr::new(198, 18, 0, 0),
            29,
            Ipv4Addr::new(198, 18, 0, 1),
        );
        assert_eq!(ipam.capacity(), 5);
        let got: Vec<_> = (0..5).map(|_| ipam.allocate().unwrap()).collect();
        assert_eq!(got[0], Ipv4Addr::new(198, 18, 0, 2));
        assert!(!got.contains(&Ipv4Addr::new(198, 18, 0, 7)));
        assert!(matches!(ipam.allocate(), Err(IpamError::Exhausted { .. })));
        ipam.release(got[2]);
        assert_eq!(ipam.allocate().unwrap(), got[2]);
        assert!(matches!(ipam.claim(got[0]), Err(IpamError::InUse { .. })));
        assert!(matches!(
            ipam.claim(Ipv4Addr::new(198, 19, 0, 2)),
            Err(IpamError::Outside { .. })
        ));
    }
}
