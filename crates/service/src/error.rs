//! The service crate's errors. Each names the service (or document) and the
//! field at fault, so a refused request says what to fix.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of a service is not acceptable.
    #[error("service {service}: {field}: {reason}")]
    Invalid {
        /// `namespace/name`, or `#N` when the name itself is at fault.
        service: String,
        /// `frontends[1].address`.
        field: String,
        reason: String,
    },
    /// Two frontends of the same address, port and protocol.
    #[error("frontend {frontend} is defined twice: by {first} and by {second}")]
    DuplicateFrontend {
        frontend: String,
        first: String,
        second: String,
    },
    #[error("service {0} is defined twice in this request")]
    DuplicateService(String),
    /// A flag of `pilus service upsert` (`--frontend`, `--backend`).
    #[error("{flag} {value:?}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    /// A Kubernetes document that is not what Pilus imports.
    #[error("{document}: {field}: {reason}")]
    Document {
        /// `svc.yaml: document 2 (Service shop/web)`.
        document: String,
        field: String,
        reason: String,
    },
    #[error("{document}: not YAML or JSON, or not a Service or EndpointSlice")]
    Syntax {
        document: String,
        #[source]
        source: yaml_serde::Error,
    },
}
