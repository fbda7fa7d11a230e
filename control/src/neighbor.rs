//! The dynamic neighbour cache (ARP and ND), kept on the control side.
//!
//! Workers report what they learn (sender of an ARP request for us, ARP replies, NS/NA);
//! the cache ages entries: reachable for `reachable`, then stale (still used, the worker
//! probes it) for `stale`, then removed. A changed cache means a new snapshot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

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
}
