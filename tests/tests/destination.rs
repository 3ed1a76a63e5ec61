//! Linkerd's Destination API as the source of truth, black-box against an in-test controller (the
//! crate's generated server): endpoints change under load without a failed request, weights and
//! profile splits divide traffic, `NoEndpoints` fails fast, a controller outage serves the last
//! answer, discovered identities and hints dial mTLS and `l5d-orig-proto`, the controller is
//! reached over verified mTLS, per-pod names use the profile's endpoint, refused names are 404.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gateway::cli::client::Http2Sender;
use gateway::cli::demo::controller::{self, Endpoints, Profile, weighted};
use gateway::cli::demo::{Backend, Controller, PodPort};
use gateway::config::Config;
use gateway::transport_header::{SessionProtocol, TransportHeader};
use identity::testing::TestCa;
use linkerd2_proxy_api::destination::{DestinationProfile, WeightedAddr, protocol_hint};
use support::{
    CLIENT_ID, GATEWAY_ID, H1, H2, Harness, SOON, collect, eventually, routed_get, send_h1,
};

const WEB: &str = "web.test.svc.cluster.local:80";
const EAST: &str = "web-east.test.svc.cluster.local:80";
const WEST: &str = "web-west.test.svc.cluster.local:80";
const CONTEXT: &str = r#"{"ns":"linkerd-multicluster","nodeName":"node-1"}"#;
const CONTROLLER_ID: &str =
    "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local";
const POD_ID: &str = "web.test.serviceaccount.identity.linkerd.cluster.local";

/// A gateway of `ca` discovering through `controller` (plaintext on loopback).
async fn gateway(ca: TestCa, controller: &Controller, tweak: impl FnOnce(&mut Config)) -> Harness {
    let anchors = ca.anchors();
    let addr = controller.addr.to_string();
    Harness::start_with(ca, anchors, move |c| {
        c.destination_svc_addr = Some(addr);
        c.destination_context = CONTEXT.to_owned();
        tweak(c);
    })
    .await
}

async fn plain_controller() -> Controller {
    Controller::start(None).await.unwrap()
}

async fn backends(names: &[&'static str]) -> Vec<Backend> {
    let mut out = Vec::new();
    for name in names {
        out.push(Backend::start(name).await.unwrap());
    }
    out
}

/// One HTTP/2 connection to the gateway, for many requests.
async fn session(h: &Harness) -> Http2Sender {
    h.client(CLIENT_ID, H2).http2().await.unwrap()
}

/// `GET /` to `target` on `send`: the status and which backend answered (its name).
async fn get(send: &mut Http2Sender, target: &str) -> (u16, String, Option<String>) {
    send.ready().await.unwrap();
    let answer = collect(send.send_request(routed_get(target)).await.unwrap()).await;
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    let name = body.split(':').next().unwrap_or_default().to_owned();
    let error = answer.header("l5d-proxy-error").map(str::to_owned);
    (answer.status.as_u16(), name, error)
}

/// `n` requests to `target` over 4 connections in parallel: answers per backend name, and the
/// failures.
async fn spread(h: &Harness, target: &str, n: usize) -> (HashMap<String, usize>, usize) {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut send = session(h).await;
        let target = target.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut seen = HashMap::new();
            let mut failed = 0;
            for _ in 0..n / 4 {
                match get(&mut send, &target).await {
                    (200, name, _) => *seen.entry(name).or_insert(0) += 1,
                    _ => failed += 1,
                }
            }
            (seen, failed)
        }));
    }
    let mut total = HashMap::new();
    let mut failed = 0;
    for task in tasks {
        let (seen, f) = task.await.unwrap();
        for (name, count) in seen {
            *total.entry(name).or_insert(0) += count;
        }
        failed += f;
    }
    (total, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_added_and_removed_under_load_fail_no_request() {
    let controller = plain_controller().await;
    let pods = backends(&["a", "b", "c"]).await;
    let set = |names: &[usize]| {
        Endpoints::Set(
            names
                .iter()
                .map(|&i| weighted(pods[i].addr, 10_000))
                .collect(),
        )
    };
    controller.set_endpoints(WEB, set(&[0]));
    let h = gateway(TestCa::new("test.mesh"), &controller, |_| {}).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, sent) = (stop.clone(), sent.clone());
        let mut send = session(&h).await;
        load.push(tokio::spawn(async move {
            let mut answers: Vec<(u16, String)> = Vec::new();
            // Bounded: at most 5,000 requests per worker.
            for _ in 0..5_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (status, name, _) = get(&mut send, WEB).await;
                answers.push((status, name));
                sent.fetch_add(1, Ordering::Relaxed);
            }
            answers
        }));
    }
    let served_by = |name: &'static str| {
        let pods = &pods;
        let index = ["a", "b", "c"].iter().position(|n| *n == name).unwrap();
        move || {
            let before = pods[index].connections();
            async move { before > 0 }
        }
    };
    // Grow to three, shrink to one that was not there at first, then back.
    controller.set_endpoints(WEB, set(&[0, 1, 2]));
    assert!(eventually(SOON, served_by("b")).await && eventually(SOON, served_by("c")).await);
    controller.set_endpoints(WEB, set(&[2]));
    let after_shrink = sent.load(Ordering::Relaxed);
    assert!(
        eventually(SOON, || {
            let sent = sent.load(Ordering::Relaxed);
            async move { sent > after_shrink + 200 }
        })
        .await
    );
    controller.set_endpoints(WEB, set(&[0, 1]));
    let after_swap = sent.load(Ordering::Relaxed);
    assert!(
        eventually(SOON, || {
            let sent = sent.load(Ordering::Relaxed);
            async move { sent > after_swap + 200 }
        })
        .await
    );
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for task in load {
        answers.extend(task.await.unwrap());
    }
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(answers.len() > 400, "{} requests", answers.len());
    // The last requests of every worker went to the final set only.
    let last: Vec<_> = answers
        .iter()
        .rev()
        .take(20)
        .map(|(_, n)| n.as_str())
        .collect();
    assert!(last.iter().all(|n| *n == "a" || *n == "b"), "{last:?}");
    assert_eq!(
        controller.gets(),
        1,
        "one stream for the authority, changed in place"
    );
    assert_eq!(
        controller.contexts(),
        [CONTEXT, CONTEXT],
        "GetProfile and Get carry the context token"
    );
    assert_eq!(
        h.metric(&format!("outbound_endpoints{{authority=\"{WEB}\"}}"))
            .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_one_to_three_split_requests_one_to_three() {
    let controller = plain_controller().await;
    let pods = backends(&["light", "heavy"]).await;
    controller.set_endpoints(
        WEB,
        Endpoints::Set(vec![weighted(pods[0].addr, 1), weighted(pods[1].addr, 3)]),
    );
    let h = gateway(TestCa::new("test.mesh"), &controller, |_| {}).await;
    let (seen, failed) = spread(&h, WEB, 1000).await;
    assert_eq!(failed, 0);
    let light = seen.get("light").copied().unwrap_or(0);
    eprintln!("weights 1:3 → {seen:?}");
    assert!(
        (180..=320).contains(&light),
        "1:3 of 1000 gives about 250 to light: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoints_and_unknown_services_fail_fast_with_503() {
    let controller = plain_controller().await;
    controller.set_endpoints(WEB, Endpoints::Set(Vec::new()));
    // A wait for discovery would take 30 s: a fast 503 comes from the answer itself.
    let h = gateway(TestCa::new("test.mesh"), &controller, |c| {
        c.discovery_timeout = Duration::from_secs(30);
    })
    .await;
    let mut send = session(&h).await;
    let start = Instant::now();
    let (status, _, error) = get(&mut send, WEB).await;
    let took = start.elapsed();
    assert_eq!(status, 503);
    assert!(
        error.as_deref().unwrap().contains("no endpoints"),
        "{error:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "answered from NoEndpoints, not a timeout: {took:?}"
    );
    eprintln!("NoEndpoints → 503 in {took:?} (first request, streams opened)");
    let start = Instant::now();
    let (status, _, _) = get(&mut send, WEB).await;
    eprintln!("NoEndpoints → 503 in {:?} (stream open)", start.elapsed());
    assert_eq!(status, 503);

    let (status, _, error) = get(&mut send, "nothing.test.svc.cluster.local:80").await;
    assert_eq!(status, 503);
    assert!(
        error.as_deref().unwrap().contains("not a known service"),
        "{error:?}"
    );

    // Endpoints appearing later are used at once.
    let pod = Backend::start("late").await.unwrap();
    controller.set_endpoints(WEB, Endpoints::Set(vec![weighted(pod.addr, 1)]));
    assert!(
        eventually(SOON, || {
            let mut send = send.clone();
            async move { get(&mut send, WEB).await.0 == 200 }
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restart_keeps_traffic_on_the_last_endpoints_and_streams_return() {
    let mut controller = plain_controller().await;
    let pods = backends(&["a", "b"]).await;
    controller.set_endpoints(WEB, Endpoints::Set(vec![weighted(pods[0].addr, 1)]));
    let h = gateway(TestCa::new("test.mesh"), &controller, |_| {}).await;
    let mut send = session(&h).await;
    assert_eq!(get(&mut send, WEB).await.0, 200);
    let gets = controller.gets();

    controller.stop();
    for _ in 0..50 {
        let (status, name, error) = get(&mut send, WEB).await;
        assert_eq!((status, name.as_str()), (200, "a"), "{error:?}");
    }
    assert_eq!(
        h.admin_get("/ready").await.0,
        200,
        "an outage after the first answer keeps readiness"
    );

    controller.restart().await.unwrap();
    assert!(
        eventually(SOON, || async { controller.gets() > gets }).await,
        "the Get stream is opened again"
    );
    controller.set_endpoints(WEB, Endpoints::Set(vec![weighted(pods[1].addr, 1)]));
    assert!(
        eventually(SOON, || {
            let mut send = send.clone();
            async move { get(&mut send, WEB).await.1 == "b" }
        })
        .await,
        "the new stream's answer is followed"
    );
    assert!(
        h.metric("control_destination_response_total{method=\"Get\",classification=\"failure\"")
            .await
            >= 1,
        "the broken stream is counted"
    );
}

fn split(weights: &[(&str, u32)]) -> Profile {
    Profile::Set(Box::new(controller::split(
        "web.test.svc.cluster.local",
        weights,
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_split_spreads_requests_and_a_new_split_moves_them() {
    let controller = plain_controller().await;
    let pods = backends(&["east", "west"]).await;
    controller.set_endpoints(EAST, Endpoints::Set(vec![weighted(pods[0].addr, 1)]));
    controller.set_endpoints(WEST, Endpoints::Set(vec![weighted(pods[1].addr, 1)]));
    controller.set_profile(WEB, split(&[(EAST, 500), (WEST, 500)]));
    controller.set_labels(EAST, &[("namespace", "test"), ("service", "web-east")]);
    let h = gateway(TestCa::new("test.mesh"), &controller, |_| {}).await;

    let (seen, failed) = spread(&h, WEB, 1000).await;
    assert_eq!(failed, 0);
    let east = seen.get("east").copied().unwrap_or(0);
    eprintln!("split 50/50 → {seen:?}");
    assert!(
        (400..=600).contains(&east),
        "50/50 within 40–60 %: {seen:?}"
    );
    let weight = |backend: &str| {
        format!("outbound_profile_backend_weight{{authority=\"{WEB}\",backend=\"{backend}\"}}")
    };
    assert_eq!(h.metric(&weight(EAST)).await, 500);
    // The HTTP metrics carry the answering service's discovery labels (spec §9.1).
    let labelled = format!(
        "request_total{{direction=\"outbound\",authority=\"{WEB}\",tls=\"true\",client_id=\"{CLIENT_ID}\",dst_namespace=\"test\",dst_service=\"web-east\"}}"
    );
    assert_eq!(h.metric(&labelled).await, east as u64);

    controller.set_profile(WEB, split(&[(EAST, 1000), (WEST, 0)]));
    assert!(
        eventually(SOON, || async {
            h.metric_or_zero(&weight(EAST)).await == 0
        })
        .await,
        "a one-backend profile is no split"
    );
    let (seen, failed) = spread(&h, WEB, 200).await;
    assert_eq!((failed, seen.get("west")), (0, None), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_identities_and_hints_dial_mtls_with_orig_proto() {
    let ca = TestCa::new("test.mesh");
    let app = Backend::start("web").await.unwrap();
    let pod = support::pod(&ca, POD_ID, PodPort::App, app.addr).await;
    let controller = plain_controller().await;
    let endpoint = controller::meshed(
        pod.addr,
        POD_ID,
        Some(protocol_hint::Protocol::H2(protocol_hint::H2 {})),
        None,
    );
    controller.set_endpoints(WEB, Endpoints::Set(vec![endpoint]));
    let h = gateway(ca, &controller, |_| {}).await;
    let answer = send_h1(&h.client(CLIENT_ID, H1), routed_get(WEB)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.headers);
    assert_eq!(answer.header("x-seen-version"), Some("HTTP/2.0"));
    assert_eq!(answer.header("x-seen-l5d-orig-proto"), Some("HTTP/1.1"));
    let seen = pod.seen();
    assert_eq!(seen[0].client_id.as_deref(), Some(GATEWAY_ID));
    assert_eq!(seen[0].sni.as_deref(), Some(POD_ID));
    assert_eq!(seen[0].alpn, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_is_reached_over_mtls_as_the_gateway() {
    let ca = TestCa::new("test.mesh");
    let pod = Backend::start("web").await.unwrap();
    let real = Controller::start(Some((&ca.credentials(CONTROLLER_ID), &ca.anchors())))
        .await
        .unwrap();
    real.set_endpoints(WEB, Endpoints::Set(vec![weighted(pod.addr, 1)]));
    let h = gateway(ca, &real, |c| {
        c.destination_svc_name = Some(CONTROLLER_ID.to_owned());
    })
    .await;
    let mut send = session(&h).await;
    assert_eq!(get(&mut send, WEB).await.0, 200);
    assert!(
        real.callers()
            .iter()
            .all(|c| c.as_deref() == Some(GATEWAY_ID)),
        "{:?}",
        real.callers()
    );
    assert_eq!(h.admin_get("/ready").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_with_another_identity_is_refused() {
    let ca = TestCa::new("test.mesh");
    let pod = Backend::start("web").await.unwrap();
    let impostor = Controller::start(Some((
        &ca.credentials("someone-else.linkerd.serviceaccount.identity.linkerd.cluster.local"),
        &ca.anchors(),
    )))
    .await
    .unwrap();
    impostor.set_endpoints(WEB, Endpoints::Set(vec![weighted(pod.addr, 1)]));
    let h = gateway(ca, &impostor, |c| {
        c.destination_svc_name = Some(CONTROLLER_ID.to_owned());
        c.discovery_timeout = Duration::from_millis(500);
    })
    .await;
    let mut send = session(&h).await;
    let (status, _, error) = get(&mut send, WEB).await;
    assert_eq!(status, 503);
    assert!(
        error.as_deref().unwrap().contains("identity mismatch"),
        "{error:?}"
    );
    assert!(impostor.callers().iter().all(Option::is_none) || impostor.gets() == 0);
    assert_eq!(impostor.gets(), 0, "nothing was asked of the impostor");
    let (status, body) = h.admin_get("/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("destination controller"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_name_uses_the_profile_endpoint_and_refused_names_are_404() {
    const POD_NAME: &str = "web-0.web.test.svc.cluster.local:80";
    const NO_PROFILE: &str = "empty.test.svc.cluster.local:80";
    const REFUSED: &str = "web.elsewhere.svc.cluster.local:80";
    let controller = plain_controller().await;
    let pod = Backend::start("web-0").await.unwrap();
    controller.set_profile(
        POD_NAME,
        Profile::Set(Box::new(DestinationProfile {
            endpoint: Some(weighted(pod.addr, 1)),
            ..DestinationProfile::default()
        })),
    );
    controller.set_profile(NO_PROFILE, Profile::Set(Box::default()));
    controller.set_profile(REFUSED, Profile::Refuse(tonic::Code::InvalidArgument));
    let h = gateway(TestCa::new("test.mesh"), &controller, |_| {}).await;
    let mut send = session(&h).await;
    assert_eq!(get(&mut send, POD_NAME).await.0, 200);
    assert_eq!(get(&mut send, POD_NAME).await.1, "web-0");
    assert_eq!(controller.gets(), 0, "a pod endpoint needs no Get");
    for name in [NO_PROFILE, REFUSED] {
        let (status, _, error) = get(&mut send, name).await;
        assert_eq!(
            (status, error.as_deref()),
            (404, Some("bad gateway domain")),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_serves_concurrent_requests_and_an_idle_stream_closes() {
    let controller = plain_controller().await;
    let pod = Backend::start("web").await.unwrap();
    controller.set_endpoints(WEB, Endpoints::Set(vec![weighted(pod.addr, 1)]));
    let h = gateway(TestCa::new("test.mesh"), &controller, |c| {
        c.discovery_idle_timeout = Duration::from_millis(200);
    })
    .await;
    let (_, failed) = spread(&h, WEB, 16).await;
    assert_eq!(failed, 0);
    assert_eq!((controller.gets(), controller.profile_gets()), (1, 1));
    let cancelled = "control_destination_response_total{method=\"Get\",classification=\"failure\",grpc_status=\"1\"}";
    assert!(
        eventually(SOON, || async { h.metric_or_zero(cancelled).await == 1 }).await,
        "idle: closed"
    );
    let mut send = session(&h).await;
    assert_eq!(
        get(&mut send, WEB).await.0,
        200,
        "the last answer serves at once"
    );
    assert!(
        eventually(SOON, || async { controller.gets() == 2 }).await,
        "and a new stream opens"
    );
}

fn opaque(addr: std::net::SocketAddr, identity: &str, inbound: u16) -> WeightedAddr {
    let hint = protocol_hint::Protocol::Opaque(protocol_hint::Opaque {});
    controller::meshed(addr, identity, Some(hint), Some(inbound))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_transport_and_authority_override_from_discovery_reach_the_inbound_port() {
    const ECHO: &str = "echo.test.svc.cluster.local";
    const CHAINED: &str = "echo-west.test.svc.cluster.local";
    const REMOTE_GW: &str =
        "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.west.local";
    let ca = TestCa::new("test.mesh");
    let echo = Backend::start_tcp_echo().await.unwrap();
    let pod = support::pod(&ca, POD_ID, PodPort::Inbound, echo.addr).await;
    let remote = support::pod(&ca, REMOTE_GW, PodPort::Inbound, echo.addr).await;
    let controller = plain_controller().await;
    // The endpoint's own port is 7777; its proxy's inbound port is where the stand-in listens.
    controller.set_endpoints(
        &format!("{ECHO}:7777"),
        Endpoints::Set(vec![opaque(
            "127.0.0.1:7777".parse().unwrap(),
            POD_ID,
            pod.addr.port(),
        )]),
    );
    // A mirror of a mirror: the endpoint is another cluster's gateway, told where to go.
    let mut chained = opaque(
        "127.0.0.1:4143".parse().unwrap(),
        REMOTE_GW,
        remote.addr.port(),
    );
    chained.authority_override = Some(linkerd2_proxy_api::destination::AuthorityOverride {
        authority_override: "echo.test.svc.west.local:7777".to_owned(),
    });
    controller.set_endpoints(&format!("{CHAINED}:7777"), Endpoints::Set(vec![chained]));
    let h = gateway(ca, &controller, |_| {}).await;

    support::assert_opaque_echo(&h.client(CLIENT_ID, support::L5D), ECHO, 7777, 64 * 1024).await;
    let seen = pod.seen();
    assert_eq!(seen[0].client_id.as_deref(), Some(GATEWAY_ID));
    assert_eq!(seen[0].alpn.as_deref(), Some(&b"transport.l5d.io/v1"[..]));
    assert_eq!(
        seen[0].header,
        Some(TransportHeader {
            port: 7777,
            name: None,
            protocol: SessionProtocol::Opaque,
        })
    );

    support::assert_opaque_echo(&h.client(CLIENT_ID, support::L5D), CHAINED, 7777, 1024).await;
    assert_eq!(
        remote.seen()[0].header,
        Some(TransportHeader {
            port: 7777,
            name: Some("echo.test.svc.west.local".to_owned()),
            protocol: SessionProtocol::Opaque,
        }),
        "a gateway endpoint is told the name to route to"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_endpoints_win_and_a_failing_profile_stream_is_retried() {
    let controller = plain_controller().await;
    let pod = Backend::start("web").await.unwrap();
    controller.set_endpoints(WEB, Endpoints::Set(vec![weighted(pod.addr, 1)]));
    controller.set_profile(WEB, Profile::Refuse(tonic::Code::Unavailable));
    let h = gateway(TestCa::new("test.mesh"), &controller, |c| {
        c.discovery_timeout = Duration::from_millis(300);
    })
    .await;
    let mut send = session(&h).await;
    // The harness's SERVICE has static endpoints: the controller is never asked about it.
    assert_eq!(get(&mut send, support::SERVICE).await.0, 200);
    assert_eq!((controller.gets(), controller.profile_gets()), (0, 0));

    let (status, _, error) = get(&mut send, WEB).await;
    assert_eq!(status, 503, "{error:?}");
    assert!(
        error
            .as_deref()
            .unwrap()
            .contains("GetProfile: Unavailable"),
        "{error:?}"
    );
    controller.set_profile(
        WEB,
        Profile::Set(Box::new(DestinationProfile {
            fully_qualified_name: "web.test.svc.cluster.local".to_owned(),
            ..DestinationProfile::default()
        })),
    );
    assert!(
        eventually(SOON, || {
            let mut send = send.clone();
            async move { get(&mut send, WEB).await.0 == 200 }
        })
        .await,
        "the stream is retried with backoff until it answers"
    );
    assert!(controller.profile_gets() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_route_timeout_ends_a_slow_request_with_504() {
    use linkerd2_proxy_api::destination::{PathMatch, RequestMatch, Route, request_match};
    // Accepts and reads, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let controller = plain_controller().await;
    controller.set_endpoints(WEB, Endpoints::Set(vec![weighted(silent, 1)]));
    controller.set_profile(
        WEB,
        Profile::Set(Box::new(DestinationProfile {
            fully_qualified_name: "web.test.svc.cluster.local".to_owned(),
            routes: vec![Route {
                condition: Some(RequestMatch {
                    r#match: Some(request_match::Match::Path(PathMatch {
                        regex: "/.*".to_owned(),
                    })),
                }),
                timeout: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 200_000_000,
                }),
                ..Route::default()
            }],
            ..DestinationProfile::default()
        })),
    );
    let h = gateway(TestCa::new("test.mesh"), &controller, |_| {}).await;
    let mut send = session(&h).await;
    let (status, _, error) = get(&mut send, WEB).await;
    assert_eq!(
        (status, error.as_deref()),
        (504, Some("response timed out after 200ms"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_an_endpoint_hinted_opaque_goes_as_bytes_through_the_inbound_port() {
    let ca = TestCa::new("test.mesh");
    let app = Backend::start("web").await.unwrap();
    let pod = support::pod(&ca, POD_ID, PodPort::Inbound, app.addr).await;
    let controller = plain_controller().await;
    controller.set_endpoints(
        WEB,
        Endpoints::Set(vec![opaque(
            "127.0.0.1:80".parse().unwrap(),
            POD_ID,
            pod.addr.port(),
        )]),
    );
    let h = gateway(ca, &controller, |_| {}).await;
    let answer = send_h1(&h.client(CLIENT_ID, H1), routed_get(WEB)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.headers);
    assert_eq!(
        pod.seen()[0].header,
        Some(TransportHeader {
            port: 80,
            name: None,
            protocol: SessionProtocol::Opaque,
        }),
        "an opaque port gets no session protocol, whatever the caller spoke"
    );
}
