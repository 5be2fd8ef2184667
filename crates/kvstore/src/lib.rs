//! The agent's persistent state: [`store`], an embedded snapshot + journal
//! store in one local directory (CRC-checked records, crash-safe
//! compaction), generic over the state and operation types, so it knows
//! nothing about endpoints or policies.

mod error;
pub mod store;

pub use error::Error;
pub use store::{Apply, Options, Store};

#[cfg(test)]
mod testutil;
