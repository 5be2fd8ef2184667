//! The store's errors. Each one names the file (and line) involved, so a
//! message logged by the agent is enough to act on.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value could not be serialized (e.g. a map with non-string keys).
    #[error("cannot encode {what} as JSON: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// A filesystem operation of the store failed; `action` says which.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// `state.json` exists but does not decode: the store refuses to start
    /// from an empty state rather than silently forget everything.
    #[error("{}: corrupt snapshot: {source}", path.display())]
    CorruptSnapshot {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A journal line other than the last one does not decode. A torn last
    /// line is a crash mid-write and is dropped; anything before it is not.
    #[error("{}:{line}: corrupt journal entry: {source}", path.display())]
    CorruptJournal {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },

    /// `state.json` decodes, but its checksum does not match its contents:
    /// it was changed after it was written (a damaged disk block, a flipped
    /// bit). Starting from it would start from a different state.
    #[error(
        "{}: checksum mismatch in the snapshot (stored {stored:#010x}, computed {computed:#010x}): \
         the file was damaged after it was written",
        path.display()
    )]
    SnapshotChecksum {
        path: PathBuf,
        stored: u32,
        computed: u32,
    },

    /// A journal line other than the last one decodes, but its checksum
    /// does not match: replaying it would apply a different operation. (On
    /// the last line a mismatch is a torn append and is dropped.)
    #[error(
        "{}:{line}: checksum mismatch in journal entry (stored {stored:#010x}, computed {computed:#010x}): \
         the file was damaged after it was written",
        path.display()
    )]
    JournalChecksum {
        path: PathBuf,
        line: usize,
        stored: u32,
        computed: u32,
    },

    /// A journal line without a checksum after one with it. Lines without
    /// checksums are only read from journals written before checksums, and
    /// such lines all come first.
    #[error(
        "{}:{line}: journal entry has no checksum, but an earlier entry has one",
        path.display()
    )]
    MissingChecksum { path: PathBuf, line: usize },

    /// Journal entries are numbered; a gap or a repeat means lost or
    /// duplicated operations, which replay must not paper over.
    #[error("{}:{line}: journal sequence broken: expected entry {expected}, found {found}", path.display())]
    JournalSequence {
        path: PathBuf,
        line: usize,
        expected: u64,
        found: u64,
    },
}
