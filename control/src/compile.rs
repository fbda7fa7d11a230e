//! Compiling a validated [`Config`] into the tables workers read.
//!
//! Two steps, so that a neighbour change does not rebuild a million-route FIB:
//! [`Plan::build`] makes the FIBs and next-hop skeleton from the config (on start and on
//! reload), and [`Plan::tables`] fills in neighbour MACs for each published generation,
//! sharing the FIBs with the plan by `Arc`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ferry_dataplane::lpm::{Lpm4, Lpm6, LpmError, NextHop, MAX_NEXT_HOP};
use ferry_dataplane::tables::{link_local_of, FastMap, Hop, Neighbor, PortTable, Tables};

use crate::config::{Config, Mac};
use crate::neighbor::{FailedSets, NeighborCache};

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("FIB: {0}")]
    Fib(#[from] LpmError),
    #[error("too many next hops ({0}); at most {MAX_NEXT_HOP}")]
    TooManyHops(usize),
    #[error("port {0}: no MAC address given for it")]
    NoMac(usize),
}

/// Everything built from the config alone.
pub struct Plan {
    pub ports: Vec<PortTable>,
    pub fib4: Arc<Lpm4>,
    pub fib6: Arc<Lpm6>,
    /// Hops with no MACs filled in.
    pub hops: Vec<Hop>,
    pub ecmp: Vec<NextHop>,
    /// Static neighbours: (port, address) → MAC.
    pub statics: Vec<(u16, IpAddr, Mac)>,
    pub routes4: usize,
    pub routes6: usize,
}

impl Plan {
    /// Build FIBs and the next-hop table. `macs[i]` is the MAC of port i.
    pub fn build(cfg: &Config, macs: &[Mac]) -> Result<Plan, CompileError> {
        let mut ports = Vec::with_capacity(cfg.ports.len());
        for (i, p) in cfg.ports.iter().enumerate() {
            let mac = *macs.get(i).ok_or(CompileError::NoMac(i))?;
            let mut v4 = Vec::new();
            let mut v6 = vec![(link_local_of(mac), 64u8)];
            for a in &p.addresses {
                match a.addr {
                    IpAddr::V4(x) => v4.push((x.octets(), a.len)),
                    IpAddr::V6(x) => v6.push((x.octets(), a.len)),
                }
            }
            ports.push(PortTable {
                name: p.name.clone(),
                mac,
                mtu: p.mtu,
                vlan: p.vlan,
                v4,
                v6,
                kernel: p.exception,
            });
        }

        let mut hops: Vec<Hop> = Vec::new();
        let mut ecmp: Vec<NextHop> = Vec::new();
        let mut gateways: HashMap<IpAddr, NextHop> = HashMap::new();
        let mut r4: Vec<(u32, u8, NextHop)> = Vec::new();
        let mut r6: Vec<(u128, u8, NextHop)> = Vec::new();
        let mut add = |prefix: IpAddr, len: u8, hop: NextHop| match prefix {
            IpAddr::V4(a) => r4.push((a.into(), len, hop)),
            IpAddr::V6(a) => r6.push((a.into(), len, hop)),
        };

        // Static routes first: connected and local entries come later and win on an equal
        // prefix (the FIB build keeps the last duplicate).
        for (prefix, via) in &cfg.routes {
            let mut gw_hop = |gw: IpAddr, hops: &mut Vec<Hop>| -> NextHop {
                *gateways.entry(gw).or_insert_with(|| {
                    let port = crate::config::connected_port(&cfg.ports, gw)
                        .expect("validated: gateway is on a connected subnet")
                        as u16;
                    hops.push(Hop::Gateway {
                        port,
                        gw,
                        mac: None,
                        stale: false,
                    });
                    (hops.len() - 1) as NextHop
                })
            };
            let hop = if via.len() == 1 {
                gw_hop(via[0], &mut hops)
            } else {
                let members: Vec<NextHop> = via.iter().map(|g| gw_hop(*g, &mut hops)).collect();
                let start = ecmp.len() as u32;
                ecmp.extend_from_slice(&members);
                hops.push(Hop::Ecmp {
                    start,
                    len: members.len() as u32,
                });
                (hops.len() - 1) as NextHop
            };
            add(prefix.addr, prefix.len, hop);
        }
        for (i, p) in cfg.ports.iter().enumerate() {
            hops.push(Hop::Connected { port: i as u16 });
            let connected = (hops.len() - 1) as NextHop;
            for a in &p.addresses {
                let net = a.network();
                add(net.addr, net.len, connected);
            }
        }
        for (i, p) in ports.iter().enumerate() {
            hops.push(Hop::Local { port: i as u16 });
            let local = (hops.len() - 1) as NextHop;
            for (a, _) in &p.v4 {
                add(IpAddr::from(*a), 32, local);
            }
            for (a, _) in &p.v6 {
                add(IpAddr::from(*a), 128, local);
            }
        }
        if hops.len() > MAX_NEXT_HOP as usize {
            return Err(CompileError::TooManyHops(hops.len()));
        }
        let routes4 = r4.len();
        let routes6 = r6.len();
        let fib4 = Arc::new(Lpm4::build(&r4)?);
        let fib6 = Arc::new(Lpm6::build(&r6)?);
        // Random lookups over 64+ MiB tables: back them with huge pages (fewer TLB misses),
        // as DPDK's own tables are.
        for m in fib4
            .backing_memory()
            .into_iter()
            .chain(fib6.backing_memory())
        {
            ferry_dataplane::dpdk::advise_hugepages(m);
        }
        let statics = cfg
            .neighbors
            .iter()
            .map(|n| (n.port as u16, n.address, n.mac))
            .collect();
        Ok(Plan {
            ports,
            fib4,
            fib6,
            hops,
            ecmp,
            statics,
            routes4,
            routes6,
        })
    }

    /// Tables for one generation: the plan with neighbour MACs filled in. Static entries
    /// win over learned ones.
    pub fn tables(&self, cache: &NeighborCache, failed: &FailedSets) -> Tables {
        let mut neigh4: FastMap<(u16, u32), Neighbor> = FastMap::default();
        let mut neigh6: FastMap<(u16, u128), Neighbor> = FastMap::default();
        let mut put = |port: u16, ip: IpAddr, n: Neighbor| match ip {
            IpAddr::V4(a) => {
                neigh4.insert((port, a.into()), n);
            }
            IpAddr::V6(a) => {
                neigh6.insert((port, a.into()), n);
            }
        };
        for (port, ip, e) in cache.iter() {
            put(
                port,
                ip,
                Neighbor {
                    mac: e.mac,
                    stale: e.stale,
                },
            );
        }
        for (port, ip, mac) in &self.statics {
            put(
                *port,
                *ip,
                Neighbor {
                    mac: *mac,
                    stale: false,
                },
            );
        }
        let hops = self
            .hops
            .iter()
            .map(|h| match h {
                Hop::Gateway { port, gw, .. } => {
                    let n = match gw {
                        IpAddr::V4(a) => neigh4.get(&(*port, u32::from(*a))),
                        IpAddr::V6(a) => neigh6.get(&(*port, u128::from(*a))),
                    };
                    Hop::Gateway {
                        port: *port,
                        gw: *gw,
                        mac: n.map(|n| n.mac),
                        stale: n.is_some_and(|n| n.stale),
                    }
                }
                other => other.clone(),
            })
            .collect();
        let mut t = Tables {
            ports: self.ports.clone(),
            fib4: self.fib4.clone(),
            fib6: self.fib6.clone(),
            hops,
            ecmp: self.ecmp.clone(),
            neigh4,
            neigh6,
            failed4: failed.v4.clone(),
            failed6: failed.v6.clone(),
            fast: Vec::new(),
        };
        t.index_fast();
        t
    }

    /// True if `ip` may be learned on `port`: on one of its subnets, or link-local.
    pub fn learnable(&self, port: u16, ip: IpAddr) -> bool {
        let Some(p) = self.ports.get(port as usize) else {
            return false;
        };
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                p.v4.iter().any(|(x, len)| {
                    ferry_dataplane::tables::same_prefix32(u32::from_be_bytes(*x), a, *len)
                        && u32::from_be_bytes(*x) != a
                })
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                p.v6.iter().any(|(x, len)| {
                    ferry_dataplane::tables::same_prefix128(u128::from_be_bytes(*x), a, *len)
                        && u128::from_be_bytes(*x) != a
                })
            }
        }
    }
}

/// Time a full compile (for logs).
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, std::time::Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const CFG: &str = r#"
dpdk: { lcores: [0, 1] }
ports:
  - { name: a, devargs: net_null0, addresses: [10.0.1.1/24, "fd00:1::1/64"] }
  - { name: b, devargs: net_null1, addresses: [10.0.2.1/24, "fd00:2::1/64"] }
routes:
  - { prefix: 10.20.0.0/16, via: [10.0.2.2, 10.0.2.3] }
  - { prefix: 10.30.0.0/16, via: [10.0.2.2] }
  - { prefix: 0.0.0.0/0, via: [10.0.1.254] }
  - { prefix: "fd20::/48", via: ["fd00:2::2"] }
neighbors:
  - { address: 10.0.2.3, mac: "02:00:00:00:00:03", port: b }
"#;

    fn plan() -> Plan {
        let cfg = Config::from_yaml(CFG).unwrap();
        Plan::build(&cfg, &[[2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]]).unwrap()
    }

    fn hop4(t: &Tables, ip: &str) -> Option<Hop> {
        let a: std::net::Ipv4Addr = ip.parse().unwrap();
        t.fib4.lookup(a.into()).map(|h| t.hops[h as usize].clone())
    }

    #[test]
    fn routes_connected_and_local() {
        let p = plan();
        let cache = NeighborCache::new(Duration::from_secs(30), Duration::from_secs(10));
        let t = p.tables(&cache, &FailedSets::default());
        assert_eq!(hop4(&t, "10.0.1.1"), Some(Hop::Local { port: 0 }));
        assert_eq!(hop4(&t, "10.0.2.77"), Some(Hop::Connected { port: 1 }));
        assert!(matches!(
            hop4(&t, "10.20.3.4"),
            Some(Hop::Ecmp { len: 2, .. })
        ));
        // Shared gateway hop between the ECMP group and the /16 via the same gateway.
        let Some(Hop::Ecmp { start, .. }) = hop4(&t, "10.20.3.4") else {
            unreachable!()
        };
        let via_30 = t
            .fib4
            .lookup(u32::from(std::net::Ipv4Addr::new(10, 30, 0, 1)))
            .unwrap();
        assert_eq!(t.ecmp[start as usize], via_30);
        assert!(matches!(
            hop4(&t, "8.8.8.8"),
            Some(Hop::Gateway {
                port: 0,
                mac: None,
                ..
            })
        ));
        // Static neighbour fills the gateway MAC.
        let m = t.ecmp[start as usize + 1];
        assert!(matches!(
            &t.hops[m as usize],
            Hop::Gateway {
                mac: Some([2, 0, 0, 0, 0, 3]),
                ..
            }
        ));
        // IPv6 local includes the EUI-64 link-local.
        let ll = u128::from_be_bytes(link_local_of([2, 0, 0, 0, 0, 0xb]));
        assert_eq!(
            t.fib6.lookup(ll).map(|h| t.hops[h as usize].clone()),
            Some(Hop::Local { port: 1 })
        );
    }

    #[test]
    fn learned_neighbours_fill_gateways_and_stale_shows() {
        let p = plan();
        let now = Instant::now();
        let mut cache = NeighborCache::new(Duration::from_secs(30), Duration::from_secs(10));
        assert!(p.learnable(1, "10.0.2.2".parse().unwrap()));
        assert!(
            !p.learnable(1, "10.0.1.2".parse().unwrap()),
            "wrong port's subnet"
        );
        assert!(
            !p.learnable(1, "10.0.2.1".parse().unwrap()),
            "our own address"
        );
        cache.learn(
            1,
            "10.0.2.2".parse().unwrap(),
            [2, 0, 0, 0, 0, 2],
            now,
            true,
        );
        let t = p.tables(&cache, &FailedSets::default());
        assert!(matches!(
            hop4(&t, "10.30.1.1"),
            Some(Hop::Gateway {
                mac: Some([2, 0, 0, 0, 0, 2]),
                stale: false,
                ..
            })
        ));
        cache.age(now + Duration::from_secs(31));
        let t = p.tables(&cache, &FailedSets::default());
        assert!(matches!(
            hop4(&t, "10.30.1.1"),
            Some(Hop::Gateway { stale: true, .. })
        ));
        assert!(Arc::ptr_eq(&t.fib4, &p.fib4), "FIB shared, not rebuilt");
    }
}
