//! Hostile HTTP/2 from an authenticated caller, written at the frame level: rapid reset
//! (CVE-2023-44487), CONTINUATION flood (CVE-2024-27316), SETTINGS and PING floods, an HPACK
//! bomb and a zero-window stall. The offending connection is closed (or, for floods of frames
//! that need an answer, simply stops being read), nothing unbounded is forwarded or buffered, and
//! a well-behaved client on another connection keeps being served meanwhile.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use gateway::cli::client::MtlsClient;
use http::{Request, Response};
use http_body_util::{Full, StreamBody};
use hyper::body::Frame as BodyFrame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{CLIENT_ID, H2, Harness, eventually, stalls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const SVC: &str = "victim.test.svc.cluster.local:8080";

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK string literal (no Huffman), length < 127.
fn literal(text: &str) -> Vec<u8> {
    let mut out = vec![u8::try_from(text.len()).unwrap()];
    out.extend_from_slice(text.as_bytes());
    out
}

/// `GET https://SVC/` with `l5d-dst-override: SVC`, from static-table entries and literals
/// without indexing.
fn request_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x84, 0x01]; // :method GET, :scheme https, :path /, :authority
    block.extend(literal(SVC));
    block.push(0x00); // literal without indexing, new name
    block.extend(literal("l5d-dst-override"));
    block.extend(literal(SVC));
    block
}

/// A backend that streams 512 MiB on `/big`, counting the bytes handed over, answers anything
/// else with 2 bytes, and counts every request except the bystander's (`/calm`).
struct Victim {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    sent: Arc<AtomicU64>,
}

async fn victim() -> Victim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let (count, bytes) = (requests.clone(), sent.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (count, bytes) = (count.clone(), bytes.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    if req.uri().path() != "/calm" {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    let bytes = bytes.clone();
                    let big = req.uri().path() == "/big";
                    async move {
                        let chunks = if big { 8192 } else { 1 };
                        let chunk = Bytes::from(vec![b'x'; if big { 64 * 1024 } else { 2 }]);
                        let stream = futures_util::stream::iter(0..chunks).map(move |_| {
                            if big {
                                bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            }
                            Ok::<_, Infallible>(BodyFrame::data(chunk.clone()))
                        });
                        Ok::<_, Infallible>(Response::new(StreamBody::new(stream)))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Victim {
        addr,
        requests,
        sent,
    }
}

async fn setup() -> (Harness, Victim) {
    let victim = victim().await;
    let addr = victim.addr;
    let h = Harness::start(|c| {
        c.endpoints.insert(SVC.to_owned(), vec![addr.into()]);
    })
    .await;
    (h, victim)
}

/// A well-behaved HTTP/2 client sending requests on its own connection until `stop`, counting
/// the 200s; any other outcome is recorded as a failure.
fn bystander(client: MtlsClient, stop: Arc<AtomicBool>) -> JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let mut send = client.http2().await.unwrap();
        let (mut ok, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) || ok == 0 {
            let req = Request::get("/calm")
                .header("l5d-dst-override", SVC)
                .body(Full::new(Bytes::new()))
                .unwrap();
            match send.send_request(req).await {
                Ok(r) if r.status() == 200 => ok += 1,
                Ok(r) => failed.push(r.status().to_string()),
                Err(e) => {
                    failed.push(e.to_string());
                    break;
                }
            }
            if ok > 100_000 {
                break;
            }
        }
        (ok, failed)
    })
}

/// An attacker's connection: TLS with ALPN h2, the preface and an empty SETTINGS written.
async fn attacker(h: &Harness, settings: &[u8]) -> impl AsyncRead + AsyncWrite + Unpin {
    let mut tls = h.client(CLIENT_ID, H2).connect().await.unwrap();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tls.write_all(&frame(SETTINGS, 0, 0, settings))
        .await
        .unwrap();
    tls
}

/// Writes `frames` in batches until the gateway stops taking them: returns whether every byte
/// was written (false: the connection was closed, or the gateway stopped reading for 2 s).
async fn flood<S: AsyncWrite + Unpin>(io: &mut S, frames: impl Iterator<Item = Vec<u8>>) -> bool {
    let mut batch = Vec::new();
    let write = async |io: &mut S, batch: &mut Vec<u8>| {
        let done = tokio::time::timeout(Duration::from_secs(2), io.write_all(batch)).await;
        batch.clear();
        matches!(done, Ok(Ok(())))
    };
    for frame in frames {
        batch.extend_from_slice(&frame);
        if batch.len() >= 64 * 1024 && !write(io, &mut batch).await {
            return false;
        }
    }
    write(io, &mut batch).await
}

/// Reads frames until EOF or `limit`; returns the GOAWAY error code, if one came.
async fn goaway_code<S: AsyncRead + Unpin>(io: &mut S, limit: Duration) -> Option<u32> {
    let read = async {
        loop {
            let mut head = [0u8; 9];
            if io.read_exact(&mut head).await.is_err() {
                return None;
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            if io.read_exact(&mut payload).await.is_err() {
                return None;
            }
            if head[3] == GOAWAY && payload.len() >= 8 {
                return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok().flatten()
}

/// Reads until the connection ends (any frames are discarded); false if it stays open.
async fn closes<S: AsyncRead + Unpin>(io: &mut S, limit: Duration) -> bool {
    let mut sink = vec![0u8; 64 * 1024];
    let read = async {
        loop {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read).await.unwrap_or(false)
}

async fn finish(stop: Arc<AtomicBool>, bystander: JoinHandle<(usize, Vec<String>)>) {
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = bystander.await.unwrap();
    assert!(
        ok > 0 && failed.is_empty(),
        "bystander: {ok} ok, {failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_closes_the_connection_with_enhance_your_calm() {
    let (h, victim) = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let calm = bystander(h.client(CLIENT_ID, H2), stop.clone());
    let mut io = attacker(&h, &[]).await;
    let block = request_block();
    let sent = 20_000u32;
    let pairs = (0..sent).flat_map(|i| {
        let stream = 2 * i + 1;
        [
            frame(HEADERS, END_STREAM | END_HEADERS, stream, &block),
            frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()), // CANCEL
        ]
    });
    flood(&mut io, pairs).await;
    let code = goaway_code(&mut io, Duration::from_secs(10)).await;
    assert_eq!(code, Some(0xb), "GOAWAY ENHANCE_YOUR_CALM");
    assert!(closes(&mut io, Duration::from_secs(10)).await);
    let forwarded = victim.requests.load(Ordering::Relaxed);
    assert!(
        forwarded < 2_000,
        "{forwarded} of {sent} reset requests reached the backend"
    );
    finish(stop, calm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    let (h, victim) = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let calm = bystander(h.client(CLIENT_ID, H2), stop.clone());
    let mut io = attacker(&h, &[]).await;
    // HEADERS without END_HEADERS, then CONTINUATION frames of new header fields, never ending:
    // 16 MiB in all, far beyond any header list limit.
    let mut field = vec![0x00];
    field.extend(literal("x-flood"));
    field.extend(literal(&"v".repeat(100)));
    let payload: Vec<u8> = field
        .iter()
        .copied()
        .cycle()
        .take(field.len() * 150)
        .collect();
    let frames = std::iter::once(frame(HEADERS, END_STREAM, 1, &request_block()))
        .chain((0..1000).map(|_| frame(CONTINUATION, 0, 1, &payload)));
    let all_written = flood(&mut io, frames).await;
    assert!(
        closes(&mut io, Duration::from_secs(10)).await,
        "the connection is closed (all written: {all_written})"
    );
    assert_eq!(victim.requests.load(Ordering::Relaxed), 0);
    finish(stop, calm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused_without_decoding_it_into_memory() {
    let (h, victim) = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let calm = bystander(h.client(CLIENT_ID, H2), stop.clone());
    let mut io = attacker(&h, &[]).await;
    // One 4 KiB header put in the dynamic table, then referenced 16,000 times (1 byte each):
    // a 16 KiB header block that decodes to 64 MiB.
    let mut block = request_block();
    block.push(0x40); // literal with incremental indexing, new name
    block.extend(literal("x-bomb"));
    let value = "b".repeat(4000);
    block.extend_from_slice(&[0x7f, 0xa1, 0x1e]); // length 4000 (7-bit prefix integer)
    block.extend_from_slice(value.as_bytes());
    block.extend(std::iter::repeat_n(0xbe, 16_000)); // indexed: dynamic entry 62
    let mut frames = Vec::new();
    let mut chunks = block.chunks(16_000).peekable();
    let mut first = true;
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = if last { END_HEADERS } else { 0 };
        if first {
            frames.push(frame(HEADERS, flags | END_STREAM, 1, chunk));
            first = false;
        } else {
            frames.push(frame(CONTINUATION, flags, 1, chunk));
        }
    }
    flood(&mut io, frames.into_iter()).await;
    assert!(closes(&mut io, Duration::from_secs(10)).await);
    assert_eq!(victim.requests.load(Ordering::Relaxed), 0);
    finish(stop, calm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_from_a_caller_that_never_reads_stop_being_read() {
    let (h, _victim) = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let calm = bystander(h.client(CLIENT_ID, H2), stop.clone());
    // Each frame asks for an answer (an ACK) the attacker never reads: 64 MiB of them. The
    // gateway must stop reading (its answers cannot be written) or close; never queue them all.
    let settings = frame(SETTINGS, 0, 0, &[0x00, 0x03, 0x00, 0x00, 0x00, 0x64]); // MAX_CONCURRENT_STREAMS 100
    let ping = frame(PING, 0, 0, b"12345678");
    for flood_frame in [settings, ping] {
        let mut io = attacker(&h, &[]).await;
        let count = (64 << 20) / flood_frame.len();
        let all_written = flood(&mut io, std::iter::repeat_n(flood_frame, count)).await;
        assert!(!all_written, "the gateway stopped taking the flood");
    }
    finish(stop, calm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_caller_does_not_make_the_gateway_buffer_the_response() {
    let (h, victim) = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let calm = bystander(h.client(CLIENT_ID, H2), stop.clone());
    // SETTINGS_INITIAL_WINDOW_SIZE = 0 and no WINDOW_UPDATE ever: no DATA can be sent to us.
    let mut io = attacker(&h, &[0x00, 0x04, 0x00, 0x00, 0x00, 0x00]).await;
    let mut block = vec![0x82, 0x87, 0x04]; // :path literal without indexing (indexed name 4)
    block.extend(literal("/big"));
    block.push(0x01);
    block.extend(literal(SVC));
    block.push(0x00);
    block.extend(literal("l5d-dst-override"));
    block.extend(literal(SVC));
    io.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let started = victim.sent.load(Ordering::Relaxed) > 0;
            async move { started }
        })
        .await
    );
    let stalled = stalls(&victim.sent).await;
    let buffered = victim.sent.load(Ordering::Relaxed);
    assert!(stalled, "the backend kept sending: {buffered} bytes");
    assert!(
        buffered < 32 << 20,
        "{} MiB buffered for a stream with a zero window",
        buffered >> 20
    );
    finish(stop, calm).await;
}
