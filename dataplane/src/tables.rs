//! What a worker reads: the tables of one snapshot (ports, FIBs, next hops, neighbours).
//!
//! Built by the control side (`ferry_control::compile`), never changed after publishing.
//! The FIBs are behind `Arc` so a neighbour change republishes small tables and shares the
//! big ones with the previous generation.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use crate::lpm::{Lpm4, Lpm6, NextHop};

pub type Mac = [u8; 6];

/// One port as the packet path sees it.
#[derive(Clone, Debug)]
pub struct PortTable {
    pub name: String,
    pub mac: Mac,
    pub mtu: u16,
    /// 802.1Q tag on this port: frames in must carry it, frames out get it.
    pub vlan: Option<u16>,
    /// IPv4 addresses with prefix length.
    pub v4: Vec<([u8; 4], u8)>,
    /// IPv6 addresses with prefix length, the link-local one included.
    pub v6: Vec<([u8; 16], u8)>,
    /// True if the port has a kernel interface on the exception path.
    pub kernel: bool,
    /// NAT addresses on this port (SNAT pools, DNAT addresses), prefixes: answered in
    /// ARP / ND as the port's own, routed as local.
    pub nat4: Vec<(u32, u8)>,
    pub nat6: Vec<(u128, u8)>,
}

impl PortTable {
    /// The source address for packets Ferry originates towards `dst` on this port.
    pub fn v4_source_for(&self, dst: [u8; 4]) -> Option<[u8; 4]> {
        let d = u32::from_be_bytes(dst);
        self.v4
            .iter()
            .find(|(a, len)| same_prefix32(u32::from_be_bytes(*a), d, *len))
            .or(self.v4.first())
            .map(|(a, _)| *a)
    }

    /// The IPv6 source for packets towards `dst` (RFC 6724 in short): link-local for a
    /// link-local destination; else a global on the same prefix, else any global (an
    /// off-link sender must get a routable source), else the link-local.
    pub fn v6_source_for(&self, dst: &[u8; 16]) -> Option<[u8; 16]> {
        let d = u128::from_be_bytes(*dst);
        let link_local = self.v6.iter().find(|(a, _)| is_link_local(a));
        if is_link_local(dst) {
            return link_local.or(self.v6.first()).map(|(a, _)| *a);
        }
        self.v6
            .iter()
            .find(|(a, len)| !is_link_local(a) && same_prefix128(u128::from_be_bytes(*a), d, *len))
            .or_else(|| self.v6.iter().find(|(a, _)| !is_link_local(a)))
            .or(link_local)
            .map(|(a, _)| *a)
    }

    pub fn has_v4(&self, ip: [u8; 4]) -> bool {
        let x = u32::from_be_bytes(ip);
        self.v4.iter().any(|(a, _)| *a == ip)
            || self.nat4.iter().any(|&(p, l)| same_prefix32(p, x, l))
    }

    pub fn has_v6(&self, ip: &[u8; 16]) -> bool {
        let x = u128::from_be_bytes(*ip);
        self.v6.iter().any(|(a, _)| a == ip)
            || self.nat6.iter().any(|&(p, l)| same_prefix128(p, x, l))
    }
}

pub fn is_link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && (a[1] & 0xc0) == 0x80
}

pub fn same_prefix32(a: u32, b: u32, len: u8) -> bool {
    len == 0 || (len <= 32 && (a ^ b) >> (32 - len as u32) == 0)
}

pub fn same_prefix128(a: u128, b: u128, len: u8) -> bool {
    len == 0 || (len <= 128 && (a ^ b) >> (128 - len as u32) == 0)
}

/// The EUI-64 link-local address of a MAC (RFC 4291 appendix A).
pub fn link_local_of(mac: Mac) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8] = mac[0] ^ 0x02;
    a[9] = mac[1];
    a[10] = mac[2];
    a[11] = 0xff;
    a[12] = 0xfe;
    a[13] = mac[3];
    a[14] = mac[4];
    a[15] = mac[5];
    a
}

/// What a FIB entry points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hop {
    /// One of our own addresses: answer or hand to the kernel.
    Local { port: u16 },
    /// On-link destination: resolve the destination itself on `port`.
    Connected { port: u16 },
    /// Via a gateway on `port`, with its MAC if resolved (and whether it needs a refresh).
    Gateway {
        port: u16,
        gw: IpAddr,
        mac: Option<Mac>,
        stale: bool,
    },
    /// ECMP group: members are `ecmp[start..start+len]`, each a `Gateway` hop id.
    Ecmp { start: u32, len: u32 },
}

/// What the fast path needs of a next hop (either family), flattened per hop id by
/// [`Tables::index_fast`], so that forwarding reads one small entry instead of a [`Hop`] and
/// a [`PortTable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastHop {
    /// Ethernet destination and source, as written at the start of the frame (for
    /// `Connected`, only the source is set; the destination comes from the neighbour).
    pub l2: [u8; 12],
    pub port: u16,
    /// Egress MTU: larger datagrams take the slow path (fragments, ICMP).
    pub mtu: u16,
    pub kind: FastKind,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FastKind {
    /// The slow path decides (local, unresolved or stale gateway, tagged egress, ...).
    #[default]
    Slow,
    /// A resolved, fresh gateway on an untagged port: `l2` is complete.
    Direct,
    /// On-link on an untagged port: the destination MAC is the neighbour's.
    Connected,
    /// An ECMP group: the member is chosen by flow hash, and must itself be `Direct`.
    Ecmp,
}

impl FastHop {
    fn of(h: &Hop, ports: &[PortTable]) -> FastHop {
        let port_of = |port: u16| ports.get(port as usize).filter(|p| p.vlan.is_none());
        let mut f = FastHop::default();
        match h {
            Hop::Gateway {
                port,
                mac: Some(mac),
                stale: false,
                ..
            } => {
                if let Some(p) = port_of(*port) {
                    f.l2[..6].copy_from_slice(mac);
                    f.l2[6..].copy_from_slice(&p.mac);
                    (f.port, f.mtu, f.kind) = (*port, p.mtu, FastKind::Direct);
                }
            }
            Hop::Connected { port } => {
                if let Some(p) = port_of(*port) {
                    f.l2[6..].copy_from_slice(&p.mac);
                    (f.port, f.mtu, f.kind) = (*port, p.mtu, FastKind::Connected);
                }
            }
            Hop::Ecmp { .. } => f.kind = FastKind::Ecmp,
            Hop::Gateway { .. } | Hop::Local { .. } => {}
        }
        f
    }
}

/// A neighbour entry as the packet path sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbor {
    pub mac: Mac,
    /// Past its reachable time: still used, but the worker sends a probe.
    pub stale: bool,
}

/// Keys are (port, address), hashed with a seeded multiply-rotate (no SipHash on the hot
/// path; see [`SeededState`] for the seed).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(n as u64)
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64)
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

/// Seeds [`FastHasher`] with a per-map random value, so that nobody on the wire can choose
/// neighbour addresses that collide.
#[derive(Clone)]
pub struct SeededState(u64);

impl Default for SeededState {
    fn default() -> Self {
        SeededState(std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64))
    }
}

impl BuildHasher for SeededState {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

pub type FastMap<K, V> = HashMap<K, V, SeededState>;
pub type FastSet<K> = HashSet<K, SeededState>;

/// All tables of one snapshot. What only a full compile changes (ports, ECMP groups, the
/// FIBs) is behind `Arc`, shared with the plan and the generations before and after; a
/// publish builds only what neighbours change (hops with their MACs, neighbour maps).
pub struct Tables {
    pub ports: Arc<Vec<PortTable>>,
    pub fib4: Arc<Lpm4>,
    pub fib6: Arc<Lpm6>,
    pub hops: Vec<Hop>,
    pub ecmp: Arc<Vec<NextHop>>,
    pub neigh4: FastMap<(u16, u32), Neighbor>,
    pub neigh6: FastMap<(u16, u128), Neighbor>,
    /// Neighbours whose resolution failed (no answer to `tuning.neighbor_probes`
    /// solicitations), negatively cached by the control side for `neighbor_failed_s`:
    /// packets to them are dropped at once with an ICMP unreachable, not held.
    pub failed4: Arc<FastSet<(u16, u32)>>,
    pub failed6: Arc<FastSet<(u16, u128)>>,
    /// `hops` flattened for the fast path, by the same index (see [`FastHop`]). Empty
    /// until [`Tables::index_fast`] runs; the fast path then leaves everything to the slow one.
    pub fast: Vec<FastHop>,
    /// NAT rules (issue 5), if any: their addresses route as local, and hops out of their
    /// ports are left to the slow path ([`Tables::index_fast`]), which runs the NAT stage.
    pub nat: Option<Arc<crate::nat::NatTables>>,
}

impl Tables {
    /// Build `fast` from `hops` and `ports`. Call once the tables are complete, before
    /// publishing them (and again if a test changes them).
    pub fn index_fast(&mut self) {
        let stateful = self.nat.as_ref().map_or(0, |n| n.stateful_ports);
        self.fast = self
            .hops
            .iter()
            .map(|h| {
                let f = FastHop::of(h, &self.ports);
                if stateful & (1u64 << (f.port % 64)) != 0 && f.kind != FastKind::Ecmp {
                    // Out of a NAT port: the slow path runs the NAT stage.
                    FastHop::default()
                } else {
                    f
                }
            })
            .collect();
    }

    /// True if resolving `ip` on `port` failed recently (see `failed4`).
    #[inline]
    pub fn neighbor_failed(&self, port: u16, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => !self.failed4.is_empty() && self.failed4.contains(&(port, a.into())),
            IpAddr::V6(a) => !self.failed6.is_empty() && self.failed6.contains(&(port, a.into())),
        }
    }

    /// Tables with ports and nothing routed (before the first compile, and for tests).
    pub fn empty(ports: Vec<PortTable>) -> Result<Tables, crate::lpm::LpmError> {
        Ok(Tables {
            ports: Arc::new(ports),
            fib4: Arc::new(Lpm4::build(&[])?),
            fib6: Arc::new(Lpm6::build(&[])?),
            hops: Vec::new(),
            ecmp: Arc::default(),
            neigh4: FastMap::default(),
            neigh6: FastMap::default(),
            failed4: Arc::default(),
            failed6: Arc::default(),
            fast: Vec::new(),
            nat: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_eui64() {
        let ll = link_local_of([0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc]);
        assert_eq!(
            std::net::Ipv6Addr::from(ll).to_string(),
            "fe80::ff:feaa:bbcc"
        );
        assert!(is_link_local(&ll));
    }

    #[test]
    fn prefix_compare() {
        assert!(same_prefix32(0x0a0a0101, 0x0a0a01ff, 24));
        assert!(!same_prefix32(0x0a0a0101, 0x0a0a0201, 24));
        assert!(same_prefix32(1, 2, 0));
        assert!(same_prefix32(0x0a0a0105, 0x0a0a0105, 32));
        assert!(
            !same_prefix32(0x0a0a0105, 0x0a0a0104, 32),
            "/32: every bit counts"
        );
        assert!(same_prefix32(0x0a0a0105, 0x0a0a0104, 31));
        assert!(!same_prefix32(0x0a0a0105, 0x0a0a0105, 33), "no such length");
        assert!(!same_prefix128(1, 2, 128));
        assert!(same_prefix128(1 << 100, (1 << 100) | 7, 64));
    }

    #[test]
    fn source_address_prefers_same_prefix() {
        let p = PortTable {
            name: "x".into(),
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            vlan: None,
            v4: vec![([10, 0, 0, 1], 24), ([10, 0, 1, 1], 24)],
            v6: vec![
                (link_local_of([2, 0, 0, 0, 0, 1]), 64),
                (
                    "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets(),
                    64,
                ),
            ],
            kernel: false,
            nat4: Vec::new(),
            nat6: Vec::new(),
        };
        assert_eq!(p.v4_source_for([10, 0, 1, 9]), Some([10, 0, 1, 1]));
        assert_eq!(p.v4_source_for([192, 0, 2, 1]), Some([10, 0, 0, 1]));
        let d = "fd00::9".parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert_eq!(p.v6_source_for(&d), Some(p.v6[1].0));
        let d = "fe80::9".parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert_eq!(p.v6_source_for(&d), Some(p.v6[0].0));
    }
}
