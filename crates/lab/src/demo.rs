//! `pilus lab demo`: the newcomer's tour, told in a few short steps on a
//! real lab, written to the writer the caller passes (the CLI passes
//! stdout). Every claim it prints is checked: if traffic that should pass
//! is dropped (or the reverse), or the monitor does not show what the demo
//! says it shows, the demo fails with [`Error::Claim`] instead of telling
//! a story. The lab is removed however the demo ends.

use crate::{
    serve::{Probe, Proto},
    Lab, LabError, Paths, Plan,
};
use pilus_api_types::{self as api, paths};
use std::{
    io::Write,
    time::{Duration, Instant},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}")]
    Lab {
        what: &'static str,
        #[source]
        source: LabError,
    },
    #[error("{what}")]
    Api {
        what: String,
        #[source]
        source: pilus_client::Error,
    },
    #[error("writing the demo's output")]
    Write(#[from] std::io::Error),
    /// What the demo was about to claim is not what happened.
    #[error("{0}")]
    Claim(String),
}

fn lab_err(what: &'static str) -> impl FnOnce(LabError) -> Error {
    move |source| Error::Lab { what, source }
}

fn api_err(what: impl Into<String>) -> impl FnOnce(pilus_client::Error) -> Error {
    let what = what.into();
    move |source| Error::Api { what, source }
}

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

/// How long a connection that must succeed may take, and how long one
/// that must be dropped is given to prove it.
const YES: Duration = Duration::from_secs(2);
const NO: Duration = Duration::from_millis(400);

/// Removes the lab however the demo ends.
struct Down(Paths);

impl Drop for Down {
    fn drop(&mut self) {
        if let Err(e) = Lab::down(&self.0) {
            tracing::warn!(error = %e, "pilus lab demo: tearing down the lab");
        }
    }
}

struct Demo<'a> {
    lab: Lab,
    node: String,
    out: &'a mut dyn Write,
}

impl Demo<'_> {
    fn step(&mut self, n: u32, text: &str) -> Result<(), Error> {
        writeln!(self.out, "\n[{n}/5] {text}")?;
        Ok(())
    }

    fn expect(&mut self, from: &str, to: &str, allowed: bool) -> Result<Probe, Error> {
        let r = self
            .lab
            .connect(from, to, 80, Proto::Tcp, if allowed { YES } else { NO })
            .map_err(lab_err("probing from a pod"))?;
        writeln!(self.out, "  {}", r.describe(from, to, 80, Proto::Tcp))?;
        let got = matches!(r, Probe::Reply { .. });
        if got != allowed {
            return Err(Error::Claim(format!(
                "expected {from} -> {to} to be {}, but it was {}",
                if allowed { "allowed" } else { "denied" },
                if got { "allowed" } else { "denied" }
            )));
        }
        Ok(r)
    }

    fn client(&self) -> pilus_client::blocking::Client {
        self.lab.client(&self.node)
    }

    /// The newest monitor sequence number (events after it are new).
    fn monitor_now(&self) -> Result<u64, Error> {
        let b: api::MonitorBatch = self
            .client()
            .get_json(&format!("{}?last=0", paths::MONITOR))
            .map_err(api_err("reading the monitor"))?;
        Ok(b.next)
    }

    /// Prints the datapath's events (`pilus monitor`) for the first packet
    /// of the flow from `from` to `to` port 80 seen after `since`.
    fn show_path(
        &mut self,
        since: u64,
        from: &str,
        to: &str,
        want: api::MonitorKind,
    ) -> Result<(), Error> {
        let pod_ip = |name| {
            self.lab
                .pod(name)
                .map(|p| p.ip)
                .map_err(lab_err("looking up a pod"))
        };
        let (src, dst) = (pod_ip(from)?, pod_ip(to)?);
        // The agent drains the ring every 50 ms; give it a few ticks.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut seen = Vec::new();
        let mut cursor = since;
        while Instant::now() < deadline {
            let b: api::MonitorBatch = self
                .client()
                .get_json(&format!("{}?since={cursor}&wait_ms=200", paths::MONITOR))
                .map_err(api_err("reading the monitor"))?;
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
            return Err(Error::Claim(format!(
                "the monitor showed no {want:?} event for {from} -> {to}"
            )));
        };
        // The flow's first packet (the SYN): every event about it.
        let syn: Vec<_> = seen
            .iter()
            .filter(|e| {
                e.packet.src_port == first.packet.src_port
                    && e.packet.tcp_flags == first.packet.tcp_flags
            })
            .collect();
        let eps: Vec<api::Endpoint> = self
            .client()
            .get_json(paths::ENDPOINTS)
            .map_err(api_err("listing endpoints"))?;
        let host = |ip| {
            eps.iter()
                .find(|e| e.ipv4 == ip)
                .map_or("?".to_string(), |e| e.host_ifname.clone())
        };
        writeln!(
            self.out,
            "  the SYN's path, as the datapath reported it (pilus monitor):"
        )?;
        for e in syn {
            writeln!(self.out, "    {}", pilus_monitor::format_line(e))?;
        }
        if want == api::MonitorKind::Trace {
            writeln!(
                self.out,
                "    i.e. {from} eth0 -> {} (tc: egress policy, conntrack) -> redirect -> {} -> {to} eth0",
                host(src),
                host(dst)
            )?;
        } else {
            writeln!(
                self.out,
                "    i.e. {from} eth0 -> {} (tc: {to}'s ingress policy, checked before delivery) -> dropped",
                host(src)
            )?;
        }
        Ok(())
    }

    fn trace_reason(&mut self, from: &str, to: &str) -> Result<(), Error> {
        let t: api::Trace = self
            .client()
            .post_json(
                paths::TRACE,
                &api::TraceRequest {
                    src: format!("demo/{from}"),
                    dst: format!("demo/{to}"),
                    port: 80,
                    protocol: "TCP".into(),
                },
            )
            .map_err(api_err("tracing policy"))?;
        let Some(i) = &t.ingress else {
            return Ok(());
        };
        writeln!(
            self.out,
            "  why (pilus policy trace -s demo/{from} -d demo/{to} --dport 80/TCP):"
        )?;
        if i.selected_by.is_empty() {
            writeln!(
                self.out,
                "    ingress of {}: no policy selects it",
                i.endpoint
            )?;
        } else {
            writeln!(
                self.out,
                "    ingress of {} is selected by {}",
                i.endpoint,
                i.selected_by.join(", ")
            )?;
        }
        if i.matches.is_empty() {
            writeln!(self.out, "    no rule allows app=db; default deny")?;
        }
        for m in &i.matches {
            writeln!(
                self.out,
                "    {} by {} ({})",
                if m.deny { "denied" } else { "allowed" },
                m.policy,
                m.rule
            )?;
        }
        Ok(())
    }
}

/// Runs the demo on a lab at `paths` (its own directory and prefix, so a
/// lab a developer has up is not touched), writing to `out`. Needs root,
/// and pilusd, pilus-cni and pilus in `paths.bin_dir`.
pub fn run(paths: Paths, out: &mut dyn Write) -> Result<(), Error> {
    let started = Instant::now();
    writeln!(
        out,
        "Pilus lab demo: a node, three pods, a policy. (Everything runs in network"
    )?;
    writeln!(
        out,
        "namespaces on this machine, addresses in 198.18.0.0/15, and is removed at the end.)"
    )?;
    writeln!(
        out,
        "\n[1/5] Bring up a node (pilusd inside its own namespace) and 3 pods via pilus-cni"
    )?;
    let plan = Plan::new(&paths.prefix, 1, 3)
        .map_err(LabError::from)
        .map_err(lab_err("planning the lab"))?;
    let t = Instant::now();
    let lab = Lab::up(paths.clone(), plan, true).map_err(lab_err("bringing up the lab"))?;
    let down = Down(paths);
    let node = lab.state.nodes[0].name.clone();
    let mut d = Demo {
        lab,
        node,
        out: &mut *out,
    };
    tour(&mut d, t)?;
    drop(d);
    drop(down);
    writeln!(
        out,
        "\nLab removed (pods, agent, pins, namespaces). Demo took {:.1} s.",
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// Steps 1 (what is up) to 5, on the lab that is up.
fn tour(d: &mut Demo<'_>, up_started: Instant) -> Result<(), Error> {
    let n = &d.lab.state.nodes[0];
    writeln!(
        d.out,
        "  {}: pod CIDR {}, agent socket {}",
        n.name,
        n.pod_cidr,
        n.socket.display()
    )?;
    for pod in &d.lab.state.pods {
        writeln!(
            d.out,
            "  pod {:<11} {:<13} identity {:<5} app={:<9} (CNI ADD {:.1} ms)",
            pod.name, pod.ip, pod.identity, pod.app, pod.add_ms
        )?;
    }
    writeln!(
        d.out,
        "  ready in {:.1} s",
        up_started.elapsed().as_secs_f64()
    )?;

    d.step(2, "No policy yet: every pod reaches every other")?;
    let since = d.monitor_now()?;
    d.expect("frontend-1", "backend-1", true)?;
    d.show_path(since, "frontend-1", "backend-1", api::MonitorKind::Trace)?;
    d.expect("db-1", "backend-1", true)?;

    d.step(
        3,
        "Import a policy: backend accepts TCP/80 only from app=frontend",
    )?;
    for line in POLICY.lines() {
        writeln!(d.out, "    {line}")?;
    }
    let t = Instant::now();
    let imported: api::PolicyImported = d
        .client()
        .post_json(
            paths::POLICIES,
            &api::PolicyImport {
                files: vec![api::PolicyFile {
                    name: "backend-from-frontend.yaml".into(),
                    text: POLICY.into(),
                }],
            },
        )
        .map_err(api_err("importing the policy"))?;
    writeln!(
        d.out,
        "  imported; revision {} enforced in {:.1} ms (the answer comes after the maps are written)",
        imported.revision,
        t.elapsed().as_secs_f64() * 1e3
    )?;

    d.step(
        4,
        "frontend is still allowed; db is now denied, and Pilus says why",
    )?;
    d.expect("frontend-1", "backend-1", true)?;
    let since = d.monitor_now()?;
    d.expect("db-1", "backend-1", false)?;
    d.show_path(since, "db-1", "backend-1", api::MonitorKind::Drop)?;
    d.trace_reason("db-1", "backend-1")?;

    d.step(5, "Delete the policy: db reaches backend again")?;
    let del: api::Deleted = d
        .client()
        .delete_json(&format!("{}/demo/backend-from-frontend", paths::POLICIES))
        .map_err(api_err("deleting the policy"))?;
    writeln!(
        d.out,
        "  deleted {} policy; revision {} enforced",
        del.deleted, del.revision
    )?;
    d.expect("db-1", "backend-1", true)?;
    Ok(())
}
