//! Black-box tests: a real gateway on 127.0.0.1:0, real mTLS clients, real backends.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use identity::TrustAnchors;
use identity::issue::Validity;
use identity::testing::TestCa;
use support::*;

fn get(uri: &str) -> http::request::Builder {
    Request::get(uri)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l5d_dst_override_routes_http1_to_local_service() {
    let h = Harness::start(|_| {}).await;
    let req = get("/hello")
        .header("l5d-dst-override", SERVICE)
        .body(Full::default())
        .unwrap();
    let answer = send_h1(&h.client(CLIENT_ID, H1), req).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "podinfo: GET /hello\n");
    assert_eq!(answer.header("x-seen-l5d-client-id"), Some(CLIENT_ID));
    assert_eq!(
        answer.header("x-seen-forwarded"),
        Some(format!("by={GATEWAY_ID};for={CLIENT_ID};host={SERVICE};proto=https").as_str())
    );
    assert_eq!(
        answer.header("x-seen-host"),
        Some(SERVICE),
        "Host is rewritten to the target"
    );
    assert_eq!(
        answer.header("x-seen-l5d-dst-override"),
        None,
        "the override is not forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_routes_http1_when_no_override() {
    let h = Harness::start(|_| {}).await;
    let req = get("/by-host")
        .header("host", SERVICE)
        .body(Full::default())
        .unwrap();
    let answer = send_h1(&h.client(CLIENT_ID, NONE), req).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "podinfo: GET /by-host\n");
    assert_eq!(answer.header("x-seen-version"), Some("HTTP/1.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_routes_http2_and_goes_upstream_as_http2() {
    let h = Harness::start(|_| {}).await;
    let req = get(&format!("http://{SERVICE}/h2"))
        .body(Full::default())
        .unwrap();
    let answer = send_h2(&h.client(CLIENT_ID, H2), req).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "podinfo: GET /h2\n");
    assert_eq!(answer.header("x-seen-version"), Some("HTTP/2.0"));
    assert_eq!(answer.header("x-seen-l5d-client-id"), Some(CLIENT_ID));
    assert!(
        answer
            .header("x-seen-forwarded")
            .unwrap()
            .starts_with(&format!("by={GATEWAY_ID};"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l5d_dst_override_wins_over_http2_authority() {
    let h = Harness::start(|_| {}).await;
    let req = get("http://elsewhere.example/x")
        .header("l5d-dst-override", SERVICE)
        .body(Full::default())
        .unwrap();
    let answer = send_h2(&h.client(CLIENT_ID, H2), req).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "podinfo: GET /x\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_supplied_client_id_is_overwritten() {
    let h = Harness::start(|_| {}).await;
    let req = get("/")
        .header("l5d-dst-override", SERVICE)
        .header("l5d-client-id", "admin.forged")
        .body(Full::default())
        .unwrap();
    let answer = send_h1(&h.client(CLIENT_ID, H1), req).await;
    assert_eq!(answer.header("x-seen-l5d-client-id"), Some(CLIENT_ID));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_without_certificate_is_refused_and_counted() {
    let h = Harness::start(|_| {}).await;
    assert_refused(&h.client_with(None, H1)).await;
    assert!(
        eventually(SOON, || async {
            h.gateway.metrics.refused_count("no_client_cert") == 1
        })
        .await
    );
    assert_eq!(h.backend.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_of_another_trust_anchor_is_refused() {
    let h = Harness::start(|_| {}).await;
    let other = TestCa::new("other.mesh");
    let creds = other.leaf(CLIENT_ID).credentials(&other.anchors()).unwrap();
    assert_refused(&h.client_with(Some(&creds), H1)).await;
    assert!(
        eventually(SOON, || async {
            h.gateway.metrics.refused_count("unknown_ca") == 1
        })
        .await
    );
    assert_eq!(
        h.metric("gateway_handshakes_refused_total{reason=\"unknown_ca\"}")
            .await,
        1,
        "refusals are visible on /metrics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_callers_are_refused() {
    let h = Harness::start(|_| {}).await;
    // Credentials::new validates; a refused leaf must be built unvalidated, as an attacker would.
    let expired = h.ca.expired_leaf(CLIENT_ID);
    let future = h.ca.future_leaf(CLIENT_ID);
    for (leaf, reason) in [(expired, "expired"), (future, "not_yet_valid")] {
        let config = raw_client(&h.anchors, &leaf);
        assert_refused_raw(config, h.gateway.data_addr).await;
        assert!(
            eventually(SOON, || async {
                h.gateway.metrics.refused_count(reason) == 1
            })
            .await,
            "{reason} not counted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_of_two_roots_accepts_callers_of_both() {
    let old = TestCa::new("old.mesh");
    let new = TestCa::new("new.mesh");
    let bundle = format!("{}{}", old.anchors_pem(), new.anchors_pem());
    let anchors = TrustAnchors::from_pem("bundle", bundle.as_bytes()).unwrap();
    assert_eq!(anchors.anchors().len(), 2);
    let h = Harness::start_with(old, anchors.clone(), |_| {}).await;
    for ca in [&*h.ca, &new] {
        let creds = ca.leaf(CLIENT_ID).credentials(&anchors).unwrap();
        let client = h.client_with(Some(&creds), H1);
        let req = get("/")
            .header("l5d-dst-override", SERVICE)
            .body(Full::default())
            .unwrap();
        assert_eq!(send_h1(&client, req).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_outside_suffixes_is_404_without_upstream_connection() {
    let h = Harness::start(|_| {}).await;
    let client = h.client(CLIENT_ID, H1);
    for target in [
        "kubernetes.default.svc.cluster.local.evil.com",
        "127.0.0.1:9898",
        "localhost:4191",
        "example.com",
    ] {
        let req = get("/")
            .header("l5d-dst-override", target)
            .body(Full::default())
            .unwrap();
        let answer = send_h1(&client, req).await;
        assert_eq!(answer.status, 404, "{target}");
        assert_eq!(answer.header("l5d-proxy-error"), Some("bad gateway domain"));
    }
    let req = get("/")
        .header("l5d-dst-override", "bad name.svc.cluster.local")
        .body(Full::default())
        .unwrap();
    assert_eq!(send_h1(&client, req).await.status, 400);
    assert_eq!(
        h.backend.connections(),
        0,
        "refused targets never reach a backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_by_this_gateway_is_a_loop() {
    let h = Harness::start(|_| {}).await;
    let req = get("/")
        .header("l5d-dst-override", SERVICE)
        .header(
            "forwarded",
            format!("by={GATEWAY_ID};for=a;host={SERVICE};proto=https"),
        )
        .body(Full::default())
        .unwrap();
    let answer = send_h1(&h.client(CLIENT_ID, H1), req).await;
    assert_loop_refused(&answer);
    assert_eq!(h.backend.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_with_the_gateways_own_identity_is_a_loop() {
    let h = Harness::start(|_| {}).await;
    let req = get("/")
        .header("l5d-dst-override", SERVICE)
        .body(Full::default())
        .unwrap();
    assert_eq!(send_h1(&h.client(GATEWAY_ID, H1), req).await.status, 508);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_caller_gets_grpc_status_instead_of_http_error() {
    let h = Harness::start(|_| {}).await;
    let req = Request::post("http://nowhere.example.com/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .body(Full::default())
        .unwrap();
    let answer = send_h2(&h.client(CLIENT_ID, H2), req).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("grpc-status"), Some("5"));
    assert_eq!(answer.header("l5d-proxy-error"), Some("bad gateway domain"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_is_502_with_reason() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let h = Harness::start(|c| {
        c.endpoints
            .insert("down.test.svc.cluster.local:80".into(), vec![dead.into()]);
    })
    .await;
    for client in [h.client(CLIENT_ID, H1), h.client(CLIENT_ID, H2)] {
        let req = get("http://down.test.svc.cluster.local/")
            .body(Full::default())
            .unwrap();
        let answer = if client_is_h2(&client).await {
            send_h2(&client, req).await
        } else {
            send_h1(&client, req).await
        };
        assert_eq!(answer.status, 502);
        let error = answer.header("l5d-proxy-error").unwrap();
        assert!(error.contains(&dead.to_string()), "{error}");
        assert_eq!(answer.header("l5d-proxy-connection"), Some("close"));
    }
}

async fn client_is_h2(client: &gateway::cli::client::MtlsClient) -> bool {
    let tls = client.connect().await.unwrap();
    tls.get_ref().1.alpn_protocol() == Some(b"h2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_bodies_stream_intact_both_ways() {
    let h = Harness::start(|_| {}).await;
    let body: Bytes = (0..10 * 1024 * 1024)
        .map(|i: u32| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let h1 = Request::post("/upload")
        .header("l5d-dst-override", SERVICE)
        .body(Full::new(body.clone()))
        .unwrap();
    let answer = send_h1(&h.client(CLIENT_ID, H1), h1).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.body == body,
        "HTTP/1.1 echo differs ({} bytes back)",
        answer.body.len()
    );
    let h2 = Request::post(format!("http://{SERVICE}/upload"))
        .body(Full::new(body.clone()))
        .unwrap();
    let answer = send_h2(&h.client(CLIENT_ID, H2), h2).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.body == body,
        "HTTP/2 echo differs ({} bytes back)",
        answer.body.len()
    );
    assert!(h.metric("tcp_read_bytes_total{direction=\"inbound\"").await > 20 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_200_after_start_and_503_when_draining() {
    let h = Harness::start(|_| {}).await;
    assert_eq!(
        h.admin_get("/ready").await,
        (http::StatusCode::OK, "ready\n".to_owned())
    );
    assert_eq!(h.admin_get("/live").await.0, 200);
    assert_eq!(h.admin_get("/nope").await.0, 404);
    h.gateway.readiness.set_draining();
    assert_eq!(
        h.admin_get("/ready").await,
        (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "not ready: draining\n".to_owned()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_connections() {
    let h = Harness::start(|_| {}).await;
    let client = h.client(CLIENT_ID, H1);
    let mut send = client.http1().await.unwrap();
    for _ in 0..3 {
        send.ready().await.unwrap();
        let req = get("/")
            .header("l5d-dst-override", SERVICE)
            .body(Full::default())
            .unwrap();
        assert_eq!(
            collect(send.send_request(req).await.unwrap()).await.status,
            200
        );
    }
    let route = format!(
        "direction=\"outbound\",authority=\"{SERVICE}\",tls=\"true\",client_id=\"{CLIENT_ID}\""
    );
    assert_eq!(h.metric(&format!("request_total{{{route}}}")).await, 3);
    assert_eq!(
        h.metric(&format!(
            "response_total{{{route},status_code=\"200\",classification=\"success\"}}"
        ))
        .await,
        3
    );
    assert_eq!(
        h.metric(&format!(
            "response_latency_ms_count{{{route},status_code=\"200\"}}"
        ))
        .await,
        3
    );
    let authz = format!(
        "inbound_http_authz_allow_total{{srv_kind=\"default\",srv_name=\"all-authenticated\",authz_kind=\"default\",authz_name=\"all-authenticated\",tls=\"true\",client_id=\"{CLIENT_ID}\"}}"
    );
    assert_eq!(h.metric(&authz).await, 3);
    let inbound =
        format!("direction=\"inbound\",peer=\"src\",tls=\"true\",client_id=\"{CLIENT_ID}\"");
    assert_eq!(h.metric(&format!("tcp_open_total{{{inbound}")).await, 1);
    assert_eq!(
        h.metric(&format!("tcp_open_connections{{{inbound}")).await,
        1
    );
    assert!(
        h.metric("tcp_write_bytes_total{direction=\"outbound\"")
            .await
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_at_the_detect_timeout() {
    let h = Harness::start(|c| c.detect_timeout = Duration::from_millis(200)).await;
    let mut tcp = tokio::net::TcpStream::connect(h.gateway.data_addr)
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the gateway closes a silent connection"
    );
    assert!(
        eventually(SOON, || async {
            h.gateway.metrics.refused_count("timeout") == 1
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_http_on_the_data_port_is_refused_as_not_tls() {
    let h = Harness::start(|_| {}).await;
    let mut tcp = tokio::net::TcpStream::connect(h.gateway.data_addr)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut buf),
    )
    .await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "no HTTP answer on the mTLS port"
    );
    assert!(
        eventually(SOON, || async {
            h.gateway.metrics.refused_count("not_tls") == 1
        })
        .await
    );
}

/// A client config presenting `leaf` without validating it first.
fn raw_client(
    anchors: &TrustAnchors,
    leaf: &identity::issue::Issued,
) -> std::sync::Arc<rustls::ClientConfig> {
    let config = rustls::ClientConfig::builder_with_provider(identity::tls_config::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(anchors.root_store())
        .with_client_auth_cert(leaf.chain.clone(), leaf.key.clone_key())
        .unwrap();
    std::sync::Arc::new(config)
}

async fn assert_refused_raw(
    config: std::sync::Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(GATEWAY_ID).unwrap();
    let Ok(mut tls) = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    else {
        return;
    };
    tokio::io::AsyncWriteExt::write_all(&mut tls, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .ok();
    let mut buf = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut buf).await;
    assert!(
        read.is_err() || buf.is_empty(),
        "refused caller got {:?}",
        String::from_utf8_lossy(&buf)
    );
}

#[test]
fn validity_helpers_make_the_windows_they_claim() {
    let v = Validity::from_now(Duration::from_secs(60));
    assert!(v.not_before < SystemTime::now() && v.not_after > SystemTime::now());
}
