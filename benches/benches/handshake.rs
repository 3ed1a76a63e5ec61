//! An in-memory mTLS handshake (ECDSA P-256, TLS 1.3, X25519MLKEM768 first), both sides.

#![allow(clippy::expect_used)] // a bench aborts on setup failure, by design

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use identity::testing::{TestCa, in_memory_handshake};
use identity::tls_config;

fn handshake(c: &mut Criterion) {
    let ca = TestCa::new("bench.local");
    let anchors = ca.anchors();
    let alpn = [tls_config::ALPN_H2];
    let server = Arc::new(
        tls_config::server_config(&ca.credentials("gateway.bench.local"), &anchors, &alpn)
            .expect("server config"),
    );
    let client = Arc::new(
        tls_config::client_config(Some(&ca.credentials("client.bench.local")), &anchors, &alpn)
            .expect("client config"),
    );
    c.bench_function("handshake/mtls_tls13_p256", |b| {
        b.iter(|| {
            let server = in_memory_handshake(server.clone(), client.clone(), "gateway.bench.local")
                .expect("handshake");
            assert!(!server.is_handshaking());
        })
    });
}

criterion_group!(benches, handshake);
criterion_main!(benches);
