//! The upstream side: per target a balancer over the endpoints the resolver gives, and per
//! endpoint a pool of HTTP/1.1 keep-alive connections and one multiplexed HTTP/2 connection.
//!
//! - Balancing: power of two choices over peak-EWMA round-trip time (default 30 ms, decay 10 s)
//!   times the requests pending on the endpoint.
//! - Ejection: an endpoint whose connect fails is skipped for a backoff (1 s, doubling up to
//!   60 s) and then tried again; a success resets it. When every endpoint is ejected, all are
//!   tried (better a probe than a certain failure).
//! - Retries: a failed connect is retried once on another endpoint; a pooled connection that
//!   turns out closed before the request was written is replaced once. A request is never
//!   retried after bytes of it were sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::{ConnectError, Error};
use crate::io::Metered;
use crate::metrics::{AuthorityLabels, ConnectErrorLabels, Label, Metrics, TcpLabels};
use crate::resolve::{Endpoints, Resolver};
use crate::target::Target;
use prometheus_client::metrics::gauge::Gauge;

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

/// RTT assumed for an endpoint never measured.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast old RTT samples fade.
const DECAY: Duration = Duration::from_secs(10);
/// First ejection backoff.
const EJECT_MIN: Duration = Duration::from_secs(1);
/// Longest ejection backoff.
const EJECT_MAX: Duration = Duration::from_secs(60);
/// Most idle HTTP/1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// An HTTP/1 read buffer that holds a header section of `max_header_list_size` plus the request
/// or status line (hyper's minimum is 8 KiB).
pub fn buffer_for(max_header_list_size: usize) -> usize {
    max_header_list_size.max(8192) + 8192
}

/// Every target's balancer, built once.
pub struct Upstream {
    resolver: Resolver,
    options: Options,
    metrics: Arc<Metrics>,
    balancers: Mutex<HashMap<Arc<str>, Arc<Balancer>>>,
    seed: AtomicU64,
}

/// The endpoints of one target, their load and their connections; shared by every session that
/// talks to the target (sessions keep theirs with their route).
pub struct Balancer {
    target: Target,
    authority: Label,
    state: Mutex<BalancerState>,
    /// `outbound_endpoints{authority}`.
    endpoint_count: Gauge,
    /// `outbound_pool_idle_connections{authority}`.
    idle_count: Gauge,
}

struct BalancerState {
    /// The resolver's answer these endpoints were built from.
    from: Option<Endpoints>,
    /// Until when that answer holds (`None`: static, forever); asked again after.
    until: Option<Instant>,
    endpoints: Vec<Arc<Endpoint>>,
}

/// One endpoint: its load, its health, its connections.
pub struct Endpoint {
    addr: SocketAddr,
    pending: AtomicUsize,
    rtt: Mutex<PeakEwma>,
    ejection: Mutex<Ejection>,
    idle: Mutex<Vec<(http1::SendRequest<Incoming>, Instant)>>,
    /// The multiplexed HTTP/2 connection and when it was last handed out.
    http2: tokio::sync::Mutex<Option<(http2::SendRequest<Incoming>, Instant)>>,
}

struct PeakEwma {
    value_ns: f64,
    at: Instant,
}

#[derive(Default)]
struct Ejection {
    until: Option<Instant>,
    backoff: Duration,
}

impl Upstream {
    /// Builds the upstream side.
    pub fn new(resolver: Resolver, options: Options, metrics: Arc<Metrics>) -> Self {
        Self {
            resolver,
            options,
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
                Arc::new(Balancer {
                    target: target.clone(),
                    authority: labels.authority.clone(),
                    state: Mutex::new(BalancerState {
                        from: None,
                        until: None,
                        endpoints: Vec::new(),
                    }),
                    endpoint_count: self.metrics.endpoints.get_or_create_owned(&labels),
                    idle_count: self.metrics.pool_idle.get_or_create_owned(&labels),
                })
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
        endpoint.pending.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let result = match conn {
            Conn::Http1(send) => self.send_http1(balancer, &endpoint, send, req).await,
            Conn::Http2(mut send) => send
                .send_request(req)
                .await
                .map_err(|e| Error::Upstream(crate::error::chain(&e))),
        };
        endpoint.pending.fetch_sub(1, Ordering::Relaxed);
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
        let upstream = |e: hyper::Error| Error::Upstream(crate::error::chain(&e));
        let response = match send.try_send_request(req).await {
            Ok(response) => response,
            Err(mut e) => match e.take_message() {
                // Never written (the pooled connection closed under us): once more, fresh.
                Some(req) => {
                    let mut fresh = self.http1_conn(balancer, endpoint).await?;
                    fresh.ready().await.map_err(upstream)?;
                    let response = fresh.send_request(req).await.map_err(upstream)?;
                    endpoint.put_idle(fresh, &balancer.idle_count);
                    return Ok(response);
                }
                None => return Err(upstream(e.into_error())),
            },
        };
        // Ready again once this response's body has been read; idle until then.
        endpoint.put_idle(send, &balancer.idle_count);
        Ok(response)
    }

    /// A raw TCP connection to one of the balancer's endpoints (opaque sessions, CONNECT).
    ///
    /// # Errors
    /// Resolution, or connect failure after one retry on another endpoint.
    pub async fn connect(&self, balancer: &Balancer) -> Result<Metered<TcpStream>, Error> {
        self.refresh(balancer).await?;
        let (_, tcp) = self
            .with_retry(balancer, |endpoint| async move {
                self.tcp(balancer, &endpoint).await
            })
            .await?;
        Ok(tcp)
    }

    /// Brings the balancer's endpoints up to date with the resolver once its last answer has
    /// expired (static endpoints never do): no resolution on the request path otherwise.
    async fn refresh(&self, balancer: &Balancer) -> Result<(), Error> {
        if balancer.is_fresh(Instant::now()) {
            return Ok(());
        }
        let target = &balancer.target;
        let resolved = self
            .resolver
            .resolve(target.name(), target.port())
            .await
            .map_err(|e| Error::Connect(ConnectError::Resolve(e)))?;
        balancer.update(&resolved.endpoints, resolved.valid_until);
        Ok(())
    }

    /// Runs `attempt` on a chosen endpoint and, when it fails (nothing of a request has been
    /// sent yet), once more on another endpoint.
    async fn with_retry<T, E, F, Fut>(
        &self,
        balancer: &Balancer,
        mut attempt: F,
    ) -> Result<(Arc<Endpoint>, T), Error>
    where
        F: FnMut(Arc<Endpoint>) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        Error: From<E>,
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
            _ => Err(error.into()),
        }
    }

    async fn conn(
        &self,
        balancer: &Balancer,
        endpoint: &Arc<Endpoint>,
        use_http2: bool,
    ) -> Result<Conn, Error> {
        if use_http2 {
            let mut slot = endpoint.http2.lock().await;
            if let Some((send, used)) = slot.as_mut().filter(|(s, _)| !s.is_closed()) {
                *used = Instant::now();
                return Ok(Conn::Http2(send.clone()));
            }
            let tcp = self.tcp(balancer, endpoint).await?;
            let (send, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(
                    u32::try_from(self.options.max_header_list_size).unwrap_or(u32::MAX),
                )
                .handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| Error::Upstream(crate::error::chain(&e)))?;
            tokio::spawn(conn);
            *slot = Some((send.clone(), Instant::now()));
            return Ok(Conn::Http2(send));
        }
        if let Some(send) = endpoint.take_idle(self.options.pool_idle_timeout, &balancer.idle_count)
        {
            return Ok(Conn::Http1(send));
        }
        let mut send = self.http1_conn(balancer, endpoint).await?;
        send.ready()
            .await
            .map_err(|e| Error::Upstream(crate::error::chain(&e)))?;
        Ok(Conn::Http1(send))
    }

    async fn http1_conn(
        &self,
        balancer: &Balancer,
        endpoint: &Arc<Endpoint>,
    ) -> Result<http1::SendRequest<Incoming>, Error> {
        let tcp = self.tcp(balancer, endpoint).await?;
        let (send, conn) = http1::Builder::new()
            .preserve_header_case(self.options.preserve_header_case)
            .max_buf_size(buffer_for(self.options.max_header_list_size))
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| Error::Upstream(crate::error::chain(&e)))?;
        // Upgrades (WebSocket) take the connection over after a 101.
        tokio::spawn(conn.with_upgrades());
        Ok(send)
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
        let mut closed = 0;
        for balancer in balancers {
            let endpoints = balancer
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .endpoints
                .clone();
            for endpoint in endpoints {
                closed += endpoint.expire_idle(max_idle, &balancer.idle_count);
                // Busy slot: a request is taking the connection right now, so it is not idle.
                if let Ok(mut slot) = endpoint.http2.try_lock()
                    && slot
                        .as_ref()
                        .is_some_and(|(send, used)| send.is_closed() || used.elapsed() >= max_idle)
                {
                    *slot = None;
                    closed += 1;
                }
            }
        }
        closed
    }

    /// A TCP connection to `endpoint`; failure ejects it, success clears its ejection.
    async fn tcp(
        &self,
        balancer: &Balancer,
        endpoint: &Endpoint,
    ) -> Result<Metered<TcpStream>, ConnectError> {
        let addr = endpoint.addr;
        let timeout = self.options.connect_timeout;
        let result = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => Ok(tcp),
            Ok(Err(source)) => Err(ConnectError::Refused { addr, source }),
            Err(_) => Err(ConnectError::Timeout(timeout)),
        };
        match result {
            Ok(tcp) => {
                endpoint.restore();
                let _ = tcp.set_nodelay(true);
                let record = self
                    .metrics
                    .open_connection(TcpLabels::outbound(balancer.authority.clone()));
                Ok(Metered::with_record(tcp, record))
            }
            Err(e) => {
                let reason = match e {
                    ConnectError::Timeout(_) => "timeout",
                    _ => "refused",
                };
                self.metrics
                    .connect_errors
                    .get(&ConnectErrorLabels {
                        authority: balancer.authority.clone(),
                        reason,
                    })
                    .inc();
                let backoff = endpoint.eject();
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

enum Conn {
    Http1(http1::SendRequest<Incoming>),
    Http2(http2::SendRequest<Incoming>),
}

impl Balancer {
    /// The target it balances.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Rebuilds the endpoint list when the resolver's answer changed, keeping the state of
    /// endpoints that remain.
    fn is_fresh(&self, now: Instant) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.from.is_some() && state.until.is_none_or(|until| now < until)
    }

    fn update(&self, endpoints: &Endpoints, until: Option<Instant>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.until = until;
        if state
            .from
            .as_ref()
            .is_some_and(|from| Arc::ptr_eq(from, endpoints) || **from == **endpoints)
        {
            return;
        }
        let old = std::mem::take(&mut state.endpoints);
        for gone in old.iter().filter(|e| !endpoints.contains(&e.addr)) {
            let idle = gone
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            self.idle_count.dec_by(i64::try_from(idle).unwrap_or(0));
        }
        state.endpoints = endpoints
            .iter()
            .map(|addr| {
                old.iter()
                    .find(|e| e.addr == *addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(*addr)))
            })
            .collect();
        state.from = Some(endpoints.clone());
        self.endpoint_count
            .set(i64::try_from(state.endpoints.len()).unwrap_or(i64::MAX));
    }

    /// The endpoint for a new request, or `NoEndpoints`.
    fn first(&self, random: u64) -> Result<Arc<Endpoint>, Error> {
        self.pick(random, None).ok_or_else(|| {
            Error::Connect(ConnectError::Resolve(crate::resolve::Error::NoEndpoints(
                self.authority.0.to_string(),
            )))
        })
    }

    /// Power of two choices among endpoints not ejected (all of them when every one is), never
    /// `avoid` when there is another. Allocates nothing: candidates are counted, then indexed.
    fn pick(&self, random: u64, avoid: Option<&Arc<Endpoint>>) -> Option<Arc<Endpoint>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let all = &state.endpoints;
        if let [only] = all.as_slice() {
            return Some(only.clone());
        }
        let now = Instant::now();
        let allowed = |e: &&Arc<Endpoint>| avoid.is_none_or(|a| !Arc::ptr_eq(a, e));
        let healthy = |e: &&Arc<Endpoint>| allowed(e) && !e.is_ejected(now);
        let choose = |filter: &dyn Fn(&&Arc<Endpoint>) -> bool| -> Option<Arc<Endpoint>> {
            let n = all.iter().filter(|e| filter(e)).count() as u64;
            let nth = |i: u64| all.iter().filter(|e| filter(e)).nth(i as usize);
            match n {
                0 => None,
                1 => nth(0).cloned(),
                _ => {
                    let a = random % n;
                    let mut b = (random >> 32) % (n - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (ea, eb) = (nth(a)?, nth(b)?);
                    Some(if ea.cost(now) <= eb.cost(now) { ea } else { eb }.clone())
                }
            }
        };
        choose(&healthy)
            .or_else(|| choose(&allowed))
            .or_else(|| avoid.cloned())
    }
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            pending: AtomicUsize::new(0),
            rtt: Mutex::new(PeakEwma {
                value_ns: DEFAULT_RTT.as_nanos() as f64,
                at: Instant::now(),
            }),
            ejection: Mutex::new(Ejection::default()),
            idle: Mutex::new(Vec::new()),
            http2: tokio::sync::Mutex::new(None),
        }
    }

    /// Peak-EWMA RTT × (pending + 1): the load P2C compares.
    fn cost(&self, now: Instant) -> f64 {
        let rtt = self.rtt.lock().unwrap_or_else(PoisonError::into_inner);
        let decayed = rtt.decayed(now);
        decayed * (self.pending.load(Ordering::Relaxed) + 1) as f64
    }

    fn observe(&self, sample: Duration) {
        let now = Instant::now();
        let mut rtt = self.rtt.lock().unwrap_or_else(PoisonError::into_inner);
        let sample = sample.as_nanos() as f64;
        rtt.value_ns = if sample > rtt.value_ns {
            sample // peak: a slow response counts at once
        } else {
            let w = (-(now.saturating_duration_since(rtt.at).as_secs_f64()) / DECAY.as_secs_f64())
                .exp();
            rtt.value_ns * w + sample * (1.0 - w)
        };
        rtt.at = now;
    }

    fn is_ejected(&self, now: Instant) -> bool {
        self.ejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .until
            .is_some_and(|until| now < until)
    }

    fn eject(&self) -> Duration {
        let mut ejection = self.ejection.lock().unwrap_or_else(PoisonError::into_inner);
        ejection.backoff = (ejection.backoff * 2).clamp(EJECT_MIN, EJECT_MAX);
        ejection.until = Some(Instant::now() + ejection.backoff);
        ejection.backoff
    }

    fn restore(&self) {
        let mut ejection = self.ejection.lock().unwrap_or_else(PoisonError::into_inner);
        if ejection.until.is_some() {
            tracing::info!(addr = %self.addr, "endpoint back in service");
        }
        *ejection = Ejection::default();
    }

    /// The sweep: drops pooled HTTP/1 connections idle for `max_idle` or longer and closed ones
    /// anywhere in the pool; returns how many.
    fn expire_idle(&self, max_idle: Duration, count: &Gauge) -> usize {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let expired = Self::drop_expired(&mut idle, max_idle, count);
        let before = idle.len();
        idle.retain(|(send, _)| !send.is_closed());
        let closed = before - idle.len();
        count.dec_by(i64::try_from(closed).unwrap_or(0));
        expired + closed
    }

    /// Drops the entries idle for `max_idle` or longer: the oldest, at the front.
    fn drop_expired(
        idle: &mut Vec<(http1::SendRequest<Incoming>, Instant)>,
        max_idle: Duration,
        count: &Gauge,
    ) -> usize {
        let now = Instant::now();
        let expired = idle
            .iter()
            .take_while(|(_, since)| now.saturating_duration_since(*since) >= max_idle)
            .count();
        idle.drain(..expired);
        count.dec_by(i64::try_from(expired).unwrap_or(0));
        expired
    }

    /// An idle HTTP/1 connection ready for a request; closed and expired ones are dropped.
    fn take_idle(&self, max_idle: Duration, count: &Gauge) -> Option<http1::SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        Self::drop_expired(&mut idle, max_idle, count);
        // Newest first (warmest); busy ones (a response body still streaming) stay, closed
        // ones met on the way are dropped.
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let (send, _) = &idle[i];
            if send.is_ready() {
                count.dec();
                return Some(idle.remove(i).0);
            }
            if send.is_closed() {
                count.dec();
                idle.remove(i);
            }
        }
        None
    }

    fn put_idle(&self, send: http1::SendRequest<Incoming>, count: &Gauge) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push((send, Instant::now()));
            count.inc();
        }
    }
}

impl PeakEwma {
    fn decayed(&self, now: Instant) -> f64 {
        // Without samples the estimate drifts back toward the default.
        let w =
            (-(now.saturating_duration_since(self.at).as_secs_f64()) / DECAY.as_secs_f64()).exp();
        self.value_ns * w + DEFAULT_RTT.as_nanos() as f64 * (1.0 - w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(addrs: &[&str]) -> Balancer {
        let target = Target::parse(
            "web.ns.svc.cluster.local:80",
            &crate::target::Suffixes::default(),
        )
        .unwrap();
        let b = Balancer {
            target,
            authority: Label::from("web.ns.svc.cluster.local:80"),
            state: Mutex::new(BalancerState {
                from: None,
                until: None,
                endpoints: Vec::new(),
            }),
            endpoint_count: Gauge::default(),
            idle_count: Gauge::default(),
        };
        let endpoints: Endpoints = addrs.iter().map(|a| a.parse().unwrap()).collect();
        b.update(&endpoints, None);
        b
    }

    fn endpoint(b: &Balancer, i: usize) -> Arc<Endpoint> {
        b.state.lock().unwrap().endpoints[i].clone()
    }

    #[tokio::test]
    async fn p2c_prefers_the_faster_endpoint() {
        let b = balancer(&["10.0.0.1:80", "10.0.0.2:80"]);
        endpoint(&b, 0).observe(Duration::from_millis(1));
        endpoint(&b, 1).observe(Duration::from_millis(200));
        let mut fast = 0;
        for i in 0..1000u64 {
            if b.pick(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), None)
                .unwrap()
                .addr
                == endpoint(&b, 0).addr
            {
                fast += 1;
            }
        }
        assert_eq!(fast, 1000, "with two endpoints both are always compared");
    }

    #[tokio::test]
    async fn pending_requests_raise_the_cost() {
        let b = balancer(&["10.0.0.1:80", "10.0.0.2:80"]);
        endpoint(&b, 0).pending.store(10, Ordering::Relaxed);
        assert_eq!(b.pick(7, None).unwrap().addr, endpoint(&b, 1).addr);
    }

    #[tokio::test]
    async fn ejected_endpoints_are_skipped_until_all_are() {
        let b = balancer(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        endpoint(&b, 0).eject();
        endpoint(&b, 1).eject();
        for i in 0..50u64 {
            assert_eq!(b.pick(i * 7919, None).unwrap().addr, endpoint(&b, 2).addr);
        }
        endpoint(&b, 2).eject();
        let picked = b.pick(3, None).unwrap();
        assert!(
            b.state
                .lock()
                .unwrap()
                .endpoints
                .iter()
                .any(|e| Arc::ptr_eq(e, &picked))
        );
        assert_eq!(
            endpoint(&b, 0).eject(),
            Duration::from_secs(2),
            "backoff doubles"
        );
        endpoint(&b, 0).restore();
        assert!(!endpoint(&b, 0).is_ejected(Instant::now()));
    }

    #[tokio::test]
    async fn an_avoided_endpoint_is_not_picked_when_another_exists() {
        let b = balancer(&["10.0.0.1:80", "10.0.0.2:80"]);
        let first = endpoint(&b, 0);
        for i in 0..50u64 {
            assert_eq!(b.pick(i, Some(&first)).unwrap().addr, endpoint(&b, 1).addr);
        }
        let single = balancer(&["10.0.0.9:80"]);
        let only = endpoint(&single, 0);
        assert!(Arc::ptr_eq(&single.pick(1, Some(&only)).unwrap(), &only));
    }

    #[tokio::test]
    async fn static_answers_stay_fresh_and_dns_answers_expire() {
        let b = balancer(&["10.0.0.1:80"]);
        let now = Instant::now();
        assert!(
            b.is_fresh(now + Duration::from_secs(3600)),
            "static: never re-resolved"
        );
        let same: Endpoints = ["10.0.0.1:80".parse().unwrap()].into_iter().collect();
        b.update(&same, Some(now + Duration::from_secs(5)));
        assert!(b.is_fresh(now));
        assert!(
            !b.is_fresh(now + Duration::from_secs(5)),
            "asked again at the TTL"
        );
    }

    #[tokio::test]
    async fn a_new_answer_keeps_the_state_of_remaining_endpoints() {
        let b = balancer(&["10.0.0.1:80", "10.0.0.2:80"]);
        let kept = endpoint(&b, 1);
        kept.eject();
        let next: Endpoints = ["10.0.0.2:80", "10.0.0.3:80"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        b.update(&next, None);
        assert!(Arc::ptr_eq(&endpoint(&b, 0), &kept));
        assert_eq!(b.state.lock().unwrap().endpoints.len(), 2);
    }
}
