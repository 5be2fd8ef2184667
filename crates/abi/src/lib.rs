//! The datapath's shared ABI, mirrored from `bpf/lib/abi/abi.h`: map keys and
//! values, event records, drop codes and constants.
//!
//! The C header is the definition. Every struct here is `#[repr(C)]` with its
//! padding written out, and is checked field by field against the BTF of the
//! compiled object (`crates/datapath/tests/layout.rs`); every constant is
//! checked against the header's `#define`s (the tests at the bottom).

mod bytes;
pub mod consts;
mod drop;
pub mod layout;
pub mod monitor;
pub mod policy_key;
mod types;

pub use bytes::{Be16, Be32};
pub use drop::{DropReason, DROP_REASONS};
pub use monitor::Aggregation;
pub use policy_key::{range_to_prefixes, PolicyEntry, PortRangeError};
pub use types::*;
