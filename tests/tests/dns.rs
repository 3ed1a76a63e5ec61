//! DNS discovery, black-box, against a real DNS server on 127.0.0.1 (a small UDP responder
//! that answers A queries from a table): TTL caching and background refresh, NXDOMAIN → 503 at
//! once, and several A records all used.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gateway::cli::demo::Backend;
use http_body_util::Full;
use support::*;
use tokio::net::UdpSocket;

/// IPv4 addresses and TTL seconds of one name.
type Record = (Vec<Ipv4Addr>, u32);

/// Name (lower case, no trailing dot) → record; A queries counted.
#[derive(Clone, Default)]
struct Zone {
    records: Arc<Mutex<HashMap<String, Record>>>,
    queries: Arc<Mutex<HashMap<String, usize>>>,
}

impl Zone {
    fn set(&self, name: &str, ips: &[Ipv4Addr], ttl: u32) {
        self.records
            .lock()
            .unwrap()
            .insert(name.to_owned(), (ips.to_vec(), ttl));
    }

    fn queries(&self, name: &str) -> usize {
        self.queries.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    /// Serves the zone on 127.0.0.1:0 over UDP.
    async fn serve(&self) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = self.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if let Some(reply) = zone.answer(&buf[..n]) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        addr
    }

    /// A DNS reply (RFC 1035 §4.1) to one query: A records from the table, NOERROR with no
    /// answers for other types of a known name, NXDOMAIN for unknown names.
    fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        let mut pos = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*query.get(pos)?);
            pos += 1;
            if len == 0 {
                break;
            }
            labels.push(String::from_utf8_lossy(query.get(pos..pos + len)?).to_ascii_lowercase());
            pos += len;
        }
        let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
        let question_end = pos + 4;
        let name = labels.join(".");
        let record = self.records.lock().unwrap().get(&name).cloned();
        let (rcode, answers) = match (&record, qtype) {
            (None, _) => (3u8, Vec::new()),
            (Some((ips, ttl)), 1) => {
                *self.queries.lock().unwrap().entry(name).or_default() += 1;
                (0, ips.iter().map(|ip| (*ip, *ttl)).collect())
            }
            (Some(_), _) => (0, Vec::new()),
        };
        let mut reply = Vec::with_capacity(512);
        reply.extend_from_slice(&query[0..2]); // id
        reply.extend_from_slice(&[0x81, 0x80 | rcode]); // QR, RD, RA, rcode
        reply.extend_from_slice(&1u16.to_be_bytes()); // questions
        reply.extend_from_slice(&u16::try_from(answers.len()).unwrap().to_be_bytes());
        reply.extend_from_slice(&[0, 0, 0, 0]); // authority, additional
        reply.extend_from_slice(&query[12..question_end]);
        for (ip, ttl) in answers {
            reply.extend_from_slice(&[0xc0, 12]); // the name, by pointer to the question
            reply.extend_from_slice(&[0, 1, 0, 1]); // A, IN
            reply.extend_from_slice(&ttl.to_be_bytes());
            reply.extend_from_slice(&[0, 4]);
            reply.extend_from_slice(&ip.octets());
        }
        Some(reply)
    }
}

/// A backend on its own loopback address (127.0.0.x), all on one port: one DNS name can then
/// list several of them as A records.
async fn backend_on(ip: Ipv4Addr, port: u16, name: &'static str) -> Backend {
    Backend::start_on(SocketAddr::from((ip, port)), name)
        .await
        .unwrap()
}

async fn free_port() -> u16 {
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    probe.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_for_their_ttl_then_refreshed_in_the_background() {
    let port = free_port().await;
    let first = backend_on(Ipv4Addr::new(127, 0, 0, 11), port, "first").await;
    let second = backend_on(Ipv4Addr::new(127, 0, 0, 12), port, "second").await;
    let zone = Zone::default();
    let name = "web.dns.svc.cluster.local";
    zone.set(name, &[Ipv4Addr::new(127, 0, 0, 11)], 1);
    let server = zone.serve().await;
    let h = Harness::start(move |c| {
        c.dns_servers = vec![server];
        c.dns_min_ttl = Duration::from_millis(100);
    })
    .await;
    let target = format!("{name}:{port}");
    let client = h.client(CLIENT_ID, H1);
    for _ in 0..5 {
        // A new connection each time: every request resolves.
        let answer = send_h1(&client, routed_get(&target)).await;
        assert_eq!(answer.status, 200);
        assert!(String::from_utf8_lossy(&answer.body).starts_with("first"));
    }
    assert_eq!(zone.queries(name), 1, "cached within the TTL");

    // The record changes; once the 1 s TTL is over, a background refresh picks it up while
    // requests keep being answered.
    zone.set(name, &[Ipv4Addr::new(127, 0, 0, 12)], 60);
    assert!(
        eventually(Duration::from_secs(10), || async {
            let answer = send_h1(&client, routed_get(&target)).await;
            assert_eq!(answer.status, 200);
            String::from_utf8_lossy(&answer.body).starts_with("second")
        })
        .await,
        "the new record was never used"
    );
    assert_eq!(zone.queries(name), 2);
    assert!(first.connections() >= 1 && second.connections() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_is_503_at_once() {
    let zone = Zone::default();
    let server = zone.serve().await;
    let h = Harness::start(move |c| c.dns_servers = vec![server]).await;
    let answer = send_h1(
        &h.client(CLIENT_ID, H1),
        routed_get("missing.dns.svc.cluster.local:80"),
    )
    .await;
    assert_eq!(answer.status, 503);
    let reason = answer.header("l5d-proxy-error").unwrap();
    assert!(reason.contains("NXDOMAIN"), "{reason}");
}

/// A backend on `ip:port` that answers `name` after `delay` (a slow pod), counting requests.
async fn pod(ip: Ipv4Addr, port: u16, delay: Duration) -> Arc<AtomicUsize> {
    let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let counter = counter.clone();
                    async move {
                        tokio::time::sleep(delay).await;
                        counter.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            Full::<Bytes>::default(),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    served
}

/// Sends `total` requests to `target`, `concurrency` at a time; returns the failures.
async fn load(h: &Harness, target: &str, total: usize, concurrency: usize) -> usize {
    let client = Arc::new(h.client(CLIENT_ID, H1));
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (client, target) = (client.clone(), target.to_owned());
        let share = total / concurrency + usize::from(w < total % concurrency);
        workers.push(tokio::spawn(async move {
            let mut send = client.http1().await.unwrap();
            let mut failed = 0;
            for _ in 0..share {
                if send.ready().await.is_err() {
                    send = client.http1().await.unwrap();
                }
                match send.send_request(routed_get(&target)).await {
                    Ok(r) if r.status() == 200 => {
                        let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                    }
                    _ => failed += 1,
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for w in workers {
        failed += w.await.unwrap();
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_a_record_is_an_endpoint_under_concurrent_load() {
    let port = free_port().await;
    let ips = [21, 22, 23].map(|last| Ipv4Addr::new(127, 0, 0, last));
    let mut pods = Vec::new();
    for ip in ips {
        pods.push(pod(ip, port, Duration::from_millis(20)).await);
    }
    let zone = Zone::default();
    let name = "pods.dns.svc.cluster.local";
    zone.set(name, &ips, 60);
    let server = zone.serve().await;
    let h = Harness::start(move |c| c.dns_servers = vec![server]).await;
    assert_eq!(load(&h, &format!("{name}:{port}"), 60, 6).await, 0);
    for (ip, served) in ips.iter().zip(&pods) {
        assert!(served.load(Ordering::Relaxed) > 0, "{ip} served nothing");
    }
    assert_eq!(
        h.metric(&format!(
            "outbound_endpoints{{authority=\"{name}:{port}\"}}"
        ))
        .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_sends_most_requests_to_the_faster_endpoint() {
    let port = free_port().await;
    let (fast_ip, slow_ip) = (Ipv4Addr::new(127, 0, 0, 31), Ipv4Addr::new(127, 0, 0, 32));
    let fast = pod(fast_ip, port, Duration::ZERO).await;
    let slow = pod(slow_ip, port, Duration::from_millis(40)).await;
    let zone = Zone::default();
    let name = "mixed.dns.svc.cluster.local";
    zone.set(name, &[fast_ip, slow_ip], 60);
    let server = zone.serve().await;
    let h = Harness::start(move |c| c.dns_servers = vec![server]).await;
    assert_eq!(load(&h, &format!("{name}:{port}"), 100, 4).await, 0);
    let (fast, slow) = (fast.load(Ordering::Relaxed), slow.load(Ordering::Relaxed));
    assert!(fast >= 3 * slow, "fast {fast}, slow {slow}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_ejected_and_no_request_fails() {
    let port = free_port().await;
    let live = [41, 42].map(|last| Ipv4Addr::new(127, 0, 0, last));
    let dead = Ipv4Addr::new(127, 0, 0, 43); // nothing listens there
    let mut pods = Vec::new();
    for ip in live {
        pods.push(pod(ip, port, Duration::ZERO).await);
    }
    let zone = Zone::default();
    let name = "flaky.dns.svc.cluster.local";
    zone.set(name, &[live[0], dead, live[1]], 60);
    let server = zone.serve().await;
    let h = Harness::start(move |c| c.dns_servers = vec![server]).await;
    let target = format!("{name}:{port}");
    assert_eq!(
        load(&h, &target, 40, 4).await,
        0,
        "a failed connect is retried elsewhere"
    );
    let ejections = h
        .metric(&format!(
            "outbound_endpoint_ejections_total{{authority=\"{target}\"}}"
        ))
        .await;
    assert!(ejections >= 1, "the dead endpoint was never ejected");
    let refused = h
        .metric(&format!(
            "outbound_connect_errors_total{{authority=\"{target}\",reason=\"refused\"}}"
        ))
        .await;
    assert_eq!(refused, ejections, "every refused connect ejects");
    let served: usize = pods.iter().map(|p| p.load(Ordering::Relaxed)).sum();
    assert_eq!(served, 40);
}
