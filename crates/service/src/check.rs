//! Checks of a change against the rest: a frontend belongs to one service
//! only, no frontend is a pod's address (the datapath relies on it: a packet
//! to a pod never pays for a service lookup), and every backend is inside a
//! range the cluster knows (a node's pod CIDR). Run over the whole change
//! before anything is written, so a refused change writes nothing.

use crate::{Error, FrontendKey, FrontendType, Service, ServiceId};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;

/// Checks `changed` (services to create or replace) against `existing`
/// (every service now, including the old versions of those in `changed`)
/// and `pod_cidrs` (every known node's pod CIDR).
pub fn check_change<'a>(
    changed: &[Service],
    existing: impl Iterator<Item = &'a Service>,
    pod_cidrs: &[Ipv4Net],
) -> Result<(), Error> {
    let mut seen: BTreeMap<&ServiceId, ()> = BTreeMap::new();
    for s in changed {
        if seen.insert(&s.id, ()).is_some() {
            return Err(Error::DuplicateService(s.id.to_string()));
        }
    }
    // Who owns each frontend once the change is made.
    let mut owner: BTreeMap<FrontendKey, String> = BTreeMap::new();
    for s in existing.filter(|s| !seen.contains_key(&s.id)) {
        for f in &s.frontends {
            owner.insert(f.key, s.id.to_string());
        }
    }
    let ranges = || {
        if pod_cidrs.is_empty() {
            "none is known".to_string()
        } else {
            pod_cidrs
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    for s in changed {
        for (i, f) in s.frontends.iter().enumerate() {
            if f.kind != FrontendType::NodePort || !f.key.address.is_unspecified() {
                if let Some(c) = pod_cidrs.iter().find(|c| c.contains(&f.key.address)) {
                    return Err(Error::Invalid {
                        service: s.id.to_string(),
                        field: format!("frontends[{i}].address"),
                        reason: format!(
                            "{} is in the pod CIDR {c}: a pod's address cannot be a frontend",
                            f.key.address
                        ),
                    });
                }
            }
            if let Some(first) = owner.get(&f.key) {
                return Err(Error::DuplicateFrontend {
                    frontend: f.key.to_string(),
                    first: first.clone(),
                    second: s.id.to_string(),
                });
            }
            owner.insert(f.key, s.id.to_string());
        }
        for (i, b) in s.backends.iter().enumerate() {
            if !pod_cidrs.iter().any(|c| c.contains(&b.address)) {
                return Err(Error::Invalid {
                    service: s.id.to_string(),
                    field: format!("backends[{i}].address"),
                    reason: format!(
                        "{} is outside every known range (the nodes' pod CIDRs: {})",
                        b.address,
                        ranges()
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::from_flags;

    fn svc(name: &str, frontends: &[&str], backends: &[&str]) -> Service {
        let s = from_flags(&format!("shop/{name}"), frontends, backends).unwrap();
        Service::from_api(&s).unwrap()
    }

    fn cidrs() -> Vec<Ipv4Net> {
        vec![
            "198.18.1.0/24".parse().unwrap(),
            "198.18.2.0/24".parse().unwrap(),
        ]
    }

    #[test]
    fn a_frontend_of_another_service_is_refused() {
        let web = svc("web", &["198.19.128.10:80"], &["198.18.1.10:8080"]);
        let other = svc("other", &["198.19.128.10:80"], &[]);
        let e = check_change(std::slice::from_ref(&other), [&web].into_iter(), &cidrs())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "frontend 198.19.128.10:80/TCP is defined twice: by shop/web and by shop/other"
        );
        // Within one change too.
        let e = check_change(&[web.clone(), other.clone()], [].into_iter(), &cidrs()).unwrap_err();
        assert!(e.to_string().contains("defined twice"), "{e}");
        // Replacing web itself with the same frontend is no conflict.
        let web2 = svc("web", &["198.19.128.10:80"], &["198.18.2.10:8080"]);
        check_change(&[web2], [&web].into_iter(), &cidrs()).unwrap();
        // Nor is moving the frontend from web to other in one change.
        let web3 = svc("web", &["198.19.128.11:80"], &[]);
        check_change(&[web3, other], [&web].into_iter(), &cidrs()).unwrap();
        // A service twice in one change is refused.
        let e = check_change(&[web.clone(), web], [].into_iter(), &cidrs()).unwrap_err();
        assert!(matches!(e, Error::DuplicateService(_)), "{e}");
    }

    #[test]
    fn backends_must_be_in_a_known_range_and_frontends_outside_them() {
        let out = svc("web", &["198.19.128.10:80"], &["198.18.9.10:8080"]);
        let e = check_change(&[out], [].into_iter(), &cidrs())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("backends[0].address: 198.18.9.10 is outside every known range (the nodes' pod CIDRs: 198.18.1.0/24, 198.18.2.0/24)"),
            "{e}"
        );
        let in_pods = svc("web", &["198.18.1.200:80"], &[]);
        let e = check_change(&[in_pods], [].into_iter(), &cidrs())
            .unwrap_err()
            .to_string();
        assert!(e.contains("pod CIDR 198.18.1.0/24"), "{e}");
        let np = svc("web", &["nodeport:0.0.0.0:30080"], &["198.18.2.3:80"]);
        check_change(&[np], [].into_iter(), &cidrs()).unwrap();
    }
}
