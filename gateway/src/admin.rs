//! The admin server: `/live`, `/ready` (the truth about listeners, credentials and draining) and
//! `/metrics`. Runs on its own single-threaded runtime so a slow scrape cannot touch the data path.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// What `/ready` reports on.
#[derive(Debug)]
pub struct Readiness {
    bound: AtomicBool,
    draining: AtomicBool,
    cert_not_before: AtomicI64,
    cert_not_after: AtomicI64,
    anchors_not_after: AtomicI64,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            bound: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            cert_not_before: AtomicI64::new(i64::MAX),
            cert_not_after: AtomicI64::new(i64::MIN),
            anchors_not_after: AtomicI64::new(i64::MIN),
        }
    }
}

impl Readiness {
    /// Records that the data listener is bound and accepting.
    pub fn set_bound(&self) {
        self.bound.store(true, Ordering::Release);
    }

    /// Records that the gateway is draining: `/ready` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Records the validity of the credentials in use (Unix seconds).
    pub fn set_credentials(
        &self,
        not_before: SystemTime,
        not_after: SystemTime,
        anchors_not_after: i64,
    ) {
        self.cert_not_before
            .store(unix(not_before), Ordering::Release);
        self.cert_not_after
            .store(unix(not_after), Ordering::Release);
        self.anchors_not_after
            .store(anchors_not_after, Ordering::Release);
    }

    /// `Ok` when ready, else the reason.
    ///
    /// # Errors
    /// A one-line reason.
    pub fn check(&self) -> Result<(), String> {
        let now = unix(SystemTime::now());
        if self.draining.load(Ordering::Acquire) {
            return Err("draining".to_owned());
        }
        if !self.bound.load(Ordering::Acquire) {
            return Err("listeners not bound yet".to_owned());
        }
        let not_after = self.cert_not_after.load(Ordering::Acquire);
        if not_after == i64::MIN {
            return Err("no credentials loaded".to_owned());
        }
        if now > not_after {
            return Err(format!("certificate expired {}s ago", now - not_after));
        }
        if now < self.cert_not_before.load(Ordering::Acquire) {
            return Err("certificate not valid yet".to_owned());
        }
        if now > self.anchors_not_after.load(Ordering::Acquire) {
            return Err("every trust anchor has expired".to_owned());
        }
        Ok(())
    }
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// What the admin server reads.
pub struct AdminState {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub readiness: Arc<Readiness>,
}

/// Serves admin requests until `drain` has been true for the whole drain (the caller stops the
/// runtime). Plaintext HTTP/1 and HTTP/2.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req)) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder.serve_connection(TokioIo::new(tcp), service).await {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

/// Answers one admin request.
pub fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n".to_owned()),
        "/ready" => match state.readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        "/metrics" => {
            let mut response = text(StatusCode::OK, state.metrics.encode());
            response.headers_mut().insert(
                CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ready_only_when_bound_with_valid_credentials() {
        let r = Readiness::default();
        assert_eq!(r.check().unwrap_err(), "listeners not bound yet");
        r.set_bound();
        assert_eq!(r.check().unwrap_err(), "no credentials loaded");
        let now = SystemTime::now();
        r.set_credentials(
            now - Duration::from_secs(10),
            now + Duration::from_secs(3600),
            unix(now) + 7200,
        );
        assert!(r.check().is_ok());
        r.set_credentials(
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
            unix(now) + 7200,
        );
        assert!(r.check().unwrap_err().starts_with("certificate expired"));
        r.set_credentials(
            now - Duration::from_secs(10),
            now + Duration::from_secs(3600),
            unix(now) - 1,
        );
        assert_eq!(r.check().unwrap_err(), "every trust anchor has expired");
    }

    #[test]
    fn draining_is_never_ready() {
        let r = Readiness::default();
        r.set_bound();
        let now = SystemTime::now();
        r.set_credentials(now, now + Duration::from_secs(60), unix(now) + 60);
        r.set_draining();
        assert_eq!(r.check().unwrap_err(), "draining");
    }
}
