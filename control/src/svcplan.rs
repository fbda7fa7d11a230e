//! Compiling the configured services into the workers' [`Services`] (issue 6).
//!
//! Services and backends get stable ids (flows name them), kept across builds by name and
//! by (service, address, port). Each service is compiled alone and kept with what it was
//! compiled from: a build reuses every service whose configuration and backends' health
//! did not change, and a health change ([`SvcPlan::set_health`]) rebuilds one service's
//! scheduling table and reuses the index of VIPs and backends, so that it is live on the
//! workers within milliseconds even with 10,000 services.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferry_dataplane::service::{
    self as dp, Forward, Services, SvcIndex, MAX_BACKENDS, MAX_SERVICES,
};

use crate::config::Config;
use crate::health::Key;
use crate::service::Service;

/// A backend's health as compiled: up, and the weight it schedules with.
pub type Verdict = (bool, u32);

#[derive(Clone, Default)]
pub struct SvcPlan {
    pub ids: HashMap<String, u16>,
    pub backend_ids: HashMap<Key, u32>,
    next_backend: u32,
    /// Verdicts applied (absent: up at its configured weight).
    pub health: HashMap<Key, Verdict>,
    /// Per service: what it was compiled from, and the result.
    built: HashMap<String, Built>,
    /// Service name → index in `services.list`.
    pos: HashMap<String, usize>,
    pub services: Services,
    /// Ports whose outgoing hops are stateful for services (NAT-mode replies leave by
    /// the port of the VIP).
    pub ports: u64,
}

#[derive(Clone)]
struct Built {
    cfg: Service,
    verdicts: Vec<Verdict>,
    id: u16,
    svc: Arc<dp::Service>,
}

impl SvcPlan {
    /// Build for `cfg`, keeping ids, verdicts and unchanged services of `previous`.
    pub fn build(cfg: &Config, previous: Option<&SvcPlan>) -> SvcPlan {
        let mut p = SvcPlan {
            next_backend: previous.map_or(0, |p| p.next_backend),
            ..Default::default()
        };
        // Ids: kept by name; new ones take the lowest id neither build uses (flows of a
        // deleted service end lazily: its id is not reused at once).
        let mut used: HashSet<u16> = HashSet::new();
        if let Some(prev) = previous {
            used.extend(prev.ids.values());
        }
        let mut next = 0u16;
        for s in &cfg.services {
            let id = match previous.and_then(|q| q.ids.get(&s.name)) {
                Some(&id) => id,
                None => {
                    while used.contains(&next) && usize::from(next) < MAX_SERVICES - 1 {
                        next += 1;
                    }
                    used.insert(next);
                    next
                }
            };
            p.ids.insert(s.name.clone(), id);
        }
        let mut taken: HashSet<u32> = HashSet::new();
        for s in &cfg.services {
            for b in &s.backends {
                let k = (s.name.clone(), b.address, b.port);
                if let Some(&id) = previous.and_then(|q| q.backend_ids.get(&k)) {
                    p.backend_ids.insert(k, id);
                    taken.insert(id);
                }
            }
        }
        for s in &cfg.services {
            for b in &s.backends {
                let k = (s.name.clone(), b.address, b.port);
                if p.backend_ids.contains_key(&k) {
                    continue;
                }
                let id = p.fresh_backend_id(&taken);
                taken.insert(id);
                p.backend_ids.insert(k, id);
            }
        }
        if let Some(prev) = previous {
            p.health = prev
                .health
                .iter()
                .filter(|(k, _)| p.backend_ids.contains_key(*k))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
        }
        let mut list = Vec::with_capacity(cfg.services.len());
        for (i, s) in cfg.services.iter().enumerate() {
            let b = p.compile(cfg, s, previous.and_then(|q| q.built.get(&s.name)));
            list.push(b.svc.clone());
            p.pos.insert(s.name.clone(), i);
            p.built.insert(s.name.clone(), b);
        }
        p.ports = stateful_ports(cfg);
        p.services = Services::new(list);
        p
    }

    /// An id no backend of this build holds: the next never used, and once all were
    /// used, the lowest free one.
    fn fresh_backend_id(&mut self, taken: &HashSet<u32>) -> u32 {
        if (self.next_backend as usize) < MAX_BACKENDS {
            self.next_backend += 1;
            return self.next_backend - 1;
        }
        (0..MAX_BACKENDS as u32)
            .find(|i| !taken.contains(i))
            .unwrap_or(0)
    }

    fn compile(&self, cfg: &Config, s: &Service, old: Option<&Built>) -> Built {
        let id = self.ids.get(&s.name).copied().unwrap_or(0);
        let verdicts: Vec<Verdict> = s
            .backends
            .iter()
            .map(|b| {
                if s.health.check == crate::service::Check::None {
                    return (true, b.weight);
                }
                self.health
                    .get(&(s.name.clone(), b.address, b.port))
                    .copied()
                    .map_or((true, b.weight), |(up, w)| (up, w.min(b.weight)))
            })
            .collect();
        // (The tunnel's source follows the ports and routes, not the service alone.)
        let tunnel_src = match s.forward {
            Forward::Ipip | Forward::Gue => {
                s.backends.first().and_then(|b| source_for(cfg, b.address))
            }
            _ => None,
        };
        if let Some(o) = old {
            if o.id == id && o.cfg == *s && o.verdicts == verdicts && o.svc.tunnel_src == tunnel_src
            {
                return o.clone();
            }
        }
        let backends = s
            .backends
            .iter()
            .zip(&verdicts)
            .map(|(b, &(up, eff))| dp::Backend {
                id: self
                    .backend_ids
                    .get(&(s.name.clone(), b.address, b.port))
                    .copied()
                    .unwrap_or(0),
                addr: b.address,
                port: b.port,
                weight: b.weight,
                effective: eff,
                drain: b.drain,
                up,
            })
            .collect();
        let svc = dp::Service::new(dp::Service {
            id,
            name: s.name.clone(),
            vip: s.vip,
            port: s.port,
            proto: s.protocol,
            sched: s.scheduler,
            forward: s.forward,
            local: s.local_addresses.clone(),
            tunnel_src,
            gue_port: s.gue_port,
            when_down: s.when_down,
            persistence: s.persistence_s * ferry_dataplane::nat::TICKS_PER_S,
            backends,
            table: Vec::new(),
            digest: 0,
            maglev_size: s.table_size,
            by_id: Default::default(),
        });
        Built {
            cfg: s.clone(),
            verdicts,
            id,
            svc: Arc::new(svc),
        }
    }

    /// Apply a backend's new verdict: its service alone is rebuilt, the index is reused.
    /// False if nothing changed (or the backend is not configured).
    pub fn set_health(&mut self, cfg: &Config, key: &Key, v: Verdict) -> bool {
        if !self.backend_ids.contains_key(key) || self.health.get(key) == Some(&v) {
            return false;
        }
        self.health.insert(key.clone(), v);
        let (Some(&i), Some(s)) = (
            self.pos.get(&key.0),
            cfg.services.iter().find(|s| s.name == key.0),
        ) else {
            return false;
        };
        let b = self.compile(cfg, s, self.built.get(&key.0));
        let changed = !Arc::ptr_eq(&b.svc, &self.services.list[i]);
        let mut list = self.services.list.clone();
        list[i] = b.svc.clone();
        self.built.insert(key.0.clone(), b);
        self.services = Services {
            list,
            index: self.services.index.clone(),
        };
        changed
    }

    /// The compiled service of this name.
    pub fn get(&self, name: &str) -> Option<&Arc<dp::Service>> {
        self.pos.get(name).and_then(|&i| self.services.list.get(i))
    }

    pub fn index(&self) -> &Arc<SvcIndex> {
        &self.services.index
    }
}

/// The address this node reaches `to` from: the address of the port on its subnet, or of
/// the port towards the gateway of the longest route to it (same family).
pub fn source_for(cfg: &Config, to: IpAddr) -> Option<IpAddr> {
    let port = crate::config::connected_port(&cfg.ports, to).or_else(|| {
        cfg.routes
            .iter()
            .filter(|(p, _)| p.contains(to))
            .max_by_key(|(p, _)| p.len)
            .and_then(|(_, via)| via.first())
            .and_then(|gw| crate::config::connected_port(&cfg.ports, *gw))
    })?;
    let p = &cfg.ports[port];
    p.addresses
        .iter()
        .find(|a| a.contains(to))
        .or_else(|| {
            p.addresses
                .iter()
                .find(|a| a.addr.is_ipv4() == to.is_ipv4())
        })
        .map(|a| a.addr)
}

/// Ports whose outgoing hops must take the NAT stage for services: the port that owns a
/// NAT-mode VIP (its clients' replies leave by it); every port for a VIP on no port's
/// subnet (clients may be anywhere).
fn stateful_ports(cfg: &Config) -> u64 {
    let mut bits = 0u64;
    for s in cfg.services.iter().filter(|s| s.forward == Forward::Nat) {
        match crate::config::connected_port(&cfg.ports, s.vip) {
            Some(p) => bits |= 1 << (p % 64),
            None => bits |= (1u64 << cfg.ports.len().min(63)) - 1,
        }
    }
    bits
}

/// Each service's addresses that route as local: its VIP and FullNAT local addresses,
/// with the port that answers ARP/ND for them (the port on whose subnet they are; port 0
/// for a VIP routed to the node from elsewhere).
pub fn local_addresses(cfg: &Config) -> Vec<(usize, IpAddr)> {
    let mut v = Vec::new();
    for s in &cfg.services {
        for a in std::iter::once(s.vip).chain(s.local_addresses.iter().copied()) {
            let port = crate::config::connected_port(&cfg.ports, a).unwrap_or(0);
            v.push((port, a));
        }
    }
    v
}
