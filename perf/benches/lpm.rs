//! Ferry's LPM against DPDK's `rte_lpm` on the same 1M-route IPv4 table and the same
//! addresses, in one run: build time and lookups per second (median of several rounds).
//!
//! `cargo bench -p ferry-perf --bench lpm` (as root: rte_lpm needs the EAL; hugepages are
//! used when free, else `--no-huge`). `LPM_ROUTES`, `LPM_ROUNDS` override the defaults.

use std::hint::black_box;
use std::time::Instant;

use ferry_dataplane::dpdk::{self, Eal};
use ferry_dataplane::lpm::{Lpm4, Lpm6};
use ferry_perf::rte_lpm::{DpdkLpm, DpdkLpm6};

use ferry_perf::gen::{length, Rng};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let n_routes: usize = std::env::var("LPM_ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = std::env::var("LPM_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut routes = Vec::with_capacity(n_routes);
    for i in 0..n_routes {
        let len = length(&mut rng);
        let addr = (rng.next() as u32) & if len == 0 { 0 } else { u32::MAX << (32 - len) };
        routes.push((addr, len, (i % 65_000) as u32 + 1));
    }
    // Half the addresses inside table prefixes, half uniformly random.
    let n_addrs = 1 << 22;
    let addrs: Vec<u32> = (0..n_addrs)
        .map(|i| {
            if i % 2 == 0 {
                let (a, l, _) = routes[(rng.next() % n_routes as u64) as usize];
                a | (rng.next() as u32 & if l >= 32 { 0 } else { u32::MAX >> l })
            } else {
                rng.next() as u32
            }
        })
        .collect();

    let free_huge = dpdk::free_hugepages();
    let eal_args: Vec<&str> = if free_huge >= 256 {
        vec![
            "-l",
            "0",
            "--in-memory",
            "--file-prefix=lpmbench",
            "--no-pci",
            "--log-level=6",
        ]
    } else {
        vec![
            "-l",
            "0",
            "--no-huge",
            "--no-shconf",
            "-m",
            "1024",
            "--no-pci",
            "--log-level=6",
        ]
    };
    let _eal = Eal::init(&eal_args).expect("EAL init (run as root)");

    // Build both.
    let t = Instant::now();
    let ours = Lpm4::build(&routes).expect("build");
    let ours_build = t.elapsed();
    let advised: usize = ours
        .backing_memory()
        .iter()
        .map(|m| dpdk::advise_hugepages(m))
        .sum();
    let t = Instant::now();
    let mut theirs = DpdkLpm::new("bench", n_routes as u32 + 16, 1 << 16).expect("rte_lpm_create");
    for (a, l, nh) in &routes {
        theirs.add(*a, *l, *nh).expect("rte_lpm_add");
    }
    let theirs_build = t.elapsed();

    // Same answers on every address (rte_lpm's miss: None).
    for (i, a) in addrs.iter().take(1 << 20).enumerate() {
        assert_eq!(ours.lookup(*a), theirs.lookup(*a), "address #{i} {a:#x}");
    }

    const BURST: usize = 32;
    let mut out = vec![None; BURST];
    let mut out_raw = vec![0u32; BURST];
    let mut r_single = Vec::new();
    let mut r_bulk = Vec::new();
    let mut r_dpdk_x4 = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let mut acc = 0u32;
        for a in &addrs {
            acc = acc.wrapping_add(ours.lookup(*a).unwrap_or(0));
        }
        black_box(acc);
        r_single.push(n_addrs as f64 / t.elapsed().as_secs_f64() / 1e6);

        let t = Instant::now();
        for c in addrs.chunks_exact(BURST) {
            ours.lookup_bulk(c, &mut out);
            black_box(&out);
        }
        r_bulk.push(n_addrs as f64 / t.elapsed().as_secs_f64() / 1e6);

        let t = Instant::now();
        for c in addrs.chunks_exact(BURST) {
            theirs.lookup_x4(c, &mut out_raw, 0);
            black_box(&out_raw);
        }
        r_dpdk_x4.push(n_addrs as f64 / t.elapsed().as_secs_f64() / 1e6);
    }
    let (s, b, d) = (median(r_single), median(r_bulk), median(r_dpdk_x4));
    println!("IPv4 LPM, {n_routes} routes ({} distinct prefixes, {} tbl8 groups, {} MiB, {} MiB on huge pages), {n_addrs} addresses, median of {rounds} rounds",
        ours.len(), ours.tbl8_groups(), ours.memory_bytes() >> 20, advised >> 20);
    println!(
        "  build: ferry Lpm4::build {:.0} ms   rte_lpm_add x{n_routes} {:.0} ms",
        ours_build.as_secs_f64() * 1e3,
        theirs_build.as_secs_f64() * 1e3
    );
    println!("  ferry lookup (one at a time)   {s:8.1} M lookups/s");
    println!("  ferry lookup_bulk (burst 32)   {b:8.1} M lookups/s");
    println!("  rte_lpm_lookupx4 (burst 32)    {d:8.1} M lookups/s");
    println!("  ratio ferry bulk / rte_lpm     {:8.2}", b / d);

    // IPv6: 200k BGP-like prefixes: /32 allocations in 2000::/4, mostly /48s under them,
    // some /32 /40 /44 and /56../64. Same routes into rte_lpm6.
    let allocs: Vec<u128> = (0..4096)
        .map(|_| (0x2u128 << 124) | ((rng.next() as u128 & 0x0fff_ffff) << 96))
        .collect();
    let mut r6 = Vec::with_capacity(200_000);
    for i in 0..200_000u32 {
        let len = match rng.next() % 20 {
            0..=13 => 48,
            14 => 32,
            15 => 40,
            16 => 44,
            _ => 56 + (rng.next() % 9) as u8,
        };
        let base = allocs[(rng.next() % allocs.len() as u64) as usize];
        let a = (base | ((rng.next() as u128) << 32) | rng.next() as u128)
            & (u128::MAX << (128 - len as u32));
        r6.push((a, len, i % 65_000 + 1));
    }
    let t = Instant::now();
    let six = Lpm6::build(&r6).expect("build v6");
    let six_build = t.elapsed();
    for m in six.backing_memory() {
        dpdk::advise_hugepages(m);
    }
    let t = Instant::now();
    let mut theirs6 = DpdkLpm6::new("bench6", 200_016, 1 << 18).expect("rte_lpm6_create");
    for (a, l, nh) in &r6 {
        theirs6.add(*a, *l, *nh).expect("rte_lpm6_add");
    }
    let theirs6_build = t.elapsed();
    let a6: Vec<u128> = (0..1 << 20)
        .map(|i| {
            if i % 2 == 0 {
                let (a, _, _) = r6[(rng.next() % r6.len() as u64) as usize];
                a | (rng.next() as u128 & 0xffff)
            } else {
                (0x2u128 << 124) | ((rng.next() as u128) << 64 | rng.next() as u128) >> 4
            }
        })
        .collect();
    let mut b6: Vec<[u8; 16]> = a6.iter().map(|a| a.to_be_bytes()).collect();
    let mut out6 = vec![None; BURST];
    let mut out6_raw = vec![0i32; BURST];
    for (i, c) in a6.chunks_exact(BURST).take(1 << 12).enumerate() {
        six.lookup_bulk(c, &mut out6);
        theirs6.lookup_bulk(&mut b6[i * BURST..(i + 1) * BURST], &mut out6_raw);
        for (x, y) in out6.iter().zip(&out6_raw) {
            assert_eq!(
                x.map_or(-1, |v| v as i32),
                *y,
                "IPv6 answers differ in chunk {i}"
            );
        }
    }
    let (mut r_ours6, mut r_theirs6) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for c in a6.chunks_exact(BURST) {
            six.lookup_bulk(c, &mut out6);
            black_box(&out6);
        }
        r_ours6.push(a6.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
        let t = Instant::now();
        for c in b6.chunks_exact_mut(BURST) {
            theirs6.lookup_bulk(c, &mut out6_raw);
            black_box(&out6_raw);
        }
        r_theirs6.push(a6.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
    }
    let (o6, t6) = (median(r_ours6), median(r_theirs6));
    println!(
        "IPv6 LPM, 200000 routes ({} MiB), {} addresses, median of {rounds} rounds",
        six.memory_bytes() >> 20,
        a6.len()
    );
    println!(
        "  build: ferry Lpm6::build {:.0} ms   rte_lpm6_add x200000 {:.0} ms",
        six_build.as_secs_f64() * 1e3,
        theirs6_build.as_secs_f64() * 1e3
    );
    println!("  ferry lookup_bulk (burst 32)   {o6:8.1} M lookups/s");
    println!("  rte_lpm6_lookup_bulk (32)      {t6:8.1} M lookups/s");
    println!("  ratio ferry / rte_lpm6         {:8.2}", o6 / t6);
}
