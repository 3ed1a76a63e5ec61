//! The HTTP session of one downstream connection: hyper serves HTTP/1 or HTTP/2; each request is
//! routed by `l5d-dst-override` or its authority, checked, rewritten and sent upstream.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, FORWARDED, HOST, HeaderName, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use identity::IdentityName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use super::conn::decided_or_counted;
use super::context::Shared;
use super::error::{Blame, Error};
use super::forwarded;
use super::route::{self, Source};
use crate::control::policy;
use crate::limit::RateLimits;
use crate::metrics::{Allowed, DstLabels, Label, RouteCache};
use crate::target::Target;
use crate::upstream::{Names, Needs, Service};

mod idle;
mod respond;
mod rewrite;

pub use respond::error_response;
use rewrite::{
    header_list_size, is_grpc, parser_limit, strip_hop_by_hop, take_orig_proto, upgrade_protocol,
};

/// The body of every response sent downstream.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Gateway routing override (Linkerd ingress style).
pub static L5D_DST_OVERRIDE: HeaderName = HeaderName::from_static("l5d-dst-override");
/// The caller's identity, set on forwarded requests.
pub static L5D_CLIENT_ID: HeaderName = HeaderName::from_static("l5d-client-id");
/// Why the gateway answered instead of the service.
pub static L5D_PROXY_ERROR: HeaderName = HeaderName::from_static("l5d-proxy-error");
/// Set to `close` when the gateway closes the downstream connection after an error.
pub static L5D_PROXY_CONNECTION: HeaderName = HeaderName::from_static("l5d-proxy-connection");
/// The HTTP/1 version a Linkerd proxy upgraded a request from (spec §6.2).
pub use crate::upstream::version::L5D_ORIG_PROTO;
/// The target's logical `name:port`, set upstream as Linkerd's gateway does.
pub static L5D_DST_CANONICAL: HeaderName = HeaderName::from_static("l5d-dst-canonical");

/// How the requests of a session find their target.
#[derive(Clone, Debug)]
pub enum Routing {
    /// Each request names it: `l5d-dst-override`, else `:authority` / `Host`.
    PerRequest,
    /// A transport header fixed it for every request (or made every request fail).
    Fixed(Result<Target, crate::target::Error>),
}

/// Most header fields in one HTTP/1 message.
const MAX_HEADERS: usize = 200;

/// What forwarding to one target needs, computed once per session and target.
struct Route {
    /// The URI authority and `Host` of upstream requests.
    names: Names,
    /// `l5d-dst-canonical`: the target's `name:port`, as Linkerd's gateway sets it.
    canonical: HeaderValue,
    /// This gateway's `Forwarded` element for this caller and target.
    forwarded: HeaderValue,
    /// The `authority` metric label.
    label: Label,
    /// The target: its balancer and profile (shared with every session to it).
    service: Arc<Service>,
    /// Deadline for the response headers.
    response_timeout: Option<Duration>,
    /// The text that named the target (per-request routing), so the next request naming it the
    /// same way is not parsed again.
    named_by: Box<[u8]>,
}

impl Route {
    fn new(target: &Target, named_by: &[u8], shared: &Shared, peer: &str) -> Result<Self, Error> {
        let gateway = shared.identity.as_str();
        // A checked target is a DNS name and a port, and identities are visible ASCII: these
        // conversions only fail on a bug, reported as a local error rather than a panic.
        let invalid = |what: &'static str| Error::Local(what);
        Ok(Self {
            names: Names {
                authority: http::uri::Authority::from_maybe_shared(Bytes::copy_from_slice(
                    target.authority().as_bytes(),
                ))
                .map_err(|_| invalid("a checked target is not a URI authority"))?,
                host: HeaderValue::from_str(target.host_header())
                    .map_err(|_| invalid("a checked target is not a Host value"))?,
            },
            canonical: HeaderValue::from_str(target.authority())
                .map_err(|_| invalid("a checked target is not a header value"))?,
            forwarded: HeaderValue::from_str(&forwarded::element(
                gateway,
                peer,
                target.host_header(),
            ))
            .map_err(|_| invalid("an identity is not a Forwarded value"))?,
            label: Label(target.authority().clone()),
            service: shared.upstream.service(target),
            response_timeout: shared.limits.response_timeout_for(target.authority()),
            named_by: named_by.into(),
        })
    }
}

/// What a session keeps between its requests.
struct Cache {
    route: Option<Arc<Route>>,
    policy: policy::Snapshot,
}

/// One downstream connection's request context.
struct Session {
    shared: Arc<Shared>,
    peer: IdentityName,
    /// The caller's address (the access log's `source`).
    remote: std::net::SocketAddr,
    peer_label: Label,
    /// `l5d-client-id` value, made once per connection.
    peer_header: Option<HeaderValue>,
    /// Metric handles of the session's current route.
    route_cache: RouteCache,
    routing: Routing,
    /// The last route (a connection usually talks to one service) and the policy snapshot.
    cache: std::sync::Mutex<Cache>,
    /// Notified when an error must close the downstream connection.
    close: Notify,
    /// Requests in flight (an idle HTTP/1 connection gives back its buffers).
    busy: idle::Busy,
}

/// Serves HTTP on an authenticated stream until the peer closes, a fatal error closes it, or
/// the gateway drains (HTTP/2 GOAWAY, HTTP/1 close after the in-flight request).
///
/// # Errors
/// `Http`: the connection-level error hyper reports (I/O, protocol violation).
pub async fn serve<IO>(
    shared: Arc<Shared>,
    io: IO,
    (peer, remote): (IdentityName, std::net::SocketAddr),
    routing: Routing,
    http1_only: bool,
) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let session = Arc::new(Session {
        peer_label: Label::from(peer.as_str()),
        // Identities are visible ASCII, so this is always a valid header value.
        peer_header: HeaderValue::from_str(peer.as_str()).ok(),
        route_cache: RouteCache::default(),
        cache: std::sync::Mutex::new(Cache {
            route: None,
            policy: shared.policy.snapshot(),
        }),
        peer,
        remote,
        routing,
        shared,
        close: Notify::new(),
        busy: idle::Busy::default(),
    });
    let service = {
        let session = session.clone();
        service_fn(move |req| {
            let session = session.clone();
            async move { Ok::<_, Infallible>(session.handle(req).await) }
        })
    };
    let limits = &session.shared.limits;
    // hyper's own HTTP/1 builder and hyper-util's (auto-detecting) one take the same settings.
    macro_rules! http1_settings {
        ($builder:expr) => {
            $builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .preserve_header_case(limits.preserve_header_case)
                .max_headers(MAX_HEADERS)
                .max_buf_size(crate::upstream::buffer_for(parser_limit(
                    limits.max_header_list_size,
                )))
        };
    }
    if http1_only {
        // ALPN `http/1.1`, or a transport header announcing HTTP/1: no HTTP/2 to detect, and
        // the connection can give back its buffers while it idles.
        let mut builder = hyper::server::conn::http1::Builder::new();
        http1_settings!(builder);
        return idle::serve(&session, &builder, io, service).await;
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    http1_settings!(builder.http1());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(
            u32::try_from(parser_limit(limits.max_header_list_size)).unwrap_or(u32::MAX),
        );
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut drain = session.shared.drain.clone();
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => return result.map_err(Error::Http),
            _ = session.close.notified(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = drain.wait_for(|draining| *draining), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

impl Session {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<InFlight> {
        let busy = self.busy.enter();
        let start = Instant::now();
        let mut span = self.shared.tracing.as_ref().and_then(|t| {
            t.start_span(
                req.method(),
                req.uri().path(),
                req.headers(),
                &self.peer_label.0,
                self.remote,
            )
        });
        let entry = self.shared.access_log.as_ref().map(|log| {
            let mut entry = self.log_entry(log, &req);
            if let Some(span) = &span {
                entry.trace_id = Some(span.trace_id());
            }
            entry
        });
        let grpc = is_grpc(req.headers());
        let http1 = req.version() != Version::HTTP_2;
        let routed = self.admit(&req).and_then(|permit| {
            let (route, allowed, file_limits) = self.route(&req)?;
            self.rate_limit(route.service.target(), &file_limits)?;
            Ok((permit, (route, allowed)))
        });
        let mut served = Served::default();
        let (authority, allowed, permit, result) = match routed {
            Ok((permit, (route, allowed))) => {
                if let (Some(span), Some(tracing)) = (&mut span, &self.shared.tracing) {
                    span.routed(&route.label.0);
                    span.inject(tracing, req.headers_mut());
                }
                (
                    route.label.clone(),
                    Some(allowed),
                    Some(permit),
                    self.forward(&route, req, grpc, &mut served).await,
                )
            }
            Err(e) => (Label::default(), None, None, Err(e)),
        };
        let failure = result
            .as_ref()
            .err()
            .map(|e| (e.reason(), e.blame().as_str()));
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                self.log(&error, &authority);
                // An HTTP/1 connection carries one request at a time: close it after a fatal
                // error. An HTTP/2 connection multiplexes other targets' streams; the failure is
                // this stream's alone (it still carries `l5d-proxy-connection: close`).
                if error.is_fatal() && http1 {
                    self.close.notify_one();
                }
                error_response(&error, grpc, http1)
            }
        };
        self.record(
            &authority,
            &served.dst,
            allowed.as_ref(),
            response.status(),
            start,
        );
        if let Some(span) = span {
            let endpoint = served
                .endpoint
                .as_ref()
                .map(|e| (e.address().addr, e.address().identity.is_some()));
            span.end(response.status(), endpoint, failure);
        }
        let log = entry.map(|mut entry| {
            entry.target = authority.0.clone();
            entry.status = Some(response.status().as_u16());
            if let Some(endpoint) = &served.endpoint {
                entry.endpoint = Some(endpoint.address().addr);
                entry.upstream_tls = endpoint.address().identity.is_some();
            }
            if let Some((reason, blame)) = failure {
                (entry.error, entry.blame) = (Some(reason), Some(blame));
            }
            Box::new(Logged {
                entry,
                start,
                shared: self.shared.clone(),
            })
        });
        // The request stays in flight until its response body has been sent.
        response.map(|body| InFlight {
            body,
            _permit: permit,
            _busy: busy,
            log,
        })
    }

    /// The limits a request must pass before it is routed: an in-flight permit (else shed),
    /// `CONNECT` allowed, headers within `max_header_list_size`.
    fn admit(&self, req: &Request<Incoming>) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        let limits = &self.shared.limits;
        let Ok(permit) = limits.in_flight.clone().try_acquire_owned() else {
            self.shared.metrics.shed.inc();
            return Err(Error::LoadShed);
        };
        if req.method() == http::Method::CONNECT && !limits.http_connect {
            return Err(Error::ConnectNotAllowed);
        }
        if header_list_size(req.headers()) > limits.max_header_list_size {
            return Err(Error::HeadersTooLarge);
        }
        Ok(permit)
    }

    /// An access-log line's request part (the rest is filled when the response is known).
    fn log_entry(
        &self,
        log: &crate::access_log::AccessLog,
        req: &Request<Incoming>,
    ) -> Box<crate::access_log::Entry> {
        use crate::access_log::UriDetail;
        let uri = req.uri();
        let mut entry = Box::new(crate::access_log::Entry::new(
            self.peer_label.0.clone(),
            self.remote,
            Some(req.method().clone()),
        ));
        entry.path = match log.uri {
            UriDetail::Off => None,
            UriDetail::Path => Some(uri.path().to_owned()),
            UriDetail::Full => Some(
                uri.path_and_query()
                    .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            ),
        };
        entry.bytes_in = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        entry.trace_id = req
            .headers()
            .get("traceparent")
            .and_then(|v| crate::access_log::trace_id(v.as_bytes()));
        entry
    }

    /// Takes a token from every rate limit the caller and target match: the config's, then the
    /// policy file's (none configured: free).
    fn rate_limit(&self, target: &Target, file: &RateLimits) -> Result<(), Error> {
        let config = &self.shared.limits.rate_limits;
        if config.is_empty() && file.is_empty() {
            return Ok(());
        }
        let peer = self.peer.as_str();
        let taken = config
            .take(peer, target)
            .and_then(|()| file.take(peer, target));
        taken.map_err(|limited| {
            self.shared
                .metrics
                .rate_limited
                .get_or_create(&crate::metrics::RuleLabels {
                    rule: Label(limited.rule.clone()),
                })
                .inc();
            Error::RateLimited {
                rule: limited.rule,
                retry_after: limited.retry_after,
            }
        })
    }

    /// Decides where the request goes (the transport header's target, else
    /// `l5d-dst-override`, else the URI authority, else `Host`; loops; policy) and finds the
    /// route to it: the session's last one when the target is the same.
    fn route(
        &self,
        req: &Request<Incoming>,
    ) -> Result<(Arc<Route>, Allowed, Arc<RateLimits>), Error> {
        let headers = req.headers();
        let source = match &self.routing {
            Routing::Fixed(fixed) => Source::Checked(fixed.as_ref()),
            Routing::PerRequest => match (
                headers.get(&L5D_DST_OVERRIDE),
                req.uri().authority(),
                headers.get(HOST),
            ) {
                (Some(value), _, _) => Source::Override(value.as_bytes()),
                (None, Some(authority), _) => Source::Authority(authority.as_str()),
                (None, None, Some(host)) => Source::Host(host.as_bytes()),
                (None, None, None) => Source::Nothing,
            },
        };
        let named_by: &[u8] = match source {
            Source::Override(value) | Source::Host(value) => value,
            Source::Authority(authority) => authority.as_bytes(),
            Source::Checked(_) | Source::Nothing => &[],
        };
        let forwarded = headers.get_all(FORWARDED).iter().map(HeaderValue::as_bytes);
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.shared.policy.refresh(&mut cache.policy);
        // The common case: a connection keeps talking to one service (a header session always
        // does), named the same way.
        let last = cache.route.clone().filter(|route| match source {
            Source::Checked(Ok(target)) => route.service.target().authority() == target.authority(),
            Source::Checked(Err(_)) | Source::Nothing => false,
            _ => *route.named_by == *named_by,
        });
        let source = match &last {
            Some(route) => Source::Checked(Ok(route.service.target())),
            None => source,
        };
        let snapshot = route::Snapshot {
            gateway: &self.shared.identity,
            suffixes: &self.shared.suffixes,
            policy: &cache.policy,
        };
        let decided = route::decide(&self.peer, source, forwarded, &snapshot);
        let file_limits = cache.policy.rate_limits().clone();
        drop(cache);
        let decision = decided_or_counted(
            &self.shared,
            policy::Session::Http,
            &self.peer,
            &self.peer_label,
            decided,
        )?;
        let route = match last {
            Some(route) => route,
            None => {
                let route = Arc::new(Route::new(
                    &decision.target,
                    named_by,
                    &self.shared,
                    self.peer.as_str(),
                )?);
                let mut cache = self
                    .cache
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                cache.route = Some(route.clone());
                route
            }
        };
        Ok((route, decision.allowed, file_limits))
    }

    /// Forwards `req` on `route`; `served` gets what answered it.
    async fn forward(
        &self,
        route: &Route,
        mut req: Request<Incoming>,
        grpc: bool,
        served: &mut Served,
    ) -> Result<Response<Body>, Error> {
        if req.method() == http::Method::CONNECT {
            return self.tunnel(route, req).await;
        }
        let downgraded = match req.version() {
            Version::HTTP_2 => take_orig_proto(req.headers_mut()),
            _ => None,
        };
        // A downgraded request is HTTP/1 again: the version upstream is chosen per endpoint.
        if let Some(version) = downgraded {
            *req.version_mut() = version;
        }
        // An HTTP/1.1 `Upgrade` (WebSocket): the two hop-by-hop headers that ask for it go on.
        let upgrade = (req.version() == Version::HTTP_11)
            .then(|| upgrade_protocol(req.headers()))
            .flatten();
        let downstream_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        headers.remove(&L5D_DST_OVERRIDE);
        if let Some(id) = &self.peer_header {
            headers.insert(&L5D_CLIENT_ID, id.clone());
        }
        headers.append(FORWARDED, route.forwarded.clone());
        headers.insert(&L5D_DST_CANONICAL, route.canonical.clone());
        if let Some(protocol) = &upgrade {
            headers.insert(UPGRADE, protocol.clone());
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let needs = Needs::of(req.version(), req.headers(), upgrade.is_some(), grpc);
        let upstream = &self.shared.upstream;
        let path = req.uri().path();
        // Never fail over back to a gateway the request came through: the caller, or one
        // named in its `Forwarded` headers.
        let forwarded = req.headers();
        let came_through = |gateway: &str| {
            gateway.eq_ignore_ascii_case(self.peer.as_str())
                || forwarded
                    .get_all(FORWARDED)
                    .iter()
                    .any(|value| forwarded::names_by(value.as_bytes(), gateway))
        };
        let (balancer, route_timeout) = upstream
            .select(&route.service, Some((req.method(), path)), &came_through)
            .await?;
        let sent = upstream.send(&balancer, req, needs, &route.names, &mut served.endpoint);
        // A profile route's timeout wins over the configured one.
        let answered = match route_timeout.or(route.response_timeout) {
            Some(deadline) => tokio::time::timeout(deadline, sent)
                .await
                .map_err(|_| Error::ResponseTimeout(deadline))
                .and_then(|r| r.map_err(Error::from)),
            None => sent.await.map_err(Error::from),
        };
        // Read after the send: a first request waited there for discovery's first answer.
        served.dst = balancer.dst_labels();
        let mut response = answered?;
        if let (Some(protocol), Some(downstream), StatusCode::SWITCHING_PROTOCOLS) =
            (upgrade, downstream_upgrade, response.status())
        {
            let upstream = hyper::upgrade::on(&mut response);
            tokio::spawn(splice(downstream, upstream, route.label.clone()));
            let headers = response.headers_mut();
            strip_hop_by_hop(headers);
            headers.insert(UPGRADE, protocol);
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            return Ok(response.map(BodyExt::boxed));
        }
        let headers = response.headers_mut();
        strip_hop_by_hop(headers);
        // An upstream's own proxy-error headers are not ours to relay (spec §6.3).
        headers.remove(&L5D_PROXY_ERROR);
        headers.remove(&L5D_PROXY_CONNECTION);
        if downgraded.is_some() {
            // Tell the upgrading proxy which HTTP/1 version answered, so it can restore it.
            let version = match response.version() {
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            };
            response
                .headers_mut()
                .insert(&L5D_ORIG_PROTO, HeaderValue::from_static(version));
        }
        Ok(response.map(BodyExt::boxed))
    }

    /// `CONNECT` (when enabled): a TCP connection to the target, then the bytes both ways.
    async fn tunnel(
        &self,
        route: &Route,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, Error> {
        let upstream = &self.shared.upstream;
        let came_through = |gateway: &str| gateway.eq_ignore_ascii_case(self.peer.as_str());
        let (balancer, _) = upstream.select(&route.service, None, &came_through).await?;
        let (_, tcp) = upstream.connect(&balancer).await?;
        let downstream = hyper::upgrade::on(&mut req);
        let label = route.label.clone();
        tokio::spawn(async move {
            match downstream.await {
                Ok(upgraded) => {
                    let mut downstream = TokioIo::new(upgraded);
                    let mut tcp = tcp;
                    if let Err(e) = tokio::io::copy_bidirectional(&mut downstream, &mut tcp).await {
                        tracing::debug!(target = %label.0, error = %e, "CONNECT tunnel ended");
                    }
                }
                Err(e) => tracing::debug!(target = %label.0, error = %e, "CONNECT not upgraded"),
            }
        });
        Ok(Response::new(
            Empty::new().map_err(|never| match never {}).boxed(),
        ))
    }

    fn record(
        &self,
        authority: &Label,
        dst: &DstLabels,
        allowed: Option<&Allowed>,
        status: StatusCode,
        start: Instant,
    ) {
        let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
        self.shared.metrics.record_response(
            &self.route_cache,
            (authority, dst),
            &self.peer_label,
            allowed,
            status.as_u16(),
            latency_ms,
        );
    }

    fn log(&self, error: &Error, authority: &Label) {
        let (peer, reason, target) = (self.peer.as_str(), error.reason(), &*authority.0);
        match error.blame() {
            Blame::Downstream => tracing::debug!(peer, reason, target, %error, "request refused"),
            Blame::Upstream => {
                tracing::warn!(peer, reason, target, %error, "request failed upstream")
            }
            Blame::Local => tracing::error!(peer, reason, target, %error, "request failed"),
        }
    }
}

/// Copies bytes both ways between the two upgraded sides until either closes.
async fn splice(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    target: Label,
) {
    match tokio::try_join!(downstream, upstream) {
        Ok((down, up)) => {
            let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
            match tokio::io::copy_bidirectional(&mut down, &mut up).await {
                Ok((sent, received)) => {
                    tracing::debug!(target = %target.0, sent, received, "upgraded connection closed");
                }
                Err(e) => {
                    tracing::debug!(target = %target.0, error = %e, "upgraded connection ended")
                }
            }
        }
        Err(e) => tracing::debug!(target = %target.0, error = %e, "upgrade failed"),
    }
}

/// What answered a request: the `dst_*` labels of its service and the endpoint.
#[derive(Default)]
struct Served {
    dst: DstLabels,
    endpoint: Option<Arc<crate::upstream::Endpoint>>,
}

/// An access-log line waiting for its response body to end.
struct Logged {
    entry: Box<crate::access_log::Entry>,
    start: Instant,
    shared: Arc<Shared>,
}

/// A response body that holds an in-flight permit until it ends (or is dropped), and writes
/// the request's access-log line then.
pub struct InFlight {
    body: Body,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    _busy: idle::BusyGuard,
    log: Option<Box<Logged>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(logged) = self.log.take()
            && let Some(log) = &logged.shared.access_log
        {
            let Logged {
                mut entry, start, ..
            } = *logged;
            entry.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
            log.write(entry);
        }
    }
}

impl hyper::body::Body for InFlight {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(logged)) = (&polled, self.log.as_mut())
            && let Some(data) = frame.data_ref()
        {
            logged.entry.bytes_out += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
