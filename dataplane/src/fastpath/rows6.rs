//! The IPv6 checks of a burst, four frames at a time in SSE registers, as `rows4` does for
//! IPv4 (and within the same SSSE3/SSE4.1 baseline).
//!
//! The portable version (`scan6`, `check6` a frame at a time) loads each frame's words into
//! general registers and tests them one by one, ~85 instructions a frame. Here each frame's
//! header is loaded as four 16-byte rows (bytes 0..16, 16..32, the source 22..38 and the
//! destination 38..54), and four frames' rows are transposed into one vector per field: the
//! tests run on four frames at once. A frame that takes the burst's predicted next hop
//! ([`Predict6`]) is rewritten right there (both MACs with its own EtherType and version in
//! one store, and the hop limit), so that the usual burst needs no second pass. Verdicts,
//! columns and rewrites are the portable version's (a property test holds them together).
//!
//! Safe code: `safe_arch` wraps the intrinsics, which it compiles only when the build
//! enables the feature (this module is compiled under the same condition).

use super::rows4::{each_group, row, splat, transpose, Lane, BE16_HI};
use super::{Found, Predict6, RxPort, Stages, MIN_FRAME6};
use crate::buf::PacketBuf;
use safe_arch::{
    add_i32_m128i as add, bitand_m128i as and, bitandnot_m128i, bitor_m128i as or,
    bitxor_m128i as xor, blend_imm_i16_m128i, cast_to_m128_from_m128i, cmp_eq_mask_i32_m128i as eq,
    cmp_gt_mask_i32_m128i as gt, m128i, move_mask_m128, shr_imm_u32_m128i,
    shuffle_av_i8z_all_m128i, store_unaligned_m128i,
};

/// Byte indices for `pshufb`: the 16 bytes reversed (an address in wire order to a
/// host-order `u128`).
const REVERSE: [u8; 16] = [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];

/// The IPv6 checks of the slots not in `skip` (of the first `min(len, BURST)`), and the
/// rewrite of those that take the predicted next hop: bit `i` of `ok` set if slot `i` may
/// take the fast path (as `check6` says), and of `done` if it was rewritten for `pre` (as
/// `Predict6::takes` and `Egress4::rewrite6` say); `st.dst6` filled as `scan6` fills it for
/// the slots that may and are not done (not for a group of four done).
#[inline(always)]
pub(super) fn scan_checks<B: PacketBuf>(
    p: &RxPort,
    pre: &Predict6,
    bufs: &mut [Option<B>],
    st: &mut Stages,
    skip: u64,
) -> Found {
    // The prediction's prefix, as the four little-endian words of its wire bytes, the
    // layout of the transposed destinations.
    let words = |x: u128| <[u32; 4]>::from(m128i::from(x.to_be_bytes())).map(splat);
    let k = Consts {
        mlo: splat(p.mac as u32),
        mhi: splat((p.mac >> 32) as u32),
        be16: m128i::from(BE16_HI),
        reverse: m128i::from(REVERSE),
        want: words(pre.want),
        mask: words(pre.mask),
        // plen + 40 <= mtu, as plen < mtu - 39 (none fits an MTU below 40, or none).
        mtu1: splat((u32::from(pre.e.mtu) + 1).saturating_sub(40)),
        l2: m128i::from([pre.e.l2_lo, u64::from(pre.e.l2_hi)]),
    };
    let mut found = Found { ok: 0, done: 0 };
    each_group::<MIN_FRAME6, B>(
        bufs,
        skip,
        #[inline(always)]
        |lanes, i0| group(&k, lanes, i0, st, &mut found),
    );
    found
}

/// The constants of a burst's checks.
struct Consts {
    /// The receiving port's MAC: bytes 0-3, bytes 4-5.
    mlo: m128i,
    mhi: m128i,
    /// `pshufb` patterns: [`BE16_HI`], [`REVERSE`].
    be16: m128i,
    reverse: m128i,
    /// The predicted hop: the bits of its destinations that decided its lookup and their
    /// value, word by word (see `scan_checks`); the largest payload length its MTU takes,
    /// plus one; both MACs (bytes 0..12).
    want: [m128i; 4],
    mask: [m128i; 4],
    mtu1: m128i,
    l2: m128i,
}

/// All ones in the lanes whose address (as four transposed words, little-endian loads of
/// its bytes) is one the fast path leaves to the slow path: multicast (ff00::/8),
/// link-local (fe80::/10), unspecified or loopback (`ordinary6`'s).
#[inline(always)]
fn special([x0, x1, x2, x3]: [m128i; 4]) -> m128i {
    let multicast = eq(and(x0, splat(0xff)), splat(0xff));
    let link_local = eq(and(x0, splat(0xc0ff)), splat(0x80fe));
    // :: and ::1: zero but for the last byte's low bit (bit 24 of the last word).
    let low = or(or(x0, x1), or(x2, and(x3, splat(!(1 << 24)))));
    or(or(multicast, link_local), eq(low, splat(0)))
}

/// The checks of four slots (`i0..i0 + 4`): their verdicts as bits `i0..i0 + 4` of
/// `found.ok`; those that take the predicted hop rewritten, as bits of `found.done`; the
/// destinations written unless all four were.
#[inline(always)]
fn group(
    k: &Consts,
    mut lanes: [Lane<'_, MIN_FRAME6>; 4],
    i0: usize,
    st: &mut Stages,
    found: &mut Found,
) {
    let heads = lanes.each_ref().map(|(h, _)| &**h);
    let a = heads.map(|h| row(h, 0));
    let b = heads.map(|h| row(h, 16));
    let src = heads.map(|h| row(h, 22));
    let dst = heads.map(|h| row(h, 38));
    let len = m128i::from(lanes.each_ref().map(|(_, l)| *l));
    // Bytes 0-3 and 4-7 (the destination MAC in 0-5), 12-15 (EtherType, version); 16-19
    // (the payload length in 18-19), 20-23 (next header, hop limit).
    let [mac_lo, mac_hi, _, ty] = transpose(a);
    let [w4, w5, _, _] = transpose(b);
    let d = transpose(dst);
    // The same tests as `check6`. Every value compared is below 2^31, so the signed
    // compares are the unsigned ones.
    let plen = shuffle_av_i8z_all_m128i(w4, k.be16);
    let ff = splat(0xff);
    let next = and(w5, ff);
    let hops = and(shr_imm_u32_m128i::<8>(w5), ff);
    let mut good = and(eq(mac_lo, k.mlo), eq(and(mac_hi, splat(0xffff)), k.mhi));
    good = and(good, eq(and(ty, splat(0x00f0_ffff)), splat(0x0060_dd86)));
    good = and(good, or(eq(next, splat(6)), eq(next, splat(17))));
    good = and(good, gt(hops, splat(1)));
    let end = add(plen, splat(MIN_FRAME6 as u32));
    let mut bad = gt(end, len);
    bad = or(bad, or(special(transpose(src)), special(d)));
    let verdict = bitandnot_m128i(bad, good);
    found.ok |= (move_mask_m128(cast_to_m128_from_m128i(verdict)) as u64 & 0xf) << i0;
    // The lanes that take the predicted hop (`Predict6::takes`): the bits that decided its
    // lookup are the prediction's, the datagram fits its MTU and fills its frame.
    let differ = or(
        or(
            and(xor(d[0], k.want[0]), k.mask[0]),
            and(xor(d[1], k.want[1]), k.mask[1]),
        ),
        or(
            and(xor(d[2], k.want[2]), k.mask[2]),
            and(xor(d[3], k.want[3]), k.mask[3]),
        ),
    );
    let takes = and(
        and(verdict, eq(differ, splat(0))),
        and(eq(end, len), gt(k.mtu1, plen)),
    );
    let done = move_mask_m128(cast_to_m128_from_m128i(takes)) & 0xf;
    if done != 0 {
        // Bytes 0..16 in one store, both MACs from the hop and the frame's own EtherType,
        // version and traffic class (its row `a`); then the hop limit less one.
        for (j, ((h, _), a)) in lanes.iter_mut().zip(a).enumerate() {
            if done & (1 << j) != 0 {
                let row = blend_imm_i16_m128i::<0b1100_0000>(k.l2, a);
                if let Some((head, _)) = h.split_first_chunk_mut::<16>() {
                    store_unaligned_m128i(head, row);
                }
                h[21] = h[21].wrapping_sub(1);
            }
        }
    }
    if done != 0xf {
        // The destinations, for the lookups of the lanes not done.
        for (j, x) in dst.into_iter().enumerate() {
            st.dst6[i0 + j] = u128::from(shuffle_av_i8z_all_m128i(x, k.reverse));
        }
    }
    found.done |= u64::from(done as u32) << i0;
}
