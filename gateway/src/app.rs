//! Startup order and ownership: identity → metrics → upstream → listeners → admin. `bind()`
//! returns `Bound` with the real addresses (port 0 works), which runs until drained.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use identity::certify::{Certifier, CertifyConfig};
use identity::source::{AnchorSource, FileSource, Material, Watcher};
use identity::{Credentials, IdentityName, TrustAnchors};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::config::{Config, Problems};
use crate::control::admin::{self, AdminState, LogLevel};
use crate::control::credentials::{self, Live};
use crate::control::drain::Drain;
use crate::control::policy::{self, Policy};
use crate::control::readiness::Readiness;
use crate::metrics::Metrics;
use crate::proxy::context::{Discovery, Handles, Shared};
use crate::proxy::listener;
use crate::socket;
use crate::telemetry::Tracing;
use crate::upstream;

/// The credentials and anchors to start with, validated, and how they are kept fresh.
pub struct LoadedIdentity {
    /// The trust anchors.
    pub anchors: TrustAnchors,
    /// The gateway's credentials.
    pub credentials: Credentials,
    /// How new material arrives while the gateway runs.
    pub reload: Reload,
}

/// Where new credentials come from while the gateway runs.
pub enum Reload {
    /// Nowhere: the material given at start stays (tests, `demo`).
    Static,
    /// The credential files, polled every `interval`.
    Files {
        /// Watches the files loaded at start.
        watcher: Box<Watcher>,
        /// Poll interval.
        interval: Duration,
    },
    /// Linkerd's identity service, renewed at 70 % of the lifetime.
    Certify(Box<Certifier>),
}

/// The trust anchors a config names.
///
/// # Errors
/// When it names none.
pub fn anchor_source(config: &Config) -> Result<AnchorSource, String> {
    let (_, _, anchors_path) = config.credential_paths();
    match (anchors_path, &config.trust_anchors_pem) {
        (Some(path), _) => Ok(AnchorSource::File(path)),
        (None, Some(pem)) => Ok(AnchorSource::Pem(pem.clone())),
        (None, None) => Err("no trust anchors configured".to_owned()),
    }
}

/// Loads the trust anchors and credentials the config names, and watches their files.
///
/// # Errors
/// Every problem found (unreadable files, bad PEM, chain not verifying, expired, key mismatch,
/// a certificate for another identity).
pub fn load_identity(config: &Config) -> Result<LoadedIdentity, Problems> {
    let (cert, key, _) = config.credential_paths();
    let anchors = anchor_source(config);
    let (Some(cert), Some(key)) = (cert, key) else {
        let mut problems = vec!["no certificate and key configured".to_owned()];
        problems.extend(anchors.err());
        return Err(Problems(problems));
    };
    let anchors = anchors.map_err(|e| Problems(vec![e]))?;
    let source = FileSource {
        cert: cert.clone(),
        key,
        anchors,
    };
    let (material, watcher) = source
        .load_and_watch()
        .map_err(|e| Problems(vec![format!("credentials {}: {e}", cert.display())]))?;
    if let Some(expected) = &config.identity_name
        && !material
            .credentials
            .identity()
            .as_str()
            .eq_ignore_ascii_case(expected.trim_end_matches('.'))
    {
        return Err(Problems(vec![format!(
            "credentials {} name {}, but the gateway's identity is configured as {expected}",
            cert.display(),
            material.credentials.identity()
        )]));
    }
    Ok(LoadedIdentity {
        anchors: material.anchors,
        credentials: material.credentials,
        reload: Reload::Files {
            watcher: Box::new(watcher),
            interval: config.credentials_poll_interval,
        },
    })
}

/// The authorization policy file a config names, loaded (`None` without a file: the policy is
/// `all-authenticated`).
///
/// # Errors
/// Every problem in the file.
pub fn load_policy(config: &Config) -> Result<Option<policy::Loaded>, Problems> {
    config
        .policy
        .as_deref()
        .map(|path| Policy::load(path).map_err(Problems))
        .transpose()
}

/// The identity-service client a config asks for (`identity_svc_addr`), if any.
///
/// # Errors
/// Missing local name or trust anchors, unusable anchors.
pub fn certifier(config: &Config) -> Result<Option<Certifier>, Problems> {
    let Some(addr) = &config.identity_svc_addr else {
        return Ok(None);
    };
    let mut problems = Vec::new();
    let local_name = match config
        .identity_name
        .as_deref()
        .map(str::parse::<IdentityName>)
    {
        Some(Ok(name)) => Some(name),
        Some(Err(e)) => {
            problems.push(format!("identity_name: {e}"));
            None
        }
        None => {
            problems.push(
                "identity_svc_addr needs identity_name (LINKERD2_PROXY_IDENTITY_LOCAL_NAME)"
                    .to_owned(),
            );
            None
        }
    };
    let anchors = anchor_source(config)
        .and_then(|source| source.load().map_err(|e| format!("trust anchors: {e}")));
    let anchors = anchors.map_err(|e| problems.push(e)).ok();
    let (Some(local_name), Some(anchors)) = (local_name, anchors) else {
        return Err(Problems(problems));
    };
    let certify = CertifyConfig {
        svc_addr: addr.clone(),
        svc_name: config.identity_svc_name.clone(),
        token_file: config.identity_token_file.clone(),
        local_name,
        min_refresh: config.identity_min_refresh,
        max_refresh: config.identity_max_refresh,
        timeout: config.connect_timeout.max(Duration::from_secs(10)),
        key_dir: config.identity_key_dir.clone(),
    };
    Certifier::new(certify, anchors)
        .map(Some)
        .map_err(|e| Problems(vec![format!("identity service client: {e}")]))
}

/// Obtains the first certificate from the identity service (waiting, with warnings, until it
/// answers); renewals follow once the gateway runs.
pub async fn certify_identity(certifier: Certifier) -> LoadedIdentity {
    let material = credentials::first_certify(&certifier).await;
    LoadedIdentity {
        anchors: material.anchors,
        credentials: material.credentials,
        reload: Reload::Certify(Box::new(certifier)),
    }
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
    drain: Drain,
    admin: Option<std::thread::JoinHandle<()>>,
    admin_stop: watch::Sender<bool>,
    shutdown: Arc<Notify>,
    tracing: Option<Arc<Tracing>>,
}

/// Loads identity from the files the config names, then [`start`]s.
///
/// # Errors
/// Bad identity material, or a listener that cannot bind.
pub async fn bind(config: &Config, log_level: Option<Arc<dyn LogLevel>>) -> anyhow::Result<Bound> {
    let invalid = |p: Problems| anyhow::anyhow!("invalid identity:\n{p}");
    let identity = match certifier(config).map_err(invalid)? {
        Some(certifier) => certify_identity(certifier).await,
        None => load_identity(config).map_err(invalid)?,
    };
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
        reload,
    } = identity;
    // Loaded once: the watcher starts from these bytes, so a change made before its first poll
    // is still applied.
    let (policy, policy_bytes) =
        match load_policy(config).map_err(|p| anyhow::anyhow!("invalid policy:\n{p}"))? {
            Some(loaded) => (loaded.policy, Some(loaded.bytes)),
            None => (Policy::default(), None),
        };
    let policy = Arc::new(policy::Current::new(policy));
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let material = Material {
        anchors,
        credentials,
    };
    let (live, tls) = Live::new(
        &material,
        config.tls_session_tickets,
        readiness.clone(),
        metrics.clone(),
    )
    .context("build TLS config")?;
    let expiry = material.credentials.not_after();
    let keep_fresh = async move {
        match reload {
            Reload::Static => {}
            Reload::Files { watcher, interval } => {
                credentials::watch_files(live, *watcher, interval).await;
            }
            Reload::Certify(certifier) => credentials::renew(live, *certifier, expiry).await,
        }
    };

    let data = socket::bind(config.listen)
        .with_context(|| format!("bind data listener {}", config.listen))?;
    let data = TcpListener::from_std(data).context("register data listener")?;
    let data_addr = data.local_addr()?;
    let admin_listener = socket::bind(config.admin_listen)
        .with_context(|| format!("bind admin listener {}", config.admin_listen))?;
    let admin_addr = admin_listener.local_addr()?;

    let (drain, drain_rx) = Drain::new(config.max_connections);
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let identity = material.credentials.identity().clone();
    // Built before the data listener accepts: a flood of connections could otherwise take the
    // descriptors the admin runtime needs, and leave the gateway without /ready or /metrics.
    let admin_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build admin runtime")?;
    // Span exports run on the admin runtime, away from the data plane.
    let tracing = match config.trace_options() {
        Some(options) => Some(Arc::new(
            Tracing::start(&options, admin_runtime.handle(), metrics.trace.clone())
                .map_err(|e| anyhow::anyhow!(e))?,
        )),
        None => None,
    };
    let handles = Handles {
        tracing: tracing.clone(),
        identity: identity.clone(),
        tls: tls.data,
        upstream_tls: tls.upstream,
        metrics: metrics.clone(),
        policy: policy.clone(),
        drain: drain_rx.clone(),
    };
    let shared = Shared::new(config, handles, Discovery::Dns).map_err(|e| anyhow::anyhow!(e))?;
    let shared = Arc::new(shared);
    // The policy file's splits and failover, now and at each reload.
    let follower = Arc::downgrade(&shared);
    policy.follow(move |p| {
        if let Some(shared) = follower.upgrade() {
            shared.upstream.set_traffic(p.splits(), p.failover());
        }
    });
    if let Some(destination) = shared.upstream.destination() {
        readiness.follow_destination(destination.reached());
        tokio::spawn(reach_destination(destination.clone()));
    }
    tokio::spawn(sweep_idle_upstreams(
        Arc::downgrade(&shared),
        config.pool_idle_timeout,
    ));
    tokio::spawn(listener::run(data, shared, drain.permits(), drain_rx));

    let shutdown = Arc::new(Notify::new());
    let state = Arc::new(AdminState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        tls: tls.admin,
        shutdown: config.shutdown_endpoint_enabled.then(|| shutdown.clone()),
        log_level,
    });
    let retain_idle = config.metrics_retain_idle;
    let watch_policy = config
        .policy
        .clone()
        .zip(policy_bytes)
        .map(|(path, loaded)| {
            policy::watch(
                path,
                loaded,
                policy,
                metrics.clone(),
                config.credentials_poll_interval,
            )
        });
    let admin = std::thread::Builder::new()
        .name("admin".to_owned())
        .spawn(move || {
            admin_runtime.block_on(async move {
                tokio::spawn(evict_idle_metrics(state.metrics.clone(), retain_idle));
                // Credential reloads and renewals run here, away from the data plane.
                tokio::spawn(keep_fresh);
                if let Some(watch_policy) = watch_policy {
                    tokio::spawn(watch_policy);
                }
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
        admin: Some(admin),
        admin_stop,
        shutdown,
        tracing,
    })
}

/// Connects to the Destination controller at startup, retrying with backoff until it answers,
/// so `/ready` and the log tell at once whether it is reachable (lookups reconnect by
/// themselves later).
async fn reach_destination(destination: Arc<upstream::Destination>) {
    for attempt in 0.. {
        match destination.connect().await {
            Ok(()) => return,
            Err(e) => {
                let delay = destination.backoff(attempt);
                tracing::warn!(error = %e, retry_in = ?delay, "destination controller not reached");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Closes idle upstream connections a few times per `pool_idle_timeout` (so an idle service
/// does not keep them open), until the gateway is gone.
async fn sweep_idle_upstreams(shared: std::sync::Weak<Shared>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let closed = shared.upstream.sweep_idle();
        if closed > 0 {
            tracing::debug!(closed, "closed idle upstream connections");
        }
    }
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

    /// Drains: `/ready` turns 503 at once; the listener keeps accepting for `delay` (so load
    /// balancers and remote probes notice first), then closes; open connections finish their
    /// in-flight requests (HTTP/2 GOAWAY, HTTP/1 close after the response, opaque streams run
    /// to their end) — all within `grace` of the start. Returns whether every connection
    /// finished in time.
    pub async fn drain(mut self, delay: Duration, grace: Duration) -> bool {
        let finished = self.drain.run(&self.readiness, delay, grace).await;
        if let Some(tracing) = self.tracing.take() {
            // The last spans go out while the admin runtime that exports them still runs.
            let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
        }
        let _ = self.admin_stop.send(true);
        if let Some(admin) = self.admin.take() {
            let _ = tokio::task::spawn_blocking(move || admin.join()).await;
        }
        finished
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.drain.signal_now();
        let _ = self.admin_stop.send(true);
    }
}
