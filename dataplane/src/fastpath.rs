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
use crate::wire::l4;

/// Ethernet + IPv4 header without options.
const MIN_FRAME: usize = 34;
/// Ethernet + IPv6 header.
const MIN_FRAME6: usize = 54;

/// What the header checks need of the receiving port, computed once per burst.
#[derive(Clone, Copy)]
pub struct RxPort<'a> {
    port: &'a PortTable,
    /// The port's MAC as the first six bytes of a little-endian u64.
    mac: u64,
}

impl<'a> RxPort<'a> {
    pub fn new(port: &'a PortTable) -> Self {
        let m = port.mac;
        RxPort {
            port,
            mac: u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]),
        }
    }
}

/// The header checks: `Some(destination)` if the frame received on `port` may take the
/// fast path (the caller has checked that `port` is untagged and the buffer contiguous).
/// Every test is made and the results or-ed into one branch: the frame's first 34 bytes are
/// there, and a fast-path packet passes them all.
#[inline(always)]
pub fn check4(port: &RxPort, d: &[u8]) -> Option<u32> {
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
#[inline(always)]
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

/// Forward a packet that passed [`check4`], whose destination looked up to `hop`: rewrite it
/// for its next hop and return the egress port, or `None` (and leave the packet as it was)
/// if the slow path must handle it.
#[inline(always)]
fn forward4<B: PacketBuf>(t: &Tables, hop: Option<NextHop>, b: &mut B) -> Option<u16> {
    let hop = hop?;
    let mut f = *t.fast.get(hop as usize)?;
    let d = b.data_mut();
    let have = d.len();
    let h: &[u8; MIN_FRAME] = d.get(..MIN_FRAME)?.try_into().ok()?;
    let total = u16::from_be_bytes([h[16], h[17]]) as usize;
    if f.kind != FastKind::Direct {
        // On-link or ECMP: out of line, so the common case stays a load and a compare.
        f = next_hop(
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
        )?;
    }
    // check4 refused TTL 0 and 1 and datagrams longer than the frame.
    if total > f.mtu as usize {
        return None;
    }
    if have > 14 + total {
        // Ethernet padding (or trailing junk) beyond the datagram: cut before rewriting.
        return trim_then_rewrite4(b, have - 14 - total, &f);
    }
    rewrite4(d.get_mut(..MIN_FRAME)?.try_into().ok()?, &f);
    Some(f.port)
}

/// The IPv4 rewrite: both MACs, TTL - 1 and its checksum. With TTL above 1 the 16-bit word
/// (TTL, protocol) drops by exactly 0x0100, so RFC 1624's `~HC + ~m + m'` is `~HC + 0xfeff`
/// (the same sum `checksum::update16` makes, without reading the old word).
#[inline(always)]
fn rewrite4(h: &mut [u8; MIN_FRAME], f: &FastHop) {
    h[..12].copy_from_slice(&f.l2);
    h[22] = h[22].wrapping_sub(1);
    let s = u32::from(!u16::from_be_bytes([h[24], h[25]])) + 0xfeff;
    let s = (s & 0xffff) + (s >> 16);
    h[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
}

#[cold]
#[inline(never)]
fn trim_then_rewrite4<B: PacketBuf>(b: &mut B, cut: usize, f: &FastHop) -> Option<u16> {
    if !b.trim(cut) {
        return None;
    }
    rewrite4(b.data_mut().get_mut(..MIN_FRAME)?.try_into().ok()?, f);
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
    /// Destinations of the IPv4 and IPv6 candidates, in arrival order, and their next hops.
    dst4: [u32; BURST],
    dst6: [u128; BURST],
    hop4: [Option<NextHop>; BURST],
    hop6: [Option<NextHop>; BURST],
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            dst4: [0; BURST],
            dst6: [0; BURST],
            hop4: [None; BURST],
            hop6: [None; BURST],
        }
    }
}

// The candidates of a burst are a bit each in a u64.
const _: () = assert!(BURST <= 64);

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
    // Which slots are IPv4 / IPv6 candidates (bit i for slot i); the k-th candidate of a
    // family is the k-th set bit, so the lookups need no index back to their slot.
    let (mut k4, mut k6, mut v4, mut v6) = (0, 0, 0u64, 0u64);
    if let Some(p) = port.filter(|p| p.vlan.is_none()).map(RxPort::new) {
        for (i, b) in bufs.iter().enumerate() {
            let Some(b) = b else { continue };
            if !b.contiguous() {
                continue;
            }
            let d = b.data();
            if let Some(dst) = check4(&p, d) {
                // The FIB load starts now, so the burst's misses overlap.
                crate::dpdk::prefetch(t.fib4.first_level_slot(dst));
                st.dst4[k4] = dst;
                k4 += 1;
                v4 |= 1 << i;
            } else if let Some(dst) = check6(p.port, d) {
                st.dst6[k6] = dst;
                k6 += 1;
                v6 |= 1 << i;
            }
        }
    }
    t.fib4.lookup_bulk(&st.dst4[..k4], &mut st.hop4[..k4]);
    if k6 > 0 {
        t.fib6.lookup_bulk(&st.dst6[..k6], &mut st.hop6[..k6]);
    }
    if k4 == n && k6 == 0 {
        // Every packet of the burst is an IPv4 candidate (the common case): the i-th slot
        // has the i-th next hop, and no per-slot dispatch is needed.
        for (slot, &hop) in bufs.iter_mut().zip(&st.hop4[..n]) {
            if let Some(mut b) = slot.take() {
                let out = forward4(t, hop, &mut b);
                emit(out, b);
            }
        }
        return;
    }
    let (mut j4, mut j6) = (0, 0);
    for (i, slot) in bufs.iter_mut().enumerate() {
        let Some(mut b) = slot.take() else { continue };
        let out = if v4 & (1 << i) != 0 {
            j4 += 1;
            forward4(t, st.hop4.get(j4 - 1).copied().flatten(), &mut b)
        } else if v6 & (1 << i) != 0 {
            j6 += 1;
            forward6(t, st.hop6.get(j6 - 1).copied().flatten(), &mut b)
        } else {
            None
        };
        emit(out, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;
    use proptest::prelude::*;

    /// A frame whose IPv4 header (bytes 14..34) is `hdr` with version/IHL 0x45; with `fix`,
    /// its checksum field is set so the header is valid.
    fn frame(hdr: [u8; 20], fix: bool) -> [u8; MIN_FRAME] {
        let mut f = [0u8; MIN_FRAME];
        f[14..].copy_from_slice(&hdr);
        f[14] = 0x45;
        if fix {
            f[24..26].fill(0);
            let c = checksum::checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
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

        /// rewrite4's constant update gives the bytes RFC 1624 (`checksum::update16`) gives,
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
            let mut g = f;
            rewrite4(&mut g, &hop);
            prop_assert_eq!(u16::from_be_bytes([g[24], g[25]]), want);
            prop_assert_eq!(g[22], ttl - 1);
            prop_assert_eq!(&g[..12], &[7u8; 12][..]);
            if fix {
                prop_assert_eq!(checksum::checksum(&g[14..34]), 0);
            }
        }
    }

    /// The checks refuse what they must, one field at a time, on an otherwise good frame.
    #[test]
    fn check4_refuses_each_bad_field() {
        let mac = [2, 0xfe, 0, 0, 1, 1];
        let port = PortTable {
            name: "a".into(),
            mac,
            mtu: 1500,
            vlan: None,
            v4: vec![],
            v6: vec![],
            kernel: false,
        };
        let p = RxPort::new(&port);
        let mut hdr = [0u8; 20];
        hdr[2..4].copy_from_slice(&46u16.to_be_bytes()); // total length
        hdr[8] = 64; // TTL
        hdr[9] = 17;
        hdr[12..16].copy_from_slice(&[198, 18, 0, 1]);
        hdr[16..20].copy_from_slice(&[10, 253, 0, 1]);
        let mut good = vec![0u8; 60];
        good[..MIN_FRAME].copy_from_slice(&frame(hdr, true));
        good[..6].copy_from_slice(&mac);
        good[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        good[12..14].copy_from_slice(&[0x08, 0x00]);
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
        let fix_checksum = |f: &mut [u8]| {
            f[24..26].fill(0);
            let c = checksum::checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        };
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
