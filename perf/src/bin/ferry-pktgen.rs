//! `ferry-pktgen`: a DPDK packet generator for benchmarking Ferry (and l3fwd, testpmd, ...).
//!
//! Sends UDP/IPv4 test traffic on the first port, receives on every port, counts loss and
//! measures latency from a TSC timestamp in the payload. Fast by construction: one template
//! per flow built before the run, mbufs allocated in bulk, 64 bytes copied and a few fields
//! patched per packet, no per-packet formatting. With `--search LOSS` it finds the highest
//! rate forwarded with at most that loss by binary search, as RFC 2544 does.
//!
//! ```text
//! ferry-pktgen --port net_memif0,role=client,socket=/tmp/m.sock,id=0 \
//!              --port net_memif1,role=client,socket=/tmp/m.sock,id=1 \
//!              --dst-mac 00:01:02:03:04:01 --dst-ip 10.253.0.1 --flows 1024 --size 64 \
//!              --duration 5 [--rate 2000000] [--search 0.001] [--lcore 0]
//! ```
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use ferry_dataplane::buf::PacketBuf;
use ferry_dataplane::dpdk::{self, Eal, Mbuf, Mempool, Port, PortConfig, RxBurst, TxBuffer};
use ferry_dataplane::wire::{ethernet, ipv4};

/// Marks our packets; the TSC timestamp follows it.
const MAGIC: u32 = 0xfe77_9e4e;
/// Offset of MAGIC + timestamp in the frame: after Ethernet (14) + IPv4 (20) + UDP (8).
const STAMP: usize = 42;
const BURST: usize = 32;

struct Args {
    ports: Vec<String>,
    lcore: u32,
    src_mac: Option<[u8; 6]>,
    dst_mac: [u8; 6],
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    flows: u32,
    size: usize,
    rate: Option<u64>,
    duration: f64,
    search: Option<f64>,
    json: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("ferry-pktgen: {msg}");
    eprintln!(
        "usage: ferry-pktgen --port DEVARGS [--port DEVARGS] --dst-mac MAC [--src-mac MAC] \
         [--src-ip A] [--dst-ip A] [--flows N] [--size 64..1500] [--rate PPS] [--duration S] \
         [--search LOSS] [--lcore CPU] [--json]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        ports: Vec::new(),
        lcore: 0,
        src_mac: None,
        dst_mac: [0; 6],
        src_ip: [198, 18, 0, 1],
        dst_ip: [10, 253, 0, 1],
        flows: 1024,
        size: 64,
        rate: None,
        duration: 5.0,
        search: None,
        json: false,
    };
    let mut dst_mac = false;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{k} needs a value")))
        };
        let ip = |s: String| -> [u8; 4] {
            s.parse::<std::net::Ipv4Addr>()
                .unwrap_or_else(|_| usage(&format!("{s:?} is not an IPv4 address")))
                .octets()
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
            "--src-ip" => a.src_ip = ip(v()),
            "--dst-ip" => a.dst_ip = ip(v()),
            "--flows" => {
                a.flows = v()
                    .parse()
                    .ok()
                    .filter(|f| (1..=10_000_000).contains(f))
                    .unwrap_or_else(|| usage("--flows: 1..=10000000"))
            }
            "--size" => {
                a.size = v()
                    .parse()
                    .ok()
                    .filter(|s| (64..=1518).contains(s))
                    .unwrap_or_else(|| usage("--size: 64..=1518 (frame bytes without FCS + 4)"))
            }
            "--rate" => a.rate = Some(v().parse().unwrap_or_else(|_| usage("--rate: packets/s"))),
            "--duration" => a.duration = v().parse().unwrap_or_else(|_| usage("--duration: s")),
            "--search" => a.search = Some(v().parse().unwrap_or_else(|_| usage("--search: loss"))),
            "--json" => a.json = true,
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if a.ports.is_empty() || !dst_mac {
        usage("--port and --dst-mac are needed");
    }
    a
}

/// One prebuilt frame per flow: Ethernet / IPv4 / UDP, checksums filled, stamp area zero.
fn templates(a: &Args, src_mac: [u8; 6]) -> Vec<Vec<u8>> {
    // Frame size counts the 4-byte FCS, as RFC 2544 and TRex do.
    let len = a.size - 4;
    (0..a.flows)
        .map(|f| {
            let mut p = vec![0u8; len];
            p[0..6].copy_from_slice(&a.dst_mac);
            p[6..12].copy_from_slice(&src_mac);
            p[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
            // Flows differ in the source address's low 16 bits and the UDP source port.
            let mut src = a.src_ip;
            src[2] = src[2].wrapping_add((f >> 8) as u8);
            src[3] = src[3].wrapping_add(f as u8);
            let ip_len = (len - 14) as u16;
            ipv4::emit_header(
                &mut p[14..],
                src,
                a.dst_ip,
                ipv4::PROTO_UDP,
                64,
                ip_len - 20,
                0,
            )
            .expect("template fits");
            let udp_len = ip_len - 20;
            let sport = 1024 + (f % 60_000) as u16;
            p[34..36].copy_from_slice(&sport.to_be_bytes());
            p[36..38].copy_from_slice(&9u16.to_be_bytes());
            p[38..40].copy_from_slice(&udp_len.to_be_bytes());
            // UDP checksum 0 (none): the timestamp changes per packet.
            p[STAMP..STAMP + 4].copy_from_slice(&MAGIC.to_be_bytes());
            p
        })
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Trial {
    offered_pps: f64,
    sent: u64,
    received: u64,
    tx_dropped: u64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

impl Trial {
    fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        1.0 - self.received.min(self.sent) as f64 / self.sent as f64
    }
    fn rx_pps(&self, secs: f64) -> f64 {
        self.received as f64 / secs
    }
}

struct Gen<'a> {
    pool: &'a Mempool,
    ports: Vec<u16>,
    templates: Vec<Vec<u8>>,
    hz: u64,
}

impl Gen<'_> {
    /// Send at `rate` (None: as fast as possible) for `secs`, receive until 200 ms after.
    fn run(&self, rate: Option<u64>, secs: f64) -> Trial {
        let mut tx = TxBuffer::new(self.ports[0], 0);
        let mut burst = RxBurst::default();
        let mut bufs: Vec<Mbuf> = Vec::with_capacity(BURST);
        let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
        let mut t = Trial::default();
        let start = dpdk::tsc();
        let end = start + (secs * self.hz as f64) as u64;
        let drain_end = end + self.hz / 5;
        let ticks_per_pkt = rate.map(|r| self.hz as f64 / r.max(1) as f64);
        let mut flow = 0usize;
        let mut sample = 0u32;
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
                    for mut m in bufs.drain(..) {
                        let tpl = &self.templates[flow];
                        flow += 1;
                        if flow == self.templates.len() {
                            flow = 0;
                        }
                        if !m.append(tpl.len()) {
                            continue;
                        }
                        let d = m.data_mut();
                        d.copy_from_slice(tpl);
                        d[STAMP + 4..STAMP + 12].copy_from_slice(&now.to_ne_bytes());
                        t.tx_dropped += tx.push(m) as u64;
                        t.sent += 1;
                    }
                    t.tx_dropped += tx.flush() as u64;
                }
            }
            for &p in &self.ports {
                let n = burst.recv(p, 0);
                if n == 0 {
                    continue;
                }
                let rx_now = dpdk::tsc();
                for m in burst.by_ref() {
                    let d = m.data();
                    if d.len() >= STAMP + 12 && d[STAMP..STAMP + 4] == MAGIC.to_be_bytes() {
                        t.received += 1;
                        // Sample one packet in 16 for latency.
                        sample = sample.wrapping_add(1);
                        if sample.is_multiple_of(16) && lat.len() < lat.capacity() {
                            let mut ts = [0u8; 8];
                            ts.copy_from_slice(&d[STAMP + 4..STAMP + 12]);
                            let sent = u64::from_ne_bytes(ts);
                            lat.push(rx_now.saturating_sub(sent).min(u32::MAX as u64) as u32);
                        }
                    }
                }
            }
        }
        t.sent = t.sent.saturating_sub(t.tx_dropped);
        t.offered_pps = t.sent as f64 / secs;
        lat.sort_unstable();
        let q = |f: f64| {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 * f) as usize).min(lat.len() - 1);
            lat[i] as f64 * 1e6 / self.hz as f64
        };
        t.p50_us = q(0.5);
        t.p99_us = q(0.99);
        t.p999_us = q(0.999);
        t
    }
}

fn report(a: &Args, label: &str, t: &Trial) {
    if a.json {
        println!(
            "{{\"mode\":\"{label}\",\"size\":{},\"flows\":{},\"offered_mpps\":{:.4},\"mpps\":{:.4},\"loss\":{:.6},\"p50_us\":{:.2},\"p99_us\":{:.2},\"p999_us\":{:.2}}}",
            a.size, a.flows, t.offered_pps / 1e6, t.rx_pps(a.duration) / 1e6, t.loss(), t.p50_us, t.p99_us, t.p999_us
        );
    } else {
        println!(
            "{label}: offered {:.3} Mpps, received {:.3} Mpps, loss {:.4}%, latency p50 {:.1} us p99 {:.1} us p99.9 {:.1} us",
            t.offered_pps / 1e6,
            t.rx_pps(a.duration) / 1e6,
            t.loss() * 100.0,
            t.p50_us,
            t.p99_us,
            t.p999_us
        );
    }
}

fn main() {
    let a = parse_args();
    let mut eal_args = vec![
        format!("--lcores=0@{}", a.lcore),
        "--in-memory".to_string(),
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
        rx_queues: 1,
        tx_queues: 1,
        rx_desc: 1024,
        tx_desc: 1024,
        mtu: None,
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
    let g = Gen {
        pool: &pool,
        ports: ports.iter().map(|p| p.id()).collect(),
        templates: templates(&a, src_mac),
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
            // RFC 2544 style: start at the maximum the generator offers, then bisect.
            let top = g.run(None, a.duration);
            report(&a, "max", &top);
            let mut best = if top.loss() <= max_loss {
                Some(top)
            } else {
                None
            };
            let (mut lo, mut hi) = (0.0, top.offered_pps);
            if best.is_none() {
                for _ in 0..7 {
                    let mid = (lo + hi) / 2.0;
                    let t = g.run(Some(mid as u64), a.duration);
                    if t.loss() <= max_loss {
                        lo = mid;
                        best = Some(t);
                    } else {
                        hi = mid;
                    }
                }
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
