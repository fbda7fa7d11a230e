//! Rewriting a packet's address and port for NAT (issue 5), with incremental checksum
//! updates (RFC 1624) of the IPv4 header and of TCP, UDP and ICMP: no checksum is summed
//! over the payload again. Not yet called by the worker: the conntrack stage will.

use crate::wire::checksum::{update_bytes, update_udp4};

/// Which end of a packet a translation rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Source address and port (SNAT on the way out, DNAT's replies on the way back).
    Source,
    /// Destination address and port (DNAT, and SNAT's replies).
    Destination,
}

/// Why a packet cannot be rewritten (the caller drops and counts it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewriteError {
    /// Shorter than its headers say.
    Truncated,
    /// A protocol NAT does not translate (not TCP, UDP or ICMP echo).
    Unsupported,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Rewrite an IPv4 packet (`ip` starts at the IPv4 header): the address at `end` becomes
/// `addr`, and the port at `end` becomes `port` (TCP, UDP), or for ICMP echo request and
/// reply the identifier (whichever `end`: the identifier stands for both ports). A later
/// fragment (offset > 0) has no transport header: only its address changes.
pub fn rewrite_v4(ip: &mut [u8], end: End, addr: [u8; 4], port: u16) -> Result<(), RewriteError> {
    if ip.len() < 20 {
        return Err(RewriteError::Truncated);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 || ip.len() < ihl {
        return Err(RewriteError::Truncated);
    }
    let proto = ip[9];
    let later_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
    let at = if end == End::Source { 12 } else { 16 };
    let old_addr: [u8; 4] = [ip[at], ip[at + 1], ip[at + 2], ip[at + 3]];
    let (head, l4) = ip.split_at_mut(ihl);
    if !later_fragment {
        match proto {
            TCP | UDP => {
                let csum_at = if proto == TCP { 16 } else { 6 };
                if l4.len() < csum_at + 2 {
                    return Err(RewriteError::Truncated);
                }
                let p = if end == End::Source { 0 } else { 2 };
                let old_port = [l4[p], l4[p + 1]];
                let new_port = port.to_be_bytes();
                let mut old = [0u8; 6];
                let mut new = [0u8; 6];
                old[..4].copy_from_slice(&old_addr);
                old[4..].copy_from_slice(&old_port);
                new[..4].copy_from_slice(&addr);
                new[4..].copy_from_slice(&new_port);
                let c = u16::from_be_bytes([l4[csum_at], l4[csum_at + 1]]);
                let c = if proto == UDP {
                    update_udp4(c, &old, &new)
                } else {
                    update_bytes(c, &old, &new)
                };
                l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
                l4[p..p + 2].copy_from_slice(&new_port);
            }
            ICMP => {
                // Echo request (8) and reply (0): the identifier; ICMP has no pseudo-header,
                // so the address change leaves its checksum alone.
                if l4.len() < 8 {
                    return Err(RewriteError::Truncated);
                }
                if l4[0] != 8 && l4[0] != 0 {
                    return Err(RewriteError::Unsupported);
                }
                let old_id = [l4[4], l4[5]];
                let new_id = port.to_be_bytes();
                let c = u16::from_be_bytes([l4[2], l4[3]]);
                let c = update_bytes(c, &old_id, &new_id);
                l4[2..4].copy_from_slice(&c.to_be_bytes());
                l4[4..6].copy_from_slice(&new_id);
            }
            _ => return Err(RewriteError::Unsupported),
        }
    }
    let c = u16::from_be_bytes([head[10], head[11]]);
    let c = update_bytes(c, &old_addr, &addr);
    head[10..12].copy_from_slice(&c.to_be_bytes());
    head[at..at + 4].copy_from_slice(&addr);
    Ok(())
}

/// Rewrite an IPv6 packet (`ip` starts at the IPv6 header; stateful NAT66 as nftables does
/// it): the address at `end` becomes `addr`, and the port (TCP, UDP) or the ICMPv6 echo
/// identifier becomes `port`. IPv6 has no header checksum; TCP's, UDP's and ICMPv6's cover
/// the addresses through the pseudo-header and are updated for both changes. A transport
/// header behind extension headers is not translated yet (`Unsupported`).
pub fn rewrite_v6(ip: &mut [u8], end: End, addr: [u8; 16], port: u16) -> Result<(), RewriteError> {
    if ip.len() < 40 {
        return Err(RewriteError::Truncated);
    }
    let at = if end == End::Source { 8 } else { 24 };
    let mut old_addr = [0u8; 16];
    old_addr.copy_from_slice(&ip[at..at + 16]);
    let (proto, off, frag) = ipv6_transport(ip).ok_or(RewriteError::Unsupported)?;
    if frag.is_some_and(|(_, offset, _)| offset != 0) {
        // A later fragment: the transport header (and its checksum, which covers the
        // addresses) is in the first; only the address changes here (IPv6 has no header
        // checksum).
        ip[at..at + 16].copy_from_slice(&addr);
        return Ok(());
    }
    let l4 = &mut ip[off..];
    let (csum_at, port_at) = match proto {
        TCP => (16, if end == End::Source { 0 } else { 2 }),
        UDP => (6, if end == End::Source { 0 } else { 2 }),
        ICMPV6 => {
            if !l4.is_empty() && l4[0] != 128 && l4[0] != 129 {
                return Err(RewriteError::Unsupported);
            }
            (2, 4)
        }
        _ => return Err(RewriteError::Unsupported),
    };
    if l4.len() < csum_at.max(port_at) + 2 {
        return Err(RewriteError::Truncated);
    }
    let mut old = [0u8; 18];
    let mut new = [0u8; 18];
    old[..16].copy_from_slice(&old_addr);
    old[16..].copy_from_slice(&l4[port_at..port_at + 2]);
    new[..16].copy_from_slice(&addr);
    new[16..].copy_from_slice(&port.to_be_bytes());
    let c = u16::from_be_bytes([l4[csum_at], l4[csum_at + 1]]);
    let c = update_bytes(c, &old, &new);
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    l4[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    ip[at..at + 16].copy_from_slice(&addr);
    Ok(())
}

/// Rewrite an ICMP error about a translated flow (destination unreachable, time exceeded,
/// parameter problem; RFC 5508): in the packet it quotes, the address and port at `inner`
/// become `addr` and `port` (with the quoted IPv4 header's checksum, and the quoted UDP
/// checksum if it is there and not zero); the ICMP checksum follows every changed word; and
/// the error's own address at `outer` becomes `outer_addr`. So a traceroute or path MTU
/// discovery through NAT sees its own packet quoted back.
pub fn rewrite_icmp_error_v4(
    ip: &mut [u8],
    inner: End,
    addr: [u8; 4],
    port: u16,
    outer: End,
    outer_addr: [u8; 4],
) -> Result<(), RewriteError> {
    if ip.len() < 20 {
        return Err(RewriteError::Truncated);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 || ip.len() < ihl + 8 + 20 + 8 || ip[9] != ICMP {
        return Err(if ip.len() < ihl + 36 {
            RewriteError::Truncated
        } else {
            RewriteError::Unsupported
        });
    }
    let icmp = &mut ip[ihl..];
    if !matches!(icmp[0], 3 | 11 | 12) {
        return Err(RewriteError::Unsupported);
    }
    let q = &icmp[8..];
    let q_ihl = usize::from(q[0] & 0x0f) * 4;
    if q_ihl < 20 || q.len() < q_ihl + 8 {
        return Err(RewriteError::Truncated);
    }
    let q_proto = q[9];
    // The quoted header and what follows it that may change: 8 bytes (ports, UDP's
    // checksum, ICMP's identifier), or for TCP up to its checksum if the quote has it.
    let span = if q_proto == TCP && q.len() >= q_ihl + 18 {
        q_ihl + 18
    } else {
        q_ihl + 8
    };
    let mut old = [0u8; 80];
    old[..span].copy_from_slice(&q[..span]);
    let q = &mut icmp[8..8 + span];
    let at = if inner == End::Source { 12 } else { 16 };
    let old_addr = [q[at], q[at + 1], q[at + 2], q[at + 3]];
    let (head, l4) = q.split_at_mut(q_ihl);
    match q_proto {
        TCP | UDP => {
            let p = if inner == End::Source { 0 } else { 2 };
            let old_port = [l4[p], l4[p + 1]];
            let new_port = port.to_be_bytes();
            let mut o = [0u8; 6];
            let mut n = [0u8; 6];
            o[..4].copy_from_slice(&old_addr);
            o[4..].copy_from_slice(&old_port);
            n[..4].copy_from_slice(&addr);
            n[4..].copy_from_slice(&new_port);
            if q_proto == UDP {
                let c = u16::from_be_bytes([l4[6], l4[7]]);
                l4[6..8].copy_from_slice(&update_udp4(c, &o, &n).to_be_bytes());
            } else if l4.len() >= 18 {
                // The quote reaches TCP's checksum (most routers quote that much).
                let c = u16::from_be_bytes([l4[16], l4[17]]);
                l4[16..18].copy_from_slice(&update_bytes(c, &o, &n).to_be_bytes());
            }
            l4[p..p + 2].copy_from_slice(&new_port);
        }
        ICMP => {
            let old_id = [l4[4], l4[5]];
            let new_id = port.to_be_bytes();
            let c = u16::from_be_bytes([l4[2], l4[3]]);
            l4[2..4].copy_from_slice(&update_bytes(c, &old_id, &new_id).to_be_bytes());
            l4[4..6].copy_from_slice(&new_id);
        }
        _ => return Err(RewriteError::Unsupported),
    }
    let c = u16::from_be_bytes([head[10], head[11]]);
    head[10..12].copy_from_slice(&update_bytes(c, &old_addr, &addr).to_be_bytes());
    head[at..at + 4].copy_from_slice(&addr);
    // The ICMP checksum covers the quote: every changed word moves it.
    let c = u16::from_be_bytes([icmp[2], icmp[3]]);
    let new_span: [u8; 80] = {
        let mut n = [0u8; 80];
        n[..span].copy_from_slice(&icmp[8..8 + span]);
        n
    };
    let c = update_bytes(c, &old[..span], &new_span[..span]);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    // The error's own header.
    let o = if outer == End::Source { 12 } else { 16 };
    let old_outer = [ip[o], ip[o + 1], ip[o + 2], ip[o + 3]];
    let c = u16::from_be_bytes([ip[10], ip[11]]);
    ip[10..12].copy_from_slice(&update_bytes(c, &old_outer, &outer_addr).to_be_bytes());
    ip[o..o + 4].copy_from_slice(&outer_addr);
    Ok(())
}

/// An IPv6 fragment header's identification, offset (bytes) and more-fragments flag.
pub type FragmentHeader = (u32, u16, bool);

/// Where an IPv6 packet's transport header is: its protocol and offset, past hop-by-hop,
/// destination options and fragment headers, and the fragment header's (identification,
/// offset in bytes, more fragments) if there is one. None for a routing header (the
/// destination would be another) or a chain cut short.
pub fn ipv6_transport(ip: &[u8]) -> Option<(u8, usize, Option<FragmentHeader>)> {
    let mut next = *ip.get(6)?;
    let mut off = 40;
    let mut frag = None;
    for _ in 0..8 {
        match next {
            0 | 60 => {
                let len = (usize::from(*ip.get(off + 1)?) + 1) * 8;
                next = *ip.get(off)?;
                off += len;
            }
            44 => {
                let h = ip.get(off..off + 8)?;
                let fo = u16::from_be_bytes([h[2], h[3]]);
                let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                frag = Some((id, fo & 0xfff8, fo & 1 != 0));
                next = h[0];
                off += 8;
            }
            _ => break,
        }
    }
    if matches!(next, 0 | 60 | 44 | 43) || off > ip.len() {
        return None;
    }
    Some((next, off, frag))
}

/// [`rewrite_icmp_error_v4`] for ICMPv6 errors (destination unreachable, packet too big,
/// time exceeded, parameter problem; RFC 4443), about a quoted packet whose transport
/// header follows its fixed header: the quoted address and port (or echo identifier) at
/// `inner` and the quoted transport checksum, the ICMPv6 checksum (quote and
/// pseudo-header), and the error's own address at `outer`.
pub fn rewrite_icmp_error_v6(
    ip: &mut [u8],
    inner: End,
    addr: [u8; 16],
    port: u16,
    outer: End,
    outer_addr: [u8; 16],
) -> Result<(), RewriteError> {
    if ip.len() < 40 + 8 + 40 + 8 {
        return Err(RewriteError::Truncated);
    }
    if ip[6] != ICMPV6 || !(1..=4).contains(&ip[40]) {
        return Err(RewriteError::Unsupported);
    }
    let o = if outer == End::Source { 8 } else { 24 };
    let mut old_outer = [0u8; 16];
    old_outer.copy_from_slice(&ip[o..o + 16]);
    let (_, icmp) = ip.split_at_mut(40);
    let q_next = icmp[8 + 6];
    let q = &mut icmp[8..];
    // Where the port (or identifier) and the quoted transport checksum are, if quoted.
    let (port_at, csum_at) = match q_next {
        TCP => (if inner == End::Source { 40 } else { 42 }, 40 + 16),
        UDP => (if inner == End::Source { 40 } else { 42 }, 40 + 6),
        ICMPV6 if matches!(q[40], 128 | 129) => (44, 42),
        _ => return Err(RewriteError::Unsupported),
    };
    let at = if inner == End::Source { 8 } else { 24 };
    // Old and new of every changed byte the ICMPv6 checksum covers: quoted address, port,
    // quoted checksum, and the outer address (pseudo-header).
    let mut old = [0u8; 36];
    let mut new = [0u8; 36];
    old[..16].copy_from_slice(&q[at..at + 16]);
    old[16..18].copy_from_slice(&q[port_at..port_at + 2]);
    new[..16].copy_from_slice(&addr);
    new[16..18].copy_from_slice(&port.to_be_bytes());
    let quoted_sum = q.len() >= csum_at + 2;
    if quoted_sum {
        let c = u16::from_be_bytes([q[csum_at], q[csum_at + 1]]);
        old[18..20].copy_from_slice(&c.to_be_bytes());
        let c2 = update_bytes(c, &old[..18], &new[..18]);
        new[18..20].copy_from_slice(&c2.to_be_bytes());
        q[csum_at..csum_at + 2].copy_from_slice(&c2.to_be_bytes());
    }
    q[at..at + 16].copy_from_slice(&addr);
    q[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    old[20..36].copy_from_slice(&old_outer);
    new[20..36].copy_from_slice(&outer_addr);
    let c = u16::from_be_bytes([icmp[2], icmp[3]]);
    let c = if quoted_sum {
        update_bytes(c, &old, &new)
    } else {
        update_bytes(
            update_bytes(c, &old[..18], &new[..18]),
            &old[20..],
            &new[20..],
        )
    };
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ip[o..o + 16].copy_from_slice(&outer_addr);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{checksum, finish, pseudo_v4, sum};
    use proptest::prelude::*;

    /// An IPv4 packet of `proto` with valid checksums (UDP: `udp_zero` sends none).
    fn packet(
        proto: u8,
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        payload: &[u8],
        udp_zero: bool,
    ) -> Vec<u8> {
        let l4_len = match proto {
            TCP => 20,
            _ => 8,
        } + payload.len();
        let mut p = vec![0u8; 20 + l4_len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        let l4 = &mut p[20..];
        match proto {
            TCP | UDP => {
                l4[0..2].copy_from_slice(&sport.to_be_bytes());
                l4[2..4].copy_from_slice(&dport.to_be_bytes());
                if proto == TCP {
                    l4[12] = 0x50;
                    l4[13] = 0x18;
                } else {
                    l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                }
            }
            _ => {
                l4[0] = 8;
                l4[4..6].copy_from_slice(&sport.to_be_bytes());
                l4[6..8].copy_from_slice(&dport.to_be_bytes());
            }
        }
        let off = if proto == TCP { 20 } else { 8 };
        l4[off..].copy_from_slice(payload);
        let c = match proto {
            TCP | UDP => {
                let c = finish(pseudo_v4(src, dst, proto, l4_len as u16) + sum(l4));
                if proto == UDP && c == 0 {
                    0xffff
                } else {
                    c
                }
            }
            _ => checksum(l4),
        };
        let at = match proto {
            TCP => 16,
            UDP => 6,
            _ => 2,
        };
        if !(proto == UDP && udp_zero) {
            l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        let h = checksum(&p[..20]);
        p[10..12].copy_from_slice(&h.to_be_bytes());
        p
    }

    /// Every checksum of `p` verifies (a zero UDP checksum: none to verify).
    fn valid(p: &[u8]) -> bool {
        let src = [p[12], p[13], p[14], p[15]];
        let dst = [p[16], p[17], p[18], p[19]];
        let l4 = &p[20..];
        let ip_ok = checksum(&p[..20]) == 0;
        let l4_ok = match p[9] {
            UDP if l4[6..8] == [0, 0] => true,
            TCP | UDP => finish(pseudo_v4(src, dst, p[9], l4.len() as u16) + sum(l4)) == 0,
            _ => checksum(l4) == 0,
        };
        ip_ok && l4_ok
    }

    proptest! {
        /// A rewrite changes exactly the field asked for and leaves every checksum valid,
        /// as a full recompute would make it.
        #[test]
        fn rewrites_keep_every_checksum_valid(
            proto in prop_oneof![Just(TCP), Just(UDP), Just(ICMP)],
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            sport in any::<u16>(), dport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            source_end in any::<bool>(), addr in any::<[u8; 4]>(), port in any::<u16>(),
            udp_zero in any::<bool>(),
        ) {
            let mut p = packet(proto, src, dst, sport, dport, &payload, udp_zero);
            prop_assert!(valid(&p));
            let end = if source_end { End::Source } else { End::Destination };
            rewrite_v4(&mut p, end, addr, port).unwrap();
            prop_assert!(valid(&p), "checksums after rewriting {:?}", end);
            let at = if source_end { 12 } else { 16 };
            prop_assert_eq!(&p[at..at + 4], &addr[..]);
            let other = if source_end { 16 } else { 12 };
            prop_assert_eq!(&p[other..other + 4], &(if source_end { dst } else { src })[..]);
            match proto {
                ICMP => prop_assert_eq!(u16::from_be_bytes([p[24], p[25]]), port),
                _ => {
                    let pp = if source_end { 20 } else { 22 };
                    prop_assert_eq!(u16::from_be_bytes([p[pp], p[pp + 1]]), port);
                }
            }
            if proto == UDP && udp_zero {
                prop_assert_eq!(&p[26..28], &[0u8, 0][..], "a zero UDP checksum stays zero");
            }
            prop_assert_eq!(&p[if proto == TCP { 40 } else { 28 }..], &payload[..]);
        }
    }

    /// An ICMP error from `from` to `to` quoting the first 28+ bytes of `quoted`.
    fn icmp_error(kind: u8, from: [u8; 4], to: [u8; 4], quoted: &[u8]) -> Vec<u8> {
        let q = &quoted[..quoted.len().min(48)];
        let len = 20 + 8 + q.len();
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[8] = 64;
        p[9] = ICMP;
        p[12..16].copy_from_slice(&from);
        p[16..20].copy_from_slice(&to);
        p[20] = kind;
        p[28..].copy_from_slice(q);
        let c = checksum(&p[20..]);
        p[22..24].copy_from_slice(&c.to_be_bytes());
        let h = checksum(&p[..20]);
        p[10..12].copy_from_slice(&h.to_be_bytes());
        p
    }

    proptest! {
        /// SNAT's way back: an error about a translated packet (pool:port as its source)
        /// reaches the inside host quoting the packet it sent, every checksum valid.
        #[test]
        fn icmp_errors_quote_the_original_packet(
            proto in prop_oneof![Just(TCP), Just(UDP), Just(ICMP)],
            kind in prop_oneof![Just(3u8), Just(11), Just(12)],
            inside in any::<[u8; 4]>(), pool in any::<[u8; 4]>(), server in any::<[u8; 4]>(),
            router in any::<[u8; 4]>(), inside_port in any::<u16>(), pool_port in any::<u16>(),
            sport in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..40),
            udp_zero in any::<bool>(),
        ) {
            // What the inside host sent, and what left Ferry (translated).
            let sent = packet(proto, inside, server, inside_port, sport, &payload, udp_zero);
            let mut out = sent.clone();
            rewrite_v4(&mut out, End::Source, pool, pool_port).unwrap();
            let mut err = icmp_error(kind, router, pool, &out);
            rewrite_icmp_error_v4(&mut err, End::Source, inside, inside_port, End::Destination, inside).unwrap();
            prop_assert_eq!(checksum(&err[..20]), 0, "outer header");
            prop_assert_eq!(checksum(&err[20..]), 0, "ICMP checksum");
            prop_assert_eq!(&err[16..20], &inside[..]);
            prop_assert_eq!(checksum(&err[28..48]), 0, "quoted header");
            // The quote is what the host sent, byte for byte (checksums included).
            let n = err.len() - 28;
            prop_assert_eq!(&err[28..], &sent[..n]);
        }
    }

    /// An IPv6 packet of `proto` (TCP, UDP, ICMPv6 echo request) with a valid checksum.
    fn packet6(
        proto: u8,
        src: [u8; 16],
        dst: [u8; 16],
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let l4_len = if proto == TCP { 20 } else { 8 } + payload.len();
        let mut p = vec![0u8; 40 + l4_len];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        p[6] = proto;
        p[7] = 64;
        p[8..24].copy_from_slice(&src);
        p[24..40].copy_from_slice(&dst);
        let l4 = &mut p[40..];
        match proto {
            TCP | UDP => {
                l4[0..2].copy_from_slice(&sport.to_be_bytes());
                l4[2..4].copy_from_slice(&dport.to_be_bytes());
                if proto == TCP {
                    l4[12] = 0x50;
                } else {
                    l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                }
            }
            _ => {
                l4[0] = 128;
                l4[4..6].copy_from_slice(&sport.to_be_bytes());
                l4[6..8].copy_from_slice(&dport.to_be_bytes());
            }
        }
        let off = if proto == TCP { 20 } else { 8 };
        l4[off..].copy_from_slice(payload);
        let at = match proto {
            TCP => 16,
            UDP => 6,
            _ => 2,
        };
        let c =
            finish(crate::wire::checksum::pseudo_v6(&src, &dst, proto, l4_len as u32) + sum(l4));
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        p
    }

    proptest! {
        #[test]
        fn nat66_rewrites_keep_the_checksum_valid(
            proto in prop_oneof![Just(TCP), Just(UDP), Just(ICMPV6)],
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
            sport in any::<u16>(), dport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            source_end in any::<bool>(), addr in any::<[u8; 16]>(), port in any::<u16>(),
        ) {
            let mut p = packet6(proto, src, dst, sport, dport, &payload);
            let end = if source_end { End::Source } else { End::Destination };
            rewrite_v6(&mut p, end, addr, port).unwrap();
            let s6: [u8; 16] = p[8..24].try_into().unwrap();
            let d6: [u8; 16] = p[24..40].try_into().unwrap();
            let l4 = &p[40..];
            prop_assert_eq!(finish(crate::wire::checksum::pseudo_v6(&s6, &d6, proto, l4.len() as u32) + sum(l4)), 0);
            prop_assert_eq!(if source_end { s6 } else { d6 }, addr);
            prop_assert_eq!(if source_end { d6 } else { s6 }, if source_end { dst } else { src });
            let pp = match proto {
                ICMPV6 => 44,
                _ if source_end => 40,
                _ => 42,
            };
            prop_assert_eq!(u16::from_be_bytes([p[pp], p[pp + 1]]), port);
        }
    }

    #[test]
    fn later_fragments_and_other_protocols() {
        let mut p = packet(UDP, [10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, b"abcd", false);
        // A later fragment: offset 1 (8 bytes). Only the address (and header checksum).
        p[7] = 1;
        let h = checksum(&{
            let mut x = p[..20].to_vec();
            x[10] = 0;
            x[11] = 0;
            x
        });
        p[10..12].copy_from_slice(&h.to_be_bytes());
        let before_l4 = p[20..].to_vec();
        rewrite_v4(&mut p, End::Source, [192, 0, 2, 1], 4000).unwrap();
        assert_eq!(checksum(&p[..20]), 0);
        assert_eq!(&p[12..16], &[192, 0, 2, 1]);
        assert_eq!(&p[20..], &before_l4[..], "no transport header to touch");
        let mut gre = packet(UDP, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"", false);
        gre[9] = 47;
        assert_eq!(
            rewrite_v4(&mut gre, End::Source, [1, 1, 1, 1], 1),
            Err(RewriteError::Unsupported)
        );
        assert_eq!(
            rewrite_v4(&mut [0x45u8; 10], End::Source, [1, 1, 1, 1], 1),
            Err(RewriteError::Truncated)
        );
        let mut short = packet(TCP, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"", false);
        short.truncate(30);
        assert_eq!(
            rewrite_v4(&mut short, End::Source, [1, 1, 1, 1], 1),
            Err(RewriteError::Truncated)
        );
    }
}
