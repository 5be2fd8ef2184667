//! Tier 1: each check over facts made by hand — a healthy node reports
//! clean, and each fault (seed 002's `ip rule`, a pod without its route, a
//! detached program, a full map, lost events, sysctls against the routing
//! mode, etcd away, a socket-LB link gone) is reported with its evidence
//! and fix.

use super::{
    facts::{conf_key, EndpointFact, EventsLost, Facts, HookFact, Net, SocketLbFact, IP_FORWARD},
    fib::{
        tests::{default_rules, route, rule},
        TABLE_LOCAL, TABLE_MAIN,
    },
    report,
};
use pilus_api_types::{ClusterStatus, DoctorCheck, Severity};
use pilus_controlplane::cluster::Routing;
use pilus_datapath::{
    inspect::{MapUsage, Usage},
    HookStatus, SockHookStatus,
};
use std::net::Ipv4Addr;

const VETH: u32 = 7;
const ETH0: u32 = 2;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn hooks(attached: [bool; 2]) -> Vec<HookStatus> {
    [("from_container", "ingress"), ("to_container", "egress")]
        .iter()
        .zip(attached)
        .map(|(&(program, hook), attached)| HookStatus {
            program,
            hook,
            attached,
            filters: if attached {
                vec![format!("{program} prio 1 handle 0x1 id 40")]
            } else {
                vec![]
            },
        })
        .collect()
}

/// One node, one pod (198.18.1.2 on lxc-web, ifindex 7), all well.
fn healthy() -> Facts {
    let mut sysctls = std::collections::BTreeMap::new();
    sysctls.insert(IP_FORWARD.to_string(), 0);
    for dev in ["all", "lxc-web"] {
        sysctls.insert(conf_key(dev, "rp_filter"), 0);
        sysctls.insert(conf_key(dev, "forwarding"), 0);
    }
    Facts {
        node_name: "node-1".into(),
        pod_cidr: "198.18.1.0/24".into(),
        pin_dir: "/sys/fs/bpf/pilus".into(),
        routing: None,
        masquerade: false,
        node_port: false,
        uplink: None,
        overlay: None,
        endpoints: vec![EndpointFact {
            id: 1,
            name: "default/web".into(),
            ip: ip("198.18.1.2"),
            host_ifname: "lxc-web".into(),
            host_ifindex: VETH,
        }],
        remote_pod_cidrs: vec![],
        links: [(1, "lo"), (ETH0, "eth0"), (VETH, "lxc-web")]
            .into_iter()
            .map(|(i, n)| (i, n.to_string()))
            .collect(),
        net: Ok(Net {
            rules: default_rules(),
            routes: vec![
                route("198.18.1.2", TABLE_MAIN, VETH, None),
                route("198.19.0.0/24", TABLE_MAIN, ETH0, None),
                route("198.19.0.1", TABLE_LOCAL, ETH0, None),
            ],
        }),
        sysctls,
        hooks: vec![HookFact {
            ifname: "lxc-web".into(),
            what: "endpoint 1 (default/web)".into(),
            hooks: Ok(Some(hooks([true, true]))),
        }],
        socket_lb: None,
        usage: Ok(Usage {
            maps: vec![
                usage("pilus_ct4", "lru_hash", 12, 262144),
                usage("pilus_frag4", "lru_hash", 0, 8192),
            ],
            conntrack: [(6, 12)].into_iter().collect(),
        }),
        events_lost: Ok(EventsLost::default()),
        cluster: None,
    }
}

fn usage(name: &str, kind: &str, entries: u64, max_entries: u32) -> MapUsage {
    MapUsage {
        name: name.into(),
        kind: kind.into(),
        entries,
        max_entries,
    }
}

fn only<'a>(checks: &'a [DoctorCheck], name: &str) -> &'a DoctorCheck {
    checks.iter().find(|c| c.name == name).unwrap()
}

/// The check `name` and that every other check is ok.
fn faulty(f: &Facts, name: &str) -> DoctorCheck {
    let r = report(f);
    for c in &r.checks {
        if c.name != name {
            assert_eq!(c.status, Severity::Ok, "{c:#?}");
        }
    }
    only(&r.checks, name).clone()
}

fn net(f: &mut Facts) -> &mut Net {
    f.net.as_mut().unwrap()
}

#[test]
fn a_healthy_node_is_clean() {
    let r = report(&healthy());
    assert_eq!(r.status, Severity::Ok, "{r:#?}");
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "routing",
            "programs",
            "socket-lb",
            "sysctl",
            "map-pressure",
            "events-lost",
            "etcd"
        ]
    );
    for c in &r.checks {
        assert!(c.findings.is_empty(), "{c:#?}");
        assert!(!c.summary.is_empty(), "{c:#?}");
    }
    assert!(only(&r.checks, "programs").summary.contains("2 hook(s)"));
}

/// Seed 002: `ip rule add from X table 100 pref 32760` with table 100's
/// default route out of eth0 takes the replies from X to the pod.
#[test]
fn seed_002_rule_sending_pod_replies_to_another_table() {
    let mut f = healthy();
    let mut seed = rule(32760, 100);
    seed.src = ip("198.19.0.9");
    seed.src_len = 32;
    net(&mut f).rules.push(seed);
    net(&mut f)
        .routes
        .push(route("0.0.0.0/0", 100, ETH0, Some(ip("198.19.0.254"))));
    let c = faulty(&f, "routing");
    assert_eq!(c.status, Severity::Fault);
    let found = &c.findings[0];
    assert!(found.problem.contains("ip rule 32760"), "{found:#?}");
    assert!(found.problem.contains("from 198.19.0.9/32"), "{found:#?}");
    assert_eq!(
        found.evidence[0],
        "ip rule 32760: from 198.19.0.9 lookup 100"
    );
    assert!(
        found.evidence[1].contains("198.18.1.2")
            && found.evidence[1].contains("default via 198.19.0.254 dev eth0 table 100")
            && found.evidence[1].contains("main: 198.18.1.2 dev lxc-web table main"),
        "{found:#?}"
    );
    assert!(
        found
            .fix
            .contains("ip rule add to 198.18.1.0/24 lookup main pref 32759"),
        "{}",
        found.fix
    );
    assert!(
        found.fix.contains("ip rule del pref 32760"),
        "{}",
        found.fix
    );
    // Seed 002's fix: a rule ahead of it keeps pod traffic on main.
    let mut keep = rule(32759, TABLE_MAIN);
    keep.dst = ip("198.18.1.0");
    keep.dst_len = 24;
    net(&mut f).rules.push(keep);
    let r = report(&f);
    assert_eq!(r.status, Severity::Ok, "{r:#?}");
}

#[test]
fn rules_that_leave_pods_alone_are_fine() {
    let mut f = healthy();
    // A table without a route for pods: the lookup falls through to main.
    net(&mut f).rules.push(rule(100, 200));
    net(&mut f)
        .routes
        .push(route("198.19.5.0/24", 200, ETH0, None));
    // A table that routes pods the way main does.
    net(&mut f).rules.push(rule(200, 300));
    net(&mut f)
        .routes
        .push(route("198.18.1.2", 300, VETH, None));
    // A rule after main never sees what main routes.
    net(&mut f).rules.push(rule(32800, 400));
    net(&mut f).routes.push(route("0.0.0.0/0", 400, ETH0, None));
    let r = report(&f);
    assert_eq!(r.status, Severity::Ok, "{r:#?}");
    assert!(only(&r.checks, "routing")
        .summary
        .contains("3 rule(s) ahead of main"));
}

#[test]
fn a_marked_only_rule_is_a_warning_a_prohibit_rule_a_fault() {
    let mut f = healthy();
    let mut marked = rule(10, 100);
    marked.fwmark = Some(0x200);
    marked.fwmask = Some(0xf00);
    net(&mut f).rules.push(marked);
    net(&mut f).routes.push(route("0.0.0.0/0", 100, ETH0, None));
    let c = faulty(&f, "routing");
    assert_eq!(c.status, Severity::Warning, "{c:#?}");
    let mut deny = rule(20, 0);
    deny.action = super::fib::RTN_PROHIBIT;
    deny.dst = ip("198.18.0.0");
    deny.dst_len = 15;
    net(&mut f).rules.push(deny);
    let c = only(&report(&f).checks, "routing").clone();
    assert_eq!(c.status, Severity::Fault, "{c:#?}");
    assert!(c
        .findings
        .iter()
        .any(|x| x.evidence.iter().any(|e| e.contains("refused by the rule"))));
}

#[test]
fn a_pod_without_its_route() {
    let mut f = healthy();
    net(&mut f).routes.retain(|r| r.oif != Some(VETH));
    let r = report(&f);
    let c = only(&r.checks, "routing");
    assert_eq!(c.status, Severity::Fault);
    assert!(
        c.findings[0].problem.contains("does not route pod"),
        "{c:#?}"
    );
    assert_eq!(c.findings[0].evidence, ["main: no route"]);
    assert!(c.findings[0]
        .fix
        .contains("ip route replace 198.18.1.2/32 dev lxc-web"));
    // The reverse path is gone too, which only strict or loose rp_filter
    // turns into drops.
    assert_eq!(only(&r.checks, "sysctl").status, Severity::Ok);
    f.sysctls.insert(conf_key("all", "rp_filter"), 1);
    let c = only(&report(&f).checks, "sysctl").clone();
    assert_eq!(c.status, Severity::Fault, "{c:#?}");
    assert!(
        c.findings[0].problem.contains("strict on lxc-web"),
        "{c:#?}"
    );
    assert!(c.findings[0]
        .evidence
        .contains(&"route back to 198.18.1.2: no route".to_string()));
}

#[test]
fn strict_rp_filter_with_the_route_back_elsewhere() {
    let mut f = healthy();
    f.sysctls.insert(conf_key("lxc-web", "rp_filter"), 1);
    assert_eq!(
        report(&f).status,
        Severity::Ok,
        "the route back is the veth"
    );
    // An ip rule takes the way back to the pod out of eth0.
    let mut r = rule(100, 100);
    r.dst = ip("198.18.1.0");
    r.dst_len = 24;
    net(&mut f).rules.push(r);
    net(&mut f).routes.push(route("0.0.0.0/0", 100, ETH0, None));
    let rep = report(&f);
    let c = only(&rep.checks, "sysctl");
    assert_eq!(c.status, Severity::Fault, "{c:#?}");
    assert!(c.findings[0]
        .evidence
        .iter()
        .any(|e| e.contains("ip rule 100: from all to 198.18.1.0/24 lookup 100")));
    // Loose mode is satisfied by any route back.
    f.sysctls.insert(conf_key("lxc-web", "rp_filter"), 2);
    assert_eq!(only(&report(&f).checks, "sysctl").status, Severity::Ok);
}

#[test]
fn forwarding_matters_with_masquerade_or_nodeport_in_tunnel_mode_too() {
    let mut f = healthy();
    f.routing = Some(Routing::Tunnel);
    f.uplink = Some("eth0".into());
    assert_eq!(only(&report(&f).checks, "sysctl").status, Severity::Ok);
    f.masquerade = true;
    let c = only(&report(&f).checks, "sysctl").clone();
    assert_eq!(c.status, Severity::Fault);
    assert!(
        c.findings[0]
            .problem
            .contains("with masquerade the node routes its pods' packets to the outside"),
        "{c:#?}"
    );
    f.sysctls.insert(IP_FORWARD.into(), 1);
    for dev in ["all", "lxc-web", "eth0"] {
        f.sysctls.insert(conf_key(dev, "forwarding"), 1);
    }
    let c = only(&report(&f).checks, "sysctl").clone();
    assert_eq!(c.status, Severity::Ok, "{c:#?}");
    assert!(
        c.summary.contains("needed with masquerade"),
        "{}",
        c.summary
    );
    // NodePort alone needs it too: the backends' replies are routed.
    f.masquerade = false;
    f.node_port = true;
    f.sysctls.insert(IP_FORWARD.into(), 0);
    let c = only(&report(&f).checks, "sysctl").clone();
    assert!(c.findings[0].problem.contains("with NodePort"), "{c:#?}");
}

#[test]
fn forwarding_matters_in_direct_routing_only() {
    let mut f = healthy();
    f.routing = Some(Routing::Tunnel);
    assert_eq!(only(&report(&f).checks, "sysctl").status, Severity::Ok);
    f.routing = Some(Routing::Direct);
    f.uplink = Some("eth0".into());
    f.remote_pod_cidrs = vec![("node-2".into(), "198.18.2.0/24".parse().unwrap())];
    net(&mut f).routes.push(route(
        "198.18.2.0/24",
        TABLE_MAIN,
        ETH0,
        Some(ip("198.19.0.2")),
    ));
    let c = only(&report(&f).checks, "sysctl").clone();
    assert_eq!(c.status, Severity::Fault);
    assert!(c.findings[0].problem.contains("IPv4 forwarding is off"));
    assert_eq!(c.findings[0].evidence, ["net.ipv4.ip_forward = 0"]);
    f.sysctls.insert(IP_FORWARD.into(), 1);
    for dev in ["all", "lxc-web", "eth0"] {
        f.sysctls.insert(conf_key(dev, "forwarding"), 1);
    }
    assert_eq!(only(&report(&f).checks, "sysctl").status, Severity::Ok);
    f.sysctls.insert(conf_key("lxc-web", "forwarding"), 0);
    let c = only(&report(&f).checks, "sysctl").clone();
    assert!(c.findings[0]
        .problem
        .contains("forwarding is off on lxc-web"));
    // Direct routing: a rule that takes other nodes' pods elsewhere.
    f.sysctls.insert(conf_key("lxc-web", "forwarding"), 1);
    let mut r = rule(500, 100);
    r.src = ip("198.18.1.0");
    r.src_len = 24;
    net(&mut f).rules.push(r);
    net(&mut f).routes.push(route("0.0.0.0/0", 100, VETH, None));
    let c = only(&report(&f).checks, "routing").clone();
    assert_eq!(c.status, Severity::Fault);
    assert!(
        c.findings[0]
            .evidence
            .iter()
            .any(|e| e.contains("pods of node node-2 (198.18.2.0/24)")),
        "{c:#?}"
    );
}

#[test]
fn a_detached_program_and_a_missing_veth() {
    let mut f = healthy();
    f.hooks[0].hooks = Ok(Some(hooks([false, true])));
    let c = faulty(&f, "programs");
    assert_eq!(c.status, Severity::Fault);
    assert_eq!(c.findings.len(), 1);
    let x = &c.findings[0];
    assert!(
        x.problem
            .contains("from_container is not attached on lxc-web ingress"),
        "{x:#?}"
    );
    assert_eq!(
        x.evidence[0],
        "tc filter show dev lxc-web ingress: no BPF filter"
    );
    assert!(x.fix.contains("restart pilusd"));
    f.hooks[0].hooks = Ok(None);
    let c = faulty(&f, "programs");
    assert!(c.findings[0].problem.contains("does not exist"));
    f.hooks[0].hooks = Err("rtnetlink: permission denied".into());
    assert_eq!(faulty(&f, "programs").status, Severity::Warning);
}

#[test]
fn map_pressure_thresholds() {
    let mut f = healthy();
    let set = |f: &mut Facts, entries| {
        f.usage.as_mut().unwrap().maps[1].entries = entries;
    };
    set(&mut f, 6000); // 73%
    assert_eq!(report(&f).status, Severity::Ok);
    set(&mut f, 6600); // 80%
    assert_eq!(faulty(&f, "map-pressure").status, Severity::Warning);
    set(&mut f, 8192);
    let c = faulty(&f, "map-pressure");
    assert_eq!(c.status, Severity::Fault);
    assert!(
        c.findings[0]
            .problem
            .contains("map pilus_frag4 is 100% full (8192/8192 entries)"),
        "{c:#?}"
    );
    assert!(c.findings[0].problem.contains("LRU"));
    assert!(
        c.summary.contains("fullest: pilus_frag4 100.0%"),
        "{}",
        c.summary
    );
    assert!(c.findings[0]
        .fix
        .contains("bpftool map dump pinned /sys/fs/bpf/pilus/pilus_frag4"));
}

#[test]
fn events_lost_since_start_are_a_fault_older_ones_history() {
    let mut f = healthy();
    f.events_lost = Ok(EventsLost {
        total: 40,
        since_start: 0,
    });
    let r = report(&f);
    assert_eq!(r.status, Severity::Ok);
    assert!(only(&r.checks, "events-lost").summary.contains("40 since"));
    f.events_lost = Ok(EventsLost {
        total: 52,
        since_start: 12,
    });
    let c = faulty(&f, "events-lost");
    assert_eq!(c.status, Severity::Fault);
    assert!(c.findings[0].problem.contains("lost 12 event(s)"));
}

#[test]
fn etcd_unreachable() {
    let mut f = healthy();
    // From JSON, as the API carries it: fields added later keep their
    // defaults.
    let mut cluster: ClusterStatus = serde_json::from_value(serde_json::json!({
        "store": "connected",
        "since_unix": 1_700_000_000u64,
        "nodes": 2,
        "routing": "tunnel",
        "underlay_ip": "198.19.0.1",
        "lease": "Held",
        "pending_publish": false,
    }))
    .unwrap();
    f.cluster = Some(cluster.clone());
    assert_eq!(report(&f).status, Severity::Ok);
    cluster.store = "unreachable".into();
    cluster.error = Some("connection refused".into());
    cluster.pending_publish = true;
    f.cluster = Some(cluster);
    let c = faulty(&f, "etcd");
    assert_eq!(c.status, Severity::Fault);
    assert!(c.findings[0]
        .problem
        .contains("unreachable since 1700000000"));
    assert!(c.findings[0]
        .evidence
        .contains(&"last error: connection refused".to_string()));
    assert_eq!(c.findings[1].severity, Severity::Warning);
}

#[test]
fn checks_that_cannot_look_say_so() {
    let mut f = healthy();
    f.net = Err("rtnetlink: no buffer space".into());
    f.usage = Err("bpf: operation not permitted".into());
    f.events_lost = Err("gone".into());
    let r = report(&f);
    for name in ["routing", "sysctl", "map-pressure", "events-lost"] {
        let c = only(&r.checks, name);
        assert_eq!(c.status, Severity::Warning, "{c:#?}");
        assert!(c.findings[0].problem.contains("could not read"), "{c:#?}");
    }
    assert_eq!(r.status, Severity::Warning);
}

#[test]
fn a_socket_lb_link_gone_is_a_fault_naming_the_hook() {
    let cgroup = "/sys/fs/cgroup/unified/node";
    let hooks = |gone: &str| -> Vec<SockHookStatus> {
        pilus_datapath::SockProgram::ALL
            .iter()
            .map(|p| SockHookStatus {
                program: p.name(),
                hook: p.hook(),
                attached: p.hook() != gone,
                found: if p.hook() == gone {
                    format!("no cgroup link pinned at /sys/fs/bpf/pilus/links/sock_{gone}")
                } else {
                    "link pinned".into()
                },
            })
            .collect()
    };
    let mut f = healthy();
    // Off: fine, and says so.
    let c = only(&report(&f).checks, "socket-lb").clone();
    assert_eq!(c.status, Severity::Ok);
    assert_eq!(c.summary, "off (no --socket-lb-cgroup)");
    // On, all four attached: fine.
    f.socket_lb = Some(SocketLbFact {
        cgroup: cgroup.into(),
        hooks: Ok(hooks("none")),
    });
    assert_eq!(report(&f).status, Severity::Ok, "{:#?}", report(&f));
    // connect4's link gone.
    f.socket_lb = Some(SocketLbFact {
        cgroup: cgroup.into(),
        hooks: Ok(hooks("connect4")),
    });
    let c = faulty(&f, "socket-lb");
    assert_eq!(c.status, Severity::Fault);
    assert_eq!(c.findings.len(), 1, "{c:#?}");
    let finding = &c.findings[0];
    assert!(
        finding.problem.starts_with(
            "sock4_connect is not attached to connect4 on /sys/fs/cgroup/unified/node: \
             sockets of its processes are not translated there (connect() to a ClusterIP goes \
             to the ClusterIP itself)"
        ),
        "{}",
        finding.problem
    );
    assert_eq!(
        finding.evidence,
        ["no cgroup link pinned at /sys/fs/bpf/pilus/links/sock_connect4"]
    );
    assert!(finding.fix.starts_with("restart pilusd"), "{}", finding.fix);
    // Unreadable: a warning, not a fault.
    f.socket_lb = Some(SocketLbFact {
        cgroup: cgroup.into(),
        hooks: Err("bpffs at /sys/fs/bpf/pilus: permission denied".into()),
    });
    assert_eq!(faulty(&f, "socket-lb").status, Severity::Warning);
}
