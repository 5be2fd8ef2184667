//! Load generators for real traffic between two network namespaces, named
//! as netperf names them: TCP_RR (one connection, one-byte request and
//! response, over and over), TCP_CRR (connect, request, response, close),
//! UDP_RR, and TCP_STREAM (one connection, writes of 128 KiB as fast as
//! the path takes them).
//!
//! The client and the server are threads of this process: each moves
//! itself into its namespace (setns acts on one thread) and pins itself to
//! a CPU of its own, so the two never share one and the scheduler never
//! moves them mid-run. A measurement warms up on the same sockets, then
//! times a window; it reports the transactions, the latency of each one
//! (RR tests), and the CPU time both threads spent in the window, from
//! their thread CPU clocks. This kernel has no IRQ time accounting, so
//! the softirq work done in a thread's context — a veth hands its packet
//! to the receiver's stack on the sender's CPU, tc programs included — is
//! charged to that thread; work deferred to ksoftirqd is not counted.

pub mod cpu;
mod gen;

use crate::Error;
use serde::{Deserialize, Serialize};
use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

/// The servers' TCP port (every TCP test).
pub const TCP_PORT: u16 = 5201;
/// The UDP_RR server's port.
pub const UDP_PORT: u16 = 5202;
/// How long the server may take to be listening.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// A kind of load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Test {
    TcpRr,
    TcpCrr,
    UdpRr,
    TcpStream,
}

impl Test {
    pub const ALL: [Test; 4] = [Test::TcpRr, Test::TcpCrr, Test::UdpRr, Test::TcpStream];

    /// netperf's name.
    pub fn name(self) -> &'static str {
        match self {
            Test::TcpRr => "TCP_RR",
            Test::TcpCrr => "TCP_CRR",
            Test::UdpRr => "UDP_RR",
            Test::TcpStream => "TCP_STREAM",
        }
    }

    /// The unit of its rate.
    pub fn unit(self) -> &'static str {
        match self {
            Test::TcpStream => "Gbit/s",
            _ => "tx/s",
        }
    }

    /// What its CPU time is counted per.
    pub fn cpu_unit(self) -> &'static str {
        match self {
            Test::TcpStream => "µs/MiB",
            _ => "µs/tx",
        }
    }

    /// Request/response tests time every transaction.
    pub fn has_latency(self) -> bool {
        self != Test::TcpStream
    }
}

/// Where the two ends run: the namespaces' files and the server's address.
#[derive(Clone, Debug)]
pub struct Ends {
    pub client: PathBuf,
    pub server: PathBuf,
    pub server_ip: Ipv4Addr,
}

/// How long to warm up and to measure.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Timing {
    pub warmup: Duration,
    pub duration: Duration,
}

/// The CPUs the client and the server are pinned to (`None`: not pinned).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Pinning {
    pub client: Option<usize>,
    pub server: Option<usize>,
}

impl Pinning {
    /// The client on the first CPU this process may use, the server on
    /// the second; both on the first if there is only one.
    pub fn split() -> Pinning {
        let cpus = cpu::allowed_cpus();
        Pinning {
            client: cpus.first().copied(),
            server: cpus.get(1).or(cpus.first()).copied(),
        }
    }
}

/// One measurement's window.
#[derive(Clone, Debug)]
pub struct Measured {
    pub test: Test,
    pub seconds: f64,
    /// Transactions, or bytes received (TCP_STREAM).
    pub count: u64,
    /// Each transaction's time, in ns (empty for TCP_STREAM).
    pub latency_ns: Vec<u32>,
    /// UDP requests that got no answer within the client's timeout.
    pub lost: u64,
    pub client_cpu_s: f64,
    pub server_cpu_s: f64,
}

impl Measured {
    /// Transactions per second, or Gbit/s.
    pub fn rate(&self) -> f64 {
        let per_s = self.count as f64 / self.seconds.max(1e-9);
        match self.test {
            Test::TcpStream => per_s * 8.0 / 1e9,
            _ => per_s,
        }
    }

    /// µs of CPU per transaction, or per MiB (TCP_STREAM).
    pub fn cpu_per_unit(&self, cpu_s: f64) -> f64 {
        let units = match self.test {
            Test::TcpStream => self.count as f64 / (1u64 << 20) as f64,
            _ => self.count as f64,
        };
        cpu_s * 1e6 / units.max(1e-9)
    }
}

/// What the server thread hands back once it listens: its CPU clock.
type Ready = Result<libc::clockid_t, std::io::Error>;

/// Runs one measurement: starts the server in its namespace, runs the
/// client in its own, stops the server. Fails if either end fails (a
/// connection refused or reset, a server that cannot bind): a time of a
/// broken path means nothing.
pub fn run(test: Test, ends: &Ends, timing: Timing, pin: Pinning) -> Result<Measured, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
    let server = {
        let (stop, received, ns) = (stop.clone(), received.clone(), ends.server.clone());
        std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || gen::server(test, &ns, pin.server, &stop, &received, ready_tx))
            .map_err(|source| Error::Io {
                what: "starting the server thread".into(),
                source,
            })?
    };
    let finish = |server: std::thread::JoinHandle<std::io::Result<()>>| {
        stop.store(true, Ordering::Relaxed);
        match server.join() {
            Ok(r) => r.map_err(|source| Error::Io {
                what: format!("{} server", test.name()),
                source,
            }),
            Err(_) => Err(Error::Unexpected {
                what: format!("the {} server thread panicked", test.name()),
            }),
        }
    };
    let clock = match ready_rx.recv_timeout(READY_TIMEOUT) {
        Ok(Ok(clock)) => clock,
        Ok(Err(source)) => {
            let _ = finish(server);
            return Err(Error::Io {
                what: format!("starting the {} server", test.name()),
                source,
            });
        }
        Err(_) => {
            let _ = finish(server);
            return Err(Error::Unexpected {
                what: format!(
                    "the {} server did not listen within {READY_TIMEOUT:?}",
                    test.name()
                ),
            });
        }
    };
    let client = {
        let (ends, received) = (ends.clone(), received.clone());
        std::thread::Builder::new()
            .name("bench-client".into())
            .spawn(move || gen::client(test, &ends, timing, pin.client, clock, &received))
            .map_err(|source| Error::Io {
                what: "starting the client thread".into(),
                source,
            })
    };
    let measured = match client {
        Ok(c) => c
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the client thread panicked"))),
        Err(e) => {
            let _ = finish(server);
            return Err(e);
        }
    };
    let served = finish(server);
    let measured = measured.map_err(|source| Error::Io {
        what: format!(
            "{} client {} -> {}",
            test.name(),
            ends.client.display(),
            ends.server_ip
        ),
        source,
    })?;
    served?;
    Ok(measured)
}
