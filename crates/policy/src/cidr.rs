//! IPv4 prefixes as policy documents write them (`198.18.0.0/24`): ipnet's
//! [`Ipv4Net`], read strictly. Kubernetes refuses an ipBlock with host bits
//! set, and a prefix that is not its own network is almost always a typo,
//! so [`parse`] does too (ipnet's `FromStr` would keep the host bits); a
//! bare address is a /32, as Cilium reads `toCIDR: [198.18.0.1]`.

pub use ipnet::Ipv4Net as Cidr;
use std::net::Ipv4Addr;

/// Parses `a.b.c.d/len` (or a bare address, a /32) with no host bits set.
pub fn parse(s: &str) -> Result<Cidr, String> {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 prefix (IPv6 is not supported)"))?;
    let len: u8 = l
        .parse()
        .map_err(|_| format!("{s:?} has an invalid prefix length"))?;
    let c = Cidr::new(addr, len).map_err(|_| format!("prefix length {len} is longer than 32"))?;
    if c.network() != addr {
        return Err(format!(
            "{addr}/{len} has host bits set (the network is {}/{len})",
            c.network()
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contain() {
        let c = parse("198.18.0.0/16").unwrap();
        assert!(c.contains(&parse("198.18.4.0/24").unwrap()));
        assert!(!c.contains(&parse("198.0.0.0/8").unwrap()));
        assert!(c.contains(&"198.18.200.1".parse::<Ipv4Addr>().unwrap()));
        assert_eq!(parse("198.18.0.1").unwrap().prefix_len(), 32);
        assert!(parse("198.18.0.1/16").unwrap_err().contains("host bits"));
        assert!(parse("198.18.0.0/33").is_err());
        assert!(parse("fd00::/8").is_err());
        assert!(parse("0.0.0.0/0").unwrap().contains(&c));
        assert_eq!(c.to_string(), "198.18.0.0/16");
    }
}
