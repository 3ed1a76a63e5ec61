//! Prometheus metrics with Linkerd's names and labels (so Viz and its dashboards work), plus the
//! gateway's own families. Label values are shared strings; handles are bound once per connection.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use identity::Refusal;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

/// All metric families, registered once.
pub struct Metrics {
    registry: Registry,
    /// `request_total`.
    pub requests: Family<RouteLabels, Counter>,
    /// `response_total`.
    pub responses: Family<ResponseLabels, Counter>,
    /// `response_latency_ms`.
    pub latency: Family<LatencyLabels, Histogram>,
    /// `tcp_open_total`.
    pub tcp_open: Family<TcpLabels, Counter>,
    /// `tcp_close_total`.
    pub tcp_close: Family<CloseLabels, Counter>,
    /// `tcp_open_connections`.
    pub tcp_open_connections: Family<TcpLabels, Gauge>,
    /// `tcp_read_bytes_total`.
    pub tcp_read_bytes: Family<TcpLabels, Counter>,
    /// `tcp_write_bytes_total`.
    pub tcp_write_bytes: Family<TcpLabels, Counter>,
    /// `gateway_handshakes_refused_total{reason}`.
    pub refused: Family<RefusalLabels, Counter>,
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
        let refused = Family::default();
        registry.register(
            "request",
            "Requests forwarded (Linkerd's request_total)",
            requests.clone(),
        );
        registry.register("response", "Responses sent downstream", responses.clone());
        registry.register(
            "response_latency_ms",
            "Time to response headers, in milliseconds",
            latency.clone(),
        );
        registry.register("tcp_open", "Connections opened", tcp_open.clone());
        registry.register("tcp_close", "Connections closed", tcp_close.clone());
        registry.register(
            "tcp_open_connections",
            "Connections open now",
            tcp_open_connections.clone(),
        );
        registry.register(
            "tcp_read_bytes",
            "Bytes read from sockets",
            tcp_read_bytes.clone(),
        );
        registry.register(
            "tcp_write_bytes",
            "Bytes written to sockets",
            tcp_write_bytes.clone(),
        );
        registry.register(
            "gateway_handshakes_refused",
            "Downstream connections refused before any request, by reason",
            refused.clone(),
        );
        let metrics = Self {
            registry,
            requests,
            responses,
            latency,
            tcp_open,
            tcp_close,
            tcp_open_connections,
            tcp_read_bytes,
            tcp_write_bytes,
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
        self.tcp_open.get_or_create(&labels).inc();
        self.tcp_open_connections.get_or_create(&labels).inc();
        ConnRecord {
            read: self.tcp_read_bytes.get_or_create_owned(&labels),
            write: self.tcp_write_bytes.get_or_create_owned(&labels),
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
        self.metrics
            .tcp_open_connections
            .get_or_create(&self.labels)
            .dec();
        self.metrics
            .tcp_close
            .get_or_create(&CloseLabels {
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
        metrics.requests.get_or_create(&route).inc();
        metrics
            .latency
            .get_or_create(&LatencyLabels {
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
