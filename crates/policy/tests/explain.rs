//! A datapath decision back to its rule, without root: the cookie of the
//! entry that decided names the policy and the rule, the peer and port name
//! the peer rule; a default deny names the policies that select the
//! endpoint. Every entry a rule writes carries that rule's cookie.

use pilus_policy::{
    explain::{split_cookie, Decision, Explanation},
    parse_documents, Direction, Engine, Labels,
};

const POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-ingress, namespace: shop}
specs:
- endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
- endpointSelector: {matchLabels: {app: web}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: intruder}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-also, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: monitor}}]
    toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
"#;

fn engine() -> (Engine, u32, u32, u32) {
    let mut e = Engine::new();
    let l = |s: &[&str]| Labels::parse_all(s, "k8s").unwrap();
    e.upsert_endpoint(1, "shop", &l(&["app=web"])).unwrap();
    e.upsert_endpoint(2, "shop", &l(&["app=client"])).unwrap();
    e.upsert_endpoint(3, "shop", &l(&["app=intruder"])).unwrap();
    e.import(parse_documents(POLICIES, "policy.yaml").unwrap())
        .unwrap();
    let id = |ep| e.endpoint(ep).unwrap().identity;
    let (web, client, intruder) = (id(1), id(2), id(3));
    (e, web, client, intruder)
}

/// Web's (endpoint 1) ingress decision about `peer` on TCP `port`.
fn web_ingress(peer: u32, port: u16, cookie: u32, denied: bool) -> Decision {
    Decision {
        ep_id: 1,
        direction: Direction::Ingress,
        peer,
        protocol: 6,
        port,
        cookie,
        denied,
    }
}

/// The cookie of web's ingress entry for `peer`.
fn cookie_for(e: &Engine, peer: u32) -> (u32, bool) {
    let p = e.endpoint_policy(1).unwrap();
    let entry = p
        .entries
        .iter()
        .find(|x| x.direction == Direction::Ingress && x.identity == peer)
        .unwrap_or_else(|| panic!("no entry for {peer}: {:?}", p.entries));
    (entry.cookie, entry.deny)
}

#[test]
fn an_allowed_flow_names_its_policy_rule_and_peers() {
    let (e, _web, client, _) = engine();
    let (cookie, deny) = cookie_for(&e, client);
    assert!(!deny);
    let x = e.explain(&web_ingress(client, 80, cookie, false));
    let Explanation::Rule {
        policy,
        rule,
        peer_rule,
        peers,
        deny,
        ..
    } = &x
    else {
        panic!("{x:?}")
    };
    assert_eq!(
        (
            policy.name.as_str(),
            rule.as_str(),
            peer_rule.as_deref(),
            *deny
        ),
        (
            "web-ingress",
            "specs[0]",
            Some("specs[0].ingress[0]"),
            false
        )
    );
    assert!(peers.as_ref().unwrap().contains("app=client"), "{peers:?}");
    assert!(peers.as_ref().unwrap().contains("80/TCP"), "{peers:?}");
    assert_eq!(
        x.to_string(),
        format!(
            "allowed by CiliumNetworkPolicy shop/web-ingress rule specs[0].ingress[0] ({})",
            peers.as_ref().unwrap()
        )
    );
}

#[test]
fn a_denied_flow_names_the_deny_rule_and_a_default_deny_the_selecting_policies() {
    let (e, _web, _client, intruder) = engine();
    let (cookie, deny) = cookie_for(&e, intruder);
    assert!(deny);
    assert_eq!(split_cookie(cookie).1, 1, "the second rule of the document");
    let x = e.explain(&web_ingress(intruder, 22, cookie, true));
    assert_eq!(x.policy().unwrap().name, "web-ingress");
    assert!(
        x.to_string().starts_with(
            "denied by CiliumNetworkPolicy shop/web-ingress rule specs[1].ingressDeny[0]"
        ),
        "{x}"
    );

    // The client on another port: nothing allows it, web is selected by
    // both policies.
    let client_id = e.endpoint(2).unwrap().identity;
    let x = e.explain(&web_ingress(client_id, 22, 0, true));
    let Explanation::DefaultDeny { selected_by } = &x else {
        panic!("{x:?}")
    };
    let names: Vec<&str> = selected_by.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web-also", "web-ingress"]);
    assert_eq!(
        x.to_string(),
        "default deny: endpoint selected by policy CiliumNetworkPolicy shop/web-also, \
         CiliumNetworkPolicy shop/web-ingress; no rule allows this peer"
    );
    // Nothing selects the client's egress.
    assert_eq!(e.selecting(2, Direction::Egress), vec![]);
}

#[test]
fn a_cookie_of_a_deleted_policy_is_said_to_be_unknown() {
    let (mut e, _, client, _) = engine();
    let (cookie, _) = cookie_for(&e, client);
    let id = e.rule_of_cookie(cookie).unwrap().0.clone();
    e.delete(&[id]);
    let x = e.explain(&web_ingress(client, 80, cookie, false));
    assert_eq!(x, Explanation::Unknown { cookie });
}
