//! Tier 3: the metrics of a real agent (pilusd in a lab node's namespace,
//! pods by pilus-cni, real traffic, a real policy), checked by Debian's
//! Prometheus tooling: `promtool check metrics` passes on its scrape, and a
//! real `prometheus` server started inside the node's namespace scrapes
//! 127.0.0.1:9962 there, and a PromQL query over its HTTP API sees the
//! drop counter stand still through allowed traffic and move with denied
//! traffic.
//!
//! Needs root, promtool and prometheus (`scripts/deps.sh` installs the
//! Debian package); fails, never skips, without them. The Prometheus
//! server is this test's child, its storage in the lab's directory: the
//! guard kills it, and the lab's teardown (which kills whatever names the
//! lab's directory) catches it after a crash.

mod lab_fixture;

use lab_fixture::{replied, wait_for, LabNode, DB_FROM_BACKEND, NO, YES};
use pilus_lab::serve::Proto;
use serde_json::Value;
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Where the Debian package puts them.
fn tool(name: &str) -> PathBuf {
    let p = Path::new("/usr/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: `source scripts/deps.sh; pilus_build_deps` installs Debian's prometheus \
         package (prometheus and promtool)",
        p.display()
    );
    p
}

/// The agent's metrics address inside its node's namespace (the default).
const METRICS: &str = "127.0.0.1:9962";
/// The test's Prometheus server, also inside the node's namespace.
const PROMETHEUS: &str = "127.0.0.1:9090";

/// A lab node with frontend-1, backend-1 and db-1, `db-from-backend`
/// imported, and traffic that was allowed and denied.
fn lab_with_traffic(prefix: &str) -> LabNode {
    let lab = LabNode::up(prefix, 3);
    lab.import("node-1", DB_FROM_BACKEND);
    allowed(&lab);
    denied(&lab, 1);
    lab
}

fn allowed(lab: &LabNode) {
    for (from, to) in [("frontend-1", "backend-1"), ("backend-1", "db-1")] {
        assert!(
            replied(&lab.probe(from, to, Proto::Tcp, YES)),
            "{from} -> {to} is allowed"
        );
    }
}

fn denied(lab: &LabNode, times: usize) {
    for _ in 0..times {
        assert!(
            !replied(&lab.probe("frontend-1", "db-1", Proto::Tcp, NO)),
            "frontend-1 -> db-1 is denied"
        );
    }
}

/// The value of the sample line `series` (exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn promtool_passes_on_a_real_agents_scrape() {
    let promtool = tool("promtool");
    let lab = lab_with_traffic("t12mtool");
    let m = lab.http_get("node-1", METRICS, "/metrics", "text/plain");
    assert_eq!(m.status, 200, "{}", m.head);
    assert!(
        m.head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        m.head
    );
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(m.body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n--- the scrape ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        m.body
    );
    // What the lab did shows.
    let text = &m.body;
    assert_eq!(sample(text, "pilus_endpoints"), Some(3.0), "{text}");
    assert_eq!(sample(text, "pilus_policies"), Some(1.0), "{text}");
    let drops = sample(
        text,
        r#"pilus_drop_packets_total{reason="DROP_POLICY",direction="ingress"}"#,
    );
    assert!(drops.is_some_and(|d| d >= 1.0), "{text}");
    assert!(
        sample(text, r#"pilus_forward_packets_total{direction="egress"}"#).is_some_and(|n| n > 0.0),
        "{text}"
    );
    assert!(
        sample(text, r#"pilus_conntrack_entries{protocol="tcp"}"#).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            text,
            r#"pilus_policy_import_duration_seconds_count{outcome="applied"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(text, r#"pilus_bpf_map_entries{map="pilus_lxc_if"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(sample(text, "pilus_datapath_events_lost_total"), Some(0.0));
    // The drop the datapath counted reached the monitor too.
    assert!(
        sample(text, r#"pilus_datapath_events_total{type="drop"}"#).is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

/// A Prometheus server, this test's child; killed and reaped on drop.
struct PrometheusServer {
    child: Child,
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `prometheus` inside `node`'s namespace, scraping the agent every
/// second, its storage and configuration under the lab's directory.
fn start_prometheus(lab: &LabNode, node: &str) -> PrometheusServer {
    let prometheus = tool("prometheus");
    let dir = lab.lab.paths.dir.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: pilus\n    scrape_interval: 1s\n    \
             scrape_timeout: 1s\n    static_configs:\n      - targets: ['{METRICS}']\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={PROMETHEUS}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("prometheus.err")).unwrap());
    let ns = std::fs::File::open(lab.netns(node)).unwrap();
    pilus_lab::cni::exec_in_netns(&mut cmd, &ns, false);
    PrometheusServer {
        child: cmd.spawn().expect("start prometheus"),
    }
}

/// A percent-encoded query string value.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant PromQL query's single value, if it has one.
fn query(lab: &LabNode, promql: &str) -> Option<f64> {
    let r = lab.http_get(
        "node-1",
        PROMETHEUS,
        &format!("/api/v1/query?query={}", encode(promql)),
        "application/json",
    );
    assert_eq!(r.status, 200, "{promql}: {}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["status"], "success", "{promql}: {v}");
    let result = v["data"]["result"].as_array()?;
    let first = result.first()?;
    first["value"][1].as_str()?.parse().ok()
}

fn ready(lab: &LabNode) -> bool {
    let _inside = pilus_netlink::netns::enter_path(&lab.netns("node-1")).unwrap();
    std::net::TcpStream::connect(PROMETHEUS).is_ok()
}

#[test]
fn prometheus_scrapes_the_agent_and_the_drop_counter_moves_with_denied_traffic() {
    let lab = LabNode::up("t12mprom", 3);
    lab.import("node-1", DB_FROM_BACKEND);
    let mut server = start_prometheus(&lab, "node-1");
    let log = lab.lab.paths.dir.join("prometheus/prometheus.err");
    let started = std::time::Instant::now();
    while !ready(&lab) {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "prometheus exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "prometheus did not listen on {PROMETHEUS} within 30 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(
        "prometheus scraped the agent",
        Duration::from_secs(30),
        || query(&lab, r#"up{job="pilus"}"#) == Some(1.0),
    );
    let drops = r#"sum(pilus_drop_packets_total{job="pilus",reason="DROP_POLICY"})"#;
    let scrapes = r#"count_over_time(up{job="pilus"}[1h])"#;
    let before = query(&lab, drops).expect("the drop counter is scraped before any drop");
    // The readiness probes' connections closed before the policy came: none
    // of their last packets is judged by it (serve::probe closes both ways).
    assert_eq!(before, 0.0, "no policy drop before any denied traffic");
    // Allowed traffic, and two more scrapes: the drop counter stands still
    // while the forward counter moves.
    let forwarded = r#"sum(pilus_forward_packets_total{job="pilus"})"#;
    let fwd_before = query(&lab, forwarded).unwrap();
    allowed(&lab);
    let seen = query(&lab, scrapes).unwrap();
    wait_for("two more scrapes", Duration::from_secs(15), || {
        query(&lab, scrapes).is_some_and(|n| n >= seen + 2.0)
    });
    assert!(query(&lab, forwarded).unwrap() > fwd_before);
    assert_eq!(
        query(&lab, drops),
        Some(before),
        "no drop for allowed traffic"
    );
    // Denied traffic: the scraped counter moves by at least as many drops.
    let denials = 3;
    denied(&lab, denials);
    wait_for(
        "the scraped drop counter moves with the denials",
        Duration::from_secs(15),
        || query(&lab, drops).is_some_and(|d| d >= before + denials as f64),
    );
    // PromQL over the range sees the increase too.
    let increase = query(
        &lab,
        r#"sum(increase(pilus_drop_packets_total{job="pilus",reason="DROP_POLICY",direction="ingress"}[1h]))"#,
    )
    .unwrap();
    assert!(increase >= denials as f64, "increase {increase}");
}
