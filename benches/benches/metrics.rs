//! Recording one request in the Linkerd-compatible families (the per-request metrics cost).

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::metrics::{Label, LatencyLabels, Metrics, ResponseLabels, RouteLabels};

fn record(c: &mut Criterion) {
    let metrics = Metrics::new();
    let authority = Label(Arc::from("podinfo.test.svc.cluster.local:9898"));
    let client = Label(Arc::from(
        "web.east.serviceaccount.identity.linkerd.cluster.local",
    ));
    c.bench_function("metrics/record_request", |b| {
        b.iter(|| {
            let route = RouteLabels {
                direction: "outbound",
                authority: authority.clone(),
                tls: "true",
                client_id: client.clone(),
            };
            metrics.requests.get(&route).inc();
            metrics
                .latency
                .get(&LatencyLabels {
                    route: route.clone(),
                    status_code: 200,
                })
                .observe(1.5);
            metrics
                .responses
                .get(&ResponseLabels {
                    route,
                    status_code: 200,
                    classification: "success",
                })
                .inc();
        })
    });
}

criterion_group!(benches, record);
criterion_main!(benches);
