//! The admin server: `/live`, `/ready` (the truth about listeners, credentials and draining),
//! `/metrics`, and loopback-only `/shutdown` and `/proxy-log-level`; plaintext and mTLS on one
//! port. Runs on its own single-threaded runtime so a slow scrape cannot touch the data path.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;

use super::readiness::Readiness;
use crate::metrics::{Format, Metrics};

/// Reads and changes the log filter at run time (`/proxy-log-level`).
pub trait LogLevel: Send + Sync {
    /// The current filter, e.g. `info,meshgate=debug`.
    fn current(&self) -> String;
    /// Replaces the filter.
    ///
    /// # Errors
    /// The filter's parse error.
    fn set(&self, filter: &str) -> Result<(), String>;
}

/// What the admin server reads.
pub struct AdminState {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub readiness: Arc<Readiness>,
    /// The TLS config for mTLS callers (the gateway's certificate, mesh client certs, no ALPN).
    pub tls: watch::Receiver<Arc<ServerConfig>>,
    /// Notified by `POST /shutdown`; `None` when the endpoint is disabled.
    pub shutdown: Option<Arc<Notify>>,
    /// The log filter handle; `None` when it cannot change.
    pub log_level: Option<Arc<dyn LogLevel>>,
}

/// How long an admin caller has to show its first byte and finish a TLS handshake (Linkerd: 1 s).
const ADMIN_DETECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest admin request body read (`PUT /proxy-log-level`).
const MAX_ADMIN_BODY: usize = 16 * 1024;

/// Serves admin requests until `stop` turns true. Plaintext HTTP and mTLS share the port: the
/// first byte tells them apart (0x16 starts a TLS handshake record).
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    crate::socket::after_accept_error(&e, "admin", &state.metrics).await;
                    continue;
                }
            },
            _ = stop.wait_for(|stop| *stop) => return,
        };
        tokio::spawn(serve_connection(tcp, remote, state.clone()));
    }
}

async fn serve_connection(tcp: TcpStream, remote: SocketAddr, state: Arc<AdminState>) {
    let mut first = [0u8; 1];
    let is_tls = match tokio::time::timeout(ADMIN_DETECT_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == 0x16,
        _ => return,
    };
    let service = {
        let state = state.clone();
        service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = match Limited::new(body, MAX_ADMIN_BODY).collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(_) => {
                        return Ok::<_, Infallible>(text(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            String::new(),
                        ));
                    }
                };
                Ok(respond(&state, &Request::from_parts(parts, body), remote))
            }
        })
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let result = if is_tls {
        let config = state.tls.borrow().clone();
        let accept = TlsAcceptor::from(config).accept(tcp);
        match tokio::time::timeout(ADMIN_DETECT_TIMEOUT, accept).await {
            Ok(Ok(tls)) => builder.serve_connection(TokioIo::new(tls), service).await,
            Ok(Err(e)) => return tracing::debug!(%remote, error = %e, "admin TLS handshake failed"),
            Err(_) => return tracing::debug!(%remote, "admin TLS handshake timed out"),
        }
    } else {
        builder.serve_connection(TokioIo::new(tcp), service).await
    };
    if let Err(error) = result {
        tracing::debug!(%remote, %error, "admin connection ended with an error");
    }
}

/// Answers one admin request from `remote` (pure: no I/O).
pub fn respond(
    state: &AdminState,
    req: &Request<Bytes>,
    remote: SocketAddr,
) -> Response<Full<Bytes>> {
    let (method, body) = (req.method(), req.body());
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
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            let mut response = text(StatusCode::OK, state.metrics.encode_as(format));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            response
        }
        "/shutdown" => {
            if method != Method::POST {
                return not_allowed("POST");
            }
            if !is_loopback(remote) {
                return text(
                    StatusCode::FORBIDDEN,
                    "Requests are only permitted from localhost.\n".to_owned(),
                );
            }
            let Some(shutdown) = &state.shutdown else {
                return text(
                    StatusCode::NOT_FOUND,
                    "shutdown endpoint is not enabled\n".to_owned(),
                );
            };
            state.readiness.set_draining();
            shutdown.notify_one();
            text(StatusCode::OK, "shutdown\n".to_owned())
        }
        "/proxy-log-level" => {
            if method != Method::GET && method != Method::PUT {
                return not_allowed("GET, PUT");
            }
            if !is_loopback(remote) {
                return text(
                    StatusCode::FORBIDDEN,
                    "Requests are only permitted from localhost.\n".to_owned(),
                );
            }
            let Some(level) = &state.log_level else {
                return text(StatusCode::NOT_FOUND, String::new());
            };
            if method == Method::GET {
                return text(StatusCode::OK, format!("{}\n", level.current()));
            }
            let filter = String::from_utf8_lossy(body);
            match level.set(filter.trim()) {
                Ok(()) => text(StatusCode::NO_CONTENT, String::new()),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        _ => text(StatusCode::NOT_FOUND, String::new()),
    }
}

/// Loopback, including IPv4-mapped loopback (`::ffff:127.0.0.1`).
fn is_loopback(remote: SocketAddr) -> bool {
    match remote.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, String::new());
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use identity::source::unix_seconds;
    use identity::testing::TestCa;
    use std::sync::Mutex;
    use std::time::SystemTime;

    struct FakeLevel(Mutex<String>);

    impl LogLevel for FakeLevel {
        fn current(&self) -> String {
            self.0.lock().unwrap().clone()
        }
        fn set(&self, filter: &str) -> Result<(), String> {
            if filter.contains(' ') {
                return Err(format!("invalid filter {filter:?}"));
            }
            *self.0.lock().unwrap() = filter.to_owned();
            Ok(())
        }
    }

    fn state(shutdown: bool) -> AdminState {
        let ca = TestCa::new("admin.mesh");
        let tls = identity::tls_config::server_config(
            &ca.credentials("gw.admin.mesh"),
            &ca.anchors(),
            &[],
        )
        .unwrap();
        AdminState {
            metrics: Arc::new(Metrics::new()),
            readiness: Arc::new(Readiness::default()),
            tls: watch::channel(Arc::new(tls)).1,
            shutdown: shutdown.then(|| Arc::new(Notify::new())),
            log_level: Some(Arc::new(FakeLevel(Mutex::new("info".to_owned())))),
        }
    }

    const LOCAL: &str = "127.0.0.1:50000";
    const REMOTE: &str = "10.1.2.3:50000";

    fn call(
        state: &AdminState,
        method: Method,
        path: &str,
        remote: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Bytes::from(body.to_owned()))
            .unwrap();
        let response = respond(state, &req, remote.parse().unwrap());
        let status = response.status();
        let body = futures_body(response);
        (status, body)
    }

    /// `GET /metrics` with `accept` (none when `None`): the content type and the body.
    fn scrape(state: &AdminState, accept: Option<&str>) -> (String, String) {
        let mut req = Request::get("/metrics");
        if let Some(accept) = accept {
            req = req.header(ACCEPT, accept);
        }
        let response = respond(
            state,
            &req.body(Bytes::new()).unwrap(),
            LOCAL.parse().unwrap(),
        );
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        (content_type, futures_body(response))
    }

    #[test]
    fn metrics_are_openmetrics_when_the_scraper_asks_for_it() {
        let state = state(false);
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (content_type, body) = scrape(&state, Some(prometheus));
        assert_eq!(
            content_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(
            body.contains("# TYPE gateway_handshakes_refused counter\n"),
            "{body}"
        );
        assert!(
            body.contains("# TYPE process_cpu_seconds counter\n"),
            "{body}"
        );
    }

    #[test]
    fn metrics_are_prometheus_text_without_accept_for_any_type_and_for_text_plain() {
        let state = state(false);
        for accept in [
            None,
            Some("*/*"),
            Some("text/plain"),
            Some("text/plain;version=0.0.4"),
        ] {
            let (content_type, body) = scrape(&state, accept);
            assert_eq!(
                content_type, "text/plain; version=0.0.4; charset=utf-8",
                "{accept:?}"
            );
            assert!(!body.contains("# EOF"), "{accept:?}: {body}");
            assert!(!body.contains("# UNIT"), "{accept:?}: {body}");
            assert!(!body.contains("_created"), "{accept:?}: {body}");
            assert!(
                body.contains("# TYPE gateway_handshakes_refused_total counter\n"),
                "{body}"
            );
            assert!(
                body.contains("gateway_handshakes_refused_total{reason=\"unknown_ca\"} 0\n"),
                "{body}"
            );
            assert!(
                body.contains("# TYPE process_cpu_seconds_total counter\n"),
                "{body}"
            );
            for gauge in [
                "process_start_time_seconds",
                "process_open_fds",
                "process_max_fds",
                "process_resident_memory_bytes",
            ] {
                if cfg!(target_os = "linux") || gauge == "process_max_fds" {
                    assert!(
                        body.contains(&format!("# TYPE {gauge} gauge\n")),
                        "{gauge}: {body}"
                    );
                }
            }
            let build = format!(
                "proxy_build_info{{version=\"{}\",git_sha=\"",
                env!("CARGO_PKG_VERSION")
            );
            let line = body
                .lines()
                .find(|l| l.starts_with(&build))
                .unwrap_or_else(|| panic!("{build}: {body}"));
            assert!(line.contains("vendor=\"meshgate\""), "{line}");
            assert!(line.ends_with("} 1"), "{line}");
        }
    }

    fn futures_body(response: Response<Full<Bytes>>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn shutdown_from_a_non_loopback_address_is_refused() {
        let state = state(true);
        let (status, body) = call(&state, Method::POST, "/shutdown", REMOTE, "");
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, "Requests are only permitted from localhost.\n");
        assert!(state.readiness.check().unwrap_err() != "draining");
    }

    #[test]
    fn shutdown_from_loopback_drains_when_enabled() {
        let state = state(true);
        assert_eq!(
            call(&state, Method::GET, "/shutdown", LOCAL, "").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            call(&state, Method::POST, "/shutdown", LOCAL, ""),
            (StatusCode::OK, "shutdown\n".to_owned())
        );
        assert_eq!(state.readiness.check().unwrap_err(), "draining");
        assert_eq!(
            call(
                &state,
                Method::POST,
                "/shutdown",
                "[::ffff:127.0.0.1]:1",
                ""
            )
            .0,
            StatusCode::OK
        );
    }

    #[test]
    fn shutdown_is_404_unless_enabled() {
        let state = state(false);
        assert_eq!(
            call(&state, Method::POST, "/shutdown", LOCAL, ""),
            (
                StatusCode::NOT_FOUND,
                "shutdown endpoint is not enabled\n".to_owned()
            )
        );
    }

    #[test]
    fn log_level_is_read_and_set_from_loopback_only() {
        let state = state(false);
        assert_eq!(
            call(&state, Method::GET, "/proxy-log-level", REMOTE, "").0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(&state, Method::GET, "/proxy-log-level", LOCAL, ""),
            (StatusCode::OK, "info\n".to_owned())
        );
        assert_eq!(
            call(&state, Method::PUT, "/proxy-log-level", LOCAL, "debug\n").0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            call(&state, Method::GET, "/proxy-log-level", "[::1]:9", "").1,
            "debug\n"
        );
        assert_eq!(
            call(
                &state,
                Method::PUT,
                "/proxy-log-level",
                LOCAL,
                "not a filter"
            )
            .0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            call(&state, Method::POST, "/proxy-log-level", LOCAL, "").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

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
            unix_seconds(now) + 7200,
        );
        assert!(r.check().is_ok());
        r.set_credentials(
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
            unix_seconds(now) + 7200,
        );
        assert!(r.check().unwrap_err().starts_with("certificate expired"));
        r.set_credentials(
            now - Duration::from_secs(10),
            now + Duration::from_secs(3600),
            unix_seconds(now) - 1,
        );
        assert_eq!(r.check().unwrap_err(), "every trust anchor has expired");
    }

    #[test]
    fn draining_is_never_ready() {
        let r = Readiness::default();
        r.set_bound();
        let now = SystemTime::now();
        r.set_credentials(now, now + Duration::from_secs(60), unix_seconds(now) + 60);
        r.set_draining();
        assert_eq!(r.check().unwrap_err(), "draining");
    }
}
