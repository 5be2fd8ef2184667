//! Real namespaces, links and traffic. These tests need root and fail (they
//! do not skip) when namespaces cannot be made. Addresses come from
//! 198.18.0.0/15 (the benchmarking range) only, and nothing is configured
//! in the root namespace.

use std::collections::HashSet;
use std::fs;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pilus_netns::{probe, remove_stale, veth_pair, Error, NetNs};

/// Prefix of every namespace these tests make with [`NetNs::new`].
const PREFIX: &str = "pnt";

fn ns() -> NetNs {
    NetNs::new(PREFIX).expect("cannot create a network namespace (tests need root)")
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success(), "ip netns list: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn listed(name: &str) -> bool {
    netns_list()
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name))
}

fn ns_inode(path: &str) -> u64 {
    fs::metadata(path).unwrap().ino()
}

/// True while `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !stat
            .rsplit_once(')')
            .unwrap()
            .1
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Root-namespace ifindex of `ifname` as seen by this (not entered) thread;
/// 0 if there is no such link.
fn root_ifindex(ifname: &str) -> u32 {
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: name is a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

#[test]
fn new_creates_namespace_and_drop_removes_it() {
    let ns = ns();
    let name = ns.name().to_owned();
    let path = ns.path();
    assert_eq!(path, Path::new("/run/netns").join(&name));
    assert!(
        name.starts_with(&format!("{PREFIX}-{}-", std::process::id())),
        "{name}"
    );
    assert!(path.exists());
    assert!(listed(&name), "{name} not in `ip netns list`");
    let lo = ns.ip(&["-o", "link", "show", "lo"]).unwrap();
    assert!(lo.contains("UP"), "lo not up: {lo}");

    drop(ns);
    assert!(!path.exists(), "{} still exists", path.display());
    assert!(!listed(&name), "{name} still in `ip netns list`");
}

#[test]
fn names_are_unique_across_threads() {
    let namespaces: Vec<NetNs> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| (0..3).map(|_| ns()).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    let names: HashSet<&str> = namespaces.iter().map(NetNs::name).collect();
    assert_eq!(names.len(), 12);
    let paths: Vec<_> = namespaces.iter().map(NetNs::path).collect();
    drop(namespaces);
    for path in paths {
        assert!(!path.exists(), "{} still exists", path.display());
    }
}

#[test]
fn named_refuses_an_existing_namespace() {
    let name = format!("pnt-named-{}", std::process::id());
    let first = NetNs::named(&name).unwrap();
    match NetNs::named(&name) {
        Err(Error::Exists { name: existing }) => assert_eq!(existing, name),
        other => panic!("expected Exists, got {other:?}"),
    }
    // The failed attempt must not have deleted the namespace it found.
    assert!(first.path().exists());
    assert!(matches!(
        NetNs::new("bad-prefix"),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn veth_pair_carries_traffic_between_namespaces() {
    let a = ns();
    let b = ns();
    veth_pair(&a, "pnt-va", &b, "pnt-vb").unwrap();
    // The pair lives only in the two namespaces.
    assert_eq!(root_ifindex("pnt-va"), 0);
    assert_eq!(root_ifindex("pnt-vb"), 0);
    assert!(matches!(a.ifindex("pnt-vb"), Err(Error::NoSuchLink { .. })));

    a.ip(&["addr", "add", "198.18.100.1/24", "dev", "pnt-va"])
        .unwrap();
    b.ip(&["addr", "add", "198.18.100.2/24", "dev", "pnt-vb"])
        .unwrap();
    let a_ip = Ipv4Addr::new(198, 18, 100, 1);
    let b_ip = Ipv4Addr::new(198, 18, 100, 2);

    // ifindex and MAC agree with what `ip` reports.
    let shown = a.ip(&["-o", "link", "show", "pnt-va"]).unwrap();
    let index = a.ifindex("pnt-va").unwrap();
    assert!(shown.starts_with(&format!("{index}: pnt-va@")), "{shown}");
    let mac = a
        .mac("pnt-va")
        .unwrap()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(
        shown.contains(&format!("link/ether {mac} ")),
        "{mac} vs {shown}"
    );
    assert_ne!(a.mac("pnt-va").unwrap(), b.mac("pnt-vb").unwrap());

    assert!(
        probe::ping(&a, b_ip, Duration::from_secs(5)).unwrap(),
        "a cannot ping b"
    );
    assert!(
        probe::ping(&b, a_ip, Duration::from_secs(5)).unwrap(),
        "b cannot ping a"
    );

    // UDP through ordinary std sockets, each opened inside its namespace.
    let server = b.within(|| UdpSocket::bind((b_ip, 0))).unwrap().unwrap();
    let client = a.within(|| UdpSocket::bind((a_ip, 0))).unwrap().unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .send_to(b"hello", server.local_addr().unwrap())
        .unwrap();
    let mut buf = [0u8; 16];
    let (n, peer) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(peer, client.local_addr().unwrap());

    // A sysctl set in `b` acts in `b` only.
    let root_before = fs::read_to_string("/proc/sys/net/ipv4/icmp_echo_ignore_all").unwrap();
    b.sysctl("net.ipv4.icmp_echo_ignore_all", "1").unwrap();
    assert_eq!(b.sysctl_get("net.ipv4.icmp_echo_ignore_all").unwrap(), "1");
    assert_eq!(a.sysctl_get("net.ipv4.icmp_echo_ignore_all").unwrap(), "0");
    assert_eq!(
        b.run(&["cat", "/proc/sys/net/ipv4/icmp_echo_ignore_all"])
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/icmp_echo_ignore_all").unwrap(),
        root_before
    );
    assert!(
        !probe::ping(&a, b_ip, Duration::from_millis(700)).unwrap(),
        "b ignored the sysctl"
    );
    b.sysctl("net.ipv4.icmp_echo_ignore_all", "0").unwrap();
    assert!(
        probe::ping(&a, b_ip, Duration::from_secs(5)).unwrap(),
        "b silent after reset"
    );
    assert!(matches!(
        b.sysctl("kernel.pid_max", "1"),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn enter_moves_only_this_thread_and_restores_it() {
    let ns = ns();
    let before = ns_inode("/proc/thread-self/ns/net");
    let process = ns_inode("/proc/self/ns/net");
    let target = fs::metadata(ns.path()).unwrap().ino();
    assert_ne!(before, target);
    {
        let _entered = ns.enter().unwrap();
        assert_eq!(ns_inode("/proc/thread-self/ns/net"), target);
        // The main thread is untouched.
        assert_eq!(ns_inode("/proc/self/ns/net"), process);
        // if_nametoindex answers for the entered namespace: only lo here.
        assert_eq!(root_ifindex("eth0"), 0);
        assert_eq!(root_ifindex("lo"), 1);
    }
    assert_eq!(ns_inode("/proc/thread-self/ns/net"), before);

    assert_eq!(ns.ifindex("lo").unwrap(), 1);
    assert_eq!(ns.mac("lo").unwrap(), [0; 6]);
    match ns.ifindex("nosuch0") {
        Err(Error::NoSuchLink { ns: in_ns, ifname }) => {
            assert_eq!(in_ns, ns.name());
            assert_eq!(ifname, "nosuch0");
        }
        other => panic!("expected NoSuchLink, got {other:?}"),
    }
    // None of the queries above left the thread behind.
    assert_eq!(ns_inode("/proc/thread-self/ns/net"), before);
}

#[test]
fn exec_run_and_ip_report_status_and_output() {
    let ns = ns();
    let links = ns.run(&["ip", "-o", "link"]).unwrap();
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains(": lo:"), "{links}");

    let out = ns
        .exec(&["sh", "-c", "echo out; echo err >&2; exit 3"])
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");

    match ns.run(&["sh", "-c", "echo oops >&2; exit 3"]) {
        Err(Error::Command {
            cmd,
            status,
            stderr,
        }) => {
            assert!(
                cmd.starts_with(&format!("ip netns exec {} sh -c", ns.name())),
                "{cmd}"
            );
            assert_eq!(status, Some(3));
            assert_eq!(stderr, "oops");
        }
        other => panic!("expected Command error, got {other:?}"),
    }
    match ns.ip(&["link", "show", "nosuch0"]) {
        Err(Error::Command { cmd, stderr, .. }) => {
            assert_eq!(cmd, format!("ip -n {} link show nosuch0", ns.name()));
            assert!(!stderr.is_empty());
        }
        other => panic!("expected Command error, got {other:?}"),
    }
    assert!(matches!(ns.exec(&[]), Err(Error::InvalidArgument { .. })));
}

#[test]
fn spawn_guard_kills_its_process_group() {
    let ns = ns();
    let target = fs::metadata(ns.path()).unwrap().ino();
    let mut child = ns
        .spawn(&["sh", "-c", "sleep 100 & sleep 100 & wait"])
        .unwrap();
    let pid = child.pid();
    let pids = || {
        let out = Command::new("ip")
            .args(["netns", "pids", ns.name()])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().lines().count()
    };
    wait_until("sh and two sleeps", Duration::from_secs(5), || pids() == 3);
    assert_eq!(
        fs::metadata(format!("/proc/{pid}/ns/net")).unwrap().ino(),
        target
    );
    assert!(child.try_wait().unwrap().is_none());
    assert!(child
        .wait_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());

    drop(child);
    assert!(!running(pid), "spawned process {pid} survived its guard");
    wait_until("namespace to be empty", Duration::from_secs(5), || {
        pids() == 0
    });
}

#[test]
fn guard_reports_exit_of_finished_process() {
    let ns = ns();
    let mut child = ns.spawn(&["sh", "-c", "exit 7"]).unwrap();
    let status = child.wait_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(status.code(), Some(7));
    // Killing an already reaped child just reports its status.
    assert_eq!(child.kill().unwrap().code(), Some(7));
}

#[test]
fn drop_kills_processes_and_deletes_namespace() {
    let ns = ns();
    let path = ns.path();
    let mut child = ns.spawn(&["sleep", "100"]).unwrap();
    // A process that is not our child: the shell exits, its sleep lives on.
    let orphan: u32 = ns
        .run(&["sh", "-c", "sleep 100 </dev/null >/dev/null 2>&1 & echo $!"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(running(orphan));
    wait_until("sleep to be exec'd", Duration::from_secs(5), || {
        fs::read_to_string(format!("/proc/{}/comm", child.pid())).is_ok_and(|c| c == "sleep\n")
    });

    drop(ns);
    assert!(!path.exists(), "{} still exists", path.display());
    let status = child
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("child survived namespace drop");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    wait_until("orphan to die", Duration::from_secs(5), || !running(orphan));
}

#[test]
fn remove_stale_removes_dead_runs_only() {
    // A prefix of its own, so this test never touches the others' hosts.
    let prefix = "pntstale";
    assert_eq!(remove_stale(prefix).unwrap(), Vec::<String>::new());

    let live = NetNs::new(prefix).unwrap();
    // No process can have this pid (it is above the kernel's PID_MAX_LIMIT),
    // like the pid of a run that crashed.
    let dead = NetNs::named(&format!("{prefix}-{}-0", u32::MAX)).unwrap();
    let odd = NetNs::named(&format!("{prefix}-leftover")).unwrap();
    let unrelated = NetNs::named(&format!("pntother-{}-0", u32::MAX)).unwrap();
    let mut inside = dead.spawn(&["sleep", "100"]).unwrap();
    let stale = [dead.persist(), odd.persist()];

    let mut removed = remove_stale(prefix).unwrap();
    removed.sort();
    let mut expected = stale.to_vec();
    expected.sort();
    assert_eq!(removed, expected);
    for name in &stale {
        assert!(!Path::new("/run/netns").join(name).exists(), "{name}");
    }
    assert!(live.path().exists(), "live namespace removed");
    assert!(unrelated.path().exists(), "other prefix removed");
    let status = inside
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("process in stale namespace survived");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}
