//! Which worker owns a NAT flow, found from a packet alone in either direction (issue 5):
//! the Toeplitz hash NICs spread packets over queues with (RSS), the SNAT port choice that
//! makes a reply's hash land on its flow's owner, and the owner functions for ports without
//! RSS (memif, af_packet fanout, tap), where a worker hands a packet it does not own to the
//! owner over a ring.
//!
//! Not wired into the worker yet: the conntrack stage will use it.

/// The RSS key Ferry programs into NICs (Microsoft's sample key, as most drivers default
/// to): fixed, so that the control side can predict a reply's queue.
pub const RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// Entries of the redirection table Ferry programs: entry `i` holds queue `i % queues`.
pub const RETA_SIZE: usize = 128;

/// The Toeplitz hash of `input` (bytes in network order) under `key`: for each set bit of
/// the input, XOR in the 32 bits of the key that start at that bit.
pub fn toeplitz(input: &[u8], key: &[u8; 40]) -> u32 {
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    let mut hash = 0u32;
    for (next, &byte) in (4..).zip(input.iter().take(36)) {
        for bit in (0..8).rev() {
            if byte >> bit & 1 == 1 {
                hash ^= window;
            }
            // Slide the window one bit along the key.
            let incoming = key.get(next).map_or(0, |b| (b >> bit) & 1);
            window = (window << 1) | u32::from(incoming);
        }
    }
    hash
}

/// The hash of an IPv4 TCP/UDP 4-tuple (addresses and ports in host order), as a NIC with
/// RSS computes it.
pub fn hash_v4(src: u32, dst: u32, sport: u16, dport: u16) -> u32 {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&src.to_be_bytes());
    b[4..8].copy_from_slice(&dst.to_be_bytes());
    b[8..10].copy_from_slice(&sport.to_be_bytes());
    b[10..12].copy_from_slice(&dport.to_be_bytes());
    toeplitz(&b, &RSS_KEY)
}

/// The queue a hash lands on with Ferry's redirection table over `queues` queues.
pub fn queue_of(hash: u32, queues: u16) -> u16 {
    ((hash as usize % RETA_SIZE) % queues.max(1) as usize) as u16
}

/// A worker's share of an SNAT port range `lo..=hi` among `workers`: contiguous blocks,
/// the last one taking the remainder. Empty if there are more workers than ports.
pub fn port_share(lo: u16, hi: u16, workers: u16, worker: u16) -> std::ops::RangeInclusive<u16> {
    let n = u32::from(hi - lo) + 1;
    let w = u32::from(workers.max(1));
    let per = n / w;
    if per == 0 {
        #[allow(clippy::reversed_empty_ranges)]
        return 1..=0; // (empty)
    }
    let start = u32::from(lo) + per * u32::from(worker);
    let end = if u32::from(worker) + 1 == w {
        u32::from(hi)
    } else {
        start + per - 1
    };
    start as u16..=end as u16
}

/// The owner of an SNAT reply without RSS: the worker whose share holds its destination
/// port (the port the translation chose), or None if it is outside the range.
pub fn snat_owner(port: u16, lo: u16, hi: u16, workers: u16) -> Option<u16> {
    if !(lo..=hi).contains(&port) {
        return None;
    }
    let per = ((u32::from(hi - lo) + 1) / u32::from(workers.max(1))).max(1);
    Some((u32::from(port - lo) / per).min(u32::from(workers.max(1)) - 1) as u16)
}

/// Where an SNAT port is wanted: the reply `server:server_port -> pool:port` must reach
/// `worker`'s queue among `queues`, with a port of `share`.
#[derive(Clone, Debug)]
pub struct PortWanted {
    pub server: u32,
    pub server_port: u16,
    pub pool: u32,
    pub share: std::ops::RangeInclusive<u16>,
    pub worker: u16,
    pub queues: u16,
}

/// On a NIC with RSS: a port of the share such that the reply hashes to the worker's
/// queue, searching from `from` (the caller rotates it); `taken` says whether a port is in
/// use. None if no port of the share qualifies (the caller falls back to handing replies
/// over).
pub fn snat_port_for_queue(
    w: &PortWanted,
    from: u16,
    mut taken: impl FnMut(u16) -> bool,
) -> Option<u16> {
    let (server, server_port, pool, worker, queues) =
        (w.server, w.server_port, w.pool, w.worker, w.queues);
    let share = w.share.clone();
    let (lo, hi) = (*share.start(), *share.end());
    if lo > hi {
        return None;
    }
    let n = u32::from(hi - lo) + 1;
    let start = u32::from(from.clamp(lo, hi) - lo);
    (0..n).map(|k| lo + ((start + k) % n) as u16).find(|&p| {
        !taken(p)
            && queue_of(hash_v4(server, pool, server_port, p), queues) == worker % queues.max(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Microsoft's RSS verification suite (IPv4 with TCP ports), as published with the
    /// sample key.
    #[test]
    fn the_published_verification_vectors() {
        let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        for (src, sport, dst, dport, want) in [
            ("66.9.149.187", 2794, "161.142.100.80", 1766, 0x51cc_c178u32),
            ("199.92.111.2", 14230, "65.69.140.83", 4739, 0xc626_b0ea),
            ("24.19.198.95", 12898, "12.22.207.184", 38024, 0x5c2b_394a),
            ("38.27.205.30", 48228, "209.142.163.6", 2217, 0xafc7_327f),
            ("153.39.163.191", 44251, "202.188.127.2", 1303, 0x10e8_28a2),
        ] {
            assert_eq!(
                hash_v4(ip(src), ip(dst), sport, dport),
                want,
                "{src}:{sport} -> {dst}:{dport}"
            );
        }
    }

    proptest! {
        /// Against DPDK's own rte_softrss (through the C shim), on random 4-tuples and keys.
        #[test]
        fn toeplitz_matches_rte_softrss(
            src in any::<u32>(), dst in any::<u32>(), sport in any::<u16>(), dport in any::<u16>(),
            key in proptest::collection::vec(any::<u8>(), 40),
        ) {
            let key: [u8; 40] = key.try_into().unwrap();
            let mut b = [0u8; 12];
            b[0..4].copy_from_slice(&src.to_be_bytes());
            b[4..8].copy_from_slice(&dst.to_be_bytes());
            b[8..10].copy_from_slice(&sport.to_be_bytes());
            b[10..12].copy_from_slice(&dport.to_be_bytes());
            let words = [src, dst, (u32::from(sport) << 16) | u32::from(dport)];
            prop_assert_eq!(toeplitz(&b, &key), crate::dpdk::softrss(&words, &key));
        }

        /// The chosen port makes the reply land on the owner's queue, and is in its share.
        #[test]
        fn a_chosen_port_sends_the_reply_to_its_owner(
            server in any::<u32>(), server_port in 1..u16::MAX, pool in any::<u32>(),
            workers in 1..8u16, from in any::<u16>(),
        ) {
            for w in 0..workers {
                let share = port_share(1024, 65535, workers, w);
                let want = PortWanted { server, server_port, pool, share: share.clone(), worker: w, queues: workers };
                let p = snat_port_for_queue(&want, from, |_| false)
                    .expect("a share of thousands of ports has one for every queue");
                prop_assert!(share.contains(&p));
                prop_assert_eq!(queue_of(hash_v4(server, pool, server_port, p), workers), w);
                prop_assert_eq!(snat_owner(p, 1024, 65535, workers), Some(w));
            }
        }
    }

    #[test]
    fn shares_cover_the_range_without_overlap() {
        for workers in 1..=7u16 {
            let mut next = 1024u32;
            for w in 0..workers {
                let s = port_share(1024, 65535, workers, w);
                assert_eq!(u32::from(*s.start()), next);
                for p in [*s.start(), *s.end()] {
                    assert_eq!(snat_owner(p, 1024, 65535, workers), Some(w));
                }
                next = u32::from(*s.end()) + 1;
            }
            assert_eq!(next, 65536);
        }
        assert_eq!(snat_owner(80, 1024, 65535, 2), None);
        assert!(port_share(10, 11, 4, 0).is_empty());
    }
}
