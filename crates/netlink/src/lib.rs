//! rtnetlink for Pilus, synchronous, on the ecosystem's message types:
//! `netlink-packet-route` encodes and decodes every message, `netlink-sys`
//! is the socket. What this crate adds is the part those leave to the
//! caller, and the operations Pilus needs:
//!
//! - [`Netlink`] (module `socket`): a `NETLINK_ROUTE` socket bound to the
//!   namespace it was opened in; one request and its acknowledgement, or
//!   one dump, retried whole when the kernel flags it as interrupted
//!   (`NLM_F_DUMP_INTR`); a receive buffer that grows to the datagram;
//! - module `link`: links — look up, dump, veth pairs whose peer is born in
//!   another namespace, VXLAN devices in external (collect_md) mode, up,
//!   MTU, delete;
//! - module `route`: IPv4 addresses, routes (exclusive add; dumps of the
//!   main table or of all tables) and policy routing rules;
//! - module `neigh`: ARP entries and the FDB entries of a VXLAN device;
//! - module `tc`: the `clsact` qdisc and direct-action `cls_bpf` filters
//!   (added by program fd, listed, deleted), for the datapath's pod
//!   programs;
//! - [`netns`]: the workspace's one way to move a thread into a network
//!   namespace and back;
//! - [`pod`]: a pod's whole interface, for the CNI plugin and the agent.
//!
//! Synchronous on purpose: the CNI plugin is a short-lived process that
//! does a handful of requests, and the agent calls this from
//! `spawn_blocking`. One request costs one `sendto` and a `recv` or two,
//! where `ip` costs a process: this keeps CNI ADD within its budget.

mod link;
mod neigh;
pub mod netns;
pub mod pod;
mod route;
mod socket;
mod tc;

pub use link::{Link, VxlanLink, VxlanSpec};
pub use neigh::{FdbEntry, Neigh};
pub use netns::in_netns;
pub use route::{Addr, Route, Rule};
pub use socket::{Netlink, MAX_DUMP_ATTEMPTS};
pub use tc::{BpfFilter, FilterSlot, TcHook};

use std::{io, path::PathBuf};

/// What a netlink request failed on, with the kernel's errno.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused a request; `detail` is its extended-ack message
    /// (e.g. "Nexthop device is not up"), when it gave one.
    #[error("{op}: {source}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Kernel {
        op: String,
        detail: Option<String>,
        #[source]
        source: io::Error,
    },
    #[error("{call} failed: {source}")]
    Syscall {
        call: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot open network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A reply that netlink-packet-route could not decode.
    #[error("cannot decode the kernel's reply to {op}: {source}")]
    Decode {
        op: String,
        #[source]
        source: netlink_packet_core::DecodeError,
    },
    /// A reply that is not what the request calls for (e.g. a datagram
    /// whose lengths do not add up, or a dump that stops short).
    #[error("malformed netlink reply to {op}: {reason}")]
    Malformed { op: String, reason: &'static str },
    /// The kernel flagged every attempt at a dump as interrupted: the table
    /// kept changing while it was read, so no consistent copy was had.
    #[error("{op}: the dump was interrupted by concurrent changes {attempts} times in a row (NLM_F_DUMP_INTR); giving up")]
    DumpInterrupted { op: String, attempts: u32 },
    #[error("invalid interface name {0:?} (1-15 bytes, not '.' or '..', no '/', ':', '%', whitespace or NUL)")]
    InvalidName(String),
    #[error("the pod's network namespace already has a route to {dst} (through another interface): a pod gets one primary Pilus interface, and {ifname} would take that interface's routes")]
    RouteTaken { dst: String, ifname: String },
}

impl Error {
    /// The errno the kernel answered with, if this is a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { source, .. }
            | Error::Syscall { source, .. }
            | Error::Netns { source, .. } => source.raw_os_error(),
            Error::RouteTaken { .. } => Some(libc::EEXIST),
            _ => None,
        }
    }
}

/// Checks an interface name the way the kernel will (`dev_valid_name`),
/// so a bad name is refused before anything is created. '%' is refused
/// too: the kernel reads a name with '%' as a pattern (`eth%d`) and either
/// picks another name than the one asked for or fails with EINVAL.
/// Whitespace is the kernel's `isspace`, which counts the vertical tab
/// (0x0b) that `u8::is_ascii_whitespace` leaves out. The one
/// check of the workspace: the agent, the CNI plugin and the test hosts
/// all call this.
pub fn valid_ifname(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| matches!(b, b'/' | b':' | b'%' | 0 | 0x0b) || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel() {
        for good in ["eth0", "lxc0123456789ab", "a", "vx-1.2", "fifteen_chars_x"] {
            assert!(valid_ifname(good).is_ok(), "{good} refused");
        }
        for bad in [
            "",
            "sixteen_chars_xx",
            ".",
            "..",
            "a/b",
            "a:b",
            "a%d",
            "a b",
            "a\tb",
            "a\nb",
            "a\0b",
            "a\x0bb",
        ] {
            assert!(valid_ifname(bad).is_err(), "{bad:?} accepted");
        }
    }
}
