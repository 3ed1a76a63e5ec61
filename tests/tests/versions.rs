//! HTTP versions on the upstream hop, black-box: HTTP/1 callers to an `h2`-hinted meshed pod go
//! as HTTP/2 with `l5d-orig-proto`; HTTP/2 callers (GET, streamed POST, large response) reach an
//! HTTP/1-only service; HTTP/1.1 callers reach an h2c-only service; what was learned is reused and
//! counted once; gRPC to an HTTP/1-only service gets a gRPC error; `upstream_protocol` overrides;
//! `l5d-dst-canonical` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use gateway::cli::client::MtlsClient;
use gateway::cli::demo::{Backend, PodPort, Speaks};
use gateway::upstream::{Address, Hint, Preference};
use http::Request;
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use identity::testing::TestCa;
use support::{Answer, CLIENT_ID, H1, H2, Harness, SERVICE, collect, routed_get, send_h1, send_h2};

const POD_ID: &str = "podinfo.test.serviceaccount.identity.linkerd.cluster.local";

async fn service(speaks: Speaks) -> Backend {
    Backend::start_speaking(SocketAddr::from(([127, 0, 0, 1], 0)), "podinfo", speaks)
        .await
        .unwrap()
}

/// A gateway whose `SERVICE` is `address`, on `ca`.
async fn gateway_to(ca: TestCa, address: Address, preference: Option<Preference>) -> Harness {
    let anchors = ca.anchors();
    Harness::start_with(ca, anchors, move |c| {
        c.endpoints.insert(SERVICE.to_owned(), vec![address]);
        if let Some(p) = preference {
            c.upstream_protocol.insert(SERVICE.to_owned(), p);
        }
    })
    .await
}

async fn fallbacks(h: &Harness, speaks: &str) -> u64 {
    h.metric_or_zero(&format!(
        "outbound_http_version_fallbacks_total{{authority=\"{SERVICE}\",speaks=\"{speaks}\"}}"
    ))
    .await
}

fn post(body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::post("/echo")
        .header("l5d-dst-override", SERVICE)
        .header("content-length", body.len())
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_caller_reaches_an_h2_hinted_pod_as_http2_with_orig_proto() {
    let ca = TestCa::new("test.mesh");
    let app = service(Speaks::Both).await;
    let pod = support::pod(&ca, POD_ID, PodPort::App, app.addr).await;
    let mut address = Address::meshed(pod.addr, POD_ID.parse().unwrap());
    address.hint = Some(Hint::H2);
    let h = gateway_to(ca, address, None).await;
    let answer = send_h1(&h.client(CLIENT_ID, H1), routed_get(SERVICE)).await;
    assert_eq!(answer.status, 200);
    // The stand-in pod relays bytes: the application sees what the pod's proxy would receive.
    assert_eq!(answer.header("x-seen-version"), Some("HTTP/2.0"));
    assert_eq!(answer.header("x-seen-l5d-orig-proto"), Some("HTTP/1.1"));
    assert_eq!(answer.header("x-seen-l5d-dst-canonical"), Some(SERVICE));
    assert!(
        answer.header("l5d-orig-proto").is_none(),
        "not relayed to an HTTP/1 caller"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_callers_reach_an_http1_only_service_and_the_version_is_learned_once() {
    let app = service(Speaks::Http1).await;
    let h = gateway_to(TestCa::new("test.mesh"), Address::plain(app.addr), None).await;
    let client = h.client(CLIENT_ID, H2);

    let answer = send_h2(&client, routed_get(SERVICE)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.headers);
    assert_eq!(answer.header("x-seen-version"), Some("HTTP/1.1"));
    assert_eq!(answer.header("x-seen-host"), Some(SERVICE));
    assert_eq!(answer.body, "podinfo: GET /\n");
    assert_eq!(fallbacks(&h, "http1").await, 1);

    // A streamed POST (no length) goes chunked and comes back whole.
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..8)
        .map(|i| Ok(Frame::data(Bytes::from(vec![b'a' + i; 10_000]))))
        .collect();
    let req = Request::post("/upload")
        .header("l5d-dst-override", SERVICE)
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(client.connect().await.unwrap()),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let answer = collect(send.send_request(req).await.unwrap()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), 80_000);
    assert!(answer.body.starts_with(&[b'a'; 10_000]) && answer.body.ends_with(&[b'h'; 10_000]));

    // A large response from the HTTP/1 service, streamed to the HTTP/2 caller.
    let big: &'static [u8] = Box::leak(vec![7u8; 3 << 20].into_boxed_slice());
    let answer = send_h2(&client, post(big)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), big.len());
    assert_eq!(fallbacks(&h, "http1").await, 1, "learned: no second probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_callers_reach_an_h2c_only_service_even_with_a_body() {
    let app = service(Speaks::H2c).await;
    let h = gateway_to(TestCa::new("test.mesh"), Address::plain(app.addr), None).await;
    let client = h.client(CLIENT_ID, H1);
    // The first request probes: the service answers HTTP/1 with a SETTINGS frame, and the
    // request (its body taped) goes again as HTTP/2.
    let answer = send_h1(&client, post(b"hello over h2c")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.headers);
    assert_eq!(answer.body, "hello over h2c");
    assert_eq!(answer.header("x-seen-version"), Some("HTTP/2.0"));
    assert!(
        answer.header("x-seen-l5d-orig-proto").is_none(),
        "an h2c service is no proxy"
    );
    assert_eq!(fallbacks(&h, "http2").await, 1);
    let answer = send_h1(&client, routed_get(SERVICE)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-seen-version"), Some("HTTP/2.0"));
    assert_eq!(fallbacks(&h, "http2").await, 1);
}

async fn grpc_call(client: &MtlsClient) -> Answer {
    let req = Request::post("/echo.Echo/Say")
        .header("l5d-dst-override", SERVICE)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap();
    send_h2(client, req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_to_an_http1_only_service_is_a_grpc_error_not_a_hang() {
    // Learned by probing, and hinted: both end in the same clean error.
    for hint in [None, Some(Hint::Http1)] {
        let app = service(Speaks::Http1).await;
        let mut address = Address::plain(app.addr);
        address.hint = hint;
        let h = gateway_to(TestCa::new("test.mesh"), address, None).await;
        let answer = grpc_call(&h.client(CLIENT_ID, H2)).await;
        assert_eq!(answer.status, 200, "gRPC errors travel as grpc-status");
        assert_eq!(answer.header("grpc-status"), Some("14"), "{hint:?}");
        let message = answer.header("grpc-message").unwrap();
        assert!(
            message.contains("only HTTP/1") && message.contains("gRPC"),
            "{message}"
        );
        // Nothing of the gRPC request was handed to the service as HTTP/1.
        assert!(app.connections() <= 1, "at most the probe's connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_protocol_overrides_the_callers_version() {
    let app = service(Speaks::Both).await;
    let h = gateway_to(
        TestCa::new("test.mesh"),
        Address::plain(app.addr),
        Some(Preference::Http1),
    )
    .await;
    let answer = send_h2(&h.client(CLIENT_ID, H2), routed_get(SERVICE)).await;
    assert_eq!(answer.header("x-seen-version"), Some("HTTP/1.1"));
    let app = service(Speaks::Both).await;
    let h = gateway_to(
        TestCa::new("test.mesh"),
        Address::plain(app.addr),
        Some(Preference::Http2),
    )
    .await;
    let answer = send_h1(&h.client(CLIENT_ID, H1), routed_get(SERVICE)).await;
    assert_eq!(answer.header("x-seen-version"), Some("HTTP/2.0"));
    assert_eq!(fallbacks(&h, "http2").await, 0, "an override never probes");
}

/// An h2c-only service that, like a lazy one, says nothing until the caller's first bytes have
/// arrived: an HTTP/1 request is read whole (head and body), then answered with a SETTINGS frame
/// and a close — so the gateway has already sent it and must send it again from its tape.
async fn lazy_h2c_service() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = std::sync::Arc::new(AtomicUsize::new(0));
    let count = refused.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 3];
                if tcp.peek(&mut first).await.is_err() {
                    return;
                }
                if &first == b"PRI" {
                    let service = hyper::service::service_fn(
                        |req: Request<hyper::body::Incoming>| async move {
                            let version = format!("{:?}", req.version());
                            let body = http_body_util::BodyExt::collect(req.into_body())
                                .await?
                                .to_bytes();
                            let mut response = http::Response::new(Full::new(body));
                            response
                                .headers_mut()
                                .insert("x-seen-version", version.parse().unwrap());
                            Ok::<_, hyper::Error>(response)
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                    return;
                }
                // Read the HTTP/1 request to its last body byte, then answer as HTTP/2 does.
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.ends_with(b"taped body") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, Ordering::Relaxed);
                let _ = tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    (addr, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_already_sent_as_http1_to_an_h2c_service_goes_again_from_its_tape() {
    let (addr, refused) = lazy_h2c_service().await;
    let h = gateway_to(TestCa::new("test.mesh"), Address::plain(addr), None).await;
    let answer = send_h1(&h.client(CLIENT_ID, H1), post(b"the whole taped body")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.headers);
    assert_eq!(answer.body, "the whole taped body");
    assert_eq!(answer.header("x-seen-version"), Some("HTTP/2.0"));
    assert_eq!(
        refused.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "it was sent once as HTTP/1"
    );
    assert_eq!(fallbacks(&h, "http2").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_http2_requests_to_an_http1_service_learn_it_once() {
    let app = service(Speaks::Http1).await;
    let h = gateway_to(TestCa::new("test.mesh"), Address::plain(app.addr), None).await;
    let client = h.client(CLIENT_ID, H2);
    let send = client.http2().await.unwrap();
    let calls = (0..8).map(|i| {
        let mut send = send.clone();
        async move {
            let req = Request::get(format!("/{i}"))
                .header("l5d-dst-override", SERVICE)
                .body(Full::default())
                .unwrap();
            collect(send.send_request(req).await.unwrap()).await
        }
    });
    for answer in futures_util::future::join_all(calls).await {
        assert_eq!(answer.status, 200, "{:?}", answer.headers);
        assert_eq!(answer.header("x-seen-version"), Some("HTTP/1.1"));
    }
    assert_eq!(
        fallbacks(&h, "http1").await,
        1,
        "one probe, learned for all"
    );
}
