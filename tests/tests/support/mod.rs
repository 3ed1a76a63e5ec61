//! Test harness: a gateway on 127.0.0.1:0 with a PKI made at test time, echo backends, mTLS
//! clients and a plain admin client.

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;

use bytes::Bytes;
use gateway::app::{self, Bound, LoadedIdentity, Reload};
use gateway::cli::client::{Http1Sender, Http2Sender, MtlsClient, http1_on, http2_on};
use gateway::cli::demo::Backend;
use gateway::config::Config;
use gateway::proxy::transport_header::TransportHeader;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use identity::testing::TestCa;
use identity::{Credentials, TrustAnchors, tls_config};

/// The gateway's identity in every test.
pub const GATEWAY_ID: &str =
    "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local";
/// A trusted caller.
pub const CLIENT_ID: &str = "web.east.serviceaccount.identity.linkerd.cluster.local";
/// The service the backend stands for.
pub const SERVICE: &str = "podinfo.test.svc.cluster.local:9898";

/// A running gateway with one backend behind `SERVICE`.
pub struct Harness {
    pub ca: TestCa,
    pub anchors: TrustAnchors,
    pub gateway: Bound,
    pub backend: Backend,
}

impl Harness {
    /// Gateway + backend; `tweak` may change the config (endpoints for `SERVICE` are preset).
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let ca = TestCa::new("test.mesh");
        let anchors = ca.anchors();
        Self::start_with(ca, anchors, tweak).await
    }

    /// As [`Harness::start`] with explicit trust anchors (e.g. a two-root bundle).
    pub async fn start_with(
        ca: TestCa,
        anchors: TrustAnchors,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let backend = Backend::start("podinfo").await.unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        config
            .endpoints
            .insert(SERVICE.to_owned(), vec![backend.addr]);
        tweak(&mut config);
        let credentials = ca.leaf(GATEWAY_ID).credentials(&anchors).unwrap();
        let identity = LoadedIdentity {
            anchors: anchors.clone(),
            credentials,
            reload: Reload::Static,
        };
        let gateway = app::start(&config, identity, None).await.unwrap();
        Self {
            ca,
            anchors,
            gateway,
            backend,
        }
    }

    /// A trusted caller named `identity` offering `alpn`.
    pub fn client(&self, identity: &str, alpn: &[&[u8]]) -> MtlsClient {
        let creds = self.ca.credentials(identity);
        self.client_with(Some(&creds), alpn)
    }

    /// A caller presenting `creds` (or no certificate).
    pub fn client_with(&self, creds: Option<&Credentials>, alpn: &[&[u8]]) -> MtlsClient {
        MtlsClient::new(
            creds,
            &self.anchors,
            GATEWAY_ID,
            self.gateway.data_addr,
            alpn,
        )
        .unwrap()
    }

    /// `GET path` on the admin port, plaintext HTTP/1.1.
    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        admin_get(self.gateway.admin_addr, path).await
    }

    /// The value of one sample line of `/metrics`, or 0 when absent.
    pub async fn metric(&self, prefix: &str) -> u64 {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

/// `GET path` on `addr`, plaintext HTTP/1.1.
pub async fn admin_get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "admin")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = send.send_request(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A finished response.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `req` over HTTP/1.1 on a new connection and collects the answer.
pub async fn send_h1(client: &MtlsClient, req: Request<Full<Bytes>>) -> Answer {
    let mut send = client.http1().await.unwrap();
    collect(send.send_request(req).await.unwrap()).await
}

/// Sends `req` over HTTP/2 on a new connection and collects the answer.
pub async fn send_h2(client: &MtlsClient, req: Request<Full<Bytes>>) -> Answer {
    let mut send = client.http2().await.unwrap();
    collect(send.send_request(req).await.unwrap()).await
}

pub async fn collect(response: http::Response<hyper::body::Incoming>) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// ALPN lists.
pub const H1: &[&[u8]] = &[tls_config::ALPN_HTTP1];
pub const H2: &[&[u8]] = &[tls_config::ALPN_H2];
pub const NONE: &[&[u8]] = &[];
pub const L5D: &[&[u8]] = &[tls_config::ALPN_TRANSPORT_HEADER];

/// Asserts that a request over a connection made by `client` fails (refused handshake).
pub async fn assert_refused(client: &MtlsClient) {
    match client.http1().await {
        Err(_) => {}
        Ok(mut send) => {
            let req = Request::get("/")
                .header("l5d-dst-override", SERVICE)
                .body(Full::default())
                .unwrap();
            let result = send.send_request(req).await;
            assert!(
                result.is_err(),
                "refused caller got {:?}",
                result.map(|r| r.status())
            );
        }
    }
}

/// `GET /` routed to `target` by `l5d-dst-override`.
pub fn routed_get(target: &str) -> Request<Full<Bytes>> {
    Request::get("/")
        .header("l5d-dst-override", target)
        .body(Full::default())
        .unwrap()
}

/// Whether `counter` (bytes a backend has handed over) stops moving — unchanged across 300 ms —
/// within 20 s: the flow control of a caller that does not read has reached the backend.
pub async fn stalls(counter: &std::sync::atomic::AtomicU64) -> bool {
    let mut last = u64::MAX;
    eventually_for(std::time::Duration::from_secs(20), || {
        let now = counter.load(std::sync::atomic::Ordering::Relaxed);
        let same = now == last;
        last = now;
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            same
        }
    })
    .await
}

/// Polls `f` until it is true, for at most ~5 s (tests never sleep to synchronise).
pub async fn eventually<F, Fut>(f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_for(std::time::Duration::from_secs(5), f).await
}

/// Polls `f` every 10 ms until it is true, for at most `limit`.
pub async fn eventually_for<F, Fut>(limit: std::time::Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// A header session speaking HTTP/1.1 (the client must offer `transport.l5d.io/v1`).
pub async fn header_http1(client: &MtlsClient, header: &TransportHeader) -> Http1Sender {
    http1_on(client.connect_with_header(header).await.unwrap())
        .await
        .unwrap()
}

/// A header session speaking HTTP/2.
pub async fn header_http2(client: &MtlsClient, header: &TransportHeader) -> Http2Sender {
    http2_on(client.connect_with_header(header).await.unwrap())
        .await
        .unwrap()
}

/// The gateway's answer to a loop: 508, Linkerd's message, and the connection closing.
pub fn assert_loop_refused(answer: &Answer) {
    assert_eq!(answer.status, 508);
    assert_eq!(
        answer.header("l5d-proxy-error"),
        Some("gateway loop detected")
    );
    assert_eq!(answer.header("l5d-proxy-connection"), Some("close"));
}
