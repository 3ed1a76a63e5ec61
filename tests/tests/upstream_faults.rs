//! Upstream faults: a backend that resets mid-response, closes before or after its response
//! headers, never answers, and a DNS server that is down. Each gets the status of DESIGN §5 (or a
//! cut-off body when the headers had already gone out), the gateway stays ready and keeps serving
//! other targets, and no connection is left open once the callers are gone.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use support::{CLIENT_ID, H1, H2, Harness, SERVICE, SOON, eventually, routed_get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RESET: &str = "reset.test.svc.cluster.local:80";
const CLOSE_EARLY: &str = "early.test.svc.cluster.local:80";
const CLOSE_AFTER_HEAD: &str = "head.test.svc.cluster.local:80";
const SILENT: &str = "silent.test.svc.cluster.local:80";
const NO_DNS: &str = "nodns.test.svc.cluster.local:80";

#[derive(Clone, Copy)]
enum Fault {
    /// Half the body, then a TCP reset.
    ResetMidBody,
    /// Reads the request, closes without a byte.
    CloseBeforeHead,
    /// The response head (promising 1000 bytes), then a clean close.
    CloseAfterHead,
    /// Reads the request and holds the connection, never answering.
    Silent,
}

/// A raw HTTP/1.1 backend misbehaving as `fault` on every request.
async fn faulty(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(misbehave(tcp, fault));
        }
    });
    addr
}

async fn misbehave(mut tcp: TcpStream, fault: Fault) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let promise = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n";
    match fault {
        Fault::ResetMidBody => {
            let _ = tcp.write_all(promise).await;
            let _ = tcp.write_all(&[b'x'; 500]).await;
            let _ = tcp.set_zero_linger();
        }
        Fault::CloseBeforeHead => {}
        Fault::CloseAfterHead => {
            let _ = tcp.write_all(promise).await;
            let _ = tcp.shutdown().await;
        }
        Fault::Silent => {
            // Hold it until the gateway gives up and closes its side.
            let _ = tcp.read(&mut byte).await;
        }
    }
}

async fn harness() -> Harness {
    let reset = faulty(Fault::ResetMidBody).await;
    let early = faulty(Fault::CloseBeforeHead).await;
    let head = faulty(Fault::CloseAfterHead).await;
    let silent = faulty(Fault::Silent).await;
    // A DNS server that is down: a closed UDP port.
    let down = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    Harness::start(move |c| {
        c.endpoints.insert(RESET.to_owned(), vec![reset.into()]);
        c.endpoints
            .insert(CLOSE_EARLY.to_owned(), vec![early.into()]);
        c.endpoints
            .insert(CLOSE_AFTER_HEAD.to_owned(), vec![head.into()]);
        c.endpoints.insert(SILENT.to_owned(), vec![silent.into()]);
        c.response_timeouts
            .insert(SILENT.to_owned(), Duration::from_millis(300));
        c.dns_servers = vec![down];
    })
    .await
}

/// Status, `l5d-proxy-error`, and whether the body arrived whole; status 0 when the connection
/// ended without a response.
async fn outcome(
    response: hyper::Result<http::Response<hyper::body::Incoming>>,
) -> (u16, Option<String>, bool) {
    let response = match response {
        Ok(r) => r,
        Err(_) => return (0, None, false),
    };
    let status = response.status().as_u16();
    let error = response
        .headers()
        .get("l5d-proxy-error")
        .map(|v| v.to_str().unwrap().to_owned());
    let whole = response.into_body().collect().await.is_ok();
    (status, error, whole)
}

/// Open accepted (`peer="src"`) connections, from `/metrics`.
async fn open_downstream(h: &Harness) -> u64 {
    let (_, text) = h.admin_get("/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("tcp_open_connections{") && l.contains("peer=\"src\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_upstream_fault_gets_its_status_and_the_gateway_stays_healthy() {
    let h = harness().await;
    for (alpn, label) in [(H1, "HTTP/1"), (H2, "HTTP/2")] {
        let client = h.client(CLIENT_ID, alpn);
        // HTTP/2: one connection for every case; a failed stream must not take it down.
        let shared = if alpn == H2 {
            Some(client.http2().await.unwrap())
        } else {
            None
        };
        let send = async |target: &str| {
            if alpn == H1 {
                let mut send = client.http1().await.unwrap();
                outcome(send.send_request(routed_get(target)).await).await
            } else {
                // As a Linkerd proxy sends an upgraded HTTP/1 request: the backends speak HTTP/1.
                let mut req = routed_get(target);
                req.headers_mut()
                    .insert("l5d-orig-proto", http::HeaderValue::from_static("HTTP/1.1"));
                let mut send = shared.clone().unwrap();
                outcome(send.send_request(req).await).await
            }
        };
        // The backend committed to a response, then failed: the caller's response is cut off
        // (HTTP/2: stream reset; HTTP/1: connection closed, before the head when no body byte
        // had come yet, since hyper sends the head with the first bytes of the body). A reset
        // that arrives before the head was read is a 502. Never a whole 200.
        for (target, what) in [
            (RESET, "reset mid-body"),
            (CLOSE_AFTER_HEAD, "close after head"),
        ] {
            let (status, _, whole) = send(target).await;
            assert!(
                matches!((status, whole), (200 | 0, false) | (502, _)),
                "{label} {what}: {status} whole={whole}"
            );
        }
        // Nothing came back: 502 with the reason.
        let (status, error, _) = send(CLOSE_EARLY).await;
        assert_eq!(status, 502, "{label} close before head");
        assert!(error.is_some_and(|e| !e.is_empty()));
        // No answer within the target's response timeout: 504.
        let (status, error, _) = send(SILENT).await;
        assert_eq!(status, 504, "{label} silent");
        assert_eq!(error.as_deref(), Some("response timed out after 300ms"));
        // DNS down: 503 with the resolver's reason, not a hang.
        let (status, error, _) = send(NO_DNS).await;
        assert_eq!(status, 503, "{label} DNS down");
        assert!(error.is_some_and(|e| !e.is_empty()));
        // And the healthy service still answers on the same gateway.
        let (status, _, whole) = send(SERVICE).await;
        assert_eq!((status, whole), (200, true), "{label} healthy target");
    }
    assert_eq!(h.admin_get("/ready").await.0, 200);
    // Every caller connection is gone again: nothing leaked in the gateway.
    assert!(
        eventually(Duration::from_secs(10), || async {
            open_downstream(&h).await == 0
        })
        .await,
        "open downstream connections: {}",
        open_downstream(&h).await
    );
    assert!(eventually(SOON, || async { h.admin_get("/ready").await.0 == 200 }).await);
}
