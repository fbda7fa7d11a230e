//! Longest-prefix-match forwarding tables (FIB) for IPv4 ([`Lpm4`]) and IPv6 ([`Lpm6`]).
//!
//! Both tables are built from a complete route list, and may then be changed one prefix at a
//! time while no worker reads them ("incremental updates" below): a worker shares a table
//! through an `Arc`, and the control side updates a copy that no worker holds, then swaps. They map an address to a [`NextHop`]: an index into a next-hop table owned by the
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
//!   prefix of length `l > V6_ROOT_BITS` is resolved in `1 + ceil((l - V6_ROOT_BITS) / 8)`
//!   loads, a shorter one in one.
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
//! make fail (it then reads as "no route"). The bulk variants work in small chunks, issuing
//! the independent loads of a chunk back to back before resolving them (IPv6: level by
//! level across the chunk), so a mispredicted branch cannot hold back the other misses.
//! Software prefetching of the next chunk was measured and did not help (the loads-first
//! chunking already keeps as many misses in flight), so this module has no `unsafe`.
//!
//! The IPv6 root has 2^24 entries (64 MiB) rather than 2^16: it saves one dependent load for
//! every prefix longer than /16 (a /48 takes 4 loads instead of 5); on a 200k-route table it
//! measured 35–45% more lookups per second on 4 KiB pages (5–20% on huge pages) and needed
//! slightly fewer groups.
//!
//! Both first-level tables are zero-allocated, so the OS maps them lazily; on a busy
//! dataplane they are better on huge pages: see `backing_memory`.

use std::fmt;

/// Index into a next-hop table owned by the caller. At most [`MAX_NEXT_HOP`].
pub type NextHop = u32;

/// The largest next hop a table can store (24 bits).
pub const MAX_NEXT_HOP: NextHop = (1 << 24) - 1;

/// The largest number of 256-entry groups a table can address (24 bits of group index).
pub const MAX_TBL8_GROUPS: usize = 1 << 24;

/// Number of address bits that index the IPv6 root table.
pub const V6_ROOT_BITS: u32 = 24;

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

/// Addresses handled per step by [`Lpm4::lookup_bulk`] (measured best of 4/8/16/32).
const V4_BULK_CHUNK: usize = 8;
/// Addresses handled per step by [`Lpm6::lookup_bulk`].
const V6_BULK_CHUNK: usize = 16;

// The IPv6 strides must tile 128 bits exactly.
const _: () = assert!(V6_ROOT_BITS.is_multiple_of(GROUP_BITS) && V6_ROOT_BITS <= 24);

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
    /// Groups freed by updates, reused first.
    free: Vec<u32>,
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
                return Err(LpmError::PrefixTooLong {
                    index,
                    len,
                    max: 32,
                });
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
            let start = ((key as u32) >> 8) as usize;
            let count = 1usize << (TBL24_BITS - len);
            tbl24[start..start + count].fill(VALID | next_hop);
        }

        // Phase 2a: one group per /24 holding a longer prefix, in address order, initialised
        // from the (final) tbl24 entry it replaces.
        let mut blocks: Vec<u32> = long.iter().map(|r| (r.0 as u32) >> 8).collect();
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
            free: Vec::new(),
            prefixes: rs.len(),
        })
    }

    /// The first-level entries, indexed by the address's top 24 bits: what `lookup(addr)`
    /// reads first (most lookups end there), for a burst to read ahead of its lookups
    /// ([`Self::lookup_from`]).
    #[inline]
    pub fn first_level(&self) -> &[u32; 1 << TBL24_BITS] {
        &self.tbl24
    }

    /// The next hop a first-level entry gives by itself: `Some` if the entry holds a route,
    /// not a pointer to a second-level group (which `lookup` reads on) and not empty. So the
    /// destinations of a burst that all read one such entry share its next hop.
    #[inline(always)]
    pub fn first_level_hop(e: u32) -> Option<NextHop> {
        (e & (VALID | EXT) == VALID).then_some(e & PAYLOAD)
    }

    /// The next hop of the longest prefix matching `addr` (host byte order).
    #[inline]
    pub fn lookup(&self, addr: u32) -> Option<NextHop> {
        self.lookup_from(self.tbl24[(addr >> 8) as usize], addr)
    }

    /// [`Self::lookup`], given the address's first-level entry `e`
    /// (`first_level()[addr >> 8]`, read earlier).
    #[inline]
    pub fn lookup_from(&self, e: u32, addr: u32) -> Option<NextHop> {
        let e = if e & EXT != 0 {
            self.tbl8_entry(e, addr)
        } else {
            e
        };
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
    ///
    /// Works in chunks of 8: the 8 independent `tbl24` loads are issued back to back, then
    /// resolved, so a mispredicted "extended" branch cannot stall the loads of the chunk.
    pub fn lookup_bulk(&self, addrs: &[u32], out: &mut [Option<NextHop>]) {
        let n = addrs.len().min(out.len());
        let (addrs, out) = (&addrs[..n], &mut out[..n]);
        let mut a_chunks = addrs.chunks_exact(V4_BULK_CHUNK);
        let mut o_chunks = out.chunks_exact_mut(V4_BULK_CHUNK);
        for (a, o) in (&mut a_chunks).zip(&mut o_chunks) {
            let mut e = [0u32; V4_BULK_CHUNK];
            for (e, &x) in e.iter_mut().zip(a) {
                *e = self.tbl24[(x >> 8) as usize];
            }
            for ((o, &e), &x) in o.iter_mut().zip(&e).zip(a) {
                *o = self.lookup_from(e, x);
            }
        }
        for (o, &x) in o_chunks
            .into_remainder()
            .iter_mut()
            .zip(a_chunks.remainder())
        {
            *o = self.lookup(x);
        }
    }

    /// Bytes used by the table (both levels and the struct itself).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + std::mem::size_of_val(&*self.tbl24)
            + self.tbl8.capacity() * std::mem::size_of::<u32>()
    }

    /// The two arrays backing the table (first level, then all groups), e.g. for the caller
    /// to ask the OS to back them with huge pages (`madvise` `MADV_HUGEPAGE` /
    /// `MADV_COLLAPSE`) or to `mlock` them. Their contents are an implementation detail.
    pub fn backing_memory(&self) -> [&[u32]; 2] {
        [&self.tbl24[..], &self.tbl8]
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

/// IPv6 longest-prefix-match table (multibit trie, 24-bit root then 8-bit strides).
/// Immutable once built; `Send + Sync`.
pub struct Lpm6 {
    root: Box<[u32; V6_ROOT_ENTRIES]>,
    tbl8: Vec<u32>,
    /// Groups freed by updates, reused first.
    free: Vec<u32>,
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
            free: Vec::new(),
            prefixes: rs.len(),
        })
    }

    /// The next hop of the longest prefix matching `addr` (`u128::from_be_bytes(octets)`).
    #[inline]
    pub fn lookup(&self, addr: u128) -> Option<NextHop> {
        self.lookup_decided(addr).0
    }

    /// [`Self::lookup`], and how many leading bits of `addr` decided it (the root's and
    /// those of each group walked): every address that shares those bits with `addr` reads
    /// the same entries, so it has the same answer.
    #[inline]
    pub fn lookup_decided(&self, addr: u128) -> (Option<NextHop>, u32) {
        let mut e = self.root[(addr >> (128 - V6_ROOT_BITS)) as usize];
        let mut shift = 128 - V6_ROOT_BITS;
        // `shift >= 8` always holds for an EXT entry of a well-formed table; the bound keeps
        // the loop finite and the shift in range whatever the table holds.
        while e & EXT != 0 && shift >= GROUP_BITS {
            shift -= GROUP_BITS;
            e = self.group_entry(e, addr, shift);
        }
        (decode(e), 128 - shift)
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
        let mut a_chunks = addrs.chunks_exact(V6_BULK_CHUNK);
        let mut o_chunks = out.chunks_exact_mut(V6_BULK_CHUNK);
        for (a, o) in (&mut a_chunks).zip(&mut o_chunks) {
            // Walk the chunk level by level so the loads of one level are independent.
            let mut e = [0u32; V6_BULK_CHUNK];
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
        for (o, &x) in o_chunks
            .into_remainder()
            .iter_mut()
            .zip(a_chunks.remainder())
        {
            *o = self.lookup(x);
        }
    }

    /// Bytes used by the table (root, groups and the struct itself).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + std::mem::size_of_val(&*self.root)
            + self.tbl8.capacity() * std::mem::size_of::<u32>()
    }

    /// The two arrays backing the table (first level, then all groups), e.g. for the caller
    /// to ask the OS to back them with huge pages (`madvise` `MADV_HUGEPAGE` /
    /// `MADV_COLLAPSE`) or to `mlock` them. Their contents are an implementation detail.
    pub fn backing_memory(&self) -> [&[u32]; 2] {
        [&self.root[..], &self.tbl8]
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

// ---- incremental updates ----
//
// A table can also be changed in place, one prefix at a time, from the route set as it is
// after the change ([`RouteSet4`] / [`RouteSet6`]): [`Lpm4::update`] repaints the range of
// entries that the changed prefix `P` covers. The painting argument above holds within that
// range: first the range gets the value of the longest route of length <= len(P) covering
// it (P itself if it is in the set; every group below the range is freed), then every route
// strictly inside P is painted over it in ascending length, creating groups as the build
// does. Addresses outside P do not depend on P, and addresses inside it depend only on the
// routes covering P and those inside it: so the table afterwards answers as a fresh build
// from the set would. Then the groups on P's path that became uniform (all 256 entries the
// same route) are folded back into their parent entry, so churn does not leak groups.
// Freed groups are reused before the table grows.
//
// The cost is that of the routes inside P: a /24 or longer is a few entries, a short prefix
// with many more-specific routes under it repaints them all.
//
// The caller must own the table exclusively while it changes (`&mut`): a worker never reads
// a table that is being updated. The control side keeps two copies for that (see
// `ferry_control::compile`).

/// An address type of a route set: `u32` (IPv4) or `u128` (IPv6), in host order.
pub trait RouteAddr: Copy + Ord + std::fmt::Debug {
    /// The address width: 32 or 128.
    const BITS: u8;
    /// The address with the bits past `len` cleared.
    fn masked(self, len: u8) -> Self;
    /// The last address of `self/len`.
    fn last(self, len: u8) -> Self;
}

impl RouteAddr for u32 {
    const BITS: u8 = 32;
    fn masked(self, len: u8) -> u32 {
        self & mask32(len)
    }
    fn last(self, len: u8) -> u32 {
        self.masked(len) | !mask32(len)
    }
}

impl RouteAddr for u128 {
    const BITS: u8 = 128;
    fn masked(self, len: u8) -> u128 {
        self & mask128(len)
    }
    fn last(self, len: u8) -> u128 {
        self.masked(len) | !mask128(len)
    }
}

/// The routes a table is updated from: (masked address, length) to next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSet<A> {
    map: std::collections::BTreeMap<(A, u8), NextHop>,
    /// Routes per length (BITS + 1 entries).
    per_len: Vec<u32>,
}

/// The routes of an [`Lpm4`].
pub type RouteSet4 = RouteSet<u32>;
/// The routes of an [`Lpm6`].
pub type RouteSet6 = RouteSet<u128>;

impl<A: RouteAddr> Default for RouteSet<A> {
    fn default() -> Self {
        RouteSet {
            map: std::collections::BTreeMap::new(),
            per_len: vec![0; A::BITS as usize + 1],
        }
    }
}

impl<A: RouteAddr> RouteSet<A> {
    /// The set of `routes` (bits past a length ignored; of equal prefixes, the last wins,
    /// as in [`Lpm4::build`]), built in bulk.
    pub fn from_routes(routes: &[(A, u8, NextHop)]) -> Self {
        let map: std::collections::BTreeMap<(A, u8), NextHop> = routes
            .iter()
            .map(|&(a, l, h)| {
                let l = l.min(A::BITS);
                ((a.masked(l), l), h)
            })
            .collect();
        let mut per_len = vec![0u32; A::BITS as usize + 1];
        for &(_, l) in map.keys() {
            per_len[l as usize] += 1;
        }
        RouteSet { map, per_len }
    }

    /// Insert or replace; returns the previous next hop. Bits past `len` are ignored.
    pub fn insert(&mut self, addr: A, len: u8, hop: NextHop) -> Option<NextHop> {
        let len = len.min(A::BITS);
        let old = self.map.insert((addr.masked(len), len), hop);
        if old.is_none() {
            self.per_len[len as usize] += 1;
        }
        old
    }

    pub fn remove(&mut self, addr: A, len: u8) -> Option<NextHop> {
        let len = len.min(A::BITS);
        let old = self.map.remove(&(addr.masked(len), len));
        if old.is_some() {
            self.per_len[len as usize] -= 1;
        }
        old
    }

    pub fn get(&self, addr: A, len: u8) -> Option<NextHop> {
        let len = len.min(A::BITS);
        self.map.get(&(addr.masked(len), len)).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (A, u8, NextHop)> + '_ {
        self.map.iter().map(|(&(a, l), &h)| (a, l, h))
    }

    /// The next hop of the longest route of length <= `len` that covers `addr/len`.
    pub fn covering(&self, addr: A, len: u8) -> Option<NextHop> {
        (0..=len.min(A::BITS)).rev().find_map(|l| {
            if self.per_len[l as usize] == 0 {
                return None;
            }
            self.map.get(&(addr.masked(l), l)).copied()
        })
    }

    /// Every route strictly inside `addr/len` (longer, within it), ascending by length.
    fn inside(&self, addr: A, len: u8, out: &mut Vec<(A, u8, NextHop)>) {
        out.clear();
        if len >= A::BITS {
            return;
        }
        out.extend(
            self.map
                .range((addr.masked(len), len + 1)..=(addr.last(len), A::BITS))
                .map(|(&(a, l), &h)| (a, l, h)),
        );
        out.sort_by_key(|r| r.1);
    }
}

impl RouteSet<u32> {
    /// Whether a route longer than 24 lies in the /24 block `block`.
    fn has_long_in_block(&self, block: u32) -> bool {
        let first = block << 8;
        self.map
            .range((first, 25)..=(first | 0xff, 32))
            .next()
            .is_some()
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

fn encode(hop: Option<NextHop>) -> u32 {
    hop.map_or(0, |h| VALID | (h & PAYLOAD))
}

/// Groups of one table: allocation with reuse of freed groups.
struct Groups<'a> {
    tbl8: &'a mut Vec<u32>,
    free: &'a mut Vec<u32>,
    max: usize,
}

impl Groups<'_> {
    fn alloc(&mut self, fill: u32) -> Result<u32, LpmError> {
        if let Some(g) = self.free.pop() {
            let s = g as usize * GROUP_SIZE;
            self.tbl8[s..s + GROUP_SIZE].fill(fill);
            return Ok(EXT | g);
        }
        new_group(self.tbl8, fill, self.max)
    }

    /// Free the group `e` points to and every group below it.
    fn free(&mut self, e: u32) {
        let mut stack = vec![e];
        while let Some(e) = stack.pop() {
            let g = e & PAYLOAD;
            let s = g as usize * GROUP_SIZE;
            for i in s..s + GROUP_SIZE {
                if self.tbl8[i] & EXT != 0 {
                    stack.push(self.tbl8[i]);
                }
            }
            self.free.push(g);
        }
    }

    /// Set `slots` (entries of one level) to `v`, freeing the groups below any of them.
    fn fill(&mut self, at: Slots, v: u32, root: &mut [u32]) {
        for i in at.range() {
            let e = at.get(i, root, self.tbl8);
            if e & EXT != 0 {
                self.free(e);
            }
            at.set(i, v, root, self.tbl8);
        }
    }

    /// If the group `e` points to holds 256 equal plain entries, free it and return that
    /// entry (for the parent to hold instead).
    fn fold(&mut self, e: u32) -> Option<u32> {
        let s = (e & PAYLOAD) as usize * GROUP_SIZE;
        let g = &self.tbl8[s..s + GROUP_SIZE];
        let first = g[0];
        if first & EXT != 0 || g.iter().any(|&x| x != first) {
            return None;
        }
        self.free.push(e & PAYLOAD);
        Some(first)
    }
}

/// A run of entries at one level: in the root table, or in a group.
#[derive(Clone, Copy)]
enum Slots {
    Root { start: usize, count: usize },
    Group { start: usize, count: usize },
}

impl Slots {
    fn range(&self) -> std::ops::Range<usize> {
        match *self {
            Slots::Root { start, count } | Slots::Group { start, count } => start..start + count,
        }
    }
    fn get(&self, i: usize, root: &[u32], tbl8: &[u32]) -> u32 {
        match self {
            Slots::Root { .. } => root[i],
            Slots::Group { .. } => tbl8[i],
        }
    }
    fn set(&self, i: usize, v: u32, root: &mut [u32], tbl8: &mut [u32]) {
        match self {
            Slots::Root { .. } => root[i] = v,
            Slots::Group { .. } => tbl8[i] = v,
        }
    }
}

impl Lpm4 {
    /// A copy (the control side's second table; see "incremental updates").
    pub fn duplicate(&self) -> Lpm4 {
        let tbl24 = match self.tbl24.to_vec().into_boxed_slice().try_into() {
            Ok(t) => t,
            Err(_) => unreachable!("same length"),
        };
        Lpm4 {
            tbl24,
            tbl8: self.tbl8.clone(),
            free: self.free.clone(),
            prefixes: self.prefixes,
        }
    }

    /// Make the entries of `addr/len` answer as `set` (the routes after a change of that
    /// prefix) says; see "incremental updates". Fails only when the groups run out, and
    /// then the table may be half-updated: the caller rebuilds it.
    pub fn update(&mut self, set: &RouteSet4, addr: u32, len: u8) -> Result<(), LpmError> {
        if len > 32 {
            return Err(LpmError::PrefixTooLong {
                index: 0,
                len,
                max: 32,
            });
        }
        let addr = addr & mask32(len);
        let base = encode(set.covering(addr, len));
        let mut inner = Vec::new();
        set.inside(addr, len, &mut inner);
        let mut g = Groups {
            tbl8: &mut self.tbl8,
            free: &mut self.free,
            max: MAX_TBL8_GROUPS,
        };
        let root = &mut self.tbl24[..];
        let block = (addr >> 8) as usize;
        if len <= 24 {
            let count = 1usize << (24 - len);
            g.fill(
                Slots::Root {
                    start: block,
                    count,
                },
                base,
                root,
            );
        } else {
            if root[block] & EXT == 0 {
                if !set.has_long_in_block(block as u32) {
                    // Nothing longer than /24 here before or after: the block's entry is
                    // already right (only a route inside it changed).
                    self.prefixes = set.len();
                    return Ok(());
                }
                root[block] = g.alloc(root[block])?;
            }
            let start = group_index(root[block], (addr & 0xff) as usize);
            let count = 1usize << (32 - len);
            g.fill(Slots::Group { start, count }, base, root);
        }
        for &(a, l, h) in &inner {
            let v = VALID | h;
            let block = (a >> 8) as usize;
            if l <= 24 {
                let count = 1usize << (24 - l);
                g.fill(
                    Slots::Root {
                        start: block,
                        count,
                    },
                    v,
                    root,
                );
            } else {
                if root[block] & EXT == 0 {
                    root[block] = g.alloc(root[block])?;
                }
                let start = group_index(root[block], (a & 0xff) as usize);
                g.fill(
                    Slots::Group {
                        start,
                        count: 1usize << (32 - l),
                    },
                    v,
                    root,
                );
            }
        }
        if len > 24 && root[block] & EXT != 0 {
            if let Some(v) = g.fold(root[block]) {
                root[block] = v;
            }
        }
        self.prefixes = set.len();
        Ok(())
    }
}

impl Lpm6 {
    pub fn duplicate(&self) -> Lpm6 {
        let root = match self.root.to_vec().into_boxed_slice().try_into() {
            Ok(t) => t,
            Err(_) => unreachable!("same length"),
        };
        Lpm6 {
            root,
            tbl8: self.tbl8.clone(),
            free: self.free.clone(),
            prefixes: self.prefixes,
        }
    }

    /// As [`Lpm4::update`].
    pub fn update(&mut self, set: &RouteSet6, addr: u128, len: u8) -> Result<(), LpmError> {
        if len > 128 {
            return Err(LpmError::PrefixTooLong {
                index: 0,
                len,
                max: 128,
            });
        }
        let addr = addr & mask128(len);
        let base = encode(set.covering(addr, len));
        let mut inner = Vec::new();
        set.inside(addr, len, &mut inner);
        let mut g = Groups {
            tbl8: &mut self.tbl8,
            free: &mut self.free,
            max: MAX_TBL8_GROUPS,
        };
        let root = &mut self.root[..];
        // The groups walked to P (entry index in tbl8 of each EXT entry, root first as None).
        let path = paint6(&mut g, root, addr, len, base)?;
        for &(a, l, h) in &inner {
            paint6(&mut g, root, a, l, VALID | h)?;
        }
        // Fold uniform groups on P's path, deepest first.
        for (parent, e) in path.into_iter().rev() {
            let current = match parent {
                None => root[(addr >> (128 - V6_ROOT_BITS)) as usize],
                Some(i) => g.tbl8[i],
            };
            if current != e {
                break;
            }
            match g.fold(e) {
                Some(v) => match parent {
                    None => root[(addr >> (128 - V6_ROOT_BITS)) as usize] = v,
                    Some(i) => g.tbl8[i] = v,
                },
                None => break,
            }
        }
        self.prefixes = set.len();
        Ok(())
    }
}

/// Paint `v` over the entries of `addr/len` in an IPv6 table, creating groups on the way
/// down and freeing those below the painted entries. Returns the EXT entries walked through
/// (with where each is stored: None for the root).
fn paint6(
    g: &mut Groups,
    root: &mut [u32],
    addr: u128,
    len: u8,
    v: u32,
) -> Result<Vec<(Option<usize>, u32)>, LpmError> {
    let len = u32::from(len);
    let top = (addr >> (128 - V6_ROOT_BITS)) as usize;
    let mut path = Vec::new();
    if len <= V6_ROOT_BITS {
        let count = 1usize << (V6_ROOT_BITS - len);
        g.fill(Slots::Root { start: top, count }, v, root);
        return Ok(path);
    }
    if root[top] & EXT == 0 {
        root[top] = g.alloc(root[top])?;
    }
    let mut e = root[top];
    path.push((None, e));
    let mut depth = V6_ROOT_BITS;
    while len > depth + GROUP_BITS {
        let i = group_index(e, (addr >> (120 - depth)) as u8 as usize);
        if g.tbl8[i] & EXT == 0 {
            let fill = g.tbl8[i];
            g.tbl8[i] = g.alloc(fill)?;
        }
        e = g.tbl8[i];
        path.push((Some(i), e));
        depth += GROUP_BITS;
    }
    let start = group_index(e, (addr >> (120 - depth)) as u8 as usize);
    let count = 1usize << (depth + GROUP_BITS - len);
    g.fill(Slots::Group { start, count }, v, root);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    fn v6(s: &str) -> u128 {
        u128::from_be_bytes(s.parse::<Ipv6Addr>().unwrap().octets())
    }

    fn mask4(len: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
    }

    fn mask6(len: u8) -> u128 {
        u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
    }

    /// Linear scan: longest matching prefix, the later route winning among equal prefixes.
    fn naive4(routes: &[(u32, u8, NextHop)], addr: u32) -> Option<NextHop> {
        let mut best: Option<(u8, NextHop)> = None;
        for &(a, len, nh) in routes {
            let m = mask4(len);
            let longer = match best {
                None => true,
                Some((best_len, _)) => len >= best_len,
            };
            if addr & m == a & m && longer {
                best = Some((len, nh));
            }
        }
        best.map(|(_, nh)| nh)
    }

    fn naive6(routes: &[(u128, u8, NextHop)], addr: u128) -> Option<NextHop> {
        let mut best: Option<(u8, NextHop)> = None;
        for &(a, len, nh) in routes {
            let m = mask6(len);
            let longer = match best {
                None => true,
                Some((best_len, _)) => len >= best_len,
            };
            if addr & m == a & m && longer {
                best = Some((len, nh));
            }
        }
        best.map(|(_, nh)| nh)
    }

    /// Addresses that exercise the edges of every route: first, last, just outside both ends,
    /// and one inside picked with `noise`.
    fn probes4(routes: &[(u32, u8, NextHop)], noise: &[u32]) -> Vec<u32> {
        let mut out = noise.to_vec();
        for (i, &(a, len, _)) in routes.iter().enumerate() {
            let m = mask4(len);
            let first = a & m;
            let last = first | !m;
            let n = noise.get(i).copied().unwrap_or(0x5a5a_5a5a);
            out.extend([
                first,
                last,
                first.wrapping_sub(1),
                last.wrapping_add(1),
                first | (n & !m),
            ]);
        }
        out
    }

    fn probes6(routes: &[(u128, u8, NextHop)], noise: &[u128]) -> Vec<u128> {
        let mut out = noise.to_vec();
        for (i, &(a, len, _)) in routes.iter().enumerate() {
            let m = mask6(len);
            let first = a & m;
            let last = first | !m;
            let n = noise.get(i).copied().unwrap_or(0x5a5a_5a5a << 64);
            out.extend([
                first,
                last,
                first.wrapping_sub(1),
                last.wrapping_add(1),
                first | (n & !m),
            ]);
        }
        out
    }

    fn check4(routes: &[(u32, u8, NextHop)], probes: &[u32]) -> Result<(), TestCaseError> {
        let lpm = Lpm4::build(routes).unwrap();
        for &p in probes {
            prop_assert_eq!(
                lpm.lookup(p),
                naive4(routes, p),
                "addr {}",
                Ipv4Addr::from(p)
            );
        }
        // From the first-level entry, and from it alone when it holds a route.
        for &p in probes {
            let e = lpm.first_level()[(p >> 8) as usize];
            prop_assert_eq!(lpm.lookup_from(e, p), lpm.lookup(p));
            if let Some(h) = Lpm4::first_level_hop(e) {
                prop_assert_eq!(Some(h), lpm.lookup(p));
            }
        }
        // Bulk equals single lookups, and only touches min(len) outputs.
        let sentinel = Some(MAX_NEXT_HOP ^ 1);
        let mut out = vec![sentinel; probes.len() + 3];
        lpm.lookup_bulk(probes, &mut out);
        for (o, &p) in out.iter().zip(probes) {
            prop_assert_eq!(*o, lpm.lookup(p));
        }
        prop_assert!(out[probes.len()..].iter().all(|&o| o == sentinel));
        let short = probes.len() / 2;
        let mut out = vec![sentinel; short];
        lpm.lookup_bulk(probes, &mut out);
        for (o, &p) in out.iter().zip(probes) {
            prop_assert_eq!(*o, lpm.lookup(p));
        }
        Ok(())
    }

    fn check6(routes: &[(u128, u8, NextHop)], probes: &[u128]) -> Result<(), TestCaseError> {
        let lpm = Lpm6::build(routes).unwrap();
        for &p in probes {
            prop_assert_eq!(
                lpm.lookup(p),
                naive6(routes, p),
                "addr {}",
                Ipv6Addr::from(p)
            );
        }
        // The bits that decided an answer decide it for every address that shares them:
        // each probe's decided bits with every other probe's remaining bits.
        for &p in probes {
            let (hop, bits) = lpm.lookup_decided(p);
            prop_assert_eq!(hop, lpm.lookup(p));
            prop_assert!((24..=128).contains(&bits));
            for &q in probes {
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                let q = (p & mask) | (q & !mask);
                prop_assert_eq!(
                    lpm.lookup(q),
                    hop,
                    "{} shares {} bits with {}",
                    Ipv6Addr::from(q),
                    bits,
                    Ipv6Addr::from(p)
                );
            }
        }
        let sentinel = Some(MAX_NEXT_HOP ^ 1);
        let mut out = vec![sentinel; probes.len() + 3];
        lpm.lookup_bulk(probes, &mut out);
        for (o, &p) in out.iter().zip(probes) {
            prop_assert_eq!(*o, lpm.lookup(p));
        }
        prop_assert!(out[probes.len()..].iter().all(|&o| o == sentinel));
        let short = probes.len() / 2;
        let mut out = vec![sentinel; short];
        lpm.lookup_bulk(probes, &mut out);
        for (o, &p) in out.iter().zip(probes) {
            prop_assert_eq!(*o, lpm.lookup(p));
        }
        Ok(())
    }

    fn next_hop() -> impl Strategy<Value = NextHop> {
        prop_oneof![0..4u32, Just(MAX_NEXT_HOP), 0..=MAX_NEXT_HOP]
    }

    fn route4() -> impl Strategy<Value = (u32, u8, NextHop)> {
        let addr = prop_oneof![
            any::<u32>(),
            // A few neighbouring /24s shared by many routes.
            (0..3u32, any::<u8>()).prop_map(|(k, low)| 0xc0a8_0700 + (k << 8) + u32::from(low)),
        ];
        // Mostly near /24, where tbl24 meets the groups; short prefixes are rarer because
        // they paint big ranges (slow in debug builds).
        let len = prop_oneof![
            1 => 0..=32u8,
            4 => 20..=32u8,
            3 => 24..=32u8,
        ];
        (addr, len, next_hop())
    }

    fn route6() -> impl Strategy<Value = (u128, u8, NextHop)> {
        let addr = prop_oneof![
            any::<u128>(),
            // A few neighbouring /48s of 2001:db8::/32.
            (0..3u128, any::<u128>())
                .prop_map(|(k, low)| { (0x2001_0db8_0007u128 << 80) + (k << 80) + (low >> 48) }),
        ];
        let len = prop_oneof![
            1 => 0..=128u8,
            3 => 40..=72u8,
            2 => prop::sample::select(vec![
                0u8, 8, 16, 23, 24, 25, 31, 32, 33, 47, 48, 49, 56, 63, 64, 65, 120, 127, 128,
            ]),
        ];
        (addr, len, next_hop())
    }

    /// Groups a table uses (allocated, not freed).
    fn groups_in_use4(t: &Lpm4) -> usize {
        t.tbl8_groups() - t.free.len()
    }
    fn groups_in_use6(t: &Lpm6) -> usize {
        t.tbl8_groups() - t.free.len()
    }

    /// A change: Some(hop) upserts, None deletes (a route of the set, picked by index).
    fn change4() -> impl Strategy<Value = ((u32, u8, NextHop), Option<usize>)> {
        (
            route4(),
            prop_oneof![2 => Just(None), 1 => (0..64usize).prop_map(Some)],
        )
    }
    fn change6() -> impl Strategy<Value = ((u128, u8, NextHop), Option<usize>)> {
        (
            route6(),
            prop_oneof![2 => Just(None), 1 => (0..64usize).prop_map(Some)],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random deltas applied in place give the table a fresh build of the resulting
        /// route set gives, at every route's edges; removing everything frees every group.
        #[test]
        fn updates_in_place_match_a_fresh_build4(
            initial in proptest::collection::vec(route4(), 0..24),
            changes in proptest::collection::vec(change4(), 1..24),
            noise in proptest::collection::vec(any::<u32>(), 8),
        ) {
            let mut set = RouteSet4::default();
            for &(a, l, h) in &initial {
                set.insert(a, l, h);
            }
            let mut lpm = Lpm4::build(&set.iter().collect::<Vec<_>>()).unwrap();
            let mut all = initial.clone();
            for ((a, l, h), delete) in &changes {
                let (a, l) = match delete {
                    Some(i) if !set.is_empty() => {
                        let (a, l, _) = set.iter().nth(i % set.len()).unwrap();
                        set.remove(a, l);
                        (a, l)
                    }
                    _ => {
                        set.insert(*a, *l, *h);
                        all.push((*a, *l, *h));
                        (*a, *l)
                    }
                };
                lpm.update(&set, a, l).unwrap();
            }
            let now: Vec<_> = set.iter().collect();
            let fresh = Lpm4::build(&now).unwrap();
            prop_assert_eq!(lpm.len(), fresh.len());
            for p in probes4(&all, &noise) {
                prop_assert_eq!(lpm.lookup(p), fresh.lookup(p), "addr {}", Ipv4Addr::from(p));
            }
            for (a, l, _) in now {
                set.remove(a, l);
                lpm.update(&set, a, l).unwrap();
            }
            prop_assert_eq!(groups_in_use4(&lpm), 0);
            prop_assert!(lpm.tbl24.iter().all(|&e| e == 0));
        }

        #[test]
        fn updates_in_place_match_a_fresh_build6(
            initial in proptest::collection::vec(route6(), 0..24),
            changes in proptest::collection::vec(change6(), 1..24),
            noise in proptest::collection::vec(any::<u128>(), 8),
        ) {
            let mut set = RouteSet6::default();
            for &(a, l, h) in &initial {
                set.insert(a, l, h);
            }
            let mut lpm = Lpm6::build(&set.iter().collect::<Vec<_>>()).unwrap();
            let mut all = initial.clone();
            for ((a, l, h), delete) in &changes {
                let (a, l) = match delete {
                    Some(i) if !set.is_empty() => {
                        let (a, l, _) = set.iter().nth(i % set.len()).unwrap();
                        set.remove(a, l);
                        (a, l)
                    }
                    _ => {
                        set.insert(*a, *l, *h);
                        all.push((*a, *l, *h));
                        (*a, *l)
                    }
                };
                lpm.update(&set, a, l).unwrap();
            }
            let now: Vec<_> = set.iter().collect();
            let fresh = Lpm6::build(&now).unwrap();
            prop_assert_eq!(lpm.len(), fresh.len());
            for p in probes6(&all, &noise) {
                prop_assert_eq!(lpm.lookup(p), fresh.lookup(p), "addr {}", Ipv6Addr::from(p));
            }
            for (a, l, _) in now {
                set.remove(a, l);
                lpm.update(&set, a, l).unwrap();
            }
            prop_assert_eq!(groups_in_use6(&lpm), 0);
            prop_assert!(lpm.root.iter().all(|&e| e == 0));
        }
    }

    #[test]
    fn a_duplicate_is_independent() {
        let mut set = RouteSet4::default();
        set.insert(v4("10.0.0.0"), 8, 1);
        let a = Lpm4::build(&set.iter().collect::<Vec<_>>()).unwrap();
        let mut b = a.duplicate();
        set.insert(v4("10.1.2.128"), 25, 2);
        b.update(&set, v4("10.1.2.128"), 25).unwrap();
        assert_eq!(a.lookup(v4("10.1.2.200")), Some(1));
        assert_eq!(b.lookup(v4("10.1.2.200")), Some(2));
        assert_eq!(b.lookup(v4("10.1.2.100")), Some(1));
    }

    /// 2001:db8:aa00::/40.
    const DENSE6: u128 = 0x2001_0db8_aa00 << 80;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn v4_matches_naive(
            routes in prop::collection::vec(route4(), 0..48),
            noise in prop::collection::vec(any::<u32>(), 0..48),
        ) {
            check4(&routes, &probes4(&routes, &noise))?;
        }

        #[test]
        fn v6_matches_naive(
            routes in prop::collection::vec(route6(), 0..48),
            noise in prop::collection::vec(any::<u128>(), 0..48),
        ) {
            check6(&routes, &probes6(&routes, &noise))?;
        }

        /// Lots of long prefixes in one /24 and duplicates: tbl8 painting and last-wins.
        #[test]
        fn v4_dense_block(
            routes in prop::collection::vec(
                (any::<u8>(), 22..=32u8, 0..8u32).prop_map(|(low, len, nh)| {
                    (0x0a01_0200 | u32::from(low), len, nh)
                }),
                1..96,
            ),
        ) {
            let probes: Vec<u32> = (0x0a01_0000..0x0a01_0400).collect();
            check4(&routes, &probes)?;
        }

        /// Lots of prefixes of length 40..=72 under one /40: deep group chains.
        #[test]
        fn v6_dense_block(
            routes in prop::collection::vec(
                (any::<u32>(), 40..=72u8, 0..8u32).prop_map(|(low, len, nh)| {
                    (DENSE6 | (u128::from(low) << 56), len, nh)
                }),
                1..96,
            ),
            noise in prop::collection::vec(any::<u128>(), 0..32),
        ) {
            let noise: Vec<u128> =
                noise.iter().map(|n| DENSE6 | (n >> 40)).collect();
            check6(&routes, &probes6(&routes, &noise))?;
        }
    }

    #[test]
    fn send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Lpm4>();
        assert_send_sync::<Lpm6>();
    }

    #[test]
    fn v4_empty() {
        let lpm = Lpm4::build(&[]).unwrap();
        assert!(lpm.is_empty());
        assert_eq!(lpm.len(), 0);
        assert_eq!(lpm.tbl8_groups(), 0);
        for a in [0, 1, v4("10.0.0.1"), u32::MAX] {
            assert_eq!(lpm.lookup(a), None);
        }
        let mut out = [Some(1); 20];
        lpm.lookup_bulk(&[7; 20], &mut out);
        assert_eq!(out, [None; 20]);
        assert!(lpm.memory_bytes() >= 4 << 24);
        assert_eq!(lpm.backing_memory()[0].len(), 1 << 24);
    }

    #[test]
    fn v4_default_route() {
        let lpm = Lpm4::build(&[(0, 0, 9)]).unwrap();
        assert_eq!(lpm.len(), 1);
        for a in [0, v4("10.0.0.1"), v4("255.255.255.255"), v4("128.0.0.0")] {
            assert_eq!(lpm.lookup(a), Some(9));
        }
        // Bits past the prefix are ignored, also for /0.
        let lpm = Lpm4::build(&[(v4("1.2.3.4"), 0, 3)]).unwrap();
        assert_eq!(lpm.lookup(v4("200.1.1.1")), Some(3));
    }

    #[test]
    fn v4_host_route() {
        let lpm = Lpm4::build(&[(v4("192.0.2.7"), 32, 1)]).unwrap();
        assert_eq!(lpm.lookup(v4("192.0.2.7")), Some(1));
        assert_eq!(lpm.lookup(v4("192.0.2.6")), None);
        assert_eq!(lpm.lookup(v4("192.0.2.8")), None);
        assert_eq!(lpm.tbl8_groups(), 1);
        let lpm = Lpm4::build(&[(u32::MAX, 32, 1), (0, 32, 2)]).unwrap();
        assert_eq!(lpm.lookup(u32::MAX), Some(1));
        assert_eq!(lpm.lookup(0), Some(2));
        assert_eq!(lpm.lookup(1), None);
        assert_eq!(lpm.lookup(u32::MAX - 1), None);
    }

    #[test]
    fn v4_long_prefixes_inside_a_24() {
        let routes = [
            (v4("10.0.0.0"), 24, 1),
            (v4("10.0.0.0"), 25, 2),
            (v4("10.0.0.128"), 26, 3),
            (v4("10.0.0.192"), 27, 4),
            (v4("10.0.0.224"), 28, 5),
            (v4("10.0.0.240"), 29, 6),
            (v4("10.0.0.248"), 30, 7),
            (v4("10.0.0.252"), 31, 8),
            (v4("10.0.0.254"), 32, 9),
        ];
        // The build must not depend on the input order.
        let mut reversed = routes;
        reversed.reverse();
        for routes in [&routes[..], &reversed[..]] {
            let lpm = Lpm4::build(routes).unwrap();
            assert_eq!(lpm.len(), 9);
            assert_eq!(lpm.tbl8_groups(), 1);
            let expect = [
                ("10.0.0.0", 2),
                ("10.0.0.127", 2),
                ("10.0.0.128", 3),
                ("10.0.0.191", 3),
                ("10.0.0.192", 4),
                ("10.0.0.223", 4),
                ("10.0.0.224", 5),
                ("10.0.0.239", 5),
                ("10.0.0.240", 6),
                ("10.0.0.247", 6),
                ("10.0.0.248", 7),
                ("10.0.0.251", 7),
                ("10.0.0.252", 8),
                ("10.0.0.253", 8),
                ("10.0.0.254", 9),
                ("10.0.0.255", 1),
            ];
            for (a, nh) in expect {
                assert_eq!(lpm.lookup(v4(a)), Some(nh), "{a}");
            }
            assert_eq!(lpm.lookup(v4("10.0.1.0")), None);
            assert_eq!(lpm.lookup(v4("9.255.255.255")), None);
        }
    }

    #[test]
    fn v4_long_prefix_without_covering_route() {
        let lpm = Lpm4::build(&[(v4("10.0.0.64"), 26, 1)]).unwrap();
        assert_eq!(lpm.lookup(v4("10.0.0.63")), None);
        assert_eq!(lpm.lookup(v4("10.0.0.64")), Some(1));
        assert_eq!(lpm.lookup(v4("10.0.0.127")), Some(1));
        assert_eq!(lpm.lookup(v4("10.0.0.128")), None);
    }

    #[test]
    fn v4_nested_and_overlapping() {
        let routes = [
            (v4("10.0.0.0"), 8, 1),
            (v4("10.1.0.0"), 16, 2),
            (v4("10.1.2.0"), 24, 3),
            (v4("10.1.2.128"), 25, 4),
            (v4("10.1.0.0"), 17, 5),
            (v4("0.0.0.0"), 0, 6),
        ];
        let lpm = Lpm4::build(&routes).unwrap();
        let expect = [
            ("10.1.2.200", 4),
            ("10.1.2.1", 3),
            ("10.1.3.1", 5),
            ("10.1.128.1", 2),
            ("10.2.0.0", 1),
            ("11.0.0.0", 6),
        ];
        for (a, nh) in expect {
            assert_eq!(lpm.lookup(v4(a)), Some(nh), "{a}");
        }
        // Only the /25 needs a group.
        assert_eq!(lpm.tbl8_groups(), 1);
    }

    #[test]
    fn v4_duplicates_last_wins_and_masking() {
        let routes = [
            (v4("10.0.0.0"), 8, 1),
            (v4("10.9.9.9"), 8, 2), // same prefix once masked
            (v4("10.1.2.0"), 24, 3),
            (v4("10.1.2.3"), 30, 4),
            (v4("10.1.2.0"), 30, 5), // same /30
            (v4("10.1.2.77"), 24, 6),
        ];
        let lpm = Lpm4::build(&routes).unwrap();
        assert_eq!(lpm.len(), 3);
        assert_eq!(lpm.lookup(v4("10.200.0.0")), Some(2));
        assert_eq!(lpm.lookup(v4("10.1.2.2")), Some(5));
        assert_eq!(lpm.lookup(v4("10.1.2.4")), Some(6));
    }

    #[test]
    fn v4_next_hop_range() {
        let lpm = Lpm4::build(&[(v4("1.0.0.0"), 8, 0), (v4("2.0.0.0"), 28, MAX_NEXT_HOP)]).unwrap();
        assert_eq!(lpm.lookup(v4("1.2.3.4")), Some(0));
        assert_eq!(lpm.lookup(v4("2.0.0.15")), Some(MAX_NEXT_HOP));
        assert_eq!(lpm.lookup(v4("2.0.0.16")), None);
    }

    #[test]
    fn v6_hand_cases() {
        let routes = [
            (v6("::"), 0, 1),
            (v6("2001:db8::"), 32, 2),
            (v6("2001:db8:1::"), 48, 3),
            (v6("2001:db8:1:8000::"), 49, 4),
            (v6("2001:db8:1:2::"), 64, 5),
            (v6("2001:db8:1:2::1"), 128, 6),
            (v6("2001:db8:1:2::2"), 127, 7),
            (v6("2001:db8:1:2::2"), 127, 8), // duplicate: last wins
            (v6("2001:d00::"), 24, 9),
            (v6("2001:d00::"), 23, 10),
            (v6("2001:dff::"), 25, 11),
            (v6("2001::"), 16, 12),
        ];
        let lpm = Lpm6::build(&routes).unwrap();
        assert_eq!(lpm.len(), 11);
        let expect = [
            ("ffff::1", 1),
            ("2001:db8:ffff::", 2),
            ("2001:db8:1:7fff::", 3),
            ("2001:db8:1:8000::", 4),
            ("2001:db8:1:ffff:ffff:ffff:ffff:ffff", 4),
            ("2001:db8:1:2::", 5),
            ("2001:db8:1:2::1", 6),
            ("2001:db8:1:2::2", 8),
            ("2001:db8:1:2::3", 8),
            ("2001:db8:1:2::4", 5),
            ("2001:db8:1:2:ffff::", 5),
            ("2001:d00::1", 9),
            ("2001:dff::1", 11),
            ("2001:d80::", 11),
            ("2001:d7f:ffff::", 9),
            ("2001:cff::1", 10),
            ("2001:c00::1", 10),
            ("2001:bff::1", 12),
            ("2001:e00::", 12),
            ("2002::", 1),
        ];
        for (a, nh) in expect {
            assert_eq!(lpm.lookup(v6(a)), Some(nh), "{a}");
        }
        let addrs: Vec<u128> = expect.iter().map(|&(a, _)| v6(a)).collect();
        let mut out = vec![None; addrs.len()];
        lpm.lookup_bulk(&addrs, &mut out);
        let want: Vec<Option<NextHop>> = expect.iter().map(|&(_, nh)| Some(nh)).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn v6_empty_host_and_default() {
        let lpm = Lpm6::build(&[]).unwrap();
        assert!(lpm.is_empty());
        assert_eq!(lpm.lookup(v6("2001:db8::1")), None);
        assert_eq!(lpm.lookup(u128::MAX), None);
        assert_eq!(lpm.backing_memory()[0].len(), 1 << V6_ROOT_BITS);

        let lpm = Lpm6::build(&[(v6("2001:db8::1"), 128, 4)]).unwrap();
        assert_eq!(lpm.lookup(v6("2001:db8::1")), Some(4));
        assert_eq!(lpm.lookup(v6("2001:db8::")), None);
        assert_eq!(lpm.lookup(v6("2001:db8::2")), None);
        assert_eq!(lpm.lookup(v6("2001:db9::1")), None);
        assert_eq!(lpm.tbl8_groups() as u32, (128 - V6_ROOT_BITS) / 8);

        let lpm = Lpm6::build(&[(u128::MAX, 0, 5), (u128::MAX, 128, 6)]).unwrap();
        assert_eq!(lpm.lookup(0), Some(5));
        assert_eq!(lpm.lookup(u128::MAX), Some(6));
        assert_eq!(lpm.lookup(u128::MAX - 1), Some(5));
    }

    #[test]
    fn errors() {
        assert_eq!(
            Lpm4::build(&[(0, 8, 1), (0, 33, 1)]).unwrap_err(),
            LpmError::PrefixTooLong {
                index: 1,
                len: 33,
                max: 32
            }
        );
        assert_eq!(
            Lpm6::build(&[(0, 129, 1)]).unwrap_err(),
            LpmError::PrefixTooLong {
                index: 0,
                len: 129,
                max: 128
            }
        );
        assert_eq!(
            Lpm4::build(&[(0, 8, MAX_NEXT_HOP + 1)]).unwrap_err(),
            LpmError::NextHopTooLarge {
                index: 0,
                next_hop: MAX_NEXT_HOP + 1,
                max: MAX_NEXT_HOP
            }
        );
        assert_eq!(
            Lpm6::build(&[(0, 8, 1), (0, 64, u32::MAX)]).unwrap_err(),
            LpmError::NextHopTooLarge {
                index: 1,
                next_hop: u32::MAX,
                max: MAX_NEXT_HOP
            }
        );
        let msg = Lpm4::build(&[(0, 200, 1)]).unwrap_err().to_string();
        assert!(msg.contains("200") && msg.contains("32"), "{msg}");
        let msg = Lpm4::build(&[(0, 1, 1 << 24)]).unwrap_err().to_string();
        assert!(msg.contains(&(1u32 << 24).to_string()), "{msg}");

        // Group limits.
        let long = [(v4("10.0.0.1"), 32, 1), (v4("10.0.1.1"), 32, 1)];
        assert!(Lpm4::build_with_max_tbl8(&long, 2).is_ok());
        assert_eq!(
            Lpm4::build_with_max_tbl8(&long, 1).unwrap_err(),
            LpmError::TooManyTbl8Groups { max: 1 }
        );
        let host6 = [(v6("2001:db8::1"), 128, 1)];
        let needed = ((128 - V6_ROOT_BITS) / 8) as usize;
        assert!(Lpm6::build_with_max_tbl8(&host6, needed).is_ok());
        assert_eq!(
            Lpm6::build_with_max_tbl8(&host6, needed - 1).unwrap_err(),
            LpmError::TooManyTbl8Groups { max: needed - 1 }
        );
    }

    /// Small deterministic generator for the big tables (splitmix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn big_random_tables() {
        let mut rng = Rng(7);

        // 1M IPv4 routes, lengths mostly 16..=24 as in real tables, some longer, a few short.
        let routes: Vec<(u32, u8, NextHop)> = (0..1_000_000)
            .map(|_| {
                let len = match rng.below(100) {
                    0..=59 => 24,
                    60..=89 => 16 + rng.below(8) as u8,
                    90..=97 => 25 + rng.below(8) as u8,
                    _ => rng.below(16) as u8,
                };
                (rng.next() as u32, len, rng.below(1 << 24) as u32)
            })
            .collect();
        let lpm = Lpm4::build(&routes).unwrap();
        // Reference: one map per length, last duplicate wins.
        let mut by_len: Vec<HashMap<u32, NextHop>> = vec![HashMap::new(); 33];
        for &(a, len, nh) in &routes {
            by_len[usize::from(len)].insert(a & mask4(len), nh);
        }
        assert_eq!(lpm.len(), by_len.iter().map(HashMap::len).sum::<usize>());
        let reference = |addr: u32| {
            (0..=32u8)
                .rev()
                .find_map(|len| by_len[usize::from(len)].get(&(addr & mask4(len))).copied())
        };
        let mut probes: Vec<u32> = (0..20_000).map(|_| rng.next() as u32).collect();
        for _ in 0..20_000 {
            let (a, len, _) = routes[rng.below(routes.len() as u64) as usize];
            probes.push((a & mask4(len)) | (rng.next() as u32 & !mask4(len)));
        }
        let mut out = vec![None; probes.len()];
        lpm.lookup_bulk(&probes, &mut out);
        for (&p, &o) in probes.iter().zip(&out) {
            assert_eq!(lpm.lookup(p), reference(p), "{}", Ipv4Addr::from(p));
            assert_eq!(o, reference(p));
        }
        drop(lpm);

        // 200k IPv6 routes under 30k /32 allocations, lengths as in a BGP table.
        let allocs: Vec<u128> = (0..30_000)
            .map(|_| (0x2000_0000 | (rng.next() as u128 & 0x1fff_ffff)) << 96)
            .collect();
        let lens = [
            16u8, 20, 24, 28, 29, 32, 36, 40, 44, 48, 48, 48, 48, 56, 64, 128,
        ];
        let routes: Vec<(u128, u8, NextHop)> = (0..200_000)
            .map(|_| {
                let base = allocs[rng.below(allocs.len() as u64) as usize];
                let low = (u128::from(rng.next()) << 32) | u128::from(rng.next() >> 32);
                let len = lens[rng.below(lens.len() as u64) as usize];
                (base | low, len, rng.below(1 << 24) as u32)
            })
            .collect();
        let lpm = Lpm6::build(&routes).unwrap();
        let mut by_len: Vec<HashMap<u128, NextHop>> = vec![HashMap::new(); 129];
        for &(a, len, nh) in &routes {
            by_len[usize::from(len)].insert(a & mask6(len), nh);
        }
        assert_eq!(lpm.len(), by_len.iter().map(HashMap::len).sum::<usize>());
        let reference = |addr: u128| {
            (0..=128u8)
                .rev()
                .find_map(|len| by_len[usize::from(len)].get(&(addr & mask6(len))).copied())
        };
        let mut probes: Vec<u128> = Vec::new();
        for _ in 0..20_000 {
            let (a, len, _) = routes[rng.below(routes.len() as u64) as usize];
            let r = (u128::from(rng.next()) << 64) | u128::from(rng.next());
            probes.push((a & mask6(len)) | (r & !mask6(len)));
            probes.push(r);
        }
        let mut out = vec![None; probes.len()];
        lpm.lookup_bulk(&probes, &mut out);
        for (&p, &o) in probes.iter().zip(&out) {
            assert_eq!(lpm.lookup(p), reference(p), "{}", Ipv6Addr::from(p));
            assert_eq!(o, reference(p));
        }
    }
}
