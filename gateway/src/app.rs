//! Startup order and ownership: identity → metrics → upstream → listeners → admin. `bind()`
//! returns `Bound` with the real addresses (port 0 works), which runs until drained.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use identity::{Credentials, IdentityName, TrustAnchors, tls_config};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};

use crate::admin::{self, AdminState, LogLevel, Readiness};
use crate::config::{Config, Problems};
use crate::forward::upstream::Upstream;
use crate::listener;
use crate::metrics::Metrics;
use crate::resolve::Resolver;
use crate::target::{Suffixes, Target};

/// What every connection task shares; built once, immutable.
pub struct Shared {
    /// The gateway's own identity (for loop detection and `Forwarded: by=`).
    pub identity: IdentityName,
    /// The TLS server configuration.
    pub tls: Arc<ServerConfig>,
    /// The target allowlist.
    pub suffixes: Suffixes,
    /// Handshake deadline.
    pub detect_timeout: Duration,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Upstream clients.
    pub upstream: Upstream,
    /// Turns true when the gateway drains.
    pub drain: watch::Receiver<bool>,
}

/// The credentials and anchors named by a config, loaded and validated.
pub struct LoadedIdentity {
    /// The trust anchors.
    pub anchors: TrustAnchors,
    /// The gateway's credentials.
    pub credentials: Credentials,
}

/// Loads the trust anchors and credentials the config names.
///
/// # Errors
/// Every problem found (unreadable files, bad PEM, chain not verifying, expired, key mismatch).
pub fn load_identity(config: &Config) -> Result<LoadedIdentity, Problems> {
    let (cert, key, anchors_path) = config.credential_paths();
    let anchors = match (&anchors_path, &config.trust_anchors_pem) {
        (Some(path), _) => std::fs::read(path)
            .map_err(|e| format!("trust anchors {}: {e}", path.display()))
            .and_then(|pem| {
                TrustAnchors::from_pem(&path.display().to_string(), &pem)
                    .map_err(|e| format!("trust anchors: {e}"))
            }),
        (None, Some(pem)) => {
            TrustAnchors::from_pem("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", pem.as_bytes())
                .map_err(|e| format!("trust anchors: {e}"))
        }
        (None, None) => Err("no trust anchors configured".to_owned()),
    };
    let (Some(cert), Some(key)) = (cert, key) else {
        let mut problems = vec!["no certificate and key configured".to_owned()];
        problems.extend(anchors.err());
        return Err(Problems(problems));
    };
    let anchors = anchors.map_err(|e| Problems(vec![e]))?;
    let credentials = Credentials::load(&cert, &key, &anchors)
        .map_err(|e| Problems(vec![format!("credentials {}: {e}", cert.display())]))?;
    if let Some(expected) = &config.identity_name
        && !credentials
            .identity()
            .as_str()
            .eq_ignore_ascii_case(expected.trim_end_matches('.'))
    {
        return Err(Problems(vec![format!(
            "credentials {} name {}, but the gateway's identity is configured as {expected}",
            cert.display(),
            credentials.identity()
        )]));
    }
    Ok(LoadedIdentity {
        anchors,
        credentials,
    })
}

/// A running gateway.
pub struct Bound {
    /// The data listener's address.
    pub data_addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    /// The gateway's identity.
    pub identity: IdentityName,
    /// Metrics (also served on `/metrics`).
    pub metrics: Arc<Metrics>,
    /// Readiness (also served on `/ready`).
    pub readiness: Arc<Readiness>,
    drain: watch::Sender<bool>,
    permits: Arc<Semaphore>,
    max_connections: usize,
    admin: Option<std::thread::JoinHandle<()>>,
    admin_stop: watch::Sender<bool>,
    shutdown: Arc<Notify>,
}

/// Loads identity from the files the config names, then [`start`]s.
///
/// # Errors
/// Bad identity material, or a listener that cannot bind.
pub async fn bind(config: &Config, log_level: Option<Arc<dyn LogLevel>>) -> anyhow::Result<Bound> {
    let identity = load_identity(config).map_err(|p| anyhow::anyhow!("invalid identity:\n{p}"))?;
    start(config, identity, log_level).await
}

/// Binds both listeners and starts serving with `identity` on the current runtime (the admin
/// server gets its own thread and runtime).
///
/// # Errors
/// A listener that cannot bind, or credentials rustls refuses.
pub async fn start(
    config: &Config,
    identity: LoadedIdentity,
    log_level: Option<Arc<dyn LogLevel>>,
) -> anyhow::Result<Bound> {
    let LoadedIdentity {
        anchors,
        credentials,
    } = identity;
    let alpn = [
        tls_config::ALPN_TRANSPORT_HEADER,
        tls_config::ALPN_H2,
        tls_config::ALPN_HTTP1,
    ];
    let tls = Arc::new(
        tls_config::server_config(&credentials, &anchors, &alpn).context("build TLS config")?,
    );
    let admin_tls = Arc::new(
        tls_config::server_config(&credentials, &anchors, &[]).context("build admin TLS config")?,
    );
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    readiness.set_credentials(
        credentials.not_before(),
        credentials.not_after(),
        anchors.latest_expiry_unix(),
    );

    let suffixes = config.suffixes().context("gateway suffixes")?;
    let mut statics = Vec::new();
    for (name, addrs) in &config.endpoints {
        let target = Target::parse(name, &suffixes).with_context(|| format!("endpoint {name}"))?;
        statics.push((target, addrs.clone()));
    }
    let upstream = Upstream::new(
        Resolver::new(statics),
        config.connect_timeout,
        config.pool_idle_timeout,
        metrics.clone(),
    );

    let data = listener::bind(config.listen)
        .with_context(|| format!("bind data listener {}", config.listen))?;
    let data = TcpListener::from_std(data).context("register data listener")?;
    let data_addr = data.local_addr()?;
    let admin_listener = listener::bind(config.admin_listen)
        .with_context(|| format!("bind admin listener {}", config.admin_listen))?;
    let admin_addr = admin_listener.local_addr()?;

    let (drain, drain_rx) = watch::channel(false);
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let identity = credentials.identity().clone();
    let shared = Arc::new(Shared {
        identity: identity.clone(),
        tls,
        suffixes,
        detect_timeout: config.detect_timeout,
        metrics: metrics.clone(),
        upstream,
        drain: drain_rx.clone(),
    });
    let permits = Arc::new(Semaphore::new(config.max_connections));
    tokio::spawn(listener::run(data, shared, permits.clone(), drain_rx));

    let shutdown = Arc::new(Notify::new());
    let state = Arc::new(AdminState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        tls: admin_tls,
        shutdown: config.shutdown_endpoint_enabled.then(|| shutdown.clone()),
        log_level,
    });
    let retain_idle = config.metrics_retain_idle;
    let admin = std::thread::Builder::new()
        .name("admin".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "admin runtime failed to start"),
            };
            runtime.block_on(async move {
                tokio::spawn(evict_idle_metrics(state.metrics.clone(), retain_idle));
                match TcpListener::from_std(admin_listener) {
                    Ok(listener) => admin::serve(listener, state, admin_stop_rx).await,
                    Err(e) => tracing::error!(error = %e, "admin listener failed"),
                }
            });
        })
        .context("start admin thread")?;
    readiness.set_bound();
    tracing::info!(%data_addr, %admin_addr, %identity, "meshgate serving");
    Ok(Bound {
        data_addr,
        admin_addr,
        identity,
        metrics,
        readiness,
        drain,
        permits,
        max_connections: config.max_connections,
        admin: Some(admin),
        admin_stop,
        shutdown,
    })
}

/// Sweeps idle metric label sets a few times per retention period (at least once a minute).
async fn evict_idle_metrics(metrics: Arc<Metrics>, retain_idle: Duration) {
    let period = (retain_idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let removed = metrics.evict_idle(retain_idle);
        if removed > 0 {
            tracing::debug!(removed, "evicted idle metric label sets");
        }
    }
}

impl Bound {
    /// Resolves when `POST /shutdown` was accepted (the endpoint must be enabled).
    pub async fn shutdown_requested(&self) {
        self.shutdown.notified().await;
    }

    /// Drains: `/ready` turns 503, the listener stops accepting, open connections finish their
    /// in-flight requests (HTTP/2 GOAWAY, HTTP/1 close) — all within `grace`. Returns whether
    /// every connection finished in time.
    pub async fn drain(mut self, grace: Duration) -> bool {
        self.readiness.set_draining();
        let _ = self.drain.send(true);
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let finished = tokio::time::timeout(grace, self.permits.acquire_many(all))
            .await
            .is_ok();
        let _ = self.admin_stop.send(true);
        if let Some(admin) = self.admin.take() {
            let _ = tokio::task::spawn_blocking(move || admin.join()).await;
        }
        finished
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = self.drain.send(true);
        let _ = self.admin_stop.send(true);
    }
}
