//! What operators and controllers see, built on the control thread from the controller,
//! the ports and the workers' counters: the API's status, counters, routes and neighbours,
//! and the Prometheus exposition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ferry_dataplane::counters::{WorkerCounters, STATE_NAMES};
use ferry_dataplane::dpdk::Port;
use ferry_dataplane::nat::{FlowFilter, FlowRecord};
use ferry_dataplane::router::{FlowDump, WorkerCommand};
use ferry_dataplane::wire::ethernet::format_mac;
use ferry_proto::v1 as pb;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::agent::pb_generations;
use crate::controller::Controller;

/// The parts of the running process the views read.
pub struct Sources<'a> {
    pub ctl: &'a Controller,
    pub ports: &'a [Port],
    /// Each port's kernel interface name, if it has one.
    pub kernel_ifs: &'a [Option<String>],
    pub counters: &'a [Arc<WorkerCounters>],
    pub lcores: &'a [u32],
    pub started: Instant,
    /// Seconds per apply, accepted or not.
    pub apply_seconds: &'a Histogram,
    pub backend_stats: &'a ferry_dataplane::service::BackendStats,
}

/// The total of every worker's counters.
pub fn total(counters: &[Arc<WorkerCounters>]) -> WorkerCounters {
    let t = WorkerCounters::default();
    for c in counters {
        t.accumulate(c);
    }
    t
}

fn cycles_per_packet(c: &WorkerCounters) -> f64 {
    let p = c.busy_packets.get();
    if p == 0 {
        0.0
    } else {
        c.busy_cycles.get() as f64 / p as f64
    }
}

pub fn status(s: &Sources) -> pb::Status {
    let cfg = s.ctl.config();
    let (r4, r6) = cfg.route_counts();
    let res = s.ctl.resolver();
    pb::Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_ms: s.started.elapsed().as_millis() as u64,
        generation: Some(pb_generations(&s.ctl.generations())),
        config_version: s.ctl.version(),
        workers: s
            .counters
            .iter()
            .enumerate()
            .map(|(i, c)| pb::WorkerStatus {
                id: i as u32,
                lcore: s.lcores.get(i).copied().unwrap_or(0),
                generation: c.generation.get(),
                cycles_per_packet: cycles_per_packet(c),
                rx_packets: c.rx.get(),
                tx_packets: c.tx.get(),
            })
            .collect(),
        ports: s
            .ports
            .iter()
            .zip(&cfg.ports)
            .enumerate()
            .map(|(i, (p, pc))| {
                let st = p.stats();
                let link = p.link();
                pb::PortStatus {
                    name: pc.name.clone(),
                    id: p.id() as u32,
                    driver: p.info().driver.clone(),
                    mac: format_mac(&p.info().mac).to_string(),
                    link_up: link.up,
                    speed_mbps: link.speed_mbps,
                    mtu: pc.mtu as u32,
                    addresses: pc.addresses.iter().map(|a| a.to_string()).collect(),
                    ipackets: st.ipackets,
                    opackets: st.opackets,
                    ibytes: st.ibytes,
                    obytes: st.obytes,
                    imissed: st.imissed,
                    ierrors: st.ierrors,
                    oerrors: st.oerrors,
                    rx_nombuf: st.rx_nombuf,
                    kernel_interface: s.kernel_ifs.get(i).cloned().flatten().unwrap_or_default(),
                }
            })
            .collect(),
        neighbors: Some(pb::NeighborSummary {
            entries: s.ctl.cache().len() as u64,
            incomplete: res.pending() as u64,
            failed: res.failed() as u64,
            solicits: res.stats.solicits,
        }),
        routes4: r4 as u64,
        routes6: r6 as u64,
    }
}

pub fn counters(s: &Sources) -> pb::Counters {
    let map = |c: &WorkerCounters| c.named().into_iter().collect::<HashMap<String, u64>>();
    pb::Counters {
        total: map(&total(s.counters)),
        workers: s
            .counters
            .iter()
            .enumerate()
            .map(|(i, c)| pb::WorkerCounters {
                id: i as u32,
                values: map(c),
            })
            .collect(),
        tsc_hz: ferry_dataplane::dpdk::tsc_hz(),
    }
}

/// The routing table: configured routes, then each port's connected subnets and own
/// addresses (the link-local ones included), as the FIB holds them.
pub fn routes(ctl: &Controller, family: u32) -> pb::RouteList {
    use pb::route_entry::Kind;
    let cfg = ctl.config();
    let want = |v4: bool| family == 0 || (family == 4) == v4;
    let mut out = Vec::new();
    for (prefix, via) in &cfg.routes {
        if !want(prefix.addr.is_ipv4()) {
            continue;
        }
        let port = crate::config::connected_port(&cfg.ports, via[0])
            .map(|i| cfg.ports[i].name.clone())
            .unwrap_or_default();
        out.push(pb::RouteEntry {
            prefix: prefix.to_string(),
            kind: Kind::Static as i32,
            via: via.iter().map(|v| v.to_string()).collect(),
            port,
        });
    }
    for p in cfg.ports.iter() {
        for a in &p.addresses {
            if want(a.addr.is_ipv4()) {
                out.push(pb::RouteEntry {
                    prefix: a.network().to_string(),
                    kind: Kind::Connected as i32,
                    via: vec![],
                    port: p.name.clone(),
                });
            }
        }
    }
    for p in ctl.plan().ports.iter() {
        let locals =
            p.v4.iter()
                .filter(|_| want(true))
                .map(|(a, _)| format!("{}/32", std::net::Ipv4Addr::from(*a)))
                .chain(
                    p.v6.iter()
                        .filter(|_| want(false))
                        .map(|(a, _)| format!("{}/128", std::net::Ipv6Addr::from(*a))),
                );
        for prefix in locals {
            out.push(pb::RouteEntry {
                prefix,
                kind: Kind::Local as i32,
                via: vec![],
                port: p.name.clone(),
            });
        }
    }
    pb::RouteList { routes: out }
}

pub fn neighbors(ctl: &Controller) -> pb::NeighborList {
    let cfg = ctl.config();
    let name = |port: usize| cfg.ports.get(port).map_or("?", |p| &p.name).to_string();
    let mut out: Vec<pb::NeighborEntry> = cfg
        .neighbors
        .iter()
        .map(|n| pb::NeighborEntry {
            port: name(n.port),
            address: n.address.to_string(),
            mac: format_mac(&n.mac).to_string(),
            state: "static".into(),
        })
        .collect();
    let mut learned: Vec<_> = ctl.cache().iter().collect();
    learned.sort_by_key(|(port, ip, _)| (*port, *ip));
    for (port, ip, e) in learned {
        out.push(pb::NeighborEntry {
            port: name(port as usize),
            address: ip.to_string(),
            mac: format_mac(&e.mac).to_string(),
            state: if e.stale { "stale" } else { "reachable" }.into(),
        });
    }
    let mut resolving: Vec<_> = ctl.resolver().entries().collect();
    resolving.sort();
    for (port, ip, failed) in resolving {
        // A stale entry being probed is listed above.
        if !failed && ctl.cache().get(port, ip).is_some() {
            continue;
        }
        out.push(pb::NeighborEntry {
            port: name(port as usize),
            address: ip.to_string(),
            mac: String::new(),
            state: if failed { "failed" } else { "incomplete" }.into(),
        });
    }
    pb::NeighborList { neighbors: out }
}

/// The apply-latency histogram's buckets, in seconds: 100 us to 30 s.
pub fn apply_histogram() -> Histogram {
    Histogram::new(
        [
            0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ]
        .into_iter(),
    )
}

type Labels = Vec<(String, String)>;

fn label(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The Prometheus exposition (OpenMetrics text): every worker counter per worker (drops as
/// one family by `reason`), port counters per port, generations, neighbours and apply
/// latency.
pub fn metrics(s: &Sources) -> String {
    let mut reg = Registry::default();
    let mut counters: HashMap<String, Family<Labels, Counter>> = HashMap::new();
    let mut family = |reg: &mut Registry, name: &str, help: &str| -> Family<Labels, Counter> {
        counters
            .entry(name.to_string())
            .or_insert_with(|| {
                let f = Family::<Labels, Counter>::default();
                reg.register(name, help, f.clone());
                f
            })
            .clone()
    };
    let dropped = family(
        &mut reg,
        "ferry_dropped_packets",
        "Packets dropped by a worker, by reason",
    );
    for (w, c) in s.counters.iter().enumerate() {
        let ws = w.to_string();
        for (name, v) in c.named() {
            if name.starts_with("nat_") {
                continue; // (below, with their own names and types)
            }
            if let Some(reason) = name.strip_prefix("drop_") {
                dropped
                    .get_or_create(&label(&[("worker", &ws), ("reason", reason)]))
                    .inc_by(v);
                continue;
            }
            let (metric, help) = match name.as_str() {
                "rx" => ("ferry_rx_packets", "Packets a worker received"),
                "tx" => ("ferry_tx_packets", "Packets a worker sent"),
                "to_kernel" => (
                    "ferry_to_kernel_packets",
                    "Packets handed to the kernel (exception path)",
                ),
                "from_kernel" => (
                    "ferry_from_kernel_packets",
                    "Packets the kernel sent through a worker",
                ),
                "busy_cycles" => (
                    "ferry_busy_cycles",
                    "TSC cycles of poll rounds that carried packets",
                ),
                "busy_packets" => ("ferry_busy_packets", "Packets in those rounds"),
                "busy_bursts" => ("ferry_busy_bursts", "Non-empty bursts"),
                _ => ("", "A worker counter (README, Counters)"),
            };
            let metric = if metric.is_empty() {
                format!("ferry_{name}")
            } else {
                metric.to_string()
            };
            family(&mut reg, &metric, help)
                .get_or_create(&label(&[("worker", &ws)]))
                .inc_by(v);
        }
    }
    nat_metrics(&mut reg, s);
    service_metrics(&mut reg, s);
    let worker_gen = Family::<Labels, Gauge>::default();
    reg.register(
        "ferry_worker_generation",
        "The snapshot generation a worker runs",
        worker_gen.clone(),
    );
    for (w, c) in s.counters.iter().enumerate() {
        worker_gen
            .get_or_create(&label(&[("worker", &w.to_string())]))
            .set(c.generation.get() as i64);
    }
    let cfg = s.ctl.config();
    let link = Family::<Labels, Gauge>::default();
    reg.register(
        "ferry_port_link_up",
        "1 if the port's link is up",
        link.clone(),
    );
    for (p, pc) in s.ports.iter().zip(&cfg.ports) {
        let l = label(&[("port", &pc.name)]);
        let st = p.stats();
        for (name, help, v) in [
            (
                "ferry_port_rx_packets",
                "Packets the device received",
                st.ipackets,
            ),
            (
                "ferry_port_tx_packets",
                "Packets the device sent",
                st.opackets,
            ),
            (
                "ferry_port_rx_bytes",
                "Bytes the device received",
                st.ibytes,
            ),
            ("ferry_port_tx_bytes", "Bytes the device sent", st.obytes),
            (
                "ferry_port_rx_missed",
                "Packets the device dropped for want of rx descriptors",
                st.imissed,
            ),
            (
                "ferry_port_rx_errors",
                "Erroneous packets received",
                st.ierrors,
            ),
            (
                "ferry_port_tx_errors",
                "Packets the device failed to send",
                st.oerrors,
            ),
            (
                "ferry_port_rx_nombuf",
                "Receive failures for want of mbufs",
                st.rx_nombuf,
            ),
        ] {
            family(&mut reg, name, help).get_or_create(&l).inc_by(v);
        }
        link.get_or_create(&l).set(p.link().up as i64);
    }
    let gens = Family::<Labels, Gauge>::default();
    reg.register(
        "ferry_generation",
        "Snapshot generations: accepted, published, active (every worker), reclaimed",
        gens.clone(),
    );
    let g = s.ctl.generations();
    for (kind, v) in [
        ("accepted", g.accepted),
        ("published", g.published),
        ("active", g.active),
        ("reclaimed", g.reclaimed),
    ] {
        gens.get_or_create(&label(&[("kind", kind)])).set(v as i64);
    }
    let gauge = |reg: &mut Registry, name: &str, help: &str, v: u64| {
        let g = Gauge::<i64>::default();
        g.set(v as i64);
        reg.register(name, help, g);
    };
    gauge(
        &mut reg,
        "ferry_config_version",
        "The configuration's version (one more per accepted apply)",
        s.ctl.version(),
    );
    let routes = Family::<Labels, Gauge>::default();
    reg.register(
        "ferry_routes",
        "Configured routes by family",
        routes.clone(),
    );
    let (r4, r6) = cfg.route_counts();
    routes
        .get_or_create(&label(&[("family", "ipv4")]))
        .set(r4 as i64);
    routes
        .get_or_create(&label(&[("family", "ipv6")]))
        .set(r6 as i64);
    let res = s.ctl.resolver();
    gauge(
        &mut reg,
        "ferry_neighbors",
        "Learned neighbours",
        s.ctl.cache().len() as u64,
    );
    gauge(
        &mut reg,
        "ferry_neighbors_incomplete",
        "Neighbours being resolved or probed",
        res.pending() as u64,
    );
    gauge(
        &mut reg,
        "ferry_neighbors_failed",
        "Neighbours whose resolution failed (negatively cached)",
        res.failed() as u64,
    );
    for (name, help, v) in [
        (
            "ferry_resolver_solicits",
            "ARP requests and neighbour solicitations asked of the workers",
            res.stats.solicits,
        ),
        (
            "ferry_resolver_rate_limited",
            "Solicitations held back by solicit_rate",
            res.stats.rate_limited,
        ),
        (
            "ferry_resolver_failures",
            "Neighbour resolutions that failed",
            res.stats.failures,
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        reg.register(name, help, c);
    }
    reg.register(
        "ferry_apply_duration_seconds",
        "Time to check, compile and publish an apply (file or API)",
        s.apply_seconds.clone(),
    );
    gauge(
        &mut reg,
        "ferry_uptime_seconds",
        "Seconds since ferryd started",
        s.started.elapsed().as_secs(),
    );
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &reg) {
        tracing::warn!("metrics: {e}");
    }
    out
}

/// The NAT rules with the flows each created (`ferryctl nat`).
pub fn nat_rules(ctl: &Controller, counters: &[Arc<WorkerCounters>]) -> pb::NatRuleList {
    let cfg = ctl.config();
    let ids = &ctl.plan().rule_ids;
    let hits = |id: u16| -> u64 {
        counters
            .iter()
            .map(|c| c.nat.rule_hits.get(usize::from(id)).map_or(0, |h| h.get()))
            .sum()
    };
    let join = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>().join(", ");
    let mut rules = Vec::new();
    for r in &cfg.nat.snat {
        let id = ids.get(&(true, r.name.clone())).copied().unwrap_or(0);
        let out = cfg.ports.get(r.out).map_or("?", |p| p.name.as_str());
        rules.push(pb::NatRuleEntry {
            kind: "snat".into(),
            name: r.name.clone(),
            id: id.into(),
            hits: hits(id),
            r#match: format!(
                "from {} out {out}",
                join(&mut r.from.iter().map(|p| p.to_string()))
            ),
            to: format!(
                "{} ports {}-{}",
                join(&mut r.pool.iter().map(|p| p.to_string())),
                r.ports.0,
                r.ports.1
            ),
        });
    }
    for r in &cfg.nat.dnat {
        let id = ids.get(&(false, r.name.clone())).copied().unwrap_or(0);
        let proto = if r.protocol == 6 { "tcp" } else { "udp" };
        rules.push(pb::NatRuleEntry {
            kind: "dnat".into(),
            name: r.name.clone(),
            id: id.into(),
            hits: hits(id),
            r#match: match r.port {
                Some(p) => format!("{proto} {} port {p}", r.address),
                None => format!("{proto} {}", r.address),
            },
            to: match r.to_port {
                Some(p) => format!("{} port {p}", r.to_address),
                None => r.to_address.to_string(),
            },
        });
    }
    pb::NatRuleList { rules }
}

/// A flow filter from the API's, naming the bad field.
pub fn nat_filter(ctl: &Controller, f: Option<&pb::FlowFilter>) -> Result<FlowFilter, String> {
    let Some(f) = f else {
        return Ok(FlowFilter::default());
    };
    let address = match f.address.trim() {
        "" => None,
        a => Some(
            a.parse()
                .map_err(|_| format!("filter.address: {a:?} is not an IP address"))?,
        ),
    };
    let protocol = match f.protocol.trim() {
        "" => None,
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "icmpv6" => Some(58),
        p => Some(p.parse::<u8>().map_err(|_| {
            format!("filter.protocol: {p:?}: tcp, udp, icmp, icmpv6 or a protocol number")
        })?),
    };
    let port = match f.port {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| format!("filter.port: {p}: a port is 1..=65535"))?),
    };
    let rule = match f.rule.trim() {
        "" => None,
        name => {
            let ids = &ctl.plan().rule_ids;
            Some(
                ids.get(&(true, name.to_string()))
                    .or_else(|| ids.get(&(false, name.to_string())))
                    .copied()
                    .ok_or_else(|| {
                        format!("filter.rule: {name:?} is not the name of a NAT rule")
                    })?,
            )
        }
    };
    Ok(FlowFilter {
        address,
        protocol,
        port,
        rule,
    })
}

/// How long the control thread waits for the workers' flow records.
const DUMP_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Every worker's flows that `filter` selects, at most `limit` per worker (`ferryctl
/// conntrack`): each worker walks its tables a slice per round and sends the records over
/// its dump ring, which this drains.
pub fn flows(
    ctl: &Controller,
    filter: FlowFilter,
    limit: u32,
    commands: &mut [rtrb::Producer<WorkerCommand>],
    dumps: &mut [rtrb::Consumer<FlowDump>],
) -> pb::FlowList {
    let limit = match limit {
        0 => 1000,
        l => l.min(100_000),
    };
    // Leftovers of an earlier dump that timed out.
    for d in dumps.iter_mut() {
        while d.pop().is_ok() {}
    }
    let mut asked = vec![false; commands.len()];
    for (w, c) in commands.iter_mut().enumerate() {
        asked[w] = c.push(WorkerCommand::NatDump { filter, limit }).is_ok();
    }
    let names: HashMap<u16, String> = ctl
        .plan()
        .rule_ids
        .iter()
        .map(|((_, name), id)| (*id, name.clone()))
        .collect();
    let mut out = pb::FlowList::default();
    let mut done: Vec<bool> = asked.iter().map(|a| !a).collect();
    let start = Instant::now();
    while done.iter().any(|d| !d) && start.elapsed() < DUMP_WAIT {
        let mut got = false;
        for (w, d) in dumps.iter_mut().enumerate() {
            while let Ok(item) = d.pop() {
                got = true;
                match item {
                    FlowDump::Flow(r) => out.flows.push(flow_entry(&r, w, &names)),
                    FlowDump::End { truncated } => {
                        out.truncated |= truncated;
                        done[w] = true;
                    }
                }
            }
        }
        if !got {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
    out.truncated |= done.iter().any(|d| !d);
    out
}

fn flow_entry(r: &FlowRecord, worker: usize, names: &HashMap<u16, String>) -> pb::FlowEntry {
    let tuple = |t: &(std::net::IpAddr, std::net::IpAddr, u16, u16)| pb::Tuple {
        src: t.0.to_string(),
        dst: t.1.to_string(),
        sport: t.2.into(),
        dport: t.3.into(),
    };
    pb::FlowEntry {
        original: Some(tuple(&r.orig)),
        reply: Some(tuple(&r.reply)),
        protocol: match r.proto {
            6 => "tcp".into(),
            17 => "udp".into(),
            1 => "icmp".into(),
            58 => "icmpv6".into(),
            p => p.to_string(),
        },
        state: STATE_NAMES
            .get(r.state as usize)
            .copied()
            .unwrap_or("?")
            .into(),
        expires_s: r.expires_s,
        worker: worker as u32,
        rule: names.get(&r.rule).cloned().unwrap_or_default(),
    }
}

/// NAT metrics: flows by state (gauges), flows created, expired and removed, handoffs,
/// fragments, and flows created by rule.
/// Services and backends (`ferryctl services`): configuration, health, weights, the
/// compiled table's digest, connections from the shared per-backend counts.
pub fn services(s: &Sources, name: &str) -> pb::ServiceList {
    let ctl = s.ctl;
    let plan = &ctl.plan().svc;
    let proto = |p: u8| if p == 6 { "tcp" } else { "udp" };
    let since = |t: Option<Instant>| {
        t.map_or(0, |t| {
            t.saturating_duration_since(s.started).as_millis() as u64
        })
    };
    let mut out = Vec::new();
    for c in ctl
        .config()
        .services
        .iter()
        .filter(|c| name.is_empty() || c.name == name)
    {
        let built = plan.get(&c.name);
        let mut backends = Vec::with_capacity(c.backends.len());
        let mut created = 0;
        for (i, b) in c.backends.iter().enumerate() {
            let key = (c.name.clone(), b.address, b.port);
            let id = plan.backend_ids.get(&key).copied();
            let compiled = built.and_then(|x| x.backends.get(i));
            let h = ctl.health.get(&key);
            let health = match (c.health.check, compiled) {
                (crate::service::Check::None, _) => "unchecked",
                (_, Some(d)) if !d.up => "down",
                _ => "up",
            };
            let fc = id.map_or(0, |id| {
                s.backend_stats
                    .created
                    .get(id as usize)
                    .map_or(0, |v| v.load(std::sync::atomic::Ordering::Relaxed))
            });
            created += fc;
            backends.push(pb::BackendEntry {
                address: b.address.to_string(),
                port: b.port.into(),
                weight: b.weight,
                effective_weight: compiled.map_or(b.weight, |d| d.effective),
                drain: b.drain,
                health: health.into(),
                connections: id.map_or(0, |id| u64::from(s.backend_stats.conns(id))),
                flows_created: fc,
                changed_ms: since(h.and_then(|h| h.changed)),
                last_check: h.map_or(String::new(), |h| match h.ejected_until {
                    Some(t) if t > Instant::now() => format!(
                        "{} (ejected for {} s more: connections refused or unanswered)",
                        h.last,
                        t.saturating_duration_since(Instant::now()).as_secs()
                    ),
                    _ => h.last.clone(),
                }),
            });
        }
        out.push(pb::ServiceEntry {
            name: c.name.clone(),
            vip: c.vip.to_string(),
            port: c.port.into(),
            protocol: proto(c.protocol).into(),
            scheduler: c.scheduler.name().into(),
            forward: c.forward.name().into(),
            digest: built.map_or(String::new(), |x| {
                if x.digest == 0 {
                    String::new()
                } else {
                    format!("{:016x}", x.digest)
                }
            }),
            table_size: c.table_size,
            backends,
            flows_created: created,
        });
    }
    pb::ServiceList { services: out }
}

fn service_metrics(reg: &mut Registry, s: &Sources) {
    if s.ctl.config().services.is_empty() {
        return;
    }
    let up = Family::<Labels, Gauge>::default();
    reg.register(
        "ferry_backend_up",
        "1 if the backend passes its health checks (or is not checked), else 0",
        up.clone(),
    );
    let conns = Family::<Labels, Gauge>::default();
    reg.register(
        "ferry_backend_connections",
        "Flows to the backend tracked now (all workers)",
        conns.clone(),
    );
    let made = Family::<Labels, Counter>::default();
    reg.register(
        "ferry_backend_flows",
        "Flows scheduled to the backend",
        made.clone(),
    );
    let weight = Family::<Labels, Gauge>::default();
    reg.register(
        "ferry_backend_weight",
        "The weight the backend is scheduled with now (slow start ramps it)",
        weight.clone(),
    );
    for svc in services(s, "").services {
        for b in &svc.backends {
            let ep = std::net::SocketAddr::new(
                b.address
                    .parse()
                    .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
                b.port as u16,
            )
            .to_string();
            let l = label(&[("service", &svc.name), ("backend", &ep)]);
            up.get_or_create(&l).set(i64::from(b.health != "down"));
            conns.get_or_create(&l).set(b.connections as i64);
            made.get_or_create(&l).inc_by(b.flows_created);
            weight.get_or_create(&l).set(i64::from(b.effective_weight));
        }
    }
    let tr = Family::<Labels, Counter>::default();
    reg.register(
        "ferry_health_transitions",
        "Backends' health changes, by direction",
        tr.clone(),
    );
    let (down, upn) = s.ctl.health_transitions;
    tr.get_or_create(&label(&[("to", "down")])).inc_by(down);
    tr.get_or_create(&label(&[("to", "up")])).inc_by(upn);
}

fn nat_metrics(reg: &mut Registry, s: &Sources) {
    let flows = Family::<Labels, Gauge>::default();
    reg.register(
        "ferry_nat_flows",
        "NAT flows a worker tracks, by state",
        flows.clone(),
    );
    let made = Family::<Labels, Counter>::default();
    reg.register(
        "ferry_nat_flow_events",
        "NAT flows created, expired, and removed (rule deleted, flush), by worker",
        made.clone(),
    );
    let handoffs = Family::<Labels, Counter>::default();
    reg.register(
        "ferry_nat_handoffs",
        "Packets handed to the worker that owns their flow (out) and taken from others (in)",
        handoffs.clone(),
    );
    let frags = Family::<Labels, Counter>::default();
    reg.register(
        "ferry_nat_fragments",
        "Later fragments translated by their datagram's first fragment, or unmatched",
        frags.clone(),
    );
    for (w, c) in s.counters.iter().enumerate() {
        let ws = w.to_string();
        for (st, g) in STATE_NAMES.iter().zip(c.nat.by_state.iter()) {
            flows
                .get_or_create(&label(&[("worker", &ws), ("state", st)]))
                .set(g.get() as i64);
        }
        for (ev, v) in [
            ("created", &c.nat.created),
            ("expired", &c.nat.expired),
            ("removed", &c.nat.removed),
        ] {
            made.get_or_create(&label(&[("worker", &ws), ("event", ev)]))
                .inc_by(v.get());
        }
        for (d, v) in [("out", &c.nat.handoffs_out), ("in", &c.nat.handoffs_in)] {
            handoffs
                .get_or_create(&label(&[("worker", &ws), ("direction", d)]))
                .inc_by(v.get());
        }
        for (r, v) in [
            ("translated", &c.nat.fragments),
            ("unmatched", &c.nat.fragments_unmatched),
        ] {
            frags
                .get_or_create(&label(&[("worker", &ws), ("result", r)]))
                .inc_by(v.get());
        }
    }
    let hits = Family::<Labels, Counter>::default();
    reg.register(
        "ferry_nat_rule_flows",
        "Flows a NAT rule created",
        hits.clone(),
    );
    for r in nat_rules(s.ctl, s.counters).rules {
        hits.get_or_create(&label(&[("kind", &r.kind), ("rule", &r.name)]))
            .inc_by(r.hits);
    }
}
