//! rtnetlink, written out: just the requests a pod's network needs.
//!
//! - [`msg`] builds and parses the messages (pure, unit-tested);
//! - [`Netlink`] is a `NETLINK_ROUTE` socket bound to the network namespace
//!   it was opened in, with the operations the CNI plugin and the agent use:
//!   create a veth pair whose peer lands in another namespace, look up and
//!   delete links, set them up, add and list IPv4 addresses and routes.
//! - [`pod`] is a pod's whole interface: the pair, its address and routes,
//!   the check that they are still as made, and the delete.
//!
//! One request costs one `sendto` and one `recv`, where `ip` costs a
//! process: this is what keeps CNI ADD within its latency budget.

pub mod msg;
pub mod pod;
mod socket;

pub use socket::{in_netns, Addr, Link, Netlink, Route};

use std::io;

/// What a netlink request failed on, with the kernel's errno.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: {source}")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("{call} failed: {source}")]
    Syscall {
        call: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("malformed netlink reply to {op}: {reason}")]
    Malformed { op: String, reason: &'static str },
    #[error("invalid interface name {0:?} (1-15 bytes, no '/', ':', '%', whitespace or NUL)")]
    InvalidName(String),
    #[error("the pod's network namespace already has a route to {dst} (through another interface): a pod gets one primary Pilus interface, and {ifname} would take that interface's routes")]
    RouteTaken { dst: String, ifname: String },
}

impl Error {
    /// The errno the kernel answered with, if this is a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { source, .. } | Error::Syscall { source, .. } => source.raw_os_error(),
            Error::RouteTaken { .. } => Some(libc::EEXIST),
            _ => None,
        }
    }
}

/// Checks an interface name the way the kernel will (`dev_valid_name`),
/// so a bad name is refused before anything is created. '%' is refused
/// too: the kernel reads a name with '%' as a pattern (`eth%d`) and either
/// picks another name than the one asked for or fails with EINVAL.
pub fn valid_ifname(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == b'%' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}
