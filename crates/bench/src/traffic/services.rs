//! The service series (issues 11 and 13): the same-node client reaches the
//! server through a ClusterIP while N services exist, in `pilus` (services
//! imported through the agent's API, load-balanced per packet in
//! from-container) and in `iptables` (kube-proxy's nat table,
//! [`super::kube_proxy`]), against `bare` pod to pod with no service.
//!
//! The measured service is its own frontend, [`VIP`] on the bench's TCP
//! port, with the server as its one endpoint; the other N − 1 services
//! have the server too, on frontends of their own. In iptables it is the
//! last rule of KUBE-SERVICES (the worst case of a linear walk). The
//! services are added step by step (1, 1k, 10k, 100k): the agent gets the
//! new ones in imports of [`BATCH`]; iptables-restore rewrites the whole
//! nat table each step, as kube-proxy's full sync does.

use super::{
    bare::SameNode,
    kube_proxy::{self, Service},
    pilus::AgentNode,
};
use crate::{error::Context, load::TCP_PORT, Error};
use pilus_api_types::{self as api, paths};
use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

/// The measured service's frontend address (outside the pod CIDRs and the
/// other frontends, inside 198.18.0.0/15).
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 254);

/// Services per import request (well under the API's 8 MiB body limit).
pub const BATCH: usize = 2000;

/// The services for a step of `n`: the measured one last.
pub fn kube_services(n: usize, server: Ipv4Addr) -> Vec<Service> {
    let mut v = kube_proxy::services(n.saturating_sub(1), &[(server, TCP_PORT)]);
    v.push(Service {
        vip: VIP,
        port: TCP_PORT,
        endpoints: vec![(server, TCP_PORT)],
    });
    v
}

/// Kubernetes Service and EndpointSlice documents for services
/// `from..to` (index 0 is the measured one), as `pilus service import`
/// reads them.
pub fn k8s_documents(from: usize, to: usize, server: Ipv4Addr) -> String {
    let mut t = String::new();
    for i in from..to {
        let (vip, port) = if i == 0 {
            (VIP, TCP_PORT)
        } else {
            kube_proxy::frontend(i - 1)
        };
        let _ = write!(
            t,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\nspec: {{clusterIP: {vip}, ports: [{{port: {port}, protocol: TCP}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{i}-0, namespace: bench, labels: {{kubernetes.io/service-name: svc-{i}}}}}\n\
             addressType: IPv4\nendpoints: [{{addresses: [{server}], conditions: {{ready: true}}}}]\nports: [{{port: {TCP_PORT}, protocol: TCP}}]\n---\n"
        );
    }
    t
}

/// Adds services `from..to` to the agent in imports of [`BATCH`]; the
/// time it took.
pub(crate) fn add_to_pilus(node: &AgentNode, from: usize, to: usize) -> Result<Duration, Error> {
    let c = node.client();
    let server = node.ends.server_ip;
    let started = Instant::now();
    let mut at = from;
    while at < to {
        let end = (at + BATCH).min(to);
        let _: api::ServicesImported = c
            .post_json(
                paths::SERVICES_IMPORT,
                &api::ServiceImport {
                    files: vec![api::PolicyFile {
                        name: format!("bench-services-{at}.yaml"),
                        text: k8s_documents(at, end, server),
                    }],
                },
            )
            .context(format!("importing services {at}..{end}"))?;
        at = end;
    }
    Ok(started.elapsed())
}

/// Writes kube-proxy's nat table for `n` services; the time
/// iptables-restore took and the rules written.
pub(crate) fn apply_to_iptables(node: &SameNode, n: usize) -> Result<(Duration, usize), Error> {
    let text = kube_proxy::nat_table(&kube_services(n, node.ends.server_ip));
    let started = Instant::now();
    node.restore(&text)?;
    Ok((
        started.elapsed(),
        text.lines().filter(|l| l.starts_with("-A ")).count(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_service_is_first_for_the_agent_and_last_for_iptables() {
        let server = Ipv4Addr::new(198, 18, 0, 11);
        let docs = k8s_documents(0, 3, server);
        assert_eq!(docs.matches("kind: Service\n").count(), 3);
        assert_eq!(docs.matches("kind: EndpointSlice\n").count(), 3);
        assert!(docs.starts_with(
            "apiVersion: v1\nkind: Service\nmetadata: {name: svc-0, namespace: bench}\nspec: {clusterIP: 198.19.255.254, ports: [{port: 5201, protocol: TCP}]}"
        ));
        assert!(docs.contains("clusterIP: 198.19.128.1, ports: [{port: 1025,"));
        let k = kube_services(3, server);
        assert_eq!(k.len(), 3);
        assert_eq!((k[2].vip, k[2].port), (VIP, TCP_PORT));
        // The same frontends on both sides.
        for (i, s) in k.iter().enumerate().take(2) {
            assert!(docs.contains(&format!(
                "name: svc-{}, namespace: bench}}\nspec: {{clusterIP: {}, ports: [{{port: {},",
                i + 1,
                s.vip,
                s.port
            )));
        }
        assert!(pilus_service::k8s::parse_documents(&docs, "bench.yaml").is_ok());
    }
}
