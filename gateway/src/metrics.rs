//! Prometheus metrics with Linkerd's names and labels (so Viz and its dashboards work), plus the
//! gateway's own families. Label values are shared strings; handles are bound once per connection.

mod conn;
mod control;
mod credentials;
mod format;
mod labels;
mod process;
mod tracked;

use std::fmt::Write as _;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use identity::Refusal;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use conn::{ByteMeter, ConnRecord, Metered};
pub use control::{
    DestinationMetrics, FailoverLabels, GrpcLabels, MethodLabels, SplitLabels, UpdateLabels,
};
pub use credentials::{AnchorLabels, IdentityMetrics, ResultLabels};
pub use format::{Format, to_prometheus};
pub use labels::*;
pub use process::BuildLabels;
pub use tracked::{CoarseClock, Tracked};

/// All metric families, registered once.
pub struct Metrics {
    registry: Registry,
    clock: Arc<CoarseClock>,
    /// `request_total`.
    pub requests: Tracked<RouteLabels, Counter>,
    /// `response_total`.
    pub responses: Tracked<ResponseLabels, Counter>,
    /// `response_latency_ms`.
    pub latency: Tracked<LatencyLabels, Histogram>,
    /// `tcp_open_total`.
    pub tcp_open: Tracked<TcpLabels, Counter>,
    /// `tcp_close_total`.
    pub tcp_close: Tracked<CloseLabels, Counter>,
    /// `tcp_open_connections`.
    pub tcp_open_connections: Tracked<TcpLabels, Gauge>,
    /// `tcp_read_bytes_total`.
    pub tcp_read_bytes: Tracked<TcpLabels, Counter>,
    /// `tcp_write_bytes_total`.
    pub tcp_write_bytes: Tracked<TcpLabels, Counter>,
    /// `inbound_tcp_transport_header_connections_total`.
    pub transport_headers: Tracked<TransportHeaderLabels, Counter>,
    /// `inbound_http_authz_allow_total`.
    pub http_authz_allow: Tracked<AuthzLabels, Counter>,
    /// `inbound_tcp_authz_allow_total`.
    pub tcp_authz_allow: Tracked<AuthzLabels, Counter>,
    /// `inbound_http_authz_deny_total`.
    pub http_authz_deny: Tracked<DenyLabels, Counter>,
    /// `inbound_tcp_authz_deny_total`.
    pub tcp_authz_deny: Tracked<DenyLabels, Counter>,
    /// `gateway_policy_reloads_total{result}`.
    pub policy_reloads: Family<ResultLabels, Counter>,
    /// `outbound_endpoint_ejections_total{authority}`.
    pub ejections: Tracked<AuthorityLabels, Counter>,
    /// `outbound_endpoints{authority}`: endpoints the balancer has for a target.
    pub endpoints: Family<AuthorityLabels, Gauge>,
    /// `outbound_pool_idle_connections{authority}`: idle pooled HTTP/1 connections.
    pub pool_idle: Family<AuthorityLabels, Gauge>,
    /// `outbound_connect_errors_total{authority,reason}`.
    pub connect_errors: Tracked<ConnectErrorLabels, Counter>,
    /// `outbound_http_version_fallbacks_total{authority,speaks}`: endpoints found to speak only
    /// the other HTTP version.
    pub version_fallbacks: Tracked<FallbackLabels, Counter>,
    /// `outbound_connection_wait_ms`: time a request waited for an upstream connection.
    pub connection_wait: Histogram,
    /// `gateway_requests_shed_total`: requests refused by the in-flight limit.
    pub shed: Counter,
    /// `gateway_http1_parked_connections`: idle HTTP/1 connections that gave back their HTTP
    /// buffers until their next request.
    pub parked: Gauge,
    /// `inbound_tcp_errors_total{error}`.
    pub tcp_errors: Family<ErrorLabels, Counter>,
    /// `gateway_handshakes_refused_total{reason}`.
    pub refused: Family<RefusalLabels, Counter>,
    /// `control_identity_*`: the credentials in use and their refreshes.
    pub identity: IdentityMetrics,
    /// `control_destination_*` and the profile splits.
    pub destination: DestinationMetrics,
    /// `gateway_rate_limited_total{rule}`: requests refused with 429 by a rate limit.
    pub rate_limited: Family<RuleLabels, Counter>,
    /// `gateway_access_log_dropped_total`: access-log lines dropped on a full queue.
    pub access_log_dropped: Counter,
    /// `gateway_failover_events_total{authority, event, backend}`: failovers and failbacks.
    pub failover_events: Family<FailoverLabels, Counter>,
    /// `gateway_trace_*`: spans exported and export failures.
    pub trace: crate::telemetry::TraceMetrics,
}

/// One session's metric handles for its current route (status 200), so recording a request
/// needs no label-set lookup; see [`Metrics::record_response`].
#[derive(Default)]
pub struct RouteCache(std::sync::Mutex<Option<CachedRoute>>);

struct CachedRoute {
    authority: Label,
    dst: DstLabels,
    allowed_by: Label,
    epoch: u64,
    requests: Counter,
    responses: Counter,
    latency: Histogram,
    authz: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        let responses = Family::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let tcp_open = Family::default();
        let tcp_close = Family::default();
        let tcp_open_connections = Family::default();
        let tcp_read_bytes = Family::default();
        let tcp_write_bytes = Family::default();
        let transport_headers = Family::default();
        let http_authz_allow = Family::default();
        let tcp_authz_allow = Family::default();
        let http_authz_deny = Family::default();
        let tcp_authz_deny = Family::default();
        let policy_reloads = Family::default();
        let ejections = Family::default();
        let endpoints = Family::default();
        let pool_idle = Family::default();
        let connect_errors = Family::default();
        let version_fallbacks = Family::default();
        let connection_wait = latency_histogram();
        let shed = Counter::default();
        let parked = Gauge::default();
        let tcp_errors = Family::default();
        let refused = Family::default();
        let r = &mut registry;
        r.register(
            "request",
            "Requests forwarded (Linkerd's request_total)",
            requests.clone(),
        );
        r.register("response", "Responses sent downstream", responses.clone());
        r.register(
            "response_latency_ms",
            "Time to response headers, in milliseconds",
            latency.clone(),
        );
        r.register("tcp_open", "Connections opened", tcp_open.clone());
        r.register("tcp_close", "Connections closed", tcp_close.clone());
        r.register(
            "tcp_open_connections",
            "Connections open now",
            tcp_open_connections.clone(),
        );
        r.register(
            "tcp_read_bytes",
            "Bytes read from sockets",
            tcp_read_bytes.clone(),
        );
        r.register(
            "tcp_write_bytes",
            "Bytes written to sockets",
            tcp_write_bytes.clone(),
        );
        r.register(
            "inbound_tcp_transport_header_connections",
            "Connections that sent a transport header",
            transport_headers.clone(),
        );
        r.register(
            "inbound_http_authz_allow",
            "HTTP requests authorized",
            http_authz_allow.clone(),
        );
        r.register(
            "inbound_tcp_authz_allow",
            "Opaque connections authorized",
            tcp_authz_allow.clone(),
        );
        r.register(
            "inbound_http_authz_deny",
            "HTTP requests the policy denies (mode=audit: allowed, would be denied)",
            http_authz_deny.clone(),
        );
        r.register(
            "inbound_tcp_authz_deny",
            "Opaque connections the policy denies (mode=audit: allowed, would be denied)",
            tcp_authz_deny.clone(),
        );
        r.register(
            "outbound_endpoint_ejections",
            "Endpoints taken out of balancing after a failed connect",
            ejections.clone(),
        );
        r.register(
            "outbound_endpoints",
            "Endpoints the balancer has for a target",
            endpoints.clone(),
        );
        r.register(
            "outbound_pool_idle_connections",
            "Idle pooled HTTP/1 connections per target",
            pool_idle.clone(),
        );
        r.register(
            "outbound_connect_errors",
            "Failed upstream connects, by reason",
            connect_errors.clone(),
        );
        r.register(
            "outbound_http_version_fallbacks",
            "Endpoints found to speak only the other HTTP version (the request went again in it)",
            version_fallbacks.clone(),
        );
        r.register(
            "outbound_connection_wait_ms",
            "Time a request waited for an upstream connection, in milliseconds",
            connection_wait.clone(),
        );
        r.register(
            "gateway_requests_shed",
            "Requests refused with 503 by the in-flight limit",
            shed.clone(),
        );
        r.register(
            "gateway_http1_parked_connections",
            "Idle HTTP/1 connections holding no HTTP buffers until their next request",
            parked.clone(),
        );
        r.register(
            "gateway_policy_reloads",
            "Authorization policy file reloads, by result",
            policy_reloads.clone(),
        );
        r.register(
            "inbound_tcp_errors",
            "Downstream connections that failed, by error",
            tcp_errors.clone(),
        );
        r.register(
            "gateway_handshakes_refused",
            "Downstream connections refused before any request, by reason",
            refused.clone(),
        );
        let identity = IdentityMetrics::default();
        r.register(
            "control_identity_cert_expiration_timestamp_seconds",
            "When the certificate in use expires (Unix seconds)",
            identity.cert_expiration.clone(),
        );
        r.register(
            "control_identity_cert_refresh_timestamp_seconds",
            "When the certificate in use was loaded (Unix seconds)",
            identity.cert_refresh.clone(),
        );
        r.register(
            "control_identity_cert_refreshes",
            "Certificate loads and reloads, by result",
            identity.refreshes.clone(),
        );
        r.register(
            "control_identity_trust_anchor_expiration_timestamp_seconds",
            "When each trust anchor in the bundle expires (Unix seconds)",
            identity.anchor_expiration.clone(),
        );
        for result in ["ok", "error"] {
            let _ = identity.refreshes.get_or_create(&ResultLabels { result });
            let _ = policy_reloads.get_or_create(&ResultLabels { result });
        }
        let destination = DestinationMetrics::default();
        destination.register(r);
        let access_log_dropped = Counter::default();
        r.register(
            "gateway_access_log_dropped",
            "Access-log lines dropped because the writer's queue was full",
            access_log_dropped.clone(),
        );
        let trace = crate::telemetry::TraceMetrics::default();
        r.register(
            "gateway_trace_spans_exported",
            "Spans the collector accepted",
            trace.exported.clone(),
        );
        r.register(
            "gateway_trace_export_failures",
            "Span exports that failed (their spans are dropped)",
            trace.failures.clone(),
        );
        let failover_events = Family::default();
        r.register(
            "gateway_failover_events",
            "Failovers and failbacks of a target's traffic, by where it goes",
            failover_events.clone(),
        );
        let rate_limited = Family::default();
        r.register(
            "gateway_rate_limited",
            "Requests refused with 429 by a rate limit, by rule",
            rate_limited.clone(),
        );
        process::register(r);
        let clock = Arc::new(CoarseClock::new());
        let metrics = Self {
            identity,
            destination,
            rate_limited,
            access_log_dropped,
            failover_events,
            trace,
            clock: clock.clone(),
            registry,
            requests: Tracked::new(requests, &clock),
            responses: Tracked::new(responses, &clock),
            latency: Tracked::new(latency, &clock),
            tcp_open: Tracked::new(tcp_open, &clock),
            tcp_close: Tracked::new(tcp_close, &clock),
            tcp_open_connections: Tracked::new(tcp_open_connections, &clock),
            tcp_read_bytes: Tracked::new(tcp_read_bytes, &clock),
            tcp_write_bytes: Tracked::new(tcp_write_bytes, &clock),
            transport_headers: Tracked::new(transport_headers, &clock),
            http_authz_allow: Tracked::new(http_authz_allow, &clock),
            tcp_authz_allow: Tracked::new(tcp_authz_allow, &clock),
            http_authz_deny: Tracked::new(http_authz_deny, &clock),
            tcp_authz_deny: Tracked::new(tcp_authz_deny, &clock),
            policy_reloads,
            ejections: Tracked::new(ejections, &clock),
            endpoints,
            pool_idle,
            connect_errors: Tracked::new(connect_errors, &clock),
            version_fallbacks: Tracked::new(version_fallbacks, &clock),
            connection_wait,
            shed,
            parked,
            tcp_errors,
            refused,
        };
        // Pre-create every refusal reason so dashboards see zeros, not gaps.
        for reason in Refusal::ALL {
            let _ = metrics.refused.get_or_create(&RefusalLabels {
                reason: reason.as_str(),
            });
        }
        metrics
    }

    /// Removes every label set unused for `idle`, except transport label sets of connections
    /// still open. Returns how many were removed.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let now = self.clock.tick();
        self.evict_unused_since(now.saturating_sub(idle.as_secs()))
    }

    /// Removes every label set not used at or after `cutoff` (Unix seconds), except transport
    /// label sets of connections still open.
    fn evict_unused_since(&self, cutoff: u64) -> usize {
        let open = |labels: &TcpLabels| {
            self.tcp_open_connections
                .family
                .get(labels)
                .is_some_and(|g| g.get() > 0)
        };
        self.requests.evict(cutoff, |_| false)
            + self.responses.evict(cutoff, |_| false)
            + self.latency.evict(cutoff, |_| false)
            + self.transport_headers.evict(cutoff, |_| false)
            + self.http_authz_allow.evict(cutoff, |_| false)
            + self.tcp_authz_allow.evict(cutoff, |_| false)
            + self.http_authz_deny.evict(cutoff, |_| false)
            + self.ejections.evict(cutoff, |_| false)
            + self.connect_errors.evict(cutoff, |_| false)
            + self.version_fallbacks.evict(cutoff, |_| false)
            + self.tcp_authz_deny.evict(cutoff, |_| false)
            + self.tcp_close.evict(cutoff, |l| open(&l.tcp))
            + self.tcp_open.evict(cutoff, open)
            + self.tcp_read_bytes.evict(cutoff, open)
            + self.tcp_write_bytes.evict(cutoff, open)
            + self.tcp_open_connections.evict(cutoff, open)
    }

    /// Records one answered request of `client_id` to `authority` (empty when no target was
    /// accepted): `request_total`, `response_total`, `response_latency_ms`, and
    /// `inbound_http_authz_allow_total` with what `allowed` it (none when the request was
    /// refused before authorization). The common case — a
    /// 200 on the session's current route — uses handles cached in `cache`, hashing no label set;
    /// the cache is refreshed (and its label sets marked as used) whenever the eviction clock ticks.
    pub fn record_response(
        &self,
        cache: &RouteCache,
        (authority, dst): (&Label, &DstLabels),
        client_id: &Label,
        allowed: Option<&Allowed>,
        status: u16,
        latency_ms: f64,
    ) {
        let epoch = self.clock.now();
        if let (200, Some(allowed)) = (status, allowed) {
            let cached = cache.0.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(hit) = cached.as_ref().filter(|c| {
                c.epoch == epoch
                    && c.authority == *authority
                    && c.allowed_by == allowed.name
                    && c.dst == *dst
            }) {
                hit.requests.inc();
                hit.latency.observe(latency_ms);
                hit.responses.inc();
                hit.authz.inc();
                return;
            }
        }
        let route = RouteLabels {
            direction: "outbound",
            authority: authority.clone(),
            tls: "true",
            client_id: client_id.clone(),
            dst: dst.clone(),
        };
        let requests = self.requests.get_owned(&route);
        let latency = self.latency.get_owned(&LatencyLabels {
            route: route.clone(),
            status_code: status,
        });
        let responses = self.responses.get_owned(&ResponseLabels {
            route,
            status_code: status,
            classification: if status >= 500 { "failure" } else { "success" },
        });
        requests.inc();
        latency.observe(latency_ms);
        responses.inc();
        let Some(allowed) = allowed else {
            return;
        };
        let authz = self
            .http_authz_allow
            .get_owned(&AuthzLabels::allowed(allowed, client_id.clone()));
        authz.inc();
        if status == 200 {
            *cache.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(CachedRoute {
                authority: authority.clone(),
                dst: dst.clone(),
                allowed_by: allowed.name.clone(),
                epoch,
                requests,
                responses,
                latency,
                authz,
            });
        }
    }

    /// Counts an endpoint ejection.
    pub fn endpoint_ejected(&self, authority: &Label) {
        self.ejections
            .get(&AuthorityLabels {
                authority: authority.clone(),
            })
            .inc();
    }

    /// Counts an endpoint found to speak only `speaks` (`http1`, `http2`).
    pub fn version_fallback(&self, authority: &Label, speaks: &'static str) {
        self.version_fallbacks
            .get(&FallbackLabels {
                authority: authority.clone(),
                speaks,
            })
            .inc();
    }

    /// Counts a policy file reload.
    pub fn policy_reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.policy_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a denial (or, in audit mode, a request or connection that would be denied).
    pub fn authz_denied(&self, http: bool, labels: &DenyLabels) {
        let family = if http {
            &self.http_authz_deny
        } else {
            &self.tcp_authz_deny
        };
        family.get(labels).inc();
    }

    /// Counts a downstream connection that failed with Linkerd's `error` label.
    pub fn tcp_error(&self, error: &'static str) {
        self.tcp_errors.get_or_create(&ErrorLabels { error }).inc();
    }

    /// Counts a refused connection; returns whether this reason is new (first occurrence).
    pub fn refuse(&self, refused: Refused) -> bool {
        let reason = refused.label();
        self.refused.get_or_create(&RefusalLabels { reason }).inc() == 0
    }

    /// The current value of `gateway_handshakes_refused_total{reason}`.
    pub fn refused_count(&self, reason: &'static str) -> u64 {
        self.refused.get_or_create(&RefusalLabels { reason }).get()
    }

    /// OpenMetrics text, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
    }

    /// The registry in `format` (what `/metrics` answers).
    pub fn encode_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.encode(),
            Format::Prometheus => to_prometheus(&self.encode()),
        }
    }

    /// Opens a transport record: counts the open, returns a guard that counts the close.
    pub fn open_connection(self: &Arc<Self>, labels: TcpLabels) -> ConnRecord {
        self.tcp_open.get(&labels).inc();
        self.tcp_open_connections.get(&labels).inc();
        ConnRecord {
            read: self.tcp_read_bytes.get_owned(&labels),
            write: self.tcp_write_bytes.get_owned(&labels),
            metrics: self.clone(),
            labels,
            errno: "",
        }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_MS)
}

#[cfg(test)]
mod tests;
