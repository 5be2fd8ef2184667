//! The monitor (`cilium monitor` for Pilus): the datapath's events, read
//! from the `pilus_events` ring buffer into a bounded in-memory ring with
//! sequence numbers, for `GET /v1/monitor` (the route is in
//! `api::long_poll`), and the monitor's run-time settings (aggregation
//! level, debug, capture) behind [`MonitorControl`].
//!
//! The ring has its own lock and publishes its newest sequence number on a
//! `tokio::sync::watch`: a long poll awaits that, never the agent's lock
//! (taken only briefly, after the wait, to name the endpoints and policies
//! of the events it returns), and holds no thread while it waits. Events are
//! kept raw and decoded when asked for, so an agent nobody monitors spends
//! nothing on decoding.
//!
//! The reader is a task: it drains the ring buffer every [`TICK`] and
//! whenever the buffer's fd turns readable ([`AsyncFd`]). Every event it
//! reads is counted by kind ([`Monitor::totals`], for the metrics), without
//! the ring's lock. After each drain it reads the datapath's per-CPU counts
//! of events lost to a full ring and records each increase as a
//! [`Record::Lost`] in sequence, so a reader sees where events went missing;
//! the first read after start also reports what was lost while no agent
//! read.

use pilus_api_types::{MonitorFilter, MonitorKind};
use pilus_datapath::MonitorSettings;
use pilus_monitor::Record;
use std::{
    collections::VecDeque,
    os::fd::{AsRawFd, RawFd},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};
use tokio::{io::unix::AsyncFd, sync::watch};

/// Records the agent keeps (~200 bytes each: ~800 KiB when full).
pub const CAPACITY: usize = 4096;

/// How often the reader drains the ring buffer. The datapath submits with
/// BPF_RB_NO_WAKEUP (a wakeup per packet would cost more than the packet),
/// so readiness alone would leave events unread until the ring nearly
/// fills: the reader must come and look. 1 MiB of ring at 192 bytes a
/// record holds ~5,400 events, over 100,000 events/s at this pace.
pub const TICK: Duration = Duration::from_millis(50);

/// One record as the ring keeps it.
#[derive(Clone, Copy, Debug)]
pub struct Stored {
    pub seq: u64,
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub record: Record,
}

/// What a reader asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// Records after this sequence number; 0 for the oldest held.
    pub since: u64,
    /// Only its `types` are applied here; endpoints are matched once the
    /// events are decoded (by the route).
    pub filter: MonitorFilter,
    /// Only the newest `last` matching records (the older ones are skipped,
    /// not lost).
    pub last: Option<usize>,
}

/// What the ring answers: raw records, decoded by the API route.
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

/// Reads and changes the monitor's settings in the datapath
/// (`pilus_monconf`): the agent's pinned maps, or a fake.
pub trait MonitorControl: Send + Sync {
    fn settings(&self) -> Result<MonitorSettings, pilus_datapath::Error>;
    fn set_settings(&self, s: MonitorSettings) -> Result<(), pilus_datapath::Error>;
}

/// Settings kept in memory: for a monitor with no datapath (tests).
#[derive(Default)]
pub struct InMemoryControl(Mutex<MonitorSettings>);

impl MonitorControl for InMemoryControl {
    fn settings(&self) -> Result<MonitorSettings, pilus_datapath::Error> {
        Ok(*self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
    fn set_settings(&self, s: MonitorSettings) -> Result<(), pilus_datapath::Error> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = s;
        Ok(())
    }
}

/// The bounded ring of records, shared by the reader task and the API.
pub struct Monitor {
    ring: Mutex<Ring>,
    /// The newest sequence number, for long polls to await.
    grew: watch::Sender<u64>,
    control: Arc<dyn MonitorControl>,
    /// Events read from the datapath since the agent started, by kind
    /// (the slots of [`EventTotals`]).
    totals: [AtomicU64; 6],
    /// Events the datapath lost to a full ring, as reported so far.
    lost: AtomicU64,
}

/// Events read from the datapath since the agent started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventTotals {
    pub drops: u64,
    pub traces: u64,
    pub verdicts: u64,
    pub debug: u64,
    pub captures: u64,
    /// Kinds this agent does not know (from a newer datapath).
    pub other: u64,
}

impl EventTotals {
    pub fn sum(&self) -> u64 {
        self.drops + self.traces + self.verdicts + self.debug + self.captures + self.other
    }
}

fn kind_of(r: &Record) -> MonitorKind {
    match r {
        Record::Event(e) => pilus_monitor::kind_of(e),
        Record::Lost { .. } => MonitorKind::Lost,
    }
}

/// `ktime_ns` (CLOCK_MONOTONIC, what bpf_ktime_get_ns reads) on the wall
/// clock, given `offset_ns` = realtime − monotonic.
pub fn wall_time(ktime_ns: u64, offset_ns: i64) -> u64 {
    ktime_ns.saturating_add_signed(offset_ns)
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC now, to put datapath timestamps on the
/// wall clock (measured per batch, so a clock step shows up within a tick).
pub fn wall_offset_ns() -> i64 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)
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
            .filter(|s| q.filter.matches_kind(kind_of(&s.record)))
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
    /// A ring whose settings live in memory (no datapath).
    pub fn new(capacity: usize) -> Monitor {
        Monitor::with_control(capacity, Arc::new(InMemoryControl::default()))
    }

    pub fn with_control(capacity: usize, control: Arc<dyn MonitorControl>) -> Monitor {
        Monitor {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                capacity: capacity.max(1),
                last_seq: 0,
            }),
            grew: watch::Sender::new(0),
            control,
            totals: Default::default(),
            lost: AtomicU64::new(0),
        }
    }

    /// Events read from the datapath since the agent started, by kind.
    pub fn totals(&self) -> EventTotals {
        let [drops, traces, verdicts, debug, captures, other] =
            self.totals.each_ref().map(|t| t.load(Ordering::Relaxed));
        EventTotals {
            drops,
            traces,
            verdicts,
            debug,
            captures,
            other,
        }
    }

    /// The datapath's monitor settings.
    pub fn control(&self) -> &dyn MonitorControl {
        self.control.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a batch of datapath events (oldest first), numbering them on
    /// from the last sequence number and dropping the oldest records beyond
    /// the capacity; wakes every waiting reader.
    pub fn push(&self, events: &[pilus_abi::Event], wall_offset_ns: i64) {
        for e in events {
            let slot = match pilus_monitor::kind_of(e) {
                MonitorKind::Drop => 0,
                MonitorKind::Trace => 1,
                MonitorKind::PolicyVerdict => 2,
                MonitorKind::Debug => 3,
                MonitorKind::Capture => 4,
                MonitorKind::Lost | MonitorKind::Unknown => 5,
            };
            self.totals[slot].fetch_add(1, Ordering::Relaxed);
        }
        self.push_records(
            events.iter().map(|e| (e.ktime_ns, Record::Event(*e))),
            wall_offset_ns,
        );
    }

    /// Records that `count` events were lost on `cpu` (reported now).
    pub fn push_lost(&self, lost: &[(u16, u64)], wall_offset_ns: i64) {
        let now = clock_ns(libc::CLOCK_MONOTONIC).max(0) as u64;
        for (_, n) in lost {
            self.lost.fetch_add(*n, Ordering::Relaxed);
        }
        self.push_records(
            lost.iter()
                .map(|&(cpu, count)| (now, Record::Lost { cpu, count })),
            wall_offset_ns,
        );
    }

    fn push_records(&self, records: impl Iterator<Item = (u64, Record)>, wall_offset_ns: i64) {
        let mut ring = self.lock();
        let before = ring.last_seq;
        for (ktime_ns, record) in records {
            ring.last_seq += 1;
            let stored = Stored {
                seq: ring.last_seq,
                time_ns: wall_time(ktime_ns, wall_offset_ns),
                record,
            };
            if ring.events.len() == ring.capacity {
                ring.events.pop_front();
            }
            ring.events.push_back(stored);
        }
        let last = ring.last_seq;
        drop(ring);
        if last != before {
            self.grew.send_replace(last);
        }
    }

    /// Events read from the datapath since the agent started, and events
    /// the datapath lost to a full ring.
    pub fn counts(&self) -> (u64, u64) {
        (self.totals().sum(), self.lost.load(Ordering::Relaxed))
    }

    /// The records after `q.since` that match, as they are now.
    pub fn query_now(&self, q: &Query) -> Batch {
        self.lock().answer(q)
    }

    /// The records after `q.since` that match, waiting up to `wait` for one
    /// if there is none yet (or some were lost, which is news too). Returns
    /// early, with what there is, once `stop` turns true.
    pub async fn query(&self, q: &Query, wait: Duration, stop: &watch::Receiver<bool>) -> Batch {
        let deadline = tokio::time::Instant::now() + wait;
        // Subscribed before the first look, so a push between the look and
        // the wait still wakes it.
        let mut grew = self.grew.subscribe();
        let mut stop = stop.clone();
        loop {
            grew.mark_unchanged();
            let b = self.query_now(q);
            if !b.events.is_empty() || b.lost > 0 || *stop.borrow() {
                return b;
            }
            tokio::select! {
                changed = grew.changed() => {
                    // The sender lives as long as `self`: never closed here.
                    if changed.is_err() {
                        return b;
                    }
                }
                // Stopping is the only change `stop` makes (a closed
                // channel counts too): answer with what there is.
                _ = stop.changed() => return self.query_now(q),
                _ = tokio::time::sleep_until(deadline) => return b,
            }
        }
    }

    /// The newest sequence number handed out.
    pub fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }
}

/// Where the reader task gets events: the datapath's ring buffer, or a
/// fake in tests. The fd turns readable when the producer wakes readers
/// (the datapath only forces that when CONFIG_EVENTS_WAKEUP_BYTES wait).
///
/// # Safety
///
/// `as_raw_fd` returns the same open file descriptor, owned by the source,
/// for the source's whole life: the reader registers it with tokio's
/// reactor (`AsyncFd::register`) and must not see it closed or replaced.
pub unsafe trait EventSource: AsRawFd + Send + 'static {
    /// What has accumulated, oldest first, without blocking.
    fn drain(&mut self) -> Vec<pilus_abi::Event>;
    /// Events lost to a full ring so far, per CPU (counters that only
    /// grow); empty when the source cannot lose any.
    fn lost_per_cpu(&mut self) -> Vec<u64> {
        Vec::new()
    }
}

/// The datapath's ring buffer as an [`EventSource`].
pub struct DatapathEvents(pub pilus_datapath::EventReader);

impl AsRawFd for DatapathEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

// SAFETY: the EventReader owns the ring buffer's map fd until it is
// dropped, and `as_fd` always borrows that one.
unsafe impl EventSource for DatapathEvents {
    fn drain(&mut self) -> Vec<pilus_abi::Event> {
        self.0.drain()
    }
    fn lost_per_cpu(&mut self) -> Vec<u64> {
        match self.0.stats() {
            Ok(v) => v.iter().map(|s| s.lost).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the datapath's lost-event counters");
                Vec::new()
            }
        }
    }
}

/// The increase of each CPU's lost counter since `seen` (which it
/// updates); a counter that went back (the map was made anew) counts from
/// zero.
fn lost_since(seen: &mut Vec<u64>, now: &[u64]) -> Vec<(u16, u64)> {
    seen.resize(now.len(), 0);
    let mut out = Vec::new();
    for (cpu, (&n, s)) in now.iter().zip(seen.iter_mut()).enumerate() {
        let delta = if n >= *s { n - *s } else { n };
        if delta > 0 {
            out.push((cpu as u16, delta));
        }
        *s = n;
    }
    out
}

/// Moves events from `source` into `monitor` every `tick`, and as soon as
/// the source is readable, until `stop` turns true. Must run inside a tokio
/// runtime (it registers the fd with its reactor).
///
/// Readiness wakes it at most once per forced wakeup (tokio's epoll is
/// edge-triggered and the readiness is cleared after each drain), so steady
/// traffic does not turn into a wakeup per packet.
pub async fn read_events(
    source: impl EventSource,
    monitor: std::sync::Arc<Monitor>,
    tick: Duration,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // SAFETY: the fd stays open and the same for the source's life (the
    // contract of `EventSource`), and the AsyncFd owns the source.
    let mut fd = unsafe { AsyncFd::register_with_interest(source, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Everything lost before this agent read (the counters outlive agents)
    // is reported with the first read.
    let mut lost_seen: Vec<u64> = Vec::new();
    while !*stop.borrow() {
        tokio::select! {
            _ = ticks.tick() => {}
            ready = fd.readable_mut() => match ready {
                Ok(mut guard) => guard.clear_ready(),
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for datapath events failed; reading on the tick only");
                    ticks.tick().await;
                }
            },
            _ = stop.changed() => break,
        }
        let batch = fd.get_mut().drain();
        let offset = wall_offset_ns();
        monitor.push(&batch, offset);
        let lost = lost_since(&mut lost_seen, &fd.get_mut().lost_per_cpu());
        if !lost.is_empty() {
            let total: u64 = lost.iter().map(|(_, n)| n).sum();
            tracing::warn!(
                lost = total,
                "datapath events lost: the ring buffer was full"
            );
            monitor.push_lost(&lost, offset);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pilus_abi::{
        consts::{DROP_POLICY, EVENT_DROP, EVENT_TRACE, OBS_FROM_ENDPOINT, OBS_TO_ENDPOINT},
        Event,
    };
    use std::time::Instant;

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
            ..Default::default()
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

    #[test]
    fn sequence_numbers_since_and_next() {
        let m = Monitor::new(8);
        let b = m.query_now(&q(0));
        assert_eq!((b.next, b.lost, b.events.len()), (0, 0, 0), "empty ring");
        m.push(&drops(3), 1000);
        let b = m.query_now(&q(0));
        assert_eq!(seqs(&b), [1, 2, 3]);
        assert_eq!(b.next, 3);
        assert_eq!(b.events[0].time_ns, 1000, "ktime 0 + offset");
        let b = m.query_now(&q(2));
        assert_eq!((seqs(&b), b.next), (vec![3], 3));
        let b = m.query_now(&q(3));
        assert_eq!((seqs(&b), b.next, b.lost), (vec![], 3, 0), "caught up");
        m.push(&drops(2), 0);
        assert_eq!(seqs(&m.query_now(&q(3))), [4, 5]);
        assert_eq!(m.last_seq(), 5);
        m.push(&[ev(EVENT_TRACE, 0), ev(9, 0)], 0);
        assert_eq!(
            m.totals(),
            EventTotals {
                drops: 5,
                traces: 1,
                other: 1,
                ..Default::default()
            },
            "every event read is counted by kind"
        );
    }

    #[test]
    fn overwritten_events_are_counted_as_lost_for_a_cursor() {
        let m = Monitor::new(4);
        m.push(&drops(10), 0); // holds 7..=10
        let b = m.query_now(&q(2));
        assert_eq!((seqs(&b), b.lost, b.next), (vec![7, 8, 9, 10], 4, 10));
        let b = m.query_now(&q(6));
        assert_eq!((b.events.len(), b.lost), (4, 0), "6 was read, 7 is held");
        // since=0 asks for what is held: nothing is "lost" to it.
        let b = m.query_now(&q(0));
        assert_eq!((seqs(&b), b.lost), (vec![7, 8, 9, 10], 0));
    }

    #[test]
    fn a_cursor_from_an_earlier_agent_run_starts_over() {
        let m = Monitor::new(4);
        m.push(&drops(2), 0);
        let b = m.query_now(&q(1000));
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
            m.query_now(&Query {
                since,
                filter,
                last,
            })
        };
        assert_eq!(
            seqs(&only(MonitorFilter::of(MonitorKind::Drop), 0, None)),
            [1, 4]
        );
        assert_eq!(
            seqs(&only(MonitorFilter::of(MonitorKind::Trace), 0, None)),
            [2, 3, 5]
        );
        assert_eq!(seqs(&only(MonitorFilter::default(), 0, Some(2))), [4, 5]);
        assert_eq!(
            seqs(&only(MonitorFilter::of(MonitorKind::Trace), 0, Some(1))),
            [5]
        );
        // `next` moves past events the filter skipped.
        let b = only(MonitorFilter::of(MonitorKind::Drop), 4, None);
        assert_eq!((seqs(&b), b.next), (vec![], 5));
        // last=0: nothing, but where "now" is, to follow from.
        let b = only(MonitorFilter::default(), 0, Some(0));
        assert_eq!((b.events.len(), b.next), (0, 5));
    }

    #[test]
    fn losses_are_records_in_sequence_that_every_filter_lets_through() {
        let m = Monitor::new(16);
        m.push(&drops(2), 0);
        m.push_lost(&[(0, 5), (3, 2)], 0);
        m.push(&[ev(EVENT_TRACE, 0)], 0);
        let b = m.query_now(&Query {
            since: 0,
            filter: MonitorFilter::of(MonitorKind::Trace),
            last: None,
        });
        let kinds: Vec<(u64, Record)> = b.events.iter().map(|s| (s.seq, s.record)).collect();
        assert_eq!(
            kinds[..2],
            [
                (3, Record::Lost { cpu: 0, count: 5 }),
                (4, Record::Lost { cpu: 3, count: 2 })
            ]
        );
        assert_eq!(kinds.len(), 3, "and the trace");
        assert_eq!(m.counts(), (3, 7), "3 events read, 7 lost");
        assert!(
            b.events[0].time_ns > 0,
            "a loss is timed when it is reported"
        );
    }

    #[test]
    fn lost_counters_turn_into_increases_per_cpu() {
        let mut seen = Vec::new();
        assert_eq!(
            lost_since(&mut seen, &[0, 4]),
            [(1, 4)],
            "the first read reports what was lost before"
        );
        assert_eq!(lost_since(&mut seen, &[0, 4]), []);
        assert_eq!(lost_since(&mut seen, &[2, 10]), [(0, 2), (1, 6)]);
        assert_eq!(
            lost_since(&mut seen, &[1, 10]),
            [(0, 1)],
            "a counter made anew counts from zero"
        );
    }

    fn running() -> (watch::Sender<bool>, watch::Receiver<bool>) {
        watch::channel(false)
    }

    #[tokio::test]
    async fn a_long_poll_wakes_when_events_arrive() {
        let m = Arc::new(Monitor::new(16));
        m.push(&drops(1), 0);
        let pusher = {
            let m = m.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                // A trace first: a drop-only poll must keep waiting.
                m.push(&[ev(EVENT_TRACE, 0)], 0);
                tokio::time::sleep(Duration::from_millis(100)).await;
                m.push(&drops(1), 0);
            })
        };
        let (_stop, stopped) = running();
        let t = Instant::now();
        let b = m
            .query(
                &Query {
                    since: 1,
                    filter: MonitorFilter::of(MonitorKind::Drop),
                    last: None,
                },
                Duration::from_secs(10),
                &stopped,
            )
            .await;
        let took = t.elapsed();
        pusher.await.unwrap();
        assert_eq!((seqs(&b), b.next), (vec![3], 3));
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(5),
            "woke after {took:?}"
        );
    }

    #[tokio::test]
    async fn a_long_poll_with_nothing_new_times_out_empty() {
        let m = Monitor::new(4);
        m.push(&drops(2), 0);
        let (_stop, stopped) = running();
        let t = Instant::now();
        let b = m.query(&q(2), Duration::from_millis(150), &stopped).await;
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert_eq!((b.events.len(), b.next, b.lost), (0, 2, 0));
    }

    #[tokio::test]
    async fn a_long_poll_ends_when_the_agent_stops() {
        let m = Monitor::new(4);
        let (stop, stopped) = running();
        let t = Instant::now();
        let all = q(0);
        let poll = m.query(&all, Duration::from_secs(30), &stopped);
        let ((), b) = tokio::join!(
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                stop.send_replace(true);
            },
            poll
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(b.events.len(), 0);
    }

    /// A source that hands out queued batches; its fd (one end of a socket
    /// pair) turns readable when the test writes to the other end, as the
    /// ring buffer's does on a forced wakeup.
    struct Fake {
        batches: Arc<Mutex<Vec<Vec<Event>>>>,
        wake: std::os::unix::net::UnixStream,
    }

    impl AsRawFd for Fake {
        fn as_raw_fd(&self) -> RawFd {
            self.wake.as_raw_fd()
        }
    }

    // SAFETY: `wake` is owned by the fake and never replaced.
    unsafe impl EventSource for Fake {
        fn drain(&mut self) -> Vec<Event> {
            use std::io::Read;
            let mut sink = [0u8; 64];
            let _ = self.wake.read(&mut sink);
            let mut b = self.batches.lock().unwrap();
            if b.is_empty() {
                Vec::new()
            } else {
                b.remove(0)
            }
        }
    }

    fn fake() -> (
        Fake,
        Arc<Mutex<Vec<Vec<Event>>>>,
        std::os::unix::net::UnixStream,
    ) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let batches = Arc::new(Mutex::new(Vec::new()));
        (
            Fake {
                batches: batches.clone(),
                wake: ours,
            },
            batches,
            theirs,
        )
    }

    #[tokio::test]
    async fn the_reader_drains_on_every_tick_and_stops() {
        let m = Arc::new(Monitor::new(16));
        let (source, batches, _wake) = fake();
        batches.lock().unwrap().extend([drops(2), drops(3)]);
        let (stop, stopped) = running();
        let reader = tokio::spawn(read_events(
            source,
            m.clone(),
            Duration::from_millis(10),
            stopped.clone(),
        ));
        let b = m
            .query(
                &Query {
                    since: 2,
                    ..Default::default()
                },
                Duration::from_secs(5),
                &stopped,
            )
            .await;
        assert_eq!(seqs(&b), [3, 4, 5]);
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the reader stops")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn the_reader_drains_as_soon_as_the_source_wakes_it() {
        use std::io::Write;
        let m = Arc::new(Monitor::new(16));
        let (source, batches, mut wake) = fake();
        let (stop, stopped) = running();
        // A tick far beyond the test: only readiness can move the events.
        let reader = tokio::spawn(read_events(
            source,
            m.clone(),
            Duration::from_secs(3600),
            stopped.clone(),
        ));
        // The interval's first tick is immediate: let it pass empty.
        tokio::time::sleep(Duration::from_millis(50)).await;
        batches.lock().unwrap().push(drops(4));
        let t = Instant::now();
        wake.write_all(b"!").unwrap();
        let b = m.query(&q(0), Duration::from_secs(5), &stopped).await;
        assert_eq!(seqs(&b), [1, 2, 3, 4]);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        stop.send_replace(true);
        reader.await.unwrap().unwrap();
    }

    #[test]
    fn datapath_time_on_the_wall_clock() {
        assert_eq!(wall_time(5, 10), 15);
        assert_eq!(wall_time(5, -3), 2);
        assert_eq!(wall_time(1, -10), 0, "saturates");
        let off = wall_offset_ns();
        assert!(off > 0, "the wall clock is ahead of time since boot");
    }
}
