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
