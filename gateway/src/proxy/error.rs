//! `Error`: every way a request can fail, who is to blame, how it is counted, and what the
//! downstream gets back (status, `l5d-proxy-error`, gRPC status) per DESIGN §5.

use std::time::Duration;

use http::StatusCode;

use crate::target;
use crate::upstream::ConnectError;

/// Who caused a failure; also picks the log level (downstream → debug, upstream → warn,
/// local → error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The caller sent something we refuse.
    Downstream,
    /// The local service (or its name) failed.
    Upstream,
    /// The gateway itself failed.
    Local,
}

/// A request that could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request names no target at all.
    #[error("request has no l5d-dst-override, :authority or Host")]
    NoTarget,
    /// The target header is not valid UTF-8 text.
    #[error("target header is not valid text")]
    TargetNotText,
    /// The target is malformed or not allowed.
    #[error(transparent)]
    Target(#[from] target::Error),
    /// The request already passed through this gateway, or comes from the gateway itself.
    #[error("gateway loop detected")]
    Loop,
    /// The request's header section is larger than `max_header_list_size`.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// `CONNECT` is not enabled (`http_connect`).
    #[error("CONNECT is not allowed")]
    ConnectNotAllowed,
    /// The in-flight request limit is reached.
    #[error("load shed")]
    LoadShed,
    /// The upstream did not send response headers in time.
    #[error("response timed out after {}", humantime::format_duration(*.0))]
    ResponseTimeout(Duration),
    /// The authorization policy does not allow this caller to reach this target.
    #[error("unauthorized request on route")]
    Unauthorized,
    /// Connecting upstream failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The upstream connection failed after the request was sent (reset, EOF, protocol error).
    #[error("upstream: {0}")]
    Upstream(String),
}

impl Error {
    /// The HTTP status sent downstream.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoTarget | Error::TargetNotText => StatusCode::BAD_REQUEST,
            Error::Target(e) if e.is_bad_domain() => StatusCode::NOT_FOUND,
            Error::Target(_) => StatusCode::BAD_REQUEST,
            Error::Loop => StatusCode::LOOP_DETECTED,
            Error::Unauthorized => StatusCode::FORBIDDEN,
            Error::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::ConnectNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::LoadShed => StatusCode::SERVICE_UNAVAILABLE,
            Error::ResponseTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Connect(ConnectError::Resolve(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Connect(ConnectError::Refused { .. }) | Error::Upstream(_) => {
                StatusCode::BAD_GATEWAY
            }
            Error::Connect(ConnectError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `l5d-proxy-error` text: every refused name reads `bad gateway domain`, as Linkerd's
    /// does (the log keeps the precise reason).
    pub fn proxy_error(&self) -> String {
        match self {
            Error::Target(e) if e.is_bad_domain() => target::Error::NotAllowed.to_string(),
            other => other.to_string(),
        }
    }

    /// The gRPC status code for gRPC callers (spec §8).
    pub fn grpc_status(&self) -> u8 {
        match self.status() {
            StatusCode::NOT_FOUND => 5,                       // NotFound
            StatusCode::BAD_REQUEST => 3,                     // InvalidArgument
            StatusCode::LOOP_DETECTED => 10,                  // Aborted
            StatusCode::FORBIDDEN => 7,                       // PermissionDenied
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => 8, // ResourceExhausted
            StatusCode::METHOD_NOT_ALLOWED => 12,             // Unimplemented
            StatusCode::GATEWAY_TIMEOUT => 4,                 // DeadlineExceeded
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => 14, // Unavailable
            _ => 13,                                          // Internal
        }
    }

    /// Whether the downstream connection is closed after this error (spec §8).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Loop
                | Error::Upstream(_)
                | Error::Connect(ConnectError::Refused { .. } | ConnectError::Timeout(_))
                | Error::ResponseTimeout(_)
        )
    }

    /// Who is to blame.
    pub fn blame(&self) -> Blame {
        match self {
            Error::NoTarget
            | Error::TargetNotText
            | Error::Target(_)
            | Error::Loop
            | Error::Unauthorized
            | Error::HeadersTooLarge
            | Error::ConnectNotAllowed
            // More demand than the limit: logged at debug (a line per shed request would add
            // load exactly when there is too much) and counted in gateway_requests_shed_total.
            | Error::LoadShed => Blame::Downstream,
            Error::ResponseTimeout(_) => Blame::Upstream,
            Error::Connect(_) | Error::Upstream(_) => Blame::Upstream,
        }
    }

    /// A metric and log label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NoTarget | Error::TargetNotText => "no_target",
            Error::Target(e) if e.is_bad_domain() => "bad_gateway_domain",
            Error::Target(_) => "bad_target",
            Error::Loop => "gateway_loop",
            Error::Unauthorized => "unauthorized",
            Error::HeadersTooLarge => "headers_too_large",
            Error::ConnectNotAllowed => "connect_not_allowed",
            Error::LoadShed => "load_shed",
            Error::ResponseTimeout(_) => "response_timeout",
            Error::Connect(ConnectError::Resolve(_)) => "unresolved",
            Error::Connect(ConnectError::Refused { .. }) => "connect_refused",
            Error::Connect(ConnectError::Timeout(_)) => "connect_timeout",
            Error::Upstream(_) => "upstream_io",
        }
    }
}

impl From<crate::upstream::Error> for Error {
    fn from(error: crate::upstream::Error) -> Self {
        match error {
            crate::upstream::Error::Connect(e) => Error::Connect(e),
            crate::upstream::Error::Exchange(text) => Error::Upstream(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_design_table() {
        assert_eq!(Error::Target(target::Error::NotAllowed).status(), 404);
        assert_eq!(
            Error::Target(target::Error::NotAllowed).to_string(),
            "bad gateway domain"
        );
        assert_eq!(Error::Target(target::Error::BadName).status(), 400);
        assert_eq!(Error::Target(target::Error::IpLiteral).status(), 404);
        assert_eq!(
            Error::Target(target::Error::IpLiteral).proxy_error(),
            "bad gateway domain"
        );
        assert_eq!(Error::Loop.status(), 508);
        assert_eq!(Error::Loop.to_string(), "gateway loop detected");
        let refused = Error::Connect(ConnectError::Refused {
            addr: ([127, 0, 0, 1], 1).into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        });
        assert_eq!(refused.status(), 502);
        assert!(refused.is_fatal());
        let timeout = Error::Connect(ConnectError::Timeout(Duration::from_secs(1)));
        assert_eq!(timeout.status(), 504);
        assert_eq!(timeout.to_string(), "connect timed out after 1s");
        let unresolved = Error::Connect(ConnectError::Resolve(
            crate::upstream::discover::Error::NoEndpoints("x".into()),
        ));
        assert_eq!(unresolved.status(), 503);
        assert!(!unresolved.is_fatal());
    }

    #[test]
    fn error_upstream_refused_blames_upstream() {
        let e = Error::Upstream("reset".into());
        assert_eq!(e.blame(), Blame::Upstream);
        assert_eq!(e.grpc_status(), 14);
        assert_eq!(Error::Loop.blame(), Blame::Downstream);
        assert_eq!(Error::Loop.grpc_status(), 10);
    }
}
