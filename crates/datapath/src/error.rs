//! The datapath crate's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the BPF object {object}")]
    Load {
        object: &'static str,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("program {name} is missing from the object")]
    MissingProgram { name: &'static str },
    #[error("map {name} is missing from the object")]
    MissingMap { name: &'static str },
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("{call} failed")]
    Syscall {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("bpffs at {path}")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("attaching {program} to {ifname} ({attach})")]
    Attach {
        program: &'static str,
        ifname: String,
        attach: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("pinning the link of {program} on {ifname} at {path}")]
    PinLink {
        program: &'static str,
        ifname: String,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("pinned links need a datapath loaded with a pin directory")]
    NotPinned,
    #[error("invalid BTF in {what}: {reason}")]
    Btf { what: &'static str, reason: String },
    #[error("invalid pod CIDR {network}/{prefix_len}: {reason}")]
    PodCidr {
        network: std::net::Ipv4Addr,
        prefix_len: u8,
        reason: &'static str,
    },
    #[error("endpoint address {ip} is outside the node's pod CIDR {cidr}")]
    OutsidePodCidr {
        ip: std::net::Ipv4Addr,
        cidr: String,
    },
    #[error("invalid policy entry")]
    PortRange(#[from] pilus_abi::PortRangeError),
}

impl Error {
    pub(crate) fn map(name: &'static str, source: aya::maps::MapError) -> Self {
        Error::Map {
            name,
            source: Box::new(source),
        }
    }
    pub(crate) fn program(name: &'static str, source: aya::programs::ProgramError) -> Self {
        Error::Program {
            name,
            source: Box::new(source),
        }
    }
}
