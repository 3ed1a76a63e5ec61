//! `Error`: every way a downstream connection or one of its requests can fail — handshake
//! refusals, transport-header errors, routing decisions, HTTP limits, upstream failures, opaque
//! I/O and local bugs. Each answers *what* (the variant), *who is to blame* ([`Blame`], which
//! picks the log level) and *how it is counted* ([`Error::reason`] and the Linkerd labels derived
//! from it); HTTP errors also map to the response (DESIGN §5). Normal endings are not errors:
//! [`Error::is_normal_end`] tells a reset or EOF after data from a failure.

use std::time::Duration;

use http::StatusCode;
use identity::Refusal;

use super::route;
use crate::metrics::Refused;
use crate::target;
use crate::transport_header::ReadError;
use crate::upstream::{ConnectError, discover};

/// Who caused a failure; also picks the log level (downstream → debug, upstream → warn,
/// local → error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The caller sent something we refuse, or went away.
    Downstream,
    /// The local service (or its name) failed.
    Upstream,
    /// The gateway itself failed: a bug.
    Local,
}

impl Blame {
    /// The name in logs: `downstream`, `upstream`, `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Downstream => "downstream",
            Blame::Upstream => "upstream",
            Blame::Local => "local",
        }
    }
}

/// A failed connection, session or request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TLS handshake was refused (bad or missing client certificate, not TLS, timeout).
    #[error("handshake refused ({}): {detail}", .refusal.as_str())]
    Handshake {
        /// Why, as counted.
        refusal: Refusal,
        /// What rustls or the socket said.
        detail: String,
    },
    /// The transport header could not be read.
    #[error("transport header: {0}")]
    TransportHeader(#[from] ReadError),
    /// No transport header arrived before the detect deadline.
    #[error("no transport header before the detect deadline")]
    TransportHeaderTimeout,
    /// The decision step refused the target (malformed, not allowed, loop, unauthorized).
    #[error(transparent)]
    Route(#[from] route::Error),
    /// The request's header section is larger than `max_header_list_size`.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// `CONNECT` is not enabled (`http_connect`).
    #[error("CONNECT is not allowed")]
    ConnectNotAllowed,
    /// The in-flight request limit is reached.
    #[error("load shed")]
    LoadShed,
    /// The caller is over a rate limit.
    #[error("rate limited")]
    RateLimited {
        /// The rule that refused (its text form).
        rule: std::sync::Arc<str>,
        /// When a request would pass again.
        retry_after: Duration,
    },
    /// The upstream did not send response headers in time.
    #[error("response timed out after {}", humantime::format_duration(*.0))]
    ResponseTimeout(Duration),
    /// Connecting upstream failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The upstream connection failed after the request was sent (reset, EOF, protocol error).
    #[error("upstream: {0}")]
    Upstream(String),
    /// The request cannot go in the only HTTP version the service speaks (nothing was sent).
    #[error("{0}")]
    Untranslatable(&'static str),
    /// The downstream HTTP connection failed (protocol violation, I/O) — hyper's error.
    #[error("downstream HTTP: {0}")]
    Http(Box<dyn std::error::Error + Send + Sync>),
    /// An opaque session's copy failed (other than a reset or EOF, which end it normally).
    #[error("opaque copy: {0}")]
    Io(std::io::Error),
    /// The gateway broke one of its own invariants (a bug; reported, never a panic).
    #[error("internal error: {0}")]
    Local(&'static str),
}

impl Error {
    /// Who is to blame.
    pub fn blame(&self) -> Blame {
        match self {
            Error::Handshake { .. }
            | Error::TransportHeader(_)
            | Error::TransportHeaderTimeout
            | Error::Route(_)
            | Error::HeadersTooLarge
            | Error::ConnectNotAllowed
            // More demand than the limit: logged at debug (a line per shed request would add
            // load exactly when there is too much) and counted in gateway_requests_shed_total.
            | Error::LoadShed
            | Error::RateLimited { .. }
            | Error::Http(_)
            // The copy cannot tell which side failed; remote callers over a WAN are the usual
            // one, and a warning per broken session would flood the log.
            | Error::Io(_) => Blame::Downstream,
            // A name nobody serves is the caller's mistake (503 fast), not a failing service:
            // a warning per request would flood the log.
            Error::Connect(ConnectError::Resolve(
                discover::Error::NxDomain(_)
                | discover::Error::NoEndpoints(_)
                | discover::Error::NotFound(_)
                | discover::Error::Rejected { .. },
            )) => Blame::Downstream,
            Error::ResponseTimeout(_)
            | Error::Connect(_)
            | Error::Upstream(_)
            | Error::Untranslatable(_) => Blame::Upstream,
            Error::Local(_) => Blame::Local,
        }
    }

    /// The metric and log label: one word per kind of failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Handshake { refusal, .. } => refusal.as_str(),
            Error::TransportHeader(_) => "bad_transport_header",
            Error::TransportHeaderTimeout => "timeout",
            Error::Route(route::Error::NoTarget | route::Error::TargetNotText) => "no_target",
            Error::Route(route::Error::Target(e)) if e.is_bad_domain() => "bad_gateway_domain",
            Error::Connect(ConnectError::Resolve(discover::Error::Rejected { .. })) => {
                "bad_gateway_domain"
            }
            Error::Route(route::Error::Target(_)) => "bad_target",
            Error::Route(route::Error::Loop) => "gateway_loop",
            Error::Route(route::Error::Unauthorized { .. }) => "unauthorized",
            Error::HeadersTooLarge => "headers_too_large",
            Error::ConnectNotAllowed => "connect_not_allowed",
            Error::LoadShed => "load_shed",
            Error::RateLimited { .. } => "rate_limited",
            Error::ResponseTimeout(_) => "response_timeout",
            Error::Connect(ConnectError::Resolve(_)) => "unresolved",
            Error::Connect(ConnectError::Refused { .. }) => "connect_refused",
            Error::Connect(ConnectError::Timeout(_)) => "connect_timeout",
            Error::Connect(ConnectError::Tls { reason, .. }) => reason.label(),
            Error::Upstream(_) => "upstream_io",
            Error::Untranslatable(_) => "untranslatable",
            Error::Http(_) => "downstream_http",
            Error::Io(_) => "io",
            Error::Local(_) => "internal",
        }
    }

    /// `gateway_handshakes_refused_total{reason}`: connections refused before any session (the
    /// handshake, or a transport header that never came right).
    pub fn refusal(&self) -> Option<Refused> {
        match self {
            Error::Handshake { refusal, .. } => Some(Refused::Handshake(*refusal)),
            Error::TransportHeader(_) => Some(Refused::TransportHeader),
            Error::TransportHeaderTimeout => Some(Refused::TransportHeaderTimeout),
            _ => None,
        }
    }

    /// `inbound_tcp_errors_total{error}` with Linkerd's label values: what ended an
    /// established (post-handshake) connection or opaque session.
    pub fn tcp_error(&self) -> Option<&'static str> {
        match self {
            Error::Handshake { .. } => None,
            Error::Route(route::Error::Target(e)) if e.is_bad_domain() => {
                Some("gateway domain invalid")
            }
            Error::Connect(ConnectError::Resolve(discover::Error::Rejected { .. })) => {
                Some("gateway domain invalid")
            }
            Error::Route(route::Error::Loop) => Some("gateway loop"),
            // Counted in inbound_tcp_authz_deny_total instead.
            Error::Route(route::Error::Unauthorized { .. }) => None,
            Error::Route(_) | Error::Local(_) => Some("unexpected"),
            _ => Some("i/o"),
        }
    }

    /// The `errno` label of `tcp_close_total` for a connection this error ended.
    pub fn errno(&self) -> &'static str {
        let kind = match self {
            Error::Io(e) => Some(e.kind()),
            Error::Http(e) => e.downcast_ref::<std::io::Error>().map(std::io::Error::kind),
            _ => None,
        };
        match kind {
            Some(std::io::ErrorKind::TimedOut) => "ETIMEDOUT",
            Some(std::io::ErrorKind::ConnectionRefused) => "ECONNREFUSED",
            _ => "EIO",
        }
    }

    /// Whether this "error" is how connections normally end: the peer reset or closed the
    /// connection (after data, or between requests). Such an ending is not counted or logged.
    pub fn is_normal_end(&self) -> bool {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        let ended = |e: &std::io::Error| {
            matches!(
                e.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            )
        };
        match self {
            Error::Io(e) => ended(e),
            Error::Http(e) => {
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
                while let Some(inner) = source {
                    if inner.downcast_ref::<std::io::Error>().is_some_and(ended)
                        || inner
                            .downcast_ref::<hyper::Error>()
                            .is_some_and(hyper::Error::is_incomplete_message)
                    {
                        return true;
                    }
                    source = inner.source();
                }
                false
            }
            _ => false,
        }
    }

    /// The HTTP status sent downstream.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Route(route::Error::NoTarget | route::Error::TargetNotText) => {
                StatusCode::BAD_REQUEST
            }
            Error::Route(route::Error::Target(e)) if e.is_bad_domain() => StatusCode::NOT_FOUND,
            Error::Connect(ConnectError::Resolve(discover::Error::Rejected { .. })) => {
                StatusCode::NOT_FOUND
            }
            Error::Route(route::Error::Target(_)) => StatusCode::BAD_REQUEST,
            Error::Route(route::Error::Loop) => StatusCode::LOOP_DETECTED,
            Error::Route(route::Error::Unauthorized { .. }) => StatusCode::FORBIDDEN,
            Error::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::ConnectNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::LoadShed | Error::Connect(ConnectError::Resolve(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::ResponseTimeout(_) | Error::Connect(ConnectError::Timeout(_)) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Error::Connect(ConnectError::Refused { .. } | ConnectError::Tls { .. })
            | Error::Upstream(_)
            | Error::Untranslatable(_) => StatusCode::BAD_GATEWAY,
            Error::Handshake { .. }
            | Error::TransportHeader(_)
            | Error::TransportHeaderTimeout
            | Error::Http(_)
            | Error::Io(_) => StatusCode::BAD_REQUEST,
            Error::Local(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `l5d-proxy-error` text: every refused name reads `bad gateway domain`, as Linkerd's
    /// does (the log keeps the precise reason).
    pub fn proxy_error(&self) -> String {
        match self {
            Error::Route(route::Error::Target(e)) if e.is_bad_domain() => {
                target::Error::NotAllowed.to_string()
            }
            Error::Connect(ConnectError::Resolve(discover::Error::Rejected { .. })) => {
                target::Error::NotAllowed.to_string()
            }
            other => other.to_string(),
        }
    }

    /// The gRPC status code for gRPC callers (spec §8).
    pub fn grpc_status(&self) -> u8 {
        match self.status() {
            StatusCode::NOT_FOUND => 5,      // NotFound
            StatusCode::BAD_REQUEST => 3,    // InvalidArgument
            StatusCode::LOOP_DETECTED => 10, // Aborted
            StatusCode::FORBIDDEN => 7,      // PermissionDenied
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => 8, // ResourceExhausted
            StatusCode::METHOD_NOT_ALLOWED => 12, // Unimplemented
            StatusCode::GATEWAY_TIMEOUT => 4,     // DeadlineExceeded
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => 14, // Unavailable
            _ => 13,                              // Internal
        }
    }

    /// Whether the downstream connection is closed after this error (spec §8).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Route(route::Error::Loop)
                | Error::Upstream(_)
                | Error::Connect(
                    ConnectError::Refused { .. }
                        | ConnectError::Timeout(_)
                        | ConnectError::Tls { .. }
                )
                | Error::ResponseTimeout(_)
                | Error::Local(_)
        )
    }
}

impl From<crate::upstream::Error> for Error {
    fn from(error: crate::upstream::Error) -> Self {
        match error {
            crate::upstream::Error::Connect(e) => Error::Connect(e),
            crate::upstream::Error::Exchange(text) => Error::Upstream(text),
            crate::upstream::Error::Untranslatable(e) => Error::Untranslatable(e.0),
        }
    }
}

impl From<target::Error> for Error {
    fn from(error: target::Error) -> Self {
        Error::Route(route::Error::Target(error))
    }
}

#[cfg(test)]
mod tests;
