//! The client for callers without an async runtime (the CLI, the CNI
//! plugin, the lab, tests): [`Client`] runs the async client on a
//! current-thread runtime of its own, one request at a time.
//!
//! Do not call it from inside a tokio runtime: `block_on` there panics.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::runtime::Runtime;

use crate::{Error, Response};

/// [`crate::Client`], blocking. Clones share one runtime.
#[derive(Debug, Clone)]
pub struct Client {
    inner: crate::Client,
    /// Built on first use: a `Client` that is never used (e.g. the CLI for
    /// a command that needs no agent) costs no epoll or timer.
    runtime: Arc<std::sync::OnceLock<Runtime>>,
}

impl Client {
    /// See [`crate::Client::new`].
    pub fn new(path: impl Into<std::path::PathBuf>) -> Client {
        Client {
            inner: crate::Client::new(path),
            runtime: Arc::default(),
        }
    }

    /// See [`crate::Client::with_timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.inner = self.inner.with_timeout(timeout);
        self
    }

    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    /// The async client underneath.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let runtime = match self.runtime.get() {
            Some(r) => r,
            None => {
                let built = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                    .map_err(|source| Error::Runtime { source })?;
                // Another clone may have won the race: use whichever is in.
                let _ = self.runtime.set(built);
                self.runtime.get().expect("runtime just set")
            }
        };
        runtime.block_on(f)
    }

    /// See [`crate::Client::request`].
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, Error> {
        self.block_on(self.inner.request(method, path_and_query, body))
    }

    /// See [`crate::Client::get_json`].
    pub fn get_json<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, Error> {
        self.block_on(self.inner.get_json(path_and_query))
    }

    /// See [`crate::Client::post_json`].
    pub fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        body: &B,
    ) -> Result<T, Error> {
        self.block_on(self.inner.post_json(path_and_query, body))
    }

    /// See [`crate::Client::delete_json`].
    pub fn delete_json<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, Error> {
        self.block_on(self.inner.delete_json(path_and_query))
    }
}
