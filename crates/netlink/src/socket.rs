//! The `NETLINK_ROUTE` socket and the two exchanges everything else is made
//! of: a request answered by an acknowledgement, and a dump.
//!
//! A socket acts in the network namespace it was created in, whatever the
//! thread does later, so one socket per namespace is all the namespace
//! juggling needed. Messages are encoded and decoded by
//! netlink-packet-route; this module owns what that crate leaves to its
//! caller:
//!
//! - matching replies to requests by sequence number, and reading a reply
//!   to its end (`NLMSG_DONE`, or `NLMSG_ERROR` carrying an errno or the
//!   acknowledgement 0), with the kernel's extended-ack message kept;
//! - `NLM_F_DUMP_INTR`: the kernel marks a dump whose table changed while
//!   it was being read (a route added mid-dump may be missing, or seen
//!   twice). Such a dump is read to its end and then asked for again, up to
//!   [`MAX_DUMP_ATTEMPTS`] times; after that it is an error rather than a
//!   silently inconsistent answer;
//! - the receive buffer: every datagram is measured first
//!   (`MSG_PEEK | MSG_TRUNC`) and the buffer grows to fit it, so no reply is
//!   ever cut short, however large one message is.
//!
//! The wire sits behind the small [`Conn`] trait, so the reply handling is
//! unit-tested over crafted datagrams (an interrupted dump cannot be forced
//! on a real kernel at will).

use crate::{netns, Error};
use netlink_packet_core::{
    parse_string, ErrorMessage, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NlasIterator, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_ACK_TLVS,
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::{io, os::fd::BorrowedFd, path::Path};

/// How many times a dump is asked for while the kernel keeps flagging it
/// as interrupted. A dump is interrupted only when its table changes while
/// it is read, which takes a busy writer; five in a row means the writer
/// is busier than a retry can outrun, and the caller should hear that.
pub const MAX_DUMP_ATTEMPTS: u32 = 5;

/// The receive buffer a socket starts with. The kernel sizes the datagrams
/// of a dump after the largest buffer `recv` was given (up to 32 KiB), so
/// starting there keeps a long dump at few system calls; a larger datagram
/// grows the buffer.
const INITIAL_RECV_BUFFER: usize = 32 * 1024;

/// `NLMSGERR_ATTR_MSG`: the extended-ack attribute with the kernel's text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Size of `struct nlmsghdr`, which with `NETLINK_CAP_ACK` is all an error
/// message echoes of the request before its extended-ack attributes.
const NLMSG_HDRLEN: usize = 16;

/// One datagram out, one datagram in: the kernel socket, or crafted replies
/// in unit tests.
pub(crate) trait Conn: Send {
    fn send(&mut self, msg: &[u8]) -> io::Result<()>;
    /// The next whole datagram.
    fn recv(&mut self) -> io::Result<&[u8]>;
}

/// A netlink-sys socket with a receive buffer that grows to each datagram.
struct KernelConn {
    socket: Socket,
    buf: Vec<u8>,
}

impl KernelConn {
    fn open(buffer: usize) -> io::Result<KernelConn> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        // Errors echo only the request's header, not the whole request
        // (Linux 4.3), and carry the kernel's explanation (Linux 4.12).
        socket.set_cap_ack(true)?;
        socket.set_ext_ack(true)?;
        Ok(KernelConn {
            socket,
            buf: vec![0; buffer],
        })
    }
}

/// Retries a system call that a signal interrupted.
fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

impl Conn for KernelConn {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        let kernel = SocketAddr::new(0, 0);
        retry_eintr(|| self.socket.send_to(msg, &kernel, 0))?;
        Ok(())
    }

    fn recv(&mut self) -> io::Result<&[u8]> {
        // Peek into an empty buffer: MSG_TRUNC makes the kernel return the
        // datagram's real length, and MSG_PEEK leaves it queued.
        let size = retry_eintr(|| {
            let mut nothing: &mut [u8] = &mut [];
            self.socket
                .recv(&mut nothing, libc::MSG_PEEK | libc::MSG_TRUNC)
        })?;
        if size > self.buf.len() {
            tracing::debug!(
                from = self.buf.len(),
                to = size,
                "growing the netlink receive buffer"
            );
            self.buf.resize(size, 0);
        }
        let n = retry_eintr(|| {
            let mut buf: &mut [u8] = &mut self.buf[..];
            self.socket.recv(&mut buf, libc::MSG_TRUNC)
        })?;
        if n > self.buf.len() {
            // Only one reader takes from this socket, so the datagram read
            // is the one measured; a longer one would be a kernel surprise.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "netlink datagram of {n} bytes outgrew the {} measured",
                    self.buf.len()
                ),
            ));
        }
        Ok(&self.buf[..n])
    }
}

/// A `NETLINK_ROUTE` socket, acting in the network namespace it was opened
/// in. The operations are in the modules that own their objects (`link`,
/// `route`, `neigh`).
pub struct Netlink {
    conn: Box<dyn Conn>,
    seq: u32,
}

/// What one exchange brought back.
struct Reply {
    messages: Vec<RouteNetlinkMessage>,
    interrupted: bool,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, Error> {
        Netlink::open_with_buffer(INITIAL_RECV_BUFFER)
    }

    pub(crate) fn open_with_buffer(buffer: usize) -> Result<Netlink, Error> {
        let conn = KernelConn::open(buffer).map_err(|source| Error::Syscall {
            call: "socket(AF_NETLINK, NETLINK_ROUTE)",
            source,
        })?;
        Ok(Netlink::with_conn(Box::new(conn)))
    }

    pub(crate) fn with_conn(conn: Box<dyn Conn>) -> Netlink {
        Netlink { conn, seq: 0 }
    }

    /// A socket in the network namespace open at `ns` (e.g. a pod's), made
    /// by moving this thread there just for the `socket` call.
    pub fn open_in(ns: BorrowedFd<'_>) -> Result<Netlink, Error> {
        netns::in_netns(ns, Netlink::open)?
    }

    /// [`Netlink::open_in`] by path (`/run/netns/x`, `/proc/PID/ns/net`).
    pub fn open_path(path: &Path) -> Result<Netlink, Error> {
        let _inside = netns::enter_path(path)?;
        Netlink::open()
    }

    /// Sends `msg` with `flags` (plus `NLM_F_REQUEST | NLM_F_ACK`) and
    /// returns what the kernel answered before its acknowledgement: the
    /// object, for a `GET` of one object; nothing, for a change.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        let mut bytes = encode(msg, NLM_F_REQUEST | NLM_F_ACK | flags);
        Ok(self.exchange(&mut bytes, op)?.messages)
    }

    /// Dumps every object `msg` asks for. A dump the kernel flags as
    /// interrupted is asked for again, whole; see [`MAX_DUMP_ATTEMPTS`].
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        op: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        let mut bytes = encode(msg, NLM_F_REQUEST | NLM_F_DUMP);
        for attempt in 1..=MAX_DUMP_ATTEMPTS {
            let reply = self.exchange(&mut bytes, op)?;
            if !reply.interrupted {
                return Ok(reply.messages);
            }
            tracing::debug!(op = %op(), attempt, "netlink dump interrupted; asking again");
        }
        Err(Error::DumpInterrupted {
            op: op(),
            attempts: MAX_DUMP_ATTEMPTS,
        })
    }

    /// Sends one request under a fresh sequence number and reads replies
    /// with that number up to the end of the answer.
    fn exchange(&mut self, bytes: &mut [u8], op: &dyn Fn() -> String) -> Result<Reply, Error> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        NetlinkBuffer::new(&mut *bytes).set_sequence_number(seq);
        self.conn.send(bytes).map_err(|source| Error::Kernel {
            op: op(),
            detail: None,
            source,
        })?;
        let mut reply = Reply {
            messages: Vec::new(),
            interrupted: false,
        };
        // A message the library cannot decode is remembered, not returned
        // at once: the answer is still read to its end, so that the rest of
        // it cannot be taken for the answer to the next request.
        let mut undecodable = None;
        loop {
            let datagram = self.conn.recv().map_err(|source| Error::Syscall {
                call: "recv(AF_NETLINK)",
                source,
            })?;
            let mut rest = datagram;
            while !rest.is_empty() {
                let frame = NetlinkBuffer::new_checked(rest).map_err(|_| Error::Malformed {
                    op: op(),
                    reason: "a message length runs past its datagram",
                })?;
                let len = frame.length() as usize;
                let (message, flags) = (&rest[..len], frame.flags());
                let (kind, msg_seq) = (frame.message_type(), frame.sequence_number());
                // Messages are 4-byte aligned within a datagram.
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
                if msg_seq != seq {
                    // A late reply to an earlier request (one that failed
                    // before its answer was read to the end).
                    continue;
                }
                if flags & NLM_F_DUMP_INTR != 0 {
                    reply.interrupted = true;
                }
                match kind {
                    NLMSG_NOOP => {}
                    NLMSG_OVERRUN => {
                        return Err(Error::Malformed {
                            op: op(),
                            reason: "the kernel reported an overrun (data lost)",
                        })
                    }
                    NLMSG_DONE | NLMSG_ERROR => {
                        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(message)
                            .map_err(|source| Error::Decode { op: op(), source })?;
                        // The end of the answer. A dump that failed midway
                        // ends in NLMSG_DONE with a negative errno.
                        let (code, detail) = match parsed.payload {
                            NetlinkPayload::Done(done) => (done.code, None),
                            NetlinkPayload::Error(err) => (
                                err.code.map_or(0, |c| c.get()),
                                ext_ack_message(&err, flags),
                            ),
                            _ => unreachable!("NLMSG_DONE and NLMSG_ERROR decode as themselves"),
                        };
                        return match (code, undecodable) {
                            (0, None) => Ok(reply),
                            (0, Some(source)) => Err(Error::Decode { op: op(), source }),
                            (code, _) => Err(Error::Kernel {
                                op: op(),
                                detail,
                                source: io::Error::from_raw_os_error(-code),
                            }),
                        };
                    }
                    _ => match NetlinkMessage::<RouteNetlinkMessage>::deserialize(message) {
                        Ok(m) => {
                            if let NetlinkPayload::InnerMessage(inner) = m.payload {
                                reply.messages.push(inner);
                            }
                        }
                        Err(source) => {
                            undecodable.get_or_insert(source);
                        }
                    },
                }
            }
        }
    }
}

/// The kernel's text in an error's extended-ack attributes, if any. With
/// `NETLINK_CAP_ACK` the echoed request is its header alone, and the
/// attributes follow it.
fn ext_ack_message(err: &ErrorMessage, flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let attrs = err.header.get(NLMSG_HDRLEN..)?;
    NlasIterator::new(attrs)
        .filter_map(Result::ok)
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .and_then(|nla| parse_string(nla.value()).ok())
}

/// The request on the wire; its sequence number is set per attempt.
fn encode(msg: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use netlink_packet_core::{DefaultNla, DoneMessage, Emitable};
    use netlink_packet_route::{
        link::{LinkAttribute, LinkMessage},
        route::RouteMessage,
    };
    use std::{
        collections::VecDeque,
        sync::{Arc, Mutex},
    };

    /// A wire that answers each request with the next script of datagrams.
    /// Sequence numbers in the script are rewritten to the request's, so a
    /// script can be written before the requests exist.
    #[derive(Default)]
    pub(crate) struct Scripted {
        /// Per request: the datagrams of its answer, each a list of messages.
        answers: VecDeque<Vec<Vec<NetlinkMessage<RouteNetlinkMessage>>>>,
        pending: VecDeque<Vec<u8>>,
        current: Vec<u8>,
        pub(crate) sent: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl Scripted {
        pub(crate) fn answer(
            mut self,
            datagrams: Vec<Vec<NetlinkMessage<RouteNetlinkMessage>>>,
        ) -> Self {
            self.answers.push_back(datagrams);
            self
        }
    }

    impl Conn for Scripted {
        fn send(&mut self, msg: &[u8]) -> io::Result<()> {
            let seq = NetlinkBuffer::new(msg).sequence_number();
            self.sent.lock().unwrap().push(msg.to_vec());
            let answer = self.answers.pop_front().expect("a request nobody scripted");
            for datagram in answer {
                let mut bytes = Vec::new();
                for mut m in datagram {
                    m.header.sequence_number = seq;
                    m.finalize();
                    let mut b = vec![0; m.buffer_len()];
                    m.serialize(&mut b);
                    bytes.extend_from_slice(&b);
                    bytes.resize(bytes.len().next_multiple_of(4), 0);
                }
                self.pending.push_back(bytes);
            }
            Ok(())
        }

        fn recv(&mut self) -> io::Result<&[u8]> {
            self.current = self
                .pending
                .pop_front()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EAGAIN))?;
            Ok(&self.current)
        }
    }

    fn with_flags(
        payload: NetlinkPayload<RouteNetlinkMessage>,
        flags: u16,
    ) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        NetlinkMessage::new(header, payload)
    }

    pub(crate) fn link_msg(
        index: u32,
        name: &str,
        flags: u16,
    ) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        with_flags(
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)),
            flags | netlink_packet_core::NLM_F_MULTIPART,
        )
    }

    pub(crate) fn done(flags: u16) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut d = DoneMessage::default();
        d.code = 0;
        with_flags(
            NetlinkPayload::Done(d),
            flags | netlink_packet_core::NLM_F_MULTIPART,
        )
    }

    pub(crate) fn error(errno: i32) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut e = ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(-errno);
        e.header = vec![0; NLMSG_HDRLEN];
        with_flags(NetlinkPayload::Error(e), 0)
    }

    fn get_links() -> RouteNetlinkMessage {
        RouteNetlinkMessage::GetLink(LinkMessage::default())
    }

    fn names(msgs: &[RouteNetlinkMessage]) -> Vec<String> {
        msgs.iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_interrupted_dump_is_read_to_its_end_and_asked_for_again() {
        let intr = NLM_F_DUMP_INTR;
        let wire = Scripted::default()
            // First attempt: the flag appears mid-dump, over two datagrams.
            .answer(vec![
                vec![link_msg(1, "lo", 0)],
                vec![link_msg(2, "eth0", intr), done(intr)],
            ])
            // Second: consistent.
            .answer(vec![vec![
                link_msg(1, "lo", 0),
                link_msg(2, "eth0", 0),
                link_msg(3, "vx0", 0),
                done(0),
            ]]);
        let sent = wire.sent.clone();
        let mut nl = Netlink::with_conn(Box::new(wire));
        let got = nl.dump(get_links(), &|| "dump links".into()).unwrap();
        assert_eq!(names(&got), ["lo", "eth0", "vx0"]);
        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), 2, "asked exactly twice");
        let seqs: Vec<u32> = sent
            .iter()
            .map(|b| NetlinkBuffer::new(b).sequence_number())
            .collect();
        assert_ne!(seqs[0], seqs[1], "each attempt has its own sequence number");
        assert_eq!(
            NetlinkBuffer::new(&sent[1]).flags(),
            NLM_F_REQUEST | NLM_F_DUMP
        );
    }

    #[test]
    fn a_dump_interrupted_every_time_is_a_clear_error() {
        let mut wire = Scripted::default();
        for _ in 0..MAX_DUMP_ATTEMPTS {
            // Flagged on the final NLMSG_DONE only, as when the change
            // lands after the last object was written.
            wire = wire.answer(vec![vec![link_msg(1, "lo", 0), done(NLM_F_DUMP_INTR)]]);
        }
        let sent = wire.sent.clone();
        let mut nl = Netlink::with_conn(Box::new(wire));
        let err = nl.dump(get_links(), &|| "dump links".into()).unwrap_err();
        assert!(
            matches!(err, Error::DumpInterrupted { attempts, .. } if attempts == MAX_DUMP_ATTEMPTS),
            "{err}"
        );
        assert!(err.to_string().contains("NLM_F_DUMP_INTR"), "{err}");
        assert_eq!(sent.lock().unwrap().len(), MAX_DUMP_ATTEMPTS as usize);
    }

    #[test]
    fn replies_to_other_requests_are_skipped() {
        /// One datagram, as written (the scripted wire would renumber it).
        struct Fixed(Option<Vec<u8>>);
        impl Conn for Fixed {
            fn send(&mut self, _: &[u8]) -> io::Result<()> {
                Ok(())
            }
            fn recv(&mut self) -> io::Result<&[u8]> {
                Ok(self.0.as_deref().expect("read once"))
            }
        }
        let mut bytes = Vec::new();
        // The first request of a socket has sequence number 1; 7 is a late
        // answer to some earlier one.
        for (seq, mut m) in [
            (7, link_msg(9, "stale", 0)),
            (1, link_msg(1, "lo", 0)),
            (1, done(0)),
        ] {
            m.header.sequence_number = seq;
            m.finalize();
            let mut b = vec![0; m.buffer_len()];
            m.serialize(&mut b);
            bytes.extend_from_slice(&b);
        }
        let mut nl = Netlink::with_conn(Box::new(Fixed(Some(bytes))));
        let got = nl.dump(get_links(), &|| "dump links".into()).unwrap();
        assert_eq!(names(&got), ["lo"]);
    }

    #[test]
    fn a_refusal_carries_the_errno_and_the_kernel_text() {
        let mut e = error(libc::EEXIST);
        if let NetlinkPayload::Error(err) = &mut e.payload {
            // After the echoed nlmsghdr: NLMSGERR_ATTR_MSG.
            let msg = DefaultNla::new(NLMSGERR_ATTR_MSG, b"Route exists here\0".to_vec());
            let mut attr = vec![0; msg.buffer_len()];
            msg.emit(&mut attr);
            err.header.extend_from_slice(&attr);
        }
        e.header.flags = NLM_F_ACK_TLVS;
        let wire = Scripted::default().answer(vec![vec![e]]);
        let mut nl = Netlink::with_conn(Box::new(wire));
        let err = nl
            .request(
                RouteNetlinkMessage::NewRoute(RouteMessage::default()),
                0,
                &|| "add route".into(),
            )
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST));
        assert!(err.to_string().contains("(Route exists here)"), "{err}");
    }

    #[test]
    fn an_acknowledgement_ends_a_request_with_what_came_before_it() {
        let mut ack = error(0);
        if let NetlinkPayload::Error(e) = &mut ack.payload {
            e.code = None;
        }
        let wire = Scripted::default().answer(vec![vec![link_msg(4, "eth0", 0)], vec![ack]]);
        let mut nl = Netlink::with_conn(Box::new(wire));
        let got = nl.request(get_links(), 0, &|| "get link".into()).unwrap();
        assert_eq!(names(&got), ["eth0"]);
    }

    #[test]
    fn a_dump_that_fails_midway_is_an_error() {
        let mut d = DoneMessage::default();
        d.code = -libc::EMSGSIZE;
        let wire = Scripted::default().answer(vec![vec![
            link_msg(1, "lo", 0),
            with_flags(NetlinkPayload::Done(d), 0),
        ]]);
        let mut nl = Netlink::with_conn(Box::new(wire));
        let err = nl.dump(get_links(), &|| "dump links".into()).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EMSGSIZE), "{err}");
    }

    /// The fixed 64 KiB buffer this replaced would have cut a large enough
    /// message short; here a buffer of 64 bytes, smaller than any reply of
    /// a dump, must grow for every datagram of a real one. In a namespace
    /// of its own (made by `unshare` on a thread that then ends), so
    /// nothing outlives the test.
    #[test]
    fn the_receive_buffer_grows_to_each_datagram() {
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
        std::thread::spawn(|| {
            // SAFETY: unshare acts on this thread only.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", io::Error::last_os_error());
            let mut nl = Netlink::open_with_buffer(64).unwrap();
            let lo = nl.link("lo").unwrap().expect("a new namespace has lo");
            nl.set_up(lo.index).unwrap();
            let base = u32::from(std::net::Ipv4Addr::new(198, 18, 200, 0));
            for i in 0..300 {
                nl.add_route(std::net::Ipv4Addr::from(base + i), 32, None, lo.index)
                    .unwrap();
            }
            let routes = nl.routes().unwrap();
            let ours = routes
                .iter()
                .filter(|r| r.dst_len == 32 && r.oif == Some(lo.index))
                .count();
            assert_eq!(ours, 300);
            assert!(nl.links().unwrap().iter().any(|l| l.name == "lo"));
        })
        .join()
        .unwrap();
    }
}
