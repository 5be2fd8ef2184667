//! A private pilusd for the benchmarks that measure the agent: started as
//! a child inside a node namespace of its own, with its own state
//! directory, pin directory and socket, so nothing of a pilusd already on
//! the machine is touched. Dropping [`Agent`] kills it and removes its
//! namespace, pins and state.

use crate::{error::Context, Error};
use pilus_api_types::{paths, Status};
use pilus_client::blocking::Client;
use pilus_netns::{ChildGuard, NetNs};
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// How long pilusd may take to answer its first status.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long pilusd may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

fn spawn(pilusd: &Path, args: &[std::ffi::OsString]) -> Result<ChildGuard, Error> {
    let mut cmd = Command::new(pilusd);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null());
    ChildGuard::spawn(cmd).context("starting pilusd")
}

/// Removes the agent's directories (state, socket, pins) when dropped.
struct Dirs {
    state: PathBuf,
    pins: PathBuf,
}

impl Drop for Dirs {
    fn drop(&mut self) {
        // Removing the pins detaches the TCX links and frees the maps.
        for dir in [&self.pins, &self.state] {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the benchmark agent's directory");
                }
            }
        }
    }
}

/// A running private pilusd. Fields drop in order: the process first, then
/// its directories and pins, then its namespace.
pub(crate) struct Agent {
    process: ChildGuard,
    _dirs: Dirs,
    node: NetNs,
    socket: PathBuf,
    /// How it was started, for [`Agent::restart`].
    pilusd: PathBuf,
    args: Vec<std::ffi::OsString>,
}

impl Agent {
    /// Starts `pilusd` in a new namespace `<prefix>-<pid>-<n>` with the pod
    /// CIDR given (in 198.18.0.0/15), and waits until it answers.
    pub(crate) fn start(pilusd: &Path, prefix: &str, pod_cidr: &str) -> Result<Agent, Error> {
        if !pilusd.is_file() {
            return Err(Error::MissingBinary {
                path: pilusd.to_path_buf(),
            });
        }
        // A run killed by a signal never ran its guards: sweep its
        // namespaces (those of live runs are kept).
        pilus_netns::remove_stale(prefix).context("removing a killed run's namespaces")?;
        let node = NetNs::new(prefix).context("creating the node's namespace")?;
        let tag = node.name().to_string();
        let dirs = Dirs {
            state: std::env::temp_dir().join(format!("pilus-bench-{tag}")),
            pins: PathBuf::from(format!("/sys/fs/bpf/pilus-bench-{tag}")),
        };
        let socket = dirs.state.join("pilus.sock");
        let mut args: Vec<std::ffi::OsString> = [
            "--netns",
            node.name(),
            "--node-name",
            "bench",
            "--pod-cidr",
            pod_cidr,
            "--log",
            "warn",
        ]
        .iter()
        .map(Into::into)
        .collect();
        args.extend([
            "--state-dir".into(),
            dirs.state.join("state").into(),
            "--pin-dir".into(),
            dirs.pins.clone().into(),
            "--socket".into(),
            socket.clone().into(),
        ]);
        let process = spawn(pilusd, &args)?;
        let mut agent = Agent {
            process,
            _dirs: dirs,
            node,
            socket,
            pilusd: pilusd.to_path_buf(),
            args,
        };
        agent.wait_ready()?;
        Ok(agent)
    }

    /// Stops pilusd as an operator would (SIGTERM: the datapath and the
    /// pods stay), starts it again on the same state and pins, and returns
    /// the time from its start until it answered: loading and verifying
    /// the programs, restoring the state, resyncing the pinned maps.
    pub(crate) fn restart(&mut self) -> Result<Duration, Error> {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.process.pid() as i32, libc::SIGTERM) };
        match self
            .process
            .wait_timeout(STOP_TIMEOUT)
            .context("waiting for pilusd to stop")?
        {
            Some(_) => {}
            None => {
                return Err(Error::Unexpected {
                    what: format!("pilusd did not stop within {STOP_TIMEOUT:?} of SIGTERM"),
                })
            }
        }
        let t = Instant::now();
        self.process = spawn(&self.pilusd, &self.args)?;
        self.wait_ready()?;
        Ok(t.elapsed())
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        let c = self.client().with_timeout(Duration::from_secs(5));
        loop {
            if c.get_json::<Status>(paths::STATUS).is_ok() {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(Error::AgentStart {
                    socket: self.socket.clone(),
                    timeout: START_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Fails if pilusd has exited.
    pub(crate) fn check_alive(&mut self) -> Result<(), Error> {
        match self.process.try_wait().context("waiting for pilusd")? {
            Some(status) => Err(Error::AgentExited { status }),
            None => Ok(()),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    pub(crate) fn node(&self) -> &NetNs {
        &self.node
    }

    pub(crate) fn client(&self) -> Client {
        Client::new(&self.socket)
    }
}
