//! Tracing, black-box against an in-test OpenTelemetry collector (the opentelemetry-proto
//! tonic service): W3C and B3 contexts are followed and propagated with the gateway's span as
//! the parent, sampled spans reach the collector with matching ids, an unsampled parent is not
//! traced, and a collector that is gone costs no request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use support::{CLIENT_ID, H2, Harness, SERVICE, SOON, collect, eventually};
use tokio::net::TcpListener;

/// What the collector received: spans with their resource's `service.name`.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn of_trace(&self, trace_id: &str) -> Vec<(String, Span)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect()
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC collector on `127.0.0.1:0` (plaintext HTTP/2).
async fn collector() -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let service = TraceServiceServer::new(received.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let mut service = service.clone();
                    async move { tonic::codegen::Service::call(&mut service, req).await }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

async fn gateway(collector: SocketAddr, sampling: f64) -> Harness {
    Harness::start(move |c| {
        c.trace_collector_addr = Some(collector.to_string());
        c.trace_sampling = sampling;
    })
    .await
}

/// `GET /` to the service with `headers`, on a new HTTP/2 connection: the status and the
/// response's headers (the backend echoes what it got as `x-seen-*`).
async fn get(h: &Harness, headers: &[(&str, &str)]) -> support::Answer {
    let mut send = h.client(CLIENT_ID, H2).http2().await.unwrap();
    let mut req = http::Request::get("/items?page=2").header("l5d-dst-override", SERVICE);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(http_body_util::Full::default()).unwrap();
    send.ready().await.unwrap();
    collect(send.send_request(req).await.unwrap()).await
}

const T1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const T2: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const T3: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_requests_reach_the_collector_with_the_trace_ids_the_upstream_saw() {
    let (addr, received) = collector().await;
    // 0 %: only a sampled parent starts a span.
    let h = gateway(addr, 0.0).await;

    let w3c = get(
        &h,
        &[
            ("traceparent", &format!("00-{T1}-{PARENT}-01")),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    assert_eq!(w3c.status, 200);
    let seen = w3c.header("x-seen-traceparent").unwrap().to_owned();
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", T1, "01"), "{seen}");
    assert_ne!(
        parts[2], PARENT,
        "the gateway's span is the upstream's parent"
    );
    assert_eq!(w3c.header("x-seen-tracestate"), Some("congo=t61rcWkgMzE"));

    let b3 = get(
        &h,
        &[
            ("x-b3-traceid", T2),
            ("x-b3-spanid", PARENT),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    assert_eq!(b3.status, 200);
    assert_eq!(b3.header("x-seen-x-b3-traceid"), Some(T2));
    let b3_span = b3.header("x-seen-x-b3-spanid").unwrap().to_owned();
    assert_ne!(b3_span, PARENT);
    assert!(
        b3.header("x-seen-traceparent").is_none(),
        "B3 goes on as B3"
    );

    // An unsampled parent: passed on untouched, no span.
    let unsampled = format!("00-{T3}-{PARENT}-00");
    let off = get(&h, &[("traceparent", &unsampled)]).await;
    assert_eq!(off.header("x-seen-traceparent"), Some(unsampled.as_str()));
    // No context at 0 %: none invented.
    let none = get(&h, &[]).await;
    assert!(none.header("x-seen-traceparent").is_none());

    assert!(
        eventually(SOON, || async {
            !received.of_trace(T1).is_empty() && !received.of_trace(T2).is_empty()
        })
        .await,
        "both sampled traces reach the collector"
    );
    let (service, span) = received.of_trace(T1).remove(0);
    assert_eq!(service, "meshgate");
    assert_eq!(
        hex(&span.span_id),
        parts[2],
        "the span the upstream was told of"
    );
    assert_eq!(hex(&span.parent_span_id), PARENT);
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.name, format!("GET {SERVICE}"));
    assert_eq!(
        attribute(&span, "http.status_code"),
        Some(Value::IntValue(200))
    );
    assert_eq!(
        attribute(&span, "http.path"),
        Some(Value::StringValue("/items".to_owned()))
    );
    assert_eq!(
        attribute(&span, "client_id"),
        Some(Value::StringValue(CLIENT_ID.to_owned()))
    );
    assert_eq!(
        attribute(&span, "upstream.endpoint"),
        Some(Value::StringValue(h.backend.addr.to_string()))
    );
    let (_, span) = received.of_trace(T2).remove(0);
    assert_eq!(hex(&span.span_id), b3_span);
    assert_eq!(hex(&span.parent_span_id), PARENT);
    assert!(
        received.of_trace(T3).is_empty(),
        "an unsampled parent is not traced"
    );
    // Counted when the collector's answer is back, which may be after it stored the spans.
    assert!(
        eventually(SOON, || async {
            h.metric_or_zero("gateway_trace_spans_exported_total").await >= 2
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_gone_costs_no_request() {
    // Nothing listens there: every export fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::start(move |c| {
        c.trace_collector_addr = Some(dead.to_string());
        c.trace_sampling = 1.0;
        // Far fewer than the requests: the queue fills and spans are dropped.
        c.trace_buffer = 8;
    })
    .await;
    let mut send = h.client(CLIENT_ID, H2).http2().await.unwrap();
    // Bounded: 300 requests, every one traced.
    for _ in 0..300 {
        send.ready().await.unwrap();
        let answer = collect(
            send.send_request(support::routed_get(SERVICE))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200);
        assert!(answer.header("x-seen-traceparent").is_some());
    }
    assert!(
        eventually(SOON, || async {
            h.metric_or_zero("gateway_trace_export_failures_total")
                .await
                >= 1
        })
        .await,
        "export failures are counted"
    );
    assert_eq!(
        h.metric_or_zero("gateway_trace_spans_exported_total").await,
        0
    );
}
