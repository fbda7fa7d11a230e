//! The NAT stage (issue 5): which packets are NAT's, which worker owns their flow, the
//! flow lookup and creation, and the translation each packet gets.
//!
//! The router calls it for the packets the fast path leaves to it (pool and DNAT addresses
//! route as local, and hops out of an SNAT or DNAT port are marked slow, when the snapshot
//! is compiled: plain routed traffic pays nothing). Two hooks:
//!
//! * [`pre4`] / [`pre6`], before the FIB: classify the packet from the snapshot alone; if
//!   another worker owns its flow, hand it over ([`Pre::Handoff`]); else look its flow up in
//!   this worker's table (either direction) and, on a hit, say how to translate it; on a
//!   miss, make a DNAT flow if a rule matches, or ask for the post-routing hook if its source
//!   is an SNAT rule's ([`Pre::MaybeSnat`]).
//! * [`snat_new`], once the route is known: an SNAT rule for this source and egress port makes
//!   the flow, with an endpoint-independent mapping (one pool address and port per inside
//!   address and port, whatever the destination: RFC 4787 REQ-1) from a paired pool
//!   address (one per inside address, REQ-2).
//!
//! Translation ([`Xlat::apply`]) happens after the router's own checks
//! (TTL, MTU, neighbour), so an ICMP error the router makes quotes the packet as its sender
//! sent it. An ICMP error about a translated flow is matched by the flow of the packet it
//! quotes, and translated back whole ([`translate::rewrite_icmp_error_v4`]).
//!
//! **Owners.** A flow belongs to one worker, found from the packet alone in both
//! directions: an SNAT reply by the share of the pool's port range its destination port is
//! in (each worker maps into its own share); everything else by a hash of the address of
//! the side that translation leaves alone (the inside host for SNAT, the client for DNAT),
//! which both directions carry. Every fragment of a datagram carries it too.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use crate::conntrack::{mix, InsertError, CALLER_FLAGS};
use crate::conntrack::{tcp_flags, Dir, Flow, FlowKey, FlowTable, Key4, Key6, State, Timeouts};
use crate::counters::{DropReason, WorkerCounters};
use crate::rss::{port_share, snat_owner};
use crate::service::{
    BackendStats, FlowHash, Forward, NoBackend, Service, Services, SvcIndex, LOCAL_PORTS,
    MAX_SERVICES, SVC_FLAG,
};
use crate::tables::{FastMap, FastSet};
use crate::translate::{self, End, RewriteError};

/// Rule ids are below this (ids are stable across applies: see the control side).
pub const MAX_RULE_IDS: usize = 1 << 13;
/// Housekeeping ticks per second (the flow table's unit of time).
pub const TICKS_PER_S: u32 = 10;
/// Fragment records per worker (direct-mapped: a newer datagram takes an older's slot).
const FRAG_SLOTS: usize = 4096;
/// How long a fragment record lives (ticks).
const FRAG_TICKS: u32 = 2 * TICKS_PER_S;
/// Ports tried for a new mapping before giving up.
const PORT_PROBES: u32 = 128;
/// Service persistence entries per worker and family (clients past it are scheduled
/// without affinity until entries expire).
const AFFINITIES: usize = 1 << 16;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// An SNAT rule as workers see it.
#[derive(Clone, Debug)]
pub struct SnatRule {
    pub id: u16,
    pub name: String,
    pub from4: Vec<(u32, u8)>,
    pub from6: Vec<(u128, u8)>,
    /// Egress port index.
    pub out: u16,
    pub pool4: Vec<(u32, u8)>,
    pub pool6: Vec<(u128, u8)>,
    /// Pool addresses an earlier version of the rule had: no new mapping takes them, but
    /// the flows made with them carry on (their replies are still this rule's).
    pub retired4: Vec<(u32, u8)>,
    pub retired6: Vec<(u128, u8)>,
    /// Pool port range, inclusive.
    pub ports: (u16, u16),
}

/// A DNAT rule as workers see it.
#[derive(Clone, Debug)]
pub struct DnatRule {
    pub id: u16,
    pub name: String,
    pub address: IpAddr,
    pub protocol: u8,
    pub port: Option<u16>,
    pub to: IpAddr,
    pub to_port: Option<u16>,
}

/// The NAT part of a snapshot (with the virtual services, which the NAT stage runs).
#[derive(Clone, Debug)]
pub struct NatTables {
    pub snat: Vec<SnatRule>,
    pub dnat: Vec<DnatRule>,
    /// (address, protocol, port or 0 for any) → index in `dnat`.
    dnat4: FastMap<(u32, u8, u16), u16>,
    dnat6: FastMap<(u128, u8, u16), u16>,
    /// DNAT targets (address, protocol, port or 0): replies come from them.
    back4: FastSet<(u32, u8, u16)>,
    back6: FastSet<(u128, u8, u16)>,
    live: Vec<bool>,
    pub timeouts: Timeouts,
    pub workers: u16,
    /// Ports (a bit each) whose outgoing hops are stateful: SNAT egress ports, and the
    /// ports that own a DNAT address (DNAT replies leave by them).
    pub stateful_ports: u64,
    pub svc: Services,
}

impl NatTables {
    pub fn new(
        snat: Vec<SnatRule>,
        dnat: Vec<DnatRule>,
        timeouts: Timeouts,
        workers: u16,
        dnat_ports: u64,
    ) -> NatTables {
        let mut t = NatTables {
            snat,
            dnat,
            dnat4: FastMap::default(),
            dnat6: FastMap::default(),
            back4: FastSet::default(),
            back6: FastSet::default(),
            live: vec![false; MAX_RULE_IDS],
            timeouts,
            workers: workers.max(1),
            stateful_ports: dnat_ports,
            svc: Services::default(),
        };
        for r in &t.snat {
            t.live[usize::from(r.id) % MAX_RULE_IDS] = true;
            t.stateful_ports |= 1u64 << (r.out % 64);
        }
        for (i, r) in t.dnat.iter().enumerate() {
            t.live[usize::from(r.id) % MAX_RULE_IDS] = true;
            let (p, tp) = (r.port.unwrap_or(0), r.to_port.or(r.port).unwrap_or(0));
            match (r.address, r.to) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    t.dnat4.insert((a.into(), r.protocol, p), i as u16);
                    t.back4.insert((b.into(), r.protocol, tp));
                }
                (IpAddr::V6(a), IpAddr::V6(b)) => {
                    t.dnat6.insert((a.into(), r.protocol, p), i as u16);
                    t.back6.insert((b.into(), r.protocol, tp));
                }
                _ => {}
            }
        }
        t
    }

    /// With these services; `ports`: the ports their replies leave by (stateful).
    pub fn with_services(mut self, svc: Services, ports: u64) -> NatTables {
        self.svc = svc;
        self.stateful_ports |= ports;
        self
    }

    /// Whether a rule with this id is in the snapshot (a flow of a deleted rule ends).
    #[inline]
    pub fn is_live(&self, id: u16) -> bool {
        self.live[usize::from(id) % MAX_RULE_IDS]
    }

    /// Whether a flow of rule (or service) `rule` with backend `backend` carries on: its
    /// rule, or its service and backend, are in the snapshot.
    #[inline]
    pub fn flow_live(&self, rule: u16, backend: u32) -> bool {
        if rule & SVC_FLAG != 0 {
            self.svc.service_live(rule & !SVC_FLAG) && self.svc.backend_live(backend)
        } else {
            self.is_live(rule)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.snat.is_empty() && self.dnat.is_empty() && self.svc.is_empty()
    }
}

/// What a worker asked to dump keeps of a flow (for `ferryctl conntrack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    pub orig: (IpAddr, IpAddr, u16, u16),
    pub reply: (IpAddr, IpAddr, u16, u16),
    pub proto: u8,
    pub state: State,
    /// Seconds until it expires.
    pub expires_s: u32,
    pub rule: u16,
    /// A service flow's backend id.
    pub backend: u32,
}

/// Which flows a dump or a flush selects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// Either address of either direction.
    pub address: Option<IpAddr>,
    pub protocol: Option<u8>,
    /// Either port of either direction.
    pub port: Option<u16>,
    pub rule: Option<u16>,
}

/// A fragment record: where the later fragments of a datagram go.
#[derive(Clone, Copy, Debug, Default)]
struct Frag {
    /// (src, dst) folded, protocol, identification; 0 = empty.
    key: u64,
    expires: u32,
    /// Owner worker + 1 (handed over), or 0: translated here by `flow`, `dir`, `v6`.
    owner: u16,
    flow: u32,
    reply: bool,
}

/// A worker's NAT state: its flow tables (one per family), its mapping tables, its
/// fragment records. Preallocated (the tables' memory is committed as they fill).
pub struct NatState {
    pub flows4: FlowTable<Key4>,
    pub flows6: FlowTable<Key6>,
    /// Endpoint-independent mappings: orig (inside address, port, protocol) and reply (pool
    /// address, port, protocol); the reply key reserves the pool port.
    maps4: FlowTable<Key4>,
    maps6: FlowTable<Key6>,
    /// Service persistence (client affinity): (client, service) → backend, one key each.
    aff4: FlowTable<Key4>,
    aff6: FlowTable<Key6>,
    frags: Box<[Frag]>,
    /// This worker's index.
    pub me: u16,
    /// The current tick.
    pub now: u32,
    /// Flows by state, for the counters.
    pub by_state: [u64; 8],
    /// Set while a handed-over packet is processed: never hand it over again.
    pub handed: bool,
    /// The next IPv4 lookup's key and hash, if already computed (0: none).
    hint4: (Key4, u32),
    seed: u64,
    /// Backends' live flows, shared with every worker (lc, wlc; operators' views).
    pub stats: Arc<BackendStats>,
    /// Round-robin cursors, by service id.
    rr: Vec<u32>,
}

/// A flow ended: a service flow's backend has one fewer.
#[inline]
fn ended(stats: &BackendStats, rule: u16, backend: u32) {
    if rule & SVC_FLAG != 0 {
        stats.closed(backend);
    }
}

impl NatState {
    /// Tables for `capacity` flows of each family.
    pub fn new(capacity: usize, me: u16, seed: u64) -> NatState {
        NatState {
            flows4: FlowTable::new(capacity, seed, 0),
            flows6: FlowTable::new(capacity, seed ^ 0x6666, 0),
            maps4: FlowTable::new(capacity, seed ^ 0x4444, 0),
            maps6: FlowTable::new(capacity, seed ^ 0x5555, 0),
            aff4: FlowTable::new(AFFINITIES, seed ^ 0x7777, 0),
            aff6: FlowTable::new(AFFINITIES, seed ^ 0x8888, 0),
            frags: vec![Frag::default(); FRAG_SLOTS].into_boxed_slice(),
            me,
            now: 0,
            by_state: [0; 8],
            handed: false,
            hint4: (Key4::default(), 0),
            seed,
            stats: BackendStats::new(0),
            rr: vec![0; MAX_SERVICES],
        }
    }

    /// Commit every table's memory now (see [`FlowTable::prefault`]).
    pub fn prefault(&mut self) {
        self.flows4.prefault();
        self.flows6.prefault();
        self.maps4.prefault();
        self.maps6.prefault();
        self.aff4.prefault();
        self.aff6.prefault();
    }

    /// Expire what is due (at most `budget` flows looked at per table).
    /// Returns how many flows expired.
    pub fn expire(&mut self, now: u32, budget: usize, c: &WorkerCounters) -> usize {
        self.now = now;
        let by_state = &mut self.by_state;
        let stats = &*self.stats;
        let mut gone = |s: State, rule: u16, backend: u32| {
            by_state[s as usize] = by_state[s as usize].saturating_sub(1);
            ended(stats, rule, backend);
        };
        let n = self
            .flows4
            .expire(now, budget, |_, f| gone(f.state, f.rule, f.backend))
            + self
                .flows6
                .expire(now, budget, |_, f| gone(f.state, f.rule, f.backend));
        c.nat.expired.add(n as u64);
        let m = self.maps4.expire(now, budget, |_, _| {})
            + self.maps6.expire(now, budget, |_, _| {})
            + self.aff4.expire(now, budget, |_, _| {})
            + self.aff6.expire(now, budget, |_, _| {});
        n + m
    }

    /// Remove flows `[from, from + budget)` (by id) that `remove` selects; returns the next
    /// id to look at, or None when the tables are done.
    pub fn sweep(
        &mut self,
        from: u32,
        budget: u32,
        c: &WorkerCounters,
        mut remove: impl FnMut(&FlowRecord) -> bool,
    ) -> Option<u32> {
        let b4 = self.flows4.id_bound();
        let b6 = self.flows6.id_bound();
        let end = from.saturating_add(budget);
        for id in from..end.min(b4 + b6) {
            let v6 = id >= b4;
            let fid = if v6 { id - b4 } else { id };
            let Some(r) = self.record(v6, fid) else {
                continue;
            };
            if remove(&r) {
                if v6 {
                    self.flows6.remove(fid);
                } else {
                    self.flows4.remove(fid);
                }
                let s = r.state as usize;
                self.by_state[s] = self.by_state[s].saturating_sub(1);
                ended(&self.stats, r.rule, r.backend);
                c.nat.removed.add(1);
            }
        }
        (end < b4 + b6).then_some(end)
    }

    /// Flow `id` of a family as operators see it, if live.
    pub fn record(&self, v6: bool, id: u32) -> Option<FlowRecord> {
        if v6 {
            record_of::<V6>(&self.flows6, id, self.now)
        } else {
            record_of::<V4>(&self.flows4, id, self.now)
        }
    }

    /// Every id a sweep or dump walks: IPv4 flows, then IPv6.
    pub fn id_bound(&self) -> u32 {
        self.flows4.id_bound() + self.flows6.id_bound()
    }

    /// The record of walk id `id` (see [`NatState::id_bound`]).
    pub fn record_at(&self, id: u32) -> Option<FlowRecord> {
        let b4 = self.flows4.id_bound();
        if id >= b4 {
            self.record(true, id - b4)
        } else {
            self.record(false, id)
        }
    }

    pub fn len(&self) -> usize {
        self.flows4.len() + self.flows6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Prefetch, for the packets of a burst about to take the NAT stage (untagged Ethernet
    /// frames), the index slot of each one's flow, then the flow itself (or, for a likely
    /// new flow, its mapping's slot): the worker runs this before the packets, so that
    /// their misses overlap instead of each packet waiting for its own. `hashes` keeps each
    /// key's hash for the lookup ([`NatState::hint`]).
    pub fn prefetch_burst<'a>(
        &mut self,
        frames: impl Iterator<Item = &'a [u8]> + Clone,
        hashes: &mut [(Key4, u32)],
    ) {
        let mut n = 0;
        for f in frames.clone() {
            let Some(slot) = hashes.get_mut(n) else { break };
            n += 1;
            *slot = (Key4::default(), 0);
            match f.get(12..14) {
                Some([0x08, 0x00]) => {
                    if let Some(p) = f.get(14..).and_then(parse4) {
                        let k = V4::key(p.src, p.dst, p.sport, p.dport, p.proto);
                        *slot = (k, self.flows4.prefetch_index(&k));
                    }
                }
                Some([0x86, 0xdd]) => {
                    if let Some(p) = f.get(14..).and_then(parse6) {
                        self.flows6
                            .prefetch_index(&V6::key(p.src, p.dst, p.sport, p.dport, p.proto));
                    }
                }
                _ => {}
            }
        }
        for (k, h) in hashes[..n].iter() {
            if *h != 0 && !self.flows4.prefetch_flow(*h) {
                // Likely a new flow: its mapping is looked up next.
                self.maps4
                    .prefetch_index(&V4::key(k.src, 0, k.sport, 0, k.proto));
            }
        }
    }

    /// Give the next [`pre`] the hash of its IPv4 key (from [`NatState::prefetch_burst`]).
    #[inline(always)]
    pub fn hint(&mut self, h: (Key4, u32)) {
        self.hint4 = h;
    }

    fn frag_slot(&self, key: u64) -> usize {
        (mix(key ^ self.seed) as usize) % FRAG_SLOTS
    }
}

/// Flow `id` of table `t` as operators see it, if live (`now`: the current tick).
fn record_of<F: Fam>(t: &FlowTable<F::K>, id: u32, now: u32) -> Option<FlowRecord> {
    let tuple = |k: &F::K| {
        let (s, d, sp, dp, _) = F::parts(k);
        (F::ip(s), F::ip(d), sp, dp)
    };
    t.is_live(id).then(|| {
        let f = t.get(id);
        FlowRecord {
            orig: tuple(&f.orig),
            reply: tuple(&f.reply),
            proto: F::parts(&f.orig).4,
            state: f.state,
            expires_s: f.expires.wrapping_sub(now).min(i32::MAX as u32) / TICKS_PER_S,
            rule: f.rule,
            backend: f.backend,
        }
    })
}

impl FlowFilter {
    pub fn matches(&self, r: &FlowRecord) -> bool {
        let (o, p) = (r.orig, r.reply);
        self.address
            .is_none_or(|a| [o.0, o.1, p.0, p.1].contains(&a))
            && self.protocol.is_none_or(|x| x == r.proto)
            && self.port.is_none_or(|x| [o.2, o.3, p.2, p.3].contains(&x))
            && self.rule.is_none_or(|x| x == r.rule)
    }
}

/// One address family, for the code both share.
pub trait Fam {
    type A: Copy + Eq + Hash + Default + std::fmt::Debug;
    type K: FlowKey;
    const ECHO: u8;
    fn key(src: Self::A, dst: Self::A, sport: u16, dport: u16, proto: u8) -> Self::K;
    fn parts(k: &Self::K) -> (Self::A, Self::A, u16, u16, u8);
    fn flows(st: &mut NatState) -> &mut FlowTable<Self::K>;
    fn maps(st: &mut NatState) -> &mut FlowTable<Self::K>;
    /// Service persistence entries.
    fn aff(st: &mut NatState) -> &mut FlowTable<Self::K>;
    fn from(r: &SnatRule) -> &[(Self::A, u8)];
    fn pool(r: &SnatRule) -> &[(Self::A, u8)];
    fn retired(r: &SnatRule) -> &[(Self::A, u8)];
    fn dnat(n: &NatTables) -> &FastMap<(Self::A, u8, u16), u16>;
    /// The service on (VIP, protocol, port), by index.
    fn service(s: &Services, vip: Self::A, proto: u8, port: u16) -> Option<u32>;
    /// NAT-mode backend endpoints; FullNAT local addresses.
    fn svc_back(x: &SvcIndex) -> &FastSet<(Self::A, u8, u16)>;
    fn svc_local(x: &SvcIndex) -> &FastSet<Self::A>;
    fn back(n: &NatTables) -> &FastSet<(Self::A, u8, u16)>;
    fn contains(p: (Self::A, u8), a: Self::A) -> bool;
    fn fold(a: Self::A) -> u64;
    /// The `i`-th address of the pool (modulo its size).
    fn nth(pool: &[(Self::A, u8)], i: u64) -> Option<Self::A>;
    fn ip(a: Self::A) -> IpAddr;
    fn from_ip(a: IpAddr) -> Option<Self::A>;
    /// [`parse4`] / [`parse6`].
    fn parse(ip: &[u8]) -> Option<Parsed<Self::A>>;
    /// The hash of `k` if the worker computed it already (taken: used once).
    fn hinted(st: &mut NatState, k: &Self::K) -> Option<u32>;
    /// The packet's source address (`ip` from its network header).
    fn source(ip: &[u8]) -> Option<Self::A>;
    /// [`translate::rewrite_v4`] / [`translate::rewrite_v6`].
    fn rewrite(ip: &mut [u8], end: End, a: Self::A, port: u16) -> Result<(), RewriteError>;
    /// [`translate::rewrite_icmp_error_v4`] / [`translate::rewrite_icmp_error_v6`].
    fn rewrite_error(
        ip: &mut [u8],
        inner: End,
        a: Self::A,
        port: u16,
        outer: End,
        outer_addr: Self::A,
    ) -> Result<(), RewriteError>;
}

pub struct V4;
pub struct V6;

impl Fam for V4 {
    type A = u32;
    type K = Key4;
    const ECHO: u8 = ICMP;
    #[inline(always)]
    fn key(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> Key4 {
        Key4 {
            src,
            dst,
            sport,
            dport,
            proto,
        }
    }
    #[inline(always)]
    fn parts(k: &Key4) -> (u32, u32, u16, u16, u8) {
        (k.src, k.dst, k.sport, k.dport, k.proto)
    }
    fn flows(st: &mut NatState) -> &mut FlowTable<Key4> {
        &mut st.flows4
    }
    fn maps(st: &mut NatState) -> &mut FlowTable<Key4> {
        &mut st.maps4
    }
    fn aff(st: &mut NatState) -> &mut FlowTable<Key4> {
        &mut st.aff4
    }
    fn from(r: &SnatRule) -> &[(u32, u8)] {
        &r.from4
    }
    fn pool(r: &SnatRule) -> &[(u32, u8)] {
        &r.pool4
    }
    fn retired(r: &SnatRule) -> &[(u32, u8)] {
        &r.retired4
    }
    fn dnat(n: &NatTables) -> &FastMap<(u32, u8, u16), u16> {
        &n.dnat4
    }
    #[inline(always)]
    fn service(s: &Services, vip: u32, proto: u8, port: u16) -> Option<u32> {
        s.find4(vip, proto, port)
    }
    fn svc_back(x: &SvcIndex) -> &FastSet<(u32, u8, u16)> {
        &x.back4
    }
    fn svc_local(x: &SvcIndex) -> &FastSet<u32> {
        &x.local4
    }
    fn back(n: &NatTables) -> &FastSet<(u32, u8, u16)> {
        &n.back4
    }
    #[inline(always)]
    fn contains(p: (u32, u8), a: u32) -> bool {
        crate::tables::same_prefix32(p.0, a, p.1)
    }
    fn fold(a: u32) -> u64 {
        u64::from(a)
    }
    fn nth(pool: &[(u32, u8)], i: u64) -> Option<u32> {
        let size = |len: u8| 1u64 << (32 - u32::from(len.min(32)));
        let total: u64 = pool.iter().map(|p| size(p.1)).sum();
        let mut i = i % total.max(1);
        for p in pool {
            if i < size(p.1) {
                return Some(p.0 + i as u32);
            }
            i -= size(p.1);
        }
        None
    }
    fn ip(a: u32) -> IpAddr {
        IpAddr::from(a.to_be_bytes())
    }
    #[inline(always)]
    fn hinted(st: &mut NatState, k: &Key4) -> Option<u32> {
        let (hk, h) = std::mem::take(&mut st.hint4);
        (h != 0 && hk == *k).then_some(h)
    }
    fn parse(ip: &[u8]) -> Option<Parsed<u32>> {
        parse4(ip)
    }
    fn source(ip: &[u8]) -> Option<u32> {
        be32(ip, 12)
    }
    fn rewrite(ip: &mut [u8], end: End, a: u32, port: u16) -> Result<(), RewriteError> {
        translate::rewrite_v4(ip, end, a.to_be_bytes(), port)
    }
    fn rewrite_error(
        ip: &mut [u8],
        inner: End,
        a: u32,
        port: u16,
        outer: End,
        outer_addr: u32,
    ) -> Result<(), RewriteError> {
        translate::rewrite_icmp_error_v4(
            ip,
            inner,
            a.to_be_bytes(),
            port,
            outer,
            outer_addr.to_be_bytes(),
        )
    }
    fn from_ip(a: IpAddr) -> Option<u32> {
        match a {
            IpAddr::V4(a) => Some(a.into()),
            IpAddr::V6(_) => None,
        }
    }
}

impl Fam for V6 {
    type A = u128;
    type K = Key6;
    const ECHO: u8 = ICMPV6;
    #[inline(always)]
    fn key(src: u128, dst: u128, sport: u16, dport: u16, proto: u8) -> Key6 {
        Key6 {
            src: src.to_be_bytes(),
            dst: dst.to_be_bytes(),
            sport,
            dport,
            proto,
        }
    }
    #[inline(always)]
    fn parts(k: &Key6) -> (u128, u128, u16, u16, u8) {
        (
            u128::from_be_bytes(k.src),
            u128::from_be_bytes(k.dst),
            k.sport,
            k.dport,
            k.proto,
        )
    }
    fn flows(st: &mut NatState) -> &mut FlowTable<Key6> {
        &mut st.flows6
    }
    fn maps(st: &mut NatState) -> &mut FlowTable<Key6> {
        &mut st.maps6
    }
    fn aff(st: &mut NatState) -> &mut FlowTable<Key6> {
        &mut st.aff6
    }
    fn from(r: &SnatRule) -> &[(u128, u8)] {
        &r.from6
    }
    fn pool(r: &SnatRule) -> &[(u128, u8)] {
        &r.pool6
    }
    fn retired(r: &SnatRule) -> &[(u128, u8)] {
        &r.retired6
    }
    fn dnat(n: &NatTables) -> &FastMap<(u128, u8, u16), u16> {
        &n.dnat6
    }
    #[inline(always)]
    fn service(s: &Services, vip: u128, proto: u8, port: u16) -> Option<u32> {
        s.find6(vip, proto, port)
    }
    fn svc_back(x: &SvcIndex) -> &FastSet<(u128, u8, u16)> {
        &x.back6
    }
    fn svc_local(x: &SvcIndex) -> &FastSet<u128> {
        &x.local6
    }
    fn back(n: &NatTables) -> &FastSet<(u128, u8, u16)> {
        &n.back6
    }
    #[inline(always)]
    fn contains(p: (u128, u8), a: u128) -> bool {
        crate::tables::same_prefix128(p.0, a, p.1)
    }
    fn fold(a: u128) -> u64 {
        (a as u64) ^ ((a >> 64) as u64).rotate_left(17)
    }
    fn nth(pool: &[(u128, u8)], i: u64) -> Option<u128> {
        // Sizes capped at 2^32 addresses a prefix (a /64 pool is not walked whole).
        let size = |len: u8| 1u64 << (128 - u32::from(len.min(128))).min(32);
        let total: u64 = pool.iter().map(|p| size(p.1)).sum();
        let mut i = i % total.max(1);
        for p in pool {
            if i < size(p.1) {
                return Some(p.0 + u128::from(i));
            }
            i -= size(p.1);
        }
        None
    }
    fn ip(a: u128) -> IpAddr {
        IpAddr::from(a.to_be_bytes())
    }
    #[inline(always)]
    fn hinted(_: &mut NatState, _: &Key6) -> Option<u32> {
        None
    }
    fn parse(ip: &[u8]) -> Option<Parsed<u128>> {
        parse6(ip)
    }
    fn source(ip: &[u8]) -> Option<u128> {
        be128(ip, 8)
    }
    fn rewrite(ip: &mut [u8], end: End, a: u128, port: u16) -> Result<(), RewriteError> {
        translate::rewrite_v6(ip, end, a.to_be_bytes(), port)
    }
    fn rewrite_error(
        ip: &mut [u8],
        inner: End,
        a: u128,
        port: u16,
        outer: End,
        outer_addr: u128,
    ) -> Result<(), RewriteError> {
        translate::rewrite_icmp_error_v6(
            ip,
            inner,
            a.to_be_bytes(),
            port,
            outer,
            outer_addr.to_be_bytes(),
        )
    }
    fn from_ip(a: IpAddr) -> Option<u128> {
        match a {
            IpAddr::V6(a) => Some(a.into()),
            IpAddr::V4(_) => None,
        }
    }
}

/// A packet as the NAT stage reads it: its 5-tuple, or for an ICMP error the 5-tuple of
/// the packet that would answer the one it quotes (the direction the error travels).
#[derive(Clone, Copy, Debug)]
pub struct Parsed<A> {
    pub src: A,
    pub dst: A,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// TCP flags (0 otherwise).
    pub tcp: u8,
    /// An ICMP error: the error's own source (the tuple above is the quoted packet's,
    /// reversed).
    pub error: Option<A>,
    /// A fragment: (identification, more fragments follow / this is not the first).
    pub frag: Option<(u32, bool)>,
    /// May start an SNAT flow: not an echo reply nor a SYN-ACK (answers to a connection
    /// from outside, routed untranslated).
    pub initiates: bool,
    /// A packet NAT cannot translate (a protocol other than TCP, UDP and ICMP echo, an
    /// IPv6 routing header): dropped if an SNAT rule would take it, never sent with its
    /// inside address.
    pub opaque: bool,
}

/// How to translate a packet (applied after the router's checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Xlat<A> {
    /// New source, destination (address, port) of the packet, or for an error, of the
    /// direction it travels in; None: unchanged.
    pub src: Option<(A, u16)>,
    pub dst: Option<(A, u16)>,
    /// The destination to route by.
    pub route_dst: A,
    /// An ICMP error about the flow (the quote is translated too).
    pub error: bool,
    /// An error whose tuple's source address changes (it goes out from the public
    /// address, whoever inside sent it); false when only a port or identifier changes.
    pub new_source: bool,
    /// A service's one-way forwarding (DR, IPIP, GUE): the packet goes to `route_dst`
    /// unchanged, or encapsulated from `src`.
    pub tunnel: Option<Tunnel<A>>,
}

/// How a one-way service flow's packets reach their backend (see [`Xlat::tunnel`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunnel<A> {
    pub kind: Forward,
    /// The outer source (IPIP, GUE).
    pub src: A,
    /// GUE's UDP destination port.
    pub port: u16,
    /// GUE's UDP source port (from the flow's hash: spreads flows over the backend's
    /// receive queues).
    pub entropy: u16,
}

/// What the pre-routing hook decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pre<A> {
    /// Not NAT's: route as it is.
    Pass,
    /// Another worker owns the flow.
    Handoff(u16),
    Drop(DropReason),
    Xlat(Xlat<A>),
    /// Its source is an SNAT rule's: [`snat_new`] once the egress port is known.
    MaybeSnat,
    /// A service's new flow and no backend can take it: ICMP port unreachable.
    Reject,
}

/// The first `n` bytes at `at`, if there.
#[inline(always)]
fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}
#[inline(always)]
fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}
#[inline(always)]
fn be128(d: &[u8], at: usize) -> Option<u128> {
    Some(u128::from_be_bytes(d.get(at..at + 16)?.try_into().ok()?))
}

/// Ports (or echo identifier, as both) of a transport header, with TCP's flags; None if
/// NAT does not translate the protocol or the header is short.
#[inline(always)]
fn transport(proto: u8, echo: u8, l4: &[u8]) -> Option<(u16, u16, u8)> {
    match proto {
        // (An ICMP error may quote only 8 bytes of TCP: no flags then.)
        TCP => Some((be16(l4, 0)?, be16(l4, 2)?, l4.get(13).copied().unwrap_or(0))),
        UDP => Some((be16(l4, 0)?, be16(l4, 2)?, 0)),
        p if p == echo => {
            let id = be16(l4, 4)?;
            Some((id, id, 0))
        }
        _ => None,
    }
}

/// Parse an IPv4 packet (`ip` from its header, length already checked by the router).
#[inline]
pub fn parse4(ip: &[u8]) -> Option<Parsed<u32>> {
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    let proto = *ip.get(9)?;
    let (src, dst) = (be32(ip, 12)?, be32(ip, 16)?);
    let ff = be16(ip, 6)?;
    let (offset, more) = (ff & 0x1fff, ff & 0x2000 != 0);
    let frag = (offset != 0 || more).then(|| (u32::from(be16(ip, 4).unwrap_or(0)), offset != 0));
    let bare = Parsed {
        src,
        dst,
        sport: 0,
        dport: 0,
        proto,
        tcp: 0,
        error: None,
        frag,
        initiates: true,
        opaque: false,
    };
    if offset != 0 {
        return Some(bare);
    }
    let l4 = ip.get(ihl..)?;
    if proto == ICMP {
        match *l4.first()? {
            8 | 0 => {}
            3 | 11 | 12 => {
                // The quoted packet, reversed: the tuple of the direction the error goes.
                let q = l4.get(8..)?;
                let qihl = usize::from(*q.first()? & 0x0f) * 4;
                let qp = *q.get(9)?;
                if qihl < 20 || be16(q, 6)? & 0x1fff != 0 {
                    return None;
                }
                let (qs, qd) = (be32(q, 12)?, be32(q, 16)?);
                let (sp, dp, _) = transport(qp, ICMP, q.get(qihl..)?)?;
                return Some(Parsed {
                    src: qd,
                    dst: qs,
                    sport: dp,
                    dport: sp,
                    proto: qp,
                    error: Some(src),
                    frag: None,
                    initiates: false,
                    ..bare
                });
            }
            _ => {
                return Some(Parsed {
                    opaque: true,
                    ..bare
                })
            }
        }
    }
    let Some((sport, dport, tcp)) = transport(proto, ICMP, l4) else {
        return Some(Parsed {
            opaque: true,
            ..bare
        });
    };
    Some(Parsed {
        sport,
        dport,
        tcp,
        initiates: initiates(proto, tcp, l4),
        ..bare
    })
}

/// Whether a packet may start a flow (see [`Parsed::initiates`]).
#[inline(always)]
fn initiates(proto: u8, tcp: u8, l4: &[u8]) -> bool {
    match proto {
        TCP => tcp & (tcp_flags::SYN | tcp_flags::ACK) != tcp_flags::SYN | tcp_flags::ACK,
        ICMP => l4.first() == Some(&8),
        ICMPV6 => l4.first() == Some(&128),
        _ => true,
    }
}

/// Parse an IPv6 packet: its transport header past hop-by-hop, destination options and
/// fragment headers ([`translate::ipv6_transport`]), ICMPv6 errors included (their quote's
/// transport header must follow its fixed header).
#[inline]
pub fn parse6(ip: &[u8]) -> Option<Parsed<u128>> {
    let (src, dst) = (be128(ip, 8)?, be128(ip, 24)?);
    let bare = Parsed {
        src,
        dst,
        sport: 0,
        dport: 0,
        proto: *ip.get(6)?,
        tcp: 0,
        error: None,
        frag: None,
        initiates: true,
        opaque: true,
    };
    let Some((proto, off, fh)) = translate::ipv6_transport(ip) else {
        return Some(bare);
    };
    let frag = fh.map(|(id, offset, _)| (id, offset != 0));
    let bare = Parsed {
        proto,
        frag,
        opaque: false,
        ..bare
    };
    if fh.is_some_and(|(_, offset, _)| offset != 0) {
        return Some(bare);
    }
    let l4 = ip.get(off..)?;
    if proto == ICMPV6 {
        match *l4.first()? {
            128 | 129 => {}
            1..=4 if fh.is_none() => {
                // An error: the quoted packet, reversed (as for IPv4).
                let q = l4.get(8..)?;
                let qp = *q.get(6)?;
                let (qs, qd) = (be128(q, 8)?, be128(q, 24)?);
                let (sp, dp, _) = transport(qp, ICMPV6, q.get(40..)?)?;
                return Some(Parsed {
                    src: qd,
                    dst: qs,
                    sport: dp,
                    dport: sp,
                    proto: qp,
                    error: Some(src),
                    initiates: false,
                    ..bare
                });
            }
            _ => {
                return Some(Parsed {
                    opaque: true,
                    ..bare
                })
            }
        }
    }
    let Some((sport, dport, tcp)) = transport(proto, ICMPV6, l4) else {
        return Some(Parsed {
            opaque: true,
            ..bare
        });
    };
    Some(Parsed {
        sport,
        dport,
        tcp,
        initiates: initiates(proto, tcp, l4),
        ..bare
    })
}

/// Who owns the flow of a packet with this tuple, and what NAT may do with it; None: not
/// NAT's.
struct Class {
    owner: u16,
    dnat: Option<u16>,
    snat_src: bool,
    /// From outside (by an SNAT rule's egress port) to an inside host, by the rule with
    /// this id: tracked as it is (no translation), so that the host's answers are not
    /// taken for new outgoing flows.
    inbound: Option<u16>,
    /// To a service's VIP: the service, by index.
    svc: Option<u32>,
}

#[inline]
fn addr_owner<F: Fam>(a: F::A, workers: u16) -> u16 {
    (mix(F::fold(a)) % u64::from(workers.max(1))) as u16
}

#[inline]
fn classify<F: Fam>(n: &NatTables, p: &Parsed<F::A>, in_port: u16) -> Option<Class> {
    let w = n.workers;
    let inbound = || {
        n.snat
            .iter()
            .find(|r| r.out == in_port && F::from(r).iter().any(|&f| F::contains(f, p.dst)))
            .map(|r| r.id)
    };
    let dm = F::dnat(n);
    let dnat = if dm.is_empty() {
        None
    } else {
        dm.get(&(p.dst, p.proto, p.dport))
            .or_else(|| dm.get(&(p.dst, p.proto, 0)))
            .copied()
    };
    let snat_src = n
        .snat
        .iter()
        .any(|r| F::from(r).iter().any(|&f| F::contains(f, p.src)));
    // A reply to an SNAT mapping: by the pool port's share.
    for r in &n.snat {
        let to_pool = |v: &[(F::A, u8)]| v.iter().any(|&q| F::contains(q, p.dst));
        if to_pool(F::pool(r)) || (!F::retired(r).is_empty() && to_pool(F::retired(r))) {
            if let Some(owner) = snat_owner(p.dport, r.ports.0, r.ports.1, w) {
                return Some(Class {
                    owner,
                    dnat,
                    snat_src,
                    inbound: None,
                    svc: None,
                });
            }
        }
    }
    if !n.svc.is_empty() {
        let x = &*n.svc.index;
        let nothing = Class {
            owner: 0,
            dnat,
            snat_src,
            inbound: None,
            svc: None,
        };
        // A FullNAT reply: by the local port's share, as SNAT replies.
        if !F::svc_local(x).is_empty() && F::svc_local(x).contains(&p.dst) {
            if let Some(owner) = snat_owner(p.dport, LOCAL_PORTS.0, LOCAL_PORTS.1, w) {
                return Some(Class { owner, ..nothing });
            }
        }
        // To a VIP: by the client's address, which NAT leaves as it is.
        if let Some(i) = F::service(&n.svc, p.dst, p.proto, p.dport) {
            return Some(Class {
                owner: addr_owner::<F>(p.src, w),
                svc: Some(i),
                ..nothing
            });
        }
    }
    if dnat.is_some() {
        return Some(Class {
            owner: addr_owner::<F>(p.src, w),
            dnat,
            snat_src,
            inbound: None,
            svc: None,
        });
    }
    let back = F::back(n);
    let sback = F::svc_back(&n.svc.index);
    // From a DNAT target or a NAT-mode service backend: a reply, owned by the client's
    // address (after the DNAT check: a backend may itself connect to a DNAT address).
    let from_back = |b: &FastSet<(F::A, u8, u16)>| {
        !b.is_empty()
            && (b.contains(&(p.src, p.proto, p.sport)) || b.contains(&(p.src, p.proto, 0)))
    };
    if from_back(back) || from_back(sback) {
        return Some(Class {
            owner: addr_owner::<F>(p.dst, w),
            dnat,
            snat_src,
            inbound: None,
            svc: None,
        });
    }
    if snat_src {
        return Some(Class {
            owner: addr_owner::<F>(p.src, w),
            dnat,
            snat_src,
            inbound: None,
            svc: None,
        });
    }
    // Owned as the inside host's answers are: by the host's address, but by the client's
    // if the host's endpoint is a DNAT target (its answers are owned as DNAT replies).
    let to_b = |b: &FastSet<(F::A, u8, u16)>| {
        !b.is_empty()
            && (b.contains(&(p.dst, p.proto, p.dport)) || b.contains(&(p.dst, p.proto, 0)))
    };
    let to_back = to_b(back) || to_b(sback);
    inbound().map(|id| Class {
        owner: addr_owner::<F>(if to_back { p.src } else { p.dst }, w),
        dnat,
        snat_src,
        inbound: Some(id),
        svc: None,
    })
}

/// The translation a flow gives a packet with tuple `p` that matched direction `dir`.
#[inline]
fn xlat_of<F: Fam>(orig: &F::K, reply: &F::K, dir: Dir, p: &Parsed<F::A>) -> Xlat<F::A> {
    let other = if dir == Dir::Original { reply } else { orig };
    let (os, od, osp, odp, _) = F::parts(other);
    let src = (od, odp);
    let dst = (os, osp);
    Xlat {
        src: (src != (p.src, p.sport)).then_some(src),
        dst: (dst != (p.dst, p.dport)).then_some(dst),
        route_dst: dst.0,
        error: p.error.is_some(),
        new_source: src.0 != p.src,
        tunnel: None,
    }
}

/// The translation of a packet of flow `f` (direction `dir`): a service's one-way flow
/// goes to its backend (the reply key's source) untranslated.
#[inline]
fn flow_xlat<F: Fam>(n: &NatTables, f: &Flow<F::K>, dir: Dir, p: &Parsed<F::A>) -> Xlat<F::A> {
    if f.rule & SVC_FLAG != 0 {
        if let Some(s) = n.svc.by_id(f.rule & !SVC_FLAG) {
            if !s.forward.two_way() {
                let b = s
                    .backend(f.backend)
                    .and_then(|b| F::from_ip(b.addr))
                    .unwrap_or_default();
                let src = s.tunnel_src.and_then(F::from_ip).unwrap_or_default();
                return Xlat {
                    src: None,
                    dst: None,
                    route_dst: b,
                    error: p.error.is_some(),
                    new_source: false,
                    tunnel: Some(Tunnel {
                        kind: s.forward,
                        src,
                        port: s.gue_port,
                        entropy: 0xc000
                            | (mix(F::fold(p.src) ^ u64::from(p.sport)) as u16 & 0x3fff),
                    }),
                };
            }
        }
    }
    xlat_of::<F>(&f.orig, &f.reply, dir, p)
}

#[inline]
fn new_state(proto: u8, tcp: u8) -> State {
    match proto {
        TCP if tcp & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN => State::SynSent,
        TCP if tcp & tcp_flags::RST != 0 => State::Close,
        TCP => State::Established,
        _ => State::Unreplied,
    }
}

/// The pre-routing hook (see the module documentation).
#[inline]
pub fn pre<F: Fam>(
    st: &mut NatState,
    n: &NatTables,
    c: &WorkerCounters,
    p: &Parsed<F::A>,
    in_port: u16,
) -> Pre<F::A> {
    if let Some((id, later)) = p.frag {
        if later {
            return later_fragment::<F>(st, n, c, p, id);
        }
    }
    let Some(class) = classify::<F>(n, p, in_port) else {
        return Pre::Pass;
    };
    if p.opaque {
        // Not translatable: the post-routing hook refuses it if an SNAT rule takes it.
        return if class.snat_src {
            Pre::MaybeSnat
        } else {
            Pre::Pass
        };
    }
    if class.owner != st.me && !st.handed {
        if let Some((id, _)) = p.frag {
            note_fragment::<F>(st, p, id, class.owner + 1, 0, false);
        }
        return Pre::Handoff(class.owner);
    }
    let key = F::key(p.src, p.dst, p.sport, p.dport, p.proto);
    let (now, t) = (st.now, n.timeouts);
    let found = match F::hinted(st, &key) {
        Some(h) => F::flows(st).lookup_hashed(&key, h),
        None => F::flows(st).lookup(&key),
    };
    if let Some((id, dir)) = found {
        let f = *F::flows(st).get(id);
        // A new connection on the ports of a service flow that has closed is scheduled
        // afresh (IPVS's conn_reuse_mode): its backend may be draining or gone.
        let reused = f.rule & SVC_FLAG != 0
            && dir == Dir::Original
            && p.proto == TCP
            && p.tcp & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
            && matches!(f.state, State::TimeWait | State::Close);
        if !reused && n.flow_live(f.rule, f.backend) {
            if f.rule & SVC_FLAG != 0
                && p.proto == TCP
                && p.error.is_none()
                && f.state == State::SynSent
            {
                // Passive health: how the backend met the connection.
                let syn = p.tcp & (tcp_flags::SYN | tcp_flags::ACK);
                match dir {
                    Dir::Reply if syn == tcp_flags::SYN | tcp_flags::ACK => {
                        st.stats.outcome(f.backend, true)
                    }
                    Dir::Reply if p.tcp & tcp_flags::RST != 0 => st.stats.outcome(f.backend, false),
                    Dir::Original if syn == tcp_flags::SYN => st.stats.outcome(f.backend, false),
                    _ => {}
                }
            }
            if p.error.is_none() {
                let mut fins = f.flags & CALLER_FLAGS;
                let mut s = match (p.proto, dir) {
                    (TCP, _) => crate::conntrack::tcp_next(f.state, dir, p.tcp, &mut fins),
                    (_, Dir::Reply) => State::Replied,
                    _ => f.state,
                };
                // A one-way service flow (DR, tunnels) never sees the backend's SYN-ACK:
                // the client's ACK establishes it (as IPVS does), so that it gets the
                // established timeout.
                if s == State::SynSent
                    && p.proto == TCP
                    && p.tcp & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::ACK
                    && f.rule & SVC_FLAG != 0
                    && n.svc
                        .by_id(f.rule & !SVC_FLAG)
                        .is_some_and(|x| !x.forward.two_way())
                {
                    s = State::Established;
                }
                if s != f.state {
                    st.by_state[f.state as usize] = st.by_state[f.state as usize].saturating_sub(1);
                    st.by_state[s as usize] += 1;
                }
                F::flows(st).refresh(id, s, fins, now, t.of(p.proto, s));
            }
            if let Some((fid, _)) = p.frag {
                note_fragment::<F>(st, p, fid, 0, id, dir == Dir::Reply);
            }
            return Pre::Xlat(flow_xlat::<F>(n, &f, dir, p));
        }
        // Its rule (service, backend) was deleted: the flow ends, and the packet is new.
        F::flows(st).remove(id);
        st.by_state[f.state as usize] = st.by_state[f.state as usize].saturating_sub(1);
        ended(&st.stats, f.rule, f.backend);
        c.nat.removed.add(1);
    }
    if p.error.is_some() {
        return Pre::Pass;
    }
    if let Some(i) = class.svc {
        return svc_new::<F>(st, n, c, p, i);
    }
    if let Some(d) = class.dnat {
        return match dnat_new::<F>(st, n, c, p, usize::from(d), in_port) {
            Ok(x) => Pre::Xlat(x),
            Err(r) => Pre::Drop(r),
        };
    }
    if class.snat_src && p.initiates {
        return Pre::MaybeSnat;
    }
    if let Some(rule) = class.inbound {
        // Tracked untranslated: the reply key is the original reversed.
        let reply = F::key(p.dst, p.src, p.dport, p.sport, p.proto);
        return match insert_flow::<F>(st, n, c, p, reply, rule, true) {
            Ok(id) => {
                let f = *F::flows(st).get(id);
                Pre::Xlat(xlat_of::<F>(&f.orig, &f.reply, Dir::Original, p))
            }
            Err(r) => Pre::Drop(r),
        };
    }
    Pre::Pass
}

fn frag_key<F: Fam>(p: &Parsed<F::A>, id: u32) -> u64 {
    (mix(F::fold(p.src) ^ F::fold(p.dst).rotate_left(29))
        ^ (u64::from(p.proto) << 32 | u64::from(id)))
        | 1
}

fn note_fragment<F: Fam>(
    st: &mut NatState,
    p: &Parsed<F::A>,
    id: u32,
    owner: u16,
    flow: u32,
    reply: bool,
) {
    let key = frag_key::<F>(p, id);
    let slot = st.frag_slot(key);
    st.frags[slot] = Frag {
        key,
        expires: st.now.wrapping_add(FRAG_TICKS),
        owner,
        flow,
        reply,
    };
}

/// A fragment after the first: where the first one went, or its flow's translation.
fn later_fragment<F: Fam>(
    st: &mut NatState,
    n: &NatTables,
    c: &WorkerCounters,
    p: &Parsed<F::A>,
    id: u32,
) -> Pre<F::A> {
    let key = frag_key::<F>(p, id);
    let slot = st.frag_slot(key);
    let f = st.frags[slot];
    if f.key != key || (st.now.wrapping_sub(f.expires) as i32) >= 0 {
        // No first fragment seen (or long ago): NAT's only if its addresses say so.
        let natted = classify::<F>(
            n,
            &Parsed {
                sport: 0,
                dport: 0,
                ..*p
            },
            u16::MAX,
        )
        .is_some();
        if natted {
            c.nat.fragments_unmatched.add(1);
            return Pre::Drop(DropReason::NatFragment);
        }
        return Pre::Pass;
    }
    if f.owner != 0 && !st.handed {
        return Pre::Handoff(f.owner - 1);
    }
    if !F::flows(st).is_live(f.flow) {
        return Pre::Drop(DropReason::NatFragment);
    }
    let fl = *F::flows(st).get(f.flow);
    let dir = if f.reply { Dir::Reply } else { Dir::Original };
    let (ks, kd, ksp, kdp, _) = F::parts(fl.key(dir));
    let q = Parsed {
        src: ks,
        dst: kd,
        sport: ksp,
        dport: kdp,
        ..*p
    };
    if (ks, kd) != (p.src, p.dst) {
        return Pre::Drop(DropReason::NatFragment);
    }
    c.nat.fragments.add(1);
    Pre::Xlat(flow_xlat::<F>(n, &fl, dir, &q))
}

/// This worker's share of a port range: (first port, how many); none left is
/// `NatPortsExhausted`.
fn share_span(range: (u16, u16), workers: u16, me: u16) -> Result<(u32, u32), DropReason> {
    let share = port_share(range.0, range.1, workers, me);
    if share.is_empty() {
        return Err(DropReason::NatPortsExhausted);
    }
    let lo = u32::from(*share.start());
    Ok((lo, u32::from(*share.end()) - lo + 1))
}

/// An endpoint-independent mapping for inside `src:sport` under rule `r`: the existing
/// one, or a new pool address (paired: the same for every port of `src`) and a free port
/// of this worker's share.
fn map_endpoint<F: Fam>(
    st: &mut NatState,
    n: &NatTables,
    r: &SnatRule,
    src: F::A,
    sport: u16,
    proto: u8,
) -> Result<(F::A, u16), DropReason> {
    let z = F::A::default();
    let mk = F::key(src, z, sport, 0, proto);
    let (now, t) = (st.now, n.timeouts);
    let life = match proto {
        TCP => t.tcp_established,
        UDP => t.udp,
        _ => t.icmp,
    };
    if let Some((id, Dir::Original)) = F::maps(st).lookup(&mk) {
        let m = *F::maps(st).get(id);
        if n.is_live(m.rule) {
            F::maps(st).refresh(id, m.state, 0, now, life);
            let (_, a, _, p, _) = F::parts(&m.reply);
            return Ok((a, p));
        }
        F::maps(st).remove(id);
    }
    let h = mix(F::fold(src) ^ st.seed);
    let addr = F::nth(F::pool(r), h).ok_or(DropReason::NatPortsExhausted)?;
    let (lo, len) = share_span(r.ports, n.workers, st.me)?;
    // Keep the inside port if this worker's share has it (as Linux tries to), else start
    // from a hash of the endpoint.
    let first = if (lo..lo + len).contains(&u32::from(sport)) {
        u32::from(sport) - lo
    } else {
        (mix(h ^ u64::from(sport)) % u64::from(len)) as u32
    };
    let dnat = F::dnat(n);
    for i in 0..PORT_PROBES.min(len) {
        let port = (lo + (first + i) % len) as u16;
        if !dnat.is_empty()
            && (dnat.contains_key(&(addr, proto, port)) || dnat.contains_key(&(addr, proto, 0)))
        {
            continue;
        }
        let rk = F::key(z, addr, 0, port, proto);
        if F::maps(st).lookup(&rk).is_some() {
            continue;
        }
        return match F::maps(st).insert_new(mk, rk, State::Established, r.id, now, life) {
            Ok(_) => Ok((addr, port)),
            Err(InsertError::Full) => Err(DropReason::NatTableFull),
            Err(InsertError::Exists) => continue,
        };
    }
    Err(DropReason::NatPortsExhausted)
}

/// Make the flow of `p` (whose key the caller looked up and did not find). `checked`: the
/// reply key may be tracked already (DNAT: two rules to one server); SNAT's is unique by
/// its mapping.
fn insert_flow<F: Fam>(
    st: &mut NatState,
    n: &NatTables,
    c: &WorkerCounters,
    p: &Parsed<F::A>,
    reply: F::K,
    rule: u16,
    checked: bool,
) -> Result<u32, DropReason> {
    let key = F::key(p.src, p.dst, p.sport, p.dport, p.proto);
    let s = new_state(p.proto, p.tcp);
    let (now, to) = (st.now, n.timeouts.of(p.proto, s));
    let t = F::flows(st);
    // (Every caller looked the original key up and did not find it: only the reply key
    // may be tracked already, when `checked`.)
    let mut r = if checked && t.lookup(&reply).is_some() {
        Err(InsertError::Exists)
    } else {
        t.insert_new(key, reply, s, rule, now, to)
    };
    if r == Err(InsertError::Exists) && p.proto == TCP && s == State::SynSent {
        // A new connection whose reply tuple a closed one still holds (TIME_WAIT, reset:
        // a client port reused towards another VIP or DNAT rule to the same server): the
        // closed one is over, the new one takes its place, as Linux's conntrack lets a
        // SYN reopen a TIME_WAIT entry.
        if let Some((old, _)) = t.lookup(&reply) {
            let f = *t.get(old);
            if matches!(f.state, State::TimeWait | State::Close) {
                t.remove(old);
                st.by_state[f.state as usize] = st.by_state[f.state as usize].saturating_sub(1);
                ended(&st.stats, f.rule, f.backend);
                c.nat.removed.add(1);
                r = F::flows(st).insert_new(key, reply, s, rule, now, to);
            }
        }
    }
    match r {
        Ok(id) => {
            st.by_state[s as usize] += 1;
            c.nat.created.add(1);
            if rule & SVC_FLAG == 0 {
                if let Some(h) = c.nat.rule_hits.get(usize::from(rule) % MAX_RULE_IDS) {
                    h.add(1);
                }
            }
            if let Some((fid, _)) = p.frag {
                note_fragment::<F>(st, p, fid, 0, id, false);
            }
            Ok(id)
        }
        Err(InsertError::Full) => Err(DropReason::NatTableFull),
        Err(InsertError::Exists) => Err(DropReason::NatClash),
    }
}

fn dnat_new<F: Fam>(
    st: &mut NatState,
    n: &NatTables,
    c: &WorkerCounters,
    p: &Parsed<F::A>,
    d: usize,
    in_port: u16,
) -> Result<Xlat<F::A>, DropReason> {
    let r = &n.dnat[d];
    let to = F::from_ip(r.to).ok_or(DropReason::NatClash)?;
    let to_port = r.to_port.unwrap_or(p.dport);
    // Hairpinning (RFC 4787 REQ-9): an inside host reaching another through the public
    // address gets its own mapping as source, so the server answers through Ferry.
    let hairpin = n
        .snat
        .iter()
        .find(|s| s.out != in_port && F::from(s).iter().any(|&f| F::contains(f, p.src)));
    let (rdst, rdport) = match hairpin {
        Some(s) => map_endpoint::<F>(st, n, s, p.src, p.sport, p.proto)?,
        None => (p.src, p.sport),
    };
    let reply = F::key(to, rdst, to_port, rdport, p.proto);
    let id = insert_flow::<F>(st, n, c, p, reply, r.id, true)?;
    let f = *F::flows(st).get(id);
    Ok(xlat_of::<F>(&f.orig, &f.reply, Dir::Original, p))
}

/// A service's new flow: schedule a backend, and track the flow (for FullNAT with a local
/// address and a port of this worker's share, so that replies come back here).
fn svc_new<F: Fam>(
    st: &mut NatState,
    n: &NatTables,
    c: &WorkerCounters,
    p: &Parsed<F::A>,
    i: u32,
) -> Pre<F::A> {
    let Some(s) = n.svc.list.get(i as usize) else {
        return Pre::Pass;
    };
    if p.opaque {
        return Pre::Drop(DropReason::NatUntranslatable);
    }
    // Unseeded: every node (and worker) hashes a flow, a client, a VIP alike, so that
    // nodes with the same table pick the same backend.
    let (fs, fd) = (F::fold(p.src), F::fold(p.dst));
    let ports = (u64::from(p.sport) << 24) | (u64::from(p.dport) << 8) | u64::from(p.proto);
    let h = FlowHash {
        tuple: mix(mix(fs ^ fd.rotate_left(32)) ^ ports),
        src: mix(fs),
        dst: mix(fd),
    };
    // Persistence: a client's new flows go to the backend its last one took, while that
    // backend may take new flows, until `persistence` passes without one (as IPVS's
    // persistent services, per client address).
    let now = st.now;
    let ak = F::key(p.src, F::A::default(), s.id, 0, 0);
    let mut kept = None;
    if s.persistence > 0 {
        if let Some((id, _)) = F::aff(st).lookup(&ak) {
            let b = F::aff(st).get(id).backend;
            match s.by_id.get(&b).map(|&i| i as usize) {
                Some(i) if s.backends[i].eligible() => {
                    F::aff(st).refresh(id, State::Established, 0, now, s.persistence);
                    kept = Some(i);
                }
                _ => F::aff(st).remove(id),
            }
        }
    }
    let bi = match kept {
        Some(i) => i,
        None => {
            let cursor = &mut st.rr[usize::from(s.id) % MAX_SERVICES];
            let i = match Services::schedule(s, h, cursor, &st.stats) {
                Ok(b) => b,
                Err(NoBackend::Reject) => return Pre::Reject,
            };
            if s.persistence > 0 {
                let a = F::aff(st);
                let r = a.insert_new(
                    ak,
                    ak,
                    State::Established,
                    SVC_FLAG | s.id,
                    now,
                    s.persistence,
                );
                if let Ok(id) = r {
                    a.set_backend(id, s.backends[i].id);
                }
            }
            i
        }
    };
    let b = &s.backends[bi];
    let Some(baddr) = F::from_ip(b.addr) else {
        return Pre::Drop(DropReason::NatClash);
    };
    let bport = if b.port == 0 { p.dport } else { b.port };
    let rule = SVC_FLAG | s.id;
    let id = if s.forward == Forward::FullNat {
        match fullnat_flow::<F>(st, n, c, p, s, baddr, bport, h.src) {
            Ok(id) => id,
            Err(r) => return Pre::Drop(r),
        }
    } else {
        // NAT: replies come from the backend to the client. DR and tunnels: the backend
        // answers the client itself, so the flow has one key (nothing comes back to match,
        // and two VIPs that share a backend never clash); its backend is named by id.
        let reply = if s.forward.two_way() {
            F::key(baddr, p.src, bport, p.sport, p.proto)
        } else {
            F::key(p.src, p.dst, p.sport, p.dport, p.proto)
        };
        match insert_flow::<F>(st, n, c, p, reply, rule, true) {
            Ok(id) => id,
            Err(r) => return Pre::Drop(r),
        }
    };
    F::flows(st).set_backend(id, b.id);
    st.stats.opened(b.id);
    let f = *F::flows(st).get(id);
    Pre::Xlat(flow_xlat::<F>(n, &f, Dir::Original, p))
}

/// A FullNAT flow: the backend sees a local address (picked by the client's hash) and a
/// port of this worker's share of [`LOCAL_PORTS`].
#[allow(clippy::too_many_arguments)]
fn fullnat_flow<F: Fam>(
    st: &mut NatState,
    n: &NatTables,
    c: &WorkerCounters,
    p: &Parsed<F::A>,
    s: &Service,
    baddr: F::A,
    bport: u16,
    h: u64,
) -> Result<u32, DropReason> {
    // (Validated: every local address is of the VIP's family.)
    let laddr = s
        .local
        .get((h % s.local.len().max(1) as u64) as usize)
        .and_then(|a| F::from_ip(*a))
        .ok_or(DropReason::NatPortsExhausted)?;
    let (lo, len) = share_span(LOCAL_PORTS, n.workers, st.me)?;
    let first = (mix(h ^ u64::from(p.sport) ^ st.seed) % u64::from(len)) as u32;
    for k in 0..PORT_PROBES.min(len) {
        let lport = (lo + (first + k) % len) as u16;
        let reply = F::key(baddr, laddr, bport, lport, p.proto);
        match insert_flow::<F>(st, n, c, p, reply, SVC_FLAG | s.id, true) {
            Ok(id) => return Ok(id),
            Err(DropReason::NatClash) => continue,
            Err(r) => return Err(r),
        }
    }
    Err(DropReason::NatPortsExhausted)
}

/// The post-routing hook for a packet [`pre`] found to come from an SNAT rule's source
/// and that no flow matched: the first rule for its source and egress port `out` makes
/// the flow. `Ok(None)`: no rule for this egress (routed as it is).
pub fn snat_new<F: Fam>(
    st: &mut NatState,
    n: &NatTables,
    c: &WorkerCounters,
    p: &Parsed<F::A>,
    out: u16,
) -> Result<Option<Xlat<F::A>>, DropReason> {
    let Some(r) = n
        .snat
        .iter()
        .find(|r| r.out == out && F::from(r).iter().any(|&f| F::contains(f, p.src)))
    else {
        return Ok(None);
    };
    if p.opaque {
        return Err(DropReason::NatUntranslatable);
    }
    let (addr, port) = map_endpoint::<F>(st, n, r, p.src, p.sport, p.proto)?;
    // The reply comes from the destination to the mapping (an echo reply carries the
    // mapped identifier, as both "ports").
    let rsport = if p.proto == F::ECHO { port } else { p.dport };
    let reply = F::key(p.dst, addr, rsport, port, p.proto);
    let id = insert_flow::<F>(st, n, c, p, reply, r.id, false)?;
    let f = *F::flows(st).get(id);
    Ok(Some(xlat_of::<F>(&f.orig, &f.reply, Dir::Original, p)))
}

impl<A: Copy + PartialEq> Xlat<A> {
    /// Rewrite a packet of family `F` (`ip` from its network header).
    pub fn apply<F: Fam<A = A>>(&self, ip: &mut [u8]) -> Result<(), RewriteError> {
        if !self.error {
            if let Some((a, p)) = self.src {
                F::rewrite(ip, End::Source, a, p)?;
            }
            if let Some((a, p)) = self.dst {
                F::rewrite(ip, End::Destination, a, p)?;
            }
            return Ok(());
        }
        // An ICMP error. The quoted packet is the reverse of the tuple: its source is the
        // tuple's destination. The error goes to the new destination; on its way out it
        // comes from the new source, whoever inside sent it (RFC 5508 REQ-4: an inside
        // router's address does not leak); on its way in, from whoever sent it (an outside
        // router stays visible to traceroute).
        if let Some((a, p)) = self.dst {
            F::rewrite_error(ip, End::Source, a, p, End::Destination, a)?;
        }
        if let Some((a, p)) = self.src {
            let outer = if self.new_source {
                a
            } else {
                F::source(ip).ok_or(RewriteError::Truncated)?
            };
            F::rewrite_error(ip, End::Destination, a, p, End::Source, outer)?;
        }
        Ok(())
    }
}
