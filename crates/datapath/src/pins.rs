//! Checked pins: a map pinned by an earlier load is reused only if it is the
//! map this build, with these options, would create.
//!
//! aya reuses any pin whose name matches a map of the object, whatever its
//! type or sizes. A pin left by an older build, or by an agent started with
//! another pod CIDR (which sizes `pilus_lxc`), would then be read with the
//! wrong layout. So before aya sees the object, every map the object pins by
//! name is looked up in the pin directory and compared with the object's
//! definition as the loader will create it, and the directory's ABI stamp
//! (`pilus_abi`, struct abi_stamp) with this build's. Any difference refuses
//! the load with [`Error::IncompatiblePin`]. Nothing is created, pinned or
//! written before the check passes, so a refused load leaves the directory as
//! it was and programs already attached keep running on their own maps.
//! (The check and aya's reuse are not one atomic step: two agents starting on
//! one directory at once are not supported, as before.)

use crate::{btf, objects, Error};
use aya::{
    maps::{Array, Map, MapData, MapInfo},
    PinningType,
};
use pilus_abi::{consts::PILUS_ABI_VERSION, AbiStamp};
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

/// The map that stamps a pin directory with the ABI its maps were made with.
pub const STAMP_MAP: &str = "pilus_abi";

/// Every map name in bpf/lib/maps.h starts with this: an entry of the pin
/// directory with this prefix that the object does not define is a map of
/// some other build.
const NAME_PREFIX: &str = "pilus_";

/// What the kernel fixes when a map is created and a reuser must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapDef {
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// `BPF_F_*` map flags.
    pub flags: u32,
}

impl MapDef {
    fn of_object(m: &aya_obj::Map) -> MapDef {
        MapDef {
            map_type: m.map_type(),
            key_size: m.key_size(),
            value_size: m.value_size(),
            max_entries: m.max_entries(),
            flags: m.map_flags(),
        }
    }

    fn of_kernel(info: &MapInfo) -> Result<MapDef, aya::maps::MapError> {
        Ok(MapDef {
            map_type: info.map_type()? as u32,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        })
    }
}

/// As bpftool names types: `LRU_HASH key 16 value 56 max 262144 flags 0x0`.
impl fmt::Display for MapDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match aya_obj::generated::bpf_map_type::try_from(self.map_type) {
            Ok(t) => {
                let name = format!("{t:?}");
                f.write_str(name.strip_prefix("BPF_MAP_TYPE_").unwrap_or(&name))?
            }
            Err(_) => write!(f, "type {}", self.map_type)?,
        }
        write!(
            f,
            " key {} value {} max {} flags {:#x}",
            self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

/// A map the object pins by name, defined as the loader will create it.
#[derive(Clone, Debug)]
pub struct ObjectMap {
    pub name: String,
    pub def: MapDef,
}

/// The maps `object` pins by name, sorted by name, with `max_entries`
/// overrides applied as aya 0.14 applies them when it creates a map
/// (`EbpfLoader::load`: `max_entries_override`, `value_size_override`): a
/// ring buffer's size rounded up to a power-of-two number of pages, its
/// value size zero.
pub fn object_maps(object: &[u8], max_entries: &[(&str, u32)]) -> Result<Vec<ObjectMap>, Error> {
    let parsed = aya_obj::Object::parse(object).map_err(|e| Error::ParseObject {
        source: Box::new(e),
    })?;
    let mut out: Vec<ObjectMap> = parsed
        .maps
        .into_iter()
        .filter(|(_, m)| m.pinning() == PinningType::ByName)
        .map(|(name, mut obj)| {
            if let Some((_, n)) = max_entries.iter().find(|(m, _)| *m == name) {
                obj.set_max_entries(*n);
            }
            if obj.map_type() == aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32 {
                obj.set_max_entries(ring_size(obj.max_entries(), page_size()));
                obj.set_value_size(0);
            }
            ObjectMap {
                def: MapDef::of_object(&obj),
                name,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// aya's (and libbpf's) ring size: a power-of-two number of pages.
fn ring_size(bytes: u32, page: u32) -> u32 {
    if bytes == 0 {
        return 0; // the kernel refuses it, with its own message
    }
    page * bytes.div_ceil(page).next_power_of_two()
}

fn page_size() -> u32 {
    // SAFETY: sysconf reads a constant of the running system.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u32,
        _ => 4096,
    }
}

/// FNV-1a, 64 bits: a fingerprint that must be stable across builds and
/// Rust versions (std's `Hasher`s promise neither).
struct Fnv(u64);

impl Fnv {
    fn bytes(&mut self, b: &[u8]) {
        for &c in b {
            self.0 = (self.0 ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
        self.bytes(&[0]); // so that "ab" + "c" differs from "a" + "bc"
    }
    fn num(&mut self, n: usize) {
        self.bytes(&(n as u64).to_le_bytes());
    }
}

/// Fingerprint of struct layouts: every struct's name and size, and each
/// member's name, offset and size, in name order. Two members of equal size
/// that trade places change it although no size does.
pub fn layout_hash(structs: &BTreeMap<String, btf::Struct>) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for (name, s) in structs {
        h.str(name);
        h.num(s.size);
        h.num(s.members.len());
        for m in &s.members {
            h.str(&m.name);
            h.num(m.offset);
            h.num(m.size);
        }
    }
    h.0
}

/// This build's stamp: its ABI version, and the layout hash of every shared
/// struct as the BTF of bpf/abi_layout.c describes it.
pub fn expected_stamp() -> Result<AbiStamp, Error> {
    Ok(AbiStamp {
        abi_version: PILUS_ABI_VERSION,
        _pad: 0,
        layout_hash: layout_hash(&btf::structs(objects::ABI_LAYOUT)?),
    })
}

fn fmt_stamp(s: &AbiStamp) -> String {
    format!(
        "ABI version {} layout {:#018x}",
        s.abi_version, s.layout_hash
    )
}

/// Why the pins of a directory cannot be reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinMismatch {
    /// A pinned map is not the map this build would create.
    Map {
        map: String,
        pin_path: PathBuf,
        pinned: MapDef,
        expected: MapDef,
    },
    /// The directory was stamped by another ABI.
    Stamp {
        pin_path: PathBuf,
        pinned: AbiStamp,
        expected: AbiStamp,
    },
    /// Pilus maps are pinned but no stamp: a build from before stamping.
    Unstamped {
        pin_path: PathBuf,
        found: Vec<String>,
    },
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinMismatch::Map {
                map,
                pin_path,
                pinned,
                expected,
            } => write!(
                f,
                "map {map} pinned at {} is {pinned}, this build with these options needs \
                 {expected}",
                pin_path.display()
            ),
            PinMismatch::Stamp {
                pin_path,
                pinned,
                expected,
            } => write!(
                f,
                "the pins were made with {} (stamp {}), this build has {}",
                fmt_stamp(pinned),
                pin_path.display(),
                fmt_stamp(expected)
            ),
            PinMismatch::Unstamped { pin_path, found } => write!(
                f,
                "{} pinned there but no ABI stamp {}: the pins were made by a pilusd from \
                 before pins were stamped, whose layouts cannot be known",
                found.join(", "),
                pin_path.display()
            ),
        }
    }
}

impl PinMismatch {
    /// The first way out: run what made the pins.
    pub(crate) fn restart_hint(&self) -> &'static str {
        match self {
            PinMismatch::Map { .. } => {
                "start with the build and the options the pins were made with (e.g. the same \
                 --pod-cidr)"
            }
            PinMismatch::Stamp { .. } | PinMismatch::Unstamped { .. } => {
                "start the pilusd build that made them"
            }
        }
    }
}

/// What a load does with the pin directory after the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pins {
    /// No Pilus pin there: every map is created (the stamp first).
    Fresh,
    /// The pins are this build's: aya reuses them.
    Reused,
}

/// One of the object's maps found pinned.
struct Pinned<'a> {
    map: &'a ObjectMap,
    path: PathBuf,
    def: MapDef,
}

/// Checks `dir` against `maps` and `stamp`; on a fresh directory pins the
/// stamp (written before it is pinned, so no reader ever sees a blank one),
/// which aya then reuses like any pin. A refusal has only read.
pub(crate) fn prepare(dir: &Path, maps: &[ObjectMap], stamp: &AbiStamp) -> Result<Pins, Error> {
    let refuse = |mismatch| Error::IncompatiblePin {
        pin_dir: dir.to_path_buf(),
        mismatch,
    };
    let stamp_map = maps
        .iter()
        .find(|m| m.name == STAMP_MAP)
        .ok_or(Error::MissingMap { name: STAMP_MAP })?;
    let pinned = find_pinned(dir, maps)?;
    let stamp_path = dir.join(STAMP_MAP);
    let Some(stamp_pin) = pinned.iter().find(|p| p.map.name == STAMP_MAP) else {
        let found = pilus_pins(dir, &pinned)?;
        if found.is_empty() {
            write_stamp(&stamp_path, stamp_map, stamp)?;
            tracing::info!(pin_dir = %dir.display(), stamp = %fmt_stamp(stamp), "fresh pin directory stamped");
            return Ok(Pins::Fresh);
        }
        return Err(refuse(PinMismatch::Unstamped {
            pin_path: stamp_path,
            found,
        }));
    };
    // The stamp's own definition first: read with another layout, it would
    // say nothing.
    compare_def(stamp_pin).map_err(refuse)?;
    compare_stamp(&stamp_path, &read_stamp(&stamp_path)?, stamp).map_err(refuse)?;
    for p in &pinned {
        compare_def(p).map_err(refuse)?;
    }
    tracing::info!(pin_dir = %dir.display(), reused = pinned.len(), "pinned maps checked and reused");
    Ok(Pins::Reused)
}

fn compare_def(p: &Pinned<'_>) -> Result<(), PinMismatch> {
    if p.def == p.map.def {
        return Ok(());
    }
    Err(PinMismatch::Map {
        map: p.map.name.clone(),
        pin_path: p.path.clone(),
        pinned: p.def,
        expected: p.map.def,
    })
}

fn compare_stamp(path: &Path, pinned: &AbiStamp, expected: &AbiStamp) -> Result<(), PinMismatch> {
    // _pad is not compared: it carries nothing.
    if (pinned.abi_version, pinned.layout_hash) == (expected.abi_version, expected.layout_hash) {
        return Ok(());
    }
    Err(PinMismatch::Stamp {
        pin_path: path.to_path_buf(),
        pinned: *pinned,
        expected: *expected,
    })
}

/// The object's maps that have a pin in `dir`, with the kernel's definition.
fn find_pinned<'a>(dir: &Path, maps: &'a [ObjectMap]) -> Result<Vec<Pinned<'a>>, Error> {
    let mut out = Vec::new();
    for map in maps {
        let path = dir.join(&map.name);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(Error::Bpffs { path, source }),
        }
        let def = MapInfo::from_pin(&path)
            .and_then(|info| MapDef::of_kernel(&info))
            .map_err(|e| Error::ReadPin {
                path: path.clone(),
                source: Box::new(e),
            })?;
        out.push(Pinned { map, path, def });
    }
    Ok(out)
}

/// The Pilus pins of `dir`: the object's maps found pinned, and any other
/// `pilus_` entry (a map an older build had). Subdirectories (the pinned
/// links) are not maps.
fn pilus_pins(dir: &Path, pinned: &[Pinned<'_>]) -> Result<Vec<String>, Error> {
    let mut found: Vec<String> = pinned.iter().map(|p| p.map.name.clone()).collect();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(source) => {
            return Err(Error::Bpffs {
                path: dir.into(),
                source,
            })
        }
    };
    for e in entries {
        let e = e.map_err(|source| Error::Bpffs {
            path: dir.into(),
            source,
        })?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if name.starts_with(NAME_PREFIX) && !is_dir && !found.contains(&name) {
            found.push(name);
        }
    }
    found.sort();
    Ok(found)
}

fn read_stamp(path: &Path) -> Result<AbiStamp, Error> {
    let err = |e| Error::ReadPin {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    let data = MapData::from_pin(path).map_err(err)?;
    let array: Array<MapData, AbiStamp> = Map::from_map_data(data)
        .and_then(Array::try_from)
        .map_err(err)?;
    array.get(&0, 0).map_err(err)
}

fn write_stamp(path: &Path, map: &ObjectMap, stamp: &AbiStamp) -> Result<(), Error> {
    let err = |e| Error::map(STAMP_MAP, e);
    // From the bare definition, without the object's BTF type ids: those
    // need the object's BTF loaded into the kernel, which only aya's load
    // does. The map is only ever read whole, by this module.
    let d = map.def;
    let def =
        aya_obj::Map::new_from_params(d.map_type, d.key_size, d.value_size, d.max_entries, d.flags);
    let data = MapData::create(def, STAMP_MAP, None).map_err(err)?;
    let mut array: Array<MapData, AbiStamp> = Array::try_from(Map::Array(data)).map_err(err)?;
    array.set(0, stamp, 0).map_err(err)?;
    array.pin(path).map_err(|e| Error::PinMap {
        name: STAMP_MAP,
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pilus_abi::{CtEntry, CtKey4, EndpointInfo};
    use std::mem::size_of;

    const ARRAY: u32 = 2;
    const HASH: u32 = 1;
    const LRU_HASH: u32 = 9;
    const RINGBUF: u32 = 27;

    fn def(map_type: u32, key: usize, value: usize, max: u32, flags: u32) -> MapDef {
        MapDef {
            map_type,
            key_size: key as u32,
            value_size: value as u32,
            max_entries: max,
            flags,
        }
    }

    fn lxc_maps(max: u32) -> Vec<ObjectMap> {
        object_maps(objects::BPF_LXC, &[("pilus_lxc", max)]).expect("parse bpf_lxc.o")
    }

    fn by_name<'a>(maps: &'a [ObjectMap], name: &str) -> &'a ObjectMap {
        maps.iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} is not in the object"))
    }

    #[test]
    fn map_def_reads_like_bpftool() {
        let d = def(LRU_HASH, 16, 56, 262144, 0);
        assert_eq!(
            d.to_string(),
            "LRU_HASH key 16 value 56 max 262144 flags 0x0"
        );
        let d = def(11, 8, 12, 512000, 1);
        assert_eq!(
            d.to_string(),
            "LPM_TRIE key 8 value 12 max 512000 flags 0x1"
        );
        assert_eq!(
            def(4242, 0, 0, 1, 0).to_string(),
            "type 4242 key 0 value 0 max 1 flags 0x0"
        );
    }

    /// The list of maps comes from the object: it must be exactly the
    /// maps bpf/lib/maps.h declares, so no map escapes the check.
    #[test]
    fn object_maps_are_the_maps_of_maps_h() {
        let header = include_str!("../../../bpf/lib/maps.h");
        let mut declared: Vec<&str> = header
            .lines()
            .filter_map(|l| l.strip_prefix("} ")?.strip_suffix(" SEC(\".maps\");"))
            .collect();
        declared.sort();
        let maps = lxc_maps(256);
        let names: Vec<&str> = maps.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, declared);
        assert!(names.contains(&STAMP_MAP));
    }

    /// The definitions are the ones the loader creates: overrides and
    /// aya's ring-buffer rules applied.
    #[test]
    fn object_defs_are_what_the_loader_creates() {
        let maps = lxc_maps(512);
        assert_eq!(
            by_name(&maps, "pilus_lxc").def,
            def(ARRAY, 4, size_of::<EndpointInfo>(), 512, 0)
        );
        assert_eq!(
            by_name(&maps, "pilus_ct4").def,
            def(HASH, size_of::<CtKey4>(), size_of::<CtEntry>(), 262144, 0)
        );
        assert_eq!(
            by_name(&maps, "pilus_events").def,
            def(RINGBUF, 0, 0, 1 << 20, 0)
        );
        assert_eq!(
            by_name(&maps, STAMP_MAP).def,
            def(ARRAY, 4, size_of::<AbiStamp>(), 1, 0)
        );
        assert_eq!(by_name(&lxc_maps(256), "pilus_lxc").def.max_entries, 256);
    }

    #[test]
    fn ring_size_rounds_to_a_power_of_two_of_pages() {
        assert_eq!(ring_size(1 << 20, 4096), 1 << 20);
        assert_eq!(ring_size(5000, 4096), 8192);
        assert_eq!(ring_size(3 * 4096, 4096), 4 * 4096);
        assert_eq!(ring_size(0, 4096), 0);
    }

    #[test]
    fn comparison_names_the_map_and_both_definitions() {
        let maps = lxc_maps(256);
        let lxc = by_name(&maps, "pilus_lxc");
        let same = Pinned {
            map: lxc,
            path: "/sys/fs/bpf/p/pilus_lxc".into(),
            def: lxc.def,
        };
        assert_eq!(compare_def(&same), Ok(()));
        for changed in [
            MapDef {
                max_entries: 512,
                ..lxc.def
            },
            MapDef {
                value_size: 40,
                ..lxc.def
            },
            MapDef {
                key_size: 8,
                ..lxc.def
            },
            MapDef {
                flags: 1,
                ..lxc.def
            },
            MapDef {
                map_type: 1,
                ..lxc.def
            },
        ] {
            let p = Pinned {
                def: changed,
                path: same.path.clone(),
                ..same
            };
            assert_eq!(
                compare_def(&p),
                Err(PinMismatch::Map {
                    map: "pilus_lxc".into(),
                    pin_path: "/sys/fs/bpf/p/pilus_lxc".into(),
                    pinned: changed,
                    expected: lxc.def,
                })
            );
        }
    }

    #[test]
    fn stamp_comparison_ignores_only_the_padding() {
        let ours = expected_stamp().unwrap();
        let path = Path::new("/sys/fs/bpf/p/pilus_abi");
        assert_eq!(compare_stamp(path, &ours, &ours), Ok(()));
        let padded = AbiStamp { _pad: 7, ..ours };
        assert_eq!(compare_stamp(path, &padded, &ours), Ok(()));
        for other in [
            AbiStamp {
                abi_version: ours.abi_version + 1,
                ..ours
            },
            AbiStamp {
                layout_hash: ours.layout_hash ^ 1,
                ..ours
            },
            AbiStamp::default(),
        ] {
            assert!(compare_stamp(path, &other, &ours).is_err(), "{other:?}");
        }
    }

    #[test]
    fn layout_hash_sees_fields_that_trade_places() {
        let structs = btf::structs(objects::ABI_LAYOUT).unwrap();
        let h = layout_hash(&structs);
        assert_eq!(h, layout_hash(&structs), "deterministic");
        assert_eq!(h, expected_stamp().unwrap().layout_hash);
        // sport and dport of ct_key4 swapped: same sizes, same offsets
        // taken, another layout.
        let mut swapped = structs.clone();
        let m = &mut swapped.get_mut("ct_key4").unwrap().members;
        let (a, b) = (m[2].offset, m[3].offset);
        m[2].offset = b;
        m[3].offset = a;
        m.swap(2, 3);
        assert_ne!(layout_hash(&swapped), h);
        // A renamed field.
        let mut renamed = structs.clone();
        renamed.get_mut("policy_rev").unwrap().members[0].name = "rev".into();
        assert_ne!(layout_hash(&renamed), h);
        // A struct grown by padding at its end.
        let mut grown = structs.clone();
        grown.get_mut("frag_ports").unwrap().size += 8;
        assert_ne!(layout_hash(&grown), h);
    }

    #[test]
    fn refusal_names_map_definitions_and_the_way_out() {
        let e = Error::IncompatiblePin {
            pin_dir: "/sys/fs/bpf/pilus".into(),
            mismatch: PinMismatch::Map {
                map: "pilus_lxc".into(),
                pin_path: "/sys/fs/bpf/pilus/pilus_lxc".into(),
                pinned: def(ARRAY, 4, 32, 256, 0),
                expected: def(ARRAY, 4, 32, 512, 0),
            },
        };
        assert_eq!(
            e.to_string(),
            "refusing to reuse the maps pinned in /sys/fs/bpf/pilus: map pilus_lxc pinned at \
             /sys/fs/bpf/pilus/pilus_lxc is ARRAY key 4 value 32 max 256 flags 0x0, this build \
             with these options needs ARRAY key 4 value 32 max 512 flags 0x0. Nothing was \
             created, written or attached. Way out: stop every pilusd using /sys/fs/bpf/pilus; \
             start with the build and the options the pins were made with (e.g. the same \
             --pod-cidr), or remove /sys/fs/bpf/pilus (pilusd rebuilds endpoints, ipcache and \
             policy from its state store on the next start; established connections lose their \
             conntrack entries and pods lose connectivity until it re-attaches)"
        );
    }

    #[test]
    fn refusal_of_a_stamp_names_both_stamps() {
        let ours = AbiStamp {
            abi_version: 1,
            _pad: 0,
            layout_hash: 0x1234,
        };
        let e = Error::IncompatiblePin {
            pin_dir: "/sys/fs/bpf/pilus".into(),
            mismatch: PinMismatch::Stamp {
                pin_path: "/sys/fs/bpf/pilus/pilus_abi".into(),
                pinned: AbiStamp {
                    layout_hash: 0xabcd,
                    ..ours
                },
                expected: ours,
            },
        }
        .to_string();
        assert!(
            e.contains(
                "the pins were made with ABI version 1 layout 0x000000000000abcd (stamp \
                 /sys/fs/bpf/pilus/pilus_abi), this build has ABI version 1 layout \
                 0x0000000000001234"
            ),
            "{e}"
        );
        assert!(
            e.contains("stop every pilusd using /sys/fs/bpf/pilus; start the pilusd build that made them, or remove /sys/fs/bpf/pilus ("),
            "{e}"
        );
        let e = Error::IncompatiblePin {
            pin_dir: "/sys/fs/bpf/pilus".into(),
            mismatch: PinMismatch::Unstamped {
                pin_path: "/sys/fs/bpf/pilus/pilus_abi".into(),
                found: vec!["pilus_ct4".into(), "pilus_lxc".into()],
            },
        }
        .to_string();
        assert!(
            e.contains(
                "pilus_ct4, pilus_lxc pinned there but no ABI stamp /sys/fs/bpf/pilus/pilus_abi: \
                 the pins were made by a pilusd from before pins were stamped"
            ),
            "{e}"
        );
    }
}
