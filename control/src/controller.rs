//! The `Controller`: the model the control side owns (the running configuration, its
//! compiled plan, the neighbour cache and resolver) and the typed commands that change it,
//! whatever their source: the configuration file (start-up, SIGHUP), the workers'
//! events, and later the gRPC agent and health checks. It decides what to publish; the
//! runtime's loop only moves commands in and snapshots out.
//!
//! The configuration has a version of its own (1 at start, one more per accepted apply),
//! apart from snapshot generations, which neighbours move too.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_dataplane::router::{Learned, WorkerCommand, WorkerEvent};
use ferry_dataplane::snapshot::{Publisher, Subscriber};
use ferry_dataplane::tables::Tables;
use ferry_dataplane::wire::ethernet::format_mac;

use crate::compile::{Commit, CompileError, Plan};
use crate::config::{Change, Config, ConfigError, Mac, Prefix, RawConfig};
use crate::neighbor::{NeighborCache, ResolveConfig, Resolver};

/// Something that changes the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Apply the configuration file as the whole desired state (SIGHUP).
    ApplyFile(PathBuf),
    /// An apply from the API.
    Apply(ApplyRequest),
    /// Something worker `worker` reported.
    Worker { worker: usize, event: WorkerEvent },
    /// A health check's result.
    Health(crate::health::Report),
}

/// An apply from the API: a whole desired state or a delta, with its conditions.
#[derive(Clone, Debug, PartialEq)]
pub struct ApplyRequest {
    pub desired: Desired,
    /// If set, the `accepted` generation this change was made against (else STALE_BASE).
    pub base_generation: Option<u64>,
    /// Check and compile only.
    pub dry_run: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Desired {
    Whole(Box<RawConfig>),
    Delta(Vec<Change>),
}

/// Why an apply was refused. The running configuration and tables stay as they were.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Every bad resource of an API apply, with field, value and reason.
    #[error("{} invalid: {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Rejected(Vec<ConfigError>),
    #[error("stale base: generation {base} given, {current} is the current one")]
    StaleBase { base: u64, current: u64 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid { path: String, source: ConfigError },
    /// Valid, but it changes what only a restart can (ports, MTU, dpdk, tuning).
    #[error("{0}")]
    NeedsRestart(ConfigError),
    #[error("compiling tables: {0}")]
    Compile(#[from] CompileError),
}

/// An accepted apply (or one a dry run would accept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The configuration's new version (a dry run: the current one).
    pub version: u64,
    /// The generation it was published as (a dry run: 0).
    pub generation: u64,
    pub routes4: usize,
    pub routes6: usize,
    pub dry_run: bool,
    /// Checking the request, and building its tables.
    pub validate: Duration,
    pub compile: Duration,
}

/// The generations a client can wait on (see `proto/ferry/v1/ferry.proto`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Generations {
    /// The generation of the last accepted apply (1: the start-up config).
    pub accepted: u64,
    /// The newest snapshot handed to the workers.
    pub published: u64,
    /// The lowest generation every worker runs.
    pub active: u64,
    /// Every snapshot older than this has been freed.
    pub reclaimed: u64,
}

/// What the control side owns; see the module documentation.
pub struct Controller {
    cfg: Config,
    plan: Plan,
    cache: NeighborCache,
    resolver: Resolver,
    macs: Vec<Mac>,
    /// The kernel interface of each port, if it has one (its addresses follow the config).
    kernel_ifs: Vec<Option<String>>,
    version: u64,
    publisher: Publisher<Tables>,
    accepted: u64,
    /// The tables changed since the last publish; `urgent`: publish at once (a config
    /// change), else at most every [`PUBLISH_EVERY`] (neighbour churn).
    changed: bool,
    urgent: bool,
    last_publish: Instant,
    last_age: Instant,
    /// Solicitations a worker's full command ring refused (asked again later).
    pub commands_lost: u64,
    /// Backends' health verdicts.
    pub health: crate::health::HealthBook,
    /// Health transitions so far (down, up).
    pub health_transitions: (u64, u64),
    last_ramp: Instant,
    last_passive: Instant,
}

/// How often weights ramping up (slow start) are republished.
pub const RAMP_EVERY: Duration = Duration::from_millis(500);

/// Neighbour changes are published at most this often (a configuration change at once).
pub const PUBLISH_EVERY: Duration = Duration::from_millis(10);
/// How often neighbours are aged.
pub const AGE_EVERY: Duration = Duration::from_millis(500);

impl Controller {
    /// The model at start-up: `cfg` compiled into `plan` for ports with MACs `macs`,
    /// published as generation 1 to `workers` subscribers (one per worker).
    pub fn new(
        cfg: Config,
        plan: Plan,
        macs: Vec<Mac>,
        kernel_ifs: Vec<Option<String>>,
        workers: usize,
        now: Instant,
    ) -> (Controller, Vec<Subscriber<Tables>>) {
        let cache = NeighborCache::new(
            Duration::from_secs(cfg.tuning.neighbor_reachable_s),
            Duration::from_secs(cfg.tuning.neighbor_stale_s),
        );
        let mut resolver = Resolver::new(ResolveConfig::from_tuning(&cfg.tuning));
        let (publisher, subs) =
            Publisher::new(plan.tables(&cache, &resolver.failed_sets()), workers);
        let c = Controller {
            cfg,
            plan,
            cache,
            resolver,
            macs,
            kernel_ifs,
            version: 1,
            publisher,
            accepted: 1,
            changed: false,
            urgent: false,
            last_publish: now,
            last_age: now,
            commands_lost: 0,
            health: Default::default(),
            health_transitions: (0, 0),
            last_ramp: now,
            last_passive: now,
        };
        (c, subs)
    }

    pub fn publisher(&self) -> &Publisher<Tables> {
        &self.publisher
    }

    /// Hand on snapshots that did not fit a worker's ring, free what no worker can see.
    pub fn reclaim(&mut self) -> usize {
        self.publisher.reclaim()
    }

    pub fn generations(&self) -> Generations {
        Generations {
            accepted: self.accepted,
            published: self.publisher.generation(),
            active: self.publisher.oldest_seen(),
            reclaimed: self.publisher.reclaimed(),
        }
    }

    /// The compiled plan (routes, ports as the workers see them).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn version(&self) -> u64 {
        self.version
    }
    pub fn cache(&self) -> &NeighborCache {
        &self.cache
    }
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// The tables of the current model (for the first snapshot, and every publish).
    pub fn tables(&mut self) -> Tables {
        self.plan.tables(&self.cache, &self.resolver.failed_sets())
    }

    /// Carry out `cmd`. An apply answers with the new version, or why it was refused
    /// (nothing changed then); a worker event always succeeds (`Ok(None)`).
    pub fn handle(&mut self, cmd: Command, now: Instant) -> Result<Option<Applied>, ApplyError> {
        match cmd {
            Command::ApplyFile(path) => self.apply_file(&path, now).map(Some),
            Command::Apply(req) => self.apply_request(req, now).map(Some),
            Command::Worker { worker, event } => {
                self.worker_event(worker, event, now);
                Ok(None)
            }
            Command::Health(r) => {
                self.health_report(r, now);
                Ok(None)
            }
        }
    }

    /// Count a health check; a backend whose verdict changes is republished at once
    /// (its service alone is rebuilt).
    fn health_report(&mut self, r: crate::health::Report, now: Instant) {
        let Some(s) = self.cfg.services.iter().find(|s| s.name == r.key.0) else {
            return;
        };
        let Some(b) = s
            .backends
            .iter()
            .find(|b| (b.address, b.port) == (r.key.1, r.key.2))
        else {
            return;
        };
        let (key, detail) = (r.key.clone(), r.detail.clone());
        let Some(up) = self.health.report(r, s.health.rise, s.health.fall, now) else {
            return;
        };
        if up {
            self.health_transitions.1 += 1;
            tracing::info!(service = %s.name, backend = %b.endpoint(), "backend up: {detail}");
        } else {
            self.health_transitions.0 += 1;
            tracing::warn!(service = %s.name, backend = %b.endpoint(), "backend down: {detail}");
        }
        let v = self.health.state(s, b.address, b.port, b.weight, now);
        if self.plan.set_health(&self.cfg, &key, v) {
            self.changed = true;
            self.urgent = true;
            self.publish_if_due(now);
        }
    }

    /// Passive health (every [`crate::health::PASSIVE_EVERY`]): the dataplane's counts of
    /// connections each checked backend answered and failed; an ejection or its end
    /// republishes the service.
    pub fn passive(&mut self, stats: &ferry_dataplane::service::BackendStats, now: Instant) {
        if now.duration_since(self.last_passive) < crate::health::PASSIVE_EVERY {
            return;
        }
        self.last_passive = now;
        let mut changed = false;
        let checked = self
            .cfg
            .services
            .iter()
            .filter(|s| s.health.check != crate::service::Check::None);
        for s in checked {
            for b in &s.backends {
                let key = (s.name.clone(), b.address, b.port);
                let Some(&id) = self.plan.svc.backend_ids.get(&key) else {
                    continue;
                };
                let Some(out) = self
                    .health
                    .passive(&key, stats.outcomes(id), s.health.fall, now)
                else {
                    continue;
                };
                if out {
                    self.health_transitions.0 += 1;
                    tracing::warn!(service = %s.name, backend = %b.endpoint(),
                        "backend ejected for {} s: connections refused or unanswered",
                        crate::health::EJECT_FOR.as_secs());
                } else {
                    self.health_transitions.1 += 1;
                    tracing::info!(service = %s.name, backend = %b.endpoint(), "backend taken back after its ejection");
                }
                let v = self.health.state(s, b.address, b.port, b.weight, now);
                changed |= self.plan.set_health(&self.cfg, &key, v);
            }
        }
        if changed {
            self.changed = true;
            self.urgent = true;
            self.publish_if_due(now);
        }
    }

    /// Slow start: republish the weights of backends still ramping up.
    fn ramp(&mut self, now: Instant) {
        if now.duration_since(self.last_ramp) < RAMP_EVERY
            || !self.cfg.services.iter().any(|s| s.slow_start_s > 0)
        {
            return;
        }
        self.last_ramp = now;
        let mut changed = false;
        for s in self.cfg.services.iter().filter(|s| s.slow_start_s > 0) {
            for b in &s.backends {
                let key = (s.name.clone(), b.address, b.port);
                if self.health.get(&key).is_none() {
                    continue;
                }
                let v = self.health.state(s, b.address, b.port, b.weight, now);
                changed |= self.plan.set_health(&self.cfg, &key, v);
            }
        }
        if changed {
            self.changed = true;
            self.urgent = true;
        }
    }

    fn worker_event(&mut self, worker: usize, event: WorkerEvent, now: Instant) {
        match event {
            WorkerEvent::Learned(Learned {
                port,
                ip,
                mac,
                create,
            }) => {
                if !self.plan.learnable(port, ip) {
                    return;
                }
                if self.cache.learn(port, ip, mac, now, create) {
                    tracing::debug!(port, %ip, mac = %format_mac(&mac), "neighbour learned");
                    self.changed = true;
                }
                if self.cache.get(port, ip).is_some() {
                    self.resolver.answered(port, ip);
                }
            }
            WorkerEvent::Unresolved { port, ip } => {
                // (A worker on an older snapshot may ask for an address that an apply
                // took off-link.)
                if !self.plan.learnable(port, ip) {
                    return;
                }
                let stale = match self.cache.get(port, ip) {
                    Some(e) if !e.stale => return, // resolved since
                    Some(_) => true,
                    None => false,
                };
                self.resolver.unresolved(port, ip, stale, worker, now);
            }
        }
    }

    fn apply_file(&mut self, path: &Path, now: Instant) -> Result<Applied, ApplyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ApplyError::Read {
            path: shown.clone(),
            source,
        })?;
        let cfg = Config::from_yaml(&text).map_err(|source| ApplyError::Invalid {
            path: shown,
            source,
        })?;
        self.apply(cfg, false, now)
    }

    /// An API apply: the base checked, the request validated (every bad resource
    /// reported), then as [`Controller::apply`].
    pub fn apply_request(
        &mut self,
        req: ApplyRequest,
        now: Instant,
    ) -> Result<Applied, ApplyError> {
        if let Some(base) = req.base_generation {
            if base != self.accepted {
                return Err(ApplyError::StaleBase {
                    base,
                    current: self.accepted,
                });
            }
        }
        let t = Instant::now();
        if let Desired::Delta(changes) = &req.desired {
            if Config::routes_only(changes) {
                let net = self
                    .cfg
                    .route_changes(changes)
                    .map_err(ApplyError::Rejected)?;
                return self.apply_routes(net, req.dry_run, t.elapsed(), now);
            }
        }
        let cfg = match req.desired {
            Desired::Whole(raw) => Config::validate_all(*raw),
            Desired::Delta(changes) => self.cfg.with_changes(&changes),
        }
        .map_err(ApplyError::Rejected)?;
        let validate = t.elapsed();
        let mut a = self.apply(cfg, req.dry_run, now)?;
        a.validate = validate;
        Ok(a)
    }

    /// Route changes, checked (`net`: each prefix with its next hops after the change, or
    /// None), applied without rebuilding anything: the config's route table changes in
    /// place, the plan stages the prefixes, and the next publish carries them (at once if
    /// the FIBs' spare copies are free, else within a millisecond or two; see
    /// `compile`). Every change accepted before that publish shares its generation.
    fn apply_routes(
        &mut self,
        net: Vec<(Prefix, Option<Vec<std::net::IpAddr>>)>,
        dry_run: bool,
        validate: Duration,
        now: Instant,
    ) -> Result<Applied, ApplyError> {
        if dry_run {
            let (mut r4, mut r6) = (self.plan.routes4, self.plan.routes6);
            for (p, v) in &net {
                let d = v.is_some() as isize - self.cfg.routes.contains_key(p) as isize;
                let n = if p.addr.is_ipv4() { &mut r4 } else { &mut r6 };
                *n = n.saturating_add_signed(d);
            }
            return Ok(Applied {
                version: self.version,
                generation: 0,
                routes4: r4,
                routes6: r6,
                dry_run: true,
                validate,
                compile: Duration::ZERO,
            });
        }
        let t = Instant::now();
        let prefixes: Vec<Prefix> = net.iter().map(|(p, _)| *p).collect();
        let mut undo = Vec::with_capacity(net.len());
        for (p, v) in net {
            let old = match v {
                Some(via) => self.cfg.routes.insert(p, via),
                None => self.cfg.routes.remove(&p),
            };
            undo.push((p, old));
        }
        if let Err(e) = self.plan.stage_routes(&self.cfg, &prefixes) {
            // (Only the next-hop table's 2^24 ids can run out.) Put the config back and
            // rebuild the plan from it, as it was.
            for (p, old) in undo.into_iter().rev() {
                match old {
                    Some(via) => self.cfg.routes.insert(p, via),
                    None => self.cfg.routes.remove(&p),
                };
            }
            self.plan = Plan::build(&self.cfg, &self.macs)?;
            self.changed = true;
            self.urgent = true;
            return Err(e.into());
        }
        self.version += 1;
        self.changed = true;
        self.urgent = true;
        // The next publish carries the staged prefixes, whenever it happens.
        self.accepted = self.publisher.generation() + 1;
        self.publish_if_due(now);
        Ok(Applied {
            version: self.version,
            generation: self.accepted,
            routes4: self.plan.routes4,
            routes6: self.plan.routes6,
            dry_run: false,
            validate,
            compile: t.elapsed(),
        })
    }

    /// Apply `cfg` as the whole desired state, all or nothing, and publish it at once
    /// (`dry_run`: compile it, change nothing).
    pub fn apply(
        &mut self,
        cfg: Config,
        dry_run: bool,
        now: Instant,
    ) -> Result<Applied, ApplyError> {
        if let Some(e) = cfg.reload_blocker(&self.cfg) {
            return Err(ApplyError::NeedsRestart(e));
        }
        let t = Instant::now();
        let plan = Plan::build_after(&cfg, &self.macs, Some(&self.plan))?;
        let compile = t.elapsed();
        if dry_run {
            return Ok(Applied {
                version: self.version,
                generation: 0,
                routes4: plan.routes4,
                routes6: plan.routes6,
                dry_run: true,
                validate: Duration::ZERO,
                compile,
            });
        }
        for (i, (new, old)) in cfg.ports.iter().zip(&self.cfg.ports).enumerate() {
            if new.addresses != old.addresses {
                if let Some(Some(name)) = self.kernel_ifs.get(i) {
                    crate::runtime::update_kernel_addresses(name, &old.addresses, &new.addresses);
                }
            }
        }
        // Keep the neighbours (and resolutions) still on a subnet of their port.
        self.cache.retain(|port, ip| plan.learnable(port, ip));
        self.resolver.retain(|port, ip| plan.learnable(port, ip));
        // The old model is freed on a thread of its own: a million routes take a tenth of a
        // second to free, which the publish need not wait for.
        let old = (
            std::mem::replace(&mut self.cfg, cfg),
            std::mem::replace(&mut self.plan, plan),
        );
        if let Err(e) = std::thread::Builder::new()
            .name("ferry-free".into())
            .spawn(move || drop(old))
        {
            tracing::debug!("freeing the old tables here: {e}");
        }
        self.version += 1;
        let ids = &self.plan.svc.backend_ids;
        self.health.retain(|k| ids.contains_key(k));
        self.changed = true;
        self.urgent = true;
        self.publish_if_due(now);
        self.accepted = self.publisher.generation();
        Ok(Applied {
            version: self.version,
            generation: self.accepted,
            routes4: self.plan.routes4,
            routes6: self.plan.routes6,
            dry_run: false,
            validate: Duration::ZERO,
            compile,
        })
    }

    /// Time-driven work: the resolver's solicitations (handed to the workers' command
    /// rings), failures and expiries, and neighbour ageing.
    pub fn tick(&mut self, now: Instant, commands: &mut [rtrb::Producer<WorkerCommand>]) {
        let tick = self.resolver.tick(now);
        for s in &tick.solicit {
            let Some(q) = commands.get_mut(s.worker) else {
                continue;
            };
            let cmd = WorkerCommand::Solicit {
                port: s.port,
                ip: s.ip,
            };
            if q.push(cmd).is_err() {
                // Not counted as sent: due again at once.
                self.commands_lost += 1;
                self.resolver.unsent(s.port, s.ip, now);
            }
        }
        for (port, ip) in &tick.expired_stale {
            tracing::debug!(port, %ip, "stale neighbour did not answer its probes: removed");
            self.changed |= self.cache.remove(*port, *ip);
        }
        for (port, ip) in &tick.failed {
            tracing::debug!(port, %ip, "neighbour resolution failed");
        }
        self.changed |= tick.changed;
        self.ramp(now);
        if now.duration_since(self.last_age) >= AGE_EVERY {
            self.last_age = now;
            self.changed |= self.cache.age(now);
        }
    }

    /// Publish the tables if they changed: a configuration change at once, neighbour
    /// changes at most every [`PUBLISH_EVERY`]. True if it published.
    pub fn publish_if_due(&mut self, now: Instant) -> bool {
        if !self.changed || (!self.urgent && now.duration_since(self.last_publish) < PUBLISH_EVERY)
        {
            return false;
        }
        match self.plan.commit_fibs() {
            Ok(Commit::NotYet) => return false,
            Ok(Commit::Done | Commit::Nothing) => {}
            Err(e) => {
                tracing::error!("route changes: {e}; rebuilding the tables from the config");
                match Plan::build(&self.cfg, &self.macs) {
                    Ok(p) => self.plan = p,
                    Err(e) => tracing::error!("rebuilding the tables: {e}; previous tables kept"),
                }
            }
        }
        let t = self.tables();
        self.publisher.publish(t);
        self.last_publish = now;
        self.changed = false;
        self.urgent = false;
        true
    }

    /// When the controller next has something to do on its own (a held-back publish, the
    /// resolver, ageing); the loop sleeps until then at most.
    pub fn next_due(&self, now: Instant) -> Instant {
        let mut at = self.last_age + AGE_EVERY;
        if self.changed {
            at = at.min(self.last_publish + PUBLISH_EVERY);
        }
        if self.plan.staged() {
            // Waiting for a spare FIB to be reclaimed: soon.
            at = at.min(now + Duration::from_millis(1));
        }
        if let Some(r) = self.resolver.next_due() {
            at = at.min(r);
        }
        at.max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const CFG: &str = r#"
dpdk: { lcores: [0, 1] }
ports:
  - { name: a, devargs: net_null0, addresses: [10.0.1.1/24, "fd00:1::1/64"] }
  - { name: b, devargs: net_null1, addresses: [10.0.2.1/24, "fd00:2::1/64"] }
routes:
  - { prefix: 10.20.0.0/16, via: [10.0.2.2] }
"#;

    fn controller(now: Instant) -> Controller {
        let cfg = Config::from_yaml(CFG).unwrap();
        let macs = vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
        let plan = Plan::build(&cfg, &macs).unwrap();
        Controller::new(cfg, plan, macs, vec![None, None], 1, now).0
    }

    fn file(text: &str) -> tempfile_like::File {
        tempfile_like::File::new(text)
    }

    /// A file in the temp directory, removed on drop (no extra crate for it).
    mod tempfile_like {
        pub struct File(pub std::path::PathBuf);
        impl File {
            pub fn new(text: &str) -> File {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "ferry-controller-{}-{}.yaml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&p, text).unwrap();
                File(p)
            }
        }
        impl Drop for File {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn an_apply_versions_the_config_and_publishes_at_once() {
        let t0 = Instant::now();
        let mut c = controller(t0);
        assert_eq!(c.version(), 1);
        let f = file(&CFG.replace("10.20.0.0/16", "10.30.0.0/16"));
        let a = c
            .handle(Command::ApplyFile(f.0.clone()), t0)
            .unwrap()
            .unwrap();
        // The route, and each port's connected and local prefix.
        assert_eq!((a.version, a.routes4, a.generation), (2, 5, 2));
        let g = c.generations();
        assert_eq!((g.accepted, g.published), (2, 2), "published at once");
        assert!(!c.publish_if_due(t0), "nothing more to publish");
    }

    #[test]
    fn a_refused_apply_changes_nothing_and_says_why() {
        let t0 = Instant::now();
        let mut c = controller(t0);
        let before = c.config().clone();
        let bad = file(&CFG.replace("10.20.0.0/16", "10.20.0.0/33"));
        let e = c.handle(Command::ApplyFile(bad.0.clone()), t0).unwrap_err();
        assert!(
            matches!(&e, ApplyError::Invalid { source, .. } if source.field == "routes[0].prefix"),
            "{e}"
        );
        assert!(e.to_string().contains("10.20.0.0/33"), "{e}");
        let mtu = file(&CFG.replace(
            "addresses: [10.0.2.1/24",
            "mtu: 1400, addresses: [10.0.2.1/24",
        ));
        let e = c.handle(Command::ApplyFile(mtu.0.clone()), t0).unwrap_err();
        assert!(
            matches!(&e, ApplyError::NeedsRestart(c) if c.field == "ports[1]"),
            "{e}"
        );
        let e = c
            .handle(Command::ApplyFile("/nonexistent/ferry.yaml".into()), t0)
            .unwrap_err();
        assert!(matches!(e, ApplyError::Read { .. }), "{e}");
        assert_eq!(c.version(), 1);
        assert_eq!(c.config(), &before);
        assert!(!c.publish_if_due(t0 + Duration::from_secs(1)));
        assert_eq!(c.generations().published, 1);
    }

    #[test]
    fn worker_events_reach_the_cache_and_the_resolver() {
        let t0 = Instant::now();
        let mut c = controller(t0);
        let gw: IpAddr = "10.0.2.2".parse().unwrap();
        let (tx, mut rx) = rtrb::RingBuffer::new(8);
        let mut commands = vec![tx];
        // Unknown: the resolver asks worker 0 to solicit at the next tick.
        let ev = WorkerEvent::Unresolved { port: 1, ip: gw };
        c.handle(
            Command::Worker {
                worker: 0,
                event: ev,
            },
            t0,
        )
        .unwrap();
        c.tick(t0, &mut commands);
        assert_eq!(rx.pop(), Ok(WorkerCommand::Solicit { port: 1, ip: gw }));
        // Off-link addresses are ignored.
        let off = WorkerEvent::Unresolved {
            port: 1,
            ip: "192.0.2.1".parse().unwrap(),
        };
        c.handle(
            Command::Worker {
                worker: 0,
                event: off,
            },
            t0,
        )
        .unwrap();
        assert_eq!(c.resolver().pending(), 1);
        // The answer: learned, resolution over, published within PUBLISH_EVERY.
        let learned = WorkerEvent::Learned(Learned {
            port: 1,
            ip: gw,
            mac: [2, 0, 0, 0, 0, 9],
            create: true,
        });
        c.handle(
            Command::Worker {
                worker: 0,
                event: learned,
            },
            t0,
        )
        .unwrap();
        assert_eq!(c.resolver().pending(), 0);
        assert_eq!(c.cache().get(1, gw).unwrap().mac, [2, 0, 0, 0, 0, 9]);
        let soon = t0 + PUBLISH_EVERY;
        assert_eq!(
            c.next_due(t0),
            soon,
            "a held-back publish is what is due next"
        );
        assert!(c.publish_if_due(soon));
        let g = c.generations();
        assert_eq!(
            (g.accepted, g.published),
            (1, 2),
            "neighbours do not move `accepted`"
        );
        assert_eq!(
            c.version(),
            1,
            "neighbours move generations, not the config version"
        );
    }

    fn delta(changes: Vec<Change>, base: Option<u64>, dry_run: bool) -> Command {
        Command::Apply(ApplyRequest {
            desired: Desired::Delta(changes),
            base_generation: base,
            dry_run,
        })
    }

    fn route(prefix: &str, via: &str) -> Change {
        Change::UpsertRoute(crate::config::RawRoute {
            prefix: prefix.into(),
            via: vec![via.into()],
        })
    }

    #[test]
    fn api_applies_check_the_base_and_dry_runs_change_nothing() {
        let t0 = Instant::now();
        let mut c = controller(t0);
        let before = c.config().clone();
        // A dry run answers as an apply would and changes nothing.
        let a = c
            .handle(
                delta(vec![route("10.40.0.0/16", "10.0.2.2")], Some(1), true),
                t0,
            )
            .unwrap()
            .unwrap();
        assert!(a.dry_run);
        assert_eq!((a.generation, a.routes4), (0, 6));
        assert_eq!(c.config(), &before);
        assert_eq!(c.generations().published, 1);
        // Against the current base: accepted, published as generation 2.
        let a = c
            .handle(
                delta(vec![route("10.40.0.0/16", "10.0.2.2")], Some(1), false),
                t0,
            )
            .unwrap()
            .unwrap();
        assert_eq!((a.generation, a.version), (2, 2));
        // The same base again is stale now: nothing changes.
        let e = c
            .handle(
                delta(vec![route("10.50.0.0/16", "10.0.2.2")], Some(1), false),
                t0,
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                ApplyError::StaleBase {
                    base: 1,
                    current: 2
                }
            ),
            "{e}"
        );
        // Every bad change is named; none is applied.
        let e = c
            .handle(
                delta(
                    vec![
                        route("10.60.0.0/16", "10.0.2.2"),
                        route("10.70.0.0/16", "10.9.9.9"),
                        Change::DeleteRoute("10.99.0.0/16".into()),
                    ],
                    None,
                    false,
                ),
                t0,
            )
            .unwrap_err();
        let ApplyError::Rejected(errors) = &e else {
            panic!("{e}")
        };
        assert_eq!(errors.len(), 2, "{e}");
        assert_eq!(errors[0].field, "changes[1].upsert_route.via[0]");
        assert_eq!(errors[1].field, "changes[2].delete_route");
        assert_eq!(c.config().routes.len(), 2);
        assert_eq!(c.generations().accepted, 2);
        // A whole state that changes the MTU needs a restart.
        let mut raw = c.config().to_raw();
        raw.ports[0].mtu = Some(1400);
        let e = c
            .handle(
                Command::Apply(ApplyRequest {
                    desired: Desired::Whole(Box::new(raw)),
                    base_generation: None,
                    dry_run: false,
                }),
                t0,
            )
            .unwrap_err();
        assert!(matches!(e, ApplyError::NeedsRestart(_)), "{e}");
    }

    /// Workers that take every generation at once, as a busy worker does at its next burst.
    fn workers_catch_up(
        c: &mut Controller,
        subs: &mut [ferry_dataplane::snapshot::Subscriber<Tables>],
    ) {
        for s in subs.iter_mut() {
            s.poll();
        }
        c.reclaim();
    }

    #[test]
    fn route_deltas_between_publishes_share_a_generation_and_wait_for_the_spare() {
        let t0 = Instant::now();
        let cfg = Config::from_yaml(CFG).unwrap();
        let macs = vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
        let plan = Plan::build(&cfg, &macs).unwrap();
        let (mut c, mut subs) = Controller::new(cfg, plan, macs, vec![None, None], 1, t0);
        let a = c
            .handle(
                delta(vec![route("10.40.0.0/16", "10.0.2.2")], None, false),
                t0,
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.generation, c.generations().published),
            (2, 2),
            "the first commit copies the FIB"
        );
        // The worker still runs generation 1, whose FIB is now the spare: the next change
        // waits for it, and changes meanwhile join the same generation.
        let b = c
            .handle(
                delta(vec![route("10.41.0.0/16", "10.0.2.2")], None, false),
                t0,
            )
            .unwrap()
            .unwrap();
        let d = c
            .handle(
                delta(
                    vec![Change::DeleteRoute("10.40.0.0/16".into())],
                    None,
                    false,
                ),
                t0,
            )
            .unwrap()
            .unwrap();
        assert_eq!((b.generation, d.generation), (3, 3));
        assert_eq!(
            c.generations().published,
            2,
            "not published while the spare is held"
        );
        assert!(c.next_due(t0) <= t0 + Duration::from_millis(1));
        workers_catch_up(&mut c, &mut subs);
        assert!(c.publish_if_due(t0));
        let g = c.generations();
        assert_eq!((g.accepted, g.published), (3, 3));
        let t = c.publisher().current().clone();
        let hop = |ip: &str| {
            t.fib4
                .lookup(u32::from(ip.parse::<std::net::Ipv4Addr>().unwrap()))
        };
        assert!(hop("10.41.1.1").is_some());
        assert_eq!(hop("10.40.1.1"), None, "deleted again in the same batch");
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]

        /// Random route deltas through the controller (incremental FIB updates on two
        /// copies) against a reference model: the running config equals the model, and the
        /// published FIBs answer as a fresh build of that config does.
        #[test]
        fn random_route_deltas_match_a_reference_model(
            ops in proptest::collection::vec((0..12usize, any::<bool>(), 0..3usize, any::<bool>()), 1..40),
        ) {
            let t0 = Instant::now();
            let cfg = Config::from_yaml(CFG).unwrap();
            let macs = vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
            let plan = Plan::build(&cfg, &macs).unwrap();
            let (mut c, mut subs) = Controller::new(cfg.clone(), plan, macs.clone(), vec![None, None], 1, t0);
            let prefixes = [
                "10.20.0.0/16", "10.20.1.0/24", "10.20.1.128/25", "10.20.1.130/32", "10.0.0.0/8",
                "0.0.0.0/0", "10.0.2.0/24", "fd20::/48", "fd20:0:0:1::/64", "fd20::/32", "::/0",
                "fd00:2::/64",
            ];
            let gws4 = ["10.0.2.2", "10.0.2.3", "10.0.1.9"];
            let gws6 = ["fd00:2::2", "fd00:2::3", "fd00:1::9"];
            let mut model = cfg.routes.clone();
            for (i, upsert, g, catch_up) in ops {
                let p: crate::config::Prefix = prefixes[i].parse().unwrap();
                let gw = if p.addr.is_ipv4() { gws4[g] } else { gws6[g] };
                let change = if upsert {
                    route(prefixes[i], gw)
                } else {
                    Change::DeleteRoute(prefixes[i].into())
                };
                let r = c.handle(delta(vec![change], None, false), t0);
                match (upsert, model.contains_key(&p)) {
                    (true, _) => {
                        prop_assert!(r.is_ok(), "{:?}", r.err());
                        model.insert(p, vec![gw.parse().unwrap()]);
                    }
                    (false, true) => {
                        prop_assert!(r.is_ok());
                        model.remove(&p);
                    }
                    (false, false) => prop_assert!(matches!(r, Err(ApplyError::Rejected(_)))),
                }
                if catch_up {
                    workers_catch_up(&mut c, &mut subs);
                    c.publish_if_due(t0);
                }
            }
            workers_catch_up(&mut c, &mut subs);
            c.publish_if_due(t0);
            prop_assert!(!c.plan().staged());
            prop_assert_eq!(&c.config().routes, &model);
            let fresh = Plan::build(c.config(), &macs).unwrap();
            let t = c.publisher().current().clone();
            let hops = |h: Option<u32>, hops: &[ferry_dataplane::tables::Hop]| h.map(|h| hops[h as usize].clone());
            for a in ["10.20.0.1", "10.20.1.1", "10.20.1.129", "10.20.1.130", "10.1.1.1", "8.8.8.8", "10.0.2.77", "10.0.1.1", "10.0.2.1"] {
                let a = u32::from(a.parse::<std::net::Ipv4Addr>().unwrap());
                let (ours, theirs) = (hops(t.fib4.lookup(a), &t.hops), hops(fresh.fib4.lookup(a), &fresh.hops));
                // Hop ids may differ (ids of deleted routes are not reused); what they mean may not.
                prop_assert_eq!(ours.map(strip), theirs.map(strip), "{}", std::net::Ipv4Addr::from(a));
            }
            for a in ["fd20::1", "fd20:0:0:1::1", "fd20:1::1", "2001:db8::1", "fd00:2::77", "fd00:2::1"] {
                let a = u128::from(a.parse::<std::net::Ipv6Addr>().unwrap());
                let (ours, theirs) = (hops(t.fib6.lookup(a), &t.hops), hops(fresh.fib6.lookup(a), &fresh.hops));
                prop_assert_eq!(ours.map(strip), theirs.map(strip), "{}", std::net::Ipv6Addr::from(a));
            }
        }
    }

    /// A hop without its MAC state (the fresh plan has no neighbours).
    fn strip(h: ferry_dataplane::tables::Hop) -> ferry_dataplane::tables::Hop {
        use ferry_dataplane::tables::Hop;
        match h {
            Hop::Gateway { port, gw, .. } => Hop::Gateway {
                port,
                gw,
                mac: None,
                stale: false,
            },
            other => other,
        }
    }

    #[test]
    fn nat_rules_apply_with_stable_ids_and_bad_ones_are_named() {
        let t0 = Instant::now();
        let mut c = controller(t0);
        let one = "nat:\n  snat:\n    - {name: out, match: {from: [10.0.1.0/24], out: b}}\n";
        c.handle(
            Command::ApplyFile(file(&format!("{CFG}{one}")).0.clone()),
            t0,
        )
        .unwrap();
        assert_eq!(c.version(), 2);
        let t = c.tables();
        let n = t.nat.as_ref().expect("NAT tables in the snapshot");
        let id = n.snat[0].id;
        // The pool (the port's own address) routes as local; hops out of port b (the
        // egress) and port a (towards the sources: connections from outside are tracked)
        // take the slow path.
        assert_eq!(n.stateful_ports, 0b11);
        assert!(t.ports[1].has_v4([10, 0, 2, 1]));
        // A rule added before it: the old rule keeps its id, the new one gets another.
        let two = "nat:\n  snat:\n    - {name: new, match: {from: [10.0.9.0/24], out: b}}\n    - {name: out, match: {from: [10.0.1.0/24], out: b}, to: {addresses: [10.0.2.50]}}\n";
        c.handle(
            Command::ApplyFile(file(&format!("{CFG}{two}")).0.clone()),
            t0,
        )
        .unwrap();
        let t = c.tables();
        let n = t.nat.as_ref().unwrap();
        assert_eq!(n.snat[1].id, id, "a changed pool keeps the rule's id");
        assert_ne!(n.snat[0].id, id);
        assert!(
            t.ports[1].has_v4([10, 0, 2, 50]),
            "a pool address answers ARP"
        );
        // A bad rule is named as any bad field is, and the running rules stay.
        let f = file(&format!(
            "{CFG}nat:\n  snat:\n    - {{match: {{from: [10.0.1.0/24], out: z}}}}\n"
        ));
        let e = c.handle(Command::ApplyFile(f.0.clone()), t0).unwrap_err();
        assert!(e.to_string().contains("nat.snat[0].match.out"), "{e}");
        assert_eq!(c.version(), 3);
        assert_eq!(c.tables().nat.as_ref().unwrap().snat.len(), 2);
    }
}
