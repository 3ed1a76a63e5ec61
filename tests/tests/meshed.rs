//! The hop to meshed pods, black-box: the gateway dials a pod's proxy with mTLS as its own
//! identity and verifies the pod's (SNI = the pod's identity, no ALPN on an application port),
//! refuses a pod that is not who discovery says or whose certificate is foreign (502, nothing of
//! the request sent, counted), follows credential and anchor rotation on new connections, and
//! reaches an opaque port through the pod's inbound port with a transport header.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use gateway::app::{self, Bound};
use gateway::cli::client::MtlsClient;
use gateway::cli::demo::{Backend, MeshedPod, PodPort};
use gateway::config::Config;
use gateway::transport_header::{SessionProtocol, TransportHeader};
use gateway::upstream::Address;
use identity::TrustAnchors;
use identity::testing::TestCa;
use support::secret::SecretDir;
use support::{
    CLIENT_ID, GATEWAY_ID, H1, Harness, L5D, SERVICE, SOON, assert_opaque_echo, eventually,
    routed_get, send_h1,
};

/// The pod behind `SERVICE` in these tests.
const POD_ID: &str = "podinfo.test.serviceaccount.identity.linkerd.cluster.local";
/// A second name for the same pod: a target of its own, so a new upstream connection.
const AGAIN: &str = "podinfo-canary.test.svc.cluster.local:9898";
const ECHO: &str = "echo.test.svc.cluster.local";

fn meshed(pod: &MeshedPod, identity: &str) -> Address {
    Address::meshed(pod.addr, identity.parse().unwrap())
}

/// A pod of `ca` named `identity` on `port`, in front of a fresh echo backend.
async fn pod(ca: &TestCa, identity: &str, port: PodPort) -> (MeshedPod, Backend) {
    let app = Backend::start("podinfo").await.unwrap();
    (support::pod(ca, identity, port, app.addr).await, app)
}

/// A gateway of `ca` whose `SERVICE` is `address`.
async fn gateway_to(ca: TestCa, address: Address) -> Harness {
    let anchors = ca.anchors();
    Harness::start_with(ca, anchors, move |c| {
        c.endpoints.insert(SERVICE.to_owned(), vec![address]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meshed_pod_is_reached_over_mtls_and_sees_the_gateway_identity() {
    let ca = TestCa::new("test.mesh");
    let (pod, app) = pod(&ca, POD_ID, PodPort::App).await;
    let h = gateway_to(ca, meshed(&pod, POD_ID)).await;
    let answer = send_h1(&h.client(CLIENT_ID, H1), routed_get(SERVICE)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body, "podinfo: GET /\n");
    assert_eq!(app.connections(), 1);
    let seen = pod.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].client_id.as_deref(), Some(GATEWAY_ID));
    assert_eq!(seen[0].sni.as_deref(), Some(POD_ID));
    assert_eq!(
        seen[0].alpn, None,
        "a pod proxy offers no ALPN on an application port"
    );
    // The caller's identity still travels in the request for the pod's application.
    assert_eq!(answer.header("x-seen-l5d-client-id"), Some(CLIENT_ID));
    let dst = format!(
        "tcp_open_total{{direction=\"outbound\",peer=\"dst\",tls=\"true\",client_id=\"\",authority=\"{SERVICE}\",server_id=\"{POD_ID}\",target_addr=\"{}\"}}",
        pod.addr
    );
    assert_eq!(h.metric(&dst).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_is_not_the_expected_identity_gets_nothing_and_the_caller_a_502() {
    let ca = TestCa::new("test.mesh");
    let (pod, app) = pod(
        &ca,
        "impostor.test.serviceaccount.identity.linkerd.cluster.local",
        PodPort::App,
    )
    .await;
    let h = gateway_to(ca, meshed(&pod, POD_ID)).await;
    let answer = send_h1(&h.client(CLIENT_ID, H1), routed_get(SERVICE)).await;
    assert_eq!(answer.status, 502);
    let error = answer.header("l5d-proxy-error").unwrap();
    assert!(error.starts_with("upstream identity mismatch"), "{error}");
    assert!(error.contains(POD_ID), "{error}");
    assert_eq!(
        app.connections(),
        0,
        "nothing of the request reached the pod's application"
    );
    let counted = format!(
        "outbound_connect_errors_total{{authority=\"{SERVICE}\",reason=\"tls_identity_mismatch\"}}"
    );
    assert!(h.metric(&counted).await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_certificate_from_a_foreign_anchor_is_refused() {
    let foreign = TestCa::new("foreign.mesh");
    let (pod, app) = pod(&foreign, POD_ID, PodPort::App).await;
    let h = gateway_to(TestCa::new("test.mesh"), meshed(&pod, POD_ID)).await;
    let answer = send_h1(&h.client(CLIENT_ID, H1), routed_get(SERVICE)).await;
    assert_eq!(answer.status, 502);
    let error = answer.header("l5d-proxy-error").unwrap();
    assert!(error.contains("upstream TLS"), "{error}");
    assert_eq!(app.connections(), 0);
    let counted = format!(
        "outbound_connect_errors_total{{authority=\"{SERVICE}\",reason=\"tls_untrusted\"}}"
    );
    assert!(h.metric(&counted).await >= 1);
}

/// A gateway whose credentials come from `dir` (polled every 10 ms), with `SERVICE` and `AGAIN`
/// both at `pod` as `POD_ID`.
async fn reloading_gateway(dir: &SecretDir, pod: &MeshedPod) -> Bound {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        credentials_poll_interval: Duration::from_millis(10),
        identity_dir: Some(dir.root.clone()),
        ..Config::default()
    };
    for target in [SERVICE, AGAIN] {
        c.endpoints
            .insert(target.to_owned(), vec![meshed(pod, POD_ID)]);
    }
    app::bind(&c, None).await.unwrap()
}

fn caller(gw: &Bound, ca: &TestCa, anchors: &TrustAnchors) -> MtlsClient {
    MtlsClient::new(
        Some(&ca.credentials(CLIENT_ID)),
        anchors,
        GATEWAY_ID,
        gw.data_addr,
        H1,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_gateway_certificate_is_presented_on_the_next_new_upstream_connection() {
    let ca = TestCa::new("rotate.mesh");
    let mut dir = SecretDir::new("meshed-rotate");
    let first = ca.leaf(GATEWAY_ID);
    dir.publish(&first, &ca.anchors_pem());
    let (pod, _app) = pod(&ca, POD_ID, PodPort::App).await;
    let gw = reloading_gateway(&dir, &pod).await;
    let client = caller(&gw, &ca, &ca.anchors());
    assert_eq!(send_h1(&client, routed_get(SERVICE)).await.status, 200);
    assert_eq!(pod.seen()[0].client_leaf.as_deref(), Some(&*first.chain[0]));

    let next = ca.leaf(GATEWAY_ID);
    dir.publish(&next, &ca.anchors_pem());
    // Once the gateway serves the new leaf downstream, its new upstream connections carry it.
    assert!(
        eventually(SOON, || async {
            let tls = client.connect().await.unwrap();
            tls.get_ref().1.peer_certificates().unwrap()[0] == next.chain[0]
        })
        .await
    );
    assert_eq!(send_h1(&client, routed_get(AGAIN)).await.status, 200);
    let seen = pod.seen();
    assert_eq!(seen.len(), 2, "one connection per target");
    assert_eq!(seen[1].client_leaf.as_deref(), Some(&*next.chain[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_verification_follows_a_trust_anchor_rotation() {
    let old = TestCa::new("old.mesh");
    let new = TestCa::new("new.mesh");
    let mut dir = SecretDir::new("meshed-anchors");
    dir.publish(&old.leaf(GATEWAY_ID), &old.anchors_pem());
    // The pod already has its certificate from the new root, and trusts both for callers.
    let both = format!("{}{}", old.anchors_pem(), new.anchors_pem());
    let app = Backend::start("podinfo").await.unwrap();
    let pod_anchors = TrustAnchors::from_pem("bundle", both.as_bytes()).unwrap();
    let pod = MeshedPod::start(
        &new.credentials(POD_ID),
        &pod_anchors,
        PodPort::App,
        app.addr,
    )
    .await
    .unwrap();
    let gw = reloading_gateway(&dir, &pod).await;
    let client = caller(&gw, &old, &old.anchors());
    assert_eq!(send_h1(&client, routed_get(SERVICE)).await.status, 502);
    assert_eq!(app.connections(), 0);

    dir.publish(&old.leaf(GATEWAY_ID), &both);
    assert!(
        eventually(SOON, || async {
            send_h1(&client, routed_get(SERVICE)).await.status == 200
        })
        .await,
        "the new root never verified the pod"
    );
    assert_eq!(
        pod.seen().last().unwrap().client_id.as_deref(),
        Some(GATEWAY_ID)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_session_goes_through_the_pods_inbound_port_with_a_transport_header() {
    let ca = TestCa::new("test.mesh");
    let echo = Backend::start_tcp_echo().await.unwrap();
    let inbound = support::pod(&ca, POD_ID, PodPort::Inbound, echo.addr).await;
    // The endpoint's own port is 7777; the pod proxy's inbound port is where the pod listens.
    let mut address = Address::meshed("127.0.0.1:7777".parse().unwrap(), POD_ID.parse().unwrap());
    address.opaque_port = Some(inbound.addr.port());
    let anchors = ca.anchors();
    let h = Harness::start_with(ca, anchors, move |c| {
        c.endpoints.insert(format!("{ECHO}:7777"), vec![address]);
    })
    .await;
    // Half-close: our EOF crosses both hops and the echo's EOF comes back.
    assert_opaque_echo(&h.client(CLIENT_ID, L5D), ECHO, 7777, 128 * 1024).await;

    let seen = inbound.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].client_id.as_deref(), Some(GATEWAY_ID));
    assert_eq!(seen[0].sni.as_deref(), Some(POD_ID));
    assert_eq!(seen[0].alpn.as_deref(), Some(&b"transport.l5d.io/v1"[..]));
    assert_eq!(
        seen[0].header,
        Some(TransportHeader {
            port: 7777,
            name: None,
            protocol: SessionProtocol::Opaque,
        }),
        "the endpoint's own port, no name (a name would make the pod a gateway)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_a_pods_inbound_port_announces_its_protocol() {
    let ca = TestCa::new("test.mesh");
    let app = Backend::start("podinfo").await.unwrap();
    let inbound = support::pod(&ca, POD_ID, PodPort::Inbound, app.addr).await;
    let mut address = Address::meshed("127.0.0.1:9898".parse().unwrap(), POD_ID.parse().unwrap());
    address.opaque_port = Some(inbound.addr.port());
    let h = gateway_to(ca, address).await;
    let answer = send_h1(&h.client(CLIENT_ID, H1), routed_get(SERVICE)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        inbound.seen()[0].header,
        Some(TransportHeader {
            port: 9898,
            name: None,
            protocol: SessionProtocol::Http1,
        })
    );
}
