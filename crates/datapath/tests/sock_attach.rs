//! Socket-level LB's attachment on a real kernel (issue 11), without
//! traffic (BPF_PROG_TEST_RUN does not run cgroup/sock_addr programs; the
//! translation itself is tier 3, crates/agent/tests/socklb.rs): the programs
//! attach to a cgroup v2 directory as pinned links, exactly one per hook;
//! an agent's restart (a second load on the same pins) replaces them with
//! its own, still one per hook; attaching to another cgroup moves them;
//! removing the pins leaves none; a directory that is not cgroup v2 is
//! refused and changes nothing.
//!
//! Needs root and cgroup v2 at /sys/fs/cgroup/unified; fails, never skips.
//! Guards remove the cgroups (sub-cgroups this test makes, never the root)
//! and the pin directory, also when an assertion fails.

use pilus_datapath::{
    sock::{self, SockProgram},
    Datapath, Error, LoadOptions, NodeConfig, PodCidr,
};
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

const CGROUP_ROOT: &str = "/sys/fs/cgroup/unified";

struct Cgroup(PathBuf);

impl Cgroup {
    fn new(tag: &str) -> Cgroup {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the socket-LB attach test needs root: run it as root"
        );
        assert!(
            Path::new(CGROUP_ROOT).join("cgroup.procs").exists(),
            "no cgroup v2 hierarchy at {CGROUP_ROOT}"
        );
        let path =
            Path::new(CGROUP_ROOT).join(format!("pilus-t11sockdp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Cgroup(path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // No process is ever moved in: it is empty.
        if let Err(e) = std::fs::remove_dir(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        // Removing the link pins detaches what is still attached.
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

fn load(pins: &Path) -> Datapath {
    Datapath::load(&LoadOptions {
        node: NodeConfig {
            router_ip4: Ipv4Addr::new(198, 18, 0, 1),
            pod_cidr: PodCidr::new(Ipv4Addr::new(198, 18, 0, 0), 24).unwrap(),
            ..Default::default()
        },
        bpffs_root: PathBuf::from("/sys/fs/bpf"),
        pin_dir: Some(pins.to_path_buf()),
    })
    .expect("load the datapath")
}

/// The one program on each socket-LB hook of `cgroup`.
fn one_each(cgroup: &Path) -> Vec<u32> {
    sock::cgroup_programs(cgroup)
        .unwrap()
        .into_iter()
        .map(|(p, ids)| {
            assert_eq!(
                ids.len(),
                1,
                "{} on {}: {ids:?}",
                p.hook(),
                cgroup.display()
            );
            ids[0]
        })
        .collect()
}

fn none(cgroup: &Path) {
    for (p, ids) in sock::cgroup_programs(cgroup).unwrap() {
        assert!(
            ids.is_empty(),
            "{} on {}: {ids:?}",
            p.hook(),
            cgroup.display()
        );
    }
}

#[test]
fn socket_lb_links_are_one_per_hook_replaced_moved_and_removed() {
    let a = Cgroup::new("a");
    let b = Cgroup::new("b");
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/pilus-t11sockdp-{}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&pins.0);

    let mut first = load(&pins.0);
    none(&a.0);
    first.attach_socket_lb(&a.0).unwrap();
    let mine = one_each(&a.0);
    for p in SockProgram::ALL {
        assert!(p.link_pin(&pins.0).exists(), "{} pinned", p.hook());
    }
    none(&b.0);

    // A restart: new programs on the same maps take the hooks, and the
    // earlier ones leave them (their links went with their pins).
    let mut second = load(&pins.0);
    second.attach_socket_lb(&a.0).unwrap();
    let theirs = one_each(&a.0);
    for (old, new) in mine.iter().zip(&theirs) {
        assert_ne!(old, new, "the restarted agent's program");
    }
    drop(first);

    // Another cgroup: they move.
    second.attach_socket_lb(&b.0).unwrap();
    none(&a.0);
    assert_eq!(one_each(&b.0), theirs);

    // Not a cgroup v2 directory: refused, nothing changed.
    let e = second.attach_socket_lb(Path::new("/tmp")).unwrap_err();
    assert!(matches!(e, Error::NotCgroup2 { .. }), "{e}");
    let e = second
        .attach_socket_lb(Path::new("/sys/fs/cgroup/unified/pilus-no-such-cgroup"))
        .unwrap_err();
    assert!(matches!(e, Error::Cgroup { .. }), "{e}");
    assert_eq!(one_each(&b.0), theirs);

    // The pins removed (a start without --socket-lb-cgroup): none left,
    // although the loaded programs still exist.
    sock::detach_socket_lb(&pins.0).unwrap();
    none(&b.0);
    for p in SockProgram::ALL {
        assert!(!p.link_pin(&pins.0).exists(), "{} unpinned", p.hook());
    }
    drop(second);
}
