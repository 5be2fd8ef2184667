//! A small embedded state store for the agent: a JSON snapshot plus an
//! append-only JSON-lines journal in one directory, generic over the state
//! type `S` and the operation type `Op`.
//!
//! The caller keeps the state in memory and, for every change, appends the
//! operation with [`Store::append`] and applies it (through [`Apply`]);
//! [`Store::open`] rebuilds the state after a restart by loading the snapshot
//! and replaying the journal over it; [`Store::compact`] folds the journal
//! into a new snapshot when it has grown (see [`Store::journal_len`]).
//!
//! On disk:
//!
//! - `state.json`: `{"seq":N,"crc":C,"state":<S>}`, the state after
//!   operation N;
//! - `journal.jsonl`: one `{"seq":n,"crc":C,"op":<Op>}` per line, n = N+1,
//!   N+2, ...
//!
//! The numbers exist for one crash window: compaction renames the new
//! snapshot into place and only then empties the journal, so a crash in
//! between leaves operations that the snapshot already contains. Replay skips
//! entries numbered N or less instead of applying them twice, so operations
//! need not be idempotent. They also turn a lost or repeated entry into an
//! error instead of a silently wrong state.
//!
//! # Checksums
//!
//! JSON alone does not catch a damaged byte that still parses: a digit
//! changed in an address or a label value would be replayed as a different
//! state. So each record carries `crc`, the CRC-32 (IEEE, as `crc32fast`
//! computes it) of the record's `seq` as 8 little-endian bytes followed by
//! the exact bytes of its `op` (or `state`) value as they stand in the file;
//! they are read back byte for byte (serde_json's `RawValue`), never
//! re-serialized. `seq` is covered too because a changed number would make
//! an entry look already applied and be skipped. Unknown fields are refused,
//! so damage to a field name cannot make `crc` disappear.
//!
//! What a mismatch means depends on where it is:
//!
//! - the last journal line: a torn tail. An append that was cut off by a
//!   crash never returned `Ok`, so the operation was never applied by the
//!   caller either; the line is logged (`tracing::warn`), ignored and cut
//!   off, like a line that is unfinished JSON or has no line end;
//! - any other journal line, or the snapshot: an error naming the file (and
//!   line) and saying "checksum mismatch". The store never guesses past a
//!   damaged record and never starts from an empty state instead.
//!
//! # Files from before checksums
//!
//! A snapshot or journal line without `crc` was written by an earlier
//! version and is read as before, unchecked (logged once at open). New
//! appends carry checksums, and the next [`Store::compact`] (the agent
//! compacts at every start) rewrites the snapshot with one and empties the
//! journal, so the unchecked records go away. A line without `crc` after one
//! with it is refused: this code never writes one.
//!
//! The store does no locking: one process (the agent) owns the directory.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::error::Category;
use serde_json::value::RawValue;

use crate::Error;

const SNAPSHOT: &str = "state.json";
const SNAPSHOT_TMP: &str = "state.json.tmp";
const JOURNAL: &str = "journal.jsonl";

/// How a state changes under one operation. Replay calls this for every
/// journaled operation, so it must be deterministic and must not fail: an
/// operation that can be refused is checked before it is appended.
pub trait Apply<Op> {
    fn apply(&mut self, op: &Op);
}

/// How a [`Store`] is opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `fdatasync` the journal after every append (and after it is emptied
    /// by [`Store::compact`]). Off by default: an appended operation then
    /// survives a crash of the process, since its bytes are already in the
    /// kernel, but not a crash of the machine (power loss, kernel panic),
    /// which can lose the last few appends. That suits state that can be
    /// rebuilt from the cluster; turn it on when it cannot, at the price of
    /// a disk flush per append. Snapshots are always synced.
    pub sync: bool,
}

/// An open store. It holds the journal open between appends; the state
/// itself stays with the caller.
pub struct Store<S, Op> {
    dir: PathBuf,
    journal: File,
    journal_path: PathBuf,
    /// Bytes of whole entries in the journal, to cut a failed append off.
    journal_bytes: u64,
    /// Number of the last operation appended (or in the snapshot).
    seq: u64,
    /// Operations appended since the last snapshot.
    len: usize,
    sync: bool,
    // Only the types are used; `fn() -> _` keeps the store Send and Sync
    // whatever S and Op are.
    _types: PhantomData<fn() -> (S, Op)>,
}

impl<S, Op> std::fmt::Debug for Store<S, Op> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("seq", &self.seq)
            .field("journal_len", &self.len)
            .field("sync", &self.sync)
            .finish()
    }
}

/// `state.json` as written.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    seq: u64,
    crc: u32,
    state: &'a RawValue,
}

/// `state.json` as read: the state is kept as the file's bytes until its
/// checksum has been checked. `crc` is absent in snapshots from before
/// checksums.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotIn<'a> {
    seq: u64,
    #[serde(default)]
    crc: Option<u32>,
    #[serde(borrow)]
    state: &'a RawValue,
}

/// A journal line as written.
#[derive(Serialize)]
struct EntryOut<'a> {
    seq: u64,
    crc: u32,
    op: &'a RawValue,
}

/// A journal line as read; see [`SnapshotIn`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn<'a> {
    seq: u64,
    #[serde(default)]
    crc: Option<u32>,
    #[serde(borrow)]
    op: &'a RawValue,
}

/// One journal line, newline included. Compact JSON escapes newlines inside
/// strings, so an entry is always exactly one line. The op is serialized
/// once, and those bytes are both checksummed and written.
fn entry_line<Op: Serialize>(seq: u64, op: &Op) -> Result<Vec<u8>, Error> {
    let encode = |source| Error::Encode {
        what: "a journal entry",
        source,
    };
    let op = serde_json::value::to_raw_value(op).map_err(encode)?;
    let crc = checksum(seq, &op);
    let mut line = serde_json::to_vec(&EntryOut { seq, crc, op: &op }).map_err(encode)?;
    line.push(b'\n');
    Ok(line)
}

/// The checksum of a record: its number, then its value's bytes exactly as
/// they are in the file (see the module documentation).
fn checksum(seq: u64, value: &RawValue) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(value.get().as_bytes());
    h.finalize()
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

impl<S, Op> Store<S, Op>
where
    S: Serialize + DeserializeOwned + Default + Apply<Op>,
    Op: Serialize + DeserializeOwned,
{
    /// Opens (creating if needed) the store in `dir` with default
    /// [`Options`] and returns it with the recovered state.
    pub fn open(dir: &Path) -> Result<(Self, S), Error> {
        Self::open_with(dir, Options::default())
    }

    /// Opens (creating if needed) the store in `dir` and returns it with the
    /// recovered state: the snapshot (or `S::default()` if there is none)
    /// with the journal replayed over it.
    ///
    /// The directory is created with mode 0700. A torn last journal line (a
    /// crash in the middle of an append, which therefore never returned
    /// `Ok`: unfinished JSON, no line end, or a checksum mismatch) is
    /// logged, ignored and cut off so later appends start on a clean line.
    /// A bad line anywhere else, or a bad snapshot, is an error naming the
    /// file (and line): the store never guesses past lost operations.
    pub fn open_with(dir: &Path, options: Options) -> Result<(Self, S), Error> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error("creating directory", dir))?;

        // A leftover temporary snapshot is a compaction that crashed before
        // its rename: the old snapshot and the journal still hold everything.
        let _ = fs::remove_file(dir.join(SNAPSHOT_TMP));

        let snapshot_path = dir.join(SNAPSHOT);
        let (mut state, snapshot_seq) = match fs::read(&snapshot_path) {
            Ok(bytes) => read_snapshot::<S>(&bytes, &snapshot_path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (S::default(), 0),
            Err(e) => return Err(io_error("reading", &snapshot_path)(e)),
        };

        let journal_path = dir.join(JOURNAL);
        let mut journal = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&journal_path)
            .map_err(io_error("opening", &journal_path))?;
        let mut bytes = Vec::new();
        journal
            .read_to_end(&mut bytes)
            .map_err(io_error("reading", &journal_path))?;

        let replayed = replay::<Op>(&bytes, snapshot_seq, &journal_path, |op| state.apply(&op))?;
        if replayed.valid_bytes < bytes.len() as u64 {
            // Otherwise the next append would be glued onto the torn line,
            // turning a harmless tail into corruption in the middle.
            journal
                .set_len(replayed.valid_bytes)
                .map_err(io_error("truncating the torn tail of", &journal_path))?;
            if options.sync {
                journal
                    .sync_data()
                    .map_err(io_error("syncing", &journal_path))?;
            }
        }

        let store = Store {
            dir: dir.to_owned(),
            journal,
            journal_path,
            journal_bytes: replayed.valid_bytes,
            seq: replayed.last_seq,
            len: replayed.applied,
            sync: options.sync,
            _types: PhantomData,
        };
        Ok((store, state))
    }
}

impl<S, Op> Store<S, Op> {
    /// Appends one operation as one journal line. When this returns `Ok` the
    /// line is in the kernel (and on disk with [`Options::sync`]); on `Err`
    /// the journal is left as it was, and the caller should not apply `op`.
    pub fn append(&mut self, op: &Op) -> Result<(), Error>
    where
        Op: Serialize,
    {
        let seq = self.seq + 1;
        let line = entry_line(seq, op)?;
        if let Err(e) = self.write_line(&line) {
            // A partial line would corrupt the journal for the next append.
            let _ = self.journal.set_len(self.journal_bytes);
            return Err(io_error("appending to", &self.journal_path)(e));
        }
        self.journal_bytes += line.len() as u64;
        self.seq = seq;
        self.len += 1;
        Ok(())
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        // One write_all on an O_APPEND file, unbuffered: the bytes reach the
        // kernel before append returns, which is what survives a crash.
        self.journal.write_all(line)?;
        if self.sync {
            self.journal.sync_data()?;
        }
        Ok(())
    }

    /// Writes `state` as the new snapshot and empties the journal.
    /// `state` must be the caller's state with every appended operation
    /// applied.
    ///
    /// The snapshot goes to `state.json.tmp`, is fsynced, renamed over
    /// `state.json` and the directory fsynced, so a crash leaves either the
    /// old snapshot or the new one, never a partial file; only then is the
    /// journal truncated.
    pub fn compact(&mut self, state: &S) -> Result<(), Error>
    where
        S: Serialize,
    {
        let encode = |source| Error::Encode {
            what: "the snapshot",
            source,
        };
        let state = serde_json::value::to_raw_value(state).map_err(encode)?;
        let bytes = serde_json::to_vec(&SnapshotOut {
            seq: self.seq,
            crc: checksum(self.seq, &state),
            state: &state,
        })
        .map_err(encode)?;

        let tmp = self.dir.join(SNAPSHOT_TMP);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_error("creating", &tmp))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_error("writing", &tmp))?;
        drop(file);

        let snapshot = self.dir.join(SNAPSHOT);
        fs::rename(&tmp, &snapshot).map_err(io_error("renaming the new snapshot to", &snapshot))?;
        // The rename must be durable before the journal it replaces is
        // emptied, or a power loss could leave the old snapshot and no
        // journal.
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("syncing directory", &self.dir))?;

        // If this fails the journal keeps entries the snapshot already has;
        // replay skips them by number, so that is untidy but not wrong.
        self.journal
            .set_len(0)
            .map_err(io_error("truncating", &self.journal_path))?;
        if self.sync {
            self.journal
                .sync_data()
                .map_err(io_error("syncing", &self.journal_path))?;
        }
        self.journal_bytes = 0;
        self.len = 0;
        Ok(())
    }

    /// Operations appended (or replayed) since the last snapshot, for the
    /// caller to decide when to [`compact`](Store::compact) (e.g. every
    /// 1000).
    pub fn journal_len(&self) -> usize {
        self.len
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Decodes `state.json`: the state and the number of the last operation in
/// it, after checking the checksum (if the file has one).
fn read_snapshot<S: DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<(S, u64), Error> {
    let corrupt = |source| Error::CorruptSnapshot {
        path: path.to_owned(),
        source,
    };
    let snapshot: SnapshotIn = serde_json::from_slice(bytes).map_err(corrupt)?;
    match snapshot.crc {
        Some(stored) => {
            let computed = checksum(snapshot.seq, snapshot.state);
            if stored != computed {
                return Err(Error::SnapshotChecksum {
                    path: path.to_owned(),
                    stored,
                    computed,
                });
            }
        }
        None => tracing::info!(
            path = %path.display(),
            "snapshot has no checksum (written before checksums); the next compaction adds one"
        ),
    }
    let state = serde_json::from_str(snapshot.state.get()).map_err(corrupt)?;
    Ok((state, snapshot.seq))
}

struct Replayed {
    /// Bytes of the journal up to and including the last good line.
    valid_bytes: u64,
    last_seq: u64,
    applied: usize,
}

/// Replays the journal `bytes` over a snapshot taken after operation
/// `snapshot_seq`, calling `apply` for each newer operation in order.
fn replay<Op: DeserializeOwned>(
    bytes: &[u8],
    snapshot_seq: u64,
    path: &Path,
    mut apply: impl FnMut(Op),
) -> Result<Replayed, Error> {
    let mut lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    while lines.last().is_some_and(|l| l.trim_ascii().is_empty()) {
        lines.pop();
    }
    let mut out = Replayed {
        valid_bytes: 0,
        last_seq: snapshot_seq,
        applied: 0,
    };
    // Lines without a checksum, from before checksums.
    let mut unchecked = 0usize;
    let mut checked = false;
    let count = lines.len();
    for (i, raw) in lines.into_iter().enumerate() {
        let number = i + 1;
        let is_last = number == count;
        let terminated = raw.ends_with(b"\n");
        let text = raw.trim_ascii();
        if text.is_empty() {
            out.valid_bytes += raw.len() as u64;
            continue;
        }
        let torn = |why: &dyn std::fmt::Display| {
            tracing::warn!(
                path = %path.display(),
                line = number,
                bytes = raw.len(),
                reason = %why,
                "ignoring a torn last journal line; the agent probably crashed while appending it"
            );
        };
        // Every append writes its newline with the entry, so a line without
        // one was never completely written, even if what is there happens to
        // parse (a truncated number does).
        if !terminated {
            torn(&"no line end");
            break;
        }
        let corrupt = |source| Error::CorruptJournal {
            path: path.to_owned(),
            line: number,
            source,
        };
        let entry: EntryIn = match serde_json::from_slice(text) {
            Ok(entry) => entry,
            // Only unfinished or garbled JSON is a crash artifact; a
            // complete line that does not fit is a real problem (e.g. an
            // incompatible upgrade) even at the end.
            Err(e) if is_last && matches!(e.classify(), Category::Eof | Category::Syntax) => {
                torn(&e);
                break;
            }
            Err(source) => return Err(corrupt(source)),
        };
        match entry.crc {
            Some(stored) => {
                let computed = checksum(entry.seq, entry.op);
                if stored != computed {
                    if is_last {
                        torn(&"checksum mismatch");
                        break;
                    }
                    return Err(Error::JournalChecksum {
                        path: path.to_owned(),
                        line: number,
                        stored,
                        computed,
                    });
                }
                checked = true;
            }
            None if checked => {
                return Err(Error::MissingChecksum {
                    path: path.to_owned(),
                    line: number,
                })
            }
            None => unchecked += 1,
        }
        // Decoded only now: checked bytes that do not fit `Op` are an
        // incompatible entry, not damage.
        let op: Op = serde_json::from_str(entry.op.get()).map_err(corrupt)?;
        if entry.seq <= snapshot_seq {
            // Already in the snapshot: left over from a compaction that
            // crashed before it emptied the journal.
        } else if entry.seq == out.last_seq.saturating_add(1) {
            apply(op);
            out.last_seq = entry.seq;
            out.applied += 1;
        } else {
            return Err(Error::JournalSequence {
                path: path.to_owned(),
                line: number,
                expected: out.last_seq.saturating_add(1),
                found: entry.seq,
            });
        }
        out.valid_bytes += raw.len() as u64;
    }
    if unchecked > 0 {
        tracing::info!(
            path = %path.display(),
            lines = unchecked,
            "journal lines without checksums (written before checksums); the next compaction folds them into the snapshot"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    /// `Add` is deliberately not idempotent, so replaying an operation
    /// twice shows up in the totals.
    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Counters {
        values: BTreeMap<String, i64>,
    }

    #[derive(Debug, Serialize, Deserialize)]
    enum Op {
        Add { key: String, n: i64 },
        Remove { key: String },
    }

    impl Apply<Op> for Counters {
        fn apply(&mut self, op: &Op) {
            match op {
                Op::Add { key, n } => *self.values.entry(key.clone()).or_default() += n,
                Op::Remove { key } => {
                    self.values.remove(key);
                }
            }
        }
    }

    fn add(key: &str, n: i64) -> Op {
        Op::Add { key: key.into(), n }
    }

    /// Appends and applies, as the agent would.
    fn record(store: &mut Store<Counters, Op>, state: &mut Counters, op: Op) {
        store.append(&op).unwrap();
        state.apply(&op);
    }

    fn counters(pairs: &[(&str, i64)]) -> Counters {
        Counters {
            values: pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    fn append_raw(path: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn round_trip_and_recovery() {
        let tmp = TempDir::new("store-round-trip");
        let dir = tmp.path().join("state");
        let (mut store, mut state) = Store::<Counters, Op>::open(&dir).unwrap();
        assert_eq!(state, Counters::default());
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "directory mode {mode:o}");

        record(&mut store, &mut state, add("a", 1));
        record(&mut store, &mut state, add("b", 2));
        record(&mut store, &mut state, add("a", 10));
        record(&mut store, &mut state, Op::Remove { key: "b".into() });
        assert_eq!(store.journal_len(), 4);
        drop(store);

        let (store, recovered) = Store::<Counters, Op>::open(&dir).unwrap();
        assert_eq!(recovered, counters(&[("a", 11)]));
        assert_eq!(recovered, state);
        assert_eq!(store.journal_len(), 4);
    }

    #[test]
    fn compaction_then_more_ops() {
        let tmp = TempDir::new("store-compact");
        let dir = tmp.path();
        let (mut store, mut state) =
            Store::<Counters, Op>::open_with(dir, Options { sync: true }).unwrap();
        for i in 0..5 {
            record(&mut store, &mut state, add("a", i));
        }
        store.compact(&state).unwrap();
        assert_eq!(store.journal_len(), 0);
        assert_eq!(fs::metadata(dir.join(JOURNAL)).unwrap().len(), 0);
        assert!(!dir.join(SNAPSHOT_TMP).exists());

        record(&mut store, &mut state, add("b", 7));
        record(&mut store, &mut state, add("a", 100));
        assert_eq!(store.journal_len(), 2);
        drop(store);

        let (store, recovered) = Store::<Counters, Op>::open(dir).unwrap();
        assert_eq!(recovered, counters(&[("a", 110), ("b", 7)]));
        assert_eq!(store.journal_len(), 2);
        let journal = fs::read_to_string(dir.join(JOURNAL)).unwrap();
        assert!(journal.starts_with("{\"seq\":6,"), "{journal}");
    }

    #[test]
    fn crash_between_snapshot_and_truncate_does_not_replay_twice() {
        let tmp = TempDir::new("store-compact-crash");
        let dir = tmp.path();
        let (mut store, mut state) = Store::<Counters, Op>::open(dir).unwrap();
        record(&mut store, &mut state, add("a", 1));
        record(&mut store, &mut state, add("a", 2));
        let old_journal = fs::read(dir.join(JOURNAL)).unwrap();
        store.compact(&state).unwrap();
        drop(store);
        // As if the truncation never reached the disk.
        fs::write(dir.join(JOURNAL), &old_journal).unwrap();

        let (mut store, mut state) = Store::<Counters, Op>::open(dir).unwrap();
        assert_eq!(state, counters(&[("a", 3)]));
        assert_eq!(store.journal_len(), 0);
        // New entries after the stale ones are still replayed.
        record(&mut store, &mut state, add("a", 4));
        drop(store);
        let (_, state) = Store::<Counters, Op>::open(dir).unwrap();
        assert_eq!(state, counters(&[("a", 7)]));
    }

    #[test]
    fn torn_last_line_is_ignored_and_cut_off() {
        let tmp = TempDir::new("store-torn");
        let dir = tmp.path();
        let journal = dir.join(JOURNAL);
        let (mut store, mut state) = Store::<Counters, Op>::open(dir).unwrap();
        record(&mut store, &mut state, add("a", 1));
        record(&mut store, &mut state, add("a", 2));
        drop(store);
        let good_len = fs::metadata(&journal).unwrap().len();

        for torn in [
            &b"{\"seq\":3,\"op\":{\"Add\":{\"key\":\"a\",\"n\":4"[..],
            // Complete JSON, but its newline never made it: still torn.
            &b"{\"seq\":3,\"op\":{\"Add\":{\"key\":\"a\",\"n\":4}}}"[..],
            // Garbage that did get its newline (zeroed blocks after a crash).
            &b"\0\0\0\0\0\0\n"[..],
        ] {
            append_raw(&journal, torn);
            let (mut store, mut state) = Store::<Counters, Op>::open(dir).unwrap();
            assert_eq!(state, counters(&[("a", 3)]));
            assert_eq!(store.journal_len(), 2);
            assert_eq!(fs::metadata(&journal).unwrap().len(), good_len);

            // The next append starts on a clean line.
            record(&mut store, &mut state, add("b", 1));
            drop(store);
            let (store, state) = Store::<Counters, Op>::open(dir).unwrap();
            assert_eq!(state, counters(&[("a", 3), ("b", 1)]));
            drop(store);
            // Back to two entries for the next case.
            let f = OpenOptions::new().write(true).open(&journal).unwrap();
            f.set_len(good_len).unwrap();
        }
    }

    #[test]
    fn corruption_in_the_middle_names_file_and_line() {
        let tmp = TempDir::new("store-corrupt");
        let dir = tmp.path();
        let journal = dir.join(JOURNAL);
        let (mut store, mut state) = Store::<Counters, Op>::open(dir).unwrap();
        record(&mut store, &mut state, add("a", 1));
        drop(store);
        append_raw(&journal, b"{\"seq\":2,\"op\":{\"Add\":{\"key\"\n");
        append_raw(
            &journal,
            b"{\"seq\":3,\"op\":{\"Add\":{\"key\":\"a\",\"n\":1}}}\n",
        );

        let err = Store::<Counters, Op>::open(dir).unwrap_err();
        match &err {
            Error::CorruptJournal { path, line, .. } => {
                assert_eq!(path, &journal);
                assert_eq!(*line, 2);
            }
            other => panic!("expected CorruptJournal, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains(&format!("{}:2:", journal.display())),
            "{message}"
        );
        // The journal is left untouched for a human to look at.
        assert!(fs::read_to_string(&journal).unwrap().contains("\"seq\":3"));
    }

    #[test]
    fn wrong_type_on_the_last_line_is_an_error_not_a_torn_write() {
        let tmp = TempDir::new("store-wrong-type");
        let dir = tmp.path();
        let (store, _) = Store::<Counters, Op>::open(dir).unwrap();
        drop(store);
        // Written whole, checksum and all, by something that knows an
        // operation this version does not.
        let rename = serde_json::json!({"Rename": {"key": "a"}});
        append_raw(&dir.join(JOURNAL), &entry_line(1, &rename).unwrap());
        assert!(matches!(
            Store::<Counters, Op>::open(dir),
            Err(Error::CorruptJournal { line: 1, .. })
        ));
    }

    #[test]
    fn sequence_gap_is_reported() {
        let tmp = TempDir::new("store-gap");
        let dir = tmp.path();
        let (mut store, mut state) = Store::<Counters, Op>::open(dir).unwrap();
        record(&mut store, &mut state, add("a", 1));
        drop(store);
        append_raw(&dir.join(JOURNAL), &entry_line(3, &add("a", 1)).unwrap());
        match Store::<Counters, Op>::open(dir) {
            Err(Error::JournalSequence {
                line: 2,
                expected: 2,
                found: 3,
                ..
            }) => {}
            other => panic!("expected JournalSequence, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_snapshot_is_an_error() {
        let tmp = TempDir::new("store-bad-snapshot");
        let dir = tmp.path();
        fs::write(dir.join(SNAPSHOT), b"{\"seq\":1,\"state\":").unwrap();
        assert!(matches!(
            Store::<Counters, Op>::open(dir),
            Err(Error::CorruptSnapshot { .. })
        ));
    }

    /// Replaces the only occurrence of `from` in `path` by `to` (same
    /// length: a changed digit, as a damaged block would leave it).
    fn damage(path: &Path, from: &str, to: &str) {
        assert_eq!(from.len(), to.len());
        let text = fs::read_to_string(path).unwrap();
        assert_eq!(text.matches(from).count(), 1, "{from:?} in {text}");
        fs::write(path, text.replace(from, to)).unwrap();
    }

    /// Three entries: a=1, a=2 (n=20), a=3 (n=300), so each line has a
    /// number of its own to damage.
    fn three_entries(dir: &Path) -> Counters {
        let (mut store, mut state) = Store::<Counters, Op>::open(dir).unwrap();
        record(&mut store, &mut state, add("a", 1));
        record(&mut store, &mut state, add("a", 20));
        record(&mut store, &mut state, add("a", 300));
        state
    }

    #[test]
    fn flipped_digit_in_a_journal_line_is_a_checksum_mismatch() {
        let tmp = TempDir::new("store-flip-middle");
        let dir = tmp.path();
        let journal = dir.join(JOURNAL);
        three_entries(dir);
        // Still valid JSON and a valid Op: before checksums this replayed
        // as a=371 instead of a=321.
        damage(&journal, "\"n\":20}", "\"n\":70}");
        let before = fs::read(&journal).unwrap();
        let err = Store::<Counters, Op>::open(dir).unwrap_err();
        assert!(
            matches!(&err, Error::JournalChecksum { path, line: 2, .. } if path == &journal),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{}:2: checksum mismatch", journal.display())),
            "{message}"
        );
        // Left as it was for a human to look at.
        assert_eq!(fs::read(&journal).unwrap(), before);
    }

    #[test]
    fn flipped_digit_in_the_last_line_is_a_torn_tail() {
        let tmp = TempDir::new("store-flip-last");
        let dir = tmp.path();
        let journal = dir.join(JOURNAL);
        three_entries(dir);
        let text = fs::read_to_string(&journal).unwrap();
        let two_lines = text[..text.trim_end().rfind('\n').unwrap() + 1].len() as u64;
        damage(&journal, "\"n\":300}", "\"n\":900}");
        let (mut store, mut state) = Store::<Counters, Op>::open(dir).unwrap();
        assert_eq!(state, counters(&[("a", 21)]));
        assert_eq!(store.journal_len(), 2);
        assert_eq!(fs::metadata(&journal).unwrap().len(), two_lines);
        record(&mut store, &mut state, add("b", 1));
        drop(store);
        let (_, reopened) = Store::<Counters, Op>::open(dir).unwrap();
        assert_eq!(reopened, counters(&[("a", 21), ("b", 1)]));
    }

    #[test]
    fn flipped_digit_in_the_snapshot_is_a_checksum_mismatch() {
        let tmp = TempDir::new("store-flip-snapshot");
        let dir = tmp.path();
        let snapshot = dir.join(SNAPSHOT);
        let (mut store, mut state) = Store::<Counters, Op>::open(dir).unwrap();
        record(&mut store, &mut state, add("a", 42));
        store.compact(&state).unwrap();
        drop(store);
        damage(&snapshot, "\"a\":42", "\"a\":47");
        let err = Store::<Counters, Op>::open(dir).unwrap_err();
        assert!(
            matches!(&err, Error::SnapshotChecksum { path, .. } if path == &snapshot),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{}: checksum mismatch", snapshot.display())),
            "{err}"
        );
    }

    /// The checksum covers the numbers too: a snapshot claiming one more
    /// operation would make replay skip the journal's first entry.
    #[test]
    fn snapshot_seq_is_covered_by_its_checksum() {
        let tmp = TempDir::new("store-flip-seq");
        let dir = tmp.path();
        let (mut store, mut state) = Store::<Counters, Op>::open(dir).unwrap();
        record(&mut store, &mut state, add("a", 1));
        store.compact(&state).unwrap();
        record(&mut store, &mut state, add("a", 2));
        drop(store);
        damage(&dir.join(SNAPSHOT), "{\"seq\":1,", "{\"seq\":2,");
        assert!(matches!(
            Store::<Counters, Op>::open(dir),
            Err(Error::SnapshotChecksum { .. })
        ));
    }

    #[test]
    fn renamed_checksum_field_is_refused() {
        let tmp = TempDir::new("store-no-crc-field");
        let dir = tmp.path();
        let journal = dir.join(JOURNAL);
        three_entries(dir);
        // Damage to the field name must not turn a line into an unchecked
        // one from before checksums.
        let text = fs::read_to_string(&journal).unwrap();
        let first = text.lines().next().unwrap();
        fs::write(
            &journal,
            text.replacen(first, &first.replace("\"crc\"", "\"crs\""), 1),
        )
        .unwrap();
        assert!(matches!(
            Store::<Counters, Op>::open(dir),
            Err(Error::CorruptJournal { line: 1, .. })
        ));
    }

    /// Files exactly as the store wrote them before checksums.
    const LEGACY_SNAPSHOT: &[u8] = b"{\"seq\":2,\"state\":{\"values\":{\"a\":3}}}";
    const LEGACY_JOURNAL: &[u8] = b"{\"seq\":1,\"op\":{\"Add\":{\"key\":\"a\",\"n\":1}}}\n\
        {\"seq\":2,\"op\":{\"Add\":{\"key\":\"a\",\"n\":2}}}\n\
        {\"seq\":3,\"op\":{\"Add\":{\"key\":\"b\",\"n\":5}}}\n";

    #[test]
    fn files_from_before_checksums_open_and_compaction_adds_them() {
        let tmp = TempDir::new("store-legacy");
        let dir = tmp.path();
        fs::write(dir.join(SNAPSHOT), LEGACY_SNAPSHOT).unwrap();
        fs::write(dir.join(JOURNAL), LEGACY_JOURNAL).unwrap();

        let (mut store, mut state) = Store::<Counters, Op>::open(dir).unwrap();
        assert_eq!(state, counters(&[("a", 3), ("b", 5)]));
        assert_eq!(store.journal_len(), 1);
        // New entries carry checksums, after the old ones.
        record(&mut store, &mut state, add("a", 10));
        drop(store);
        let journal = fs::read_to_string(dir.join(JOURNAL)).unwrap();
        let last = journal.lines().last().unwrap();
        assert!(last.starts_with("{\"seq\":4,\"crc\":"), "{last}");

        let (mut store, state) = Store::<Counters, Op>::open(dir).unwrap();
        assert_eq!(state, counters(&[("a", 13), ("b", 5)]));
        store.compact(&state).unwrap();
        drop(store);
        let snapshot = fs::read_to_string(dir.join(SNAPSHOT)).unwrap();
        assert!(snapshot.starts_with("{\"seq\":4,\"crc\":"), "{snapshot}");
        assert_eq!(fs::metadata(dir.join(JOURNAL)).unwrap().len(), 0);

        // Now checked: the same damage that went unnoticed before is caught.
        damage(&dir.join(SNAPSHOT), "\"a\":13", "\"a\":18");
        assert!(matches!(
            Store::<Counters, Op>::open(dir),
            Err(Error::SnapshotChecksum { .. })
        ));
    }

    #[test]
    fn line_without_checksum_after_one_with_it_is_refused() {
        let tmp = TempDir::new("store-missing-crc");
        let dir = tmp.path();
        let journal = dir.join(JOURNAL);
        let (mut store, mut state) = Store::<Counters, Op>::open(dir).unwrap();
        record(&mut store, &mut state, add("a", 1));
        drop(store);
        append_raw(
            &journal,
            b"{\"seq\":2,\"op\":{\"Add\":{\"key\":\"a\",\"n\":1}}}\n",
        );
        let err = Store::<Counters, Op>::open(dir).unwrap_err();
        assert!(
            matches!(err, Error::MissingChecksum { line: 2, .. }),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .contains(&format!("{}:2:", journal.display())));
    }
}
