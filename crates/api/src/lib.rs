//! The Pilus agent's API plumbing: the HTTP/1.1-over-Unix-socket transport
//! that the agent serves and the CLI calls ([`http`]). The types, the
//! store and the event decoding have moved to crates of their own
//! (re-exported here until every user is moved).
//!
//! Only std threads and blocking I/O are used (no async runtime): the API is
//! local, low-volume and one request per connection, so a short-lived thread
//! per connection is simpler than a reactor and costs nothing that matters.

mod error;
pub mod http;

pub use error::Error;
pub use http::{bind, encode_query, serve, Client, Handler, Request, Response};
/// The API's types moved to `pilus-api-types`.
pub use pilus_api_types as types;
/// The store moved to `pilus-kvstore`.
pub use pilus_kvstore::{store, Apply, Options, Store};
/// The event decoding moved to `pilus-monitor`.
pub use pilus_monitor as monitor;

#[cfg(test)]
mod testutil;
