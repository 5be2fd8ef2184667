//! The transport's errors. Each one names the socket involved, so a
//! message printed by the CLI or logged by the agent is enough to act on.

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

    /// Reading or writing a connected socket failed.
    #[error("talking to the Pilus agent at {}: {source}", path.display())]
    Transport {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The agent accepted the connection but did not answer in time.
    #[error("no response from the Pilus agent at {} within {timeout:?}", path.display())]
    Timeout { path: PathBuf, timeout: Duration },

    /// The peer sent something that is not the HTTP/1.1 subset spoken here.
    #[error("malformed HTTP response from {}: {reason}", path.display())]
    Protocol { path: PathBuf, reason: String },

    /// A method or request target that would not fit on an HTTP request line.
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },

    /// The agent answered with a non-2xx status. `message` is the `error`
    /// field of a `{"error": "..."}` body, else the body text.
    #[error("the Pilus agent answered {status}: {message}")]
    Status { status: u16, message: String },

    /// A JSON body (request or response) did not decode into the expected type.
    #[error("{what}: invalid JSON: {source}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// A value could not be serialized (e.g. a map with non-string keys).
    #[error("cannot encode {what} as JSON: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}
