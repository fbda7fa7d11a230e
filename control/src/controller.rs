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
use ferry_dataplane::snapshot::Publisher;
use ferry_dataplane::tables::Tables;
use ferry_dataplane::wire::ethernet::format_mac;

use crate::compile::{CompileError, Plan};
use crate::config::{Config, ConfigError, Mac};
use crate::neighbor::{NeighborCache, ResolveConfig, Resolver};

/// Something that changes the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Apply the configuration file as the whole desired state (SIGHUP).
    ApplyFile(PathBuf),
    /// Something worker `worker` reported.
    Worker { worker: usize, event: WorkerEvent },
}

/// Why an apply was refused. The running configuration and tables stay as they were.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
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

/// An accepted apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The configuration's new version.
    pub version: u64,
    pub routes4: usize,
    pub routes6: usize,
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
    /// The tables changed since the last publish; `urgent`: publish at once (a config
    /// change), else at most every [`PUBLISH_EVERY`] (neighbour churn).
    changed: bool,
    urgent: bool,
    last_publish: Instant,
    last_age: Instant,
    /// Solicitations a worker's full command ring refused (asked again later).
    pub commands_lost: u64,
}

/// Neighbour changes are published at most this often (a configuration change at once).
pub const PUBLISH_EVERY: Duration = Duration::from_millis(10);
/// How often neighbours are aged.
pub const AGE_EVERY: Duration = Duration::from_millis(500);

impl Controller {
    /// The model at start-up: `cfg` compiled into `plan` for ports with MACs `macs`.
    pub fn new(
        cfg: Config,
        plan: Plan,
        macs: Vec<Mac>,
        kernel_ifs: Vec<Option<String>>,
        now: Instant,
    ) -> Controller {
        let cache = NeighborCache::new(
            Duration::from_secs(cfg.tuning.neighbor_reachable_s),
            Duration::from_secs(cfg.tuning.neighbor_stale_s),
        );
        let resolver = Resolver::new(ResolveConfig::from_tuning(&cfg.tuning));
        Controller {
            cfg,
            plan,
            cache,
            resolver,
            macs,
            kernel_ifs,
            version: 1,
            changed: false,
            urgent: false,
            last_publish: now,
            last_age: now,
            commands_lost: 0,
        }
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
            Command::ApplyFile(path) => self.apply_file(&path).map(Some),
            Command::Worker { worker, event } => {
                self.worker_event(worker, event, now);
                Ok(None)
            }
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

    fn apply_file(&mut self, path: &Path) -> Result<Applied, ApplyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ApplyError::Read {
            path: shown.clone(),
            source,
        })?;
        let cfg = Config::from_yaml(&text).map_err(|source| ApplyError::Invalid {
            path: shown,
            source,
        })?;
        self.apply(cfg)
    }

    /// Apply `cfg` as the whole desired state: all or nothing.
    pub fn apply(&mut self, cfg: Config) -> Result<Applied, ApplyError> {
        if let Some(e) = cfg.reload_blocker(&self.cfg) {
            return Err(ApplyError::NeedsRestart(e));
        }
        let plan = Plan::build(&cfg, &self.macs)?;
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
        self.cfg = cfg;
        self.plan = plan;
        self.version += 1;
        self.changed = true;
        self.urgent = true;
        Ok(Applied {
            version: self.version,
            routes4: self.plan.routes4,
            routes6: self.plan.routes6,
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
        if now.duration_since(self.last_age) >= AGE_EVERY {
            self.last_age = now;
            self.changed |= self.cache.age(now);
        }
    }

    /// Publish the tables if they changed: a configuration change at once, neighbour
    /// changes at most every [`PUBLISH_EVERY`]. True if it published.
    pub fn publish_if_due(&mut self, publisher: &mut Publisher<Tables>, now: Instant) -> bool {
        if !self.changed || (!self.urgent && now.duration_since(self.last_publish) < PUBLISH_EVERY)
        {
            return false;
        }
        publisher.publish(self.tables());
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
        Controller::new(cfg, plan, macs, vec![None, None], now)
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
        let (mut publisher, _subs) = Publisher::new(c.tables(), 1);
        assert_eq!(c.version(), 1);
        let f = file(&CFG.replace("10.20.0.0/16", "10.30.0.0/16"));
        let a = c
            .handle(Command::ApplyFile(f.0.clone()), t0)
            .unwrap()
            .unwrap();
        // The route, and each port's connected and local prefix.
        assert_eq!((a.version, a.routes4), (2, 5));
        assert!(
            c.publish_if_due(&mut publisher, t0),
            "a config change goes out at once"
        );
        assert_eq!(publisher.generation(), 2);
        assert!(
            !c.publish_if_due(&mut publisher, t0),
            "nothing more to publish"
        );
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
        let (mut publisher, _subs) = Publisher::new(c.tables(), 1);
        assert!(!c.publish_if_due(&mut publisher, t0 + Duration::from_secs(1)));
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
        let (mut publisher, _subs) = Publisher::new(c.tables(), 1);
        let soon = t0 + PUBLISH_EVERY;
        assert_eq!(
            c.next_due(t0),
            soon,
            "a held-back publish is what is due next"
        );
        assert!(c.publish_if_due(&mut publisher, soon));
        assert_eq!(
            c.version(),
            1,
            "neighbours move generations, not the config version"
        );
    }
}
