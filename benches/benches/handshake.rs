//! An in-memory mTLS handshake (ECDSA P-256, TLS 1.3, X25519MLKEM768 first), both sides.

#![allow(clippy::expect_used)] // a bench aborts on setup failure, by design

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use identity::testing::TestCa;
use identity::tls_config;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection};

fn handshake(c: &mut Criterion) {
    let ca = TestCa::new("bench.local");
    let anchors = ca.anchors();
    let server = Arc::new(
        tls_config::server_config(
            &ca.credentials("gateway.bench.local"),
            &anchors,
            &[tls_config::ALPN_H2],
        )
        .expect("server config"),
    );
    let client = Arc::new(
        tls_config::client_config(
            Some(&ca.credentials("client.bench.local")),
            &anchors,
            &[tls_config::ALPN_H2],
        )
        .expect("client config"),
    );
    let name = ServerName::try_from("gateway.bench.local").expect("server name");
    c.bench_function("handshake/mtls_tls13_p256", |b| {
        b.iter(|| {
            let mut client = ClientConnection::new(client.clone(), name.clone()).expect("client");
            let mut server = ServerConnection::new(server.clone()).expect("server");
            let mut buf = Vec::with_capacity(8192);
            while client.is_handshaking() || server.is_handshaking() {
                buf.clear();
                while client.wants_write() {
                    client.write_tls(&mut buf).expect("client write");
                }
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    server.read_tls(&mut rd).expect("server read");
                }
                server.process_new_packets().expect("server process");
                buf.clear();
                while server.wants_write() {
                    server.write_tls(&mut buf).expect("server write");
                }
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    client.read_tls(&mut rd).expect("client read");
                }
                client.process_new_packets().expect("client process");
            }
        })
    });
}

criterion_group!(benches, handshake);
criterion_main!(benches);
