//! Header rewriting between the two hops: hop-by-hop headers (RFC 9110 §7.6.1), `Upgrade`,
//! `l5d-orig-proto` (spec §6.2), gRPC detection and header-section sizes.

use http::header::{CONNECTION, CONTENT_TYPE, HeaderName, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Version};

use super::L5D_ORIG_PROTO;

/// Hop-by-hop headers (RFC 9110 §7.6.1) never forwarded; `te` is handled apart.
static HOP_BY_HOP: [HeaderName; 5] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TRANSFER_ENCODING,
    UPGRADE,
    CONNECTION,
];

/// Removes hop-by-hop headers, the ones the `Connection` header names, and every `te` except
/// `trailers` (which gRPC needs end to end).
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (no hashing) finds what is there; most messages carry at most
    // `connection: keep-alive`, so the removals below touch only names that are present.
    let mut present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name))
        .cloned()
        .collect();
    let has_te = headers.contains_key(TE);
    if present.is_empty() && !has_te {
        return;
    }
    present.extend(
        headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .filter(|name| !HOP_BY_HOP.contains(name)),
    );
    for name in &present {
        headers.remove(name);
    }
    if !has_te {
        return;
    }
    let keep_te = headers.get_all(TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    headers.remove(TE);
    if keep_te {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Upgrade` with `Connection: upgrade`).
pub(super) fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    asks.then(|| headers.get(UPGRADE).cloned()).flatten()
}

/// What the HTTP parsers accept: 4× the configured limit (at least 256 KiB), so that the
/// gateway's own check sees oversized headers and answers 431 with `l5d-proxy-error`; beyond
/// this the parser answers a bare 431 itself, bounding the memory one request can take.
pub(super) fn parser_limit(max_header_list_size: usize) -> usize {
    max_header_list_size.saturating_mul(4).max(256 * 1024)
}

/// The size of a header section as HTTP/2 counts it (RFC 9113 §6.5.2): name + value + 32 per
/// field.
pub(super) fn header_list_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// Removes `l5d-orig-proto` and returns the HTTP/1 version it names (`HTTP/1.1` or `HTTP/1.0`,
/// optionally followed by `; absolute-form`). The request then goes upstream as that version in
/// origin form. An unknown value is logged and the request stays HTTP/2.
pub(super) fn take_orig_proto(headers: &mut HeaderMap) -> Option<Version> {
    let value = headers.remove(&L5D_ORIG_PROTO)?;
    let proto = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    match proto {
        Some("HTTP/1.1") => Some(Version::HTTP_11),
        Some("HTTP/1.0") => Some(Version::HTTP_10),
        _ => {
            tracing::warn!(value = ?value, "unknown l5d-orig-proto; forwarding as HTTP/2");
            None
        }
    }
}

/// Whether the request is gRPC (`content-type: application/grpc*`).
pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_and_te_trailers_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(TE, HeaderValue::from_static("gzip, trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert!(headers.get("x-private").is_none());
        assert!(headers.get(CONNECTION).is_none());
        assert!(headers.get("keep-alive").is_none());
        assert_eq!(headers.get(TE).unwrap(), "trailers");
        assert_eq!(headers.get("x-kept").unwrap(), "1");
    }

    #[test]
    fn te_alone_and_upgrade_alone_are_still_handled() {
        let mut te_only = HeaderMap::new();
        te_only.insert(TE, HeaderValue::from_static("gzip"));
        te_only.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut te_only);
        assert!(te_only.get(TE).is_none());
        assert_eq!(te_only.len(), 1);

        let mut upgrade_only = HeaderMap::new();
        upgrade_only.insert(UPGRADE, HeaderValue::from_static("websocket"));
        upgrade_only.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut upgrade_only);
        assert!(upgrade_only.is_empty());

        let mut clean = HeaderMap::new();
        clean.insert("x-kept", HeaderValue::from_static("1"));
        clean.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let before = clean.clone();
        strip_hop_by_hop(&mut clean);
        assert_eq!(clean, before);
    }

    #[test]
    fn orig_proto_names_the_http1_version_in_both_forms() {
        for (value, version) in [
            ("HTTP/1.1", Some(Version::HTTP_11)),
            ("HTTP/1.0", Some(Version::HTTP_10)),
            ("HTTP/1.1; absolute-form", Some(Version::HTTP_11)),
            ("HTTP/1.0; absolute-form", Some(Version::HTTP_10)),
            ("HTTP/3", None),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(&L5D_ORIG_PROTO, HeaderValue::from_static(value));
            assert_eq!(take_orig_proto(&mut headers), version, "{value}");
            assert!(
                headers.get(&L5D_ORIG_PROTO).is_none(),
                "the header is removed"
            );
        }
        assert_eq!(take_orig_proto(&mut HeaderMap::new()), None);
    }

    mod translation {
        use super::*;
        use crate::upstream::version::{Wire, shape};
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "connection",
                "keep-alive",
                "proxy-connection",
                "transfer-encoding",
                "upgrade",
                "te",
                "host",
                "x-private",
                "x-kept",
                "content-type",
                "l5d-orig-proto",
            ])
        }

        fn value() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "trailers",
                "gzip, trailers",
                "gzip",
                "keep-alive, x-private",
                "close",
                "chunked",
                "websocket",
                "upgrade",
                "application/grpc",
                "HTTP/1.1",
                "web.example:80",
                "1",
            ])
        }

        proptest! {
            /// What the HTTP layer forwards, in either direction between HTTP/1 and HTTP/2, is a
            /// well-formed request of the version it goes in: no hop-by-hop or connection-specific
            /// header (HTTP/2 refuses them), `te` only as `trailers`, the target as `:authority`
            /// without `Host` on HTTP/2 and as `Host` on HTTP/1; end-to-end headers unchanged.
            #[test]
            fn a_translated_request_is_well_formed_for_its_version(
                from_h2 in any::<bool>(), to_h2 in any::<bool>(),
                fields in proptest::collection::vec((name(), value()), 0..10),
            ) {
                let version = if from_h2 { Version::HTTP_2 } else { Version::HTTP_11 };
                let mut builder = http::Request::builder().version(version).uri("/x");
                for (n, v) in &fields {
                    builder = builder.header(*n, *v);
                }
                let (mut parts, ()) = builder.body(()).unwrap().into_parts();
                let kept: Vec<HeaderValue> = parts.headers.get_all("x-kept").iter().cloned().collect();
                strip_hop_by_hop(&mut parts.headers);
                let authority = http::uri::Authority::from_static("web.ns.svc.cluster.local:8080");
                let host = HeaderValue::from_static("web.ns.svc.cluster.local:8080");
                let wire = if to_h2 { Wire::Http2 } else { Wire::Http1 };
                shape(&mut parts, wire, &authority, &host, false).unwrap();
                for hop in &HOP_BY_HOP {
                    prop_assert!(parts.headers.get(hop).is_none(), "{hop} left");
                }
                let te: Vec<_> = parts.headers.get_all(TE).iter().collect();
                prop_assert!(te.is_empty() || te == [&HeaderValue::from_static("trailers")]);
                let x_kept: Vec<HeaderValue> = parts.headers.get_all("x-kept").iter().cloned().collect();
                let named_by_connection = fields.iter().any(|(n, v)| *n == "connection" && v.contains("x-kept"));
                if !named_by_connection {
                    prop_assert_eq!(x_kept, kept);
                }
                if to_h2 {
                    prop_assert!(parts.headers.get("host").is_none());
                    prop_assert_eq!(parts.uri.authority(), Some(&authority));
                    prop_assert_eq!(parts.version, Version::HTTP_2);
                } else {
                    prop_assert_eq!(parts.headers.get("host"), Some(&host));
                    prop_assert!(parts.uri.authority().is_none());
                    prop_assert!(parts.headers.get("l5d-orig-proto").is_none());
                }
            }
        }
    }
}
