//! The Pilus agent's API plumbing: the HTTP/1.1-over-Unix-socket transport
//! that the agent serves and the CLI calls ([`http`]), and the embedded
//! snapshot + journal store the agent keeps its state in ([`store`]).
//!
//! Both are generic: they know nothing about endpoints, identities or
//! policies. The request and response types of the agent's API will live in a
//! `types` module of this crate, next to the transport that carries them.
//! [`monitor`] decodes and prints datapath events for `GET /v1/monitor` (the
//! agent) and `pilus monitor` (the CLI).
//!
//! Only std threads and blocking I/O are used (no async runtime): the API is
//! local, low-volume and one request per connection, so a short-lived thread
//! per connection is simpler than a reactor and costs nothing that matters.

mod error;
pub mod http;
pub mod monitor;
pub mod store;

pub use error::Error;
pub use http::{bind, encode_query, serve, Client, Handler, Request, Response};
/// The API's types moved to `pilus-api-types`.
pub use pilus_api_types as types;
pub use store::{Apply, Options, Store};

#[cfg(test)]
mod testutil;
