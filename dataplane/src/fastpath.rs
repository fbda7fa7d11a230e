//! The IPv4 forwarding fast path, run over a whole burst.
//!
//! The common case, an untagged unicast IPv4 datagram without options, for a fresh resolved
//! next hop, TTL above 1, that fits the egress MTU, costs a few dozen instructions here:
//! the header is checked once with fixed offsets (one 34-byte bounds check, the header
//! checksum summed as five 32-bit words), destinations of the whole burst are looked up
//! together ([`Lpm4::lookup_bulk`](crate::lpm::Lpm4::lookup_bulk)), and the packet is
//! rewritten in place (two MACs, TTL and an incremental checksum update).
//!
//! Everything else (ARP, IPv6, options, fragments to be made, TTL expiry, local
//! destinations, unresolved or stale neighbours, VLANs, martians, bad checksums, any
//! malformed header) is left untouched and goes to [`router::process`](crate::router::process),
//! which is the reference: for every packet the fast path forwards, `process` forwards the same
//! bytes to the same port (a property test holds the two together).

use crate::buf::PacketBuf;
use crate::dpdk::BURST;
use crate::lpm::NextHop;
use crate::router::flow_hash;
use crate::tables::{FastKind, Hop, PortTable, Tables};
use crate::wire::checksum;
use crate::wire::l4;

/// Ethernet + IPv4 header without options.
const MIN_FRAME: usize = 34;

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

/// Forward a packet that passed [`check4`], whose destination looked up to `hop`: rewrite it
/// for its next hop and return the egress port, or `None` (and leave the packet as it was)
/// if the slow path must handle it.
#[inline(always)]
pub fn forward4<B: PacketBuf>(t: &Tables, hop: Option<NextHop>, b: &mut B) -> Option<u16> {
    let d = b.data();
    let have = d.len();
    let d: &[u8; MIN_FRAME] = d.get(..MIN_FRAME)?.try_into().ok()?;
    let hop = hop? as usize;
    let mut f = *t.fast4.get(hop)?;
    match f.kind {
        FastKind::Direct => {}
        FastKind::Connected => {
            let dst = u32::from_be_bytes([d[30], d[31], d[32], d[33]]);
            let n = t.neigh4.get(&(f.port, dst))?;
            if n.stale {
                return None;
            }
            f.l2[..6].copy_from_slice(&n.mac);
        }
        FastKind::Ecmp => {
            let Some(Hop::Ecmp { start, len }) = t.hops.get(hop) else {
                return None;
            };
            if *len == 0 {
                return None;
            }
            let src = u32::from_be_bytes([d[26], d[27], d[28], d[29]]);
            let dst = u32::from_be_bytes([d[30], d[31], d[32], d[33]]);
            let proto = d[23];
            // As the slow path: fragments hash on addresses only.
            let fragment = u16::from_be_bytes([d[20], d[21]]) & 0x3fff != 0;
            let ports = if fragment {
                (0, 0)
            } else {
                // The transport header within the datagram, not the Ethernet padding after it.
                let end = 14 + u16::from_be_bytes([d[16], d[17]]) as usize;
                let l4 = b.data().get(MIN_FRAME..end).unwrap_or(&[]);
                l4::ports(proto, l4).unwrap_or((0, 0))
            };
            let i = (flow_hash(src as u64, dst as u64, proto, ports) % *len as u64) as usize;
            let member = *t.ecmp.get(i + *start as usize)?;
            f = *t.fast4.get(member as usize)?;
            if f.kind != FastKind::Direct {
                return None;
            }
        }
        FastKind::Slow => return None,
    }
    let total = u16::from_be_bytes([d[16], d[17]]) as usize;
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

/// Per-burst state between the stages of [`burst`] (kept by the worker, never reallocated).
pub struct Stages {
    dst: [u32; BURST],
    index: [u8; BURST],
    hop: [Option<NextHop>; BURST],
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            dst: [0; BURST],
            index: [0; BURST],
            hop: [None; BURST],
        }
    }
}

/// Run a burst (at most [`BURST`] packets received on `port`) in three stages, as l3fwd
/// does: header checks for every packet, one bulk FIB lookup, then, in arrival order,
/// `emit(Some(egress), buf)` for each packet the fast path rewrote and `emit(None, buf)`
/// (untouched) for each the slow path must take. `port` is `None` for a port the fast path
/// does not serve (tagged, or the kernel side): every packet is then emitted as slow.
/// A `None` slot is skipped.
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
    let mut k = 0;
    if let Some(p) = port.filter(|p| p.vlan.is_none()) {
        for (i, b) in bufs.iter().enumerate() {
            let Some(b) = b else { continue };
            if let Some(dst) = b.contiguous().then(|| check4(p, b.data())).flatten() {
                // The FIB load starts now, so the burst's misses overlap.
                crate::dpdk::prefetch(t.fib4.first_level_slot(dst));
                st.dst[k] = dst;
                st.index[k] = i as u8;
                k += 1;
            }
        }
    }
    t.fib4.lookup_bulk(&st.dst[..k], &mut st.hop[..k]);
    let mut j = 0;
    for (i, slot) in bufs.iter_mut().enumerate() {
        let Some(mut b) = slot.take() else { continue };
        if j < k && st.index[j] as usize == i {
            let hop = st.hop[j];
            j += 1;
            if let Some(out) = forward4(t, hop, &mut b) {
                emit(Some(out), b);
                continue;
            }
        }
        emit(None, b);
    }
}
