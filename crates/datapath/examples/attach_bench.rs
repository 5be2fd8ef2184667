//! How long attaching an endpoint's two pod programs takes, per way of
//! attaching them (issue 9: CNI ADD p99 ≤ 50 ms, of which two TCX attaches
//! took ~30 ms).
//!
//! ```sh
//! cargo run --release -p pilus-datapath --example attach_bench          # 100 veths per mode
//! cargo run --release -p pilus-datapath --example attach_bench -- 200   # 200
//! ```
//!
//! Root. Makes a namespace `abench-<pid>-<n>` (removed on exit, also on a
//! panic; a run killed by a signal is swept by the next), loads bpf_lxc.o
//! with private maps, and for every sample makes a fresh veth pair (host
//! side up, as `pilus_netlink::pod::create` leaves it), attaches
//! `from_container` to its ingress and `to_container` to its egress, and
//! times only that. Modes are interleaved sample by sample, so load from
//! elsewhere on the machine hits them alike. Then it removes the
//! attachment and the pair and times that too (what an endpoint's DEL
//! pays for it).
//!
//! Modes:
//! - `tcx-seq`: two `BPF_LINK_CREATE` (TCX) one after the other: what the
//!   agent did before issue 9;
//! - `tcx-par`: the same two on two threads at once;
//! - `tc`: `clsact` qdisc, then the two `cls_bpf` filters, over rtnetlink;
//! - `tc-down`: the same, but the qdisc is added while the host side is
//!   still down (then the link is set up, untimed);
//! - `tc-aged`: the qdisc added when the pair is made, the filters 50 ms
//!   later (after an RCU grace period has certainly elapsed): the filters
//!   alone, when the kernel does not have to wait at all.

use aya_obj::generated::{bpf_attach_type, bpf_cmd};
use pilus_datapath::{Datapath, LoadOptions, Program};
use pilus_netlink::{FilterSlot, Netlink, TcHook};
use pilus_netns::NetNs;
use std::{
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

const MODES: [&str; 5] = ["tcx-seq", "tcx-par", "tc", "tc-down", "tc-aged"];
/// Where the pod programs' filters go on each hook.
const SLOT: (u16, u32) = (1, 1);

/// `BPF_LINK_CREATE` of a TCX link, by hand: aya's attach needs `&mut` of
/// the program, and the point of `tcx-par` is two at once.
fn tcx_link_create(prog: RawFd, ifindex: u32, ingress: bool) -> io::Result<OwnedFd> {
    // union bpf_attr's link_create: prog_fd, target_ifindex, attach_type,
    // flags, then tcx.{relative_fd, expected_revision}, all zero here. The
    // kernel wants every byte past the fields it knows to be zero.
    let mut attr = [0u32; 16];
    attr[0] = prog as u32;
    attr[1] = ifindex;
    attr[2] = if ingress {
        bpf_attach_type::BPF_TCX_INGRESS as u32
    } else {
        bpf_attach_type::BPF_TCX_EGRESS as u32
    };
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes of `attr`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_LINK_CREATE as libc::c_long,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that bpf(2) just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// What one sample leaves to undo.
enum Attached {
    /// The links, released when dropped.
    Tcx(#[allow(dead_code)] Vec<OwnedFd>),
    Tc,
}

/// A thread that makes TCX links on request (in the namespace it was
/// started from).
struct Worker {
    tx: mpsc::Sender<(RawFd, u32, bool)>,
    rx: mpsc::Receiver<io::Result<OwnedFd>>,
}

impl Worker {
    fn start() -> Worker {
        let (tx, job_rx) = mpsc::channel::<(RawFd, u32, bool)>();
        let (done_tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for (prog, ifindex, ingress) in job_rx {
                if done_tx
                    .send(tcx_link_create(prog, ifindex, ingress))
                    .is_err()
                {
                    break;
                }
            }
        });
        Worker { tx, rx }
    }
}

struct Bench<'a> {
    nl: Netlink,
    ns_fd: File,
    from: BorrowedFd<'a>,
    to: BorrowedFd<'a>,
    workers: [Worker; 2],
}

impl Bench<'_> {
    fn pair(&mut self, name: &str, up: bool) -> u32 {
        let peer = format!("p{}", &name[1..]);
        self.nl
            .create_veth(name, &peer, self.ns_fd.as_fd())
            .expect("veth");
        let index = self.nl.link(name).expect("link").expect("the veth").index;
        if up {
            self.nl.set_up(index).expect("up");
        }
        index
    }

    fn filters(&mut self, index: u32) {
        for (hook, fd, name) in [
            (TcHook::Ingress, self.from, "from_container"),
            (TcHook::Egress, self.to, "to_container"),
        ] {
            let slot = FilterSlot {
                hook,
                priority: SLOT.0,
                handle: SLOT.1,
            };
            self.nl
                .put_bpf_filter(index, slot, fd, name)
                .expect("filter");
        }
    }

    /// One sample of `mode` on a fresh pair `name`: the attach time, and
    /// what to undo.
    fn attach(&mut self, mode: &str, name: &str) -> (Duration, Attached) {
        match mode {
            "tcx-seq" => {
                let index = self.pair(name, true);
                let t = Instant::now();
                let a = tcx_link_create(self.from.as_raw_fd(), index, true).expect("tcx ingress");
                let b = tcx_link_create(self.to.as_raw_fd(), index, false).expect("tcx egress");
                (t.elapsed(), Attached::Tcx(vec![a, b]))
            }
            "tcx-par" => {
                let index = self.pair(name, true);
                let t = Instant::now();
                let jobs = [(self.from, true), (self.to, false)];
                for (w, (fd, ingress)) in self.workers.iter().zip(jobs) {
                    w.tx.send((fd.as_raw_fd(), index, ingress)).expect("worker");
                }
                let links: Vec<OwnedFd> = self
                    .workers
                    .iter()
                    .map(|w| w.rx.recv().expect("worker").expect("tcx attach"))
                    .collect();
                (t.elapsed(), Attached::Tcx(links))
            }
            "tc" => {
                let index = self.pair(name, true);
                let t = Instant::now();
                self.nl.add_clsact(index).expect("clsact");
                self.filters(index);
                (t.elapsed(), Attached::Tc)
            }
            "tc-down" => {
                let index = self.pair(name, false);
                let t = Instant::now();
                self.nl.add_clsact(index).expect("clsact");
                let qdisc = t.elapsed();
                self.nl.set_up(index).expect("up");
                let t = Instant::now();
                self.filters(index);
                (qdisc + t.elapsed(), Attached::Tc)
            }
            "tc-aged" => {
                let index = self.pair(name, true);
                self.nl.add_clsact(index).expect("clsact");
                thread::sleep(Duration::from_millis(50));
                let t = Instant::now();
                self.filters(index);
                (t.elapsed(), Attached::Tc)
            }
            _ => unreachable!("mode {mode}"),
        }
    }

    /// Undoes a sample as an endpoint's DEL would: TCX links released
    /// (as unpinning does), then the pair deleted.
    fn teardown(&mut self, name: &str, attached: Attached) -> Duration {
        let t = Instant::now();
        drop(attached);
        assert!(self.nl.delete_link(name).expect("delete"), "{name} gone");
        t.elapsed()
    }

    /// One request the kernel answers at once: adding a qdisc that is there.
    fn round_trip(&mut self, index: u32) -> Duration {
        let t = Instant::now();
        assert!(!self.nl.add_clsact(index).expect("clsact"));
        t.elapsed()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    ms(sorted[((sorted.len() as f64 - 1.0) * q).round() as usize])
}

fn row(label: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{label:<28} {:>5} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        v.len(),
        quantile(&v, 0.5),
        quantile(&v, 0.9),
        quantile(&v, 0.99),
        ms(*v.last().expect("samples")),
    );
}

fn main() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "attach_bench needs root (namespaces, eBPF)"
    );
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("the number of samples per mode"))
        .unwrap_or(100);
    pilus_netns::remove_stale("abench").expect("sweep earlier runs");
    let ns = NetNs::new("abench").expect("namespace");
    let dp = Datapath::load(&LoadOptions {
        pin_dir: None,
        ..Default::default()
    })
    .expect("load bpf_lxc.o");
    let from = dp
        .program_fd(Program::FromContainer)
        .expect("from_container");
    let to = dp.program_fd(Program::ToContainer).expect("to_container");

    // This thread, and the workers it starts, stay in the namespace.
    let _inside = ns.enter().expect("enter the namespace");
    let mut b = Bench {
        nl: Netlink::open().expect("rtnetlink"),
        ns_fd: File::open(ns.path()).expect("namespace fd"),
        from,
        to,
        workers: [Worker::start(), Worker::start()],
    };
    let rt_index = b.pair("abrt", true);
    b.nl.add_clsact(rt_index).expect("clsact");

    let mut attach = vec![Vec::new(); MODES.len()];
    let mut teardown = vec![Vec::new(); MODES.len()];
    let mut rtt = Vec::new();
    // One untimed round of every mode first (first-use costs).
    for i in 0..=n {
        for (m, mode) in MODES.iter().enumerate() {
            let name = format!("a{m}x{i}");
            let (t, attached) = b.attach(mode, &name);
            let d = b.teardown(&name, attached);
            if i > 0 {
                attach[m].push(t);
                teardown[m].push(d);
            }
        }
        if i > 0 {
            rtt.push(b.round_trip(rt_index));
        }
    }
    b.nl.delete_link("abrt").expect("delete");

    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "attach_bench: {n} fresh veths per mode, kernel {}, {} CPUs",
        uname.trim(),
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<28} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "case (ms)", "runs", "p50", "p90", "p99", "max"
    );
    for (m, mode) in MODES.iter().enumerate() {
        row(&format!("attach {mode}"), attach[m].clone());
    }
    for (m, mode) in MODES.iter().enumerate() {
        row(&format!("detach+delete {mode}"), teardown[m].clone());
    }
    row("netlink round trip", rtt);
}
