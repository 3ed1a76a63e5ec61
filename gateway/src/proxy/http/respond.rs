//! The responses the gateway itself sends when it cannot forward (DESIGN §5, spec §8).

use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, Empty};

use super::{Body, L5D_PROXY_CONNECTION, L5D_PROXY_ERROR};
use crate::proxy::error::Error;

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
    if let Error::RateLimited { retry_after, .. } = error {
        // Whole seconds, rounded up: a client that waits that long gets a token.
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
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
    use crate::proxy::route;
    use crate::target;

    #[test]
    fn bad_domain_response_matches_linkerd() {
        let response = error_response(&Error::from(target::Error::NotAllowed), false, true);
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()[&L5D_PROXY_ERROR], "bad gateway domain");
        assert_eq!(response.headers()[CONTENT_LENGTH], "0");
        assert!(response.headers().get(&L5D_PROXY_CONNECTION).is_none());
    }

    #[test]
    fn fatal_error_closes_http1_connection() {
        let response = error_response(&Error::Route(route::Error::Loop), false, true);
        assert_eq!(response.status(), 508);
        assert_eq!(response.headers()[&L5D_PROXY_CONNECTION], "close");
        assert_eq!(response.headers()[CONNECTION], "close");
    }

    #[test]
    fn grpc_errors_are_200_with_grpc_status() {
        let response = error_response(&Error::Route(route::Error::Loop), true, false);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["grpc-status"], "10");
        assert_eq!(response.headers()["grpc-message"], "gateway loop detected");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
    }
}
