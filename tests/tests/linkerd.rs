//! Linkerd wire compatibility, end to end: transport-header sessions (HTTP/1, HTTP/2, gRPC,
//! opaque), orig-proto downgrade, loops, admin over mTLS, and Linkerd's metric lines.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use gateway::cli::demo::Backend;
use gateway::transport_header::{SessionProtocol, TransportHeader};
use http::Request;
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ECHO: &str = "echo.test.svc.cluster.local";

fn header(name: Option<&str>, port: u16, protocol: SessionProtocol) -> TransportHeader {
    TransportHeader {
        port,
        name: name.map(str::to_owned),
        protocol,
    }
}

fn service_header(protocol: SessionProtocol) -> TransportHeader {
    header(Some("podinfo.test.svc.cluster.local"), 9898, protocol)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_header_http1_session_uses_the_header_target() {
    let h = Harness::start(|_| {}).await;
    let client = h.client(CLIENT_ID, L5D);
    let mut send = header_http1(&client, &service_header(SessionProtocol::Http1)).await;
    // The request names another service: the header decides.
    let req = Request::get("/one")
        .header("host", "other.ns.svc.cluster.local")
        .body(Full::default())
        .unwrap();
    let answer = collect(send.send_request(req).await.unwrap()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "podinfo: GET /one\n");
    assert_eq!(
        answer.header("x-seen-host"),
        Some(SERVICE),
        "Host rewritten to the target"
    );
    assert_eq!(answer.header("x-seen-l5d-client-id"), Some(CLIENT_ID));
    assert_eq!(
        answer.header("x-seen-forwarded"),
        Some(format!("by={GATEWAY_ID};for={CLIENT_ID};host={SERVICE};proto=https").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_header_http2_roundtrip() {
    let h = Harness::start(|_| {}).await;
    let client = h.client(CLIENT_ID, L5D);
    let mut send = header_http2(&client, &service_header(SessionProtocol::Http2)).await;
    for i in 0..3 {
        let req = Request::get(format!("http://web.east.svc.cluster.local/{i}"))
            .body(Full::default())
            .unwrap();
        let answer = collect(send.send_request(req).await.unwrap()).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, format!("podinfo: GET /{i}\n"));
        assert_eq!(answer.header("x-seen-version"), Some("HTTP/2.0"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_call_through_a_header_session_keeps_trailers() {
    let h = Harness::start(|_| {}).await;
    let client = h.client(CLIENT_ID, L5D);
    let mut send = header_http2(&client, &service_header(SessionProtocol::Http2)).await;
    let message = Bytes::from_static(b"\x00\x00\x00\x00\x05hello");
    let req = Request::post("http://podinfo.test.svc.cluster.local:9898/echo.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(message.clone()))
        .unwrap();
    let response = send.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers arrive end to end");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "echoed");
    assert_eq!(collected.to_bytes(), message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_naming_a_bad_domain_answers_404_and_grpc_status_5() {
    let h = Harness::start(|_| {}).await;
    let client = h.client(CLIENT_ID, L5D);
    let bad = header(
        Some("kubernetes.default.svc.cluster.local.evil.com"),
        443,
        SessionProtocol::Http2,
    );
    let mut send = header_http2(&client, &bad).await;
    let req = Request::get("http://x/").body(Full::default()).unwrap();
    let answer = collect(send.send_request(req).await.unwrap()).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.header("l5d-proxy-error"), Some("bad gateway domain"));
    let req = Request::post("http://x/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .body(Full::default())
        .unwrap();
    let answer = collect(send.send_request(req).await.unwrap()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("grpc-status"), Some("5"));
    assert_eq!(answer.header("grpc-message"), Some("bad gateway domain"));
    assert_eq!(answer.header("l5d-proxy-error"), Some("bad gateway domain"));
    assert_eq!(h.backend.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_session_echoes_with_half_close() {
    let echo = Backend::start_tcp_echo().await.unwrap();
    let h = Harness::start(|c| {
        c.endpoints
            .insert(format!("{ECHO}:7777"), vec![echo.addr.into()]);
    })
    .await;
    assert_opaque_echo(&h.client(CLIENT_ID, L5D), ECHO, 7777, 256 * 1024).await;
    assert_eq!(
        h.metric(&format!("inbound_tcp_authz_allow_total{{srv_kind=\"default\",srv_name=\"all-authenticated\",authz_kind=\"default\",authz_name=\"all-authenticated\",tls=\"true\",client_id=\"{CLIENT_ID}\"}}")).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_session_to_a_bad_domain_is_closed_and_counted() {
    let h = Harness::start(|_| {}).await;
    let client = h.client(CLIENT_ID, L5D);
    let mut stream = client
        .connect_with_header(&header(
            Some("evil.example.com"),
            22,
            SessionProtocol::Opaque,
        ))
        .await
        .unwrap();
    let _ = stream.write_all(b"SSH-2.0-x\r\n").await;
    let mut buf = Vec::new();
    let read = stream.read_to_end(&mut buf).await;
    assert!(read.is_err() || buf.is_empty(), "nothing comes back");
    assert!(
        // Counted as the session ends; the label set appears with the count.
        eventually(SOON, || async {
            h.metric_or_zero("inbound_tcp_errors_total{error=\"gateway domain invalid\"}")
                .await
                == 1
        })
        .await
    );
}

async fn downgrade(orig_proto: &str, uri: &str) -> Answer {
    let h = Harness::start(|_| {}).await;
    let client = h.client(CLIENT_ID, L5D);
    let mut send = header_http2(&client, &service_header(SessionProtocol::Http2)).await;
    let req = Request::get(uri)
        .header("l5d-orig-proto", orig_proto)
        .body(Full::default())
        .unwrap();
    collect(send.send_request(req).await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orig_proto_downgrade_origin_form() {
    let answer = downgrade(
        "HTTP/1.1",
        "http://podinfo.test.svc.cluster.local:9898/orig",
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-seen-version"), Some("HTTP/1.1"));
    assert_eq!(
        answer.header("x-seen-l5d-orig-proto"),
        None,
        "the header is removed upstream"
    );
    assert_eq!(answer.header("x-seen-host"), Some(SERVICE));
    assert_eq!(
        answer.header("l5d-orig-proto"),
        Some("HTTP/1.1"),
        "the response says it was HTTP/1"
    );
    assert_eq!(answer.body, "podinfo: GET /orig\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orig_proto_downgrade_absolute_form_and_http10() {
    let answer = downgrade(
        "HTTP/1.1; absolute-form",
        "http://podinfo.test.svc.cluster.local:9898/abs?q=1",
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-seen-version"), Some("HTTP/1.1"));
    assert_eq!(answer.body, "podinfo: GET /abs\n");
    let answer = downgrade("HTTP/1.0", "http://podinfo.test.svc.cluster.local:9898/old").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-seen-version"), Some("HTTP/1.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_session_loops_are_refused_by_identity_and_forwarded() {
    let h = Harness::start(|_| {}).await;
    let itself = h.client(GATEWAY_ID, L5D);
    let mut send = header_http1(&itself, &service_header(SessionProtocol::Http1)).await;
    let req = Request::get("/").body(Full::default()).unwrap();
    assert_eq!(
        collect(send.send_request(req).await.unwrap()).await.status,
        508
    );

    let client = h.client(CLIENT_ID, L5D);
    let mut send = header_http2(&client, &service_header(SessionProtocol::Http2)).await;
    let req = Request::get("http://x/")
        .header(
            "forwarded",
            format!("by=a.b;for=c, by={GATEWAY_ID};for={CLIENT_ID}"),
        )
        .body(Full::default())
        .unwrap();
    let answer = collect(send.send_request(req).await.unwrap()).await;
    assert_loop_refused(&answer);
    assert_eq!(h.backend.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_alpn_without_a_header_is_closed_and_counted() {
    let h = Harness::start(|_| {}).await;
    let mut stream = h.client(CLIENT_ID, L5D).connect().await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: podinfo.test.svc.cluster.local\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf).await;
    assert!(
        buf.is_empty(),
        "no answer without a header: {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert!(
        eventually(SOON, || async {
            h.gateway.metrics.refused_count("bad_transport_header") == 1
        })
        .await
    );
    assert_eq!(h.metric("inbound_tcp_errors_total{error=\"i/o\"}").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_served_over_mtls_on_the_admin_port() {
    let h = Harness::start(|_| {}).await;
    let creds = h.ca.credentials(
        "linkerd-service-mirror.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
    );
    let prober = gateway::cli::client::MtlsClient::new(
        Some(&creds),
        &h.anchors,
        GATEWAY_ID,
        h.gateway.admin_addr,
        NONE,
    )
    .unwrap();
    let answer = send_h1(
        &prober,
        Request::get("/ready")
            .header("host", "probe")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "ready\n");
    // Plaintext still works on the same port (kubelet, Prometheus).
    assert_eq!(h.admin_get("/ready").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_header_metric_lines_match_linkerd() {
    let h = Harness::start(|_| {}).await;
    let client = h.client("test.client", L5D);
    let cases = [
        (SessionProtocol::Http1, "http/1"),
        (SessionProtocol::Http2, "http/2"),
        (SessionProtocol::Opaque, ""),
    ];
    for (protocol, label) in cases {
        for name in [None, Some("mysvc.myns.svc.cluster.local")] {
            let stream = client
                .connect_with_header(&header(name, 8080, protocol))
                .await
                .unwrap();
            let line = format!(
                "inbound_tcp_transport_header_connections_total{{session_protocol=\"{label}\",target_port=\"8080\",target_name=\"{}\",client_id=\"test.client\"}} 1",
                name.unwrap_or_default()
            );
            let seen = eventually(SOON, || async {
                let (_, text) = h.admin_get("/metrics").await;
                text.lines().any(|l| l == line)
            })
            .await;
            assert!(seen, "missing line: {line}");
            drop(stream);
        }
    }
}
