//! A small BTF reader: the struct layouts a BPF object's BTF describes, by
//! name. The layout test compares them with crates/abi; the pin check hashes
//! them into the ABI stamp (`pins::layout_hash`); `pilus bpf` can use it to
//! explain a pinned map. Only what layout checks need is decoded.

use crate::Error;
use object::{Object, ObjectSection};
use std::collections::BTreeMap;

/// A struct member: name, byte offset, byte size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// A struct as the C compiler laid it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Struct {
    pub size: usize,
    pub members: Vec<Member>,
}

const BTF_MAGIC: u16 = 0xeb9f;

#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    name: String,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
    /// ARRAY: (elem type, nelems); STRUCT/UNION: (name, type, bit offset) per member.
    array: Option<(u32, u32)>,
    members: Vec<(String, u32, u32)>,
}

fn err(reason: impl Into<String>) -> Error {
    Error::Btf {
        what: ".BTF section",
        reason: reason.into(),
    }
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, Error> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| err(format!("truncated at byte {off}")))
}

fn str_at(strings: &[u8], off: u32) -> Result<String, Error> {
    let s = strings
        .get(off as usize..)
        .ok_or_else(|| err("string offset out of range"))?;
    let end = s
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| err("unterminated string"))?;
    Ok(String::from_utf8_lossy(&s[..end]).into_owned())
}

/// Every named struct in the `.BTF` section of the ELF object `elf`.
pub fn structs(elf: &[u8]) -> Result<BTreeMap<String, Struct>, Error> {
    let file = object::File::parse(elf).map_err(|e| err(format!("not an ELF object: {e}")))?;
    let section = file
        .section_by_name(".BTF")
        .ok_or_else(|| err("object has no .BTF section"))?;
    let data = section.data().map_err(|e| err(e.to_string()))?;
    structs_from_btf(data)
}

/// Every named struct of a raw BTF blob.
pub fn structs_from_btf(b: &[u8]) -> Result<BTreeMap<String, Struct>, Error> {
    if b.len() < 24 || u16::from_le_bytes([b[0], b[1]]) != BTF_MAGIC {
        return Err(err("bad magic (big-endian BTF is not supported)"));
    }
    let hdr_len = u32_at(b, 4)? as usize;
    let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
    let (str_off, str_len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
    let types_b = b
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or_else(|| err("type section out of range"))?;
    let strings = b
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or_else(|| err("string section out of range"))?;

    // Type ids start at 1; id 0 is void.
    let mut types: Vec<Option<Type>> = vec![None];
    let mut off = 0;
    while off < types_b.len() {
        let name_off = u32_at(types_b, off)?;
        let info = u32_at(types_b, off + 4)?;
        let size_or_type = u32_at(types_b, off + 8)?;
        off += 12;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let mut t = Type {
            kind,
            name: str_at(strings, name_off)?,
            vlen,
            kind_flag: info >> 31 == 1,
            size_or_type,
            array: None,
            members: Vec::new(),
        };
        off += match kind {
            1 | 14 | 17 => 4, // INT, VAR, DECL_TAG
            3 => {
                t.array = Some((u32_at(types_b, off)?, u32_at(types_b, off + 8)?));
                12
            }
            4 | 5 => {
                for i in 0..vlen {
                    let m = off + i * 12;
                    t.members.push((
                        str_at(strings, u32_at(types_b, m)?)?,
                        u32_at(types_b, m + 4)?,
                        u32_at(types_b, m + 8)?,
                    ));
                }
                vlen * 12
            }
            6 | 13 => vlen * 8,        // ENUM, FUNC_PROTO
            15 | 19 => vlen * 12,      // DATASEC, ENUM64
            2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, modifiers, FUNC, FLOAT, TYPE_TAG
            k => return Err(err(format!("unknown BTF kind {k}"))),
        };
        types.push(Some(t));
    }

    let mut out = BTreeMap::new();
    for t in types.iter().flatten() {
        if t.kind != 4 || t.name.is_empty() {
            continue;
        }
        let mut members = Vec::with_capacity(t.vlen);
        for (name, ty, bits) in &t.members {
            // With kind_flag, the top 8 bits are a bitfield size: the ABI has none.
            if t.kind_flag && bits >> 24 != 0 || bits % 8 != 0 {
                return Err(err(format!(
                    "struct {} member {name} is a bitfield",
                    t.name
                )));
            }
            let bits = if t.kind_flag { bits & 0xff_ffff } else { *bits };
            members.push(Member {
                name: name.clone(),
                offset: bits as usize / 8,
                size: type_size(&types, *ty, 0)?,
            });
        }
        out.insert(
            t.name.clone(),
            Struct {
                size: t.size_or_type as usize,
                members,
            },
        );
    }
    Ok(out)
}

fn type_size(types: &[Option<Type>], id: u32, depth: u32) -> Result<usize, Error> {
    if depth > 32 {
        return Err(err("type chain too deep"));
    }
    let t = types
        .get(id as usize)
        .and_then(Option::as_ref)
        .ok_or_else(|| err(format!("type id {id} out of range")))?;
    Ok(match t.kind {
        1 | 4 | 5 | 6 | 15 | 16 | 19 => t.size_or_type as usize,
        2 => 8,
        3 => {
            let (elem, n) = t.array.expect("array info");
            type_size(types, elem, depth + 1)? * n as usize
        }
        8..=11 | 18 => type_size(types, t.size_or_type, depth + 1)?,
        k => return Err(err(format!("type id {id} (kind {k}) has no size"))),
    })
}
