//! The `meshgate` binary: `run` (the gateway), `demo` (everything on loopback). Bad
//! configuration prints every problem and exits 64.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use gateway::config::{
    self, Config, ENV_CONFIG, EXIT_BAD_CONFIG, LogFormat, Overrides, ProcessEnv,
};
use gateway::{app, demo};

#[derive(Parser)]
#[command(
    name = "meshgate",
    version,
    about = "mTLS multicluster gateway for Linkerd and plain mTLS HTTP clients"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run(Box<RunArgs>),
    /// Run the whole topology on loopback with a throw-away PKI and show what happens.
    Demo {
        /// Keep serving and print curl commands that work.
        #[arg(long)]
        serve: bool,
        /// Data listener.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Admin listener.
        #[arg(long, default_value = "127.0.0.1:0")]
        admin_listen: SocketAddr,
    },
}

#[derive(Args)]
struct RunArgs {
    /// YAML configuration file.
    #[arg(long, env = ENV_CONFIG)]
    config: Option<PathBuf>,
    /// Validate, print the effective configuration and exit.
    #[arg(long)]
    check: bool,
    /// Data listener address [default: 0.0.0.0:4143].
    #[arg(long)]
    listen: Option<String>,
    /// Admin listener address [default: 0.0.0.0:4191].
    #[arg(long)]
    admin_listen: Option<String>,
    /// Certificate chain (leaf first), PEM.
    #[arg(long)]
    cert: Option<String>,
    /// Private key, PEM.
    #[arg(long)]
    key: Option<String>,
    /// Trust-anchor bundle, PEM.
    #[arg(long)]
    trust_anchors: Option<String>,
    /// Directory with tls.crt, tls.key and ca.crt (a mounted kubernetes.io/tls secret).
    #[arg(long)]
    identity_dir: Option<String>,
    /// Allowed target DNS suffixes, comma-separated; "." allows every name.
    #[arg(long)]
    gateway_suffixes: Option<String>,
    /// Static endpoint NAME:PORT=IP:PORT (repeatable); overrides DNS for that target.
    #[arg(long = "endpoint", value_name = "NAME:PORT=IP:PORT")]
    endpoints: Vec<String>,
    /// Log filter (e.g. info, meshgate=debug).
    #[arg(long)]
    log: Option<String>,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
}

impl RunArgs {
    fn overrides(&self) -> Overrides {
        let mut out: Overrides = Vec::new();
        let flags = [
            ("listen", &self.listen),
            ("admin_listen", &self.admin_listen),
            ("cert", &self.cert),
            ("key", &self.key),
            ("trust_anchors", &self.trust_anchors),
            ("identity_dir", &self.identity_dir),
            ("gateway_suffixes", &self.gateway_suffixes),
            ("log", &self.log),
            ("log_format", &self.log_format),
        ];
        for (key, value) in flags {
            if let Some(value) = value {
                out.push((key, value.clone()));
            }
        }
        if !self.endpoints.is_empty() {
            out.push(("endpoints", self.endpoints.join(",")));
        }
        out
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(&args),
        Command::Demo {
            serve,
            listen,
            admin_listen,
        } => {
            init_logging("warn", LogFormat::Text);
            let options = demo::DemoOptions {
                serve,
                listen,
                admin_listen,
            };
            match runtime(None).and_then(|rt| rt.block_on(demo::run(options))) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("meshgate demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(args: &RunArgs) -> ExitCode {
    let bad_config = |problems: &config::Problems| {
        eprintln!("meshgate: invalid configuration:\n{problems}");
        ExitCode::from(EXIT_BAD_CONFIG as u8)
    };
    let config = match Config::load(args.config.as_deref(), &ProcessEnv, &args.overrides()) {
        Ok(config) => config,
        Err(problems) => return bad_config(&problems),
    };
    if args.check {
        if let Err(problems) = app::load_identity(&config) {
            return bad_config(&problems);
        }
        print!("{}", config.to_yaml());
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log, config.log_format);
    tracing::info!(config = %config.to_yaml(), "effective configuration");
    let result = runtime(config.workers).and_then(|rt| {
        rt.block_on(async {
            let bound = app::bind(&config).await?;
            wait_for_signal().await;
            tracing::info!(grace = %humantime::format_duration(config.shutdown_grace_period), "draining");
            if !bound.drain(config.shutdown_grace_period).await {
                tracing::warn!("grace period over with connections still open");
            }
            anyhow::Ok(())
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("meshgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    Ok(builder
        .enable_all()
        .thread_name("meshgate-worker")
        .build()?)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
