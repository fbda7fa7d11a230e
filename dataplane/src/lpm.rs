//! Longest-prefix-match forwarding tables (FIB) for IPv4 ([`Lpm4`]) and IPv6 ([`Lpm6`]).
//!
//! Both tables are built once from a complete route list and are immutable afterwards, so a
//! worker can share one through an `Arc` and a route update is "build a new table, swap the
//! pointer". They map an address to a [`NextHop`]: an index into a next-hop table owned by the
//! caller.
//!
//! # Layout
//!
//! * [`Lpm4`] is DIR-24-8, as in DPDK's `rte_lpm`: a first table `tbl24` of 2^24 entries
//!   indexed by the top 24 bits of the address, and "tbl8" groups of 256 entries, indexed by
//!   the last 8 bits, for the /24 blocks that hold a prefix longer than /24. A hit on a
//!   prefix of length ≤ 24 costs one load, a longer one two.
//! * [`Lpm6`] is a multibit trie of the same kind: a root table of 2^[`V6_ROOT_BITS`] entries
//!   indexed by the top bits of the address, then one 256-entry group per 8-bit stride. A
//!   prefix of length `l` is resolved in `1 + ceil((l - V6_ROOT_BITS) / 8)` loads.
//!
//! All groups of a table live in one `Vec<u32>`: group `g` is `tbl8[g * 256..][..256]`.
//!
//! # Entry encoding
//!
//! Every entry, in the root table or in a group, is one `u32`:
//!
//! ```text
//!  31     30    29..24   23 ........................ 0
//! VALID  EXT   (zero)   payload (24 bits)
//! ```
//!
//! * `0` — no route covers this block.
//! * `VALID | nh` — the longest prefix covering the whole block has next hop `nh`.
//! * `EXT | g` — the block is split: look at entry `addr_bits` of group `g` at the next level.
//!
//! So next hops fit in 24 bits ([`MAX_NEXT_HOP`]) and there are at most 2^24 groups
//! ([`MAX_TBL8_GROUPS`]).
//!
//! # Build: painting in ascending prefix length
//!
//! `build` validates and masks the routes, removes duplicate prefixes (the last one in the
//! input wins), sorts them by prefix length ascending and "paints" them one after the other:
//! a route of length `l` overwrites every entry of the range of entries it covers at the
//! level where it ends (`2^(level_end - l)` consecutive entries), creating on the way down the
//! groups it needs. A new group is filled with the value of the entry that it replaces.
//!
//! There is no per-entry depth bookkeeping (unlike `rte_lpm`, which has to support
//! incremental adds and deletes); the order alone makes the result correct:
//!
//! *Claim.* After painting all routes, the entry that an address `a` resolves to holds the
//! next hop of the longest route that matches `a` (or is invalid if none does).
//!
//! *Proof.* Consider the entries that `a` walks through. (1) A group is only ever created by
//! a route that is longer than the depth `d` its parent entry stands for, so by the time it
//! is created every route of length ≤ `d` has already been painted (ascending order), and the
//! parent entry holds its final value for lengths ≤ `d`: the longest route of length ≤ `d`
//! covering the parent's block. Copying that value into all 256 children makes each child
//! correct for all routes of length ≤ `d`. (2) A route of length `l` paints exactly the
//! entries, at the level where `l` ends, whose blocks lie inside the prefix: precisely the
//! addresses it matches. It never meets an `EXT` entry there: an `EXT` entry at that level is
//! only created by a route longer than the level's end, which comes later in the order. (3)
//! The routes matching `a` are nested prefixes of `a` with distinct lengths (duplicates were
//! removed), and they are painted shortest first, so the last one to write the entry that
//! `a` resolves to, and hence its final value, is the longest. A route painted into a parent
//! entry before a group replaced it reaches the children by (1); after the group exists,
//! every later route matching `a` is longer than the parent's depth and paints below it. ∎
//!
//! For [`Lpm4`] the build is done in two explicit phases: every route of length ≤ 24 is
//! painted into `tbl24` first (no group exists yet, so no entry can be `EXT`), then the
//! groups are created, one per /24 block that holds a longer route, in address order and
//! initialised from the now final `tbl24` entry, and the long routes are painted into them.
//!
//! # Lookups
//!
//! [`Lpm4::lookup`] and [`Lpm6::lookup`] never panic: every index into a root table is in
//! range by its type, and group reads go through `get`, which only a corrupted table could
//! make fail (it then reads as "no route"). The bulk variants process a burst in chunks,
//! issuing the independent first-level loads of a chunk before resolving it (and, on x86_64,
//! prefetching the next chunk), which keeps several cache misses in flight.

use std::fmt;

/// Index into a next-hop table owned by the caller. At most [`MAX_NEXT_HOP`].
pub type NextHop = u32;

/// The largest next hop a table can store (24 bits).
pub const MAX_NEXT_HOP: NextHop = (1 << 24) - 1;

/// The largest number of 256-entry groups a table can address (24 bits of group index).
pub const MAX_TBL8_GROUPS: usize = 1 << 24;

/// Number of address bits that index the IPv6 root table.
pub const V6_ROOT_BITS: u32 = 16;

/// Why a table could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LpmError {
    /// A prefix length is over the address width (32 for IPv4, 128 for IPv6).
    #[error("route {index}: prefix length {len} is over the maximum {max}")]
    PrefixTooLong {
        /// Position of the route in the input slice.
        index: usize,
        /// The offending prefix length.
        len: u8,
        /// 32 or 128.
        max: u8,
    },
    /// A next hop does not fit in 24 bits.
    #[error("route {index}: next hop {next_hop} is over the maximum {max}")]
    NextHopTooLarge {
        /// Position of the route in the input slice.
        index: usize,
        /// The offending next hop.
        next_hop: NextHop,
        /// Always [`MAX_NEXT_HOP`].
        max: NextHop,
    },
    /// The routes need more 256-entry groups than allowed.
    #[error("the routes need more than {max} tbl8 groups")]
    TooManyTbl8Groups {
        /// The limit that was hit.
        max: usize,
    },
}

const VALID: u32 = 1 << 31;
const EXT: u32 = 1 << 30;
const PAYLOAD: u32 = (1 << 24) - 1;
const GROUP_BITS: u32 = 8;
const GROUP_SIZE: usize = 1 << GROUP_BITS;

const TBL24_BITS: u32 = 24;
const TBL24_ENTRIES: usize = 1 << TBL24_BITS;
const V6_ROOT_ENTRIES: usize = 1 << V6_ROOT_BITS;
/// Number of group levels below the IPv6 root.
const V6_GROUP_LEVELS: u32 = (128 - V6_ROOT_BITS) / GROUP_BITS;

/// Addresses handled per step by the bulk lookups.
const BULK_CHUNK: usize = 16;

// The IPv6 strides must tile 128 bits exactly.
const _: () = assert!(V6_ROOT_BITS % GROUP_BITS == 0 && V6_ROOT_BITS <= 24);

/// Decode a resolved (non-`EXT`) entry.
#[inline(always)]
fn decode(e: u32) -> Option<NextHop> {
    if e & VALID != 0 {
        Some(e & PAYLOAD)
    } else {
        None
    }
}

/// Index of entry `low` (0..256) of the group an `EXT` entry points to.
#[inline(always)]
fn group_index(e: u32, low: usize) -> usize {
    (((e & PAYLOAD) as usize) << GROUP_BITS) | low
}

/// Hint the CPU to bring the cache line of `slot` into L1.
#[inline(always)]
fn prefetch(slot: &u32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is only a hint: it never faults nor reads into the program, and
    // the pointer comes from a live reference anyway. SSE is part of the x86_64 baseline.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (slot as *const u32).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

/// A zeroed (all "no route") table of `N` entries, allocated lazily by the OS.
fn zeroed_table<const N: usize>() -> Box<[u32; N]> {
    match vec![0u32; N].into_boxed_slice().try_into() {
        Ok(table) => table,
        // The vector has exactly N elements.
        Err(_) => unreachable!("zeroed table of the wrong length"),
    }
}

/// Append a group whose 256 entries are `fill`; returns its `EXT` entry.
fn new_group(tbl8: &mut Vec<u32>, fill: u32, max_groups: usize) -> Result<u32, LpmError> {
    let g = tbl8.len() / GROUP_SIZE;
    if g >= max_groups {
        return Err(LpmError::TooManyTbl8Groups { max: max_groups });
    }
    tbl8.resize(tbl8.len() + GROUP_SIZE, fill);
    // g < max_groups <= 2^24, so it fits in the payload.
    Ok(EXT | g as u32)
}

/// Keep one route per key in a vector sorted stably by key: the last one of each run, i.e.
/// the one that came last in the input.
fn dedup_last_wins<K: PartialEq + Copy>(routes: &mut Vec<(K, NextHop)>) {
    // `dedup_by` passes (later, earlier-kept) and drops `later` on `true`; moving its next hop
    // into the kept element makes the last duplicate win.
    routes.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 = later.1;
            true
        } else {
            false
        }
    });
}

fn check_next_hop(index: usize, next_hop: NextHop) -> Result<(), LpmError> {
    if next_hop > MAX_NEXT_HOP {
        return Err(LpmError::NextHopTooLarge {
            index,
            next_hop,
            max: MAX_NEXT_HOP,
        });
    }
    Ok(())
}

/// IPv4 longest-prefix-match table (DIR-24-8). Immutable once built; `Send + Sync`.
pub struct Lpm4 {
    tbl24: Box<[u32; TBL24_ENTRIES]>,
    tbl8: Vec<u32>,
    prefixes: usize,
}

impl Lpm4 {
    /// Build from (address in host byte order, prefix length 0..=32, next hop). Bits past the
    /// prefix length are ignored. Duplicate prefixes: the last one in the slice wins.
    pub fn build(routes: &[(u32, u8, NextHop)]) -> Result<Lpm4, LpmError> {
        Self::build_with_max_tbl8(routes, MAX_TBL8_GROUPS)
    }

    /// Like [`Lpm4::build`], but fail with [`LpmError::TooManyTbl8Groups`] rather than use
    /// more than `max_groups` groups (1 KiB each; one per /24 holding a longer prefix).
    pub fn build_with_max_tbl8(
        routes: &[(u32, u8, NextHop)],
        max_groups: usize,
    ) -> Result<Lpm4, LpmError> {
        let max_groups = max_groups.min(MAX_TBL8_GROUPS);

        // Validate and normalise into (len << 32 | masked address, next hop): sorting on that
        // key orders by length, then address.
        let mut rs: Vec<(u64, NextHop)> = Vec::with_capacity(routes.len());
        for (index, &(addr, len, next_hop)) in routes.iter().enumerate() {
            if len > 32 {
                return Err(LpmError::PrefixTooLong { index, len, max: 32 });
            }
            check_next_hop(index, next_hop)?;
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            rs.push(((u64::from(len) << 32) | u64::from(addr & mask), next_hop));
        }
        // Stable: duplicates stay in input order, so the last of a run is the last given.
        rs.sort_by_key(|r| r.0);
        dedup_last_wins(&mut rs);

        let split = rs.partition_point(|r| (r.0 >> 32) <= u64::from(TBL24_BITS));
        let (short, long) = rs.split_at(split);

        // Phase 1: prefixes of length <= 24, ascending, straight into tbl24.
        let mut tbl24 = zeroed_table::<TBL24_ENTRIES>();
        for &(key, next_hop) in short {
            let len = (key >> 32) as u32;
            let start = (key as u32 >> 8) as usize;
            let count = 1usize << (TBL24_BITS - len);
            tbl24[start..start + count].fill(VALID | next_hop);
        }

        // Phase 2a: one group per /24 holding a longer prefix, in address order, initialised
        // from the (final) tbl24 entry it replaces.
        let mut blocks: Vec<u32> = long.iter().map(|r| r.0 as u32 >> 8).collect();
        blocks.sort_unstable();
        blocks.dedup();
        if blocks.len() > max_groups {
            return Err(LpmError::TooManyTbl8Groups { max: max_groups });
        }
        let mut tbl8: Vec<u32> = Vec::with_capacity(blocks.len() * GROUP_SIZE);
        for &block in &blocks {
            let slot = &mut tbl24[block as usize];
            *slot = new_group(&mut tbl8, *slot, max_groups)?;
        }

        // Phase 2b: prefixes of length 25..=32, ascending, into their group.
        for &(key, next_hop) in long {
            let len = (key >> 32) as u32;
            let addr = key as u32;
            let e = tbl24[(addr >> 8) as usize];
            debug_assert!(e & EXT != 0, "phase 2a created this group");
            let start = group_index(e, (addr & 0xff) as usize);
            let count = 1usize << (32 - len);
            tbl8[start..start + count].fill(VALID | next_hop);
        }

        Ok(Lpm4 {
            tbl24,
            tbl8,
            prefixes: rs.len(),
        })
    }

    /// The next hop of the longest prefix matching `addr` (host byte order).
    #[inline]
    pub fn lookup(&self, addr: u32) -> Option<NextHop> {
        let mut e = self.tbl24[(addr >> 8) as usize];
        if e & EXT != 0 {
            e = self.tbl8_entry(e, addr);
        }
        decode(e)
    }

    #[inline(always)]
    fn tbl8_entry(&self, e: u32, addr: u32) -> u32 {
        self.tbl8
            .get(group_index(e, (addr & 0xff) as usize))
            .copied()
            .unwrap_or(0)
    }

    /// Look up a burst: `out[i] = lookup(addrs[i])` for `i < min(addrs.len(), out.len())`.
    pub fn lookup_bulk(&self, addrs: &[u32], out: &mut [Option<NextHop>]) {
        let n = addrs.len().min(out.len());
        let (addrs, out) = (&addrs[..n], &mut out[..n]);
        let mut a_chunks = addrs.chunks_exact(BULK_CHUNK);
        let mut o_chunks = out.chunks_exact_mut(BULK_CHUNK);
        let mut next = a_chunks.clone();
        next.next();
        for (a, o) in (&mut a_chunks).zip(&mut o_chunks) {
            // Prefetch the tbl24 lines of the next chunk while this one resolves.
            if let Some(na) = next.next() {
                for &x in na {
                    prefetch(&self.tbl24[(x >> 8) as usize]);
                }
            }
            let mut e = [0u32; BULK_CHUNK];
            for (e, &x) in e.iter_mut().zip(a) {
                *e = self.tbl24[(x >> 8) as usize];
            }
            for ((o, &e), &x) in o.iter_mut().zip(&e).zip(a) {
                let e = if e & EXT != 0 {
                    self.tbl8_entry(e, x)
                } else {
                    e
                };
                *o = decode(e);
            }
        }
        for (o, &x) in o_chunks.into_remainder().iter_mut().zip(a_chunks.remainder()) {
            *o = self.lookup(x);
        }
    }

    /// Bytes used by the table (both levels and the struct itself).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + std::mem::size_of_val(&*self.tbl24)
            + self.tbl8.capacity() * std::mem::size_of::<u32>()
    }

    /// Number of distinct prefixes in the table.
    pub fn len(&self) -> usize {
        self.prefixes
    }

    /// Whether the table holds no prefix at all.
    pub fn is_empty(&self) -> bool {
        self.prefixes == 0
    }

    /// Number of 256-entry groups (one per /24 holding a prefix longer than /24).
    pub fn tbl8_groups(&self) -> usize {
        self.tbl8.len() / GROUP_SIZE
    }
}

impl fmt::Debug for Lpm4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lpm4")
            .field("prefixes", &self.prefixes)
            .field("tbl8_groups", &self.tbl8_groups())
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

/// IPv6 longest-prefix-match table (multibit trie, 16-bit root then 8-bit strides).
/// Immutable once built; `Send + Sync`.
pub struct Lpm6 {
    root: Box<[u32; V6_ROOT_ENTRIES]>,
    tbl8: Vec<u32>,
    prefixes: usize,
}

impl Lpm6 {
    /// Build from (address as u128 in host order i.e. `u128::from_be_bytes(octets)`, prefix
    /// length 0..=128, next hop). Bits past the prefix length are ignored. Duplicate
    /// prefixes: the last one in the slice wins.
    pub fn build(routes: &[(u128, u8, NextHop)]) -> Result<Lpm6, LpmError> {
        Self::build_with_max_tbl8(routes, MAX_TBL8_GROUPS)
    }

    /// Like [`Lpm6::build`], but fail with [`LpmError::TooManyTbl8Groups`] rather than use
    /// more than `max_groups` groups (1 KiB each).
    pub fn build_with_max_tbl8(
        routes: &[(u128, u8, NextHop)],
        max_groups: usize,
    ) -> Result<Lpm6, LpmError> {
        let max_groups = max_groups.min(MAX_TBL8_GROUPS);

        let mut rs: Vec<((u8, u128), NextHop)> = Vec::with_capacity(routes.len());
        for (index, &(addr, len, next_hop)) in routes.iter().enumerate() {
            if len > 128 {
                return Err(LpmError::PrefixTooLong {
                    index,
                    len,
                    max: 128,
                });
            }
            check_next_hop(index, next_hop)?;
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            rs.push(((len, addr & mask), next_hop));
        }
        rs.sort_by_key(|r| r.0);
        dedup_last_wins(&mut rs);

        let mut root = zeroed_table::<V6_ROOT_ENTRIES>();
        let mut tbl8: Vec<u32> = Vec::new();
        for &((len, addr), next_hop) in &rs {
            let len = u32::from(len);
            let value = VALID | next_hop;
            let top = (addr >> (128 - V6_ROOT_BITS)) as usize;
            if len <= V6_ROOT_BITS {
                // Ascending order: no group exists yet, so no root entry is EXT.
                let count = 1usize << (V6_ROOT_BITS - len);
                root[top..top + count].fill(value);
                continue;
            }
            // Walk down, creating groups initialised from the entry they replace.
            let slot = &mut root[top];
            if *slot & EXT == 0 {
                *slot = new_group(&mut tbl8, *slot, max_groups)?;
            }
            let mut e = *slot;
            // Bits of the address consumed so far; the current group holds the next 8.
            let mut depth = V6_ROOT_BITS;
            while len > depth + GROUP_BITS {
                let i = group_index(e, (addr >> (120 - depth)) as u8 as usize);
                let parent = tbl8[i];
                if parent & EXT == 0 {
                    tbl8[i] = new_group(&mut tbl8, parent, max_groups)?;
                }
                e = tbl8[i];
                depth += GROUP_BITS;
            }
            // depth < len <= depth + 8: paint the entries of this group the prefix covers.
            let start = group_index(e, (addr >> (120 - depth)) as u8 as usize);
            let count = 1usize << (depth + GROUP_BITS - len);
            tbl8[start..start + count].fill(value);
        }
        tbl8.shrink_to_fit();

        Ok(Lpm6 {
            root,
            tbl8,
            prefixes: rs.len(),
        })
    }

    /// The next hop of the longest prefix matching `addr` (`u128::from_be_bytes(octets)`).
    #[inline]
    pub fn lookup(&self, addr: u128) -> Option<NextHop> {
        let mut e = self.root[(addr >> (128 - V6_ROOT_BITS)) as usize];
        let mut shift = 128 - V6_ROOT_BITS;
        // `shift >= 8` always holds for an EXT entry of a well-formed table; the bound keeps
        // the loop finite and the shift in range whatever the table holds.
        while e & EXT != 0 && shift >= GROUP_BITS {
            shift -= GROUP_BITS;
            e = self.group_entry(e, addr, shift);
        }
        decode(e)
    }

    #[inline(always)]
    fn group_entry(&self, e: u32, addr: u128, shift: u32) -> u32 {
        self.tbl8
            .get(group_index(e, (addr >> shift) as u8 as usize))
            .copied()
            .unwrap_or(0)
    }

    /// Look up a burst: `out[i] = lookup(addrs[i])` for `i < min(addrs.len(), out.len())`.
    pub fn lookup_bulk(&self, addrs: &[u128], out: &mut [Option<NextHop>]) {
        let n = addrs.len().min(out.len());
        let (addrs, out) = (&addrs[..n], &mut out[..n]);
        let mut a_chunks = addrs.chunks_exact(BULK_CHUNK);
        let mut o_chunks = out.chunks_exact_mut(BULK_CHUNK);
        for (a, o) in (&mut a_chunks).zip(&mut o_chunks) {
            // Walk the chunk level by level so the loads of one level are independent.
            let mut e = [0u32; BULK_CHUNK];
            for (e, &x) in e.iter_mut().zip(a) {
                *e = self.root[(x >> (128 - V6_ROOT_BITS)) as usize];
            }
            let mut shift = 128 - V6_ROOT_BITS;
            for _ in 0..V6_GROUP_LEVELS {
                if e.iter().all(|&e| e & EXT == 0) {
                    break;
                }
                shift -= GROUP_BITS;
                for (e, &x) in e.iter_mut().zip(a) {
                    if *e & EXT != 0 {
                        *e = self.group_entry(*e, x, shift);
                    }
                }
            }
            for (o, &e) in o.iter_mut().zip(&e) {
                *o = decode(e);
            }
        }
        for (o, &x) in o_chunks.into_remainder().iter_mut().zip(a_chunks.remainder()) {
            *o = self.lookup(x);
        }
    }

    /// Bytes used by the table (root, groups and the struct itself).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + std::mem::size_of_val(&*self.root)
            + self.tbl8.capacity() * std::mem::size_of::<u32>()
    }

    /// Number of distinct prefixes in the table.
    pub fn len(&self) -> usize {
        self.prefixes
    }

    /// Whether the table holds no prefix at all.
    pub fn is_empty(&self) -> bool {
        self.prefixes == 0
    }

    /// Number of 256-entry groups.
    pub fn tbl8_groups(&self) -> usize {
        self.tbl8.len() / GROUP_SIZE
    }
}

impl fmt::Debug for Lpm6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lpm6")
            .field("prefixes", &self.prefixes)
            .field("tbl8_groups", &self.tbl8_groups())
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}
