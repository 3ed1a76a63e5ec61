//! Prometheus metrics with Linkerd's names and labels (so Viz and its dashboards work), plus the
//! gateway's own families. Label values are shared strings; handles are bound once per connection.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use identity::Refusal;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Linkerd's latency buckets, in milliseconds.
pub const LATENCY_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// A shared string label value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Label(pub Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

impl From<&str> for Label {
    fn from(s: &str) -> Self {
        Label(Arc::from(s))
    }
}

/// Labels of the HTTP families: Linkerd's gateway reports them on its outbound side.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    /// Always `outbound` (the gateway forwards through its outbound side, spec §9.1).
    pub direction: &'static str,
    /// The target, `name:port`; empty when the request named no acceptable target.
    pub authority: Label,
    /// Always `true`: every caller is mTLS-authenticated.
    pub tls: &'static str,
    /// The caller's identity.
    pub client_id: Label,
}

/// `RouteLabels` plus the outcome.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResponseLabels {
    /// The route.
    #[prometheus(flatten)]
    pub route: RouteLabels,
    /// The HTTP status sent downstream.
    pub status_code: u16,
    /// `success` or `failure` (5xx).
    pub classification: &'static str,
}

/// `RouteLabels` plus the status (Linkerd's `response_latency_ms` has no classification).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LatencyLabels {
    /// The route.
    #[prometheus(flatten)]
    pub route: RouteLabels,
    /// The HTTP status sent downstream.
    pub status_code: u16,
}

/// Labels of the transport families.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TcpLabels {
    /// `inbound` for accepted connections, `outbound` for upstream ones.
    pub direction: &'static str,
    /// `src` for accepted connections, `dst` for upstream ones.
    pub peer: &'static str,
    /// `true` downstream (mTLS), `no_identity` upstream (plain TCP to local services).
    pub tls: &'static str,
    /// Downstream: the caller's identity. Upstream: empty.
    pub client_id: Label,
    /// Upstream: the target `name:port`. Downstream: empty.
    pub authority: Label,
}

impl TcpLabels {
    /// An accepted, authenticated connection from `client_id`.
    pub fn inbound(client_id: &str) -> Self {
        Self {
            direction: "inbound",
            peer: "src",
            tls: "true",
            client_id: client_id.into(),
            authority: Label::default(),
        }
    }

    /// A connection to a local service for `authority`.
    pub fn outbound(authority: Label) -> Self {
        Self {
            direction: "outbound",
            peer: "dst",
            tls: "no_identity",
            client_id: Label::default(),
            authority,
        }
    }
}

/// `tcp_close_total` labels: the transport labels plus how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CloseLabels {
    /// The connection.
    #[prometheus(flatten)]
    pub tcp: TcpLabels,
    /// `""` for a clean close, else the error kind.
    pub errno: &'static str,
}

/// Why a handshake was refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusalLabels {
    /// A [`Refusal`] label value, or `max_connections`.
    pub reason: &'static str,
}

/// `inbound_tcp_transport_header_connections_total` labels, exactly Linkerd's (spec §9.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TransportHeaderLabels {
    /// `http/1`, `http/2` or `""` (opaque).
    pub session_protocol: &'static str,
    /// The header's port.
    pub target_port: u16,
    /// The header's name, `""` when absent.
    pub target_name: Label,
    /// The caller's identity.
    pub client_id: Label,
}

/// `inbound_tcp_errors_total` labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Linkerd's error label: `gateway domain invalid`, `gateway loop`, `i/o`,
    /// `tls detection timeout`, `unexpected`, `failfast`, `loadshed`.
    pub error: &'static str,
}

/// Authorization counter labels: the server and authorization that decided (the default
/// `all-authenticated` policy until a policy file names others).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthzLabels {
    /// `default`.
    pub srv_kind: &'static str,
    /// `all-authenticated`.
    pub srv_name: Label,
    /// `default`.
    pub authz_kind: &'static str,
    /// `all-authenticated`.
    pub authz_name: Label,
    /// Always `true`.
    pub tls: &'static str,
    /// The caller's identity.
    pub client_id: Label,
}

impl AuthzLabels {
    /// `client_id` allowed by `by`.
    pub fn allowed(by: &Allowed, client_id: Label) -> Self {
        Self {
            srv_kind: "default",
            srv_name: by.srv_name.clone(),
            authz_kind: by.kind,
            authz_name: by.name.clone(),
            tls: "true",
            client_id,
        }
    }
}

/// What allowed a request or connection: a policy rule or the policy's default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// The policy's default (`all-authenticated` or `deny`): the `srv_name` label.
    pub srv_name: Label,
    /// `rule` or `default`.
    pub kind: &'static str,
    /// The rule's name, or the default's.
    pub name: Label,
}

impl Default for Allowed {
    fn default() -> Self {
        Self {
            srv_name: Label::from("all-authenticated"),
            kind: "default",
            name: Label::from("all-authenticated"),
        }
    }
}

/// One target.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthorityLabels {
    /// `name:port`.
    pub authority: Label,
}

/// A failed upstream connect.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnectErrorLabels {
    /// `name:port`.
    pub authority: Label,
    /// `refused` or `timeout`.
    pub reason: &'static str,
}

/// Labels of `inbound_{http,tcp}_authz_deny_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DenyLabels {
    /// `default`.
    pub srv_kind: &'static str,
    /// The policy's default.
    pub srv_name: Label,
    /// `true`.
    pub tls: &'static str,
    /// The caller.
    pub client_id: Label,
    /// The target refused.
    pub authority: Label,
    /// `enforce` (refused) or `audit` (allowed, would have been refused).
    pub mode: &'static str,
}

/// One session's metric handles for its current route (status 200), so recording a request
/// needs no label-set lookup; see [`Metrics::record_response`].
#[derive(Default)]
pub struct RouteCache(std::sync::Mutex<Option<CachedRoute>>);

struct CachedRoute {
    authority: Label,
    allowed_by: Label,
    epoch: u64,
    requests: Counter,
    responses: Counter,
    latency: Histogram,
    authz: Counter,
}

/// A family whose label sets are removed once unused for the retention period, so label sets
/// that grow with callers × targets stay bounded (Linkerd's `METRICS_RETAIN_IDLE`).
pub struct Tracked<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    used: RwLock<HashMap<L, AtomicU64>>,
    clock: Arc<CoarseClock>,
}

/// Unix seconds, advanced by the eviction sweep: marking a label set as used reads an atomic
/// instead of the system clock on every request.
#[derive(Debug)]
pub struct CoarseClock(AtomicU64);

impl CoarseClock {
    fn new() -> Self {
        Self(AtomicU64::new(unix_now()))
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn tick(&self) -> u64 {
        let now = unix_now();
        self.0.store(now, Ordering::Relaxed);
        now
    }
}

impl<L, M, C> Tracked<L, M, C>
where
    L: Clone + Eq + Hash,
    C: MetricConstructor<M>,
{
    fn new(family: Family<L, M, C>, clock: &Arc<CoarseClock>) -> Self {
        Self {
            family,
            used: RwLock::new(HashMap::new()),
            clock: clock.clone(),
        }
    }

    /// The metric for `labels`, created if needed, marked as used now.
    pub fn get(&self, labels: &L) -> impl std::ops::Deref<Target = M> + '_ {
        self.touch(labels);
        self.family.get_or_create(labels)
    }

    /// A shared handle to the metric for `labels` (counts on it stay exported while in use).
    pub fn get_owned(&self, labels: &L) -> M
    where
        M: Clone,
    {
        self.touch(labels);
        self.family.get_or_create_owned(labels)
    }

    fn touch(&self, labels: &L) {
        let now = self.clock.now();
        if let Some(at) = self
            .used
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(labels)
        {
            // Store only on change: most requests find the mark already current.
            if at.load(Ordering::Relaxed) != now {
                at.store(now, Ordering::Relaxed);
            }
            return;
        }
        self.used
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(labels.clone())
            .or_insert_with(|| AtomicU64::new(now))
            .store(now, Ordering::Relaxed);
    }

    /// Removes label sets unused since `cutoff` (Unix seconds) for which `keep` is false.
    fn evict(&self, cutoff: u64, keep: impl Fn(&L) -> bool) -> usize {
        let mut used = self.used.write().unwrap_or_else(PoisonError::into_inner);
        let before = used.len();
        used.retain(|labels, at| {
            let retain = at.load(Ordering::Relaxed) >= cutoff || keep(labels);
            if !retain {
                self.family.remove(labels);
            }
            retain
        });
        before - used.len()
    }

    /// How many label sets are exported.
    pub fn len(&self) -> usize {
        self.used
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no label set is exported.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

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
    /// `outbound_connection_wait_ms`: time a request waited for an upstream connection.
    pub connection_wait: Histogram,
    /// `gateway_requests_shed_total`: requests refused by the in-flight limit.
    pub shed: Counter,
    /// `inbound_tcp_errors_total{error}`.
    pub tcp_errors: Family<ErrorLabels, Counter>,
    /// `gateway_handshakes_refused_total{reason}`.
    pub refused: Family<RefusalLabels, Counter>,
    /// `control_identity_*`: the credentials in use and their refreshes.
    pub identity: IdentityMetrics,
}

/// `control_identity_*` families (Linkerd's names) and one expiry gauge per trust anchor.
#[derive(Default)]
pub struct IdentityMetrics {
    /// `control_identity_cert_expiration_timestamp_seconds`.
    pub cert_expiration: Gauge,
    /// `control_identity_cert_refresh_timestamp_seconds`.
    pub cert_refresh: Gauge,
    /// `control_identity_cert_refreshes_total{result}`.
    pub refreshes: Family<ResultLabels, Counter>,
    /// `control_identity_trust_anchor_expiration_timestamp_seconds{subject}`.
    pub anchor_expiration: Family<AnchorLabels, Gauge>,
}

/// `result="ok"|"error"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// One trust anchor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AnchorLabels {
    /// The anchor's subject DN.
    pub subject: String,
}

impl IdentityMetrics {
    /// Records credentials now in use: their expiry, this refresh, and the anchors' expiries
    /// (anchors no longer in the bundle disappear).
    pub fn installed(&self, not_after_unix: i64, anchors: &identity::TrustAnchors) {
        self.cert_expiration.set(not_after_unix);
        self.cert_refresh
            .set(identity::source::unix_seconds(SystemTime::now()));
        self.refreshes
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        self.anchor_expiration.clear();
        for anchor in anchors.anchors() {
            self.anchor_expiration
                .get_or_create(&AnchorLabels {
                    subject: anchor.subject.clone(),
                })
                .set(anchor.not_after_unix);
        }
    }

    /// Records a refresh that failed (the credentials in use stay).
    pub fn failed(&self) {
        self.refreshes
            .get_or_create(&ResultLabels { result: "error" })
            .inc();
    }

    /// `control_identity_cert_refreshes_total{result}`.
    pub fn refresh_count(&self, result: &'static str) -> u64 {
        self.refreshes.get_or_create(&ResultLabels { result }).get()
    }
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
        let connection_wait = latency_histogram();
        let shed = Counter::default();
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
        }
        let clock = Arc::new(CoarseClock::new());
        let metrics = Self {
            identity,
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
            connection_wait,
            shed,
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
        authority: &Label,
        client_id: &Label,
        allowed: Option<&Allowed>,
        status: u16,
        latency_ms: f64,
    ) {
        let epoch = self.clock.now();
        if let (200, Some(allowed)) = (status, allowed) {
            let cached = cache.0.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(hit) = cached.as_ref().filter(|c| {
                c.epoch == epoch && c.authority == *authority && c.allowed_by == allowed.name
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
    pub fn refuse(&self, reason: &'static str) -> bool {
        self.refused.get_or_create(&RefusalLabels { reason }).inc() == 0
    }

    /// The current value of `gateway_handshakes_refused_total{reason}`.
    pub fn refused_count(&self, reason: &'static str) -> u64 {
        self.refused.get_or_create(&RefusalLabels { reason }).get()
    }

    /// Prometheus/OpenMetrics text, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
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

/// One connection's transport metrics; dropping it records the close.
pub struct ConnRecord {
    metrics: Arc<Metrics>,
    labels: TcpLabels,
    /// `tcp_read_bytes_total` for this connection's labels.
    pub read: Counter,
    /// `tcp_write_bytes_total` for this connection's labels.
    pub write: Counter,
    errno: &'static str,
}

impl ConnRecord {
    /// Marks the connection as ended by an error of kind `errno`.
    pub fn set_error(&mut self, errno: &'static str) {
        self.errno = errno;
    }
}

impl Drop for ConnRecord {
    fn drop(&mut self) {
        self.metrics.tcp_open_connections.get(&self.labels).dec();
        self.metrics
            .tcp_close
            .get(&CloseLabels {
                tcp: self.labels.clone(),
                errno: self.errno,
            })
            .inc();
    }
}

/// Byte counts of a socket before its labels are known (during the handshake), then forwarded
/// to the bound counters. Shared between the socket wrapper and the connection task.
#[derive(Debug, Default)]
pub struct ByteMeter {
    read: AtomicU64,
    write: AtomicU64,
    bound: std::sync::OnceLock<(Counter, Counter)>,
}

impl ByteMeter {
    /// Records `n` bytes read.
    pub fn add_read(&self, n: usize) {
        match self.bound.get() {
            Some((read, _)) => {
                read.inc_by(n as u64);
            }
            None => {
                self.read.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }

    /// Records `n` bytes written.
    pub fn add_write(&self, n: usize) {
        match self.bound.get() {
            Some((_, write)) => {
                write.inc_by(n as u64);
            }
            None => {
                self.write.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }

    /// From now on counts go to `record`'s counters; what was counted so far is added to them.
    pub fn bind(&self, record: &ConnRecord) {
        if self
            .bound
            .set((record.read.clone(), record.write.clone()))
            .is_ok()
        {
            record.read.inc_by(self.read.swap(0, Ordering::Relaxed));
            record.write.inc_by(self.write.swap(0, Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_linkerd_names() {
        let metrics = Arc::new(Metrics::new());
        let route = RouteLabels {
            direction: "outbound",
            authority: "web.ns.svc.cluster.local:80".into(),
            tls: "true",
            client_id: "web.ns.serviceaccount.identity.linkerd.cluster.local".into(),
        };
        metrics.requests.get(&route).inc();
        metrics
            .latency
            .get(&LatencyLabels {
                route: route.clone(),
                status_code: 200,
            })
            .observe(3.0);
        let record = metrics.open_connection(TcpLabels::inbound("c"));
        record.read.inc_by(10);
        let text = metrics.encode();
        for needle in [
            "request_total{direction=\"outbound\",authority=\"web.ns.svc.cluster.local:80\",tls=\"true\",client_id=\"web.ns.serviceaccount.identity.linkerd.cluster.local\"} 1",
            "response_latency_ms_bucket{",
            "le=\"50000.0\"",
            "tcp_open_total{direction=\"inbound\",peer=\"src\"",
            "tcp_open_connections{",
            "tcp_read_bytes_total{",
            "gateway_handshakes_refused_total{reason=\"unknown_ca\"} 0",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
        drop(record);
        assert!(metrics.encode().contains("tcp_close_total{"));
    }

    #[test]
    fn idle_label_sets_are_evicted_but_open_connections_stay() {
        let metrics = Arc::new(Metrics::new());
        let route = RouteLabels {
            direction: "outbound",
            authority: "a.svc.cluster.local:80".into(),
            tls: "true",
            client_id: "c".into(),
        };
        metrics.requests.get(&route).inc();
        let open = metrics.open_connection(TcpLabels::inbound("still-open"));
        drop(metrics.open_connection(TcpLabels::inbound("gone")));
        assert!(
            metrics.evict_idle(Duration::from_secs(600)) == 0,
            "nothing is idle yet"
        );
        let removed = metrics.evict_unused_since(u64::MAX);
        assert!(removed > 0);
        let text = metrics.encode();
        assert!(!text.contains("a.svc.cluster.local"), "{text}");
        assert!(!text.contains("client_id=\"gone\""), "{text}");
        assert!(text.contains("tcp_open_connections{direction=\"inbound\",peer=\"src\",tls=\"true\",client_id=\"still-open\""), "{text}");
        assert_eq!(metrics.requests.len(), 0);
        drop(open);
    }

    #[test]
    fn cached_route_handles_count_like_lookups() {
        let metrics = Metrics::new();
        let cache = RouteCache::default();
        let (authority, client) = (Label::from("a.svc.cluster.local:80"), Label::from("c"));
        for _ in 0..3 {
            metrics.record_response(
                &cache,
                &authority,
                &client,
                Some(&Allowed::default()),
                200,
                1.0,
            );
        }
        metrics.record_response(
            &cache,
            &authority,
            &client,
            Some(&Allowed::default()),
            503,
            1.0,
        );
        let other = Label::from("b.svc.cluster.local:80");
        metrics.record_response(&cache, &other, &client, Some(&Allowed::default()), 200, 1.0);
        let text = metrics.encode();
        let route = "direction=\"outbound\",authority=\"a.svc.cluster.local:80\",tls=\"true\",client_id=\"c\"";
        assert!(
            text.contains(&format!("request_total{{{route}}} 4")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "response_total{{{route},status_code=\"200\",classification=\"success\"}} 3"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "response_total{{{route},status_code=\"503\",classification=\"failure\"}} 1"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "response_latency_ms_count{{{route},status_code=\"200\"}} 3"
            )),
            "{text}"
        );
        assert!(
            text.contains("authority=\"b.svc.cluster.local:80\",tls=\"true\",client_id=\"c\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn refusal_reports_first_occurrence_once() {
        let metrics = Metrics::new();
        assert!(metrics.refuse("expired"));
        assert!(!metrics.refuse("expired"));
        assert_eq!(metrics.refused_count("expired"), 2);
    }

    #[test]
    fn byte_meter_carries_handshake_bytes_into_bound_counters() {
        let metrics = Arc::new(Metrics::new());
        let meter = ByteMeter::default();
        meter.add_read(100);
        meter.add_write(7);
        let record = metrics.open_connection(TcpLabels::inbound("c"));
        meter.bind(&record);
        meter.add_read(1);
        assert_eq!(record.read.get(), 101);
        assert_eq!(record.write.get(), 7);
    }
}
