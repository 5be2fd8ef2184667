//! Tier 3: `pilus lab demo` end to end (two nodes, an etcd, the tunnel), as
//! the README runs it (with its own lab directory and namespace prefix, so
//! a lab a developer has up is not touched). The demo checks its own claims (allowed traffic passes,
//! denied traffic is dropped and reported); this test checks that it ran
//! every step and left nothing behind.

use std::{path::Path, process::Command};

#[test]
fn lab_demo_runs_end_to_end_and_cleans_up() {
    assert!(unsafe { libc::geteuid() } == 0, "the demo needs root");
    let pilus = env!("CARGO_BIN_EXE_pilus");
    for sibling in ["pilusd", "pilus-cni"] {
        assert!(
            Path::new(pilus).with_file_name(sibling).exists(),
            "{sibling} must be built next to pilus: run `cargo build --workspace --bins` first"
        );
    }
    let dir = std::env::temp_dir().join("pilus-t9demo");
    let out = Command::new(pilus)
        .args(["lab", "demo"])
        .env("PILUS_LAB_DIR", &dir)
        .env("PILUS_LAB_PREFIX", "t9demo")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "[1/8]",
        "the same labels have the same identity on both nodes",
        "frontend-1 -> backend-1:80/TCP: connected, reply \"hello from backend-1\"",
        "-> endpoint",
        "(to-endpoint)",
        "frontend-1 -> backend-2:80/TCP: connected, reply \"hello from backend-2\"",
        "-> overlay (to-overlay)",
        "(to-endpoint) flow 0x",
        "state new",
        "udp/8472 VXLAN VNI",
        "i.e. the VNI carries identity",
        "imported; revision",
        "node-2 has it too (through etcd)",
        "db-1 -> backend-1:80/TCP: no answer (dropped)",
        "Policy verdict log:",
        "action allow, match L3-L4, policy: allowed by CiliumNetworkPolicy demo/backend-from-frontend rule spec.ingress[0]",
        "xx drop (Policy denied",
        "policy: default deny: endpoint selected by policy CiliumNetworkPolicy demo/backend-from-frontend; no rule allows this peer",
        "is selected by CiliumNetworkPolicy demo/backend-from-frontend",
        "db-1 -> backend-2:80/TCP: no answer (dropped)",
        "node-2 judged the packet on arrival (from-overlay)",
        "asked before sending anything (pilus trace --from demo/frontend-1 --to 198.18.2.3 --proto tcp --port 80):",
        "verdict: to node-2 via tunnel",
        "asked before sending anything (pilus trace --from demo/db-1 --to demo/backend-1 --proto tcp --port 80):",
        "verdict: dropped: Policy denied",
        "every node's drops as flows (pilus observe --all-nodes --pod demo/db-1 --verdict DROPPED):",
        "[node-2]: demo/db-1:",
        "DROPPED (Policy denied",
        "[6/8]",
        "[7/8] A service",
        "pilus bpf lb list: 198.19.128.10:80/TCP -> ",
        "new connections to 198.19.128.10:80 answered \"hello from backend-1\"",
        "new connections to 198.19.128.10:80 answered \"hello from backend-2\"",
        "[8/8] A pod reaches the outside",
        "the outside saw the connection come from 198.19.0.1:",
        "frontend-1 -> 198.19.0.240/ICMP: echo reply",
        "Lab removed",
    ] {
        assert!(
            text.contains(needle),
            "demo output lacks {needle:?}:\n{text}"
        );
    }
    assert!(!dir.exists(), "lab directory left behind");
    assert!(
        !Path::new("/sys/fs/bpf/pilus-t9demo").exists(),
        "pins left behind"
    );
    let ns = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("t9demo-"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(ns, 0, "namespaces left behind");
}
