//! The policy crate's errors. A document error names the document, the field
//! (a JSON path such as `spec.ingress[0].toPorts[0].ports[0].port`) and why.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid label {label:?}: {reason}")]
    Label { label: String, reason: String },
    #[error("{document}: {field}: {reason}")]
    Document {
        /// `document 2 (CiliumNetworkPolicy default/allow-web)`.
        document: String,
        field: String,
        reason: String,
    },
    #[error("{document}: not YAML or JSON")]
    Syntax {
        document: String,
        #[source]
        source: yaml_serde::Error,
    },
    #[error("{what} {name:?} is defined twice in this import ({first} and {second})")]
    Duplicate {
        what: &'static str,
        name: String,
        first: String,
        second: String,
    },
}
