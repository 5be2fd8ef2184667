//! What crosses the lab's underlay: a raw packet socket on every interface
//! of the underlay namespace while some traffic runs, reduced to VXLAN
//! frames (their VNI and the inner packet's addresses) and plain IPv4
//! packets. The demo shows the identity a VXLAN frame carries; the tests
//! check it. No tcpdump needed: a packet socket is all it takes.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

/// The VXLAN port the agents use (pilusd's `--vxlan-port` default).
pub const VXLAN_PORT: u16 = 8472;

/// A VXLAN frame: its VNI and the inner packet's addresses.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vxlan {
    pub vni: u32,
    pub inner_src: Ipv4Addr,
    pub inner_dst: Ipv4Addr,
}

/// What a capture saw (each distinct frame once).
#[derive(Clone, Debug, Default)]
pub struct Capture {
    pub vxlan: BTreeSet<Vxlan>,
    /// IPv4 packets that are not VXLAN: source and destination.
    pub plain: BTreeSet<(Ipv4Addr, Ipv4Addr)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("entering {ns} to capture")]
    Enter {
        ns: String,
        #[source]
        source: pilus_netlink::Error,
    },
    #[error("opening a packet socket in {ns}")]
    Socket {
        ns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the capture thread failed")]
    Thread,
}

fn ipv4(ip: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, usize, u8)> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0xf) * 4;
    if ihl < 20 || ip.len() < ihl {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    Some((src, dst, ihl, ip[9]))
}

/// Adds one Ethernet frame to `into`; anything but IPv4 is ignored.
pub fn parse_frame(frame: &[u8], vxlan_port: u16, into: &mut Capture) {
    if frame.len() < 14 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let Some((src, dst, ihl, proto)) = ipv4(&frame[14..]) else {
        return;
    };
    let l4 = &frame[14 + ihl..];
    // UDP header, VXLAN header, inner Ethernet header.
    if proto == 17 && l4.len() >= 8 + 8 + 14 && u16::from_be_bytes([l4[2], l4[3]]) == vxlan_port {
        let vx = &l4[8..16];
        let inner = &l4[16..];
        if inner[12..14] == [0x08, 0x00] {
            if let Some((s, d, _, _)) = ipv4(&inner[14..]) {
                into.vxlan.insert(Vxlan {
                    vni: u32::from_be_bytes([0, vx[4], vx[5], vx[6]]),
                    inner_src: s,
                    inner_dst: d,
                });
            }
        }
        return;
    }
    into.plain.insert((src, dst));
}

/// Captures every frame on every interface of the namespace at `netns`
/// while `traffic` runs, and returns what was seen with `traffic`'s result.
pub fn capture<T>(
    netns: &Path,
    vxlan_port: u16,
    traffic: impl FnOnce() -> T,
) -> Result<(Capture, T), CaptureError> {
    let ns = netns.display().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = {
        let (stop, netns, ns) = (stop.clone(), netns.to_path_buf(), ns.clone());
        std::thread::spawn(move || -> Result<Capture, CaptureError> {
            // The socket is made inside; the thread's namespace goes with
            // the thread.
            let entered = pilus_netlink::netns::enter_path(&netns);
            let _inside = match entered {
                Ok(g) => g,
                Err(source) => {
                    let _ = ready_tx.send(());
                    return Err(CaptureError::Enter { ns, source });
                }
            };
            let sock = PacketSocket::open().map_err(|source| CaptureError::Socket {
                ns: ns.clone(),
                source,
            });
            let _ = ready_tx.send(());
            let sock = sock?;
            let mut cap = Capture::default();
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Some(n) = sock.recv(&mut buf) {
                    parse_frame(&buf[..n], vxlan_port, &mut cap);
                }
            }
            Ok(cap)
        })
    };
    let _ = ready_rx.recv();
    let result = traffic();
    // The last frames of the exchange are still on their way.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let cap = reader.join().map_err(|_| CaptureError::Thread)??;
    Ok((cap, result))
}

/// An `AF_PACKET` socket on every interface, with a short receive timeout
/// so the reader notices when to stop.
struct PacketSocket(std::os::fd::OwnedFd);

impl PacketSocket {
    fn open() -> std::io::Result<PacketSocket> {
        use std::os::fd::FromRawFd;
        let proto = i32::from((libc::ETH_P_ALL as u16).to_be());
        // SAFETY: socket(2) with constant arguments; the descriptor is
        // owned from here on.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nothing else owns.
        let sock = PacketSocket(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: setsockopt with a pointer to a timeval that outlives it.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(sock)
    }

    /// One frame, or None after the timeout.
    fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: recv into a buffer we own, of its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        (n > 0).then_some(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_header(src: [u8; 4], dst: [u8; 4], proto: u8) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h
    }

    fn ethernet(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_vxlan_frame_gives_its_vni_and_the_inner_addresses() {
        let inner = ethernet(&ipv4_header([198, 18, 1, 2], [198, 18, 2, 3], 6));
        let mut udp = vec![0x9c, 0x40, 0x21, 0x18, 0, 0, 0, 0];
        // Flags (VNI present), reserved, VNI 256, reserved.
        udp.extend_from_slice(&[0x08, 0, 0, 0, 0, 0x01, 0x00, 0]);
        udp.extend_from_slice(&inner);
        let mut outer = ipv4_header([198, 19, 0, 1], [198, 19, 0, 2], 17);
        outer.extend_from_slice(&udp);
        let mut cap = Capture::default();
        parse_frame(&ethernet(&outer), VXLAN_PORT, &mut cap);
        assert_eq!(
            cap.vxlan.into_iter().collect::<Vec<_>>(),
            [Vxlan {
                vni: 256,
                inner_src: Ipv4Addr::new(198, 18, 1, 2),
                inner_dst: Ipv4Addr::new(198, 18, 2, 3),
            }]
        );
        assert!(cap.plain.is_empty());
    }

    #[test]
    fn plain_packets_are_kept_and_the_rest_ignored() {
        let mut cap = Capture::default();
        let plain = ethernet(&ipv4_header([198, 18, 1, 2], [198, 18, 2, 3], 6));
        parse_frame(&plain, VXLAN_PORT, &mut cap);
        let mut arp = plain.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        parse_frame(&arp, VXLAN_PORT, &mut cap);
        parse_frame(&plain[..20], VXLAN_PORT, &mut cap);
        assert_eq!(
            cap.plain.into_iter().collect::<Vec<_>>(),
            [(Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(198, 18, 2, 3))]
        );
        assert!(cap.vxlan.is_empty());
    }
}
