//! `ferryd`'s process: EAL, ports, exception interfaces, workers, and the control loop
//! (neighbour learning and ageing, SIGHUP reloads, counters, shutdown).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_dataplane::counters::WorkerCounters;
use ferry_dataplane::dpdk::{self, Eal, Mempool, Port, PortConfig as DevConfig, TxBuffer};
use ferry_dataplane::router::WorkerCommand;
use ferry_dataplane::wire::ethernet::format_mac;
use ferry_dataplane::worker::{Handed, HoldConfig, RxQueue, Worker};
use ferry_proto::v1 as pb;

use crate::afpacket;
use crate::agent::{self, AgentOptions, Request};
use crate::compile::{timed, Plan};
use crate::config::{Config, PortConfig};
use crate::controller::{self, Controller};
use crate::neighbor::ResolverStats;
use crate::views::{self, total, Sources};

/// Options from the command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub config: PathBuf,
    /// Write counters as JSON here every second (and at exit).
    pub stats_file: Option<PathBuf>,
    /// Log a counters line this often (0: never).
    pub stats_interval: Duration,
    /// The gRPC API and metrics endpoints.
    pub agent: AgentOptions,
}

/// A fatal start-up error: one line, saying how to fix it where we can tell.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("config {path}: {source}")]
    Config {
        path: String,
        source: crate::config::ConfigError,
    },
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Dpdk(#[from] dpdk::DpdkError),
    #[error("port {name:?}: {source}")]
    Port {
        name: String,
        source: dpdk::DpdkError,
    },
    #[error("compiling tables: {0}")]
    Compile(#[from] crate::compile::CompileError),
    #[error("{0}")]
    Agent(#[from] agent::AgentError),
    #[error("port {name:?}: device {device:?} was not created from devargs {devargs:?}: {hint}")]
    NoDevice {
        name: String,
        device: String,
        devargs: String,
        hint: &'static str,
    },
}

fn no_device_hint(device: &str) -> &'static str {
    // The effective uid, from /proc/self/status (no unsafe outside the dpdk module).
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(true);
    if !root {
        "not running as root: af_packet, af_xdp and tap need CAP_NET_RAW/CAP_NET_ADMIN (run as root)"
    } else if device.starts_with("net_") {
        "the PMD refused it (see its log line above: e.g. the interface in iface= does not exist)"
    } else {
        "no such PCI device, or it is not bound to vfio-pci/uio (dpdk-devbind.py --bind=vfio-pci ADDR)"
    }
}

pub fn load(path: &Path) -> Result<Config, StartError> {
    let text = std::fs::read_to_string(path).map_err(|source| StartError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Config::from_yaml(&text).map_err(|source| StartError::Config {
        path: path.display().to_string(),
        source,
    })
}

/// EAL arguments for a config: lcores, the main lcore, one --vdev or -a per port.
pub fn eal_args(cfg: &Config) -> Vec<String> {
    let mapped = cfg.dpdk.cpus.iter().any(|c| c.is_some());
    let mut args = if mapped {
        let list: Vec<String> = cfg
            .dpdk
            .lcores
            .iter()
            .zip(&cfg.dpdk.cpus)
            .map(|(l, c)| format!("{l}@{}", c.unwrap_or(*l)))
            .collect();
        vec![format!("--lcores={}", list.join(","))]
    } else {
        let list: Vec<String> = cfg.dpdk.lcores.iter().map(|l| l.to_string()).collect();
        vec!["-l".to_string(), list.join(",")]
    };
    args.push("--main-lcore".to_string());
    args.push(cfg.dpdk.lcores[0].to_string());
    let mut any_pci = false;
    for p in &cfg.ports {
        if p.device.starts_with("net_") {
            args.push(format!("--vdev={}", afpacket::devargs(&p.devargs)));
        } else {
            any_pci = true;
            args.push("-a".into());
            args.push(p.devargs.clone());
        }
    }
    if !any_pci {
        args.push("--no-pci".into());
    }
    args.extend(cfg.dpdk.args.iter().cloned());
    args
}

/// Events a worker may have in flight to the control side (neighbours learned and to
/// resolve; a full ring loses events, counted as `events_lost`).
const EVENT_RING: usize = 4096;
/// Solicitations the control side may have in flight to one worker.
const COMMAND_RING: usize = 1024;
/// Packets in flight from one worker to another (NAT handoff), per pair.
const HANDOFF_RING: usize = 1024;
/// Flow records in flight from a worker to the control thread (`ferryctl conntrack`).
const DUMP_RING: usize = 4096;

/// The worker's hold queue from `tuning`: packets wait a little longer than resolution
/// takes (probes x retransmit time), so that the resolver's verdict comes first.
pub fn hold_config(t: &crate::config::Tuning) -> HoldConfig {
    HoldConfig {
        packets: t.hold_packets,
        per_neighbor: t.unres_qlen,
        per_neighbor_bytes: t.unres_qlen_bytes,
        ms: t.neighbor_retrans_ms * t.neighbor_probes as u64 + 500,
    }
}

struct KernelIf {
    name: String,
    port: Port,
}

/// Run until SIGINT/SIGTERM. Returns the process exit code.
pub fn run(opts: Options) -> Result<(), StartError> {
    let cfg = load(&opts.config)?;
    opts.agent.check()?;
    let workers = cfg.workers();
    let eal = Eal::init(&eal_args(&cfg))?;
    tracing::info!(workers, lcores = ?cfg.dpdk.lcores, "EAL up");

    // Single-segment packets: the data room holds the largest frame any port accepts
    // (MTU + Ethernet header + one VLAN tag), plus DPDK's headroom.
    let max_frame = cfg
        .ports
        .iter()
        .map(|p| p.mtu as usize + 18)
        .max()
        .unwrap_or(1518);
    let room = (max_frame.max(2048) + 128) as u16;
    let pool = Arc::new(Mempool::new("ferry_pkt", cfg.dpdk.mbufs, 256, room)?);
    // af_packet ports hand over whole datagrams the kernel reassembled, in ring frames of up
    // to 64 KiB: they receive into mbufs that large, from a pool of their own (afpacket).
    let afp = afpacket::RxPool::plan(&cfg, room);
    for w in afpacket::warnings(&cfg) {
        tracing::warn!("{w}");
    }
    let afp_pool = match &afp {
        Some(a) => {
            tracing::info!(
                mbufs = a.mbufs,
                data_room = a.room,
                hugepages_mib = a.hugepage_bytes() >> 20,
                rings_mib = afpacket::ring_bytes(&cfg) >> 20,
                "af_packet rx pool"
            );
            Some(Mempool::new("ferry_afp", a.mbufs, a.cache, a.room)?)
        }
        None => None,
    };
    // Logs what to change when frames arrive cut short (checked in the control loop).
    let mut truncation = afpacket::TruncationWatch::new(&cfg);
    let queues = workers as u16;
    // Wire ports take an MTU and the NIC's checksum verdict; the kernel's TAP side neither.
    let dev = |mtu: Option<u16>| DevConfig {
        rx_queues: queues,
        tx_queues: queues,
        rx_desc: cfg.tuning.rx_desc,
        tx_desc: cfg.tuning.tx_desc,
        mtu,
        rx_ip_cksum: mtu.is_some(),
        mbuf_fast_free: afp.is_none(),
    };
    let mut ports = Vec::new();
    for (idx, p) in cfg.ports.iter().enumerate() {
        let wrap = |source| StartError::Port {
            name: p.name.clone(),
            source,
        };
        let id = dpdk::port_by_name(&p.device).map_err(|_| StartError::NoDevice {
            name: p.name.clone(),
            device: p.device.clone(),
            devargs: p.devargs.clone(),
            hint: no_device_hint(&p.device),
        })?;
        let rx_pool = match (&afp, &afp_pool) {
            (Some(a), Some(big)) if a.ports[idx] => big,
            _ => &pool,
        };
        let port = Port::start(id, &dev(Some(p.mtu)), rx_pool).map_err(wrap)?;
        let i = port.info();
        tracing::info!(
            port = %p.name, id, driver = %i.driver, mac = %format_mac(&i.mac), mtu = p.mtu,
            rss = i.rss, rx_ip_cksum = i.rx_ip_cksum, queues, link = %port.link(), "port up"
        );
        ports.push(port);
    }
    let macs: Vec<[u8; 6]> = ports.iter().map(|p| p.info().mac).collect();

    // Exception path: a TAP per port, with the port's MAC and addresses.
    let mut kernel: Vec<Option<KernelIf>> = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        if !p.exception {
            kernel.push(None);
            continue;
        }
        let name = format!("fx-{}", p.name);
        let vdev = format!("net_tap_fx{i}");
        let devargs = format!("{vdev},iface={name},mac={}", format_mac(&macs[i]));
        let wrap = |source| StartError::Port {
            name: format!("{} (kernel interface {name})", p.name),
            source,
        };
        let id = eal.probe(&devargs, &vdev).map_err(wrap)?;
        let port = Port::start(id, &dev(None), &pool).map_err(wrap)?;
        configure_kernel_if(&name, p);
        tracing::info!(port = %p.name, kernel_if = %name, "exception path up");
        kernel.push(Some(KernelIf { name, port }));
    }

    let (plan, took) = timed(|| Plan::build(&cfg, &macs));
    let plan = plan?;
    tracing::info!(
        routes4 = plan.routes4,
        routes6 = plan.routes6,
        ms = took.as_millis() as u64,
        fib_mib = (plan.fib4.memory_bytes() + plan.fib6.memory_bytes()) >> 20,
        "tables compiled"
    );
    let kernel_ifs: Vec<Option<String>> = kernel
        .iter()
        .map(|k| k.as_ref().map(|k| k.name.clone()))
        .collect();
    let started = Instant::now();
    let (mut ctl, subs) = Controller::new(cfg, plan, macs, kernel_ifs.clone(), workers, started);
    let cfg = ctl.config().clone(); // the start-up config: ports, tuning (restart-only)
                                    // The API and metrics listeners are bound before any worker runs: a bad address fails
                                    // the start with a clear error.
    let agent = agent::start(&opts.agent, std::thread::current(), ctl.generations())?;
    if let Some(p) = &opts.agent.socket {
        tracing::info!(socket = %p.display(), "gRPC API on the unix socket");
    }
    if let Some(a) = &opts.agent.listen {
        tracing::info!(listen = %a, mtls = opts.agent.tls.is_some(), "gRPC API on TCP");
    }
    if let Some(a) = &opts.agent.metrics {
        tracing::info!(listen = %a, "Prometheus metrics at /metrics");
    }
    let apply_seconds = views::apply_histogram();

    let stop = Arc::new(AtomicBool::new(false));
    // Service backends' connections, counted by every worker (lc, wlc, the views).
    let backend_stats =
        ferry_dataplane::service::BackendStats::new(ferry_dataplane::service::MAX_BACKENDS);
    let mut counters = Vec::new();
    let mut events_rx = Vec::new();
    let mut commands_tx = Vec::new();
    let lcores = eal.worker_lcores();
    // NAT handoff rings, one per ordered pair of workers: `rings[from][to]`.
    let mut handoff_tx: Vec<Vec<Option<rtrb::Producer<Handed>>>> = (0..workers)
        .map(|_| (0..workers).map(|_| None).collect())
        .collect();
    let mut handoff_rx: Vec<Vec<rtrb::Consumer<Handed>>> =
        (0..workers).map(|_| Vec::new()).collect();
    for (from, row) in handoff_tx.iter_mut().enumerate() {
        for (to, slot) in row.iter_mut().enumerate() {
            if from != to {
                let (p, c) = rtrb::RingBuffer::new(HANDOFF_RING);
                *slot = Some(p);
                handoff_rx[to].push(c);
            }
        }
    }
    // Each worker tracks its share of the flows (a flow lives on its owner only).
    let nat_capacity = (cfg.nat.max_flows as usize)
        .div_ceil(workers.max(1))
        .max(1024);
    let mut dumps_rx = Vec::new();
    let mut handoff_tx = handoff_tx.into_iter();
    let mut handoff_rx = handoff_rx.into_iter();
    for (w, (sub, lcore)) in subs.into_iter().zip(lcores.iter().copied()).enumerate() {
        let q = w as u16;
        let mut rx = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            rx.push(RxQueue {
                port: i as u16,
                dpdk_port: p.id(),
                queue: q,
                from_kernel: false,
                rx_ip_cksum: p.info().rx_ip_cksum,
            });
        }
        for (i, k) in kernel.iter().enumerate() {
            if let Some(k) = k {
                rx.push(RxQueue {
                    port: i as u16,
                    dpdk_port: k.port.id(),
                    queue: q,
                    from_kernel: true,
                    rx_ip_cksum: false,
                });
            }
        }
        let c = Arc::new(WorkerCounters::default());
        let (etx, erx) = rtrb::RingBuffer::new(EVENT_RING);
        let (ctx, crx) = rtrb::RingBuffer::new(COMMAND_RING);
        let (dtx, drx) = rtrb::RingBuffer::new(DUMP_RING);
        dumps_rx.push(drx);
        let worker = Worker {
            index: w,
            rx,
            tx: ports.iter().map(|p| TxBuffer::new(p.id(), q)).collect(),
            kernel_tx: kernel
                .iter()
                .map(|k| k.as_ref().map(|k| TxBuffer::new(k.port.id(), q)))
                .collect(),
            snapshots: sub,
            counters: c.clone(),
            events: etx,
            commands: crx,
            control: std::thread::current(),
            pool: pool.clone(),
            stop: stop.clone(),
            icmp_rate: cfg.tuning.icmp_rate,
            hold: hold_config(&cfg.tuning),
            nat_capacity,
            nat_prefault: !cfg.nat.is_empty() || !cfg.services.is_empty(),
            handoff_tx: handoff_tx.next().unwrap_or_default(),
            handoff_rx: handoff_rx.next().unwrap_or_default(),
            dump: dtx,
            backend_stats: backend_stats.clone(),
        };
        if let Err(e) = eal.launch(lcore, move || worker.run()) {
            // Stop the workers already running before ports and EAL go away.
            stop.store(true, Ordering::Relaxed);
            for l in &lcores[..w] {
                eal.wait(*l);
            }
            return Err(e.into());
        }
        counters.push(c);
        events_rx.push(erx);
        commands_tx.push(ctx);
    }
    // A worker sets its generation when it enters its loop, after writing its NAT tables
    // (which takes seconds for millions of flows): "forwarding" means every worker polls.
    let ready = Instant::now();
    while counters.iter().any(|c| c.generation.get() == 0)
        && ready.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !cfg.nat.is_empty() {
        tracing::info!(
            flows = cfg.nat.max_flows,
            ms = ready.elapsed().as_millis() as u64,
            "NAT tables written"
        );
    }
    tracing::info!(
        workers,
        generation = ctl.generations().published,
        "forwarding"
    );

    let hup = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGHUP, &hup),
        (signal_hook::consts::SIGINT, &term),
        (signal_hook::consts::SIGTERM, &term),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, flag.clone()) {
            tracing::warn!("cannot handle signal {sig}: {e}");
        }
    }

    // Health checks: the prober reports to this thread; it checks what the config asks.
    let prober = match crate::health::Prober::start(std::thread::current()) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!("health checks cannot start: {e}; every backend counts as up");
            None
        }
    };
    let mut probed_version = 0;
    let mut last_stats = Instant::now();
    let mut last_log = Instant::now();
    const STATS_EVERY: Duration = Duration::from_secs(1);
    // The longest sleep: how late a SIGHUP reload or a SIGTERM may be seen.
    const SIGNAL_POLL: Duration = Duration::from_millis(50);
    // How long until `every` has passed since `last`.
    let due = |last: Instant, every: Duration, now: Instant| {
        every.saturating_sub(now.duration_since(last))
    };
    while !term.load(Ordering::Relaxed) {
        // Sleep until something is due: a worker's event (the worker wakes this thread:
        // held packets may wait for it), what the controller has due (a held-back publish,
        // the resolver, ageing), the stats file or log line; at most SIGNAL_POLL, since a
        // signal may be taken by another thread. (It woke every millisecond: 1000 wake-ups
        // a second on the CPU it shares, which cost a generator there ~10% of its rate.)
        let now = Instant::now();
        let mut wait = SIGNAL_POLL.min(ctl.next_due(now).saturating_duration_since(now));
        let g = ctl.generations();
        if g.active < g.published || g.reclaimed < g.active {
            // A client may wait for the workers to take the newest generation, or for the
            // old ones to be freed: look every millisecond until they have.
            wait = wait.min(Duration::from_millis(1));
        }
        if opts.stats_file.is_some() {
            wait = wait.min(due(last_stats, STATS_EVERY, now));
        }
        if !opts.stats_interval.is_zero() {
            wait = wait.min(due(last_log, opts.stats_interval, now));
        }
        std::thread::park_timeout(wait);
        let now = Instant::now();
        for (worker, r) in events_rx.iter_mut().enumerate() {
            // At most a ring's worth per wake-up, so that a flood of events cannot hold
            // back the resolver's tick and publishing.
            for _ in 0..EVENT_RING {
                let Ok(event) = r.pop() else { break };
                // Worker events cannot fail.
                let _ = ctl.handle(controller::Command::Worker { worker, event }, now);
            }
        }
        if let Some(p) = &prober {
            if probed_version != ctl.version() {
                probed_version = ctl.version();
                p.set(crate::health::probes(ctl.config()));
            }
            while let Ok(r) = p.reports.try_recv() {
                let _ = ctl.handle(controller::Command::Health(r), now);
            }
        }
        ctl.passive(&backend_stats, now);
        ctl.tick(now, &mut commands_tx);
        if hup.swap(false, Ordering::Relaxed) {
            let t = Instant::now();
            let r = ctl.handle(controller::Command::ApplyFile(opts.config.clone()), now);
            apply_seconds.observe(t.elapsed().as_secs_f64());
            match r {
                Ok(Some(a)) => tracing::info!(
                    version = a.version,
                    routes4 = a.routes4,
                    routes6 = a.routes6,
                    generation = a.generation,
                    "config reloaded"
                ),
                Ok(None) => {}
                Err(e) => tracing::error!(
                    version = ctl.version(),
                    generation = ctl.generations().accepted,
                    "config reload refused, running tables kept: {e}"
                ),
            }
        }
        // The agent's requests, in arrival order (applies are serialized here).
        while let Ok(req) = agent.requests.try_recv() {
            let sources = |ctl| Sources {
                ctl,
                ports: &ports,
                kernel_ifs: &kernel_ifs,
                counters: &counters,
                lcores: &lcores,
                started,
                apply_seconds: &apply_seconds,
                backend_stats: &backend_stats,
            };
            match req {
                Request::Apply { req, nonce, reply } => {
                    let t = Instant::now();
                    let dry_run = req.dry_run;
                    let whole = matches!(req.desired, controller::Desired::Whole(_));
                    let r = ctl.handle(controller::Command::Apply(req), Instant::now());
                    apply_seconds.observe(t.elapsed().as_secs_f64());
                    let r = match r {
                        Ok(Some(a)) => {
                            // (Deltas may come a thousand a second: logged at debug.)
                            if whole {
                                tracing::info!(
                                    version = a.version, generation = a.generation, dry_run,
                                    routes4 = a.routes4, routes6 = a.routes6, nonce = %nonce,
                                    us = t.elapsed().as_micros() as u64, "API apply accepted"
                                );
                            } else {
                                tracing::debug!(
                                    version = a.version, generation = a.generation, dry_run,
                                    nonce = %nonce, us = t.elapsed().as_micros() as u64,
                                    "API delta accepted"
                                );
                            }
                            Ok(a)
                        }
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!(nonce = %nonce, dry_run, "API apply refused: {e}");
                            Err(e)
                        }
                    };
                    // The generations first: a client that waits for the answer's generation
                    // at once must find it accepted.
                    agent.share_generations(ctl.generations());
                    let _ = reply.send(r);
                }
                Request::Config(reply) => {
                    let _ = reply.send(ctl.config().clone());
                }
                Request::Status(reply) => {
                    let _ = reply.send(views::status(&sources(&ctl)));
                }
                Request::Counters(reply) => {
                    let _ = reply.send(views::counters(&sources(&ctl)));
                }
                Request::Routes(family, reply) => {
                    let _ = reply.send(views::routes(&ctl, family));
                }
                Request::Neighbors(reply) => {
                    let _ = reply.send(views::neighbors(&ctl));
                }
                Request::NatRules(reply) => {
                    let _ = reply.send(views::nat_rules(&ctl, &counters));
                }
                Request::Flows(req, reply) => {
                    let r = views::nat_filter(&ctl, req.filter.as_ref())
                        .map(|f| views::flows(&ctl, f, req.limit, &mut commands_tx, &mut dumps_rx));
                    let _ = reply.send(r);
                }
                Request::Flush(req, reply) => {
                    let r = views::nat_filter(&ctl, req.filter.as_ref()).map(|f| {
                        for c in commands_tx.iter_mut() {
                            // (A full command ring: that worker's flows stay; rare, logged.)
                            if c.push(WorkerCommand::NatFlush(f)).is_err() {
                                tracing::warn!("a worker's command ring is full: flush not sent");
                            }
                        }
                        pb::FlushFlowsResponse {
                            flows_before: counters.iter().map(|c| c.nat.flows.get()).sum(),
                        }
                    });
                    let _ = reply.send(r);
                }
                Request::Services(name, reply) => {
                    let _ = reply.send(views::services(&sources(&ctl), &name));
                }
                Request::Metrics(reply) => {
                    let _ = reply.send(views::metrics(&sources(&ctl)));
                }
            }
        }
        ctl.publish_if_due(now);
        ctl.reclaim();
        agent.share_generations(ctl.generations());
        truncation.check(&counters, now);
        if let Some(path) = &opts.stats_file {
            if now.duration_since(last_stats) >= STATS_EVERY {
                last_stats = now;
                write_stats(path, &counters, &ports, &ctl);
            }
        }
        if !opts.stats_interval.is_zero() && now.duration_since(last_log) >= opts.stats_interval {
            last_log = now;
            let t = total(&counters);
            tracing::info!(
                rx = t.rx.get(),
                tx = t.tx.get(),
                to_kernel = t.to_kernel.get(),
                dropped = t.drops.iter().map(|d| d.get()).sum::<u64>(),
                generation = ctl.generations().published,
                "counters"
            );
        }
    }

    tracing::info!("stopping");
    stop.store(true, Ordering::Relaxed);
    for l in &lcores[..workers.min(lcores.len())] {
        eal.wait(*l);
    }
    drop(agent);
    ctl.reclaim();
    if let Some(path) = &opts.stats_file {
        write_stats(path, &counters, &ports, &ctl);
    }
    print_final(&cfg, &counters, &ports, &kernel, &ctl.resolver().stats);
    drop(kernel);
    drop(ports);
    drop(ctl);
    drop(pool);
    drop(afp_pool);
    drop(eal);
    Ok(())
}

/// Bring the TAP up with the port's addresses; the kernel must not autoconfigure or
/// send router solicitations on it.
fn configure_kernel_if(name: &str, p: &PortConfig) {
    for (k, v) in [
        ("accept_ra", "0"),
        ("autoconf", "0"),
        ("router_solicitations", "0"),
    ] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/{k}"), v);
    }
    ip_cmd(&["link", "set", "dev", name, "mtu", &p.mtu.to_string()]);
    update_kernel_addresses(name, &[], &p.addresses);
    ip_cmd(&["link", "set", "dev", name, "up"]);
}

fn ip_cmd(args: &[&str]) {
    match Command::new("ip").args(args).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => tracing::warn!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => tracing::warn!("cannot run ip ({e}); install iproute2"),
    }
}

/// Make a kernel interface's addresses go from `old` to `new` (start-up: `old` empty;
/// a reload that changed the port's addresses: the difference).
pub(crate) fn update_kernel_addresses(
    name: &str,
    old: &[crate::config::Prefix],
    new: &[crate::config::Prefix],
) {
    for a in old.iter().filter(|a| !new.contains(a)) {
        ip_cmd(&["addr", "del", &a.to_string(), "dev", name]);
    }
    for a in new.iter().filter(|a| !old.contains(a)) {
        let s = a.to_string();
        match a.addr {
            IpAddr::V4(_) => ip_cmd(&["addr", "add", &s, "dev", name]),
            IpAddr::V6(_) => ip_cmd(&["-6", "addr", "add", &s, "dev", name, "nodad"]),
        }
    }
}

fn counters_json(c: &WorkerCounters) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in c.named() {
        m.insert(k, v.into());
    }
    let bp = c.busy_packets.get();
    let cpp = if bp == 0 {
        0.0
    } else {
        c.busy_cycles.get() as f64 / bp as f64
    };
    m.insert("cycles_per_packet".into(), cpp.into());
    let bursts = c.busy_bursts.get();
    let ppb = if bursts == 0 {
        0.0
    } else {
        bp as f64 / bursts as f64
    };
    m.insert("packets_per_burst".into(), ppb.into());
    m.into()
}

fn write_stats(path: &Path, counters: &[Arc<WorkerCounters>], ports: &[Port], ctl: &Controller) {
    let (cache, resolver) = (ctl.cache(), ctl.resolver());
    let publisher = ctl.publisher();
    let workers: Vec<serde_json::Value> = counters
        .iter()
        .map(|c| {
            let mut v = counters_json(c);
            v["generation"] = c.generation.get().into();
            v
        })
        .collect();
    let ports: Vec<serde_json::Value> = ports
        .iter()
        .map(|p| {
            let s = p.stats();
            serde_json::json!({
                "id": p.id(), "ipackets": s.ipackets, "opackets": s.opackets,
                "imissed": s.imissed, "ierrors": s.ierrors, "oerrors": s.oerrors,
                "rx_nombuf": s.rx_nombuf, "link_up": p.link().up,
            })
        })
        .collect();
    let v = serde_json::json!({
        "generation": publisher.generation(),
        "config_version": ctl.version(),
        "workers_seen": publisher.seen(),
        "retired": publisher.retired(),
        "neighbors": cache.len(),
        "neighbors_refused": cache.refused,
        "resolver": {
            "incomplete": resolver.pending(),
            "failed": resolver.failed(),
            "solicits": resolver.stats.solicits,
            "rate_limited": resolver.stats.rate_limited,
            "failures": resolver.stats.failures,
            "evicted_incomplete": resolver.stats.evicted_pending,
            "evicted_failed": resolver.stats.evicted_failed,
            "commands_lost": ctl.commands_lost,
        },
        "tsc_hz": ferry_dataplane::dpdk::tsc_hz(),
        "total": counters_json(&total(counters)),
        "workers": workers,
        "ports": ports,
    });
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, v.to_string())
        .and_then(|_| std::fs::rename(&tmp, path))
        .is_err()
    {
        tracing::warn!(path = %path.display(), "cannot write stats file");
    }
}

fn print_final(
    cfg: &Config,
    counters: &[Arc<WorkerCounters>],
    ports: &[Port],
    kernel: &[Option<KernelIf>],
    resolver: &ResolverStats,
) {
    println!("ferryd final counters:");
    for (w, c) in counters.iter().enumerate() {
        let bp = c.busy_packets.get();
        let cpp = c.busy_cycles.get().checked_div(bp).unwrap_or(0);
        println!(
            "  worker {w}: rx {} tx {} to_kernel {} from_kernel {} cycles/packet {cpp}",
            c.rx.get(),
            c.tx.get(),
            c.to_kernel.get(),
            c.from_kernel.get()
        );
    }
    let t = total(counters);
    for (k, v) in t.named() {
        if v != 0 {
            println!("  total {k}: {v}");
        }
    }
    let r = resolver;
    println!(
        "  resolver: solicits {} rate_limited {} failures {} evicted_incomplete {} evicted_failed {}",
        r.solicits, r.rate_limited, r.failures, r.evicted_pending, r.evicted_failed
    );
    for (p, pc) in ports.iter().zip(&cfg.ports) {
        let s = p.stats();
        println!(
            "  port {}: ipackets {} opackets {} imissed {} ierrors {} oerrors {}",
            pc.name, s.ipackets, s.opackets, s.imissed, s.ierrors, s.oerrors
        );
    }
    for k in kernel.iter().flatten() {
        let s = k.port.stats();
        println!(
            "  kernel {}: to kernel {} from kernel {}",
            k.name, s.opackets, s.ipackets
        );
    }
}
