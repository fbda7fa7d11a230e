//! Connection tracking (issue 5): a worker's flow table, its expiry, and the TCP state
//! machine. The NAT stage (not yet wired into the worker) finds a packet's flow here by
//! either direction's 5-tuple, and keeps it alive by its packets.
//!
//! # The table
//!
//! Everything is allocated when the table is made, for a fixed capacity: the flows, a free
//! list, the hash index and the timer wheel. Inserting, finding, refreshing and removing a
//! flow never allocates and never locks (a table belongs to one worker), and a full table
//! refuses new flows ([`Full`]) while established ones carry on.
//!
//! * **Flows** are slots of one array, referred to by id. A flow holds both directions'
//!   keys (the original tuple and the reply tuple, which differ by the translation), its
//!   state, the rule that made it (by id: a flow outlives any snapshot), its expiry and its
//!   links in the timer wheel.
//! * **The index** is open addressing with linear probing over `u64` slots, at most half
//!   full: each flow has two entries (one per direction). An entry is the key's 32-bit hash
//!   (its home slot is the hash's low bits, so it is never hashed again) and
//!   `2 * id + dir + 1`; a lookup compares hashes first, keys only on a hash match. Removal shifts the
//!   following entries back (no tombstones, so a long-lived table does not slow down).
//! * **Expiry** is a timer wheel of [`WHEEL_SLOTS`] slots of one tick each (the caller's
//!   unit: the worker's housekeeping tick). A flow sits in the slot of the tick it is due
//!   (modulo the wheel), in a doubly linked list through the flow array. A packet that only
//!   pushes the expiry later changes a field and nothing else; the wheel finds the flow not
//!   due yet when it gets there, and moves it on. An expiry brought earlier (a FIN, an RST)
//!   moves the flow at once. [`FlowTable::expire`] walks the slots up to now within a
//!   budget of flows per call, so no call scans the whole table.
//!
//! Memory, IPv4 (`Key4`, 16 bytes): a flow is 56 bytes (4 of them a service flow's backend
//! id), its index share 32 (4 slots of 8) and its free-list entry 4: 92 bytes per tracked
//! flow with both directions, at any size (the bound: 96; `cargo bench -p
//! ferry-perf --bench conntrack`). IPv6 (`Key6`, 40 bytes): 104 + 36 = 140.

use std::fmt;

#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    safe_arch::prefetch_t0(x);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = x;
}

/// Slots of the timer wheel (ticks; a power of two).
pub const WHEEL_SLOTS: usize = 4096;
const NONE: u32 = u32::MAX;

/// A 5-tuple in one direction. Implemented by [`Key4`] and [`Key6`].
pub trait FlowKey: Copy + Eq + Default + fmt::Debug {
    /// A well-mixed 64-bit hash of the key under `seed`.
    fn hash(&self, seed: u64) -> u64;
}

/// An IPv4 5-tuple (addresses in host order; ICMP echo: the identifier as both ports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Key4 {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// An IPv6 5-tuple.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Key6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

#[inline(always)]
pub(crate) fn mix(mut x: u64) -> u64 {
    // The finaliser of MurmurHash3 / splitmix64: every input bit reaches every output bit.
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl FlowKey for Key4 {
    #[inline]
    fn hash(&self, seed: u64) -> u64 {
        let a = (u64::from(self.src) << 32) | u64::from(self.dst);
        let b =
            (u64::from(self.sport) << 32) | (u64::from(self.dport) << 16) | u64::from(self.proto);
        mix(mix(a ^ seed) ^ b)
    }
}

impl FlowKey for Key6 {
    #[inline]
    fn hash(&self, seed: u64) -> u64 {
        let w = |b: &[u8; 16], i: usize| {
            u64::from_be_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        let b =
            (u64::from(self.sport) << 32) | (u64::from(self.dport) << 16) | u64::from(self.proto);
        let mut h = mix(seed ^ w(&self.src, 0));
        h = mix(h ^ w(&self.src, 8));
        h = mix(h ^ w(&self.dst, 0));
        h = mix(h ^ w(&self.dst, 8));
        mix(h ^ b)
    }
}

/// Which of a flow's two keys a packet matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// The direction of the flow's first packet.
    Original = 0,
    Reply = 1,
}

/// A flow's protocol state (TCP as Linux's conntrack keeps it, in short; UDP and ICMP
/// only know whether a reply was seen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// TCP: a SYN seen from the original side.
    #[default]
    SynSent,
    /// TCP: the reply side answered with SYN+ACK.
    SynRecv,
    Established,
    /// TCP: one side sent a FIN (which one: [`Flow::flags`]).
    FinWait,
    /// TCP: both sides sent a FIN.
    TimeWait,
    /// TCP: reset.
    Close,
    /// UDP or ICMP echo, no reply yet.
    Unreplied,
    /// UDP or ICMP echo, a reply seen.
    Replied,
}

/// Flow flags.
pub const FIN_ORIGINAL: u8 = 1;
pub const FIN_REPLY: u8 = 2;
/// Kept by the table: the slot holds a tracked flow.
const LIVE: u8 = 0x80;
/// The flag bits the caller keeps ([`FlowTable::refresh`]).
pub const CALLER_FLAGS: u8 = !LIVE;

/// TCP flags as they are in the header's 13th byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// Timeouts, in the table's ticks, by what the flow is doing (RFC 7857's recommendations
/// by default: `nat.timeouts` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: u32,
    /// Opening and closing TCP (SYN, FIN, TIME_WAIT).
    pub tcp_transitory: u32,
    /// After a reset.
    pub tcp_closed: u32,
    pub udp: u32,
    pub icmp: u32,
}

impl Timeouts {
    /// RFC 7857 in seconds (established 7440, transitory 240, UDP 300, ICMP 60; a reset
    /// flow lingers 10 s), at `ticks_per_s`.
    pub fn rfc7857(ticks_per_s: u32) -> Timeouts {
        Timeouts {
            tcp_established: 7440 * ticks_per_s,
            tcp_transitory: 240 * ticks_per_s,
            tcp_closed: 10 * ticks_per_s,
            udp: 300 * ticks_per_s,
            icmp: 60 * ticks_per_s,
        }
    }

    /// The timeout of a flow in `state` of protocol `proto` (6 TCP, 17 UDP, else ICMP).
    pub fn of(&self, proto: u8, state: State) -> u32 {
        match (proto, state) {
            (6, State::Established) => self.tcp_established,
            (6, State::Close) => self.tcp_closed,
            (6, _) => self.tcp_transitory,
            (17, _) => self.udp,
            _ => self.icmp,
        }
    }
}

/// The TCP state after a segment with `flags` in direction `dir` (`fins`: the flow's
/// FIN flags, updated). A segment that does not fit the state leaves it as it is (the
/// NAT still translates it, as Linux's conntrack does in its liberal mode).
pub fn tcp_next(state: State, dir: Dir, flags: u8, fins: &mut u8) -> State {
    use tcp_flags::*;
    if flags & RST != 0 {
        return State::Close;
    }
    if flags & FIN != 0 {
        *fins |= if dir == Dir::Original {
            FIN_ORIGINAL
        } else {
            FIN_REPLY
        };
        return if *fins == FIN_ORIGINAL | FIN_REPLY {
            State::TimeWait
        } else {
            State::FinWait
        };
    }
    match (state, dir) {
        (State::SynSent, Dir::Reply) if flags & (SYN | ACK) == SYN | ACK => State::SynRecv,
        (State::SynRecv, Dir::Original) if flags & ACK != 0 => State::Established,
        // A new SYN after a close reopens the flow (a port reused from TIME_WAIT).
        (State::Close | State::TimeWait, Dir::Original) if flags & (SYN | ACK) == SYN => {
            *fins = 0;
            State::SynSent
        }
        (s, _) => s,
    }
}

/// One tracked flow.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flow<K> {
    /// The key of packets in the original direction, as they arrive.
    pub orig: K,
    /// The key of replies, as they arrive (after the translation the other way).
    pub reply: K,
    /// The tick the flow expires at.
    pub expires: u32,
    /// The tick of the wheel slot it sits in (not later than `expires`).
    queued: u32,
    next: u32,
    prev: u32,
    /// The NAT rule (or service) that made the flow, by id.
    pub rule: u16,
    pub state: State,
    /// A service flow's backend, by id (see [`FlowTable::set_backend`]).
    pub backend: u32,
    /// [`FIN_ORIGINAL`], [`FIN_REPLY`].
    pub flags: u8,
}

impl<K: FlowKey> Flow<K> {
    pub fn key(&self, dir: Dir) -> &K {
        match dir {
            Dir::Original => &self.orig,
            Dir::Reply => &self.reply,
        }
    }
}

/// The table is full: the new flow is not tracked (the packet is dropped and counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// Why [`FlowTable::insert`] refused a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    Full,
    /// One of the keys is already tracked (a mapping clash: pick another port).
    Exists,
}

/// A worker's flow table; see the module documentation.
pub struct FlowTable<K> {
    /// Flows ever used (ids below `flows.len()`); grows up to `cap` within its reserved
    /// capacity (never reallocated).
    flows: Vec<Flow<K>>,
    cap: usize,
    /// Ids freed since (a stack), taken before a fresh one.
    free: Vec<u32>,
    index: Vec<u64>,
    seed: u64,
    wheel: Vec<u32>,
    /// The next tick the wheel processes.
    pos: u32,
    /// The rest of the list an expiry pass detached from slot `pos` and has not finished
    /// (its budget ran out), if `resuming`.
    pending: u32,
    resuming: bool,
    len: usize,
}

impl<K: FlowKey> FlowTable<K> {
    /// A table for at most `capacity` flows (1..2^30), all of it allocated now. `seed`
    /// keys the hash (a per-process random value: flows cannot be aimed at one chain).
    /// `now`: the current tick.
    pub fn new(capacity: usize, seed: u64, now: u32) -> FlowTable<K> {
        let capacity = capacity.clamp(1, 1 << 28);
        // Four entries per flow (two keys: at most half full), any size: the home slot is
        // found by multiply-shift, not a mask, so 10M flows need not round up to 2^26.
        let slots = capacity * 4;
        let mut t = FlowTable {
            // Reserved, not written: the pages of flows never used are never touched (and
            // the zeroed index comes straight from the allocator), so a big table costs
            // memory only as it fills.
            flows: Vec::with_capacity(capacity),
            cap: capacity,
            free: Vec::with_capacity(capacity),
            index: vec![0; slots],
            seed,
            wheel: vec![NONE; WHEEL_SLOTS],
            pos: now,
            pending: NONE,
            resuming: false,
            len: 0,
        };
        // Random lookups over tens of MiB: huge pages, as the FIBs (fewer TLB misses).
        crate::dpdk::advise_hugepages(&t.index);
        crate::dpdk::advise_hugepages(t.flows.spare_capacity_mut());
        t
    }

    /// Commit the table's memory now (every flow slot and index page written once), so that
    /// no page fault lands on the packet path later: call it on the worker's own core
    /// before it forwards (the memory is then local to it).
    pub fn prefault(&mut self) {
        let used = self.flows.len() as u32;
        while self.flows.len() < self.cap {
            self.flows.push(Flow::default());
        }
        // Ids never used are free now (after those freed before, taken lowest first).
        let before: Vec<u32> = std::mem::take(&mut self.free);
        self.free.extend((used..self.cap as u32).rev());
        self.free.extend(before);
        for x in self.index.iter_mut().step_by(512) {
            *x = 0;
        }
    }

    /// Prefetch the index slot `key` starts at (a burst's lookups overlap their misses).
    #[inline(always)]
    pub fn prefetch_index(&self, key: &K) -> u32 {
        let h = self.hash_of(key);
        prefetch(&self.index[self.home(h)]);
        h
    }

    /// Prefetch the flow the first index slot of hash `h` points at, if its hash matches
    /// (after [`FlowTable::prefetch_index`] brought the slot in and gave `h`); false if the
    /// slot is empty (the key is not tracked).
    #[inline(always)]
    pub fn prefetch_flow(&self, h: u32) -> bool {
        let e = self.index[self.home(h)];
        if e != 0 && (e >> 32) as u32 == h {
            let id = (((e as u32) - 1) >> 1) as usize;
            if let Some(f) = self.flows.get(id) {
                prefetch(f);
            }
        }
        e != 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes the table holds when full: flows, free list, index and wheel.
    pub fn memory_bytes(&self) -> usize {
        self.cap * std::mem::size_of::<Flow<K>>()
            + self.free.capacity() * 4
            + self.index.len() * 8
            + self.wheel.len() * 4
    }

    /// The home slot of a hash.
    #[inline(always)]
    fn home(&self, h: u32) -> usize {
        ((u64::from(h) * self.index.len() as u64) >> 32) as usize
    }

    #[inline(always)]
    fn step(&self, i: usize) -> usize {
        if i + 1 == self.index.len() {
            0
        } else {
            i + 1
        }
    }

    #[inline]
    pub fn get(&self, id: u32) -> &Flow<K> {
        &self.flows[id as usize]
    }

    /// The flow and the direction `key` matched, if tracked.
    #[inline]
    pub fn lookup(&self, key: &K) -> Option<(u32, Dir)> {
        self.lookup_hashed(key, self.hash_of(key))
    }

    /// The hash [`FlowTable::lookup_hashed`] wants for `key`.
    #[inline(always)]
    pub fn hash_of(&self, key: &K) -> u32 {
        key.hash(self.seed) as u32
    }

    /// [`FlowTable::lookup`] with the key's hash already computed ([`FlowTable::hash_of`]).
    #[inline]
    pub fn lookup_hashed(&self, key: &K, h: u32) -> Option<(u32, Dir)> {
        let mut i = self.home(h);
        loop {
            let e = self.index[i];
            if e == 0 {
                return None;
            }
            if (e >> 32) as u32 == h {
                let r = (e as u32) - 1;
                let (id, dir) = (
                    r >> 1,
                    if r & 1 == 0 {
                        Dir::Original
                    } else {
                        Dir::Reply
                    },
                );
                if self.flows[id as usize].key(dir) == key {
                    return Some((id, dir));
                }
            }
            i = self.step(i);
        }
    }

    /// Track a new flow with keys `orig` and `reply`, due at `now + timeout`.
    pub fn insert(
        &mut self,
        orig: K,
        reply: K,
        state: State,
        rule: u16,
        now: u32,
        timeout: u32,
    ) -> Result<u32, InsertError> {
        if self.lookup(&orig).is_some() || self.lookup(&reply).is_some() {
            return Err(InsertError::Exists);
        }
        self.insert_new(orig, reply, state, rule, now, timeout)
    }

    /// [`FlowTable::insert`] for keys the caller has just looked up and not found (one
    /// lookup fewer per key): a key that is tracked after all would be indexed twice.
    pub fn insert_new(
        &mut self,
        orig: K,
        reply: K,
        state: State,
        rule: u16,
        now: u32,
        timeout: u32,
    ) -> Result<u32, InsertError> {
        let id = match self.free.pop() {
            Some(id) => id,
            None if self.flows.len() < self.cap => {
                // Within the reserved capacity: no reallocation.
                self.flows.push(Flow::default());
                (self.flows.len() - 1) as u32
            }
            None => return Err(InsertError::Full),
        };
        let expires = now.wrapping_add(timeout);
        self.flows[id as usize] = Flow {
            orig,
            reply,
            expires,
            queued: expires,
            next: NONE,
            prev: NONE,
            rule,
            state,
            backend: 0,
            flags: LIVE,
        };
        self.index_put(&orig, 2 * id + 1);
        if reply != orig {
            self.index_put(&reply, 2 * id + 2);
        }
        self.link(id);
        self.len += 1;
        Ok(id)
    }

    /// Move the flow's expiry to `now + timeout` (and its state).
    #[inline]
    pub fn refresh(&mut self, id: u32, state: State, flags: u8, now: u32, timeout: u32) {
        let expires = now.wrapping_add(timeout);
        let f = &mut self.flows[id as usize];
        f.state = state;
        f.flags = flags | LIVE;
        f.expires = expires;
        // Later: the wheel moves it on when it gets there. Earlier: move it now.
        if (expires.wrapping_sub(f.queued) as i32) < 0 {
            self.unlink(id);
            self.flows[id as usize].queued = expires;
            self.link(id);
        }
    }

    /// Name the backend of a service flow just inserted.
    #[inline]
    pub fn set_backend(&mut self, id: u32, backend: u32) {
        if let Some(f) = self.flows.get_mut(id as usize) {
            f.backend = backend;
        }
    }

    /// Stop tracking flow `id`.
    pub fn remove(&mut self, id: u32) {
        let f = self.flows[id as usize];
        self.unlink(id);
        self.index_take(&f.orig, 2 * id + 1);
        if f.reply != f.orig {
            self.index_take(&f.reply, 2 * id + 2);
        }
        self.flows[id as usize].flags = 0;
        self.free.push(id);
        self.len -= 1;
    }

    /// Whether `id` is a tracked flow (ids from [`FlowTable::iter`] or a lookup are).
    pub fn is_live(&self, id: u32) -> bool {
        self.flows
            .get(id as usize)
            .is_some_and(|f| f.flags & LIVE != 0)
    }

    /// Ids in use so far (every live id is below it).
    pub fn id_bound(&self) -> u32 {
        self.flows.len() as u32
    }

    /// Expire what is due by tick `now`, examining at most `budget` flows (due or moved
    /// on); `gone` sees each expired flow before it is removed. Returns how many expired.
    /// Call it every tick or so: what the budget leaves is taken up by the next call.
    pub fn expire(
        &mut self,
        now: u32,
        budget: usize,
        mut gone: impl FnMut(u32, &Flow<K>),
    ) -> usize {
        let mut examined = 0;
        let mut expired = 0;
        // Behind by more than a turn (a long stall): one turn visits every slot, at ticks
        // no earlier than what is due, so the ticks before it need no visit.
        if !self.resuming
            && now.wrapping_sub(self.pos) as usize >= WHEEL_SLOTS
            && (now.wrapping_sub(self.pos) as i32) > 0
        {
            self.pos = now.wrapping_sub(WHEEL_SLOTS as u32 - 1);
        }
        while (now.wrapping_sub(self.pos) as i32) >= 0 {
            let slot = self.pos as usize & (WHEEL_SLOTS - 1);
            if !self.resuming {
                // Detach the slot's list. A flow moved on goes back into the slot of its
                // tick: never this pass's slot before a whole turn (it is not due).
                self.pending = std::mem::replace(&mut self.wheel[slot], NONE);
                self.resuming = true;
            }
            while self.pending != NONE {
                if examined == budget {
                    return expired;
                }
                examined += 1;
                let id = self.pending;
                let next = self.flows[id as usize].next;
                self.pending = next;
                if next != NONE {
                    self.flows[next as usize].prev = NONE;
                }
                let f = &mut self.flows[id as usize];
                f.next = NONE;
                f.prev = NONE;
                if (now.wrapping_sub(f.expires) as i32) >= 0 {
                    let copy = *f;
                    gone(id, &copy);
                    self.index_take(&copy.orig, 2 * id + 1);
                    if copy.reply != copy.orig {
                        self.index_take(&copy.reply, 2 * id + 2);
                    }
                    self.flows[id as usize].flags = 0;
                    self.free.push(id);
                    self.len -= 1;
                    expired += 1;
                } else {
                    f.queued = f.expires;
                    self.link(id);
                }
            }
            self.resuming = false;
            self.pos = self.pos.wrapping_add(1);
        }
        expired
    }

    /// Every tracked flow (for operator views; not for the hot path).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Flow<K>)> + '_ {
        self.flows
            .iter()
            .enumerate()
            .filter(|(_, f)| f.flags & LIVE != 0)
            .map(|(i, f)| (i as u32, f))
    }

    fn link(&mut self, id: u32) {
        // A tick the wheel has passed (or is passing) would wait a whole turn: the next
        // tick it processes instead.
        let first = if self.resuming {
            self.pos.wrapping_add(1)
        } else {
            self.pos
        };
        let q = &mut self.flows[id as usize].queued;
        if (q.wrapping_sub(first) as i32) < 0 {
            *q = first;
        }
        let slot = *q as usize & (WHEEL_SLOTS - 1);
        let head = self.wheel[slot];
        {
            let f = &mut self.flows[id as usize];
            f.next = head;
            f.prev = NONE;
        }
        if head != NONE {
            self.flows[head as usize].prev = id;
        }
        self.wheel[slot] = id;
    }

    fn unlink(&mut self, id: u32) {
        let f = self.flows[id as usize];
        if f.prev != NONE {
            self.flows[f.prev as usize].next = f.next;
        } else if self.pending == id {
            // The head of the list an expiry pass has detached and not finished.
            self.pending = f.next;
        } else {
            let slot = f.queued as usize & (WHEEL_SLOTS - 1);
            if self.wheel[slot] == id {
                self.wheel[slot] = f.next;
            }
        }
        if f.next != NONE {
            self.flows[f.next as usize].prev = f.prev;
        }
        let f = &mut self.flows[id as usize];
        f.next = NONE;
        f.prev = NONE;
    }

    fn index_put(&mut self, key: &K, value: u32) {
        let h = key.hash(self.seed) as u32;
        let mut i = self.home(h);
        while self.index[i] != 0 {
            i = self.step(i);
        }
        self.index[i] = (u64::from(h) << 32) | u64::from(value);
    }

    /// Remove the entry `value` for `key`, shifting the entries after it back.
    fn index_take(&mut self, key: &K, value: u32) {
        let h = key.hash(self.seed) as u32;
        let mut i = self.home(h);
        loop {
            let e = self.index[i];
            if e == 0 {
                return; // not there (cannot happen for a tracked flow)
            }
            if e as u32 == value {
                break;
            }
            i = self.step(i);
        }
        // Backward shift: an entry may fill the hole if its home is not in (hole, j].
        let mut hole = i;
        let mut j = i;
        loop {
            j = self.step(j);
            let e = self.index[j];
            if e == 0 {
                break;
            }
            let home = self.home((e >> 32) as u32);
            let between = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !between {
                self.index[hole] = e;
                hole = j;
            }
        }
        self.index[hole] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn k4(n: u32) -> Key4 {
        Key4 {
            src: 0x0a00_0000 | n,
            dst: 0x0a01_0001,
            sport: (n % 60000) as u16 + 1024,
            dport: 80,
            proto: 6,
        }
    }

    fn reply_of(k: &Key4) -> Key4 {
        Key4 {
            src: k.dst,
            dst: 0x0a02_0001,
            sport: k.dport,
            dport: k.sport,
            proto: k.proto,
        }
    }

    #[test]
    fn the_memory_bound_holds() {
        let t: FlowTable<Key4> = FlowTable::new(1 << 20, 1, 0);
        let per_flow = t.memory_bytes() as f64 / t.capacity() as f64;
        assert!(per_flow <= 96.0, "{per_flow} bytes per IPv4 flow");
        assert!(std::mem::size_of::<Flow<Key4>>() <= 56);
    }

    #[test]
    fn both_directions_find_the_flow_and_a_full_table_refuses_new_ones() {
        let mut t: FlowTable<Key4> = FlowTable::new(2, 7, 0);
        let a = t
            .insert(k4(1), reply_of(&k4(1)), State::SynSent, 3, 0, 10)
            .unwrap();
        assert_eq!(t.lookup(&k4(1)), Some((a, Dir::Original)));
        assert_eq!(t.lookup(&reply_of(&k4(1))), Some((a, Dir::Reply)));
        assert_eq!(t.get(a).rule, 3);
        assert_eq!(
            t.insert(reply_of(&k4(1)), k4(9), State::SynSent, 0, 0, 10),
            Err(InsertError::Exists)
        );
        t.insert(k4(2), reply_of(&k4(2)), State::SynSent, 0, 0, 10)
            .unwrap();
        assert_eq!(
            t.insert(k4(3), reply_of(&k4(3)), State::SynSent, 0, 0, 10),
            Err(InsertError::Full)
        );
        t.remove(a);
        assert_eq!(t.lookup(&k4(1)), None);
        assert!(t
            .insert(k4(3), reply_of(&k4(3)), State::SynSent, 0, 0, 10)
            .is_ok());
    }

    #[test]
    fn expiry_is_on_time_lazy_for_later_and_bounded_per_call() {
        let mut t: FlowTable<Key4> = FlowTable::new(100, 7, 0);
        for n in 0..50 {
            t.insert(k4(n), reply_of(&k4(n)), State::Unreplied, 0, 0, 10)
                .unwrap();
        }
        // Refreshed to 20000 ticks: far past the wheel (4096); it must not expire early.
        let (keep, _) = t.lookup(&k4(0)).unwrap();
        t.refresh(keep, State::Replied, 0, 5, 20_000);
        // One brought earlier than its slot: moved at once.
        let (early, _) = t.lookup(&k4(1)).unwrap();
        t.refresh(early, State::Close, 0, 2, 1);
        assert_eq!(t.expire(3, 1000, |_, _| {}), 1, "due at 3");
        assert_eq!(t.lookup(&k4(1)), None);
        // A budget of 10 takes 10 at a time, and the next call goes on.
        assert_eq!(t.expire(10, 10, |_, _| {}), 10);
        assert_eq!(t.expire(10, 10, |_, _| {}), 10);
        let mut seen = 0;
        t.expire(10, 1000, |_, f| {
            assert_ne!(f.orig, k4(0));
            seen += 1;
        });
        assert_eq!(seen, 28);
        assert_eq!(t.len(), 1);
        assert_eq!(t.expire(20_004, 100_000, |_, _| {}), 0);
        assert_eq!(t.expire(20_005, 100_000, |_, _| {}), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_long_stall_expires_what_is_due_and_keeps_the_rest() {
        let mut t: FlowTable<Key4> = FlowTable::new(100, 7, 0);
        for n in 0..10 {
            t.insert(
                k4(n),
                reply_of(&k4(n)),
                State::Unreplied,
                0,
                0,
                50 + n * 1000,
            )
            .unwrap();
        }
        let far = t
            .insert(k4(99), reply_of(&k4(99)), State::Unreplied, 0, 0, 1_000_000)
            .unwrap();
        // 100,000 ticks later at once (a pass visits one turn of slots, not every tick):
        // the due ones go, the far one stays until its tick.
        assert_eq!(t.expire(100_000, 1000, |_, _| {}), 10);
        assert_eq!(t.lookup(&k4(99)), Some((far, Dir::Original)));
        assert_eq!(t.expire(999_999, 1000, |_, _| {}), 0);
        assert_eq!(t.expire(1_000_000, 1000, |_, _| {}), 1);
    }

    #[test]
    fn tcp_states() {
        use tcp_flags::*;
        let mut fins = 0;
        let mut s = State::SynSent;
        s = tcp_next(s, Dir::Reply, SYN | ACK, &mut fins);
        assert_eq!(s, State::SynRecv);
        s = tcp_next(s, Dir::Original, ACK, &mut fins);
        assert_eq!(s, State::Established);
        s = tcp_next(s, Dir::Original, ACK, &mut fins);
        assert_eq!(s, State::Established);
        s = tcp_next(s, Dir::Reply, FIN | ACK, &mut fins);
        assert_eq!((s, fins), (State::FinWait, FIN_REPLY));
        s = tcp_next(s, Dir::Original, FIN | ACK, &mut fins);
        assert_eq!(s, State::TimeWait);
        s = tcp_next(s, Dir::Original, SYN, &mut fins);
        assert_eq!((s, fins), (State::SynSent, 0), "a reused port opens again");
        assert_eq!(
            tcp_next(State::Established, Dir::Reply, RST, &mut fins),
            State::Close
        );
        let t = Timeouts::rfc7857(1);
        assert_eq!(t.of(6, State::Established), 7440);
        assert_eq!(t.of(6, State::FinWait), 240);
        assert_eq!(t.of(17, State::Replied), 300);
        assert_eq!(t.of(1, State::Unreplied), 60);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u32, u32),
        Remove(usize),
        Refresh(usize, u32),
        Advance(u32, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..200u32, 1..300u32).prop_map(|(n, t)| Op::Insert(n, t)),
            1 => any::<usize>().prop_map(Op::Remove),
            2 => (any::<usize>(), 0..9000u32).prop_map(|(i, t)| Op::Refresh(i, t)),
            2 => (1..400u32, 1..50usize).prop_map(|(d, b)| Op::Advance(d, b)),
        ]
    }

    proptest! {
        /// Random inserts, removals, refreshes and expiry passes against a map: the same
        /// flows, found both ways; nothing expires early; everything due goes once the
        /// budget allows.
        #[test]
        fn the_table_behaves_as_a_map_with_deadlines(
            ops in proptest::collection::vec(op(), 1..300),
            seed in any::<u64>(),
        ) {
            let mut t: FlowTable<Key4> = FlowTable::new(64, seed, 0);
            let mut model: HashMap<Key4, (Key4, u32)> = HashMap::new(); // orig -> (reply, expires)
            let mut now = 0u32;
            for op in ops {
                match op {
                    Op::Insert(n, timeout) => {
                        let (o, r) = (k4(n), reply_of(&k4(n)));
                        let res = t.insert(o, r, State::Unreplied, 0, now, timeout);
                        if model.contains_key(&o) {
                            prop_assert_eq!(res, Err(InsertError::Exists));
                        } else if model.len() == 64 {
                            prop_assert_eq!(res, Err(InsertError::Full));
                        } else {
                            prop_assert!(res.is_ok());
                            model.insert(o, (r, now + timeout));
                        }
                    }
                    Op::Remove(i) if !model.is_empty() => {
                        let o = *model.keys().nth(i % model.len()).unwrap();
                        let (id, _) = t.lookup(&o).unwrap();
                        t.remove(id);
                        model.remove(&o);
                    }
                    Op::Refresh(i, timeout) if !model.is_empty() => {
                        let o = *model.keys().nth(i % model.len()).unwrap();
                        let (id, _) = t.lookup(&o).unwrap();
                        t.refresh(id, State::Replied, 0, now, timeout);
                        model.get_mut(&o).unwrap().1 = now + timeout;
                    }
                    Op::Advance(d, budget) => {
                        now += d;
                        let mut gone = Vec::new();
                        // Enough calls for the budget to get through everything due.
                        for _ in 0..(64 * 3 / budget + 2) {
                            t.expire(now, budget, |_, f| gone.push((f.orig, f.expires)));
                        }
                        for (o, exp) in gone {
                            prop_assert!(exp <= now, "expired early");
                            prop_assert_eq!(model.remove(&o).map(|m| m.1), Some(exp));
                        }
                        prop_assert!(model.values().all(|m| m.1 > now), "something due was left");
                    }
                    _ => {}
                }
                prop_assert_eq!(t.len(), model.len());
                for (o, (r, _)) in &model {
                    let (id, d) = t.lookup(o).unwrap();
                    prop_assert_eq!(d, Dir::Original);
                    prop_assert_eq!(t.lookup(r), Some((id, Dir::Reply)));
                }
            }
            prop_assert_eq!(t.iter().count(), model.len());
        }
    }
}
