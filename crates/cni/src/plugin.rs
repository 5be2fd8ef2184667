//! The CNI commands. ADD makes the pod's veth pair (host side `lxc…` in the
//! namespace the plugin runs in, which must be pilusd's; pod side created
//! directly in `CNI_NETNS` as `CNI_IFNAME`), asks the agent for the
//! endpoint (address, identity, programs, maps), then configures the pod's
//! address and routes. Every failure undoes what was done before it, so a
//! failed ADD leaves no link and no address allocated. ADD also passes the
//! container's labels from the runtime's metadata ([`crate::runtime`]);
//! those can only add to an ADD, never make it fail.

use crate::runtime;
use crate::spec::{self, code, Attached, CniError, Command, Env, NetConf};
use pilus_api_types as api;
use pilus_api_types::paths;
use pilus_client::blocking::Client;
use pilus_client::encode_query;
use pilus_netlink::{pod, Netlink};
use serde_json::Value;
use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

/// How long the plugin waits for the agent (an ADD takes milliseconds; a
/// busy agent gets a generous margin before the runtime is told to retry).
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one command: `Ok(Some(json))` is printed on stdout, `Ok(None)`
/// prints nothing (DEL, STATUS, GC), `Err` is printed as a CNI error.
/// `notes` gets what the runtime's user should read although the command
/// succeeded (runtime labels skipped or unreadable), one line each.
pub fn run(env: &Env, stdin: &[u8], notes: &mut Vec<String>) -> Result<Option<Value>, CniError> {
    if env.command == Command::Version {
        // VERSION may come with an empty stdin, or just {"cniVersion": ...}.
        let requested = serde_json::from_slice::<Value>(stdin).ok().and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        return Ok(Some(spec::version_json(requested.as_deref())));
    }
    let conf = NetConf::parse(stdin)?;
    let agent = Client::new(&conf.socket).with_timeout(AGENT_TIMEOUT);
    match env.command {
        Command::Add => add(env, &conf, &agent, notes).map(Some),
        Command::Del => del(env, &agent).map(|()| None),
        Command::Check => check(env, &conf, &agent).map(|()| None),
        Command::Status => status(&agent).map(|()| None),
        Command::Gc => gc(&conf, &agent).map(|()| None),
        Command::Version => unreachable!("answered above"),
    }
}

/// The version errors are reported in: the configuration's if it parsed.
pub fn error_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|v| spec::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| spec::LATEST.to_string())
}

/// Maps an agent error to a CNI error a person can act on.
fn agent_error(doing: &str, e: pilus_client::Error) -> CniError {
    match e {
        pilus_client::Error::Connect { .. } | pilus_client::Error::Timeout { .. } => CniError::new(
            code::TRY_AGAIN_LATER,
            format!("{doing}: the Pilus agent is not reachable; start pilusd (or fix \"socket\" in the network configuration) and retry"),
        )
        .details(e.to_string()),
        pilus_client::Error::Status { message, .. } => {
            CniError::new(code::AGENT_REFUSED, format!("{doing}: the Pilus agent refused: {message}"))
        }
        other => CniError::new(code::IO, format!("{doing}: {other}")),
    }
}

fn netlink_error(doing: &str, e: pilus_netlink::Error) -> CniError {
    CniError::new(code::IO, format!("{doing}: {e}"))
}

fn open_netns(path: &str) -> Result<File, CniError> {
    let f = File::open(path).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("cannot open the container's network namespace CNI_NETNS={path:?}: {e}"),
        )
    })?;
    // Any file opens; only a namespace file answers NS_GET_NSTYPE (Linux
    // 4.11), and setns would fail later with a bare EINVAL.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl without arguments on a descriptor we own.
    let kind = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_NETNS={path:?} is not a network namespace"),
        ));
    }
    Ok(f)
}

fn attachment_path(env: &Env) -> String {
    format!(
        "{}/{}?{}",
        paths::ENDPOINTS,
        env.container_id,
        encode_query(&[("ifname", &env.ifname)])
    )
}

fn added_twice(env: &Env, ep: &api::Endpoint) -> CniError {
    CniError::new(
        code::AGENT_REFUSED,
        format!(
            "container {} already has interface {} (endpoint {}, {}); DEL it before adding it again",
            env.container_id, env.ifname, ep.id, ep.ipv4
        ),
    )
}

fn add(
    env: &Env,
    conf: &NetConf,
    agent: &Client,
    notes: &mut Vec<String>,
) -> Result<Value, CniError> {
    let netns = open_netns(&env.netns)?;
    // Ask before making anything: an agent that is down costs no veth.
    let status = agent
        .get_json::<api::Status>(paths::STATUS)
        .map_err(|e| agent_error("ADD", e))?;
    // A namespace that another interface already routes would lose those
    // routes to this one (and keep none once it is deleted): refuse now,
    // while nothing has been made.
    if let Some(dst) = pod::route_taken(netns.as_fd(), status.router_ip)
        .map_err(|e| netlink_error("ADD: reading the container's routes", e))?
    {
        // The interface routing it may be this very attachment.
        if let Ok(ep) = agent.get_json::<api::Endpoint>(&attachment_path(env)) {
            return Err(added_twice(env, &ep));
        }
        return Err(CniError::new(
            code::CONTAINER_CONFLICT,
            format!(
                "ADD: the container's network namespace already has a route to {dst} through another interface; pilus-cni gives a pod one primary interface and does not take another interface's routes"
            ),
        ));
    }
    // Before the veth exists, so that a slow runtime holds nothing.
    let from_runtime = runtime::read(conf.runtime_labels, &env.container_id, &env.netns);
    notes.extend(from_runtime.notes);
    let host_ifname = api::host_ifname(&env.container_id, &env.ifname);
    let mut nl = Netlink::open().map_err(|e| netlink_error("ADD: opening rtnetlink", e))?;
    let pair = match pod::create(&mut nl, &host_ifname, netns.as_fd(), &env.ifname) {
        Err(e) if e.errno() == Some(libc::EEXIST) => {
            // Either this attachment exists (ADD twice without DEL) or a
            // crashed ADD left its host link behind.
            if let Ok(ep) = agent.get_json::<api::Endpoint>(&attachment_path(env)) {
                return Err(added_twice(env, &ep));
            }
            if nl.link(&host_ifname).ok().flatten().is_none() {
                return Err(CniError::new(
                    code::IO,
                    format!(
                        "ADD: interface {} already exists in the container's network namespace",
                        env.ifname
                    ),
                ));
            }
            let _ = nl.delete_link(&host_ifname);
            pod::create(&mut nl, &host_ifname, netns.as_fd(), &env.ifname)
        }
        other => other,
    }
    .map_err(|e| netlink_error("ADD: creating the veth pair", e))?;
    let undo_link = |nl: &mut Netlink| {
        let _ = nl.delete_link(&host_ifname);
    };

    let mut req = api::EndpointCreate {
        container_id: env.container_id.clone(),
        netns: env.netns.clone(),
        ifname: env.ifname.clone(),
        namespace: env
            .args
            .get("K8S_POD_NAMESPACE")
            .cloned()
            .unwrap_or_else(api::default_namespace),
        pod_name: env.args.get("K8S_POD_NAME").cloned(),
        labels: conf
            .labels
            .iter()
            .map(|l| format!("{}={}", l.key, l.value))
            .collect(),
        host_ifname: Some(host_ifname.clone()),
        mac: Some(pod::mac_string(&pair.pod.mac)),
        cni_network: Some(conf.name.clone()),
        runtime_labels: from_runtime.labels,
    };
    let mut created = agent.post_json::<_, api::EndpointCreated>(paths::ENDPOINTS, &req);
    // The labels were checked as the agent checks them; should it refuse
    // them all the same (a stricter agent), the pod still gets its network.
    if let Err(pilus_client::Error::Status { status, message }) = &created {
        if (400..500).contains(status) && !req.runtime_labels.is_empty() {
            notes.push(format!(
                "the Pilus agent refused the endpoint with the runtime labels {:?} ({message}); added without them",
                req.runtime_labels
            ));
            req.runtime_labels.clear();
            created = agent.post_json(paths::ENDPOINTS, &req);
        }
    }
    let created = match created {
        Ok(c) => c,
        Err(e) => {
            undo_link(&mut nl);
            return Err(agent_error("ADD", e));
        }
    };
    let ep = created.endpoint;
    let configured = pod::configure(netns.as_fd(), &env.ifname, ep.ipv4, ep.gateway, ep.mtu)
        .map_err(|e| netlink_error("ADD: configuring the pod's interface", e))
        .and_then(|()| {
            pod::route_host(&mut nl, ep.ipv4, pair.host.index)
                .map_err(|e| netlink_error("ADD: routing the pod's address on the host", e))
        });
    if let Err(e) = configured {
        let _ = agent.delete_json::<api::Deleted>(&attachment_path(env));
        undo_link(&mut nl);
        return Err(e);
    }
    Ok(spec::result_json(
        &conf.cni_version,
        &Attached {
            host_ifname,
            host_mac: pod::mac_string(&pair.host.mac),
            ifname: env.ifname.clone(),
            mac: pod::mac_string(&pair.pod.mac),
            sandbox: env.netns.clone(),
            ip: ep.ipv4,
            gateway: ep.gateway,
        },
    ))
}

/// Idempotent, and needs neither prevResult nor the namespace: the agent
/// forgets the endpoint, and the host link goes (taking the pod side).
fn del(env: &Env, agent: &Client) -> Result<(), CniError> {
    let forgotten = agent.delete_json::<api::Deleted>(&attachment_path(env));
    let host_ifname = api::host_ifname(&env.container_id, &env.ifname);
    let mut nl = Netlink::open().map_err(|e| netlink_error("DEL: opening rtnetlink", e))?;
    nl.delete_link(&host_ifname)
        .map_err(|e| netlink_error("DEL: deleting the host interface", e))?;
    forgotten.map_err(|e| agent_error("DEL", e))?;
    Ok(())
}

fn check(env: &Env, conf: &NetConf, agent: &Client) -> Result<(), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs prevResult (the result of ADD) in the network configuration",
        )
    })?;
    let ep: api::Endpoint = agent.get_json(&attachment_path(env)).map_err(|e| match e {
        pilus_client::Error::Status { status: 404, .. } => CniError::new(
            code::CHECK_FAILED,
            format!(
                "the Pilus agent has no endpoint for container {} interface {}",
                env.container_id, env.ifname
            ),
        ),
        other => agent_error("CHECK", other),
    })?;
    let mut problems = Vec::new();
    let want = format!("{}/32", ep.ipv4);
    if !spec::prev_result_ips(prev).contains(&want) {
        problems.push(format!(
            "prevResult does not list the endpoint's address {want}"
        ));
    }
    let netns = open_netns(&env.netns)?;
    let mut nl = Netlink::open().map_err(|e| netlink_error("CHECK: opening rtnetlink", e))?;
    let mac = pod::parse_mac(&ep.mac);
    problems.extend(
        pod::check(
            &mut nl,
            netns.as_fd(),
            &pod::Expected {
                host_ifname: &ep.host_ifname,
                ifname: &env.ifname,
                ip: ep.ipv4,
                gateway: ep.gateway,
                mac,
            },
        )
        .map_err(|e| netlink_error("CHECK", e))?,
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::CHECK_FAILED,
            format!(
                "container {} interface {}: {}",
                env.container_id,
                env.ifname,
                problems.join("; ")
            ),
        ))
    }
}

fn status(agent: &Client) -> Result<(), CniError> {
    agent
        .get_json::<api::Status>(paths::STATUS)
        .map(|_| ())
        .map_err(|e| {
            CniError::new(
                code::NOT_AVAILABLE,
                "the Pilus agent is not reachable, so pods cannot be added; start pilusd",
            )
            .details(e.to_string())
        })
}

/// Deletes this network's endpoints whose attachment the runtime no
/// longer has, and their host links. The list is checked whole before the
/// agent is asked ([`NetConf::gc_attachments`]); the agent then decides
/// under its lock, sparing endpoints younger than the grace period (measured
/// back from now, so one made during this call is always spared).
fn gc(conf: &NetConf, agent: &Client) -> Result<(), CniError> {
    let valid = conf.gc_attachments()?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let req = api::CniGc {
        network: conf.name.clone(),
        valid: valid
            .into_iter()
            .map(|a| api::CniAttachment {
                container_id: a.container_id,
                ifname: a.ifname,
            })
            .collect(),
        keep_created_since_unix_ms: now_ms.saturating_sub(conf.gc_grace_seconds * 1000),
    };
    agent
        .post_json::<_, api::CniGcDone>(paths::CNI_GC, &req)
        .map_err(|e| agent_error("GC", e))?;
    Ok(())
}
