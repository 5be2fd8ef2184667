//! A minimal HTTP/1.1 transport over a Unix domain socket: the agent's
//! server ([`bind`], [`serve`]) and the CLI's client ([`Client`]).
//!
//! Only the subset the agent's API needs is spoken, on purpose: one request
//! per connection (every response says `Connection: close`), bodies framed
//! by `Content-Length` only (no chunked encoding, no keep-alive, no
//! pipelining), JSON bodies. That keeps the parser small enough to read in
//! one sitting while still letting `curl --unix-socket` talk to the agent.
//!
//! Access control is the socket file's mode (0600, so root only): there is no
//! authentication at the HTTP level.

use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Largest request body the server accepts; larger ones get 413 before a
/// byte of the body is read.
pub const MAX_BODY: u64 = 16 << 20;

/// How long a client waits for the agent by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest request line or header line, and most header lines, accepted:
/// bounds what a misbehaving peer can make us buffer before any body.
const MAX_LINE: usize = 8 << 10;
const MAX_HEADERS: usize = 100;

/// A stalled peer must not pin a connection thread forever.
const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the accept loop looks at `stop` while idle.
const ACCEPT_POLL_MS: libc::c_int = 200;

/// Connection threads only parse a request and call the handler, so they
/// get a small stack instead of the 2 MiB default.
const CONNECTION_STACK: usize = 256 << 10;

/// The function that turns a request into a response. It runs on the
/// connection's thread, so it must be shareable across threads.
pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

/// A parsed request, as the handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The target's path, without the query and exactly as sent (not
    /// percent-decoded, so an encoded `/` cannot change how it splits into
    /// segments). Arbitrary strings belong in the query.
    pub path: String,
    /// The query's `name=value` pairs in order, percent-decoded (`+` is a
    /// space, as in HTML forms). A name without `=` has an empty value.
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// Decodes the body as JSON. The error names the request, so a handler
    /// can answer `Response::error(400, &e.to_string())` as is.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            what: format!("body of {} {}", self.method, self.path),
            source,
        })
    }

    /// The value of the first query parameter called `name`.
    pub fn query_get(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response: a status and a JSON body. Sent with `Content-Type:
/// application/json` and `Content-Length` (except for 204 and 304, which
/// carry no body in HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The shape of every error body, so that [`Client`] can surface the message.
#[derive(Serialize, Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow)]
    error: std::borrow::Cow<'a, str>,
}

impl Response {
    /// `value` serialized as the body. A value that cannot be serialized
    /// (e.g. a map with non-string keys) is a bug in the handler: it becomes
    /// a 500 rather than a panic on the connection thread.
    pub fn json(status: u16, value: &(impl Serialize + ?Sized)) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response { status, body },
            Err(e) => Response::error(500, &format!("cannot encode the response: {e}")),
        }
    }

    /// `{"error": message}`, the body [`Client`] turns into
    /// [`Error::Status`].
    pub fn error(status: u16, message: &str) -> Response {
        let body = ErrorBody {
            error: message.into(),
        };
        Response {
            status,
            // A struct with one string field always serializes.
            body: serde_json::to_vec(&body).unwrap_or_default(),
        }
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// Binds the agent's socket at `path`.
///
/// Creates the parent directory (mode 0755) if missing. An existing socket
/// file is removed only if nothing answers on it (a crashed agent's
/// leftover); if another process is listening the call fails with
/// `AddrInUse` instead of stealing its socket. A path that exists but is not
/// a socket is never removed. The socket is chmod-ed to 0600 once bound.
///
/// Between `bind` and `chmod` the socket briefly has the umask's mode; the
/// parent directory should therefore not be writable or searchable by
/// untrusted users if that matters. Two processes binding the same path at
/// the very same moment can both see it as stale: the caller should hold a
/// lock (or be the only agent instance) for this to be a real guarantee.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // `recursive` leaves an existing directory (and its mode) alone.
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| annotate(e, "creating directory", parent))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{}: another process is already listening on this socket",
                        path.display()
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                fs::remove_file(path).map_err(|e| annotate(e, "removing stale socket", path))?
            }
            Err(e) => return Err(annotate(e, "probing existing socket", path)),
        },
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{}: exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(annotate(e, "inspecting", path)),
    }
    let listener = UnixListener::bind(path).map_err(|e| annotate(e, "binding", path))?;
    fs::set_permissions(path, Permissions::from_mode(0o600))
        .map_err(|e| annotate(e, "setting mode 0600 on", path))?;
    Ok(listener)
}

/// `bind` returns `io::Result`, so context goes into the message while the
/// kind (which callers and tests match on) is kept.
fn annotate(e: io::Error, action: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{action} {}: {e}", path.display()))
}

/// Serves `listener` until `stop` is set: every connection gets its own
/// short-lived thread which reads one request, calls `handler` and writes the
/// response. Returns within about 200 ms of `stop` being set; connections
/// already accepted finish on their own threads.
///
/// A panicking handler answers 500 instead of dropping the connection.
/// Accept errors (e.g. out of file descriptors) are logged and retried after
/// a pause rather than ending the loop, since the agent cannot do without
/// its API.
pub fn serve(listener: UnixListener, handler: Handler, stop: Arc<AtomicBool>) {
    // Nonblocking so that a connection that goes away between poll(2) and
    // accept(2) cannot block the loop past `stop`.
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::warn!("cannot make the API listener nonblocking: {e}");
    }
    while !stop.load(Ordering::Relaxed) {
        match wait_readable(&listener, ACCEPT_POLL_MS) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!("poll on the API listener failed: {e}");
                thread::sleep(Duration::from_millis(ACCEPT_POLL_MS as u64));
                continue;
            }
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => spawn_connection(stream, &handler),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // Typically EMFILE: the pending connection stays queued
                    // and poll keeps reporting it, so back off instead of
                    // spinning.
                    tracing::warn!("accepting an API connection failed: {e}");
                    thread::sleep(Duration::from_millis(ACCEPT_POLL_MS as u64));
                    break;
                }
            }
        }
    }
}

/// Waits up to `timeout_ms` for a pending connection, so the accept loop can
/// look at `stop` regularly without a busy loop.
fn wait_readable(listener: &UnixListener, timeout_ms: libc::c_int) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid, writable pollfd for the whole call and the
    // count passed is 1; the fd stays open because `listener` is borrowed.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(n > 0)
}

fn spawn_connection(stream: UnixStream, handler: &Handler) {
    let handler = Arc::clone(handler);
    let spawned = thread::Builder::new()
        .name("pilus-api-conn".into())
        .stack_size(CONNECTION_STACK)
        .spawn(move || handle_connection(stream, &*handler));
    if let Err(e) = spawned {
        // The stream was moved into the closure and is closed with it.
        tracing::warn!("cannot start a thread for an API connection, dropping it: {e}");
    }
}

fn handle_connection(stream: UnixStream, handler: &(dyn Fn(Request) -> Response + Send + Sync)) {
    // Linux does not pass O_NONBLOCK from the listener to accepted sockets,
    // but the timeouts below only work on blocking sockets: be explicit.
    let configured = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(SERVER_IO_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(SERVER_IO_TIMEOUT)));
    if let Err(e) = configured {
        tracing::warn!("cannot configure an API connection, dropping it: {e}");
        return;
    }
    let response = match read_request(&stream) {
        // Closed without sending anything, e.g. `bind`'s liveness probe.
        Ok(None) => return,
        Ok(Some(request)) => {
            let (method, path) = (request.method.clone(), request.path.clone());
            let response =
                catch_unwind(AssertUnwindSafe(|| handler(request))).unwrap_or_else(|_| {
                    Response::error(500, "internal error: the request handler panicked")
                });
            tracing::debug!(%method, %path, status = response.status, "API request");
            if (200..=599).contains(&response.status) {
                response
            } else {
                // 1xx cannot be a final response and anything else would not
                // fit the three-digit status line.
                Response::error(
                    500,
                    &format!(
                        "internal error: handler returned status {}",
                        response.status
                    ),
                )
            }
        }
        Err(response) => {
            tracing::debug!(status = response.status, "rejected a malformed API request");
            response
        }
    };
    if let Err(e) = write_response(&mut &stream, &response) {
        tracing::debug!("writing an API response failed (client gone?): {e}");
    }
}

/// Why a line could not be read.
enum LineError {
    Io(io::Error),
    TooLong,
    /// The peer closed the connection in the middle of a line.
    Truncated,
}

/// Reads one line ending in LF (CRLF or bare LF, as RFC 9112 allows) of at
/// most `max` bytes including the terminator, without the terminator.
/// `Ok(None)` is a clean end of stream before the first byte.
fn read_line(r: &mut impl BufRead, max: usize) -> Result<Option<Vec<u8>>, LineError> {
    let mut line = Vec::new();
    r.take(max as u64)
        .read_until(b'\n', &mut line)
        .map_err(LineError::Io)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() >= max {
            LineError::TooLong
        } else {
            LineError::Truncated
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The error response for a line that could not be read on the server.
fn line_error_response(e: LineError, too_long_status: u16, what: &str) -> Response {
    match e {
        LineError::Io(e) if is_timeout(&e) => {
            Response::error(408, &format!("timed out reading the {what}"))
        }
        LineError::Io(e) => Response::error(400, &format!("reading the {what}: {e}")),
        LineError::TooLong => Response::error(
            too_long_status,
            &format!("{what} longer than {MAX_LINE} bytes"),
        ),
        LineError::Truncated => Response::error(
            400,
            &format!("connection closed in the middle of the {what}"),
        ),
    }
}

/// Reads one request. `Err` is the response that rejects it; `Ok(None)`
/// means the peer closed the connection without sending anything.
fn read_request(stream: &UnixStream) -> Result<Option<Request>, Response> {
    let bad = |message: String| Response::error(400, &message);
    let mut reader = BufReader::new(stream);

    let line = match read_line(&mut reader, MAX_LINE) {
        Ok(Some(line)) => line,
        Ok(None) => return Ok(None),
        Err(e) => return Err(line_error_response(e, 414, "request line")),
    };
    let line = String::from_utf8(line).map_err(|_| bad("request line is not UTF-8".into()))?;
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err(bad(format!("malformed request line {line:?}"))),
    };
    if !is_token(method) {
        return Err(bad(format!("malformed method {method:?}")));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(if version.starts_with("HTTP/") {
            Response::error(505, &format!("{version} is not supported, use HTTP/1.1"))
        } else {
            bad(format!("malformed request line {line:?}"))
        });
    }
    if !target.starts_with('/') {
        return Err(bad(format!(
            "request target {target:?} must be a path starting with '/'"
        )));
    }
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let query = parse_query(raw_query).map_err(bad)?;

    let mut content_length: Option<u64> = None;
    let mut expect_continue = false;
    let mut headers = 0;
    loop {
        let line = match read_line(&mut reader, MAX_LINE) {
            Ok(Some(line)) => line,
            Ok(None) => return Err(line_error_response(LineError::Truncated, 431, "headers")),
            Err(e) => return Err(line_error_response(e, 431, "header line")),
        };
        if line.is_empty() {
            break;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(Response::error(
                431,
                &format!("more than {MAX_HEADERS} header lines"),
            ));
        }
        let colon = line.iter().position(|&b| b == b':');
        let (name, value) = match colon {
            // A name must be a token: this also rejects obsolete line folding
            // and whitespace before the colon (RFC 9112 section 5).
            Some(i) if std::str::from_utf8(&line[..i]).is_ok_and(is_token) => {
                (&line[..i], line[i + 1..].trim_ascii())
            }
            _ => {
                return Err(bad(format!(
                    "malformed header line {:?}",
                    String::from_utf8_lossy(&line)
                )))
            }
        };
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "invalid Content-Length {:?}",
                        String::from_utf8_lossy(value)
                    ))
                })?;
            // Disagreeing lengths are the classic request-smuggling vector.
            if content_length.is_some_and(|prev| prev != n) {
                return Err(bad("conflicting Content-Length headers".into()));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(Response::error(
                501,
                "Transfer-Encoding is not supported; send a Content-Length",
            ));
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err(Response::error(
                    417,
                    "only 'Expect: 100-continue' is supported",
                ));
            }
            expect_continue = true;
        }
    }

    let length = content_length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(Response::error(
            413,
            &format!("request body of {length} bytes is over the {MAX_BODY}-byte limit"),
        ));
    }
    if expect_continue && length > 0 {
        // curl sends this for bodies over 1 KiB and waits a second for it.
        // If the client is gone, reading the body below reports it.
        let _ = (&mut &*stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    // Grows as bytes arrive rather than trusting the announced length.
    let mut body = Vec::new();
    if let Err(e) = (&mut reader).take(length).read_to_end(&mut body) {
        return Err(line_error_response(LineError::Io(e), 400, "request body"));
    }
    if (body.len() as u64) < length {
        return Err(bad(format!(
            "request body ended after {} of {length} bytes",
            body.len()
        )));
    }
    Ok(Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        body,
    }))
}

fn write_response(w: &mut impl Write, response: &Response) -> io::Result<()> {
    let status = response.status;
    let has_body = !matches!(status, 100..=199 | 204 | 304);
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    if has_body {
        head.push_str("Content-Type: application/json\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    w.write_all(head.as_bytes())?;
    if has_body {
        w.write_all(&response.body)?;
    }
    w.flush()
}

/// RFC 9110 `token`: what methods and header names are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

// ---------------------------------------------------------------------------
// Query strings
// ---------------------------------------------------------------------------

/// Encodes `pairs` as a query string (without the leading `?`): every byte
/// other than `A-Z a-z 0-9 - . _ ~` is percent-encoded, so names and values
/// may contain anything, `&`, `=`, `+` and non-ASCII included.
pub fn encode_query(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_into(&mut out, name);
        out.push('=');
        percent_encode_into(&mut out, value);
    }
    out
}

fn percent_encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

fn parse_query(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            match (percent_decode(name), percent_decode(value)) {
                (Some(name), Some(value)) => Ok((name, value)),
                _ => Err(format!(
                    "query parameter {part:?} is not valid percent-encoded UTF-8"
                )),
            }
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hi = char::from(hex[0]).to_digit(16)?;
                let lo = char::from(hex[1]).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// A client for the agent's socket. Every request opens a new connection, so
/// a `Client` is cheap, holds no socket and can be shared freely.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client for the socket at `path`, waiting up to [`DEFAULT_TIMEOUT`]
    /// for each read or write.
    pub fn new(path: impl Into<PathBuf>) -> Client {
        Client {
            path: path.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets how long any single read or write on the socket may wait (so a
    /// slowly trickling response can take longer in total). Zero means wait
    /// forever.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one request and returns the response whatever its status.
    /// `path_and_query` is sent as is: build queries with [`encode_query`].
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, Error> {
        if !is_token(method) {
            return Err(Error::InvalidRequest {
                reason: format!("method {method:?} is not an HTTP token"),
            });
        }
        // Whitespace or control bytes would let the target rewrite the
        // request line or inject headers.
        if !path_and_query.starts_with('/')
            || path_and_query.bytes().any(|b| b <= b' ' || b == 0x7f)
        {
            return Err(Error::InvalidRequest {
                reason: format!(
                    "target {path_and_query:?} must start with '/' and contain no whitespace or control characters"
                ),
            });
        }
        let stream = UnixStream::connect(&self.path).map_err(|source| Error::Connect {
            path: self.path.clone(),
            source,
        })?;
        let timeout = Some(self.timeout).filter(|t| !t.is_zero());
        stream
            .set_read_timeout(timeout)
            .and_then(|()| stream.set_write_timeout(timeout))
            .map_err(|e| self.io_error(e))?;

        let mut head = format!(
            "{method} {path_and_query} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n"
        );
        if let Some(body) = body {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut writer = &stream;
        let written = writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(body.unwrap_or_default()));
        match written {
            Ok(()) => self.read_response(&stream),
            // The server may answer and close before reading the whole body
            // (413 for an oversized one). Its answer is still queued on our
            // side of the socket and says more than "broken pipe".
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                self.read_response(&stream).map_err(|_| self.io_error(e))
            }
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// `GET`, expecting a 2xx with a JSON body of type `T`.
    pub fn get_json<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, Error> {
        self.call_json("GET", path_and_query, None)
    }

    /// `POST` with `body` as JSON, expecting a 2xx with a JSON body of type `T`.
    pub fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        body: &B,
    ) -> Result<T, Error> {
        let body = serde_json::to_vec(body).map_err(|source| Error::Encode {
            what: "the request body",
            source,
        })?;
        self.call_json("POST", path_and_query, Some(&body))
    }

    /// `DELETE`, expecting a 2xx with a JSON body of type `T`.
    pub fn delete_json<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, Error> {
        self.call_json("DELETE", path_and_query, None)
    }

    fn call_json<T: DeserializeOwned>(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<T, Error> {
        let response = self.request(method, path_and_query, body)?;
        if !response.is_success() {
            return Err(Error::Status {
                status: response.status,
                message: error_message(&response),
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

    fn read_response(&self, stream: &UnixStream) -> Result<Response, Error> {
        let mut reader = BufReader::new(stream);
        // Skip interim 1xx responses; we never send `Expect`, but a proxy
        // in between (e.g. socat) might.
        let (status, content_length) = loop {
            let head = self.read_head(&mut reader)?;
            if !(100..200).contains(&head.0) {
                break head;
            }
        };
        let mut body = Vec::new();
        match content_length {
            Some(length) => {
                (&mut reader)
                    .take(length)
                    .read_to_end(&mut body)
                    .map_err(|e| self.io_error(e))?;
                if (body.len() as u64) < length {
                    return Err(
                        self.protocol(format!("body ended after {} of {length} bytes", body.len()))
                    );
                }
            }
            // Without a length the body runs until the server closes.
            None => {
                reader
                    .read_to_end(&mut body)
                    .map_err(|e| self.io_error(e))?;
            }
        }
        Ok(Response { status, body })
    }

    /// Reads a status line and headers: the status and the Content-Length.
    fn read_head(&self, reader: &mut impl BufRead) -> Result<(u16, Option<u64>), Error> {
        let line = self.read_line(reader, "status line")?;
        let line = String::from_utf8_lossy(&line);
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status = parts
            .next()
            .filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u16>().ok());
        let status = match status {
            Some(status) if version.starts_with("HTTP/1.") => status,
            _ => return Err(self.protocol(format!("bad status line {line:?}"))),
        };
        let mut content_length = None;
        for _ in 0..=MAX_HEADERS {
            let line = self.read_line(reader, "headers")?;
            if line.is_empty() {
                return Ok((status, content_length));
            }
            let Some(i) = line.iter().position(|&b| b == b':') else {
                return Err(self.protocol(format!(
                    "bad header line {:?}",
                    String::from_utf8_lossy(&line)
                )));
            };
            if line[..i].eq_ignore_ascii_case(b"content-length") {
                let value = String::from_utf8_lossy(line[i + 1..].trim_ascii());
                let n = value
                    .parse::<u64>()
                    .map_err(|_| self.protocol(format!("bad Content-Length {value:?}")))?;
                content_length = Some(n);
            }
        }
        Err(self.protocol(format!("more than {MAX_HEADERS} header lines")))
    }

    fn read_line(&self, reader: &mut impl BufRead, what: &str) -> Result<Vec<u8>, Error> {
        match read_line(reader, MAX_LINE) {
            Ok(Some(line)) => Ok(line),
            Ok(None) => {
                Err(self.protocol(format!("connection closed before the {what} were complete")))
            }
            Err(LineError::Io(e)) => Err(self.io_error(e)),
            Err(LineError::TooLong) => {
                Err(self.protocol(format!("a line of the {what} exceeds {MAX_LINE} bytes")))
            }
            Err(LineError::Truncated) => {
                Err(self.protocol(format!("connection closed in the middle of the {what}")))
            }
        }
    }

    fn io_error(&self, source: io::Error) -> Error {
        if is_timeout(&source) {
            Error::Timeout {
                path: self.path.clone(),
                timeout: self.timeout,
            }
        } else {
            Error::Transport {
                path: self.path.clone(),
                source,
            }
        }
    }

    fn protocol(&self, reason: String) -> Error {
        Error::Protocol {
            path: self.path.clone(),
            reason,
        }
    }
}

/// What a non-2xx response says went wrong: the `error` field of a
/// `{"error": "..."}` body, else the body text, else the reason phrase.
fn error_message(response: &Response) -> String {
    if let Ok(body) = serde_json::from_slice::<ErrorBody>(&response.body) {
        return body.error.into_owned();
    }
    let text = String::from_utf8_lossy(&response.body).trim().to_owned();
    if text.is_empty() {
        reason(response.status).to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use serde_json::{json, Value};
    use std::time::Instant;

    /// A server on its own thread, stopped and joined on drop.
    struct TestServer {
        stop: Arc<AtomicBool>,
        thread: Option<thread::JoinHandle<()>>,
        socket: PathBuf,
    }

    impl TestServer {
        fn start(dir: &Path, handler: Handler) -> TestServer {
            let socket = dir.join("run/pilus/agent.sock");
            let listener = bind(&socket).expect("bind");
            let stop = Arc::new(AtomicBool::new(false));
            let thread = {
                let stop = Arc::clone(&stop);
                thread::spawn(move || serve(listener, handler, stop))
            };
            TestServer {
                stop,
                thread: Some(thread),
                socket,
            }
        }

        fn client(&self) -> Client {
            Client::new(&self.socket).with_timeout(Duration::from_secs(10))
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn router(req: Request) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v1/echo") => Response::json(
                200,
                &json!({ "path": req.path, "query": req.query, "name": req.query_get("name") }),
            ),
            ("POST", "/v1/items") => match req.json::<Value>() {
                Ok(item) => Response::json(201, &json!({ "created": item })),
                Err(e) => Response::error(400, &e.to_string()),
            },
            // Echoes the body back, to move big bodies both ways.
            ("POST", "/v1/blob") => Response::json(200, &json!({ "len": req.body.len() })),
            ("GET", "/v1/blob") => {
                let size: usize = req.query_get("size").unwrap_or("0").parse().unwrap();
                Response::json(200, &"x".repeat(size))
            }
            ("DELETE", "/v1/items/7") => Response {
                status: 204,
                body: Vec::new(),
            },
            ("GET", "/v1/panic") => panic!("handler panic requested by the test"),
            (method, path) => Response::error(404, &format!("no route for {method} {path}")),
        }
    }

    /// Sends raw bytes and returns the raw response, for what `Client`
    /// would refuse to send.
    fn raw(socket: &Path, request: &[u8]) -> String {
        let mut stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        // A request that announces more body than it sends must see end of
        // stream, not wait out the server's read timeout.
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn round_trip() {
        let dir = TempDir::new("http-round-trip");
        let server = TestServer::start(dir.path(), Arc::new(router));
        let client = server.client();

        // GET with a query that needs encoding.
        let q = encode_query(&[("name", "a b&c=d+é"), ("flag", "")]);
        let got: Value = client.get_json(&format!("/v1/echo?{q}")).unwrap();
        assert_eq!(
            got,
            json!({
                "path": "/v1/echo",
                "query": [["name", "a b&c=d+é"], ["flag", ""]],
                "name": "a b&c=d+é",
            })
        );

        // POST with a JSON body.
        let got: Value = client
            .post_json("/v1/items", &json!({ "id": 7, "labels": ["app=web"] }))
            .unwrap();
        assert_eq!(
            got,
            json!({ "created": { "id": 7, "labels": ["app=web"] } })
        );

        // A JSON error body surfaces as Error::Status with its message.
        match client.get_json::<Value>("/v1/nope") {
            Err(Error::Status { status, message }) => {
                assert_eq!(status, 404);
                assert_eq!(message, "no route for GET /v1/nope");
            }
            other => panic!("expected a 404 status error, got {other:?}"),
        }
        // So does a handler's own 400 for a body that is not JSON.
        let response = client
            .request("POST", "/v1/items", Some(b"{not json"))
            .unwrap();
        assert_eq!(response.status, 400);
        assert!(error_message(&response).contains("body of POST /v1/items"));

        // A 1 MiB body each way.
        let blob = vec![b'7'; 1 << 20];
        let got: Value = client
            .post_json("/v1/blob", &String::from_utf8(blob).unwrap())
            .unwrap();
        assert_eq!(got["len"], json!((1 << 20) + 2));
        let got: String = client
            .get_json(&format!("/v1/blob?size={}", 1 << 20))
            .unwrap();
        assert_eq!(got.len(), 1 << 20);

        // 204 without a body decodes as `()`.
        client.delete_json::<()>("/v1/items/7").unwrap();

        // A panicking handler answers 500; the server survives it.
        match client.get_json::<Value>("/v1/panic") {
            Err(Error::Status { status: 500, .. }) => {}
            other => panic!("expected a 500, got {other:?}"),
        }
        let _: Value = client.get_json("/v1/echo").unwrap();
    }

    #[test]
    fn oversized_body_gets_413() {
        let dir = TempDir::new("http-413");
        let server = TestServer::start(dir.path(), Arc::new(router));
        let body = vec![b' '; MAX_BODY as usize + 1];
        match server.client().request("POST", "/v1/blob", Some(&body)) {
            Ok(response) => {
                assert_eq!(response.status, 413);
                assert!(error_message(&response).contains("limit"));
            }
            Err(e) => panic!("expected a 413 response, got {e}"),
        }
    }

    #[test]
    fn malformed_requests_get_4xx() {
        let dir = TempDir::new("http-malformed");
        let server = TestServer::start(dir.path(), Arc::new(router));
        let cases: &[(&[u8], &str)] = &[
            (b"GARBAGE\r\n\r\n", "400"),
            (b"GET /v1/echo HTTP/1.1\r\nbad header\r\n\r\n", "400"),
            (b"GET /v1/echo HTTP/1.1\r\n folded: x\r\n\r\n", "400"),
            (b"GET /v1/echo?x=%zz HTTP/1.1\r\n\r\n", "400"),
            (b"GET http://x/ HTTP/1.1\r\n\r\n", "400"),
            (b"GET / HTTP/2.0\r\n\r\n", "505"),
            (
                b"POST /v1/blob HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 4\r\n\r\nabcd",
                "400",
            ),
            (
                b"POST /v1/blob HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                "400",
            ),
            (
                b"POST /v1/blob HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "501",
            ),
            (
                b"POST /v1/blob HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
                "400",
            ),
        ];
        for (request, status) in cases {
            let response = raw(&server.socket, request);
            assert!(
                response.starts_with(&format!("HTTP/1.1 {status} ")),
                "{:?} answered {response:?}",
                String::from_utf8_lossy(request)
            );
            assert!(response.contains("Content-Type: application/json\r\n"));
            assert!(response.contains("Connection: close\r\n"));
            assert!(response.contains("\r\n\r\n{\"error\":"), "{response:?}");
        }

        // Case-insensitive Content-Length, bare LF line ends and
        // Expect: 100-continue (as curl sends) are all accepted.
        let response = raw(
            &server.socket,
            b"POST /v1/blob HTTP/1.1\ncOnTeNt-LeNgTh: 3\nExpect: 100-continue\n\nabc",
        );
        assert!(response.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"));
        assert!(response.ends_with("\r\n\r\n{\"len\":3}"), "{response:?}");
        assert!(response.contains("Content-Length: 9\r\n"));
    }

    #[test]
    fn stop_ends_the_loop_promptly() {
        let dir = TempDir::new("http-stop");
        let mut server = TestServer::start(dir.path(), Arc::new(router));
        thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        server.stop.store(true, Ordering::Relaxed);
        server.thread.take().unwrap().join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn connect_failure_names_the_socket() {
        let dir = TempDir::new("http-connect");
        let socket = dir.path().join("agent.sock");
        let err = Client::new(&socket)
            .get_json::<Value>("/v1/echo")
            .unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&socket.display().to_string()), "{message}");
        assert!(message.contains("agent running"), "{message}");
    }

    #[test]
    fn client_rejects_targets_that_would_break_the_request_line() {
        let client = Client::new("/nonexistent.sock");
        for target in ["v1/x", "/v1/x HTTP/1.1\r\nX: y", "/a b"] {
            assert!(matches!(
                client.request("GET", target, None),
                Err(Error::InvalidRequest { .. })
            ));
        }
        assert!(matches!(
            client.request("GE T", "/", None),
            Err(Error::InvalidRequest { .. })
        ));
    }

    #[test]
    fn bind_refuses_a_live_socket_and_replaces_a_stale_one() {
        let dir = TempDir::new("http-bind");
        let socket = dir.path().join("a/b/agent.sock");

        let live = bind(&socket).unwrap();
        let mode = fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
        let parent_mode = fs::metadata(socket.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        // 0755 minus whatever the umask takes away.
        assert_eq!(parent_mode & 0o7022, 0, "parent mode {parent_mode:o}");

        let err = bind(&socket).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(err.to_string().contains("agent.sock"), "{err}");

        // Dropping the listener leaves the file behind, like a crash would.
        drop(live);
        assert!(socket.exists());
        let _replaced = bind(&socket).unwrap();
        let mode = fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // Anything that is not a socket is left alone.
        let file = dir.path().join("not-a-socket");
        fs::write(&file, b"keep me").unwrap();
        assert_eq!(
            bind(&file).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(fs::read(&file).unwrap(), b"keep me");
    }

    #[test]
    fn query_encoding_round_trips() {
        let pairs = [
            ("a", "1"),
            ("sp ace", "x y"),
            ("amp&eq=", "+%/?#"),
            ("ünï", "日本"),
            ("", ""),
        ];
        let encoded = encode_query(&pairs);
        assert!(encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%&=".contains(&b)));
        let decoded = parse_query(&encoded).unwrap();
        let expected: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, v)| !(k.is_empty() && v.is_empty()))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // `=` alone (an empty pair) decodes as ("", "").
        assert_eq!(decoded[..4], expected[..]);
        assert_eq!(parse_query("x&y=&z=1").unwrap()[0], ("x".into(), "".into()));
        assert!(parse_query("x=%4").is_err());
        assert!(parse_query("x=%ff").is_err());
    }
}
