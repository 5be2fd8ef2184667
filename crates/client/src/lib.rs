//! The one client of the Pilus agent's API: HTTP/1.1 over the agent's unix
//! socket, spoken by hyper on a tokio `UnixStream`.
//!
//! [`Client`] is async; [`blocking::Client`] wraps it in a current-thread
//! runtime for the CLI, the CNI plugin, the lab and tests, which make one
//! request at a time and have no runtime of their own. Every request opens
//! its own connection: the API is local and a connection costs a
//! `connect(2)`, so there is no pool to go stale across agent restarts.
//!
//! [`encode_query`] builds query strings; [`Error`] says what went wrong in
//! kinds the CLI's exit codes and the CNI plugin's error codes map from.

pub mod blocking;
mod error;
mod query;

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;

pub use error::Error;
pub use query::encode_query;

/// How long a client waits for the agent by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A response whatever its status: what [`Client::request`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// What a non-2xx response says went wrong: the `error` field of a
    /// `{"error": "..."}` body, else the body text, else the reason phrase.
    pub fn error_message(&self) -> String {
        #[derive(Deserialize)]
        struct ErrorBody {
            error: String,
        }
        if let Ok(body) = serde_json::from_slice::<ErrorBody>(&self.body) {
            return body.error;
        }
        let text = String::from_utf8_lossy(&self.body).trim().to_owned();
        if text.is_empty() {
            http::StatusCode::from_u16(self.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no reason given")
                .to_owned()
        } else {
            text
        }
    }
}

/// A client for the agent's socket. It holds no connection, so it is cheap
/// to clone and to keep.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
    /// Set for an agent's TCP address (the flows agents serve each other);
    /// `path` then names it in errors.
    tcp: Option<std::net::SocketAddr>,
    timeout: Duration,
}

impl Client {
    /// A client for the socket at `path`, giving each request
    /// [`DEFAULT_TIMEOUT`] from connecting to the last byte of the response.
    pub fn new(path: impl Into<PathBuf>) -> Client {
        Client {
            path: path.into(),
            tcp: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A client for an agent's TCP address: another node's agent, which
    /// serves its flows to its peers there (read only).
    pub fn tcp(addr: std::net::SocketAddr) -> Client {
        Client {
            path: PathBuf::from(format!("tcp:{addr}")),
            tcp: Some(addr),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets how long a whole request may take (connect, send, the complete
    /// response). Zero means wait forever.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request and returns the response whatever its status.
    /// `path_and_query` is sent as is: build queries with [`encode_query`].
    pub async fn request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, Error> {
        let request = build_request(method, path_and_query, body)?;
        let exchange = self.exchange(request);
        if self.timeout.is_zero() {
            return exchange.await;
        }
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                path: self.path.clone(),
                timeout: self.timeout,
            })?
    }

    async fn exchange(&self, request: http::Request<Full<Bytes>>) -> Result<Response, Error> {
        let connect = |source| Error::Connect {
            path: self.path.clone(),
            source,
        };
        match self.tcp {
            Some(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(connect)?;
                self.exchange_on(stream, request).await
            }
            None => {
                let stream = UnixStream::connect(&self.path).await.map_err(connect)?;
                self.exchange_on(stream, request).await
            }
        }
    }

    async fn exchange_on<S>(
        &self,
        stream: S,
        request: http::Request<Full<Bytes>>,
    ) -> Result<Response, Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let transport = |source| Error::Transport {
            path: self.path.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(transport)?;
        let response = async move {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Response {
                status,
                body: body.to_vec(),
            })
            // `sender` is dropped here, which lets `connection` finish.
        };
        // The connection does the I/O and has to be polled while the
        // response is awaited; it ends once the exchange is over.
        let (response, _connection) = tokio::join!(response, connection);
        response.map_err(transport)
    }

    /// `GET`, expecting a 2xx with a JSON body of type `T`.
    pub async fn get_json<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, Error> {
        self.call_json("GET", path_and_query, None).await
    }

    /// `POST` with `body` as JSON, expecting a 2xx with a JSON body of type `T`.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        body: &B,
    ) -> Result<T, Error> {
        let body = serde_json::to_vec(body).map_err(|source| Error::Encode {
            what: "the request body",
            source,
        })?;
        self.call_json("POST", path_and_query, Some(&body)).await
    }

    /// `DELETE`, expecting a 2xx with a JSON body of type `T`.
    pub async fn delete_json<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, Error> {
        self.call_json("DELETE", path_and_query, None).await
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<T, Error> {
        let response = self.request(method, path_and_query, body).await?;
        decode_json(method, path_and_query, response)
    }
}

/// The request as hyper sends it. The target must be origin-form: a path
/// (and query) without whitespace or control bytes, which would otherwise
/// let it rewrite the request line.
fn build_request(
    method: &str,
    path_and_query: &str,
    body: Option<&[u8]>,
) -> Result<http::Request<Full<Bytes>>, Error> {
    let invalid_target = |source| Error::InvalidTarget {
        target: path_and_query.to_owned(),
        source,
    };
    if !path_and_query.starts_with('/') {
        return Err(invalid_target(None));
    }
    let method =
        http::Method::from_bytes(method.as_bytes()).map_err(|source| Error::InvalidMethod {
            method: method.to_owned(),
            source,
        })?;
    let uri = path_and_query
        .parse::<http::Uri>()
        .map_err(|e| invalid_target(Some(e)))?;
    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri)
        // Host is required in HTTP/1.1; the socket has no name of its own.
        .header(http::header::HOST, "localhost")
        .header(http::header::ACCEPT, "application/json");
    if body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    let body = Full::new(Bytes::copy_from_slice(body.unwrap_or_default()));
    builder.body(body).map_err(|source| Error::Build { source })
}

fn decode_json<T: DeserializeOwned>(
    method: &str,
    path_and_query: &str,
    response: Response,
) -> Result<T, Error> {
    if !response.is_success() {
        return Err(Error::Status {
            status: response.status,
            message: response.error_message(),
        });
    }
    // An empty body decodes as `null`, so `()` and `Option<_>` work for
    // endpoints that answer with nothing (e.g. 204).
    let body: &[u8] = if response.body.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        &response.body
    };
    serde_json::from_slice(body).map_err(|source| Error::Decode {
        what: format!("response to {method} {path_and_query}"),
        source,
    })
}
