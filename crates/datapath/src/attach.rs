//! Attaching the already-loaded pod programs to a pod's host-side veth:
//! TCX where the kernel has it (6.6+), a clsact qdisc with netlink filters
//! otherwise. Attaching re-verifies nothing.

use crate::{loader::Program, Datapath, Error};
use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{self, SchedClassifierLink, TcAttachOptions},
    LinkOrder, ProgramError, TcAttachType,
};
use std::path::PathBuf;

/// The two links of one endpoint; dropping this detaches both.
pub struct EndpointLinks {
    pub ifname: String,
    /// How the programs were attached: "tcx" or "netlink".
    pub mode: &'static str,
    _from_container: SchedClassifierLink,
    _to_container: SchedClassifierLink,
}

impl Datapath {
    /// Attaches `from_container` (tc ingress) and `to_container` (tc egress) to
    /// the host-side veth `ifname`, resolved in the calling thread's network
    /// namespace.
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

    /// Where the pinned links of host-side veth `ifname` live.
    fn link_pins(&self, ifname: &str) -> Result<[(Program, TcAttachType, PathBuf); 2], Error> {
        let dir = self.pin_dir().ok_or(Error::NotPinned)?.join("links");
        Ok([
            (
                Program::FromContainer,
                TcAttachType::Ingress,
                dir.join(format!("{ifname}_ingress")),
            ),
            (
                Program::ToContainer,
                TcAttachType::Egress,
                dir.join(format!("{ifname}_egress")),
            ),
        ])
    }

    /// Attaches with TCX and pins both links under `<pin dir>/links/`, so
    /// they outlive this process: an agent that exits or restarts leaves
    /// the pod's traffic running. A stale pin of the same name (a deleted
    /// veth that had this name) is replaced.
    pub fn attach_endpoint_pinned(&mut self, ifname: &str) -> Result<(), Error> {
        let pins = self.link_pins(ifname)?;
        if let Some(dir) = pins[0].2.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Bpffs {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        for (p, at, path) in pins {
            let _ = std::fs::remove_file(&path);
            let (link, _) = self.attach_one(p, ifname, at)?;
            let pin_err = |source: Box<dyn std::error::Error + Send + Sync>| Error::PinLink {
                program: p.name(),
                ifname: ifname.to_string(),
                path: path.clone(),
                source,
            };
            // Only a TCX link is a BPF link that can be pinned.
            let fd = FdLink::try_from(link).map_err(|e| pin_err(Box::new(e)))?;
            fd.pin(&path).map_err(|e| pin_err(Box::new(e)))?;
        }
        Ok(())
    }

    /// Whether both links of `ifname` are pinned (an endpoint attached by an
    /// agent before a restart).
    pub fn endpoint_links_pinned(&self, ifname: &str) -> bool {
        self.link_pins(ifname)
            .map(|pins| {
                pins.iter()
                    .all(|(_, _, path)| PinnedLink::from_pin(path).is_ok())
            })
            .unwrap_or(false)
    }

    /// Detaches `ifname`'s pinned links by removing their pins (missing
    /// ones are fine: deleting is idempotent).
    pub fn detach_endpoint_pinned(&self, ifname: &str) -> Result<(), Error> {
        for (_, _, path) in self.link_pins(ifname)? {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::Bpffs { path, source }),
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
        let attach = if matches!(at, TcAttachType::Ingress) {
            "ingress"
        } else {
            "egress"
        };
        let err = |source: ProgramError| Error::Attach {
            program: p.name(),
            ifname: ifname.to_string(),
            attach,
            source: Box::new(source),
        };
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
        let link = prog.take_link(id).map_err(err)?;
        Ok((link, mode))
    }
}
