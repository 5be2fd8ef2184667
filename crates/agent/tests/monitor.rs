//! Tier 3: the monitor over real traffic between pods of one node, through
//! pilusd (`GET /v1/monitor`, `/v1/monitor/config`, `/v1/status`) and the
//! `pilus` CLI (`monitor`, `monitor -j`, `config`, `status`).
//!
//! - sequences: a ping (seed 002's case) and a TCP handshake show each
//!   observation point of the request and of the reply in order, with the
//!   conntrack state and both identities;
//! - named rules: an allowed connection's policy verdict names the rule that
//!   allowed it; a denied one's drop names the policy that selects the
//!   endpoint (default deny) or the deny rule;
//! - JSON: `pilus monitor -j` parses line by line with cilium's field names
//!   and types (checked against seed 002's line);
//! - aggregation changed live: medium thins an established flow's traces,
//!   drops and denials are never thinned;
//! - flood: 30 s of denied frames from one pod through a raw socket: the
//!   agent keeps answering, and every event is read or counted lost;
//! - restart: a new agent reads what the pinned ring kept while it was down.
//!
//! Needs root; fails (never skips) without it. The fixture removes the
//! agent, its pins and state, every namespace and link, also on failure.

mod common;

use common::{pilus_cli, Cluster, Pod, NO, YES};
use pilus_api_types::{MonitorBatch, MonitorEvent, MonitorKind, Status};
use pilus_netns::{probe, ChildGuard};
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddrV4, TcpStream},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

const PREFIX: &str = "t12ev";

/// Where "now" is in the agent's event sequence.
fn now(c: &Cluster) -> u64 {
    let b: MonitorBatch = c.client().get_json("/v1/monitor?last=0").unwrap();
    assert!(b.events.is_empty(), "last=0 returns no events");
    b.next
}

/// Long-polls events after `since` (the query's other parameters in `q`)
/// until `done` holds for what was collected (within 10 s); panics with
/// everything seen otherwise.
fn collect(
    c: &Cluster,
    since: u64,
    q: &str,
    done: impl Fn(&[MonitorEvent]) -> bool,
) -> Vec<MonitorEvent> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut since = since;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let b: MonitorBatch = c
            .client()
            .get_json(&format!("/v1/monitor?since={since}&wait_ms=500&{q}"))
            .unwrap();
        assert!(b.next >= since, "next {} went back from {since}", b.next);
        for e in b.events {
            assert!(e.seq > since, "event {} not after since={since}", e.seq);
            seen.push(e);
        }
        if done(&seen) {
            return seen;
        }
        since = b.next;
    }
    panic!(
        "not there within 10 s ({q}); saw:\n{}",
        seen.iter()
            .map(pilus_monitor::format_line)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Between `a` and `b`, either way.
fn between(e: &MonitorEvent, a: &Pod, b: &Pod) -> bool {
    let (s, d) = (e.packet.src_ip, e.packet.dst_ip);
    (s == Some(a.ep.ipv4) && d == Some(b.ep.ipv4)) || (s == Some(b.ep.ipv4) && d == Some(a.ep.ipv4))
}

/// (observation point, state, src identity, dst identity) of a trace.
type Step = (String, String, u32, u32);

fn step(e: &MonitorEvent) -> Step {
    (
        e.observation_point.clone(),
        e.state.clone(),
        e.src_identity,
        e.dst_identity,
    )
}

fn st(obs: &str, state: &str, src: u32, dst: u32) -> Step {
    (obs.into(), state.into(), src, dst)
}

fn two_pods(tag: &str, args: &[&str]) -> Cluster {
    let mut c = Cluster::new(PREFIX, tag, args);
    c.add_pod("shop", "web");
    c.add_pod("shop", "client");
    c
}

#[test]
fn same_node_request_and_reply_pass_each_observation_point_with_state_and_identities() {
    let c = two_pods("seq", &["--monitor-aggregation", "none"]);
    let (web, client) = (c.pod("shop", "web"), c.pod("shop", "client"));
    let (w, k) = (web.ep.identity, client.ep.identity);

    // Seed 002's ping: the request leaves the client (from-endpoint, before
    // conntrack: state unknown) and is delivered to web (to-endpoint, new);
    // the reply leaves web and is delivered to the client as a reply.
    let since = now(&c);
    assert!(
        probe::ping(&client.ns, web.ep.ipv4, YES).unwrap(),
        "ping web"
    );
    let icmp = |e: &MonitorEvent| e.packet.protocol == Some(1) && between(e, client, web);
    let got = collect(&c, since, "type=trace", |evs| {
        evs.iter().filter(|e| icmp(e)).count() >= 4
    });
    let steps: Vec<Step> = got.iter().filter(|e| icmp(e)).take(4).map(step).collect();
    assert_eq!(
        steps,
        [
            st("from-endpoint", "unknown", k, w),
            st("to-endpoint", "new", k, w),
            st("from-endpoint", "unknown", w, k),
            st("to-endpoint", "reply", w, k),
        ]
    );
    let traces: Vec<&MonitorEvent> = got.iter().filter(|e| icmp(e)).take(4).collect();
    let eps: Vec<(u16, Option<u16>, Option<u16>)> = traces
        .iter()
        .map(|e| (e.endpoint, e.src_endpoint, e.dst_endpoint))
        .collect();
    let (cid, wid) = (client.ep.id, web.ep.id);
    assert_eq!(
        eps,
        [
            (cid, Some(cid), Some(wid)),
            (cid, Some(cid), Some(wid)),
            (wid, Some(wid), Some(cid)),
            (wid, Some(wid), Some(cid)),
        ],
        "reported by each sender's program, naming both endpoints"
    );
    assert_eq!(
        traces[1].ifname.as_deref(),
        Some(client.ep.host_ifname.as_str()),
        "the interface by name"
    );
    assert_eq!(
        traces[1].dst_pod.as_deref(),
        Some("shop/web"),
        "the pod by name"
    );

    // TCP: the handshake's three segments, new, reply and established,
    // with identities on every one (established and reply packets never
    // ask the ipcache for policy; the event still names both sides).
    let since = now(&c);
    assert!(
        probe::tcp(&client.ns, SocketAddrV4::new(web.ep.ipv4, 80), YES).unwrap(),
        "TCP to web:80"
    );
    let tcp = |e: &MonitorEvent| {
        e.packet.protocol == Some(6)
            && between(e, client, web)
            && e.observation_point == "to-endpoint"
    };
    let got = collect(&c, since, "type=trace", |evs| {
        evs.iter().filter(|e| tcp(e)).count() >= 3
    });
    let hs: Vec<(String, Vec<String>, u32, u32)> = got
        .iter()
        .filter(|e| tcp(e))
        .take(3)
        .map(|e| {
            (
                e.state.clone(),
                e.packet.tcp_flags.clone().unwrap(),
                e.src_identity,
                e.dst_identity,
            )
        })
        .collect();
    assert_eq!(
        hs,
        [
            ("new".into(), vec!["SYN".into()], k, w),
            ("reply".into(), vec!["SYN".into(), "ACK".into()], w, k),
            ("established".into(), vec!["ACK".into()], k, w),
        ]
    );

    // The CLI says the same, one line each, filtered to web's traffic.
    let text = c.pilus(&[
        "monitor",
        "--type",
        "trace",
        "--related-to",
        &web.ep.id.to_string(),
        "--since",
        &since.to_string(),
    ]);
    let syn = format!("-> endpoint {} (shop/web) (to-endpoint) flow ", web.ep.id);
    let line = text
        .lines()
        .find(|l| l.starts_with(&syn) && l.ends_with(":80 tcp SYN"))
        .unwrap_or_else(|| panic!("no `{syn}… tcp SYN` line in:\n{text}"));
    assert!(
        line.contains(&format!(
            "identity {k}->{w} state new ifindex {}",
            client.ep.host_ifname
        )),
        "{line}"
    );
    // --from the web pod: only what web sent.
    let text = c.pilus(&[
        "monitor",
        "--from",
        &web.ep.id.to_string(),
        "--since",
        &since.to_string(),
    ]);
    assert!(!text.is_empty());
    assert!(
        text.lines()
            .all(|l| l.contains(&format!("{}:80 -> ", web.ep.ipv4))),
        "only web's packets:\n{text}"
    );
}

const POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-allows-client, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: no-intruder, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: intruder}}]
"#;

#[test]
fn verdicts_name_the_rule_that_allowed_and_drops_the_policy_that_denied() {
    let mut c = two_pods("rules", &[]);
    c.add_pod("shop", "intruder");
    c.import(POLICIES).expect("import");
    let (web, client, intruder) = (
        c.pod("shop", "web"),
        c.pod("shop", "client"),
        c.pod("shop", "intruder"),
    );
    let since = now(&c);
    assert!(probe::tcp(&client.ns, SocketAddrV4::new(web.ep.ipv4, 80), YES).unwrap());
    assert!(!probe::tcp(&client.ns, SocketAddrV4::new(web.ep.ipv4, 81), NO).unwrap());
    assert!(!probe::tcp(&intruder.ns, SocketAddrV4::new(web.ep.ipv4, 80), NO).unwrap());
    let to = |from: &Pod, port: u16| {
        let (ip, web_ip) = (from.ep.ipv4, web.ep.ipv4);
        move |e: &MonitorEvent| {
            e.packet.src_ip == Some(ip)
                && e.packet.dst_ip == Some(web_ip)
                && e.packet.dst_port == Some(port)
        }
    };
    let got = collect(&c, since, "type=policy-verdict,drop", |evs| {
        evs.iter().any(to(client, 80))
            && evs
                .iter()
                .any(|e| to(client, 81)(e) && e.kind == MonitorKind::Drop)
            && evs
                .iter()
                .any(|e| to(intruder, 80)(e) && e.kind == MonitorKind::Drop)
    });

    // Allowed: the verdict names the policy and its rule.
    let v = got
        .iter()
        .find(|e| to(client, 80)(e))
        .expect("a verdict for the allowed connection");
    assert_eq!(v.kind, MonitorKind::PolicyVerdict);
    let verdict = v.verdict.as_ref().unwrap();
    assert_eq!(
        (
            verdict.action.as_str(),
            verdict.match_level.as_str(),
            v.direction.as_str()
        ),
        ("allow", "L3-L4", "ingress")
    );
    let p = v.policy.as_ref().unwrap();
    assert_eq!(
        (p.name.as_deref(), p.rule.as_deref(), p.endpoint),
        (
            Some("CiliumNetworkPolicy shop/web-allows-client"),
            Some("spec.ingress[0]"),
            web.ep.id
        )
    );
    assert!(p.explanation.starts_with("allowed by CiliumNetworkPolicy shop/web-allows-client rule spec.ingress[0] (endpoints "), "{}", p.explanation);

    // Denied by default: the drop names every policy that selects web.
    let d = got
        .iter()
        .find(|e| to(client, 81)(e) && e.kind == MonitorKind::Drop)
        .unwrap();
    assert_eq!(d.reason.as_ref().unwrap().name, "DROP_POLICY");
    assert_eq!(
        d.policy.as_ref().unwrap().explanation,
        "default deny: endpoint selected by policy CiliumNetworkPolicy shop/no-intruder, \
         CiliumNetworkPolicy shop/web-allows-client; no rule allows this peer"
    );
    // Denied by a rule: its policy and the deny rule.
    let d = got
        .iter()
        .find(|e| to(intruder, 80)(e) && e.kind == MonitorKind::Drop)
        .unwrap();
    assert_eq!(d.reason.as_ref().unwrap().name, "DROP_POLICY_DENY");
    let p = d.policy.as_ref().unwrap();
    assert_eq!(
        (p.name.as_deref(), p.rule.as_deref()),
        (
            Some("CiliumNetworkPolicy shop/no-intruder"),
            Some("spec.ingressDeny[0]")
        )
    );
    // The denial's verdict too.
    assert!(got.iter().any(|e| to(intruder, 80)(e)
        && e.kind == MonitorKind::PolicyVerdict
        && e.verdict.as_ref().unwrap().action == "deny"));

    // Every drop line of the CLI prints the policy's name.
    let text = c.pilus(&["monitor", "--type", "drop", "--since", &since.to_string()]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    for l in &lines {
        assert!(
            l.contains(
                "policy: default deny: endpoint selected by policy CiliumNetworkPolicy shop/"
            ) || l.contains(
                "policy: denied by CiliumNetworkPolicy shop/no-intruder rule spec.ingressDeny[0]"
            ),
            "a drop line without its policy: {l}"
        );
    }
    let text = c.pilus(&[
        "monitor",
        "--type",
        "policy-verdict",
        "--since",
        &since.to_string(),
    ]);
    assert!(
        text.lines().any(|l| l.starts_with(&format!(
            "Policy verdict log: flow 0x0 local EP ID {} (shop/web), remote ID {}, proto 6, ingress, action allow, match L3-L4, policy: allowed by CiliumNetworkPolicy shop/web-allows-client rule spec.ingress[0]",
            web.ep.id, client.ep.identity
        )) || l.contains("action allow, match L3-L4, policy: allowed by CiliumNetworkPolicy shop/web-allows-client rule spec.ingress[0]")),
        "{text}"
    );
}

/// Seed 002's first line, as `cilium monitor -j` printed it.
const SEED_002: &str = r#"{"cpu":"CPU 07:","type":"trace","mark":"0x0","ifindex":"0","state":"unknown","observationPoint":"from-endpoint","traceSummary":"\u003c- endpoint 1177","source":1177,"bytes":98,"srcLabel":50600,"dstLabel":0,"dstID":0,"summary":{"ethernet":"Ethernet\t{Contents=[..14..] Payload=[..86..] SrcMAC=5e:f0:f4:59:43:10 DstMAC=d2:be:ba:0b:21:63 EthernetType=IPv4 Length=0}","ipv4":"IPv4\t{Contents=[..20..] Payload=[..64..] Version=4 IHL=5 TOS=0 Length=84 Id=65482 Flags=DF FragOffset=0 TTL=64 Protocol=ICMPv4 Checksum=23459 SrcIP=171.0.1.83 DstIP=10.10.40.222 Options=[] Padding=[]}","icmpv4":"ICMPv4\t{Contents=[..8..] Payload=[..56..] TypeCode=EchoRequest Checksum=6019 Id=52535 Seq=1}","l2":{"src":"5e:f0:f4:59:43:10","dst":"d2:be:ba:0b:21:63"},"l3":{"src":"171.0.1.83","dst":"10.10.40.222"}}}"#;

fn same_types(cilium: &serde_json::Value, ours: &serde_json::Value, at: &str) {
    let kind = |v: &serde_json::Value| match v {
        serde_json::Value::String(_) => "string",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::Object(_) => "object",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Null => "null",
    };
    for (k, v) in cilium.as_object().unwrap() {
        let mine = ours
            .get(k)
            .unwrap_or_else(|| panic!("{at}: no {k} in {ours}"));
        assert_eq!(kind(mine), kind(v), "{at}.{k}: {mine} vs cilium's {v}");
        if v.is_object() {
            same_types(v, mine, &format!("{at}.{k}"));
        }
    }
}

#[test]
fn monitor_json_parses_line_by_line_with_cilium_field_names_and_types() {
    let c = two_pods("json", &["--monitor-aggregation", "none"]);
    c.import(POLICIES).expect("import");
    let (web, client) = (c.pod("shop", "web"), c.pod("shop", "client"));
    let since = now(&c);
    assert!(
        !probe::ping(&client.ns, web.ep.ipv4, NO).unwrap(),
        "ICMP is not among what web allows"
    );
    assert!(probe::tcp(&client.ns, SocketAddrV4::new(web.ep.ipv4, 80), YES).unwrap());
    assert!(!probe::tcp(&client.ns, SocketAddrV4::new(web.ep.ipv4, 81), NO).unwrap());
    collect(&c, since, "type=drop", |evs| !evs.is_empty());
    let text = c.pilus(&["monitor", "-j", "--since", &since.to_string()]);
    let seed: serde_json::Value = serde_json::from_str(SEED_002).unwrap();
    let mut kinds = std::collections::BTreeMap::new();
    let mut icmp = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let t = v["type"].as_str().expect("a type").to_string();
        match t.as_str() {
            "trace" => {
                // The seed is a ping: other packets have their own L4.
                let mut want = seed.clone();
                if v["summary"].get("icmpv4").is_none() {
                    want["summary"].as_object_mut().unwrap().remove("icmpv4");
                } else {
                    icmp += 1;
                }
                same_types(&want, &v, "trace");
                if v["observationPoint"] == "to-endpoint" && v["summary"]["l4"]["dst"] == "80" {
                    assert_eq!(v["dstID"], web.ep.id, "{line}");
                }
            }
            "drop" => {
                for (k, kind) in [
                    ("reason", "string"),
                    ("source", "number"),
                    ("srcLabel", "number"),
                    ("dstLabel", "number"),
                    ("dstID", "number"),
                    ("Ifindex", "number"),
                    ("policy", "string"),
                ] {
                    let ok = match kind {
                        "string" => v[k].is_string(),
                        _ => v[k].is_number(),
                    };
                    assert!(ok, "drop.{k} is not a {kind}: {line}");
                }
                assert!(v["policy"]
                    .as_str()
                    .unwrap()
                    .contains("CiliumNetworkPolicy shop/"));
            }
            "policy-verdict" => {
                assert!(
                    v["action"].is_string()
                        && v["match"].is_string()
                        && v["remoteLabel"].is_number(),
                    "{line}"
                );
            }
            other => panic!("unexpected type {other}: {line}"),
        }
        *kinds.entry(t).or_insert(0) += 1;
    }
    for k in ["trace", "drop", "policy-verdict"] {
        assert!(kinds.contains_key(k), "no {k} line: {kinds:?}\n{text}");
    }
    assert!(
        icmp > 0,
        "the ping's from-endpoint trace, as the seed's line"
    );
}

/// `n` request/response round trips on one TCP connection to web:`port`.
fn round_trips(client: &Pod, web: &Pod, port: u16, n: usize) {
    client
        .ns
        .within(|| {
            let mut s =
                TcpStream::connect_timeout(&SocketAddrV4::new(web.ep.ipv4, port).into(), YES)
                    .expect("connect");
            s.set_read_timeout(Some(YES)).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            for i in 0..n {
                writeln!(s, "line {i}").unwrap();
                let mut back = String::new();
                r.read_line(&mut back).unwrap();
                assert_eq!(back.trim(), format!("line {i}"));
            }
        })
        .unwrap();
}

#[test]
fn aggregation_changed_live_thins_established_flows_but_never_drops() {
    let c = two_pods("agg", &[]);
    let (web, client) = (c.pod("shop", "web"), c.pod("shop", "client"));
    let text = c.pilus(&["config"]);
    assert!(
        text.contains("MonitorAggregationLevel   medium"),
        "the default: {text}"
    );
    let traces_of = |n: usize| {
        let since = now(&c);
        round_trips(client, web, 80, n);
        // Past the reader's tick (50 ms): everything was read.
        std::thread::sleep(Duration::from_millis(300));
        let b: MonitorBatch = c
            .client()
            .get_json(&format!("/v1/monitor?since={since}&type=trace"))
            .unwrap();
        b.events
            .into_iter()
            .filter(|e| between(e, client, web) && e.packet.protocol == Some(6))
            .collect::<Vec<_>>()
    };
    // Medium: the handshake's first packets each way and the closing
    // FINs, never the 20 data round trips in between.
    let medium = traces_of(20);
    assert!(
        !medium.is_empty() && medium.len() <= 6,
        "medium: {} traces:\n{}",
        medium.len(),
        medium
            .iter()
            .map(pilus_monitor::format_line)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(medium.iter().any(|e| e.state == "new"));
    // None, set live through the CLI (Cilium's spelling).
    let text = c.pilus(&["config", "MonitorAggregationLevel=None"]);
    assert!(text.contains("MonitorAggregationLevel   none"), "{text}");
    let st: Status = c.client().get_json("/v1/status").unwrap();
    assert_eq!(st.monitor.unwrap().config.aggregation, "none");
    let none = traces_of(20);
    assert!(
        none.len() >= 4 * 20,
        "none: every packet at from-endpoint and to-endpoint, got {}",
        none.len()
    );
    // Maximum: drops and denials are still every one.
    c.pilus(&["config", "monitor-aggregation=maximum"]);
    c.import(POLICIES)
        .expect("web allows client on 80/TCP only");
    let since = now(&c);
    for _ in 0..5 {
        assert!(!probe::udp(
            &client.ns,
            SocketAddrV4::new(web.ep.ipv4, 81),
            Duration::from_millis(200)
        )
        .unwrap());
    }
    let got = collect(&c, since, "type=drop,policy-verdict", |evs| {
        evs.iter()
            .filter(|e| e.kind == MonitorKind::Drop && between(e, client, web))
            .count()
            >= 5
    });
    assert!(
        got.iter()
            .filter(|e| e.kind == MonitorKind::PolicyVerdict && between(e, client, web))
            .count()
            >= 5,
        "a denial per dropped datagram"
    );
}

/// Sends `frame` out of the pod's eth0 as fast as a raw packet socket
/// takes it until `stop`; returns how many were sent.
fn flood(pod: &Pod, frame: &[u8], stop: &AtomicBool) -> u64 {
    let ifindex = pod.ns.ifindex("eth0").unwrap();
    pod.ns
        .within(|| {
            // SAFETY: a plain socket(2); the fd is closed below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: sockaddr_ll is plain old data; zeroes are valid.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: the frame and address outlive the call.
                let n = unsafe {
                    libc::sendto(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&addr as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                if n > 0 {
                    sent += 1;
                }
            }
            // SAFETY: our fd, closed once.
            unsafe { libc::close(fd) };
            sent
        })
        .unwrap()
}

const SENDERS: usize = 3;

#[test]
fn a_30s_flood_of_denied_packets_leaves_the_agent_responsive_and_counts_what_was_lost() {
    let c = two_pods("flood", &["--monitor-aggregation", "none"]);
    c.import(POLICIES)
        .expect("web allows client on 80/TCP only: UDP is denied");
    let (web, client) = (c.pod("shop", "web"), c.pod("shop", "client"));
    let client_mac = client.ns.mac("eth0").unwrap();
    // The pod's gateway MAC: its veth's host side.
    let host_mac: [u8; 6] = {
        let b: Vec<u8> = client
            .ep
            .host_mac
            .split(':')
            .map(|x| u8::from_str_radix(x, 16).unwrap())
            .collect();
        b.try_into().unwrap()
    };
    let frame = pilus_packet::PacketBuilder::new(client_mac, host_mac)
        .ipv4(client.ep.ipv4, web.ep.ipv4)
        .udp(40000, 9999)
        .build();
    let before: Status = c.client().get_json("/v1/status").unwrap();
    let before = before.monitor.unwrap();
    let mut follower = ChildGuard::spawn({
        let mut cmd = Command::new(pilus_cli());
        cmd.arg("--socket")
            .arg(c.socket())
            .args(["monitor", "-f", "--type", "debug"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd
    })
    .expect("pilus monitor -f");

    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let mut slowest = Duration::ZERO;
    let mut answers = 0;
    std::thread::scope(|s| {
        // One sender per core: the agent's reader competes with them.
        for _ in 0..SENDERS {
            s.spawn(|| sent.fetch_add(flood(client, &frame, &stop), Ordering::Relaxed));
        }
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            let t = Instant::now();
            let out = Command::new(pilus_cli())
                .arg("--socket")
                .arg(c.socket())
                .arg("status")
                .output()
                .unwrap();
            let took = t.elapsed();
            assert!(
                out.status.success(),
                "pilus status during the flood: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            slowest = slowest.max(took);
            answers += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let sent = sent.load(Ordering::Relaxed);
    eprintln!("flood: {sent} frames in 30 s, {answers} status answers, slowest {slowest:?}");
    assert!(sent > 100_000, "the flood sent only {sent} frames");
    assert!(
        slowest < Duration::from_secs(2),
        "pilus status took {slowest:?} during the flood"
    );
    // Every event of the flood was read by the agent or counted lost.
    std::thread::sleep(Duration::from_millis(500));
    let after: Status = c.client().get_json("/v1/status").unwrap();
    let after = after.monitor.unwrap();
    let (read, lost) = (
        after.events_read - before.events_read,
        after.events_lost - before.events_lost,
    );
    eprintln!("flood: {read} events read, {lost} lost");
    assert!(read > 0, "the agent read events during the flood");
    assert!(
        lost > 0,
        "a flood of {sent} frames at aggregation none loses events: {read} read"
    );
    let text = c.pilus(&["status"]);
    assert!(
        text.contains(&format!("{} lost (ring buffer full)", after.events_lost)),
        "{text}"
    );
    // `pilus monitor -f`, following during the flood, said so: with a type
    // nothing else has (debug is off), only the losses reach it.
    follower.kill().expect("stop pilus monitor -f");
    let mut text = String::new();
    follower
        .take_stdout()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let said: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let (head, _) = l.split_once(" events lost (the datapath's ring buffer was full)")?;
            head.rsplit(' ').next()?.parse().ok()
        })
        .collect();
    assert!(
        !said.is_empty() && said.iter().sum::<u64>() <= lost,
        "pilus monitor -f printed {said:?} lost (of {lost}):\n{}",
        text.lines().take(5).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn a_restarted_agent_reads_what_the_pinned_ring_kept_and_reports_with_its_level() {
    let mut c = two_pods("restart", &["--monitor-aggregation", "maximum"]);
    c.import(
        r#"{"kind": "CiliumNetworkPolicy", "apiVersion": "cilium.io/v2",
            "metadata": {"name": "no-client-80", "namespace": "shop"},
            "spec": {"endpointSelector": {"matchLabels": {"app": "web"}},
                     "ingress": [{"fromEntities": ["all"]}],
                     "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                                      "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}}"#,
    )
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
    c.agent_args = vec!["--monitor-aggregation".into(), "none".into()];
    c.start_agent();
    let (web, client) = (c.pod("shop", "web"), c.pod("shop", "client"));

    // The new agent reads the ring its predecessor's programs wrote, and
    // names the rule that denied.
    let got = collect(&c, 0, "type=drop", |evs| {
        evs.iter()
            .any(|e| e.packet.dst_port == Some(80) && e.packet.src_ip == Some(client.ep.ipv4))
    });
    let d = got.iter().find(|e| e.packet.dst_port == Some(80)).unwrap();
    assert_eq!(d.reason.as_ref().unwrap().name, "DROP_POLICY_DENY");
    assert!(d.time_ns >= down_at, "the drop's time is when it happened");
    assert!(d
        .policy
        .as_ref()
        .unwrap()
        .explanation
        .starts_with("denied by CiliumNetworkPolicy shop/no-client-80 rule spec.ingressDeny[0]"));
    // The new level reaches the endpoints attached before the restart:
    // an established flow's every packet is traced again.
    let since = now(&c);
    round_trips(client, web, 81, 3);
    let got = collect(&c, since, "type=trace", |evs| {
        evs.iter()
            .filter(|e| e.state == "established" && between(e, client, web))
            .count()
            >= 3
    });
    assert!(got.iter().any(|e| e.observation_point == "from-endpoint"));
}
