//! `ferry-pktgen`: a DPDK packet generator for benchmarking Ferry (and l3fwd, testpmd, the
//! kernel, ...).
//!
//! Sends UDP or TCP over IPv4 or IPv6 on the first port, at full speed or at a fixed rate,
//! receives on every port, counts loss and measures latency from a TSC stamp in the payload
//! (p50/p99/p99.9). Frames are 64..1518 bytes or IMIX (64/594/1518 in 7:4:1, the "simple
//! IMIX" TRex and most labs use), over 1 to 10M flows (source address and port).
//!
//! Fast by construction: one template per frame size built before the run; per packet the
//! mbufs come in bulk, the template is copied, and four fields are patched (source address
//! and port, stamp) with incremental checksum updates; received mbufs are freed in bulk.
//! With `--search LOSS` it finds the highest rate forwarded with at most that loss by
//! binary search, as RFC 2544 does.
//!
//! ```text
//! ferry-pktgen --port net_memif0,role=client,socket=/tmp/m.sock,id=0 \
//!              --port net_memif1,role=client,socket=/tmp/m.sock,id=1 \
//!              --dst-mac 00:01:02:03:04:01 --dst-ip 10.253.0.1 --flows 1024 --size 64 \
//!              --duration 5 [--proto tcp] [--rate 2000000] [--search 0.001] [--lcore 0]
//! ```
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ferry_dataplane::buf::PacketBuf;
use ferry_dataplane::dpdk::{self, Eal, Mbuf, Mempool, Port, PortConfig, RxBurst, TxBuffer};
use ferry_dataplane::wire::{checksum, ethernet, ipv4, ipv6};

/// Marks our packets; the low 32 bits of the TSC at send time follow it.
const MAGIC: u32 = 0xfe77_9e4e;
const STAMP_LEN: usize = 8;
const BURST: usize = 32;
/// Source ports per source address; more flows move on to the next address.
const PORTS_PER_ADDR: u32 = 60_000;
const FIRST_PORT: u16 = 1024;
/// Simple IMIX: frame sizes (with FCS) and their shares.
const IMIX: [(usize, usize); 3] = [(64, 7), (594, 4), (1518, 1)];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Udp,
    Tcp,
}

#[derive(Clone, Copy, Debug)]
enum Size {
    Fixed(usize),
    Imix,
}

struct Args {
    ports: Vec<String>,
    lcore: u32,
    src_mac: Option<[u8; 6]>,
    dst_mac: [u8; 6],
    src_ip: Option<IpAddr>,
    dst_ip: IpAddr,
    proto: Proto,
    /// TCP: SYN segments (each flow a new connection) instead of ACK|PSH.
    syn: bool,
    flows: u32,
    size: Size,
    rate: Option<u64>,
    duration: f64,
    search: Option<f64>,
    queues: u16,
    json: bool,
    /// Write the traffic to this pcap file instead of sending it (no EAL, no ports).
    pcap: Option<String>,
}

fn usage(msg: &str) -> ! {
    eprintln!("ferry-pktgen: {msg}");
    eprintln!(
        "usage: ferry-pktgen --port DEVARGS [--port DEVARGS] --dst-mac MAC [--src-mac MAC] \
         [--dst-ip A] [--src-ip A] [--proto udp|tcp] [--syn] [--flows 1..10000000] \
         [--size 64..1518|imix] [--rate PPS] [--duration S] [--search LOSS] [--queues N] \
         [--lcore CPU] [--json] [--pcap FILE]"
    );
    std::process::exit(2)
}

/// `s` parsed as a `T` that satisfies `ok`, or the usage error `msg`.
fn bounded<T: std::str::FromStr>(s: String, ok: impl Fn(&T) -> bool, msg: &str) -> T {
    s.parse()
        .ok()
        .filter(|x| ok(x))
        .unwrap_or_else(|| usage(msg))
}

fn parse_args() -> Args {
    let mut a = Args {
        ports: Vec::new(),
        lcore: 0,
        src_mac: None,
        dst_mac: [0; 6],
        src_ip: None,
        dst_ip: IpAddr::from([10, 253, 0, 1]),
        proto: Proto::Udp,
        syn: false,
        flows: 1024,
        size: Size::Fixed(64),
        rate: None,
        duration: 5.0,
        search: None,
        queues: 1,
        json: false,
        pcap: None,
    };
    let mut dst_mac = false;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{k} needs a value")))
        };
        let ip = |k: &str, s: String| -> IpAddr {
            s.parse()
                .unwrap_or_else(|_| usage(&format!("{k}: {s:?} is not an IP address")))
        };
        match k.as_str() {
            "--port" => a.ports.push(v()),
            "--lcore" => a.lcore = v().parse().unwrap_or_else(|_| usage("--lcore: a number")),
            "--src-mac" => {
                a.src_mac = Some(ethernet::parse_mac(&v()).unwrap_or_else(|| usage("--src-mac")))
            }
            "--dst-mac" => {
                a.dst_mac = ethernet::parse_mac(&v()).unwrap_or_else(|| usage("--dst-mac"));
                dst_mac = true;
            }
            "--src-ip" => a.src_ip = Some(ip("--src-ip", v())),
            "--dst-ip" => a.dst_ip = ip("--dst-ip", v()),
            "--proto" => {
                a.proto = match v().as_str() {
                    "udp" => Proto::Udp,
                    "tcp" => Proto::Tcp,
                    other => usage(&format!("--proto: udp or tcp, not {other:?}")),
                }
            }
            "--flows" => {
                a.flows = bounded(
                    v(),
                    |f| (1..=10_000_000).contains(f),
                    "--flows: 1..=10000000",
                )
            }
            "--size" => {
                let s = v();
                a.size = if s == "imix" {
                    Size::Imix
                } else {
                    Size::Fixed(bounded(
                        s,
                        |s| (64..=1518).contains(s),
                        "--size: 64..=1518 (frame bytes with the FCS) or imix",
                    ))
                }
            }
            "--rate" => a.rate = Some(bounded(v(), |r| *r > 0, "--rate: packets/s, above 0")),
            "--duration" => {
                a.duration = bounded(
                    v(),
                    |d: &f64| *d > 0.0 && *d <= 3600.0,
                    "--duration: seconds, 0..3600",
                )
            }
            "--search" => {
                a.search = Some(bounded(
                    v(),
                    |l: &f64| (0.0..1.0).contains(l),
                    "--search: a loss ratio, 0 <= loss < 1",
                ))
            }
            "--queues" => a.queues = bounded(v(), |q| (1..=16).contains(q), "--queues: 1..=16"),
            "--json" => a.json = true,
            "--syn" => a.syn = true,
            "--pcap" => a.pcap = Some(v()),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if (a.ports.is_empty() && a.pcap.is_none()) || !dst_mac {
        usage("--port (or --pcap FILE) and --dst-mac are needed");
    }
    if let Some(src) = a.src_ip {
        if src.is_ipv4() != a.dst_ip.is_ipv4() {
            usage("--src-ip and --dst-ip must be the same family");
        }
    }
    a
}

/// One prebuilt frame of one size, and where the per-packet fields are.
struct Template {
    frame: Vec<u8>,
    /// Offset of the 32 bits of source address that vary per flow (the IPv4 address, or the
    /// low 32 bits of the IPv6 one), of the source port, of the L4 checksum and of the stamp.
    src_at: usize,
    sport_at: usize,
    l4_csum_at: usize,
    stamp_at: usize,
    /// The IPv4 header checksum's offset (None for IPv6).
    ip_csum_at: Option<usize>,
    udp: bool,
}

/// Header bytes before the stamp, by family and protocol.
fn header_len(v6: bool, proto: Proto) -> usize {
    14 + if v6 { 40 } else { 20 } + if proto == Proto::Tcp { 20 } else { 8 }
}

/// The smallest frame (with FCS) that holds the headers and the stamp.
fn min_frame(v6: bool, proto: Proto) -> usize {
    (header_len(v6, proto) + STAMP_LEN + 4).max(64)
}

fn template(a: &Args, src_mac: [u8; 6], src: IpAddr, size: usize) -> Template {
    // Frame size counts the 4-byte FCS, as RFC 2544 and TRex do.
    let len = size - 4;
    let v6 = a.dst_ip.is_ipv6();
    let l3 = 14;
    let l4 = l3 + if v6 { 40 } else { 20 };
    let mut p = vec![0u8; len];
    p[0..6].copy_from_slice(&a.dst_mac);
    p[6..12].copy_from_slice(&src_mac);
    let l4_len = (len - l4) as u16;
    let proto = match a.proto {
        Proto::Udp => ipv4::PROTO_UDP,
        Proto::Tcp => ipv4::PROTO_TCP,
    };
    let (src_at, ip_csum_at) = match (src, a.dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
            ipv4::emit_header(&mut p[l3..], s.octets(), d.octets(), proto, 64, l4_len, 0)
                .expect("template fits");
            (l3 + 12, Some(l3 + 10))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV6.to_be_bytes());
            ipv6::emit_header(&mut p[l3..], &s.octets(), &d.octets(), proto, 64, l4_len)
                .expect("template fits");
            (l3 + 8 + 12, None)
        }
        _ => usage("--src-ip and --dst-ip must be the same family"),
    };
    p[l4..l4 + 2].copy_from_slice(&FIRST_PORT.to_be_bytes());
    p[l4 + 2..l4 + 4].copy_from_slice(&9u16.to_be_bytes());
    let (l4_csum_at, stamp_at) = match a.proto {
        Proto::Udp => {
            p[l4 + 4..l4 + 6].copy_from_slice(&l4_len.to_be_bytes());
            (l4 + 6, l4 + 8)
        }
        Proto::Tcp => {
            // An established-connection segment: ACK|PSH, fixed sequence numbers.
            p[l4 + 4..l4 + 8].copy_from_slice(&1u32.to_be_bytes());
            p[l4 + 8..l4 + 12].copy_from_slice(&1u32.to_be_bytes());
            p[l4 + 12] = 5 << 4;
            p[l4 + 13] = if a.syn { 0x02 } else { 0x18 };
            p[l4 + 14..l4 + 16].copy_from_slice(&65535u16.to_be_bytes());
            (l4 + 16, l4 + 20)
        }
    };
    p[stamp_at..stamp_at + 4].copy_from_slice(&MAGIC.to_be_bytes());
    let pseudo = match (src, a.dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            checksum::pseudo_v4(s.octets(), d.octets(), proto, l4_len)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum::pseudo_v6(&s.octets(), &d.octets(), proto, l4_len as u32)
        }
        _ => unreachable!("families checked above"),
    };
    let c = checksum::finish(checksum::add(pseudo, checksum::sum(&p[l4..])));
    p[l4_csum_at..l4_csum_at + 2].copy_from_slice(&c.to_be_bytes());
    Template {
        frame: p,
        src_at,
        sport_at: l4,
        l4_csum_at,
        stamp_at,
        ip_csum_at,
        udp: a.proto == Proto::Udp,
    }
}

/// RFC 1624 eqn. 3 over several 16-bit words: the checksum after `old` became `new`.
#[inline(always)]
fn adjust(csum: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut s = u32::from(!csum);
    for &o in old {
        s += u32::from(!o);
    }
    for &n in new {
        s += u32::from(n);
    }
    checksum::finish(s)
}

fn words32(x: u32) -> [u16; 2] {
    [(x >> 16) as u16, x as u16]
}

impl Template {
    /// Copy the template into `d` for source `src` (32 varying bits) and port `sport`,
    /// stamped with `tsc`; all checksums stay valid.
    #[inline(always)]
    fn write(&self, d: &mut [u8], src: u32, sport: u16, tsc: u32) {
        d.copy_from_slice(&self.frame);
        let f = &self.frame;
        let rd = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
        let old_src = u32::from_be_bytes([
            f[self.src_at],
            f[self.src_at + 1],
            f[self.src_at + 2],
            f[self.src_at + 3],
        ]);
        let [o0, o1] = words32(old_src);
        let [n0, n1] = words32(src);
        let [t0, t1] = words32(tsc);
        d[self.src_at..self.src_at + 4].copy_from_slice(&src.to_be_bytes());
        d[self.sport_at..self.sport_at + 2].copy_from_slice(&sport.to_be_bytes());
        d[self.stamp_at + 4..self.stamp_at + 8].copy_from_slice(&tsc.to_be_bytes());
        if let Some(at) = self.ip_csum_at {
            let c = adjust(rd(at), &[o0, o1], &[n0, n1]);
            d[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        // The stamp's time was zero in the template.
        let at = self.l4_csum_at;
        let mut c = adjust(rd(at), &[o0, o1, FIRST_PORT], &[n0, n1, sport, t0, t1]);
        if c == 0 && self.udp {
            // UDP sends a computed 0 as 0xffff (0 means "no checksum").
            c = 0xffff;
        }
        d[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// Write the traffic as a pcap file (what `net_pcap,rx_pcap=FILE,infinite_rx=1` replays
/// without end: a generator that never limits the device under test): every flow once, up
/// to 65536 frames, in the send order; stamps are zero. Returns the number of frames.
fn write_pcap(
    path: &str,
    templates: &[Template],
    order: &[u8],
    src: IpAddr,
    flows: u32,
) -> std::io::Result<usize> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    // Classic pcap header: magic, version 2.4, UTC, accuracy, snaplen, Ethernet.
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    f.write_all(&h)?;
    let base = match src {
        IpAddr::V4(s) => u32::from(s),
        IpAddr::V6(s) => u128::from(s) as u32,
    };
    let n = (flows as usize).clamp(order.len(), 65536);
    let mut d = Vec::new();
    for i in 0..n {
        let t = &templates[order[i % order.len()] as usize];
        let flow = (i as u32) % flows;
        let src = base.wrapping_add(flow / PORTS_PER_ADDR);
        let sport = FIRST_PORT + (flow % PORTS_PER_ADDR) as u16;
        d.resize(t.frame.len(), 0);
        t.write(&mut d, src, sport, 0);
        let len = (d.len() as u32).to_le_bytes();
        f.write_all(&[0u8; 8])?;
        f.write_all(&len)?;
        f.write_all(&len)?;
        f.write_all(&d)?;
    }
    f.flush()?;
    Ok(n)
}

/// The order sizes are sent in, one cycle: each index `i` appears `shares[i]` times, spread
/// evenly (smooth weighted round robin), so IMIX 7:4:1 is `0 1 0 0 1 0 2 0 1 0 1 0`, not
/// runs of one size.
fn send_order(shares: &[usize]) -> Vec<u8> {
    let total: usize = shares.iter().sum();
    let mut credit = vec![0i64; shares.len()];
    let mut order = Vec::with_capacity(total);
    for _ in 0..total {
        for (c, &w) in credit.iter_mut().zip(shares) {
            *c += w as i64;
        }
        let (i, _) = credit
            .iter()
            .enumerate()
            .max_by_key(|&(i, c)| (*c, std::cmp::Reverse(i)))
            .expect("at least one size");
        credit[i] -= total as i64;
        order.push(i as u8);
    }
    order
}

#[derive(Default, Clone, Copy, Debug)]
struct Trial {
    /// Seconds the trial sent for.
    secs: f64,
    /// The rate the generator offered: frames the link took and frames it refused.
    offered_pps: f64,
    /// Frames the link took.
    sent: u64,
    received: u64,
    /// Frames the link refused (a full memif ring, a full NIC queue): the device under test
    /// did not drain its receive ring in time, which a NIC would count as missed frames.
    refused: u64,
    /// Sampled frames of a test length without our stamp (something else on the wire).
    foreign: u64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

impl Trial {
    /// Of `of` frames, the share that did not come back (all of them if there were none).
    fn lost_of(&self, of: u64) -> f64 {
        if of == 0 {
            return 1.0;
        }
        1.0 - self.received.min(of) as f64 / of as f64
    }
    /// Of the frames the link took, the share that did not come back (lost in the device).
    fn loss(&self) -> f64 {
        self.lost_of(self.sent)
    }
    /// Of the frames offered, the share that did not come back: refused by the link or lost
    /// in the device. What RFC 2544's throughput counts (a frame the device's receive ring
    /// had no room for is lost, whether a NIC drops it or a memif ring refuses it).
    fn offered_loss(&self) -> f64 {
        self.lost_of(self.sent + self.refused)
    }
    fn rx_pps(&self) -> f64 {
        if self.secs > 0.0 {
            self.received as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Trials of an RFC 2544 throughput search.
const SEARCH_STEPS: usize = 8;

/// RFC 2544's throughput: the trial at the highest offered rate whose offered loss is at most
/// `max_loss`, or `None` if none was. `top` is the full-rate trial, the answer if it passes.
/// Otherwise the rate is bisected between 0 and top's offered rate for `SEARCH_STEPS` trials
/// (`run(rate)` runs one), the first at the rate top delivered (half the top if it delivered
/// nothing): a device forwards about that much when overloaded, so the search starts next to
/// the answer. After a pass far below the top it doubles the rate until a trial fails, then
/// bisects.
fn search(max_loss: f64, top: Trial, mut run: impl FnMut(u64) -> Trial) -> Option<Trial> {
    if top.offered_loss() <= max_loss && top.received > 0 {
        return Some(top);
    }
    let (mut lo, mut hi) = (0.0, top.offered_pps);
    let mut best = None;
    // A device that forwarded nothing at full load: start from the middle.
    let mut next = if top.received > 0 {
        top.rx_pps().min(hi)
    } else {
        hi / 2.0
    };
    for _ in 0..SEARCH_STEPS {
        if next < 1.0 {
            break;
        }
        let t = run(next as u64);
        let pass = t.offered_loss() <= max_loss && t.received > 0;
        eprintln!(
            "search: offered {:.3} Mpps, {:.4}% lost or refused: {}",
            t.offered_pps / 1e6,
            t.offered_loss() * 100.0,
            if pass { "within" } else { "over" }
        );
        if pass {
            lo = next;
            best = Some(t);
        } else {
            hi = next;
        }
        // Far below the top (a device that forwards less when overloaded): double first.
        next = if pass && hi > 2.0 * lo {
            2.0 * lo
        } else {
            (lo + hi) / 2.0
        };
    }
    best
}

struct Gen<'a> {
    pool: &'a Mempool,
    ports: Vec<u16>,
    queues: u16,
    /// One template per frame size, and the order sizes are sent in (IMIX: 7:4:1 interleaved).
    templates: Vec<Template>,
    /// Their frame lengths (how received test frames are recognised).
    lengths: Vec<usize>,
    pattern: Vec<u8>,
    /// First source (32 varying bits), and the number of flows.
    src: u32,
    flows: u32,
    hz: u64,
}

impl Gen<'_> {
    /// Send at `rate` (None: as fast as possible) for `secs`, receive until 200 ms after.
    fn run(&self, rate: Option<u64>, secs: f64) -> Trial {
        let mut tx: Vec<TxBuffer> = (0..self.queues)
            .map(|q| TxBuffer::new(self.ports[0], q))
            .collect();
        let mut burst = RxBurst::default();
        let mut bufs: Vec<Mbuf> = Vec::with_capacity(BURST);
        let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
        let mut t = Trial::default();
        let start = dpdk::tsc();
        let end = start + (secs * self.hz as f64) as u64;
        let drain_end = end + self.hz / 5;
        let ticks_per_pkt = rate.map(|r| self.hz as f64 / r.max(1) as f64);
        let (mut flow, mut src, mut sport) = (0u32, self.src, FIRST_PORT);
        let mut step = 0usize;
        let mut q = 0usize;
        let mut sample = 0u32;
        let stamp_at = self.templates[0].stamp_at;
        loop {
            let now = dpdk::tsc();
            if now >= drain_end {
                break;
            }
            if now < end {
                let due = match ticks_per_pkt {
                    None => BURST as u64,
                    Some(tpp) => {
                        let should = ((now - start) as f64 / tpp) as u64;
                        should.saturating_sub(t.sent).min(BURST as u64)
                    }
                };
                if due > 0 && self.pool.alloc_bulk(&mut bufs, due as usize) {
                    let txq = &mut tx[q];
                    for mut m in bufs.drain(..) {
                        let tpl = &self.templates[self.pattern[step] as usize];
                        step += 1;
                        if step == self.pattern.len() {
                            step = 0;
                        }
                        if !m.append(tpl.frame.len()) {
                            continue;
                        }
                        tpl.write(m.data_mut(), src, sport, now as u32);
                        flow += 1;
                        sport += 1;
                        if flow == self.flows {
                            (flow, src, sport) = (0, self.src, FIRST_PORT);
                        } else if u32::from(sport - FIRST_PORT) == PORTS_PER_ADDR {
                            (src, sport) = (src.wrapping_add(1), FIRST_PORT);
                        }
                        t.refused += txq.push(m) as u64;
                        t.sent += 1;
                    }
                    t.refused += txq.flush() as u64;
                    q = (q + 1) % tx.len();
                }
            }
            for &p in &self.ports {
                for rxq in 0..self.queues {
                    let n = burst.recv(p, rxq);
                    if n == 0 {
                        continue;
                    }
                    let rx_now = dpdk::tsc() as u32;
                    // Our frames are known by their length, from the mbuf header alone: the
                    // payload is another core's cache line, so it is read only for the one
                    // packet in 16 sampled for latency, which also checks the stamp's magic.
                    for m in burst.packets().iter().flatten() {
                        let d = m.data();
                        if !self.lengths.contains(&d.len()) {
                            continue;
                        }
                        t.received += 1;
                        sample = sample.wrapping_add(1);
                        if !sample.is_multiple_of(16) {
                            continue;
                        }
                        match d.get(stamp_at..stamp_at + STAMP_LEN) {
                            Some(s) if s[..4] == MAGIC.to_be_bytes() => {
                                if lat.len() < lat.capacity() {
                                    let sent = u32::from_be_bytes([s[4], s[5], s[6], s[7]]);
                                    lat.push(rx_now.wrapping_sub(sent));
                                }
                            }
                            _ => t.foreign += 1,
                        }
                    }
                    // The burst's mbufs are freed in bulk by the next recv.
                }
            }
        }
        // Until here `sent` counted every frame offered (the pacing's count).
        t.secs = secs;
        t.offered_pps = t.sent as f64 / secs;
        t.sent = t.sent.saturating_sub(t.refused);
        lat.sort_unstable();
        let qf = |f: f64| {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 * f) as usize).min(lat.len() - 1);
            lat[i] as f64 * 1e6 / self.hz as f64
        };
        t.p50_us = qf(0.5);
        t.p99_us = qf(0.99);
        t.p999_us = qf(0.999);
        t
    }
}

fn report(a: &Args, label: &str, t: &Trial) {
    let size = match a.size {
        Size::Fixed(s) => s.to_string(),
        Size::Imix => "\"imix\"".to_string(),
    };
    let proto = match a.proto {
        Proto::Udp => "udp",
        Proto::Tcp => "tcp",
    };
    let family = if a.dst_ip.is_ipv6() { "ipv6" } else { "ipv4" };
    if a.json {
        println!(
            "{{\"mode\":\"{label}\",\"size\":{size},\"family\":\"{family}\",\"proto\":\"{proto}\",\"flows\":{},\"offered_mpps\":{:.4},\"refused\":{},\"offered_loss\":{:.6},\"mpps\":{:.4},\"loss\":{:.6},\"p50_us\":{:.2},\"p99_us\":{:.2},\"p999_us\":{:.2},\"foreign_sampled\":{}}}",
            a.flows, t.offered_pps / 1e6, t.refused, t.offered_loss(), t.rx_pps() / 1e6, t.loss(), t.p50_us, t.p99_us, t.p999_us, t.foreign
        );
    } else {
        println!(
            "{label}: offered {:.3} Mpps ({:.2}% refused by the link), received {:.3} Mpps, loss {:.4}% of those sent, latency p50 {:.1} us p99 {:.1} us p99.9 {:.1} us",
            t.offered_pps / 1e6,
            100.0 * t.refused as f64 / (t.sent + t.refused).max(1) as f64,
            t.rx_pps() / 1e6,
            t.loss() * 100.0,
            t.p50_us,
            t.p99_us,
            t.p999_us
        );
    }
}

fn main() {
    let a = parse_args();
    let v6 = a.dst_ip.is_ipv6();
    let min = min_frame(v6, a.proto);
    let sizes: Vec<(usize, usize)> = match a.size {
        Size::Fixed(s) if s < min => usage(&format!(
            "--size: {s} is too small for {} {:?} with the stamp (at least {min})",
            if v6 { "IPv6" } else { "IPv4" },
            a.proto
        )),
        Size::Fixed(s) => vec![(s, 1)],
        Size::Imix => IMIX.iter().map(|&(s, n)| (s.max(min), n)).collect(),
    };
    let src = a.src_ip.unwrap_or(if v6 {
        // RFC 5180's benchmarking prefix, as RFC 2544's 198.18.0.0/15 for IPv4.
        IpAddr::from([0x2001, 2, 0, 0, 0, 0, 0, 1])
    } else {
        IpAddr::from([198, 18, 0, 1])
    });
    if let Some(path) = &a.pcap {
        let src_mac = a.src_mac.unwrap_or([2, 0xfe, 0, 0, 0, 1]);
        let templates: Vec<Template> = sizes
            .iter()
            .map(|&(s, _)| template(&a, src_mac, src, s))
            .collect();
        let order = send_order(&sizes.iter().map(|&(_, n)| n).collect::<Vec<_>>());
        match write_pcap(path, &templates, &order, src, a.flows) {
            Ok(n) => eprintln!("ferry-pktgen: wrote {n} frames to {path}"),
            Err(e) => usage(&format!("--pcap {path}: {e}")),
        }
        return;
    }
    let mut eal_args = vec![
        format!("--lcores=0@{}", a.lcore),
        "--in-memory".to_string(),
        // memif's zero-copy client mode needs the memory in one file per segment list.
        "--single-file-segments".to_string(),
        format!("--file-prefix=pktgen{}", std::process::id()),
        "--no-pci".to_string(),
        "--log-level=pmd.net.memif:warning".to_string(),
    ];
    for p in &a.ports {
        eal_args.push(format!("--vdev={p}"));
    }
    let eal = match Eal::init(&eal_args) {
        Ok(e) => e,
        Err(e) => usage(&e.to_string()),
    };
    let pool =
        Mempool::new("pktgen", 65_535, 512, 2048 + 128).unwrap_or_else(|e| usage(&e.to_string()));
    let cfg = PortConfig {
        rx_queues: a.queues,
        tx_queues: a.queues,
        rx_desc: 1024,
        tx_desc: 1024,
        mtu: None,
        rx_ip_cksum: false,
        mbuf_fast_free: true,
    };
    let mut ports = Vec::new();
    for devargs in &a.ports {
        let name = devargs.split(',').next().unwrap_or("");
        let id = dpdk::port_by_name(name).unwrap_or_else(|e| usage(&e.to_string()));
        ports.push(Port::start(id, &cfg, &pool).unwrap_or_else(|e| usage(&e.to_string())));
    }
    // Wait for links (memif connects to its server asynchronously).
    let t0 = Instant::now();
    while ports.iter().any(|p| !p.link().up) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(p) = ports.iter().find(|p| !p.link().up) {
        usage(&format!("port {} link still down after 10 s", p.id()));
    }
    let src_mac = a.src_mac.unwrap_or(ports[0].info().mac);
    let templates: Vec<Template> = sizes
        .iter()
        .map(|&(s, _)| template(&a, src_mac, src, s))
        .collect();
    let pattern = send_order(&sizes.iter().map(|&(_, n)| n).collect::<Vec<_>>());
    let src32 = match src {
        IpAddr::V4(s) => u32::from(s),
        IpAddr::V6(s) => u128::from(s) as u32,
    };
    let g = Gen {
        pool: &pool,
        ports: ports.iter().map(|p| p.id()).collect(),
        queues: a.queues,
        lengths: templates.iter().map(|t| t.frame.len()).collect(),
        templates,
        pattern,
        src: src32,
        flows: a.flows,
        hz: dpdk::tsc_hz(),
    };
    // Warm-up: low-rate trials until the DUT forwards (it may still be waiting for its
    // links, resolving neighbours, filling caches), for at most 20 s.
    let t0 = Instant::now();
    while g.run(Some(10_000), 0.3).received == 0 && t0.elapsed() < Duration::from_secs(20) {}
    let received = match a.search {
        None => {
            let t = g.run(a.rate, a.duration);
            report(&a, if a.rate.is_some() { "fixed" } else { "max" }, &t);
            t.received
        }
        Some(max_loss) => {
            // RFC 2544: start at the maximum the generator offers, then bisect.
            let top = g.run(None, a.duration);
            report(&a, "max", &top);
            let best = search(max_loss, top, |rate| g.run(Some(rate), a.duration));
            if best.is_none() {
                eprintln!("ferry-pktgen: no rate tried lost at most {max_loss}");
            }
            let t = best.unwrap_or_default();
            report(&a, "search", &t);
            t.received
        }
    };
    drop(ports);
    drop(pool);
    drop(eal);
    // Non-zero if nothing came back: scripts (and the CI smoke) fail on a broken DUT.
    if received == 0 {
        eprintln!("ferry-pktgen: nothing came back");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dst: &str, proto: Proto) -> Args {
        Args {
            ports: vec![],
            lcore: 0,
            src_mac: None,
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_ip: None,
            dst_ip: dst.parse().unwrap(),
            proto,
            syn: false,
            flows: 1,
            size: Size::Fixed(64),
            rate: None,
            duration: 1.0,
            search: None,
            queues: 1,
            json: false,
            pcap: None,
        }
    }

    /// Every patched frame has valid IP and L4 checksums (recomputed from scratch).
    #[test]
    fn patched_frames_keep_valid_checksums() {
        for (dst, src) in [("10.253.0.1", "198.18.0.1"), ("2001:db8::1", "2001:2::1")] {
            for proto in [Proto::Udp, Proto::Tcp] {
                let a = args(dst, proto);
                let src: IpAddr = src.parse().unwrap();
                let v6 = a.dst_ip.is_ipv6();
                let size = min_frame(v6, proto).max(80);
                let t = template(&a, [2, 0, 0, 0, 0, 2], src, size);
                let base = match src {
                    IpAddr::V4(s) => u32::from(s),
                    IpAddr::V6(s) => u128::from(s) as u32,
                };
                for (i, (s, port, tsc)) in [
                    (base, FIRST_PORT, 0u32),
                    (base + 7, 4242, 0xdead_beef),
                    (base + 1, 65535, 0xffff_ffff),
                    (base.wrapping_add(99_999), 1024, 1),
                ]
                .into_iter()
                .enumerate()
                {
                    let mut d = vec![0u8; t.frame.len()];
                    t.write(&mut d, s, port, tsc);
                    let l4 = if v6 { 54 } else { 34 };
                    let l4_len = (d.len() - l4) as u16;
                    let p = if proto == Proto::Tcp { 6 } else { 17 };
                    let pseudo = if v6 {
                        let s: [u8; 16] = d[22..38].try_into().unwrap();
                        let dd: [u8; 16] = d[38..54].try_into().unwrap();
                        checksum::pseudo_v6(&s, &dd, p, l4_len as u32)
                    } else {
                        assert_eq!(checksum::checksum(&d[14..34]), 0, "IPv4 header, case {i}");
                        let s: [u8; 4] = d[26..30].try_into().unwrap();
                        let dd: [u8; 4] = d[30..34].try_into().unwrap();
                        checksum::pseudo_v4(s, dd, p, l4_len)
                    };
                    let sum = checksum::fold(checksum::add(pseudo, checksum::sum(&d[l4..])));
                    assert_eq!(sum, 0xffff, "{dst} {proto:?} L4 checksum, case {i}");
                    assert_eq!(&d[t.stamp_at..t.stamp_at + 4], &MAGIC.to_be_bytes());
                    assert_eq!(&d[t.stamp_at + 4..t.stamp_at + 8], &tsc.to_be_bytes());
                    assert_eq!(u16::from_be_bytes([d[l4], d[l4 + 1]]), port);
                }
            }
        }
    }

    #[test]
    fn pcap_holds_every_flow_with_valid_frames() {
        let mut a = args("10.253.0.1", Proto::Udp);
        a.flows = 100;
        let src: IpAddr = "198.18.0.1".parse().unwrap();
        let sizes = [(64usize, 7usize), (594, 4), (1518, 1)];
        let t: Vec<Template> = sizes
            .iter()
            .map(|&(s, _)| template(&a, [2, 0, 0, 0, 0, 2], src, s))
            .collect();
        let order = send_order(&[7, 4, 1]);
        let path = std::env::temp_dir().join(format!("pktgen-test-{}.pcap", std::process::id()));
        let n = write_pcap(path.to_str().unwrap(), &t, &order, src, a.flows).unwrap();
        assert_eq!(n, 100);
        let b = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&b[..4], &0xa1b2_c3d4u32.to_le_bytes());
        let (mut at, mut frames, mut ports) = (24, 0, std::collections::HashSet::new());
        while at < b.len() {
            let len = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
            let d = &b[at + 16..at + 16 + len];
            assert_eq!(
                len + 4,
                sizes[order[frames % 12] as usize].0,
                "frame {frames}"
            );
            assert_eq!(
                checksum::checksum(&d[14..34]),
                0,
                "IPv4 header of frame {frames}"
            );
            ports.insert(u16::from_be_bytes([d[34], d[35]]));
            at += 16 + len;
            frames += 1;
        }
        assert_eq!((frames, ports.len()), (100, 100));
    }

    #[test]
    fn imix_interleaves_7_4_1() {
        let o = send_order(&[7, 4, 1]);
        assert_eq!(o, [0, 1, 0, 0, 1, 0, 2, 0, 1, 0, 1, 0]);
        assert_eq!(send_order(&[1]), [0]);
    }

    #[test]
    fn smallest_frames_hold_headers_and_stamp() {
        assert_eq!(min_frame(false, Proto::Udp), 64);
        assert_eq!(min_frame(false, Proto::Tcp), 66);
        assert_eq!(min_frame(true, Proto::Udp), 74);
        assert_eq!(min_frame(true, Proto::Tcp), 86);
    }

    /// A model device under test that forwards `cap` frames per second and loses `drop` of
    /// them at any rate. Over `cap`, the link refuses the excess (`push_back`, as memif does)
    /// or the device loses it (as a NIC's missed frames), and the device forwards `overload`
    /// of its capacity (below 1: it does worse when overloaded).
    fn model(cap: f64, drop: f64, push_back: bool, overload: f64, rate: f64) -> Trial {
        let taken = if push_back { rate.min(cap) } else { rate };
        let through = if rate > cap { cap * overload } else { rate };
        Trial {
            secs: 1.0,
            offered_pps: rate,
            sent: taken as u64,
            refused: (rate - taken) as u64,
            received: (through * (1.0 - drop)) as u64,
            ..Trial::default()
        }
    }

    /// The search converges on the model's capacity from below, to within a 64th of it,
    /// whether the excess is refused by the link or lost in the device, and whether the
    /// device holds up when overloaded or not; a full-rate trial that passes is the answer; a
    /// device that loses everything has none.
    #[test]
    fn search_finds_the_capacity() {
        for push_back in [true, false] {
            for overload in [1.0, 0.8, 0.3] {
                for cap in [1.0e5, 4.2e6, 9.9e6] {
                    let m = |r: f64| model(cap, 0.0, push_back, overload, r);
                    let best =
                        search(0.001, m(30.0e6), |r| m(r as f64)).expect("a rate within the loss");
                    let at = best.offered_pps;
                    assert!(at <= cap, "{best:?} over {cap}");
                    assert!(
                        at >= cap * (1.0 - 1.0 / 64.0),
                        "{at} under {cap} ({overload})"
                    );
                    assert_eq!(best.offered_loss(), 0.0);
                }
            }
        }
        // A device that forwards nothing at all when overloaded: the search bisects from the
        // top down (coarser: eight halvings of 30 Mpps).
        for cap in [4.2e6, 9.9e6] {
            let m = |r: f64| model(cap, 0.0, false, 0.0, r);
            let best = search(0.001, m(30.0e6), |r| m(r as f64)).expect("a rate within");
            assert!(
                best.offered_pps <= cap && best.offered_pps >= cap * 0.9,
                "{best:?}"
            );
        }
        let best = search(0.0, model(5e6, 0.0, true, 1.0, 4e6), |_| {
            panic!("no trial needed")
        });
        assert_eq!(best.unwrap().offered_pps, 4e6);
        let all_lost = |r: f64| model(5e6, 1.0, true, 1.0, r);
        assert!(search(0.001, all_lost(30e6), |r| all_lost(r as f64)).is_none());
        // 0.5% loss at every rate: over 0.1%, within 1%.
        let lossy = |r: f64| model(5e6, 0.005, true, 1.0, r);
        assert!(search(0.001, lossy(30e6), |r| lossy(r as f64)).is_none());
        let best = search(0.01, lossy(30e6), |r| lossy(r as f64)).unwrap();
        assert!(best.offered_pps >= 5e6 * (1.0 - 1.0 / 64.0));
    }

    /// Refused frames are loss for the search, not for the device's own loss figure.
    #[test]
    fn refused_frames_count_as_offered_loss_only() {
        let t = model(1e6, 0.0, true, 1.0, 2e6);
        assert_eq!(t.loss(), 0.0);
        assert!((t.offered_loss() - 0.5).abs() < 1e-9);
        assert_eq!(Trial::default().offered_loss(), 1.0);
    }
}
