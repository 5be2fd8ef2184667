//! `pilus lab demo`: the newcomer's tour, told in a few short steps on a
//! real lab. Every claim it prints is checked: if traffic that should pass
//! is dropped (or the reverse), the demo fails instead of telling a story.

use crate::lab::{connect, describe};
use anyhow::{bail, Context, Result};
use pilus_api_types::{self as api, paths};
use pilus_lab::{
    serve::{Probe, Proto},
    Lab, Paths, Plan,
};
use std::time::{Duration, Instant};

const POLICY: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: backend-from-frontend
  namespace: demo
spec:
  endpointSelector:
    matchLabels:
      app: backend
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: frontend
    toPorts:
    - ports:
      - port: \"80\"
        protocol: TCP
";

const YES: Duration = Duration::from_secs(2);
const NO: Duration = Duration::from_millis(400);

/// Removes the lab however the demo ends.
struct Down(Paths);

impl Drop for Down {
    fn drop(&mut self) {
        if let Err(e) = Lab::down(&self.0) {
            eprintln!("pilus lab demo: tearing down: {e}");
        }
    }
}

fn step(n: u32, text: &str) {
    println!("\n[{n}/5] {text}");
}

fn expect(lab: &Lab, from: &str, to: &str, allowed: bool) -> Result<Probe> {
    let r = connect(
        lab,
        from,
        to,
        80,
        Proto::Tcp,
        if allowed { YES } else { NO },
    )?;
    println!("  {}", describe(from, to, 80, Proto::Tcp, &r));
    let got = matches!(r, Probe::Reply { .. });
    if got != allowed {
        bail!(
            "expected {from} -> {to} to be {}, but it was {}",
            if allowed { "allowed" } else { "denied" },
            if got { "allowed" } else { "denied" }
        );
    }
    Ok(r)
}

/// The newest monitor sequence number (events after it are new).
fn monitor_now(lab: &Lab, node: &str) -> Result<u64> {
    let b: api::MonitorBatch = lab
        .client(node)
        .get_json(&format!("{}?last=0", paths::MONITOR))?;
    Ok(b.next)
}

/// Prints the datapath's events (`pilus monitor`) for the first packet of
/// the flow from `from` to `to` port 80 seen after `since`.
fn show_path(
    lab: &Lab,
    node: &str,
    since: u64,
    from: &str,
    to: &str,
    want: api::MonitorKind,
) -> Result<()> {
    let (src, dst) = (lab.pod(from)?.ip, lab.pod(to)?.ip);
    // The agent drains the ring every 50 ms; give it a few ticks.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = Vec::new();
    let mut cursor = since;
    while Instant::now() < deadline {
        let b: api::MonitorBatch = lab
            .client(node)
            .get_json(&format!("{}?since={cursor}&wait_ms=200", paths::MONITOR))?;
        cursor = b.next;
        seen.extend(b.events.into_iter().filter(|e| {
            e.packet.src_ip == Some(src)
                && e.packet.dst_ip == Some(dst)
                && e.packet.dst_port == Some(80)
        }));
        if seen.iter().any(|e| e.kind == want) {
            break;
        }
    }
    let Some(first) = seen.iter().find(|e| e.kind == want) else {
        bail!("the monitor showed no {want:?} event for {from} -> {to}");
    };
    // The flow's first packet (the SYN): every event about it.
    let syn: Vec<_> = seen
        .iter()
        .filter(|e| {
            e.packet.src_port == first.packet.src_port
                && e.packet.tcp_flags == first.packet.tcp_flags
        })
        .collect();
    let eps: Vec<api::Endpoint> = lab.client(node).get_json(paths::ENDPOINTS)?;
    let host = |ip| {
        eps.iter()
            .find(|e| e.ipv4 == ip)
            .map_or("?".to_string(), |e| e.host_ifname.clone())
    };
    println!("  the SYN's path, as the datapath reported it (pilus monitor):");
    for e in syn {
        println!("    {}", pilus_monitor::format_line(e));
    }
    if want == api::MonitorKind::Trace {
        println!(
            "    i.e. {from} eth0 -> {} (tc: egress policy, conntrack) -> redirect -> {} -> {to} eth0",
            host(src),
            host(dst)
        );
    } else {
        println!(
            "    i.e. {from} eth0 -> {} (tc: {to}'s ingress policy, checked before delivery) -> dropped",
            host(src)
        );
    }
    Ok(())
}

fn trace_reason(lab: &Lab, node: &str, from: &str, to: &str) -> Result<()> {
    let t: api::Trace = lab.client(node).post_json(
        paths::TRACE,
        &api::TraceRequest {
            src: format!("demo/{from}"),
            dst: format!("demo/{to}"),
            port: 80,
            protocol: "TCP".into(),
        },
    )?;
    if let Some(i) = &t.ingress {
        println!("  why (pilus policy trace -s demo/{from} -d demo/{to} --dport 80/TCP):");
        if i.selected_by.is_empty() {
            println!("    ingress of {}: no policy selects it", i.endpoint);
        } else {
            println!(
                "    ingress of {} is selected by {}",
                i.endpoint,
                i.selected_by.join(", ")
            );
        }
        if i.matches.is_empty() {
            println!("    no rule allows app=db; default deny");
        }
        for m in &i.matches {
            println!(
                "    {} by {} ({})",
                if m.deny { "denied" } else { "allowed" },
                m.policy,
                m.rule
            );
        }
    }
    Ok(())
}

pub fn run(p: Paths) -> Result<()> {
    let started = Instant::now();
    println!("Pilus lab demo: a node, three pods, a policy. (Everything runs in network");
    println!("namespaces on this machine, addresses in 198.18.0.0/15, and is removed at the end.)");

    step(
        1,
        "Bring up a node (pilusd inside its own namespace) and 3 pods via pilus-cni",
    );
    let plan = Plan::new(&p.prefix, 1, 3)?;
    let t = Instant::now();
    let lab = Lab::up(p.clone(), plan, true).context("bringing up the lab")?;
    let _down = Down(p);
    let node = lab.state.nodes[0].name.clone();
    println!(
        "  {node}: pod CIDR {}, agent socket {}",
        lab.state.nodes[0].pod_cidr,
        lab.state.nodes[0].socket.display()
    );
    for pod in &lab.state.pods {
        println!(
            "  pod {:<11} {:<13} identity {:<5} app={:<9} (CNI ADD {:.1} ms)",
            pod.name, pod.ip, pod.identity, pod.app, pod.add_ms
        );
    }
    println!("  ready in {:.1} s", t.elapsed().as_secs_f64());

    step(2, "No policy yet: every pod reaches every other");
    let since = monitor_now(&lab, &node)?;
    expect(&lab, "frontend-1", "backend-1", true)?;
    show_path(
        &lab,
        &node,
        since,
        "frontend-1",
        "backend-1",
        api::MonitorKind::Trace,
    )?;
    expect(&lab, "db-1", "backend-1", true)?;

    step(
        3,
        "Import a policy: backend accepts TCP/80 only from app=frontend",
    );
    for line in POLICY.lines() {
        println!("    {line}");
    }
    let t = Instant::now();
    let imported: api::PolicyImported = lab.client(&node).post_json(
        paths::POLICIES,
        &api::PolicyImport {
            files: vec![api::PolicyFile {
                name: "backend-from-frontend.yaml".into(),
                text: POLICY.into(),
            }],
        },
    )?;
    println!(
        "  imported; revision {} enforced in {:.1} ms (the answer comes after the maps are written)",
        imported.revision,
        t.elapsed().as_secs_f64() * 1e3
    );

    step(
        4,
        "frontend is still allowed; db is now denied, and Pilus says why",
    );
    expect(&lab, "frontend-1", "backend-1", true)?;
    let since = monitor_now(&lab, &node)?;
    expect(&lab, "db-1", "backend-1", false)?;
    show_path(
        &lab,
        &node,
        since,
        "db-1",
        "backend-1",
        api::MonitorKind::Drop,
    )?;
    trace_reason(&lab, &node, "db-1", "backend-1")?;

    step(5, "Delete the policy: db reaches backend again");
    let d: api::Deleted = lab
        .client(&node)
        .delete_json(&format!("{}/demo/backend-from-frontend", paths::POLICIES))?;
    println!(
        "  deleted {} policy; revision {} enforced",
        d.deleted, d.revision
    );
    expect(&lab, "db-1", "backend-1", true)?;

    drop(_down);
    println!(
        "\nLab removed (pods, agent, pins, namespaces). Demo took {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
