//! The lab pods' server and the probe that talks to it. The server greets
//! every TCP connection with `hello from <pod>` and echoes what it reads;
//! it answers every UDP datagram with the same greeting. The probe runs
//! from inside a pod's namespace and reports what happened, with timing.

use std::{
    io::{Read, Write},
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

/// Serves forever on `port` (TCP and UDP) in the caller's namespace.
pub fn serve(name: &str, port: u16) -> std::io::Result<()> {
    let greeting = format!("hello from {name}\n");
    let tcp = TcpListener::bind(("0.0.0.0", port))?;
    let udp = UdpSocket::bind(("0.0.0.0", port))?;
    let g = greeting.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(g.as_bytes(), from);
        }
    });
    for conn in tcp.incoming() {
        let Ok(mut conn) = conn else { continue };
        let g = greeting.clone();
        std::thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            if conn.write_all(g.as_bytes()).is_err() {
                return;
            }
            let mut buf = [0u8; 2048];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    /// An ICMP echo (the port is not used).
    Icmp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Icmp => "ICMP",
        })
    }
}

/// What a probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Connected (TCP) or answered (UDP), with the server's greeting.
    Reply { reply: String, elapsed: Duration },
    /// Nothing came back in time: dropped somewhere.
    Timeout,
    /// Refused (RST or ICMP unreachable) or another socket error.
    Failed(String),
}

impl Probe {
    /// One line for people: `from -> to:port/proto: connected, reply
    /// "..." (0.25 ms)`, `no answer (dropped)` or `failed: <why>`.
    pub fn describe(&self, from: &str, to: &str, port: u16, proto: Proto) -> String {
        let what = format!("{from} -> {to}:{port}/{proto}");
        match self {
            Probe::Reply { reply, elapsed } => format!(
                "{what}: connected, reply {reply:?} ({:.2} ms)",
                elapsed.as_secs_f64() * 1e3
            ),
            Probe::Timeout => format!("{what}: no answer (dropped)"),
            Probe::Failed(e) => format!("{what}: failed: {e}"),
        }
    }
}

/// Probes `dst` from inside the namespace at `netns`.
pub fn probe(netns: &Path, dst: SocketAddrV4, proto: Proto, timeout: Duration) -> Probe {
    let _inside = match pilus_netlink::netns::enter_path(netns) {
        Ok(g) => g,
        Err(e) => return Probe::Failed(format!("cannot enter {}: {e}", netns.display())),
    };
    let start = Instant::now();
    let is_timeout = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        )
    };
    if proto == Proto::Icmp {
        let name = netns.display().to_string();
        return match pilus_netns::probe::ping_here(&name, *dst.ip(), timeout) {
            Ok(true) => Probe::Reply {
                reply: "echo reply".into(),
                elapsed: start.elapsed(),
            },
            Ok(false) => Probe::Timeout,
            Err(e) => Probe::Failed(e.to_string()),
        };
    }
    let mut buf = [0u8; 256];
    let got = match proto {
        Proto::Tcp => TcpStream::connect_timeout(&dst.into(), timeout).and_then(|mut s| {
            s.set_read_timeout(Some(timeout))?;
            let n = s.read(&mut buf)?;
            // Closed both ways before the probe returns: our FIN, then the
            // server's, whose ACK has left (through the datapath) when the
            // read sees the end. Otherwise a policy change right after the
            // probe judges that last ACK: dropped, and the server's FIN
            // retransmitted (and its ACK dropped again) for a minute, drops
            // no test asked for.
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut rest = [0u8; 256];
            while matches!(s.read(&mut rest), Ok(k) if k > 0) {}
            Ok(n)
        }),
        Proto::Udp => UdpSocket::bind("0.0.0.0:0").and_then(|s| {
            s.set_read_timeout(Some(timeout))?;
            s.send_to(b"ping\n", dst)?;
            s.recv(&mut buf)
        }),
        Proto::Icmp => unreachable!("answered above"),
    };
    match got {
        Ok(n) => Probe::Reply {
            reply: String::from_utf8_lossy(&buf[..n]).trim().to_string(),
            elapsed: start.elapsed(),
        },
        Err(e) if is_timeout(&e) => Probe::Timeout,
        Err(e) => Probe::Failed(e.to_string()),
    }
}
