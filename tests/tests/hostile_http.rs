//! Hostile HTTP/1 from an authenticated caller: malformed framing and header bytes get 400/431 and
//! a closed connection with nothing forwarded; requests carrying both `Content-Length` and
//! `Transfer-Encoding` cannot smuggle a second request; trickled headers are cut at the header
//! timeout; a caller that never reads cannot make the gateway buffer a whole response.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use gateway::config::Config;
use gateway::testing::eventually;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{CLIENT_ID, H1, Harness, stalls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SVC: &str = "recorder.test.svc.cluster.local:8080";

/// A backend that records every request it receives (`METHOD path body`) and answers 200.
async fn recorder() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        record.lock().unwrap().push(format!(
                            "{} {} {}",
                            parts.method,
                            parts.uri.path(),
                            String::from_utf8_lossy(&body)
                        ));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn harness(tweak: impl FnOnce(&mut Config)) -> (Harness, Arc<Mutex<Vec<String>>>) {
    let (addr, seen) = recorder().await;
    let h = Harness::start(|c| {
        c.endpoints.insert(SVC.to_owned(), vec![addr.into()]);
        tweak(c);
    })
    .await;
    (h, seen)
}

/// Writes `request` on a new HTTP/1.1 connection and reads until the gateway closes it.
async fn exchange(h: &Harness, request: &[u8]) -> String {
    let mut tls = h.client(CLIENT_ID, H1).connect().await.unwrap();
    tls.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer))
        .await
        .expect("the gateway closes the connection")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

fn head(lines: &str) -> Vec<u8> {
    format!("{lines}\r\n").into_bytes()
}

#[tokio::test]
async fn malformed_framing_and_header_bytes_get_400_and_a_closed_connection_with_nothing_forwarded()
{
    let (h, seen) = harness(|_| {}).await;
    let dst = format!("l5d-dst-override: {SVC}\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "two different Content-Length values",
            head(&format!(
                "POST / HTTP/1.1\r\n{dst}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            )),
        ),
        (
            "Content-Length not a number",
            head(&format!(
                "POST / HTTP/1.1\r\n{dst}Content-Length: 1x\r\n\r\n"
            )),
        ),
        (
            "signed Content-Length",
            head(&format!(
                "POST / HTTP/1.1\r\n{dst}Content-Length: +5\r\n\r\nhello"
            )),
        ),
        (
            "Transfer-Encoding that does not end in chunked",
            head(&format!(
                "POST / HTTP/1.1\r\n{dst}Transfer-Encoding: chunked, gzip\r\n\r\n"
            )),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            head(&format!(
                "POST / HTTP/1.0\r\n{dst}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            )),
        ),
        (
            "obs-fold (a header continued on the next line)",
            head(&format!(
                "GET / HTTP/1.1\r\n{dst}X-Folded: a\r\n  b\r\n\r\n"
            )),
        ),
        (
            "bare CR inside a header line",
            head(&format!("GET / HTTP/1.1\r\n{dst}X-A: a\rX-B: b\r\n\r\n")),
        ),
        (
            "NUL byte in a header value",
            head(&format!("GET / HTTP/1.1\r\n{dst}X-A: a\0b\r\n\r\n")),
        ),
        (
            "space inside a header name",
            head(&format!("GET / HTTP/1.1\r\n{dst}Bad Name: x\r\n\r\n")),
        ),
        (
            "space before the colon",
            head(&format!(
                "GET / HTTP/1.1\r\n{dst}Content-Length : 0\r\n\r\n"
            )),
        ),
        (
            "control byte in the request target",
            head(&format!("GET /a\x01b HTTP/1.1\r\n{dst}\r\n")),
        ),
        (
            "not HTTP at all",
            b"\x16\x03\x01 hello gateway\r\n\r\n".to_vec(),
        ),
    ];
    for (what, request) in cases {
        let answer = exchange(&h, &request).await;
        assert!(
            answer.starts_with("HTTP/1.1 400 "),
            "{what}: expected 400, got {answer:?}"
        );
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing was forwarded: {:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test]
async fn an_oversized_request_line_or_header_section_gets_414_or_431_and_nothing_forwarded() {
    let (h, seen) = harness(|_| {}).await;
    let long_path = "a".repeat(300 * 1024);
    let line = exchange(
        &h,
        &head(&format!(
            "GET /{long_path} HTTP/1.1\r\nl5d-dst-override: {SVC}\r\n\r\n"
        )),
    )
    .await;
    assert!(
        line.starts_with("HTTP/1.1 414 ") || line.starts_with("HTTP/1.1 431 "),
        "{}",
        &line[..line.len().min(200)]
    );
    let many = "X-Filler: 0123456789abcdef0123456789abcdef\r\n".repeat(150);
    let headers = exchange(
        &h,
        &head(&format!(
            "GET / HTTP/1.1\r\nl5d-dst-override: {SVC}\r\n{many}\r\n"
        )),
    )
    .await;
    assert!(
        headers.starts_with("HTTP/1.1 431 "),
        "too many header fields: {headers:?}"
    );
    let huge = "x".repeat(400 * 1024);
    let headers = exchange(
        &h,
        &head(&format!(
            "GET / HTTP/1.1\r\nl5d-dst-override: {SVC}\r\nX-Huge: {huge}\r\n\r\n"
        )),
    )
    .await;
    assert!(
        headers.starts_with("HTTP/1.1 431 "),
        "{}",
        &headers[..headers.len().min(200)]
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_second_request() {
    let (h, seen) = harness(|_| {}).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    // CL.TE: a front end trusting Content-Length would pass the smuggled request as body.
    let cl_te = format!(
        "POST /first HTTP/1.1\r\nl5d-dst-override: {SVC}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    // TE.CL: the header order reversed, and the chunk carrying the smuggled request.
    let te_cl = format!(
        "POST /first HTTP/1.1\r\nl5d-dst-override: {SVC}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n{smuggled}",
        smuggled.len()
    );
    for request in [cl_te, te_cl] {
        let answer = exchange(&h, request.as_bytes()).await;
        // Transfer-Encoding decides the framing (RFC 9112 §6.3), Content-Length is dropped, and
        // the connection is closed after the one response: what follows is never parsed.
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer:?}");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter().all(|r| r.starts_with("POST /first ")),
        "{seen:?}"
    );
    assert_eq!(seen[0], "POST /first ");
    assert_eq!(seen[1], format!("POST /first {smuggled}"));
}

#[tokio::test]
async fn trickled_headers_are_cut_at_the_header_read_timeout() {
    let (h, seen) = harness(|c| c.header_read_timeout = Duration::from_millis(500)).await;
    let mut tls = h.client(CLIENT_ID, H1).connect().await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut closed = false;
    // One header byte every 100 ms: the head is never complete within the timeout. Bounded at
    // 200 bytes (20 s).
    for byte in format!("l5d-dst-override: {SVC}\r\nX-Slow: {}", "z".repeat(200)).bytes() {
        if tls.write_all(&[byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(100), tls.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a slowloris connection is closed");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_caller_that_never_reads_does_not_make_the_gateway_buffer_the_response() {
    // A backend streaming 512 MiB as fast as it can, counting what it has handed over.
    let sent = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let counter = counter.clone();
                    async move {
                        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                        let stream = futures_util::stream::iter(0..8192).map(move |_| {
                            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            Ok::<_, Infallible>(Frame::data(chunk.clone()))
                        });
                        Ok::<_, Infallible>(Response::new(StreamBody::new(stream)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let h = Harness::start(|c| {
        c.endpoints.insert(SVC.to_owned(), vec![addr.into()]);
    })
    .await;
    let mut tls = h.client(CLIENT_ID, H1).connect().await.unwrap();
    tls.write_all(format!("GET /big HTTP/1.1\r\nl5d-dst-override: {SVC}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 16];
    tls.read_exact(&mut first).await.unwrap();
    assert_eq!(&first[..12], b"HTTP/1.1 200");
    // Now never read again. The backend's progress must stall: flow control reaches it.
    let stalled = stalls(&sent).await;
    let buffered = sent.load(Ordering::Relaxed);
    assert!(stalled, "the backend kept sending: {buffered} bytes");
    // Socket buffers on both sides plus the gateway's bounded write buffer; far below 512 MiB.
    assert!(
        buffered < 64 << 20,
        "{} MiB went out for a caller that read nothing",
        buffered >> 20
    );
    drop(tls);
}

/// An idle HTTP/1 connection gives back hyper's buffers and is served again on its next request;
/// bytes read with a request but not parsed go to the new connection. A request head left
/// unfinished is still cut at the header read timeout: parking never restarts its clock for good.
#[tokio::test]
async fn a_parked_connection_serves_its_next_requests_and_a_stalled_head_is_still_cut() {
    let (h, seen) = harness(|c| c.header_read_timeout = Duration::from_secs(3)).await;
    let request = format!("GET /one HTTP/1.1\r\nhost: a\r\nl5d-dst-override: {SVC}\r\n\r\n");
    let mut tls = h.client(CLIENT_ID, H1).connect().await.unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    read_until_answers(&mut tls, &mut answer, 1).await;
    let parked = eventually(Duration::from_secs(10), || async {
        h.metric_or_zero("gateway_http1_parked_connections ").await == 1
    })
    .await;
    assert!(parked, "the idle connection parked");
    // Two pipelined requests, then the start of a third that never ends.
    let two = format!(
        "{}{}GET /stalled HTTP/1.1\r\nl5d-dst",
        request.replace("/one", "/two"),
        request.replace("/one", "/three")
    );
    tls.write_all(two.as_bytes()).await.unwrap();
    let mut answers = String::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answers.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
    .await;
    assert_eq!(answers.matches("\r\n\r\nok").count(), 2, "{answers}");
    assert!(closed.is_ok(), "the stalled head is cut: {answers}");
    let paths: Vec<_> = seen.lock().unwrap().clone();
    assert_eq!(paths.len(), 3, "{paths:?}");
}

/// Reads from `tls` into `answer` until it holds `count` complete small responses.
async fn read_until_answers<IO: tokio::io::AsyncRead + Unpin>(
    tls: &mut IO,
    answer: &mut String,
    count: usize,
) {
    let mut buf = [0u8; 4096];
    while answer.matches("\r\n\r\nok").count() < count {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed early: {answer}");
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}
