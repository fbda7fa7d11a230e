//! The worker lcore loop: poll every rx queue this worker owns, run each packet to
//! completion through the [`router`](crate::router), transmit in per-port buffers flushed
//! once per burst, switch snapshots between bursts.
//!
//! Packets whose next hop is being resolved are held (up to [`HOLD`] per worker, for at most
//! [`HOLD_MS`]) and run through the router again when a new snapshot arrives, which is what
//! happens when the control side learns the neighbour.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::buf::PacketBuf;
use crate::counters::{DropReason, WorkerCounters};
use crate::dpdk::{self, Mbuf, Mempool, RxBurst, TxBuffer};
use crate::fastpath;
use crate::router::{self, Action, Ctx, Learned, Scratch};
use crate::snapshot::Subscriber;
use crate::tables::Tables;

/// Packets a worker holds while their neighbour is resolved.
pub const HOLD: usize = 64;
/// How long a held packet waits before it is dropped (`drop_neighbor_unresolved`).
pub const HOLD_MS: u64 = 1000;

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
    /// The port flags each mbuf with the NIC's IPv4 checksum verdict.
    pub rx_ip_cksum: bool,
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
    /// The control thread, which sleeps until something is due: woken when a neighbour is
    /// learned (held packets may wait for it).
    pub control: std::thread::Thread,
    pub pool: Arc<Mempool>,
    pub stop: Arc<AtomicBool>,
    pub icmp_rate: u32,
}

/// Where packets go after the router: tx buffers, kernel buffers, the hold queue.
struct Out<'a> {
    pool: &'a Mempool,
    tx: Vec<TxBuffer>,
    kernel_tx: Vec<Option<TxBuffer>>,
    /// (packet, ingress port, TSC when first held). Capacity HOLD, never grown.
    held: Vec<(Mbuf, u16, u64)>,
    c: &'a WorkerCounters,
    /// Packets queued for the wire / the kernel, and dropped by full queues, in this burst.
    queued: u64,
    dropped: u64,
    kernel_queued: u64,
    kernel_dropped: u64,
    /// A buffer may hold packets: set by every queueing but a whole burst sent at once, so
    /// that `flush` looks at the buffers only then (the usual burst leaves them empty).
    pending: bool,
}

impl Out<'_> {
    /// Queue a packet for the wire on `port` (from the fast path or `Action::Tx`).
    #[inline(always)]
    fn queue_tx(&mut self, port: u16, m: Mbuf) {
        match self.tx.get_mut(port as usize) {
            Some(t) => {
                self.dropped += t.push(m) as u64;
                self.queued += 1;
                self.pending = true;
            }
            None => self.c.drop(DropReason::NoRoute),
        }
    }

    /// Queue a whole burst the fast path forwarded to `port` (the burst ends up empty).
    #[inline(always)]
    fn queue_burst(&mut self, port: u16, burst: &mut RxBurst) {
        match self.tx.get_mut(port as usize) {
            Some(t) => {
                let (queued, dropped) = t.push_burst(burst);
                self.queued += queued as u64;
                self.dropped += dropped as u64;
                self.pending |= !t.is_empty();
            }
            None => {
                for m in burst.packets().iter_mut().filter_map(Option::take) {
                    drop(m);
                    self.c.drop(DropReason::NoRoute);
                }
            }
        }
    }

    #[inline]
    fn dispatch(&mut self, action: Action, m: Mbuf, in_port: u16, since: u64) {
        match action {
            Action::Tx(p) => self.queue_tx(p, m),
            Action::Kernel(p) => match self.kernel_tx.get_mut(p as usize) {
                Some(Some(t)) => {
                    self.kernel_dropped += t.push(m) as u64;
                    self.kernel_queued += 1;
                    self.pending = true;
                }
                _ => self.c.drop(DropReason::LocalNoKernel),
            },
            Action::KernelFragment { port, mtu } => {
                let Some(Some(t)) = self.kernel_tx.get_mut(port as usize) else {
                    return self.c.drop(DropReason::LocalNoKernel);
                };
                let pool = self.pool;
                let (mut dropped, mut queued) = (0, 0);
                self.pending = true;
                let r = router::fragment_ipv4(
                    m.data(),
                    mtu,
                    || pool.alloc(),
                    |f| {
                        dropped += t.push(f) as u64;
                        queued += 1;
                    },
                );
                self.kernel_dropped += dropped;
                self.kernel_queued += queued;
                match r {
                    Ok(_) => self.c.fragmented.add(1),
                    Err(reason) => self.c.drop(reason),
                }
            }
            Action::Fragment { port, mtu } => {
                let Some(t) = self.tx.get_mut(port as usize) else {
                    return self.c.drop(DropReason::NoRoute);
                };
                let pool = self.pool;
                let (mut dropped, mut queued) = (0, 0);
                self.pending = true;
                let r = router::fragment_ipv4(
                    m.data(),
                    mtu,
                    || pool.alloc(),
                    |f| {
                        dropped += t.push(f) as u64;
                        queued += 1;
                    },
                );
                self.dropped += dropped;
                self.queued += queued;
                match r {
                    Ok(_) => self.c.fragmented.add(1),
                    Err(reason) => self.c.drop(reason),
                }
            }
            Action::Hold if self.held.len() < HOLD => self.held.push((m, in_port, since)),
            Action::Hold => self.c.drop(DropReason::NeighborUnresolved),
            Action::Free => drop(m),
        }
    }

    /// Send the solicitations the router asked for and report learned neighbours (rarely
    /// any: the test stays in the loop, the work out of it).
    #[inline(always)]
    fn side_effects(
        &mut self,
        scratch: &mut Scratch,
        tables: &Tables,
        pool: &Mempool,
        learned: &mut rtrb::Producer<Learned>,
        control: &std::thread::Thread,
    ) {
        if !scratch.solicit.is_empty() || !scratch.learned.is_empty() {
            self.solicit_and_report(scratch, tables, pool, learned, control);
        }
    }

    #[inline(never)]
    fn solicit_and_report(
        &mut self,
        scratch: &mut Scratch,
        tables: &Tables,
        pool: &Mempool,
        learned: &mut rtrb::Producer<Learned>,
        control: &std::thread::Thread,
    ) {
        for (port, ip) in scratch.solicit.iter() {
            let Some(mut m) = pool.alloc() else {
                self.c.drop(DropReason::NoMbuf);
                continue;
            };
            if router::build_solicit(tables, port, ip, &mut m) {
                if let Some(t) = self.tx.get_mut(port as usize) {
                    self.dropped += t.push(m) as u64;
                    self.queued += 1;
                    self.pending = true;
                    self.c.solicits.add(1);
                }
            }
        }
        scratch.solicit.clear();
        if !scratch.learned.is_empty() {
            for l in scratch.learned.iter() {
                // A full ring loses the event; the neighbour is learned from the next one.
                let _ = learned.push(l);
            }
            // No lock, no allocation: a futex wake if the thread sleeps (rare: an ARP or ND
            // answer, not a data packet).
            control.unpark();
        }
        scratch.learned.clear();
    }

    /// Flush every buffer; account sent and dropped packets.
    fn flush(&mut self) {
        if self.pending {
            for t in self.tx.iter_mut() {
                self.dropped += t.flush() as u64;
            }
            for t in self.kernel_tx.iter_mut().flatten() {
                self.kernel_dropped += t.flush() as u64;
            }
            self.pending = false;
        }
        self.c.tx.add(self.queued.saturating_sub(self.dropped));
        self.c
            .to_kernel
            .add(self.kernel_queued.saturating_sub(self.kernel_dropped));
        let dropped = self.dropped + self.kernel_dropped;
        if dropped > 0 {
            self.c.drops[DropReason::TxFull.index()].add(dropped);
        }
        self.queued = 0;
        self.dropped = 0;
        self.kernel_queued = 0;
        self.kernel_dropped = 0;
    }
}

impl Worker {
    /// The loop. Returns when `stop` is set.
    pub fn run(self) -> i32 {
        let Worker {
            rx,
            tx,
            kernel_tx,
            mut snapshots,
            counters,
            mut learned,
            pool,
            stop,
            icmp_rate,
            control,
            ..
        } = self;
        let c = &*counters;
        let hz = dpdk::tsc_hz().max(1);
        let hold_ticks = hz / 1000 * HOLD_MS;
        let mut scratch = Scratch::new(hz, icmp_rate);
        let mut burst = RxBurst::default();
        let mut out = Out {
            pool: &pool,
            tx,
            kernel_tx,
            held: Vec::with_capacity(HOLD),
            c,
            queued: 0,
            dropped: 0,
            kernel_queued: 0,
            kernel_dropped: 0,
            pending: false,
        };
        let mut retry: Vec<(Mbuf, u16, u64)> = Vec::with_capacity(HOLD);
        let mut stages = fastpath::Stages::default();
        let mut last_retry = 0u64;
        c.generation.set(snapshots.generation());
        let (mut round_start, mut busy_round) = (0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            let switched = snapshots.poll();
            if switched {
                c.generation.set(snapshots.generation());
            }
            // Held packets: again on a new snapshot (a neighbour may have been learned), and
            // every millisecond to expire them.
            if !out.held.is_empty() {
                let now = dpdk::tsc();
                if switched || now.saturating_sub(last_retry) > hz / 1000 {
                    last_retry = now;
                    scratch.now = now;
                    std::mem::swap(&mut out.held, &mut retry);
                    let tables = snapshots.current();
                    let mut ctx = Ctx {
                        t: tables,
                        s: &mut scratch,
                        c,
                    };
                    for (mut m, in_port, since) in retry.drain(..) {
                        if now.saturating_sub(since) > hold_ticks {
                            c.drop(DropReason::NeighborUnresolved);
                            continue;
                        }
                        let action = router::process(&mut ctx, in_port, &mut m);
                        out.dispatch(action, m, in_port, since);
                    }
                    out.side_effects(&mut scratch, tables, &pool, &mut learned, &control);
                    out.flush();
                }
            }
            // One TSC read per round of polls (rdtsc is not free, least of all in a VM: it
            // cost ~5% of the fast path when read twice per burst). A round that carried
            // packets is busy from its start (before the rx calls: the PMD's copy is work
            // too) to the start of the next round.
            let t0 = dpdk::tsc();
            if busy_round > 0 {
                c.busy_cycles.add(t0.wrapping_sub(round_start));
                c.busy_packets.add(busy_round);
                busy_round = 0;
            }
            round_start = t0;
            for q in &rx {
                let n = burst.recv(q.dpdk_port, q.queue);
                if n == 0 {
                    continue;
                }
                scratch.now = t0;
                let tables = snapshots.current();
                let fast_port = if q.from_kernel {
                    None
                } else {
                    tables.ports.get(q.port as usize)
                };
                let mut ctx = Ctx {
                    t: tables,
                    s: &mut scratch,
                    c,
                };
                stages.nic_cksum = q.rx_ip_cksum;
                let done = fastpath::burst(
                    tables,
                    fast_port,
                    burst.packets(),
                    &mut stages,
                    |fast, mut m| {
                        if let Some(port) = fast {
                            return out.queue_tx(port, m);
                        }
                        let action = if !m.is_contiguous() {
                            c.drop(DropReason::MultiSegment);
                            Action::Free
                        } else if q.from_kernel {
                            c.from_kernel.add(1);
                            router::process_from_kernel(&mut ctx, q.port, &mut m)
                        } else {
                            router::process(&mut ctx, q.port, &mut m)
                        };
                        out.dispatch(action, m, q.port, t0);
                    },
                );
                if let fastpath::Done::AllTo(port) = done {
                    out.queue_burst(port, &mut burst);
                }
                out.side_effects(&mut scratch, tables, &pool, &mut learned, &control);
                out.flush();
                c.rx.add(n as u64);
                busy_round += n as u64;
                c.busy_bursts.add(1);
            }
        }
        0
    }
}
