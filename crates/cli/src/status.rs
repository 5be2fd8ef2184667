//! `pilus status`: the agent's health and counts.

use crate::{table::print_json, Output};
use anyhow::Result;
use pilus_api_types::paths;
use pilus_api_types::ConntrackStatus;
use pilus_api_types::Status;
use pilus_client::blocking::Client;

pub fn run(c: &Client, out: Output) -> Result<()> {
    let s: Status = c.get_json(paths::STATUS)?;
    if out == Output::Json {
        return print_json(&s);
    }
    println!(
        "Agent:           ok (pilusd {}, up {}s)",
        s.version, s.uptime_seconds
    );
    println!("Node:            {}", s.node_name);
    println!("Pod CIDR:        {} (router {})", s.pod_cidr, s.router_ip);
    println!(
        "IPAM:            {}/{} allocated",
        s.ipam_used, s.ipam_capacity
    );
    println!("Endpoints:       {}", s.endpoints);
    println!("Identities:      {}", s.identities);
    println!("Policies:        {}", s.policies);
    println!(
        "Policy revision: {} (enforced {})",
        s.revision, s.enforced_revision
    );
    println!(
        "Services:        {} ({} frontends)",
        s.services, s.frontends
    );
    // 404 until the GC's first pass.
    let ct: Option<ConntrackStatus> = c.get_json(paths::CONNTRACK).ok();
    match &ct {
        Some(ct) => {
            println!(
                "Conntrack:       {}/{} entries; GC: {} passes, {} expired removed ({} affinity), next in {} ms{}",
                ct.entries,
                ct.max_entries,
                ct.gc_runs,
                ct.gc_deleted,
                ct.gc_affinity_deleted,
                ct.next_gc_in_ms,
                ct.last_error.as_ref().map_or(String::new(), |e| format!(" (last pass failed: {e})"))
            );
            println!(
                "                 {} new flows refused (table full)",
                ct.insert_failures
            );
            println!(
                "Masquerade NAT:  {} entries; GC: {} expired removed",
                ct.nat_entries, ct.gc_nat_deleted
            );
        }
        None => println!("Conntrack:       (no GC pass yet)"),
    }
    println!("Datapath pins:   {}", s.pin_dir);
    println!("State:           {}", s.state_dir);
    println!(
        "Last resync:     {} written, {} removed",
        s.resync_written, s.resync_removed
    );
    if let Some(m) = &s.monitor {
        let mut opt = Vec::new();
        if m.config.debug {
            opt.push("debug");
        }
        if m.config.capture {
            opt.push("capture");
        }
        let opt = if opt.is_empty() {
            String::new()
        } else {
            format!(", {}", opt.join(", "))
        };
        println!(
            "Monitor:         aggregation {}{opt}; {} events read, {} lost (ring buffer full)",
            m.config.aggregation, m.events_read, m.events_lost
        );
    }
    match &s.cluster {
        None => println!("Cluster:         none (this node is on its own)"),
        Some(c) => {
            println!(
                "Cluster:         {} nodes, {} pods on other nodes, routing {}, underlay {}",
                c.nodes, c.remote_endpoints, c.routing, c.underlay_ip
            );
            let ago = c.since_unix.map(|t| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                format!(" for {}s", now.saturating_sub(t))
            });
            let error = c
                .error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            println!(
                "Cluster store:   etcd {}{}{error}",
                c.store,
                ago.unwrap_or_default()
            );
            println!("Node lease:      {}", c.lease);
            if c.pending_publish {
                println!(
                    "                 this node's pods wait to be published (etcd was unreachable)"
                );
            }
        }
    }
    Ok(())
}
