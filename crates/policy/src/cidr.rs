//! IPv4 prefixes as policy documents write them (`198.18.0.0/24`).

use serde::{Deserialize, Serialize};
use std::{fmt, net::Ipv4Addr, str::FromStr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Cidr {
    /// `addr` must have no bits set beyond `len` (as Kubernetes validates
    /// ipBlock); a bare address is a /32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Cidr, String> {
        if len > 32 {
            return Err(format!("prefix length {len} is longer than 32"));
        }
        let c = Cidr { addr, len };
        if c.network() != addr {
            return Err(format!(
                "{addr}/{len} has host bits set (the network is {}/{len})",
                c.network()
            ));
        }
        Ok(c)
    }

    fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn contains_ip(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether `other` lies entirely inside this prefix.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.len >= self.len && self.contains_ip(other.addr)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 prefix (IPv6 is not supported)"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("{s:?} has an invalid prefix length"))?;
        Cidr::new(addr, len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contain() {
        let c: Cidr = "198.18.0.0/16".parse().unwrap();
        assert!(c.contains(&"198.18.4.0/24".parse().unwrap()));
        assert!(!c.contains(&"198.0.0.0/8".parse().unwrap()));
        assert!(c.contains_ip("198.18.200.1".parse().unwrap()));
        assert_eq!("198.18.0.1".parse::<Cidr>().unwrap().len, 32);
        assert!("198.18.0.1/16"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("host bits"));
        assert!("198.18.0.0/33".parse::<Cidr>().is_err());
        assert!("fd00::/8".parse::<Cidr>().is_err());
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(&c));
    }
}
