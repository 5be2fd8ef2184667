//! The Pilus agent's API plumbing: the HTTP/1.1-over-Unix-socket transport
//! that the agent serves and the CLI calls ([`http`]). The types and the
//! store have moved to crates of their own (re-exported here until every
//! user is moved). [`monitor`] decodes and prints datapath events for `GET /v1/monitor` (the
//! agent) and `pilus monitor` (the CLI).
//!
//! Only std threads and blocking I/O are used (no async runtime): the API is
//! local, low-volume and one request per connection, so a short-lived thread
//! per connection is simpler than a reactor and costs nothing that matters.

mod error;
pub mod http;
pub mod monitor;

pub use error::Error;
pub use http::{bind, encode_query, serve, Client, Handler, Request, Response};
/// The API's types moved to `pilus-api-types`.
pub use pilus_api_types as types;
/// The store moved to `pilus-kvstore`.
pub use pilus_kvstore::{store, Apply, Options, Store};

#[cfg(test)]
mod testutil;
