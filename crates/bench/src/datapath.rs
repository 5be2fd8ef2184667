//! ns/packet of the pod programs under BPF_PROG_TEST_RUN, against an empty
//! classifier (`bench_empty.o`) measured the same way in the same run.
//!
//! The datapath is loaded with private maps (no pins), the monitor at
//! pilusd's default aggregation (medium), two endpoints on
//! veths in a scratch namespace (BPF_PROG_TEST_RUN resolves the ifindex
//! there), both selected for ingress and egress, and `policy_entries`
//! entries. Every case checks its verdict, so a case cannot silently
//! measure the wrong path.
//!
//! Two methods, because BPF_PROG_TEST_RUN's `repeat` reruns one skb
//! without resetting it: `repeat` (the kernel repeats one packet; right
//! for paths that leave the packet and the maps as they were) and
//! `per-call` (a fresh packet per run with `repeat=1`; needed where the
//! program rewrites the packet or must see a new flow each time).
//!
//! Services: a frontend on A's way to B (local backend) and one to the
//! remote address (to the stack), so an established flow to a service is
//! measured beside the same flow to the pod itself. A service packet is
//! rewritten (DNAT), so those cases are per-call.

use crate::{error::Context, stats::round, Error};
use pilus_abi::{
    consts::*, Be16, Be32, EndpointInfo, IpcacheValue, Lb4Backend, Lb4Key, Lb4Service,
};
use pilus_datapath::{
    testrun::{verdict_name, Floor, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    Datapath, LoadOptions, MonitorSettings, NodeConfig, PodCidr, PolicyEntry, Program,
};
use pilus_netns::NetNs;
use pilus_packet::{tcp_flags::*, Mac, PacketBuilder};
use serde::Serialize;
use std::net::Ipv4Addr;

/// What to measure.
#[derive(Clone, Debug, Serialize)]
pub struct Options {
    /// Runs per case (the kernel's repeat count, or calls for per-call
    /// cases).
    pub repeat: u32,
    /// Policy entries loaded while measuring.
    pub policy_entries: u32,
    /// Only the `repeat` cases (skips the slower per-call ones).
    pub repeat_only: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            repeat: 1_000_000,
            policy_entries: 10_000,
            repeat_only: false,
        }
    }
}

/// One measured case.
#[derive(Clone, Debug, Serialize)]
pub struct Case {
    pub name: &'static str,
    /// "repeat": BPF_PROG_TEST_RUN with the kernel repeating one packet
    /// (median of 5 batches of N/5); "per-call": N runs with repeat=1 on
    /// fresh packets (for paths that change the packet or the maps on
    /// every run).
    pub method: &'static str,
    pub runs: u32,
    pub ns_per_packet: f64,
    /// ns/packet divided by the empty classifier's, measured the same way.
    pub ratio_to_empty: f64,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub policy_entries: u32,
    pub cases: Vec<Case>,
    pub target_established_ns: f64,
    pub established_meets_target: bool,
    /// Issue 11's target: the established flow (to stack, repeat) at most
    /// this many times the empty classifier of the same run.
    pub target_established_ratio: f64,
    pub established_meets_ratio: bool,
}

/// The established path's target, in ns/packet.
pub const TARGET_ESTABLISHED_NS: f64 = 100.0;
/// The established path's target as a ratio to the empty classifier.
pub const TARGET_ESTABLISHED_RATIO: f64 = 3.0;

const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 20);
const IP_REMOTE: Ipv4Addr = Ipv4Addr::new(198, 19, 5, 5);
const MAC_A: Mac = [2, 0, 0, 0, 0, 0xa];
const MAC_B: Mac = [2, 0, 0, 0, 0, 0xb];
const NODE_MAC_A: Mac = [6, 0, 0, 0, 0, 0xa];
const NODE_MAC_B: Mac = [6, 0, 0, 0, 0, 0xb];
const ID_A: u32 = 300;
const ID_B: u32 = 400;
const ID_REMOTE: u32 = IDENTITY_LOCAL_MIN + 1;
/// Frontends: one whose backend is B:80, one whose backend is the remote
/// address's 443.
const VIP_LOCAL: Ipv4Addr = Ipv4Addr::new(198, 19, 128, 10);
const VIP_REMOTE: Ipv4Addr = Ipv4Addr::new(198, 19, 128, 11);
/// Flows kept below the conntrack map's size while creating new ones.
const CT_FLUSH_EVERY: u32 = 100_000;
/// A VM's steal time skews single runs by tens of ns; the median of a few
/// batches barely moves.
const BATCHES: u32 = 5;
/// The scratch namespace's prefix (swept if a killed run left it).
const PREFIX: &str = "pbench";

struct Bench {
    dp: Datapath,
    floor: Floor,
    a: EndpointInfo,
    // Dropped last: the veths the test runs' ifindexes name live here.
    ns: NetNs,
}

impl Bench {
    fn setup(policy_entries: u32) -> Result<Bench, Error> {
        // A benchmark killed by a signal never ran its guards: sweep its
        // namespace.
        pilus_netns::remove_stale(PREFIX).context("removing a killed run's namespace")?;
        let ns = NetNs::new(PREFIX).context("creating the benchmark namespace")?;
        for (host, peer) in [("lxca", "pa"), ("lxcb", "pb")] {
            ns.ip(&["link", "add", host, "type", "veth", "peer", "name", peer])
                .context("creating the endpoints' veths")?;
        }
        let mut dp = Datapath::load(&LoadOptions {
            node: NodeConfig {
                router_ip4: ROUTER,
                pod_cidr: PodCidr::new(Ipv4Addr::new(198, 18, 0, 0), 16).expect("pod CIDR"),
                ..Default::default()
            },
            pin_dir: None,
            ..Default::default()
        })
        .context("loading the datapath (private maps)")?;
        // The monitor as pilusd runs it by default (medium aggregation:
        // an established flow's packets are traced only when they bring
        // news). The private map starts zeroed, which reads as `none`: a
        // trace at every point of every packet, on a ring nobody drains.
        dp.set_monitor_settings(MonitorSettings::default())
            .context("setting the monitor's default aggregation")?;
        let floor = Floor::load().context("loading the empty classifier")?;
        let ep = |ifindex, ip, id, ep_id, mac, node_mac| EndpointInfo {
            ifindex,
            sec_identity: id,
            ip4: Be32::from(ip),
            ep_id,
            flags: EP_F_INGRESS_ENFORCED | EP_F_EGRESS_ENFORCED,
            mac,
            node_mac,
            _pad: 0,
        };
        let ifindex = |name| ns.ifindex(name).context(format!("the ifindex of {name}"));
        let a = ep(ifindex("lxca")?, IP_A, ID_A, 10, MAC_A, NODE_MAC_A);
        let b = ep(ifindex("lxcb")?, IP_B, ID_B, 20, MAC_B, NODE_MAC_B);
        let what = "writing the benchmark's endpoints, ipcache and policy";
        dp.upsert_endpoint(&a).context(what)?;
        dp.upsert_endpoint(&b).context(what)?;
        for (ip, len, id) in [
            (IP_A, 32, ID_A),
            (IP_B, 32, ID_B),
            (IP_REMOTE, 16, ID_REMOTE),
        ] {
            dp.upsert_ipcache(
                ip,
                len,
                &IpcacheValue {
                    sec_identity: id,
                    ..Default::default()
                },
            )
            .context(what)?;
        }
        let rule = |ep_id, dir, identity, ports| PolicyEntry {
            ep_id,
            direction: dir,
            identity,
            protocol: Some(6),
            ports: Some(ports),
            deny: false,
            cookie: 0,
        };
        dp.insert_policy(&rule(10, DIR_EGRESS, ID_B, (80, 80)))
            .context(what)?;
        dp.insert_policy(&rule(10, DIR_EGRESS, ID_REMOTE, (443, 443)))
            .context(what)?;
        dp.insert_policy(&rule(20, DIR_INGRESS, ID_A, (80, 80)))
            .context(what)?;
        for (id, vip, backend, port) in [(1, VIP_LOCAL, IP_B, 80), (2, VIP_REMOTE, IP_REMOTE, 443)]
        {
            let key = Lb4Key {
                address: Be32::from(vip),
                dport: Be16::new(port),
                protocol: 6,
                scope: 0,
            };
            let svc = Lb4Service {
                id,
                generation: 1,
                svc_type: LB_TYPE_CLUSTER_IP,
                algorithm: LB_ALG_RANDOM,
                ..Default::default()
            };
            let be = Lb4Backend {
                address: Be32::from(backend),
                port: Be16::new(port),
                state: LB_BACKEND_ACTIVE,
                _pad: 0,
            };
            dp.put_lb_frontend(&key, svc, &[(id, be)]).context(what)?;
        }
        // The rest of the entries: other identities on B, as a large
        // cluster would have.
        for i in 0..policy_entries.saturating_sub(3) {
            dp.insert_policy(&rule(20, DIR_INGRESS, 1000 + i, (80, 80)))
                .context(what)?;
        }
        Ok(Bench { dp, floor, a, ns })
    }

    fn run(&self, p: Program, pkt: &[u8], repeat: u32) -> Result<(i32, f64), Error> {
        let out = self
            .ns
            .within(|| self.dp.test_run(p, self.a.ifindex, pkt, repeat))
            .context("entering the benchmark namespace")?
            .context("BPF_PROG_TEST_RUN")?;
        Ok((out.verdict, out.ns_per_run as f64))
    }

    /// The median of BATCHES runs of `repeat / BATCHES` each.
    fn run_median(&self, p: Program, pkt: &[u8], repeat: u32) -> Result<(i32, f64), Error> {
        let mut verdict = 0;
        let mut v = Vec::new();
        for _ in 0..BATCHES {
            let (vd, ns) = self.run(p, pkt, (repeat / BATCHES).max(1))?;
            verdict = vd;
            v.push(ns);
        }
        Ok((verdict, median(v)))
    }

    fn floor(&self, pkt: &[u8], repeat: u32) -> Result<f64, Error> {
        let mut v = Vec::new();
        for _ in 0..BATCHES {
            let r = (repeat / BATCHES).max(1);
            let out = self
                .ns
                .within(|| self.floor.test_run(self.a.ifindex, pkt, r))
                .context("entering the benchmark namespace")?
                .context("BPF_PROG_TEST_RUN of the empty classifier")?;
            v.push(out.ns_per_run as f64);
        }
        Ok(median(v))
    }

    /// Mean of `n` single runs, each on a packet `make` produces (`None`:
    /// the empty classifier).
    fn per_call(
        &mut self,
        p: Option<Program>,
        n: u32,
        want: i32,
        mut make: impl FnMut(u32) -> Vec<u8>,
    ) -> Result<f64, Error> {
        let mut total = 0f64;
        for i in 0..n {
            if p.is_some() && i > 0 && i % CT_FLUSH_EVERY == 0 {
                self.dp
                    .flush_conntrack()
                    .context("flushing conntrack between batches of new flows")?;
            }
            let pkt = make(i);
            let ns = match p {
                Some(p) => {
                    let (v, ns) = self.run(p, &pkt, 1)?;
                    expect_verdict(&format!("per-call run {i}"), v, want)?;
                    ns
                }
                None => self.floor(&pkt, 1)?,
            };
            total += ns;
        }
        Ok(total / f64::from(n.max(1)))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn expect_verdict(case: &str, got: i32, want: i32) -> Result<(), Error> {
    if got == want {
        return Ok(());
    }
    Err(Error::Unexpected {
        what: format!(
            "{case}: verdict {} where {} was expected",
            verdict_name(got),
            verdict_name(want)
        ),
    })
}

fn a_to(dst: Ipv4Addr, dmac: Mac) -> PacketBuilder {
    PacketBuilder::new(MAC_A, dmac).ipv4(IP_A, dst)
}

fn case(
    name: &'static str,
    method: &'static str,
    runs: u32,
    ns: f64,
    floor: f64,
    verdict: i32,
) -> Case {
    Case {
        name,
        method,
        runs,
        ns_per_packet: round(ns, 1),
        ratio_to_empty: round(ns / floor.max(1.0), 2),
        verdict: verdict_name(verdict),
    }
}

/// Runs the benchmark. Needs root (BPF_PROG_TEST_RUN, a namespace).
pub fn run(opts: &Options) -> Result<Report, Error> {
    crate::require_root("datapath", "BPF_PROG_TEST_RUN, a namespace")?;
    let mut b = Bench::setup(opts.policy_entries)?;
    let n = opts.repeat.max(1);
    let mut cases = Vec::new();
    tracing::info!(
        runs = n,
        policy_entries = opts.policy_entries,
        "measuring the repeat cases"
    );

    // The floor first, measured the way the cases it divides are.
    let est_stack = a_to(IP_REMOTE, NODE_MAC_A)
        .tcp(40000, 443, ACK)
        .payload(&[0; 64])
        .build();
    let floor_repeat = b.floor(&est_stack, n)?;
    cases.push(case(
        "empty classifier",
        "repeat",
        n,
        floor_repeat,
        floor_repeat,
        TC_ACT_OK,
    ));

    // Established flow to the stack: the packet is not rewritten, so one
    // BPF_PROG_TEST_RUN can repeat it.
    let syn = a_to(IP_REMOTE, NODE_MAC_A).tcp(40000, 443, SYN).build();
    let (v, _) = b.run(Program::FromContainer, &syn, 1)?;
    expect_verdict("SYN to the remote, opening the flow", v, TC_ACT_OK)?;
    let (v, established_ns) = b.run_median(Program::FromContainer, &est_stack, n)?;
    expect_verdict("established TCP, to stack", v, TC_ACT_OK)?;
    cases.push(case(
        "established TCP, to stack",
        "repeat",
        n,
        established_ns,
        floor_repeat,
        v,
    ));

    // Drop: a new flow to a denied port, looked up against every entry.
    let denied = a_to(IP_B, NODE_MAC_A).tcp(40001, 81, SYN).build();
    let (v, ns) = b.run_median(Program::FromContainer, &denied, n)?;
    expect_verdict("drop (policy, new flow)", v, TC_ACT_SHOT)?;
    cases.push(case(
        "drop (policy, new flow)",
        "repeat",
        n,
        ns,
        floor_repeat,
        v,
    ));

    if !opts.repeat_only {
        tracing::info!(runs = n, "measuring the per-call cases");
        per_call_cases(&mut b, n, &est_stack, &mut cases)?;
    }
    Ok(Report {
        bench: "datapath",
        policy_entries: opts.policy_entries,
        cases,
        target_established_ns: TARGET_ESTABLISHED_NS,
        established_meets_target: established_ns <= TARGET_ESTABLISHED_NS,
        target_established_ratio: TARGET_ESTABLISHED_RATIO,
        established_meets_ratio: established_ns <= TARGET_ESTABLISHED_RATIO * floor_repeat.max(1.0),
    })
}

/// Local delivery rewrites TTL and MACs, and a new flow writes conntrack,
/// so each run needs a fresh packet.
fn per_call_cases(
    b: &mut Bench,
    n: u32,
    est_stack: &[u8],
    cases: &mut Vec<Case>,
) -> Result<(), Error> {
    let floor_call = b.per_call(None, n, TC_ACT_OK, |_| est_stack.to_vec())?;
    cases.push(case(
        "empty classifier",
        "per-call",
        n,
        floor_call,
        floor_call,
        TC_ACT_OK,
    ));

    let syn_b = a_to(IP_B, NODE_MAC_A).tcp(40002, 80, SYN).build();
    let (v, _) = b.run(Program::FromContainer, &syn_b, 1)?;
    expect_verdict("SYN A->B:80, opening the flow", v, TC_ACT_REDIRECT)?;
    let est_local = a_to(IP_B, NODE_MAC_A)
        .tcp(40002, 80, ACK)
        .payload(&[0; 64])
        .build();
    let ns = b.per_call(Some(Program::FromContainer), n, TC_ACT_REDIRECT, |_| {
        est_local.clone()
    })?;
    cases.push(case(
        "established TCP, local delivery",
        "per-call",
        n,
        ns,
        floor_call,
        TC_ACT_REDIRECT,
    ));

    // The same two paths through a frontend: each packet is translated.
    let est_remote = a_to(IP_REMOTE, NODE_MAC_A)
        .tcp(40000, 443, ACK)
        .payload(&[0; 64])
        .build();
    let ns = b.per_call(Some(Program::FromContainer), n, TC_ACT_OK, |_| {
        est_remote.clone()
    })?;
    cases.push(case(
        "established TCP, to stack",
        "per-call",
        n,
        ns,
        floor_call,
        TC_ACT_OK,
    ));
    for (name, vip, port, verdict) in [
        (
            "established TCP to a service, local backend",
            VIP_LOCAL,
            80,
            TC_ACT_REDIRECT,
        ),
        (
            "established TCP to a service, remote backend (to stack)",
            VIP_REMOTE,
            443,
            TC_ACT_OK,
        ),
    ] {
        let syn = a_to(vip, NODE_MAC_A).tcp(40100, port, SYN).build();
        let (v, _) = b.run(Program::FromContainer, &syn, 1)?;
        expect_verdict(&format!("{name}: SYN, opening the flow"), v, verdict)?;
        let est = a_to(vip, NODE_MAC_A)
            .tcp(40100, port, ACK)
            .payload(&[0; 64])
            .build();
        let ns = b.per_call(Some(Program::FromContainer), n, verdict, |_| est.clone())?;
        cases.push(case(name, "per-call", n, ns, floor_call, verdict));
    }

    let template = a_to(IP_B, NODE_MAC_A).tcp(1024, 80, SYN).build();
    let ns = b.per_call(Some(Program::FromContainer), n, TC_ACT_REDIRECT, |i| {
        // A new source port (and, past 64k, a new sequence of them after a
        // conntrack flush) makes every run a new flow.
        let mut pkt = template.clone();
        let sport = 1024 + (i % CT_FLUSH_EVERY.min(64_000)) as u16;
        pkt[34..36].copy_from_slice(&sport.to_be_bytes());
        pkt
    })?;
    cases.push(case(
        "new flow + policy lookup, local delivery",
        "per-call",
        n,
        ns,
        floor_call,
        TC_ACT_REDIRECT,
    ));
    Ok(())
}
