//! The agent's errors, each with the HTTP status the API answers it with.

use pilus_policy::PolicyId;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error(transparent)]
    Policy(#[from] pilus_policy::Error),
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    #[error("{0} is defined twice in this import")]
    DuplicatePolicy(PolicyId),
    #[error(transparent)]
    Ipam(#[from] crate::ipam::IpamError),
    #[error("identity")]
    Engine(#[from] pilus_policy::EngineError),
    #[error("plumbing the endpoint's network")]
    Plumbing(#[from] crate::plumbing::PlumbError),
    #[error("datapath")]
    Datapath(#[from] pilus_datapath::Error),
    #[error("state store")]
    Store(#[from] pilus_kvstore::Error),
    #[error("no free endpoint id left")]
    EndpointIds,
}

impl AgentError {
    pub fn status(&self) -> u16 {
        match self {
            AgentError::Invalid { .. } | AgentError::Policy(_) | AgentError::DuplicatePolicy(_) => {
                400
            }
            AgentError::NotFound { .. } => 404,
            // The caller named a namespace that is not there, or an
            // interface that is: its request, not the agent, is at fault.
            AgentError::Plumbing(crate::plumbing::PlumbError::Netns { .. }) => 400,
            AgentError::Plumbing(crate::plumbing::PlumbError::Netlink { source })
                if source.errno() == Some(libc::EEXIST) =>
            {
                409
            }
            AgentError::Ipam(_) | AgentError::EndpointIds => 503,
            _ => 500,
        }
    }

    /// The whole chain of causes, for the API's error body.
    pub fn message(&self) -> String {
        let mut s = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(e) = src {
            s.push_str(": ");
            s.push_str(&e.to_string());
            src = e.source();
        }
        s
    }
}
