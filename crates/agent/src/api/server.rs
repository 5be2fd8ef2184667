//! The API's socket and connections: [`bind`] makes the unix socket (mode
//! 0600; access control is the file's mode, there is no authentication at
//! the HTTP level) without ever stealing a live agent's, and [`serve`]
//! accepts connections and serves HTTP/1.1 on them with hyper until told
//! to stop (on the unix socket, and on the metrics' TCP address: see
//! [`Accept`]).
//!
//! A connection is a task, not a thread: an idle or slow client costs a few
//! kilobytes of buffers until [`Limits::header_read_timeout`] closes it, and
//! at most [`Limits::max_connections`] are held at once.

use super::{limits::Limits, parse_errors::JsonParseErrors};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use std::{
    fs::{self, DirBuilder, Permissions},
    io,
    os::unix::{
        fs::{DirBuilderExt, FileTypeExt, PermissionsExt},
        net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream},
    },
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::{watch, Semaphore},
};
use tower::ServiceExt;

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("creating the socket's directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("inspecting {}", path.display())]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Something answers on the socket: another agent is running.
    #[error("{}: another process is already listening on this socket", path.display())]
    InUse { path: PathBuf },
    #[error("{}: exists and is not a socket; refusing to replace it", path.display())]
    NotASocket { path: PathBuf },
    #[error("probing the existing socket {}", path.display())]
    Probe {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("removing the stale socket {}", path.display())]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("binding {}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("setting mode 0600 on {}", path.display())]
    Chmod {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds the agent's socket at `path`.
///
/// Creates the parent directory (mode 0755) if missing. An existing socket
/// file is removed only if nothing answers on it (a crashed agent's
/// leftover); if another process is listening the call fails with
/// [`BindError::InUse`] instead of stealing its socket. A path that exists
/// but is not a socket is never removed. The socket is chmod-ed to 0600
/// once bound.
///
/// Between `bind` and `chmod` the socket briefly has the umask's mode; the
/// parent directory should therefore not be writable or searchable by
/// untrusted users if that matters. Two processes binding the same path at
/// the very same moment can both see it as stale: the caller should hold a
/// lock (or be the only agent instance) for this to be a real guarantee.
///
/// Blocking (the probe connects); call it before serving.
pub fn bind(path: &Path) -> Result<StdUnixListener, BindError> {
    let at = || path.to_path_buf();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // `recursive` leaves an existing directory (and its mode) alone.
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|source| BindError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match StdUnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse { path: at() }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => fs::remove_file(path)
                .map_err(|source| BindError::RemoveStale { path: at(), source })?,
            Err(source) => return Err(BindError::Probe { path: at(), source }),
        },
        Ok(_) => return Err(BindError::NotASocket { path: at() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(BindError::Inspect { path: at(), source }),
    }
    let listener =
        StdUnixListener::bind(path).map_err(|source| BindError::Bind { path: at(), source })?;
    fs::set_permissions(path, Permissions::from_mode(0o600))
        .map_err(|source| BindError::Chmod { path: at(), source })?;
    Ok(listener)
}

/// A listening socket [`serve`] accepts connections from: the API's unix
/// socket, or the metrics' TCP address.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_io(&self) -> impl std::future::Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for UnixListener {
    type Io = UnixStream;
    async fn accept_io(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Accept for TcpListener {
    type Io = TcpStream;
    async fn accept_io(&self) -> io::Result<TcpStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// How long the accept loop pauses after a failed accept (out of file
/// descriptors, most likely): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `stop` turns true (or its sender is
/// dropped), then stops accepting and gives the requests in flight
/// [`Limits::shutdown_grace`] to finish; connections still open after that
/// are dropped. Returns how many were.
///
/// A request whose head does not parse gets hyper's 400/414/431 with a JSON
/// body; a connection that has not sent a whole head within
/// [`Limits::header_read_timeout`] (from its start, or from the end of its
/// previous response) is closed without an answer.
pub async fn serve(
    listener: impl Accept,
    app: axum::Router,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) -> usize {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Clients (and tests) may shut down their write side and wait for
        // the answer; without this hyper would drop the connection on EOF.
        .half_close(true)
        .keep_alive(true)
        // hyper's smallest read buffer limit: a request head must fit in it
        // (the body is read through it in pieces).
        .max_buf_size(64 << 10);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        // A slot first: at the limit the loop stops accepting, and further
        // clients wait in the kernel's listen backlog, not in memory here.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept_io() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req| app.clone().oneshot(normalize(req)));
        let connection = http.serve_connection(TokioIo::new(JsonParseErrors::new(stream)), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts, parse errors and clients that went away: the
                // client's business, not the agent's.
                tracing::debug!(error = %e, "API connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let open = graceful.count();
    tokio::select! {
        _ = graceful.shutdown() => 0,
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(open, "API connections still open after the shutdown grace; dropping them");
            open
        }
    }
}

/// Resolves once `stop` turns true or its sender is gone. (The watch's
/// `Ref` is dropped here, so the caller's future stays `Send`.)
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// `/v1/status/` and `//v1/status` are `/v1/status`, as before the move to
/// axum (whose routes match one spelling only).
fn normalize<B>(mut req: http::Request<B>) -> http::Request<B> {
    let path = req.uri().path();
    let trimmed = path.trim_matches('/');
    if trimmed.len() + 1 == path.len() && path.starts_with('/') {
        return req;
    }
    let mut path_and_query = format!("/{trimmed}");
    if let Some(q) = req.uri().query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Raises the soft limit on open files to at least `needed` (up to the hard
/// limit): a service manager's default of 1024 would make accept(2) fail
/// before [`Limits::max_connections`] is reached. Returns the soft limit in
/// force.
pub fn ensure_open_files(needed: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= needed {
        return Ok(lim.rlim_cur);
    }
    lim.rlim_cur = needed.min(lim.rlim_max);
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_like_before() {
        let n = |t: &str| {
            normalize(http::Request::get(t).body(()).unwrap())
                .uri()
                .to_string()
        };
        assert_eq!(n("/v1/status"), "/v1/status");
        assert_eq!(n("/v1/status/"), "/v1/status");
        assert_eq!(
            n("//v1/endpoints//?ifname=eth0"),
            "/v1/endpoints?ifname=eth0"
        );
        assert_eq!(n("/"), "/");
    }
}
