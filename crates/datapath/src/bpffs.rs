//! bpffs: where pins live. Mounted by us when the machine has not (a fresh VM
//! without systemd has no /sys/fs/bpf mount).

use crate::Error;
use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path};

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn is_bpffs(path: &Path) -> Result<bool, Error> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Bpffs {
        path: path.into(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: statfs only writes into the zeroed struct we pass.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::Bpffs {
            path: path.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes sure `root` (normally /sys/fs/bpf) is a bpffs mount, mounting one if
/// not, then creates `dir` below it. Returns whether a mount was made.
pub fn ensure(root: &Path, dir: &Path) -> Result<bool, Error> {
    let err = |source| Error::Bpffs {
        path: root.into(),
        source,
    };
    std::fs::create_dir_all(root).map_err(err)?;
    let mut mounted = false;
    if !is_bpffs(root)? {
        let target = CString::new(root.as_os_str().as_bytes()).expect("path without NUL");
        // SAFETY: plain mount(2) with valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"bpffs".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        tracing::info!(path = %root.display(), "mounted bpffs");
        mounted = true;
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Bpffs {
        path: dir.into(),
        source,
    })?;
    Ok(mounted)
}
