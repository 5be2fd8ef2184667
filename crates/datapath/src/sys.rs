//! The few BPF syscalls aya 0.14 does not expose, by hand: where a pinned
//! TCX or cgroup link is attached (aya's `LinkInfo` hides those parts of
//! `bpf_link_info`), which maps a program found by id uses (aya has no
//! public `ProgramInfo` by id), which programs a cgroup's hook runs (aya
//! 0.14 queries cgroup device, lirc and TCX hooks only), and a walk over a
//! map's keys of any size
//! (aya's `MapKeys` wants the key's type at compile time; counting the
//! entries of every pinned map, whatever it holds, needs raw bytes). All
//! only read.

use aya_obj::generated::{
    bpf_attach_type, bpf_attr, bpf_cmd, bpf_link_info, bpf_link_type, bpf_prog_info,
};
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

/// bpf(2) with `attr`, which must be a zero-initialised union with the
/// command's fields filled in.
fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: the kernel reads `size_of::<bpf_attr>()` bytes of `attr`, and
    // writes only through the pointers the caller put in it, which point
    // to live buffers of the sizes given alongside them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a C union of integer fields; all zeroes is the
    // value the kernel expects for every field left unset.
    unsafe { std::mem::zeroed() }
}

/// # Safety
/// `raw` must be a new fd that nothing else owns.
unsafe fn own(raw: i64) -> OwnedFd {
    OwnedFd::from_raw_fd(raw as i32)
}

/// `BPF_OBJ_GET_INFO_BY_FD` into `info`.
fn info_by_fd<T>(fd: &OwnedFd, info: &mut T) -> io::Result<()> {
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<T>() as u32;
    attr.info.info = info as *mut T as u64;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

/// A TCX link as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TcxLink {
    /// 0 once its device is gone (`tcx_link_fill_info` in kernel/bpf/tcx.c).
    pub ifindex: u32,
    pub ingress: bool,
    pub prog_id: u32,
}

/// The TCX link pinned at `path`; `None` if nothing is pinned there or it
/// is no TCX link.
pub(crate) fn pinned_tcx_link(path: &Path) -> io::Result<Option<TcxLink>> {
    let Some(info) = pinned_link_info(path)? else {
        return Ok(None);
    };
    if info.type_ != bpf_link_type::BPF_LINK_TYPE_TCX as u32 {
        return Ok(None);
    }
    // SAFETY: a TCX link fills the union's `tcx` member.
    let tcx = unsafe { info.__bindgen_anon_1.tcx };
    Ok(Some(TcxLink {
        ifindex: tcx.ifindex,
        ingress: tcx.attach_type == bpf_attach_type::BPF_TCX_INGRESS as u32,
        prog_id: info.prog_id,
    }))
}

/// A cgroup link as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CgroupLink {
    /// The cgroup's id (its directory's inode number on cgroup v2); 0 once
    /// the cgroup is gone (`bpf_cgroup_link_fill_link_info`).
    pub cgroup_id: u64,
    /// `bpf_attach_type`.
    pub attach_type: u32,
    pub prog_id: u32,
}

/// The cgroup link pinned at `path`; `None` if nothing is pinned there or
/// it is no cgroup link.
pub(crate) fn pinned_cgroup_link(path: &Path) -> io::Result<Option<CgroupLink>> {
    let Some(info) = pinned_link_info(path)? else {
        return Ok(None);
    };
    if info.type_ != bpf_link_type::BPF_LINK_TYPE_CGROUP as u32 {
        return Ok(None);
    }
    // SAFETY: a cgroup link fills the union's `cgroup` member.
    let cg = unsafe { info.__bindgen_anon_1.cgroup };
    Ok(Some(CgroupLink {
        cgroup_id: cg.cgroup_id,
        attach_type: cg.attach_type,
        prog_id: info.prog_id,
    }))
}

/// The ids of the programs attached directly to the cgroup open at
/// `cgroup` on `attach_type` (`BPF_PROG_QUERY`; not those it inherits).
pub(crate) fn cgroup_prog_ids(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 16];
    loop {
        let mut attr = zeroed_attr();
        // SAFETY: writing the fields of the union's BPF_PROG_QUERY member;
        // `ids` outlives the call and holds `prog_cnt` ids.
        unsafe {
            let q = &mut attr.query;
            q.__bindgen_anon_1.target_fd = cgroup.as_raw_fd() as u32;
            q.attach_type = attach_type;
            q.prog_ids = ids.as_mut_ptr() as u64;
            q.__bindgen_anon_2.prog_cnt = ids.len() as u32;
        }
        let result = bpf(bpf_cmd::BPF_PROG_QUERY, &mut attr);
        // SAFETY: the kernel wrote the count it has (also on ENOSPC).
        let count = unsafe { attr.query.__bindgen_anon_2.prog_cnt } as usize;
        match result {
            Ok(_) => {
                ids.truncate(count);
                return Ok(ids);
            }
            // More than we made room for: again, with room for them.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => ids = vec![0u32; count],
            Err(e) => return Err(e),
        }
    }
}

/// The link info of what is pinned at `path`; `None` if nothing is, or it
/// is no link.
fn pinned_link_info(path: &Path) -> io::Result<Option<bpf_link_info>> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_4.pathname = c_path.as_ptr() as u64;
    let fd = match bpf(bpf_cmd::BPF_OBJ_GET, &mut attr) {
        // SAFETY: BPF_OBJ_GET returned a new fd.
        Ok(raw) => unsafe { own(raw) },
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // SAFETY: as for bpf_attr: a C struct of integers and unions of them.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    match info_by_fd(&fd, &mut info) {
        Ok(()) => {}
        // Pinned, but a map or a program: not ours to judge.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(Some(info))
}

/// The ids of the maps program `prog_id` uses; `None` if there is no such
/// program (any more).
pub(crate) fn prog_map_ids(prog_id: u32) -> io::Result<Option<Vec<u32>>> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_6.__bindgen_anon_1.prog_id = prog_id;
    let fd = match bpf(bpf_cmd::BPF_PROG_GET_FD_BY_ID, &mut attr) {
        // SAFETY: BPF_PROG_GET_FD_BY_ID returned a new fd.
        Ok(raw) => unsafe { own(raw) },
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut ids = vec![0u32; 32];
    loop {
        // SAFETY: as above.
        let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
        info.nr_map_ids = ids.len() as u32;
        info.map_ids = ids.as_mut_ptr() as u64;
        info_by_fd(&fd, &mut info)?;
        // The kernel wrote min(asked, used) ids and says how many it uses.
        let used = info.nr_map_ids as usize;
        if used <= ids.len() {
            ids.truncate(used);
            return Ok(Some(ids));
        }
        ids = vec![0u32; used];
    }
}

/// The key after `key` in map `fd` (the first key for `None`), written to
/// `next`, which must be the map's key size. False once there is none.
///
/// A key deleted between two calls makes hash maps start over from their
/// first key (`htab_map_get_next_key`), so a walk under churn may see a key
/// twice: callers bound it by the map's `max_entries`.
pub(crate) fn map_next_key(
    fd: BorrowedFd<'_>,
    key: Option<&[u8]>,
    next: &mut [u8],
) -> io::Result<bool> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the fields of the union's BPF_MAP_*_ELEM member.
    unsafe {
        let elem = &mut attr.__bindgen_anon_2;
        elem.map_fd = fd.as_raw_fd() as u32;
        elem.key = key.map_or(0, |k| k.as_ptr() as u64);
        elem.__bindgen_anon_1.next_key = next.as_mut_ptr() as u64;
    }
    match bpf(bpf_cmd::BPF_MAP_GET_NEXT_KEY, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}
