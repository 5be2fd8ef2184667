//! The checks, each a pure function of [`Facts`] to one [`DoctorCheck`]:
//! what it found, what it saw, what to do.

use super::{
    facts::{conf_key, EndpointFact, Facts, Net, IP_FORWARD},
    fib::{
        self, Flow, Resolved, ACTION_TO_TABLE, RTN_BLACKHOLE, RTN_PROHIBIT, RTN_THROW,
        RTN_UNREACHABLE, TABLE_LOCAL, TABLE_MAIN,
    },
};
use pilus_api_types::{DoctorCheck, DoctorFinding, Severity};
use pilus_controlplane::cluster::Routing;
use pilus_netlink::{Route, Rule};
use std::net::Ipv4Addr;

/// A map this full is worth a look...
pub const PRESSURE_WARN: f64 = 0.75;
/// ...and this full, a fault: an LRU map evicts live entries, another
/// refuses new ones.
pub const PRESSURE_FAULT: f64 = 0.90;

/// Evidence lists longer than this are cut, with a count of the rest.
const MAX_EVIDENCE: usize = 8;

/// Every check, in the order `pilus doctor` prints them.
pub fn all(f: &Facts) -> Vec<DoctorCheck> {
    vec![
        routing(f),
        programs(f),
        socket_lb(f),
        sysctls(f),
        map_pressure(f),
        events_lost(f),
        etcd(f),
    ]
}

/// The worst of some severities; `ok` for none.
pub fn worst(all: impl IntoIterator<Item = Severity>) -> Severity {
    all.into_iter().max().unwrap_or(Severity::Ok)
}

fn check(name: &str, title: &str, summary: String, findings: Vec<DoctorFinding>) -> DoctorCheck {
    DoctorCheck {
        name: name.into(),
        title: title.into(),
        status: worst(findings.iter().map(|f| f.severity)),
        summary,
        findings,
    }
}

fn finding(
    severity: Severity,
    problem: String,
    evidence: Vec<String>,
    fix: impl Into<String>,
) -> DoctorFinding {
    let mut evidence = evidence;
    if evidence.len() > MAX_EVIDENCE {
        let more = evidence.len() - (MAX_EVIDENCE - 1);
        evidence.truncate(MAX_EVIDENCE - 1);
        evidence.push(format!("... and {more} more"));
    }
    DoctorFinding {
        severity,
        problem,
        evidence,
        fix: fix.into(),
    }
}

/// A check that could not look at `what` at all.
fn not_checked(name: &str, title: &str, what: &str, error: &str) -> DoctorCheck {
    check(
        name,
        title,
        "not checked".into(),
        vec![could_not(what, error)],
    )
}

/// A check that could not look: a warning that says why.
fn could_not(what: &str, error: &str) -> DoctorFinding {
    finding(
        Severity::Warning,
        format!("could not read {what}, so this was not checked"),
        vec![error.to_string()],
        "see the agent's log; run pilus doctor again",
    )
}

impl Facts {
    fn dev(&self, index: u32) -> String {
        self.links
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("if{index}"))
    }

    fn show_route(&self, r: &Route) -> String {
        fib::show_route(r, |i| self.dev(i))
    }

    fn index_of(&self, name: &str) -> Option<u32> {
        self.links
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(i, _)| *i)
    }

    fn sysctl(&self, name: &str) -> Option<u32> {
        self.sysctls.get(name).copied()
    }
}

/// An address Pilus routes through the main table, and what it is.
struct Target {
    dst: Ipv4Addr,
    what: String,
    /// The prefix a fix keeps on the main table.
    cidr: String,
}

fn targets(f: &Facts) -> Vec<Target> {
    let mut out: Vec<Target> = f
        .endpoints
        .iter()
        .map(|e| Target {
            dst: e.ip,
            what: format!("pod {} (endpoint {}, {})", e.name, e.id, e.ip),
            cidr: f.pod_cidr.clone(),
        })
        .collect();
    if f.routing == Some(Routing::Direct) {
        out.extend(f.remote_pod_cidrs.iter().map(|(node, cidr)| Target {
            dst: cidr.network(),
            what: format!("pods of node {node} ({cidr})"),
            cidr: cidr.to_string(),
        }));
    }
    out
}

/// What a rule does to a target: `Some(description)` when it sends it
/// elsewhere than the main table would.
fn diverts(f: &Facts, net: &Net, rule: &Rule, t: &Target) -> Option<String> {
    if !fib::contains(rule.dst, rule.dst_len, t.dst) {
        return None;
    }
    let main = fib::lookup(&net.routes, TABLE_MAIN, t.dst);
    match rule.action {
        ACTION_TO_TABLE if rule.table == TABLE_MAIN || rule.table == TABLE_LOCAL => None,
        ACTION_TO_TABLE => {
            let there = fib::lookup(&net.routes, rule.table, t.dst)?;
            let same = main.is_some_and(|m| {
                fib::delivers(there) && m.oif == there.oif && m.gateway == there.gateway
            });
            // A throw route sends the lookup on to the next rule.
            if there.kind == RTN_THROW || same {
                return None;
            }
            Some(format!(
                "{}: table {} sends it {}; main: {}",
                t.what,
                fib::table_name(rule.table),
                f.show_route(there),
                main.map_or("no route".into(), |m| f.show_route(m))
            ))
        }
        RTN_BLACKHOLE | RTN_UNREACHABLE | RTN_PROHIBIT => {
            Some(format!("{}: refused by the rule", t.what))
        }
        _ => None,
    }
}

/// Seed 002: an `ip rule` ahead of the main table that sends traffic to
/// pods (their replies above all) or from them to another table, around
/// the routes Pilus keeps in main; and pods missing their own route.
pub fn routing(f: &Facts) -> DoctorCheck {
    const NAME: &str = "routing";
    const TITLE: &str = "ip rules and routes send pod traffic the way Pilus routes it";
    let net = match &f.net {
        Ok(n) => n,
        Err(e) => return not_checked(NAME, TITLE, "the rules and routes", e),
    };
    let mut findings = Vec::new();
    let main_pref = net
        .rules
        .iter()
        .filter(|r| r.action == ACTION_TO_TABLE && r.table == TABLE_MAIN)
        .filter(|r| r.src_len == 0 && r.dst_len == 0 && r.fwmark.is_none() && r.iif.is_none())
        .map(|r| r.priority)
        .min();
    let Some(main_pref) = main_pref else {
        findings.push(finding(
            Severity::Fault,
            "no ip rule looks up the main table for all packets: the pods' routes are never \
             consulted"
                .into(),
            net.rules.iter().map(fib::show_rule).collect(),
            "ip rule add from all lookup main pref 32766",
        ));
        return check(NAME, TITLE, "the main table is not used".into(), findings);
    };
    for e in &f.endpoints {
        if let Some(problem) = pod_route(f, net, e) {
            findings.push(problem);
        }
    }
    let targets = targets(f);
    let mut rules: Vec<&Rule> = net
        .rules
        .iter()
        .filter(|r| r.priority < main_pref)
        .collect();
    rules.sort_by_key(|r| r.priority);
    // What each rule diverts, target by target in the kernel's order: once
    // a rule takes all of a target's traffic (no selector but `to`) and its
    // table has a route for it, later rules never see that target (seed
    // 002's fix is such a rule, ahead of the one it fixes).
    let mut hits: Vec<Vec<(&Target, String)>> = vec![Vec::new(); rules.len()];
    for t in &targets {
        for (i, rule) in rules.iter().enumerate() {
            if let Some(d) = diverts(f, net, rule, t) {
                hits[i].push((t, d));
            }
            if takes_all(net, rule, t) {
                break;
            }
        }
    }
    for (rule, hit) in rules.iter().zip(hits) {
        if hit.is_empty() {
            continue;
        }
        let mut cidrs: Vec<&str> = hit.iter().map(|(t, _)| t.cidr.as_str()).collect();
        cidrs.dedup();
        let who = if rule.src_len > 0 {
            format!("packets from {}/{}", rule.src, rule.src_len)
        } else {
            "packets".into()
        };
        // Only marked packets: narrower, and maybe meant.
        let severity = if rule.fwmark.is_some() {
            Severity::Warning
        } else {
            Severity::Fault
        };
        let mut evidence = vec![format!("ip rule {}", fib::show_rule(rule))];
        evidence.extend(hit.iter().map(|(_, d)| d.clone()));
        let keep: Vec<String> = cidrs
            .iter()
            .map(|c| {
                format!(
                    "ip rule add to {c} lookup main pref {}",
                    rule.priority.saturating_sub(1)
                )
            })
            .collect();
        let fix = if rule.priority == 0 {
            format!("remove it: ip rule del pref {}", rule.priority)
        } else {
            format!(
                "keep pod traffic on the main table ahead of it ({}), as seed 002's fix does, or \
                 remove it: ip rule del pref {}",
                keep.join("; "),
                rule.priority
            )
        };
        findings.push(finding(
            severity,
            format!(
                "ip rule {} sends {who} for {} address(es) Pilus routes to table {} instead of \
                 main: they leave around the pods' routes (replies never reach the pod)",
                rule.priority,
                hit.len(),
                match rule.action {
                    ACTION_TO_TABLE => fib::table_name(rule.table),
                    _ => "none (refused)".into(),
                }
            ),
            evidence,
            fix,
        ));
    }
    let summary = format!(
        "{} rule(s) ahead of main (pref {main_pref}); {} address(es) Pilus routes checked",
        net.rules.iter().filter(|r| r.priority < main_pref).count(),
        targets.len()
    );
    check(NAME, TITLE, summary, findings)
}

/// Whether `rule` ends the lookup of every packet to `t`: it selects them
/// all and its table has a route for `t` (or it refuses them).
fn takes_all(net: &Net, rule: &Rule, t: &Target) -> bool {
    let all = rule.src_len == 0
        && rule.fwmark.is_none()
        && rule.iif.is_none()
        && rule.oif.is_none()
        && fib::contains(rule.dst, rule.dst_len, t.dst);
    all && match rule.action {
        ACTION_TO_TABLE => {
            fib::lookup(&net.routes, rule.table, t.dst).is_some_and(|r| r.kind != RTN_THROW)
        }
        RTN_BLACKHOLE | RTN_UNREACHABLE | RTN_PROHIBIT => true,
        _ => false,
    }
}

/// A local pod must be routed through its own veth by the main table.
fn pod_route(f: &Facts, net: &Net, e: &EndpointFact) -> Option<DoctorFinding> {
    let main = fib::lookup(&net.routes, TABLE_MAIN, e.ip);
    if main.is_some_and(|r| fib::delivers(r) && r.oif == Some(e.host_ifindex)) {
        return None;
    }
    Some(finding(
        Severity::Fault,
        format!(
            "the main table does not route pod {} (endpoint {}, {}) through its veth {}: the \
             node cannot reach it",
            e.name, e.id, e.ip, e.host_ifname
        ),
        vec![format!(
            "main: {}",
            main.map_or("no route".into(), |r| f.show_route(r))
        )],
        format!(
            "ip route replace {}/32 dev {} (pilus-cni CHECK reports this too)",
            e.ip, e.host_ifname
        ),
    ))
}

fn hook_consequence(program: &str) -> &'static str {
    match program {
        "from_container" => {
            "packets from the pod skip conntrack, its egress policy and anti-spoofing"
        }
        "to_container" => "packets the node's stack sends to the pod skip its ingress policy",
        "from_overlay" => "packets from other nodes' pods are not delivered to local pods",
        "from_netdev" => "packets from other nodes' pods reach local pods without their identity",
        "to_netdev" => "packets leaving for other nodes are not counted or traced",
        _ => "packets on this hook bypass the datapath",
    }
}

/// Every endpoint's host veth runs `from_container` on ingress and
/// `to_container` on egress, the node devices their programs, as the
/// agent's own filters (the ones it would recognize at a restart).
pub fn programs(f: &Facts) -> DoctorCheck {
    let mut findings = Vec::new();
    let mut hooks = 0;
    for h in &f.hooks {
        match &h.hooks {
            Err(e) => findings.push(could_not(&format!("the hooks of {}", h.ifname), e)),
            Ok(None) => findings.push(finding(
                Severity::Fault,
                format!("{}: its device {} does not exist", h.what, h.ifname),
                vec![format!("ip link show {}: no such device", h.ifname)],
                "an endpoint whose veth is gone: delete it (CNI DEL, or pilus endpoint delete) \
                 and add the pod again; a node device: restart pilusd",
            )),
            Ok(Some(list)) => {
                for s in list {
                    hooks += 1;
                    if s.attached {
                        continue;
                    }
                    let mut evidence = vec![format!(
                        "tc filter show dev {} {}: {}",
                        h.ifname,
                        s.hook,
                        if s.filters.is_empty() {
                            "no BPF filter".to_string()
                        } else {
                            s.filters.join(", ")
                        }
                    )];
                    evidence.push(format!("expected: {} (direct action)", s.program));
                    findings.push(finding(
                        Severity::Fault,
                        format!(
                            "{}: {} is not attached on {} {}: {}",
                            h.what,
                            s.program,
                            h.ifname,
                            s.hook,
                            hook_consequence(s.program)
                        ),
                        evidence,
                        "restart pilusd: at start it attaches what is missing on every endpoint \
                         and node device (and leaves what runs alone)",
                    ));
                }
            }
        }
    }
    check(
        "programs",
        "every endpoint veth and node device runs Pilus's programs",
        format!("{} device(s), {hooks} hook(s) checked", f.hooks.len()),
        findings,
    )
}

/// Socket-level LB's programs run on the agent's cgroup (when it has
/// one), through the links it pinned.
pub fn socket_lb(f: &Facts) -> DoctorCheck {
    const NAME: &str = "socket-lb";
    const TITLE: &str = "socket-level service LB runs on its cgroup";
    let Some(s) = &f.socket_lb else {
        return check(NAME, TITLE, "off (no --socket-lb-cgroup)".into(), vec![]);
    };
    let hooks = match &s.hooks {
        Ok(h) => h,
        Err(e) => return not_checked(NAME, TITLE, "the socket-LB links", e),
    };
    let findings = hooks
        .iter()
        .filter(|h| !h.attached)
        .map(|h| {
            finding(
                Severity::Fault,
                format!(
                    "{} is not attached to {} on {}: sockets of its processes are not \
                     translated there ({}); pods' packets still meet per-packet LB, the node's \
                     own processes reach no ClusterIP",
                    h.program,
                    h.hook,
                    s.cgroup,
                    match h.hook {
                        "connect4" => "connect() to a ClusterIP goes to the ClusterIP itself",
                        "connect6" => {
                            "connect() of IPv6 sockets to a ClusterIP (::ffff:VIP) goes to the \
                             ClusterIP itself"
                        }
                        "sendmsg4" => "UDP datagrams sent to a ClusterIP go to the ClusterIP",
                        "recvmsg4" | "recvmsg6" => "UDP replies show the backend as their source",
                        _ => "getpeername() shows the backend",
                    }
                ),
                vec![h.found.clone()],
                format!(
                    "restart pilusd: at start it attaches socket LB to {} again (and pins the \
                     links under {}/links)",
                    s.cgroup, f.pin_dir
                ),
            )
        })
        .collect();
    check(
        NAME,
        TITLE,
        format!("{} hook(s) on {}", hooks.len(), s.cgroup),
        findings,
    )
}

/// The reverse-path filter and forwarding, for the paths the routing mode
/// puts through the node's stack.
pub fn sysctls(f: &Facts) -> DoctorCheck {
    const NAME: &str = "sysctl";
    const TITLE: &str = "rp_filter and forwarding suit the routing mode";
    let mut findings = Vec::new();
    let rp_all = f.sysctl(&conf_key("all", "rp_filter")).unwrap_or(0);
    // Where packets enter the stack and where they came from: each pod's
    // own veth; in direct routing, the uplink for other nodes' pods.
    let mut paths: Vec<(String, Option<u32>, Ipv4Addr, String)> = f
        .endpoints
        .iter()
        .map(|e| {
            (
                e.host_ifname.clone(),
                Some(e.host_ifindex),
                e.ip,
                format!("pod {} (endpoint {})", e.name, e.id),
            )
        })
        .collect();
    if let (Some(Routing::Direct), Some(up)) = (f.routing, &f.uplink) {
        let index = f.index_of(up);
        for (node, cidr) in &f.remote_pod_cidrs {
            paths.push((
                up.clone(),
                index,
                cidr.network(),
                format!("pods of node {node} ({cidr})"),
            ));
        }
    }
    match &f.net {
        Err(e) => findings.push(could_not("the rules and routes", e)),
        Ok(net) => {
            for (dev, index, src, what) in &paths {
                let rp_dev = f.sysctl(&conf_key(dev, "rp_filter")).unwrap_or(0);
                let mode = rp_all.max(rp_dev);
                if mode == 0 {
                    continue;
                }
                if let Some(problem) = reverse_path(f, net, (dev, *index), *src, what, mode, rp_all)
                {
                    findings.push(problem);
                }
            }
        }
    }
    let forwarding = f.sysctl(IP_FORWARD);
    if f.routing == Some(Routing::Direct) || f.masquerade || f.node_port {
        let fix = "sysctl -w net.ipv4.ip_forward=1 (pilusd turns it on at start with direct \
                   routing, masquerade or NodePort; something turned it off since)";
        match forwarding {
            Some(1) => {}
            Some(v) => findings.push(finding(
                Severity::Fault,
                if f.routing == Some(Routing::Direct) {
                    "IPv4 forwarding is off: with direct routing the node routes its pods' \
                     packets to other nodes and theirs to its pods"
                } else if f.masquerade {
                    "IPv4 forwarding is off: with masquerade the node routes its pods' packets \
                     to the outside"
                } else {
                    "IPv4 forwarding is off: with NodePort the node routes the backends' replies \
                     to the uplink"
                }
                .into(),
                vec![format!("{IP_FORWARD} = {v}")],
                fix,
            )),
            None => findings.push(could_not(IP_FORWARD, "not readable")),
        }
        let mut devs: Vec<&str> = f.uplink.iter().map(String::as_str).collect();
        devs.extend(f.endpoints.iter().map(|e| e.host_ifname.as_str()));
        for dev in devs {
            let key = conf_key(dev, "forwarding");
            if let Some(0) = f.sysctl(&key) {
                findings.push(finding(
                    Severity::Fault,
                    format!("forwarding is off on {dev}: packets arriving there are not routed on"),
                    vec![format!("{key} = 0")],
                    format!("sysctl -w {key}=1"),
                ));
            }
        }
    }
    let mode = match f.routing {
        Some(Routing::Direct) => "needed with direct routing",
        _ if f.masquerade => "needed with masquerade",
        _ if f.node_port => "needed with NodePort",
        Some(Routing::Tunnel) => "not needed in tunnel mode, where the datapath redirects",
        None => "not needed on a node on its own, where the datapath redirects",
    };
    let summary = format!(
        "rp_filter all={rp_all}; {} path(s) into the stack checked; ip_forward={}, {mode}",
        paths.len(),
        forwarding.map_or("?".into(), |v| v.to_string())
    );
    check(NAME, TITLE, summary, findings)
}

/// The kernel's reverse-path check for a packet from `src` arriving on
/// `dev`: the route back to `src` must leave through `dev` (strict, 1) or
/// exist at all (loose, 2).
fn reverse_path(
    f: &Facts,
    net: &Net,
    (dev, index): (&str, Option<u32>),
    src: Ipv4Addr,
    what: &str,
    mode: u32,
    rp_all: u32,
) -> Option<DoctorFinding> {
    let flow = Flow {
        dst: src,
        src: None,
        iif: "lo",
        mark: 0,
    };
    let back = fib::resolve(&net.rules, &net.routes, &flow);
    let ok = match back {
        Resolved::Route { route, .. } if mode == 1 => {
            fib::delivers(route) && index.is_some() && route.oif == index
        }
        Resolved::Route { route, .. } => fib::delivers(route),
        _ => false,
    };
    if ok {
        return None;
    }
    let how = match back {
        Resolved::Route { rule, route } => format!(
            "ip rule {} -> {}",
            fib::show_rule(rule),
            f.show_route(route)
        ),
        Resolved::Refused { rule, .. } => format!("refused by ip rule {}", fib::show_rule(rule)),
        Resolved::NoRoute => "no route".into(),
    };
    let kind = if mode == 1 { "strict" } else { "loose" };
    let key = conf_key(dev, "rp_filter");
    Some(finding(
        Severity::Fault,
        format!(
            "rp_filter is {kind} on {dev} and the route back to {src} does not {}: the kernel \
             drops the packets of {what} that enter the stack there",
            if mode == 1 {
                format!("leave through {dev}")
            } else {
                "exist".into()
            }
        ),
        vec![
            format!("{} = {rp_all}", conf_key("all", "rp_filter")),
            format!("{key} = {}", f.sysctl(&key).unwrap_or(0)),
            format!("route back to {src}: {how}"),
        ],
        format!(
            "fix the route back (the routing check names what takes it), or relax the filter: \
             sysctl -w {key}=0 net.ipv4.conf.all.rp_filter=0 (the kernel applies the larger)"
        ),
    ))
}

/// No map near full.
pub fn map_pressure(f: &Facts) -> DoctorCheck {
    const NAME: &str = "map-pressure";
    const TITLE: &str = "no BPF map is near full";
    let usage = match &f.usage {
        Ok(u) => u,
        Err(e) => return not_checked(NAME, TITLE, "the maps", e),
    };
    let mut findings = Vec::new();
    for m in &usage.maps {
        let p = m.pressure();
        let severity = if p >= PRESSURE_FAULT {
            Severity::Fault
        } else if p >= PRESSURE_WARN {
            Severity::Warning
        } else {
            continue;
        };
        let effect = if m.kind.contains("lru") {
            "an LRU map makes room by evicting its oldest entries (conntrack: established \
             connections lose their state and are judged as new)"
        } else {
            "writes to it fail once it is full: new endpoints, ipcache or policy entries are \
             refused"
        };
        findings.push(finding(
            severity,
            format!(
                "map {} is {:.0}% full ({}/{} entries): {effect}",
                m.name,
                p * 100.0,
                m.entries,
                m.max_entries
            ),
            vec![format!(
                "{} ({}): {} of {} entries",
                m.name, m.kind, m.entries, m.max_entries
            )],
            format!(
                "find what fills it (bpftool map dump pinned {}/{}); its size is fixed in \
                 bpf/lib/maps.h",
                f.pin_dir, m.name
            ),
        ));
    }
    let mut fullest: Vec<_> = usage.maps.iter().collect();
    fullest.sort_by(|a, b| b.pressure().total_cmp(&a.pressure()));
    let summary = format!(
        "{} map(s); fullest: {}",
        usage.maps.len(),
        fullest
            .iter()
            .take(3)
            .map(|m| format!(
                "{} {:.1}% ({}/{})",
                m.name,
                m.pressure() * 100.0,
                m.entries,
                m.max_entries
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    check(NAME, TITLE, summary, findings)
}

/// The ring buffer lost no event since the agent started.
pub fn events_lost(f: &Facts) -> DoctorCheck {
    const NAME: &str = "events-lost";
    const TITLE: &str = "the datapath's ring buffer loses no events";
    let lost = match &f.events_lost {
        Ok(l) => l,
        Err(e) => return not_checked(NAME, TITLE, "the event counters", e),
    };
    let mut findings = Vec::new();
    if lost.since_start > 0 {
        findings.push(finding(
            Severity::Fault,
            format!(
                "the datapath lost {} event(s) since pilusd started: the ring buffer was full, \
                 so pilus monitor misses those packets (their verdicts are still counted)",
                lost.since_start
            ),
            vec![
                format!("{} lost since pilusd started", lost.since_start),
                format!(
                    "pilus_datapath_events_lost_total {} (since the maps were created)",
                    lost.total
                ),
            ],
            "fewer events: raise the aggregation (pilus config MonitorAggregationLevel=maximum) \
             and turn debug and capture off; find a flood of drops with pilus monitor --type \
             drop. The count since pilusd started starts over when it restarts",
        ));
    }
    let summary = format!(
        "{} lost since pilusd started, {} since the maps were created",
        lost.since_start, lost.total
    );
    check(NAME, TITLE, summary, findings)
}

/// The cluster store is reachable (when the node is in a cluster).
pub fn etcd(f: &Facts) -> DoctorCheck {
    const NAME: &str = "etcd";
    const TITLE: &str = "the cluster store (etcd) is reachable";
    let Some(c) = &f.cluster else {
        return check(NAME, TITLE, "not in a cluster (no --etcd)".into(), vec![]);
    };
    let since = c
        .since_unix
        .map(|t| format!(" since {t} (Unix time)"))
        .unwrap_or_default();
    let mut evidence = vec![format!("store: {}{since}", c.store)];
    evidence.extend(c.error.iter().map(|e| format!("last error: {e}")));
    evidence.push(format!("lease: {}", c.lease));
    let mut findings = Vec::new();
    match c.store.as_str() {
        "connected" => {}
        "unreachable" => findings.push(finding(
            Severity::Fault,
            format!(
                "etcd is unreachable{since}: pods, identities, policies and nodes of the rest \
                 of the cluster stop arriving; the datapath keeps forwarding with what it has"
            ),
            evidence.clone(),
            "check the etcd members named by pilusd --etcd (are they up, reachable from this \
             node's namespace?); pilusd reconnects by itself",
        )),
        other => findings.push(finding(
            Severity::Warning,
            format!("the etcd connection is {other}: not yet known to work"),
            evidence.clone(),
            "wait a few seconds and run pilus doctor again",
        )),
    }
    if c.pending_publish {
        findings.push(finding(
            Severity::Warning,
            "this node's pods still have to be published to etcd (changed while it was \
             unreachable)"
                .into(),
            evidence,
            "it is published again once etcd is reachable",
        ));
    }
    check(
        NAME,
        TITLE,
        format!("{}{since}; {} node(s)", c.store, c.nodes),
        findings,
    )
}
