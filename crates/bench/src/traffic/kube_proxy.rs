//! kube-proxy's iptables mode, generated for the service benchmark: the
//! `nat` table kube-proxy writes for N ClusterIP services, so the
//! `iptables` configuration pays what a kube-proxy node pays. Pure: the
//! text for `iptables-restore`, which replaces the whole table at once.
//!
//! The layout is kube-proxy's: PREROUTING and OUTPUT jump to
//! KUBE-SERVICES, which has one rule per frontend (`-d VIP -p tcp --dport
//! PORT -j KUBE-SVC-…`); a KUBE-SVC chain picks one of its endpoints with
//! `-m statistic --mode random --probability 1/k` rules (the last takes
//! what is left); a KUBE-SEP chain marks hairpin traffic for masquerade and
//! DNATs to the endpoint. The measured service is the last frontend of
//! KUBE-SERVICES, so a new connection to it walks every rule: kube-proxy's
//! order is its own, and an average service would walk half.

use std::{fmt::Write, net::Ipv4Addr};

/// One service: its frontend and its endpoints (pod address, port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// The chain name kube-proxy would give (`KUBE-SVC-` + 16 characters of a
/// hash of the service's name; here of its index, which is as unique).
fn chain(prefix: &str, n: usize) -> String {
    format!("{prefix}{n:016X}")
}

/// kube-proxy's `nat` table for `services`, in their order (the last is
/// the one a walk reaches last).
pub fn nat_table(services: &[Service]) -> String {
    let mut t = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n",
    );
    let mut sep = 0usize;
    for (i, s) in services.iter().enumerate() {
        let _ = writeln!(t, ":{} - [0:0]", chain("KUBE-SVC-", i));
        for _ in &s.endpoints {
            let _ = writeln!(t, ":{} - [0:0]", chain("KUBE-SEP-", sep));
            sep += 1;
        }
    }
    t.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
    );
    for (i, s) in services.iter().enumerate() {
        let _ = writeln!(
            t,
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"bench/svc-{i} cluster IP\" -m tcp --dport {} -j {}",
            s.vip,
            s.port,
            chain("KUBE-SVC-", i)
        );
    }
    let mut sep = 0usize;
    for (i, s) in services.iter().enumerate() {
        let svc = chain("KUBE-SVC-", i);
        let k = s.endpoints.len();
        for (j, (ip, port)) in s.endpoints.iter().enumerate() {
            let to = chain("KUBE-SEP-", sep + j);
            let left = k - j;
            if left > 1 {
                let _ = writeln!(
                    t,
                    "-A {svc} -m statistic --mode random --probability {:.11} -j {to}",
                    1.0 / left as f64
                );
            } else {
                let _ = writeln!(t, "-A {svc} -j {to}");
            }
            let _ = writeln!(t, "-A {to} -s {ip}/32 -j KUBE-MARK-MASQ");
            let _ = writeln!(
                t,
                "-A {to} -p tcp -m tcp -j DNAT --to-destination {ip}:{port}"
            );
        }
        sep += k;
    }
    t.push_str("COMMIT\n");
    t
}

/// `n` services for the benchmark: frontends in 198.19.128.0/17, 64 ports
/// per address from port 1024, so 100,000 fit; every one has `endpoints`
/// (the same backends: the measured one is the last service).
pub fn services(n: usize, endpoints: &[(Ipv4Addr, u16)]) -> Vec<Service> {
    (0..n)
        .map(|i| {
            let (vip, port) = frontend(i);
            Service {
                vip,
                port,
                endpoints: endpoints.to_vec(),
            }
        })
        .collect()
}

/// The `i`th frontend of [`services`].
pub fn frontend(i: usize) -> (Ipv4Addr, u16) {
    let addr = u32::from(Ipv4Addr::new(198, 19, 128, 1)) + (i / 64) as u32;
    (Ipv4Addr::from(addr), 1024 + (i % 64) as u16)
}

/// The most services [`services`] can make inside 198.19.128.0/17.
pub const MAX_SERVICES: usize = (32_768 - 2) * 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_a_portal_a_random_choice_and_a_dnat_per_endpoint() {
        let eps = [
            (Ipv4Addr::new(198, 18, 0, 20), 5201),
            (Ipv4Addr::new(198, 18, 0, 21), 5201),
            (Ipv4Addr::new(198, 18, 0, 22), 5201),
        ];
        let t = nat_table(&services(2, &eps));
        let portals: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES"))
            .collect();
        assert_eq!(portals.len(), 2);
        assert!(portals[1].starts_with("-A KUBE-SERVICES -d 198.19.128.1/32 -p tcp"));
        assert!(portals[1].ends_with("--dport 1025 -j KUBE-SVC-0000000000000001"));
        let svc1: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SVC-0000000000000001 "))
            .collect();
        assert_eq!(
            svc1,
            [
                "-A KUBE-SVC-0000000000000001 -m statistic --mode random --probability 0.33333333333 -j KUBE-SEP-0000000000000003",
                "-A KUBE-SVC-0000000000000001 -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-0000000000000004",
                "-A KUBE-SVC-0000000000000001 -j KUBE-SEP-0000000000000005",
            ]
        );
        assert!(t.contains(
            "-A KUBE-SEP-0000000000000005 -p tcp -m tcp -j DNAT --to-destination 198.18.0.22:5201\n"
        ));
        // Every chain jumped to is declared, once.
        for l in t.lines().filter(|l| l.starts_with("-A ")) {
            if let Some(target) = l.split(" -j ").nth(1) {
                let target = target.split_whitespace().next().unwrap();
                if target.starts_with("KUBE-") {
                    assert_eq!(
                        t.matches(&format!(":{target} - [0:0]\n")).count(),
                        1,
                        "{target}"
                    );
                }
            }
        }
        assert!(t.ends_with("COMMIT\n"));
    }

    #[test]
    fn a_hundred_thousand_frontends_are_distinct_and_in_the_bench_range() {
        let mut seen = std::collections::HashSet::new();
        for i in [0, 63, 64, 99_999, MAX_SERVICES - 1] {
            let (vip, port) = frontend(i);
            assert!(seen.insert((vip, port)));
            let o = vip.octets();
            assert!(o[0] == 198 && o[1] == 19 && o[2] >= 128, "{vip}");
            assert!(port >= 1024);
        }
        let all: std::collections::HashSet<_> = (0..100_000).map(frontend).collect();
        assert_eq!(all.len(), 100_000);
    }
}
