//! The `iptables` configuration's rules: the benchmark's policy as an
//! iptables-based CNI installs per-pod policy chains (the layout of
//! kube-router's network policy: the FORWARD chain dispatches by pod
//! address to a chain per pod and direction; each pod chain first accepts
//! what conntrack knows as established, then has one rule per allowed
//! (peer, protocol, port), then drops). Pure: the text for
//! `iptables-restore`, which replaces the whole filter table at once.
//!
//! The policy is the one the `pilus` configuration imports
//! ([`super::pilus::policy_yaml`]): the server admits the client on
//! `entries` (protocol, port) pairs, the bench's own ports last — so a new
//! flow walks every rule, the worst case of a linear chain; the client may
//! send to the server; every filler pod admits the client on the TCP port.
//! The dispatch rules of the fillers come before the bench pods', so every
//! packet of the measured flow (replies too) walks all of them: the worst
//! case again, where an average pod would walk half.

use crate::load::{TCP_PORT, UDP_PORT};
use std::{fmt::Write, net::Ipv4Addr};

/// The first of the filler ports that make the server's rule count up;
/// they are every other port from here, so that no two make a range (the
/// policy engine merges adjacent ports into one entry).
pub const FILLER_PORT_BASE: u16 = 10_000;

/// Who is where.
#[derive(Clone, Debug)]
pub struct Layout {
    pub client: Ipv4Addr,
    pub server: Ipv4Addr,
    pub fillers: Vec<Ipv4Addr>,
}

/// The server's allowed (protocol, port) pairs for `entries` entries: the
/// filler ports first, then TCP and UDP of the bench. At least the bench's
/// two.
pub fn server_ports(entries: usize) -> Vec<(&'static str, u16)> {
    let fillers = entries.saturating_sub(2);
    (0..fillers)
        .map(|i| ("tcp", FILLER_PORT_BASE + 2 * i as u16))
        .chain([("tcp", TCP_PORT), ("udp", UDP_PORT)])
        .collect()
}

/// The most entries [`server_ports`] can make (filler ports stay below
/// 65536).
pub const MAX_ENTRIES: usize = ((u16::MAX - FILLER_PORT_BASE) / 2) as usize;

/// The filter table, for `iptables-restore` (no `--noflush`: it replaces
/// what was there).
pub fn ruleset(l: &Layout, entries: usize) -> String {
    let mut t = String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:PILUS-FWD - [0:0]\n");
    let chains = (0..l.fillers.len())
        .map(|i| format!("POD-F{i}-IN"))
        .chain(["POD-CLIENT-OUT".into(), "POD-SERVER-IN".into()]);
    for c in chains {
        let _ = writeln!(t, ":{c} - [0:0]");
    }
    t.push_str("-A FORWARD -j PILUS-FWD\n");
    for (i, ip) in l.fillers.iter().enumerate() {
        let _ = writeln!(t, "-A PILUS-FWD -d {ip}/32 -j POD-F{i}-IN");
    }
    let _ = writeln!(t, "-A PILUS-FWD -s {}/32 -j POD-CLIENT-OUT", l.client);
    let _ = writeln!(t, "-A PILUS-FWD -d {}/32 -j POD-SERVER-IN", l.server);
    let established = "-m conntrack --ctstate RELATED,ESTABLISHED";
    // Egress: RETURN, not ACCEPT, so the destination's ingress chain still
    // judges the packet.
    let _ = writeln!(t, "-A POD-CLIENT-OUT {established} -j RETURN");
    let _ = writeln!(t, "-A POD-CLIENT-OUT -d {}/32 -j RETURN", l.server);
    t.push_str("-A POD-CLIENT-OUT -j DROP\n");
    let _ = writeln!(t, "-A POD-SERVER-IN {established} -j ACCEPT");
    for (proto, port) in server_ports(entries) {
        let _ = writeln!(
            t,
            "-A POD-SERVER-IN -s {}/32 -p {proto} --dport {port} -j ACCEPT",
            l.client
        );
    }
    t.push_str("-A POD-SERVER-IN -j DROP\n");
    for i in 0..l.fillers.len() {
        let _ = writeln!(t, "-A POD-F{i}-IN {established} -j ACCEPT");
        let _ = writeln!(
            t,
            "-A POD-F{i}-IN -s {}/32 -p tcp --dport {TCP_PORT} -j ACCEPT",
            l.client
        );
        let _ = writeln!(t, "-A POD-F{i}-IN -j DROP");
    }
    t.push_str("COMMIT\n");
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(fillers: usize) -> Layout {
        Layout {
            client: Ipv4Addr::new(198, 18, 0, 10),
            server: Ipv4Addr::new(198, 18, 0, 11),
            fillers: (0..fillers)
                .map(|i| Ipv4Addr::new(198, 18, 4, 2 + i as u8))
                .collect(),
        }
    }

    #[test]
    fn the_server_chain_has_one_rule_per_entry_and_the_bench_ports_last() {
        let t = ruleset(&layout(0), 10);
        let server: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("-A POD-SERVER-IN -s"))
            .collect();
        assert_eq!(server.len(), 10);
        assert!(server[8].ends_with("-p tcp --dport 5201 -j ACCEPT"));
        assert!(server[9].ends_with("-p udp --dport 5202 -j ACCEPT"));
        assert!(t.contains("-A POD-SERVER-IN -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A POD-SERVER-IN -s"));
        assert!(t.ends_with("-A POD-SERVER-IN -j DROP\nCOMMIT\n"));
        assert_eq!(server_ports(1).len(), 2);
        assert_eq!(server_ports(10_000).len(), 10_000);
        assert_eq!(server_ports(4)[..2], [("tcp", 10_000), ("tcp", 10_002)]);
        assert!(server_ports(MAX_ENTRIES).last().is_some());
    }

    #[test]
    fn fillers_are_dispatched_before_the_bench_pods() {
        let t = ruleset(&layout(3), 2);
        let dispatch: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("-A PILUS-FWD"))
            .collect();
        assert_eq!(dispatch.len(), 5);
        assert_eq!(dispatch[0], "-A PILUS-FWD -d 198.18.4.2/32 -j POD-F0-IN");
        assert_eq!(
            dispatch[3],
            "-A PILUS-FWD -s 198.18.0.10/32 -j POD-CLIENT-OUT"
        );
        assert_eq!(
            dispatch[4],
            "-A PILUS-FWD -d 198.18.0.11/32 -j POD-SERVER-IN"
        );
        // Every chain used is declared, and every address is the bench's.
        for i in 0..3 {
            assert!(t.contains(&format!(":POD-F{i}-IN - [0:0]")));
        }
        for word in t.split_whitespace() {
            if let Some(ip) = word.strip_suffix("/32") {
                assert!(ip.starts_with("198.18."), "{ip}");
            }
        }
    }
}
