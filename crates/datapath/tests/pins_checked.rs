//! Checked pins on a real kernel (issue 15, "bad input never destroys
//! anything"): pins made by the same build with the same options are
//! reused; a map of another size, a wrong ABI stamp or pins without a stamp
//! refuse the load, name what differs, and leave the pin directory exactly
//! as it was (same entries, same inodes, same maps, same contents).
//!
//! Needs root; fails (never skips) without it. Each test's pin directory is
//! named with the pid and removed by a guard, also when an assertion fails;
//! directories of runs that were killed are swept first.

use aya::maps::{Array, Map, MapData, MapInfo};
use pilus_abi::{AbiStamp, CtEntry, CtKey4, PolicyRev};
use pilus_datapath::{
    pins::{expected_stamp, STAMP_MAP},
    Datapath, Error, LoadOptions, MapDef, NodeConfig, PinMismatch, PodCidr,
};
use std::{
    collections::BTreeMap,
    mem::size_of,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

const PREFIX: &str = "pilus-pinchk-";
const BPF_MAP_TYPE_HASH: u32 = 1;

/// Removes the test's bpffs pin directory on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new(tag: &str) -> PinDir {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the checked-pin tests need root (CAP_BPF, bpffs): run them as root"
        );
        sweep_stale();
        let dir = PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/{PREFIX}{}-{tag}",
            std::process::id()
        )));
        let _ = std::fs::remove_dir_all(&dir.0);
        dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

/// Pin directories of earlier runs whose process is gone (a run killed by a
/// signal never ran its guards).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn options(pins: &PinDir, prefix_len: u8) -> LoadOptions {
    LoadOptions {
        node: NodeConfig {
            router_ip4: Ipv4Addr::new(198, 18, 0, 1),
            pod_cidr: PodCidr::new(Ipv4Addr::new(198, 18, 0, 0), prefix_len).unwrap(),
            ..Default::default()
        },
        pin_dir: Some(pins.0.clone()),
        ..Default::default()
    }
}

fn refused(pins: &PinDir, prefix_len: u8) -> (Error, String) {
    match Datapath::load(&options(pins, prefix_len)) {
        Ok(_) => panic!("the load reused pins it should have refused"),
        Err(e) => {
            let text = e.to_string();
            (e, text)
        }
    }
}

/// Everything a refused load must leave alone: each entry of the pin
/// directory (recursively) with its inode, and for a map its id (the same
/// map, not a new one pinned at the same name) and the stamp and policy
/// revision it holds.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    entries: BTreeMap<PathBuf, (u64, Option<u32>)>,
    stamp: Option<AbiStamp>,
    polrev: Option<PolicyRev>,
}

fn snapshot(pins: &PinDir) -> Snapshot {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (u64, Option<u32>)>) {
        for e in std::fs::read_dir(dir)
            .expect("read pin directory")
            .flatten()
        {
            let meta = e.metadata().expect("metadata");
            let id = MapInfo::from_pin(e.path()).ok().map(|i| i.id());
            out.insert(e.path(), (meta.ino(), id));
            if meta.is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut entries = BTreeMap::new();
    walk(&pins.0, &mut entries);
    Snapshot {
        entries,
        stamp: read_array::<AbiStamp>(&pins.path(STAMP_MAP)),
        polrev: read_array::<PolicyRev>(&pins.path("pilus_polrev")),
    }
}

fn read_array<V: aya::Pod>(path: &Path) -> Option<V> {
    let data = MapData::from_pin(path).ok()?;
    let array: Array<MapData, V> = Array::try_from(Map::Array(data)).ok()?;
    array.get(&0, 0).ok()
}

fn write_stamp(pins: &PinDir, stamp: AbiStamp) {
    let data = MapData::from_pin(pins.path(STAMP_MAP)).expect("pinned stamp");
    let mut array: Array<MapData, AbiStamp> =
        Array::try_from(Map::Array(data)).expect("stamp is an array");
    array.set(0, stamp, 0).expect("write stamp");
}

/// A fresh load, dropped at once: the pins stay.
fn fresh(pins: &PinDir, prefix_len: u8) {
    drop(Datapath::load(&options(pins, prefix_len)).expect("fresh load"));
}

#[test]
fn same_build_and_options_reuse_the_pins() {
    let pins = PinDir::new("same");
    {
        let mut dp = Datapath::load(&options(&pins, 24)).expect("fresh load");
        dp.set_policy_revision(4242).expect("write pilus_polrev");
    }
    assert_eq!(
        read_array::<AbiStamp>(&pins.path(STAMP_MAP)),
        Some(expected_stamp().unwrap()),
        "a fresh load stamps the directory"
    );
    let before = snapshot(&pins);
    let dp = Datapath::load(&options(&pins, 24)).expect("load reusing the pins");
    assert_eq!(dp.policy_revision().unwrap(), 4242, "pilus_polrev survived");
    drop(dp);
    assert_eq!(snapshot(&pins), before, "the same maps, nothing re-pinned");
}

/// An empty directory (or one holding only the links directory) is a fresh
/// one, not "pins without a stamp".
#[test]
fn an_empty_pin_directory_is_loaded_fresh() {
    let pins = PinDir::new("empty");
    std::fs::create_dir_all(pins.path("links")).expect("pin directory");
    fresh(&pins, 24);
    assert_eq!(
        read_array::<AbiStamp>(&pins.path(STAMP_MAP)),
        Some(expected_stamp().unwrap())
    );
}

#[test]
fn another_pod_cidr_is_refused_and_changes_nothing() {
    let pins = PinDir::new("cidr");
    {
        let mut dp = Datapath::load(&options(&pins, 24)).expect("fresh load");
        dp.set_policy_revision(7).unwrap();
    }
    let before = snapshot(&pins);
    let (err, text) = refused(&pins, 23);
    match &err {
        Error::IncompatiblePin {
            mismatch:
                PinMismatch::Map {
                    map,
                    pinned,
                    expected,
                    ..
                },
            ..
        } => {
            assert_eq!(map, "pilus_lxc", "{text}");
            assert_eq!((pinned.max_entries, expected.max_entries), (256, 512));
            assert_eq!(
                MapDef {
                    max_entries: 512,
                    ..*pinned
                },
                *expected,
                "only the size differs"
            );
        }
        other => panic!("expected a pilus_lxc mismatch, got {other:?}"),
    }
    let dir = pins.0.display().to_string();
    for needle in [
        "map pilus_lxc".to_string(),
        "max 256".into(),
        "max 512".into(),
        "the same --pod-cidr".into(),
        format!("stop every pilusd using {dir}"),
        format!("or remove {dir}"),
    ] {
        assert!(text.contains(&needle), "{needle:?} not in: {text}");
    }
    assert_eq!(snapshot(&pins), before, "the refused load changed the pins");
    // The pins are still good for the options that made them.
    let dp = Datapath::load(&options(&pins, 24)).expect("load with the original CIDR");
    assert_eq!(dp.policy_revision().unwrap(), 7);
}

#[test]
fn a_map_with_another_value_size_is_refused() {
    let pins = PinDir::new("value");
    fresh(&pins, 24);
    // pilus_ct4 as a build whose ct_entry had 8 more bytes would have
    // pinned it.
    let (key, value) = (size_of::<CtKey4>() as u32, size_of::<CtEntry>() as u32);
    std::fs::remove_file(pins.path("pilus_ct4")).unwrap();
    let def = aya_obj::Map::new_from_params(BPF_MAP_TYPE_HASH, key, value + 8, 262144, 0);
    MapData::create(def, "pilus_ct4", None)
        .expect("create map")
        .pin(pins.path("pilus_ct4"))
        .expect("pin map");
    let before = snapshot(&pins);
    let (err, text) = refused(&pins, 24);
    assert!(
        matches!(&err, Error::IncompatiblePin { mismatch: PinMismatch::Map { map, pinned, expected, .. }, .. }
            if map == "pilus_ct4" && pinned.value_size == value + 8 && expected.value_size == value),
        "{err:?}"
    );
    for needle in [
        "map pilus_ct4".to_string(),
        format!("HASH key {key} value {} max 262144 flags 0x0", value + 8),
        format!("HASH key {key} value {value} max 262144 flags 0x0"),
    ] {
        assert!(text.contains(&needle), "{needle:?} not in: {text}");
    }
    assert_eq!(snapshot(&pins), before);
}

#[test]
fn a_wrong_stamp_is_refused() {
    let pins = PinDir::new("stamp");
    fresh(&pins, 24);
    let ours = expected_stamp().unwrap();
    for theirs in [
        AbiStamp {
            layout_hash: ours.layout_hash ^ 0x5a5a,
            ..ours
        },
        AbiStamp {
            abi_version: ours.abi_version + 1,
            ..ours
        },
    ] {
        write_stamp(&pins, theirs);
        let before = snapshot(&pins);
        let (err, text) = refused(&pins, 24);
        assert!(
            matches!(&err, Error::IncompatiblePin { mismatch: PinMismatch::Stamp { pinned, expected, .. }, .. }
                if *pinned == theirs && *expected == ours),
            "{err:?}"
        );
        for needle in [
            format!(
                "ABI version {} layout {:#018x}",
                theirs.abi_version, theirs.layout_hash
            ),
            format!(
                "ABI version {} layout {:#018x}",
                ours.abi_version, ours.layout_hash
            ),
            "start the pilusd build that made them".into(),
        ] {
            assert!(text.contains(&needle), "{needle:?} not in: {text}");
        }
        assert_eq!(snapshot(&pins), before);
    }
    // Put back, the stamp is accepted again.
    write_stamp(&pins, ours);
    fresh(&pins, 24);
}

#[test]
fn pins_without_a_stamp_are_refused() {
    let pins = PinDir::new("nostamp");
    fresh(&pins, 24);
    // As a build from before stamping left them.
    std::fs::remove_file(pins.path(STAMP_MAP)).unwrap();
    let before = snapshot(&pins);
    let (err, text) = refused(&pins, 24);
    match &err {
        Error::IncompatiblePin {
            mismatch: PinMismatch::Unstamped { found, .. },
            ..
        } => {
            for name in ["pilus_ct4", "pilus_lxc", "pilus_events"] {
                assert!(found.iter().any(|f| f == name), "{name} not in {found:?}");
            }
        }
        other => panic!("expected pins without a stamp, got {other:?}"),
    }
    assert!(text.contains("before pins were stamped"), "{text}");
    assert_eq!(snapshot(&pins), before, "no stamp was added");

    // A lone map of a name this build does not define counts too.
    let pins = PinDir::new("nostamp-other");
    std::fs::create_dir_all(&pins.0).unwrap();
    let def = aya_obj::Map::new_from_params(2, 4, 8, 1, 0);
    MapData::create(def, "pilus_old", None)
        .unwrap()
        .pin(pins.path("pilus_old"))
        .unwrap();
    let (err, _) = refused(&pins, 24);
    assert!(
        matches!(&err, Error::IncompatiblePin { mismatch: PinMismatch::Unstamped { found, .. }, .. }
            if found == &["pilus_old".to_string()]),
        "{err:?}"
    );
}
