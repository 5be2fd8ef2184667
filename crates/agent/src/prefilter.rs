//! The XDP prefilter behind the API: a request's CIDRs checked whole before
//! the deny list is touched, and the list as `pilus prefilter list` shows it.

use ipnet::Ipv4Net;
use pilus_api_types as api;
use pilus_datapath::{Prefilter, PrefilterError};
use std::net::IpAddr;

/// Why a request was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The client's fault (400).
    #[error("{0}")]
    Invalid(String),
    /// Not on the list (404).
    #[error("{0}")]
    Missing(String),
    /// The datapath failed (500).
    #[error("{0}")]
    Datapath(String),
}

/// The deny list of this agent and the device it filters on.
pub struct PrefilterApi {
    list: Prefilter,
    device: Option<String>,
}

impl PrefilterApi {
    pub fn new(list: Prefilter, device: Option<String>) -> PrefilterApi {
        PrefilterApi { list, device }
    }

    pub fn list(&self) -> Result<api::PrefilterList, RequestError> {
        let entries = self
            .list
            .list()
            .map_err(|e| RequestError::Datapath(pilus_datapath::error_chain(&e)))?;
        Ok(api::PrefilterList {
            device: self.device.clone(),
            entries: entries
                .into_iter()
                .map(|e| api::PrefilterEntry {
                    cidr: e.cidr.to_string(),
                    packets: e.packets,
                    bytes: e.bytes,
                })
                .collect(),
            max_entries: pilus_abi::consts::PREFILTER_MAX,
        })
    }

    /// Adds every CIDR of the request, or none.
    pub fn add(&self, change: &api::PrefilterChange) -> Result<(), RequestError> {
        let cidrs = parse(&change.cidrs)?;
        self.list.add(&cidrs).map_err(refused)
    }

    /// Removes every CIDR of the request, or none.
    pub fn remove(&self, change: &api::PrefilterChange) -> Result<(), RequestError> {
        let cidrs = parse(&change.cidrs)?;
        self.list.remove(&cidrs).map_err(refused)
    }
}

fn refused(e: PrefilterError) -> RequestError {
    match e {
        PrefilterError::Missing { .. } => RequestError::Missing(e.to_string()),
        PrefilterError::Datapath(d) => RequestError::Datapath(pilus_datapath::error_chain(&d)),
        other => RequestError::Invalid(other.to_string()),
    }
}

/// The request's CIDRs, each an IPv4 network written as its network
/// address (`198.19.0.0/16`; a bare address is its /32). One that is not
/// refuses the whole request: `198.19.0.1/16` may mean the /16 or the
/// address, and guessing wrong filters what was not meant.
pub fn parse(cidrs: &[String]) -> Result<Vec<Ipv4Net>, RequestError> {
    if cidrs.is_empty() {
        return Err(RequestError::Invalid(
            "no CIDR given (\"cidrs\" is empty): nothing would change".into(),
        ));
    }
    cidrs.iter().map(|c| parse_one(c)).collect()
}

fn parse_one(text: &str) -> Result<Ipv4Net, RequestError> {
    let bad = |why: String| RequestError::Invalid(format!("prefilter CIDR {text:?}: {why}"));
    let t = text.trim();
    let net = match t.parse::<ipnet::IpNet>() {
        Ok(ipnet::IpNet::V4(n)) => n,
        Ok(ipnet::IpNet::V6(_)) => return Err(bad("IPv6 is not filtered yet".into())),
        Err(_) => match t.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Ipv4Net::from(a),
            Ok(IpAddr::V6(_)) => return Err(bad("IPv6 is not filtered yet".into())),
            Err(_) => return Err(bad("not an IPv4 CIDR (want e.g. 198.19.0.0/16)".into())),
        },
    };
    if net.network() != net.addr() {
        return Err(bad(format!(
            "has host bits set; the network is {}, the address alone is {}/32",
            net.trunc(),
            net.addr()
        )));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn networks_and_addresses_are_read() {
        let got = parse(&strings(&[
            "198.19.0.0/16",
            "198.19.7.7",
            " 198.18.0.0/15 ",
        ]))
        .unwrap();
        let want: Vec<Ipv4Net> = ["198.19.0.0/16", "198.19.7.7/32", "198.18.0.0/15"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn one_bad_cidr_refuses_the_request_with_its_reason() {
        for (input, want) in [
            (
                "198.19.0.1/16",
                "host bits set; the network is 198.19.0.0/16",
            ),
            ("2001:db8::/32", "IPv6"),
            ("198.19.0.0/33", "not an IPv4 CIDR"),
            ("", "not an IPv4 CIDR"),
            ("everything", "not an IPv4 CIDR"),
        ] {
            let e = parse(&strings(&["198.19.1.0/24", input])).unwrap_err();
            assert!(
                matches!(&e, RequestError::Invalid(m) if m.contains(want)),
                "{input:?}: {e}"
            );
        }
        let e = parse(&[]).unwrap_err();
        assert!(e.to_string().contains("nothing would change"), "{e}");
    }
}
