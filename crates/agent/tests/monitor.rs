//! Tier 3: `GET /v1/monitor` and `pilus monitor` over real traffic. pilusd
//! runs with --trace in a node namespace; a client pod opens TCP to a web
//! pod, then a deny policy stops it. The allowed flow must show as trace
//! events and the denied one as a policy drop, with the right addresses,
//! port, endpoints and identities; the CLI must print and follow them.
//! An agent restarted with --trace reads the drops the pinned ring buffer
//! kept while it was down, and traces endpoints attached before.
//!
//! Needs root; fails (never skips) without it. The fixture removes the
//! agent, its pins and state, every namespace and link, also on failure.

mod common;

use common::{pilus_cli, Cluster, Pod, NO, YES};
use pilus_api_types::{MonitorBatch, MonitorEvent, MonitorKind};
use pilus_netns::{probe, ChildGuard};
use std::{
    io::Read,
    net::SocketAddrV4,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const DENY_CLIENT_TO_WEB_80: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: no-client-80, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;

/// Where "now" is in the agent's event sequence.
fn now(c: &Cluster) -> u64 {
    let b: MonitorBatch = c.client().get_json("/v1/monitor?last=0").unwrap();
    assert!(b.events.is_empty(), "last=0 returns no events");
    b.next
}

/// Long-polls events of `kind` after `since` until one satisfies `want`
/// (within 10 s); panics with everything seen otherwise.
fn wait_for(
    c: &Cluster,
    since: u64,
    kind: &str,
    want: impl Fn(&MonitorEvent) -> bool,
) -> MonitorEvent {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut since = since;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let b: MonitorBatch = c
            .client()
            .get_json(&format!(
                "/v1/monitor?since={since}&type={kind}&wait_ms=1000"
            ))
            .unwrap();
        assert!(b.next >= since, "next {} went back from {since}", b.next);
        for e in b.events {
            assert!(e.seq > since, "event {} not after since={since}", e.seq);
            if want(&e) {
                return e;
            }
            seen.push(pilus_monitor::format_line(&e));
        }
        since = b.next;
    }
    panic!(
        "no matching {kind} event within 10s; saw:\n{}",
        seen.join("\n")
    );
}

/// TCP from `from` to `to`:80 with SYN set (the opening segment).
fn syn_to_80(e: &MonitorEvent, from: &Pod, to: &Pod) -> bool {
    e.packet.src_ip == Some(from.ep.ipv4)
        && e.packet.dst_ip == Some(to.ep.ipv4)
        && e.packet.protocol == Some(6)
        && e.packet.dst_port == Some(80)
        && e.packet
            .tcp_flags
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == "SYN"))
}

fn pilus(c: &Cluster, args: &[&str]) -> Command {
    let mut cmd = Command::new(pilus_cli());
    cmd.arg("--socket").arg(c.socket()).args(args);
    cmd
}

#[test]
fn monitor_shows_traces_of_allowed_and_policy_drops_of_denied_traffic() {
    let mut c = Cluster::new("t5", "monitor", &["--trace"]);
    c.add_pod("shop", "web");
    c.add_pod("shop", "client");
    let (web, client) = (c.pod("shop", "web"), c.pod("shop", "client"));
    let web_80 = SocketAddrV4::new(web.ep.ipv4, 80);

    // Allowed: no policy selects web yet.
    let since = now(&c);
    assert!(
        probe::tcp(&client.ns, web_80, YES).unwrap(),
        "TCP to web:80 before the policy"
    );
    let t = wait_for(&c, since, "trace", |e| syn_to_80(e, client, web));
    assert_eq!(t.kind, MonitorKind::Trace);
    assert_eq!(
        (t.observation_point.as_str(), t.direction.as_str()),
        ("to-endpoint", "egress"),
        "delivered pod to pod by the client's program"
    );
    assert_eq!(
        (t.endpoint, t.src_endpoint, t.dst_endpoint),
        (client.ep.id, Some(client.ep.id), Some(web.ep.id))
    );
    assert_eq!(
        (t.src_identity, t.dst_identity),
        (client.ep.identity, web.ep.identity)
    );
    assert_eq!(t.ifindex, client.ep.host_ifindex);
    assert_eq!(t.reason, None);
    // The reply is traced too, reported by the web pod's program.
    let reply = wait_for(&c, since, "trace", |e| {
        e.packet.src_ip == Some(web.ep.ipv4)
            && e.packet.src_port == Some(80)
            && e.packet.dst_ip == Some(client.ep.ipv4)
    });
    assert_eq!(
        (reply.endpoint, reply.dst_endpoint),
        (web.ep.id, Some(client.ep.id))
    );
    // The CLI prints it Cilium-style.
    let out = pilus(
        &c,
        &["monitor", "--type", "trace", "--since", &since.to_string()],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let want = format!(
        "-> endpoint {} (to-endpoint) identity {}->{}: {}:",
        web.ep.id, client.ep.identity, web.ep.identity, client.ep.ipv4
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&want) && l.ends_with(&format!("-> {web_80} tcp SYN"))),
        "no line `{want}… -> {web_80} tcp SYN` in:\n{text}"
    );

    // Denied: a deny rule for client -> web:80.
    c.import(DENY_CLIENT_TO_WEB_80)
        .expect("import the deny policy");
    let (web, client) = (c.pod("shop", "web"), c.pod("shop", "client"));
    let since = now(&c);
    // `pilus monitor -f` started before the drop long-polls and prints it.
    let mut follow = ChildGuard::spawn({
        let mut cmd = pilus(
            &c,
            &[
                "monitor",
                "-f",
                "--type",
                "drop",
                "--count",
                "1",
                "--since",
                &since.to_string(),
            ],
        );
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        cmd
    })
    .expect("start pilus monitor -f");
    assert!(
        !probe::tcp(&client.ns, web_80, NO).unwrap(),
        "TCP to web:80 after the deny"
    );
    let d = wait_for(&c, since, "drop", |e| syn_to_80(e, client, web));
    assert_eq!(d.kind, MonitorKind::Drop);
    let reason = d.reason.as_ref().expect("a drop has a reason");
    assert!(
        ["DROP_POLICY", "DROP_POLICY_DENY"].contains(&reason.name.as_str()),
        "reason {reason:?}"
    );
    assert_eq!(
        reason.name, "DROP_POLICY_DENY",
        "a deny rule matched, not a missing allow"
    );
    assert_eq!(
        (d.observation_point.as_str(), d.direction.as_str()),
        ("from-endpoint", "ingress"),
        "web's ingress policy, applied in the client's program"
    );
    assert_eq!(
        (d.endpoint, d.src_endpoint, d.dst_endpoint),
        (client.ep.id, Some(client.ep.id), Some(web.ep.id))
    );
    assert_eq!(
        (d.src_identity, d.dst_identity),
        (client.ep.identity, web.ep.identity)
    );
    // No trace of the denied flow's SYN after the policy.
    let b: MonitorBatch = c
        .client()
        .get_json(&format!("/v1/monitor?since={since}&type=trace"))
        .unwrap();
    assert!(
        !b.events.iter().any(|e| syn_to_80(e, client, web)),
        "a denied SYN was traced as forwarded"
    );

    let st = follow
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("pilus monitor -f --count 1 exits after the drop");
    assert!(st.success(), "pilus monitor -f: {st}");
    let mut line = String::new();
    follow
        .take_stdout()
        .unwrap()
        .read_to_string(&mut line)
        .unwrap();
    let want = format!(
        "xx drop (Policy denied by a deny rule) ep {} identity {}->{}: {}:",
        client.ep.id, client.ep.identity, web.ep.identity, client.ep.ipv4
    );
    assert_eq!(line.lines().count(), 1, "--count 1: {line}");
    assert!(
        line.starts_with(&want) && line.trim_end().ends_with(&format!("-> {web_80} tcp SYN")),
        "want `{want}… -> {web_80} tcp SYN`, got {line}"
    );
}

#[test]
fn a_restarted_agent_reads_what_the_pinned_ring_kept_and_traces_existing_endpoints() {
    let mut c = Cluster::new("t5", "restart", &[]);
    c.add_pod("shop", "web");
    c.add_pod("shop", "client");
    c.import(DENY_CLIENT_TO_WEB_80)
        .expect("import the deny policy");
    let (web, client) = (c.pod("shop", "web"), c.pod("shop", "client"));
    let (web_80, web_81) = (
        SocketAddrV4::new(web.ep.ipv4, 80),
        SocketAddrV4::new(web.ep.ipv4, 81),
    );
    assert!(
        probe::tcp(&client.ns, web_81, YES).unwrap(),
        "TCP to web:81"
    );
    let b: MonitorBatch = c.client().get_json("/v1/monitor?type=trace").unwrap();
    assert!(
        b.events.is_empty(),
        "no traces without --trace: {:?}",
        b.events
    );

    // Down: the datapath keeps dropping into the pinned ring buffer.
    c.stop_agent();
    let down_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let client = c.pod("shop", "client");
    assert!(
        !probe::tcp(&client.ns, web_80, NO).unwrap(),
        "denied while the agent is down"
    );
    c.agent_args = vec!["--trace".into()];
    c.start_agent();
    let (web, client) = (c.pod("shop", "web"), c.pod("shop", "client"));

    // The new agent reads the ring its predecessor's programs wrote.
    let d = wait_for(&c, 0, "drop", |e| syn_to_80(e, client, web));
    assert_eq!(d.reason.as_ref().unwrap().name, "DROP_POLICY_DENY");
    assert!(
        d.time_ns >= down_at,
        "the drop's time is when it happened ({} >= {down_at})",
        d.time_ns
    );
    // --trace reaches the endpoints attached before the restart: their
    // pinned entry programs tail-call the newly loaded ones.
    let since = now(&c);
    assert!(
        probe::tcp(&client.ns, web_81, YES).unwrap(),
        "TCP to web:81 after the restart"
    );
    let t = wait_for(&c, since, "trace", |e| {
        e.packet.src_ip == Some(client.ep.ipv4) && e.packet.dst_port == Some(81)
    });
    assert_eq!(
        (t.endpoint, t.dst_endpoint),
        (client.ep.id, Some(web.ep.id))
    );
}
