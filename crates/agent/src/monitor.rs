//! The monitor (`cilium monitor` for Pilus): the datapath's drop and trace
//! events, read from the `pilus_events` ring buffer on a timer into a
//! bounded in-memory ring with sequence numbers, and served by
//! `GET /v1/monitor` with long polling.
//!
//! The ring has its own lock and condition variable: a long poll waits on
//! them, never on the agent's lock (taken only briefly, after the wait, to
//! name the endpoints of the events it returns). Events are kept raw and
//! decoded when asked for, so an agent nobody monitors spends nothing on
//! decoding.

use pilus_abi::{
    consts::{EVENT_DROP, EVENT_TRACE},
    Event,
};
use pilus_api::{
    types::{MonitorBatch, MonitorFilter, MonitorKind, MONITOR_MAX_WAIT_MS},
    Request, Response,
};
use pilus_controlplane::ControlPlane;
use std::{
    collections::{HashMap, VecDeque},
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Events the agent keeps (~180 bytes each: ~740 KiB when full).
pub const CAPACITY: usize = 4096;

/// How often the reader drains the ring buffer. The datapath submits with
/// BPF_RB_NO_WAKEUP (a wakeup per packet would cost more than the packet),
/// so the reader must come and look; 1 MiB of ring at 168 bytes a record
/// holds ~6,200 events, over 100,000 events/s at this pace.
pub const TICK: Duration = Duration::from_millis(50);

/// One event as the ring keeps it.
#[derive(Clone, Copy, Debug)]
pub struct Stored {
    pub seq: u64,
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub event: Event,
}

/// What a reader asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// Events after this sequence number; 0 for the oldest held.
    pub since: u64,
    pub filter: MonitorFilter,
    /// Only the newest `last` matching events (the older ones are skipped,
    /// not lost).
    pub last: Option<usize>,
}

/// What the ring answers: raw events, decoded by the API route.
#[derive(Clone, Debug)]
pub struct Batch {
    pub next: u64,
    pub lost: u64,
    pub events: Vec<Stored>,
}

struct Ring {
    events: VecDeque<Stored>,
    capacity: usize,
    /// The newest sequence number handed out (0: none yet).
    last_seq: u64,
}

/// The bounded ring of events, shared by the reader thread and the API.
pub struct Monitor {
    ring: Mutex<Ring>,
    grew: Condvar,
}

fn kind_of(e: &Event) -> MonitorKind {
    match e.kind {
        EVENT_DROP => MonitorKind::Drop,
        EVENT_TRACE => MonitorKind::Trace,
        _ => MonitorKind::Unknown,
    }
}

/// `ktime_ns` (CLOCK_MONOTONIC, what bpf_ktime_get_ns reads) on the wall
/// clock, given `offset_ns` = realtime − monotonic.
pub fn wall_time(ktime_ns: u64, offset_ns: i64) -> u64 {
    ktime_ns.saturating_add_signed(offset_ns)
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC now, to put datapath timestamps on the
/// wall clock (measured per batch, so a clock step shows up within a tick).
pub fn wall_offset_ns() -> i64 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec we own.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

impl Ring {
    fn answer(&self, q: &Query) -> Batch {
        // A cursor past anything handed out comes from an earlier agent
        // run (sequence numbers restart with the agent): start over.
        let since = if q.since > self.last_seq { 0 } else { q.since };
        let oldest = self.events.front().map_or(self.last_seq + 1, |s| s.seq);
        // Only a reader that had a cursor lost anything; `since=0` asks
        // for whatever is held.
        let lost = if since > 0 && oldest > since + 1 {
            oldest - since - 1
        } else {
            0
        };
        let start = self.events.partition_point(|s| s.seq <= since);
        let mut events: Vec<Stored> = self
            .events
            .range(start..)
            .filter(|s| q.filter.matches(kind_of(&s.event)))
            .copied()
            .collect();
        if let Some(n) = q.last {
            let skip = events.len().saturating_sub(n);
            events.drain(..skip);
        }
        Batch {
            next: self.last_seq.max(since),
            lost,
            events,
        }
    }
}

impl Monitor {
    pub fn new(capacity: usize) -> Monitor {
        Monitor {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                capacity: capacity.max(1),
                last_seq: 0,
            }),
            grew: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a batch read from the datapath (oldest first), numbering it
    /// on from the last sequence number and dropping the oldest events
    /// beyond the capacity; wakes every waiting reader.
    pub fn push(&self, events: &[Event], wall_offset_ns: i64) {
        if events.is_empty() {
            return;
        }
        let mut ring = self.lock();
        for e in events {
            ring.last_seq += 1;
            let stored = Stored {
                seq: ring.last_seq,
                time_ns: wall_time(e.ktime_ns, wall_offset_ns),
                event: *e,
            };
            if ring.events.len() == ring.capacity {
                ring.events.pop_front();
            }
            ring.events.push_back(stored);
        }
        drop(ring);
        self.grew.notify_all();
    }

    /// The events after `q.since` that match, waiting up to `wait` for one
    /// if there is none yet (or some were lost, which is news too).
    pub fn query(&self, q: &Query, wait: Duration) -> Batch {
        let deadline = Instant::now() + wait;
        let mut ring = self.lock();
        loop {
            let b = ring.answer(q);
            let now = Instant::now();
            if !b.events.is_empty() || b.lost > 0 || now >= deadline {
                return b;
            }
            ring = self
                .grew
                .wait_timeout(ring, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The newest sequence number handed out.
    pub fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }
}

/// Where the reader thread gets events: the datapath's ring buffer, or a
/// fake in tests.
pub trait EventSource: Send {
    /// Waits up to `tick` (less if the source has reason to wake early),
    /// then returns what has accumulated.
    fn wait(&mut self, tick: Duration) -> Result<Vec<Event>, pilus_datapath::Error>;
}

impl EventSource for pilus_datapath::EventReader {
    fn wait(&mut self, tick: Duration) -> Result<Vec<Event>, pilus_datapath::Error> {
        pilus_datapath::EventReader::wait(self, tick)
    }
}

/// Starts the thread that moves events from `source` into `monitor` once
/// per `tick` until `stop` is set.
///
/// `wait` returns at once while anything is unread (poll(2) on a ring
/// buffer reports it readable as soon as one record waits), so under steady
/// traffic the loop would wake for every few packets: it sleeps out the
/// rest of the tick instead, draining at most once per tick.
pub fn spawn_reader(
    mut source: impl EventSource + 'static,
    monitor: Arc<Monitor>,
    stop: Arc<AtomicBool>,
    tick: Duration,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match source.wait(tick) {
                    Ok(batch) => monitor.push(&batch, wall_offset_ns()),
                    Err(e) => tracing::warn!(error = %e, "reading datapath events failed"),
                }
                std::thread::sleep(tick.saturating_sub(started.elapsed()));
            }
        })
}

fn parse<T: std::str::FromStr>(req: &Request, name: &str) -> Result<Option<T>, Response> {
    match req.query_get(name) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            Response::error(400, &format!("{name}={v:?} is not a non-negative integer"))
        }),
    }
}

/// `GET /v1/monitor?since=SEQ&wait_ms=N&type=drop|trace|all&last=N`.
pub fn handle(monitor: &Monitor, cp: &ControlPlane, req: &Request) -> Response {
    if req.method != "GET" {
        return Response::error(405, &format!("{} {}: only GET", req.method, req.path));
    }
    let parsed = (|| {
        let filter = match req.query_get("type") {
            None | Some("") => MonitorFilter::All,
            Some(t) => MonitorFilter::parse(t).ok_or_else(|| {
                Response::error(400, &format!("type={t:?}: expected drop, trace or all"))
            })?,
        };
        let q = Query {
            since: parse(req, "since")?.unwrap_or(0),
            filter,
            last: parse(req, "last")?,
        };
        let wait_ms: u64 = parse(req, "wait_ms")?.unwrap_or(0);
        Ok::<_, Response>((q, Duration::from_millis(wait_ms.min(MONITOR_MAX_WAIT_MS))))
    })();
    let (q, wait) = match parsed {
        Ok(p) => p,
        Err(r) => return r,
    };
    let b = monitor.query(&q, wait);
    // Local endpoints by address, for the side of each packet the event's
    // own endpoint is not (as they are now, not as they were).
    let by_ip: HashMap<Ipv4Addr, u16> = if b.events.is_empty() {
        HashMap::new()
    } else {
        cp.endpoints_view()
            .into_iter()
            .map(|e| (e.ipv4, e.id))
            .collect()
    };
    let events = b
        .events
        .iter()
        .map(|s| {
            pilus_api::monitor::decode(&s.event, s.seq, s.time_ns, |ip| by_ip.get(&ip).copied())
        })
        .collect();
    Response::json(
        200,
        &MonitorBatch {
            next: b.next,
            lost: b.lost,
            events,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pilus_abi::consts::{DROP_POLICY, OBS_FROM_ENDPOINT, OBS_TO_ENDPOINT};

    fn ev(kind: u8, ktime_ns: u64) -> Event {
        Event {
            kind,
            subtype: if kind == EVENT_DROP { DROP_POLICY } else { 0 },
            obs_point: if kind == EVENT_DROP {
                OBS_FROM_ENDPOINT
            } else {
                OBS_TO_ENDPOINT
            },
            direction: 0,
            ep_id: 1,
            cap_len: 0,
            orig_len: 60,
            ifindex: 5,
            src_identity: 256,
            dst_identity: 257,
            ktime_ns,
            data: [0; 128],
        }
    }

    fn drops(n: usize) -> Vec<Event> {
        (0..n).map(|i| ev(EVENT_DROP, i as u64)).collect()
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        b.events.iter().map(|s| s.seq).collect()
    }

    fn q(since: u64) -> Query {
        Query {
            since,
            ..Default::default()
        }
    }

    const NOW: Duration = Duration::ZERO;

    #[test]
    fn sequence_numbers_since_and_next() {
        let m = Monitor::new(8);
        let b = m.query(&q(0), NOW);
        assert_eq!((b.next, b.lost, b.events.len()), (0, 0, 0), "empty ring");
        m.push(&drops(3), 1000);
        let b = m.query(&q(0), NOW);
        assert_eq!(seqs(&b), [1, 2, 3]);
        assert_eq!(b.next, 3);
        assert_eq!(b.events[0].time_ns, 1000, "ktime 0 + offset");
        let b = m.query(&q(2), NOW);
        assert_eq!((seqs(&b), b.next), (vec![3], 3));
        let b = m.query(&q(3), NOW);
        assert_eq!((seqs(&b), b.next, b.lost), (vec![], 3, 0), "caught up");
        m.push(&drops(2), 0);
        assert_eq!(seqs(&m.query(&q(3), NOW)), [4, 5]);
        assert_eq!(m.last_seq(), 5);
    }

    #[test]
    fn overwritten_events_are_counted_as_lost_for_a_cursor() {
        let m = Monitor::new(4);
        m.push(&drops(10), 0); // holds 7..=10
        let b = m.query(&q(2), NOW);
        assert_eq!((seqs(&b), b.lost, b.next), (vec![7, 8, 9, 10], 4, 10));
        let b = m.query(&q(6), NOW);
        assert_eq!((b.events.len(), b.lost), (4, 0), "6 was read, 7 is held");
        // since=0 asks for what is held: nothing is "lost" to it.
        let b = m.query(&q(0), NOW);
        assert_eq!((seqs(&b), b.lost), (vec![7, 8, 9, 10], 0));
    }

    #[test]
    fn a_cursor_from_an_earlier_agent_run_starts_over() {
        let m = Monitor::new(4);
        m.push(&drops(2), 0);
        let b = m.query(&q(1000), NOW);
        assert_eq!((seqs(&b), b.next, b.lost), (vec![1, 2], 2, 0));
    }

    #[test]
    fn type_filter_and_last() {
        let m = Monitor::new(16);
        let mixed = [
            ev(EVENT_DROP, 0),
            ev(EVENT_TRACE, 0),
            ev(EVENT_TRACE, 0),
            ev(EVENT_DROP, 0),
            ev(EVENT_TRACE, 0),
        ];
        m.push(&mixed, 0);
        let only = |filter, since, last| {
            m.query(
                &Query {
                    since,
                    filter,
                    last,
                },
                NOW,
            )
        };
        assert_eq!(seqs(&only(MonitorFilter::Drop, 0, None)), [1, 4]);
        assert_eq!(seqs(&only(MonitorFilter::Trace, 0, None)), [2, 3, 5]);
        assert_eq!(seqs(&only(MonitorFilter::All, 0, Some(2))), [4, 5]);
        assert_eq!(seqs(&only(MonitorFilter::Trace, 0, Some(1))), [5]);
        // `next` moves past events the filter skipped.
        let b = only(MonitorFilter::Drop, 4, None);
        assert_eq!((seqs(&b), b.next), (vec![], 5));
        // last=0: nothing, but where "now" is, to follow from.
        let b = only(MonitorFilter::All, 0, Some(0));
        assert_eq!((b.events.len(), b.next), (0, 5));
    }

    #[test]
    fn a_long_poll_wakes_when_events_arrive() {
        let m = Arc::new(Monitor::new(16));
        m.push(&drops(1), 0);
        let pusher = {
            let m = m.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                // A trace first: a drop-only poll must keep waiting.
                m.push(&[ev(EVENT_TRACE, 0)], 0);
                std::thread::sleep(Duration::from_millis(100));
                m.push(&drops(1), 0);
            })
        };
        let t = Instant::now();
        let b = m.query(
            &Query {
                since: 1,
                filter: MonitorFilter::Drop,
                last: None,
            },
            Duration::from_secs(10),
        );
        let took = t.elapsed();
        pusher.join().unwrap();
        assert_eq!((seqs(&b), b.next), (vec![3], 3));
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(5),
            "woke after {took:?}"
        );
    }

    #[test]
    fn a_long_poll_with_nothing_new_times_out_empty() {
        let m = Monitor::new(4);
        m.push(&drops(2), 0);
        let t = Instant::now();
        let b = m.query(&q(2), Duration::from_millis(150));
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert_eq!((b.events.len(), b.next, b.lost), (0, 2, 0));
    }

    /// A source that hands out one batch per call, then nothing.
    struct Fake(Vec<Vec<Event>>);

    impl EventSource for Fake {
        fn wait(&mut self, tick: Duration) -> Result<Vec<Event>, pilus_datapath::Error> {
            if self.0.is_empty() {
                std::thread::sleep(tick);
                return Ok(Vec::new());
            }
            Ok(self.0.remove(0))
        }
    }

    #[test]
    fn the_reader_thread_moves_batches_into_the_ring_and_stops() {
        let m = Arc::new(Monitor::new(16));
        let stop = Arc::new(AtomicBool::new(false));
        let h = spawn_reader(
            Fake(vec![drops(2), drops(3)]),
            m.clone(),
            stop.clone(),
            Duration::from_millis(10),
        )
        .unwrap();
        let b = m.query(
            &Query {
                since: 2,
                ..Default::default()
            },
            Duration::from_secs(5),
        );
        assert_eq!(seqs(&b), [3, 4, 5]);
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    }

    #[test]
    fn datapath_time_on_the_wall_clock() {
        assert_eq!(wall_time(5, 10), 15);
        assert_eq!(wall_time(5, -3), 2);
        assert_eq!(wall_time(1, -10), 0, "saturates");
        let off = wall_offset_ns();
        assert!(off > 0, "the wall clock is ahead of time since boot");
    }

    fn agent_with_two_endpoints() -> (ControlPlane, Vec<(u16, Ipv4Addr)>) {
        use pilus_controlplane::{
            fake::{FakeDatapath, FakePlumbing},
            Settings,
        };
        let settings = Settings {
            node_name: "n1".into(),
            pod_cidr: "198.18.0.0/24".parse().unwrap(),
            router: Ipv4Addr::new(198, 18, 0, 1),
            pin_dir: "/nonexistent".into(),
            socket: "/nonexistent.sock".into(),
            state_dir: "/nonexistent".into(),
        };
        let cp = ControlPlane::start(
            settings,
            std::sync::Arc::new(FakeDatapath::default()),
            std::sync::Arc::new(FakePlumbing::default()),
            std::sync::Arc::new(pilus_kvstore::MemKv::default()),
        )
        .expect("control plane");
        let eps = ["web", "client"]
            .iter()
            .map(|app| {
                let r = cp
                    .create_endpoint(&pilus_api::types::EndpointCreate {
                        container_id: app.to_string(),
                        netns: format!("/run/netns/{app}"),
                        labels: vec![format!("app={app}")],
                        ..Default::default()
                    })
                    .expect("endpoint");
                (r.endpoint.id, r.endpoint.ipv4)
            })
            .collect();
        (cp, eps)
    }

    fn get(query: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: pilus_api::types::paths::MONITOR.into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn the_route_decodes_events_and_names_both_endpoints() {
        use pilus_packet::{tcp_flags::SYN, PacketBuilder};
        let (agent, eps) = agent_with_two_endpoints();
        let ((web, web_ip), (client, client_ip)) = (eps[0], eps[1]);
        let pkt = PacketBuilder::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(client_ip, web_ip)
            .tcp(40000, 80, SYN)
            .build();
        let mut drop = ev(EVENT_DROP, 0);
        drop.ep_id = client;
        drop.data[..pkt.len()].copy_from_slice(&pkt);
        drop.cap_len = pkt.len() as u16;
        let m = Monitor::new(16);
        m.push(&[ev(EVENT_TRACE, 0), drop], 0);

        let r = handle(&m, &agent, &get(&[("since", "0"), ("type", "drop")]));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let b: MonitorBatch = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((b.next, b.lost, b.events.len()), (2, 0, 1));
        let e = &b.events[0];
        assert_eq!((e.seq, e.kind), (2, MonitorKind::Drop));
        assert_eq!(e.reason.as_ref().unwrap().name, "DROP_POLICY");
        assert_eq!((e.src_endpoint, e.dst_endpoint), (Some(client), Some(web)));
        assert_eq!(
            (e.packet.src_ip, e.packet.dst_ip, e.packet.dst_port),
            (Some(client_ip), Some(web_ip), Some(80))
        );

        // Nothing newer: an empty answer after the (capped) wait.
        let r = handle(&m, &agent, &get(&[("since", "2"), ("wait_ms", "20")]));
        let b: MonitorBatch = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((b.next, b.events.len()), (2, 0));
    }

    #[test]
    fn the_route_refuses_bad_parameters() {
        let (agent, _) = agent_with_two_endpoints();
        let m = Monitor::new(4);
        for query in [
            [("type", "drops")],
            [("since", "-1")],
            [("wait_ms", "soon")],
            [("last", "1.5")],
        ] {
            let r = handle(&m, &agent, &get(&query));
            assert_eq!(r.status, 400, "{query:?}");
            let body = String::from_utf8_lossy(&r.body);
            assert!(body.contains(query[0].0), "{query:?}: {body}");
        }
        let mut post = get(&[]);
        post.method = "POST".into();
        assert_eq!(handle(&m, &agent, &post).status, 405);
    }
}
