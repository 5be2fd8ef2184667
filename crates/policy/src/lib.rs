//! Pilus's policy engine, without syscalls: labels and selectors, the
//! identity allocator, policy documents (CiliumNetworkPolicy,
//! CiliumClusterwideNetworkPolicy, `cilium policy import` rules, Kubernetes
//! NetworkPolicy) parsed into one rule form, resolved into the per-endpoint
//! entries the datapath looks up, and traced for `pilus policy trace`.

pub mod cidr;
mod cnp;
mod document;
mod error;
mod knp;
pub mod labels;
pub mod rule;
pub mod selector;

pub use cidr::Cidr;
pub use document::parse_documents;
pub use error::Error;
pub use labels::{Label, Labels};
pub use rule::{
    Direction, Entity, Peer, PeerRule, Policy, PolicyId, PolicyKind, PortRule, Protocol, Rule,
};
pub use selector::{Op, Requirement, Selector};
pub mod engine;
pub mod explain;
pub mod identity;
pub mod lookup;
pub mod resolve;
pub mod trace;

pub use engine::{Change, EndpointRecord, Engine, EngineError, Update};
pub use explain::{Decision, Explanation};
pub use identity::Allocator;
pub use resolve::{EndpointPolicy, Entry};
