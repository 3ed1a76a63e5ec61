//! The HTTP session of one downstream connection: hyper serves HTTP/1 or HTTP/2; each request is
//! routed by `l5d-dst-override` or its authority, checked, rewritten and sent upstream.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, FORWARDED, HOST, HeaderName, TE, TRANSFER_ENCODING,
    UPGRADE,
};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use identity::IdentityName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, watch};

use super::context::Shared;
use super::error::{Blame, Error};
use super::forwarded;
use crate::control::policy;
use crate::metrics::{Allowed, Label, RouteCache};
use crate::target::Target;
use crate::upstream::Balancer;

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
pub static L5D_ORIG_PROTO: HeaderName = HeaderName::from_static("l5d-orig-proto");

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

/// Hop-by-hop headers (RFC 9110 §7.6.1) never forwarded; `te` is handled apart.
static HOP_BY_HOP: [HeaderName; 5] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TRANSFER_ENCODING,
    UPGRADE,
    CONNECTION,
];

/// What forwarding to one target needs, computed once per session and target.
struct Route {
    /// `name:port` for the upstream URI (and the pool key).
    authority: http::uri::Authority,
    /// `Host` for HTTP/1 upstream requests (the name alone for port 80).
    host: HeaderValue,
    /// This gateway's `Forwarded` element for this caller and target.
    forwarded: HeaderValue,
    /// The `authority` metric label.
    label: Label,
    /// The target's endpoints and connections (shared with every session to it).
    balancer: Arc<Balancer>,
    /// Deadline for the response headers.
    response_timeout: Option<Duration>,
}

impl Route {
    fn new(target: &Target, shared: &Shared, peer: &str) -> Result<Self, Error> {
        let gateway = shared.identity.as_str();
        // A checked target is a DNS name and a port, and identities are visible ASCII: these
        // conversions only fail on a bug, reported as a local error rather than a panic.
        let invalid = |what: &str| Error::Upstream(format!("invalid {what} for {target}"));
        Ok(Self {
            authority: http::uri::Authority::from_maybe_shared(Bytes::copy_from_slice(
                target.authority().as_bytes(),
            ))
            .map_err(|_| invalid("authority"))?,
            host: HeaderValue::from_str(target.host_header()).map_err(|_| invalid("host"))?,
            forwarded: HeaderValue::from_str(&forwarded::element(
                gateway,
                peer,
                target.host_header(),
            ))
            .map_err(|_| invalid("Forwarded"))?,
            label: Label(target.authority().clone()),
            balancer: shared.upstream.balancer(target),
            response_timeout: shared.limits.response_timeout_for(target.authority()),
        })
    }
}

/// One downstream connection's request context.
struct Session {
    shared: Arc<Shared>,
    peer: IdentityName,
    peer_label: Label,
    /// `l5d-client-id` value, made once per connection.
    peer_header: Option<HeaderValue>,
    /// Metric handles of the session's current route.
    route_cache: RouteCache,
    routing: Routing,
    /// The last route of a per-request session, keyed by the authority text that named it.
    last_route: std::sync::Mutex<Option<(String, Arc<Route>)>>,
    /// Notified when an error must close the downstream connection.
    close: Notify,
}

/// Serves HTTP on an authenticated stream until the peer closes, a fatal error closes it, or
/// the gateway drains (HTTP/2 GOAWAY, HTTP/1 close after the in-flight request).
///
/// # Errors
/// The connection-level error hyper reports (I/O, protocol violation).
pub async fn serve<IO>(
    shared: Arc<Shared>,
    io: IO,
    peer: IdentityName,
    routing: Routing,
    mut drain: watch::Receiver<bool>,
) -> Result<(), Box<dyn StdError + Send + Sync>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let session = Arc::new(Session {
        peer_label: Label::from(peer.as_str()),
        // Identities are visible ASCII, so this is always a valid header value.
        peer_header: HeaderValue::from_str(peer.as_str()).ok(),
        route_cache: RouteCache::default(),
        last_route: std::sync::Mutex::new(None),
        peer,
        routing,
        shared,
        close: Notify::new(),
    });
    let service = {
        let session = session.clone();
        service_fn(move |req| {
            let session = session.clone();
            async move { Ok::<_, Infallible>(session.handle(req).await) }
        })
    };
    let limits = &session.shared.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .preserve_header_case(limits.preserve_header_case)
        .max_headers(MAX_HEADERS)
        .max_buf_size(crate::upstream::buffer_for(parser_limit(
            limits.max_header_list_size,
        )));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(
            u32::try_from(parser_limit(limits.max_header_list_size)).unwrap_or(u32::MAX),
        );
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => return result,
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
    async fn handle(&self, req: Request<Incoming>) -> Response<InFlight> {
        let start = Instant::now();
        let grpc = is_grpc(req.headers());
        let http1 = req.version() != Version::HTTP_2;
        let routed = self
            .admit(&req)
            .and_then(|permit| Ok((permit, self.route(&req)?)));
        let (authority, allowed, permit, result) = match routed {
            Ok((permit, (route, allowed))) => (
                route.label.clone(),
                Some(allowed),
                Some(permit),
                self.forward(&route, req).await,
            ),
            Err(e) => (Label::default(), None, None, Err(e)),
        };
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
        self.record(&authority, allowed.as_ref(), response.status(), start);
        // The request stays in flight until its response body has been sent.
        response.map(|body| InFlight {
            body,
            _permit: permit,
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

    /// Picks and checks the target: the transport header's, else `l5d-dst-override`, else the
    /// URI authority, else `Host`. Loops (by identity or `Forwarded`) are refused either way,
    /// then the authorization policy decides.
    fn route(&self, req: &Request<Incoming>) -> Result<(Arc<Route>, Allowed), Error> {
        if self.peer == self.shared.identity {
            return Err(Error::Loop);
        }
        let headers = req.headers();
        let route = match &self.routing {
            Routing::Fixed(fixed) => {
                self.cached_route(fixed.as_ref().map_err(Clone::clone)?.authority())?
            }
            Routing::PerRequest => {
                let raw = match (
                    headers.get(&L5D_DST_OVERRIDE),
                    req.uri().authority(),
                    headers.get(HOST),
                ) {
                    (Some(value), _, _) => value.to_str().map_err(|_| Error::TargetNotText)?,
                    (None, Some(authority), _) => authority.as_str(),
                    (None, None, Some(host)) => host.to_str().map_err(|_| Error::TargetNotText)?,
                    (None, None, None) => return Err(Error::NoTarget),
                };
                self.cached_route(raw)?
            }
        };
        if forwarded::has_loop(headers, self.shared.identity.as_str()) {
            return Err(Error::Loop);
        }
        let allowed = self
            .shared
            .policy
            .authorize(
                &self.shared.metrics,
                policy::Session::Http,
                (&self.peer, &self.peer_label),
                (route.balancer.target(), &route.label),
            )
            .ok_or(Error::Unauthorized)?;
        Ok((route, allowed))
    }

    /// The route `raw` names: the session's last one when the text is the same (the common case:
    /// a connection talks to one service), else parsed, checked and remembered.
    fn cached_route(&self, raw: &str) -> Result<Arc<Route>, Error> {
        let mut last = self
            .last_route
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((text, route)) = last.as_ref()
            && text == raw
        {
            return Ok(route.clone());
        }
        let target = Target::parse(raw, &self.shared.suffixes)?;
        let route = Arc::new(Route::new(&target, &self.shared, self.peer.as_str())?);
        *last = Some((raw.to_owned(), route.clone()));
        Ok(route)
    }

    async fn forward(
        &self,
        route: &Route,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, Error> {
        if req.method() == http::Method::CONNECT {
            return self.tunnel(route, req).await;
        }
        let downgraded = match req.version() {
            Version::HTTP_2 => take_orig_proto(req.headers_mut()),
            _ => None,
        };
        let http1 = req.version() != Version::HTTP_2 || downgraded.is_some();
        // An HTTP/1.1 `Upgrade` (WebSocket): the two hop-by-hop headers that ask for it go on.
        let upgrade = (req.version() == Version::HTTP_11)
            .then(|| upgrade_protocol(req.headers()))
            .flatten();
        let downstream_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let mut parts = http::uri::Parts::default();
        if !http1 {
            // HTTP/2 sends the target as `:authority`; HTTP/1 uses origin form and `Host`.
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(route.authority.clone());
        }
        parts.path_and_query = Some(
            req.uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        *req.uri_mut() = Uri::from_parts(parts)
            .map_err(|e| Error::Upstream(format!("cannot build upstream URI: {e}")))?;
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        headers.remove(&L5D_DST_OVERRIDE);
        if let Some(id) = &self.peer_header {
            headers.insert(&L5D_CLIENT_ID, id.clone());
        }
        headers.append(FORWARDED, route.forwarded.clone());
        if let Some(protocol) = &upgrade {
            headers.insert(UPGRADE, protocol.clone());
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let upstream = &self.shared.upstream;
        if http1 {
            headers.insert(HOST, route.host.clone());
            *req.version_mut() = downgraded.unwrap_or(Version::HTTP_11);
        } else {
            headers.remove(HOST);
        }
        let sent = upstream.send(&route.balancer, req, !http1);
        let mut response = match route.response_timeout {
            Some(deadline) => tokio::time::timeout(deadline, sent)
                .await
                .map_err(|_| Error::ResponseTimeout(deadline))??,
            None => sent.await?,
        };
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
        let tcp = self.shared.upstream.connect(&route.balancer).await?;
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
        allowed: Option<&Allowed>,
        status: StatusCode,
        start: Instant,
    ) {
        let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
        self.shared.metrics.record_response(
            &self.route_cache,
            authority,
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

/// Removes hop-by-hop headers, the ones the `Connection` header names, and every `te` except
/// `trailers` (which gRPC needs end to end).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (no hashing) finds what is there; most messages carry at most
    // `connection: keep-alive`, so the removals below touch only names that are present.
    let mut present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name))
        .cloned()
        .collect();
    let has_te = headers.contains_key(TE);
    if present.is_empty() && !has_te {
        return;
    }
    present.extend(
        headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .filter(|name| !HOP_BY_HOP.contains(name)),
    );
    for name in &present {
        headers.remove(name);
    }
    if !has_te {
        return;
    }
    let keep_te = headers.get_all(TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    headers.remove(TE);
    if keep_te {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Upgrade` with `Connection: upgrade`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    asks.then(|| headers.get(UPGRADE).cloned()).flatten()
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

/// What the HTTP parsers accept: 4× the configured limit (at least 256 KiB), so that the
/// gateway's own check sees oversized headers and answers 431 with `l5d-proxy-error`; beyond
/// this the parser answers a bare 431 itself, bounding the memory one request can take.
fn parser_limit(max_header_list_size: usize) -> usize {
    max_header_list_size.saturating_mul(4).max(256 * 1024)
}

/// The size of a header section as HTTP/2 counts it (RFC 9113 §6.5.2): name + value + 32 per
/// field.
fn header_list_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// A response body that holds an in-flight permit until it ends (or is dropped).
pub struct InFlight {
    body: Body,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl hyper::body::Body for InFlight {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Removes `l5d-orig-proto` and returns the HTTP/1 version it names (`HTTP/1.1` or `HTTP/1.0`,
/// optionally followed by `; absolute-form`). The request then goes upstream as that version in
/// origin form. An unknown value is logged and the request stays HTTP/2.
fn take_orig_proto(headers: &mut HeaderMap) -> Option<Version> {
    let value = headers.remove(&L5D_ORIG_PROTO)?;
    let proto = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    match proto {
        Some("HTTP/1.1") => Some(Version::HTTP_11),
        Some("HTTP/1.0") => Some(Version::HTTP_10),
        _ => {
            tracing::warn!(value = ?value, "unknown l5d-orig-proto; forwarding as HTTP/2");
            None
        }
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// Finds the connector's error inside the client's, else describes the upstream failure.
/// The response the gateway synthesizes for `error` (spec §8): empty body, `l5d-proxy-error`,
/// `l5d-proxy-connection: close` (+ `connection: close` on HTTP/1) when fatal; gRPC callers get
/// 200 with `grpc-status` instead.
pub fn error_response(error: &Error, grpc: bool, http1: bool) -> Response<Body> {
    let message = sanitize(&error.proxy_error());
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    let headers = response.headers_mut();
    if grpc {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(error.grpc_status())),
        );
        if let Ok(value) = HeaderValue::from_str(&message) {
            headers.insert("grpc-message", value);
        }
    } else {
        *response.status_mut() = error.status();
    }
    let headers = response.headers_mut();
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    if let Ok(value) = HeaderValue::from_str(&message) {
        headers.insert(&L5D_PROXY_ERROR, value);
    }
    if error.is_fatal() {
        headers.insert(&L5D_PROXY_CONNECTION, HeaderValue::from_static("close"));
        if http1 && !grpc {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
    }
    response
}

/// Keeps header-safe visible ASCII; anything else becomes `?`.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target;

    #[test]
    fn hop_by_hop_headers_are_removed_and_te_trailers_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(TE, HeaderValue::from_static("gzip, trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert!(headers.get("x-private").is_none());
        assert!(headers.get(CONNECTION).is_none());
        assert!(headers.get("keep-alive").is_none());
        assert_eq!(headers.get(TE).unwrap(), "trailers");
        assert_eq!(headers.get("x-kept").unwrap(), "1");
    }

    #[test]
    fn te_alone_and_upgrade_alone_are_still_handled() {
        let mut te_only = HeaderMap::new();
        te_only.insert(TE, HeaderValue::from_static("gzip"));
        te_only.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut te_only);
        assert!(te_only.get(TE).is_none());
        assert_eq!(te_only.len(), 1);

        let mut upgrade_only = HeaderMap::new();
        upgrade_only.insert(UPGRADE, HeaderValue::from_static("websocket"));
        upgrade_only.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut upgrade_only);
        assert!(upgrade_only.is_empty());

        let mut clean = HeaderMap::new();
        clean.insert("x-kept", HeaderValue::from_static("1"));
        clean.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let before = clean.clone();
        strip_hop_by_hop(&mut clean);
        assert_eq!(clean, before);
    }

    #[test]
    fn orig_proto_names_the_http1_version_in_both_forms() {
        for (value, version) in [
            ("HTTP/1.1", Some(Version::HTTP_11)),
            ("HTTP/1.0", Some(Version::HTTP_10)),
            ("HTTP/1.1; absolute-form", Some(Version::HTTP_11)),
            ("HTTP/1.0; absolute-form", Some(Version::HTTP_10)),
            ("HTTP/3", None),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(&L5D_ORIG_PROTO, HeaderValue::from_static(value));
            assert_eq!(take_orig_proto(&mut headers), version, "{value}");
            assert!(
                headers.get(&L5D_ORIG_PROTO).is_none(),
                "the header is removed"
            );
        }
        assert_eq!(take_orig_proto(&mut HeaderMap::new()), None);
    }

    #[test]
    fn bad_domain_response_matches_linkerd() {
        let response = error_response(&Error::Target(target::Error::NotAllowed), false, true);
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()[&L5D_PROXY_ERROR], "bad gateway domain");
        assert_eq!(response.headers()[CONTENT_LENGTH], "0");
        assert!(response.headers().get(&L5D_PROXY_CONNECTION).is_none());
    }

    #[test]
    fn fatal_error_closes_http1_connection() {
        let response = error_response(&Error::Loop, false, true);
        assert_eq!(response.status(), 508);
        assert_eq!(response.headers()[&L5D_PROXY_CONNECTION], "close");
        assert_eq!(response.headers()[CONNECTION], "close");
    }

    #[test]
    fn grpc_errors_are_200_with_grpc_status() {
        let response = error_response(&Error::Loop, true, false);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["grpc-status"], "10");
        assert_eq!(response.headers()["grpc-message"], "gateway loop detected");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
    }
}
