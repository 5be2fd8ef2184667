//! Attaching the already-loaded pod programs to a pod's host-side veth:
//! TCX where the kernel has it (6.6+), a clsact qdisc with netlink filters
//! otherwise. Attaching re-verifies nothing.

use crate::{loader::Program, Datapath, Error};
use aya::programs::{
    tc::{self, SchedClassifierLink, TcAttachOptions},
    LinkOrder, ProgramError, TcAttachType,
};

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
