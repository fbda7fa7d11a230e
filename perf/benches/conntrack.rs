//! The flow table alone (issue 5's memory target and the table's share of a new flow):
//! bytes per tracked IPv4 flow at 1M and 10M flows, and per-operation times at 1M flows:
//! insert (a new flow, both directions), lookup of a tracked flow (original and reply),
//! lookup of an untracked 5-tuple (the miss every new flow first pays), refresh, and
//! expiry. Median of several rounds; one core.
//!
//! `cargo bench -p ferry-perf --bench conntrack` (`CT_FLOWS`, `CT_ROUNDS` override).

use std::hint::black_box;
use std::time::Instant;

use ferry_dataplane::conntrack::{FlowTable, Key4, State};
use ferry_perf::gen::Rng;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn key(r: &mut Rng) -> Key4 {
    let x = r.next();
    Key4 {
        src: 0x0a00_0000 | (x as u32 & 0x00ff_ffff),
        dst: 0xc633_6400 | ((x >> 24) as u32 & 0xff),
        sport: (x >> 32) as u16 | 1024,
        dport: 443,
        proto: 6,
    }
}

fn reply(k: &Key4, i: u32) -> Key4 {
    Key4 {
        src: k.dst,
        dst: 0xcb00_7100 | (i & 0xff),
        sport: k.dport,
        dport: 1024 + (i >> 8) as u16,
        proto: k.proto,
    }
}

fn main() {
    let n: usize = std::env::var("CT_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = std::env::var("CT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    for cap in [1_000_000usize, 10_000_000] {
        let t: FlowTable<Key4> = FlowTable::new(cap, 1, 0);
        println!(
            "memory: {:.1} bytes per IPv4 flow at {} flows ({} MiB in all)",
            t.memory_bytes() as f64 / cap as f64,
            cap,
            t.memory_bytes() >> 20
        );
    }
    let (mut ins, mut hit, mut miss, mut refresh, mut expire) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let mut r = Rng(0x5eed + round as u64);
        let mut keys = Vec::with_capacity(n);
        let mut t: FlowTable<Key4> = FlowTable::new(n, 0x1234 + round as u64, 0);
        // Unique keys (a clash would be refused as Exists and skew nothing but the count).
        while keys.len() < n {
            let k = key(&mut r);
            let rp = reply(&k, keys.len() as u32);
            keys.push((k, rp));
        }
        let s = Instant::now();
        let mut ok = 0;
        for (i, (k, rp)) in keys.iter().enumerate() {
            ok += t
                .insert(*k, *rp, State::SynSent, 0, 0, 100 + (i % 1000) as u32)
                .is_ok() as usize;
        }
        ins.push(s.elapsed().as_nanos() as f64 / n as f64);
        let s = Instant::now();
        let mut found = 0;
        for (k, rp) in keys.iter() {
            found += black_box(t.lookup(k)).is_some() as usize;
            found += black_box(t.lookup(rp)).is_some() as usize;
        }
        hit.push(s.elapsed().as_nanos() as f64 / (2 * n) as f64);
        assert_eq!(found, 2 * ok);
        let s = Instant::now();
        let mut none = 0;
        for _ in 0..n {
            none += black_box(t.lookup(&key(&mut r))).is_none() as usize;
        }
        miss.push(s.elapsed().as_nanos() as f64 / n as f64);
        black_box(none);
        let ids: Vec<u32> = keys
            .iter()
            .filter_map(|(k, _)| t.lookup(k).map(|x| x.0))
            .collect();
        let s = Instant::now();
        for (i, id) in ids.iter().enumerate() {
            t.refresh(*id, State::Established, 0, 1, 2000 + (i % 7) as u32);
        }
        refresh.push(s.elapsed().as_nanos() as f64 / ids.len() as f64);
        let s = Instant::now();
        let mut gone = 0;
        // Every flow is due by tick 2007 (refreshed at 1 for 2000..2006 ticks).
        while !t.is_empty() {
            gone += t.expire(2007, 4096, |_, _| {});
        }
        expire.push(s.elapsed().as_nanos() as f64 / gone.max(1) as f64);
        if round == 0 {
            println!("{ok} of {n} flows inserted (the rest: key clashes of the generator)");
        }
    }
    println!(
        "at {n} flows, median of {rounds} rounds: insert {:.0} ns, lookup hit {:.0} ns, lookup miss {:.0} ns, refresh {:.0} ns, expire {:.0} ns per flow",
        median(ins),
        median(hit),
        median(miss),
        median(refresh),
        median(expire)
    );
}
