//! The route path per packet, without a NIC: `router::process` on 64-byte UDP/IPv4 frames
//! (or, with `ROUTE_FAMILY=6`, 78-byte UDP/IPv6 frames on the small table) in memory
//! (parse, checksum check, FIB lookup, next hop, TTL, MAC rewrite), with the tables `ferryd` compiles from a config, on a small table and on a 1M-route table with
//! random destinations, one packet at a time and in bursts through the fast path
//! (`fastpath::burst`, as the worker runs it). Median of several rounds; ns and Mpps per core.
//!
//! `cargo bench -p ferry-perf --bench route`

use std::hint::black_box;
use std::time::Instant;

use ferry_control::compile::Plan;
use ferry_control::config::Config;
use ferry_control::neighbor::NeighborCache;
use ferry_dataplane::buf::{PacketBuf, TestBuf};
use ferry_dataplane::counters::WorkerCounters;
use ferry_dataplane::fastpath;
use ferry_dataplane::router::{process, Action, Ctx, Scratch};
use ferry_dataplane::tables::Tables;
use ferry_dataplane::wire::{ipv4, ipv6};

const CFG: &str = r#"
dpdk: { lcores: [0, 1] }
ports:
  - { name: a, devargs: net_null0, addresses: [192.168.98.1/24, "fd98::1/64"], exception: false }
  - { name: b, devargs: net_null1, addresses: [192.168.99.1/24, "fd99::1/64"], exception: false }
routes:
  - { prefix: 0.0.0.0/0, via: [192.168.99.2] }
  - { prefix: "::/0", via: ["fd99::2"] }
neighbors:
  - { address: 192.168.99.2, mac: "02:fe:00:00:00:02", port: b }
  - { address: "fd99::2", mac: "02:fe:00:00:00:02", port: b }
"#;

/// A 78-byte UDP/IPv6 frame (RFC 5180's smallest) from 2001:2::1 to 2001:db8::1.
fn frame6(sport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 78];
    f[0..6].copy_from_slice(&[2, 0xfe, 0, 0, 1, 1]);
    f[6..12].copy_from_slice(&[2, 0xfe, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let src = 0x2001_0002_0000_0000_0000_0000_0000_0001u128.to_be_bytes();
    let dst = 0x2001_0db8_0000_0000_0000_0000_0000_0001u128.to_be_bytes();
    // Payload: UDP 8 + 16 bytes.
    ipv6::emit_header(&mut f[14..], &src, &dst, 17, 64, 24).unwrap();
    f[54..56].copy_from_slice(&sport.to_be_bytes());
    f[56..58].copy_from_slice(&9u16.to_be_bytes());
    f[58..60].copy_from_slice(&24u16.to_be_bytes());
    f
}

fn frame(dst: u32, sport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[2, 0xfe, 0, 0, 1, 1]);
    f[6..12].copy_from_slice(&[2, 0xfe, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    ipv4::emit_header(
        &mut f[14..],
        [198, 18, 0, 1],
        dst.to_be_bytes(),
        17,
        64,
        26,
        0,
    )
    .unwrap();
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One burst as the worker runs it (not inlined, so `perf/callgrind.sh` can count it):
/// returns how many packets were forwarded; the buffers go back to `spare`.
#[inline(never)]
fn route_burst(
    tables: &Tables,
    bufs: &mut [Option<TestBuf>],
    stages: &mut fastpath::Stages,
    scratch: &mut Scratch,
    counters: &WorkerCounters,
    spare: &mut Vec<TestBuf>,
) -> u64 {
    let mut tx = 0;
    fastpath::burst_each(tables, tables.ports.first(), bufs, stages, |out, mut b| {
        let action = match out {
            Some(p) => Action::Tx(p),
            None => {
                let mut ctx = Ctx {
                    t: tables,
                    s: scratch,
                    c: counters,
                };
                process(&mut ctx, 0, &mut b)
            }
        };
        if let Action::Tx(_) = action {
            tx += 1;
        }
        black_box(b.data());
        spare.push(b);
    });
    tx
}

fn bench(name: &str, plan: &Plan, frames: &[Vec<u8>]) {
    let cache = NeighborCache::new(
        std::time::Duration::from_secs(30),
        std::time::Duration::from_secs(10),
    );
    let tables = plan.tables(&cache, &Default::default());
    let counters = WorkerCounters::default();
    let mut scratch = Scratch::new(1_000_000_000, 1000);
    let mut buf = TestBuf::new(&frames[0]);
    let n: usize = std::env::var("ROUTE_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000_000);
    let mut rounds = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let mut tx = 0u64;
        for i in 0..n {
            buf.reset(&frames[i % frames.len()]);
            let mut ctx = Ctx {
                t: &tables,
                s: &mut scratch,
                c: &counters,
            };
            if let Action::Tx(_) = process(&mut ctx, 0, &mut buf) {
                tx += 1;
            }
            black_box(buf.data());
        }
        assert_eq!(tx, n as u64, "{name}: every packet forwarded");
        rounds.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    let ns = median(rounds);
    println!(
        "{name:40} {ns:6.1} ns/packet  {:6.1} Mpps per core (one at a time)",
        1e3 / ns
    );

    // As the worker does: bursts of 32 (or ROUTE_BURST, as a lightly loaded port's polls
    // bring) through the fast path (header checks, FIB lookups, in-place rewrite), `process`
    // for what it declines. The size is a constant in each instance, as the worker's is.
    let ns = match std::env::var("ROUTE_BURST").ok().as_deref() {
        Some("1") => bursts::<1>(name, &tables, frames, n, &mut scratch, &counters),
        Some("2") => bursts::<2>(name, &tables, frames, n, &mut scratch, &counters),
        Some("8") => bursts::<8>(name, &tables, frames, n, &mut scratch, &counters),
        _ => bursts::<32>(name, &tables, frames, n, &mut scratch, &counters),
    };
    println!("{ns:6.1} ns/packet  {:6.1} Mpps per core", 1e3 / ns);
}

/// `n` packets in bursts of `BS`; the median ns per packet of 7 rounds.
fn bursts<const BS: usize>(
    name: &str,
    tables: &Tables,
    frames: &[Vec<u8>],
    n: usize,
    scratch: &mut Scratch,
    counters: &WorkerCounters,
) -> f64 {
    print!("{:>40} ", format!("bursts of {BS:2}:"));
    // ROUTE_VOUCHED=1: as from a NIC that verified each IPv4 header checksum.
    let vouched = std::env::var_os("ROUTE_VOUCHED").is_some();
    let mut bufs: Vec<Option<TestBuf>> = (0..BS)
        .map(|_| {
            let mut b = TestBuf::new(&frames[0]);
            b.ip_cksum_good = vouched;
            Some(b)
        })
        .collect();
    let mut spare: Vec<TestBuf> = Vec::with_capacity(BS);
    let mut stages = fastpath::Stages::default();
    stages.nic_cksum = vouched;
    let mut rounds = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let mut tx = 0u64;
        let mut k = 0usize;
        for _ in 0..n / BS {
            for slot in bufs.iter_mut() {
                let mut b = slot
                    .take()
                    .or_else(|| spare.pop())
                    .expect("a burst of buffers");
                b.reset(&frames[k % frames.len()]);
                *slot = Some(b);
                k += 1;
            }
            tx += route_burst(
                tables,
                &mut bufs,
                &mut stages,
                scratch,
                counters,
                &mut spare,
            );
        }
        assert_eq!(tx, (n / BS * BS) as u64, "{name}: every packet forwarded");
        rounds.push(t.elapsed().as_nanos() as f64 / (n / BS * BS) as f64);
    }
    median(rounds)
}

fn main() {
    let cfg = Config::from_yaml(CFG).unwrap();
    let macs = [[2, 0xfe, 0, 0, 1, 1], [2, 0xfe, 0, 0, 1, 2]];
    let plan = Plan::build(&cfg, &macs).unwrap();
    // ROUTE_FAMILY=6: the small table with 78-byte UDP/IPv6 frames instead.
    if std::env::var("ROUTE_FAMILY").is_ok_and(|f| f == "6") {
        let one: Vec<Vec<u8>> = (0..1024).map(|i| frame6(1024 + i)).collect();
        bench("small table, IPv6, 1024 flows", &plan, &one);
        return;
    }
    let one: Vec<Vec<u8>> = (0..1024).map(|i| frame(0x0afd_0001, 1024 + i)).collect();
    bench("small table, 1024 flows, one destination", &plan, &one);
    if std::env::var_os("ROUTE_SMALL_ONLY").is_some() {
        return;
    }

    // 1M random routes via the gateway (a /0 default keeps every lookup a hit), inserted
    // into the config's routes section so they go through validation and compilation.
    let mut routes = String::new();
    let mut x = 0x9e37_79b9u32;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1_000_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let len = 16 + (x % 9) as u8;
        let net = x & (u32::MAX << (32 - len as u32));
        if seen.insert((net, len)) {
            routes.push_str(&format!(
                "  - {{ prefix: {}/{len}, via: [192.168.99.2] }}\n",
                std::net::Ipv4Addr::from(net)
            ));
        }
    }
    let at = CFG.find("neighbors:").unwrap();
    let text = format!("{}{}{}", &CFG[..at], routes, &CFG[at..]);
    let plan = Plan::build(&Config::from_yaml(&text).unwrap(), &macs).unwrap();
    let mut y = 12345u32;
    let rnd: Vec<Vec<u8>> = (0..65_536)
        .map(|i| {
            y ^= y << 13;
            y ^= y >> 17;
            y ^= y << 5;
            // Unicast destinations only: 1.0.0.0 to 126.255.255.255.
            frame((y % (126 << 24)) + (1 << 24), 1024 + (i % 60_000) as u16)
        })
        .collect();
    bench(
        &format!("{} routes, random destinations", plan.routes4),
        &plan,
        &rnd,
    );
}
