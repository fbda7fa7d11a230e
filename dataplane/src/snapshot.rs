//! Handing immutable table snapshots from the control side to the workers.
//!
//! The control side ([`Publisher`]) owns every snapshot it has published. Publishing sends an
//! `Arc` of the new snapshot to each worker over that worker's own lock-free single-producer
//! single-consumer ring (`rtrb`). A worker ([`Subscriber`]) checks its ring between bursts,
//! switches to the newest snapshot, drops its reference to the old one and only then
//! publishes the generation it now runs (Release). The publisher keeps each replaced snapshot
//! in a retired list and drops it once every worker's published generation is past it
//! (quiescent-state reclamation, as `rte_rcu_qsbr`). Because the worker has dropped its
//! reference before announcing the new generation, the publisher's drop is always the last
//! one: snapshots are freed on the control side, never on a worker, and exactly once (the
//! `Arc` makes a use-after-free impossible even if a worker misbehaves).
//!
//! Nothing on the worker side locks or allocates: a poll is one atomic load when nothing is
//! pending.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How many snapshots may wait in a worker's ring. The worker always jumps to the newest.
const RING_SLOTS: usize = 8;

#[repr(align(64))]
#[derive(Default)]
struct Seen(AtomicU64);

/// The control side: publishes snapshots and frees old ones when no worker can see them.
pub struct Publisher<T> {
    generation: u64,
    current: Arc<T>,
    links: Vec<Link<T>>,
    retired: VecDeque<(u64, Arc<T>)>,
}

struct Link<T> {
    tx: rtrb::Producer<(u64, Arc<T>)>,
    /// Newest snapshot that did not fit in the ring; sent by `reclaim`.
    pending: Option<(u64, Arc<T>)>,
    seen: Arc<Seen>,
}

/// The worker side: the snapshot a worker runs with.
pub struct Subscriber<T> {
    rx: rtrb::Consumer<(u64, Arc<T>)>,
    generation: u64,
    current: Arc<T>,
    seen: Arc<Seen>,
}

impl<T: Send + Sync> Publisher<T> {
    /// Start at generation 1 with `initial`, and make one subscriber per worker.
    pub fn new(initial: T, workers: usize) -> (Publisher<T>, Vec<Subscriber<T>>) {
        let current = Arc::new(initial);
        let mut links = Vec::with_capacity(workers);
        let mut subs = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = rtrb::RingBuffer::new(RING_SLOTS);
            let seen = Arc::new(Seen(AtomicU64::new(1)));
            links.push(Link {
                tx,
                pending: None,
                seen: seen.clone(),
            });
            subs.push(Subscriber {
                rx,
                generation: 1,
                current: current.clone(),
                seen,
            });
        }
        (
            Publisher {
                generation: 1,
                current,
                links,
                retired: VecDeque::new(),
            },
            subs,
        )
    }

    /// The generation of the newest snapshot.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every snapshot older than this generation has been freed.
    pub fn reclaimed(&self) -> u64 {
        self.retired.front().map_or(self.generation, |(g, _)| *g)
    }

    /// The newest snapshot (what the next one is usually built from).
    pub fn current(&self) -> &Arc<T> {
        &self.current
    }

    /// Publish `next` as a new generation and send it to every worker. Returns the generation.
    pub fn publish(&mut self, next: T) -> u64 {
        self.generation += 1;
        let gen = self.generation;
        let next = Arc::new(next);
        let old = std::mem::replace(&mut self.current, next.clone());
        self.retired.push_back((gen - 1, old));
        for link in &mut self.links {
            link.pending = Some((gen, next.clone()));
            link.send_pending();
        }
        self.reclaim();
        gen
    }

    /// Retry sends that did not fit, and free retired snapshots that every worker has moved
    /// past. Call it regularly. Returns how many snapshots were freed.
    pub fn reclaim(&mut self) -> usize {
        for link in &mut self.links {
            link.send_pending();
        }
        let oldest_seen = self.oldest_seen();
        let mut freed = 0;
        while let Some((gen, _)) = self.retired.front() {
            if *gen >= oldest_seen {
                break;
            }
            // Dropping here is the last reference: the workers dropped theirs before they
            // published a generation past `gen`, and the rings only hold newer ones.
            self.retired.pop_front();
            freed += 1;
        }
        freed
    }

    /// The oldest generation any worker still runs.
    pub fn oldest_seen(&self) -> u64 {
        self.links
            .iter()
            .map(|l| l.seen.0.load(Ordering::Acquire))
            .min()
            .unwrap_or(self.generation)
    }

    /// The generation each worker runs, in worker order.
    pub fn seen(&self) -> Vec<u64> {
        self.links
            .iter()
            .map(|l| l.seen.0.load(Ordering::Acquire))
            .collect()
    }

    /// Snapshots replaced but not yet freed.
    pub fn retired(&self) -> usize {
        self.retired.len()
    }
}

impl<T> Link<T> {
    fn send_pending(&mut self) {
        if let Some(item) = self.pending.take() {
            if let Err(rtrb::PushError::Full(item)) = self.tx.push(item) {
                self.pending = Some(item);
            }
        }
    }
}

impl<T> Subscriber<T> {
    /// Between bursts: switch to the newest snapshot in the ring, if any. True if switched.
    #[inline]
    pub fn poll(&mut self) -> bool {
        if self.rx.is_empty() {
            return false;
        }
        while let Ok((gen, snap)) = self.rx.pop() {
            // Assigning drops our reference to the previous snapshot, before we announce.
            self.current = snap;
            self.generation = gen;
        }
        self.seen.0.store(self.generation, Ordering::Release);
        true
    }

    /// The snapshot this worker runs with.
    #[inline]
    pub fn current(&self) -> &T {
        &self.current
    }

    /// Its generation.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::atomic::AtomicUsize;

    /// A snapshot that checks itself: every element equals the generation, and it counts
    /// its drops.
    struct Probe {
        gen: u64,
        body: Vec<u64>,
        drops: Arc<AtomicUsize>,
        dropped: AtomicBool,
    }

    impl Probe {
        fn new(gen: u64, drops: &Arc<AtomicUsize>) -> Probe {
            Probe {
                gen,
                body: vec![gen; 64],
                drops: drops.clone(),
                dropped: AtomicBool::new(false),
            }
        }
        fn check(&self) {
            assert!(!self.dropped.load(Ordering::SeqCst), "used after drop");
            assert!(self.body.iter().all(|&x| x == self.gen), "torn snapshot");
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            assert!(!self.dropped.swap(true, Ordering::SeqCst), "dropped twice");
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn workers_follow_generations_and_every_snapshot_is_freed_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let workers = 3;
        let (mut publisher, subs) = Publisher::new(Probe::new(1, &drops), workers);
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for mut sub in subs {
            let stop = stop.clone();
            handles.push(std::thread::spawn(move || {
                let mut last = 1;
                let mut switches = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if sub.poll() {
                        switches += 1;
                    }
                    let snap = sub.current();
                    snap.check();
                    assert_eq!(snap.gen, sub.generation());
                    assert!(sub.generation() >= last, "went backwards");
                    last = sub.generation();
                }
                sub.poll();
                (sub.generation(), switches)
            }));
        }
        // FERRY_SNAPSHOT_GENERATIONS: fewer under valgrind (ci/test.sh runs this test there).
        let n = std::env::var("FERRY_SNAPSHOT_GENERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if cfg!(miri) { 50 } else { 5000 });
        for g in 2..=n {
            assert_eq!(publisher.publish(Probe::new(g, &drops)), g);
            publisher.reclaim();
            // Nothing a worker might still run has been freed.
            let oldest = publisher.oldest_seen();
            assert!(drops.load(Ordering::SeqCst) as u64 <= oldest.saturating_sub(1));
        }
        // Keep resending what did not fit until every worker runs the newest generation.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while publisher.oldest_seen() < n {
            publisher.reclaim();
            assert!(
                std::time::Instant::now() < deadline,
                "workers did not catch up"
            );
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let (gen, switches) = h.join().unwrap();
            assert_eq!(gen, n, "each worker ends on the newest generation");
            assert!(switches >= 1);
        }
        publisher.reclaim();
        assert_eq!(publisher.retired(), 0);
        assert_eq!(
            drops.load(Ordering::SeqCst) as u64,
            n - 1,
            "all but the current one freed"
        );
        drop(publisher);
        assert_eq!(
            drops.load(Ordering::SeqCst) as u64,
            n,
            "and the current one on shutdown"
        );
    }

    #[test]
    fn a_stalled_worker_holds_back_reclamation_but_not_publishing() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut publisher, mut subs) = Publisher::new(Probe::new(1, &drops), 2);
        // Worker 1 never polls; publish more generations than its ring holds.
        for g in 2..=(RING_SLOTS as u64 * 3) {
            publisher.publish(Probe::new(g, &drops));
            subs[0].poll();
        }
        assert_eq!(publisher.oldest_seen(), 1);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "nothing freed while worker 1 runs gen 1"
        );
        // Worker 1 wakes up, drains what fitted, and then gets the newest via `pending`.
        subs[1].poll();
        publisher.reclaim();
        subs[1].poll();
        subs[0].poll();
        publisher.reclaim();
        assert_eq!(subs[1].generation(), publisher.generation());
        assert_eq!(publisher.retired(), 0);
        assert_eq!(
            drops.load(Ordering::SeqCst) as u64,
            publisher.generation() - 1
        );
        subs[1].current().check();
    }
}
