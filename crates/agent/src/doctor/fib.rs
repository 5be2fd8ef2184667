//! The kernel's IPv4 route choice, evaluated over dumped rules and routes:
//! rules in priority order, each selecting packets and naming a table (or
//! refusing them), and in a table the longest prefix that holds the
//! address. Pure, so the checks that use it are tested without a kernel.
//!
//! What it leaves out, on purpose: selectors the dump does not carry
//! (uidrange, ipproto, ports, tos) — a rule with one matches here more
//! than in the kernel, which can only make the doctor more careful;
//! `goto` rules (skipped); multipath routes (the first hop).

use pilus_netlink::{Route, Rule};
use std::net::Ipv4Addr;

/// The tables with names of their own (`ip rule` prints them so).
pub const TABLE_LOCAL: u32 = 255;
pub const TABLE_MAIN: u32 = 254;
pub const TABLE_DEFAULT: u32 = 253;

/// `FR_ACT_TO_TBL`: look the packet up in the rule's table.
pub const ACTION_TO_TABLE: u8 = 1;

/// Route types (`RTN_*`); the three that refuse are also the rule
/// actions (`FR_ACT_*`) of the same names and numbers.
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
pub const RTN_BLACKHOLE: u8 = 6;
pub const RTN_UNREACHABLE: u8 = 7;
pub const RTN_PROHIBIT: u8 = 8;
/// A `throw` route: the lookup goes on with the next rule.
pub const RTN_THROW: u8 = 9;

/// A packet, as far as route choice looks at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow<'a> {
    pub dst: Ipv4Addr,
    /// `None` when unknown: rules that select by source do not match
    /// (whether they would is the caller's question to ask on its own).
    pub src: Option<Ipv4Addr>,
    /// The input device; `lo` for the node's own packets and for the
    /// kernel's reverse-path check.
    pub iif: &'a str,
    pub mark: u32,
}

/// Where the kernel sends a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved<'a> {
    /// Out by this route, chosen through this rule.
    Route { rule: &'a Rule, route: &'a Route },
    /// Refused by this rule (blackhole, unreachable, prohibit), or by a
    /// route of such a type in its table.
    Refused {
        rule: &'a Rule,
        route: Option<&'a Route>,
    },
    /// No rule's table had a route.
    NoRoute,
}

/// Whether `addr` is in `net/len`.
pub fn contains(net: Ipv4Addr, len: u8, addr: Ipv4Addr) -> bool {
    if len == 0 {
        return true;
    }
    let mask = u32::MAX << (32 - u32::from(len.min(32)));
    u32::from(net) & mask == u32::from(addr) & mask
}

/// The route table `table` chooses for `dst`: the longest prefix, then the
/// lowest metric.
pub fn lookup(routes: &[Route], table: u32, dst: Ipv4Addr) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| r.table == table && contains(r.dst, r.dst_len, dst))
        .min_by_key(|r| (std::cmp::Reverse(r.dst_len), r.metric.unwrap_or(0)))
}

/// Whether `rule`'s selectors take `flow`.
pub fn selects(rule: &Rule, flow: &Flow<'_>) -> bool {
    let src = match flow.src {
        Some(src) => contains(rule.src, rule.src_len, src),
        None => rule.src_len == 0,
    };
    let mark = match rule.fwmark {
        Some(m) => flow.mark & rule.fwmask.unwrap_or(u32::MAX) == m,
        None => true,
    };
    src && mark
        && contains(rule.dst, rule.dst_len, flow.dst)
        && rule.iif.as_deref().is_none_or(|i| i == flow.iif)
        // An oif rule takes only packets of sockets bound to that device.
        && rule.oif.is_none()
}

/// Whether a route of this type delivers (rather than refuses).
pub fn delivers(route: &Route) -> bool {
    matches!(route.kind, RTN_UNICAST | RTN_LOCAL)
}

/// Where the kernel sends `flow`, rule by rule.
pub fn resolve<'a>(rules: &'a [Rule], routes: &'a [Route], flow: &Flow<'_>) -> Resolved<'a> {
    let mut ordered: Vec<&Rule> = rules.iter().collect();
    ordered.sort_by_key(|r| r.priority);
    for rule in ordered {
        if !selects(rule, flow) {
            continue;
        }
        match rule.action {
            ACTION_TO_TABLE => match lookup(routes, rule.table, flow.dst) {
                None => continue,
                Some(r) if r.kind == RTN_THROW => continue,
                Some(r) if matches!(r.kind, RTN_BLACKHOLE | RTN_UNREACHABLE | RTN_PROHIBIT) => {
                    return Resolved::Refused {
                        rule,
                        route: Some(r),
                    }
                }
                Some(route) => return Resolved::Route { rule, route },
            },
            RTN_BLACKHOLE | RTN_UNREACHABLE | RTN_PROHIBIT => {
                // FR_ACT_BLACKHOLE/UNREACHABLE/PROHIBIT share RTN_'s numbers.
                return Resolved::Refused { rule, route: None };
            }
            _ => continue,
        }
    }
    Resolved::NoRoute
}

/// A table's name as `ip rule` prints it.
pub fn table_name(t: u32) -> String {
    match t {
        TABLE_LOCAL => "local".into(),
        TABLE_MAIN => "main".into(),
        TABLE_DEFAULT => "default".into(),
        n => n.to_string(),
    }
}

/// A rule as `ip rule` prints it: `32760: from 198.18.0.9 lookup 100`.
pub fn show_rule(r: &Rule) -> String {
    let mut s = format!("{}: from ", r.priority);
    if r.src_len == 0 {
        s.push_str("all");
    } else {
        s.push_str(&prefix(r.src, r.src_len));
    }
    if r.dst_len > 0 {
        s.push_str(&format!(" to {}", prefix(r.dst, r.dst_len)));
    }
    if let Some(m) = r.fwmark {
        s.push_str(&format!(" fwmark {m:#x}"));
        if let Some(mask) = r.fwmask.filter(|&m| m != u32::MAX) {
            s.push_str(&format!("/{mask:#x}"));
        }
    }
    if let Some(i) = &r.iif {
        s.push_str(&format!(" iif {i}"));
    }
    if let Some(o) = &r.oif {
        s.push_str(&format!(" oif {o}"));
    }
    match r.action {
        ACTION_TO_TABLE => s.push_str(&format!(" lookup {}", table_name(r.table))),
        RTN_BLACKHOLE => s.push_str(" blackhole"),
        RTN_UNREACHABLE => s.push_str(" unreachable"),
        RTN_PROHIBIT => s.push_str(" prohibit"),
        a => s.push_str(&format!(" action {a}")),
    }
    s
}

fn prefix(ip: Ipv4Addr, len: u8) -> String {
    if len == 32 {
        ip.to_string()
    } else {
        format!("{ip}/{len}")
    }
}

/// A route as `ip route show table N` prints it, with `dev` named by
/// `dev_name`: `default via 198.19.0.254 dev eth0 table 100`.
pub fn show_route(r: &Route, dev_name: impl Fn(u32) -> String) -> String {
    let mut s = String::new();
    match r.kind {
        RTN_UNICAST => {}
        RTN_LOCAL => s.push_str("local "),
        RTN_BLACKHOLE => s.push_str("blackhole "),
        RTN_UNREACHABLE => s.push_str("unreachable "),
        RTN_PROHIBIT => s.push_str("prohibit "),
        RTN_THROW => s.push_str("throw "),
        k => s.push_str(&format!("type {k} ")),
    }
    if r.dst_len == 0 {
        s.push_str("default");
    } else {
        s.push_str(&prefix(r.dst, r.dst_len));
    }
    if let Some(gw) = r.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev {}", dev_name(oif)));
    }
    if let Some(m) = r.metric {
        s.push_str(&format!(" metric {m}"));
    }
    s.push_str(&format!(" table {}", table_name(r.table)));
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn rule(priority: u32, table: u32) -> Rule {
        Rule::to_table(priority, table)
    }

    /// The three rules every namespace starts with.
    pub fn default_rules() -> Vec<Rule> {
        vec![
            rule(0, TABLE_LOCAL),
            rule(32766, TABLE_MAIN),
            rule(32767, TABLE_DEFAULT),
        ]
    }

    pub fn route(dst: &str, table: u32, oif: u32, gateway: Option<Ipv4Addr>) -> Route {
        let (ip, len) = dst.split_once('/').unwrap_or((dst, "32"));
        Route {
            dst: ip.parse().unwrap(),
            dst_len: len.parse().unwrap(),
            gateway,
            oif: Some(oif),
            scope: 0,
            table,
            kind: RTN_UNICAST,
            metric: None,
            prefsrc: None,
        }
    }

    fn flow(dst: &str, src: Option<&str>) -> Flow<'static> {
        Flow {
            dst: dst.parse().unwrap(),
            src: src.map(|s| s.parse().unwrap()),
            iif: "lo",
            mark: 0,
        }
    }

    #[test]
    fn longest_prefix_then_metric() {
        let mut wide = route("198.18.0.0/16", TABLE_MAIN, 2, None);
        wide.metric = Some(5);
        let mut narrow_far = route("198.18.1.0/24", TABLE_MAIN, 3, None);
        narrow_far.metric = Some(100);
        let narrow_near = route("198.18.1.0/24", TABLE_MAIN, 4, None);
        let routes = [wide, narrow_far, narrow_near];
        let ip: Ipv4Addr = "198.18.1.7".parse().unwrap();
        assert_eq!(lookup(&routes, TABLE_MAIN, ip).unwrap().oif, Some(4));
        assert_eq!(lookup(&routes, 100, ip), None, "another table");
        let other: Ipv4Addr = "198.18.9.1".parse().unwrap();
        assert_eq!(lookup(&routes, TABLE_MAIN, other).unwrap().oif, Some(2));
    }

    #[test]
    fn seed_002_rule_takes_replies_before_main() {
        // 32760: from 198.19.0.9 lookup 100, table 100 default via eth0.
        let mut rules = default_rules();
        let mut seed = rule(32760, 100);
        seed.src = "198.19.0.9".parse().unwrap();
        seed.src_len = 32;
        rules.push(seed.clone());
        let gw = Some("198.19.0.254".parse().unwrap());
        let routes = [
            route("198.18.1.2", TABLE_MAIN, 7, None),
            route("0.0.0.0/0", 100, 2, gw),
        ];
        match resolve(&rules, &routes, &flow("198.18.1.2", Some("198.19.0.9"))) {
            Resolved::Route { rule, route } => {
                assert_eq!(rule.priority, 32760);
                assert_eq!(route.oif, Some(2));
            }
            other => panic!("{other:?}"),
        }
        // Another source, or an unknown one, reaches the pod through main.
        for src in [Some("198.19.0.8"), None] {
            match resolve(&rules, &routes, &flow("198.18.1.2", src)) {
                Resolved::Route { rule, route } => {
                    assert_eq!((rule.table, route.oif), (TABLE_MAIN, Some(7)))
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(show_rule(&seed), "32760: from 198.19.0.9 lookup 100");
        let shown = show_route(&routes[1], |i| format!("if{i}"));
        assert_eq!(shown, "default via 198.19.0.254 dev if2 table 100");
    }

    #[test]
    fn empty_tables_throw_and_refusals() {
        let mut rules = default_rules();
        rules.push(rule(100, 200)); // table 200 holds nothing for the pod
        let mut throw = route("198.18.1.0/24", 300, 1, None);
        throw.kind = RTN_THROW;
        rules.push(rule(200, 300));
        let routes = [route("198.18.1.2", TABLE_MAIN, 7, None), throw];
        match resolve(&rules, &routes, &flow("198.18.1.2", None)) {
            Resolved::Route { rule, .. } => assert_eq!(rule.table, TABLE_MAIN),
            other => panic!("{other:?}"),
        }
        let mut deny = rule(50, 0);
        deny.action = RTN_PROHIBIT;
        deny.dst = "198.18.1.0".parse().unwrap();
        deny.dst_len = 24;
        rules.push(deny);
        assert!(matches!(
            resolve(&rules, &routes, &flow("198.18.1.2", None)),
            Resolved::Refused { route: None, .. }
        ));
        assert_eq!(
            show_rule(rules.last().unwrap()),
            "50: from all to 198.18.1.0/24 prohibit"
        );
        assert_eq!(
            resolve(&[], &routes, &flow("198.18.1.2", None)),
            Resolved::NoRoute
        );
    }

    #[test]
    fn selectors() {
        let mut r = rule(10, 100);
        r.fwmark = Some(0x200);
        r.fwmask = Some(0xf00);
        let mut f = flow("198.18.1.2", None);
        assert!(!selects(&r, &f), "unmarked");
        f.mark = 0x1234 & !0xf00 | 0x200;
        assert!(selects(&r, &f));
        let mut iif = rule(10, 100);
        iif.iif = Some("eth0".into());
        assert!(!selects(&iif, &flow("198.18.1.2", None)), "iif lo");
        assert!(contains(
            "198.18.1.0".parse().unwrap(),
            24,
            "198.18.1.255".parse().unwrap()
        ));
        assert!(!contains(
            "198.18.1.0".parse().unwrap(),
            24,
            "198.18.2.0".parse().unwrap()
        ));
    }
}
