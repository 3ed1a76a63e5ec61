//! Traffic management at the gateway, black-box: weighted splits (configured, and changed in the
//! policy file without a restart), failover to a local service and to another cluster's gateway
//! (with loop protection), per-caller rate limits, the access log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway::cli::client::Http2Sender;
use gateway::cli::demo::controller::{Endpoints, weighted};
use gateway::cli::demo::{Backend, Controller};
use gateway::upstream::split::Weighted;
use identity::testing::TestCa;
use support::{
    CLIENT_ID, GATEWAY_ID, H2, Harness, SOON, collect, eventually, policy_file, replace, routed_get,
};

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
    assert_eq!(second["protocol"], "http");

    // An opaque session gets its line when it ends.
    let echo = Backend::start_tcp_echo().await.unwrap();
    let _ = std::fs::remove_file(&path);
    let h = Harness::start({
        let file = path.clone();
        move |c| {
            c.access_log = Some(gateway::access_log::Sink::File(file));
            c.endpoints.insert(ECHO.to_owned(), vec![echo.addr.into()]);
        }
    })
    .await;
    let (name, port) = ECHO.rsplit_once(':').unwrap();
    let payload = b"opaque bytes both ways";
    let back = support::opaque_echo(
        &h.client(CLIENT_ID, support::L5D),
        name,
        port.parse().unwrap(),
        payload,
    )
    .await;
    assert_eq!(back, payload);
    assert!(
        eventually(SOON, || async { read().lines().count() == 1 }).await,
        "{}",
        read()
    );
    let line: serde_json::Value = serde_json::from_str(read().lines().next().unwrap()).unwrap();
    assert_eq!(line["protocol"], "opaque");
    assert_eq!(line["target"], ECHO);
    assert_eq!(line["client_id"], CLIENT_ID);
    assert_eq!(line["endpoint"], echo.addr.to_string());
    assert_eq!(line["bytes_in"], payload.len() as u64);
    assert_eq!(line["bytes_out"], payload.len() as u64);
    assert!(
        line.get("method").is_none() && line.get("status").is_none(),
        "{line}"
    );
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(h.metric("gateway_access_log_dropped_total").await, 0);
    let _ = std::fs::remove_file(&path);
}

const ECHO: &str = "echo.test.svc.cluster.local:7000";

/// A target the Destination API covers (no static endpoints).
const DISCOVERED: &str = "web.test.svc.cluster.local:80";
const BACKUP: &str = "podinfo-backup.test.svc.cluster.local:9898";
const WEST_ID: &str =
    "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.west.cluster.local";

/// `GET /` to `target` on `send`: the status and which backend answered (its name).
async fn get(send: &mut Http2Sender, target: &str) -> (u16, String) {
    send.ready().await.unwrap();
    let answer = collect(send.send_request(routed_get(target)).await.unwrap()).await;
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    (
        answer.status.as_u16(),
        body.split(':').next().unwrap_or_default().to_owned(),
    )
}

/// A loopback address nothing listens on (connects are refused).
fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_in_the_policy_file_changes_without_a_restart() {
    let (v1, v2) = (
        Backend::start("v1").await.unwrap(),
        Backend::start("v2").await.unwrap(),
    );
    let split = |to: &str| format!("splits:\n  {WEB}:\n    - {{to: {to}, weight: 1}}\n");
    let path = policy_file("split", &split(V1));
    let file = path.clone();
    let h = Harness::start(move |c| {
        c.endpoints.insert(V1.to_owned(), vec![v1.addr.into()]);
        c.endpoints.insert(V2.to_owned(), vec![v2.addr.into()]);
        // The config's split is replaced by the file's for the same target.
        c.splits
            .insert(WEB.to_owned(), vec![format!("{V2}*1").parse().unwrap()]);
        c.policy = Some(file);
        c.credentials_poll_interval = Duration::from_millis(10);
    })
    .await;
    let mut send = h.client(CLIENT_ID, H2).http2().await.unwrap();
    for _ in 0..20 {
        assert_eq!(get(&mut send, WEB).await, (200, "v1".to_owned()));
    }
    replace(&path, &split(V2));
    let moved = eventually(SOON, || {
        let mut send = send.clone();
        async move { get(&mut send, WEB).await == (200, "v2".to_owned()) }
    })
    .await;
    assert!(moved, "the new split is in use without a restart");
    // The same connection: every request after the change goes by the new split.
    for _ in 0..20 {
        assert_eq!(get(&mut send, WEB).await, (200, "v2".to_owned()));
    }
    let weight = |backend: &str| {
        format!("outbound_profile_backend_weight{{authority=\"{WEB}\",backend=\"{backend}\"}}")
    };
    assert_eq!(h.metric(&weight(V2)).await, 1);
    let (_, metrics) = h.admin_get("/metrics").await;
    assert!(
        !metrics.contains(&weight(V1)),
        "the old split's weights are gone:\n{metrics}"
    );
    // A broken file is refused and the split in use stays.
    replace(
        &path,
        &format!("splits:\n  {WEB}:\n    - {{to: nowhere, weight: 1}}\n"),
    );
    assert!(
        eventually(SOON, || async {
            h.metric_or_zero("gateway_policy_reloads_total{result=\"error\"}")
                .await
                >= 1
        })
        .await
    );
    assert_eq!(get(&mut send, WEB).await, (200, "v2".to_owned()));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_local_service_while_the_primary_has_no_endpoints_and_back_after_the_hold_down()
 {
    let controller = Controller::start(None).await.unwrap();
    let (primary, backup) = (
        Backend::start("primary").await.unwrap(),
        Backend::start("backup").await.unwrap(),
    );
    controller.set_endpoints(DISCOVERED, Endpoints::Set(Vec::new()));
    controller.set_endpoints(BACKUP, Endpoints::Set(vec![weighted(backup.addr, 1)]));
    let addr = controller.addr.to_string();
    let h = Harness::start(move |c| {
        c.destination_svc_addr = Some(addr);
        c.failover
            .insert(DISCOVERED.to_owned(), vec![BACKUP.parse().unwrap()]);
        c.failover_hold_down = Duration::from_millis(500);
    })
    .await;
    let mut send = h.client(CLIENT_ID, H2).http2().await.unwrap();
    for _ in 0..20 {
        assert_eq!(get(&mut send, DISCOVERED).await, (200, "backup".to_owned()));
    }
    let event = |event: &str, backend: &str| {
        format!(
            "gateway_failover_events_total{{authority=\"{DISCOVERED}\",event=\"{event}\",backend=\"{backend}\"}}"
        )
    };
    assert_eq!(h.metric(&event("failover", BACKUP)).await, 1);

    // The primary gets an endpoint: it must serve for the whole hold-down before traffic goes
    // back, and the hold-down starts when the gateway first sees it serve, so the next request
    // still goes to the backup.
    controller.set_endpoints(DISCOVERED, Endpoints::Set(vec![weighted(primary.addr, 1)]));
    assert_eq!(get(&mut send, DISCOVERED).await, (200, "backup".to_owned()));
    let back = eventually(SOON, || {
        let mut send = send.clone();
        async move { get(&mut send, DISCOVERED).await == (200, "primary".to_owned()) }
    })
    .await;
    assert!(back, "traffic fails back after the hold-down");
    for _ in 0..20 {
        assert_eq!(
            get(&mut send, DISCOVERED).await,
            (200, "primary".to_owned())
        );
    }
    assert_eq!(h.metric(&event("failback", DISCOVERED)).await, 1);
    assert_eq!(h.metric(&event("failover", BACKUP)).await, 1, "no flapping");
}

/// A gateway named `identity` of `ca` serving `WEB` from `endpoint`, failing over to `fallback`.
async fn cluster_gateway(
    identity: &'static str,
    ca: &Arc<TestCa>,
    endpoint: SocketAddr,
    fallback: Option<String>,
) -> Harness {
    Harness::start_as(identity, ca.clone(), ca.anchors(), move |c| {
        c.endpoints.insert(WEB.to_owned(), vec![endpoint.into()]);
        if let Some(fallback) = fallback {
            c.failover
                .insert(WEB.to_owned(), vec![fallback.parse().unwrap()]);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_another_clusters_gateway_over_mtls_and_a_transport_header() {
    let ca = Arc::new(TestCa::new("test.mesh"));
    let backend = Backend::start("west").await.unwrap();
    let west = cluster_gateway(WEST_ID, &ca, backend.addr, None).await;
    let to_west = format!("gateway={};identity={WEST_ID}", west.gateway.data_addr);
    let east = cluster_gateway(GATEWAY_ID, &ca, dead_addr(), Some(to_west)).await;
    let mut send = east.client(CLIENT_ID, H2).http2().await.unwrap();
    // The first request learns that the primary's only endpoint refuses connections.
    let over = eventually(SOON, || {
        let mut send = send.clone();
        async move { get(&mut send, WEB).await == (200, "west".to_owned()) }
    })
    .await;
    assert!(over, "requests go to the west gateway");
    for _ in 0..20 {
        assert_eq!(get(&mut send, WEB).await, (200, "west".to_owned()));
    }
    let gateway = format!("gateway:{}", west.gateway.data_addr);
    let event = format!(
        "gateway_failover_events_total{{authority=\"{WEB}\",event=\"failover\",backend=\"{gateway}\"}}"
    );
    assert_eq!(east.metric(&event).await, 1);
    // West saw east's gateway as the caller, over a transport-header session naming the target.
    let (_, metrics) = west.admin_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("inbound_http_authz_allow_total")
                && l.contains(&format!("client_id=\"{GATEWAY_ID}\""))
                && !l.ends_with(" 0")),
        "{metrics}"
    );
    let (name, port) = WEB.rsplit_once(':').unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("inbound_tcp_transport_header_connections_total")
                && l.contains("session_protocol=\"http/2\"")
                && l.contains(&format!("target_port=\"{port}\",target_name=\"{name}\""))
                && l.contains(&format!("client_id=\"{GATEWAY_ID}\""))
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_failing_over_to_each_other_never_pass_a_request_back() {
    let ca = Arc::new(TestCa::new("test.mesh"));
    // West first, failing over to an east address reserved now.
    let east_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let east_addr = east_listener.local_addr().unwrap();
    drop(east_listener);
    let to_east = format!("gateway={east_addr};identity={GATEWAY_ID}");
    let west = cluster_gateway(WEST_ID, &ca, dead_addr(), Some(to_east)).await;
    let to_west = format!("gateway={};identity={WEST_ID}", west.gateway.data_addr);
    let east = Harness::start_as(GATEWAY_ID, ca.clone(), ca.anchors(), move |c| {
        c.listen = east_addr;
        c.endpoints.insert(WEB.to_owned(), vec![dead_addr().into()]);
        c.failover
            .insert(WEB.to_owned(), vec![to_west.parse().unwrap()]);
    })
    .await;
    let mut send = east.client(CLIENT_ID, H2).http2().await.unwrap();
    // Bounded: each request fails (both primaries are dead) and none comes back around.
    for _ in 0..30 {
        let (status, _) = get(&mut send, WEB).await;
        assert!(
            (502..=504).contains(&status),
            "a request both sides fail over ends in a 5xx, not a loop: {status}"
        );
    }
    // East failed over to west; west never sent east's requests back to east.
    let (_, east_metrics) = east.admin_get("/metrics").await;
    assert!(
        !east_metrics
            .lines()
            .any(|l| l.starts_with("inbound_http_authz_allow_total")
                && l.contains(&format!("client_id=\"{WEST_ID}\""))
                && !l.ends_with(" 0")),
        "west passed a request back to east:\n{east_metrics}"
    );
    let (_, west_metrics) = west.admin_get("/metrics").await;
    assert!(
        west_metrics
            .lines()
            .any(|l| l.starts_with("inbound_http_authz_allow_total")
                && l.contains(&format!("client_id=\"{GATEWAY_ID}\""))
                && !l.ends_with(" 0")),
        "east failed over to west:\n{west_metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_opaque_sessions_fail_over_to_another_clusters_gateway_too() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ca = Arc::new(TestCa::new("test.mesh"));
    let echo = Backend::start_tcp_echo().await.unwrap();
    let west = Harness::start_as(WEST_ID, ca.clone(), ca.anchors(), move |c| {
        c.endpoints.insert(ECHO.to_owned(), vec![echo.addr.into()]);
    })
    .await;
    let to_west = format!("gateway={};identity={WEST_ID}", west.gateway.data_addr);
    let east = Harness::start_as(GATEWAY_ID, ca.clone(), ca.anchors(), move |c| {
        c.endpoints
            .insert(ECHO.to_owned(), vec![dead_addr().into()]);
        c.failover
            .insert(ECHO.to_owned(), vec![to_west.parse().unwrap()]);
    })
    .await;
    let client = east.client(CLIENT_ID, support::L5D);
    let (name, port) = ECHO.rsplit_once(':').unwrap();
    let header = gateway::transport_header::TransportHeader {
        port: port.parse().unwrap(),
        name: Some(name.to_owned()),
        protocol: gateway::transport_header::SessionProtocol::Opaque,
    };
    // One session: the bytes sent come back (the first session may find the dead primary).
    let session = || {
        let (client, header) = (client.clone(), header.clone());
        async move {
            let Ok(mut stream) = client.connect_with_header(&header).await else {
                return false;
            };
            let payload = b"across the clusters";
            if stream.write_all(payload).await.is_err() || stream.shutdown().await.is_err() {
                return false;
            }
            let mut echoed = Vec::new();
            stream.read_to_end(&mut echoed).await.is_ok() && echoed == payload
        }
    };
    assert!(
        eventually(SOON, session).await,
        "sessions reach the west gateway's echo"
    );
    for _ in 0..5 {
        assert!(session().await, "every new session goes to west");
    }
    let (_, metrics) = west.admin_get("/metrics").await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("inbound_tcp_transport_header_connections_total")
                && l.contains("session_protocol=\"\"")
                && l.contains(&format!("target_name=\"{name}\""))
                && l.contains(&format!("client_id=\"{GATEWAY_ID}\""))
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
}
