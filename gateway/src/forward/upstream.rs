//! The upstream side: a connector that resolves a target and connects to one of its endpoints
//! (trying a second one when the first refuses), and the pooled HTTP/1 and HTTP/2 clients.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::error::ConnectError;
use crate::io::Metered;
use crate::metrics::{Label, Metrics, TcpLabels};
use crate::resolve::Resolver;

/// A pooled client over [`Connector`].
pub type HttpClient = Client<Connector, Incoming>;

/// Connects to a target's endpoints. The request URI's authority is the target `name:port`, so
/// the client pools connections per target.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<ConnectorInner>,
}

struct ConnectorInner {
    resolver: Resolver,
    connect_timeout: Duration,
    metrics: Arc<Metrics>,
    next: AtomicUsize,
}

/// The upstream clients, built once.
pub struct Upstream {
    /// HTTP/1.1 keep-alive pool.
    pub http1: HttpClient,
    /// HTTP/2 prior-knowledge pool (one multiplexed connection per target).
    pub http2: HttpClient,
    connector: Connector,
}

/// How the upstream clients behave.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Deadline for one TCP connect.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Write HTTP/1 header names in the case they arrived in.
    pub preserve_header_case: bool,
    /// Largest response header section accepted (HTTP/1 buffer, HTTP/2 header list).
    pub max_header_list_size: usize,
}

impl Upstream {
    /// Builds both clients over one connector.
    pub fn new(resolver: Resolver, options: Options, metrics: Arc<Metrics>) -> Self {
        let Options {
            connect_timeout,
            pool_idle_timeout: pool_idle,
            ..
        } = options;
        let connector = Connector {
            inner: Arc::new(ConnectorInner {
                resolver,
                connect_timeout,
                metrics,
                next: AtomicUsize::new(0),
            }),
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(pool_idle)
            .http1_preserve_header_case(options.preserve_header_case)
            .http1_max_buf_size(buffer_for(options.max_header_list_size))
            .http2_max_header_list_size(
                u32::try_from(options.max_header_list_size).unwrap_or(u32::MAX),
            )
            // The gateway sets Host itself (the target authority).
            .set_host(false);
        let http1 = builder.build(connector.clone());
        builder.http2_only(true);
        let http2 = builder.build(connector.clone());
        Self {
            http1,
            http2,
            connector,
        }
    }
}

/// An HTTP/1 read buffer that holds a header section of `max_header_list_size` plus the request
/// or status line (hyper's minimum is 8 KiB).
pub fn buffer_for(max_header_list_size: usize) -> usize {
    max_header_list_size.max(8192) + 8192
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Metered<TcpStream>>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let name = uri.host().unwrap_or_default();
            let port = uri.port_u16().unwrap_or(80);
            inner.connect(name, port).await.map(TokioIo::new)
        })
    }
}

impl Upstream {
    /// Opens a TCP connection to one of `name:port`'s endpoints (opaque sessions).
    ///
    /// # Errors
    /// No endpoints, refused, or timed out.
    pub async fn connect(&self, name: &str, port: u16) -> Result<Metered<TcpStream>, ConnectError> {
        self.connector.inner.connect(name, port).await
    }
}

impl ConnectorInner {
    async fn connect(&self, name: &str, port: u16) -> Result<Metered<TcpStream>, ConnectError> {
        let endpoints = self.resolver.resolve(name, port).await?;
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last_error = None;
        // One safe retry: a refused connect sent nothing, so another endpoint may be tried.
        for attempt in 0..endpoints.len().min(2) {
            let addr = endpoints[(first + attempt) % endpoints.len()];
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    let authority = Label::from(format!("{name}:{port}").as_str());
                    let record = self.metrics.open_connection(TcpLabels::outbound(authority));
                    return Ok(Metered::with_record(tcp, record));
                }
                Ok(Err(source)) => {
                    tracing::debug!(%addr, error = %source, "upstream connect failed");
                    last_error = Some(ConnectError::Refused { addr, source });
                }
                Err(_) => last_error = Some(ConnectError::Timeout(self.connect_timeout)),
            }
        }
        Err(
            last_error.unwrap_or(ConnectError::Resolve(crate::resolve::Error::NoEndpoints(
                format!("{name}:{port}"),
            ))),
        )
    }
}
