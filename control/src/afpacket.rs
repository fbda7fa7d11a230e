//! `net_af_packet` ports and the datagrams the kernel reassembles under them.
//!
//! DPDK 22.11's af_packet PMD joins every queue's socket to a `PACKET_FANOUT` group with
//! `PACKET_FANOUT_FLAG_DEFRAG`, whatever the devargs (none turns it off), so the kernel
//! reassembles IPv4 fragments before the PMD reads them and hands each datagram over whole,
//! as one frame. A `TPACKET_V2` ring frame keeps at most `framesz - 66` bytes of it (the
//! PMD's default `framesz=2048`: 1982 bytes; 1968 of IP) and the PMD delivers that head as
//! if it were the frame. So, unless its devargs size the ring themselves, ferryd gives an
//! af_packet port ring frames that hold any datagram up to 64,944 bytes ([`devargs`]) and
//! receives them into mbufs that large, from a pool of their own ([`RxPool`]); the router
//! then fragments each datagram for the egress MTU. Frames still cut short are counted as
//! `drop_truncated`, and [`TruncationWatch`] says in the log what to change.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_dataplane::counters::{DropReason, WorkerCounters};
use ferry_dataplane::dpdk::BURST;

use crate::config::Config;

/// Ring frame size ferryd sets. The PMD wants a frame's data (`framesz - 32`) to fit an rx
/// mbuf after its 128 bytes of headroom, in a data room of at most 65,535 bytes: at most
/// 65,424, a multiple of 16 (`TPACKET_ALIGNMENT`). And it finds frame `i` at `i * framesz`
/// from the ring's start, where the kernel puts it only if a block holds a whole number of
/// frames and no gap (`blocksz` a multiple of `framesz`, and of the 4 KiB page): 65,024 is
/// the largest size below 65,424 that 8 frames to a block allow (65,424 would need 256).
pub const FRAME_SIZE: u32 = 65_024;
/// Ring block size ferryd sets: 8 frames, 127 pages.
pub const BLOCK_SIZE: u32 = 8 * FRAME_SIZE;
/// Ring frames ferryd sets, per queue and direction (a multiple of the 8 frames in a
/// block). The tx ring gets the same frames as the rx ring (the PMD sizes both from one
/// request), so a queue pair maps 2 x 256 x 63.5 KiB = 31.75 MiB of kernel memory (each
/// 508 KiB block allocated as 512 KiB: 32 MiB). The rx ring absorbs traffic while a worker
/// is not polling (two workers on one CPU take turns of a few milliseconds): a 100 MB TCP
/// transfer over veth (noisy figures, on a shared machine) took about twice as long with
/// 64 frames as with the PMD's default ring of 512 small ones, about a third longer with
/// 128, about as long with 256.
pub const FRAME_COUNT: u32 = 256;
/// The PMD's own frame size (`framesz` not given).
pub const DEFAULT_FRAME_SIZE: u32 = 2048;
/// Bytes of a ring frame before the received frame's first byte: the kernel puts the
/// network header at `TPACKET_ALIGN(TPACKET2_HDRLEN + 16)` = 80 and the 14-byte Ethernet
/// header before it. A frame keeps at most `framesz - 66` bytes.
pub const RX_FRAME_OFFSET: u32 = 66;
/// What the PMD asks of an rx mbuf: `framesz - (TPACKET2_HDRLEN - sizeof(sockaddr_ll))`
/// bytes after the headroom.
const PMD_FRAME_OVERHEAD: u32 = 32;
/// DPDK's mbuf headroom (`RTE_PKTMBUF_HEADROOM`).
const HEADROOM: u32 = 128;
/// The ring keys the PMD reads (it takes any key that contains one of these names).
const RING_KEYS: [&str; 3] = ["blocksz", "framesz", "framecnt"];

/// A device name the af_packet PMD takes (DPDK matches vdev drivers by name prefix).
pub fn is_af_packet(device: &str) -> bool {
    device.starts_with("net_af_packet") || device.starts_with("eth_af_packet")
}

/// The devargs' `key=value` pairs after the device name.
fn pairs(devargs: &str) -> impl Iterator<Item = (&str, &str)> {
    devargs.split(',').skip(1).map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k.trim(), v.trim())
    })
}

/// True if the devargs size the ring themselves (any of blocksz, framesz, framecnt).
fn sets_ring(devargs: &str) -> bool {
    pairs(devargs).any(|(k, _)| RING_KEYS.iter().any(|r| k.contains(r)))
}

/// The devargs as ferryd hands them to EAL: for an af_packet port whose devargs set none of
/// `blocksz`, `framesz`, `framecnt`, ferryd's ring sizes appended; anything else unchanged.
pub fn devargs(devargs: &str) -> Cow<'_, str> {
    let device = devargs.split(',').next().unwrap_or("").trim();
    if !is_af_packet(device) || sets_ring(devargs) {
        return Cow::Borrowed(devargs);
    }
    Cow::Owned(format!(
        "{devargs},blocksz={BLOCK_SIZE},framesz={FRAME_SIZE},framecnt={FRAME_COUNT}"
    ))
}

/// The ring frame size an af_packet port ends up with (None for other ports): its devargs'
/// `framesz` (read as the PMD reads it: leading digits), the PMD's default if they size the
/// ring without it, ferryd's if they do not size it at all.
pub fn frame_size(devargs: &str) -> Option<u32> {
    let device = devargs.split(',').next().unwrap_or("").trim();
    if !is_af_packet(device) {
        return None;
    }
    if !sets_ring(devargs) {
        return Some(FRAME_SIZE);
    }
    let given = pairs(devargs)
        .find(|(k, _)| k.contains("framesz"))
        .map(|(_, v)| atoi(v));
    Some(given.unwrap_or(DEFAULT_FRAME_SIZE))
}

/// The devargs' `blocksz`, as the PMD reads it, or its default (the page size).
fn block_size(devargs: &str) -> u32 {
    pairs(devargs)
        .find(|(k, _)| k.contains("blocksz"))
        .map_or(4096, |(_, v)| atoi(v))
}

/// The leading digits of `v` as a number (0 if none), as C's `atoi` reads them.
fn atoi(v: &str) -> u32 {
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    v[..digits].parse().unwrap_or(0)
}

/// True unless an af_packet port's blocks do not hold a whole number of frames: DPDK
/// 22.11's PMD looks for frame `i` at `i * framesz`, the kernel puts it at the start of
/// block `i / (blocksz / framesz)` plus its place in the block, and past the first block the
/// two disagree: the port receives a frame or two and then nothing.
pub fn blocks_fit(devargs: &str) -> bool {
    let Some(framesz) = frame_size(devargs) else {
        return true;
    };
    if !sets_ring(devargs) {
        return true;
    }
    let blocksz = block_size(devargs);
    framesz == 0 || blocksz.is_multiple_of(framesz)
}

/// What an operator should hear at start about `cfg`'s af_packet ports: rings the PMD
/// cannot read past their first block, frames shorter than the port's MTU allows.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    for p in &cfg.ports {
        let Some(framesz) = frame_size(&p.devargs) else {
            continue;
        };
        if !blocks_fit(&p.devargs) {
            w.push(format!(
                "port {:?}: blocksz={} is not a multiple of framesz={framesz}: DPDK's \
                 af_packet PMD then looks for frames where the kernel did not put them and \
                 stops receiving after the first block; make blocksz a multiple of framesz",
                p.name,
                block_size(&p.devargs)
            ));
        }
        let keep = max_rx_frame(framesz);
        if keep < u32::from(p.mtu) + 14 {
            w.push(format!(
                "port {:?}: framesz={framesz} keeps {keep} bytes of a frame, less than an \
                 MTU of {} needs: frames are cut (drop_truncated); raise framesz",
                p.name, p.mtu
            ));
        }
    }
    w
}

/// The longest frame a ring of `framesz` frames delivers whole.
pub fn max_rx_frame(framesz: u32) -> u32 {
    framesz.saturating_sub(RX_FRAME_OFFSET)
}

/// The mbuf data room (headroom included) the PMD asks for a ring of `framesz` frames, at
/// most what an mbuf can have (the PMD refuses the queue if that is too small).
pub fn rx_data_room(framesz: u32) -> u16 {
    (framesz.saturating_sub(PMD_FRAME_OVERHEAD) + HEADROOM).min(u16::MAX as u32) as u16
}

/// The mempool the af_packet ports receive into when their ring frames do not fit the
/// ordinary pool's mbufs: large mbufs, few of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxPool {
    /// Data room of each mbuf, headroom included.
    pub room: u16,
    pub mbufs: u32,
    pub cache: u32,
    /// By port index: the port receives into this pool.
    pub ports: Vec<bool>,
}

impl RxPool {
    /// Mempool cache per lcore.
    pub const CACHE: u32 = 32;

    /// The pool for `cfg`'s af_packet ports whose ring frames need more than `room` (the
    /// ordinary pool's data room), or None if none does.
    ///
    /// Its mbufs, per worker: a burst being processed and one to spare, the packets held
    /// while neighbours resolve (`tuning.hold_packets`), what the worker's mempool cache
    /// keeps (up to 1.5 times its size); the af_packet tx copies a frame into its ring and frees the mbuf
    /// at once, and so does the exception TAP. A port of another kind may keep sent mbufs
    /// until its NIC is done with them, up to its tx ring, so each such port adds one tx
    /// ring per worker (without them a worker could wait for mbufs that only its own next
    /// transmit would free).
    pub fn plan(cfg: &Config, room: u16) -> Option<RxPool> {
        let ports: Vec<bool> = cfg
            .ports
            .iter()
            .map(|p| frame_size(&p.devargs).is_some_and(|f| rx_data_room(f) > room))
            .collect();
        let need = cfg
            .ports
            .iter()
            .zip(&ports)
            .filter(|(_, own)| **own)
            .filter_map(|(p, _)| frame_size(&p.devargs))
            .map(rx_data_room)
            .max()?;
        let workers = cfg.workers() as u32;
        let per_worker = 2 * BURST as u32 + cfg.tuning.hold_packets as u32 + Self::CACHE * 3 / 2;
        let others = cfg
            .ports
            .iter()
            .filter(|p| !is_af_packet(&p.device))
            .count() as u32;
        Some(RxPool {
            room: need,
            mbufs: workers * (per_worker + others * u32::from(cfg.tuning.tx_desc)),
            cache: Self::CACHE,
            ports,
        })
    }

    /// Hugepage memory the pool takes, about: each mbuf is its data room plus 128 bytes of
    /// `rte_mbuf` and 64 of mempool header; a 2 MiB page holds a whole number of them.
    pub fn hugepage_bytes(&self) -> u64 {
        let elt = (u64::from(self.room) + 128 + 64).div_ceil(64) * 64;
        let per_page = ((2u64 << 20) / elt).max(1);
        u64::from(self.mbufs).div_ceil(per_page) * (2 << 20)
    }
}

/// Kernel memory the af_packet rings of `cfg` map: per port, per queue pair (one per
/// worker), an rx and a tx ring of `framecnt` frames in blocks of `blocksz`. Only ports
/// whose devargs ferryd sized (others keep what their devargs ask).
pub fn ring_bytes(cfg: &Config) -> u64 {
    let ours = cfg
        .ports
        .iter()
        .filter(|p| is_af_packet(&p.device) && !sets_ring(&p.devargs))
        .count() as u64;
    ours * cfg.workers() as u64 * 2 * u64::from(FRAME_COUNT) * u64::from(FRAME_SIZE)
}

/// Watches `drop_truncated` on the control side and says in the log, at most every
/// [`TruncationWatch::EVERY`], what to change when it grows (workers never log).
pub struct TruncationWatch {
    seen: u64,
    last: Option<Instant>,
    hint: String,
}

impl TruncationWatch {
    pub const EVERY: Duration = Duration::from_secs(10);

    pub fn new(cfg: &Config) -> TruncationWatch {
        TruncationWatch {
            seen: 0,
            last: None,
            hint: truncation_hint(cfg),
        }
    }

    /// Log if the workers' `drop_truncated` grew since the last line (and that was at least
    /// EVERY ago).
    pub fn check(&mut self, counters: &[Arc<WorkerCounters>], now: Instant) {
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < Self::EVERY)
        {
            return;
        }
        let total: u64 = counters
            .iter()
            .map(|c| c.dropped(DropReason::Truncated))
            .sum();
        if let Some(grew) = self.grew(total) {
            self.last = Some(now);
            tracing::warn!(
                drop_truncated = total,
                new = grew,
                "frames cut short by their port were dropped: {}",
                self.hint
            );
        }
    }

    /// How much `total` grew since the last call that saw it grow.
    fn grew(&mut self, total: u64) -> Option<u64> {
        let grew = total.checked_sub(self.seen).filter(|g| *g > 0);
        self.seen = total;
        grew
    }
}

/// What to change so that a port stops cutting frames, for the ports of `cfg`.
pub fn truncation_hint(cfg: &Config) -> String {
    // One sentence per ring size (ports alike share it), in port order.
    let mut groups: Vec<(u32, bool, Vec<String>)> = Vec::new();
    for p in &cfg.ports {
        let Some(framesz) = frame_size(&p.devargs) else {
            continue;
        };
        let ours = !sets_ring(&p.devargs);
        match groups.iter_mut().find(|g| (g.0, g.1) == (framesz, ours)) {
            Some(g) => g.2.push(format!("{:?}", p.name)),
            None => groups.push((framesz, ours, vec![format!("{:?}", p.name)])),
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(framesz, ours, names)| {
            let keep = max_rx_frame(*framesz);
            let fix = if *ours {
                "no af_packet ring frame holds much more: use net_af_xdp (no reassembly) or a \
                 NIC, or keep datagrams smaller"
                    .to_string()
            } else {
                format!(
                    "remove blocksz/framesz/framecnt from the devargs (ferryd then sets \
                     blocksz={BLOCK_SIZE},framesz={FRAME_SIZE},framecnt={FRAME_COUNT}: \
                     datagrams up to {} bytes) or raise framesz (a multiple of 16, at most \
                     65424) with blocksz a multiple of both framesz and 4096",
                    max_rx_frame(FRAME_SIZE) - 14
                )
            };
            let (s, verb) = if names.len() > 1 {
                ("s", "keep")
            } else {
                ("", "keeps")
            };
            format!(
                "af_packet port{s} {} (framesz={framesz}) {verb} {keep} bytes of a frame, and \
                 the kernel reassembles IPv4 fragments under af_packet, so a datagram over {} \
                 bytes is cut: {fix}",
                names.join(", "),
                keep.saturating_sub(14)
            )
        })
        .collect();
    if parts.is_empty() {
        "a port received frames longer than its MTU and cut them (check the MTU of the \
         devices and peers, and GRO/LRO on the kernel side of virtual ports)"
            .to_string()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ports: &[&str], workers: usize, tx_desc: u16) -> Config {
        let lcores: Vec<String> = (0..=workers).map(|l| l.to_string()).collect();
        let mut y = format!("dpdk:\n  lcores: [{}]\nports:\n", lcores.join(", "));
        for (i, d) in ports.iter().enumerate() {
            y += &format!("  - name: p{i}\n    devargs: \"{d}\"\n    addresses: [10.0.{i}.1/24]\n");
        }
        y += &format!("tuning:\n  tx_desc: {tx_desc}\n");
        Config::from_yaml(&y).expect("config")
    }

    #[test]
    fn af_packet_devargs_get_ring_sizes_unless_they_set_one() {
        assert_eq!(
            devargs("net_af_packet0,iface=veth-in"),
            "net_af_packet0,iface=veth-in,blocksz=520192,framesz=65024,framecnt=256"
        );
        assert_eq!(
            devargs("net_af_packet_ft1-0,iface=veth-in,qpairs=2"),
            "net_af_packet_ft1-0,iface=veth-in,qpairs=2,blocksz=520192,framesz=65024,framecnt=256"
        );
        // The PMD's alias, and no arguments at all.
        assert_eq!(
            devargs("eth_af_packet1"),
            "eth_af_packet1,blocksz=520192,framesz=65024,framecnt=256"
        );
        // Any ring key given: the operator's choice stands, whole.
        for given in [
            "net_af_packet0,iface=a,framesz=4096,blocksz=4096",
            "net_af_packet0,iface=a,blocksz=8192",
            "net_af_packet0,iface=a,framecnt=64",
        ] {
            assert_eq!(devargs(given), given);
        }
        // Other devices, and an interface merely named like a key, are left alone / sized.
        for other in [
            "net_af_xdp0,iface=veth-out",
            "net_memif0,role=server",
            "0000:03:00.0",
            "net_tap0,iface=framesz",
        ] {
            assert_eq!(devargs(other), other);
        }
        assert_eq!(
            devargs("net_af_packet0,iface=framesz"),
            "net_af_packet0,iface=framesz,blocksz=520192,framesz=65024,framecnt=256"
        );
    }

    #[test]
    fn frame_size_is_what_the_pmd_will_use() {
        assert_eq!(frame_size("net_af_packet0,iface=a"), Some(FRAME_SIZE));
        assert_eq!(
            frame_size("net_af_packet0,iface=a,framesz=4096"),
            Some(4096)
        );
        assert_eq!(frame_size("net_af_packet0,iface=a,framecnt=64"), Some(2048));
        assert_eq!(
            frame_size("net_af_packet0,framesz=8192k"),
            Some(8192),
            "atoi"
        );
        assert_eq!(frame_size("net_af_xdp0,iface=a"), None);
        assert_eq!(max_rx_frame(2048), 1982);
        assert_eq!(max_rx_frame(FRAME_SIZE), 64_958);
        // The PMD wants framesz - 32 <= data room - 128.
        assert_eq!(rx_data_room(FRAME_SIZE), 65_120);
        assert_eq!(rx_data_room(2048), 2144);
        assert_eq!(rx_data_room(1 << 20), u16::MAX);
        // What the PMD and the kernel accept: a frame's data fits an mbuf; frames of 16-byte
        // multiples filling page-multiple blocks exactly; whole blocks.
        assert!(FRAME_SIZE - PMD_FRAME_OVERHEAD + HEADROOM <= u16::MAX as u32);
        assert_eq!(FRAME_SIZE % 16, 0);
        assert_eq!((BLOCK_SIZE % FRAME_SIZE, BLOCK_SIZE % 4096), (0, 0));
        assert_eq!(FRAME_COUNT % (BLOCK_SIZE / FRAME_SIZE), 0);
        // No larger frame the PMD accepts fills blocks of 8 frames or fewer.
        let max = u16::MAX as u32 - HEADROOM + PMD_FRAME_OVERHEAD;
        for f in (FRAME_SIZE + 16..=max).step_by(16) {
            assert!((1..=8).all(|k| k * f % 4096 != 0), "{f}");
        }
        assert!(blocks_fit("net_af_packet0,blocksz=8192,framesz=4096"));
        assert!(blocks_fit("net_af_packet0,iface=a"));
        assert!(!blocks_fit("net_af_packet0,blocksz=65536,framesz=65424"));
        assert!(
            !blocks_fit("net_af_packet0,framesz=3072"),
            "default blocksz 4096"
        );
    }

    #[test]
    fn rx_pool_only_for_af_packet_ports_with_large_frames() {
        let room = 2048 + 128;
        let c = cfg(
            &["net_af_packet0,iface=a", "net_af_packet1,iface=b"],
            1,
            1024,
        );
        let p = RxPool::plan(&c, room).expect("pool");
        assert_eq!(p.room, 65_120);
        assert_eq!(p.ports, vec![true, true]);
        assert_eq!(
            p.mbufs,
            2 * 32 + 256 + 48,
            "a burst and a spare, the held packets, the cache"
        );
        let c2 = cfg(
            &[
                "net_af_packet0,iface=a,qpairs=2",
                "net_af_packet1,iface=b,qpairs=2",
            ],
            2,
            1024,
        );
        assert_eq!(RxPool::plan(&c2, room).unwrap().mbufs, 2 * 368);
        // 736 mbufs of 65,344 bytes: 32 to a 2 MiB page, 23 pages.
        assert_eq!(RxPool::plan(&c2, room).unwrap().hugepage_bytes(), 23 << 21);
        // Frames that fit the ordinary pool (the PMD's default), and other devices: none.
        let c = cfg(
            &[
                "net_af_packet0,iface=a,framesz=2048",
                "net_memif0,role=server",
            ],
            1,
            1024,
        );
        assert_eq!(RxPool::plan(&c, room), None);
        // A NIC beside an af_packet port keeps up to a tx ring of mbufs per worker.
        let c = cfg(&["net_af_packet0,iface=a", "0000:03:00.0"], 2, 512);
        let p = RxPool::plan(&c, room).unwrap();
        assert_eq!(p.ports, vec![true, false]);
        assert_eq!(p.mbufs, 2 * (368 + 512));
    }

    #[test]
    fn ring_memory_counts_the_ports_ferryd_sized() {
        let c = cfg(
            &[
                "net_af_packet0,iface=a",
                "net_af_packet1,iface=b,framesz=4096",
            ],
            2,
            1024,
        );
        // One port, two queue pairs, rx and tx: 4 rings of 256 x 63.5 KiB.
        assert_eq!(ring_bytes(&c), 4 * 256 * 65_024);
    }

    #[test]
    fn truncation_is_logged_when_the_counter_grows() {
        let mut w = TruncationWatch::new(&cfg(&["net_af_packet0,iface=a"], 1, 1024));
        assert_eq!(w.grew(0), None);
        assert_eq!(w.grew(3), Some(3));
        assert_eq!(w.grew(3), None);
        assert_eq!(w.grew(5), Some(2));
        // check() reads the workers' counters and logs at most every EVERY.
        let c = Arc::new(WorkerCounters::default());
        WorkerCounters::drop(&c, DropReason::Truncated);
        let t0 = Instant::now();
        let mut w = TruncationWatch::new(&cfg(&["net_af_packet0,iface=a"], 1, 1024));
        w.check(std::slice::from_ref(&c), t0);
        assert_eq!((w.seen, w.last), (1, Some(t0)));
        WorkerCounters::drop(&c, DropReason::Truncated);
        w.check(std::slice::from_ref(&c), t0 + Duration::from_secs(1));
        assert_eq!(w.seen, 1, "not read again within EVERY");
        w.check(std::slice::from_ref(&c), t0 + TruncationWatch::EVERY);
        assert_eq!(w.seen, 2);
    }

    #[test]
    fn start_warnings_name_the_port_and_the_fix() {
        let c = cfg(
            &[
                "net_af_packet0,iface=a",
                "net_af_packet1,iface=b,blocksz=65536,framesz=65424",
                "net_af_packet2,iface=c,framesz=1024,blocksz=4096",
            ],
            1,
            1024,
        );
        let w = warnings(&c);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("port \"p1\": blocksz=65536 is not a multiple of framesz=65424"));
        assert!(w[1].starts_with("port \"p2\": framesz=1024 keeps 958 bytes"));
    }

    #[test]
    fn truncation_hint_says_what_to_change() {
        let h = truncation_hint(&cfg(&["net_af_packet0,iface=a,framesz=2048"], 1, 1024));
        let want = "af_packet port \"p0\" (framesz=2048) keeps 1982 bytes of a frame";
        assert!(h.starts_with(want), "{h}");
        assert!(h.contains("a datagram over 1968 bytes is cut"), "{h}");
        assert!(
            h.contains("remove blocksz/framesz/framecnt from the devargs"),
            "{h}"
        );
        let two = ["net_af_packet0,iface=a", "net_af_packet1,iface=b"];
        let h = truncation_hint(&cfg(&two, 1, 1024));
        let want = "af_packet ports \"p0\", \"p1\" (framesz=65024) keep 64958 bytes";
        assert!(h.starts_with(want), "{h}");
        assert!(h.contains("net_af_xdp"), "{h}");
        assert!(!h.contains(';'), "one sentence for both: {h}");
        let h = truncation_hint(&cfg(&["net_memif0,role=server"], 1, 1024));
        assert!(h.contains("longer than its MTU"), "{h}");
    }
}
