//! Target parsing and allowlist checks: the per-request pure functions.

#![allow(clippy::expect_used)] // a bench aborts on setup failure, by design

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::proxy::forwarded;
use gateway::target::{Suffixes, Target};
use std::hint::black_box;

fn target(c: &mut Criterion) {
    let suffixes = Suffixes::default();
    c.bench_function("target/parse_service", |b| {
        b.iter(|| Target::parse(black_box("podinfo.test.svc.cluster.local:9898"), &suffixes))
    });
    c.bench_function("target/refuse_outside_suffix", |b| {
        b.iter(|| {
            Target::parse(
                black_box("kubernetes.default.svc.cluster.local.evil.com"),
                &suffixes,
            )
        })
    });
    let value = "by=a.b.c;for=d.e.f;host=x.svc.cluster.local:80;proto=https, by=g.h.i;for=j";
    c.bench_function("forwarded/loop_check", |b| {
        b.iter(|| {
            forwarded::names_by(
                black_box(value.as_bytes()),
                "linkerd-gateway.linkerd-multicluster",
            )
        })
    });
}

criterion_group!(benches, target);
criterion_main!(benches);
