//! The benchmarks' one error type. A benchmark fails when it cannot build
//! its hosts, when the agent or the kernel refuses, or when what it
//! measured did not do what it must (a wrong verdict, an endpoint left
//! after DEL): a time of the wrong thing means nothing.

use std::{io, path::PathBuf, time::Duration};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pilus bench {bench} needs root ({why})")]
    NotRoot {
        bench: &'static str,
        why: &'static str,
    },
    #[error("invalid option {option}: {reason}")]
    Options {
        option: &'static str,
        reason: String,
    },
    #[error("{} not found: build it (cargo build --release --bins) or pass its path", path.display())]
    MissingBinary { path: PathBuf },
    #[error("{what}")]
    Netns {
        what: String,
        #[source]
        source: pilus_netns::Error,
    },
    // Boxed, as the lab's below: they are large, and every Result of the
    // crate would carry the size of its largest error.
    #[error("{what}")]
    Datapath {
        what: String,
        #[source]
        source: Box<pilus_datapath::Error>,
    },
    #[error("{what}")]
    Netlink {
        what: String,
        #[source]
        source: pilus_netlink::Error,
    },
    #[error("{what}")]
    Api {
        what: String,
        #[source]
        source: pilus_client::Error,
    },
    #[error("{what}")]
    Lab {
        what: String,
        #[source]
        source: Box<pilus_lab::LabError>,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The cluster store (a lab's etcd) refused or did not answer.
    #[error("{what}")]
    Store {
        what: String,
        #[source]
        source: pilus_kvstore::KvError,
    },
    #[error("pilusd did not answer on {} within {timeout:?}", socket.display())]
    AgentStart { socket: PathBuf, timeout: Duration },
    #[error("pilusd exited during the benchmark ({status})")]
    AgentExited { status: std::process::ExitStatus },
    /// A plot could not be drawn (plotters' error, boxed: its type is
    /// generic over the backend).
    #[error("{what}")]
    Plot {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// What was measured did not do what it must, so its time means
    /// nothing (a verdict other than the case's, a CNI call that failed or
    /// left something behind).
    #[error("{what}")]
    Unexpected { what: String },
}

/// `map_err` helpers that attach what was being done.
pub(crate) trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T, Error>;
}

macro_rules! context_for {
    ($err:ty, $variant:ident) => {
        impl<T> Context<T> for Result<T, $err> {
            fn context(self, what: impl Into<String>) -> Result<T, Error> {
                self.map_err(|source| Error::$variant {
                    what: what.into(),
                    source: source.into(),
                })
            }
        }
    };
}

context_for!(pilus_netns::Error, Netns);
context_for!(pilus_datapath::Error, Datapath);
context_for!(pilus_netlink::Error, Netlink);
context_for!(pilus_client::Error, Api);
context_for!(pilus_lab::LabError, Lab);
context_for!(io::Error, Io);
context_for!(pilus_kvstore::KvError, Store);
