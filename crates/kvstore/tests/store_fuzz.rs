//! Fuzzing the state store's on-disk format (docs/fuzzing.md says how to
//! run it longer and how to replay a failure).
//!
//! Each case builds a real store in a scratch directory from a generated
//! run of agent-like operations (endpoints with addresses in 198.18.0.0/15
//! and labels of any Unicode, policies, namespaces), with compactions and
//! compactions that crashed before emptying the journal. Then it damages
//! the files: truncation at any byte, bit flips anywhere in the snapshot or
//! the journal, lines deleted, duplicated, swapped or copied to the end,
//! garbage appended. `Store::open` must then:
//!
//! - not panic;
//! - either fail with an error whose message names the damaged file, or
//!   return the state after some prefix of the operations, never any other
//!   state. Every operation bumps a counter, so each prefix has its own
//!   state and the counter says which prefix it is;
//! - when only bytes were damaged (truncation, flips, garbage), if it
//!   succeeds, return exactly the operations whose journal lines lie wholly
//!   before the first damaged byte: a torn tail loses the torn line and
//!   nothing before it, and a damaged line is never replayed. A damaged
//!   snapshot is always an error;
//! - after succeeding, take a new operation, and give the same state again
//!   when reopened, and after a compaction.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use pilus_kvstore::store::{Apply, Store};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde::{Deserialize, Serialize};

/// The file names the store documents.
const SNAPSHOT: &str = "state.json";
const JOURNAL: &str = "journal.jsonl";

/// Cases per run: enough for CI at the default, more with PROPTEST_CASES.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

// ---- A small agent-like state ----------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Endpoint {
    id: u16,
    namespace: String,
    labels: BTreeMap<String, String>,
    ipv4: Ipv4Addr,
    mac: [u8; 6],
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    endpoints: BTreeMap<u16, Endpoint>,
    policies: BTreeMap<String, Vec<String>>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Operations applied: names the prefix a state belongs to, and shows
    /// an operation replayed twice.
    ops: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Op {
    PutEndpoint(Endpoint),
    DeleteEndpoint(u16),
    PutPolicy {
        name: String,
        cidrs: Vec<String>,
    },
    DeletePolicy(String),
    SetNamespace {
        namespace: String,
        labels: BTreeMap<String, String>,
    },
}

impl Apply<Op> for State {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::PutEndpoint(e) => {
                self.endpoints.insert(e.id, e.clone());
            }
            Op::DeleteEndpoint(id) => {
                self.endpoints.remove(id);
            }
            Op::PutPolicy { name, cidrs } => {
                self.policies.insert(name.clone(), cidrs.clone());
            }
            Op::DeletePolicy(name) => {
                self.policies.remove(name);
            }
            Op::SetNamespace { namespace, labels } => {
                self.namespaces.insert(namespace.clone(), labels.clone());
            }
        }
        self.ops += 1;
    }
}

// ---- Generators --------------------------------------------------------

/// Names and label text: plain, any printable Unicode, control characters
/// and the characters JSON must escape (a newline must never split a line).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9.-]{0,10}",
        2 => "\\PC{0,12}",
        1 => prop::collection::vec(any::<char>(), 0..8).prop_map(String::from_iter),
        1 => Just("line\nbreak \"quoted\" back\\slash \u{2028}".to_string()),
    ]
}

/// An address in 198.18.0.0/15, the only range tests use.
fn address() -> impl Strategy<Value = Ipv4Addr> {
    (0u32..1 << 17).prop_map(|n| Ipv4Addr::from(0xc612_0000 | n))
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(text(), text(), 0..4)
}

fn op() -> impl Strategy<Value = Op> {
    let endpoint = (1u16..20, text(), labels(), address(), any::<[u8; 6]>()).prop_map(
        |(id, namespace, labels, ipv4, mac)| Endpoint {
            id,
            namespace,
            labels,
            ipv4,
            mac,
        },
    );
    let cidr = (address(), 8u8..=32).prop_map(|(a, len)| format!("{a}/{len}"));
    prop_oneof![
        4 => endpoint.prop_map(Op::PutEndpoint),
        2 => (1u16..20).prop_map(Op::DeleteEndpoint),
        2 => (text(), prop::collection::vec(cidr, 0..4))
            .prop_map(|(name, cidrs)| Op::PutPolicy { name, cidrs }),
        1 => text().prop_map(Op::DeletePolicy),
        1 => (text(), labels()).prop_map(|(namespace, labels)| Op::SetNamespace { namespace, labels }),
    ]
}

#[derive(Clone, Debug)]
enum Step {
    Op(Op),
    Compact,
    /// A compaction whose journal truncation never reached the disk: the
    /// journal keeps entries the new snapshot already has.
    CrashedCompact,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            12 => op().prop_map(Step::Op),
            1 => Just(Step::Compact),
            1 => Just(Step::CrashedCompact),
        ],
        0..40,
    )
}

#[derive(Clone, Copy, Debug)]
enum Which {
    Snapshot,
    Journal,
}

#[derive(Clone, Debug)]
enum Damage {
    /// Cut the file at a byte before its end.
    Truncate(Which, Index),
    /// XOR one byte with a nonzero mask.
    Flip(Which, Index, u8),
    /// Change one ASCII digit to another: what most often still parses,
    /// so only the checksum can tell (an address, a count, a seq).
    Digit(Which, Index, u8),
    /// Bytes appended to the journal.
    Garbage(Vec<u8>),
    DeleteLine(Index),
    /// A line written twice in a row.
    DuplicateLine(Index),
    /// A copy of a line appended at the end.
    CopyLineToEnd(Index),
    SwapLines(Index, Index),
}

impl Damage {
    /// Damage to bytes only, not a rearrangement of whole lines.
    fn bytes_only(&self) -> bool {
        matches!(
            self,
            Damage::Truncate(..) | Damage::Flip(..) | Damage::Digit(..) | Damage::Garbage(_)
        )
    }
}

/// Mostly the journal: any damage to the snapshot ends in an error, so
/// the journal's cases (torn tails, prefixes) need more of the runs.
fn which() -> impl Strategy<Value = Which> {
    prop_oneof![1 => Just(Which::Snapshot), 3 => Just(Which::Journal)]
}

fn damage() -> impl Strategy<Value = Damage> {
    let garbage = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..64),
        // Things a crash or a confused writer could leave.
        Just(b"\0\0\0\0\0\0\0\0\n".to_vec()),
        Just(b"{\"seq\":999,\"crc\":1,\"op\":{\"DeleteEndpoint\":1}}\n".to_vec()),
        Just(b"{\"seq\":999,\"op\":{\"DeleteEndpoint\":1}}\n".to_vec()),
        Just(b"\n\n  \n".to_vec()),
    ];
    prop_oneof![
        3 => (which(), any::<Index>()).prop_map(|(w, i)| Damage::Truncate(w, i)),
        6 => (which(), any::<Index>(), 1u8..=255).prop_map(|(w, i, m)| Damage::Flip(w, i, m)),
        3 => (which(), any::<Index>(), 1u8..=9).prop_map(|(w, i, d)| Damage::Digit(w, i, d)),
        2 => garbage.prop_map(Damage::Garbage),
        1 => any::<Index>().prop_map(Damage::DeleteLine),
        1 => any::<Index>().prop_map(Damage::DuplicateLine),
        1 => any::<Index>().prop_map(Damage::CopyLineToEnd),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Damage::SwapLines(a, b)),
    ]
}

fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// Applies `d` to the files' contents; a snapshot that does not exist stays
/// absent, and damage to an empty file is none.
fn apply_damage(d: &Damage, snapshot: &mut Option<Vec<u8>>, journal: &mut Vec<u8>) {
    match d {
        Damage::Truncate(w, at) | Damage::Flip(w, at, _) | Damage::Digit(w, at, _) => {
            let bytes = match w {
                Which::Snapshot => match snapshot.as_mut() {
                    Some(s) => s,
                    None => return,
                },
                Which::Journal => &mut *journal,
            };
            if bytes.is_empty() {
                return;
            }
            match d {
                Damage::Flip(_, _, mask) => {
                    let i = at.index(bytes.len());
                    bytes[i] ^= mask;
                }
                Damage::Digit(_, _, by) => {
                    let digits: Vec<usize> = (0..bytes.len())
                        .filter(|&i| bytes[i].is_ascii_digit())
                        .collect();
                    if let Some(&i) = digits.get(at.index(digits.len().max(1))) {
                        bytes[i] = b'0' + (bytes[i] - b'0' + by) % 10;
                    }
                }
                _ => bytes.truncate(at.index(bytes.len())),
            }
        }
        Damage::Garbage(g) => journal.extend_from_slice(g),
        Damage::DeleteLine(i)
        | Damage::DuplicateLine(i)
        | Damage::CopyLineToEnd(i)
        | Damage::SwapLines(i, _) => {
            let mut ls = lines(journal);
            if ls.is_empty() {
                return;
            }
            let n = i.index(ls.len());
            match d {
                Damage::DeleteLine(_) => {
                    ls.remove(n);
                }
                Damage::DuplicateLine(_) => {
                    let l = ls[n].clone();
                    ls.insert(n, l);
                }
                Damage::CopyLineToEnd(_) => {
                    let l = ls[n].clone();
                    ls.push(l);
                }
                Damage::SwapLines(_, j) => {
                    let m = j.index(ls.len());
                    ls.swap(n, m);
                }
                _ => unreachable!(),
            }
            *journal = ls.concat();
        }
    }
}

// ---- Running a case ----------------------------------------------------

/// A scratch directory, removed on drop (also when a case fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Compaction fsyncs; on tmpfs that costs nothing, on a disk it is
        // most of a run's time.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = base.join(format!("pilus-store-fuzz-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create scratch directory");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

type Opened = Result<(Store<State, Op>, State), pilus_kvstore::Error>;

fn open(dir: &Path) -> Opened {
    Store::open(dir)
}

/// Runs `steps` against a store in `dir`; returns the state after each
/// number of operations (`states[k]` after the first k).
fn build(dir: &Path, steps: &[Step]) -> Result<Vec<State>, TestCaseError> {
    let (mut store, mut state) = open(dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut states = vec![state.clone()];
    for step in steps {
        match step {
            Step::Op(op) => {
                store
                    .append(op)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                state.apply(op);
                states.push(state.clone());
            }
            Step::Compact => store
                .compact(&state)
                .map_err(|e| TestCaseError::fail(e.to_string()))?,
            Step::CrashedCompact => {
                let journal = fs::read(dir.join(JOURNAL)).expect("read journal");
                store
                    .compact(&state)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                drop(store);
                fs::write(dir.join(JOURNAL), journal).expect("restore journal");
                let (s, reopened) = open(dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&reopened, &state, "reopen after a crashed compaction");
                store = s;
            }
        }
    }
    Ok(states)
}

/// The `seq` of a line the store wrote.
fn seq_of(line: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(line).expect("a line the store wrote");
    v["seq"].as_u64().expect("seq")
}

/// The operations an open must keep at least: those in the snapshot and
/// those on journal lines lying wholly before the first byte where the
/// damaged journal differs.
fn kept_at_least(snapshot_seq: u64, journal: &[u8], damaged: &[u8]) -> u64 {
    let common = journal
        .iter()
        .zip(damaged)
        .take_while(|(a, b)| a == b)
        .count();
    let mut end = 0;
    let mut kept = snapshot_seq;
    for line in lines(journal) {
        end += line.len();
        if end > common {
            break;
        }
        kept = kept.max(seq_of(&line));
    }
    kept
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn damaged_store_opens_to_a_prefix_or_fails_naming_the_file(
        steps in steps(),
        damages in prop::collection::vec(damage(), 1..4),
    ) {
        let scratch = Scratch::new();
        let dir = scratch.0.join("state");
        let states = build(&dir, &steps)?;
        let snapshot_path = dir.join(SNAPSHOT);
        let journal_path = dir.join(JOURNAL);

        let snapshot = fs::read(&snapshot_path).ok();
        let journal = fs::read(&journal_path).expect("journal");
        let snapshot_seq = snapshot.as_ref().map_or(0, |s| seq_of(s));

        let mut bad_snapshot = snapshot.clone();
        let mut bad_journal = journal.clone();
        for d in &damages {
            apply_damage(d, &mut bad_snapshot, &mut bad_journal);
        }
        if let Some(s) = &bad_snapshot {
            fs::write(&snapshot_path, s).expect("write snapshot");
        }
        fs::write(&journal_path, &bad_journal).expect("write journal");
        let snapshot_damaged = bad_snapshot != snapshot;
        let bytes_only = damages.iter().all(Damage::bytes_only);
        let at_least = kept_at_least(snapshot_seq, &journal, &bad_journal);

        match open(&dir) {
            Err(e) => {
                let message = e.to_string();
                let named = if snapshot_damaged { &snapshot_path } else { &journal_path };
                prop_assert!(
                    message.contains(&named.display().to_string()),
                    "error does not name {}: {}", named.display(), message
                );
            }
            Ok((mut store, mut state)) => {
                prop_assert!(
                    !(snapshot_damaged && bytes_only),
                    "a damaged snapshot was accepted: {:?}", state
                );
                let k = state.ops;
                prop_assert!(
                    (k as usize) < states.len() && state == states[k as usize],
                    "opened to a state that no prefix of the operations gives: {:?}", state
                );
                prop_assert!(k >= at_least, "lost operations: kept {}, at least {} were intact", k, at_least);
                if bytes_only {
                    prop_assert_eq!(k, at_least, "a damaged journal line was replayed");
                }

                // The store goes on working from there.
                let op = Op::PutPolicy { name: "after".into(), cidrs: vec!["198.18.0.0/15".into()] };
                store.append(&op).map_err(|e| TestCaseError::fail(e.to_string()))?;
                state.apply(&op);
                drop(store);
                let (mut store, reopened) = open(&dir).map_err(|e| TestCaseError::fail(format!("reopen: {e}")))?;
                prop_assert_eq!(&reopened, &state);
                store.compact(&reopened).map_err(|e| TestCaseError::fail(e.to_string()))?;
                drop(store);
                let (_, compacted) = open(&dir).map_err(|e| TestCaseError::fail(format!("reopen after compaction: {e}")))?;
                prop_assert_eq!(&compacted, &state);
            }
        }
    }

    /// Files written before checksums: no damage can be detected in them,
    /// but they must still open, with a torn tail cut off as before, take
    /// checksummed entries after the old ones, and compact into checked
    /// files.
    #[test]
    fn store_from_before_checksums_opens_and_is_rewritten_with_checksums(
        ops in prop::collection::vec(op(), 0..30),
        in_snapshot in any::<Index>(),
        cut in any::<Index>(),
    ) {
        let scratch = Scratch::new();
        let dir = scratch.0.join("state");
        fs::create_dir_all(&dir).expect("create state directory");
        let mut states = vec![State::default()];
        for op in &ops {
            let mut s = states.last().expect("a state").clone();
            s.apply(op);
            states.push(s);
        }
        // Exactly what the store wrote before checksums.
        let n = in_snapshot.index(ops.len() + 1);
        if n > 0 {
            let snapshot = serde_json::json!({"seq": n, "state": states[n]});
            fs::write(dir.join(SNAPSHOT), serde_json::to_vec(&snapshot).expect("encode")).expect("write");
        }
        let mut journal = Vec::new();
        let mut ends = Vec::new();
        for (i, op) in ops.iter().enumerate().skip(n) {
            let line = serde_json::json!({"seq": i + 1, "op": op});
            journal.extend(serde_json::to_vec(&line).expect("encode"));
            journal.push(b'\n');
            ends.push((journal.len(), i + 1));
        }
        // A crash in the middle of an append: cut anywhere, or not at all.
        let cut = cut.index(journal.len() + 1);
        journal.truncate(cut);
        fs::write(dir.join(JOURNAL), &journal).expect("write");
        let kept = ends.iter().filter(|(end, _)| *end <= cut).map(|(_, seq)| *seq).max().unwrap_or(n);

        let (mut store, mut state) = open(&dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&state, &states[kept]);
        let op = Op::DeleteEndpoint(1);
        store.append(&op).map_err(|e| TestCaseError::fail(e.to_string()))?;
        state.apply(&op);
        drop(store);
        let (mut store, reopened) = open(&dir).map_err(|e| TestCaseError::fail(format!("reopen: {e}")))?;
        prop_assert_eq!(&reopened, &state);
        store.compact(&reopened).map_err(|e| TestCaseError::fail(e.to_string()))?;
        drop(store);
        let snapshot = fs::read_to_string(dir.join(SNAPSHOT)).expect("snapshot");
        prop_assert!(snapshot.contains("\"crc\":"), "compaction wrote no checksum: {}", snapshot);
        let (_, compacted) = open(&dir).map_err(|e| TestCaseError::fail(format!("reopen after compaction: {e}")))?;
        prop_assert_eq!(&compacted, &state);
    }
}
