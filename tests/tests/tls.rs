//! TLS hygiene on the data port: returning callers resume their session (no certificate exchange
//! again) and keep their identity; a resumed session whose client certificate has expired since
//! is refused as an expired certificate would be.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gateway::cli::client::MtlsClient;
use gateway::control::credentials::DATA_ALPN;
use gateway::proxy::error::Error;
use identity::issue::Validity;
use identity::testing::TestCa;
use identity::{Credentials, Refusal, tls_config};
use rustls::HandshakeKind;
use rustls::pki_types::UnixTime;
use rustls::time_provider::TimeProvider;
use support::{CLIENT_ID, GATEWAY_ID, H1, Harness, SERVICE, collect, routed_get};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
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

    // The gateway's handshake step, on a listener of our own.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            match gateway::proxy::tls::accept(tcp, config.clone(), deadline).await {
                Ok(mut accepted) => {
                    let kind = accepted.stream.get_ref().1.handshake_kind();
                    // Application data after the session tickets: the caller has them once
                    // it reads this.
                    accepted.stream.write_all(b"ok").await.unwrap();
                    accepted.stream.flush().await.unwrap();
                    outcomes.push(Ok((kind, accepted.peer.to_string())));
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        outcomes
    });
    let client = MtlsClient::new(Some(&creds), &anchors, GATEWAY_ID, addr, H1).unwrap();
    let mut first = client.connect().await.unwrap();
    let mut ok = [0u8; 2];
    first.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok, b"ok");
    drop(first);
    // The caller resumes; whatever its side of the handshake says, the server decides.
    let second = client.connect().await;
    let outcomes = server.await.unwrap();
    assert!(
        matches!(&outcomes[0], Ok((Some(HandshakeKind::Full), peer)) if peer == CLIENT_ID),
        "the session began while the leaf was valid: {outcomes:?}"
    );
    assert!(
        matches!(
            &outcomes[1],
            Err(Error::Handshake {
                refusal: Refusal::Expired,
                ..
            })
        ),
        "a resumed session of an expired leaf: {outcomes:?}"
    );
    if let Ok(tls) = second {
        assert_eq!(
            tls.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Resumed)
        );
    }
}
