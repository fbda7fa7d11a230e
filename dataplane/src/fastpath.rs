//! The forwarding fast path, IPv4 and IPv6, run over a whole burst.
//!
//! The common case costs a few dozen instructions here: an untagged unicast datagram
//! (IPv4 without options, or IPv6 carrying TCP or UDP directly), for a fresh resolved next
//! hop, TTL / hop limit above 1, that fits the egress MTU. The header is checked once with
//! fixed offsets (one bounds check; the IPv4 header checksum summed as five 32-bit words),
//! the destinations of the whole burst are looked up together
//! ([`Lpm4::lookup_bulk`](crate::lpm::Lpm4::lookup_bulk), [`Lpm6`](crate::lpm::Lpm6)), and the
//! packet is rewritten in place from the flattened next hop ([`FastHop`](crate::tables::FastHop)):
//! two MACs, TTL with an incremental checksum update, or the hop limit.
//!
//! Everything else (ARP, ND and all ICMPv6, options and extension headers, fragments to be
//! made, TTL expiry, local and link-local destinations, unresolved or stale neighbours,
//! VLANs, martians, bad checksums, any malformed header) is left untouched and goes to
//! [`router::process`](crate::router::process), which is the reference: for every packet the
//! fast path forwards, `process` forwards the same bytes to the same port (property tests
//! hold the two together).

use crate::buf::PacketBuf;
use crate::dpdk::BURST;
use crate::lpm::NextHop;
use crate::router::flow_hash;
use crate::tables::{FastHop, FastKind, Hop, PortTable, Tables};
use crate::wire::checksum;
use crate::wire::l4;

/// Ethernet + IPv4 header without options.
const MIN_FRAME: usize = 34;
/// Ethernet + IPv6 header.
const MIN_FRAME6: usize = 54;

/// The header checks: `Some(destination)` if the frame received on `port` may take the
/// fast path (the caller has checked that `port` is untagged and the buffer contiguous).
#[inline(always)]
pub fn check4(port: &PortTable, d: &[u8]) -> Option<u32> {
    let h: &[u8; MIN_FRAME] = d.get(..MIN_FRAME)?.try_into().ok()?;
    // Unicast to us, IPv4, version 4 with a 20-byte header (fixed-size compares, no memcmp).
    let dmac = [h[0], h[1], h[2], h[3], h[4], h[5]];
    if dmac != port.mac || [h[12], h[13], h[14]] != [0x08, 0x00, 0x45] {
        return None;
    }
    let total = u16::from_be_bytes([h[16], h[17]]) as usize;
    if total < 20 || 14 + total > d.len() || h[22] <= 1 {
        return None;
    }
    let src = u32::from_be_bytes([h[26], h[27], h[28], h[29]]);
    let dst = u32::from_be_bytes([h[30], h[31], h[32], h[33]]);
    let (s, t) = (src >> 24, dst >> 24);
    // Martian sources and destinations, multicast and broadcast: the slow path says which.
    if s >= 224 || s == 127 || src == 0 || t >= 224 || t == 127 {
        return None;
    }
    if !header_checksum_ok(&h[14..34]) {
        return None;
    }
    Some(dst)
}

/// RFC 1071 over a 20-byte header as five native-endian 32-bit words: the ones' complement
/// sum is the same whatever the word size and byte order, and a valid header sums to 0xffff.
/// (Two 64-bit words and a 32-bit one measured the same under callgrind.)
#[inline(always)]
fn header_checksum_ok(h: &[u8]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let mut s = w(0) + w(4) + w(8) + w(12) + w(16);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s == 0xffff
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

/// Forward a packet that passed [`check4`], whose destination looked up to `hop`: rewrite it
/// for its next hop and return the egress port, or `None` (and leave the packet as it was)
/// if the slow path must handle it.
#[inline(always)]
pub fn forward4<B: PacketBuf>(t: &Tables, hop: Option<NextHop>, b: &mut B) -> Option<u16> {
    let d = b.data();
    let have = d.len();
    let d: &[u8; MIN_FRAME] = d.get(..MIN_FRAME)?.try_into().ok()?;
    let hop = hop?;
    let total = u16::from_be_bytes([d[16], d[17]]) as usize;
    let mut f = *t.fast.get(hop as usize)?;
    if f.kind != FastKind::Direct {
        // On-link or ECMP: out of line, so the common case stays a load and a compare.
        f = next_hop(
            t,
            hop,
            |port| {
                let dst = u32::from_be_bytes([d[30], d[31], d[32], d[33]]);
                t.neigh4.get(&(port, dst)).copied()
            },
            || {
                let src = u32::from_be_bytes([d[26], d[27], d[28], d[29]]);
                let dst = u32::from_be_bytes([d[30], d[31], d[32], d[33]]);
                let proto = d[23];
                // As the slow path: fragments hash on addresses only.
                let fragment = u16::from_be_bytes([d[20], d[21]]) & 0x3fff != 0;
                let ports = if fragment {
                    (0, 0)
                } else {
                    // The transport header within the datagram, not the Ethernet padding.
                    let l4 = b.data().get(MIN_FRAME..14 + total).unwrap_or(&[]);
                    l4::ports(proto, l4).unwrap_or((0, 0))
                };
                flow_hash(src as u64, dst as u64, proto, ports)
            },
        )?;
    }
    // TTL 0 or 1 was refused by check4; checked again so this never wraps.
    if total > f.mtu as usize || d[22] <= 1 {
        return None;
    }
    if have > 14 + total && !b.trim(have - 14 - total) {
        return None;
    }
    let h: &mut [u8; MIN_FRAME] = b.data_mut().get_mut(..MIN_FRAME)?.try_into().ok()?;
    h[..12].copy_from_slice(&f.l2);
    let (ttl, proto) = (h[22], h[23]);
    let c = checksum::update16(
        u16::from_be_bytes([h[24], h[25]]),
        u16::from_be_bytes([ttl, proto]),
        u16::from_be_bytes([ttl.wrapping_sub(1), proto]),
    );
    h[22] = ttl.wrapping_sub(1);
    h[24..26].copy_from_slice(&c.to_be_bytes());
    Some(f.port)
}

/// The IPv6 header checks: `Some(destination)` if the frame received on `port` may take the
/// fast path: unicast to us, version 6, TCP or UDP right after the fixed header (no
/// extension headers, no ICMPv6: ND and errors need the slow path), hop limit above 1, the
/// payload within the frame, and global-scope unicast addresses on both ends.
// Out of line, as is forward6: inlined into the burst loop they made every IPv4 packet
// ~15 instructions longer (callgrind), for the register pressure.
#[inline(never)]
pub fn check6(port: &PortTable, d: &[u8]) -> Option<u128> {
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
    // Multicast (ff00::/8), link-local (fe80::/10), unspecified and loopback: slow path.
    let special = |x: u128| x >> 120 == 0xff || x >> 118 == 0xfe80 >> 6 || x <= 1;
    if special(src) || special(dst) {
        return None;
    }
    Some(dst)
}

/// Forward a packet that passed [`check6`], whose destination looked up to `hop`, as
/// [`forward4`] does: MACs and hop limit, or `None` with the packet untouched.
#[inline(never)]
pub fn forward6<B: PacketBuf>(t: &Tables, hop: Option<NextHop>, b: &mut B) -> Option<u16> {
    let d = b.data();
    let have = d.len();
    let d: &[u8; MIN_FRAME6] = d.get(..MIN_FRAME6)?.try_into().ok()?;
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&d[at..at + 16]);
        u128::from_be_bytes(a)
    };
    let plen = u16::from_be_bytes([d[18], d[19]]) as usize;
    let f = next_hop(
        t,
        hop?,
        |port| t.neigh6.get(&(port, addr(38))).copied(),
        || {
            let (s, x) = (addr(22), addr(38));
            let l4 = b.data().get(MIN_FRAME6..MIN_FRAME6 + plen).unwrap_or(&[]);
            let ports = l4::ports(d[20], l4).unwrap_or((0, 0));
            flow_hash((s ^ (s >> 64)) as u64, (x ^ (x >> 64)) as u64, d[20], ports)
        },
    )?;
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
pub struct Stages {
    dst4: [u32; BURST],
    dst6: [u128; BURST],
    /// Burst positions of the packets in `dst4` and `dst6`.
    index4: [u8; BURST],
    index6: [u8; BURST],
    hop4: [Option<NextHop>; BURST],
    hop6: [Option<NextHop>; BURST],
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            dst4: [0; BURST],
            dst6: [0; BURST],
            index4: [0; BURST],
            index6: [0; BURST],
            hop4: [None; BURST],
            hop6: [None; BURST],
        }
    }
}

/// Run a burst (at most [`BURST`] packets received on `port`) in three stages, as l3fwd
/// does: header checks for every packet, one bulk FIB lookup per family, then, in arrival
/// order, `emit(Some(egress), buf)` for each packet the fast path rewrote and
/// `emit(None, buf)` (untouched) for each the slow path must take. `port` is `None` for a
/// port the fast path does not serve (the kernel side); a tagged port sends everything to
/// the slow path too. A `None` slot is skipped.
#[inline(always)]
pub fn burst<B: PacketBuf>(
    t: &Tables,
    port: Option<&PortTable>,
    bufs: &mut [Option<B>],
    st: &mut Stages,
    mut emit: impl FnMut(Option<u16>, B),
) {
    let n = bufs.len().min(BURST);
    let bufs = &mut bufs[..n];
    let (mut k4, mut k6) = (0, 0);
    if let Some(p) = port.filter(|p| p.vlan.is_none()) {
        for (i, b) in bufs.iter().enumerate() {
            let Some(b) = b else { continue };
            if !b.contiguous() {
                continue;
            }
            let d = b.data();
            if let Some(dst) = check4(p, d) {
                // The FIB load starts now, so the burst's misses overlap.
                crate::dpdk::prefetch(t.fib4.first_level_slot(dst));
                st.dst4[k4] = dst;
                st.index4[k4] = i as u8;
                k4 += 1;
            } else if let Some(dst) = check6(p, d) {
                st.dst6[k6] = dst;
                st.index6[k6] = i as u8;
                k6 += 1;
            }
        }
    }
    t.fib4.lookup_bulk(&st.dst4[..k4], &mut st.hop4[..k4]);
    if k6 > 0 {
        t.fib6.lookup_bulk(&st.dst6[..k6], &mut st.hop6[..k6]);
    }
    let (mut j4, mut j6) = (0, 0);
    for (i, slot) in bufs.iter_mut().enumerate() {
        let Some(mut b) = slot.take() else { continue };
        if j4 < k4 && st.index4[j4] as usize == i {
            let hop = st.hop4[j4];
            j4 += 1;
            if let Some(out) = forward4(t, hop, &mut b) {
                emit(Some(out), b);
                continue;
            }
        } else if j6 < k6 && st.index6[j6] as usize == i {
            let hop = st.hop6[j6];
            j6 += 1;
            if let Some(out) = forward6(t, hop, &mut b) {
                emit(Some(out), b);
                continue;
            }
        }
        emit(None, b);
    }
}
