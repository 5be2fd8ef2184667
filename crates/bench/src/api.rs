//! The agent's API under a slow-client attack: `GET /v1/status` latency of
//! a private, idle pilusd, then of the same pilusd while `half_open`
//! connections each hold a request that never ends (a request line and one
//! header, never the blank line), then idle again once they are gone; with
//! the agent's threads, resident memory and open descriptors at each
//! point.
//!
//! pilusd closes a connection whose request head has not arrived within
//! its header timeout (5 s); the holder reopens every connection the
//! server closes, at once, so as many stay held while the held
//! measurement runs. Each phase spreads its requests evenly over
//! `phase` (default 12 s, more than two header timeouts), so the held
//! phase also times the agent while it closes and accepts the whole set
//! again, the worst moment of such an attack; the idle phases are paced
//! alike, so the three compare like with like. The lowest number held at
//! any timed request is reported, so a dip cannot go unnoticed. The status
//! requests go through `pilus-client`, as `pilus status` does (a
//! connection per request).

use crate::{agent::Agent, error::Context, stats, stats::Latency, Error};
use pilus_api_types::{paths, Status};
use serde::Serialize;
use std::{
    io::{ErrorKind, Read, Write},
    os::{fd::AsRawFd, unix::net::UnixStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// The head every held connection sends, without the blank line that
/// would end it.
const HALF_REQUEST: &[u8] = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n";
/// How long the agent may take to accept the held connections.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Untimed status requests first (the client's runtime, the agent's
/// first connections).
const WARMUP: usize = 100;
/// One status request's timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the holder looks for connections the server closed.
const POLL_MS: i32 = 20;
/// Descriptors the process needs beyond the held connections.
const SPARE_FDS: usize = 256;
/// Time for the agent to close the connections of finished requests.
const SETTLE: Duration = Duration::from_millis(200);
/// The agent's pod CIDR (no endpoint is made).
const POD_CIDR: &str = "198.18.0.0/24";

#[derive(Clone, Debug, Serialize)]
pub struct Options {
    /// Timed `GET /v1/status` requests in each phase.
    pub requests: usize,
    /// Half-open connections held during the second phase.
    pub half_open: usize,
    /// How long each phase lasts at least: its requests are spread evenly
    /// over it.
    pub phase: Duration,
    /// The pilusd binary to start.
    pub pilusd: PathBuf,
}

/// The agent's process as `/proc` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Readings {
    pub threads: u64,
    pub rss_kib: u64,
    pub open_fds: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub requests: usize,
    pub half_open: usize,
    /// Baseline: the idle agent, before any connection is held.
    pub idle: Latency,
    /// The same agent, `half_open` connections held.
    pub held: Latency,
    /// Idle again, after the held connections are closed.
    pub idle_after: Latency,
    /// held / idle, at p50 and at p99.
    pub held_to_idle_p50: f64,
    pub held_to_idle_p99: f64,
    /// The fewest connections the holder had open at the start of any
    /// timed request of the held phase.
    pub held_min: usize,
    /// The fewest the agent held then (its open descriptors above those it
    /// had before the connections were opened): below `half_open` while
    /// it closes a set at its header timeout and accepts the new one.
    pub accepted_min: usize,
    /// Connections the server closed (header timeout) and the holder
    /// opened again, during the held phase.
    pub reopened: usize,
    /// How long the held phase's timed requests took, in seconds.
    pub held_phase_s: f64,
    /// How long each phase was to last at least, in seconds.
    pub phase_s: f64,
    /// How long opening the connections and the agent accepting them took.
    pub accept_ms: f64,
    pub readings_idle: Readings,
    /// Taken at the end of the held phase, still holding.
    pub readings_held: Readings,
    pub readings_after: Readings,
}

fn readings(pid: u32) -> Result<Readings, Error> {
    Ok(Readings {
        threads: stats::threads(pid)?,
        rss_kib: stats::rss_kib(pid)?,
        open_fds: stats::open_fds(pid)?,
    })
}

/// Raises this process's open-file soft limit to the hard limit; fails if
/// that is still under `need`.
fn raise_open_files(need: usize) -> Result<(), Error> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on one rlimit we own.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
        }
    };
    if !ok {
        return Err(Error::Io {
            what: "raising the open file limit".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    if (lim.rlim_cur as usize) < need {
        return Err(Error::Options {
            option: "half_open",
            reason: format!(
                "needs {need} open files, the hard limit is {}",
                lim.rlim_cur
            ),
        });
    }
    Ok(())
}

/// Times `n` status requests, the i-th starting no earlier than `i/n` of
/// `phase` after the first.
fn time_status(
    c: &pilus_client::blocking::Client,
    n: usize,
    phase: Duration,
    mut before_each: impl FnMut() -> Result<(), Error>,
) -> Result<Vec<Duration>, Error> {
    let mut v = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let due = start + phase.mul_f64(i as f64 / n as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        before_each()?;
        let t = Instant::now();
        let _: Status = c.get_json(paths::STATUS).context("GET /v1/status")?;
        v.push(t.elapsed());
    }
    Ok(v)
}

/// Opens one connection and sends the unfinished request head.
fn open_half(socket: &Path) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(socket)?;
    s.write_all(HALF_REQUEST)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The held connections, kept open by a thread of their own.
struct Holder {
    stop: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    reopened: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Holder {
    /// Opens `n` connections (failing if any cannot be opened) and starts
    /// the thread that reopens those the server closes.
    fn open(socket: &Path, n: usize) -> Result<Holder, Error> {
        let conns = (0..n)
            .map(|i| open_half(socket).context(format!("opening held connection {i}")))
            .map(|r| r.map(Some))
            .collect::<Result<Vec<_>, _>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(n));
        let reopened = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, held, reopened) = (stop.clone(), held.clone(), reopened.clone());
            let socket = socket.to_path_buf();
            std::thread::Builder::new()
                .name("half-open".into())
                .spawn(move || hold(&socket, conns, &stop, &held, &reopened))
                .context("starting the holder thread")?
        };
        Ok(Holder {
            stop,
            held,
            reopened,
            thread: Some(thread),
        })
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn reopened(&self) -> usize {
        self.reopened.load(Ordering::Relaxed)
    }
}

impl Drop for Holder {
    /// Stops the thread, which closes every connection.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::warn!("the holder thread panicked");
            }
        }
    }
}

/// The holder's loop: waits for the server to close (or answer) a
/// connection and opens it again, until `stop`.
fn hold(
    socket: &Path,
    mut conns: Vec<Option<UnixStream>>,
    stop: &AtomicBool,
    held: &AtomicUsize,
    reopened: &AtomicUsize,
) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        // A slot whose reopen failed (the listen backlog full at that
        // moment) is tried again on every round.
        for slot in conns.iter_mut().filter(|c| c.is_none()) {
            if let Ok(s) = open_half(socket) {
                *slot = Some(s);
                held.fetch_add(1, Ordering::Relaxed);
                reopened.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut fds: Vec<libc::pollfd> = conns
            .iter()
            .flatten()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live array of fds.len() pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
        if n <= 0 {
            continue;
        }
        let ready: Vec<i32> = fds
            .iter()
            .filter(|p| p.revents != 0)
            .map(|p| p.fd)
            .collect();
        for slot in conns.iter_mut() {
            let Some(s) = slot else { continue };
            if !ready.contains(&s.as_raw_fd()) {
                continue;
            }
            // The server has nothing to say to half a request but the end
            // of the connection; whatever it sent, this one is done.
            match s.read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                _ => {}
            }
            held.fetch_sub(1, Ordering::Relaxed);
            *slot = open_half(socket).ok();
            if slot.is_some() {
                held.fetch_add(1, Ordering::Relaxed);
                reopened.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn check(opts: &Options) -> Result<(), Error> {
    if opts.requests == 0 {
        return Err(Error::Options {
            option: "requests",
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}

/// Runs the benchmark. Needs root (a namespace, BPF, bpffs for pilusd).
pub fn run(opts: &Options) -> Result<Report, Error> {
    crate::require_root("api", "a namespace and BPF for pilusd")?;
    check(opts)?;
    raise_open_files(opts.half_open + SPARE_FDS)?;
    let mut agent = Agent::start(&opts.pilusd, "pbapi", POD_CIDR)?;
    let pid = agent.pid();
    let c = agent.client().with_timeout(REQUEST_TIMEOUT);
    time_status(&c, WARMUP, Duration::ZERO, || Ok(()))?;

    tracing::info!(requests = opts.requests, "timing status requests, idle");
    let readings_idle = readings(pid)?;
    let idle = time_status(&c, opts.requests, opts.phase, || Ok(()))?;

    // The timed requests' connections are closed by now, or about to be:
    // count the agent's descriptors once they are.
    std::thread::sleep(SETTLE);
    let base_fds = stats::open_fds(pid)?;
    tracing::info!(half_open = opts.half_open, "opening half-open connections");
    let t = Instant::now();
    let holder = Holder::open(agent.socket(), opts.half_open)?;
    // Held means accepted and being read by the agent: wait for its
    // descriptors to show them.
    let want = base_fds + opts.half_open;
    while stats::open_fds(pid)? < want {
        agent.check_alive()?;
        if t.elapsed() > ACCEPT_TIMEOUT {
            return Err(Error::Unexpected {
                what: format!(
                    "pilusd holds {} descriptors, not the {want} the held connections need, after {ACCEPT_TIMEOUT:?}",
                    stats::open_fds(pid)?
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let accept = t.elapsed();

    tracing::info!(
        requests = opts.requests,
        "timing status requests, connections held"
    );
    let (mut held_min, mut accepted_min) = (usize::MAX, usize::MAX);
    let reopened_before = holder.reopened();
    let t = Instant::now();
    let held = time_status(&c, opts.requests, opts.phase, || {
        // Outside the timed region: what the holder has open, and what the
        // agent holds (its descriptors above the idle count).
        held_min = held_min.min(holder.held());
        accepted_min = accepted_min.min(stats::open_fds(pid)?.saturating_sub(base_fds));
        Ok(())
    })?;
    let held_phase = t.elapsed();
    let readings_held = readings(pid)?;
    let reopened = holder.reopened() - reopened_before;
    drop(holder);

    tracing::info!(
        requests = opts.requests,
        "timing status requests, idle again"
    );
    let idle_after = time_status(&c, opts.requests, opts.phase, || Ok(()))?;
    let readings_after = readings(pid)?;
    agent.check_alive()?;
    drop(agent);

    let summary = |v: Vec<Duration>| Latency::of(v).expect("at least one request (checked)");
    let (idle, held, idle_after) = (summary(idle), summary(held), summary(idle_after));
    Ok(Report {
        bench: "api",
        requests: opts.requests,
        half_open: opts.half_open,
        held_to_idle_p50: stats::round(held.p50_ms / idle.p50_ms, 2),
        held_to_idle_p99: stats::round(held.p99_ms / idle.p99_ms, 2),
        idle,
        held,
        idle_after,
        held_min,
        accepted_min,
        reopened,
        held_phase_s: stats::round(held_phase.as_secs_f64(), 2),
        phase_s: opts.phase.as_secs_f64(),
        accept_ms: stats::round(accept.as_secs_f64() * 1e3, 1),
        readings_idle,
        readings_held,
        readings_after,
    })
}
