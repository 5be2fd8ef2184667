//! The ABI layout check: every struct of crates/abi against the BTF of
//! bpf/abi_layout.c, field by field. It fails, never skips, on any difference:
//! a struct or field missing on either side, a size, an offset.

use pilus_datapath::{btf, objects};

#[test]
fn rust_mirrors_match_c_layouts() {
    let c = btf::structs(objects::ABI_LAYOUT).expect("BTF of abi_layout.o");
    let rust = pilus_abi::layout::all();
    let mut problems = Vec::new();
    for r in &rust {
        let Some(cs) = c.get(r.c_name) else {
            problems.push(format!(
                "struct {} is not in bpf/abi_layout.c's BTF",
                r.c_name
            ));
            continue;
        };
        if cs.size != r.size {
            problems.push(format!(
                "struct {}: C size {} != Rust size {}",
                r.c_name, cs.size, r.size
            ));
        }
        for m in &cs.members {
            match r.fields.iter().find(|f| f.name == m.name) {
                None => problems.push(format!("{}.{}: in C, not in Rust", r.c_name, m.name)),
                Some(f) if (f.offset, f.size) != (m.offset, m.size) => problems.push(format!(
                    "{}.{}: C offset {} size {} != Rust offset {} size {}",
                    r.c_name, m.name, m.offset, m.size, f.offset, f.size
                )),
                Some(_) => {}
            }
        }
        for f in &r.fields {
            if !cs.members.iter().any(|m| m.name == f.name) {
                problems.push(format!("{}.{}: in Rust, not in C", r.c_name, f.name));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "ABI layout differs:\n  {}",
        problems.join("\n  ")
    );
    // Every struct abi_layout.c instantiates has a Rust mirror too.
    let abi_h = include_str!("../../../bpf/lib/abi/abi.h");
    for line in abi_h.lines() {
        if let Some(name) = line
            .strip_prefix("struct ")
            .and_then(|l| l.strip_suffix(" {"))
        {
            assert!(
                rust.iter().any(|r| r.c_name == name),
                "abi.h struct {name} has no Rust mirror"
            );
        }
    }
}

/// The checker itself must see a difference: a struct whose field moved.
#[test]
fn checker_detects_a_moved_field() {
    let c = btf::structs(objects::ABI_LAYOUT).expect("BTF");
    let key = &c["ct_key4"];
    let names: Vec<_> = key
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.offset, m.size))
        .collect();
    assert_eq!(
        names,
        vec![
            ("saddr", 0, 4),
            ("daddr", 4, 4),
            ("sport", 8, 2),
            ("dport", 10, 2),
            ("protocol", 12, 1),
            ("scope", 13, 1),
            ("_pad", 14, 2)
        ]
    );
    assert_eq!(key.size, 16);
}
