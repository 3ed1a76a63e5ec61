use super::*;

fn default() -> Suffixes {
    Suffixes::default()
}

#[test]
fn service_name_with_port_parses() {
    let t = Target::parse("web.ns.svc.cluster.local:8080", &default()).unwrap();
    assert_eq!(t.name(), "web.ns.svc.cluster.local");
    assert_eq!(t.port(), 8080);
    assert_eq!(t.to_string(), "web.ns.svc.cluster.local:8080");
}

#[test]
fn missing_port_defaults_to_80() {
    let t = Target::parse("web.ns.svc.cluster.local", &default()).unwrap();
    assert_eq!(t.port(), 80);
    assert_eq!(t.host_header(), "web.ns.svc.cluster.local");
}

#[test]
fn upper_case_and_trailing_dot_are_normalised() {
    let t = Target::parse("Web.NS.svc.Cluster.Local.:81", &default()).unwrap();
    assert_eq!(t.name(), "web.ns.svc.cluster.local");
    assert_eq!(t.host_header(), "web.ns.svc.cluster.local:81");
}

#[test]
fn suffix_matches_only_on_label_boundary() {
    assert_eq!(
        Target::parse("web.ns.xsvc.cluster.local", &default()),
        Err(Error::NotAllowed)
    );
    assert_eq!(
        Target::parse("svc.cluster.local.evil.com", &default()),
        Err(Error::NotAllowed)
    );
    assert!(Target::parse("svc.cluster.local", &default()).is_ok());
}

#[test]
fn ip_literals_in_every_notation_are_refused() {
    for ip in [
        "127.0.0.1",
        "127.0.0.1:4191",
        "2130706433",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "[::1]",
        "[::1]:80",
        "::1",
        "10.0.0.1.",
    ] {
        let err = Target::parse(ip, &Suffixes::new(["."]).unwrap()).unwrap_err();
        assert_eq!(err, Error::IpLiteral, "{ip}");
        assert!(err.is_bad_domain());
    }
}

#[test]
fn localhost_is_refused_even_when_everything_is_allowed() {
    let any = Suffixes::new(["."]).unwrap();
    assert_eq!(Target::parse("localhost:4191", &any), Err(Error::Localhost));
    assert_eq!(Target::parse("a.LOCALHOST.", &any), Err(Error::Localhost));
}

#[test]
fn malformed_authorities_are_bad_requests() {
    for bad in [
        "",
        ":80",
        "web.svc.cluster.local:",
        "web.svc.cluster.local:0",
        "web.svc.cluster.local:65536",
        "web.svc.cluster.local:+80",
        "web.svc.cluster.local:8x",
        "we b.svc.cluster.local",
        "web%2e.svc.cluster.local",
        "user@web.svc.cluster.local",
        "a..svc.cluster.local",
        "-a.svc.cluster.local",
        "a\0.svc.cluster.local",
    ] {
        let err = Target::parse(bad, &default()).unwrap_err();
        assert!(!err.is_bad_domain(), "{bad:?} gave {err:?}");
    }
    let long_label = format!("{}.svc.cluster.local", "a".repeat(64));
    assert_eq!(Target::parse(&long_label, &default()), Err(Error::BadName));
}

#[test]
fn empty_allowlist_allows_nothing() {
    let none = Suffixes::new(Vec::<String>::new()).unwrap();
    assert!(none.is_empty());
    assert_eq!(
        Target::parse("web.svc.cluster.local", &none),
        Err(Error::NotAllowed)
    );
}

#[test]
fn suffix_entries_are_normalised() {
    let s = Suffixes::new([" svc.Cluster.local. ", ".example.org"]).unwrap();
    assert!(s.allows("a.svc.cluster.local"));
    assert!(s.allows("b.example.org"));
    assert!(Suffixes::new(["bad suffix"]).is_err());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// The allowlist model: a target passes iff its normalised host is a well-formed DNS name,
    /// not numeric-looking, not localhost, and equals or ends with `.` + a suffix.
    fn model_allows(host: &str, suffix: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        host == suffix || host.ends_with(&format!(".{suffix}"))
    }

    fn hostile_label() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("web".to_owned()),
            Just("WEB".to_owned()),
            Just("ns".to_owned()),
            Just("svc".to_owned()),
            Just("cluster".to_owned()),
            Just("local".to_owned()),
            Just("localhost".to_owned()),
            Just("LocalHost".to_owned()),
            Just("evil".to_owned()),
            Just("com".to_owned()),
            Just("127".to_owned()),
            Just("0".to_owned()),
            Just("0177".to_owned()),
            Just("0x7f".to_owned()),
            Just("0x7F000001".to_owned()),
            Just("2130706433".to_owned()),
            Just(String::new()),
            Just("%2e".to_owned()),
            Just("a\0b".to_owned()),
            Just("a".repeat(63)),
            Just("a".repeat(64)),
            Just("-a".to_owned()),
            Just("a-".to_owned()),
            Just("_x".to_owned()),
            Just("[::1]".to_owned()),
            Just("::1".to_owned()),
            Just("[::ffff:127.0.0.1]".to_owned()),
            Just("user@web".to_owned()),
            Just("é".to_owned()),
            "[a-z0-9-]{1,8}",
        ]
    }

    /// An independent statement of what may pass: `host[:port]` without brackets or a second
    /// colon, a port of 1–5 digits in 1..=65535 (80 when absent), the host without one
    /// trailing dot a DNS name of ≤ 253 bytes with labels of 1–63 `[A-Za-z0-9_-]` not
    /// starting or ending with `-`, a last label that is not a number (decimal or `0x` hex),
    /// not `localhost` or under it, and equal to or under `svc.cluster.local` — lower-cased.
    fn model_target(authority: &str) -> Option<(String, u16)> {
        if authority.contains('[') || authority.matches(':').count() > 1 {
            return None;
        }
        let (host, port) = match authority.split_once(':') {
            None => (authority, 80),
            Some((host, port)) => {
                if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                match port.parse::<u16>() {
                    Ok(p) if p > 0 => (host, p),
                    _ => return None,
                }
            }
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() || host.len() > 253 {
            return None;
        }
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return None;
        }
        let host = host.to_ascii_lowercase();
        let last = host.rsplit('.').next().unwrap_or_default();
        let number = last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        if number || host == "localhost" || host.ends_with(".localhost") {
            return None;
        }
        (host == "svc.cluster.local" || host.ends_with(".svc.cluster.local"))
            .then_some((host, port))
    }

    proptest! {
        #[test]
        fn accepted_targets_are_always_under_the_suffix(input in "[a-zA-Z0-9.:_%\\[\\]-]{0,40}") {
            let suffixes = Suffixes::new(["svc.cluster.local"]).unwrap();
            if let Ok(t) = Target::parse(&input, &suffixes) {
                prop_assert!(model_allows(t.name(), "svc.cluster.local"));
                prop_assert!(!t.name().ends_with('.'));
                prop_assert_eq!(t.name().to_ascii_lowercase(), t.name());
                prop_assert!(t.port() > 0);
            }
        }

        #[test]
        fn generated_service_names_roundtrip(
            svc in "[a-z][a-z0-9-]{0,20}[a-z0-9]",
            ns in "[a-z][a-z0-9]{0,10}",
            port in 1u16..,
        ) {
            let authority = format!("{svc}.{ns}.svc.cluster.local:{port}");
            let t = Target::parse(&authority, &Suffixes::default()).unwrap();
            prop_assert_eq!(t.to_string(), authority);
            let again = Target::parse(&t.to_string(), &Suffixes::default()).unwrap();
            prop_assert_eq!(again, t);
        }

        /// Authorities assembled from the pieces attackers use to escape the allowlist: IP
        /// forms, `localhost`, look-alike suffixes, percent-encoding, NUL, overlong and empty
        /// labels, odd ports. The parser must agree exactly with the model.
        #[test]
        fn hostile_authorities_match_the_allowlist_model(
            labels in proptest::collection::vec(hostile_label(), 0..6),
            suffix in prop_oneof![
                Just(""), Just(".svc.cluster.local"), Just(".svc.cluster.local."),
                Just(".SVC.Cluster.LOCAL"), Just(".svc.cluster.local.evil.com"),
                Just(".svc.cluster.localx"), Just(".xsvc.cluster.local"), Just("svc.cluster.local"),
                Just(".svc.cluster.local.."), Just(".svc.cluster.local%2e"),
            ],
            port in prop_oneof![
                Just(""), Just(":80"), Just(":4191"), Just(":0"), Just(":65535"), Just(":65536"),
                Just(":+1"), Just(":"), Just(":8080:80"), Just(":0x50"),
            ],
        ) {
            let authority = format!("{}{suffix}{port}", labels.join("."));
            let parsed = Target::parse(&authority, &default())
                .ok()
                .map(|t| (t.name().to_owned(), t.port()));
            prop_assert_eq!(parsed, model_target(&authority), "{:?}", authority);
        }

        #[test]
        fn arbitrary_input_never_panics(input in "\\PC{0,300}") {
            let _ = Target::parse(&input, &Suffixes::new(["."]).unwrap());
        }
    }
}
