//! Recording one request in the Linkerd-compatible families (the per-request metrics cost): the
//! steady state of a session (cached handles) and a first request on a route (label lookups).

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::metrics::{Allowed, DstLabels, Label, Metrics, RouteCache};

fn record(c: &mut Criterion) {
    let metrics = Metrics::new();
    let authority = Label(Arc::from("podinfo.test.svc.cluster.local:9898"));
    let client = Label(Arc::from(
        "web.east.serviceaccount.identity.linkerd.cluster.local",
    ));
    let cache = RouteCache::default();
    let allowed = Allowed::default();
    let dst = DstLabels::default();
    let service = (&authority, &dst);
    c.bench_function("metrics/record_request_cached", |b| {
        b.iter(|| metrics.record_response(&cache, service, &client, Some(&allowed), 200, 1.5))
    });
    c.bench_function("metrics/record_request_lookup", |b| {
        b.iter(|| {
            metrics.record_response(
                &RouteCache::default(),
                service,
                &client,
                Some(&allowed),
                200,
                1.5,
            )
        })
    });
}

criterion_group!(benches, record);
criterion_main!(benches);
