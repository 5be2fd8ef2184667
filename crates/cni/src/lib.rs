//! The Pilus CNI plugin, as a library so that its protocol logic is tested
//! without root:
//!
//! - [`spec`]: the CNI protocol — environment, network configuration,
//!   version negotiation, results and error objects (pure);
//! - [`plugin`]: the commands, which create the pod's interface with
//!   `pilus_netlink::pod` and ask the agent for the endpoint;
//! - [`runtime`]: the container's labels read from the runtime's own
//!   metadata at ADD (containerd), for runtimes that pass none.
//!
//! The binary (`pilus-cni`) only reads the environment and stdin, calls
//! [`plugin::run`] and prints what it returns (notes on stderr).

pub mod plugin;
pub mod runtime;
pub mod spec;
