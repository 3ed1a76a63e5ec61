//! Test harness: a gateway on 127.0.0.1:0 with a PKI made at test time, echo backends, mTLS
//! clients and a plain admin client.

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

pub mod secret;

use std::net::SocketAddr;

use bytes::Bytes;
use gateway::app::{self, Bound, LoadedIdentity, Reload};
use gateway::cli::client::{Http1Sender, Http2Sender, MtlsClient, http1_on, http2_on};
use gateway::cli::demo::Backend;
use gateway::config::Config;
use gateway::transport_header::TransportHeader;
// The one polling helper, shared with the binary's tests; not every test file uses both.
#[allow(unused_imports)]
pub use gateway::testing::{SOON, eventually};
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
    /// The gateway's identity.
    pub identity: &'static str,
    pub ca: std::sync::Arc<TestCa>,
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
        Self::start_as(GATEWAY_ID, ca, anchors, tweak).await
    }

    /// As [`Harness::start_with`], the gateway being `identity` (another cluster's gateway).
    pub async fn start_as(
        identity: &'static str,
        ca: impl Into<std::sync::Arc<TestCa>>,
        anchors: TrustAnchors,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let ca = ca.into();
        let backend = Backend::start("podinfo").await.unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        config
            .endpoints
            .insert(SERVICE.to_owned(), vec![backend.addr.into()]);
        tweak(&mut config);
        let credentials = ca.leaf(identity).credentials(&anchors).unwrap();
        let loaded = LoadedIdentity {
            anchors: anchors.clone(),
            credentials,
            reload: Reload::Static,
        };
        let gateway = app::start(&config, loaded, None).await.unwrap();
        Self {
            identity,
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
            self.identity,
            self.gateway.data_addr,
            alpn,
        )
        .unwrap()
    }

    /// `GET path` on the admin port, plaintext HTTP/1.1.
    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        admin_get(self.gateway.admin_addr, path).await
    }

    /// The value of the first `/metrics` sample starting with `prefix`; see [`metric`].
    pub async fn metric(&self, prefix: &str) -> u64 {
        metric(self.gateway.admin_addr, prefix).await
    }

    /// As [`Harness::metric`], 0 while no sample starts with `prefix`; see [`metric_or_zero`].
    pub async fn metric_or_zero(&self, prefix: &str) -> u64 {
        metric_or_zero(self.gateway.admin_addr, prefix).await
    }
}

/// The value of the first sample of `addr`'s `/metrics` that starts with `prefix`.
///
/// # Panics
/// When no sample does (a misspelt name or label fails here, not as a wrong 0), naming
/// `prefix` and showing the scrape.
pub async fn metric(addr: SocketAddr, prefix: &str) -> u64 {
    let text = scrape(addr).await;
    sample(&text, prefix).unwrap_or_else(|| panic!("no sample {prefix} in /metrics:\n{text}"))
}

/// As [`metric`], but 0 while no sample starts with `prefix`: only for a label set that its
/// first increment creates, while waiting for that increment.
pub async fn metric_or_zero(addr: SocketAddr, prefix: &str) -> u64 {
    sample(&scrape(addr).await, prefix).unwrap_or(0)
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, text) = admin_get(addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "/metrics: {text}");
    text
}

/// The value of the first line of `text` starting with `prefix`.
///
/// # Panics
/// When that line's value is not a number.
fn sample(text: &str, prefix: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(prefix))?;
    let value = line.rsplit(' ').next().unwrap_or_default();
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("sample {line:?} has no numeric value"));
    Some(value as u64)
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

/// A stand-in pod proxy of `ca` named `identity` on `port`, in front of the application at
/// `app`.
pub async fn pod(
    ca: &TestCa,
    identity: &str,
    port: gateway::cli::demo::PodPort,
    app: SocketAddr,
) -> gateway::cli::demo::MeshedPod {
    gateway::cli::demo::MeshedPod::start(&ca.credentials(identity), &ca.anchors(), port, app)
        .await
        .unwrap()
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
    eventually(std::time::Duration::from_secs(20), || {
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

/// An opaque header session to `name:port` as `client`: writes `payload`, half-closes, and
/// returns what came back until the far side's EOF (an echo service sends it all back).
pub async fn opaque_echo(client: &MtlsClient, name: &str, port: u16, payload: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let header = TransportHeader {
        port,
        name: Some(name.to_owned()),
        protocol: gateway::transport_header::SessionProtocol::Opaque,
    };
    let mut stream = client.connect_with_header(&header).await.unwrap();
    stream.write_all(payload).await.unwrap();
    // Half-close: our EOF must reach the service, whose EOF must come back to us.
    stream.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).await.unwrap();
    echoed
}

/// Sends `len` patterned bytes through [`opaque_echo`] and asserts all of them came back.
pub async fn assert_opaque_echo(client: &MtlsClient, name: &str, port: u16, len: u32) {
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let echoed = opaque_echo(client, name, port, &payload).await;
    assert!(
        echoed == payload,
        "echoed {} of {} bytes",
        echoed.len(),
        payload.len()
    );
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

/// A policy file in a directory of its own (`tag` names it).
pub fn policy_file(tag: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meshgate-policy-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Replaces the file atomically (write + rename), as a ConfigMap update does.
pub fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
