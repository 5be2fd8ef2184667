//! Moving a thread into a network namespace, the workspace's one way to do
//! it: the agent's `--netns`, the lab, the benchmarks and the test hosts
//! all come here.
//!
//! `setns(CLONE_NEWNET)` acts on the calling thread only, and a thread left
//! in the wrong namespace goes on to open sockets there without anyone
//! noticing. So entering gives a [`NetnsGuard`] that is bound to the
//! thread and moves it back when dropped (also while a panic unwinds);
//! failing to move back aborts the process.

use crate::Error;
use std::{
    fs::File,
    io,
    marker::PhantomData,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
};

/// The calling thread's own network namespace, seen through procfs.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// The calling thread inside another network namespace; dropping it moves
/// the thread back to where it was.
///
/// Not `Send`: it must be dropped on the thread that entered.
#[derive(Debug)]
#[must_use = "dropping the guard moves the thread straight back"]
pub struct NetnsGuard {
    /// `None` once [`NetnsGuard::stay`] has let go.
    original: Option<OwnedFd>,
    /// Makes the guard `!Send` and `!Sync`: setns acts on the current thread.
    _thread_bound: PhantomData<*const ()>,
}

impl NetnsGuard {
    /// Leaves the thread in the namespace for good, e.g. a daemon's main
    /// thread before it starts any other (they inherit it).
    pub fn stay(mut self) {
        self.original = None;
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let Some(original) = &self.original else {
            return;
        };
        if let Err(e) = setns(original.as_fd()) {
            // A thread stranded in a pod's namespace would do the caller's
            // later work in the wrong place; there is no safe way on (and
            // this can only happen if the kernel refuses a namespace that
            // we held open).
            tracing::error!(error = %e, "cannot return the thread to its network namespace; aborting");
            std::process::abort();
        }
    }
}

/// Moves the calling thread into the network namespace open at `ns`.
pub fn enter(ns: BorrowedFd<'_>) -> Result<NetnsGuard, Error> {
    let original = open(Path::new(THREAD_NETNS))?;
    setns(ns).map_err(|source| Error::Syscall {
        call: "setns(CLONE_NEWNET)",
        source,
    })?;
    Ok(NetnsGuard {
        original: Some(original),
        _thread_bound: PhantomData,
    })
}

/// [`enter`] by path: any nsfs file (`/run/netns/<name>`,
/// `/proc/<pid>/ns/net`).
pub fn enter_path(path: &Path) -> Result<NetnsGuard, Error> {
    let ns = open(path)?;
    enter(ns.as_fd())
}

/// Runs `f` with this thread inside the network namespace open at `ns`,
/// then moves the thread back (also if `f` panics).
pub fn in_netns<T>(ns: BorrowedFd<'_>, f: impl FnOnce() -> T) -> Result<T, Error> {
    let _inside = enter(ns)?;
    Ok(f())
}

/// Opens a namespace file, for [`enter`] or for a later [`setns`].
pub fn open(path: &Path) -> Result<OwnedFd, Error> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| Error::Netns {
            path: path.to_owned(),
            source,
        })
}

/// The bare `setns(fd, CLONE_NEWNET)` for the calling thread, with no way
/// back: for a child between `fork` and `exec` (`CommandExt::pre_exec`),
/// where only async-signal-safe calls may run, so no guard, no allocation
/// and no logging. Everywhere else use [`enter`].
pub fn setns(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns on a descriptor the caller holds open; it acts on this
    // thread only and touches no memory of ours.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn here() -> (u64, u64) {
        let m = std::fs::metadata(THREAD_NETNS).unwrap();
        (m.dev(), m.ino())
    }

    #[test]
    fn a_missing_namespace_is_an_error_and_the_thread_stays() {
        let before = here();
        let err = enter_path(Path::new("/run/netns/pilus-no-such-namespace")).unwrap_err();
        assert!(matches!(err, Error::Netns { .. }), "{err}");
        assert_eq!(err.errno(), Some(libc::ENOENT));
        // A file that is no namespace: setns refuses it with EINVAL.
        let err = enter_path(Path::new("/proc/self/status")).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");
        assert_eq!(here(), before);
    }

    /// A namespace of its own, made by `unshare` on a thread that ends
    /// right away: nothing is named or mounted, and the namespace is gone
    /// when the returned descriptor is closed.
    fn private_netns() -> OwnedFd {
        std::thread::spawn(|| {
            // SAFETY: unshare acts on this short-lived thread only.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", io::Error::last_os_error());
            open(Path::new(THREAD_NETNS)).unwrap()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn enter_moves_the_thread_and_the_guard_brings_it_back() {
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
        let before = here();
        let ns = private_netns();
        let m = std::fs::File::from(ns.try_clone().unwrap())
            .metadata()
            .unwrap();
        let target = (m.dev(), m.ino());
        assert_ne!(target, before);
        {
            let _inside = enter(ns.as_fd()).unwrap();
            assert_eq!(here(), target);
        }
        assert_eq!(here(), before);
        assert_eq!(in_netns(ns.as_fd(), here).unwrap(), target);
        assert_eq!(here(), before);
        // Also when the closure panics.
        let caught = std::panic::catch_unwind(|| in_netns(ns.as_fd(), || panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(here(), before);
        // `stay` leaves a thread where it is (a thread of its own here).
        let stayed = std::thread::scope(|s| {
            s.spawn(|| {
                enter(ns.as_fd()).unwrap().stay();
                here()
            })
            .join()
            .unwrap()
        });
        assert_eq!(stayed, target);
    }
}
