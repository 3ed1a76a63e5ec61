//! What an idle connection costs the real binary: a memory budget per connection (as ztunnel
//! asserts the sizes of its per-connection state).
//!
//! Each connection makes one HTTP/1.1 request, as a real caller leaves it, so the buffers a
//! request needs have been touched, then idles. The gateway's resident memory may grow by at most
//! the budget per connection. The budget is for this test's build (debug: bigger futures than a
//! release build); the release binary's figure is workload F of `benches/RESULTS.md`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway::cli::client::{self, Http1Sender, MtlsClient};
use gateway::testing::eventually;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use identity::tls_config::ALPN_HTTP1;
use support::process::{SERVICE, admin_get, services, start_gateway, trusted_client};

/// KiB of resident memory one idle mTLS HTTP/1.1 connection may cost, after its request.
const BUDGET_KIB: u64 = 26;
/// Connections held open, in batches: enough that allocator granularity averages out.
const BATCH: usize = 60;
const BATCHES: usize = 10;

/// The process's resident set, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `count` connections, each after one answered request, still open.
async fn open(client: &MtlsClient, count: usize) -> Vec<Http1Sender> {
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let (client, limit) = (client.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            let mut send = client::http1_on(client.connect().await.unwrap())
                .await
                .unwrap();
            let request = Request::get("http://gateway/")
                .header("l5d-dst-override", SERVICE)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = send.send_request(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.into_body().collect().await.unwrap();
            send
        });
    }
    tasks.join_all().await
}

/// `gateway_http1_parked_connections` as scraped.
async fn parked(admin: std::net::SocketAddr) -> Option<usize> {
    let (_, metrics) = admin_get(admin, "/metrics").await?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("gateway_http1_parked_connections "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_after_a_request_stays_within_its_memory_budget() {
    let (_dir, pki, backend, echo) = services("memory").await;
    // Idle keep-alive connections live `header_read_timeout`: longer than the test.
    let env = [("MESHGATE_HEADER_READ_TIMEOUT", "300s")];
    let gw = start_gateway(&pki, backend.addr, echo.addr, &env, None);
    let pid = gw.child.id();
    let client = trusted_client(&pki, gw.data, &[ALPN_HTTP1]);
    // First connections pay for what is made once: upstream connections, metric label sets,
    // the allocator's first pages.
    drop(open(&client, BATCH).await);
    let before = rss_kib(pid);
    // Connections arrive over time, as in production: each batch has parked (given back its
    // HTTP buffers) before the next arrives and reuses that memory.
    let mut held = Vec::new();
    for _ in 0..BATCHES {
        held.extend(open(&client, BATCH).await);
        let count = held.len();
        let all_parked = eventually(Duration::from_secs(20), || async move {
            parked(gw.admin).await == Some(count)
        })
        .await;
        assert!(all_parked, "{count} idle connections parked");
    }
    let after = rss_kib(pid);
    let per_connection = after.saturating_sub(before) as f64 / held.len() as f64;
    eprintln!(
        "{} idle connections: {before} KiB -> {after} KiB, {per_connection:.1} KiB each",
        held.len()
    );
    assert!(
        per_connection <= BUDGET_KIB as f64,
        "an idle connection costs {per_connection:.1} KiB, over its budget of {BUDGET_KIB} KiB"
    );
    // Parked connections still serve: every one answers a second request.
    for mut send in held {
        let request = Request::get("http://gateway/")
            .header("l5d-dst-override", SERVICE)
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(
            send.send_request(request).await.unwrap().status(),
            StatusCode::OK
        );
    }
}
