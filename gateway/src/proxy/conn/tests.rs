//! Component tests of `serve` over an in-memory stream with the test CA: no sockets.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use identity::testing::TestCa;
use identity::tls_config;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::*;
use crate::config::Config;
use crate::control::credentials::DATA_ALPN;
use crate::control::policy::{self, Policy};
use crate::metrics::{ErrorLabels, Metrics};
use crate::proxy::context::{Discovery, Handles};

const GATEWAY: &str = "gateway.test.mesh";
const CALLER: &str = "web.test.mesh";

/// A gateway context on the test CA, its drain sender kept open.
struct World {
    ca: TestCa,
    shared: Arc<Shared>,
    _drain: watch::Sender<bool>,
    _tls: watch::Sender<Arc<rustls::ServerConfig>>,
}

impl World {
    fn new(policy: Policy) -> Self {
        let ca = TestCa::new("test.mesh");
        let server =
            tls_config::server_config(&ca.credentials(GATEWAY), &ca.anchors(), &DATA_ALPN).unwrap();
        let (tls, tls_rx) = watch::channel(Arc::new(server));
        let (drain, drain_rx) = watch::channel(false);
        let config = Config {
            gateway_suffixes: vec![".".to_owned()],
            ..Config::default()
        };
        let handles = Handles {
            identity: GATEWAY.parse().unwrap(),
            tls: tls_rx,
            upstream_tls: watch::channel(Arc::new(
                crate::upstream::ClientTls::new(&ca.credentials(GATEWAY), &ca.anchors()).unwrap(),
            ))
            .1,
            metrics: Arc::new(Metrics::new()),
            policy: Arc::new(policy::Current::new(policy)),
            drain: drain_rx,
            tracing: None,
        };
        let shared = Shared::new(&config, handles, Discovery::StaticOnly).unwrap();
        Self {
            ca,
            shared: Arc::new(shared),
            _drain: drain,
            _tls: tls,
        }
    }

    /// Starts `serve` on one end of a duplex; returns the other end and the task.
    fn accept(&self) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let remote = SocketAddr::from(([192, 0, 2, 1], 40_000));
        let task = tokio::spawn(serve(self.shared.clone(), server, remote, None));
        (client, task)
    }

    /// A TLS client handshake as `ca`'s `identity`, offering `alpn`.
    async fn connect(
        &self,
        ca: &TestCa,
        identity: &str,
        alpn: &[&[u8]],
    ) -> (
        std::io::Result<TlsStream<DuplexStream>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (client, task) = self.accept();
        let config =
            tls_config::client_config(Some(&ca.credentials(identity)), &self.ca.anchors(), alpn)
                .unwrap();
        let name = ServerName::try_from(GATEWAY.to_owned()).unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, client)
            .await;
        (tls, task)
    }

    /// A trusted caller's HTTP/1.1 connection.
    async fn http1(
        &self,
    ) -> (
        hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tls, task) = self
            .connect(&self.ca, CALLER, &[tls_config::ALPN_HTTP1])
            .await;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls.unwrap()))
            .await
            .unwrap();
        tokio::spawn(conn);
        (send, task)
    }

    fn tcp_errors(&self, error: &'static str) -> u64 {
        self.shared
            .metrics
            .tcp_errors
            .get_or_create(&ErrorLabels { error })
            .get()
    }
}

fn header(name: &str, port: u16, protocol: SessionProtocol) -> Vec<u8> {
    transport_header::encode(&TransportHeader {
        port,
        name: Some(name.to_owned()),
        protocol,
    })
}

#[tokio::test]
async fn mtls_rejects_a_caller_of_a_foreign_anchor_and_counts_it_once() {
    let world = World::new(Policy::default());
    let foreign = TestCa::new("other.mesh");
    let (tls, task) = world
        .connect(&foreign, CALLER, &[tls_config::ALPN_HTTP1])
        .await;
    if let Ok(mut stream) = tls {
        // TLS 1.3: the client learns of the refusal on its first read.
        let mut buf = [0u8; 1];
        assert!(!matches!(stream.read(&mut buf).await, Ok(n) if n > 0));
    }
    task.await.unwrap();
    assert_eq!(world.shared.metrics.refused_count("unknown_ca"), 1);
    assert_eq!(world.tcp_errors("unexpected"), 0, "not in a second family");
}

#[tokio::test(start_paused = true)]
async fn detect_tls_times_out_on_a_silent_client() {
    let world = World::new(Policy::default());
    let (_client, task) = world.accept();
    // Paused time: the runtime jumps to the detect deadline once every task is idle.
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the handshake deadline ends the connection")
        .unwrap();
    assert_eq!(world.shared.metrics.refused_count("timeout"), 1);
}

#[tokio::test(start_paused = true)]
async fn transport_alpn_without_a_header_is_refused_at_the_deadline() {
    let world = World::new(Policy::default());
    let (tls, task) = world
        .connect(&world.ca, CALLER, &[tls_config::ALPN_TRANSPORT_HEADER])
        .await;
    let _stream = tls.unwrap();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the detect deadline ends the connection")
        .unwrap();
    assert_eq!(world.shared.metrics.refused_count("timeout"), 1);
}

#[tokio::test]
async fn opaque_sessions_to_a_refused_target_or_from_the_gateway_are_closed_and_counted() {
    let world = World::new(Policy::default());
    let (tls, task) = world
        .connect(&world.ca, CALLER, &[tls_config::ALPN_TRANSPORT_HEADER])
        .await;
    let mut stream = tls.unwrap();
    stream
        .write_all(&header("127.0.0.1", 22, SessionProtocol::Opaque))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    task.await.unwrap();
    assert_eq!(world.tcp_errors("gateway domain invalid"), 1);

    let (tls, task) = world
        .connect(&world.ca, GATEWAY, &[tls_config::ALPN_TRANSPORT_HEADER])
        .await;
    let mut stream = tls.unwrap();
    stream
        .write_all(&header(
            "web.ns.svc.cluster.local",
            80,
            SessionProtocol::Opaque,
        ))
        .await
        .unwrap();
    let _ = stream.read_to_end(&mut rest).await;
    task.await.unwrap();
    assert_eq!(world.tcp_errors("gateway loop"), 1);
}

#[tokio::test]
async fn an_opaque_session_denied_by_policy_is_closed_and_counted_as_a_denial() {
    let world = World::new(Policy::from_yaml("policy", "default: deny\n").unwrap());
    let (tls, task) = world
        .connect(&world.ca, CALLER, &[tls_config::ALPN_TRANSPORT_HEADER])
        .await;
    let mut stream = tls.unwrap();
    stream
        .write_all(&header(
            "db.ns.svc.cluster.local",
            5432,
            SessionProtocol::Opaque,
        ))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    task.await.unwrap();
    let scrape = world.shared.metrics.encode();
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("inbound_tcp_authz_deny_total{")
                && l.contains("mode=\"enforce\"")
                && l.ends_with(" 1")),
        "{scrape}"
    );
    assert_eq!(world.tcp_errors("i/o"), 0);
}

#[tokio::test]
async fn a_name_with_no_endpoints_gets_503_and_the_connection_stays_usable() {
    let world = World::new(Policy::default());
    let (mut send, task) = world.http1().await;
    for _ in 0..2 {
        let req = ::http::Request::get("/")
            .header("host", "nobody.ns.svc.cluster.local:80")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = send.send_request(req).await.unwrap();
        assert_eq!(response.status(), 503);
        // Static endpoints only: the reason names the target and that no DNS is configured.
        let reason = response.headers()["l5d-proxy-error"].to_str().unwrap();
        assert!(reason.contains("nobody.ns.svc.cluster.local"), "{reason}");
        let _ = response.into_body().collect().await;
    }
    drop(send);
    task.await.unwrap();
    assert_eq!(
        world.tcp_errors("i/o"),
        0,
        "a caller that closes is a normal end"
    );
}

#[tokio::test]
async fn a_caller_that_resets_mid_request_is_a_normal_end() {
    let world = World::new(Policy::default());
    let (tls, task) = world
        .connect(&world.ca, CALLER, &[tls_config::ALPN_HTTP1])
        .await;
    let mut stream = tls.unwrap();
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nhost: web.ns.svc.cluster.local\r\ncontent-length: 100\r\n\r\nabc",
        )
        .await
        .unwrap();
    drop(stream);
    task.await.unwrap();
    assert_eq!(world.tcp_errors("i/o"), 0);
    let scrape = world.shared.metrics.encode();
    assert!(
        !scrape
            .lines()
            .any(|l| l.starts_with("tcp_close_total{") && l.contains("errno=\"EIO\"")),
        "{scrape}"
    );
}

#[tokio::test]
async fn requests_naming_different_targets_on_one_connection_each_reach_their_own() {
    let world = World::new(Policy::default());
    let (mut send, task) = world.http1().await;
    for name in [
        "a.ns.svc.cluster.local",
        "a.ns.svc.cluster.local",
        "b.ns.svc.cluster.local",
        "a.ns.svc.cluster.local",
    ] {
        let req = ::http::Request::get("/")
            .header("host", name)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = send.send_request(req).await.unwrap();
        let reason = response.headers()["l5d-proxy-error"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(reason.contains(name), "{name}: {reason}");
        let _ = response.into_body().collect().await;
    }
    drop(send);
    task.await.unwrap();
}
