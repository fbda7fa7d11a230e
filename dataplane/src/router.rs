//! The packet path: one packet in, one decision out.
//!
//! [`process`] takes a packet's bytes (any [`PacketBuf`]), the snapshot's [`Tables`] and the
//! worker's [`Scratch`], rewrites the packet in place and says where it goes. It never
//! allocates, locks or panics; a packet it cannot handle is dropped and counted by reason.
//! Replies Ferry originates for a packet (ARP reply, NA, echo reply, ICMP errors) are built
//! in the packet's own buffer and sent back to the previous hop on the ingress port.
//! Neighbour solicitations need a fresh buffer; they are queued in [`Scratch`] and built by
//! the worker with [`build_solicit`] after the burst.

use std::net::IpAddr;

use crate::buf::PacketBuf;
use crate::counters::{DropReason, Layer, WorkerCounters};
use crate::nat::{self, Pre};
use crate::service::Forward;
use crate::tables::{Hop, Mac, PortTable, Tables};
use crate::wire::{arp, checksum, ethernet, icmpv4, icmpv6, ipv4, ipv6, l4, WireError};

/// Where a packet goes after [`process`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Transmit on port index `p`.
    Tx(u16),
    /// Hand to the kernel interface of port index `p` (exception path).
    Kernel(u16),
    /// Free the buffer (the reason, if any, has been counted).
    Free,
    /// Keep the packet while its next hop is resolved (a solicitation is queued), then
    /// run it through [`process`] again. The packet is unchanged.
    Hold,
    /// An IPv4 datagram (already rewritten for port `port`) too big for its MTU and
    /// without DF: split it with [`fragment_ipv4`] and transmit the fragments on `port`.
    Fragment { port: u16, mtu: u16 },
    /// An IPv4 datagram for the node itself, bigger than the MTU of port `port`'s kernel
    /// interface (the kernel under an af_packet port reassembled it), which the TAP would
    /// refuse: split it with [`fragment_ipv4`] and hand the fragments to that interface.
    KernelFragment { port: u16, mtu: u16 },
    /// Another worker owns the packet's NAT flow: hand the packet, unchanged, to worker
    /// `w` (it runs it through [`process`] again).
    Handoff(u16),
}

/// Something a worker learned from ARP / ND, for the control side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Learned {
    pub port: u16,
    pub ip: IpAddr,
    pub mac: Mac,
    /// May create an entry (a request to us, a reply, a solicited NA, an NS); false for
    /// unsolicited announcements (gratuitous ARP, unsolicited NA), which only update one.
    pub create: bool,
}

/// A small fixed-capacity list (no allocation on the hot path).
pub struct FixedVec<T: Copy, const N: usize> {
    items: [Option<T>; N],
    len: usize,
}

impl<T: Copy, const N: usize> Default for FixedVec<T, N> {
    fn default() -> Self {
        FixedVec {
            items: [None; N],
            len: 0,
        }
    }
}

impl<T: Copy, const N: usize> FixedVec<T, N> {
    /// Push; false (and nothing stored) when full.
    pub fn push(&mut self, t: T) -> bool {
        if self.len == N {
            return false;
        }
        self.items[self.len] = Some(t);
        self.len += 1;
        true
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn clear(&mut self) {
        self.len = 0;
    }
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.items[..self.len].iter().flatten().copied()
    }
}

/// What a worker tells the control side, over its event ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerEvent {
    /// A neighbour's address, from ARP / ND.
    Learned(Learned),
    /// A packet needs `ip` on `port` resolved: no entry yet (the packet is held), or a
    /// stale one (the packet went out; the entry wants a probe). The control side keeps
    /// the per-neighbour resolution state and asks a worker to solicit.
    Unresolved { port: u16, ip: IpAddr },
}

/// What the control side asks of a worker, over its command ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerCommand {
    /// Send an ARP request / neighbour solicitation for `ip` on `port`.
    Solicit { port: u16, ip: IpAddr },
    /// End the NAT flows the filter selects (`ferryctl conntrack flush`).
    NatFlush(crate::nat::FlowFilter),
    /// Send at most `limit` of the NAT flows the filter selects on the dump ring, then
    /// [`FlowDump::End`] (`ferryctl conntrack`).
    NatDump {
        filter: crate::nat::FlowFilter,
        limit: u32,
    },
}

/// What a worker sends on its dump ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowDump {
    Flow(crate::nat::FlowRecord),
    /// The dump is complete (`truncated`: the limit cut it).
    End {
        truncated: bool,
    },
}

/// Slots of the per-worker throttle on `Unresolved` reports (direct-mapped by address).
/// A thrashed slot only costs a duplicate report on the event ring, never a packet on the
/// wire: the control side counts solicitations per neighbour exactly.
const REPORT_SLOTS: usize = 1024;
/// One report per address per slot this often (in 1/REPORT_PER_S of a second).
const REPORT_PER_S: u64 = 10;

/// A worker's mutable side state for the packet path.
pub struct Scratch {
    /// Neighbours learned in this burst.
    pub learned: FixedVec<Learned, 32>,
    /// Neighbours to resolve (or probe), to report after this burst: (port, address).
    pub unresolved: FixedVec<(u16, IpAddr), 32>,
    /// The neighbour (port, address) that the last [`Action::Hold`] waits for.
    pub held_for: (u16, IpAddr),
    /// Current TSC.
    pub now: u64,
    /// TSC ticks per second.
    pub hz: u64,
    icmp_tokens: u64,
    icmp_last: u64,
    icmp_rate: u64,
    /// Last report per address hash slot: (address, tsc).
    reported: Box<[(Option<IpAddr>, u64); REPORT_SLOTS]>,
    /// The worker's NAT flow tables (small until the worker sizes them).
    pub nat: crate::nat::NatState,
}

impl Scratch {
    /// `icmp_rate`: ICMP errors per second this worker may send (burst of the same size).
    pub fn new(hz: u64, icmp_rate: u32) -> Scratch {
        Scratch {
            learned: FixedVec::default(),
            unresolved: FixedVec::default(),
            held_for: (0, IpAddr::from([0u8; 4])),
            now: 0,
            hz: hz.max(1),
            icmp_tokens: icmp_rate as u64,
            icmp_last: 0,
            icmp_rate: icmp_rate as u64,
            reported: Box::new([(None, 0); REPORT_SLOTS]),
            nat: crate::nat::NatState::new(1024, 0, 0x5eed),
        }
    }

    fn icmp_allowed(&mut self) -> bool {
        let elapsed = self.now.saturating_sub(self.icmp_last);
        let refill = elapsed.saturating_mul(self.icmp_rate) / self.hz;
        if refill > 0 {
            self.icmp_tokens = (self.icmp_tokens + refill).min(self.icmp_rate);
            // Advance by the time the tokens cost, keeping the remainder.
            self.icmp_last += refill.saturating_mul(self.hz) / self.icmp_rate.max(1);
            if self.icmp_tokens == self.icmp_rate {
                self.icmp_last = self.now;
            }
        }
        if self.icmp_tokens > 0 {
            self.icmp_tokens -= 1;
            true
        } else {
            false
        }
    }

    /// Report that `ip` on `port` needs resolving (or probing), at most once per address
    /// per 100 ms from this worker (a slot taken by another address lets it through).
    fn want_resolve(&mut self, port: u16, ip: IpAddr) {
        let h = match ip {
            IpAddr::V4(a) => u32::from(a) as u64,
            IpAddr::V6(a) => {
                let x = u128::from(a);
                (x as u64) ^ ((x >> 64) as u64)
            }
        };
        let slot = (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize % REPORT_SLOTS;
        let (last_ip, last_t) = self.reported[slot];
        if last_ip == Some(ip) && self.now.saturating_sub(last_t) < self.hz / REPORT_PER_S {
            return;
        }
        if self.unresolved.push((port, ip)) {
            self.reported[slot] = (Some(ip), self.now);
        }
    }

    fn learn(&mut self, port: u16, ip: IpAddr, mac: Mac, create: bool) {
        // If the list is full the entry is learned from the next ARP/ND packet instead.
        let _ = self.learned.push(Learned {
            port,
            ip,
            mac,
            create,
        });
    }
}

/// The per-packet context: tables, worker state, counters.
pub struct Ctx<'a> {
    pub t: &'a Tables,
    pub s: &'a mut Scratch,
    pub c: &'a WorkerCounters,
}

impl Ctx<'_> {
    #[inline]
    fn drop(&self, r: DropReason) -> Action {
        self.c.drop(r);
        Action::Free
    }
}

/// Process a packet that arrived on port index `in_port` from the wire.
#[inline]
pub fn process<B: PacketBuf>(ctx: &mut Ctx, in_port: u16, b: &mut B) -> Action {
    let Some(port) = ctx.t.ports.get(in_port as usize) else {
        return Action::Free;
    };
    let l2 = match ethernet::parse_l2(b.data()) {
        Ok(l2) => l2,
        Err(e) => return ctx.drop(DropReason::Malformed(Layer::Ethernet, e)),
    };
    if l2.vlan_id() != port.vlan {
        return ctx.drop(DropReason::VlanMismatch);
    }
    let dst_mac: Mac = b.data()[0..6].try_into().unwrap_or([0; 6]);
    let l2_multicast = ethernet::is_multicast(&dst_mac);
    if dst_mac != port.mac && !l2_multicast {
        return ctx.drop(DropReason::NotForUs);
    }
    match l2.ethertype {
        ethernet::ETHERTYPE_IPV4 => ipv4_in(ctx, in_port, l2.l3_offset, l2_multicast, b),
        ethernet::ETHERTYPE_IPV6 => ipv6_in(ctx, in_port, l2.l3_offset, l2_multicast, b),
        ethernet::ETHERTYPE_ARP => arp_in(ctx, in_port, l2.l3_offset, b),
        _ => ctx.drop(DropReason::UnknownEthertype),
    }
}

/// Process a packet the kernel sent on the exception interface of port `port`: it leaves
/// on that port as it is, with the port's VLAN tag added if it has one.
#[inline]
pub fn process_from_kernel<B: PacketBuf>(ctx: &mut Ctx, port: u16, b: &mut B) -> Action {
    let Some(p) = ctx.t.ports.get(port as usize) else {
        return Action::Free;
    };
    let l2 = match ethernet::parse_l2(b.data()) {
        Ok(l2) => l2,
        Err(e) => return ctx.drop(DropReason::Malformed(Layer::Ethernet, e)),
    };
    if p.vlan.is_some() && l2.vlan_tci.is_none() {
        let dst: Mac = b.data()[0..6].try_into().unwrap_or([0; 6]);
        let src: Mac = b.data()[6..12].try_into().unwrap_or([0; 6]);
        if !write_l2(b, l2.l3_offset, p.vlan, dst, src, l2.ethertype) {
            return ctx.drop(DropReason::Malformed(Layer::Ethernet, WireError::Truncated));
        }
    }
    Action::Tx(port)
}

/// Rewrite the L2 header in front of the L3 header at `l3`: destination, source, an 802.1Q
/// tag if `vlan`, and the ethertype. Grows or shrinks the front as needed.
#[inline]
fn write_l2<B: PacketBuf>(
    b: &mut B,
    l3: usize,
    vlan: Option<u16>,
    dst: Mac,
    src: Mac,
    ethertype: u16,
) -> bool {
    let want = if vlan.is_some() { 18 } else { 14 };
    if want > l3 {
        if !b.prepend(want - l3) {
            return false;
        }
    } else if want < l3 && !b.adj(l3 - want) {
        return false;
    }
    let d = b.data_mut();
    if d.len() < want {
        return false;
    }
    d[0..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&src);
    match vlan {
        Some(v) => {
            d[12..14].copy_from_slice(&ethernet::ETHERTYPE_VLAN.to_be_bytes());
            d[14..16].copy_from_slice(&(v & 0x0fff).to_be_bytes());
            d[16..18].copy_from_slice(&ethertype.to_be_bytes());
        }
        None => d[12..14].copy_from_slice(&ethertype.to_be_bytes()),
    }
    true
}

/// The L2 header for the next hop on `out`: the fast path (untagged in and out) writes the
/// two MACs; otherwise the header is rebuilt with the egress port's tag.
#[inline]
fn rewrite_for_egress<B: PacketBuf>(
    b: &mut B,
    l3: usize,
    out: &PortTable,
    mac: Mac,
    ethertype: u16,
) -> bool {
    if l3 == 14 && out.vlan.is_none() {
        let d = b.data_mut();
        d[0..6].copy_from_slice(&mac);
        d[6..12].copy_from_slice(&out.mac);
        true
    } else {
        write_l2(b, l3, out.vlan, mac, out.mac, ethertype)
    }
}

/// Hand the packet to the port's kernel interface, without the port's 802.1Q tag (the TAP
/// carries the port's untagged traffic; `process_from_kernel` adds the tag back).
#[inline]
fn to_kernel<B: PacketBuf>(b: &mut B, port: u16) -> Action {
    if let Ok(l2) = ethernet::parse_l2(b.data()) {
        if l2.vlan_tci.is_some() {
            let d = b.data();
            let dst: Mac = d[0..6].try_into().unwrap_or([0; 6]);
            let src: Mac = d[6..12].try_into().unwrap_or([0; 6]);
            if !write_l2(b, l2.l3_offset, None, dst, src, l2.ethertype) {
                return Action::Free;
            }
        }
    }
    Action::Kernel(port)
}

/// Hand the packet to the port's kernel interface if it has one; otherwise drop it,
/// counted as `otherwise`.
#[inline]
fn to_kernel_or<B: PacketBuf>(ctx: &Ctx, b: &mut B, port: u16, otherwise: DropReason) -> Action {
    let Some(p) = ctx.t.ports.get(port as usize).filter(|p| p.kernel) else {
        return ctx.drop(otherwise);
    };
    match to_kernel(b, port) {
        // Untagged now: the IPv4 header at 14.
        Action::Kernel(k)
            if b.data().len() > 14 + p.mtu as usize
                && b.data()[12..14] == ethernet::ETHERTYPE_IPV4.to_be_bytes() =>
        {
            Action::KernelFragment {
                port: k,
                mtu: p.mtu,
            }
        }
        a => a,
    }
}

/// Swap the MACs for a reply to the previous hop (our port MAC as the source).
#[inline]
fn reply_l2(b: &mut [u8], my_mac: Mac) {
    let mut src = [0u8; 6];
    src.copy_from_slice(&b[6..12]);
    b[0..6].copy_from_slice(&src);
    b[6..12].copy_from_slice(&my_mac);
}

/// Cut Ethernet padding (or trailing junk) after the L3 packet.
#[inline]
/// The drop reason for an IP header that failed its checks with `e`. A frame that is both
/// longer than its port's MTU allows and shorter than its IP length says was cut by the port
/// (`Truncated`): the kernel under an af_packet port reassembles IPv4 fragments into one
/// frame, and a ring frame too small for it keeps only its head. Anything else is malformed.
fn length_error<B: PacketBuf>(
    t: &Tables,
    in_port: u16,
    layer: Layer,
    e: WireError,
    l3: usize,
    b: &B,
) -> DropReason {
    let over_mtu = t
        .ports
        .get(in_port as usize)
        .is_some_and(|p| b.data().len() > l3 + p.mtu as usize);
    if e == WireError::BadLength && over_mtu {
        DropReason::Truncated
    } else {
        DropReason::Malformed(layer, e)
    }
}

fn trim_to<B: PacketBuf>(b: &mut B, len: usize) {
    let have = b.data().len();
    if have > len {
        b.trim(have - len);
    }
}

fn arp_in<B: PacketBuf>(ctx: &mut Ctx, in_port: u16, l3: usize, b: &mut B) -> Action {
    let port = &ctx.t.ports[in_port as usize];
    let (op, sender_ip, sender_mac, target_ip) = match arp::Packet::new_checked(&b.data()[l3..]) {
        Ok(p) => (p.operation(), p.sender_ip(), p.sender_mac(), p.target_ip()),
        Err(e) => return ctx.drop(DropReason::Malformed(Layer::Arp, e)),
    };
    let sender_known = sender_ip != [0; 4] && ethernet::is_unicast(&sender_mac);
    if op == arp::OP_REQUEST && port.has_v4(target_ip) {
        if sender_known {
            ctx.s
                .learn(in_port, IpAddr::from(sender_ip), sender_mac, true);
        }
        let my_mac = port.mac;
        let d = b.data_mut();
        let mut p = arp::Packet::new_unchecked(&mut d[l3..]);
        p.make_reply(my_mac);
        reply_l2(d, my_mac);
        ctx.c.arp_replies.add(1);
        return Action::Tx(in_port);
    }
    if op == arp::OP_REPLY || sender_ip == target_ip {
        // A reply (to us or the kernel), or a gratuitous announcement (update only).
        if sender_known {
            let gratuitous = sender_ip == target_ip;
            ctx.s
                .learn(in_port, IpAddr::from(sender_ip), sender_mac, !gratuitous);
        }
        if port.kernel {
            return to_kernel(b, in_port);
        }
    }
    ctx.c.consumed.add(1);
    Action::Free
}

/// What a resolved hop says: egress port and destination MAC, or the neighbour that is
/// missing (being resolved, or failed).
enum Resolved {
    Out(u16, Mac),
    Unresolved(u16, IpAddr),
    Failed,
}

#[inline]
pub(crate) fn flow_hash(a: u64, b: u64, proto: u8, ports: (u16, u16)) -> u64 {
    let mut h = a.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h = (h ^ b).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    h ^= ((proto as u64) << 32) | ((ports.0 as u64) << 16) | ports.1 as u64;
    h = h.wrapping_mul(0x1656_67b1_9e37_79f9);
    h ^ (h >> 29)
}

/// Resolve a FIB hop to (port, MAC) for destination `dst` (built only for on-link
/// destinations); queue a solicitation if needed.
#[inline]
fn resolve<'t>(
    ctx: &mut Ctx<'t>,
    mut h: &'t Hop,
    dst: impl FnOnce() -> IpAddr,
    hash: impl FnOnce() -> u64,
) -> Option<(u16, Resolved)> {
    let t = ctx.t;
    if let Hop::Ecmp { start, len } = h {
        if *len == 0 {
            return None;
        }
        let i = (hash() % *len as u64) as usize + *start as usize;
        let m = *t.ecmp.get(i)?;
        h = t.hops.get(m as usize)?;
    }
    match h {
        Hop::Gateway {
            port,
            gw,
            mac,
            stale,
        } => {
            let res = match mac {
                Some(m) => Resolved::Out(*port, *m),
                None if t.neighbor_failed(*port, *gw) => return Some((*port, Resolved::Failed)),
                None => Resolved::Unresolved(*port, *gw),
            };
            if mac.is_none() || *stale {
                ctx.s.want_resolve(*port, *gw);
            }
            Some((*port, res))
        }
        Hop::Connected { port } => {
            let dst = dst();
            let n = match dst {
                IpAddr::V4(a) => t.neigh4.get(&(*port, u32::from(a))),
                IpAddr::V6(a) => t.neigh6.get(&(*port, u128::from(a))),
            };
            let res = match n {
                Some(n) => Resolved::Out(*port, n.mac),
                None if t.neighbor_failed(*port, dst) => return Some((*port, Resolved::Failed)),
                None => Resolved::Unresolved(*port, dst),
            };
            if n.is_none_or(|n| n.stale) {
                ctx.s.want_resolve(*port, dst);
            }
            Some((*port, res))
        }
        Hop::Local { .. } | Hop::Ecmp { .. } => None,
    }
}

fn ipv4_in<B: PacketBuf>(
    ctx: &mut Ctx,
    in_port: u16,
    l3: usize,
    l2_multicast: bool,
    b: &mut B,
) -> Action {
    let (total, src, dst, ttl, proto, df, fragment, hlen) = {
        let p = match ipv4::Packet::new_checked(&b.data()[l3..]) {
            Ok(p) => p,
            Err(e) => return ctx.drop(length_error(ctx.t, in_port, Layer::Ipv4, e, l3, b)),
        };
        if !p.verify_checksum() {
            return ctx.drop(DropReason::Malformed(Layer::Ipv4, WireError::BadChecksum));
        }
        (
            p.total_len() as usize,
            p.src_u32(),
            p.dst_u32(),
            p.ttl(),
            p.protocol(),
            p.dont_frag(),
            p.is_fragment(),
            p.header_len(),
        )
    };
    trim_to(b, l3 + total);
    let src_first = (src >> 24) as u8;
    if src_first >= 224 || src_first == 127 || src == 0 {
        return ctx.drop(DropReason::Martian);
    }
    let dst_first = (dst >> 24) as u8;
    if dst_first == 127 {
        // Loopback never appears on the wire (RFC 1812 5.3.7).
        return ctx.drop(DropReason::Martian);
    }
    let t = ctx.t;
    if dst_first >= 224 {
        // Multicast and limited broadcast: for the kernel (routing protocols), not routed.
        return to_kernel_or(ctx, b, in_port, DropReason::NotRouted);
    }
    // The NAT stage, before the FIB: the flow's owner, its lookup, DNAT. The translation
    // itself waits for the router's checks (an ICMP error quotes what the sender sent).
    let (mut xlat, snat) = match nat_pre::<nat::V4>(ctx, in_port, &b.data()[l3..]) {
        Ok(x) => x,
        Err(NatStop::Act(a)) => return a,
        Err(NatStop::Reject) => {
            return icmp4_error(
                ctx,
                in_port,
                l3,
                b,
                DropReason::SvcNoBackend,
                icmpv4::TYPE_DEST_UNREACHABLE,
                icmpv4::CODE_PORT_UNREACHABLE,
                0,
            )
        }
    };
    let route_dst = xlat.map_or(dst, |x| x.route_dst);
    let Some(hop) = t.fib4.lookup(route_dst) else {
        if l2_multicast {
            // No ICMP error about a link-layer broadcast (RFC 1812 4.3.2.7).
            return ctx.drop(DropReason::NotRouted);
        }
        return icmp4_error(
            ctx,
            in_port,
            l3,
            b,
            DropReason::NoRoute,
            icmpv4::TYPE_DEST_UNREACHABLE,
            icmpv4::CODE_NET_UNREACHABLE,
            0,
        );
    };
    let Some(h) = t.hops.get(hop as usize) else {
        return ctx.drop(DropReason::NoRoute);
    };
    if let Hop::Local { .. } = h {
        return ipv4_local(ctx, in_port, l3, hlen, proto, fragment, b);
    }
    if l2_multicast {
        // A unicast datagram in a link-layer broadcast is not forwarded (RFC 1812 5.3.4),
        // and gets no ICMP error either (4.3.2.7).
        return ctx.drop(DropReason::NotRouted);
    }
    if ttl <= 1 {
        return icmp4_error(
            ctx,
            in_port,
            l3,
            b,
            DropReason::TtlExceeded,
            icmpv4::TYPE_TIME_EXCEEDED,
            icmpv4::CODE_TTL_EXCEEDED,
            0,
        );
    }
    // The transport ports are read only if an ECMP group needs the hash. Fragments hash on
    // addresses only, so all of a datagram's fragments take one path.
    let transport = if fragment {
        &[][..]
    } else {
        b.data().get(l3 + hlen..).unwrap_or(&[])
    };
    let Some((out, res)) = resolve(
        ctx,
        h,
        || IpAddr::from(route_dst.to_be_bytes()),
        || {
            let ports = l4::ports(proto, transport).unwrap_or((0, 0));
            flow_hash(src as u64, dst as u64, proto, ports)
        },
    ) else {
        return ctx.drop(DropReason::NoRoute);
    };
    let out_port = &t.ports[out as usize];
    let overhead = xlat
        .and_then(|x| x.tunnel)
        .map_or(0, |t| tunnel_overhead(t.kind, false));
    let too_big = total + overhead > out_port.mtu as usize;
    if too_big && df {
        let mtu = (out_port.mtu as usize).saturating_sub(overhead) as u32;
        return icmp4_error(
            ctx,
            in_port,
            l3,
            b,
            DropReason::TooBig,
            icmpv4::TYPE_DEST_UNREACHABLE,
            icmpv4::CODE_FRAG_NEEDED,
            mtu,
        );
    }
    let (out, mac) = match res {
        Resolved::Out(out, mac) => (out, mac),
        Resolved::Unresolved(port, ip) => {
            ctx.s.held_for = (port, ip);
            return Action::Hold;
        }
        Resolved::Failed => {
            return icmp4_error(
                ctx,
                in_port,
                l3,
                b,
                DropReason::NeighborFailed,
                icmpv4::TYPE_DEST_UNREACHABLE,
                icmpv4::CODE_HOST_UNREACHABLE,
                0,
            )
        }
    };
    if let Err(r) = nat_post::<nat::V4>(ctx, snat, &mut xlat, out, &mut b.data_mut()[l3..]) {
        return ctx.drop(r);
    }
    {
        let d = b.data_mut();
        let mut p = ipv4::Packet::new_unchecked(&mut d[l3..]);
        p.decrement_ttl();
    }
    if let Some(tun) = xlat.and_then(|x| x.tunnel) {
        if !encap4(b, l3, &tun, route_dst) {
            return ctx.drop(DropReason::Malformed(Layer::Ethernet, WireError::Truncated));
        }
    }
    let out_port = &t.ports[out as usize];
    if !rewrite_for_egress(b, l3, out_port, mac, ethernet::ETHERTYPE_IPV4) {
        return ctx.drop(DropReason::Malformed(Layer::Ethernet, WireError::Truncated));
    }
    if too_big {
        return Action::Fragment {
            port: out,
            mtu: out_port.mtu,
        };
    }
    Action::Tx(out)
}

/// The NAT stage before the FIB ([`nat::pre`]), if the snapshot has NAT rules: the
/// translation to apply after the router's checks (its destination is the one to route
/// by) and the packet to offer the post-routing hook, or the action that ends the packet
/// here (handed over, dropped).
#[inline]
fn nat_pre<F: nat::Fam>(
    ctx: &mut Ctx,
    in_port: u16,
    ip: &[u8],
) -> Result<NatPending<F::A>, NatStop> {
    let Some(n) = ctx.t.nat.as_deref() else {
        return Ok((None, None));
    };
    let Some(p) = F::parse(ip) else {
        return Ok((None, None));
    };
    match nat::pre::<F>(&mut ctx.s.nat, n, ctx.c, &p, in_port) {
        Pre::Pass => Ok((None, None)),
        Pre::Handoff(w) => Err(NatStop::Act(Action::Handoff(w))),
        Pre::Drop(r) => Err(NatStop::Act(ctx.drop(r))),
        Pre::Xlat(x) => Ok((Some(x), None)),
        Pre::MaybeSnat => Ok((None, Some(p))),
        Pre::Reject => Err(NatStop::Reject),
    }
}

/// Why [`nat_pre`] ended a packet: an action, or a service with no backend up (the
/// caller answers with its family's port unreachable).
enum NatStop {
    Act(Action),
    Reject,
}

/// Bytes a service tunnel puts in front of the packet (outer IPv4 or IPv6 header, and for
/// GUE its UDP header and 4-byte GUE header).
fn tunnel_overhead(kind: Forward, v6: bool) -> usize {
    let ip = if v6 { ipv6::HEADER_LEN } else { 20 };
    match kind {
        Forward::Ipip => ip,
        Forward::Gue => ip + 8 + 4,
        _ => 0,
    }
}

/// Put the outer headers of `tun` in front of the IP packet at `l3` (prepending room; the
/// L2 header in front of it is rewritten for egress afterwards, so it becomes the outer
/// one). False if the buffer has no headroom.
fn encap_common<B: PacketBuf>(
    b: &mut B,
    l3: usize,
    hdr: usize,
    ethertype: u16,
) -> Option<&mut [u8]> {
    if hdr == 0 {
        return None;
    }
    if !b.prepend(hdr) {
        return None;
    }
    let d = b.data_mut();
    if d.len() < l3 + hdr {
        return None;
    }
    if l3 >= 14 {
        // The old L2 header's ethertype is now in the middle; the egress rewrite of an
        // untagged frame keeps bytes 12..14, so put the right one there.
        d[12..14].copy_from_slice(&ethertype.to_be_bytes());
    }
    Some(&mut d[l3..])
}

fn encap4<B: PacketBuf>(b: &mut B, l3: usize, tun: &nat::Tunnel<u32>, dst: u32) -> bool {
    let hdr = tunnel_overhead(tun.kind, false);
    if hdr == 0 {
        return true;
    }
    let inner_len = b.data().len().saturating_sub(l3);
    // The inner TOS, identification and DF go outside too: fragments of two packets never
    // share an identification (RFC 6864), and path MTU discovery keeps working.
    let (tos, id, df) = match b.data().get(l3..l3 + 8) {
        Some(h) => (h[1], [h[4], h[5]], h[6] & 0x40),
        None => (0, [0, 0], 0),
    };
    let Some(o) = encap_common(b, l3, hdr, ethernet::ETHERTYPE_IPV4) else {
        return false;
    };
    let total = (inner_len + hdr) as u16;
    o[0] = 0x45;
    o[1] = tos;
    o[2..4].copy_from_slice(&total.to_be_bytes());
    o[4..6].copy_from_slice(&id);
    o[6] = df;
    o[7] = 0;
    o[8] = 64;
    o[9] = if tun.kind == Forward::Gue { 17 } else { 4 };
    o[10..12].fill(0);
    o[12..16].copy_from_slice(&tun.src.to_be_bytes());
    o[16..20].copy_from_slice(&dst.to_be_bytes());
    let c = checksum::checksum(&o[..20]);
    o[10..12].copy_from_slice(&c.to_be_bytes());
    if tun.kind == Forward::Gue {
        gue_header(&mut o[20..32], tun, (inner_len + 12) as u16, 4);
        // An IPv4 UDP checksum of zero: none (RFC 768), as tunnels send.
    }
    true
}

fn encap6<B: PacketBuf>(b: &mut B, l3: usize, tun: &nat::Tunnel<u128>, dst: u128) -> bool {
    let hdr = tunnel_overhead(tun.kind, true);
    if hdr == 0 {
        return true;
    }
    let inner_len = b.data().len().saturating_sub(l3);
    let Some(o) = encap_common(b, l3, hdr, ethernet::ETHERTYPE_IPV6) else {
        return false;
    };
    let plen = (inner_len + hdr - ipv6::HEADER_LEN) as u16;
    o[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
    o[4..6].copy_from_slice(&plen.to_be_bytes());
    o[6] = if tun.kind == Forward::Gue { 17 } else { 41 };
    o[7] = 64;
    let (src, dst) = (tun.src.to_be_bytes(), dst.to_be_bytes());
    o[8..24].copy_from_slice(&src);
    o[24..40].copy_from_slice(&dst);
    if tun.kind == Forward::Gue {
        gue_header(&mut o[40..52], tun, plen, 41);
        // IPv6 UDP needs its checksum (RFC 8200 8.1), over the whole datagram.
        let sum = checksum::add(
            checksum::pseudo_v6(&src, &dst, 17, u32::from(plen)),
            checksum::sum(&o[40..]),
        );
        let c = match checksum::finish(sum) {
            0 => 0xffff,
            c => c,
        };
        o[46..48].copy_from_slice(&c.to_be_bytes());
    }
    true
}

/// UDP and GUE (variant 0, no options) headers; `inner`: the inner IP protocol.
fn gue_header(o: &mut [u8], tun: &nat::Tunnel<impl Copy>, udp_len: u16, inner: u8) {
    o[0..2].copy_from_slice(&tun.entropy.to_be_bytes());
    o[2..4].copy_from_slice(&tun.port.to_be_bytes());
    o[4..6].copy_from_slice(&udp_len.to_be_bytes());
    o[6..8].fill(0);
    o[8] = 0;
    o[9] = inner;
    o[10..12].fill(0);
}

/// What [`nat_pre`] leaves for after the router's checks.
type NatPending<A> = (Option<nat::Xlat<A>>, Option<nat::Parsed<A>>);

/// The NAT stage after the router's checks, egress `out` known: SNAT for a new flow
/// ([`nat::snat_new`]), then the translation, in place (`ip` from the network header).
#[inline]
fn nat_post<F: nat::Fam>(
    ctx: &mut Ctx,
    snat: Option<nat::Parsed<F::A>>,
    xlat: &mut Option<nat::Xlat<F::A>>,
    out: u16,
    ip: &mut [u8],
) -> Result<(), DropReason> {
    let Some(n) = ctx.t.nat.as_deref() else {
        return Ok(());
    };
    if let Some(p) = snat {
        *xlat = nat::snat_new::<F>(&mut ctx.s.nat, n, ctx.c, &p, out)?;
    }
    match xlat {
        Some(x) => x.apply::<F>(ip).map_err(|_| DropReason::NatUntranslatable),
        None => Ok(()),
    }
}

fn ipv4_local<B: PacketBuf>(
    ctx: &mut Ctx,
    in_port: u16,
    l3: usize,
    hlen: usize,
    proto: u8,
    fragment: bool,
    b: &mut B,
) -> Action {
    let port = &ctx.t.ports[in_port as usize];
    // Fragments go to the kernel, which reassembles (and answers a large ping).
    if proto == ipv4::PROTO_ICMP && !fragment {
        let d = b.data();
        let icmp = &d[l3 + hlen..];
        let p = match icmpv4::Packet::new_checked(icmp) {
            Ok(p) => p,
            Err(e) => return ctx.drop(DropReason::Malformed(Layer::Icmp, e)),
        };
        if p.msg_type() == icmpv4::TYPE_ECHO_REQUEST && p.code() == 0 {
            if !p.verify_checksum() {
                return ctx.drop(DropReason::Malformed(Layer::Icmp, WireError::BadChecksum));
            }
            let my_mac = port.mac;
            let d = b.data_mut();
            {
                let mut ip = ipv4::Packet::new_unchecked(&mut d[l3..]);
                let (s, t) = (ip.src(), ip.dst());
                ip.set_src(t);
                ip.set_dst(s);
                ip.set_ttl(64);
                ip.fill_checksum();
                echo_to_reply(
                    ip.payload_mut(),
                    icmpv4::TYPE_ECHO_REQUEST,
                    icmpv4::TYPE_ECHO_REPLY,
                );
            }
            reply_l2(d, my_mac);
            ctx.c.echo_replies.add(1);
            if b.data().len() - l3 > port.mtu as usize {
                // A request the kernel under the port reassembled (af_packet): the reply
                // leaves in fragments, as the request came.
                return Action::Fragment {
                    port: in_port,
                    mtu: port.mtu,
                };
            }
            return Action::Tx(in_port);
        }
    }
    to_kernel_or(ctx, b, in_port, DropReason::LocalNoKernel)
}

/// A held packet whose neighbour never answered: counted as `drop_neighbor_unresolved`,
/// and turned into an ICMP host unreachable (ICMPv6 address unreachable) to its source,
/// through the rate limit, as Linux does when a neighbour fails with packets queued.
/// The packet must be as [`process`] left it for [`Action::Hold`] (unchanged).
pub fn unresolved_error<B: PacketBuf>(ctx: &mut Ctx, in_port: u16, b: &mut B) -> Action {
    let Ok(l2) = ethernet::parse_l2(b.data()) else {
        return ctx.drop(DropReason::NeighborUnresolved);
    };
    match l2.ethertype {
        ethernet::ETHERTYPE_IPV4 => icmp4_error(
            ctx,
            in_port,
            l2.l3_offset,
            b,
            DropReason::NeighborUnresolved,
            icmpv4::TYPE_DEST_UNREACHABLE,
            icmpv4::CODE_HOST_UNREACHABLE,
            0,
        ),
        ethernet::ETHERTYPE_IPV6 => icmp6_error(
            ctx,
            in_port,
            l2.l3_offset,
            b,
            DropReason::NeighborUnresolved,
            icmpv6::TYPE_DEST_UNREACHABLE,
            icmpv6::CODE_ADDR_UNREACHABLE,
            0,
        ),
        _ => ctx.drop(DropReason::NeighborUnresolved),
    }
}

/// Turn an ICMP or ICMPv6 echo request (type in byte 0, checksum in bytes 2-3) into the
/// reply in place, updating the checksum incrementally (RFC 1624).
#[inline]
fn echo_to_reply(icmp: &mut [u8], request: u8, reply: u8) {
    if icmp.len() < 4 {
        return;
    }
    let sum = u16::from_be_bytes([icmp[2], icmp[3]]);
    let c = checksum::update16(
        sum,
        u16::from_be_bytes([request, 0]),
        u16::from_be_bytes([reply, 0]),
    );
    icmp[0] = reply;
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
}

/// Turn the packet into an ICMPv4 error about itself, sent back to the previous hop.
#[allow(clippy::too_many_arguments)]
fn icmp4_error<B: PacketBuf>(
    ctx: &mut Ctx,
    in_port: u16,
    l3: usize,
    b: &mut B,
    reason: DropReason,
    ty: u8,
    code: u8,
    rest: u32,
) -> Action {
    ctx.c.drop(reason);
    let port = &ctx.t.ports[in_port as usize];
    let (orig_src, quote_len, suppress) = {
        let Ok(p) = ipv4::Packet::new_checked(&b.data()[l3..]) else {
            return Action::Free;
        };
        // RFC 1812 4.3.2.7: no errors about non-first fragments or ICMP errors.
        let icmp_error = p.protocol() == ipv4::PROTO_ICMP
            && p.payload()
                .first()
                .is_some_and(|t| icmpv4::is_error_type(*t));
        (
            p.src(),
            p.total_len() as usize,
            p.frag_offset() != 0 || icmp_error,
        )
    };
    if suppress {
        return Action::Free;
    }
    let Some(my_ip) = port.v4_source_for(orig_src) else {
        return Action::Free;
    };
    if !ctx.s.icmp_allowed() {
        ctx.c.drop(DropReason::IcmpRateLimited);
        return Action::Free;
    }
    let mut quote = [0u8; icmpv4::MAX_ERROR_LEN];
    let q = quote_len
        .min(icmpv4::MAX_ERROR_LEN - 28)
        .min(b.data().len() - l3);
    quote[..q].copy_from_slice(&b.data()[l3..l3 + q]);
    if !b.set_len(l3 + 28 + q) {
        return Action::Free;
    }
    let my_mac = port.mac;
    let d = b.data_mut();
    match icmpv4::emit_error(
        &mut d[l3..],
        my_ip,
        orig_src,
        64,
        ty,
        code,
        rest,
        &quote[..q],
    ) {
        Ok(n) => {
            reply_l2(d, my_mac);
            b.set_len(l3 + n);
            ctx.c.icmp_errors.add(1);
            Action::Tx(in_port)
        }
        Err(_) => Action::Free,
    }
}

fn is_v6_multicast(a: &[u8; 16]) -> bool {
    a[0] == 0xff
}

fn ipv6_in<B: PacketBuf>(
    ctx: &mut Ctx,
    in_port: u16,
    l3: usize,
    l2_multicast: bool,
    b: &mut B,
) -> Action {
    let (plen, src, dst, hop_limit, next) = match ipv6::Packet::new_checked(&b.data()[l3..]) {
        Ok(p) => (
            p.payload_len() as usize,
            p.src(),
            p.dst(),
            p.hop_limit(),
            p.next_header(),
        ),
        Err(e) => return ctx.drop(length_error(ctx.t, in_port, Layer::Ipv6, e, l3, b)),
    };
    trim_to(b, l3 + ipv6::HEADER_LEN + plen);
    if is_v6_multicast(&src) || src == std::net::Ipv6Addr::LOCALHOST.octets() {
        return ctx.drop(DropReason::Martian);
    }
    let t = ctx.t;
    if next == ipv6::NEXT_HEADER_ICMPV6 {
        if let Some(a) = nd_in(ctx, in_port, l3, b, &src, &dst, hop_limit) {
            return a;
        }
    }
    if is_v6_multicast(&dst) {
        return to_kernel_or(ctx, b, in_port, DropReason::NotRouted);
    }
    let dst128 = u128::from_be_bytes(dst);
    if dst128 == 1 {
        // ::1 never appears on the wire (RFC 4291 2.5.3).
        return ctx.drop(DropReason::Martian);
    }
    // The NAT stage (stateful NAT66), as for IPv4.
    let (mut xlat, snat) = match nat_pre::<nat::V6>(ctx, in_port, &b.data()[l3..]) {
        Ok(x) => x,
        Err(NatStop::Act(a)) => return a,
        Err(NatStop::Reject) => {
            return icmp6_error(
                ctx,
                in_port,
                l3,
                b,
                DropReason::SvcNoBackend,
                icmpv6::TYPE_DEST_UNREACHABLE,
                icmpv6::CODE_PORT_UNREACHABLE,
                0,
            )
        }
    };
    let route_dst = xlat.map_or(dst128, |x| x.route_dst);
    let Some(hop) = t.fib6.lookup(route_dst) else {
        if crate::tables::is_link_local(&dst) || l2_multicast {
            return ctx.drop(DropReason::NotRouted);
        }
        return icmp6_error(
            ctx,
            in_port,
            l3,
            b,
            DropReason::NoRoute,
            icmpv6::TYPE_DEST_UNREACHABLE,
            0,
            0,
        );
    };
    let Some(h) = t.hops.get(hop as usize) else {
        return ctx.drop(DropReason::NoRoute);
    };
    if let Hop::Local { .. } = h {
        return ipv6_local(ctx, in_port, l3, next, b);
    }
    if crate::tables::is_link_local(&dst) || crate::tables::is_link_local(&src) {
        // Link-local scope never crosses a router (RFC 4291 2.5.6).
        return ctx.drop(DropReason::NotRouted);
    }
    if src == [0; 16] {
        return ctx.drop(DropReason::Martian);
    }
    if l2_multicast {
        return ctx.drop(DropReason::NotRouted);
    }
    if hop_limit <= 1 {
        return icmp6_error(
            ctx,
            in_port,
            l3,
            b,
            DropReason::TtlExceeded,
            icmpv6::TYPE_TIME_EXCEEDED,
            0,
            0,
        );
    }
    let s128 = u128::from_be_bytes(src);
    let d = b.data();
    let Some((out, res)) = resolve(
        ctx,
        h,
        || IpAddr::from(route_dst.to_be_bytes()),
        || {
            // Only for ECMP: walk to the transport header for the ports.
            let (proto, ports) = match ipv6::Packet::new_unchecked(&d[l3..]).upper_layer() {
                // Any fragment (first or not) hashes on addresses only.
                _ if next == ipv6::NEXT_HEADER_FRAGMENT => (ipv6::NEXT_HEADER_FRAGMENT, (0, 0)),
                Ok((ipv6::NEXT_HEADER_FRAGMENT, _)) => (ipv6::NEXT_HEADER_FRAGMENT, (0, 0)),
                Ok((proto, off)) => (
                    proto,
                    l4::ports(proto, d.get(l3 + ipv6::HEADER_LEN + off..).unwrap_or(&[]))
                        .unwrap_or((0, 0)),
                ),
                Err(_) => (next, (0, 0)),
            };
            flow_hash(
                (s128 ^ (s128 >> 64)) as u64,
                (dst128 ^ (dst128 >> 64)) as u64,
                proto,
                ports,
            )
        },
    ) else {
        return ctx.drop(DropReason::NoRoute);
    };
    let out_port = &t.ports[out as usize];
    let overhead = xlat
        .and_then(|x| x.tunnel)
        .map_or(0, |t| tunnel_overhead(t.kind, true));
    if ipv6::HEADER_LEN + plen + overhead > out_port.mtu as usize {
        let mtu = (out_port.mtu as usize).saturating_sub(overhead) as u32;
        return icmp6_error(
            ctx,
            in_port,
            l3,
            b,
            DropReason::TooBig,
            icmpv6::TYPE_PACKET_TOO_BIG,
            0,
            mtu,
        );
    }
    let (out, mac) = match res {
        Resolved::Out(out, mac) => (out, mac),
        Resolved::Unresolved(port, ip) => {
            ctx.s.held_for = (port, ip);
            return Action::Hold;
        }
        Resolved::Failed => {
            return icmp6_error(
                ctx,
                in_port,
                l3,
                b,
                DropReason::NeighborFailed,
                icmpv6::TYPE_DEST_UNREACHABLE,
                icmpv6::CODE_ADDR_UNREACHABLE,
                0,
            )
        }
    };
    if let Err(r) = nat_post::<nat::V6>(ctx, snat, &mut xlat, out, &mut b.data_mut()[l3..]) {
        return ctx.drop(r);
    }
    {
        let d = b.data_mut();
        let mut p = ipv6::Packet::new_unchecked(&mut d[l3..]);
        p.set_hop_limit(hop_limit - 1);
    }
    if let Some(tun) = xlat.and_then(|x| x.tunnel) {
        if !encap6(b, l3, &tun, route_dst) {
            return ctx.drop(DropReason::Malformed(Layer::Ethernet, WireError::Truncated));
        }
    }
    let out_port = &t.ports[out as usize];
    if !rewrite_for_egress(b, l3, out_port, mac, ethernet::ETHERTYPE_IPV6) {
        return ctx.drop(DropReason::Malformed(Layer::Ethernet, WireError::Truncated));
    }
    Action::Tx(out)
}

/// Neighbour discovery addressed to us (NS for our address, NA). None: not ND for us.
fn nd_in<B: PacketBuf>(
    ctx: &mut Ctx,
    in_port: u16,
    l3: usize,
    b: &mut B,
    src: &[u8; 16],
    dst: &[u8; 16],
    hop_limit: u8,
) -> Option<Action> {
    let port = &ctx.t.ports[in_port as usize];
    let icmp_off = l3 + ipv6::HEADER_LEN;
    let (ty, target, lladdr, solicited) = {
        let p = icmpv6::Packet::new_checked(b.data().get(icmp_off..)?).ok()?;
        let ty = p.msg_type();
        if ty != icmpv6::TYPE_NEIGHBOR_SOLICIT && ty != icmpv6::TYPE_NEIGHBOR_ADVERT {
            return None;
        }
        if hop_limit != 255 || p.code() != 0 || !p.verify_checksum(src, dst) {
            return Some(ctx.drop(DropReason::Malformed(Layer::Icmp, WireError::Malformed)));
        }
        let Some(target) = p.ndp_target() else {
            return Some(ctx.drop(DropReason::Malformed(Layer::Icmp, WireError::Truncated)));
        };
        let opt = if ty == icmpv6::TYPE_NEIGHBOR_SOLICIT {
            icmpv6::NDP_OPT_SOURCE_LLADDR
        } else {
            icmpv6::NDP_OPT_TARGET_LLADDR
        };
        let solicited = p.na_flags() & icmpv6::NA_FLAG_SOLICITED != 0;
        (ty, target, p.ndp_lladdr_option(opt), solicited)
    };
    if ty == icmpv6::TYPE_NEIGHBOR_ADVERT {
        if let Some(mac) = lladdr {
            ctx.s.learn(in_port, IpAddr::from(target), mac, solicited);
        }
        if port.kernel {
            return Some(to_kernel(b, in_port));
        }
        ctx.c.consumed.add(1);
        return Some(Action::Free);
    }
    // Neighbour solicitation.
    if !port.has_v6(&target) {
        // For someone else (or for the kernel's own business): not ours to answer.
        return if is_v6_multicast(dst) || !port.has_v6(dst) {
            ctx.c.consumed.add(1);
            Some(Action::Free)
        } else {
            None
        };
    }
    let dad = *src == [0; 16];
    if let (false, Some(mac)) = (dad, lladdr) {
        ctx.s.learn(in_port, IpAddr::from(*src), mac, true);
    }
    let reply_to = if dad {
        [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    } else {
        *src
    };
    let flags = if dad { 0x80 | 0x20 } else { 0x80 | 0x40 | 0x20 };
    let my_mac = port.mac;
    let len = ipv6::HEADER_LEN + 32;
    if !b.set_len(l3 + len) {
        return Some(Action::Free);
    }
    let d = b.data_mut();
    match icmpv6::emit_neighbor_advert(&mut d[l3..], &target, &reply_to, &target, my_mac, flags) {
        Ok(_) => {
            if dad {
                d[0..6].copy_from_slice(&ethernet::ipv6_multicast_mac(&reply_to));
                d[6..12].copy_from_slice(&my_mac);
            } else {
                reply_l2(d, my_mac);
            }
            ctx.c.nd_adverts.add(1);
            Some(Action::Tx(in_port))
        }
        Err(_) => Some(Action::Free),
    }
}

fn ipv6_local<B: PacketBuf>(ctx: &mut Ctx, in_port: u16, l3: usize, next: u8, b: &mut B) -> Action {
    let port = &ctx.t.ports[in_port as usize];
    if next == ipv6::NEXT_HEADER_ICMPV6 {
        let off = l3 + ipv6::HEADER_LEN;
        let is_echo = {
            let d = b.data();
            let (s, t) = {
                let ip = ipv6::Packet::new_unchecked(&d[l3..]);
                (ip.src(), ip.dst())
            };
            match icmpv6::Packet::new_checked(&d[off..]) {
                Ok(p) => {
                    p.msg_type() == icmpv6::TYPE_ECHO_REQUEST
                        && p.code() == 0
                        && p.verify_checksum(&s, &t)
                }
                Err(e) => return ctx.drop(DropReason::Malformed(Layer::Icmp, e)),
            }
        };
        if is_echo {
            let my_mac = port.mac;
            let d = b.data_mut();
            {
                let mut ip = ipv6::Packet::new_unchecked(&mut d[l3..]);
                let (s, t) = (ip.src(), ip.dst());
                ip.set_src(&t);
                ip.set_dst(&s);
                ip.set_hop_limit(64);
                // Swapping source and destination leaves the pseudo-header sum unchanged.
                echo_to_reply(
                    ip.payload_mut(),
                    icmpv6::TYPE_ECHO_REQUEST,
                    icmpv6::TYPE_ECHO_REPLY,
                );
            }
            reply_l2(d, my_mac);
            ctx.c.echo_replies.add(1);
            return Action::Tx(in_port);
        }
    }
    to_kernel_or(ctx, b, in_port, DropReason::LocalNoKernel)
}

#[allow(clippy::too_many_arguments)]
fn icmp6_error<B: PacketBuf>(
    ctx: &mut Ctx,
    in_port: u16,
    l3: usize,
    b: &mut B,
    reason: DropReason,
    ty: u8,
    code: u8,
    param: u32,
) -> Action {
    ctx.c.drop(reason);
    let port = &ctx.t.ports[in_port as usize];
    let (orig_src, suppress) = {
        let Ok(p) = ipv6::Packet::new_checked(&b.data()[l3..]) else {
            return Action::Free;
        };
        let src = p.src();
        // RFC 4443 2.4(e): no errors about ICMPv6 errors or to unspecified/multicast sources.
        let icmp_error = p.next_header() == ipv6::NEXT_HEADER_ICMPV6
            && p.payload()
                .first()
                .is_some_and(|t| icmpv6::is_error_type(*t));
        (src, icmp_error || src == [0; 16] || is_v6_multicast(&src))
    };
    if suppress {
        return Action::Free;
    }
    let Some(my_ip) = port.v6_source_for(&orig_src) else {
        return Action::Free;
    };
    if !ctx.s.icmp_allowed() {
        ctx.c.drop(DropReason::IcmpRateLimited);
        return Action::Free;
    }
    const MAX: usize = 1280;
    let mut quote = [0u8; MAX];
    let q = (b.data().len() - l3).min(MAX - 48);
    quote[..q].copy_from_slice(&b.data()[l3..l3 + q]);
    if !b.set_len(l3 + 48 + q) {
        return Action::Free;
    }
    let my_mac = port.mac;
    let d = b.data_mut();
    match icmpv6::emit_error(
        &mut d[l3..],
        &my_ip,
        &orig_src,
        ty,
        code,
        param,
        &quote[..q],
    ) {
        Ok(n) => {
            reply_l2(d, my_mac);
            b.set_len(l3 + n);
            ctx.c.icmp_errors.add(1);
            Action::Tx(in_port)
        }
        Err(_) => Action::Free,
    }
}

/// Split the IPv4 datagram in `frame` (Ethernet header already rewritten for the egress
/// port) into fragments of at most `mtu` bytes of IP (RFC 791 3.2, RFC 1812 5.2.6): each gets
/// the L2 header, the IP header (after the first fragment, only the options whose copied
/// flag is set), a share of the payload in multiples of 8 bytes, its offset and MF flag, and
/// a fresh checksum. Buffers come from `alloc` and go to `emit` in order. Returns the number
/// of fragments, or the reason nothing (more) could be sent.
pub fn fragment_ipv4<B: PacketBuf>(
    frame: &[u8],
    mtu: u16,
    mut alloc: impl FnMut() -> Option<B>,
    mut emit: impl FnMut(B),
) -> Result<usize, DropReason> {
    let malformed = |e| DropReason::Malformed(Layer::Ipv4, e);
    let l2 = ethernet::parse_l2(frame).map_err(|e| DropReason::Malformed(Layer::Ethernet, e))?;
    let l3 = l2.l3_offset;
    let ip = ipv4::Packet::new_checked(&frame[l3..]).map_err(malformed)?;
    let hlen = ip.header_len();
    let payload = ip.payload();
    let (base_off, base_mf) = (ip.frag_offset() as usize, ip.more_frags());
    // Header for fragments after the first: only options with the copied bit (0x80).
    let mut later = [0u8; ipv4::MAX_HEADER_LEN];
    later[..20].copy_from_slice(&frame[l3..l3 + 20]);
    let mut n = 20;
    let opts = ip.options();
    let mut i = 0;
    while i < opts.len() {
        let ty = opts[i];
        if ty == 0 {
            break;
        }
        if ty == 1 {
            i += 1;
            continue;
        }
        let len = opts.get(i + 1).copied().unwrap_or(0) as usize;
        if len < 2 || i + len > opts.len() {
            return Err(malformed(WireError::Malformed));
        }
        if ty & 0x80 != 0 {
            later[n..n + len].copy_from_slice(&opts[i..i + len]);
            n += len;
        }
        i += len;
    }
    let later_hlen = n.div_ceil(4) * 4; // padded with end-of-options (zeros)
    let mtu = mtu as usize;
    if mtu < hlen + 8 || mtu < later_hlen + 8 {
        return Err(DropReason::TooBig);
    }
    let mut off = 0;
    let mut count = 0;
    while off < payload.len() {
        let (hdr, h): (&[u8], usize) = if off == 0 {
            (&frame[l3..l3 + hlen], hlen)
        } else {
            (&later[..later_hlen], later_hlen)
        };
        let room = (mtu - h) & !7;
        let size = room.min(payload.len() - off);
        let more = off + size < payload.len() || base_mf;
        let offset = base_off + off;
        if offset > 0xfff8 {
            return Err(malformed(WireError::BadLength));
        }
        let mut b = alloc().ok_or(DropReason::NoMbuf)?;
        if !b.set_len(l3 + h + size) {
            return Err(DropReason::TooBig);
        }
        let d = b.data_mut();
        d[..l3].copy_from_slice(&frame[..l3]);
        d[l3..l3 + h].copy_from_slice(hdr);
        d[l3 + h..].copy_from_slice(&payload[off..off + size]);
        let mut p = ipv4::Packet::new_unchecked(&mut d[l3..]);
        p.set_version_and_header_len(h);
        p.set_total_len((h + size) as u16);
        p.set_flags_frag(false, more, offset as u16);
        p.fill_checksum();
        emit(b);
        count += 1;
        off += size;
    }
    Ok(count)
}

/// Build an ARP request or neighbour solicitation for `ip` on port `port` into `b` (whose
/// current content is overwritten). False if the port has no source address for it.
pub fn build_solicit<B: PacketBuf>(t: &Tables, port: u16, ip: IpAddr, b: &mut B) -> bool {
    let Some(p) = t.ports.get(port as usize) else {
        return false;
    };
    let l2 = if p.vlan.is_some() { 18 } else { 14 };
    match ip {
        IpAddr::V4(a) => {
            let Some(src) = p.v4_source_for(a.octets()) else {
                return false;
            };
            if !b.set_len(l2 + arp::PACKET_LEN) {
                return false;
            }
            if arp::emit(
                &mut b.data_mut()[l2..],
                arp::OP_REQUEST,
                p.mac,
                src,
                [0; 6],
                a.octets(),
            )
            .is_err()
            {
                return false;
            }
            write_l2(
                b,
                l2,
                p.vlan,
                ethernet::BROADCAST,
                p.mac,
                ethernet::ETHERTYPE_ARP,
            )
        }
        IpAddr::V6(a) => {
            let target = a.octets();
            let Some(src) = p.v6_source_for(&target) else {
                return false;
            };
            if !b.set_len(l2 + ipv6::HEADER_LEN + 32) {
                return false;
            }
            let Ok(n) =
                icmpv6::emit_neighbor_solicit(&mut b.data_mut()[l2..], &src, &target, p.mac)
            else {
                return false;
            };
            b.set_len(l2 + n);
            let dst_mac = ethernet::ipv6_multicast_mac(&ethernet::ipv6_solicited_node(&target));
            write_l2(b, l2, p.vlan, dst_mac, p.mac, ethernet::ETHERTYPE_IPV6)
        }
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
