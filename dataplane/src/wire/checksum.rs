//! Internet checksum (RFC 1071) helpers and incremental update (RFC 1624).
//!
//! [`sum`] produces a partial (unfolded) one's-complement sum that can be
//! combined with other partial sums (pseudo-headers) using [`add`] (or plain
//! `+` for packet-sized inputs), then folded with [`fold`] and complemented
//! with [`finish`].

/// One's-complement add of two partial sums with end-around carry at bit 32
/// (valid because 2^32 ≡ 1 mod 0xffff). Never overflows.
#[inline]
pub fn add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s + u32::from(carry)
}

/// RFC 1071 partial sum of `data` as big-endian 16-bit words; an odd
/// trailing byte is padded with a zero byte. For inputs up to 128 KiB the
/// result is the exact arithmetic sum; longer inputs are carried around so
/// the result stays congruent mod 0xffff.
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]))
            + u64::from(u16::from_be_bytes([c[2], c[3]]))
            + u64::from(u16::from_be_bytes([c[4], c[5]]))
            + u64::from(u16::from_be_bytes([c[6], c[7]]));
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    while acc > u64::from(u32::MAX) {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Fold carries into 16 bits (NOT complemented).
#[inline]
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Final checksum value: `!fold(sum)`.
#[inline]
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// Internet checksum of `data`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// Partial sum of the IPv4 pseudo-header (RFC 793/768).
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u32 {
    u32::from(u16::from_be_bytes([src[0], src[1]]))
        + u32::from(u16::from_be_bytes([src[2], src[3]]))
        + u32::from(u16::from_be_bytes([dst[0], dst[1]]))
        + u32::from(u16::from_be_bytes([dst[2], dst[3]]))
        + u32::from(proto)
        + u32::from(len)
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, len: u32) -> u32 {
    sum(src) + sum(dst) + (len >> 16) + (len & 0xffff) + u32::from(next_header)
}

/// Incremental checksum update when a 16-bit word changes from `old` to
/// `new` (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`).
#[inline]
pub fn update16(old_csum: u16, old: u16, new: u16) -> u16 {
    finish(u32::from(!old_csum) + u32::from(!old) + u32::from(new))
}

/// Incremental update when the bytes `old` become `new` (the same even length, at an even
/// offset of the summed data: addresses, ports), one 16-bit word at a time as [`update16`].
#[inline]
pub fn update_bytes(old_csum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut s = u32::from(!old_csum);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        s += u32::from(!u16::from_be_bytes([o[0], o[1]]))
            + u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    finish(s)
}

/// [`update_bytes`] for a UDP-over-IPv4 checksum: zero means "no checksum" and stays zero,
/// and a computed zero is sent as 0xffff (RFC 768).
#[inline]
pub fn update_udp4(old_csum: u16, old: &[u8], new: &[u8]) -> u16 {
    if old_csum == 0 {
        return 0;
    }
    match update_bytes(old_csum, old, new) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to 2ddf0, folds to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0x2ddf0);
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads() {
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn real_ipv4_header() {
        // 192.168.0.1 -> 192.168.0.199, UDP, checksum 0xb861.
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0);
        hdr[10] = 0;
        hdr[11] = 0;
        assert_eq!(checksum(&hdr), 0xb861);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: m 0x5555 -> 0x3285, other header sum 0xCD7A.
        let hc = finish(0xcd7a + 0x5555);
        assert_eq!(hc, 0xdd2f);
        assert_eq!(update16(hc, 0x5555, 0x3285), 0x0000);
        assert_eq!(finish(0xcd7a + 0x3285), 0x0000);
    }

    #[test]
    fn pseudo_headers() {
        let p = pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 40);
        assert_eq!(p, 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + 40);
        let mut s = [0u8; 16];
        s[15] = 1;
        let mut d = [0u8; 16];
        d[0] = 0xff;
        d[1] = 0x02;
        assert_eq!(pseudo_v6(&s, &d, 58, 0x1_0020), 1 + 0xff02 + 1 + 0x20 + 58);
    }

    #[test]
    fn add_carries() {
        assert_eq!(add(u32::MAX, 1), 1);
        assert_eq!(add(u32::MAX, u32::MAX), u32::MAX);
        assert_eq!(fold(add(u32::MAX, 2)), fold(2));
    }

    /// One's-complement equality: 0x0000 and 0xffff are both zero.
    fn oc_eq(a: u16, b: u16) -> bool {
        a == b || (a == 0 || a == 0xffff) && (b == 0 || b == 0xffff)
    }

    proptest! {
        #[test]
        fn update16_matches_recompute(
            mut words in proptest::collection::vec(any::<u16>(), 1..40),
            idx in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            let i = idx.index(words.len());
            let bytes = |w: &[u16]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
            let hc = checksum(&bytes(&words));
            let old = words[i];
            words[i] = new;
            let full = checksum(&bytes(&words));
            let inc = update16(hc, old, new);
            if words.iter().any(|&w| w != 0) {
                // Non-zero data: eqn. 3 gives exactly the recomputed value.
                prop_assert_eq!(inc, full);
            } else {
                prop_assert!(oc_eq(inc, full));
            }
        }

        #[test]
        fn update16_corner_cases(
            others in proptest::collection::vec(prop_oneof![Just(0u16), Just(0xffff), any::<u16>()], 0..8),
            old in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
            new in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
        ) {
            let mut words = others.clone();
            words.push(old);
            let bytes = |w: &[u16]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
            let hc = checksum(&bytes(&words));
            *words.last_mut().unwrap() = new;
            let full = checksum(&bytes(&words));
            prop_assert!(oc_eq(update16(hc, old, new), full));
            // And the updated checksum still verifies non-zero data (an IP
            // header is never all zero: it has a version nibble).
            if words.iter().any(|&w| w != 0) {
                let mut with_csum = bytes(&words);
                with_csum.extend_from_slice(&update16(hc, old, new).to_be_bytes());
                prop_assert_eq!(fold(sum(&with_csum)), 0xffff);
            }
        }

        #[test]
        fn sum_is_splittable(data in proptest::collection::vec(any::<u8>(), 0..300), split in any::<prop::sample::Index>()) {
            // Splitting at an even offset and adding partial sums is equivalent.
            let at = split.index(data.len() + 1) & !1;
            prop_assert_eq!(fold(add(sum(&data[..at]), sum(&data[at..]))), fold(sum(&data)));
        }
    }

    proptest! {
        /// Rewriting addresses and ports incrementally gives the checksum a full sum of the
        /// new bytes gives (the same one's complement value: 0x0000 and 0xffff are both
        /// zero only where RFC 768 makes UDP send 0xffff).
        #[test]
        fn incremental_updates_match_a_full_recompute(
            data in proptest::collection::vec(any::<u8>(), 40..80),
            at in 0usize..16,
            new in proptest::collection::vec(any::<u8>(), 16),
            len in prop_oneof![Just(2usize), Just(4), Just(16)],
        ) {
            let mut data = data;
            let off = (at * 2).min(data.len() - len) & !1;
            let before = checksum(&data);
            let old = data[off..off + len].to_vec();
            data[off..off + len].copy_from_slice(&new[..len]);
            let after = checksum(&data);
            let inc = update_bytes(before, &old, &new[..len]);
            prop_assert!(inc == after || (inc == 0xffff && after == 0) || (inc == 0 && after == 0xffff),
                "incremental {inc:#06x} full {after:#06x}");
            // UDP: a zero checksum stays zero; a computed zero goes out as 0xffff.
            prop_assert_eq!(update_udp4(0, &old, &new[..len]), 0);
            let u = update_udp4(before.max(1), &old, &new[..len]);
            prop_assert_ne!(u, 0);
        }
    }
}
