//! Tier 1: every `pilus` command has help that says what it does, and an
//! unreachable agent gives exit code 4 with a message naming the socket.

use std::process::Command;

fn pilus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pilus"))
        .args(args)
        .output()
        .expect("run pilus")
}

#[test]
fn every_command_has_help() {
    let top = pilus(&["--help"]);
    assert!(top.status.success());
    let text = String::from_utf8(top.stdout).unwrap();
    for cmd in [
        "status",
        "endpoint",
        "identity",
        "policy",
        "service",
        "namespace",
        "bpf",
        "monitor",
        "config",
        "doctor",
        "prefilter",
        "bench",
        "Exit codes",
    ] {
        assert!(text.contains(cmd), "`pilus --help` lacks {cmd}:\n{text}");
    }
    for (args, words) in [
        (&["endpoint", "--help"][..], &["list", "get"][..]),
        (&["identity", "--help"], &["list", "get"]),
        (&["policy", "--help"], &["import", "get", "delete", "trace"]),
        (
            &["policy", "import", "--help"],
            &["CiliumNetworkPolicy", "NetworkPolicy", "nothing"],
        ),
        (
            &["policy", "trace", "--help"],
            &["--src", "--dst", "--dport", "80/TCP"],
        ),
        (
            &["trace", "--help"],
            &[
                "--from",
                "--to",
                "--proto",
                "--port",
                "--svg",
                "BPF_PROG_TEST_RUN",
            ],
        ),
        (&["namespace", "--help"], &["label"]),
        (&["bpf", "--help"], &["policy", "ipcache", "ct"]),
        (&["bpf", "ct", "--help"], &["list", "flush"]),
        (&["bpf", "--help"], &["lb"]),
        (
            &["service", "--help"],
            &["upsert", "delete", "list", "get", "import"],
        ),
        (
            &["service", "import", "--help"],
            &[
                "EndpointSlice",
                "All or nothing",
                "service.cilium.io/lb-algorithm",
            ],
        ),
        (
            &["service", "upsert", "--help"],
            &[
                "--frontend",
                "--backend",
                "--algorithm",
                "--affinity",
                "nodeport",
                "weight=",
            ],
        ),
        (&["prefilter", "--help"], &["update", "delete", "list"]),
        (&["prefilter", "update", "--help"], &["--cidr"]),
        (
            &["bench", "--help"],
            &[
                "datapath", "policy", "cni", "api", "traffic", "restart", "all",
            ],
        ),
        (
            &["monitor", "--help"],
            &[
                "--type",
                "policy-verdict",
                "--from",
                "--to",
                "--related-to",
                "--json",
                "cilium monitor -j",
                "--follow",
                "--since",
                "--count",
                "xx drop (",
                "-> endpoint",
                "MonitorAggregationLevel",
            ],
        ),
        (
            &["config", "--help"],
            &["MonitorAggregationLevel", "Debug", "Capture"],
        ),
    ] {
        let out = pilus(args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        for w in words {
            assert!(
                text.contains(w),
                "`pilus {}` lacks {w}:\n{text}",
                args.join(" ")
            );
        }
    }
}

#[test]
fn unreachable_agent_is_exit_code_4() {
    let out = pilus(&["--socket", "/nonexistent/pilus.sock", "status"]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("/nonexistent/pilus.sock"), "{err}");
}

#[test]
fn bad_flags_are_exit_code_2() {
    let out = pilus(&["policy", "trace", "--src", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let out = pilus(&[
        "--socket",
        "/nonexistent/pilus.sock",
        "policy",
        "trace",
        "-s",
        "1",
        "-d",
        "2",
        "--dport",
        "http",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unparsable --dport is refused before contacting the agent"
    );
    let out = pilus(&[
        "--socket",
        "/nonexistent/pilus.sock",
        "monitor",
        "--type",
        "drops",
    ]);
    assert_eq!(out.status.code(), Some(2), "monitor --type drops");
}
