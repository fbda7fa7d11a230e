//! `ferry-svcbench`: what virtual services cost the control side (issue 6's targets), in
//! process: the real validation, compiler and controller, and snapshot subscribers polled
//! by a thread the way workers poll between bursts (no DPDK, no gRPC: the wire's share of
//! an API apply is measured by `perf/control.sh` for routes).
//!
//! * `apply`: a whole state of N services with M backends each (HTTP health checks),
//!   validated, compiled and published; timed until every subscriber runs it.
//! * `health`: one backend's health changes (its `fall`-th failed check is reported, then
//!   its `rise`-th good one): timed from the report to every subscriber running the new
//!   generation, R times each way.
//!
//! Usage: ferry-svcbench [--services N] [--backends M] [--scheduler S] [--table-size P]
//!        [--rounds R] [--workers W]
//! Prints one JSON object.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_control::compile::Plan;
use ferry_control::config::{Config, RawConfig};
use ferry_control::controller::{ApplyRequest, Command, Controller, Desired};
use ferry_control::health::Report;
use ferry_control::service::{RawBackend, RawHealth, RawService};

const BASE: &str = "dpdk: {lcores: [0, 1, 2]}
ports:
  - {name: a, devargs: net_null0, addresses: [10.0.0.1/16, \"fd00::1/64\"], exception: false}
  - {name: b, devargs: net_null1, addresses: [10.128.0.1/9, \"fd01::1/64\"], exception: false}
";

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: cannot parse {v:?}"))
        })
        .unwrap_or(default)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = arg(&args, "--services", 10_000);
    let m: u32 = arg(&args, "--backends", 100);
    let sched: String = arg(&args, "--scheduler", "wlc".to_string());
    let table: u32 = arg(&args, "--table-size", 65537);
    let rounds: usize = arg(&args, "--rounds", 20);
    let workers: usize = arg(&args, "--workers", 2);

    let cfg = Config::from_yaml(BASE).expect("base config");
    let macs = vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
    let plan = Plan::build(&cfg, &macs).expect("base plan");
    let t0 = Instant::now();
    let (mut ctl, subs) = Controller::new(cfg, plan, macs, vec![None, None], workers, t0);

    // The workers' side: poll every subscriber, as a worker does between bursts, and
    // publish the lowest generation all of them run.
    let running = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (running, stop) = (running.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut subs = subs;
            while !stop.load(Ordering::Relaxed) {
                for s in subs.iter_mut() {
                    s.poll();
                }
                let low = subs.iter().map(|s| s.generation()).min().unwrap_or(0);
                running.store(low, Ordering::Release);
                std::thread::sleep(Duration::from_micros(20));
            }
        })
    };
    let wait_for = |g: u64| {
        while running.load(Ordering::Acquire) < g {
            std::hint::spin_loop();
        }
    };

    // N services of M backends: VIPs in 10.0.0.0/16 (ports 1..), backends in 10.128/9.
    let mut raw: RawConfig = serde_yaml_from(BASE);
    for s in 0..n {
        let vip = format!("10.0.{}.{}", 100 + s / 50_000, 10 + (s % 240));
        let port = 1 + s / 240;
        raw.services.push(RawService {
            name: format!("svc{s}"),
            vip,
            port: Some(port),
            protocol: "tcp".into(),
            scheduler: Some(sched.clone()),
            table_size: Some(table),
            backends: (0..m)
                .map(|b| {
                    let i = s * m + b;
                    RawBackend {
                        address: format!(
                            "10.{}.{}.{}",
                            128 + (i >> 16) % 128,
                            (i >> 8) & 255,
                            i & 255
                        ),
                        port: Some(8080),
                        weight: Some(100),
                        drain: None,
                    }
                })
                .collect(),
            health: Some(RawHealth {
                kind: Some("http".into()),
                path: Some("/healthz".into()),
                interval_ms: Some(500),
                timeout_ms: Some(300),
                rise: Some(2),
                fall: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let t = Instant::now();
    let a = ctl
        .handle(
            Command::Apply(ApplyRequest {
                desired: Desired::Whole(Box::new(raw)),
                base_generation: None,
                dry_run: false,
            }),
            Instant::now(),
        )
        .expect("apply accepted")
        .expect("an apply answers");
    let accepted = t.elapsed();
    wait_for(a.generation);
    let active = t.elapsed();
    ctl.reclaim();

    // Health: backend 0 of service 0 goes down (2nd failure) and up (2nd success).
    let key = ("svc0".to_string(), "10.128.0.0".parse().unwrap(), 8080u16);
    let report = |ok| {
        Command::Health(Report {
            key: key.clone(),
            ok,
            detail: String::new(),
        })
    };
    let (mut down, mut up) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (ok, out) in [(false, &mut down), (true, &mut up)] {
            let _ = ctl.handle(report(ok), Instant::now());
            let before = ctl.generations().published;
            let t = Instant::now();
            let _ = ctl.handle(report(ok), Instant::now());
            let g = ctl.generations().published;
            assert!(g > before, "a health change publishes");
            wait_for(g);
            out.push(t.elapsed().as_secs_f64() * 1e3);
            ctl.reclaim();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = poller.join();
    let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "services": n, "backends_per_service": m, "scheduler": sched, "table_size": table,
            "apply": {"validate_ms": ms(a.validate), "compile_ms": ms(a.compile),
                      "accepted_ms": ms(accepted), "active_ms": ms(active)},
            "health_change_ms": {
                "down": {"p50": r3(percentile(&mut down, 0.5)), "p99": r3(percentile(&mut down, 0.99)), "max": r3(percentile(&mut down, 1.0))},
                "up": {"p50": r3(percentile(&mut up, 0.5)), "p99": r3(percentile(&mut up, 0.99)), "max": r3(percentile(&mut up, 1.0))},
                "rounds": rounds,
            },
        })
    );
}

fn serde_yaml_from(text: &str) -> RawConfig {
    let cfg = Config::from_yaml(text).expect("base config");
    cfg.to_raw()
}
