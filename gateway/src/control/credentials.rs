//! The credentials in use and how they change while the gateway runs: reloads of the credential
//! files and renewals from Linkerd's identity service. New material is validated first, then
//! becomes the TLS configuration of new handshakes; open connections keep the one they began
//! with. Readiness and the `control_identity_*` metrics follow every change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use identity::certify::Certifier;
use identity::source::{Change, Material, Watcher};
use identity::tls_config;
use rustls::ServerConfig;
use tokio::sync::watch;

use super::readiness::Readiness;
use crate::metrics::Metrics;
use crate::upstream::ClientTls;

/// ALPN of the data listener, in preference order.
pub const DATA_ALPN: [&[u8]; 3] = [
    tls_config::ALPN_TRANSPORT_HEADER,
    tls_config::ALPN_H2,
    tls_config::ALPN_HTTP1,
];

/// The TLS configurations new handshakes use, as receivers.
#[derive(Clone)]
pub struct TlsConfigs {
    /// The data listener's (ALPN as [`DATA_ALPN`]).
    pub data: watch::Receiver<Arc<ServerConfig>>,
    /// The admin listener's mTLS side (no ALPN).
    pub admin: watch::Receiver<Arc<ServerConfig>>,
    /// New upstream connections to meshed pods.
    pub upstream: watch::Receiver<Arc<ClientTls>>,
}

/// Installs material: builds the server configs and the upstream client config and publishes
/// them, with readiness and metrics.
pub struct Live {
    data: watch::Sender<Arc<ServerConfig>>,
    admin: watch::Sender<Arc<ServerConfig>>,
    upstream: watch::Sender<Arc<ClientTls>>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    /// Whether the data listener issues TLS 1.3 session tickets.
    tickets: bool,
    /// The low-lifetime warning was logged for the certificate in use.
    warned: AtomicBool,
}

impl Live {
    /// Starts with `material` (already validated).
    ///
    /// # Errors
    /// When rustls refuses the credentials.
    pub fn new(
        material: &Material,
        tickets: bool,
        readiness: Arc<Readiness>,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Self>, TlsConfigs), identity::Error> {
        let (data, admin, upstream) = configs(material, tickets)?;
        let (data, data_rx) = watch::channel(data);
        let (admin, admin_rx) = watch::channel(admin);
        let (upstream, upstream_rx) = watch::channel(upstream);
        let live = Arc::new(Self {
            data,
            admin,
            upstream,
            readiness,
            metrics,
            tickets,
            warned: AtomicBool::new(false),
        });
        live.record(material);
        Ok((
            live,
            TlsConfigs {
                data: data_rx,
                admin: admin_rx,
                upstream: upstream_rx,
            },
        ))
    }

    /// Makes `material` the credentials of new handshakes.
    ///
    /// # Errors
    /// When rustls refuses the credentials (the old ones stay).
    pub fn install(&self, material: &Material) -> Result<(), identity::Error> {
        let (data, admin, upstream) = configs(material, self.tickets)?;
        self.data.send_replace(data);
        self.admin.send_replace(admin);
        self.upstream.send_replace(upstream);
        self.record(material);
        Ok(())
    }

    fn record(&self, material: &Material) {
        let creds = &material.credentials;
        self.readiness.set_credentials(
            creds.not_before(),
            creds.not_after(),
            material.anchors.latest_expiry_unix(),
        );
        self.metrics.identity.installed(
            identity::source::unix_seconds(creds.not_after()),
            &material.anchors,
        );
        self.warned.store(false, Ordering::Relaxed);
        self.check_lifetime(SystemTime::now());
    }

    /// A refresh that failed: counted and logged once, the material in use stays.
    pub fn refused(&self, what: &str, error: &dyn std::fmt::Display) {
        self.metrics.identity.failed();
        tracing::error!(%error, "{what} refused; the credentials in use stay");
    }

    /// Warns (once per certificate) when less than 20 % of its lifetime is left.
    pub fn check_lifetime(&self, now: SystemTime) {
        let (not_before, not_after) = self.readiness.cert_validity();
        let total = not_after.saturating_sub(not_before).max(0);
        let left = not_after
            .saturating_sub(identity::source::unix_seconds(now))
            .max(0);
        if left * 5 < total && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                expires_in_seconds = left,
                lifetime_seconds = total,
                "the gateway certificate has less than 20% of its lifetime left; renew it"
            );
        }
    }
}

/// The data and admin server configs and the upstream client config of `material`.
type Configs = (Arc<ServerConfig>, Arc<ServerConfig>, Arc<ClientTls>);

/// Session tickets issued per full handshake when they are on. A caller resumes one new
/// connection per ticket and every resumed handshake brings a fresh one, so one is enough; rustls
/// would send two, and each is an AEAD seal and a TLS record on every handshake.
const TICKETS_PER_HANDSHAKE: usize = 1;

/// `tickets`: whether the data listener issues TLS 1.3 session tickets (`tls_session_tickets`).
fn configs(material: &Material, tickets: bool) -> Result<Configs, identity::Error> {
    let (creds, anchors) = (&material.credentials, &material.anchors);
    let mut data = tls_config::server_config(creds, anchors, &DATA_ALPN)?;
    data.send_tls13_tickets = if tickets { TICKETS_PER_HANDSHAKE } else { 0 };
    let admin = tls_config::server_config(creds, anchors, &[])?;
    let upstream = ClientTls::new(creds, anchors)?;
    Ok((Arc::new(data), Arc::new(admin), Arc::new(upstream)))
}

/// Polls the credential files every `interval` and installs what changed and validates.
pub async fn watch_files(live: Arc<Live>, mut watcher: Watcher, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match watcher.poll() {
            None => {}
            Some(Change::Updated(material)) => match live.install(&material) {
                Ok(()) => tracing::info!(
                    identity = %material.credentials.identity(),
                    not_after = ?material.credentials.not_after(),
                    anchors = material.anchors.anchors().len(),
                    "credentials reloaded"
                ),
                Err(e) => live.refused("credentials reload", &e),
            },
            Some(Change::Refused(e)) => live.refused("credentials reload", &e),
        }
        live.check_lifetime(SystemTime::now());
    }
}

/// Obtains the first credentials from the identity service, retrying every `min_refresh`
/// (warning each time) until it answers.
pub async fn first_certify(certifier: &Certifier) -> Material {
    loop {
        match certifier.certify().await {
            Ok(material) => return material,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    retry_in = ?certifier.config().min_refresh,
                    "waiting for an identity certificate"
                );
                tokio::time::sleep(certifier.config().min_refresh).await;
            }
        }
    }
}

/// Renews credentials from the identity service at 70 % of their remaining lifetime, retrying
/// after `min_refresh` on error.
pub async fn renew(live: Arc<Live>, certifier: Certifier, mut expiry: SystemTime) {
    let mut delay = certifier.refresh_in(expiry, SystemTime::now());
    loop {
        tokio::time::sleep(delay).await;
        match certifier.certify().await {
            Ok(material) => match live.install(&material) {
                Ok(()) => {
                    expiry = material.credentials.not_after();
                    delay = certifier.refresh_in(expiry, SystemTime::now());
                    tracing::info!(not_after = ?expiry, next_in = ?delay, "identity certificate renewed");
                }
                Err(e) => {
                    live.refused("identity certificate", &e);
                    delay = certifier.config().min_refresh;
                }
            },
            Err(e) => {
                live.refused("identity certificate renewal", &e);
                delay = certifier.config().min_refresh;
            }
        }
        live.check_lifetime(SystemTime::now());
    }
}
