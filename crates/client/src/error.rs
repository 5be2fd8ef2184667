//! The client's errors. Each names the socket (or the request) involved, so
//! a message printed by the CLI or the CNI plugin is enough to act on; the
//! kinds are what callers map to exit codes (`Connect`, `Status`, ...).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent's socket could not be reached: usually the agent is not
    /// running, or the caller lacks permission on the (0600) socket.
    #[error(
        "cannot connect to the Pilus agent at {}: {source} (is the agent running, and are you root?)",
        path.display()
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The connection failed after it was made: the agent closed it, or
    /// sent something that is not HTTP/1.1.
    #[error("talking to the Pilus agent at {}", path.display())]
    Transport {
        path: PathBuf,
        #[source]
        source: hyper::Error,
    },

    /// The agent did not answer (completely) in time.
    #[error("no response from the Pilus agent at {} within {timeout:?}", path.display())]
    Timeout { path: PathBuf, timeout: Duration },

    /// A method that is not an HTTP token.
    #[error("invalid request method {method:?}")]
    InvalidMethod {
        method: String,
        #[source]
        source: http::method::InvalidMethod,
    },

    /// A request target that is not a path (and query) starting with '/'.
    #[error("invalid request target {target:?}: it must be a path starting with '/', without whitespace or control characters")]
    InvalidTarget {
        target: String,
        #[source]
        source: Option<http::uri::InvalidUri>,
    },

    /// The request could not be put together (a bug of this crate: every
    /// part was checked before).
    #[error("cannot build the request")]
    Build {
        #[source]
        source: http::Error,
    },

    /// The agent answered with a non-2xx status. `message` is the `error`
    /// field of a `{"error": "..."}` body, else the body text.
    #[error("the Pilus agent answered {status}: {message}")]
    Status { status: u16, message: String },

    /// A JSON response did not decode into the expected type.
    #[error("{what}: invalid JSON: {source}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// A request body could not be serialized (e.g. a map with non-string
    /// keys).
    #[error("cannot encode {what} as JSON: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// The blocking client could not start its runtime.
    #[error("cannot start the client's I/O runtime")]
    Runtime {
        #[source]
        source: io::Error,
    },
}
