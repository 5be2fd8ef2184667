//! Reading the pilus_events ring buffer. The datapath submits without waking
//! the reader (a wakeup costs ~6 us per packet here), so the reader drains on
//! its own schedule: on a timer, or when the datapath forces a wakeup because
//! CONFIG_EVENTS_WAKEUP_BYTES are waiting. Events the datapath could not
//! put on a full ring are counted per CPU (`pilus_evstats`), and the reader
//! reads those counters too, so a loss is never silent.

use crate::{Datapath, Error};
use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use pilus_abi::{Event, EventStats};
use std::os::fd::AsFd;

/// A record's size in the ring: the kernel's 8-byte header, then the event,
/// rounded up to 8 bytes.
const RECORD_BYTES: usize = (8 + std::mem::size_of::<Event>()).next_multiple_of(8);

/// Owns the ring buffer; `drain` returns what has accumulated.
pub struct EventReader {
    ring: RingBuf<MapData>,
    /// The datapath's per-CPU counters of records submitted and lost (its
    /// own handle: the datapath keeps the map for its status readers).
    stats: PerCpuArray<MapData, EventStats>,
    /// How many records the ring holds: the most one `drain` returns.
    capacity: usize,
}

impl EventReader {
    /// Takes the ring buffer out of the datapath (there is one reader).
    ///
    /// The ring may be one an earlier load pinned, not the one this object
    /// defines: aya sizes a `RingBuf`'s mmap and its offset mask from the
    /// object's `max_entries` even for a map it reused from a pin (aya
    /// 0.14, `RingBuf::new`), so a pinned ring of another size would fail
    /// to map (smaller) or be read at wrong offsets once the producer passes
    /// the object's size (larger). The handle is therefore rebuilt from the
    /// kernel's description of the map actually in use.
    pub fn new(dp: &mut Datapath) -> Result<EventReader, Error> {
        const NAME: &str = "pilus_events";
        let map = dp
            .ebpf
            .take_map(NAME)
            .ok_or(Error::MissingMap { name: NAME })?;
        let loaded = match map {
            Map::RingBuf(m) => m,
            // Not a ring buffer (the verifier would have refused the
            // programs, so this is a bug): let aya name the type.
            other => {
                return Err(match RingBuf::try_from(other) {
                    Err(e) => Error::map(NAME, e),
                    Ok(_) => Error::MissingMap { name: NAME },
                })
            }
        };
        let fd = loaded
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| Error::Syscall {
                call: "dup(ring buffer fd)",
                source,
            })?;
        let kernel = MapData::from_fd(fd).map_err(|e| Error::map(NAME, e))?;
        let bytes = kernel
            .info()
            .map_err(|e| Error::map(NAME, e))?
            .max_entries();
        let ring = RingBuf::try_from(Map::RingBuf(kernel)).map_err(|e| Error::map(NAME, e))?;
        tracing::debug!(bytes, "event ring buffer opened");
        const STATS: &str = "pilus_evstats";
        let stats_fd = match dp.ebpf.map(STATS) {
            Some(Map::PerCpuArray(m)) => m.fd(),
            // Missing, or not a per-CPU array (the verifier would have
            // refused the programs): either way not the map we need.
            _ => return Err(Error::MissingMap { name: STATS }),
        }
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| Error::Syscall {
            call: "dup(event stats fd)",
            source,
        })?;
        let stats_map = MapData::from_fd(stats_fd).map_err(|e| Error::map(STATS, e))?;
        let stats =
            PerCpuArray::try_from(Map::PerCpuArray(stats_map)).map_err(|e| Error::map(STATS, e))?;
        Ok(EventReader {
            ring,
            stats,
            capacity: (bytes as usize / RECORD_BYTES).max(1),
        })
    }

    /// The events waiting now, oldest first: at most one ring's worth, so a
    /// datapath that produces as fast as this reads cannot keep the call
    /// from returning (the rest is read by the next call).
    pub fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while out.len() < self.capacity {
            let Some(item) = self.ring.next() else { break };
            if let Some(ev) = Event::from_bytes(&item) {
                out.push(ev);
            }
        }
        out
    }

    /// Waits until the datapath forces a wakeup (CONFIG_EVENTS_WAKEUP_BYTES
    /// are waiting) or `interval` passes, whichever is first, then drains.
    /// Returns at once while unread events remain (the ring is readable), so
    /// an agent calling this in a loop is woken once per batch or per tick,
    /// never per packet.
    pub fn wait(&mut self, interval: std::time::Duration) -> Result<Vec<Event>, Error> {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = interval.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Syscall {
                    call: "poll(ring buffer)",
                    source: e,
                });
            }
        }
        Ok(self.drain())
    }

    /// The datapath's counters of records submitted and lost (a full ring),
    /// per CPU, since the map was created (they survive agent restarts).
    pub fn stats(&self) -> Result<Vec<EventStats>, Error> {
        let v = self
            .stats
            .get(&0, 0)
            .map_err(|e| Error::map("pilus_evstats", e))?;
        Ok(v.iter().copied().collect())
    }

    /// The file descriptor to poll for forced wakeups.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.ring.as_fd()
    }
}
