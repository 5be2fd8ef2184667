//! The XDP prefilter (bpf/bpf_xdp.c): attaching it to the uplink as a
//! pinned link that outlives the agent, and its deny list — source CIDRs in
//! the `pilus_prefilter` LPM trie — changed all or nothing.
//!
//! A [`Prefilter`] opens the pinned map itself (as the
//! [`Inspector`](crate::Inspector) does), so the API changes the list
//! without the lock the control plane holds over the loaded datapath.

use crate::{loader::XDP_PREFILTER, Datapath, Error};
use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Map, MapData, MapError,
    },
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        TestRun, TestRunOptions, Xdp, XdpMode,
    },
};
use ipnet::Ipv4Net;
use pilus_abi::{consts::PREFILTER_MAX, PrefilterValue};
use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    sync::Mutex,
};

const MAP: &str = "pilus_prefilter";

/// One entry of the deny list and what it has dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefilterEntry {
    pub cidr: Ipv4Net,
    pub packets: u64,
    pub bytes: u64,
}

/// Why a change to the list was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum PrefilterError {
    #[error("{cidr} is already on the prefilter's deny list")]
    Exists { cidr: Ipv4Net },
    #[error("{cidr} is not on the prefilter's deny list")]
    Missing { cidr: Ipv4Net },
    #[error("{cidr} is given twice")]
    Duplicate { cidr: Ipv4Net },
    #[error("the deny list holds {have} entries and {adding} more would pass its limit of {max}")]
    Full {
        have: usize,
        adding: usize,
        max: u32,
    },
    #[error("no CIDR given")]
    Empty,
    #[error(transparent)]
    Datapath(#[from] Error),
}

/// The deny list, opened from its pin.
pub struct Prefilter {
    map: Mutex<LpmTrie<MapData, [u8; 4], PrefilterValue>>,
}

impl Prefilter {
    /// Opens `pilus_prefilter` pinned in `pin_dir` (the datapath must have
    /// been loaded on it).
    pub fn open(pin_dir: &Path) -> Result<Prefilter, Error> {
        let path = pin_dir.join(MAP);
        let data = MapData::from_pin(&path).map_err(|e| Error::ReadPin {
            path,
            source: Box::new(e),
        })?;
        Self::from_data(data)
    }

    /// The deny list of a loaded datapath, pinned or not (the
    /// BPF_PROG_TEST_RUN tests load theirs unpinned).
    pub fn of(dp: &Datapath) -> Result<Prefilter, Error> {
        let map = dp.xdp.map(MAP).ok_or(Error::MissingMap { name: MAP })?;
        let id = match map {
            Map::LpmTrie(data) => data.info().map(|i| i.id()),
            _ => Err(MapError::InvalidName { name: MAP.into() }),
        }
        .map_err(|e| Error::map(MAP, e))?;
        Self::from_data(MapData::from_id(id).map_err(|e| Error::map(MAP, e))?)
    }

    fn from_data(data: MapData) -> Result<Prefilter, Error> {
        let map = Map::from_map_data(data)
            .and_then(LpmTrie::try_from)
            .map_err(|e| Error::map(MAP, e))?;
        Ok(Prefilter {
            map: Mutex::new(map),
        })
    }

    /// The entries, in address order, with their counters.
    pub fn list(&self) -> Result<Vec<PrefilterEntry>, Error> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        entries(&map)
    }

    /// Adds every CIDR of `cidrs`, or none: a CIDR already listed, one
    /// given twice or a list that would overflow is refused before anything
    /// is written, and a write that fails takes back the ones before it.
    pub fn add(&self, cidrs: &[Ipv4Net]) -> Result<(), PrefilterError> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let have = entries(&map)?;
        check_distinct(cidrs)?;
        if let Some(&cidr) = cidrs.iter().find(|c| have.iter().any(|e| e.cidr == **c)) {
            return Err(PrefilterError::Exists { cidr });
        }
        if have.len() + cidrs.len() > PREFILTER_MAX as usize {
            return Err(PrefilterError::Full {
                have: have.len(),
                adding: cidrs.len(),
                max: PREFILTER_MAX,
            });
        }
        for (i, cidr) in cidrs.iter().enumerate() {
            if let Err(e) = map.insert(&key(cidr), PrefilterValue::default(), 0) {
                for done in &cidrs[..i] {
                    let _ = map.remove(&key(done));
                }
                return Err(Error::map(MAP, e).into());
            }
        }
        Ok(())
    }

    /// Removes every CIDR of `cidrs`, or none: one that is not listed is
    /// refused before anything is removed. An empty request is an error,
    /// never "remove everything".
    pub fn remove(&self, cidrs: &[Ipv4Net]) -> Result<(), PrefilterError> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let have = entries(&map)?;
        check_distinct(cidrs)?;
        if let Some(&cidr) = cidrs.iter().find(|c| !have.iter().any(|e| e.cidr == **c)) {
            return Err(PrefilterError::Missing { cidr });
        }
        for (i, cidr) in cidrs.iter().enumerate() {
            if let Err(e) = map.remove(&key(cidr)) {
                for done in &cidrs[..i] {
                    let _ = map.insert(&key(done), PrefilterValue::default(), 0);
                }
                return Err(Error::map(MAP, e).into());
            }
        }
        Ok(())
    }
}

fn check_distinct(cidrs: &[Ipv4Net]) -> Result<(), PrefilterError> {
    if cidrs.is_empty() {
        return Err(PrefilterError::Empty);
    }
    let mut seen = BTreeMap::new();
    for &cidr in cidrs {
        if seen.insert(cidr, ()).is_some() {
            return Err(PrefilterError::Duplicate { cidr });
        }
    }
    Ok(())
}

fn key(cidr: &Ipv4Net) -> Key<[u8; 4]> {
    Key::new(u32::from(cidr.prefix_len()), cidr.network().octets())
}

fn entries(map: &LpmTrie<MapData, [u8; 4], PrefilterValue>) -> Result<Vec<PrefilterEntry>, Error> {
    let mut out = Vec::new();
    for item in map.iter() {
        let (k, v) = match item {
            Ok(kv) => kv,
            // Removed between the walk's steps: not there any more.
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(Error::map(MAP, e)),
        };
        let prefix = u8::try_from(k.prefix_len()).unwrap_or(32).min(32);
        let cidr = Ipv4Net::new(k.data().into(), prefix).expect("prefix_len <= 32");
        out.push(PrefilterEntry {
            cidr,
            packets: v.packets,
            bytes: v.bytes,
        });
    }
    out.sort_by_key(|e| (e.cidr.network(), e.cidr.prefix_len()));
    Ok(out)
}

impl Datapath {
    /// Runs the prefilter once on `frame` through BPF_PROG_TEST_RUN and
    /// returns its XDP verdict (`XDP_DROP` 1, `XDP_PASS` 2).
    pub fn test_run_prefilter(&self, frame: &[u8]) -> Result<u32, Error> {
        let prog: &Xdp = self
            .xdp
            .program(XDP_PREFILTER)
            .ok_or(Error::MissingProgram {
                name: XDP_PREFILTER,
            })
            .and_then(|p| p.try_into().map_err(|e| Error::program(XDP_PREFILTER, e)))?;
        let mut out = vec![0u8; frame.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
            .map_err(|e| Error::program(XDP_PREFILTER, e))?;
        Ok(r.return_value)
    }
}

/// The prefilter's program in bpf_xdp.o.
pub(crate) fn prefilter_program(xdp: &mut aya::Ebpf) -> Result<&mut Xdp, Error> {
    xdp.program_mut(XDP_PREFILTER)
        .ok_or(Error::MissingProgram {
            name: XDP_PREFILTER,
        })?
        .try_into()
        .map_err(|e| Error::program(XDP_PREFILTER, e))
}

/// Where the prefilter's link on `ifname` is pinned under `pin_dir`.
pub fn link_pin(pin_dir: &Path, ifname: &str) -> PathBuf {
    pin_dir.join("links").join(format!("{ifname}_xdp"))
}

impl Datapath {
    /// Attaches the prefilter to `ifname` (in the calling thread's
    /// namespace) as a pinned XDP link. A link an earlier agent pinned is
    /// updated to this build's program in place, so the device is never
    /// without its prefilter across a restart.
    pub fn attach_prefilter(&mut self, ifname: &str) -> Result<(), Error> {
        let pin_dir = self.pin_dir().ok_or(Error::NotPinned)?.to_path_buf();
        let path = link_pin(&pin_dir, ifname);
        let index = if_index(ifname).ok_or_else(|| Error::NoSuchLink {
            ifname: ifname.to_string(),
        })?;
        let prog = prefilter_program(&mut self.xdp)?;
        let attach_err = |source| Error::Attach {
            program: XDP_PREFILTER,
            ifname: ifname.to_string(),
            attach: "xdp",
            source: Box::new(source),
        };
        let earlier = match PinnedLink::from_pin(&path) {
            Ok(pinned) => Some(pinned.unpin().map_err(|source| Error::Bpffs {
                path: path.clone(),
                source,
            })?),
            Err(_) if !path.exists() => None,
            Err(e) => {
                return Err(Error::PinLink {
                    program: XDP_PREFILTER,
                    ifname: ifname.to_string(),
                    path,
                    source: Box::new(e),
                })
            }
        };
        let id = match earlier {
            // The earlier link is on this device only if its pin says so;
            // one pinned for a device of the same name that was deleted
            // and made again is gone with it, and bpf_link_update fails.
            Some(fd) => match XdpLink::try_from(fd)
                .ok()
                .and_then(|l| prog.attach_to_link(l).ok())
            {
                Some(id) => id,
                None => prog
                    .attach_to_if_index(index, XdpMode::Default)
                    .map_err(attach_err)?,
            },
            None => prog
                .attach_to_if_index(index, XdpMode::Default)
                .map_err(attach_err)?,
        };
        let link = prog.take_link(id).map_err(attach_err)?;
        let fd = FdLink::try_from(link).map_err(|e| Error::PinLink {
            program: XDP_PREFILTER,
            ifname: ifname.to_string(),
            path: path.clone(),
            source: Box::new(e),
        })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Bpffs {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        fd.pin(&path).map_err(|e| Error::PinLink {
            program: XDP_PREFILTER,
            ifname: ifname.to_string(),
            path: path.clone(),
            source: Box::new(e),
        })?;
        tracing::debug!(ifname, "XDP prefilter attached");
        Ok(())
    }
}

/// Removes the prefilter's link on `ifname` (the pin holds the only
/// reference once the agent that made it is gone); a missing pin is fine.
pub fn detach_prefilter(pin_dir: &Path, ifname: &str) -> Result<(), Error> {
    let path = link_pin(pin_dir, ifname);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Bpffs { path, source }),
    }
}

fn if_index(ifname: &str) -> Option<u32> {
    let name = std::ffi::CString::new(ifname).ok()?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}
