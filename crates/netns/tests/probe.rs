//! Probes and echo servers over a real veth link between two namespaces.
//! These tests need root and fail (they do not skip) when namespaces cannot
//! be made. Addresses come from 198.18.0.0/15 (the benchmarking range) only,
//! and nothing is configured in the root namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use pilus_netns::probe::{self, EchoServer};
use pilus_netns::{veth_pair, Error, NetNs};

/// Prefix of every namespace these tests make.
const PREFIX: &str = "pnp";
const A_IF: &str = "pnp-va";
const B_IF: &str = "pnp-vb";
const A_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 101, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 101, 2);
/// In the link's subnet, but no host has it: ARP goes unanswered.
const ABSENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 101, 99);
const PORT: u16 = 8080;
const CLOSED_PORT: u16 = 9090;
/// For probes that must succeed.
const LONG: Duration = Duration::from_secs(5);
/// For probes that must fail.
const SHORT: Duration = Duration::from_millis(300);
/// The slack a failing probe gets past its timeout, and the most an echo
/// server's drop may take.
const PROMPT: Duration = Duration::from_secs(1);
/// An EtherType for local experiments (IEEE 802), which no stack answers.
const ETHERTYPE_EXPERIMENTAL: u16 = 0x88b5;

/// Two namespaces, `a` (198.18.101.1/24 on `pnp-va`) and `b`
/// (198.18.101.2/24 on `pnp-vb`), joined by a veth pair.
fn pair() -> (NetNs, NetNs) {
    let new = || NetNs::new(PREFIX).expect("cannot create a network namespace (tests need root)");
    let (a, b) = (new(), new());
    veth_pair(&a, A_IF, &b, B_IF).unwrap();
    a.ip(&["addr", "add", "198.18.101.1/24", "dev", A_IF])
        .unwrap();
    b.ip(&["addr", "add", "198.18.101.2/24", "dev", B_IF])
        .unwrap();
    (a, b)
}

/// Runs `f` and returns its result with the time it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let result = f();
    (result, start.elapsed())
}

/// Checks that a probe said "no" and did so before its timeout was up
/// (`quick`, e.g. a refusal) or by waiting it out (no answer at all).
fn assert_fails(what: &str, probe: impl FnOnce() -> Result<bool, Error>, quick: bool) {
    let (result, took) = timed(probe);
    assert!(!result.unwrap(), "{what}: probe succeeded");
    if quick {
        assert!(took < SHORT, "{what}: took {took:?}, not refused at once");
    } else {
        assert!(
            took >= SHORT && took < SHORT + PROMPT,
            "{what}: took {took:?} for a {SHORT:?} timeout"
        );
    }
}

#[test]
fn ping_gets_replies_from_the_peer_only() {
    let (a, b) = pair();
    assert!(probe::ping(&a, B_IP, LONG).unwrap(), "a cannot ping b");
    assert!(probe::ping(&b, A_IP, LONG).unwrap(), "b cannot ping a");
    // Concurrent pings in one namespace each get their own reply.
    std::thread::scope(|scope| {
        let pings: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| probe::ping(&a, B_IP, LONG)))
            .collect();
        for ping in pings {
            assert!(ping.join().unwrap().unwrap());
        }
    });
    assert_fails(
        "ping absent host",
        || probe::ping(&a, ABSENT_IP, SHORT),
        false,
    );
    assert!(matches!(
        probe::ping(&a, B_IP, Duration::ZERO),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn tcp_and_udp_get_their_echo() {
    let (a, b) = pair();
    let _server = EchoServer::start(&b, &[PORT, PORT + 1]).unwrap();
    for port in [PORT, PORT + 1] {
        let dst = SocketAddrV4::new(B_IP, port);
        assert!(probe::tcp(&a, dst, LONG).unwrap(), "tcp {dst}");
        assert!(probe::udp(&a, dst, LONG).unwrap(), "udp {dst}");
    }
    // The server listens on every address of `b`, for `b` itself too.
    let local = SocketAddrV4::new(B_IP, PORT);
    assert!(probe::tcp(&b, local, LONG).unwrap());
    assert!(probe::udp(&b, local, LONG).unwrap());
    // Several clients at once, each on its own connection.
    std::thread::scope(|scope| {
        let probes: Vec<_> = (0..8)
            .map(|i| {
                let a = &a;
                scope.spawn(move || {
                    let dst = SocketAddrV4::new(B_IP, PORT);
                    if i % 2 == 0 {
                        probe::tcp(a, dst, LONG)
                    } else {
                        probe::udp(a, dst, LONG)
                    }
                })
            })
            .collect();
        for probe in probes {
            assert!(probe.join().unwrap().unwrap());
        }
    });
}

#[test]
fn tcp_and_udp_fail_without_server_or_host() {
    let (a, b) = pair();
    let _server = EchoServer::start(&b, &[PORT]).unwrap();
    let closed = SocketAddrV4::new(B_IP, CLOSED_PORT);
    // RST and ICMP port unreachable end the wait early.
    assert_fails("tcp closed port", || probe::tcp(&a, closed, SHORT), true);
    assert_fails("udp closed port", || probe::udp(&a, closed, SHORT), true);
    let absent = SocketAddrV4::new(ABSENT_IP, PORT);
    assert_fails("tcp absent host", || probe::tcp(&a, absent, SHORT), false);
    assert_fails("udp absent host", || probe::udp(&a, absent, SHORT), false);
    // The server still answers afterwards.
    assert!(probe::tcp(&a, SocketAddrV4::new(B_IP, PORT), LONG).unwrap());
    assert!(matches!(
        probe::tcp(&a, closed, Duration::ZERO),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn echo_server_stops_promptly_on_drop() {
    let (a, b) = pair();
    let dst = SocketAddrV4::new(B_IP, PORT);
    let server = EchoServer::start(&b, &[PORT]).unwrap();
    assert!(probe::udp(&a, dst, LONG).unwrap());

    // An open, idle connection must not hold the drop up.
    let mut held = a
        .within(|| TcpStream::connect_timeout(&dst.into(), LONG))
        .unwrap()
        .unwrap();
    held.set_read_timeout(Some(LONG)).unwrap();
    held.write_all(b"held\n").unwrap();
    let mut buf = [0u8; 16];
    let n = held.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"held\n");

    // The port is taken while the server runs.
    match EchoServer::start(&b, &[PORT]) {
        Err(Error::Socket { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EADDRINUSE), "{source}");
        }
        other => panic!("expected Socket error, got {other:?}"),
    }
    assert!(matches!(
        EchoServer::start(&b, &[0]),
        Err(Error::InvalidArgument { .. })
    ));

    let ((), took) = timed(|| drop(server));
    assert!(took < PROMPT, "drop took {took:?}");
    // The held connection was closed, not just abandoned.
    assert_eq!(held.read(&mut buf).unwrap(), 0);
    assert_fails("tcp after drop", || probe::tcp(&a, dst, SHORT), true);
    assert_fails("udp after drop", || probe::udp(&a, dst, SHORT), true);

    // The port is free again.
    let _again = EchoServer::start(&b, &[PORT]).unwrap();
    assert!(probe::tcp(&a, dst, LONG).unwrap());
}

/// `rx_packets` of `ifname`, read through `ip netns exec`, which mounts the
/// namespace's own /sys.
fn rx_packets(ns: &NetNs, ifname: &str) -> u64 {
    let path = format!("/sys/class/net/{ifname}/statistics/rx_packets");
    ns.run(&["cat", &path]).unwrap().trim().parse().unwrap()
}

/// A packet socket in `ns` that receives the experimental EtherType on
/// `ifname` only.
fn capture(ns: &NetNs, ifname: &str) -> OwnedFd {
    let protocol = ETHERTYPE_EXPERIMENTAL.to_be();
    let ifindex = ns.ifindex(ifname).unwrap();
    ns.within(|| {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is fresh and owned by nobody else.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: addr is a valid sockaddr_ll for the length passed.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        sock
    })
    .unwrap()
}

/// The next frame `sock` receives within `timeout`.
fn receive(sock: &OwnedFd, timeout: Duration) -> Option<Vec<u8>> {
    let mut fds = [libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: fds is a valid array of one pollfd.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout.as_millis() as i32) };
    assert!(rc >= 0, "poll: {}", std::io::Error::last_os_error());
    if rc == 0 {
        return None;
    }
    let mut buf = [0u8; 2048];
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let n =
        usize::try_from(n).unwrap_or_else(|_| panic!("recv: {}", std::io::Error::last_os_error()));
    Some(buf[..n].to_vec())
}

#[test]
fn send_raw_frame_reaches_the_peer_unpadded() {
    let (a, b) = pair();
    let sniffer = capture(&b, B_IF);
    let rx_before = rx_packets(&b, B_IF);

    // Shorter than Ethernet's 60-byte minimum on purpose: it must arrive
    // exactly as sent.
    let mut frame = Vec::new();
    frame.extend_from_slice(&b.mac(B_IF).unwrap());
    frame.extend_from_slice(&a.mac(A_IF).unwrap());
    frame.extend_from_slice(&ETHERTYPE_EXPERIMENTAL.to_be_bytes());
    frame.extend_from_slice(b"pilus-netns raw frame");
    assert!(frame.len() < 60);
    probe::send_raw_frame(&a, A_IF, &frame).unwrap();

    let received = receive(&sniffer, LONG).expect("no frame arrived on the peer");
    assert_eq!(received, frame);
    let rx_after = rx_packets(&b, B_IF);
    assert!(rx_after > rx_before, "rx_packets {rx_before} -> {rx_after}");

    assert!(matches!(
        probe::send_raw_frame(&a, "nosuch0", &frame),
        Err(Error::NoSuchLink { .. })
    ));
    // `pnp-vb` is not in `a`.
    assert!(matches!(
        probe::send_raw_frame(&a, B_IF, &frame),
        Err(Error::NoSuchLink { .. })
    ));
    assert!(matches!(
        probe::send_raw_frame(&a, A_IF, &[]),
        Err(Error::InvalidArgument { .. })
    ));
}
