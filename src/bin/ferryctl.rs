//! `ferryctl`: operate a running ferryd over its gRPC API (`proto/ferry/v1/ferry.proto`).
//!
//! Tables for people (like `ip route`, `ip neigh`), JSON or YAML for scripts (`-o`).
//! Exit status: 0 done; 1 refused (NACK: one line per bad resource) or failed; 3 stale
//! base; 4 needs a restart; 5 cannot reach ferryd.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ferry_proto::v1 as pb;
use ferry_proto::v1::ferry_client::FerryClient;
use serde_json::{json, Value};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Parser, Debug)]
#[command(version, about = "Operate a running ferryd")]
struct Cli {
    /// ferryd's unix socket.
    #[arg(long, env = "FERRY_SOCKET", default_value = "/run/ferry/ferry.sock")]
    socket: PathBuf,
    /// Reach ferryd over TCP instead: http://127.0.0.1:PORT, or https://HOST:PORT with
    /// --tls-ca, --tls-cert and --tls-key (mTLS).
    #[arg(long)]
    server: Option<String>,
    /// The CA that signed ferryd's certificate (PEM).
    #[arg(long, requires = "server")]
    tls_ca: Option<PathBuf>,
    /// This client's certificate and key (PEM).
    #[arg(long, requires_all = ["server", "tls_key"])]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires_all = ["server", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// The name ferryd's certificate is for (default: the host of --server).
    #[arg(long, requires = "server")]
    tls_domain: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Version, uptime, generations, workers and ports.
    Status,
    /// The running configuration (in the file's schema; `-o yaml` re-applies unchanged).
    Get {
        #[command(subcommand)]
        what: GetWhat,
    },
    /// Apply a configuration file as the whole desired state.
    Apply {
        #[arg(short, long)]
        file: PathBuf,
        #[command(flatten)]
        opts: ApplyOpts,
    },
    /// The routing table (configured, connected, local).
    Routes {
        /// Only IPv4 (4) or IPv6 (6).
        #[arg(short, long)]
        family: Option<u32>,
    },
    /// Add or delete one route (a delta).
    Route {
        #[command(subcommand)]
        op: RouteOp,
    },
    /// Static, learned, incomplete and failed neighbours.
    Neighbors,
    /// NAT rules, with the flows each created.
    Nat,
    /// Tracked NAT flows (original and reply tuples, state, expiry, worker), or `flush`.
    Conntrack {
        #[command(subcommand)]
        op: Option<ConntrackOp>,
        #[command(flatten)]
        filter: FlowFilterArgs,
        /// At most this many flows per worker.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Virtual services and their backends, as `ipvsadm -Ln` shows them.
    Services {
        /// Only this service.
        name: Option<String>,
        /// Flows scheduled to each backend so far.
        #[arg(long)]
        stats: bool,
        /// New flows per second (sampled over --interval).
        #[arg(long)]
        rate: bool,
        /// Milliseconds between the two samples of --rate.
        #[arg(long, default_value_t = 1000)]
        interval: u64,
    },
    /// Change one backend of a service (a delta): drain, undrain, weight, add, del.
    Backend {
        #[command(subcommand)]
        op: BackendOp,
    },
    /// Counters, in total and per worker.
    Stats {
        /// Print again every --interval until interrupted.
        #[arg(long)]
        watch: bool,
        /// Milliseconds between prints with --watch (at least 100).
        #[arg(long, default_value_t = 1000)]
        interval: u32,
        /// Also counters that are zero.
        #[arg(long)]
        all: bool,
    },
    /// Wait until GENERATION is active on every worker.
    Wait {
        generation: u64,
        /// Wait until every older snapshot is freed instead.
        #[arg(long)]
        reclaimed: bool,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout: u32,
    },
}

#[derive(Subcommand, Debug)]
enum BackendOp {
    /// No new flows; established ones carry on.
    Drain {
        service: String,
        /// ADDR:PORT ([V6]:PORT), or ADDR for the service's port.
        backend: String,
        #[command(flatten)]
        opts: ApplyOpts,
    },
    /// Take new flows again.
    Undrain {
        service: String,
        backend: String,
        #[command(flatten)]
        opts: ApplyOpts,
    },
    /// Set the weight (0: no new flows).
    Weight {
        service: String,
        backend: String,
        weight: u32,
        #[command(flatten)]
        opts: ApplyOpts,
    },
    /// Add a backend.
    Add {
        service: String,
        backend: String,
        #[arg(long)]
        weight: Option<u32>,
        #[command(flatten)]
        opts: ApplyOpts,
    },
    /// Remove a backend (its flows end).
    Del {
        service: String,
        backend: String,
        #[command(flatten)]
        opts: ApplyOpts,
    },
}

#[derive(Subcommand, Debug)]
enum ConntrackOp {
    /// End the flows the filter selects (all of them without one).
    Flush {
        #[command(flatten)]
        filter: FlowFilterArgs,
    },
}

/// Which flows (every option given must match).
#[derive(clap::Args, Debug, Default, Clone)]
struct FlowFilterArgs {
    /// Either address of either tuple.
    #[arg(long)]
    address: Option<String>,
    /// tcp, udp, icmp, icmpv6 or a number.
    #[arg(long)]
    protocol: Option<String>,
    /// Either port of either tuple.
    #[arg(long)]
    port: Option<u32>,
    /// A NAT rule's name.
    #[arg(long)]
    rule: Option<String>,
}

impl FlowFilterArgs {
    fn pb(&self) -> pb::FlowFilter {
        pb::FlowFilter {
            address: self.address.clone().unwrap_or_default(),
            protocol: self.protocol.clone().unwrap_or_default(),
            port: self.port.unwrap_or(0),
            rule: self.rule.clone().unwrap_or_default(),
        }
    }
}

#[derive(Subcommand, Debug)]
enum GetWhat {
    Config,
}

#[derive(Subcommand, Debug)]
enum RouteOp {
    /// `route add 10.20.0.0/16 via 10.10.2.2 [10.10.2.3 ...]`.
    Add {
        prefix: String,
        /// The word "via", then one or more next hops.
        #[arg(num_args = 2.., required = true)]
        via: Vec<String>,
        #[command(flatten)]
        opts: ApplyOpts,
    },
    /// `route del 10.20.0.0/16`.
    Del {
        prefix: String,
        #[command(flatten)]
        opts: ApplyOpts,
    },
}

#[derive(clap::Args, Debug)]
struct ApplyOpts {
    /// Check and compile only; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Refuse (stale base) unless the running config is at this generation.
    #[arg(long)]
    base_generation: Option<u64>,
    /// A client nonce, echoed back and logged.
    #[arg(long, default_value = "")]
    nonce: String,
    /// After an accepted apply, wait until it is active on every worker.
    #[arg(long)]
    wait: bool,
}

/// Print to stdout; if the reader went away (`ferryctl routes | head`), end as a program
/// killed by SIGPIPE would (exit 141), quietly.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(141);
        }
    }};
}
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(141);
        }
    }};
}

/// A failure with its exit status.
struct Fail(i32, String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Fail {
        Fail(1, e.to_string())
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferryctl: {e}");
            std::process::exit(1);
        }
    };
    if let Err(Fail(code, msg)) = rt.block_on(run(cli)) {
        if !msg.is_empty() {
            eprintln!("ferryctl: {msg}");
        }
        std::process::exit(code);
    }
}

async fn connect(cli: &Cli) -> Result<FerryClient<Channel>, Fail> {
    let unreachable = |what: String, e: &dyn std::fmt::Display| Fail(5, format!("{what}: {e}"));
    let channel = match &cli.server {
        Some(url) => {
            let mut ep = Endpoint::from_shared(url.clone())
                .map_err(|e| Fail(2, format!("--server {url}: {e}")))?
                .connect_timeout(Duration::from_secs(5));
            if url.starts_with("https://") {
                let mut tls = ClientTlsConfig::new();
                if let Some(ca) = &cli.tls_ca {
                    tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?));
                }
                if let (Some(c), Some(k)) = (&cli.tls_cert, &cli.tls_key) {
                    tls = tls.identity(Identity::from_pem(
                        read(c, "--tls-cert")?,
                        read(k, "--tls-key")?,
                    ));
                }
                if let Some(d) = &cli.tls_domain {
                    tls = tls.domain_name(d.clone());
                }
                ep = ep
                    .tls_config(tls)
                    .map_err(|e| Fail(2, format!("TLS: {e}")))?;
            }
            ep.connect()
                .await
                .map_err(|e| unreachable(format!("cannot reach {url}"), &error_chain(&e)))?
        }
        None => ferry_proto::connect_unix(cli.socket.clone(), Duration::from_secs(5))
            .await
            .map_err(|e| {
                unreachable(
                    format!("cannot reach ferryd on {}", cli.socket.display()),
                    &error_chain(&e),
                )
            })?,
    };
    Ok(FerryClient::new(channel)
        .max_decoding_message_size(ferry_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(ferry_proto::MAX_MESSAGE_BYTES))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s += &format!(": {t}");
        }
        cur = c.source();
    }
    s
}

fn read(p: &PathBuf, flag: &str) -> Result<Vec<u8>, Fail> {
    std::fs::read(p).map_err(|e| Fail(2, format!("{flag} {}: {e}", p.display())))
}

fn rpc_error(s: tonic::Status) -> Fail {
    let code = match s.code() {
        tonic::Code::Unavailable => 5,
        _ => 1,
    };
    Fail(code, format!("{:?}: {}", s.code(), s.message()))
}

async fn run(cli: Cli) -> Result<(), Fail> {
    let mut c = connect(&cli).await?;
    let out = cli.output;
    match &cli.command {
        Cmd::Status => {
            let s = c
                .get_status(pb::StatusRequest {})
                .await
                .map_err(rpc_error)?;
            let v = status_json(&s.into_inner());
            match out {
                Format::Table => print_status(&v),
                _ => emit(out, &v)?,
            }
        }
        Cmd::Get {
            what: GetWhat::Config,
        } => {
            let cfg = c
                .get_config(pb::GetConfigRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            let raw = ferry_control::agent::raw_from_pb(cfg);
            match out {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&raw)?),
                _ => out!("{}", serde_yaml::to_string(&raw)?),
            }
        }
        Cmd::Apply { file, opts } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Fail(1, format!("{}: {e}", file.display())))?;
            let raw: ferry_control::config::RawConfig = serde_yaml::from_str(&text)
                .map_err(|e| Fail(1, format!("{}: {e}", file.display())))?;
            let desired =
                pb::apply_request::Desired::Config(ferry_control::agent::pb_from_raw(&raw));
            apply(&mut c, desired, opts, out).await?;
        }
        Cmd::Routes { family } => {
            let r = c
                .list_routes(pb::ListRoutesRequest {
                    family: family.unwrap_or(0),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let rows: Vec<Value> = r.routes.iter().map(route_json).collect();
            match out {
                Format::Table => {
                    for r in &rows {
                        outln!("{}", route_line(r));
                    }
                }
                _ => emit(out, &json!({ "routes": rows }))?,
            }
        }
        Cmd::Route { op } => {
            let (change, opts) = match op {
                RouteOp::Add { prefix, via, opts } => {
                    let Some((first, hops)) = via.split_first() else {
                        return Err(Fail(2, "route add PREFIX via ADDR...".into()));
                    };
                    if first != "via" {
                        return Err(Fail(
                            2,
                            format!(
                                "route add {prefix} via ADDR...: expected \"via\", got {first:?}"
                            ),
                        ));
                    }
                    (
                        pb::change::Op::UpsertRoute(pb::Route {
                            prefix: prefix.clone(),
                            via: hops.to_vec(),
                        }),
                        opts,
                    )
                }
                RouteOp::Del { prefix, opts } => {
                    (pb::change::Op::DeleteRoute(prefix.clone()), opts)
                }
            };
            let desired = pb::apply_request::Desired::Delta(pb::Delta {
                changes: vec![pb::Change { op: Some(change) }],
            });
            apply(&mut c, desired, opts, out).await?;
        }
        Cmd::Neighbors => {
            let n = c
                .list_neighbors(pb::ListNeighborsRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            let rows: Vec<Value> = n
                .neighbors
                .iter()
                .map(|n| json!({"address": n.address, "port": n.port, "mac": n.mac, "state": n.state}))
                .collect();
            match out {
                Format::Table => {
                    for n in &n.neighbors {
                        let mac = if n.mac.is_empty() {
                            String::new()
                        } else {
                            format!(" lladdr {}", n.mac)
                        };
                        outln!(
                            "{} dev {}{mac} {}",
                            n.address,
                            n.port,
                            n.state.to_uppercase()
                        );
                    }
                }
                _ => emit(out, &json!({ "neighbors": rows }))?,
            }
        }
        Cmd::Services {
            name,
            stats,
            rate,
            interval,
        } => {
            let ask = pb::ListServicesRequest {
                name: name.clone().unwrap_or_default(),
            };
            let first = c
                .list_services(ask.clone())
                .await
                .map_err(rpc_error)?
                .into_inner();
            let (r, per_s) = if *rate {
                let ms = (*interval).max(100);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                let second = c.list_services(ask).await.map_err(rpc_error)?.into_inner();
                (second, Some((first, ms)))
            } else {
                (first, None)
            };
            if let Some(n) = name {
                if r.services.is_empty() {
                    return Err(Fail(1, format!("no service named {n:?}")));
                }
            }
            // Per backend: new flows per second between the two samples.
            let rate_of = |svc: &str, b: &pb::BackendEntry| -> Option<f64> {
                let (before, ms) = per_s.as_ref()?;
                let old = before
                    .services
                    .iter()
                    .find(|s| s.name == svc)?
                    .backends
                    .iter()
                    .find(|x| x.address == b.address && x.port == b.port)?;
                Some(b.flows_created.saturating_sub(old.flows_created) as f64 * 1000.0 / *ms as f64)
            };
            let ep = |a: &str, p: u32| match a.parse::<std::net::IpAddr>() {
                Ok(ip) => std::net::SocketAddr::new(ip, p as u16).to_string(),
                Err(_) => format!("{a}:{p}"),
            };
            match out {
                Format::Table => {
                    outln!("Prot LocalAddress:Port Scheduler Forward [Maglev digest]");
                    let extra = if *rate {
                        "     Flows/s"
                    } else if *stats {
                        "       Flows"
                    } else {
                        ""
                    };
                    outln!(
                        "  -> RemoteAddress:Port            Weight Eff  Health         Conns{extra}"
                    );
                    for s in &r.services {
                        let digest = if s.digest.is_empty() {
                            String::new()
                        } else {
                            format!(" [{} / {}]", s.digest, s.table_size)
                        };
                        outln!(
                            "{:<4} {} {} {} ({}){digest}",
                            s.protocol.to_uppercase(),
                            ep(&s.vip, s.port),
                            s.scheduler,
                            s.forward,
                            s.name
                        );
                        for b in &s.backends {
                            let health = if b.drain {
                                format!("{},drain", b.health)
                            } else {
                                b.health.clone()
                            };
                            let tail = match rate_of(&s.name, b) {
                                Some(x) => format!(" {x:>11.1}"),
                                None if *stats => format!(" {:>11}", b.flows_created),
                                None => String::new(),
                            };
                            outln!(
                                "  -> {:<30} {:>6} {:>4}  {:<9} {:>10}{tail}",
                                ep(&b.address, b.port),
                                b.weight,
                                b.effective_weight,
                                health,
                                b.connections
                            );
                        }
                    }
                }
                _ => {
                    let mut m = serde_json::Map::new();
                    for s in &r.services {
                        let backends: Vec<Value> = s
                            .backends
                            .iter()
                            .map(|b| {
                                let mut v = json!({
                                    "address": b.address, "port": b.port, "weight": b.weight,
                                    "effective_weight": b.effective_weight, "drain": b.drain,
                                    "health": b.health, "connections": b.connections,
                                    "flows": b.flows_created, "changed_ms": b.changed_ms,
                                    "last_check": b.last_check,
                                });
                                if let Some(x) = rate_of(&s.name, b) {
                                    v["flows_per_s"] = json!(x);
                                }
                                v
                            })
                            .collect();
                        m.insert(
                            s.name.clone(),
                            json!({
                                "vip": s.vip, "port": s.port, "protocol": s.protocol,
                                "scheduler": s.scheduler, "forward": s.forward,
                                "digest": s.digest, "table_size": s.table_size,
                                "flows": s.flows_created, "backends": backends,
                            }),
                        );
                    }
                    emit(out, &Value::Object(m))?;
                }
            }
        }
        Cmd::Backend { op } => {
            let (service, backend, opts) = match op {
                BackendOp::Drain {
                    service,
                    backend,
                    opts,
                }
                | BackendOp::Undrain {
                    service,
                    backend,
                    opts,
                }
                | BackendOp::Weight {
                    service,
                    backend,
                    opts,
                    ..
                }
                | BackendOp::Add {
                    service,
                    backend,
                    opts,
                    ..
                }
                | BackendOp::Del {
                    service,
                    backend,
                    opts,
                } => (service, backend, opts),
            };
            let (addr, port) = ferry_control::service::parse_endpoint(backend)
                .ok_or_else(|| Fail(2, format!("{backend:?}: ADDR:PORT, [V6]:PORT or ADDR")))?;
            let wanted = pb::Backend {
                address: addr.to_string(),
                port: port.map(u32::from),
                ..Default::default()
            };
            let change = match op {
                BackendOp::Add { weight, .. } => pb::change::Op::UpsertBackend(pb::BackendChange {
                    service: service.clone(),
                    backend: Some(pb::Backend {
                        weight: *weight,
                        ..wanted
                    }),
                }),
                BackendOp::Del { .. } => pb::change::Op::DeleteBackend(pb::BackendChange {
                    service: service.clone(),
                    backend: Some(wanted),
                }),
                _ => {
                    // Keep what the backend has, change one field.
                    let cfg = c
                        .get_config(pb::GetConfigRequest {})
                        .await
                        .map_err(rpc_error)?
                        .into_inner();
                    let svc = cfg
                        .services
                        .iter()
                        .find(|s| &s.name == service)
                        .ok_or_else(|| Fail(1, format!("no service named {service:?}")))?;
                    let sport = svc.port.unwrap_or(0);
                    let mut b = svc
                        .backends
                        .iter()
                        .find(|b| {
                            b.address.parse::<std::net::IpAddr>().ok() == Some(addr)
                                && b.port.unwrap_or(sport) == port.map_or(sport, u32::from)
                        })
                        .cloned()
                        .ok_or_else(|| {
                            Fail(1, format!("service {service:?} has no backend {backend}"))
                        })?;
                    match op {
                        BackendOp::Drain { .. } => b.drain = Some(true),
                        BackendOp::Undrain { .. } => b.drain = Some(false),
                        BackendOp::Weight { weight, .. } => b.weight = Some(*weight),
                        _ => {}
                    }
                    pb::change::Op::UpsertBackend(pb::BackendChange {
                        service: service.clone(),
                        backend: Some(b),
                    })
                }
            };
            let desired = pb::apply_request::Desired::Delta(pb::Delta {
                changes: vec![pb::Change { op: Some(change) }],
            });
            apply(&mut c, desired, opts, out).await?;
        }
        Cmd::Nat => {
            let r = c
                .list_nat_rules(pb::ListNatRulesRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            let rows: Vec<Value> = r
                .rules
                .iter()
                .map(|r| json!({"kind": r.kind, "name": r.name, "id": r.id, "hits": r.hits, "match": r.r#match, "to": r.to}))
                .collect();
            match out {
                Format::Table => {
                    outln!("{:<5} {:<16} {:>12}  MATCH -> TO", "KIND", "NAME", "FLOWS");
                    for r in &r.rules {
                        outln!(
                            "{:<5} {:<16} {:>12}  {} -> {}",
                            r.kind,
                            r.name,
                            r.hits,
                            r.r#match,
                            r.to
                        );
                    }
                }
                _ => emit(out, &json!({ "rules": rows }))?,
            }
        }
        Cmd::Conntrack {
            op: Some(ConntrackOp::Flush { filter }),
            ..
        } => {
            let r = c
                .flush_flows(pb::FlushFlowsRequest {
                    filter: Some(filter.pb()),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            match out {
                Format::Table => outln!("flush sent ({} flows tracked before)", r.flows_before),
                _ => emit(out, &json!({ "flows_before": r.flows_before }))?,
            }
        }
        Cmd::Conntrack {
            op: None,
            filter,
            limit,
        } => {
            let r = c
                .list_flows(pb::ListFlowsRequest {
                    filter: Some(filter.pb()),
                    limit: *limit,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let tuple = |t: &Option<pb::Tuple>| {
                t.as_ref().map_or(
                    json!(null),
                    |t| json!({"src": t.src, "dst": t.dst, "sport": t.sport, "dport": t.dport}),
                )
            };
            let rows: Vec<Value> = r
                .flows
                .iter()
                .map(|f| {
                    json!({"protocol": f.protocol, "state": f.state, "expires_s": f.expires_s,
                    "worker": f.worker, "rule": f.rule, "original": tuple(&f.original),
                    "reply": tuple(&f.reply)})
                })
                .collect();
            match out {
                Format::Table => {
                    let t = |t: &Option<pb::Tuple>| {
                        t.as_ref().map_or(String::new(), |t| {
                            format!(
                                "src={} dst={} sport={} dport={}",
                                t.src, t.dst, t.sport, t.dport
                            )
                        })
                    };
                    for f in &r.flows {
                        // As `conntrack -L` prints them.
                        outln!(
                            "{:<6} {:<11} {:>6}s {}  {}  worker={} rule={}",
                            f.protocol,
                            f.state,
                            f.expires_s,
                            t(&f.original),
                            t(&f.reply),
                            f.worker,
                            f.rule
                        );
                    }
                    if r.truncated {
                        outln!("(more flows than --limit {limit} on a worker: not all shown)");
                    }
                }
                _ => emit(out, &json!({ "flows": rows, "truncated": r.truncated }))?,
            }
        }
        Cmd::Stats {
            watch,
            interval,
            all,
        } => {
            if *watch {
                let mut s = c
                    .watch_counters(pb::WatchRequest {
                        interval_ms: *interval,
                    })
                    .await
                    .map_err(rpc_error)?
                    .into_inner();
                while let Some(m) = s.message().await.map_err(rpc_error)? {
                    print_counters(&m, out, *all)?;
                    if out == Format::Table {
                        outln!();
                    }
                }
            } else {
                let m = c
                    .get_counters(pb::CountersRequest {})
                    .await
                    .map_err(rpc_error)?
                    .into_inner();
                print_counters(&m, out, *all)?;
            }
        }
        Cmd::Wait {
            generation,
            reclaimed,
            timeout,
        } => {
            let g = c
                .wait(pb::WaitRequest {
                    generation: *generation,
                    reclaimed: *reclaimed,
                    timeout_ms: *timeout,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let v = generations_json(&g);
            match out {
                Format::Table => outln!(
                    "generation {generation} {}: accepted {} published {} active {} reclaimed {}",
                    if *reclaimed { "reclaimed" } else { "active" },
                    g.accepted,
                    g.published,
                    g.active,
                    g.reclaimed
                ),
                _ => emit(out, &v)?,
            }
        }
    }
    Ok(())
}

async fn apply(
    c: &mut FerryClient<Channel>,
    desired: pb::apply_request::Desired,
    opts: &ApplyOpts,
    out: Format,
) -> Result<(), Fail> {
    use pb::apply_response::Result as R;
    let r = c
        .apply(pb::ApplyRequest {
            desired: Some(desired),
            base_generation: opts.base_generation.unwrap_or(0),
            dry_run: opts.dry_run,
            nonce: opts.nonce.clone(),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let result = R::try_from(r.result).unwrap_or(R::Unspecified);
    let v = json!({
        "result": result.as_str_name(),
        "generation": r.generation,
        "config_version": r.config_version,
        "current_generation": r.current_generation,
        "dry_run": r.dry_run,
        "nonce": r.nonce,
        "routes4": r.routes4,
        "routes6": r.routes6,
        "validate_us": r.validate_us,
        "compile_us": r.compile_us,
        "errors": r.errors.iter().map(|e| json!({
            "path": e.path, "field": e.field, "value": e.value, "reason": e.reason,
        })).collect::<Vec<_>>(),
    });
    if out != Format::Table {
        emit(out, &v)?;
    }
    match result {
        R::Ack => {
            if out == Format::Table {
                if r.dry_run {
                    outln!(
                        "dry run: would apply ({} IPv4 and {} IPv6 routes; checked in {} us, compiled in {} us)",
                        r.routes4, r.routes6, r.validate_us, r.compile_us
                    );
                } else {
                    outln!(
                        "applied: generation {} (config version {}; {} IPv4 and {} IPv6 routes; checked in {} us, compiled in {} us)",
                        r.generation, r.config_version, r.routes4, r.routes6, r.validate_us, r.compile_us
                    );
                }
            }
            if opts.wait && !r.dry_run {
                c.wait(pb::WaitRequest {
                    generation: r.generation,
                    reclaimed: false,
                    timeout_ms: 10_000,
                })
                .await
                .map_err(rpc_error)?;
                if out == Format::Table {
                    outln!("generation {} is active on every worker", r.generation);
                }
            }
            Ok(())
        }
        R::StaleBase => Err(Fail(
            3,
            format!(
                "stale base: --base-generation {} given, the running config is at generation {}; nothing applied",
                opts.base_generation.unwrap_or(0),
                r.current_generation
            ),
        )),
        R::NeedsRestart | R::Nack => {
            let mut msg = format!(
                "{}: nothing applied ({} error{})",
                if result == R::Nack {
                    "refused"
                } else {
                    "needs a restart"
                },
                r.errors.len(),
                if r.errors.len() == 1 { "" } else { "s" }
            );
            for e in &r.errors {
                msg += &format!("\n  {}: ", e.field);
                if !e.value.is_empty() {
                    msg += &format!("{:?}: ", e.value);
                }
                msg += &e.reason;
            }
            Err(Fail(if result == R::Nack { 1 } else { 4 }, msg))
        }
        R::Unspecified => Err(Fail(1, format!("unknown answer {}", r.result))),
    }
}

fn emit(out: Format, v: &Value) -> Result<(), Fail> {
    match out {
        Format::Yaml => out!("{}", serde_yaml::to_string(v)?),
        _ => outln!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(())
}

fn generations_json(g: &pb::Generations) -> Value {
    json!({"accepted": g.accepted, "published": g.published, "active": g.active, "reclaimed": g.reclaimed})
}

fn status_json(s: &pb::Status) -> Value {
    let n = s.neighbors.unwrap_or_default();
    json!({
        "version": s.version,
        "uptime_ms": s.uptime_ms,
        "generation": generations_json(&s.generation.unwrap_or_default()),
        "config_version": s.config_version,
        "routes": {"ipv4": s.routes4, "ipv6": s.routes6},
        "neighbors": {"entries": n.entries, "incomplete": n.incomplete, "failed": n.failed, "solicits": n.solicits},
        "workers": s.workers.iter().map(|w| json!({
            "id": w.id, "lcore": w.lcore, "generation": w.generation,
            "cycles_per_packet": w.cycles_per_packet, "rx_packets": w.rx_packets, "tx_packets": w.tx_packets,
        })).collect::<Vec<_>>(),
        "ports": s.ports.iter().map(|p| json!({
            "name": p.name, "id": p.id, "driver": p.driver, "mac": p.mac, "link_up": p.link_up,
            "speed_mbps": p.speed_mbps, "mtu": p.mtu, "addresses": p.addresses,
            "kernel_interface": p.kernel_interface,
            "ipackets": p.ipackets, "opackets": p.opackets, "ibytes": p.ibytes, "obytes": p.obytes,
            "imissed": p.imissed, "ierrors": p.ierrors, "oerrors": p.oerrors, "rx_nombuf": p.rx_nombuf,
        })).collect::<Vec<_>>(),
    })
}

fn print_status(v: &Value) {
    let g = &v["generation"];
    outln!(
        "ferryd {}  up {:.1} s  config version {}",
        v["version"].as_str().unwrap_or("?"),
        v["uptime_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
        v["config_version"]
    );
    outln!(
        "generation: accepted {}  published {}  active {}  reclaimed {}",
        g["accepted"],
        g["published"],
        g["active"],
        g["reclaimed"]
    );
    outln!(
        "routes: {} IPv4, {} IPv6   neighbours: {} (incomplete {}, failed {})",
        v["routes"]["ipv4"],
        v["routes"]["ipv6"],
        v["neighbors"]["entries"],
        v["neighbors"]["incomplete"],
        v["neighbors"]["failed"]
    );
    outln!();
    outln!(
        "{:<7}{:>6}{:>12}{:>14}{:>14}{:>14}",
        "WORKER",
        "LCORE",
        "GENERATION",
        "CYCLES/PKT",
        "RX",
        "TX"
    );
    for w in v["workers"].as_array().into_iter().flatten() {
        outln!(
            "{:<7}{:>6}{:>12}{:>14.1}{:>14}{:>14}",
            w["id"].to_string(),
            w["lcore"].to_string(),
            w["generation"].to_string(),
            w["cycles_per_packet"].as_f64().unwrap_or(0.0),
            w["rx_packets"].to_string(),
            w["tx_packets"].to_string()
        );
    }
    outln!();
    outln!(
        "{:<10}{:<16}{:<19}{:<6}{:>6}{:>13}{:>13}{:>9}{:>9}  ADDRESSES",
        "PORT",
        "DRIVER",
        "MAC",
        "LINK",
        "MTU",
        "RX",
        "TX",
        "MISSED",
        "ERRORS"
    );
    for p in v["ports"].as_array().into_iter().flatten() {
        let errors = p["ierrors"].as_u64().unwrap_or(0) + p["oerrors"].as_u64().unwrap_or(0);
        let addrs: Vec<&str> = p["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        outln!(
            "{:<10}{:<16}{:<19}{:<6}{:>6}{:>13}{:>13}{:>9}{:>9}  {}",
            p["name"].as_str().unwrap_or("?"),
            p["driver"].as_str().unwrap_or("?"),
            p["mac"].as_str().unwrap_or("?"),
            if p["link_up"].as_bool() == Some(true) {
                "up"
            } else {
                "down"
            },
            p["mtu"].to_string(),
            p["ipackets"].to_string(),
            p["opackets"].to_string(),
            p["imissed"].to_string(),
            errors,
            addrs.join(" ")
        );
    }
}

fn route_json(r: &pb::RouteEntry) -> Value {
    let kind = pb::route_entry::Kind::try_from(r.kind)
        .unwrap_or(pb::route_entry::Kind::Unspecified)
        .as_str_name()
        .to_lowercase();
    json!({"prefix": r.prefix, "kind": kind, "via": r.via, "port": r.port})
}

/// One route as `ip route` prints it.
fn route_line(r: &Value) -> String {
    let prefix = r["prefix"].as_str().unwrap_or("?");
    let port = r["port"].as_str().unwrap_or("?");
    let via: Vec<&str> = r["via"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    match (r["kind"].as_str().unwrap_or(""), via.len()) {
        ("connected", _) => format!("{prefix} dev {port} proto kernel scope link"),
        ("local", _) => format!("local {prefix} dev {port} scope host"),
        (_, 1) => format!("{prefix} via {} dev {port}", via[0]),
        _ => {
            let mut s = prefix.to_string();
            for v in via {
                s += &format!("\n\tnexthop via {v}");
            }
            s
        }
    }
}

fn print_counters(m: &pb::Counters, out: Format, all: bool) -> Result<(), Fail> {
    let sorted = |map: &std::collections::HashMap<String, u64>| {
        let mut v: Vec<(String, u64)> = map
            .iter()
            .filter(|(_, v)| all || **v != 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort();
        v
    };
    if out != Format::Table {
        let obj = |map: &std::collections::HashMap<String, u64>| {
            Value::Object(
                sorted(map)
                    .into_iter()
                    .map(|(k, v)| (k, Value::from(v)))
                    .collect(),
            )
        };
        let v = json!({
            "total": obj(&m.total),
            "workers": m.workers.iter().map(|w| json!({"id": w.id, "counters": obj(&w.values)})).collect::<Vec<_>>(),
        });
        return emit(out, &v);
    }
    let mut header = format!("{:<28}{:>16}", "COUNTER", "TOTAL");
    for w in &m.workers {
        header += &format!("{:>16}", format!("WORKER {}", w.id));
    }
    outln!("{header}");
    for (k, v) in sorted(&m.total) {
        let mut line = format!("{k:<28}{v:>16}");
        for w in &m.workers {
            line += &format!("{:>16}", w.values.get(&k).copied().unwrap_or(0));
        }
        outln!("{line}");
    }
    Ok(())
}
