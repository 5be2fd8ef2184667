//! Named network namespaces (`/run/netns/<name>`, the same ones `ip netns`
//! manages), the veth links between them, entering them from the calling
//! thread, and removing them again, including leftovers of crashed runs.

use std::ffi::c_char;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::process::{checked, output, ChildGuard};
use crate::Error;

/// Where `ip netns add` bind-mounts named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Makes names unique among the namespaces of one process, whichever thread
/// creates them; the pid in the name separates processes.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How long drop waits for killed processes to leave a namespace before it
/// deletes the namespace anyway.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// A named network namespace that is deleted (with every process still in it
/// killed) when dropped.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace `<prefix>-<pid>-<counter>` and brings `lo` up.
    ///
    /// `prefix` is 1 to 16 ASCII letters, digits or `_`, starting with a
    /// letter. It has no `-`, so [`remove_stale`] of one prefix never
    /// matches the namespaces of another. Errors with [`Error::Exists`] if
    /// the name is taken (a leftover from an earlier process with this pid).
    pub fn new(prefix: &str) -> Result<NetNs, Error> {
        validate_prefix(prefix)?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        NetNs::named(&format!("{prefix}-{}-{n}", std::process::id()))
    }

    /// Creates the namespace with exactly this name (e.g. for a `lab` whose
    /// hosts have stable names) and brings `lo` up. Errors with
    /// [`Error::Exists`] if it is already there.
    pub fn named(name: &str) -> Result<NetNs, Error> {
        validate_ns_name(name)?;
        let path = ns_path(name);
        // `ip netns add` would also refuse, but with a message that does not
        // say whether the namespace is ours; a leftover is never adopted.
        if path.exists() {
            return Err(Error::Exists {
                name: name.to_owned(),
            });
        }
        checked(Command::new("ip").args(["netns", "add", name]))?;
        // From here on the namespace exists: if bringing `lo` up fails, the
        // early return drops `ns`, which deletes it again.
        let ns = NetNs {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Keeps the namespace after this value is gone (e.g. a `lab` that
    /// outlives the command that built it) and returns its name. It is then
    /// removed by `ip netns del` or [`remove_stale`].
    pub fn persist(self) -> String {
        let mut this = std::mem::ManuallyDrop::new(self);
        std::mem::take(&mut this.name)
    }

    /// The namespace's name, as `ip netns` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, the file that keeps the namespace alive.
    pub fn path(&self) -> PathBuf {
        ns_path(&self.name)
    }

    /// Runs `ip -n <name> <args>` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String, Error> {
        checked(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A `Command` that runs `cmd` inside the namespace
    /// (`ip netns exec <name> cmd...`), for callers that want to set stdio
    /// or the environment themselves.
    ///
    /// `ip netns exec` also gives the command a private mount namespace with
    /// this namespace's /sys; bpffs is not visible there, which is fine for
    /// ordinary programs (servers, clients) but not for loading eBPF.
    pub fn command(&self, cmd: &[&str]) -> Result<Command, Error> {
        if cmd.is_empty() {
            return Err(Error::InvalidArgument {
                what: "command",
                value: String::new(),
                reason: "empty",
            });
        }
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(cmd);
        Ok(command)
    }

    /// Runs a command inside the namespace and waits for it. A non-zero exit
    /// status is not an error here: the caller inspects `Output::status`.
    pub fn exec(&self, cmd: &[&str]) -> Result<Output, Error> {
        output(&mut self.command(cmd)?)
    }

    /// Like [`NetNs::exec`], but a non-zero exit status is an error; returns
    /// stdout.
    pub fn run(&self, cmd: &[&str]) -> Result<String, Error> {
        checked(&mut self.command(cmd)?)
    }

    /// Starts a background process inside the namespace with stdin, stdout
    /// and stderr on /dev/null (an unread pipe could block it). The guard
    /// kills and reaps it on drop. Use [`NetNs::command`] and
    /// [`ChildGuard::spawn`] to keep its output.
    pub fn spawn(&self, cmd: &[&str]) -> Result<ChildGuard, Error> {
        let mut command = self.command(cmd)?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ChildGuard::spawn(command)
    }

    /// Moves the calling thread (only it) into this namespace with
    /// `setns(CLONE_NEWNET)`; the guard moves it back on drop.
    ///
    /// While entered, sockets the thread opens and processes it spawns
    /// belong to this namespace. The mount namespace is unchanged, so bpffs
    /// stays visible, but /sys still shows the namespace it was mounted in:
    /// query links with syscalls (as [`NetNs::ifindex`] does), not sysfs.
    pub fn enter(&self) -> Result<EnterGuard<'_>, Error> {
        let inside =
            pilus_netlink::netns::enter_path(&self.path()).map_err(|source| Error::Netlink {
                op: format!("enter network namespace {}", self.name),
                source,
            })?;
        Ok(EnterGuard {
            _inside: inside,
            _ns: PhantomData,
        })
    }
    /// Runs `f` on the calling thread while it is inside this namespace.
    pub fn within<T>(&self, f: impl FnOnce() -> T) -> Result<T, Error> {
        let _entered = self.enter()?;
        Ok(f())
    }

    /// Sets a sysctl inside the namespace, e.g. `("net.ipv4.ip_forward",
    /// "1")`. The key uses `.` or `/` as separator (`/` when an interface
    /// name in it has a dot). Only `net.*` keys are accepted: the others are
    /// not per namespace, and writing them would change the host.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), Error> {
        let path = sysctl_path(key)?;
        self.within(|| {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut file| file.write_all(value.as_bytes()))
        })?
        .map_err(|source| Error::Io {
            op: "write",
            path,
            source,
        })
    }

    /// Reads a `net.*` sysctl inside the namespace (trailing newline
    /// removed).
    pub fn sysctl_get(&self, key: &str) -> Result<String, Error> {
        let path = sysctl_path(key)?;
        let mut value = String::new();
        self.within(|| File::open(&path).and_then(|mut file| file.read_to_string(&mut value)))?
            .map_err(|source| Error::Io {
                op: "read",
                path,
                source,
            })?;
        Ok(value.trim_end().to_owned())
    }

    /// The ifindex of a link inside this namespace.
    pub fn ifindex(&self, ifname: &str) -> Result<u32, Error> {
        let req = self.link_ioctl(ifname, libc::SIOCGIFINDEX, "ioctl(SIOCGIFINDEX)")?;
        // SAFETY: SIOCGIFINDEX filled in the ifindex member of the union.
        let index = unsafe { req.ifr_ifru.ifru_ifindex };
        u32::try_from(index).map_err(|_| Error::Syscall {
            call: "ioctl(SIOCGIFINDEX)",
            source: io::Error::from_raw_os_error(libc::EINVAL),
        })
    }

    /// The MAC address of a link inside this namespace.
    pub fn mac(&self, ifname: &str) -> Result<[u8; 6], Error> {
        let req = self.link_ioctl(ifname, libc::SIOCGIFHWADDR, "ioctl(SIOCGIFHWADDR)")?;
        // SAFETY: SIOCGIFHWADDR filled in the hwaddr member of the union.
        let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (dst, src) in mac.iter_mut().zip(data) {
            *dst = src as u8;
        }
        Ok(mac)
    }

    /// Runs one `SIOCGIF*` ioctl for `ifname` on a socket opened inside this
    /// namespace (a socket answers for the namespace it was created in).
    fn link_ioctl(
        &self,
        ifname: &str,
        request: libc::c_ulong,
        call: &'static str,
    ) -> Result<libc::ifreq, Error> {
        self.within(|| link_ioctl_here(&self.name, ifname, request, call))?
    }
}

/// One `SIOCGIF*` ioctl for `ifname` in the calling thread's namespace;
/// `ns` names that namespace in errors.
fn link_ioctl_here(
    ns: &str,
    ifname: &str,
    request: libc::c_ulong,
    call: &'static str,
) -> Result<libc::ifreq, Error> {
    validate_ifname(ifname)?;
    // SAFETY: plain socket(2) call; the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::Syscall {
            call: "socket",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // validate_ifname guarantees < IFNAMSIZ bytes, so the name stays
    // NUL-terminated.
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.as_bytes()) {
        *dst = *src as c_char;
    }
    // SAFETY: req is a valid ifreq that outlives the call; the kernel
    // writes at most size_of::<ifreq>() bytes into it.
    // `as _`: the request parameter's type differs between libcs.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, &mut req) };
    if rc < 0 {
        let source = io::Error::last_os_error();
        return Err(if source.raw_os_error() == Some(libc::ENODEV) {
            Error::NoSuchLink {
                ns: ns.to_owned(),
                ifname: ifname.to_owned(),
            }
        } else {
            Error::Syscall { call, source }
        });
    }
    Ok(req)
}

/// The ifindex and MAC address of `ifname` in the calling thread's current
/// namespace (for a daemon that runs inside a namespace it did not create).
pub fn link_here(ifname: &str) -> Result<(u32, [u8; 6]), Error> {
    let req = link_ioctl_here("current", ifname, libc::SIOCGIFINDEX, "ioctl(SIOCGIFINDEX)")?;
    // SAFETY: SIOCGIFINDEX filled in the ifindex member of the union.
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    let req = link_ioctl_here(
        "current",
        ifname,
        libc::SIOCGIFHWADDR,
        "ioctl(SIOCGIFHWADDR)",
    )?;
    // SAFETY: SIOCGIFHWADDR filled in the hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(data) {
        *dst = src as u8;
    }
    Ok((index as u32, mac))
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(err) = destroy(&self.name) {
            eprintln!(
                "pilus-netns: cannot delete network namespace {}: {err}",
                self.name
            );
        }
    }
}

/// The calling thread inside a namespace; dropping it moves the thread back
/// to the namespace it was in before [`NetNs::enter`].
///
/// Not `Send`: it must be dropped on the thread that entered. It borrows the
/// `NetNs`, so the namespace cannot be deleted while a thread is inside.
/// The moving is pilus-netlink's, the workspace's one setns helper.
#[derive(Debug)]
pub struct EnterGuard<'a> {
    _inside: pilus_netlink::netns::NetnsGuard,
    _ns: PhantomData<&'a NetNs>,
}

/// Creates a veth pair: `a_name` in namespace `a`, `b_name` in namespace
/// `b`, both brought up. Deleting either namespace removes the pair.
pub fn veth_pair(a: &NetNs, a_name: &str, b: &NetNs, b_name: &str) -> Result<(), Error> {
    validate_ifname(a_name)?;
    validate_ifname(b_name)?;
    // Created inside `a` with the peer placed straight into `b`, so the
    // pair never appears in the root namespace, not even for a moment.
    a.ip(&[
        "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", &b.name,
    ])?;
    let up = a
        .ip(&["link", "set", a_name, "up"])
        .and_then(|_| b.ip(&["link", "set", b_name, "up"]));
    if let Err(err) = up {
        // Deleting one end deletes both; the caller sees the first error.
        let _ = a.ip(&["link", "del", a_name]);
        return Err(err);
    }
    Ok(())
}

/// Removes leftover namespaces named `<prefix>-...` (from a crashed earlier
/// run), killing the processes still in them. Returns the names removed.
///
/// Names of the form `<prefix>-<pid>-<n>` (as [`NetNs::new`] makes them)
/// whose process is still running are skipped: they belong to a live run,
/// possibly this one, not to a crashed one.
pub fn remove_stale(prefix: &str) -> Result<Vec<String>, Error> {
    validate_prefix(prefix)?;
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        // No namespace was ever created on this boot.
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                op: "list",
                path: NETNS_DIR.into(),
                source,
            })
        }
    };
    let start = format!("{prefix}-");
    let mut removed = Vec::new();
    let mut first_err = None;
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            op: "list",
            path: NETNS_DIR.into(),
            source,
        })?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(&start) else {
            continue;
        };
        if owner_pid(rest).is_some_and(process_exists) {
            continue;
        }
        // Keep going after a failure so one stuck namespace does not keep
        // the others around; the first error is still reported.
        match destroy(&name) {
            Ok(()) => removed.push(name),
            Err(err) => {
                first_err.get_or_insert(err);
            }
        }
    }
    match first_err {
        Some(err) => Err(err),
        None => Ok(removed),
    }
}

fn ns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// The pid in `<pid>-<n>`, the part of a [`NetNs::new`] name after the
/// prefix.
fn owner_pid(rest: &str) -> Option<u32> {
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

fn process_exists(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Kills every process in the namespace, then deletes it.
fn destroy(name: &str) -> Result<(), Error> {
    let path = ns_path(name);
    match fs::metadata(&path) {
        Ok(meta) => kill_all_in(name, (meta.dev(), meta.ino())),
        // Without the file, `ip netns del` below reports the problem.
        Err(err) => eprintln!("pilus-netns: cannot stat {}: {err}", path.display()),
    }
    checked(Command::new("ip").args(["netns", "del", name]))?;
    Ok(())
}

/// SIGKILLs every process with a thread in the namespace identified by
/// `(dev, ino)` until none is left or [`KILL_TIMEOUT`] passes.
///
/// Done by hand rather than with `ip netns pids`, which looks only at each
/// process's main thread: a process whose other thread entered the
/// namespace would keep it alive. This process itself is never killed.
fn kill_all_in(name: &str, ns: (u64, u64)) {
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let pids = pids_in(ns);
        if pids.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("pilus-netns: processes {pids:?} still in network namespace {name}; deleting it anyway");
            return;
        }
        for pid in pids {
            // SAFETY: kill has no memory-safety preconditions. ESRCH (the
            // process just exited) is fine, so the result is not checked.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Killed processes leave the namespace when they finish exiting;
        // a zombie no longer counts (its ns link cannot be read).
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pids (other than ours) with at least one thread in the namespace.
fn pids_in(ns: (u64, u64)) -> Vec<libc::pid_t> {
    let own = std::process::id();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    // Processes come and go while /proc is read: every error below means
    // "gone" and is skipped.
    procs
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            if pid == own {
                return None;
            }
            let tasks = fs::read_dir(entry.path().join("task")).ok()?;
            let inside = tasks.filter_map(Result::ok).any(|task| {
                fs::metadata(task.path().join("ns/net"))
                    .is_ok_and(|meta| (meta.dev(), meta.ino()) == ns)
            });
            if inside {
                libc::pid_t::try_from(pid).ok()
            } else {
                None
            }
        })
        .collect()
}

fn invalid(what: &'static str, value: &str, reason: &'static str) -> Error {
    Error::InvalidArgument {
        what,
        value: value.to_owned(),
        reason,
    }
}

fn validate_prefix(prefix: &str) -> Result<(), Error> {
    let what = "namespace prefix";
    if prefix.is_empty() || prefix.len() > 16 {
        return Err(invalid(what, prefix, "must be 1 to 16 characters"));
    }
    if !prefix.starts_with(|c: char| c.is_ascii_alphabetic())
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(invalid(
            what,
            prefix,
            "must be ASCII letters, digits and '_', starting with a letter",
        ));
    }
    Ok(())
}

fn validate_ns_name(name: &str) -> Result<(), Error> {
    let what = "namespace name";
    if name.is_empty() || name.len() > 64 {
        return Err(invalid(what, name, "must be 1 to 64 characters"));
    }
    // It becomes a file name under /run/netns and an argument to `ip`.
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(invalid(
            what,
            name,
            "must be ASCII letters, digits, '_', '-' and '.', starting with a letter or digit",
        ));
    }
    Ok(())
}

/// The kernel's rules for link names, checked by pilus-netlink's
/// `valid_ifname`, the workspace's one copy of them.
fn validate_ifname(ifname: &str) -> Result<(), Error> {
    pilus_netlink::valid_ifname(ifname).map_err(|source| Error::Netlink {
        op: "check an interface name".into(),
        source,
    })
}

/// `/proc/sys/...` for a `net.*` key with `.` or `/` separators.
fn sysctl_path(key: &str) -> Result<PathBuf, Error> {
    let what = "sysctl key";
    let sep = if key.contains('/') { '/' } else { '.' };
    let parts: Vec<&str> = key.split(sep).collect();
    if parts.first() != Some(&"net") || parts.len() < 2 {
        return Err(invalid(
            what,
            key,
            "only net.* sysctls belong to a network namespace; others would change the host",
        ));
    }
    if parts
        .iter()
        .any(|part| part.is_empty() || *part == "." || *part == ".." || part.contains('\0'))
    {
        return Err(invalid(
            what,
            key,
            "has an empty, '.', '..' or NUL component",
        ));
    }
    let mut path = PathBuf::from("/proc/sys");
    path.extend(parts);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_map_to_proc_sys() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/rp_filter").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        for bad in [
            "kernel.pid_max",
            "net",
            "net..x",
            "net/../kernel/x",
            "",
            "vm.swappiness",
        ] {
            assert!(sysctl_path(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_prefix("pilus").is_ok());
        assert!(validate_prefix("a_1").is_ok());
        for bad in ["", "a-b", "1a", "x/y", "seventeen_chars_x"] {
            assert!(validate_prefix(bad).is_err(), "{bad} accepted");
        }
        assert!(validate_ns_name("pilus-node1").is_ok());
        for bad in ["", "-x", ".x", "a/b", "a b"] {
            assert!(validate_ns_name(bad).is_err(), "{bad} accepted");
        }
        assert!(validate_ifname("veth0").is_ok());
        assert!(validate_ifname("fifteen_chars_x").is_ok());
        for bad in [
            "",
            "sixteen_chars_xx",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a%d",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn stale_names_yield_their_pid() {
        assert_eq!(owner_pid("123-4"), Some(123));
        assert_eq!(owner_pid("node1"), None);
        assert_eq!(owner_pid("123-x"), None);
        assert_eq!(owner_pid("x-4"), None);
    }
}
