//! Distributed tracing: a server span per sampled request, exported over OTLP/gRPC with the
//! OpenTelemetry SDK, and the trace context propagated to the upstream.
//!
//! - The parent context comes from W3C `traceparent`/`tracestate`, else B3 (`b3`, or the
//!   `x-b3-*` headers). A parent's sampled flag is followed either way; a request without a
//!   parent starts a trace with probability `trace_sampling`.
//! - A sampled request's upstream gets the context in the format it came in (W3C for a new
//!   trace), naming the gateway's span as the parent. An unsampled request's headers pass
//!   through as they are, as they do with tracing off.
//! - Spans are batched (every 500 ms or 512 spans) by the SDK's batch processor on its own
//!   thread, and exported on the admin runtime. The queue is bounded (`trace_buffer`): when the
//!   collector is slow or gone, spans are dropped, requests never wait. Exports and failures are
//!   counted (`gateway_trace_spans_exported_total`, `gateway_trace_export_failures_total`).
//!
//! Span: kind server, named `<method> <target>`, with `http.method`, `http.path` (no query),
//! `http.authority` (the target), `http.status_code`, `client_id` (the caller's identity),
//! `net.peer.addr` (its address) and, when answered, `upstream.endpoint` and
//! `upstream.tls`; a failed request adds `error` (the `l5d-proxy-error` reason) and
//! `error.blame`, and a 5xx sets the span status to error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter,
};
// B3 comes from opentelemetry-zipkin, the only B3 propagator of the OpenTelemetry crates; the
// crate is deprecated for its Zipkin exporter, which is not used (spans go out over OTLP).
#[allow(deprecated)]
use opentelemetry_zipkin::{B3Encoding, Propagator as B3};
use prometheus_client::metrics::counter::Counter;

/// How often the batch processor sends what it has.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// Most spans per export call.
const BATCH_SIZE: usize = 512;
/// Deadline of one export call.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The B3 headers, removed before a new context is written (a stale parent id would remain).
const B3_HEADERS: [&str; 5] = [
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
];

/// What tracing needs from the config.
#[derive(Clone, Debug)]
pub struct Options {
    /// The collector, `host:port`.
    pub collector: String,
    /// Share of requests without a sampled parent that start a trace.
    pub sampling: f64,
    /// `service.name`.
    pub service_name: String,
    /// Spans queued for export.
    pub buffer: usize,
}

/// The counters of the exporter.
#[derive(Clone, Debug, Default)]
pub struct TraceMetrics {
    /// `gateway_trace_spans_exported_total`.
    pub exported: Counter,
    /// `gateway_trace_export_failures_total`.
    pub failures: Counter,
}

/// The tracer and its export pipeline.
#[allow(deprecated)] // B3: see the import.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    w3c: TraceContextPropagator,
    b3_single: B3,
    b3_multi: B3,
}

/// Which header format a context came in (and goes out) in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// One request's sampled server span.
pub struct ServerSpan {
    span: opentelemetry_sdk::trace::Span,
    format: Format,
    method: http::Method,
}

impl Tracing {
    /// Builds the pipeline; exports run on `runtime` (the admin runtime), batching on the SDK's
    /// own thread.
    ///
    /// # Errors
    /// An exporter the SDK cannot build (a collector address that makes no URI).
    #[allow(deprecated)] // B3: see the import.
    pub fn start(
        options: &Options,
        runtime: &tokio::runtime::Handle,
        metrics: TraceMetrics,
    ) -> Result<Self, String> {
        let exporter = {
            // The tonic channel is made (lazily connecting) on the runtime that drives it.
            let _entered = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(format!("http://{}", options.collector))
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| format!("trace_collector_addr {:?}: {e}", options.collector))?
        };
        let exporter = OnRuntime {
            inner: Arc::new(exporter),
            runtime: runtime.clone(),
            metrics,
            logged: Arc::new(AtomicBool::new(false)),
            collector: options.collector.clone(),
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(options.buffer)
            .with_max_export_batch_size(BATCH_SIZE.min(options.buffer))
            .with_scheduled_delay(BATCH_DELAY)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                options.sampling,
            ))))
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(options.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("meshgate");
        Ok(Self {
            provider,
            tracer,
            w3c: TraceContextPropagator::new(),
            b3_single: B3::with_encoding(B3Encoding::SingleHeader),
            b3_multi: B3::with_encoding(B3Encoding::MultipleHeader),
        })
    }

    /// A server span for a request with `headers`, when it is sampled (a sampled parent, or a
    /// new trace drawn at the sampling rate); `None` otherwise.
    pub fn start_span(
        &self,
        method: &http::Method,
        path: &str,
        headers: &HeaderMap,
        client_id: &str,
        source: SocketAddr,
    ) -> Option<ServerSpan> {
        let (parent, format) = self.extract(headers);
        let mut span = self
            .tracer
            .span_builder(method.as_str().to_owned())
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        if !span.span_context().is_sampled() {
            return None;
        }
        // Only a sampled span pays for its attributes (most requests are not sampled).
        span.set_attributes([
            KeyValue::new("http.method", method.as_str().to_owned()),
            KeyValue::new("http.path", path.to_owned()),
            KeyValue::new("client_id", client_id.to_owned()),
            KeyValue::new("net.peer.addr", source.to_string()),
        ]);
        Some(ServerSpan {
            span,
            format,
            method: method.clone(),
        })
    }

    /// The parent context of `headers` and its format (W3C when there is none).
    fn extract(&self, headers: &HeaderMap) -> (Context, Format) {
        let from = Headers(headers);
        let w3c = self.w3c.extract(&from);
        if w3c.span().span_context().is_valid() {
            return (w3c, Format::W3c);
        }
        if headers.contains_key("b3") {
            let cx = self.b3_single.extract(&from);
            if cx.span().span_context().is_valid() {
                return (cx, Format::B3Single);
            }
        }
        if headers.contains_key("x-b3-traceid") {
            let cx = self.b3_multi.extract(&from);
            if cx.span().span_context().is_valid() {
                return (cx, Format::B3Multi);
            }
        }
        (Context::new(), Format::W3c)
    }

    /// Sends what is queued and stops the pipeline (within the export deadline).
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

impl ServerSpan {
    /// The span's trace id, as 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.span.span_context().trace_id().to_string()
    }

    /// Names the target the request was routed to.
    pub fn routed(&mut self, authority: &str) {
        self.span
            .update_name(format!("{} {authority}", self.method.as_str()));
        self.span
            .set_attribute(KeyValue::new("http.authority", authority.to_owned()));
    }

    /// Writes this span's context into the upstream request's `headers`, in the format the
    /// request's own context came in.
    pub fn inject(&self, tracing: &Tracing, headers: &mut HeaderMap) {
        let cx = Context::new().with_remote_span_context(self.span.span_context().clone());
        let mut to = HeadersMut(headers);
        match self.format {
            Format::W3c => tracing.w3c.inject_context(&cx, &mut to),
            Format::B3Single | Format::B3Multi => {
                for name in B3_HEADERS {
                    to.0.remove(name);
                }
                let b3 = match self.format {
                    Format::B3Single => &tracing.b3_single,
                    _ => &tracing.b3_multi,
                };
                b3.inject_context(&cx, &mut to);
            }
        }
    }

    /// Ends the span with the response's `status`, what answered it (address, over mTLS) and
    /// why it failed (`l5d-proxy-error` reason, blame).
    pub fn end(
        mut self,
        status: http::StatusCode,
        endpoint: Option<(SocketAddr, bool)>,
        failure: Option<(&str, &str)>,
    ) {
        self.span.set_attribute(KeyValue::new(
            "http.status_code",
            i64::from(status.as_u16()),
        ));
        if let Some((addr, tls)) = endpoint {
            self.span
                .set_attribute(KeyValue::new("upstream.endpoint", addr.to_string()));
            self.span.set_attribute(KeyValue::new("upstream.tls", tls));
        }
        if let Some((reason, blame)) = failure {
            self.span
                .set_attribute(KeyValue::new("error", reason.to_owned()));
            self.span
                .set_attribute(KeyValue::new("error.blame", blame.to_owned()));
        }
        if status.is_server_error() {
            self.span.set_status(Status::error(
                failure.map_or_else(|| status.to_string(), |(reason, _)| reason.to_owned()),
            ));
        }
        self.span.end();
    }
}

/// Reads a context from request headers.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes a context into request headers.
struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The OTLP exporter, run on a tokio runtime: the SDK's batch thread has none, and tonic needs
/// one. Counts what was sent and what failed; logs the first failure, then every change back
/// to success.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
    metrics: TraceMetrics,
    /// A failure was logged and no export succeeded since.
    logged: Arc<AtomicBool>,
    collector: String,
}

impl SpanExporter for OnRuntime {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let spans = batch.len() as u64;
        let inner = self.inner.clone();
        let task = self.runtime.spawn(async move { inner.export(batch).await });
        let (metrics, logged, collector) = (
            self.metrics.clone(),
            self.logged.clone(),
            self.collector.clone(),
        );
        async move {
            let result = match task.await {
                Ok(result) => result,
                Err(e) => Err(OTelSdkError::InternalFailure(e.to_string())),
            };
            match &result {
                Ok(()) => {
                    metrics.exported.inc_by(spans);
                    if logged.swap(false, Ordering::Relaxed) {
                        tracing::info!(%collector, "trace export works again");
                    }
                }
                Err(e) => {
                    metrics.failures.inc();
                    if !logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%collector, error = %e, spans, "trace export failed; spans are dropped until it works");
                    }
                }
            }
            result
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracing(sampling: f64) -> (tokio::runtime::Runtime, Tracing) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let options = Options {
            // Nothing listens there: exports fail, which these tests never wait for.
            collector: "127.0.0.1:9".to_owned(),
            sampling,
            service_name: "meshgate".to_owned(),
            buffer: 16,
        };
        let tracing = Tracing::start(&options, runtime.handle(), TraceMetrics::default()).unwrap();
        (runtime, tracing)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";

    fn span(t: &Tracing, h: &HeaderMap) -> Option<ServerSpan> {
        t.start_span(
            &http::Method::GET,
            "/",
            h,
            "web.east",
            "127.0.0.1:1".parse().unwrap(),
        )
    }

    #[test]
    fn a_sampled_w3c_parent_is_followed_and_replaced_by_the_gateway_span() {
        let (_rt, t) = tracing(0.0);
        let mut h = headers(&[
            ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
            ("tracestate", "vendor=1"),
        ]);
        let s = span(&t, &h).expect("a sampled parent is followed at 0 %");
        assert_eq!(s.trace_id(), TRACE);
        s.inject(&t, &mut h);
        let out = h["traceparent"].to_str().unwrap();
        assert!(out.starts_with(&format!("00-{TRACE}-")), "{out}");
        assert!(out.ends_with("-01"), "{out}");
        assert!(
            !out.contains(PARENT),
            "the gateway's span is the new parent: {out}"
        );
        assert_eq!(h["tracestate"], "vendor=1");
        t.shutdown();
    }

    #[test]
    fn an_unsampled_parent_is_not_traced_and_a_new_trace_follows_the_rate() {
        let (_rt, t) = tracing(1.0);
        let h = headers(&[("traceparent", &format!("00-{TRACE}-{PARENT}-00"))]);
        assert!(span(&t, &h).is_none(), "the parent's sampled flag wins");
        let root = span(&t, &HeaderMap::new()).expect("100 % samples every new trace");
        let mut out = HeaderMap::new();
        root.inject(&t, &mut out);
        assert!(
            out.contains_key("traceparent"),
            "a new trace goes out as W3C"
        );
        let (_rt, none) = tracing(0.0);
        assert!(span(&none, &HeaderMap::new()).is_none());
        t.shutdown();
        none.shutdown();
    }

    #[test]
    fn b3_contexts_go_out_in_the_format_they_came_in() {
        let (_rt, t) = tracing(0.0);
        let mut single = headers(&[("b3", &format!("{TRACE}-{PARENT}-1"))]);
        let s = span(&t, &single).expect("sampled b3");
        assert_eq!(s.trace_id(), TRACE);
        s.inject(&t, &mut single);
        let out = single["b3"].to_str().unwrap();
        assert!(out.starts_with(TRACE) && !out.contains(PARENT), "{out}");
        assert!(!single.contains_key("traceparent"));

        let mut multi = headers(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", PARENT),
            ("x-b3-parentspanid", "1111111111111111"),
            ("x-b3-sampled", "1"),
        ]);
        let s = span(&t, &multi).expect("sampled x-b3");
        s.inject(&t, &mut multi);
        assert_eq!(multi["x-b3-traceid"], TRACE);
        assert_ne!(multi["x-b3-spanid"], PARENT);
        assert!(
            !multi.contains_key("x-b3-parentspanid"),
            "no stale parent id"
        );
        assert!(!multi.contains_key("b3") && !multi.contains_key("traceparent"));
        t.shutdown();
    }
}
