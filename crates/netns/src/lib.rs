//! Test hosts made of Linux network namespaces.
//!
//! This crate owns everything a real-traffic test (and later the `lab`
//! command) needs to build a small network on one machine and to tear it
//! down again:
//!
//! - [`NetNs`]: a named namespace (a "pod" or a "node") that is deleted, with
//!   every process still inside it killed, when the value is dropped;
//! - [`veth_pair`]: a link between two namespaces;
//! - [`ChildGuard`]: a background process inside a namespace that is killed
//!   and reaped when dropped;
//! - [`EnterGuard`]: the calling thread moved into a namespace, moved back
//!   when dropped (by pilus-netlink's `netns`, the workspace's one setns
//!   helper; enter a namespace by path with `pilus_netlink::netns`);
//! - [`remove_stale`]: cleanup of namespaces left behind by a crashed run;
//! - [`probe`]: ICMP, TCP and UDP reachability probes, echo servers and raw
//!   Ethernet frames, each from inside a namespace.
//!
//! Namespaces and links are made with `ip` (iproute2), so the crate needs no
//! netlink code; entering a namespace and checking interface names are
//! pilus-netlink's, and the other in-process parts (ifindex, MAC, sysctl)
//! use plain syscalls through `libc`. Everything here needs root.
//!
//! The guards clean up in `Drop`, which also runs while a failing test
//! unwinds, so a panicking test leaves no namespace and no link behind.
//! Drop never panics: a cleanup failure is printed to stderr instead.

mod error;
mod ns;
pub mod probe;
mod process;

pub use error::Error;
pub use ns::{link_here, remove_stale, veth_pair, EnterGuard, NetNs};
pub use process::ChildGuard;
