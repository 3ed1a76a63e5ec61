//! Traffic management at the gateway, black-box: configured weighted splits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;

use gateway::cli::demo::Backend;
use gateway::upstream::split::Weighted;
use support::{CLIENT_ID, H2, Harness, collect, routed_get};

const WEB: &str = "podinfo.test.svc.cluster.local:9898";
const V1: &str = "podinfo-v1.test.svc.cluster.local:9898";
const V2: &str = "podinfo-v2.test.svc.cluster.local:9898";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_split_sends_90_10_within_three_points_and_counts_per_backend() {
    let (v1, v2) = (
        Backend::start("v1").await.unwrap(),
        Backend::start("v2").await.unwrap(),
    );
    let h = Harness::start(|c| {
        c.endpoints.insert(V1.to_owned(), vec![v1.addr.into()]);
        c.endpoints.insert(V2.to_owned(), vec![v2.addr.into()]);
        c.splits.insert(
            WEB.to_owned(),
            vec![
                format!("{V1}*90").parse::<Weighted>().unwrap(),
                format!("{V2}*10").parse::<Weighted>().unwrap(),
            ],
        );
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut send = h.client(CLIENT_ID, H2).http2().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut seen: HashMap<String, usize> = HashMap::new();
            for _ in 0..500 {
                send.ready().await.unwrap();
                let answer = collect(send.send_request(routed_get(WEB)).await.unwrap()).await;
                assert_eq!(answer.status, 200);
                let body = String::from_utf8_lossy(&answer.body).into_owned();
                *seen
                    .entry(body.split(':').next().unwrap().to_owned())
                    .or_default() += 1;
            }
            seen
        }));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        for (name, n) in task.await.unwrap() {
            *seen.entry(name).or_default() += n;
        }
    }
    let v1_share = seen.get("v1").copied().unwrap_or(0);
    assert!(
        (1740..=1860).contains(&v1_share),
        "90 % ± 3 points of 2,000: {seen:?}"
    );
    let counted = |backend: &str| {
        format!("outbound_split_requests_total{{authority=\"{WEB}\",backend=\"{backend}\"}}")
    };
    assert_eq!(h.metric(&counted(V1)).await, v1_share as u64);
    assert_eq!(h.metric(&counted(V2)).await, 2000 - v1_share as u64);
    let weight = format!("outbound_profile_backend_weight{{authority=\"{WEB}\",backend=\"{V2}\"}}");
    assert_eq!(h.metric(&weight).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_for_one_identity_gives_it_429s_and_none_to_another_caller() {
    const OTHER: &str = "api.east.serviceaccount.identity.linkerd.cluster.local";
    let h = Harness::start(|c| {
        c.rate_limits
            .push(format!("{CLIENT_ID}=50/50").parse().unwrap());
    })
    .await;
    let burst = |identity: &'static str| {
        let client = h.client(identity, H2);
        async move {
            let mut send = client.http2().await.unwrap();
            let mut statuses = Vec::new();
            // Bounded: 200 requests as fast as they go (well over 50 per second here).
            for _ in 0..200 {
                send.ready().await.unwrap();
                let answer = collect(
                    send.send_request(routed_get(support::SERVICE))
                        .await
                        .unwrap(),
                )
                .await;
                statuses.push((
                    answer.status.as_u16(),
                    answer.header("retry-after").map(str::to_owned),
                    answer.header("l5d-proxy-error").map(str::to_owned),
                ));
            }
            statuses
        }
    };
    let limited = burst(CLIENT_ID).await;
    let refused: Vec<_> = limited.iter().filter(|(s, _, _)| *s == 429).collect();
    assert!(
        refused.len() >= 50,
        "200 fast requests against 50/s: {} refused",
        refused.len()
    );
    assert!(
        limited.iter().filter(|(s, _, _)| *s == 200).count() >= 50,
        "the burst passes"
    );
    assert!(
        refused
            .iter()
            .all(|(_, retry, error)| retry.as_deref() == Some("1")
                && error.as_deref() == Some("rate limited"))
    );
    let other = burst(OTHER).await;
    assert!(
        other.iter().all(|(s, _, _)| *s == 200),
        "another caller is not limited"
    );
    let rule = format!("gateway_rate_limited_total{{rule=\"{CLIENT_ID}=50/50\"}}");
    assert_eq!(h.metric(&rule).await, refused.len() as u64);

    // A gRPC caller over the limit gets RESOURCE_EXHAUSTED.
    let mut send = h.client(CLIENT_ID, H2).http2().await.unwrap();
    let mut grpc = None;
    for _ in 0..100 {
        send.ready().await.unwrap();
        let req = http::Request::post("/svc/Method")
            .header("l5d-dst-override", support::SERVICE)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(&[
                0, 0, 0, 0, 0,
            ])))
            .unwrap();
        let answer = collect(send.send_request(req).await.unwrap()).await;
        if let Some(status) = answer.header("grpc-status").filter(|s| *s != "0") {
            grpc = Some(status.to_owned());
            break;
        }
    }
    assert_eq!(grpc.as_deref(), Some("8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_a_json_line_per_request_with_every_field() {
    let path = std::env::temp_dir().join(format!("meshgate-access-it-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let file = path.clone();
    let h = Harness::start(move |c| {
        c.access_log = Some(gateway::access_log::Sink::File(file));
    })
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut send = h.client(CLIENT_ID, H2).http2().await.unwrap();
    let req = http::Request::get("/items?secret=1")
        .header("l5d-dst-override", support::SERVICE)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .body(http_body_util::Full::default())
        .unwrap();
    let ok = collect(send.send_request(req).await.unwrap()).await;
    assert_eq!(ok.status, 200);
    send.ready().await.unwrap();
    let refused = collect(
        send.send_request(routed_get("nowhere.example.com:80"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(refused.status, 404);
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        support::eventually(support::SOON, || async { read().lines().count() == 2 }).await,
        "{}",
        read()
    );
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = &lines[0];
    for field in [
        "time",
        "client_id",
        "source",
        "target",
        "endpoint",
        "upstream_tls",
        "method",
        "path",
        "status",
        "bytes_out",
        "duration_ms",
        "trace_id",
    ] {
        assert!(first.get(field).is_some(), "{field} missing: {first}");
    }
    assert_eq!(first["client_id"], CLIENT_ID);
    assert_eq!(first["target"], support::SERVICE);
    assert_eq!(first["endpoint"], h.backend.addr.to_string());
    assert_eq!(first["path"], "/items", "the query stays out by default");
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes_out"], ok.body.len() as u64);
    assert_eq!(first["trace_id"], trace);
    assert!(first["source"].as_str().unwrap().starts_with("127.0.0.1:"));
    let second = &lines[1];
    assert_eq!(second["status"], 404);
    assert_eq!(second["error"], "bad_gateway_domain");
    assert_eq!(second["blame"], "downstream");
    assert_eq!(h.metric("gateway_access_log_dropped_total").await, 0);
    let _ = std::fs::remove_file(&path);
}
