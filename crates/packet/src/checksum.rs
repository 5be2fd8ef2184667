//! RFC 1071 internet checksum, plus the IPv4 pseudo-header variant used by TCP and UDP.

use std::net::Ipv4Addr;

/// Running one's-complement sum that can be fed in pieces.
///
/// Pieces may have odd lengths: a dangling byte is held back and paired with
/// the first byte of the next piece, so feeding `a` then `b` equals feeding
/// `a ++ b`. This lets the pseudo-header and the segment be summed without
/// first concatenating them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sum {
    // u64 cannot overflow for any slice that fits in memory on a 64-bit host
    // (each step adds at most 0xffff), so folding is deferred to `finish`.
    acc: u64,
    pending: Option<u8>,
}

impl Sum {
    pub(crate) fn add(&mut self, data: &[u8]) {
        let mut data = data;
        if let Some(hi) = self.pending.take() {
            match data.split_first() {
                Some((&lo, rest)) => {
                    self.acc += u64::from(u16::from_be_bytes([hi, lo]));
                    data = rest;
                }
                None => {
                    self.pending = Some(hi);
                    return;
                }
            }
        }
        let mut words = data.chunks_exact(2);
        for w in &mut words {
            self.acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            self.pending = Some(*last);
        }
    }

    /// Adds an integer value directly. Because 2^16 ≡ 1 (mod 0xffff), adding
    /// the whole value is the same as adding each of its 16-bit words, which
    /// is what the pseudo-header length needs.
    pub(crate) fn add_value(&mut self, v: u64) {
        self.acc += v;
    }

    /// Folds the carries and returns the complemented 16-bit checksum.
    pub(crate) fn finish(self) -> u16 {
        let mut s = self.acc;
        if let Some(hi) = self.pending {
            // RFC 1071: an odd trailing byte is padded with a zero low byte.
            s += u64::from(hi) << 8;
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        // The loop leaves s <= 0xffff, so the cast is lossless.
        !(s as u16)
    }
}

/// RFC 1071 internet checksum of `data` (folded, complemented).
///
/// Computing it over a header whose checksum field is already filled in
/// yields 0 when that checksum is correct.
pub fn checksum(data: &[u8]) -> u16 {
    let mut s = Sum::default();
    s.add(data);
    s.finish()
}

/// TCP/UDP checksum of `segment` (L4 header + data) with the IPv4
/// pseudo-header for `src`, `dst` and `proto`.
///
/// The segment's own checksum field is summed as-is: zero it first to compute
/// a checksum, or leave it in place to verify one (result 0 means valid).
/// The UDP "0 means no checksum → transmit 0xffff" rule is not applied here.
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut s = Sum::default();
    s.add(&src.octets());
    s.add(&dst.octets());
    s.add(&[0, proto]);
    s.add_value(segment.len() as u64);
    s.add(segment);
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_vector() {
        // RFC 1071 §3: these bytes sum to 0x2ddf0, fold to 0xddf2, and the
        // checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn ipv4_header_known_vector() {
        // Classic example header with its checksum field zeroed; the correct
        // checksum is 0xb861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
        let mut filled = hdr;
        filled[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&filled), 0);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x12]), !0x1200);
        assert_eq!(checksum(&[0x12, 0x34, 0x56]), !(0x1234 + 0x5600));
    }

    #[test]
    fn empty_is_all_ones() {
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn split_feeding_matches_contiguous() {
        let data: Vec<u8> = (0u8..=200).map(|b| b.wrapping_mul(37)).collect();
        for cut in 0..data.len() {
            let mut s = Sum::default();
            s.add(&data[..cut]);
            s.add(&data[cut..]);
            assert_eq!(s.finish(), checksum(&data), "cut at {cut}");
        }
    }

    #[test]
    fn pseudo_header_matches_explicit_concatenation() {
        let src = Ipv4Addr::new(10, 1, 2, 3);
        let dst = Ipv4Addr::new(172, 16, 0, 9);
        let seg = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut explicit = Vec::new();
        explicit.extend_from_slice(&src.octets());
        explicit.extend_from_slice(&dst.octets());
        explicit.extend_from_slice(&[0, 17, 0, seg.len() as u8]);
        explicit.extend_from_slice(&seg);
        assert_eq!(l4_checksum(src, dst, 17, &seg), checksum(&explicit));
    }
}
