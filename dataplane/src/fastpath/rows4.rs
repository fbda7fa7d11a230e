//! The IPv4 gather and checks of a burst, four frames at a time in SSE registers (SSSE3 and
//! SSE4.1, within the build's x86-64-v2 baseline; see `.cargo/config.toml`).
//!
//! The portable version (`gather4` then `checks4`) copies each header field of each frame
//! into a column in memory, eight loads and eight stores a frame, and the checks then
//! reload the columns as vectors. Here, as l3fwd's `processx4_step1` does, each frame's
//! header is loaded as two 16-byte rows, and four frames' rows are transposed in registers
//! into one vector per field: the checks run on them directly, and only what the later
//! paths need is stored (total length, the rewritten TTL/checksum word, destination, frame
//! length, first-level FIB entry). A frame that takes the burst's predicted next hop ([`Predict4`]) is rewritten
//! right there, while its header is at hand: the usual burst needs no second pass over
//! its frames. The verdicts, those columns and the rewrites are the portable version's (a
//! property test holds them together).
//!
//! Safe code: `safe_arch` wraps the intrinsics, which it compiles only when the build
//! enables the feature (this module is compiled under the same condition).

use super::{Found, Predict4, RxPort, Stages, MIN_FRAME};
use crate::buf::PacketBuf;
use crate::dpdk::BURST;
use safe_arch::{
    add_i32_m128i as add, bitand_m128i as and, bitandnot_m128i, bitor_m128i as or,
    bitxor_m128i as xor, blend_imm_i16_m128i, cast_to_m128_from_m128i, cmp_eq_mask_i32_m128i as eq,
    cmp_gt_mask_i32_m128i as gt, extract_i32_imm_m128i, load_unaligned_m128i, m128i,
    move_mask_m128, set_splat_i32_m128i, shl_imm_u32_m128i, shr_imm_u32_m128i,
    shuffle_ai_f32_all_m128i, shuffle_av_i8z_all_m128i, store_unaligned_m128i,
    sub_i32_m128i as sub, unpack_high_i32_m128i, unpack_high_i64_m128i, unpack_low_i32_m128i,
    unpack_low_i64_m128i,
};

/// A lane's 32 bits, everywhere.
#[inline(always)]
pub(super) fn splat(x: u32) -> m128i {
    set_splat_i32_m128i(x as i32)
}

/// Byte indices for `pshufb`: in each lane, bytes 3 and 2 as a host-order 16-bit value
/// (bytes 2-3 of an IPv4 word are big-endian on the wire), the upper half zeroed.
pub(super) const BE16_HI: [u8; 16] = [
    3, 2, 0x80, 0x80, 7, 6, 0x80, 0x80, 11, 10, 0x80, 0x80, 15, 14, 0x80, 0x80,
];
/// The inverse: a lane's low 16 bits, host order, into bytes 2-3 in wire order.
const TO_BE16_HI: [u8; 16] = [
    0x80, 0x80, 1, 0, 0x80, 0x80, 5, 4, 0x80, 0x80, 9, 8, 0x80, 0x80, 13, 12,
];
/// Each lane byte-swapped (a big-endian address to host order).
const BSWAP32: [u8; 16] = [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12];

/// 16 bytes of a header from `at` (a constant: the bound checks fold away).
#[inline(always)]
pub(super) fn row<const N: usize>(h: &[u8; N], at: usize) -> m128i {
    load_unaligned_m128i(h[at..at + 16].try_into().unwrap_or(&[0; 16]))
}

/// Four rows of four 32-bit words, transposed: column `k` holds word `k` of each row.
#[inline(always)]
pub(super) fn transpose(r: [m128i; 4]) -> [m128i; 4] {
    let t0 = unpack_low_i32_m128i(r[0], r[1]); // r0.0 r1.0 r0.1 r1.1
    let t1 = unpack_low_i32_m128i(r[2], r[3]); // r2.0 r3.0 r2.1 r3.1
    let t2 = unpack_high_i32_m128i(r[0], r[1]); // r0.2 r1.2 r0.3 r1.3
    let t3 = unpack_high_i32_m128i(r[2], r[3]); // r2.2 r3.2 r2.3 r3.3
    [
        unpack_low_i64_m128i(t0, t1),
        unpack_high_i64_m128i(t0, t1),
        unpack_low_i64_m128i(t2, t3),
        unpack_high_i64_m128i(t2, t3),
    ]
}

// The burst is whole groups of four lanes (the column stores of the last group stay in
// bounds).
const _: () = assert!(BURST.is_multiple_of(4));

/// The gather and the checks of a burst in one pass, and the rewrite of the slots that take
/// the predicted next hop: bit `i` of `ok` set if slot `i` (of the first
/// `min(len, BURST)`) may take the fast path, and bit `i` of `done` if it was rewritten for
/// `pre`, as `rewrite_predicted` rewrites it; `st.tot`, `st.w2n`, `st.dst4`, `st.len` and
/// `st.lvl1` filled as `gather4` + `checks4::<true>` fill them for the slots that may and
/// are not done (the columns of a group of four done are not written).
///
/// The header checksum is always verified here, whatever a NIC said of it: in these
/// registers the sum costs ~5 instructions a packet, less than reading each mbuf's flags to
/// skip it (the portable checks trust a burst the NIC vouched for, as VPP and DPVS do).
#[inline(always)]
pub(super) fn gather_checks<B: PacketBuf>(
    first: &[u32; 1 << 24],
    p: &RxPort,
    pre: &Predict4,
    bufs: &mut [Option<B>],
    st: &mut Stages,
) -> Found {
    let k = Consts {
        mlo: splat(p.mac as u32),
        mhi: splat((p.mac >> 32) as u32),
        be16: m128i::from(BE16_HI),
        to_be16: m128i::from(TO_BE16_HI),
        bswap: m128i::from(BSWAP32),
        entry: splat(pre.entry),
        mtu1: splat(u32::from(pre.e.mtu) + 1),
        l2: m128i::from([pre.e.l2_lo, u64::from(pre.e.l2_hi)]),
    };
    let mut found = Found { ok: 0, done: 0 };
    each_group::<MIN_FRAME, B>(
        bufs,
        0,
        #[inline(always)]
        |lanes, i0| group(&k, first, lanes, i0, st, &mut found),
    );
    found
}

/// A slot's header (its first `N` bytes, writable) and frame length.
pub(super) type Lane<'a, const N: usize> = (&'a mut [u8; N], u32);

/// `group` over the first `min(len, BURST)` slots four at a time, with the index of each
/// group's first slot: whole groups (no bound to check per slot), then the rest padded with
/// lanes that fail. A slot in `skip`, empty, chained or shorter than `N` bytes reads a
/// zeroed header instead: EtherType 0, which both families' checks refuse, so nothing ever
/// writes it (and its length does not matter). (The IPv4 and IPv6 rows both.)
#[inline(always)]
pub(super) fn each_group<const N: usize, B: PacketBuf>(
    bufs: &mut [Option<B>],
    skip: u64,
    mut group: impl FnMut([Lane<'_, N>; 4], usize),
) {
    let n = bufs.len().min(BURST);
    let (groups, rest) = bufs[..n].as_chunks_mut::<4>();
    let mut none = [[0u8; N]; 4];
    for (g, [b0, b1, b2, b3]) in groups.iter_mut().enumerate() {
        let s = skip >> (4 * g);
        let [n0, n1, n2, n3] = &mut none;
        let lanes = [
            lane(b0, n0, s & 1 != 0),
            lane(b1, n1, s & 2 != 0),
            lane(b2, n2, s & 4 != 0),
            lane(b3, n3, s & 8 != 0),
        ];
        group(lanes, 4 * g);
    }
    if !rest.is_empty() {
        let s = skip >> (n / 4 * 4);
        let mut rest = rest.iter_mut().enumerate();
        let lanes = none.each_mut().map(|h| match rest.next() {
            Some((j, b)) => lane(b, h, (s >> j) & 1 != 0),
            None => (h, 0),
        });
        group(lanes, 4 * (n / 4));
    }
}

/// The lane of slot `b`: `none` for a slot skipped or that cannot be forwarded.
#[inline(always)]
fn lane<'a, const N: usize, B: PacketBuf>(
    b: &'a mut Option<B>,
    none: &'a mut [u8; N],
    skipped: bool,
) -> Lane<'a, N> {
    match b.as_mut().filter(|x| !skipped && x.contiguous()) {
        Some(x) => {
            let d = x.data_mut();
            let len = d.len() as u32;
            (d.first_chunk_mut().unwrap_or(none), len)
        }
        None => (none, 0),
    }
}

/// The constants of a burst's checks.
#[derive(Clone, Copy)]
struct Consts {
    /// The receiving port's MAC: bytes 0-3, bytes 4-5.
    mlo: m128i,
    mhi: m128i,
    /// `pshufb` patterns: [`BE16_HI`], [`TO_BE16_HI`], [`BSWAP32`].
    be16: m128i,
    to_be16: m128i,
    bswap: m128i,
    /// The predicted hop: its first-level entry, its MTU plus one, both MACs (bytes 0..12;
    /// in a vector register, where the rewrite stores them from: in general registers
    /// they were spilled and reloaded for every frame).
    entry: m128i,
    mtu1: m128i,
    l2: m128i,
}

/// The checks of four slots (`i0..i0 + 4`): their verdicts as bits `i0..i0 + 4` of
/// `found.ok`; those that take the predicted hop rewritten, as bits of `found.done`; the
/// columns written unless all four were.
#[inline(always)]
fn group(
    k: &Consts,
    first: &[u32; 1 << 24],
    mut lanes: [Lane<'_, MIN_FRAME>; 4],
    i0: usize,
    st: &mut Stages,
    found: &mut Found,
) {
    let Consts {
        mlo,
        mhi,
        be16,
        to_be16,
        bswap,
        entry,
        mtu1,
        l2,
    } = *k;
    // Per frame: bytes 0..16 (destination MAC, EtherType, version/IHL), 14..30 (the
    // header's first four words), the destination word (30..34), the frame length.
    let heads = lanes.each_ref().map(|(h, _)| &**h);
    let a = heads.map(|h| row(h, 0));
    let b = heads.map(|h| row(h, 14));
    let w4 = heads.map(|h| u32::from_le_bytes([h[30], h[31], h[32], h[33]]));
    let len = lanes.each_ref().map(|(_, l)| *l);
    let [mac_lo, mac_hi, _, ty] = transpose(a);
    let [w0, w1, w2, w3] = transpose(b);
    let (w4, len) = (m128i::from(w4), m128i::from(len));
    // The same fields and tests as `checks4`. Every value compared is below 2^31, so
    // the signed compares are the unsigned ones.
    let total = shuffle_av_i8z_all_m128i(w0, be16);
    let ff = splat(0xff);
    let (ttl, s, t) = (and(w2, ff), and(w3, ff), and(w4, ff));
    let mut good = and(eq(mac_lo, mlo), eq(and(mac_hi, splat(0xffff)), mhi));
    good = and(good, eq(and(ty, splat(0x00ff_ffff)), splat(0x0045_0008)));
    good = and(good, gt(total, splat(19)));
    good = and(good, gt(ttl, splat(1)));
    good = and(good, and(gt(splat(224), s), gt(splat(224), t)));
    {
        // See `checks4`: s = t - 0xffff * h, one fold, valid when 0xffff.
        let sum = add(add(add(add(w0, w1), w2), w3), w4);
        let hi = add(
            add(
                add(shr_imm_u32_m128i::<16>(w0), shr_imm_u32_m128i::<16>(w1)),
                add(shr_imm_u32_m128i::<16>(w2), shr_imm_u32_m128i::<16>(w3)),
            ),
            shr_imm_u32_m128i::<16>(w4),
        );
        let s = add(sub(sum, shl_imm_u32_m128i::<16>(hi)), hi);
        let c = add(and(s, splat(0xffff)), shr_imm_u32_m128i::<16>(s));
        good = and(good, eq(c, splat(0xffff)));
    }
    let end = add(total, splat(14));
    let mut bad = gt(end, len);
    bad = or(bad, or(eq(s, splat(127)), eq(t, splat(127))));
    bad = or(bad, eq(w3, splat(0)));
    let verdict = bitandnot_m128i(bad, good);
    found.ok |= (move_mask_m128(cast_to_m128_from_m128i(verdict)) as u64 & 0xf) << i0;
    // `ttl_word`, lane-wise: the TTL less one, the checksum plus 0x0100 (RFC 1624).
    let csum = shuffle_av_i8z_all_m128i(w2, be16);
    let mut c = add(xor(csum, splat(0xffff)), splat(0xfeff));
    c = add(and(c, splat(0xffff)), shr_imm_u32_m128i::<16>(c));
    let c = shuffle_av_i8z_all_m128i(xor(c, splat(0xffff)), to_be16);
    let w2n = or(or(and(w2, splat(0xff00)), and(sub(w2, splat(1)), ff)), c);
    let dst = shuffle_av_i8z_all_m128i(w4, bswap);
    let dst: [u32; 4] = dst.into();
    // The first-level FIB entries (in a table that does not fit the cache, the loads'
    // misses overlap: nothing here waits for one but the compare below).
    let lvl1 = dst.map(|d| first[(d >> 8) as usize]);
    // The lanes that take the predicted hop (`Predict4::takes`): rewritten now, the MACs
    // from the hop and the TTL/checksum word from `w2n`, while their headers are at hand.
    let takes = and(
        and(verdict, eq(m128i::from(lvl1), entry)),
        and(eq(end, len), gt(mtu1, total)),
    );
    let done = move_mask_m128(cast_to_m128_from_m128i(takes)) & 0xf;
    if done != 0 {
        let [h0, h1, h2, h3] = &mut lanes;
        put::<0, 0x00>(done, h0.0, l2, ty, w2n);
        put::<1, 0x55>(done, h1.0, l2, ty, w2n);
        put::<2, 0xaa>(done, h2.0, l2, ty, w2n);
        put::<3, 0xff>(done, h3.0, l2, ty, w2n);
    }
    if done != 0xf {
        // The columns, for the paths that take the lanes not done (the usual group is
        // all done, and needs none).
        st.tot[i0..i0 + 4].copy_from_slice(&<[u32; 4]>::from(total));
        st.w2n[i0..i0 + 4].copy_from_slice(&<[u32; 4]>::from(w2n));
        st.dst4[i0..i0 + 4].copy_from_slice(&dst);
        st.len[i0..i0 + 4].copy_from_slice(&<[u32; 4]>::from(len));
        st.lvl1[i0..i0 + 4].copy_from_slice(&lvl1);
    }
    found.done |= u64::from(done as u32) << i0;
}

/// The rewrite of lane `J`'s header `h` if its bit is set in `done` (`SPLAT`: `J` in each
/// of `pshufd`'s four selectors): bytes 0..16 in one store, both MACs from `l2` and the
/// frame's own EtherType, version and TOS (lane `J` of `ty`), then the TTL/checksum word
/// (lane `J` of `w2n`).
#[inline(always)]
fn put<const J: i32, const SPLAT: i32>(
    done: i32,
    h: &mut [u8; MIN_FRAME],
    l2: m128i,
    ty: m128i,
    w2n: m128i,
) {
    if done & (1 << J) == 0 {
        return;
    }
    let row = blend_imm_i16_m128i::<0b1100_0000>(l2, shuffle_ai_f32_all_m128i::<SPLAT>(ty));
    if let Some((head, _)) = h.split_first_chunk_mut::<16>() {
        store_unaligned_m128i(head, row);
    }
    h[22..26].copy_from_slice(&extract_i32_imm_m128i::<J>(w2n).to_le_bytes());
}
