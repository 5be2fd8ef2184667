//! `pilus lab demo`: the newcomer's tour (traffic and its path, the tunnel,
//! a policy, a service, a pod reaching the outside), told in a few short steps on a real lab, written to the writer the caller passes (the CLI passes
//! stdout). Every claim it prints is checked: if traffic that should pass
//! is dropped (or the reverse), or the monitor does not show what the demo
//! says it shows, the demo fails with [`Error::Claim`] instead of telling
//! a story. The lab is removed however the demo ends.

use crate::{
    outside::{Outside, OUTSIDE_IP},
    plan::Routing,
    serve::{Probe, Proto},
    Lab, LabError, Paths, Plan, Teardown,
};
use pilus_api_types::{self as api, paths};
use std::{
    collections::BTreeMap,
    io::Write,
    net::Ipv4Addr,
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

/// The tour's steps.
const STEPS: u32 = 8;

/// The demo service's ClusterIP: in 198.19.128.0/17, neither a pod CIDR
/// nor the underlay.
const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 128, 10);
/// New connections to the service: with two backends chosen at random,
/// all of them reaching one backend has a chance of 2^-19.
const SERVICE_CONNECTIONS: usize = 20;

/// How long a connection that must succeed may take, and how long one
/// that must be dropped is given to prove it.
const YES: Duration = Duration::from_secs(2);
const NO: Duration = Duration::from_millis(400);

struct Demo<'a> {
    lab: Lab,
    node: String,
    out: &'a mut dyn Write,
}

impl Demo<'_> {
    fn step(&mut self, n: u32, text: &str) -> Result<(), Error> {
        writeln!(self.out, "\n[{n}/{STEPS}] {text}")?;
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

    /// The newest monitor sequence number of `node` (events after it are
    /// new).
    fn monitor_now(&self, node: &str) -> Result<u64, Error> {
        let b: api::MonitorBatch = self
            .lab
            .client(node)
            .get_json(&format!("{}?last=0", paths::MONITOR))
            .map_err(api_err("reading the monitor"))?;
        Ok(b.next)
    }

    fn pod_ip(&self, name: &str) -> Result<std::net::Ipv4Addr, Error> {
        self.lab
            .pod(name)
            .map(|p| p.ip)
            .map_err(lab_err("looking up a pod"))
    }

    /// `node`'s events (`pilus monitor`) about the first packet of the flow
    /// from `from` to `to` port 80 seen after `since`, once one of kind
    /// `want` is among them.
    fn first_packet(
        &self,
        node: &str,
        since: u64,
        from: &str,
        to: &str,
        want: api::MonitorKind,
    ) -> Result<Vec<api::MonitorEvent>, Error> {
        let (src, dst) = (self.pod_ip(from)?, self.pod_ip(to)?);
        // The agent drains the ring every 50 ms; give it a few ticks.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut seen = Vec::new();
        let mut cursor = since;
        while Instant::now() < deadline {
            let b: api::MonitorBatch = self
                .lab
                .client(node)
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
                "{node}'s monitor showed no {want:?} event for {from} -> {to}"
            )));
        };
        // The flow's first packet (the SYN): every event about it.
        let (port, flags) = (first.packet.src_port, first.packet.tcp_flags.clone());
        Ok(seen
            .into_iter()
            .filter(|e| e.packet.src_port == port && e.packet.tcp_flags == flags)
            .collect())
    }

    fn print_events(&mut self, node: &str, events: &[api::MonitorEvent]) -> Result<(), Error> {
        writeln!(self.out, "  on {node} (pilus monitor):")?;
        for e in events {
            writeln!(self.out, "    {}", pilus_monitor::format_line(e))?;
        }
        Ok(())
    }

    fn host_ifname(&self, ip: std::net::Ipv4Addr) -> Result<String, Error> {
        let eps: Vec<api::Endpoint> = self
            .client()
            .get_json(paths::ENDPOINTS)
            .map_err(api_err("listing endpoints"))?;
        Ok(eps
            .iter()
            .find(|e| e.ipv4 == ip)
            .map_or("?".to_string(), |e| e.host_ifname.clone()))
    }

    /// Prints node-1's events for the first packet of a flow between two
    /// of its pods, and what they mean.
    fn show_path(
        &mut self,
        since: u64,
        from: &str,
        to: &str,
        want: api::MonitorKind,
    ) -> Result<(), Error> {
        let node = self.node.clone();
        let syn = self.first_packet(&node, since, from, to, want)?;
        writeln!(self.out, "  the SYN's path, as the datapath reported it:")?;
        self.print_events(&node, &syn)?;
        let (src, dst) = (self.pod_ip(from)?, self.pod_ip(to)?);
        let (src_if, dst_if) = (self.host_ifname(src)?, self.host_ifname(dst)?);
        if want == api::MonitorKind::Trace {
            writeln!(
                self.out,
                "    i.e. {from} eth0 -> {src_if} (tc: egress policy, conntrack) -> redirect -> {dst_if} -> {to} eth0"
            )?;
        } else {
            writeln!(
                self.out,
                "    i.e. {from} eth0 -> {src_if} (tc: {to}'s ingress policy, checked before delivery) -> dropped"
            )?;
        }
        Ok(())
    }

    /// A flow from a pod of node-1 to a pod of node-2: both nodes' events
    /// and the VXLAN frame on the underlay, whose VNI is the sender's
    /// identity.
    fn show_tunnel(&mut self, from: &str, to: &str) -> Result<(), Error> {
        let (n1, n2) = (
            self.node.clone(),
            self.lab
                .pod(to)
                .map_err(lab_err("looking up a pod"))?
                .node
                .clone(),
        );
        let (since1, since2) = (self.monitor_now(&n1)?, self.monitor_now(&n2)?);
        let (cap, probe) = self
            .lab
            .capture_underlay(|| self.lab.connect(from, to, 80, Proto::Tcp, YES))
            .map_err(|e| Error::Claim(format!("capturing on the underlay: {e}")))?;
        let probe = probe.map_err(lab_err("probing from a pod"))?;
        writeln!(self.out, "  {}", probe.describe(from, to, 80, Proto::Tcp))?;
        if !matches!(probe, Probe::Reply { .. }) {
            return Err(Error::Claim(format!(
                "expected {from} -> {to} to be allowed"
            )));
        }
        let sent = self.first_packet(&n1, since1, from, to, api::MonitorKind::Trace)?;
        let arrived = self.first_packet(&n2, since2, from, to, api::MonitorKind::Trace)?;
        // At the lab's aggregation level (medium) the receive points
        // (from-overlay) are not traced; the delivery on node-2 is.
        if !sent.iter().any(|e| e.observation_point == "to-overlay")
            || !arrived
                .iter()
                .any(|e| e.observation_point == "to-endpoint" && e.state == "new")
        {
            return Err(Error::Claim(format!(
                "the monitors did not show the tunnel hop: {sent:?} {arrived:?}"
            )));
        }
        writeln!(
            self.out,
            "  the SYN's path, as both nodes' datapaths reported it:"
        )?;
        self.print_events(&n1, &sent)?;
        self.print_events(&n2, &arrived)?;
        let (src, dst) = (self.pod_ip(from)?, self.pod_ip(to)?);
        let id = self
            .lab
            .pod(from)
            .map_err(lab_err("looking up a pod"))?
            .identity;
        let Some(frame) = cap
            .vxlan
            .iter()
            .find(|v| v.inner_src == src && v.inner_dst == dst)
        else {
            return Err(Error::Claim(format!(
                "no VXLAN frame {src} -> {dst} on the underlay: {cap:?}"
            )));
        };
        if frame.vni != id {
            return Err(Error::Claim(format!(
                "the VNI is {}, not {from}'s identity {id}",
                frame.vni
            )));
        }
        let (u1, u2) = (self.underlay_ip(&n1), self.underlay_ip(&n2));
        writeln!(
            self.out,
            "  on the underlay (a packet socket in the underlay namespace):\n    {u1} -> {u2} udp/{} VXLAN VNI {} [inner {src} -> {dst} tcp]",
            crate::capture::VXLAN_PORT,
            frame.vni
        )?;
        writeln!(
            self.out,
            "    i.e. the VNI carries identity {id} ({from}'s app={}); {n2} enforces its policy with it, no lookup needed",
            self.lab.pod(from).map_err(lab_err("looking up a pod"))?.app
        )?;
        Ok(())
    }

    /// Claims that an event among `events` names its policy as `want`
    /// begins.
    fn claim_policy(&self, events: &[api::MonitorEvent], want: &str) -> Result<(), Error> {
        if events.iter().any(|e| {
            e.policy
                .as_ref()
                .is_some_and(|p| p.explanation.starts_with(want))
        }) {
            return Ok(());
        }
        Err(Error::Claim(format!(
            "no event names \"{want}…\": {events:?}"
        )))
    }

    fn underlay_ip(&self, node: &str) -> String {
        self.lab
            .state
            .plan
            .node(node)
            .map_or("?".into(), |n| n.underlay_ip.to_string())
    }

    /// `pilus trace`: what would become of a TCP SYN from `from` to `to`
    /// (a pod of this node by name, or an address) on port 80, asked of
    /// this node's programs before anything is sent.
    fn trace_packet(
        &mut self,
        from: &str,
        to: &str,
        expect: api::TraceOutcome,
    ) -> Result<(), Error> {
        let t: api::PacketTrace = self
            .client()
            .post_json(
                paths::PACKET_TRACE,
                &api::PacketTraceRequest {
                    from: format!("demo/{from}"),
                    to: to.to_string(),
                    proto: "tcp".into(),
                    port: Some(80),
                    sport: None,
                },
            )
            .map_err(api_err("tracing a packet"))?;
        writeln!(
            self.out,
            "  asked before sending anything (pilus trace --from demo/{from} --to {to} --proto tcp --port 80):"
        )?;
        for (i, step) in t.steps.iter().enumerate() {
            writeln!(self.out, "    {}. {}", i + 1, step.text)?;
        }
        writeln!(self.out, "    verdict: {}", t.verdict.summary)?;
        if t.verdict.outcome != expect {
            return Err(Error::Claim(format!(
                "pilus trace {from} -> {to} said {:?}, expected {expect:?}",
                t.verdict.outcome
            )));
        }
        Ok(())
    }

    /// Every node's drops of `pod`'s packets as flows, asked on this node
    /// (`pilus observe --all-nodes`): the newest drop on each node.
    fn observe_drops(&mut self, pod: &str) -> Result<(), Error> {
        let b: api::FlowBatch = self
            .client()
            .get_json(&format!(
                "{}?nodes=all&verdict=DROPPED&pod=demo/{pod}&last=50",
                paths::FLOWS
            ))
            .map_err(api_err("asking for flows"))?;
        let mut newest: std::collections::BTreeMap<&str, &api::Flow> = Default::default();
        for f in b.flows.iter().filter(|f| f.event == api::MonitorKind::Drop) {
            newest.insert(&f.node, f);
        }
        if newest.len() < 2 {
            return Err(Error::Claim(format!(
                "pilus observe --all-nodes did not show both nodes' drops of {pod}: {:?}",
                b.flows
            )));
        }
        writeln!(
            self.out,
            "  every node's drops as flows (pilus observe --all-nodes --pod demo/{pod} --verdict DROPPED):"
        )?;
        for f in newest.values() {
            writeln!(self.out, "    {}", pilus_monitor::flow::format_compact(f))?;
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
        "Pilus lab demo: two nodes, six pods, a tunnel, a policy, a service, the outside. (Everything runs in"
    )?;
    writeln!(
        out,
        "network namespaces on this machine, addresses in 198.18.0.0/15, and is removed at the end.)"
    )?;
    writeln!(
        out,
        "\n[1/{STEPS}] Bring up an etcd and two nodes (pilusd in each node's namespace), 3 pods per node via pilus-cni"
    )?;
    let plan = Plan::new(&paths.prefix, 2, 3)
        .and_then(|p| p.clustered(Routing::Tunnel, 1, 15))
        .map_err(LabError::from)
        .map_err(lab_err("planning the lab"))?;
    let t = Instant::now();
    let lab = Lab::up(paths.clone(), plan).map_err(lab_err("bringing up the lab"))?;
    let down = Teardown(paths);
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
        "\nLab removed (pods, agents, etcd, pins, namespaces). Demo took {:.1} s.",
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// Steps 1 (what is up) to 8, on the lab that is up.
fn tour(d: &mut Demo<'_>, up_started: Instant) -> Result<(), Error> {
    for e in &d.lab.state.etcd {
        writeln!(d.out, "  {}: {} (on the underlay)", e.name, e.url)?;
    }
    for n in &d.lab.state.nodes {
        let underlay = d.underlay_ip(&n.name);
        writeln!(
            d.out,
            "  {}: pod CIDR {}, underlay {underlay}, tunnel mode (VXLAN), agent socket {}",
            n.name,
            n.pod_cidr,
            n.socket.display()
        )?;
    }
    for pod in &d.lab.state.pods {
        writeln!(
            d.out,
            "  pod {:<11} on {} {:<13} identity {:<5} app={:<9} (CNI ADD {:.1} ms)",
            pod.name, pod.node, pod.ip, pod.identity, pod.app, pod.add_ms
        )?;
    }
    writeln!(
        d.out,
        "  the same labels have the same identity on both nodes (allocated in etcd); ready in {:.1} s",
        up_started.elapsed().as_secs_f64()
    )?;

    d.step(2, "No policy yet: every pod reaches every other")?;
    let node = d.node.clone();
    let since = d.monitor_now(&node)?;
    d.expect("frontend-1", "backend-1", true)?;
    d.show_path(since, "frontend-1", "backend-1", api::MonitorKind::Trace)?;
    d.expect("db-1", "backend-1", true)?;

    d.step(
        3,
        "Across nodes: frontend-1 (node-1) to backend-2 (node-2), through the tunnel",
    )?;
    d.show_tunnel("frontend-1", "backend-2")?;
    let backend2 = d.pod_ip("backend-2")?.to_string();
    d.trace_packet("frontend-1", &backend2, api::TraceOutcome::Tunnel)?;

    d.step(
        4,
        "Import a policy on node-1: backend accepts TCP/80 only from app=frontend",
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
    let t = Instant::now();
    loop {
        let on2: Vec<api::PolicySummary> = d
            .lab
            .client("node-2")
            .get_json(paths::POLICIES)
            .map_err(api_err("listing node-2's policies"))?;
        if on2.iter().any(|p| p.name == "backend-from-frontend") {
            break;
        }
        if t.elapsed() > Duration::from_secs(5) {
            return Err(Error::Claim("node-2 never got the policy".into()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    writeln!(
        d.out,
        "  node-2 has it too (through etcd) {:.1} ms later",
        t.elapsed().as_secs_f64() * 1e3
    )?;

    d.step(
        5,
        "frontend is still allowed; db is now denied, on either node, and Pilus says why",
    )?;
    let since = d.monitor_now(&node)?;
    d.expect("frontend-1", "backend-1", true)?;
    let verdict = d.first_packet(
        &node,
        since,
        "frontend-1",
        "backend-1",
        api::MonitorKind::PolicyVerdict,
    )?;
    let verdict: Vec<api::MonitorEvent> = verdict
        .into_iter()
        .filter(|e| e.kind == api::MonitorKind::PolicyVerdict)
        .collect();
    d.print_events(&node, &verdict)?;
    d.claim_policy(
        &verdict,
        "allowed by CiliumNetworkPolicy demo/backend-from-frontend rule spec.ingress[0]",
    )?;
    d.expect("frontend-1", "backend-2", true)?;
    let since = d.monitor_now(&node)?;
    d.expect("db-1", "backend-1", false)?;
    d.show_path(since, "db-1", "backend-1", api::MonitorKind::Drop)?;
    let since2 = d.monitor_now("node-2")?;
    d.expect("db-1", "backend-2", false)?;
    let drop = d.first_packet(
        "node-2",
        since2,
        "db-1",
        "backend-2",
        api::MonitorKind::Drop,
    )?;
    d.print_events("node-2", &drop)?;
    d.claim_policy(
        &drop,
        "default deny: endpoint selected by policy CiliumNetworkPolicy demo/backend-from-frontend",
    )?;
    let db = d
        .lab
        .pod("db-1")
        .map_err(lab_err("looking up a pod"))?
        .identity;
    if !drop
        .iter()
        .any(|e| e.kind == api::MonitorKind::Drop && e.src_identity == db)
    {
        return Err(Error::Claim(format!(
            "node-2's drop does not name db-1's identity {db}: {drop:?}"
        )));
    }
    writeln!(
        d.out,
        "    i.e. node-2 judged the packet on arrival (from-overlay) with identity {db} from the VNI: app=db on node-1"
    )?;
    d.trace_reason("db-1", "backend-1")?;
    d.trace_packet("db-1", "demo/backend-1", api::TraceOutcome::Dropped)?;
    d.observe_drops("db-1")?;

    d.step(6, "Delete the policy: db reaches backend again")?;
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
    let t = Instant::now();
    while !matches!(
        d.lab
            .connect("db-1", "backend-2", 80, Proto::Tcp, NO)
            .map_err(lab_err("probing from a pod"))?,
        Probe::Reply { .. }
    ) {
        if t.elapsed() > Duration::from_secs(5) {
            return Err(Error::Claim("db-1 -> backend-2 stayed denied".into()));
        }
    }
    d.expect("db-1", "backend-2", true)?;
    service(d)?;
    outside(d)
}

/// Step 7: a ClusterIP service over a backend on each node; new
/// connections from frontend-1 spread over both, and the client only ever
/// talks to the service's address.
fn service(d: &mut Demo<'_>) -> Result<(), Error> {
    d.step(
        7,
        "A service: frontend-1 connects to a ClusterIP, balanced over backend-1 (node-1) and backend-2 (node-2)",
    )?;
    let mut backends = Vec::new();
    for pod in ["backend-1", "backend-2"] {
        backends.push(api::ServiceBackend {
            address: d.pod_ip(pod)?.to_string(),
            port: 80,
            weight: 1,
            state: "active".into(),
            port_name: String::new(),
        });
    }
    writeln!(
        d.out,
        "  pilus service upsert demo/web --frontend {VIP}:80/TCP{}",
        backends
            .iter()
            .map(|b| format!(" --backend {}:80", b.address))
            .collect::<String>()
    )?;
    let svc = api::Service {
        namespace: "demo".into(),
        name: "web".into(),
        frontends: vec![api::ServiceFrontend {
            kind: "ClusterIP".into(),
            address: VIP.to_string(),
            port: 80,
            protocol: "TCP".into(),
            port_name: String::new(),
        }],
        backends,
        algorithm: "random".into(),
        session_affinity_seconds: None,
        external_traffic_policy: None,
    };
    let _: api::ServiceUpserted = d
        .client()
        .post_json(paths::SERVICES, &svc)
        .map_err(api_err("creating the service"))?;
    let lb: Vec<api::BpfLbFrontend> = d
        .client()
        .get_json(paths::BPF_LB)
        .map_err(api_err("reading node-1's service maps"))?;
    for f in &lb {
        writeln!(
            d.out,
            "  pilus bpf lb list: {} -> {} (generation {})",
            f.frontend,
            f.backends.join(", "),
            f.generation
        )?;
    }
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..SERVICE_CONNECTIONS {
        match d
            .lab
            .connect("frontend-1", &VIP.to_string(), 80, Proto::Tcp, YES)
            .map_err(lab_err("probing from a pod"))?
        {
            Probe::Reply { reply, .. } => *answered.entry(reply).or_default() += 1,
            other => {
                return Err(Error::Claim(format!(
                    "connection {i} from frontend-1 to {VIP}:80: {other:?}"
                )))
            }
        }
    }
    for (reply, n) in &answered {
        writeln!(
            d.out,
            "  {n:>2} of {SERVICE_CONNECTIONS} new connections to {VIP}:80 answered {reply:?}"
        )?;
    }
    let want = ["hello from backend-1", "hello from backend-2"];
    if !want.iter().all(|w| answered.contains_key(*w)) {
        return Err(Error::Claim(format!(
            "the service's connections did not reach both backends: {answered:?}"
        )));
    }
    writeln!(
        d.out,
        "    i.e. each new flow got a backend (DNAT of its first packet, the choice kept in conntrack), and every reply came back as {VIP}: the client's sockets, connected to {VIP}, accepted nothing else"
    )?;
    Ok(())
}

/// Step 8: a host outside the cluster on the underlay, with no route to any
/// pod, tells frontend-1 the address its connection came from: node-1's
/// (masquerade, the agents' --masquerade), and its ping comes back.
fn outside(d: &mut Demo<'_>) -> Result<(), Error> {
    d.step(
        8,
        "A pod reaches the outside: frontend-1 connects to a host on the underlay, which sees node-1's address",
    )?;
    let host = Outside::new(&d.lab, "outside", OUTSIDE_IP)
        .map_err(lab_err("adding a host outside the cluster"))?;
    let pod_ip = d.pod_ip("frontend-1")?;
    let node_ip = d.underlay_ip(&d.node.clone());
    writeln!(
        d.out,
        "  outside host {OUTSIDE_IP} (on the underlay, no route to the pods); frontend-1 is {pod_ip}, node-1 is {node_ip}"
    )?;
    let seen = host
        .seen_from(&d.lab, "frontend-1", YES)
        .map_err(lab_err("probing the outside"))?
        .map_err(|p| Error::Claim(format!("frontend-1 -> {OUTSIDE_IP}:{}: {p:?}", host.port)))?;
    writeln!(
        d.out,
        "  frontend-1 -> {OUTSIDE_IP}:{}/TCP: connected; the outside saw the connection come from {seen}",
        host.port
    )?;
    if seen.ip().to_string() != node_ip {
        return Err(Error::Claim(format!(
            "the outside saw {seen}, not node-1's address {node_ip}"
        )));
    }
    if !host
        .pinged_from(&d.lab, "frontend-1", YES)
        .map_err(lab_err("pinging the outside"))?
    {
        return Err(Error::Claim(format!(
            "frontend-1 could not ping {OUTSIDE_IP}"
        )));
    }
    writeln!(d.out, "  frontend-1 -> {OUTSIDE_IP}/ICMP: echo reply")?;
    writeln!(
        d.out,
        "    i.e. node-1's to-netdev rewrote the source to {node_ip} and a port of its own (SNAT), and its from-netdev translated the replies back to {pod_ip} before delivering them"
    )?;
    Ok(())
}
