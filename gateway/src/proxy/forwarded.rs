//! The `Forwarded` header (RFC 7239) as Linkerd's gateway uses it: refuse a request that already
//! passed this gateway (`by=<our identity>`), then append our own element.

/// Whether one `Forwarded` header value has an element whose `by` parameter equals `gateway`
/// (case-insensitive, quotes removed). Elements are split on `,`, parameters on `;`.
pub fn names_by(value: &[u8], gateway: &str) -> bool {
    value.split(|b| *b == b',').any(|element| {
        element.split(|b| *b == b';').any(|pair| {
            let mut kv = pair.splitn(2, |b| *b == b'=');
            let key = kv.next().map(trim).unwrap_or_default();
            let Some(val) = kv.next() else { return false };
            if !key.eq_ignore_ascii_case(b"by") {
                return false;
            }
            let val = trim(val);
            let val = val
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(val);
            val.eq_ignore_ascii_case(gateway.as_bytes())
        })
    })
}

/// The element this gateway appends: `by=<gateway>;for=<client>;host=<target>;proto=https`.
pub fn element(gateway: &str, client: &str, host: &str) -> String {
    format!("by={gateway};for={client};host={host};proto=https")
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::FORWARDED;
    use http::{HeaderMap, HeaderValue};

    /// Whether any `Forwarded` header carries `by=<gateway>`, as `route::decide` checks them.
    fn has_loop(headers: &HeaderMap, gateway: &str) -> bool {
        headers
            .get_all(FORWARDED)
            .iter()
            .any(|value| names_by(value.as_bytes(), gateway))
    }

    const GW: &str = "gateway.id.test";

    #[test]
    fn element_matches_linkerd_format() {
        assert_eq!(
            element(GW, "client.id.test", "dst.test.example.com:4321"),
            "by=gateway.id.test;for=client.id.test;host=dst.test.example.com:4321;proto=https"
        );
    }

    #[test]
    fn own_by_is_a_loop() {
        let mut headers = HeaderMap::new();
        headers.append(FORWARDED, HeaderValue::from_static("for=x"));
        headers.append(
            FORWARDED,
            HeaderValue::from_static("by=other;for=a, BY=\"Gateway.ID.test\";for=b"),
        );
        assert!(has_loop(&headers, GW));
    }

    #[test]
    fn other_gateways_and_other_params_are_not_a_loop() {
        let mut headers = HeaderMap::new();
        headers.append(
            FORWARDED,
            HeaderValue::from_static(
                "by=gateway.id.test.evil;for=gateway.id.test;host=gateway.id.test",
            ),
        );
        assert!(!has_loop(&headers, GW));
        assert!(!has_loop(&HeaderMap::new(), GW));
    }

    #[test]
    fn appended_element_is_detected_on_the_next_hop() {
        let value = element(GW, "c", "h:1");
        assert!(names_by(value.as_bytes(), GW));
    }

    mod props {
        use super::super::*;
        use super::GW;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_values_never_panic(value in proptest::collection::vec(any::<u8>(), 0..200)) {
                let _ = names_by(&value, GW);
            }

            #[test]
            fn by_anywhere_in_a_list_is_found(
                before in proptest::collection::vec("[a-z]{1,8}=[a-z.]{1,12}", 0..4),
                after in proptest::collection::vec("[a-z]{1,8}=[a-z.]{1,12}", 0..4),
            ) {
                let mut params = before.clone();
                params.push(format!("by={GW}"));
                params.extend(after.clone());
                prop_assert!(names_by(params.join(";").as_bytes(), GW));
                let elements = [before.join(";"), format!("by={GW}"), after.join(";")].join(", ");
                prop_assert!(names_by(elements.as_bytes(), GW));
            }
        }
    }
}
