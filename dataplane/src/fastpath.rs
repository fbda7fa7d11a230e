//! The forwarding fast path, IPv4 and IPv6, run over a whole burst.
//!
//! The common case: an untagged unicast datagram (IPv4 without options, or IPv6 carrying TCP
//! or UDP directly), for a fresh resolved next hop, TTL / hop limit above 1, that fits the
//! egress MTU. The burst is handled as l3fwd handles it, in SSE registers: on x86-64
//! (`rows4`, `rows6`), four frames' headers are loaded as 16-byte rows and transposed into
//! one vector per field; elsewhere, the IPv4 fields are gathered into arrays, a column each,
//! that the compiler vectorises, and the IPv6 ones tested a frame at a time. The checks
//! (MAC, EtherType and version, lengths, TTL or hop limit, martians or special addresses,
//! the IPv4 header checksum) run lane by lane without branches and compute the rewritten
//! TTL/checksum word at the same time. A burst's next hop is predicted from its first frame
//! (the direct route its destination reads in the first level of the IPv4 FIB,
//! `Predict4`; the IPv6 route and the bits of the address that decided it, `Predict6`); every
//! frame that passes, takes the same route, fits the MTU and fills its frame is rewritten by
//! the checks themselves, so the usual burst takes one pass. The other destinations are
//! looked up (IPv4 from the first-level entry the gather read; IPv6 together, with
//! [`Lpm6::lookup_bulk`](crate::lpm::Lpm6::lookup_bulk)), and each packet is rewritten in
//! place from the flattened next hop ([`FastHop`]): two MACs and one 32-bit word; a run of
//! packets with the same direct next hop reads its entry once. A burst that all leaves by
//! one port stays in its slots for the worker to queue at once.
//!
//! Everything else (ARP, ND and all ICMPv6, options and extension headers, fragments to be
//! made, TTL expiry, local and link-local destinations, unresolved or stale neighbours,
//! VLANs, martians, bad checksums, any malformed header) is left untouched and goes to
//! [`router::process`](crate::router::process), which is the reference: for every packet the
//! fast path forwards, `process` forwards the same bytes to the same port (property tests
//! hold the two together), and the column checks pass exactly what the scalar `check4`
//! passes.

use crate::buf::PacketBuf;
use crate::dpdk::BURST;
use crate::lpm::NextHop;
use crate::router::flow_hash;
use crate::tables::{FastHop, FastKind, Hop, PortTable, Tables};
use crate::wire::l4;

#[cfg(all(target_arch = "x86_64", target_feature = "sse4.1"))]
mod rows4;
#[cfg(all(target_arch = "x86_64", target_feature = "sse4.1"))]
mod rows6;

/// Ethernet + IPv4 header without options.
const MIN_FRAME: usize = 34;
/// Ethernet + IPv6 header.
const MIN_FRAME6: usize = 54;
/// No next hop (FIB answers are below 2^24): the empty hop cache.
const NO_HOP: NextHop = NextHop::MAX;

/// What the header checks need of the receiving port, computed once per burst.
#[derive(Clone, Copy)]
struct RxPort {
    /// The port's MAC as the first six bytes of a little-endian u64.
    mac: u64,
}

impl RxPort {
    fn new(port: &PortTable) -> Self {
        let m = port.mac;
        RxPort {
            mac: u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]),
        }
    }
}

/// The IPv4 header checks for one frame, the scalar reference of the burst-wide
/// `checks4`: `Some(destination)` if the frame received on `port` may take the fast path
/// (the caller has checked that `port` is untagged and the buffer contiguous). The worker
/// runs `checks4`; a property test holds the two to the same verdicts.
#[cfg(test)]
fn check4(port: &RxPort, d: &[u8]) -> Option<u32> {
    let h: &[u8; MIN_FRAME] = d.get(..MIN_FRAME)?.try_into().ok()?;
    // Unicast to us (destination MAC, 6 bytes of an 8-byte load), IPv4 (0x0800), version 4
    // with a 20-byte header (0x45).
    let mac = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
    let ty = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    let total = u16::from_be_bytes([h[16], h[17]]) as usize;
    let src = u32::from_be_bytes([h[26], h[27], h[28], h[29]]);
    let dst = u32::from_be_bytes([h[30], h[31], h[32], h[33]]);
    let (s, t) = (src >> 24, dst >> 24);
    let bad = ((mac ^ port.mac) << 16 != 0)
        | (ty & 0x00ff_ffff != 0x0045_0008)
        | (total < 20)
        | (14 + total > d.len())
        | (h[22] <= 1)
        // Martian sources and destinations, multicast and broadcast: the slow path says which.
        | (s >= 224)
        | (s == 127)
        | (src == 0)
        | (t >= 224)
        | (t == 127)
        | !header_checksum_ok(h);
    if bad {
        return None;
    }
    Some(dst)
}

/// The IPv4 header checksum (RFC 1071) of a frame whose IPv4 header starts at byte 14 with
/// version/IHL 0x45, summed as five native-endian 32-bit words.
///
/// A header is valid when its ones' complement sum is 0xffff, that is when the plain sum `s`
/// of its 16-bit words is a nonzero multiple of 0xffff (folding keeps `s` mod 0xffff, since
/// 2^16 = 1 mod 0xffff). Summing 32-bit words keeps that too (2^32 = 1 mod 0xffff), and so
/// does the byte swap of a little-endian load (it multiplies `s` by 2^8 mod 0xffff, which is
/// prime to 0xffff). The first byte is 0x45, so `s` is never 0. One remainder by a constant
/// (a multiply and a shift) replaces four dependent folds.
#[cfg(test)]
fn header_checksum_ok(h: &[u8; MIN_FRAME]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let s = w(14) + w(18) + w(22) + w(26) + w(30);
    s % 0xffff == 0
}

/// The flattened next hop for `hop`, with the destination MAC filled in (from the
/// neighbour for an on-link destination, the flow's member for ECMP), or `None` for the slow
/// path. `neighbor` looks the destination up; `flow` hashes the flow (only for ECMP).
#[inline(never)]
fn next_hop(
    t: &Tables,
    hop: NextHop,
    neighbor: impl FnOnce(u16) -> Option<crate::tables::Neighbor>,
    flow: impl FnOnce() -> u64,
) -> Option<FastHop> {
    let mut f = *t.fast.get(hop as usize)?;
    match f.kind {
        FastKind::Direct => Some(f),
        FastKind::Connected => {
            let n = neighbor(f.port)?;
            if n.stale {
                return None;
            }
            f.l2[..6].copy_from_slice(&n.mac);
            Some(f)
        }
        FastKind::Ecmp => {
            let Some(Hop::Ecmp { start, len }) = t.hops.get(hop as usize) else {
                return None;
            };
            if *len == 0 {
                return None;
            }
            let i = (flow() % *len as u64) as usize;
            let member = *t.ecmp.get(i + *start as usize)?;
            let f = *t.fast.get(member as usize)?;
            (f.kind == FastKind::Direct).then_some(f)
        }
        FastKind::Slow => None,
    }
}

/// Forward an IPv4 packet that passed the checks, whose destination looked up to `hop`:
/// rewrite it for its next hop and return the egress port, or [`NO_PORT`] (and leave the
/// packet as it was) if the slow path must handle it. `total` (the IPv4 total length), `len`
/// (the frame's) and `w2` (the header's bytes 22..26 rewritten: TTL - 1, protocol, updated
/// checksum, as [`ttl_word`] makes them) come from the burst-wide pass.
#[inline(always)]
fn forward4<B: PacketBuf>(
    t: &Tables,
    hop: Option<NextHop>,
    total: u32,
    len: u32,
    w2: u32,
    b: &mut B,
) -> u16 {
    let Some(hop) = hop else { return NO_PORT };
    let Some(f) = t.fast.get(hop as usize) else {
        return NO_PORT;
    };
    if f.kind == FastKind::Direct {
        return Egress4::of(f).send4(total, len, w2, b);
    }
    // On-link or ECMP: out of line, so the common case stays a load and a compare.
    resolve4(t, hop, b.data()).map_or(NO_PORT, |f| Egress4::of(&f).send4(total, len, w2, b))
}

/// An IPv4 next hop as the rewrite uses it: both MACs as two words, the port, the MTU. The
/// all-IPv4 loop keeps the last direct one (`hop`) across a burst's packets in these scalars;
/// as a [`FastHop`] it lived on the stack and was reloaded for every packet.
#[derive(Clone, Copy)]
struct Egress4 {
    hop: NextHop,
    /// The frame's bytes 0..8 and 8..12 (both MACs), little-endian.
    l2_lo: u64,
    l2_hi: u32,
    port: u16,
    mtu: u16,
}

impl Egress4 {
    /// Nothing kept: no lookup answers [`NO_HOP`].
    const NONE: Egress4 = Egress4 {
        hop: NO_HOP,
        l2_lo: 0,
        l2_hi: 0,
        port: NO_PORT,
        mtu: 0,
    };

    /// `f`, not kept (`hop` is [`NO_HOP`]).
    fn of(f: &FastHop) -> Egress4 {
        let l = &f.l2;
        Egress4 {
            hop: NO_HOP,
            l2_lo: u64::from_le_bytes([l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]]),
            l2_hi: u32::from_le_bytes([l[8], l[9], l[10], l[11]]),
            port: f.port,
            mtu: f.mtu,
        }
    }

    /// The end of forwarding once the next hop is known: the MTU, the trim of any Ethernet
    /// padding, the rewrite. The egress port, or [`NO_PORT`] for the slow path (the checks
    /// refused TTL 0 and 1 and datagrams longer than the frame).
    #[inline(always)]
    fn send4<B: PacketBuf>(&self, total: u32, len: u32, w2: u32, b: &mut B) -> u16 {
        if total > u32::from(self.mtu) {
            return NO_PORT;
        }
        if len > 14 + total {
            return self.trim_then_write4((len - 14 - total) as usize, w2, b);
        }
        self.write4(w2, b)
    }

    /// The rewrite (both MACs; TTL, protocol and checksum as one word): the egress port, or
    /// [`NO_PORT`] for a frame too short to hold them (which the checks refused before).
    #[inline(always)]
    fn write4<B: PacketBuf>(&self, w2: u32, b: &mut B) -> u16 {
        if self.rewrite4(w2, b) {
            self.port
        } else {
            NO_PORT
        }
    }

    /// [`Self::write4`], true if done.
    #[inline(always)]
    fn rewrite4<B: PacketBuf>(&self, w2: u32, b: &mut B) -> bool {
        let Some(h) = b.data_mut().get_mut(..26) else {
            return false;
        };
        self.write_l2(h);
        h[22..26].copy_from_slice(&w2.to_le_bytes());
        true
    }

    /// Both MACs, the frame's first 12 bytes (`h` holds at least those).
    #[inline(always)]
    fn write_l2(&self, h: &mut [u8]) {
        h[..8].copy_from_slice(&self.l2_lo.to_le_bytes());
        h[8..12].copy_from_slice(&self.l2_hi.to_le_bytes());
    }

    /// The IPv6 rewrite (both MACs, the hop limit less one; the checks refused a hop limit
    /// below 2): true if done, false for a frame too short to hold them.
    #[inline(always)]
    fn rewrite6<B: PacketBuf>(&self, b: &mut B) -> bool {
        let Some(h) = b.data_mut().get_mut(..22) else {
            return false;
        };
        self.write_l2(h);
        h[21] = h[21].wrapping_sub(1);
        true
    }

    /// Ethernet padding (or trailing junk) beyond the datagram: cut before rewriting.
    #[cold]
    #[inline(never)]
    fn trim_then_write4<B: PacketBuf>(&self, cut: usize, w2: u32, b: &mut B) -> u16 {
        if !b.trim(cut) {
            return NO_PORT;
        }
        self.write4(w2, b)
    }
}

/// A lookup's answer: no route.
const NO_ROUTE: NextHop = NextHop::MAX - 1;

/// The all-IPv4 loop's packet whose next hop `hop` is not the kept one: no route, a new
/// direct next hop (kept from now on), or an on-link or ECMP one (resolved for this packet,
/// not kept). Returns the egress port or [`NO_PORT`], and what is kept now. (`kept` goes in
/// and out by value: behind a reference it would live in memory, and the loop would reload
/// it for every packet.)
#[inline(never)]
fn other_hop4<B: PacketBuf>(
    t: &Tables,
    hop: NextHop,
    kept: Egress4,
    total: u32,
    len: u32,
    w2: u32,
    b: &mut B,
) -> (u16, Egress4) {
    if hop == NO_ROUTE {
        return (NO_PORT, kept);
    }
    match t.fast.get(hop as usize) {
        Some(f) if f.kind == FastKind::Direct => {
            let kept = Egress4 {
                hop,
                ..Egress4::of(f)
            };
            (kept.send4(total, len, w2, b), kept)
        }
        // On-link, ECMP or slow: as a mixed burst forwards it.
        _ => (forward4(t, Some(hop), total, len, w2, b), kept),
    }
}

/// The next hop of an on-link or ECMP route for the IPv4 packet `d` (see [`next_hop`]).
#[inline(never)]
fn resolve4(t: &Tables, hop: NextHop, d: &[u8]) -> Option<FastHop> {
    let h: &[u8; MIN_FRAME] = d.get(..MIN_FRAME)?.try_into().ok()?;
    let total = u16::from_be_bytes([h[16], h[17]]) as usize;
    next_hop(
        t,
        hop,
        |port| {
            let dst = u32::from_be_bytes([h[30], h[31], h[32], h[33]]);
            t.neigh4.get(&(port, dst)).copied()
        },
        || {
            let src = u32::from_be_bytes([h[26], h[27], h[28], h[29]]);
            let dst = u32::from_be_bytes([h[30], h[31], h[32], h[33]]);
            let proto = h[23];
            // As the slow path: fragments hash on addresses only.
            let fragment = u16::from_be_bytes([h[20], h[21]]) & 0x3fff != 0;
            let ports = if fragment {
                (0, 0)
            } else {
                // The transport header within the datagram, not the Ethernet padding.
                let l4 = d.get(MIN_FRAME..14 + total).unwrap_or(&[]);
                l4::ports(proto, l4).unwrap_or((0, 0))
            };
            flow_hash(src as u64, dst as u64, proto, ports)
        },
    )
}

/// The IPv4 header's bytes 22..26 (TTL, protocol, checksum; a little-endian word) after the
/// TTL is decremented. With TTL above 1 the 16-bit word (TTL, protocol) drops by exactly
/// 0x0100, so RFC 1624's `~HC + ~m + m'` is `~HC + 0xfeff`: the same sum
/// `checksum::update16` makes, without reading the old word. Lane-wise arithmetic only.
// The portable version; on x86-64 the worker runs `rows4` (tests run both).
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse4.1", not(test)),
    allow(dead_code)
)]
#[inline(always)]
fn ttl_word(w2: u32) -> u32 {
    let csum = ((w2 >> 8) & 0xff00) | (w2 >> 24);
    let mut s = (!csum & 0xffff) + 0xfeff;
    s = (s & 0xffff) + (s >> 16);
    let c = !s & 0xffff;
    (w2 & 0xff00) | ((w2 & 0xff).wrapping_sub(1) & 0xff) | ((c & 0xff00) << 8) | ((c & 0xff) << 24)
}

/// The IPv6 header checks: true, with the destination in `dst`, if the frame received on
/// `port` may take the fast path: unicast to us, version 6, TCP or UDP right after the fixed
/// header (no extension headers, no ICMPv6: ND and errors need the slow path), hop limit
/// above 1, the payload within the frame, and global-scope unicast addresses on both ends.
// Inline in the scan since `burst` itself is out of line (ferryd's own share of an IPv6
// capacity run 51.5% -> 48.4%; IPv4 unchanged). When `burst` was inlined into the worker's
// loop, inlining this made every IPv4 packet ~15 instructions longer.
//
// The destination is written through `dst`, not returned: an `Option<u128>` comes back in
// memory, written as two 8-byte halves and read as one 16-byte load, which the CPU cannot
// forward from the stores (a stall that was 9% of an IPv6 capacity run).
#[inline(always)]
fn check6(p: &RxPort, d: &[u8], dst: &mut u128, plen_out: &mut u32) -> bool {
    let Some(h) = d.first_chunk::<MIN_FRAME6>() else {
        return false;
    };
    let le = |i: usize| {
        u64::from_le_bytes([
            h[i],
            h[i + 1],
            h[i + 2],
            h[i + 3],
            h[i + 4],
            h[i + 5],
            h[i + 6],
            h[i + 7],
        ])
    };
    // Three words hold every field but the addresses. Each test leaves `bad` nonzero when
    // it fails, in plain arithmetic (as early returns they were a branch each, and as
    // booleans a flag move each, with the registers spilled).
    let (w0, w1, w2) = (le(0), le(8), le(16));
    // Bytes 0-5, the destination MAC; 12-13, the EtherType; the top nibble of 14, the version.
    let mut bad = (w0 ^ p.mac) << 16;
    bad |= ((w1 >> 32) & 0x00f0_ffff) ^ 0x0060_dd86;
    // Bytes 18-19, the payload length (big-endian): within the frame (the difference is
    // below 2^17 unless it wrapped).
    let plen = u64::from(((w2 >> 16) as u16).swap_bytes());
    bad |= (d.len() as u64).wrapping_sub(MIN_FRAME6 as u64 + plen) >> 63;
    // Byte 20, the next header, TCP or UDP (one factor zero); 21, the hop limit, above 1.
    let (next, hops) = ((w2 >> 32) & 0xff, (w2 >> 40) & 0xff);
    bad |= (next ^ u64::from(l4::PROTO_TCP)) * (next ^ u64::from(l4::PROTO_UDP));
    bad |= hops.wrapping_sub(2) >> 63;
    let (s0, s1, d0, d1) = (le(22), le(30), le(38), le(46));
    // Written whatever the verdict: the caller moves on to the next slot only for a
    // candidate, so a refused packet's address is overwritten.
    *dst = (u128::from(d0.swap_bytes()) << 64) | u128::from(d1.swap_bytes());
    *plen_out = plen as u32;
    (bad == 0) & (ordinary6(s0, s1) * ordinary6(d0, d1) != 0)
}

/// Nonzero (and below 2^24) if an IPv6 address, given as little-endian loads of its bytes
/// 0-7 and 8-15, is none of multicast (ff00::/8), link-local (fe80::/10), unspecified and
/// loopback, which take the slow path: a product of three factors, each zero for one kind.
#[inline(always)]
fn ordinary6(x0: u64, x1: u64) -> u64 {
    let not_multicast = (x0 & 0xff) ^ 0xff;
    let not_link_local = (x0 & 0xc0ff) ^ 0x80fe;
    // :: and ::1 are zero but for the last byte's low bit (bit 56 of x1).
    let high = x0 | (x1 & !(1 << 56));
    let not_low = (high | high.wrapping_neg()) >> 63;
    not_multicast * not_link_local * not_low
}

/// The reference for [`check6`], one test at a time.
#[cfg(test)]
#[inline(always)]
fn check6_fields(port: &PortTable, d: &[u8]) -> Option<u128> {
    let h: &[u8; MIN_FRAME6] = d.get(..MIN_FRAME6)?.try_into().ok()?;
    let dmac = [h[0], h[1], h[2], h[3], h[4], h[5]];
    if dmac != port.mac || [h[12], h[13]] != [0x86, 0xdd] || h[14] >> 4 != 6 {
        return None;
    }
    let plen = u16::from_be_bytes([h[18], h[19]]) as usize;
    let next = h[20];
    if MIN_FRAME6 + plen > d.len() || !(next == l4::PROTO_TCP || next == l4::PROTO_UDP) {
        return None;
    }
    if h[21] <= 1 {
        return None;
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(&h[22..38]);
    let src = u128::from_be_bytes(a);
    a.copy_from_slice(&h[38..54]);
    let dst = u128::from_be_bytes(a);
    // Independent of `ordinary6`, which `check6` uses.
    let special = |x: u128| {
        let a = std::net::Ipv6Addr::from(x);
        a.is_multicast() || a.is_unicast_link_local() || a.is_unspecified() || a.is_loopback()
    };
    if special(src) || special(dst) {
        return None;
    }
    Some(dst)
}

/// Forward a packet that passed [`check6`], whose destination looked up to `hop`, as
/// `forward4` does: MACs and hop limit, or `None` with the packet untouched.
#[inline(never)]
fn forward6<B: PacketBuf>(t: &Tables, hop: Option<NextHop>, b: &mut B) -> Option<u16> {
    let hop = hop?;
    let f = *t.fast.get(hop as usize)?;
    if f.kind == FastKind::Direct {
        return send6(&f, b);
    }
    send6(&resolve6(t, hop, b.data())?, b)
}

/// The next hop of an on-link or ECMP route for the IPv6 packet `d` (see [`next_hop`]).
#[inline(never)]
fn resolve6(t: &Tables, hop: NextHop, d: &[u8]) -> Option<FastHop> {
    let h: &[u8; MIN_FRAME6] = d.get(..MIN_FRAME6)?.try_into().ok()?;
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&h[at..at + 16]);
        u128::from_be_bytes(a)
    };
    let plen = u16::from_be_bytes([h[18], h[19]]) as usize;
    next_hop(
        t,
        hop,
        |port| t.neigh6.get(&(port, addr(38))).copied(),
        || {
            let (s, x) = (addr(22), addr(38));
            let l4 = d.get(MIN_FRAME6..MIN_FRAME6 + plen).unwrap_or(&[]);
            let ports = l4::ports(h[20], l4).unwrap_or((0, 0));
            flow_hash((s ^ (s >> 64)) as u64, (x ^ (x >> 64)) as u64, h[20], ports)
        },
    )
}

/// The end of [`forward6`] once the next hop `f` is known: the MTU, the trim of any
/// Ethernet padding, the rewrite (MACs, hop limit).
#[inline(always)]
fn send6<B: PacketBuf>(f: &FastHop, b: &mut B) -> Option<u16> {
    let d = b.data();
    let have = d.len();
    let d: &[u8; MIN_FRAME6] = d.get(..MIN_FRAME6)?.try_into().ok()?;
    let plen = u16::from_be_bytes([d[18], d[19]]) as usize;
    // The checks refused hop limits 0 and 1; this one keeps the decrement from wrapping.
    if 40 + plen > f.mtu as usize || d[21] <= 1 {
        return None;
    }
    if have > MIN_FRAME6 + plen && !b.trim(have - MIN_FRAME6 - plen) {
        return None;
    }
    let h: &mut [u8; MIN_FRAME6] = b.data_mut().get_mut(..MIN_FRAME6)?.try_into().ok()?;
    h[..12].copy_from_slice(&f.l2);
    h[21] -= 1;
    Some(f.port)
}

/// Per-burst state between the stages of [`burst`] (kept by the worker, never reallocated).
/// The IPv4 fields are columns, a slot each: what the rewrite needs (total length, the
/// rewritten TTL/checksum word, destination, frame length) and, for the portable checks only,
/// every field they test, so that they run over the whole burst as plain array arithmetic,
/// which the compiler turns into SIMD.
pub struct Stages {
    /// Destination MAC bytes 0-3 and 4-5 (little-endian), bytes 12-15 (EtherType and
    /// version/IHL, and the TOS the checks mask off) (the portable checks only).
    #[cfg_attr(
        all(target_arch = "x86_64", target_feature = "sse4.1", not(test)),
        allow(dead_code)
    )]
    mac_lo: [u32; BURST],
    #[cfg_attr(
        all(target_arch = "x86_64", target_feature = "sse4.1", not(test)),
        allow(dead_code)
    )]
    mac_hi: [u32; BURST],
    #[cfg_attr(
        all(target_arch = "x86_64", target_feature = "sse4.1", not(test)),
        allow(dead_code)
    )]
    ty: [u32; BURST],
    /// Frame length.
    len: [u32; BURST],
    /// The five 32-bit words of the IPv4 header (little-endian loads of bytes 14..34) (the
    /// portable checks only).
    #[cfg_attr(
        all(target_arch = "x86_64", target_feature = "sse4.1", not(test)),
        allow(dead_code)
    )]
    w: [[u32; BURST]; 5],
    /// From the checks: IPv4 total length, and the rewritten bytes 22..26 ([`ttl_word`]).
    tot: [u32; BURST],
    w2n: [u32; BURST],
    /// IPv4 destinations (host order) and their first-level FIB entries
    /// ([`Lpm4::first_level`](crate::lpm::Lpm4::first_level)), a slot each.
    dst4: [u32; BURST],
    lvl1: [u32; BURST],
    /// IPv6 destinations and next hops, a slot each (meaningful for the candidates not
    /// done only).
    dst6: [u128; BURST],
    hop6: [Option<NextHop>; BURST],
    /// The egress of each slot the fast path forwarded.
    egress: [u16; BURST],
    /// Set by the caller: the burst comes from a port whose NIC flags its IPv4 checksum
    /// verdict ([`PacketBuf::ip_cksum_good`]), so the flags are worth reading (else they are
    /// not read: a few instructions a packet saved on every other PMD).
    pub nic_cksum: bool,
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            mac_lo: [0; BURST],
            mac_hi: [0; BURST],
            ty: [0; BURST],
            len: [0; BURST],
            w: [[0; BURST]; 5],
            tot: [0; BURST],
            w2n: [0; BURST],
            dst4: [0; BURST],
            lvl1: [0; BURST],
            dst6: [0; BURST],
            hop6: [None; BURST],
            egress: [0; BURST],
            nic_cksum: false,
        }
    }
}

// The candidates of a burst are a bit each in a u64.
const _: () = assert!(BURST <= 64);

/// How [`burst`] handed the packets over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    /// Each packet went to `emit`, in arrival order; the slots are empty.
    Emitted,
    /// Every packet was forwarded to this port and left, rewritten, in its slot: the caller
    /// queues the slots as a whole (the common burst, with no per-packet hand-off).
    AllTo(u16),
}

/// What the checks of one family found, and did, besides the columns they fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Found {
    /// The slots that may take the fast path, a bit each.
    ok: u64,
    /// Of those, the ones already rewritten for the predicted next hop ([`Predict4`],
    /// [`Predict6`]).
    done: u64,
}

impl Found {
    const NONE: Found = Found { ok: 0, done: 0 };
}

/// The next hop a burst is predicted to take: the direct one that its first slot's
/// destination reads in the first level of the FIB. A slot whose checks pass, whose
/// destination reads the same entry (so the lookup ends there, at this hop), that fits the
/// hop's MTU and fills its frame (no padding to cut) is rewritten for it as soon as it is
/// checked: in the usual burst, every slot, and the burst needs no other pass. A wrong or
/// missing prediction costs a compare per slot; the rest of the burst takes the other paths.
#[derive(Clone, Copy)]
struct Predict4 {
    /// The first-level entry (a route, not a pointer to a second level).
    entry: u32,
    /// The hop; with no prediction, an MTU of 0, which no datagram fits.
    e: Egress4,
}

impl Predict4 {
    const NONE: Predict4 = Predict4 {
        entry: 0,
        e: Egress4::NONE,
    };

    /// From the first slot: its destination (bytes 30..34, whatever the frame is; the
    /// checks decide the rest) and the entry that decides it, if that is a direct hop.
    #[inline]
    fn of<B: PacketBuf>(t: &Tables, bufs: &[Option<B>]) -> Predict4 {
        let Some([a, b, c, _]) = first_bytes::<4, B>(bufs, 30) else {
            return Predict4::NONE;
        };
        let entry = t.fib4.first_level()[u32::from_be_bytes([0, a, b, c]) as usize];
        match direct(t, crate::lpm::Lpm4::first_level_hop(entry)) {
            Some(f) => Predict4 {
                entry,
                e: Egress4::of(f),
            },
            None => Predict4::NONE,
        }
    }

    /// Whether a slot whose checks passed takes this hop now (see above), from its
    /// first-level entry, total length and frame length.
    #[cfg_attr(
        all(target_arch = "x86_64", target_feature = "sse4.1", not(test)),
        allow(dead_code)
    )]
    #[inline(always)]
    fn takes(&self, lvl1: u32, total: u32, len: u32) -> bool {
        (lvl1 == self.entry) & (total <= u32::from(self.e.mtu)) & (len == total + 14)
    }
}

/// Bytes `at..at + N` of the burst's first slot, if it holds a frame that long (what a
/// prediction reads, whatever the frame is: the checks decide the rest).
#[inline(always)]
fn first_bytes<const N: usize, B: PacketBuf>(bufs: &[Option<B>], at: usize) -> Option<[u8; N]> {
    let d = bufs.first()?.as_ref()?.data();
    d.get(at..at + N)?.try_into().ok()
}

/// The flattened next hop `hop`, if it is a direct one (a resolved gateway: the same MACs
/// for every packet).
#[inline(always)]
fn direct(t: &Tables, hop: Option<NextHop>) -> Option<&FastHop> {
    hop.and_then(|h| t.fast.get(h as usize))
        .filter(|f| f.kind == FastKind::Direct)
}

/// The next hop an IPv6 burst is predicted to take, as [`Predict4`] for IPv4: the direct
/// one its first slot's destination looks up to, with the leading bits of that destination
/// that decided the lookup ([`Lpm6::lookup_decided`](crate::lpm::Lpm6::lookup_decided)): a
/// destination that shares them looks up to the same hop.
#[derive(Clone, Copy)]
struct Predict6 {
    /// The deciding bits (host order: the address's first bits are the high ones), and the
    /// first destination's value of them.
    mask: u128,
    want: u128,
    /// The hop; with no prediction, an MTU of 0, which no datagram fits.
    e: Egress4,
}

impl Predict6 {
    const NONE: Predict6 = Predict6 {
        mask: 0,
        want: 0,
        e: Egress4::NONE,
    };

    /// From the first slot: its destination (bytes 38..54, whatever the frame is; the
    /// checks decide the rest) and the route that decides it, if its hop is a direct one.
    #[inline]
    fn of<B: PacketBuf>(t: &Tables, bufs: &[Option<B>]) -> Predict6 {
        let Some(d) = first_bytes::<16, B>(bufs, 38) else {
            return Predict6::NONE;
        };
        let d = u128::from_be_bytes(d);
        let (hop, decided) = t.fib6.lookup_decided(d);
        match direct(t, hop) {
            Some(f) => Predict6::at(d, decided, Egress4::of(f)),
            None => Predict6::NONE,
        }
    }

    /// The hop `e` for the destinations that share `d`'s first `decided` bits.
    #[inline(always)]
    fn at(d: u128, decided: u32, e: Egress4) -> Predict6 {
        let mask = u128::MAX.checked_shl(128 - decided.min(128)).unwrap_or(0);
        Predict6 {
            mask,
            want: d & mask,
            e,
        }
    }

    /// Whether a slot whose checks passed takes this hop now, from its destination, payload
    /// length and frame length: the deciding bits are the prediction's, the datagram fits
    /// the hop's MTU and fills its frame.
    #[inline(always)]
    fn takes(&self, dst: u128, plen: u32, len: u32) -> bool {
        ((dst ^ self.want) & self.mask == 0)
            & (plen + 40 <= u32::from(self.e.mtu))
            & (len == plen + MIN_FRAME6 as u32)
    }
}

/// The portable path's rewrite of the slots in `ok` that take the predicted hop (the SSE
/// rows rewrite them as they check them): their bits, as [`Found::done`].
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse4.1", not(test)),
    allow(dead_code)
)]
fn rewrite_predicted<B: PacketBuf>(
    pre: &Predict4,
    ok: u64,
    bufs: &mut [Option<B>],
    st: &Stages,
) -> u64 {
    let mut done = 0;
    for (i, b) in bufs.iter_mut().enumerate().take(BURST) {
        if ok & (1 << i) != 0
            && pre.takes(st.lvl1[i], st.tot[i], st.len[i])
            && b.as_mut().is_some_and(|b| pre.e.rewrite4(st.w2n[i], b))
        {
            done |= 1 << i;
        }
    }
    done
}

/// Gather the IPv4 check fields of every slot into `st` (a column per field). A slot that
/// cannot be IPv4-forwarded (empty, chained, too short) gets an EtherType that fails.
/// With `NIC`, returns true if the NIC vouched for the IPv4 header checksum of every buffer
/// (see [`PacketBuf::ip_cksum_good`]); without, reads no flag and returns false.
// The portable version; on x86-64 the worker runs `rows4` (tests run both).
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse4.1", not(test)),
    allow(dead_code)
)]
#[inline(always)]
fn gather4<const NIC: bool, B: PacketBuf>(
    fib: &crate::lpm::Lpm4,
    bufs: &[Option<B>],
    st: &mut Stages,
) -> bool {
    let mut vouched = NIC;
    // Hoisted: in the loop, the table's address was reloaded for every packet.
    let first = fib.first_level();
    // By index, with one bound that the compiler sees is at most BURST (no checks on the
    // columns, one loop exit).
    let n = bufs.len().min(BURST);
    #[allow(clippy::needless_range_loop)]
    for i in 0..n {
        let h = match &bufs[i] {
            Some(b) if b.contiguous() => {
                let d = b.data();
                st.len[i] = d.len() as u32;
                if NIC {
                    vouched &= b.ip_cksum_good();
                }
                d.get(..MIN_FRAME)
                    .and_then(|h| <&[u8; MIN_FRAME]>::try_from(h).ok())
            }
            _ => None,
        };
        let Some(h) = h else {
            st.ty[i] = 0;
            continue;
        };
        let le = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        st.mac_lo[i] = le(0);
        st.mac_hi[i] = u32::from(u16::from_le_bytes([h[4], h[5]]));
        // The whole word, masked by the checks: masked here, it became two narrow loads.
        st.ty[i] = le(12);
        for (k, w) in st.w.iter_mut().enumerate() {
            w[i] = le(14 + 4 * k);
        }
        // Bytes 30..34, the destination, are the last word: one load for both.
        let dst = st.w[4][i].swap_bytes();
        st.dst4[i] = dst;
        // The FIB load starts now (nothing waits on it here), so the burst's misses overlap
        // with the checks.
        st.lvl1[i] = first[(dst >> 8) as usize];
    }
    vouched
}

/// The IPv4 checks over a whole burst of gathered fields: bit `i` set if slot `i` may take
/// the fast path. The same tests as `check4` (held together by a property test), written
/// lane-wise without branches so they vectorise. Also fills the total-length and rewritten
/// TTL/checksum columns the rewrite uses. Only the first `n` lanes are the burst's: the
/// lanes are computed up to the next multiple of four (whole vectors; the rest hold an
/// earlier burst's fields, which the caller masks off), not all [`BURST`] of them, so that
/// a short burst (a lightly loaded port: one or two packets a poll) costs little.
/// `SUM`: verify the header checksum; false when the NIC has (every buffer flagged good).
// The portable version; on x86-64 the worker runs `rows4` (tests run both).
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse4.1", not(test)),
    allow(dead_code)
)]
#[inline(always)]
fn checks4<const SUM: bool>(p: &RxPort, st: &mut Stages, n: usize) -> u64 {
    let mut ok = [0u8; BURST];
    let (mlo, mhi) = (p.mac as u32, (p.mac >> 32) as u32);
    let lanes = n.next_multiple_of(4).min(BURST);
    // Lane i of every column: indexing keeps the loop a plain counted one that vectorises.
    #[allow(clippy::needless_range_loop)]
    for i in 0..lanes {
        let [w0, w1, w2, w3, w4] = [st.w[0][i], st.w[1][i], st.w[2][i], st.w[3][i], st.w[4][i]];
        // Bytes 16-17 (total length) are the top half of w0, bytes 22 (TTL) the bottom of w2.
        let total = ((w0 >> 8) & 0xff00) | (w0 >> 24);
        let ttl = w2 & 0xff;
        let (s, t) = (w3 & 0xff, w4 & 0xff);
        // RFC 1071: `s`, the plain sum of the ten 16-bit words, is a nonzero multiple of
        // 0xffff when the header is valid. The words are not split out: with `t` the five
        // 32-bit words summed (mod 2^32) and `h` their high halves summed,
        // s = t - 0xffff * h, exactly, since the true s is below 2^20. One fold then
        // suffices: c = (s & 0xffff) + (s >> 16) is at most 0xffff + 9 and keeps s mod
        // 0xffff, so a nonzero s is valid exactly when c is 0xffff.
        let sum_ok = !SUM || {
            let t = w0
                .wrapping_add(w1)
                .wrapping_add(w2)
                .wrapping_add(w3)
                .wrapping_add(w4);
            let h = (w0 >> 16) + (w1 >> 16) + (w2 >> 16) + (w3 >> 16) + (w4 >> 16);
            let s = t.wrapping_sub(h << 16).wrapping_add(h);
            (s & 0xffff) + (s >> 16) == 0xffff
        };
        let good = (st.mac_lo[i] == mlo)
            & (st.mac_hi[i] == mhi)
            & (st.ty[i] & 0x00ff_ffff == 0x0045_0008)
            & (total >= 20)
            & (total + 14 <= st.len[i])
            & (ttl > 1)
            & (s < 224)
            & (s != 127)
            & (w3 != 0)
            & (t < 224)
            & (t != 127)
            & sum_ok;
        ok[i] = good as u8;
        st.tot[i] = total;
        st.w2n[i] = ttl_word(w2);
    }
    mask_of(&ok)
}

/// The bit mask of a burst's lane verdicts (each 0 or 1): eight lanes at a time, one
/// multiply gathers the low bit of each byte into the top byte (byte `j` of the constant is
/// `1 << (7 - j)`, so lane `i` lands on bit `56 + i`, and no two products share a bit).
/// Lane by lane it was a hundred shifts and ors a burst.
// The portable version; on x86-64 the worker runs `rows4` (tests run both).
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse4.1", not(test)),
    allow(dead_code)
)]
#[inline(always)]
fn mask_of(ok: &[u8; BURST]) -> u64 {
    const {
        assert!(
            BURST.is_multiple_of(8) && BURST <= 64,
            "whole groups of 8 lanes, in a u64"
        )
    };
    ok.chunks_exact(8).enumerate().fold(0u64, |m, (k, c)| {
        let c: [u8; 8] = c.try_into().unwrap_or_default();
        let bits = u64::from_le_bytes(c).wrapping_mul(0x0102_0408_1020_4080) >> 56;
        m | (bits << (8 * k))
    })
}

/// The IPv4 gather and checks of a burst (see [`checks4`]), and the rewrite of the slots
/// that take the predicted next hop: which slots may take the fast path, and which of them
/// are done ([`Found`]); `st.tot`, `st.w2n`, `st.dst4`, `st.lvl1` and `st.len` filled for
/// those that may and are not done (the paths after read no other).
/// With the portable checks, a burst the NIC vouched for skips the checksum (~10% of the
/// path's cycles); the SSE rows verify it always, which costs them less than reading the
/// flags.
#[inline(always)]
fn ipv4_checks<B: PacketBuf>(
    fib: &crate::lpm::Lpm4,
    p: &RxPort,
    pre: &Predict4,
    bufs: &mut [Option<B>],
    st: &mut Stages,
) -> Found {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse4.1"))]
    {
        let first = fib.first_level();
        rows4::gather_checks(first, p, pre, bufs, st)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse4.1")))]
    {
        let n = bufs.len().min(BURST);
        let vouched = if st.nic_cksum {
            gather4::<true, B>(fib, bufs, st)
        } else {
            gather4::<false, B>(fib, bufs, st)
        };
        let ok = if vouched {
            checks4::<false>(p, st, n)
        } else {
            checks4::<true>(p, st, n)
        };
        let done = rewrite_predicted(pre, ok, &mut bufs[..n], st);
        Found { ok, done }
    }
}

/// Run a burst (at most [`BURST`] packets received on `port`) in stages, as l3fwd does:
/// header checks for the whole burst, the FIB lookups, then the rewrite.
/// If every packet was forwarded to one port, they stay in their slots and the result is
/// [`Done::AllTo`]; otherwise, in arrival order, `emit(Some(egress), buf)` for each packet
/// the fast path rewrote and `emit(None, buf)` (untouched) for each the slow path must take.
/// `port` is `None` for a port the fast path does not serve (the kernel side); a tagged port
/// sends everything to the slow path too. A `None` slot is skipped.
// Not inlined into the worker's loop: on its own, the burst keeps its columns' indices and
// the kept next hop in registers (inlined, they were spilled around the loop's state).
#[inline(never)]
pub fn burst<B: PacketBuf>(
    t: &Tables,
    port: Option<&PortTable>,
    bufs: &mut [Option<B>],
    st: &mut Stages,
    emit: impl FnMut(Option<u16>, B),
) -> Done {
    let n = bufs.len().min(BURST);
    let bufs = &mut bufs[..n];
    let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    // Slots that are IPv4 / IPv6 candidates, a bit each.
    let (mut v4, mut v6) = (0u64, 0u64);
    let (mut found, mut found6) = (Found::NONE, Found::NONE);
    let mut pre = Predict4::NONE;
    // The port of the IPv6 frames done for a predicted hop (only an IPv6-led burst has one).
    let mut port6 = NO_PORT;
    if let Some(p) = port.filter(|p| p.vlan.is_none()).map(RxPort::new) {
        // A burst that starts with IPv6 is checked for IPv6 first (and its next hop
        // predicted for IPv6), so that a burst of IPv6 does not pay for the IPv4 columns.
        let lead6 = bufs
            .first()
            .and_then(Option::as_ref)
            .is_some_and(|b| b.data().get(12..14) == Some(&[0x86, 0xdd][..]));
        if lead6 {
            let pre6 = Predict6::of(t, bufs);
            port6 = pre6.e.port;
            found6 = ipv6_checks(&p, &pre6, bufs, st, 0);
            v6 = found6.ok & all;
        }
        if v6 != all {
            if !lead6 {
                pre = Predict4::of(t, bufs);
            }
            found = ipv4_checks(&t.fib4, &p, &pre, bufs, st);
            v4 = found.ok & all & !v6;
            if !lead6 && v4 != all {
                found6 = ipv6_checks(&p, &Predict6::NONE, bufs, st, v4);
                v6 = found6.ok & all;
            }
        }
    }
    if v4 == all && n > 0 {
        // Only IPv4 candidates (the usual burst). The usual burst goes to one direct next
        // hop, the one predicted from its first packet, and the checks have rewritten every
        // packet for it: it stays in its slots for the caller to queue at once.
        if found.done == all {
            return Done::AllTo(pre.e.port);
        }
        // Otherwise, packet by packet (but for those done), each looked up from its
        // first-level entry. Consecutive packets mostly share a next hop, so the last direct
        // next hop is kept: the packet after it costs a compare, not a table load and its
        // checks. (On-link and ECMP hops depend on the packet: not kept.)
        // Every column cut to the burst's length, so that indexing them by slot is provably
        // in bounds (no check per packet).
        let (dst4, tot, len, w2n) = (&st.dst4[..n], &st.tot[..n], &st.len[..n], &st.w2n[..n]);
        let (lvl1, egress) = (&st.lvl1[..n], &mut st.egress[..n]);
        let bufs = &mut bufs[..n]; // (already n long; cut again, the compiler sees it)
        let mut kept = Egress4::NONE;
        #[allow(clippy::needless_range_loop)]
        for i in 0..n {
            let Some(b) = &mut bufs[i] else {
                egress[i] = NO_PORT;
                continue;
            };
            if found.done & (1 << i) != 0 {
                egress[i] = pre.e.port;
                continue;
            }
            let hop = t.fib4.lookup_from(lvl1[i], dst4[i]).unwrap_or(NO_ROUTE);
            egress[i] = if hop == kept.hop {
                kept.send4(tot[i], len[i], w2n[i], b)
            } else {
                let (out, k) = other_hop4(t, hop, kept, tot[i], len[i], w2n[i], b);
                kept = k;
                out
            };
        }
        return hand_over(bufs, egress, emit);
    }
    // Every lane starts "not forwarded"; the loops below write the egress of what they
    // forward, and nothing else (no bit mask kept per packet alongside). (The all-IPv4 loops
    // above write every lane.)
    if found6.done == all && n > 0 {
        // Only IPv6 (the usual IPv6 burst), every packet rewritten by the checks for the hop
        // predicted from the first: it stays in its slots.
        return Done::AllTo(port6);
    }
    st.egress[..n].fill(NO_PORT);
    if v6 == all && n > 0 {
        // Only IPv6 candidates: the destinations (but for those done) are looked up
        // together, then each packet is rewritten, keeping the last direct next hop as the
        // IPv4 loop does.
        t.fib6.lookup_bulk(&st.dst6[..n], &mut st.hop6[..n]);
        let (mut last, mut lf) = (NO_HOP, FastHop::default());
        for (i, slot) in bufs.iter_mut().enumerate() {
            let Some(b) = slot else { continue };
            if found6.done & (1 << i) != 0 {
                st.egress[i] = port6;
                continue;
            }
            let Some(hop) = st.hop6[i] else { continue };
            let out = if hop == last {
                send6(&lf, b)
            } else {
                match t.fast.get(hop as usize) {
                    Some(f) if f.kind == FastKind::Direct => {
                        (last, lf) = (hop, *f);
                        send6(&lf, b)
                    }
                    Some(_) => resolve6(t, hop, b.data()).and_then(|f| send6(&f, b)),
                    None => None,
                }
            };
            if let Some(out) = out {
                st.egress[i] = out;
            }
        }
        return hand_over(bufs, &st.egress, emit);
    }
    if v6 != 0 {
        // (The lanes done look up what their stale columns hold: not read.)
        t.fib6.lookup_bulk(&st.dst6[..n], &mut st.hop6[..n]);
    }
    // Mixed or IPv6: the same, per family.
    for (i, slot) in bufs.iter_mut().enumerate() {
        let Some(b) = slot else { continue };
        st.egress[i] = if found.done & (1 << i) != 0 {
            pre.e.port
        } else if found6.done & (1 << i) != 0 {
            port6
        } else if v4 & (1 << i) != 0 {
            // From the first-level entry the gather read.
            let hop = t.fib4.lookup_from(st.lvl1[i], st.dst4[i]);
            forward4(t, hop, st.tot[i], st.len[i], st.w2n[i], b)
        } else if v6 & (1 << i) != 0 {
            forward6(t, st.hop6[i], b).unwrap_or(NO_PORT)
        } else {
            NO_PORT
        };
    }
    hand_over(bufs, &st.egress, emit)
}

/// The egress lane of a slot the fast path did not forward.
const NO_PORT: u16 = u16::MAX;

/// The port every one of the first `n` slots was forwarded to, if they all were and to one
/// port: lane-wise, after the loop (vector compares, not a test per packet in the loop).
#[inline(always)]
fn all_to(egress: &[u16], n: usize) -> Option<u16> {
    let egress = &egress[..n.min(egress.len())];
    let e0 = *egress.first()?;
    let one = egress.iter().fold(true, |a, &e| a & (e == e0));
    (one && e0 != NO_PORT).then_some(e0)
}

/// The IPv6 checks over the slots not in `skip`, and the rewrite of those that take the
/// predicted next hop: which slots may take the fast path, and which of them are done
/// ([`Found`]); `st.dst6` filled for those that may and are not done (the paths after read
/// no other column).
// Out of line, as `burst` is: on its own, the scan keeps its constants in registers.
#[inline(never)]
fn ipv6_checks<B: PacketBuf>(
    p: &RxPort,
    pre: &Predict6,
    bufs: &mut [Option<B>],
    st: &mut Stages,
    skip: u64,
) -> Found {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse4.1"))]
    {
        rows6::scan_checks(p, pre, bufs, st, skip)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse4.1")))]
    {
        scan6(p, pre, bufs, st, skip)
    }
}

/// [`ipv6_checks`], a frame at a time with [`check6`]: the portable version (on x86-64 the
/// worker runs `rows6`; tests run both). Writes the columns of every slot it checks.
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse4.1", not(test)),
    allow(dead_code)
)]
#[inline(always)]
fn scan6<B: PacketBuf>(
    p: &RxPort,
    pre: &Predict6,
    bufs: &mut [Option<B>],
    st: &mut Stages,
    skip: u64,
) -> Found {
    let mut found = Found::NONE;
    for (i, (b, dst)) in bufs.iter_mut().zip(st.dst6.iter_mut()).enumerate() {
        let (mut plen, mut len) = (0, 0);
        let ok = (skip >> i) & 1 == 0
            && b.as_ref().is_some_and(|b| {
                let d = b.data();
                len = d.len() as u32;
                b.contiguous() && check6(p, d, dst, &mut plen)
            });
        found.ok |= u64::from(ok) << i;
        if ok && pre.takes(*dst, plen, len) && b.as_mut().is_some_and(|b| pre.e.rewrite6(b)) {
            found.done |= 1 << i;
        }
    }
    found
}

/// The end of a burst: all of it to one port ([`Done::AllTo`], left in the slots; an empty
/// burst is not one), or every packet to `emit` in order, `Some(egress)` for the slots the
/// fast path forwarded (an egress lane other than [`NO_PORT`]).
#[inline(always)]
fn hand_over<B: PacketBuf>(
    bufs: &mut [Option<B>],
    egress: &[u16],
    mut emit: impl FnMut(Option<u16>, B),
) -> Done {
    if let Some(p) = all_to(egress, bufs.len()) {
        return Done::AllTo(p);
    }
    for (slot, &e) in bufs.iter_mut().zip(egress.iter()) {
        if let Some(b) = slot.take() {
            emit((e != NO_PORT).then_some(e), b);
        }
    }
    Done::Emitted
}

/// [`burst`], with every packet handed to `emit` whatever the outcome (tests and benches).
pub fn burst_each<B: PacketBuf>(
    t: &Tables,
    port: Option<&PortTable>,
    bufs: &mut [Option<B>],
    st: &mut Stages,
    mut emit: impl FnMut(Option<u16>, B),
) {
    if let Done::AllTo(p) = burst(t, port, bufs, st, &mut emit) {
        for b in bufs.iter_mut().filter_map(Option::take) {
            emit(Some(p), b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::TestBuf;
    use crate::wire::checksum;
    use proptest::prelude::*;

    /// A frame whose IPv4 header (bytes 14..34) is `hdr` with version/IHL 0x45; with `fix`,
    /// its checksum field is set so the header is valid.
    fn frame(hdr: [u8; 20], fix: bool) -> [u8; MIN_FRAME] {
        let mut f = [0u8; MIN_FRAME];
        f[14..].copy_from_slice(&hdr);
        f[14] = 0x45;
        if fix {
            fix_checksum(&mut f);
        }
        f
    }

    /// Set the checksum of the IPv4 header at bytes 14..34 so that the header is valid.
    fn fix_checksum(f: &mut [u8]) {
        f[24..26].fill(0);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }

    /// `d` with its IPv4 header checksum made valid (if it is long enough to have one).
    fn fix_checksum_copy(d: &[u8]) -> Vec<u8> {
        let mut f = d.to_vec();
        if f.len() >= MIN_FRAME {
            fix_checksum(&mut f);
        }
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// The remainder test agrees with RFC 1071 computed from scratch, on valid headers
        /// and on arbitrary (almost always invalid) ones.
        #[test]
        fn header_checksum_matches_rfc1071(hdr in any::<[u8; 20]>(), fix in any::<bool>()) {
            let f = frame(hdr, fix);
            let valid = checksum::checksum(&f[14..34]) == 0;
            prop_assert_eq!(header_checksum_ok(&f), valid);
            if fix {
                prop_assert!(valid);
            }
        }

        /// ttl_word's constant update gives the bytes RFC 1624 (`checksum::update16`) gives,
        /// and a valid header stays valid.
        #[test]
        fn ttl_update_matches_rfc1624(hdr in any::<[u8; 20]>(), ttl in 2u8..=255, fix in any::<bool>()) {
            let mut f = frame(hdr, false);
            f[22] = ttl;
            let f = if fix { frame(f[14..34].try_into().unwrap(), true) } else { f };
            let old = u16::from_be_bytes([f[24], f[25]]);
            let want = checksum::update16(
                old,
                u16::from_be_bytes([ttl, f[23]]),
                u16::from_be_bytes([ttl - 1, f[23]]),
            );
            let hop = FastHop { l2: [7; 12], port: 1, mtu: 1500, kind: FastKind::Direct };
            let mut b = TestBuf::new(&f);
            let w2 = ttl_word(u32::from_le_bytes([f[22], f[23], f[24], f[25]]));
            prop_assert_eq!(Egress4::of(&hop).write4(w2, &mut b), 1);
            let g = b.data();
            prop_assert_eq!(u16::from_be_bytes([g[24], g[25]]), want);
            prop_assert_eq!(g[22], ttl - 1);
            prop_assert_eq!(g[23], f[23]);
            prop_assert_eq!(&g[..12], &[7u8; 12][..]);
            prop_assert_eq!(&g[12..22], &f[12..22]);
            prop_assert_eq!(&g[26..], &f[26..]);
            if fix {
                prop_assert_eq!(checksum::checksum(&g[14..34]), 0);
            }
        }
    }

    /// One mutation of a good frame: (index, byte, index, byte, fix the checksum, length,
    /// kind: 0 an empty slot, 2 cut to `length`, 3 padded to it, >= 4 a second byte changed).
    type Mut = (usize, u8, usize, u8, bool, usize, u8);

    /// Bursts of 1 to [`BURST`] mutations.
    fn mutations() -> impl Strategy<Value = Vec<Mut>> {
        proptest::collection::vec(
            (
                0usize..34,
                any::<u8>(),
                0usize..34,
                any::<u8>(),
                any::<bool>(),
                0usize..70,
                0u8..8,
            ),
            1..=BURST,
        )
    }

    /// Frames from good ones, one per mutation; `nic` 1: a NIC that flags the frames whose
    /// checksum it found good; 2: one that flags every frame good (wrongly, for a bad one).
    fn mutated_bufs(mac: [u8; 6], muts: &[Mut], nic: u8) -> Vec<Option<TestBuf>> {
        muts.iter()
            .map(|&(a, x, b, y, fix, len, kind)| {
                if kind == 0 {
                    return None;
                }
                let mut f = good_frame(mac);
                f[a] = x;
                if kind >= 4 {
                    f[b] = y;
                }
                if fix {
                    fix_checksum(&mut f);
                }
                if kind == 2 {
                    f.truncate(len);
                } else if kind == 3 {
                    f.resize(len.max(60), 0);
                }
                let mut b = TestBuf::new(&f);
                let good =
                    f.len() >= MIN_FRAME && header_checksum_ok(f[..MIN_FRAME].try_into().unwrap());
                b.ip_cksum_good = nic == 2 || (nic == 1 && good);
                Some(b)
            })
            .collect()
    }

    /// A good IPv6 UDP frame to `mac` (2001:db8::1 -> 2001:db8:1::1, hop limit 64), with
    /// `payload` bytes after the fixed header.
    fn good_frame6(mac: [u8; 6], payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; MIN_FRAME6 + payload];
        f[..6].copy_from_slice(&mac);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&(payload as u16).to_be_bytes());
        f[20] = 17;
        f[21] = 64;
        f[22..24].copy_from_slice(&[0x20, 0x01]);
        f[24..26].copy_from_slice(&[0x0d, 0xb8]);
        f[37] = 1;
        f[38..40].copy_from_slice(&[0x20, 0x01]);
        f[40..42].copy_from_slice(&[0x0d, 0xb8]);
        f[43] = 1;
        f[53] = 1;
        f
    }

    proptest! {
        /// The branchless IPv6 checks give the one-test-at-a-time reference's verdict and
        /// destination, on good frames with up to three bytes changed (from the fields each
        /// test reads), cut short or padded.
        #[test]
        fn check6_matches_its_reference(
            hops in prop_oneof![3 => Just(64u8), 2 => 0u8..3, 1 => any::<u8>()],
            next in prop_oneof![3 => Just(17u8), 2 => Just(6), 1 => Just(58), 1 => any::<u8>()],
            ver in prop_oneof![3 => Just(0x60u8), 1 => Just(0x6f), 1 => any::<u8>()],
            ty in prop_oneof![3 => Just([0x86u8, 0xdd]), 1 => Just([0x08, 0x00]), 1 => any::<[u8; 2]>()],
            muts in proptest::collection::vec((0usize..54, any::<u8>()), 0..2),
            special in proptest::collection::vec(
                (prop_oneof![Just(22usize), Just(38)], prop_oneof![Just(0xffu8), Just(0xfe), Just(0)], any::<u8>()),
                0..2,
            ),
            payload in 8usize..40,
            len in prop_oneof![3 => Just(None), 1 => (0usize..100).prop_map(Some)],
        ) {
            let mac = [2, 0xfe, 0, 0, 1, 1];
            let port = test_port(mac);
            let mut f = good_frame6(mac, payload);
            f[21] = hops;
            f[20] = next;
            f[14] = ver;
            f[12..14].copy_from_slice(&ty);
            for &(i, x) in &muts {
                f[i] = x;
            }
            // Addresses that are (or are near) the special ones: ff.., fe80::/10 and its
            // neighbours, ::, ::1, ::2, ::3.
            for &(at, first, second) in &special {
                f[at..at + 16].fill(0);
                f[at] = first;
                f[at + 1] = second;
                if first == 0 {
                    f[at + 1] = 0;
                    f[at + 15] = second & 3;
                }
            }
            // Cut short or padded.
            if let Some(len) = len {
                f.resize(len, 0);
            }
            let (mut dst, mut plen) = (0u128, 0u32);
            let got = check6(&RxPort::new(&port), &f, &mut dst, &mut plen);
            let want = check6_fields(&port, &f);
            prop_assert_eq!(got, want.is_some());
            if let Some(w) = want {
                prop_assert_eq!(dst, w);
                prop_assert_eq!(plen, u32::from(u16::from_be_bytes([f[18], f[19]])));
            }
        }
    }

    /// A good 60-byte frame to `mac` (198.18.0.1 -> 10.253.0.1, UDP, TTL 64).
    fn good_frame(mac: [u8; 6]) -> Vec<u8> {
        let mut hdr = [0u8; 20];
        hdr[2..4].copy_from_slice(&46u16.to_be_bytes());
        hdr[8] = 64;
        hdr[9] = 17;
        hdr[12..16].copy_from_slice(&[198, 18, 0, 1]);
        hdr[16..20].copy_from_slice(&[10, 253, 0, 1]);
        let mut f = vec![0u8; 60];
        f[..MIN_FRAME].copy_from_slice(&frame(hdr, true));
        f[..6].copy_from_slice(&mac);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    fn test_port(mac: [u8; 6]) -> PortTable {
        PortTable {
            name: "a".into(),
            mac,
            mtu: 1500,
            vlan: None,
            v4: vec![],
            v6: vec![],
            kernel: false,
            nat4: Vec::new(),
            nat6: Vec::new(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// The burst-wide checks (gathered columns, lane-wise arithmetic) pass exactly the
        /// slots the scalar reference `check4` passes: good frames with one or two random
        /// byte changes in the first 34 bytes, with or without the checksum fixed after,
        /// cut short or padded, and empty slots, in bursts of 1 to 32 (the lanes beyond the
        /// burst hold the previous burst's values and must not count).
        #[test]
        fn burst_checks_match_check4(
            muts in mutations(),
            nic in 0u8..3,
        ) {
            let mac = [2, 0xfe, 0, 0, 1, 1];
            let port = test_port(mac);
            let p = RxPort::new(&port);
            let fib = crate::lpm::Lpm4::build(&[]).unwrap();
            let mut st = Stages::default();
            // A first, full burst of good frames leaves every lane "good".
            let full: Vec<Option<TestBuf>> =
                (0..BURST).map(|_| Some(TestBuf::new(&good_frame(mac)))).collect();
            prop_assert!(!gather4::<true, _>(&fib, &full, &mut st));
            prop_assert_eq!(checks4::<true>(&p, &mut st, BURST), u64::MAX >> (64 - BURST));
            let bufs = mutated_bufs(mac, &muts, nic);
            // Without NIC, no flag is read.
            prop_assert!(!gather4::<false, _>(&fib, &bufs, &mut st));
            let vouched = gather4::<true, _>(&fib, &bufs, &mut st);
            let flagged = bufs.iter().flatten().all(|b| b.ip_cksum_good);
            prop_assert_eq!(vouched, flagged);
            let all = (1u64 << bufs.len()) - 1;
            let got = if vouched {
                checks4::<false>(&p, &mut st, bufs.len())
            } else {
                checks4::<true>(&p, &mut st, bufs.len())
            } & all;
            // The single-packet check, trusting the NIC's word on the checksum as the burst
            // does when every buffer carries it (a frame whose checksum is the only fault
            // then passes).
            let want = bufs.iter().enumerate().fold(0u64, |m, (i, b)| {
                let pass = b.as_ref().is_some_and(|b| {
                    check4(&p, b.data()).is_some()
                        || (vouched && check4(&p, &fix_checksum_copy(b.data())).is_some())
                });
                m | (u64::from(pass) << i)
            });
            prop_assert_eq!(got, want);
        }

        /// The SSE version (four frames' rows transposed in registers) gives the portable
        /// version's verdicts (with the checksum verified), lane for lane, and the same total
        /// length, rewritten TTL/checksum word, destination, first-level FIB entry and frame
        /// length for every lane that passes and is not done; the same over a previous
        /// burst's leftovers; and it rewrites for a predicted hop (the first frame's entry,
        /// or none) exactly the
        /// frames the portable version rewrites, byte for byte: those that read its entry,
        /// fit its MTU (around the good frames' 46 bytes) and fill their frames.
        #[cfg(all(target_arch = "x86_64", target_feature = "sse4.1"))]
        #[test]
        fn rows4_matches_the_portable_checks(
            muts in mutations(),
            nic in 0u8..3,
            ttl in 0u8..=255,
            mtu in prop::sample::select(vec![0u16, 45, 46, 1500]),
            predicted in any::<bool>(),
        ) {
            let mac = [2, 0xfe, 0, 0, 1, 1];
            let port = test_port(mac);
            let p = RxPort::new(&port);
            // Routes whose first-level entries differ across the mutated destinations.
            let fib = crate::lpm::Lpm4::build(&[(0x0a00_0000, 8, 1), (0x0afd_0000, 16, 2), (0x0afd_0080, 25, 3)]).unwrap();
            let (mut a, mut b) = (Stages::default(), Stages::default());
            let mut first = good_frame(mac);
            first[22] = ttl;
            fix_checksum(&mut first);
            let full: Vec<Option<TestBuf>> =
                (0..BURST).map(|_| Some(TestBuf::new(&first))).collect();
            for bufs in [full, mutated_bufs(mac, &muts, nic)] {
                let n = bufs.len();
                let all = u64::MAX >> (64 - n);
                let dst0 = bufs[0].as_ref().and_then(|b| b.data().get(30..34)).map(|d| {
                    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
                });
                let pre = match dst0 {
                    Some(d) if predicted => Predict4 {
                        entry: fib.first_level()[(d >> 8) as usize],
                        e: Egress4 {
                            hop: NO_HOP,
                            l2_lo: 0x0807_0605_0403_0201,
                            l2_hi: 0x0c0b_0a09,
                            port: 7,
                            mtu,
                        },
                    },
                    _ => Predict4::NONE,
                };
                // The rows always sum: whatever the NIC flags say (`nic`), the portable
                // checks' verdicts when they sum.
                let (mut pa, mut pb) = (bufs.clone(), bufs.clone());
                prop_assert!(!gather4::<false, _>(&fib, &pa, &mut a));
                let want = checks4::<true>(&p, &mut a, n) & all;
                let done = rewrite_predicted(&pre, want, &mut pa, &a);
                let got = rows4::gather_checks(fib.first_level(), &p, &pre, &mut pb, &mut b);
                prop_assert_eq!(got, Found { ok: want, done });
                for i in (0..n).filter(|&i| want & !done & (1 << i) != 0) {
                    prop_assert_eq!(b.tot[i], a.tot[i]);
                    prop_assert_eq!(b.w2n[i], a.w2n[i]);
                    prop_assert_eq!(b.dst4[i], a.dst4[i]);
                    prop_assert_eq!(b.len[i], a.len[i]);
                    prop_assert_eq!(b.lvl1[i], a.lvl1[i]);
                }
                for (x, y) in pa.iter().zip(&pb) {
                    prop_assert_eq!(x.as_ref().map(|x| x.data()), y.as_ref().map(|y| y.data()));
                }
            }
        }
    }

    /// An IPv6 slot for the burst tests: empty (`None`), or a frame and whether it is the
    /// first segment of a chain. Most are good frames ([`good_frame6`]) to one of five
    /// destinations around the routes of `rows6_matches_the_portable_checks`
    /// (2001:db8:1::1, 2001:db8:1::2, 2001:db8:1:8000::1, 2001:db8:2::1, 2001:db8:1:8033::1),
    /// with a random hop limit and next header; some with up to two random byte changes,
    /// maybe a special source or destination (ff.., fe80::/10 and its neighbours, ::, ::1),
    /// cut short (to any length) or padded; some chained; some IPv4.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse4.1"))]
    fn slot6(mac: [u8; 6]) -> impl Strategy<Value = Option<(Vec<u8>, bool)>> {
        (
            (
                0u8..9,
                0u8..5,
                8usize..40,
                prop_oneof![3 => Just(64u8), 1 => 0u8..3],
                prop_oneof![4 => Just(17u8), 1 => Just(6), 1 => Just(58)],
            ),
            proptest::collection::vec((0usize..54, any::<u8>()), 0..3),
            prop_oneof![
                4 => Just(None),
                1 => (prop_oneof![Just(22usize), Just(38)], prop_oneof![Just(0xffu8), Just(0xfe), Just(0)], any::<u8>()).prop_map(Some),
            ],
            prop_oneof![4 => Just(0i32), 2 => -3i32..4, 1 => -94i32..-3],
        )
            .prop_map(move |((kind, to, payload, hops, next), muts, special, cut)| {
                if kind == 0 {
                    return None;
                }
                if kind == 1 {
                    return Some((good_frame(mac), false));
                }
                let mut f = good_frame6(mac, payload);
                match to {
                    0 => {}
                    1 => f[53] = 2,
                    2 => f[44] = 0x80,
                    3 => f[43] = 2,
                    _ => f[44..46].copy_from_slice(&[0x80, 0x33]),
                }
                f[20] = next;
                f[21] = hops;
                // Kinds 2-4 keep their fields (the usual burst is all good).
                if kind >= 5 {
                    for &(i, x) in &muts {
                        f[i] = x;
                    }
                    if let Some((at, first, second)) = special {
                        f[at..at + 16].fill(0);
                        f[at] = first;
                        f[at + 1] = second;
                        if first == 0 {
                            f[at + 1] = 0;
                            f[at + 15] = second & 3;
                        }
                    }
                    let len = (f.len() as i32 + cut).max(0) as usize;
                    f.resize(len, 0);
                }
                Some((f, kind == 2))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// The SSE version of the IPv6 checks (four frames' rows transposed in registers)
        /// gives the portable version's verdicts, which are the one-test-at-a-time
        /// reference's (`check6_fields`) for the contiguous slots not skipped, and the same
        /// destination for every slot that passes and is not done; the same over a
        /// previous burst's leftovers; and it rewrites for a predicted hop (the first
        /// frame's route, or none) exactly the frames the portable version rewrites, byte
        /// for byte: those whose destinations share the bits that decided the first one's
        /// lookup (so they look up to the same hop), fit its MTU (around the payloads' 8 to
        /// 40 bytes) and fill their frames.
        #[cfg(all(target_arch = "x86_64", target_feature = "sse4.1"))]
        #[test]
        fn rows6_matches_the_portable_checks(
            slots in proptest::collection::vec(slot6([2, 0xfe, 0, 0, 1, 1]), 1..=BURST),
            skip in prop_oneof![2 => Just(0u64), 1 => any::<u64>()],
            mtu in prop::sample::select(vec![0u16, 47, 48, 49, 60, 1500]),
            predicted in any::<bool>(),
        ) {
            let mac = [2, 0xfe, 0, 0, 1, 1];
            let port = test_port(mac);
            let p = RxPort::new(&port);
            // /48, /49 and /128 routes: the first lookup is decided after 56 bits (byte 6
            // read: 2001:db8:1:8000::/49 and its neighbours), 64 (byte 7) or 128.
            let fib = crate::lpm::Lpm6::build(&[
                (0x2001_0db8_0001u128 << 80, 48, 1),
                (0x2001_0db8_0001_8000u128 << 64, 49, 2),
                ((0x2001_0db8_0001u128 << 80) | 2, 128, 3),
            ])
            .unwrap();
            let (mut a, mut b) = (Stages::default(), Stages::default());
            let full = vec![Some((good_frame6(mac, 8), false)); BURST];
            let bufs_of = |v: &[Option<(Vec<u8>, bool)>]| -> Vec<Option<TestBuf>> {
                v.iter()
                    .map(|x| {
                        x.as_ref().map(|(f, chained)| {
                            let mut b = TestBuf::new(f);
                            b.chained = *chained;
                            b
                        })
                    })
                    .collect()
            };
            for (round, (frames, skip)) in [(full, 0), (slots, skip)].into_iter().enumerate() {
                let bufs = bufs_of(&frames);
                let n = bufs.len();
                let skip = skip & (u64::MAX >> (64 - n));
                let dst0 = bufs[0]
                    .as_ref()
                    .and_then(|b| b.data().get(38..54))
                    .map(|d| u128::from_be_bytes(d.try_into().unwrap()));
                let e = Egress4 {
                    hop: NO_HOP,
                    l2_lo: 0x0807_0605_0403_0201,
                    l2_hi: 0x0c0b_0a09,
                    port: 7,
                    mtu,
                };
                let pre = match dst0 {
                    Some(d) if predicted => Predict6::at(d, fib.lookup_decided(d).1, e),
                    _ => Predict6::NONE,
                };
                let (mut pa, mut pb) = (bufs.clone(), bufs.clone());
                let want = scan6(&p, &pre, &mut pa, &mut a, skip);
                let got = rows6::scan_checks(&p, &pre, &mut pb, &mut b, skip);
                prop_assert_eq!(got, want);
                if round == 0 {
                    // The usual burst: all good, all done for a hop whose MTU takes them.
                    let all = u64::MAX >> (64 - BURST);
                    prop_assert_eq!(want.ok, all);
                    prop_assert_eq!(want.done, if predicted && mtu >= 48 { all } else { 0 });
                }
                for i in (0..n).filter(|&i| want.ok & !want.done & (1 << i) != 0) {
                    prop_assert_eq!(b.dst6[i], a.dst6[i]);
                }
                for (i, x) in frames.iter().enumerate() {
                    let reference = x
                        .as_ref()
                        .filter(|(_, chained)| skip & (1 << i) == 0 && !chained)
                        .and_then(|(f, _)| check6_fields(&port, f));
                    prop_assert_eq!(want.ok & (1 << i) != 0, reference.is_some());
                    // A frame done looks up to the hop predicted for the first.
                    if let (Some(d), true) = (reference, want.done & (1 << i) != 0) {
                        prop_assert_eq!(fib.lookup(d), dst0.and_then(|d0| fib.lookup(d0)));
                    }
                }
                for (x, y) in pa.iter().zip(&pb) {
                    prop_assert_eq!(x.as_ref().map(|x| x.data()), y.as_ref().map(|y| y.data()));
                }
            }
        }
    }

    /// The checks refuse what they must, one field at a time, on an otherwise good frame.
    #[test]
    fn check4_refuses_each_bad_field() {
        let mac = [2, 0xfe, 0, 0, 1, 1];
        let port = test_port(mac);
        let p = RxPort::new(&port);
        let good = good_frame(mac);
        assert_eq!(check4(&p, &good), Some(0x0afd_0001));
        // (byte, new value, whether to fix the checksum afterwards)
        let cases: &[(usize, u8, bool)] = &[
            (0, 3, false),     // another destination MAC
            (5, 2, false),     // last byte of the MAC
            (12, 0x86, false), // not IPv4
            (14, 0x46, true),  // options
            (14, 0x55, true),  // version 5
            (16, 0x10, true),  // total length beyond the frame
            (17, 19, true),    // total length < 20 (with byte 16 zero)
            (22, 1, true),     // TTL 1
            (22, 0, true),     // TTL 0
            (26, 127, true),   // loopback source
            (26, 224, true),   // multicast source
            (30, 127, true),   // loopback destination
            (30, 239, true),   // multicast destination
            (30, 255, true),   // broadcast
            (25, 0x00, false), // bad checksum
        ];
        for &(at, v, fix) in cases {
            let mut f = good.clone();
            f[at] = v;
            if fix {
                fix_checksum(&mut f);
            }
            assert_eq!(check4(&p, &f), None, "byte {at} = {v:#x} must be refused");
        }
        let mut zero_src = good.clone();
        zero_src[26..30].fill(0);
        fix_checksum(&mut zero_src);
        assert_eq!(check4(&p, &zero_src), None, "source 0.0.0.0");
        assert_eq!(check4(&p, &good[..33]), None, "short frame");
    }
}
