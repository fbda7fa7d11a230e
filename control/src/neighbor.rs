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
}

impl NeighborCache {
    pub fn new(reachable: Duration, stale: Duration) -> Self {
        NeighborCache {
            entries: HashMap::new(),
            reachable,
            stale,
        }
    }

    /// Record that `ip` on `port` is at `mac`. True if the tables need republishing
    /// (a new entry, a changed MAC, or a stale entry confirmed again).
    pub fn learn(&mut self, port: u16, ip: IpAddr, mac: Mac, now: Instant) -> bool {
        match self.entries.get_mut(&(port, ip)) {
            Some(e) => {
                let changed = e.mac != mac || e.stale;
                e.mac = mac;
                e.confirmed = now;
                e.stale = false;
                changed
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

    /// Forget everything learned on `port` (its addresses changed).
    pub fn flush_port(&mut self, port: u16) {
        self.entries.retain(|(p, _), _| *p != port);
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
        assert!(c.learn(0, ip, [2, 0, 0, 0, 0, 2], t0));
        assert!(
            !c.learn(0, ip, [2, 0, 0, 0, 0, 2], t0),
            "same MAC again: no change"
        );
        assert!(c.learn(0, ip, [2, 0, 0, 0, 0, 3], t0), "MAC moved");
        assert!(!c.age(t0 + Duration::from_secs(29)));
        assert!(c.age(t0 + Duration::from_secs(31)));
        assert!(c.get(0, ip).unwrap().stale);
        assert!(!c.age(t0 + Duration::from_secs(32)), "already stale");
        assert!(
            c.learn(0, ip, [2, 0, 0, 0, 0, 3], t0 + Duration::from_secs(33)),
            "confirmed again"
        );
        assert!(!c.get(0, ip).unwrap().stale);
        assert!(c.age(t0 + Duration::from_secs(33 + 41)));
        assert!(c.is_empty());
    }

    #[test]
    fn ports_are_separate() {
        let t0 = Instant::now();
        let mut c = NeighborCache::new(Duration::from_secs(30), Duration::from_secs(10));
        let ip: IpAddr = "fd00::2".parse().unwrap();
        c.learn(0, ip, [2, 0, 0, 0, 0, 2], t0);
        c.learn(1, ip, [2, 0, 0, 0, 0, 3], t0);
        assert_eq!(c.len(), 2);
        c.flush_port(0);
        assert!(c.get(0, ip).is_none());
        assert_eq!(c.get(1, ip).unwrap().mac, [2, 0, 0, 0, 0, 3]);
    }
}
