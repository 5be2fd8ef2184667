//! The two ends of each test: the server thread's loops and the client
//! thread's timed window. Plain blocking sockets from std, one
//! transaction at a time, as netperf's RR tests do.

use super::{cpu, Ends, Measured, Ready, Test, Timing, TCP_PORT, UDP_PORT};
use std::{
    io::{self, ErrorKind, Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::Sender,
    },
    time::{Duration, Instant},
};

/// How often a blocked server looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// A request that gets no answer within this is lost (UDP) or fails the
/// measurement (TCP: the path is broken).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP_STREAM's write and read size.
const CHUNK: usize = 128 * 1024;

fn enter(ns: &Path, pin: Option<usize>) -> io::Result<pilus_netlink::netns::NetnsGuard> {
    let inside = pilus_netlink::netns::enter_path(ns).map_err(io::Error::other)?;
    if let Some(cpu) = pin {
        cpu::pin_here(cpu)?;
    }
    Ok(inside)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// SO_RCVTIMEO on a listening socket: `accept` honours it, so the server
/// wakes up to look at the stop flag without a non-blocking accept (whose
/// polling would add its own delay to every TCP_CRR connection).
fn accept_timeout(l: &TcpListener, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt reads `tv` (a timeval, as SO_RCVTIMEO takes)
    // within the length given; the descriptor is the listener's own.
    let rc = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// The server thread: enters `ns`, pins itself, listens, says it is
/// ready (with its CPU clock), serves until `stop`.
pub(super) fn server(
    test: Test,
    ns: &Path,
    pin: Option<usize>,
    stop: &AtomicBool,
    received: &AtomicU64,
    ready: Sender<Ready>,
) -> io::Result<()> {
    let setup = (|| -> io::Result<_> {
        let inside = enter(ns, pin)?;
        let clock = cpu::own_clock()?;
        let any = Ipv4Addr::UNSPECIFIED;
        let socket = if test == Test::UdpRr {
            let s = UdpSocket::bind((any, UDP_PORT))?;
            s.set_read_timeout(Some(POLL))?;
            Socket::Udp(s)
        } else {
            let l = TcpListener::bind((any, TCP_PORT))?;
            accept_timeout(&l, POLL)?;
            Socket::Tcp(l)
        };
        Ok((inside, clock, socket))
    })();
    let (_inside, clock, socket) = match setup {
        Ok(s) => s,
        Err(e) => {
            let kind = e.kind();
            let _ = ready.send(Err(e));
            return Err(io::Error::new(kind, "server setup failed (reported)"));
        }
    };
    // The receiver is gone only if the caller gave up waiting.
    let _ = ready.send(Ok(clock));
    match socket {
        Socket::Udp(udp) => serve_udp(&udp, stop),
        Socket::Tcp(listener) => loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let conn = match listener.accept() {
                Ok((c, _)) => c,
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            conn.set_nodelay(true)?;
            conn.set_read_timeout(Some(POLL))?;
            // A connection the client dropped mid-way (its error is the
            // client's to report) does not end the server.
            let _ = match test {
                Test::TcpRr | Test::TcpCrr => serve_rr(conn, stop),
                Test::TcpStream => serve_stream(conn, stop, received),
                Test::UdpRr => unreachable!("UDP has no listener"),
            };
        },
    }
}

/// Answers every byte with a byte until the client closes (TCP_RR: one
/// connection; TCP_CRR: one request per connection, then EOF).
fn serve_rr(mut c: TcpStream, stop: &AtomicBool) -> io::Result<()> {
    let mut b = [0u8; 1];
    loop {
        match c.read(&mut b) {
            Ok(0) => return Ok(()),
            Ok(_) => c.write_all(&b)?,
            Err(e) if is_timeout(&e) => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn serve_stream(mut c: TcpStream, stop: &AtomicBool, received: &AtomicU64) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if is_timeout(&e) => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn serve_udp(s: &UdpSocket, stop: &AtomicBool) -> io::Result<()> {
    let mut b = [0u8; 64];
    loop {
        match s.recv_from(&mut b) {
            Ok((n, from)) => {
                s.send_to(&b[..n], from)?;
            }
            Err(e) if is_timeout(&e) => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// TCP_CRR opens tens of thousands of connections a run from one
/// address: the client's namespace gets the whole port range and may
/// reuse a port in TIME_WAIT (older than 1 s, as the timestamps allow),
/// as a load generator's host is tuned. Only the client's namespace.
fn tune_for_crr() -> io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "1")?;
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535")
}

/// The client thread: enters its namespace, pins itself, warms up, then
/// times the window.
pub(super) fn client(
    test: Test,
    ends: &Ends,
    timing: Timing,
    pin: Option<usize>,
    server_clock: libc::clockid_t,
    received: &AtomicU64,
) -> io::Result<Measured> {
    let _inside = enter(&ends.client, pin)?;
    let own = cpu::own_clock()?;
    let tcp: SocketAddr = (ends.server_ip, TCP_PORT).into();
    let clocks = (own, server_clock);
    let mut b = [0u8; 1];
    match test {
        Test::TcpRr => {
            let mut s = connect(&tcp)?;
            window(test, timing, clocks, None, || {
                s.write_all(&[1])?;
                s.read_exact(&mut b)?;
                Ok(true)
            })
        }
        Test::TcpCrr => {
            tune_for_crr()?;
            window(test, timing, clocks, None, || {
                let mut s = connect(&tcp)?;
                s.write_all(&[1])?;
                s.read_exact(&mut b)?;
                Ok(true)
            })
        }
        Test::UdpRr => {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            s.connect((ends.server_ip, UDP_PORT))?;
            s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
            window(test, timing, clocks, None, || {
                s.send(&[1])?;
                match s.recv(&mut b) {
                    Ok(_) => Ok(true),
                    Err(e) if is_timeout(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            })
        }
        Test::TcpStream => {
            let mut s = connect(&tcp)?;
            let buf = vec![0x5a_u8; CHUNK];
            let m = window(test, timing, clocks, Some(received), || {
                s.write_all(&buf)?;
                Ok(true)
            })?;
            s.shutdown(Shutdown::Write)?;
            Ok(m)
        }
    }
}

fn connect(addr: &SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(addr, ANSWER_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    Ok(s)
}

/// Runs `tx` for the warm-up, then times a window of `timing.duration`:
/// each transaction's time (when the test has latency), the count (or,
/// with `counter`, the bytes the server received in the window), and both
/// threads' CPU time. `tx` answers false for a request without an answer.
fn window(
    test: Test,
    timing: Timing,
    (own, server): (libc::clockid_t, libc::clockid_t),
    counter: Option<&AtomicU64>,
    mut tx: impl FnMut() -> io::Result<bool>,
) -> io::Result<Measured> {
    let warm_end = Instant::now() + timing.warmup;
    while Instant::now() < warm_end {
        tx()?;
    }
    let mut latency_ns = Vec::with_capacity(if test.has_latency() { 1 << 16 } else { 0 });
    let (mut count, mut lost) = (0u64, 0u64);
    let bytes0 = counter.map(|c| c.load(Ordering::Relaxed));
    let cpu0 = (cpu::read(own)?, cpu::read(server)?);
    let t0 = Instant::now();
    let end = t0 + timing.duration;
    let mut t = t0;
    loop {
        let answered = tx()?;
        let now = Instant::now();
        if answered {
            count += 1;
            if test.has_latency() {
                latency_ns.push(u32::try_from((now - t).as_nanos()).unwrap_or(u32::MAX));
            }
        } else {
            lost += 1;
        }
        t = now;
        if now >= end {
            break;
        }
    }
    let cpu1 = (cpu::read(own)?, cpu::read(server)?);
    if let (Some(c), Some(b0)) = (counter, bytes0) {
        count = c.load(Ordering::Relaxed) - b0;
    }
    Ok(Measured {
        test,
        seconds: (t - t0).as_secs_f64(),
        count,
        latency_ns,
        lost,
        client_cpu_s: cpu1.0 - cpu0.0,
        server_cpu_s: cpu1.1 - cpu0.1,
    })
}
