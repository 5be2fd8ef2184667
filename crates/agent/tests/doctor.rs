//! Tier 3: `pilus doctor` on real lab nodes (pilusd in a node namespace,
//! pods by pilus-cni): a healthy node — alone, and in a cluster with direct
//! routing — is clean; each fault injected into a node is found with its
//! evidence, and goes once undone: seed 002's `ip rule` (which really
//! takes the node's packets for its pods elsewhere, and seed 002's own fix
//! brings them back), a detached program (one tc filter deleted; a
//! restarted agent puts it back), a full map (pilus_frag4 filled from
//! outside), etcd gone.
//!
//! Needs root (and etcd for the cluster); fails, never skips, without.

mod lab_fixture;

use aya::maps::{HashMap, MapData};
use lab_fixture::{assert_clean, check, replied, LabNode, NO, YES};
use pilus_abi::{Be16, Be32, FragKey4, FragPorts};
use pilus_api_types::{DoctorReport, Severity};
use pilus_lab::{plan::Routing, serve::Proto};
use std::{net::Ipv4Addr, time::Duration};

/// `pilus doctor` (human and `-o json`) agrees with the API; its exit code.
fn cli_doctor(lab: &LabNode, node: &str) -> (i32, DoctorReport, String) {
    let json = lab.pilus(node, &["-o", "json", "doctor"]);
    let report: DoctorReport = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("pilus -o json doctor: {e}: {json:?}"));
    let human = lab.pilus(node, &["doctor"]);
    assert_eq!(human.status.code(), json.status.code());
    (
        json.status.code().unwrap(),
        report,
        String::from_utf8_lossy(&human.stdout).into_owned(),
    )
}

#[test]
fn a_healthy_node_is_clean() {
    let lab = LabNode::up("t12dok", 3);
    assert!(replied(&lab.probe(
        "frontend-1",
        "backend-1",
        Proto::Tcp,
        YES
    )));
    let (code, report, human) = cli_doctor(&lab, "node-1");
    assert_clean(&report);
    assert_eq!(code, 0, "{human}");
    assert!(human.contains("0 fault(s), 0 warning(s)"), "{human}");
    assert!(
        check(&report, "programs").summary.contains("6 hook(s)"),
        "three endpoints, two hooks each: {report:#?}"
    );
    assert!(check(&report, "etcd").summary.contains("not in a cluster"));
}

/// Seed 002: a policy route for one source (`from X lookup 100`) whose
/// table sends everything out of eth0 takes X's packets for the pods
/// around the pods' routes.
#[test]
fn seed_002_ip_rule_is_found_and_seed_002s_fix_clears_it() {
    let lab = LabNode::up("t12drule", 2);
    let node_ip = lab.lab.state.plan.nodes[0].underlay_ip;
    assert!(
        replied(&lab.probe_from_node("node-1", "backend-1", Proto::Tcp, YES)),
        "the node reaches its pods before"
    );
    lab.ip(
        "node-1",
        "route add default via 198.19.0.254 dev eth0 table 100",
    );
    lab.ip(
        "node-1",
        &format!("rule add from {node_ip} lookup 100 pref 32760"),
    );
    assert!(
        !replied(&lab.probe_from_node("node-1", "backend-1", Proto::Tcp, NO)),
        "the rule takes the node's packets for its pods out of eth0"
    );
    let (code, report, human) = cli_doctor(&lab, "node-1");
    assert_eq!(code, 5, "{human}");
    assert_eq!(report.status, Severity::Fault);
    let c = check(&report, "routing");
    assert_eq!(c.status, Severity::Fault, "{c:#?}");
    let f = &c.findings[0];
    assert_eq!(
        f.evidence[0],
        format!("ip rule 32760: from {node_ip} lookup 100"),
        "{f:#?}"
    );
    let backend = lab.lab.pod("backend-1").unwrap();
    assert!(
        f.evidence
            .iter()
            .any(|e| e.contains(&backend.ip.to_string())
                && e.contains("default via 198.19.0.254 dev eth0 table 100")),
        "{f:#?}"
    );
    assert!(
        f.fix
            .contains("ip rule add to 198.18.1.0/24 lookup main pref 32759"),
        "{f:#?}"
    );
    assert!(human.contains("[FAULT] routing"), "{human}");
    assert!(human.contains("seen: ip rule 32760"), "{human}");
    // Only the routing check sees it.
    for other in report.checks.iter().filter(|c| c.name != "routing") {
        assert_eq!(other.status, Severity::Ok, "{other:#?}");
    }
    // Seed 002's fix, as the doctor words it.
    lab.ip("node-1", "rule add to 198.18.1.0/24 lookup main pref 32759");
    assert!(replied(&lab.probe_from_node(
        "node-1",
        "backend-1",
        Proto::Tcp,
        YES
    )));
    assert_clean(&lab.doctor("node-1"));
}

/// The tc filter of one endpoint's ingress hook deleted by hand: packets
/// from that pod would skip its egress policy and conntrack.
#[test]
fn a_detached_program_is_found_and_a_restart_reattaches_it() {
    let mut lab = LabNode::up("t12dprog", 2);
    let ep: pilus_api_types::Endpoint = lab
        .client("node-1")
        .get_json(&format!(
            "/v1/endpoints/{}",
            lab.lab.pod("frontend-1").unwrap().container_id
        ))
        .unwrap();
    lab.tc(
        "node-1",
        &format!("filter del dev {} ingress pref 1", ep.host_ifname),
    );
    let (code, report, human) = cli_doctor(&lab, "node-1");
    assert_eq!(code, 5, "{human}");
    let c = check(&report, "programs");
    assert_eq!(c.status, Severity::Fault, "{c:#?}");
    assert_eq!(c.findings.len(), 1, "only the deleted hook: {c:#?}");
    let f = &c.findings[0];
    assert!(
        f.problem.contains(&format!(
            "from_container is not attached on {} ingress",
            ep.host_ifname
        )),
        "{f:#?}"
    );
    assert!(f.problem.contains(&format!("endpoint {}", ep.id)), "{f:#?}");
    assert_eq!(
        f.evidence[0],
        format!(
            "tc filter show dev {} ingress: no BPF filter",
            ep.host_ifname
        )
    );
    assert!(f.fix.contains("restart pilusd"), "{f:#?}");
    // The fix it names.
    lab.lab.stop_agent("node-1").unwrap();
    lab.lab.start_agent_again("node-1").unwrap();
    assert_clean(&lab.doctor("node-1"));
    assert!(replied(&lab.probe(
        "frontend-1",
        "backend-1",
        Proto::Tcp,
        YES
    )));
}

/// pilus_frag4 (8,192 entries) filled from outside, as a flood of
/// fragments would: a fault at 90% and more, gone once emptied.
#[test]
fn a_full_map_is_found() {
    let lab = LabNode::up("t12dmap", 1);
    let pin = lab.lab.paths.pins.join("node-1").join("pilus_frag4");
    let map = aya::maps::Map::from_map_data(MapData::from_pin(&pin).expect("the pinned map"));
    let mut frags: HashMap<MapData, FragKey4, FragPorts> = HashMap::try_from(map.unwrap()).unwrap();
    let max = 8192u32;
    let keys: Vec<FragKey4> = (0..max)
        .map(|i| FragKey4 {
            saddr: Be32::from(Ipv4Addr::new(198, 18, 200, (i % 250) as u8)),
            daddr: Be32::from(Ipv4Addr::new(198, 18, 201, 1)),
            id: Be16::new(i as u16),
            protocol: 17,
            _pad: 0,
        })
        .collect();
    for k in &keys {
        frags.insert(k, FragPorts::default(), 0).unwrap();
    }
    let (code, report, human) = cli_doctor(&lab, "node-1");
    assert_eq!(code, 5, "{human}");
    let c = check(&report, "map-pressure");
    assert_eq!(c.status, Severity::Fault, "{c:#?}");
    let f = &c.findings[0];
    // An LRU map may evict a little before it is full (its free entries
    // are spread over per-CPU lists): whatever it holds, from 90% on.
    let held: u32 = f
        .problem
        .strip_prefix("map pilus_frag4 is ")
        .and_then(|rest| rest.split_once("% full ("))
        .and_then(|(_, rest)| rest.split_once("/8192 entries)"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("not a pressure finding about pilus_frag4: {f:#?}"));
    assert!(held >= max * 9 / 10, "{f:#?}");
    assert!(f.problem.contains("LRU"), "{f:#?}");
    // The metrics say the same.
    let m = lab.http_get("node-1", "127.0.0.1:9962", "/metrics", "text/plain");
    let ratio: f64 = m
        .body
        .lines()
        .find_map(|l| l.strip_prefix("pilus_bpf_map_pressure_ratio{map=\"pilus_frag4\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pressure ratio for pilus_frag4:\n{}", m.body));
    assert!(
        (ratio - f64::from(held) / f64::from(max)).abs() < 0.02,
        "metrics {ratio} against the doctor's {held}/{max}"
    );
    for k in &keys {
        let _ = frags.remove(k);
    }
    assert_clean(&lab.doctor("node-1"));
}

/// Two nodes with direct routing and etcd: the uplink's programs,
/// forwarding and the reverse paths of the other node's pods are checked
/// and clean; with etcd gone, the etcd check is a fault.
#[test]
fn a_healthy_cluster_is_clean_and_etcd_away_is_a_fault() {
    let mut lab = LabNode::cluster("t12detcd", 2, 1, Routing::Direct);
    assert!(replied(&lab.probe(
        "frontend-1",
        "frontend-2",
        Proto::Tcp,
        YES
    )));
    for node in ["node-1", "node-2"] {
        let r = lab.doctor(node);
        assert_clean(&r);
        assert!(
            check(&r, "programs")
                .summary
                .contains("2 device(s), 4 hook(s)"),
            "a pod's veth and the uplink: {r:#?}"
        );
        assert!(
            check(&r, "sysctl").summary.contains("ip_forward=1"),
            "{r:#?}"
        );
        assert!(
            check(&r, "routing")
                .summary
                .contains("2 address(es) Pilus routes"),
            "the pod and the other node's pod CIDR: {r:#?}"
        );
        assert!(check(&r, "etcd").summary.starts_with("connected"), "{r:#?}");
    }
    let etcd = lab.lab.state.etcd[0].name.clone();
    lab.lab.kill_etcd(&etcd).unwrap();
    lab_fixture::wait_for("the doctor sees etcd away", Duration::from_secs(15), || {
        check(&lab.doctor("node-1"), "etcd").status == Severity::Fault
    });
    let (code, report, _) = cli_doctor(&lab, "node-1");
    assert_eq!(code, 5);
    let f = &check(&report, "etcd").findings[0];
    assert!(f.problem.contains("etcd is unreachable"), "{f:#?}");
    assert!(
        f.evidence.iter().any(|e| e.starts_with("last error:")),
        "{f:#?}"
    );
}
