//! Traffic control for BPF classifiers: the `clsact` qdisc and
//! direct-action `cls_bpf` filters on its two hooks, added by program fd,
//! listed, and deleted — what `tc qdisc add dev X clsact` and
//! `tc filter add dev X ingress pref 1 handle 1 bpf da fd N` do, without a
//! process per call.
//!
//! The filters and the qdisc belong to the device, not to the process that
//! added them: they stay until deleted or until the device goes.

use crate::{Error, Netlink};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption},
    RouteNetlinkMessage,
};
use std::os::fd::{AsRawFd, BorrowedFd};

/// `ETH_P_ALL`: a filter that sees every packet, whatever its ethertype.
const ETH_P_ALL: u16 = 0x0003;

/// One of the two hooks of the `clsact` qdisc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcHook {
    /// Packets the device receives.
    Ingress,
    /// Packets the device transmits.
    Egress,
}

impl TcHook {
    /// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS/EGRESS)`, the filter parent.
    fn parent(self) -> TcHandle {
        TcHandle {
            major: TcHandle::CLSACT.major,
            minor: match self {
                TcHook::Ingress => TcHandle::MIN_INGRESS,
                TcHook::Egress => TcHandle::MIN_EGRESS,
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TcHook::Ingress => "ingress",
            TcHook::Egress => "egress",
        }
    }
}

/// A `cls_bpf` filter as a dump reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfFilter {
    pub hook: TcHook,
    /// `pref`: the lower, the earlier it runs.
    pub priority: u16,
    pub handle: u32,
    /// The program's name as the filter was given it (`TCA_BPF_NAME`).
    pub name: Option<String>,
    /// The id of the program that runs (`TCA_BPF_ID`).
    pub prog_id: Option<u32>,
    /// The program's verdict is the filter's (`da`, `TCA_BPF_FLAG_ACT_DIRECT`).
    pub direct_action: bool,
}

/// Where a filter goes: hook, priority and handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterSlot {
    pub hook: TcHook,
    pub priority: u16,
    pub handle: u32,
}

/// `tcm_info` of a filter: `TC_H_MAKE(prio << 16, htons(protocol))`.
fn filter_info(priority: u16, protocol: u16) -> u32 {
    (u32::from(priority) << 16) | u32::from(protocol.to_be())
}

fn tc_header(index: u32, parent: TcHandle, handle: TcHandle, info: u32) -> TcHeader {
    TcHeader {
        index: index as i32,
        parent,
        handle,
        info,
        ..Default::default()
    }
}

fn clsact_msg(index: u32) -> TcMessage {
    // The clsact qdisc is ffff:0 under the ingress parent (TC_H_CLSACT).
    let handle = TcHandle {
        major: TcHandle::CLSACT.major,
        minor: 0,
    };
    TcMessage::from_parts(
        tc_header(index, TcHandle::CLSACT, handle, 0),
        vec![TcAttribute::Kind("clsact".into())],
    )
}

fn slot_header(index: u32, slot: FilterSlot) -> TcHeader {
    tc_header(
        index,
        slot.hook.parent(),
        TcHandle::from(slot.handle),
        filter_info(slot.priority, ETH_P_ALL),
    )
}

fn bpf_filter_msg(index: u32, slot: FilterSlot, prog_fd: BorrowedFd<'_>, name: &str) -> TcMessage {
    TcMessage::from_parts(
        slot_header(index, slot),
        vec![
            TcAttribute::Kind("bpf".into()),
            TcAttribute::Options(vec![
                TcOption::Bpf(TcFilterBpfOption::ProgFd(prog_fd.as_raw_fd() as u32)),
                TcOption::Bpf(TcFilterBpfOption::ProgName(name.to_string())),
                TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
            ]),
        ],
    )
}

/// The `cls_bpf` filter in one message of a filter dump; `None` for the
/// messages that stand for a priority's classifier as a whole (no handle)
/// and for filters of other kinds.
fn bpf_filter_from(hook: TcHook, msg: &TcMessage) -> Option<BpfFilter> {
    let kind = msg.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k.as_str()),
        _ => None,
    });
    let handle = u32::from(msg.header.handle);
    if kind != Some("bpf") || handle == 0 {
        return None;
    }
    let mut filter = BpfFilter {
        hook,
        priority: (msg.header.info >> 16) as u16,
        handle,
        name: None,
        prog_id: None,
        direct_action: false,
    };
    for attr in &msg.attributes {
        let TcAttribute::Options(opts) = attr else {
            continue;
        };
        for opt in opts {
            match opt {
                TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => filter.name = Some(n.clone()),
                TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => filter.prog_id = Some(*id),
                TcOption::Bpf(TcFilterBpfOption::Flags(f)) => {
                    filter.direct_action = f.contains(TcBpfFlags::DirectAction)
                }
                _ => {}
            }
        }
    }
    Some(filter)
}

impl Netlink {
    /// Adds the `clsact` qdisc to link `index`. `Ok(false)` if it was
    /// already there (EEXIST), which is as good.
    pub fn add_clsact(&mut self, index: u32) -> Result<bool, Error> {
        match self.request(
            RouteNetlinkMessage::NewQueueDiscipline(clsact_msg(index)),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("add the clsact qdisc to link {index}"),
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Attaches the program `prog_fd` as a direct-action `cls_bpf` filter
    /// for every protocol at `slot`, named `name`. A filter already at that
    /// priority and handle is replaced in place (the kernel swaps the two
    /// under RCU, so packets see one or the other, never neither). Needs
    /// the `clsact` qdisc ([`Netlink::add_clsact`]).
    pub fn put_bpf_filter(
        &mut self,
        index: u32,
        slot: FilterSlot,
        prog_fd: BorrowedFd<'_>,
        name: &str,
    ) -> Result<(), Error> {
        self.request(
            RouteNetlinkMessage::NewTrafficFilter(bpf_filter_msg(index, slot, prog_fd, name)),
            NLM_F_CREATE,
            &|| {
                format!(
                    "attach {name} to link {index} ({} pref {} handle {})",
                    slot.hook.name(),
                    slot.priority,
                    slot.handle
                )
            },
        )?;
        Ok(())
    }

    /// The `cls_bpf` filters on one hook of link `index`, in the order
    /// they run. None if the link has no `clsact` qdisc, or no such link.
    pub fn bpf_filters(&mut self, index: u32, hook: TcHook) -> Result<Vec<BpfFilter>, Error> {
        let msg = TcMessage::from_parts(
            tc_header(index, hook.parent(), TcHandle::UNSPEC, 0),
            Vec::new(),
        );
        let replies = self.dump(RouteNetlinkMessage::GetTrafficFilter(msg), &|| {
            format!("list the {} filters of link {index}", hook.name())
        })?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficFilter(t) => bpf_filter_from(hook, t),
                _ => None,
            })
            .collect())
    }

    /// Deletes the filter at `slot`; `Ok(false)` if there was none there
    /// (or no such link).
    pub fn delete_bpf_filter(&mut self, index: u32, slot: FilterSlot) -> Result<bool, Error> {
        let msg = TcMessage::from_parts(
            slot_header(index, slot),
            vec![TcAttribute::Kind("bpf".into())],
        );
        match self.request(RouteNetlinkMessage::DelTrafficFilter(msg), 0, &|| {
            format!(
                "delete the {} filter pref {} handle {} of link {index}",
                slot.hook.name(),
                slot.priority,
                slot.handle
            )
        }) {
            Ok(_) => Ok(true),
            // ENOENT: no filter there; ENODEV: no link.
            Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::ENODEV)) => Ok(false),
            // No clsact qdisc on the link at all (so no filter either): the
            // kernel says EINVAL, with this extended ack.
            Err(Error::Kernel {
                detail: Some(d), ..
            }) if d.contains("Parent Qdisc doesn't exist") => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};
    use std::os::fd::AsFd;

    #[test]
    fn a_filter_is_for_every_protocol_at_its_priority() {
        // tc's own encoding of `pref 1 protocol all`.
        assert_eq!(filter_info(1, ETH_P_ALL), 0x0001_0300);
        assert_eq!(TcHook::Ingress.parent(), TcHandle::from(0xffff_fff2));
        assert_eq!(TcHook::Egress.parent(), TcHandle::from(0xffff_fff3));
    }

    #[test]
    fn the_filter_request_names_the_program_and_is_direct_action() {
        let fd = std::fs::File::open("/dev/null").unwrap();
        let slot = FilterSlot {
            hook: TcHook::Egress,
            priority: 1,
            handle: 1,
        };
        let msg = bpf_filter_msg(7, slot, fd.as_fd(), "to_container");
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        let back = TcMessage::parse(&buf).unwrap();
        assert_eq!(back.header.index, 7);
        assert_eq!(u32::from(back.header.handle), 1);
        let f = bpf_filter_from(TcHook::Egress, &back).expect("a bpf filter");
        assert_eq!(f.priority, 1);
        assert_eq!(f.name.as_deref(), Some("to_container"));
        assert!(f.direct_action);
    }

    #[test]
    fn a_classifier_without_a_handle_is_no_filter() {
        let msg = TcMessage::from_parts(
            tc_header(3, TcHook::Ingress.parent(), TcHandle::UNSPEC, 0x0001_0300),
            vec![TcAttribute::Kind("bpf".into())],
        );
        assert_eq!(bpf_filter_from(TcHook::Ingress, &msg), None);
        let mut flower = msg.clone();
        flower.header.handle = TcHandle::from(1);
        flower.attributes = vec![TcAttribute::Kind("flower".into())];
        assert_eq!(bpf_filter_from(TcHook::Ingress, &flower), None);
    }
}
