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
    #[error("reading the map definitions of the BPF object")]
    ParseObject {
        #[source]
        source: Box<aya_obj::ParseError>,
    },
    /// The pins of `pin_dir` were made by another build or with other
    /// options; see [`crate::pins`]. Nothing was changed.
    #[error(
        "refusing to reuse the maps pinned in {pin_dir}: {mismatch}. Nothing was created, \
         written or attached. Way out: stop every pilusd using {pin_dir}; {hint}, or remove \
         {pin_dir} (pilusd rebuilds endpoints, ipcache and policy from its state store on the \
         next start; established connections lose their conntrack entries and pods lose \
         connectivity until it re-attaches)",
        pin_dir = .pin_dir.display(),
        hint = .mismatch.restart_hint()
    )]
    IncompatiblePin {
        pin_dir: PathBuf,
        mismatch: crate::pins::PinMismatch,
    },
    #[error("reading the pinned map {path}")]
    ReadPin {
        path: PathBuf,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("pinning map {name} at {path}")]
    PinMap {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
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
    #[error("cgroup {path}", path = .path.display())]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a cgroup v2 directory (socket-level LB attaches to cgroup v2 only, e.g. \
         /sys/fs/cgroup/unified/... on a hybrid system)",
        path = .path.display()
    )]
    NotCgroup2 { path: PathBuf },
    #[error("attaching {program} to cgroup {cgroup}", cgroup = .cgroup.display())]
    AttachCgroup {
        program: &'static str,
        cgroup: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("lasting attachments need a datapath loaded with a pin directory")]
    NotPinned,
    #[error("rtnetlink on {ifname}")]
    Netlink {
        ifname: String,
        #[source]
        source: Box<pilus_netlink::Error>,
    },
    #[error("no link called {ifname}")]
    NoSuchLink { ifname: String },
    /// Both ways of attaching failed: the first one's error (with its
    /// causes) is in the message, the fallback's is the source.
    #[error(
        "attaching the pod programs to {ifname}: {}; the fallback failed too",
        chain(first.as_ref())
    )]
    AttachEndpoint {
        ifname: String,
        first: Box<Error>,
        #[source]
        fallback: Box<Error>,
    },
    #[error("invalid BTF in {what}: {reason}")]
    Btf { what: &'static str, reason: String },
    #[error("invalid pod CIDR {network}/{prefix_len}: {reason}")]
    PodCidr {
        network: std::net::Ipv4Addr,
        prefix_len: u8,
        reason: &'static str,
    },
    #[error("invalid masquerade port range {min}-{max}: {reason}")]
    NatPorts {
        min: u16,
        max: u16,
        reason: &'static str,
    },
    #[error("invalid masquerade port range {text:?}: expected MIN-MAX (e.g. 61000-65535)")]
    NatPortsSyntax { text: String },
    #[error("endpoint address {ip} is outside the node's pod CIDR {cidr}")]
    OutsidePodCidr {
        ip: std::net::Ipv4Addr,
        cidr: String,
    },
    #[error("invalid policy entry")]
    PortRange(#[from] pilus_abi::PortRangeError),
}

/// An error and its causes on one line (for logs and reports that show
/// one line per error).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
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
