//! Reading the pilus_events ring buffer. The datapath submits without waking
//! the reader (a wakeup costs ~6 us per packet here), so the reader drains on
//! its own schedule: on a timer, or when the datapath forces a wakeup because
//! CONFIG_EVENTS_WAKEUP_BYTES are waiting.

use crate::{Datapath, Error};
use aya::maps::{MapData, RingBuf};
use pilus_abi::Event;

/// Owns the ring buffer; `drain` returns what has accumulated.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl EventReader {
    /// Takes the ring buffer out of the datapath (there is one reader).
    pub fn new(dp: &mut Datapath) -> Result<EventReader, Error> {
        let map = dp.ebpf.take_map("pilus_events").ok_or(Error::MissingMap {
            name: "pilus_events",
        })?;
        let ring = RingBuf::try_from(map).map_err(|e| Error::map("pilus_events", e))?;
        Ok(EventReader { ring })
    }

    /// Every event waiting now, oldest first.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
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

    /// The file descriptor to poll for forced wakeups.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.ring.as_fd()
    }
}
