//! The `meshgate` binary: `run` (the gateway), `demo` (everything on loopback). Bad
//! configuration prints every problem and exits 64.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use clap::{Args, CommandFactory as _, Parser, Subcommand};
use gateway::app;
use gateway::cli::demo;
use gateway::config::{
    self, Config, ENV_CONFIG, EXIT_BAD_CONFIG, LogFormat, Overrides, ProcessEnv,
};
use gateway::control::admin::LogLevel;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// mimalloc: measured faster than glibc malloc on the request path (benches/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Create and inspect trust anchors, issuers and leaves (what `step certificate` does for
    /// Linkerd users).
    Certs {
        #[command(subcommand)]
        command: gateway::cli::certs::Command,
    },
    /// Print the Kubernetes objects that run meshgate as a cluster's multicluster gateway
    /// (`meshgate manifests | kubectl apply -f -`).
    Manifests(Box<gateway::cli::manifests::Options>),
    /// Preflight: check the configuration, credentials, identity, expiry and ports `run` would
    /// use; with `--remote`, check a running gateway as a mesh client. Exits 1 on any failure.
    Check(Box<CheckCommand>),
    /// Print the configuration reference (docs/configuration.md) generated from the code.
    #[command(hide = true)]
    ConfigReference,
}

#[derive(Args)]
struct CheckCommand {
    #[command(flatten)]
    check: gateway::cli::check::CheckArgs,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Validate, print the effective configuration and exit.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

/// The configuration flags of `run` (and `check`): `--config` plus one flag per key that has
/// one in the configuration table. clap takes each as text; the table parses it, so every bad
/// value is reported together with the file's and environment's problems (exit 64).
struct ConfigArgs {
    config: Option<PathBuf>,
    overrides: Overrides,
}

impl clap::FromArgMatches for ConfigArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut overrides = Overrides::new();
        for key in config::KEYS.iter().filter(|k| k.flag.is_some()) {
            if let Some(values) = matches.get_many::<String>(key.name) {
                let values: Vec<&str> = values.map(String::as_str).collect();
                overrides.push((key.name, values.join(",")));
            }
        }
        Ok(Self {
            config: matches.get_one::<PathBuf>("config").cloned(),
            overrides,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for ConfigArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = cmd.arg(
            clap::Arg::new("config")
                .long("config")
                .env(ENV_CONFIG)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("YAML configuration file"),
        );
        config::KEYS.iter().fold(cmd, |cmd, key| {
            let Some(flag) = key.flag else {
                return cmd;
            };
            let action = if key.repeatable {
                clap::ArgAction::Append
            } else {
                clap::ArgAction::Set
            };
            cmd.arg(
                clap::Arg::new(key.name)
                    .long(flag)
                    .value_name(key.name.to_ascii_uppercase())
                    .action(action)
                    .help(format!("{} Expects {}.", key.summary(), key.form)),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, config::Problems> {
        Config::load(self.config.as_deref(), &ProcessEnv, &self.overrides)
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(&args),
        Command::Certs { command } => gateway::cli::certs::run(command),
        Command::Check(args) => check(&args),
        Command::ConfigReference => {
            print!("{}", gateway::cli::reference::render(&Cli::command()));
            ExitCode::SUCCESS
        }
        Command::Manifests(options) => match gateway::cli::manifests::render(&options) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("meshgate manifests: invalid options:\n{problems}");
                ExitCode::from(EXIT_BAD_CONFIG as u8)
            }
        },
        Command::Demo {
            serve,
            listen,
            admin_listen,
        } => {
            let _ = init_logging("warn", LogFormat::Text);
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
    let config = match args.config.load() {
        Ok(config) => config,
        Err(problems) => return bad_config(&problems),
    };
    // Unusable credentials or policy are configuration problems too: one report, status 64.
    let mut problems = Vec::new();
    let identity = match app::certifier(&config) {
        Ok(Some(certifier)) => Some(Err(certifier)),
        Ok(None) => app::load_identity(&config)
            .map_err(|p| problems.extend(p.0))
            .ok()
            .map(Ok),
        Err(p) => {
            problems.extend(p.0);
            None
        }
    };
    if let Err(p) = app::load_policy(&config) {
        problems.extend(p.0);
    }
    let (Some(identity), true) = (identity, problems.is_empty()) else {
        return bad_config(&config::Problems(problems));
    };
    if args.check {
        print!("{}", config.to_yaml());
        return ExitCode::SUCCESS;
    }
    let log_level = init_logging(&config.log, config.log_format);
    tracing::info!(config = %config.to_yaml(), "effective configuration");
    let result = runtime(config.workers).and_then(|rt| {
        rt.block_on(async {
            let identity = match identity {
                Ok(identity) => identity,
                Err(certifier) => app::certify_identity(certifier).await,
            };
            let bound = app::start(&config, identity, Some(log_level)).await?;
            tokio::select! {
                _ = wait_for_signal() => {}
                _ = bound.shutdown_requested() => tracing::info!("shutdown requested on the admin port"),
            }
            tracing::info!(
                delay = %humantime::format_duration(config.drain_delay),
                grace = %humantime::format_duration(config.shutdown_grace_period),
                "draining: not ready; accepting until the delay is over"
            );
            if !bound
                .drain(config.drain_delay, config.shutdown_grace_period)
                .await
            {
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

fn check(args: &CheckCommand) -> ExitCode {
    use gateway::cli::check::{self, Output};
    let config = args.config.load();
    let rt = match runtime(Some(1)) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshgate check: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let report = if args.check.remote.is_some() {
        rt.block_on(check::remote(config, &args.check))
    } else {
        rt.block_on(check::local(config, &args.check))
    };
    match args.check.output {
        Output::Human => print!("{}", report.render()),
        Output::Json => println!("{}", report.to_json()),
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The data-plane runtime: one worker means a `current_thread` runtime on the main thread (no
/// work-stealing or cross-thread wakeups, as Linkerd runs its proxy on one core); more means a
/// `multi_thread` runtime with that many workers.
fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
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

/// The log filter behind `/proxy-log-level`.
struct ReloadableFilter(reload::Handle<EnvFilter, Registry>);

impl LogLevel for ReloadableFilter {
    fn current(&self) -> String {
        self.0.with_current(ToString::to_string).unwrap_or_default()
    }

    fn set(&self, filter: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// Installs the subscriber (stderr, text or JSON); returns the handle that changes its filter.
fn init_logging(filter: &str, format: LogFormat) -> Arc<dyn LogLevel> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
    Arc::new(ReloadableFilter(handle))
}

/// Whether log lines carry ANSI colour codes: only on a terminal (`kubectl logs` and log
/// collectors read files), and not when `NO_COLOR` is set to a non-empty value (no-color.org).
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".as_ref())));
        assert!(!colour(true, Some("1".as_ref())));
        assert!(!colour(false, None));
        assert!(!colour(false, Some("".as_ref())));
    }
}
