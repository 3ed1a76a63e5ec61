//! TLS hygiene on the data port: returning callers resume their session (no certificate exchange
//! again) and keep their identity; a resumed session whose client certificate has expired since
//! is refused as an expired certificate would be.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::{Duration, SystemTime};

use identity::issue::Validity;
use rustls::HandshakeKind;
use support::{CLIENT_ID, H1, Harness, SERVICE, SOON, collect, eventually, routed_get, send_h1};

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
async fn a_resumed_session_of_an_expired_certificate_is_refused() {
    let h = Harness::start(|_| {}).await;
    let now = SystemTime::now();
    let short = h.ca.leaf_with(
        CLIENT_ID,
        Validity {
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(2),
        },
    );
    let creds = short.credentials(&h.anchors).unwrap();
    let client = h.client_with(Some(&creds), H1);
    assert_eq!(send_h1(&client, routed_get(SERVICE)).await.status, 200);
    // Let the certificate run out (certificate times have one-second resolution).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let refused = match client.connect().await {
        Err(_) => true,
        Ok(tls) => {
            assert_eq!(
                tls.get_ref().1.handshake_kind(),
                Some(HandshakeKind::Resumed)
            );
            let mut send = gateway::cli::client::http1_on(tls).await.unwrap();
            send.send_request(routed_get(SERVICE)).await.is_err()
        }
    };
    assert!(
        refused,
        "an expired caller is not served through its old session"
    );
    let m = &h.gateway.metrics;
    assert!(eventually(SOON, || async { m.refused_count("expired") == 1 }).await);
}
