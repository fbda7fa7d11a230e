//! The worker lcore loop: poll every rx queue this worker owns, run each packet to
//! completion through the [`router`](crate::router), transmit in per-port buffers flushed
//! once per burst, switch snapshots between bursts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::counters::{DropReason, WorkerCounters};
use crate::dpdk::{self, Mempool, RxBurst, TxBuffer};
use crate::router::{self, Action, Ctx, Learned, Scratch};
use crate::snapshot::Subscriber;
use crate::tables::Tables;

/// How many packets ahead to prefetch.
const PREFETCH: usize = 4;

/// One rx queue a worker polls.
#[derive(Clone, Copy, Debug)]
pub struct RxQueue {
    /// Port index in the config (what the tables use).
    pub port: u16,
    /// DPDK port id and queue.
    pub dpdk_port: u16,
    pub queue: u16,
    /// True for the kernel (TAP) side of the exception path.
    pub from_kernel: bool,
}

/// Everything a worker owns.
pub struct Worker {
    pub index: usize,
    pub rx: Vec<RxQueue>,
    /// Transmit buffers, by port index (this worker's queue of each port).
    pub tx: Vec<TxBuffer>,
    /// Transmit buffers towards the kernel interface of each port, if it has one.
    pub kernel_tx: Vec<Option<TxBuffer>>,
    pub snapshots: Subscriber<Tables>,
    pub counters: Arc<WorkerCounters>,
    /// Neighbours learned, for the control side.
    pub learned: rtrb::Producer<Learned>,
    pub pool: Arc<Mempool>,
    pub stop: Arc<AtomicBool>,
    pub icmp_rate: u32,
}

impl Worker {
    /// The loop. Returns when `stop` is set.
    pub fn run(self) -> i32 {
        let Worker {
            rx,
            mut tx,
            mut kernel_tx,
            mut snapshots,
            counters,
            mut learned,
            pool,
            stop,
            icmp_rate,
            ..
        } = self;
        let c = &*counters;
        let mut scratch = Scratch::new(dpdk::tsc_hz(), icmp_rate);
        let mut burst = RxBurst::default();
        c.generation.set(snapshots.generation());
        while !stop.load(Ordering::Relaxed) {
            if snapshots.poll() {
                c.generation.set(snapshots.generation());
            }
            for q in &rx {
                let n = burst.recv(q.dpdk_port, q.queue);
                if n == 0 {
                    continue;
                }
                let t0 = dpdk::tsc();
                scratch.now = t0;
                let tables = snapshots.current();
                let mut queued = 0u64;
                let mut dropped = 0u64;
                for i in 0..PREFETCH {
                    burst.prefetch(i);
                }
                {
                    let mut ctx = Ctx {
                        t: tables,
                        s: &mut scratch,
                        c,
                    };
                    while let Some(mut m) = burst.next() {
                        burst.prefetch(PREFETCH - 1);
                        let action = if !m.is_contiguous() {
                            c.drop(DropReason::MultiSegment);
                            Action::Free
                        } else if q.from_kernel {
                            c.from_kernel.add(1);
                            router::process_from_kernel(&mut ctx, q.port, &mut m)
                        } else {
                            router::process(&mut ctx, q.port, &mut m)
                        };
                        match action {
                            Action::Tx(p) => match tx.get_mut(p as usize) {
                                Some(t) => {
                                    dropped += t.push(m) as u64;
                                    queued += 1;
                                }
                                None => c.drop(DropReason::NoRoute),
                            },
                            Action::Kernel(p) => match kernel_tx.get_mut(p as usize) {
                                Some(Some(t)) => {
                                    c.to_kernel.add(1);
                                    dropped += t.push(m) as u64;
                                }
                                _ => c.drop(DropReason::LocalNoKernel),
                            },
                            Action::Free => drop(m),
                        }
                    }
                }
                // Neighbour solicitations asked for by this burst.
                for (port, ip) in scratch.solicit.iter() {
                    let Some(mut m) = pool.alloc() else {
                        c.drop(DropReason::NoMbuf);
                        continue;
                    };
                    if router::build_solicit(tables, port, ip, &mut m) {
                        if let Some(t) = tx.get_mut(port as usize) {
                            dropped += t.push(m) as u64;
                            c.solicits.add(1);
                        }
                    }
                }
                scratch.solicit.clear();
                for l in scratch.learned.iter() {
                    // A full ring loses the event; the neighbour is learned from the next one.
                    let _ = learned.push(l);
                }
                scratch.learned.clear();
                for t in tx.iter_mut() {
                    dropped += t.flush() as u64;
                }
                for t in kernel_tx.iter_mut().flatten() {
                    dropped += t.flush() as u64;
                }
                c.rx.add(n as u64);
                c.tx.add(queued.saturating_sub(dropped));
                if dropped > 0 {
                    c.drops[DropReason::TxFull.index()].add(dropped);
                }
                c.busy_cycles.add(dpdk::tsc() - t0);
                c.busy_packets.add(n as u64);
            }
        }
        0
    }
}
