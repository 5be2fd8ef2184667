//! The crate's one error type: every variant says which operation failed
//! and on what, so a failing test prints enough to debug without a rerun.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while building or using test hosts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name, key or command given by the caller was refused before
    /// anything was run, e.g. an interface name longer than the kernel allows.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    /// The namespace to be created is already there (a leftover, or a name
    /// used twice); it is left untouched because it is not ours.
    #[error("network namespace {name} already exists")]
    Exists { name: String },

    /// A command could not be started at all (e.g. `ip` is not installed).
    #[error("cannot start `{cmd}`")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },

    /// A command ran and reported failure; `status` is `None` when it was
    /// killed by a signal.
    #[error("`{cmd}` failed with status {status:?}: {stderr}")]
    Command {
        cmd: String,
        status: Option<i32>,
        stderr: String,
    },

    /// A system call failed.
    #[error("{call} failed")]
    Syscall {
        call: &'static str,
        #[source]
        source: io::Error,
    },

    /// A file under /proc or /run could not be read or written.
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A socket of a probe or an echo server failed in a way that is not
    /// just "no answer" (which the probes report as `Ok(false)`), e.g. a
    /// port already in use or a raw socket refused.
    #[error("{op} {target} in network namespace {ns} failed")]
    Socket {
        op: &'static str,
        target: String,
        ns: String,
        #[source]
        source: io::Error,
    },

    /// Entering a namespace failed, or an interface name was refused by
    /// pilus-netlink's check (the kernel's rules, kept in one place).
    #[error("cannot {op}")]
    Netlink {
        op: String,
        #[source]
        source: pilus_netlink::Error,
    },

    /// The namespace has no link with this name.
    #[error("no link {ifname} in network namespace {ns}")]
    NoSuchLink { ns: String, ifname: String },
}
