//! Reachability probes and echo servers inside network namespaces, for
//! real-traffic tests and the lab.
//!
//! Every socket here is created while the calling thread is inside the
//! namespace (through [`NetNs::within`]); a socket stays in the namespace it
//! was created in, so all later I/O on it, from any thread, happens there.
//!
//! The probes answer "did the traffic get through?": `Ok(true)` when the
//! echo came back, `Ok(false)` when it did not (timeout, refusal, no route,
//! no neighbour). `Err` is kept for failures of the probe itself, such as a
//! socket the kernel refuses to create.

use std::io::{self, Read, Write};
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::{Error, NetNs};

/// How long [`ping`] waits for a reply before it sends the next request.
const PING_INTERVAL: Duration = Duration::from_millis(250);

/// ICMP message types used by [`ping`].
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;

/// Makes every probe's payload (and ICMP identifier) unique within this
/// process; the pid in the payload separates processes.
static NONCE: AtomicU32 = AtomicU32::new(0);

/// ICMP echo from inside `ns` to `dst` (raw socket, created while entered);
/// `Ok(true)` when a reply with our identifier arrives within `timeout`.
///
/// A request goes out every 250 ms until then. A reply counts only if it
/// comes from `dst` and carries this call's identifier and payload, so
/// concurrent pings in one namespace never answer for each other. A request
/// the kernel cannot send (no route, link down) counts as unanswered.
pub fn ping(ns: &NetNs, dst: Ipv4Addr, timeout: Duration) -> Result<bool, Error> {
    ns.within(|| ping_here(ns.name(), dst, timeout))?
}

/// [`ping`] from the namespace the calling thread is in (`ns` names it in
/// errors): for a caller that entered it already.
pub fn ping_here(ns: &str, dst: Ipv4Addr, timeout: Duration) -> Result<bool, Error> {
    let deadline = deadline(timeout)?;
    let fail = |op, source| socket_error(ns, op, dst, source);
    let sock = socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)
        .map_err(|source| fail("open a raw ICMP socket for", source))?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.octets()),
        },
        sin_zero: [0; 8],
    };
    let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let id = ((pid as u16) ^ (nonce as u16)).to_be_bytes();
    let mut payload = b"pilus-netns ping ".to_vec();
    payload.extend_from_slice(&pid.to_be_bytes());
    payload.extend_from_slice(&nonce.to_be_bytes());

    let mut seq: u16 = 0;
    while let Some(left) = remaining(deadline) {
        seq = seq.wrapping_add(1);
        let request = echo_request(id, seq, &payload);
        match send_to(&sock, &request, &addr) {
            Ok(()) => {}
            // This request is lost; the next one may find a route.
            Err(err) if unanswered(&err) => {}
            Err(err) => return Err(fail("send an ICMP echo request to", err)),
        }
        let attempt_end = Instant::now() + left.min(PING_INTERVAL);
        if await_reply(&sock, dst, &request, attempt_end)
            .map_err(|source| fail("receive an ICMP echo reply from", source))?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// TCP connect from inside `ns` to `dst`, then write one line and read it
/// back (the peer is an [`EchoServer`]); `Ok(false)` on timeout, refusal or
/// no echo. `timeout` covers the whole exchange.
pub fn tcp(ns: &NetNs, dst: SocketAddrV4, timeout: Duration) -> Result<bool, Error> {
    let deadline = deadline(timeout)?;
    // std creates and connects the socket in one call, so the connect runs
    // entered too.
    let stream = match ns.within(|| TcpStream::connect_timeout(&dst.into(), timeout))? {
        Ok(stream) => stream,
        Err(err) if unanswered(&err) => return Ok(false),
        Err(err) => return Err(socket_error(ns.name(), "connect to", dst, err)),
    };
    let line = probe_message("tcp");
    match echo_line(&stream, &line, deadline) {
        Err(err) if unanswered(&err) => Ok(false),
        result => {
            result.map_err(|source| socket_error(ns.name(), "exchange a line with", dst, source))
        }
    }
}

/// UDP: sends one datagram from inside `ns` (ephemeral port) and waits for
/// the echo; `Ok(false)` on timeout, or when `dst` answers with ICMP port
/// unreachable (no server), which ends the wait early.
pub fn udp(ns: &NetNs, dst: SocketAddrV4, timeout: Duration) -> Result<bool, Error> {
    let deadline = deadline(timeout)?;
    let sock = ns
        .within(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))?
        .map_err(|source| socket_error(ns.name(), "open a UDP socket for", dst, source))?;
    let message = probe_message("udp");
    let exchange = || -> io::Result<bool> {
        // Connected, so only `dst` can answer and an ICMP error from it
        // surfaces as ECONNREFUSED.
        sock.connect(dst)?;
        sock.send(&message)?;
        let mut buf = [0u8; 2048];
        while let Some(left) = remaining(deadline) {
            sock.set_read_timeout(Some(left))?;
            let n = sock.recv(&mut buf)?;
            if buf[..n] == message[..] {
                return Ok(true);
            }
        }
        Ok(false)
    };
    match exchange() {
        Err(err) if unanswered(&err) => Ok(false),
        result => result
            .map_err(|source| socket_error(ns.name(), "exchange a datagram with", dst, source)),
    }
}

/// TCP and UDP echo servers bound inside a namespace on `0.0.0.0:<port>`
/// for each port, served by background threads. Dropping the guard stops
/// them: it closes every socket (listeners and open connections) and joins
/// the threads, which takes milliseconds.
///
/// Drop it before the [`NetNs`]: its sockets keep the namespace (and its
/// links) alive, unnamed, until they are closed.
#[derive(Debug)]
pub struct EchoServer {
    ns: String,
    /// Closing this end wakes every server thread (its peer, which they
    /// all poll, reports hang-up) and tells it to stop.
    stop: Option<UnixStream>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    /// Binds TCP and UDP `0.0.0.0:<port>` inside `ns` for every port and
    /// starts serving. Nothing is served if any bind fails (e.g. a port in
    /// use). Port 0 is refused: TCP and UDP would get different ports, and
    /// the caller would know neither.
    pub fn start(ns: &NetNs, ports: &[u16]) -> Result<EchoServer, Error> {
        if ports.contains(&0) {
            return Err(Error::InvalidArgument {
                what: "echo server port",
                value: "0".to_owned(),
                reason: "must be a fixed port",
            });
        }
        let sockets = ns.within(|| {
            ports
                .iter()
                .map(|&port| {
                    let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
                    let tcp = TcpListener::bind(addr)
                        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
                        .map_err(|source| socket_error(ns.name(), "listen on TCP", addr, source))?;
                    let udp = UdpSocket::bind(addr)
                        .and_then(|sock| sock.set_nonblocking(true).map(|()| sock))
                        .map_err(|source| socket_error(ns.name(), "bind UDP", addr, source))?;
                    Ok((port, tcp, udp))
                })
                .collect::<Result<Vec<_>, Error>>()
        })??;

        let (stop, stopped) = UnixStream::pair().map_err(|source| Error::Syscall {
            call: "socketpair",
            source,
        })?;
        let stopped = Arc::new(stopped);
        // From here on, an early return drops `server`, which stops the
        // threads already started.
        let mut server = EchoServer {
            ns: ns.name().to_owned(),
            stop: Some(stop),
            threads: Vec::new(),
        };
        for (port, tcp, udp) in sockets {
            let stop = Arc::clone(&stopped);
            server.spawn(format!("echo-tcp-{port}"), move || {
                serve_tcp(&tcp, port, &stop)
            })?;
            let stop = Arc::clone(&stopped);
            server.spawn(format!("echo-udp-{port}"), move || {
                serve_udp(&udp, port, &stop)
            })?;
        }
        Ok(server)
    }

    fn spawn(&mut self, name: String, f: impl FnOnce() + Send + 'static) -> Result<(), Error> {
        let thread = thread::Builder::new()
            .name(name)
            .spawn(f)
            .map_err(|source| Error::Syscall {
                call: "pthread_create",
                source,
            })?;
        self.threads.push(thread);
        Ok(())
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                eprintln!(
                    "pilus-netns: an echo server thread in network namespace {} panicked",
                    self.ns
                );
            }
        }
    }
}

/// Sends one raw Ethernet frame (the bytes as given, no padding: a frame
/// shorter than 60 bytes goes out short) out of `ifname` inside `ns`,
/// through an `AF_PACKET` `SOCK_RAW` socket. The link must be up.
pub fn send_raw_frame(ns: &NetNs, ifname: &str, frame: &[u8]) -> Result<(), Error> {
    if frame.is_empty() {
        return Err(Error::InvalidArgument {
            what: "Ethernet frame",
            value: String::new(),
            reason: "empty",
        });
    }
    // Also checks the name and reports a missing link as NoSuchLink.
    let ifindex = ns.ifindex(ifname)?;
    let fail = |op, source| socket_error(ns.name(), op, ifname, source);
    // Protocol 0: the socket only sends, it never queues received frames.
    let sock = ns
        .within(|| socket(libc::AF_PACKET, libc::SOCK_RAW, 0))?
        .map_err(|source| fail("open a packet socket for", source))?;
    // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    // ifindex came from the kernel as a positive c_int.
    addr.sll_ifindex = ifindex as i32;
    // sll_protocol 0: the kernel takes the EtherType from the frame.
    send_to(&sock, frame, &addr).map_err(|source| fail("send a raw frame out of", source))
}

/// Server side of the echo: `0.0.0.0:<port>` TCP, one thread per
/// connection, all joined before this returns.
fn serve_tcp(listener: &TcpListener, port: u16, stop: &Arc<UnixStream>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    loop {
        match wait_ready(listener.as_raw_fd(), libc::POLLIN, stop) {
            Ok(true) => {}
            Ok(false) => break,
            Err(err) => {
                eprintln!("pilus-netns: echo server TCP {port}: poll: {err}");
                break;
            }
        }
        match listener.accept() {
            Ok((stream, _)) => {
                connections.retain(|connection| !connection.is_finished());
                let stop = Arc::clone(stop);
                let spawned = thread::Builder::new()
                    .name(format!("echo-conn-{port}"))
                    .spawn(move || {
                        // Any error just ends this connection; the peer sees
                        // it closed, which a probe reports as no echo.
                        let _ = serve_connection(stream, &stop);
                    });
                match spawned {
                    Ok(connection) => connections.push(connection),
                    Err(err) => eprintln!("pilus-netns: echo server TCP {port}: thread: {err}"),
                }
            }
            Err(err) if retry(&err) || err.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(err) => {
                eprintln!("pilus-netns: echo server TCP {port}: accept: {err}");
                break;
            }
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
}

/// Echoes everything read on `stream` until EOF, an error or stop.
fn serve_connection(mut stream: TcpStream, stop: &UnixStream) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    let fd = stream.as_raw_fd();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !wait_ready(fd, libc::POLLIN, stop)? {
            return Ok(());
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if retry(&err) => continue,
            Err(err) => return Err(err),
        };
        let mut sent = 0;
        while sent < n {
            match stream.write(&buf[sent..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => sent += written,
                Err(err) if retry(&err) => {
                    if !wait_ready(fd, libc::POLLOUT, stop)? {
                        return Ok(());
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// Server side of the echo: `0.0.0.0:<port>` UDP, every datagram sent back
/// to where it came from (best effort, like UDP itself).
fn serve_udp(sock: &UdpSocket, port: u16, stop: &UnixStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match wait_ready(sock.as_raw_fd(), libc::POLLIN, stop) {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                eprintln!("pilus-netns: echo server UDP {port}: poll: {err}");
                return;
            }
        }
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                // A lost echo is the client's "no answer"; nothing to do.
                let _ = sock.send_to(&buf[..n], peer);
            }
            // Errors queued by ICMP replies to earlier echoes are about one
            // client only; the socket goes on serving.
            Err(err) if retry(&err) || unanswered(&err) => {}
            Err(err) => {
                eprintln!("pilus-netns: echo server UDP {port}: recv: {err}");
                return;
            }
        }
    }
}

/// Writes `line` and reads until as many bytes came back; true if they are
/// the same bytes.
fn echo_line(mut stream: &TcpStream, line: &[u8], deadline: Instant) -> io::Result<bool> {
    let Some(left) = remaining(deadline) else {
        return Ok(false);
    };
    stream.set_write_timeout(Some(left))?;
    stream.write_all(line)?;
    let mut echoed = Vec::with_capacity(line.len());
    let mut buf = [0u8; 256];
    while echoed.len() < line.len() {
        let Some(left) = remaining(deadline) else {
            return Ok(false);
        };
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf)? {
            0 => return Ok(false),
            n => echoed.extend_from_slice(&buf[..n]),
        }
    }
    Ok(echoed == line)
}

/// Waits until `request`'s echo reply from `dst` arrives (true) or `until`
/// passes (false).
fn await_reply(sock: &OwnedFd, dst: Ipv4Addr, request: &[u8], until: Instant) -> io::Result<bool> {
    let mut buf = [0u8; 2048];
    while let Some(left) = remaining(until) {
        let mut fds = [pollfd(sock.as_raw_fd(), libc::POLLIN)];
        poll(&mut fds, Some(left))?;
        if fds[0].revents == 0 {
            continue;
        }
        // Drain everything queued: the socket sees all ICMP of the namespace.
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                let err = io::Error::last_os_error();
                if retry(&err) || unanswered(&err) {
                    break;
                }
                return Err(err);
            };
            if is_echo_reply(&buf[..n], dst, request) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Whether `packet` (IPv4 header included, as raw sockets deliver it) is an
/// echo reply from `dst` with the identifier and payload of `request`. The
/// sequence number is not checked: a late reply to an earlier request of
/// the same call counts too.
fn is_echo_reply(packet: &[u8], dst: Ipv4Addr, request: &[u8]) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl + 8 {
        return false;
    }
    let icmp = &packet[ihl..];
    packet[12..16] == dst.octets()
        && icmp[0] == ICMP_ECHO_REPLY
        && icmp[1] == 0
        && icmp[4..6] == request[4..6]
        && icmp[8..] == request[8..]
}

/// An ICMP echo request with its checksum filled in.
fn echo_request(id: [u8; 2], seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut request = vec![ICMP_ECHO_REQUEST, 0, 0, 0, id[0], id[1]];
    request.extend_from_slice(&seq.to_be_bytes());
    request.extend_from_slice(payload);
    let sum = checksum(&request);
    request[2..4].copy_from_slice(&sum.to_be_bytes());
    request
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One line, unique to this call, for a TCP or UDP probe to send.
fn probe_message(proto: &str) -> Vec<u8> {
    let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
    format!("pilus-netns {proto} probe {} {nonce}\n", std::process::id()).into_bytes()
}

/// Errors that mean "the traffic did not get through" rather than "the
/// probe is broken".
fn unanswered(err: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | TimedOut
            | WouldBlock
            | UnexpectedEof
            | BrokenPipe
            | NotConnected
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
    ) || err.raw_os_error() == Some(libc::EHOSTDOWN)
}

/// Errors after which the same call is simply tried again.
fn retry(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn socket_error(ns: &str, op: &'static str, target: impl ToString, source: io::Error) -> Error {
    Error::Socket {
        op,
        target: target.to_string(),
        ns: ns.to_owned(),
        source,
    }
}

/// `Instant::now() + timeout`; the timeout must be positive and not absurd.
fn deadline(timeout: Duration) -> Result<Instant, Error> {
    let invalid = |reason| Error::InvalidArgument {
        what: "probe timeout",
        value: format!("{timeout:?}"),
        reason,
    };
    if timeout.is_zero() {
        return Err(invalid("must be more than zero"));
    }
    Instant::now()
        .checked_add(timeout)
        .ok_or_else(|| invalid("too long"))
}

/// Time left until `deadline`; `None` once it has passed.
fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
}

/// A close-on-exec socket owned right away.
fn socket(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned right below.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// sendto(2) of all of `data` to `addr`, a `libc::sockaddr_*` matching the
/// socket's family.
fn send_to<A>(sock: &OwnedFd, data: &[u8], addr: &A) -> io::Result<()> {
    let len = libc::socklen_t::try_from(mem::size_of::<A>()).expect("sockaddr size");
    loop {
        // SAFETY: data and addr are valid for reads of the lengths passed;
        // the kernel only reads them.
        let sent = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                0,
                (addr as *const A).cast(),
                len,
            )
        };
        match usize::try_from(sent) {
            Ok(sent) if sent == data.len() => return Ok(()),
            Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// poll(2) for up to `timeout` (rounded up to whole milliseconds; forever
/// when `None`). An interrupted poll returns early with no events.
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    let ms = timeout.map_or(-1, |timeout| {
        i32::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
    });
    let nfds = libc::nfds_t::try_from(fds.len()).expect("pollfd count");
    // SAFETY: fds is a valid array of nfds pollfds for the whole call.
    if unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) } < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(())
}

/// Waits until `fd` reports `events` (or an error or hang-up, which the
/// next read or write will return): true. Returns false, without waiting,
/// once `stop` reports anything, i.e. its peer was closed.
fn wait_ready(fd: RawFd, events: libc::c_short, stop: &UnixStream) -> io::Result<bool> {
    let mut fds = [pollfd(fd, events), pollfd(stop.as_raw_fd(), libc::POLLIN)];
    loop {
        poll(&mut fds, None)?;
        if fds[1].revents != 0 {
            return Ok(false);
        }
        if fds[0].revents != 0 {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums_to_zero() {
        let request = echo_request([0x12, 0x34], 7, b"odd length payload!");
        assert_eq!(request[0], ICMP_ECHO_REQUEST);
        assert_eq!(request[4..8], [0x12, 0x34, 0, 7]);
        // A packet with its checksum in place sums to all ones.
        assert_eq!(checksum(&request), 0);
    }

    #[test]
    fn replies_must_match_source_identifier_and_payload() {
        let dst = Ipv4Addr::new(198, 18, 0, 2);
        let request = echo_request([0xab, 0xcd], 3, b"payload");
        let reply_from = |src: Ipv4Addr, icmp: &[u8]| {
            let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
            packet.extend_from_slice(&src.octets());
            packet.extend_from_slice(&[198, 18, 0, 1]);
            packet.extend_from_slice(icmp);
            packet
        };
        let mut reply = request.clone();
        reply[0] = ICMP_ECHO_REPLY;
        // A later sequence number still matches.
        reply[7] = 9;
        assert!(is_echo_reply(&reply_from(dst, &reply), dst, &request));
        assert!(!is_echo_reply(
            &reply_from(Ipv4Addr::new(198, 18, 0, 3), &reply),
            dst,
            &request
        ));
        assert!(!is_echo_reply(&reply_from(dst, &request), dst, &request));
        let mut other_id = reply.clone();
        other_id[5] ^= 1;
        assert!(!is_echo_reply(&reply_from(dst, &other_id), dst, &request));
        let mut other_payload = reply.clone();
        other_payload[8] ^= 1;
        assert!(!is_echo_reply(
            &reply_from(dst, &other_payload),
            dst,
            &request
        ));
        assert!(!is_echo_reply(&reply_from(dst, &reply[..6]), dst, &request));
        assert!(!is_echo_reply(&[], dst, &request));
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert!(deadline(Duration::ZERO).is_err());
        assert!(deadline(Duration::MAX).is_err());
        assert!(deadline(Duration::from_millis(1)).is_ok());
    }
}
