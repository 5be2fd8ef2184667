//! The fixture of the many-node tests (`nodes.rs`, `services.rs`): a
//! `pilus lab` cluster as a user builds it (node namespaces, etcd, one
//! pilusd per node, pods by pilus-cni), removed when the fixture drops,
//! also on failure; waiting for a condition; capturing what crosses a
//! namespace's interfaces.
//!
//! Needs root, etcd and the binaries built; fails, never skips, without
//! them.

#![allow(dead_code)]

use pilus_lab::{plan::Routing, Lab, Paths, Plan};
use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// A lab for one test; removed on drop.
pub struct Fixture {
    pub lab: Lab,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in &self.lab.state.nodes {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- {} pilusd log (last lines) ---", n.name);
                for l in &lines[lines.len().saturating_sub(25)..] {
                    eprintln!("{l}");
                }
            }
        }
        if let Err(e) = Lab::down(&self.lab.paths) {
            eprintln!("tearing down the test lab: {e}");
        }
    }
}

pub fn paths(prefix: &str) -> Paths {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the many-node tests build namespaces and load BPF: run them as root"
    );
    assert!(
        Path::new("/usr/bin/etcd").exists(),
        "etcd is not installed: `source scripts/deps.sh; pilus_build_deps` installs etcd-server"
    );
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_pilusd"))
        .parent()
        .unwrap()
        .to_path_buf();
    for b in ["pilus", "pilus-cni"] {
        assert!(
            bin_dir.join(b).exists(),
            "{b} must be built next to pilusd: run `cargo build --workspace --bins` first"
        );
    }
    Paths {
        dir: std::env::temp_dir().join(format!("pilus-{prefix}")),
        pins: PathBuf::from(format!("/sys/fs/bpf/pilus-{prefix}")),
        bin_dir,
        prefix: prefix.to_string(),
    }
}

/// `nodes` × `pods` (frontend-N, backend-N, ...) in one cluster.
pub fn cluster(
    prefix: &str,
    routing: Routing,
    nodes: u32,
    pods: u32,
    etcd_members: u32,
    lease_ttl: u64,
) -> Fixture {
    let paths = paths(prefix);
    let _ = Lab::down(&paths);
    let plan = Plan::new(prefix, nodes, pods)
        .unwrap()
        .clustered(routing, etcd_members, lease_ttl)
        .unwrap();
    Fixture {
        lab: Lab::up(paths, plan, false).expect("lab up"),
    }
}

pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// Every frame seen on any interface of the namespace at `netns` (a raw
/// packet socket) while `traffic` runs, and for 200 ms after.
pub fn capture(netns: &Path, traffic: impl FnOnce()) -> Vec<Vec<u8>> {
    let ns = netns.to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        pilus_netlink::netns::enter_path(&ns).unwrap().stay();
        // SAFETY: plain socket(2)/setsockopt(2)/recv(2) on a descriptor we own.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        assert!(
            fd >= 0,
            "a packet socket: {}",
            std::io::Error::last_os_error()
        );
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        ready_tx.send(()).unwrap();
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !stop2.load(Ordering::Relaxed) {
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                frames.push(buf[..n as usize].to_vec());
            }
        }
        unsafe { libc::close(fd) };
        frames
    });
    ready_rx.recv().unwrap();
    traffic();
    // Let the last frames arrive.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap()
}
