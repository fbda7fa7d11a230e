//! Compiling a validated [`Config`] into the tables workers read.
//!
//! Two steps, so that a neighbour change does not rebuild a million-route FIB:
//! [`Plan::build`] makes the FIBs and next-hop skeleton from the config (on start and on
//! reload), and [`Plan::tables`] fills in neighbour MACs for each published generation,
//! sharing the FIBs with the plan by `Arc`.
//!
//! Route deltas do not rebuild either: [`Plan::stage_routes`] changes the route sets and
//! the next-hop table, and [`Plan::commit_fibs`] applies the staged prefixes in place
//! (`Lpm4::update`) to a second copy of each FIB, one that no worker holds any more (the
//! snapshot that had it was reclaimed), then swaps the two: the copy becomes the live FIB
//! of the next generation and the old live one the spare, to catch up with these prefixes
//! at the commit after. Double buffering costs a second FIB's memory; in return a change
//! costs the work of its own prefix on each copy, every change between two publishes
//! shares one generation (batching), and workers never see a table being written.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ferry_dataplane::lpm::{Lpm4, Lpm6, LpmError, NextHop, RouteSet4, RouteSet6, MAX_NEXT_HOP};
use ferry_dataplane::tables::{link_local_of, FastMap, Hop, Neighbor, PortTable, Tables};

use ferry_dataplane::conntrack::Timeouts;
use ferry_dataplane::nat::{self, NatTables, MAX_RULE_IDS};

use crate::config::{Config, Mac, Prefix};
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
    pub ports: Arc<Vec<PortTable>>,
    pub fib4: Arc<Lpm4>,
    pub fib6: Arc<Lpm6>,
    /// Hops with no MACs filled in.
    pub hops: Vec<Hop>,
    pub ecmp: Arc<Vec<NextHop>>,
    /// Static neighbours: (port, address) → MAC.
    pub statics: Vec<(u16, IpAddr, Mac)>,
    pub routes4: usize,
    pub routes6: usize,
    /// The FIBs' routes by hop id: static routes, and over them connected and local
    /// prefixes (which win on an equal prefix).
    set4: RouteSet4,
    set6: RouteSet6,
    kernel: HashMap<Prefix, NextHop>,
    /// Hop ids of gateways and of ECMP groups (by members), for routes added later.
    gateways: HashMap<IpAddr, NextHop>,
    groups: HashMap<Vec<NextHop>, NextHop>,
    /// The FIBs' second copies (the previous generation's, once no worker holds them) and
    /// the prefixes they have not seen yet.
    spare4: Option<Arc<Lpm4>>,
    spare6: Option<Arc<Lpm6>>,
    behind4: Vec<(u32, u8)>,
    behind6: Vec<(u128, u8)>,
    /// Prefixes changed since the last commit.
    staged4: Vec<(u32, u8)>,
    staged6: Vec<(u128, u8)>,
    /// The NAT rules and services compiled for workers, if any.
    pub nat: Option<Arc<NatTables>>,
    /// The NAT rules alone (what `nat` is made from with the services).
    nat_rules: Option<Arc<NatTables>>,
    /// The services (issue 6).
    pub svc: crate::svcplan::SvcPlan,
    /// Stable rule ids (flows name their rule by id): by kind and name, kept across builds.
    pub rule_ids: HashMap<(bool, String), u16>,
}

/// Stable ids for the config's NAT rules: a rule keeps the id of the rule of its kind and
/// name in `previous`; a new one takes the lowest id no rule holds.
fn nat_ids(
    cfg: &Config,
    previous: Option<&HashMap<(bool, String), u16>>,
) -> HashMap<(bool, String), u16> {
    let names = cfg
        .nat
        .snat
        .iter()
        .map(|r| (true, r.name.clone()))
        .chain(cfg.nat.dnat.iter().map(|r| (false, r.name.clone())));
    let mut ids = HashMap::new();
    let mut fresh = Vec::new();
    for k in names {
        match previous.and_then(|p| p.get(&k)) {
            Some(&id) => {
                ids.insert(k, id);
            }
            None => fresh.push(k),
        }
    }
    let mut used: std::collections::HashSet<u16> = ids.values().copied().collect();
    // Ids of rules just deleted are not reused at once: their flows end lazily.
    if let Some(p) = previous {
        used.extend(p.values().copied());
    }
    let mut next = 0u16;
    for k in fresh {
        while used.contains(&next) && usize::from(next) < MAX_RULE_IDS - 1 {
            next += 1;
        }
        used.insert(next);
        ids.insert(k, next);
    }
    ids
}

/// The NAT tables of `cfg`, and each port's NAT addresses (into `ports`).
fn nat_tables(
    cfg: &Config,
    ids: &HashMap<(bool, String), u16>,
    ports: &mut [PortTable],
    previous: Option<&NatTables>,
) -> Option<Arc<NatTables>> {
    let n = &cfg.nat;
    if n.is_empty() && cfg.services.is_empty() {
        return None;
    }
    let split4 = |v: &[Prefix]| -> Vec<(u32, u8)> {
        v.iter()
            .filter_map(|p| match p.addr {
                IpAddr::V4(a) => Some((u32::from(a), p.len)),
                IpAddr::V6(_) => None,
            })
            .collect()
    };
    let split6 = |v: &[Prefix]| -> Vec<(u128, u8)> {
        v.iter()
            .filter_map(|p| match p.addr {
                IpAddr::V6(a) => Some((u128::from(a), p.len)),
                IpAddr::V4(_) => None,
            })
            .collect()
    };
    let mut push = |port: usize, addr: IpAddr, len: u8| {
        if let Some(p) = ports.get_mut(port) {
            match addr {
                IpAddr::V4(a) if !p.nat4.contains(&(a.into(), len)) => p.nat4.push((a.into(), len)),
                IpAddr::V6(a) if !p.nat6.contains(&(a.into(), len)) => p.nat6.push((a.into(), len)),
                _ => {}
            }
        }
    };
    let snat = n
        .snat
        .iter()
        .map(|r| {
            for p in &r.pool {
                push(r.out, p.addr, p.len);
            }
            // Addresses the rule's pool had before and has no more: kept for the flows
            // made with them (routed as local, answered in ARP/ND, their replies matched)
            // until the rule is deleted or ferryd restarts.
            let (pool4, pool6) = (split4(&r.pool), split6(&r.pool));
            let old = previous.and_then(|o| o.snat.iter().find(|o| o.name == r.name));
            let retired4: Vec<(u32, u8)> = old
                .map(|o| o.pool4.iter().chain(&o.retired4).copied())
                .into_iter()
                .flatten()
                .filter(|a| !pool4.contains(a))
                .collect();
            let retired6: Vec<(u128, u8)> = old
                .map(|o| o.pool6.iter().chain(&o.retired6).copied())
                .into_iter()
                .flatten()
                .filter(|a| !pool6.contains(a))
                .collect();
            for &(a, l) in &retired4 {
                push(r.out, IpAddr::from(a.to_be_bytes()), l);
            }
            for &(a, l) in &retired6 {
                push(r.out, IpAddr::from(a.to_be_bytes()), l);
            }
            nat::SnatRule {
                id: ids.get(&(true, r.name.clone())).copied().unwrap_or(0),
                name: r.name.clone(),
                from4: split4(&r.from),
                from6: split6(&r.from),
                out: r.out as u16,
                pool4,
                pool6,
                retired4,
                retired6,
                ports: r.ports,
            }
        })
        .collect();
    let mut dnat_ports = 0u64;
    // The ports towards SNAT sources are stateful too: a connection from outside to an
    // inside host is tracked (untranslated), so that the host's answers are not taken for
    // new outgoing flows.
    let port_of = |a: IpAddr| -> Option<usize> {
        crate::config::connected_port(&cfg.ports, a).or_else(|| {
            cfg.routes
                .iter()
                .filter(|(p, _)| p.contains(a))
                .max_by_key(|(p, _)| p.len)
                .and_then(|(_, via)| via.first())
                .and_then(|gw| crate::config::connected_port(&cfg.ports, *gw))
        })
    };
    for r in &n.snat {
        for p in &r.from {
            if let Some(port) = port_of(p.addr) {
                dnat_ports |= 1u64 << (port % 64);
            }
        }
    }
    let dnat = n
        .dnat
        .iter()
        .map(|r| {
            if let Some(port) = cfg
                .ports
                .iter()
                .position(|p| p.addresses.iter().any(|a| a.contains(r.address)))
            {
                push(port, r.address, if r.address.is_ipv4() { 32 } else { 128 });
                dnat_ports |= 1u64 << (port % 64);
            }
            nat::DnatRule {
                id: ids.get(&(false, r.name.clone())).copied().unwrap_or(0),
                name: r.name.clone(),
                address: r.address,
                protocol: r.protocol,
                port: r.port,
                to: r.to_address,
                to_port: r.to_port,
            }
        })
        .collect();
    let t = &n.timeouts;
    let ticks = |s: u64| (s.min(u64::from(u32::MAX / nat::TICKS_PER_S)) as u32) * nat::TICKS_PER_S;
    let timeouts = Timeouts {
        tcp_established: ticks(t.tcp_established),
        tcp_transitory: ticks(t.tcp_transitory),
        tcp_closed: ticks(10),
        udp: ticks(t.udp),
        icmp: ticks(t.icmp),
    };
    Some(Arc::new(NatTables::new(
        snat,
        dnat,
        timeouts,
        cfg.workers() as u16,
        dnat_ports,
    )))
}

/// The workers' NAT tables: the rules with the services.
fn combine(
    rules: Option<&Arc<NatTables>>,
    svc: &crate::svcplan::SvcPlan,
) -> Option<Arc<NatTables>> {
    let r = rules?;
    if svc.services.is_empty() {
        return Some(r.clone());
    }
    Some(Arc::new(
        (**r).clone().with_services(svc.services.clone(), svc.ports),
    ))
}

/// What [`Plan::commit_fibs`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Nothing was staged.
    Nothing,
    /// The staged prefixes are in the live FIBs.
    Done,
    /// A spare copy is still held by a worker's snapshot: try again after reclaiming.
    NotYet,
}

impl Plan {
    /// Build FIBs and the next-hop table. `macs[i]` is the MAC of port i.
    pub fn build(cfg: &Config, macs: &[Mac]) -> Result<Plan, CompileError> {
        Plan::build_after(cfg, macs, None)
    }

    /// As [`Plan::build`], keeping `previous`'s FIB of a family whose routes (with their
    /// hop ids) did not change: an apply of a whole state that changes IPv4 routes does not
    /// rebuild (nor fault in again) a 64 MiB IPv6 table.
    pub fn build_after(
        cfg: &Config,
        macs: &[Mac],
        previous: Option<&Plan>,
    ) -> Result<Plan, CompileError> {
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
                nat4: Vec::new(),
                nat6: Vec::new(),
            });
        }

        let rule_ids = nat_ids(cfg, previous.map(|p| &p.rule_ids));
        let nat_rules = nat_tables(
            cfg,
            &rule_ids,
            &mut ports,
            previous.and_then(|p| p.nat_rules.as_deref()),
        );
        // VIPs and FullNAT local addresses route as local and are answered in ARP/ND.
        for (port, a) in crate::svcplan::local_addresses(cfg) {
            if let Some(p) = ports.get_mut(port) {
                match a {
                    IpAddr::V4(x) if !p.nat4.contains(&(x.into(), 32)) => {
                        p.nat4.push((x.into(), 32))
                    }
                    IpAddr::V6(x) if !p.nat6.contains(&(x.into(), 128)) => {
                        p.nat6.push((x.into(), 128))
                    }
                    _ => {}
                }
            }
        }
        let svc = crate::svcplan::SvcPlan::build(cfg, previous.map(|p| &p.svc));
        let nat = combine(nat_rules.as_ref(), &svc);
        let mut hops: Vec<Hop> = Vec::new();
        let mut ecmp: Vec<NextHop> = Vec::new();
        let mut gateways: HashMap<IpAddr, NextHop> = HashMap::new();
        // A BGP-like table has many routes and few next hops: the last one is remembered.
        let mut last_gw: Option<(IpAddr, NextHop)> = None;
        let mut groups: HashMap<Vec<NextHop>, NextHop> = HashMap::new();
        let mut kernel: HashMap<Prefix, NextHop> = HashMap::new();
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
                if let Some((g, h)) = last_gw {
                    if g == gw {
                        return h;
                    }
                }
                let h = *gateways.entry(gw).or_insert_with(|| {
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
                });
                last_gw = Some((gw, h));
                h
            };
            let hop = if via.len() == 1 {
                gw_hop(via[0], &mut hops)
            } else {
                let members: Vec<NextHop> = via.iter().map(|g| gw_hop(*g, &mut hops)).collect();
                *groups.entry(members).or_insert_with_key(|members| {
                    let start = ecmp.len() as u32;
                    ecmp.extend_from_slice(members);
                    hops.push(Hop::Ecmp {
                        start,
                        len: members.len() as u32,
                    });
                    (hops.len() - 1) as NextHop
                })
            };
            add(prefix.addr, prefix.len, hop);
        }
        for (i, p) in cfg.ports.iter().enumerate() {
            hops.push(Hop::Connected { port: i as u16 });
            let connected = (hops.len() - 1) as NextHop;
            for a in &p.addresses {
                let net = a.network();
                add(net.addr, net.len, connected);
                kernel.insert(net, connected);
            }
        }
        for (i, p) in ports.iter().enumerate() {
            hops.push(Hop::Local { port: i as u16 });
            let local = (hops.len() - 1) as NextHop;
            for (a, _) in &p.v4 {
                add(IpAddr::from(*a), 32, local);
                kernel.insert(
                    Prefix {
                        addr: IpAddr::from(*a),
                        len: 32,
                    },
                    local,
                );
            }
            for (a, _) in &p.v6 {
                add(IpAddr::from(*a), 128, local);
                kernel.insert(
                    Prefix {
                        addr: IpAddr::from(*a),
                        len: 128,
                    },
                    local,
                );
            }
        }
        for (i, p) in ports.iter().enumerate() {
            if p.nat4.is_empty() && p.nat6.is_empty() {
                continue;
            }
            hops.push(Hop::Local { port: i as u16 });
            let local = (hops.len() - 1) as NextHop;
            let nat_prefixes = p
                .nat4
                .iter()
                .map(|&(a, l)| (IpAddr::from(a.to_be_bytes()), l))
                .chain(
                    p.nat6
                        .iter()
                        .map(|&(a, l)| (IpAddr::from(a.to_be_bytes()), l)),
                );
            for (addr, len) in nat_prefixes {
                add(addr, len, local);
                kernel.insert(Prefix { addr, len }, local);
            }
        }
        if hops.len() > MAX_NEXT_HOP as usize {
            return Err(CompileError::TooManyHops(hops.len()));
        }
        // (A later duplicate wins, as in the build.)
        let set4 = RouteSet4::from_routes(&r4);
        let set6 = RouteSet6::from_routes(&r6);
        // Random lookups over 64+ MiB tables: back them with huge pages (fewer TLB misses),
        // as DPDK's own tables are.
        let fib4 = match previous {
            Some(p) if !p.staged() && p.set4 == set4 => p.fib4.clone(),
            _ => {
                let f = Lpm4::build(&r4)?;
                for m in f.backing_memory() {
                    ferry_dataplane::dpdk::advise_hugepages(m);
                }
                Arc::new(f)
            }
        };
        let fib6 = match previous {
            Some(p) if !p.staged() && p.set6 == set6 => p.fib6.clone(),
            _ => {
                let f = Lpm6::build(&r6)?;
                for m in f.backing_memory() {
                    ferry_dataplane::dpdk::advise_hugepages(m);
                }
                Arc::new(f)
            }
        };
        let statics = cfg
            .neighbors
            .iter()
            .map(|n| (n.port as u16, n.address, n.mac))
            .collect();
        Ok(Plan {
            ports: Arc::new(ports),
            fib4,
            fib6,
            hops,
            ecmp: Arc::new(ecmp),
            statics,
            routes4: set4.len(),
            routes6: set6.len(),
            set4,
            set6,
            kernel,
            gateways,
            groups,
            spare4: None,
            spare6: None,
            behind4: Vec::new(),
            behind6: Vec::new(),
            staged4: Vec::new(),
            staged6: Vec::new(),
            nat,
            nat_rules,
            svc,
            rule_ids,
        })
    }

    /// Apply a backend's new health verdict (up, effective weight): its service is
    /// rebuilt alone. True if the tables changed (publish them).
    pub fn set_health(&mut self, cfg: &Config, key: &crate::health::Key, v: (bool, u32)) -> bool {
        if !self.svc.set_health(cfg, key, v) {
            return false;
        }
        self.nat = combine(self.nat_rules.as_ref(), &self.svc);
        true
    }

    /// The hop id for next hops `via` (a gateway, or an ECMP group of them), added to the
    /// next-hop table if new. (Hops of deleted routes stay until the next full build.)
    fn hop_for(&mut self, cfg: &Config, via: &[IpAddr]) -> Result<NextHop, CompileError> {
        let gw = |plan: &mut Plan, g: IpAddr| -> Result<NextHop, CompileError> {
            if let Some(h) = plan.gateways.get(&g) {
                return Ok(*h);
            }
            let port = crate::config::connected_port(&cfg.ports, g)
                .expect("validated: gateway is on a connected subnet")
                as u16;
            plan.push_hop(Hop::Gateway {
                port,
                gw: g,
                mac: None,
                stale: false,
            })
            .inspect(|h| {
                plan.gateways.insert(g, *h);
            })
        };
        if via.len() == 1 {
            return gw(self, via[0]);
        }
        let members = via
            .iter()
            .map(|g| gw(self, *g))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(h) = self.groups.get(&members) {
            return Ok(*h);
        }
        let start = self.ecmp.len() as u32;
        let h = self.push_hop(Hop::Ecmp {
            start,
            len: members.len() as u32,
        })?;
        Arc::make_mut(&mut self.ecmp).extend_from_slice(&members);
        self.groups.insert(members, h);
        Ok(h)
    }

    fn push_hop(&mut self, hop: Hop) -> Result<NextHop, CompileError> {
        if self.hops.len() >= MAX_NEXT_HOP as usize {
            return Err(CompileError::TooManyHops(self.hops.len() + 1));
        }
        self.hops.push(hop);
        Ok((self.hops.len() - 1) as NextHop)
    }

    /// Stage changed route prefixes: `cfg` is the configuration after the change (its
    /// `routes` say what each prefix now is, if anything). The FIBs change at the next
    /// [`Plan::commit_fibs`].
    pub fn stage_routes(&mut self, cfg: &Config, changed: &[Prefix]) -> Result<(), CompileError> {
        for p in changed {
            // A connected or local prefix shadows a static route with the same prefix.
            let hop = match (self.kernel.get(p), cfg.routes.get(p)) {
                (Some(k), _) => Some(*k),
                (None, Some(via)) => Some(self.hop_for(cfg, via)?),
                (None, None) => None,
            };
            match p.addr {
                IpAddr::V4(a) => {
                    let a = u32::from(a);
                    match hop {
                        Some(h) => self.set4.insert(a, p.len, h),
                        None => self.set4.remove(a, p.len),
                    };
                    self.staged4.push((a, p.len));
                }
                IpAddr::V6(a) => {
                    let a = u128::from(a);
                    match hop {
                        Some(h) => self.set6.insert(a, p.len, h),
                        None => self.set6.remove(a, p.len),
                    };
                    self.staged6.push((a, p.len));
                }
            }
        }
        self.routes4 = self.set4.len();
        self.routes6 = self.set6.len();
        Ok(())
    }

    /// Whether route changes wait for [`Plan::commit_fibs`].
    pub fn staged(&self) -> bool {
        !self.staged4.is_empty() || !self.staged6.is_empty()
    }

    /// Put the staged prefixes into the FIBs the next [`Plan::tables`] hands out, on the
    /// spare copies (see the module documentation). If the groups run out, the FIB is
    /// rebuilt from its route set instead.
    pub fn commit_fibs(&mut self) -> Result<Commit, CompileError> {
        if !self.staged() {
            return Ok(Commit::Nothing);
        }
        // Both spares must be free before either changes: one generation has both.
        if (!self.staged4.is_empty() && busy(&mut self.spare4))
            || (!self.staged6.is_empty() && busy(&mut self.spare6))
        {
            return Ok(Commit::NotYet);
        }
        if !self.staged4.is_empty() {
            let staged = std::mem::take(&mut self.staged4);
            commit_one(
                &mut self.fib4,
                &mut self.spare4,
                &mut self.behind4,
                staged,
                &self.set4,
            )?;
        }
        if !self.staged6.is_empty() {
            let staged = std::mem::take(&mut self.staged6);
            commit_one(
                &mut self.fib6,
                &mut self.spare6,
                &mut self.behind6,
                staged,
                &self.set6,
            )?;
        }
        Ok(Commit::Done)
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
            nat: self.nat.clone(),
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

/// A spare FIB that a worker's snapshot still holds.
fn busy<F>(spare: &mut Option<Arc<F>>) -> bool {
    spare.as_mut().is_some_and(|s| Arc::get_mut(s).is_none())
}

/// One family's FIB, as [`commit_one`] updates it.
trait Fib: Sized {
    type Key: Copy;
    type Set;
    fn duplicate(&self) -> Self;
    fn update(&mut self, set: &Self::Set, key: Self::Key) -> Result<(), LpmError>;
    fn rebuild(set: &Self::Set) -> Result<Self, LpmError>;
    fn memory(&self) -> [&[u32]; 2];
}

impl Fib for Lpm4 {
    type Key = (u32, u8);
    type Set = RouteSet4;
    fn duplicate(&self) -> Self {
        Lpm4::duplicate(self)
    }
    fn update(&mut self, set: &RouteSet4, (a, l): (u32, u8)) -> Result<(), LpmError> {
        Lpm4::update(self, set, a, l)
    }
    fn rebuild(set: &RouteSet4) -> Result<Self, LpmError> {
        Lpm4::build(&set.iter().collect::<Vec<_>>())
    }
    fn memory(&self) -> [&[u32]; 2] {
        self.backing_memory()
    }
}

impl Fib for Lpm6 {
    type Key = (u128, u8);
    type Set = RouteSet6;
    fn duplicate(&self) -> Self {
        Lpm6::duplicate(self)
    }
    fn update(&mut self, set: &RouteSet6, (a, l): (u128, u8)) -> Result<(), LpmError> {
        Lpm6::update(self, set, a, l)
    }
    fn rebuild(set: &RouteSet6) -> Result<Self, LpmError> {
        Lpm6::build(&set.iter().collect::<Vec<_>>())
    }
    fn memory(&self) -> [&[u32]; 2] {
        self.backing_memory()
    }
}

/// Bring the spare copy up to date (the prefixes it is `behind` on, then `staged`) and swap
/// it with the live one. The caller checked that no snapshot holds the spare. If the table
/// runs out of groups, it is rebuilt from `set` and has no spare until the next change.
fn commit_one<F: Fib>(
    live: &mut Arc<F>,
    spare: &mut Option<Arc<F>>,
    behind: &mut Vec<F::Key>,
    staged: Vec<F::Key>,
    set: &F::Set,
) -> Result<(), CompileError> {
    let mut next = match spare.take() {
        Some(s) => s,
        None => {
            // The first change since a build: the second copy starts as the first.
            behind.clear();
            let d = live.duplicate();
            for m in d.memory() {
                ferry_dataplane::dpdk::advise_hugepages(m);
            }
            Arc::new(d)
        }
    };
    let fib = Arc::get_mut(&mut next).expect("checked: no snapshot holds the spare");
    let updated = behind
        .iter()
        .chain(&staged)
        .try_for_each(|k| fib.update(set, *k));
    match updated {
        Ok(()) => {
            *spare = Some(std::mem::replace(live, next));
            *behind = staged;
        }
        Err(e) => {
            tracing::warn!("FIB update: {e}; rebuilding it");
            *live = Arc::new(F::rebuild(set)?);
            behind.clear();
        }
    }
    Ok(())
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
