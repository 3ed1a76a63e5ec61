//! Where traffic goes: per target a balancer over the endpoints discovery gives, per endpoint a
//! pool of connections. `Upstream` is the one handle the data path holds.
//!
//! ```text
//! discover   static endpoints, else DNS                          upstream/discover.rs
//! balance    P2C over peak-EWMA, ejection with backoff            upstream/balance.rs
//! pool       HTTP/1 keep-alive pool, one HTTP/2 connection        upstream/pool.rs
//! connect    TCP; mTLS to meshed pods (+ transport header)         upstream/connect.rs
//! ```
//!
//! Retries: a failed connect is retried once on another endpoint; a pooled connection that turns
//! out closed before the request was written is replaced once. A request is never retried after
//! bytes of it were sent.

mod address;
pub mod balance;
mod connect;
pub mod discover;
mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use tokio::sync::watch;
use tokio::time::Instant;

pub use address::{Address, Hint};
pub use balance::{Balancer, Endpoint};
pub use connect::{ClientTls, Io, TlsRefusal};
pub use discover::Resolver;
use pool::Conn;
pub use pool::buffer_for;

use crate::metrics::{AuthorityLabels, ConnectErrorLabels, Label, Metered, Metrics, TcpLabels};
use crate::target::Target;
use crate::transport_header::SessionProtocol;

/// How the upstream side behaves.
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

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The target has no endpoints.
    #[error(transparent)]
    Resolve(#[from] discover::Error),
    /// Every endpoint tried refused or reset the connection.
    #[error("connect to {addr}: {source}")]
    Refused {
        /// The last endpoint tried.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The connect did not finish in time.
    #[error("connect timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// A meshed endpoint's TLS handshake failed; nothing of a request was sent.
    #[error("{}", tls_message(*.reason, addr, identity, detail))]
    Tls {
        /// Where the handshake went.
        addr: SocketAddr,
        /// The identity the endpoint had to prove.
        identity: Box<str>,
        /// Why it failed.
        reason: TlsRefusal,
        /// rustls' words.
        detail: String,
    },
}

fn tls_message(reason: TlsRefusal, addr: &SocketAddr, identity: &str, detail: &str) -> String {
    match reason {
        TlsRefusal::IdentityMismatch => {
            format!("upstream identity mismatch: {addr} is not {identity} ({detail})")
        }
        _ => format!("upstream TLS to {addr} as {identity} failed: {detail}"),
    }
}

impl ConnectError {
    /// The `reason` of `outbound_connect_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ConnectError::Resolve(_) => "unresolved",
            ConnectError::Refused { .. } => "refused",
            ConnectError::Timeout(_) => "timeout",
            ConnectError::Tls { reason, .. } => reason.label(),
        }
    }
}

/// Why a request could not be forwarded on the upstream side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be made (nothing of the request was sent).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection failed during the exchange (reset, EOF, protocol error), with the error
    /// and its sources `: `-separated.
    #[error("upstream: {0}")]
    Exchange(String),
}

impl Error {
    /// An exchange failure described by `error` and its sources.
    pub fn exchange(error: &dyn std::error::Error) -> Self {
        Self::Exchange(chain(error))
    }
}

/// An error and its sources, `: `-separated (hyper's errors say little without their sources).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Every target's balancer, built once.
pub struct Upstream {
    resolver: Resolver,
    options: Options,
    /// The client TLS of new connections to meshed endpoints (follows credential reloads).
    tls: watch::Receiver<Arc<ClientTls>>,
    metrics: Arc<Metrics>,
    balancers: Mutex<HashMap<Arc<str>, Arc<Balancer>>>,
    seed: AtomicU64,
}

impl Upstream {
    /// Builds the upstream side.
    pub fn new(
        resolver: Resolver,
        options: Options,
        tls: watch::Receiver<Arc<ClientTls>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            resolver,
            options,
            tls,
            metrics,
            balancers: Mutex::new(HashMap::new()),
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// The balancer of `target`, created on first use.
    pub fn balancer(&self, target: &Target) -> Arc<Balancer> {
        self.balancers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(target.authority().clone())
            .or_insert_with(|| {
                let labels = AuthorityLabels {
                    authority: Label(target.authority().clone()),
                };
                Arc::new(Balancer::new(
                    target,
                    self.metrics.endpoints.get_or_create_owned(&labels),
                    self.metrics.pool_idle.get_or_create_owned(&labels),
                ))
            })
            .clone()
    }

    /// Sends `req` to one of the balancer's endpoints over HTTP/1.1 or HTTP/2 (prior knowledge).
    /// For HTTP/1 the request URI must be in origin form; for HTTP/2 absolute.
    ///
    /// # Errors
    /// Resolution, connect (after one retry on another endpoint) or the exchange itself.
    pub async fn send(
        &self,
        balancer: &Balancer,
        req: Request<Incoming>,
        use_http2: bool,
    ) -> Result<Response<Incoming>, Error> {
        let waited = Instant::now();
        self.refresh(balancer).await?;
        let (endpoint, conn) = self
            .with_retry(balancer, |endpoint| async move {
                self.conn(balancer, &endpoint, use_http2).await
            })
            .await?;
        self.metrics
            .connection_wait
            .observe(waited.elapsed().as_secs_f64() * 1000.0);
        let pending = endpoint.start_request();
        let start = Instant::now();
        let result = match conn {
            Conn::Http1(send) => self.send_http1(balancer, &endpoint, send, req).await,
            Conn::Http2(mut send) => send
                .send_request(req)
                .await
                .map_err(|e| Error::exchange(&e)),
        };
        drop(pending);
        if result.is_ok() {
            endpoint.observe(start.elapsed());
        }
        result
    }

    async fn send_http1(
        &self,
        balancer: &Balancer,
        endpoint: &Arc<Endpoint>,
        mut send: http1::SendRequest<Incoming>,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, Error> {
        let exchange = |e: hyper::Error| Error::exchange(&e);
        let response = match send.try_send_request(req).await {
            Ok(response) => response,
            Err(mut e) => match e.take_message() {
                // Never written (the pooled connection closed under us): once more, fresh.
                Some(req) => {
                    let mut fresh = self.http1_conn(balancer, endpoint).await?;
                    fresh.ready().await.map_err(exchange)?;
                    let response = fresh.send_request(req).await.map_err(exchange)?;
                    endpoint.pool.put_idle(fresh, &balancer.idle_count);
                    return Ok(response);
                }
                None => return Err(exchange(e.into_error())),
            },
        };
        // Ready again once this response's body has been read; idle until then.
        endpoint.pool.put_idle(send, &balancer.idle_count);
        Ok(response)
    }

    /// A byte stream to one of the balancer's endpoints (opaque sessions, CONNECT): TCP, or mTLS
    /// to a meshed pod (through its inbound port with a transport header when it has one).
    ///
    /// # Errors
    /// Resolution, or connect failure after one retry on another endpoint.
    pub async fn connect(&self, balancer: &Balancer) -> Result<Metered<Io>, ConnectError> {
        self.refresh(balancer).await?;
        let (_, io) = self
            .with_retry(balancer, |endpoint| async move {
                self.dial(balancer, &endpoint, SessionProtocol::Opaque)
                    .await
            })
            .await?;
        Ok(io)
    }

    /// Brings the balancer's endpoints up to date with discovery once its last answer has
    /// expired (static endpoints never do): no resolution on the request path otherwise.
    async fn refresh(&self, balancer: &Balancer) -> Result<(), ConnectError> {
        if balancer.is_fresh(Instant::now()) {
            return Ok(());
        }
        let target = balancer.target();
        let resolved = self.resolver.resolve(target.name(), target.port()).await?;
        balancer.update(&resolved.endpoints, resolved.valid_until);
        Ok(())
    }

    /// Runs `attempt` on a chosen endpoint and, when it fails (nothing of a request has been
    /// sent yet), once more on another endpoint.
    async fn with_retry<T, E, F, Fut>(
        &self,
        balancer: &Balancer,
        mut attempt: F,
    ) -> Result<(Arc<Endpoint>, T), E>
    where
        F: FnMut(Arc<Endpoint>) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: From<ConnectError>,
    {
        let first = balancer.first(self.random())?;
        let error = match attempt(first.clone()).await {
            Ok(value) => return Ok((first, value)),
            Err(e) => e,
        };
        match balancer.pick(self.random(), Some(&first)) {
            Some(second) if !Arc::ptr_eq(&first, &second) => {
                let value = attempt(second.clone()).await?;
                Ok((second, value))
            }
            _ => Err(error),
        }
    }

    async fn conn(
        &self,
        balancer: &Balancer,
        endpoint: &Arc<Endpoint>,
        use_http2: bool,
    ) -> Result<Conn, Error> {
        if use_http2 {
            let mut slot = endpoint.pool.http2.lock().await;
            if let Some((send, used)) = slot.as_mut().filter(|(s, _)| !s.is_closed()) {
                *used = Instant::now();
                return Ok(Conn::Http2(send.clone()));
            }
            let io = self
                .dial(balancer, endpoint, SessionProtocol::Http2)
                .await?;
            let send = pool::http2_handshake(io, &self.options)
                .await
                .map_err(|e| Error::exchange(&e))?;
            *slot = Some((send.clone(), Instant::now()));
            return Ok(Conn::Http2(send));
        }
        let idle_timeout = self.options.pool_idle_timeout;
        if let Some(send) = endpoint.pool.take_idle(idle_timeout, &balancer.idle_count) {
            return Ok(Conn::Http1(send));
        }
        let mut send = self.http1_conn(balancer, endpoint).await?;
        send.ready().await.map_err(|e| Error::exchange(&e))?;
        Ok(Conn::Http1(send))
    }

    async fn http1_conn(
        &self,
        balancer: &Balancer,
        endpoint: &Arc<Endpoint>,
    ) -> Result<http1::SendRequest<Incoming>, Error> {
        let io = self
            .dial(balancer, endpoint, SessionProtocol::Http1)
            .await?;
        pool::http1_handshake(io, &self.options)
            .await
            .map_err(|e| Error::exchange(&e))
    }

    /// Closes connections idle for `pool_idle_timeout` or longer, for every target, whether or
    /// not it gets traffic again: expired HTTP/1 pool entries and unused HTTP/2 connections
    /// (streams still open on one keep it alive until they end). Returns how many were closed.
    pub fn sweep_idle(&self) -> usize {
        let max_idle = self.options.pool_idle_timeout;
        let balancers: Vec<Arc<Balancer>> = self
            .balancers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        balancers
            .iter()
            .flat_map(|balancer| {
                balancer
                    .endpoints()
                    .into_iter()
                    .map(move |endpoint| endpoint.pool.sweep(max_idle, &balancer.idle_count))
            })
            .sum()
    }

    /// A connection to `endpoint` (TCP, or mTLS to a meshed pod), counted as a `peer="dst"`
    /// transport; failure is counted by reason and ejects the endpoint, success clears its
    /// ejection.
    async fn dial(
        &self,
        balancer: &Balancer,
        endpoint: &Endpoint,
        protocol: SessionProtocol,
    ) -> Result<Metered<Io>, ConnectError> {
        let address = &endpoint.address;
        let tls = self.tls.borrow().clone();
        match connect::dial(address, &tls, protocol, self.options.connect_timeout).await {
            Ok(io) => {
                endpoint.restore();
                let labels = TcpLabels::outbound(
                    balancer.authority.clone(),
                    address.identity.as_ref().map(|id| id.as_str()),
                    address.addr,
                );
                let record = self.metrics.open_connection(labels);
                Ok(Metered::with_record(io, record))
            }
            Err(e) => {
                self.metrics
                    .connect_errors
                    .get(&ConnectErrorLabels {
                        authority: balancer.authority.clone(),
                        reason: e.label(),
                    })
                    .inc();
                let backoff = endpoint.eject();
                let addr = address.addr;
                tracing::warn!(target = &*balancer.authority.0, %addr, error = %e, ?backoff, "endpoint ejected");
                self.metrics.endpoint_ejected(&balancer.authority);
                Err(e)
            }
        }
    }

    /// A cheap pseudo-random number (xorshift) for the two choices.
    fn random(&self) -> u64 {
        let mut x = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
}
