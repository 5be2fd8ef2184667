//! Tier 3: each benchmark runs end to end, small, and leaves nothing
//! behind. These check the measuring, never a measured time: a benchmark
//! is a measurement, not an assertion. Needs root and the workspace's
//! binaries (`cargo build --workspace --bins` first); fails without them.

use pilus_bench::{api, cluster, cni, datapath, observe, policy};
use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

/// One benchmark at a time: they share the machine's namespaces and bpffs.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    assert!(unsafe { libc::geteuid() } == 0, "the benchmarks need root");
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where cargo put the binaries: this test is target/<profile>/deps/<name>.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    for b in ["pilusd", "pilus-cni", "pilus"] {
        assert!(
            dir.join(b).is_file(),
            "{b} must be built in {}: run `cargo build --workspace --bins` first",
            dir.display()
        );
    }
    dir
}

/// What the benchmarks make: namespaces by prefix, pins and state by name.
fn leftovers(prefixes: &[&str]) -> Vec<String> {
    let mut left = Vec::new();
    for (dir, names) in [
        ("/run/netns", prefixes.to_vec()),
        ("/sys/fs/bpf", vec!["pilus-bench-"]),
        ("/tmp", vec!["pilus-bench-"]),
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if names.iter().any(|p| name.starts_with(p)) {
                left.push(format!("{dir}/{name}"));
            }
        }
    }
    left
}

#[test]
fn datapath_measures_every_case_with_its_verdict() {
    let _one = serial();
    let r = datapath::run(&datapath::Options {
        repeat: 1000,
        policy_entries: 100,
        repeat_only: false,
    })
    .expect("bench datapath");
    let verdicts: Vec<_> = r.cases.iter().map(|c| (c.method, c.verdict)).collect();
    assert_eq!(
        verdicts,
        [
            ("repeat", "TC_ACT_OK"),
            ("repeat", "TC_ACT_OK"),
            ("repeat", "TC_ACT_SHOT"),
            ("per-call", "TC_ACT_OK"),
            ("per-call", "TC_ACT_REDIRECT"),
            ("per-call", "TC_ACT_REDIRECT"),
        ]
    );
    assert!(r.cases.iter().all(|c| c.ns_per_packet > 0.0));
    assert_eq!(leftovers(&["pbench-"]), Vec::<String>::new());
}

#[test]
fn policy_reports_changes_and_memory_of_a_private_agent() {
    let _one = serial();
    let r = policy::run(&policy::Options {
        endpoints: 4,
        rules: 6,
        apps: 2,
        changes: 5,
        pilusd: bin_dir().join("pilusd"),
    })
    .expect("bench policy");
    // Two workloads' identities besides the reserved ones.
    assert_eq!(r.identities, 7 + 2);
    assert_eq!((r.create_endpoint.runs, r.one_rule_change.runs), (4, 5));
    assert!(r.rss_start_kib > 0 && r.rss_rules_kib > 0);
    assert_eq!(leftovers(&["pbnode-", "pbpods-"]), Vec::<String>::new());
}

#[test]
fn api_holds_half_open_connections_through_the_header_timeout() {
    let _one = serial();
    // A phase longer than pilusd's 5 s header timeout: the held set is
    // closed once and reopened.
    let r = api::run(&api::Options {
        requests: 20,
        half_open: 50,
        phase: Duration::from_millis(5600),
        pilusd: bin_dir().join("pilusd"),
    })
    .expect("bench api");
    assert_eq!((r.idle.runs, r.held.runs, r.idle_after.runs), (20, 20, 20));
    assert!(r.reopened >= 50, "reopened {}", r.reopened);
    assert!(r.readings_held.open_fds >= r.readings_idle.open_fds + 50);
    assert!(r.readings_after.open_fds < r.readings_idle.open_fds + 50);
    assert_eq!(leftovers(&["pbapi-"]), Vec::<String>::new());
}

#[test]
fn cni_adds_and_deletes_through_the_plugin() {
    let _one = serial();
    let r = cni::run(&cni::Options {
        pods: 2,
        bin_dir: bin_dir(),
    })
    .expect("bench cni");
    assert_eq!((r.add.runs, r.del.runs, r.exec_version.runs), (2, 2, 2));
    assert_eq!(leftovers(&["pbcni-"]), Vec::<String>::new());
    assert!(!Path::new("/sys/fs/bpf/pilus-bench-cni").exists());
}

#[test]
fn cluster_propagates_pods_and_ingests_a_simulated_cluster() {
    let _one = serial();
    let mut opts = cluster::ClusterOptions::new(bin_dir());
    opts.pods = 4;
    opts.sim_nodes = 3;
    opts.endpoints_per_node = 5;
    opts.one_more = 2;
    let r = cluster::run(&opts).expect("bench cluster");
    assert_eq!(
        (
            r.propagation.cni_add.runs,
            r.propagation.from_add_start.runs
        ),
        (4, 4)
    );
    assert_eq!((r.scale.endpoints, r.scale.one_more.runs), (15, 2));
    assert!(r.scale.rss_before_kib > 0 && r.scale.restart_rss_kib > 0);
    assert_eq!(leftovers(&["pbprop-", "pbscale-"]), Vec::<String>::new());
    assert!(!Path::new("/sys/fs/bpf/pilus-bench-pbprop").exists());
}

#[test]
fn observe_measures_every_configuration_in_each_round() {
    let _one = serial();
    let r = observe::run(&observe::Options {
        bin_dir: bin_dir(),
        iperf3: "iperf3".into(),
        rounds: 2,
        seconds: 1,
    })
    .expect("bench observe (needs iperf3: scripts/deps.sh installs it)");
    assert_eq!(r.rows.len(), observe::Config::ALL.len());
    for row in &r.rows {
        assert_eq!((row.rr_tps.len(), row.stream_gbps.len()), (2, 2), "{row:?}");
        assert!(
            row.rr_tps.iter().all(|t| *t > 0.0) && row.stream_gbps.iter().all(|g| *g > 0.0),
            "{row:?}"
        );
    }
    // Ratios are paired with the floors of the same round.
    let floor = &r.rows[1];
    assert_eq!(floor.config, observe::Config::CompiledOut);
    assert_eq!(
        (floor.rr_vs_compiled_out, floor.stream_vs_compiled_out),
        (1.0, 1.0)
    );
    assert!(!r.loadavg_before.is_empty());
    let mut prefixes: Vec<String> = observe::PREFIXES.iter().map(|p| format!("{p}-")).collect();
    prefixes.push("pilus-bench-pbobs".into());
    let p: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    assert_eq!(leftovers(&p), Vec::<String>::new());
    for p in ["pbobsa", "pbobsb"] {
        assert!(!Path::new(&format!("/sys/fs/bpf/pilus-bench-{p}")).exists());
    }
}
