//! The `NETLINK_ROUTE` socket and the operations built on it. A socket acts
//! in the network namespace it was created in, whatever the thread does
//! later, so one socket per namespace is all the namespace juggling needed.

use crate::{msg::*, valid_ifname, Error};
use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
};

/// A link as `RTM_GETLINK` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub up: bool,
}

/// An IPv4 address on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

/// An IPv4 route of the main table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub dst_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub scope: u8,
}

pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

fn last_os(call: &'static str) -> Error {
    Error::Syscall {
        call,
        source: io::Error::last_os_error(),
    }
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, Error> {
        // SAFETY: plain socket(2); the fd is owned right after.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(last_os("socket(AF_NETLINK)"));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl (pid 0: the kernel assigns one).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: sa is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(last_os("bind(AF_NETLINK)"));
        }
        Ok(Netlink {
            fd,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// A socket in the network namespace open at `ns` (e.g. a pod's), made
    /// by moving this thread there just for the `socket` call.
    pub fn open_in(ns: BorrowedFd<'_>) -> Result<Netlink, Error> {
        in_netns(ns, Netlink::open)?
    }

    /// [`Netlink::open_in`] by path (`/run/netns/x`, `/proc/PID/ns/net`).
    pub fn open_path(path: &Path) -> Result<Netlink, Error> {
        let f = std::fs::File::open(path).map_err(|source| Error::Kernel {
            op: format!("open network namespace {}", path.display()),
            source,
        })?;
        use std::os::fd::AsFd;
        Netlink::open_in(f.as_fd())
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, msg: &[u8], op: &dyn Fn() -> String) -> Result<(), Error> {
        // SAFETY: msg is a valid buffer; the kernel is the default peer.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(Error::Kernel {
                op: op(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<usize, Error> {
        loop {
            // SAFETY: self.buf is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::Syscall {
                    call: "recv(AF_NETLINK)",
                    source: e,
                });
            }
        }
    }

    /// Sends a request and hands each reply's (type, body) to `f` until the
    /// kernel acknowledges it (`NLMSG_ERROR` 0, requested with
    /// `NLM_F_ACK`) or ends a dump (`NLMSG_DONE`).
    fn run(
        &mut self,
        mut b: Builder,
        op: impl Fn() -> String,
        mut f: impl FnMut(u16, &[u8]),
    ) -> Result<(), Error> {
        let msg = b.finish();
        let seq = u32::from_ne_bytes(msg[8..12].try_into().expect("header"));
        self.send(&msg, &op)?;
        loop {
            let n = self.recv()?;
            let buf = self.buf[..n].to_vec();
            let msgs = messages(&buf).ok_or_else(|| Error::Malformed {
                op: op(),
                reason: "bad message length",
            })?;
            for m in msgs {
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        return match error_code(m.body) {
                            Some(0) => Ok(()),
                            Some(errno) => Err(Error::Kernel {
                                op: op(),
                                source: io::Error::from_raw_os_error(errno),
                            }),
                            None => Err(Error::Malformed {
                                op: op(),
                                reason: "short error message",
                            }),
                        }
                    }
                    kind => f(kind, m.body),
                }
            }
        }
    }

    fn transact(&mut self, b: Builder, op: impl Fn() -> String) -> Result<(), Error> {
        self.run(b, op, |_, _| {})
    }

    /// The link called `name`, or `None` if there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, Error> {
        valid_ifname(name)?;
        let seq = self.next_seq();
        let mut b = Builder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
        b.ifinfo(0, 0, 0).attr_str(IFLA_IFNAME, name);
        let mut link = None;
        let r = self.run(
            b,
            || format!("look up link {name}"),
            |kind, body| {
                if kind == RTM_NEWLINK {
                    link = parse_link(body);
                }
            },
        );
        match r {
            Ok(()) => Ok(link),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a veth pair: `name` here, `peer` created directly inside
    /// the namespace open at `peer_ns` (so it never exists in ours).
    /// Fails with EEXIST if either name is taken.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_ns: BorrowedFd<'_>,
    ) -> Result<(), Error> {
        valid_ifname(name)?;
        valid_ifname(peer)?;
        let seq = self.next_seq();
        let mut b = Builder::new(
            RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            seq,
        );
        b.ifinfo(0, 0, 0)
            .attr_str(IFLA_IFNAME, name)
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER)
            .raw(&[0; IFINFOMSG_LEN])
            .attr_str(IFLA_IFNAME, peer)
            .attr_u32(IFLA_NET_NS_FD, peer_ns.as_raw_fd() as u32)
            .end()
            .end()
            .end();
        self.transact(b, || format!("create veth {name} (peer {peer})"))
    }

    /// Sets a link up.
    pub fn set_up(&mut self, index: u32) -> Result<(), Error> {
        let seq = self.next_seq();
        let mut b = Builder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
        b.ifinfo(index as i32, IFF_UP, IFF_UP);
        self.transact(b, || format!("set link {index} up"))
    }

    /// Deletes the link called `name`; `Ok(false)` if there was none.
    pub fn delete_link(&mut self, name: &str) -> Result<bool, Error> {
        valid_ifname(name)?;
        let seq = self.next_seq();
        let mut b = Builder::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
        b.ifinfo(0, 0, 0).attr_str(IFLA_IFNAME, name);
        match self.transact(b, || format!("delete link {name}")) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds `ip/prefix_len` to a link (EEXIST if it is there already).
    pub fn add_addr(&mut self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<(), Error> {
        let seq = self.next_seq();
        let mut b = Builder::new(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            seq,
        );
        b.ifaddr(prefix_len, RT_SCOPE_UNIVERSE, index)
            .attr_ipv4(IFA_LOCAL, ip)
            .attr_ipv4(IFA_ADDRESS, ip);
        self.transact(b, || {
            format!("add address {ip}/{prefix_len} to link {index}")
        })
    }

    /// Every IPv4 address in the namespace.
    pub fn addrs(&mut self) -> Result<Vec<Addr>, Error> {
        let seq = self.next_seq();
        let mut b = Builder::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq);
        b.family(AF_INET, IFADDRMSG_LEN);
        let mut out = Vec::new();
        self.run(
            b,
            || "list addresses".into(),
            |kind, body| {
                if kind == RTM_NEWADDR {
                    out.extend(parse_addr(body));
                }
            },
        )?;
        Ok(out)
    }

    /// Adds a route via link `oif` (`gateway: None`: an on-link, scope
    /// link route). Never replaces: a route to the same destination that
    /// exists already (another interface's) fails with EEXIST.
    pub fn add_route(
        &mut self,
        dst: Ipv4Addr,
        dst_len: u8,
        gateway: Option<Ipv4Addr>,
        oif: u32,
    ) -> Result<(), Error> {
        let seq = self.next_seq();
        let mut b = Builder::new(
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            seq,
        );
        let scope = if gateway.is_some() {
            RT_SCOPE_UNIVERSE
        } else {
            RT_SCOPE_LINK
        };
        b.rtmsg(dst_len, scope);
        if dst_len > 0 {
            b.attr_ipv4(RTA_DST, dst);
        }
        if let Some(gw) = gateway {
            b.attr_ipv4(RTA_GATEWAY, gw);
        }
        b.attr_u32(RTA_OIF, oif);
        self.transact(b, || match gateway {
            Some(gw) => format!("add route {dst}/{dst_len} via {gw} (link {oif})"),
            None => format!("add route {dst}/{dst_len} on link {oif}"),
        })
    }

    /// The IPv4 routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>, Error> {
        let seq = self.next_seq();
        let mut b = Builder::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq);
        b.family(AF_INET, RTMSG_LEN);
        let mut out = Vec::new();
        self.run(
            b,
            || "list routes".into(),
            |kind, body| {
                if kind == RTM_NEWROUTE {
                    out.extend(parse_route(body));
                }
            },
        )?;
        Ok(out)
    }
}

/// Runs `f` with this thread inside the network namespace open at `ns`,
/// then moves the thread back.
pub fn in_netns<T>(ns: BorrowedFd<'_>, f: impl FnOnce() -> T) -> Result<T, Error> {
    let original =
        std::fs::File::open("/proc/thread-self/ns/net").map_err(|source| Error::Syscall {
            call: "open(/proc/thread-self/ns/net)",
            source,
        })?;
    setns(ns.as_raw_fd())?;
    let out = f();
    if let Err(e) = setns(original.as_raw_fd()) {
        // A thread stranded in a pod's namespace would do the caller's
        // later work in the wrong place; there is no safe way on.
        eprintln!("pilus-netlink: cannot return to the original network namespace: {e}");
        std::process::abort();
    }
    Ok(out)
}

fn setns(fd: i32) -> Result<(), Error> {
    // SAFETY: setns on a descriptor we hold open; acts on this thread.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } < 0 {
        return Err(last_os("setns(CLONE_NEWNET)"));
    }
    Ok(())
}

fn parse_link(body: &[u8]) -> Option<Link> {
    let index = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?);
    let flags = u32::from_ne_bytes(body.get(8..12)?.try_into().ok()?);
    let mut link = Link {
        index,
        name: String::new(),
        mac: [0; 6],
        up: flags & IFF_UP != 0,
    };
    for (kind, payload) in attrs(body.get(IFINFOMSG_LEN..)?) {
        match kind {
            IFLA_IFNAME => link.name = attr_string(payload),
            IFLA_ADDRESS if payload.len() == 6 => link.mac.copy_from_slice(payload),
            _ => {}
        }
    }
    Some(link)
}

fn parse_addr(body: &[u8]) -> Option<Addr> {
    if body.first() != Some(&AF_INET) {
        return None;
    }
    let prefix_len = *body.get(1)?;
    let index = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?);
    let mut ip = None;
    for (kind, payload) in attrs(body.get(IFADDRMSG_LEN..)?) {
        match kind {
            IFA_LOCAL => ip = attr_ipv4(payload),
            IFA_ADDRESS if ip.is_none() => ip = attr_ipv4(payload),
            _ => {}
        }
    }
    Some(Addr {
        index,
        ip: ip?,
        prefix_len,
    })
}

fn parse_route(body: &[u8]) -> Option<Route> {
    if body.first() != Some(&AF_INET) {
        return None;
    }
    let dst_len = *body.get(1)?;
    let mut table = u32::from(*body.get(4)?);
    let scope = *body.get(6)?;
    let mut r = Route {
        dst: Ipv4Addr::UNSPECIFIED,
        dst_len,
        gateway: None,
        oif: None,
        scope,
    };
    for (kind, payload) in attrs(body.get(RTMSG_LEN..)?) {
        match kind {
            RTA_DST => r.dst = attr_ipv4(payload)?,
            RTA_GATEWAY => r.gateway = attr_ipv4(payload),
            RTA_OIF => r.oif = attr_u32(payload),
            RTA_TABLE => table = attr_u32(payload)?,
            _ => {}
        }
    }
    (table == u32::from(RT_TABLE_MAIN)).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_link_reply() {
        let msg = Builder::new(RTM_NEWLINK, 0, 1)
            .ifinfo(42, IFF_UP | 0x40, 0)
            .attr_str(IFLA_IFNAME, "lxc1")
            .attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 9])
            .finish();
        let l = parse_link(&msg[NLMSG_HDRLEN..]).unwrap();
        assert_eq!(
            l,
            Link {
                index: 42,
                name: "lxc1".into(),
                mac: [2, 0, 0, 0, 0, 9],
                up: true
            }
        );
    }

    #[test]
    fn parses_routes_of_the_main_table_only() {
        let gw = Ipv4Addr::new(198, 18, 0, 1);
        let main = Builder::new(RTM_NEWROUTE, 0, 1)
            .rtmsg(0, RT_SCOPE_UNIVERSE)
            .attr_ipv4(RTA_GATEWAY, gw)
            .attr_u32(RTA_OIF, 3)
            .finish();
        let r = parse_route(&main[NLMSG_HDRLEN..]).unwrap();
        assert_eq!((r.dst_len, r.gateway, r.oif), (0, Some(gw), Some(3)));
        let local = Builder::new(RTM_NEWROUTE, 0, 1)
            .rtmsg(32, RT_SCOPE_LINK)
            .attr_ipv4(RTA_DST, gw)
            .attr_u32(RTA_TABLE, 255)
            .finish();
        assert!(parse_route(&local[NLMSG_HDRLEN..]).is_none());
    }

    #[test]
    fn parses_an_address() {
        let ip = Ipv4Addr::new(198, 18, 0, 7);
        let m = Builder::new(RTM_NEWADDR, 0, 1)
            .ifaddr(32, 0, 4)
            .attr_ipv4(IFA_ADDRESS, ip)
            .attr_ipv4(IFA_LOCAL, ip)
            .finish();
        assert_eq!(
            parse_addr(&m[NLMSG_HDRLEN..]),
            Some(Addr {
                index: 4,
                ip,
                prefix_len: 32
            })
        );
    }
}
