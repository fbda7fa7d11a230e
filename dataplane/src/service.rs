//! Virtual services (issue 6) as workers see them: a VIP, port and protocol spread over
//! backends by a scheduler, forwarded by NAT, FullNAT, DR or a tunnel.
//!
//! The NAT stage runs them: a packet to a VIP is classified like a DNAT packet (owned by a
//! hash of the client's address), its flow looked up in the worker's flow table, and only
//! on a miss is a backend scheduled ([`Services::schedule`]). Flows name their service as
//! `SVC_FLAG | service id` and their backend by its stable id, so a flow outlives every
//! snapshot and ends when its service or backend is deleted.
//!
//! The snapshot part is split in two so that a health change publishes fast: the index
//! ([`SvcIndex`]: VIPs, backend endpoints, FullNAT local addresses, live ids) depends only
//! on the configuration; each [`Service`] (its backends' health and weights, its
//! scheduling table) is an `Arc` of its own, rebuilt alone when one of its backends changes.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::lb;
use crate::tables::{FastMap, FastSet};

/// Set in a flow's rule id: the flow is a service's (the low bits are the service id).
pub const SVC_FLAG: u16 = 0x8000;
/// Services (ids below this).
pub const MAX_SERVICES: usize = 16384;
/// Backends in all (stable ids below this).
pub const MAX_BACKENDS: usize = 1 << 20;
/// FullNAT local ports (each worker takes its share).
pub const LOCAL_PORTS: (u16, u16) = (1024, 65535);
/// Longest smooth-WRR period kept (longer ones are scaled: see [`lb::smooth_wrr`]).
pub const WRR_MAX: usize = 1 << 16;

/// The name of `v` in a table of (name, value).
fn name_in<T: PartialEq>(table: &[(&'static str, T)], v: T) -> &'static str {
    table.iter().find(|(_, s)| *s == v).map_or("?", |(n, _)| n)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sched {
    Rr,
    Wrr,
    Lc,
    Wlc,
    Sh,
    Dh,
    Maglev,
}

impl Sched {
    pub const ALL: [(&'static str, Sched); 7] = [
        ("rr", Sched::Rr),
        ("wrr", Sched::Wrr),
        ("lc", Sched::Lc),
        ("wlc", Sched::Wlc),
        ("sh", Sched::Sh),
        ("dh", Sched::Dh),
        ("maglev", Sched::Maglev),
    ];
    pub fn name(self) -> &'static str {
        name_in(&Sched::ALL, self)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Forward {
    /// DNAT to the backend; replies come back through Ferry.
    Nat,
    /// DNAT, and SNAT to a local address: backends can be anywhere.
    FullNat,
    /// Direct routing: the frame goes to the backend's MAC unchanged.
    Dr,
    /// IP-in-IP (IPv6 in IPv6 for IPv6 VIPs) to the backend.
    Ipip,
    /// Generic UDP encapsulation (GUE variant 0) to the backend's `gue_port`.
    Gue,
}

impl Forward {
    pub const ALL: [(&'static str, Forward); 5] = [
        ("nat", Forward::Nat),
        ("fullnat", Forward::FullNat),
        ("dr", Forward::Dr),
        ("ipip", Forward::Ipip),
        ("gue", Forward::Gue),
    ];
    pub fn name(self) -> &'static str {
        name_in(&Forward::ALL, self)
    }
    /// Replies come back through Ferry (and are translated).
    pub fn two_way(self) -> bool {
        matches!(self, Forward::Nat | Forward::FullNat)
    }
}

/// What a service does with new flows when no backend can take them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WhenDown {
    /// TCP and UDP: ICMP port unreachable (a TCP client's connect fails at once).
    Reject,
    /// Keep scheduling over every backend that is not draining, up or not.
    All,
}

/// A backend as workers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Stable across snapshots (flows name their backend by it).
    pub id: u32,
    pub addr: IpAddr,
    /// 0: the port the client sent to.
    pub port: u16,
    /// Configured weight.
    pub weight: u32,
    /// The weight scheduling uses now (lower while slow start ramps a backend up).
    pub effective: u32,
    pub drain: bool,
    pub up: bool,
}

impl Backend {
    /// New flows may go to it.
    pub fn eligible(&self) -> bool {
        self.up && !self.drain && self.effective > 0
    }
}

/// One service with its scheduling table.
#[derive(Debug)]
pub struct Service {
    pub id: u16,
    pub name: String,
    pub vip: IpAddr,
    /// 0: every port.
    pub port: u16,
    pub proto: u8,
    pub sched: Sched,
    pub forward: Forward,
    /// FullNAT sources towards backends.
    pub local: Vec<IpAddr>,
    /// The tunnel's source (IPIP, GUE): the address of the port towards the backends.
    pub tunnel_src: Option<IpAddr>,
    pub gue_port: u16,
    pub when_down: WhenDown,
    /// Client affinity, in flow-table ticks (0: none).
    pub persistence: u32,
    pub backends: Vec<Backend>,
    /// rr: the eligible backends; wrr: one smooth period; sh, dh, maglev: the Maglev
    /// table. Indices into `backends`.
    pub table: Vec<u32>,
    /// The Maglev table's digest (sh, dh, maglev), the same on every node with the same
    /// backends and weights.
    pub digest: u64,
    pub maglev_size: u32,
    /// Backend id → index in `backends` (one-way flows find their backend by it).
    pub by_id: FastMap<u32, u32>,
}

impl Service {
    /// The backend with this id.
    #[inline]
    pub fn backend(&self, id: u32) -> Option<&Backend> {
        self.backends.get(*self.by_id.get(&id)? as usize)
    }

    /// Build the scheduling table. `all`: [`WhenDown::All`] and nothing is up, so every
    /// backend that is not draining counts.
    pub fn new(mut s: Service) -> Service {
        let mut elig: Vec<u32> = (0..s.backends.len() as u32)
            .filter(|&i| s.backends[i as usize].eligible())
            .collect();
        if elig.is_empty() && s.when_down == WhenDown::All {
            elig = (0..s.backends.len() as u32)
                .filter(|&i| {
                    let b = &s.backends[i as usize];
                    !b.drain && b.effective > 0
                })
                .collect();
        }
        s.by_id = s
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id, i as u32))
            .collect();
        let weight = |i: u32| s.backends[i as usize].effective;
        s.table = match s.sched {
            Sched::Rr | Sched::Lc | Sched::Wlc => elig.clone(),
            Sched::Wrr => {
                let w: Vec<u32> = elig.iter().map(|&i| weight(i)).collect();
                lb::smooth_wrr(&w, WRR_MAX)
                    .into_iter()
                    .map(|j| elig[j as usize])
                    .collect()
            }
            Sched::Sh | Sched::Dh | Sched::Maglev => {
                let ws: Vec<lb::Weighted> = elig
                    .iter()
                    .map(|&i| {
                        let b = &s.backends[i as usize];
                        lb::Weighted {
                            key: lb::backend_key(b.addr, b.port),
                            weight: b.effective,
                        }
                    })
                    .collect();
                let t = lb::maglev_table(&ws, s.maglev_size);
                s.digest = lb::maglev_digest(&ws, &t);
                t.into_iter().map(|j| elig[j as usize]).collect()
            }
        };
        s
    }
}

/// Per-backend counts shared by every worker and the control side (they outlive
/// snapshots): live flows (what lc and wlc compare) and flows ever scheduled.
pub struct BackendStats {
    pub conns: Box<[AtomicU32]>,
    pub created: Box<[AtomicU64]>,
    /// Passive health: TCP connections the backend answered (SYN-ACK), and those it
    /// refused (RST to the SYN) or left unanswered (the client sent its SYN again).
    pub answered: Box<[AtomicU64]>,
    pub failed: Box<[AtomicU64]>,
}

impl BackendStats {
    pub fn new(n: usize) -> Arc<BackendStats> {
        let zeros = || (0..n).map(|_| AtomicU64::new(0)).collect();
        Arc::new(BackendStats {
            conns: (0..n).map(|_| AtomicU32::new(0)).collect(),
            created: zeros(),
            answered: zeros(),
            failed: zeros(),
        })
    }

    /// A connection's outcome, for passive health (`ok`: the backend answered its SYN).
    #[inline]
    pub fn outcome(&self, id: u32, ok: bool) {
        let c = if ok { &self.answered } else { &self.failed };
        if let Some(c) = c.get(id as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (answered, failed) so far.
    pub fn outcomes(&self, id: u32) -> (u64, u64) {
        let get = |v: &[AtomicU64]| v.get(id as usize).map_or(0, |c| c.load(Ordering::Relaxed));
        (get(&self.answered), get(&self.failed))
    }
    #[inline]
    pub fn conns(&self, id: u32) -> u32 {
        self.conns
            .get(id as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
    #[inline]
    pub fn opened(&self, id: u32) {
        if let Some(c) = self.conns.get(id as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(c) = self.created.get(id as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
    #[inline]
    pub fn closed(&self, id: u32) {
        if let Some(c) = self.conns.get(id as usize) {
            // Never below zero (a count reset by a restart of the stats is not negative).
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
    }
}

/// The configuration-only part of the services snapshot.
#[derive(Debug, Default)]
pub struct SvcIndex {
    /// (VIP, protocol, port or 0) → index in [`Services::list`].
    pub vip4: FastMap<(u32, u8, u16), u32>,
    pub vip6: FastMap<(u128, u8, u16), u32>,
    /// NAT-mode backend endpoints (address, protocol, port or 0): replies come from them.
    pub back4: FastSet<(u32, u8, u16)>,
    pub back6: FastSet<(u128, u8, u16)>,
    /// FullNAT local addresses: replies come to them.
    pub local4: FastSet<u32>,
    pub local6: FastSet<u128>,
    /// Service ids in the snapshot.
    live: Vec<bool>,
    /// Backend ids in the snapshot (a bit each).
    backends: Vec<u64>,
    /// Service id → index in [`Services::list`] (u32::MAX: none).
    pos: Vec<u32>,
}

impl SvcIndex {
    pub fn build(list: &[Arc<Service>]) -> SvcIndex {
        let mut x = SvcIndex {
            live: vec![false; MAX_SERVICES],
            backends: vec![0; MAX_BACKENDS / 64],
            pos: vec![u32::MAX; MAX_SERVICES],
            ..Default::default()
        };
        for (i, s) in list.iter().enumerate() {
            x.live[usize::from(s.id) % MAX_SERVICES] = true;
            x.pos[usize::from(s.id) % MAX_SERVICES] = i as u32;
            match s.vip {
                IpAddr::V4(a) => x.vip4.insert((a.into(), s.proto, s.port), i as u32),
                IpAddr::V6(a) => x.vip6.insert((a.into(), s.proto, s.port), i as u32),
            };
            for l in &s.local {
                match *l {
                    IpAddr::V4(a) => x.local4.insert(a.into()),
                    IpAddr::V6(a) => x.local6.insert(a.into()),
                };
            }
            for b in &s.backends {
                let id = b.id as usize % MAX_BACKENDS;
                x.backends[id / 64] |= 1 << (id % 64);
                if s.forward == Forward::Nat {
                    let p = if s.port == 0 { 0 } else { b.port };
                    match b.addr {
                        IpAddr::V4(a) => x.back4.insert((a.into(), s.proto, p)),
                        IpAddr::V6(a) => x.back6.insert((a.into(), s.proto, p)),
                    };
                }
            }
        }
        x
    }
}

/// The services part of a snapshot.
#[derive(Clone, Debug, Default)]
pub struct Services {
    pub list: Vec<Arc<Service>>,
    pub index: Arc<SvcIndex>,
}

/// Why no backend was scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoBackend {
    Reject,
}

/// What a flow's first packet tells the scheduler.
#[derive(Clone, Copy, Debug)]
pub struct FlowHash {
    /// The 5-tuple's hash (maglev).
    pub tuple: u64,
    /// The client address's (sh).
    pub src: u64,
    /// The destination address's (dh).
    pub dst: u64,
}

impl Services {
    pub fn new(list: Vec<Arc<Service>>) -> Services {
        let index = Arc::new(SvcIndex::build(&list));
        Services { list, index }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    #[inline]
    pub fn service_live(&self, id: u16) -> bool {
        self.index
            .live
            .get(usize::from(id) % MAX_SERVICES)
            .copied()
            .unwrap_or(false)
    }

    #[inline]
    pub fn backend_live(&self, id: u32) -> bool {
        let id = id as usize % MAX_BACKENDS;
        self.index
            .backends
            .get(id / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// The service with this id.
    #[inline]
    pub fn by_id(&self, id: u16) -> Option<&Service> {
        let i = *self.index.pos.get(usize::from(id) % MAX_SERVICES)?;
        self.list.get(i as usize).map(|s| &**s)
    }

    /// The service listening on (VIP, protocol, port), by index, if any.
    #[inline]
    pub fn find4(&self, vip: u32, proto: u8, port: u16) -> Option<u32> {
        let m = &self.index.vip4;
        if m.is_empty() {
            return None;
        }
        m.get(&(vip, proto, port))
            .or_else(|| m.get(&(vip, proto, 0)))
            .copied()
    }

    #[inline]
    pub fn find6(&self, vip: u128, proto: u8, port: u16) -> Option<u32> {
        let m = &self.index.vip6;
        if m.is_empty() {
            return None;
        }
        m.get(&(vip, proto, port))
            .or_else(|| m.get(&(vip, proto, 0)))
            .copied()
    }

    /// Schedule a backend for a new flow of `s` (index into `s.backends`). `rr`: this
    /// worker's cursor for the service.
    #[inline]
    pub fn schedule(
        s: &Service,
        h: FlowHash,
        rr: &mut u32,
        stats: &BackendStats,
    ) -> Result<usize, NoBackend> {
        let t = &s.table;
        if t.is_empty() {
            return Err(NoBackend::Reject);
        }
        let i = match s.sched {
            Sched::Rr | Sched::Wrr => {
                let i = *rr as usize % t.len();
                *rr = (i as u32 + 1) % t.len() as u32;
                t[i]
            }
            Sched::Lc | Sched::Wlc => {
                // IPVS's (w)lc: fewest connections (per unit of weight); ties go round
                // robin from this worker's cursor, so equal backends share new flows.
                let start = *rr as usize % t.len();
                let mut best = t[start];
                let mut best_cost = (u64::MAX, 1u64);
                for k in 0..t.len() {
                    let j = t[(start + k) % t.len()];
                    let b = &s.backends[j as usize];
                    let c = u64::from(stats.conns(b.id));
                    let w = if s.sched == Sched::Wlc {
                        u64::from(b.effective.max(1))
                    } else {
                        1
                    };
                    // c / w < best.0 / best.1, without division.
                    if best_cost.0 == u64::MAX || c * best_cost.1 < best_cost.0 * w {
                        best = j;
                        best_cost = (c, w);
                    }
                }
                *rr = (start as u32 + 1) % t.len() as u32;
                best
            }
            Sched::Sh => lb::pick(t, h.src),
            Sched::Dh => lb::pick(t, h.dst),
            Sched::Maglev => lb::pick(t, h.tuple),
        };
        Ok(i as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(sched: Sched, weights: &[u32]) -> Service {
        Service::new(Service {
            id: 1,
            name: "s".into(),
            vip: "10.0.0.1".parse().unwrap(),
            port: 80,
            proto: 6,
            sched,
            forward: Forward::Nat,
            local: vec![],
            tunnel_src: None,
            gue_port: 6080,
            when_down: WhenDown::Reject,
            persistence: 0,
            backends: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Backend {
                    id: i as u32,
                    addr: IpAddr::from([10, 1, 0, i as u8 + 1]),
                    port: 8080,
                    weight: w,
                    effective: w,
                    drain: false,
                    up: true,
                })
                .collect(),
            table: vec![],
            digest: 0,
            maglev_size: 251,
            by_id: FastMap::default(),
        })
    }

    fn counts(s: &Service, n: usize, stats: &BackendStats) -> Vec<usize> {
        let mut rr = 0;
        let mut c = vec![0; s.backends.len()];
        for k in 0..n as u64 {
            let h = FlowHash {
                tuple: crate::conntrack::mix(k),
                src: crate::conntrack::mix(k / 4),
                dst: 7,
            };
            let i = Services::schedule(s, h, &mut rr, stats).unwrap();
            c[i] += 1;
        }
        c
    }

    #[test]
    fn rr_and_wrr_are_exact() {
        let stats = BackendStats::new(16);
        assert_eq!(counts(&svc(Sched::Rr, &[1, 5, 1]), 300, &stats), [100; 3]);
        assert_eq!(
            counts(&svc(Sched::Wrr, &[100, 200, 300]), 600, &stats),
            [100, 200, 300]
        );
        // Weight 0 and drain take nothing.
        assert_eq!(
            counts(&svc(Sched::Wrr, &[0, 2, 1]), 30, &stats),
            [0, 20, 10]
        );
    }

    #[test]
    fn lc_and_wlc_follow_the_counts() {
        let stats = BackendStats::new(16);
        for _ in 0..10 {
            stats.opened(0);
        }
        let s = svc(Sched::Lc, &[1, 1, 1]);
        let c = counts(&s, 20, &stats);
        // Counts do not move in this test (no flow is opened): backend 0 is never least,
        // and the cursor spreads ties over the others.
        assert_eq!(c[0], 0);
        assert_eq!(c[1] + c[2], 20);
        assert!(c[1] > 0 && c[2] > 0, "{c:?}");
        let s = svc(Sched::Wlc, &[100, 1, 1]);
        // 10 / 100 < 0 / 1 is false; backends 1 and 2 (0 conns) win.
        assert_eq!(counts(&s, 4, &stats)[0], 0);
        for _ in 0..10 {
            stats.closed(0);
        }
        stats.closed(0);
        assert_eq!(stats.conns(0), 0, "never below zero");
    }

    #[test]
    fn sh_is_stable_per_client_and_down_backends_take_nothing() {
        let stats = BackendStats::new(16);
        let s = svc(Sched::Sh, &[1, 1, 1, 1]);
        let mut rr = 0;
        for k in 0..100u64 {
            let h = |t| FlowHash {
                tuple: t,
                src: crate::conntrack::mix(k),
                dst: 0,
            };
            let a = Services::schedule(&s, h(1), &mut rr, &stats).unwrap();
            let b = Services::schedule(&s, h(2), &mut rr, &stats).unwrap();
            assert_eq!(a, b);
        }
        let mut s = svc(Sched::Maglev, &[1, 1, 1]);
        s.backends[1].up = false;
        let s = Service::new(Service {
            table: vec![],
            backends: s.backends.clone(),
            name: s.name.clone(),
            local: vec![],
            ..s
        });
        assert_eq!(counts(&s, 1000, &stats)[1], 0);
        let mut none = svc(Sched::Rr, &[1]);
        none.backends[0].up = false;
        let none = Service::new(Service {
            table: vec![],
            backends: none.backends.clone(),
            name: String::new(),
            local: vec![],
            ..none
        });
        assert_eq!(
            Services::schedule(
                &none,
                FlowHash {
                    tuple: 0,
                    src: 0,
                    dst: 0
                },
                &mut 0,
                &stats
            ),
            Err(NoBackend::Reject)
        );
    }
}
