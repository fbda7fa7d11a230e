//! The thin safe wrapper over DPDK: EAL, mempools, owned mbufs, ports, bursts, lcores.
//! With `ffi`, the only crate of Ferry with `unsafe` (besides the benchmark's `rte_lpm`
//! wrappers in `perf`); every block says why it holds.

use std::ffi::{c_void, CStr, CString};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_ffi as ffi;

use crate::buf::PacketBuf;

/// The buffer a packet lives in, as the packet logic sees it (`ferry_dataplane::buf`).
pub mod buf {
    /// A single contiguous packet buffer with headroom and tailroom.
    pub trait PacketBuf {
        /// The packet bytes, starting at the Ethernet header.
        fn data(&self) -> &[u8];
        /// The packet bytes, writable.
        fn data_mut(&mut self) -> &mut [u8];
        /// Grow the packet at the front by `n` bytes (uninitialised content); false if no room.
        fn prepend(&mut self, n: usize) -> bool;
        /// Remove `n` bytes from the front; false if the packet is shorter.
        fn adj(&mut self, n: usize) -> bool;
        /// Remove `n` bytes from the end; false if the packet is shorter.
        fn trim(&mut self, n: usize) -> bool;
        /// Grow the packet at the end by `n` bytes; false if no room.
        fn append(&mut self, n: usize) -> bool;
        /// True if the whole packet is in this one buffer (a DPDK mbuf chain is not).
        fn contiguous(&self) -> bool {
            true
        }
        /// True if the NIC verified the IPv4 header checksum and found it good (DPDK's
        /// `RTE_MBUF_F_RX_IP_CKSUM_GOOD`, of the outer header: not for a packet the NIC parsed
        /// as a tunnel); false if it found it bad, did not check, or cannot.
        fn ip_cksum_good(&self) -> bool {
            false
        }
        /// Set the length to exactly `len`, growing or shrinking at the end.
        fn set_len(&mut self, len: usize) -> bool {
            let cur = self.data().len();
            if len >= cur {
                self.append(len - cur)
            } else {
                self.trim(cur - len)
            }
        }
    }
}

/// Packets per rx burst, as in l3fwd.
pub const BURST: usize = 32;
/// `RTE_MBUF_F_RX_IP_CKSUM_MASK`, `_GOOD`, `RTE_MBUF_F_RX_OUTER_IP_CKSUM_BAD` and
/// `RTE_PTYPE_TUNNEL_MASK` (DPDK 22.11; checked against the shim's).
const RX_IP_CKSUM_MASK: u64 = (1 << 4) | (1 << 7);
const RX_IP_CKSUM_GOOD: u64 = 1 << 7;
const RX_OUTER_IP_CKSUM_BAD: u64 = 1 << 5;
const PTYPE_TUNNEL_MASK: u32 = 0xf000;

/// Errors from DPDK calls, each naming what failed and DPDK's reason.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("EAL is already initialised in this process")]
    AlreadyInitialised,
    #[error("EAL init failed: {reason}{hint}")]
    EalInit { reason: String, hint: &'static str },
    #[error("argument contains a NUL byte: {0:?}")]
    Nul(String),
    #[error("mempool {name}: {reason}")]
    Mempool { name: String, reason: String },
    #[error("device {devargs:?}: {reason}")]
    Probe { devargs: String, reason: String },
    #[error("no DPDK port named {0:?} (is the devargs right and the PMD installed?)")]
    NoSuchPort(String),
    #[error("port {port}: {what}: {reason}")]
    Port {
        port: u16,
        what: &'static str,
        reason: String,
    },
    #[error("lcore {lcore}: launch failed: {reason}")]
    Launch { lcore: u32, reason: String },
    #[error("rte_lpm: {0}")]
    Lpm(String),
}

/// The text of a DPDK / errno error code (negative or positive).
pub fn strerror(errnum: i32) -> String {
    let errnum = errnum.abs();
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::rte_strerror(errnum)) }
        .to_string_lossy()
        .into_owned()
}

fn last_errno() -> i32 {
    // SAFETY: reads the thread-local rte_errno through the shim.
    unsafe { ffi::ferry_errno() }
}

/// The text of `rte_errno` now.
pub fn last_error() -> String {
    strerror(last_errno())
}

static EAL_UP: AtomicBool = AtomicBool::new(false);

/// The initialised Environment Abstraction Layer. One per process; cleaned up on drop.
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialise the EAL with `args` (without the program name). Once per process.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        if EAL_UP.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::AlreadyInitialised);
        }
        let mut owned = vec![CString::new("ferry").expect("literal has no NUL")];
        for a in args {
            let a = a.as_ref();
            owned.push(CString::new(a).map_err(|_| DpdkError::Nul(a.to_string()))?);
        }
        let mut argv: Vec<*mut libc::c_char> = owned.iter().map(|s| s.as_ptr() as *mut _).collect();
        argv.push(std::ptr::null_mut());
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive the call (EAL may
        // permute the pointer array, which we own; it does not write into the strings).
        let rc = unsafe { ffi::rte_eal_init((argv.len() - 1) as i32, argv.as_mut_ptr()) };
        if rc < 0 {
            EAL_UP.store(false, Ordering::SeqCst);
            let errno = last_errno();
            let reason = if errno == 0 {
                "EAL gave no reason, see its lines above".to_string()
            } else {
                strerror(errno)
            };
            // Some EAL failures set no rte_errno (strerror would say "Success"); the one that
            // is easy to cause is a second primary process on the same --file-prefix.
            let in_memory = args.iter().any(|a| a.as_ref() == "--in-memory");
            let hint = eal_hint(if errno == 0 && !in_memory {
                "busy"
            } else {
                &reason
            });
            return Err(DpdkError::EalInit { reason, hint });
        }
        Ok(Eal { _private: () })
    }

    /// The lcore the caller runs on (the main lcore for the thread that called `init`).
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: EAL is initialised (we hold an Eal).
        unsafe { ffi::rte_get_main_lcore() }
    }

    /// Worker lcores (all enabled lcores but the main one), in order.
    pub fn worker_lcores(&self) -> Vec<u32> {
        let mut out = Vec::new();
        // SAFETY: EAL is initialised; rte_get_next_lcore only reads EAL's lcore config.
        let mut i = unsafe { ffi::rte_get_next_lcore(u32::MAX, 1, 0) };
        while (i as usize) < ffi::RTE_MAX_LCORE as usize {
            out.push(i);
            // SAFETY: as above.
            i = unsafe { ffi::rte_get_next_lcore(i, 1, 0) };
        }
        out
    }

    /// Probe a device given by devargs after init (hotplug), e.g. a `net_tap` for the
    /// exception path. Returns the port id of the port it created, found by `name`.
    pub fn probe(&self, devargs: &str, name: &str) -> Result<u16, DpdkError> {
        let c = CString::new(devargs).map_err(|_| DpdkError::Nul(devargs.to_string()))?;
        // SAFETY: c is a valid NUL-terminated string; EAL is initialised.
        let rc = unsafe { ffi::rte_dev_probe(c.as_ptr()) };
        if rc < 0 {
            return Err(DpdkError::Probe {
                devargs: devargs.to_string(),
                reason: strerror(rc),
            });
        }
        port_by_name(name)
    }

    /// Launch `f` on worker lcore `lcore`. The closure's return value is the lcore's exit code.
    pub fn launch<F>(&self, lcore: u32, f: F) -> Result<(), DpdkError>
    where
        F: FnOnce() -> i32 + Send + 'static,
    {
        type Job = Box<dyn FnOnce() -> i32 + Send>;
        unsafe extern "C" fn trampoline(arg: *mut c_void) -> i32 {
            // SAFETY: arg is the Box<Job> leaked by `launch` below, handed over exactly once.
            let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
            job()
        }
        let job: Box<Job> = Box::new(Box::new(f));
        let raw = Box::into_raw(job) as *mut c_void;
        // SAFETY: trampoline matches lcore_function_t; raw is a valid leaked box reclaimed by
        // the trampoline, or below if the launch fails.
        let rc = unsafe { ffi::rte_eal_remote_launch(Some(trampoline), raw, lcore) };
        if rc < 0 {
            // SAFETY: the launch failed, so the trampoline never took ownership of raw.
            drop(unsafe { Box::from_raw(raw as *mut Job) });
            return Err(DpdkError::Launch {
                lcore,
                reason: strerror(rc),
            });
        }
        Ok(())
    }

    /// Wait for the job on `lcore` to return; its return value.
    pub fn wait(&self, lcore: u32) -> i32 {
        // SAFETY: EAL is initialised; waiting on any lcore id is allowed.
        unsafe { ffi::rte_eal_wait_lcore(lcore) }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: called once, after all ports and pools the program made were dropped
        // (they borrow nothing from Eal, so the caller orders drops; ferryd does).
        unsafe { ffi::rte_eal_cleanup() };
    }
}

/// Free hugepages of the default size, from /proc/meminfo (0 if unknown).
pub fn free_hugepages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

fn eal_hint(reason: &str) -> &'static str {
    let hugepages_free = free_hugepages();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        " (run as root, or grant CAP_SYS_ADMIN/CAP_NET_RAW/CAP_IPC_LOCK)"
    } else if hugepages_free == 0 {
        " (no free hugepages: echo 512 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages, \
          or add --no-huge --no-shconf -m 512 to dpdk.args)"
    } else if reason.contains("No such device") {
        " (a device in ports[].devargs is unknown or failed to probe, see the EAL line above; \
          vdevs are net_af_packet, net_af_xdp, net_memif, net_pcap, net_ring, net_tap, net_null)"
    } else if reason.contains("exists") || reason.contains("busy") {
        " (another DPDK process uses the same --file-prefix; give each its own or use --in-memory)"
    } else {
        ""
    }
}

/// Find a port by its device name (the part of devargs before the first comma).
pub fn port_by_name(name: &str) -> Result<u16, DpdkError> {
    let c = CString::new(name).map_err(|_| DpdkError::Nul(name.to_string()))?;
    let mut id = 0u16;
    // SAFETY: c is a valid C string and id a valid out pointer.
    let rc = unsafe { ffi::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
    if rc != 0 {
        return Err(DpdkError::NoSuchPort(name.to_string()));
    }
    Ok(id)
}

/// The id of the lcore the calling thread runs on (u32::MAX for a non-EAL thread).
#[inline]
pub fn lcore_id() -> u32 {
    // SAFETY: reads a thread-local.
    unsafe { ffi::ferry_lcore_id() }
}

/// Prefetch the cache line holding `r` (a hint; never faults).
#[inline]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint that never faults, and `r` is a valid reference anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            r as *const T as *const i8,
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// Time-stamp counter.
#[inline]
pub fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions (inlined, where the shim's is a call).
    return unsafe { std::arch::x86_64::_rdtsc() };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: rdtsc has no preconditions.
    return unsafe { ffi::ferry_rdtsc() };
}

/// DPDK's own Toeplitz hash (`rte_softrss`) of `input` (32-bit words in host order, as
/// `rte_thash_tuple` holds them) with a 40-byte RSS key: the reference Ferry's RSS code is
/// tested against. Needs no EAL.
pub fn softrss(input: &[u32], key: &[u8; 40]) -> u32 {
    // SAFETY: rte_softrss reads `len` words of `input` and, for each input bit, 4 bytes of
    // the key at offsets below len * 4 + 4 <= 40 when len <= 9; longer input is cut to 9
    // words (36 bytes: an IPv6 5-tuple's addresses and ports fit), so no read is out of
    // bounds.
    unsafe { ffi::ferry_softrss(input.as_ptr(), input.len().min(9) as u32, key.as_ptr()) }
}

/// TSC ticks per second (EAL must be up).
pub fn tsc_hz() -> u64 {
    // SAFETY: reads EAL's calibrated value; 0 before init.
    unsafe { ffi::rte_get_tsc_hz() }
}

/// Register a non-EAL thread with EAL so it gets an lcore id (and a mempool cache).
pub fn register_thread() -> bool {
    // SAFETY: allowed from any thread after EAL init; returns -1 on failure.
    unsafe { ffi::rte_thread_register() == 0 }
}

/// A packet mempool. Thread-safe (DPDK mempools are MP/MC with per-lcore caches).
pub struct Mempool {
    raw: NonNull<ffi::rte_mempool>,
}

// SAFETY: rte_mempool operations are safe from several threads at once (MP/MC ring backend).
unsafe impl Send for Mempool {}
// SAFETY: as above; &Mempool only allows alloc, which is multi-thread safe.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Create a packet mempool of `n` mbufs with `data_room` bytes each (headroom included).
    pub fn new(name: &str, n: u32, cache: u32, data_room: u16) -> Result<Mempool, DpdkError> {
        let c = CString::new(name).map_err(|_| DpdkError::Nul(name.to_string()))?;
        // SAFETY: c is a valid C string; EAL is up (checked by DPDK, errors via NULL).
        let raw = unsafe { ffi::rte_pktmbuf_pool_create(c.as_ptr(), n, cache, 0, data_room, -1) };
        NonNull::new(raw)
            .map(|raw| Mempool { raw })
            .ok_or_else(|| DpdkError::Mempool {
                name: name.to_string(),
                reason: last_error(),
            })
    }

    /// One mbuf, or None when the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: raw is a live mempool.
        NonNull::new(unsafe { ffi::ferry_pktmbuf_alloc(self.raw.as_ptr()) }).map(|raw| Mbuf { raw })
    }

    /// `n` (at most BURST) mbufs in one call, appended to `out` (which must have the
    /// capacity, so nothing is allocated); false and nothing added if the pool has fewer.
    #[inline]
    pub fn alloc_bulk(&self, out: &mut Vec<Mbuf>, n: usize) -> bool {
        let n = n.min(BURST);
        let mut ptrs = [std::ptr::null_mut::<ffi::rte_mbuf>(); BURST];
        // SAFETY: ptrs has room for n pointers; on success DPDK fills all n with owned mbufs.
        let rc = unsafe {
            ffi::ferry_pktmbuf_alloc_bulk(self.raw.as_ptr(), ptrs.as_mut_ptr(), n as u32)
        };
        if rc != 0 {
            return false;
        }
        for p in &ptrs[..n] {
            // SAFETY: alloc_bulk succeeded, so each of the n pointers is a live mbuf we own.
            let raw = unsafe { NonNull::new_unchecked(*p) };
            out.push(Mbuf { raw });
        }
        true
    }

    /// Mbufs available in the pool.
    pub fn available(&self) -> u32 {
        // SAFETY: raw is a live mempool.
        unsafe { ffi::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the pool is ours; ports using it were stopped by the owner before drop.
        unsafe { ffi::rte_mempool_free(self.raw.as_ptr()) };
    }
}

/// An owned single-segment packet buffer; freed on drop.
#[repr(transparent)]
pub struct Mbuf {
    raw: NonNull<ffi::rte_mbuf>,
}

// SAFETY: an Mbuf is uniquely owned; mbufs may be freed from any lcore.
unsafe impl Send for Mbuf {}

impl Mbuf {
    #[inline]
    fn m(&self) -> &ffi::rte_mbuf {
        // SAFETY: raw points to a live mbuf we own for as long as self lives.
        unsafe { self.raw.as_ref() }
    }

    /// DPDK port id the packet came in on.
    #[inline]
    pub fn port(&self) -> u16 {
        self.m().port
    }

    /// True if the packet is in one segment (Ferry drops chained mbufs).
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.m().nb_segs == 1
    }

    /// True if the NIC verified the (outer) IPv4 header checksum and found it good (the port
    /// has the rx offload on, see [`PortInfo::rx_ip_cksum`]); false for bad, not checked,
    /// unknown. On a packet the NIC parsed as a tunnel, the flag speaks of the inner header
    /// (the outer one has only a "bad" flag, and no flag may mean unchecked): false then.
    #[inline]
    pub fn ip_cksum_good(&self) -> bool {
        let m = self.m();
        // SAFETY: both members of the union are plain integers (the packet type, or the
        // same 32 bits as bit fields): any value is valid.
        let ptype = unsafe { m.__bindgen_anon_1.packet_type };
        (m.ol_flags & (RX_IP_CKSUM_MASK | RX_OUTER_IP_CKSUM_BAD) == RX_IP_CKSUM_GOOD)
            & (ptype & PTYPE_TUNNEL_MASK == 0)
    }

    /// The RSS hash the NIC computed, if it did.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        const RTE_MBUF_F_RX_RSS_HASH: u64 = 1 << 1;
        if self.m().ol_flags & RTE_MBUF_F_RX_RSS_HASH != 0 {
            // SAFETY: the flag says the hash union holds the RSS value.
            Some(unsafe { self.m().__bindgen_anon_2.hash.rss })
        } else {
            None
        }
    }

    /// Prefetch the first cache line of packet data.
    #[inline]
    pub fn prefetch_data(&self) {
        let m = self.m();
        // SAFETY: pointer arithmetic stays inside the mbuf's buffer; prefetch never faults.
        unsafe {
            ffi::ferry_prefetch0((m.buf_addr as *const u8).add(m.data_off as usize) as *const c_void)
        };
    }

    fn into_raw(self) -> *mut ffi::rte_mbuf {
        let p = self.raw.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it is freed exactly once here.
        unsafe { ffi::ferry_pktmbuf_free(self.raw.as_ptr()) };
    }
}

impl PacketBuf for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: data_off..data_off+data_len lies within the mbuf's buffer (DPDK invariant),
        // and the slice borrows self so the mbuf outlives it.
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }
    #[inline]
    fn contiguous(&self) -> bool {
        self.is_contiguous()
    }
    #[inline]
    fn ip_cksum_good(&self) -> bool {
        Mbuf::ip_cksum_good(self)
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(); &mut self makes the access unique.
        unsafe {
            let m = self.raw.as_mut();
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }
    fn prepend(&mut self, n: usize) -> bool {
        // SAFETY: rte_pktmbuf_prepend checks headroom and returns NULL when short.
        n <= u16::MAX as usize
            && !unsafe { ffi::ferry_pktmbuf_prepend(self.raw.as_ptr(), n as u16) }.is_null()
    }
    fn adj(&mut self, n: usize) -> bool {
        // SAFETY: rte_pktmbuf_adj checks the length and returns NULL when short.
        n <= u16::MAX as usize
            && !unsafe { ffi::ferry_pktmbuf_adj(self.raw.as_ptr(), n as u16) }.is_null()
    }
    #[inline]
    fn trim(&mut self, n: usize) -> bool {
        let m = self.m();
        if m.nb_segs == 1 {
            // One segment: what rte_pktmbuf_trim does, without the call.
            if n > m.data_len as usize {
                return false;
            }
            // SAFETY: &mut self owns the mbuf; shortening data_len/pkt_len by at most
            // data_len keeps both consistent and inside the buffer.
            let m = unsafe { self.raw.as_mut() };
            m.data_len -= n as u16;
            m.pkt_len -= n as u32;
            return true;
        }
        // SAFETY: rte_pktmbuf_trim checks the length and returns -1 when short.
        n <= u16::MAX as usize
            && unsafe { ffi::ferry_pktmbuf_trim(self.raw.as_ptr(), n as u16) } == 0
    }
    #[inline]
    fn append(&mut self, n: usize) -> bool {
        let m = self.m();
        if m.nb_segs == 1 {
            // One segment: what rte_pktmbuf_append does, without the call.
            let tail = m.buf_len as usize - m.data_off as usize - m.data_len as usize;
            if n > tail {
                return false;
            }
            // SAFETY: &mut self owns the mbuf; n fits the tailroom, so data_off + data_len
            // stays within buf_len (and below u16::MAX, since buf_len is a u16).
            let m = unsafe { self.raw.as_mut() };
            m.data_len += n as u16;
            m.pkt_len += n as u32;
            return true;
        }
        // SAFETY: rte_pktmbuf_append checks tailroom and returns NULL when short.
        n <= u16::MAX as usize
            && !unsafe { ffi::ferry_pktmbuf_append(self.raw.as_ptr(), n as u16) }.is_null()
    }
}

/// A burst of received mbufs; the ones not taken are freed on the next `recv` or on drop.
///
/// The slots are `Option<Mbuf>`, which has the layout of a nullable `rte_mbuf` pointer, so the
/// PMD writes straight into them and the packet code takes packets out of them in place.
/// Only `slots[..len]` are the burst's (each an owned mbuf or `None`); what the slots beyond
/// hold is stale (mbufs moved out of them as raw pointers, and never nulled: that was a
/// `memset` a burst) and is never read. So the array has no drop glue (`ManuallyDrop`):
/// `Drop` frees what `slots[..len]` still owns.
pub struct RxBurst {
    slots: std::mem::ManuallyDrop<[Option<Mbuf>; BURST]>,
    len: usize,
    next: usize,
}

// Option<Mbuf> must be exactly a (nullable) mbuf pointer for rx_burst to write into it.
const _: () = assert!(
    std::mem::size_of::<Option<Mbuf>>() == std::mem::size_of::<*mut ffi::rte_mbuf>()
        && std::mem::align_of::<Option<Mbuf>>() == std::mem::align_of::<*mut ffi::rte_mbuf>()
);

impl Default for RxBurst {
    fn default() -> Self {
        RxBurst {
            slots: std::mem::ManuallyDrop::new(std::array::from_fn(|_| None)),
            len: 0,
            next: 0,
        }
    }
}

impl RxBurst {
    /// Receive up to BURST packets from (port, queue), freeing what the burst still held.
    #[inline]
    pub fn recv(&mut self, port: u16, queue: u16) -> usize {
        self.free_rest();
        // SAFETY: Option<Mbuf> is a nullable pointer to an owned mbuf (repr(transparent) over
        // NonNull, asserted above); after free_rest no slot owns anything (len is 0: what the
        // slots hold is stale, and ManuallyDrop keeps the burst's own drop from touching
        // it); rx_burst writes at most BURST non-null owned mbuf pointers, so slots[..n]
        // become Some, owned by the burst.
        let n = unsafe {
            ffi::ferry_rx_burst(
                port,
                queue,
                self.slots.as_mut_ptr() as *mut *mut ffi::rte_mbuf,
                BURST as u16,
            )
        };
        self.len = (n as usize).min(BURST);
        self.next = 0;
        self.len
    }

    /// The packets of this burst, to be taken out in place (what is left is freed later).
    #[inline]
    pub fn packets(&mut self) -> &mut [Option<Mbuf>] {
        let (next, len) = (self.next, self.len);
        &mut self.slots[next..len]
    }

    /// Forget the burst once its mbufs were taken or moved out of the slots (what the slots
    /// still hold is stale from now on): the next `recv` has nothing to free.
    #[inline]
    fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
    }

    fn free_rest(&mut self) {
        // The worker takes every packet out of its slot, so there is usually nothing to free
        // (and no call to make). A fold, not `any`: a few vector ors instead of a loop.
        if self.slots[..self.len]
            .iter()
            .fold(false, |a, s| a | s.is_some())
        {
            // SAFETY: slots[..len] are nullable pointers to owned mbufs (None is NULL, which
            // rte_pktmbuf_free_bulk skips); each is freed once, and then forgotten with the
            // burst below (len 0: the stale pointers are never read, and never dropped).
            unsafe {
                ffi::ferry_pktmbuf_free_bulk(
                    self.slots.as_mut_ptr() as *mut *mut ffi::rte_mbuf,
                    self.len as u32,
                );
            }
        }
        self.len = 0;
        self.next = 0;
    }
}

impl Iterator for RxBurst {
    type Item = Mbuf;
    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        while self.next < self.len {
            let m = self.slots[self.next].take();
            self.next += 1;
            if m.is_some() {
                return m;
            }
        }
        None
    }
}

impl Drop for RxBurst {
    fn drop(&mut self) {
        self.free_rest();
    }
}

/// Packets buffered for one (port, queue), sent in bursts.
pub struct TxBuffer {
    port: u16,
    queue: u16,
    ptrs: [*mut ffi::rte_mbuf; TX_BUFFER],
    len: usize,
}

const TX_BUFFER: usize = 2 * BURST;

// SAFETY: the buffer owns its mbufs; it moves with the worker that owns the queue.
unsafe impl Send for TxBuffer {}

impl TxBuffer {
    pub fn new(port: u16, queue: u16) -> Self {
        TxBuffer {
            port,
            queue,
            ptrs: [std::ptr::null_mut(); TX_BUFFER],
            len: 0,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Nothing buffered.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queue a packet; flushes when full. Returns the number of packets dropped by a flush.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> usize {
        let mut dropped = 0;
        if self.len == TX_BUFFER {
            dropped = self.flush();
        }
        self.ptrs[self.len] = m.into_raw();
        self.len += 1;
        dropped
    }

    /// Queue every packet left in `burst`, in order, and leave the burst empty (a whole
    /// burst forwarded to one port), so that the next `recv` has nothing to look at.
    /// Returns (queued, dropped by flushes). With nothing buffered, a whole burst is sent at
    /// once, straight from its slots (as `flush` would send it after queueing it: no copy).
    #[inline]
    pub fn push_burst(&mut self, burst: &mut RxBurst) -> (usize, usize) {
        if self.len == 0
            && burst.len == BURST
            && burst.next == 0
            && burst.slots.iter().fold(true, |a, s| a & s.is_some())
        {
            return (BURST, self.send_slots(burst));
        }
        let slots = burst.packets();
        let mut dropped = 0;
        if self.len + slots.len() > TX_BUFFER {
            dropped = self.flush();
        }
        let n = slots.len();
        // Without branches, so that it is a few vector compares, not a loop of 32 exits.
        let full = slots.iter().fold(true, |a, s| a & s.is_some());
        if n <= TX_BUFFER - self.len && full {
            // SAFETY: every slot is Some, that is a non-null pointer to an owned mbuf (the
            // layout is asserted beside RxBurst); copying the pointers moves ownership into
            // ptrs[len..len + n], which has room; `burst.clear()` below then forgets the
            // slots (stale from now on, never read or dropped), so each mbuf has one owner.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    slots.as_ptr() as *const *mut ffi::rte_mbuf,
                    self.ptrs.as_mut_ptr().add(self.len),
                    n,
                );
            }
            self.len += n;
            burst.clear();
            return (n, dropped);
        }
        let mut queued = 0;
        for m in slots.iter_mut().filter_map(Option::take) {
            dropped += self.push(m);
            queued += 1;
        }
        burst.clear();
        (queued, dropped)
    }

    /// Send a full burst (every slot Some) from its slots, as `flush` sends: what the queue
    /// did not take is freed. Returns that count. The burst is left empty.
    fn send_slots(&mut self, burst: &mut RxBurst) -> usize {
        debug_assert!(burst.len == BURST && burst.next == 0);
        let ptrs = burst.slots.as_mut_ptr() as *mut *mut ffi::rte_mbuf;
        // SAFETY: every slot is Some, that is a non-null pointer to an owned mbuf
        // (Option<Mbuf> is a nullable mbuf pointer: asserted beside RxBurst), given up here:
        // the slots are forgotten below.
        let dropped = unsafe { send_or_free(self.port, self.queue, ptrs, BURST) };
        // Every mbuf now belongs to the PMD or was freed: forget the slots (no store).
        burst.clear();
        dropped
    }

    /// Send everything buffered; what the queue did not take is freed. Returns that count.
    #[inline]
    pub fn flush(&mut self) -> usize {
        if self.len == 0 {
            return 0;
        }
        // SAFETY: ptrs[..len] are owned mbufs, given up here (len is reset below).
        let dropped =
            unsafe { send_or_free(self.port, self.queue, self.ptrs.as_mut_ptr(), self.len) };
        self.len = 0;
        dropped
    }
}

/// Send the `n` mbufs at `ptrs` on (port, queue), retrying a little (virtual PMDs take
/// partial bursts when their ring is briefly full); what the queue did not take is freed.
/// Returns that count.
///
/// # Safety
/// `ptrs[..n]` are non-null pointers to mbufs the caller owns and gives up, `n <= 65535`.
#[inline]
unsafe fn send_or_free(port: u16, queue: u16, ptrs: *mut *mut ffi::rte_mbuf, n: usize) -> usize {
    let mut sent = 0usize;
    for _ in 0..4 {
        // SAFETY: ptrs[sent..n] are owned mbufs (the caller's contract); tx_burst takes
        // ownership of those it sends.
        let k = unsafe { ffi::ferry_tx_burst(port, queue, ptrs.add(sent), (n - sent) as u16) };
        sent += k as usize;
        if sent == n {
            break;
        }
    }
    let dropped = n - sent;
    if dropped > 0 {
        // SAFETY: the unsent tail is still ours; free it in bulk.
        unsafe { ffi::ferry_pktmbuf_free_bulk(ptrs.add(sent), dropped as u32) };
    }
    dropped
}

impl Drop for TxBuffer {
    fn drop(&mut self) {
        // SAFETY: the buffered mbufs are ours and are freed exactly once.
        unsafe { ffi::ferry_pktmbuf_free_bulk(self.ptrs.as_mut_ptr(), self.len as u32) };
    }
}

/// Link state of a port.
#[derive(Clone, Copy, Debug, Default)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.up {
            write!(f, "up {} Mbps", self.speed_mbps)
        } else {
            write!(f, "down")
        }
    }
}

/// Device counters of a port (from the PMD).
#[derive(Clone, Copy, Debug, Default)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// How to set a port up.
#[derive(Clone, Debug)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub mtu: Option<u16>,
    /// Ask the NIC for its IPv4 header checksum verdict (if it can give one): for the ports
    /// the fast path serves, not for the kernel side, which gains nothing from it.
    pub rx_ip_cksum: bool,
    /// Let the NIC free sent mbufs the fast way (`RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE`, if it
    /// offers it): only when every mbuf sent on the port comes from one mempool, so not when
    /// some port receives into a pool of its own.
    pub mbuf_fast_free: bool,
}

/// What a port turned out to be after configuration.
#[derive(Clone, Debug)]
pub struct PortInfo {
    pub id: u16,
    pub driver: String,
    pub mac: [u8; 6],
    pub mtu: u16,
    pub rss: bool,
    /// The NIC verifies IPv4 header checksums (`RTE_ETH_RX_OFFLOAD_IPV4_CKSUM` is on) and
    /// flags each mbuf with its verdict.
    pub rx_ip_cksum: bool,
    pub rx_queues: u16,
    pub tx_queues: u16,
}

/// A configured, started Ethernet port. Stopped and closed on drop.
pub struct Port {
    info: PortInfo,
}

impl Port {
    /// Configure and start port `id` with its rx queues on `pool` (the mempool its PMD
    /// receives into; a port may have one of its own). Offloads are limited to
    /// what the device offers; RSS is enabled when there are several rx queues and the PMD
    /// supports it.
    pub fn start(id: u16, cfg: &PortConfig, pool: &Mempool) -> Result<Port, DpdkError> {
        let err = |what: &'static str, rc: i32| DpdkError::Port {
            port: id,
            what,
            reason: strerror(rc),
        };
        let mut dev = ffi::rte_eth_dev_info::default();
        // SAFETY: dev is a valid out pointer.
        let rc = unsafe { ffi::rte_eth_dev_info_get(id, &mut dev) };
        if rc != 0 {
            return Err(err("device info", rc));
        }
        let driver = if dev.driver_name.is_null() {
            String::from("?")
        } else {
            // SAFETY: driver_name is a static C string owned by the PMD.
            unsafe { CStr::from_ptr(dev.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        if cfg.rx_queues > dev.max_rx_queues || cfg.tx_queues > dev.max_tx_queues {
            return Err(DpdkError::Port {
                port: id,
                what: "queues",
                reason: format!(
                    "{driver} offers {} rx / {} tx queues, {} rx / {} tx needed (one per worker); \
                     use fewer workers or give the device more queues (e.g. qpairs= / rxq=)",
                    dev.max_rx_queues, dev.max_tx_queues, cfg.rx_queues, cfg.tx_queues
                ),
            });
        }
        let mut conf = ffi::rte_eth_conf::default();
        let rss_hf = ferry_rss_hf() & dev.flow_type_rss_offloads;
        let rss = cfg.rx_queues > 1 && rss_hf != 0;
        if rss {
            conf.rxmode.mq_mode = ffi_mq_rss();
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        // SAFETY: reads a const global from the shim.
        let fast_free = unsafe { ffi::ferry_eth_tx_offload_mbuf_fast_free };
        if cfg.mbuf_fast_free {
            conf.txmode.offloads = fast_free & dev.tx_offload_capa;
        }
        // The NIC's IPv4 header checksum verdict, where it has one: a burst it vouches for
        // skips the fast path's own check.
        // SAFETY: reads a const global from the shim.
        let ip_cksum = unsafe { ffi::ferry_eth_rx_offload_ipv4_cksum };
        if cfg.rx_ip_cksum {
            conf.rxmode.offloads |= ip_cksum & dev.rx_offload_capa;
        }
        if let Some(mtu) = cfg.mtu {
            conf.rxmode.mtu = mtu as u32;
        }
        // SAFETY: conf is a fully initialised rte_eth_conf.
        let rc = unsafe { ffi::rte_eth_dev_configure(id, cfg.rx_queues, cfg.tx_queues, &conf) };
        if rc != 0 {
            return Err(err("configure", rc));
        }
        let mut rxd = cfg.rx_desc;
        let mut txd = cfg.tx_desc;
        // SAFETY: valid out pointers.
        let rc = unsafe { ffi::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rxd, &mut txd) };
        if rc != 0 {
            return Err(err("descriptor counts", rc));
        }
        for q in 0..cfg.rx_queues {
            // SAFETY: port is configured; NULL rxconf means the device default; pool is live
            // and outlives the port (ferryd drops ports before pools).
            let rc = unsafe {
                ffi::rte_eth_rx_queue_setup(
                    id,
                    q,
                    rxd,
                    ffi::SOCKET_ID_ANY as u32,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if rc != 0 {
                return Err(err("rx queue setup", rc));
            }
        }
        let mut txconf = dev.default_txconf;
        txconf.offloads = conf.txmode.offloads;
        for q in 0..cfg.tx_queues {
            // SAFETY: port is configured; txconf is the device default with our offloads.
            let rc = unsafe {
                ffi::rte_eth_tx_queue_setup(id, q, txd, ffi::SOCKET_ID_ANY as u32, &txconf)
            };
            if rc != 0 {
                return Err(err("tx queue setup", rc));
            }
        }
        if let Some(mtu) = cfg.mtu {
            // SAFETY: plain call on a configured port. Some vdevs cannot change MTU: not fatal.
            let rc = unsafe { ffi::rte_eth_dev_set_mtu(id, mtu) };
            if rc != 0 {
                tracing::debug!(port = id, mtu, "set_mtu: {}", strerror(rc));
            }
        }
        // SAFETY: plain call on a configured port.
        let rc = unsafe { ffi::rte_eth_dev_start(id) };
        if rc != 0 {
            return Err(err("start", rc));
        }
        // SAFETY: plain call on a started port; failure (unsupported) is harmless.
        unsafe { ffi::rte_eth_promiscuous_enable(id) };
        // SAFETY: as above.
        unsafe { ffi::rte_eth_allmulticast_enable(id) };
        let mut mac = ffi::rte_ether_addr::default();
        // SAFETY: valid out pointer.
        unsafe { ffi::rte_eth_macaddr_get(id, &mut mac) };
        let mut mtu = 0u16;
        // SAFETY: valid out pointer.
        if unsafe { ffi::rte_eth_dev_get_mtu(id, &mut mtu) } != 0 {
            mtu = cfg.mtu.unwrap_or(1500);
        }
        Ok(Port {
            info: PortInfo {
                id,
                driver,
                mac: mac.addr_bytes,
                mtu,
                rss,
                rx_ip_cksum: conf.rxmode.offloads & ip_cksum != 0,
                rx_queues: cfg.rx_queues,
                tx_queues: cfg.tx_queues,
            },
        })
    }

    pub fn info(&self) -> &PortInfo {
        &self.info
    }

    pub fn id(&self) -> u16 {
        self.info.id
    }

    /// Link state without waiting.
    pub fn link(&self) -> Link {
        link(self.info.id)
    }

    /// Device counters.
    pub fn stats(&self) -> PortStats {
        stats(self.info.id)
    }
}

/// Link state of any port id.
pub fn link(id: u16) -> Link {
    let mut l = ffi::rte_eth_link::default();
    // SAFETY: valid out pointer; the call does not block.
    unsafe { ffi::rte_eth_link_get_nowait(id, &mut l) };
    Link {
        up: l.link_status() != 0,
        speed_mbps: l.link_speed,
    }
}

/// Device counters of any port id.
pub fn stats(id: u16) -> PortStats {
    let mut s = ffi::rte_eth_stats::default();
    // SAFETY: valid out pointer.
    unsafe { ffi::rte_eth_stats_get(id, &mut s) };
    PortStats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        ibytes: s.ibytes,
        obytes: s.obytes,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: the port is ours; workers using it have returned before ports drop.
        unsafe {
            ffi::rte_eth_dev_stop(self.info.id);
            ffi::rte_eth_dev_close(self.info.id);
        }
    }
}

fn ferry_rss_hf() -> u64 {
    // SAFETY: reads const globals from the shim.
    unsafe { ffi::ferry_eth_rss_ip | ffi::ferry_eth_rss_udp | ffi::ferry_eth_rss_tcp }
}

fn ffi_mq_rss() -> ffi::rte_eth_rx_mq_mode {
    // SAFETY: reads a const global from the shim.
    unsafe { ffi::ferry_eth_mq_rx_rss as ffi::rte_eth_rx_mq_mode }
}

/// A DPDK ring of owned mbufs (lock-free; single- or multi-producer/consumer), for handing
/// packets from one lcore to another. Mbufs still in the ring are freed on drop.
pub struct MbufRing {
    raw: NonNull<ffi::rte_ring>,
}

// SAFETY: rte_ring is made for use across lcores; the SP/SC flags chosen at creation say how
// many threads may enqueue/dequeue at once, and the &mut receivers below enforce that for SP/SC.
unsafe impl Send for MbufRing {}
// SAFETY: as above.
unsafe impl Sync for MbufRing {}

impl MbufRing {
    /// A ring of `size` slots (a power of two; one slot stays empty, as in DPDK).
    pub fn new(
        name: &str,
        size: u32,
        single_producer: bool,
        single_consumer: bool,
    ) -> Result<MbufRing, DpdkError> {
        let c = CString::new(name).map_err(|_| DpdkError::Nul(name.to_string()))?;
        let mut flags = 0;
        if single_producer {
            // SAFETY: reads a const global from the shim.
            flags |= unsafe { ffi::ferry_ring_f_sp_enq };
        }
        if single_consumer {
            // SAFETY: reads a const global from the shim.
            flags |= unsafe { ffi::ferry_ring_f_sc_deq };
        }
        // SAFETY: valid name; EAL is up (DPDK returns NULL otherwise).
        let raw = unsafe { ffi::rte_ring_create(c.as_ptr(), size, -1, flags) };
        NonNull::new(raw)
            .map(|raw| MbufRing { raw })
            .ok_or_else(|| DpdkError::Mempool {
                name: name.to_string(),
                reason: format!("ring of {size}: {}", last_error()),
            })
    }

    /// Enqueue one mbuf; gives it back if the ring is full.
    pub fn enqueue(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        let p = m.into_raw() as *mut c_void;
        // SAFETY: ring is live; we pass one valid pointer; on success the ring owns the mbuf.
        let n = unsafe { ffi::ferry_ring_enqueue_burst(self.raw.as_ptr(), &p, 1) };
        if n == 1 {
            Ok(())
        } else {
            // SAFETY: p came from a live Mbuf and was not enqueued, so the mbuf is still ours.
            let raw = unsafe { NonNull::new_unchecked(p as *mut ffi::rte_mbuf) };
            Err(Mbuf { raw })
        }
    }

    /// Dequeue one mbuf.
    pub fn dequeue(&mut self) -> Option<Mbuf> {
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: ring is live; p is a valid slot for one pointer.
        let n = unsafe { ffi::ferry_ring_dequeue_burst(self.raw.as_ptr(), &mut p, 1) };
        if n == 1 {
            NonNull::new(p as *mut ffi::rte_mbuf).map(|raw| Mbuf { raw })
        } else {
            None
        }
    }
}

impl Drop for MbufRing {
    fn drop(&mut self) {
        while self.dequeue().is_some() {}
        // SAFETY: the ring is ours and empty; freed once.
        unsafe { ffi::rte_ring_free(self.raw.as_ptr()) };
    }
}

/// Ask the kernel to back a large table with transparent huge pages (as DPDK's own tables
/// sit in hugepage memory): fewer TLB misses on random lookups. Best effort; returns the
/// bytes advised.
pub fn advise_hugepages<T>(mem: &[T]) -> usize {
    const HUGE: usize = 2 << 20;
    const MADV_COLLAPSE: i32 = 25;
    let start = mem.as_ptr() as usize;
    let end = start + std::mem::size_of_val(mem);
    let a = start.div_ceil(HUGE) * HUGE;
    let b = end / HUGE * HUGE;
    if b <= a {
        return 0;
    }
    // SAFETY: [a, b) lies inside `mem`, which is borrowed for the call; madvise with these
    // advice values changes only how pages are backed, never their content.
    unsafe {
        libc::madvise(a as *mut c_void, b - a, libc::MADV_HUGEPAGE);
        libc::madvise(a as *mut c_void, b - a, MADV_COLLAPSE);
    }
    b - a
}

#[cfg(test)]
mod tests {
    /// The mbuf flag values Rust tests are DPDK's own (read from the shim, built from the
    /// headers).
    #[test]
    fn ip_cksum_flags_match_the_shim() {
        // SAFETY: plain `const` globals defined in shim.c.
        let shim = unsafe {
            (
                super::ffi::ferry_mbuf_f_rx_ip_cksum_mask,
                super::ffi::ferry_mbuf_f_rx_ip_cksum_good,
                super::ffi::ferry_mbuf_f_rx_outer_ip_cksum_bad,
                super::ffi::ferry_ptype_tunnel_mask,
            )
        };
        let ours = (
            super::RX_IP_CKSUM_MASK,
            super::RX_IP_CKSUM_GOOD,
            super::RX_OUTER_IP_CKSUM_BAD,
            super::PTYPE_TUNNEL_MASK,
        );
        assert_eq!(ours, shim);
    }
}
