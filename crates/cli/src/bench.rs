//! `pilus bench datapath`: ns/packet of the pod programs under
//! BPF_PROG_TEST_RUN, against an empty classifier measured in the same run.

use crate::Output;
use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Subcommand};
use pilus_abi::{consts::*, Be32, EndpointInfo, IpcacheValue};
use pilus_datapath::{
    testrun::{verdict_name, Floor, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    Datapath, LoadOptions, NodeConfig, PodCidr, PolicyEntry, Program,
};
use pilus_netns::NetNs;
use pilus_packet::{tcp_flags::*, Mac, PacketBuilder};
use serde::Serialize;
use std::net::Ipv4Addr;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// ns/packet of the pod programs (BPF_PROG_TEST_RUN) vs. an empty classifier.
    Datapath(DatapathArgs),
    /// Policy change → enforced latency and agent memory at 1,000 endpoints
    /// and 1,000 rules (starts a private pilusd).
    Policy(crate::bench_policy::PolicyArgs),
    /// CNI ADD/DEL latency of pilus-cni over 100 pods (one-node lab with a
    /// private pilusd) vs. in-process veth plumbing and a bare plugin exec.
    Cni(crate::bench_cni::CniArgs),
}

#[derive(Args, Debug)]
pub struct DatapathArgs {
    /// Runs per case (the kernel's repeat count, or calls for per-call cases).
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Policy entries loaded while measuring.
    #[arg(long, default_value_t = 10_000)]
    policy_entries: u32,
    /// Only the per-repeat cases (skips the slower per-call ones).
    #[arg(long)]
    repeat_only: bool,
}

#[derive(Serialize)]
struct Case {
    name: &'static str,
    /// "repeat": BPF_PROG_TEST_RUN with the kernel repeating one packet
    /// (median of 5 batches of N/5);
    /// "per-call": N runs with repeat=1 on fresh packets (for paths that
    /// change the packet or the maps on every run).
    method: &'static str,
    runs: u32,
    ns_per_packet: f64,
    /// ns/packet divided by the empty classifier's, measured the same way.
    ratio_to_empty: f64,
    verdict: &'static str,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    policy_entries: u32,
    cases: Vec<Case>,
    target_established_ns: f64,
    established_meets_target: bool,
}

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
/// Flows kept below the conntrack map's size while creating new ones.
const CT_FLUSH_EVERY: u32 = 100_000;

pub fn run(cmd: BenchCommand, output: Output) -> Result<()> {
    match cmd {
        BenchCommand::Datapath(args) => datapath(args, output),
        BenchCommand::Policy(args) => crate::bench_policy::run(args, output),
        BenchCommand::Cni(args) => crate::bench_cni::run(args, output),
    }
}

struct Bench {
    dp: Datapath,
    floor: Floor,
    a: EndpointInfo,
    // Dropped last: the veths the test runs' ifindexes name live here.
    ns: NetNs,
}

impl Bench {
    fn setup(policy_entries: u32) -> Result<Bench> {
        ensure!(
            unsafe { libc::geteuid() } == 0,
            "pilus bench datapath needs root (BPF_PROG_TEST_RUN)"
        );
        // A benchmark killed by a signal never ran its guards: sweep its namespace.
        pilus_netns::remove_stale("pbench")?;
        let ns = NetNs::new("pbench").context("creating the benchmark namespace")?;
        for (host, peer) in [("lxca", "pa"), ("lxcb", "pb")] {
            ns.ip(&["link", "add", host, "type", "veth", "peer", "name", peer])?;
        }
        let mut dp = Datapath::load(&LoadOptions {
            node: NodeConfig {
                router_ip4: ROUTER,
                pod_cidr: PodCidr::new(Ipv4Addr::new(198, 18, 0, 0), 16).expect("pod CIDR"),
                ..Default::default()
            },
            pin_dir: None,
            ..Default::default()
        })?;
        let floor = Floor::load()?;
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
        let a = ep(ns.ifindex("lxca")?, IP_A, ID_A, 10, MAC_A, NODE_MAC_A);
        let b = ep(ns.ifindex("lxcb")?, IP_B, ID_B, 20, MAC_B, NODE_MAC_B);
        dp.upsert_endpoint(&a)?;
        dp.upsert_endpoint(&b)?;
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
            )?;
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
        dp.insert_policy(&rule(10, DIR_EGRESS, ID_B, (80, 80)))?;
        dp.insert_policy(&rule(10, DIR_EGRESS, ID_REMOTE, (443, 443)))?;
        dp.insert_policy(&rule(20, DIR_INGRESS, ID_A, (80, 80)))?;
        // The rest of the entries: other identities on B, as a large cluster would have.
        for i in 0..policy_entries.saturating_sub(3) {
            dp.insert_policy(&rule(20, DIR_INGRESS, 1000 + i, (80, 80)))?;
        }
        Ok(Bench { dp, floor, a, ns })
    }

    fn run(&self, p: Program, pkt: &[u8], repeat: u32) -> Result<(i32, f64)> {
        let out = self
            .ns
            .within(|| self.dp.test_run(p, self.a.ifindex, pkt, repeat))??;
        Ok((out.verdict, out.ns_per_run as f64))
    }

    /// The median of BATCHES runs of `repeat / BATCHES` each: a VM's steal
    /// time skews single runs by tens of ns, the median barely moves.
    fn run_median(&self, p: Program, pkt: &[u8], repeat: u32) -> Result<(i32, f64)> {
        let mut verdict = 0;
        let mut v = Vec::new();
        for _ in 0..BATCHES {
            let (vd, ns) = self.run(p, pkt, (repeat / BATCHES).max(1))?;
            verdict = vd;
            v.push(ns);
        }
        Ok((verdict, median(v)))
    }

    fn floor(&self, pkt: &[u8], repeat: u32) -> Result<f64> {
        let mut v = Vec::new();
        for _ in 0..BATCHES {
            let r = (repeat / BATCHES).max(1);
            let out = self
                .ns
                .within(|| self.floor.test_run(self.a.ifindex, pkt, r))??;
            v.push(out.ns_per_run as f64);
        }
        Ok(median(v))
    }

    /// Mean of `n` single runs, each on a packet `make` produces.
    fn per_call(
        &mut self,
        p: Option<Program>,
        n: u32,
        want: i32,
        mut make: impl FnMut(u32) -> Vec<u8>,
    ) -> Result<f64> {
        let mut total = 0f64;
        for i in 0..n {
            if p.is_some() && i > 0 && i % CT_FLUSH_EVERY == 0 {
                self.dp.flush_conntrack()?;
            }
            let pkt = make(i);
            let ns = match p {
                Some(p) => {
                    let (v, ns) = self.run(p, &pkt, 1)?;
                    if v != want {
                        bail!(
                            "run {i}: verdict {} where {} was expected",
                            verdict_name(v),
                            verdict_name(want)
                        );
                    }
                    ns
                }
                None => self.floor(&pkt, 1)?,
            };
            total += ns;
        }
        Ok(total / f64::from(n.max(1)))
    }
}

const BATCHES: u32 = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn a_to(dst: Ipv4Addr, dmac: Mac) -> PacketBuilder {
    PacketBuilder::new(MAC_A, dmac).ipv4(IP_A, dst)
}

fn datapath(args: DatapathArgs, output: Output) -> Result<()> {
    let mut b = Bench::setup(args.policy_entries)?;
    let n = args.repeat.max(1);
    let mut cases = Vec::new();
    let case = |name, method, runs, ns: f64, floor: f64, verdict: i32| Case {
        name,
        method,
        runs,
        ns_per_packet: (ns * 10.0).round() / 10.0,
        ratio_to_empty: (ns / floor.max(1.0) * 100.0).round() / 100.0,
        verdict: verdict_name(verdict),
    };

    // Floors, both ways of measuring.
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
    ensure!(
        b.run(Program::FromContainer, &syn, 1)?.0 == TC_ACT_OK,
        "SYN to remote not allowed"
    );
    let (v, ns) = b.run_median(Program::FromContainer, &est_stack, n)?;
    ensure!(
        v == TC_ACT_OK,
        "established to-stack verdict {}",
        verdict_name(v)
    );
    cases.push(case(
        "established TCP, to stack",
        "repeat",
        n,
        ns,
        floor_repeat,
        v,
    ));
    let established_ns = ns;

    // Drop: a new flow to a denied port, looked up against every entry.
    let denied = a_to(IP_B, NODE_MAC_A).tcp(40001, 81, SYN).build();
    let (v, ns) = b.run_median(Program::FromContainer, &denied, n)?;
    ensure!(v == TC_ACT_SHOT, "denied verdict {}", verdict_name(v));
    cases.push(case(
        "drop (policy, new flow)",
        "repeat",
        n,
        ns,
        floor_repeat,
        v,
    ));

    if args.repeat_only {
        return print(report(args.policy_entries, established_ns, cases), output);
    }

    // Per-call cases: local delivery rewrites TTL and MACs, and a new flow
    // writes conntrack, so each run needs a fresh packet.
    let floor_call = b.per_call(None, n, TC_ACT_OK, |_| est_stack.clone())?;
    cases.push(case(
        "empty classifier",
        "per-call",
        n,
        floor_call,
        floor_call,
        TC_ACT_OK,
    ));

    let syn_b = a_to(IP_B, NODE_MAC_A).tcp(40002, 80, SYN).build();
    ensure!(
        b.run(Program::FromContainer, &syn_b, 1)?.0 == TC_ACT_REDIRECT,
        "SYN A->B:80 not delivered"
    );
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

    print(report(args.policy_entries, established_ns, cases), output)
}

fn report(policy_entries: u32, established_ns: f64, cases: Vec<Case>) -> Report {
    Report {
        bench: "datapath",
        policy_entries,
        target_established_ns: 100.0,
        established_meets_target: established_ns <= 100.0,
        cases,
    }
}

fn print(report: Report, output: Output) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Human => {
            println!(
                "pilus bench datapath: BPF_PROG_TEST_RUN, {} policy entries",
                report.policy_entries
            );
            println!(
                "{:<42} {:<9} {:>9} {:>10} {:>8}  verdict",
                "case", "method", "runs", "ns/packet", "x empty"
            );
            for c in &report.cases {
                println!(
                    "{:<42} {:<9} {:>9} {:>10.1} {:>8.2}  {}",
                    c.name, c.method, c.runs, c.ns_per_packet, c.ratio_to_empty, c.verdict
                );
            }
            println!(
                "target: established <= {} ns/packet: {}",
                report.target_established_ns,
                if report.established_meets_target {
                    "met"
                } else {
                    "MISSED"
                }
            );
        }
    }
    Ok(())
}
