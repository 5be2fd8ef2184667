//! The control plane's one error type, each kind with the HTTP status the
//! API answers it with (whose fault it was).

use crate::plumbing::{PlumbError, PlumbFault};
use pilus_policy::PolicyId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error(transparent)]
    Policy(#[from] pilus_policy::Error),
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    #[error("{0} is defined twice in this import")]
    DuplicatePolicy(PolicyId),
    #[error(transparent)]
    Service(#[from] pilus_service::Error),
    #[error(transparent)]
    Ipam(#[from] crate::ipam::IpamError),
    #[error("identity")]
    Engine(#[from] pilus_policy::EngineError),
    #[error("identity")]
    Identity(#[from] pilus_policy::identity::IdentityError),
    #[error(transparent)]
    Plumbing(#[from] PlumbError),
    #[error(transparent)]
    Datapath(#[from] crate::datapath::DatapathError),
    #[error("state store")]
    Store(#[from] pilus_kvstore::KvError),
    /// The cluster store (etcd) refused or did not answer; nothing changed.
    #[error("{doing}: the cluster store is not available; nothing was changed")]
    ClusterStore {
        doing: &'static str,
        #[source]
        source: pilus_kvstore::KvError,
    },
    #[error("stored state: {key}")]
    Stored {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("no free endpoint id left")]
    EndpointIds,
}

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Error::Invalid { .. }
            | Error::Policy(_)
            | Error::DuplicatePolicy(_)
            | Error::Service(_) => 400,
            Error::NotFound { .. } => 404,
            // The caller named a namespace that is not there, or an
            // interface that is: its request, not the agent, is at fault.
            Error::Plumbing(p) if p.fault == PlumbFault::NoNamespace => 400,
            Error::Plumbing(p) if p.fault == PlumbFault::Exists => 409,
            Error::Ipam(_) | Error::EndpointIds | Error::ClusterStore { .. } => 503,
            _ => 500,
        }
    }

    /// The whole chain of causes, for the API's error body.
    pub fn message(&self) -> String {
        let mut s = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(e) = src {
            let t = e.to_string();
            // `#[error(transparent)]` layers repeat their source's text.
            if !s.ends_with(&t) {
                s.push_str(": ");
                s.push_str(&t);
            }
            src = e.source();
        }
        s
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what,
            reason: reason.into(),
        }
    }
}
