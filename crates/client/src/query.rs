//! Query strings for the API's targets (`?since=4&type=drop`).

/// Encodes `pairs` as a query string (without the leading `?`): every byte
/// other than `A-Z a-z 0-9 - . _ ~` is percent-encoded, so names and values
/// may contain anything, `&`, `=`, `+` and non-ASCII included. The agent
/// decodes `+` as a space too, but never needs to here.
pub fn encode_query(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_into(&mut out, name);
        out.push('=');
        percent_encode_into(&mut out, value);
    }
    out
}

fn percent_encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_but_unreserved_bytes_is_encoded() {
        let q = encode_query(&[("name", "a b&c=d+é"), ("flag", ""), ("~.-_", "日")]);
        assert_eq!(q, "name=a%20b%26c%3Dd%2B%C3%A9&flag=&~.-_=%E6%97%A5", "{q}");
        assert_eq!(encode_query(&[]), "");
    }
}
