//! Loading: the object is parsed, configured with the node's globals, its maps
//! created or reused from their pins (after [`crate::pins`] has checked that
//! the pins are this build's), its programs verified once, and the tail-call
//! array filled. After this, endpoints and policy only write maps.

use crate::{
    attach::AttachMode,
    bpffs, clock,
    config::{NodeConfig, PodCidr},
    objects,
    pins::{self, ObjectMap},
    Error,
};
use aya::{
    maps::ProgramArray,
    programs::{ProgramFd, SchedClassifier, TestRun, TestRunOptions},
    Ebpf, EbpfLoader,
};
use pilus_abi::consts::{
    CALL_IPV4_FROM_LXC, CALL_IPV4_LB, CALL_IPV4_NODEPORT, CALL_IPV4_NODEPORT_REPLY,
    CALL_IPV4_REV_SNAT, CALL_IPV4_TO_LXC,
};
use std::{
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

/// The BPF objects, one per kind of attach point (as Cilium splits them).
/// They share every map through the pin directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    /// bpf_lxc.c: pods' veths.
    Lxc,
    /// bpf_overlay.c: the VXLAN device.
    Overlay,
    /// bpf_host.c: the node's uplink.
    Host,
    /// bpf_xdp.c: the XDP prefilter on the node's uplink.
    Xdp,
    /// bpf_sock.c: socket-level service LB on a cgroup.
    Sock,
}

impl Object {
    pub const ALL: [Object; 5] = [
        Object::Lxc,
        Object::Overlay,
        Object::Host,
        Object::Xdp,
        Object::Sock,
    ];

    pub(crate) fn bytes(self) -> &'static [u8] {
        match self {
            Object::Lxc => objects::BPF_LXC,
            Object::Overlay => objects::BPF_OVERLAY,
            Object::Host => objects::BPF_HOST,
            Object::Xdp => objects::BPF_XDP,
            Object::Sock => objects::BPF_SOCK,
        }
    }

    fn file(self) -> &'static str {
        match self {
            Object::Lxc => "bpf_lxc.o",
            Object::Overlay => "bpf_overlay.o",
            Object::Host => "bpf_host.o",
            Object::Xdp => "bpf_xdp.o",
            Object::Sock => "bpf_sock.o",
        }
    }
}

/// The entry and tail-call programs of every object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// tc ingress of the host-side veth: packets leaving the pod.
    FromContainer,
    /// tc egress of the host-side veth: packets the stack sends to the pod.
    ToContainer,
    /// Tail call: IPv4 from a pod.
    Ipv4FromLxc,
    /// Tail call: IPv4 to a pod.
    Ipv4ToLxc,
    /// Tail call: a pod's packet to a service, translated to a backend.
    Ipv4LbFromLxc,
    /// tc ingress of the VXLAN device: other nodes' pods, decapsulated.
    FromOverlay,
    /// tc ingress of the uplink: packets from the network (direct routing).
    FromNetdev,
    /// tc egress of the uplink: packets leaving the node.
    ToNetdev,
    /// Tail call: a NodePort connection from the network, translated to a
    /// backend on this node and delivered.
    NodeportFromNetdev,
    /// Tail call: a packet to the masquerade address, a reply translated
    /// back to its pod and delivered.
    NatFromNetdev,
    /// Tail call: a reply to a NodePort client that another node's backend
    /// sent, translated back and sent out of the uplink.
    NodeportReplyNetdev,
}

impl Program {
    pub const ALL: [Program; 11] = [
        Program::FromContainer,
        Program::ToContainer,
        Program::Ipv4FromLxc,
        Program::Ipv4ToLxc,
        Program::Ipv4LbFromLxc,
        Program::FromOverlay,
        Program::FromNetdev,
        Program::ToNetdev,
        Program::NodeportFromNetdev,
        Program::NatFromNetdev,
        Program::NodeportReplyNetdev,
    ];

    /// The function name in its C file.
    pub fn name(self) -> &'static str {
        match self {
            Program::FromContainer => "from_container",
            Program::ToContainer => "to_container",
            Program::Ipv4FromLxc => "ipv4_from_lxc",
            Program::Ipv4ToLxc => "ipv4_to_lxc",
            Program::Ipv4LbFromLxc => "ipv4_lb_from_lxc",
            Program::FromOverlay => "from_overlay",
            Program::FromNetdev => "from_netdev",
            Program::ToNetdev => "to_netdev",
            Program::NodeportFromNetdev => "nodeport_from_netdev",
            Program::NatFromNetdev => "nat_from_netdev",
            Program::NodeportReplyNetdev => "nodeport_reply_netdev",
        }
    }

    pub fn object(self) -> Object {
        match self {
            Program::FromContainer
            | Program::ToContainer
            | Program::Ipv4FromLxc
            | Program::Ipv4ToLxc
            | Program::Ipv4LbFromLxc => Object::Lxc,
            Program::FromOverlay => Object::Overlay,
            Program::FromNetdev
            | Program::ToNetdev
            | Program::NodeportFromNetdev
            | Program::NatFromNetdev
            | Program::NodeportReplyNetdev => Object::Host,
        }
    }
}

/// Where and how to load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub node: NodeConfig,
    /// bpffs mount point (mounted if it is not one yet).
    pub bpffs_root: PathBuf,
    /// Directory below it for this datapath's pins; `None` loads unpinned
    /// maps private to this process (the BPF_PROG_TEST_RUN tests do).
    pub pin_dir: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            node: NodeConfig::default(),
            bpffs_root: PathBuf::from("/sys/fs/bpf"),
            pin_dir: Some(PathBuf::from("/sys/fs/bpf/pilus")),
        }
    }
}

/// A loaded datapath: the programs, verified, and handles to its maps.
pub struct Datapath {
    /// bpf_lxc.o, whose map handles the typed accessors use.
    pub(crate) ebpf: Ebpf,
    /// bpf_overlay.o, bpf_host.o, bpf_xdp.o and bpf_sock.o, on the same maps.
    overlay: Ebpf,
    host: Ebpf,
    pub(crate) xdp: Ebpf,
    pub(crate) sock: Ebpf,
    pin_dir: Option<PathBuf>,
    /// What the objects were loaded with (its `hz` the one in use): a
    /// private copy for `pilus trace` loads with the same ([`crate::trace`]).
    pub(crate) node: NodeConfig,
    pub(crate) bpffs_root: PathBuf,
    pub(crate) hz: u32,
    pub(crate) pod_cidr: PodCidr,
    pub(crate) attach_mode: AttachMode,
}

/// The XDP prefilter's function in bpf/bpf_xdp.c.
pub(crate) const XDP_PREFILTER: &str = "xdp_prefilter";

/// Map sizes that depend on the node. The one table both aya's loader and
/// the pin check read, so the check compares with what aya creates.
fn max_entries(node: &NodeConfig) -> [(&'static str, u32); 3] {
    [
        ("pilus_lxc", node.pod_cidr.size()),
        ("pilus_ct4", node.ct_max_entries),
        ("pilus_nat4", node.nat_max_entries),
    ]
}

impl Datapath {
    /// Loads bpf_lxc.o, bpf_overlay.o, bpf_host.o, bpf_xdp.o and
    /// bpf_sock.o, all on the same maps.
    /// With a pin directory, maps pinned there by an earlier
    /// load (an agent before a restart) are reused, so state survives; but
    /// only if they are the maps this build and these options create, and
    /// the directory's ABI stamp is this build's. Otherwise the load fails
    /// with [`Error::IncompatiblePin`] and has changed nothing.
    pub fn load(opts: &LoadOptions) -> Result<Datapath, Error> {
        let hz = match opts.node.hz {
            0 => clock::kernel_hz()?,
            hz => hz,
        };
        let pod_cidr = opts.node.pod_cidr;
        let sizes = max_entries(&opts.node);
        let maps = pins::object_maps(objects::BPF_LXC, &sizes)?;
        let stamp = pins::expected_stamp()?;
        let globals = opts.node.globals(hz);
        // The maps ask to be pinned by name. A load without a pin directory
        // (the BPF_PROG_TEST_RUN tests) pins them in a private directory and
        // removes the pins at once: the maps then live as long as this process.
        let (dir, private) = match &opts.pin_dir {
            Some(dir) => {
                bpffs::ensure(&opts.bpffs_root, dir)?;
                (dir.clone(), false)
            }
            None => (private_pin_dir(&opts.bpffs_root)?, true),
        };
        // bpf_lxc.o first: its load creates (or reuses, once checked) the
        // pinned maps the other objects then reuse by name.
        let load = |object: Object| -> Result<Ebpf, Error> {
            let mut loader = EbpfLoader::new();
            globals.apply(&mut loader);
            for (name, n) in sizes {
                loader.map_max_entries(name, n);
            }
            loader.default_map_pin_directory(&dir);
            loader.load(object.bytes()).map_err(|e| Error::Load {
                object: object.file(),
                source: Box::new(e),
            })
        };
        let loaded = pins::prepare(&dir, &maps, &stamp).and_then(|_| {
            Ok((
                load(Object::Lxc)?,
                load(Object::Overlay)?,
                load(Object::Host)?,
                load(Object::Xdp)?,
                load(Object::Sock)?,
            ))
        });
        if private {
            remove_pins(&dir, &maps);
        }
        let (ebpf, overlay, host, mut xdp, mut sock) = loaded?;
        crate::prefilter::prefilter_program(&mut xdp)?
            .load()
            .map_err(|e| Error::program(XDP_PREFILTER, e))?;
        crate::sock::load_programs(&mut sock)?;
        let mut dp = Datapath {
            ebpf,
            overlay,
            host,
            xdp,
            sock,
            pin_dir: opts.pin_dir.clone(),
            node: NodeConfig {
                hz,
                ..opts.node.clone()
            },
            bpffs_root: opts.bpffs_root.clone(),
            hz,
            pod_cidr,
            attach_mode: AttachMode::default(),
        };
        for p in Program::ALL {
            dp.classifier_mut(p)?
                .load()
                .map_err(|e| Error::program(p.name(), e))?;
        }
        fill_tail_calls(&mut dp.ebpf)?;
        // The uplink's own tail calls (bpf_host.o: NodePort and reverse
        // SNAT), in the same shared array.
        let host = program_fds(
            &dp.host,
            &[
                (CALL_IPV4_NODEPORT, Program::NodeportFromNetdev),
                (CALL_IPV4_REV_SNAT, Program::NatFromNetdev),
                (CALL_IPV4_NODEPORT_REPLY, Program::NodeportReplyNetdev),
            ],
        )?;
        set_tail_calls(&mut dp.ebpf, &host)?;
        tracing::debug!(pin_dir = ?dp.pin_dir, "datapath loaded");
        Ok(dp)
    }

    /// Conntrack's "now" (seconds on the kernel's tick), to compare with
    /// `CtEntry::expires`.
    pub fn ct_now(&self) -> Result<u32, Error> {
        clock::ct_now(self.hz)
    }

    /// The directory the maps are pinned in, if any.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    fn object(&self, o: Object) -> &Ebpf {
        match o {
            Object::Lxc => &self.ebpf,
            Object::Overlay => &self.overlay,
            Object::Host => &self.host,
            Object::Xdp => &self.xdp,
            Object::Sock => &self.sock,
        }
    }

    pub(crate) fn classifier(&self, p: Program) -> Result<&SchedClassifier, Error> {
        self.object(p.object())
            .program(p.name())
            .ok_or(Error::MissingProgram { name: p.name() })?
            .try_into()
            .map_err(|e| Error::program(p.name(), e))
    }

    /// The fd of loaded program `p`, e.g. to attach it by fd.
    pub fn program_fd(&self, p: Program) -> Result<BorrowedFd<'_>, Error> {
        Ok(self
            .classifier(p)?
            .fd()
            .map_err(|e| Error::program(p.name(), e))?
            .as_fd())
    }

    pub(crate) fn classifier_mut(&mut self, p: Program) -> Result<&mut SchedClassifier, Error> {
        let obj = match p.object() {
            Object::Lxc => &mut self.ebpf,
            Object::Overlay => &mut self.overlay,
            Object::Host => &mut self.host,
            Object::Xdp => &mut self.xdp,
            Object::Sock => &mut self.sock,
        };
        obj.program_mut(p.name())
            .ok_or(Error::MissingProgram { name: p.name() })?
            .try_into()
            .map_err(|e| Error::program(p.name(), e))
    }

    /// Runs `p` once or `repeat` times on `packet` through BPF_PROG_TEST_RUN,
    /// as if it arrived on `ifindex`. See [`crate::testrun`].
    pub fn test_run(
        &self,
        p: Program,
        ifindex: u32,
        packet: &[u8],
        repeat: u32,
    ) -> Result<crate::testrun::Outcome, Error> {
        let prog = self.classifier(p)?;
        crate::testrun::run(
            |opts: TestRunOptions<'_>| prog.test_run(opts),
            p.name(),
            ifindex,
            packet,
            repeat,
        )
    }
}

/// The programs of bpf_lxc.o.
pub(crate) const LXC_PROGRAMS: [Program; 5] = [
    Program::FromContainer,
    Program::ToContainer,
    Program::Ipv4FromLxc,
    Program::Ipv4ToLxc,
    Program::Ipv4LbFromLxc,
];

/// Fills bpf_lxc.o's tail-call array with its own (loaded) programs.
pub(crate) fn fill_tail_calls(ebpf: &mut Ebpf) -> Result<(), Error> {
    let fds = program_fds(
        ebpf,
        &[
            (CALL_IPV4_FROM_LXC, Program::Ipv4FromLxc),
            (CALL_IPV4_TO_LXC, Program::Ipv4ToLxc),
            (CALL_IPV4_LB, Program::Ipv4LbFromLxc),
        ],
    )?;
    set_tail_calls(ebpf, &fds)
}

/// Copies of the fds of `slots`' (loaded) programs of `ebpf`, by slot.
fn program_fds(ebpf: &Ebpf, slots: &[(u32, Program)]) -> Result<Vec<(u32, ProgramFd)>, Error> {
    let mut fds = Vec::new();
    for &(slot, p) in slots {
        let prog: &SchedClassifier = ebpf
            .program(p.name())
            .ok_or(Error::MissingProgram { name: p.name() })?
            .try_into()
            .map_err(|e| Error::program(p.name(), e))?;
        let fd = prog.fd().map_err(|e| Error::program(p.name(), e))?;
        fds.push((
            slot,
            fd.try_clone().map_err(|source| Error::Syscall {
                call: "dup(program fd)",
                source,
            })?,
        ));
    }
    Ok(fds)
}

/// Puts programs into the tail-call array `ebpf` holds (`pilus_calls`,
/// one map shared by every object of the datapath).
fn set_tail_calls(ebpf: &mut Ebpf, fds: &[(u32, ProgramFd)]) -> Result<(), Error> {
    let map = ebpf.map_mut("pilus_calls").ok_or(Error::MissingMap {
        name: "pilus_calls",
    })?;
    let mut calls: ProgramArray<_> =
        ProgramArray::try_from(map).map_err(|e| Error::map("pilus_calls", e))?;
    for (slot, fd) in fds {
        calls
            .set(*slot, fd, 0)
            .map_err(|e| Error::map("pilus_calls", e))?;
    }
    Ok(())
}

/// A fresh directory on bpffs for a load whose pins must not outlive it.
pub(crate) fn private_pin_dir(root: &Path) -> Result<PathBuf, Error> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = root.join(format!(
        "pilus-private-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    bpffs::ensure(root, &dir)?;
    Ok(dir)
}

fn remove_pins(dir: &Path, maps: &[ObjectMap]) {
    for m in maps {
        let _ = std::fs::remove_file(dir.join(&m.name));
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove private pin directory");
    }
}
