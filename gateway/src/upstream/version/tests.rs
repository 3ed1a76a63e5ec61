use super::*;
use proptest::prelude::*;

fn needs(version: Version) -> Needs {
    Needs {
        version,
        upgrade: false,
        trailers: false,
    }
}

fn choose_now(
    needs: Needs,
    preference: Preference,
    hint: Option<Hint>,
    learned: &Learned,
) -> Result<(Wire, bool), Untranslatable> {
    choose(needs, preference, hint, false, learned, Instant::now())
}

#[test]
fn the_request_version_is_tried_and_probed_until_the_endpoint_answered_in_it() {
    let learned = Learned::default();
    assert_eq!(
        choose_now(needs(Version::HTTP_11), Preference::Auto, None, &learned),
        Ok((Wire::Http1, true))
    );
    assert_eq!(
        choose_now(needs(Version::HTTP_2), Preference::Auto, None, &learned),
        Ok((Wire::Http2, true))
    );
    learned.answered(Wire::Http1);
    assert_eq!(
        choose_now(needs(Version::HTTP_11), Preference::Auto, None, &learned),
        Ok((Wire::Http1, false))
    );
    assert_eq!(
        choose_now(needs(Version::HTTP_2), Preference::Auto, None, &learned),
        Ok((Wire::Http2, true))
    );
}

#[test]
fn hints_and_overrides_decide_and_never_probe() {
    let learned = Learned::default();
    for (preference, hint, version, wire) in [
        (
            Preference::Auto,
            Some(Hint::H2),
            Version::HTTP_11,
            Wire::Http2,
        ),
        (
            Preference::Auto,
            Some(Hint::Http1),
            Version::HTTP_2,
            Wire::Http1,
        ),
        (
            Preference::Http1,
            Some(Hint::H2),
            Version::HTTP_2,
            Wire::Http1,
        ),
        (Preference::Http2, None, Version::HTTP_11, Wire::Http2),
    ] {
        assert_eq!(
            choose_now(needs(version), preference, hint, &learned),
            Ok((wire, false))
        );
    }
    // A meshed pod's proxy speaks both: no probe, the request's version.
    assert_eq!(
        choose(
            needs(Version::HTTP_2),
            Preference::Auto,
            None,
            true,
            &learned,
            Instant::now()
        ),
        Ok((Wire::Http2, false))
    );
}

#[test]
fn upgrades_stay_http1_and_grpc_is_never_sent_as_http1() {
    let learned = Learned::default();
    let upgrade = Needs {
        upgrade: true,
        ..needs(Version::HTTP_11)
    };
    assert_eq!(
        choose_now(upgrade, Preference::Http2, Some(Hint::H2), &learned),
        Ok((Wire::Http1, false))
    );
    let grpc = Needs {
        trailers: true,
        ..needs(Version::HTTP_2)
    };
    assert!(choose_now(grpc, Preference::Auto, Some(Hint::Http1), &learned).is_err());
    learned.speaks_only(Wire::Http1, Instant::now());
    let e = choose_now(grpc, Preference::Auto, None, &learned).unwrap_err();
    assert!(e.0.contains("HTTP/2"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_learned_version_is_used_until_it_expires_then_probed_again() {
    let learned = Learned::default();
    learned.answered(Wire::Http1);
    learned.speaks_only(Wire::Http1, Instant::now());
    assert_eq!(
        choose_now(needs(Version::HTTP_2), Preference::Auto, None, &learned),
        Ok((Wire::Http1, false))
    );
    tokio::time::advance(LEARNED_FOR - Duration::from_secs(1)).await;
    assert_eq!(learned.only(Instant::now()), Some(Wire::Http1));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(learned.only(Instant::now()), None);
    // Forgotten entirely: both versions are probed again.
    assert_eq!(
        choose_now(needs(Version::HTTP_2), Preference::Auto, None, &learned),
        Ok((Wire::Http2, true))
    );
    assert_eq!(
        choose_now(needs(Version::HTTP_11), Preference::Auto, None, &learned),
        Ok((Wire::Http1, true))
    );
}

#[test]
fn first_bytes_tell_http1_from_http2() {
    let settings = [0, 0, 6, 4, 0, 0, 0, 0, 0];
    assert_eq!(First::of(&settings, false), First::Http2);
    assert_eq!(First::of(b"HTTP/1.1 400 Bad Request", false), First::Http1);
    assert_eq!(First::of(b"", true), First::Closed);
    assert_eq!(First::of(b"SSH-2.0-x", false), First::Other);
    // A frame on a stream other than 0, or not SETTINGS, is not a server preface.
    assert_eq!(First::of(&[0, 0, 6, 4, 0, 0, 0, 0, 1], false), First::Other);
    assert_eq!(First::of(&[0, 0, 6, 1, 0, 0, 0, 0, 0], false), First::Other);
    assert_eq!(fallback(Wire::Http2, First::Http1), Some(Wire::Http1));
    assert_eq!(fallback(Wire::Http2, First::Closed), Some(Wire::Http1));
    // Python's http.server answers the preface HTTP/0.9-style: an error page, no status line.
    assert_eq!(fallback(Wire::Http2, First::Other), Some(Wire::Http1));
    assert_eq!(fallback(Wire::Http1, First::Other), None);
    assert_eq!(fallback(Wire::Http1, First::Http2), Some(Wire::Http2));
    assert_eq!(
        fallback(Wire::Http1, First::Closed),
        None,
        "an HTTP/1 server may close"
    );
    assert_eq!(fallback(Wire::Http2, First::Http2), None);
}

#[tokio::test]
async fn sniff_reports_the_first_bytes_even_when_they_come_one_by_one() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut server, client) = tokio::io::duplex(64);
    let (mut sniff, sniffed) = Sniff::new(client, true);
    let sniffed = sniffed.unwrap();
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        sniff.read_to_end(&mut all).await.unwrap();
        all
    });
    for byte in b"HTTP/1.1 505 x" {
        server.write_all(&[*byte]).await.unwrap();
    }
    assert_eq!(
        sniffed.wait(Duration::from_secs(10)).await,
        Some(First::Http1)
    );
    drop(server);
    assert_eq!(
        reader.await.unwrap(),
        b"HTTP/1.1 505 x",
        "bytes pass through untouched"
    );
}

fn parts_of(version: Version, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().version(version).uri("/p?q=1");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn names() -> (http::uri::Authority, HeaderValue) {
    (
        http::uri::Authority::from_static("web.ns.svc.cluster.local:8080"),
        HeaderValue::from_static("web.ns.svc.cluster.local:8080"),
    )
}

#[test]
fn http1_to_a_meshed_h2_pod_carries_orig_proto_and_an_absolute_uri() {
    let (authority, host) = names();
    let mut parts = parts_of(Version::HTTP_11, &[("host", "caller-chose-this")]);
    shape(&mut parts, Wire::Http2, &authority, &host, true).unwrap();
    assert_eq!(parts.version, Version::HTTP_2);
    assert_eq!(parts.uri, "http://web.ns.svc.cluster.local:8080/p?q=1");
    assert!(parts.headers.get(HOST).is_none());
    assert_eq!(parts.headers.get(&L5D_ORIG_PROTO).unwrap(), "HTTP/1.1");
    // To a plain h2c service: no orig-proto (it is not a proxy).
    let mut parts = parts_of(Version::HTTP_10, &[]);
    shape(&mut parts, Wire::Http2, &authority, &host, false).unwrap();
    assert!(parts.headers.get(&L5D_ORIG_PROTO).is_none());
}

#[test]
fn http2_to_an_http1_service_gets_host_and_origin_form() {
    let (authority, host) = names();
    let mut parts = http::Request::builder()
        .version(Version::HTTP_2)
        .uri("https://web.ns.svc.cluster.local:8080/p?q=1")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    shape(&mut parts, Wire::Http1, &authority, &host, false).unwrap();
    assert_eq!(parts.version, Version::HTTP_11);
    assert_eq!(parts.uri, "/p?q=1");
    assert_eq!(
        parts.headers.get(HOST).unwrap(),
        "web.ns.svc.cluster.local:8080"
    );
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("host".to_owned()),
        Just("te".to_owned()),
        Just("l5d-orig-proto".to_owned()),
        Just("x-custom".to_owned()),
        Just("content-type".to_owned()),
        "[a-z][a-z0-9-]{0,12}",
    ]
}

proptest! {
    /// However a server's first bytes are split into reads, they are classified as the whole.
    #[test]
    fn the_first_bytes_classify_alike_whatever_the_reads(
        bytes in prop_oneof![
            Just(b"HTTP/1.1 400 Bad Request\r\n".to_vec()),
            Just(vec![0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3]),
            proptest::collection::vec(any::<u8>(), 0..16),
        ],
        cuts in proptest::collection::vec(0usize..16, 0..4),
    ) {
        let mut head = Head::default();
        let mut at = 0;
        let mut decided = None;
        let mut cuts = cuts;
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([bytes.len()]) {
            let cut = cut.min(bytes.len()).max(at);
            if decided.is_none() {
                decided = head.push(&bytes[at..cut], false);
            }
            at = cut;
        }
        let decided = decided.unwrap_or_else(|| head.end());
        let whole = &bytes[..bytes.len().min(9)];
        let expected = if whole.starts_with(b"HTTP/") || whole.len() == 9 {
            First::of(whole, false)
        } else {
            First::of(whole, true)
        };
        prop_assert_eq!(decided, expected);
    }

    /// Whatever the caller sent (hop-by-hop headers already removed by the HTTP layer), the
    /// rewritten request is well-formed for its version: HTTP/2 has the target as `:authority`
    /// and no `Host`; HTTP/1 has `Host` = the target, origin form, no `l5d-orig-proto`; other
    /// headers pass unchanged.
    #[test]
    fn the_rewrite_is_well_formed_for_either_version(
        from_h2 in any::<bool>(),
        to_h2 in any::<bool>(),
        meshed in any::<bool>(),
        headers in proptest::collection::vec((header_name(), "[ -~]{0,16}"), 0..12),
    ) {
        let (authority, host) = names();
        let version = if from_h2 { Version::HTTP_2 } else { Version::HTTP_11 };
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let mut parts = parts_of(version, &pairs);
        let before = parts.headers.clone();
        let wire = if to_h2 { Wire::Http2 } else { Wire::Http1 };
        shape(&mut parts, wire, &authority, &host, meshed).unwrap();
        let untouched = |name: &http::HeaderName| {
            *name != HOST && *name != L5D_ORIG_PROTO
        };
        for name in before.keys().filter(|n| untouched(n)) {
            prop_assert_eq!(before.get_all(name).iter().collect::<Vec<_>>(), parts.headers.get_all(name).iter().collect::<Vec<_>>());
        }
        prop_assert_eq!(parts.uri.path_and_query().map(|p| p.as_str()), Some("/p?q=1"));
        if to_h2 {
            prop_assert_eq!(parts.version, Version::HTTP_2);
            prop_assert_eq!(parts.uri.authority(), Some(&authority));
            prop_assert!(parts.headers.get(HOST).is_none());
            let orig = parts.headers.get(&L5D_ORIG_PROTO);
            match (from_h2, meshed) {
                (false, true) => prop_assert_eq!(orig.map(|v| v.as_bytes()), Some(&b"HTTP/1.1"[..])),
                (false, false) => prop_assert!(orig.is_none()),
                (true, _) => {}
            }
        } else {
            prop_assert_eq!(parts.version, Version::HTTP_11);
            prop_assert!(parts.uri.authority().is_none());
            prop_assert_eq!(parts.headers.get_all(HOST).iter().collect::<Vec<_>>(), vec![&host]);
            prop_assert!(parts.headers.get(&L5D_ORIG_PROTO).is_none());
        }
    }
}

#[tokio::test]
async fn a_stream_dropped_before_any_byte_counts_as_closed() {
    let (_server, client) = tokio::io::duplex(64);
    let (sniff, sniffed) = Sniff::new(client, true);
    let sniffed = sniffed.unwrap();
    drop(sniff);
    assert_eq!(
        sniffed.wait(Duration::from_secs(10)).await,
        Some(First::Closed)
    );
}
