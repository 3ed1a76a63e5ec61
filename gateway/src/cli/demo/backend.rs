//! The demo's local services (also the tests' backends): an HTTP/1 + HTTP/2 echo of what the
//! gateway forwarded, and an opaque TCP echo.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};

/// What a backend speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaks {
    /// HTTP/1 and HTTP/2 (prior knowledge), detected per connection.
    Both,
    /// HTTP/1 only.
    Http1,
    /// HTTP/2 (h2c, prior knowledge) only.
    H2c,
}

/// A local HTTP/1 + HTTP/2 service: `GET` answers `<name> <method> <path>` and echoes what the
/// gateway set in `x-seen-*` headers; any request with a body gets the body streamed back.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Backend {
    /// Starts a backend on `127.0.0.1:0` on the current runtime.
    ///
    /// # Errors
    /// When it cannot bind.
    pub async fn start(name: &'static str) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), name).await
    }

    /// Starts a backend on `addr` (e.g. another loopback address, to stand for another pod).
    ///
    /// # Errors
    /// When it cannot bind.
    pub async fn start_on(addr: SocketAddr, name: &'static str) -> std::io::Result<Self> {
        Self::start_speaking(addr, name, Speaks::Both).await
    }

    /// Starts a backend on `addr` that speaks only what `speaks` says (an HTTP/1-only or an
    /// h2c-only service answers the other version as such servers do).
    ///
    /// # Errors
    /// When it cannot bind.
    pub async fn start_speaking(
        addr: SocketAddr,
        name: &'static str,
        speaks: Speaks,
    ) -> std::io::Result<Self> {
        Self::spawn_on(addr, move |tcp| async move {
            let service =
                service_fn(move |req| async move { Ok::<_, Infallible>(answer(name, req)) });
            let io = TokioIo::new(tcp);
            // Large headers are the gateway's to limit, not the backend's.
            let _ = match speaks {
                Speaks::Both => {
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http1().max_buf_size(4 << 20);
                    builder.http2().max_header_list_size(4 << 20);
                    builder.serve_connection(io, service).await
                }
                Speaks::Http1 => hyper::server::conn::http1::Builder::new()
                    .max_buf_size(4 << 20)
                    .serve_connection(io, service)
                    .await
                    .map_err(Into::into),
                Speaks::H2c => hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_header_list_size(4 << 20)
                    .serve_connection(io, service)
                    .await
                    .map_err(Into::into),
            };
        })
        .await
    }

    /// Starts an opaque TCP echo service on `127.0.0.1:0`: it writes back what it reads and
    /// closes its write side when the caller closes its own (half-close).
    ///
    /// # Errors
    /// When it cannot bind.
    pub async fn start_tcp_echo() -> std::io::Result<Self> {
        Self::spawn(|tcp| async move {
            let (mut read, mut write) = tcp.into_split();
            if tokio::io::copy(&mut read, &mut write).await.is_ok() {
                let _ = write.shutdown().await;
            }
        })
        .await
    }

    /// Binds `127.0.0.1:0` and runs `serve` on a task per accepted connection.
    async fn spawn<F, Fut>(serve: F) -> std::io::Result<Self>
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::spawn_on(SocketAddr::from(([127, 0, 0, 1], 0)), serve).await
    }

    /// Binds `addr` and runs `serve` on a task per accepted connection.
    async fn spawn_on<F, Fut>(addr: SocketAddr, serve: F) -> std::io::Result<Self>
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(tcp));
            }
        });
        Ok(Self { addr, connections })
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

fn answer(name: &str, req: Request<Incoming>) -> Response<BoxBody<Bytes, hyper::Error>> {
    let mut seen = Vec::new();
    for header in [
        "l5d-client-id",
        "forwarded",
        "host",
        "l5d-dst-override",
        "l5d-orig-proto",
        "l5d-dst-canonical",
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
    ] {
        let values: Vec<&str> = req
            .headers()
            .get_all(header)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            seen.push((format!("x-seen-{header}"), values.join(", ")));
        }
    }
    seen.push(("x-seen-version".to_owned(), format!("{:?}", req.version())));
    let has_body = req.headers().contains_key(http::header::CONTENT_LENGTH)
        || req.headers().contains_key(http::header::TRANSFER_ENCODING)
        || req.version() == http::Version::HTTP_2 && req.method() != http::Method::GET;
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
    let mut response = if grpc {
        // A gRPC echo: the request's messages back, then `grpc-status: 0` as a trailer.
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("echoed"));
        let body = req
            .into_body()
            .with_trailers(async move { Some(Ok(trailers)) });
        let mut response = Response::new(body.boxed());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        response
    } else if has_body {
        Response::new(req.into_body().boxed())
    } else {
        let text = format!("{name}: {} {}\n", req.method(), req.uri().path());
        Response::new(
            Full::new(Bytes::from(text))
                .map_err(|never| match never {})
                .boxed(),
        )
    };
    for (header, value) in seen {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(header.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
