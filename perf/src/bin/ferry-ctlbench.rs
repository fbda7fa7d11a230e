//! `ferry-ctlbench`: the control plane's benchmark client (run by `perf/control.sh`).
//!
//! Over ferryd's unix socket:
//! * `load`: applies the running config plus N BGP-like IPv4 routes (the LPM bench's length
//!   mix, via one gateway) as one whole state, and times accepted (the ACK) and active
//!   (`Wait`: every worker runs it); reports ferryd's peak RSS (VmHWM of `--pid`).
//! * `churn`: R route changes a second for S seconds, each its own `Apply` (a delta: a new
//!   /24 added, or one added earlier deleted), and for each the time from sending it to
//!   `Wait` answering that its generation is active on every worker; and the CPU time of
//!   ferryd's threads that are not workers (the control side) over the run.
//!
//! Prints one JSON object per phase on stdout.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::v1 as pb;
use ferry_proto::v1::ferry_client::FerryClient;
use tonic::transport::Channel;

use ferry_perf::gen::{length, Rng};

/// Whether a/len overlaps `keep` (the traffic's prefix, which no generated route touches).
fn overlaps(a: u32, len: u8, keep: (u32, u8)) -> bool {
    let l = len.min(keep.1);
    let m = u32::MAX.checked_shl(32 - u32::from(l)).unwrap_or(0);
    a & m == keep.0 & m
}

fn usage() -> ! {
    eprintln!(
        "usage: ferry-ctlbench --socket PATH --pid PID --via ADDR --keep PREFIX \
         (load --routes N | churn --rate R --secs S)"
    );
    std::process::exit(2)
}

async fn connect(path: PathBuf) -> FerryClient<Channel> {
    let ch = ferry_proto::connect_unix(path, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| {
            eprintln!("ferry-ctlbench: cannot reach ferryd: {e}");
            std::process::exit(1)
        });
    FerryClient::new(ch)
        .max_decoding_message_size(ferry_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(ferry_proto::MAX_MESSAGE_BYTES)
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds of ferryd's threads other than its DPDK worker lcores, by thread name.
fn control_cpu_s(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let hz = 100.0; // USER_HZ on Linux
    let mut by = std::collections::BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            // DPDK names its worker lcores' threads rte-worker-N (lcore-worker-N before 22.x).
            if comm.starts_with("rte-worker") || comm.starts_with("lcore-worker") {
                continue;
            }
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // Fields after the ")" of comm: utime and stime are the 12th and 13th.
            if let Some(rest) = stat.rsplit_once(')').map(|x| x.1) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
                let st: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
                *by.entry(comm.trim().to_string()).or_insert(0.0) += (ut + st) as f64 / hz;
            }
        }
    }
    by
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let socket = PathBuf::from(get("--socket").unwrap_or_else(|| usage()));
    let pid: u32 = get("--pid")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| usage());
    let via = get("--via").unwrap_or_else(|| usage());
    let keep: (u32, u8) = get("--keep")
        .and_then(|k| {
            let (a, l) = k.split_once('/')?;
            Some((
                u32::from(a.parse::<std::net::Ipv4Addr>().ok()?),
                l.parse().ok()?,
            ))
        })
        .unwrap_or_else(|| usage());
    let mut c = connect(socket.clone()).await;
    if args.iter().any(|a| a == "load") {
        let n: usize = get("--routes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let mut cfg = c
            .get_config(pb::GetConfigRequest {})
            .await
            .expect("GetConfig")
            .into_inner();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut seen = std::collections::HashSet::new();
        for r in &cfg.routes {
            seen.insert(r.prefix.clone());
        }
        let mut added = 0;
        while added < n {
            let len = length(&mut rng);
            let a = (rng.next() as u32) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            // Not 0/8, 127/8, multicast, nor the traffic's or the ports' prefixes.
            if a >> 24 == 0
                || a >> 24 == 127
                || a >> 24 >= 224
                || overlaps(a, len, keep)
                || overlaps(a, len, (0xc0a8_0000, 16))
            {
                continue;
            }
            let p = format!("{}/{len}", std::net::Ipv4Addr::from(a));
            if seen.insert(p.clone()) {
                cfg.routes.push(pb::Route {
                    prefix: p,
                    via: vec![via.clone()],
                });
                added += 1;
            }
        }
        let rss0 = status_kb(pid, "VmRSS:");
        let t = Instant::now();
        let r = c
            .apply(pb::ApplyRequest {
                desired: Some(pb::apply_request::Desired::Config(cfg)),
                ..Default::default()
            })
            .await
            .expect("Apply")
            .into_inner();
        let accepted = t.elapsed();
        assert_eq!(
            r.result,
            pb::apply_response::Result::Ack as i32,
            "{:?}",
            r.errors
        );
        c.wait(pb::WaitRequest {
            generation: r.generation,
            reclaimed: false,
            timeout_ms: 60_000,
        })
        .await
        .expect("Wait");
        let active = t.elapsed();
        println!(
            "{}",
            serde_json::json!({
                "phase": "load", "routes": n, "routes4_in_fib": r.routes4,
                "accepted_s": accepted.as_secs_f64(), "active_s": active.as_secs_f64(),
                "validate_s": r.validate_us as f64 / 1e6, "compile_s": r.compile_us as f64 / 1e6,
                "rss_before_mib": rss0 / 1024, "rss_after_mib": status_kb(pid, "VmRSS:") / 1024,
                "peak_rss_mib": status_kb(pid, "VmHWM:") / 1024,
            })
        );
        return;
    }
    if args.iter().any(|a| a == "churn") {
        let rate: u64 = get("--rate").and_then(|v| v.parse().ok()).unwrap_or(1000);
        let secs: u64 = get("--secs").and_then(|v| v.parse().ok()).unwrap_or(30);
        let total = rate * secs;
        // New /24s in 100.64.0.0/10 (shared address space: not in the loaded table's mix
        // often, and never the traffic's); every other change deletes one added before.
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
        let mut added: Vec<String> = Vec::new();
        let mut nacks = 0u64;
        let mut waits = Vec::new();
        let cpu0 = control_cpu_s(pid);
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for i in 0..total {
            tick.tick().await;
            let op = if i % 2 == 1 && !added.is_empty() {
                let k = (rng.next() % added.len() as u64) as usize;
                pb::change::Op::DeleteRoute(added.swap_remove(k))
            } else {
                let a = 0x6440_0000u32 | ((rng.next() as u32 & 0x3fff) << 8);
                let p = format!("{}/24", std::net::Ipv4Addr::from(a));
                if added.contains(&p) {
                    pb::change::Op::DeleteRoute(p.clone())
                } else {
                    added.push(p.clone());
                    pb::change::Op::UpsertRoute(pb::Route {
                        prefix: p,
                        via: vec![via.clone()],
                    })
                }
            };
            let sent = Instant::now();
            let r = c
                .apply(pb::ApplyRequest {
                    desired: Some(pb::apply_request::Desired::Delta(pb::Delta {
                        changes: vec![pb::Change { op: Some(op) }],
                    })),
                    ..Default::default()
                })
                .await
                .expect("Apply")
                .into_inner();
            if r.result != pb::apply_response::Result::Ack as i32 {
                nacks += 1;
                continue;
            }
            let mut w = c.clone();
            let lat = lat.clone();
            waits.push(tokio::spawn(async move {
                if w.wait(pb::WaitRequest {
                    generation: r.generation,
                    reclaimed: false,
                    timeout_ms: 10_000,
                })
                .await
                .is_ok()
                {
                    lat.lock().unwrap().push(sent.elapsed().as_secs_f64() * 1e3);
                }
            }));
        }
        for w in waits {
            let _ = w.await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let cpu1 = control_cpu_s(pid);
        let by_thread: std::collections::BTreeMap<String, f64> = cpu1
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (v - cpu0.get(k).copied().unwrap_or(0.0)) / start.elapsed().as_secs_f64(),
                )
            })
            .collect();
        let cpu: f64 = cpu1.values().sum::<f64>() - cpu0.values().sum::<f64>();
        let mut v = lat.lock().unwrap().clone();
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{}",
            serde_json::json!({
                "phase": "churn", "changes": total, "active": v.len(), "nacks": nacks,
                "rate_per_s": total as f64 / elapsed, "secs": elapsed,
                "active_ms_p50": pct(&v, 0.5), "active_ms_p99": pct(&v, 0.99),
                "active_ms_max": v.last().copied().unwrap_or(0.0),
                "control_cpu_cores": cpu / elapsed,
                "control_cpu_by_thread": by_thread,
                "peak_rss_mib": status_kb(pid, "VmHWM:") / 1024,
            })
        );
        return;
    }
    usage()
}
