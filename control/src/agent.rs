//! The control agent: the gRPC API (`ferry.v1.Ferry`, with grpc.health.v1 and server
//! reflection) and the Prometheus endpoint, on a thread of their own with a small tokio
//! runtime (it inherits the main lcore's CPU, never a worker's).
//!
//! The agent owns no state. Every request becomes a [`Request`] for the control thread,
//! which owns the [`Controller`](crate::controller::Controller): applies are serialized
//! there, in the order they arrive, with SIGHUP reloads and worker events. The control
//! thread answers over a oneshot channel and never waits on a client, so a slow or failing
//! client cannot stall it or forwarding. Generations reach the agent over a `watch`
//! channel, for `Wait` and the status streams.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc;
use std::thread::Thread;
use std::time::Duration;

use ferry_proto::v1 as pb;
use ferry_proto::v1::ferry_server::{Ferry, FerryServer};
use tokio::sync::{oneshot, watch};
use tokio_stream::Stream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Response, Status};

use crate::config::{
    Change, Config, ConfigError, RawConfig, RawDpdk, RawLcore, RawNeighbor, RawPort, RawRoute,
    RawTuning,
};
use crate::controller::{Applied, ApplyError, ApplyRequest, Desired, Generations};

/// Where the agent listens (from ferryd's command line).
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    /// The unix socket (mode 0600).
    pub socket: Option<PathBuf>,
    /// TCP: with `tls`, mTLS; without, loopback only.
    pub listen: Option<SocketAddr>,
    pub tls: Option<TlsFiles>,
    /// Prometheus text format at `/metrics`.
    pub metrics: Option<SocketAddr>,
}

impl AgentOptions {
    /// What can be checked before anything starts: TCP without TLS only on loopback, the
    /// TLS files readable.
    pub fn check(&self) -> Result<(), AgentError> {
        if let Some(addr) = self.listen {
            if self.tls.is_none() && !addr.ip().is_loopback() {
                return Err(AgentError::PlaintextNotLoopback(addr));
            }
        }
        if let Some(t) = &self.tls {
            tls_config(t)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate signed by this CA.
    pub client_ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("--grpc-socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("--grpc-socket {0}: another ferryd answers on it")]
    SocketInUse(String),
    #[error("--grpc-listen {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--grpc-listen {0}: plaintext TCP only on loopback; give --tls-cert, --tls-key and --tls-client-ca")]
    PlaintextNotLoopback(SocketAddr),
    #[error("{flag} {path}: {source}")]
    TlsFile {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("--metrics-listen {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("agent runtime: {0}")]
    Runtime(std::io::Error),
}

/// What the agent asks of the control thread.
pub enum Request {
    Apply {
        req: ApplyRequest,
        nonce: String,
        reply: oneshot::Sender<Result<Applied, ApplyError>>,
    },
    Config(oneshot::Sender<Config>),
    Status(oneshot::Sender<pb::Status>),
    Counters(oneshot::Sender<pb::Counters>),
    Routes(u32, oneshot::Sender<pb::RouteList>),
    Neighbors(oneshot::Sender<pb::NeighborList>),
    NatRules(oneshot::Sender<pb::NatRuleList>),
    /// Errors name the bad filter field (invalid argument).
    Flows(
        pb::ListFlowsRequest,
        oneshot::Sender<Result<pb::FlowList, String>>,
    ),
    Flush(
        pb::FlushFlowsRequest,
        oneshot::Sender<Result<pb::FlushFlowsResponse, String>>,
    ),
    /// Services with their backends (by name; empty: all).
    Services(String, oneshot::Sender<pb::ServiceList>),
    /// The Prometheus exposition.
    Metrics(oneshot::Sender<String>),
}

/// The control thread's end: requests in, generations out. Dropping it stops the agent.
pub struct Agent {
    pub requests: mpsc::Receiver<Request>,
    pub generations: watch::Sender<Generations>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    socket: Option<PathBuf>,
}

impl Agent {
    /// Tell `Wait` and the status streams the generations now (if they changed).
    pub fn share_generations(&self, g: Generations) {
        self.generations.send_if_modified(|old| {
            let changed = *old != g;
            *old = g;
            changed
        });
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[derive(Clone)]
struct Handle {
    tx: mpsc::Sender<Request>,
    control: Thread,
    generations: watch::Receiver<Generations>,
}

impl Handle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| Status::unavailable("ferryd is stopping"))?;
        self.control.unpark();
        rx.await
            .map_err(|_| Status::unavailable("ferryd is stopping"))
    }
}

/// Bind every listener (so that a bad address fails ferryd's start with a clear error),
/// then serve on a thread of its own. `control` is woken for each request.
pub fn start(
    opts: &AgentOptions,
    control: Thread,
    initial: Generations,
) -> Result<Agent, AgentError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    let (tx, requests) = mpsc::channel();
    let (gtx, grx) = watch::channel(initial);
    let handle = Handle {
        tx,
        control,
        generations: grx,
    };

    let _guard = rt.enter();
    let unix = match &opts.socket {
        Some(p) => Some(bind_unix(p)?),
        None => None,
    };
    let tcp = match opts.listen {
        Some(addr) => {
            if opts.tls.is_none() && !addr.ip().is_loopback() {
                return Err(AgentError::PlaintextNotLoopback(addr));
            }
            let l = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|_| l))
                .and_then(tokio::net::TcpListener::from_std)
                .map_err(|source| AgentError::Listen { addr, source })?;
            Some(l)
        }
        None => None,
    };
    let tls = match &opts.tls {
        Some(f) => Some(tls_config(f)?),
        None => None,
    };
    let metrics = match opts.metrics {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|_| l))
                .and_then(tokio::net::TcpListener::from_std)
                .map_err(|source| AgentError::Metrics { addr, source })?;
            Some(l)
        }
        None => None,
    };
    drop(_guard);

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("ferry-agent".into())
        .spawn(move || rt.block_on(serve(handle, unix, tcp, tls, metrics, stop_rx)))
        .map_err(AgentError::Runtime)?;
    Ok(Agent {
        requests,
        generations: gtx,
        stop: Some(stop_tx),
        thread: Some(thread),
        socket: opts.socket.clone(),
    })
}

fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, AgentError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let wrap = |source| AgentError::Socket {
        path: shown.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(wrap)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(wrap)?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(AgentError::SocketInUse(shown));
        }
        std::fs::remove_file(path).map_err(wrap)?;
    }
    let l = tokio::net::UnixListener::bind(path).map_err(wrap)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(wrap)?;
    Ok(l)
}

fn tls_config(f: &TlsFiles) -> Result<ServerTlsConfig, AgentError> {
    let read = |flag: &'static str, p: &PathBuf| {
        std::fs::read(p).map_err(|source| AgentError::TlsFile {
            flag,
            path: p.display().to_string(),
            source,
        })
    };
    let cert = read("--tls-cert", &f.cert)?;
    let key = read("--tls-key", &f.key)?;
    let ca = read("--tls-client-ca", &f.client_ca)?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca)))
}

async fn serve(
    handle: Handle,
    unix: Option<tokio::net::UnixListener>,
    tcp: Option<tokio::net::TcpListener>,
    tls: Option<ServerTlsConfig>,
    metrics: Option<tokio::net::TcpListener>,
    stop: oneshot::Receiver<()>,
) {
    let (stop_all, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = Vec::new();
    let router =
        |tls: Option<&ServerTlsConfig>| -> Result<tonic::transport::server::Router, String> {
            let (mut reporter, health) = tonic_health::server::health_reporter();
            let reflection = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .map_err(|e| e.to_string())?;
            let reflection_alpha = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1alpha()
                .map_err(|e| e.to_string())?;
            let ferry = FerryServer::new(Service { h: handle.clone() })
                .max_decoding_message_size(ferry_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(ferry_proto::MAX_MESSAGE_BYTES);
            let mut b = Server::builder();
            if let Some(t) = tls {
                b = b.tls_config(t.clone()).map_err(|e| e.to_string())?;
            }
            // The reporter starts every service as serving; ferry.v1.Ferry by name too.
            tokio::spawn(async move {
                reporter
                    .set_service_status("ferry.v1.Ferry", tonic_health::ServingStatus::Serving)
                    .await;
                std::future::pending::<()>().await;
            });
            Ok(b.add_service(health)
                .add_service(reflection)
                .add_service(reflection_alpha)
                .add_service(ferry))
        };
    if let Some(l) = unix {
        match router(None) {
            Ok(r) => {
                let mut s = stop_all.subscribe();
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(l);
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = r
                        .serve_with_incoming_shutdown(incoming, async move {
                            let _ = s.recv().await;
                        })
                        .await
                    {
                        tracing::error!("gRPC on the unix socket: {e}");
                    }
                }));
            }
            Err(e) => tracing::error!("gRPC: {e}"),
        }
    }
    if let Some(l) = tcp {
        match router(tls.as_ref()) {
            Ok(r) => {
                let mut s = stop_all.subscribe();
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = r
                        .serve_with_incoming_shutdown(incoming, async move {
                            let _ = s.recv().await;
                        })
                        .await
                    {
                        tracing::error!("gRPC on TCP: {e}");
                    }
                }));
            }
            Err(e) => tracing::error!("gRPC over TCP: {e}"),
        }
    }
    if let Some(l) = metrics {
        let h = handle.clone();
        let mut s = stop_all.subscribe();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let h = h.clone();
                async move {
                    match h.ask(Request::Metrics).await {
                        Ok(text) => (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            text,
                        )
                            .into_response(),
                        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
                    }
                }
            }),
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = s.recv().await;
                })
                .await
            {
                tracing::error!("metrics endpoint: {e}");
            }
        }));
    }
    let _ = stop.await;
    let _ = stop_all.send(());
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
}

use axum::response::IntoResponse;

struct Service {
    h: Handle,
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<pb::Status, Status>> + Send>>;
type CountersStream = Pin<Box<dyn Stream<Item = Result<pb::Counters, Status>> + Send>>;

fn interval_of(ms: u32) -> Duration {
    Duration::from_millis(if ms == 0 { 1000 } else { ms.max(100) } as u64)
}

/// Ask the control thread every `every` and send the answers until the client goes away.
fn watch_stream<T: Send + 'static>(
    h: Handle,
    every: Duration,
    make: fn(oneshot::Sender<T>) -> Request,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let v = h.ask(make).await;
            let end = v.is_err();
            if tx.send(v).await.is_err() || end {
                return;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl Ferry for Service {
    async fn apply(
        &self,
        request: tonic::Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let r = request.into_inner();
        let nonce = r.nonce.clone();
        let dry_run = r.dry_run;
        let req = match apply_from_pb(r) {
            Ok(req) => req,
            Err(errors) => {
                return Ok(Response::new(pb::ApplyResponse {
                    result: pb::apply_response::Result::Nack as i32,
                    errors: errors.iter().map(resource_error).collect(),
                    nonce,
                    dry_run,
                    current_generation: self.h.generations.borrow().accepted,
                    ..Default::default()
                }))
            }
        };
        let n = nonce.clone();
        let answer = self
            .h
            .ask(|reply| Request::Apply {
                req,
                nonce: n,
                reply,
            })
            .await?;
        let current = self.h.generations.borrow().accepted;
        Ok(Response::new(apply_response(
            answer, nonce, dry_run, current,
        )))
    }

    async fn get_config(
        &self,
        _: tonic::Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::Config>, Status> {
        let c = self.h.ask(Request::Config).await?;
        Ok(Response::new(pb_from_raw(&c.to_raw())))
    }

    async fn get_status(
        &self,
        _: tonic::Request<pb::StatusRequest>,
    ) -> Result<Response<pb::Status>, Status> {
        Ok(Response::new(self.h.ask(Request::Status).await?))
    }

    type WatchStatusStream = StatusStream;
    async fn watch_status(
        &self,
        request: tonic::Request<pb::WatchRequest>,
    ) -> Result<Response<StatusStream>, Status> {
        let every = interval_of(request.into_inner().interval_ms);
        Ok(Response::new(watch_stream(
            self.h.clone(),
            every,
            Request::Status,
        )))
    }

    async fn get_counters(
        &self,
        _: tonic::Request<pb::CountersRequest>,
    ) -> Result<Response<pb::Counters>, Status> {
        Ok(Response::new(self.h.ask(Request::Counters).await?))
    }

    type WatchCountersStream = CountersStream;
    async fn watch_counters(
        &self,
        request: tonic::Request<pb::WatchRequest>,
    ) -> Result<Response<CountersStream>, Status> {
        let every = interval_of(request.into_inner().interval_ms);
        Ok(Response::new(watch_stream(
            self.h.clone(),
            every,
            Request::Counters,
        )))
    }

    async fn wait(
        &self,
        request: tonic::Request<pb::WaitRequest>,
    ) -> Result<Response<pb::Generations>, Status> {
        let r = request.into_inner();
        let timeout = Duration::from_millis(if r.timeout_ms == 0 {
            10_000
        } else {
            r.timeout_ms as u64
        });
        let mut rx = self.h.generations.clone();
        {
            let g = *rx.borrow();
            if r.generation > g.published && r.generation > g.accepted {
                return Err(Status::invalid_argument(format!(
                    "generation {}: not published yet (published: {})",
                    r.generation, g.published
                )));
            }
        }
        let done = |g: &Generations| {
            if r.reclaimed {
                g.reclaimed >= r.generation
            } else {
                g.active >= r.generation
            }
        };
        let waited =
            tokio::time::timeout(timeout, async { rx.wait_for(done).await.map(|g| *g) }).await;
        match waited {
            Ok(Ok(g)) => Ok(Response::new(pb_generations(&g))),
            Ok(Err(_)) => Err(Status::unavailable("ferryd is stopping")),
            Err(_) => {
                let g = *self.h.generations.borrow();
                Err(Status::deadline_exceeded(format!(
                    "generation {} not {} after {} ms (active {}, reclaimed {})",
                    r.generation,
                    if r.reclaimed { "reclaimed" } else { "active" },
                    timeout.as_millis(),
                    g.active,
                    g.reclaimed
                )))
            }
        }
    }

    async fn list_routes(
        &self,
        request: tonic::Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::RouteList>, Status> {
        let family = request.into_inner().family;
        if ![0, 4, 6].contains(&family) {
            return Err(Status::invalid_argument(format!(
                "family: {family}: 4, 6 or 0 (both)"
            )));
        }
        Ok(Response::new(
            self.h.ask(|tx| Request::Routes(family, tx)).await?,
        ))
    }

    async fn list_neighbors(
        &self,
        _: tonic::Request<pb::ListNeighborsRequest>,
    ) -> Result<Response<pb::NeighborList>, Status> {
        Ok(Response::new(self.h.ask(Request::Neighbors).await?))
    }

    async fn list_services(
        &self,
        req: tonic::Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ServiceList>, Status> {
        let name = req.into_inner().name;
        Ok(Response::new(
            self.h.ask(|tx| Request::Services(name, tx)).await?,
        ))
    }

    async fn list_nat_rules(
        &self,
        _: tonic::Request<pb::ListNatRulesRequest>,
    ) -> Result<Response<pb::NatRuleList>, Status> {
        Ok(Response::new(self.h.ask(Request::NatRules).await?))
    }

    async fn list_flows(
        &self,
        request: tonic::Request<pb::ListFlowsRequest>,
    ) -> Result<Response<pb::FlowList>, Status> {
        let req = request.into_inner();
        self.h
            .ask(|tx| Request::Flows(req, tx))
            .await?
            .map(Response::new)
            .map_err(Status::invalid_argument)
    }

    async fn flush_flows(
        &self,
        request: tonic::Request<pb::FlushFlowsRequest>,
    ) -> Result<Response<pb::FlushFlowsResponse>, Status> {
        let req = request.into_inner();
        self.h
            .ask(|tx| Request::Flush(req, tx))
            .await?
            .map(Response::new)
            .map_err(Status::invalid_argument)
    }
}

pub fn pb_generations(g: &Generations) -> pb::Generations {
    pb::Generations {
        accepted: g.accepted,
        published: g.published,
        active: g.active,
        reclaimed: g.reclaimed,
    }
}

fn resource_error(e: &ConfigError) -> pb::ResourceError {
    pb::ResourceError {
        path: e.resource().to_string(),
        field: e.field.clone(),
        value: e.value.clone(),
        reason: e.message.clone(),
    }
}

fn apply_response(
    answer: Result<Applied, ApplyError>,
    nonce: String,
    dry_run: bool,
    current: u64,
) -> pb::ApplyResponse {
    use pb::apply_response::Result as R;
    let mut r = pb::ApplyResponse {
        nonce,
        dry_run,
        current_generation: current,
        ..Default::default()
    };
    match answer {
        Ok(a) => {
            r.result = R::Ack as i32;
            r.generation = a.generation;
            r.config_version = a.version;
            r.routes4 = a.routes4 as u64;
            r.routes6 = a.routes6 as u64;
            r.validate_us = a.validate.as_micros() as u64;
            r.compile_us = a.compile.as_micros() as u64;
            if !a.dry_run {
                // The generation before this apply.
                r.current_generation = current.min(a.generation);
            }
        }
        Err(ApplyError::StaleBase { current, .. }) => {
            r.result = R::StaleBase as i32;
            r.current_generation = current;
        }
        Err(ApplyError::Rejected(errors)) => {
            r.result = R::Nack as i32;
            r.errors = errors.iter().map(resource_error).collect();
        }
        Err(ApplyError::Invalid { source, .. }) => {
            r.result = R::Nack as i32;
            r.errors = vec![resource_error(&source)];
        }
        Err(ApplyError::NeedsRestart(e)) => {
            r.result = R::NeedsRestart as i32;
            r.errors = vec![resource_error(&e)];
        }
        Err(e @ (ApplyError::Compile(_) | ApplyError::Read { .. })) => {
            r.result = R::Nack as i32;
            r.errors = vec![pb::ResourceError {
                path: "tables".into(),
                field: "tables".into(),
                value: String::new(),
                reason: e.to_string(),
            }];
        }
    }
    r
}

// ---- the model in proto and back ----

/// A request as the controller takes it, or why it cannot be one.
pub fn apply_from_pb(r: pb::ApplyRequest) -> Result<ApplyRequest, Vec<ConfigError>> {
    let desired = match r.desired {
        Some(pb::apply_request::Desired::Config(c)) => Desired::Whole(Box::new(raw_from_pb(c))),
        Some(pb::apply_request::Desired::Delta(d)) => {
            let mut changes = Vec::with_capacity(d.changes.len());
            let mut errors = Vec::new();
            for (i, c) in d.changes.into_iter().enumerate() {
                match change_from_pb(c) {
                    Some(c) => changes.push(c),
                    None => errors.push(ConfigError {
                        field: format!("changes[{i}]"),
                        value: String::new(),
                        message: "no operation set (upsert_route, delete_route, ...)".into(),
                    }),
                }
            }
            if !errors.is_empty() {
                return Err(errors);
            }
            Desired::Delta(changes)
        }
        None => {
            return Err(vec![ConfigError {
                field: "desired".into(),
                value: String::new(),
                message: "give a config or a delta".into(),
            }])
        }
    };
    Ok(ApplyRequest {
        desired,
        base_generation: (r.base_generation != 0).then_some(r.base_generation),
        dry_run: r.dry_run,
    })
}

pub fn change_from_pb(c: pb::Change) -> Option<Change> {
    use pb::change::Op;
    Some(match c.op? {
        Op::UpsertRoute(r) => Change::UpsertRoute(RawRoute {
            prefix: r.prefix,
            via: r.via,
        }),
        Op::DeleteRoute(p) => Change::DeleteRoute(p),
        Op::UpsertNeighbor(n) => Change::UpsertNeighbor(raw_neighbor(n)),
        Op::DeleteNeighbor(n) => Change::DeleteNeighbor(raw_neighbor(n)),
        Op::AddAddress(a) => Change::AddAddress {
            port: a.port,
            address: a.address,
        },
        Op::DeleteAddress(a) => Change::DeleteAddress {
            port: a.port,
            address: a.address,
        },
        Op::UpsertService(s) => Change::UpsertService(Box::new(raw_service(s))),
        Op::DeleteService(n) => Change::DeleteService(n),
        Op::UpsertBackend(b) => Change::UpsertBackend {
            service: b.service,
            backend: raw_backend(b.backend.unwrap_or_default()),
        },
        Op::DeleteBackend(b) => {
            let be = b.backend.unwrap_or_default();
            Change::DeleteBackend {
                service: b.service,
                address: be.address,
                port: be.port,
            }
        }
    })
}

fn raw_backend(b: pb::Backend) -> crate::service::RawBackend {
    crate::service::RawBackend {
        address: b.address,
        port: b.port,
        weight: b.weight,
        drain: b.drain,
    }
}

fn pb_backend(b: &crate::service::RawBackend) -> pb::Backend {
    pb::Backend {
        address: b.address.clone(),
        port: b.port,
        weight: b.weight,
        drain: b.drain,
    }
}

fn raw_service(s: pb::Service) -> crate::service::RawService {
    crate::service::RawService {
        name: s.name,
        vip: s.vip,
        port: s.port,
        protocol: s.protocol,
        scheduler: s.scheduler,
        forward: s.forward,
        local_addresses: s.local_addresses,
        persistence_s: s.persistence_s,
        table_size: s.table_size,
        when_down: s.when_down,
        slow_start_s: s.slow_start_s,
        gue_port: s.gue_port,
        backends: s.backends.into_iter().map(raw_backend).collect(),
        health: s.health.map(|h| crate::service::RawHealth {
            kind: h.r#type,
            port: h.port,
            path: h.path,
            expect: h.expect,
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            rise: h.rise,
            fall: h.fall,
        }),
    }
}

fn pb_service(s: &crate::service::RawService) -> pb::Service {
    pb::Service {
        name: s.name.clone(),
        vip: s.vip.clone(),
        port: s.port,
        protocol: s.protocol.clone(),
        scheduler: s.scheduler.clone(),
        forward: s.forward.clone(),
        local_addresses: s.local_addresses.clone(),
        persistence_s: s.persistence_s,
        table_size: s.table_size,
        when_down: s.when_down.clone(),
        slow_start_s: s.slow_start_s,
        gue_port: s.gue_port,
        backends: s.backends.iter().map(pb_backend).collect(),
        health: s.health.as_ref().map(|h| pb::HealthCheck {
            r#type: h.kind.clone(),
            port: h.port,
            path: h.path.clone(),
            expect: h.expect,
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            rise: h.rise,
            fall: h.fall,
        }),
    }
}

pub fn pb_from_change(c: &Change) -> pb::Change {
    use pb::change::Op;
    let op = match c {
        Change::UpsertRoute(r) => Op::UpsertRoute(pb::Route {
            prefix: r.prefix.clone(),
            via: r.via.clone(),
        }),
        Change::DeleteRoute(p) => Op::DeleteRoute(p.clone()),
        Change::UpsertNeighbor(n) => Op::UpsertNeighbor(pb_neighbor(n)),
        Change::DeleteNeighbor(n) => Op::DeleteNeighbor(pb_neighbor(n)),
        Change::AddAddress { port, address } => Op::AddAddress(pb::PortAddress {
            port: port.clone(),
            address: address.clone(),
        }),
        Change::DeleteAddress { port, address } => Op::DeleteAddress(pb::PortAddress {
            port: port.clone(),
            address: address.clone(),
        }),
        Change::UpsertService(s) => Op::UpsertService(pb_service(s)),
        Change::DeleteService(n) => Op::DeleteService(n.clone()),
        Change::UpsertBackend { service, backend } => Op::UpsertBackend(pb::BackendChange {
            service: service.clone(),
            backend: Some(pb_backend(backend)),
        }),
        Change::DeleteBackend {
            service,
            address,
            port,
        } => Op::DeleteBackend(pb::BackendChange {
            service: service.clone(),
            backend: Some(pb::Backend {
                address: address.clone(),
                port: *port,
                ..Default::default()
            }),
        }),
    };
    pb::Change { op: Some(op) }
}

fn raw_neighbor(n: pb::Neighbor) -> RawNeighbor {
    RawNeighbor {
        address: n.address,
        mac: n.mac,
        port: n.port,
    }
}

fn pb_neighbor(n: &RawNeighbor) -> pb::Neighbor {
    pb::Neighbor {
        address: n.address.clone(),
        mac: n.mac.clone(),
        port: n.port.clone(),
    }
}

/// A proto `Config` in the file's raw form (validated by the same code as the file).
pub fn raw_from_pb(c: pb::Config) -> RawConfig {
    let d = c.dpdk.unwrap_or_default();
    let t = c.tuning.unwrap_or_default();
    RawConfig {
        dpdk: RawDpdk {
            lcores: d
                .lcores
                .into_iter()
                .map(|l| match l.trim().parse::<u32>() {
                    Ok(id) => RawLcore::Id(id),
                    Err(_) => RawLcore::Mapped(l),
                })
                .collect(),
            args: d.args,
            mbufs: d.mbufs,
        },
        ports: c
            .ports
            .into_iter()
            .map(|p| RawPort {
                name: p.name,
                devargs: p.devargs,
                addresses: p.addresses,
                mtu: p.mtu,
                vlan: p.vlan,
                exception: p.exception,
            })
            .collect(),
        routes: c
            .routes
            .into_iter()
            .map(|r| RawRoute {
                prefix: r.prefix,
                via: r.via,
            })
            .collect(),
        neighbors: c.neighbors.into_iter().map(raw_neighbor).collect(),
        tuning: RawTuning {
            neighbor_reachable_s: t.neighbor_reachable_s,
            neighbor_stale_s: t.neighbor_stale_s,
            icmp_rate: t.icmp_rate,
            // Out of u16's range: kept out of range (the check names it), not wrapped.
            rx_desc: t.rx_desc.map(|v| u16::try_from(v).unwrap_or(u16::MAX)),
            tx_desc: t.tx_desc.map(|v| u16::try_from(v).unwrap_or(u16::MAX)),
            neighbor_retrans_ms: t.neighbor_retrans_ms,
            neighbor_probes: t.neighbor_probes,
            neighbor_failed_s: t.neighbor_failed_s,
            solicit_rate: t.solicit_rate,
            hold_packets: t.hold_packets.map(|v| v as usize),
            unres_qlen: t.unres_qlen.map(|v| v as usize),
            unres_qlen_bytes: t.unres_qlen_bytes.map(|v| v as usize),
        },
        nat: c.nat.map(raw_nat),
        services: c.services.into_iter().map(raw_service).collect(),
    }
}

fn raw_nat(n: pb::Nat) -> crate::nat::RawNat {
    use crate::nat::*;
    RawNat {
        snat: n
            .snat
            .into_iter()
            .map(|r| {
                let m = r.r#match.unwrap_or_default();
                let to = r.to.unwrap_or_default();
                RawSnat {
                    name: r.name,
                    matches: RawSnatMatch {
                        from: m.from,
                        out: m.out,
                    },
                    to: RawSnatTo {
                        addresses: (!to.addresses.is_empty()).then_some(to.addresses),
                        ports: to.ports,
                    },
                }
            })
            .collect(),
        dnat: n
            .dnat
            .into_iter()
            .map(|r| {
                let m = r.r#match.unwrap_or_default();
                let to = r.to.unwrap_or_default();
                RawDnat {
                    name: r.name,
                    matches: RawDnatMatch {
                        address: m.address,
                        protocol: m.protocol,
                        port: m.port,
                    },
                    to: RawDnatTo {
                        address: to.address,
                        port: to.port,
                    },
                }
            })
            .collect(),
        timeouts: n.timeouts.map(|t| RawTimeouts {
            tcp_established: t.tcp_established,
            tcp_transitory: t.tcp_transitory,
            udp: t.udp,
            icmp: t.icmp,
        }),
        max_flows: n.max_flows,
    }
}

fn pb_nat(n: &crate::nat::RawNat) -> pb::Nat {
    pb::Nat {
        snat: n
            .snat
            .iter()
            .map(|r| pb::SnatRule {
                name: r.name.clone(),
                r#match: Some(pb::SnatMatch {
                    from: r.matches.from.clone(),
                    out: r.matches.out.clone(),
                }),
                to: Some(pb::SnatTo {
                    addresses: r.to.addresses.clone().unwrap_or_default(),
                    ports: r.to.ports.clone(),
                }),
            })
            .collect(),
        dnat: n
            .dnat
            .iter()
            .map(|r| pb::DnatRule {
                name: r.name.clone(),
                r#match: Some(pb::DnatMatch {
                    address: r.matches.address.clone(),
                    protocol: r.matches.protocol.clone(),
                    port: r.matches.port,
                }),
                to: Some(pb::DnatTo {
                    address: r.to.address.clone(),
                    port: r.to.port,
                }),
            })
            .collect(),
        timeouts: n.timeouts.as_ref().map(|t| pb::NatTimeouts {
            tcp_established: t.tcp_established,
            tcp_transitory: t.tcp_transitory,
            udp: t.udp,
            icmp: t.icmp,
        }),
        max_flows: n.max_flows,
    }
}

pub fn pb_from_raw(r: &RawConfig) -> pb::Config {
    let t = &r.tuning;
    pb::Config {
        dpdk: Some(pb::Dpdk {
            lcores: r
                .dpdk
                .lcores
                .iter()
                .map(|l| match l {
                    RawLcore::Id(id) => id.to_string(),
                    RawLcore::Mapped(s) => s.clone(),
                })
                .collect(),
            args: r.dpdk.args.clone(),
            mbufs: r.dpdk.mbufs,
        }),
        ports: r
            .ports
            .iter()
            .map(|p| pb::Port {
                name: p.name.clone(),
                devargs: p.devargs.clone(),
                addresses: p.addresses.clone(),
                mtu: p.mtu,
                vlan: p.vlan,
                exception: p.exception,
            })
            .collect(),
        routes: r
            .routes
            .iter()
            .map(|x| pb::Route {
                prefix: x.prefix.clone(),
                via: x.via.clone(),
            })
            .collect(),
        neighbors: r.neighbors.iter().map(pb_neighbor).collect(),
        tuning: Some(pb::Tuning {
            neighbor_reachable_s: t.neighbor_reachable_s,
            neighbor_stale_s: t.neighbor_stale_s,
            icmp_rate: t.icmp_rate,
            rx_desc: t.rx_desc.map(u32::from),
            tx_desc: t.tx_desc.map(u32::from),
            neighbor_retrans_ms: t.neighbor_retrans_ms,
            neighbor_probes: t.neighbor_probes,
            neighbor_failed_s: t.neighbor_failed_s,
            solicit_rate: t.solicit_rate,
            hold_packets: t.hold_packets.map(|v| v as u64),
            unres_qlen: t.unres_qlen.map(|v| v as u64),
            unres_qlen_bytes: t.unres_qlen_bytes.map(|v| v as u64),
        }),
        nat: r.nat.as_ref().map(pb_nat),
        services: r.services.iter().map(pb_service).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config_text(routes: &[(u8, u8, bool)], neighbors: &[u8]) -> String {
        let mut s = String::from(
            "dpdk: { lcores: [0, \"1@0\"], args: [--in-memory] }\nports:\n  - { name: a, devargs: net_null0, addresses: [10.0.1.1/24, \"fd00:1::1/64\"], vlan: 7 }\n  - { name: b, devargs: net_null1, addresses: [10.0.2.1/24], exception: false, mtu: 9000 }\nroutes:\n",
        );
        for (x, len, ecmp) in routes {
            let len = 8 + len % 17;
            let via = if *ecmp {
                "[10.0.2.2, 10.0.2.3]"
            } else {
                "[10.0.1.9]"
            };
            s += &format!(
                "  - {{ prefix: {}.0.0.0/{len}, via: {via} }}\n",
                11 + x % 200
            );
        }
        s += "neighbors:\n";
        for n in neighbors {
            s += &format!(
                "  - {{ address: 10.0.2.{}, mac: \"02:00:00:00:00:{n:02x}\", port: b }}\n",
                2 + n % 250
            );
        }
        s += "tuning: { solicit_rate: 500 }\n";
        if neighbors.len() % 2 == 1 {
            s += "nat:\n  snat:\n    - {match: {from: [10.0.1.0/24], out: b}, to: {ports: \"2000-3000\"}}\n  dnat:\n    - {name: web, match: {address: 10.0.2.1, protocol: tcp, port: 8080}, to: {address: 10.0.1.2, port: 80}}\n  max_flows: 4096\n";
        }
        s
    }

    proptest! {
        /// YAML -> model -> proto -> model gives the same model, and the model's own
        /// YAML re-applies to it.
        #[test]
        fn yaml_model_proto_model_round_trips(
            routes in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<bool>()), 0..20),
            neighbors in proptest::collection::btree_set(any::<u8>(), 0..5),
        ) {
            let text = config_text(&routes, &neighbors.into_iter().collect::<Vec<_>>());
            // Duplicate prefixes are refused; the generator may make some.
            let Ok(cfg) = Config::from_yaml(&text) else { return Ok(()) };
            let pb = pb_from_raw(&cfg.to_raw());
            let back = Config::validate(raw_from_pb(pb.clone())).unwrap();
            prop_assert_eq!(&back, &cfg);
            // Through the wire encoding too.
            let bytes = prost::Message::encode_to_vec(&pb);
            let decoded: pb::Config = prost::Message::decode(&bytes[..]).unwrap();
            prop_assert_eq!(Config::validate(raw_from_pb(decoded)).unwrap(), cfg.clone());
            prop_assert_eq!(Config::from_yaml(&cfg.to_yaml()).unwrap(), cfg);
        }
    }

    #[test]
    fn a_change_with_no_operation_is_named() {
        let r = pb::ApplyRequest {
            desired: Some(pb::apply_request::Desired::Delta(pb::Delta {
                changes: vec![
                    pb_from_change(&Change::DeleteRoute("10.0.0.0/8".into())),
                    pb::Change { op: None },
                ],
            })),
            ..Default::default()
        };
        let e = apply_from_pb(r).unwrap_err();
        assert_eq!(e[0].field, "changes[1]");
        assert!(apply_from_pb(pb::ApplyRequest::default()).is_err());
    }
}
