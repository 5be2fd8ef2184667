//! Attaching the already-loaded pod programs to a pod's host-side veth:
//! `from_container` on its ingress, `to_container` on its egress. Attaching
//! re-verifies nothing. What is attached where is also reported hook by
//! hook, with the filters found, for `pilus doctor` ([`HookStatus`], read
//! through [`crate::Inspector`]).
//!
//! Two kinds of attachment:
//!
//! - **Lasting** ([`Datapath::attach_endpoint_lasting`], what the agent
//!   uses): outlives the process, so an agent that exits or restarts leaves
//!   the pods' traffic running, and a restarted agent can tell
//!   ([`Datapath::endpoint_attached`]). The programs go in as `cls_bpf`
//!   filters on a `clsact` qdisc over rtnetlink ([`AttachMode::Tc`]); a
//!   kernel that refuses those gets TCX links pinned under
//!   `<pin dir>/links/` instead ([`AttachMode::Tcx`]).
//! - **Process-owned** ([`Datapath::attach_endpoint`], for tests): TCX
//!   links (netlink filters on kernels before 6.6) that are detached when
//!   the returned [`EndpointLinks`] is dropped.
//!
//! Why tc before TCX for the lasting kind (issue 9): a TCX attach
//! (`tcx_link_prog_attach`, kernel/bpf/tcx.c) swaps the device's
//! `bpf_mprog_entry` and then calls `tcx_entry_sync()`, a full
//! `synchronize_rcu()`, with RTNL held; releasing the link does the same.
//! Two attaches per endpoint were two grace periods (~12–15 ms each on the
//! project's VM), and two threads do not overlap them (RTNL). A `cls_bpf`
//! filter add publishes the filter list through `mini_qdisc_pair_swap()`
//! (net/sched/sch_generic.c), which waits only if a grace period has not
//! passed since that miniq was last retired (`poll_state_synchronize_rcu`),
//! and then with `synchronize_rcu_expedited()`; adding the `clsact` qdisc
//! to an up device waits for `synchronize_net()`, expedited under RTNL.
//! Measured (`examples/attach_bench.rs`, docs/benchmarks.md): both
//! programs in ~0.15 ms with tc, ~24 ms with TCX.

use crate::{loader::Program, sys, Datapath, Error};
use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{self, SchedClassifierLink, TcAttachOptions},
    LinkOrder, ProgramError, TcAttachType,
};
use pilus_netlink::{FilterSlot, Netlink, TcHook};
use std::{
    io,
    path::{Path, PathBuf},
};

/// The two links of one endpoint; dropping this detaches both.
pub struct EndpointLinks {
    pub ifname: String,
    /// How the programs were attached: "tcx" or "netlink".
    pub mode: &'static str,
    _from_container: SchedClassifierLink,
    _to_container: SchedClassifierLink,
}

/// How a lasting attachment is made. The other mode is the fallback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// A `clsact` qdisc and direct-action `cls_bpf` filters, over
    /// rtnetlink. They belong to the device: they stay when the agent goes
    /// and go with the veth.
    #[default]
    Tc,
    /// TCX links (Linux 6.6), pinned under `<pin dir>/links/` so they
    /// outlive the process.
    Tcx,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Tc => "tc",
            AttachMode::Tcx => "tcx",
        }
    }

    fn other(self) -> AttachMode {
        match self {
            AttachMode::Tc => AttachMode::Tcx,
            AttachMode::Tcx => AttachMode::Tc,
        }
    }
}

/// Where the pod programs' filters go on each hook of a pod's veth: the
/// first priority, so they run before anything else added there. The slot
/// is Pilus's on its veths; a filter found in it is replaced.
const FILTER_PRIORITY: u16 = 1;
const FILTER_HANDLE: u32 = 1;

/// One hook of an endpoint's veth and the program that belongs there.
#[derive(Clone, Copy, Debug)]
struct Hook {
    program: Program,
    tc: TcHook,
}

const HOOKS: [Hook; 2] = [
    Hook {
        program: Program::FromContainer,
        tc: TcHook::Ingress,
    },
    Hook {
        program: Program::ToContainer,
        tc: TcHook::Egress,
    },
];

impl Hook {
    fn name(self) -> &'static str {
        self.tc.name()
    }

    fn attach_type(self) -> TcAttachType {
        match self.tc {
            TcHook::Ingress => TcAttachType::Ingress,
            TcHook::Egress => TcAttachType::Egress,
        }
    }

    fn slot(self) -> FilterSlot {
        FilterSlot {
            hook: self.tc,
            priority: FILTER_PRIORITY,
            handle: FILTER_HANDLE,
        }
    }
}

/// How one hook of a veth is attached now. Either counts only if its
/// program is one of this datapath's, that is, uses its pinned maps (the
/// tail-call array `pilus_calls`, which both entry programs use). Programs
/// of an earlier load from the same pins are; programs left running on
/// the maps of a pin directory since removed are not (they would never see
/// what this datapath writes), and get replaced.
#[derive(Clone, Copy, Debug, Default)]
struct HookState {
    /// A direct-action `cls_bpf` filter named after the program is there.
    tc: bool,
    /// The TCX link pinned for this hook is attached to this very device
    /// (not to a deleted veth that had its name).
    tcx: bool,
}

impl HookState {
    fn attached(self) -> bool {
        self.tc || self.tcx
    }
}

fn netlink_err(ifname: &str) -> impl FnOnce(pilus_netlink::Error) -> Error + '_ {
    move |source| Error::Netlink {
        ifname: ifname.to_string(),
        source: Box::new(source),
    }
}

impl Datapath {
    /// Attaches `from_container` (tc ingress) and `to_container` (tc egress) to
    /// the host-side veth `ifname`, resolved in the calling thread's network
    /// namespace, for as long as the returned links live.
    pub fn attach_endpoint(&mut self, ifname: &str) -> Result<EndpointLinks, Error> {
        let (ingress, mode) =
            self.attach_one(Program::FromContainer, ifname, TcAttachType::Ingress)?;
        let (egress, _) = self.attach_one(Program::ToContainer, ifname, TcAttachType::Egress)?;
        Ok(EndpointLinks {
            ifname: ifname.to_string(),
            mode,
            _from_container: ingress,
            _to_container: egress,
        })
    }

    /// Which mode lasting attachments try first (the default: [`AttachMode::Tc`]).
    /// The other is still the fallback. For kernels where the first
    /// misbehaves, and for tests of the fallback.
    pub fn set_attach_mode(&mut self, mode: AttachMode) {
        self.attach_mode = mode;
    }

    /// Where the pinned TCX link of `hook` on `ifname` lives.
    fn tcx_pin(&self, ifname: &str, hook: Hook) -> Result<PathBuf, Error> {
        Ok(tcx_pin(
            self.pin_dir().ok_or(Error::NotPinned)?,
            ifname,
            hook,
        ))
    }

    /// Attaches both programs to the host-side veth `ifname` (in the
    /// calling thread's network namespace) so that they outlive this
    /// process (the module docs in `attach.rs` say how, and why tc first).
    ///
    /// When this returns, every packet that reaches either hook runs the
    /// programs: the kernel acknowledges a filter only after
    /// `mini_qdisc_pair_swap()` has published the hook's new filter list,
    /// and a TCX link only after its entry is published and synced.
    ///
    /// Idempotent: a hook that already runs its program (this datapath's
    /// own: one that uses this datapath's pinned maps) is left alone, so an agent that restarts
    /// re-attaches only what is missing. A filter in Pilus's slot that runs
    /// another program is replaced in place (the kernel swaps the two under
    /// RCU: no packet sees neither). A TCX pin left by a deleted veth of the
    /// same name is removed.
    ///
    /// If the second hook fails, what this call attached to the first is
    /// removed again before the other mode is tried, and before an error is
    /// returned: this call never leaves an endpoint attached on one side.
    pub fn attach_endpoint_lasting(&mut self, ifname: &str) -> Result<(), Error> {
        if self.pin_dir().is_none() {
            return Err(Error::NotPinned);
        }
        let mut nl = Netlink::open().map_err(netlink_err(ifname))?;
        let index = link_index(&mut nl, ifname)?;
        let state = self.hook_states(&mut nl, index, ifname)?;
        self.remove_stale_tcx_pins(ifname, &state)?;
        let missing: Vec<Hook> = HOOKS
            .iter()
            .zip(state)
            .filter(|(_, s)| !s.attached())
            .map(|(h, _)| *h)
            .collect();
        if missing.is_empty() {
            tracing::debug!(ifname, "pod programs already attached");
            return Ok(());
        }
        let first = self.attach_mode;
        let tried = self.attach_lasting(first, &mut nl, index, ifname, &missing);
        let Err(first_err) = tried else {
            tracing::debug!(ifname, mode = first.name(), "pod programs attached");
            return Ok(());
        };
        let fallback = first.other();
        tracing::debug!(
            ifname,
            mode = first.name(),
            fallback = fallback.name(),
            error = %first_err,
            "attach failed; trying the other mode"
        );
        match self.attach_lasting(fallback, &mut nl, index, ifname, &missing) {
            Ok(()) => {
                tracing::debug!(ifname, mode = fallback.name(), "pod programs attached");
                Ok(())
            }
            Err(e) => Err(Error::AttachEndpoint {
                ifname: ifname.to_string(),
                first: Box::new(first_err),
                fallback: Box::new(e),
            }),
        }
    }

    /// Attaches the `missing` hooks in `mode`; on failure, removes what it
    /// attached.
    fn attach_lasting(
        &mut self,
        mode: AttachMode,
        nl: &mut Netlink,
        index: u32,
        ifname: &str,
        missing: &[Hook],
    ) -> Result<(), Error> {
        match mode {
            AttachMode::Tc => self.attach_tc(nl, index, ifname, missing),
            AttachMode::Tcx => self.attach_tcx_pinned(ifname, missing),
        }
    }

    fn attach_tc(
        &self,
        nl: &mut Netlink,
        index: u32,
        ifname: &str,
        missing: &[Hook],
    ) -> Result<(), Error> {
        // EEXIST (the qdisc is there, e.g. from an earlier attach) is fine.
        nl.add_clsact(index).map_err(netlink_err(ifname))?;
        let mut added = Vec::new();
        for hook in missing {
            let put = self.program_fd(hook.program).and_then(|fd| {
                nl.put_bpf_filter(index, hook.slot(), fd, hook.program.name())
                    .map_err(netlink_err(ifname))
            });
            if let Err(e) = put {
                for done in added {
                    if let Err(undo) = nl.delete_bpf_filter(index, done) {
                        tracing::warn!(ifname, error = %undo, "could not undo a half-done attach");
                    }
                }
                return Err(e);
            }
            added.push(hook.slot());
        }
        Ok(())
    }

    fn attach_tcx_pinned(&mut self, ifname: &str, missing: &[Hook]) -> Result<(), Error> {
        let mut pinned: Vec<PinnedLink> = Vec::new();
        let undo = |pinned: Vec<PinnedLink>| {
            for p in pinned {
                // Unpinning and dropping the last fd detaches the link.
                if let Err(e) = p.unpin() {
                    tracing::warn!(ifname, error = %e, "could not undo a half-done attach");
                }
            }
        };
        for &hook in missing {
            match self.attach_tcx_one(ifname, hook) {
                Ok(p) => pinned.push(p),
                Err(e) => {
                    undo(pinned);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn attach_tcx_one(&mut self, ifname: &str, hook: Hook) -> Result<PinnedLink, Error> {
        let path = self.tcx_pin(ifname, hook)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Bpffs {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let err = attach_err(hook.program, ifname, hook.attach_type());
        let prog = self.classifier_mut(hook.program)?;
        let id = prog
            .attach_with_options(
                ifname,
                hook.attach_type(),
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(err)?;
        let link =
            prog.take_link(id)
                .map_err(attach_err(hook.program, ifname, hook.attach_type()))?;
        let pin_err = |source: Box<dyn std::error::Error + Send + Sync>| Error::PinLink {
            program: hook.program.name(),
            ifname: ifname.to_string(),
            path: path.clone(),
            source,
        };
        // Dropped on an error below, the unpinned link detaches.
        let fd = FdLink::try_from(link).map_err(|e| pin_err(Box::new(e)))?;
        fd.pin(&path).map_err(|e| pin_err(Box::new(e)))
    }

    /// Whether both programs are attached to `ifname` (in the calling
    /// thread's namespace) in a way that outlives the agent: a restarted
    /// agent asks this before attaching. False if `ifname` does not exist
    /// or cannot be inspected (the error is logged at debug level).
    pub fn endpoint_attached(&self, ifname: &str) -> bool {
        let states = Netlink::open()
            .map_err(netlink_err(ifname))
            .and_then(|mut nl| {
                let index = link_index(&mut nl, ifname)?;
                self.hook_states(&mut nl, index, ifname)
            });
        match states {
            Ok(s) => s.iter().all(|h| h.attached()),
            Err(e) => {
                tracing::debug!(ifname, error = %e, "cannot tell whether the endpoint is attached");
                false
            }
        }
    }

    /// Detaches both programs from `ifname`, whichever way they were
    /// attached: its `cls_bpf` filters named after them are deleted and its
    /// TCX pins removed. Idempotent: nothing attached, or no such link, is
    /// fine. The `clsact` qdisc stays (it may carry filters of others); it
    /// goes with the veth.
    pub fn detach_endpoint_lasting(&self, ifname: &str) -> Result<(), Error> {
        let mut nl = Netlink::open().map_err(netlink_err(ifname))?;
        if let Some(link) = nl.link(ifname).map_err(netlink_err(ifname))? {
            for hook in HOOKS {
                let filters = nl
                    .bpf_filters(link.index, hook.tc)
                    .map_err(netlink_err(ifname))?;
                for f in filters
                    .iter()
                    .filter(|f| f.name.as_deref() == Some(hook.program.name()))
                {
                    let slot = FilterSlot {
                        hook: hook.tc,
                        priority: f.priority,
                        handle: f.handle,
                    };
                    nl.delete_bpf_filter(link.index, slot)
                        .map_err(netlink_err(ifname))?;
                }
            }
        }
        if self.pin_dir().is_some() {
            for hook in HOOKS {
                remove_pin(&self.tcx_pin(ifname, hook)?)?;
            }
        }
        Ok(())
    }

    /// How each of `HOOKS` is attached on link `index` (named `ifname`).
    fn hook_states(
        &self,
        nl: &mut Netlink,
        index: u32,
        ifname: &str,
    ) -> Result<[HookState; 2], Error> {
        hook_states(self.calls_map_id()?, self.pin_dir(), nl, index, ifname)
    }

    /// The id of this datapath's `pilus_calls` map (see [`HookState`]).
    fn calls_map_id(&self) -> Result<u32, Error> {
        const NAME: &str = "pilus_calls";
        match self.ebpf.map(NAME) {
            Some(aya::maps::Map::ProgramArray(m)) => {
                m.info().map(|i| i.id()).map_err(|e| Error::map(NAME, e))
            }
            _ => Err(Error::MissingMap { name: NAME }),
        }
    }

    /// Removes the TCX pins of `ifname` whose link is not attached to it:
    /// left by a deleted veth that had this name, whose links the kernel
    /// detached when the device went (`tcx_uninstall`).
    fn remove_stale_tcx_pins(&self, ifname: &str, states: &[HookState; 2]) -> Result<(), Error> {
        for (hook, state) in HOOKS.iter().zip(states) {
            if !state.tcx {
                remove_pin(&self.tcx_pin(ifname, *hook)?)?;
            }
        }
        Ok(())
    }

    fn attach_one(
        &mut self,
        p: Program,
        ifname: &str,
        at: TcAttachType,
    ) -> Result<(SchedClassifierLink, &'static str), Error> {
        let err = attach_err(p, ifname, at);
        let prog = self.classifier_mut(p)?;
        let (id, mode) = match prog.attach_with_options(
            ifname,
            at,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        ) {
            Ok(id) => (id, "tcx"),
            Err(tcx_err) => {
                // Kernels before 6.6 have no TCX: fall back to clsact.
                tracing::debug!(ifname, error = %tcx_err, "TCX attach failed, using netlink");
                if let Err(e) = tc::qdisc_add_clsact(ifname) {
                    // EEXIST: the qdisc is already there, which is fine.
                    tracing::debug!(ifname, error = %e, "clsact qdisc");
                }
                let id = prog
                    .attach_with_options(ifname, at, TcAttachOptions::Netlink(Default::default()))
                    .map_err(err)?;
                (id, "netlink")
            }
        };
        let link = prog.take_link(id).map_err(attach_err(p, ifname, at))?;
        Ok((link, mode))
    }
}

fn attach_err(
    p: Program,
    ifname: &str,
    at: TcAttachType,
) -> impl FnOnce(ProgramError) -> Error + '_ {
    let attach = if matches!(at, TcAttachType::Ingress) {
        "ingress"
    } else {
        "egress"
    };
    move |source| Error::Attach {
        program: p.name(),
        ifname: ifname.to_string(),
        attach,
        source: Box::new(source),
    }
}

/// Where the pinned TCX link of `hook` on `ifname` lives under `pin_dir`.
fn tcx_pin(pin_dir: &Path, ifname: &str, hook: Hook) -> PathBuf {
    pin_dir
        .join("links")
        .join(format!("{ifname}_{}", hook.name()))
}

/// Whether program `prog_id` uses the map with id `map_id`: how a program
/// of this datapath (of any load from the same pins) is told from another.
fn uses_map(prog_id: u32, map_id: u32) -> Result<bool, Error> {
    let ids = sys::prog_map_ids(prog_id).map_err(|source| Error::Syscall {
        call: "bpf(BPF_OBJ_GET_INFO_BY_FD) of an attached program",
        source,
    })?;
    Ok(ids.is_some_and(|ids| ids.contains(&map_id)))
}

/// How each of `HOOKS` is attached on link `index` (named `ifname`):
/// programs count when they use the `pilus_calls` map with id `calls`;
/// TCX pins are looked for under `pin_dir`.
fn hook_states(
    calls: u32,
    pin_dir: Option<&Path>,
    nl: &mut Netlink,
    index: u32,
    ifname: &str,
) -> Result<[HookState; 2], Error> {
    let mut states = [HookState::default(); 2];
    for (hook, state) in HOOKS.iter().zip(states.iter_mut()) {
        let filters = nl
            .bpf_filters(index, hook.tc)
            .map_err(netlink_err(ifname))?;
        for f in filters {
            if f.direct_action && f.name.as_deref() == Some(hook.program.name()) {
                if let Some(id) = f.prog_id {
                    state.tc |= uses_map(id, calls)?;
                }
            }
        }
        if let Some(dir) = pin_dir {
            let path = tcx_pin(dir, ifname, *hook);
            let link = sys::pinned_tcx_link(&path).map_err(|source| Error::Bpffs {
                path: path.clone(),
                source,
            })?;
            if let Some(l) = link {
                let here = l.ifindex == index && l.ingress == (hook.tc == TcHook::Ingress);
                state.tcx = here && uses_map(l.prog_id, calls)?;
            }
        }
    }
    Ok(states)
}

/// One hook of a device as `pilus doctor` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookStatus {
    /// The program that belongs there (`from_container`, ...).
    pub program: &'static str,
    /// `ingress` or `egress`.
    pub hook: &'static str,
    /// This datapath's program runs there (a `cls_bpf` filter, or a TCX
    /// link pinned for it).
    pub attached: bool,
    /// The BPF filters found on the hook, as `name prio N handle H id I`:
    /// the evidence when `attached` is false.
    pub filters: Vec<String>,
}

fn describe_filters(
    nl: &mut Netlink,
    index: u32,
    hook: TcHook,
    ifname: &str,
) -> Result<Vec<String>, Error> {
    let filters = nl.bpf_filters(index, hook).map_err(netlink_err(ifname))?;
    Ok(filters
        .iter()
        .map(|f| {
            format!(
                "{} prio {} handle {:#x}{}",
                f.name.as_deref().unwrap_or("(unnamed)"),
                f.priority,
                f.handle,
                f.prog_id.map(|id| format!(" id {id}")).unwrap_or_default()
            )
        })
        .collect())
}

/// The hooks of the endpoint veth `ifname` (in the calling thread's
/// namespace): whether each runs this datapath's program, judged as
/// [`Datapath::endpoint_attached`] judges it. `None` if there is no such
/// link.
pub(crate) fn endpoint_hooks(
    calls: u32,
    pin_dir: &Path,
    ifname: &str,
) -> Result<Option<Vec<HookStatus>>, Error> {
    let mut nl = Netlink::open().map_err(netlink_err(ifname))?;
    let Some(link) = nl.link(ifname).map_err(netlink_err(ifname))? else {
        return Ok(None);
    };
    let states = hook_states(calls, Some(pin_dir), &mut nl, link.index, ifname)?;
    let mut out = Vec::new();
    for (hook, state) in HOOKS.iter().zip(states) {
        out.push(HookStatus {
            program: hook.program.name(),
            hook: hook.name(),
            attached: state.attached(),
            filters: describe_filters(&mut nl, link.index, hook.tc, ifname)?,
        });
    }
    Ok(Some(out))
}

/// The hooks of the node device `ifname` in `role`: whether each has the
/// filter [`Datapath::attach_node_device`] puts there, running a program
/// that uses the map with id `ours` (node programs make no tail calls: the
/// caller passes a map every node program uses, the events ring buffer).
/// `None` if there is no such link.
pub(crate) fn device_hooks(
    ours: u32,
    ifname: &str,
    role: NodeDevice,
) -> Result<Option<Vec<HookStatus>>, Error> {
    let mut nl = Netlink::open().map_err(netlink_err(ifname))?;
    let Some(link) = nl.link(ifname).map_err(netlink_err(ifname))? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for &(program, hook) in role.hooks() {
        let mut attached = false;
        for f in nl
            .bpf_filters(link.index, hook)
            .map_err(netlink_err(ifname))?
        {
            if f.direct_action && f.name.as_deref() == Some(program.name()) {
                if let Some(id) = f.prog_id {
                    attached |= uses_map(id, ours)?;
                }
            }
        }
        out.push(HookStatus {
            program: program.name(),
            hook: hook.name(),
            attached,
            filters: describe_filters(&mut nl, link.index, hook, ifname)?,
        });
    }
    Ok(Some(out))
}

fn link_index(nl: &mut Netlink, ifname: &str) -> Result<u32, Error> {
    nl.link(ifname)
        .map_err(netlink_err(ifname))?
        .map(|l| l.index)
        .ok_or_else(|| Error::NoSuchLink {
            ifname: ifname.to_string(),
        })
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

/// A device of the node itself, and the programs it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeDevice {
    /// The VXLAN device (tunnel mode): `from_overlay` on ingress.
    Overlay,
    /// The uplink (direct routing): `from_netdev` on ingress, `to_netdev`
    /// on egress.
    Uplink,
}

impl NodeDevice {
    fn hooks(self) -> &'static [(Program, TcHook)] {
        match self {
            NodeDevice::Overlay => &[(Program::FromOverlay, TcHook::Ingress)],
            NodeDevice::Uplink => &[
                (Program::FromNetdev, TcHook::Ingress),
                (Program::ToNetdev, TcHook::Egress),
            ],
        }
    }
}

impl Datapath {
    /// Attaches the node programs of `role` to `ifname` (in the calling
    /// thread's namespace) as lasting tc filters, replacing in place what
    /// an earlier agent put there: the agent calls this at every start, so
    /// the devices always run this build's programs, without a gap.
    pub fn attach_node_device(&self, ifname: &str, role: NodeDevice) -> Result<(), Error> {
        let mut nl = Netlink::open().map_err(netlink_err(ifname))?;
        let index = link_index(&mut nl, ifname)?;
        nl.add_clsact(index).map_err(netlink_err(ifname))?;
        for &(program, hook) in role.hooks() {
            let fd = self.program_fd(program)?;
            let slot = FilterSlot {
                hook,
                priority: FILTER_PRIORITY,
                handle: FILTER_HANDLE,
            };
            nl.put_bpf_filter(index, slot, fd, program.name())
                .map_err(netlink_err(ifname))?;
        }
        tracing::debug!(ifname, role = ?role, "node programs attached");
        Ok(())
    }

    /// Removes what [`attach_node_device`](Self::attach_node_device) put on
    /// `ifname`; a missing device or filter is fine.
    pub fn detach_node_device(&self, ifname: &str, role: NodeDevice) -> Result<(), Error> {
        let mut nl = Netlink::open().map_err(netlink_err(ifname))?;
        let Some(link) = nl.link(ifname).map_err(netlink_err(ifname))? else {
            return Ok(());
        };
        for &(_, hook) in role.hooks() {
            let slot = FilterSlot {
                hook,
                priority: FILTER_PRIORITY,
                handle: FILTER_HANDLE,
            };
            nl.delete_bpf_filter(link.index, slot)
                .map_err(netlink_err(ifname))?;
        }
        Ok(())
    }
}
