//! Hostile connections before any HTTP: garbage instead of a ClientHello, a ClientHello that
//! never completes, and more connections than `max_connections` — each closed, counted under its
//! reason, and the gateway keeps serving.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{CLIENT_ID, H1, Harness, SERVICE, SOON, eventually, routed_get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the gateway closes the connection (bounded): true when it did, with no bytes or
/// only a TLS alert.
async fn closed_by_gateway(tcp: &mut TcpStream) -> bool {
    let mut got = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await {
        Ok(_) => got.is_empty() || got[0] == 0x15,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_stalled_client_hellos_are_closed_and_counted() {
    let h = Harness::start(|c| c.detect_timeout = Duration::from_millis(300)).await;
    // Pseudo-random bytes, not starting with a TLS record type.
    let mut garbage = Vec::with_capacity(4096);
    let mut x: u32 = 0x2545_f491;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        garbage.push((x & 0x7f) as u8 | 0x40);
    }
    let mut tcp = TcpStream::connect(h.gateway.data_addr).await.unwrap();
    let _ = tcp.write_all(&garbage).await;
    assert!(closed_by_gateway(&mut tcp).await, "garbage is closed");

    // A handshake record header announcing 512 bytes, then nothing: closed at the detect timeout.
    let mut tcp = TcpStream::connect(h.gateway.data_addr).await.unwrap();
    tcp.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ])
    .await
    .unwrap();
    assert!(
        closed_by_gateway(&mut tcp).await,
        "a stalled hello is closed"
    );

    // A record that claims to be a handshake but carries garbage.
    let mut tcp = TcpStream::connect(h.gateway.data_addr).await.unwrap();
    let mut record = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    record.extend_from_slice(&garbage[..64]);
    let _ = tcp.write_all(&record).await;
    assert!(
        closed_by_gateway(&mut tcp).await,
        "a corrupt hello is closed"
    );

    let m = &h.gateway.metrics;
    // Garbage and the corrupt record are both "not TLS"; the stalled hello a timeout.
    assert!(eventually(SOON, || async { m.refused_count("not_tls") == 2 }).await);
    assert!(eventually(SOON, || async { m.refused_count("timeout") == 1 }).await);
    // And the gateway serves a real caller.
    let mut send = h.client(CLIENT_ID, H1).http1().await.unwrap();
    assert_eq!(status(&mut send).await, 200);
}

/// One routed request on an open HTTP/1 connection, once it is ready for the next.
async fn status(send: &mut gateway::cli::client::Http1Sender) -> u16 {
    send.ready().await.unwrap();
    send.send_request(routed_get(SERVICE))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_are_refused_counted_and_recover() {
    let h = Harness::start(|c| c.max_connections = 2).await;
    let client = h.client(CLIENT_ID, H1);
    let mut first = client.http1().await.unwrap();
    let mut second = client.http1().await.unwrap();
    assert_eq!(status(&mut first).await, 200);
    assert_eq!(status(&mut second).await, 200);

    // The third is closed at once, before a handshake.
    let mut tcp = TcpStream::connect(h.gateway.data_addr).await.unwrap();
    assert!(closed_by_gateway(&mut tcp).await);
    let m = &h.gateway.metrics;
    assert!(eventually(SOON, || async { m.refused_count("max_connections") == 1 }).await);
    // Open connections are unaffected.
    assert_eq!(status(&mut first).await, 200);

    // Closing one frees its slot.
    drop(second);
    let recovered = eventually(SOON, || {
        let client = client.clone();
        async move {
            match client.http1().await {
                Ok(mut send) => send
                    .send_request(routed_get(SERVICE))
                    .await
                    .is_ok_and(|r| r.status() == 200),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(recovered, "a new caller is served once a slot is free");
}
