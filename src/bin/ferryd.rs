//! `ferryd`: the Ferry dataplane daemon. The hot path: `runtime::run` launches
//! `Worker::run` on each worker lcore, which calls `router::process` per packet.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Ferry: a DPDK dataplane for edge gateway nodes.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The YAML configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// Only validate the configuration and exit (0 if valid).
    #[arg(long)]
    check: bool,
    /// Write counters as JSON to this file every second and at exit.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// Log a line of counters every N seconds (0: never).
    #[arg(long, default_value_t = 0)]
    stats_interval: u64,
    /// Serve the gRPC API (and ferryctl) on this unix socket (mode 0600).
    #[arg(long, default_value = "/run/ferry/ferry.sock")]
    grpc_socket: PathBuf,
    /// Serve no unix socket.
    #[arg(long)]
    no_grpc_socket: bool,
    /// Also serve the gRPC API on TCP: with --tls-cert, --tls-key and --tls-client-ca
    /// (mTLS), or in plaintext on a loopback address only.
    #[arg(long, value_name = "ADDR:PORT")]
    grpc_listen: Option<std::net::SocketAddr>,
    /// The server's certificate (PEM) for --grpc-listen.
    #[arg(long, requires_all = ["tls_key", "tls_client_ca", "grpc_listen"])]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_client_ca"])]
    tls_key: Option<PathBuf>,
    /// Clients must present a certificate signed by this CA (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_client_ca: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if cli.check {
        match ferry_control::runtime::load(&cli.config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} ports, {} routes, {} workers)",
                    cli.config.display(),
                    c.ports.len(),
                    c.routes.len(),
                    c.workers()
                );
                return;
            }
            Err(e) => {
                eprintln!("ferryd: {e}");
                std::process::exit(2);
            }
        }
    }
    let tls = match (cli.tls_cert, cli.tls_key, cli.tls_client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Some(ferry_control::agent::TlsFiles {
            cert,
            key,
            client_ca,
        }),
        _ => None,
    };
    let opts = ferry_control::runtime::Options {
        config: cli.config,
        stats_file: cli.stats_file,
        stats_interval: Duration::from_secs(cli.stats_interval),
        agent: ferry_control::agent::AgentOptions {
            socket: (!cli.no_grpc_socket).then_some(cli.grpc_socket),
            listen: cli.grpc_listen,
            tls,
            metrics: cli.metrics_listen,
        },
    };
    if let Err(e) = ferry_control::runtime::run(opts) {
        eprintln!("ferryd: {e}");
        std::process::exit(1);
    }
}
