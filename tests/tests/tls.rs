//! TLS hygiene on the data port: returning callers resume their session (no certificate exchange
//! again) and keep their identity; a resumed session whose client certificate has expired since
//! is refused as an expired certificate would be.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gateway::cli::client::MtlsClient;
use gateway::config::Config;
use gateway::control::credentials::DATA_ALPN;
use gateway::control::policy;
use gateway::metrics::Metrics;
use gateway::proxy::context::{Discovery, Handles, Shared};
use gateway::testing::eventually;
use identity::issue::Validity;
use identity::testing::TestCa;
use identity::{Credentials, tls_config};
use rustls::HandshakeKind;
use rustls::pki_types::UnixTime;
use rustls::time_provider::TimeProvider;
use support::{CLIENT_ID, GATEWAY_ID, H1, Harness, SERVICE, collect, routed_get};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_caller_resumes_its_session_with_its_identity() {
    let h = Harness::start(|_| {}).await;
    let client = h.client(CLIENT_ID, H1);
    for expected in [HandshakeKind::Full, HandshakeKind::Resumed] {
        let tls = client.connect().await.unwrap();
        assert_eq!(tls.get_ref().1.handshake_kind(), Some(expected));
        let mut send = gateway::cli::client::http1_on(tls).await.unwrap();
        let answer = collect(send.send_request(routed_get(SERVICE)).await.unwrap()).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-seen-l5d-client-id"), Some(CLIENT_ID));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_session_tickets_off_every_connection_is_a_full_handshake() {
    let h = Harness::start(|c| c.tls_session_tickets = false).await;
    let client = h.client(CLIENT_ID, H1);
    for _ in 0..3 {
        let tls = client.connect().await.unwrap();
        let mut send = gateway::cli::client::http1_on(tls).await.unwrap();
        let answer = collect(send.send_request(routed_get(SERVICE)).await.unwrap()).await;
        assert_eq!(answer.status, 200);
        // After a response the caller would have any ticket the gateway sent.
        let tls = client.connect().await.unwrap();
        assert_eq!(tls.get_ref().1.handshake_kind(), Some(HandshakeKind::Full));
    }
}

/// A clock stopped at one instant: the server's view of time when a session began.
#[derive(Debug)]
struct StoppedClock(UnixTime);

impl TimeProvider for StoppedClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

#[tokio::test]
async fn a_resumed_session_of_an_expired_certificate_is_refused() {
    // No waiting for a certificate to run out: the caller's leaf expired 5 s ago, and the server
    // began its session 10 s ago, by its TLS clock, when the leaf was valid. The test CA's root
    // and issuer are valid from 20 s ago (Linkerd's clock-skew allowance).
    let ca = TestCa::new("test.mesh");
    let anchors = ca.anchors();
    let now = SystemTime::now();
    let then = now - Duration::from_secs(10);
    let leaf = ca.leaf_with(
        CLIENT_ID,
        Validity {
            not_before: now - Duration::from_secs(15),
            not_after: now - Duration::from_secs(5),
        },
    );
    let creds = Credentials::new(leaf.chain.clone(), leaf.key.clone_key(), &anchors, then).unwrap();
    let gateway = ca.leaf(GATEWAY_ID).credentials(&anchors).unwrap();
    let mut config = tls_config::server_config(&gateway, &anchors, &DATA_ALPN).unwrap();
    config.time_provider = Arc::new(StoppedClock(UnixTime::since_unix_epoch(
        then.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
    )));
    let config = Arc::new(config);

    // The gateway's connection task with that TLS config, on a listener of our own: the refusal
    // is counted as the gateway counts it.
    let (_tls_tx, tls_rx) = tokio::sync::watch::channel(config);
    let (_drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let handles = Handles {
        identity: GATEWAY_ID.parse().unwrap(),
        tls: tls_rx,
        upstream_tls: tokio::sync::watch::channel(Arc::new(
            gateway::upstream::ClientTls::new(&gateway, &anchors).unwrap(),
        ))
        .1,
        metrics: Arc::new(Metrics::new()),
        policy: Arc::new(policy::Current::new(policy::Policy::default())),
        drain: drain_rx,
        tracing: None,
    };
    let shared = Arc::new(Shared::new(&Config::default(), handles, Discovery::StaticOnly).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = {
        let shared = shared.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                let (tcp, remote) = listener.accept().await.unwrap();
                tokio::spawn(gateway::proxy::conn::serve(
                    shared.clone(),
                    tcp,
                    remote,
                    None,
                ));
            }
        })
    };
    let client = MtlsClient::new(Some(&creds), &anchors, GATEWAY_ID, addr, H1).unwrap();
    let first = client.connect().await.unwrap();
    assert_eq!(
        first.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Full)
    );
    // A response (503: no endpoints) after the session tickets: the caller has them now.
    let mut send = gateway::cli::client::http1_on(first).await.unwrap();
    let answer = collect(send.send_request(routed_get(SERVICE)).await.unwrap()).await;
    assert_eq!(
        answer.status, 503,
        "the session began while the leaf was valid"
    );
    drop(send);
    // The caller resumes; whatever its side of the handshake says, the server decides.
    let second = client.connect().await;
    server.await.unwrap();
    let m = shared.metrics.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            m.refused_count("expired") == 1
        })
        .await,
        "a resumed session of an expired leaf is refused and counted"
    );
    if let Ok(tls) = second {
        assert_eq!(
            tls.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Resumed)
        );
    }
}
