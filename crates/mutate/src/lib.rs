//! Structure-aware mutation for the fuzz campaigns: a small seeded RNG
//! (so a failing case is reproduced from its seed alone), mutations of a
//! JSON value that keep most of its shape (a field dropped, retyped,
//! nulled, a string made hostile, a number pushed to an edge), and raw
//! byte mutations of its text. The campaigns (proptest drives the seeds)
//! own the invariants; this crate only makes inputs.
//!
//! Written here rather than taken from a crate: the fuzzers on crates.io
//! (arbitrary, proptest's own strategies) generate values from types, while
//! these campaigns start from a *valid* request and bend it a little, which
//! is what reaches the deep error paths.

use serde_json::{Map, Value};

/// xorshift64*: small, fast and reproducible; not for anything secret.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Strings that tend to break parsers, names and paths.
pub const HOSTILE_STRINGS: &[&str] = &[
    "",
    " ",
    "a",
    "-",
    "..",
    "/",
    "a/b",
    "../../etc/passwd",
    "%00",
    "\0",
    "\u{202e}",
    "ünïcødé",
    "🙂",
    "a b",
    "a=b",
    "a;b=c",
    "k8s:app=web",
    "reserved:host",
    "\"quoted\"",
    "\\",
    "{}",
    "[]",
    "null",
    "-1",
    "0",
    "4294967296",
    "198.18.0.300",
    "198.18.0.0/33",
    "198.18.0.1/32",
    "0.0.0.0/0",
    "::1",
    "eth0",
    "averyveryverylonginterfacename",
    "lxc00000000000",
];

/// Numbers at the edges of the types requests use.
pub const EDGE_NUMBERS: &[i128] = &[
    0,
    1,
    -1,
    255,
    256,
    65535,
    65536,
    i32::MAX as i128,
    u32::MAX as i128,
    u32::MAX as i128 + 1,
    i64::MAX as i128,
    u64::MAX as i128,
    i64::MIN as i128,
];

/// A random scalar of any JSON type.
pub fn any_scalar(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(1, 2)),
        2 => number(*rng.pick(EDGE_NUMBERS)),
        3 => Value::from(rng.next_u64() as f64 / 7.0),
        4 => Value::String(rng.pick(HOSTILE_STRINGS).to_string()),
        _ => Value::String(long_string(rng)),
    }
}

fn number(n: i128) -> Value {
    if let Ok(u) = u64::try_from(n) {
        Value::from(u)
    } else if let Ok(i) = i64::try_from(n) {
        Value::from(i)
    } else {
        Value::from(n as f64)
    }
}

fn long_string(rng: &mut Rng) -> String {
    let len = *rng.pick(&[16usize, 64, 256, 4096]);
    (0..len)
        .map(|_| char::from(b'a' + (rng.below(26) as u8)))
        .collect()
}

/// Applies one structural mutation somewhere in `v`.
pub fn mutate(v: &mut Value, rng: &mut Rng) {
    // Walk down to a random node, stopping early now and then.
    let depth = rng.below(5);
    mutate_at(v, rng, depth);
}

fn mutate_at(v: &mut Value, rng: &mut Rng, depth: usize) {
    let descend = depth > 0
        && match v {
            Value::Object(m) => !m.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => false,
        };
    if descend {
        match v {
            Value::Object(m) => {
                let k = m
                    .keys()
                    .nth(rng.below(m.len()))
                    .cloned()
                    .unwrap_or_default();
                if let Some(child) = m.get_mut(&k) {
                    return mutate_at(child, rng, depth - 1);
                }
            }
            Value::Array(a) => {
                let i = rng.below(a.len());
                return mutate_at(&mut a[i], rng, depth - 1);
            }
            _ => {}
        }
    }
    mutate_here(v, rng);
}

fn mutate_here(v: &mut Value, rng: &mut Rng) {
    match v {
        Value::Object(m) if !m.is_empty() && rng.chance(1, 2) => {
            let k = m
                .keys()
                .nth(rng.below(m.len()))
                .cloned()
                .unwrap_or_default();
            match rng.below(4) {
                0 => {
                    m.remove(&k);
                }
                1 => {
                    m.insert(k, any_scalar(rng));
                }
                2 => {
                    let val = m.remove(&k).unwrap_or(Value::Null);
                    m.insert(format!("{k}{}", rng.pick(HOSTILE_STRINGS)), val);
                }
                _ => {
                    m.insert(rng.pick(HOSTILE_STRINGS).to_string(), any_scalar(rng));
                }
            }
        }
        Value::Array(a) if rng.chance(1, 2) => match rng.below(4) {
            0 if !a.is_empty() => {
                let i = rng.below(a.len());
                a.remove(i);
            }
            1 if !a.is_empty() => {
                let i = rng.below(a.len());
                let dup = a[i].clone();
                a.push(dup);
            }
            2 => a.push(any_scalar(rng)),
            _ => a.clear(),
        },
        Value::String(s) if rng.chance(2, 3) => {
            *s = match rng.below(4) {
                0 => rng.pick(HOSTILE_STRINGS).to_string(),
                1 => format!("{s}{}", rng.pick(HOSTILE_STRINGS)),
                2 => s.chars().rev().collect(),
                _ => s.to_uppercase(),
            }
        }
        Value::Number(_) if rng.chance(2, 3) => *v = number(*rng.pick(EDGE_NUMBERS)),
        _ => {
            *v = match rng.below(4) {
                0 => any_scalar(rng),
                1 => Value::Array(vec![v.take()]),
                2 => {
                    let mut m = Map::new();
                    m.insert("x".into(), v.take());
                    Value::Object(m)
                }
                _ => Value::Null,
            }
        }
    }
}

/// Applies one raw mutation to `bytes`: a flipped bit, a cut, a byte
/// inserted or removed, a slice repeated.
pub fn mutate_bytes(bytes: &mut Vec<u8>, rng: &mut Rng) {
    if bytes.is_empty() {
        bytes.push(rng.next_u64() as u8);
        return;
    }
    let i = rng.below(bytes.len());
    match rng.below(5) {
        0 => bytes[i] ^= 1 << rng.below(8),
        1 => bytes.truncate(i),
        2 => bytes.insert(i, *rng.pick(b"{}[]\",:\\\0\xff \n")),
        3 => {
            bytes.remove(i);
        }
        _ => {
            let j = (i + 1 + rng.below(16)).min(bytes.len());
            let slice = bytes[i..j].to_vec();
            bytes.splice(i..i, slice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_mutations() {
        let base = serde_json::json!({"a": [1, "x", {"b": null}], "c": "198.18.0.1"});
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut v = base.clone();
            for _ in 0..5 {
                mutate(&mut v, &mut rng);
            }
            v
        };
        assert_eq!(run(7), run(7));
        // Different seeds explore: over 50 seeds most inputs differ from
        // the base.
        let changed = (0..50).filter(|s| run(*s) != base).count();
        assert!(changed > 40, "only {changed} of 50 seeds changed the value");
    }

    #[test]
    fn byte_mutations_change_the_bytes() {
        let mut rng = Rng::new(3);
        let mut changed = 0;
        for _ in 0..100 {
            let mut b = b"{\"cniVersion\":\"1.1.0\"}".to_vec();
            mutate_bytes(&mut b, &mut rng);
            changed += usize::from(b != b"{\"cniVersion\":\"1.1.0\"}");
        }
        assert!(changed > 80, "{changed}");
        assert!(rng.below(10) < 10);
    }
}
