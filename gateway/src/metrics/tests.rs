use super::*;

#[test]
fn families_have_linkerd_names() {
    let metrics = Arc::new(Metrics::new());
    let route = RouteLabels {
        direction: "outbound",
        authority: "web.ns.svc.cluster.local:80".into(),
        tls: "true",
        client_id: "web.ns.serviceaccount.identity.linkerd.cluster.local".into(),
        dst: DstLabels::default(),
    };
    metrics.requests.get(&route).inc();
    metrics
        .latency
        .get(&LatencyLabels {
            route: route.clone(),
            status_code: 200,
        })
        .observe(3.0);
    let record = metrics.open_connection(TcpLabels::inbound("c"));
    record.read.inc_by(10);
    let text = metrics.encode();
    for needle in [
        "request_total{direction=\"outbound\",authority=\"web.ns.svc.cluster.local:80\",tls=\"true\",client_id=\"web.ns.serviceaccount.identity.linkerd.cluster.local\"} 1",
        "response_latency_ms_bucket{",
        "le=\"50000.0\"",
        "tcp_open_total{direction=\"inbound\",peer=\"src\"",
        "tcp_open_connections{",
        "tcp_read_bytes_total{",
        "gateway_handshakes_refused_total{reason=\"unknown_ca\"} 0",
        "gateway_policy_reloads_total{result=\"error\"} 0",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    drop(record);
    assert!(metrics.encode().contains("tcp_close_total{"));
}

#[test]
fn idle_label_sets_are_evicted_but_open_connections_stay() {
    let metrics = Arc::new(Metrics::new());
    let route = RouteLabels {
        direction: "outbound",
        authority: "a.svc.cluster.local:80".into(),
        tls: "true",
        client_id: "c".into(),
        dst: DstLabels::default(),
    };
    metrics.requests.get(&route).inc();
    let open = metrics.open_connection(TcpLabels::inbound("still-open"));
    drop(metrics.open_connection(TcpLabels::inbound("gone")));
    assert!(
        metrics.evict_idle(Duration::from_secs(600)) == 0,
        "nothing is idle yet"
    );
    let removed = metrics.evict_unused_since(u64::MAX);
    assert!(removed > 0);
    let text = metrics.encode();
    assert!(!text.contains("a.svc.cluster.local"), "{text}");
    assert!(!text.contains("client_id=\"gone\""), "{text}");
    assert!(text.contains("tcp_open_connections{direction=\"inbound\",peer=\"src\",tls=\"true\",client_id=\"still-open\""), "{text}");
    assert_eq!(metrics.requests.len(), 0);
    drop(open);
}

#[test]
fn cached_route_handles_count_like_lookups() {
    let metrics = Metrics::new();
    let cache = RouteCache::default();
    let (authority, client) = (Label::from("a.svc.cluster.local:80"), Label::from("c"));
    let none = DstLabels::default();
    for _ in 0..3 {
        metrics.record_response(
            &cache,
            (&authority, &none),
            &client,
            Some(&Allowed::default()),
            200,
            1.0,
        );
    }
    metrics.record_response(
        &cache,
        (&authority, &none),
        &client,
        Some(&Allowed::default()),
        503,
        1.0,
    );
    let other = Label::from("b.svc.cluster.local:80");
    let allowed = Some(&Allowed::default());
    metrics.record_response(&cache, (&other, &none), &client, allowed, 200, 1.0);
    // The same route answered by a service with discovery labels is a series of its own.
    let dst = DstLabels::of(&std::collections::HashMap::from([
        ("namespace".to_owned(), "test".to_owned()),
        ("service".to_owned(), "b".to_owned()),
        ("bad-name".to_owned(), "x".to_owned()),
    ]));
    metrics.record_response(&cache, (&other, &dst), &client, allowed, 200, 1.0);
    let text = metrics.encode();
    let route =
        "direction=\"outbound\",authority=\"a.svc.cluster.local:80\",tls=\"true\",client_id=\"c\"";
    assert!(
        text.contains(&format!("request_total{{{route}}} 4")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "response_total{{{route},status_code=\"200\",classification=\"success\"}} 3"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "response_total{{{route},status_code=\"503\",classification=\"failure\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "response_latency_ms_count{{{route},status_code=\"200\"}} 3"
        )),
        "{text}"
    );
    assert!(
        text.contains("authority=\"b.svc.cluster.local:80\",tls=\"true\",client_id=\"c\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("request_total{direction=\"outbound\",authority=\"b.svc.cluster.local:80\",tls=\"true\",client_id=\"c\",dst_bad_name=\"x\",dst_namespace=\"test\",dst_service=\"b\"} 1"),
        "{text}"
    );
}

#[test]
fn refusal_reports_first_occurrence_once() {
    let metrics = Metrics::new();
    assert!(metrics.refuse(Refused::Handshake(Refusal::Expired)));
    assert!(!metrics.refuse(Refused::Handshake(Refusal::Expired)));
    assert_eq!(metrics.refused_count("expired"), 2);
}

#[test]
fn byte_meter_carries_handshake_bytes_into_bound_counters() {
    let metrics = Arc::new(Metrics::new());
    let meter = ByteMeter::default();
    meter.add_read(100);
    meter.add_write(7);
    let record = metrics.open_connection(TcpLabels::inbound("c"));
    meter.bind(&record);
    meter.add_read(1);
    assert_eq!(record.read.get(), 101);
    assert_eq!(record.write.get(), 7);
}
