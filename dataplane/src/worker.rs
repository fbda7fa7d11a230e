//! The worker lcore loop: poll every rx queue this worker owns, run each packet to
//! completion through the [`router`](crate::router), transmit in per-port buffers flushed
//! once per burst, switch snapshots between bursts.
//!
//! Packets whose next hop is being resolved are held in a [`HoldQueue`] (bounded per worker
//! and per neighbour, for at most [`HoldConfig::ms`]) and run through the router again when
//! a new snapshot arrives, which is what happens when the control side learns the neighbour
//! or gives up on it. The worker reports neighbours to resolve and neighbours learned to the
//! control side ([`WorkerEvent`]) and sends the solicitations it is asked for
//! ([`WorkerCommand`]): the control side keeps the per-neighbour resolution state, so a
//! neighbour is solicited a bounded number of times whatever the number of workers.
//!
//! NAT (issue 5): the worker keeps its flow tables in its [`Scratch`], expires flows from
//! its loop within a budget per round, and hands a packet whose flow another worker owns
//! over a lock-free ring to that worker ([`Handed`]), which polls its rings as another rx
//! source. Flushes and dumps for operators run a bounded slice per round.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::buf::PacketBuf;
use crate::counters::{DropReason, WorkerCounters};
use crate::dpdk::{self, Mbuf, Mempool, RxBurst, TxBuffer, BURST};
use crate::fastpath;
use crate::nat;
use crate::router::{self, Action, Ctx, FlowDump, Scratch, WorkerCommand, WorkerEvent};
use crate::snapshot::Subscriber;
use crate::tables::Tables;

/// How a worker holds packets while their neighbour is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldConfig {
    /// Packets the worker holds in all (`tuning.hold_packets`).
    pub packets: usize,
    /// Packets and bytes one neighbour may hold (`tuning.unres_qlen`,
    /// `tuning.unres_qlen_bytes`, as Linux's per-neighbour queue): past either, that
    /// neighbour's oldest packet is dropped (`drop_hold_queue_full`).
    pub per_neighbor: usize,
    pub per_neighbor_bytes: usize,
    /// How long a packet may wait; then it is dropped with an ICMP unreachable
    /// (`drop_neighbor_unresolved`). Longer than the control side's resolution takes
    /// (probes x retransmit time), so that its verdict normally comes first.
    pub ms: u64,
}

impl Default for HoldConfig {
    fn default() -> Self {
        HoldConfig {
            packets: 256,
            per_neighbor: 64,
            per_neighbor_bytes: 65536,
            ms: 3500,
        }
    }
}

/// Push the burst's learned neighbours and neighbours to resolve onto the event ring and
/// clear them. A full ring loses events, counted in `lost` (the next packet reports them
/// again). True if any event went through.
pub fn report(
    scratch: &mut Scratch,
    events: &mut rtrb::Producer<WorkerEvent>,
    lost: &crate::counters::Counter,
) -> bool {
    let learned = scratch.learned.iter().map(WorkerEvent::Learned);
    let unresolved = scratch
        .unresolved
        .iter()
        .map(|(port, ip)| WorkerEvent::Unresolved { port, ip });
    let mut sent = false;
    for e in learned.chain(unresolved) {
        match events.push(e) {
            Ok(()) => sent = true,
            Err(_) => lost.add(1),
        }
    }
    scratch.learned.clear();
    scratch.unresolved.clear();
    sent
}

/// Split the IPv4 datagram in `m` into fragments of `mtu` (buffers from `pool`) queued on
/// `t`, counting it as `fragmented` or the reason it failed. Returns (queued, dropped by
/// the queue's flushes).
fn fragment_into(
    pool: &Mempool,
    t: &mut TxBuffer,
    m: &Mbuf,
    mtu: u16,
    c: &WorkerCounters,
) -> (u64, u64) {
    let (mut dropped, mut queued) = (0, 0);
    let r = router::fragment_ipv4(
        m.data(),
        mtu,
        || pool.alloc(),
        |f| {
            dropped += t.push(f) as u64;
            queued += 1;
        },
    );
    match r {
        Ok(_) => c.fragmented.add(1),
        Err(reason) => c.drop(reason),
    }
    (queued, dropped)
}

/// Report the neighbours to resolve once this many are listed, while re-running held
/// packets (the list holds 32).
const REPORT_AT: usize = 24;

/// A held packet.
pub struct Held<P> {
    pub pkt: P,
    pub in_port: u16,
    /// TSC when first held.
    pub since: u64,
    /// The neighbour it waits for: (port, address).
    pub key: (u16, IpAddr),
    pub len: usize,
}

/// The packets a worker holds, oldest first, bounded in all and per neighbour. Preallocated;
/// never grows past [`HoldConfig::packets`].
pub struct HoldQueue<P> {
    items: VecDeque<Held<P>>,
    cfg: HoldConfig,
}

impl<P> HoldQueue<P> {
    pub fn new(cfg: HoldConfig) -> Self {
        HoldQueue {
            items: VecDeque::with_capacity(cfg.packets),
            cfg,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Hold `h`. Packets that must go to make room are passed to `dropped`: the oldest of
    /// the same neighbour while that neighbour is over its share, or `h` itself if the
    /// queue is full of other neighbours' packets. Order is kept.
    pub fn push(&mut self, h: Held<P>, mut dropped: impl FnMut(P)) {
        let (mut n, mut bytes) = (0usize, 0usize);
        for x in self.items.iter().filter(|x| x.key == h.key) {
            n += 1;
            bytes += x.len;
        }
        while n > 0
            && (n + 1 > self.cfg.per_neighbor.max(1) || bytes + h.len > self.cfg.per_neighbor_bytes)
        {
            let Some(i) = self.items.iter().position(|x| x.key == h.key) else {
                break;
            };
            if let Some(old) = self.items.remove(i) {
                n -= 1;
                bytes -= old.len;
                dropped(old.pkt);
            }
        }
        if self.items.len() >= self.cfg.packets.max(1) {
            return dropped(h.pkt);
        }
        self.items.push_back(h);
    }

    /// Hold again a packet taken out by [`take_all`](Self::take_all): it keeps its place
    /// (and its original time), without the share checks it passed when first held.
    pub fn requeue(&mut self, h: Held<P>, dropped: impl FnOnce(P)) {
        if self.items.len() >= self.cfg.packets.max(1) {
            return dropped(h.pkt);
        }
        self.items.push_back(h);
    }

    /// Move every held packet to `into` (oldest first), leaving the queue empty.
    pub fn take_all(&mut self, into: &mut Vec<Held<P>>) {
        into.extend(self.items.drain(..));
    }

    /// Take out, oldest first, the packets held since before `before` (the queue is in
    /// the order packets were first held, so only its front is looked at).
    pub fn expire(&mut self, before: u64, mut expired: impl FnMut(Held<P>)) {
        while self.items.front().is_some_and(|h| h.since < before) {
            if let Some(h) = self.items.pop_front() {
                expired(h);
            }
        }
    }
}

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
    /// Neighbours learned and neighbours to resolve, for the control side.
    pub events: rtrb::Producer<WorkerEvent>,
    /// Solicitations the control side asks for.
    pub commands: rtrb::Consumer<WorkerCommand>,
    /// The control thread, which sleeps until something is due: woken when an event is
    /// reported (held packets may wait for it).
    pub control: std::thread::Thread,
    pub pool: Arc<Mempool>,
    pub stop: Arc<AtomicBool>,
    pub icmp_rate: u32,
    pub hold: HoldConfig,
    /// NAT (issue 5): flows this worker's tables hold, of each family.
    pub nat_capacity: usize,
    /// Commit the NAT tables' memory at start (the config has NAT rules); else it is
    /// committed as flows come (rules added later pay their first page faults then).
    pub nat_prefault: bool,
    /// Rings to the other workers, by worker index (None: this one), for packets whose
    /// NAT flow another worker owns; and the rings from them.
    pub handoff_tx: Vec<Option<rtrb::Producer<Handed>>>,
    pub handoff_rx: Vec<rtrb::Consumer<Handed>>,
    /// Flow records for `ferryctl conntrack` ([`WorkerCommand::NatDump`]).
    pub dump: rtrb::Producer<FlowDump>,
    /// Service backends' connection counts, shared by every worker and the control side.
    pub backend_stats: Arc<crate::service::BackendStats>,
}

/// A packet handed to its flow's owner, with the port it came in by.
pub struct Handed(pub Mbuf, pub u16);

/// Flows looked at per round by a flush or a dump (so neither stalls the worker).
const SWEEP_BUDGET: u32 = 4096;
/// Flows examined per round by expiry, per table.
const EXPIRE_BUDGET: usize = 256;

/// Where packets go after the router: tx buffers, kernel buffers, the hold queue.
struct Out<'a> {
    pool: &'a Mempool,
    tx: Vec<TxBuffer>,
    kernel_tx: Vec<Option<TxBuffer>>,
    held: HoldQueue<Mbuf>,
    /// Packets dispatched now were already held (a retry): `Hold` puts them back in place.
    requeue: bool,
    c: &'a WorkerCounters,
    /// Packets queued for the wire / the kernel, and dropped by full queues, in this burst.
    queued: u64,
    dropped: u64,
    kernel_queued: u64,
    kernel_dropped: u64,
    /// A buffer may hold packets: set by every queueing but a whole burst sent at once, so
    /// that `flush` looks at the buffers only then (the usual burst leaves them empty).
    pending: bool,
    handoff: Vec<Option<rtrb::Producer<Handed>>>,
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
    fn dispatch(&mut self, action: Action, m: Mbuf, in_port: u16, since: u64, s: &Scratch) {
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
                let (queued, dropped) = fragment_into(self.pool, t, &m, mtu, self.c);
                self.pending = true;
                self.kernel_queued += queued;
                self.kernel_dropped += dropped;
            }
            Action::Fragment { port, mtu } => {
                let Some(t) = self.tx.get_mut(port as usize) else {
                    return self.c.drop(DropReason::NoRoute);
                };
                let (queued, dropped) = fragment_into(self.pool, t, &m, mtu, self.c);
                self.pending = true;
                self.queued += queued;
                self.dropped += dropped;
            }
            Action::Hold => {
                let c = self.c;
                let full = |dropped| {
                    drop(dropped);
                    c.drop(DropReason::HoldQueueFull);
                };
                let len = m.data().len();
                let h = Held {
                    pkt: m,
                    in_port,
                    since,
                    key: s.held_for,
                    len,
                };
                if self.requeue {
                    self.held.requeue(h, full);
                } else {
                    self.held.push(h, full);
                }
            }
            Action::Handoff(w) => match self.handoff.get_mut(usize::from(w)) {
                Some(Some(r)) => match r.push(Handed(m, in_port)) {
                    Ok(()) => self.c.nat.handoffs_out.add(1),
                    Err(rtrb::PushError::Full(Handed(m, _))) => {
                        drop(m);
                        self.c.drop(DropReason::HandoffFull);
                    }
                },
                _ => self.c.drop(DropReason::HandoffFull),
            },
            Action::Free => drop(m),
        }
    }

    /// Report neighbours learned and neighbours to resolve to the control side (rarely
    /// any: the test stays in the loop, the work out of it).
    #[inline(always)]
    fn side_effects(
        &mut self,
        scratch: &mut Scratch,
        events: &mut rtrb::Producer<WorkerEvent>,
        control: &std::thread::Thread,
    ) {
        if !scratch.unresolved.is_empty() || !scratch.learned.is_empty() {
            self.report(scratch, events, control);
        }
    }

    #[inline(never)]
    fn report(
        &mut self,
        scratch: &mut Scratch,
        events: &mut rtrb::Producer<WorkerEvent>,
        control: &std::thread::Thread,
    ) {
        if report(scratch, events, &self.c.events_lost) {
            // No lock, no allocation: a futex wake if the thread sleeps (rare: an ARP or ND
            // answer, a new neighbour to resolve; not a data packet).
            control.unpark();
        }
    }

    /// Send a solicitation the control side asked for.
    #[inline(never)]
    fn solicit(&mut self, tables: &Tables, port: u16, ip: IpAddr) {
        let Some(mut m) = self.pool.alloc() else {
            return self.c.drop(DropReason::NoMbuf);
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
            mut events,
            mut commands,
            pool,
            stop,
            icmp_rate,
            control,
            hold,
            nat_capacity,
            nat_prefault,
            handoff_tx,
            mut handoff_rx,
            mut dump,
            index,
            backend_stats,
            ..
        } = self;
        let c = &*counters;
        let hz = dpdk::tsc_hz().max(1);
        let hold_ticks = hz / 1000 * hold.ms;
        let mut scratch = Scratch::new(hz, icmp_rate);
        let tick_len = (hz / u64::from(nat::TICKS_PER_S)).max(1);
        scratch.nat = nat::NatState::new(nat_capacity, index as u16, dpdk::tsc() | 1);
        scratch.nat.stats = backend_stats;
        // Preallocated for real: every page written now, on this core, not on the packet
        // path (a first touch there is a page fault, and a huge page's is ~100 us).
        if nat_prefault {
            scratch.nat.prefault();
        }
        scratch.nat.now = (dpdk::tsc() / tick_len) as u32;
        let mut nat_tables: Option<Arc<nat::NatTables>> = None;
        // A flush (or the end of deleted rules' flows) in progress, and a dump.
        let mut sweep: Option<(u32, Option<nat::FlowFilter>)> = None;
        let mut dumping: Option<(u32, nat::FlowFilter, u32)> = None;
        let mut last_tick = 0u32;
        let mut next_expiry = 0u64;
        let mut burst = RxBurst::default();
        let mut slow: [Option<Mbuf>; BURST] = std::array::from_fn(|_| None);
        let mut hashes = [(crate::conntrack::Key4::default(), 0u32); BURST];
        let mut out = Out {
            pool: &pool,
            tx,
            kernel_tx,
            held: HoldQueue::new(hold),
            requeue: false,
            c,
            queued: 0,
            dropped: 0,
            kernel_queued: 0,
            kernel_dropped: 0,
            pending: false,
            handoff: handoff_tx,
        };
        let mut retry: Vec<Held<Mbuf>> = Vec::with_capacity(hold.packets);
        let mut stages = fastpath::Stages::default();
        let mut last_retry = 0u64;
        c.generation.set(snapshots.generation());
        let (mut round_start, mut busy_round) = (0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            let switched = snapshots.poll();
            if switched {
                c.generation.set(snapshots.generation());
            }
            // Commands from the control side (one load when there are none).
            if let Ok(cmd) = commands.pop() {
                let tables = snapshots.current();
                let mut next = Some(cmd);
                while let Some(cmd) = next {
                    match cmd {
                        WorkerCommand::Solicit { port, ip } => out.solicit(tables, port, ip),
                        WorkerCommand::NatFlush(f) => sweep = Some((0, Some(f))),
                        WorkerCommand::NatDump { filter, limit } => {
                            dumping = Some((0, filter, limit))
                        }
                    }
                    next = commands.pop().ok();
                }
                out.flush();
            }
            if switched {
                // New NAT rules: the flows of deleted ones end (a sweep through the tables).
                let now_nat = snapshots.current().nat.clone();
                let changed = match (&nat_tables, &now_nat) {
                    (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                    (None, None) => false,
                    _ => true,
                };
                if changed {
                    nat_tables = now_nat;
                    if !scratch.nat.is_empty() {
                        // From the start again (a sweep under way keeps its flush filter):
                        // the flows it has passed may belong to a rule deleted just now.
                        sweep = Some((0, sweep.and_then(|(_, f)| f)));
                    }
                }
            }
            if sweep.is_some() || dumping.is_some() {
                nat_chores(
                    &mut scratch.nat,
                    nat_tables.as_deref(),
                    &mut sweep,
                    &mut dumping,
                    &mut dump,
                    c,
                );
            }
            // Held packets: through the router again on a new snapshot (a neighbour may
            // have been learned, or given up on); those held too long expire (looked at
            // every millisecond, from the oldest).
            if !out.held.is_empty() {
                let now = dpdk::tsc();
                if switched || now.saturating_sub(last_retry) > hz / 1000 {
                    last_retry = now;
                    scratch.now = now;
                    let tables = snapshots.current();
                    let mut ctx = Ctx {
                        t: tables,
                        s: &mut scratch,
                        c,
                    };
                    // First the new snapshot's verdicts (a packet that waited just long
                    // enough still leaves if its neighbour answered), then expiry.
                    if switched {
                        out.held.take_all(&mut retry);
                        out.requeue = true;
                        for Held {
                            pkt: mut m,
                            in_port,
                            since,
                            ..
                        } in retry.drain(..)
                        {
                            let action = router::process(&mut ctx, in_port, &mut m);
                            out.dispatch(action, m, in_port, since, ctx.s);
                            if ctx.s.unresolved.len() >= REPORT_AT {
                                // Many neighbours still missing: report before the list
                                // fills (a full list drops reports).
                                out.side_effects(ctx.s, &mut events, &control);
                            }
                        }
                        out.requeue = false;
                    }
                    out.held
                        .expire(now.saturating_sub(hold_ticks), |h| retry.push(h));
                    for Held {
                        pkt: mut m,
                        in_port,
                        since,
                        ..
                    } in retry.drain(..)
                    {
                        let action = router::unresolved_error(&mut ctx, in_port, &mut m);
                        out.dispatch(action, m, in_port, since, ctx.s);
                    }
                    out.side_effects(&mut scratch, &mut events, &control);
                    out.flush();
                }
            }
            // One TSC read per round of polls (rdtsc is not free, least of all in a VM: it
            // cost ~5% of the fast path when read twice per burst). A round that carried
            // packets is busy from its start (before the rx calls: the PMD's copy is work
            // too) to the start of the next round.
            let t0 = dpdk::tsc();
            if scratch.nat.is_empty() {
                if c.nat.flows.get() != 0 {
                    c.nat.flows.set(0);
                    for g in &c.nat.by_state {
                        g.set(0);
                    }
                }
            } else if t0 >= next_expiry {
                // Expiry: what is due, within a budget per round, looked at every 1/64 of a
                // tick (sooner while a pass has more than its budget to do).
                let tick = (t0 / tick_len) as u32;
                let gone = scratch.nat.expire(tick, EXPIRE_BUDGET, c);
                next_expiry = if gone > 0 { t0 } else { t0 + tick_len / 64 };
                if tick != last_tick {
                    last_tick = tick;
                    c.nat.flows.set(scratch.nat.len() as u64);
                    for (g, v) in c.nat.by_state.iter().zip(scratch.nat.by_state) {
                        g.set(v);
                    }
                }
            }
            // Packets other workers handed over: their NAT flows are this worker's.
            for r in handoff_rx.iter_mut() {
                let n = r.slots().min(BURST);
                if n == 0 {
                    continue;
                }
                scratch.now = t0;
                let tables = snapshots.current();
                let mut ctx = Ctx {
                    t: tables,
                    s: &mut scratch,
                    c,
                };
                ctx.s.nat.handed = true;
                if let Ok(chunk) = r.read_chunk(n) {
                    let (a, b) = chunk.as_slices();
                    ctx.s.nat.prefetch_burst(
                        a.iter().chain(b).map(|Handed(m, _)| m.data()),
                        &mut hashes,
                    );
                }
                for h in hashes.iter().take(n) {
                    let Ok(Handed(mut m, in_port)) = r.pop() else {
                        break;
                    };
                    ctx.s.nat.hint(*h);
                    c.nat.handoffs_in.add(1);
                    let action = router::process(&mut ctx, in_port, &mut m);
                    out.dispatch(action, m, in_port, t0, ctx.s);
                }
                ctx.s.nat.handed = false;
                out.side_effects(&mut scratch, &mut events, &control);
                out.flush();
                busy_round += n as u64;
            }
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
                // With NAT, the slow packets wait for the end of the burst: their flows are
                // prefetched together first (the NAT stage's lookups miss the cache).
                let nat_on = tables.nat.is_some() && !q.from_kernel;
                let mut n_slow = 0;
                let done = fastpath::burst(
                    tables,
                    fast_port,
                    burst.packets(),
                    &mut stages,
                    |fast, mut m| {
                        if let Some(port) = fast {
                            return out.queue_tx(port, m);
                        }
                        if nat_on && m.is_contiguous() {
                            if let Some(slot) = slow.get_mut(n_slow) {
                                *slot = Some(m);
                                n_slow += 1;
                                return;
                            }
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
                        out.dispatch(action, m, q.port, t0, ctx.s);
                    },
                );
                if let fastpath::Done::AllTo(port) = done {
                    out.queue_burst(port, &mut burst);
                }
                if n_slow > 0 {
                    let slow = &mut slow[..n_slow];
                    ctx.s
                        .nat
                        .prefetch_burst(slow.iter().flatten().map(|m| m.data()), &mut hashes);
                    for (mut m, h) in slow.iter_mut().filter_map(Option::take).zip(hashes) {
                        ctx.s.nat.hint(h);
                        let action = router::process(&mut ctx, q.port, &mut m);
                        out.dispatch(action, m, q.port, t0, ctx.s);
                    }
                }
                out.side_effects(&mut scratch, &mut events, &control);
                out.flush();
                c.rx.add(n as u64);
                busy_round += n as u64;
                c.busy_bursts.add(1);
            }
        }
        0
    }
}

/// A round's share of a flush (or of ending deleted rules' flows) and of a dump.
#[inline(never)]
fn nat_chores(
    st: &mut nat::NatState,
    tables: Option<&nat::NatTables>,
    sweep: &mut Option<(u32, Option<nat::FlowFilter>)>,
    dumping: &mut Option<(u32, nat::FlowFilter, u32)>,
    dump: &mut rtrb::Producer<FlowDump>,
    c: &WorkerCounters,
) {
    if let Some((from, filter)) = *sweep {
        let dead = |r: &nat::FlowRecord| tables.is_none_or(|t| !t.flow_live(r.rule, r.backend));
        *sweep = st
            .sweep(from, SWEEP_BUDGET, c, |r| {
                dead(r) || filter.is_some_and(|f| f.matches(r))
            })
            .map(|next| (next, filter));
    }
    if let Some((mut at, filter, mut left)) = *dumping {
        let end = at.saturating_add(SWEEP_BUDGET).min(st.id_bound());
        while at < end && left > 0 {
            if let Some(r) = st.record_at(at).filter(|r| filter.matches(r)) {
                if dump.push(FlowDump::Flow(r)).is_err() {
                    // The reader is behind: go on next round from this flow.
                    *dumping = Some((at, filter, left));
                    return;
                }
                left -= 1;
            }
            at += 1;
        }
        if left == 0 || at >= st.id_bound() {
            let truncated = left == 0 && at < st.id_bound();
            if dump.push(FlowDump::End { truncated }).is_ok() {
                *dumping = None;
            }
        } else {
            *dumping = Some((at, filter, left));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn held(id: u32, key: &str, len: usize) -> Held<u32> {
        Held {
            pkt: id,
            in_port: 0,
            since: id as u64,
            key: (1, ip(key)),
            len,
        }
    }

    fn ids(q: &mut HoldQueue<u32>) -> Vec<u32> {
        let mut v = Vec::new();
        q.take_all(&mut v);
        let out = v.iter().map(|h| h.pkt).collect();
        for h in v {
            q.push(h, |_| panic!("re-holding what was held must fit"));
        }
        out
    }

    #[test]
    fn held_packets_expire_oldest_first() {
        let mut q = HoldQueue::new(HoldConfig::default());
        for id in [10, 20, 30] {
            q.push(held(id, "10.0.0.1", 60), |_| panic!("room"));
        }
        let mut out = Vec::new();
        q.expire(10, |h| out.push(h.pkt));
        assert!(out.is_empty(), "held since 10: not before 10");
        q.expire(25, |h| out.push(h.pkt));
        assert_eq!(out, vec![10, 20]);
        assert_eq!(ids(&mut q), vec![30]);
        // A packet taken out and held again keeps its time (and place).
        let mut v = Vec::new();
        q.take_all(&mut v);
        for h in v {
            q.requeue(h, |_| panic!("room"));
        }
        q.expire(31, |h| out.push(h.pkt));
        assert_eq!(out, vec![10, 20, 30]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_event_ring_loses_events_and_counts_them() {
        use crate::router::Learned;
        let (mut tx, mut rx) = rtrb::RingBuffer::new(2);
        let lost = crate::counters::Counter::default();
        let mut s = Scratch::new(1_000_000, 10);
        let mac = [2, 0, 0, 0, 0, 1];
        assert!(s.learned.push(Learned {
            port: 0,
            ip: ip("10.0.0.2"),
            mac,
            create: true
        }));
        for a in ["10.0.0.3", "10.0.0.4"] {
            assert!(s.unresolved.push((1, ip(a))));
        }
        assert!(report(&mut s, &mut tx, &lost), "two went through");
        assert_eq!(lost.get(), 1, "the third is lost and counted");
        assert!(s.learned.is_empty() && s.unresolved.is_empty());
        assert!(matches!(rx.pop(), Ok(WorkerEvent::Learned(l)) if l.ip == ip("10.0.0.2")));
        assert_eq!(
            rx.pop(),
            Ok(WorkerEvent::Unresolved {
                port: 1,
                ip: ip("10.0.0.3")
            })
        );
        // Read out, the ring takes two again: of three, one is lost.
        assert!(s.unresolved.push((1, ip("10.0.0.5"))));
        assert!(s.unresolved.push((1, ip("10.0.0.6"))));
        assert!(s.unresolved.push((1, ip("10.0.0.7"))));
        assert!(report(&mut s, &mut tx, &lost));
        assert_eq!(lost.get(), 2);
        assert!(rx.pop().is_ok() && rx.pop().is_ok() && rx.pop().is_err());
    }

    #[test]
    fn one_neighbor_cannot_take_the_whole_queue() {
        // 8 packets in all, 3 per neighbour: a fourth for A drops A's oldest, and B still
        // finds room.
        let mut q = HoldQueue::new(HoldConfig {
            packets: 8,
            per_neighbor: 3,
            per_neighbor_bytes: 1 << 20,
            ms: 1000,
        });
        let mut dropped = Vec::new();
        for id in 1..=5 {
            q.push(held(id, "10.0.0.1", 60), |p| dropped.push(p));
        }
        assert_eq!(dropped, vec![1, 2], "A's oldest go first");
        q.push(held(10, "10.0.0.2", 60), |p| dropped.push(p));
        assert_eq!(dropped, vec![1, 2]);
        assert_eq!(ids(&mut q), vec![3, 4, 5, 10], "order kept");
    }

    #[test]
    fn the_byte_share_bounds_big_packets() {
        let mut q = HoldQueue::new(HoldConfig {
            packets: 64,
            per_neighbor: 64,
            per_neighbor_bytes: 3000,
            ms: 1000,
        });
        let mut dropped = Vec::new();
        q.push(held(1, "fd00::1", 1500), |p| dropped.push(p));
        q.push(held(2, "fd00::1", 1500), |p| dropped.push(p));
        assert!(dropped.is_empty(), "3000 bytes fit exactly");
        q.push(held(3, "fd00::1", 100), |p| dropped.push(p));
        assert_eq!(dropped, vec![1]);
        // One packet bigger than the share is still held (alone).
        q.push(held(4, "fd00::2", 9000), |p| dropped.push(p));
        assert_eq!(ids(&mut q), vec![2, 3, 4]);
    }

    #[test]
    fn a_full_queue_refuses_the_newcomer() {
        let mut q = HoldQueue::new(HoldConfig {
            packets: 4,
            per_neighbor: 2,
            per_neighbor_bytes: 1 << 20,
            ms: 1000,
        });
        let mut dropped = Vec::new();
        for (id, k) in [
            (1, "10.0.0.1"),
            (2, "10.0.0.2"),
            (3, "10.0.0.3"),
            (4, "10.0.0.4"),
        ] {
            q.push(held(id, k, 60), |p| dropped.push(p));
        }
        q.push(held(5, "10.0.0.5", 60), |p| dropped.push(p));
        assert_eq!(
            dropped,
            vec![5],
            "the queue is full of other neighbours' packets"
        );
        // Within its share, a neighbour that holds packets is refused too: the queue keeps
        // what it holds, in order.
        q.push(held(6, "10.0.0.1", 60), |p| dropped.push(p));
        assert_eq!(dropped, vec![5, 6]);
        assert_eq!(ids(&mut q), vec![1, 2, 3, 4]);
    }
}
