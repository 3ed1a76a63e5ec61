//! The transport header: decode (per header session) and encode.

#![allow(clippy::expect_used)] // a bench aborts on setup failure, by design

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::transport_header::{SessionProtocol, TransportHeader, decode, encode};
use std::hint::black_box;

fn transport_header(c: &mut Criterion) {
    let header = TransportHeader {
        port: 9898,
        name: Some("podinfo.test.svc.cluster.local".to_owned()),
        protocol: SessionProtocol::Http2,
    };
    let bytes = encode(&header);
    c.bench_function("transport_header/decode", |b| {
        b.iter(|| decode(black_box(&bytes)).expect("valid").expect("complete"))
    });
    c.bench_function("transport_header/encode", |b| {
        b.iter(|| encode(black_box(&header)))
    });
}

criterion_group!(benches, transport_header);
criterion_main!(benches);
