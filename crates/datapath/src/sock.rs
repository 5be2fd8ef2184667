//! Socket-level service LB (bpf/bpf_sock.c): its seven cgroup programs and
//! their attachment to one cgroup v2 directory, as links pinned under
//! `<pin dir>/links/` so that they outlive the agent. Each start of an agent
//! with socket LB replaces them with its own programs; a start without it
//! removes them ([`detach_socket_lb`]).
//!
//! Every socket created by a process of the cgroup (or of a cgroup below it)
//! is translated at connect()/sendmsg() time; sockets of other processes
//! keep the per-packet LB of from-container.

use crate::{Datapath, Error};
use aya::{
    programs::{
        cgroup_sock_addr::CgroupSockAddrAttachType, links::FdLink, CgroupAttachMode, CgroupSockAddr,
    },
    Ebpf,
};
use std::{
    fs::File,
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

/// The programs of bpf_sock.c, one per hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockProgram {
    /// connect() of TCP and UDP sockets: a frontend becomes a backend.
    Connect4,
    /// sendmsg() with an address on UDP sockets (unconnected UDP).
    Sendmsg4,
    /// recvmsg() on UDP sockets: a backend shows as its frontend.
    Recvmsg4,
    /// getpeername(): a backend shows as its frontend.
    Getpeername4,
    /// connect() of IPv6 sockets to an IPv4-mapped frontend (dual-stack
    /// sockets' IPv4; their unconnected UDP goes through sendmsg4).
    Connect6,
    /// recvmsg() on IPv6 UDP sockets, IPv4-mapped sources.
    Recvmsg6,
    /// getpeername() of IPv6 sockets, IPv4-mapped peers.
    Getpeername6,
}

impl SockProgram {
    pub const ALL: [SockProgram; 7] = [
        SockProgram::Connect4,
        SockProgram::Sendmsg4,
        SockProgram::Recvmsg4,
        SockProgram::Getpeername4,
        SockProgram::Connect6,
        SockProgram::Recvmsg6,
        SockProgram::Getpeername6,
    ];

    /// The function name in bpf/bpf_sock.c.
    pub fn name(self) -> &'static str {
        match self {
            SockProgram::Connect4 => "sock4_connect",
            SockProgram::Sendmsg4 => "sock4_sendmsg",
            SockProgram::Recvmsg4 => "sock4_recvmsg",
            SockProgram::Getpeername4 => "sock4_getpeername",
            SockProgram::Connect6 => "sock6_connect",
            SockProgram::Recvmsg6 => "sock6_recvmsg",
            SockProgram::Getpeername6 => "sock6_getpeername",
        }
    }

    /// The hook, as the program's `SEC("cgroup/...")` names it.
    pub fn hook(self) -> &'static str {
        match self {
            SockProgram::Connect4 => "connect4",
            SockProgram::Sendmsg4 => "sendmsg4",
            SockProgram::Recvmsg4 => "recvmsg4",
            SockProgram::Getpeername4 => "getpeername4",
            SockProgram::Connect6 => "connect6",
            SockProgram::Recvmsg6 => "recvmsg6",
            SockProgram::Getpeername6 => "getpeername6",
        }
    }

    /// The kernel hook (attach type) it is loaded and attached for.
    pub fn attach_type(self) -> CgroupSockAddrAttachType {
        match self {
            SockProgram::Connect4 => CgroupSockAddrAttachType::Connect4,
            SockProgram::Sendmsg4 => CgroupSockAddrAttachType::UDPSendMsg4,
            SockProgram::Recvmsg4 => CgroupSockAddrAttachType::UDPRecvMsg4,
            SockProgram::Getpeername4 => CgroupSockAddrAttachType::GetPeerName4,
            SockProgram::Connect6 => CgroupSockAddrAttachType::Connect6,
            SockProgram::Recvmsg6 => CgroupSockAddrAttachType::UDPRecvMsg6,
            SockProgram::Getpeername6 => CgroupSockAddrAttachType::GetPeerName6,
        }
    }

    /// Where its link is pinned under `pin_dir`.
    pub fn link_pin(self, pin_dir: &Path) -> PathBuf {
        pin_dir.join("links").join(format!("sock_{}", self.hook()))
    }

    /// Where a new link waits until every program is attached: a failure
    /// half-way leaves the links in place as they were. (bpffs refuses
    /// names with a dot: `bpf_lookup` returns EPERM for them.)
    fn staged_pin(self, pin_dir: &Path) -> PathBuf {
        pin_dir
            .join("links")
            .join(format!("sock_{}_staged", self.hook()))
    }
}

fn program_mut(ebpf: &mut Ebpf, p: SockProgram) -> Result<&mut CgroupSockAddr, Error> {
    ebpf.program_mut(p.name())
        .ok_or(Error::MissingProgram { name: p.name() })?
        .try_into()
        .map_err(|e| Error::program(p.name(), e))
}

/// Verifies bpf_sock.o's programs (the loader calls this once).
pub(crate) fn load_programs(ebpf: &mut Ebpf) -> Result<(), Error> {
    for p in SockProgram::ALL {
        program_mut(ebpf, p)?
            .load()
            .map_err(|e| Error::program(p.name(), e))?;
    }
    Ok(())
}

/// statfs(2)'s magic number of cgroup v2 (linux/magic.h).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Opens `path` if it is a cgroup v2 directory.
fn open_cgroup2(path: &Path) -> Result<File, Error> {
    let err = |source| Error::Cgroup {
        path: path.to_path_buf(),
        source,
    };
    let dir = File::open(path).map_err(err)?;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| err(io::Error::from(io::ErrorKind::InvalidInput)))?;
    // SAFETY: a NUL-terminated path and a statfs the call fills.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    if st.f_type as i64 != CGROUP2_SUPER_MAGIC || !dir.metadata().map_err(err)?.is_dir() {
        return Err(Error::NotCgroup2 {
            path: path.to_path_buf(),
        });
    }
    Ok(dir)
}

/// Checks that `path` is a cgroup v2 directory socket LB can attach to:
/// the agent asks before it changes anything.
pub fn check_cgroup(path: &Path) -> Result<(), Error> {
    open_cgroup2(path).map(drop)
}

fn remove_pin(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Bpffs {
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl Datapath {
    /// Attaches the socket-LB programs to the cgroup v2 directory
    /// `cgroup` as links pinned under `<pin dir>/links/`, replacing the
    /// links an earlier agent pinned there (on this cgroup or another).
    ///
    /// All or nothing: the new links are pinned beside the old ones first;
    /// only when all are attached do they take the old ones' names
    /// (rename(2) on bpffs), which releases the old links. In between, both
    /// generations run; that is harmless, as the programs are idempotent (a
    /// translated address is a backend, which is no frontend; a
    /// reverse-translated one is a frontend, which is no socket's backend).
    pub fn attach_socket_lb(&mut self, cgroup: &Path) -> Result<(), Error> {
        let pin_dir = self.pin_dir().ok_or(Error::NotPinned)?.to_path_buf();
        let dir = open_cgroup2(cgroup)?;
        let links = pin_dir.join("links");
        std::fs::create_dir_all(&links).map_err(|source| Error::Bpffs {
            path: links.clone(),
            source,
        })?;
        let staged = (|| {
            for p in SockProgram::ALL {
                let path = p.staged_pin(&pin_dir);
                remove_pin(&path)?;
                let attach_err =
                    |source: Box<dyn std::error::Error + Send + Sync>| Error::AttachCgroup {
                        program: p.name(),
                        cgroup: cgroup.to_path_buf(),
                        source,
                    };
                let prog = program_mut(&mut self.sock, p)?;
                let id = prog
                    .attach(&dir, CgroupAttachMode::Single)
                    .map_err(|e| attach_err(Box::new(e)))?;
                let link = prog.take_link(id).map_err(|e| attach_err(Box::new(e)))?;
                // Dropped on an error below, the unpinned link detaches.
                let fd = FdLink::try_from(link).map_err(|e| attach_err(Box::new(e)))?;
                fd.pin(&path).map_err(|e| attach_err(Box::new(e)))?;
            }
            Ok(())
        })();
        if let Err(e) = staged {
            for p in SockProgram::ALL {
                let _ = remove_pin(&p.staged_pin(&pin_dir));
            }
            return Err(e);
        }
        for p in SockProgram::ALL {
            let (from, to) = (p.staged_pin(&pin_dir), p.link_pin(&pin_dir));
            std::fs::rename(&from, &to).map_err(|source| Error::Bpffs { path: to, source })?;
        }
        tracing::debug!(cgroup = %cgroup.display(), "socket-level LB attached");
        Ok(())
    }
}

/// The ids of the programs attached directly to `cgroup` on each
/// socket-LB hook, whoever attached them: one each after
/// [`Datapath::attach_socket_lb`], none after [`detach_socket_lb`].
pub fn cgroup_programs(cgroup: &Path) -> Result<Vec<(SockProgram, Vec<u32>)>, Error> {
    use aya_obj::generated::bpf_attach_type;
    use std::os::fd::AsFd;
    let dir = open_cgroup2(cgroup)?;
    SockProgram::ALL
        .iter()
        .map(|&p| {
            let hook = bpf_attach_type::from(p.attach_type()) as u32;
            crate::sys::cgroup_prog_ids(dir.as_fd(), hook)
                .map(|ids| (p, ids))
                .map_err(|source| Error::Syscall {
                    call: "bpf(BPF_PROG_QUERY) of a cgroup",
                    source,
                })
        })
        .collect()
}

/// Removes the socket-LB links pinned under `pin_dir` (the pins hold the
/// only references once the agent that made them is gone, so the programs
/// leave the cgroup); missing pins are fine.
pub fn detach_socket_lb(pin_dir: &Path) -> Result<(), Error> {
    for p in SockProgram::ALL {
        remove_pin(&p.link_pin(pin_dir))?;
        remove_pin(&p.staged_pin(pin_dir))?;
    }
    Ok(())
}

/// One socket-LB hook as `pilus doctor` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SockHookStatus {
    /// `sock4_connect`, ...
    pub program: &'static str,
    /// `connect4`, ...
    pub hook: &'static str,
    /// This datapath's program runs on the cgroup through its pinned link.
    pub attached: bool,
    /// What was found: the evidence when `attached` is false.
    pub found: String,
}

/// The map every socket-LB program uses: how their programs are told from
/// others' (as `pilus_calls` tells the pod programs).
pub(crate) const SOCK_MAP: &str = "pilus_lb4_sk";

/// Whether each socket-LB program runs on `cgroup` through the link pinned
/// for it under `pin_dir`: a cgroup link on that very cgroup (by id: a
/// cgroup removed and made again under the same name is another), on its
/// hook, running a program that uses the map with id `ours` ([`SOCK_MAP`]).
pub(crate) fn socket_lb_hooks(
    pin_dir: &Path,
    cgroup: &Path,
    ours: u32,
) -> Result<Vec<SockHookStatus>, Error> {
    use aya_obj::generated::bpf_attach_type;
    use std::os::unix::fs::MetadataExt;
    let cgroup_id = std::fs::metadata(cgroup).ok().map(|m| m.ino());
    // What runs on each hook, whoever attached it: evidence for a report.
    let on_hooks = cgroup_programs(cgroup).ok();
    let mut out = Vec::new();
    for p in SockProgram::ALL {
        let path = p.link_pin(pin_dir);
        let link = crate::sys::pinned_cgroup_link(&path).map_err(|source| Error::Bpffs {
            path: path.clone(),
            source,
        })?;
        let (attached, found) = match (link, cgroup_id) {
            (None, _) => (
                false,
                format!("no cgroup link pinned at {}", path.display()),
            ),
            (Some(_), None) => (false, format!("{} does not exist", cgroup.display())),
            (Some(l), Some(id)) => {
                let uses = crate::sys::prog_map_ids(l.prog_id)
                    .map_err(|source| Error::Syscall {
                        call: "bpf(BPF_OBJ_GET_INFO_BY_FD) of a socket-LB program",
                        source,
                    })?
                    .is_some_and(|ids| ids.contains(&ours));
                let hook = bpf_attach_type::from(p.attach_type()) as u32;
                (
                    l.cgroup_id == id && l.attach_type == hook && uses,
                    format!(
                        "link pinned at {}: cgroup id {} (want {id}), attach type {} (want \
                         {hook}), program id {}{}",
                        path.display(),
                        l.cgroup_id,
                        l.attach_type,
                        l.prog_id,
                        if uses {
                            ""
                        } else {
                            " (not on this datapath's maps)"
                        }
                    ),
                )
            }
        };
        let found = match on_hooks
            .as_ref()
            .and_then(|h| h.iter().find(|(q, _)| *q == p))
        {
            Some((_, ids)) => format!("{found}; program ids on the cgroup's {}: {ids:?}", p.hook()),
            None => found,
        };
        out.push(SockHookStatus {
            program: p.name(),
            hook: p.hook(),
            attached,
            found,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya_obj::{generated::bpf_attach_type, ProgramSection};

    /// Every program is in bpf_sock.o, on the hook its SEC() names, and the
    /// object has nothing else: a renamed function or section fails here,
    /// not at the agent's start.
    #[test]
    fn programs_are_the_objects_with_their_hooks() {
        let obj = aya_obj::Object::parse(crate::objects::BPF_SOCK).expect("parse bpf_sock.o");
        let mut names: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
        names.sort();
        let mut ours: Vec<&str> = SockProgram::ALL.iter().map(|p| p.name()).collect();
        ours.sort();
        assert_eq!(names, ours);
        for p in SockProgram::ALL {
            match &obj.programs[p.name()].section {
                ProgramSection::CgroupSockAddr { attach_type } => assert_eq!(
                    bpf_attach_type::from(*attach_type),
                    bpf_attach_type::from(p.attach_type()),
                    "{}",
                    p.name()
                ),
                other => panic!("{}: {other:?}", p.name()),
            }
        }
    }

    #[test]
    fn links_are_pinned_apart_from_the_tcx_links() {
        let dir = Path::new("/sys/fs/bpf/pilus");
        let pins: Vec<PathBuf> = SockProgram::ALL.iter().map(|p| p.link_pin(dir)).collect();
        assert_eq!(
            pins,
            [
                "/sys/fs/bpf/pilus/links/sock_connect4",
                "/sys/fs/bpf/pilus/links/sock_sendmsg4",
                "/sys/fs/bpf/pilus/links/sock_recvmsg4",
                "/sys/fs/bpf/pilus/links/sock_getpeername4",
                "/sys/fs/bpf/pilus/links/sock_connect6",
                "/sys/fs/bpf/pilus/links/sock_recvmsg6",
                "/sys/fs/bpf/pilus/links/sock_getpeername6",
            ]
            .map(PathBuf::from)
        );
        for p in SockProgram::ALL {
            assert_ne!(p.staged_pin(dir), p.link_pin(dir));
        }
    }

    #[test]
    fn only_a_cgroup2_directory_is_accepted() {
        let tmp = std::env::temp_dir();
        assert!(matches!(
            open_cgroup2(&tmp),
            Err(Error::NotCgroup2 { path }) if path == tmp
        ));
        assert!(matches!(
            open_cgroup2(Path::new("/nonexistent/pilus-cgroup")),
            Err(Error::Cgroup { .. })
        ));
    }
}
