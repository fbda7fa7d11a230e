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
    let opts = ferry_control::runtime::Options {
        config: cli.config,
        stats_file: cli.stats_file,
        stats_interval: Duration::from_secs(cli.stats_interval),
    };
    if let Err(e) = ferry_control::runtime::run(opts) {
        eprintln!("ferryd: {e}");
        std::process::exit(1);
    }
}
