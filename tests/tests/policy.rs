//! Authorization policy, black-box: rules allow, the default denies with 403, audit mode lets
//! through what it counts as denied, opaque sessions are checked at connect time, and the file
//! is reloaded while the gateway runs (a bad file is refused and the policy in use stays).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use gateway::cli::demo::Backend;
use gateway::transport_header::{SessionProtocol, TransportHeader};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OTHER_ID: &str = "api.west.serviceaccount.identity.linkerd.cluster.local";
const ECHO: &str = "echo.test.svc.cluster.local";

const ALLOW_EAST: &str = r#"
default: deny
rules:
  - name: east-podinfo
    clients: ["*.east.serviceaccount.identity.linkerd.cluster.local"]
    targets: [{service: podinfo, namespace: test}]
"#;

async fn harness(path: &Path) -> Harness {
    let path = path.to_owned();
    Harness::start(move |c| {
        c.policy = Some(path);
        c.credentials_poll_interval = Duration::from_millis(10);
    })
    .await
}

#[tokio::test]
async fn a_rule_allows_and_the_default_denies_with_403() {
    let path = policy_file("enforce", ALLOW_EAST);
    let h = harness(&path).await;

    let allowed = send_h1(&h.client(CLIENT_ID, H1), routed_get(SERVICE)).await;
    assert_eq!(allowed.status, 200);
    let rule_allow = format!(
        "inbound_http_authz_allow_total{{srv_kind=\"default\",srv_name=\"deny\",authz_kind=\"rule\",authz_name=\"east-podinfo\",tls=\"true\",client_id=\"{CLIENT_ID}\"}}"
    );
    assert_eq!(h.metric(&rule_allow).await, 1);

    let other = h.client(OTHER_ID, H1);
    let mut send = other.http1().await.unwrap();
    let denied = collect(send.send_request(routed_get(SERVICE)).await.unwrap()).await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.header("l5d-proxy-error"),
        Some("unauthorized request on route")
    );
    // A denial is not fatal: the connection carries the next request.
    send.ready().await.unwrap();
    let again = collect(send.send_request(routed_get(SERVICE)).await.unwrap()).await;
    assert_eq!(again.status, 403);
    let deny = format!(
        "inbound_http_authz_deny_total{{srv_kind=\"default\",srv_name=\"deny\",tls=\"true\",client_id=\"{OTHER_ID}\",authority=\"{SERVICE}\",mode=\"enforce\"}}"
    );
    assert_eq!(h.metric(&deny).await, 2);
    assert_eq!(
        h.backend.connections(),
        1,
        "denied requests never reached the service"
    );
}

#[tokio::test]
async fn audit_mode_lets_denied_requests_through_and_counts_them() {
    let path = policy_file("audit", &format!("{ALLOW_EAST}mode: audit\n"));
    let h = harness(&path).await;
    let answer = send_h1(&h.client(OTHER_ID, H1), routed_get(SERVICE)).await;
    assert_eq!(answer.status, 200);
    let audit = format!(
        "inbound_http_authz_deny_total{{srv_kind=\"default\",srv_name=\"deny\",tls=\"true\",client_id=\"{OTHER_ID}\",authority=\"{SERVICE}\",mode=\"audit\"}}"
    );
    assert_eq!(h.metric(&audit).await, 1);
    assert_eq!(
        send_h1(&h.client(CLIENT_ID, H1), routed_get(SERVICE))
            .await
            .status,
        200
    );
    assert_eq!(
        h.metric("inbound_http_authz_deny_total{").await,
        1,
        "the rule's caller is not counted"
    );
}

#[tokio::test]
async fn the_policy_file_is_reloaded_and_a_bad_one_is_refused() {
    let path = policy_file("reload", "default: deny\n");
    let h = harness(&path).await;
    let caller = h.client(CLIENT_ID, H1);
    assert_eq!(send_h1(&caller, routed_get(SERVICE)).await.status, 403);

    replace(&path, ALLOW_EAST);
    assert!(
        eventually(SOON, || async {
            send_h1(&caller, routed_get(SERVICE)).await.status == 200
        })
        .await,
        "the new policy was never applied"
    );
    assert_eq!(
        h.metric("gateway_policy_reloads_total{result=\"ok\"}")
            .await,
        1
    );

    replace(&path, "default: maybe\nrules: [{name: x}]\n");
    assert!(
        eventually(SOON, || async {
            h.metric("gateway_policy_reloads_total{result=\"error\"}")
                .await
                == 1
        })
        .await,
        "the bad file was not refused"
    );
    assert_eq!(
        send_h1(&caller, routed_get(SERVICE)).await.status,
        200,
        "the policy in use stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_sessions_are_checked_at_connect_time() {
    let echo = Backend::start_tcp_echo().await.unwrap();
    let path = policy_file(
        "opaque",
        "default: deny\nrules:\n  - name: east-echo\n    clients: [\"*.east.serviceaccount.identity.linkerd.cluster.local\"]\n    targets: [{service: echo, port: 7777}]\n",
    );
    let h = {
        let path = path.clone();
        Harness::start(move |c| {
            c.policy = Some(path);
            c.endpoints
                .insert(format!("{ECHO}:7777"), vec![echo.addr.into()]);
        })
        .await
    };
    let header = TransportHeader {
        port: 7777,
        name: Some(ECHO.to_owned()),
        protocol: SessionProtocol::Opaque,
    };
    let echoed = support::opaque_echo(&h.client(CLIENT_ID, L5D), ECHO, 7777, b"ping").await;
    assert_eq!(echoed, b"ping");

    let mut denied = h
        .client(OTHER_ID, L5D)
        .connect_with_header(&header)
        .await
        .unwrap();
    let _ = denied.write_all(b"ping").await;
    let mut got = Vec::new();
    let _ = denied.read_to_end(&mut got).await;
    assert!(got.is_empty(), "a denied session got {got:?}");
    let deny = format!(
        "inbound_tcp_authz_deny_total{{srv_kind=\"default\",srv_name=\"deny\",tls=\"true\",client_id=\"{OTHER_ID}\",authority=\"{ECHO}:7777\",mode=\"enforce\"}}"
    );
    // Counted as the session ends; the label set appears with the count.
    assert!(eventually(SOON, || async { h.metric_or_zero(&deny).await == 1 }).await);
    assert_eq!(
        echo.connections(),
        1,
        "only the allowed session reached the service"
    );
}
