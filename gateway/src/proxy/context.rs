//! `Shared`: what every connection task of the data path reads — the gateway's identity, the TLS
//! config of new handshakes, the allowlist, the policy in use, limits, metrics, the upstream side
//! and the drain signal. Built by [`Shared::new`] from a config and the running pieces, the one
//! constructor the app, the tests and the fuzz targets use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use identity::IdentityName;
use rustls::ServerConfig;
use tokio::sync::{Semaphore, watch};

use crate::config::Config;
use crate::control::policy;
use crate::metrics::Metrics;
use crate::target::{Suffixes, Target};
use crate::upstream::{self, ClientTls, Destination, Resolver, Upstream, discover::DnsOptions};

/// What every connection task shares; built once, immutable (the snapshots it holds are swapped
/// behind their handles).
pub struct Shared {
    /// The gateway's own identity (for loop detection and `Forwarded: by=`).
    pub identity: IdentityName,
    /// The TLS server configuration of new handshakes (replaced when credentials change).
    pub tls: watch::Receiver<Arc<ServerConfig>>,
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
    /// The authorization policy in use.
    pub policy: Arc<policy::Current>,
    /// Request limits and timeouts.
    pub limits: Limits,
    /// The access log, when one is configured.
    pub access_log: Option<crate::access_log::AccessLog>,
    /// Tracing, when a collector is configured.
    pub tracing: Option<Arc<crate::telemetry::Tracing>>,
}

/// The running pieces a [`Shared`] is made of, beside the config.
pub struct Handles {
    /// The gateway's identity (the name its credentials carry).
    pub identity: IdentityName,
    /// The TLS config of new handshakes.
    pub tls: watch::Receiver<Arc<ServerConfig>>,
    /// The client TLS of new upstream connections to meshed pods.
    pub upstream_tls: watch::Receiver<Arc<ClientTls>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The policy in use.
    pub policy: Arc<policy::Current>,
    /// The drain signal.
    pub drain: watch::Receiver<bool>,
    /// Tracing, when a collector is configured.
    pub tracing: Option<Arc<crate::telemetry::Tracing>>,
}

/// How names without static endpoints are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// DNS (`dns_servers`, else `/etc/resolv.conf`).
    Dns,
    /// Static endpoints only: every other name has none (fuzzing, tests that must not query).
    StaticOnly,
}

/// Request limits and timeouts (README "Timeouts and limits").
pub struct Limits {
    /// Requests in flight (until their response body ends).
    pub in_flight: Arc<Semaphore>,
    /// Largest request header section, bytes.
    pub max_header_list_size: usize,
    /// HTTP/2 streams per downstream connection.
    pub max_concurrent_streams: u32,
    /// HTTP/1 header read (and keep-alive idle) deadline.
    pub header_read_timeout: Duration,
    /// Keep HTTP/1 header-name case.
    pub preserve_header_case: bool,
    /// Tunnel `CONNECT` (else 405).
    pub http_connect: bool,
    /// Response-header deadline for targets without their own.
    pub response_timeout: Option<Duration>,
    /// Per-target response-header deadlines, by `name:port`.
    pub response_timeouts: HashMap<String, Duration>,
    /// Per-caller rate limits.
    pub rate_limits: crate::limit::RateLimits,
}

impl Shared {
    /// The data path's context for `config`.
    ///
    /// # Errors
    /// An allowlist entry or a static endpoint's name that is not usable (both are checked by
    /// `Config::validate`, so a validated config does not fail here).
    pub fn new(config: &Config, handles: Handles, discovery: Discovery) -> Result<Self, String> {
        let suffixes = config
            .suffixes()
            .map_err(|e| format!("gateway_suffixes: {e}"))?;
        let mut statics = Vec::new();
        for (name, addrs) in &config.endpoints {
            let target =
                Target::parse(name, &suffixes).map_err(|e| format!("endpoint {name}: {e}"))?;
            statics.push((target, addrs.clone()));
        }
        let resolver = match discovery {
            Discovery::StaticOnly => Resolver::statics_only(statics),
            Discovery::Dns => Resolver::new(
                statics,
                DnsOptions {
                    min_ttl: config.dns_min_ttl,
                    max_ttl: config.dns_max_ttl,
                    idle_timeout: config.dns_max_ttl.max(Duration::from_secs(600)),
                    servers: config.dns_servers.clone(),
                },
            ),
        };
        let destination = match (discovery, config.destination_options()) {
            (Discovery::Dns, Ok(Some(options))) => Some(Arc::new(
                Destination::new(
                    options,
                    handles.upstream_tls.clone(),
                    config.connect_timeout,
                    handles.metrics.clone(),
                )
                .map_err(|e| format!("destination_svc_addr: {e}"))?,
            )),
            (_, Err(e)) => return Err(e.join("; ")),
            _ => None,
        };
        let upstream = Upstream::new(
            resolver,
            destination,
            upstream::Options {
                connect_timeout: config.connect_timeout,
                pool_idle_timeout: config.pool_idle_timeout,
                preserve_header_case: config.preserve_header_case,
                max_header_list_size: config.max_header_list_size,
                protocols: config
                    .upstream_protocol
                    .iter()
                    .map(|(name, p)| (name.to_ascii_lowercase(), *p))
                    .collect(),
                splits: upstream::by_authority(&config.splits),
                failover: upstream::by_authority(&config.failover),
                failover_hold_down: config.failover_hold_down,
            },
            handles.upstream_tls,
            handles.metrics.clone(),
        );
        let access_log = match &config.access_log {
            Some(sink) => Some(
                crate::access_log::AccessLog::start(
                    sink,
                    config.access_log_buffer,
                    config.access_log_uri,
                    handles.metrics.access_log_dropped.clone(),
                )
                .map_err(|e| format!("access_log {sink}: {e}"))?,
            ),
            None => None,
        };
        Ok(Self {
            access_log,
            tracing: handles.tracing,
            identity: handles.identity,
            tls: handles.tls,
            suffixes,
            detect_timeout: config.detect_timeout,
            metrics: handles.metrics,
            upstream,
            drain: handles.drain,
            policy: handles.policy,
            limits: Limits::from_config(config),
        })
    }
}

impl Limits {
    /// The limits a config sets.
    pub fn from_config(config: &Config) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight_requests)),
            max_header_list_size: config.max_header_list_size,
            max_concurrent_streams: config.max_concurrent_streams,
            header_read_timeout: config.header_read_timeout,
            preserve_header_case: config.preserve_header_case,
            http_connect: config.http_connect,
            response_timeout: config.response_timeout,
            response_timeouts: config
                .response_timeouts
                .iter()
                .map(|(name, d)| (name.to_ascii_lowercase(), *d))
                .collect(),
            rate_limits: crate::limit::RateLimits::new(&config.rate_limits),
        }
    }

    /// The response deadline for `authority` (`name:port`).
    pub fn response_timeout_for(&self, authority: &str) -> Option<Duration> {
        self.response_timeouts
            .get(authority)
            .copied()
            .or(self.response_timeout)
    }
}
