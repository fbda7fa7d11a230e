//! The dynamic neighbour cache (ARP and ND), kept on the control side.
//!
//! Workers report what they learn (sender of an ARP request for us, ARP replies, NS/NA);
//! the cache ages entries: reachable for `reachable`, then stale (still used, probed) for
//! `stale`, then removed. A changed cache means a new snapshot.
//!
//! Workers also report neighbours they need and have no entry for (or a stale one); the
//! [`Resolver`] keeps their state (incomplete, probing, failed), decides when to solicit
//! and which worker sends, and caps solicitations per port.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_dataplane::tables::FastSet;

use crate::config::Mac;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub mac: Mac,
    pub confirmed: Instant,
    pub stale: bool,
}

pub struct NeighborCache {
    entries: HashMap<(u16, IpAddr), Entry>,
    reachable: Duration,
    stale: Duration,
    max: usize,
    /// Learn events refused because the cache was full.
    pub refused: u64,
}

/// At most this many learned entries (a host inventing addresses on a /64 cannot grow the
/// cache, nor the snapshot, without bound).
pub const MAX_NEIGHBORS: usize = 65_536;

impl NeighborCache {
    pub fn new(reachable: Duration, stale: Duration) -> Self {
        NeighborCache {
            entries: HashMap::new(),
            reachable,
            stale,
            max: MAX_NEIGHBORS,
            refused: 0,
        }
    }

    /// Record that `ip` on `port` is at `mac`. True if the tables need republishing
    /// (a new entry, a changed MAC, or a stale entry confirmed again). With `create` false
    /// (an unsolicited announcement) only an existing entry is updated, as Linux does with
    /// `arp_accept=0`.
    pub fn learn(&mut self, port: u16, ip: IpAddr, mac: Mac, now: Instant, create: bool) -> bool {
        let full = self.entries.len() >= self.max;
        match self.entries.get_mut(&(port, ip)) {
            Some(e) => {
                let changed = e.mac != mac || e.stale;
                e.mac = mac;
                e.confirmed = now;
                e.stale = false;
                changed
            }
            None if !create => false,
            None if full => {
                self.refused += 1;
                false
            }
            None => {
                self.entries.insert(
                    (port, ip),
                    Entry {
                        mac,
                        confirmed: now,
                        stale: false,
                    },
                );
                true
            }
        }
    }

    /// Mark entries stale or remove them by age. True if anything changed.
    pub fn age(&mut self, now: Instant) -> bool {
        let mut changed = false;
        let (reachable, stale) = (self.reachable, self.stale);
        self.entries.retain(|_, e| {
            let age = now.saturating_duration_since(e.confirmed);
            if age >= reachable + stale {
                changed = true;
                return false;
            }
            if age >= reachable && !e.stale {
                e.stale = true;
                changed = true;
            }
            true
        });
        changed
    }

    /// Forget `ip` on `port` (a stale entry that did not answer its probes).
    pub fn remove(&mut self, port: u16, ip: IpAddr) -> bool {
        self.entries.remove(&(port, ip)).is_some()
    }

    /// Keep only the entries for which `keep(port, ip)` holds (after addresses changed).
    pub fn retain(&mut self, mut keep: impl FnMut(u16, IpAddr) -> bool) {
        self.entries.retain(|(p, ip), _| keep(*p, *ip));
    }

    #[cfg(test)]
    fn with_max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = (u16, IpAddr, &Entry)> {
        self.entries.iter().map(|((p, ip), e)| (*p, *ip, e))
    }

    pub fn get(&self, port: u16, ip: IpAddr) -> Option<&Entry> {
        self.entries.get(&(port, ip))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How neighbours are resolved (from `tuning`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolveConfig {
    /// Time between solicitations of one neighbour (Linux's `retrans_time`, 1 s).
    pub retrans: Duration,
    /// Solicitations before an incomplete neighbour is failed, and unanswered probes
    /// before a stale one is removed (Linux's `mcast_solicit` / `ucast_solicit`, 3).
    pub probes: u32,
    /// How long a failed neighbour stays failed (packets to it dropped at once).
    pub failed_for: Duration,
    /// Solicitations per port per second, in all.
    pub rate: u32,
    /// Bounds: incomplete / probing entries, and failed entries, each with its own
    /// oldest-first eviction; the learned cache is apart and never evicted for them.
    pub max_pending: usize,
    pub max_failed: usize,
}

impl ResolveConfig {
    /// From the configuration's `tuning` (the bounds keep their defaults).
    pub fn from_tuning(t: &crate::config::Tuning) -> ResolveConfig {
        ResolveConfig {
            retrans: Duration::from_millis(t.neighbor_retrans_ms),
            probes: t.neighbor_probes,
            failed_for: Duration::from_secs(t.neighbor_failed_s),
            rate: t.solicit_rate,
            ..ResolveConfig::default()
        }
    }
}

impl Default for ResolveConfig {
    fn default() -> Self {
        ResolveConfig {
            retrans: Duration::from_secs(1),
            probes: 3,
            failed_for: Duration::from_secs(5),
            rate: 1000,
            max_pending: 8192,
            max_failed: 16384,
        }
    }
}

/// A neighbour being resolved (no entry: incomplete) or probed (a stale entry).
#[derive(Clone, Copy, Debug)]
struct Pending {
    created: Instant,
    /// When the next solicitation is due.
    next: Instant,
    sent: u32,
    /// The worker that last reported it (it is polling that port: it sends).
    worker: usize,
    /// A stale entry is being confirmed (it is still used meanwhile).
    stale: bool,
    /// The last attempt was held back by the rate cap.
    deferred: bool,
}

/// A solicitation to send: worker, port, address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Solicit {
    pub worker: usize,
    pub port: u16,
    pub ip: IpAddr,
}

/// What [`Resolver::tick`] decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TickResult {
    pub solicit: Vec<Solicit>,
    /// Neighbours that did not answer: failed (incomplete ones) ...
    pub failed: Vec<(u16, IpAddr)>,
    /// ... or to be removed from the cache (stale ones).
    pub expired_stale: Vec<(u16, IpAddr)>,
    /// The failed set changed (entries failed or expired): republish.
    pub changed: bool,
}

/// Counters of the resolver (control side; in the stats file under `resolver`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverStats {
    /// Solicitations asked of workers.
    pub solicits: u64,
    /// Times a due solicitation was held back by `tuning.solicit_rate`.
    pub rate_limited: u64,
    /// Neighbours that failed to resolve.
    pub failures: u64,
    /// Incomplete / failed entries evicted to stay within their bounds.
    pub evicted_pending: u64,
    pub evicted_failed: u64,
}

/// Per-neighbour resolution state, as Linux's neighbour table keeps it for entries that
/// are not (or no longer) reachable: INCOMPLETE (solicited every `retrans`, `probes`
/// times, then FAILED), PROBE (a stale entry confirmed the same way, else removed) and
/// FAILED (negatively cached for `failed_for`). A per-port token bucket caps solicitations.
/// Learned entries live in [`NeighborCache`]; a scan of unused addresses fills only the
/// bounded maps here, oldest out first.
pub struct Resolver {
    cfg: ResolveConfig,
    pending: HashMap<(u16, IpAddr), Pending>,
    /// Insertion order of `pending` (with the `created` stamp, to skip entries replaced
    /// since): the eviction order.
    pending_order: VecDeque<((u16, IpAddr), Instant)>,
    failed: HashMap<(u16, IpAddr), Instant>,
    failed_order: VecDeque<((u16, IpAddr), Instant)>,
    /// Per port: (tokens, last refill).
    buckets: HashMap<u16, (f64, Instant)>,
    pub stats: ResolverStats,
    /// The failed sets as the snapshot holds them, rebuilt only when they change.
    sets: FailedSets,
    sets_dirty: bool,
    /// The earliest `next` of `pending` and expiry of `failed` (maybe earlier: a lower
    /// bound, recomputed by `tick`).
    due: Option<Instant>,
}

/// Failed neighbours by family, as [`ferry_dataplane::tables::Tables`] holds them.
#[derive(Clone, Default)]
pub struct FailedSets {
    pub v4: Arc<FastSet<(u16, u32)>>,
    pub v6: Arc<FastSet<(u16, u128)>>,
}

impl Resolver {
    pub fn new(cfg: ResolveConfig) -> Self {
        Resolver {
            cfg,
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            failed: HashMap::new(),
            failed_order: VecDeque::new(),
            buckets: HashMap::new(),
            stats: ResolverStats::default(),
            sets: FailedSets::default(),
            sets_dirty: false,
            due: None,
        }
    }

    /// Neighbours being resolved or probed, and failed ones.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
    pub fn failed(&self) -> usize {
        self.failed.len()
    }
    /// Every neighbour being resolved or probed (false) and every failed one (true).
    pub fn entries(&self) -> impl Iterator<Item = (u16, IpAddr, bool)> + '_ {
        self.pending
            .keys()
            .map(|&(port, ip)| (port, ip, false))
            .chain(self.failed.keys().map(|&(port, ip)| (port, ip, true)))
    }

    pub fn is_failed(&self, port: u16, ip: IpAddr) -> bool {
        self.failed.contains_key(&(port, ip))
    }

    /// A worker needs `ip` on `port`: `stale` if it has a stale entry (it wants a probe),
    /// else it has none (its packet is held). Starts resolution if none runs; the first
    /// solicitation goes out at the next [`tick`](Self::tick).
    pub fn unresolved(&mut self, port: u16, ip: IpAddr, stale: bool, worker: usize, now: Instant) {
        if self.failed.contains_key(&(port, ip)) {
            return;
        }
        if let Some(p) = self.pending.get_mut(&(port, ip)) {
            p.worker = worker;
            // A probed stale entry that aged out meanwhile is now being resolved anew: it
            // fails (negatively cached) rather than being "removed" again.
            p.stale &= stale;
            return;
        }
        while self.pending.len() >= self.cfg.max_pending.max(1) {
            let Some((k, created)) = self.pending_order.pop_front() else {
                break;
            };
            if self.pending.get(&k).is_some_and(|p| p.created == created) {
                self.pending.remove(&k);
                self.stats.evicted_pending += 1;
            }
        }
        self.pending.insert(
            (port, ip),
            Pending {
                created: now,
                next: now,
                sent: 0,
                worker,
                stale,
                deferred: false,
            },
        );
        self.pending_order.push_back(((port, ip), now));
        self.due_by(now);
        compact(&mut self.pending_order, self.pending.len(), |k, t| {
            self.pending.get(k).is_some_and(|p| p.created == t)
        });
    }

    /// A solicitation [`tick`](Self::tick) asked for could not be handed to its worker
    /// (its command ring was full): not counted, and due again at once.
    pub fn unsent(&mut self, port: u16, ip: IpAddr, now: Instant) {
        if let Some(p) = self.pending.get_mut(&(port, ip)) {
            p.sent = p.sent.saturating_sub(1);
            p.next = now;
            self.stats.solicits = self.stats.solicits.saturating_sub(1);
            self.due_by(now + Duration::from_millis(1));
        }
    }

    /// `ip` on `port` answered: resolution is over (and a failed entry forgotten).
    pub fn answered(&mut self, port: u16, ip: IpAddr) {
        self.pending.remove(&(port, ip));
        if self.failed.remove(&(port, ip)).is_some() {
            self.sets_dirty = true;
        }
    }

    /// Forget everything for which `keep(port, ip)` is false (after addresses changed).
    pub fn retain(&mut self, mut keep: impl FnMut(u16, IpAddr) -> bool) {
        self.pending.retain(|(p, ip), _| keep(*p, *ip));
        let before = self.failed.len();
        self.failed.retain(|(p, ip), _| keep(*p, *ip));
        self.sets_dirty |= before != self.failed.len();
    }

    /// When [`tick`](Self::tick) next has something to do (None: nothing pending).
    pub fn next_due(&self) -> Option<Instant> {
        self.due
    }

    fn due_by(&mut self, t: Instant) {
        self.due = Some(self.due.map_or(t, |d| d.min(t)));
    }

    fn take_token(&mut self, port: u16, now: Instant) -> bool {
        let rate = self.cfg.rate.max(1) as f64;
        // A burst of a twentieth of a second's worth: at most ~1.05x the rate in any second.
        let cap = (rate / 20.0).max(1.0);
        let (tokens, last) = self.buckets.entry(port).or_insert((cap, now));
        let dt = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + dt * rate).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Send what is due, fail what did not answer, expire failed entries.
    pub fn tick(&mut self, now: Instant) -> TickResult {
        let mut r = TickResult::default();
        if self.due.is_none_or(|d| d > now) {
            r.changed = self.sets_dirty;
            return r;
        }
        let before = self.failed.len();
        self.failed.retain(|_, until| *until > now);
        if self.failed.len() != before {
            self.sets_dirty = true;
        }
        let mut due: Vec<(u16, IpAddr)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next <= now)
            .map(|(k, _)| *k)
            .collect();
        // Who gets the cap's tokens first: probes of stale entries (live neighbours, which a
        // scan must not push out); then first solicitations, newest first (under a
        // sustained scan, a neighbour that just came up is asked at once, not behind the
        // backlog, which the pending bound trims oldest first); then repeats, oldest first.
        // An entry fails only after its last solicitation's retransmit time, however long
        // the cap held it back.
        due.sort_by(|a, b| {
            let (Some(x), Some(y)) = (self.pending.get(a), self.pending.get(b)) else {
                return std::cmp::Ordering::Equal;
            };
            (!x.stale, x.sent).cmp(&(!y.stale, y.sent)).then_with(|| {
                if x.sent == 0 {
                    y.created.cmp(&x.created)
                } else {
                    x.created.cmp(&y.created)
                }
            })
        });
        // Ports whose tokens ran out in this tick (the rest of their due entries wait).
        let mut spent: Vec<u16> = Vec::new();
        for k in due {
            let Some(p) = self.pending.get(&k).copied() else {
                continue;
            };
            if p.sent >= self.cfg.probes.max(1) {
                self.pending.remove(&k);
                if p.stale {
                    r.expired_stale.push(k);
                } else {
                    self.fail(k, now);
                    r.failed.push(k);
                }
                continue;
            }
            let token = !spent.contains(&k.0) && self.take_token(k.0, now);
            if !token && !spent.contains(&k.0) {
                spent.push(k.0);
            }
            let Some(e) = self.pending.get_mut(&k) else {
                continue;
            };
            if token {
                e.sent += 1;
                e.next = now + self.cfg.retrans;
                e.deferred = false;
                self.stats.solicits += 1;
                r.solicit.push(Solicit {
                    worker: e.worker,
                    port: k.0,
                    ip: k.1,
                });
            } else {
                // Held back by the cap: it stays due, in its place in the order (never
                // more than `probes` in all; it fails a retransmit time after its last).
                if !e.deferred {
                    self.stats.rate_limited += 1;
                }
                e.deferred = true;
            }
        }
        // Entries held back by the cap are due again when tokens have accrued (a few at a
        // time, not one wake-up per token).
        let retry = (!spent.is_empty()).then(|| {
            now + Duration::from_secs_f64(1.0 / self.cfg.rate.max(1) as f64)
                .max(Duration::from_millis(5))
        });
        let p = self
            .pending
            .values()
            .filter(|p| !p.deferred)
            .map(|p| p.next)
            .min();
        let f = self.failed.values().min().copied();
        self.due = [p, f, retry].into_iter().flatten().min();
        r.changed = self.sets_dirty;
        r
    }

    fn fail(&mut self, k: (u16, IpAddr), now: Instant) {
        self.stats.failures += 1;
        while self.failed.len() >= self.cfg.max_failed.max(1) {
            let Some((old, until)) = self.failed_order.pop_front() else {
                break;
            };
            if self.failed.get(&old) == Some(&until) {
                self.failed.remove(&old);
                self.stats.evicted_failed += 1;
            }
        }
        let until = now + self.cfg.failed_for;
        self.failed.insert(k, until);
        self.failed_order.push_back((k, until));
        compact(&mut self.failed_order, self.failed.len(), |k, t| {
            self.failed.get(k) == Some(&t)
        });
        self.sets_dirty = true;
    }

    /// The failed sets for the next snapshot (shared with the previous one if unchanged).
    pub fn failed_sets(&mut self) -> FailedSets {
        if self.sets_dirty {
            let mut v4 = FastSet::default();
            let mut v6 = FastSet::default();
            for (port, ip) in self.failed.keys() {
                match ip {
                    IpAddr::V4(a) => {
                        v4.insert((*port, u32::from(*a)));
                    }
                    IpAddr::V6(a) => {
                        v6.insert((*port, u128::from(*a)));
                    }
                }
            }
            self.sets = FailedSets {
                v4: Arc::new(v4),
                v6: Arc::new(v6),
            };
            self.sets_dirty = false;
        }
        self.sets.clone()
    }
}

/// Drop order entries whose map entry is gone or was replaced, once the queue is more than
/// twice the map (so it stays bounded by the map's bound).
fn compact<K: Copy>(
    order: &mut VecDeque<(K, Instant)>,
    live: usize,
    mut valid: impl FnMut(&K, Instant) -> bool,
) {
    if order.len() > 2 * live + 64 {
        order.retain(|(k, t)| valid(k, *t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learn_age_and_expire() {
        let t0 = Instant::now();
        let mut c = NeighborCache::new(Duration::from_secs(30), Duration::from_secs(10));
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(c.learn(0, ip, [2, 0, 0, 0, 0, 2], t0, true));
        assert!(
            !c.learn(0, ip, [2, 0, 0, 0, 0, 2], t0, true),
            "same MAC again: no change"
        );
        assert!(c.learn(0, ip, [2, 0, 0, 0, 0, 3], t0, true), "MAC moved");
        assert!(!c.age(t0 + Duration::from_secs(29)));
        assert!(c.age(t0 + Duration::from_secs(31)));
        assert!(c.get(0, ip).unwrap().stale);
        assert!(!c.age(t0 + Duration::from_secs(32)), "already stale");
        assert!(
            c.learn(
                0,
                ip,
                [2, 0, 0, 0, 0, 3],
                t0 + Duration::from_secs(33),
                true
            ),
            "confirmed again"
        );
        assert!(!c.get(0, ip).unwrap().stale);
        assert!(c.age(t0 + Duration::from_secs(33 + 41)));
        assert!(c.is_empty());
    }

    #[test]
    fn announcements_only_update_and_the_cache_is_bounded() {
        let t0 = Instant::now();
        let mut c =
            NeighborCache::new(Duration::from_secs(30), Duration::from_secs(10)).with_max(2);
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(
            !c.learn(0, a, [2, 0, 0, 0, 0, 2], t0, false),
            "gratuitous: no new entry"
        );
        assert!(c.is_empty());
        assert!(c.learn(0, a, [2, 0, 0, 0, 0, 2], t0, true));
        assert!(
            c.learn(0, a, [2, 0, 0, 0, 0, 7], t0, false),
            "but it updates one"
        );
        assert!(c.learn(0, "10.0.0.3".parse().unwrap(), [2, 0, 0, 0, 0, 3], t0, true));
        assert!(!c.learn(0, "10.0.0.4".parse().unwrap(), [2, 0, 0, 0, 0, 4], t0, true));
        assert_eq!((c.len(), c.refused), (2, 1), "full: refused and counted");
    }

    #[test]
    fn ports_are_separate() {
        let t0 = Instant::now();
        let mut c = NeighborCache::new(Duration::from_secs(30), Duration::from_secs(10));
        let ip: IpAddr = "fd00::2".parse().unwrap();
        c.learn(0, ip, [2, 0, 0, 0, 0, 2], t0, true);
        c.learn(1, ip, [2, 0, 0, 0, 0, 3], t0, true);
        assert_eq!(c.len(), 2);
        c.retain(|port, _| port != 0);
        assert!(c.get(0, ip).is_none());
        assert_eq!(c.get(1, ip).unwrap().mac, [2, 0, 0, 0, 0, 3]);
    }

    fn cfg() -> ResolveConfig {
        ResolveConfig {
            retrans: Duration::from_secs(1),
            probes: 3,
            failed_for: Duration::from_secs(5),
            rate: 1000,
            max_pending: 100,
            max_failed: 100,
        }
    }

    /// Tick every 10 ms from `from` for `secs`; solicitations sent per address.
    fn run(r: &mut Resolver, from: Instant, secs: u64) -> (HashMap<IpAddr, u32>, TickResult) {
        let mut sent = HashMap::new();
        let mut all = TickResult::default();
        for ms in (0..secs * 1000).step_by(10) {
            let t = r.tick(from + Duration::from_millis(ms));
            for s in &t.solicit {
                *sent.entry(s.ip).or_default() += 1;
            }
            all.failed.extend(t.failed);
            all.expired_stale.extend(t.expired_stale);
            all.solicit.extend(t.solicit);
        }
        (sent, all)
    }

    #[test]
    fn an_unanswered_neighbor_is_solicited_three_times_then_failed() {
        let t0 = Instant::now();
        let mut r = Resolver::new(cfg());
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        r.unresolved(1, a, false, 0, t0);
        assert_eq!(
            r.next_due(),
            Some(t0),
            "the first solicitation is due at once"
        );
        let first = r.tick(t0);
        assert_eq!(
            first.solicit,
            vec![Solicit {
                worker: 0,
                port: 1,
                ip: a
            }]
        );
        // Reported again meanwhile (by worker 1 now): no extra solicitation, worker 1 sends.
        r.unresolved(1, a, false, 1, t0 + Duration::from_millis(500));
        let (sent, all) = run(&mut r, t0 + Duration::from_millis(10), 4);
        assert_eq!(sent[&a], 2, "3 in all");
        assert!(all.solicit.iter().all(|s| s.worker == 1));
        assert_eq!(all.failed, vec![(1, a)]);
        assert!(r.is_failed(1, a));
        let sets = r.failed_sets();
        assert!(sets.v4.contains(&(1, u32::from_be_bytes([10, 0, 0, 9]))));
        assert_eq!(r.stats.failures, 1);
        // Failed: reports are ignored; after failed_for it is forgotten.
        r.unresolved(1, a, false, 0, t0 + Duration::from_secs(4));
        assert_eq!(r.pending(), 0);
        let t = r.tick(t0 + Duration::from_secs(9));
        assert!(t.changed, "expiry republishes");
        assert!(!r.is_failed(1, a));
        assert!(r.failed_sets().v4.is_empty());
        assert_eq!(r.next_due(), None, "nothing left to do");
    }

    #[test]
    fn an_answer_ends_resolution_and_a_failure() {
        let t0 = Instant::now();
        let mut r = Resolver::new(cfg());
        let a: IpAddr = "fd00::9".parse().unwrap();
        r.unresolved(0, a, false, 0, t0);
        assert_eq!(r.tick(t0).solicit.len(), 1);
        r.answered(0, a);
        let (sent, all) = run(&mut r, t0 + Duration::from_millis(10), 5);
        assert!(sent.is_empty() && all.failed.is_empty());
        // A late answer clears a failure (and republishes).
        r.unresolved(0, a, false, 0, t0 + Duration::from_secs(10));
        run(&mut r, t0 + Duration::from_secs(10), 4);
        assert!(r.is_failed(0, a));
        assert!(r.failed_sets().v6.contains(&(
            0,
            u128::from(a.to_string().parse::<std::net::Ipv6Addr>().unwrap())
        )));
        r.answered(0, a);
        assert!(!r.is_failed(0, a));
        assert!(r.tick(t0 + Duration::from_secs(15)).changed);
        assert!(r.failed_sets().v6.is_empty());
    }

    #[test]
    fn a_stale_neighbor_that_does_not_answer_is_removed_not_failed() {
        let t0 = Instant::now();
        let mut r = Resolver::new(cfg());
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        r.unresolved(0, a, true, 0, t0);
        let (sent, all) = run(&mut r, t0, 4);
        assert_eq!(sent[&a], 3);
        assert_eq!(all.expired_stale, vec![(0, a)]);
        assert!(all.failed.is_empty() && !r.is_failed(0, a));
    }

    #[test]
    fn a_scan_stays_within_three_per_address_and_the_rate_cap() {
        // 2,000 addresses reported within 40 ms; a cap of 1000/s per port. The control loop
        // is driven as ferryd drives it: tick at next_due(), which must always move on.
        let t0 = Instant::now();
        let mut r = Resolver::new(ResolveConfig {
            max_pending: 8192,
            max_failed: 16384,
            ..cfg()
        });
        for i in 0..2000u32 {
            let ip = IpAddr::from((0x0a01_0000u32 + i).to_be_bytes());
            r.unresolved(0, ip, false, 0, t0 + Duration::from_micros(20 * i as u64));
        }
        let mut per_second = [0u32; 10];
        let mut first: HashMap<IpAddr, Duration> = HashMap::new();
        let mut sent: HashMap<IpAddr, u32> = HashMap::new();
        let (mut failed, mut ticks) = (0, 0);
        let mut now = t0 + Duration::from_millis(40);
        while let Some(at) = r.next_due() {
            now = now.max(at);
            let t = r.tick(now);
            ticks += 1;
            assert!(
                r.next_due().is_none_or(|d| d > now),
                "after a tick, nothing is due at once"
            );
            let s = now.duration_since(t0);
            per_second[s.as_secs() as usize] += t.solicit.len() as u32;
            for x in t.solicit {
                *sent.entry(x.ip).or_default() += 1;
                first.entry(x.ip).or_insert(s);
            }
            failed += t.failed.len();
            if r.pending() == 0 {
                break;
            }
        }
        assert!(
            ticks < 3000,
            "woken {ticks} times for 6,000 solicitations at 1000/s"
        );
        assert!(sent.values().all(|n| *n == 3), "3 per address, no more");
        assert_eq!(sent.len(), 2000, "every address asked");
        assert!(
            first.values().all(|d| *d < Duration::from_millis(2100)),
            "all first solicitations before any repeat"
        );
        assert!(
            per_second.iter().all(|n| *n <= 1050),
            "within the cap (and its 50 ms burst): {per_second:?}"
        );
        assert!(per_second[0] >= 900, "the cap is used: {per_second:?}");
        assert_eq!(
            failed, 2000,
            "every address fails, after its third solicitation"
        );
        assert!(now.duration_since(t0) < Duration::from_secs(8));
        assert!(r.stats.rate_limited > 0, "the cap bit and was counted");
    }

    #[test]
    fn under_a_scan_stale_probes_and_new_neighbours_go_first() {
        // A backlog of 500 scanned addresses and a cap of 100/s: a live neighbour's stale
        // entry is probed at once, and so is a neighbour that comes up after the scan.
        let t0 = Instant::now();
        let mut r = Resolver::new(ResolveConfig {
            rate: 100,
            ..ResolveConfig::default()
        });
        for i in 0..500u32 {
            r.unresolved(
                0,
                IpAddr::from((0x0a01_0000u32 + i).to_be_bytes()),
                false,
                0,
                t0,
            );
        }
        assert_eq!(r.tick(t0).solicit.len(), 5, "the burst");
        let live: IpAddr = "10.0.0.2".parse().unwrap();
        let new: IpAddr = "10.0.0.3".parse().unwrap();
        let t1 = t0 + Duration::from_millis(100);
        r.unresolved(0, live, true, 1, t1);
        r.unresolved(0, new, false, 1, t1);
        let t = r.tick(t1);
        let asked: Vec<IpAddr> = t.solicit.iter().map(|s| s.ip).collect();
        assert_eq!(&asked[..2], &[live, new], "{asked:?}");
    }

    #[test]
    fn a_stale_entry_that_aged_out_while_probed_fails() {
        // Reported as missing while its probe runs (the cache removed it meanwhile): it
        // fails (negatively cached) instead of being 'removed' from the cache again.
        let t0 = Instant::now();
        let mut r = Resolver::new(cfg());
        let live: IpAddr = "10.0.0.2".parse().unwrap();
        r.unresolved(0, live, true, 0, t0);
        assert_eq!(r.tick(t0).solicit.len(), 1);
        r.unresolved(0, live, false, 0, t0 + Duration::from_millis(10));
        let (_, all) = run(&mut r, t0 + Duration::from_millis(10), 4);
        assert_eq!(all.failed, vec![(0, live)], "failed, not expired as stale");
        assert!(all.expired_stale.is_empty());
    }

    #[test]
    fn a_solicitation_the_worker_could_not_take_is_not_counted() {
        let t0 = Instant::now();
        let mut r = Resolver::new(cfg());
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        r.unresolved(0, a, false, 0, t0);
        assert_eq!(r.tick(t0).solicit.len(), 1);
        r.unsent(0, a, t0);
        assert_eq!(r.stats.solicits, 0);
        let again = r.tick(t0 + Duration::from_millis(1));
        assert_eq!(again.solicit.len(), 1, "due again at once");
        let (sent, all) = run(&mut r, t0 + Duration::from_millis(10), 4);
        assert_eq!(sent[&a], 2, "still 3 in all");
        assert_eq!(all.failed, vec![(0, a)]);
    }

    #[test]
    fn incomplete_and_failed_entries_have_their_own_bounds() {
        let t0 = Instant::now();
        let mut r = Resolver::new(ResolveConfig {
            max_pending: 4,
            max_failed: 3,
            ..cfg()
        });
        let ip = |i: u8| IpAddr::from([10, 0, 0, i]);
        for i in 1..=6 {
            r.unresolved(0, ip(i), false, 0, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(r.pending(), 4);
        assert_eq!(r.stats.evicted_pending, 2, "the two oldest went");
        let (sent, _) = run(&mut r, t0 + Duration::from_millis(10), 1);
        assert!(!sent.contains_key(&ip(1)) && sent.contains_key(&ip(6)));
        run(&mut r, t0 + Duration::from_secs(1), 4);
        assert_eq!(r.failed(), 3, "four failed, the oldest evicted");
        assert_eq!(r.stats.evicted_failed, 1);
        assert_eq!(r.stats.failures, 4);
    }
}
