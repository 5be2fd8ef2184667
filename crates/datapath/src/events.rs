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

    /// The file descriptor to poll for forced wakeups.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.ring.as_fd()
    }
}
