//! The connection to pilusd, and the exit codes scripts can rely on.

use pilus_client::blocking::Client;
use std::path::Path;

/// Exit codes, documented in `pilus --help`.
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
pub const EXIT_NOT_FOUND: i32 = 3;
pub const EXIT_UNREACHABLE: i32 = 4;
pub const EXIT_FAULT: i32 = 5;

pub fn client(socket: &Path) -> Client {
    Client::new(socket)
}

/// Input the CLI itself refuses (before asking the agent).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// `pilus doctor` found faults (its report says which).
#[derive(Debug, thiserror::Error)]
#[error("pilus doctor found {0} fault(s)")]
pub struct FaultsFound(pub usize);

/// The exit code for an error chain: the API's status decides.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if cause.downcast_ref::<FaultsFound>().is_some() {
            return EXIT_FAULT;
        }
        if cause.downcast_ref::<InvalidInput>().is_some() {
            return EXIT_INVALID;
        }
        if let Some(api) = cause.downcast_ref::<pilus_client::Error>() {
            return match api {
                pilus_client::Error::Connect { .. } => EXIT_UNREACHABLE,
                pilus_client::Error::Status { status: 400, .. } => EXIT_INVALID,
                pilus_client::Error::Status { status: 404, .. } => EXIT_NOT_FOUND,
                _ => EXIT_FAILURE,
            };
        }
    }
    EXIT_FAILURE
}
