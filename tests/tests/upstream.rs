//! What happens behind the gateway, black-box: WebSocket upgrades through HTTP and header
//! sessions, CONNECT, large headers (431 or passed), header-name case, load shedding and
//! response timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use gateway::cli::demo::Backend;
use gateway::transport_header::{SessionProtocol, TransportHeader};
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const WS: &str = "ws.test.svc.cluster.local:8080";
const RAW: &str = "raw.test.svc.cluster.local:8080";

/// A WebSocket echo service on 127.0.0.1:0.
async fn websocket_echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() {
                        break;
                    }
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn websocket_round_trip<S>(stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = format!("ws://{WS}/chat").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("l5d-dst-override", WS.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("hello through the gateway"))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("hello through the gateway")
    );
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(blob));
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_an_http_session_and_a_header_session() {
    let echo = websocket_echo().await;
    let h = Harness::start(|c| {
        c.endpoints.insert(WS.to_owned(), vec![echo.into()]);
    })
    .await;
    websocket_round_trip(h.client(CLIENT_ID, H1).connect().await.unwrap()).await;
    let header = TransportHeader {
        port: 8080,
        name: Some("ws.test.svc.cluster.local".to_owned()),
        protocol: SessionProtocol::Http1,
    };
    let stream = h
        .client(CLIENT_ID, L5D)
        .connect_with_header(&header)
        .await
        .unwrap();
    websocket_round_trip(stream).await;
}

fn get_with(name: &str, value: &str) -> Request<Full<Bytes>> {
    Request::get("/")
        .header("l5d-dst-override", SERVICE)
        .header(name, value)
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn a_200_kib_header_passes_when_configured_and_gets_431_when_not() {
    let big = "x".repeat(200 * 1024);
    let small = Harness::start(|_| {}).await;
    for answer in [
        send_h1(&small.client(CLIENT_ID, H1), get_with("x-big", &big)).await,
        send_h2(&small.client(CLIENT_ID, H2), get_with("x-big", &big)).await,
    ] {
        assert_eq!(answer.status, 431);
        assert_eq!(
            answer.header("l5d-proxy-error"),
            Some("request header fields too large")
        );
    }
    let large = Harness::start(|c| c.max_header_list_size = 256 * 1024).await;
    assert_eq!(
        send_h1(&large.client(CLIENT_ID, H1), get_with("x-big", &big))
            .await
            .status,
        200
    );
    assert_eq!(
        send_h2(&large.client(CLIENT_ID, H2), get_with("x-big", &big))
            .await
            .status,
        200
    );
}

/// A backend that answers one fixed HTTP/1.1 response and hands over the request head it read.
async fn raw_backend() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let head = read_head(&mut tcp).await;
                let _ = tx.send(head).await;
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nX-Reply-Case: Kept\r\nContent-Length: 0\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    (addr, rx)
}

async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

async fn raw_exchange(h: &Harness) -> String {
    let mut tls = h.client(CLIENT_ID, H1).connect().await.unwrap();
    tls.write_all(
        format!("GET /case HTTP/1.1\r\nHost: {RAW}\r\nX-Custom-Header: Value\r\nl5d-dst-override: {RAW}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    read_head(&mut tls).await
}

#[tokio::test]
async fn http1_header_case_is_kept_end_to_end_unless_turned_off() {
    for preserve in [true, false] {
        let (addr, mut heads) = raw_backend().await;
        let h = Harness::start(move |c| {
            c.endpoints.insert(RAW.to_owned(), vec![addr.into()]);
            c.preserve_header_case = preserve;
        })
        .await;
        let response = raw_exchange(&h).await;
        let request = heads.recv().await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert_eq!(
            request.contains("X-Custom-Header: Value"),
            preserve,
            "{request}"
        );
        assert_eq!(
            response.contains("X-Reply-Case: Kept"),
            preserve,
            "{response}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("x-custom-header: value")
        );
    }
}

#[tokio::test]
async fn the_in_flight_limit_sheds_with_503_and_recovers() {
    let h = Harness::start(|c| c.max_in_flight_requests = 1).await;
    // Request 1 streams a body the echo backend streams back: in flight until it ends.
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let body = StreamBody::new(tokio_stream_from(body_rx));
    let tls = h.client(CLIENT_ID, H1).connect().await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::post("/")
        .header("l5d-dst-override", SERVICE)
        .header("transfer-encoding", "chunked")
        .body(body)
        .unwrap();
    let first = send.send_request(request).await.unwrap();
    assert_eq!(first.status(), 200);

    let shed = send_h1(&h.client(CLIENT_ID, H1), get_with("x-n", "2")).await;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.header("l5d-proxy-error"), Some("load shed"));
    assert_eq!(
        h.backend.connections(),
        1,
        "the shed request never reached the service"
    );

    body_tx
        .send(Ok(Frame::data(Bytes::from_static(b"done"))))
        .await
        .unwrap();
    drop(body_tx);
    let echoed = first.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&echoed[..], b"done");
    assert!(
        eventually(SOON, || async {
            send_h1(&h.client(CLIENT_ID, H1), get_with("x-n", "3"))
                .await
                .status
                == 200
        })
        .await,
        "never recovered after the first request finished"
    );
}

/// An mpsc receiver as a `Stream` (what `tokio-stream` would provide).
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn connect_is_refused_with_405_unless_enabled_then_tunnels() {
    let echo = Backend::start_tcp_echo().await.unwrap();
    const ECHO: &str = "echo.test.svc.cluster.local:7777";
    let connect = || {
        Request::connect(ECHO)
            .header("host", ECHO)
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let off = Harness::start(|c| {
        c.endpoints.insert(ECHO.to_owned(), vec![echo.addr.into()]);
    })
    .await;
    let refused = send_h1(&off.client(CLIENT_ID, H1), connect()).await;
    assert_eq!(refused.status, 405);

    let on = Harness::start(|c| {
        c.endpoints.insert(ECHO.to_owned(), vec![echo.addr.into()]);
        c.http_connect = true;
    })
    .await;
    let tls = on.client(CLIENT_ID, H1).connect().await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let response = send.send_request(connect()).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut tunnel = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    tunnel.write_all(b"through the tunnel").await.unwrap();
    let mut echoed = [0u8; 18];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"through the tunnel");
}

#[tokio::test]
async fn a_silent_upstream_gets_504_after_the_response_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and reads, never answers.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    const SILENT: &str = "silent.test.svc.cluster.local:80";
    let h = Harness::start(move |c| {
        c.endpoints.insert(SILENT.to_owned(), vec![addr.into()]);
        c.response_timeouts
            .insert(SILENT.to_owned(), Duration::from_millis(200));
    })
    .await;
    let answer = send_h1(
        &h.client(CLIENT_ID, H1),
        Request::get("/")
            .header("l5d-dst-override", SILENT)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 504);
    assert_eq!(
        answer.header("l5d-proxy-error"),
        Some("response timed out after 200ms")
    );
    // Other targets have no deadline and still answer.
    assert_eq!(
        send_h1(&h.client(CLIENT_ID, H1), get_with("x-n", "1"))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_close_after_the_pool_idle_timeout_without_new_traffic() {
    // A backend that reports each connection's end.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(tcp), service)
                .await;
                let _ = closed_tx.send(());
            });
        }
    });
    const IDLE: &str = "idle.test.svc.cluster.local:8080";
    let h = Harness::start(|c| {
        c.endpoints.insert(IDLE.to_owned(), vec![addr.into()]);
        c.pool_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let get = || {
        Request::get("/")
            .header("l5d-dst-override", IDLE)
            .body(Full::default())
            .unwrap()
    };
    // One pooled HTTP/1 connection and one HTTP/2 connection, then silence.
    assert_eq!(send_h1(&h.client(CLIENT_ID, H1), get()).await.status, 200);
    assert_eq!(send_h2(&h.client(CLIENT_ID, H2), get()).await.status, 200);
    for which in ["first", "second"] {
        tokio::time::timeout(Duration::from_secs(10), closed.recv())
            .await
            .unwrap_or_else(|_| panic!("the {which} idle upstream connection was not closed"));
    }
    assert!(
        eventually(SOON, || async {
            h.metric("outbound_pool_idle_connections{").await == 0
        })
        .await
    );
}
